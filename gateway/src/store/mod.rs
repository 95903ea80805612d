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
    let temp = dir.join(format!("{}{}", temp_prefix(path), std::process::id()));
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

/// `.<name>.tmp.`: the temp files of [`write_atomically`] for `path`, one per process id.
fn temp_prefix(path: &Path) -> String {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!(".{file_name}.tmp.")
}

/// Removes the temp files a process killed inside [`write_atomically`]
/// left beside `path` (a crash between the temp file's creation and its
/// rename); those of live processes, a running gateway's included, stay.
/// Returns how many went.
pub fn remove_crash_leftovers(path: &Path) -> usize {
    let (Some(dir), prefix) = (path.parent(), temp_prefix(path)) else { return 0 };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        let alive = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
        if !alive && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
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

    #[test]
    fn a_killed_writers_temp_files_are_removed_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        write_atomically(&path, b"{}").unwrap();
        // No process has pid u32::MAX - 1 (pid_max is at most 2^22); this one is alive.
        let dead = dir.path().join(format!(".registry.json.tmp.{}", u32::MAX - 1));
        let live = dir.path().join(format!(".registry.json.tmp.{}", std::process::id()));
        let other = dir.path().join(".audit.jsonl.tmp.1");
        for p in [&dead, &live, &other] {
            std::fs::write(p, b"half").unwrap();
        }
        assert_eq!(remove_crash_leftovers(&path), 1);
        assert!(!dead.exists() && live.exists() && other.exists() && path.exists());
    }
}
