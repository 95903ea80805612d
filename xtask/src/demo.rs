//! `cargo xtask demo`: builds everything, then runs the demo binary (anvil,
//! the contract, the gateway, two wireguard-go nodes, a revocation).

use crate::util::{build_all, repo_root, run, target_dir};
use std::process::Command;

pub fn run_demo() -> anyhow::Result<()> {
    build_all(false)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).current_dir(repo_root()).args(["build", "-p", "gateway-tests", "--bin", "demo"]))?;
    run(Command::new(target_dir().join("debug").join("demo"))
        .current_dir(repo_root())
        .env("GATEWAY_BIN", target_dir().join("debug").join("gateway")))
}
