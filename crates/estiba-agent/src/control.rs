//! How the agent talks to the control plane: it learns which tasks its node runs (with
//! their task definitions), reports their state, and reports the node's own status. The
//! task runner only sees the [`ControlPlane`] trait, so an agent on another machine needs a
//! different implementation (over the API), not a different runner.
//!
//! [`StoreControl`] is the in-process implementation: it follows the store directly.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use estiba_api::ecs::{Task, TaskDefinition};
use estiba_core::node::{Claim, NodeStatus};
use estiba_core::{arn, keys};
use estiba_store::{Compare, EventKind, Op, Store, StoreError, Txn};
use tokio::sync::watch;

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
    /// The tasks assigned to this node, kept current.
    fn assignments(&self) -> watch::Receiver<Assignments>;

    /// Applies `change` to the task's current state and writes it, retrying on conflicts
    /// with other writers (the server setting `desiredStatus`). Returns the task written.
    fn update_task<'a>(
        &'a self,
        key: &'a str,
        change: Box<dyn Fn(&mut Task) + Send + Sync + 'a>,
    ) -> BoxFuture<'a, Result<Task, ControlError>>;

    fn report_node(&self, status: NodeStatus) -> BoxFuture<'_, Result<(), ControlError>>;
}

/// The agent inside the server process: reads and writes the store itself.
pub struct StoreControl {
    store: Arc<dyn Store>,
    rx: watch::Receiver<Assignments>,
}

fn taskdef_key(task: &Task) -> Option<String> {
    let a = task.task_definition_arn.as_deref()?;
    let parsed = arn::Arn::parse(a)?;
    let r = arn::TaskDefRef::parse(a)?;
    let scope = estiba_core::Scope::new(parsed.account, parsed.region);
    Some(keys::taskdef(&scope, &r.family, r.revision?))
}

impl StoreControl {
    /// Starts following the store and returns once the first set of assignments is known
    /// (or after 10 s of failing to list the store): an agent that saw an empty set before
    /// the first listing would take every task on disk for one the control plane forgot.
    pub async fn start(store: Arc<dyn Store>, node: String) -> Result<Arc<Self>, StoreError> {
        let (tx, rx) = watch::channel(Arc::new(HashMap::new()));
        let me = Arc::new(StoreControl { store: store.clone(), rx });
        let mut first = me.rx.clone();
        tokio::spawn(follow(store, node, tx));
        if tokio::time::timeout(std::time::Duration::from_secs(10), first.changed()).await.is_err() {
            tracing::warn!("agent: the store has not been listed after 10 s; starting anyway");
        }
        Ok(me)
    }
}

/// Keeps the set of assignments current from the store: claims for `node`, their tasks and
/// task definitions.
async fn follow(store: Arc<dyn Store>, node: String, tx: watch::Sender<Assignments>) {
    loop {
        let listing = match store.range("ecs/").await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "agent: listing the store failed");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut claims: HashMap<String, Claim> = HashMap::new(); // task key → claim
        let mut tasks: HashMap<String, Task> = HashMap::new();
        let mut taskdefs: HashMap<String, Arc<TaskDefinition>> = HashMap::new();
        let apply = |kind: &EventKind,
                     key: &str,
                     value: &[u8],
                     claims: &mut HashMap<String, Claim>,
                     tasks: &mut HashMap<String, Task>,
                     taskdefs: &mut HashMap<String, Arc<TaskDefinition>>| {
            match keys::split(key).map(|(k, _)| k) {
                Some("claims") => {
                    let tkey = keys::task_of_claim(key);
                    match (kind, serde_json::from_slice::<Claim>(value)) {
                        (EventKind::Put, Ok(c)) => {
                            claims.insert(tkey, c);
                        }
                        _ => {
                            claims.remove(&tkey);
                        }
                    }
                }
                Some("tasks") => match (kind, serde_json::from_slice::<Task>(value)) {
                    (EventKind::Put, Ok(t)) => {
                        tasks.insert(key.to_owned(), t);
                    }
                    _ => {
                        tasks.remove(key);
                    }
                },
                Some("taskdefs") => match (kind, serde_json::from_slice::<TaskDefinition>(value)) {
                    (EventKind::Put, Ok(t)) => {
                        taskdefs.insert(key.to_owned(), Arc::new(t));
                    }
                    _ => {
                        taskdefs.remove(key);
                    }
                },
                _ => {}
            }
        };
        for kv in &listing.kvs {
            apply(&EventKind::Put, &kv.key, &kv.value, &mut claims, &mut tasks, &mut taskdefs);
        }
        // The assignment of one task key, if this node has one.
        let assignment = |tkey: &str,
                          claims: &HashMap<String, Claim>,
                          tasks: &HashMap<String, Task>,
                          taskdefs: &HashMap<String, Arc<TaskDefinition>>| {
            let claim = claims.get(tkey).filter(|c| c.node == node)?;
            let task = tasks.get(tkey)?;
            let td = taskdef_key(task).and_then(|k| taskdefs.get(&k))?;
            Some(Assignment { key: tkey.to_owned(), task: task.clone(), taskdef: td.clone(), claim: claim.clone() })
        };
        let mut current: HashMap<String, Arc<Assignment>> = claims
            .keys()
            .filter_map(|k| Some((k.clone(), Arc::new(assignment(k, &claims, &tasks, &taskdefs)?))))
            .collect();
        tx.send_replace(Arc::new(current.clone()));
        let mut watch = match store.watch("ecs/", listing.revision) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "agent: watch failed; listing again");
                continue;
            }
        };
        loop {
            match watch.next().await {
                Ok(batch) => {
                    // Only the task keys a batch touches are looked at again (all of them when
                    // a task definition changes, which is rare): with thousands of tasks kept
                    // after they stop, redoing every assignment on every event made each
                    // task's start wait on the others.
                    let mut touched: Vec<String> = Vec::new();
                    let mut all = false;
                    for e in &batch.events {
                        let kind = keys::split(&e.kv.key).map(|(k, _)| k);
                        match kind {
                            Some("claims") => touched.push(keys::task_of_claim(&e.kv.key)),
                            Some("tasks") => touched.push(e.kv.key.clone()),
                            Some("taskdefs") => all = true,
                            _ => continue,
                        }
                        apply(&e.kind, &e.kv.key, &e.kv.value, &mut claims, &mut tasks, &mut taskdefs);
                    }
                    if all {
                        touched = claims.keys().chain(current.keys()).cloned().collect();
                    }
                    let mut changed = false;
                    for k in touched {
                        match assignment(&k, &claims, &tasks, &taskdefs) {
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

    fn update_task<'a>(
        &'a self,
        key: &'a str,
        change: Box<dyn Fn(&mut Task) + Send + Sync + 'a>,
    ) -> BoxFuture<'a, Result<Task, ControlError>> {
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
                change(&mut task);
                if task == before {
                    return Ok(task);
                }
                task.version = before.version + 1;
                let value = serde_json::to_vec(&task).map_err(|e| ControlError::Failed(e.to_string()))?;
                let txn = Txn::new().when(Compare::mod_revision(key, kv.mod_revision)).then(Op::put(key, value));
                let r = self.store.txn(txn).await.map_err(|e| ControlError::Failed(e.to_string()))?;
                if r.succeeded {
                    return Ok(task);
                }
            }
        })
    }

    fn report_node(&self, status: NodeStatus) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            let value = serde_json::to_vec(&status).map_err(|e| ControlError::Failed(e.to_string()))?;
            self.store
                .txn(Txn::new().then(Op::put(keys::node(&status.id), value)))
                .await
                .map_err(|e| ControlError::Failed(e.to_string()))?;
            Ok(())
        })
    }
}
