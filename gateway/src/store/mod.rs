//! The state directory's files (I/O edge): the registry document, the chain
//! cursor of `gateway chain follow`, the audit log, and the one way any of
//! them is replaced on disk.

pub mod audit_log;
pub mod cursor_file;
pub mod registry_file;

use std::io::Write as _;
use std::path::{Path, PathBuf};

pub use audit_log::AuditLog;
pub use registry_file::{RegistryStore, StoreError};

/// Replaces `path` with `contents` so that a crash leaves either the old or
/// the new file, never a mix: a temp file in the same directory, fsync,
/// rename over the old one, fsync of the directory (the rename itself is
/// only durable after that). A failed write removes its temp file.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        let (first, rest) = contents.split_at(contents.len() / 2);
        file.write_all(first)?;
        crate::fault::point("store.mid_write");
        file.write_all(rest)?;
        file.sync_all()?;
        crate::fault::point("store.before_rename");
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
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        let missing_dir = dir.path().join("gone").join("state.json");
        assert!(write_atomically(&missing_dir, b"x").is_err());
    }
}
