//! Loads and atomically saves the registry document (I/O edge: the only file
//! access of the registry). A file this build cannot read is refused and left
//! untouched: the daemon gets no `RegistryStore` to overwrite it with.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::document::{DocumentError, RegistryDocument};
use super::network::Network;
use super::state::Registry;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("registry file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("registry file {path} is not a valid registry document (left untouched; move it away to start afresh): {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("registry file {path} refused (left untouched): {source}")]
    Incompatible { path: PathBuf, source: DocumentError },
}

/// The handle that may write the registry file. Only [`RegistryStore::open`]
/// makes one, and only after the existing file (if any) was read successfully.
#[derive(Debug)]
pub struct RegistryStore {
    path: PathBuf,
}

impl RegistryStore {
    /// Reads `path` if it exists. `Ok((store, None))` means no file yet.
    pub fn open(
        path: impl Into<PathBuf>,
        contract_address: &str,
        network: Network,
    ) -> Result<(RegistryStore, Option<Registry>), StoreError> {
        let path = path.into();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((RegistryStore { path }, None)),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        // The version is checked before the full schema so an old or future
        // format gets the version message, not a missing-field error.
        let value: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(source) => return Err(StoreError::Corrupt { path, source }),
        };
        let version = value.get("version").and_then(|v| v.as_str()).unwrap_or("<none>");
        if version != super::document::FORMAT_VERSION {
            let source = DocumentError::Version { found: version.to_string() };
            return Err(StoreError::Incompatible { path, source });
        }
        let doc: RegistryDocument = match serde_json::from_value(value) {
            Ok(d) => d,
            Err(source) => return Err(StoreError::Corrupt { path, source }),
        };
        match Registry::from_document(doc, contract_address, network) {
            Ok(reg) => Ok((RegistryStore { path }, Some(reg))),
            Err(source) => Err(StoreError::Incompatible { path, source }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the registry so that a crash leaves either the old or the new
    /// file: temp file in the same directory, fsync, rename, fsync the
    /// directory (the rename itself is only durable after that).
    pub fn save(&self, registry: &Registry) -> Result<(), StoreError> {
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        let mut json = serde_json::to_vec_pretty(&registry.to_document())
            .map_err(|e| io(std::io::Error::other(e)))?;
        json.push(b'\n');
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}
