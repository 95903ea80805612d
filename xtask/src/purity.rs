//! The wall around `gateway-core`: its dependency tree must hold no I/O
//! crate and its sources no I/O or clock call. `cargo xtask test` runs this
//! first, so CI fails the moment the pure core grows an I/O import.

use anyhow::{bail, Context};

use crate::util::{cargo, repo_root};

/// Crates that do I/O (sockets, files through a runtime, the kernel's BPF
/// interface, RPC transports) or run an event loop. A crate whose name
/// starts with one of these is refused in the core's normal dependencies.
const FORBIDDEN_CRATES: &[&str] = &[
    "tokio",
    "mio",
    "async-std",
    "smol",
    "reqwest",
    "hyper",
    "axum",
    "tungstenite",
    "tokio-tungstenite",
    "socket2",
    "aya",
    "nix",
    "alloy-provider",
    "alloy-transport",
    "alloy-pubsub",
    "alloy-rpc-client",
    "alloy-contract",
    "alloy-node-bindings",
];

/// Source text that means I/O or a clock read. Time enters the core as
/// `now` arguments; files, sockets, processes and the environment are the
/// gateway crate's.
const FORBIDDEN_SOURCE: &[&str] = &[
    "std::fs",
    "fs::read",
    "fs::write",
    "File::open",
    "File::create",
    "OpenOptions",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "UnixStream",
    "UnixListener",
    "SystemTime::now",
    "Instant::now",
    "thread::sleep",
    "std::process",
    "std::env",
    "std::io::stdin",
    "std::io::stdout",
];

/// What a test-only module (declared under `#[cfg(test)]`) may still use:
/// the environment, for replay knobs such as a seed. Clocks, files and
/// sockets stay forbidden there too, so the tests drive time as the code does.
const ALLOWED_IN_TESTS: &[&str] = &["std::env"];

/// `file` is compiled only for tests: the module that declares it does so
/// right under `#[cfg(test)]`.
fn test_only(file: &std::path::Path) -> bool {
    let (Some(dir), Some(stem)) = (file.parent(), file.file_stem().and_then(|s| s.to_str())) else {
        return false;
    };
    let parents = [dir.join("mod.rs"), dir.join("lib.rs"), dir.with_extension("rs")];
    let declaration = format!("mod {stem};");
    parents.iter().filter_map(|p| std::fs::read_to_string(p).ok()).any(|text| {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        lines.windows(2).any(|w| w[0] == "#[cfg(test)]" && w[1] == declaration)
    })
}

/// `name` is a forbidden crate (exactly, or one of its family: `hyper-util`).
fn forbidden_crate(name: &str) -> Option<&'static str> {
    FORBIDDEN_CRATES.iter().copied().find(|f| name == *f || name.starts_with(&format!("{f}-")))
}

/// The crate names in `cargo tree --prefix none --format {p}` output
/// (`name v1.2.3 (path)`, `(*)` marking repeats).
fn crate_names(tree: &str) -> Vec<String> {
    tree.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

/// Every forbidden pattern in `text` outside comments, as `line: pattern`.
fn forbidden_in_source(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for pattern in FORBIDDEN_SOURCE {
            if code.contains(pattern) {
                found.push((number + 1, *pattern));
            }
        }
    }
    found
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Fails with every violation found; returns what was checked.
pub fn check_core() -> anyhow::Result<(usize, usize)> {
    let output = cargo()
        .current_dir(repo_root())
        .args(["tree", "-p", "gateway-core", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()
        .context("running cargo tree")?;
    if !output.status.success() {
        bail!("cargo tree -p gateway-core failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let names = crate_names(&String::from_utf8_lossy(&output.stdout));
    let mut problems: Vec<String> = names
        .iter()
        .filter_map(|n| forbidden_crate(n).map(|f| format!("depends on {n} ({f}: I/O)")))
        .collect();
    problems.sort();
    problems.dedup();
    let mut files = Vec::new();
    rust_files(&repo_root().join("gateway-core/src"), &mut files)?;
    for file in &files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let test_only = test_only(file);
        for (line, pattern) in forbidden_in_source(&text) {
            if test_only && ALLOWED_IN_TESTS.contains(&pattern) {
                continue;
            }
            let rel = file.strip_prefix(repo_root()).unwrap_or(file);
            problems.push(format!("{}:{line} uses {pattern}", rel.display()));
        }
    }
    if !problems.is_empty() {
        bail!("gateway-core must stay pure (no I/O, no clock):\n  {}", problems.join("\n  "));
    }
    Ok((names.len(), files.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_only_modules_are_found_by_their_declaration() {
        let follower = repo_root().join("gateway-core/src/chain/follower");
        assert!(test_only(&follower.join("sim.rs")), "declared under #[cfg(test)]");
        assert!(!test_only(&follower.join("pass.rs")), "part of the follower itself");
    }

    #[test]
    fn io_crates_and_their_families_are_caught() {
        assert_eq!(forbidden_crate("tokio"), Some("tokio"));
        assert_eq!(forbidden_crate("hyper-util"), Some("hyper"));
        assert_eq!(forbidden_crate("alloy-transport-ws"), Some("alloy-transport"));
        assert_eq!(forbidden_crate("alloy-primitives"), None);
        assert_eq!(forbidden_crate("alloy-sol-types"), None);
        assert_eq!(forbidden_crate("tokenizer"), None, "a prefix of a name is not the crate");
        let tree = "gateway-core v0.1.0 (/w/gateway-core)\nserde v1.0.219\ntokio v1.45.0 (*)\n";
        assert_eq!(crate_names(tree), ["gateway-core", "serde", "tokio"]);
    }

    #[test]
    fn io_and_clock_calls_are_caught_outside_comments() {
        let text = "use std::fs;\n// Instant::now is banned here\nlet t = std::time::Instant::now();\nlet x = 1;\n";
        assert_eq!(forbidden_in_source(text), vec![(1, "std::fs"), (3, "Instant::now")]);
        assert!(forbidden_in_source("fn f(now: u64) {}\n").is_empty());
    }
}
