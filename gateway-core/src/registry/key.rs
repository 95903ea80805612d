//! Validation of the chain's strings: WireGuard public keys and node ids
//! (pure). Chain data is untrusted: anything malformed becomes a reason,
//! never a panic.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Curve25519 public key as WireGuard uses it (32 bytes, standard base64 on
/// chain and in `wg` tools). Public by definition; never a private key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WgKey(pub [u8; 32]);

/// Why a chain string is not a usable key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no key bound")]
    Empty,
    #[error("not valid base64")]
    NotBase64,
    #[error("decodes to {0} bytes, a WireGuard key has 32")]
    WrongLength(usize),
    #[error("a low-order Curve25519 point: Diffie-Hellman with it is all zeros, which anybody can compute")]
    LowOrder,
}

/// p = 2^255 - 19, little endian: the field Curve25519 lives in.
const P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// The u-coordinates (mod p, little endian) of the points of order 1, 2,
/// 4 and 8 on Curve25519 and its twist: 0, 1, p - 1 and the two points of
/// order 8 of <https://cr.yp.to/ecdh.html#validate> (325606…233504 and
/// 393823…705823 in decimal). X25519 with any clamped scalar maps each of
/// them to 0 (the scalar is a multiple of the cofactor 8), so the "shared"
/// secret is public. Checked in the tests against X25519 itself.
const LOW_ORDER_U: [[u8; 32]; 5] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    {
        let mut minus_one = P;
        minus_one[0] = 0xec;
        minus_one
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb,
        0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4,
        0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
    ],
];

/// Whether the 32 bytes are a low-order point in any of their encodings.
/// X25519 ignores the top bit (RFC 7748, section 5) and reads values in
/// [p, 2^255) as their residue mod p, so `u`, `u | 2^255` and `u + p` are one
/// point: the top bit is cleared and the non-canonical range (p .. p + 18:
/// only 0 and 1 have a second spelling there) reduced before comparing.
pub fn is_low_order_point(bytes: &[u8; 32]) -> bool {
    let mut u = *bytes;
    u[31] &= 0x7f;
    if u[1..].iter().zip(&P[1..]).all(|(a, b)| a == b) && u[0] >= P[0] {
        // u >= p; u - p is the low byte's excess.
        let excess = u[0] - P[0];
        u = [0; 32];
        u[0] = excess;
    }
    LOW_ORDER_U.contains(&u)
}

impl WgKey {
    /// Parses the standard-base64 form (`wg genkey | wg pubkey`); surrounding
    /// whitespace is not accepted because the contract stores exact strings
    /// and two spellings of one key must not count as two keys.
    pub fn parse(s: &str) -> Result<WgKey, KeyError> {
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        let bytes = STANDARD.decode(s).map_err(|_| KeyError::NotBase64)?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(WgKey(arr))
    }

    /// A well-formed key that is still unusable: a low-order point, with
    /// which the static-static Diffie-Hellman is all zeros, so whoever knows
    /// the gateway's public key could take the token's place.
    pub(crate) fn check_usable(&self) -> Result<(), KeyError> {
        if is_low_order_point(&self.0) {
            return Err(KeyError::LowOrder);
        }
        Ok(())
    }

    /// [`parse`](Self::parse), then [`check_usable`](Self::check_usable).
    pub(crate) fn parse_usable(s: &str) -> Result<WgKey, KeyError> {
        let key = WgKey::parse(s)?;
        key.check_usable()?;
        Ok(key)
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Display for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgKey({})", self.to_base64())
    }
}

impl std::str::FromStr for WgKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WgKey::parse(s)
    }
}

impl Serialize for WgKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for WgKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WgKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Every spelling of every low-order point: the canonical five, the
/// same with the top bit set, and p and p + 1 (0 and 1 again), with
/// and without the top bit: 14 encodings.
#[cfg(any(test, feature = "test-support"))]
pub fn low_order_encodings() -> Vec<[u8; 32]> {
    let mut all: Vec<[u8; 32]> = LOW_ORDER_U.to_vec();
    let p_plus = |excess: u8| {
        let mut u = P;
        u[0] += excess;
        u
    };
    all.push(p_plus(0));
    all.push(p_plus(1));
    let high: Vec<[u8; 32]> = all
        .iter()
        .map(|u| {
            let mut h = *u;
            h[31] |= 0x80;
            h
        })
        .collect();
    all.extend(high);
    all
}

/// Longest node id accepted: it becomes a DNS label (`<node_id>.vpn.dstack`),
/// and RFC 1035 labels stop at 63 octets; 64 is the contract's own limit.
pub(crate) const MAX_NODE_ID_LEN: usize = 64;

/// Why a node id is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NodeIdError {
    #[error("empty node id")]
    Empty,
    #[error("node id is {0} bytes, the limit is {MAX_NODE_ID_LEN}")]
    TooLong(usize),
    #[error("node id contains characters outside [A-Za-z0-9-]")]
    BadCharacter,
}

/// Checks a node id before it becomes a hostname.
pub(crate) fn validate_node_id(id: &str) -> Result<(), NodeIdError> {
    if id.is_empty() {
        return Err(NodeIdError::Empty);
    }
    if id.len() > MAX_NODE_ID_LEN {
        return Err(NodeIdError::TooLong(id.len()));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(NodeIdError::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn key_round_trips_and_rejects_malformed() {
        let k = WgKey([7u8; 32]);
        assert_eq!(WgKey::parse(&k.to_base64()), Ok(k));
        assert_eq!(WgKey::parse(""), Err(KeyError::Empty));
        assert_eq!(WgKey::parse("not base64!"), Err(KeyError::NotBase64));
        assert_eq!(WgKey::parse(&STANDARD.encode([1u8; 31])), Err(KeyError::WrongLength(31)));
        assert_eq!(WgKey::parse(&format!(" {}", k.to_base64())), Err(KeyError::NotBase64));
    }

    #[test]
    fn every_low_order_encoding_is_refused() {
        let encodings = low_order_encodings();
        assert_eq!(encodings.len(), 14);
        for u in &encodings {
            assert!(is_low_order_point(u), "{}", STANDARD.encode(u));
            let text = STANDARD.encode(u);
            assert_eq!(WgKey::parse_usable(&text), Err(KeyError::LowOrder), "{text}");
            // Well-formed all the same: the registry can say which token bound it.
            assert_eq!(WgKey::parse(&text), Ok(WgKey(*u)));
        }
        assert_eq!(WgKey::parse_usable("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), Err(KeyError::LowOrder));
    }

    /// The list is right: X25519 of each encoding with random clamped
    /// scalars is all zeros, and neighbours of each are ordinary points.
    #[test]
    fn low_order_points_make_diffie_hellman_zero_and_their_neighbours_do_not() {
        use rand_core::{OsRng, RngCore};
        for u in low_order_encodings() {
            for _ in 0..4 {
                let mut scalar = [0u8; 32];
                OsRng.fill_bytes(&mut scalar);
                let secret = x25519_dalek::StaticSecret::from(scalar);
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(u));
                assert_eq!(shared.as_bytes(), &[0u8; 32], "{}", STANDARD.encode(u));
                assert!(!shared.was_contributory());
            }
            let mut neighbour = u;
            neighbour[5] ^= 0x01;
            assert!(!is_low_order_point(&neighbour), "{}", STANDARD.encode(neighbour));
        }
        // p - 2 .. p + 18 outside {p - 1, p, p + 1} are ordinary.
        for excess in [2u8, 3, 18] {
            let mut u = P;
            u[0] += excess;
            assert!(!is_low_order_point(&u));
        }
        let mut p_minus_2 = P;
        p_minus_2[0] -= 2;
        assert!(!is_low_order_point(&p_minus_2));
        // An ordinary public key is usable.
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(OsRng));
        assert_eq!(WgKey(public.to_bytes()).check_usable(), Ok(()));
    }

    #[test]
    fn node_ids_are_dns_safe() {
        assert_eq!(validate_node_id("node-a1"), Ok(()));
        assert_eq!(validate_node_id(""), Err(NodeIdError::Empty));
        assert_eq!(validate_node_id("node_a"), Err(NodeIdError::BadCharacter));
        assert_eq!(validate_node_id("a.b"), Err(NodeIdError::BadCharacter));
        assert_eq!(validate_node_id(&"a".repeat(64)), Ok(()));
        assert_eq!(validate_node_id(&"a".repeat(65)), Err(NodeIdError::TooLong(65)));
    }
}
