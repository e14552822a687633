//! The container runtime of a node: images (pull from registries, verify every digest, keep
//! them in a content store, unpack layers safely), overlay root filesystems, cgroups, and
//! the executors that start containers (built in, or any OCI runtime binary), each under a
//! small supervisor process that outlives the agent.
//!
//! **Architecture invariant:** knows nothing about ECS. It runs containers described by a
//! [`container::spec::ContainerSpec`]; the agent translates task definitions into those.

pub mod container;
pub mod files;
pub mod image;
pub mod logs;

/// Errors of the runtime, with the paths, digests and registries involved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Reference(String),
    #[error("{0}")]
    Pull(String),
    /// A registry kept failing in a way that may pass (no connection, 5xx, 429) after this
    /// many retries.
    #[error("{message}")]
    Transient { retries: u32, message: String },
    #[error("{0}")]
    Unpack(String),
    #[error("{0}")]
    Container(String),
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// How many times the failed operation was retried before it gave up.
    pub fn retries(&self) -> u32 {
        match self {
            Error::Transient { retries, .. } => *retries,
            _ => 0,
        }
    }
}
