//! The cursor file of `gateway chain follow --cursor` (I/O edge: a small
//! JSON file, replaced atomically). The daemon keeps its cursor inside the
//! registry document instead.

use std::path::Path;

use anyhow::Context;
use gateway_core::chain::Cursor;

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

/// Writes the cursor so that a crash leaves either the old or the new one.
pub fn store(path: &Path, cursor: &Cursor) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(cursor).context("encoding cursor")?;
    super::write_atomically(path, &json).with_context(|| format!("writing cursor {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gateway_core::testing::block_hash;

    #[test]
    fn missing_file_is_no_cursor_and_store_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor.json");
        assert_eq!(load(&path).unwrap(), None);
        let cursor = Cursor { block_number: 42, block_hash: block_hash(42) };
        store(&path, &cursor).unwrap();
        assert_eq!(load(&path).unwrap(), Some(cursor));
        let newer = Cursor { block_number: 43, block_hash: block_hash(43) };
        store(&path, &newer).unwrap();
        assert_eq!(load(&path).unwrap(), Some(newer));
    }

    #[test]
    fn a_corrupt_cursor_is_an_error_not_a_silent_restart_from_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).is_err());
    }
}
