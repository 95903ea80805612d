//! The gateway library: one module per stage of the data flow
//! chain -> registry -> access -> plan -> xdp maps and data plane.

pub mod chain;
pub mod dataplane;
pub mod demo;
pub mod logging;
pub mod netns;
pub mod node;
pub mod xdp;
