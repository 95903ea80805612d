//! Helpers for the end-to-end tests: network namespaces, processes, clean-up,
//! packets, a local chain.

pub mod anvil;
pub mod cutproxy;
pub mod lab;
pub mod netns;
pub mod packets;
pub mod pinger;
pub mod proxy;
pub mod skip;
pub mod wg;
