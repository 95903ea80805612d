//! `cargo xtask bench throughput`: installs the peers it compares against
//! (gotatun-cli and boringtun-cli from crates.io, wireguard-go, wg and iperf3
//! from Debian) when missing, builds the release gateway and the benchmark
//! driver (`gateway-tests`' `bench-throughput`), then runs it as root.

use std::path::PathBuf;
use std::process::Command;

#[derive(clap::Args, Debug)]
pub struct ThroughputArgs {
    /// Rounds over every client x server pair.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// The servers send (`iperf3 -R`) instead of receiving.
    #[arg(long)]
    reverse: bool,
    /// Clients streaming through one server at once (8: aggregate and fairness).
    #[arg(long, default_value_t = 1)]
    peers: usize,
    /// Gateway worker counts, one row each (e.g. `1,2`); default: the gateway's own.
    #[arg(long)]
    workers: Option<String>,
    /// Gateway burst bounds (`--max-burst`), one row each (e.g. `64,16`).
    #[arg(long)]
    bursts: Option<String>,
    /// GRO on the veths, as a NIC with NAPI does (see the driver's `--gro`).
    #[arg(long)]
    gro: bool,
    /// Another gateway binary measured as one more row (e.g. a build of main).
    #[arg(long)]
    baseline: Option<String>,
}

/// The crates.io peers and the versions the figures in docs/BENCHMARKS.md used.
const CRATES: [(&str, &str, &str); 2] = [("gotatun-cli", "0.10.2", "gotatun"), ("boringtun-cli", "0.7.1", "boringtun-cli")];
/// Debian packages the driver runs, with a binary each provides.
const DEBIAN: [(&str, &str); 4] = [("wireguard-go", "wireguard-go"), ("wireguard-tools", "wg"), ("iperf3", "iperf3"), ("ethtool", "ethtool")];

pub fn throughput(args: &ThroughputArgs) -> anyhow::Result<()> {
    install_peers()?;
    let (rounds, seconds, peers) = (args.rounds.to_string(), args.seconds.to_string(), args.peers.to_string());
    let mut driver_args = vec!["--rounds", &rounds, "--seconds", &seconds, "--peers", &peers];
    if args.reverse {
        driver_args.push("--reverse");
    }
    if let Some(workers) = &args.workers {
        driver_args.extend(["--workers", workers]);
    }
    if let Some(bursts) = &args.bursts {
        driver_args.extend(["--bursts", bursts]);
    }
    if let Some(baseline) = &args.baseline {
        driver_args.extend(["--baseline", baseline]);
    }
    if args.gro {
        driver_args.push("--gro");
    }
    let mut json = String::from("throughput");
    if args.peers > 1 {
        json.push_str(&format!("-peers{}", args.peers));
    }
    if args.reverse {
        json.push_str("-reverse");
    }
    if args.gro {
        json.push_str("-gro");
    }
    json.push_str(".json");
    crate::util::bench_driver("bench-throughput", &driver_args, &json)
}

fn on_path(binary: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {binary}")]).output().is_ok_and(|o| o.status.success())
}

/// `cargo install --locked` puts binaries in `$CARGO_HOME/bin`.
fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// Idempotent: nothing runs when every binary is there at its version.
fn install_peers() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN.iter().filter(|(_, bin)| !on_path(bin)).map(|(pkg, _)| *pkg).collect();
    if !missing.is_empty() {
        crate::util::run(Command::new("apt-get").args(["install", "-y", "--no-install-recommends"]).args(&missing))?;
    }
    let bin_dir = cargo_bin_dir();
    // The driver finds the crates.io binaries by name, like the Debian ones.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let joined = std::env::join_paths(std::iter::once(bin_dir.clone()).chain(std::env::split_paths(&path)))?;
    std::env::set_var("PATH", joined);
    for (krate, version, binary) in CRATES {
        let installed = Command::new(bin_dir.join(binary))
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version));
        if !installed {
            crate::util::run(crate::util::cargo().args(["install", "--locked", krate, "--version", version]))?;
        }
    }
    Ok(())
}
