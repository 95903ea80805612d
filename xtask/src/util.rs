//! Paths and process helpers shared by the xtask commands.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::Command;

pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Removes what the outer (stable) cargo put in the environment, so a nested
/// cargo picks its own toolchain and flags.
pub fn cargo_env_clean(cmd: &mut Command) {
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "RUSTC_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO"] {
        cmd.env_remove(var);
    }
}

/// Runs a command, failing when it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn build_all(release: bool) -> anyhow::Result<()> {
    crate::ebpf::build_ebpf(true)?;
    let mut cmd = cargo();
    cmd.current_dir(repo_root()).args(["build", "-p", "gateway"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

/// Every test: the eBPF object and the gateway binary first (the end-to-end
/// tests run the real binary), then the whole workspace. The end-to-end
/// package runs one test at a time: they share two cores and time-sensitive
/// traffic.
pub fn test_all(extra: &[String]) -> anyhow::Result<()> {
    build_all(false)?;
    let mut unit = cargo();
    unit.current_dir(repo_root())
        .args(["test", "--workspace", "--exclude", "gateway-tests", "--"])
        .args(extra);
    run(&mut unit).context("unit tests")?;
    let mut e2e = cargo();
    e2e.current_dir(repo_root())
        .args(["test", "-p", "gateway-tests", "--"])
        .args(extra)
        .arg("--test-threads=1");
    run(&mut e2e).context("end-to-end tests")
}
