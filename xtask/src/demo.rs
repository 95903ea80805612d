//! `cargo xtask demo`: builds everything, then runs `gateway demo`.

use crate::util::{build_all, run, target_dir};
use std::process::Command;

pub fn run_demo() -> anyhow::Result<()> {
    build_all(false)?;
    run(Command::new(target_dir().join("debug").join("gateway")).arg("demo"))
}
