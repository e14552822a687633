//! Tasks: how RunTask and StartTask requests become tasks, the ECS task lifecycle, and
//! stopping.
//!
//! Lifecycle: PROVISIONING → PENDING → ACTIVATING → RUNNING → DEACTIVATING → STOPPING →
//! DEPROVISIONING → STOPPED. A task only moves forward; `desiredStatus` is RUNNING until
//! something asks it to stop.

use estiba_api::ecs::{
    AssignPublicIp, Attachment, Container, ContainerOverride, EphemeralStorage, KeyValuePair, LaunchType,
    NetworkConfiguration, NetworkMode, Tag, Task, TaskDefinition, TaskEphemeralStorage, TaskOverride, TaskStopCode,
};

use crate::arn::Scope;
use crate::error::Result;
use crate::ids::{Ids, Now};
use crate::{bail, fargate, taskdef};

/// The platform version `LATEST` resolves to on Fargate.
pub const FARGATE_PLATFORM_VERSION: &str = "1.4.0";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Provisioning,
        Status::Pending,
        Status::Activating,
        Status::Running,
        Status::Deactivating,
        Status::Stopping,
        Status::Deprovisioning,
        Status::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Provisioning => "PROVISIONING",
            Status::Pending => "PENDING",
            Status::Activating => "ACTIVATING",
            Status::Running => "RUNNING",
            Status::Deactivating => "DEACTIVATING",
            Status::Stopping => "STOPPING",
            Status::Deprovisioning => "DEPROVISIONING",
            Status::Stopped => "STOPPED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Counted as pending by clusters and services: started but not yet RUNNING.
    pub fn is_pending(self) -> bool {
        self < Status::Running
    }
}

pub fn last_status(t: &Task) -> Status {
    t.last_status.as_deref().and_then(Status::parse).unwrap_or(Status::Provisioning)
}

pub fn desired_stopped(t: &Task) -> bool {
    t.desired_status.as_deref() == Some("STOPPED")
}

/// The address of the task's ENI (awsvpc), as its node reported it.
pub fn private_ipv4(t: &Task) -> Option<std::net::Ipv4Addr> {
    t.attachments
        .iter()
        .flatten()
        .filter(|a| a.r#type.as_deref() == Some("ElasticNetworkInterface"))
        .flat_map(|a| a.details.iter().flatten())
        .find(|d| d.name.as_deref() == Some("privateIPv4Address"))
        .and_then(|d| d.value.as_deref()?.parse().ok())
}

/// The host port a container's port is bound to (bridge and host modes), as the node reported
/// it in the container's network bindings.
pub fn host_port(t: &Task, container: &str, container_port: i32) -> Option<i32> {
    t.containers
        .iter()
        .flatten()
        .filter(|c| c.name.as_deref() == Some(container))
        .flat_map(|c| c.network_bindings.iter().flatten())
        .find(|b| b.container_port == Some(container_port))
        .and_then(|b| b.host_port)
}

/// The task id: the last segment of its ARN.
pub fn task_id(t: &Task) -> &str {
    t.task_arn.as_deref().and_then(|a| a.rsplit('/').next()).unwrap_or("")
}

pub fn is_fargate(t: &Task) -> bool {
    t.launch_type == Some(LaunchType::Fargate)
}

/// Where a task runs, as decided from launchType / capacityProviderStrategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub launch_type: LaunchType,
    pub capacity_provider: Option<String>,
}

/// Everything needed to build a task, apart from ids and time.
pub struct Spec<'a> {
    pub scope: &'a Scope,
    pub cluster: &'a str,
    pub td: &'a TaskDefinition,
    pub launch: Launch,
    pub platform_version: Option<&'a str>,
    pub overrides: Option<&'a TaskOverride>,
    pub group: Option<&'a str>,
    pub started_by: Option<&'a str>,
    pub network: Option<&'a NetworkConfiguration>,
    /// The default VPC's CIDR: an awsvpc task is in its subnet's availability zone.
    pub vpc_cidr: ipnet::Ipv4Net,
    pub container_instance_arn: Option<String>,
    pub enable_execute_command: bool,
    pub tags: Vec<Tag>,
}

/// Where `enableExecuteCommand` is being asked for without a task role to run the session's
/// agent as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecRoleCheck {
    /// RunTask, StartTask: the role may come from the overrides.
    Task,
    CreateService,
    UpdateService,
}

/// ECS refuses `enableExecuteCommand` when neither the task definition nor the overrides
/// name a task role, with a message per operation.
pub fn check_exec_role(
    enable: bool,
    td: &TaskDefinition,
    overrides: Option<&TaskOverride>,
    op: ExecRoleCheck,
) -> Result<()> {
    let has_role = |r: Option<&String>| r.is_some_and(|r| !r.is_empty());
    if !enable || has_role(td.task_role_arn.as_ref()) || has_role(overrides.and_then(|o| o.task_role_arn.as_ref())) {
        return Ok(());
    }
    match op {
        ExecRoleCheck::Task => bail!(
            invalid,
            "The execute command failed because a valid task role is not being used. Specify a valid task role in your task definition or as a task override and try again."
        ),
        ExecRoleCheck::CreateService => bail!(
            invalid,
            "The service couldn't be created because a valid taskRoleArn is not being used. Specify a valid task role in your task definition and try again."
        ),
        ExecRoleCheck::UpdateService => bail!(
            invalid,
            "The service couldn't be updated because a valid taskRoleArn is not being used. Specify a valid task role in your task definition and try again."
        ),
    }
}

/// Checks what RunTask, StartTask and services share: network configuration against the
/// task definition's network mode, overrides, group and startedBy.
/// ECS's bounds on UpdateTaskProtection's `expiresInMinutes` (default 120, up to 48 hours).
pub fn protection_expiry(now: Now, expires_in_minutes: Option<i32>) -> Result<f64> {
    let minutes = expires_in_minutes.unwrap_or(120);
    if !(1..=2880).contains(&minutes) {
        bail!(invalid, "expiresInMinutes must be between 1 and 2880 (48 hours), got {minutes}.");
    }
    Ok(now + minutes as f64 * 60.0)
}

/// Whether a protection record still protects its task at `now`.
pub fn is_protected(p: &estiba_api::ecs::ProtectedTask, now: Now) -> bool {
    p.protection_enabled && p.expiration_date.is_none_or(|at| at > now)
}

/// A platform version belongs to Fargate: with the EC2 launch type ECS refuses one.
pub fn check_platform_version(launch_type: LaunchType, platform_version: Option<&str>) -> Result<()> {
    if launch_type == LaunchType::Ec2 && platform_version.is_some() {
        bail!(invalid, "The platform version must be null when specifying an EC2 launch type.");
    }
    Ok(())
}

pub fn validate(
    td: &TaskDefinition,
    launch_type: LaunchType,
    network: Option<&NetworkConfiguration>,
    overrides: Option<&TaskOverride>,
    group: Option<&str>,
    started_by: Option<&str>,
) -> Result<()> {
    let mode = taskdef::network_mode(td);
    match (mode, network.and_then(|n| n.awsvpc_configuration.as_ref())) {
        (NetworkMode::Awsvpc, None) => {
            bail!(invalid, "Network Configuration must be provided when networkMode 'awsvpc' is specified.")
        }
        (NetworkMode::Awsvpc, Some(vpc)) => {
            if vpc.subnets.is_empty() {
                bail!(invalid, "subnets can not be empty.");
            }
            if vpc.subnets.len() > 16 {
                bail!(invalid, "At most 16 subnets can be specified, got {}.", vpc.subnets.len());
            }
            if vpc.security_groups.as_ref().is_some_and(|s| s.len() > 5) {
                bail!(invalid, "At most 5 security groups can be specified.");
            }
            if vpc.assign_public_ip == Some(AssignPublicIp::Enabled) && launch_type == LaunchType::Ec2 {
                bail!(invalid, "Assign public IP is not supported for this launch type.");
            }
        }
        (_, Some(_)) => {
            bail!(invalid, "Network Configuration is not valid for the given networkMode of this task definition.")
        }
        (_, None) => {}
    }
    if launch_type == LaunchType::Fargate && !taskdef::fargate_compatible(td) {
        bail!(invalid, "Task definition does not support launch_type FARGATE.");
    }
    if let Some(o) = overrides {
        validate_overrides(td, o, launch_type)?;
    }
    if let Some(g) = group {
        if g.is_empty() || g.len() > 255 {
            bail!(invalid, "The group must be between 1 and 255 characters.");
        }
    }
    if let Some(s) = started_by {
        if s.len() > 128 {
            bail!(invalid, "startedBy can be at most 128 characters.");
        }
    }
    Ok(())
}

fn validate_overrides(td: &TaskDefinition, o: &TaskOverride, launch_type: LaunchType) -> Result<()> {
    let names: Vec<&str> = td.container_definitions.iter().flatten().filter_map(|c| c.name.as_deref()).collect();
    for co in o.container_overrides.iter().flatten() {
        match co.name.as_deref() {
            Some(n) if names.contains(&n) => {}
            Some(n) => bail!(invalid, "Override for container named {n} is not a container in the TaskDefinition."),
            None => bail!(invalid, "Container overrides must name the container they override."),
        }
        if co.memory.is_some_and(|m| m < 6) || co.memory_reservation.is_some_and(|m| m < 6) {
            bail!(invalid, "Container memory overrides must be at least 6 MiB.");
        }
        if co.cpu.is_some_and(|c| c < 0) {
            bail!(invalid, "Container CPU overrides cannot be negative.");
        }
    }
    if o.cpu.is_some() || o.memory.is_some() {
        let size =
            taskdef::task_size(o.cpu.as_deref().or(td.cpu.as_deref()), o.memory.as_deref().or(td.memory.as_deref()))?;
        if launch_type == LaunchType::Fargate {
            match (size.cpu, size.memory) {
                (Some(c), Some(m)) if fargate::valid_size(c, m) => {}
                (c, m) => bail!(
                    invalid,
                    "No Fargate configuration exists for given values: {} CPU, {} memory. See the Amazon ECS documentation for the valid values.",
                    c.unwrap_or(0),
                    m.unwrap_or(0)
                ),
            }
        }
    }
    Ok(())
}

/// The overrides a task reports: one entry per container (name only when not overridden).
fn effective_overrides(td: &TaskDefinition, o: Option<&TaskOverride>) -> TaskOverride {
    let mut out = o.cloned().unwrap_or_default();
    let given = out.container_overrides.take().unwrap_or_default();
    let mut list = Vec::new();
    for c in td.container_definitions.iter().flatten() {
        let name = c.name.clone();
        list.push(
            given.iter().find(|g| g.name == name).cloned().unwrap_or(ContainerOverride { name, ..Default::default() }),
        );
    }
    out.container_overrides = Some(list);
    out.inference_accelerator_overrides.get_or_insert_with(Vec::new);
    out
}

/// Builds a new task. It starts PROVISIONING (awsvpc or Fargate: its network interface comes
/// first) or PENDING, with desiredStatus RUNNING.
pub fn build(spec: &Spec<'_>, ids: &mut dyn Ids, now: Now) -> Task {
    let td = spec.td;
    let id = ids.task_id();
    let task_arn = spec.scope.task_arn(spec.cluster, &id);
    let overrides = effective_overrides(td, spec.overrides);
    let fargate = spec.launch.launch_type == LaunchType::Fargate;
    let awsvpc = taskdef::network_mode(td) == NetworkMode::Awsvpc;
    let containers = td
        .container_definitions
        .iter()
        .flatten()
        .map(|c| {
            let o = overrides.container_overrides.iter().flatten().find(|o| o.name == c.name);
            Container {
                container_arn: Some(spec.scope.container_arn(spec.cluster, &id, &ids.uuid())),
                task_arn: Some(task_arn.clone()),
                name: c.name.clone(),
                image: c.image.clone(),
                last_status: Some("PENDING".into()),
                network_interfaces: Some(vec![]),
                cpu: Some(o.and_then(|o| o.cpu).unwrap_or(c.cpu).to_string()),
                memory: o.and_then(|o| o.memory).or(c.memory).map(|m| m.to_string()),
                memory_reservation: o
                    .and_then(|o| o.memory_reservation)
                    .or(c.memory_reservation)
                    .map(|m| m.to_string()),
                health_status: c.health_check.as_ref().map(|_| estiba_api::ecs::HealthStatus::Unknown),
                ..Default::default()
            }
        })
        .collect();
    let subnet = spec.network.and_then(|n| n.awsvpc_configuration.as_ref()).and_then(|v| v.subnets.first().cloned());
    // An awsvpc task is in its subnet's zone (unknown subnets map onto the first default one).
    let availability_zone = match (&subnet, awsvpc) {
        (Some(id), true) => {
            crate::vpc::Vpc::default_for(spec.scope, spec.vpc_cidr).subnet(id).availability_zone.clone()
        }
        _ => format!("{}a", spec.scope.region),
    };
    let attachments = if awsvpc {
        let subnet = subnet.unwrap_or_default();
        vec![Attachment {
            id: Some(ids.uuid()),
            r#type: Some("ElasticNetworkInterface".into()),
            status: Some("PRECREATED".into()),
            details: Some(vec![KeyValuePair { name: Some("subnetId".into()), value: Some(subnet) }]),
        }]
    } else {
        vec![]
    };
    let task_cpu = spec.overrides.and_then(|o| o.cpu.clone()).or_else(|| td.cpu.clone());
    let task_memory = spec.overrides.and_then(|o| o.memory.clone()).or_else(|| td.memory.clone());
    let size = taskdef::task_size(task_cpu.as_deref(), task_memory.as_deref()).unwrap_or_default();
    Task {
        task_arn: Some(task_arn),
        cluster_arn: Some(spec.scope.cluster_arn(spec.cluster)),
        task_definition_arn: td.task_definition_arn.clone(),
        container_instance_arn: spec.container_instance_arn.clone(),
        overrides: Some(overrides),
        last_status: Some(if awsvpc || fargate { "PROVISIONING" } else { "PENDING" }.into()),
        desired_status: Some("RUNNING".into()),
        cpu: size.cpu.map(|c| c.to_string()),
        memory: size.memory.map(|m| m.to_string()),
        containers: Some(containers),
        started_by: spec.started_by.map(str::to_owned),
        version: 1,
        created_at: Some(now),
        group: Some(
            spec.group.map(str::to_owned).unwrap_or_else(|| format!("family:{}", td.family.as_deref().unwrap_or(""))),
        ),
        launch_type: Some(spec.launch.launch_type),
        capacity_provider_name: spec.launch.capacity_provider.clone(),
        platform_version: fargate.then(|| match spec.platform_version {
            None | Some("LATEST") => FARGATE_PLATFORM_VERSION.to_owned(),
            Some(v) => v.to_owned(),
        }),
        platform_family: fargate.then(|| "Linux".to_owned()),
        availability_zone: Some(availability_zone),
        attachments: Some(attachments),
        tags: Some(spec.tags.clone()),
        enable_execute_command: spec.enable_execute_command,
        health_status: Some(estiba_api::ecs::HealthStatus::Unknown),
        ephemeral_storage: fargate.then_some(EphemeralStorage { size_in_gi_b: 20 }),
        fargate_ephemeral_storage: fargate.then_some(TaskEphemeralStorage { size_in_gi_b: 20, kms_key_id: None }),
        ..Default::default()
    }
}

/// Asks a task to stop. Returns false when it was already asked (the first reason stays).
pub fn request_stop(t: &mut Task, code: TaskStopCode, reason: &str) -> bool {
    if desired_stopped(t) {
        return false;
    }
    t.desired_status = Some("STOPPED".into());
    t.stop_code = Some(code);
    t.stopped_reason = Some(reason.chars().take(1024).collect());
    t.version += 1;
    true
}

/// Moves a task that never reached a node straight to STOPPED.
pub fn stop_unstarted(t: &mut Task, now: Now) {
    t.last_status = Some("STOPPED".into());
    t.desired_status = Some("STOPPED".into());
    t.stopping_at.get_or_insert(now);
    t.execution_stopped_at.get_or_insert(now);
    t.stopped_at = Some(now);
    for c in t.containers.iter_mut().flatten() {
        c.last_status = Some("STOPPED".into());
    }
    for a in t.attachments.iter_mut().flatten() {
        a.status = Some("DELETED".into());
    }
    t.version += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SeqIds;
    use estiba_api::ecs::{AwsVpcConfiguration, Compatibility, ContainerDefinition, RegisterTaskDefinitionRequest};

    #[test]
    fn exec_needs_a_task_role_from_the_definition_or_the_overrides() {
        let bare = TaskDefinition::default();
        let with_role = TaskDefinition { task_role_arn: Some("arn:aws:iam::1:role/r".into()), ..Default::default() };
        let ov = TaskOverride { task_role_arn: Some("arn:aws:iam::1:role/o".into()), ..Default::default() };
        assert!(check_exec_role(false, &bare, None, ExecRoleCheck::Task).is_ok());
        assert!(check_exec_role(true, &with_role, None, ExecRoleCheck::Task).is_ok());
        assert!(check_exec_role(true, &bare, Some(&ov), ExecRoleCheck::Task).is_ok());
        let e = check_exec_role(true, &bare, None, ExecRoleCheck::Task).unwrap_err();
        assert!(e.message.starts_with("The execute command failed because a valid task role is not being used."));
        let e = check_exec_role(true, &bare, None, ExecRoleCheck::UpdateService).unwrap_err();
        assert!(e.message.starts_with("The service couldn't be updated because a valid taskRoleArn"));
    }

    fn td(awsvpc: bool) -> TaskDefinition {
        let req = RegisterTaskDefinitionRequest {
            family: "web".into(),
            network_mode: awsvpc.then_some(NetworkMode::Awsvpc),
            cpu: Some("256".into()),
            memory: Some("512".into()),
            requires_compatibilities: awsvpc.then(|| vec![Compatibility::Fargate]),
            container_definitions: vec![
                ContainerDefinition { name: Some("app".into()), image: Some("busybox".into()), ..Default::default() },
                ContainerDefinition {
                    name: Some("side".into()),
                    image: Some("busybox".into()),
                    memory: Some(64),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        taskdef::register(&Scope::new("1", "eu-west-1"), &req, 2, 0.0).unwrap()
    }

    fn net() -> NetworkConfiguration {
        NetworkConfiguration {
            awsvpc_configuration: Some(AwsVpcConfiguration { subnets: vec!["subnet-1".into()], ..Default::default() }),
        }
    }

    #[test]
    fn network_rules() {
        let t = td(true);
        let e = validate(&t, LaunchType::Fargate, None, None, None, None).unwrap_err();
        assert_eq!(e.message, "Network Configuration must be provided when networkMode 'awsvpc' is specified.");
        validate(&t, LaunchType::Fargate, Some(&net()), None, None, None).unwrap();
        let b = td(false);
        let e = validate(&b, LaunchType::Ec2, Some(&net()), None, None, None).unwrap_err();
        assert!(e.message.starts_with("Network Configuration is not valid"));
        let e = validate(&b, LaunchType::Fargate, None, None, None, None).unwrap_err();
        assert_eq!(e.message, "Task definition does not support launch_type FARGATE.");
        let o = TaskOverride {
            container_overrides: Some(vec![ContainerOverride { name: Some("nope".into()), ..Default::default() }]),
            ..Default::default()
        };
        let e = validate(&t, LaunchType::Fargate, Some(&net()), Some(&o), None, None).unwrap_err();
        assert_eq!(e.message, "Override for container named nope is not a container in the TaskDefinition.");
    }

    #[test]
    fn build_fargate_task() {
        let t = td(true);
        let scope = Scope::new("1", "eu-west-1");
        let n = net();
        let spec = Spec {
            scope: &scope,
            cluster: "c1",
            td: &t,
            launch: Launch { launch_type: LaunchType::Fargate, capacity_provider: None },
            platform_version: None,
            overrides: None,
            group: None,
            started_by: Some("me"),
            network: Some(&n),
            vpc_cidr: crate::vpc::DEFAULT_CIDR.parse().unwrap(),
            container_instance_arn: None,
            enable_execute_command: false,
            tags: vec![],
        };
        let task = build(&spec, &mut SeqIds::default(), 5.0);
        // An unknown subnet is the first default one (zone a); a known one gives its zone.
        assert_eq!(task.availability_zone.as_deref(), Some("eu-west-1a"));
        let vpc = crate::vpc::Vpc::default_for(&scope, spec.vpc_cidr);
        let mut in_c = net();
        in_c.awsvpc_configuration.as_mut().unwrap().subnets = vec![vpc.subnets[2].id.clone()];
        let task_c = build(&Spec { network: Some(&in_c), tags: vec![], ..spec }, &mut SeqIds::default(), 5.0);
        assert_eq!(task_c.availability_zone.as_deref(), Some("eu-west-1c"));
        assert!(task.task_arn.as_deref().unwrap().starts_with("arn:aws:ecs:eu-west-1:1:task/c1/"));
        assert_eq!(task.last_status.as_deref(), Some("PROVISIONING"));
        assert_eq!(task.group.as_deref(), Some("family:web"));
        assert_eq!(task.platform_version.as_deref(), Some("1.4.0"));
        assert_eq!(task.containers.as_ref().unwrap().len(), 2);
        assert_eq!(task.overrides.as_ref().unwrap().container_overrides.as_ref().unwrap().len(), 2);
        assert_eq!(task.attachments.as_ref().unwrap()[0].status.as_deref(), Some("PRECREATED"));
        let mut task = task;
        assert!(request_stop(&mut task, TaskStopCode::UserInitiated, "bye"));
        assert!(!request_stop(&mut task, TaskStopCode::UserInitiated, "again"));
        assert_eq!(task.stopped_reason.as_deref(), Some("bye"));
        stop_unstarted(&mut task, 9.0);
        assert_eq!(last_status(&task), Status::Stopped);
    }
}
