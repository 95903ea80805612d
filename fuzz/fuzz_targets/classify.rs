//! Fuzz target: frames through the packet classifier's userspace build
//! (`gateway_common::classify`, the code the XDP program runs), against the
//! model of the kernel maps, and the same bytes as a datagram through the
//! late gate (`classify_datagram`). The first bytes pick the gate's state;
//! the rest is frames separated by `0xff 0xfe`, so the fragment table and
//! the rate buckets carry state from one frame to the next. Only traffic to
//! the WireGuard port is ever dropped.
#![no_main]

use gateway_common::frames::ModelGate;
use gateway_common::{classify, classify_datagram, Coalesced, XdpConfig, MODE_ENFORCE};
use libfuzzer_sys::fuzz_target;

const WG_PORT: u16 = 51820;

/// The UDP destination port of a whole, untagged IPv4 or IPv6 datagram
/// without options or extension headers whose lengths all agree with the
/// frame: the frames for which "not the WireGuard port" is certain.
fn plain_udp_dst(frame: &[u8]) -> Option<u16> {
    let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    let udp_at = match be16(12)? {
        0x0800 => {
            let whole = be16(20)? & 0x3fff == 0;
            let sized = usize::from(be16(16)?) == frame.len() - 14;
            (frame[14] == 0x45 && frame[23] == 17 && whole && sized).then_some(34)?
        }
        0x86dd => {
            let sized = usize::from(be16(18)?) == frame.len().checked_sub(54)?;
            (frame[14] >> 4 == 6 && frame[20] == 17 && sized).then_some(54)?
        }
        _ => return None,
    };
    (usize::from(be16(udp_at + 4)?) == frame.len() - udp_at).then_some(())?;
    be16(udp_at + 2)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[open, rate, seed], frames)) = data.split_first_chunk::<3>() else { return };
    let cfg = XdpConfig {
        wg_port: WG_PORT,
        mode: MODE_ENFORCE,
        handshake_rate_per_sec: u32::from(rate % 8),
        handshake_burst: u32::from(rate / 8 % 8),
        hash_seed: u32::from(seed),
        unproven_rate_per_sec: u32::from(rate / 64),
        unproven_burst: 2,
        ..XdpConfig::default()
    };
    let mut gate = ModelGate { seed: u32::from(seed), ..ModelGate::default() };
    // Slots 0..8, each open or not by one bit of `open`.
    gate.allowed_slots = (0..8).filter(|s| open >> s & 1 == 1).collect();
    let mut now = 1_000_000_000u64;
    let mut rest = frames;
    while !rest.is_empty() {
        let end = rest.windows(2).position(|w| w == [0xff, 0xfe]).unwrap_or(rest.len());
        let frame = &rest[..end];
        rest = rest.get(end + 2..).unwrap_or_default();
        now += 1_000_000;
        let verdict = classify(frame, &cfg, &mut gate, || now);
        if verdict.is_drop() {
            if let Some(port) = plain_udp_dst(frame) {
                assert_eq!(port, WG_PORT, "{verdict:?} for UDP to port {port}");
            }
        }
        let ip = frame.get(14..).unwrap_or_default();
        let _ = classify_datagram(ip, &cfg, &mut gate, || now, Coalesced::ONE);
        let segs = Coalesced { segment: 1 + usize::from(seed % 64), count: usize::from(open % 70) };
        let _ = classify_datagram(ip, &cfg, &mut gate, || now, segs);
    }
});
