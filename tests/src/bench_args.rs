//! Command-line arguments the benchmark drivers share (pure: reads the
//! process arguments only): `--NAME VALUE` numbers and `--json PATH`.

use anyhow::Context;

/// The number after `name`, or `default` when `name` is absent.
pub fn arg(name: &str, default: u64) -> anyhow::Result<u64> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args.get(i + 1).with_context(|| format!("{name} needs a value"))?.parse()?),
        None => Ok(default),
    }
}

/// Where `--json` asks the report to be written.
pub fn json_path() -> Option<std::path::PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).map(Into::into)
}
