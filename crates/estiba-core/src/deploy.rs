//! The service scheduler's planner: given a service and its tasks, what to start, what to
//! stop, and how the deployments, their rollout states and the service's events change.
//!
//! It is level-triggered: every decision comes from the current state, so calling it again
//! after a crash, or twice, is harmless. Rules (ECS's rolling update):
//!
//! - `minimumHealthyPercent` of `desiredCount`, rounded up, is the floor of healthy tasks
//!   kept while old tasks stop; `maximumPercent`, rounded down, is the ceiling of tasks that
//!   exist (not yet STOPPED) while new tasks start.
//! - A task is healthy when it is RUNNING and not asked to stop and, if a container has a
//!   health check, HEALTHY; without a health check it counts once it has been RUNNING for
//!   `unchecked_healthy_after` (40 s). That rule decides when a *new* task counts; a task of
//!   an older deployment counts toward the floor while it is RUNNING and not known to be
//!   unhealthy, so a rollout that begins right after a service started never stops it below
//!   the floor. A task of a Service Connect service that publishes ports must also be one of
//!   its endpoints (`service_connect::is_endpoint`: with an address, not unhealthy).
//! - Tasks of the PRIMARY deployment that stop before reaching RUNNING, or fail their health
//!   checks, are failures: they are replaced with exponential back-off after three in a row,
//!   and trip the circuit breaker (threshold: half of desiredCount, 3 to 200).
//! - When the PRIMARY deployment has its desired count of healthy tasks and nothing else
//!   runs, it is COMPLETED, older deployments go away, and the service reaches a steady state.

use estiba_api::ecs::{
    Deployment, DeploymentRolloutState, HealthStatus, SchedulingStrategy, Service, Task, TaskStopCode,
};

use crate::ids::Now;
use crate::service::{self, PRIMARY};
use crate::task::{self, Status};

/// The stoppedReason of a task the scheduler replaces after failed health checks.
pub const HEALTH_CHECK_FAILED: &str = "Task failed container health checks";

/// The start of the stoppedReason of a task replaced after failing its target group's health
/// checks (ECS: `Task failed ELB health checks in (target-group <arn>)`).
pub const ELB_HEALTH_CHECK_FAILED: &str = "Task failed ELB health checks in";

/// A task's standing in its service's target groups (ECS's load balancer integration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LbHealth {
    /// The service has no target groups.
    NotBehind,
    /// Not yet healthy in every group: not registered yet, or `initial`.
    Pending,
    /// Healthy (or health checks disabled) in every group.
    Healthy,
    /// Unhealthy in a group: its ARN, the container port registered, and the reason as
    /// DescribeTargetHealth describes it.
    Unhealthy { target_group: String, port: i32, reason: String },
}

/// What the planner asks about each task beyond the task document.
pub struct Probes<'a> {
    /// Whether the task has a container health check.
    pub checked: &'a dyn Fn(&Task) -> bool,
    /// Whether it has scale-in protection (UpdateTaskProtection).
    pub protected: &'a dyn Fn(&Task) -> bool,
    /// Its health in the service's target groups.
    pub lb: &'a dyn Fn(&Task) -> LbHealth,
    /// Whether it runs on a DRAINING container instance: then it is replaced like a task
    /// of an older deployment (PENDING ones stop at once, RUNNING ones within
    /// minimumHealthyPercent and maximumPercent), as ECS drains instances.
    pub draining: &'a dyn Fn(&Task) -> bool,
}

impl Probes<'_> {
    /// No health check, no protection, no load balancer.
    pub const NONE: Probes<'static> =
        Probes { checked: &|_| false, protected: &|_| false, lb: &|_| LbHealth::NotBehind, draining: &|_| false };
}

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Seconds a RUNNING task without health checks waits before it counts as healthy.
    pub unchecked_healthy_after: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { unchecked_healthy_after: 40.0 }
    }
}

/// A task to stop, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Stop {
    pub task_arn: String,
    pub code: TaskStopCode,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// New tasks to start for the PRIMARY deployment.
    pub start: usize,
    /// DAEMON: the container instances that need a task.
    pub start_on: Vec<String>,
    pub stop: Vec<Stop>,
    /// The service document after this pass (deployments, rollout states, events, status).
    pub service: Service,
    /// The PRIMARY deployment failed; roll back to this COMPLETED deployment.
    pub rollback_to: Option<Deployment>,
    /// The PRIMARY deployment completed on this pass.
    pub completed: Option<String>,
    /// The PRIMARY deployment failed on this pass (circuit breaker).
    pub failed: Option<String>,
    /// When a start was held back by back-off, when to look again.
    pub retry_at: Option<Now>,
    /// A service that shifts traffic between deployments: its traffic document after this
    /// pass (`crate::traffic`).
    pub traffic: Option<crate::traffic::Traffic>,
}

/// Whether a task counts as healthy for the deployment arithmetic: RUNNING, HEALTHY when it
/// has a container health check, healthy in every target group when its service has any
/// (then that replaces the wait of tasks without a health check).
pub fn is_healthy(t: &Task, checked: bool, lb: &LbHealth, now: Now, s: &Settings) -> bool {
    if task::last_status(t) != Status::Running || task::desired_stopped(t) {
        return false;
    }
    if checked && t.health_status != Some(HealthStatus::Healthy) {
        return false;
    }
    match lb {
        LbHealth::Healthy => true,
        LbHealth::Pending | LbHealth::Unhealthy { .. } => false,
        LbHealth::NotBehind => checked || t.started_at.is_some_and(|at| now - at >= s.unchecked_healthy_after),
    }
}

/// A STOPPED task that counts as a failure of its deployment.
pub fn is_failure(t: &Task) -> bool {
    if task::last_status(t) != Status::Stopped {
        return false;
    }
    match t.stop_code {
        Some(TaskStopCode::UserInitiated) | Some(TaskStopCode::ServiceSchedulerInitiated) => failed_checks(t),
        Some(TaskStopCode::TaskFailedToStart) => true,
        _ => t.started_at.is_none() || failed_checks(t),
    }
}

/// Stopped for failing container or target group health checks.
fn failed_checks(t: &Task) -> bool {
    t.stopped_reason.as_deref().is_some_and(|r| r == HEALTH_CHECK_FAILED || r.starts_with(ELB_HEALTH_CHECK_FAILED))
}

/// Back-off before the next start after `k` failures in a row: none for the first two, then
/// 10 s doubling to at most 15 minutes.
pub fn backoff(k: usize) -> f64 {
    if k < 3 {
        0.0
    } else {
        (10.0 * 2f64.powi((k - 3).min(10) as i32)).min(900.0)
    }
}

fn deployment_of(t: &Task) -> &str {
    t.started_by.as_deref().unwrap_or("")
}

fn min_healthy(desired: i32, pct: i32) -> i32 {
    ((desired as i64 * pct as i64 + 99) / 100) as i32
}

fn max_running(desired: i32, pct: i32) -> i32 {
    ((desired as i64 * pct as i64) / 100) as i32
}

/// Plans one pass for a REPLICA service. `tasks` are the service's tasks (its group),
/// STOPPED ones included; `probes` say which have a container health check, which have
/// scale-in protection (the scheduler then stops it neither to scale in nor to replace it
/// with a newer deployment's) and how each fares in the service's target groups.
pub fn plan(svc: &Service, tasks: &[&Task], probes: &Probes, now: Now, settings: &Settings) -> Plan {
    let Probes { checked, protected, lb, draining } = *probes;
    let mut out = Plan { service: svc.clone(), ..Default::default() };
    let name = service::name(svc).to_owned();
    let status = service::status(svc).to_owned();

    let live: Vec<&Task> = tasks.iter().copied().filter(|t| task::last_status(t) != Status::Stopped).collect();
    let wanted: Vec<&Task> = live.iter().copied().filter(|t| !task::desired_stopped(t)).collect();

    if status == service::INACTIVE {
        return out;
    }
    if status == service::DRAINING {
        for t in &wanted {
            out.stop.push(Stop {
                task_arn: t.task_arn.clone().unwrap_or_default(),
                code: TaskStopCode::ServiceSchedulerInitiated,
                reason: "Service is being deleted".into(),
            });
        }
        if live.is_empty() {
            out.service.status = Some(service::INACTIVE.into());
            out.service.desired_count = 0;
            for d in out.service.deployments.iter_mut().flatten() {
                d.desired_count = 0;
            }
        }
        return out;
    }

    let Some(primary) = service::primary(svc).cloned() else {
        return out;
    };
    let primary_id = primary.id.clone().unwrap_or_default();
    let desired = svc.desired_count.max(0);
    let conf = svc.deployment_configuration.clone().unwrap_or_default();
    let min_pct = conf.minimum_healthy_percent.unwrap_or(100);
    let max_pct = conf.maximum_percent.unwrap_or(200);
    let floor = min_healthy(desired, min_pct);
    let ceiling = max_running(desired, max_pct).max(desired.min(1));
    // A new task of a Service Connect service counts once it is an endpoint too (in the
    // table every node's proxy is given).
    let connect = crate::service_connect::serves(primary.service_connect_configuration.as_ref());
    let healthy = |t: &Task| {
        is_healthy(t, checked(t), &lb(t), now, settings)
            && (!connect || crate::service_connect::is_endpoint(t, checked(t)))
    };
    let grace = svc.health_check_grace_period_seconds.unwrap_or(0) as f64;

    // Failed health checks (the containers' or a target group's): replace those tasks, after
    // the grace period.
    let mut stopping: Vec<&Task> = Vec::new();
    for t in &wanted {
        let past_grace = task::last_status(t) == Status::Running && t.started_at.is_some_and(|at| now - at >= grace);
        if !past_grace {
            continue;
        }
        let reason = if t.health_status == Some(HealthStatus::Unhealthy) {
            HEALTH_CHECK_FAILED.to_owned()
        } else if let LbHealth::Unhealthy { target_group, port, reason } = lb(t) {
            let id = task::task_id(t);
            service::push_event(
                &mut out.service,
                estiba_api::ecs::ServiceEvent {
                    id: None,
                    created_at: Some(now),
                    message: Some(format!(
                        "(service {name}) (task {id}) (port {port}) is unhealthy in (target-group {target_group}) due to (reason {reason})."
                    )),
                },
            );
            format!("{ELB_HEALTH_CHECK_FAILED} (target-group {target_group})")
        } else {
            continue;
        };
        stopping.push(t);
        out.stop.push(Stop {
            task_arn: t.task_arn.clone().unwrap_or_default(),
            code: TaskStopCode::ServiceSchedulerInitiated,
            reason,
        });
    }
    let is_stopping = |t: &Task| stopping.iter().any(|s| s.task_arn == t.task_arn);
    let wanted: Vec<&Task> = wanted.into_iter().filter(|t| !is_stopping(t)).collect();

    // Tasks on DRAINING instances go as an older deployment's do, and are replaced.
    let current = |t: &Task| deployment_of(t) == primary_id && !draining(t);
    let mine: Vec<&Task> = wanted.iter().copied().filter(|t| current(t)).collect();
    let old: Vec<&Task> = wanted.iter().copied().filter(|t| !current(t)).collect();
    // What the floor protects: new tasks once healthy, older ones while they run and are not
    // known to be unhealthy.
    let counts = |t: &Task| {
        if current(t) {
            healthy(t)
        } else {
            task::last_status(t) == Status::Running
                && t.health_status != Some(HealthStatus::Unhealthy)
                && !matches!(lb(t), LbHealth::Unhealthy { .. })
        }
    };
    let healthy_count = wanted.iter().filter(|t| counts(t)).count() as i32;
    let existing = live.len() as i32;

    // Failures of the PRIMARY deployment.
    let failures: Vec<&Task> =
        tasks.iter().copied().filter(|t| deployment_of(t) == primary_id && (is_failure(t) || is_stopping(t))).collect();
    let failed_total = (failures.len() as i32).max(primary.failed_tasks);
    let last_success = tasks
        .iter()
        .filter(|t| deployment_of(t) == primary_id && t.started_at.is_some() && !is_failure(t))
        .filter_map(|t| t.started_at)
        .fold(f64::MIN, f64::max);
    let recent: Vec<&Task> = failures.iter().copied().filter(|t| t.stopped_at.unwrap_or(now) > last_success).collect();
    let last_failure = recent.iter().filter_map(|t| t.stopped_at).fold(f64::MIN, f64::max);

    // Circuit breaker.
    let breaker = conf.deployment_circuit_breaker.clone().unwrap_or_default();
    let in_progress = primary.rollout_state == Some(DeploymentRolloutState::InProgress);
    if breaker.enable && in_progress && failed_total >= service::failure_threshold(desired) {
        out.failed = Some(primary_id.clone());
        if let Some(p) = service::primary_mut(&mut out.service) {
            p.rollout_state = Some(DeploymentRolloutState::Failed);
            p.rollout_state_reason = Some("ECS deployment circuit breaker: tasks failed to start.".into());
            p.failed_tasks = failed_total;
            p.updated_at = Some(now);
        }
        if breaker.rollback {
            out.rollback_to = service::rollback_target(svc).cloned();
        }
        return out;
    }

    if let Some(p) = service::primary_mut(&mut out.service) {
        if p.failed_tasks != failed_total {
            p.failed_tasks = failed_total;
            p.updated_at = Some(now);
        }
    }

    // Scale in: surplus PRIMARY tasks go, those not yet running first.
    let mut surplus = mine.len() as i32 - desired;
    if surplus > 0 {
        let mut order = mine.clone();
        order.sort_by_key(|t| {
            (
                healthy(t),
                task::last_status(t) == Status::Running,
                std::cmp::Reverse(t.created_at.map(|c| (c * 1000.0) as i64)),
            )
        });
        for t in order.into_iter().filter(|t| !protected(t)) {
            if surplus == 0 {
                break;
            }
            out.stop.push(Stop {
                task_arn: t.task_arn.clone().unwrap_or_default(),
                code: TaskStopCode::ServiceSchedulerInitiated,
                reason: format!("Scaling activity initiated by (deployment {primary_id})"),
            });
            surplus -= 1;
        }
    }

    // Old deployments drain: tasks that do not count any time, the others down to the floor.
    let mut can_drop = healthy_count - floor;
    let mut old_order: Vec<&Task> = old.iter().copied().filter(|t| !protected(t)).collect();
    // Those that do not count first, then those not yet known healthy, the healthy last.
    old_order.sort_by_key(|t| (counts(t), healthy(t)));
    for t in old_order {
        let h = counts(t);
        if h {
            if can_drop <= 0 {
                continue;
            }
            can_drop -= 1;
        }
        out.stop.push(Stop {
            task_arn: t.task_arn.clone().unwrap_or_default(),
            code: TaskStopCode::ServiceSchedulerInitiated,
            reason: format!("Scaling activity initiated by (deployment {primary_id})"),
        });
    }

    // Start: up to desired, without going over the ceiling of existing tasks.
    let want = desired - mine.len() as i32;
    let room = ceiling - existing;
    let start = want.min(room).max(0) as usize;
    if start > 0 {
        let wait = backoff(recent.len());
        if wait > 0.0 && now < last_failure + wait {
            out.retry_at = Some(last_failure + wait);
            let msg = "is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.";
            let already = out
                .service
                .events
                .iter()
                .flatten()
                .next()
                .and_then(|e| e.message.as_deref())
                .is_some_and(|m| m.ends_with(msg));
            if !already {
                service::push_event(
                    &mut out.service,
                    estiba_api::ecs::ServiceEvent {
                        id: None,
                        created_at: Some(now),
                        message: Some(format!("(service {name}) {msg}")),
                    },
                );
            }
        } else {
            out.start = start;
        }
    }

    // Completion.
    let mine_healthy = mine.iter().filter(|t| healthy(t)).count() as i32;
    let steady = mine.len() as i32 == desired
        && mine_healthy == desired
        && old.is_empty()
        && out.start == 0
        && out.stop.is_empty()
        && live.len() as i32 == desired;
    if steady {
        if in_progress {
            out.completed = Some(primary_id.clone());
            if let Some(p) = service::primary_mut(&mut out.service) {
                p.rollout_state = Some(DeploymentRolloutState::Completed);
                p.rollout_state_reason = Some(format!("ECS deployment {primary_id} completed."));
                p.updated_at = Some(now);
            }
        }
        // Drained older deployments are removed.
        out.service.deployments.get_or_insert_with(Vec::new).retain(|d| d.status.as_deref() == Some(PRIMARY));
        if let Some(revs) = &mut out.service.current_service_revisions {
            revs.truncate(1);
        }
        let steady_msg = format!("(service {name}) has reached a steady state.");
        let last = out.service.events.iter().flatten().next().and_then(|e| e.message.clone());
        if last.as_deref() != Some(steady_msg.as_str()) {
            if in_progress {
                service::push_event(
                    &mut out.service,
                    estiba_api::ecs::ServiceEvent {
                        id: None,
                        created_at: Some(now),
                        message: Some(format!("(service {name}) (deployment {primary_id}) deployment completed.")),
                    },
                );
            }
            service::push_event(
                &mut out.service,
                estiba_api::ecs::ServiceEvent { id: None, created_at: Some(now), message: Some(steady_msg) },
            );
        }
    } else {
        // Deployments with no tasks left and not PRIMARY are dropped as they drain.
        let has_tasks = |d: &Deployment| live.iter().any(|t| Some(deployment_of(t)) == d.id.as_deref());
        out.service.deployments.get_or_insert_with(Vec::new).retain(|d| {
            d.status.as_deref() == Some(PRIMARY)
                || has_tasks(d)
                || d.rollout_state == Some(DeploymentRolloutState::Completed)
        });
    }
    out
}

/// Plans one pass for a DAEMON service: one task per ACTIVE container instance. `instances`
/// are the ARNs of ACTIVE instances; tasks on other instances are stopped.
pub fn plan_daemon(svc: &Service, tasks: &[&Task], instances: &[String], now: Now) -> Plan {
    let mut out = Plan { service: svc.clone(), ..Default::default() };
    let live: Vec<&Task> = tasks.iter().copied().filter(|t| task::last_status(t) != Status::Stopped).collect();
    let wanted: Vec<&Task> = live.iter().copied().filter(|t| !task::desired_stopped(t)).collect();
    let draining = service::status(svc) == service::DRAINING;
    if service::status(svc) == service::INACTIVE {
        return out;
    }
    let primary_id = service::primary(svc).and_then(|p| p.id.clone()).unwrap_or_default();
    for t in &wanted {
        let on = t.container_instance_arn.as_deref().unwrap_or("");
        let gone = !instances.iter().any(|i| i == on);
        let old = deployment_of(t) != primary_id;
        if draining || gone || old {
            out.stop.push(Stop {
                task_arn: t.task_arn.clone().unwrap_or_default(),
                code: TaskStopCode::ServiceSchedulerInitiated,
                reason: if draining {
                    "Service is being deleted".into()
                } else {
                    format!("Scaling activity initiated by (deployment {primary_id})")
                },
            });
        }
    }
    if draining {
        if live.is_empty() {
            out.service.status = Some(service::INACTIVE.into());
            out.service.desired_count = 0;
        }
        return out;
    }
    out.service.desired_count = instances.len() as i32;
    if let Some(p) = service::primary_mut(&mut out.service) {
        p.desired_count = instances.len() as i32;
    }
    for i in instances {
        let has_live = live.iter().any(|t| t.container_instance_arn.as_deref() == Some(i.as_str()));
        if !has_live {
            out.start_on.push(i.clone());
        }
    }
    let settled = out.start_on.is_empty()
        && out.stop.is_empty()
        && wanted.iter().all(|t| task::last_status(t) == Status::Running && deployment_of(t) == primary_id);
    if settled {
        if let Some(p) = service::primary_mut(&mut out.service) {
            if p.rollout_state == Some(DeploymentRolloutState::InProgress) {
                out.completed = Some(primary_id.clone());
                p.rollout_state = Some(DeploymentRolloutState::Completed);
                p.rollout_state_reason = Some(format!("ECS deployment {primary_id} completed."));
                p.updated_at = Some(now);
            }
        }
        out.service.deployments.get_or_insert_with(Vec::new).retain(|d| d.status.as_deref() == Some(PRIMARY));
    }
    out
}

/// Dispatches on the scheduling strategy.
pub fn plan_any(
    svc: &Service,
    tasks: &[&Task],
    instances: &[String],
    probes: &Probes,
    now: Now,
    settings: &Settings,
    traffic: Option<&crate::traffic::Traffic>,
) -> Plan {
    match svc.scheduling_strategy.unwrap_or(SchedulingStrategy::Replica) {
        SchedulingStrategy::Replica if crate::traffic::shifts_traffic(svc) => {
            crate::traffic::plan(svc, tasks, probes, now, settings, traffic)
        }
        SchedulingStrategy::Replica => plan(svc, tasks, probes, now, settings),
        SchedulingStrategy::Daemon => plan_daemon(svc, tasks, instances, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_api::ecs::LaunchType;

    use crate::testing::rolling_service as svc;

    fn t(n: usize, dep: &str, status: &str, started: Option<f64>) -> Task {
        Task {
            task_arn: Some(format!("arn:t/{dep}/{n}")),
            started_by: Some(dep.into()),
            last_status: Some(status.into()),
            desired_status: Some("RUNNING".into()),
            started_at: started,
            created_at: Some(n as f64),
            launch_type: Some(LaunchType::Fargate),
            ..Default::default()
        }
    }

    fn run(s: &Service, tasks: &[Task], now: f64) -> Plan {
        let refs: Vec<&Task> = tasks.iter().collect();
        plan(s, &refs, &Probes::NONE, now, &Settings { unchecked_healthy_after: 0.0 })
    }

    #[test]
    fn arithmetic_rounds_like_ecs() {
        assert_eq!(min_healthy(3, 50), 2);
        assert_eq!(max_running(3, 150), 4);
        assert_eq!(min_healthy(0, 100), 0);
        assert_eq!(max_running(1, 200), 2);
        assert_eq!(min_healthy(1, 100), 1);
        assert_eq!(max_running(5, 120), 6);
    }

    #[test]
    fn rolling_100_200_starts_all_then_stops_old() {
        let s = svc(4, 100, 200);
        let old: Vec<Task> = (0..4).map(|i| t(i, "ecs-svc/1", "RUNNING", Some(0.0))).collect();
        let p = run(&s, &old, 100.0);
        assert_eq!(p.start, 4);
        assert!(p.stop.is_empty(), "no old task stops before new ones are healthy");
        let mut all = old.clone();
        all.extend((10..14).map(|i| t(i, "ecs-svc/2", "RUNNING", Some(50.0))));
        let p = run(&s, &all, 100.0);
        assert_eq!(p.start, 0);
        assert_eq!(p.stop.len(), 4);
        let new: Vec<Task> = (10..14).map(|i| t(i, "ecs-svc/2", "RUNNING", Some(50.0))).collect();
        let p = run(&s, &new, 100.0);
        assert_eq!(p.completed.as_deref(), Some("ecs-svc/2"));
        assert_eq!(p.service.deployments.as_ref().unwrap().len(), 1);
        assert!(p.service.events.unwrap()[0].message.as_deref().unwrap().ends_with("has reached a steady state."));
    }

    #[test]
    fn draining_instances_hand_their_tasks_over_within_the_limits() {
        // Four tasks of the PRIMARY deployment: two on instance X, which is DRAINING, one of
        // them still PENDING.
        let on = |mut t: Task, ci: &str| {
            t.container_instance_arn = Some(ci.into());
            t
        };
        let dep = "ecs-svc/2";
        let tasks = vec![
            on(t(0, dep, "RUNNING", Some(0.0)), "X"),
            on(t(1, dep, "PENDING", None), "X"),
            on(t(2, dep, "RUNNING", Some(0.0)), "Y"),
            on(t(3, dep, "RUNNING", Some(0.0)), "Y"),
        ];
        let refs: Vec<&Task> = tasks.iter().collect();
        let draining = |t: &Task| t.container_instance_arn.as_deref() == Some("X");
        let probes = Probes { draining: &draining, ..Probes::NONE };
        let settings = Settings { unchecked_healthy_after: 0.0 };
        let stops = |p: &Plan| p.stop.iter().map(|s| s.task_arn.clone()).collect::<Vec<_>>();
        // 100/200: replacements start at once; the PENDING task stops at once, the RUNNING
        // one stays until they are healthy.
        let s = svc(4, 100, 200);
        let p = plan(&s, &refs, &probes, 100.0, &settings);
        assert_eq!(p.start, 2);
        assert_eq!(stops(&p), ["arn:t/ecs-svc/2/1"]);
        // 50/100: no room above desired, so RUNNING ones stop first, down to the floor of 2.
        let s = svc(4, 50, 100);
        let p = plan(&s, &refs, &probes, 100.0, &settings);
        assert_eq!(p.start, 0);
        assert_eq!(stops(&p), ["arn:t/ecs-svc/2/1", "arn:t/ecs-svc/2/0"]);
        // Replacements healthy on other instances: the drained task goes, and the service is
        // steady only once nothing runs on X.
        let mut all = tasks.clone();
        all.remove(1);
        all.extend([on(t(4, dep, "RUNNING", Some(50.0)), "Z"), on(t(5, dep, "RUNNING", Some(50.0)), "Z")]);
        let refs: Vec<&Task> = all.iter().collect();
        let p = plan(&svc(4, 100, 200), &refs, &probes, 100.0, &settings);
        assert_eq!((p.start, stops(&p)), (0, vec!["arn:t/ecs-svc/2/0".to_owned()]));
        assert!(p.completed.is_none());
        // Without the instance draining nothing would change.
        let p = plan(&svc(4, 100, 200), &refs, &Probes::NONE, 100.0, &settings);
        assert_eq!((p.start, p.stop.len()), (0, 1), "five tasks for four: scale-in of one");
    }

    #[test]
    fn rolling_50_100_never_exceeds_desired() {
        let s = svc(4, 50, 100);
        let old: Vec<Task> = (0..4).map(|i| t(i, "ecs-svc/1", "RUNNING", Some(0.0))).collect();
        let p = run(&s, &old, 100.0);
        assert_eq!(p.start, 0, "no room above 100%");
        assert_eq!(p.stop.len(), 2, "down to the 50% floor");
        let mut two: Vec<Task> = old[2..].to_vec();
        let p = run(&s, &two, 100.0);
        assert_eq!(p.start, 2);
        two.extend((10..12).map(|i| t(i, "ecs-svc/2", "PENDING", None)));
        let p = run(&s, &two, 100.0);
        assert_eq!((p.start, p.stop.len()), (0, 0), "pending new tasks do not count as healthy");
    }

    #[test]
    fn old_tasks_that_run_keep_the_floor_before_their_40_seconds() {
        // Issue 14.1: a rollout 10 s after the service started (no health check, tasks not yet
        // counted healthy by the 40 s rule) stopped every old task at once.
        let s = svc(4, 50, 100);
        let old: Vec<Task> = (0..4).map(|i| t(i, "ecs-svc/1", "RUNNING", Some(90.0))).collect();
        let refs: Vec<&Task> = old.iter().collect();
        let p = plan(&s, &refs, &Probes::NONE, 100.0, &Settings::default());
        assert_eq!(p.stop.len(), 2, "down to the floor, not to zero");
        // Two new tasks run but have not passed their 40 s: the two old ones left stay.
        let mut all: Vec<Task> = old[2..].to_vec();
        all.extend((10..12).map(|i| t(i, "ecs-svc/2", "RUNNING", Some(95.0))));
        let refs: Vec<&Task> = all.iter().collect();
        let p = plan(&s, &refs, &Probes::NONE, 100.0, &Settings::default());
        assert_eq!((p.start, p.stop.len()), (0, 0));
        // Once the new ones count, the old ones go.
        let p = plan(&s, &refs, &Probes::NONE, 140.0, &Settings::default());
        assert_eq!(p.stop.len(), 2);
        // (A grace period keeps the health-check replacement rule out of what follows.)
        let mut s = s.clone();
        s.health_check_grace_period_seconds = Some(3600);
        let stops = |tasks: &[Task]| -> Vec<String> {
            let refs: Vec<&Task> = tasks.iter().collect();
            plan(&s, &refs, &Probes { checked: &|_| true, ..Probes::NONE }, 100.0, &Settings::default())
                .stop
                .into_iter()
                .map(|x| x.task_arn)
                .collect()
        };
        // An old task known to be unhealthy does not count: it goes, and costs the floor nothing.
        let mut three = old[..3].to_vec();
        three[0].health_status = Some(HealthStatus::Unhealthy);
        three[1].health_status = Some(HealthStatus::Healthy);
        three[2].health_status = Some(HealthStatus::Healthy);
        assert_eq!(stops(&three), ["arn:t/ecs-svc/1/0"], "the two healthy ones are the floor");
        // Of those that count, the ones not yet known healthy go before the healthy ones.
        let mut four = old.clone();
        for (t, h) in four.iter_mut().zip([
            HealthStatus::Healthy,
            HealthStatus::Healthy,
            HealthStatus::Unknown,
            HealthStatus::Unknown,
        ]) {
            t.health_status = Some(h);
        }
        assert_eq!(stops(&four), ["arn:t/ecs-svc/1/2", "arn:t/ecs-svc/1/3"]);
    }

    #[test]
    fn the_breaker_rolls_back_to_a_deployment_that_had_not_completed_yet() {
        // Issue 14.2: the previous deployment was still IN_PROGRESS (its tasks younger than
        // 40 s) when the failing one replaced it.
        let mut s = svc(2, 50, 100);
        s.deployment_configuration.as_mut().unwrap().deployment_circuit_breaker =
            Some(estiba_api::ecs::DeploymentCircuitBreaker { enable: true, rollback: true });
        s.deployments.as_mut().unwrap()[1].rollout_state = Some(DeploymentRolloutState::InProgress);
        let mut tasks: Vec<Task> = vec![t(0, "ecs-svc/1", "RUNNING", Some(90.0))];
        for i in 10..13 {
            let mut f = t(i, "ecs-svc/2", "STOPPED", None);
            f.stop_code = Some(TaskStopCode::TaskFailedToStart);
            tasks.push(f);
        }
        let refs: Vec<&Task> = tasks.iter().collect();
        let p = plan(&s, &refs, &Probes::NONE, 100.0, &Settings::default());
        assert_eq!(p.failed.as_deref(), Some("ecs-svc/2"));
        assert_eq!(p.rollback_to.and_then(|d| d.id).as_deref(), Some("ecs-svc/1"));
    }

    #[test]
    fn rolling_one_task_and_rounded_percentages() {
        let old = |n: usize| -> Vec<Task> { (0..n).map(|i| t(i, "ecs-svc/1", "RUNNING", Some(0.0))).collect() };
        // desiredCount 1, 100/200: the new task first, the old one stays.
        let p = run(&svc(1, 100, 200), &old(1), 100.0);
        assert_eq!((p.start, p.stop.len()), (1, 0));
        // desiredCount 1, 0/100: the old task goes first, nothing starts beside it.
        let p = run(&svc(1, 0, 100), &old(1), 100.0);
        assert_eq!((p.start, p.stop.len()), (0, 1));
        let p = run(&svc(1, 0, 100), &[], 100.0);
        assert_eq!(p.start, 1);
        // desiredCount 3, 50/150: floor 2 (1.5 rounded up), ceiling 4 (4.5 rounded down).
        let p = run(&svc(3, 50, 150), &old(3), 100.0);
        assert_eq!((p.start, p.stop.len()), (1, 1));
        // desiredCount 0: nothing starts, old tasks go, and the deployment completes once empty.
        let p = run(&svc(0, 100, 200), &old(2), 100.0);
        assert_eq!((p.start, p.stop.len()), (0, 2));
        let p = run(&svc(0, 100, 200), &[], 100.0);
        assert_eq!(p.completed.as_deref(), Some("ecs-svc/2"));
    }

    #[test]
    fn protected_tasks_are_not_scaled_in_nor_replaced() {
        // Scale in from 3 to 1 with two tasks protected: only the unprotected one goes.
        let mut s = svc(1, 100, 200);
        s.deployments.as_mut().unwrap().truncate(1);
        let tasks: Vec<Task> = (0..3).map(|i| t(i, "ecs-svc/2", "RUNNING", Some(0.0))).collect();
        let refs: Vec<&Task> = tasks.iter().collect();
        let guarded = |t: &Task| t.task_arn.as_deref() != Some("arn:t/ecs-svc/2/1");
        let p = plan(
            &s,
            &refs,
            &Probes { protected: &guarded, ..Probes::NONE },
            100.0,
            &Settings { unchecked_healthy_after: 0.0 },
        );
        assert_eq!(p.stop.iter().map(|x| x.task_arn.as_str()).collect::<Vec<_>>(), ["arn:t/ecs-svc/2/1"]);
        // A rollout leaves a protected old task running, and does not complete meanwhile.
        let s = svc(1, 100, 200);
        let mut all = vec![t(0, "ecs-svc/1", "RUNNING", Some(0.0))];
        all.push(t(10, "ecs-svc/2", "RUNNING", Some(50.0)));
        let refs: Vec<&Task> = all.iter().collect();
        let old = |t: &Task| t.started_by.as_deref() == Some("ecs-svc/1");
        let p = plan(
            &s,
            &refs,
            &Probes { protected: &old, ..Probes::NONE },
            100.0,
            &Settings { unchecked_healthy_after: 0.0 },
        );
        assert!(p.stop.is_empty() && p.completed.is_none(), "{:?}", p.stop);
    }

    #[test]
    fn target_group_health_gates_rollouts_and_replaces_unhealthy_tasks() {
        let s = svc(1, 100, 200);
        let all = [t(0, "ecs-svc/1", "RUNNING", Some(0.0)), t(10, "ecs-svc/2", "RUNNING", Some(95.0))];
        let refs: Vec<&Task> = all.iter().collect();
        let settings = Settings::default();
        let new = |t: &Task| t.started_by.as_deref() == Some("ecs-svc/2");
        // Registered, not yet healthy: the old task stays, although 40 s have not mattered.
        let pending = |t: &Task| if new(t) { LbHealth::Pending } else { LbHealth::Healthy };
        let p = plan(&s, &refs, &Probes { lb: &pending, ..Probes::NONE }, 100.0, &settings);
        assert!(p.stop.is_empty(), "{:?}", p.stop);
        // Healthy in its target group: it counts at once (no 40 s wait) and the old one goes.
        let healthy = |_: &Task| LbHealth::Healthy;
        let p = plan(&s, &refs, &Probes { lb: &healthy, ..Probes::NONE }, 100.0, &settings);
        assert_eq!(p.stop.iter().map(|x| x.task_arn.as_str()).collect::<Vec<_>>(), ["arn:t/ecs-svc/1/0"]);
        // Unhealthy: replaced after the grace period, with ECS's reason and event.
        let tg = "arn:aws:elasticloadbalancing:us-east-1:0:targetgroup/web/0123456789abcdef";
        let sick = |t: &Task| {
            if new(t) {
                LbHealth::Unhealthy { target_group: tg.into(), port: 80, reason: "Health checks failed".into() }
            } else {
                LbHealth::Healthy
            }
        };
        let mut graced = s.clone();
        graced.health_check_grace_period_seconds = Some(30);
        let p = plan(&graced, &refs, &Probes { lb: &sick, ..Probes::NONE }, 100.0, &settings);
        assert!(p.stop.is_empty(), "within the grace period: {:?}", p.stop);
        let p = plan(&s, &refs, &Probes { lb: &sick, ..Probes::NONE }, 100.0, &settings);
        assert_eq!(p.stop.len(), 1);
        assert_eq!(p.stop[0].task_arn, "arn:t/ecs-svc/2/10");
        assert_eq!(p.stop[0].reason, format!("Task failed ELB health checks in (target-group {tg})"));
        let event = p.service.events.as_ref().unwrap()[0].message.clone().unwrap();
        assert!(
            event.contains(&format!(
                "(port 80) is unhealthy in (target-group {tg}) due to (reason Health checks failed)."
            )),
            "{event}"
        );
        // Such a stop is a failure of its deployment (the circuit breaker counts it).
        let mut stopped = all[1].clone();
        stopped.last_status = Some("STOPPED".into());
        stopped.stop_code = Some(TaskStopCode::ServiceSchedulerInitiated);
        stopped.stopped_reason = Some(p.stop[0].reason.clone());
        assert!(is_failure(&stopped));
    }

    #[test]
    fn service_connect_tasks_count_once_they_are_endpoints() {
        use estiba_api::ecs::{Attachment, KeyValuePair, ServiceConnectConfiguration, ServiceConnectService};
        let mut s = svc(1, 100, 200);
        s.deployments.as_mut().unwrap()[0].service_connect_configuration = Some(ServiceConnectConfiguration {
            enabled: true,
            services: Some(vec![ServiceConnectService { port_name: "http".into(), ..Default::default() }]),
            ..Default::default()
        });
        let mut new = t(10, "ecs-svc/2", "RUNNING", Some(50.0));
        let all = vec![t(0, "ecs-svc/1", "RUNNING", Some(0.0)), new.clone()];
        let p = run(&s, &all, 100.0);
        assert!(p.stop.is_empty(), "a new task without an address is not reachable yet: the old one stays");
        new.attachments = Some(vec![Attachment {
            r#type: Some("ElasticNetworkInterface".into()),
            details: Some(vec![KeyValuePair {
                name: Some("privateIPv4Address".into()),
                value: Some("172.31.0.7".into()),
            }]),
            ..Default::default()
        }]);
        let all = vec![t(0, "ecs-svc/1", "RUNNING", Some(0.0)), new];
        let p = run(&s, &all, 100.0);
        assert_eq!(p.stop.len(), 1, "once it is an endpoint, the old task goes");
    }

    #[test]
    fn scale_in_and_zero() {
        let mut s = svc(1, 100, 200);
        s.deployments.as_mut().unwrap().truncate(1);
        let tasks: Vec<Task> = vec![t(0, "ecs-svc/2", "RUNNING", Some(0.0)), t(1, "ecs-svc/2", "PENDING", None)];
        let p = run(&s, &tasks, 100.0);
        assert_eq!(p.stop.len(), 1);
        assert_eq!(p.stop[0].task_arn, "arn:t/ecs-svc/2/1", "the pending task goes first");
        s.desired_count = 0;
        let p = run(&s, &tasks, 100.0);
        assert_eq!(p.stop.len(), 2);
        let p = run(&s, &[], 100.0);
        assert_eq!(p.completed.as_deref(), Some("ecs-svc/2"));
    }

    #[test]
    fn failures_back_off_and_trip_the_breaker() {
        let mut s = svc(1, 100, 200);
        s.deployment_configuration.as_mut().unwrap().deployment_circuit_breaker =
            Some(estiba_api::ecs::DeploymentCircuitBreaker { enable: true, rollback: true });
        let failed = |n: usize, at: f64| Task {
            stop_code: Some(TaskStopCode::TaskFailedToStart),
            stopped_at: Some(at),
            ..t(n, "ecs-svc/2", "STOPPED", None)
        };
        let tasks = vec![failed(0, 10.0), failed(1, 11.0)];
        let p = run(&s, &tasks, 12.0);
        assert_eq!(p.start, 1, "two failures: no back-off yet");
        // Threshold for desired 1 is 3.
        let tasks = vec![failed(0, 10.0), failed(1, 11.0), failed(2, 12.0)];
        let p = run(&s, &tasks, 13.0);
        assert_eq!(p.failed.as_deref(), Some("ecs-svc/2"));
        assert_eq!(p.rollback_to.and_then(|d| d.id).as_deref(), Some("ecs-svc/1"));
        // Without the breaker, three failures hold the next start back.
        s.deployment_configuration.as_mut().unwrap().deployment_circuit_breaker = None;
        let p = run(&s, &tasks, 13.0);
        assert_eq!(p.start, 0);
        assert_eq!(p.retry_at, Some(22.0));
        let p = run(&s, &tasks, 23.0);
        assert_eq!(p.start, 1);
        assert_eq!(backoff(20), 900.0);
    }

    #[test]
    fn draining_stops_everything_then_inactive() {
        let mut s = svc(0, 100, 200);
        s.status = Some("DRAINING".into());
        let tasks = vec![t(0, "ecs-svc/2", "RUNNING", Some(0.0))];
        let p = run(&s, &tasks, 1.0);
        assert_eq!(p.stop.len(), 1);
        assert_eq!(p.service.status.as_deref(), Some("DRAINING"));
        let p = run(&s, &[], 1.0);
        assert_eq!(p.service.status.as_deref(), Some("INACTIVE"));
    }

    #[test]
    fn daemon_one_per_instance() {
        let mut s = svc(0, 0, 100);
        s.scheduling_strategy = Some(SchedulingStrategy::Daemon);
        s.deployments.as_mut().unwrap().truncate(1);
        let mut on_a = t(0, "ecs-svc/2", "RUNNING", Some(0.0));
        on_a.container_instance_arn = Some("a".into());
        let mut on_gone = t(1, "ecs-svc/2", "RUNNING", Some(0.0));
        on_gone.container_instance_arn = Some("gone".into());
        let refs = vec![&on_a, &on_gone];
        let p = plan_daemon(&s, &refs, &["a".into(), "b".into()], 1.0);
        assert_eq!(p.start_on, vec!["b".to_string()]);
        assert_eq!(p.stop.len(), 1);
        assert_eq!(p.service.desired_count, 2);
    }
}
