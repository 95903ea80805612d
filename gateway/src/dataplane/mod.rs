//! Userspace WireGuard data plane on boringtun's `noise::Tunn` (I/O edge).
//! PLACEHOLDER: replaced by the data-plane work (issue 4).

pub mod cli;
