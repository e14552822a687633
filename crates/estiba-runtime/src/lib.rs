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
    #[error("{0}")]
    Unpack(String),
    #[error("{0}")]
    Container(String),
    #[error("{0}")]
    Io(String),
}
