//! The service scheduler's bookkeeping around a plan: everything a pass writes besides the
//! tasks it starts. [`crate::deploy`] decides what to start and stop; this module turns that
//! plan, the stored service and its service deployment records into what the pass records:
//!
//! - requests from StopServiceDeployment: STOP_REQUESTED → STOPPED (the deployment's rollout
//!   FAILED), ROLLBACK_REQUESTED → a rollback like the circuit breaker's;
//! - the tasks to stop (those not already asked to stop), and the event listing them;
//! - a rollback when the PRIMARY deployment failed: a new PRIMARY deployment back to the last
//!   COMPLETED one and its service revision, the failed deployment's record
//!   ROLLBACK_IN_PROGRESS with its `rollback` and the circuit breaker monitor TRIGGERED; with no
//!   deployment to return to, the failed record STOPPED;
//! - records following the rollout: PENDING → IN_PROGRESS → SUCCESSFUL, and
//!   ROLLBACK_IN_PROGRESS → ROLLBACK_SUCCESSFUL once the deployment rolled back to completes;
//! - service events, messages that repeat the newest event being left out.
//!
//! The caller reads the state, calls [`decide`], writes the [`Outcome`] with compare-and-swap,
//! places the tasks to start, and reports what was placed with [`record_starts`].

use estiba_api::ecs::{
    DeploymentRolloutState, Failure, Rollback, Service, ServiceDeployment, ServiceDeploymentRollbackMonitorsStatus,
    ServiceDeploymentStatus, ServiceEvent, ServiceRevision, Task, TaskDefinition,
};

use crate::arn::Scope;
use crate::deploy::Plan;
use crate::error::{EcsError, Result};
use crate::ids::{Ids, Now};
use crate::service;
use crate::task;

/// The status reason of a deployment stopped by StopServiceDeployment (ABORT).
pub const STOPPED_BY_REQUEST: &str = "The service deployment was stopped by request.";
/// The reason a failed deployment is rolled back or stopped.
pub const CIRCUIT_BREAKER: &str = "ECS deployment circuit breaker: tasks failed to start.";

/// What a pass reads besides the plan.
pub struct Input<'a> {
    pub scope: &'a Scope,
    pub cluster: &'a str,
    /// The service as stored (the plan's input).
    pub service: &'a Service,
    /// The service's tasks, as given to the planner.
    pub tasks: &'a [&'a Task],
    /// The service's deployment records.
    pub records: &'a [&'a ServiceDeployment],
    /// Finds a task definition by ARN: the one a rollback returns to.
    pub taskdef: &'a dyn Fn(&str) -> Option<&'a TaskDefinition>,
    /// Whether a node has claimed the task; unclaimed tasks asked to stop are STOPPED at once.
    pub claimed: &'a dyn Fn(&Task) -> bool,
}

/// A changed document: `index` into the input slice it came from, and its new value.
#[derive(Clone, Debug, PartialEq)]
pub struct Update<T> {
    pub index: usize,
    pub value: T,
}

/// The service revision a rollback creates, under its deployment number.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRevision {
    /// The N of `ecs-svc/<N>` and of the revision's ARN.
    pub number: String,
    pub revision: ServiceRevision,
}

/// What a pass writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The service after the pass: deployments, rollout states, events.
    pub service: Service,
    /// Tasks asked to stop (indexes into [`Input::tasks`]).
    pub stops: Vec<Update<Task>>,
    /// Changed deployment records (indexes into [`Input::records`]).
    pub records: Vec<Update<ServiceDeployment>>,
    /// A rollback's new service revision.
    pub revision: Option<NewRevision>,
    /// Tasks to start for the PRIMARY deployment (none while it fails or rolls back).
    pub start: usize,
    /// DAEMON: the container instances that need a task.
    pub start_on: Vec<String>,
    /// When a start held back by back-off should be looked at again.
    pub retry_at: Option<Now>,
    /// The service's traffic document after the pass (services that shift traffic).
    pub traffic: Option<crate::traffic::Traffic>,
}

/// What placing the tasks to start gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Placed {
    /// The ids of the tasks created (none when nothing was to start).
    Tasks(Vec<String>),
    /// Nothing could be placed: why, per container instance (empty: no instance at all).
    Failed(Vec<Failure>),
}

/// The N of a service revision ARN (`…:service-revision/<cluster>/<service>/<N>`).
pub fn revision_number(arn: Option<&str>) -> &str {
    arn.and_then(|a| a.rsplit('/').next()).unwrap_or("")
}

/// The record whose target is the deployment `deployment_id` (`ecs-svc/<N>`).
pub fn record_for(records: &[&ServiceDeployment], deployment_id: &str) -> Option<usize> {
    let n = service::deployment_number(deployment_id);
    records.iter().position(|r| target_number(r) == n)
}

fn target_number(r: &ServiceDeployment) -> &str {
    revision_number(r.target_service_revision.as_ref().and_then(|t| t.arn.as_deref()))
}

/// Record updates of one pass: each applies to the record as the pass's earlier updates
/// left it.
struct Records<'a> {
    read: &'a [&'a ServiceDeployment],
    new: Vec<Option<ServiceDeployment>>,
}

impl<'a> Records<'a> {
    fn new(read: &'a [&'a ServiceDeployment]) -> Self {
        Records { read, new: vec![None; read.len()] }
    }

    /// The record as this pass has it so far.
    fn get(&self, i: usize) -> &ServiceDeployment {
        self.new[i].as_ref().unwrap_or(self.read[i])
    }

    fn set(&mut self, i: usize, f: impl FnOnce(&mut ServiceDeployment)) {
        let mut r = self.get(i).clone();
        f(&mut r);
        self.new[i] = (r != *self.read[i]).then_some(r);
    }

    fn updates(self) -> Vec<Update<ServiceDeployment>> {
        self.new.into_iter().enumerate().filter_map(|(index, r)| Some(Update { index, value: r? })).collect()
    }
}

fn event(message: String, ids: &mut dyn Ids, now: Now) -> ServiceEvent {
    ServiceEvent { id: Some(ids.uuid()), created_at: Some(now), message: Some(message) }
}

/// Adds an event unless it repeats the newest one.
pub fn push_unique_event(svc: &mut Service, message: String, ids: &mut dyn Ids, now: Now) {
    let newest = svc.events.iter().flatten().next().and_then(|e| e.message.as_deref());
    if newest != Some(message.as_str()) {
        service::push_event(svc, event(message, ids, now));
    }
}

fn task_list(ids: &[String]) -> String {
    ids.iter().map(|id| format!("(task {id})")).collect::<Vec<_>>().join(" ")
}

/// Decides what one pass of the service scheduler records, from the planner's `plan` for
/// `input.service`. Fails only when the task definition a rollback returns to is gone.
pub fn decide(input: &Input, mut plan: Plan, ids: &mut dyn Ids, now: Now) -> Result<Outcome> {
    let stored = input.service;
    let name = service::name(stored);
    let mut records = Records::new(input.records);

    // Requests from StopServiceDeployment.
    for (i, r) in input.records.iter().enumerate() {
        match r.status {
            Some(ServiceDeploymentStatus::StopRequested) => {
                records.set(i, |r| {
                    r.status = Some(ServiceDeploymentStatus::Stopped);
                    r.status_reason = Some(STOPPED_BY_REQUEST.into());
                    r.stopped_at = Some(now);
                    r.finished_at = Some(now);
                    r.updated_at = Some(now);
                });
                let id = format!("ecs-svc/{}", target_number(r));
                for dep in plan.service.deployments.iter_mut().flatten() {
                    if dep.id.as_deref() == Some(id.as_str()) {
                        dep.rollout_state = Some(DeploymentRolloutState::Failed);
                        dep.rollout_state_reason = Some(STOPPED_BY_REQUEST.into());
                        dep.updated_at = Some(now);
                    }
                }
                plan.completed = None;
            }
            Some(ServiceDeploymentStatus::RollbackRequested) => {
                plan.failed = Some(service::primary(stored).and_then(|p| p.id.clone()).unwrap_or_default());
                plan.rollback_to = service::rollback_target(stored).cloned();
                plan.start = 0;
                plan.completed = None;
            }
            _ => {}
        }
    }
    let mut svc = plan.service;

    let stops = stop_tasks(&mut svc, input.tasks, &plan.stop, input.claimed, ids, now);

    // A failed PRIMARY deployment: back to the last completed one, or stopped. A requested
    // rollback is reported as the circuit breaker's.
    let mut revision = None;
    if let Some(failed_id) = &plan.failed {
        let failed_rec = record_for(input.records, failed_id);
        let reason = [service::primary(&svc), service::primary(stored)]
            .into_iter()
            .flatten()
            .filter_map(|p| p.rollout_state_reason.clone())
            .find(|r| r.contains("circuit breaker") || r == crate::traffic::HOOK_ROLLBACK)
            .unwrap_or_else(|| CIRCUIT_BREAKER.into());
        let msg = format!("(service {name}) (deployment {failed_id}) deployment failed: tasks failed to start.");
        push_unique_event(&mut svc, msg, ids, now);
        match &plan.rollback_to {
            Some(to) => {
                let td = to
                    .task_definition
                    .as_deref()
                    .and_then(|a| (input.taskdef)(a))
                    .ok_or_else(EcsError::task_definition_not_found)?;
                let nd = service::rollback(input.scope, input.cluster, &mut svc, to, td, ids, now);
                if let Some(i) = failed_rec {
                    records.set(i, |r| {
                        r.status = Some(ServiceDeploymentStatus::RollbackInProgress);
                        r.status_reason = Some(reason.clone());
                        r.updated_at = Some(now);
                        r.rollback = Some(Rollback {
                            reason: Some(reason.clone()),
                            started_at: Some(now),
                            service_revision_arn: nd.revision.service_revision_arn.clone(),
                        });
                        if let Some(cb) = &mut r.deployment_circuit_breaker {
                            cb.status = Some(ServiceDeploymentRollbackMonitorsStatus::Triggered);
                        }
                    });
                }
                let msg = format!("(service {name}) rolling back to deployment {}.", to.id.as_deref().unwrap_or(""));
                push_unique_event(&mut svc, msg, ids, now);
                let new_id = nd.deployment.id.clone().unwrap_or_default();
                if let Some(t) = plan.traffic.as_mut() {
                    // Traffic goes back to the blue target groups at once.
                    t.rolled_back(stored.load_balancers.as_deref().unwrap_or_default(), &new_id, now);
                }
                let number = service::deployment_number(&new_id).to_owned();
                revision = Some(NewRevision { number, revision: nd.revision });
            }
            None => {
                if let Some(i) = failed_rec {
                    records.set(i, |r| {
                        r.status = Some(ServiceDeploymentStatus::Stopped);
                        r.status_reason = Some(reason.clone());
                        r.stopped_at = Some(now);
                        r.finished_at = Some(now);
                        r.updated_at = Some(now);
                        if let Some(cb) = &mut r.deployment_circuit_breaker {
                            cb.status = Some(ServiceDeploymentRollbackMonitorsStatus::Triggered);
                        }
                    });
                }
            }
        }
    }

    // Records follow the rollout.
    if let Some(done) = &plan.completed {
        if let Some(i) = record_for(input.records, done) {
            records.set(i, |r| {
                if matches!(r.status, Some(ServiceDeploymentStatus::Pending | ServiceDeploymentStatus::InProgress)) {
                    r.status = Some(ServiceDeploymentStatus::Successful);
                    r.status_reason = None;
                    r.finished_at = Some(now);
                    r.updated_at = Some(now);
                }
            });
        }
        // A completed rollback finishes the record of the deployment that failed.
        let n = service::deployment_number(done);
        for i in 0..input.records.len() {
            let r = records.get(i);
            let rolled = r.rollback.as_ref().and_then(|r| r.service_revision_arn.as_deref());
            if r.status == Some(ServiceDeploymentStatus::RollbackInProgress) && revision_number(rolled) == n {
                records.set(i, |r| {
                    r.status = Some(ServiceDeploymentStatus::RollbackSuccessful);
                    r.finished_at = Some(now);
                    r.updated_at = Some(now);
                });
            }
        }
    }
    for i in 0..input.records.len() {
        if records.get(i).status == Some(ServiceDeploymentStatus::Pending) {
            records.set(i, |r| {
                r.status = Some(ServiceDeploymentStatus::InProgress);
                r.updated_at = Some(now);
            });
        }
    }

    // The walk of a traffic shifting deployment: its record's lifecycle stage and hooks.
    if let Some(t) = plan.traffic.as_ref().filter(|t| t.source.is_some() || !t.hooks.is_empty()) {
        if let Some(i) = record_for(input.records, &t.deployment) {
            records.set(i, |r| {
                if matches!(r.status, Some(ServiceDeploymentStatus::Pending | ServiceDeploymentStatus::InProgress)) {
                    r.lifecycle_stage = Some(t.stage);
                }
                let hooks: Vec<_> = t.hooks.iter().map(|h| h.detail.clone()).collect();
                r.lifecycle_hook_details = (!hooks.is_empty()).then_some(hooks);
            });
        }
    }

    // The planner's events carry no id.
    for e in svc.events.iter_mut().flatten() {
        if e.id.is_none() {
            e.id = Some(ids.uuid());
        }
    }
    let starting = plan.failed.is_none() && plan.rollback_to.is_none();
    Ok(Outcome {
        service: svc,
        stops,
        records: records.updates(),
        revision,
        start: if starting { plan.start } else { 0 },
        start_on: if starting { plan.start_on } else { vec![] },
        retry_at: plan.retry_at,
        traffic: plan.traffic,
    })
}

/// Asks the tasks `stops` names to stop (one that no node claimed stops at once), with the
/// service's event listing them.
pub fn stop_tasks(
    svc: &mut Service,
    tasks: &[&Task],
    stops: &[crate::deploy::Stop],
    claimed: &dyn Fn(&Task) -> bool,
    ids: &mut dyn Ids,
    now: Now,
) -> Vec<Update<Task>> {
    let mut out = Vec::new();
    for stop in stops {
        let Some(index) = tasks.iter().position(|t| t.task_arn.as_deref() == Some(stop.task_arn.as_str())) else {
            continue;
        };
        let mut t = tasks[index].clone();
        if task::request_stop(&mut t, stop.code, &stop.reason) {
            if !claimed(tasks[index]) {
                task::stop_unstarted(&mut t, now);
            }
            out.push(Update { index, value: t });
        }
    }
    if !out.is_empty() {
        let name = service::name(svc).to_owned();
        let stopped: Vec<String> = out.iter().map(|s| task::task_id(&s.value).to_owned()).collect();
        let msg = format!("(service {name}) has stopped {} running tasks: {}.", stopped.len(), task_list(&stopped));
        service::push_event(svc, event(msg, ids, now));
    }
    out
}

/// Records what placing the outcome's tasks gave: an event listing the tasks started, or why
/// none could be placed (not repeated while it stays the newest event).
pub fn record_starts(svc: &mut Service, placed: &Placed, ids: &mut dyn Ids, now: Now) {
    let name = service::name(svc).to_owned();
    record_starts_of(svc, &name, placed, ids, now)
}

/// [`record_starts`] for a task set's tasks: ECS's events then read `(service <name>, taskSet
/// <id>) has started ...`.
pub fn record_task_set_starts(svc: &mut Service, task_set: &str, placed: &Placed, ids: &mut dyn Ids, now: Now) {
    let subject = format!("{}, taskSet {task_set}", service::name(svc));
    record_starts_of(svc, &subject, placed, ids, now)
}

/// `name` is what the events name after `(service `.
fn record_starts_of(svc: &mut Service, name: &str, placed: &Placed, ids: &mut dyn Ids, now: Now) {
    match placed {
        Placed::Tasks(started) if !started.is_empty() => {
            let msg = format!("(service {name}) has started {} tasks: {}.", started.len(), task_list(started));
            service::push_event(svc, event(msg, ids, now));
        }
        Placed::Tasks(_) => {}
        Placed::Failed(failures) => push_unique_event(svc, placement_message(name, failures), ids, now),
    }
}

/// ECS's event when no container instance can take a service's task: the closest match is
/// the first instance short of a resource.
pub fn placement_message(name: &str, failures: &[Failure]) -> String {
    let closest = failures.iter().find(|f| f.reason.as_deref().is_some_and(|r| r.starts_with("RESOURCE:")));
    let base = format!(
        "(service {name}) was unable to place a task because no container instance met all of its requirements."
    );
    match closest {
        Some(f) => {
            let what = match f.reason.as_deref() {
                Some("RESOURCE:MEMORY") => "has insufficient memory available",
                Some("RESOURCE:CPU") => "has insufficient CPU units available",
                Some("RESOURCE:PORTS") => "is already using a port required by your task",
                _ => "cannot take the task",
            };
            let arn = f.arn.as_deref().unwrap_or("");
            let id = arn.rsplit('/').next().unwrap_or(arn);
            format!("{base} The closest matching (container-instance {id}) {what}. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.")
        }
        None if failures.is_empty() => {
            format!("{base} Reason: No Container Instances were found in your cluster.")
        }
        None => format!("{base} Reason: {}.", failures[0].reason.as_deref().unwrap_or("unknown")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::Stop;
    use crate::ids::SeqIds;
    use crate::service::PRIMARY;
    use estiba_api::ecs::{
        Deployment, DeploymentCircuitBreaker, DeploymentConfiguration, LaunchType, ServiceDeploymentCircuitBreaker,
        ServiceRevisionSummary, TaskStopCode,
    };

    const NOW: Now = 100.0;

    use crate::testing::scope;

    fn td(rev: i32) -> TaskDefinition {
        crate::testing::fargate_td(rev, &[])
    }

    /// Deployment `ecs-svc/<n>` of task definition revision `n`.
    fn dep(n: u32, status: &str, rollout: DeploymentRolloutState) -> Deployment {
        Deployment {
            id: Some(format!("ecs-svc/{n}")),
            status: Some(status.into()),
            task_definition: td(n as i32).task_definition_arn,
            desired_count: 1,
            launch_type: Some(LaunchType::Fargate),
            rollout_state: Some(rollout),
            rollout_state_reason: Some(format!("ECS deployment ecs-svc/{n} in progress.")),
            ..Default::default()
        }
    }

    /// `web`: PRIMARY ecs-svc/2 rolling out over the COMPLETED ecs-svc/1, circuit breaker on.
    fn svc() -> Service {
        Service {
            service_name: Some("web".into()),
            status: Some("ACTIVE".into()),
            desired_count: 1,
            deployment_configuration: Some(DeploymentConfiguration {
                minimum_healthy_percent: Some(100),
                maximum_percent: Some(200),
                deployment_circuit_breaker: Some(DeploymentCircuitBreaker { enable: true, rollback: true }),
                ..Default::default()
            }),
            deployments: Some(vec![
                dep(2, PRIMARY, DeploymentRolloutState::InProgress),
                dep(1, "ACTIVE", DeploymentRolloutState::Completed),
            ]),
            events: Some(vec![]),
            ..Default::default()
        }
    }

    /// The record of deployment `ecs-svc/<n>`.
    fn record(n: u32, status: ServiceDeploymentStatus) -> ServiceDeployment {
        ServiceDeployment {
            service_deployment_arn: Some(scope().service_deployment_arn("c1", "web", &format!("rec{n}"))),
            target_service_revision: Some(ServiceRevisionSummary {
                arn: Some(scope().service_revision_arn("c1", "web", &n.to_string())),
                ..Default::default()
            }),
            status: Some(status),
            deployment_circuit_breaker: Some(ServiceDeploymentCircuitBreaker {
                status: Some(ServiceDeploymentRollbackMonitorsStatus::Monitoring),
                failure_count: 0,
                threshold: 3,
            }),
            ..Default::default()
        }
    }

    fn task(id: &str, dep: &str, last: &str) -> Task {
        Task {
            task_arn: Some(scope().task_arn("c1", id)),
            started_by: Some(dep.into()),
            last_status: Some(last.into()),
            desired_status: Some("RUNNING".into()),
            containers: Some(vec![]),
            ..Default::default()
        }
    }

    fn stop(t: &Task, reason: &str) -> Stop {
        Stop {
            task_arn: t.task_arn.clone().unwrap(),
            code: TaskStopCode::ServiceSchedulerInitiated,
            reason: reason.into(),
        }
    }

    /// What a pass reads; tasks whose id starts with `claimed` have a node.
    struct World {
        service: Service,
        tasks: Vec<Task>,
        records: Vec<ServiceDeployment>,
        taskdefs: Vec<TaskDefinition>,
    }

    impl World {
        fn new(records: Vec<ServiceDeployment>) -> Self {
            World { service: svc(), tasks: vec![], records, taskdefs: vec![td(1), td(2)] }
        }

        fn plan(&self) -> Plan {
            Plan { service: self.service.clone(), ..Default::default() }
        }

        fn decide(&self, plan: Plan) -> Result<Outcome> {
            let tasks: Vec<&Task> = self.tasks.iter().collect();
            let records: Vec<&ServiceDeployment> = self.records.iter().collect();
            let taskdef = |a: &str| self.taskdefs.iter().find(|t| t.task_definition_arn.as_deref() == Some(a));
            let claimed = |t: &Task| task::task_id(t).starts_with("claimed");
            let input = Input {
                scope: &scope(),
                cluster: "c1",
                service: &self.service,
                tasks: &tasks,
                records: &records,
                taskdef: &taskdef,
                claimed: &claimed,
            };
            decide(&input, plan, &mut SeqIds::default(), NOW)
        }

        /// The next pass reads what this one wrote.
        fn apply(&mut self, o: &Outcome) {
            self.service = o.service.clone();
            for u in &o.records {
                self.records[u.index] = u.value.clone();
            }
            for u in &o.stops {
                self.tasks[u.index] = u.value.clone();
            }
        }
    }

    /// The outcome as text, one line per fact, for snapshot-style assertions.
    fn summary(o: &Outcome) -> String {
        let mut out = Vec::new();
        for u in &o.records {
            let r = &u.value;
            out.push(format!(
                "record {}: {} reason={:?} breaker={} rollback={:?} stopped={:?} finished={:?}",
                target_number(r),
                r.status.map(|s| s.as_str()).unwrap_or("-"),
                r.status_reason.as_deref().unwrap_or("-"),
                r.deployment_circuit_breaker.as_ref().and_then(|c| c.status).map(|s| s.as_str()).unwrap_or("-"),
                r.rollback.as_ref().map(|b| (revision_number(b.service_revision_arn.as_deref()), b.reason.as_deref())),
                r.stopped_at,
                r.finished_at,
            ));
        }
        for u in &o.stops {
            let t = &u.value;
            out.push(format!(
                "stop {}: {} desired={} code={} reason={:?}",
                task::task_id(t),
                t.last_status.as_deref().unwrap_or("-"),
                t.desired_status.as_deref().unwrap_or("-"),
                t.stop_code.map(|c| c.as_str()).unwrap_or("-"),
                t.stopped_reason.as_deref().unwrap_or("-"),
            ));
        }
        if let Some(r) = &o.revision {
            let td = r.revision.task_definition.as_deref().unwrap_or("");
            out.push(format!("revision {}: {}", r.number, td.rsplit('/').next().unwrap_or("")));
        }
        for d in o.service.deployments.iter().flatten() {
            out.push(format!(
                "deployment {} {} {} {:?}",
                d.id.as_deref().unwrap_or("-"),
                d.status.as_deref().unwrap_or("-"),
                d.rollout_state.map(|s| s.as_str()).unwrap_or("-"),
                d.rollout_state_reason.as_deref().unwrap_or("-"),
            ));
        }
        for e in o.service.events.iter().flatten() {
            assert!(e.id.is_some(), "every event has an id");
            out.push(format!("event {}", e.message.as_deref().unwrap_or("")));
        }
        out.push(format!("start {} on {:?} retry {:?}", o.start, o.start_on, o.retry_at));
        out.join("\n")
    }

    fn check(o: &Outcome, expected: &str) {
        let got = summary(o);
        let want: Vec<&str> = expected.trim().lines().map(str::trim).collect();
        assert_eq!(got, want.join("\n"), "\n--- got:\n{got}\n");
    }

    #[test]
    fn a_stop_request_stops_the_record_and_fails_its_deployment() {
        let w = World::new(vec![
            record(1, ServiceDeploymentStatus::Successful),
            record(2, ServiceDeploymentStatus::StopRequested),
        ]);
        // Even if the planner saw the deployment complete, the request wins.
        let mut plan = w.plan();
        plan.completed = Some("ecs-svc/2".into());
        let o = w.decide(plan).unwrap();
        check(
            &o,
            r#"
            record 2: STOPPED reason="The service deployment was stopped by request." breaker=MONITORING rollback=None stopped=Some(100.0) finished=Some(100.0)
            deployment ecs-svc/2 PRIMARY FAILED "The service deployment was stopped by request."
            deployment ecs-svc/1 ACTIVE COMPLETED "ECS deployment ecs-svc/1 in progress."
            start 0 on [] retry None
            "#,
        );
        assert_eq!(o.records[0].index, 1);
    }

    #[test]
    fn a_rollback_request_rolls_back_to_the_completed_deployment() {
        let w = World::new(vec![record(2, ServiceDeploymentStatus::RollbackRequested)]);
        let mut plan = w.plan();
        plan.start = 1;
        let o = w.decide(plan).unwrap();
        // The new deployment's number comes from the id source (the second id it hands out).
        check(
            &o,
            r#"
            record 2: ROLLBACK_IN_PROGRESS reason="ECS deployment circuit breaker: tasks failed to start." breaker=TRIGGERED rollback=Some(("1000000000000000002", Some("ECS deployment circuit breaker: tasks failed to start."))) stopped=None finished=None
            revision 1000000000000000002: web:1
            deployment ecs-svc/1000000000000000002 PRIMARY IN_PROGRESS "ECS deployment ecs-svc/1000000000000000002 in progress."
            deployment ecs-svc/2 ACTIVE IN_PROGRESS "ECS deployment ecs-svc/2 in progress."
            deployment ecs-svc/1 ACTIVE COMPLETED "ECS deployment ecs-svc/1 in progress."
            event (service web) rolling back to deployment ecs-svc/1.
            event (service web) (deployment ecs-svc/2) deployment failed: tasks failed to start.
            start 0 on [] retry None
            "#,
        );
    }

    /// The plan of a pass where the circuit breaker tripped on ecs-svc/2 (as `deploy::plan` makes it).
    fn tripped(w: &World, rollback: bool) -> Plan {
        let mut plan = w.plan();
        plan.failed = Some("ecs-svc/2".into());
        let p = service::primary_mut(&mut plan.service).unwrap();
        p.rollout_state = Some(DeploymentRolloutState::Failed);
        p.rollout_state_reason = Some(CIRCUIT_BREAKER.into());
        p.failed_tasks = 3;
        if rollback {
            plan.rollback_to = service::rollback_target(&w.service).cloned();
        }
        plan
    }

    #[test]
    fn a_tripped_breaker_rolls_back_to_the_completed_deployment() {
        let w = World::new(vec![
            record(1, ServiceDeploymentStatus::Successful),
            record(2, ServiceDeploymentStatus::InProgress),
        ]);
        let o = w.decide(tripped(&w, true)).unwrap();
        check(
            &o,
            r#"
            record 2: ROLLBACK_IN_PROGRESS reason="ECS deployment circuit breaker: tasks failed to start." breaker=TRIGGERED rollback=Some(("1000000000000000002", Some("ECS deployment circuit breaker: tasks failed to start."))) stopped=None finished=None
            revision 1000000000000000002: web:1
            deployment ecs-svc/1000000000000000002 PRIMARY IN_PROGRESS "ECS deployment ecs-svc/1000000000000000002 in progress."
            deployment ecs-svc/2 ACTIVE FAILED "ECS deployment circuit breaker: tasks failed to start."
            deployment ecs-svc/1 ACTIVE COMPLETED "ECS deployment ecs-svc/1 in progress."
            event (service web) rolling back to deployment ecs-svc/1.
            event (service web) (deployment ecs-svc/2) deployment failed: tasks failed to start.
            start 0 on [] retry None
            "#,
        );
        let rev = &o.revision.as_ref().unwrap().revision;
        assert_eq!(
            o.records[0].value.rollback.as_ref().unwrap().service_revision_arn,
            rev.service_revision_arn,
            "the failed record points at the revision rolled back to"
        );
    }

    #[test]
    fn a_tripped_breaker_without_a_completed_deployment_stops_the_record() {
        let mut w = World::new(vec![record(2, ServiceDeploymentStatus::InProgress)]);
        w.service.deployments.as_mut().unwrap().truncate(1);
        let mut plan = tripped(&w, true);
        plan.start = 1;
        let o = w.decide(plan).unwrap();
        check(
            &o,
            r#"
            record 2: STOPPED reason="ECS deployment circuit breaker: tasks failed to start." breaker=TRIGGERED rollback=None stopped=Some(100.0) finished=Some(100.0)
            deployment ecs-svc/2 PRIMARY FAILED "ECS deployment circuit breaker: tasks failed to start."
            event (service web) (deployment ecs-svc/2) deployment failed: tasks failed to start.
            start 0 on [] retry None
            "#,
        );
    }

    #[test]
    fn a_rollback_to_a_deleted_task_definition_fails() {
        let mut w = World::new(vec![record(2, ServiceDeploymentStatus::InProgress)]);
        w.taskdefs.clear();
        let e = w.decide(tripped(&w, true)).unwrap_err();
        assert_eq!(e, EcsError::task_definition_not_found());
    }

    #[test]
    fn a_completed_deployment_finishes_its_record() {
        let w = World::new(vec![
            record(1, ServiceDeploymentStatus::Successful),
            record(2, ServiceDeploymentStatus::InProgress),
        ]);
        let mut plan = w.plan();
        plan.completed = Some("ecs-svc/2".into());
        let o = w.decide(plan).unwrap();
        check(
            &o,
            r#"
            record 2: SUCCESSFUL reason="-" breaker=MONITORING rollback=None stopped=None finished=Some(100.0)
            deployment ecs-svc/2 PRIMARY IN_PROGRESS "ECS deployment ecs-svc/2 in progress."
            deployment ecs-svc/1 ACTIVE COMPLETED "ECS deployment ecs-svc/1 in progress."
            start 0 on [] retry None
            "#,
        );
    }

    #[test]
    fn a_completed_rollback_finishes_the_failed_record() {
        let mut failed = record(2, ServiceDeploymentStatus::RollbackInProgress);
        failed.rollback = Some(Rollback {
            reason: Some(CIRCUIT_BREAKER.into()),
            started_at: Some(50.0),
            service_revision_arn: Some(scope().service_revision_arn("c1", "web", "3")),
        });
        let other = {
            let mut r = record(4, ServiceDeploymentStatus::RollbackInProgress);
            r.rollback = Some(Rollback { service_revision_arn: Some("…/9".into()), ..Default::default() });
            r
        };
        let w = World::new(vec![record(1, ServiceDeploymentStatus::Successful), failed, other]);
        let mut plan = w.plan();
        plan.completed = Some("ecs-svc/3".into());
        let o = w.decide(plan).unwrap();
        check(
            &o,
            r#"
            record 2: ROLLBACK_SUCCESSFUL reason="-" breaker=MONITORING rollback=Some(("3", Some("ECS deployment circuit breaker: tasks failed to start."))) stopped=None finished=Some(100.0)
            deployment ecs-svc/2 PRIMARY IN_PROGRESS "ECS deployment ecs-svc/2 in progress."
            deployment ecs-svc/1 ACTIVE COMPLETED "ECS deployment ecs-svc/1 in progress."
            start 0 on [] retry None
            "#,
        );
    }

    #[test]
    fn a_deployment_completed_on_its_first_pass_is_successful() {
        // UpdateService to a new task definition at desiredCount 0: the planner completes
        // the deployment on the pass that first sees its PENDING record.
        let w = World::new(vec![record(2, ServiceDeploymentStatus::Pending)]);
        let mut plan = w.plan();
        plan.completed = Some("ecs-svc/2".into());
        let o = w.decide(plan).unwrap();
        assert_eq!(o.records.len(), 1);
        assert_eq!(o.records[0].value.status, Some(ServiceDeploymentStatus::Successful));
        assert_eq!(o.records[0].value.finished_at, Some(NOW));
    }

    #[test]
    fn a_pending_record_goes_in_progress() {
        let w = World::new(vec![
            record(1, ServiceDeploymentStatus::Successful),
            record(2, ServiceDeploymentStatus::Pending),
        ]);
        let mut plan = w.plan();
        plan.start = 1;
        plan.retry_at = Some(110.0);
        let o = w.decide(plan).unwrap();
        check(
            &o,
            r#"
            record 2: IN_PROGRESS reason="-" breaker=MONITORING rollback=None stopped=None finished=None
            deployment ecs-svc/2 PRIMARY IN_PROGRESS "ECS deployment ecs-svc/2 in progress."
            deployment ecs-svc/1 ACTIVE COMPLETED "ECS deployment ecs-svc/1 in progress."
            start 1 on [] retry Some(110.0)
            "#,
        );
    }

    #[test]
    fn stops_ask_tasks_to_stop_and_stop_unclaimed_ones_at_once() {
        let mut w = World::new(vec![]);
        let mut already = task("claimed-c", "ecs-svc/1", "RUNNING");
        task::request_stop(&mut already, TaskStopCode::UserInitiated, "by hand");
        w.tasks = vec![task("claimed-a", "ecs-svc/1", "RUNNING"), task("b", "ecs-svc/1", "PROVISIONING"), already];
        let mut plan = w.plan();
        plan.stop = w.tasks.iter().map(|t| stop(t, "Scaling activity initiated by (deployment ecs-svc/2)")).collect();
        plan.stop.push(Stop { task_arn: "arn:unknown".into(), ..plan.stop[0].clone() });
        let o = w.decide(plan).unwrap();
        check(
            &o,
            r#"
            stop claimed-a: RUNNING desired=STOPPED code=ServiceSchedulerInitiated reason="Scaling activity initiated by (deployment ecs-svc/2)"
            stop b: STOPPED desired=STOPPED code=ServiceSchedulerInitiated reason="Scaling activity initiated by (deployment ecs-svc/2)"
            deployment ecs-svc/2 PRIMARY IN_PROGRESS "ECS deployment ecs-svc/2 in progress."
            deployment ecs-svc/1 ACTIVE COMPLETED "ECS deployment ecs-svc/1 in progress."
            event (service web) has stopped 2 running tasks: (task claimed-a) (task b).
            start 0 on [] retry None
            "#,
        );
        assert_eq!(o.stops.iter().map(|s| s.index).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(o.stops[1].value.stopped_at, Some(NOW));
    }

    #[test]
    fn repeated_failures_and_placement_messages_are_not_repeated() {
        let mut w = World::new(vec![record(2, ServiceDeploymentStatus::InProgress)]);
        w.service.deployments.as_mut().unwrap().truncate(1);
        let o = w.decide(tripped(&w, false)).unwrap();
        w.apply(&o);
        // The next pass sees the deployment failed again: no second event, the record as it is.
        let again = w.decide(tripped(&w, false)).unwrap();
        assert_eq!(again.service.events, o.service.events);
        assert!(again.records.is_empty(), "{:?}", again.records);

        let mut ids = SeqIds::default();
        let mut s = svc();
        let failures =
            vec![Failure { arn: Some("arn:ci/abc".into()), reason: Some("RESOURCE:CPU".into()), detail: None }];
        record_starts(&mut s, &Placed::Failed(failures.clone()), &mut ids, NOW);
        record_starts(&mut s, &Placed::Failed(failures.clone()), &mut ids, NOW + 1.0);
        assert_eq!(s.events.as_ref().unwrap().len(), 1, "the same placement failure is reported once");
        record_starts(&mut s, &Placed::Tasks(vec![]), &mut ids, NOW);
        assert_eq!(s.events.as_ref().unwrap().len(), 1, "nothing started, nothing said");
        record_starts(&mut s, &Placed::Tasks(vec!["t1".into(), "t2".into()]), &mut ids, NOW);
        record_starts(&mut s, &Placed::Failed(failures), &mut ids, NOW);
        let messages: Vec<&str> = s.events.iter().flatten().filter_map(|e| e.message.as_deref()).collect();
        assert_eq!(messages.len(), 3, "a failure after a start is reported again");
        assert_eq!(messages[1], "(service web) has started 2 tasks: (task t1) (task t2).");
        record_task_set_starts(&mut s, "ecs-svc/7", &Placed::Tasks(vec!["t3".into()]), &mut ids, NOW);
        assert_eq!(
            s.events.as_ref().unwrap()[0].message.as_deref(),
            Some("(service web, taskSet ecs-svc/7) has started 1 tasks: (task t3).")
        );
    }

    #[test]
    fn planner_events_get_ids() {
        let w = World::new(vec![]);
        let mut plan = w.plan();
        service::push_event(
            &mut plan.service,
            ServiceEvent {
                id: None,
                created_at: Some(NOW),
                message: Some("(service web) has reached a steady state.".into()),
            },
        );
        let o = w.decide(plan).unwrap();
        assert_eq!(o.service.events.unwrap()[0].id.as_deref(), Some("00000000-0000-4000-8000-000000000001"));
    }

    #[test]
    fn daemon_starts_pass_through_unless_failing() {
        let w = World::new(vec![]);
        let mut plan = w.plan();
        plan.start_on = vec!["ci-a".into()];
        assert_eq!(w.decide(plan.clone()).unwrap().start_on, vec!["ci-a".to_string()]);
        plan.failed = Some("ecs-svc/2".into());
        assert!(w.decide(plan).unwrap().start_on.is_empty());
    }

    #[test]
    fn placement_messages() {
        let f = |arn: &str, reason: &str| Failure { arn: Some(arn.into()), reason: Some(reason.into()), detail: None };
        let base =
            "(service web) was unable to place a task because no container instance met all of its requirements.";
        assert_eq!(
            placement_message("web", &[]),
            format!("{base} Reason: No Container Instances were found in your cluster.")
        );
        assert_eq!(
            placement_message("web", &[f("arn:x/ci/1", "AGENT"), f("arn:x/ci/2", "RESOURCE:MEMORY")]),
            format!("{base} The closest matching (container-instance 2) has insufficient memory available. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.")
        );
        assert_eq!(
            placement_message("web", &[f("arn:x/ci/1", "RESOURCE:PORTS")]),
            format!("{base} The closest matching (container-instance 1) is already using a port required by your task. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.")
        );
        assert_eq!(placement_message("web", &[f("arn:x/ci/1", "AGENT")]), format!("{base} Reason: AGENT."));
    }
}
