//! The operator docs name what the code names: every metric family, every
//! configuration key, every access reason and every XDP verdict reason in
//! `docs/` exists in the code and the other way round (text only, no I/O
//! beyond reading the repository).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Every `.rs` file under `dir`, without its `#[cfg(test)]` tail.
fn non_test_sources(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            non_test_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            out.push(code);
        }
    }
}

/// Metric family names the daemon registers: `"gw_..."` string literals.
fn metric_names_in_code() -> BTreeSet<String> {
    let mut sources = Vec::new();
    non_test_sources(&repo().join("gateway/src"), &mut sources);
    non_test_sources(&repo().join("gateway-core/src"), &mut sources);
    let mut names = BTreeSet::new();
    for text in sources {
        for (i, _) in text.match_indices("\"gw_") {
            let name: String = text[i + 1..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            names.insert(name);
        }
    }
    names
}

/// `gw_...` words in a document.
fn metric_names_in(doc: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in doc.match_indices("gw_") {
        if i > 0 && doc.as_bytes()[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        let name: String = doc[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        // Histogram series are documented through their family.
        let family = ["_bucket", "_sum", "_count"].iter().fold(name.clone(), |n, s| n.strip_suffix(s).map(String::from).unwrap_or(n));
        names.insert(family);
    }
    names
}

#[test]
fn every_metric_family_is_documented_and_every_documented_one_exists() {
    let code = metric_names_in_code();
    assert!(code.len() >= 15, "found the families: {code:?}");
    let ops = read("docs/OPERATIONS.md");
    for name in &code {
        assert!(ops.contains(&format!("| `{name}` |")), "{name} has no row in docs/OPERATIONS.md's metrics table");
    }
    for doc in ["docs/OPERATIONS.md", "docs/ACCESS_CONTROL.md", "docs/ARCHITECTURE.md", "docs/INTEGRATION.md", "docs/REGISTRY.md"] {
        for name in metric_names_in(&read(doc)) {
            assert!(code.contains(&name), "{doc} names {name}, which the code does not export");
        }
    }
}

#[test]
fn every_configuration_key_is_documented() {
    let defaults = toml::Value::try_from(gateway::config::Config::default()).unwrap();
    let ops = read("docs/OPERATIONS.md");
    let mut n = 0;
    for (section, table) in defaults.as_table().unwrap() {
        for key in table.as_table().unwrap().keys() {
            assert!(ops.contains(&format!("| `{section}.{key}` |")), "{section}.{key} has no row in docs/OPERATIONS.md");
            n += 1;
        }
    }
    // `audit.path` is None by default, so serialisation leaves it out.
    assert!(ops.contains("| `audit.path` |"));
    assert!(n >= 25, "{n} keys");
}

#[test]
fn every_access_reason_is_explained() {
    let reasons: Vec<String> = read("gateway-core/src/registry/reason.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("AccessReason::").and_then(|r| r.split_once("=> \"")).map(|(_, n)| n.trim_end_matches("\",").to_string()))
        .collect();
    assert!(reasons.len() >= 14, "{reasons:?}");
    let doc = read("docs/ACCESS_CONTROL.md");
    for r in &reasons {
        assert!(doc.contains(&format!("| `{r}` |")), "reason {r} has no row in docs/ACCESS_CONTROL.md");
    }
}

#[test]
fn every_xdp_verdict_reason_is_listed() {
    let ops = read("docs/OPERATIONS.md");
    for r in gateway_common::XdpVerdict::ALL {
        assert!(ops.contains(&format!("`{}`", r.name())), "XDP reason {} missing from docs/OPERATIONS.md", r.name());
    }
    for map in gateway_common::ALL_MAPS {
        assert!(ops.contains(map), "map {map} missing from docs/OPERATIONS.md");
    }
}
