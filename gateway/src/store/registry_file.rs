//! Loads and atomically saves the registry document (I/O edge: the only file
//! access of the registry). A file this build cannot read is refused and left
//! untouched: the daemon gets no `RegistryStore` to overwrite it with.

use std::fs;
use std::path::{Path, PathBuf};

use gateway_core::chain::Address;
use gateway_core::registry::{DocumentError, Network, Registry, RegistryDocument, FORMAT_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("registry file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("registry file {path} is not a valid registry document (left untouched; move it away to start afresh): {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("registry file {path} refused (left untouched): {source}")]
    Incompatible { path: PathBuf, source: DocumentError },
}

/// The registry in `bytes` (the file at `path`, named in the errors): the
/// whole loader but the read, so the fuzzer drives it without files.
pub fn decode(path: &Path, bytes: &[u8], contract_address: Address, network: Network) -> Result<Registry, StoreError> {
    let path = || path.to_path_buf();
    // The version is checked before the full schema so an old or future
    // format gets the version message, not a missing-field error.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { path: path(), source })?;
    let version = value.get("version").and_then(|v| v.as_str()).unwrap_or("<none>");
    if version != FORMAT_VERSION {
        let source = DocumentError::Version { found: version.to_string() };
        return Err(StoreError::Incompatible { path: path(), source });
    }
    let doc: RegistryDocument =
        serde_json::from_value(value).map_err(|source| StoreError::Corrupt { path: path(), source })?;
    Registry::from_document(doc, contract_address, network).map_err(|source| StoreError::Incompatible { path: path(), source })
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
        contract_address: Address,
        network: Network,
    ) -> Result<(RegistryStore, Option<Registry>), StoreError> {
        let path = path.into();
        // What a process killed mid-save left goes (a live writer's temp file stays).
        let removed = super::remove_crash_leftovers(&path);
        if removed > 0 {
            tracing::info!(removed, path = %path.display(), "removed the temp files of an interrupted registry save");
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((RegistryStore { path }, None)),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let registry = decode(&path, &bytes, contract_address, network)?;
        Ok((RegistryStore { path }, Some(registry)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the registry so that a crash leaves either the old or the new file.
    pub fn save(&self, registry: &Registry) -> Result<(), StoreError> {
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        let mut json = serde_json::to_vec_pretty(&registry.to_document())
            .map_err(|e| io(std::io::Error::other(e)))?;
        json.push(b'\n');
        super::write_atomically(&self.path, &json).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gateway_core::testing::*;

    #[test]
    fn store_saves_atomically_and_refuses_foreign_files_without_touching_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let (store, loaded) = RegistryStore::open(&path, CONTRACT, network()).unwrap();
        assert!(loaded.is_none());
        let mut reg = registry();
        for event in [granted(1, 11, 10, 0), synced(10)] {
            reg.apply(&event, 100);
        }
        store.save(&reg).unwrap();
        let (_, loaded) = RegistryStore::open(&path, CONTRACT, network()).unwrap();
        assert_eq!(loaded, Some(reg));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("registry.json")], "no temp file left behind");

        for (content, want) in [
            (r#"{"version":"1.0","peers":[]}"#, "1.0"),
            ("{not json", "not a valid registry document"),
            (r#"{"version":"2.0"}"#, "not a valid registry document"),
        ] {
            std::fs::write(&path, content).unwrap();
            let err = RegistryStore::open(&path, CONTRACT, network()).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        }

        store.save(&registry()).unwrap();
        let err = RegistryStore::open(&path, gateway_core::testing::owner(1), network()).unwrap_err();
        assert!(matches!(err, StoreError::Incompatible { .. }), "{err}");
    }

    #[test]
    fn the_fuzzers_registry_seeds_load_and_round_trip() {
        // The seeds the fuzzer mutates must reach past the parser: a seed
        // that no longer loads would leave the loader's deeper paths unfuzzed.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/registry");
        for name in ["v2", "seed_format"] {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).unwrap();
            let reg = decode(&path, &bytes, CONTRACT, network()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let saved = serde_json::to_vec(&reg.to_document()).unwrap();
            assert_eq!(decode(&path, &saved, CONTRACT, network()).unwrap(), reg, "{name}");
        }
    }

    #[test]
    fn the_fuzzers_crash_inputs_are_refused_with_an_error() {
        // Regression: a network of 10.88.0.24/0 overflowed a shift and
        // panicked the loader (found by `cargo xtask fuzz`, registry target).
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/registry/regression-zero-prefix.json");
        let bytes = std::fs::read(&path).unwrap();
        let err = decode(&path, &bytes, CONTRACT, network()).unwrap_err();
        assert!(err.to_string().contains("host bits"), "{err}");
    }

    #[test]
    fn a_registry_with_retired_keys_reloads() {
        // Regression: a transfer retires the key, and the saved file then
        // failed to load ("u128 is not supported"), so the restarted gateway
        // refused its own registry.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let (store, _) = RegistryStore::open(&path, CONTRACT, network()).unwrap();
        let mut reg = registry();
        for event in [granted(1, 11, 10, 0), transferred(1, 2, 11, 0), synced(11)] {
            reg.apply(&event, 100);
        }
        store.save(&reg).unwrap();
        let (_, loaded) = RegistryStore::open(&path, CONTRACT, network()).unwrap();
        assert_eq!(loaded, Some(reg));
    }
}
