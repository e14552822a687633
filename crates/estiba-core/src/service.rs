//! Services: CreateService / UpdateService / DeleteService rules, deployments, and the
//! service revision and service deployment records that tools follow to a steady state.
//!
//! A deployment's id is `ecs-svc/<N>`; its service revision is
//! `arn:aws:ecs:<region>:<account>:service-revision/<cluster>/<service>/<N>` with the same N,
//! which is how clients (Terraform, the console) link `deployments[]` to
//! ListServiceDeployments / DescribeServiceDeployments.

use estiba_api::ecs::{
    CapacityProviderStrategyItem, ContainerImage, CreateServiceRequest, Deployment, DeploymentCircuitBreaker,
    DeploymentConfiguration, DeploymentController, DeploymentControllerType, DeploymentRolloutState, LaunchType,
    LoadBalancer, NetworkConfiguration, PropagateTags, SchedulingStrategy, Service, ServiceCurrentRevisionSummary,
    ServiceDeployment, ServiceDeploymentAlarms, ServiceDeploymentCircuitBreaker,
    ServiceDeploymentRollbackMonitorsStatus, ServiceDeploymentStatus, ServiceEvent, ServiceRevision,
    ServiceRevisionSummary, TaskDefinition, UpdateServiceRequest,
};

use crate::arn::Scope;
use crate::error::Result;
use crate::ids::{Ids, Now};
use crate::task::Launch;
use crate::{bail, names, placement, task, taskdef};

pub const ACTIVE: &str = "ACTIVE";
pub const DRAINING: &str = "DRAINING";
pub const INACTIVE: &str = "INACTIVE";
pub const PRIMARY: &str = "PRIMARY";
/// ECS keeps the last 100 service events.
pub const MAX_EVENTS: usize = 100;

pub fn status(s: &Service) -> &str {
    s.status.as_deref().unwrap_or(ACTIVE)
}

pub fn name(s: &Service) -> &str {
    s.service_name.as_deref().unwrap_or("")
}

/// The `group` of a service's tasks.
pub fn task_group(service_name: &str) -> String {
    format!("service:{service_name}")
}

/// The N of `ecs-svc/<N>`.
pub fn deployment_number(deployment_id: &str) -> &str {
    deployment_id.rsplit('/').next().unwrap_or(deployment_id)
}

pub fn primary(s: &Service) -> Option<&Deployment> {
    s.deployments.iter().flatten().find(|d| d.status.as_deref() == Some(PRIMARY))
}

/// The deployment a rollback returns to: the newest COMPLETED one that is not PRIMARY, else
/// the newest other one (the deployment the PRIMARY replaced, with whatever of it is still
/// running: a rollout that began before its predecessor completed still rolls back to it).
pub fn rollback_target(s: &Service) -> Option<&Deployment> {
    let others = || s.deployments.iter().flatten().filter(|d| d.status.as_deref() != Some(PRIMARY));
    others().find(|d| d.rollout_state == Some(DeploymentRolloutState::Completed)).or_else(|| others().next())
}

pub fn primary_mut(s: &mut Service) -> Option<&mut Deployment> {
    s.deployments.iter_mut().flatten().find(|d| d.status.as_deref() == Some(PRIMARY))
}

/// Deployment configuration with ECS's defaults: 100/200 for REPLICA, 0/100 for DAEMON, the
/// circuit breaker off.
pub fn deployment_configuration(
    given: Option<&DeploymentConfiguration>,
    strategy: SchedulingStrategy,
) -> Result<DeploymentConfiguration> {
    let mut c = given.cloned().unwrap_or_default();
    let (min_default, max_default) = match strategy {
        SchedulingStrategy::Replica => (100, 200),
        SchedulingStrategy::Daemon => (0, 100),
    };
    let min = *c.minimum_healthy_percent.get_or_insert(min_default);
    let max = *c.maximum_percent.get_or_insert(max_default);
    if !(0..=100).contains(&min) {
        bail!(invalid, "minimumHealthyPercent must be between 0 and 100, got {min}.");
    }
    if max < 100 && strategy == SchedulingStrategy::Replica && max <= min {
        bail!(
            invalid,
            "maximumPercent ({max}) must be greater than minimumHealthyPercent ({min}) so that tasks can be replaced."
        );
    }
    if max < min {
        bail!(invalid, "maximumPercent ({max}) must be greater than or equal to minimumHealthyPercent ({min}).");
    }
    if max > 2000 {
        bail!(invalid, "maximumPercent must be at most 2000, got {max}.");
    }
    c.deployment_circuit_breaker.get_or_insert(DeploymentCircuitBreaker { enable: false, rollback: false });
    Ok(c)
}

/// What changes between deployments: the task definition and how tasks are launched.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub task_definition: String,
    pub launch: Launch,
    pub strategy: Option<Vec<CapacityProviderStrategyItem>>,
    pub platform_version: Option<String>,
    pub network: Option<NetworkConfiguration>,
    pub load_balancers: Vec<LoadBalancer>,
}

/// A new deployment and the records that describe it.
pub struct NewDeployment {
    pub deployment: Deployment,
    pub revision: ServiceRevision,
    pub record: ServiceDeployment,
}

#[allow(clippy::too_many_arguments)]
fn new_deployment(
    scope: &Scope,
    cluster: &str,
    service: &str,
    target: &Target,
    td: &TaskDefinition,
    desired: i32,
    config: &DeploymentConfiguration,
    sources: Vec<ServiceRevisionSummary>,
    ids: &mut dyn Ids,
    now: Now,
) -> NewDeployment {
    let n = ids.deployment_number().to_string();
    let id = format!("ecs-svc/{n}");
    let revision_arn = scope.service_revision_arn(cluster, service, &n);
    let fargate = target.launch.launch_type == LaunchType::Fargate;
    let deployment = Deployment {
        id: Some(id.clone()),
        status: Some(PRIMARY.into()),
        task_definition: Some(target.task_definition.clone()),
        desired_count: desired,
        pending_count: 0,
        running_count: 0,
        failed_tasks: 0,
        created_at: Some(now),
        updated_at: Some(now),
        launch_type: target.strategy.is_none().then_some(target.launch.launch_type),
        capacity_provider_strategy: target.strategy.clone(),
        platform_version: fargate
            .then(|| target.platform_version.clone().unwrap_or_else(|| task::FARGATE_PLATFORM_VERSION.into())),
        platform_family: fargate.then(|| "Linux".into()),
        network_configuration: target.network.clone(),
        rollout_state: Some(DeploymentRolloutState::InProgress),
        rollout_state_reason: Some(format!("ECS deployment {id} in progress.")),
        ..Default::default()
    };
    let revision = ServiceRevision {
        service_revision_arn: Some(revision_arn.clone()),
        service_arn: Some(scope.service_arn(cluster, service)),
        cluster_arn: Some(scope.cluster_arn(cluster)),
        task_definition: Some(target.task_definition.clone()),
        capacity_provider_strategy: target.strategy.clone(),
        launch_type: target.strategy.is_none().then_some(target.launch.launch_type),
        platform_version: deployment.platform_version.clone(),
        platform_family: deployment.platform_family.clone(),
        load_balancers: Some(target.load_balancers.clone()),
        service_registries: Some(vec![]),
        network_configuration: target.network.clone(),
        container_images: Some(
            td.container_definitions
                .iter()
                .flatten()
                .map(|c| ContainerImage { container_name: c.name.clone(), image: c.image.clone(), image_digest: None })
                .collect(),
        ),
        guard_duty_enabled: false,
        created_at: Some(now),
        ..Default::default()
    };
    let breaker = config.deployment_circuit_breaker.as_ref().is_some_and(|b| b.enable);
    let record = ServiceDeployment {
        service_deployment_arn: Some(scope.service_deployment_arn(cluster, service, &ids.hex32()[..22])),
        service_arn: Some(scope.service_arn(cluster, service)),
        cluster_arn: Some(scope.cluster_arn(cluster)),
        created_at: Some(now),
        started_at: Some(now),
        updated_at: Some(now),
        source_service_revisions: Some(sources),
        target_service_revision: Some(ServiceRevisionSummary {
            arn: Some(revision_arn),
            requested_task_count: desired,
            ..Default::default()
        }),
        status: Some(ServiceDeploymentStatus::Pending),
        deployment_configuration: Some(config.clone()),
        deployment_circuit_breaker: Some(ServiceDeploymentCircuitBreaker {
            status: Some(if breaker {
                ServiceDeploymentRollbackMonitorsStatus::Monitoring
            } else {
                ServiceDeploymentRollbackMonitorsStatus::Disabled
            }),
            failure_count: 0,
            threshold: failure_threshold(desired),
        }),
        alarms: Some(ServiceDeploymentAlarms {
            status: Some(ServiceDeploymentRollbackMonitorsStatus::Disabled),
            ..Default::default()
        }),
        ..Default::default()
    };
    NewDeployment { deployment, revision, record }
}

/// The circuit breaker's failure threshold: half the desired count, at least 3, at most 200.
pub fn failure_threshold(desired: i32) -> i32 {
    ((desired as f64 * 0.5).ceil() as i32).clamp(3, 200)
}

pub fn event(service: &str, message: impl AsRef<str>, ids: &mut dyn Ids, now: Now) -> ServiceEvent {
    ServiceEvent {
        id: Some(ids.uuid()),
        created_at: Some(now),
        message: Some(format!("(service {service}) {}", message.as_ref())),
    }
}

/// Adds an event at the front (ECS lists newest first), keeping the last 100.
pub fn push_event(s: &mut Service, e: ServiceEvent) {
    let events = s.events.get_or_insert_with(Vec::new);
    events.insert(0, e);
    events.truncate(MAX_EVENTS);
}

pub fn validate_name(name: &str) -> Result<()> {
    if !names::valid_name(name) {
        bail!(
            invalid,
            "Service name '{}' is not valid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
            names::shown(name)
        );
    }
    Ok(())
}

/// Each `loadBalancers` entry names a container and one of its port mappings (checked before the
/// target groups themselves).
pub fn validate_load_balancers(lbs: &[LoadBalancer], td: &TaskDefinition) -> Result<()> {
    for lb in lbs {
        let (Some(cname), Some(port)) = (lb.container_name.as_deref(), lb.container_port) else {
            bail!(invalid, "A load balancer needs containerName and containerPort.");
        };
        let Some(c) = td.container_definitions.iter().flatten().find(|c| c.name.as_deref() == Some(cname)) else {
            bail!(invalid, "The container {cname} does not exist in the task definition.");
        };
        if !c.port_mappings.iter().flatten().any(|pm| pm.container_port == Some(port)) {
            bail!(invalid, "The container {cname} did not have a container port {port} defined.");
        }
        if lb.target_group_arn.is_none() && lb.load_balancer_name.is_none() {
            bail!(invalid, "A load balancer needs targetGroupArn or loadBalancerName.");
        }
    }
    Ok(())
}

/// Everything CreateService writes.
pub struct Created {
    pub service: Service,
    pub deployment: NewDeployment,
}

/// Validates CreateService and builds the service with its first deployment.
#[allow(clippy::too_many_arguments)]
pub fn create(
    scope: &Scope,
    cluster: &str,
    req: &CreateServiceRequest,
    td: &TaskDefinition,
    launch: Launch,
    desired_for_daemon: i32,
    ids: &mut dyn Ids,
    now: Now,
) -> Result<Created> {
    validate_name(&req.service_name)?;
    let controller =
        req.deployment_controller.clone().unwrap_or(DeploymentController { r#type: DeploymentControllerType::Ecs });
    if controller.r#type != DeploymentControllerType::Ecs {
        bail!(
            unsupported,
            "estiba supports the ECS and EXTERNAL deployment controllers; {} is not supported.",
            controller.r#type.as_str()
        );
    }
    let strategy = req.scheduling_strategy.unwrap_or(SchedulingStrategy::Replica);
    let desired = match strategy {
        SchedulingStrategy::Replica => match req.desired_count {
            Some(n) if n >= 0 => n,
            Some(n) => bail!(invalid, "desiredCount cannot be negative, got {n}."),
            None => {
                bail!(invalid, "desiredCount must be specified for a service with the REPLICA scheduling strategy.")
            }
        },
        SchedulingStrategy::Daemon => {
            if launch.launch_type == LaunchType::Fargate {
                bail!(invalid, "The DAEMON scheduling strategy is not supported with the FARGATE launch type.");
            }
            if req.placement_strategy.as_ref().is_some_and(|p| !p.is_empty()) {
                bail!(invalid, "Placement strategies are not supported with the DAEMON scheduling strategy.");
            }
            desired_for_daemon
        }
    };
    let config = deployment_configuration(req.deployment_configuration.as_ref(), strategy)?;
    task::check_platform_version(launch.launch_type, req.platform_version.as_deref())?;
    task::validate(td, launch.launch_type, req.network_configuration.as_ref(), None, None, None)?;
    task::check_exec_role(req.enable_execute_command, td, None, task::ExecRoleCheck::CreateService)?;
    let lbs = req.load_balancers.clone().unwrap_or_default();
    validate_load_balancers(&lbs, td)?;
    crate::traffic::check_configuration(&config, &lbs, strategy)?;
    if let Some(g) = req.health_check_grace_period_seconds {
        if !(0..=2_147_483_647).contains(&g) {
            bail!(invalid, "healthCheckGracePeriodSeconds must be between 0 and 2147483647.");
        }
    }
    placement::compile_constraints(req.placement_constraints.as_deref().unwrap_or_default())?;
    placement::validate_strategies(req.placement_strategy.as_deref().unwrap_or_default())?;
    if let Some(tags) = &req.tags {
        crate::tags::validate(tags)?;
    }
    let fargate = launch.launch_type == LaunchType::Fargate;
    let td_arn = td.task_definition_arn.clone().unwrap_or_default();
    let target = Target {
        task_definition: td_arn.clone(),
        launch: launch.clone(),
        strategy: req.capacity_provider_strategy.clone().filter(|s| !s.is_empty()),
        platform_version: req.platform_version.clone(),
        network: req.network_configuration.clone(),
        load_balancers: lbs.clone(),
    };
    let mut nd = new_deployment(scope, cluster, &req.service_name, &target, td, desired, &config, vec![], ids, now);
    nd.record.status = Some(ServiceDeploymentStatus::InProgress);
    let service = Service {
        service_arn: Some(scope.service_arn(cluster, &req.service_name)),
        service_name: Some(req.service_name.clone()),
        cluster_arn: Some(scope.cluster_arn(cluster)),
        load_balancers: Some(lbs),
        service_registries: Some(req.service_registries.clone().unwrap_or_default()),
        status: Some(ACTIVE.into()),
        desired_count: desired,
        running_count: 0,
        pending_count: 0,
        launch_type: target.strategy.is_none().then_some(launch.launch_type),
        capacity_provider_strategy: target.strategy.clone(),
        platform_version: fargate.then(|| req.platform_version.clone().unwrap_or_else(|| "LATEST".into())),
        platform_family: fargate.then(|| "Linux".into()),
        task_definition: Some(td_arn),
        deployment_configuration: Some(config),
        deployments: Some(vec![nd.deployment.clone()]),
        role_arn: req.role.clone(),
        events: Some(vec![]),
        created_at: Some(now),
        placement_constraints: Some(req.placement_constraints.clone().unwrap_or_default()),
        placement_strategy: Some(req.placement_strategy.clone().unwrap_or_default()),
        network_configuration: req.network_configuration.clone(),
        health_check_grace_period_seconds: req.health_check_grace_period_seconds,
        scheduling_strategy: Some(strategy),
        deployment_controller: Some(controller),
        tags: None,
        created_by: Some(scope.root_arn()),
        enable_ecs_managed_tags: req.enable_ecs_managed_tags,
        propagate_tags: Some(req.propagate_tags.unwrap_or(PropagateTags::None)),
        enable_execute_command: req.enable_execute_command,
        availability_zone_rebalancing: req.availability_zone_rebalancing,
        current_service_deployment: nd.record.service_deployment_arn.clone(),
        current_service_revisions: Some(vec![ServiceCurrentRevisionSummary {
            arn: nd.revision.service_revision_arn.clone(),
            requested_task_count: desired,
            running_task_count: 0,
            pending_task_count: 0,
        }]),
        ..Default::default()
    };
    Ok(Created { service, deployment: nd })
}

/// Whether the service's deployments are made by another system through task sets
/// (`deploymentController` EXTERNAL): the scheduler starts nothing for it.
pub fn is_external(svc: &Service) -> bool {
    svc.deployment_controller.as_ref().is_some_and(|c| c.r#type == DeploymentControllerType::External)
}

/// Validates CreateService for the EXTERNAL deployment controller and builds the service: no
/// task definition is needed and no deployment is made (task sets make them).
pub fn create_external(scope: &Scope, cluster: &str, req: &CreateServiceRequest, now: Now) -> Result<Service> {
    validate_name(&req.service_name)?;
    let strategy = req.scheduling_strategy.unwrap_or(SchedulingStrategy::Replica);
    if strategy != SchedulingStrategy::Replica {
        bail!(invalid, "The EXTERNAL deployment controller supports the REPLICA scheduling strategy only.");
    }
    let desired = match req.desired_count {
        Some(n) if n >= 0 => n,
        Some(n) => bail!(invalid, "desiredCount cannot be negative, got {n}."),
        None => bail!(invalid, "desiredCount must be specified for a service with the REPLICA scheduling strategy."),
    };
    let config = deployment_configuration(req.deployment_configuration.as_ref(), strategy)?;
    placement::compile_constraints(req.placement_constraints.as_deref().unwrap_or_default())?;
    placement::validate_strategies(req.placement_strategy.as_deref().unwrap_or_default())?;
    if let Some(tags) = &req.tags {
        crate::tags::validate(tags)?;
    }
    Ok(Service {
        service_arn: Some(scope.service_arn(cluster, &req.service_name)),
        service_name: Some(req.service_name.clone()),
        cluster_arn: Some(scope.cluster_arn(cluster)),
        load_balancers: Some(req.load_balancers.clone().unwrap_or_default()),
        service_registries: Some(req.service_registries.clone().unwrap_or_default()),
        status: Some(ACTIVE.into()),
        desired_count: desired,
        launch_type: req.launch_type,
        task_definition: req.task_definition.clone(),
        deployment_configuration: Some(config),
        task_sets: Some(vec![]),
        deployments: Some(vec![]),
        role_arn: req.role.clone(),
        events: Some(vec![]),
        created_at: Some(now),
        placement_constraints: Some(req.placement_constraints.clone().unwrap_or_default()),
        placement_strategy: Some(req.placement_strategy.clone().unwrap_or_default()),
        network_configuration: req.network_configuration.clone(),
        health_check_grace_period_seconds: req.health_check_grace_period_seconds,
        scheduling_strategy: Some(strategy),
        deployment_controller: req.deployment_controller.clone(),
        created_by: Some(scope.root_arn()),
        enable_ecs_managed_tags: req.enable_ecs_managed_tags,
        propagate_tags: Some(req.propagate_tags.unwrap_or(PropagateTags::None)),
        enable_execute_command: req.enable_execute_command,
        ..Default::default()
    })
}

/// UpdateService on an EXTERNAL service: only what ECS lets such a service change (desired
/// count, placement, health check grace period, tags options); the rest belongs to task sets.
pub fn update_external(svc: &mut Service, req: &UpdateServiceRequest) -> Result<()> {
    if status(svc) != ACTIVE {
        return Err(crate::EcsError::service_not_active());
    }
    let task_set_member = [
        (req.task_definition.is_some(), "taskDefinition"),
        (req.network_configuration.is_some(), "networkConfiguration"),
        (req.platform_version.is_some(), "platformVersion"),
        (req.load_balancers.is_some(), "loadBalancers"),
        (req.capacity_provider_strategy.is_some(), "capacityProviderStrategy"),
        (req.service_registries.is_some(), "serviceRegistries"),
        (req.force_new_deployment, "forceNewDeployment"),
    ];
    if let Some((_, m)) = task_set_member.iter().find(|(given, _)| *given) {
        bail!(
            invalid,
            "{m} cannot be updated for a service that uses the EXTERNAL deployment controller: create a new task set instead."
        );
    }
    if let Some(n) = req.desired_count {
        if n < 0 {
            bail!(invalid, "desiredCount cannot be negative, got {n}.");
        }
        svc.desired_count = n;
    }
    update_settings(svc, req)
}

/// What UpdateService changes on every service without a new deployment: placement, the
/// health check grace period and the tags options.
fn update_settings(svc: &mut Service, req: &UpdateServiceRequest) -> Result<()> {
    if let Some(pc) = &req.placement_constraints {
        placement::compile_constraints(pc)?;
        svc.placement_constraints = Some(pc.clone());
    }
    if let Some(ps) = &req.placement_strategy {
        placement::validate_strategies(ps)?;
        svc.placement_strategy = Some(ps.clone());
    }
    if let Some(g) = req.health_check_grace_period_seconds {
        svc.health_check_grace_period_seconds = Some(g);
    }
    if let Some(e) = req.enable_ecs_managed_tags {
        svc.enable_ecs_managed_tags = e;
    }
    if let Some(p) = req.propagate_tags {
        svc.propagate_tags = Some(p);
    }
    Ok(())
}

/// What UpdateService changed.
pub struct Updated {
    /// A new deployment, when the update asks for one.
    pub deployment: Option<NewDeployment>,
}

/// Does the update ask for a new deployment?
pub fn needs_new_deployment(svc: &Service, req: &UpdateServiceRequest, new_td_arn: Option<&str>) -> bool {
    req.force_new_deployment
        || new_td_arn.is_some_and(|a| Some(a) != svc.task_definition.as_deref())
        || req.network_configuration.as_ref().is_some_and(|n| Some(n) != svc.network_configuration.as_ref())
        || req.capacity_provider_strategy.as_ref().is_some_and(|c| Some(c) != svc.capacity_provider_strategy.as_ref())
        || req.platform_version.as_ref().is_some_and(|p| Some(p) != svc.platform_version.as_ref())
        || req.load_balancers.as_ref().is_some_and(|l| Some(l) != svc.load_balancers.as_ref())
        || req.service_registries.as_ref().is_some_and(|r| Some(r) != svc.service_registries.as_ref())
}

/// Applies UpdateService to `svc`. `td` is the task definition the service will run (the new
/// one if the request names one, else the current one); `launch` how its tasks launch.
#[allow(clippy::too_many_arguments)]
pub fn update(
    scope: &Scope,
    cluster: &str,
    svc: &mut Service,
    req: &UpdateServiceRequest,
    td: &TaskDefinition,
    launch: Launch,
    ids: &mut dyn Ids,
    now: Now,
) -> Result<Updated> {
    if status(svc) != ACTIVE {
        return Err(crate::EcsError::service_not_active());
    }
    let strategy = svc.scheduling_strategy.unwrap_or(SchedulingStrategy::Replica);
    if let Some(n) = req.desired_count {
        if n < 0 {
            bail!(invalid, "desiredCount cannot be negative, got {n}.");
        }
        if strategy == SchedulingStrategy::Replica {
            svc.desired_count = n;
            if let Some(p) = primary_mut(svc) {
                p.desired_count = n;
                p.updated_at = Some(now);
            }
        }
    }
    if let Some(c) = &req.deployment_configuration {
        let mut merged = svc.deployment_configuration.clone().unwrap_or_default();
        // What the request leaves out stays as it is.
        merged.maximum_percent = c.maximum_percent.or(merged.maximum_percent);
        merged.minimum_healthy_percent = c.minimum_healthy_percent.or(merged.minimum_healthy_percent);
        merged.deployment_circuit_breaker = c.deployment_circuit_breaker.clone().or(merged.deployment_circuit_breaker);
        merged.alarms = c.alarms.clone().or(merged.alarms);
        merged.strategy = c.strategy.or(merged.strategy);
        merged.bake_time_in_minutes = c.bake_time_in_minutes.or(merged.bake_time_in_minutes);
        merged.linear_configuration = c.linear_configuration.clone().or(merged.linear_configuration);
        merged.canary_configuration = c.canary_configuration.clone().or(merged.canary_configuration);
        merged.lifecycle_hooks = c.lifecycle_hooks.clone().or(merged.lifecycle_hooks);
        svc.deployment_configuration = Some(deployment_configuration(Some(&merged), strategy)?);
    }
    let network = req.network_configuration.clone().or_else(|| svc.network_configuration.clone());
    let new_td = td.task_definition_arn.clone().unwrap_or_default();
    let new = needs_new_deployment(svc, req, Some(&new_td));
    if new {
        task::validate(td, launch.launch_type, network.as_ref(), None, None, None)?;
    }
    let lbs = req.load_balancers.clone().or_else(|| svc.load_balancers.clone()).unwrap_or_default();
    validate_load_balancers(&lbs, td)?;
    crate::traffic::check_configuration(&svc.deployment_configuration.clone().unwrap_or_default(), &lbs, strategy)?;
    task::check_exec_role(req.enable_execute_command.unwrap_or(false), td, None, task::ExecRoleCheck::UpdateService)?;
    update_settings(svc, req)?;
    if let Some(e) = req.enable_execute_command {
        svc.enable_execute_command = e;
    }
    if let Some(r) = req.availability_zone_rebalancing {
        svc.availability_zone_rebalancing = Some(r);
    }
    if !new {
        return Ok(Updated { deployment: None });
    }
    let fargate = launch.launch_type == LaunchType::Fargate;
    let strategy_items = req
        .capacity_provider_strategy
        .clone()
        .or_else(|| svc.capacity_provider_strategy.clone())
        .filter(|s| !s.is_empty());
    let platform = req.platform_version.clone().or_else(|| svc.platform_version.clone()).filter(|p| p != "LATEST");
    let target = Target {
        task_definition: new_td.clone(),
        launch: launch.clone(),
        strategy: strategy_items.clone(),
        platform_version: platform,
        network: network.clone(),
        load_balancers: lbs.clone(),
    };
    let sources: Vec<ServiceRevisionSummary> = svc
        .current_service_revisions
        .iter()
        .flatten()
        .map(|r| ServiceRevisionSummary {
            arn: r.arn.clone(),
            requested_task_count: r.requested_task_count,
            running_task_count: r.running_task_count,
            pending_task_count: r.pending_task_count,
            ..Default::default()
        })
        .collect();
    let config = svc.deployment_configuration.clone().unwrap_or_default();
    let nd = new_deployment(scope, cluster, name(svc), &target, td, svc.desired_count, &config, sources, ids, now);
    install(svc, &nd, &target, now);
    if fargate {
        if let Some(p) = &req.platform_version {
            svc.platform_version = Some(p.clone());
        }
    }
    if let Some(r) = &req.service_registries {
        svc.service_registries = Some(r.clone());
    }
    svc.current_service_deployment = nd.record.service_deployment_arn.clone();
    Ok(Updated { deployment: Some(nd) })
}

/// Makes `nd` the PRIMARY deployment: the current one becomes ACTIVE and drains.
fn install(svc: &mut Service, nd: &NewDeployment, target: &Target, now: Now) {
    for d in svc.deployments.iter_mut().flatten() {
        if d.status.as_deref() == Some(PRIMARY) {
            d.status = Some(ACTIVE.into());
            d.updated_at = Some(now);
        }
    }
    svc.deployments.get_or_insert_with(Vec::new).insert(0, nd.deployment.clone());
    svc.task_definition = Some(target.task_definition.clone());
    svc.network_configuration = target.network.clone();
    svc.load_balancers = Some(target.load_balancers.clone());
    svc.capacity_provider_strategy = target.strategy.clone();
    svc.launch_type = target.strategy.is_none().then_some(target.launch.launch_type);
    if target.launch.launch_type == LaunchType::Fargate {
        svc.platform_version.get_or_insert_with(|| "LATEST".into());
        svc.platform_family = Some("Linux".into());
    } else {
        svc.platform_version = None;
        svc.platform_family = None;
    }
    svc.current_service_revisions.get_or_insert_with(Vec::new).insert(
        0,
        ServiceCurrentRevisionSummary {
            arn: nd.revision.service_revision_arn.clone(),
            requested_task_count: svc.desired_count,
            running_task_count: 0,
            pending_task_count: 0,
        },
    );
}

/// A new PRIMARY deployment that returns the service to `to`, a deployment that completed
/// before (circuit breaker rollback, StopServiceDeployment ROLLBACK). The failed
/// deployment's record carries the rollback, so the returned record is not stored.
pub fn rollback(
    scope: &Scope,
    cluster: &str,
    svc: &mut Service,
    to: &Deployment,
    td: &TaskDefinition,
    ids: &mut dyn Ids,
    now: Now,
) -> NewDeployment {
    let launch_type = to.launch_type.unwrap_or_else(|| {
        if to.capacity_provider_strategy.iter().flatten().any(|i| crate::capacity::is_fargate(&i.capacity_provider)) {
            LaunchType::Fargate
        } else {
            LaunchType::Ec2
        }
    });
    let target = Target {
        task_definition: to.task_definition.clone().unwrap_or_default(),
        launch: Launch { launch_type, capacity_provider: None },
        strategy: to.capacity_provider_strategy.clone(),
        platform_version: to.platform_version.clone(),
        network: to.network_configuration.clone(),
        load_balancers: svc.load_balancers.clone().unwrap_or_default(),
    };
    let config = svc.deployment_configuration.clone().unwrap_or_default();
    let mut nd = new_deployment(scope, cluster, name(svc), &target, td, svc.desired_count, &config, vec![], ids, now);
    nd.deployment.service_connect_configuration = to.service_connect_configuration.clone();
    nd.deployment.service_connect_resources = to.service_connect_resources.clone();
    nd.revision.service_connect_configuration = to.service_connect_configuration.clone();
    install(svc, &nd, &target, now);
    nd
}

/// DeleteService: refuses a REPLICA service scaled above 0 unless forced; otherwise the
/// service drains (its tasks are stopped by the controller) and then becomes INACTIVE.
pub fn delete(svc: &mut Service, force: bool, now: Now) -> Result<()> {
    if status(svc) != ACTIVE {
        return Err(crate::EcsError::service_not_active());
    }
    let replica = svc.scheduling_strategy.unwrap_or(SchedulingStrategy::Replica) == SchedulingStrategy::Replica;
    if replica && svc.desired_count > 0 && !force {
        bail!(invalid, "The service cannot be stopped while it is scaled above 0.");
    }
    svc.desired_count = 0;
    svc.status = Some(DRAINING.into());
    for d in svc.deployments.iter_mut().flatten() {
        d.desired_count = 0;
        d.updated_at = Some(now);
    }
    Ok(())
}

/// Task counts of one deployment, derived from its tasks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeploymentCounts {
    pub running: i32,
    pub pending: i32,
}

/// The service as Describe shows it, with counts derived from its tasks.
pub fn with_counts(svc: &Service, counts: impl Fn(&str) -> DeploymentCounts) -> Service {
    let mut s = svc.clone();
    let (mut running, mut pending) = (0, 0);
    for d in s.deployments.iter_mut().flatten() {
        let c = counts(d.id.as_deref().unwrap_or(""));
        d.running_count = c.running;
        d.pending_count = c.pending;
        running += c.running;
        pending += c.pending;
    }
    s.running_count = running;
    s.pending_count = pending;
    if let Some(revs) = &mut s.current_service_revisions {
        for r in revs.iter_mut() {
            let n = r.arn.as_deref().and_then(|a| a.rsplit('/').next()).unwrap_or("");
            let c = counts(&format!("ecs-svc/{n}"));
            r.running_task_count = c.running;
            r.pending_task_count = c.pending;
        }
    }
    s
}

/// The launch type that describes a service's tasks for cluster statistics.
pub fn is_fargate(svc: &Service) -> bool {
    svc.launch_type == Some(LaunchType::Fargate)
        || svc.capacity_provider_strategy.iter().flatten().any(|i| crate::capacity::is_fargate(&i.capacity_provider))
}

/// Requires a task definition to exist for the service's tasks.
pub fn network_mode_is_awsvpc(td: &TaskDefinition) -> bool {
    taskdef::network_mode(td) == estiba_api::ecs::NetworkMode::Awsvpc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SeqIds;
    use estiba_api::ecs::AwsVpcConfiguration;

    use crate::testing::scope;

    fn td(rev: i32) -> TaskDefinition {
        crate::testing::fargate_td(rev, &[])
    }

    #[test]
    fn external_services_have_no_deployment_and_refuse_task_set_changes() {
        let req = CreateServiceRequest {
            service_name: "ext".into(),
            desired_count: Some(2),
            deployment_controller: Some(DeploymentController { r#type: DeploymentControllerType::External }),
            ..Default::default()
        };
        let mut svc = create_external(&scope(), "c", &req, 1.0).unwrap();
        assert!(is_external(&svc) && primary(&svc).is_none());
        assert_eq!(svc.task_sets, Some(vec![]));
        let e = update_external(
            &mut svc,
            &UpdateServiceRequest { task_definition: Some("web".into()), ..Default::default() },
        )
        .unwrap_err();
        assert!(e.message.starts_with("taskDefinition cannot be updated"), "{}", e.message);
        update_external(&mut svc, &UpdateServiceRequest { desired_count: Some(5), ..Default::default() }).unwrap();
        assert_eq!(svc.desired_count, 5);
        let e = create_external(&scope(), "c", &CreateServiceRequest { desired_count: None, ..req }, 1.0).unwrap_err();
        assert!(e.message.contains("desiredCount must be specified"));
    }

    fn net() -> NetworkConfiguration {
        NetworkConfiguration {
            awsvpc_configuration: Some(AwsVpcConfiguration { subnets: vec!["subnet-1".into()], ..Default::default() }),
        }
    }

    fn fargate() -> Launch {
        Launch { launch_type: LaunchType::Fargate, capacity_provider: None }
    }

    #[test]
    fn create_update_delete() {
        let mut ids = SeqIds::default();
        let req = CreateServiceRequest {
            service_name: "web".into(),
            desired_count: Some(2),
            network_configuration: Some(net()),
            ..Default::default()
        };
        let c = create(&scope(), "c1", &req, &td(1), fargate(), 0, &mut ids, 1.0).unwrap();
        let mut svc = c.service;
        let d = primary(&svc).unwrap();
        let n = deployment_number(d.id.as_deref().unwrap());
        assert_eq!(
            c.deployment.revision.service_revision_arn.as_deref(),
            Some(format!("arn:aws:ecs:us-east-1:000000000000:service-revision/c1/web/{n}").as_str())
        );
        let cfg = svc.deployment_configuration.as_ref().unwrap();
        assert_eq!((cfg.minimum_healthy_percent, cfg.maximum_percent), (Some(100), Some(200)));
        assert_eq!(svc.platform_version.as_deref(), Some("LATEST"));

        // Scaling alone does not deploy.
        let up = UpdateServiceRequest { service: "web".into(), desired_count: Some(5), ..Default::default() };
        let u = update(&scope(), "c1", &mut svc, &up, &td(1), fargate(), &mut ids, 2.0).unwrap();
        assert!(u.deployment.is_none());
        assert_eq!(primary(&svc).unwrap().desired_count, 5);

        // A new task definition does.
        let up =
            UpdateServiceRequest { service: "web".into(), task_definition: Some("web:2".into()), ..Default::default() };
        let u = update(&scope(), "c1", &mut svc, &up, &td(2), fargate(), &mut ids, 3.0).unwrap();
        assert!(u.deployment.is_some());
        let deps = svc.deployments.as_ref().unwrap();
        assert_eq!(deps.len(), 2);
        assert_eq!(deps[0].status.as_deref(), Some("PRIMARY"));
        assert_eq!(deps[1].status.as_deref(), Some("ACTIVE"));
        assert!(svc.task_definition.as_deref().unwrap().ends_with("web:2"));

        let e = delete(&mut svc, false, 4.0).unwrap_err();
        assert_eq!(e.message, "The service cannot be stopped while it is scaled above 0.");
        delete(&mut svc, true, 4.0).unwrap();
        assert_eq!(status(&svc), DRAINING);
        assert_eq!(
            delete(&mut svc, true, 5.0).unwrap_err().code,
            estiba_api::ecs::ErrorCode::ServiceNotActiveException
        );
    }

    #[test]
    fn deployment_configuration_rules() {
        let c = deployment_configuration(None, SchedulingStrategy::Daemon).unwrap();
        assert_eq!((c.minimum_healthy_percent, c.maximum_percent), (Some(0), Some(100)));
        let bad = DeploymentConfiguration { minimum_healthy_percent: Some(150), ..Default::default() };
        assert!(deployment_configuration(Some(&bad), SchedulingStrategy::Replica).is_err());
        let ok = DeploymentConfiguration {
            minimum_healthy_percent: Some(50),
            maximum_percent: Some(100),
            ..Default::default()
        };
        assert!(deployment_configuration(Some(&ok), SchedulingStrategy::Replica).is_ok());
        assert_eq!(failure_threshold(1), 3);
        assert_eq!(failure_threshold(10), 5);
        assert_eq!(failure_threshold(1000), 200);
    }
}
