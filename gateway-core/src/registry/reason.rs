//! The one vocabulary of access reasons (pure), shared by the registry (a
//! token's standing), access decisions, the audit log and the XDP deny
//! entries. Not to be confused with `gateway_common`'s XDP verdicts, which
//! say what the kernel did with a packet.

use serde::{Deserialize, Serialize};

/// Why a key is, or is not, allowed. Ordered by how a token's standing is
/// judged: the first failing check names the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessReason {
    /// Active token, owner present, valid key bound, address available.
    Granted,
    /// No token has this key bound, and none ever did while we watched.
    UnknownKey,
    /// Only events that assume an earlier grant were seen (a transfer of a
    /// token we never saw minted); waits for the follower's snapshot.
    UnknownToken,
    /// The token's `isActive` is false (`NodeAccessRevoked`).
    Revoked,
    /// `ownerOf` reverts: the token was burned or never minted.
    NoOwner,
    /// Active and owned, but no key bound.
    Unbound,
    /// The token changed hands; the key stays unbound until the new owner binds one.
    UnboundAfterTransfer,
    /// The key was the token's, the owner bound another one.
    KeyRotated,
    /// The bound key is not 32 bytes of standard base64.
    InvalidKey,
    /// The node id is empty, longer than 64 bytes or not `[A-Za-z0-9-]`.
    InvalidNodeId,
    /// The same key is bound to a lower, live token id, which wins.
    DuplicateKey,
    /// The token's host index is past the tunnel network (or the slot space).
    NetworkFull,
    /// Token id 0 would take the gateway's own address.
    ReservedAddress,
    /// The chain state is older than the configured maximum age and the
    /// policy is fail closed.
    ChainUnavailable,
}

impl AccessReason {
    pub fn is_granted(self) -> bool {
        self == AccessReason::Granted
    }

    /// The snake_case name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessReason::Granted => "granted",
            AccessReason::UnknownKey => "unknown_key",
            AccessReason::UnknownToken => "unknown_token",
            AccessReason::Revoked => "revoked",
            AccessReason::NoOwner => "no_owner",
            AccessReason::Unbound => "unbound",
            AccessReason::UnboundAfterTransfer => "unbound_after_transfer",
            AccessReason::KeyRotated => "key_rotated",
            AccessReason::InvalidKey => "invalid_key",
            AccessReason::InvalidNodeId => "invalid_node_id",
            AccessReason::DuplicateKey => "duplicate_key",
            AccessReason::NetworkFull => "network_full",
            AccessReason::ReservedAddress => "reserved_address",
            AccessReason::ChainUnavailable => "chain_unavailable",
        }
    }

    /// A stable number for the XDP deny entry's `reason` field.
    pub fn code(self) -> u32 {
        self as u32
    }
}

impl std::fmt::Display for AccessReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn json_name_matches_as_str() {
        for r in [AccessReason::Granted, AccessReason::UnboundAfterTransfer, AccessReason::ChainUnavailable, AccessReason::NetworkFull] {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.as_str()));
        }
    }
}
