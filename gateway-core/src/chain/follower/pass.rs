//! One pass of the follower (pure): head, reorg check at the cursor,
//! ranges of logs, settling (releases, re-reads after a reorg, `Synced`)
//! and a reconcile slice, one step at a time.

use std::collections::VecDeque;

use super::{
    abi, need, Action, Answer, DecodeError, Flight, Follower, Progress, Purpose, RawLog, Read, Stage, SyncedTarget,
    RECONCILE_SLICE, SYNCED_HEARTBEAT,
};
use crate::chain::confirm::Release;
use crate::chain::event::{ChainEvent, SnapshotCause};
use crate::chain::ids::{BlockHash, TokenId};
use crate::chain::log_span::NextLogs;
use crate::chain::provider::LogsVerdict;
use crate::chain::range::BlockRange;
use crate::chain::rpc::{RpcCall, RpcReply};
use crate::time::MonoTime;

impl Follower {
    /// The call a waiting stage needs, if it is one.
    pub(super) fn stage_call(&self) -> Option<RpcCall> {
        Some(match &self.stage {
            Stage::Head => RpcCall::BlockNumber,
            Stage::CheckCursor { scanned } => RpcCall::BlockHash { number: scanned.0 },
            Stage::Ancestor { candidates, next, .. } => RpcCall::BlockHash { number: candidates.get(*next)?.0 },
            Stage::AncestorFallback { back_to } => RpcCall::BlockHash { number: *back_to },
            Stage::RangeHashBefore { range } | Stage::RangeHashAfter { range, .. } => RpcCall::BlockHash { number: range.to },
            Stage::RangeContinuity { scanned, .. } => RpcCall::BlockHash { number: scanned.0 },
            Stage::RangeLogs { range, .. } => RpcCall::GetLogs {
                address: self.config.contract,
                topics: abi::access_event_topics(),
                from: range.from,
                to: range.to,
            },
            _ => return None,
        })
    }

    /// One step of the pass.
    pub(super) fn advance(&mut self, now: MonoTime) -> Progress {
        if let Some(call) = self.stage_call() {
            self.pending = Some(need(call, Purpose::Stage));
            return Progress::Continue;
        }
        match std::mem::replace(&mut self.stage, Stage::Start) {
            Stage::Start => {
                self.stage = Stage::Head;
                let current = self.pool.current();
                if self.heads_from.is_none() && self.pool.is_pubsub(current) && !self.subscribe_tried {
                    // Subscribe before catching up, so no head mined meanwhile goes unnoticed.
                    self.subscribe_tried = true;
                    let timeout = self.config.call_timeout;
                    return Progress::Send(self.request(current, RpcCall::SubscribeHeads, timeout, Flight::Subscribe));
                }
            }
            Stage::Ancestor { scanned, candidates, next } => {
                // Out of candidates: the reorg is deeper than the hashes we kept.
                debug_assert!(next >= candidates.len());
                let back_to = scanned.saturating_sub(self.config.max_reorg_depth).min(self.head);
                if back_to < self.config.start_block {
                    self.rewind(scanned, None, true);
                } else {
                    self.stage = Stage::AncestorFallback { back_to };
                }
            }
            Stage::Ranges { from } => {
                self.stage = match self.span.range(from, self.head) {
                    Some((from, to)) => Stage::RangeHashBefore { range: BlockRange { from, to } },
                    None => Stage::Settle { then_from: None, step: 0 },
                };
            }
            Stage::Logs { range, hash, mut logs, released } => {
                // The stage is put back first: what the range checked counts
                // as verified (see `verified`).
                if !released {
                    // Entries confirmed before the next log go out first, keeping chain order.
                    self.stage = Stage::Logs { range, hash, logs, released: true };
                    self.release_confirmed();
                } else if let Some(log) = logs.pop_front() {
                    self.stage = Stage::Logs { range, hash, logs, released: false };
                    self.process_log(&log);
                } else {
                    self.scanned = Some((range.to, hash));
                    // Once the range counts as scanned: the reads stand at its end.
                    self.flush_range_rereads();
                    self.recent_hashes.insert(range.to, hash);
                    self.prune_recent(range.to);
                    self.stage = Stage::Settle { then_from: range.to.checked_add(1), step: 0 };
                }
            }
            Stage::Settle { then_from, step } => {
                self.stage = Stage::Settle { then_from, step: step + 1 };
                match step {
                    0 => self.release_confirmed(),
                    // Before `Synced`: a consumer that persists the cursor must have
                    // applied the corrections, or a crash in between would keep a
                    // reorged-out grant.
                    1 => self.reread_after_reorg(),
                    2 => self.agenda.push_back(Action::Synced { head: self.head }),
                    _ => {
                        self.stage = match then_from {
                            Some(from) => Stage::Ranges { from },
                            None => Stage::ReconcileCheck,
                        }
                    }
                }
            }
            Stage::ReconcileCheck => {
                let due = *self.next_reconcile.get_or_insert(now + self.config.reconcile_interval);
                if self.reconcile_queue.is_empty() && now >= due {
                    self.reconcile_queue = self.known.keys().copied().collect();
                    tracing::debug!(tokens = self.reconcile_queue.len(), "reconciling every known token");
                    self.next_reconcile = Some(now + self.config.reconcile_interval);
                }
                self.stage = Stage::ReconcileSlice { done: 0 };
            }
            Stage::ReconcileSlice { done } => match self.reconcile_queue.first() {
                // A pass over thousands of tokens takes minutes on a remote RPC;
                // in slices, new blocks (revocations) are followed between them.
                Some(&token_id) if done < RECONCILE_SLICE => {
                    let mut read = Read::new(token_id, SnapshotCause::Reconcile, self.head, self.verified(), self.config.confirmations);
                    read.reconcile = true;
                    self.agenda.push_back(Action::Read(Box::new(read)));
                    self.stage = Stage::ReconcileSlice { done: done + 1 };
                }
                _ => {
                    self.end_pass(now);
                    return Progress::Idle;
                }
            },
            waiting => self.stage = waiting,
        }
        Progress::Continue
    }

    /// The answer to a stage's call.
    pub(super) fn on_stage_answer(&mut self, answer: Answer, _now: MonoTime) -> Result<(), String> {
        let reply = match answer {
            Answer::Reply(reply) => reply,
            Answer::LogsLimit(verdict, message) => return self.logs_refused(verdict, message),
            Answer::Refused(message) => {
                if matches!(self.stage, Stage::RangeLogs { .. }) {
                    // Words we do not know may still be a limit: a range
                    // over one block is split as if it were one.
                    return self.logs_refused(LogsVerdict::Split { result_cap: None }, message);
                }
                return Err(message);
            }
            Answer::Reverted => return Err("reverted".into()),
        };
        match (std::mem::replace(&mut self.stage, Stage::Start), reply) {
            (Stage::Head, RpcReply::BlockNumber(head)) => {
                self.head = head;
                tracing::trace!(head, scanned = ?self.scanned.map(|s| s.0), "following");
                self.stage = match self.scanned {
                    Some(scanned) => Stage::CheckCursor { scanned },
                    None => Stage::Ranges { from: self.config.start_block },
                };
            }
            (Stage::CheckCursor { scanned }, RpcReply::BlockHash(hash)) => {
                if hash == Some(scanned.1) {
                    self.stage = Stage::Ranges { from: scanned.0.saturating_add(1) };
                } else {
                    let head = self.head;
                    let candidates: Vec<(u64, BlockHash)> =
                        self.recent_hashes.iter().rev().filter(|(n, _)| **n <= head).map(|(&n, &h)| (n, h)).collect();
                    self.stage = Stage::Ancestor { scanned: scanned.0, candidates, next: 0 };
                }
            }
            (Stage::Ancestor { scanned, candidates, next }, RpcReply::BlockHash(hash)) => {
                match candidates.get(next) {
                    Some(&(number, kept)) if hash == Some(kept) => self.rewind(scanned, Some((number, kept)), false),
                    _ => self.stage = Stage::Ancestor { scanned, candidates, next: next + 1 },
                }
            }
            (Stage::AncestorFallback { back_to }, RpcReply::BlockHash(hash)) => {
                let scanned = self.scanned.map_or(back_to, |s| s.0);
                self.rewind(scanned, hash.map(|h| (back_to, h)), true);
            }
            (Stage::RangeHashBefore { range }, RpcReply::BlockHash(hash)) => match hash {
                Some(hash_before) => self.stage = Stage::RangeLogs { range, hash_before },
                None => {
                    // Not mined (any more): look again on the next pass.
                    tracing::debug!(to = range.to, "range end not mined (any more); retrying");
                    self.stage = Stage::ReconcileCheck;
                }
            },
            (Stage::RangeLogs { range, hash_before }, RpcReply::Logs(logs)) => {
                self.stage = Stage::RangeHashAfter { range, hash_before, logs };
            }
            (Stage::RangeHashAfter { range, hash_before, mut logs }, RpcReply::BlockHash(hash)) => {
                if hash != Some(hash_before) || logs.iter().any(|log| log.removed) {
                    // Re-evaluated from the top on the next pass: the reorg check runs first.
                    tracing::info!(from = range.from, to = range.to, "chain reorganised while reading logs; retrying");
                    self.stage = Stage::ReconcileCheck;
                } else {
                    self.span.answered(range.from, range.to, logs.len() as u64);
                    logs.sort_by_key(|log| (log.block_number, log.log_index));
                    self.stage = match self.scanned {
                        // The range's last block is unchanged across the read,
                        // so its ancestry is too; if that ancestry holds our
                        // last scanned block, the logs continue our chain.
                        Some(scanned) if scanned.0.checked_add(1) == Some(range.from) => {
                            Stage::RangeContinuity { range, hash: hash_before, logs, scanned }
                        }
                        _ => Stage::Logs { range, hash: hash_before, logs: VecDeque::from(logs), released: false },
                    };
                }
            }
            (Stage::RangeContinuity { range, hash, logs, scanned }, RpcReply::BlockHash(now_there)) => {
                if now_there == Some(scanned.1) {
                    self.stage = Stage::Logs { range, hash, logs: VecDeque::from(logs), released: false };
                } else {
                    tracing::info!(from = range.from, to = range.to, "chain reorganised below the range; retrying");
                    self.stage = Stage::ReconcileCheck;
                }
            }
            (stage, reply) => {
                self.stage = stage;
                return Err(format!("unexpected answer {reply:?}"));
            }
        }
        Ok(())
    }

    /// The provider refused the range being read: ask what it said fits,
    /// at once (the hash of the new range's end first, as for any range).
    fn logs_refused(&mut self, verdict: LogsVerdict, message: String) -> Result<(), String> {
        let Stage::RangeLogs { range, .. } = &self.stage else { return Err(message) };
        let range = *range;
        match self.span.refused(range.from, range.to, verdict) {
            NextLogs::Ask { from, to } => {
                let to = to.min(self.head).min(range.to);
                tracing::info!(error = %message, refused_from = range.from, refused_to = range.to, from, to, ?verdict, "eth_getLogs refused; asking what fits");
                self.stage = Stage::RangeHashBefore { range: BlockRange { from, to } };
                Ok(())
            }
            NextLogs::Fail => Err(message),
        }
    }

    fn process_log(&mut self, log: &RawLog) {
        match abi::decode_log(log) {
            Ok(event) => self.handle_event(event),
            Err(DecodeError::OtherEvent) => {}
            Err(err) => tracing::warn!(
                block = ?log.block_number, tx = ?log.tx_hash, error = %err,
                "skipping an access-contract log that cannot be used"
            ),
        }
    }

    fn handle_event(&mut self, event: ChainEvent) {
        match &event {
            ChainEvent::Granted { token_id, meta, .. } => {
                self.note_recent(meta.block_number, *token_id);
                self.held.hold(*token_id, meta.block_number, meta.log_index, event.clone());
            }
            ChainEvent::Revoked { token_id, meta, .. } => {
                self.note_recent(meta.block_number, *token_id);
                self.held.touch(*token_id);
                self.agenda.push_back(Action::Emit(event));
            }
            ChainEvent::Transferred { token_id, to, meta, .. } => {
                let (token_id, block, log_index, tx_hash) = (*token_id, meta.block_number, meta.log_index, meta.tx_hash);
                self.note_recent(block, token_id);
                self.held.touch(token_id);
                if let Some(owner) = self.known.get_mut(&token_id) {
                    *owner = Some(*to);
                }
                self.agenda.push_back(Action::Emit(event));
                // The key goes at once; what the contract makes of a transfer
                // (ERC-721's `Transfer` alone says nothing of the key) is read
                // back once the log is confirmed: a key still bound to the new
                // owner is a grant. Once per transaction, which the reference
                // contract logs twice (`Transfer`, `NodeAccessTransferred`).
                if self.last_transfer_read != Some((token_id, tx_hash)) {
                    self.last_transfer_read = Some((token_id, tx_hash));
                    self.held.hold_reread(token_id, block, log_index, SnapshotCause::Reconcile);
                }
            }
            ChainEvent::KeyUpdated { owner, meta, .. } => {
                let (owner, block, log_index) = (*owner, meta.block_number, meta.log_index);
                self.held.touch_owned_by(&owner);
                self.agenda.push_back(Action::Emit(event));
                // The old key goes at once (the log); the new one is a grant:
                // the owner's tokens are re-read once the log is confirmed.
                let owned: Vec<TokenId> =
                    self.known.iter().filter(|(_, o)| **o == Some(owner)).map(|(&token, _)| token).collect();
                for token_id in owned {
                    self.note_recent(block, token_id);
                    if self.config.confirmations > 1 {
                        // Read at once too: both heights then disagree on the
                        // key, so it reads as unbound, whatever the registry
                        // makes of a log that names no token.
                        self.reread(token_id, SnapshotCause::KeyUpdated);
                    }
                    self.held.hold_reread(token_id, block, log_index, SnapshotCause::KeyUpdated);
                }
            }
            _ => self.agenda.push_back(Action::Emit(event)),
        }
    }

    /// Grants go out in chain order, before the next log.
    fn release_confirmed(&mut self) {
        for release in self.held.release(self.verified().min(self.head), self.config.confirmations) {
            match release {
                Release::Grant(event) => self.agenda.push_back(Action::Emit(event)),
                // A later revoke, transfer or rekey already went out: the log's
                // content is stale, the chain's current state is not.
                Release::Reread(token_id, cause) => self.reread(token_id, cause),
            }
        }
    }

    /// Re-reads a token; while a range's logs are worked off, once its last
    /// log is delivered. The read is of the head and stands at the range's
    /// end (or its confirmed height), so the range's later logs, delivered
    /// after it, would be older than the token's snapshot and dropped as
    /// replays, and the audit records of the revokes and transfers among
    /// them lost (the chaos soak, seed 1796177727498032420).
    fn reread(&mut self, token_id: TokenId, cause: SnapshotCause) {
        if matches!(self.stage, Stage::Logs { .. }) {
            self.range_rereads.push((token_id, cause));
        } else {
            self.push_read(token_id, cause);
        }
    }

    /// Makes the re-reads [`reread`](Self::reread) put off, in their order.
    pub(super) fn flush_range_rereads(&mut self) {
        for (token_id, cause) in std::mem::take(&mut self.range_rereads) {
            self.push_read(token_id, cause);
        }
    }

    fn push_read(&mut self, token_id: TokenId, cause: SnapshotCause) {
        let read = Read::new(token_id, cause, self.head, self.verified(), self.config.confirmations);
        self.agenda.push_back(Action::Read(Box::new(read)));
    }

    fn reread_after_reorg(&mut self) {
        for token_id in std::mem::take(&mut self.reorg_rereads) {
            // A grant logged again on the new branch still arrives through
            // the confirmation rule: the snapshot stands at the confirmed
            // height, before it.
            self.push_read(token_id, SnapshotCause::Reorg);
        }
    }

    /// The highest block whose events are all delivered.
    pub(super) fn synced_target(&self) -> SyncedTarget {
        let Some((scanned, scanned_hash)) = self.scanned else { return SyncedTarget::Nothing };
        match self.held.earliest_block() {
            Some(held) if held <= scanned => {
                let Some(before) = held.checked_sub(1) else { return SyncedTarget::Nothing };
                match self.recent_hashes.get(&before) {
                    Some(hash) => SyncedTarget::At(before, *hash),
                    None => SyncedTarget::NeedHash(before),
                }
            }
            _ => SyncedTarget::At(scanned, scanned_hash),
        }
    }

    /// Sends `Synced`, unless it is unchanged and the last heartbeat is recent.
    pub(super) fn emit_synced(&mut self, number: u64, hash: BlockHash, head: u64, now: MonoTime) {
        // Unchanged: still repeated now and then as a heartbeat, which tells
        // the consumer the chain answers and we are caught up (its staleness
        // clock); a quiet chain mints no blocks to say so.
        let recent = self.last_heartbeat.is_some_and(|at| now.saturating_since(at) < SYNCED_HEARTBEAT);
        if self.last_synced == Some((number, hash)) && recent {
            return;
        }
        self.last_heartbeat = Some(now);
        self.last_synced = Some((number, hash));
        self.outbox.push_back(ChainEvent::Synced { block_number: number, block_hash: hash, head });
    }

    /// The block at our cursor changed: forget everything after the newest
    /// block we scanned that is still on the chain, and remember which tokens
    /// to re-read once the rescan has caught up.
    fn rewind(&mut self, scanned: u64, ancestor: Option<(u64, BlockHash)>, deeper_than_kept: bool) {
        let keep_up_to = ancestor.map_or(self.config.start_block.saturating_sub(1), |(n, _)| n);
        tracing::warn!(scanned, ancestor = keep_up_to, deeper_than_kept, "chain reorganisation: rescanning");
        let first_gone = keep_up_to.saturating_add(1);
        for tokens in self.recent_tokens.split_off(&first_gone).into_values() {
            self.reorg_rereads.extend(tokens);
        }
        if deeper_than_kept {
            self.reorg_rereads.extend(self.known.keys().copied());
        }
        self.recent_hashes.split_off(&first_gone);
        self.held.forget_after(keep_up_to);
        self.scanned = ancestor;
        if let Some((number, hash)) = ancestor {
            self.recent_hashes.insert(number, hash);
        }
        self.stage = Stage::Ranges { from: self.scanned.map_or(self.config.start_block, |(n, _)| n.saturating_add(1)) };
    }

    fn note_recent(&mut self, block: u64, token_id: TokenId) {
        self.recent_tokens.entry(block).or_default().insert(token_id);
    }

    fn prune_recent(&mut self, scanned: u64) {
        let keep_from = scanned.saturating_sub(self.config.max_reorg_depth);
        self.recent_hashes = self.recent_hashes.split_off(&keep_from);
        self.recent_tokens = self.recent_tokens.split_off(&keep_from);
    }
}
