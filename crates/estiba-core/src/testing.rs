//! What unit tests of services, deployments and task sets share.

use estiba_api::ecs::{
    Compatibility, ContainerDefinition, NetworkMode, PortMapping, RegisterTaskDefinitionRequest, TaskDefinition,
};

use crate::arn::Scope;

pub fn scope() -> Scope {
    Scope::new("000000000000", "us-east-1")
}

/// Revision `rev` of the Fargate family `web`: one container `app` with these container ports.
pub fn fargate_td(rev: i32, ports: &[i32]) -> TaskDefinition {
    let port_mappings =
        (!ports.is_empty()).then(|| ports.iter().map(|p| PortMapping { container_port: Some(*p), ..Default::default() }).collect());
    let req = RegisterTaskDefinitionRequest {
        family: "web".into(),
        network_mode: Some(NetworkMode::Awsvpc),
        cpu: Some("256".into()),
        memory: Some("512".into()),
        requires_compatibilities: Some(vec![Compatibility::Fargate]),
        container_definitions: vec![ContainerDefinition {
            name: Some("app".into()),
            image: Some("busybox".into()),
            port_mappings,
            ..Default::default()
        }],
        ..Default::default()
    };
    crate::taskdef::register(&scope(), &req, rev, 0.0).unwrap()
}
