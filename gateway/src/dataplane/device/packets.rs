//! The device's packet paths: a datagram from the network (handshakes,
//! takeover, decryption, allowed-IPs check, peer-to-peer forwarding), an IP
//! packet from the TUN device (route, encrypt), and the protocol timers.

use std::net::{IpAddr, SocketAddr};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use gateway_common::wire::slot_of_index;

use super::{new_tunn, Device, DeviceCounters, DeviceEvent};
use crate::dataplane::peer::{encapsulate_into, PeerState, HANDSHAKE_INIT_LEN, WG_DATA_OVERHEAD};
use crate::dataplane::sink::{Handoff, PacketSink, UdpPath};
use crate::dataplane::takeover;

impl Device {
    /// One UDP datagram from the network, from `from` to the local address
    /// `local` (if the socket says).
    pub fn handle_datagram(&mut self, from: SocketAddr, local: Option<IpAddr>, datagram: &[u8], sink: &mut impl PacketSink) {
        let path = UdpPath { remote: from, local };
        if crate::dataplane::weak_keys::low_order_ephemeral(datagram) {
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
    pub(super) fn expire_takeovers(&mut self, now: std::time::Instant) {
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

fn send_to_endpoint(state: &mut PeerState, datagram: &[u8], sink: &mut impl PacketSink, counters: &mut DeviceCounters) {
    match state.endpoint {
        Some(endpoint) => {
            state.tx_bytes += datagram.len() as u64;
            sink.send_udp(endpoint, state.local, datagram);
        }
        None => counters.no_endpoint += 1,
    }
}
