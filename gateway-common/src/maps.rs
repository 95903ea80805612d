//! Map names and the `#[repr(C)]`, explicitly padded keys and values of the
//! XDP maps; the same definitions are compiled into the kernel object and the
//! userspace loader.

use crate::classify::Reason;

/// Map names as they appear in the object file and under `/sys/fs/bpf/<instance>/`.
pub const MAP_CONFIG: &str = "GW_CONFIG";
pub const MAP_STATS: &str = "GW_STATS";
pub const MAP_ALLOW_SLOTS: &str = "GW_ALLOW_SLOTS";
pub const MAP_DENY_ENDPOINTS: &str = "GW_DENY_ENDPOINTS";
pub const MAP_RATE_LIMIT: &str = "GW_RATE_LIMIT";
/// Every map the program defines, for pinning and clean-up.
pub const ALL_MAPS: [&str; 5] = [
    MAP_CONFIG,
    MAP_STATS,
    MAP_ALLOW_SLOTS,
    MAP_DENY_ENDPOINTS,
    MAP_RATE_LIMIT,
];

/// The XDP entry point's name in the object file.
pub const PROGRAM_NAME: &str = "gateway_xdp";

/// Peer slots the kernel can tell apart (`receiver_index >> 8`). boringtun
/// leaves 24 bits for the slot; 65,536 peers is far beyond one gateway's need
/// and keeps the allow map a flat array (one bounds check, no hashing).
pub const MAX_PEER_SLOTS: u32 = 1 << 16;
/// Endpoints userspace may deny at once; an LRU map, so a flood of rejects
/// evicts the oldest rather than failing.
pub const MAX_DENY_ENDPOINTS: u32 = 65_536;
/// Sources tracked by the handshake rate limiter (LRU: spoofed floods evict
/// the oldest buckets instead of filling the map).
pub const MAX_RATE_SOURCES: u32 = 65_536;

/// Whether the program enforces its verdicts or only counts them.
pub const MODE_OBSERVE: u8 = 0;
pub const MODE_ENFORCE: u8 = 1;

/// Program configuration, one entry at index 0 of `GW_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// WireGuard listen port in host byte order; 0 means "not configured"
    /// and everything is passed.
    pub wg_port: u16,
    /// `MODE_OBSERVE` counts verdicts but passes every packet;
    /// `MODE_ENFORCE` drops what the verdict says.
    pub mode: u8,
    pub _pad0: u8,
    /// Handshake initiations allowed per source address per second
    /// (token bucket refill rate); 0 disables the limiter.
    pub handshake_rate_per_sec: u32,
    /// Token bucket depth: initiations a source may send in a burst.
    pub handshake_burst: u32,
    pub _pad1: u32,
}

/// Per-reason packet counters, one field per [`Reason`] in the same order, so
/// `bpftool map dump` shows named fields (BTF) and the program can add to
/// field `reason as usize` of the array view.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStats {
    pub pass_not_ip: u64,
    pub pass_not_udp: u64,
    pub pass_fragment: u64,
    pub pass_other_port: u64,
    pub pass_handshake_init: u64,
    pub pass_handshake_response: u64,
    pub pass_cookie_reply: u64,
    pub pass_transport: u64,
    pub drop_malformed: u64,
    pub drop_unknown_slot: u64,
    pub drop_denied_endpoint: u64,
    pub drop_rate_limited: u64,
}

const _: () = assert!(core::mem::size_of::<XdpStats>() == Reason::COUNT * 8);

impl XdpStats {
    /// The counter for one reason.
    pub fn get(&self, reason: Reason) -> u64 {
        self.as_array()[reason as usize]
    }

    /// The counters in [`Reason`] order.
    pub fn as_array(&self) -> [u64; Reason::COUNT] {
        [
            self.pass_not_ip,
            self.pass_not_udp,
            self.pass_fragment,
            self.pass_other_port,
            self.pass_handshake_init,
            self.pass_handshake_response,
            self.pass_cookie_reply,
            self.pass_transport,
            self.drop_malformed,
            self.drop_unknown_slot,
            self.drop_denied_endpoint,
            self.drop_rate_limited,
        ]
    }

    /// Adds another CPU's counters into these.
    pub fn accumulate(&mut self, other: &XdpStats) {
        let mut sum = self.as_array();
        for (s, o) in sum.iter_mut().zip(other.as_array()) {
            *s = s.wrapping_add(o);
        }
        *self = XdpStats::from_array(sum);
    }

    pub fn from_array(a: [u64; Reason::COUNT]) -> Self {
        XdpStats {
            pass_not_ip: a[0],
            pass_not_udp: a[1],
            pass_fragment: a[2],
            pass_other_port: a[3],
            pass_handshake_init: a[4],
            pass_handshake_response: a[5],
            pass_cookie_reply: a[6],
            pass_transport: a[7],
            drop_malformed: a[8],
            drop_unknown_slot: a[9],
            drop_denied_endpoint: a[10],
            drop_rate_limited: a[11],
        }
    }
}

/// Value of `GW_ALLOW_SLOTS[slot]`: non-zero `allowed` opens the slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowSlot {
    pub allowed: u32,
    /// Generation of the peer that holds the slot, for inspection: a reused
    /// slot shows a new generation in `bpftool map dump`.
    pub generation: u32,
}

/// A UDP source endpoint. IPv4 addresses are stored IPv4-mapped
/// (`::ffff:a.b.c.d`) so one key type serves both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub addr: [u8; 16],
    /// Port in host byte order.
    pub port: u16,
    pub _pad: [u8; 6],
}

/// Value of `GW_DENY_ENDPOINTS`: the endpoint's initiations are dropped
/// until `expires_ns` (CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyEntry {
    pub expires_ns: u64,
    /// Why userspace denied it (an access reason code), for inspection.
    pub reason: u32,
    pub _pad: u32,
}

/// Key of `GW_RATE_LIMIT`: a source address (no port: spoofers pick ports).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub addr: [u8; 16],
}

/// Token bucket of one source, in milli-tokens so integer refill stays exact
/// at low rates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBucket {
    pub milli_tokens: u64,
    pub last_ns: u64,
}

/// One token, in the bucket's unit.
pub const MILLI_TOKENS_PER_TOKEN: u64 = 1000;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, contain only integers and
    // explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::XdpConfig {}
    unsafe impl aya::Pod for super::XdpStats {}
    unsafe impl aya::Pod for super::AllowSlot {}
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::DenyEntry {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::RateBucket {}
}

impl EndpointKey {
    /// An IPv4 endpoint, stored IPv4-mapped.
    pub fn v4(octets: [u8; 4], port: u16) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..16].copy_from_slice(&octets);
        EndpointKey { addr, port, _pad: [0; 6] }
    }

    pub fn v6(addr: [u8; 16], port: u16) -> Self {
        EndpointKey { addr, port, _pad: [0; 6] }
    }
}
