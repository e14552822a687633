//! Elastic Load Balancing v2's rules as pure functions: names, defaults, health checks,
//! attributes, listener protocols, rule conditions and actions, priorities and tags, with
//! AWS's error codes and messages ([`ElbError`]). The server's handlers read the view, call
//! these, and write what comes back in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use estiba_api::elbv2::{
    Action, ActionTypeEnum, ErrorCode, LoadBalancerStateEnum, LoadBalancerTypeEnum, Matcher, ProtocolEnum, Rule,
    RuleCondition, Tag, TargetGroup, TargetTypeEnum,
};
use ipnet::Ipv4Net;

/// An ELBv2 error: AWS's code and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElbError {
    /// `ValidationError` (the common code, not one of the model's exceptions).
    #[error("{0}")]
    Validation(String),
    #[error("{1}")]
    Code(ErrorCode, String),
}

pub type Result<T, E = ElbError> = std::result::Result<T, E>;

impl ElbError {
    pub fn code_name(&self) -> &'static str {
        match self {
            ElbError::Validation(_) => "ValidationError",
            ElbError::Code(c, _) => c.name(),
        }
    }

    pub fn lb_not_found() -> Self {
        ElbError::Code(ErrorCode::LoadBalancerNotFoundException, "One or more load balancers not found".into())
    }

    pub fn tg_not_found() -> Self {
        ElbError::Code(ErrorCode::TargetGroupNotFoundException, "One or more target groups not found".into())
    }

    pub fn listener_not_found() -> Self {
        ElbError::Code(ErrorCode::ListenerNotFoundException, "One or more listeners not found".into())
    }

    pub fn rule_not_found() -> Self {
        ElbError::Code(ErrorCode::RuleNotFoundException, "One or more rules not found".into())
    }

    pub fn config(message: impl Into<String>) -> Self {
        ElbError::Code(ErrorCode::InvalidConfigurationRequestException, message.into())
    }

    pub fn invalid_target(message: impl Into<String>) -> Self {
        ElbError::Code(ErrorCode::InvalidTargetException, message.into())
    }
}

impl From<ElbError> for estiba_api::ApiError {
    fn from(e: ElbError) -> Self {
        match e {
            ElbError::Validation(m) => estiba_api::ApiError::new(estiba_api::Common::ValidationError, m),
            ElbError::Code(c, m) => estiba_api::ApiError::new(c, m),
        }
    }
}

fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(ElbError::Validation(message.into()))
}

/// How many tags a resource may have.
pub const MAX_TAGS: usize = 50;
/// How many rules (besides the default one) a listener may have.
pub const MAX_RULES_PER_LISTENER: usize = 100;
/// The SSL policy listeners get when none is given.
pub const DEFAULT_SSL_POLICY: &str = "ELBSecurityPolicy-2016-08";
/// The SSL policies estiba knows (the data plane maps each onto its TLS settings).
pub const SSL_POLICIES: &[(&str, &[&str])] = &[
    ("ELBSecurityPolicy-2016-08", &["TLSv1", "TLSv1.1", "TLSv1.2"]),
    ("ELBSecurityPolicy-TLS13-1-2-2021-06", &["TLSv1.2", "TLSv1.3"]),
    ("ELBSecurityPolicy-TLS13-1-2-Res-2021-06", &["TLSv1.2", "TLSv1.3"]),
    ("ELBSecurityPolicy-TLS13-1-3-2021-06", &["TLSv1.3"]),
    ("ELBSecurityPolicy-TLS-1-2-2017-01", &["TLSv1.2"]),
    ("ELBSecurityPolicy-FS-1-2-Res-2020-10", &["TLSv1.2"]),
];

// Names.

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return invalid(format!("{what} name cannot be empty"));
    }
    if name.len() > 32 {
        return invalid(format!("{what} name '{name}' cannot be longer than '32' characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return invalid(format!(
            "{what} name '{name}' can only contain characters that are alphanumeric characters or hyphens(-)"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return invalid(format!("{what} name '{name}' cannot begin or end with '-'"));
    }
    Ok(())
}

/// A load balancer's name: 1-32 alphanumerics and hyphens, no hyphen at either end, not
/// starting with `internal-`.
pub fn check_lb_name(name: &str) -> Result<()> {
    check_name("Load balancer", name)?;
    if name.starts_with("internal-") {
        return invalid(format!("Load balancer name '{name}' cannot begin with 'internal-'"));
    }
    Ok(())
}

/// A target group's name: 1-32 alphanumerics and hyphens, no hyphen at either end.
pub fn check_tg_name(name: &str) -> Result<()> {
    check_name("Target group", name)
}

// Load balancers.

/// The Route 53 hosted zone of a region's load balancers of type `t` (AWS's values; regions
/// not listed get us-east-1's).
pub fn canonical_hosted_zone_id(region: &str, t: LoadBalancerTypeEnum) -> &'static str {
    let (alb, nlb) = match region {
        "us-east-2" => ("Z3AADJGX6KTTL2", "ZLMOA37VPKANP"),
        "us-west-1" => ("Z368ELLRRE2KJ0", "Z24FKFUX50B4VW"),
        "us-west-2" => ("Z1H1FL5HABSF5", "Z18D5FSROUN65G"),
        "eu-west-1" => ("Z32O12XQLNTSW2", "Z2IFOLAFXWLO4F"),
        "eu-west-2" => ("ZHURV8PSTC4K8", "ZD4D7Y8KGAS4G"),
        "eu-central-1" => ("Z215JYRZR1TBD5", "Z3F0SRJ5LGBH90"),
        "ap-northeast-1" => ("Z14GRHDCWA56QT", "Z31USIVHYNEOWT"),
        "ap-southeast-1" => ("Z1LMS91P8CMLE5", "ZKVM4W9LS7TM"),
        "ap-southeast-2" => ("Z1GM3OXH4ZPM65", "ZCT6FZBF4DROD"),
        _ => ("Z35SXDOTRQ7X7K", "Z26RNL4JYFTOTI"),
    };
    if t == LoadBalancerTypeEnum::Network {
        nlb
    } else {
        alb
    }
}

/// A load balancer's state at `now`: `provisioning` for `provisioning_secs` after its
/// creation, `active` after.
pub fn lb_state(created: f64, now: f64, provisioning_secs: f64) -> LoadBalancerStateEnum {
    if now - created < provisioning_secs {
        LoadBalancerStateEnum::Provisioning
    } else {
        LoadBalancerStateEnum::Active
    }
}

/// The subnets a load balancer is placed in (ids and availability zones, in request order)
/// must be in distinct zones, and an application load balancer needs two zones.
pub fn check_lb_zones(t: LoadBalancerTypeEnum, zones: &[&str]) -> Result<()> {
    if zones.is_empty() {
        return invalid("At least one subnet must be specified");
    }
    let distinct: BTreeSet<&str> = zones.iter().copied().collect();
    if distinct.len() != zones.len() {
        return Err(ElbError::config(
            "A load balancer cannot be attached to multiple subnets in the same Availability Zone",
        ));
    }
    if t == LoadBalancerTypeEnum::Application && distinct.len() < 2 {
        return invalid("At least two subnets in two different Availability Zones must be specified");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Int(i64, i64),
    OneOf(&'static [&'static str]),
    Text,
}

type AttrSpec = (&'static str, &'static str, Kind);

const ALB_ATTRIBUTES: &[AttrSpec] = &[
    ("access_logs.s3.enabled", "false", Kind::Bool),
    ("access_logs.s3.bucket", "", Kind::Text),
    ("access_logs.s3.prefix", "", Kind::Text),
    ("connection_logs.s3.enabled", "false", Kind::Bool),
    ("connection_logs.s3.bucket", "", Kind::Text),
    ("connection_logs.s3.prefix", "", Kind::Text),
    ("client_keep_alive.seconds", "3600", Kind::Int(60, 604800)),
    ("deletion_protection.enabled", "false", Kind::Bool),
    ("idle_timeout.timeout_seconds", "60", Kind::Int(1, 4000)),
    ("load_balancing.cross_zone.enabled", "true", Kind::Bool),
    ("routing.http.desync_mitigation_mode", "defensive", Kind::OneOf(&["monitor", "defensive", "strictest"])),
    ("routing.http.drop_invalid_header_fields.enabled", "false", Kind::Bool),
    ("routing.http.preserve_host_header.enabled", "false", Kind::Bool),
    ("routing.http.x_amzn_tls_version_and_cipher_suite.enabled", "false", Kind::Bool),
    ("routing.http.xff_client_port.enabled", "false", Kind::Bool),
    ("routing.http.xff_header_processing.mode", "append", Kind::OneOf(&["append", "preserve", "remove"])),
    ("routing.http2.enabled", "true", Kind::Bool),
    ("waf.fail_open.enabled", "false", Kind::Bool),
    ("zonal_shift.config.enabled", "false", Kind::Bool),
];

const NLB_ATTRIBUTES: &[AttrSpec] = &[
    ("access_logs.s3.enabled", "false", Kind::Bool),
    ("access_logs.s3.bucket", "", Kind::Text),
    ("access_logs.s3.prefix", "", Kind::Text),
    ("deletion_protection.enabled", "false", Kind::Bool),
    (
        "dns_record.client_routing_policy",
        "any_availability_zone",
        Kind::OneOf(&["availability_zone_affinity", "partial_availability_zone_affinity", "any_availability_zone"]),
    ),
    ("load_balancing.cross_zone.enabled", "false", Kind::Bool),
    ("zonal_shift.config.enabled", "false", Kind::Bool),
];

/// Which family a target group belongs to: HTTP(S) groups are an application load
/// balancer's, the others a network load balancer's.
pub fn is_http(p: ProtocolEnum) -> bool {
    matches!(p, ProtocolEnum::Http | ProtocolEnum::Https)
}

fn tg_attribute_specs(protocol: Option<ProtocolEnum>) -> &'static [AttrSpec] {
    const HTTP: &[AttrSpec] = &[
        ("deregistration_delay.timeout_seconds", "300", Kind::Int(0, 3600)),
        ("load_balancing.algorithm.anomaly_mitigation", "off", Kind::OneOf(&["on", "off"])),
        (
            "load_balancing.algorithm.type",
            "round_robin",
            Kind::OneOf(&["round_robin", "least_outstanding_requests", "weighted_random"]),
        ),
        (
            "load_balancing.cross_zone.enabled",
            "use_load_balancer_configuration",
            Kind::OneOf(&["true", "false", "use_load_balancer_configuration"]),
        ),
        ("slow_start.duration_seconds", "0", Kind::Int(0, 900)),
        ("stickiness.app_cookie.cookie_name", "", Kind::Text),
        ("stickiness.app_cookie.duration_seconds", "86400", Kind::Int(1, 604800)),
        ("stickiness.enabled", "false", Kind::Bool),
        ("stickiness.lb_cookie.duration_seconds", "86400", Kind::Int(1, 604800)),
        ("stickiness.type", "lb_cookie", Kind::OneOf(&["lb_cookie", "app_cookie"])),
        ("target_group_health.dns_failover.minimum_healthy_targets.count", "1", Kind::Text),
        ("target_group_health.dns_failover.minimum_healthy_targets.percentage", "off", Kind::Text),
        ("target_group_health.unhealthy_state_routing.minimum_healthy_targets.count", "1", Kind::Text),
        ("target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage", "off", Kind::Text),
    ];
    const NET: &[AttrSpec] = &[
        ("deregistration_delay.connection_termination.enabled", "false", Kind::Bool),
        ("deregistration_delay.timeout_seconds", "300", Kind::Int(0, 3600)),
        (
            "load_balancing.cross_zone.enabled",
            "use_load_balancer_configuration",
            Kind::OneOf(&["true", "false", "use_load_balancer_configuration"]),
        ),
        ("preserve_client_ip.enabled", "true", Kind::Bool),
        ("proxy_protocol_v2.enabled", "false", Kind::Bool),
        ("stickiness.enabled", "false", Kind::Bool),
        ("stickiness.type", "source_ip", Kind::OneOf(&["source_ip"])),
        ("target_health_state.unhealthy.connection_termination.enabled", "true", Kind::Bool),
        ("target_health_state.unhealthy.draining_interval_seconds", "0", Kind::Int(0, 360000)),
    ];
    if protocol.is_none_or(is_http) {
        HTTP
    } else {
        NET
    }
}

fn listener_attribute_specs(protocol: ProtocolEnum) -> &'static [AttrSpec] {
    const HTTP: &[AttrSpec] = &[
        ("routing.http.request.x_amzn_mtls_clientcert.header_name", "", Kind::Text),
        ("routing.http.request.x_amzn_tls_version.header_name", "", Kind::Text),
        ("routing.http.response.access_control_allow_credentials.header_value", "", Kind::Text),
        ("routing.http.response.access_control_allow_headers.header_value", "", Kind::Text),
        ("routing.http.response.access_control_allow_methods.header_value", "", Kind::Text),
        ("routing.http.response.access_control_allow_origin.header_value", "", Kind::Text),
        ("routing.http.response.content_security_policy.header_value", "", Kind::Text),
        ("routing.http.response.server.enabled", "true", Kind::Bool),
        ("routing.http.response.strict_transport_security.header_value", "", Kind::Text),
        ("routing.http.response.x_content_type_options.header_value", "", Kind::Text),
        ("routing.http.response.x_frame_options.header_value", "", Kind::Text),
    ];
    const TCP: &[AttrSpec] = &[("tcp.idle_timeout.seconds", "350", Kind::Int(60, 6000))];
    const NONE: &[AttrSpec] = &[];
    match protocol {
        ProtocolEnum::Http | ProtocolEnum::Https => HTTP,
        ProtocolEnum::Tcp | ProtocolEnum::Tls | ProtocolEnum::TcpUdp => TCP,
        _ => NONE,
    }
}

fn defaults(specs: &[AttrSpec]) -> BTreeMap<String, String> {
    specs.iter().map(|(k, v, _)| (k.to_string(), v.to_string())).collect()
}

/// A load balancer's attributes at creation.
pub fn default_lb_attributes(t: LoadBalancerTypeEnum) -> BTreeMap<String, String> {
    defaults(if t == LoadBalancerTypeEnum::Network { NLB_ATTRIBUTES } else { ALB_ATTRIBUTES })
}

/// A target group's attributes at creation (NLB groups of target type `ip` do not preserve
/// client addresses by default, unless they carry UDP).
pub fn default_tg_attributes(protocol: Option<ProtocolEnum>, target_type: TargetTypeEnum) -> BTreeMap<String, String> {
    let mut a = defaults(tg_attribute_specs(protocol));
    if a.contains_key("preserve_client_ip.enabled")
        && target_type == TargetTypeEnum::Ip
        && matches!(protocol, Some(ProtocolEnum::Tcp | ProtocolEnum::Tls))
    {
        a.insert("preserve_client_ip.enabled".into(), "false".into());
    }
    a
}

/// A listener's attributes at creation.
pub fn default_listener_attributes(protocol: ProtocolEnum) -> BTreeMap<String, String> {
    defaults(listener_attribute_specs(protocol))
}

fn apply(
    what: &str,
    specs: &[AttrSpec],
    current: &BTreeMap<String, String>,
    changes: &[(Option<String>, Option<String>)],
) -> Result<BTreeMap<String, String>> {
    let mut out = current.clone();
    for (k, v) in changes {
        let key = k.as_deref().unwrap_or_default();
        let value = v.as_deref().unwrap_or_default();
        let Some((_, _, kind)) = specs.iter().find(|(name, _, _)| *name == key) else {
            return invalid(format!("{what} attribute key '{key}' is not recognized"));
        };
        let ok = match kind {
            Kind::Bool => value == "true" || value == "false",
            Kind::Int(lo, hi) => value.parse::<i64>().is_ok_and(|n| (*lo..=*hi).contains(&n)),
            Kind::OneOf(values) => values.contains(&value),
            Kind::Text => true,
        };
        if !ok {
            let expected = match kind {
                Kind::Bool => "must be 'true' or 'false'".to_string(),
                Kind::Int(lo, hi) => format!("must be an integer between {lo} and {hi}"),
                Kind::OneOf(values) => format!("must be one of [{}]", values.join(", ")),
                Kind::Text => String::new(),
            };
            return Err(ElbError::config(format!(
                "{what} attribute '{key}' value '{value}' is not valid: it {expected}"
            )));
        }
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// A load balancer's attributes after ModifyLoadBalancerAttributes.
pub fn modify_lb_attributes(
    t: LoadBalancerTypeEnum,
    current: &BTreeMap<String, String>,
    changes: &[(Option<String>, Option<String>)],
) -> Result<BTreeMap<String, String>> {
    let specs = if t == LoadBalancerTypeEnum::Network { NLB_ATTRIBUTES } else { ALB_ATTRIBUTES };
    let out = apply("Load balancer", specs, current, changes)?;
    if out.get("access_logs.s3.enabled").is_some_and(|v| v == "true")
        && out.get("access_logs.s3.bucket").is_none_or(|b| b.is_empty())
    {
        return Err(ElbError::config(
            "The value of 'access_logs.s3.bucket' cannot be empty when access logs are enabled",
        ));
    }
    Ok(out)
}

/// A target group's attributes after ModifyTargetGroupAttributes.
pub fn modify_tg_attributes(
    protocol: Option<ProtocolEnum>,
    current: &BTreeMap<String, String>,
    changes: &[(Option<String>, Option<String>)],
) -> Result<BTreeMap<String, String>> {
    let out = apply("Target group", tg_attribute_specs(protocol), current, changes)?;
    if let Some(s) = out.get("slow_start.duration_seconds").and_then(|v| v.parse::<i64>().ok()) {
        if s != 0 && !(30..=900).contains(&s) {
            return Err(ElbError::config(format!(
                "Target group attribute 'slow_start.duration_seconds' value '{s}' is not valid: it must be 0 or between 30 and 900"
            )));
        }
    }
    Ok(out)
}

/// A listener's attributes after ModifyListenerAttributes.
pub fn modify_listener_attributes(
    protocol: ProtocolEnum,
    current: &BTreeMap<String, String>,
    changes: &[(Option<String>, Option<String>)],
) -> Result<BTreeMap<String, String>> {
    apply("Listener", listener_attribute_specs(protocol), current, changes)
}

/// The deregistration delay of a group's attributes, in seconds.
pub fn deregistration_delay(attributes: &BTreeMap<String, String>) -> f64 {
    attributes.get("deregistration_delay.timeout_seconds").and_then(|v| v.parse::<f64>().ok()).unwrap_or(300.0)
}

/// Whether a target that started draining at `since` has finished at `now`.
pub fn drained(since: f64, attributes: &BTreeMap<String, String>, now: f64) -> bool {
    now >= since + deregistration_delay(attributes)
}

// Target groups.

/// A target group's settings as CreateTargetGroup and ModifyTargetGroup give them.
#[derive(Clone, Debug, Default)]
pub struct HealthCheckInput {
    pub enabled: Option<bool>,
    pub interval: Option<i32>,
    pub path: Option<String>,
    pub port: Option<String>,
    pub protocol: Option<ProtocolEnum>,
    pub timeout: Option<i32>,
    pub healthy: Option<i32>,
    pub unhealthy: Option<i32>,
    pub matcher: Option<Matcher>,
}

/// A new target group's fields (everything but its ARN, name and VPC, which the caller
/// sets), with AWS's defaults per protocol and target type, validated.
pub fn new_target_group(
    protocol: Option<ProtocolEnum>,
    port: Option<i32>,
    target_type: TargetTypeEnum,
    protocol_version: Option<String>,
    hc: &HealthCheckInput,
) -> Result<TargetGroup> {
    match target_type {
        TargetTypeEnum::Lambda => {
            return Err(ElbError::config("estiba does not support target groups of target type 'lambda'"))
        }
        TargetTypeEnum::Alb if protocol != Some(ProtocolEnum::Tcp) => {
            return invalid("Target groups of target type 'alb' must use the TCP protocol")
        }
        _ => {}
    }
    let Some(protocol) = protocol else { return invalid("A protocol must be specified") };
    if matches!(protocol, ProtocolEnum::Geneve | ProtocolEnum::Quic | ProtocolEnum::TcpQuic) {
        return Err(ElbError::Code(
            ErrorCode::UnsupportedProtocolException,
            format!("estiba does not support the protocol '{protocol}'"),
        ));
    }
    let Some(port) = port else { return invalid("A port must be specified") };
    let http = is_http(protocol);
    if protocol_version.is_some() && !http {
        return invalid("A protocol version can only be specified for HTTP and HTTPS target groups");
    }
    if let Some(v) = &protocol_version {
        if !["HTTP1", "HTTP2", "GRPC"].contains(&v.as_str()) {
            return invalid(format!("Protocol version '{v}' must be one of 'HTTP1, HTTP2, GRPC'"));
        }
    }
    let hc_protocol = hc.protocol.unwrap_or(if http { protocol } else { ProtocolEnum::Tcp });
    let grpc = protocol_version.as_deref() == Some("GRPC");
    let web_check = is_http(hc_protocol);
    let tg = TargetGroup {
        protocol: Some(protocol),
        port: Some(port),
        target_type: Some(target_type),
        protocol_version: if http { Some(protocol_version.unwrap_or_else(|| "HTTP1".into())) } else { None },
        health_check_enabled: Some(true),
        health_check_protocol: Some(hc_protocol),
        health_check_port: Some("traffic-port".into()),
        health_check_interval_seconds: Some(30),
        health_check_timeout_seconds: Some(if http { 5 } else { 10 }),
        healthy_threshold_count: Some(5),
        unhealthy_threshold_count: Some(2),
        health_check_path: web_check.then(|| if grpc { "/AWS.ALB/healthcheck".into() } else { "/".into() }),
        matcher: web_check.then(|| {
            if grpc {
                Matcher { grpc_code: Some("12".into()), http_code: None }
            } else {
                Matcher { http_code: Some(if http { "200" } else { "200-399" }.into()), grpc_code: None }
            }
        }),
        ip_address_type: Some(estiba_api::elbv2::TargetGroupIpAddressTypeEnum::Ipv4),
        ..Default::default()
    };
    modify_health_check(&tg, hc)
}

/// A target group after ModifyTargetGroup's health check changes, validated.
pub fn modify_health_check(tg: &TargetGroup, hc: &HealthCheckInput) -> Result<TargetGroup> {
    let mut tg = tg.clone();
    let protocol = tg.protocol.unwrap_or_default();
    if let Some(p) = hc.protocol {
        if !matches!(p, ProtocolEnum::Http | ProtocolEnum::Https | ProtocolEnum::Tcp) {
            return invalid(format!("Health check protocol '{p}' is not supported"));
        }
        if is_http(protocol) && p == ProtocolEnum::Tcp {
            return invalid(format!(
                "Health check protocol 'TCP' is not supported for target groups with the protocol '{protocol}'"
            ));
        }
        if is_http(p) && !tg.health_check_protocol.is_some_and(is_http) {
            tg.health_check_path.get_or_insert_with(|| "/".into());
            tg.matcher.get_or_insert(Matcher { http_code: Some("200-399".into()), grpc_code: None });
        }
        if !is_http(p) {
            tg.health_check_path = None;
            tg.matcher = None;
        }
        tg.health_check_protocol = Some(p);
    }
    if let Some(e) = hc.enabled {
        if !e && tg.target_type != Some(TargetTypeEnum::Lambda) && !is_http(protocol) {
            return invalid("Health checks cannot be disabled for target groups with target type 'instance', 'ip' or 'alb' and a protocol other than HTTP or HTTPS");
        }
        tg.health_check_enabled = Some(e);
    }
    if let Some(port) = &hc.port {
        if port != "traffic-port" && !port.parse::<u16>().is_ok_and(|p| p >= 1) {
            return invalid(format!("Health check port '{port}' must be 'traffic-port' or a port between 1 and 65535"));
        }
        tg.health_check_port = Some(port.clone());
    }
    let web = tg.health_check_protocol.is_some_and(is_http);
    if let Some(path) = &hc.path {
        if !web {
            return invalid("A health check path can only be specified for HTTP and HTTPS health checks");
        }
        if !path.starts_with('/') || path.len() > 1024 {
            return invalid(format!("Health check path '{path}' must start with '/' and be at most 1024 characters"));
        }
        tg.health_check_path = Some(path.clone());
    }
    if let Some(m) = &hc.matcher {
        if !web {
            return invalid("A health check matcher can only be specified for HTTP and HTTPS health checks");
        }
        let nlb = !is_http(protocol);
        if let Some(code) = &m.http_code {
            check_matcher(code, if nlb { 599 } else { 499 })?;
        }
        if let Some(code) = &m.grpc_code {
            check_grpc_matcher(code)?;
        }
        tg.matcher = Some(m.clone());
    }
    let set = |field: &mut Option<i32>, v: Option<i32>, name: &str, lo: i32, hi: i32| -> Result<()> {
        if let Some(v) = v {
            if !(lo..=hi).contains(&v) {
                return invalid(format!("{name} '{v}' must be between '{lo}' and '{hi}'"));
            }
            *field = Some(v);
        }
        Ok(())
    };
    set(&mut tg.health_check_interval_seconds, hc.interval, "Health check interval", 5, 300)?;
    set(&mut tg.health_check_timeout_seconds, hc.timeout, "Health check timeout", 2, 120)?;
    set(&mut tg.healthy_threshold_count, hc.healthy, "Healthy threshold count", 2, 10)?;
    set(&mut tg.unhealthy_threshold_count, hc.unhealthy, "Unhealthy threshold count", 2, 10)?;
    let (interval, timeout) =
        (tg.health_check_interval_seconds.unwrap_or(30), tg.health_check_timeout_seconds.unwrap_or(5));
    if timeout >= interval {
        return invalid(format!("Health check timeout '{timeout}' must be smaller than the interval '{interval}'"));
    }
    Ok(tg)
}

/// An HTTP matcher: codes and ranges (`200`, `200,202`, `200-299`) between 200 and `max`.
pub fn check_matcher(code: &str, max: u16) -> Result<()> {
    let bad =
        || ElbError::Validation(format!("Health check matcher HTTP code '{code}' must be within '200-{max}' range"));
    let syntax = || {
        ElbError::Validation(format!(
            "Health check matcher HTTP code '{code}' must be codes or ranges such as '200', '200,202' or '200-299'"
        ))
    };
    if code.is_empty() {
        return Err(syntax());
    }
    for part in code.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let lo: u16 = lo.parse().map_err(|_| syntax())?;
        let hi: u16 = hi.parse().map_err(|_| syntax())?;
        if lo > hi {
            return Err(syntax());
        }
        if lo < 200 || hi > max {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_grpc_matcher(code: &str) -> Result<()> {
    let ok = code.split(',').all(|part| {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        matches!((lo.parse::<u8>(), hi.parse::<u8>()), (Ok(a), Ok(b)) if a <= b && b <= 99)
    });
    if ok {
        Ok(())
    } else {
        invalid(format!("Health check matcher gRPC code '{code}' must be codes or ranges between '0' and '99'"))
    }
}

// Targets.

/// A target as registered: its id, port and availability zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub id: String,
    pub port: u16,
    pub availability_zone: Option<String>,
}

/// Checks a target of a group of `target_type` with default port `tg_port`, in a VPC of
/// `vpc_cidr` whose subnets are `subnets` (cidr, zone). IP targets get the zone of their
/// subnet.
pub fn check_target(
    target_type: TargetTypeEnum,
    tg_port: Option<i32>,
    id: &str,
    port: Option<i32>,
    az: Option<&str>,
    vpc_cidr: Ipv4Net,
    subnets: &[(Ipv4Net, String)],
) -> Result<TargetSpec> {
    let port = port.or(tg_port).unwrap_or(0);
    if !(1..=65535).contains(&port) {
        return invalid(format!("Port '{port}' of target '{id}' must be between 1 and 65535"));
    }
    let port = port as u16;
    let availability_zone = match target_type {
        TargetTypeEnum::Instance => {
            let hex = id.strip_prefix("i-").unwrap_or_default();
            if !(8..=17).contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(format!("The instance ID '{id}' is not valid"));
            }
            az.map(str::to_owned)
        }
        TargetTypeEnum::Ip => {
            let Ok(ip) = id.parse::<Ipv4Addr>() else {
                return invalid(format!("The IP address '{id}' is not a valid IPv4 address"));
            };
            if vpc_cidr.contains(&ip) {
                if az.is_some_and(|z| z == "all") {
                    return invalid(format!(
                        "The IP address '{id}' is within the VPC, and cannot have its Availability Zone overridden to 'all'"
                    ));
                }
                subnets.iter().find(|(net, _)| net.contains(&ip)).map(|(_, zone)| zone.clone())
            } else if az.is_none() {
                return invalid(format!(
                    "The Availability Zone is required for IP address '{id}' because it is not in the VPC"
                ));
            } else {
                az.map(str::to_owned)
            }
        }
        TargetTypeEnum::Alb => az.map(str::to_owned),
        TargetTypeEnum::Lambda => return Err(ElbError::config("estiba does not support lambda targets")),
    };
    Ok(TargetSpec { id: id.to_owned(), port, availability_zone })
}

// Listeners.

/// The listener protocols a load balancer of type `t` accepts.
pub fn check_listener_protocol(t: LoadBalancerTypeEnum, p: ProtocolEnum) -> Result<()> {
    let allowed: &[ProtocolEnum] = if t == LoadBalancerTypeEnum::Network {
        &[ProtocolEnum::TcpUdp, ProtocolEnum::Udp, ProtocolEnum::Tcp, ProtocolEnum::Tls]
    } else {
        &[ProtocolEnum::Https, ProtocolEnum::Http]
    };
    if !allowed.contains(&p) {
        let names: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
        return invalid(format!("Listener protocol '{p}' must be one of '{}'", names.join(", ")));
    }
    Ok(())
}

/// Whether a listener of `listener` protocol can forward to a group of `tg` protocol.
pub fn protocols_compatible(listener: ProtocolEnum, tg: ProtocolEnum) -> bool {
    use ProtocolEnum::*;
    match listener {
        Http | Https => matches!(tg, Http | Https),
        Tcp => matches!(tg, Tcp | TcpUdp),
        Tls => matches!(tg, Tcp | Tls),
        Udp => matches!(tg, Udp | TcpUdp),
        TcpUdp => tg == TcpUdp,
        _ => false,
    }
}

/// A listener's port and, for HTTPS and TLS, its certificate.
pub fn check_listener(
    protocol: ProtocolEnum,
    port: i32,
    certificate: Option<&str>,
    ssl_policy: Option<&str>,
) -> Result<()> {
    if !(1..=65535).contains(&port) {
        return invalid(format!("Listener port '{port}' must be between 1 and 65535"));
    }
    if matches!(protocol, ProtocolEnum::Https | ProtocolEnum::Tls) && certificate.is_none_or(str::is_empty) {
        return Err(ElbError::Code(
            ErrorCode::CertificateNotFoundException,
            format!("A certificate must be specified for {protocol} listeners"),
        ));
    }
    if let Some(p) = ssl_policy {
        if !SSL_POLICIES.iter().any(|(name, _)| *name == p) {
            return Err(ElbError::Code(ErrorCode::SSLPolicyNotFoundException, format!("SSL policy '{p}' not found")));
        }
    }
    Ok(())
}

/// The target group ARNs an action forwards to (empty for other actions).
pub fn action_target_groups(a: &Action) -> Vec<&str> {
    let mut out: Vec<&str> = a.target_group_arn.iter().map(String::as_str).collect();
    for t in a.forward_config.iter().flat_map(|f| f.target_groups.iter().flatten()) {
        if let Some(arn) = t.target_group_arn.as_deref() {
            if !out.contains(&arn) {
                out.push(arn);
            }
        }
    }
    out
}

/// The target group ARNs a rule forwards to.
pub fn rule_target_groups(r: &Rule) -> Vec<&str> {
    let mut out = vec![];
    for a in r.actions.iter().flatten() {
        for arn in action_target_groups(a) {
            if !out.contains(&arn) {
                out.push(arn);
            }
        }
    }
    out
}

const CONTENT_TYPES: &[&str] = &["text/plain", "text/css", "text/html", "application/javascript", "application/json"];

/// A listener's or rule's actions on a load balancer of type `t`: exactly one of forward,
/// redirect and fixed-response (authentication actions are not supported), well formed.
/// Answers the actions as stored (Order filled in, a forward's single group mirrored in
/// `ForwardConfig` as AWS shows it).
pub fn check_actions(t: LoadBalancerTypeEnum, actions: &[Action]) -> Result<Vec<Action>> {
    if actions.is_empty() {
        return invalid("At least one action must be specified");
    }
    if actions.len() > 1 {
        return Err(ElbError::Code(
            ErrorCode::TooManyActionsException,
            "estiba supports one action (forward, redirect or fixed-response) per listener or rule".into(),
        ));
    }
    let mut out = vec![];
    for (i, a) in actions.iter().enumerate() {
        let mut a = a.clone();
        if t == LoadBalancerTypeEnum::Network && a.r#type != ActionTypeEnum::Forward {
            return Err(ElbError::Code(
                ErrorCode::InvalidLoadBalancerActionException,
                format!("Action type '{}' is not supported for network load balancers", a.r#type),
            ));
        }
        match a.r#type {
            ActionTypeEnum::Forward => check_forward(&mut a)?,
            ActionTypeEnum::FixedResponse => {
                let Some(f) = &a.fixed_response_config else {
                    return invalid("A fixed response action requires a FixedResponseConfig");
                };
                let s = f.status_code.as_bytes();
                if s.len() != 3 || !matches!(s[0], b'2' | b'4' | b'5') || !s[1..].iter().all(u8::is_ascii_digit) {
                    return invalid(format!("Fixed response status code '{}' must be 2XX, 4XX or 5XX", f.status_code));
                }
                if let Some(ct) = &f.content_type {
                    if !CONTENT_TYPES.contains(&ct.as_str()) {
                        return invalid(format!("Content type '{ct}' must be one of '{}'", CONTENT_TYPES.join(", ")));
                    }
                }
                if f.message_body.as_ref().is_some_and(|b| b.len() > 1024) {
                    return invalid("Fixed response message body must be at most 1024 characters");
                }
            }
            ActionTypeEnum::Redirect => {
                let Some(r) = &a.redirect_config else {
                    return invalid("A redirect action requires a RedirectConfig");
                };
                if let Some(p) = &r.protocol {
                    if !["HTTP", "HTTPS", "#{protocol}"].contains(&p.as_str()) {
                        return invalid(format!("Redirect protocol '{p}' must be one of 'HTTP, HTTPS, #{{protocol}}'"));
                    }
                }
                let same = |v: &Option<String>, keep: &str| v.as_deref().is_none_or(|v| v == keep);
                if same(&r.protocol, "#{protocol}")
                    && same(&r.port, "#{port}")
                    && same(&r.host, "#{host}")
                    && same(&r.path, "/#{path}")
                    && same(&r.query, "#{query}")
                {
                    return Err(ElbError::Code(
                        ErrorCode::InvalidLoadBalancerActionException,
                        "The redirect must change at least one of protocol, port, host, path or query, or it would loop".into(),
                    ));
                }
            }
            other => {
                return Err(ElbError::Code(
                    ErrorCode::InvalidLoadBalancerActionException,
                    format!("estiba does not support '{other}' actions"),
                ))
            }
        }
        a.order = Some(a.order.unwrap_or(i as i32 + 1));
        out.push(a);
    }
    Ok(out)
}

fn check_forward(a: &mut Action) -> Result<()> {
    let groups = a.forward_config.as_ref().and_then(|f| f.target_groups.clone()).unwrap_or_default();
    match (&a.target_group_arn, groups.as_slice()) {
        (None, []) => return invalid("A forward action requires a target group"),
        (Some(arn), [one]) if one.target_group_arn.as_ref() != Some(arn) => {
            return invalid(
                "You cannot specify both a target group ARN and a forward config with a different target group",
            )
        }
        (Some(_), [_, _, ..]) => {
            return invalid(
                "You cannot specify a target group ARN together with a forward config of several target groups",
            )
        }
        _ => {}
    }
    if groups.len() > 5 {
        return Err(ElbError::Code(
            ErrorCode::TooManyTargetGroupsException,
            "A forward action can have at most 5 target groups".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for g in &groups {
        let arn = g.target_group_arn.as_deref().unwrap_or_default();
        if arn.is_empty() {
            return invalid("Every target group of a forward config needs a TargetGroupArn");
        }
        if !seen.insert(arn) {
            return invalid(format!("Target group '{arn}' is specified more than once"));
        }
        if let Some(w) = g.weight {
            if !(0..=999).contains(&w) {
                return invalid(format!("Target group weight '{w}' must be between 0 and 999"));
            }
        }
    }
    if let Some(d) = a.forward_config.as_ref().and_then(|f| f.target_group_stickiness_config.as_ref()) {
        if let Some(s) = d.duration_seconds {
            if !(1..=604800).contains(&s) {
                return invalid(format!("Target group stickiness duration '{s}' must be between 1 and 604800 seconds"));
            }
        }
    }
    // AWS shows a forward to one group in both forms.
    let mut cfg = a.forward_config.clone().unwrap_or_default();
    if groups.is_empty() {
        cfg.target_groups = Some(vec![estiba_api::elbv2::TargetGroupTuple {
            target_group_arn: a.target_group_arn.clone(),
            weight: Some(1),
        }]);
    } else {
        for g in cfg.target_groups.iter_mut().flatten() {
            g.weight.get_or_insert(1);
        }
        if groups.len() == 1 {
            a.target_group_arn = groups[0].target_group_arn.clone();
        }
    }
    cfg.target_group_stickiness_config
        .get_or_insert(estiba_api::elbv2::TargetGroupStickinessConfig { enabled: Some(false), duration_seconds: None });
    a.forward_config = Some(cfg);
    Ok(())
}

/// A group of `tg_protocol` (target type `tg_type`) that a listener of `listener` protocol
/// on a load balancer of type `t` forwards to.
pub fn check_forward_target(
    t: LoadBalancerTypeEnum,
    listener: Option<ProtocolEnum>,
    tg_arn: &str,
    tg_protocol: ProtocolEnum,
) -> Result<()> {
    let fits = match listener {
        Some(l) => protocols_compatible(l, tg_protocol),
        None => (t == LoadBalancerTypeEnum::Network) != is_http(tg_protocol),
    };
    if !fits {
        let lp =
            listener.map(|l| l.as_str()).unwrap_or(if t == LoadBalancerTypeEnum::Network { "TCP" } else { "HTTP" });
        return Err(ElbError::Code(
            ErrorCode::IncompatibleProtocolsException,
            format!("Listener protocol '{lp}' is not compatible with the protocol '{tg_protocol}' of target group '{tg_arn}'"),
        ));
    }
    Ok(())
}

// Rules.

const FIELDS: &[&str] =
    &["http-header", "http-request-method", "host-header", "path-pattern", "query-string", "source-ip"];

/// A rule's conditions: known fields, each of the single-valued kinds at most once, values
/// in the legacy `Values` or the field's config, AWS's limits (five values in all, five
/// wildcards). Answers the conditions as stored (config forms filled in, as AWS shows them).
pub fn check_conditions(conditions: &[RuleCondition]) -> Result<Vec<RuleCondition>> {
    if conditions.is_empty() {
        return invalid("A rule must have at least one condition");
    }
    let mut seen = BTreeSet::new();
    let (mut values, mut wildcards) = (0usize, 0usize);
    let mut out = vec![];
    for c in conditions {
        let mut c = c.clone();
        let field = c.field.clone().unwrap_or_default();
        if !FIELDS.contains(&field.as_str()) {
            return invalid(format!("Condition field '{field}' must be one of '[{}]'", FIELDS.join(", ")));
        }
        if !matches!(field.as_str(), "http-header" | "query-string") && !seen.insert(field.clone()) {
            return invalid(format!("A rule can only have one '{field}' condition"));
        }
        let legacy = c.values.clone().filter(|v| !v.is_empty());
        let count_wild = |v: &str| v.matches(['*', '?']).count();
        let list: Vec<String> = match field.as_str() {
            "path-pattern" => {
                let cfg = c.path_pattern_config.as_ref().and_then(|p| p.values.clone());
                let v = pick(&field, legacy, cfg)?;
                for p in &v {
                    if p.is_empty() || p.len() > 128 {
                        return invalid(format!("Path pattern '{p}' must be between 1 and 128 characters"));
                    }
                }
                c.path_pattern_config =
                    Some(estiba_api::elbv2::PathPatternConditionConfig { values: Some(v.clone()), regex_values: None });
                v
            }
            "host-header" => {
                let cfg = c.host_header_config.as_ref().and_then(|p| p.values.clone());
                let v = pick(&field, legacy, cfg)?;
                for h in &v {
                    if h.is_empty()
                        || h.len() > 128
                        || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.*?_".contains(&b))
                    {
                        return invalid(format!(
                            "Host header '{h}' must be 1 to 128 of a-z, A-Z, 0-9, '-', '.', '*' and '?'"
                        ));
                    }
                }
                c.host_header_config =
                    Some(estiba_api::elbv2::HostHeaderConditionConfig { values: Some(v.clone()), regex_values: None });
                v
            }
            "http-header" => {
                let Some(h) = c.http_header_config.as_ref() else {
                    return invalid("A 'http-header' condition requires an HttpHeaderConfig");
                };
                let name = h.http_header_name.clone().unwrap_or_default();
                if name.is_empty() || name.len() > 40 || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    return invalid(format!("HTTP header name '{name}' must be 1 to 40 characters"));
                }
                let v = h.values.clone().filter(|v| !v.is_empty());
                let Some(v) = v else { return invalid("You must specify at least one value for field 'http-header'") };
                v
            }
            "http-request-method" => {
                let v = c.http_request_method_config.as_ref().and_then(|h| h.values.clone()).filter(|v| !v.is_empty());
                let Some(v) = v else {
                    return invalid("You must specify at least one value for field 'http-request-method'");
                };
                for m in &v {
                    if m.is_empty()
                        || m.len() > 40
                        || !m.bytes().all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
                    {
                        return invalid(format!("HTTP request method '{m}' must be 1 to 40 of A-Z, '-' and '_'"));
                    }
                }
                v
            }
            "query-string" => {
                let pairs = c.query_string_config.as_ref().and_then(|q| q.values.clone()).filter(|v| !v.is_empty());
                let Some(pairs) = pairs else {
                    return invalid("You must specify at least one value for field 'query-string'");
                };
                let mut v = vec![];
                for p in &pairs {
                    let value = p.value.clone().unwrap_or_default();
                    if value.is_empty() {
                        return invalid("Every query string condition pair needs a Value");
                    }
                    v.push(format!("{}={value}", p.key.clone().unwrap_or_default()));
                }
                v
            }
            _ => {
                let v = c.source_ip_config.as_ref().and_then(|s| s.values.clone()).filter(|v| !v.is_empty());
                let Some(v) = v else { return invalid("You must specify at least one value for field 'source-ip'") };
                for cidr in &v {
                    if cidr.parse::<ipnet::IpNet>().is_err() {
                        return invalid(format!("Source IP '{cidr}' must be a CIDR block"));
                    }
                }
                v
            }
        };
        values += list.len();
        wildcards += list.iter().map(|v| count_wild(v)).sum::<usize>();
        out.push(c);
    }
    if values > 5 {
        return invalid(format!("A rule can only have '5' condition values in total, got '{values}'"));
    }
    if wildcards > 5 {
        return invalid(format!("A rule can only have '5' wildcards in its conditions, got '{wildcards}'"));
    }
    Ok(out)
}

fn pick(field: &str, legacy: Option<Vec<String>>, cfg: Option<Vec<String>>) -> Result<Vec<String>> {
    let cfg = cfg.filter(|v| !v.is_empty());
    match (legacy, cfg) {
        (Some(a), Some(b)) if a != b => {
            invalid(format!("The values of field '{field}' cannot be specified both in 'Values' and in its config"))
        }
        (Some(v), _) | (None, Some(v)) => Ok(v),
        (None, None) => invalid(format!("You must specify at least one value for field '{field}'")),
    }
}

/// A priority not held by another rule of the listener (`taken`).
pub fn check_priority_free(priority: i32, taken: impl IntoIterator<Item = i32>) -> Result<()> {
    if taken.into_iter().any(|p| p == priority) {
        return Err(ElbError::Code(
            ErrorCode::PriorityInUseException,
            format!("Priority '{priority}' is currently in use"),
        ));
    }
    Ok(())
}

/// SetRulePriorities' new priorities: no priority twice in the request, none held by a rule
/// of the same listener left unchanged (`others`: (listener, priority) of rules not in the
/// request). `changes`: (listener, priority) per rule changed.
pub fn check_new_priorities(changes: &[(String, i32)], others: &[(String, i32)]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for (listener, p) in changes {
        if !seen.insert((listener, *p)) {
            return invalid(format!("Priority '{p}' was provided multiple times"));
        }
        check_priority_free(*p, others.iter().filter(|(l, _)| l == listener).map(|(_, q)| *q))?;
    }
    Ok(())
}

/// The order of rules as DescribeRules shows them: by priority, the default rule last.
pub fn priority_order(priority: Option<&str>) -> (u8, i64) {
    match priority.and_then(|p| p.parse::<i64>().ok()) {
        Some(n) => (0, n),
        None => (1, 0),
    }
}

// Tags.

/// `current` with `new` added (replacing values of existing keys): no key twice in `new`, at
/// most [`MAX_TAGS`] in all.
pub fn add_tags(current: &[Tag], new: &[Tag]) -> Result<Vec<Tag>> {
    let mut seen = BTreeSet::new();
    for t in new {
        if !seen.insert(t.key.as_str()) {
            return Err(ElbError::Code(
                ErrorCode::DuplicateTagKeysException,
                format!("Tag key was specified more than once: {}", t.key),
            ));
        }
    }
    let mut out: Vec<Tag> = current.iter().filter(|t| !seen.contains(t.key.as_str())).cloned().collect();
    out.extend(new.iter().cloned());
    if out.len() > MAX_TAGS {
        return Err(ElbError::Code(
            ErrorCode::TooManyTagsException,
            format!(
                "The quota for the number of tags that can be assigned to a resource ({MAX_TAGS}) has been reached"
            ),
        ));
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use estiba_api::elbv2::*;

    use super::*;

    fn code(e: ElbError) -> &'static str {
        e.code_name()
    }

    #[test]
    fn names() {
        for ok in ["a", "web-1", &"a".repeat(32)] {
            check_lb_name(ok).unwrap();
            check_tg_name(ok).unwrap();
        }
        for bad in ["", "-a", "a-", "a_b", &"a".repeat(33), "a.b"] {
            assert_eq!(code(check_lb_name(bad).unwrap_err()), "ValidationError", "{bad}");
            assert_eq!(code(check_tg_name(bad).unwrap_err()), "ValidationError", "{bad}");
        }
        assert!(check_lb_name("internal-web").unwrap_err().to_string().contains("internal-"));
        check_tg_name("internal-web").unwrap();
    }

    #[test]
    fn lb_zones_and_state() {
        let alb = LoadBalancerTypeEnum::Application;
        check_lb_zones(alb, &["us-east-1a", "us-east-1b"]).unwrap();
        assert!(check_lb_zones(alb, &["us-east-1a"]).unwrap_err().to_string().contains("two different"));
        assert_eq!(
            code(check_lb_zones(alb, &["us-east-1a", "us-east-1a"]).unwrap_err()),
            "InvalidConfigurationRequest"
        );
        check_lb_zones(LoadBalancerTypeEnum::Network, &["us-east-1a"]).unwrap();
        assert_eq!(lb_state(100.0, 101.0, 2.0), LoadBalancerStateEnum::Provisioning);
        assert_eq!(lb_state(100.0, 102.0, 2.0), LoadBalancerStateEnum::Active);
        assert_eq!(canonical_hosted_zone_id("us-east-1", alb), "Z35SXDOTRQ7X7K");
        assert_eq!(canonical_hosted_zone_id("us-east-1", LoadBalancerTypeEnum::Network), "Z26RNL4JYFTOTI");
    }

    fn tg(protocol: ProtocolEnum, hc: HealthCheckInput) -> Result<TargetGroup> {
        new_target_group(Some(protocol), Some(80), TargetTypeEnum::Ip, None, &hc)
    }

    #[test]
    fn target_group_defaults_per_protocol() {
        let h = tg(ProtocolEnum::Http, Default::default()).unwrap();
        assert_eq!(h.health_check_protocol, Some(ProtocolEnum::Http));
        assert_eq!((h.health_check_interval_seconds, h.health_check_timeout_seconds), (Some(30), Some(5)));
        assert_eq!((h.healthy_threshold_count, h.unhealthy_threshold_count), (Some(5), Some(2)));
        assert_eq!(h.health_check_path.as_deref(), Some("/"));
        assert_eq!(h.matcher.unwrap().http_code.as_deref(), Some("200"));
        assert_eq!(h.protocol_version.as_deref(), Some("HTTP1"));
        assert_eq!(h.health_check_port.as_deref(), Some("traffic-port"));
        let t = tg(ProtocolEnum::Tcp, Default::default()).unwrap();
        assert_eq!(t.health_check_protocol, Some(ProtocolEnum::Tcp));
        assert_eq!(t.health_check_timeout_seconds, Some(10));
        assert_eq!((t.health_check_path, t.matcher, t.protocol_version), (None, None, None));
        let lambda = new_target_group(None, None, TargetTypeEnum::Lambda, None, &Default::default());
        assert_eq!(code(lambda.unwrap_err()), "InvalidConfigurationRequest");
        let no_port = new_target_group(Some(ProtocolEnum::Http), None, TargetTypeEnum::Ip, None, &Default::default());
        assert_eq!(code(no_port.unwrap_err()), "ValidationError");
    }

    #[test]
    fn health_check_ranges_and_matchers() {
        let bad = [
            HealthCheckInput { interval: Some(4), ..Default::default() },
            HealthCheckInput { interval: Some(301), ..Default::default() },
            HealthCheckInput { timeout: Some(1), ..Default::default() },
            HealthCheckInput { interval: Some(10), timeout: Some(10), ..Default::default() },
            HealthCheckInput { healthy: Some(1), ..Default::default() },
            HealthCheckInput { unhealthy: Some(11), ..Default::default() },
            HealthCheckInput { port: Some("0".into()), ..Default::default() },
            HealthCheckInput { path: Some("health".into()), ..Default::default() },
            HealthCheckInput { protocol: Some(ProtocolEnum::Tcp), ..Default::default() },
            HealthCheckInput {
                matcher: Some(Matcher { http_code: Some("600".into()), grpc_code: None }),
                ..Default::default()
            },
        ];
        for hc in bad {
            assert_eq!(code(tg(ProtocolEnum::Http, hc.clone()).unwrap_err()), "ValidationError", "{hc:?}");
        }
        let ok =
            HealthCheckInput { interval: Some(10), timeout: Some(5), port: Some("8080".into()), ..Default::default() };
        assert_eq!(tg(ProtocolEnum::Http, ok).unwrap().health_check_port.as_deref(), Some("8080"));
        for m in ["200", "200,202", "200-299", "200-299,404"] {
            check_matcher(m, 499).unwrap();
        }
        for m in ["", "abc", "199", "500", "300-200", "200-", "200,,"] {
            assert!(check_matcher(m, 499).is_err(), "{m}");
        }
        check_matcher("500-599", 599).unwrap();
        // An NLB group may not disable its health checks.
        let off = HealthCheckInput { enabled: Some(false), ..Default::default() };
        assert!(tg(ProtocolEnum::Tcp, off.clone()).is_err());
        assert_eq!(tg(ProtocolEnum::Http, off).unwrap().health_check_enabled, Some(false));
    }

    #[test]
    fn attributes_defaults_and_validation() {
        let alb = default_lb_attributes(LoadBalancerTypeEnum::Application);
        assert_eq!(alb["idle_timeout.timeout_seconds"], "60");
        assert_eq!(alb["routing.http2.enabled"], "true");
        let nlb = default_lb_attributes(LoadBalancerTypeEnum::Network);
        assert_eq!(nlb["load_balancing.cross_zone.enabled"], "false");
        assert!(!nlb.contains_key("idle_timeout.timeout_seconds"));
        let ch = |k: &str, v: &str| vec![(Some(k.to_string()), Some(v.to_string()))];
        let t = LoadBalancerTypeEnum::Application;
        let m = modify_lb_attributes(t, &alb, &ch("deletion_protection.enabled", "true")).unwrap();
        assert_eq!(m["deletion_protection.enabled"], "true");
        assert_eq!(code(modify_lb_attributes(t, &alb, &ch("nope", "1")).unwrap_err()), "ValidationError");
        let e = modify_lb_attributes(t, &alb, &ch("idle_timeout.timeout_seconds", "5000")).unwrap_err();
        assert_eq!(code(e), "InvalidConfigurationRequest");
        assert!(modify_lb_attributes(t, &alb, &ch("routing.http2.enabled", "yes")).is_err());
        assert!(modify_lb_attributes(t, &alb, &ch("access_logs.s3.enabled", "true")).is_err());

        let http = default_tg_attributes(Some(ProtocolEnum::Http), TargetTypeEnum::Ip);
        assert_eq!(http["deregistration_delay.timeout_seconds"], "300");
        assert_eq!(http["stickiness.type"], "lb_cookie");
        assert_eq!(http["stickiness.lb_cookie.duration_seconds"], "86400");
        assert_eq!(http["load_balancing.algorithm.type"], "round_robin");
        let tcp = default_tg_attributes(Some(ProtocolEnum::Tcp), TargetTypeEnum::Ip);
        assert_eq!(tcp["stickiness.type"], "source_ip");
        assert_eq!(tcp["preserve_client_ip.enabled"], "false");
        assert_eq!(
            default_tg_attributes(Some(ProtocolEnum::Tcp), TargetTypeEnum::Instance)["preserve_client_ip.enabled"],
            "true"
        );
        let p = Some(ProtocolEnum::Http);
        assert!(modify_tg_attributes(p, &http, &ch("slow_start.duration_seconds", "10")).is_err());
        modify_tg_attributes(p, &http, &ch("slow_start.duration_seconds", "30")).unwrap();
        assert!(modify_tg_attributes(p, &http, &ch("deregistration_delay.timeout_seconds", "3601")).is_err());
        assert!(modify_tg_attributes(p, &http, &ch("load_balancing.algorithm.type", "random")).is_err());
        modify_tg_attributes(p, &http, &ch("load_balancing.algorithm.type", "least_outstanding_requests")).unwrap();
        assert!(modify_tg_attributes(Some(ProtocolEnum::Tcp), &tcp, &ch("stickiness.type", "lb_cookie")).is_err());
        assert_eq!(deregistration_delay(&http), 300.0);
        assert!(drained(0.0, &http, 300.0) && !drained(0.0, &http, 299.0));
    }

    fn forward(arn: &str) -> Action {
        Action { r#type: ActionTypeEnum::Forward, target_group_arn: Some(arn.into()), ..Default::default() }
    }

    #[test]
    fn actions() {
        let alb = LoadBalancerTypeEnum::Application;
        let a = check_actions(alb, &[forward("tg1")]).unwrap();
        assert_eq!(a[0].order, Some(1));
        assert_eq!(a[0].forward_config.as_ref().unwrap().target_groups.as_ref().unwrap()[0].weight, Some(1));
        assert_eq!(action_target_groups(&a[0]), ["tg1"]);
        assert!(check_actions(alb, &[]).is_err());
        assert_eq!(code(check_actions(alb, &[forward("a"), forward("b")]).unwrap_err()), "TooManyActions");
        let weighted = Action {
            r#type: ActionTypeEnum::Forward,
            forward_config: Some(ForwardActionConfig {
                target_groups: Some(vec![TargetGroupTuple { target_group_arn: Some("a".into()), weight: Some(1000) }]),
                target_group_stickiness_config: None,
            }),
            ..Default::default()
        };
        assert!(check_actions(alb, &[weighted]).is_err());
        let fixed = |s: &str, ct: &str| Action {
            r#type: ActionTypeEnum::FixedResponse,
            fixed_response_config: Some(FixedResponseActionConfig {
                status_code: s.into(),
                content_type: Some(ct.into()),
                message_body: None,
            }),
            ..Default::default()
        };
        check_actions(alb, &[fixed("404", "text/plain")]).unwrap();
        assert!(check_actions(alb, &[fixed("302", "text/plain")]).is_err());
        assert!(check_actions(alb, &[fixed("200", "image/png")]).is_err());
        let redirect = |protocol: Option<&str>| Action {
            r#type: ActionTypeEnum::Redirect,
            redirect_config: Some(RedirectActionConfig {
                protocol: protocol.map(Into::into),
                status_code: RedirectActionStatusCodeEnum::Http301,
                ..Default::default()
            }),
            ..Default::default()
        };
        check_actions(alb, &[redirect(Some("HTTPS"))]).unwrap();
        assert_eq!(code(check_actions(alb, &[redirect(None)]).unwrap_err()), "InvalidLoadBalancerAction");
        assert_eq!(
            code(check_actions(LoadBalancerTypeEnum::Network, &[fixed("200", "text/plain")]).unwrap_err()),
            "InvalidLoadBalancerAction"
        );
    }

    #[test]
    fn listener_protocols() {
        let alb = LoadBalancerTypeEnum::Application;
        let nlb = LoadBalancerTypeEnum::Network;
        check_listener_protocol(alb, ProtocolEnum::Http).unwrap();
        assert!(check_listener_protocol(alb, ProtocolEnum::Tcp).is_err());
        check_listener_protocol(nlb, ProtocolEnum::TcpUdp).unwrap();
        assert!(check_listener_protocol(nlb, ProtocolEnum::Https).is_err());
        assert!(check_forward_target(alb, Some(ProtocolEnum::Http), "x", ProtocolEnum::Https).is_ok());
        assert_eq!(
            code(check_forward_target(nlb, Some(ProtocolEnum::Tcp), "x", ProtocolEnum::Udp).unwrap_err()),
            "IncompatibleProtocols"
        );
        assert!(check_forward_target(nlb, Some(ProtocolEnum::Tcp), "x", ProtocolEnum::TcpUdp).is_ok());
        assert_eq!(code(check_listener(ProtocolEnum::Https, 443, None, None).unwrap_err()), "CertificateNotFound");
        check_listener(ProtocolEnum::Https, 443, Some("file:///etc/cert.pem"), Some(DEFAULT_SSL_POLICY)).unwrap();
        assert_eq!(
            code(check_listener(ProtocolEnum::Https, 443, Some("c"), Some("nope")).unwrap_err()),
            "SSLPolicyNotFound"
        );
    }

    fn cond(field: &str, values: &[&str]) -> RuleCondition {
        RuleCondition {
            field: Some(field.into()),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn conditions() {
        let out = check_conditions(&[cond("path-pattern", &["/api/*"])]).unwrap();
        assert_eq!(out[0].path_pattern_config.as_ref().unwrap().values.as_ref().unwrap(), &["/api/*"]);
        check_conditions(&[
            cond("host-header", &["*.example.com"]),
            RuleCondition {
                field: Some("http-header".into()),
                http_header_config: Some(HttpHeaderConditionConfig {
                    http_header_name: Some("X-Env".into()),
                    values: Some(vec!["prod".into()]),
                    regex_values: None,
                }),
                ..Default::default()
            },
            RuleCondition {
                field: Some("source-ip".into()),
                source_ip_config: Some(SourceIpConditionConfig { values: Some(vec!["10.0.0.0/8".into()]) }),
                ..Default::default()
            },
        ])
        .unwrap();
        assert!(check_conditions(&[]).is_err());
        assert!(check_conditions(&[cond("cookie", &["a"])]).is_err());
        assert!(check_conditions(&[cond("path-pattern", &["/a"]), cond("path-pattern", &["/b"])]).is_err());
        assert!(check_conditions(&[cond("path-pattern", &["/1", "/2", "/3"]), cond("host-header", &["a", "b", "c"])])
            .is_err());
        assert!(check_conditions(&[cond("path-pattern", &["/**", "/***", "/*"])]).is_err());
        let bad_ip = RuleCondition {
            field: Some("source-ip".into()),
            source_ip_config: Some(SourceIpConditionConfig { values: Some(vec!["nope".into()]) }),
            ..Default::default()
        };
        assert!(check_conditions(&[bad_ip]).is_err());
        let bad_method = RuleCondition {
            field: Some("http-request-method".into()),
            http_request_method_config: Some(HttpRequestMethodConditionConfig { values: Some(vec!["get".into()]) }),
            ..Default::default()
        };
        assert!(check_conditions(&[bad_method]).is_err());
    }

    #[test]
    fn priorities() {
        check_priority_free(5, [1, 2]).unwrap();
        assert_eq!(code(check_priority_free(2, [1, 2]).unwrap_err()), "PriorityInUse");
        let l = |p: i32| ("l1".to_string(), p);
        check_new_priorities(&[l(1), l(2)], &[l(3)]).unwrap();
        assert_eq!(code(check_new_priorities(&[l(1), l(1)], &[]).unwrap_err()), "ValidationError");
        assert_eq!(code(check_new_priorities(&[l(3)], &[l(3)]).unwrap_err()), "PriorityInUse");
        check_new_priorities(&[l(3)], &[("l2".into(), 3)]).unwrap();
        let mut ps = vec![Some("default"), Some("10"), Some("2")];
        ps.sort_by_key(|p| priority_order(*p));
        assert_eq!(ps, [Some("2"), Some("10"), Some("default")]);
    }

    #[test]
    fn targets() {
        let vpc: Ipv4Net = "172.31.0.0/16".parse().unwrap();
        let subnets = vec![("172.31.0.0/20".parse().unwrap(), "us-east-1a".to_string())];
        let t = check_target(TargetTypeEnum::Ip, Some(80), "172.31.1.5", None, None, vpc, &subnets).unwrap();
        assert_eq!((t.port, t.availability_zone.as_deref()), (80, Some("us-east-1a")));
        let out = check_target(TargetTypeEnum::Ip, Some(80), "10.0.0.1", None, None, vpc, &subnets).unwrap_err();
        assert!(out.to_string().contains("not in the VPC"));
        check_target(TargetTypeEnum::Ip, Some(80), "10.0.0.1", None, Some("all"), vpc, &subnets).unwrap();
        assert!(check_target(TargetTypeEnum::Ip, Some(80), "nope", None, None, vpc, &subnets).is_err());
        check_target(TargetTypeEnum::Instance, Some(80), "i-0123456789abcdef0", Some(8080), None, vpc, &subnets)
            .unwrap();
        assert!(check_target(TargetTypeEnum::Instance, Some(80), "web-1", None, None, vpc, &subnets).is_err());
        assert!(check_target(TargetTypeEnum::Instance, Some(80), "i-0123456789abcdef0", Some(0), None, vpc, &subnets)
            .is_err());
    }

    #[test]
    fn tags() {
        let t = |k: &str, v: &str| Tag { key: k.into(), value: Some(v.into()) };
        let out = add_tags(&[t("a", "1")], &[t("a", "2"), t("b", "3")]).unwrap();
        assert_eq!(out, [t("a", "2"), t("b", "3")]);
        assert_eq!(code(add_tags(&[], &[t("a", "1"), t("a", "2")]).unwrap_err()), "DuplicateTagKeys");
        let many: Vec<Tag> = (0..51).map(|i| t(&format!("k{i}"), "v")).collect();
        assert_eq!(code(add_tags(&[], &many).unwrap_err()), "TooManyTags");
    }
}
