//! ECS Express Mode (CreateExpressGatewayService, Describe, Update, Delete): the defaults AWS
//! documents, the checks of a request with ECS's exception and message, and what an Express
//! service is made of as plain values: the task definition to register, the service to
//! create or update, the target group's health check, the endpoint's host name (the listener
//! rule's host-header condition), the target tracking configuration, and the document that
//! records it all (`ecs-express/<account>/<region>/services/<cluster>/<name>`).
//!
//! No I/O: the server reads the view, asks these functions, and writes one transaction with
//! the ELBv2, ECS and Application Auto Scaling documents they describe.

use estiba_api::application_autoscaling::{
    MetricType, PredefinedMetricSpecification, TargetTrackingScalingPolicyConfiguration,
};
use estiba_api::ecs::*;
use serde::{Deserialize, Serialize};

use crate::{bail, fargate, names, taskdef, Now, Result, Scope};

/// The developer guide's task definition defaults (`cpu: 1024`, `memory: 2048`). The API
/// reference says 256 and 512; the guide's "Task definition defaults" table is followed.
pub const DEFAULT_CPU: &str = "1024";
pub const DEFAULT_MEMORY: &str = "2048";
pub const DEFAULT_CONTAINER_PORT: i32 = 80;
pub const DEFAULT_HEALTH_CHECK_PATH: &str = "/ping";
pub const DEFAULT_MIN_TASKS: i32 = 1;
pub const DEFAULT_MAX_TASKS: i32 = 20;
pub const DEFAULT_TARGET_VALUE: i32 = 60;
/// Express services of a VPC share an Application Load Balancer, up to this many each.
pub const SERVICES_PER_LOAD_BALANCER: usize = 25;
/// The name of the one container of an Express service's task definition.
pub const CONTAINER_NAME: &str = "Main";
/// The shared load balancer's listener (HTTP: estiba has no ACM to issue a certificate).
pub const LISTENER_PORT: i32 = 80;

/// The store's key prefix and kind of Express service documents.
pub const PREFIX: &str = "ecs-express";
pub const SERVICES: &str = "services";

/// The key of an Express service's document.
pub fn key(scope: &Scope, cluster: &str, name: &str) -> String {
    format!("{PREFIX}/{}/{}/{SERVICES}/{cluster}/{name}", scope.account, scope.region)
}

/// The prefix of every Express service document of a scope.
pub fn scope_prefix(scope: &Scope) -> String {
    format!("{PREFIX}/{}/{}/{SERVICES}/", scope.account, scope.region)
}

/// What Express Mode made for a service, by ARN (deleted with it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub load_balancer_arn: String,
    pub listener_arn: String,
    pub rule_arn: String,
    pub target_group_arn: String,
    pub task_definition_family: String,
    pub scalable_target_arn: String,
    pub policy_arn: String,
    pub policy_name: String,
    pub alarm_names: Vec<String>,
}

/// An Express service: its configurations (the newest last) and the resources made for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpressDoc {
    pub cluster: String,
    pub service_name: String,
    pub service_arn: String,
    pub infrastructure_role_arn: String,
    /// The endpoint's host name (`<name>-<id>.ecs.<region>.on.aws`).
    pub host: String,
    pub created_at: Now,
    pub updated_at: Now,
    pub configurations: Vec<ExpressGatewayServiceConfiguration>,
    pub resources: Resources,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl ExpressDoc {
    /// The configuration in force (the last one written).
    pub fn current(&self) -> &ExpressGatewayServiceConfiguration {
        self.configurations.last().expect("an Express service has a configuration")
    }
}

/// A name for a service created without one: `express-<8 hex>`.
pub fn generated_name(hex: &str) -> String {
    format!("express-{}", &hex[..8.min(hex.len())])
}

/// The endpoint's host name: `<name>-<id>.ecs.<region>.on.aws`, lowercased, the first label
/// at most 63 characters (a DNS label), underscores made hyphens.
pub fn endpoint_host(name: &str, id: &str, region: &str) -> String {
    let id = &id[..8.min(id.len())];
    let base: String = name.to_ascii_lowercase().chars().map(|c| if c == '_' { '-' } else { c }).collect();
    let keep = 63 - id.len() - 1;
    let base = base[..keep.min(base.len())].trim_end_matches('-');
    format!("{base}-{id}.ecs.{region}.on.aws")
}

/// The endpoint as `ingressPaths` shows it. The shared load balancer listens on HTTP only.
pub fn endpoint_url(host: &str) -> String {
    format!("http://{host}")
}

/// CreateExpressGatewayService's checks that need no state: the service name and everything
/// the configuration holds.
pub fn check_create(req: &CreateExpressGatewayServiceRequest) -> Result<()> {
    if let Some(n) = &req.service_name {
        if !names::valid_name(n) {
            bail!(
                invalid,
                "Service name '{}' is not valid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
                names::shown(n)
            );
        }
    }
    for (field, v) in
        [("executionRoleArn", &req.execution_role_arn), ("infrastructureRoleArn", &req.infrastructure_role_arn)]
    {
        if v.trim().is_empty() {
            bail!(invalid, "{field} must not be empty.");
        }
    }
    if let Some(tags) = &req.tags {
        crate::tags::validate(tags)?;
    }
    Ok(())
}

/// Create's configuration: the request with Express Mode's defaults filled in, checked.
/// `network` is the default VPC's (its subnets and security group) when the request has none.
pub fn configuration(
    req: &CreateExpressGatewayServiceRequest,
    network: &ExpressGatewayServiceNetworkConfiguration,
    now: Now,
) -> Result<ExpressGatewayServiceConfiguration> {
    let cfg = ExpressGatewayServiceConfiguration {
        cpu: Some(req.cpu.clone().unwrap_or_else(|| DEFAULT_CPU.into())),
        memory: Some(req.memory.clone().unwrap_or_else(|| DEFAULT_MEMORY.into())),
        execution_role_arn: Some(req.execution_role_arn.clone()),
        task_role_arn: req.task_role_arn.clone(),
        health_check_path: Some(req.health_check_path.clone().unwrap_or_else(|| DEFAULT_HEALTH_CHECK_PATH.into())),
        network_configuration: Some(network_with_defaults(req.network_configuration.as_ref(), network)),
        primary_container: Some(container_with_defaults(&req.primary_container, None)),
        scaling_target: Some(scaling_with_defaults(req.scaling_target.as_ref(), None)),
        created_at: Some(now),
        ingress_paths: None,
        service_revision_arn: None,
    };
    check_configuration(&cfg)?;
    Ok(cfg)
}

/// Update's configuration: what the request names replaces the current one's, the rest is
/// kept (inside `scalingTarget` and `primaryContainer` too).
pub fn updated_configuration(
    current: &ExpressGatewayServiceConfiguration,
    req: &UpdateExpressGatewayServiceRequest,
    network: &ExpressGatewayServiceNetworkConfiguration,
    now: Now,
) -> Result<ExpressGatewayServiceConfiguration> {
    let mut cfg = current.clone();
    if let Some(v) = &req.cpu {
        cfg.cpu = Some(v.clone());
    }
    if let Some(v) = &req.memory {
        cfg.memory = Some(v.clone());
    }
    if let Some(v) = &req.execution_role_arn {
        cfg.execution_role_arn = Some(v.clone());
    }
    if let Some(v) = &req.task_role_arn {
        cfg.task_role_arn = Some(v.clone());
    }
    if let Some(v) = &req.health_check_path {
        cfg.health_check_path = Some(v.clone());
    }
    if let Some(n) = &req.network_configuration {
        cfg.network_configuration = Some(network_with_defaults(Some(n), network));
    }
    if let Some(c) = &req.primary_container {
        cfg.primary_container = Some(container_with_defaults(c, current.primary_container.as_ref()));
    }
    if let Some(s) = &req.scaling_target {
        cfg.scaling_target = Some(scaling_with_defaults(Some(s), current.scaling_target.as_ref()));
    }
    cfg.created_at = Some(now);
    cfg.service_revision_arn = None;
    check_configuration(&cfg)?;
    Ok(cfg)
}

fn network_with_defaults(
    asked: Option<&ExpressGatewayServiceNetworkConfiguration>,
    default: &ExpressGatewayServiceNetworkConfiguration,
) -> ExpressGatewayServiceNetworkConfiguration {
    let pick = |a: Option<&Vec<String>>, d: &Option<Vec<String>>| match a {
        Some(v) if !v.is_empty() => Some(v.clone()),
        _ => d.clone(),
    };
    ExpressGatewayServiceNetworkConfiguration {
        subnets: pick(asked.and_then(|a| a.subnets.as_ref()), &default.subnets),
        security_groups: pick(asked.and_then(|a| a.security_groups.as_ref()), &default.security_groups),
    }
}

fn container_with_defaults(
    c: &ExpressGatewayContainer,
    current: Option<&ExpressGatewayContainer>,
) -> ExpressGatewayContainer {
    let mut out = c.clone();
    if out.image.is_empty() {
        if let Some(cur) = current {
            out.image = cur.image.clone();
        }
    }
    out.container_port =
        Some(c.container_port.or(current.and_then(|x| x.container_port)).unwrap_or(DEFAULT_CONTAINER_PORT));
    out
}

fn scaling_with_defaults(
    s: Option<&ExpressGatewayScalingTarget>,
    current: Option<&ExpressGatewayScalingTarget>,
) -> ExpressGatewayScalingTarget {
    let pick = |f: fn(&ExpressGatewayScalingTarget) -> Option<i32>, default: i32| {
        s.and_then(f).or(current.and_then(f)).unwrap_or(default)
    };
    ExpressGatewayScalingTarget {
        min_task_count: Some(pick(|t| t.min_task_count, DEFAULT_MIN_TASKS)),
        max_task_count: Some(pick(|t| t.max_task_count, DEFAULT_MAX_TASKS)),
        auto_scaling_metric: Some(
            s.and_then(|t| t.auto_scaling_metric)
                .or(current.and_then(|t| t.auto_scaling_metric))
                .unwrap_or(ExpressGatewayServiceScalingMetric::AverageCpu),
        ),
        auto_scaling_target_value: Some(pick(|t| t.auto_scaling_target_value, DEFAULT_TARGET_VALUE)),
    }
}

/// A complete configuration's checks, with ECS's `InvalidParameterException` and the member
/// named as the API names it.
pub fn check_configuration(cfg: &ExpressGatewayServiceConfiguration) -> Result<()> {
    let c = cfg.primary_container.as_ref().expect("filled in");
    if c.image.trim().is_empty() {
        bail!(invalid, "primaryContainer.image must not be empty.");
    }
    let port = c.container_port.unwrap_or(DEFAULT_CONTAINER_PORT);
    if !(1..=65535).contains(&port) {
        bail!(invalid, "primaryContainer.containerPort must be between 1 and 65535, got {port}.");
    }
    if let Some(l) = &c.aws_logs_configuration {
        if l.log_group.trim().is_empty() || l.log_stream_prefix.trim().is_empty() {
            bail!(invalid, "primaryContainer.awsLogsConfiguration needs a logGroup and a logStreamPrefix.");
        }
    }
    let path = cfg.health_check_path.as_deref().unwrap_or_default();
    if !path.starts_with('/') || path.len() > 1024 || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(invalid, "healthCheckPath must start with a forward slash (/) and have at most 1024 characters without spaces, got '{path}'.");
    }
    let size = taskdef::task_size(cfg.cpu.as_deref(), cfg.memory.as_deref())
        .map_err(|e| crate::EcsError::invalid(e.message))?;
    match (size.cpu, size.memory) {
        (Some(c), Some(m)) if fargate::valid_size(c, m) => {}
        (c, m) => bail!(
            invalid,
            "No Fargate configuration exists for given values: {} CPU, {} memory. See the Amazon ECS documentation for the valid values.",
            c.unwrap_or_default(),
            m.unwrap_or_default()
        ),
    }
    let s = cfg.scaling_target.as_ref().expect("filled in");
    let (min, max) = (s.min_task_count.unwrap_or_default(), s.max_task_count.unwrap_or_default());
    if min < 0 {
        bail!(invalid, "scalingTarget.minTaskCount must be greater than or equal to 0, got {min}.");
    }
    if max < 1 {
        bail!(invalid, "scalingTarget.maxTaskCount must be greater than or equal to 1, got {max}.");
    }
    if min > max {
        bail!(invalid, "scalingTarget.minTaskCount ({min}) cannot be greater than scalingTarget.maxTaskCount ({max}).");
    }
    let target = s.auto_scaling_target_value.unwrap_or_default();
    let percent = s.auto_scaling_metric != Some(ExpressGatewayServiceScalingMetric::RequestCountPerTarget);
    if target < 1 || (percent && target > 100) {
        bail!(
            invalid,
            "scalingTarget.autoScalingTargetValue must be {} for {}, got {target}.",
            if percent { "between 1 and 100" } else { "at least 1" },
            s.auto_scaling_metric.unwrap_or_default().as_str()
        );
    }
    let n = cfg.network_configuration.as_ref();
    if n.and_then(|n| n.subnets.as_ref()).is_none_or(|s| s.is_empty()) {
        bail!(invalid, "networkConfiguration.subnets must name at least one subnet.");
    }
    Ok(())
}

/// The task definition an Express configuration runs: one essential container named
/// [`CONTAINER_NAME`] publishing the container port, awsvpc, Fargate.
pub fn task_definition_request(
    family: &str,
    cfg: &ExpressGatewayServiceConfiguration,
    region: &str,
) -> RegisterTaskDefinitionRequest {
    let c = cfg.primary_container.clone().unwrap_or_default();
    let log_configuration = c.aws_logs_configuration.as_ref().map(|l| LogConfiguration {
        log_driver: LogDriver::Awslogs,
        options: Some(
            [
                ("awslogs-group", l.log_group.as_str()),
                ("awslogs-region", region),
                ("awslogs-stream-prefix", l.log_stream_prefix.as_str()),
                ("awslogs-create-group", "true"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        secret_options: None,
    });
    RegisterTaskDefinitionRequest {
        family: family.to_string(),
        network_mode: Some(NetworkMode::Awsvpc),
        requires_compatibilities: Some(vec![Compatibility::Fargate]),
        cpu: cfg.cpu.clone(),
        memory: cfg.memory.clone(),
        execution_role_arn: cfg.execution_role_arn.clone(),
        task_role_arn: cfg.task_role_arn.clone(),
        container_definitions: vec![ContainerDefinition {
            name: Some(CONTAINER_NAME.into()),
            image: Some(c.image.clone()),
            essential: Some(true),
            command: c.command.clone(),
            environment: c.environment.clone(),
            secrets: c.secrets.clone(),
            repository_credentials: c
                .repository_credentials
                .as_ref()
                .and_then(|r| r.credentials_parameter.clone())
                .map(|p| RepositoryCredentials { credentials_parameter: p }),
            port_mappings: Some(vec![PortMapping {
                container_port: c.container_port,
                protocol: Some(TransportProtocol::Tcp),
                ..Default::default()
            }]),
            log_configuration,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The ECS network configuration of an Express configuration (awsvpc, no public address).
pub fn network_configuration(cfg: &ExpressGatewayServiceConfiguration) -> NetworkConfiguration {
    let n = cfg.network_configuration.clone().unwrap_or_default();
    NetworkConfiguration {
        awsvpc_configuration: Some(AwsVpcConfiguration {
            subnets: n.subnets.unwrap_or_default(),
            security_groups: n.security_groups,
            assign_public_ip: Some(AssignPublicIp::Disabled),
        }),
    }
}

/// The load balancer entry of the service: the target group, the container and its port.
pub fn load_balancers(cfg: &ExpressGatewayServiceConfiguration, target_group_arn: &str) -> Vec<LoadBalancer> {
    vec![LoadBalancer {
        target_group_arn: Some(target_group_arn.to_string()),
        container_name: Some(CONTAINER_NAME.into()),
        container_port: cfg.primary_container.as_ref().and_then(|c| c.container_port),
        ..Default::default()
    }]
}

/// The CreateService an Express service amounts to: Fargate, `minTaskCount` tasks, behind the
/// target group.
pub fn service_request(
    name: &str,
    cluster: &str,
    task_definition_arn: &str,
    cfg: &ExpressGatewayServiceConfiguration,
    target_group_arn: &str,
    tags: &[Tag],
) -> CreateServiceRequest {
    CreateServiceRequest {
        service_name: name.to_string(),
        cluster: Some(cluster.to_string()),
        task_definition: Some(task_definition_arn.to_string()),
        desired_count: Some(cfg.scaling_target.as_ref().and_then(|s| s.min_task_count).unwrap_or(DEFAULT_MIN_TASKS)),
        launch_type: Some(LaunchType::Fargate),
        network_configuration: Some(network_configuration(cfg)),
        load_balancers: Some(load_balancers(cfg, target_group_arn)),
        health_check_grace_period_seconds: Some(0),
        propagate_tags: Some(PropagateTags::Service),
        tags: (!tags.is_empty()).then(|| tags.to_vec()),
        ..Default::default()
    }
}

/// The UpdateService an Express update amounts to: the new task definition (a new
/// deployment), network and load balancer port as configured. The desired count is the
/// scaling policy's business and is left alone.
pub fn update_service_request(
    service_arn: &str,
    cluster: &str,
    task_definition_arn: &str,
    cfg: &ExpressGatewayServiceConfiguration,
    target_group_arn: &str,
) -> UpdateServiceRequest {
    UpdateServiceRequest {
        service: service_arn.to_string(),
        cluster: Some(cluster.to_string()),
        task_definition: Some(task_definition_arn.to_string()),
        network_configuration: Some(network_configuration(cfg)),
        load_balancers: Some(load_balancers(cfg, target_group_arn)),
        force_new_deployment: true,
        ..Default::default()
    }
}

/// The name of the target tracking policy Express Mode puts on the service.
pub fn policy_name(service: &str) -> String {
    format!("{service}-express-target-tracking")
}

/// The target tracking configuration of a scaling target: AVERAGE_CPU and AVERAGE_MEMORY are
/// ECS's predefined utilisation metrics, REQUEST_COUNT_PER_TARGET is the load balancer's
/// (`resource_label`: `app/<lb>/<id>/targetgroup/<tg>/<id>`).
pub fn tracking_configuration(
    s: &ExpressGatewayScalingTarget,
    resource_label: &str,
) -> TargetTrackingScalingPolicyConfiguration {
    let (metric, label) = match s.auto_scaling_metric.unwrap_or_default() {
        ExpressGatewayServiceScalingMetric::AverageCpu => (MetricType::ECSServiceAverageCPUUtilization, None),
        ExpressGatewayServiceScalingMetric::AverageMemory => (MetricType::ECSServiceAverageMemoryUtilization, None),
        ExpressGatewayServiceScalingMetric::RequestCountPerTarget => {
            (MetricType::ALBRequestCountPerTarget, Some(resource_label.to_string()))
        }
    };
    TargetTrackingScalingPolicyConfiguration {
        target_value: s.auto_scaling_target_value.unwrap_or(DEFAULT_TARGET_VALUE) as f64,
        predefined_metric_specification: Some(PredefinedMetricSpecification {
            predefined_metric_type: metric,
            resource_label: label,
        }),
        ..Default::default()
    }
}

/// The `ALBRequestCountPerTarget` resource label of a load balancer and target group (from
/// their ARNs' resource parts).
pub fn resource_label(load_balancer_arn: &str, target_group_arn: &str) -> String {
    let lb = load_balancer_arn.split_once(":loadbalancer/").map_or("", |(_, r)| r);
    let tg = target_group_arn.rsplit_once(':').map_or("", |(_, r)| r);
    format!("{lb}/{tg}")
}

/// An Express service's status from its ECS service's (`ACTIVE`, `DRAINING`, `INACTIVE`; a
/// service that is gone is INACTIVE).
pub fn status(ecs_status: Option<&str>) -> ExpressGatewayServiceStatus {
    let code = match ecs_status {
        Some("ACTIVE") => ExpressGatewayServiceStatusCode::Active,
        Some("DRAINING") => ExpressGatewayServiceStatusCode::Draining,
        _ => ExpressGatewayServiceStatusCode::Inactive,
    };
    ExpressGatewayServiceStatus { status_code: Some(code), status_reason: None }
}

/// A configuration as the API shows it: with its ingress path.
pub fn shown_configuration(
    doc: &ExpressDoc,
    cfg: &ExpressGatewayServiceConfiguration,
) -> ExpressGatewayServiceConfiguration {
    let mut c = cfg.clone();
    c.ingress_paths =
        Some(vec![IngressPathSummary { access_type: AccessType::Public, endpoint: endpoint_url(&doc.host) }]);
    c
}

/// The service as Describe (and Create, Delete) show it. `active_revisions` are the ECS
/// service's current revisions (the new and old ones while a deployment rolls, one when
/// steady): `activeConfigurations` are the configurations that run them, newest first (the
/// current one when none matches); none once the service is INACTIVE.
pub fn shown(
    doc: &ExpressDoc,
    ecs_status: Option<&str>,
    current_deployment: Option<String>,
    active_revisions: &[String],
    with_tags: bool,
) -> ECSExpressGatewayService {
    let active = match ecs_status {
        Some("ACTIVE") | Some("DRAINING") => {
            let mut v: Vec<_> = doc
                .configurations
                .iter()
                .rev()
                .filter(|c| c.service_revision_arn.as_ref().is_some_and(|a| active_revisions.contains(a)))
                .map(|c| shown_configuration(doc, c))
                .collect();
            if v.is_empty() {
                v.push(shown_configuration(doc, doc.current()));
            }
            v
        }
        _ => vec![],
    };
    ECSExpressGatewayService {
        cluster: Some(doc.cluster.clone()),
        service_name: Some(doc.service_name.clone()),
        service_arn: Some(doc.service_arn.clone()),
        infrastructure_role_arn: Some(doc.infrastructure_role_arn.clone()),
        status: Some(status(ecs_status)),
        current_deployment,
        active_configurations: Some(active),
        tags: with_tags.then(|| doc.tags.clone()),
        created_at: Some(doc.created_at),
        updated_at: Some(doc.updated_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> ExpressGatewayServiceNetworkConfiguration {
        ExpressGatewayServiceNetworkConfiguration {
            subnets: Some(vec!["subnet-a".into(), "subnet-b".into()]),
            security_groups: Some(vec!["sg-1".into()]),
        }
    }

    fn req(image: &str) -> CreateExpressGatewayServiceRequest {
        CreateExpressGatewayServiceRequest {
            execution_role_arn: "arn:aws:iam::1:role/exec".into(),
            infrastructure_role_arn: "arn:aws:iam::1:role/infra".into(),
            primary_container: ExpressGatewayContainer { image: image.into(), ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn create_fills_express_defaults() {
        let c = configuration(&req("repo/app:1"), &net(), 5.0).unwrap();
        assert_eq!((c.cpu.as_deref(), c.memory.as_deref()), (Some("1024"), Some("2048")));
        assert_eq!(c.health_check_path.as_deref(), Some("/ping"));
        assert_eq!(c.primary_container.as_ref().unwrap().container_port, Some(80));
        let s = c.scaling_target.unwrap();
        assert_eq!((s.min_task_count, s.max_task_count, s.auto_scaling_target_value), (Some(1), Some(20), Some(60)));
        assert_eq!(s.auto_scaling_metric, Some(ExpressGatewayServiceScalingMetric::AverageCpu));
        assert_eq!(c.network_configuration, Some(net()));
        assert_eq!(c.created_at, Some(5.0));
    }

    #[test]
    fn bad_configurations_are_invalid_parameters() {
        type Change = Box<dyn Fn(&mut CreateExpressGatewayServiceRequest)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|r| r.primary_container.image = " ".into()), "primaryContainer.image"),
            (Box::new(|r| r.primary_container.container_port = Some(70000)), "containerPort"),
            (Box::new(|r| r.health_check_path = Some("health".into())), "healthCheckPath"),
            (Box::new(|r| r.cpu = Some("300".into())), "Fargate"),
            (
                Box::new(|r| {
                    r.scaling_target = Some(ExpressGatewayScalingTarget {
                        min_task_count: Some(5),
                        max_task_count: Some(2),
                        ..Default::default()
                    })
                }),
                "cannot be greater",
            ),
            (
                Box::new(|r| {
                    r.scaling_target =
                        Some(ExpressGatewayScalingTarget { auto_scaling_target_value: Some(150), ..Default::default() })
                }),
                "between 1 and 100",
            ),
        ];
        for (change, words) in cases {
            let mut r = req("app");
            change(&mut r);
            let e = configuration(&r, &net(), 0.0).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidParameterException, "{words}");
            assert!(e.message.contains(words), "{} lacks {words}", e.message);
        }
        let mut r = req("app");
        r.service_name = Some("bad name".into());
        assert_eq!(check_create(&r).unwrap_err().code, ErrorCode::InvalidParameterException);
    }

    #[test]
    fn requests_per_target_may_exceed_100() {
        let mut r = req("app");
        r.scaling_target = Some(ExpressGatewayScalingTarget {
            auto_scaling_metric: Some(ExpressGatewayServiceScalingMetric::RequestCountPerTarget),
            auto_scaling_target_value: Some(1000),
            ..Default::default()
        });
        assert!(configuration(&r, &net(), 0.0).is_ok());
    }

    #[test]
    fn update_keeps_what_it_does_not_name() {
        let cur = configuration(&req("app:1"), &net(), 0.0).unwrap();
        let up = UpdateExpressGatewayServiceRequest {
            service_arn: "x".into(),
            cpu: Some("512".into()),
            memory: Some("1024".into()),
            primary_container: Some(ExpressGatewayContainer { image: "app:2".into(), ..Default::default() }),
            scaling_target: Some(ExpressGatewayScalingTarget { max_task_count: Some(4), ..Default::default() }),
            ..Default::default()
        };
        let c = updated_configuration(&cur, &up, &net(), 9.0).unwrap();
        assert_eq!(c.primary_container.as_ref().unwrap().image, "app:2");
        assert_eq!(c.primary_container.as_ref().unwrap().container_port, Some(80));
        assert_eq!(c.cpu.as_deref(), Some("512"));
        let s = c.scaling_target.unwrap();
        assert_eq!((s.min_task_count, s.max_task_count, s.auto_scaling_target_value), (Some(1), Some(4), Some(60)));
        assert_eq!(c.health_check_path.as_deref(), Some("/ping"));
        assert_eq!(c.created_at, Some(9.0));
    }

    #[test]
    fn endpoint_hosts_are_dns_labels_under_on_aws() {
        assert_eq!(endpoint_host("My_App", "0123456789abcdef", "us-east-1"), "my-app-01234567.ecs.us-east-1.on.aws");
        let long = "a".repeat(255);
        let h = endpoint_host(&long, "deadbeef", "eu-west-1");
        assert_eq!(h.split('.').next().unwrap().len(), 63);
        assert!(h.ends_with("-deadbeef.ecs.eu-west-1.on.aws"));
        assert_eq!(endpoint_url("x.ecs.r.on.aws"), "http://x.ecs.r.on.aws");
    }

    #[test]
    fn task_definition_is_one_fargate_container_on_the_port() {
        let mut r = req("img:1");
        r.primary_container.container_port = Some(8080);
        r.primary_container.command = Some(vec!["sh".into()]);
        r.primary_container.aws_logs_configuration =
            Some(ExpressGatewayServiceAwsLogsConfiguration { log_group: "/g".into(), log_stream_prefix: "ecs".into() });
        let c = configuration(&r, &net(), 0.0).unwrap();
        let td = task_definition_request("fam", &c, "us-east-1");
        assert_eq!(td.network_mode, Some(NetworkMode::Awsvpc));
        assert_eq!(td.requires_compatibilities, Some(vec![Compatibility::Fargate]));
        let [cd] = &td.container_definitions[..] else { panic!("one container") };
        assert_eq!(cd.name.as_deref(), Some(CONTAINER_NAME));
        assert_eq!(cd.port_mappings.as_ref().unwrap()[0].container_port, Some(8080));
        let opts = cd.log_configuration.as_ref().unwrap().options.as_ref().unwrap();
        assert_eq!(opts["awslogs-group"], "/g");
        assert_eq!(opts["awslogs-region"], "us-east-1");
        let svc = service_request("s", "default", "arn:td", &c, "arn:tg", &[]);
        assert_eq!(svc.desired_count, Some(1));
        assert_eq!(svc.load_balancers.unwrap()[0].container_port, Some(8080));
        let n = svc.network_configuration.unwrap().awsvpc_configuration.unwrap();
        assert_eq!(n.subnets, vec!["subnet-a", "subnet-b"]);
    }

    #[test]
    fn tracking_metrics_follow_the_scaling_metric() {
        let lb = "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/ecs-express-1/0123456789abcdef";
        let tg = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/ecs-express-tg/fedcba9876543210";
        let label = resource_label(lb, tg);
        assert_eq!(label, "app/ecs-express-1/0123456789abcdef/targetgroup/ecs-express-tg/fedcba9876543210");
        assert!(crate::autoscaling::alb_target_group_dimension(&label).is_some());
        let t = |m| ExpressGatewayScalingTarget {
            auto_scaling_metric: Some(m),
            auto_scaling_target_value: Some(70),
            ..Default::default()
        };
        let c = tracking_configuration(&t(ExpressGatewayServiceScalingMetric::AverageCpu), &label);
        let p = c.predefined_metric_specification.unwrap();
        assert_eq!(
            (p.predefined_metric_type, p.resource_label, c.target_value),
            (MetricType::ECSServiceAverageCPUUtilization, None, 70.0)
        );
        let c = tracking_configuration(&t(ExpressGatewayServiceScalingMetric::RequestCountPerTarget), &label);
        let p = c.predefined_metric_specification.unwrap();
        assert_eq!((p.predefined_metric_type, p.resource_label), (MetricType::ALBRequestCountPerTarget, Some(label)));
    }

    #[test]
    fn active_configurations_are_those_whose_revisions_run() {
        let mut a = configuration(&req("app:1"), &net(), 0.0).unwrap();
        a.service_revision_arn = Some("rev/1".into());
        let mut b = a.clone();
        b.primary_container.as_mut().unwrap().image = "app:2".into();
        b.service_revision_arn = Some("rev/2".into());
        let doc = ExpressDoc {
            cluster: "default".into(),
            service_name: "s".into(),
            service_arn: "arn".into(),
            infrastructure_role_arn: "role".into(),
            host: "s-01234567.ecs.us-east-1.on.aws".into(),
            created_at: 0.0,
            updated_at: 0.0,
            configurations: vec![a, b],
            resources: Resources::default(),
            tags: vec![],
        };
        let images = |revs: &[&str], status| {
            let revs: Vec<String> = revs.iter().map(|r| r.to_string()).collect();
            shown(&doc, status, None, &revs, false)
                .active_configurations
                .unwrap()
                .iter()
                .map(|c| c.primary_container.as_ref().unwrap().image.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(images(&["rev/2", "rev/1"], Some("ACTIVE")), ["app:2", "app:1"]);
        assert_eq!(images(&["rev/2"], Some("ACTIVE")), ["app:2"]);
        assert_eq!(images(&[], Some("DRAINING")), ["app:2"]);
        assert!(images(&["rev/2"], Some("INACTIVE")).is_empty());
        let s = shown(&doc, Some("ACTIVE"), None, &[], false);
        let path = &s.active_configurations.unwrap()[0].ingress_paths.clone().unwrap()[0];
        assert_eq!(path.endpoint, "http://s-01234567.ecs.us-east-1.on.aws");
        assert!(s.tags.is_none());
    }

    #[test]
    fn status_follows_the_ecs_service() {
        let code = |s| status(s).status_code.unwrap();
        assert_eq!(code(Some("ACTIVE")), ExpressGatewayServiceStatusCode::Active);
        assert_eq!(code(Some("DRAINING")), ExpressGatewayServiceStatusCode::Draining);
        assert_eq!(code(Some("INACTIVE")), ExpressGatewayServiceStatusCode::Inactive);
        assert_eq!(code(None), ExpressGatewayServiceStatusCode::Inactive);
    }
}
