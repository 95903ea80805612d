//! Holds grants back until they have the configured confirmations, while
//! revocations, transfers and rekeys pass at first sight (pure).
//!
//! Two kinds of entries wait here, in chain order: a grant log, delivered as
//! it is once confirmed, and a re-read of a token whose log (a rekey) named
//! a new key: the new key is a grant too, so the token is re-read only once
//! that log is confirmed. A held grant that a later event touched (revoked,
//! transferred, rekeyed) is not released as the original `Granted`: its log
//! no longer describes the token, so the follower re-reads the token instead.

use std::collections::BTreeMap;

use super::event::{ChainEvent, SnapshotCause};
use super::ids::{Address, TokenId};

/// What to do with an entry whose confirmations are complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// Deliver the grant as logged.
    Grant(ChainEvent),
    /// Re-read the token and deliver a snapshot.
    Reread(TokenId, SnapshotCause),
}

#[derive(Clone, Debug)]
enum Held {
    Grant { event: ChainEvent, touched: bool },
    Reread(SnapshotCause),
}

/// Entries waiting for confirmations, in chain order.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeldGrants {
    /// Keyed by (block number, log index, token): chain order.
    held: BTreeMap<(u64, u64, TokenId), Held>,
}

/// A log in block `block` has `head - block + 1` confirmations once `head` is
/// mined; `required` = 0 and 1 both mean "as soon as it is in a block".
pub(crate) fn is_confirmed(block: u64, head: u64, required: u64) -> bool {
    head.saturating_add(1) >= block.saturating_add(required.max(1))
}

/// The highest block whose logs are confirmed at `head`: the state a grant
/// is read at (`head` itself for 0 or 1 confirmations).
pub(crate) fn confirmed_height(head: u64, required: u64) -> u64 {
    head.saturating_add(1).saturating_sub(required.max(1))
}

impl HeldGrants {
    pub(crate) fn hold(&mut self, token_id: TokenId, block: u64, log_index: u64, event: ChainEvent) {
        self.held.insert((block, log_index, token_id), Held::Grant { event, touched: false });
    }

    /// `token_id` is to be re-read once the log at (`block`, `log_index`) is confirmed.
    pub(crate) fn hold_reread(&mut self, token_id: TokenId, block: u64, log_index: u64, cause: SnapshotCause) {
        self.held.entry((block, log_index, token_id)).or_insert(Held::Reread(cause));
    }

    /// A revoke, transfer or rekey of `token_id` was seen; returns whether a grant of it is held.
    pub(crate) fn touch(&mut self, token_id: TokenId) -> bool {
        let mut found = false;
        for ((_, _, token), held) in self.held.iter_mut() {
            if let (true, Held::Grant { touched, .. }) = (*token == token_id, held) {
                *touched = true;
                found = true;
            }
        }
        found
    }

    /// A `PublicKeyUpdated` of `owner` was seen; it may concern any of their held grants.
    pub(crate) fn touch_owned_by(&mut self, owner: &Address) {
        for held in self.held.values_mut() {
            if let Held::Grant { event: ChainEvent::Granted { owner: granted_to, .. }, touched } = held {
                if granted_to == owner {
                    *touched = true;
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn is_held(&self, token_id: TokenId) -> bool {
        self.held.keys().any(|(_, _, t)| *t == token_id)
    }

    /// The oldest block holding an entry: the cursor may not pass it, or a
    /// restart would lose it.
    pub(crate) fn earliest_block(&self) -> Option<u64> {
        self.held.keys().next().map(|&(block, _, _)| block)
    }

    /// Releases, in chain order, every entry confirmed at `head`.
    pub(crate) fn release(&mut self, head: u64, required: u64) -> Vec<Release> {
        let mut released = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            let (block, _, token_id) = *entry.key();
            if !is_confirmed(block, head, required) {
                break;
            }
            released.push(match entry.remove() {
                Held::Grant { touched: true, .. } => Release::Reread(token_id, SnapshotCause::Reconcile),
                Held::Grant { event, touched: false } => Release::Grant(event),
                Held::Reread(cause) => Release::Reread(token_id, cause),
            });
        }
        released
    }

    /// Forgets entries logged after `block` (reorged out); returns their tokens.
    pub(crate) fn forget_after(&mut self, block: u64) -> Vec<TokenId> {
        let Some(first_gone) = block.checked_add(1) else {
            return Vec::new();
        };
        let gone = self.held.split_off(&(first_gone, 0, 0));
        gone.into_keys().map(|(_, _, t)| t).collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::chain::event::LogMeta;
    use crate::testing::{block_hash, owner, tx_hash};

    fn grant(token_id: TokenId, block: u64) -> ChainEvent {
        ChainEvent::Granted {
            token_id,
            node_id: format!("node-{token_id}"),
            owner: owner(1),
            public_key: "k".into(),
            meta: LogMeta { block_number: block, block_hash: block_hash(block), tx_hash: tx_hash(block, 0), log_index: 0 },
        }
    }

    #[test]
    fn confirmation_counts_the_including_block() {
        assert!(is_confirmed(10, 10, 0));
        assert!(is_confirmed(10, 10, 1));
        assert!(!is_confirmed(10, 10, 2));
        assert!(is_confirmed(10, 11, 2));
        assert!(!is_confirmed(10, 9, 0), "a block above the head is not confirmed");
        assert_eq!(confirmed_height(11, 2), 10);
        assert_eq!(confirmed_height(11, 0), 11);
        assert_eq!(confirmed_height(1, 5), 0);
        // Below `required` blocks nothing is confirmed and the height
        // saturates at genesis, whose state holds no token.
        assert_eq!(confirmed_height(0, 9), 0);
        for (block, head, required) in [(10, 11, 2), (10, 10, 2), (3, 3, 0), (1, 0, 9)] {
            assert_eq!(is_confirmed(block, head, required), block <= confirmed_height(head, required) && block <= head);
        }
    }

    #[test]
    fn grants_wait_for_confirmations_and_leave_in_chain_order() {
        let mut held = HeldGrants::default();
        held.hold(2, 11, 0, grant(2, 11));
        held.hold(1, 10, 3, grant(1, 10));
        assert_eq!(held.earliest_block(), Some(10));
        assert!(held.release(11, 3).is_empty());
        assert_eq!(held.release(12, 3), vec![Release::Grant(grant(1, 10))]);
        assert_eq!(held.earliest_block(), Some(11));
        assert_eq!(held.release(20, 3), vec![Release::Grant(grant(2, 11))]);
        assert!(held.is_empty());
    }

    #[test]
    fn a_touched_grant_is_reread_not_replayed() {
        let mut held = HeldGrants::default();
        held.hold(7, 5, 0, grant(7, 5));
        assert!(held.touch(7));
        assert!(!held.touch(8));
        assert_eq!(held.release(100, 2), vec![Release::Reread(7, SnapshotCause::Reconcile)]);
    }

    #[test]
    fn a_rekeyed_token_is_reread_once_the_rekey_is_confirmed() {
        let mut held = HeldGrants::default();
        held.hold_reread(4, 9, 1, SnapshotCause::KeyUpdated);
        held.hold_reread(4, 9, 1, SnapshotCause::KeyUpdated);
        assert_eq!(held.len(), 1, "the same log holds one re-read");
        assert!(held.is_held(4));
        assert!(held.release(9, 2).is_empty());
        assert_eq!(held.release(10, 2), vec![Release::Reread(4, SnapshotCause::KeyUpdated)]);
    }

    #[test]
    fn a_key_update_touches_the_owners_held_grants_only() {
        let mut held = HeldGrants::default();
        held.hold(1, 5, 0, grant(1, 5));
        held.hold(2, 5, 1, ChainEvent::Granted {
            token_id: 2,
            node_id: "other".into(),
            owner: owner(2),
            public_key: "k".into(),
            meta: LogMeta { block_number: 5, block_hash: block_hash(5), tx_hash: tx_hash(5, 1), log_index: 1 },
        });
        held.touch_owned_by(&owner(1));
        let released = held.release(5, 0);
        assert_eq!(released[0], Release::Reread(1, SnapshotCause::Reconcile));
        assert!(matches!(released[1], Release::Grant(ChainEvent::Granted { token_id: 2, .. })));
    }

    #[test]
    fn reorg_forgets_entries_after_the_common_ancestor() {
        let mut held = HeldGrants::default();
        held.hold(1, 5, 0, grant(1, 5));
        held.hold(2, 6, 0, grant(2, 6));
        held.hold(3, 7, 1, grant(3, 7));
        held.hold_reread(9, 7, 2, SnapshotCause::KeyUpdated);
        assert_eq!(held.forget_after(5), vec![2, 3, 9]);
        assert_eq!(held.len(), 1);
        assert!(held.is_held(1));
        assert!(held.forget_after(u64::MAX).is_empty());
    }
}
