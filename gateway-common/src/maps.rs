//! Map names and the `#[repr(C)]`, explicitly padded keys and values of the
//! XDP maps; the same definitions are compiled into the kernel object and the
//! userspace loader.

use crate::classify::XdpVerdict;

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
/// Benchmark anchors in the same object (never attached): a bare counted
/// drop, and header parsing plus one hash lookup.
pub const ANCHOR_DROP_COUNT: &str = "anchor_drop_count";
pub const ANCHOR_PARSE_LOOKUP: &str = "anchor_parse_lookup";

/// Peer slots the kernel can tell apart (`receiver_index >> 8`). boringtun
/// leaves 24 bits for the slot; 65,536 peers is far beyond one gateway's need
/// and keeps the allow map a flat array (one bounds check, no hashing).
pub const MAX_PEER_SLOTS: u32 = 1 << 16;
/// Slots of the deny table: a direct-mapped array indexed by a seeded hash of
/// the endpoint, each slot holding the endpoint it denies. An array lookup is
/// inlined by the kernel; a hash map lookup costs about 35 ns more per
/// initiation (`gateway xdp bench`). Two denied endpoints that collide share a
/// slot and the newer wins: the older one's initiations then reach userspace,
/// which rejects them again (work, never access).
pub const DENY_SLOTS: u32 = 1 << 16;
/// Buckets of the handshake rate limiter, indexed by a seeded hash of the
/// source address. Sources that collide share a bucket, which can only make
/// the limit stricter for them.
pub const RATE_SLOTS: u32 = 1 << 16;

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
    /// Seed of the deny and rate-limit slot hashes, random per attachment so
    /// nobody can aim collisions from outside.
    pub hash_seed: u32,
}

/// Per-reason packet counters, one field per [`XdpVerdict`] in the same order, so
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

const _: () = assert!(core::mem::size_of::<XdpStats>() == XdpVerdict::COUNT * 8);

impl XdpStats {
    /// The counter for one reason.
    pub fn get(&self, reason: XdpVerdict) -> u64 {
        self.as_array()[reason as usize]
    }

    /// The counters in [`XdpVerdict`] order.
    pub fn as_array(&self) -> [u64; XdpVerdict::COUNT] {
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

    pub fn from_array(a: [u64; XdpVerdict::COUNT]) -> Self {
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

/// One slot of `GW_DENY_ENDPOINTS`: the endpoint it denies and until when
/// (CLOCK_MONOTONIC ns, the clock of `bpf_ktime_get_coarse_ns`). An empty
/// slot has `expires_ns == 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyEntry {
    pub endpoint: EndpointKey,
    pub expires_ns: u64,
    /// Why userspace denied it (an access reason code), for inspection.
    pub reason: u32,
    pub _pad: u32,
}

/// Token bucket of the sources hashing to one slot, in milli-tokens so integer
/// refill stays exact at low rates. `last_ns == 0`: never used (full).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBucket {
    pub milli_tokens: u64,
    pub last_ns: u64,
}

#[inline(always)]
fn mix(h: u32, w: u32) -> u32 {
    (h ^ w).wrapping_mul(0x9e37_79b1).rotate_left(13)
}

#[inline(always)]
fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// The deny slot of an endpoint.
#[inline(always)]
pub fn deny_slot_of(endpoint: &EndpointKey, seed: u32) -> u32 {
    let w = addr_words(&endpoint.addr);
    let h = mix(mix(mix(mix(mix(seed, w[0]), w[1]), w[2]), w[3]), endpoint.port as u32);
    (h ^ (h >> 16)) & (DENY_SLOTS - 1)
}

/// The rate-limit bucket of a source address.
#[inline(always)]
pub fn rate_slot_of(addr: &[u8; 16], seed: u32) -> u32 {
    let w = addr_words(addr);
    let h = mix(mix(mix(mix(seed ^ 0x5bd1_e995, w[0]), w[1]), w[2]), w[3]);
    (h ^ (h >> 16)) & (RATE_SLOTS - 1)
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
    unsafe impl aya::Pod for super::RateBucket {}
}

impl EndpointKey {
    /// An IPv4 endpoint, stored IPv4-mapped.
    pub fn v4(octets: [u8; 4], port: u16) -> Self {
        // Element by element: a slice copy becomes a memcpy call in BPF.
        let o = octets;
        let addr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3]];
        EndpointKey { addr, port, _pad: [0; 6] }
    }

    pub fn v6(addr: [u8; 16], port: u16) -> Self {
        EndpointKey { addr, port, _pad: [0; 6] }
    }
}
