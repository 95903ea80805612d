//! Holds grants back until they have the configured confirmations, while
//! revocations, transfers and rekeys pass at first sight (pure).
//!
//! A held grant that a later event touched (revoked, transferred, rekeyed,
//! reorged) is not released as the original `Granted`: its log no longer
//! describes the token, so the follower re-reads the token instead.

use std::collections::BTreeMap;

use super::event::ChainEvent;
use super::ids::{Address, TokenId};

/// What to do with a grant whose confirmations are complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    /// Deliver the grant as logged.
    Grant(ChainEvent),
    /// A later event changed the token: re-read it and deliver a snapshot.
    Reread(TokenId),
}

#[derive(Clone, Debug)]
struct HeldGrant {
    token_id: TokenId,
    event: ChainEvent,
    touched: bool,
}

/// Grants waiting for confirmations, in chain order.
#[derive(Clone, Debug, Default)]
pub struct HeldGrants {
    /// Keyed by (block number, log index): chain order.
    held: BTreeMap<(u64, u64), HeldGrant>,
}

/// A log in block `block` has `head - block + 1` confirmations once `head` is
/// mined; `required` = 0 and 1 both mean "as soon as it is in a block".
pub fn is_confirmed(block: u64, head: u64, required: u64) -> bool {
    head.saturating_add(1) >= block.saturating_add(required.max(1))
}

impl HeldGrants {
    pub fn hold(&mut self, token_id: TokenId, block: u64, log_index: u64, event: ChainEvent) {
        self.held.insert((block, log_index), HeldGrant { token_id, event, touched: false });
    }

    /// A revoke, transfer or rekey of `token_id` was seen; returns whether a grant of it is held.
    pub fn touch(&mut self, token_id: TokenId) -> bool {
        let mut found = false;
        for grant in self.held.values_mut().filter(|g| g.token_id == token_id) {
            grant.touched = true;
            found = true;
        }
        found
    }

    /// A `PublicKeyUpdated` of `owner` was seen; it may concern any of their held grants.
    pub fn touch_owned_by(&mut self, owner: &Address) {
        for grant in self.held.values_mut() {
            if matches!(&grant.event, ChainEvent::Granted { owner: granted_to, .. } if granted_to == owner) {
                grant.touched = true;
            }
        }
    }

    pub fn is_held(&self, token_id: TokenId) -> bool {
        self.held.values().any(|g| g.token_id == token_id)
    }

    /// The oldest block holding a grant: the cursor may not pass it, or a
    /// restart would lose the grant.
    pub fn earliest_block(&self) -> Option<u64> {
        self.held.keys().next().map(|&(block, _)| block)
    }

    /// Releases, in chain order, every grant confirmed at `head`.
    pub fn release(&mut self, head: u64, required: u64) -> Vec<Release> {
        let mut released = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            let (block, _) = *entry.key();
            if !is_confirmed(block, head, required) {
                break;
            }
            let grant = entry.remove();
            released.push(if grant.touched { Release::Reread(grant.token_id) } else { Release::Grant(grant.event) });
        }
        released
    }

    /// Forgets grants logged after `block` (reorged out); returns their tokens.
    pub fn forget_after(&mut self, block: u64) -> Vec<TokenId> {
        let Some(first_gone) = block.checked_add(1) else {
            return Vec::new();
        };
        let gone = self.held.split_off(&(first_gone, 0));
        gone.into_values().map(|g| g.token_id).collect()
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::{block_hash, owner, tx_hash};
    use crate::chain::event::LogMeta;

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
        assert_eq!(held.release(100, 2), vec![Release::Reread(7)]);
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
        assert_eq!(released[0], Release::Reread(1));
        assert!(matches!(released[1], Release::Grant(ChainEvent::Granted { token_id: 2, .. })));
    }

    #[test]
    fn reorg_forgets_grants_after_the_common_ancestor() {
        let mut held = HeldGrants::default();
        held.hold(1, 5, 0, grant(1, 5));
        held.hold(2, 6, 0, grant(2, 6));
        held.hold(3, 7, 1, grant(3, 7));
        assert_eq!(held.forget_after(5), vec![2, 3]);
        assert_eq!(held.len(), 1);
        assert!(held.is_held(1));
        assert!(held.forget_after(u64::MAX).is_empty());
    }
}
