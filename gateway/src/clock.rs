//! The wall clock, read in one place (I/O edge: a clock is an input). The
//! core takes time as arguments; this is where the daemon and the commands
//! get them. The monotonic clock the XDP deny expiries use is
//! [`crate::xdp::monotonic_now_ns`].

/// Seconds since the Unix epoch (0 if the clock is set before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
