//! Several gateways on one chain, no shared database: two gateways follow the
//! same contract and derive the same registry (same IPs, same decisions), and
//! each enforces a revocation in its own kernel on its own.

use anyhow::{ensure, Context, Result};
use gateway::xdp::PinnedMaps;
use gateway_tests::cutproxy::CutProxy;
use gateway_tests::lab::{attach_to_lan, http_get_in, Lab, DEV_ADDRESSES, HTTP_PORT};
use gateway_tests::netns::{gateway_bin, require_root, unique_name, wait_for, ChildGuard, Netns};
use gateway_tests::wg::{Keypair, TUNNEL_PREFIX};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

fn get(ns: &Netns, path: &str) -> Result<(u16, String)> {
    http_get_in(ns, HTTP_PORT, path)
}

/// node_id -> (ip_address, status) as a gateway's /v1/peers reports it.
fn registry_view(ns: &Netns) -> Result<BTreeMap<String, (String, String)>> {
    let (_, body) = get(ns, "/v1/peers")?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v["peers"]
        .as_array()
        .context("peers")?
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
            (s("node_id"), (s("ip_address"), s("status")))
        })
        .collect())
}

#[test]
fn two_gateways_agree_and_each_enforces_a_revocation() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(1)?;
    let keys: Vec<Keypair> = (0..3).map(|i| Keypair::generate(lab.dir.path(), &format!("k{i}"))).collect::<Result<_>>()?;
    for (i, k) in keys.iter().enumerate().take(2) {
        lab.node_cli(0, &["mint", DEV_ADDRESSES[1], &format!("node-{i}"), "--pubkey", &k.public, "--json"])?;
    }
    lab.start_gateway("")?;

    // The second gateway: its own namespace on the LAN, its own key, XDP
    // instance and state; the chain reached through a forwarder to anvil.
    let gw2 = Netns::new("lg2")?;
    let underlay2 = attach_to_lan(&lab.lan, &gw2, "10.201.0.2/24")?;
    let _rpc = CutProxy::between(gw2.name(), 8545, lab.gw.name(), lab.anvil_port())?;
    let key2 = Keypair::generate(lab.dir.path(), "gateway2")?;
    let instance2 = unique_name("lab");
    let config = std::fs::read_to_string(&lab.config_path)?
        .replace(&lab.instance, &instance2)
        .replace(&lab.wg_iface, &unique_name("wgl"))
        .replace(lab.gateway_keys.private_path(), key2.private_path())
        .replace(&lab.gateway_iface, &underlay2)
        .replace("/state\"", "/state2\"");
    let config2 = lab.dir.path().join("gateway2.toml");
    std::fs::write(&config2, config)?;
    let mut cmd = Command::new(gateway_bin());
    cmd.args(["--netns", gw2.name(), "run", "--config"]).arg(&config2).stdout(Stdio::null()).stderr(Stdio::null());
    let _second = ChildGuard::spawn(cmd, "second gateway")?;
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new(gateway_bin()).args(["xdp", "detach", "--instance", &self.0]).output();
        }
    }
    let _detach = Detach(instance2.clone());
    wait_for("second gateway ready", Duration::from_secs(30), || Ok(matches!(get(&gw2, "/readyz"), Ok((200, _))).then_some(())))?;

    // A token minted while both run, then the same registry on both.
    lab.node_cli(0, &["mint", DEV_ADDRESSES[1], "node-2", "--pubkey", &keys[2].public, "--json"])?;
    wait_for("both see three tokens", Duration::from_secs(15), || {
        Ok((registry_view(&lab.gw)?.len() == 3 && registry_view(&gw2)?.len() == 3).then_some(()))
    })?;
    let one = registry_view(&lab.gw)?;
    ensure!(one == registry_view(&gw2)?, "same registry on both gateways: {one:?}");
    ensure!(one.get("node-2").map(|p| p.0.as_str()) == Some(&format!("{TUNNEL_PREFIX}.4")[..]), "token 3 -> host 4: {one:?}");
    for k in &keys {
        let path = format!("/v1/access/{}", k.public);
        ensure!(get(&lab.gw, &path)? == get(&gw2, &path)?, "same decision for {}", k.public);
    }

    // Revoke token 1: each gateway closes slot 2 in its own kernel.
    lab.node_cli(0, &["revoke", "1", "--json"])?;
    for instance in [&lab.instance, &instance2] {
        wait_for("slot 2 closed", Duration::from_secs(10), || {
            Ok((!PinnedMaps::open_instance(instance)?.allow.is_open(2)?).then_some(()))
        })?;
        ensure!(PinnedMaps::open_instance(instance)?.allow.is_open(3)?, "slot 3 stays open on {instance}");
    }
    ensure!(registry_view(&lab.gw)? == registry_view(&gw2)?, "still the same registry");
    Ok(())
}
