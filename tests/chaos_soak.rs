//! The chaos soak for 60 s (CI's share of `cargo xtask bench chaos`): chain
//! operations, reorgs, RPC cuts, SIGKILLs at random and at crash points,
//! restarts and hostile frames against a real lab, with every invariant of
//! `gateway_tests::chaos::checks` held throughout. `GATEWAY_CHAOS_SEED`
//! replays a run; the seed is printed either way.

use anyhow::{ensure, Result};
use gateway_tests::chaos::{fresh_seed, run, Options};
use gateway_tests::netns::require_root;
use std::time::Duration;

#[test]
fn a_minute_of_chaos_breaks_no_invariant() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let seed = match std::env::var("GATEWAY_CHAOS_SEED") {
        Ok(s) => s.parse()?,
        Err(_) => fresh_seed(),
    };
    let report = run(&Options { duration: Duration::from_secs(60), seed, nodes: 2, keep: None })?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    ensure!(report.violations.is_empty(), "seed {seed}: {:#?}", report.violations);
    ensure!(report.quiet_checks >= 2, "a quiet point mid-run and one at the end");
    ensure!(report.ops.values().sum::<u64>() > 10, "the schedule ran: {:?}", report.ops);
    Ok(())
}
