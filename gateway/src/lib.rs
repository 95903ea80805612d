//! The gateway's I/O edges around the pure core (`gateway_core`): the chain
//! follower's RPC driver, the state directory's files, the daemon's loop and
//! executor, the XDP front, the WireGuard data plane, the admin HTTP surface,
//! node names, and the operator commands.
#![warn(unreachable_pub)]

pub mod access;
pub mod chain;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod dns;
pub mod fault;
pub mod http;
pub mod logging;
pub mod netns;
pub mod node;
pub mod store;
pub mod xdp;
