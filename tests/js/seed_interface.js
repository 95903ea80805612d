#!/usr/bin/env node
// Drives every function and event of the seed's interface (DESIGN.md, "The
// contract"; the seed's contracts/interfaces/IDstackAccessNFT.sol) against a
// deployed reference contract through ethers with a human-readable ABI, the
// way the seed's own client talks to the contract: no alloy anywhere, so an
// ABI mismatch between the seed and our contract shows up here.
//
//   RPC_URL=... CONTRACT=0x... ADMIN_KEY=0x... HOLDER_KEY=0x... SUCCESSOR_KEY=0x... \
//     node tests/js/seed_interface.js
//
// Asserts as it goes (exit 1 on the first mismatch) and prints one JSON
// transcript on stdout for the Rust test (tests/chain_interface.rs) to check.

"use strict";

const assert = require("node:assert/strict");
const { ethers } = require("ethers");

// The seed's interface, one human-readable line per function and event.
const SEED_INTERFACE = [
  "function mintNodeAccess(address to, string nodeId, string wireguardPublicKey, string tokenURI) returns (uint256)",
  "function revokeNodeAccess(uint256 tokenId)",
  "function getNodeAccess(uint256 tokenId) view returns (string nodeId, string wireguardPublicKey, uint256 createdAt, bool isActive)",
  "function hasNodeAccess(address user, string nodeId) view returns (bool)",
  "function getTokenIdByNodeId(string nodeId) view returns (uint256)",
  "function verifyAccess(address user, string nodeId) view returns (bool)",
  "function getPublicKeyByOwner(address owner) view returns (string)",
  "function getPublicKeyByTokenId(uint256 tokenId) view returns (string)",
  "function ownerOf(uint256 tokenId) view returns (address)",
  "function tokenURI(uint256 tokenId) view returns (string)",
  "function transferContractOwnership(address newOwner)",
  "event NodeAccessGranted(uint256 indexed tokenId, string nodeId, address indexed owner, string wireguardPublicKey)",
  "event NodeAccessRevoked(uint256 indexed tokenId, string nodeId)",
  "event NodeAccessTransferred(uint256 indexed tokenId, address indexed from, address indexed to)",
  "event PublicKeyUpdated(address indexed owner, string wireguardPublicKey)",
  "event OwnershipTransferInitiated(address indexed previousOwner, address indexed newOwner)",
];

// What the reference contract adds and the test needs to reach every event:
// the ERC-721 transfer, key rotation, and the second step of the handover.
const REFERENCE_EXTRAS = [
  "function transferFrom(address from, address to, uint256 tokenId)",
  "function updatePublicKey(uint256 tokenId, string wireguardPublicKey)",
  "function acceptOwnership()",
  "function owner() view returns (address)",
  "function pendingOwner() view returns (address)",
  "event OwnershipTransferred(address indexed previousOwner, address indexed newOwner)",
];

// Canonical base64 of 32 bytes (the contract validates the shape).
const KEY_A = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const KEY_B = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const KEY_C = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

async function main() {
  // ethers caches identical calls for 250 ms by default: a nonce or a view read
  // right after a transaction would come back stale.
  const provider = new ethers.JsonRpcProvider(env("RPC_URL"), undefined, { cacheTimeout: -1 });
  const admin = new ethers.Wallet(env("ADMIN_KEY"), provider);
  const holder = new ethers.Wallet(env("HOLDER_KEY"), provider);
  const successor = new ethers.Wallet(env("SUCCESSOR_KEY"), provider);
  const iface = new ethers.Interface([...SEED_INTERFACE, ...REFERENCE_EXTRAS]);
  const contract = new ethers.Contract(env("CONTRACT"), iface, provider);
  const as = (wallet) => contract.connect(wallet);

  const called = new Set();
  const seen = new Map(); // event name -> decoded args of the last one, as strings
  const call = async (name, wallet, ...args) => {
    called.add(name);
    const target = wallet ? as(wallet) : contract;
    const result = await target[name](...args);
    if (result && typeof result.wait === "function") {
      const receipt = await result.wait();
      assert.equal(receipt.status, 1, `${name} failed on chain`);
      for (const log of receipt.logs) {
        const parsed = iface.parseLog(log);
        if (parsed) {
          seen.set(parsed.name, parsed.args.map((a) => a.toString()));
        }
      }
      return receipt;
    }
    return result;
  };
  const reverts = async (name, wallet, ...args) => {
    called.add(name);
    await assert.rejects(as(wallet)[name](...args), (err) => err.code === "CALL_EXCEPTION", `${name} should revert`);
  };

  // Grant, and every view of the granted token.
  const predicted = await as(admin).mintNodeAccess.staticCall(holder.address, "node-a", KEY_A, "ipfs://a");
  assert.equal(predicted, 1n, "mintNodeAccess returns the new token id");
  await call("mintNodeAccess", admin, holder.address, "node-a", KEY_A, "ipfs://a");
  assert.deepEqual(seen.get("NodeAccessGranted"), ["1", "node-a", holder.address, KEY_A]);
  const access = await call("getNodeAccess", null, 1n);
  assert.equal(access.nodeId, "node-a");
  assert.equal(access.wireguardPublicKey, KEY_A);
  assert.ok(access.createdAt > 0n, "createdAt is the mint block's timestamp");
  assert.equal(access.isActive, true);
  assert.equal(await call("hasNodeAccess", null, holder.address, "node-a"), true);
  assert.equal(await call("hasNodeAccess", null, successor.address, "node-a"), false);
  assert.equal(await call("getTokenIdByNodeId", null, "node-a"), 1n);
  assert.equal(await call("verifyAccess", null, holder.address, "node-a"), true);
  assert.equal(await call("getPublicKeyByOwner", null, holder.address), KEY_A);
  assert.equal(await call("getPublicKeyByTokenId", null, 1n), KEY_A);
  assert.equal(await call("ownerOf", null, 1n), holder.address);
  assert.equal(await call("tokenURI", null, 1n), "ipfs://a");

  // Rotation, then a transfer that unbinds the key.
  await call("updatePublicKey", holder, 1n, KEY_B);
  assert.deepEqual(seen.get("PublicKeyUpdated"), [holder.address, KEY_B]);
  assert.equal(await call("getPublicKeyByTokenId", null, 1n), KEY_B);
  await call("transferFrom", holder, holder.address, successor.address, 1n);
  assert.deepEqual(seen.get("NodeAccessTransferred"), ["1", holder.address, successor.address]);
  assert.equal(await call("getPublicKeyByTokenId", null, 1n), "", "a transfer unbinds the key");
  assert.equal(await call("verifyAccess", null, successor.address, "node-a"), false, "no key bound yet");
  assert.equal(await call("hasNodeAccess", null, successor.address, "node-a"), true);
  assert.equal(await call("getPublicKeyByOwner", null, holder.address), "", "the old holder's key is gone");

  // Revocation.
  await call("revokeNodeAccess", admin, 1n);
  assert.deepEqual(seen.get("NodeAccessRevoked"), ["1", "node-a"]);
  assert.equal((await call("getNodeAccess", null, 1n)).isActive, false);
  assert.equal(await call("hasNodeAccess", null, successor.address, "node-a"), false);

  // The contract handover, two-step: nothing changes until the successor accepts.
  await reverts("transferContractOwnership", holder, holder.address);
  await reverts("transferContractOwnership", admin, ethers.ZeroAddress);
  await call("transferContractOwnership", admin, successor.address);
  assert.deepEqual(seen.get("OwnershipTransferInitiated"), [admin.address, successor.address]);
  assert.equal(await call("owner", null), admin.address, "the old owner stays owner until the new one accepts");
  assert.equal(await call("pendingOwner", null), successor.address);
  await call("mintNodeAccess", admin, holder.address, "node-b", KEY_C, "");
  await reverts("acceptOwnership", holder);
  await call("acceptOwnership", successor);
  assert.deepEqual(seen.get("OwnershipTransferred"), [admin.address, successor.address]);
  assert.equal(await call("owner", null), successor.address);
  await reverts("mintNodeAccess", admin, holder.address, "node-c", KEY_A, "");
  await call("mintNodeAccess", successor, holder.address, "node-c", KEY_A, "");
  assert.equal(await call("getTokenIdByNodeId", null, "node-c"), 3n);

  // Coverage: every function was called and every event seen.
  const fragments = SEED_INTERFACE.map((line) => ethers.Fragment.from(line));
  const uncalled = fragments.filter((f) => f.type === "function" && !called.has(f.name)).map((f) => f.name);
  const unseen = fragments.filter((f) => f.type === "event" && !seen.has(f.name)).map((f) => f.name);
  assert.deepEqual(uncalled, [], "every function of the seed's interface is called");
  assert.deepEqual(unseen, [], "every event of the seed's interface is seen");

  const head = await provider.getBlockNumber();
  provider.destroy();
  process.stdout.write(
    JSON.stringify({
      functions: fragments.filter((f) => f.type === "function").map((f) => f.name),
      events: Object.fromEntries(seen),
      owner: successor.address,
      head,
    }) + "\n",
  );
}

main().catch((err) => {
  process.stderr.write(`seed_interface: ${err.stack || err}\n`);
  process.exit(1);
});
