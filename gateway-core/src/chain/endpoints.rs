//! The RPC endpoints as the follower sees them (pure): which one calls go
//! to, in which order the others are tried when it fails, and when to look
//! back at a preferred one. Health is kept per endpoint with backoff; time
//! is a parameter.

use std::collections::VecDeque;
use std::time::Duration;

use super::backoff::{try_order, Backoff, EndpointHealth};
use crate::time::MonoTime;

/// One configured endpoint: where it is, what logs may show of it, and
/// whether it can push new heads (WebSocket).
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// For the driver only: provider URLs often carry an API key.
    pub url: String,
    /// The URL with any key hidden (see [`redact_url`]): what logs show.
    pub label: String,
    pub pubsub: bool,
}

impl Endpoint {
    pub(crate) fn from_url(url: &str) -> Self {
        let url = url.trim();
        Endpoint { url: url.to_string(), label: redact_url(url), pubsub: url.starts_with("ws://") || url.starts_with("wss://") }
    }
}

/// Without the URL: it may hold a key.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("label", &self.label).field("pubsub", &self.pubsub).finish()
    }
}

/// `scheme://host:port`, plus `/…` when the URL had a path or query that may
/// hold a provider API key.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // user:password@host
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let tail = &rest[authority_end..];
    let hidden = if tail.is_empty() || tail == "/" { "" } else { "/…" };
    let prefix = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    format!("{prefix}{host}{hidden}")
}

/// Endpoints in order of preference (the configuration's). Calls go to the
/// current one and fail over to the others. While on a fallback, every 3 x
/// the longest backoff (30 s by default) the follower asks the preferred ones
/// for their head and moves back to the first that is not behind the current
/// one: a node that restarted and is still syncing would otherwise hand the
/// follower an old state (and undo revocations).
#[derive(Clone, Debug)]
pub(crate) struct EndpointPool {
    endpoints: Vec<Endpoint>,
    health: Vec<EndpointHealth>,
    /// Whether the endpoint's `eth_chainId` was checked since it last
    /// failed: a failure may mean a new connection, to another node.
    chain_checked: Vec<bool>,
    current: usize,
    /// When the follower, on a fallback, next looks back at the preferred ones.
    recheck_at: Option<MonoTime>,
    backoff: Backoff,
}

impl EndpointPool {
    pub(crate) fn new(endpoints: Vec<Endpoint>, backoff: Backoff) -> Self {
        let health = vec![EndpointHealth::default(); endpoints.len()];
        let chain_checked = vec![false; endpoints.len()];
        EndpointPool { endpoints, health, chain_checked, current: 0, recheck_at: None, backoff }
    }

    pub(crate) fn current(&self) -> usize {
        self.current
    }

    pub(crate) fn label(&self, index: usize) -> &str {
        self.endpoints.get(index).map_or("?", |e| e.label.as_str())
    }

    pub(crate) fn is_pubsub(&self, index: usize) -> bool {
        self.endpoints.get(index).is_some_and(|e| e.pubsub)
    }

    pub(crate) fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The order to try one call in: the current endpoint first, then the
    /// others, those backing off left out unless all are.
    pub(crate) fn attempt_order(&self, now: MonoTime) -> VecDeque<usize> {
        try_order(&self.health, self.current, now).into()
    }

    /// An endpoint answered (a success or a refusal: it is alive). A call
    /// that went to another endpoint than the current one moves the follower
    /// there.
    pub(crate) fn succeed(&mut self, index: usize, now: MonoTime) {
        if index >= self.endpoints.len() {
            return;
        }
        if index != self.current {
            let (from, to) = (self.label(self.current).to_string(), self.label(index).to_string());
            if index < self.current {
                tracing::info!(%from, %to, "RPC endpoint: back to a preferred one");
            } else {
                tracing::warn!(%from, %to, "RPC failover");
            }
            self.current = index;
            self.recheck_at = (index != 0).then(|| now + self.recheck_interval());
        }
        self.health[index].record_success();
    }

    pub(crate) fn fail(&mut self, index: usize, what: &str, error: &str, now: MonoTime) {
        if let Some(health) = self.health.get_mut(index) {
            tracing::warn!(endpoint = %self.endpoints[index].label, call = what, error, "RPC call failed");
            health.record_failure(&self.backoff, now);
            self.chain_checked[index] = false;
        }
    }

    pub(crate) fn is_chain_checked(&self, index: usize) -> bool {
        self.chain_checked.get(index).copied().unwrap_or(false)
    }

    pub(crate) fn set_chain_checked(&mut self, index: usize) {
        if let Some(checked) = self.chain_checked.get_mut(index) {
            *checked = true;
        }
    }

    fn recheck_interval(&self) -> Duration {
        self.backoff.max.saturating_mul(3)
    }

    /// Whether it is time to look back at the preferred endpoints; if so, the
    /// next look is scheduled.
    pub(crate) fn take_recheck(&mut self, now: MonoTime) -> bool {
        if self.recheck_at.is_some_and(|at| now >= at) {
            self.recheck_at = Some(now + self.recheck_interval());
            return true;
        }
        false
    }

    /// The endpoints preferred to the current one that are not backing off.
    pub(crate) fn preferred_available(&self, now: MonoTime) -> VecDeque<usize> {
        (0..self.current).filter(|&i| self.health[i].is_available(now)).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn redaction_keeps_the_host_and_hides_keys() {
        assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
        assert_eq!(redact_url("http://127.0.0.1:8545/"), "http://127.0.0.1:8545");
        assert_eq!(redact_url("https://base-mainnet.example/v2/SECRETKEY"), "https://base-mainnet.example/…");
        assert_eq!(redact_url("wss://user:pass@rpc.example:443/ws?key=SECRET"), "wss://rpc.example:443/…");
        assert!(Endpoint::from_url(" wss://rpc.example/ws ").pubsub);
        assert!(!Endpoint::from_url("https://rpc.example").pubsub);
    }

    #[test]
    fn a_fallback_schedules_a_look_back_and_the_preferred_one_takes_over() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        let endpoints = vec![Endpoint::from_url("http://a"), Endpoint::from_url("http://b")];
        let mut pool = EndpointPool::new(endpoints, backoff);
        let t0 = MonoTime::from_nanos(1_000_000_000);
        pool.fail(0, "eth_blockNumber", "refused", t0);
        assert_eq!(pool.attempt_order(t0), VecDeque::from([1]));
        pool.succeed(1, t0);
        assert_eq!(pool.current(), 1);
        assert!(!pool.take_recheck(t0 + Duration::from_millis(2_999)));
        assert!(pool.preferred_available(t0 + Duration::from_millis(50)).is_empty(), "still backing off");
        let later = t0 + Duration::from_secs(3);
        assert!(pool.take_recheck(later));
        assert!(!pool.take_recheck(later), "one look per interval");
        assert_eq!(pool.preferred_available(later), VecDeque::from([0]));
        pool.succeed(0, later);
        assert_eq!(pool.current(), 0);
        assert!(!pool.take_recheck(later + Duration::from_secs(100)), "on the preferred endpoint nothing to look back at");
    }
}
