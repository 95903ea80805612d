//! Bad configuration and bad files: `gateway run` exits non-zero with a
//! message that names the problem, and overwrites nothing.

use anyhow::{ensure, Result};
use gateway_tests::lab::write_secret;
use gateway_tests::netns::gateway_bin;
use gateway_tests::wg::{Keypair, ScratchDir};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const CONTRACT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

fn config(dir: &Path, key: &Path) -> String {
    format!(
        r#"
[gateway]
state_dir = "{state}"
[chain]
rpc_urls = ["http://127.0.0.1:9"]
contract = "{CONTRACT}"
[wireguard]
private_key_file = "{key}"
[xdp]
enabled = false
[http]
enabled = false
"#,
        state = dir.join("state").display(),
        key = key.display()
    )
}

/// Runs `gateway run --config <file>`: (exit code, stderr).
fn run(config_file: &Path) -> Result<(i32, String)> {
    let out = std::process::Command::new(gateway_bin()).arg("run").arg("--config").arg(config_file).output()?;
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn a_missing_config_file_is_named() -> Result<()> {
    let dir = ScratchDir::new()?;
    let (code, err) = run(&dir.path().join("nope.toml"))?;
    ensure!(code != 0 && err.contains("nope.toml"), "{code}: {err}");
    ensure!(err.matches("No such file or directory (os error 2)").count() == 1, "the OS error once: {err}");
    Ok(())
}

#[test]
fn invalid_fields_are_named_with_their_fix() -> Result<()> {
    let dir = ScratchDir::new()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[chain]\nrpc_urls = [\"localhost:8545\"]\ncontract = \"0x12\"\n[wireguard]\nlisten_port = 0\n")?;
    let (code, err) = run(&path)?;
    ensure!(code != 0, "exit code {code}");
    for field in ["chain.rpc_urls[0]", "chain.contract", "wireguard.listen_port", "xdp.iface", "fix:"] {
        ensure!(err.contains(field), "stderr lacks {field}: {err}");
    }
    std::fs::write(&path, "[chain]\nrpc_url = [\"http://x\"]\n")?;
    let (code, err) = run(&path)?;
    ensure!(code != 0 && err.contains("rpc_url"), "unknown key named: {err}");
    Ok(())
}

#[test]
fn a_private_key_readable_by_others_is_refused() -> Result<()> {
    let dir = ScratchDir::new()?;
    let keys = Keypair::generate(dir.path(), "gw")?;
    std::fs::set_permissions(keys.private_path(), std::fs::Permissions::from_mode(0o644))?;
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, config(dir.path(), Path::new(keys.private_path())))?;
    let (code, err) = run(&path)?;
    ensure!(code != 0 && err.contains("chmod 600"), "{code}: {err}");
    let secret = std::fs::read_to_string(keys.private_path())?;
    ensure!(!err.contains(secret.trim()), "the key itself is never printed");
    Ok(())
}

#[test]
fn a_corrupt_or_foreign_registry_is_refused_and_kept() -> Result<()> {
    let dir = ScratchDir::new()?;
    let keys = Keypair::generate(dir.path(), "gw")?;
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, config(dir.path(), Path::new(keys.private_path())))?;
    std::fs::create_dir_all(dir.path().join("state"))?;
    let registry = dir.path().join("state/registry.json");
    for (contents, expect) in [
        ("{\"version\": \"2.0\", \"peers\": [", "registry"),
        ("{\"version\": \"1.0\", \"peers\": []}", "1.0"),
    ] {
        write_secret(&registry, contents)?;
        let (code, err) = run(&path)?;
        ensure!(code != 0 && err.contains(expect), "{code}: {err}");
        ensure!(std::fs::read_to_string(&registry)? == contents, "the registry file was not touched");
    }
    Ok(())
}
