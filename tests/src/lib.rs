//! Helpers for the end-to-end tests: network namespaces, processes, clean-up,
//! packets.

pub mod cutproxy;
pub mod lab;
pub mod netns;
pub mod packets;
pub mod wg;
