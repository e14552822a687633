//! What the control plane and node agents tell each other.
//!
//! - The server assigns a task to a node by writing a [`Claim`] under the node's own prefix
//!   (`keys::claims_of_node`), in the same transaction as the task. From then on that node's
//!   agent moves the task through its lifecycle; the server only sets `desiredStatus`.
//! - The agent reports what happened to a task as a [`TaskStateChange`] message (ECS's
//!   SubmitTaskStateChange and SubmitContainerStateChange in one); the control plane applies
//!   it to the task document with [`TaskStateChange::apply`].
//! - Each agent sends its [`NodeStatus`] every few seconds ([`NodeReports`]): the report
//!   renews the node's liveness, and is written to the store only when it says something new
//!   ([`NodeStatus::news_against`]); the server refuses new Fargate tasks on a node whose
//!   available memory fell below the node's floor.
//!
//! Every message here is JSON (camelCase, stable field names), so an agent on another
//! machine sends the same messages over the network.

use estiba_api::ecs::{Connectivity, HealthStatus, KeyValuePair, NetworkBinding, NetworkInterface, Task, TaskStopCode};
use serde::{Deserialize, Serialize};

use crate::task::{self, Status};

/// The node that runs a task, and what it needs to know beyond the task document.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub node: String,
    /// `assignPublicIp: ENABLED` (the task shape does not carry its network configuration):
    /// the task's container ports are published on the node's own addresses too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public_ip: bool,
    /// Set with the stop request of a task registered in target groups: the control plane
    /// has marked its targets draining, and the node keeps the task DEACTIVATING (serving the
    /// requests it already has) until this time (seconds since the epoch) before it signals
    /// the containers, as ECS waits out the deregistration delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_until: Option<f64>,
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
    /// Where tasks reach the ports this node publishes for its tasks (bridge and host modes):
    /// Cloud Map registers those tasks there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// The node takes FARGATE and FARGATE_SPOT tasks of every cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fargate: bool,
    /// Clusters (names in the server's default account and region, or ARNs) the node joins as
    /// a container instance, as the ECS agent does with `ECS_CLUSTER`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join_clusters: Vec<String>,
    /// Joins as an `EXTERNAL` instance (ECS Anywhere) rather than `EC2`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// Custom attributes of its container instances (`--attribute k=v`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(String, String)>,
    /// Runs on another machine, through the agent API (not inside a server process).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
    /// Set by the control plane when it finds the node lost (seconds since the epoch); the
    /// node's next report clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_at: Option<f64>,
}

impl NodeStatus {
    /// Whether the node can take one more task now.
    pub fn has_memory(&self) -> bool {
        self.mem_available_bytes >= self.mem_floor_bytes
    }

    /// Whether this report says something the stored one (`stored`) does not, so that it
    /// must be written: heartbeats only prove the node alive (node liveness is kept beside
    /// the store), and the document changes only when what placement or other nodes read of
    /// it does. Available memory counts only when the node's ability to take a task flips or
    /// it moved by more than 1/32 of the host's memory (at least 64 MiB).
    pub fn news_against(&self, stored: &NodeStatus) -> bool {
        let step = (self.mem_total_bytes / 32).max(64 << 20);
        let moved = self.mem_available_bytes.abs_diff(stored.mem_available_bytes) > step;
        let same_rest = NodeStatus {
            heartbeat_at: stored.heartbeat_at,
            mem_available_bytes: stored.mem_available_bytes,
            ..self.clone()
        } == *stored;
        !same_rest || moved || self.has_memory() != stored.has_memory()
    }
}

/// The value of a node's liveness key with a store that has leases (`keys::node_lease`):
/// the lease that holds it, which every heartbeat of the node renews.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeLease {
    pub lease: i64,
}

/// Why a node's report was not recorded.
#[derive(Debug, thiserror::Error)]
#[error("the node's report was not recorded: {0}")]
pub struct ReportError(pub String);

/// Where a node inside a server process sends its reports: the server's node liveness
/// (a remote agent reaches the same through the agent API).
pub trait NodeReports: Send + Sync + 'static {
    fn report(&self, status: NodeStatus) -> crate::telemetry::BoxFuture<'_, Result<(), ReportError>>;
}

/// A container's `lastStatus`, as an agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerStatus {
    Pending,
    Running,
    Stopped,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Pending => "PENDING",
            ContainerStatus::Running => "RUNNING",
            ContainerStatus::Stopped => "STOPPED",
        }
    }
}

/// Why the agent itself stops a task (an essential container exited, the task failed to
/// start).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStop {
    pub stop_code: TaskStopCode,
    pub stopped_reason: String,
}

/// What the agent knows of one container. `None` fields say nothing (they never erase).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateChange {
    pub container_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_bindings: Option<Vec<NetworkBinding>>,
}

/// What the agent knows of a task: the whole picture each time (not a delta), so the
/// latest message alone is enough and intermediate ones may be dropped. `None` fields say
/// nothing; timestamps are seconds since the epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStateChange {
    /// The task's `lastStatus`; a change without one is not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    /// The status of the task's attachments (`ATTACHED`, `DELETED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_status: Option<String>,
    /// The ENI attachment's details once the task has its address (awsvpc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eni_details: Option<Vec<KeyValuePair>>,
    /// Every container's `networkInterfaces` (awsvpc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interfaces: Option<Vec<NetworkInterface>>,
    /// Set when the agent itself decides the task stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<TaskStop>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerStateChange>,
}

/// The control plane's answer to a [`TaskStateChange`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStateAck {
    /// The task's version once the change is in.
    pub version: i64,
    /// False when the change held nothing new (nothing was written).
    pub changed: bool,
}

impl TaskStateChange {
    /// Writes the agent-owned fields over `t`. A late change never moves the task backwards
    /// (its status is kept only if it is not behind), what it does not say is left as it
    /// is, and a stop of the agent's own asks for STOPPED unless someone asked first (whose
    /// stop code then stands, if it has one).
    pub fn apply(&self, t: &mut Task) {
        let Some(next) = self.status else { return };
        if next >= task::last_status(t) {
            t.last_status = Some(next.as_str().into());
        }
        macro_rules! keep {
            ($f:ident) => {
                if self.$f.is_some() {
                    t.$f = self.$f;
                }
            };
        }
        keep!(pull_started_at);
        keep!(pull_stopped_at);
        keep!(started_at);
        keep!(stopping_at);
        keep!(execution_stopped_at);
        keep!(stopped_at);
        keep!(connectivity_at);
        if let Some(h) = self.health_status {
            t.health_status = Some(h);
        }
        if self.connectivity_at.is_some() {
            t.connectivity =
                Some(if self.stopped_at.is_some() { Connectivity::Disconnected } else { Connectivity::Connected });
        }
        if let Some(s) = &self.attachment_status {
            for a in t.attachments.iter_mut().flatten() {
                a.status = Some(s.clone());
            }
        }
        if let Some(d) = &self.eni_details {
            for a in t.attachments.iter_mut().flatten() {
                if a.r#type.as_deref() == Some("ElasticNetworkInterface") {
                    a.details = Some(d.clone());
                }
            }
        }
        if let Some(stop) = &self.stop {
            if !task::desired_stopped(t) {
                t.desired_status = Some("STOPPED".into());
                t.stop_code = Some(stop.stop_code);
                t.stopped_reason = Some(stop.stopped_reason.clone());
            } else if t.stop_code.is_none() {
                t.stop_code = Some(stop.stop_code);
                t.stopped_reason = Some(stop.stopped_reason.clone());
            }
        }
        let exec = t.enable_execute_command;
        let started_at = t.started_at;
        for c in t.containers.iter_mut().flatten() {
            let Some(r) = self.containers.iter().find(|r| Some(r.container_name.as_str()) == c.name.as_deref()) else {
                continue;
            };
            if let Some(s) = r.status {
                c.last_status = Some(s.as_str().into());
                if exec {
                    c.managed_agents = Some(vec![exec_agent(s, started_at)]);
                }
            }
            if r.exit_code.is_some() {
                c.exit_code = r.exit_code;
            }
            if r.reason.is_some() {
                c.reason = r.reason.clone();
            }
            if r.runtime_id.is_some() {
                c.runtime_id = r.runtime_id.clone();
            }
            if r.image_digest.is_some() {
                c.image_digest = r.image_digest.clone();
            }
            if r.health_status.is_some() {
                c.health_status = r.health_status;
            }
            if r.network_bindings.is_some() {
                c.network_bindings = r.network_bindings.clone();
            }
            if self.network_interfaces.is_some() {
                c.network_interfaces = self.network_interfaces.clone();
            }
        }
    }
}

/// The `ExecuteCommandAgent` of a container of a task run with `enableExecuteCommand`: it
/// runs while the container runs (the agent lets its node's exec sessions in), with the
/// backend statuses ECS's agent reports (`RUNNING`, `STOPPED`, `PENDING` otherwise).
fn exec_agent(container: ContainerStatus, started_at: Option<f64>) -> estiba_api::ecs::ManagedAgent {
    let status = match container {
        ContainerStatus::Running => "RUNNING",
        ContainerStatus::Stopped => "STOPPED",
        ContainerStatus::Pending => "PENDING",
    };
    estiba_api::ecs::ManagedAgent {
        last_started_at: started_at.filter(|_| status != "PENDING"),
        last_status: Some(status.into()),
        name: Some(estiba_api::ecs::ManagedAgentName::ExecuteCommandAgent),
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_api::ecs::{Attachment, Container};

    fn task(status: &str) -> Task {
        Task {
            last_status: Some(status.into()),
            desired_status: Some("RUNNING".into()),
            containers: Some(vec![Container { name: Some("web".into()), ..Default::default() }]),
            attachments: Some(vec![Attachment {
                r#type: Some("ElasticNetworkInterface".into()),
                status: Some("PRECREATED".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn change(status: Status) -> TaskStateChange {
        TaskStateChange { status: Some(status), ..Default::default() }
    }

    #[test]
    fn the_exec_agent_follows_the_container_when_exec_is_enabled() {
        let running = |exec: bool| {
            let mut t = task("PENDING");
            t.enable_execute_command = exec;
            let mut c = change(Status::Running);
            c.started_at = Some(100.0);
            c.containers = vec![ContainerStateChange {
                container_name: "web".into(),
                status: Some(ContainerStatus::Running),
                ..Default::default()
            }];
            c.apply(&mut t);
            t
        };
        let mut t = running(true);
        let agents = t.containers.as_ref().unwrap()[0].managed_agents.clone().unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].name, Some(estiba_api::ecs::ManagedAgentName::ExecuteCommandAgent));
        assert_eq!((agents[0].last_status.as_deref(), agents[0].last_started_at), (Some("RUNNING"), Some(100.0)));
        assert_eq!(running(false).containers.unwrap()[0].managed_agents, None);
        let mut stop = change(Status::Stopped);
        stop.containers = vec![ContainerStateChange {
            container_name: "web".into(),
            status: Some(ContainerStatus::Stopped),
            ..Default::default()
        }];
        stop.apply(&mut t);
        let agents = t.containers.unwrap()[0].managed_agents.clone().unwrap();
        assert_eq!(agents[0].last_status.as_deref(), Some("STOPPED"));
    }

    #[test]
    fn a_change_without_a_status_changes_nothing() {
        let mut t = task("PENDING");
        let before = t.clone();
        TaskStateChange { started_at: Some(1.0), ..Default::default() }.apply(&mut t);
        assert_eq!(t, before);
    }

    #[test]
    fn never_moves_a_task_backwards_but_keeps_what_a_late_change_adds() {
        let mut t = task("RUNNING");
        TaskStateChange { pull_stopped_at: Some(5.0), ..change(Status::Pending) }.apply(&mut t);
        assert_eq!(t.last_status.as_deref(), Some("RUNNING"));
        assert_eq!(t.pull_stopped_at, Some(5.0));
        change(Status::Stopping).apply(&mut t);
        assert_eq!(t.last_status.as_deref(), Some("STOPPING"));
    }

    #[test]
    fn keeps_timestamps_it_does_not_mention() {
        let mut t = task("PENDING");
        TaskStateChange { pull_started_at: Some(1.0), ..change(Status::Pending) }.apply(&mut t);
        TaskStateChange {
            started_at: Some(2.0),
            connectivity_at: Some(2.0),
            attachment_status: Some("ATTACHED".into()),
            ..change(Status::Running)
        }
        .apply(&mut t);
        assert_eq!((t.pull_started_at, t.started_at, t.connectivity_at), (Some(1.0), Some(2.0), Some(2.0)));
        assert_eq!(t.connectivity, Some(Connectivity::Connected));
        assert_eq!(t.attachments.as_ref().unwrap()[0].status.as_deref(), Some("ATTACHED"));
        TaskStateChange { stopped_at: Some(3.0), connectivity_at: Some(2.0), ..change(Status::Stopped) }.apply(&mut t);
        assert_eq!((t.pull_started_at, t.started_at, t.stopped_at), (Some(1.0), Some(2.0), Some(3.0)));
        assert_eq!(t.connectivity, Some(Connectivity::Disconnected));
    }

    #[test]
    fn the_agents_stop_asks_for_stopped_unless_someone_asked_first() {
        let stop = TaskStop {
            stop_code: TaskStopCode::EssentialContainerExited,
            stopped_reason: "Essential container in task exited".into(),
        };
        let mut t = task("RUNNING");
        TaskStateChange { stop: Some(stop.clone()), ..change(Status::Running) }.apply(&mut t);
        assert_eq!(t.desired_status.as_deref(), Some("STOPPED"));
        assert_eq!(t.stop_code, Some(TaskStopCode::EssentialContainerExited));

        // A user's stop came first: its code and reason stand.
        let mut t = task("RUNNING");
        t.desired_status = Some("STOPPED".into());
        t.stop_code = Some(TaskStopCode::UserInitiated);
        t.stopped_reason = Some("by hand".into());
        TaskStateChange { stop: Some(stop.clone()), ..change(Status::Running) }.apply(&mut t);
        assert_eq!(t.stop_code, Some(TaskStopCode::UserInitiated));
        assert_eq!(t.stopped_reason.as_deref(), Some("by hand"));

        // Asked to stop without a code: the agent's reason fills it.
        let mut t = task("RUNNING");
        t.desired_status = Some("STOPPED".into());
        TaskStateChange { stop: Some(stop), ..change(Status::Running) }.apply(&mut t);
        assert_eq!(t.stop_code, Some(TaskStopCode::EssentialContainerExited));
    }

    #[test]
    fn containers_are_matched_by_name() {
        let mut t = task("ACTIVATING");
        TaskStateChange {
            containers: vec![
                ContainerStateChange {
                    container_name: "web".into(),
                    status: Some(ContainerStatus::Stopped),
                    exit_code: Some(3),
                    health_status: Some(HealthStatus::Unhealthy),
                    ..Default::default()
                },
                ContainerStateChange { container_name: "other".into(), exit_code: Some(9), ..Default::default() },
            ],
            ..change(Status::Running)
        }
        .apply(&mut t);
        let c = &t.containers.as_ref().unwrap()[0];
        assert_eq!((c.last_status.as_deref(), c.exit_code), (Some("STOPPED"), Some(3)));
        assert_eq!(c.health_status, Some(HealthStatus::Unhealthy));
        // A later change that does not mention the exit leaves it.
        TaskStateChange {
            containers: vec![ContainerStateChange { container_name: "web".into(), ..Default::default() }],
            ..change(Status::Stopped)
        }
        .apply(&mut t);
        assert_eq!(t.containers.as_ref().unwrap()[0].exit_code, Some(3));
    }

    #[test]
    fn the_wire_shape_is_stable() {
        let c = TaskStateChange {
            started_at: Some(2.5),
            stop: Some(TaskStop { stop_code: TaskStopCode::TaskFailedToStart, stopped_reason: "no".into() }),
            containers: vec![ContainerStateChange {
                container_name: "web".into(),
                status: Some(ContainerStatus::Running),
                ..Default::default()
            }],
            ..change(Status::Deprovisioning)
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": "DEPROVISIONING",
                "startedAt": 2.5,
                "stop": {"stopCode": "TaskFailedToStart", "stoppedReason": "no"},
                "containers": [{"containerName": "web", "status": "RUNNING"}],
            })
        );
        assert_eq!(serde_json::from_value::<TaskStateChange>(json).unwrap(), c);
        assert_eq!(
            serde_json::to_value(TaskStateAck { version: 3, changed: true }).unwrap(),
            serde_json::json!({"version": 3, "changed": true})
        );
    }
}

/// What a task's containers get from SSM Parameter Store and Secrets Manager when it starts,
/// resolved by the control plane for the node that runs the task: each container's `secrets`
/// as environment variables (by container name, in the task definition's order) and its
/// `repositoryCredentials`. `Debug` shows names only, never values.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSecrets {
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, Vec<(String, String)>>,
    #[serde(default)]
    pub registry: std::collections::BTreeMap<String, RegistryAuth>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for TaskSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<(&String, Vec<&String>)> =
            self.env.iter().map(|(c, v)| (c, v.iter().map(|(n, _)| n).collect())).collect();
        f.debug_struct("TaskSecrets").field("env", &env).field("registry", &self.registry.keys()).finish()
    }
}

/// The prefix of every secrets failure's stopped reason, as ECS words it.
pub const SECRETS_FAILURE: &str =
    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: ";

/// Temporary credentials of a task's role (`taskRoleArn`), as the credentials endpoint at
/// 169.254.170.2 serves them. `Debug` shows the role and key id only.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCredentials {
    pub role_arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
    /// Unix seconds.
    pub expiration: i64,
}

impl std::fmt::Debug for TaskCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCredentials")
            .field("role_arn", &self.role_arn)
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Resolves a task's secrets for the node that runs it (the server; the agent never reads
/// secrets from the store). `Err` is the task's stopped reason.
pub trait SecretResolver: Send + Sync + 'static {
    fn resolve(&self, node: &str, task_key: &str) -> Result<TaskSecrets, String>;

    /// Issues temporary credentials for the task role of `task_key`, which `node` must run.
    fn task_credentials(&self, node: &str, task_key: &str) -> Result<TaskCredentials, String> {
        let _ = (node, task_key);
        Err("this control plane issues no task credentials".into())
    }
}

#[cfg(test)]
mod report_tests {
    use super::NodeStatus;

    fn status(avail_mib: u64) -> NodeStatus {
        NodeStatus {
            id: "n1".into(),
            mem_available_bytes: avail_mib << 20,
            mem_total_bytes: 8192 << 20,
            mem_floor_bytes: 256 << 20,
            heartbeat_at: 100.0,
            ..Default::default()
        }
    }

    #[test]
    fn heartbeats_alone_are_no_news() {
        let stored = status(4000);
        let mut beat = status(4100);
        beat.heartbeat_at = 105.0;
        assert!(!beat.news_against(&stored));
        // More than 1/32 of 8 GiB (256 MiB) of movement is news.
        assert!(status(4300).news_against(&stored));
        // Crossing the floor is news however small the step.
        assert!(status(200).news_against(&status(300)));
        let mut other = status(4000);
        other.fargate = true;
        assert!(other.news_against(&stored));
    }
}
