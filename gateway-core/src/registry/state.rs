//! The peer registry: what the chain says about every token we have seen,
//! fed by `ChainEvent`s, with each token's derived standing (pure; `now` is a
//! parameter, nothing here reads a clock or a file).
//!
//! Rules that are ours, not the contract's:
//! - **Idempotence and order.** Every token remembers the chain position
//!   (block, log index) of the last fact applied to it; an event at or before
//!   that position is a replay or arrived out of order (a revoke is delivered
//!   at first sight, the grant before it only after N confirmations) and is
//!   ignored. A snapshot counts as the end of its block. A snapshot caused by
//!   a reorg replaces the token unconditionally: the positions it would be
//!   compared with may belong to the abandoned fork. The follower must
//!   therefore send reorg snapshots only when it detects the reorg and never
//!   replay them (logs and other snapshots may be replayed freely): a stale
//!   reorg snapshot would win over newer facts until they are re-delivered.
//! - **`KeyUpdated` names no token.** If the owner holds exactly one token
//!   here, its old key is unbound at once (a rekey must remove the old key
//!   immediately) and the new key waits for the snapshot the follower sends
//!   next. If the owner holds several, nothing changes until those snapshots:
//!   unbinding all of them would tear down the owner's other, unchanged peers.
//!   When any token already holds a later chain position (a replay), the
//!   log counts as stale: who owned what at its time is unknown, and the
//!   snapshots that accompany it carry its effect anyway.
//! - **One key on two live tokens** (the seed contract does not enforce
//!   uniqueness): the lowest token id wins, the others are denied with
//!   `duplicate_key`. Every gateway picks the same winner, and the key is only
//!   ever granted under a token that has it bound.
//! - **Events for unknown tokens** never grant: a revoke records an inactive
//!   tombstone (so the late grant behind it stays ignored), a transfer records
//!   an unconfirmed placeholder (`unknown_token`) until a snapshot arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::key::{validate_node_id, WgKey};
use super::network::{Network, PeerSlot, Placement, PlacementError};
use super::reason::AccessReason;
use crate::chain::{Address, ChainEvent, Cursor, LogMeta, SnapshotCause, TokenId, TokenSnapshot, TxHash};

/// The seed's hostname suffix.
pub(crate) const DEFAULT_DOMAIN: &str = "vpn.dstack";

/// Where in the chain a fact comes from; ordered like the chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChainPosition {
    pub block_number: u64,
    pub log_index: u64,
}

impl ChainPosition {
    fn of_log(meta: &LogMeta) -> Self {
        ChainPosition { block_number: meta.block_number, log_index: meta.log_index }
    }

    /// State read at the end of a block comes after every log in it.
    fn end_of_block(block_number: u64) -> Self {
        ChainPosition { block_number, log_index: u64::MAX }
    }
}

/// Why a token's key is empty, when the registry saw it happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unbind {
    Transfer,
    Rekey,
}

/// What the chain says about one token, as last learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_id: TokenId,
    pub node_id: String,
    /// Exactly as stored on chain; empty when unbound; may be malformed.
    pub public_key: String,
    pub owner: Option<Address>,
    pub is_active: bool,
    /// False for placeholders made from events that assume an unseen grant.
    pub confirmed: bool,
    pub created_at: Option<u64>,
    pub unbound_by: Option<Unbind>,
    pub position: ChainPosition,
    pub last_tx_hash: Option<TxHash>,
    /// Unix seconds when a chain fact about this token was last applied.
    pub last_verified: u64,
}

/// A key that left a token, remembered so a later lookup can say why. The
/// token's node id and owner are those of the moment the key left, so the
/// answer does not change when the token moves on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub token_id: TokenId,
    pub reason: AccessReason,
    pub node_id: String,
    pub owner: Option<Address>,
}

/// A token as the rest of the gateway sees it: the record plus its standing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenView {
    pub token_id: TokenId,
    pub node_id: String,
    pub owner: Option<Address>,
    /// The bound key, when it parses.
    pub key: Option<WgKey>,
    pub reason: AccessReason,
    /// Slot and tunnel IP, when the token's id has a place in the network.
    pub placement: Option<Placement>,
}

impl TokenView {
    pub fn is_granted(&self) -> bool {
        self.reason.is_granted()
    }

    /// The key, slot and address of a granted token.
    pub fn admission(&self) -> Option<Admission> {
        match (self.reason, self.key, self.placement) {
            (AccessReason::Granted, Some(key), Some(p)) => {
                Some(Admission { key, slot: p.slot, tunnel_ip: p.tunnel_ip, token_id: self.token_id })
            }
            _ => None,
        }
    }
}

/// A peer the chain admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub token_id: TokenId,
    pub key: WgKey,
    pub slot: PeerSlot,
    pub tunnel_ip: Ipv4Addr,
}

/// What applying one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The event changed (or confirmed) token state.
    Applied,
    /// A replay or an out-of-order event older than what the token holds.
    Stale,
    /// A `KeyUpdated` that could not be pinned to one token; the follower's
    /// snapshots that come next carry the change.
    AwaitingSnapshot,
    /// The cursor moved (`Synced`).
    Synced,
    /// A `Synced` at the cursor we hold: the follower is caught up and the
    /// chain answers, so the state is fresh, but nothing needs saving.
    Alive,
    /// The follower reached no RPC endpoint; the registry is unchanged.
    Unavailable,
}

/// One token before and after an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenChange {
    /// `None` when the token was unknown before.
    pub before: Option<TokenView>,
    pub after: TokenView,
}

impl TokenChange {
    #[cfg(test)]
    pub(crate) fn access_changed(&self) -> bool {
        let before = self.before.as_ref().and_then(TokenView::admission);
        before != self.after.admission()
    }
}

/// The result of [`Registry::apply`]: enough for the audit log, the access
/// cache and the planner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub effect: Effect,
    /// The event's own token first (when it names one and was applied),
    /// then other tokens whose standing changed as a consequence, by id.
    pub changes: Vec<TokenChange>,
    /// Every key whose decision may have changed: drop them from caches.
    pub touched_keys: BTreeSet<WgKey>,
    /// The `KeyUpdated` log a snapshot completes: it binds the key that log
    /// named, on a token the log could not name.
    pub key_update: Option<KeyUpdateLog>,
}

impl Outcome {
    fn bare(effect: Effect) -> Self {
        Outcome { effect, changes: Vec::new(), touched_keys: BTreeSet::new(), key_update: None }
    }
}

/// A `KeyUpdated` log applied as [`Effect::AwaitingSnapshot`], remembered
/// until a snapshot binds its key to one of the owner's tokens, so that the
/// audit record of that snapshot names both the token and the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyUpdateLog {
    pub tx_hash: TxHash,
    pub block_number: u64,
}

/// Key updates awaiting their snapshot, at most; the oldest goes first. The
/// follower re-reads within a pass, so more means lost or stale snapshots,
/// whose records then carry no transaction.
const MAX_AWAITED_KEY_UPDATES: usize = 1024;

/// What a key lookup finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyLookup {
    /// Tokens that have the key bound, by id (the granted one first if any).
    Bound(Vec<TokenView>),
    /// No token has it bound now; it left a token for this reason.
    Retired(Retired),
    Unknown,
}

/// The peer registry.
#[derive(Clone, Debug)]
pub struct Registry {
    pub(super) contract_address: Address,
    pub(super) network: Network,
    /// Hostname suffix (`<node_id>.<domain>`), configuration only.
    pub(super) domain: String,
    pub(super) tokens: BTreeMap<TokenId, TokenRecord>,
    /// Valid bound keys -> tokens that have them bound (any standing).
    pub(super) by_key: BTreeMap<WgKey, BTreeSet<TokenId>>,
    pub(super) retired: BTreeMap<WgKey, Retired>,
    pub(super) cursor: Option<Cursor>,
    pub(super) last_sync: Option<u64>,
    /// (owner, key) of `KeyUpdated` logs awaiting their snapshot. Transient:
    /// not saved (after a restart the follower replays the log: the held
    /// re-read keeps the cursor before it) and not compared.
    pub(super) awaited_key_updates: BTreeMap<(Address, String), KeyUpdateLog>,
}

/// Two registries are equal when they hold the same chain facts, whatever
/// key updates they still await (bookkeeping for audit records only).
impl PartialEq for Registry {
    fn eq(&self, other: &Self) -> bool {
        self.contract_address == other.contract_address
            && self.network == other.network
            && self.domain == other.domain
            && self.tokens == other.tokens
            && self.by_key == other.by_key
            && self.retired == other.retired
            && self.cursor == other.cursor
            && self.last_sync == other.last_sync
    }
}

impl Eq for Registry {}

impl Registry {
    pub fn new(contract_address: Address, network: Network) -> Self {
        Registry {
            contract_address,
            network,
            domain: DEFAULT_DOMAIN.to_string(),
            tokens: BTreeMap::new(),
            by_key: BTreeMap::new(),
            retired: BTreeMap::new(),
            cursor: None,
            last_sync: None,
            awaited_key_updates: BTreeMap::new(),
        }
    }

    /// Sets the hostname suffix (`[network] domain`); derived names only.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into();
        self
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn contract_address(&self) -> Address {
        self.contract_address
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor
    }

    /// Unix seconds of the last `Synced` event: the age of our chain state.
    pub fn last_sync(&self) -> Option<u64> {
        self.last_sync
    }

    pub fn record(&self, token_id: TokenId) -> Option<&TokenRecord> {
        self.tokens.get(&token_id)
    }

    pub fn view(&self, token_id: TokenId) -> Option<TokenView> {
        self.tokens.get(&token_id).map(|r| self.view_of(r))
    }

    /// Every token's view, by token id.
    pub fn views(&self) -> impl Iterator<Item = TokenView> + '_ {
        self.tokens.values().map(|r| self.view_of(r))
    }

    /// The admitted peers by slot: the desired peer set.
    pub fn admitted(&self) -> BTreeMap<PeerSlot, Admission> {
        self.views().filter_map(|v| v.admission()).map(|a| (a.slot, a)).collect()
    }

    /// Every token that has `key` bound, or why it has none.
    pub fn lookup(&self, key: &WgKey) -> KeyLookup {
        if let Some(ids) = self.by_key.get(key) {
            let mut views: Vec<TokenView> = ids.iter().filter_map(|t| self.view(*t)).collect();
            views.sort_by_key(|v| (!v.is_granted(), v.token_id));
            if !views.is_empty() {
                return KeyLookup::Bound(views);
            }
        }
        match self.retired.get(key) {
            Some(r) => KeyLookup::Retired(r.clone()),
            None => KeyLookup::Unknown,
        }
    }

    /// Applies one chain event. Safe to call again with the same event
    /// (at-least-once delivery): a replay comes back as [`Effect::Stale`].
    pub fn apply(&mut self, event: &ChainEvent, now: u64) -> Outcome {
        match event {
            ChainEvent::Granted { token_id, node_id, owner, public_key, meta } => {
                let pos = ChainPosition::of_log(meta);
                let new_key = WgKey::parse(public_key).ok();
                self.update_token(*token_id, pos, false, new_key, now, |prev, t| {
                    let mut rec = prev.cloned().unwrap_or_else(|| blank(t));
                    rec.node_id = node_id.clone();
                    rec.owner = Some(*owner);
                    rec.public_key = public_key.clone();
                    rec.is_active = true;
                    rec.confirmed = true;
                    rec.unbound_by = None;
                    rec.last_tx_hash = Some(meta.tx_hash);
                    let retire = changed_key(prev, public_key).map(|k| (k, AccessReason::KeyRotated));
                    (rec, retire)
                })
            }
            ChainEvent::Revoked { token_id, node_id, meta } => {
                let pos = ChainPosition::of_log(meta);
                self.update_token(*token_id, pos, false, None, now, |prev, t| {
                    let mut rec = prev.cloned().unwrap_or_else(|| {
                        // A tombstone: whatever grant is still in flight for
                        // this token is older and will be ignored.
                        let mut r = blank(t);
                        r.node_id = node_id.clone();
                        r.confirmed = true;
                        r
                    });
                    rec.is_active = false;
                    rec.last_tx_hash = Some(meta.tx_hash);
                    (rec, None)
                })
            }
            ChainEvent::Transferred { token_id, to, meta, .. } => {
                // ERC-721's `Transfer` and `NodeAccessTransferred` of one
                // transfer (the reference contract logs both): the second
                // changes nothing and is not logged twice.
                let owner = Some(*to).filter(|a| !a.is_zero());
                let replay = self.tokens.get(token_id).is_some_and(|r| {
                    r.owner == owner && r.public_key.is_empty() && r.unbound_by == Some(Unbind::Transfer) && r.last_tx_hash == Some(meta.tx_hash)
                });
                if replay {
                    return Outcome::bare(Effect::Stale);
                }
                let pos = ChainPosition::of_log(meta);
                self.update_token(*token_id, pos, false, None, now, |prev, t| {
                    let mut rec = prev.cloned().unwrap_or_else(|| blank(t));
                    let retire = changed_key(prev, "").map(|k| (k, AccessReason::UnboundAfterTransfer));
                    rec.unbound_by = Some(Unbind::Transfer);
                    // A transfer to the zero address is a burn.
                    rec.owner = Some(*to).filter(|a| !a.is_zero());
                    rec.public_key.clear();
                    rec.last_tx_hash = Some(meta.tx_hash);
                    (rec, retire)
                })
            }
            ChainEvent::KeyUpdated { owner, public_key, meta } => {
                let pos = ChainPosition::of_log(meta);
                // Ownership is only known as of each token's own position: a
                // token already ahead of this log may have belonged to this
                // owner at the time. That is a replay (nothing to do) or a
                // late delivery, whose effect the snapshots sent with it carry.
                if self.tokens.values().any(|r| r.position >= pos) {
                    return Outcome::bare(Effect::Stale);
                }
                let owned: Vec<TokenId> = self
                    .tokens
                    .values()
                    .filter(|r| r.owner == Some(*owner))
                    .map(|r| r.token_id)
                    .collect();
                let [token_id] = owned[..] else {
                    self.await_key_update(*owner, public_key, meta);
                    return Outcome::bare(Effect::AwaitingSnapshot);
                };
                if self.tokens.get(&token_id).is_some_and(|r| r.public_key == *public_key) {
                    return Outcome::bare(Effect::Stale);
                }
                self.update_token(token_id, pos, false, None, now, |prev, t| {
                    let mut rec = prev.cloned().unwrap_or_else(|| blank(t));
                    let retire = changed_key(prev, "").map(|k| (k, AccessReason::KeyRotated));
                    // An already unbound key (after a transfer) keeps its reason.
                    if !rec.public_key.is_empty() {
                        rec.unbound_by = Some(Unbind::Rekey);
                    }
                    rec.public_key.clear();
                    rec.last_tx_hash = Some(meta.tx_hash);
                    (rec, retire)
                })
            }
            ChainEvent::Snapshot { snapshot, cause } => self.apply_snapshot(snapshot, *cause, now),
            ChainEvent::Synced { block_number, block_hash, .. } => {
                let cursor = Cursor { block_number: *block_number, block_hash: *block_hash };
                self.last_sync = Some(now);
                if self.cursor.as_ref() == Some(&cursor) {
                    return Outcome::bare(Effect::Alive);
                }
                self.cursor = Some(cursor);
                Outcome::bare(Effect::Synced)
            }
            ChainEvent::Unavailable { .. } => Outcome::bare(Effect::Unavailable),
            // About an endpoint, not a token (the daemon's readiness reads it).
            ChainEvent::EndpointChecked { .. } => Outcome::bare(Effect::Stale),
        }
    }

    fn await_key_update(&mut self, owner: Address, public_key: &str, meta: &LogMeta) {
        let log = KeyUpdateLog { tx_hash: meta.tx_hash, block_number: meta.block_number };
        self.awaited_key_updates.insert((owner, public_key.to_string()), log);
        if self.awaited_key_updates.len() > MAX_AWAITED_KEY_UPDATES {
            let oldest = self.awaited_key_updates.iter().min_by_key(|(_, l)| l.block_number).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.awaited_key_updates.remove(&oldest);
            }
        }
    }

    fn apply_snapshot(&mut self, snap: &TokenSnapshot, cause: SnapshotCause, now: u64) -> Outcome {
        let mut outcome = self.apply_snapshot_state(snap, cause, now);
        if let (Effect::Applied, Some(owner)) = (outcome.effect, snap.owner) {
            outcome.key_update = self.awaited_key_updates.remove(&(owner, snap.public_key.clone()));
        }
        outcome
    }

    fn apply_snapshot_state(&mut self, snap: &TokenSnapshot, cause: SnapshotCause, now: u64) -> Outcome {
        let pos = ChainPosition::end_of_block(snap.block_number);
        let new_key = WgKey::parse(&snap.public_key).ok();
        let force = cause == SnapshotCause::Reorg;
        self.update_token(snap.token_id, pos, force, new_key, now, |prev, t| {
            // A reorg snapshot is a clean reset: nothing of the old fork's
            // history explains the new state.
            let prev = if force { None } else { prev };
            let owner_changed = prev.is_some_and(|p| p.owner != snap.owner);
            let why_gone = if owner_changed { AccessReason::UnboundAfterTransfer } else { AccessReason::KeyRotated };
            let retire = changed_key(prev, &snap.public_key).map(|k| (k, why_gone));
            let unbound_by = if !snap.public_key.is_empty() {
                None
            } else if prev.is_some_and(|p| !p.public_key.is_empty()) {
                Some(if owner_changed { Unbind::Transfer } else { Unbind::Rekey })
            } else if owner_changed {
                Some(Unbind::Transfer)
            } else {
                prev.and_then(|p| p.unbound_by)
            };
            let rec = TokenRecord {
                token_id: t,
                node_id: snap.node_id.clone(),
                public_key: snap.public_key.clone(),
                owner: snap.owner,
                is_active: snap.is_active,
                confirmed: true,
                created_at: Some(snap.created_at),
                unbound_by,
                position: ChainPosition::default(),
                last_tx_hash: prev.and_then(|p| p.last_tx_hash),
                last_verified: 0,
            };
            (rec, retire)
        })
    }

    /// Replaces one token's record with `build(previous)` unless the event is
    /// older than what the token holds, and reports every token whose
    /// standing moved (tokens sharing the old or new key included).
    fn update_token(
        &mut self,
        token_id: TokenId,
        pos: ChainPosition,
        force: bool,
        incoming_key: Option<WgKey>,
        now: u64,
        build: impl FnOnce(Option<&TokenRecord>, TokenId) -> (TokenRecord, Option<(WgKey, AccessReason)>),
    ) -> Outcome {
        let prev = self.tokens.get(&token_id);
        if !force && prev.is_some_and(|p| pos <= p.position) {
            return Outcome::bare(Effect::Stale);
        }
        let mut keys: BTreeSet<WgKey> = incoming_key.into_iter().collect();
        keys.extend(prev.and_then(|p| WgKey::parse(&p.public_key).ok()));
        let mut affected: BTreeSet<TokenId> = BTreeSet::from([token_id]);
        for k in &keys {
            affected.extend(self.by_key.get(k).into_iter().flatten());
        }
        let before: BTreeMap<TokenId, TokenView> =
            affected.iter().filter_map(|t| self.view(*t).map(|v| (*t, v))).collect();

        let prev_identity = prev.map(|p| (p.node_id.clone(), p.owner));
        let (mut rec, retire) = build(prev, token_id);
        rec.position = pos;
        rec.last_verified = now;
        self.store(rec);
        if let Some((k, reason)) = retire {
            // Only a key bound nowhere is retired; a duplicate still bound
            // elsewhere is answered by that token.
            if !self.by_key.contains_key(&k) {
                let (node_id, owner) = prev_identity.unwrap_or_default();
                self.retired.insert(k, Retired { token_id, reason, node_id, owner });
            }
        }

        let mut changes = Vec::new();
        let mut touched = BTreeSet::new();
        // The event's own token first, then the others it shadowed or freed.
        let order = std::iter::once(token_id).chain(affected.iter().copied().filter(|t| *t != token_id));
        for t in order {
            let Some(after) = self.view(t) else { continue };
            let before = before.get(&t).cloned();
            if t != token_id && before.as_ref() == Some(&after) {
                continue;
            }
            touched.extend(before.as_ref().and_then(|v| v.key));
            touched.extend(after.key);
            changes.push(TokenChange { before, after });
        }
        Outcome { effect: Effect::Applied, changes, touched_keys: touched, key_update: None }
    }

    /// Inserts or replaces a record, keeping the key index in step.
    pub(super) fn store(&mut self, rec: TokenRecord) {
        let t = rec.token_id;
        if let Some(old) = self.tokens.get(&t).and_then(|p| WgKey::parse(&p.public_key).ok()) {
            if let Some(set) = self.by_key.get_mut(&old) {
                set.remove(&t);
                if set.is_empty() {
                    self.by_key.remove(&old);
                }
            }
        }
        if let Ok(k) = WgKey::parse(&rec.public_key) {
            // Bound again: its retirement is history, not the answer.
            self.retired.remove(&k);
            self.by_key.entry(k).or_default().insert(t);
        }
        self.tokens.insert(t, rec);
    }

    /// The token's standing before the duplicate-key rule.
    fn own_reason(&self, r: &TokenRecord) -> AccessReason {
        if !r.confirmed {
            return AccessReason::UnknownToken;
        }
        if !r.is_active {
            return AccessReason::Revoked;
        }
        if r.owner.is_none() {
            return AccessReason::NoOwner;
        }
        if r.public_key.is_empty() {
            return match r.unbound_by {
                Some(Unbind::Transfer) => AccessReason::UnboundAfterTransfer,
                Some(Unbind::Rekey) => AccessReason::KeyRotated,
                None => AccessReason::Unbound,
            };
        }
        // Malformed, or well-formed but a low-order point (`KeyError::LowOrder`).
        if WgKey::parse_usable(&r.public_key).is_err() {
            return AccessReason::InvalidKey;
        }
        if validate_node_id(&r.node_id).is_err() {
            return AccessReason::InvalidNodeId;
        }
        match self.network.place(r.token_id) {
            Ok(_) => AccessReason::Granted,
            Err(PlacementError::NetworkFull) => AccessReason::NetworkFull,
            Err(PlacementError::Reserved) => AccessReason::ReservedAddress,
        }
    }

    pub(super) fn view_of(&self, r: &TokenRecord) -> TokenView {
        let key = WgKey::parse(&r.public_key).ok();
        let mut reason = self.own_reason(r);
        if reason.is_granted() {
            let winner = key.and_then(|k| self.by_key.get(&k)).and_then(|ids| {
                ids.iter().copied().find(|t| self.tokens.get(t).is_some_and(|o| self.own_reason(o).is_granted()))
            });
            if winner != Some(r.token_id) {
                reason = AccessReason::DuplicateKey;
            }
        }
        TokenView {
            token_id: r.token_id,
            node_id: r.node_id.clone(),
            owner: r.owner,
            key,
            reason,
            placement: self.network.place(r.token_id).ok(),
        }
    }
}

/// A record for a token first heard of through an event that is not a grant.
fn blank(token_id: TokenId) -> TokenRecord {
    TokenRecord {
        token_id,
        node_id: String::new(),
        public_key: String::new(),
        owner: None,
        is_active: false,
        confirmed: false,
        created_at: None,
        unbound_by: None,
        position: ChainPosition::default(),
        last_tx_hash: None,
        last_verified: 0,
    }
}

/// The previous valid key, if the token is about to lose it.
fn changed_key(prev: Option<&TokenRecord>, new_raw: &str) -> Option<WgKey> {
    let prev = prev?;
    if prev.public_key == new_raw {
        return None;
    }
    WgKey::parse(&prev.public_key).ok()
}
