//! The node's load balancers: the table the control plane publishes ([`crate::control::Published`])
//! applied to an [`estiba_lb::Lb`], after the load balancers' VPC addresses are put on the
//! node's VPC bridge (tasks reach them there, the host through the bridge's route); target
//! health goes back to the control plane as telemetry: every transition as it happens, and
//! every target's state each [`SNAPSHOT_EVERY`], so a server that missed one or restarted
//! catches up; the load balancers' counters go the same way each [`METRICS_EVERY`].

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use estiba_core::telemetry::{LbMetrics, TargetHealthChange, Telemetry};
use estiba_lb::TargetHealthReport;
use tokio::sync::{broadcast, watch};

use crate::Shared;

/// How often every target's health is sent, besides transitions.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(15);

/// How often the load balancers' counters are sent.
pub const METRICS_EVERY: Duration = Duration::from_secs(10);

fn change(node: &str, r: &TargetHealthReport) -> TargetHealthChange {
    TargetHealthChange {
        node: node.to_owned(),
        target_group_arn: r.group_arn.clone(),
        target: r.target.to_string(),
        state: r.state.as_str().to_owned(),
        reason: r.reason.clone(),
        description: r.description.clone(),
    }
}

/// Serves the published load balancers until `shutdown` flips.
pub async fn run(
    shared: Arc<Shared>,
    mut rx: watch::Receiver<Arc<estiba_lb::Table>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let lb = estiba_lb::Lb::new(estiba_lb::Settings::default());
    let mut health = lb.subscribe_health();
    let node = shared.cfg.node_id.clone();
    let vpc = shared.cfg.net.vpc();
    let mut added: HashSet<Ipv4Addr> = HashSet::new();
    let mut snapshot = tokio::time::interval(SNAPSHOT_EVERY);
    snapshot.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // As often as cgroups are sampled when that is more often (short `--metric-period`s).
    let mut metrics = tokio::time::interval(METRICS_EVERY.min(shared.cfg.metrics_interval).max(Duration::from_secs(1)));
    metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut table_changed = true;
    loop {
        if table_changed {
            table_changed = false;
            let table = rx.borrow_and_update().clone();
            // The load balancers' VPC addresses, on the VPC bridge.
            let mut new: Vec<Ipv4Addr> = table
                .load_balancers
                .iter()
                .flat_map(|l| &l.listeners)
                .flat_map(|l| &l.binds)
                .filter_map(|b| match b.ip() {
                    IpAddr::V4(ip) if vpc.cidr.contains(&ip) && !added.contains(&ip) => Some(ip),
                    _ => None,
                })
                .collect();
            new.sort();
            new.dedup();
            added.extend(crate::network::add_vpc_addresses(&shared, new, "load balancer").await);
            // Only binds whose address is there (the others wait for the next table).
            let mut usable = (*table).clone();
            for l in usable.load_balancers.iter_mut().flat_map(|l| l.listeners.iter_mut()) {
                l.binds.retain(|b| match b.ip() {
                    IpAddr::V4(ip) if vpc.cidr.contains(&ip) => added.contains(&ip),
                    _ => true,
                });
            }
            lb.apply(Arc::new(usable));
        }
        tokio::select! {
            r = rx.changed() => match r {
                Ok(()) => table_changed = true,
                Err(_) => return,
            },
            r = health.recv() => match r {
                Ok(first) => {
                    let mut batch = vec![change(&node, &first)];
                    while let Ok(more) = health.try_recv() {
                        batch.push(change(&node, &more));
                    }
                    shared.cp.telemetry().send(Telemetry::TargetHealth(batch));
                }
                // Missed transitions: the snapshot says where everything stands.
                Err(broadcast::error::RecvError::Lagged(_)) => send_snapshot(&shared, &lb, &node),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = snapshot.tick() => send_snapshot(&shared, &lb, &node),
            _ = metrics.tick() => send_metrics(&shared, &lb, &node),
            _ = shutdown.changed() => return,
        }
    }
}

fn send_snapshot(shared: &Shared, lb: &estiba_lb::Lb, node: &str) {
    let all: Vec<TargetHealthChange> = lb.health().iter().map(|r| change(node, r)).collect();
    if !all.is_empty() {
        shared.cp.telemetry().send(Telemetry::TargetHealth(all));
    }
}

/// The counters of every load balancer and target group, by CloudWatch metric name.
fn send_metrics(shared: &Shared, lb: &estiba_lb::Lb, node: &str) {
    let m = lb.metrics();
    if m.load_balancers.is_empty() && m.target_groups.is_empty() {
        return;
    }
    let named =
        |c: &estiba_lb::Counts| serde_json::from_value(serde_json::to_value(c).unwrap_or_default()).unwrap_or_default();
    let report = LbMetrics {
        node: node.to_owned(),
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        load_balancers: m.load_balancers.iter().map(|(k, c)| (k.clone(), named(c))).collect(),
        target_groups: m.target_groups.iter().map(|(k, c)| (k.clone(), named(c))).collect(),
    };
    shared.cp.telemetry().send(Telemetry::LbMetrics(vec![report]));
}
