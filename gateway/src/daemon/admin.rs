//! What the daemon shows its admin HTTP surface: readiness, metrics, peers
//! and access decisions (I/O edge: reads only). What the loop owns (the
//! control core and the loop's [`Status`]) is asked of the loop as a
//! [`Query`] over a channel and answered from its next turn; what has its
//! own synchronisation (the data plane's counters, the pinned XDP maps, the
//! DNS counters) is read here directly.

use crate::config::Config;
use crate::dataplane::DataplaneHandle;
use crate::http::{AdminView, Readiness};
use gateway_common::XdpVerdict;
use gateway_core::access::Decision;
use gateway_core::chain::ChainEvent;
use gateway_core::control::Control;
use gateway_core::metrics::{Family, MetricKind, Sample};
use gateway_core::registry::RegistryDocument;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Questions waiting for the loop; an HTTP request beyond this waits.
pub(super) const QUERY_CHANNEL_DEPTH: usize = 64;

/// How long an HTTP request waits for the loop's answer. The loop answers
/// between two steps; a loop stuck longer than this (an op hanging in a
/// syscall) makes `/readyz` say so instead of hanging too.
const LOOP_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bounds (seconds) of the revocation-latency histogram: from the
/// revoking chain event reaching the loop to its slot closed in the kernel.
const REVOCATION_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// What the loop learns that the control core does not keep. Owned by the
/// loop; the admin surface sees it only through a [`Query`].
pub(super) struct Status {
    pub head: Option<u64>,
    pub synced_block: Option<u64>,
    pub chain_unavailable: bool,
    pub last_chain_error: Option<String>,
    /// Chain outages reported by the follower, by the endpoint named first
    /// in the error (the follower tries them all before reporting).
    pub rpc_errors: BTreeMap<String, u64>,
    /// Each endpoint's chain at its last connect: (served, expected).
    endpoint_chains: BTreeMap<String, (u64, u64)>,
    /// Connects refused because the endpoint served another chain.
    wrong_chain_refusals: BTreeMap<String, u64>,
    revocation_counts: [u64; REVOCATION_BUCKETS.len() + 1],
    revocation_sum: f64,
    max_lag_blocks: u64,
    /// Hand-made changes to the live peers and slots put back, by kind.
    drift_repairs: BTreeMap<&'static str, u64>,
    /// Read-backs of the live state completed (each may repair nothing).
    drift_checks: u64,
}

impl Status {
    pub(super) fn new(config: &Config) -> Self {
        Status {
            head: None,
            synced_block: None,
            chain_unavailable: false,
            last_chain_error: None,
            rpc_errors: BTreeMap::new(),
            endpoint_chains: BTreeMap::new(),
            wrong_chain_refusals: BTreeMap::new(),
            revocation_counts: [0; REVOCATION_BUCKETS.len() + 1],
            revocation_sum: 0.0,
            // Grants wait for confirmations, so the cursor trails the head by
            // that much in normal operation.
            max_lag_blocks: config.chain.confirmations + 10,
            drift_repairs: BTreeMap::new(),
            drift_checks: 0,
        }
    }

    pub(super) fn observe_chain(&mut self, event: &ChainEvent) {
        match event {
            ChainEvent::Synced { block_number, head, .. } => {
                self.synced_block = Some(*block_number);
                self.head = Some(*head);
                self.chain_unavailable = false;
            }
            ChainEvent::Unavailable { error } => {
                self.chain_unavailable = true;
                self.last_chain_error = Some(error.clone());
                let endpoint = error
                    .split_whitespace()
                    .find(|w| w.contains("://"))
                    .map(|w| w.trim_matches(|c: char| c == ',' || c == ':' || c == '"' || c == '(' || c == ')').to_string())
                    .unwrap_or_else(|| "all".into());
                *self.rpc_errors.entry(endpoint).or_default() += 1;
            }
            ChainEvent::EndpointChecked { endpoint, expected, served } => {
                self.endpoint_chains.insert(endpoint.clone(), (*served, *expected));
                if served != expected {
                    *self.wrong_chain_refusals.entry(endpoint.clone()).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    pub(super) fn record_revocation(&mut self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let bucket = REVOCATION_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(REVOCATION_BUCKETS.len());
        self.revocation_counts[bucket] += 1;
        self.revocation_sum += secs;
    }

    /// One read-back of the live state and what it put back.
    pub(super) fn record_drift_check(&mut self, repaired: impl IntoIterator<Item = &'static str>) {
        self.drift_checks += 1;
        for kind in repaired {
            *self.drift_repairs.entry(kind).or_default() += 1;
        }
    }

    /// The endpoints refused at their last connect, for `/readyz`.
    fn wrong_chains(&self) -> Option<String> {
        let wrong: Vec<String> = self
            .endpoint_chains
            .iter()
            .filter(|(_, (served, expected))| served != expected)
            .map(|(endpoint, (served, expected))| format!("{endpoint} serves chain {served}, not chain {expected}: refused"))
            .collect();
        (!wrong.is_empty()).then(|| wrong.join("; "))
    }

    fn lag(&self) -> Option<u64> {
        Some(self.head?.saturating_sub(self.synced_block?))
    }

    /// Readiness as far as the chain goes.
    fn readiness(&self) -> Readiness {
        let wrong_chains = self.wrong_chains();
        if self.chain_unavailable {
            let also = wrong_chains.map(|w| format!(" ({w})")).unwrap_or_default();
            return Readiness::NotReady(format!(
                "chain unavailable: {}{also}",
                self.last_chain_error.clone().unwrap_or_default()
            ));
        }
        match self.lag() {
            None => return Readiness::NotReady("chain not synced yet".into()),
            Some(lag) if lag > self.max_lag_blocks => {
                return Readiness::NotReady(format!("chain lag {lag} blocks (max {})", self.max_lag_blocks))
            }
            Some(_) => {}
        }
        match wrong_chains {
            // Ready on the endpoints that serve the chain; the operator sees which do not.
            Some(detail) => Readiness::Degraded(detail),
            None => Readiness::Ready,
        }
    }

    /// The loop's own metrics.
    fn families(&self) -> Vec<Family> {
        let mut out = vec![
            Family::new("gw_chain_head_block", "Chain head the follower last saw.", MetricKind::Gauge)
                .with(Sample::new(self.head.unwrap_or(0) as f64)),
            Family::new("gw_chain_lag_blocks", "Blocks between the chain head and the last applied block.", MetricKind::Gauge)
                .with(Sample::new(self.lag().unwrap_or(0) as f64)),
        ];
        let mut rpc = Family::new("gw_chain_rpc_errors_total", "Chain outages reported by the follower, by endpoint.", MetricKind::Counter);
        for (endpoint, n) in &self.rpc_errors {
            rpc.samples.push(Sample::new(*n as f64).label("endpoint", endpoint.clone()));
        }
        if rpc.samples.is_empty() {
            rpc.samples.push(Sample::new(0.0).label("endpoint", "none"));
        }
        out.push(rpc);
        let mut drift = Family::new(
            "gw_drift_repairs_total",
            "Live peers or XDP slots found changed by hand and put back to what the chain says, by kind.",
            MetricKind::Counter,
        );
        for kind in ["unknown_peer", "missing_peer", "changed_peer", "opened_slot", "closed_slot"] {
            let n = self.drift_repairs.get(kind).copied().unwrap_or(0);
            drift.samples.push(Sample::new(n as f64).label("kind", kind));
        }
        out.push(drift);
        out.push(
            Family::new("gw_drift_checks_total", "Read-backs of the live peers and XDP slots compared with what was applied.", MetricKind::Counter)
                .with(Sample::new(self.drift_checks as f64)),
        );
        let mut refused = Family::new(
            "gw_chain_endpoint_wrong_chain_total",
            "Connects to an RPC endpoint refused because it serves another chain than chain.chain_id, by endpoint.",
            MetricKind::Counter,
        );
        for (endpoint, n) in &self.wrong_chain_refusals {
            refused.samples.push(Sample::new(*n as f64).label("endpoint", endpoint.clone()));
        }
        if refused.samples.is_empty() {
            refused.samples.push(Sample::new(0.0).label("endpoint", "none"));
        }
        out.push(refused);
        out.push(Family::histogram(
            "gw_revocation_latency_seconds",
            "From a revoking chain event reaching the gateway to its slot closed in the kernel.",
            &REVOCATION_BUCKETS,
            &self.revocation_counts,
            self.revocation_sum,
        ));
        out
    }
}

/// A question only the loop can answer, with where to send the answer.
pub(super) enum Query {
    /// The chain's part of readiness.
    Readiness(oneshot::Sender<Readiness>),
    /// The control core's metrics and the loop's.
    Metrics(oneshot::Sender<Vec<Family>>),
    /// The registry as its JSON document.
    Registry(oneshot::Sender<RegistryDocument>),
    /// The decision for a key given as text (through the core's cache).
    Access(String, oneshot::Sender<Decision>),
}

impl Query {
    /// Answers from the loop's own state. An asker that gave up (timed
    /// out) no longer listens: its answer is dropped.
    pub(super) fn answer(self, control: &mut Control, status: &Status, now: u64) {
        match self {
            Query::Readiness(reply) => {
                let _ = reply.send(status.readiness());
            }
            Query::Metrics(reply) => {
                let mut families = control.metrics(now);
                families.extend(status.families());
                let _ = reply.send(families);
            }
            Query::Registry(reply) => {
                let _ = reply.send(control.registry().to_document());
            }
            Query::Access(key, reply) => {
                let _ = reply.send(control.check_str(&key, now));
            }
        }
    }
}

/// The admin surface's side: asks the loop, reads the rest itself.
pub(super) struct Admin {
    queries: mpsc::Sender<Query>,
    dataplane: DataplaneHandle,
    config: Config,
    dns: Arc<crate::dns::Counters>,
}

impl Admin {
    pub(super) fn new(queries: mpsc::Sender<Query>, dataplane: DataplaneHandle, config: Config) -> Self {
        Admin { queries, dataplane, config, dns: Arc::default() }
    }

    /// What the DNS server counts into.
    pub(super) fn dns_counters(&self) -> Arc<crate::dns::Counters> {
        self.dns.clone()
    }

    /// Asks the loop; `None` when it did not answer in time (or is gone,
    /// shutting down).
    async fn ask<T>(&self, query: impl FnOnce(oneshot::Sender<T>) -> Query) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.queries.send(query(reply)).await.ok()?;
            answer.await.ok()
        };
        tokio::time::timeout(LOOP_ANSWER_TIMEOUT, asked).await.ok().flatten()
    }

    fn xdp_families(&self) -> Vec<Family> {
        if !self.config.xdp.enabled {
            return Vec::new();
        }
        let stats = match crate::xdp::PinnedMaps::open_instance(&self.config.gateway.instance).and_then(|m| Ok((m.stats.read()?, m.late_stats.read()?))) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(error = %err, "reading XDP counters");
                return Vec::new();
            }
        };
        let mut packets = Family::new("gw_xdp_packets_total", "Packets seen by the XDP front, by verdict reason.", MetricKind::Counter);
        let mut late = Family::new("gw_late_gate_datagrams_total", "Datagrams the late gate at the WireGuard sockets judged, by verdict reason.", MetricKind::Counter);
        for r in XdpVerdict::ALL {
            let verdict = if r.is_drop() { "drop" } else { "pass" };
            packets.samples.push(Sample::new(stats.0.get(r) as f64).label("reason", r.name()).label("verdict", verdict));
            late.samples.push(Sample::new(stats.1.get(r) as f64).label("reason", r.name()).label("verdict", verdict));
        }
        vec![packets, late]
    }

    fn dataplane_families(&self) -> Vec<Family> {
        let peers = self.dataplane.peers();
        let counters = self.dataplane.counters();
        let takeover = self.dataplane.takeover_counters();
        let (rx, tx): (u64, u64) = peers.iter().fold((0, 0), |(r, t), p| (r + p.rx_bytes, t + p.tx_bytes));
        let with_session = peers
            .iter()
            .filter(|p| p.since_last_handshake.is_some_and(|d| d < Duration::from_secs(180)))
            .count();
        vec![
            Family::new("gw_wireguard_bytes_total", "WireGuard wire bytes, by direction.", MetricKind::Counter)
                .with(Sample::new(rx as f64).label("direction", "rx"))
                .with(Sample::new(tx as f64).label("direction", "tx")),
            Family::new("gw_wireguard_handshakes_total", "Handshake initiations the data plane answered with a cookie or refused.", MetricKind::Counter)
                .with(Sample::new(counters.rejected_handshakes as f64).label("result", "rejected"))
                .with(Sample::new(counters.cookie_replies as f64).label("result", "cookie_reply"))
                .with(Sample::new(counters.invalid_mac as f64).label("result", "invalid_mac")),
            Family::new("gw_wireguard_peers_with_session", "Peers whose last handshake is under 180 s old.", MetricKind::Gauge)
                .with(Sample::new(with_session as f64)),
            Family::new("gw_wireguard_takeovers_total", "Packets naming a peer's slot but no session: handshakes initiated to their source, or refused.", MetricKind::Counter)
                .with(Sample::new(takeover.initiated as f64).label("result", "initiated"))
                .with(Sample::new(takeover.rate_limited as f64).label("result", "rate_limited"))
                .with(Sample::new(takeover.disabled as f64).label("result", "disabled"))
                .with(Sample::new(takeover.abandoned as f64).label("result", "abandoned")),
            Family::new("gw_wireguard_dropped_total", "Packets the data plane dropped, by reason.", MetricKind::Counter)
                .with(Sample::new(counters.malformed as f64).label("reason", "malformed"))
                .with(Sample::new(counters.unknown_slot as f64).label("reason", "unknown_slot"))
                .with(Sample::new(counters.decrypt_errors as f64).label("reason", "decrypt_error"))
                .with(Sample::new(counters.spoofed_source as f64).label("reason", "spoofed_source"))
                .with(Sample::new(counters.no_route as f64).label("reason", "no_route"))
                .with(Sample::new(counters.low_order_ephemeral as f64).label("reason", "low_order_ephemeral")),
        ]
    }
}

/// An answer the loop did not give in time.
fn no_answer() -> String {
    format!("the daemon's loop did not answer within {} s", LOOP_ANSWER_TIMEOUT.as_secs())
}

impl AdminView for Admin {
    async fn readiness(&self) -> Readiness {
        if self.config.xdp.enabled {
            match crate::xdp::PinDir::for_instance(&self.config.gateway.instance) {
                Ok(pins) if pins.is_attached() => {}
                _ => return Readiness::NotReady("XDP program not attached".into()),
            }
        }
        let chain = self.ask(Query::Readiness).await.unwrap_or_else(|| Readiness::NotReady(no_answer()));
        if matches!(chain, Readiness::NotReady(_)) {
            return chain;
        }
        if self.dataplane.listen_port() == 0 {
            return Readiness::NotReady("data plane not listening".into());
        }
        chain
    }

    async fn metrics(&self) -> Vec<Family> {
        let mut out = self.ask(Query::Metrics).await.unwrap_or_else(|| {
            tracing::warn!("{}: /metrics without the control core's families", no_answer());
            Vec::new()
        });
        out.extend(self.xdp_families());
        out.extend(self.dataplane_families());
        let mut dns = Family::new("gw_dns_responses_total", "DNS datagrams from nodes, by the answer's rcode (ignored: not answered).", MetricKind::Counter);
        for (rcode, count) in self.dns.snapshot() {
            dns = dns.with(Sample::new(count as f64).label("rcode", rcode));
        }
        out.push(dns);
        out
    }

    async fn peers(&self) -> (u16, serde_json::Value) {
        let Some(doc) = self.ask(Query::Registry).await else {
            return (503, serde_json::json!({ "error": no_answer() }));
        };
        let live: BTreeMap<String, crate::dataplane::PeerStats> = self
            .dataplane
            .peers()
            .into_iter()
            .map(|p| (crate::dataplane::encode_key(&p.public_key), p))
            .collect();
        let peers: Vec<serde_json::Value> = doc
            .peers
            .iter()
            .map(|entry| {
                let mut v = serde_json::to_value(entry).unwrap_or(serde_json::Value::Null);
                let key = v.get("public_key").and_then(|k| k.as_str()).unwrap_or("").to_string();
                if let (Some(obj), Some(stats)) = (v.as_object_mut(), live.get(&key)) {
                    obj.insert(
                        "wireguard".into(),
                        serde_json::json!({
                            "endpoint": stats.endpoint.map(|e| e.to_string()),
                            "latest_handshake_seconds_ago": stats.since_last_handshake.map(|d| d.as_secs()),
                            "rx_bytes": stats.rx_bytes,
                            "tx_bytes": stats.tx_bytes,
                            "slot": stats.slot,
                        }),
                    );
                }
                v
            })
            .collect();
        let body = serde_json::json!({
            "version": doc.version,
            "contract_address": doc.contract_address,
            "network": doc.network,
            "last_sync": doc.last_sync,
            "peers": peers,
        });
        (200, body)
    }

    async fn access(&self, public_key: &str) -> (u16, serde_json::Value) {
        match self.ask(|reply| Query::Access(public_key.to_string(), reply)).await {
            Some(decision) => decision.http_answer(),
            None => (503, serde_json::json!({ "error": no_answer() })),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gateway_core::control::ControlConfig;
    use gateway_core::testing::{granted, key_b64, registry, synced};

    const CONFIG: &str = r#"
[chain]
rpc_urls = ["ws://127.0.0.1:8545"]
contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
[xdp]
iface = "eth0"
"#;

    /// One question, answered the way the loop answers it.
    fn ask<T>(control: &mut Control, status: &Status, query: impl FnOnce(oneshot::Sender<T>) -> Query) -> T {
        let (reply, mut answer) = oneshot::channel();
        query(reply).answer(control, status, 100);
        answer.try_recv().unwrap()
    }

    #[test]
    fn the_loop_answers_from_the_core_and_the_status_it_owns() {
        let mut control = Control::new(registry(), ControlConfig::default());
        let mut status = Status::new(&Config::from_toml_and_env(CONFIG, &[]).unwrap());
        assert_eq!(ask(&mut control, &status, Query::Readiness), Readiness::NotReady("chain not synced yet".into()));
        let events = [granted(1, 11, 10, 0), synced(10)];
        let _ = control.on_chain_events(&events, 100, 0);
        for e in &events {
            status.observe_chain(e);
        }
        assert_eq!(ask(&mut control, &status, Query::Readiness), Readiness::Ready);
        assert!(ask(&mut control, &status, |reply| Query::Access(key_b64(11), reply)).allowed);
        assert!(!ask(&mut control, &status, |reply| Query::Access(key_b64(12), reply)).allowed);
        assert_eq!(ask(&mut control, &status, Query::Registry).peers.len(), 1);
        let text = gateway_core::metrics::render(&ask(&mut control, &status, Query::Metrics));
        for line in ["gw_registry_tokens{status=\"granted\"} 1", "gw_chain_head_block 10", "gw_access_cache_total{result=\"miss\"} 2"] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
