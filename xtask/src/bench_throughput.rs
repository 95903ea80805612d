//! `cargo xtask bench throughput`: builds the release gateway and the
//! benchmark driver (`gateway-tests`' `bench-throughput`), then runs it as
//! root: iperf3 through the gateway, wireguard-go and boringtun-cli.

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
    let (rounds, seconds) = (args.rounds.to_string(), args.seconds.to_string());
    let mut driver_args = vec!["--rounds", &rounds, "--seconds", &seconds];
    if args.reverse {
        driver_args.push("--reverse");
    }
    let json = if args.reverse { "throughput-reverse.json" } else { "throughput.json" };
    crate::util::bench_driver("bench-throughput", &driver_args, json)
}
