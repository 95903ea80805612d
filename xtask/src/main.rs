//! `cargo xtask ...`: the project's build, test and demo front door.

mod bench_throughput;
mod contracts;
mod demo;
mod ebpf;
mod fuzz;
mod package;
mod purity;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the XDP program (gateway-ebpf) for bpfel-unknown-none on nightly;
    /// the object lands in <target>/bpf/gateway.bpf.o.
    BuildEbpf {
        /// Release profile (both profiles are optimised: the verifier needs it;
        /// release keeps full debug info for BTF line info).
        #[arg(long)]
        release: bool,
    },
    /// Build the eBPF object, then the gateway binary that embeds it.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build everything and run every test (unit, anvil, network namespaces).
    Test {
        /// Arguments for the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Only the purity check `test` starts with: gateway-core's dependency
    /// tree holds no I/O crate and its sources no file, socket or clock call.
    Purity,
    /// Build every cargo-fuzz target of fuzz/ once and run each for N seconds
    /// over its corpus (`cargo xtask test` does this for 30 s each); crashes
    /// land in <target>/fuzz-artifacts/<target>/.
    Fuzz {
        #[arg(long, default_value_t = fuzz::SECONDS_PER_TARGET)]
        seconds: u64,
    },
    /// Compile contracts/DstackAccessNFT.sol and the MinimalAccessNFT test fixture
    /// into contracts/out/ (ABI + bytecode embedded by the gateway and the tests);
    /// --check fails if the committed output is stale.
    Contracts {
        #[arg(long)]
        check: bool,
    },
    /// The main job: a local demo in scratch network namespaces, or with
    /// --container in Docker containers (docker/docker-compose.yml).
    Demo {
        /// The demo's story through the compose file: images from the
        /// release build, least-privilege gateway, everything removed after.
        #[arg(long)]
        container: bool,
        /// With --container: the operators' `privileged: true` alone.
        #[arg(long, requires = "container")]
        privileged: bool,
    },
    /// The Debian package: the release gateway (debug info split off), the
    /// configuration, the hardened systemd unit; lands in <target>/debian/.
    Package {
        /// Package this binary instead of building the release one.
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
    },
    /// Benchmarks (root): `throughput` compares the data plane with
    /// wireguard-go and boringtun-cli.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// iperf3 TCP through gateway, wireguard-go and boringtun-cli, alternating.
    Throughput(bench_throughput::ThroughputArgs),
    /// The XDP program's cost per packet on each verdict path (BPF_PROG_TEST_RUN),
    /// beside a bare counted drop and a parse + hash lookup measured in the same run.
    Xdp {
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Many tokens: backfill time, time to apply every peer, memory per idle peer.
    Scale {
        #[arg(long, default_value_t = 10_000)]
        tokens: u64,
    },
    /// Legitimate throughput kept under three floods, gateway vs wireguard-go
    /// vs boringtun-cli, with each server's CPU and the XDP drops.
    Flood {
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// Access decision latency: cached, uncached, and a chain re-read for scale.
    Access {
        #[arg(long, default_value_t = 200)]
        tokens: u64,
    },
    /// A fresh backfill behind a provider's eth_getLogs limits: calls and seconds
    /// beside today's fixed 2,000-block span and the fewest the limits allow
    /// (a real anvil with a long history behind the fault-injecting proxy).
    Backfill {
        #[arg(long, default_value_t = 20_000)]
        blocks: u64,
        #[arg(long, default_value_t = 2_000)]
        tokens: u64,
    },
    /// SIGKILL of the gateway holding the floating address to the first ping
    /// reply through the standby (keepalived pair), p50/p99, beside the same
    /// failovers with the takeover off (the nodes' own timers).
    Failover {
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
    /// The chaos soak (tests/src/chaos): anvil, the gateway with XDP enforcing
    /// and wireguard-go nodes under a seeded schedule of chain operations,
    /// reorgs, RPC cuts, SIGKILLs (at random and at crash points), restarts
    /// and hostile frames for N minutes, every invariant checked throughout;
    /// prints the seed, writes <target>/bench/chaos.json, fails on any violation.
    Chaos {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Replays a run's schedule (the seed it printed).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
    },
    /// Revoke-transaction receipt to the first in-kernel drop of that peer's
    /// packets, p50/p99 over many revocations, WebSocket and HTTP polling.
    Revocation {
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// HTTP polling interval of the gateway under test.
        #[arg(long, default_value_t = 100)]
        poll_interval_ms: u64,
    },
}

/// Builds the release gateway (object embedded) and runs `gateway xdp bench`.
fn bench_xdp(repeat: u32, rounds: u32) -> anyhow::Result<()> {
    util::build_all(true)?;
    let json = util::target_dir().join("bench").join("xdp.json");
    util::run(
        std::process::Command::new(util::target_dir().join("release").join("gateway"))
            .args(["xdp", "bench", "--repeat", &repeat.to_string(), "--rounds", &rounds.to_string(), "--json-out"])
            .arg(json),
    )
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BuildEbpf { release } => ebpf::build_ebpf(release).map(|_| ()),
        Command::Build { release } => util::build_all(release),
        Command::Test { args } => util::test_all(&args),
        Command::Purity => util::purity(),
        Command::Contracts { check } => contracts::contracts(check),
        Command::Fuzz { seconds } => {
            let mut totals = util::Totals::default();
            match util::fuzz_step(&mut totals, seconds) {
                Ok(true) if totals.ignored == 0 => Ok(()),
                Ok(true) => Err(anyhow::anyhow!("fuzzing could not run here")),
                Ok(false) => Err(anyhow::anyhow!("{} fuzz targets crashed", totals.failed)),
                Err(err) => Err(err),
            }
        }
        Command::Package { binary } => package::package(binary),
        Command::Demo { container, privileged } => demo::run_demo(container, privileged),
        Command::Bench(BenchCommand::Throughput(args)) => bench_throughput::throughput(&args),
        Command::Bench(BenchCommand::Xdp { repeat, rounds }) => bench_xdp(repeat, rounds),
        Command::Bench(BenchCommand::Revocation { count, poll_interval_ms }) => util::bench_driver(
            "bench-revocation",
            &["--count", &count.to_string(), "--poll-interval-ms", &poll_interval_ms.to_string()],
            "revocation.json",
        ),
        Command::Bench(BenchCommand::Backfill { blocks, tokens }) => util::bench_driver(
            "bench-backfill",
            &["--blocks", &blocks.to_string(), "--tokens", &tokens.to_string()],
            "backfill.json",
        ),
        Command::Bench(BenchCommand::Chaos { minutes, seed, nodes }) => {
            let (minutes, nodes) = (minutes.to_string(), nodes.to_string());
            let seed = seed.map(|s| s.to_string());
            let mut args = vec!["--minutes", minutes.as_str(), "--nodes", nodes.as_str()];
            if let Some(seed) = &seed {
                args.extend(["--seed", seed.as_str()]);
            }
            // The debug build, as the CI soak: the invariants are measured, not the speed.
            util::bench_driver_with(util::Profile::Debug, "bench-chaos", &args, "chaos.json")
        }
        Command::Bench(BenchCommand::Failover { count }) => util::bench_driver("bench-failover", &["--count", &count.to_string()], "failover.json"),
        Command::Bench(BenchCommand::Scale { tokens }) => util::bench_driver("bench-scale", &["--tokens", &tokens.to_string()], "scale.json"),
        Command::Bench(BenchCommand::Flood { seconds }) => util::bench_driver("bench-flood", &["--seconds", &seconds.to_string()], "flood.json"),
        Command::Bench(BenchCommand::Access { tokens }) => util::bench_driver("bench-access", &["--tokens", &tokens.to_string()], "access.json"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
