//! `cargo xtask bench failover`: from the SIGKILL of the gateway holding the
//! floating address to the first ping reply through the standby, over many
//! failovers back and forth, with the stateless takeover on and, as the
//! anchor measured in the same run, off (`[wireguard] takeover = false`: the
//! node's own keepalive + rekey timers bring it over).
//!
//! The pair is the failover test's (`gateway_tests::ha`): anvil, two
//! `gateway run` daemons with one key, keepalived on each (VRRPv3 unicast,
//! advert_int 0.1 s), a `wireguard-go` node pinging the gateways' tunnel
//! address every 20 ms. After each failover the killed gateway is started
//! again and waits as the standby (ready, keepalived in BACKUP) before the
//! next SIGKILL goes to the other one.

use anyhow::{Context, Result};
use gateway_tests::bench_args::{arg, json_path};
use gateway_tests::ha::HaPair;
use gateway_tests::pinger::{Pinger, PING_INTERVAL};
use gateway_tests::stats::{load_average, percentile};
use std::io::Write as _;
use std::time::{Duration, SystemTime};

#[derive(serde::Serialize)]
struct Summary {
    mode: &'static str,
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    min_ms: f64,
    max_ms: f64,
    samples_ms: Vec<f64>,
}

fn summarise(mode: &'static str, samples: Vec<f64>) -> Summary {
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Summary {
        mode,
        count: samples.len(),
        p50_ms: percentile(&sorted, 50.0),
        p99_ms: percentile(&sorted, 99.0),
        min_ms: sorted.first().copied().unwrap_or(f64::NAN),
        max_ms: sorted.last().copied().unwrap_or(f64::NAN),
        samples_ms: samples,
    }
}

/// `count` failovers of one pair; each sample is SIGKILL -> first reply.
fn failovers(takeover: bool, count: usize) -> Result<Vec<f64>> {
    let mut pair = HaPair::new(1, takeover)?;
    let pinger = Pinger::start(&pair.lab.nodes[0], &HaPair::gateway_tunnel_ip())?;
    pinger.wait_reply_after(SystemTime::now(), Duration::from_secs(20)).context("first ping through the pair")?;
    let mut samples = Vec::new();
    for round in 0..count {
        let master = pair.wait_master(None, Duration::from_secs(20))?;
        let standby = 1 - master;
        pair.wait_standby(standby, Duration::from_secs(60))?;
        // The node is on the master now (the previous failover completed).
        pinger.wait_reply_after(SystemTime::now(), Duration::from_secs(30))?;
        let killed = SystemTime::now();
        pair.gateways[master].kill()?;
        // Replies after the dying gateway is reaped: on a loaded machine
        // it may answer for a few ms after `killed` (a run here counted a
        // 29 ms "failover" that way). Timed from `killed`, so what the
        // kill itself takes counts against the failover.
        let reaped = SystemTime::now();
        let after_reap = pinger.wait_reply_after(reaped, Duration::from_secs(60)).with_context(|| format!("failover {round}"))?;
        let back = reaped.duration_since(killed).unwrap_or_default() + after_reap;
        let ms = back.as_secs_f64() * 1000.0;
        writeln!(std::io::stderr(), "  {} failover {round}: {ms:.0} ms", if takeover { "takeover" } else { "timers" })?;
        samples.push(ms);
        pair.gateways[master].start()?;
        pair.gateways[master].wait_ready(Duration::from_secs(60))?;
    }
    Ok(samples)
}

fn main() -> Result<()> {
    let count = usize::try_from(arg("--count", 10)?)?.max(1);
    let load_before = load_average();
    let takeover = summarise("takeover", failovers(true, count)?);
    let timers = summarise("timers only (takeover off)", failovers(false, count)?);
    let load_after = load_average();
    let mut out = std::io::stdout();
    writeln!(out, "failover: SIGKILL of the master -> first ping reply through the standby ({count} failovers each)")?;
    writeln!(out, "{:<28} {:>9} {:>9} {:>9} {:>9}", "mode", "p50 ms", "p99 ms", "min ms", "max ms")?;
    for s in [&takeover, &timers] {
        writeln!(out, "{:<28} {:>9.0} {:>9.0} {:>9.0} {:>9.0}", s.mode, s.p50_ms, s.p99_ms, s.min_ms, s.max_ms)?;
    }
    let ratio = takeover.p99_ms / timers.p99_ms;
    writeln!(out, "takeover p99 / timers-only p99 = {ratio:.3}; target p99 < 1000 ms")?;
    let show = |l: Option<[f64; 3]>| l.map_or("unknown".to_string(), |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"));
    writeln!(out, "load average (1, 5, 15 min) before: {}, after: {}", show(load_before), show(load_after))?;
    let report = serde_json::json!({
        "what": "SIGKILL of the gateway holding the floating address -> first ping reply through the standby",
        "ping_interval_ms": PING_INTERVAL.as_millis() as u64,
        "target_p99_ms": 1000,
        "runs": [takeover, timers],
        "p99_ratio_takeover_to_timers": ratio,
        "load_average_before": load_before,
        "load_average_after": load_after,
    });
    if let Some(path) = json_path() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        writeln!(out, "JSON report: {}", path.display())?;
    }
    Ok(())
}
