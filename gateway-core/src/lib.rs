//! The gateway's pure core: the chain follower's logic, the peer registry,
//! access decisions, the planner and the control core that ties them
//! together. Nothing here touches a socket, a file or a clock: time comes in
//! as `now` arguments, I/O goes out as values (ops, audit records, RPC
//! requests) for the `gateway` crate to carry out. The crate's dependencies
//! keep it that way; `cargo xtask test` checks them.
#![warn(unreachable_pub)]

pub mod access;
pub mod chain;
pub mod control;
pub mod metrics;
pub mod plan;
pub mod registry;
pub mod time;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;
