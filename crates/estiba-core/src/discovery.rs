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

use estiba_api::ecs::{HealthStatus as TaskHealth, ServiceRegistry, Task};
use estiba_api::servicediscovery::{HealthStatus, Instance};

use crate::servicediscovery as sd;
use crate::{arn, task};

pub const CLUSTER_NAME: &str = "ECS_CLUSTER_NAME";
pub const SERVICE_NAME: &str = "ECS_SERVICE_NAME";
pub const TASK_DEFINITION_FAMILY: &str = "ECS_TASK_DEFINITION_FAMILY";
pub const AVAILABILITY_ZONE: &str = "AVAILABILITY_ZONE";
pub const REGION: &str = "REGION";

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
}

/// The instance ECS registers for a running task at `ip`, its ENI's address (awsvpc).
pub fn instance_for(t: &Task, ip: Ipv4Addr, r: &Registration<'_>) -> Instance {
    let mut attrs = BTreeMap::new();
    attrs.insert(sd::INSTANCE_IPV4.to_owned(), ip.to_string());
    if let Some(port) = r.registry.port.or(r.registry.container_port) {
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
    attrs.insert(sd::INIT_HEALTH_STATUS.to_owned(), health_of(t).as_str().to_owned());
    Instance { id: task::task_id(t).to_owned(), attributes: Some(attrs), ..Default::default() }
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
        let r = Registration { cluster: "c", service: "api", region: "us-east-1", registry: &reg };
        let i = instance_for(&task(None, false), Ipv4Addr::new(172, 31, 0, 4), &r);
        assert_eq!(i.id, "abc");
        let a = i.attributes.as_ref().unwrap();
        assert_eq!(a["AWS_INSTANCE_IPV4"], "172.31.0.4");
        assert_eq!(a["AWS_INSTANCE_PORT"], "8080");
        assert_eq!(a["ECS_TASK_DEFINITION_FAMILY"], "web");
        assert_eq!(a["AVAILABILITY_ZONE"], "us-east-1a");
        assert_eq!(a["AWS_INIT_HEALTH_STATUS"], "HEALTHY");
        assert!(registered_for(&i, "c", "api") && !registered_for(&i, "c", "web"));
    }

    #[test]
    fn health_follows_the_checks() {
        assert_eq!(health_of(&task(Some(TaskHealth::Unknown), false)), HealthStatus::Healthy);
        assert_eq!(health_of(&task(Some(TaskHealth::Unknown), true)), HealthStatus::Unhealthy);
        assert_eq!(health_of(&task(Some(TaskHealth::Healthy), true)), HealthStatus::Healthy);
        assert_eq!(health_of(&task(Some(TaskHealth::Unhealthy), true)), HealthStatus::Unhealthy);
    }
}
