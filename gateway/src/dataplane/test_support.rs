//! Builders the data plane's unit tests share: deterministic keys and a
//! minimal IPv4 packet.

use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

use super::peer::PublicKey;

/// A clamped private key made from one byte, so tests name peers by seed.
pub(crate) fn secret(seed: u8) -> [u8; 32] {
    let mut k = [seed; 32];
    k[0] &= 248;
    k
}

pub(crate) fn public(seed: u8) -> PublicKey {
    *X25519Public::from(&StaticSecret::from(secret(seed))).as_bytes()
}

/// An IPv4/UDP packet from `src` to `dst` around `payload` (the header's
/// checksum is left zero: nothing on the device's path checks it).
pub(crate) fn ipv4_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
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
