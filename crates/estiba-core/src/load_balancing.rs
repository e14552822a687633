//! ECS services behind Elastic Load Balancing v2 target groups: which target a task is in a
//! service's `loadBalancers` entry, how its health there reads for the scheduler, and
//! CreateService's and UpdateService's checks of those entries, with ECS's messages.

use std::net::Ipv4Addr;

use estiba_api::ecs::{LoadBalancer, NetworkMode, Task};
use estiba_api::elbv2::{TargetHealthReasonEnum, TargetHealthStateEnum, TargetTypeEnum};

use crate::deploy::LbHealth;
use crate::error::{EcsError, Result};

/// What ECS reads of a target group to check a service against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupFacts {
    pub target_type: TargetTypeEnum,
    /// Whether a listener or rule of some load balancer forwards to it.
    pub attached: bool,
}

/// Checks a service's `loadBalancers` against its target groups (`group(arn)`, `None` when
/// there is no such group) and its task definition's network mode.
pub fn check_target_groups(
    lbs: &[LoadBalancer],
    mode: NetworkMode,
    group: &dyn Fn(&str) -> Option<GroupFacts>,
) -> Result<()> {
    let mut seen: Vec<(&str, &str, i32)> = Vec::new();
    for lb in lbs {
        let Some(arn) = lb.target_group_arn.as_deref() else {
            if lb.load_balancer_name.is_some() {
                return Err(EcsError::invalid(
                    "Classic Load Balancers are not supported: specify targetGroupArn and omit loadBalancerName.",
                ));
            }
            continue;
        };
        if lb.load_balancer_name.is_some() {
            return Err(EcsError::invalid(
                "loadBalancerName must be omitted for Application Load Balancers and Network Load Balancers.",
            ));
        }
        let Some(g) = group(arn) else {
            return Err(EcsError::invalid(format!("Unable to find the target group {arn}.")));
        };
        if !g.attached {
            return Err(EcsError::invalid(format!(
                "The target group with targetGroupArn {arn} does not have an associated load balancer."
            )));
        }
        let incompatible = match g.target_type {
            TargetTypeEnum::Ip => mode != NetworkMode::Awsvpc,
            TargetTypeEnum::Instance => mode == NetworkMode::Awsvpc,
            _ => true,
        };
        if incompatible {
            return Err(EcsError::invalid(format!(
                "The provided target group {arn} has target type {}, which is incompatible with the {} network mode specified in the task definition.",
                g.target_type.as_str(),
                mode.as_str()
            )));
        }
        let entry = (arn, lb.container_name.as_deref().unwrap_or(""), lb.container_port.unwrap_or(0));
        if seen.contains(&entry) {
            return Err(EcsError::invalid(format!(
                "The target group {arn} is specified more than once for container {} and port {}.",
                entry.1, entry.2
            )));
        }
        seen.push(entry);
    }
    Ok(())
}

/// The target a task is in one `loadBalancers` entry: its ENI address and the container port
/// (`ip` groups), or the EC2 instance id of its container instance and the host port its
/// container port is bound to (`instance` groups). `None` while the task has neither yet.
pub fn target_of(
    t: &Task,
    lb: &LoadBalancer,
    target_type: TargetTypeEnum,
    instance_id: Option<&str>,
) -> Option<(String, u16)> {
    let port = lb.container_port?;
    match target_type {
        TargetTypeEnum::Ip => {
            let ip: Ipv4Addr = crate::task::private_ipv4(t)?;
            Some((ip.to_string(), u16::try_from(port).ok()?))
        }
        TargetTypeEnum::Instance => {
            let host_port = crate::task::host_port(t, lb.container_name.as_deref()?, port)?;
            Some((instance_id?.to_owned(), u16::try_from(host_port).ok()?))
        }
        _ => None,
    }
}

/// One target group's word on a task's target: registered or not, and its health state,
/// reason and description.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupHealth<'a> {
    pub target_group: &'a str,
    pub port: i32,
    pub registered: bool,
    pub state: Option<TargetHealthStateEnum>,
    pub reason: Option<TargetHealthReasonEnum>,
    pub description: Option<&'a str>,
}

/// A task's standing across its service's target groups: healthy when healthy (or unchecked)
/// in every one, unhealthy as soon as one says so, pending otherwise.
pub fn combine(groups: &[GroupHealth<'_>]) -> LbHealth {
    if groups.is_empty() {
        return LbHealth::NotBehind;
    }
    let mut all_healthy = true;
    for g in groups {
        match (g.registered, g.state) {
            (true, Some(TargetHealthStateEnum::Healthy | TargetHealthStateEnum::Unavailable)) => {}
            (true, Some(TargetHealthStateEnum::Unhealthy)) => {
                let reason = g
                    .description
                    .map(str::to_owned)
                    .or_else(|| g.reason.map(|r| r.as_str().to_owned()))
                    .unwrap_or_else(|| "Health checks failed".into());
                return LbHealth::Unhealthy { target_group: g.target_group.to_owned(), port: g.port, reason };
            }
            _ => all_healthy = false,
        }
    }
    if all_healthy {
        LbHealth::Healthy
    } else {
        LbHealth::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_api::ecs::{Attachment, Container, KeyValuePair, NetworkBinding};

    const TG: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/web/0123456789abcdef";

    fn lb(port: i32) -> LoadBalancer {
        LoadBalancer {
            target_group_arn: Some(TG.into()),
            container_name: Some("web".into()),
            container_port: Some(port),
            ..Default::default()
        }
    }

    #[test]
    fn service_checks_have_ecs_messages() {
        let ip = |_: &str| Some(GroupFacts { target_type: TargetTypeEnum::Ip, attached: true });
        assert!(check_target_groups(&[lb(80)], NetworkMode::Awsvpc, &ip).is_ok());
        let e = check_target_groups(&[lb(80)], NetworkMode::Bridge, &ip).unwrap_err();
        assert_eq!(
            e.message,
            format!("The provided target group {TG} has target type ip, which is incompatible with the bridge network mode specified in the task definition.")
        );
        let inst = |_: &str| Some(GroupFacts { target_type: TargetTypeEnum::Instance, attached: true });
        assert!(check_target_groups(&[lb(80)], NetworkMode::Bridge, &inst).is_ok());
        assert!(check_target_groups(&[lb(80)], NetworkMode::Awsvpc, &inst)
            .unwrap_err()
            .message
            .contains("target type instance"));
        let loose = |_: &str| Some(GroupFacts { target_type: TargetTypeEnum::Ip, attached: false });
        assert_eq!(
            check_target_groups(&[lb(80)], NetworkMode::Awsvpc, &loose).unwrap_err().message,
            format!("The target group with targetGroupArn {TG} does not have an associated load balancer.")
        );
        let none = |_: &str| None;
        assert!(check_target_groups(&[lb(80)], NetworkMode::Awsvpc, &none)
            .unwrap_err()
            .message
            .contains("Unable to find"));
        assert!(check_target_groups(&[lb(80), lb(80)], NetworkMode::Awsvpc, &ip).is_err());
        assert!(check_target_groups(&[lb(80), lb(81)], NetworkMode::Awsvpc, &ip).is_ok());
    }

    #[test]
    fn targets_are_the_eni_or_the_instance_and_host_port() {
        let mut t = Task::default();
        assert_eq!(target_of(&t, &lb(80), TargetTypeEnum::Ip, None), None);
        t.attachments = Some(vec![Attachment {
            r#type: Some("ElasticNetworkInterface".into()),
            details: Some(vec![KeyValuePair {
                name: Some("privateIPv4Address".into()),
                value: Some("172.31.0.9".into()),
            }]),
            ..Default::default()
        }]);
        assert_eq!(target_of(&t, &lb(80), TargetTypeEnum::Ip, None), Some(("172.31.0.9".into(), 80)));
        t.containers = Some(vec![Container {
            name: Some("web".into()),
            network_bindings: Some(vec![NetworkBinding {
                container_port: Some(80),
                host_port: Some(32768),
                ..Default::default()
            }]),
            ..Default::default()
        }]);
        assert_eq!(target_of(&t, &lb(80), TargetTypeEnum::Instance, Some("i-0123")), Some(("i-0123".into(), 32768)));
        assert_eq!(target_of(&t, &lb(81), TargetTypeEnum::Instance, Some("i-0123")), None);
        assert_eq!(target_of(&t, &lb(80), TargetTypeEnum::Instance, None), None);
    }

    #[test]
    fn health_combines_over_groups() {
        let g = |registered, state| GroupHealth {
            target_group: TG,
            port: 80,
            registered,
            state,
            reason: Some(TargetHealthReasonEnum::TargetResponseCodeMismatch),
            description: None,
        };
        assert_eq!(combine(&[]), LbHealth::NotBehind);
        assert_eq!(combine(&[g(true, Some(TargetHealthStateEnum::Healthy))]), LbHealth::Healthy);
        assert_eq!(combine(&[g(true, Some(TargetHealthStateEnum::Unavailable))]), LbHealth::Healthy);
        assert_eq!(combine(&[g(true, Some(TargetHealthStateEnum::Healthy)), g(false, None)]), LbHealth::Pending);
        assert_eq!(combine(&[g(true, Some(TargetHealthStateEnum::Initial))]), LbHealth::Pending);
        let sick =
            combine(&[g(true, Some(TargetHealthStateEnum::Healthy)), g(true, Some(TargetHealthStateEnum::Unhealthy))]);
        assert_eq!(
            sick,
            LbHealth::Unhealthy {
                target_group: TG.into(),
                port: 80,
                reason: TargetHealthReasonEnum::TargetResponseCodeMismatch.as_str().into()
            }
        );
    }
}
