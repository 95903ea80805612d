//! The control side of a device split into shards (pure): every change to
//! the peer set goes to the owning shard first (which checks it against
//! everything, since every shard knows every key and route), then to the
//! others, which only learn the key and routes. Reads merge the shards.
//! `uapi` and the control API speak to a [`PeerTable`], so an undivided
//! device and a sharded one answer alike.

use std::borrow::BorrowMut;

use gateway_common::MAX_PEER_SLOTS;

use super::device::{Device, DeviceCounters, PeerError};
use super::peer::{encode_key, PeerConfig, PeerStats, PublicKey};

/// A device's peers as the control API and `wg set` see them.
pub trait PeerTable {
    fn private_key(&self) -> [u8; 32];
    fn public_key(&self) -> PublicKey;
    fn add_peer(&mut self, config: PeerConfig) -> Result<(), PeerError>;
    /// Drops the peer's sessions and queued packets at once.
    fn remove_peer(&mut self, public_key: &PublicKey) -> Result<PeerConfig, PeerError>;
    /// Endpoint, keepalive and allowed IPs of a peer, in place.
    fn reconfigure_peer(&mut self, new: PeerConfig) -> Result<(), PeerError>;
    /// The highest free slot (see [`Device::free_slot`]).
    fn free_slot(&self) -> Result<u32, PeerError>;
    fn peer_config(&self, public_key: &PublicKey) -> Option<PeerConfig>;
    /// All peers, in slot order.
    fn peer_stats(&self) -> Vec<PeerStats>;
    fn stats_for(&self, public_key: &PublicKey) -> Option<PeerStats>;
    fn counters(&self) -> DeviceCounters;

    /// Rekey or move: the old peer goes (sessions and all), the new one
    /// comes; if the new one is refused the old one is put back.
    fn replace_peer(&mut self, old_key: &PublicKey, new: PeerConfig) -> Result<(), PeerError> {
        let old = self.remove_peer(old_key)?;
        if let Err(err) = self.add_peer(new) {
            // Re-adding what was there a moment ago cannot conflict.
            let _ = self.add_peer(old);
            return Err(err);
        }
        Ok(())
    }
}

impl PeerTable for Device {
    fn private_key(&self) -> [u8; 32] {
        Device::private_key(self)
    }
    fn public_key(&self) -> PublicKey {
        Device::public_key(self)
    }
    fn add_peer(&mut self, config: PeerConfig) -> Result<(), PeerError> {
        Device::add_peer(self, config)
    }
    fn remove_peer(&mut self, public_key: &PublicKey) -> Result<PeerConfig, PeerError> {
        Device::remove_peer(self, public_key)
    }
    fn reconfigure_peer(&mut self, new: PeerConfig) -> Result<(), PeerError> {
        Device::reconfigure_peer(self, new)
    }
    fn free_slot(&self) -> Result<u32, PeerError> {
        Device::free_slot(self)
    }
    fn peer_config(&self, public_key: &PublicKey) -> Option<PeerConfig> {
        Device::peer_config(self, public_key).cloned()
    }
    fn peer_stats(&self) -> Vec<PeerStats> {
        Device::peer_stats(self)
    }
    fn stats_for(&self, public_key: &PublicKey) -> Option<PeerStats> {
        Device::stats_for(self, public_key)
    }
    fn counters(&self) -> DeviceCounters {
        Device::counters(self).clone()
    }
}

/// The shards of one device, in shard order (`shards[i].shard().index == i`).
impl<D: BorrowMut<Device>> PeerTable for [D] {
    fn private_key(&self) -> [u8; 32] {
        self[0].borrow().private_key()
    }

    fn public_key(&self) -> PublicKey {
        self[0].borrow().public_key()
    }

    fn add_peer(&mut self, config: PeerConfig) -> Result<(), PeerError> {
        let owner = owner_index(self, config.slot);
        self[owner].borrow_mut().add_peer(config.clone())?;
        for i in (0..self.len()).filter(|i| *i != owner) {
            // The owner accepted it knowing every key and route the others
            // know: they cannot refuse it.
            if let Err(err) = self[i].borrow_mut().add_peer(config.clone()) {
                tracing::error!(shard = i, error = %err, "shards disagree; undoing the add");
                for (j, shard) in self.iter_mut().enumerate() {
                    if j != owner {
                        shard.borrow_mut().forget_peer(&config);
                    }
                }
                let _ = self[owner].borrow_mut().remove_peer(&config.public_key);
                return Err(err);
            }
        }
        Ok(())
    }

    fn remove_peer(&mut self, public_key: &PublicKey) -> Result<PeerConfig, PeerError> {
        let slot = self[0].borrow().slot_of(public_key).ok_or_else(|| PeerError::NotFound(encode_key(public_key)))?;
        let owner = owner_index(self, slot);
        let config = self[owner].borrow_mut().remove_peer(public_key)?;
        for i in (0..self.len()).filter(|i| *i != owner) {
            self[i].borrow_mut().forget_peer(&config);
        }
        Ok(config)
    }

    fn reconfigure_peer(&mut self, new: PeerConfig) -> Result<(), PeerError> {
        let slot = self[0].borrow().slot_of(&new.public_key).ok_or_else(|| PeerError::NotFound(encode_key(&new.public_key)))?;
        let owner = owner_index(self, slot);
        let old = self[owner].borrow().peer_config(&new.public_key).cloned().ok_or_else(|| PeerError::NotFound(encode_key(&new.public_key)))?;
        self[owner].borrow_mut().reconfigure_peer(new.clone())?;
        for i in (0..self.len()).filter(|i| *i != owner) {
            self[i].borrow_mut().reroute(slot, &old.allowed_ips, &new.allowed_ips);
        }
        Ok(())
    }

    fn free_slot(&self) -> Result<u32, PeerError> {
        (1..MAX_PEER_SLOTS).rev().find(|s| !self[owner_index(self, *s)].borrow().has_slot(*s)).ok_or(PeerError::NoFreeSlot)
    }

    fn peer_config(&self, public_key: &PublicKey) -> Option<PeerConfig> {
        let slot = self[0].borrow().slot_of(public_key)?;
        self[owner_index(self, slot)].borrow().peer_config(public_key).cloned()
    }

    fn peer_stats(&self) -> Vec<PeerStats> {
        let mut all: Vec<PeerStats> = self.iter().flat_map(|d| d.borrow().peer_stats()).collect();
        all.sort_by_key(|p| p.slot);
        all
    }

    fn stats_for(&self, public_key: &PublicKey) -> Option<PeerStats> {
        let slot = self[0].borrow().slot_of(public_key)?;
        self[owner_index(self, slot)].borrow().stats_for(public_key)
    }

    fn counters(&self) -> DeviceCounters {
        let mut total = DeviceCounters::default();
        for d in self {
            total.add(d.borrow().counters());
        }
        total
    }
}

fn owner_index<D: BorrowMut<Device>>(shards: &[D], slot: u32) -> usize {
    shards[0].borrow().shard().owner_of(slot) as usize
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::VecDeque;
    use std::net::SocketAddr;

    use super::*;
    use crate::dataplane::sink::{Handoff, PacketSink};
    use crate::dataplane::test_support::{ipv4_packet, public, secret};

    fn peer(seed: u8, slot: u32) -> PeerConfig {
        PeerConfig {
            public_key: public(seed),
            slot,
            allowed_ips: vec![format!("10.9.0.{seed}/32").parse().unwrap()],
            endpoint: None,
            persistent_keepalive: None,
        }
    }

    /// What a worker's sink does, minus the sockets: datagrams and TUN
    /// writes recorded, hand-offs queued for their shard.
    #[derive(Default)]
    struct Outputs {
        udp: Vec<(SocketAddr, Vec<u8>)>,
        tun: Vec<Vec<u8>>,
        handoffs: VecDeque<(u32, Owned)>,
    }

    #[derive(Debug)]
    enum Owned {
        Datagram(SocketAddr, Option<std::net::IpAddr>, Vec<u8>),
        Initiation(u32, SocketAddr, Option<std::net::IpAddr>, Vec<u8>),
        Plain(Vec<u8>),
    }

    impl PacketSink for Outputs {
        fn send_udp(&mut self, to: SocketAddr, _from: Option<std::net::IpAddr>, datagram: &[u8]) {
            self.udp.push((to, datagram.to_vec()));
        }
        fn write_tun(&mut self, packet: &[u8]) {
            self.tun.push(packet.to_vec());
        }
        fn hand_off(&mut self, shard: u32, work: Handoff<'_>) {
            let owned = match work {
                Handoff::Datagram { from, local, datagram } => Owned::Datagram(from, local, datagram.to_vec()),
                Handoff::Initiation { slot, from, local, datagram } => Owned::Initiation(slot, from, local, datagram.to_vec()),
                Handoff::Plain(p) => Owned::Plain(p.to_vec()),
            };
            self.handoffs.push_back((shard, owned));
        }
    }

    /// Runs hand-offs on their shards until none are left.
    fn settle(shards: &mut [Device], out: &mut Outputs) {
        while let Some((to, work)) = out.handoffs.pop_front() {
            let shard = &mut shards[to as usize];
            assert_eq!(shard.shard().index, to);
            match work {
                Owned::Datagram(from, local, d) => shard.handle_datagram(from, local, &d, out),
                Owned::Initiation(slot, from, local, d) => shard.handle_initiation_for(slot, from, local, &d, out),
                Owned::Plain(p) => shard.handle_tun_packet(&p, out),
            }
        }
    }

    #[test]
    fn peers_live_on_their_owner_and_every_shard_routes_to_them() {
        let mut shards = Device::sharded(secret(1), 2);
        for (seed, slot) in [(2u8, 2u32), (3, 3), (4, 4)] {
            shards.add_peer(peer(seed, slot)).unwrap();
        }
        assert_eq!(shards[0].peer_count(), 2, "slots 2 and 4");
        assert_eq!(shards[1].peer_count(), 1, "slot 3");
        assert!(matches!(shards.add_peer(peer(2, 9)), Err(PeerError::DuplicateKey(_))));
        assert_eq!(shards.add_peer(PeerConfig { public_key: public(9), ..peer(9, 3) }), Err(PeerError::SlotInUse(3)));
        assert_eq!(
            shards.add_peer(PeerConfig { allowed_ips: peer(3, 3).allowed_ips, ..peer(9, 9) }),
            Err(PeerError::AllowedIpInUse(peer(3, 3).allowed_ips[0]))
        );
        assert_eq!(shards.peer_stats().iter().map(|p| p.slot).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(shards.free_slot(), Ok(MAX_PEER_SLOTS - 1));
        // Every shard knows where 10.9.0.3 goes.
        let to_three = ipv4_packet([10, 9, 0, 1], [10, 9, 0, 3], b"x");
        assert_eq!(shards[0].owner_of_destination(&to_three), Some(1));
        assert_eq!(shards[1].owner_of_destination(&to_three), Some(1));
        // Removal reaches every shard: the route and the key are gone.
        shards.remove_peer(&public(3)).unwrap();
        assert_eq!(shards[0].owner_of_destination(&to_three), None);
        assert_eq!(shards[0].slot_of(&public(3)), None);
        shards.add_peer(peer(3, 5)).unwrap();
        assert_eq!(shards[0].owner_of_destination(&ipv4_packet([10, 9, 0, 1], [10, 9, 0, 3], b"x")), Some(1));
        // New allowed IPs move with a reconfiguration on every shard.
        let mut moved = peer(3, 5);
        moved.allowed_ips = vec!["10.9.1.0/24".parse().unwrap()];
        shards.reconfigure_peer(moved).unwrap();
        assert_eq!(shards[0].owner_of_destination(&to_three), None);
        assert_eq!(shards[0].owner_of_destination(&ipv4_packet([10, 9, 0, 1], [10, 9, 1, 7], b"x")), Some(1));
        assert_eq!(shards.counters(), DeviceCounters::default());
    }

    /// A client whose initiation lands on the wrong shard still gets its
    /// session, on its owner; TUN packets read on the wrong shard and
    /// forwarded packets for the other shard's peer are encrypted by the owner.
    #[test]
    fn work_for_another_shard_ends_up_on_the_owner() {
        let gw_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let mut shards = Device::sharded(secret(1), 2);
        let mut clients = Vec::new();
        for seed in [2u8, 3] {
            shards.add_peer(peer(seed, u32::from(seed))).unwrap();
            let mut c = Device::new(secret(seed));
            c.add_peer(PeerConfig {
                public_key: public(1),
                slot: 1,
                allowed_ips: vec!["10.9.0.0/24".parse().unwrap()],
                endpoint: Some(gw_addr),
                persistent_keepalive: None,
            })
            .unwrap();
            clients.push((format!("192.0.2.{seed}:40000").parse::<SocketAddr>().unwrap(), c));
        }
        // Both clients talk to the gateway; every datagram arrives on shard 0
        // (as without a steering program), whatever its peer.
        for i in 0..2 {
            let mut wire: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
            let mut out = Outputs::default();
            let src = [10, 9, 0, 2 + i as u8];
            clients[i].1.handle_tun_packet(&ipv4_packet(src, [10, 9, 0, 1], b"hi"), &mut out);
            wire.extend(out.udp.drain(..).map(|(_, d)| (i, d)));
            let mut gw_out = Outputs::default();
            while let Some((client, d)) = wire.pop_front() {
                shards[0].handle_datagram(clients[client].0, None, &d, &mut gw_out);
                settle(&mut shards, &mut gw_out);
                for (to, reply) in gw_out.udp.drain(..) {
                    let c = clients.iter().position(|(a, _)| *a == to).unwrap();
                    let mut back = Outputs::default();
                    clients[c].1.handle_datagram(gw_addr, None, &reply, &mut back);
                    wire.extend(back.udp.drain(..).map(|(_, d)| (c, d)));
                }
            }
            assert_eq!(gw_out.tun, vec![ipv4_packet(src, [10, 9, 0, 1], b"hi")]);
        }
        assert!(shards[0].stats_for(&public(2)).unwrap().since_last_handshake.is_some());
        assert!(shards[1].stats_for(&public(3)).unwrap().since_last_handshake.is_some(), "session on the owner");
        assert!(shards[0].counters().handed_off >= 1);
        // Node 2 -> node 3 (decrypted on shard 0, encrypted on shard 1).
        let mut out = Outputs::default();
        let p2p = ipv4_packet([10, 9, 0, 2], [10, 9, 0, 3], b"peer to peer");
        clients[0].1.handle_tun_packet(&p2p, &mut out);
        let mut gw_out = Outputs::default();
        for (_, d) in out.udp.drain(..) {
            shards[0].handle_datagram(clients[0].0, None, &d, &mut gw_out);
        }
        settle(&mut shards, &mut gw_out);
        assert!(gw_out.tun.is_empty(), "no TUN round trip");
        let (to, datagram) = gw_out.udp.pop().unwrap();
        assert_eq!(to, clients[1].0);
        let mut got = Outputs::default();
        clients[1].1.handle_datagram(gw_addr, None, &datagram, &mut got);
        assert_eq!(got.tun, vec![p2p]);
        // A TUN packet for node 3 read on shard 0.
        let mut gw_out = Outputs::default();
        shards[0].handle_tun_packet(&ipv4_packet([10, 9, 0, 1], [10, 9, 0, 3], b"down"), &mut gw_out);
        assert!(gw_out.udp.is_empty());
        settle(&mut shards, &mut gw_out);
        assert_eq!(gw_out.udp.len(), 1);
        assert_eq!(shards.stats_for(&public(3)).unwrap().tx_bytes, shards[1].stats_for(&public(3)).unwrap().tx_bytes);
    }
}
