//! Encryption at rest of secret values: SSM SecureString values and Secrets Manager secret
//! values are sealed with AES-256-GCM (ring, already in the tree through rustls) under one
//! key of 32 random bytes, kept in a file (`<data-dir>/secrets.key` or `--secrets-key-file`),
//! created mode 0600 on first start. A sealed value is `v1:` + base64(nonce ‖ ciphertext ‖ tag);
//! the associated data binds it to where it is stored (the document's key and version), so a
//! sealed value copied into another parameter or version does not open.
//!
//! With the etcd store, every server that shares the state must hold the same key file. The
//! temporary credentials estiba issues (STS, task roles) derive from the same key.
//!
//! May not: log or return key material, or fall back to plaintext.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const KEY_LEN: usize = 32;
const PREFIX: &str = "v1:";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("secrets key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("a sealed value does not open with this server's secrets key (was it sealed under another key?)")]
    Open,
    #[error("no randomness available")]
    Random,
}

/// The key secret values are sealed under.
pub struct SecretsKey {
    key: LessSafeKey,
    /// HMAC-SHA256 of a label under the key: the root of the temporary credentials estiba
    /// issues ([`estiba_auth::session`]), one-way, so it never reveals the key itself.
    session_root: [u8; 32],
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl SecretsKey {
    /// Reads the key at `path`, or creates it (32 random bytes, base64, mode 0600) when the
    /// file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let err = |message: String| SealError::KeyFile { path: path.display().to_string(), message };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| err("not base64".into()))?;
                if bytes.len() != KEY_LEN {
                    return Err(err(format!("holds {} bytes, a key is {KEY_LEN}", bytes.len())));
                }
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    if let Ok(m) = std::fs::metadata(path) {
                        if m.permissions().mode() & 0o077 != 0 {
                            tracing::warn!(path = %path.display(), "secrets key file is readable by others: chmod 600 it");
                        }
                    }
                }
                Self::from_bytes(&bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let mut bytes = [0u8; KEY_LEN];
                rng.fill(&mut bytes).map_err(|_| SealError::Random)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts.open(path).map_err(|e| err(e.to_string()))?;
                let text = base64::engine::general_purpose::STANDARD.encode(bytes) + "\n";
                f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| err(e.to_string()))?;
                tracing::info!(path = %path.display(), "created the secrets key");
                Self::from_bytes(&bytes)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// A key that lives as long as the process (for the in-memory store, whose state does too).
    pub fn ephemeral() -> Self {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; KEY_LEN];
        rng.fill(&mut bytes).expect("system randomness");
        Self::from_bytes(&bytes).expect("a 32-byte key")
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::Open)?;
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes), b"estiba sessions v1");
        let mut session_root = [0u8; 32];
        session_root.copy_from_slice(tag.as_ref());
        Ok(SecretsKey { key: LessSafeKey::new(unbound), session_root, rng: SystemRandom::new() })
    }

    /// The issuer of temporary credentials under this key: every server holding the same key
    /// file verifies what any of them issued.
    pub fn session_issuer(&self) -> estiba_auth::session::Issuer {
        estiba_auth::session::Issuer::new(&self.session_root)
    }

    /// Seals `plain`, bound to `context` (where it is stored).
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(out)))
    }

    /// Opens what [`SecretsKey::seal`] sealed with the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or(SealError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = ct.to_vec();
        let plain =
            self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf).map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context_and_key() {
        let k = SecretsKey::ephemeral();
        let s = k.seal("ssm/a#1", b"hunter2").unwrap();
        assert!(s.starts_with("v1:"));
        assert!(!s.contains("hunter2"));
        assert_eq!(k.open("ssm/a#1", &s).unwrap(), b"hunter2");
        assert!(k.open("ssm/a#2", &s).is_err());
        assert!(SecretsKey::ephemeral().open("ssm/a#1", &s).is_err());
        // Two seals of one value differ (fresh nonces).
        assert_ne!(k.seal("c", b"x").unwrap(), k.seal("c", b"x").unwrap());
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secrets.key");
        let k = SecretsKey::load_or_create(&path).unwrap();
        let sealed = k.seal("ctx", b"v").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let again = SecretsKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("ctx", &sealed).unwrap(), b"v");
        std::fs::write(&path, "short").unwrap();
        assert!(SecretsKey::load_or_create(&path).is_err());
    }
}
