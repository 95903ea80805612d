//! Follows the access contract on chain (I/O edge, alloy) and turns it into
//! plain [`ChainEvent`] values for the registry.

pub mod event;

pub use event::*;
