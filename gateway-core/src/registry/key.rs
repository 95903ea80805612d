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

/// Longest node id accepted: it becomes a DNS label (`<node_id>.vpn.dstack`),
/// and RFC 1035 labels stop at 63 octets; 64 is the contract's own limit.
pub const MAX_NODE_ID_LEN: usize = 64;

/// Why a node id is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error("empty node id")]
    Empty,
    #[error("node id is {0} bytes, the limit is {MAX_NODE_ID_LEN}")]
    TooLong(usize),
    #[error("node id contains characters outside [A-Za-z0-9-]")]
    BadCharacter,
}

/// Checks a node id before it becomes a hostname.
pub fn validate_node_id(id: &str) -> Result<(), NodeIdError> {
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
    fn node_ids_are_dns_safe() {
        assert_eq!(validate_node_id("node-a1"), Ok(()));
        assert_eq!(validate_node_id(""), Err(NodeIdError::Empty));
        assert_eq!(validate_node_id("node_a"), Err(NodeIdError::BadCharacter));
        assert_eq!(validate_node_id("a.b"), Err(NodeIdError::BadCharacter));
        assert_eq!(validate_node_id(&"a".repeat(64)), Ok(()));
        assert_eq!(validate_node_id(&"a".repeat(65)), Err(NodeIdError::TooLong(65)));
    }
}
