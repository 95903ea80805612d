//! The seed's exact interface, spoken by a client that is not ours: the seed's
//! own kind of client (ethers, human-readable ABI, tests/js/seed_interface.js)
//! calls every function and sees every event of the reference contract on a
//! real anvil; the gateway's CLI hands the contract over and back; the
//! gateway's follower sees what ethers did. And the minimal ERC-721 variant
//! (contracts/MinimalAccessNFT.sol) really emits only `Transfer` on transfers
//! and burns, which is what the follower's tests rely on.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolEvent;
use gateway_tests::anvil::{test_key, TestChain};
use gateway_tests::minimal_nft::{self, MinimalAccessNFT};
use gateway_tests::netns::repo_root;
use gateway_tests::node_cli::{write_secret, NodeCli};
use serde_json::Value;

fn hex_key(chain: &TestChain, index: usize) -> String {
    format!("0x{}", alloy::hex::encode(chain.anvil.keys()[index].to_bytes()))
}

fn checksummed(address: Address) -> String {
    address.to_checksum(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_ethers_client_drives_every_function_and_event_of_its_interface() {
    let chain = TestChain::start(&[]).await;
    let (admin, holder, successor) = (chain.address(0), chain.address(1), chain.address(2));
    let out = Command::new("node")
        .arg(repo_root().join("tests/js/seed_interface.js"))
        .env("RPC_URL", chain.http_url())
        .env("CONTRACT", format!("{:#x}", chain.contract))
        .env("ADMIN_KEY", hex_key(&chain, 0))
        .env("HOLDER_KEY", hex_key(&chain, 1))
        .env("SUCCESSOR_KEY", hex_key(&chain, 2))
        .output()
        .expect("run node (installed by .ci/setup)");
    assert!(out.status.success(), "the ethers client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let transcript: Value = serde_json::from_slice(&out.stdout).unwrap();

    // The script asserts each answer itself; here: it covered the whole interface, as ethers saw it.
    let functions: Vec<&str> = transcript["functions"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(functions.len(), 11, "the seed's interface has 11 functions: {functions:?}");
    assert!(functions.contains(&"transferContractOwnership"));
    let events = &transcript["events"];
    assert_eq!(events["OwnershipTransferInitiated"], serde_json::json!([checksummed(admin), checksummed(successor)]));
    assert_eq!(events["OwnershipTransferred"], serde_json::json!([checksummed(admin), checksummed(successor)]));
    assert_eq!(events["NodeAccessTransferred"], serde_json::json!(["1", checksummed(holder), checksummed(successor)]));

    // The chain itself agrees that the handover happened (alloy, reading what ethers wrote).
    let contract = gateway::chain::contract::DstackAccessNFT::new(chain.contract, chain.admin.provider().clone());
    assert_eq!(contract.owner().call().await.unwrap(), successor);
    let initiated = chain
        .admin
        .provider()
        .get_logs(
            &alloy::rpc::types::Filter::new()
                .address(chain.contract)
                .event_signature(gateway::chain::contract::DstackAccessNFT::OwnershipTransferInitiated::SIGNATURE_HASH)
                .from_block(chain.deploy_block),
        )
        .await
        .unwrap();
    assert_eq!(initiated.len(), 1, "one OwnershipTransferInitiated log: {initiated:?}");

    // `gateway node transfer-ownership` / `accept-ownership` hand it back in two steps.
    let dir = tempfile::tempdir().unwrap();
    let (admin_key, successor_key) = (dir.path().join("admin.key"), dir.path().join("successor.key"));
    write_secret(&admin_key, &hex_key(&chain, 0));
    write_secret(&successor_key, &hex_key(&chain, 2));
    let signed_by = |signer_key| NodeCli { rpc_url: chain.http_url(), signer_key, contract: Some(format!("{:#x}", chain.contract)) };
    let (as_admin, as_successor) = (signed_by(admin_key), signed_by(successor_key));
    let not_owner = as_admin.run(&["node", "transfer-ownership", &format!("{admin:#x}")]);
    assert!(!not_owner.status.success(), "only the owner may start a handover");
    assert!(String::from_utf8_lossy(&not_owner.stderr).contains("OwnableUnauthorizedAccount"), "{not_owner:?}");
    let started = as_successor.json(&["node", "transfer-ownership", &format!("{admin:#x}"), "--json"]);
    assert_eq!(started["owner"], format!("{successor:#x}"), "two-step: the owner stays until the new one accepts");
    assert_eq!(started["pending_owner"], format!("{admin:#x}"));
    let text = as_successor.run(&["node", "transfer-ownership", &format!("{admin:#x}")]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("accept-ownership"), "the text says what comes next: {text:?}");
    let accepted = as_admin.json(&["node", "accept-ownership", "--json"]);
    assert_eq!(accepted["owner"], format!("{admin:#x}"));
    assert_eq!(accepted["pending_owner"], Value::Null);
    assert_eq!(contract.owner().call().await.unwrap(), admin);
    let zero = as_admin.run(&["node", "transfer-ownership", &format!("{:#x}", Address::ZERO)]);
    assert!(String::from_utf8_lossy(&zero.stderr).contains("new owner is the zero address"), "{zero:?}");

    // The gateway's follower sees everything the ethers client did.
    let lines = as_admin.follow_to_head(chain.deploy_block);
    let granted: Vec<&str> = lines.iter().filter_map(|e| e["Granted"]["node_id"].as_str()).collect();
    assert_eq!(granted, ["node-a", "node-b", "node-c"], "{lines:?}");
    assert!(lines.iter().any(|e| e["Transferred"]["token_id"] == 1), "{lines:?}");
    assert!(lines.iter().any(|e| e["Revoked"]["token_id"] == 1), "{lines:?}");
    assert!(lines.iter().any(|e| e["KeyUpdated"]["owner"] == format!("{holder:#x}")), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_variant_emits_only_transfer_on_transfers_and_burns() {
    let chain = TestChain::start(&[]).await;
    let provider = chain.admin.provider().clone();
    let (address, _) = minimal_nft::deploy(&provider).await.unwrap();
    let admin_view = MinimalAccessNFT::new(address, provider.clone());
    let holder_session = chain.session(1).await;
    let holder_view = MinimalAccessNFT::new(address, holder_session.provider().clone());
    let (holder, other) = (chain.address(1), chain.address(2));
    let key = test_key(1);

    let topics = |receipt: &alloy::rpc::types::TransactionReceipt| -> Vec<alloy::primitives::B256> {
        receipt.inner.logs().iter().map(|log| log.topics()[0]).collect()
    };
    let minted = admin_view.mintNodeAccess(holder, "node-m".into(), key.clone(), String::new()).send().await.unwrap();
    let minted = minted.get_receipt().await.unwrap();
    assert_eq!(
        topics(&minted),
        [MinimalAccessNFT::Transfer::SIGNATURE_HASH, MinimalAccessNFT::NodeAccessGranted::SIGNATURE_HASH],
        "a mint is ERC-721's Transfer from zero, then the grant"
    );

    let moved = holder_view.transferFrom(holder, other, U256::from(1)).send().await.unwrap().get_receipt().await.unwrap();
    assert!(moved.status());
    assert_eq!(topics(&moved), [MinimalAccessNFT::Transfer::SIGNATURE_HASH], "a transfer emits only Transfer");
    let access = admin_view.getNodeAccess(U256::from(1)).call().await.unwrap();
    assert_eq!(access.wireguardPublicKey, key, "and leaves the key bound: no unbind semantics");
    assert!(access.isActive);
    assert_eq!(admin_view.ownerOf(U256::from(1)).call().await.unwrap(), other);

    let burnt = admin_view.burn(U256::from(1)).send().await.unwrap().get_receipt().await.unwrap();
    assert!(burnt.status());
    assert_eq!(topics(&burnt), [MinimalAccessNFT::Transfer::SIGNATURE_HASH], "a burn emits only Transfer");
    let burn_log = MinimalAccessNFT::Transfer::decode_log(&burnt.inner.logs()[0].inner).unwrap();
    assert_eq!((burn_log.from, burn_log.to), (other, Address::ZERO));
    assert!(admin_view.getNodeAccess(U256::from(1)).call().await.is_err(), "a burnt token reads as nonexistent");
    let stranger = holder_view.burn(U256::from(1)).send().await;
    assert!(stranger.is_err(), "a burnt token cannot be burnt again");
}
