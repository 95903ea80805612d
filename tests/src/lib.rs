//! Helpers for the end-to-end tests: network namespaces, processes, clean-up,
//! packets.

pub mod lab;
pub mod netns;
pub mod packets;
pub mod wg;
