//! The WireGuard device core: peer table, handshakes, routing and allowed-IPs
//! enforcement over boringtun's `noise::Tunn` (no sockets: datagrams and TUN
//! packets come in as slices and leave through a [`PacketSink`]; boringtun
//! keeps its own monotonic clock for the protocol timers).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use gateway_common::wire::slot_of_index;
use gateway_common::MAX_PEER_SLOTS;
use ipnet::IpNet;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

use super::allowed_ips::AllowedIps;
use super::peer::{encapsulate_into, Peer, PeerConfig, PeerState, PeerStats, PublicKey, HANDSHAKE_INIT_LEN, WG_DATA_OVERHEAD};
use super::takeover::{self, Takeover, TakeoverCounters};

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

/// Where the device's output goes: the I/O loop implements it over sockets and
/// the TUN device, tests over vectors.
pub trait PacketSink {
    /// `from`: the local address to send from (`None`: the kernel's choice).
    fn send_udp(&mut self, to: SocketAddr, from: Option<IpAddr>, datagram: &[u8]);
    /// The datagram `fill` writes into a buffer of at least `room` bytes and
    /// measures (0: nothing to send). A sink with a send buffer of its own
    /// lets the encryption write straight into it instead of copying.
    fn send_udp_with(&mut self, to: SocketAddr, from: Option<IpAddr>, room: usize, fill: &mut dyn FnMut(&mut [u8]) -> usize) {
        let mut buf = vec![0u8; room];
        let len = fill(&mut buf);
        if len > 0 {
            self.send_udp(to, from, &buf[..len]);
        }
    }
    fn write_tun(&mut self, packet: &[u8]);
    /// Work for a peer another shard owns, to be handed to that shard.
    fn hand_off(&mut self, shard: u32, work: Handoff<'_>);
}

/// A device split into shards keeps each peer's session on one shard (one
/// worker thread): the one with `slot % count == index`. Every shard knows
/// every key and route, so whichever receives a packet can tell the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// An undivided device.
    pub const SOLE: Shard = Shard { index: 0, count: 1 };

    pub fn owner_of(self, slot: u32) -> u32 {
        slot % self.count
    }

    pub fn owns(self, slot: u32) -> bool {
        self.owner_of(slot) == self.index
    }
}

/// What one shard passes to another (see [`PacketSink::hand_off`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff<'a> {
    /// A datagram naming a peer of the other shard that reached this one
    /// (no steering program, or a stale one).
    Datagram { from: SocketAddr, local: Option<IpAddr>, datagram: &'a [u8] },
    /// A handshake initiation already checked (mac1, load) and decrypted far
    /// enough to name its peer: the owner goes on from there.
    Initiation { slot: u32, from: SocketAddr, local: Option<IpAddr>, datagram: &'a [u8] },
    /// An IP packet to encrypt for a peer of the other shard (peer-to-peer
    /// forwarding, or a TUN read the kernel queued on this shard's queue).
    Plain(&'a [u8]),
}

/// A received datagram's two ends: the peer's address, and the local address
/// it wrote to, which replies leave from. A gateway on a floating address
/// must answer from that address: a node that saw replies from the host's
/// own address would roam there and be lost when the address moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpPath {
    pub remote: SocketAddr,
    pub local: Option<IpAddr>,
}

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

/// Device-wide drop and event counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceCounters {
    pub malformed: u64,
    pub invalid_mac: u64,
    pub cookie_replies: u64,
    pub rejected_handshakes: u64,
    pub unknown_slot: u64,
    pub decrypt_errors: u64,
    pub spoofed_source: u64,
    pub no_route: u64,
    pub no_endpoint: u64,
    pub forwarded: u64,
    pub events_dropped: u64,
    /// Packets passed to the shard (worker) that owns their peer.
    pub handed_off: u64,
    /// Of those, dropped because the owner's queue was full.
    pub handoffs_dropped: u64,
    /// Handshake initiations and responses whose ephemeral key is a
    /// low-order point (its Diffie-Hellman is all zeros), dropped before
    /// boringtun sees them.
    pub low_order_ephemeral: u64,
}

impl DeviceCounters {
    /// Adds another shard's counters to these.
    pub fn add(&mut self, other: &DeviceCounters) {
        let DeviceCounters {
            malformed,
            invalid_mac,
            cookie_replies,
            rejected_handshakes,
            unknown_slot,
            decrypt_errors,
            spoofed_source,
            no_route,
            no_endpoint,
            forwarded,
            events_dropped,
            handed_off,
            handoffs_dropped,
            low_order_ephemeral,
        } = other;
        self.malformed += malformed;
        self.invalid_mac += invalid_mac;
        self.cookie_replies += cookie_replies;
        self.rejected_handshakes += rejected_handshakes;
        self.unknown_slot += unknown_slot;
        self.decrypt_errors += decrypt_errors;
        self.spoofed_source += spoofed_source;
        self.no_route += no_route;
        self.no_endpoint += no_endpoint;
        self.forwarded += forwarded;
        self.events_dropped += events_dropped;
        self.handed_off += handed_off;
        self.handoffs_dropped += handoffs_dropped;
        self.low_order_ephemeral += low_order_ephemeral;
    }
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
            return Err(PeerError::LowOrderKey(super::peer::encode_key(&config.public_key)));
        }
        if self.slot_by_key.contains_key(&config.public_key) {
            return Err(PeerError::DuplicateKey(super::peer::encode_key(&config.public_key)));
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
            .ok_or_else(|| PeerError::NotFound(super::peer::encode_key(public_key)))?;
        let peer = self.peers.remove(&slot).ok_or(PeerError::NotFound(super::peer::encode_key(public_key)))?;
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
            .ok_or_else(|| PeerError::NotFound(super::peer::encode_key(&new.public_key)))?;
        if new.slot != slot {
            return Err(PeerError::SlotInUse(new.slot));
        }
        self.check_allowed_ips_free(&new.allowed_ips, Some(slot))?;
        let rebuild = {
            let peer = self.peers.get(&slot).ok_or(PeerError::NotFound(super::peer::encode_key(&new.public_key)))?;
            peer.config.persistent_keepalive != new.persistent_keepalive
        };
        let fresh = rebuild.then(|| self.new_state(&new));
        let Some(peer) = self.peers.get_mut(&slot) else {
            return Err(PeerError::NotFound(super::peer::encode_key(&new.public_key)));
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

    /// One UDP datagram from the network, from `from` to the local address
    /// `local` (if the socket says).
    pub fn handle_datagram(&mut self, from: SocketAddr, local: Option<IpAddr>, datagram: &[u8], sink: &mut impl PacketSink) {
        let path = UdpPath { remote: from, local };
        if super::weak_keys::low_order_ephemeral(datagram) {
            self.counters.low_order_ephemeral += 1;
            return;
        }
        let (slot, is_init) = match Tunn::parse_incoming_packet(datagram) {
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
            Ok(Packet::HandshakeInit(init)) => {
                let mut cookie = [0u8; 64];
                // mac1 and the load check are cheap; do them before the DH
                // that reveals the initiator's key.
                match self.rate_limiter.verify_packet(Some(from.ip()), datagram, &mut cookie) {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(reply)) => {
                        self.counters.cookie_replies += 1;
                        sink.send_udp(from, local, reply);
                        return;
                    }
                    Err(_) => {
                        self.counters.invalid_mac += 1;
                        return;
                    }
                }
                let half = match parse_handshake_anon(&self.private_key, &self.public_key, &init) {
                    Ok(half) => half,
                    Err(_) => {
                        self.counters.decrypt_errors += 1;
                        return;
                    }
                };
                match self.slot_by_key.get(&half.peer_static_public) {
                    Some(&slot) if !self.shard.owns(slot) => {
                        self.counters.handed_off += 1;
                        sink.hand_off(self.shard.owner_of(slot), Handoff::Initiation { slot, from, local, datagram });
                        return;
                    }
                    Some(slot) => (*slot, true),
                    None => {
                        self.counters.rejected_handshakes += 1;
                        self.push_event(DeviceEvent::RejectedHandshake {
                            public_key: half.peer_static_public,
                            endpoint: from,
                        });
                        return;
                    }
                }
            }
            Ok(Packet::HandshakeResponse(p)) => (slot_of_index(p.receiver_idx), false),
            Ok(Packet::PacketCookieReply(p)) => (slot_of_index(p.receiver_idx), false),
            Ok(Packet::PacketData(p)) => (slot_of_index(p.receiver_idx), false),
        };
        if !self.shard.owns(slot) {
            self.counters.handed_off += 1;
            sink.hand_off(self.shard.owner_of(slot), Handoff::Datagram { from, local, datagram });
            return;
        }
        let mut buf = std::mem::take(&mut self.decrypted);
        self.decapsulate(slot, is_init, path, datagram, &mut buf, sink);
        self.decrypted = buf;
    }

    /// An initiation another shard checked and found to be for `slot`, which
    /// this shard owns.
    pub fn handle_initiation_for(
        &mut self,
        slot: u32,
        from: SocketAddr,
        local: Option<IpAddr>,
        datagram: &[u8],
        sink: &mut impl PacketSink,
    ) {
        let mut buf = std::mem::take(&mut self.decrypted);
        self.decapsulate(slot, true, UdpPath { remote: from, local }, datagram, &mut buf, sink);
        self.decrypted = buf;
    }

    fn decapsulate(
        &mut self,
        slot: u32,
        is_init: bool,
        path: UdpPath,
        datagram: &[u8],
        buf: &mut [u8],
        sink: &mut impl PacketSink,
    ) {
        let from = path.remote;
        let Some(peer) = self.peers.get_mut(&slot) else {
            self.counters.unknown_slot += 1;
            return;
        };
        if peer.state.tunn.is_none() {
            // Without a Tunn there is no session: only an initiation starts
            // one, or the takeover does.
            if !is_init {
                self.take_over(slot, path, sink);
                return;
            }
            peer.state.tunn = Some(new_tunn(&self.private_key, &self.rate_limiter, &peer.config));
        }
        let state = &mut peer.state;
        let Some(tunn) = state.tunn.as_mut() else { return };
        let (inner, inner_src) = match tunn.decapsulate(Some(from.ip()), datagram, buf) {
            TunnResult::Err(WireGuardError::UnderLoad | WireGuardError::InvalidMac) => {
                self.counters.invalid_mac += 1;
                return;
            }
            TunnResult::Err(err) if !is_init && takeover::names_no_session(&err) => {
                self.take_over(slot, path, sink);
                return;
            }
            TunnResult::Err(_) => {
                self.counters.decrypt_errors += 1;
                return;
            }
            TunnResult::Done => {
                (state.endpoint, state.local) = (Some(path.remote), path.local);
                state.rx_bytes += datagram.len() as u64;
                return;
            }
            TunnResult::WriteToNetwork(reply) => {
                // A handshake response or the keepalive after one; then
                // whatever waited for the session.
                (state.endpoint, state.local) = (Some(path.remote), path.local);
                state.rx_bytes += datagram.len() as u64;
                state.tx_bytes += reply.len() as u64;
                sink.send_udp(from, path.local, reply);
                while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], buf) {
                    state.tx_bytes += queued.len() as u64;
                    sink.send_udp(from, path.local, queued);
                }
                return;
            }
            TunnResult::WriteToTunnelV4(packet, src) => (packet, IpAddr::V4(src)),
            TunnResult::WriteToTunnelV6(packet, src) => (packet, IpAddr::V6(src)),
        };
        (state.endpoint, state.local) = (Some(path.remote), path.local);
        state.rx_bytes += datagram.len() as u64;
        if self.routes.lookup(inner_src) != Some(slot) {
            state.dropped_spoofed += 1;
            self.counters.spoofed_source += 1;
            return;
        }
        let target = Tunn::dst_address(inner).and_then(|dst| self.routes.lookup(dst));
        match target {
            Some(other) if other != slot => {
                state.forwarded += 1;
                self.counters.forwarded += 1;
                self.send_to_peer(other, inner, sink);
            }
            _ => sink.write_tun(inner),
        }
    }

    /// The hook of [`takeover`]: a packet on `path` named `slot`'s peer but
    /// no session of it. Initiates a handshake back along `path` if the
    /// slot's budget allows; the endpoint is learned only from the
    /// authenticated response.
    fn take_over(&mut self, slot: u32, path: UdpPath, sink: &mut impl PacketSink) {
        let Some(peer) = self.peers.get_mut(&slot) else { return };
        if !self.takeover.admit(slot, peer.state.tunn.is_some(), std::time::Instant::now()) {
            self.counters.decrypt_errors += 1;
            return;
        }
        let tunn = peer.state.tunn.get_or_insert_with(|| new_tunn(&self.private_key, &self.rate_limiter, &peer.config));
        let mut out = std::mem::take(&mut self.encrypted);
        if let Some(initiation) = takeover::initiation(tunn, &mut out) {
            peer.state.tx_bytes += initiation.len() as u64;
            sink.send_udp(path.remote, path.local, initiation);
        }
        self.encrypted = out;
    }

    /// Drops the `Tunn`s made for takeovers that got no session within the
    /// interval, so forged packets cannot hold memory for idle peers.
    fn expire_takeovers(&mut self, now: std::time::Instant) {
        for slot in self.takeover.expire(now) {
            let Some(peer) = self.peers.get_mut(&slot) else { continue };
            let keep = peer.config.persistent_keepalive.is_some() || peer.state.tunn.as_deref().is_none_or(takeover::has_session);
            if !keep {
                peer.state.tunn = None;
                self.takeover.abandoned();
            }
        }
    }

    /// One IP packet read from the TUN device.
    pub fn handle_tun_packet(&mut self, packet: &[u8], sink: &mut impl PacketSink) {
        let Some(slot) = Tunn::dst_address(packet).and_then(|dst| self.routes.lookup(dst)) else {
            self.counters.no_route += 1;
            return;
        };
        self.send_to_peer(slot, packet, sink);
    }

    fn send_to_peer(&mut self, slot: u32, packet: &[u8], sink: &mut impl PacketSink) {
        if !self.shard.owns(slot) {
            self.counters.handed_off += 1;
            sink.hand_off(self.shard.owner_of(slot), Handoff::Plain(packet));
            return;
        }
        let Some(peer) = self.peers.get_mut(&slot) else {
            self.counters.no_route += 1;
            return;
        };
        let state = &mut peer.state;
        let tunn = state.tunn.get_or_insert_with(|| new_tunn(&self.private_key, &self.rate_limiter, &peer.config));
        let Some(endpoint) = state.endpoint else {
            // Nowhere to send it yet; boringtun still queues it (or starts
            // the handshake that will carry it).
            let mut out = std::mem::take(&mut self.encrypted);
            if let TunnResult::WriteToNetwork(datagram) = tunn.encapsulate(packet, &mut out) {
                send_to_endpoint(state, datagram, sink, &mut self.counters);
            }
            self.encrypted = out;
            return;
        };
        // Encrypted straight into the sink's send buffer. A data message is
        // the packet plus 32 bytes; without a session boringtun writes a
        // handshake initiation instead.
        let room = (packet.len() + WG_DATA_OVERHEAD).max(HANDSHAKE_INIT_LEN);
        let mut sent = 0;
        sink.send_udp_with(endpoint, state.local, room, &mut |buf| {
            sent = encapsulate_into(tunn, packet, buf);
            sent
        });
        state.tx_bytes += sent as u64;
    }

    /// Drives handshake retries, rekeys and keepalives; call a few times a
    /// second (boringtun rounds its timers to the second).
    pub fn tick(&mut self, sink: &mut impl PacketSink) {
        // One limiter for all shards: reset once per tick, not once per shard.
        if self.shard.index == 0 {
            self.rate_limiter.reset_count();
        }
        self.expire_takeovers(std::time::Instant::now());
        let mut out = std::mem::take(&mut self.encrypted);
        for peer in self.peers.values_mut() {
            let state = &mut peer.state;
            let Some(tunn) = state.tunn.as_mut() else { continue };
            let idle = tunn.time_since_last_handshake().is_some_and(|d| d > IDLE_TUNN_DROP);
            if idle && peer.config.persistent_keepalive.is_none() {
                state.tunn = None;
                continue;
            }
            if let TunnResult::WriteToNetwork(datagram) = tunn.update_timers(&mut out) {
                send_to_endpoint(state, datagram, sink, &mut self.counters);
            }
        }
        self.encrypted = out;
    }
}

/// A peer's Tunn is dropped after this long without a handshake: three
/// times REJECT_AFTER_TIME (180 s), so every session of it is long dead.
const IDLE_TUNN_DROP: std::time::Duration = std::time::Duration::from_secs(540);

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

fn send_to_endpoint(state: &mut PeerState, datagram: &[u8], sink: &mut impl PacketSink, counters: &mut DeviceCounters) {
    match state.endpoint {
        Some(endpoint) => {
            state.tx_bytes += datagram.len() as u64;
            sink.send_udp(endpoint, state.local, datagram);
        }
        None => counters.no_endpoint += 1,
    }
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
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::collections::VecDeque;
    use std::net::Ipv4Addr;

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

    fn secret(seed: u8) -> [u8; 32] {
        let mut k = [seed; 32];
        k[0] &= 248;
        k
    }

    fn public(seed: u8) -> PublicKey {
        *X25519Public::from(&StaticSecret::from(secret(seed))).as_bytes()
    }

    fn ipv4_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20 + payload.len()];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..].copy_from_slice(payload);
        p
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
                        *first = kind.max(1).min(4);
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
}
