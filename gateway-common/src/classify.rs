//! The packet verdict, pure and shared: the XDP program runs it on the frame
//! in the kernel, userspace runs the same code in tests and fuzzing, and a
//! `BPF_PROG_TEST_RUN` test checks the two agree packet by packet.

use crate::maps::{
    deny_slot_of, rate_slot_of, DenyEntry, EndpointKey, RateBucket, XdpConfig,
    MILLI_TOKENS_PER_TOKEN,
};
use crate::wire::*;

/// Why a packet got its verdict. The discriminant indexes [`crate::XdpStats`];
/// never reorder, only append (and grow `XdpStats` with it).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum XdpVerdict {
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

impl XdpVerdict {
    pub const COUNT: usize = 12;
    pub const ALL: [XdpVerdict; XdpVerdict::COUNT] = [
        XdpVerdict::PassNotIp,
        XdpVerdict::PassNotUdp,
        XdpVerdict::PassFragment,
        XdpVerdict::PassOtherPort,
        XdpVerdict::PassHandshakeInit,
        XdpVerdict::PassHandshakeResponse,
        XdpVerdict::PassCookieReply,
        XdpVerdict::PassTransport,
        XdpVerdict::DropMalformed,
        XdpVerdict::DropUnknownSlot,
        XdpVerdict::DropDeniedEndpoint,
        XdpVerdict::DropRateLimited,
    ];

    /// Whether an enforcing program drops packets with this reason.
    #[inline(always)]
    pub const fn is_drop(self) -> bool {
        (self as u32) >= (XdpVerdict::DropMalformed as u32)
    }

    /// Stable snake_case name, used for metrics labels and CLI output.
    pub const fn name(self) -> &'static str {
        match self {
            XdpVerdict::PassNotIp => "pass_not_ip",
            XdpVerdict::PassNotUdp => "pass_not_udp",
            XdpVerdict::PassFragment => "pass_fragment",
            XdpVerdict::PassOtherPort => "pass_other_port",
            XdpVerdict::PassHandshakeInit => "pass_handshake_init",
            XdpVerdict::PassHandshakeResponse => "pass_handshake_response",
            XdpVerdict::PassCookieReply => "pass_cookie_reply",
            XdpVerdict::PassTransport => "pass_transport",
            XdpVerdict::DropMalformed => "drop_malformed",
            XdpVerdict::DropUnknownSlot => "drop_unknown_slot",
            XdpVerdict::DropDeniedEndpoint => "drop_denied_endpoint",
            XdpVerdict::DropRateLimited => "drop_rate_limited",
        }
    }
}

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
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3]]
}

/// The source address of the frame (IPv4 stored IPv4-mapped).
#[inline(always)]
fn source_addr<P: Packet + ?Sized>(pkt: &P, src_off: usize, v4: bool) -> Option<[u8; 16]> {
    if v4 {
        let w = pkt.ne32_at(src_off)?;
        let mapped = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
        Some(addr_from_words([0, 0, mapped, w]))
    } else {
        Some(addr_from_words([
            pkt.ne32_at(src_off)?,
            pkt.ne32_at(src_off + 4)?,
            pkt.ne32_at(src_off + 8)?,
            pkt.ne32_at(src_off + 12)?,
        ]))
    }
}

/// The state the verdict consults: allowed slots, the deny table and the
/// rate-limit buckets (the XDP maps in the kernel, a model in userspace).
pub trait Gate {
    fn slot_allowed(&self, slot: u32) -> bool;
    /// Deny table slot `index`, if it holds `endpoint` (empty or another
    /// endpoint: `None`).
    fn deny_entry(&self, index: u32, endpoint: &EndpointKey) -> Option<DenyEntry>;
    /// Rate-limit bucket `index`, to update in place.
    fn bucket_mut(&mut self, index: u32) -> Option<&mut RateBucket>;
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
    if refill > 0 {
        bucket.last_ns = now_ns;
    }
    if tokens < MILLI_TOKENS_PER_TOKEN {
        bucket.milli_tokens = tokens;
        return false;
    }
    bucket.milli_tokens = tokens - MILLI_TOKENS_PER_TOKEN;
    true
}

/// Where the UDP header and the IP source address are, once parsed; the
/// address itself is read only on the one path that needs it.
struct Located {
    l4: usize,
    src_off: usize,
    v4: bool,
}

/// Ethernet (and up to two VLAN tags) then IPv4 or IPv6: the UDP header's
/// offset and the source address, or the pass reason for anything else.
#[inline(always)]
fn locate_udp<P: Packet + ?Sized>(pkt: &P) -> Result<Located, XdpVerdict> {
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
    if ethertype == ETH_P_IPV4 {
        let version_ihl = pkt.u8_at(off).ok_or(XdpVerdict::PassNotIp)?;
        let ihl = ((version_ihl & 0x0f) as usize) * 4;
        if version_ihl >> 4 != 4 || ihl < IPV4_MIN_HDR_LEN {
            return Err(XdpVerdict::PassNotIp);
        }
        let flags_frag = pkt.be16_at(off + 6).ok_or(XdpVerdict::PassNotIp)?;
        let proto = pkt.u8_at(off + 9).ok_or(XdpVerdict::PassNotIp)?;
        if pkt.len() < off + IPV4_MIN_HDR_LEN {
            return Err(XdpVerdict::PassNotIp);
        }
        if proto != IPPROTO_UDP {
            return Err(XdpVerdict::PassNotUdp);
        }
        // More-fragments set or a non-zero offset: only the kernel's
        // reassembly sees the whole datagram, so it is passed up (and counted).
        if flags_frag & 0x3fff != 0 {
            return Err(XdpVerdict::PassFragment);
        }
        Ok(Located { l4: off + ihl, src_off: off + 12, v4: true })
    } else if ethertype == ETH_P_IPV6 {
        let version = pkt.u8_at(off).ok_or(XdpVerdict::PassNotIp)?;
        if version >> 4 != 6 {
            return Err(XdpVerdict::PassNotIp);
        }
        let next_header = pkt.u8_at(off + 6).ok_or(XdpVerdict::PassNotIp)?;
        if pkt.len() < off + IPV6_HDR_LEN {
            return Err(XdpVerdict::PassNotIp);
        }
        // Extension headers (fragments included) are passed: WireGuard never
        // sends them and the kernel stack handles what it must.
        if next_header != IPPROTO_UDP {
            return Err(XdpVerdict::PassNotUdp);
        }
        Ok(Located { l4: off + IPV6_HDR_LEN, src_off: off + 8, v4: false })
    } else {
        Err(XdpVerdict::PassNotIp)
    }
}

/// The verdict for one Ethernet frame (DESIGN.md, "XDP front"):
/// non-WireGuard traffic passes; malformed WireGuard messages drop; messages
/// carrying a receiver index drop unless its slot is allowed; handshake
/// initiations drop from denied endpoints and above the per-source rate.
#[inline(always)]
///
/// `now_ns` is called only for handshake initiations (deny expiry, rate
/// limit): reading the clock costs more than classifying a transport packet.
pub fn classify<P: Packet + ?Sized, G: Gate>(
    pkt: &P,
    cfg: &XdpConfig,
    gate: &mut G,
    now_ns: impl FnOnce() -> u64,
) -> XdpVerdict {
    let located = match locate_udp(pkt) {
        Ok(l) => l,
        Err(reason) => return reason,
    };
    let l4 = located.l4;
    // One read at a time, in increasing offset order, with an early return
    // each. A combined match lets LLVM read a register on a path where it was
    // never written, and a read whose bounds check is implied by an earlier
    // one loses its check, then its range in the verifier after LLVM
    // recomputes the pointer; both get the program rejected. A UDP header
    // cut short cannot be for us.
    let src_port = match pkt.be16_at(l4) {
        Some(s) => s,
        None => return XdpVerdict::PassOtherPort,
    };
    let dst_port = match pkt.be16_at(l4 + 2) {
        Some(d) => d,
        None => return XdpVerdict::PassOtherPort,
    };
    if cfg.wg_port == 0 || dst_port != cfg.wg_port {
        return XdpVerdict::PassOtherPort;
    }
    let udp_len = match pkt.be16_at(l4 + 4) {
        Some(l) => l as usize,
        None => return XdpVerdict::PassOtherPort,
    };
    // The UDP length, not the frame length, bounds the message: Ethernet pads
    // short frames. A length beyond the frame is a truncated datagram.
    if udp_len < UDP_HDR_LEN || l4 + udp_len > pkt.len() {
        return XdpVerdict::DropMalformed;
    }
    let msg = l4 + UDP_HDR_LEN;
    let msg_len = udp_len - UDP_HDR_LEN;
    let header = match pkt.le32_at(msg) {
        Some(h) => h,
        None => return XdpVerdict::DropMalformed,
    };
    // The type is a little-endian u32 on the wire: the three high bytes are zero.
    if header > 0xff {
        return XdpVerdict::DropMalformed;
    }
    let kind = header as u8;
    let (expected_ok, receiver_offset, pass) = match kind {
        WG_HANDSHAKE_INIT => (msg_len == WG_HANDSHAKE_INIT_LEN, 0, XdpVerdict::PassHandshakeInit),
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
        _ => return XdpVerdict::DropMalformed,
    };
    if !expected_ok {
        return XdpVerdict::DropMalformed;
    }
    if kind != WG_HANDSHAKE_INIT {
        let receiver = match pkt.le32_at(msg + receiver_offset) {
            Some(r) => r,
            None => return XdpVerdict::DropMalformed,
        };
        if !gate.slot_allowed(slot_of_index(receiver)) {
            return XdpVerdict::DropUnknownSlot;
        }
        return pass;
    }
    // A handshake initiation: its sender's key is encrypted, so only the
    // endpoint can be judged here.
    let source = match source_addr(pkt, located.src_off, located.v4) {
        Some(a) => a,
        None => return XdpVerdict::DropMalformed,
    };
    let now_ns = now_ns();
    let endpoint = EndpointKey { addr: source, port: src_port, _pad: [0; 6] };
    if let Some(deny) = gate.deny_entry(deny_slot_of(&endpoint, cfg.hash_seed), &endpoint) {
        if deny.expires_ns > now_ns {
            return XdpVerdict::DropDeniedEndpoint;
        }
    }
    if cfg.handshake_rate_per_sec == 0 {
        return pass;
    }
    let allowed = match gate.bucket_mut(rate_slot_of(&source, cfg.hash_seed)) {
        Some(bucket) => take_token(bucket, now_ns, cfg.handshake_rate_per_sec, cfg.handshake_burst),
        // Only when the map is missing: fail open on the limiter alone.
        None => true,
    };
    if allowed {
        pass
    } else {
        XdpVerdict::DropRateLimited
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::frames::{wg_message, ModelGate, UdpFrame};
    use crate::maps::MODE_ENFORCE;

    const GW: [u8; 4] = [198, 18, 0, 1];
    const NODE: [u8; 4] = [198, 18, 0, 2];
    const PORT: u16 = 51820;

    fn cfg() -> XdpConfig {
        XdpConfig { wg_port: PORT, mode: MODE_ENFORCE, handshake_rate_per_sec: 2, handshake_burst: 3, ..Default::default() }
    }

    fn verdict(frame: &[u8], gate: &mut ModelGate, now: u64) -> XdpVerdict {
        classify(frame, &cfg(), gate, || now)
    }

    fn wg_frame(msg: &[u8]) -> std::vec::Vec<u8> {
        UdpFrame::v4(NODE, 40000, GW, PORT, msg).build()
    }

    #[test]
    fn fixed_size_messages_must_have_their_exact_size() {
        let mut gate = ModelGate::default();
        gate.allowed_slots.insert(1);
        for (kind, len, pass) in [
            (1u8, 148usize, XdpVerdict::PassHandshakeInit),
            (2, 92, XdpVerdict::PassHandshakeResponse),
            (3, 64, XdpVerdict::PassCookieReply),
            (4, 32, XdpVerdict::PassTransport),
            (4, 1452, XdpVerdict::PassTransport),
        ] {
            let ok = wg_frame(&wg_message(kind, 1 << 8, len));
            assert_eq!(verdict(&ok, &mut gate, 1), pass, "type {kind} len {len}");
            if kind != 4 {
                for bad in [len - 1, len + 1] {
                    let f = wg_frame(&wg_message(kind, 1 << 8, bad));
                    assert_eq!(verdict(&f, &mut gate, 1), XdpVerdict::DropMalformed, "type {kind} len {bad}");
                }
            }
        }
        let short = wg_frame(&wg_message(4, 1 << 8, 31));
        assert_eq!(verdict(&short, &mut gate, 1), XdpVerdict::DropMalformed);
    }

    #[test]
    fn unknown_types_and_nonzero_reserved_bytes_are_malformed() {
        let mut gate = ModelGate::default();
        for kind in [0u8, 5, 9, 255] {
            assert_eq!(verdict(&wg_frame(&wg_message(kind, 0, 148)), &mut gate, 1), XdpVerdict::DropMalformed);
        }
        let mut m = wg_message(1, 0, 148);
        m[2] = 1;
        assert_eq!(verdict(&wg_frame(&m), &mut gate, 1), XdpVerdict::DropMalformed);
        assert_eq!(verdict(&wg_frame(&[1, 0]), &mut gate, 1), XdpVerdict::DropMalformed);
        assert_eq!(verdict(&wg_frame(&[]), &mut gate, 1), XdpVerdict::DropMalformed);
    }

    #[test]
    fn session_messages_need_an_open_slot() {
        let mut gate = ModelGate::default();
        let to_slot_7 = wg_frame(&wg_message(4, (7 << 8) | 3, 96));
        assert_eq!(verdict(&to_slot_7, &mut gate, 1), XdpVerdict::DropUnknownSlot);
        gate.allowed_slots.insert(7);
        assert_eq!(verdict(&to_slot_7, &mut gate, 1), XdpVerdict::PassTransport);
        let response = wg_frame(&wg_message(2, 7 << 8, 92));
        assert_eq!(verdict(&response, &mut gate, 1), XdpVerdict::PassHandshakeResponse);
        let other = wg_frame(&wg_message(3, 8 << 8, 64));
        assert_eq!(verdict(&other, &mut gate, 1), XdpVerdict::DropUnknownSlot);
    }

    #[test]
    fn denied_endpoints_lose_initiations_until_expiry() {
        let mut gate = ModelGate::default();
        gate.deny(crate::EndpointKey::v4(NODE, 40000), 1_000);
        let init = wg_frame(&wg_message(1, 0, 148));
        assert_eq!(verdict(&init, &mut gate, 999), XdpVerdict::DropDeniedEndpoint);
        assert_eq!(verdict(&init, &mut gate, 1_000), XdpVerdict::PassHandshakeInit);
        // Another port of the same host is another endpoint.
        let other_port = UdpFrame::v4(NODE, 40001, GW, PORT, &wg_message(1, 0, 148)).build();
        gate.deny(crate::EndpointKey::v4(NODE, 40000), u64::MAX);
        assert_eq!(verdict(&other_port, &mut gate, 5), XdpVerdict::PassHandshakeInit);
    }

    #[test]
    fn initiations_are_rate_limited_per_source() {
        let mut gate = ModelGate::default();
        let init = wg_frame(&wg_message(1, 0, 148));
        let t0 = 10_000_000_000u64;
        // Burst of 3, then empty.
        for _ in 0..3 {
            assert_eq!(verdict(&init, &mut gate, t0), XdpVerdict::PassHandshakeInit);
        }
        assert_eq!(verdict(&init, &mut gate, t0), XdpVerdict::DropRateLimited);
        // 2/s: one token back after 500 ms.
        assert_eq!(verdict(&init, &mut gate, t0 + 499_000_000), XdpVerdict::DropRateLimited);
        assert_eq!(verdict(&init, &mut gate, t0 + 500_000_000), XdpVerdict::PassHandshakeInit);
        assert_eq!(verdict(&init, &mut gate, t0 + 500_000_000), XdpVerdict::DropRateLimited);
        // Another source has its own bucket.
        let other = UdpFrame::v4([198, 18, 0, 3], 1, GW, PORT, &wg_message(1, 0, 148)).build();
        assert_eq!(verdict(&other, &mut gate, t0), XdpVerdict::PassHandshakeInit);
    }

    #[test]
    fn other_traffic_passes_with_its_reason() {
        let mut gate = ModelGate::default();
        let other_port = UdpFrame::v4(NODE, 1, GW, 53, b"dns").build();
        assert_eq!(verdict(&other_port, &mut gate, 1), XdpVerdict::PassOtherPort);
        let mut arp = wg_frame(&wg_message(1, 0, 148));
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(verdict(&arp, &mut gate, 1), XdpVerdict::PassNotIp);
        let mut tcp = wg_frame(&wg_message(1, 0, 148));
        tcp[14 + 9] = 6;
        assert_eq!(verdict(&tcp, &mut gate, 1), XdpVerdict::PassNotUdp);
        let mut frag = UdpFrame::v4(NODE, 1, GW, PORT, &[4, 0, 0, 0]);
        frag.v4_frag = 0x2000;
        assert_eq!(verdict(&frag.build(), &mut gate, 1), XdpVerdict::PassFragment);
        assert_eq!(verdict(&[0u8; 10][..], &mut gate, 1), XdpVerdict::PassNotIp);
    }

    #[test]
    fn vlan_and_ipv6_frames_are_parsed() {
        let mut gate = ModelGate::default();
        let msg = wg_message(4, 9 << 8, 48);
        let mut one = UdpFrame::v4(NODE, 1, GW, PORT, &msg);
        one.vlans = &[100];
        assert_eq!(verdict(&one.build(), &mut gate, 1), XdpVerdict::DropUnknownSlot);
        let mut two = UdpFrame::v4(NODE, 1, GW, PORT, &msg);
        two.vlans = &[100, 200];
        assert_eq!(verdict(&two.build(), &mut gate, 1), XdpVerdict::DropUnknownSlot);
        let mut three = UdpFrame::v4(NODE, 1, GW, PORT, &msg);
        three.vlans = &[1, 2, 3];
        assert_eq!(verdict(&three.build(), &mut gate, 1), XdpVerdict::PassNotIp, "deeper stacks pass");
        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        v6[15] = 2;
        let f = UdpFrame::v6(v6, 1, [0xfd; 16], PORT, &msg).build();
        assert_eq!(verdict(&f, &mut gate, 1), XdpVerdict::DropUnknownSlot);
        gate.allowed_slots.insert(9);
        assert_eq!(verdict(&f, &mut gate, 1), XdpVerdict::PassTransport);
    }

    #[test]
    fn udp_length_is_checked_against_the_frame() {
        let mut gate = ModelGate::default();
        let msg = wg_message(1, 0, 148);
        let mut long = UdpFrame::v4(NODE, 1, GW, PORT, &msg);
        long.udp_len_override = Some(8 + 149);
        assert_eq!(verdict(&long.build(), &mut gate, 1), XdpVerdict::DropMalformed);
        let mut tiny = UdpFrame::v4(NODE, 1, GW, PORT, &msg);
        tiny.udp_len_override = Some(7);
        assert_eq!(verdict(&tiny.build(), &mut gate, 1), XdpVerdict::DropMalformed);
        // Ethernet padding after the datagram is ignored.
        let mut padded = UdpFrame::v4(NODE, 1, GW, PORT, &msg).build();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(verdict(&padded, &mut gate, 1), XdpVerdict::PassHandshakeInit);
    }

    #[test]
    fn token_bucket_never_exceeds_its_burst() {
        let mut b = RateBucket { milli_tokens: 0, last_ns: 1 };
        // A year of idle time refills to the burst, not beyond.
        assert!(take_token(&mut b, 365 * 24 * 3600 * 1_000_000_000, 1000, 5));
        assert_eq!(b.milli_tokens, 4 * MILLI_TOKENS_PER_TOKEN);
        // An unused bucket starts full.
        let mut fresh = RateBucket::default();
        assert!(take_token(&mut fresh, 7, 1, 5));
        assert_eq!(b.milli_tokens, 4 * MILLI_TOKENS_PER_TOKEN);
    }
}
