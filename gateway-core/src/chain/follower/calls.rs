//! How the follower's calls reach the endpoints (pure): the order they are
//! tried in, each endpoint's `eth_chainId` before its first call, looks
//! back at the preferred endpoints, waits a provider asks for ("too fast")
//! on the same endpoint, and the narrower range after a timed-out
//! `eth_getLogs`.

use std::collections::VecDeque;
use std::time::Duration;

use super::{
    Flight, Follower, InFlight, LogsVerdict, Need, PassError, Probe, RpcCall, RpcFailure, RpcReply, RpcRequest, RpcResult, Stage,
    MAX_RATE_LIMIT_WAIT, RATE_LIMIT_RETRIES, RECHECK_TIMEOUT, WAKE_RATE_LIMITED,
};
use crate::chain::chain_id::{check_endpoint, EndpointChain};
use crate::chain::event::ChainEvent;
use crate::chain::log_span::NextLogs;
use crate::chain::rpc::{classify, FailureClass, RequestId};
use crate::time::MonoTime;

impl Follower {
    /// `need` found `endpoint` not serving: the call moves on to the next
    /// endpoint in order, or the pass fails when none is left.
    pub(super) fn endpoint_failed(&mut self, mut need: Need, endpoint: usize, failure: &RpcFailure, now: MonoTime) {
        self.pool.fail(endpoint, need.call.method(), &failure.to_string(), now);
        need.last_error = format!("{}: {failure}", self.pool.label(endpoint));
        need.rate_limited = 0;
        if need.attempts.as_ref().is_some_and(|a| !a.is_empty()) {
            self.pending = Some(need);
        } else {
            let what = need.call.method();
            self.fail_pass(PassError::AllDown { what, last: need.last_error }, now);
        }
    }

    /// The endpoint said "too fast": the same call goes to the same
    /// endpoint after the wait it named (or a backoff of ours), and the
    /// endpoint stays healthy, unless it keeps saying so.
    pub(super) fn rate_limited(&mut self, mut need: Need, endpoint: usize, wait: Option<Duration>, failure: &RpcFailure, now: MonoTime) {
        need.rate_limited = need.rate_limited.saturating_add(1);
        if need.rate_limited > RATE_LIMIT_RETRIES {
            tracing::warn!(endpoint = %self.pool.label(endpoint), call = need.call.method(), refusals = need.rate_limited, "still rate limited: treating the endpoint as failed");
            self.endpoint_failed(need, endpoint, failure, now);
            return;
        }
        let wait = wait.unwrap_or_else(|| self.pool.backoff().delay(need.rate_limited)).min(MAX_RATE_LIMIT_WAIT);
        tracing::warn!(endpoint = %self.pool.label(endpoint), call = need.call.method(), ?wait, error = %failure, "rate limited: waiting, then asking the same endpoint again");
        need.attempts.get_or_insert_with(VecDeque::new).push_front(endpoint);
        self.pending = Some(need);
        self.wake_at = Some((now + wait, WAKE_RATE_LIMITED));
    }

    /// An `eth_getLogs` over `[from, to]` got no answer in time: the span
    /// shrinks and the range is asked again from its start; `false` when it
    /// was one block (the endpoint's problem, not the range's).
    pub(super) fn logs_timed_out(&mut self, from: u64, to: u64) -> bool {
        let Stage::RangeLogs { range, .. } = &self.stage else { return false };
        if (range.from, range.to) != (from, to) {
            return false;
        }
        match self.span.refused(from, to, LogsVerdict::Shrink) {
            NextLogs::Ask { .. } => {
                tracing::warn!(from, to, span = self.span.span(), "eth_getLogs timed out; asking a narrower range");
                self.stage = Stage::Ranges { from };
                self.pending = None;
                true
            }
            NextLogs::Fail => false,
        }
    }

    pub(super) fn request(&mut self, endpoint: usize, call: RpcCall, timeout: Duration, flight: Flight) -> RpcRequest {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.in_flight = Some(InFlight { id, endpoint, flight });
        RpcRequest { id, endpoint, call, timeout }
    }

    /// Sends the pending call to its next endpoint, after a look back at the
    /// preferred endpoints when one is due.
    pub(super) fn issue_pending(&mut self, now: MonoTime) -> Option<RpcRequest> {
        if let Some(probe) = self.probe.take() {
            return Some(self.issue_probe(probe, now));
        }
        let mut need = self.pending.take()?;
        if need.attempts.is_none() {
            if !need.looked_back && self.pool.take_recheck(now) {
                need.looked_back = true;
                self.pending = Some(need);
                return Some(self.issue_probe(Probe::CurrentHead, now));
            }
            need.attempts = Some(self.pool.attempt_order(now));
        }
        let next = need.attempts.as_mut().and_then(VecDeque::pop_front);
        let Some(endpoint) = next else {
            let what = need.call.method();
            self.fail_pass(PassError::AllDown { what, last: need.last_error }, now);
            return None;
        };
        if !self.pool.is_chain_checked(endpoint) {
            // The call goes to this endpoint once it is known to serve our chain.
            if let Some(attempts) = need.attempts.as_mut() {
                attempts.push_front(endpoint);
            }
            return Some(self.request(endpoint, RpcCall::ChainId, self.config.call_timeout, Flight::ChainCheck(need)));
        }
        let call = need.call.clone();
        Some(self.request(endpoint, call, self.config.call_timeout, Flight::Call(need)))
    }

    /// An endpoint's `eth_chainId`: one of another chain is refused like
    /// an endpoint that does not answer (the call moves on to the next; the
    /// endpoint is asked again after its backoff).
    pub(super) fn chain_check_answer(&mut self, mut need: Need, endpoint: usize, result: RpcResult, now: MonoTime) {
        let label = self.pool.label(endpoint).to_string();
        let refusal = match result {
            Ok(RpcReply::ChainId(served)) => {
                let verdict = check_endpoint(&mut self.chain_id, served);
                if self.config.report_chain_checks {
                    let expected = self.chain_id.unwrap_or(served);
                    self.outbox.push_back(ChainEvent::EndpointChecked { endpoint: label.clone(), expected, served });
                }
                match verdict {
                    EndpointChain::Expected => None,
                    EndpointChain::Learned(chain_id) => {
                        tracing::warn!(endpoint = %label, chain_id, "no chain id configured: following the chain this endpoint serves; every other endpoint must serve it too");
                        None
                    }
                    EndpointChain::Other { expected, served } => {
                        tracing::error!(endpoint = %label, expected_chain_id = expected, served_chain_id = served, "RPC endpoint serves another chain: refused");
                        Some(format!("serves chain {served}, not chain {expected}: refused"))
                    }
                }
            }
            Ok(other) => Some(format!("unexpected answer to eth_chainId: {other:?}")),
            Err(failure) => {
                if let FailureClass::RateLimited { wait } = classify(&RpcCall::ChainId, &failure) {
                    if need.rate_limited < RATE_LIMIT_RETRIES {
                        // Asked again after the wait, on the same endpoint.
                        need.rate_limited += 1;
                        let wait = wait.unwrap_or_else(|| self.pool.backoff().delay(need.rate_limited)).min(MAX_RATE_LIMIT_WAIT);
                        self.pending = Some(need);
                        self.wake_at = Some((now + wait, WAKE_RATE_LIMITED));
                        return;
                    }
                }
                Some(failure.to_string())
            }
        };
        match refusal {
            None => {
                self.pool.set_chain_checked(endpoint);
                self.pending = Some(need);
            }
            Some(message) => {
                self.pool.fail(endpoint, "eth_chainId", &message, now);
                need.last_error = format!("{label}: {message}");
                if let Some(attempts) = need.attempts.as_mut() {
                    attempts.retain(|&e| e != endpoint);
                }
                self.pending = Some(need);
            }
        }
    }

    pub(super) fn issue_probe(&mut self, probe: Probe, _now: MonoTime) -> RpcRequest {
        let (endpoint, timeout) = match &probe {
            Probe::CurrentHead => (self.pool.current(), self.config.call_timeout),
            Probe::Preferred { candidates, .. } => {
                (candidates.front().copied().unwrap_or(0), self.config.call_timeout.min(RECHECK_TIMEOUT))
            }
        };
        self.request(endpoint, RpcCall::BlockNumber, timeout, Flight::Probe(probe))
    }

    pub(super) fn probe_answer(&mut self, probe: Probe, endpoint: usize, result: RpcResult, now: MonoTime) {
        let head = match result {
            Ok(RpcReply::BlockNumber(head)) => Some(head),
            Ok(other) => {
                self.pool.fail(endpoint, "eth_blockNumber", &format!("unexpected answer {other:?}"), now);
                None
            }
            Err(err) => {
                self.pool.fail(endpoint, "eth_blockNumber", &err.to_string(), now);
                None
            }
        };
        match (probe, head) {
            // The current endpoint failing is the ordinary failover's business.
            (Probe::CurrentHead, None) => {}
            (Probe::CurrentHead, Some(current_head)) => {
                let candidates = self.pool.preferred_available(now);
                if !candidates.is_empty() {
                    self.probe = Some(Probe::Preferred { current_head, candidates });
                }
            }
            (Probe::Preferred { current_head, mut candidates }, head) => {
                candidates.pop_front();
                match head {
                    Some(head) if head >= current_head => {
                        self.pool.succeed(endpoint, now);
                        return;
                    }
                    Some(head) => tracing::info!(
                        endpoint = %self.pool.label(endpoint), head, current_head,
                        "preferred RPC endpoint answers but is behind; staying"
                    ),
                    None => {}
                }
                if !candidates.is_empty() {
                    self.probe = Some(Probe::Preferred { current_head, candidates });
                }
            }
        }
    }
}
