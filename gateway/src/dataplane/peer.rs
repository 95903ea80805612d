//! A peer's configuration (what the access layer asks for) apart from its
//! live state (boringtun session, learned endpoint, counters) (pure types).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use boringtun::noise::{Tunn, TunnResult};
use ipnet::IpNet;

/// A WireGuard public key (Curve25519, 32 bytes).
pub type PublicKey = [u8; 32];

/// What the control API asks for. The slot is the caller's choice (the plan
/// derives it from the tunnel IP's host index); it prefixes every session
/// index this peer's sessions use, so the XDP program can tell the peer from
/// `receiver_index >> 8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub slot: u32,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
}

/// Live state; dropping it discards the sessions and queued packets.
pub(crate) struct PeerState {
    /// Created on the peer's first handshake initiation or outbound packet
    /// (at once only with a persistent keepalive) and dropped once it has
    /// been idle well past session expiry: a boringtun `Tunn` is 11,040 bytes,
    /// and most peers of a large network are idle.
    pub tunn: Option<Box<Tunn>>,
    /// The configured endpoint, then wherever authenticated packets last came from.
    pub endpoint: Option<SocketAddr>,
    /// The local address those packets were sent to: what goes to the peer
    /// leaves from it (`None`: the kernel's choice), as kernel WireGuard does.
    pub local: Option<IpAddr>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Decrypted packets whose source was outside the peer's allowed IPs.
    pub dropped_spoofed: u64,
    /// Decrypted packets handed straight to another peer (no TUN round trip).
    pub forwarded: u64,
}

pub(crate) struct Peer {
    pub config: PeerConfig,
    pub state: PeerState,
}

/// A snapshot of one peer for `wg show`, metrics and the access layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerStats {
    #[serde(serialize_with = "serialize_key")]
    pub public_key: PublicKey,
    pub slot: u32,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    /// Time since the last completed handshake, if there was one.
    pub since_last_handshake: Option<Duration>,
    /// Wire bytes (whole WireGuard datagrams) received and sent.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub dropped_spoofed: u64,
    pub forwarded: u64,
}

fn serialize_key<S: serde::Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&encode_key(key))
}

/// Standard base64, the form `wg` prints and the contract stores.
pub fn encode_key(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a WireGuard key (32 bytes as base64 or hex)")]
pub struct BadKey;

/// Parses a key given as base64 (44 chars, `wg genkey`) or hex (64 chars, UAPI).
pub fn parse_key(text: &str) -> Result<[u8; 32], BadKey> {
    let text = text.trim();
    let bytes = if text.len() == 64 {
        hex::decode(text).map_err(|_| BadKey)?
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| BadKey)?
    };
    bytes.try_into().map_err(|_| BadKey)
}

/// WireGuard's framing of a data message: 16 bytes of header, 16 of tag.
pub const WG_DATA_OVERHEAD: usize = 32;
pub const HANDSHAKE_INIT_LEN: usize = 148;

/// Encrypts `packet` (or writes the handshake it waits for) at the start of
/// `buf`; returns the datagram's length, 0 if there is nothing to send.
pub fn encapsulate_into(tunn: &mut Tunn, packet: &[u8], buf: &mut [u8]) -> usize {
    let base = buf.as_ptr() as usize;
    let (offset, len) = match tunn.encapsulate(packet, buf) {
        TunnResult::WriteToNetwork(datagram) => (datagram.as_ptr() as usize - base, datagram.len()),
        _ => return 0,
    };
    // boringtun writes from the start of `buf`; if it ever did not, move it there.
    if offset != 0 {
        buf.copy_within(offset..offset + len, 0);
    }
    len
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_round_trip_through_base64_and_hex() {
        let key = [7u8; 32];
        assert_eq!(parse_key(&encode_key(&key)), Ok(key));
        assert_eq!(parse_key(&hex::encode(key)), Ok(key));
        assert_eq!(parse_key("abc"), Err(BadKey));
        assert_eq!(parse_key(&encode_key(&key)[..40]), Err(BadKey));
    }
}
