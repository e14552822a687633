//! Controllers: level-triggered loops that read the view, ask estiba-core what to do, and
//! write the result with compare-and-swap. A crash at any point is harmless because the next
//! pass recomputes. They run under one [`runtime`]: each in its own task, woken by changes of
//! the view and by its own timer, with its pass times and errors counted.
//!
//! - [`services`]: the service scheduler keeps each service's tasks as its deployments require
//!   ([`estiba_core::deploy`]) and records the rollout ([`estiba_core::rollout`]): events and
//!   service deployment records. On every change, and at least once a second (a task counts
//!   as healthy some time after it started, with no change to wake anyone).
//! - [`daemons`]: the daemon scheduler keeps one task of each daemon's revision on every
//!   container instance of its capacity providers and rolls new revisions out within
//!   drainPercent and bake time ([`estiba_core::daemon`]), and finishes daemon task
//!   definition deletions; on every change and once a second.
//! - [`join`]: registers this machine's node as a container instance of the clusters it
//!   joins, then ends.
//! - [`housekeeping`]: removes STOPPED tasks after their retention and INACTIVE clusters and
//!   services after theirs, deletes task definitions in DELETE_IN_PROGRESS once nothing uses
//!   them, finishes capacity provider deletions, and stops tasks left in deleted clusters;
//!   every `housekeeping_every`.
//! - [`discovery`]: registers ECS services' running tasks in Cloud Map, keeps their health in
//!   step, and deregisters what ECS registered for tasks that are gone.
//! - [`dns`]: publishes the VPC resolvers' zone ([`crate::dns`]) on every change.
//! - [`registry`]: the registry's lifecycle policies and garbage collection
//!   (`crate::services::ecr::housekeeping`); every `registry_housekeeping_every`.
//! - [`servicediscovery`]: forgets Cloud Map operations a day old; every
//!   `cloudmap_housekeeping_every`.
//! - [`elbv2`]: removes ELBv2 targets whose draining is over; every `elbv2_draining_every`.
//! - [`alarms`]: evaluates CloudWatch metric alarms every AWS minute (every period for
//!   high-resolution alarms), writes state changes and history, invokes their actions.
//! - [`logs`]: enforces CloudWatch Logs retention and removes the log store's data of groups
//!   no document names; every `logs_housekeeping_every`.
//! - [`scheduled_scaling`]: runs Application Auto Scaling's scheduled actions when due (wall
//!   clock): sets the target's bounds and moves the service's desired count into them.
//!
//! Adding a controller:
//! 1. a module here with a type implementing [`Controller`]: a unique `name`, `pass` (read the
//!    whole current state from `server.view`, compute in estiba-core, write with
//!    `server.transact` or `server.commit`) returning the next [`Wake`]: `Wake::Change` to
//!    wait for a change of the view, `Wake::change_or_after(d)` when time alone can make work
//!    (a retry, an age), `Wake::after(d)` for periodic work that changes must not hasten,
//!    `Wake::Done` when there is nothing left to do; override `first` (default: at once) and
//!    `after_error` (default: a change or one second) if needed;
//! 2. its settings in [`Settings`] if it has any;
//! 3. one `rt.add(...)` line in [`run`];
//! 4. a line in the list above and in ARCHITECTURE.md.

pub mod alarms;
pub mod daemons;
pub mod discovery;
pub mod dns;
pub mod elbv2;
pub mod housekeeping;
pub mod join;
pub mod logs;
pub mod nodes;
pub mod registry;
pub mod runtime;
pub mod scheduled_scaling;
pub mod servicediscovery;
pub mod services;
pub mod targets;

use std::sync::Arc;
use std::time::Duration;

use estiba_core::deploy;

pub use runtime::{Controller, ControllerStats, Metrics, Runtime, Wake};

use crate::view::State;
use crate::{Server, WriteError};

/// Whether a node has claimed the task: from then on the node moves it through its
/// lifecycle; unclaimed tasks are stopped by the server directly.
pub fn is_claimed(st: &State, task_key: &str) -> bool {
    st.claim(task_key).is_some()
}

/// Commits as many of `groups` (each whole) as fit one transaction of the server's background
/// budget; a group too big for any transaction is logged and skipped. Returns whether some
/// were left over (the caller comes back soon).
pub async fn commit_bounded(server: &Server, groups: Vec<estiba_store::Txn>, what: &str) -> Result<bool, WriteError> {
    let mut txn = estiba_store::BoundedTxn::new(server.txn_budget());
    for g in groups {
        if !txn.fits_alone(&g) {
            tracing::warn!(what, ops = g.ops.len(), "a change too big for one transaction, skipped");
            continue;
        }
        txn.add(g);
    }
    let left_over = txn.left_over();
    let txn = txn.into_txn();
    if !txn.ops.is_empty() {
        let n = txn.ops.len();
        // A task that changed meanwhile: the next pass (woken by its change) retries.
        let done = server.commit(txn).await?;
        tracing::debug!(what, ops = n, done, left_over, "committed");
    }
    Ok(left_over)
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub deploy: deploy::Settings,
    pub housekeeping_every: Duration,
    pub stopped_task_retention: Duration,
    /// How long INACTIVE clusters and services stay visible.
    pub inactive_retention: Duration,
    /// How often lifecycle policies are applied and unused registry blobs collected.
    pub registry_housekeeping_every: Duration,
    /// How often old Cloud Map operations are forgotten.
    pub cloudmap_housekeeping_every: Duration,
    /// How often drained ELBv2 targets are removed.
    pub elbv2_draining_every: Duration,
    /// How often CloudWatch Logs retention is enforced.
    pub logs_housekeeping_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            deploy: deploy::Settings::default(),
            housekeeping_every: Duration::from_secs(10),
            stopped_task_retention: Duration::from_secs(3600),
            inactive_retention: Duration::from_secs(3600),
            registry_housekeeping_every: Duration::from_secs(60),
            cloudmap_housekeeping_every: Duration::from_secs(600),
            elbv2_draining_every: Duration::from_secs(5),
            logs_housekeeping_every: Duration::from_secs(60),
        }
    }
}

/// Runs the controllers until `shutdown` flips to true.
/// Runs the controllers that only read the view and publish what nodes serve (the zone, the
/// proxy and load balancer tables, the address blocks): every server runs them, leader or
/// not, so agents connected to any server get the same tables.
pub async fn run_everywhere(server: Arc<Server>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut rt = Runtime::new(server, shutdown);
    rt.add(dns::Zones);
    rt.wait().await;
}

pub async fn run(server: Arc<Server>, settings: Settings, shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut rt = Runtime::new(server, shutdown);
    rt.add(join::Join::default());
    rt.add(nodes::LostNodes);
    rt.add(services::Scheduler { settings: settings.deploy });
    rt.add(daemons::Daemons);
    rt.add(housekeeping::Housekeeping::new(
        settings.housekeeping_every,
        settings.stopped_task_retention,
        settings.inactive_retention,
    ));
    rt.add(discovery::Registrar);
    rt.add(targets::Registrar);
    rt.add(registry::RegistryHousekeeping { every: settings.registry_housekeeping_every });
    rt.add(servicediscovery::CloudMapHousekeeping { every: settings.cloudmap_housekeeping_every });
    rt.add(elbv2::Draining { every: settings.elbv2_draining_every });
    rt.add(logs::LogsHousekeeping { every: settings.logs_housekeeping_every });
    rt.add(alarms::AlarmEvaluator::default());
    rt.add(scheduled_scaling::ScheduledScaling);
    rt.wait().await;
}
