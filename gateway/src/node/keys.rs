//! WireGuard (X25519) keys: generation, derivation and their files (pure,
//! except for the two functions that read and write key files).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use x25519_dalek::{PublicKey, StaticSecret};

/// A key pair; the private half never leaves this struct except into a 0600 file.
pub struct KeyPair {
    secret: StaticSecret,
}

impl KeyPair {
    pub fn generate() -> Self {
        Self { secret: StaticSecret::random_from_rng(rand_core::OsRng) }
    }

    pub fn from_private_base64(text: &str) -> anyhow::Result<Self> {
        let bytes = decode_key(text).context("private key")?;
        Ok(Self { secret: StaticSecret::from(bytes) })
    }

    pub fn public_base64(&self) -> String {
        STANDARD.encode(PublicKey::from(&self.secret).as_bytes())
    }

    fn private_base64(&self) -> String {
        STANDARD.encode(self.secret.to_bytes())
    }
}

/// Decodes a WireGuard key: canonical base64 of exactly 32 bytes (what the
/// contract accepts, and what `wg` prints).
pub fn decode_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    let bytes = STANDARD.decode(text).context("not base64")?;
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("a WireGuard key is 32 bytes, this is {}", bytes.len()))?;
    anyhow::ensure!(STANDARD.encode(key) == text, "not the canonical base64 form of the key");
    Ok(key)
}

/// Checks a public key given on the command line and returns it trimmed.
pub fn validate_public_key(text: &str) -> anyhow::Result<String> {
    decode_key(text).with_context(|| format!("invalid WireGuard public key {:?}", text.trim()))?;
    Ok(text.trim().to_string())
}

/// Writes the private key as `wg genkey` does (base64 and a newline), readable by its owner only.
pub fn write_private_key(path: &Path, pair: &KeyPair, overwrite: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).with_context(|| {
        format!("creating {} (it must not exist yet unless --force is given)", path.display())
    })?;
    // `mode` applies only when the file is created; an overwritten file keeps its old bits.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to mode 0600", path.display()))?;
    writeln!(file, "{}", pair.private_base64()).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// Reads a private key file (ours or `wg genkey`'s), warning when others may read it.
pub fn read_private_key(path: &Path) -> anyhow::Result<KeyPair> {
    warn_if_exposed(path);
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    KeyPair::from_private_base64(&text).with_context(|| format!("key file {}", path.display()))
}

/// Secrets belong in files only their owner can read.
pub fn warn_if_exposed(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = format!("{mode:04o}"), "secret key file is readable by others; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn derives_the_public_key_of_rfc7748_test_vector() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let private = hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
        let public = hex::decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a").unwrap();
        let pair = KeyPair::from_private_base64(&STANDARD.encode(&private)).unwrap();
        assert_eq!(pair.public_base64(), STANDARD.encode(&public));
    }

    #[test]
    fn rejects_wrong_length_non_base64_and_non_canonical_keys() {
        assert!(decode_key("AAAA").is_err());
        assert!(decode_key("not base64 at all, not at all, not at all!!!").is_err());
        // 32 zero bytes are "AAAA...A=" with 'A' last; 'B' sets bits the encoding must leave zero.
        let canonical = STANDARD.encode([0u8; 32]);
        assert!(decode_key(&canonical).is_ok());
        let mut sloppy = canonical.into_bytes();
        sloppy[42] = b'B';
        assert!(decode_key(std::str::from_utf8(&sloppy).unwrap()).is_err());
    }

    #[test]
    fn private_key_file_is_0600_refuses_overwrite_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let pair = KeyPair::generate();
        write_private_key(&path, &pair, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_private_key(&path, &KeyPair::generate(), false).is_err(), "must not clobber a key");
        assert_eq!(read_private_key(&path).unwrap().public_base64(), pair.public_base64());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let replacement = KeyPair::generate();
        write_private_key(&path, &replacement, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "overwriting tightens the mode too");
        assert_eq!(read_private_key(&path).unwrap().public_base64(), replacement.public_base64());
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(KeyPair::generate().public_base64(), KeyPair::generate().public_base64());
    }
}
