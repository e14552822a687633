//! The node agent: runs the ECS tasks the control plane assigns to its node, submits their
//! state changes and sends telemetry ([`telemetry`], cgroup samples from [`stats`]), all through the
//! [`control::ControlPlane`] trait (in-process by default; an agent on another machine only
//! needs another implementation of it).
//!
//! A task is run by [`runner`] as an ordered list of steps (network namespace, image pulls,
//! containers in dependency order, health checks, stop, clean-up); [`translate`] turns ECS
//! container definitions into runtime specs; containers run under supervisors that outlive
//! the agent, which adopts them again after a restart.
//!
//! **Architecture invariant:** the agent does not decide placement: it runs what it is given.

pub mod awslogs;
pub mod control;
pub mod credentials;
pub mod exec;
pub mod health;
pub mod lb;
pub mod metadata;
pub mod network;
pub mod pool;
pub mod remote;
pub mod runner;
pub mod stats;
pub mod telemetry;
pub mod translate;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use estiba_core::node::NodeStatus;
use estiba_core::task as task_rules;
use estiba_runtime::container::spec::Executor;
use estiba_runtime::image::{Credentials, ImageStore};
use tokio::sync::watch;

use control::{Assignment, ControlPlane};

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_id: String,
    /// Where tasks keep their state (`<data-dir>/agent`).
    pub data_dir: PathBuf,
    /// The estiba binary, re-executed for `exec-in` (and as `estiba shim` when there is no
    /// `estiba-shim` beside it).
    pub exe: PathBuf,
    /// How a container's supervisor is started: the program and the arguments before the
    /// state directory (see [`AgentConfig::supervisor_for`]).
    pub supervisor: (PathBuf, Vec<String>),
    pub executor: Executor,
    /// Below this much available memory the node takes no new task.
    pub mem_floor_bytes: u64,
    /// Registry credentials named by `repositoryCredentials.credentialsParameter`.
    pub secrets_dir: PathBuf,
    /// Where `environmentFiles` are read from; `None`: tasks that name one fail to start.
    pub environment_files_dir: Option<PathBuf>,
    pub net: network::NetConfig,
    /// How often running tasks' cgroups are sampled ([`stats`]).
    pub metrics_interval: Duration,
    /// What the node offers the control plane, sent with every heartbeat.
    pub role: NodeRole,
    /// `--userns remap`: the node's user namespace (made by the binary at start), which
    /// containers run in unless privileged or in the host's network.
    pub userns: Option<estiba_runtime::container::spec::UserNs>,
}

/// What a node offers: Fargate capacity, container instances of some clusters, or both.
#[derive(Clone, Debug, Default)]
pub struct NodeRole {
    pub fargate: bool,
    pub join_clusters: Vec<String>,
    pub external: bool,
    pub attributes: Vec<(String, String)>,
    /// An agent on another machine (`estiba agent`).
    pub remote: bool,
    /// The machine's address other nodes and tasks reach its published ports at; `None`: its
    /// end of the VPC bridge (one machine).
    pub address: Option<std::net::Ipv4Addr>,
}

impl AgentConfig {
    /// The supervisor command for the estiba binary `exe`: the small `estiba-shim` binary
    /// built beside it, or `estiba shim` when it is not there (`cargo run -p estiba` builds
    /// only the `estiba` binary).
    pub fn supervisor_for(exe: &std::path::Path) -> (PathBuf, Vec<String>) {
        let small = exe.with_file_name("estiba-shim");
        if small.is_file() {
            (small, vec![])
        } else {
            (exe.to_owned(), vec!["shim".into()])
        }
    }
}

pub struct Shared {
    pub cfg: AgentConfig,
    pub cp: Arc<dyn ControlPlane>,
    pub images: Arc<ImageStore>,
    /// Address leases (`<data-dir>/net`) and published ports.
    pub net: Arc<estiba_net::Host>,
    /// Warm supervisors for the built-in executor.
    pub pool: Arc<pool::Pool>,
    /// Network namespaces made ahead of time.
    pub spare_netns: Arc<estiba_net::netns::Spares>,
    /// The VPC resolver's address once it serves (tasks' `resolv.conf` point there).
    pub resolver: std::sync::OnceLock<std::net::Ipv4Addr>,
    /// The Service Connect table this node's proxy serves now (after it applied it): a task
    /// the control plane stops is out of it before its containers get SIGTERM.
    pub connect_applied: watch::Sender<Arc<estiba_proxy::Table>>,
    /// The VPC address blocks this node claimed and has not seen published yet
    /// ([`network::blocks`]).
    pub claimed_blocks: std::sync::Mutex<Vec<ipnet::Ipv4Net>>,
    /// The address each task's network got on this node, by task id, from the moment it is
    /// set up: what the metadata and credentials endpoint know a task by before the control
    /// plane shows the address back ([`metadata::may_read`]).
    pub task_addresses: TaskAddresses,
}

/// Task id → the task's own address on this node.
pub type TaskAddresses = std::sync::Mutex<std::collections::HashMap<String, std::net::Ipv4Addr>>;

impl Shared {
    /// Registry credentials for `repositoryCredentials`. The parameter is a Secrets Manager
    /// ARN (`...:secret:<name>`) or a name; estiba reads `<secrets-dir>/<name>.json`, a JSON
    /// object with `username` and `password`.
    pub fn credentials(&self, parameter: &str) -> Result<Credentials, String> {
        let name = parameter.rsplit(":secret:").next().unwrap_or(parameter);
        let name = name.rsplit_once('-').filter(|(_, suffix)| suffix.len() == 6).map(|(n, _)| n).unwrap_or(name);
        // Beneath the secrets directory only: the parameter comes from API callers.
        let read = |file: &str| estiba_runtime::files::read_beneath(&self.cfg.secrets_dir, Path::new(file), 64 << 10);
        let text = read(&format!("{name}.json")).or_else(|_| read(name)).map_err(|e| {
            format!(
                "CannotPullContainerError: repository credentials {parameter}: {} ({e})",
                self.cfg.secrets_dir.display()
            )
        })?;
        let v: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| format!("CannotPullContainerError: repository credentials {parameter}: {e}"))?;
        match (v["username"].as_str(), v["password"].as_str()) {
            (Some(u), Some(p)) => Ok(Credentials { username: u.into(), password: p.into() }),
            _ => {
                Err(format!("CannotPullContainerError: repository credentials {parameter} need username and password"))
            }
        }
    }
}

/// Removes a task's cgroup from every hierarchy (it is empty once its containers are gone).
pub fn remove_task_cgroup(task_id: &str) {
    let path = std::path::PathBuf::from("/estiba").join(task_id);
    let _ = estiba_runtime::container::cgroup::remove(&path);
}

/// A `/proc/meminfo` field (`MemAvailable:`, `MemTotal:`) in bytes.
fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

async fn heartbeat(shared: Arc<Shared>) {
    loop {
        let status = NodeStatus {
            id: shared.cfg.node_id.clone(),
            mem_available_bytes: meminfo("MemAvailable:"),
            mem_total_bytes: meminfo("MemTotal:"),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            mem_floor_bytes: shared.cfg.mem_floor_bytes,
            // Its end of the VPC bridge, which every task network on it and the host reach.
            // (On a machine of several nodes, the machine's own address.)
            address: Some(shared.cfg.role.address.unwrap_or_else(|| shared.cfg.net.vpc().gateway())),
            heartbeat_at: now(),
            fargate: shared.cfg.role.fargate,
            join_clusters: shared.cfg.role.join_clusters.clone(),
            external: shared.cfg.role.external,
            attributes: shared.cfg.role.attributes.clone(),
            remote: shared.cfg.role.remote,
            lost_at: None,
            executor: match &shared.cfg.executor {
                Executor::Native => "native".into(),
                Executor::Oci(p) => p.display().to_string(),
            },
        };
        if let Err(e) = shared.cp.report_node(status).await {
            tracing::warn!(error = %e, "node heartbeat failed");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Removes what a task left on this node when the control plane no longer knows it.
fn forget(shared: &Shared, task_id: &str) {
    let dir = runner::task_dir(shared, task_id);
    network::teardown(shared, task_id, &dir);
    if let Ok(ctrs) = std::fs::read_dir(&dir) {
        for c in ctrs.flatten() {
            let _ = nix::mount::umount2(&c.path().join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    remove_task_cgroup(task_id);
}

/// Runs the agent until `shutdown` flips.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    credentials::init(&shared.cfg.data_dir);
    std::fs::create_dir_all(shared.cfg.data_dir.join("tasks")).ok();
    // Serves until `run` returns.
    let published = shared.cp.published();
    let _resolver = match published.dns_zone {
        Some(zone) => network::start_resolver(&shared, zone).await,
        None => None,
    };
    if let Some(rx) = published.service_connect {
        tokio::spawn(network::run_service_connect(shared.clone(), rx, shutdown.clone()));
    }
    if let Some(rx) = published.load_balancers {
        tokio::spawn(lb::run(shared.clone(), rx, shutdown.clone()));
    }
    if let Some(rx) = published.routes {
        tokio::spawn(network::run_routes(shared.clone(), rx, shutdown.clone()));
    }
    tokio::spawn(heartbeat(shared.clone()));
    // The sampler's last readings, which the task metadata endpoint shows.
    let latest = Arc::new(metadata::Latest::default());
    tokio::spawn(stats::run(shared.clone(), shared.cfg.metrics_interval, latest.clone(), shutdown.clone()));
    tokio::spawn(metadata::run(shared.clone(), latest, shutdown.clone()));
    // Slots whose parked supervisor a `kill -9` took are empty: remove them, then park anew.
    let _ = tokio::task::spawn_blocking(estiba_runtime::container::cgroup::sweep_slots).await;
    shared.pool.refill();
    shared.spare_netns.refill();
    // Nothing on this node is started, adopted or removed before the control plane has said
    // what the node runs: a slow store must not look like a store that forgot every task.
    let waited = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = shared.cp.listed() => break,
            _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!(
                waited_s = waited.elapsed().as_secs(),
                "the control plane has not listed this node's tasks yet; waiting (tasks on this node are left alone)"
            ),
            _ = shutdown.changed() => return,
        }
    }
    let mut rx = shared.cp.assignments();
    let mut runners: HashMap<String, (watch::Sender<Assignment>, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut last_sweep = std::time::Instant::now() - Duration::from_secs(3600);
    let mut previous: control::Assignments = Default::default();
    loop {
        let current = rx.borrow_and_update().clone();
        runners.retain(|k, (_, h)| {
            if h.is_finished() {
                done.insert(k.clone());
                false
            } else {
                true
            }
        });
        done.retain(|k| current.contains_key(k));
        for (key, a) in current.iter() {
            if let Some((tx, _)) = runners.get(key) {
                // Runners hear only of their own task's changes.
                if !previous.get(key).is_some_and(|p| Arc::ptr_eq(p, a)) {
                    tx.send_replace((**a).clone());
                }
                continue;
            }
            if done.contains(key) || task_rules::last_status(&a.task) == task_rules::Status::Stopped {
                continue;
            }
            let (tx, urx) = watch::channel((**a).clone());
            let h = tokio::spawn(runner::run(shared.clone(), (**a).clone(), urx));
            runners.insert(key.clone(), (tx, h));
        }
        if last_sweep.elapsed() > Duration::from_secs(30) {
            last_sweep = std::time::Instant::now();
            let live: HashSet<String> = current.values().map(|a| task_rules::task_id(&a.task).to_owned()).collect();
            if let Ok(dirs) = std::fs::read_dir(shared.cfg.data_dir.join("tasks")) {
                for d in dirs.flatten() {
                    let id = d.file_name().to_string_lossy().into_owned();
                    if !live.contains(&id) {
                        tracing::info!(task = %id, "removing what a deleted task left");
                        forget(&shared, &id);
                    }
                }
            }
            // Addresses, veths and ports are held only by tasks that have a runner: what any
            // other task holds was left by a crash.
            let live: HashSet<String> = runners
                .keys()
                .filter_map(|k| current.get(k))
                .map(|a| task_rules::task_id(&a.task).to_owned())
                .collect();
            let net = shared.net.clone();
            let _ = tokio::task::spawn_blocking(move || net.sweep(&live)).await;
        }
        previous = current;
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
