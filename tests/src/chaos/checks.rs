//! The soak's invariants, each fed samples as the run goes (pure but for
//! reading the gateway's files and /proc): decryption only from keys the
//! chain grants (beyond the staleness window), a registry file that always
//! parses and never goes back, an audit record for every chain change, and
//! flat memory and descriptors. Each violation keeps the time and the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

/// How long a key the chain no longer grants may still be decrypted, in
/// seconds the gateway was running with the chain reachable (the follower
/// applies a revoke within a poll and a backfill; a restart replays from its
/// cursor first). Cuts and downtime do not count: inside
/// `chain.max_staleness_s` (600 s here, longer than any cut) the gateway
/// serves the last state it knew, as documented.
pub const STALENESS_BOUND: Duration = Duration::from_secs(10);

/// Once the chain is quiet and reachable, the kernel slots and the data
/// plane's peers equal the chain's admitted set within this.
pub const CONVERGENCE_BOUND: Duration = Duration::from_secs(30);

/// Growth allowed between the first and the last quiet sample.
const RSS_SLACK_KB: u64 = 24 * 1024;
const FD_SLACK: u64 = 16;

#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub at_s: f64,
    pub seed: u64,
    pub invariant: &'static str,
    pub detail: String,
}

#[derive(Default)]
pub struct Violations {
    pub seed: u64,
    pub list: Vec<Violation>,
}

impl Violations {
    pub fn record(&mut self, at: Duration, invariant: &'static str, detail: String) {
        eprintln!("chaos: VIOLATION at {:.1}s (seed {}): {invariant}: {detail}", at.as_secs_f64(), self.seed);
        // One line per distinct problem is enough; a stuck state would repeat every tick.
        if self.list.iter().any(|v| v.invariant == invariant && v.detail == detail) {
            return;
        }
        self.list.push(Violation { at_s: at.as_secs_f64(), seed: self.seed, invariant, detail });
    }
}

/// Invariant 1: per key, how long (in healthy time) the chain has not
/// granted it, and the data plane's receive counter last seen for it.
#[derive(Default)]
pub struct Decryption {
    /// Healthy seconds since the chain stopped granting the key.
    ungranted: BTreeMap<String, Duration>,
    /// Last `rx_bytes` per key, of the gateway process `pid`.
    rx: BTreeMap<String, u64>,
    pid: Option<u32>,
    /// The longest ungranted time at which a key was still decrypted.
    pub worst: Duration,
}

impl Decryption {
    /// The chain's granted keys now; `elapsed` of healthy time passed since
    /// the last call (zero while cut off or down).
    pub fn chain(&mut self, granted: &BTreeSet<String>, known: impl IntoIterator<Item = String>, elapsed: Duration) {
        for key in known {
            if granted.contains(&key) {
                self.ungranted.remove(&key);
            } else {
                *self.ungranted.entry(key).or_default() += elapsed;
            }
        }
    }

    /// The data plane's counters (`wg show dump`) of gateway `pid`.
    pub fn dataplane(&mut self, pid: u32, rx: &BTreeMap<String, u64>, at: Duration, out: &mut Violations) {
        if self.pid != Some(pid) {
            self.pid = Some(pid);
            self.rx.clear();
        }
        for (key, &bytes) in rx {
            let before = self.rx.insert(key.clone(), bytes);
            let grew = before.is_some_and(|b| bytes > b) || (before.is_none() && bytes > 0);
            let Some(&age) = self.ungranted.get(key) else { continue };
            if grew {
                self.worst = self.worst.max(age);
                if age > STALENESS_BOUND {
                    out.record(
                        at,
                        "decrypted_after_revocation",
                        format!("key {key} decrypted {:.1}s (healthy) after the chain stopped granting it", age.as_secs_f64()),
                    );
                }
            }
        }
    }
}

/// Invariant 3a: the registry file parses whenever it is read, and its
/// cursor never goes back in block number.
#[derive(Default)]
pub struct RegistryFile {
    pub reads: u64,
    pub highest_block: u64,
}

impl RegistryFile {
    pub fn check(&mut self, path: &Path, at: Duration, out: &mut Violations) {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => return out.record(at, "registry_parses", format!("reading {}: {e}", path.display())),
        };
        self.reads += 1;
        let doc: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(d) => d,
            Err(e) => return out.record(at, "registry_parses", format!("{} bytes that are not JSON: {e}", bytes.len())),
        };
        if doc["version"] != "2.0" || !doc["peers"].is_array() {
            return out.record(at, "registry_parses", "not a version 2.0 registry document".into());
        }
        let Some(block) = doc["cursor"]["block_number"].as_u64() else { return };
        if block < self.highest_block {
            out.record(at, "registry_never_goes_back", format!("cursor at block {block} after {}", self.highest_block));
        }
        self.highest_block = self.highest_block.max(block);
    }
}

/// Invariant 3c: temp files of registry saves that a kill interrupted, left
/// by processes no longer alive. The gateway removes them when it opens the
/// registry, so once it runs none is left.
pub fn registry_leftovers(state_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            let pid = name.strip_prefix(".registry.json.tmp.").and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists())
        })
        .collect()
}

/// A chain change the soak made.
#[derive(Clone, Debug)]
pub struct ChainChange {
    pub what: &'static str,
    pub token: u64,
    pub block: u64,
}

/// Invariant 3b: every chain change the soak made and that stayed on the
/// canonical chain has an audit record: one carrying its transaction hash,
/// or, when the gateway learned the change from a re-read of the token (a
/// reorg, a reconcile, a backfill snapshot: no log, so no hash), one for
/// that token from that block on.
pub fn audit_missing(audit: &Path, canonical: &BTreeMap<String, ChainChange>) -> Result<Vec<String>, std::io::Error> {
    let text = match std::fs::read_to_string(audit) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let records: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let hashes: BTreeSet<String> = records.iter().filter_map(|r| r["tx_hash"].as_str().map(str::to_ascii_lowercase)).collect();
    let token_id = |r: &serde_json::Value| r["token_id"].as_u64().or_else(|| r["token_id"].as_str()?.parse().ok());
    let by_snapshot = |c: &ChainChange| {
        records.iter().any(|r| {
            r["tx_hash"].is_null() && token_id(r) == Some(c.token) && r["block_number"].as_u64().is_some_and(|b| b >= c.block)
        })
    };
    Ok(canonical
        .iter()
        .filter(|(tx, c)| !hashes.contains(*tx) && !by_snapshot(c))
        .map(|(tx, c)| format!("{} of token {} in block {} ({tx})", c.what, c.token, c.block))
        .collect())
}

/// One gateway process's size.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Resources {
    pub pid: u32,
    pub rss_kb: u64,
    pub fds: u64,
}

impl Resources {
    pub fn of(pid: u32) -> Option<Resources> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        Some(Resources { pid, rss_kb, fds })
    }
}

/// Invariant 4: the samples taken once converged, whichever process made
/// them; the last may exceed the first by the slack only.
pub fn resources_flat(samples: &[Resources]) -> Option<String> {
    let (first, last) = (samples.first()?, samples.last()?);
    if last.rss_kb > first.rss_kb + first.rss_kb / 2 + RSS_SLACK_KB {
        return Some(format!("RSS grew from {} kB to {} kB", first.rss_kb, last.rss_kb));
    }
    if last.fds > first.fds + FD_SLACK {
        return Some(format!("open descriptors grew from {} to {}", first.fds, last.fds));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_decrypted_past_the_window_is_a_violation_and_within_it_is_not() {
        let mut d = Decryption::default();
        let mut v = Violations::default();
        let none = BTreeSet::new();
        d.chain(&none, ["k".to_string()], Duration::from_secs(3));
        d.dataplane(1, &BTreeMap::from([("k".to_string(), 100)]), Duration::ZERO, &mut v);
        assert!(v.list.is_empty(), "inside the window");
        d.chain(&none, ["k".to_string()], STALENESS_BOUND);
        d.dataplane(1, &BTreeMap::from([("k".to_string(), 100)]), Duration::ZERO, &mut v);
        assert!(v.list.is_empty(), "no new bytes");
        d.dataplane(1, &BTreeMap::from([("k".to_string(), 132)]), Duration::ZERO, &mut v);
        assert_eq!(v.list.len(), 1, "new bytes past the window");
        d.chain(&BTreeSet::from(["k".to_string()]), ["k".to_string()], Duration::ZERO);
        d.dataplane(1, &BTreeMap::from([("k".to_string(), 200)]), Duration::ZERO, &mut v);
        assert_eq!(v.list.len(), 1, "granted again");
    }

    #[test]
    fn resources_may_grow_by_the_slack_only() {
        let r = |rss_kb, fds| Resources { pid: 1, rss_kb, fds };
        assert_eq!(resources_flat(&[r(20_000, 30), r(40_000, 40)]), None);
        assert!(resources_flat(&[r(20_000, 30), r(80_000, 30)]).is_some());
        assert!(resources_flat(&[r(20_000, 30), r(20_000, 60)]).is_some());
    }
}
