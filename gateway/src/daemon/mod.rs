//! `gateway run`: the daemon (I/O edge). One event loop owns the control
//! core (registry -> access -> plan), its own status, the XDP maps, the
//! data-plane handle, the registry file and the audit log. The chain
//! follower and the data plane talk to it over channels; the admin HTTP
//! server asks it questions over a channel too ([`admin::Query`]) and DNS
//! reads the zone the loop publishes.

mod admin;
mod drift;
mod executor;

use crate::chain::follower::{Follower, FollowerConfig, StartState};
use crate::clock::unix_now;
use crate::config::{Config, XdpEnforcement};
use crate::dataplane::{Dataplane, DataplaneConfig, DeviceEvent};
use crate::store::{AuditLog, RegistryStore};
use crate::xdp::{self, AttachOptions, PinDir, PinnedMaps};
use gateway_core::access::AccessConfig;
use gateway_core::chain::ChainEvent;
use gateway_core::control::{Control, ControlConfig, Step};
use gateway_core::registry::{Network, PeerSlot, Registry, WgKey};
use admin::{Admin, Query, Status};
use anyhow::Context;
use executor::Executor;
use gateway_common::{XdpConfig, MODE_ENFORCE, MODE_OBSERVE};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Chain events waiting for the loop; the follower blocks beyond this.
const CHAIN_CHANNEL_DEPTH: usize = 4096;
/// How often the data plane's peers are read for their endpoints: the core
/// denies a revoked peer's last endpoint, and the kernel keeps live peers'
/// initiations off the shared budget. Sampling, not planning: the loop
/// re-plans only on an input or at the core's `poll_timeout`.
const ENDPOINT_REFRESH: Duration = Duration::from_secs(1);
/// How often the live peers and the pinned allow map are read back and
/// compared with what was applied. Reading the allow map is one lookup
/// syscall per slot (65,536; not measured here); a hand-made change lives
/// at most this long.
const DRIFT_CHECK: Duration = Duration::from_secs(10);

/// Runs the gateway until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(config))
}

/// Attaches the XDP front, or adopts the instance a previous run left
/// attached (the kernel kept enforcing meanwhile). Returns the maps and the
/// slots open in the kernel, which the control core reconciles.
fn xdp_front(config: &Config) -> anyhow::Result<Option<(PinnedMaps, Vec<u32>)>> {
    if !config.xdp.enabled {
        return Ok(None);
    }
    let pins = PinDir::for_instance(&config.gateway.instance)?;
    let wanted = XdpConfig {
        wg_port: config.wireguard.listen_port,
        mode: match config.xdp.mode {
            XdpEnforcement::Observe => MODE_OBSERVE,
            XdpEnforcement::Enforce => MODE_ENFORCE,
        },
        handshake_rate_per_sec: config.xdp.handshake_rate_per_sec,
        handshake_burst: config.xdp.handshake_burst,
        unproven_rate_per_sec: xdp::maps::per_cpu_share(config.xdp.unproven_handshake_rate_per_sec),
        unproven_burst: xdp::maps::per_cpu_share(config.xdp.unproven_handshake_burst),
        ..XdpConfig::default()
    };
    if pins.is_attached() {
        match PinnedMaps::open(&pins) {
            Ok(mut maps) => {
                let mut current = maps.config.get()?;
                current.wg_port = wanted.wg_port;
                current.mode = wanted.mode;
                current.handshake_rate_per_sec = wanted.handshake_rate_per_sec;
                current.handshake_burst = wanted.handshake_burst;
                current.unproven_rate_per_sec = wanted.unproven_rate_per_sec;
                current.unproven_burst = wanted.unproven_burst;
                maps.config.set(current)?;
                let open = maps.allow.open_slots()?;
                tracing::info!(instance = pins.instance(), open_slots = open.len(), "adopted the attached XDP program");
                return Ok(Some((maps, open)));
            }
            Err(err) => tracing::warn!(error = %err, "pinned XDP maps unusable (another build?); replacing them"),
        }
    }
    let pins = xdp::attach(&AttachOptions {
        iface: config.xdp.iface.clone(),
        instance: config.gateway.instance.clone(),
        config: wanted,
        xdp_mode: config.xdp.xdp_mode,
        replace: true,
    })?;
    tracing::info!(iface = %config.xdp.iface, pins = %pins.path().display(), "XDP attached");
    Ok(Some((PinnedMaps::open(&pins)?, Vec::new())))
}

fn follower_config(config: &Config) -> anyhow::Result<FollowerConfig> {
    let contract = config
        .chain
        .contract_address()
        .with_context(|| format!("chain.contract {:?} is not an address", config.chain.contract))?;
    let mut f = FollowerConfig::new(&config.chain.rpc_urls, contract);
    f.start_block = config.chain.start_block;
    f.confirmations = config.chain.confirmations;
    f.poll_interval = Duration::from_millis(config.chain.poll_interval_ms);
    f.reconcile_interval = Duration::from_secs(config.chain.reconcile_interval_s.max(1));
    f.max_block_span = config.chain.log_range;
    Ok(f)
}

fn start_state(registry: &Registry) -> StartState {
    StartState {
        cursor: registry.cursor(),
        known_tokens: registry.views().map(|v| (v.token_id, v.owner)).collect(),
    }
}

async fn run_async(config: Config) -> anyhow::Result<()> {
    let private_key = crate::dataplane::cli::read_private_key(&config.wireguard.private_key_file)?;
    std::fs::create_dir_all(&config.gateway.state_dir)
        .with_context(|| format!("creating state_dir {}", config.gateway.state_dir.display()))?;
    let network = config.network.network().context("network.cidr")?;
    let contract = config.chain.contract_address().context("chain.contract")?;
    let registry_path = config.gateway.state_dir.join("registry.json");
    let (store, loaded) = RegistryStore::open(&registry_path, contract, network)
        .with_context(|| format!("loading {}", registry_path.display()))?;
    let registry = match loaded {
        Some(r) => {
            tracing::info!(path = %registry_path.display(), "registry loaded");
            r.with_domain(config.network.domain.clone())
        }
        None => Registry::new(contract, network).with_domain(config.network.domain.clone()),
    };
    let control_config = ControlConfig {
        access: AccessConfig { staleness: config.chain.staleness(), ..AccessConfig::default() },
        plan: config.xdp.plan_config(),
    };
    // Before anything is attached: the wrong chain or no contract is a
    // configuration error, said once and clearly.
    let chain_id = crate::chain::identity::establish(
        &config.chain.rpc_urls,
        contract,
        config.chain.chain_id,
        Some(&config.gateway.state_dir),
        crate::chain::rpc::DEFAULT_CALL_TIMEOUT,
    )
    .await?;
    let follower_start = start_state(&registry);
    let control = Control::new(registry, control_config);
    let mut audit = AuditLog::open(config.audit_path())?;

    // The XDP front first: from here on the kernel enforces the last applied state.
    let xdp = xdp_front(&config)?;
    if xdp.is_some() && config.xdp.late_gate {
        xdp::late_gate::install(&PinDir::for_instance(&config.gateway.instance)?)?;
    }
    let (maps, open_in_kernel) = match xdp {
        Some((maps, open)) => (Some(maps), open),
        None => (None, Vec::new()),
    };

    let gateway_net = ipnet::IpNet::from(ipnet::Ipv4Net::new(network.gateway_ip(), network.cidr.prefix())?);
    let (dataplane, mut device_events) = Dataplane::start(DataplaneConfig {
        iface: config.wireguard.interface.clone(),
        listen_port: config.wireguard.listen_port,
        private_key,
        addresses: vec![gateway_net],
        mtu: config.wireguard.mtu,
        uapi: true,
        workers: 0,
        takeover: config.wireguard.takeover,
        max_burst: crate::dataplane::DEFAULT_MAX_BURST.into(),
    })
    .context("starting the WireGuard data plane")?;
    tracing::info!(
        iface = %config.wireguard.interface,
        port = config.wireguard.listen_port,
        public_key = %crate::dataplane::encode_key(&dataplane.handle().public_key()),
        "data plane up"
    );
    let mut executor = Executor {
        xdp: maps,
        dataplane: dataplane.handle(),
        persistent_keepalive: None,
    };

    let (chain_tx, mut chain_rx) = mpsc::channel::<ChainEvent>(CHAIN_CHANNEL_DEPTH);
    let mut follower_config = follower_config(&config)?;
    follower_config.chain_id = chain_id;
    follower_config.report_chain_checks = true;
    let follower = Follower::new(follower_config, follower_start, chain_tx)?;
    let follower_task = tokio::spawn(async move {
        if let Err(err) = follower.run().await {
            tracing::error!(error = %err, "chain follower stopped");
        }
    });

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (query_tx, mut queries) = mpsc::channel::<Query>(admin::QUERY_CHANNEL_DEPTH);
    let admin = Arc::new(Admin::new(query_tx, dataplane.handle(), config.clone()));
    let http_tasks = if config.http.enabled {
        let token = crate::http::ApiToken::configured(&config.http).context("http.api_token_file")?;
        let routers = crate::http::routers(admin.clone(), token);
        let mut surfaces = vec![(config.http.listen.parse().context("http.listen")?, routers.api, "admin")];
        if let Some(metrics_listen) = config.http.metrics_listen()? {
            surfaces.push((metrics_listen, routers.metrics, "metrics"));
        }
        surfaces
            .into_iter()
            .map(|(listen, router, what)| {
                let mut rx = shutdown_rx.clone();
                tokio::spawn(async move {
                    let stop = async move {
                        let _ = rx.changed().await;
                    };
                    if let Err(err) = crate::http::serve(listen, router, what, stop).await {
                        tracing::error!(error = %err, "{what} HTTP server stopped");
                    }
                })
            })
            .collect()
    } else {
        Vec::new()
    };

    // Shared with the DNS server's task: the one lock left around the
    // loop's state. Queries must not wait for the loop, which may be busy
    // executing a plan; the loop replaces the whole table under the write
    // lock, a query holds the read lock for one map lookup.
    let zone = Arc::new(RwLock::new(crate::dns::Zone::from_registry(control.registry())));
    let dns_task = dns_server(&config, &network, zone.clone(), admin.dns_counters(), shutdown_rx.clone());

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;

    let status = Status::new(&config);
    let mut lp = Loop { control, executor: &mut executor, audit: &mut audit, store: &store, status, zone };
    let start_step = lp.control.on_start(open_in_kernel.into_iter().map(PeerSlot), unix_now(), xdp::monotonic_now_ns());
    lp.handle(start_step, None);

    let mut endpoint_refresh = tokio::time::interval(ENDPOINT_REFRESH);
    endpoint_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Its first tick is at once: the start-up check.
    let mut drift_check = tokio::time::interval(DRIFT_CHECK);
    drift_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The loop sleeps until the core's deadline (the chain state reaching
        // its maximum age, or a retry of ops that failed) or an input.
        let (wake_in, why) = lp.next_wake();
        tracing::trace!(?wake_in, why, "loop waiting");
        tokio::select! {
            () = tokio::time::sleep(wake_in.unwrap_or(Duration::MAX)), if wake_in.is_some() => {
                let step = lp.control.on_tick(unix_now(), xdp::monotonic_now_ns());
                lp.handle(step, None);
            }
            Some(first) = chain_rx.recv() => {
                let received = Instant::now();
                let mut batch = vec![first];
                while let Ok(more) = chain_rx.try_recv() {
                    batch.push(more);
                }
                lp.on_chain(&batch, received);
            }
            Some(event) = device_events.recv() => lp.on_device(event),
            Some(query) = queries.recv() => query.answer(&mut lp.control, &lp.status, unix_now()),
            _ = endpoint_refresh.tick() => lp.learn_endpoints(),
            _ = drift_check.tick() => lp.repair_drift(),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    // Questions still queued get no answer now, at once, not after a timeout.
    drop(queries);
    follower_task.abort();
    if let Err(err) = store.save(lp.control.registry()) {
        tracing::error!(error = %err, "saving the registry on shutdown");
    }
    drop(lp);
    dataplane.stop();
    if config.xdp.enabled && config.xdp.detach_on_exit {
        xdp::detach(&config.gateway.instance)?;
    }
    for task in http_tasks.into_iter().chain(dns_task) {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Serves `<node_id>.<domain>` on `dns_server`:53 when that is the gateway's
/// own tunnel address (the default); a server elsewhere is the operator's.
/// The socket is bound to the WireGuard interface too, so only queries that
/// came through the tunnel are answered: Linux would otherwise take a query
/// for that address on the underlay as well. A socket that cannot be bound
/// is logged and the gateway runs on without.
fn dns_server(
    config: &Config,
    network: &Network,
    names: Arc<dyn crate::dns::Names>,
    counters: Arc<crate::dns::Counters>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if network.dns_server != network.gateway_ip() {
        tracing::info!(dns_server = %network.dns_server, "not serving DNS: network.dns_server is not the gateway's tunnel address");
        return None;
    }
    let listen = std::net::SocketAddr::from((network.dns_server, 53));
    let bind = || -> std::io::Result<tokio::net::UdpSocket> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        socket.bind_device(Some(config.wireguard.interface.as_bytes()))?;
        socket.bind(&listen.into())?;
        socket.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(socket.into())
    };
    let socket = match bind() {
        Ok(socket) => socket,
        Err(err) => {
            tracing::error!(%listen, error = %err, "DNS: cannot bind; node names will not resolve");
            return None;
        }
    };
    tracing::info!(%listen, domain = %config.network.domain, "DNS serving node names");
    let domain = config.network.domain.clone();
    Some(tokio::spawn(crate::dns::serve(socket, domain, names, counters, async move {
        let _ = shutdown.changed().await;
    })))
}

/// The loop's state: the only owner of the control core and of the status
/// the admin surface reports; both change only on the loop's turn.
struct Loop<'a> {
    control: Control,
    executor: &'a mut Executor,
    audit: &'a mut AuditLog,
    store: &'a RegistryStore,
    status: Status,
    /// The names DNS answers, rebuilt whenever the registry changes.
    zone: Arc<RwLock<crate::dns::Zone>>,
}

impl Loop<'_> {
    /// How long to sleep before re-planning without an input, and why:
    /// the core's `poll_timeout` (unix seconds).
    fn next_wake(&self) -> (Option<Duration>, &'static str) {
        // From the precise wall clock, not whole seconds: the sleep is
        // started again after every other input (the endpoint refresh runs
        // each second), so a rounded-up remainder would never run out.
        let precise = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        match self.control.poll_timeout(unix_now()) {
            Some((due, why)) => (Some(Duration::from_secs(due).saturating_sub(precise)), why),
            None => (None, "no deadline: waiting for an input"),
        }
    }

    fn on_chain(&mut self, batch: &[ChainEvent], received: Instant) {
        let revokes = batch.iter().any(|e| {
            matches!(e, ChainEvent::Revoked { .. } | ChainEvent::Transferred { .. } | ChainEvent::Snapshot { .. } | ChainEvent::KeyUpdated { .. })
        });
        for event in batch {
            self.status.observe_chain(event);
        }
        let step = self.control.on_chain_events(batch, unix_now(), xdp::monotonic_now_ns());
        self.handle(step, revokes.then_some(received));
    }

    fn on_device(&mut self, event: DeviceEvent) {
        match event {
            DeviceEvent::RejectedHandshake { public_key, endpoint } => {
                let verdict = self.control.on_handshake(&WgKey(public_key), endpoint, unix_now(), xdp::monotonic_now_ns());
                tracing::info!(%endpoint, reason = ?verdict.decision, "handshake from a key without access");
                // The same path as every other step: ops, audit, executor outcomes.
                self.handle(verdict.into_step(), None);
            }
        }
    }

    /// Executes a step's ops and hands what was done back to the core,
    /// writes its audit records, saves the registry.
    fn handle(&mut self, step: Step, revocation_started: Option<Instant>) {
        if !step.ops.is_empty() {
            let closes = step.ops.iter().any(|op| matches!(op, gateway_core::plan::Op::CloseSlot { .. }));
            let executor = &mut *self.executor;
            let mut first = true;
            let executed = gateway_core::plan::execute(&step.ops, |op| {
                if !std::mem::take(&mut first) {
                    crate::fault::point("plan.between_ops");
                }
                tracing::info!(?op, "apply");
                executor.apply(op)
            });
            self.control.handle_applied(&executed, unix_now());
            if let Some(failed) = &executed.failed {
                tracing::error!(error = %failed, "applying the plan; the rest is retried shortly");
            } else if let (true, Some(started)) = (closes, revocation_started) {
                self.status.record_revocation(started.elapsed());
            }
        }
        if let Err(err) = self.audit.write_all(&step.audit) {
            tracing::error!(error = %err, "writing the audit log");
        }
        if step.persist {
            if let Err(err) = self.store.save(self.control.registry()) {
                tracing::error!(error = %err, "saving the registry; the chain cursor will be re-read");
            }
        }
        if step.persist || !step.ops.is_empty() {
            let zone = crate::dns::Zone::from_registry(self.control.registry());
            *self.zone.write().unwrap_or_else(|p| p.into_inner()) = zone;
        }
    }

    /// Puts the live peers and slots back to what was applied.
    fn repair_drift(&mut self) {
        match self.executor.repair_drift(self.control.applied()) {
            Ok(repaired) => self.status.record_drift_check(repaired.iter().map(|d| d.kind())),
            Err(err) => tracing::error!(error = %err, "drift: reading the live state back"),
        }
    }

    /// Tells the control core where peers are, so a revocation can deny
    /// the endpoint in the kernel, and the kernel which endpoints are live.
    fn learn_endpoints(&mut self) {
        let peers = self.executor.dataplane.peers();
        if let Some(maps) = &mut self.executor.xdp {
            // Their initiations keep their own buckets, off the unproven budget.
            let live = peers.iter().filter_map(|p| Some((p.endpoint?, p.since_last_handshake?)));
            if let Err(err) = maps.live.refresh(live, xdp::monotonic_now_ns()) {
                tracing::warn!(error = %err, "marking live peer endpoints in the kernel");
            }
        }
        for peer in peers {
            if let Some(endpoint) = peer.endpoint {
                self.control.on_endpoint(PeerSlot(peer.slot), endpoint);
            }
        }
    }
}
