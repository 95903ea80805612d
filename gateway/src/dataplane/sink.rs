//! What the device core hands to the I/O layer and to other shards: the
//! [`PacketSink`] its output goes through, the [`Shard`] split that keeps each
//! peer on one worker, and the [`Handoff`] of work a shard does not own.

use std::net::{IpAddr, SocketAddr};

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
