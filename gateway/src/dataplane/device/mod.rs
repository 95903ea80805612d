//! The WireGuard device core: peer table, handshakes, routing and allowed-IPs
//! enforcement over boringtun's `noise::Tunn` (no sockets: datagrams and TUN
//! packets come in as slices and leave through a [`PacketSink`]; boringtun
//! keeps its own monotonic clock for the protocol timers). This file holds
//! the peer table; `packets.rs` the packet paths, `counters.rs` the counters.

mod counters;
mod packets;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;
use gateway_common::MAX_PEER_SLOTS;
use ipnet::IpNet;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

pub use self::counters::DeviceCounters;
use super::allowed_ips::AllowedIps;
use super::peer::{encode_key, Peer, PeerConfig, PeerState, PeerStats, PublicKey};
use super::sink::Shard;
use super::takeover::{Takeover, TakeoverCounters};

/// Handshake messages per second the whole device verifies before it answers
/// with cookie replies and demands mac2 (boringtun's device uses 100). Each
/// initiation is checked twice (here before the DH that reveals the key, then
/// inside the peer's `Tunn`), hence the factor 2.
const HANDSHAKES_PER_SECOND: u64 = 100;
const RATE_LIMITER_LIMIT: u64 = 2 * HANDSHAKES_PER_SECOND;

/// Largest IP packet we carry plus WireGuard's 32 bytes of framing; boringtun
/// panics if a destination buffer is smaller than the result.
pub const MAX_PACKET: usize = 65535 + 32;

/// Events the access layer reacts to are queued up to this many; beyond it a
/// flood of bogus handshakes only bumps a counter.
const MAX_QUEUED_EVENTS: usize = 1024;

/// Something the access layer should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A well-formed handshake initiation (valid mac1, decryptable static
    /// key) from a key that is not a peer: candidate for the XDP deny list.
    RejectedHandshake { public_key: PublicKey, endpoint: SocketAddr },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("peer {0} already exists")]
    DuplicateKey(String),
    #[error("slot {0} is already used by another peer")]
    SlotInUse(u32),
    #[error("slot {0} is out of range (max {max})", max = MAX_PEER_SLOTS - 1)]
    SlotOutOfRange(u32),
    #[error("allowed IP {0} already belongs to another peer")]
    AllowedIpInUse(IpNet),
    #[error("a peer cannot have the device's own public key")]
    OwnKey,
    #[error("no such peer {0}")]
    NotFound(String),
    #[error("no free peer slot left")]
    NoFreeSlot,
    #[error("{0} is a low-order Curve25519 point: the handshake's Diffie-Hellman with it is all zeros")]
    LowOrderKey(String),
}

pub struct Device {
    shard: Shard,
    private_key: StaticSecret,
    public_key: X25519Public,
    rate_limiter: Arc<RateLimiter>,
    /// The peers this shard owns (all of them when undivided).
    peers: BTreeMap<u32, Peer>,
    /// Every peer's key and routes, whichever shard owns it.
    slot_by_key: HashMap<PublicKey, u32>,
    routes: AllowedIps<u32>,
    events: VecDeque<DeviceEvent>,
    counters: DeviceCounters,
    takeover: Takeover,
    /// Scratch buffers, taken out while in use so `self` stays borrowable.
    decrypted: Vec<u8>,
    encrypted: Vec<u8>,
}

impl Device {
    /// An undivided device.
    pub fn new(private_key: [u8; 32]) -> Self {
        let mut shards = Self::sharded(private_key, 1);
        shards.remove(0)
    }

    /// `count` shards of one device; they share the handshake rate limiter,
    /// so the load a flood puts on all of them counts once.
    pub fn sharded(private_key: [u8; 32], count: u32) -> Vec<Self> {
        let count = count.max(1);
        let private_key = StaticSecret::from(private_key);
        let public_key = X25519Public::from(&private_key);
        let rate_limiter = Arc::new(RateLimiter::new(&public_key, RATE_LIMITER_LIMIT));
        (0..count).map(|index| Self::shard_of(Shard { index, count }, private_key.clone(), public_key, rate_limiter.clone())).collect()
    }

    fn shard_of(shard: Shard, private_key: StaticSecret, public_key: X25519Public, rate_limiter: Arc<RateLimiter>) -> Self {
        Self {
            shard,
            rate_limiter,
            private_key,
            public_key,
            peers: BTreeMap::new(),
            slot_by_key: HashMap::new(),
            routes: AllowedIps::default(),
            events: VecDeque::new(),
            counters: DeviceCounters::default(),
            takeover: Takeover::default(),
            decrypted: vec![0; MAX_PACKET],
            encrypted: vec![0; MAX_PACKET],
        }
    }

    pub fn public_key(&self) -> PublicKey {
        *self.public_key.as_bytes()
    }

    pub fn private_key(&self) -> [u8; 32] {
        self.private_key.to_bytes()
    }

    pub fn counters(&self) -> &DeviceCounters {
        &self.counters
    }

    /// Hand-offs the I/O layer could not queue (the owner was far behind).
    pub fn count_handoffs_dropped(&mut self, n: u64) {
        self.counters.handoffs_dropped += n;
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// The slot of a peer, whichever shard owns it.
    pub fn slot_of(&self, public_key: &PublicKey) -> Option<u32> {
        self.slot_by_key.get(public_key).copied()
    }

    /// Whether this shard holds a peer in `slot` (only the owner can say).
    pub fn has_slot(&self, slot: u32) -> bool {
        self.peers.contains_key(&slot)
    }

    /// The shard that encrypts a packet to this destination, if it routes.
    pub fn owner_of_destination(&self, packet: &[u8]) -> Option<u32> {
        let slot = Tunn::dst_address(packet).and_then(|dst| self.routes.lookup(dst))?;
        Some(self.shard.owner_of(slot))
    }

    /// Stateless takeover (on by default): see [`takeover`].
    pub fn set_takeover(&mut self, enabled: bool) {
        self.takeover.set_enabled(enabled);
    }

    pub fn takeover_counters(&self) -> &TakeoverCounters {
        self.takeover.counters()
    }

    /// Adds a peer; nothing else is disturbed.
    pub fn add_peer(&mut self, config: PeerConfig) -> Result<(), PeerError> {
        if config.slot >= MAX_PEER_SLOTS {
            return Err(PeerError::SlotOutOfRange(config.slot));
        }
        if config.public_key == self.public_key() {
            return Err(PeerError::OwnKey);
        }
        if gateway_core::registry::is_low_order_point(&config.public_key) {
            return Err(PeerError::LowOrderKey(encode_key(&config.public_key)));
        }
        if self.slot_by_key.contains_key(&config.public_key) {
            return Err(PeerError::DuplicateKey(encode_key(&config.public_key)));
        }
        if self.peers.contains_key(&config.slot) {
            return Err(PeerError::SlotInUse(config.slot));
        }
        self.check_allowed_ips_free(&config.allowed_ips, None)?;
        for net in &config.allowed_ips {
            self.routes.insert(*net, config.slot);
        }
        self.slot_by_key.insert(config.public_key, config.slot);
        if self.shard.owns(config.slot) {
            let state = self.new_state(&config);
            self.peers.insert(config.slot, Peer { config, state });
        }
        Ok(())
    }

    /// On a shard that does not own it: forgets a peer its owner removed.
    pub fn forget_peer(&mut self, config: &PeerConfig) {
        if self.slot_by_key.get(&config.public_key) == Some(&config.slot) {
            self.slot_by_key.remove(&config.public_key);
        }
        self.unroute(config.slot, &config.allowed_ips);
    }

    /// On a shard that does not own it: a peer's allowed IPs changed.
    pub fn reroute(&mut self, slot: u32, old: &[IpNet], new: &[IpNet]) {
        self.unroute(slot, old);
        for net in new {
            self.routes.insert(*net, slot);
        }
    }

    fn unroute(&mut self, slot: u32, nets: &[IpNet]) {
        for net in nets {
            if self.routes.get_exact(*net) == Some(slot) {
                self.routes.remove(*net);
            }
        }
    }

    /// Removes a peer, dropping its sessions and queued packets at once.
    pub fn remove_peer(&mut self, public_key: &PublicKey) -> Result<PeerConfig, PeerError> {
        let slot = self
            .slot_by_key
            .remove(public_key)
            .ok_or_else(|| PeerError::NotFound(encode_key(public_key)))?;
        let peer = self.peers.remove(&slot).ok_or(PeerError::NotFound(encode_key(public_key)))?;
        self.unroute(slot, &peer.config.allowed_ips);
        Ok(peer.config)
    }

    /// Rekey or move: the old peer goes (sessions and all), the new one comes.
    /// If the new one is refused the old one is put back.
    pub fn replace_peer(&mut self, old_key: &PublicKey, new: PeerConfig) -> Result<(), PeerError> {
        let old = self.remove_peer(old_key)?;
        if let Err(err) = self.add_peer(new) {
            // Re-adding what was there a moment ago cannot conflict.
            let _ = self.add_peer(old);
            return Err(err);
        }
        Ok(())
    }

    /// Changes endpoint, keepalive and allowed IPs of a peer in place. Its
    /// session survives unless the keepalive changes (boringtun fixes it at
    /// creation).
    pub fn reconfigure_peer(&mut self, new: PeerConfig) -> Result<(), PeerError> {
        let slot = *self
            .slot_by_key
            .get(&new.public_key)
            .ok_or_else(|| PeerError::NotFound(encode_key(&new.public_key)))?;
        if new.slot != slot {
            return Err(PeerError::SlotInUse(new.slot));
        }
        self.check_allowed_ips_free(&new.allowed_ips, Some(slot))?;
        let rebuild = {
            let peer = self.peers.get(&slot).ok_or(PeerError::NotFound(encode_key(&new.public_key)))?;
            peer.config.persistent_keepalive != new.persistent_keepalive
        };
        let fresh = rebuild.then(|| self.new_state(&new));
        let Some(peer) = self.peers.get_mut(&slot) else {
            return Err(PeerError::NotFound(encode_key(&new.public_key)));
        };
        for net in &peer.config.allowed_ips {
            if self.routes.get_exact(*net) == Some(slot) {
                self.routes.remove(*net);
            }
        }
        for net in &new.allowed_ips {
            self.routes.insert(*net, slot);
        }
        if let Some(fresh) = fresh {
            peer.state = fresh;
        }
        if new.endpoint.is_some() && new.endpoint != peer.config.endpoint {
            peer.state.endpoint = new.endpoint;
            peer.state.local = None;
        }
        peer.config = new;
        Ok(())
    }

    /// The highest free slot: peers added without a slot (UAPI `wg set`, the
    /// CLI) take them from the top so they stay clear of the plan's slots,
    /// which grow from the bottom with the tunnel IPs' host indices.
    pub fn free_slot(&self) -> Result<u32, PeerError> {
        (1..MAX_PEER_SLOTS).rev().find(|s| !self.peers.contains_key(s)).ok_or(PeerError::NoFreeSlot)
    }

    pub fn peer_config(&self, public_key: &PublicKey) -> Option<&PeerConfig> {
        let slot = self.slot_by_key.get(public_key)?;
        self.peers.get(slot).map(|p| &p.config)
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// All peers, in slot order.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        self.peers.values().map(stats_of).collect()
    }

    pub fn stats_for(&self, public_key: &PublicKey) -> Option<PeerStats> {
        let slot = self.slot_by_key.get(public_key)?;
        self.peers.get(slot).map(stats_of)
    }

    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }

    fn check_allowed_ips_free(&self, nets: &[IpNet], own_slot: Option<u32>) -> Result<(), PeerError> {
        for net in nets {
            if let Some(owner) = self.routes.get_exact(*net) {
                if Some(owner) != own_slot {
                    return Err(PeerError::AllowedIpInUse(*net));
                }
            }
        }
        Ok(())
    }

    fn new_state(&self, config: &PeerConfig) -> PeerState {
        // A peer we must keep alive needs its timers from the start.
        let tunn = config.persistent_keepalive.map(|_| new_tunn(&self.private_key, &self.rate_limiter, config));
        PeerState {
            tunn,
            endpoint: config.endpoint,
            local: None,
            rx_bytes: 0,
            tx_bytes: 0,
            dropped_spoofed: 0,
            forwarded: 0,
        }
    }

    fn push_event(&mut self, event: DeviceEvent) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.counters.events_dropped += 1;
        } else {
            self.events.push_back(event);
        }
    }
}

/// boringtun shifts `index` left by 8 and counts sessions in the low byte:
/// every session index of this peer is `slot << 8 | counter`.
fn new_tunn(private_key: &StaticSecret, rate_limiter: &Arc<RateLimiter>, config: &PeerConfig) -> Box<Tunn> {
    Box::new(Tunn::new(
        private_key.clone(),
        X25519Public::from(config.public_key),
        None,
        config.persistent_keepalive,
        config.slot,
        Some(rate_limiter.clone()),
    ))
}

fn stats_of(peer: &Peer) -> PeerStats {
    PeerStats {
        public_key: peer.config.public_key,
        slot: peer.config.slot,
        allowed_ips: peer.config.allowed_ips.clone(),
        endpoint: peer.state.endpoint,
        persistent_keepalive: peer.config.persistent_keepalive,
        since_last_handshake: peer.state.tunn.as_ref().and_then(|t| t.time_since_last_handshake()),
        rx_bytes: peer.state.rx_bytes,
        tx_bytes: peer.state.tx_bytes,
        dropped_spoofed: peer.state.dropped_spoofed,
        forwarded: peer.state.forwarded,
    }
}

#[cfg(test)]
mod tests;
