//! ECS services in Cloud Map: the instance ECS registers for each running task of a service
//! with `serviceRegistries`, and its health. Pure rules; the server's registrar writes them.
//!
//! As in ECS: the instance id is the task id; its attributes are the task's ENI address
//! (`AWS_INSTANCE_IPV4`), the port for SRV records (`port`, else `containerPort`), and
//! `ECS_CLUSTER_NAME`, `ECS_SERVICE_NAME`, `ECS_TASK_DEFINITION_FAMILY`, `AVAILABILITY_ZONE`,
//! `REGION` and `AWS_INIT_HEALTH_STATUS`. Health follows the task's container health checks
//! (a checked task counts as healthy once its checks pass).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use estiba_api::ecs::{HealthStatus as TaskHealth, ServiceRegistry, Task, TaskDefinition};
use estiba_api::servicediscovery::{HealthStatus, Instance, RecordType};

use crate::error::{EcsError, Result};
use crate::servicediscovery as sd;
use crate::{arn, task, Scope};

pub const CLUSTER_NAME: &str = "ECS_CLUSTER_NAME";
pub const SERVICE_NAME: &str = "ECS_SERVICE_NAME";
pub const TASK_DEFINITION_FAMILY: &str = "ECS_TASK_DEFINITION_FAMILY";
pub const AVAILABILITY_ZONE: &str = "AVAILABILITY_ZONE";
pub const REGION: &str = "REGION";
/// A task set's `externalId` (services with the EXTERNAL deployment controller).
pub const TASK_SET_EXTERNAL_ID: &str = "ECS_TASK_SET_EXTERNAL_ID";

/// The task's health as Cloud Map's custom health status: its checks' verdict, HEALTHY for
/// a task without checks.
pub fn health_of(t: &Task) -> HealthStatus {
    match t.health_status {
        Some(TaskHealth::Healthy) => HealthStatus::Healthy,
        Some(TaskHealth::Unhealthy) => HealthStatus::Unhealthy,
        // UNKNOWN: checks not passed yet when the task has any.
        _ if t.containers.iter().flatten().any(|c| c.health_status.is_some()) => HealthStatus::Unhealthy,
        _ => HealthStatus::Healthy,
    }
}

/// Where ECS registers a task: what it needs from the task's service.
pub struct Registration<'a> {
    pub cluster: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub registry: &'a ServiceRegistry,
    /// The `externalId` of the task set the task belongs to, if any.
    pub external_id: Option<&'a str>,
}

/// Where a running task is reached: its ENI's address and the registry's port (awsvpc), or
/// its node's address and the host port published for the registry's container port (bridge
/// and host modes, SRV records only); `None` while it has neither.
pub fn endpoint_of(
    t: &Task,
    eni: Option<Ipv4Addr>,
    node: Option<Ipv4Addr>,
    r: &ServiceRegistry,
) -> Option<(Ipv4Addr, Option<i32>)> {
    if let Some(ip) = eni {
        return Some((ip, r.port.or(r.container_port)));
    }
    let host_port = crate::task::host_port(t, r.container_name.as_deref()?, r.container_port?)?;
    Some((node?, Some(host_port)))
}

/// The instance ECS registers for a running task reached at `ip` and `port`
/// ([`endpoint_of`]).
pub fn instance_for(t: &Task, (ip, port): (Ipv4Addr, Option<i32>), r: &Registration<'_>) -> Instance {
    let mut attrs = BTreeMap::new();
    attrs.insert(sd::INSTANCE_IPV4.to_owned(), ip.to_string());
    if let Some(port) = port {
        attrs.insert(sd::INSTANCE_PORT.to_owned(), port.to_string());
    }
    attrs.insert(CLUSTER_NAME.to_owned(), r.cluster.to_owned());
    attrs.insert(SERVICE_NAME.to_owned(), r.service.to_owned());
    if let Some(f) = t.task_definition_arn.as_deref().and_then(arn::TaskDefRef::parse) {
        attrs.insert(TASK_DEFINITION_FAMILY.to_owned(), f.family.to_owned());
    }
    if let Some(az) = &t.availability_zone {
        attrs.insert(AVAILABILITY_ZONE.to_owned(), az.clone());
    }
    attrs.insert(REGION.to_owned(), r.region.to_owned());
    if let Some(id) = r.external_id {
        attrs.insert(TASK_SET_EXTERNAL_ID.to_owned(), id.to_owned());
    }
    attrs.insert(sd::INIT_HEALTH_STATUS.to_owned(), health_of(t).as_str().to_owned());
    Instance { id: task::task_id(t).to_owned(), attributes: Some(attrs), ..Default::default() }
}

/// Checks a service's `serviceRegistries` as ECS does. `records` gives the DNS record types
/// of the Cloud Map service an id names (empty without DNS), `None` when it does not exist.
pub fn check_registries(
    scope: &Scope,
    registries: &[ServiceRegistry],
    td: &TaskDefinition,
    records: impl Fn(&str) -> Option<Vec<RecordType>>,
) -> Result<()> {
    let awsvpc = crate::taskdef::network_mode(td) == estiba_api::ecs::NetworkMode::Awsvpc;
    if registries.len() > 1 {
        return Err(EcsError::invalid(
            "Each service may be associated with one service registry. Multiple service registries for each service \
             isn't supported.",
        ));
    }
    for r in registries {
        let arn = r.registry_arn.as_deref().unwrap_or_default();
        let Some((sd::Resource::Service, id)) = sd::parse_arn(scope, arn) else {
            return Err(EcsError::invalid(format!(
                "The format of the supplied service registry ARN is invalid: {arn}."
            )));
        };
        let Some(types) = records(&id) else {
            return Err(EcsError::invalid(format!("The service registry {arn} does not exist.")));
        };
        let container = r.container_name.is_some() || r.container_port.is_some();
        if !awsvpc && types.iter().any(|t| matches!(t, RecordType::A | RecordType::Aaaa)) {
            return Err(EcsError::invalid(
                "A and AAAA service discovery records need the awsvpc network mode: use SRV records with the \
                 bridge and host network modes.",
            ));
        }
        if !awsvpc && (r.container_name.is_none() || r.container_port.is_none()) {
            return Err(EcsError::invalid(
                "With the bridge and host network modes, a service registry needs 'containerName' and \
                 'containerPort'.",
            ));
        }
        if types.contains(&RecordType::Srv) {
            if r.port.is_some() == container {
                return Err(EcsError::invalid(
                    "Specify a value for either 'port' or the 'containerName' and 'containerPort' combination, but not \
                     both. Remove one and retry.",
                ));
            }
        } else if r.port.is_some() {
            return Err(EcsError::invalid("A port was provided but is not required by the specified service registry"));
        }
        if container {
            let (Some(name), Some(port)) = (r.container_name.as_deref(), r.container_port) else {
                return Err(EcsError::invalid(
                    "Specify both 'containerName' and 'containerPort' for a service registry.",
                ));
            };
            let c = td.container_definitions.iter().flatten().find(|c| c.name.as_deref() == Some(name));
            let Some(c) = c else {
                return Err(EcsError::invalid(format!(
                    "The container '{name}' named by the service registry is not in the task definition."
                )));
            };
            if !c.port_mappings.iter().flatten().any(|m| m.container_port == Some(port)) {
                return Err(EcsError::invalid(format!(
                    "The container '{name}' has no port mapping for container port {port} named by the service registry."
                )));
            }
        }
    }
    Ok(())
}

/// Whether a Cloud Map instance was registered by ECS for a task of `service` in `cluster`.
pub fn registered_for(i: &Instance, cluster: &str, service: &str) -> bool {
    let a = |k: &str| i.attributes.as_ref().and_then(|a| a.get(k)).map(String::as_str);
    a(CLUSTER_NAME) == Some(cluster) && a(SERVICE_NAME) == Some(service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_api::ecs::Container;

    fn task(health: Option<TaskHealth>, checked: bool) -> Task {
        Task {
            task_arn: Some("arn:aws:ecs:us-east-1:1:task/c/abc".into()),
            task_definition_arn: Some("arn:aws:ecs:us-east-1:1:task-definition/web:3".into()),
            availability_zone: Some("us-east-1a".into()),
            health_status: health,
            containers: Some(vec![Container {
                health_status: checked.then_some(TaskHealth::Unknown),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn the_instance_ecs_registers() {
        let reg = ServiceRegistry { container_port: Some(8080), ..Default::default() };
        let r = Registration { cluster: "c", service: "api", region: "us-east-1", registry: &reg, external_id: None };
        let t = task(None, false);
        let at = endpoint_of(&t, Some(Ipv4Addr::new(172, 31, 0, 4)), None, &reg).unwrap();
        let i = instance_for(&t, at, &r);
        assert!(!i.attributes.as_ref().unwrap().contains_key(TASK_SET_EXTERNAL_ID));
        let in_set = instance_for(&t, at, &Registration { external_id: Some("blue"), ..r });
        assert_eq!(in_set.attributes.as_ref().unwrap()[TASK_SET_EXTERNAL_ID], "blue");
        assert_eq!(i.id, "abc");
        let a = i.attributes.as_ref().unwrap();
        assert_eq!(a["AWS_INSTANCE_IPV4"], "172.31.0.4");
        assert_eq!(a["AWS_INSTANCE_PORT"], "8080");
        assert_eq!(a["ECS_TASK_DEFINITION_FAMILY"], "web");
        assert_eq!(a["AVAILABILITY_ZONE"], "us-east-1a");
        assert_eq!(a["AWS_INIT_HEALTH_STATUS"], "HEALTHY");
        assert!(registered_for(&i, "c", "api") && !registered_for(&i, "c", "web"));

        // Bridge mode: the node's address and the published host port.
        use estiba_api::ecs::NetworkBinding;
        let reg =
            ServiceRegistry { container_name: Some("web".into()), container_port: Some(80), ..Default::default() };
        let mut t = task(None, false);
        let gw = Ipv4Addr::new(172, 31, 0, 1);
        let node = Some(gw);
        assert_eq!(endpoint_of(&t, None, node, &reg), None, "no binding yet");
        t.containers.as_mut().unwrap()[0] = Container {
            name: Some("web".into()),
            network_bindings: Some(vec![NetworkBinding {
                container_port: Some(80),
                host_port: Some(32768),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(endpoint_of(&t, None, node, &reg), Some((gw, Some(32768))));
        assert_eq!(endpoint_of(&t, None, None, &reg), None, "a node that reports no address");
    }

    #[test]
    fn registries_are_checked_as_ecs_does() {
        use estiba_api::ecs::{ContainerDefinition, PortMapping};
        let scope = Scope::new("1", "us-east-1");
        let td = TaskDefinition {
            network_mode: Some(estiba_api::ecs::NetworkMode::Awsvpc),
            container_definitions: Some(vec![ContainerDefinition {
                name: Some("web".into()),
                port_mappings: Some(vec![PortMapping { container_port: Some(8080), ..Default::default() }]),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let arn = "arn:aws:servicediscovery:us-east-1:1:service/srv-1";
        let reg = |port: Option<i32>, cname: Option<&str>, cport: Option<i32>| ServiceRegistry {
            registry_arn: Some(arn.into()),
            port,
            container_name: cname.map(Into::into),
            container_port: cport,
        };
        let a = |_: &str| Some(vec![RecordType::A]);
        let srv = |_: &str| Some(vec![RecordType::A, RecordType::Srv]);
        let err = |r: Result<()>| r.unwrap_err().message;
        assert!(check_registries(&scope, &[reg(None, None, None)], &td, a).is_ok());
        assert!(check_registries(&scope, &[reg(None, Some("web"), Some(8080))], &td, srv).is_ok());
        assert!(check_registries(&scope, &[reg(Some(80), None, None)], &td, srv).is_ok());
        assert!(err(check_registries(&scope, &[reg(Some(80), None, None)], &td, a)).contains("not required"));
        assert!(err(check_registries(&scope, &[reg(None, None, None)], &td, srv)).contains("either 'port'"));
        assert!(err(check_registries(&scope, &[reg(Some(1), Some("web"), Some(8080))], &td, srv)).contains("not both"));
        assert!(err(check_registries(&scope, &[reg(None, Some("db"), Some(8080))], &td, srv)).contains("'db'"));
        assert!(err(check_registries(&scope, &[reg(None, Some("web"), Some(9))], &td, srv)).contains("port 9"));
        assert!(err(check_registries(&scope, &[reg(None, None, None)], &td, |_| None)).contains("does not exist"));
        let bad = ServiceRegistry {
            registry_arn: Some("arn:aws:servicediscovery:us-east-1:1:namespace/ns-1".into()),
            ..reg(None, None, None)
        };
        assert!(err(check_registries(&scope, &[bad], &td, a)).contains("format"));
        let two = [reg(None, None, None), reg(None, None, None)];
        assert!(err(check_registries(&scope, &two, &td, a)).contains("one service registry"));
        // Bridge mode: SRV records only, through containerName and containerPort.
        let bridge = TaskDefinition { network_mode: Some(estiba_api::ecs::NetworkMode::Bridge), ..td.clone() };
        let only_srv = |_: &str| Some(vec![RecordType::Srv]);
        assert!(check_registries(&scope, &[reg(None, Some("web"), Some(8080))], &bridge, only_srv).is_ok());
        assert!(err(check_registries(&scope, &[reg(None, Some("web"), Some(8080))], &bridge, srv)).contains("awsvpc"));
        assert!(
            err(check_registries(&scope, &[reg(Some(80), None, None)], &bridge, only_srv)).contains("containerName")
        );
    }

    #[test]
    fn health_follows_the_checks() {
        assert_eq!(health_of(&task(Some(TaskHealth::Unknown), false)), HealthStatus::Healthy);
        assert_eq!(health_of(&task(Some(TaskHealth::Unknown), true)), HealthStatus::Unhealthy);
        assert_eq!(health_of(&task(Some(TaskHealth::Healthy), true)), HealthStatus::Healthy);
        assert_eq!(health_of(&task(Some(TaskHealth::Unhealthy), true)), HealthStatus::Unhealthy);
    }
}
