//! The chain's identities as values (pure): token ids, 20-byte addresses and
//! 32-byte hashes, parsed once from their hex text, printed as lowercase
//! `0x` hex, compared as bytes. The chain and every file we write spell
//! them in hex; a checksummed (mixed-case) address from an operator or a
//! seed file is the same address.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ERC-721 token id. The reference contract numbers tokens from 1; ids that
/// do not fit 128 bits are reported as malformed contract data, never truncated.
pub type TokenId = u128;

/// Why a hex string is not the identity it should name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a 0x-prefixed {bytes}-byte hex value")]
pub struct HexIdError {
    text: String,
    bytes: usize,
}

fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], HexIdError> {
    let bad = || HexIdError { text: text.to_string(), bytes: N };
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).ok_or_else(bad)?;
    if digits.len() != 2 * N {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.as_bytes().chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("0x")?;
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// One fixed-size identity: parse, print, serde as its hex text.
macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $n:literal, $alloy:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; $n]);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, HexIdError> {
                parse_hex::<$n>(text.trim()).map($name)
            }
        }

        impl FromStr for $name {
            type Err = HexIdError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl From<$alloy> for $name {
            fn from(value: $alloy) -> Self {
                $name(<[u8; $n]>::from(value))
            }
        }

        impl From<$name> for $alloy {
            fn from(value: $name) -> Self {
                <$alloy>::from(value.0)
            }
        }
    };
}

hex_id!(
    /// A 20-byte Ethereum address (contract, token owner).
    Address, 20, alloy_primitives::Address
);
hex_id!(
    /// A transaction hash, for the audit log.
    TxHash, 32, alloy_primitives::B256
);
hex_id!(
    /// A block hash: how the follower notices that a block it read is gone.
    BlockHash, 32, alloy_primitives::B256
);

impl Address {
    /// `address(0)`: a transfer to it is a burn.
    pub const ZERO: Address = Address([0; 20]);

    pub fn is_zero(&self) -> bool {
        *self == Address::ZERO
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn addresses_parse_in_any_case_and_print_lowercase() {
        let checksummed = "0x37d2106bADB01dd5bE1926e45D172Cb4203C4186";
        let a = Address::parse(checksummed).unwrap();
        assert_eq!(a.to_string(), checksummed.to_lowercase());
        assert_eq!(a, Address::parse(&checksummed.to_lowercase()).unwrap());
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{}\"", checksummed.to_lowercase()));
        assert_eq!(serde_json::from_str::<Address>(&format!("\"{checksummed}\"")).unwrap(), a);
    }

    #[test]
    fn malformed_hex_is_an_error_not_a_truncation() {
        for bad in ["", "0x", "37d2106badb01dd5be1926e45d172cb4203c4186", "0x37d2106badb01dd5be1926e45d172cb4203c41", "0xzz d2106badb01dd5be1926e45d172cb4203c4186"] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TxHash::parse(&format!("0x{}", "ab".repeat(32))).is_ok());
        assert!(TxHash::parse(&format!("0x{}", "ab".repeat(20))).is_err());
    }

    #[test]
    fn alloy_values_convert_both_ways() {
        let a = alloy_primitives::Address::repeat_byte(0xab);
        assert_eq!(alloy_primitives::Address::from(Address::from(a)), a);
        let h = alloy_primitives::B256::repeat_byte(0x11);
        assert_eq!(alloy_primitives::B256::from(BlockHash::from(h)), h);
        assert!(Address::ZERO.is_zero());
    }
}
