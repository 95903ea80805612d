//! Refusal of low-order Curve25519 points on the wire (pure): a handshake
//! message whose ephemeral key is one makes the responder's or initiator's
//! Diffie-Hellman with it all zeros, a value anybody can compute, and
//! boringtun 0.7 does not refuse it. The device drops such messages before
//! boringtun sees them; static keys are refused when a peer is added
//! (`PeerError::LowOrderKey`). The point list is the registry's
//! (`gateway_core::registry::is_low_order_point`).

use gateway_core::registry::is_low_order_point;

/// WireGuard message types and sizes (whitepaper, section 5.4): an
/// initiation's unencrypted ephemeral follows type and sender index, a
/// response's follows type, sender and receiver index.
const INITIATION: (u8, usize, usize) = (1, 148, 8);
const RESPONSE: (u8, usize, usize) = (2, 92, 12);

/// Whether `datagram` is a handshake initiation or response carrying a
/// low-order ephemeral key. Anything else (other types, other sizes, which
/// boringtun refuses as malformed) is not this check's business.
pub fn low_order_ephemeral(datagram: &[u8]) -> bool {
    let Some(&[kind, 0, 0, 0]) = datagram.first_chunk::<4>() else { return false };
    let Some((_, len, at)) = [INITIATION, RESPONSE].into_iter().find(|(k, _, _)| *k == kind) else { return false };
    if datagram.len() != len {
        return false;
    }
    match datagram.get(at..at + 32).and_then(|e| <&[u8; 32]>::try_from(e).ok()) {
        Some(ephemeral) => is_low_order_point(ephemeral),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::dataplane::device::{Device, PeerError};
    use crate::dataplane::sink::{Handoff, PacketSink};
    use crate::dataplane::peer::PeerConfig;
    use std::net::{IpAddr, SocketAddr};
    use x25519_dalek::{PublicKey, StaticSecret};

    #[derive(Default)]
    struct Sink {
        sent: usize,
        tun: usize,
    }

    impl PacketSink for Sink {
        fn send_udp(&mut self, _to: SocketAddr, _from: Option<IpAddr>, _datagram: &[u8]) {
            self.sent += 1;
        }
        fn write_tun(&mut self, _packet: &[u8]) {
            self.tun += 1;
        }
        fn hand_off(&mut self, _shard: u32, _work: Handoff<'_>) {}
    }

    fn key(seed: u8) -> [u8; 32] {
        StaticSecret::from([seed; 32]).to_bytes()
    }

    fn peer(public_key: [u8; 32], slot: u32) -> PeerConfig {
        PeerConfig {
            public_key,
            slot,
            allowed_ips: vec![format!("10.88.0.{}/32", slot + 1).parse().unwrap()],
            endpoint: None,
            persistent_keepalive: None,
        }
    }

    /// A real initiation from a real initiator to `gateway`, made by boringtun.
    fn initiation(node_secret: [u8; 32], gateway: [u8; 32]) -> Vec<u8> {
        let mut tunn = boringtun::noise::Tunn::new(
            StaticSecret::from(node_secret),
            PublicKey::from(gateway),
            None,
            None,
            1,
            None,
        );
        let mut buf = vec![0u8; 256];
        match tunn.format_handshake_initiation(&mut buf, false) {
            boringtun::noise::TunnResult::WriteToNetwork(m) => m.to_vec(),
            _ => panic!("no initiation"),
        }
    }

    #[test]
    fn every_low_order_static_key_is_refused_as_a_peer() {
        let mut device = Device::new(key(1));
        for (i, weak) in gateway_core::registry::low_order_encodings().into_iter().enumerate() {
            let got = device.add_peer(peer(weak, 2 + i as u32));
            assert!(matches!(got, Err(PeerError::LowOrderKey(_))), "{got:?}");
        }
        assert_eq!(device.peer_count(), 0);
        let node = PublicKey::from(&StaticSecret::from(key(2))).to_bytes();
        device.add_peer(peer(node, 2)).unwrap();
    }

    #[test]
    fn a_handshake_with_a_low_order_ephemeral_is_dropped_before_boringtun() {
        let gateway_secret = key(1);
        let gateway = PublicKey::from(&StaticSecret::from(gateway_secret)).to_bytes();
        let node_secret = key(2);
        let node = PublicKey::from(&StaticSecret::from(node_secret)).to_bytes();
        let mut device = Device::new(gateway_secret);
        device.add_peer(peer(node, 2)).unwrap();
        let from: SocketAddr = "192.0.2.7:51820".parse().unwrap();
        let genuine = initiation(node_secret, gateway);
        assert!(!low_order_ephemeral(&genuine));

        let mut sink = Sink::default();
        for weak in gateway_core::registry::low_order_encodings() {
            let mut forged = genuine.clone();
            forged[8..40].copy_from_slice(&weak);
            assert!(low_order_ephemeral(&forged));
            device.handle_datagram(from, None, &forged, &mut sink);
            // A response from the node's side, same treatment.
            let mut response = vec![0u8; 92];
            response[0] = 2;
            response[8..12].copy_from_slice(&(2u32 << 8).to_le_bytes());
            response[12..44].copy_from_slice(&weak);
            assert!(low_order_ephemeral(&response));
            device.handle_datagram(from, None, &response, &mut sink);
        }
        let c = device.counters().clone();
        assert_eq!(c.low_order_ephemeral, 28);
        assert_eq!((c.invalid_mac, c.decrypt_errors, c.cookie_replies, c.malformed, c.unknown_slot), (0, 0, 0, 0, 0));
        assert_eq!((sink.sent, sink.tun), (0, 0));
        assert!(device.poll_event().is_none());

        // The genuine one still gets its response.
        device.handle_datagram(from, None, &genuine, &mut sink);
        assert_eq!(sink.sent, 1);
        assert_eq!(device.counters().low_order_ephemeral, 28);
    }

    #[test]
    fn other_messages_are_not_this_checks_business() {
        let mut transport = vec![0u8; 148];
        transport[0] = 4;
        assert!(!low_order_ephemeral(&transport));
        let mut short = vec![0u8; 147];
        short[0] = 1;
        assert!(!low_order_ephemeral(&short));
        let mut odd = vec![0u8; 148];
        odd[0] = 1;
        odd[1] = 1;
        assert!(!low_order_ephemeral(&odd));
        assert!(!low_order_ephemeral(&[]));
    }
}
