//! The chaos soak (`cargo xtask bench chaos`, and a 60 s run in CI): a whole
//! lab (anvil, the gateway with XDP enforcing, `wireguard-go` nodes pinging
//! through it) under a seeded random schedule of chain operations (mint,
//! revoke, transfer, rekey, `updatePublicKey` by the owner, reorgs), RPC
//! cuts, SIGKILLs (from outside at random, and from inside at crash points:
//! between two ops of one plan, halfway through writing the registry),
//! restarts and hostile frames, with the invariants of [`checks`] sampled
//! every tick and, at each quiet point, the convergence of kernel slots,
//! data-plane peers and the chain's admitted set. The seed replays the
//! schedule.

pub mod chain;
pub mod checks;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Serialize;

use crate::cutproxy::CutProxy;
use crate::lab::{Lab, DEV_ADDRESSES, GATEWAY_LAN_IP};
use crate::netns::{ChildGuard, Netns};
use crate::wg::{wg_dump, Keypair, WgGoNode, TUNNEL_PREFIX, WG_PORT};
use chain::{Chain, OnChain};
use checks::{Decryption, RegistryFile, Resources, Violation, Violations, CONVERGENCE_BOUND, STALENESS_BOUND};

/// The proxy's port in the gateway's namespace, in front of anvil's.
const PROXY_PORT: u16 = 8546;
/// Dummy tokens (keys no node uses) kept active at most: slot churn and more peers.
const MAX_DUMMIES: usize = 12;
/// Token ids stay inside the /24 tunnel network (slot = token + 1).
const MAX_TOKEN: u64 = 240;
const TICK: Duration = Duration::from_millis(150);

/// Every kind of fault the schedule injects, as the report counts them: a
/// long run in which one never happened did not test it.
pub const FAULTS: [&str; 8] = [
    "reorg",
    "rpc_cut",
    "sigkill",
    "kill_between_plan_ops",
    "kill_mid_registry_write",
    "kill_before_registry_rename",
    "restart",
    "hostile_burst",
];

pub struct Options {
    pub duration: Duration,
    pub seed: u64,
    pub nodes: usize,
    /// Where to copy the gateway's state directory and log at the end, to look into a violation.
    pub keep: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_s: f64,
    pub ops: BTreeMap<&'static str, u64>,
    /// Operations the contract refused (a state the schedule did not foresee); not violations.
    pub ops_refused: BTreeMap<&'static str, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    /// Kinds of [`FAULTS`] this run never injected.
    pub faults_not_injected: Vec<&'static str>,
    pub violations: Vec<Violation>,
    pub quiet_checks: u64,
    pub worst_convergence_s: f64,
    pub convergence_s: Vec<f64>,
    /// The longest time (gateway up, chain reachable) a key the chain no longer granted was still decrypted.
    pub worst_decrypt_after_ungrant_s: f64,
    pub staleness_bound_s: f64,
    pub convergence_bound_s: f64,
    pub registry_reads: u64,
    pub chain_changes_audited: u64,
    pub resources: Vec<Resources>,
}

/// SplitMix64: small, and the same sequence for the same seed everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
    fn key(&mut self) -> String {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// A seed from the clock, for runs that are not replays.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
}

struct Node {
    keys: Keypair,
    token: Option<u64>,
    wg: Option<WgGoNode>,
    ping: Option<ChildGuard>,
    /// A rekey the node follows later: until then its old key keeps talking.
    pending: Option<(Instant, Keypair)>,
}

struct Soak<'a> {
    lab: &'a mut Lab,
    proxy: CutProxy,
    chain: Chain,
    rt: tokio::runtime::Runtime,
    rng: Rng,
    start: Instant,
    nodes: Vec<Node>,
    /// Every key the soak ever bound, and the chain as last read.
    known_keys: BTreeSet<String>,
    truth: BTreeMap<u64, OnChain>,
    last_token: u64,
    /// Transactions on the canonical chain, for the audit check.
    canonical: BTreeMap<String, checks::ChainChange>,
    counter: u64,
    cut_until: Option<Instant>,
    /// The gateway: whether it should be running, when to restart it, what it was armed with.
    running: bool,
    restart_at: Option<Instant>,
    armed: Option<String>,
    last_tick: Instant,
    decryption: Decryption,
    registry: RegistryFile,
    violations: Violations,
    ops: BTreeMap<&'static str, u64>,
    refused: BTreeMap<&'static str, u64>,
    faults: BTreeMap<&'static str, u64>,
    convergence: Vec<f64>,
    resources: Vec<Resources>,
    audited: u64,
}

/// Runs the soak. The lab's namespaces and processes are gone on return.
pub fn run(opts: &Options) -> Result<Report> {
    eprintln!("chaos: seed {} for {:.0}s (replay with --seed {})", opts.seed, opts.duration.as_secs_f64(), opts.seed);
    let mut lab = Lab::new(opts.nodes)?;
    let gw = lab.gw.name().to_string();
    let proxy = CutProxy::start(&gw, PROXY_PORT, lab.anvil_port())?;
    let audit = lab.dir.path().join("state/audit.jsonl");
    lab.write_config(&format!("ws://127.0.0.1:{PROXY_PORT}"), 100, &format!("[audit]\npath = \"{}\"", audit.display()))?;
    lab.restart_gateway()?;
    let lab = &mut lab;
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> Result<Report> {
                // Anvil listens on the gateway namespace's loopback.
                gateway::netns::enter(&gw)?;
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let rpc = format!("http://127.0.0.1:{}", lab.anvil_port());
                let chain = rt.block_on(Chain::connect(&rpc, &lab.contract, &lab.signer_files, &DEV_ADDRESSES))?;
                let now = Instant::now();
                let mut soak = Soak {
                    proxy,
                    chain,
                    rt,
                    rng: Rng::new(opts.seed),
                    start: now,
                    nodes: Vec::new(),
                    known_keys: BTreeSet::new(),
                    truth: BTreeMap::new(),
                    last_token: 0,
                    canonical: BTreeMap::new(),
                    counter: 0,
                    cut_until: None,
                    running: true,
                    restart_at: None,
                    armed: None,
                    last_tick: now,
                    decryption: Decryption::default(),
                    registry: RegistryFile::default(),
                    violations: Violations { seed: opts.seed, list: Vec::new() },
                    ops: BTreeMap::new(),
                    refused: BTreeMap::new(),
                    faults: BTreeMap::new(),
                    convergence: Vec::new(),
                    resources: Vec::new(),
                    audited: 0,
                    lab,
                };
                soak.run(opts)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the soak thread panicked"))?
    })
}

impl Soak<'_> {
    fn at(&self) -> Duration {
        self.start.elapsed()
    }

    fn run(&mut self, opts: &Options) -> Result<Report> {
        for i in 0..opts.nodes {
            let keys = Keypair::generate(self.lab.dir.path(), &format!("node{i}-0"))?;
            self.nodes.push(Node { keys, token: None, wg: None, ping: None, pending: None });
            self.mint_node(i)?;
        }
        let quiet_every = Duration::from_secs(60).min(opts.duration / 2).max(Duration::from_secs(20));
        let deadline = self.start + opts.duration;
        let mut next_quiet = self.start + quiet_every;
        let mut next_action = Instant::now();
        while Instant::now() < deadline {
            self.tick()?;
            if Instant::now() >= next_quiet {
                self.quiet()?;
                next_quiet = Instant::now() + quiet_every;
            } else if Instant::now() >= next_action {
                self.act()?;
                next_action = Instant::now() + self.rng.millis(150, 1200);
            }
            std::thread::sleep(TICK);
        }
        self.quiet()?;
        if let Some(keep) = &opts.keep {
            std::fs::create_dir_all(keep)?;
            let state = self.lab.dir.path().join("state");
            for entry in std::fs::read_dir(&state)?.flatten() {
                let _ = std::fs::copy(entry.path(), keep.join(entry.file_name()));
            }
            std::fs::copy(self.lab.log_path(), keep.join("gateway.log"))?;
        }
        let worst = self.convergence.iter().copied().fold(0.0, f64::max);
        if let Some(problem) = checks::resources_flat(&self.resources) {
            let at = self.at();
            self.violations.record(at, "memory_and_fds_flat", problem);
        }
        let faults_not_injected = FAULTS.into_iter().filter(|f| !self.faults.contains_key(f)).collect();
        Ok(Report {
            seed: opts.seed,
            duration_s: self.at().as_secs_f64(),
            ops: std::mem::take(&mut self.ops),
            ops_refused: std::mem::take(&mut self.refused),
            faults: std::mem::take(&mut self.faults),
            faults_not_injected,
            violations: std::mem::take(&mut self.violations.list),
            quiet_checks: self.convergence.len() as u64,
            worst_convergence_s: worst,
            convergence_s: std::mem::take(&mut self.convergence),
            worst_decrypt_after_ungrant_s: self.decryption.worst.as_secs_f64(),
            staleness_bound_s: STALENESS_BOUND.as_secs_f64(),
            convergence_bound_s: CONVERGENCE_BOUND.as_secs_f64(),
            registry_reads: self.registry.reads,
            chain_changes_audited: self.audited,
            resources: std::mem::take(&mut self.resources),
        })
    }

    // ----- sampling -----

    /// One sample of everything, and the faults' follow-ups (restore a cut,
    /// restart the gateway, let a node follow its rekey).
    fn tick(&mut self) -> Result<()> {
        let now = Instant::now();
        let elapsed = now - self.last_tick;
        self.last_tick = now;
        let healthy = self.running && self.cut_until.is_none();
        if self.cut_until.is_some_and(|t| now >= t) {
            self.proxy.restore();
            self.cut_until = None;
        }
        if self.running {
            if let Some(status) = self.lab.gateway_exit() {
                self.running = false;
                self.restart_at = Some(now + self.rng.millis(100, 1500));
                match (status.signal(), self.armed.take()) {
                    (Some(libc::SIGKILL), Some(point)) => *self.faults.entry(fault_name(&point)).or_default() += 1,
                    _ => {
                        let at = self.at();
                        let log = std::fs::read_to_string(self.lab.log_path()).unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(5).collect();
                        self.violations.record(at, "gateway_stays_up", format!("exited with {status}: {}", tail.join(" | ")));
                    }
                }
            }
        }
        if !self.running && self.restart_at.is_some_and(|t| now >= t) {
            self.start_gateway(true)?;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].pending.as_ref().is_some_and(|(t, _)| now >= *t) {
                self.follow_rekey(i)?;
            }
        }
        let granted: BTreeSet<String> = self.truth.values().filter(|t| t.admitted()).map(|t| t.key.clone()).collect();
        self.decryption.chain(&granted, self.known_keys.iter().cloned(), if healthy { elapsed } else { Duration::ZERO });
        if let (true, Some(pid)) = (self.running, self.lab.gateway_pid()) {
            if let Ok(dump) = wg_dump(&self.lab.wg_iface) {
                let rx = dump.into_iter().map(|(k, p)| (k, p.rx_bytes)).collect();
                let at = self.at();
                self.decryption.dataplane(pid, &rx, at, &mut self.violations);
            }
        }
        let at = self.at();
        self.registry.check(&self.lab.dir.path().join("state/registry.json"), at, &mut self.violations);
        Ok(())
    }

    fn start_gateway(&mut self, may_arm: bool) -> Result<()> {
        self.lab.gateway_env.clear();
        self.armed = None;
        // Two restarts in five arm a crash point a few passes ahead.
        if may_arm && self.rng.below(5) < 2 {
            let point = self.rng.pick(&gateway::fault::POINTS).unwrap_or("plan.between_ops");
            let spec = format!("{point}:{}", 1 + self.rng.below(4));
            self.lab.gateway_env.push((gateway::fault::ENV.into(), spec));
            self.armed = Some(point.to_string());
        }
        self.lab.spawn_gateway()?;
        self.running = true;
        self.restart_at = None;
        *self.faults.entry("restart").or_default() += 1;
        Ok(())
    }

    // ----- the schedule -----

    fn act(&mut self) -> Result<()> {
        match self.rng.below(100) {
            0..=59 => self.chain_op(false),
            60..=67 => self.reorg(),
            68..=77 => {
                if self.cut_until.is_none() {
                    let dur = self.rng.millis(500, 6000);
                    self.proxy.cut();
                    self.cut_until = Some(Instant::now() + dur);
                    *self.faults.entry("rpc_cut").or_default() += 1;
                }
                Ok(())
            }
            78..=87 => {
                if self.running {
                    self.lab.kill_gateway()?;
                    self.running = false;
                    self.armed = None;
                    self.restart_at = Some(Instant::now() + self.rng.millis(0, 2000));
                    *self.faults.entry("sigkill").or_default() += 1;
                }
                Ok(())
            }
            _ => self.hostile(),
        }
    }

    /// One chain operation; `tentative` ones (inside a reorg) touch no node.
    fn chain_op(&mut self, tentative: bool) -> Result<()> {
        let active: Vec<u64> = self.truth.iter().filter(|(_, t)| t.active).map(|(id, _)| *id).collect();
        let bound: Vec<u64> = self.truth.iter().filter(|(_, t)| t.admitted()).map(|(id, _)| *id).collect();
        let unbound: Vec<u64> = self.truth.iter().filter(|(_, t)| t.active && t.key.is_empty()).map(|(id, _)| *id).collect();
        let node_tokens: BTreeMap<u64, usize> =
            self.nodes.iter().enumerate().filter_map(|(i, n)| n.token.map(|t| (t, i))).collect();
        let idle: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].token.is_none_or(|t| !self.truth.get(&t).is_some_and(|c| c.active)))
            .filter(|&i| self.nodes[i].pending.is_none())
            .collect();
        let dummies = active.iter().filter(|t| !node_tokens.contains_key(t)).count();
        let choice = if tentative { [1, 2, 3][self.rng.below(3) as usize] } else { self.rng.below(6) };
        match choice {
            0 if !idle.is_empty() && self.last_token < MAX_TOKEN => {
                let i = self.rng.pick(&idle).unwrap_or(0);
                self.mint_node(i)
            }
            1 if dummies < MAX_DUMMIES && self.last_token < MAX_TOKEN => {
                let key = self.rng.key();
                let owner = 1 + self.rng.below(2) as usize;
                self.counter += 1;
                let node_id = format!("d{}", self.counter);
                let result = self.rt.block_on(self.chain.mint(owner, &node_id, &key));
                self.known_keys.insert(key);
                self.settle("mint", result.map(|(t, tx)| (Some(t), tx)), tentative)
            }
            2 => {
                let Some(token) = self.rng.pick(&active) else { return Ok(()) };
                let result = self.rt.block_on(self.chain.revoke(token));
                self.settle("revoke", result.map(|tx| (Some(token), tx)), tentative)
            }
            3 => {
                let Some(token) = self.rng.pick(&bound) else { return Ok(()) };
                let from = self.owner_index(token);
                let result = self.rt.block_on(self.chain.transfer(from, token, 3 - from));
                self.settle("transfer", result.map(|tx| (Some(token), tx)), tentative)
            }
            4 => {
                // updatePublicKey by the (new) owner after a transfer: the node's key, or a fresh one.
                let Some(token) = self.rng.pick(&unbound) else { return Ok(()) };
                let key = match node_tokens.get(&token) {
                    Some(&i) => self.nodes[i].keys.public.clone(),
                    None => self.rng.key(),
                };
                self.known_keys.insert(key.clone());
                let owner = self.owner_index(token);
                let result = self.rt.block_on(self.chain.update_key(owner, token, &key));
                self.settle("update_public_key", result.map(|tx| (Some(token), tx)), tentative)
            }
            5 => {
                // Rekey: the owner binds a fresh key; a node follows some seconds later.
                let Some(token) = self.rng.pick(&bound) else { return Ok(()) };
                let node = node_tokens.get(&token).copied().filter(|&i| self.nodes[i].pending.is_none());
                let (key, keys) = match node {
                    Some(i) => {
                        self.counter += 1;
                        let keys = Keypair::generate(self.lab.dir.path(), &format!("node{i}-{}", self.counter))?;
                        (keys.public.clone(), Some(keys))
                    }
                    None => (self.rng.key(), None),
                };
                self.known_keys.insert(key.clone());
                let owner = self.owner_index(token);
                let result = self.rt.block_on(self.chain.update_key(owner, token, &key));
                let ok = result.is_ok();
                self.settle("rekey", result.map(|tx| (Some(token), tx)), tentative)?;
                if let (true, Some(i), Some(keys)) = (ok, node, keys) {
                    let delay = self.rng.millis(0, 4000);
                    self.nodes[i].pending = Some((Instant::now() + delay, keys));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn owner_index(&self, token: u64) -> usize {
        let owner = self.truth.get(&token).map(|t| t.owner);
        if owner == Some(self.chain.owners[2]) {
            2
        } else {
            1
        }
    }

    /// Books a transaction's outcome and re-reads the chain.
    fn settle(&mut self, what: &'static str, result: Result<(Option<u64>, gateway::node::admin::TxOutcome)>, tentative: bool) -> Result<()> {
        match result {
            Ok((token, tx)) => {
                *self.ops.entry(what).or_default() += 1;
                let token = token.unwrap_or_default();
                self.last_token = self.last_token.max(token);
                if !tentative {
                    let change = checks::ChainChange { what, token, block: tx.block_number };
                    self.canonical.insert(tx.tx_hash.to_ascii_lowercase(), change);
                }
            }
            Err(err) => {
                eprintln!("chaos: {what} refused: {err:#}");
                *self.refused.entry(what).or_default() += 1;
            }
        }
        self.refresh()
    }

    fn refresh(&mut self) -> Result<()> {
        self.truth = self.rt.block_on(self.chain.truth(self.last_token))?;
        Ok(())
    }

    /// A fresh key and token for node `i`, and its `wireguard-go` restarted on them.
    fn mint_node(&mut self, i: usize) -> Result<()> {
        self.counter += 1;
        let keys = Keypair::generate(self.lab.dir.path(), &format!("node{i}-{}", self.counter))?;
        let owner = 1 + self.rng.below(2) as usize;
        let node_id = format!("n{i}x{}", self.counter);
        self.known_keys.insert(keys.public.clone());
        let result = self.rt.block_on(self.chain.mint(owner, &node_id, &keys.public));
        let token = result.as_ref().ok().map(|(t, _)| *t);
        self.settle("mint", result.map(|(t, tx)| (Some(t), tx)), false)?;
        if let Some(t) = token {
            self.nodes[i].token = Some(t);
            self.nodes[i].keys = keys;
            self.restart_node(i)?;
        }
        Ok(())
    }

    fn follow_rekey(&mut self, i: usize) -> Result<()> {
        if let Some((_, keys)) = self.nodes[i].pending.take() {
            self.nodes[i].keys = keys;
            self.restart_node(i)?;
        }
        Ok(())
    }

    /// (Re)starts node `i`'s `wireguard-go` on its key and token's address, pinging the gateway.
    fn restart_node(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        node.ping = None;
        node.wg = None;
        let Some(token) = node.token else { return Ok(()) };
        let ip = format!("{TUNNEL_PREFIX}.{}", token + 1);
        node.wg = Some(self.lab.start_node(i, node.keys.clone(), &ip)?);
        let mut cmd = self.lab.nodes[i].command("ping");
        cmd.args(["-n", "-q", "-i", "0.2", &format!("{TUNNEL_PREFIX}.1")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        node.ping = Some(ChildGuard::spawn(cmd, "ping")?);
        Ok(())
    }

    /// `evm_snapshot`, one to three operations, `evm_revert`, and more
    /// blocks than were undone.
    fn reorg(&mut self) -> Result<()> {
        let id = self.rt.block_on(self.chain.snapshot())?;
        let before = self.rt.block_on(self.chain.head())?;
        for _ in 0..1 + self.rng.below(3) {
            self.chain_op(true)?;
        }
        let depth = self.rt.block_on(self.chain.head())? - before;
        self.rt.block_on(self.chain.revert_and_mine(id, depth + 1 + self.rng.below(2)))?;
        *self.ops.entry("reorg").or_default() += 1;
        *self.faults.entry("reorg").or_default() += 1;
        self.refresh()
    }

    /// Hostile datagrams at the WireGuard port from a node's namespace.
    fn hostile(&mut self) -> Result<()> {
        let mut frames = Vec::new();
        for _ in 0..100 {
            let slot = self.rng.below(40) as u32;
            let frame = match self.rng.below(5) {
                0 => crate::packets::handshake_init(self.rng.next_u64() as u32),
                1 => crate::packets::transport(crate::packets::index_for_slot(slot), 16 + self.rng.below(200) as usize),
                2 => crate::packets::unknown_type(),
                _ => (0..self.rng.below(300)).map(|_| self.rng.next_u64() as u8).collect(),
            };
            frames.push(frame);
        }
        let ns = Netns::existing(self.lab.nodes[0].name());
        ns.within(move || {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
            for f in &frames {
                let _ = sock.send_to(f, (GATEWAY_LAN_IP, WG_PORT));
            }
            Ok(())
        })?;
        *self.faults.entry("hostile_burst").or_default() += 1;
        Ok(())
    }

    // ----- quiet points -----

    /// Everything restored, no new operation: the kernel's open slots and
    /// the data plane's peers must reach the chain's admitted set within
    /// [`CONVERGENCE_BOUND`]; then the audit log and the process size.
    fn quiet(&mut self) -> Result<()> {
        if self.cut_until.take().is_some() {
            self.proxy.restore();
        }
        if self.running && self.armed.is_some() {
            // A crash point could still fire and stretch the measure.
            self.lab.kill_gateway()?;
            *self.faults.entry("sigkill").or_default() += 1;
            self.running = false;
        }
        if !self.running {
            self.start_gateway(false)?;
        }
        for i in 0..self.nodes.len() {
            self.follow_rekey(i)?;
        }
        self.refresh()?;
        let admitted: BTreeMap<u64, String> =
            self.truth.iter().filter(|(_, t)| t.admitted()).map(|(id, t)| (*id, t.key.clone())).collect();
        let want_slots: Vec<u32> = admitted.keys().map(|t| *t as u32 + 1).collect();
        let want_keys: BTreeSet<String> = admitted.values().cloned().collect();
        let begun = Instant::now();
        let mut last = (Vec::new(), BTreeSet::new());
        let mut maps_error = None;
        let converged = loop {
            self.tick()?;
            let slots = match gateway::xdp::PinnedMaps::open_instance(&self.lab.instance) {
                Ok(maps) => maps.allow.open_slots().map_err(|e| format!("{e:#}")),
                Err(e) => Err(format!("{e:#}")),
            };
            // Maps that cannot be opened and a UAPI socket that does not
            // answer are a gateway still starting, not an empty one: with
            // nothing admitted they would otherwise "converge" at once, and
            // the resource sample below would measure a half-started process.
            let slots = slots.map_err(|e| maps_error = Some(e)).ok();
            let peers = wg_dump(&self.lab.wg_iface).ok().map(|d| d.into_keys().collect::<BTreeSet<String>>());
            if slots.as_ref() == Some(&want_slots) && peers.as_ref() == Some(&want_keys) {
                break true;
            }
            last = (slots.unwrap_or_default(), peers.unwrap_or_default());
            if begun.elapsed() > CONVERGENCE_BOUND {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let took = begun.elapsed().as_secs_f64();
        self.convergence.push(took);
        let at = self.at();
        if !converged {
            self.violations.record(
                at,
                "converges_when_quiet",
                format!(
                    "after {took:.1}s: kernel slots {:?}{}, data-plane peers {}, chain admits slots {want_slots:?}; gateway /readyz {:?}",
                    last.0,
                    maps_error.map(|e| format!(" (maps: {e})")).unwrap_or_default(),
                    last.1.len(),
                    self.lab.http_get("/readyz").map(|(code, body)| format!("{code} {body}")).unwrap_or_else(|e| e.to_string()),
                ),
            );
        }
        eprintln!("chaos: quiet at {:.0}s: {} admitted, converged in {took:.2}s", at.as_secs_f64(), admitted.len());
        let leftovers = checks::registry_leftovers(&self.lab.dir.path().join("state"));
        if !leftovers.is_empty() {
            self.violations.record(at, "no_temp_files_of_dead_writers", format!("left in the state directory: {leftovers:?}"));
        }
        let audit = self.lab.dir.path().join("state/audit.jsonl");
        // The data plane applies a step's ops before the daemon appends its
        // audit records: the records may follow the convergence by a moment.
        let mut missing = checks::audit_missing(&audit, &self.canonical).context("reading the audit log")?;
        let grace = Instant::now();
        while !missing.is_empty() && grace.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
            missing = checks::audit_missing(&audit, &self.canonical).context("reading the audit log")?;
        }
        self.audited = (self.canonical.len() - missing.len()) as u64;
        for what in missing {
            self.violations.record(at, "audit_has_every_chain_change", format!("no audit record for {what}"));
        }
        if let Some(r) = self.lab.gateway_pid().and_then(Resources::of) {
            self.resources.push(r);
        }
        Ok(())
    }
}

fn fault_name(point: &str) -> &'static str {
    match point {
        "plan.between_ops" => "kill_between_plan_ops",
        "store.mid_write" => "kill_mid_registry_write",
        "store.before_rename" => "kill_before_registry_rename",
        _ => "kill_at_other_point",
    }
}
