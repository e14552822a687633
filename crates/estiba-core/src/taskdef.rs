//! Task definitions: validation of RegisterTaskDefinition and the revision ECS stores, with
//! the defaults and computed fields (`compatibilities`, `requiresAttributes`) it reports.

use std::collections::{BTreeMap, BTreeSet};

use estiba_api::ecs::{
    Attribute, Compatibility, ContainerCondition, ContainerDefinition, NetworkMode, PidMode,
    RegisterTaskDefinitionRequest, TaskDefinition, TaskDefinitionStatus, TransportProtocol,
};

use crate::arn::Scope;
use crate::error::Result;
use crate::ids::Now;
use crate::{bail, fargate, names};

/// The most containers one task definition may hold.
pub const MAX_CONTAINERS: usize = 10;

/// Task-level sizes in CPU units and MiB, when the task definition sets them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskSize {
    pub cpu: Option<u32>,
    pub memory: Option<u32>,
}

pub fn task_size(cpu: Option<&str>, memory: Option<&str>) -> Result<TaskSize> {
    let cpu = match cpu {
        None => None,
        Some(c) => match fargate::parse_cpu(c) {
            Some(v) if (128..=196_608).contains(&v) => Some(v),
            _ => bail!(client, "Invalid 'cpu' setting for task. Give CPU units (for example 256 or 1024) or vCPUs (for example '1 vCPU')."),
        },
    };
    let memory = match memory {
        None => None,
        Some(m) => match fargate::parse_memory(m) {
            Some(v) if v >= 6 => Some(v),
            _ => bail!(
                client,
                "Invalid 'memory' setting for task. Give MiB (for example 512) or GB (for example '2 GB')."
            ),
        },
    };
    Ok(TaskSize { cpu, memory })
}

/// The effective network mode: `bridge` when the task definition does not say.
pub fn network_mode(td: &TaskDefinition) -> NetworkMode {
    td.network_mode.unwrap_or(NetworkMode::Bridge)
}

/// Whether a registered task definition can run on Fargate.
pub fn fargate_compatible(td: &TaskDefinition) -> bool {
    td.compatibilities.as_ref().is_some_and(|c| c.contains(&Compatibility::Fargate))
}

/// Validates a RegisterTaskDefinition request and builds the revision ECS would store.
pub fn register(scope: &Scope, req: &RegisterTaskDefinitionRequest, revision: i32, now: Now) -> Result<TaskDefinition> {
    if !names::valid_name(&req.family) {
        bail!(
            client,
            "Family '{}' is not valid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
            names::shown(&req.family)
        );
    }
    let size = task_size(req.cpu.as_deref(), req.memory.as_deref())?;
    let mode = req.network_mode.unwrap_or(NetworkMode::Bridge);
    let requires = req.requires_compatibilities.clone().unwrap_or_default();
    let wants_fargate = requires.contains(&Compatibility::Fargate);
    if wants_fargate {
        if mode != NetworkMode::Awsvpc {
            bail!(client, "Fargate only supports network mode \u{2018}awsvpc\u{2019}.");
        }
        let Some(cpu) = size.cpu else {
            bail!(client, "Fargate requires that 'cpu' be defined at the task level.");
        };
        let Some(memory) = size.memory else {
            bail!(client, "Fargate requires that 'memory' be defined at the task level.");
        };
        if !fargate::valid_size(cpu, memory) {
            bail!(
                client,
                "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the Amazon ECS documentation for the valid values."
            );
        }
        if req.pid_mode == Some(PidMode::Host) {
            bail!(
                client,
                "Tasks using the Fargate launch type do not support pidMode 'host'. The supported value for pidMode is 'task'."
            );
        }
        if req.ipc_mode.is_some() {
            bail!(client, "Tasks using the Fargate launch type do not support the ipcMode parameter.");
        }
    }
    let containers = validate_containers(&req.container_definitions, mode, size, wants_fargate)?;
    for f in req.container_definitions.iter().flat_map(|c| c.environment_files.iter().flatten()) {
        environment_file_name(&f.value)?;
    }
    if let Some(tags) = &req.tags {
        crate::tags::validate(tags)?;
    }

    let fargate_ok = mode == NetworkMode::Awsvpc
        && matches!((size.cpu, size.memory), (Some(c), Some(m)) if fargate::valid_size(c, m))
        && req.pid_mode != Some(PidMode::Host)
        && req.ipc_mode.is_none()
        && !req.container_definitions.iter().any(|c| c.privileged == Some(true));
    let mut compatibilities = vec![Compatibility::Ec2];
    if fargate_ok {
        compatibilities.push(Compatibility::Fargate);
    }
    for c in &requires {
        if !compatibilities.contains(c) {
            compatibilities.push(*c);
        }
    }

    let td = TaskDefinition {
        task_definition_arn: Some(scope.task_definition_arn(&req.family, revision)),
        container_definitions: Some(containers),
        family: Some(req.family.clone()),
        task_role_arn: req.task_role_arn.clone(),
        execution_role_arn: req.execution_role_arn.clone(),
        network_mode: req.network_mode,
        revision,
        volumes: Some(volumes(req)),
        status: Some(TaskDefinitionStatus::Active),
        requires_attributes: Some(requires_attributes(req, mode)),
        placement_constraints: Some(req.placement_constraints.clone().unwrap_or_default()),
        compatibilities: Some(compatibilities),
        runtime_platform: req.runtime_platform.clone(),
        requires_compatibilities: req.requires_compatibilities.clone(),
        cpu: size.cpu.map(|c| c.to_string()),
        memory: size.memory.map(|m| m.to_string()),
        inference_accelerators: req.inference_accelerators.clone(),
        pid_mode: req.pid_mode,
        ipc_mode: req.ipc_mode,
        proxy_configuration: req.proxy_configuration.clone(),
        registered_at: Some(now),
        deregistered_at: None,
        registered_by: Some(scope.root_arn()),
        ephemeral_storage: req.ephemeral_storage.clone(),
        enable_fault_injection: req.enable_fault_injection,
        delete_requested_at: None,
    };
    Ok(td)
}

/// The file an `environmentFiles` value names, relative to the node's environment files
/// directory (`--environment-files-dir`): an S3 object ARN (`arn:aws:s3:::bucket/key.env`, as in
/// AWS) or `s3://bucket/key.env` is `bucket/key.env`; any other value is a path relative to the
/// directory. Absolute paths and `..` are refused: the value comes from API callers.
pub fn environment_file_name(value: &str) -> Result<String> {
    let arn_key = value.strip_prefix("arn:").and_then(|rest| rest.split_once(":s3:::")).map(|(_, key)| key);
    let name =
        arn_key.or_else(|| value.strip_prefix("s3://")).or_else(|| value.strip_prefix("file://")).unwrap_or(value);
    if name.is_empty() || name.starts_with('/') || name.split('/').any(|p| p == "..") {
        bail!(
            client,
            "Environment file '{}' is not valid: give an S3 object ARN (arn:aws:s3:::bucket/key.env) or a path relative to the server's environment files directory, without '..'.",
            names::shown(value)
        );
    }
    Ok(name.to_owned())
}

/// The task definition's volumes as ECS stores them: an EFS volume without a root directory
/// gets `/`.
fn volumes(req: &RegisterTaskDefinitionRequest) -> Vec<estiba_api::ecs::Volume> {
    let mut volumes = req.volumes.clone().unwrap_or_default();
    for v in &mut volumes {
        if let Some(efs) = &mut v.efs_volume_configuration {
            efs.root_directory.get_or_insert_with(|| "/".into());
        }
    }
    volumes
}

fn validate_containers(
    defs: &[ContainerDefinition],
    mode: NetworkMode,
    size: TaskSize,
    fargate: bool,
) -> Result<Vec<ContainerDefinition>> {
    if defs.is_empty() {
        bail!(client, "Container list cannot be empty.");
    }
    if defs.len() > MAX_CONTAINERS {
        bail!(
            client,
            "Too many containers: {} given. A task definition holds at most {MAX_CONTAINERS} containers.",
            defs.len()
        );
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(defs.len());
    let mut host_ports: BTreeMap<(i32, TransportProtocol), String> = BTreeMap::new();
    let mut port_names = BTreeSet::new();
    for def in defs {
        let name = match def.name.as_deref() {
            None | Some("") => bail!(client, "Container.name should not be null or empty."),
            Some(n) => n,
        };
        if !names::valid_name(name) {
            bail!(
                client,
                "Container name '{}' is not valid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
                names::shown(name)
            );
        }
        if fargate && def.privileged == Some(true) {
            bail!(client, "Tasks using the Fargate launch type do not support the privileged parameter.");
        }
        if !seen.insert(name.to_owned()) {
            bail!(
                client,
                "Duplicate container name found: {name}. Container names must be unique within a task definition."
            );
        }
        if def.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            bail!(client, "Container.image should not be null or empty.");
        }
        if def.image.as_deref().is_some_and(|i| i.len() > 1024 || i.chars().any(char::is_whitespace)) {
            bail!(client, "Invalid 'image' setting for container '{name}'. Image names hold no spaces and at most 1024 characters.");
        }
        if def.cpu < 0 {
            bail!(client, "Invalid 'cpu' setting for container '{name}'. CPU units cannot be negative.");
        }
        if let Some(m) = def.memory {
            if m < 6 {
                bail!(client, "Invalid 'memory' setting for container '{name}'. The minimum is 6 MiB.");
            }
        }
        if let Some(r) = def.memory_reservation {
            if r < 6 {
                bail!(client, "Invalid 'memoryReservation' setting for container '{name}'. The minimum is 6 MiB.");
            }
            if def.memory.is_some_and(|m| r > m) {
                bail!(
                    client,
                    "Invalid setting for container '{name}'. 'memoryReservation' must be less than or equal to 'memory'."
                );
            }
        }
        if size.memory.is_none() && def.memory.is_none() && def.memory_reservation.is_none() {
            bail!(
                client,
                "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
            );
        }
        if let (Some(task), Some(m)) = (size.memory, def.memory) {
            if m as u32 > task {
                bail!(client, "The 'memory' setting for container '{name}' is greater than for the task.");
            }
        }
        if let Some(task) = size.cpu {
            if def.cpu as u32 > task {
                bail!(client, "The 'cpu' setting for container '{name}' is greater than for the task.");
            }
        }
        if let Some(t) = def.stop_timeout {
            if t < 0 || (fargate && t > 120) {
                bail!(client, "Invalid 'stopTimeout' setting for container '{name}'. It must be between 0 and 120 seconds on Fargate.");
            }
        }
        let mut c = def.clone();
        c.essential = Some(def.essential.unwrap_or(true));
        c.environment = Some(def.environment.clone().unwrap_or_default());
        c.mount_points = Some(def.mount_points.clone().unwrap_or_default());
        c.volumes_from = Some(def.volumes_from.clone().unwrap_or_default());
        c.system_controls = Some(def.system_controls.clone().unwrap_or_default());
        let mut mappings = def.port_mappings.clone().unwrap_or_default();
        for pm in &mut mappings {
            let protocol = *pm.protocol.get_or_insert(TransportProtocol::Tcp);
            let Some(cport) = pm.container_port else {
                if pm.container_port_range.is_some() {
                    continue;
                }
                bail!(client, "Invalid port mapping for container '{name}': 'containerPort' must be specified.");
            };
            if !(1..=65535).contains(&cport) {
                bail!(client, "Invalid container port {cport} for container '{name}'. Ports range from 1 to 65535.");
            }
            match mode {
                NetworkMode::Awsvpc | NetworkMode::Host => {
                    let hp = *pm.host_port.get_or_insert(cport);
                    if hp != cport {
                        bail!(
                            client,
                            "When networkMode={}, the host ports and container ports in port mappings must match.",
                            mode.as_str()
                        );
                    }
                }
                NetworkMode::None => {
                    bail!(client, "Port mappings are not supported when networkMode=none (container '{name}').")
                }
                NetworkMode::Bridge => {}
            }
            let host = pm.host_port.filter(|&p| p != 0).unwrap_or(if mode == NetworkMode::Bridge { 0 } else { cport });
            if host != 0 {
                if let Some(other) = host_ports.insert((host, protocol), name.to_owned()) {
                    bail!(
                        client,
                        "Host port {host}/{} is used by more than one port mapping (containers '{other}' and '{name}').",
                        protocol.as_str()
                    );
                }
            }
            if let Some(pn) = &pm.name {
                if !port_names.insert(pn.clone()) {
                    bail!(client, "Port mapping name '{pn}' is used more than once. Port mapping names must be unique within a task definition.");
                }
            }
        }
        c.port_mappings = Some(mappings);
        if let Some(hc) = &mut c.health_check {
            validate_health_check(name, hc)?;
        }
        crate::awslogs::validate(def, fargate)?;
        if mode == NetworkMode::Awsvpc && def.links.as_ref().is_some_and(|l| !l.is_empty()) {
            bail!(client, "Links are not supported when networkMode=awsvpc (container '{name}').");
        }
        if mode == NetworkMode::Awsvpc && def.extra_hosts.as_ref().is_some_and(|l| !l.is_empty()) {
            bail!(client, "extraHosts is not supported when networkMode=awsvpc (container '{name}').");
        }
        if matches!(mode, NetworkMode::Awsvpc | NetworkMode::Host) && def.hostname.is_some() {
            bail!(
                client,
                "The hostname parameter is not supported when networkMode={} (container '{name}').",
                mode.as_str()
            );
        }
        out.push(c);
    }
    if !out.iter().any(|c| c.essential == Some(true)) {
        bail!(client, "Task definition must contain at least one essential container.");
    }
    validate_dependencies(&out)?;
    Ok(out)
}

fn validate_health_check(name: &str, hc: &mut estiba_api::ecs::HealthCheck) -> Result<()> {
    match hc.command.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") if hc.command.len() >= 2 => {}
        Some("NONE") => {}
        _ => bail!(
            client,
            "Invalid 'healthCheck' setting for container '{name}'. The command must start with CMD or CMD-SHELL followed by the command to run, or be [\"NONE\"]."
        ),
    }
    let check = |field: &str, v: i32, lo: i32, hi: i32| -> Result<()> {
        if !(lo..=hi).contains(&v) {
            bail!(client, "Invalid 'healthCheck' setting for container '{name}'. '{field}' must be between {lo} and {hi}, got {v}.");
        }
        Ok(())
    };
    let interval = *hc.interval.get_or_insert(30);
    let timeout = *hc.timeout.get_or_insert(5);
    let retries = *hc.retries.get_or_insert(3);
    check("interval", interval, 5, 300)?;
    check("timeout", timeout, 2, 120)?;
    check("retries", retries, 1, 10)?;
    if let Some(sp) = hc.start_period {
        check("startPeriod", sp, 0, 300)?;
    }
    Ok(())
}

fn validate_dependencies(containers: &[ContainerDefinition]) -> Result<()> {
    let by_name: BTreeMap<&str, &ContainerDefinition> =
        containers.iter().map(|c| (c.name.as_deref().unwrap(), c)).collect();
    for c in containers {
        let name = c.name.as_deref().unwrap();
        for dep in c.depends_on.iter().flatten() {
            let Some(target) = by_name.get(dep.container_name.as_str()) else {
                bail!(
                    client,
                    "Container '{name}' depends on container '{}', which is not defined in the task definition.",
                    names::shown(&dep.container_name)
                );
            };
            if dep.container_name == name {
                bail!(client, "Container '{name}' cannot depend on itself.");
            }
            match dep.condition {
                ContainerCondition::Healthy if target.health_check.is_none() => bail!(
                    client,
                    "Container '{name}' depends on container '{}' being HEALTHY, but '{}' has no health check.",
                    dep.container_name,
                    dep.container_name
                ),
                ContainerCondition::Complete | ContainerCondition::Success if target.essential == Some(true) => bail!(
                    client,
                    "Container '{name}' depends on essential container '{}' with condition {}: COMPLETE and SUCCESS can only be used on containers that are not essential.",
                    dep.container_name,
                    dep.condition.as_str()
                ),
                _ => {}
            }
        }
    }
    // No cycles: repeatedly remove containers whose dependencies are all removed.
    let mut left: BTreeSet<&str> = by_name.keys().copied().collect();
    loop {
        let ready: Vec<&str> = left
            .iter()
            .copied()
            .filter(|n| by_name[n].depends_on.iter().flatten().all(|d| !left.contains(d.container_name.as_str())))
            .collect();
        if ready.is_empty() {
            break;
        }
        for r in ready {
            left.remove(r);
        }
    }
    if !left.is_empty() {
        bail!(
            client,
            "Circular container dependency found between containers: {}.",
            left.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

fn requires_attributes(req: &RegisterTaskDefinitionRequest, mode: NetworkMode) -> Vec<Attribute> {
    let mut names = BTreeSet::new();
    names.insert("com.amazonaws.ecs.capability.docker-remote-api.1.18");
    if mode == NetworkMode::Awsvpc {
        names.insert("ecs.capability.task-eni");
    }
    if req.task_role_arn.is_some() {
        names.insert("com.amazonaws.ecs.capability.task-iam-role");
    }
    for c in &req.container_definitions {
        if c.health_check.is_some() {
            names.insert("ecs.capability.container-health-check");
            names.insert("com.amazonaws.ecs.capability.docker-remote-api.1.24");
        }
        if c.depends_on.as_ref().is_some_and(|d| !d.is_empty()) {
            names.insert("ecs.capability.container-ordering");
        }
        if c.memory_reservation.is_some() {
            names.insert("com.amazonaws.ecs.capability.docker-remote-api.1.21");
        }
        if c.repository_credentials.is_some() {
            names.insert("com.amazonaws.ecs.capability.private-registry-authentication.secretsmanager");
        }
        if c.environment_files.as_ref().is_some_and(|e| !e.is_empty()) {
            names.insert("ecs.capability.env-files.s3");
        }
        if let Some(driver) = c.log_configuration.as_ref().map(|l| l.log_driver.as_str()) {
            names.insert(match driver {
                "awslogs" => "com.amazonaws.ecs.capability.logging-driver.awslogs",
                "json-file" => "com.amazonaws.ecs.capability.logging-driver.json-file",
                "syslog" => "com.amazonaws.ecs.capability.logging-driver.syslog",
                _ => "com.amazonaws.ecs.capability.docker-remote-api.1.19",
            });
        }
    }
    names.into_iter().map(|n| Attribute { name: n.to_owned(), ..Default::default() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_api::ecs::{ContainerDependency, HealthCheck, IpcMode, PortMapping};

    fn scope() -> Scope {
        Scope::new("000000000000", "us-east-1")
    }

    fn container(name: &str) -> ContainerDefinition {
        ContainerDefinition {
            name: Some(name.into()),
            image: Some("busybox".into()),
            memory: Some(64),
            ..Default::default()
        }
    }

    fn req(containers: Vec<ContainerDefinition>) -> RegisterTaskDefinitionRequest {
        RegisterTaskDefinitionRequest { family: "web".into(), container_definitions: containers, ..Default::default() }
    }

    fn err(r: &RegisterTaskDefinitionRequest) -> String {
        register(&scope(), r, 1, 0.0).unwrap_err().message
    }

    #[test]
    fn defaults_are_filled() {
        let td = register(&scope(), &req(vec![container("a")]), 3, 10.0).unwrap();
        assert_eq!(td.task_definition_arn.as_deref(), Some("arn:aws:ecs:us-east-1:000000000000:task-definition/web:3"));
        let c = &td.container_definitions.as_ref().unwrap()[0];
        assert_eq!(c.essential, Some(true));
        assert_eq!(c.port_mappings, Some(vec![]));
        assert_eq!(td.status, Some(TaskDefinitionStatus::Active));
        assert_eq!(td.compatibilities, Some(vec![Compatibility::Ec2]));
        assert_eq!(td.registered_by.as_deref(), Some("arn:aws:iam::000000000000:root"));
    }

    #[test]
    fn fargate_rules() {
        let mut r = req(vec![container("a")]);
        r.requires_compatibilities = Some(vec![Compatibility::Fargate]);
        assert_eq!(err(&r), "Fargate only supports network mode \u{2018}awsvpc\u{2019}.");
        r.network_mode = Some(NetworkMode::Awsvpc);
        assert_eq!(err(&r), "Fargate requires that 'cpu' be defined at the task level.");
        r.cpu = Some("1 vCPU".into());
        r.memory = Some("1024".into());
        assert!(err(&r).starts_with("No Fargate configuration exists for given values: 1024 CPU, 1024 memory."));
        r.memory = Some("2 GB".into());
        let td = register(&scope(), &r, 1, 0.0).unwrap();
        assert_eq!((td.cpu.as_deref(), td.memory.as_deref()), (Some("1024"), Some("2048")));
        assert_eq!(td.compatibilities, Some(vec![Compatibility::Ec2, Compatibility::Fargate]));
        let mut p = r.clone();
        p.container_definitions[0].privileged = Some(true);
        assert_eq!(err(&p), "Tasks using the Fargate launch type do not support the privileged parameter.");
        p.requires_compatibilities = None;
        let td = register(&scope(), &p, 1, 0.0).unwrap();
        assert_eq!(td.compatibilities, Some(vec![Compatibility::Ec2]), "privileged: EC2 only");
        r.pid_mode = Some(PidMode::Host);
        assert_eq!(
            err(&r),
            "Tasks using the Fargate launch type do not support pidMode 'host'. The supported value for pidMode is 'task'."
        );
        r.pid_mode = Some(PidMode::Task);
        r.ipc_mode = Some(IpcMode::Task);
        assert!(err(&r).contains("do not support the ipcMode parameter"));
        // Without requiring Fargate it registers, but is not Fargate-compatible.
        r.requires_compatibilities = None;
        let td = register(&scope(), &r, 1, 0.0).unwrap();
        assert_eq!(td.compatibilities, Some(vec![Compatibility::Ec2]));
    }

    #[test]
    fn environment_file_names() {
        assert_eq!(environment_file_name("arn:aws:s3:::conf/web/prod.env").unwrap(), "conf/web/prod.env");
        assert_eq!(environment_file_name("s3://conf/a.env").unwrap(), "conf/a.env");
        assert_eq!(environment_file_name("a.env").unwrap(), "a.env");
        for bad in ["/etc/shadow", "file:///etc/shadow", "../x", "arn:aws:s3:::b/../../etc/shadow", ""] {
            let e = environment_file_name(bad).unwrap_err();
            assert_eq!(e.code, estiba_api::ecs::ErrorCode::ClientException, "{bad}");
        }
    }

    #[test]
    fn efs_volumes_get_a_root_directory() {
        let mut r = req(vec![container("a")]);
        r.volumes = Some(vec![estiba_api::ecs::Volume {
            name: Some("data".into()),
            efs_volume_configuration: Some(estiba_api::ecs::EFSVolumeConfiguration {
                file_system_id: "fs-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let td = register(&scope(), &r, 1, 0.0).unwrap();
        let efs = td.volumes.unwrap()[0].efs_volume_configuration.clone().unwrap();
        assert_eq!(efs.root_directory.as_deref(), Some("/"));
    }

    #[test]
    fn container_rules() {
        assert_eq!(err(&req(vec![])), "Container list cannot be empty.");
        assert!(err(&req(vec![container("a"), container("a")])).starts_with("Duplicate container name found: a."));
        let mut c = container("a");
        c.image = None;
        assert_eq!(err(&req(vec![c])), "Container.image should not be null or empty.");
        let mut c = container("a");
        c.memory = None;
        assert!(err(&req(vec![c])).contains("At least one of 'memory' or 'memoryReservation' must be specified."));
        let mut c = container("a");
        c.essential = Some(false);
        assert_eq!(err(&req(vec![c])), "Task definition must contain at least one essential container.");
        let mut r = req(vec![container("a")]);
        r.memory = Some("32".into());
        assert_eq!(err(&r), "The 'memory' setting for container 'a' is greater than for the task.");
    }

    #[test]
    fn port_rules() {
        let mut c = container("a");
        c.port_mappings =
            Some(vec![PortMapping { container_port: Some(80), host_port: Some(8080), ..Default::default() }]);
        let mut r = req(vec![c.clone()]);
        r.network_mode = Some(NetworkMode::Awsvpc);
        assert_eq!(err(&r), "When networkMode=awsvpc, the host ports and container ports in port mappings must match.");
        r.network_mode = Some(NetworkMode::Bridge);
        register(&scope(), &r, 1, 0.0).unwrap();
        let mut d = container("b");
        d.port_mappings = c.port_mappings.clone();
        let r = req(vec![c, d]);
        assert!(err(&r).starts_with("Host port 8080/tcp is used by more than one port mapping"));
        let mut c = container("a");
        c.port_mappings = Some(vec![PortMapping { container_port: Some(80), ..Default::default() }]);
        let mut r = req(vec![c]);
        r.network_mode = Some(NetworkMode::Awsvpc);
        let td = register(&scope(), &r, 1, 0.0).unwrap();
        let pm = &td.container_definitions.unwrap()[0].port_mappings.clone().unwrap()[0];
        assert_eq!((pm.host_port, pm.protocol), (Some(80), Some(TransportProtocol::Tcp)));
    }

    #[test]
    fn network_mode_rules() {
        let mut c = container("a");
        c.extra_hosts = Some(vec![estiba_api::ecs::HostEntry { hostname: "db".into(), ip_address: "10.0.0.1".into() }]);
        let mut r = req(vec![c.clone()]);
        r.network_mode = Some(NetworkMode::Awsvpc);
        assert_eq!(err(&r), "extraHosts is not supported when networkMode=awsvpc (container 'a').");
        r.network_mode = Some(NetworkMode::Bridge);
        register(&scope(), &r, 1, 0.0).unwrap();
        let mut c = container("a");
        c.hostname = Some("web".into());
        let mut r = req(vec![c]);
        r.network_mode = Some(NetworkMode::Host);
        assert_eq!(err(&r), "The hostname parameter is not supported when networkMode=host (container 'a').");
        r.network_mode = None; // bridge
        register(&scope(), &r, 1, 0.0).unwrap();
    }

    #[test]
    fn dependency_rules() {
        let mut a = container("a");
        a.depends_on =
            Some(vec![ContainerDependency { container_name: "ghost".into(), condition: ContainerCondition::Start }]);
        assert!(err(&req(vec![a.clone()])).contains("which is not defined"));
        let mut b = container("b");
        b.essential = Some(false);
        b.depends_on =
            Some(vec![ContainerDependency { container_name: "a".into(), condition: ContainerCondition::Start }]);
        a.depends_on =
            Some(vec![ContainerDependency { container_name: "b".into(), condition: ContainerCondition::Start }]);
        assert!(err(&req(vec![a.clone(), b.clone()])).starts_with("Circular container dependency"));
        b.depends_on = None;
        a.depends_on =
            Some(vec![ContainerDependency { container_name: "b".into(), condition: ContainerCondition::Healthy }]);
        assert!(err(&req(vec![a.clone(), b.clone()])).contains("has no health check"));
        b.health_check = Some(HealthCheck { command: vec!["CMD".into(), "true".into()], ..Default::default() });
        let td = register(&scope(), &req(vec![a.clone(), b.clone()]), 1, 0.0).unwrap();
        let hc = td.container_definitions.unwrap()[1].health_check.clone().unwrap();
        assert_eq!((hc.interval, hc.timeout, hc.retries), (Some(30), Some(5), Some(3)));
        b.essential = Some(true);
        a.depends_on =
            Some(vec![ContainerDependency { container_name: "b".into(), condition: ContainerCondition::Success }]);
        assert!(err(&req(vec![a, b])).contains("COMPLETE and SUCCESS"));
    }
}
