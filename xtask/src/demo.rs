//! `cargo xtask demo`: builds everything, then runs the demo binary (anvil,
//! the contract, the gateway, two wireguard-go nodes, a revocation), in
//! network namespaces or, with `--container`, in Docker containers through
//! docker/docker-compose.yml with images made from the release build.

use crate::util::{build_all, repo_root, run, target_dir};
use std::process::Command;

pub fn run_demo(container: bool, privileged: bool) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if container {
        // The images take the release binary (stripped in the Dockerfile).
        build_all(true)?;
        run(Command::new(&cargo).current_dir(repo_root()).args(["build", "-p", "gateway-tests", "--bin", "container-demo"]))?;
        let mut demo = Command::new(target_dir().join("debug").join("container-demo"));
        demo.current_dir(repo_root()).env("GATEWAY_BIN", target_dir().join("release").join("gateway"));
        if privileged {
            demo.arg("--privileged");
        }
        return run(&mut demo);
    }
    build_all(false)?;
    run(Command::new(cargo).current_dir(repo_root()).args(["build", "-p", "gateway-tests", "--bin", "demo"]))?;
    run(Command::new(target_dir().join("debug").join("demo"))
        .current_dir(repo_root())
        .env("GATEWAY_BIN", target_dir().join("debug").join("gateway")))
}
