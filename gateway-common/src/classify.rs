//! The packet verdict, pure and shared: the XDP program runs it on the frame
//! in the kernel, userspace runs the same code in tests and fuzzing, and a
//! `BPF_PROG_TEST_RUN` test checks the two agree packet by packet.

use crate::maps::{
    DenyEntry, EndpointKey, RateBucket, SourceKey, XdpConfig, MILLI_TOKENS_PER_TOKEN,
};
use crate::wire::*;

/// Why a packet got its verdict. The discriminant indexes [`crate::XdpStats`];
/// never reorder, only append (and grow `XdpStats` with it).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    PassNotIp = 0,
    PassNotUdp = 1,
    PassFragment = 2,
    PassOtherPort = 3,
    PassHandshakeInit = 4,
    PassHandshakeResponse = 5,
    PassCookieReply = 6,
    PassTransport = 7,
    DropMalformed = 8,
    DropUnknownSlot = 9,
    DropDeniedEndpoint = 10,
    DropRateLimited = 11,
}

impl Reason {
    pub const COUNT: usize = 12;
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::PassNotIp,
        Reason::PassNotUdp,
        Reason::PassFragment,
        Reason::PassOtherPort,
        Reason::PassHandshakeInit,
        Reason::PassHandshakeResponse,
        Reason::PassCookieReply,
        Reason::PassTransport,
        Reason::DropMalformed,
        Reason::DropUnknownSlot,
        Reason::DropDeniedEndpoint,
        Reason::DropRateLimited,
    ];

    /// Whether an enforcing program drops packets with this reason.
    #[inline(always)]
    pub const fn is_drop(self) -> bool {
        (self as u32) >= (Reason::DropMalformed as u32)
    }

    /// Stable snake_case name, used for metrics labels and CLI output.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotUdp => "pass_not_udp",
            Reason::PassFragment => "pass_fragment",
            Reason::PassOtherPort => "pass_other_port",
            Reason::PassHandshakeInit => "pass_handshake_init",
            Reason::PassHandshakeResponse => "pass_handshake_response",
            Reason::PassCookieReply => "pass_cookie_reply",
            Reason::PassTransport => "pass_transport",
            Reason::DropMalformed => "drop_malformed",
            Reason::DropUnknownSlot => "drop_unknown_slot",
            Reason::DropDeniedEndpoint => "drop_denied_endpoint",
            Reason::DropRateLimited => "drop_rate_limited",
        }
    }
}

/// Bounds-checked reads from a frame. The kernel implements it over the XDP
/// context (each read checked against `data_end` for the verifier), userspace
/// over a byte slice.
pub trait Packet {
    /// `N` bytes at `off`, or `None` if they are not all inside the frame.
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
    /// Frame length in bytes.
    fn len(&self) -> usize;

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.bytes::<1>(off).map(|b| b[0])
    }
    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        self.bytes::<2>(off).map(u16::from_be_bytes)
    }
    #[inline(always)]
    fn le32_at(&self, off: usize) -> Option<u32> {
        self.bytes::<4>(off).map(u32::from_le_bytes)
    }
}

impl Packet for [u8] {
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let end = off.checked_add(N)?;
        let s = self.get(off..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Some(out)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

/// The state the verdict consults: allowed slots, denied endpoints and the
/// per-source handshake buckets (the XDP maps in the kernel, plain
/// collections in userspace tests).
pub trait Gate {
    fn slot_allowed(&self, slot: u32) -> bool;
    fn deny_entry(&self, endpoint: &EndpointKey) -> Option<DenyEntry>;
    /// The source's bucket, if it has one, to update in place.
    fn bucket_mut(&mut self, source: &SourceKey) -> Option<&mut RateBucket>;
    /// Stores a new bucket for a source seen for the first time.
    fn insert_bucket(&mut self, source: &SourceKey, bucket: RateBucket);
}

/// Refills `bucket` for the time since it was last touched, then takes one
/// token. Returns false (and takes nothing) when the bucket is empty.
#[inline(always)]
pub fn take_token(bucket: &mut RateBucket, now_ns: u64, rate_per_sec: u32, burst: u32) -> bool {
    let cap = burst as u64 * MILLI_TOKENS_PER_TOKEN;
    let elapsed = now_ns.saturating_sub(bucket.last_ns);
    // rate tokens/s = rate milli-tokens/ms; work in microseconds so a 1/s rate
    // still accrues between calls a millisecond apart, and cap the elapsed time
    // so the product cannot overflow.
    let elapsed_us = if elapsed > 3_600_000_000_000 { 3_600_000_000 } else { elapsed / 1000 };
    let refill = elapsed_us * rate_per_sec as u64 / 1000;
    let mut tokens = bucket.milli_tokens + refill;
    if tokens > cap {
        tokens = cap;
    }
    if refill > 0 || bucket.last_ns == 0 {
        bucket.last_ns = now_ns;
    }
    if tokens < MILLI_TOKENS_PER_TOKEN {
        bucket.milli_tokens = tokens;
        return false;
    }
    bucket.milli_tokens = tokens - MILLI_TOKENS_PER_TOKEN;
    true
}

/// Where the IP source address and the UDP header are, once parsed.
struct Located {
    l4: usize,
    source: [u8; 16],
}

/// Ethernet (and up to two VLAN tags) then IPv4 or IPv6: the UDP header's
/// offset and the source address, or the pass reason for anything else.
#[inline(always)]
fn locate_udp<P: Packet + ?Sized>(pkt: &P) -> Result<Located, Reason> {
    let mut off = ETH_HDR_LEN;
    let mut ethertype = match pkt.be16_at(12) {
        Some(t) => t,
        None => return Err(Reason::PassNotIp),
    };
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        ethertype = match pkt.be16_at(off + 2) {
            Some(t) => t,
            None => return Err(Reason::PassNotIp),
        };
        off += VLAN_HDR_LEN;
        tags += 1;
    }
    let mut source = [0u8; 16];
    if ethertype == ETH_P_IPV4 {
        let version_ihl = pkt.u8_at(off).ok_or(Reason::PassNotIp)?;
        let ihl = ((version_ihl & 0x0f) as usize) * 4;
        if version_ihl >> 4 != 4 || ihl < IPV4_MIN_HDR_LEN {
            return Err(Reason::PassNotIp);
        }
        let flags_frag = pkt.be16_at(off + 6).ok_or(Reason::PassNotIp)?;
        let proto = pkt.u8_at(off + 9).ok_or(Reason::PassNotIp)?;
        let src: [u8; 4] = pkt.bytes(off + 12).ok_or(Reason::PassNotIp)?;
        if proto != IPPROTO_UDP {
            return Err(Reason::PassNotUdp);
        }
        // More-fragments set or a non-zero offset: only the kernel's
        // reassembly sees the whole datagram, so it is passed up (and counted).
        if flags_frag & 0x3fff != 0 {
            return Err(Reason::PassFragment);
        }
        source[10] = 0xff;
        source[11] = 0xff;
        source[12] = src[0];
        source[13] = src[1];
        source[14] = src[2];
        source[15] = src[3];
        Ok(Located { l4: off + ihl, source })
    } else if ethertype == ETH_P_IPV6 {
        let version = pkt.u8_at(off).ok_or(Reason::PassNotIp)?;
        if version >> 4 != 6 {
            return Err(Reason::PassNotIp);
        }
        let next_header = pkt.u8_at(off + 6).ok_or(Reason::PassNotIp)?;
        source = pkt.bytes(off + 8).ok_or(Reason::PassNotIp)?;
        // Extension headers (fragments included) are passed: WireGuard never
        // sends them and the kernel stack handles what it must.
        if next_header != IPPROTO_UDP {
            return Err(Reason::PassNotUdp);
        }
        Ok(Located { l4: off + IPV6_HDR_LEN, source })
    } else {
        Err(Reason::PassNotIp)
    }
}

/// The verdict for one Ethernet frame (DESIGN.md, "XDP front"):
/// non-WireGuard traffic passes; malformed WireGuard messages drop; messages
/// carrying a receiver index drop unless its slot is allowed; handshake
/// initiations drop from denied endpoints and above the per-source rate.
#[inline(always)]
pub fn classify<P: Packet + ?Sized, G: Gate>(
    pkt: &P,
    cfg: &XdpConfig,
    gate: &mut G,
    now_ns: u64,
) -> Reason {
    let located = match locate_udp(pkt) {
        Ok(l) => l,
        Err(reason) => return reason,
    };
    let l4 = located.l4;
    // One read at a time with an early return each: a combined match lets
    // LLVM read a register on a path where it was never written, which the
    // verifier rejects. A UDP header cut short cannot be for us.
    let dst_port = match pkt.be16_at(l4 + 2) {
        Some(d) => d,
        None => return Reason::PassOtherPort,
    };
    if cfg.wg_port == 0 || dst_port != cfg.wg_port {
        return Reason::PassOtherPort;
    }
    let src_port = match pkt.be16_at(l4) {
        Some(s) => s,
        None => return Reason::PassOtherPort,
    };
    let udp_len = match pkt.be16_at(l4 + 4) {
        Some(l) => l as usize,
        None => return Reason::PassOtherPort,
    };
    // The UDP length, not the frame length, bounds the message: Ethernet pads
    // short frames. A length beyond the frame is a truncated datagram.
    if udp_len < UDP_HDR_LEN || l4 + udp_len > pkt.len() {
        return Reason::DropMalformed;
    }
    let msg = l4 + UDP_HDR_LEN;
    let msg_len = udp_len - UDP_HDR_LEN;
    let header = match pkt.bytes::<4>(msg) {
        Some(h) => h,
        None => return Reason::DropMalformed,
    };
    // The type is a little-endian u32 on the wire: the three high bytes are zero.
    if header[1] != 0 || header[2] != 0 || header[3] != 0 {
        return Reason::DropMalformed;
    }
    let (expected_ok, receiver_offset, pass) = match header[0] {
        WG_HANDSHAKE_INIT => (msg_len == WG_HANDSHAKE_INIT_LEN, 0, Reason::PassHandshakeInit),
        WG_HANDSHAKE_RESPONSE => (
            msg_len == WG_HANDSHAKE_RESPONSE_LEN,
            WG_RESPONSE_RECEIVER_OFFSET,
            Reason::PassHandshakeResponse,
        ),
        WG_COOKIE_REPLY => (
            msg_len == WG_COOKIE_REPLY_LEN,
            WG_COOKIE_RECEIVER_OFFSET,
            Reason::PassCookieReply,
        ),
        WG_TRANSPORT => (
            msg_len >= WG_TRANSPORT_MIN_LEN,
            WG_TRANSPORT_RECEIVER_OFFSET,
            Reason::PassTransport,
        ),
        _ => return Reason::DropMalformed,
    };
    if !expected_ok {
        return Reason::DropMalformed;
    }
    if header[0] != WG_HANDSHAKE_INIT {
        let receiver = match pkt.le32_at(msg + receiver_offset) {
            Some(r) => r,
            None => return Reason::DropMalformed,
        };
        if !gate.slot_allowed(slot_of_index(receiver)) {
            return Reason::DropUnknownSlot;
        }
        return pass;
    }
    // A handshake initiation: its sender's key is encrypted, so only the
    // endpoint can be judged here.
    let endpoint = EndpointKey { addr: located.source, port: src_port, _pad: [0; 6] };
    if let Some(deny) = gate.deny_entry(&endpoint) {
        if deny.expires_ns > now_ns {
            return Reason::DropDeniedEndpoint;
        }
    }
    if cfg.handshake_rate_per_sec == 0 {
        return pass;
    }
    let source = SourceKey { addr: located.source };
    let allowed = match gate.bucket_mut(&source) {
        Some(bucket) => take_token(bucket, now_ns, cfg.handshake_rate_per_sec, cfg.handshake_burst),
        None => {
            let mut bucket = RateBucket {
                milli_tokens: cfg.handshake_burst as u64 * MILLI_TOKENS_PER_TOKEN,
                last_ns: now_ns,
            };
            let ok = take_token(&mut bucket, now_ns, cfg.handshake_rate_per_sec, cfg.handshake_burst);
            gate.insert_bucket(&source, bucket);
            ok
        }
    };
    if allowed {
        pass
    } else {
        Reason::DropRateLimited
    }
}
