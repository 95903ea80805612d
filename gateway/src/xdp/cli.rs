//! `gateway xdp ...`: attach, inspect, steer by hand and detach the XDP
//! front. Every command but `attach` works on the pins, from any process.

use super::{attach, detach, monotonic_now_ns, AttachOptions, PinDir, PinnedMaps, XdpModeChoice};
use gateway_common::{XdpVerdict, XdpConfig, MODE_ENFORCE, MODE_OBSERVE};
use std::io::Write;
use std::net::SocketAddr;

/// Default WireGuard listen port (the protocol's conventional one).
pub const DEFAULT_WG_PORT: u16 = 51820;
/// Default instance name: the pin folder is `/sys/fs/bpf/gateway/`.
pub const DEFAULT_INSTANCE: &str = "gateway";

#[derive(clap::Args, Debug, Clone)]
pub struct InstanceArg {
    /// Instance name; pins live in /sys/fs/bpf/<instance>/.
    #[arg(long, env = "GATEWAY_XDP_INSTANCE", default_value = DEFAULT_INSTANCE)]
    pub instance: String,
}

/// Observe counts every verdict and passes all packets; enforce drops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EnforceMode {
    #[default]
    Observe,
    Enforce,
}

#[derive(clap::Subcommand, Debug)]
pub enum XdpCommand {
    /// Load the program, pin its maps and attach it to an interface.
    Attach {
        /// Underlay interface that receives the WireGuard UDP traffic.
        #[arg(long)]
        iface: String,
        /// WireGuard listen port the program guards.
        #[arg(long, default_value_t = DEFAULT_WG_PORT)]
        port: u16,
        #[command(flatten)]
        instance: InstanceArg,
        /// observe: count verdicts, pass everything; enforce: drop.
        #[arg(long, value_enum, default_value_t = EnforceMode::Observe)]
        mode: EnforceMode,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value_t = XdpModeChoice::Auto)]
        xdp_mode: XdpModeChoice,
        /// Handshake initiations per second per source address (0: no limit).
        #[arg(long, default_value_t = 20)]
        handshake_rate: u32,
        /// Burst of initiations a source may send before the rate applies.
        #[arg(long, default_value_t = 40)]
        handshake_burst: u32,
        /// Initiations per second, for the whole machine, from endpoints not
        /// marked live (0: off). Off by default here: without the daemon
        /// nothing marks live peers, so every initiation would pay it.
        #[arg(long, default_value_t = 0)]
        unproven_rate: u32,
        /// That budget's burst.
        #[arg(long, default_value_t = 0)]
        unproven_burst: u32,
        /// Replace an instance of the same name instead of failing.
        #[arg(long)]
        replace: bool,
    },
    /// Show the per-reason packet counters (summed over CPUs).
    Stats {
        #[command(flatten)]
        instance: InstanceArg,
        #[arg(long)]
        json: bool,
    },
    /// Open a peer slot by hand (normally the access layer does this).
    Allow {
        slot: u32,
        #[command(flatten)]
        instance: InstanceArg,
    },
    /// Close a peer slot by hand.
    Close {
        slot: u32,
        #[command(flatten)]
        instance: InstanceArg,
    },
    /// Deny handshake initiations from an endpoint for a while.
    Deny {
        endpoint: SocketAddr,
        /// Seconds until the deny lapses.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        #[command(flatten)]
        instance: InstanceArg,
    },
    /// List open slots, denied endpoints and the configuration.
    Show {
        #[command(flatten)]
        instance: InstanceArg,
        #[arg(long)]
        json: bool,
    },
    /// Measure the program's cost per packet on each verdict path
    /// (BPF_PROG_TEST_RUN, not attached), beside two anchor programs.
    Bench {
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Also write the JSON report here.
        #[arg(long)]
        json_out: Option<std::path::PathBuf>,
    },
    /// Detach the program and remove its pins.
    Detach {
        #[command(flatten)]
        instance: InstanceArg,
    },
}

pub fn run(cmd: XdpCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        XdpCommand::Attach {
            iface,
            port,
            instance,
            mode,
            xdp_mode,
            handshake_rate,
            handshake_burst,
            unproven_rate,
            unproven_burst,
            replace,
        } => {
            let config = XdpConfig {
                wg_port: port,
                mode: match mode {
                    EnforceMode::Observe => MODE_OBSERVE,
                    EnforceMode::Enforce => MODE_ENFORCE,
                },
                handshake_rate_per_sec: handshake_rate,
                handshake_burst,
                unproven_rate_per_sec: super::maps::per_cpu_share(unproven_rate),
                unproven_burst: super::maps::per_cpu_share(unproven_burst.max(unproven_rate.min(1))),
                ..XdpConfig::default()
            };
            let pins = attach(&AttachOptions {
                iface: iface.clone(),
                instance: instance.instance,
                config,
                xdp_mode,
                replace,
            })?;
            writeln!(
                out,
                "attached XDP to {iface} (port {port}, {mode:?}); maps pinned in {}",
                pins.path().display()
            )?;
        }
        XdpCommand::Stats { instance, json } => {
            let maps = PinnedMaps::open_instance(&instance.instance)?;
            let (stats, late) = (maps.stats.read()?, maps.late_stats.read()?);
            if json {
                let counters = |s: &gateway_common::XdpStats| -> serde_json::Map<String, serde_json::Value> {
                    XdpVerdict::ALL.iter().map(|r| (r.name().to_string(), s.get(*r).into())).collect()
                };
                let mut obj = counters(&stats);
                obj.insert("late_gate".into(), serde_json::Value::Object(counters(&late)));
                writeln!(out, "{}", serde_json::Value::Object(obj))?;
            } else {
                writeln!(out, "{:<28} {:>12} {:>12}", "verdict", "xdp", "late gate")?;
                for r in XdpVerdict::ALL {
                    writeln!(out, "{:<28} {:>12} {:>12}", r.name(), stats.get(r), late.get(r))?;
                }
            }
        }
        XdpCommand::Allow { slot, instance } => {
            PinnedMaps::open_instance(&instance.instance)?.allow.open_slot(slot, 0)?;
        }
        XdpCommand::Close { slot, instance } => {
            PinnedMaps::open_instance(&instance.instance)?.allow.close_slot(slot)?;
        }
        XdpCommand::Deny { endpoint, seconds, instance } => {
            let until = monotonic_now_ns().saturating_add(seconds.saturating_mul(1_000_000_000));
            if let Some(evicted) = PinnedMaps::open_instance(&instance.instance)?.deny.deny(endpoint, until, 0)? {
                writeln!(out, "note: {evicted} shared the slot and is no longer denied")?;
            }
        }
        XdpCommand::Show { instance, json } => {
            let pins = PinDir::for_instance(&instance.instance)?;
            let maps = PinnedMaps::open(&pins)?;
            let config = maps.config.get()?;
            let slots = maps.allow.open_slots()?;
            let now = monotonic_now_ns();
            let denied: Vec<(SocketAddr, u64)> = maps
                .deny
                .entries()?
                .into_iter()
                .filter(|(_, e)| e.expires_ns > now)
                .map(|(a, e)| (a, (e.expires_ns - now) / 1_000_000_000))
                .collect();
            if json {
                let v = serde_json::json!({
                    "instance": pins.instance(),
                    "attached": pins.is_attached(),
                    "wg_port": config.wg_port,
                    "mode": if config.mode == MODE_ENFORCE { "enforce" } else { "observe" },
                    "handshake_rate_per_sec": config.handshake_rate_per_sec,
                    "handshake_burst": config.handshake_burst,
                    "unproven_rate_per_sec_per_cpu": config.unproven_rate_per_sec,
                    "unproven_burst_per_cpu": config.unproven_burst,
                    "open_slots": slots,
                    "denied_endpoints": denied.iter().map(|(a, s)| serde_json::json!({"endpoint": a.to_string(), "expires_in_s": s})).collect::<Vec<_>>(),
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "instance {} attached={}", pins.instance(), pins.is_attached())?;
                writeln!(
                    out,
                    "port {} mode {} handshake rate {}/s burst {}",
                    config.wg_port,
                    if config.mode == MODE_ENFORCE { "enforce" } else { "observe" },
                    config.handshake_rate_per_sec,
                    config.handshake_burst
                )?;
                writeln!(out, "open slots: {slots:?}")?;
                for (a, s) in denied {
                    writeln!(out, "denied {a} for {s}s more")?;
                }
            }
        }
        XdpCommand::Bench { repeat, rounds, json_out } => {
            let report = super::bench::run(repeat, rounds)?;
            write!(out, "{}", super::bench::table(&report))?;
            if let Some(path) = json_out {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
                writeln!(out, "JSON report: {}", path.display())?;
            }
        }
        XdpCommand::Detach { instance } => {
            detach(&instance.instance)?;
            writeln!(out, "detached XDP instance {}", instance.instance)?;
        }
    }
    Ok(())
}
