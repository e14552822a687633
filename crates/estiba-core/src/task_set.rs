//! Task sets: the deployments of a service whose `deploymentController` is EXTERNAL, made and
//! scaled by another system through CreateTaskSet, UpdateTaskSet, UpdateServicePrimaryTaskSet
//! and DeleteTaskSet, and what the scheduler keeps running for each ([`plan`]).
//!
//! A task set's id is `ecs-svc/<19 digits>` and its ARN
//! `arn:aws:ecs:<region>:<account>:task-set/<cluster>/<service>/<id>`. Its tasks are in the
//! service's group and `startedBy` its id, as ECS does. It keeps
//! `computedDesiredCount = ceil(scale% × service desiredCount)` tasks ([`computed_desired`]);
//! a DRAINING one (DeleteTaskSet) none, and it goes away once its tasks have stopped. A new
//! task set is ACTIVE; UpdateServicePrimaryTaskSet makes one PRIMARY ([`set_primary`]), and the
//! service then shows its task definition, launch type, network configuration and load
//! balancers.

use estiba_api::ecs::{
    Deployment, HealthStatus, LaunchType, Scale, ScaleUnit, Service, StabilityStatus, Task, TaskDefinition, TaskSet,
    TaskStopCode,
};

use crate::arn::Scope;
use crate::deploy::{LbHealth, Stop};
use crate::error::Result;
use crate::ids::{Ids, Now};
use crate::task::{self, Launch, Status};
use crate::{bail, service, EcsError};

/// A task set's statuses are a deployment's.
pub use crate::service::{ACTIVE, DRAINING, PRIMARY};
/// ECS refuses a sixth task set on a service.
pub const MAX_PER_SERVICE: usize = 5;

pub fn status(ts: &TaskSet) -> &str {
    ts.status.as_deref().unwrap_or(ACTIVE)
}

pub fn id(ts: &TaskSet) -> &str {
    ts.id.as_deref().unwrap_or("")
}

/// The N of `ecs-svc/<N>` (the last part of a task set's key).
pub fn number(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// A task set reference (`ecs-svc/<N>` or its ARN) → the cluster and service its ARN names,
/// and its id.
pub fn parse_ref(reference: &str) -> Option<(Option<(&str, &str)>, &str)> {
    if !reference.starts_with("arn:") {
        let n = reference.strip_prefix("ecs-svc/")?;
        return (!n.is_empty() && !n.contains('/')).then_some((None, reference));
    }
    let a = crate::arn::Arn::parse(reference)?;
    if a.kind != "task-set" {
        return None;
    }
    let mut p = a.path.splitn(3, '/');
    let (cluster, svc, id) = (p.next()?, p.next()?, p.next()?);
    let n = id.strip_prefix("ecs-svc/")?;
    (!n.is_empty() && !n.contains('/')).then_some((Some((cluster, svc)), id))
}

/// TaskSetNotFoundException.
pub fn not_found() -> EcsError {
    EcsError::new(estiba_api::ecs::ErrorCode::TaskSetNotFoundException, "The specified task set does not exist.")
}

/// What ECS answers a task set call on a service without the EXTERNAL deployment controller.
pub fn not_external() -> EcsError {
    EcsError::invalid(
        "Amazon ECS only supports task set management on services configured to use external deployment controllers.",
    )
}

/// Task set operations need an ACTIVE service with the EXTERNAL deployment controller.
pub fn require_external(svc: &Service) -> Result<()> {
    if !service::is_external(svc) {
        return Err(not_external());
    }
    if service::status(svc) != service::ACTIVE {
        return Err(EcsError::service_not_active());
    }
    Ok(())
}

/// A scale as ECS keeps it: a percentage from 0 to 100 (PERCENT when no unit is given).
pub fn check_scale(scale: &Scale) -> Result<Scale> {
    if !scale.value.is_finite() || !(0.0..=100.0).contains(&scale.value) {
        bail!(invalid, "The scale value must be between 0 and 100, got {}.", scale.value);
    }
    Ok(Scale { value: scale.value, unit: Some(scale.unit.unwrap_or(ScaleUnit::Percent)) })
}

/// `ceil(scale% × desiredCount)`: 1.2 tasks are 2.
pub fn computed_desired(scale: Option<&Scale>, desired: i32) -> i32 {
    let pct = scale.map_or(100.0, |s| s.value);
    let exact = pct * desired.max(0) as f64 / 100.0;
    // A hair below the next integer is that integer (100 × 0.07 is 7.000000000000001).
    (exact - 1e-9).ceil().max(0.0) as i32
}

/// How many tasks the task set keeps: none while it drains or its service is not ACTIVE.
pub fn desired(ts: &TaskSet, svc: &Service) -> i32 {
    if status(ts) == DRAINING || service::status(svc) != service::ACTIVE {
        0
    } else {
        computed_desired(ts.scale.as_ref(), svc.desired_count)
    }
}

/// What CreateTaskSet asks for, resolved by the handler (the task definition, the launch).
pub struct NewTaskSet<'a> {
    pub req: &'a estiba_api::ecs::CreateTaskSetRequest,
    pub td: &'a TaskDefinition,
    pub launch: Launch,
    /// The service's task sets that exist (not yet gone).
    pub existing: usize,
}

/// Validates CreateTaskSet and builds the task set (ACTIVE, STABILIZING).
pub fn create(
    scope: &Scope,
    cluster: &str,
    svc: &Service,
    n: NewTaskSet,
    ids: &mut dyn Ids,
    now: Now,
) -> Result<TaskSet> {
    let NewTaskSet { req, td, launch, existing } = n;
    require_external(svc)?;
    if existing >= MAX_PER_SERVICE {
        bail!(
            invalid,
            "{existing} deployments exist on the service. Unable to create new TaskSet since this exceeds the maximum limit."
        );
    }
    let lbs = req.load_balancers.clone().unwrap_or_default();
    if lbs.len() > 1 {
        bail!(invalid, "A task set can have only one load balancer target group, got {}.", lbs.len());
    }
    service::validate_load_balancers(&lbs, td)?;
    let registries = req.service_registries.clone().unwrap_or_default();
    if registries.len() > 1 {
        bail!(invalid, "A task set can have only one service registry, got {}.", registries.len());
    }
    task::check_platform_version(launch.launch_type, req.platform_version.as_deref())?;
    task::validate(td, launch.launch_type, req.network_configuration.as_ref(), None, None, None)?;
    if let Some(tags) = &req.tags {
        crate::tags::validate(tags)?;
    }
    let scale = check_scale(req.scale.as_ref().unwrap_or(&Scale { value: 100.0, unit: Some(ScaleUnit::Percent) }))?;
    let id = format!("ecs-svc/{}", ids.deployment_number());
    let fargate = launch.launch_type == LaunchType::Fargate;
    let strategy = req.capacity_provider_strategy.clone().filter(|s| !s.is_empty());
    Ok(TaskSet {
        task_set_arn: Some(scope.task_set_arn(cluster, service::name(svc), &id)),
        id: Some(id),
        service_arn: svc.service_arn.clone(),
        cluster_arn: Some(scope.cluster_arn(cluster)),
        external_id: req.external_id.clone(),
        status: Some(ACTIVE.into()),
        task_definition: td.task_definition_arn.clone(),
        computed_desired_count: computed_desired(Some(&scale), svc.desired_count),
        created_at: Some(now),
        updated_at: Some(now),
        launch_type: strategy.is_none().then_some(launch.launch_type),
        capacity_provider_strategy: strategy,
        platform_version: fargate.then(|| {
            req.platform_version
                .clone()
                .filter(|p| p != "LATEST")
                .unwrap_or_else(|| task::FARGATE_PLATFORM_VERSION.into())
        }),
        platform_family: fargate.then(|| "Linux".into()),
        network_configuration: req.network_configuration.clone(),
        load_balancers: Some(lbs),
        service_registries: Some(registries),
        scale: Some(scale),
        stability_status: Some(StabilityStatus::Stabilizing),
        stability_status_at: Some(now),
        ..Default::default()
    })
}

/// UpdateTaskSet: a new scale.
pub fn update_scale(ts: &mut TaskSet, scale: &Scale, svc: &Service, now: Now) -> Result<()> {
    require_external(svc)?;
    if status(ts) == DRAINING {
        bail!(invalid, "The task set {} is DRAINING and cannot be updated.", id(ts));
    }
    let scale = check_scale(scale)?;
    ts.computed_desired_count = computed_desired(Some(&scale), svc.desired_count);
    ts.scale = Some(scale);
    ts.updated_at = Some(now);
    Ok(())
}

/// UpdateServicePrimaryTaskSet: `sets` are the service's task sets; the one with `id` becomes
/// PRIMARY, the former primary ACTIVE, and the service takes the new primary's task
/// definition, launch, network configuration, load balancers and service registries.
pub fn set_primary(svc: &mut Service, sets: &mut [TaskSet], id_: &str, now: Now) -> Result<usize> {
    require_external(svc)?;
    let Some(i) = sets.iter().position(|t| id(t) == id_) else { return Err(not_found()) };
    if status(&sets[i]) == DRAINING {
        bail!(invalid, "The task set {id_} is DRAINING and cannot become the primary task set.");
    }
    for (j, t) in sets.iter_mut().enumerate() {
        let wanted = if j == i {
            PRIMARY
        } else if status(t) == PRIMARY {
            ACTIVE
        } else {
            continue;
        };
        if status(t) != wanted {
            t.status = Some(wanted.into());
            t.updated_at = Some(now);
        }
    }
    let p = &sets[i];
    svc.task_definition = p.task_definition.clone();
    svc.launch_type = p.launch_type;
    svc.capacity_provider_strategy = p.capacity_provider_strategy.clone();
    svc.platform_version = p.platform_version.clone();
    svc.platform_family = p.platform_family.clone();
    svc.network_configuration = p.network_configuration.clone();
    svc.load_balancers = p.load_balancers.clone();
    svc.service_registries = p.service_registries.clone();
    Ok(i)
}

/// DeleteTaskSet: the task set drains (its tasks stop, their targets deregistered first). The
/// PRIMARY one only with `force`.
pub fn delete(ts: &mut TaskSet, svc: &Service, force: bool, now: Now) -> Result<()> {
    require_external(svc)?;
    if status(ts) == DRAINING {
        return Ok(());
    }
    if status(ts) == PRIMARY && !force {
        bail!(invalid, "Primary TaskSet cannot be deleted");
    }
    ts.status = Some(DRAINING.into());
    ts.computed_desired_count = 0;
    ts.stability_status = Some(StabilityStatus::Stabilizing);
    ts.stability_status_at = Some(now);
    ts.updated_at = Some(now);
    Ok(())
}

/// The task set as Describe shows it: its computed desired count from the service's desired
/// count, and its tasks' counts.
pub fn shown(ts: &TaskSet, svc: &Service, counts: service::DeploymentCounts) -> TaskSet {
    let mut t = ts.clone();
    t.computed_desired_count = desired(ts, svc);
    t.running_count = counts.running;
    t.pending_count = counts.pending;
    t
}

/// The task set as a deployment: what the scheduler's task starts read (id for `startedBy`,
/// task definition, launch, network).
pub fn as_deployment(ts: &TaskSet) -> Deployment {
    Deployment {
        id: ts.id.clone(),
        status: ts.status.clone(),
        task_definition: ts.task_definition.clone(),
        launch_type: ts.launch_type,
        capacity_provider_strategy: ts.capacity_provider_strategy.clone(),
        platform_version: ts.platform_version.clone(),
        platform_family: ts.platform_family.clone(),
        network_configuration: ts.network_configuration.clone(),
        ..Default::default()
    }
}

/// One scheduler pass for a task set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub start: usize,
    pub stop: Vec<Stop>,
    /// The task set document after the pass (its stability status).
    pub task_set: TaskSet,
    /// A DRAINING task set whose tasks have all stopped: its document goes.
    pub gone: bool,
    /// Starts held back by back-off after failures: when to look again.
    pub retry_at: Option<Now>,
}

/// What the plan asks about a task beyond its document.
pub struct Probes<'a> {
    /// Its standing in the task set's target groups.
    pub lb: &'a dyn Fn(&Task) -> LbHealth,
    /// Seconds after its start before failed health checks replace it.
    pub grace: f64,
}

/// Keeps `desired` tasks of the task set: `tasks` are those `startedBy` it, STOPPED ones
/// included. Scales out and in (those not yet running first, then the newest), replaces
/// tasks whose container or target group health checks failed after the grace period, holds
/// starts back after repeated failures (`deploy::backoff`), and sets the stability status.
pub fn plan(ts: &TaskSet, desired: i32, tasks: &[&Task], probes: &Probes, now: Now) -> Plan {
    let mut out = Plan { task_set: ts.clone(), ..Default::default() };
    let tid = id(ts).to_owned();
    let live: Vec<&Task> = tasks.iter().copied().filter(|t| task::last_status(t) != Status::Stopped).collect();
    if status(ts) == DRAINING && live.is_empty() {
        out.gone = true;
        return out;
    }
    let mut wanted: Vec<&Task> = live.iter().copied().filter(|t| !task::desired_stopped(t)).collect();
    let stop = |t: &Task, reason: String| Stop {
        task_arn: t.task_arn.clone().unwrap_or_default(),
        code: TaskStopCode::ServiceSchedulerInitiated,
        reason,
    };

    // Failed health checks, after the grace period.
    wanted.retain(|t| {
        let past_grace =
            task::last_status(t) == Status::Running && t.started_at.is_some_and(|at| now - at >= probes.grace);
        if !past_grace {
            return true;
        }
        let reason = if t.health_status == Some(HealthStatus::Unhealthy) {
            crate::deploy::HEALTH_CHECK_FAILED.to_owned()
        } else if let LbHealth::Unhealthy { target_group, .. } = (probes.lb)(t) {
            format!("{} (target-group {target_group})", crate::deploy::ELB_HEALTH_CHECK_FAILED)
        } else {
            return true;
        };
        out.stop.push(stop(t, reason));
        false
    });

    let have = wanted.len() as i32;
    if have > desired {
        let mut order = wanted.clone();
        order.sort_by_key(|t| {
            (task::last_status(t) == Status::Running, std::cmp::Reverse(t.created_at.map(|c| (c * 1000.0) as i64)))
        });
        for t in order.into_iter().take((have - desired) as usize) {
            out.stop.push(stop(t, format!("Scaling activity initiated by (deployment {tid})")));
        }
    } else if have < desired {
        match start_held_until(tasks, now) {
            Some(at) => out.retry_at = Some(at),
            None => out.start = (desired - have) as usize,
        }
    }

    let stopping: Vec<&str> = out.stop.iter().map(|s| s.task_arn.as_str()).collect();
    let steady = live.len() as i32 == desired
        && out.start == 0
        && live.iter().all(|t| {
            task::last_status(t) == Status::Running
                && !task::desired_stopped(t)
                && !stopping.contains(&t.task_arn.as_deref().unwrap_or(""))
                && t.health_status != Some(HealthStatus::Unhealthy)
                && matches!((probes.lb)(t), LbHealth::Healthy | LbHealth::NotBehind)
        });
    let stability = if steady { StabilityStatus::SteadyState } else { StabilityStatus::Stabilizing };
    if out.task_set.stability_status != Some(stability) {
        out.task_set.stability_status = Some(stability);
        out.task_set.stability_status_at = Some(now);
    }
    out
}

/// After three or more failures in a row (tasks that stopped before running or failed their
/// health checks, since the last task that started well), starts wait `deploy::backoff`.
pub fn start_held_until(tasks: &[&Task], now: Now) -> Option<Now> {
    let last_success = tasks
        .iter()
        .filter(|t| t.started_at.is_some() && !crate::deploy::is_failure(t))
        .filter_map(|t| t.started_at)
        .fold(f64::MIN, f64::max);
    let recent: Vec<Now> = tasks
        .iter()
        .filter(|t| crate::deploy::is_failure(t))
        .filter_map(|t| t.stopped_at)
        .filter(|at| *at > last_success)
        .collect();
    let wait = crate::deploy::backoff(recent.len());
    let last = recent.iter().copied().fold(f64::MIN, f64::max);
    (wait > 0.0 && now < last + wait).then_some(last + wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SeqIds;
    use estiba_api::ecs::{
        AwsVpcConfiguration, CreateServiceRequest, CreateTaskSetRequest, DeploymentController,
        DeploymentControllerType, ErrorCode, LoadBalancer, NetworkConfiguration,
    };

    const NOW: Now = 1000.0;

    use crate::testing::scope;

    fn td() -> TaskDefinition {
        crate::testing::fargate_td(1, &[80])
    }

    fn svc(desired: i32) -> Service {
        let req = CreateServiceRequest {
            service_name: "ext".into(),
            desired_count: Some(desired),
            deployment_controller: Some(DeploymentController { r#type: DeploymentControllerType::External }),
            ..Default::default()
        };
        service::create_external(&scope(), "c", &req, 1.0).unwrap()
    }

    fn req(scale: Option<f64>, lbs: Vec<LoadBalancer>) -> CreateTaskSetRequest {
        CreateTaskSetRequest {
            cluster: "c".into(),
            service: "ext".into(),
            task_definition: "web".into(),
            external_id: Some("blue".into()),
            network_configuration: Some(NetworkConfiguration {
                awsvpc_configuration: Some(AwsVpcConfiguration {
                    subnets: vec!["subnet-1".into()],
                    ..Default::default()
                }),
            }),
            load_balancers: Some(lbs),
            scale: scale.map(|value| Scale { value, unit: None }),
            ..Default::default()
        }
    }

    fn fargate() -> Launch {
        Launch { launch_type: LaunchType::Fargate, capacity_provider: None }
    }

    fn make(s: &Service, r: &CreateTaskSetRequest, existing: usize) -> Result<TaskSet> {
        let td = td();
        let n = NewTaskSet { req: r, td: &td, launch: fargate(), existing };
        create(&scope(), "c", s, n, &mut SeqIds::default(), NOW)
    }

    fn lb(port: i32) -> LoadBalancer {
        LoadBalancer {
            target_group_arn: Some("arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/blue/1".into()),
            container_name: Some("app".into()),
            container_port: Some(port),
            ..Default::default()
        }
    }

    #[test]
    fn create_builds_an_active_task_set() {
        let ts = make(&svc(3), &req(Some(50.0), vec![lb(80)]), 0).unwrap();
        let id = ts.id.clone().unwrap();
        assert!(id.starts_with("ecs-svc/") && number(&id).len() == 19, "{id}");
        assert_eq!(
            ts.task_set_arn.as_deref(),
            Some(format!("arn:aws:ecs:us-east-1:000000000000:task-set/c/ext/{id}").as_str())
        );
        assert_eq!(status(&ts), ACTIVE);
        assert_eq!(ts.computed_desired_count, 2);
        assert_eq!(ts.scale, Some(Scale { value: 50.0, unit: Some(ScaleUnit::Percent) }));
        assert_eq!(ts.stability_status, Some(StabilityStatus::Stabilizing));
        assert_eq!(ts.launch_type, Some(LaunchType::Fargate));
        assert_eq!(ts.platform_version.as_deref(), Some(task::FARGATE_PLATFORM_VERSION));
        assert_eq!(ts.external_id.as_deref(), Some("blue"));
        assert!(ts.task_definition.as_deref().unwrap().ends_with("task-definition/web:1"));
        // No scale: 100 percent.
        assert_eq!(make(&svc(3), &req(None, vec![]), 0).unwrap().computed_desired_count, 3);
    }

    #[test]
    fn create_refuses_what_ecs_refuses() {
        let e = make(&svc(1), &req(None, vec![]), 5).unwrap_err();
        assert_eq!(
            e.message,
            "5 deployments exist on the service. Unable to create new TaskSet since this exceeds the maximum limit."
        );
        let e = make(&svc(1), &req(Some(101.0), vec![]), 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParameterException);
        let e = make(&svc(1), &req(None, vec![lb(80), lb(80)]), 0).unwrap_err();
        assert!(e.message.contains("only one load balancer"), "{}", e.message);
        let e = make(&svc(1), &req(None, vec![lb(81)]), 0).unwrap_err();
        assert!(e.message.contains("did not have a container port 81"), "{}", e.message);
        let mut ecs = svc(1);
        ecs.deployment_controller = None;
        let e = make(&ecs, &req(None, vec![]), 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParameterException);
        assert!(e.message.starts_with("Amazon ECS only supports task set management"));
        let mut draining = svc(1);
        draining.status = Some(service::DRAINING.into());
        assert_eq!(make(&draining, &req(None, vec![]), 0).unwrap_err().code, ErrorCode::ServiceNotActiveException);
    }

    #[test]
    fn computed_desired_count_rounds_up() {
        let s = |v| Scale { value: v, unit: None };
        assert_eq!(computed_desired(Some(&s(40.0)), 3), 2); // 1.2
        assert_eq!(computed_desired(Some(&s(7.0)), 100), 7);
        assert_eq!(computed_desired(Some(&s(0.0)), 10), 0);
        assert_eq!(computed_desired(Some(&s(100.0)), 4), 4);
        assert_eq!(computed_desired(Some(&s(1.0)), 1), 1);
        assert_eq!(computed_desired(None, 2), 2);
    }

    #[test]
    fn primary_scale_and_delete() {
        let mut s = svc(2);
        let blue = make(&s, &req(Some(100.0), vec![lb(80)]), 0).unwrap();
        let mut green = make(&s, &req(Some(0.0), vec![]), 1).unwrap();
        green.id = Some("ecs-svc/2000000000000000000".into());
        let mut sets = vec![blue, green];
        let blue_id = sets[0].id.clone().unwrap();
        set_primary(&mut s, &mut sets, &blue_id, 2.0).unwrap();
        assert_eq!(status(&sets[0]), PRIMARY);
        assert_eq!(s.task_definition, sets[0].task_definition);
        assert_eq!(s.load_balancers.as_ref().unwrap().len(), 1);
        set_primary(&mut s, &mut sets, "ecs-svc/2000000000000000000", 3.0).unwrap();
        assert_eq!((status(&sets[0]), status(&sets[1])), (ACTIVE, PRIMARY));
        assert_eq!(s.load_balancers, Some(vec![]));
        assert_eq!(
            set_primary(&mut s, &mut sets, "ecs-svc/1", 3.0).unwrap_err().code,
            ErrorCode::TaskSetNotFoundException
        );

        update_scale(&mut sets[1], &Scale { value: 50.0, unit: None }, &s, 4.0).unwrap();
        assert_eq!(sets[1].computed_desired_count, 1);
        s.desired_count = 4;
        assert_eq!(desired(&sets[1], &s), 2);

        let e = delete(&mut sets[1], &s, false, 5.0).unwrap_err();
        assert_eq!(e.message, "Primary TaskSet cannot be deleted");
        delete(&mut sets[0], &s, false, 5.0).unwrap();
        assert_eq!(status(&sets[0]), DRAINING);
        assert_eq!(desired(&sets[0], &s), 0);
        assert!(update_scale(&mut sets[0], &Scale { value: 10.0, unit: None }, &s, 6.0).is_err());
        assert!(set_primary(&mut s, &mut sets, &blue_id, 6.0).is_err());
        delete(&mut sets[1], &s, true, 6.0).unwrap();
        assert_eq!(status(&sets[1]), DRAINING);
    }

    #[test]
    fn parse_refs() {
        assert_eq!(parse_ref("ecs-svc/123"), Some((None, "ecs-svc/123")));
        assert_eq!(
            parse_ref("arn:aws:ecs:us-east-1:000000000000:task-set/c/s/ecs-svc/123"),
            Some((Some(("c", "s")), "ecs-svc/123"))
        );
        assert_eq!(parse_ref("123"), None);
        assert_eq!(parse_ref("arn:aws:ecs:us-east-1:000000000000:service/c/s"), None);
    }

    fn task(n: u32, status: &str, created: f64) -> Task {
        Task {
            task_arn: Some(format!("arn:aws:ecs:us-east-1:000000000000:task/c/{n}")),
            last_status: Some(status.into()),
            desired_status: Some("RUNNING".into()),
            started_by: Some("ecs-svc/1".into()),
            created_at: Some(created),
            started_at: (status == "RUNNING").then_some(created),
            ..Default::default()
        }
    }

    fn set() -> TaskSet {
        TaskSet { id: Some("ecs-svc/1".into()), status: Some(ACTIVE.into()), ..Default::default() }
    }

    const NO_LB: Probes<'static> = Probes { lb: &|_| LbHealth::NotBehind, grace: 0.0 };

    #[test]
    fn plan_scales_out_and_in() {
        let ts = set();
        let p = plan(&ts, 3, &[], &NO_LB, NOW);
        assert_eq!(p.start, 3);
        assert_eq!(p.task_set.stability_status, Some(StabilityStatus::Stabilizing));

        let (a, b, c) = (task(1, "RUNNING", 1.0), task(2, "RUNNING", 2.0), task(3, "PENDING", 3.0));
        let p = plan(&ts, 1, &[&a, &b, &c], &NO_LB, NOW);
        assert_eq!(p.start, 0);
        // The pending one first, then the newest running.
        let stopped: Vec<_> = p.stop.iter().map(|s| s.task_arn.rsplit('/').next().unwrap()).collect();
        assert_eq!(stopped, ["3", "2"]);
        assert!(p.stop[0].reason.starts_with("Scaling activity initiated by (deployment ecs-svc/1)"));

        let p = plan(&ts, 2, &[&a, &b], &NO_LB, NOW);
        assert!(p.start == 0 && p.stop.is_empty());
        assert_eq!(p.task_set.stability_status, Some(StabilityStatus::SteadyState));
        assert_eq!(p.task_set.stability_status_at, Some(NOW));

        // A task not yet healthy in its target group keeps it stabilizing.
        let pending = Probes { lb: &|_| LbHealth::Pending, grace: 0.0 };
        assert_eq!(
            plan(&ts, 2, &[&a, &b], &pending, NOW).task_set.stability_status,
            Some(StabilityStatus::Stabilizing)
        );
        // An unhealthy one is replaced.
        let unhealthy = Probes {
            lb: &|t: &Task| {
                if t.task_arn.as_deref().is_some_and(|a| a.ends_with("/1")) {
                    LbHealth::Unhealthy { target_group: "tg".into(), port: 80, reason: "x".into() }
                } else {
                    LbHealth::Healthy
                }
            },
            grace: 0.0,
        };
        let p = plan(&ts, 2, &[&a, &b], &unhealthy, NOW);
        assert_eq!(p.start, 1);
        assert_eq!(p.stop.len(), 1);
        assert!(p.stop[0].reason.starts_with(crate::deploy::ELB_HEALTH_CHECK_FAILED));
    }

    #[test]
    fn draining_task_sets_stop_everything_then_go() {
        let mut ts = set();
        ts.status = Some(DRAINING.into());
        let a = task(1, "RUNNING", 1.0);
        let p = plan(&ts, 0, &[&a], &NO_LB, NOW);
        assert_eq!(p.stop.len(), 1);
        assert!(!p.gone);
        let mut stopped = a.clone();
        stopped.last_status = Some("STOPPED".into());
        assert!(plan(&ts, 0, &[&stopped], &NO_LB, NOW).gone);
    }

    #[test]
    fn repeated_failures_hold_starts_back() {
        let fail = |n: u32, at: f64| {
            let mut t = task(n, "STOPPED", at);
            t.started_at = None;
            t.stopped_at = Some(at);
            t.stop_code = Some(TaskStopCode::TaskFailedToStart);
            t
        };
        let (a, b, c) = (fail(1, 990.0), fail(2, 995.0), fail(3, 999.0));
        let p = plan(&set(), 1, &[&a, &b, &c], &NO_LB, NOW);
        assert_eq!((p.start, p.retry_at), (0, Some(1009.0)));
        let p = plan(&set(), 1, &[&a, &b], &NO_LB, NOW);
        assert_eq!(p.start, 1);
    }
}
