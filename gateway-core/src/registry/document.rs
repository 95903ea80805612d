//! The registry's JSON document, format version "2.0": the seed's fields per
//! peer plus what a restart needs to resume (chain position per token, the
//! cursor, retired keys). Pure conversion both ways; `store` does the file I/O.

use serde::{Deserialize, Serialize};

use super::key::{validate_node_id, WgKey};
use super::network::Network;
use super::reason::AccessReason;
use super::state::{ChainPosition, Registry, Retired, TokenRecord, Unbind};
use crate::chain::{Address, Cursor, TokenId, TxHash};
use crate::time::{parse_rfc3339, rfc3339};

/// The only format this build reads and writes.
pub const FORMAT_VERSION: &str = "2.0";

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryDocument {
    pub version: String,
    pub contract_address: Address,
    pub network: Network,
    /// RFC 3339; `null` before the first sync.
    #[serde(default)]
    pub last_sync: Option<String>,
    /// The follower resumes after this block.
    #[serde(default)]
    pub cursor: Option<Cursor>,
    pub peers: Vec<PeerEntry>,
    /// Keys that left a token, so `access check` can still say why.
    #[serde(default)]
    pub retired_keys: Vec<RetiredEntry>,
}

/// One token. The first ten fields are the seed's; `ip_address`, `hostname`,
/// `instance_id`, `access_granted` and `status` are derived and rewritten on
/// every save, the rest is chain data read back on load. The fields after
/// `status` are ours and optional, so a "2.0" file the seed wrote loads too
/// (its tokens at chain position zero: every chain fact overrides them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    pub node_id: String,
    /// As on chain; empty when unbound.
    pub public_key: String,
    /// `null` when the token has no place in the network.
    pub ip_address: Option<String>,
    pub hostname: String,
    pub instance_id: String,
    /// `null` (or an empty string, as the seed may write) when there is none.
    #[serde(default, deserialize_with = "optional_address")]
    pub nft_owner: Option<Address>,
    pub access_granted: bool,
    /// A number; the seed sometimes wrote a decimal string, which is read too.
    #[serde(with = "token_id_repr")]
    pub token_id: TokenId,
    #[serde(default)]
    pub last_verified: String,
    /// `active` when granted, otherwise the reason (`revoked`, `unbound_after_transfer`, ...).
    #[serde(default)]
    pub status: String,
    /// The contract's `isActive`; absent in seed files (then `status == "active"`).
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default = "yes")]
    pub confirmed: bool,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub unbound_by: Option<Unbind>,
    #[serde(default)]
    pub slot: Option<u32>,
    #[serde(default)]
    pub chain_position: ChainPosition,
    #[serde(default)]
    pub last_tx_hash: Option<TxHash>,
}

fn yes() -> bool {
    true
}

fn optional_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) if text.trim().is_empty() => Ok(None),
        Some(text) => Address::parse(&text).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Token ids as JSON numbers where they fit `u64` (every JSON reader gets
/// them right), as decimal strings beyond; both forms are read.
mod token_id_repr {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::chain::TokenId;

    pub(super) fn serialize<S: Serializer>(t: &TokenId, s: S) -> Result<S::Ok, S::Error> {
        match u64::try_from(*t) {
            Ok(small) => s.serialize_u64(small),
            Err(_) => s.serialize_str(&t.to_string()),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(u64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TokenId, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(n) => Ok(TokenId::from(n)),
            Repr::Text(s) => s.trim().parse().map_err(|_| serde::de::Error::custom(format!("token id {s:?}"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FlatRetired", into = "FlatRetired")]
pub struct RetiredEntry {
    pub public_key: WgKey,
    pub retired: Retired,
}

/// A retired entry as it lies in the file, one flat object. Spelled out
/// rather than `#[serde(flatten)]`: serde buffers flattened fields in a form
/// that has no 128-bit integers, so every file holding a retired key (any
/// transfer or rekey) failed to load with "u128 is not supported".
#[derive(Serialize, Deserialize)]
struct FlatRetired {
    public_key: WgKey,
    #[serde(with = "token_id_repr")]
    token_id: TokenId,
    reason: AccessReason,
    node_id: String,
    #[serde(default)]
    owner: Option<Address>,
}

impl From<FlatRetired> for RetiredEntry {
    fn from(f: FlatRetired) -> Self {
        RetiredEntry {
            public_key: f.public_key,
            retired: Retired { token_id: f.token_id, reason: f.reason, node_id: f.node_id, owner: f.owner },
        }
    }
}

impl From<RetiredEntry> for FlatRetired {
    fn from(e: RetiredEntry) -> Self {
        let Retired { token_id, reason, node_id, owner } = e.retired;
        FlatRetired { public_key: e.public_key, token_id, reason, node_id, owner }
    }
}

/// Why a document cannot become a registry.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("registry format version {found:?}, this gateway reads only {FORMAT_VERSION:?}")]
    Version { found: String },
    #[error("registry belongs to contract {found}, the gateway is configured for {expected}")]
    Contract { found: Address, expected: Address },
    #[error("token {token_id}: bad timestamp {value:?} in field {field}")]
    Timestamp { token_id: TokenId, field: &'static str, value: String },
    #[error("token {0} appears twice")]
    DuplicateToken(TokenId),
}

/// The seed's hostname rule (`<node_id>.vpn.dstack` by default); empty for
/// a node id that is not a DNS label, so chain garbage never reaches a
/// resolver's configuration.
pub fn hostname(node_id: &str, domain: &str) -> String {
    // The contract allows 64 bytes; a DNS label stops at 63.
    if validate_node_id(node_id).is_err() || node_id.len() > 63 {
        return String::new();
    }
    format!("{node_id}.{domain}")
}

/// The seed's instance id rule (empty like the hostname for bad node ids).
pub(crate) fn instance_id(node_id: &str) -> String {
    if validate_node_id(node_id).is_err() {
        return String::new();
    }
    format!("dstack-{node_id}")
}

impl Registry {
    /// The document to persist.
    pub fn to_document(&self) -> RegistryDocument {
        let peers = self
            .tokens
            .values()
            .map(|rec| {
                let view = self.view_of(rec);
                PeerEntry {
                    node_id: rec.node_id.clone(),
                    public_key: rec.public_key.clone(),
                    ip_address: view.placement.map(|p| p.tunnel_ip.to_string()),
                    hostname: hostname(&rec.node_id, &self.domain),
                    instance_id: instance_id(&rec.node_id),
                    nft_owner: rec.owner,
                    access_granted: view.is_granted(),
                    token_id: rec.token_id,
                    last_verified: rfc3339(rec.last_verified),
                    status: if view.is_granted() { "active".into() } else { view.reason.as_str().into() },
                    is_active: Some(rec.is_active),
                    confirmed: rec.confirmed,
                    created_at: rec.created_at.map(rfc3339),
                    unbound_by: rec.unbound_by,
                    slot: view.placement.map(|p| p.slot.0),
                    chain_position: rec.position,
                    last_tx_hash: rec.last_tx_hash,
                }
            })
            .collect();
        let retired_keys = self
            .retired
            .iter()
            .map(|(k, r)| RetiredEntry { public_key: *k, retired: r.clone() })
            .collect();
        RegistryDocument {
            version: FORMAT_VERSION.to_string(),
            contract_address: self.contract_address,
            network: self.network,
            last_sync: self.last_sync.map(rfc3339),
            cursor: self.cursor,
            peers,
            retired_keys,
        }
    }

    /// Rebuilds a registry from its document. The configured network wins
    /// over the stored one (addresses are derived, so a new CIDR just moves
    /// them); a document for another contract is refused.
    pub fn from_document(
        doc: RegistryDocument,
        contract_address: Address,
        network: Network,
    ) -> Result<Registry, DocumentError> {
        if doc.version != FORMAT_VERSION {
            return Err(DocumentError::Version { found: doc.version });
        }
        if doc.contract_address != contract_address {
            return Err(DocumentError::Contract { found: doc.contract_address, expected: contract_address });
        }
        let mut reg = Registry::new(doc.contract_address, network);
        reg.cursor = doc.cursor;
        reg.last_sync = match doc.last_sync {
            Some(s) => Some(parse_rfc3339(&s).ok_or(DocumentError::Timestamp {
                token_id: 0,
                field: "last_sync",
                value: s,
            })?),
            None => None,
        };
        for p in doc.peers {
            if reg.tokens.contains_key(&p.token_id) {
                return Err(DocumentError::DuplicateToken(p.token_id));
            }
            let ts = |field: &'static str, value: &str| {
                parse_rfc3339(value).ok_or_else(|| DocumentError::Timestamp {
                    token_id: p.token_id,
                    field,
                    value: value.to_string(),
                })
            };
            let last_verified = if p.last_verified.is_empty() { 0 } else { ts("last_verified", &p.last_verified)? };
            let created_at = match &p.created_at {
                Some(c) => Some(ts("created_at", c)?),
                None => None,
            };
            reg.store(TokenRecord {
                token_id: p.token_id,
                node_id: p.node_id,
                public_key: p.public_key,
                owner: p.nft_owner,
                is_active: p.is_active.unwrap_or(p.status == "active"),
                confirmed: p.confirmed,
                created_at,
                unbound_by: p.unbound_by,
                position: p.chain_position,
                last_tx_hash: p.last_tx_hash,
                last_verified,
            });
        }
        for r in doc.retired_keys {
            reg.retired.insert(r.public_key, r.retired);
        }
        Ok(reg)
    }
}
