//! The control core (pure): chain events, handshake rejections and clock
//! ticks in; ops for the XDP maps and the data plane, and audit records,
//! out. It owns registry -> access -> plan so the daemon's loop cannot apply
//! an event and forget to invalidate the cache, audit it or re-plan. Time
//! comes in as parameters: `now` (unix seconds, for chain-state age and the
//! audit log) and `now_ns` (CLOCK_MONOTONIC, the clock of XDP deny expiries).
//!
//! The daemon's loop around it, in outline:
//!
//! ```text
//! let (store, loaded) = RegistryStore::open(path, contract, network)?;   // refuses foreign files
//! let mut control = Control::new(loaded.unwrap_or_else(|| Registry::new(..)), config);
//! run(control.on_start(xdp.allow_slots.open_slots()?, now, now_ns));      // follower starts at
//! loop { select! {                                                         // control.registry().cursor()
//!   batch = follower.recv_many()  => { let step = control.on_chain_events(&batch, now, now_ns);
//!                                      if step.persist { store.save(control.registry())? }
//!                                      run(step) }
//!   (key, endpoint) = rejected    => { let v = control.on_handshake(&key, endpoint, now, now_ns);
//!                                      run(v.into_step()) }
//!   _ = sleep_until(control.poll_timeout(now)) => run(control.on_tick(now, now_ns)),
//! } }
//! // run(step): audit_log.write_all(&step.audit);
//! //   let executed = plan::execute(&step.ops, |op| match op {
//! //       CloseSlot/OpenSlot/DenyEndpoint/LiftDeny => xdp maps, Add/RemoveWgPeer => data plane });
//! //   control.handle_applied(&executed, now)   // what was applied is an input like any other
//! ```
//!
//! Drain the follower's channel into one batch before calling
//! `on_chain_events`: each call plans once, at a cost of O(peers).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::access::audit::{self, AuditRecord};
use crate::access::{Access, AccessConfig, Decision, Staleness, StalenessWatch};
use crate::chain::ChainEvent;
use crate::plan::{self, Applied, Executed, Op, PlanConfig};
use crate::metrics::{Family, MetricKind, Sample};
use crate::registry::{Admission, Effect, PeerSlot, AccessReason, Registry, WgKey};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlConfig {
    pub access: AccessConfig,
    pub plan: PlanConfig,
}

/// What the daemon must do after an input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "ops must be executed and audit records written"]
pub struct Step {
    /// Execute in order (see [`plan::execute`]) and hand what was done back
    /// through [`Control::handle_applied`].
    pub ops: Vec<Op>,
    /// Append to the audit log.
    pub audit: Vec<AuditRecord>,
    /// The registry changed: save it (with its cursor) before acknowledging
    /// the events' `Synced` anywhere else.
    pub persist: bool,
}

/// The answer to one handshake initiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeVerdict {
    pub decision: Decision,
    /// For a refused key: deny its endpoint at the XDP front.
    pub deny: Option<Op>,
    /// For a refused key: the `rejected_handshake` record, unless the audit
    /// rate limit held it back.
    pub audit: Option<AuditRecord>,
}

impl HandshakeVerdict {
    /// The verdict as the same [`Step`] every other input gives: the deny
    /// op and the audit record, executed and written by the one path.
    pub fn into_step(self) -> Step {
        Step { ops: self.deny.into_iter().collect(), audit: self.audit.into_iter().collect(), persist: false }
    }
}

pub struct Control {
    registry: Registry,
    /// The registry's admitted peers, kept in step with each event's
    /// changes so a plan costs O(peers), not a re-derivation of every token.
    admitted: BTreeMap<PeerSlot, Admission>,
    access: Access,
    applied: Applied,
    watch: StalenessWatch,
    plan_config: PlanConfig,
    rejected_handshakes: BTreeMap<AccessReason, u64>,
    rejection_audit: AuditBudget,
    /// An op failed: re-plan at this time (unix seconds) even without an
    /// input. Cleared by the next plan, which holds the ops not applied.
    retry_due: Option<u64>,
}

/// After an op failed, the plan is made again this much later (seconds on
/// the wall clock that `now` reads, so the retry comes within one second
/// and at most once per second while the op keeps failing).
const RETRY_FAILED_OPS_SECS: u64 = 1;

/// Rejected-handshake audit lines allowed per second, and in a burst. Beyond
/// that (many spoofed sources, or XDP in observe mode) lines are counted and
/// the next line says how many were left out; the metric counts them all.
const REJECTION_AUDIT_PER_SEC: u64 = 50;
const REJECTION_AUDIT_BURST: u64 = 200;

/// A token bucket over `now_ns`, in milli-tokens like the XDP limiter.
#[derive(Clone, Debug, Default)]
struct AuditBudget {
    milli_tokens: u64,
    last_ns: Option<u64>,
    suppressed: u64,
}

impl AuditBudget {
    /// `Some(suppressed_before)` when a line may be written now.
    fn take(&mut self, now_ns: u64) -> Option<u64> {
        let full = REJECTION_AUDIT_BURST * 1000;
        let refill = match self.last_ns {
            None => full,
            Some(last) => now_ns.saturating_sub(last).saturating_mul(REJECTION_AUDIT_PER_SEC) / 1_000_000,
        };
        self.milli_tokens = self.milli_tokens.saturating_add(refill).min(full);
        self.last_ns = Some(now_ns);
        if self.milli_tokens < 1000 {
            self.suppressed += 1;
            return None;
        }
        self.milli_tokens -= 1000;
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Control {
    /// Starts from a registry (loaded from its file, or empty) and nothing
    /// applied; the first [`on_tick`](Self::on_tick) plans every admitted peer.
    pub fn new(registry: Registry, config: ControlConfig) -> Self {
        Control {
            admitted: registry.admitted(),
            registry,
            access: Access::new(config.access),
            applied: Applied::default(),
            watch: StalenessWatch::default(),
            plan_config: config.plan,
            rejected_handshakes: BTreeMap::new(),
            rejection_audit: AuditBudget::default(),
            retry_due: None,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn applied(&self) -> &Applied {
        &self.applied
    }

    /// What the executor did with a step's ops: the applied ones are
    /// recorded, and a failure makes [`poll_timeout`](Self::poll_timeout)
    /// ask for a re-plan shortly (the ops not applied are in that plan).
    pub fn handle_applied(&mut self, executed: &Executed, now: u64) {
        for op in &executed.applied {
            self.applied.record(op);
        }
        if executed.failed.is_some() {
            self.retry_due = Some(now.saturating_add(RETRY_FAILED_OPS_SECS));
        }
    }

    pub fn staleness(&self) -> &Staleness {
        self.access.staleness()
    }

    /// The decision for a key, cached, with the staleness policy applied.
    pub fn check(&mut self, key: &WgKey, now: u64) -> Decision {
        self.access.check(&self.registry, key, now)
    }

    /// Like [`check`](Self::check) for a key given as text (CLI, HTTP).
    pub fn check_str(&mut self, key: &str, now: u64) -> Decision {
        self.access.check_str(&self.registry, key, now)
    }

    /// Applies a batch of chain events (in delivery order) and plans once.
    pub fn on_chain_events(&mut self, events: &[ChainEvent], now: u64, now_ns: u64) -> Step {
        let mut step = Step::default();
        for event in events {
            let outcome = self.registry.apply(event, now);
            self.access.invalidate(&outcome);
            for change in &outcome.changes {
                // A token's slot is a function of its id: no two tokens share one.
                if let Some(p) = change.after.placement {
                    self.admitted.remove(&p.slot);
                }
                if let Some(a) = change.after.admission() {
                    self.admitted.insert(a.slot, a);
                }
            }
            step.persist |= matches!(outcome.effect, Effect::Applied | Effect::Synced);
            step.audit.extend(audit::records_for_event(event, &outcome, now));
        }
        self.replan_into(&mut step, now, now_ns);
        step
    }

    /// The first step after start: closes kernel slots a previous run left
    /// open that the registry no longer admits, then plans every admitted
    /// peer. `open_in_kernel` is what the pinned allow map holds.
    pub fn on_start(&mut self, open_in_kernel: impl IntoIterator<Item = PeerSlot>, now: u64, now_ns: u64) -> Step {
        let mut step = Step::default();
        self.replan_into(&mut step, now, now_ns);
        let desired = plan::desired_from(self.admitted.values(), &self.registry, self.access.staleness(), now);
        let mut ops = plan::close_stale_kernel_slots(open_in_kernel, &desired);
        ops.append(&mut step.ops);
        step.ops = ops;
        step
    }

    /// Re-plans without new input: the staleness policy may have started or
    /// stopped withholding grants, or an executor failure left work undone.
    pub fn on_tick(&mut self, now: u64, now_ns: u64) -> Step {
        let mut step = Step::default();
        self.replan_into(&mut step, now, now_ns);
        step
    }

    /// When to tick next, and why (unix seconds): the moment the chain
    /// state becomes too old for the staleness policy, or the retry of ops
    /// that failed, whichever is first. `None`: only an input wakes the core.
    pub fn poll_timeout(&self, now: u64) -> Option<(u64, &'static str)> {
        let stale = self.registry.last_sync().and_then(|last| {
            let due = last.saturating_add(self.staleness().max_age_secs).saturating_add(1);
            (due > now).then_some((due, "chain state reaches its maximum age"))
        });
        let retry = self.retry_due.map(|due| (due, "retry the ops that failed"));
        [stale, retry].into_iter().flatten().min_by_key(|(due, _)| *due)
    }

    /// The data plane decoded a handshake initiation's static key (with
    /// `parse_handshake_anon`) from `endpoint`.
    pub fn on_handshake(&mut self, key: &WgKey, endpoint: SocketAddr, now: u64, now_ns: u64) -> HandshakeVerdict {
        let decision = self.check(key, now);
        if decision.allowed {
            return HandshakeVerdict { decision, deny: None, audit: None };
        }
        *self.rejected_handshakes.entry(decision.reason).or_default() += 1;
        let deny = plan::reject_handshake(*key, &decision, endpoint, &self.plan_config, now_ns);
        let audit = self.rejection_audit.take(now_ns).map(|suppressed| {
            let mut record = audit::rejected_handshake(&decision, endpoint, now);
            if suppressed > 0 {
                record.detail = Some(format!("{suppressed} rejected handshakes before this one were not logged (rate limit)"));
            }
            record
        });
        HandshakeVerdict { decision, deny, audit }
    }

    /// The data plane saw a peer at (or roaming to) `endpoint`; a later
    /// revocation denies it there.
    pub fn on_endpoint(&mut self, slot: PeerSlot, endpoint: SocketAddr) {
        self.applied.set_endpoint(slot, endpoint);
    }

    /// The control plane's metrics for `/metrics`.
    pub fn metrics(&self, now: u64) -> Vec<Family> {
        let mut by_status: BTreeMap<AccessReason, u64> = BTreeMap::new();
        for view in self.registry.views() {
            *by_status.entry(view.reason).or_default() += 1;
        }
        let mut tokens = Family::new("gw_registry_tokens", "Tokens known from the chain, by standing.", MetricKind::Gauge);
        for (reason, n) in by_status {
            tokens = tokens.with(Sample::new(n as f64).label("status", reason.as_str()));
        }
        let mut rejected = Family::new(
            "gw_handshakes_rejected_total",
            "Handshake initiations refused in userspace, by reason.",
            MetricKind::Counter,
        );
        for (reason, n) in &self.rejected_handshakes {
            rejected = rejected.with(Sample::new(*n as f64).label("reason", reason.as_str()));
        }
        let mut age = Family::new("gw_chain_state_age_seconds", "Seconds since the last chain sync.", MetricKind::Gauge);
        if let Some(last) = self.registry.last_sync() {
            age = age.with(Sample::new(now.saturating_sub(last) as f64));
        }
        let mut cursor = Family::new("gw_chain_cursor_block", "Last block fully applied.", MetricKind::Gauge);
        if let Some(c) = self.registry.cursor() {
            cursor = cursor.with(Sample::new(c.block_number as f64));
        }
        let withholding = self.staleness().withholds(self.registry.last_sync(), now);
        vec![
            tokens,
            Family::new("gw_peers_applied", "WireGuard peers applied to the data plane.", MetricKind::Gauge)
                .with(Sample::new(self.applied.peers().count() as f64)),
            age,
            cursor,
            Family::new(
                "gw_access_withholding",
                "1 while the staleness policy withholds every grant (fail closed).",
                MetricKind::Gauge,
            )
            .with(Sample::new(if withholding { 1.0 } else { 0.0 })),
            rejected,
            {
                let (hits, misses) = self.access.cache_counts();
                Family::new("gw_access_cache_total", "Access decisions answered from the cache (hit) or the registry (miss).", MetricKind::Counter)
                    .with(Sample::new(hits as f64).label("result", "hit"))
                    .with(Sample::new(misses as f64).label("result", "miss"))
            },
        ]
    }

    fn replan_into(&mut self, step: &mut Step, now: u64, now_ns: u64) {
        // This plan holds every op a failure left undone.
        self.retry_due = None;
        self.applied.prune_denies(now_ns);
        let staleness = *self.access.staleness();
        let last_sync = self.registry.last_sync();
        if let Some(withholding) = self.watch.observe(&staleness, last_sync, now) {
            step.audit.push(audit::policy_change(&staleness, withholding, last_sync, now));
        }
        let desired = plan::desired_from(self.admitted.values(), &self.registry, &staleness, now);
        step.ops = plan::plan(&desired, &self.applied, &self.plan_config, now_ns);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::access::{AuditAction, StalePolicy};
    use crate::testing::*;

    fn control() -> Control {
        let staleness = Staleness { max_age_secs: 60, policy: StalePolicy::FailClosed };
        Control::new(registry(), ControlConfig { access: AccessConfig { staleness, ..AccessConfig::default() }, ..ControlConfig::default() })
    }

    #[test]
    fn persist_only_when_the_registry_changed() {
        let mut c = control();
        assert!(c.on_chain_events(&[granted(1, 11, 10, 0)], 100, 0).persist);
        assert!(!c.on_chain_events(&[granted(1, 11, 10, 0)], 100, 0).persist, "a replay changes nothing");
        assert!(c.on_chain_events(&[synced(10)], 100, 0).persist, "the cursor moved");
        assert!(!c.on_chain_events(&[synced(10)], 160, 0).persist, "a heartbeat at the same cursor saves nothing");
        assert_eq!(c.registry().last_sync(), Some(160), "but it keeps the state fresh");
        assert!(!c.on_chain_events(&[ChainEvent::Unavailable { error: "down".into() }], 100, 0).persist);
    }

    #[test]
    fn the_tick_that_poll_timeout_asks_for_withdraws_grants() {
        let mut c = control();
        let step = c.on_chain_events(&[granted(1, 11, 10, 0), synced(10)], 100, 0);
        c.handle_applied(&plan::execute(&step.ops, |_| Ok::<(), String>(())), 100);
        let (due, why) = c.poll_timeout(100).unwrap();
        assert_eq!((due, why), (161, "chain state reaches its maximum age"));
        assert_eq!(c.on_tick(160, 0), Step::default());
        let step = c.on_tick(due, 0);
        assert_eq!(step.ops.first(), Some(&Op::CloseSlot { slot: PeerSlot(2) }));
        assert_eq!(step.audit.iter().map(|r| r.action).collect::<Vec<_>>(), vec![AuditAction::PolicyChange]);
        assert_eq!(c.poll_timeout(due), None);
    }

    #[test]
    fn a_failed_op_comes_back_as_an_input_and_asks_for_a_retry() {
        let mut c = control();
        let step = c.on_chain_events(&[granted(1, 11, 10, 0), synced(10)], 100, 0);
        // The data plane took the peer; the XDP map refused the slot.
        let executed = plan::execute(&step.ops, |op| if matches!(op, Op::OpenSlot { .. }) { Err("map full") } else { Ok(()) });
        assert_eq!(executed.applied, step.ops[..1]);
        assert_eq!(executed.failed.as_ref().map(|f| (f.index, f.error.as_str())), Some((1, "map full")));
        c.handle_applied(&executed, 100);
        assert_eq!(c.poll_timeout(100), Some((101, "retry the ops that failed")), "before the staleness deadline (161)");
        // A handshake verdict in between is applied and leaves the retry due.
        let ep: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let deny = c.on_handshake(&key(99), ep, 100, 0).into_step();
        c.handle_applied(&plan::execute(&deny.ops, |_| Ok::<(), String>(())), 100);
        assert_eq!(c.poll_timeout(100).map(|(due, _)| due), Some(101));
        let retry = c.on_tick(101, 0);
        assert_eq!(retry.ops, vec![Op::OpenSlot { slot: PeerSlot(2), generation: 1 }], "only what was not applied");
        c.handle_applied(&plan::execute(&retry.ops, |_| Ok::<(), String>(())), 101);
        assert_eq!(c.poll_timeout(101), Some((161, "chain state reaches its maximum age")));
        assert_eq!(c.on_tick(102, 0), Step::default());
    }

    #[test]
    fn start_closes_slots_left_open_for_peers_revoked_meanwhile() {
        let mut reg = registry();
        reg.apply(&granted(1, 11, 10, 0), 100);
        reg.apply(&granted(2, 22, 10, 1), 100);
        reg.apply(&revoked(2, 11, 0), 100);
        reg.apply(&synced(11), 100);
        let mut c = Control::new(reg, ControlConfig::default());
        let step = c.on_start([PeerSlot(2), PeerSlot(3), PeerSlot(9)], 100, 0);
        assert_eq!(
            step.ops,
            vec![
                Op::CloseSlot { slot: PeerSlot(3) },
                Op::CloseSlot { slot: PeerSlot(9) },
                Op::AddWgPeer { key: key(11), slot: PeerSlot(2), allowed_ip: "10.88.0.2".parse().unwrap() },
                Op::OpenSlot { slot: PeerSlot(2), generation: 1 },
            ]
        );
    }

    #[test]
    fn metrics_count_tokens_by_standing_and_rejections_by_reason() {
        let mut c = control();
        let _ = c.on_chain_events(&[granted(1, 11, 10, 0), granted(2, 22, 10, 1), revoked(2, 11, 0), synced(11)], 100, 0);
        let ep: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let _ = c.on_handshake(&key(22), ep, 100, 0);
        let _ = c.on_handshake(&key(99), ep, 100, 0);
        let _ = c.on_handshake(&key(99), ep, 100, 0);
        let text = crate::metrics::render(&c.metrics(130));
        for line in [
            "gw_registry_tokens{status=\"granted\"} 1",
            "gw_registry_tokens{status=\"revoked\"} 1",
            "gw_chain_state_age_seconds 30",
            "gw_chain_cursor_block 11",
            "gw_access_withholding 0",
            "gw_handshakes_rejected_total{reason=\"unknown_key\"} 2",
            "gw_handshakes_rejected_total{reason=\"revoked\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    proptest::proptest! {
        /// The incrementally kept admissions never drift from the registry's.
        #[test]
        fn admissions_stay_in_step_with_the_registry(
            events in proptest::collection::vec(crate::registry::tests::arb_event(), 0..40)
        ) {
            let mut c = control();
            for e in &events {
                let _ = c.on_chain_events(std::slice::from_ref(e), 100, 0);
                proptest::prop_assert_eq!(&c.admitted, &c.registry.admitted());
            }
        }
    }

    #[test]
    fn a_flood_of_rejections_is_audited_at_a_bounded_rate_and_summarised() {
        let mut c = control();
        let _ = c.on_chain_events(&[synced(1)], 100, 0);
        let ep: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let logged = (0..1000).filter(|_| c.on_handshake(&key(99), ep, 100, 0).audit.is_some()).count();
        assert_eq!(logged as u64, REJECTION_AUDIT_BURST);
        // One second later the bucket has refilled by the per-second rate.
        let later: Vec<_> = (0..1000).filter_map(|_| c.on_handshake(&key(99), ep, 101, 1_000_000_000).audit).collect();
        assert_eq!(later.len() as u64, REJECTION_AUDIT_PER_SEC);
        assert_eq!(later[0].detail.as_deref(), Some("800 rejected handshakes before this one were not logged (rate limit)"));
        assert_eq!(later[1].detail, None);
        let text = crate::metrics::render(&c.metrics(101));
        assert!(text.contains("gw_handshakes_rejected_total{reason=\"unknown_key\"} 2000"), "{text}");
    }

    #[test]
    fn allowed_handshakes_are_neither_denied_nor_audited() {
        let mut c = control();
        let _ = c.on_chain_events(&[granted(1, 11, 10, 0), synced(10)], 100, 0);
        let ep: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let v = c.on_handshake(&key(11), ep, 100, 0);
        assert!(v.decision.allowed && v.deny.is_none() && v.audit.is_none());
        let v = c.on_handshake(&key(12), ep, 100, 0);
        assert!(!v.decision.allowed && v.deny.is_some() && v.audit.is_some());
        let step = v.clone().into_step();
        assert_eq!((step.ops, step.audit, step.persist), (v.deny.into_iter().collect(), v.audit.into_iter().collect(), false));
    }
}
