//! Tests of the classifier against hand-built frames and the model gate.
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
    let mut frag = UdpFrame::v4(NODE, 1, GW, 53, &[4, 0, 0, 0, 0, 0, 0, 0]);
    frag.v4_frag = 0x2000;
    assert_eq!(verdict(&frag.build(), &mut gate, 1), XdpVerdict::PassOtherPort, "a first fragment to DNS");
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

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}

#[test]
fn later_fragments_inherit_the_first_fragments_verdict() {
    let mut gate = ModelGate::default();
    gate.allowed_slots.insert(5);
    let open = wg_message(4, 5 << 8, 200);
    let closed = wg_message(4, 6 << 8, 200);
    for (msg, first, later) in [
        (&open, XdpVerdict::PassTransport, XdpVerdict::PassFragment),
        (&closed, XdpVerdict::DropUnknownSlot, XdpVerdict::DropFragmentFirstDropped),
    ] {
        let mut d = UdpFrame::v4(NODE, 40000, GW, PORT, msg);
        d.ip_id = msg[5] as u32;
        let frags = d.fragments(&[48, 96]);
        assert_eq!(frags.len(), 3);
        assert_eq!(verdict(&frags[0], &mut gate, 1), first);
        assert_eq!(verdict(&frags[1], &mut gate, 1), later);
        assert_eq!(verdict(&frags[2], &mut gate, 1), later);
    }
}

#[test]
fn fragments_without_a_first_on_record_are_dropped() {
    let mut gate = ModelGate::default();
    gate.allowed_slots.insert(5);
    let mut d = UdpFrame::v4(NODE, 40000, GW, PORT, &[]);
    let msg = wg_message(4, 5 << 8, 200);
    d.payload = &msg;
    d.ip_id = 77;
    let frags = d.fragments(&[64]);
    // Reversed: the later fragment arrives first and has nothing to go by.
    assert_eq!(verdict(&frags[1], &mut gate, 1), XdpVerdict::DropFragmentNeverSeen);
    assert_eq!(verdict(&frags[0], &mut gate, 1), XdpVerdict::PassTransport);
    // Another id, source or destination is another datagram.
    let mut other = d.clone();
    other.ip_id = 78;
    assert_eq!(verdict(&other.fragments(&[64])[1], &mut gate, 1), XdpVerdict::DropFragmentNeverSeen);
    let mut elsewhere = d.clone();
    elsewhere.ips = crate::frames::Ips::V4 { src: NODE, dst: [198, 18, 0, 9] };
    assert_eq!(verdict(&elsewhere.fragments(&[64])[1], &mut gate, 1), XdpVerdict::DropFragmentNeverSeen);
    // Fragments of other protocols pass as before: they carry their protocol.
    let mut tcp = d.fragments(&[64])[1].clone();
    tcp[14 + 9] = 6;
    assert_eq!(verdict(&tcp, &mut gate, 1), XdpVerdict::PassNotUdp);
}

#[test]
fn a_later_first_fragment_replaces_the_record() {
    let mut gate = ModelGate::default();
    gate.allowed_slots.insert(5);
    let open = wg_message(4, 5 << 8, 200);
    let closed = wg_message(4, 6 << 8, 200);
    let mut a = UdpFrame::v4(NODE, 40000, GW, PORT, &open);
    a.ip_id = 9;
    let mut b = a.clone();
    b.payload = &closed;
    assert_eq!(verdict(&a.fragments(&[64])[0], &mut gate, 1), XdpVerdict::PassTransport);
    assert_eq!(verdict(&b.fragments(&[64])[0], &mut gate, 1), XdpVerdict::DropUnknownSlot);
    assert_eq!(verdict(&a.fragments(&[64])[1], &mut gate, 1), XdpVerdict::DropFragmentFirstDropped);
}

#[test]
fn first_fragments_must_show_the_header_fields() {
    let mut gate = ModelGate::default();
    gate.allowed_slots.insert(5);
    let msg = wg_message(2, 5 << 8, 92);
    let mut d = UdpFrame::v4(NODE, 40000, GW, PORT, &msg);
    d.ip_id = 3;
    // 8 bytes: the UDP header only; 16: the type but not the receiver
    // index (at message offset 8).
    for cut in [8usize, 16] {
        let frags = d.fragments(&[cut]);
        assert_eq!(verdict(&frags[0], &mut gate, 1), XdpVerdict::DropFragmentTooShort, "cut at {cut}");
        assert_eq!(verdict(&frags[1], &mut gate, 1), XdpVerdict::DropFragmentFirstDropped);
    }
    // Cut inside the UDP header (an attacker may send any length).
    let inside = d.fragment(0, 4, true);
    assert_eq!(verdict(&inside, &mut gate, 1), XdpVerdict::DropFragmentTooShort);
    // 24 bytes show the receiver index: judged on it.
    assert_eq!(verdict(&d.fragments(&[24])[0], &mut gate, 1), XdpVerdict::PassHandshakeResponse);
    // Sizes are judged on the UDP length (the reassembled datagram).
    let short = wg_message(2, 5 << 8, 91);
    let mut s = d.clone();
    s.payload = &short;
    assert_eq!(verdict(&s.fragments(&[24])[0], &mut gate, 1), XdpVerdict::DropMalformed);
    // A first fragment of an initiation shows its type: the endpoint rules apply.
    let init = wg_message(1, 0, 148);
    let mut i = d.clone();
    i.payload = &init;
    gate.deny(crate::EndpointKey::v4(NODE, 40000), u64::MAX);
    assert_eq!(verdict(&i.fragments(&[16])[0], &mut gate, 1), XdpVerdict::DropDeniedEndpoint);
}

#[test]
fn ipv6_extension_headers_are_walked_to_udp() {
    use crate::frames::ExtHeader::*;
    let mut gate = ModelGate::default();
    let msg = wg_message(4, 9 << 8, 64);
    let chains: [&[crate::frames::ExtHeader]; 5] = [
        &[HopByHop(0)],
        &[DestOpts(1)],
        &[HopByHop(0), Routing(2), DestOpts(0)],
        &[Fragment { offset: 0, more: false, id: 5 }],
        &[HopByHop(0), DestOpts(0), Routing(0), Fragment { offset: 0, more: false, id: 5 }, DestOpts(0)],
    ];
    for chain in chains {
        let mut f = UdpFrame::v6(v6(2), 1, v6(1), PORT, &msg);
        f.v6_ext = chain;
        assert_eq!(verdict(&f.build(), &mut gate, 1), XdpVerdict::DropUnknownSlot, "{chain:?}");
    }
    // Behind a header the walk does not cross there is no UDP for us.
    let mut ah = UdpFrame::v6(v6(2), 1, v6(1), PORT, &msg);
    ah.v6_ext = &[Other(51, 2)];
    assert_eq!(verdict(&ah.build(), &mut gate, 1), XdpVerdict::PassNotUdp);
    // Too many headers, or too many bytes of them: unwalkable.
    let mut deep = UdpFrame::v6(v6(2), 1, v6(1), PORT, &msg);
    deep.v6_ext = &[DestOpts(0); 7];
    assert_eq!(verdict(&deep.build(), &mut gate, 1), XdpVerdict::DropExtHeaderUnwalkable);
    let mut long = UdpFrame::v6(v6(2), 1, v6(1), PORT, &msg);
    long.v6_ext = &[HopByHop(63), DestOpts(1)];
    assert_eq!(verdict(&long.build(), &mut gate, 1), XdpVerdict::DropExtHeaderUnwalkable);
    let mut six = UdpFrame::v6(v6(2), 1, v6(1), PORT, &msg);
    six.v6_ext = &[DestOpts(0); 6];
    assert_eq!(verdict(&six.build(), &mut gate, 1), XdpVerdict::DropUnknownSlot, "six is within the bounds");
    // A chain cut by the end of the frame.
    let mut cut = UdpFrame::v6(v6(2), 1, v6(1), PORT, &msg);
    cut.v6_ext = &[DestOpts(3)];
    let frame = cut.build();
    assert_eq!(verdict(&frame[..14 + 40 + 12], &mut gate, 1), XdpVerdict::DropExtHeaderUnwalkable);
}

#[test]
fn ipv6_fragments_are_tracked_like_ipv4() {
    use crate::frames::ExtHeader::*;
    let mut gate = ModelGate::default();
    gate.allowed_slots.insert(5);
    let open = wg_message(4, 5 << 8, 300);
    let closed = wg_message(4, 6 << 8, 300);
    for (msg, first, later) in [
        (&open, XdpVerdict::PassTransport, XdpVerdict::PassFragment),
        (&closed, XdpVerdict::DropUnknownSlot, XdpVerdict::DropFragmentFirstDropped),
    ] {
        let mut d = UdpFrame::v6(v6(2), 40000, v6(1), PORT, msg);
        d.ip_id = 0x0102_0300 | msg[5] as u32;
        d.v6_ext = &[HopByHop(0)];
        let frags = d.fragments(&[128, 256]);
        assert_eq!(verdict(&frags[0], &mut gate, 1), first);
        assert_eq!(verdict(&frags[2], &mut gate, 1), later);
        assert_eq!(verdict(&frags[1], &mut gate, 1), later);
    }
    let mut stray = UdpFrame::v6(v6(2), 40000, v6(1), PORT, &open);
    stray.ip_id = 1;
    assert_eq!(verdict(&stray.fragments(&[128])[1], &mut gate, 1), XdpVerdict::DropFragmentNeverSeen);
    let short = stray.fragment(0, 8, true);
    assert_eq!(verdict(&short, &mut gate, 1), XdpVerdict::DropFragmentTooShort);
    // A first fragment to another port passes and lets its datagram through.
    let mut dns = UdpFrame::v6(v6(2), 40000, v6(1), 53, &open);
    dns.ip_id = 2;
    let frags = dns.fragments(&[64]);
    assert_eq!(verdict(&frags[0], &mut gate, 1), XdpVerdict::PassOtherPort);
    assert_eq!(verdict(&frags[1], &mut gate, 1), XdpVerdict::PassFragment);
}

#[test]
fn a_second_fragment_header_is_unwalkable() {
    use crate::frames::ExtHeader::*;
    let mut gate = ModelGate::default();
    let msg = wg_message(4, 5 << 8, 64);
    let mut f = UdpFrame::v6(v6(2), 1, v6(1), PORT, &msg);
    f.v6_ext = &[Fragment { offset: 0, more: true, id: 1 }, Fragment { offset: 0, more: true, id: 2 }];
    assert_eq!(verdict(&f.build(), &mut gate, 1), XdpVerdict::DropExtHeaderUnwalkable);
}

fn budget_cfg() -> XdpConfig {
    XdpConfig { unproven_rate_per_sec: 2, unproven_burst: 2, handshake_rate_per_sec: 100, handshake_burst: 100, ..cfg() }
}

/// A spoofed-source flood: every initiation from a new source would get a
/// fresh per-source bucket; the unproven budget is one bucket for all of
/// them, while a live peer's endpoint keeps its own.
#[test]
fn sources_without_a_recent_handshake_share_one_budget_and_live_ones_keep_theirs() {
    let cfg = budget_cfg();
    let mut gate = ModelGate::default();
    let t0 = 10_000_000_000u64;
    let live = crate::EndpointKey::v4(NODE, 40000);
    gate.mark_live(live, t0 + 1_000_000_000);
    let spoofed = |i: u32| {
        let b = i.to_be_bytes();
        UdpFrame::v4([10, b[1], b[2], b[3]], 1024 + (i as u16), GW, PORT, &wg_message(1, 0, 148)).build()
    };
    let mut passed = 0;
    for i in 0..1000 {
        match classify(&spoofed(i)[..], &cfg, &mut gate, || t0) {
            XdpVerdict::PassHandshakeInit => passed += 1,
            v => assert_eq!(v, XdpVerdict::DropUnprovenBudget),
        }
    }
    assert_eq!(passed, 2, "the burst, and nothing more");
    // The live peer is not in that queue.
    let init = wg_frame(&wg_message(1, 0, 148));
    for _ in 0..5 {
        assert_eq!(classify(&init[..], &cfg, &mut gate, || t0), XdpVerdict::PassHandshakeInit);
    }
    // The same host from another port is another endpoint: unproven.
    let other_port = UdpFrame::v4(NODE, 40001, GW, PORT, &wg_message(1, 0, 148)).build();
    assert_eq!(classify(&other_port[..], &cfg, &mut gate, || t0), XdpVerdict::DropUnprovenBudget);
    // 2/s: one token back after 500 ms, for whoever comes first.
    assert_eq!(classify(&spoofed(5000)[..], &cfg, &mut gate, || t0 + 500_000_000), XdpVerdict::PassHandshakeInit);
    // Expired: the endpoint is unproven again.
    let later = t0 + 1_000_000_000;
    assert_eq!(classify(&init[..], &cfg, &mut gate, || later), XdpVerdict::PassHandshakeInit, "the budget's refill");
    assert_eq!(classify(&init[..], &cfg, &mut gate, || later), XdpVerdict::DropUnprovenBudget);
}

#[test]
fn the_budget_is_off_when_zero_and_comes_after_the_deny_table() {
    let mut gate = ModelGate::default();
    let off = XdpConfig { unproven_rate_per_sec: 0, ..budget_cfg() };
    let init = wg_frame(&wg_message(1, 0, 148));
    for _ in 0..10 {
        assert_eq!(classify(&init[..], &off, &mut gate, || 5), XdpVerdict::PassHandshakeInit);
    }
    // A denied endpoint is counted as denied and takes no token.
    let cfg = budget_cfg();
    let mut gate = ModelGate::default();
    gate.deny(crate::EndpointKey::v4(NODE, 40000), u64::MAX);
    for _ in 0..10 {
        assert_eq!(classify(&init[..], &cfg, &mut gate, || 5), XdpVerdict::DropDeniedEndpoint);
    }
    assert_eq!(gate.unproven, crate::RateBucket::default());
    // Other message types never touch it.
    gate.allowed_slots.insert(7);
    let transport = wg_frame(&wg_message(4, 7 << 8, 64));
    assert_eq!(classify(&transport[..], &cfg, &mut gate, || 5), XdpVerdict::PassTransport);
    assert_eq!(gate.unproven, crate::RateBucket::default());
}
