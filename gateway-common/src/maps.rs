//! Map names and the `#[repr(C)]`, explicitly padded keys and values of the
//! XDP maps; the same definitions are compiled into the kernel object and the
//! userspace loader.

/// Map names as they appear in the object file and under `/sys/fs/bpf/<instance>/`.
pub const MAP_CONFIG: &str = "GW_CONFIG";
pub const MAP_STATS: &str = "GW_STATS";
pub const MAP_ALLOW_SLOTS: &str = "GW_ALLOW_SLOTS";
pub const MAP_DENY_ENDPOINTS: &str = "GW_DENY_ENDPOINTS";
pub const MAP_RATE_LIMIT: &str = "GW_RATE_LIMIT";
pub const MAP_FRAGMENTS: &str = "GW_FRAGMENTS";
/// The late gate's own counters and rate-limit buckets (it shares the
/// others with the XDP program). Its own buckets, so a datagram that met
/// both gates pays one token in each instead of two in one.
pub const MAP_LATE_STATS: &str = "GW_LATE_STATS";
pub const MAP_LATE_RATE_LIMIT: &str = "GW_LATE_RATE_LIMIT";
/// Endpoints of peers with a recent completed handshake (written by the
/// daemon from the data plane's peers): their initiations keep their own
/// per-source buckets; every other initiation first pays the unproven
/// budget, one per-CPU bucket per gate.
pub const MAP_LIVE_ENDPOINTS: &str = "GW_LIVE_ENDPOINTS";
pub const MAP_UNPROVEN_BUDGET: &str = "GW_UNPROVEN_BUDGET";
pub const MAP_LATE_UNPROVEN_BUDGET: &str = "GW_LATE_UNPROVEN_BUDGET";
/// Every map the programs define, for pinning and clean-up: attaching XDP
/// pins them all, and the late gate opens the same pins.
pub const ALL_MAPS: [&str; 11] = [
    MAP_CONFIG,
    MAP_STATS,
    MAP_ALLOW_SLOTS,
    MAP_DENY_ENDPOINTS,
    MAP_RATE_LIMIT,
    MAP_FRAGMENTS,
    MAP_LATE_STATS,
    MAP_LATE_RATE_LIMIT,
    MAP_LIVE_ENDPOINTS,
    MAP_UNPROVEN_BUDGET,
    MAP_LATE_UNPROVEN_BUDGET,
];

/// The XDP entry point's name in the object file.
pub const PROGRAM_NAME: &str = "gateway_xdp";
/// The late gate: a socket filter on the WireGuard sockets running the same
/// verdict on every datagram they receive, whatever interface it came by.
pub const LATE_GATE_PROGRAM: &str = "gateway_late_gate";
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
/// Slots of the live-endpoint table, direct-mapped by a seeded hash of the
/// endpoint like the deny table. Two live endpoints that collide share a
/// slot and the newer wins: the other's initiations pay the unproven
/// budget until its next handshake (slower under a flood, never refused).
pub const LIVE_SLOTS: u32 = 1 << 16;

/// Slots of the fragment table: fragmented datagrams whose first fragment's
/// verdict is remembered, in a direct-mapped array indexed by a seeded hash
/// of the datagram's key, each slot holding the key it remembers. The newest
/// datagram takes its slot (least recently recorded out), so the table
/// behaves as an LRU cache whose sets have one way. A kernel LRU hash map
/// (`BPF_MAP_TYPE_LRU_HASH`) was measured first: its insert made the
/// first-fragment path 3.0x the parse+lookup anchor (4.4x with per-CPU LRU
/// lists), against 1.2x allowed (`gateway xdp bench`). A datagram's fragments
/// arrive microseconds apart; a random flood of first fragments at 1 M/s
/// evicts a given entry within 1 ms with probability 1.5%, and an evicted
/// datagram's later fragments are dropped (never seen), which fails closed.
pub const FRAG_SLOTS: u32 = 1 << 16;

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
    /// The unproven budget: handshake initiations per second, per CPU and
    /// gate, from endpoints not in `GW_LIVE_ENDPOINTS` (spoofed sources
    /// among them, each of which would otherwise get a fresh per-source
    /// bucket); 0 disables it. Userspace divides the configured total by
    /// the CPUs.
    pub unproven_rate_per_sec: u32,
    /// Its bucket's depth, per CPU.
    pub unproven_burst: u32,
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
#[repr(C, align(8))]
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

/// One slot of `GW_LIVE_ENDPOINTS`: an endpoint that completed a handshake,
/// until when it counts as live (CLOCK_MONOTONIC ns; empty: 0), and its own
/// initiation buckets, one per gate, in the same slot: one lookup instead of
/// two on the live path (`gateway xdp bench`: 85 ns, 1.35x the anchor, with
/// the bucket in `GW_RATE_LIMIT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveEndpoint {
    pub endpoint: EndpointKey,
    pub expires_ns: u64,
    pub bucket: RateBucket,
    pub late_bucket: RateBucket,
}

impl LiveEndpoint {
    /// A fresh mark: full buckets.
    pub fn new(endpoint: EndpointKey, expires_ns: u64) -> Self {
        LiveEndpoint {
            endpoint,
            expires_ns,
            ..Default::default()
        }
    }
}

/// One fragmented datagram, as RFC 791 and RFC 8200
/// identify it (source, destination, identification, protocol). IPv4
/// addresses are stored IPv4-mapped; the IPv4 identification is 16 bits,
/// IPv6's 32. For IPv6 `proto` is the fragment header's next header.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragKey {
    /// The addresses as four words each, in memory (network) order: built
    /// from word reads of the packet, where byte arrays became one spilled
    /// register per byte in BPF (`gateway xdp bench`: 38 ns first
    /// fragments).
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub id: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

// The pinned maps' layouts: the 8-byte alignment of the keys (for word
// compares in BPF) adds no padding.
const _: () =
    assert!(core::mem::size_of::<EndpointKey>() == 24 && core::mem::size_of::<FragKey>() == 40);
const _: () =
    assert!(core::mem::size_of::<DenyEntry>() == 40 && core::mem::size_of::<LiveEndpoint>() == 64);

/// What the first fragment of a datagram got.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    /// Non-zero: the first fragment was dropped (or would have been, in
    /// observe mode), so every later fragment is too.
    pub dropped: u32,
    /// The first fragment's [`crate::XdpVerdict`], for inspection.
    pub first_verdict: u32,
}

/// One slot of `GW_FRAGMENTS`: the datagram it remembers and its first
/// fragment's verdict. An empty slot is all zeros (no datagram has an
/// all-zero key: its source would be `::` and its protocol 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragSlot {
    pub key: FragKey,
    pub entry: FragEntry,
}

/// Token bucket of the sources hashing to one slot, in milli-tokens so integer
/// refill stays exact at low rates. `last_ns == 0`: never used (full).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBucket {
    pub milli_tokens: u64,
    pub last_ns: u64,
}

/// Distinct constants that turn the attachment's seed into one key word per
/// hashed word (seed xor constant: one instruction, where a multiply per key
/// word cost 2 ns on the IPv6 fragment path).
const KEY_WORDS: [u32; 10] = [
    0x9e37_79b1,
    0x85eb_ca6b,
    0xc2b2_ae35,
    0x27d4_eb2f,
    0x1656_67b1,
    0xd3a2_646d,
    0xfd70_46c5,
    0xb55a_4f09,
    0x5bd1_e995,
    0x68e3_1da5,
];

/// Table tags: the same words hash to unrelated slots in different tables,
/// so a collision in one says nothing about another.
const TAG_DENY: u32 = 0x6465_6e79;
const TAG_LIVE: u32 = 0x6c69_7665;
const TAG_FRAG: u32 = 0x6672_6167;
const TAG_RATE: u32 = 0x7261_7465;

/// A keyed hash of `N` (even) words to a slot index below `slots` (a power of two):
/// NH, the sum of products of word pairs each offset by a key word, as in
/// UMAC. The products are independent of each other, so the CPU (and the
/// BPF JIT's output) computes them side by side; a chain of mixes was 10-12
/// ns of the fragment path's 40 (`gateway xdp bench`). The key words come
/// from the attachment's random seed, so nobody outside can aim collisions.
#[inline(always)]
fn keyed_slot<const N: usize>(words: [u32; N], seed: u32, tag: u32, slots: u32) -> u32 {
    let base = seed ^ tag;
    let mut acc: u64 = 0;
    let mut i = 0;
    while i + 1 < N {
        let a = words[i].wrapping_add(base ^ KEY_WORDS[i]) as u64;
        let b = words[i + 1].wrapping_add(base ^ KEY_WORDS[i + 1]) as u64;
        acc = acc.wrapping_add(a * b);
        i += 2;
    }
    // Fold both halves (a change in one word moves the low half by a
    // multiple of its partner's key, the high half hardly at all), then one
    // multiply to spread the fold over the index bits.
    let h = ((acc ^ (acc >> 32)) as u32).wrapping_mul(0x9e37_79b1);
    (h ^ (h >> 16)) & (slots - 1)
}

/// The third word of an IPv4-mapped address (`::ffff:a.b.c.d`) in memory order.
pub(crate) const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[inline(always)]
fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

#[inline(always)]
fn endpoint_words(endpoint: &EndpointKey) -> [u32; 6] {
    let w = addr_words(&endpoint.addr);
    [w[0], w[1], w[2], w[3], endpoint.port as u32, 0]
}

/// The deny slot of an endpoint.
#[inline(always)]
pub fn deny_slot_of(endpoint: &EndpointKey, seed: u32) -> u32 {
    keyed_slot(endpoint_words(endpoint), seed, TAG_DENY, DENY_SLOTS)
}

/// The live-endpoint table slot of an endpoint.
#[inline(always)]
pub fn live_slot_of(endpoint: &EndpointKey, seed: u32) -> u32 {
    keyed_slot(endpoint_words(endpoint), seed, TAG_LIVE, LIVE_SLOTS)
}

/// The fragment table slot of a datagram. An IPv4 datagram (both addresses
/// IPv4-mapped) hashes only the words that vary: half the work on the path
/// every IPv4 fragment takes. The destination is one of the gateway's own
/// few addresses: it is folded into one word, not hashed word by word (the
/// slot compares the whole key anyway).
#[inline(always)]
pub fn frag_slot_of(key: &FragKey, seed: u32) -> u32 {
    let (s, d) = (key.src, key.dst);
    if (s[0] | s[1] | d[0] | d[1]) == 0 && s[2] == V4_MAPPED_WORD && d[2] == V4_MAPPED_WORD {
        return keyed_slot([s[3], d[3], key.id, key.proto as u32], seed, TAG_FRAG, FRAG_SLOTS);
    }
    let dst = d[0] ^ d[1] ^ d[2] ^ d[3];
    keyed_slot([s[0], s[1], s[2], s[3], key.id, dst ^ key.proto as u32], seed, TAG_FRAG, FRAG_SLOTS)
}

/// The rate-limit bucket of a source address.
#[inline(always)]
pub fn rate_slot_of(addr: &[u8; 16], seed: u32) -> u32 {
    keyed_slot(addr_words(addr), seed, TAG_RATE, RATE_SLOTS)
}

/// One token, in the bucket's unit.
pub const MILLI_TOKENS_PER_TOKEN: u64 = 1000;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, contain only integers and
    // explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::XdpConfig {}
    unsafe impl aya::Pod for crate::XdpStats {}
    unsafe impl aya::Pod for super::AllowSlot {}
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::DenyEntry {}
    unsafe impl aya::Pod for super::RateBucket {}
    unsafe impl aya::Pod for super::FragSlot {}
    unsafe impl aya::Pod for super::LiveEndpoint {}
}

impl EndpointKey {
    /// An IPv4 endpoint, stored IPv4-mapped.
    pub fn v4(octets: [u8; 4], port: u16) -> Self {
        // Element by element: a slice copy becomes a memcpy call in BPF.
        let o = octets;
        let addr = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3],
        ];
        EndpointKey {
            addr,
            port,
            _pad: [0; 6],
        }
    }

    pub fn v6(addr: [u8; 16], port: u16) -> Self {
        EndpointKey {
            addr,
            port,
            _pad: [0; 6],
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    /// Distinct slots among `slots`, against the birthday bound: `n` keys in
    /// 65,536 slots collide about n²/131,072 times; four times that fails.
    fn assert_spread(what: &str, slots: &[u32]) {
        let n = slots.len();
        let distinct = slots.iter().collect::<BTreeSet<_>>().len();
        let expected = n * n / (2 * 65_536);
        assert!(
            n - distinct <= 4 * expected.max(1),
            "{what}: {} collisions among {n} keys (expected about {expected})",
            n - distinct
        );
    }

    #[test]
    fn neighbouring_keys_spread_over_the_slots() {
        let seed = 0x1234_5678;
        let ports: Vec<EndpointKey> = (0..4096)
            .map(|p| EndpointKey::v4([198, 18, 0, 2], 40_000 + p))
            .collect();
        let addrs: Vec<EndpointKey> = (0..4096u32)
            .map(|a| EndpointKey::v4([10, 0, (a >> 8) as u8, a as u8], 51_820))
            .collect();
        for (what, keys) in [("ports", &ports), ("addresses", &addrs)] {
            assert_spread(
                what,
                &keys
                    .iter()
                    .map(|k| deny_slot_of(k, seed))
                    .collect::<Vec<_>>(),
            );
            assert_spread(
                what,
                &keys
                    .iter()
                    .map(|k| live_slot_of(k, seed))
                    .collect::<Vec<_>>(),
            );
            // The tables hash apart: a shared slot in one says nothing of the other.
            let same = keys
                .iter()
                .filter(|k| deny_slot_of(k, seed) == live_slot_of(k, seed))
                .count();
            assert!(
                same <= 4,
                "{what}: {same} keys share their deny and live slot"
            );
        }
        let frag = |id: u32, src: [u32; 4]| FragKey {
            src,
            dst: [0, 0, V4_MAPPED_WORD, 9],
            id,
            proto: 17,
            _pad: [0; 3],
        };
        let v4 = [0, 0, V4_MAPPED_WORD, u32::from_ne_bytes([198, 18, 0, 2])];
        let v6 = [0xfd, 0, 0, 2];
        for (what, src) in [("IPv4 fragment ids", v4), ("IPv6 fragment ids", v6)] {
            assert_spread(
                what,
                &(0..4096)
                    .map(|id| frag_slot_of(&frag(id, src), seed))
                    .collect::<Vec<_>>(),
            );
        }
        assert_spread(
            "rate addresses",
            &addrs
                .iter()
                .map(|k| rate_slot_of(&k.addr, seed))
                .collect::<Vec<_>>(),
        );
        // Another seed, other slots.
        let moved = ports
            .iter()
            .filter(|k| deny_slot_of(k, seed) != deny_slot_of(k, seed ^ 1))
            .count();
        assert!(
            moved > 4000,
            "a new seed moves the slots: {moved} of 4096 moved"
        );
    }
}
