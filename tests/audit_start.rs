//! The audit log of a start (real anvil, real gateway with XDP in a
//! namespace): a start is no outage, so neither a first start nor a
//! restart from a fresh saved state writes a `policy_change` with
//! `chain_unavailable` before its first sync; the first line is the grant.

use anyhow::{ensure, Context, Result};
use gateway_tests::wg::Keypair;
use gateway_tests::lab::{Lab, DEV_ADDRESSES};
use gateway_tests::netns::require_root;

/// `(action, reason)` of every line of the gateway's audit log.
fn audit_lines(lab: &Lab) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(lab.dir.path().join("state/audit.jsonl")).context("audit log")?;
    text.lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).with_context(|| format!("audit line {line}"))?;
            let field = |name: &str| record[name].as_str().map(str::to_string).with_context(|| format!("{name} in {line}"));
            Ok((field("action")?, field("reason")?))
        })
        .collect()
}

#[test]
fn a_start_writes_no_chain_unavailable_before_its_first_sync() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(0)?;
    let keys = Keypair::generate(lab.dir.path(), "a")?;
    lab.node_cli(0, &["mint", DEV_ADDRESSES[1], "alpha", "--pubkey", &keys.public, "--json"])?;
    lab.start_gateway("")?;
    let first = audit_lines(&lab)?;
    ensure!(first.first() == Some(&("grant".into(), "granted".into())), "the first audit line is the grant: {first:?}");
    ensure!(!first.iter().any(|(action, _)| action == "policy_change"), "a first start is no policy change: {first:?}");

    // A restart from the saved state, synced seconds ago, is no outage either.
    lab.stop_gateway()?;
    lab.restart_gateway()?;
    let again = audit_lines(&lab)?;
    ensure!(again.len() >= first.len(), "the log is appended to: {again:?}");
    let after_restart = &again[first.len()..];
    ensure!(
        !after_restart.iter().any(|(_, reason)| reason == "chain_unavailable"),
        "a restart wrote chain_unavailable: {after_restart:?}"
    );
    Ok(())
}
