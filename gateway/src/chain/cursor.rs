//! The follower's resume point, persisted atomically (I/O edge: a small file).
//!
//! The consumer writes the cursor after it has applied every event up to a
//! `Synced`; a restart from it re-delivers at most what came after, never less.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Everything up to and including `block_number` has been delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub block_number: u64,
    /// `0x`-prefixed hash of that block, to notice a reorg while we were away.
    pub block_hash: String,
}

/// Reads the cursor; `Ok(None)` when the file does not exist yet.
pub fn load(path: &Path) -> anyhow::Result<Option<Cursor>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading cursor {}", path.display())),
    };
    let cursor = serde_json::from_str(&text).with_context(|| format!("parsing cursor {}", path.display()))?;
    Ok(Some(cursor))
}

/// Writes the cursor so that a crash leaves either the old or the new one:
/// temp file in the same directory, fsync, rename, fsync the directory.
pub fn store(path: &Path, cursor: &Cursor) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(cursor).context("encoding cursor")?;
    write_atomically(path, &json).with_context(|| format!("writing cursor {}", path.display()))
}

/// Replaces `path` with `contents` atomically (same directory temp file, fsync, rename).
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_no_cursor_and_store_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor.json");
        assert_eq!(load(&path).unwrap(), None);
        let cursor = Cursor { block_number: 42, block_hash: "0xabc".into() };
        store(&path, &cursor).unwrap();
        assert_eq!(load(&path).unwrap(), Some(cursor.clone()));
        let newer = Cursor { block_number: 43, block_hash: "0xdef".into() };
        store(&path, &newer).unwrap();
        assert_eq!(load(&path).unwrap(), Some(newer));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind: {leftovers:?}");
    }

    #[test]
    fn a_corrupt_cursor_is_an_error_not_a_silent_restart_from_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).is_err());
    }
}
