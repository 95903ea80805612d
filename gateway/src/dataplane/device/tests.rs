//! The device core driven over an in-memory wire: handshakes, routing,
//! allowed IPs, peer changes, cookie replies and the takeover.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use gateway_common::wire::slot_of_index;
use ipnet::IpNet;

use super::*;
use crate::dataplane::sink::{Handoff, PacketSink};
use crate::dataplane::takeover;
use crate::dataplane::test_support::{ipv4_packet, public, secret};

#[derive(Default)]
struct Recorder {
    udp: Vec<(SocketAddr, Vec<u8>)>,
    /// The source address of each of `udp`.
    sources: Vec<Option<IpAddr>>,
    tun: Vec<Vec<u8>>,
}

impl PacketSink for Recorder {
    fn send_udp(&mut self, to: SocketAddr, from: Option<IpAddr>, datagram: &[u8]) {
        self.udp.push((to, datagram.to_vec()));
        self.sources.push(from);
    }
    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
    fn hand_off(&mut self, shard: u32, work: Handoff<'_>) {
        panic!("an undivided device handed {work:?} to shard {shard}");
    }
}

struct Node {
    addr: SocketAddr,
    device: Device,
    tun: Vec<Vec<u8>>,
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const GW: usize = 0;

/// A gateway (seed 1, 10.9.0.1) and clients (seeds 2.., 10.9.0.<seed>)
/// whose only peer is the gateway; the gateway's peers use slot = seed.
fn network(clients: &[u8]) -> Vec<Node> {
    let gw_addr = addr("192.0.2.1:51820");
    let mut gw = Device::new(secret(1));
    let mut nodes = Vec::new();
    for &seed in clients {
        gw.add_peer(PeerConfig {
            public_key: public(seed),
            slot: u32::from(seed),
            allowed_ips: vec![net(&format!("10.9.0.{seed}/32"))],
            endpoint: None,
            persistent_keepalive: None,
        })
        .unwrap();
        let mut dev = Device::new(secret(seed));
        dev.add_peer(PeerConfig {
            public_key: public(1),
            slot: 1,
            allowed_ips: vec![net("10.9.0.0/24")],
            endpoint: Some(gw_addr),
            persistent_keepalive: None,
        })
        .unwrap();
        nodes.push(Node { addr: addr(&format!("192.0.2.{seed}:40000")), device: dev, tun: vec![] });
    }
    nodes.insert(0, Node { addr: gw_addr, device: gw, tun: vec![] });
    nodes
}

/// Delivers datagrams until the network is quiet; returns every datagram
/// seen on the wire as (from, to, bytes).
fn pump(nodes: &mut [Node], mut wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let mut seen = Vec::new();
    while let Some((from, to, bytes)) = wire.pop_front() {
        seen.push((from, to, bytes.clone()));
        assert!(seen.len() < 1000, "packet storm");
        let Some(node) = nodes.iter_mut().find(|n| n.addr == to) else { continue };
        let mut rec = Recorder::default();
        // The receiver's own address is where the datagram was sent to.
        node.device.handle_datagram(from, Some(to.ip()), &bytes, &mut rec);
        node.tun.extend(rec.tun);
        wire.extend(rec.udp.into_iter().map(|(dst, b)| (node.addr, dst, b)));
    }
    seen
}

fn send_from_tun(nodes: &mut [Node], i: usize, packet: &[u8]) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let mut rec = Recorder::default();
    nodes[i].device.handle_tun_packet(packet, &mut rec);
    let from = nodes[i].addr;
    pump(nodes, rec.udp.into_iter().map(|(to, b)| (from, to, b)).collect())
}

#[test]
fn idle_peers_hold_no_tunn_until_they_handshake() {
    let mut nodes = network(&[2, 3]);
    let has_tunn = |d: &Device, seed: u8| d.peers.get(&u32::from(seed)).map(|p| p.state.tunn.is_some());
    assert_eq!(has_tunn(&nodes[GW].device, 2), Some(false), "an added peer costs no Tunn");
    assert_eq!(has_tunn(&nodes[GW].device, 3), Some(false));
    // A data packet for a peer without a session allocates nothing
    // (with the takeover off; see the takeover tests for it on).
    nodes[GW].device.set_takeover(false);
    let mut rec = Recorder::default();
    let mut data = vec![4u8, 0, 0, 0];
    data.extend_from_slice(&(2u32 << 8).to_le_bytes());
    data.resize(64, 0);
    let from = nodes[1].addr;
    nodes[GW].device.handle_datagram(from, None, &data, &mut rec);
    assert_eq!(has_tunn(&nodes[GW].device, 2), Some(false));
    assert!(rec.udp.is_empty());
    nodes[GW].device.set_takeover(true);
    // Node 2 handshakes; node 3 stays idle.
    let ping = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"hello");
    send_from_tun(&mut nodes, 1, &ping);
    assert_eq!(nodes[GW].tun, vec![ping]);
    assert_eq!(has_tunn(&nodes[GW].device, 2), Some(true));
    assert_eq!(has_tunn(&nodes[GW].device, 3), Some(false));
    // A peer we must keep alive gets its Tunn (and timers) at once.
    nodes[GW]
        .device
        .add_peer(PeerConfig {
            public_key: public(9),
            slot: 9,
            allowed_ips: vec![net("10.9.0.9/32")],
            endpoint: Some(addr("192.0.2.9:40000")),
            persistent_keepalive: Some(25),
        })
        .unwrap();
    assert_eq!(has_tunn(&nodes[GW].device, 9), Some(true));
}

#[test]
fn first_packet_triggers_handshake_and_is_delivered_after_it() {
    let mut nodes = network(&[2]);
    let ping = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"hello");
    let wire = send_from_tun(&mut nodes, 1, &ping);
    assert_eq!(nodes[GW].tun, vec![ping]);
    let stats = nodes[GW].device.stats_for(&public(2)).unwrap();
    assert_eq!(stats.endpoint, Some(nodes[1].addr), "endpoint learned from the handshake");
    assert!(stats.since_last_handshake.is_some());
    assert!(stats.rx_bytes > 148 && stats.tx_bytes >= 92);
    // Every receiver index the gateway hands out names the peer's slot.
    let response = wire.iter().find(|(f, _, b)| *f == nodes[GW].addr && b[0] == 2).unwrap();
    let gateway_index = u32::from_le_bytes(response.2[4..8].try_into().unwrap());
    assert_eq!(slot_of_index(gateway_index), 2);
    // And the reverse direction works over the same session.
    let pong = ipv4_packet([10, 9, 0, 1], [10, 9, 0, 2], b"world");
    let wire = send_from_tun(&mut nodes, GW, &pong);
    assert_eq!(nodes[1].tun, vec![pong]);
    for (_, _, b) in &wire {
        if b[0] == 4 {
            assert_eq!(slot_of_index(u32::from_le_bytes(b[4..8].try_into().unwrap())), 1);
        }
    }
}

fn ipv6_packet(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.parse::<std::net::Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&dst.parse::<std::net::Ipv6Addr>().unwrap().octets());
    p[40..].copy_from_slice(payload);
    p
}

#[test]
fn ipv6_inside_and_outside_the_tunnel() {
    let gw_addr = addr("[2001:db8::1]:51820");
    let mut gw = Device::new(secret(1));
    gw.add_peer(PeerConfig {
        public_key: public(2),
        slot: 2,
        allowed_ips: vec![net("fd99::2/128")],
        endpoint: None,
        persistent_keepalive: None,
    })
    .unwrap();
    let mut client = Device::new(secret(2));
    client
        .add_peer(PeerConfig {
            public_key: public(1),
            slot: 1,
            allowed_ips: vec![net("fd99::/64")],
            endpoint: Some(gw_addr),
            persistent_keepalive: None,
        })
        .unwrap();
    let mut nodes = vec![
        Node { addr: gw_addr, device: gw, tun: vec![] },
        Node { addr: addr("[2001:db8::2]:40000"), device: client, tun: vec![] },
    ];
    let ping = ipv6_packet("fd99::2", "fd99::1", b"v6");
    send_from_tun(&mut nodes, 1, &ping);
    assert_eq!(nodes[GW].tun, vec![ping]);
    assert_eq!(nodes[GW].device.stats_for(&public(2)).unwrap().endpoint, Some(nodes[1].addr));
    let spoof = ipv6_packet("fd99::3", "fd99::1", b"no");
    send_from_tun(&mut nodes, 1, &spoof);
    assert_eq!(nodes[GW].tun.len(), 1);
    assert_eq!(nodes[GW].device.counters().spoofed_source, 1);
    let pong = ipv6_packet("fd99::1", "fd99::2", b"back");
    send_from_tun(&mut nodes, GW, &pong);
    assert_eq!(nodes[1].tun, vec![pong]);
}

#[test]
fn unknown_key_is_reported_with_its_endpoint() {
    let mut nodes = network(&[2]);
    nodes[GW].device.remove_peer(&public(2)).unwrap();
    let ping = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"x");
    send_from_tun(&mut nodes, 1, &ping);
    assert!(nodes[GW].tun.is_empty());
    assert_eq!(
        nodes[GW].device.poll_event(),
        Some(DeviceEvent::RejectedHandshake { public_key: public(2), endpoint: nodes[1].addr })
    );
    assert_eq!(nodes[GW].device.poll_event(), None);
    assert_eq!(nodes[GW].device.counters().rejected_handshakes, 1);
}

#[test]
fn spoofed_inner_source_is_dropped_and_counted() {
    let mut nodes = network(&[2, 3]);
    // Client 2 claims client 3's address (its own config would allow it).
    let spoof = ipv4_packet([10, 9, 0, 3], [10, 9, 0, 1], b"spoof");
    send_from_tun(&mut nodes, 1, &spoof);
    assert!(nodes[GW].tun.is_empty());
    assert_eq!(nodes[GW].device.stats_for(&public(2)).unwrap().dropped_spoofed, 1);
    assert_eq!(nodes[GW].device.counters().spoofed_source, 1);
    let honest = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"ok");
    send_from_tun(&mut nodes, 1, &honest);
    assert_eq!(nodes[GW].tun, vec![honest]);
}

#[test]
fn peer_to_peer_traffic_is_forwarded_without_the_tun_device() {
    let mut nodes = network(&[2, 3]);
    // Client 3 needs a session (and a known endpoint) first.
    send_from_tun(&mut nodes, 2, &ipv4_packet([10, 9, 0, 3], [10, 9, 0, 1], b"hi"));
    nodes[GW].tun.clear();
    let to_three = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 3], b"peer to peer");
    send_from_tun(&mut nodes, 1, &to_three);
    assert!(nodes[GW].tun.is_empty(), "no TUN round trip");
    assert_eq!(nodes[2].tun, vec![to_three]);
    assert_eq!(nodes[GW].device.counters().forwarded, 1);
}

#[test]
fn removing_a_peer_cuts_it_off_and_leaves_the_other_alone() {
    let mut nodes = network(&[2, 3]);
    let from_two = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"2");
    let from_three = ipv4_packet([10, 9, 0, 3], [10, 9, 0, 1], b"3");
    send_from_tun(&mut nodes, 1, &from_two);
    send_from_tun(&mut nodes, 2, &from_three);
    assert_eq!(nodes[GW].tun.len(), 2);
    nodes[GW].tun.clear();

    let removed = nodes[GW].device.remove_peer(&public(2)).unwrap();
    assert_eq!(removed.slot, 2);
    send_from_tun(&mut nodes, 1, &from_two);
    send_from_tun(&mut nodes, 2, &from_three);
    assert_eq!(nodes[GW].tun, vec![from_three], "only the remaining peer gets through");
    assert!(nodes[GW].device.counters().unknown_slot >= 1);
    // Routes to the removed peer are gone too.
    let mut rec = Recorder::default();
    nodes[GW].device.handle_tun_packet(&ipv4_packet([10, 9, 0, 1], [10, 9, 0, 2], b"x"), &mut rec);
    assert!(rec.udp.is_empty());
    assert_eq!(nodes[GW].device.peer_count(), 1);
}

#[test]
fn rekey_replaces_the_key_and_keeps_the_slot() {
    let mut nodes = network(&[2]);
    send_from_tun(&mut nodes, 1, &ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"a"));
    let mut new = nodes[GW].device.peer_config(&public(2)).unwrap().clone();
    new.public_key = public(9);
    nodes[GW].device.replace_peer(&public(2), new).unwrap();
    assert!(nodes[GW].device.stats_for(&public(2)).is_none());
    assert_eq!(nodes[GW].device.stats_for(&public(9)).unwrap().slot, 2);
    // The old key's session is gone with it.
    nodes[GW].tun.clear();
    send_from_tun(&mut nodes, 1, &ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"b"));
    assert!(nodes[GW].tun.is_empty());
}

#[test]
fn conflicting_peers_are_refused() {
    let mut dev = Device::new(secret(1));
    let base = PeerConfig {
        public_key: public(2),
        slot: 2,
        allowed_ips: vec![net("10.9.0.2/32")],
        endpoint: None,
        persistent_keepalive: None,
    };
    dev.add_peer(base.clone()).unwrap();
    assert!(matches!(dev.add_peer(base.clone()), Err(PeerError::DuplicateKey(_))));
    assert_eq!(dev.add_peer(PeerConfig { public_key: public(3), ..base.clone() }), Err(PeerError::SlotInUse(2)));
    assert_eq!(
        dev.add_peer(PeerConfig { public_key: public(3), slot: 3, ..base.clone() }),
        Err(PeerError::AllowedIpInUse(net("10.9.0.2/32")))
    );
    assert_eq!(
        dev.add_peer(PeerConfig { public_key: public(3), slot: MAX_PEER_SLOTS, ..base.clone() }),
        Err(PeerError::SlotOutOfRange(MAX_PEER_SLOTS))
    );
    assert_eq!(dev.add_peer(PeerConfig { public_key: public(1), slot: 5, allowed_ips: vec![], ..base }), Err(PeerError::OwnKey));
    assert_eq!(dev.free_slot(), Ok(MAX_PEER_SLOTS - 1));
}

proptest::proptest! {
    /// One bad packet never takes the loop down: arbitrary datagrams
    /// (shaped like each message type) and TUN packets, in any order,
    /// against a device with a live session.
    #[test]
    fn hostile_input_never_panics(
        inputs in proptest::collection::vec(
            (0u8..6, proptest::collection::vec(proptest::num::u8::ANY, 0..300), proptest::bool::ANY),
            1..40,
        )
    ) {
        let mut nodes = network(&[2]);
        send_from_tun(&mut nodes, 1, &ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"up"));
        let from = nodes[1].addr;
        for (kind, mut bytes, to_tun) in inputs {
            let mut rec = Recorder::default();
            if to_tun {
                nodes[GW].device.handle_tun_packet(&bytes, &mut rec);
            } else {
                // Right type and size for each message kind, so the
                // input reaches past the parser.
                let len = [148usize, 92, 64, 32 + bytes.len(), bytes.len(), 148][usize::from(kind)];
                bytes.resize(len, 0);
                if let Some(first) = bytes.first_mut() {
                    *first = kind.clamp(1, 4);
                }
                if bytes.len() >= 8 && kind == 4 {
                    // A receiver index naming the live peer's slot.
                    bytes[4..8].copy_from_slice(&(2u32 << 8 | 1).to_le_bytes());
                }
                nodes[GW].device.handle_datagram(from, None, &bytes, &mut rec);
            }
        }
        // And the session still works afterwards.
        nodes[GW].tun.clear();
        let ping = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"still");
        send_from_tun(&mut nodes, 1, &ping);
        proptest::prop_assert_eq!(nodes[GW].tun.clone(), vec![ping]);
    }
}

#[test]
fn a_flood_of_initiations_gets_cookie_replies() {
    let mut nodes = network(&[2]);
    let mut initiations = Vec::new();
    for _ in 0..(RATE_LIMITER_LIMIT + 20) {
        // A fresh client each time so every message is a new initiation.
        let mut c = Device::new(secret(2));
        c.add_peer(nodes[1].device.peer_config(&public(1)).unwrap().clone()).unwrap();
        let mut rec = Recorder::default();
        c.handle_tun_packet(&ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"x"), &mut rec);
        initiations.extend(rec.udp);
    }
    let mut rec = Recorder::default();
    let from: SocketAddr = (Ipv4Addr::new(192, 0, 2, 2), 40000).into();
    for (_, init) in &initiations {
        nodes[GW].device.handle_datagram(from, None, init, &mut rec);
    }
    let cookies = rec.udp.iter().filter(|(_, b)| b[0] == 3).count();
    assert!(cookies >= 10, "under load the device answers with cookies ({cookies})");
    assert_eq!(nodes[GW].device.counters().cookie_replies, cookies as u64);
}

// --- Stateless takeover (see `takeover`) ---

/// A transport packet naming `slot` with a receiver index no session of
/// the gateway has: what an attacker can forge without any key.
fn forged_transport(slot: u32) -> Vec<u8> {
    let mut data = vec![4u8, 0, 0, 0];
    data.extend_from_slice(&(slot << 8 | 0x42).to_le_bytes());
    data.resize(64, 0);
    data
}

/// A second gateway with the first one's key and the same peers in the
/// same slots, as two gateways following one chain derive them.
fn twin_of(gw: &Device) -> Device {
    let mut twin = Device::new(gw.private_key());
    for peer in gw.peer_stats() {
        twin.add_peer(gw.peer_config(&peer.public_key).unwrap().clone()).unwrap();
    }
    twin
}

fn initiations(wire: &[(SocketAddr, SocketAddr, Vec<u8>)], from: SocketAddr) -> usize {
    wire.iter().filter(|(f, _, b)| *f == from && b[0] == 1).count()
}

#[test]
fn a_gateway_with_the_same_key_takes_a_node_over_at_once() {
    let mut nodes = network(&[2, 3]);
    let hello = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"to the first gateway");
    send_from_tun(&mut nodes, 1, &hello);
    assert_eq!(nodes[GW].tun, vec![hello]);
    // The first gateway dies; its twin answers at the same address.
    let twin = twin_of(&nodes[GW].device);
    let _dead = std::mem::replace(&mut nodes[GW].device, twin);
    nodes[GW].tun.clear();
    // The node's next packet uses the dead gateway's session: the twin
    // cannot read it, and initiates a handshake to its source instead.
    let lost = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"lost with the first gateway");
    let wire = send_from_tun(&mut nodes, 1, &lost);
    assert!(nodes[GW].tun.is_empty());
    let gw_addr = nodes[GW].addr;
    assert_eq!(initiations(&wire, gw_addr), 1, "the twin initiates");
    assert_eq!(initiations(&wire, nodes[1].addr), 0, "without waiting for the node's timers");
    assert_eq!(nodes[GW].device.takeover_counters().initiated, 1);
    // Its keepalive on the new session made the node switch: the next
    // packet goes through, both ways, without another handshake.
    let again = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"through the twin");
    let wire = send_from_tun(&mut nodes, 1, &again);
    assert_eq!(nodes[GW].tun, vec![again]);
    assert!(wire.iter().all(|(_, _, b)| b[0] == 4), "no handshake: the node uses the new session");
    let pong = ipv4_packet([10, 9, 0, 1], [10, 9, 0, 2], b"back");
    send_from_tun(&mut nodes, GW, &pong);
    assert_eq!(nodes[1].tun, vec![pong]);
    assert_eq!(nodes[GW].device.stats_for(&public(2)).unwrap().endpoint, Some(nodes[1].addr));
    // Node 3 sent nothing, so it was left alone.
    assert_eq!(nodes[GW].device.takeover_counters().initiated, 1);
}

#[test]
fn failing_back_over_colliding_session_indices_takes_the_node_back_too() {
    let mut nodes = network(&[2]);
    let ping = |n: &[u8]| ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], n);
    for _ in 0..20 {
        send_from_tun(&mut nodes, 1, &ping(b"x"));
    }
    let mut other = twin_of(&nodes[GW].device);
    // Back and forth: each gateway keeps the sessions it had, whose
    // indices (slot << 8 | 1, 2, ...) collide with the other's.
    for switch in 0..6 {
        std::mem::swap(&mut nodes[GW].device, &mut other);
        // Failovers are seconds apart: this gateway's last takeover of
        // the slot is older than the interval.
        nodes[GW].device.expire_takeovers(std::time::Instant::now() + takeover::TAKEOVER_INTERVAL);
        nodes[GW].tun.clear();
        send_from_tun(&mut nodes, 1, &ping(b"orphan"));
        let marker = format!("switch {switch}");
        send_from_tun(&mut nodes, 1, &ping(marker.as_bytes()));
        assert_eq!(nodes[GW].tun, vec![ping(marker.as_bytes())], "{marker}");
        let pong = ipv4_packet([10, 9, 0, 1], [10, 9, 0, 2], marker.as_bytes());
        send_from_tun(&mut nodes, GW, &pong);
        assert_eq!(nodes[1].tun.last(), Some(&pong), "{marker}, back to the node");
    }
}

#[test]
fn forged_packets_buy_one_initiation_per_granted_slot_and_no_memory() {
    let mut nodes = network(&[2, 3]);
    let attacker = addr("203.0.113.7:9");
    let mut rec = Recorder::default();
    for _ in 0..100 {
        for slot in [2, 3, 9] {
            nodes[GW].device.handle_datagram(attacker, None, &forged_transport(slot), &mut rec);
        }
    }
    // One 148-byte initiation per granted slot, none for slot 9 (no peer).
    let sizes: Vec<(SocketAddr, usize, u8)> = rec.udp.iter().map(|(to, b)| (*to, b.len(), b[0])).collect();
    assert_eq!(sizes, vec![(attacker, 148, 1), (attacker, 148, 1)]);
    let gw = &mut nodes[GW].device;
    assert_eq!(gw.takeover_counters().initiated, 2);
    assert_eq!(gw.takeover_counters().rate_limited, 198);
    assert_eq!(gw.counters().unknown_slot, 100);
    // The endpoint is not learned from an unauthenticated packet.
    assert_eq!(gw.stats_for(&public(2)).unwrap().endpoint, None);
    // The Tunns made for them go again once no session came of it.
    let later = std::time::Instant::now() + takeover::TAKEOVER_INTERVAL;
    gw.expire_takeovers(later);
    assert!(gw.peers.values().all(|p| p.state.tunn.is_none()));
    assert_eq!(gw.takeover_counters().abandoned, 2);
    // And the budget is back: the next forged packet buys one more.
    let mut rec = Recorder::default();
    gw.handle_datagram(attacker, None, &forged_transport(2), &mut rec);
    assert_eq!(rec.udp.len(), 1);
}

#[test]
fn with_the_takeover_off_orphan_packets_are_dropped() {
    let mut nodes = network(&[2]);
    send_from_tun(&mut nodes, 1, &ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"a"));
    let mut twin = twin_of(&nodes[GW].device);
    twin.set_takeover(false);
    nodes[GW].device = twin;
    let wire = send_from_tun(&mut nodes, 1, &ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"b"));
    assert_eq!(initiations(&wire, nodes[GW].addr), 0);
    assert_eq!(nodes[GW].device.counters().decrypt_errors, 1);
    assert_eq!(nodes[GW].device.takeover_counters().disabled, 1);
}

#[test]
fn replies_leave_from_the_address_the_node_wrote_to() {
    let mut nodes = network(&[2]);
    send_from_tun(&mut nodes, 1, &ipv4_packet([10, 9, 0, 2], [10, 9, 0, 1], b"hi"));
    // The node wrote to the gateway's (floating) address: traffic the
    // gateway starts leaves from it too.
    let mut rec = Recorder::default();
    nodes[GW].device.handle_tun_packet(&ipv4_packet([10, 9, 0, 1], [10, 9, 0, 2], b"x"), &mut rec);
    assert_eq!(rec.sources, vec![Some(nodes[GW].addr.ip())]);
    // A takeover initiation answers from the address the orphan came to.
    let floating: IpAddr = "192.0.2.100".parse().unwrap();
    let mut twin = twin_of(&nodes[GW].device);
    let mut rec = Recorder::default();
    twin.handle_datagram(nodes[1].addr, Some(floating), &forged_transport(2), &mut rec);
    assert_eq!(rec.sources, vec![Some(floating)]);
    // A peer's endpoint set by hand drops what was learned: the kernel picks.
    let mut config = nodes[GW].device.peer_config(&public(2)).unwrap().clone();
    config.endpoint = Some(addr("192.0.2.50:1"));
    nodes[GW].device.reconfigure_peer(config).unwrap();
    let mut rec = Recorder::default();
    nodes[GW].device.handle_tun_packet(&ipv4_packet([10, 9, 0, 1], [10, 9, 0, 2], b"y"), &mut rec);
    assert_eq!(rec.sources, vec![None]);
}
