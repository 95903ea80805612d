//! Property tests (proptest fuzzing) of the classifier on arbitrary bytes and
//! on mutated WireGuard frames: it never panics, only WireGuard-port traffic
//! is ever dropped, and verdicts depend on nothing but the frame and the gate.

extern crate std;
use crate::frames::{wg_message, ModelGate, UdpFrame};
use crate::{classify, XdpVerdict, XdpConfig, MODE_ENFORCE};
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
