//! The `gateway` binary run as an operator types it (I/O edge: processes):
//! `GATEWAY_RPC_URL`, `GATEWAY_SIGNER_KEY` and `GATEWAY_CONTRACT` set, output
//! captured, `--json` parsed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::netns::gateway_bin;

pub struct NodeCli {
    pub rpc_url: String,
    /// File holding the signer's hex private key.
    pub signer_key: PathBuf,
    pub contract: Option<String>,
}

impl NodeCli {
    pub fn run(&self, args: &[&str]) -> Output {
        let bin = gateway_bin();
        assert!(bin.exists(), "{} missing: build it first (cargo xtask test does)", bin.display());
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("GATEWAY_RPC_URL", &self.rpc_url)
            .env("GATEWAY_SIGNER_KEY", &self.signer_key)
            .env("RUST_LOG", "warn");
        if let Some(contract) = &self.contract {
            cmd.env("GATEWAY_CONTRACT", contract);
        }
        cmd.output().expect("run gateway")
    }

    /// Runs a command that must succeed and print one JSON document.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "gateway {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("gateway {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// `gateway chain follow --exit-when-synced --json`: every event line up to the head.
    pub fn follow_to_head(&self, from_block: u64) -> Vec<Value> {
        let from = from_block.to_string();
        let out = self.run(&["chain", "follow", "--json", "--exit-when-synced", "--from-block", &from]);
        assert!(out.status.success(), "chain follow failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
            .collect()
    }
}

/// Writes a secret (a signer key) the way an operator must: mode 0600.
pub fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
}
