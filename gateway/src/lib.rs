//! The gateway library: one module per stage of the data flow
//! chain -> registry -> access -> plan -> xdp maps and data plane.

pub mod access;
pub mod chain;
pub mod config;
pub mod daemon;
pub mod control;
pub mod dataplane;
pub mod dns;
pub mod http;
pub mod logging;
pub mod netns;
pub mod node;
pub mod plan;
pub mod registry;
pub mod xdp;
