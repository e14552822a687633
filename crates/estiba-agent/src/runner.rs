//! Runs one task on this node, as ECS does:
//!
//! PROVISIONING → (network namespace) → PENDING (pull images) → ACTIVATING (start containers
//! in `dependsOn` order) → RUNNING → DEACTIVATING / STOPPING (SIGTERM, then SIGKILL after each
//! container's `stopTimeout`, dependents first) → DEPROVISIONING (clean up) → STOPPED.
//!
//! The runner keeps its own picture of the task (a [`TaskStateChange`], the whole picture
//! each time) and a reporter submits the latest picture to the control plane in the
//! background, so a slow write never holds the task back; intermediate states may be
//! coalesced, timestamps are always kept.
//! Everything a container leaves (status, exit, logs) is on disk in its state directory,
//! written by its supervisor, so a runner restarted after a crash adopts the task from there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use estiba_api::ecs::{ContainerCondition, ContainerDefinition, HealthStatus, NetworkMode, TaskStopCode};
use estiba_core::awslogs::{self, AwsLogs};
use estiba_core::node::{ContainerStateChange, ContainerStatus, TaskStateChange, TaskStop};
use estiba_core::task::Status;
use estiba_core::telemetry::{LogDestination, LogIngestError};
use estiba_core::{task as task_rules, taskdef};
use estiba_runtime::container::shim::{read_json, write_json};
use estiba_runtime::container::spec::Executor;
use estiba_runtime::container::spec::{files, ContainerSpec, Exit, Started};
use estiba_runtime::image::{Credentials, Image};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::awslogs::{Shipper, ShipperConfig};
use crate::control::{Assignment, ControlError, ControlPlane};
use crate::health::Probe;
use crate::network::{self, TaskNet};
use crate::telemetry::TelemetrySender;
use crate::translate::{self, TaskContext};
use crate::Shared;

fn now() -> f64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

fn ms_to_secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// How long a report of a passing state (PENDING, ACTIVATING) waits for the next one
/// before it is written. A task whose image is cached goes through them in a few
/// milliseconds: written, they would be store commits its RUNNING report queues behind.
/// States that last (a pull, a dependency's wait) are written after this short delay.
const PASSING_STATE_HOLD: Duration = Duration::from_millis(25);

/// How long a stopping task waits for its containers' last lines to reach their log groups.
const LOG_DRAIN: Duration = Duration::from_secs(30);

/// Submits the latest picture until told to finish; returns once the final one is in.
async fn reporter(cp: Arc<dyn ControlPlane>, key: String, mut rx: watch::Receiver<TaskStateChange>) {
    // Tokio's clock: the hold is measured on the runtime's time, which tests can pause.
    let mut held_since: Option<tokio::time::Instant> = None;
    loop {
        let passing = {
            let r = rx.borrow();
            matches!(r.status, Some(Status::Pending | Status::Activating)) && r.stop.is_none()
        };
        if passing {
            let since = *held_since.get_or_insert_with(tokio::time::Instant::now);
            let left = PASSING_STATE_HOLD.saturating_sub(since.elapsed());
            if let Ok(Ok(())) = tokio::time::timeout(left, rx.changed()).await {
                // A newer report: weigh that one instead (the hold counts from the first).
                continue;
            }
        }
        held_since = None;
        let report = rx.borrow_and_update().clone();
        match cp.submit_task_state(&key, report.clone()).await {
            Ok(_) => tracing::debug!(task = %key, status = ?report.status, "reported"),
            Err(ControlError::Gone) => return,
            Err(e) => {
                tracing::warn!(task = %key, error = %e, "reporting task state failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        if rx.changed().await.is_err() {
            // The runner is done: submit what came last, if anything changed since.
            let last = rx.borrow().clone();
            if last != report {
                let _ = cp.submit_task_state(&key, last).await;
            }
            return;
        }
    }
}

/// The agent's own stop when an essential container exits.
fn essential_exit() -> TaskStop {
    TaskStop {
        stop_code: TaskStopCode::EssentialContainerExited,
        stopped_reason: "Essential container in task exited".into(),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum CState {
    Pending,
    Running { pid: i32, started_at: f64 },
    Stopped { exit: Option<Exit>, ran: bool },
}

struct Ctr {
    def: ContainerDefinition,
    name: String,
    essential: bool,
    state: CState,
    health: Option<HealthStatus>,
    spec: Option<ContainerSpec>,
    health_task: Option<tokio::task::JoinHandle<()>>,
    /// The awslogs driver's configuration (an error: options its logger refuses).
    awslogs: Option<Result<AwsLogs, String>>,
    shipper: Option<Shipper>,
}

enum Event {
    Exited(usize, Exit),
    Health(usize, HealthStatus),
    Update(Box<Assignment>),
}

pub struct Runner {
    shared: Arc<Shared>,
    key: String,
    task_id: String,
    dir: PathBuf,
    assignment: Assignment,
    report: TaskStateChange,
    tx_report: watch::Sender<TaskStateChange>,
    ctrs: Vec<Ctr>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    images: HashMap<String, Arc<Image>>,
    net: TaskNet,
    /// The containers' secrets and registry credentials, resolved by the control plane
    /// before the images are pulled.
    secrets: estiba_core::node::TaskSecrets,
}

/// Where a task keeps its containers' state.
pub fn task_dir(shared: &Shared, task_id: &str) -> PathBuf {
    shared.cfg.data_dir.join("tasks").join(task_id)
}

/// Runs the task until it is STOPPED and cleaned up. `updates` carries newer versions of
/// the assignment (a StopTask sets `desiredStatus`).
pub async fn run(shared: Arc<Shared>, assignment: Assignment, mut updates: watch::Receiver<Assignment>) {
    let key = assignment.key.clone();
    let task_id = task_rules::task_id(&assignment.task).to_owned();
    let dir = task_dir(&shared, &task_id);
    tracing::debug!(task = %task_id, "runner started");
    let (tx_report, rx_report) = watch::channel(TaskStateChange::default());
    let reporter = tokio::spawn(reporter(shared.cp.clone(), key.clone(), rx_report));
    let (events_tx, events) = mpsc::unbounded_channel();
    {
        let tx = events_tx.clone();
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let a = updates.borrow_and_update().clone();
                if tx.send(Event::Update(Box::new(a))).is_err() {
                    return;
                }
            }
        });
    }
    let ctrs = assignment
        .taskdef
        .container_definitions
        .iter()
        .flatten()
        .map(|d| Ctr {
            name: d.name.clone().unwrap_or_default(),
            essential: d.essential != Some(false),
            def: d.clone(),
            state: CState::Pending,
            health: d.health_check.as_ref().and_then(translate::health).map(|_| HealthStatus::Unknown),
            spec: None,
            health_task: None,
            awslogs: awslogs::of(d).transpose(),
            shipper: None,
        })
        .collect();
    let mut r = Runner {
        shared,
        key,
        task_id,
        dir,
        report: TaskStateChange { status: Some(Status::Provisioning), ..Default::default() },
        assignment,
        tx_report,
        ctrs,
        events_tx,
        events,
        images: HashMap::new(),
        net: TaskNet::default(),
        secrets: Default::default(),
    };
    r.report.containers = r
        .ctrs
        .iter()
        .map(|c| ContainerStateChange {
            container_name: c.name.clone(),
            status: Some(ContainerStatus::Pending),
            health_status: c.health,
            ..Default::default()
        })
        .collect();
    r.lifecycle().await;
    drop(r.tx_report);
    let _ = reporter.await;
}

impl Runner {
    fn publish(&mut self) {
        for (i, c) in self.ctrs.iter().enumerate() {
            let cr = &mut self.report.containers[i];
            cr.health_status = c.health;
            match &c.state {
                CState::Pending => {}
                CState::Running { .. } => cr.status = Some(ContainerStatus::Running),
                CState::Stopped { exit, .. } => {
                    cr.status = Some(ContainerStatus::Stopped);
                    if let Some(e) = exit {
                        if e.error.is_none() && e.code >= 0 {
                            cr.exit_code = Some(e.code);
                        }
                        if e.oom_killed {
                            cr.reason = Some("OutOfMemoryError: Container killed due to memory usage".into());
                        }
                    }
                }
            }
        }
        self.report.health_status = self.task_health();
        self.tx_report.send_replace(self.report.clone());
    }

    fn task_health(&self) -> Option<HealthStatus> {
        let checked: Vec<&Ctr> = self.ctrs.iter().filter(|c| c.essential && c.health.is_some()).collect();
        if checked.is_empty() {
            return Some(HealthStatus::Unknown);
        }
        if checked.iter().any(|c| c.health == Some(HealthStatus::Unhealthy)) {
            Some(HealthStatus::Unhealthy)
        } else if checked.iter().all(|c| c.health == Some(HealthStatus::Healthy)) {
            Some(HealthStatus::Healthy)
        } else {
            Some(HealthStatus::Unknown)
        }
    }

    fn desired_stopped(&self) -> bool {
        task_rules::desired_stopped(&self.assignment.task) || self.report.stop.is_some()
    }

    /// Marks the task as stopping for a reason of the agent's own.
    fn fail(&mut self, code: TaskStopCode, reason: String) {
        if self.report.stop.is_none() && !task_rules::desired_stopped(&self.assignment.task) {
            self.report.stop = Some(TaskStop { stop_code: code, stopped_reason: reason });
        }
    }

    async fn lifecycle(&mut self) {
        let adopted = self.dir.join("task.json").exists();
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            self.fail(TaskStopCode::TaskFailedToStart, format!("CannotCreateTaskDirectory: {e}"));
        }
        // The task's key, and its containers for `estiba logs` (before any of them starts).
        let names: Vec<&str> = self.ctrs.iter().map(|c| c.name.as_str()).collect();
        let _ = std::fs::write(
            self.dir.join("task.json"),
            serde_json::to_vec(&serde_json::json!({"key": self.key, "containers": names})).unwrap_or_default(),
        );
        if adopted {
            self.adopt();
        }
        let stopped_before_start = self.desired_stopped() && !self.ctrs.iter().any(|c| c.state != CState::Pending);
        if !stopped_before_start && self.report.stop.is_none() {
            if !adopted || self.ctrs.iter().any(|c| c.state == CState::Pending) {
                self.start_all().await;
            }
            if self.report.stop.is_none() && !self.desired_stopped() {
                self.watch_running().await;
            }
        }
        self.stop_all().await;
        // The containers' last lines are in their log groups before the task is STOPPED.
        self.drain_logs().await;
        self.cleanup();
        // Tells `estiba logs --follow` that nothing more will be written.
        let _ = std::fs::write(self.dir.join("stopped"), b"");
        self.report.status = Some(Status::Stopped);

        self.report.stopped_at = Some(now());
        self.report.attachment_status = Some("DELETED".into());
        self.publish();
    }

    /// Takes over containers a previous agent started, from their state directories.
    fn adopt(&mut self) {
        if let Some(net) = network::restore(&self.shared, &self.task_id, &self.dir) {
            self.show_network(net);
        }
        for i in 0..self.ctrs.len() {
            let cdir = self.dir.join(&self.ctrs[i].name);
            let spec: Option<ContainerSpec> = read_json(&cdir, files::SPEC);
            self.ctrs[i].spec = spec;
            if let Some(exit) = read_json::<Exit>(&cdir, files::EXIT) {
                let ran = cdir.join(files::STARTED).exists();
                self.ctrs[i].state = CState::Stopped { exit: Some(exit), ran };
            } else if let Some(st) = read_json::<Started>(&cdir, files::STARTED) {
                if process_alive(st.shim_pid) {
                    self.ctrs[i].state = CState::Running { pid: st.pid, started_at: ms_to_secs(st.started_at_ms) };
                    self.watch_exit(i, None, st.shim_pid);
                    self.start_health(i, st.pid);
                } else {
                    // The supervisor died without recording the end: the container is gone.
                    let exit = Exit { code: 137, signal: Some(9), oom_killed: false, finished_at_ms: 0, error: None };
                    self.ctrs[i].state = CState::Stopped { exit: Some(exit), ran: true };
                }
            }
            let c = &self.ctrs[i];
            if let Some(spec) = &c.spec {
                self.report.containers[i].runtime_id = Some(spec.id.clone());
            }
            if self.ctrs[i].state != CState::Pending {
                self.start_shipper(i);
                if matches!(self.ctrs[i].state, CState::Stopped { .. }) {
                    if let Some(s) = &self.ctrs[i].shipper {
                        s.finish();
                    }
                }
            }
        }
        // An essential container that exited while no agent watched stops the task now.
        if self.ctrs.iter().any(|c| c.essential && matches!(c.state, CState::Stopped { ran: true, .. }))
            && self.report.stop.is_none()
            && !task_rules::desired_stopped(&self.assignment.task)
        {
            self.report.stop = Some(essential_exit());
        }
        let any_started = self.ctrs.iter().any(|c| c.state != CState::Pending);
        if any_started {
            let all = self.ctrs.iter().all(|c| c.state != CState::Pending);
            self.report.status = Some(if all { Status::Running } else { Status::Activating });
            // The previous agent may have died before it reported RUNNING: the task started
            // when its last container did (the service scheduler counts health from it).
            if all && self.assignment.task.started_at.is_none() {
                let last = self.ctrs.iter().filter_map(|c| match c.state {
                    CState::Running { started_at, .. } => Some(started_at),
                    _ => None,
                });
                if let Some(t) = last.reduce(f64::max) {
                    self.report.started_at = Some(t);
                    self.report.connectivity_at = Some(t);
                }
            }
        }
        tracing::info!(task = %self.task_id, "adopted the task's containers");
        self.publish();
    }

    async fn pull(&mut self) -> Result<(), String> {
        let mut wanted: Vec<(String, Option<Credentials>)> = Vec::new();
        for c in &self.ctrs {
            if c.state != CState::Pending {
                continue;
            }
            let image = c.def.image.clone().unwrap_or_default();
            if self.images.contains_key(&image) || wanted.iter().any(|(w, _)| *w == image) {
                continue;
            }
            let creds = match (&c.def.repository_credentials, self.secrets.registry.get(&c.name)) {
                (Some(_), Some(auth)) => {
                    Some(Credentials { username: auth.username.clone(), password: auth.password.clone() })
                }
                (Some(rc), None) => Some(self.shared.credentials(&rc.credentials_parameter)?),
                (None, _) => None,
            };
            wanted.push((image, creds));
        }
        let pulls = wanted.into_iter().map(|(image, creds)| {
            let store = self.shared.images.clone();
            async move { (image.clone(), store.pull(&image, creds).await) }
        });
        let results = futures_util::future::join_all(pulls).await;
        for (image, r) in results {
            match r {
                Ok(img) => {
                    self.images.insert(image, img);
                }
                Err(e) => {
                    return Err(format!(
                        "CannotPullContainerError: pull image manifest has been retried {} time(s): failed to resolve ref {image}: {e}",
                        e.retries()
                    ))
                }
            }
        }
        Ok(())
    }

    async fn start_all(&mut self) {
        let t0 = Instant::now();
        // The containers' cgroup migrations come in a few milliseconds: let the kernel's
        // grace period they wait for elapse meanwhile. Containers started by warm supervisors
        // migrate nothing, and priming would only hold up their forks.
        if self.shared.pool.is_empty() {
            estiba_runtime::container::cgroup::prime_migration();
        }
        // PROVISIONING: the task's network.
        let net = match network::setup(&self.shared, &self.assignment, &self.task_id, &self.dir).await {
            Ok(n) => n,
            Err(e) => {
                self.fail(TaskStopCode::TaskFailedToStart, format!("TaskNetworkError: {e}"));
                self.publish();
                return;
            }
        };
        if let Err(e) = network::write_etc_files(&self.dir, &net, &self.assignment, self.shared.resolver.get().copied())
        {
            self.fail(TaskStopCode::TaskFailedToStart, format!("TaskNetworkError: {e}"));
            self.publish();
            return;
        }
        self.show_network(net);
        self.report.attachment_status = Some("ATTACHED".into());
        self.report.status = Some(Status::Pending);

        self.report.pull_started_at = Some(now());
        self.publish();

        tracing::debug!(task = %self.task_id, ms = t0.elapsed().as_secs_f64() * 1e3, "network ready");
        // PENDING: the containers' secrets and registry credentials (from the control plane),
        // then images.
        let wants_secrets = |c: &Ctr| {
            c.state == CState::Pending
                && (c.def.secrets.as_ref().is_some_and(|s| !s.is_empty()) || c.def.repository_credentials.is_some())
        };
        if self.ctrs.iter().any(wants_secrets) {
            match self.shared.cp.task_secrets(&self.key).await {
                Ok(s) => self.secrets = s,
                Err(reason) => {
                    self.report.pull_stopped_at = Some(now());
                    self.fail(TaskStopCode::TaskFailedToStart, reason);
                    self.publish();
                    return;
                }
            }
        }
        let stop = wait_for_stop(self.shared.clone(), self.key.clone());
        let pulled = tokio::select! {
            r = self.pull() => Some(r),
            _ = stop => None,
        };
        match pulled {
            None => return,
            Some(Err(msg)) => {
                for c in self
                    .ctrs
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.state == CState::Pending)
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>()
                {
                    self.report.containers[c].reason = Some(msg.clone());
                }
                self.report.pull_stopped_at = Some(now());
                self.fail(TaskStopCode::TaskFailedToStart, msg);
                self.publish();
                return;
            }
            Some(Ok(())) => {}
        }
        self.report.pull_stopped_at = Some(now());
        for (i, c) in self.ctrs.iter().enumerate() {
            if let Some(img) = self.images.get(c.def.image.as_deref().unwrap_or("")) {
                self.report.containers[i].image_digest = Some(img.digest.clone());
            }
        }
        self.report.status = Some(Status::Activating);
        self.publish();

        tracing::debug!(task = %self.task_id, ms = t0.elapsed().as_secs_f64() * 1e3, "images ready");
        // ACTIVATING: containers, in dependency order.
        let mode = taskdef::network_mode(&self.assignment.taskdef);
        let netns = (mode != NetworkMode::Host).then(|| self.dir.join("netns"));
        loop {
            if self.desired_stopped() {
                return;
            }
            let mut progressed = false;
            for i in 0..self.ctrs.len() {
                if self.ctrs[i].state != CState::Pending {
                    continue;
                }
                match self.deps_status(i) {
                    Deps::Ready => {
                        if let Err(msg) = self.start_container(i, netns.clone()).await {
                            self.report.containers[i].reason = Some(msg.clone());
                            self.ctrs[i].state = CState::Stopped { exit: None, ran: false };
                            self.fail(TaskStopCode::TaskFailedToStart, msg);
                            self.publish();
                            return;
                        }
                        progressed = true;
                    }
                    Deps::Never(why) => {
                        self.ctrs[i].state = CState::Stopped { exit: None, ran: false };
                        self.report.containers[i].reason = Some(why.clone());
                        if self.ctrs[i].essential {
                            self.fail(TaskStopCode::TaskFailedToStart, why);
                            self.publish();
                            return;
                        }
                        progressed = true;
                    }
                    Deps::Waiting => {}
                }
            }
            if self.ctrs.iter().all(|c| c.state != CState::Pending) {
                // Reported with RUNNING below, in one write: a report of its own here would
                // be a store write the RUNNING one waits behind.
                break;
            }
            if progressed {
                self.publish();
            }
            if !progressed {
                // Wait for something to change: an exit, a health result, a stop.
                match self.events.recv().await {
                    Some(e) => self.handle(e),
                    None => return,
                }
                if self.report.stop.is_some() {
                    return;
                }
            }
        }
        tracing::debug!(task = %self.task_id, ms = t0.elapsed().as_secs_f64() * 1e3, "containers started");
        // RUNNING once every container has started.
        let t = now();
        self.report.status = Some(Status::Running);
        self.report.started_at = Some(t);
        self.report.connectivity_at = Some(t);
        self.publish();
    }

    /// Puts what the task's network is into the report.
    fn show_network(&mut self, net: TaskNet) {
        if let Some(ip) = net.ip {
            self.shared.task_addresses.lock().unwrap_or_else(|e| e.into_inner()).insert(self.task_id.clone(), ip);
        }
        let shown = network::shown(&net, &self.assignment);
        self.report.eni_details = shown.eni_details;
        self.report.network_interfaces = shown.interfaces;
        for (name, b) in shown.bindings {
            if let Some(i) = self.ctrs.iter().position(|c| c.name == name) {
                self.report.containers[i].network_bindings = Some(b);
            }
        }
        self.net = net;
    }

    fn deps_status(&self, i: usize) -> Deps {
        let mut waiting = false;
        for d in self.ctrs[i].def.depends_on.iter().flatten() {
            let Some(dep) = self.ctrs.iter().find(|c| c.name == d.container_name) else { continue };
            let ok = match (&d.condition, &dep.state) {
                (ContainerCondition::Start, CState::Running { .. })
                | (ContainerCondition::Start, CState::Stopped { ran: true, .. }) => true,
                (ContainerCondition::Complete, CState::Stopped { ran: true, .. }) => true,
                (ContainerCondition::Success, CState::Stopped { exit: Some(e), ran: true }) if e.code == 0 => true,
                (ContainerCondition::Success, CState::Stopped { .. }) => {
                    return Deps::Never(format!(
                        "DependencyFailed: container {} exited with a non-zero code, and {} waits for its SUCCESS",
                        dep.name, self.ctrs[i].name
                    ))
                }
                (ContainerCondition::Healthy, CState::Running { .. }) if dep.health == Some(HealthStatus::Healthy) => {
                    true
                }
                (ContainerCondition::Healthy, CState::Stopped { .. }) | (ContainerCondition::Healthy, _)
                    if dep.health == Some(HealthStatus::Unhealthy) =>
                {
                    return Deps::Never(format!(
                        "DependencyFailed: container {} is unhealthy, and {} waits for it to be HEALTHY",
                        dep.name, self.ctrs[i].name
                    ))
                }
                (_, CState::Stopped { ran: false, .. }) => {
                    return Deps::Never(format!("DependencyFailed: container {} never started", dep.name))
                }
                _ => false,
            };
            waiting |= !ok;
        }
        if waiting {
            Deps::Waiting
        } else {
            Deps::Ready
        }
    }

    async fn start_container(&mut self, i: usize, netns: Option<PathBuf>) -> Result<(), String> {
        let image = self
            .images
            .get(self.ctrs[i].def.image.as_deref().unwrap_or(""))
            .cloned()
            .ok_or("CannotStartContainerError: image missing")?;
        let cx = TaskContext {
            task: &self.assignment.task,
            td: &self.assignment.taskdef,
            task_id: &self.task_id,
            task_dir: &self.dir,
            netns,
            hostname: &self.net.hostname,
            executor: self.shared.cfg.executor.clone(),
            environment_files_dir: self.shared.cfg.environment_files_dir.as_deref(),
            secrets: self.secrets.env.get(&self.ctrs[i].name).map(Vec::as_slice).unwrap_or_default(),
            userns: self.shared.cfg.userns.as_ref(),
        };
        let mut spec = translate::container_spec(&cx, &self.ctrs[i].def, &image)
            .map_err(|e| format!("CannotStartContainerError: {e}"))?;
        // A remapped container's root owns the task's files it gets as /etc/hosts, /etc/hostname
        // and /etc/resolv.conf (writable, as Docker's are).
        if let Some(ns) = &spec.userns {
            for m in &spec.mounts {
                let _ = std::os::unix::fs::chown(&m.source, Some(ns.base), Some(ns.base));
            }
        }
        // The awslogs driver: its stream exists (and its group, or the task fails as ECS's
        // does) before the container starts.
        if let Some(cfg) = self.ctrs[i].awslogs.clone() {
            let cfg = cfg.map_err(|msg| awslogs::invalid_options_reason(&msg))?;
            spec.log_rotation.keep_unshipped = cfg.mode == awslogs::Mode::Blocking;
            let dest = self.log_destination(&self.ctrs[i].name, &cfg, &spec.id);
            self.open_log_stream(&dest).await?;
        }
        std::fs::create_dir_all(&spec.state_dir).map_err(|e| format!("CannotStartContainerError: {e}"))?;
        for f in [files::EXIT, files::STARTED] {
            let _ = std::fs::remove_file(spec.state_dir.join(f));
        }
        write_json(&spec.state_dir, files::SPEC, &spec).map_err(|e| format!("CannotStartContainerError: {e}"))?;
        let (mut child, line) = self.supervise(&spec).await?;
        let shim_pid = child.id().unwrap_or(0) as i32;
        let pid = match line.as_deref().and_then(|l| l.split_once(' ')) {
            Some(("ok", pid)) => {
                pid.parse::<i32>().map_err(|_| "CannotStartContainerError: bad supervisor answer".to_string())?
            }
            Some(("error", msg)) => {
                let _ = child.wait().await;
                return Err(format!("CannotStartContainerError: {msg}"));
            }
            _ => {
                let _ = child.kill().await;
                return Err("CannotStartContainerError: the supervisor did not report".into());
            }
        };
        self.report.containers[i].runtime_id = Some(spec.id.clone());
        self.ctrs[i].spec = Some(spec);
        self.ctrs[i].state = CState::Running { pid, started_at: now() };
        self.watch_exit(i, Some(child), shim_pid);
        self.start_health(i, pid);
        self.start_shipper(i);
        Ok(())
    }

    /// Where container `name`'s lines go: ECS's stream name, the task's account, and the
    /// task's region unless the options name one.
    fn log_destination(&self, name: &str, cfg: &AwsLogs, runtime_id: &str) -> LogDestination {
        let arn = self.assignment.task.task_arn.as_deref().unwrap_or("");
        let (account, region) = estiba_core::arn::Arn::parse(arn).map(|a| (a.account, a.region)).unwrap_or(("", ""));
        LogDestination {
            account: account.to_owned(),
            region: cfg.region.clone().unwrap_or_else(|| region.to_owned()),
            group: cfg.group.clone(),
            stream: awslogs::stream_name(cfg, name, &self.task_id, runtime_id),
            create_group: cfg.create_group,
        }
    }

    /// Opens a container's log stream before it starts, retrying what may pass (for at most
    /// 30 s); the error is the task's stopped reason.
    async fn open_log_stream(&self, dest: &LogDestination) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.shared.cp.open_log_stream(dest).await {
                Ok(_) => return Ok(()),
                Err(LogIngestError::NoSuchGroup) => return Err(awslogs::missing_group_reason()),
                Err(LogIngestError::Refused(msg)) => {
                    return Err(format!(
                        "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: {msg} : exit status 1"
                    ))
                }
                Err(e @ LogIngestError::Unavailable(_)) if Instant::now() >= deadline => {
                    return Err(format!(
                        "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: failed to create Cloudwatch log stream: {e} : exit status 1"
                    ))
                }
                Err(e) => {
                    tracing::warn!(task = %self.task_id, error = %e, "awslogs: opening the log stream; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Starts shipping container `i`'s output when its definition uses the awslogs driver.
    fn start_shipper(&mut self, i: usize) {
        let Some(Ok(cfg)) = self.ctrs[i].awslogs.clone() else { return };
        let Some(spec) = &self.ctrs[i].spec else { return };
        if self.ctrs[i].shipper.is_some() {
            return;
        }
        let multiline = match cfg.multiline.as_deref().map(regex::Regex::new).transpose() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(task = %self.task_id, error = %e, "awslogs: the multi-line pattern is not a regular expression; lines go one by one");
                None
            }
        };
        let shipper = ShipperConfig {
            dest: self.log_destination(&self.ctrs[i].name, &cfg, &spec.id),
            log: spec.log_path(),
            mode: cfg.mode,
            max_buffer: cfg.max_buffer_size,
            multiline,
        };
        self.ctrs[i].shipper = Some(Shipper::start(self.shared.cp.clone(), shipper));
    }

    /// Waits (at most [`LOG_DRAIN`]) for every container's shipper to ship its last lines.
    async fn drain_logs(&mut self) {
        let deadline = tokio::time::Instant::now() + LOG_DRAIN;
        let shippers: Vec<(String, Shipper)> =
            self.ctrs.iter_mut().filter_map(|c| Some((c.name.clone(), c.shipper.take()?))).collect();
        if shippers.is_empty() {
            return;
        }
        let t0 = Instant::now();
        let waits = shippers.into_iter().map(|(name, s)| async move { (name, s.drained(deadline).await) });
        for (name, r) in futures_util::future::join_all(waits).await {
            match r {
                Some(stats) => {
                    tracing::debug!(task = %self.task_id, container = %name, events = stats.events, dropped = stats.dropped_lines, ms = t0.elapsed().as_millis() as u64, "awslogs: shipped")
                }
                None => {
                    tracing::warn!(task = %self.task_id, container = %name, "awslogs: lines still unshipped when the task stopped")
                }
            }
        }
    }

    /// Hands the container to a warm supervisor from the pool, or starts one, and reads its
    /// report line.
    async fn supervise(&self, spec: &ContainerSpec) -> Result<(tokio::process::Child, Option<String>), String> {
        let warm = if spec.executor == Executor::Native { self.shared.pool.take() } else { None };
        let (child, mut stdout) = match warm {
            Some(mut p) => {
                let mut dir = spec.state_dir.as_os_str().as_encoded_bytes().to_vec();
                dir.push(b'\n');
                if p.stdin.write_all(&dir).await.is_ok() {
                    drop(p.stdin);
                    (p.child, p.stdout)
                } else {
                    self.spawn_supervisor(spec)?
                }
            }
            None => self.spawn_supervisor(spec)?,
        };
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line)).await;
        Ok((child, matches!(read, Ok(Ok(n)) if n > 0).then(|| line.trim().to_owned())))
    }

    fn spawn_supervisor(
        &self,
        spec: &ContainerSpec,
    ) -> Result<(tokio::process::Child, tokio::io::BufReader<tokio::process::ChildStdout>), String> {
        let mut child = crate::pool::supervisor_command(
            &self.shared.cfg.supervisor,
            spec.state_dir.as_os_str(),
            std::process::Stdio::null(),
        )
        .spawn()
        .map_err(|e| format!("CannotStartContainerError: starting the supervisor: {e}"))?;
        let stdout = child.stdout.take().ok_or("CannotStartContainerError: no supervisor output")?;
        Ok((child, tokio::io::BufReader::new(stdout)))
    }

    /// Turns the end of the container's supervisor into an `Exited` event.
    fn watch_exit(&self, i: usize, child: Option<tokio::process::Child>, shim_pid: i32) {
        let tx = self.events_tx.clone();
        let dir = self.ctrs[i]
            .spec
            .as_ref()
            .map(|s| s.state_dir.clone())
            .unwrap_or_else(|| self.dir.join(&self.ctrs[i].name));
        tokio::spawn(async move {
            match child {
                Some(mut c) => {
                    let _ = c.wait().await;
                }
                None => wait_pid_exit(shim_pid).await,
            }
            let exit = read_json::<Exit>(&dir, files::EXIT).unwrap_or(Exit {
                code: 137,
                signal: Some(9),
                oom_killed: false,
                finished_at_ms: 0,
                error: Some("the supervisor ended without recording the exit".into()),
            });
            let _ = tx.send(Event::Exited(i, exit));
        });
    }

    fn start_health(&mut self, i: usize, pid: i32) {
        let Some(h) = self.ctrs[i].def.health_check.as_ref().and_then(translate::health) else { return };
        let tx = self.events_tx.clone();
        let exe = self.shared.cfg.exe.clone();
        let user = self.ctrs[i].spec.as_ref().and_then(|s| s.user.clone());
        let report = on_probe(
            self.shared.cp.telemetry(),
            self.assignment.task.task_arn.clone().unwrap_or_default(),
            self.ctrs[i].name.clone(),
            i,
            tx,
        );
        let handle = tokio::spawn(crate::health::run(exe, pid, user, h, report));
        self.ctrs[i].health_task = Some(handle);
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Update(a) => self.assignment = *a,
            Event::Health(i, status) => {
                if self.ctrs[i].health != Some(status) {
                    self.ctrs[i].health = Some(status);
                    self.publish();
                }
            }
            Event::Exited(i, exit) => {
                if let Some(h) = self.ctrs[i].health_task.take() {
                    h.abort();
                }
                if let Some(s) = &self.ctrs[i].shipper {
                    s.finish();
                }
                let ran = matches!(self.ctrs[i].state, CState::Running { .. });
                if let Some(err) = &exit.error {
                    self.report.containers[i].reason = Some(format!("CannotStartContainerError: {err}"));
                }
                self.ctrs[i].state = CState::Stopped { exit: Some(exit), ran };
                if self.ctrs[i].essential
                    && self.report.stop.is_none()
                    && !task_rules::desired_stopped(&self.assignment.task)
                {
                    self.report.stop = Some(essential_exit());
                }
                self.publish();
            }
        }
    }

    async fn watch_running(&mut self) {
        while !self.desired_stopped() {
            match self.events.recv().await {
                Some(e) => self.handle(e),
                None => return,
            }
        }
    }

    /// While DEACTIVATING: a task the control plane took out of its target groups keeps
    /// serving the requests it has until the deregistration delay is over (the claim's
    /// `drain_until`, which the control plane may move or clear meanwhile), unless its
    /// containers have all exited.
    async fn drain(&mut self) {
        while let Some(until) = self.assignment.claim.drain_until {
            let left = until - now();
            if left <= 0.0 || !self.ctrs.iter().any(|c| matches!(c.state, CState::Running { .. })) {
                return;
            }
            match tokio::time::timeout(Duration::from_secs_f64(left.min(3600.0)), self.events.recv()).await {
                Ok(Some(e)) => self.handle(e),
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// DEACTIVATING → STOPPING: dependents first, each with SIGTERM then SIGKILL.
    async fn stop_all(&mut self) {
        self.report.stopping_at.get_or_insert(now());
        if matches!(
            self.report.status,
            Some(Status::Running | Status::Activating | Status::Pending | Status::Provisioning)
        ) {
            self.report.status = Some(Status::Deactivating);
            self.publish();
            self.drain().await;
        }
        self.report.status = Some(Status::Stopping);
        self.publish();
        // Out of Service Connect's proxies first, as a load balancer deregisters a target.
        if let (Some(ip), true) = (self.net.ip, task_rules::desired_stopped(&self.assignment.task)) {
            network::drain_service_connect(&self.shared, ip).await;
        }
        for level in stop_levels(&self.ctrs) {
            let mut waits = Vec::new();
            for i in level {
                if let CState::Running { pid, .. } = self.ctrs[i].state {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
                    waits.push((i, pid, Instant::now() + translate::stop_timeout(&self.ctrs[i].def)));
                }
            }
            for (i, pid, deadline) in waits {
                let mut killed = false;
                while matches!(self.ctrs[i].state, CState::Running { .. }) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() && !killed {
                        let _ =
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                        killed = true;
                    }
                    let wait = if killed { Duration::from_secs(30) } else { left };
                    match tokio::time::timeout(wait, self.events.recv()).await {
                        Ok(Some(e)) => self.handle(e),
                        Ok(None) => break,
                        Err(_) if killed => break,
                        Err(_) => {}
                    }
                }
            }
        }
        for i in 0..self.ctrs.len() {
            if self.ctrs[i].state == CState::Pending {
                self.ctrs[i].state = CState::Stopped { exit: None, ran: false };
            }
        }
        self.report.execution_stopped_at = Some(now());
        self.report.status = Some(Status::Deprovisioning);
        self.publish();
    }

    /// Removes what the task held: its network namespace, cgroups and writable layers. The
    /// logs stay until the task itself is deleted.
    fn cleanup(&mut self) {
        network::teardown(&self.shared, &self.task_id, &self.dir);
        for c in &self.ctrs {
            let cdir = self.dir.join(&c.name);
            for d in ["rootfs", "upper", "work"] {
                let p = cdir.join(d);
                if p.exists() {
                    let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
                    let _ = std::fs::remove_dir_all(&p);
                }
            }
        }
        crate::remove_task_cgroup(&self.task_id);
    }
}

/// What becomes of each health probe of container `i`: health telemetry, and an event for
/// the runner when the container's status changes (it goes into the task state as well).
fn on_probe(
    telemetry: TelemetrySender,
    task_arn: String,
    container: String,
    i: usize,
    events: mpsc::UnboundedSender<Event>,
) -> impl Fn(Probe) + Send + 'static {
    move |p| {
        telemetry.send(p.telemetry(&task_arn, &container));
        if p.changed {
            let _ = events.send(Event::Health(i, p.status));
        }
    }
}

enum Deps {
    Ready,
    Waiting,
    Never(String),
}

/// Stop order: containers nobody (still running) depends on go first.
fn stop_levels(ctrs: &[Ctr]) -> Vec<Vec<usize>> {
    let mut left: Vec<usize> = (0..ctrs.len()).collect();
    let mut levels = Vec::new();
    while !left.is_empty() {
        let level: Vec<usize> = left
            .iter()
            .copied()
            .filter(|&i| {
                !left.iter().any(|&j| {
                    j != i && ctrs[j].def.depends_on.iter().flatten().any(|d| d.container_name == ctrs[i].name)
                })
            })
            .collect();
        let level = if level.is_empty() { left.clone() } else { level };
        left.retain(|i| !level.contains(i));
        levels.push(level);
    }
    levels
}

fn process_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Waits for a process that is not our child to end (a supervisor adopted after a restart).
async fn wait_pid_exit(pid: i32) {
    match rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK).ok())
    {
        Some(fd) => {
            // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open and the same
            // descriptor for the AsyncFd's whole life.
            if let Ok(afd) = unsafe { tokio::io::unix::AsyncFd::register(fd) } {
                let _ = afd.readable().await;
                return;
            }
            while process_alive(pid) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        None => {
            while process_alive(pid) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Resolves when the control plane asks the task to stop (or forgets it).
async fn wait_for_stop(shared: Arc<Shared>, key: String) {
    let mut rx = shared.cp.assignments();
    loop {
        let stopped = rx.borrow().get(&key).is_none_or(|a| task_rules::desired_stopped(&a.task));
        if stopped {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{BoxFuture, StoreControl};
    use estiba_api::ecs::Task;
    use estiba_core::node::TaskStateAck;
    use estiba_core::telemetry::{HealthSubject, Telemetry, TelemetrySink};
    use estiba_store::{MemStore, Store};

    /// A control plane that keeps one task and records the status of every write.
    #[derive(Default)]
    struct Recorder {
        task: std::sync::Mutex<Task>,
        writes: std::sync::Mutex<Vec<String>>,
    }

    impl ControlPlane for Recorder {
        crate::control::idle_control_plane!();
        fn submit_task_state<'a>(
            &'a self,
            _key: &'a str,
            change: TaskStateChange,
        ) -> BoxFuture<'a, Result<TaskStateAck, ControlError>> {
            let mut t = self.task.lock().unwrap().clone();
            let before = t.clone();
            change.apply(&mut t);
            let changed = t != before;
            if changed {
                self.writes.lock().unwrap().push(t.last_status.clone().unwrap_or_default());
                *self.task.lock().unwrap() = t.clone();
            }
            Box::pin(async move { Ok(TaskStateAck { version: t.version, changed }) })
        }
    }

    fn report(status: Status) -> TaskStateChange {
        TaskStateChange { status: Some(status), ..Default::default() }
    }

    /// On a paused clock: time moves only when every task waits, so the 5 ms and the hold
    /// are exact whatever the machine is doing.
    #[tokio::test(start_paused = true)]
    async fn passing_states_followed_quickly_are_not_written_and_lasting_ones_are() {
        let cp = Arc::new(Recorder::default());
        let (tx, rx) = watch::channel(TaskStateChange::default());
        let h = tokio::spawn(reporter(cp.clone(), "k".into(), rx));
        // A start whose image is cached: PENDING, ACTIVATING and RUNNING within the hold.
        tx.send_replace(report(Status::Pending));
        tx.send_replace(report(Status::Activating));
        tokio::time::sleep(Duration::from_millis(5)).await;
        tx.send_replace(report(Status::Running));
        tokio::time::sleep(PASSING_STATE_HOLD * 2).await;
        assert_eq!(*cp.writes.lock().unwrap(), ["RUNNING"]);

        // A state that lasts (a pull) is written once the hold is over.
        let cp = Arc::new(Recorder::default());
        let (tx, rx) = watch::channel(TaskStateChange::default());
        let h2 = tokio::spawn(reporter(cp.clone(), "k".into(), rx));
        tx.send_replace(report(Status::Pending));
        tokio::time::sleep(PASSING_STATE_HOLD * 8).await;
        assert_eq!(*cp.writes.lock().unwrap(), ["PENDING"]);
        tx.send_replace(report(Status::Running));
        drop(tx);
        h2.await.unwrap();
        assert_eq!(*cp.writes.lock().unwrap(), ["PENDING", "RUNNING"]);
        drop(h);
    }

    /// A sink that keeps every batch.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<Vec<Telemetry>>);

    impl TelemetrySink for Kept {
        fn deliver(&self, batch: Telemetry) {
            self.0.lock().unwrap().push(batch);
        }
    }

    #[tokio::test]
    async fn health_results_reach_the_sink_as_telemetry_and_never_the_store() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let sink = Arc::new(Kept::default());
        let cp = StoreControl::start(store.clone(), "n1".into(), sink.clone()).await.unwrap();
        let rev = store.revision();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        // `/bin/true exec-in --pid 1 -- true` exits 0: every probe passes.
        let h = crate::translate::Health {
            args: vec!["true".into()],
            interval: Duration::from_millis(5),
            timeout: Duration::from_secs(5),
            retries: 1,
            start_period: Duration::ZERO,
        };
        let report = on_probe(cp.telemetry(), "arn:t".into(), "web".into(), 0, events_tx);
        let probing = tokio::spawn(crate::health::run("/bin/true".into(), 1, None, h, report));
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap() {
            Some(Event::Health(0, HealthStatus::Healthy)) => {}
            _ => panic!("the runner hears of the change to HEALTHY"),
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().len() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        probing.abort();
        let kept = sink.0.lock().unwrap().clone();
        assert!(kept.len() >= 3, "every probe is telemetry: {kept:?}");
        for b in &kept {
            let Telemetry::Health(items) = b else { panic!("{b:?}") };
            assert_eq!(items.len(), 1);
            assert_eq!((items[0].task_arn.as_str(), items[0].passed), ("arn:t", true));
            assert_eq!(items[0].subject, HealthSubject::Container { name: "web".into() });
            assert_eq!(items[0].status, HealthStatus::Healthy);
        }
        assert!(events.try_recv().is_err(), "probes that change nothing are not runner events");
        assert_eq!(store.revision(), rev, "telemetry never writes to the store");
        assert_eq!(cp.telemetry().dropped(), 0);
    }
}
