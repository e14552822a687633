//! The content-addressed blob store.
//!
//! ```text
//! <root>/blobs/sha256/<hex>   verified blobs: layers, configs and manifests, once each
//! <root>/uploads/<uuid>       uploads in progress (emptied on open: a crash loses them)
//! ```
//!
//! Writes stream through a SHA-256 hasher into `uploads/` and are renamed into place only when
//! the digest matches. Reads open the file; callers stream it. Blob I/O is blocking: callers
//! run it on blocking threads.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::{Code, Digest, RegistryError};

pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating) the store under `root`; uploads left by a previous run are removed.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<BlobStore> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs/sha256"))?;
        let uploads = root.join("uploads");
        if uploads.exists() {
            std::fs::remove_dir_all(&uploads)?;
        }
        std::fs::create_dir_all(&uploads)?;
        Ok(BlobStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// The size of a stored blob, or `None`.
    pub fn stat(&self, d: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(d)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, RegistryError> {
        File::open(self.path(d)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RegistryError::new(Code::BlobUnknown, format!("blob {d} is not stored")),
            _ => e.into(),
        })
    }

    /// A small blob (a manifest or config) read whole.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, RegistryError> {
        std::fs::read(self.path(d)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RegistryError::new(Code::BlobUnknown, format!("blob {d} is not stored")),
            _ => e.into(),
        })
    }

    /// Stores `data` (a manifest) and returns its digest.
    pub fn put(&self, data: &[u8]) -> Result<Digest, RegistryError> {
        let mut up = self.begin()?;
        up.write(data)?;
        let d = up.digest_so_far();
        up.commit(&d)?;
        Ok(d)
    }

    /// Starts an upload.
    pub fn begin(&self) -> Result<Upload, RegistryError> {
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.root.join("uploads").join(&id);
        let file = File::create(&path)?;
        Ok(Upload { id, path, file: Some(file), hasher: Sha256::new(), size: 0, blobs: self.root.join("blobs/sha256") })
    }

    /// Removes a blob; false when it was not there.
    pub fn delete(&self, d: &Digest) -> Result<bool, RegistryError> {
        match std::fs::remove_file(self.path(d)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every stored blob with its size and modification time (for garbage collection).
    pub fn list(&self) -> std::io::Result<Vec<(Digest, u64, SystemTime)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.root.join("blobs/sha256"))? {
            let e = e?;
            let Some(name) = e.file_name().to_str().map(|n| format!("sha256:{n}")) else { continue };
            let (Ok(d), Ok(m)) = (Digest::parse(&name), e.metadata()) else { continue };
            out.push((d, m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        }
        Ok(out)
    }
}

/// A blob being written. Dropping it without [`Upload::commit`] removes what was written.
pub struct Upload {
    id: String,
    path: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    size: u64,
    blobs: PathBuf,
}

impl Upload {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), RegistryError> {
        let Some(f) = self.file.as_mut() else {
            return Err(RegistryError::new(Code::BlobUploadInvalid, "the upload is closed"));
        };
        self.hasher.update(data);
        f.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    pub fn digest_so_far(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// Checks the content against `expected` and moves it into the store. On a mismatch the
    /// upload is discarded and `DIGEST_INVALID` returned; nothing is stored.
    pub fn commit(mut self, expected: &Digest) -> Result<u64, RegistryError> {
        let got = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if &got != expected {
            return Err(RegistryError::new(
                Code::DigestInvalid,
                format!("the uploaded content has digest {got}, not the {expected} that was given"),
            ));
        }
        drop(self.file.take());
        let target = self.blobs.join(expected.hex());
        // A blob already stored under this digest is the same content: keep either.
        std::fs::rename(&self.path, &target)?;
        Ok(self.size)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.file.is_some() || self.path.exists() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_lands_only_when_its_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut up = store.begin().unwrap();
        up.write(b"hello ").unwrap();
        up.write(b"world").unwrap();
        let wrong = Digest::of(b"hello");
        assert_eq!(up.commit(&wrong).unwrap_err().code, Code::DigestInvalid);
        assert!(store.stat(&wrong).is_none());
        assert_eq!(std::fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0, "nothing left behind");

        let right = Digest::of(b"hello world");
        let mut up = store.begin().unwrap();
        up.write(b"hello world").unwrap();
        assert_eq!(up.commit(&right).unwrap(), 11);
        assert_eq!(store.stat(&right), Some(11));
        assert_eq!(store.read(&right).unwrap(), b"hello world");
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.delete(&right).unwrap());
        assert_eq!(store.read(&right).unwrap_err().code, Code::BlobUnknown);
    }

    #[test]
    fn abandoned_uploads_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut up = store.begin().unwrap();
        up.write(b"half").unwrap();
        drop(up);
        assert_eq!(std::fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
        // A crash leaves the file; the next open removes it.
        std::fs::write(dir.path().join("uploads/left-over"), b"x").unwrap();
        let _ = BlobStore::open(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    }
}
