//! `cargo xtask package`: the Debian package of the release gateway
//! (deploy/debian/build-deb.sh, dpkg-deb only) in <target>/debian/.

use crate::util::{build_all, repo_root, target_dir};
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::Command;

pub fn package(binary: Option<PathBuf>) -> anyhow::Result<()> {
    let binary = match binary {
        Some(b) => b,
        None => {
            build_all(true)?;
            target_dir().join("release").join("gateway")
        }
    };
    let out = target_dir().join("debian");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let built = Command::new("sh")
        .current_dir(repo_root())
        .arg("deploy/debian/build-deb.sh")
        .arg(&binary)
        .arg(env!("CARGO_PKG_VERSION"))
        .arg(&out)
        .output()
        .context("running deploy/debian/build-deb.sh")?;
    if !built.status.success() {
        bail!("build-deb.sh failed: {}", String::from_utf8_lossy(&built.stderr));
    }
    let deb = String::from_utf8_lossy(&built.stdout).trim().to_string();
    let size = std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
    eprintln!("xtask: {deb} ({:.1} MB); install with `apt install ./{}`", size as f64 / 1e6, deb.rsplit('/').next().unwrap_or(&deb));
    Ok(())
}
