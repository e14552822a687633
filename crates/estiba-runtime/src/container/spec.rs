//! What to run: the runtime's own description of one container, written by the agent into
//! the container's state directory and read by its supervisor.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::logs::Rotation;

/// Which executor starts the container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "path")]
pub enum Executor {
    /// Built in: namespaces, overlay, pivot_root and exec done by estiba itself.
    #[default]
    Native,
    /// Any OCI runtime binary (runc, crun, youki), given by path.
    Oci(PathBuf),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, `RLIMIT_NPROC`, ...
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// cgroup placement and limits. The task's cgroup holds the task-level limits; each
/// container gets a child cgroup with its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// Relative path of the task's cgroup, e.g. `estiba/<task-id>`.
    pub task_path: String,
    /// Name of the container's cgroup under the task's.
    pub name: String,
    pub task_cpu_quota_us: Option<i64>,
    pub task_memory_bytes: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub memory_bytes: Option<i64>,
    pub memory_reservation_bytes: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Device rules beyond Docker's defaults, as the v1 controller writes them (`c 1:3 rw`);
    /// `a` gives every device (privileged containers).
    #[serde(default)]
    pub extra_devices: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// A host device given to the container (ECS `linuxParameters.devices`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub host_path: PathBuf,
    /// Where in the container; the host path when empty.
    pub container_path: String,
    /// Any of `r`, `w`, `m` (ECS `read`, `write`, `mknod`); all three when empty.
    pub permissions: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique on the node.
    pub id: String,
    /// Image layers, bottom first.
    pub layers: Vec<PathBuf>,
    /// Where the container's writable layer, logs and status live.
    pub state_dir: PathBuf,
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub cwd: String,
    /// `uid`, `uid:gid`, `name` or `name:group`, resolved against the image.
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub readonly_rootfs: bool,
    /// Run a small init as PID 1 that reaps zombies and forwards signals.
    pub init: bool,
    pub rlimits: Vec<Rlimit>,
    /// The network namespace to join (the task's), or `None` for a new one.
    pub netns: Option<PathBuf>,
    /// Share the host's network namespace (then `netns` is ignored).
    #[serde(default)]
    pub host_network: bool,
    /// Labels (ECS `dockerLabels`), kept with the container (OCI annotations).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub cgroup: Cgroup,
    pub mounts: Vec<BindMount>,
    /// All capabilities, every device, no seccomp filter, no `no_new_privs` (ECS `privileged`,
    /// which the agent passes on only for EC2 and EXTERNAL tasks).
    pub privileged: bool,
    /// No seccomp filter (`dockerSecurityOptions` `seccomp=unconfined`, EC2 and EXTERNAL only).
    #[serde(default)]
    pub seccomp_unconfined: bool,
    /// Host devices made in the container's /dev (ECS `linuxParameters.devices`).
    #[serde(default)]
    pub devices: Vec<Device>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub executor: Executor,
    pub log_rotation: Rotation,
    /// The user namespace the container runs in (`--userns remap`, built-in executor only);
    /// `None`: the host's.
    #[serde(default)]
    pub userns: Option<UserNs>,
}

/// A node's user namespace (`--userns remap`): container uids and gids `0..count` are host
/// `base..base+count`; `path` is the bind mount that keeps it (see `container::userns`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNs {
    pub path: PathBuf,
    pub base: u32,
    pub count: u32,
}

impl UserNs {
    /// The host id of container id `id` (`None`: outside the range, unmapped).
    pub fn host_id(&self, id: u32) -> Option<u32> {
        (id < self.count).then(|| self.base + id)
    }
}

impl ContainerSpec {
    pub fn log_path(&self) -> PathBuf {
        self.state_dir.join("container.log")
    }
}

/// Files in a container's state directory.
pub mod files {
    pub const SPEC: &str = "spec.json";
    /// Written once the container runs: its PID (in the host's namespace) and start time.
    pub const STARTED: &str = "started.json";
    /// Written when the container has exited.
    pub const EXIT: &str = "exit.json";
    pub const LOG: &str = "container.log";
}

/// `started.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub pid: i32,
    /// The supervisor's PID.
    pub shim_pid: i32,
    /// Milliseconds since the epoch.
    pub started_at_ms: u64,
}

/// `exit.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The exit code, 128 + signal when killed by a signal.
    pub code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at_ms: u64,
    /// Set when the container could not be started at all.
    pub error: Option<String>,
}
