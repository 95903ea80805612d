#!/usr/bin/env node
// Compiles contracts/DstackAccessNFT.sol with the pinned npm `solc` and writes the
// ABI and bytecode that the Rust bindings embed to contracts/out/DstackAccessNFT.json.
//
//   node contracts/compile.js           write the artifact
//   node contracts/compile.js --check   exit 1 if the committed artifact is stale (CI)
//
// The output is a pure function of the sources and the pinned compiler, so a
// stale artifact is a real difference, not noise.

"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const CONTRACT = "DstackAccessNFT";
const repoRoot = path.resolve(__dirname, "..");
const sourcePath = path.join(__dirname, `${CONTRACT}.sol`);
const outPath = path.join(__dirname, "out", `${CONTRACT}.json`);

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

function compile() {
  const input = {
    language: "Solidity",
    sources: { [`contracts/${CONTRACT}.sol`]: { content: fs.readFileSync(sourcePath, "utf8") } },
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
  const contract = output.contracts[`contracts/${CONTRACT}.sol`][CONTRACT];
  const artifact = {
    contractName: CONTRACT,
    compiler: `solc ${solc.version()}`,
    evmVersion: EVM_VERSION,
    abi: contract.abi,
    bytecode: `0x${contract.evm.bytecode.object}`,
    deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
  };
  return JSON.stringify(artifact, null, 2) + "\n";
}

function main() {
  const check = process.argv.includes("--check");
  const fresh = compile();
  if (check) {
    let committed = "";
    try {
      committed = fs.readFileSync(outPath, "utf8");
    } catch (_) {
      // A missing artifact is stale too.
    }
    if (committed !== fresh) {
      process.stderr.write(
        `${path.relative(repoRoot, outPath)} is stale: run \`node contracts/compile.js\` (or \`cargo xtask contracts\`) and commit it\n`,
      );
      process.exit(1);
    }
    process.stdout.write(`${path.relative(repoRoot, outPath)} is up to date\n`);
    return;
  }
  fs.mkdirSync(path.dirname(outPath), { recursive: true });
  fs.writeFileSync(outPath, fresh);
  process.stdout.write(`wrote ${path.relative(repoRoot, outPath)}\n`);
}

main();
