//! How the agent talks to the control plane: it learns which tasks its node runs (with
//! their task definitions), submits their state changes as messages, and reports the node's
//! own status. The task runner only sees the [`ControlPlane`] trait, whose messages are all
//! data (no closures), so an agent on another machine needs a different implementation
//! (over the API), not a different runner.
//!
//! Three kinds of traffic, each shaped for a network:
//! - assignments: the node's claims (one prefix range of the store, `keys::claims_of_node`)
//!   with the tasks and task definitions they name, as a watched map;
//! - state changes: [`TaskStateChange`] messages (ECS's SubmitTaskStateChange), applied by
//!   the control plane, and the node's [`NodeStatus`];
//! - telemetry ([`estiba_core::telemetry`]): a bounded queue that bypasses the store;
//! - container logs of the awslogs driver: [`ControlPlane::open_log_stream`] and
//!   [`ControlPlane::ship_logs`], numbered appends that are answered (the shipper saves its
//!   position only once they are stored), also beside the store.
//!
//! [`StoreControl`] is the in-process implementation: it follows the store directly, hands
//! telemetry to a [`TelemetrySink`] and log events to a [`LogIngest`] given at construction.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use estiba_api::ecs::{Task, TaskDefinition};
use estiba_core::netblock::{BlockClaims, BlockError, Routes};
use estiba_core::node::{
    Claim, NodeReports, NodeStatus, SecretResolver, TaskSecrets, TaskStateAck, TaskStateChange, SECRETS_FAILURE,
};
use estiba_core::telemetry::{LogDestination, LogEvents, LogIngest, LogIngestError, TelemetrySink};
use estiba_core::{arn, keys};
use estiba_store::{Compare, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn};
use tokio::sync::watch;

use crate::telemetry::TelemetrySender;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A task this node must run, as the control plane last wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// The task's store key: `ecs/<account>/<region>/tasks/<cluster>/<id>`.
    pub key: String,
    pub task: Task,
    pub taskdef: Arc<TaskDefinition>,
    /// What the control plane told this node beyond the task (`assignPublicIp`).
    pub claim: Claim,
}

/// The tasks assigned to a node by task key. An assignment that did not change keeps its
/// `Arc`, so a reader finds what changed by pointer (`Arc::ptr_eq`) without comparing tasks.
pub type Assignments = Arc<HashMap<String, Arc<Assignment>>>;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control plane: {0}")]
    Failed(String),
    #[error("the task no longer exists")]
    Gone,
}

pub trait ControlPlane: Send + Sync + 'static {
    /// The tasks assigned to this node, kept current. Empty until [`ControlPlane::listed`].
    fn assignments(&self) -> watch::Receiver<Assignments>;

    /// Resolves once the node's assignments have been listed from the control plane: before,
    /// an empty set means "not known yet", not "nothing to run", and the agent touches nothing.
    fn listed(&self) -> BoxFuture<'_, ()>;

    /// Submits what the agent knows of a task (ECS's SubmitTaskStateChange): the control
    /// plane applies it to the task's current state ([`TaskStateChange::apply`]), retrying on
    /// conflicts with other writers (the server setting `desiredStatus`).
    fn submit_task_state<'a>(
        &'a self,
        task_key: &'a str,
        change: TaskStateChange,
    ) -> BoxFuture<'a, Result<TaskStateAck, ControlError>>;

    fn report_node(&self, status: NodeStatus) -> BoxFuture<'_, Result<(), ControlError>>;

    /// Where telemetry goes (log lines, cgroup samples, health results): a bounded queue
    /// beside the store that never makes the sender wait.
    fn telemetry(&self) -> TelemetrySender;

    /// What the control plane publishes for every node alike, kept current (`None`: the
    /// node runs without it): the VPC resolver's zone and Service Connect's table.
    fn published(&self) -> Published {
        Published::default()
    }

    /// One more address block of `subnet` for this node, which knows of the blocks `known`
    /// ([`estiba_core::netblock`]): awsvpc tasks get addresses only from the node's blocks. A
    /// control plane of one machine without blocks hands out the whole subnet.
    fn claim_block<'a>(
        &'a self,
        subnet: ipnet::Ipv4Net,
        known: &'a [ipnet::Ipv4Net],
    ) -> BoxFuture<'a, Result<ipnet::Ipv4Net, BlockError>> {
        let _ = known;
        Box::pin(async move { Ok(subnet) })
    }

    /// Makes a container's log stream exist (its group too when the destination asks for it)
    /// and returns the number its next event gets. `LogIngestError::NoSuchGroup` fails the
    /// task as ECS does; `Unavailable` is worth retrying.
    fn open_log_stream<'a>(&'a self, dest: &'a LogDestination) -> BoxFuture<'a, Result<u64, LogIngestError>> {
        let _ = dest;
        no_log_store()
    }

    /// Appends a container's log events, numbered from `seq` (numbers the stream already holds
    /// are skipped), durably when it returns; returns the stream's next number.
    fn ship_logs<'a>(
        &'a self,
        dest: &'a LogDestination,
        seq: u64,
        events: LogEvents,
    ) -> BoxFuture<'a, Result<u64, LogIngestError>> {
        let _ = (dest, seq, events);
        no_log_store()
    }

    /// The container secrets and registry credentials of one of this node's tasks, resolved
    /// by the control plane as the task starts (the agent never reads them from the store).
    /// `Err` is the task's stopped reason.
    fn task_secrets<'a>(&'a self, task_key: &'a str) -> BoxFuture<'a, Result<TaskSecrets, String>> {
        let _ = task_key;
        Box::pin(async { Err(format!("{SECRETS_FAILURE}this control plane resolves no secrets")) })
    }

    /// Temporary credentials for the task role of one of this node's tasks, issued by the
    /// control plane (served to the task by [`crate::credentials`]).
    fn task_credentials<'a>(
        &'a self,
        task_key: &'a str,
    ) -> BoxFuture<'a, Result<estiba_core::node::TaskCredentials, String>> {
        let _ = task_key;
        Box::pin(async { Err("this control plane issues no task credentials".to_owned()) })
    }
}

/// Resolves once `listed` turns true (a control plane's first listing of its node's tasks).
pub(crate) fn wait_listed(listed: &watch::Receiver<bool>) -> BoxFuture<'static, ()> {
    let mut rx = listed.clone();
    Box::pin(async move {
        let _ = rx.wait_for(|l| *l).await;
    })
}

/// The answer of a control plane that takes no container logs.
fn no_log_store<'a>() -> BoxFuture<'a, Result<u64, LogIngestError>> {
    Box::pin(async { Err(LogIngestError::Unavailable("this control plane takes no container logs".into())) })
}

/// What the control plane publishes for every node, from its own state (never from a node's
/// tasks): each node serves the same DNS zone and proxies the same Service Connect aliases.
#[derive(Clone, Default)]
pub struct Published {
    pub dns_zone: Option<watch::Receiver<Arc<estiba_dns::Zone>>>,
    pub service_connect: Option<watch::Receiver<Arc<estiba_proxy::Table>>>,
    /// The load balancers' listeners, rules and target groups (ELBv2's data plane).
    pub load_balancers: Option<watch::Receiver<Arc<estiba_lb::Table>>>,
    /// Every node's address blocks and where they are reached ([`estiba_core::netblock`]).
    pub routes: Option<watch::Receiver<Arc<Routes>>>,
}

/// The agent inside the server process: reads and writes the store itself, and hands
/// telemetry straight to the server's sink (never to the store).
pub struct StoreControl {
    store: Arc<dyn Store>,
    rx: watch::Receiver<Assignments>,
    /// Flips to true at the first listing of the store.
    listed: watch::Receiver<bool>,
    telemetry: TelemetrySender,
    published: Published,
    logs: Option<Arc<dyn LogIngest>>,
    /// Where address blocks come from (`None`: the node hands out whole subnets).
    blocks: Option<Arc<dyn BlockClaims>>,
    /// Where the node's reports go (`None`: written to the store as they come).
    reports: Option<Arc<dyn NodeReports>>,
    /// Who resolves tasks' secrets (the server of this process); unset: tasks with secrets fail.
    secrets: std::sync::OnceLock<Arc<dyn SecretResolver>>,
    node: String,
}

pub(crate) fn taskdef_key(task: &Task) -> Option<String> {
    let a = task.task_definition_arn.as_deref()?;
    let parsed = arn::Arn::parse(a)?;
    let r = arn::TaskDefRef::parse(a)?;
    let scope = estiba_core::Scope::new(parsed.account, parsed.region);
    Some(keys::taskdef(&scope, &r.family, r.revision?))
}

impl StoreControl {
    /// Starts following the store; the assignments are known once [`ControlPlane::listed`]
    /// resolves (the listing is retried until the store answers). Telemetry is delivered to
    /// `sink`.
    pub async fn start(
        store: Arc<dyn Store>,
        node: String,
        sink: Arc<dyn TelemetrySink>,
    ) -> Result<Arc<Self>, StoreError> {
        Self::start_with(store, node, sink, Published::default(), None, None, None).await
    }

    /// [`StoreControl::start`], handing the node what the server publishes beside the store,
    /// where container logs go (`None`: the awslogs driver has nowhere to ship), where
    /// address blocks come from and where the node's reports go.
    pub async fn start_with(
        store: Arc<dyn Store>,
        node: String,
        sink: Arc<dyn TelemetrySink>,
        published: Published,
        logs: Option<Arc<dyn LogIngest>>,
        blocks: Option<Arc<dyn BlockClaims>>,
        reports: Option<Arc<dyn NodeReports>>,
    ) -> Result<Arc<Self>, StoreError> {
        let (tx, rx) = watch::channel(Arc::new(HashMap::new()));
        let (listed_tx, listed) = watch::channel(false);
        let (telemetry, queue) = TelemetrySender::channel(crate::telemetry::CAPACITY);
        tokio::spawn(crate::telemetry::deliver(queue, sink));
        let me = Arc::new(StoreControl {
            store: store.clone(),
            rx,
            listed,
            telemetry,
            published,
            logs,
            blocks,
            reports,
            secrets: Default::default(),
            node: node.clone(),
        });
        tokio::spawn(follow(store, node, tx, listed_tx));
        Ok(me)
    }
}

impl StoreControl {
    /// Names who resolves this node's tasks' secrets (once).
    pub fn set_secrets(&self, resolver: Arc<dyn SecretResolver>) {
        let _ = self.secrets.set(resolver);
    }
}

/// A document `follow` holds, with the revision it was read at: a value read with `get` may
/// be newer than what the watch still has to deliver, which is then skipped.
struct Held<T> {
    rev: Revision,
    value: T,
}

/// A claimed task and the key of its task definition.
struct HeldTask {
    doc: Held<Task>,
    taskdef: Option<String>,
}

/// A task definition named by held tasks (`users` of them); `doc` is `None` until read (or
/// when it no longer exists).
#[derive(Default)]
struct HeldDef {
    users: usize,
    doc: Option<Held<Arc<TaskDefinition>>>,
}

/// What the agent follows of the store: this node's claims, the tasks they name and those
/// tasks' task definitions. Nothing else is decoded or kept.
struct Follower {
    /// `ecs/-/-/claims/<node>/`: the node's work is this one prefix range.
    claims_prefix: String,
    /// Task key → claim.
    claims: HashMap<String, Claim>,
    tasks: HashMap<String, HeldTask>,
    taskdefs: HashMap<String, HeldDef>,
}

fn decode<T: serde::de::DeserializeOwned>(kind: &EventKind, value: &[u8]) -> Option<T> {
    match kind {
        EventKind::Put => serde_json::from_slice(value).ok(),
        EventKind::Delete => None,
    }
}

impl Follower {
    fn new(node: &str) -> Self {
        Follower {
            claims_prefix: keys::claims_of_node(node),
            claims: HashMap::new(),
            tasks: HashMap::new(),
            taskdefs: HashMap::new(),
        }
    }

    /// A claim changed; returns the task key when the claim is this node's.
    fn on_claim(&mut self, kind: &EventKind, key: &str, value: &[u8]) -> Option<String> {
        if !key.starts_with(&self.claims_prefix) {
            return None;
        }
        let tkey = keys::task_of_claim(key)?;
        match decode::<Claim>(kind, value) {
            Some(c) => {
                self.claims.insert(tkey.clone(), c);
            }
            None => {
                self.claims.remove(&tkey);
                self.drop_task(&tkey);
            }
        }
        Some(tkey)
    }

    /// A task changed; true when it is one of this node's (claims are applied first).
    fn on_task(&mut self, kind: &EventKind, kv: &KeyValue) -> bool {
        if !self.claims.contains_key(&kv.key) {
            return false;
        }
        if self.tasks.get(&kv.key).is_some_and(|h| h.doc.rev >= kv.mod_revision) {
            return true;
        }
        match decode::<Task>(kind, &kv.value) {
            Some(t) => self.hold_task(&kv.key, kv.mod_revision, t),
            None => self.drop_task(&kv.key),
        }
        true
    }

    /// A task definition changed; returns the held tasks that name it.
    fn on_taskdef(&mut self, kind: &EventKind, kv: &KeyValue) -> Vec<String> {
        let Some(def) = self.taskdefs.get_mut(&kv.key) else { return vec![] };
        if def.doc.as_ref().is_some_and(|d| d.rev >= kv.mod_revision) {
            return vec![];
        }
        def.doc =
            decode::<TaskDefinition>(kind, &kv.value).map(|td| Held { rev: kv.mod_revision, value: Arc::new(td) });
        self.tasks
            .iter()
            .filter(|(_, h)| h.taskdef.as_deref() == Some(kv.key.as_str()))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn hold_task(&mut self, key: &str, rev: Revision, task: Task) {
        let taskdef = taskdef_key(&task);
        let old =
            self.tasks.insert(key.to_owned(), HeldTask { doc: Held { rev, value: task }, taskdef: taskdef.clone() });
        let old = old.and_then(|h| h.taskdef);
        if old != taskdef {
            if let Some(k) = taskdef {
                self.taskdefs.entry(k).or_default().users += 1;
            }
            self.release(old);
        }
    }

    fn drop_task(&mut self, key: &str) {
        if let Some(h) = self.tasks.remove(key) {
            self.release(h.taskdef);
        }
    }

    fn release(&mut self, taskdef: Option<String>) {
        let Some(k) = taskdef else { return };
        if let Some(d) = self.taskdefs.get_mut(&k) {
            d.users -= 1;
            if d.users == 0 {
                self.taskdefs.remove(&k);
            }
        }
    }

    /// Reads what the claims of `tkeys` name and is not held yet: the task (claimed in a
    /// transaction of its own, or at the first listing) and its task definition.
    async fn fill(&mut self, store: &dyn Store, tkeys: &[String]) -> Result<(), StoreError> {
        for k in tkeys {
            if !self.claims.contains_key(k) {
                continue;
            }
            if !self.tasks.contains_key(k) {
                let Some(kv) = store.get(k).await? else { continue };
                match serde_json::from_slice::<Task>(&kv.value) {
                    Ok(t) => self.hold_task(k, kv.mod_revision, t),
                    Err(e) => tracing::warn!(task = %k, error = %e, "agent: undecodable task"),
                }
            }
            let Some(td) = self.tasks.get(k).and_then(|h| h.taskdef.clone()) else { continue };
            if self.taskdefs.get(&td).is_some_and(|d| d.doc.is_none()) {
                let doc = store.get(&td).await?.and_then(|kv| {
                    Some(Held { rev: kv.mod_revision, value: Arc::new(serde_json::from_slice(&kv.value).ok()?) })
                });
                if let Some(d) = self.taskdefs.get_mut(&td) {
                    d.doc = doc;
                }
            }
        }
        Ok(())
    }

    /// The assignment of one task key, if this node has one.
    fn assignment(&self, tkey: &str) -> Option<Assignment> {
        let claim = self.claims.get(tkey)?;
        let held = self.tasks.get(tkey)?;
        let td = self.taskdefs.get(held.taskdef.as_deref()?)?.doc.as_ref()?;
        Some(Assignment {
            key: tkey.to_owned(),
            task: held.doc.value.clone(),
            taskdef: td.value.clone(),
            claim: claim.clone(),
        })
    }
}

/// Keeps the set of assignments current from the store: this node's claims (one prefix
/// range), the tasks they name and their task definitions. Tasks are claimed in the same
/// transaction that creates them, so both arrive in one watch batch and the task is taken
/// from it; a claim whose task is not at hand (the first listing, a claim of its own) has it
/// read with `get`.
async fn follow(store: Arc<dyn Store>, node: String, tx: watch::Sender<Assignments>, listed: watch::Sender<bool>) {
    let mut current: HashMap<String, Arc<Assignment>> = HashMap::new();
    loop {
        let mut f = Follower::new(&node);
        let listing = match store.range(&f.claims_prefix).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "agent: listing the store failed");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        // Watched from the listing's revision before anything is read with `get`, so no
        // change falls between the two.
        let mut watch = match store.watch("ecs/", listing.revision) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "agent: watch failed; listing again");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let tkeys: Vec<String> =
            listing.kvs.iter().filter_map(|kv| f.on_claim(&EventKind::Put, &kv.key, &kv.value)).collect();
        if let Err(e) = f.fill(&*store, &tkeys).await {
            tracing::warn!(error = %e, "agent: reading claimed tasks failed; listing again");
            continue;
        }
        // Assignments that did not change keep their `Arc` across a new listing too.
        current = f
            .claims
            .keys()
            .filter_map(|k| {
                let a = f.assignment(k)?;
                let kept = current.get(k).filter(|old| ***old == a).cloned();
                Some((k.clone(), kept.unwrap_or_else(|| Arc::new(a))))
            })
            .collect();
        tx.send_replace(Arc::new(current.clone()));
        listed.send_replace(true);
        loop {
            match watch.next().await {
                Ok(batch) => {
                    // Only the task keys a batch touches are looked at again: with thousands
                    // of tasks kept after they stop, redoing every assignment on every event
                    // made each task's start wait on the others. Claims go first, so a task
                    // created with its claim is taken from the same batch.
                    let mut touched: Vec<String> = Vec::new();
                    for e in &batch.events {
                        if e.kv.key.starts_with(keys::CLAIMS_PREFIX) {
                            touched.extend(f.on_claim(&e.kind, &e.kv.key, &e.kv.value));
                        }
                    }
                    for e in &batch.events {
                        match keys::split(&e.kv.key).map(|(k, _)| k) {
                            Some("tasks") if f.on_task(&e.kind, &e.kv) => touched.push(e.kv.key.clone()),
                            Some("taskdefs") => touched.extend(f.on_taskdef(&e.kind, &e.kv)),
                            _ => {}
                        }
                    }
                    if touched.is_empty() {
                        continue;
                    }
                    if let Err(e) = f.fill(&*store, &touched).await {
                        tracing::warn!(error = %e, "agent: reading claimed tasks failed; listing again");
                        break;
                    }
                    let mut changed = false;
                    for k in touched {
                        match f.assignment(&k) {
                            Some(a) if current.get(&k).is_some_and(|old| **old == a) => {}
                            Some(a) => {
                                current.insert(k, Arc::new(a));
                                changed = true;
                            }
                            None => changed |= current.remove(&k).is_some(),
                        }
                    }
                    if changed {
                        tx.send_replace(Arc::new(current.clone()));
                    }
                }
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "agent: fell behind the store; listing again");
                    break;
                }
            }
        }
    }
}

impl ControlPlane for StoreControl {
    fn assignments(&self) -> watch::Receiver<Assignments> {
        self.rx.clone()
    }

    fn published(&self) -> Published {
        self.published.clone()
    }

    fn listed(&self) -> BoxFuture<'_, ()> {
        wait_listed(&self.listed)
    }

    fn submit_task_state<'a>(
        &'a self,
        key: &'a str,
        change: TaskStateChange,
    ) -> BoxFuture<'a, Result<TaskStateAck, ControlError>> {
        Box::pin(async move {
            loop {
                let kv = self
                    .store
                    .get(key)
                    .await
                    .map_err(|e| ControlError::Failed(e.to_string()))?
                    .ok_or(ControlError::Gone)?;
                let mut task: Task =
                    serde_json::from_slice(&kv.value).map_err(|e| ControlError::Failed(e.to_string()))?;
                let before = task.clone();
                change.apply(&mut task);
                if task == before {
                    return Ok(TaskStateAck { version: task.version, changed: false });
                }
                task.version = before.version + 1;
                let value = serde_json::to_vec(&task).map_err(|e| ControlError::Failed(e.to_string()))?;
                let txn = Txn::new().when(Compare::mod_revision(key, kv.mod_revision)).then(Op::put(key, value));
                let r = self.store.txn(txn).await.map_err(|e| ControlError::Failed(e.to_string()))?;
                if r.succeeded {
                    return Ok(TaskStateAck { version: task.version, changed: true });
                }
            }
        })
    }

    fn report_node(&self, status: NodeStatus) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            if let Some(r) = &self.reports {
                return r.report(status).await.map_err(|e| ControlError::Failed(e.to_string()));
            }
            let value = serde_json::to_vec(&status).map_err(|e| ControlError::Failed(e.to_string()))?;
            self.store
                .txn(Txn::new().then(Op::put(keys::node(&status.id), value)))
                .await
                .map_err(|e| ControlError::Failed(e.to_string()))?;
            Ok(())
        })
    }

    fn telemetry(&self) -> TelemetrySender {
        self.telemetry.clone()
    }

    fn claim_block<'a>(
        &'a self,
        subnet: ipnet::Ipv4Net,
        known: &'a [ipnet::Ipv4Net],
    ) -> BoxFuture<'a, Result<ipnet::Ipv4Net, BlockError>> {
        match &self.blocks {
            Some(b) => b.claim(&self.node, subnet, known),
            None => Box::pin(async move { Ok(subnet) }),
        }
    }

    fn open_log_stream<'a>(&'a self, dest: &'a LogDestination) -> BoxFuture<'a, Result<u64, LogIngestError>> {
        match &self.logs {
            Some(l) => l.open_stream(dest),
            None => no_log_store(),
        }
    }

    fn task_secrets<'a>(&'a self, task_key: &'a str) -> BoxFuture<'a, Result<TaskSecrets, String>> {
        Box::pin(async move {
            match self.secrets.get() {
                Some(r) => r.resolve(&self.node, task_key),
                None => Err(format!("{SECRETS_FAILURE}this control plane resolves no secrets")),
            }
        })
    }

    fn task_credentials<'a>(
        &'a self,
        task_key: &'a str,
    ) -> BoxFuture<'a, Result<estiba_core::node::TaskCredentials, String>> {
        Box::pin(async move {
            match self.secrets.get() {
                Some(r) => r.task_credentials(&self.node, task_key),
                None => Err("this control plane issues no task credentials".to_owned()),
            }
        })
    }

    fn ship_logs<'a>(
        &'a self,
        dest: &'a LogDestination,
        seq: u64,
        events: LogEvents,
    ) -> BoxFuture<'a, Result<u64, LogIngestError>> {
        match &self.logs {
            Some(l) => l.append(dest, seq, events),
            None => no_log_store(),
        }
    }
}

/// For the agent's unit tests: the [`ControlPlane`] methods a fake that only cares about
/// one part of the trait leaves idle (no assignments, listed at once, heartbeats taken,
/// telemetry dropped).
#[cfg(test)]
macro_rules! idle_control_plane {
    () => {
        fn assignments(&self) -> tokio::sync::watch::Receiver<$crate::control::Assignments> {
            tokio::sync::watch::channel($crate::control::Assignments::default()).1
        }
        fn listed(&self) -> $crate::control::BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn report_node(
            &self,
            _: estiba_core::node::NodeStatus,
        ) -> $crate::control::BoxFuture<'_, Result<(), $crate::control::ControlError>> {
            Box::pin(async { Ok(()) })
        }
        fn telemetry(&self) -> $crate::telemetry::TelemetrySender {
            $crate::telemetry::TelemetrySender::channel(1).0
        }
    };
}
#[cfg(test)]
pub(crate) use idle_control_plane;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::CountingSink;
    use estiba_core::Scope;
    use estiba_store::MemStore;
    use std::time::Duration;

    pub(crate) fn scope() -> Scope {
        Scope::new("123456789012", "us-east-1")
    }

    pub(crate) fn task(id: &str) -> Task {
        Task {
            task_arn: Some(format!("arn:aws:ecs:us-east-1:123456789012:task/c/{id}")),
            task_definition_arn: Some("arn:aws:ecs:us-east-1:123456789012:task-definition/web:1".into()),
            last_status: Some("PROVISIONING".into()),
            desired_status: Some("RUNNING".into()),
            version: 1,
            ..Default::default()
        }
    }

    fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    /// Writes the task definition, then each (task id, node) as a task with its claim.
    pub(crate) async fn seed(store: &dyn Store, tasks: &[(&str, &str)]) {
        let s = scope();
        let td = TaskDefinition { family: Some("web".into()), revision: 1, ..Default::default() };
        store.txn(Txn::new().then(Op::put(keys::taskdef(&s, "web", 1), json(&td)))).await.unwrap();
        for (id, node) in tasks {
            let txn = Txn::new().then(Op::put(keys::task(&s, "c", id), json(&task(id)))).then(Op::put(
                keys::claim(node, &s, "c", id),
                json(&Claim { node: node.to_string(), ..Default::default() }),
            ));
            assert!(store.txn(txn).await.unwrap().succeeded);
        }
    }

    async fn next(rx: &mut watch::Receiver<Assignments>) -> Assignments {
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
        rx.borrow_and_update().clone()
    }

    #[tokio::test]
    async fn assignments_come_from_this_nodes_claims_only() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let s = scope();
        seed(&*store, &[("t1", "n1"), ("t2", "n2")]).await;
        let cp = StoreControl::start(store.clone(), "n1".into(), Arc::new(CountingSink::default())).await.unwrap();
        cp.listed().await;
        let mut rx = cp.assignments();
        let first = rx.borrow_and_update().clone();
        assert_eq!(first.keys().collect::<Vec<_>>(), [&keys::task(&s, "c", "t1")]);
        assert_eq!(first.values().next().unwrap().taskdef.family.as_deref(), Some("web"));

        // A new task with its claim (one transaction, as RunTask writes them).
        seed(&*store, &[("t3", "n1")]).await;
        let now = next(&mut rx).await;
        assert_eq!(now.len(), 2);
        let t1 = keys::task(&s, "c", "t1");
        assert!(Arc::ptr_eq(&first[&t1], &now[&t1]), "an untouched assignment keeps its Arc");

        // A change to the task reaches the assignment; another node's task changes nothing.
        let mut t = task("t3");
        t.desired_status = Some("STOPPED".into());
        store.txn(Txn::new().then(Op::put(keys::task(&s, "c", "t3"), json(&t)))).await.unwrap();
        let mut t2 = task("t2");
        t2.desired_status = Some("STOPPED".into());
        store.txn(Txn::new().then(Op::put(keys::task(&s, "c", "t2"), json(&t2)))).await.unwrap();
        let after = next(&mut rx).await;
        assert_eq!(after[&keys::task(&s, "c", "t3")].task.desired_status.as_deref(), Some("STOPPED"));
        assert!(Arc::ptr_eq(&now[&t1], &after[&t1]));

        // A claim written after its task (a transaction of its own) is followed too.
        store.txn(Txn::new().then(Op::put(keys::task(&s, "c", "t4"), json(&task("t4"))))).await.unwrap();
        store
            .txn(Txn::new().then(Op::put(
                keys::claim("n1", &s, "c", "t4"),
                json(&Claim { node: "n1".into(), public_ip: true, ..Default::default() }),
            )))
            .await
            .unwrap();
        let with4 = next(&mut rx).await;
        assert!(with4[&keys::task(&s, "c", "t4")].claim.public_ip);

        // Deleting the claim ends the assignment.
        store.txn(Txn::new().then(Op::delete(keys::claim("n1", &s, "c", "t3")))).await.unwrap();
        let fewer = next(&mut rx).await;
        assert!(!fewer.contains_key(&keys::task(&s, "c", "t3")));
        assert_eq!(fewer.len(), 2);
    }

    #[tokio::test]
    async fn state_changes_are_applied_with_a_new_version_and_no_write_when_nothing_changes() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let s = scope();
        seed(&*store, &[("t1", "n1")]).await;
        let cp = StoreControl::start(store.clone(), "n1".into(), Arc::new(CountingSink::default())).await.unwrap();
        cp.listed().await;
        let key = keys::task(&s, "c", "t1");
        let running = TaskStateChange {
            status: Some(estiba_core::task::Status::Running),
            started_at: Some(2.0),
            ..Default::default()
        };
        let ack = cp.submit_task_state(&key, running.clone()).await.unwrap();
        assert_eq!(ack, TaskStateAck { version: 2, changed: true });
        let t: Task = serde_json::from_slice(&store.get(&key).await.unwrap().unwrap().value).unwrap();
        assert_eq!((t.last_status.as_deref(), t.started_at, t.version), (Some("RUNNING"), Some(2.0), 2));

        let rev = store.revision();
        let ack = cp.submit_task_state(&key, running).await.unwrap();
        assert_eq!(ack, TaskStateAck { version: 2, changed: false });
        assert_eq!(store.revision(), rev, "a change that changes nothing is not written");

        let gone = cp.submit_task_state(&keys::task(&s, "c", "nope"), TaskStateChange::default()).await;
        assert!(matches!(gone, Err(ControlError::Gone)));
    }

    /// A store whose listings fail while `down` is set.
    struct Flaky {
        inner: MemStore,
        down: std::sync::atomic::AtomicBool,
    }

    impl Store for Flaky {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> estiba_store::BoxFuture<'a, estiba_store::Result<Option<estiba_store::KeyValue>>> {
            self.inner.get(key)
        }
        fn range<'a>(
            &'a self,
            prefix: &'a str,
        ) -> estiba_store::BoxFuture<'a, estiba_store::Result<estiba_store::RangeResponse>> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Box::pin(async { Err(StoreError::Backend("down".into())) });
            }
            self.inner.range(prefix)
        }
        fn txn(&self, txn: Txn) -> estiba_store::BoxFuture<'_, estiba_store::Result<estiba_store::TxnResponse>> {
            self.inner.txn(txn)
        }
        fn watch(&self, prefix: &str, after: Revision) -> estiba_store::Result<estiba_store::Watch> {
            self.inner.watch(prefix, after)
        }
        fn revision(&self) -> Revision {
            self.inner.revision()
        }
    }

    /// Issue 14.3: an agent that could not list the store started with an empty set after 10 s
    /// and its sweep tore down every task on the node.
    #[tokio::test]
    async fn nothing_is_listed_until_the_store_answers() {
        let flaky = Arc::new(Flaky { inner: MemStore::new(), down: true.into() });
        seed(&flaky.inner, &[("t1", "n1")]).await;
        let cp = StoreControl::start(flaky.clone(), "n1".into(), Arc::new(CountingSink::default())).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(1200), cp.listed()).await.is_err(), "not listed while down");
        assert!(cp.assignments().borrow().is_empty());
        flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), cp.listed()).await.expect("listed once the store answers");
        assert_eq!(cp.assignments().borrow().len(), 1);
    }
}
