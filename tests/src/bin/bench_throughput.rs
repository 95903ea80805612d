//! `cargo xtask bench throughput`: iperf3 TCP from a `wireguard-go` client
//! through (a) the gateway's data plane, (b) a `wireguard-go` server and
//! (c) `boringtun-cli`, alternating a-b-c, each pair in its own namespaces;
//! reports Mbit/s and the server process's CPU seconds per GB moved. With
//! `--reverse` the servers send instead.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use gateway_tests::netns::{require_root, Netns, VethPair};
use gateway_tests::wg::{
    iperf3_client, iperf3_client_reverse, iperf3_server, wg, GatewayProcess, Keypair, ScratchDir, UapiDaemon, WgGoNode, TUNNEL_PREFIX, WG_PORT,
};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Rounds of a-b-c.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// The servers send (`iperf3 -R`): the download direction.
    #[arg(long)]
    reverse: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/throughput.json")]
    json: PathBuf,
}

const IPERF_PORT: u16 = 5201;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Server {
    Gateway,
    WireguardGo,
    BoringtunCli,
}

impl Server {
    const ALL: [Server; 3] = [Server::Gateway, Server::WireguardGo, Server::BoringtunCli];

    fn label(self) -> &'static str {
        match self {
            Server::Gateway => "gateway",
            Server::WireguardGo => "wireguard-go",
            Server::BoringtunCli => "boringtun-cli",
        }
    }
}

/// The server's process, whichever implementation it is.
enum ServerProcess {
    Gateway(GatewayProcess),
    Uapi(UapiDaemon),
}

impl ServerProcess {
    fn pid(&self) -> u32 {
        match self {
            ServerProcess::Gateway(g) => g.process.id(),
            ServerProcess::Uapi(d) => d.process.id(),
        }
    }
}

/// One server and its client, each in a namespace of its own. Fields drop in
/// order: processes before the namespaces they live in.
struct Pair {
    server: Server,
    _client: WgGoNode,
    process: ServerProcess,
    client_ns: Netns,
    server_ns: Netns,
}

fn set_up(server: Server, dir: &ScratchDir) -> Result<Pair> {
    let server_ns = Netns::new("bsv")?;
    let client_ns = Netns::new("bcl")?;
    VethPair::connect(&server_ns, "10.200.0.1/24", &client_ns, "10.200.0.2/24")?;
    let client_keys = Keypair::generate(dir.path(), &format!("client-{}", server.label()))?;
    let client_allowed = format!("{TUNNEL_PREFIX}.2/32");
    let server_address = format!("{TUNNEL_PREFIX}.1/24");
    let (process, server_public) = match server {
        Server::Gateway => {
            let g = GatewayProcess::start(&server_ns, dir.path(), &[(client_keys.public.clone(), client_allowed)])?;
            let public = g.keys.public.clone();
            (ServerProcess::Gateway(g), public)
        }
        Server::WireguardGo | Server::BoringtunCli => {
            let keys = Keypair::generate(dir.path(), &format!("server-{}", server.label()))?;
            let (program, args): (&str, &[&str]) = match server {
                Server::WireguardGo => ("wireguard-go", &["-f"]),
                _ => ("boringtun-cli", &["--foreground", "--disable-drop-privileges"]),
            };
            let d = UapiDaemon::start(&server_ns, program, args, keys)?;
            wg(&["set", &d.iface, "listen-port", &WG_PORT.to_string(), "peer", &client_keys.public, "allowed-ips", &client_allowed])?;
            d.address(&server_ns, &server_address)?;
            let public = d.keys.public.clone();
            (ServerProcess::Uapi(d), public)
        }
    };
    let client = WgGoNode::start(
        &client_ns,
        client_keys,
        &format!("{TUNNEL_PREFIX}.2"),
        &server_public,
        &format!("10.200.0.1:{WG_PORT}"),
    )?;
    let pair = Pair { server, _client: client, process, client_ns, server_ns };
    gateway_tests::netns::wait_for(&format!("tunnel to {}", server.label()), Duration::from_secs(15), || {
        Ok(pair.client_ns.exec("ping", &["-c", "1", "-W", "1", &format!("{TUNNEL_PREFIX}.1")]).is_ok().then_some(()))
    })?;
    Ok(pair)
}


#[derive(Debug, Clone, Serialize)]
struct Sample {
    server: Server,
    round: u32,
    mbit_per_second: f64,
    bytes: u64,
    seconds: f64,
    server_cpu_seconds: f64,
    cpu_seconds_per_gb: f64,
    retransmits: u64,
}

fn measure(pair: &Pair, round: u32, seconds: u32, reverse: bool) -> Result<Sample> {
    let _iperf = iperf3_server(&pair.server_ns, IPERF_PORT)?;
    let pid = pair.process.pid();
    let cpu_before = gateway_tests::netns::cpu_seconds(pid)?;
    let client = if reverse { iperf3_client_reverse } else { iperf3_client };
    let run = client(&pair.client_ns, &format!("{TUNNEL_PREFIX}.1"), IPERF_PORT, seconds)?;
    let cpu = gateway_tests::netns::cpu_seconds(pid)? - cpu_before;
    if run.received_bytes == 0 {
        bail!("{}: nothing moved", pair.server.label());
    }
    Ok(Sample {
        server: pair.server,
        round,
        mbit_per_second: run.received_bits_per_second / 1e6,
        bytes: run.received_bytes,
        seconds: run.seconds,
        server_cpu_seconds: cpu,
        cpu_seconds_per_gb: cpu / (run.received_bytes as f64 / 1e9),
        retransmits: run.retransmits,
    })
}

#[derive(Debug, Serialize)]
struct Summary {
    server: Server,
    runs: usize,
    /// Total bytes over total time, so long and short runs weigh by duration.
    mbit_per_second: f64,
    cpu_seconds_per_gb: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    rounds: u32,
    seconds_per_run: u32,
    /// True when the servers sent (download direction).
    reverse: bool,
    samples: Vec<Sample>,
    summary: Vec<Summary>,
    /// gateway / wireguard-go and gateway / boringtun-cli.
    throughput_ratio_vs_wireguard_go: f64,
    throughput_ratio_vs_boringtun_cli: f64,
    cpu_per_gb_ratio_vs_wireguard_go: f64,
    cpu_per_gb_ratio_vs_boringtun_cli: f64,
}

fn summarise(server: Server, samples: &[Sample]) -> Summary {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.server == server).collect();
    let bytes: f64 = mine.iter().map(|s| s.bytes as f64).sum();
    let seconds: f64 = mine.iter().map(|s| s.seconds).sum();
    let cpu: f64 = mine.iter().map(|s| s.server_cpu_seconds).sum();
    Summary {
        server,
        runs: mine.len(),
        mbit_per_second: if seconds > 0.0 { bytes * 8.0 / seconds / 1e6 } else { 0.0 },
        cpu_seconds_per_gb: if bytes > 0.0 { cpu / (bytes / 1e9) } else { 0.0 },
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !require_root() {
        bail!("the benchmark needs root (network namespaces)");
    }
    for program in ["wireguard-go", "boringtun-cli", "iperf3", "wg"] {
        if gateway_tests::netns::run("sh", &["-c", &format!("command -v {program}")]).is_err() {
            bail!("{program} not found (boringtun-cli: `cargo install boringtun-cli --locked`)");
        }
    }
    let dir = ScratchDir::new()?;
    let pairs: Vec<Pair> = Server::ALL.iter().map(|s| set_up(*s, &dir)).collect::<Result<_>>()?;
    let mut samples = Vec::new();
    let mut out = std::io::stdout();
    for round in 0..args.rounds {
        for pair in &pairs {
            let sample = measure(pair, round, args.seconds, args.reverse)?;
            writeln!(
                out,
                "round {round} {:<14} {:>8.0} Mbit/s {:>6.2} CPU-s/GB {:>6} retransmits",
                pair.server.label(),
                sample.mbit_per_second,
                sample.cpu_seconds_per_gb,
                sample.retransmits
            )?;
            samples.push(sample);
        }
    }
    let summary: Vec<Summary> = Server::ALL.iter().map(|s| summarise(*s, &samples)).collect();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let report = Report {
        rounds: args.rounds,
        seconds_per_run: args.seconds,
        reverse: args.reverse,
        throughput_ratio_vs_wireguard_go: ratio(summary[0].mbit_per_second, summary[1].mbit_per_second),
        throughput_ratio_vs_boringtun_cli: ratio(summary[0].mbit_per_second, summary[2].mbit_per_second),
        cpu_per_gb_ratio_vs_wireguard_go: ratio(summary[0].cpu_seconds_per_gb, summary[1].cpu_seconds_per_gb),
        cpu_per_gb_ratio_vs_boringtun_cli: ratio(summary[0].cpu_seconds_per_gb, summary[2].cpu_seconds_per_gb),
        samples,
        summary,
    };
    writeln!(out)?;
    writeln!(out, "{:<14} {:>5} {:>12} {:>10}", "server", "runs", "Mbit/s", "CPU-s/GB")?;
    for s in &report.summary {
        writeln!(out, "{:<14} {:>5} {:>12.0} {:>10.2}", s.server.label(), s.runs, s.mbit_per_second, s.cpu_seconds_per_gb)?;
    }
    writeln!(
        out,
        "gateway / wireguard-go: throughput {:.2}x, CPU per GB {:.2}x",
        report.throughput_ratio_vs_wireguard_go, report.cpu_per_gb_ratio_vs_wireguard_go
    )?;
    writeln!(
        out,
        "gateway / boringtun-cli: throughput {:.2}x, CPU per GB {:.2}x",
        report.throughput_ratio_vs_boringtun_cli, report.cpu_per_gb_ratio_vs_boringtun_cli
    )?;
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    writeln!(out, "wrote {}", args.json.display())?;
    Ok(())
}
