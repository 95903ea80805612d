//! `cargo xtask test`'s fuzzing step: every cargo-fuzz target of fuzz/
//! built once (`cargo fuzz build`: one set of flags, so nothing is rebuilt
//! between targets), then each built binary run for a fixed time over its
//! committed corpus (fuzz/corpus/<target>). New inputs go to a scratch
//! corpus under the target dir, crashes to target/fuzz-artifacts/<target>/.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::util::{cargo_env_clean, repo_root, target_dir};

/// Seconds per target in `cargo xtask test`.
pub const SECONDS_PER_TARGET: u64 = 30;
/// Targets fuzzed at once: libFuzzer uses one core per process, and the
/// machines here have two.
pub const AT_ONCE: usize = 2;

/// Why fuzzing cannot run here, or `None` when nightly and cargo-fuzz are installed.
pub fn unavailable() -> Option<String> {
    let works = |args: &[&str]| {
        let mut cmd = Command::new("cargo");
        cargo_env_clean(&mut cmd);
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&["+nightly", "--version"]) {
        return Some("no nightly toolchain (`rustup toolchain install nightly`)".into());
    }
    if !works(&["fuzz", "--version"]) {
        return Some(
            "cargo-fuzz is not installed (`cargo install cargo-fuzz`; .ci/setup does)".into(),
        );
    }
    None
}

fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cargo_env_clean(&mut cmd);
    cmd.current_dir(repo_root()).arg("+nightly");
    cmd
}

/// The targets `cargo fuzz list` names.
pub fn targets() -> anyhow::Result<Vec<String>> {
    let out = nightly_cargo()
        .args(["fuzz", "list"])
        .output()
        .context("cargo fuzz list")?;
    if !out.status.success() {
        bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Builds every target once: release with debug assertions (overflow
/// checks too), AddressSanitizer, into fuzz/target/<host triple>/release.
pub fn build() -> anyhow::Result<PathBuf> {
    crate::util::run(nightly_cargo().args(["fuzz", "build", "--debug-assertions"]))?;
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("rustc -vV")?;
    let text = String::from_utf8_lossy(&rustc.stdout).into_owned();
    let host = text
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("rustc -vV names no host")?;
    Ok(repo_root()
        .join("fuzz/target")
        .join(host.trim())
        .join("release"))
}

/// One target's run: whether it ended without a crash, and its last line.
pub struct Outcome {
    pub target: String,
    pub ok: bool,
    pub summary: String,
    pub seconds: f64,
}

fn spawn(
    bin_dir: &Path,
    target: &str,
    seconds: u64,
) -> anyhow::Result<(std::process::Child, PathBuf)> {
    let scratch = target_dir().join("fuzz-corpus").join(target);
    let artifacts = target_dir().join("fuzz-artifacts").join(target);
    std::fs::create_dir_all(&scratch)?;
    std::fs::create_dir_all(&artifacts)?;
    let log = target_dir()
        .join("fuzz-artifacts")
        .join(format!("{target}.log"));
    let child = Command::new(bin_dir.join(target))
        .current_dir(repo_root())
        .arg(format!("-max_total_time={seconds}"))
        // One input taking 10 s is a hang worth reporting.
        .arg("-timeout=10")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .arg(&scratch)
        .arg(repo_root().join("fuzz/corpus").join(target))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting fuzz target {target}"))?;
    Ok((child, log))
}

/// Runs every target for `seconds`, [`AT_ONCE`] at a time.
pub fn run_all(bin_dir: &Path, targets: &[String], seconds: u64) -> anyhow::Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    for batch in targets.chunks(AT_ONCE) {
        let started = Instant::now();
        let mut running = Vec::new();
        for target in batch {
            running.push((target.clone(), spawn(bin_dir, target, seconds)?));
        }
        for (target, (mut child, log)) in running {
            let status = child.wait()?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let stats: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("stat::") || l.contains("Done "))
                .collect();
            let summary = if status.success() {
                stats.join(", ")
            } else {
                let crash: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        l.contains("ERROR") || l.contains("panicked") || l.contains("artifact")
                    })
                    .collect();
                format!("{status}: {} (log: {})", crash.join(" | "), log.display())
            };
            outcomes.push(Outcome {
                target,
                ok: status.success(),
                summary,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    Ok(outcomes)
}
