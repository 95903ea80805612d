//! `gateway access check` (I/O edge). The decisions themselves are
//! `gateway_core::access`.

pub mod cli;
