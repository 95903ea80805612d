//! The chain follower as a state machine (pure, sans I/O): it asks for the
//! RPC calls it needs ([`Follower::poll_request`]), takes their answers
//! ([`Follower::handle_response`]) and new heads ([`Follower::handle_head`]),
//! hands out what it learned ([`Follower::poll_event`]) and says when it
//! wants to run again ([`Follower::poll_timeout`]). It never touches a
//! socket or a clock: the driver in the gateway crate carries the calls to
//! the endpoints, and every input brings its own `now`.
//!
//! What it does, in passes: backfill the contract's logs from the start
//! block in adaptive ranges, then follow new blocks (WebSocket heads or
//! polling); hold grants for the configured confirmations while revocations,
//! transfers and rekeys go out at first sight; notice a reorganisation at
//! the cursor, rewind to the common ancestor and re-read the tokens it may
//! have changed; re-read every known token in slices now and then
//! (reconcile); repeat an unchanged `Synced` as a heartbeat; fail over
//! between endpoints with backoff and go back to a preferred one only when
//! it is not behind.
//!
//! Delivery is at-least-once in chain order: `Synced { block_number }`
//! follows every event up to that block, so a consumer that persists it
//! after applying them and restarts from it loses nothing; what it sees
//! twice, it applies idempotently. The cursor never passes a held entry.
//!
//! A token's state is read at the confirmed height (head + 1 - confirmations)
//! and at the head, and a key counts as bound only when both reads show it:
//! a newly bound key is a grant and waits like one, while a revocation at
//! the head is seen at once. With 0 or 1 confirmations both are the head,
//! and one read does.

mod calls;
mod pass;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::abi::{self, DecodeError, NodeAccess, RawLog};
use super::backoff::Backoff;
use super::confirm::{confirmed_height, HeldGrants};
use super::endpoints::{Endpoint, EndpointPool};
use super::event::{ChainEvent, Cursor, SnapshotCause, TokenSnapshot};
use super::ids::{Address, BlockHash, TokenId, TxHash};
use super::log_span::{LogSpan, SPAN_CEILING};
use super::provider::LogsVerdict;
use super::range::BlockRange;
use super::rpc::{classify, BlockTag, FailureClass, RequestId, RpcCall, RpcFailure, RpcReply, RpcRequest, RpcResult};
use crate::time::MonoTime;

/// How often an unchanged `Synced` is repeated as a liveness heartbeat.
const SYNCED_HEARTBEAT: Duration = Duration::from_secs(1);

/// Tokens re-read per pass during a reconcile: 32 tokens are 64 calls,
/// about 3 s at a 50 ms round trip, the most a revocation waits behind a
/// reconcile.
const RECONCILE_SLICE: usize = 32;

/// How long the follower, on a fallback, may spend asking one preferred
/// endpoint for its head: a hung primary must not stall it for a whole call
/// timeout at every look back.
const RECHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// With a WebSocket subscription the heads are the trigger; the timer only
/// covers a head the subscription missed.
const SUBSCRIBED_SILENCE: Duration = Duration::from_secs(2);

/// A hung endpoint must not stall the follower; a healthy node answers a
/// 2,000-block `eth_getLogs` well within this (a wider one that does not
/// is asked again narrower).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Rate-limit refusals of one call taken on the same endpoint before it
/// counts as failed (and the call moves on): a provider whose quota is
/// spent ("monthly capacity limit exceeded") says "too fast" for good.
const RATE_LIMIT_RETRIES: u32 = 5;

/// The longest wait a provider's `Retry-After` (or Infura's
/// `backoff_seconds`) is taken at its word for: past it, a revocation
/// would wait on one endpoint longer than a failover takes.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// Tried in order; the first that answers is used until it fails.
    pub endpoints: Vec<Endpoint>,
    pub contract: Address,
    /// The first block to scan when there is no cursor (the contract's deployment block).
    pub start_block: u64,
    /// Confirmations a grant needs before it is delivered (0 and 1: as soon as it is mined).
    pub confirmations: u64,
    /// HTTP polling interval, and the wake-up when a WebSocket falls silent.
    pub poll_interval: Duration,
    /// How often every known token is re-read to correct drift.
    pub reconcile_interval: Duration,
    /// The widest `eth_getLogs` asked ([`SPAN_CEILING`] by default: the
    /// provider's refusals teach the follower what fits).
    pub max_block_span: u64,
    /// How far back to rewind when a reorg is deeper than the hashes we kept.
    pub max_reorg_depth: u64,
    pub backoff: Backoff,
    pub call_timeout: Duration,
    /// The chain every endpoint must serve (`eth_chainId`, asked before an
    /// endpoint's first call and again after it failed); `None`: the first
    /// endpoint that answers sets it.
    pub chain_id: Option<u64>,
    /// Emit a [`ChainEvent::EndpointChecked`] for each check (the daemon's
    /// readiness and metrics); off, they are only logged.
    pub report_chain_checks: bool,
}

impl FollowerConfig {
    /// Defaults for the endpoints at `urls` (in order of preference).
    pub fn new<U: AsRef<str>>(urls: impl IntoIterator<Item = U>, contract: impl Into<Address>) -> Self {
        Self {
            endpoints: urls.into_iter().map(|url| Endpoint::from_url(url.as_ref())).collect(),
            contract: contract.into(),
            start_block: 0,
            confirmations: 0,
            // Sub-second so a revocation reaches the XDP maps within about a block time of an L2.
            poll_interval: Duration::from_millis(500),
            reconcile_interval: Duration::from_secs(300),
            max_block_span: SPAN_CEILING,
            // Ethereum mainnet finalises in 64 blocks; L2 reorgs are far shallower.
            max_reorg_depth: 128,
            backoff: Backoff::default(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            chain_id: None,
            report_chain_checks: false,
        }
    }
}

/// Where to resume: the consumer's persisted cursor and the tokens it knows,
/// so that reconcile and reorg recovery cover tokens discovered before it.
#[derive(Clone, Debug, Default)]
pub struct StartState {
    pub cursor: Option<Cursor>,
    pub known_tokens: BTreeMap<TokenId, Option<Address>>,
}

/// Why a pass stopped short.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PassError {
    #[error("{endpoint} rejected {what}: {message}")]
    Rejected { endpoint: String, what: &'static str, message: String },
    #[error("no RPC endpoint answered {what} (last error: {last})")]
    AllDown { what: &'static str, last: String },
}

/// Where a pass is. A stage that waits on a call names it in [`Stage::call`];
/// the others do their work in [`Follower::advance`].
#[derive(Clone, Debug)]
enum Stage {
    Start,
    Head,
    CheckCursor { scanned: (u64, BlockHash) },
    Ancestor { scanned: u64, candidates: Vec<(u64, BlockHash)>, next: usize },
    AncestorFallback { back_to: u64 },
    Ranges { from: u64 },
    RangeHashBefore { range: BlockRange },
    RangeLogs { range: BlockRange, hash_before: BlockHash },
    RangeHashAfter { range: BlockRange, hash_before: BlockHash, logs: Vec<RawLog> },
    /// The block before the range is still the one scanned: a reorg between
    /// two ranges must not splice two forks together.
    RangeContinuity { range: BlockRange, hash: BlockHash, logs: Vec<RawLog>, scanned: (u64, BlockHash) },
    Logs { range: BlockRange, hash: BlockHash, logs: VecDeque<RawLog>, released: bool },
    /// After a range (`then_from` is the next range's start) or at the end
    /// of the scan (`None`): release, re-read after a reorg, `Synced`.
    Settle { then_from: Option<u64>, step: u8 },
    ReconcileCheck,
    ReconcileSlice { done: usize },
}

/// A token read in progress: `getNodeAccess` and `ownerOf` at the head and,
/// with more than one confirmation required, at the confirmed height.
#[derive(Clone, Debug)]
struct Read {
    token_id: TokenId,
    cause: SnapshotCause,
    head: u64,
    confirmed: u64,
    /// A reconcile read: the token leaves the reconcile queue once read.
    reconcile: bool,
    at_head: (Option<NodeAccess>, Option<Option<Address>>),
    at_confirmed: (Option<NodeAccess>, Option<Option<Address>>),
}

impl Read {
    /// A read at `head` and at the confirmed height of `verified` (see
    /// [`Follower::verified`]), which is `head` once the scan caught up.
    fn new(token_id: TokenId, cause: SnapshotCause, head: u64, verified: u64, confirmations: u64) -> Self {
        Read {
            token_id,
            cause,
            head,
            confirmed: confirmed_height(verified.min(head), confirmations),
            reconcile: false,
            at_head: (None, None),
            at_confirmed: (None, None),
        }
    }

    fn both_heights(&self) -> bool {
        self.confirmed < self.head
    }

    /// The next call, or `None` when every answer is in.
    fn next_call(&self, contract: Address) -> Option<(RpcCall, ReadPart)> {
        let call = |data, block| RpcCall::Call { to: contract, data, block: BlockTag::Number(block) };
        if self.at_head.0.is_none() {
            return Some((call(abi::get_node_access_call(self.token_id), self.head), ReadPart::AccessAtHead));
        }
        if self.at_head.1.is_none() {
            return Some((call(abi::owner_of_call(self.token_id), self.head), ReadPart::OwnerAtHead));
        }
        if self.both_heights() && self.at_confirmed.0.is_none() {
            return Some((call(abi::get_node_access_call(self.token_id), self.confirmed), ReadPart::AccessConfirmed));
        }
        if self.both_heights() && self.at_confirmed.1.is_none() {
            return Some((call(abi::owner_of_call(self.token_id), self.confirmed), ReadPart::OwnerConfirmed));
        }
        None
    }

    /// The snapshot both heights agree on: active and bound only if it was
    /// so at the confirmed height too; everything else as at the head.
    ///
    /// It stands at the confirmed height, or at `verified` (the highest
    /// block whose logs the follower has checked against its chain) if that
    /// is lower: a grant logged after it, once confirmed, is newer than the
    /// snapshot and applies; and the blocks the follower has not checked
    /// yet may be replaced before it gets there, unseen, so their logs on
    /// the chain that stays must still apply over what this read saw.
    fn snapshot(&self, verified: u64) -> Option<TokenSnapshot> {
        let (Some(access), Some(owner)) = (self.at_head.0.clone(), self.at_head.1) else { return None };
        let mut snapshot = access.snapshot(self.token_id, owner, self.confirmed.min(verified));
        if self.both_heights() {
            let (Some(earlier), Some(_)) = (&self.at_confirmed.0, self.at_confirmed.1) else { return None };
            snapshot.is_active &= earlier.is_active;
            if earlier.public_key != snapshot.public_key {
                snapshot.public_key.clear();
            }
        }
        Some(snapshot)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadPart {
    AccessAtHead,
    OwnerAtHead,
    AccessConfirmed,
    OwnerConfirmed,
}

/// One thing to deliver, in order. Nothing behind an entry goes out before it.
#[derive(Clone, Debug)]
enum Action {
    Emit(ChainEvent),
    Read(Box<Read>),
    Synced { head: u64 },
}

/// What a call is for, so its answer goes where it belongs.
#[derive(Clone, Debug)]
enum Purpose {
    Stage,
    Read(ReadPart),
    SyncedHash { number: u64, head: u64 },
}

/// A call to make, with the endpoints still to try it on.
#[derive(Clone, Debug)]
struct Need {
    call: RpcCall,
    purpose: Purpose,
    /// `None` until the first attempt picks the order.
    attempts: Option<VecDeque<usize>>,
    /// A look back at the preferred endpoints went first: the call goes now,
    /// however long that took.
    looked_back: bool,
    /// Rate-limit refusals in a row on the endpoint it is being tried on.
    rate_limited: u32,
    last_error: String,
}

/// A look back at the preferred endpoints, in progress.
#[derive(Clone, Debug)]
enum Probe {
    CurrentHead,
    Preferred { current_head: u64, candidates: VecDeque<usize> },
}

#[derive(Clone, Debug)]
enum Flight {
    Call(Need),
    Probe(Probe),
    Subscribe,
    /// `eth_chainId` on the endpoint the call is to go to next.
    ChainCheck(Need),
}

#[derive(Clone, Debug)]
struct InFlight {
    id: RequestId,
    endpoint: usize,
    flight: Flight,
}

/// An answer to a call, as the stage or the read sees it.
enum Answer {
    Reply(RpcReply),
    /// The endpoint refused the call (it is alive); the message says why.
    Refused(String),
    /// `eth_getLogs` refused for its range or its size, and what that means.
    LogsLimit(LogsVerdict, String),
    /// `eth_call` reverted.
    Reverted,
}

pub struct Follower {
    config: FollowerConfig,
    pool: EndpointPool,
    /// The last block whose logs were all processed (it may be ahead of the
    /// delivered cursor while entries are held).
    scanned: Option<(u64, BlockHash)>,
    last_synced: Option<(u64, BlockHash)>,
    last_heartbeat: Option<MonoTime>,
    /// Token -> owner, for reconcile and for resolving `PublicKeyUpdated`.
    known: BTreeMap<TokenId, Option<Address>>,
    held: HeldGrants,
    /// Hashes of recently scanned blocks, to find the common ancestor after a reorg.
    recent_hashes: BTreeMap<u64, BlockHash>,
    /// Tokens touched by logs in recent blocks: what a reorg may have changed.
    recent_tokens: BTreeMap<u64, BTreeSet<TokenId>>,
    /// Tokens to re-read once the rescan after a reorg has caught up.
    reorg_rereads: BTreeSet<TokenId>,
    /// Re-reads asked for while a range's logs are worked off, made once
    /// its last log is delivered (see `reread`).
    range_rereads: Vec<(TokenId, SnapshotCause)>,
    /// Tokens still to re-read in the current reconcile pass.
    reconcile_queue: BTreeSet<TokenId>,
    next_reconcile: Option<MonoTime>,
    span: LogSpan,
    stage: Stage,
    /// The head this pass follows to.
    head: u64,
    agenda: VecDeque<Action>,
    outbox: VecDeque<ChainEvent>,
    pending: Option<Need>,
    probe: Option<Probe>,
    in_flight: Option<InFlight>,
    next_id: u64,
    /// When to go on, and why; `None` while working.
    wake_at: Option<(MonoTime, &'static str)>,
    outage_failures: u32,
    outage_reported: bool,
    /// The chain the endpoints must serve (configured or learned).
    chain_id: Option<u64>,
    /// The endpoint that answers this pass. A pass reads one node's view of
    /// the chain: a head from one node and logs or hashes from another (a
    /// lagging one still on an abandoned fork) would mix two chains.
    pass_endpoint: Option<usize>,
    /// The endpoint whose new heads arrive, if any.
    heads_from: Option<usize>,
    subscribe_tried: bool,
    /// The highest head the subscription announced.
    newest_head: u64,
    /// The transfer last read back, so its two logs cost one read.
    last_transfer_read: Option<(TokenId, TxHash)>,
}

impl Follower {
    pub fn new(config: FollowerConfig, start: StartState) -> Result<Self, &'static str> {
        if config.endpoints.is_empty() {
            return Err("at least one RPC endpoint is required");
        }
        let chain_id = config.chain_id;
        let mut recent_hashes = BTreeMap::new();
        let scanned = start.cursor.map(|c| (c.block_number, c.block_hash));
        if let Some((number, hash)) = scanned {
            recent_hashes.insert(number, hash);
        }
        Ok(Follower {
            pool: EndpointPool::new(config.endpoints.clone(), config.backoff),
            span: LogSpan::new(config.max_block_span),
            config,
            scanned,
            // The first catch-up always reports its cursor, even when nothing
            // moved since the persisted one: the consumer learns it is current.
            last_synced: None,
            last_heartbeat: None,
            known: start.known_tokens,
            held: HeldGrants::default(),
            recent_hashes,
            recent_tokens: BTreeMap::new(),
            reorg_rereads: BTreeSet::new(),
            range_rereads: Vec::new(),
            reconcile_queue: BTreeSet::new(),
            next_reconcile: None,
            stage: Stage::Start,
            head: 0,
            agenda: VecDeque::new(),
            outbox: VecDeque::new(),
            pending: None,
            probe: None,
            in_flight: None,
            next_id: 0,
            wake_at: None,
            outage_failures: 0,
            outage_reported: false,
            chain_id,
            pass_endpoint: None,
            heads_from: None,
            subscribe_tried: false,
            newest_head: 0,
            last_transfer_read: None,
        })
    }

    /// The next event learned from the chain, in chain order.
    pub fn poll_event(&mut self) -> Option<ChainEvent> {
        self.outbox.pop_front()
    }

    /// When the follower wants to be asked for a request again, and why;
    /// `None` while a request is out (its answer, or its timeout, comes first).
    pub fn poll_timeout(&self) -> Option<(MonoTime, &'static str)> {
        if self.in_flight.is_some() {
            return None;
        }
        self.wake_at
    }

    /// The next RPC call to make, if one is due at `now`. One request is out
    /// at a time: the next comes after its answer.
    pub fn poll_request(&mut self, now: MonoTime) -> Option<RpcRequest> {
        loop {
            if self.in_flight.is_some() {
                return None;
            }
            if let Some((at, _)) = self.wake_at {
                if now < at {
                    return None;
                }
                self.wake_at = None;
            }
            if self.pending.is_some() || self.probe.is_some() {
                match self.issue_pending(now) {
                    Some(request) => return Some(request),
                    // The pass failed: the backoff above decides what comes next.
                    None => continue,
                }
            }
            if self.run_agenda(now) {
                continue;
            }
            match self.advance(now) {
                Progress::Continue => {}
                Progress::Idle => return None,
                Progress::Send(request) => return Some(request),
            }
        }
    }

    /// A new head arrived on the subscription: a follower waiting for the
    /// next poll goes on at once (a retry after a failure keeps its backoff).
    /// A head that arrives during a pass is remembered: the pass follows
    /// to the head it read first, and the next one starts as soon as it ends.
    pub fn handle_head(&mut self, number: u64, now: MonoTime) {
        tracing::trace!(number, "new head");
        self.newest_head = self.newest_head.max(number);
        if let (Some((at, why)), Stage::Start) = (self.wake_at, &self.stage) {
            if why != WAKE_BACKOFF && why != WAKE_RATE_LIMITED && at > now {
                self.wake_at = Some((now, "a new head arrived"));
            }
        }
    }

    /// The subscription ended; the follower polls, and subscribes again on
    /// its next pass.
    pub fn handle_heads_closed(&mut self, _now: MonoTime) {
        if let Some(index) = self.heads_from.take() {
            tracing::warn!(endpoint = %self.pool.label(index), "new-heads subscription ended; polling");
        }
    }

    /// The answer to request `id` (a late answer to an abandoned request is ignored).
    pub fn handle_response(&mut self, id: RequestId, result: RpcResult, now: MonoTime) {
        let Some(in_flight) = self.in_flight.take_if(|f| f.id == id) else {
            tracing::debug!(id = id.0, "answer to a request no longer waited for");
            return;
        };
        let endpoint = in_flight.endpoint;
        match in_flight.flight {
            Flight::Subscribe => match result {
                Ok(_) => self.heads_from = Some(endpoint),
                Err(err) => {
                    tracing::warn!(endpoint = %self.pool.label(endpoint), error = %err, "subscribing to new heads failed; polling")
                }
            },
            Flight::Probe(probe) => self.probe_answer(probe, endpoint, result, now),
            Flight::ChainCheck(need) => self.chain_check_answer(need, endpoint, result, now),
            Flight::Call(need) => {
                let answer = match result {
                    Ok(reply) => Answer::Reply(reply),
                    Err(failure) => match classify(&need.call, &failure) {
                        class @ (FailureClass::Unreachable | FailureClass::TimedOut) => {
                            if class == FailureClass::TimedOut {
                                if let RpcCall::GetLogs { from, to, .. } = need.call {
                                    if self.logs_timed_out(from, to) {
                                        // The narrower range is asked from
                                        // scratch (on the next endpoint in order).
                                        self.pool.fail(endpoint, need.call.method(), &failure.to_string(), now);
                                        return;
                                    }
                                }
                            }
                            self.endpoint_failed(need, endpoint, &failure, now);
                            return;
                        }
                        FailureClass::RateLimited { wait } => {
                            self.rate_limited(need, endpoint, wait, &failure, now);
                            return;
                        }
                        FailureClass::LogsLimit(verdict) => Answer::LogsLimit(verdict, refusal_text(&failure)),
                        FailureClass::Refused => Answer::Refused(refusal_text(&failure)),
                        FailureClass::Reverted => Answer::Reverted,
                    },
                };
                // The endpoint answered: it is alive, whatever it said.
                self.pool.succeed(endpoint, now);
                if *self.pass_endpoint.get_or_insert(endpoint) != endpoint {
                    tracing::debug!(endpoint = %self.pool.label(endpoint), "another endpoint answered mid-pass; starting the pass over on it");
                    self.restart_pass();
                    return;
                }
                let what = need.call.method();
                if let Err(message) = self.deliver(need.purpose, answer, now) {
                    let endpoint = self.pool.label(endpoint).to_string();
                    self.fail_pass(PassError::Rejected { endpoint, what, message }, now);
                }
            }
        }
    }

    /// Works off the agenda's front; `true` when it changed something (go
    /// round again), `false` when it is empty.
    fn run_agenda(&mut self, now: MonoTime) -> bool {
        let Some(front) = self.agenda.front_mut() else { return false };
        match front {
            Action::Emit(_) => {
                if let Some(Action::Emit(event)) = self.agenda.pop_front() {
                    if let ChainEvent::Granted { token_id, owner, .. } = &event {
                        self.known.insert(*token_id, Some(*owner));
                    }
                    self.outbox.push_back(event);
                }
            }
            Action::Read(read) => {
                match read.next_call(self.config.contract) {
                    Some((call, part)) => self.pending = Some(need(call, Purpose::Read(part))),
                    None => self.finish_read(),
                }
            }
            Action::Synced { head } => {
                let head = *head;
                match self.synced_target() {
                    SyncedTarget::Nothing => {
                        self.agenda.pop_front();
                    }
                    SyncedTarget::At(number, hash) => {
                        self.agenda.pop_front();
                        self.emit_synced(number, hash, head, now);
                    }
                    SyncedTarget::NeedHash(number) => {
                        self.pending = Some(need(RpcCall::BlockHash { number }, Purpose::SyncedHash { number, head }));
                    }
                }
            }
        }
        true
    }

    fn finish_read(&mut self) {
        let Some(Action::Read(read)) = self.agenda.pop_front() else { return };
        let Some(snapshot) = read.snapshot(self.verified()) else { return };
        if read.reconcile {
            self.reconcile_queue.remove(&read.token_id);
        }
        self.known.insert(read.token_id, snapshot.owner);
        // The consumer now holds this token as of `read.head`: a reorg that
        // abandons that block must re-read it, or the position would keep
        // every later fact about the token out.
        self.recent_tokens.entry(read.head).or_default().insert(read.token_id);
        self.outbox.push_back(ChainEvent::Snapshot { snapshot, cause: read.cause });
    }

    /// The highest block the follower has checked to be on the chain it
    /// follows: each range's end is read before and after its logs and
    /// linked to the block scanned before it. Confirmations are counted up
    /// to it, not to the head an `eth_blockNumber` reported: behind a load
    /// balancer that head may come from another node, on another fork.
    pub(super) fn verified(&self) -> u64 {
        match &self.stage {
            // While a range's logs are worked off, the whole range is checked.
            Stage::Logs { range, .. } => range.to,
            _ => self.scanned.map_or(0, |(number, _)| number),
        }
    }

    /// Routes an answer; `Err` with the refusal's text when it ends the pass.
    fn deliver(&mut self, purpose: Purpose, answer: Answer, now: MonoTime) -> Result<(), String> {
        match purpose {
            Purpose::Stage => self.on_stage_answer(answer, now),
            Purpose::Read(part) => {
                let Some(Action::Read(read)) = self.agenda.front_mut() else { return Ok(()) };
                // No code at the contract's address at that height (a read
                // below its deployment block) answers with no data: no token there.
                let answer = match answer {
                    Answer::Reply(RpcReply::Call(data)) if data.is_empty() => Answer::Reverted,
                    other => other,
                };
                let decoded = match (part, answer) {
                    (ReadPart::AccessAtHead | ReadPart::AccessConfirmed, Answer::Reply(RpcReply::Call(data))) => {
                        ReadValue::Access(abi::decode_node_access(&data).map_err(|e| e.to_string())?)
                    }
                    // A token the contract does not know (never minted, burned,
                    // reorged out) reads as inactive with no owner.
                    (ReadPart::AccessAtHead | ReadPart::AccessConfirmed, Answer::Reverted) => ReadValue::Access(NodeAccess::unknown()),
                    (ReadPart::OwnerAtHead | ReadPart::OwnerConfirmed, Answer::Reply(RpcReply::Call(data))) => {
                        ReadValue::Owner(Some(abi::decode_owner(&data).map_err(|e| e.to_string())?))
                    }
                    (ReadPart::OwnerAtHead | ReadPart::OwnerConfirmed, Answer::Reverted) => ReadValue::Owner(None),
                    (_, Answer::Refused(message) | Answer::LogsLimit(_, message)) => return Err(message),
                    (_, Answer::Reply(other)) => return Err(format!("unexpected answer {other:?}")),
                };
                match (part, decoded) {
                    (ReadPart::AccessAtHead, ReadValue::Access(a)) => read.at_head.0 = Some(a),
                    (ReadPart::OwnerAtHead, ReadValue::Owner(o)) => read.at_head.1 = Some(o),
                    (ReadPart::AccessConfirmed, ReadValue::Access(a)) => read.at_confirmed.0 = Some(a),
                    (ReadPart::OwnerConfirmed, ReadValue::Owner(o)) => read.at_confirmed.1 = Some(o),
                    _ => {}
                }
                Ok(())
            }
            Purpose::SyncedHash { number, head } => {
                self.agenda.pop_front();
                match answer {
                    Answer::Reply(RpcReply::BlockHash(Some(hash))) => self.emit_synced(number, hash, head, now),
                    // The block is gone: a reorg the next pass finds.
                    Answer::Reply(RpcReply::BlockHash(None)) => {}
                    Answer::Refused(message) => return Err(message),
                    _ => return Err("unexpected answer to eth_getBlockByNumber".into()),
                }
                Ok(())
            }
        }
    }

    /// Starts the pass again at once (on the endpoint now current); a read
    /// under way is asked again from the start.
    fn restart_pass(&mut self) {
        if let Some(Action::Read(read)) = self.agenda.front_mut() {
            read.at_head = (None, None);
            read.at_confirmed = (None, None);
        }
        // Released from the held entries already: nothing else would make them.
        self.flush_range_rereads();
        self.stage = Stage::Start;
        self.pending = None;
        self.pass_endpoint = None;
    }

    /// A pass failed: report once per outage, back off, start over.
    fn fail_pass(&mut self, err: PassError, now: MonoTime) {
        self.outage_failures = self.outage_failures.saturating_add(1);
        tracing::warn!(error = %err, failures = self.outage_failures, "chain follower step failed; retrying");
        // Once per outage: the consumer's staleness clock starts at the first.
        if matches!(err, PassError::AllDown { .. }) && !self.outage_reported {
            self.outage_reported = true;
            self.outbox.push_back(ChainEvent::Unavailable { error: err.to_string() });
        }
        let delay = self.pool.backoff().delay(self.outage_failures);
        self.restart_pass();
        self.probe = None;
        self.wake_at = Some((now + delay, WAKE_BACKOFF));
    }

    fn end_pass(&mut self, now: MonoTime) {
        self.outage_failures = 0;
        self.outage_reported = false;
        self.subscribe_tried = false;
        self.stage = Stage::Start;
        self.pass_endpoint = None;
        self.wake_at = Some(if !self.reconcile_queue.is_empty() {
            // Mid-reconcile: the next slice follows at once, after a look at the head.
            (now, "the next reconcile slice")
        } else if self.heads_from.is_some() && self.newest_head > self.head {
            (now, "a new head arrived during the pass")
        } else if self.heads_from.is_some() {
            (now + self.config.poll_interval.max(SUBSCRIBED_SILENCE), "no new head: look anyway")
        } else {
            (now + self.config.poll_interval, "poll for new blocks")
        });
    }

}

const WAKE_BACKOFF: &str = "retry after an RPC failure";
const WAKE_RATE_LIMITED: &str = "rate limited: the wait the provider asked for";

/// What one step of a pass came to.
enum Progress {
    Continue,
    /// The pass is over (or failed): wait for `wake_at`.
    Idle,
    /// A request outside the failover rules (a subscription).
    Send(RpcRequest),
}

enum ReadValue {
    Access(NodeAccess),
    Owner(Option<Address>),
}

enum SyncedTarget {
    Nothing,
    At(u64, BlockHash),
    NeedHash(u64),
}

fn need(call: RpcCall, purpose: Purpose) -> Need {
    Need { call, purpose, attempts: None, looked_back: false, rate_limited: 0, last_error: String::from("no endpoint tried") }
}

fn refusal_text(failure: &RpcFailure) -> String {
    match failure {
        RpcFailure::JsonRpc { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
