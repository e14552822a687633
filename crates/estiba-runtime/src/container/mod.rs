//! Containers: their description, and the pieces that start, watch and stop them.

pub mod cgroup;
pub mod devices;
pub mod exec;
pub mod native;
pub mod oci;
pub mod seccomp;
pub mod shim;
pub mod spec;
pub mod user;
pub mod userns;
