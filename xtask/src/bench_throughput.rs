//! `cargo xtask bench throughput`: builds the release gateway and the
//! benchmark driver (`gateway-tests`' `bench-throughput`), then runs it as
//! root: iperf3 through the gateway, wireguard-go and boringtun-cli.

use crate::util::{cargo, repo_root, run, target_dir};

#[derive(clap::Args, Debug)]
pub struct ThroughputArgs {
    /// Rounds of gateway, wireguard-go, boringtun-cli.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// The servers send (`iperf3 -R`) instead of receiving.
    #[arg(long)]
    reverse: bool,
}

pub fn throughput(args: &ThroughputArgs) -> anyhow::Result<()> {
    let mut build = cargo();
    build.current_dir(repo_root()).args(["build", "--release", "-p", "gateway", "-p", "gateway-tests", "--bin", "gateway", "--bin", "bench-throughput"]);
    run(&mut build)?;
    let release = target_dir().join("release");
    let name = if args.reverse { "throughput-reverse.json" } else { "throughput.json" };
    let json = target_dir().join("bench").join(name);
    let mut bench = std::process::Command::new(release.join("bench-throughput"));
    bench
        .current_dir(repo_root())
        .env("GATEWAY_BIN", release.join("gateway"))
        .args(["--rounds", &args.rounds.to_string(), "--seconds", &args.seconds.to_string()])
        .arg("--json")
        .arg(json);
    if args.reverse {
        bench.arg("--reverse");
    }
    run(&mut bench)
}
