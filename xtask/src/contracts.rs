//! `cargo xtask contracts [--check]`: compiles the reference contract with the
//! pinned npm solc into contracts/out/ (the artifact Rust embeds), or fails
//! when the committed artifact is stale.

use crate::util;

pub fn contracts(check: bool) -> anyhow::Result<()> {
    let root = util::repo_root();
    anyhow::ensure!(
        root.join("node_modules/solc").exists(),
        "node_modules/solc is missing: run `npm ci` at the repository root (or .ci/setup)"
    );
    let mut cmd = std::process::Command::new("node");
    cmd.current_dir(&root).arg("contracts/compile.js");
    if check {
        cmd.arg("--check");
    }
    util::run(&mut cmd)
}
