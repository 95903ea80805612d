//! The decision "is key K allowed, and why", read off the registry (pure).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::chain::{Address, TokenId};
use crate::registry::{KeyLookup, PeerSlot, AccessReason, Registry, TokenView, WgKey};

/// One answer, with what it was decided on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub reason: AccessReason,
    /// The key asked about, as given (may be malformed input).
    pub public_key: String,
    pub token_id: Option<TokenId>,
    pub node_id: Option<String>,
    pub owner: Option<Address>,
    /// Only for granted keys.
    pub slot: Option<PeerSlot>,
    pub tunnel_ip: Option<Ipv4Addr>,
}

impl Decision {
    /// The status `/v1/access/{key}` answers with: 200 allowed, 400 not a
    /// key, 503 when only the staleness policy refuses, 403 otherwise.
    pub fn http_status(&self) -> u16 {
        match self.reason {
            _ if self.allowed => 200,
            AccessReason::InvalidKey if self.token_id.is_none() => 400,
            AccessReason::ChainUnavailable => 503,
            _ => 403,
        }
    }

    /// Status and JSON body for `AdminView::access` (`/v1/access/{key}`).
    pub fn http_answer(&self) -> (u16, serde_json::Value) {
        (self.http_status(), serde_json::to_value(self).unwrap_or(serde_json::Value::Null))
    }

    /// One line for people: `allowed (granted): token 1, node-a, 10.0.0.2, owner 0x..`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = self.token_id {
            parts.push(format!("token {t}"));
        }
        if let Some(n) = self.node_id.as_deref().filter(|n| !n.is_empty()) {
            parts.push(format!("node {n}"));
        }
        if let Some(ip) = self.tunnel_ip {
            parts.push(format!("tunnel ip {ip}"));
        }
        if let Some(o) = &self.owner {
            parts.push(format!("owner {o}"));
        }
        let verdict = if self.allowed { "allowed" } else { "denied" };
        if parts.is_empty() {
            format!("{verdict} ({})", self.reason)
        } else {
            format!("{verdict} ({}): {}", self.reason, parts.join(", "))
        }
    }

    fn bare(public_key: String, reason: AccessReason) -> Self {
        Decision {
            allowed: false,
            reason,
            public_key,
            token_id: None,
            node_id: None,
            owner: None,
            slot: None,
            tunnel_ip: None,
        }
    }

    fn from_view(key: &WgKey, view: &TokenView, reason: AccessReason) -> Self {
        let granted = reason.is_granted();
        let placement = view.placement.filter(|_| granted);
        Decision {
            allowed: granted,
            reason,
            public_key: key.to_base64(),
            token_id: Some(view.token_id),
            node_id: Some(view.node_id.clone()),
            owner: view.owner,
            slot: placement.map(|p| p.slot),
            tunnel_ip: placement.map(|p| p.tunnel_ip),
        }
    }
}

/// Decides for a valid key. When several tokens have it bound, the granted
/// one answers; otherwise the lowest token id (the registry orders them).
pub fn decide(registry: &Registry, key: &WgKey) -> Decision {
    match registry.lookup(key) {
        KeyLookup::Bound(views) => match views.first() {
            Some(v) => Decision::from_view(key, v, v.reason),
            None => Decision::bare(key.to_base64(), AccessReason::UnknownKey),
        },
        KeyLookup::Retired(r) => Decision {
            token_id: Some(r.token_id),
            node_id: Some(r.node_id),
            owner: r.owner,
            ..Decision::bare(key.to_base64(), r.reason)
        },
        // Never usable, bound or not (`WgKey::check_usable`).
        KeyLookup::Unknown if key.check_usable().is_err() => Decision::bare(key.to_base64(), AccessReason::InvalidKey),
        KeyLookup::Unknown => Decision::bare(key.to_base64(), AccessReason::UnknownKey),
    }
}

/// Decides for a key given as text (CLI, HTTP): malformed input is an
/// `invalid_key` answer, not an error.
pub fn decide_str(registry: &Registry, key: &str) -> Decision {
    match WgKey::parse(key.trim()) {
        Ok(k) => decide(registry, &k),
        Err(_) => Decision::bare(key.to_string(), AccessReason::InvalidKey),
    }
}
