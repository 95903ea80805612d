//! XDP front: loads, attaches and pins the kernel program, and reads and
//! writes its maps from any process through the pins (I/O edge, aya).

pub mod bench;
pub mod cli;
pub mod late_gate;
pub mod loader;
pub mod maps;
pub mod testrun;

pub use loader::{attach, detach, AttachOptions, PinDir, XdpError, XdpModeChoice};
pub use maps::{AllowSlots, ConfigMap, DenyEndpoints, PinnedMaps, StatsMap};

/// The XDP object built by `cargo xtask build-ebpf`, embedded at build time
/// (empty when it was not built).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway.bpf.o"));

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads, so
/// deny expiries written here compare correctly in the kernel.
pub fn monotonic_now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64);
    ts.unwrap_or(0)
}
