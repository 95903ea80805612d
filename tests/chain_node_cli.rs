//! `gateway node ...` and `gateway chain follow` as an operator types them,
//! against a real anvil: the commands of the README, their JSON, their errors.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use gateway_tests::anvil::spawn_anvil;
use gateway_tests::node_cli::{write_secret, NodeCli as Cli};
use serde_json::Value;

/// anvil's dev account 0: deploys, so it owns the contract.
const ADMIN_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const NODE_OWNER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

#[test]
fn deploy_keygen_mint_list_info_revoke_and_follow_from_the_command_line() {
    let anvil = spawn_anvil(&[]);
    let dir = tempfile::tempdir().unwrap();
    let signer_key = dir.path().join("admin.key");
    write_secret(&signer_key, ADMIN_KEY);
    let mut cli = Cli { rpc_url: anvil.endpoint(), signer_key, contract: None };

    let deployed = cli.json(&["node", "deploy", "--json"]);
    let address = deployed["address"].as_str().expect("deploy --json prints the address").to_string();
    assert!(address.starts_with("0x") && address.len() == 42, "{deployed}");
    cli.contract = Some(address);

    let node_key = dir.path().join("node.key");
    let keygen = cli.json(&["node", "keygen", "--out", node_key.to_str().unwrap(), "--json"]);
    let public_key = keygen["public_key"].as_str().unwrap().to_string();
    let private_key = std::fs::read_to_string(&node_key).unwrap();
    assert_eq!(std::fs::metadata(&node_key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(public_key.len(), 44);
    assert!(!keygen.to_string().contains(private_key.trim()), "the private key is never printed");
    let again = cli.run(&["node", "keygen", "--out", node_key.to_str().unwrap()]);
    assert!(!again.status.success(), "keygen must not overwrite a key without --force");
    assert_eq!(std::fs::read_to_string(&node_key).unwrap(), private_key);

    let minted = cli.json(&[
        "node", "mint", NODE_OWNER, "node-a", "--key-file", node_key.to_str().unwrap(), "--token-uri", "ipfs://a", "--json",
    ]);
    assert_eq!(minted["token_id"], 1);
    assert_eq!(minted["public_key"], public_key.as_str(), "the key file's public key is bound");
    assert!(minted["tx_hash"].as_str().unwrap().starts_with("0x"));

    let duplicate = cli.run(&["node", "mint", NODE_OWNER, "node-a", "--pubkey", &public_key]);
    assert!(!duplicate.status.success());
    let stderr = String::from_utf8_lossy(&duplicate.stderr);
    assert!(stderr.contains("node id already has an active token"), "revert reason shown: {stderr}");
    let bad_key = cli.run(&["node", "mint", NODE_OWNER, "node-b", "--pubkey", "not-a-key"]);
    assert!(!bad_key.status.success());

    let list = cli.json(&["node", "list", "--json"]);
    let tokens = list.as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{list}");
    assert_eq!(tokens[0]["node_id"], "node-a");
    assert_eq!(tokens[0]["public_key"], public_key.as_str());
    assert_eq!(tokens[0]["is_active"], true);

    let info = cli.json(&["node", "info", "node-a", "--json"]);
    assert_eq!(info["token_id"], 1);
    assert_eq!(info["owner"], NODE_OWNER.to_lowercase());
    assert_eq!(info["token_uri"], "ipfs://a");

    let revoked = cli.json(&["node", "revoke", "1", "--json"]);
    assert!(revoked["tx_hash"].as_str().unwrap().starts_with("0x"));
    assert_eq!(cli.json(&["node", "info", "1", "--json"])["is_active"], false);
    let twice = cli.run(&["node", "revoke", "1"]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("token already revoked"));

    let cursor = dir.path().join("cursor.json");
    let follow = |cli: &Cli| -> Vec<Value> {
        let out = cli.run(&["chain", "follow", "--json", "--exit-when-synced", "--cursor", cursor.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
            .collect()
    };
    let lines = follow(&cli);
    assert!(lines.iter().any(|e| e["Granted"]["public_key"] == public_key.as_str()), "{lines:?}");
    assert!(lines.iter().any(|e| e["Revoked"]["token_id"] == 1), "{lines:?}");
    let last = &lines.last().unwrap()["Synced"];
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&cursor).unwrap()).unwrap();
    assert_eq!(saved["block_number"], last["block_number"], "the cursor file holds the last Synced");
    assert_eq!(saved["block_hash"], last["block_hash"]);

    // Resumed from its cursor, the follower has nothing new to say but that it is current.
    let again = follow(&cli);
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0].get("Synced").is_some(), "{again:?}");
}

#[test]
fn transactions_refuse_to_run_without_a_signer_key_file() {
    let anvil = spawn_anvil(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli { rpc_url: anvil.endpoint(), signer_key: dir.path().join("absent.key"), contract: None };
    let out = cli.run(&["node", "deploy"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signer key file"), "{}", String::from_utf8_lossy(&out.stderr));
    // There is no flag that takes a private key itself.
    let out = cli.run(&["node", "deploy", "--private-key", ADMIN_KEY]);
    assert!(!out.status.success());
}
