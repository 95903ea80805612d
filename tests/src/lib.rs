//! Helpers for the end-to-end tests: network namespaces, processes, clean-up.

pub mod anvil;
pub mod proxy;
