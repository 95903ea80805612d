#!/usr/bin/env node
// Compiles the contracts below with the pinned npm `solc` and writes the ABI and
// bytecode that the Rust bindings embed to contracts/out/<Name>.json:
//   DstackAccessNFT   the reference contract (the seed's interface and more)
//   MinimalAccessNFT  a test fixture whose transfers and burns emit only ERC-721's Transfer
//
//   node contracts/compile.js           write the artifacts
//   node contracts/compile.js --check   exit 1 if a committed artifact is stale (CI)
//
// The output is a pure function of the sources and the pinned compiler, so a
// stale artifact is a real difference, not noise.

"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const CONTRACTS = ["DstackAccessNFT", "MinimalAccessNFT"];
const repoRoot = path.resolve(__dirname, "..");
const sourcePath = (name) => path.join(__dirname, `${name}.sol`);
const outPath = (name) => path.join(__dirname, "out", `${name}.json`);

// A fixed EVM version keeps the bytecode independent of solc's default, which
// moves between releases; Cancun is live on Base and supported by anvil.
const EVM_VERSION = "cancun";

function findImport(importPath) {
  const candidate = path.join(repoRoot, "node_modules", importPath);
  if (!candidate.startsWith(path.join(repoRoot, "node_modules") + path.sep)) {
    return { error: `import escapes node_modules: ${importPath}` };
  }
  try {
    return { contents: fs.readFileSync(candidate, "utf8") };
  } catch (err) {
    return { error: `cannot read ${importPath}: ${err.message} (run npm ci at the repository root)` };
  }
}

function compile(name) {
  const input = {
    language: "Solidity",
    sources: { [`contracts/${name}.sol`]: { content: fs.readFileSync(sourcePath(name), "utf8") } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: EVM_VERSION,
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const diagnostics = output.errors || [];
  for (const diag of diagnostics) {
    process.stderr.write(diag.formattedMessage || `${diag.severity}: ${diag.message}\n`);
  }
  if (diagnostics.some((d) => d.severity === "error")) {
    process.stderr.write("compilation failed\n");
    process.exit(1);
  }
  const contract = output.contracts[`contracts/${name}.sol`][name];
  const artifact = {
    contractName: name,
    compiler: `solc ${solc.version()}`,
    evmVersion: EVM_VERSION,
    abi: contract.abi,
    bytecode: `0x${contract.evm.bytecode.object}`,
    deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
  };
  return JSON.stringify(artifact, null, 2) + "\n";
}

function build(name, check) {
  const out = outPath(name);
  const fresh = compile(name);
  if (check) {
    let committed = "";
    try {
      committed = fs.readFileSync(out, "utf8");
    } catch (_) {
      // A missing artifact is stale too.
    }
    if (committed !== fresh) {
      process.stderr.write(
        `${path.relative(repoRoot, out)} is stale: run \`node contracts/compile.js\` (or \`cargo xtask contracts\`) and commit it\n`,
      );
      return false;
    }
    process.stdout.write(`${path.relative(repoRoot, out)} is up to date\n`);
    return true;
  }
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, fresh);
  process.stdout.write(`wrote ${path.relative(repoRoot, out)}\n`);
  return true;
}

function main() {
  const check = process.argv.includes("--check");
  // Every contract is checked, so one run names every stale artifact.
  const results = CONTRACTS.map((name) => build(name, check));
  if (results.includes(false)) {
    process.exit(1);
  }
}

main();
