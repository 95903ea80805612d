//! A token whose key is a low-order Curve25519 point never gets in, against
//! real anvil and `gateway run`: the all-zero key (`AAAA…=`, 32 zero bytes,
//! valid base64 the contract accepts) and a point of order 8 are minted on
//! chain beside an ordinary node. Both are refused as `invalid_key`, with
//! their token in `/v1/access` and why in the audit log; their slots stay
//! closed in XDP and the data plane holds no peer for them, while the
//! ordinary node's tunnel works.

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use gateway::xdp::PinnedMaps;
use gateway_tests::lab::{Lab, DEV_ADDRESSES};
use gateway_tests::netns::{require_root, wait_for};
use gateway_tests::wg::{Keypair, TUNNEL_PREFIX};
use std::time::Duration;

/// Token t -> slot t + 1 (the gateway holds host 1).
fn slot_of(token: u32) -> u32 {
    token + 1
}

#[test]
fn low_order_keys_minted_on_chain_are_invalid_and_never_peers() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let b64 = |bytes: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let weak = gateway_core::registry::low_order_encodings();
    let zero = b64(&[0u8; 32]);
    ensure!(zero == "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "{zero}");
    // The order-8 point with its top bit set: a non-canonical spelling.
    let order_8 = weak.iter().find(|u| u[0] == 0xe0 && u[31] & 0x80 != 0).map(b64).context("an order-8 encoding")?;

    let mut lab = Lab::new(1)?;
    let keys = Keypair::generate(lab.dir.path(), "ordinary")?;
    for (name, key) in [("node-zero", zero.as_str()), ("node-order8", order_8.as_str()), ("node-ok", keys.public.as_str())] {
        lab.node_cli(0, &["mint", DEV_ADDRESSES[1], name, "--pubkey", key, "--json"])?;
    }
    lab.start_gateway("")?;
    let _node = lab.start_node(0, keys.clone(), &format!("{TUNNEL_PREFIX}.4"))?;
    ensure!(lab.ping(0, &format!("{TUNNEL_PREFIX}.1"), Duration::from_secs(20)), "the ordinary node (token 3) gets in");

    for (token, key) in [(1u32, &zero), (2, &order_8)] {
        // The path segment is the key itself: base64's '/' and '+' are
        // escaped, '=' is fine.
        let escaped = key.replace('/', "%2F").replace('+', "%2B");
        let (status, body) = lab.http_get(&format!("/v1/access/{escaped}"))?;
        let v: serde_json::Value = serde_json::from_str(&body).with_context(|| body.clone())?;
        ensure!(status == 403, "{key}: {status} {body}");
        ensure!(v["reason"] == "invalid_key" && v["allowed"] == false, "{key}: {body}");
        ensure!(v["token_id"].to_string().trim_matches('"') == token.to_string(), "{key}: the token that bound it: {body}");
        let maps = PinnedMaps::open_instance(&lab.instance)?;
        ensure!(!maps.allow.is_open(slot_of(token))?, "token {token}'s slot stays closed");
    }
    ensure!(PinnedMaps::open_instance(&lab.instance)?.allow.is_open(slot_of(3))?, "the ordinary node's slot is open");

    // `/v1/peers` lists every token; only data-plane peers have `wireguard`.
    let (_, body) = lab.http_get("/v1/peers")?;
    let peers: serde_json::Value = serde_json::from_str(&body).with_context(|| body.clone())?;
    let entry = |key: &str| peers["peers"].as_array().and_then(|all| all.iter().find(|p| p["public_key"] == key).cloned());
    for key in [&zero, &order_8] {
        let p = entry(key).with_context(|| format!("{key} listed: {body}"))?;
        ensure!(p["status"] == "invalid_key" && p["access_granted"] == false, "{p}");
        ensure!(p.get("wireguard").is_none(), "no data-plane peer for {key}: {p}");
    }
    let ok = entry(&keys.public).context("the ordinary node listed")?;
    ensure!(ok["access_granted"] == true && ok.get("wireguard").is_some(), "the ordinary node is a peer: {ok}");

    let audit_path = lab.dir.path().join("state/audit.jsonl");
    let audit = wait_for("the grants in the audit log", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        Ok((text.lines().count() >= 3).then_some(text))
    })?;
    for key in [&zero, &order_8] {
        let record = audit
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["public_key"] == key.as_str())
            .with_context(|| format!("no audit record for {key}:\n{audit}"))?;
        ensure!(record["reason"] == "invalid_key" && record["access"] == false, "{record}");
        ensure!(record["detail"].as_str().is_some_and(|d| d.contains("low-order")), "why: {record}");
    }
    lab.stop_gateway()?;
    Ok(())
}
