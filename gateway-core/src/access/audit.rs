//! Audit records: one JSON line per grant, revoke, rekey, transfer, rejected
//! handshake and policy change (pure: building records; `audit_log` writes).
//! Records carry public keys and chain facts only; no secret ever reaches them.

use serde::{Deserialize, Serialize};

use super::decision::Decision;
use super::staleness::Staleness;
use crate::chain::{Address, ChainEvent, TokenId, TxHash};
use crate::time::rfc3339;
use crate::registry::{Admission, Effect, Outcome, AccessReason, TokenChange, TokenView};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Grant,
    Revoke,
    Rekey,
    Transfer,
    RejectedHandshake,
    PolicyChange,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC.
    pub time: String,
    pub action: AuditAction,
    pub reason: AccessReason,
    /// Whether the key named has access after this.
    pub access: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<TokenId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The key that lost access, on a rekey.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<TxHash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_number: Option<u64>,
    /// The UDP endpoint of a rejected handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditRecord {
    fn new(now: u64, action: AuditAction, reason: AccessReason, access: bool) -> Self {
        AuditRecord {
            time: rfc3339(now),
            action,
            reason,
            access,
            token_id: None,
            node_id: None,
            owner: None,
            public_key: None,
            previous_key: None,
            tx_hash: None,
            block_number: None,
            endpoint: None,
            detail: None,
        }
    }
}

/// The action a token's change amounts to, judged by its access alone;
/// `None` when nothing an operator audits changed (a reconcile confirming
/// what we had).
fn derived_action(change: &TokenChange) -> Option<AuditAction> {
    let before = change.before.as_ref();
    let was: Option<Admission> = before.and_then(TokenView::admission);
    let is = change.after.admission();
    match (was, is) {
        // The second half of a rekey whose log already unbound the old key.
        (None, Some(_)) if before.is_some_and(|b| b.reason == AccessReason::KeyRotated) => Some(AuditAction::Rekey),
        (None, Some(_)) => Some(AuditAction::Grant),
        (Some(_), None) if before.is_some_and(|b| b.owner != change.after.owner) => Some(AuditAction::Transfer),
        (Some(_), None) => Some(AuditAction::Revoke),
        (Some(a), Some(b)) if a.key != b.key => Some(AuditAction::Rekey),
        (Some(a), Some(b)) if a != b => Some(AuditAction::Grant),
        _ if before.is_some_and(|b| b.owner != change.after.owner) => Some(AuditAction::Transfer),
        _ => None,
    }
}

/// The records for one applied chain event. Replays and cursor moves make
/// none, so at-least-once delivery does not duplicate the log.
pub(crate) fn records_for_event(event: &ChainEvent, outcome: &Outcome, now: u64) -> Vec<AuditRecord> {
    let (own_action, tx_hash, block_number) = match event {
        ChainEvent::Granted { meta, .. } => (Some(AuditAction::Grant), Some(&meta.tx_hash), Some(meta.block_number)),
        ChainEvent::Revoked { meta, .. } => (Some(AuditAction::Revoke), Some(&meta.tx_hash), Some(meta.block_number)),
        ChainEvent::Transferred { meta, .. } => {
            (Some(AuditAction::Transfer), Some(&meta.tx_hash), Some(meta.block_number))
        }
        ChainEvent::KeyUpdated { meta, .. } => (Some(AuditAction::Rekey), Some(&meta.tx_hash), Some(meta.block_number)),
        ChainEvent::Snapshot { snapshot, .. } => (None, None, Some(snapshot.block_number)),
        ChainEvent::Synced { .. } | ChainEvent::Unavailable { .. } | ChainEvent::EndpointChecked { .. } => return Vec::new(),
    };
    match outcome.effect {
        Effect::Applied => {}
        Effect::AwaitingSnapshot => {
            let ChainEvent::KeyUpdated { owner, public_key, .. } = event else { return Vec::new() };
            let mut r = AuditRecord::new(now, AuditAction::Rekey, AccessReason::KeyRotated, false);
            r.owner = Some(*owner);
            r.public_key = Some(public_key.clone());
            r.tx_hash = tx_hash.copied();
            r.block_number = block_number;
            r.detail = Some("token not identifiable from the log; the re-read that binds the key names it, with this transaction".into());
            return vec![r];
        }
        Effect::Stale | Effect::Synced | Effect::Alive | Effect::Unavailable => return Vec::new(),
    }
    let mut records = Vec::new();
    for (i, change) in outcome.changes.iter().enumerate() {
        let is_own = i == 0;
        let action = match (is_own, own_action) {
            (true, Some(a)) => a,
            _ => match derived_action(change) {
                Some(a) => a,
                None => continue,
            },
        };
        let after = &change.after;
        let before_key = change.before.as_ref().and_then(|b| b.key);
        let mut r = AuditRecord::new(now, action, after.reason, after.is_granted());
        r.token_id = Some(after.token_id);
        r.node_id = Some(after.node_id.clone());
        r.owner = after.owner;
        r.public_key = after.key.or(before_key).map(|k| k.to_base64());
        r.previous_key = before_key.filter(|k| Some(*k) != after.key && after.key.is_some()).map(|k| k.to_base64());
        r.tx_hash = tx_hash.copied();
        r.block_number = block_number;
        if let (true, Some(log)) = (is_own, outcome.key_update) {
            // The re-read that completes a key update whose log named no token.
            r.tx_hash = Some(log.tx_hash);
            r.block_number = Some(log.block_number);
            r.detail = Some("the key update of this transaction, read back from the token".into());
        } else if !is_own {
            r.detail = Some("standing changed through a key shared with the event's token".into());
        } else if let Some(Err(weak)) = after.key.filter(|_| after.reason == AccessReason::InvalidKey).map(|k| k.check_usable()) {
            r.detail = Some(weak.to_string());
        }
        records.push(r);
    }
    records
}

/// A handshake initiation the data plane refused, with the endpoint it came from.
pub(crate) fn rejected_handshake(decision: &Decision, endpoint: std::net::SocketAddr, now: u64) -> AuditRecord {
    let mut r = AuditRecord::new(now, AuditAction::RejectedHandshake, decision.reason, false);
    r.token_id = decision.token_id;
    r.node_id = decision.node_id.clone();
    r.owner = decision.owner;
    r.public_key = Some(decision.public_key.clone());
    r.endpoint = Some(endpoint.to_string());
    r
}

/// The staleness policy began or stopped withholding grants, or the operator
/// changed it.
pub fn policy_change(staleness: &Staleness, withholding: bool, last_sync: Option<u64>, now: u64) -> AuditRecord {
    let reason = if withholding { AccessReason::ChainUnavailable } else { AccessReason::Granted };
    let mut r = AuditRecord::new(now, AuditAction::PolicyChange, reason, !withholding);
    let since = last_sync.map(rfc3339).unwrap_or_else(|| "never".into());
    r.detail = Some(format!(
        "policy {}, max age {} s, last sync {since}: grants {}",
        staleness.policy.as_str(),
        staleness.max_age_secs,
        if withholding { "withheld" } else { "served" }
    ));
    r
}
