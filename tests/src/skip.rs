//! Visible skips: a test that cannot run here (not root, no engine, a tool
//! missing) says so through [`skip`] instead of passing silently. Each skip is
//! appended to the file named by `GATEWAY_SKIP_LOG`, which `cargo xtask test`
//! counts into its closing `N skipped` (and subtracts from `passed`); with
//! `GATEWAY_FAIL_ON_SKIP=1` (CI, which runs as root with every tool
//! installed) any skip fails the run.

use std::io::Write;

/// The environment variable naming the skip log.
pub const SKIP_LOG_ENV: &str = "GATEWAY_SKIP_LOG";

/// Records that the current test did not run, and why. The caller returns
/// right after.
pub fn skip(why: &str) {
    // libtest names each test's thread after the test.
    let test = std::thread::current().name().unwrap_or("<unnamed test>").to_string();
    eprintln!("SKIPPED {test}: {why}");
    let Some(path) = std::env::var_os(SKIP_LOG_ENV) else { return };
    let line = format!("{test}\t{why}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(err) = written {
        // The skip must not vanish: without the log the run would count it as passed.
        panic!("recording a skip in {}: {err}", std::path::Path::new(&path).display());
    }
}

/// `true` when running as root; otherwise records a skip and returns `false`.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root (network namespaces, XDP)");
        return false;
    }
    true
}
