//! Builds the XDP object. xtask drives nightly cargo directly (no aya-build in
//! a build.rs): the userspace workspace stays on stable, `cargo check` and
//! clippy never spawn a nested nightly build, and the object path is one
//! documented place the gateway's build.rs embeds from.

use crate::util::{cargo_env_clean, repo_root, run, target_dir};
use anyhow::Context;
use std::path::PathBuf;
use std::process::Command;

/// Where the object is left for the gateway's build.rs to embed.
pub fn object_path() -> PathBuf {
    target_dir().join("bpf").join("gateway.bpf.o")
}

pub fn build_ebpf(release: bool) -> anyhow::Result<PathBuf> {
    let crate_dir = repo_root().join("gateway-ebpf");
    let ebpf_target = target_dir().join("ebpf");
    let mut cmd = Command::new("cargo");
    cargo_env_clean(&mut cmd);
    cmd.current_dir(&crate_dir)
        .args(["+nightly", "build", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&ebpf_target);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd).context("building gateway-ebpf (needs the nightly toolchain, rust-src and bpf-linker: run .ci/setup)")?;
    let profile = if release { "release" } else { "debug" };
    let built = ebpf_target.join("bpfel-unknown-none").join(profile).join("gateway-ebpf");
    let dest = object_path();
    std::fs::create_dir_all(dest.parent().context("object path has a parent")?)?;
    std::fs::copy(&built, &dest)
        .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
    eprintln!("xtask: eBPF object at {}", dest.display());
    Ok(dest)
}
