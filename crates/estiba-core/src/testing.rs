//! What unit tests of services, deployments and task sets share.

use estiba_api::ecs::{
    Compatibility, ContainerDefinition, Deployment, DeploymentConfiguration, DeploymentRolloutState, NetworkMode,
    PortMapping, RegisterTaskDefinitionRequest, Service, TaskDefinition,
};

use crate::arn::Scope;

pub fn scope() -> Scope {
    Scope::new("000000000000", "us-east-1")
}

/// Revision `rev` of the Fargate family `web`: one container `app` with these container ports.
pub fn fargate_td(rev: i32, ports: &[i32]) -> TaskDefinition {
    let port_mappings = (!ports.is_empty())
        .then(|| ports.iter().map(|p| PortMapping { container_port: Some(*p), ..Default::default() }).collect());
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

/// Service `web` mid-rollout: `desired` tasks, minimum and maximum healthy percent, its PRIMARY
/// deployment `ecs-svc/2` IN_PROGRESS and the COMPLETED `ecs-svc/1` it replaces.
pub fn rolling_service(desired: i32, min: i32, max: i32) -> Service {
    Service {
        service_name: Some("web".into()),
        status: Some("ACTIVE".into()),
        desired_count: desired,
        deployment_configuration: Some(DeploymentConfiguration {
            minimum_healthy_percent: Some(min),
            maximum_percent: Some(max),
            ..Default::default()
        }),
        deployments: Some(vec![
            Deployment {
                id: Some("ecs-svc/2".into()),
                status: Some(crate::service::PRIMARY.into()),
                desired_count: desired,
                rollout_state: Some(DeploymentRolloutState::InProgress),
                ..Default::default()
            },
            Deployment {
                id: Some("ecs-svc/1".into()),
                status: Some("ACTIVE".into()),
                rollout_state: Some(DeploymentRolloutState::Completed),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}
