//! Property tests (proptest fuzzing) of the classifier on arbitrary bytes,
//! mutated WireGuard frames, fragment sequences and IPv6 extension-header
//! chains: it never panics, only WireGuard-port traffic is ever dropped,
//! verdicts depend on nothing but the frame and the gate, fragments get
//! their datagram's verdict and no fragment of a closed-slot datagram passes.

extern crate std;
use crate::frames::{wg_message, ModelGate, UdpFrame};
use crate::{classify, XdpConfig, XdpVerdict, MODE_ENFORCE};
use proptest::prelude::*;
use std::vec::Vec;

const PORT: u16 = 51820;

fn cfg() -> XdpConfig {
    XdpConfig { wg_port: PORT, mode: MODE_ENFORCE, handshake_rate_per_sec: 5, handshake_burst: 5, ..Default::default() }
}

/// A WireGuard frame of a random type and size, then random byte edits.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (0u8..6, 0usize..300, any::<u32>(), any::<bool>(), proptest::collection::vec((0usize..400, any::<u8>()), 0..6), 0usize..400)
        .prop_map(|(kind, len, idx, v6, edits, cut)| {
            let msg = wg_message(kind, idx, len);
            let mut f = if v6 {
                UdpFrame::v6([0xfd; 16], 1, [0xfe; 16], PORT, &msg).build()
            } else {
                UdpFrame::v4([10, 0, 0, 2], 1, [10, 0, 0, 1], PORT, &msg).build()
            };
            for (at, byte) in edits {
                if let Some(b) = f.get_mut(at) {
                    *b = byte;
                }
            }
            f.truncate(cut.max(1));
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), now in any::<u64>()) {
        let mut gate = ModelGate::default();
        let _ = classify(bytes.as_slice(), &cfg(), &mut gate, || now);
    }

    #[test]
    fn mutated_frames_never_panic_and_are_deterministic(frame in mutated_frame()) {
        let mut a = ModelGate::default();
        let mut b = ModelGate::default();
        let first = classify(frame.as_slice(), &cfg(), &mut a, || 1);
        let second = classify(frame.as_slice(), &cfg(), &mut b, || 1);
        prop_assert_eq!(first, second);
    }

    #[test]
    fn only_wireguard_port_traffic_is_dropped(port in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assume!(port != PORT);
        let f = UdpFrame::v4([10, 0, 0, 2], 1, [10, 0, 0, 1], port, &payload).build();
        let mut gate = ModelGate::default();
        prop_assert_eq!(classify(f.as_slice(), &cfg(), &mut gate, || 1), XdpVerdict::PassOtherPort);
    }

    #[test]
    fn session_packets_pass_iff_their_slot_is_open(slot in 0u32..(1 << 24), counter in 0u32..256, open in any::<bool>()) {
        let mut gate = ModelGate::default();
        if open {
            gate.allowed_slots.insert(slot);
        }
        let msg = wg_message(4, (slot << 8) | counter, 64);
        let f = UdpFrame::v4([10, 0, 0, 2], 1, [10, 0, 0, 1], PORT, &msg).build();
        let expected = if open && slot < crate::MAX_PEER_SLOTS { XdpVerdict::PassTransport } else { XdpVerdict::DropUnknownSlot };
        prop_assert_eq!(classify(f.as_slice(), &cfg(), &mut gate, || 1), expected);
    }
}

/// A WireGuard message of a random kind (valid sizes), to an open or a
/// closed slot.
fn message() -> impl Strategy<Value = (Vec<u8>, bool)> {
    (0usize..4, any::<bool>(), 0usize..600).prop_map(|(kind, open, extra)| {
        let slot: u32 = if open { 5 } else { 6 };
        let msg = match kind {
            0 => wg_message(1, 0, 148),
            1 => wg_message(2, slot << 8, 92),
            2 => wg_message(3, slot << 8, 64),
            _ => wg_message(4, slot << 8, 32 + extra),
        };
        (msg, open)
    })
}

fn gate_with_open_slot() -> ModelGate {
    let mut gate = ModelGate::default();
    gate.allowed_slots.insert(5);
    gate
}

/// Cut points: increasing multiples of 8 inside the datagram.
fn cuts(len: usize, picks: &[usize]) -> Vec<usize> {
    let mut c: Vec<usize> = picks.iter().map(|p| (p % len.max(1)) & !7).filter(|c| *c > 0).collect();
    c.sort_unstable();
    c.dedup();
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// In order, a fragmented datagram gets what the whole one gets, as
    /// long as its first fragment shows the header fields; otherwise every
    /// fragment is dropped. Both families.
    #[test]
    fn fragments_in_order_get_the_whole_datagrams_verdict(
        (msg, _open) in message(),
        picks in proptest::collection::vec(any::<usize>(), 1..5),
        v6 in any::<bool>(),
        id in any::<u16>(),
    ) {
        let mut d = if v6 {
            UdpFrame::v6([0xfd; 16], 1, [0xfe; 16], PORT, &msg)
        } else {
            UdpFrame::v4([10, 0, 0, 2], 1, [10, 0, 0, 1], PORT, &msg)
        };
        d.ip_id = id as u32;
        let whole = classify(d.build().as_slice(), &cfg(), &mut gate_with_open_slot(), || 1);
        let len = d.udp_datagram().len();
        let cut = cuts(len, &picks);
        prop_assume!(!cut.is_empty());
        let frags = d.fragments(&cut);
        let mut gate = gate_with_open_slot();
        let first = classify(frags[0].as_slice(), &cfg(), &mut gate, || 1);
        // Where the message's type and receiver index end.
        let needed = 8 + match msg[0] { 1 => 4, 2 => 12, _ => 8 };
        if cut[0] >= needed {
            prop_assert_eq!(first, whole);
        } else {
            prop_assert_eq!(first, XdpVerdict::DropFragmentTooShort);
        }
        for f in &frags[1..] {
            let later = classify(f.as_slice(), &cfg(), &mut gate, || 1);
            let expected = if first.is_drop() { XdpVerdict::DropFragmentFirstDropped } else { XdpVerdict::PassFragment };
            prop_assert_eq!(later, expected);
        }
    }

    /// Whatever the order, duplication and overlap of the fragments of a
    /// closed-slot datagram, none of them passes.
    #[test]
    fn no_fragment_of_a_closed_slot_datagram_passes(
        extra in 0usize..600,
        pieces in proptest::collection::vec((0usize..80, 1usize..80, any::<bool>()), 1..8),
        v6 in any::<bool>(),
    ) {
        let msg = wg_message(4, 6 << 8, 32 + extra);
        let d = if v6 {
            UdpFrame::v6([0xfd; 16], 1, [0xfe; 16], PORT, &msg)
        } else {
            UdpFrame::v4([10, 0, 0, 2], 1, [10, 0, 0, 1], PORT, &msg)
        };
        let mut gate = gate_with_open_slot();
        for (start_units, len_units, more) in pieces {
            let start = start_units * 8;
            let f = d.fragment(start, start + len_units * 8, more);
            let v = classify(f.as_slice(), &cfg(), &mut gate, || 1);
            prop_assert!(v.is_drop(), "{:?} passed (start {})", v, start);
        }
    }

    /// A walkable IPv6 extension-header chain changes nothing; one past the
    /// bounds is dropped, whatever the message.
    #[test]
    fn ipv6_chains_are_transparent_within_the_bounds(
        (msg, _open) in message(),
        kinds in proptest::collection::vec((0u8..4, 0u8..3), 0..9),
    ) {
        use crate::frames::ExtHeader;
        let chain: Vec<ExtHeader> = kinds.iter().map(|(k, units)| match k {
            0 => ExtHeader::HopByHop(*units),
            1 => ExtHeader::DestOpts(*units),
            2 => ExtHeader::Routing(*units),
            _ => ExtHeader::Fragment { offset: 0, more: false, id: *units as u32 },
        }).collect();
        let plain = UdpFrame::v6([0xfd; 16], 1, [0xfe; 16], PORT, &msg);
        let whole = classify(plain.build().as_slice(), &cfg(), &mut gate_with_open_slot(), || 1);
        let mut chained = plain.clone();
        chained.v6_ext = &chain;
        let got = classify(chained.build().as_slice(), &cfg(), &mut gate_with_open_slot(), || 1);
        if chain.len() <= crate::wire::MAX_IPV6_EXT_HEADERS {
            prop_assert_eq!(got, whole);
        } else {
            prop_assert_eq!(got, XdpVerdict::DropExtHeaderUnwalkable);
        }
    }
}
