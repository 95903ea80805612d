//! The gateway library: one module per stage of the data flow
//! chain -> registry -> access -> plan -> xdp maps and data plane.

pub mod access;
pub mod chain;
pub mod dataplane;
pub mod logging;
pub mod node;
pub mod plan;
pub mod registry;
pub mod xdp;
