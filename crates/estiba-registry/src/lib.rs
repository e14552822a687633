//! The ECR data plane: what the OCI distribution API (`/v2/`) needs below HTTP.
//!
//! - [`digest`]: content digests (`sha256:<hex>`), parsed and checked;
//! - [`blobs`]: a content-addressed blob store on disk shared by every repository. A blob is
//!   written to `uploads/`, hashed as it streams, and renamed into `blobs/` only once its
//!   digest matches, so a crashed or abandoned upload never leaves a half blob behind;
//! - [`manifest`]: parsing and checking of image manifests and indexes (Docker v2 schema 2,
//!   manifest lists, OCI manifests, indexes and artifacts): the blobs and manifests they point
//!   at, their subject (for the referrers API);
//! - [`names`]: repository names and tags as the distribution spec and ECR allow them.
//!
//! **Architecture invariant:** no HTTP and no metadata here. Which repository holds which
//! image or tag is recorded by the server in the versioned store; this crate only keeps bytes
//! and answers questions about them. Errors carry the distribution spec's codes.

pub mod blobs;
pub mod digest;
pub mod manifest;
pub mod names;

pub use blobs::{BlobStore, Upload};
pub use digest::Digest;

/// An error with the distribution spec's code (`BLOB_UNKNOWN`, `DIGEST_INVALID`, …).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RegistryError {
    pub code: Code,
    pub message: String,
}

impl RegistryError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RegistryError { code, message: message.into() }
    }
}

impl From<std::io::Error> for RegistryError {
    fn from(e: std::io::Error) -> Self {
        RegistryError::new(Code::Internal, format!("storage: {e}"))
    }
}

/// The error codes of the OCI distribution specification, with their HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    /// A `Content-Range` that does not continue the upload (416).
    RangeInvalid,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid | Code::RangeInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::TagInvalid => "TAG_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::Internal => "UNKNOWN",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Code::BlobUnknown | Code::BlobUploadUnknown | Code::ManifestUnknown | Code::NameUnknown => 404,
            Code::Unauthorized => 401,
            Code::Denied => 403,
            Code::Unsupported => 405,
            Code::RangeInvalid => 416,
            Code::Internal => 500,
            _ => 400,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
