//! Types shared by the XDP program and userspace: map names, `#[repr(C)]` map
//! keys/values, and the one packet classifier both sides run (pure, `no_std`).
#![no_std]

pub mod classify;
#[cfg(any(test, feature = "user"))]
pub mod frames;
pub mod maps;
pub mod verdict;
pub mod wire;

#[cfg(test)]
mod fuzz_tests;

pub use classify::{classify, classify_datagram, declared_ip_len, Coalesced, Gate, IpDatagram, Packet};
pub use maps::*;
pub use verdict::{XdpStats, XdpVerdict};
