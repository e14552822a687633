//! What the control plane and node agents tell each other through the store.
//!
//! - The server assigns a task to a node by writing a [`Claim`] next to the task (same
//!   transaction as the task). From then on that node's agent moves the task through its
//!   lifecycle; the server only sets `desiredStatus`.
//! - Each agent writes its [`NodeStatus`] every few seconds: the server refuses new Fargate
//!   tasks on a node whose available memory fell below the node's floor.

use serde::{Deserialize, Serialize};

/// The node that runs a task, and what it needs to know beyond the task document.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub node: String,
    /// `assignPublicIp: ENABLED` (the task shape does not carry its network configuration):
    /// the task's container ports are published on the node's own addresses too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public_ip: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub id: String,
    /// `MemAvailable` of the host, in bytes.
    pub mem_available_bytes: u64,
    /// Below this much available memory the node takes no new task.
    pub mem_floor_bytes: u64,
    /// Seconds since the epoch of the last report.
    pub heartbeat_at: f64,
    /// Which executor runs containers (`native`, or the OCI runtime's path).
    pub executor: String,
    /// What the node offers when it registers as a container instance.
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub mem_total_bytes: u64,
}

impl NodeStatus {
    /// Whether the node can take one more task now.
    pub fn has_memory(&self) -> bool {
        self.mem_available_bytes >= self.mem_floor_bytes
    }
}
