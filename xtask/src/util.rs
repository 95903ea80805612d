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

/// Which build a benchmark driver runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

/// Builds the release gateway and the benchmark driver `bin` (tests/src/bin),
/// then runs it with `args`, writing JSON to `<target>/bench/<json>`.
pub fn bench_driver(bin: &str, args: &[&str], json: &str) -> anyhow::Result<()> {
    bench_driver_with(Profile::Release, bin, args, json)
}

/// [`bench_driver`] on the build `profile` names.
pub fn bench_driver_with(profile: Profile, bin: &str, args: &[&str], json: &str) -> anyhow::Result<()> {
    let release = profile == Profile::Release;
    build_all(release)?;
    let mut build = cargo();
    build.current_dir(repo_root()).args(["build", "-p", "gateway-tests", "--bin", bin]);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let dir = target_dir().join(if release { "release" } else { "debug" });
    run(
        Command::new(dir.join(bin))
            .current_dir(repo_root())
            .env("GATEWAY_BIN", dir.join("gateway"))
            .env("RUST_LOG", "warn")
            .args(args)
            .arg("--json")
            .arg(target_dir().join("bench").join(json)),
    )
}

/// Totals of `test result:` lines.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Totals {
    /// Tests that ran and returned early through `gateway_tests::skip`:
    /// libtest counted them as passed.
    pub fn record_skips(&mut self, n: u64) {
        self.passed = self.passed.saturating_sub(n);
        self.ignored += n;
    }

    /// Adds a libtest summary line such as
    /// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; ...`.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            // "ok. 3 passed" / "FAILED. 2 passed" / "1 failed" / "0 ignored"
            if words.len() < 2 {
                continue;
            }
            let (n, what) = (words[words.len() - 2], words[words.len() - 1]);
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test` args, echoing its output while totalling the results.
fn cargo_test(args: &[&str], extra: &[String], binary_args: &[&str], totals: &mut Totals) -> anyhow::Result<bool> {
    use std::io::{BufRead, BufReader, Write};
    let mut cmd = cargo();
    cmd.current_dir(repo_root()).args(["test", "--no-fail-fast"]).args(args).arg("--").args(extra).args(binary_args);
    cmd.stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        totals.add_line(&line);
        writeln!(out, "{line}")?;
    }
    Ok(child.wait()?.success())
}

/// Fails unless gateway-core is pure (`crate::purity`); says what it checked.
#[allow(clippy::print_stdout)] // the line CI shows
pub fn purity() -> anyhow::Result<()> {
    let (crates, files) = crate::purity::check_core()?;
    println!("xtask: gateway-core is pure ({crates} crates in its tree, {files} source files checked)");
    Ok(())
}

/// Every test: the eBPF object and the gateway binary first (the end-to-end
/// tests run the real binary), then the whole workspace. The end-to-end
/// package runs one test at a time: they share two cores and time-sensitive
/// traffic. Ends with one `N passed, N failed, N skipped` line over
/// everything: a test that recorded a skip (`gateway_tests::skip`) counts as
/// skipped, not passed, and with `GATEWAY_FAIL_ON_SKIP=1` (CI) any skip
/// fails the run.
#[allow(clippy::print_stdout)] // the closing summary line CI reads
pub fn test_all(extra: &[String]) -> anyhow::Result<()> {
    // The contract's ABI and bytecode the Rust code embeds must match its source.
    crate::contracts::contracts(true).context("contracts/out is stale: run `cargo xtask contracts`")?;
    purity()?;
    build_all(false)?;
    let skip_log = target_dir().join("test-skips.log");
    match std::fs::remove_file(&skip_log) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("clearing {}", skip_log.display()));
        }
        _ => {}
    }
    std::env::set_var(SKIP_LOG_ENV, &skip_log);
    let mut totals = Totals::default();
    let unit_ok = cargo_test(&["--workspace", "--exclude", "gateway-tests"], extra, &[], &mut totals)?;
    let fuzz_ok = fuzz_step(&mut totals, crate::fuzz::SECONDS_PER_TARGET)?;
    let e2e_ok = cargo_test(&["-p", "gateway-tests"], extra, &["--test-threads=1"], &mut totals)?;
    let skips = match std::fs::read_to_string(&skip_log) {
        Ok(text) => text.lines().map(str::to_string).collect::<Vec<_>>(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", skip_log.display())),
    };
    totals.record_skips(skips.len() as u64);
    for line in &skips {
        println!("xtask: skipped {}", line.replace('\t', ": "));
    }
    println!("xtask: {} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    if !(unit_ok && fuzz_ok && e2e_ok) {
        bail!("tests failed");
    }
    if totals.ignored > 0 && std::env::var("GATEWAY_FAIL_ON_SKIP").is_ok_and(|v| v == "1") {
        bail!("{} tests skipped, and GATEWAY_FAIL_ON_SKIP=1 (CI runs every test)", totals.ignored);
    }
    Ok(())
}

/// Builds the fuzz targets once and runs each for `seconds`; each counts
/// as one test. Without nightly or cargo-fuzz the step counts as one
/// skipped test.
#[allow(clippy::print_stdout)] // progress beside the test runners' own
pub fn fuzz_step(totals: &mut Totals, seconds: u64) -> anyhow::Result<bool> {
    if let Some(why) = crate::fuzz::unavailable() {
        println!("xtask: skipped fuzzing: {why}");
        totals.ignored += 1;
        return Ok(true);
    }
    let started = std::time::Instant::now();
    let bin_dir = crate::fuzz::build()?;
    let built = started.elapsed().as_secs_f64();
    let targets = crate::fuzz::targets()?;
    let outcomes = crate::fuzz::run_all(&bin_dir, &targets, seconds)?;
    let mut ok = true;
    for o in &outcomes {
        println!("xtask: fuzz {} ... {} ({:.0} s) {}", o.target, if o.ok { "ok" } else { "FAILED" }, o.seconds, o.summary);
        if o.ok {
            totals.passed += 1;
        } else {
            totals.failed += 1;
            ok = false;
        }
    }
    println!(
        "xtask: fuzzing took {:.0} s: build {built:.0} s, then {} targets for {} s each, {} at a time",
        started.elapsed().as_secs_f64(),
        outcomes.len(),
        seconds,
        crate::fuzz::AT_ONCE,
    );
    Ok(ok)
}

/// Where `gateway_tests::skip` records skips (the name is shared by value:
/// xtask does not depend on the tests crate).
const SKIP_LOG_ENV: &str = "GATEWAY_SKIP_LOG";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_libtest_summaries() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; finished in 0.01s");
        t.add_line("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add_line("running 3 tests");
        assert_eq!(t, Totals { passed: 14, failed: 1, ignored: 1 });
        t.record_skips(2);
        assert_eq!(t, Totals { passed: 12, failed: 1, ignored: 3 }, "a recorded skip is not a pass");
    }
}
