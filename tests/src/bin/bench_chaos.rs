//! `cargo xtask bench chaos --minutes N [--seed S]`: the chaos soak of
//! `gateway_tests::chaos` for N minutes (10 by default), its report as JSON.
//! Exits non-zero when any invariant was violated.

use std::io::Write as _;

use anyhow::Result;
use gateway_tests::bench_args::{arg, json_path};
use gateway_tests::chaos::{fresh_seed, run, Options};

fn main() -> Result<()> {
    let minutes = arg("--minutes", 10)?;
    let seed = arg("--seed", fresh_seed())?;
    let nodes = arg("--nodes", 3)? as usize;
    // The gateway's state and log are kept beside the report, to look into a violation.
    let keep = json_path().map(|p| p.with_extension("state"));
    let report = run(&Options { duration: std::time::Duration::from_secs(minutes * 60), seed, nodes, keep })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "chaos: seed {seed}, {:.0} s", report.duration_s)?;
    writeln!(out, "  operations: {:?}", report.ops)?;
    writeln!(out, "  refused by the contract: {:?}", report.ops_refused)?;
    writeln!(out, "  faults: {:?}", report.faults)?;
    if !report.faults_not_injected.is_empty() {
        writeln!(out, "  faults never injected: {:?}", report.faults_not_injected)?;
    }
    writeln!(
        out,
        "  quiet checks: {}, worst convergence {:.2} s (bound {:.0} s); worst decryption after the chain stopped granting: {:.2} s (bound {:.0} s)",
        report.quiet_checks, report.worst_convergence_s, report.convergence_bound_s, report.worst_decrypt_after_ungrant_s, report.staleness_bound_s
    )?;
    writeln!(out, "  violations: {}", report.violations.len())?;
    for v in &report.violations {
        writeln!(out, "    {:.1}s {}: {}", v.at_s, v.invariant, v.detail)?;
    }
    if let Some(path) = json_path() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        writeln!(out, "JSON report: {}", path.display())?;
    }
    anyhow::ensure!(report.violations.is_empty(), "{} invariant violations (seed {seed})", report.violations.len());
    // Ten minutes inject every kind many times over (docs/RELIABILITY.md);
    // a shorter run may miss the rarer crash points.
    anyhow::ensure!(
        minutes < 5 || report.faults_not_injected.is_empty(),
        "faults never injected in {minutes} minutes: {:?} (seed {seed})",
        report.faults_not_injected
    );
    Ok(())
}
