//! Follows the access contract on chain (I/O edge, alloy) and turns it into
//! plain [`ChainEvent`] values for the registry.

pub mod backoff;
pub mod cli;
pub mod confirm;
pub mod contract;
pub mod cursor;
pub mod event;
pub mod follower;
pub mod range;
pub mod rpc;

pub use event::*;
