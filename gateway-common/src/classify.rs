//! The packet verdict, pure and shared: the XDP program runs it on the frame
//! in the kernel, userspace runs the same code in tests and fuzzing, and a
//! `BPF_PROG_TEST_RUN` test checks the two agree packet by packet.
//!
//! Fragments and IPv6 extension headers are no way around it (DESIGN.md,
//! "XDP front"): a first fragment is judged like a whole datagram and its
//! verdict is recorded ([`Gate::record_fragment`]); later fragments get that
//! verdict or, with none on record, are dropped. The kernel reassembles
//! nothing without the first fragment, so whatever reaches a socket started
//! with a fragment that met the verdict.

use crate::maps::{
    deny_slot_of, frag_slot_of, live_slot_of, rate_slot_of, DenyEntry, EndpointKey, FragEntry,
    FragKey, RateBucket, XdpConfig, MILLI_TOKENS_PER_TOKEN,
};
use crate::verdict::XdpVerdict;
use crate::wire::*;

/// Bounds-checked reads from a frame. The kernel implements it over the XDP
/// context (each read checked against `data_end` for the verifier), userspace
/// over a byte slice. Only primitive loads: arrays copied out of the packet
/// compile to memcpy/memset sub-program calls in BPF, which cost more than
/// the whole verdict.
pub trait Packet {
    /// Frame length in bytes.
    fn len(&self) -> usize;
    fn u8_at(&self, off: usize) -> Option<u8>;
    /// Two bytes in network order.
    fn be16_at(&self, off: usize) -> Option<u16>;
    /// Four bytes as they lie in memory (little-endian fields, raw addresses).
    fn ne32_at(&self, off: usize) -> Option<u32>;

    /// Eight bytes as they lie in memory (two address words at once: IPv6
    /// addresses cost two reads, not four).
    #[inline(always)]
    fn ne64_at(&self, off: usize) -> Option<u64> {
        let a = self.ne32_at(off)? as u64;
        let b = self.ne32_at(off + 4)? as u64;
        Some(if cfg!(target_endian = "little") {
            a | (b << 32)
        } else {
            (a << 32) | b
        })
    }

    /// `v` unchanged, but with whatever a static analyser knows about it
    /// forgotten. The BPF verifier checks a bounded loop once for every
    /// distinct path into it; forgetting the offsets the paths differ in
    /// lets it check the loop once. Userspace has nothing to forget.
    #[inline(always)]
    fn forget(&self, v: usize) -> usize {
        v
    }

    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline(always)]
    fn le32_at(&self, off: usize) -> Option<u32> {
        self.ne32_at(off).map(u32::from_le)
    }
}

impl Packet for [u8] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.get(off).copied()
    }
    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        let b = self.get(off..off.checked_add(2)?)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    #[inline(always)]
    fn ne32_at(&self, off: usize) -> Option<u32> {
        let b = self.get(off..off.checked_add(4)?)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Sixteen address bytes from four words read in memory order, written
/// element by element (no memcpy in BPF).
#[inline(always)]
fn addr_from_words(w: [u32; 4]) -> [u8; 16] {
    let a = w[0].to_ne_bytes();
    let b = w[1].to_ne_bytes();
    let c = w[2].to_ne_bytes();
    let d = w[3].to_ne_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// The address at `off` as four words in memory order (IPv4 mapped).
#[inline(always)]
fn addr_words_at<P: Packet + ?Sized>(pkt: &P, off: usize, v4: bool) -> Option<[u32; 4]> {
    if v4 {
        Some([0, 0, crate::maps::V4_MAPPED_WORD, pkt.ne32_at(off)?])
    } else {
        // Two reads (each one bounds check), split into words in memory order.
        let high = pkt.ne64_at(off)?.to_ne_bytes();
        let low = pkt.ne64_at(off + 8)?.to_ne_bytes();
        let word = |b: [u8; 8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some([word(high, 0), word(high, 4), word(low, 0), word(low, 4)])
    }
}

/// The address at `off` (IPv4 stored IPv4-mapped).
#[inline(always)]
fn addr_at<P: Packet + ?Sized>(pkt: &P, off: usize, v4: bool) -> Option<[u8; 16]> {
    addr_words_at(pkt, off, v4).map(addr_from_words)
}

/// The state the verdict consults: allowed slots, the deny table, the
/// rate-limit buckets and the fragment table (the XDP maps in the kernel, a
/// model in userspace).
pub trait Gate {
    fn slot_allowed(&self, slot: u32) -> bool;
    /// Deny table slot `index`, if it holds `endpoint` (empty or another
    /// endpoint: `None`).
    fn deny_entry(&self, index: u32, endpoint: &EndpointKey) -> Option<DenyEntry>;
    /// Rate-limit bucket `index`, to update in place.
    fn bucket_mut(&mut self, index: u32) -> Option<&mut RateBucket>;
    /// Until when (CLOCK_MONOTONIC ns) live-endpoint slot `index` holds
    /// `endpoint`, and that endpoint's own bucket (this gate's); `None`:
    /// empty or another endpoint.
    fn live_mut(&mut self, index: u32, endpoint: &EndpointKey) -> Option<(u64, &mut RateBucket)>;
    /// The unproven budget's bucket (this CPU's, in the kernel).
    fn unproven_bucket_mut(&mut self) -> Option<&mut RateBucket>;
    /// Fragment table slot `index`, if it remembers datagram `key`.
    fn fragment(&self, index: u32, key: &FragKey) -> Option<FragEntry>;
    /// Records in slot `index` what the first fragment of datagram `key`
    /// got, replacing whatever the slot held.
    fn record_fragment(&mut self, index: u32, key: &FragKey, entry: FragEntry);
}

/// Refills `bucket` for the time since it was last touched, then takes one
/// token. Returns false (and takes nothing) when the bucket is empty.
#[inline(always)]
pub fn take_token(bucket: &mut RateBucket, now_ns: u64, rate_per_sec: u32, burst: u32) -> bool {
    let cap = burst as u64 * MILLI_TOKENS_PER_TOKEN;
    if bucket.last_ns == 0 {
        // Never used: a new source starts with a full bucket.
        bucket.milli_tokens = cap;
        bucket.last_ns = now_ns;
    }
    let mut tokens = bucket.milli_tokens;
    let elapsed = now_ns.saturating_sub(bucket.last_ns);
    // Refill only once a microsecond has passed. Under a flood most packets
    // arrive within one tick of the coarse clock: they skip the two
    // divisions (the BPF JIT emits real `div`s) and an empty bucket is not
    // written at all.
    if elapsed >= 1000 {
        // rate tokens/s = rate milli-tokens/ms; work in microseconds so a
        // 1/s rate still accrues between calls a millisecond apart, and cap
        // the elapsed time so the product cannot overflow.
        let elapsed_us = if elapsed > 3_600_000_000_000 {
            3_600_000_000
        } else {
            elapsed / 1000
        };
        let refill = elapsed_us * rate_per_sec as u64 / 1000;
        if refill > 0 {
            tokens += refill;
            bucket.last_ns = now_ns;
        }
    }
    if tokens > cap {
        tokens = cap;
    }
    if tokens < MILLI_TOKENS_PER_TOKEN {
        if tokens != bucket.milli_tokens {
            bucket.milli_tokens = tokens;
        }
        return false;
    }
    bucket.milli_tokens = tokens - MILLI_TOKENS_PER_TOKEN;
    true
}

/// Whether `take_token` would surely refuse: the bucket is empty and less
/// than the microsecond its refill waits for has passed. Conservative: a
/// false answer means only "ask `take_token`".
#[inline(always)]
pub fn surely_empty(bucket: &RateBucket, now_ns: u64) -> bool {
    bucket.last_ns != 0
        && bucket.milli_tokens < MILLI_TOKENS_PER_TOKEN
        && now_ns.saturating_sub(bucket.last_ns) < 1000
}

/// Where the UDP header and the IP source address are, once parsed; the
/// address itself is read only on the one path that needs it.
struct Located {
    l4: usize,
    src_off: usize,
    v4: bool,
}

/// How the IP layer carries the datagram.
enum Frag {
    Whole,
    /// The fragment at offset 0 (it holds the UDP header).
    First(FragRef),
}

/// What the IP layer parse found.
enum Ip {
    /// A UDP header (of a whole datagram or of a first fragment).
    Udp(Located, Frag),
    /// A first fragment whose verdict is known without the UDP layer
    /// (IPv6: not UDP behind the fragment header, or a chain cut short).
    FirstOther(XdpVerdict, FragRef),
    /// A fragment at a non-zero offset: no transport header of its own.
    Later(FragRef),
}

/// Where a fragment's key is in the packet: the key itself (40 bytes) is
/// built only where it is looked up or recorded, not carried through the
/// parse, whose every move of it was a copy (`gateway xdp bench`).
#[derive(Clone, Copy)]
struct FragRef {
    src_off: usize,
    v4: bool,
    id: u32,
    proto: u8,
}

impl FragRef {
    /// The key. The walk read past both addresses before it made this
    /// reference, so the reads fail only on a packet that changed under it.
    #[inline(always)]
    fn key<P: Packet + ?Sized>(&self, pkt: &P) -> Option<FragKey> {
        frag_key(pkt, self.src_off, self.v4, self.id, self.proto)
    }
}

/// The fragment key of the datagram whose IP source is at `src_off`
/// (destination right after it).
#[inline(always)]
fn frag_key<P: Packet + ?Sized>(
    pkt: &P,
    src_off: usize,
    v4: bool,
    id: u32,
    proto: u8,
) -> Option<FragKey> {
    let dst_off = if v4 { src_off + 4 } else { src_off + 16 };
    let src = addr_words_at(pkt, src_off, v4)?;
    let dst = addr_words_at(pkt, dst_off, v4)?;
    Some(FragKey {
        src,
        dst,
        id,
        proto,
        _pad: [0; 3],
    })
}

/// Ethernet and up to two VLAN tags: the offset of the IP header and its
/// ethertype, or the pass verdict for a frame too short to say.
#[inline(always)]
fn locate_l3<P: Packet + ?Sized>(pkt: &P) -> Result<(usize, u16), XdpVerdict> {
    let mut off = ETH_HDR_LEN;
    let mut ethertype = match pkt.be16_at(12) {
        Some(t) => t,
        None => return Err(XdpVerdict::PassNotIp),
    };
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        ethertype = match pkt.be16_at(off + 2) {
            Some(t) => t,
            None => return Err(XdpVerdict::PassNotIp),
        };
        off += VLAN_HDR_LEN;
        tags += 1;
    }
    Ok((off, ethertype))
}

/// IPv4 at `off`: where its UDP header is, and whether it is a fragment.
#[inline(always)]
fn locate_v4<P: Packet + ?Sized>(pkt: &P, off: usize) -> Result<Ip, XdpVerdict> {
    let version_ihl = pkt.u8_at(off).ok_or(XdpVerdict::PassNotIp)?;
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || ihl < IPV4_MIN_HDR_LEN {
        return Err(XdpVerdict::PassNotIp);
    }
    let flags_frag = pkt.be16_at(off + 6).ok_or(XdpVerdict::PassNotIp)?;
    let proto = pkt.u8_at(off + 9).ok_or(XdpVerdict::PassNotIp)?;
    // A frame cut inside the rest of the header fails the reads after it
    // (addresses, UDP header): no `len()` test here, whose bounds LLVM would
    // use to drop later checks the verifier still needs.
    // Every IPv4 fragment names its protocol: fragments of anything but
    // UDP can never reach a UDP socket.
    if proto != IPPROTO_UDP {
        return Err(XdpVerdict::PassNotUdp);
    }
    let located = Located {
        l4: off + ihl,
        src_off: off + 12,
        v4: true,
    };
    if flags_frag & (IPV4_MF | IPV4_OFFSET_MASK) == 0 {
        return Ok(Ip::Udp(located, Frag::Whole));
    }
    let id = pkt.be16_at(off + 4).ok_or(XdpVerdict::PassNotIp)?;
    let key = FragRef {
        src_off: off + 12,
        v4: true,
        id: id as u32,
        proto,
    };
    if flags_frag & IPV4_OFFSET_MASK != 0 {
        Ok(Ip::Later(key))
    } else {
        Ok(Ip::Udp(located, Frag::First(key)))
    }
}

/// Whether a next-header value is one the walk steps over.
#[inline(always)]
const fn is_walked_ext(next_header: u8) -> bool {
    next_header == IPV6_EXT_HOP_BY_HOP
        || next_header == IPV6_EXT_ROUTING
        || next_header == IPV6_EXT_DEST_OPTS
}

/// Where the IPv6 extension-header walk stands.
struct Chain {
    next_header: u8,
    /// Offset of the header `next_header` names.
    at: usize,
    chain_start: usize,
    src_off: usize,
    headers: usize,
    /// Set once a fragment header at offset 0 was crossed: the verdict of
    /// everything after it is recorded under this key.
    first: Option<FragRef>,
}

impl Chain {
    /// The outcome when the chain ends in `verdict` before any UDP header:
    /// recorded for a first fragment, plain otherwise.
    #[inline(always)]
    fn ends(&self, verdict: XdpVerdict) -> Result<Ip, XdpVerdict> {
        match self.first {
            Some(key) => Ok(Ip::FirstOther(verdict, key)),
            None => Err(verdict),
        }
    }
}

/// IPv6 at `off`: a bounded walk over hop-by-hop, routing, destination
/// options and fragment headers to the UDP header (RFC 8200 section 4).
/// Any other next header ends the chain: the kernel delivers nothing behind
/// it to a UDP socket. A chain longer than the bounds, or cut short, is
/// unwalkable.
#[inline(always)]
fn locate_v6<P: Packet + ?Sized>(pkt: &P, off: usize) -> Result<Ip, XdpVerdict> {
    let version = pkt.u8_at(off).ok_or(XdpVerdict::PassNotIp)?;
    if version >> 4 != 6 {
        return Err(XdpVerdict::PassNotIp);
    }
    let next_header = pkt.u8_at(off + 6).ok_or(XdpVerdict::PassNotIp)?;
    // As for IPv4, a frame cut inside the header fails the reads after it.
    let chain_start = off + IPV6_HDR_LEN;
    let mut chain = Chain {
        next_header,
        at: chain_start,
        chain_start,
        src_off: off + 8,
        headers: 0,
        first: None,
    };
    // Unrolled by hand, one step per header the bounds allow plus the one
    // that must end the chain: in a loop LLVM hoists `data_end - N` out of
    // the bounds checks, arithmetic on `data_end` the verifier refuses.
    macro_rules! step {
        () => {
            if let Some(done) = walk_step(pkt, &mut chain) {
                return done;
            }
        };
    }
    step!();
    step!();
    step!();
    step!();
    step!();
    step!();
    step!();
    const _: () = assert!(MAX_IPV6_EXT_HEADERS == 6, "one step per header, plus one");
    Err(XdpVerdict::DropExtHeaderUnwalkable)
}

/// One step of the walk: the chain's end (UDP, another protocol, or a bound
/// reached), or `None` after stepping over one extension header.
#[inline(always)]
fn walk_step<P: Packet + ?Sized>(pkt: &P, chain: &mut Chain) -> Option<Result<Ip, XdpVerdict>> {
    let next_header = chain.next_header;
    if next_header == IPPROTO_UDP {
        let located = Located {
            l4: chain.at,
            src_off: chain.src_off,
            v4: false,
        };
        return Some(Ok(match chain.first {
            Some(key) => Ip::Udp(located, Frag::First(key)),
            None => Ip::Udp(located, Frag::Whole),
        }));
    }
    let walked = is_walked_ext(next_header);
    if !walked && next_header != IPV6_EXT_FRAGMENT {
        // TCP, ICMPv6, ESP, AH, "no next header", ...: not UDP.
        return Some(chain.ends(XdpVerdict::PassNotUdp));
    }
    if chain.headers >= MAX_IPV6_EXT_HEADERS {
        return Some(chain.ends(XdpVerdict::DropExtHeaderUnwalkable));
    }
    chain.headers += 1;
    // A read past the frame: a first fragment cut inside its chain is too
    // short to judge; anything else is a chain cut short.
    let cut = if chain.first.is_some() {
        XdpVerdict::DropFragmentTooShort
    } else {
        XdpVerdict::DropExtHeaderUnwalkable
    };
    let at = chain.at;
    let Some(following) = pkt.u8_at(at) else {
        return Some(chain.ends(cut));
    };
    if walked {
        let Some(units) = pkt.u8_at(at + 1) else {
            return Some(chain.ends(cut));
        };
        chain.next_header = following;
        chain.at = at + (units as usize + 1) * 8;
    } else {
        // A fragment header: offset and More Fragments, then the id, all in
        // one 8-byte read (one bounds check).
        let Some(header) = pkt.ne64_at(at) else {
            return Some(chain.ends(cut));
        };
        let b = header.to_ne_bytes();
        let field = u16::from_be_bytes([b[2], b[3]]);
        let id = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        chain.next_header = following;
        chain.at = at + IPV6_FRAG_HDR_LEN;
        let offset = field >> 3;
        // Offset 0 without More Fragments is an atomic fragment (RFC 6946):
        // a whole datagram, walked on like one.
        if offset != 0 || field & IPV6_FRAG_MF != 0 {
            if chain.first.is_some() {
                // A second fragment header: nothing the kernel reassembles.
                return Some(Err(XdpVerdict::DropExtHeaderUnwalkable));
            }
            let key = FragRef {
                src_off: chain.src_off,
                v4: false,
                id,
                proto: following,
            };
            if offset != 0 {
                // Only a fragment whose datagram may be UDP is tracked.
                if following == IPPROTO_UDP || is_walked_ext(following) {
                    return Some(Ok(Ip::Later(key)));
                }
                return Some(Err(XdpVerdict::PassNotUdp));
            }
            chain.first = Some(key);
        }
    }
    if chain.at > chain.chain_start + MAX_IPV6_EXT_BYTES {
        return Some(chain.ends(XdpVerdict::DropExtHeaderUnwalkable));
    }
    if chain.at > pkt.len() {
        return Some(chain.ends(cut));
    }
    None
}

/// The verdict for one Ethernet frame (DESIGN.md, "XDP front"):
/// non-WireGuard traffic passes; malformed WireGuard messages drop; messages
/// carrying a receiver index drop unless its slot is allowed; handshake
/// initiations drop from denied endpoints and above the per-source rate.
/// Fragments get their first fragment's verdict.
///
/// `now_ns` is called only for handshake initiations (deny expiry, rate
/// limit): reading the clock costs more than classifying a transport packet.
#[inline(always)]
pub fn classify<P: Packet + ?Sized, G: Gate>(
    pkt: &P,
    cfg: &XdpConfig,
    gate: &mut G,
    mut now_ns: impl FnMut() -> u64,
) -> XdpVerdict {
    let (off, ethertype) = match locate_l3(pkt) {
        Ok(l3) => l3,
        Err(verdict) => return verdict,
    };
    let ip = if ethertype == ETH_P_IPV4 {
        locate_v4(pkt, off)
    } else if ethertype == ETH_P_IPV6 {
        locate_v6(pkt, off)
    } else {
        Err(XdpVerdict::PassNotIp)
    };
    match ip {
        Err(verdict) => verdict,
        Ok(ip) => classify_ip(pkt, ip, cfg, gate, &mut now_ns, Coalesced::ONE),
    }
}

/// UDP GRO: the kernel may hand a socket that asked for it (`UDP_GRO`)
/// several datagrams of one flow as one buffer: one IP and UDP header, then
/// the payloads, `segment` bytes each but the last. The late gate judges
/// each payload as the datagram it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coalesced {
    /// Payload bytes per datagram (the buffer's `gso_size`).
    pub segment: usize,
    /// Datagrams in the buffer (`gso_segs`); 0 or 1: a plain datagram.
    pub count: usize,
}

impl Coalesced {
    pub const ONE: Coalesced = Coalesced {
        segment: 0,
        count: 1,
    };
}

/// The most datagrams UDP GRO puts in one buffer (the kernel's
/// `UDP_GRO_CNT_MAX`); a buffer claiming more is malformed.
pub const MAX_COALESCED: usize = 64;

/// The verdict at a WireGuard socket (the late gate): the same rules for a
/// datagram whose IP header is at offset 0, after the kernel reassembled it,
/// whatever interface it came by. `pkt.len()` is the length the IP header
/// declares (the kernel trimmed the buffer to it before UDP saw it).
#[inline(always)]
pub fn classify_datagram<P: Packet + ?Sized, G: Gate>(
    pkt: &P,
    cfg: &XdpConfig,
    gate: &mut G,
    mut now_ns: impl FnMut() -> u64,
    coalesced: Coalesced,
) -> XdpVerdict {
    let version = match pkt.u8_at(0) {
        Some(v) => v >> 4,
        None => return XdpVerdict::PassNotIp,
    };
    let ip = if version == 4 {
        locate_v4(pkt, 0)
    } else if version == 6 {
        locate_v6(pkt, 0)
    } else {
        Err(XdpVerdict::PassNotIp)
    };
    match ip {
        Err(verdict) => verdict,
        Ok(ip) => classify_ip(pkt, ip, cfg, gate, &mut now_ns, coalesced),
    }
}

/// The length an IP header at offset 0 declares (0 when there is none).
#[inline(always)]
pub fn declared_ip_len<P: Packet + ?Sized>(pkt: &P) -> usize {
    match pkt.u8_at(0).map(|b| b >> 4) {
        Some(4) => pkt.be16_at(2).map_or(0, |l| l as usize),
        Some(6) => pkt.be16_at(4).map_or(0, |l| IPV6_HDR_LEN + l as usize),
        _ => 0,
    }
}

/// An IP datagram as the late gate sees it, in userspace (tests and the
/// equivalence check): the bytes from the IP header on, its length the one
/// the header declares.
pub struct IpDatagram<'a> {
    bytes: &'a [u8],
    len: usize,
}

impl<'a> IpDatagram<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        let len = declared_ip_len(bytes);
        IpDatagram { bytes, len }
    }
}

impl Packet for IpDatagram<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.bytes.u8_at(off)
    }
    fn be16_at(&self, off: usize) -> Option<u16> {
        self.bytes.be16_at(off)
    }
    fn ne32_at(&self, off: usize) -> Option<u32> {
        self.bytes.ne32_at(off)
    }
}

/// The verdict once the IP layer is parsed: later fragments from the
/// record, first fragments judged then recorded, whole datagrams judged.
#[inline(always)]
fn classify_ip<P: Packet + ?Sized, G: Gate>(
    pkt: &P,
    ip: Ip,
    cfg: &XdpConfig,
    gate: &mut G,
    now_ns: &mut impl FnMut() -> u64,
    coalesced: Coalesced,
) -> XdpVerdict {
    match ip {
        Ip::Later(at) => {
            let Some(key) = at.key(pkt) else {
                return XdpVerdict::PassNotIp;
            };
            match gate.fragment(frag_slot_of(&key, cfg.hash_seed), &key) {
                Some(entry) if entry.dropped != 0 => XdpVerdict::DropFragmentFirstDropped,
                Some(_) => XdpVerdict::PassFragment,
                None => XdpVerdict::DropFragmentNeverSeen,
            }
        }
        Ip::FirstOther(verdict, at) => {
            let Some(key) = at.key(pkt) else {
                return XdpVerdict::PassNotIp;
            };
            record(gate, cfg, &key, verdict);
            verdict
        }
        Ip::Udp(located, Frag::Whole) => {
            classify_udp(pkt, &located, false, cfg, gate, now_ns, coalesced)
        }
        Ip::Udp(located, Frag::First(at)) => {
            let verdict = classify_udp(pkt, &located, true, cfg, gate, now_ns, Coalesced::ONE);
            // Built after the UDP layer, so it is not held (spilled) across
            // it. A frame cut inside the addresses is not IP, as for a whole
            // datagram; such a frame has no UDP header either, so the UDP
            // layer above changed nothing.
            let Some(key) = at.key(pkt) else {
                return XdpVerdict::PassNotIp;
            };
            record(gate, cfg, &key, verdict);
            verdict
        }
    }
}

#[inline(always)]
fn record<G: Gate>(gate: &mut G, cfg: &XdpConfig, key: &FragKey, verdict: XdpVerdict) {
    let entry = FragEntry {
        dropped: verdict.is_drop() as u32,
        first_verdict: verdict as u32,
    };
    gate.record_fragment(frag_slot_of(key, cfg.hash_seed), key, entry);
}

/// The UDP layer, then the WireGuard message (or each coalesced one). In a
/// first fragment the UDP length names the reassembled datagram (the one
/// the socket would get), so sizes are judged on it; the frame only has to
/// show the fields read.
#[inline(always)]
fn classify_udp<P: Packet + ?Sized, G: Gate>(
    pkt: &P,
    located: &Located,
    first_fragment: bool,
    cfg: &XdpConfig,
    gate: &mut G,
    now_ns: &mut impl FnMut() -> u64,
    coalesced: Coalesced,
) -> XdpVerdict {
    let l4 = located.l4;
    // A UDP header cut short: not for us in a whole datagram; too short to
    // judge in a first fragment.
    let cut_udp = if first_fragment {
        XdpVerdict::DropFragmentTooShort
    } else {
        XdpVerdict::PassOtherPort
    };
    // One read at a time, in increasing offset order, with an early return
    // each. A combined match lets LLVM read a register on a path where it was
    // never written, and a read whose bounds check is implied by an earlier
    // one loses its check, then its range in the verifier after LLVM
    // recomputes the pointer; both get the program rejected.
    let src_port = match pkt.be16_at(l4) {
        Some(s) => s,
        None => return cut_udp,
    };
    let dst_port = match pkt.be16_at(l4 + 2) {
        Some(d) => d,
        None => return cut_udp,
    };
    if cfg.wg_port == 0 || dst_port != cfg.wg_port {
        return XdpVerdict::PassOtherPort;
    }
    let udp_len = match pkt.be16_at(l4 + 4) {
        Some(l) => l as usize,
        None => return cut_udp,
    };
    // The UDP length, not the frame length, bounds the message: Ethernet pads
    // short frames. A length beyond the frame is a truncated datagram.
    if udp_len < UDP_HDR_LEN || (!first_fragment && l4 + udp_len > pkt.len()) {
        return XdpVerdict::DropMalformed;
    }
    let msg = l4 + UDP_HDR_LEN;
    let total = udp_len - UDP_HDR_LEN;
    if coalesced.count <= 1 {
        return classify_message(
            pkt,
            located,
            src_port,
            msg,
            total,
            first_fragment,
            cfg,
            gate,
            now_ns,
        );
    }
    // Coalesced datagrams, all of one flow: the first is judged like a
    // datagram of its own; every later one must be a transport message
    // (WireGuard never sends handshake messages back to back, and only
    // transport sizes repeat) to an open slot, or the buffer drops.
    if coalesced.segment == 0 || coalesced.count > MAX_COALESCED {
        return XdpVerdict::DropMalformed;
    }
    let segment = coalesced.segment;
    let first_len = if total < segment { total } else { segment };
    let first = classify_message(
        pkt, located, src_port, msg, first_len, false, cfg, gate, now_ns,
    );
    if first.is_drop() || total <= segment {
        return first;
    }
    if segment < WG_TRANSPORT_MIN_LEN || (total - 1) / segment >= MAX_COALESCED {
        return XdpVerdict::DropMalformed;
    }
    // Reached with a different offset from each IP layout (options,
    // extension chains): forgotten, so the verifier checks the loop once.
    let base = pkt.forget(msg);
    let total = pkt.forget(total);
    let segment = pkt.forget(segment);
    let mut start = segment;
    let mut k = 1;
    while k < MAX_COALESCED {
        if start >= total {
            return first;
        }
        if total - start < WG_TRANSPORT_MIN_LEN {
            return XdpVerdict::DropMalformed;
        }
        // Type (with its three zero bytes) and receiver index in one read.
        let head = match pkt.ne64_at(base + start) {
            Some(h) => u64::from_le(h),
            None => return XdpVerdict::DropMalformed,
        };
        if head as u32 != WG_TRANSPORT as u32 {
            return XdpVerdict::DropMalformed;
        }
        if !gate.slot_allowed(slot_of_index((head >> 32) as u32)) {
            return XdpVerdict::DropUnknownSlot;
        }
        start += segment;
        k += 1;
    }
    if start >= total {
        first
    } else {
        XdpVerdict::DropMalformed
    }
}

/// What the message alone says: a verdict, or "an initiation", which the
/// endpoint rules decide.
enum Message {
    Judged(XdpVerdict),
    Initiation,
}

/// One WireGuard message of `msg_len` bytes at `msg`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn classify_message<P: Packet + ?Sized, G: Gate>(
    pkt: &P,
    located: &Located,
    src_port: u16,
    msg: usize,
    msg_len: usize,
    first_fragment: bool,
    cfg: &XdpConfig,
    gate: &mut G,
    now_ns: &mut impl FnMut() -> u64,
) -> XdpVerdict {
    // A message cut short: malformed, or too short to judge in a first fragment.
    let cut_msg = if first_fragment {
        XdpVerdict::DropFragmentTooShort
    } else {
        XdpVerdict::DropMalformed
    };
    match message_verdict(pkt, msg, msg_len, cut_msg, gate) {
        Message::Judged(verdict) => verdict,
        Message::Initiation => initiation_verdict(pkt, located, src_port, cfg, gate, now_ns),
    }
}

/// The type and size of the message at `msg`, and for those that carry a
/// receiver index, whether its slot is open. `cut_msg` is the verdict when
/// the frame ends before the fields.
#[inline(always)]
fn message_verdict<P: Packet + ?Sized, G: Gate>(
    pkt: &P,
    msg: usize,
    msg_len: usize,
    cut_msg: XdpVerdict,
    gate: &mut G,
) -> Message {
    let header = match pkt.le32_at(msg) {
        Some(h) => h,
        None => return Message::Judged(cut_msg),
    };
    // The type is a little-endian u32 on the wire: the three high bytes are zero.
    if header > 0xff {
        return Message::Judged(XdpVerdict::DropMalformed);
    }
    let kind = header as u8;
    let (expected_ok, receiver_offset, pass) = match kind {
        WG_HANDSHAKE_INIT => (
            msg_len == WG_HANDSHAKE_INIT_LEN,
            0,
            XdpVerdict::PassHandshakeInit,
        ),
        WG_HANDSHAKE_RESPONSE => (
            msg_len == WG_HANDSHAKE_RESPONSE_LEN,
            WG_RESPONSE_RECEIVER_OFFSET,
            XdpVerdict::PassHandshakeResponse,
        ),
        WG_COOKIE_REPLY => (
            msg_len == WG_COOKIE_REPLY_LEN,
            WG_COOKIE_RECEIVER_OFFSET,
            XdpVerdict::PassCookieReply,
        ),
        WG_TRANSPORT => (
            msg_len >= WG_TRANSPORT_MIN_LEN,
            WG_TRANSPORT_RECEIVER_OFFSET,
            XdpVerdict::PassTransport,
        ),
        _ => return Message::Judged(XdpVerdict::DropMalformed),
    };
    if !expected_ok {
        return Message::Judged(XdpVerdict::DropMalformed);
    }
    if kind == WG_HANDSHAKE_INIT {
        return Message::Initiation;
    }
    let receiver = match pkt.le32_at(msg + receiver_offset) {
        Some(r) => r,
        None => return Message::Judged(cut_msg),
    };
    if !gate.slot_allowed(slot_of_index(receiver)) {
        return Message::Judged(XdpVerdict::DropUnknownSlot);
    }
    Message::Judged(pass)
}

/// A handshake initiation: its sender's key is encrypted, so only the
/// source endpoint can be judged (deny, then the rate limit).
#[inline(always)]
fn initiation_verdict<P: Packet + ?Sized, G: Gate>(
    pkt: &P,
    located: &Located,
    src_port: u16,
    cfg: &XdpConfig,
    gate: &mut G,
    now_ns: &mut impl FnMut() -> u64,
) -> XdpVerdict {
    let source = match addr_at(pkt, located.src_off, located.v4) {
        Some(a) => a,
        None => return XdpVerdict::DropMalformed,
    };
    let now_ns = now_ns();
    let endpoint = EndpointKey {
        addr: source,
        port: src_port,
        _pad: [0; 6],
    };
    if cfg.handshake_rate_per_sec == 0 {
        return denied_or(gate, cfg, &endpoint, now_ns, XdpVerdict::PassHandshakeInit);
    }
    // Live peers' endpoints keep their own buckets (in their live slot);
    // every other source, spoofed ones among them, first pays the one
    // budget they share, then its source's bucket. A flood finds the budget
    // empty: it is dropped before the deny lookup, which would drop it too.
    if cfg.unproven_rate_per_sec != 0 {
        let own = match gate.live_mut(live_slot_of(&endpoint, cfg.hash_seed), &endpoint) {
            Some((expires_ns, bucket)) if expires_ns > now_ns => Some(take_token(
                bucket,
                now_ns,
                cfg.handshake_rate_per_sec,
                cfg.handshake_burst,
            )),
            _ => None,
        };
        match own {
            Some(true) => {
                return denied_or(gate, cfg, &endpoint, now_ns, XdpVerdict::PassHandshakeInit)
            }
            Some(false) => {
                return denied_or(gate, cfg, &endpoint, now_ns, XdpVerdict::DropRateLimited)
            }
            None => {}
        }
        if let Some(bucket) = gate.unproven_bucket_mut() {
            if surely_empty(bucket, now_ns) {
                return XdpVerdict::DropUnprovenBudget;
            }
        }
        if let Some(denied) = denied(gate, cfg, &endpoint, now_ns) {
            return denied;
        }
        if let Some(bucket) = gate.unproven_bucket_mut() {
            if !take_token(
                bucket,
                now_ns,
                cfg.unproven_rate_per_sec,
                cfg.unproven_burst,
            ) {
                return XdpVerdict::DropUnprovenBudget;
            }
        }
    } else if let Some(denied) = denied(gate, cfg, &endpoint, now_ns) {
        return denied;
    }
    let allowed = match gate.bucket_mut(rate_slot_of(&source, cfg.hash_seed)) {
        Some(bucket) => take_token(
            bucket,
            now_ns,
            cfg.handshake_rate_per_sec,
            cfg.handshake_burst,
        ),
        // Only when the map is missing: fail open on the limiter alone.
        None => true,
    };
    if allowed {
        XdpVerdict::PassHandshakeInit
    } else {
        XdpVerdict::DropRateLimited
    }
}

/// `DropDeniedEndpoint` while `endpoint` is on the deny list.
#[inline(always)]
fn denied<G: Gate>(
    gate: &G,
    cfg: &XdpConfig,
    endpoint: &EndpointKey,
    now_ns: u64,
) -> Option<XdpVerdict> {
    match gate.deny_entry(deny_slot_of(endpoint, cfg.hash_seed), endpoint) {
        Some(deny) if deny.expires_ns > now_ns => Some(XdpVerdict::DropDeniedEndpoint),
        _ => None,
    }
}

/// `DropDeniedEndpoint` while `endpoint` is on the deny list, else `verdict`.
#[inline(always)]
fn denied_or<G: Gate>(
    gate: &G,
    cfg: &XdpConfig,
    endpoint: &EndpointKey,
    now_ns: u64,
    verdict: XdpVerdict,
) -> XdpVerdict {
    denied(gate, cfg, endpoint, now_ns).unwrap_or(verdict)
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
