//! Follows the access contract on chain (I/O edge, alloy): runs the core's
//! follower logic against real RPC endpoints and hands its `ChainEvent`s on.

pub mod cli;
pub mod contract;
pub mod follower;
pub mod identity;
pub mod rpc;
