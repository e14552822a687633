//! The load balancers' data plane table ([`estiba_lb::Table`]) built from the ELBv2
//! documents of the view: every load balancer with its addresses, listeners and rules in
//! priority order, and every target group in use with its targets (`instance` targets at the
//! address their node reports). Published on `Server::lb` by the controller that publishes
//! the resolvers' zone; every node's load balancers serve it.
//!
//! Target groups no listener or rule forwards to are left out: AWS does not health-check
//! them (DescribeTargetHealth says `unused`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use estiba_api::elbv2::{
    Action as ApiAction, ActionTypeEnum, LoadBalancerTypeEnum, ProtocolEnum, RedirectActionStatusCodeEnum,
    RuleCondition, TargetTypeEnum,
};
use estiba_core::elbv2::{self as elb, ListenerDoc, LoadBalancerDoc, RuleDoc, TargetDoc, TargetGroupDoc};
use estiba_lb::{
    Action, Algorithm, Certificate, Condition, HealthCheck, HealthProtocol, Kind, Listener, ListenerProtocol,
    LoadBalancer, Rule, Table, Target, TargetGroup, TargetProtocol, WeightedGroup,
};

use estiba_core::telemetry::{Counters, LbMetrics};

use crate::services::elbv2::{table, Table as T};
use crate::view::State;

/// Builds the table. `host` is where listeners are also published on the host
/// (`--lb-host-address`), besides the load balancers' VPC addresses.
pub fn table_of(st: &State, host: Option<IpAddr>) -> Table {
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut out = Table::default();
    for d in st.docs::<LoadBalancerDoc>(table(T::LoadBalancers), elb::PREFIX) {
        let lb = &d.value.lb;
        let (Some(arn), Some(name)) = (lb.load_balancer_arn.as_deref(), lb.load_balancer_name.as_deref()) else {
            continue;
        };
        let Some(p) = elb::parse_arn(arn) else { continue };
        let kind = match lb.r#type {
            Some(LoadBalancerTypeEnum::Network) => Kind::Network,
            _ => Kind::Application,
        };
        let attr = |k: &str| d.value.attributes.get(k).map(String::as_str);
        let idle = attr("idle_timeout.timeout_seconds").and_then(|v| v.parse().ok()).unwrap_or(60);
        let mut listeners = Vec::new();
        let lprefix = elb::key(&p.scope, elb::LISTENERS, &format!("{name}/"));
        for l in st.docs::<ListenerDoc>(table(T::Listeners), &lprefix) {
            let Some(listener) = listener(st, &d.value, &l.value, host, &mut used) else { continue };
            listeners.push(listener);
        }
        out.load_balancers.push(LoadBalancer {
            arn: arn.to_owned(),
            kind,
            dimension: format!("{}/{name}/{}", p.path[0], p.path[2]),
            idle_timeout: Duration::from_secs(idle),
            http2: attr("routing.http2.enabled") != Some("false"),
            listeners,
        });
    }
    for arn in used {
        let Some(g) = crate::targets::group(st, &arn) else { continue };
        out.target_groups.push(target_group(st, &g.value));
    }
    out
}

fn listener(
    st: &State,
    lb: &LoadBalancerDoc,
    l: &ListenerDoc,
    host: Option<IpAddr>,
    used: &mut BTreeSet<String>,
) -> Option<Listener> {
    let arn = l.listener.listener_arn.clone()?;
    let port = u16::try_from(l.listener.port?).ok()?;
    let protocol = match l.listener.protocol? {
        ProtocolEnum::Http => ListenerProtocol::Http,
        ProtocolEnum::Https => ListenerProtocol::Https,
        ProtocolEnum::Tcp => ListenerProtocol::Tcp,
        ProtocolEnum::Tls => ListenerProtocol::Tls,
        ProtocolEnum::Udp => ListenerProtocol::Udp,
        ProtocolEnum::TcpUdp => ListenerProtocol::TcpUdp,
        _ => return None,
    };
    let mut binds: Vec<SocketAddr> = lb.addresses.iter().map(|a| SocketAddr::new(IpAddr::V4(a.ip), port)).collect();
    if let Some(h) = host {
        binds.push(SocketAddr::new(h, port));
    }
    let certificate = matches!(protocol, ListenerProtocol::Https | ListenerProtocol::Tls).then(|| {
        let arn = l.listener.certificates.iter().flatten().find_map(|c| c.certificate_arn.as_deref());
        certificate(arn)
    });
    let p = elb::parse_arn(&arn)?;
    let prefix = elb::key(&p.scope, elb::RULES, &format!("{}/{}/", p.path[1], p.path[3]));
    let mut rules: Vec<(Option<u32>, Rule)> = Vec::new();
    for r in st.docs::<RuleDoc>(table(T::Rules), &prefix) {
        let priority = r.value.rule.priority.as_deref().and_then(|p| p.parse::<u32>().ok());
        let is_default = r.value.rule.is_default == Some(true) || priority.is_none();
        let actions = r.value.rule.actions.as_ref();
        let Some(action) = action(actions, used) else { continue };
        let conditions = r.value.rule.conditions.iter().flatten().filter_map(condition).collect();
        let rule = Rule {
            arn: r.value.rule.rule_arn.clone().unwrap_or_default(),
            priority: if is_default { None } else { priority },
            conditions,
            action,
        };
        rules.push((rule.priority, rule));
    }
    if !rules.iter().any(|(p, _)| p.is_none()) {
        // No default rule document (yet): the listener's default actions.
        if let Some(action) = action(l.listener.default_actions.as_ref(), used) {
            rules.push((None, Rule { arn: String::new(), priority: None, conditions: vec![], action }));
        }
    }
    rules.sort_by_key(|(p, _)| p.unwrap_or(u32::MAX));
    Some(Listener { arn, protocol, binds, certificate, rules: rules.into_iter().map(|(_, r)| r).collect() })
}

/// A certificate ARN as estiba reads it (there is no ACM): `file://<path>` names a PEM file
/// holding the certificate chain, with its private key in the same file or beside it
/// (`<path without extension>.key`); anything else gets a self-signed certificate.
fn certificate(arn: Option<&str>) -> Certificate {
    let Some(path) = arn.and_then(|a| a.strip_prefix("file://")) else { return Certificate::SelfSigned };
    let cert_path = PathBuf::from(path);
    let beside = cert_path.with_extension("key");
    let key_path = if beside.exists() { beside } else { cert_path.clone() };
    Certificate::Pem { cert_path, key_path }
}

/// The first action that decides (authentication actions, which estiba does not run, are
/// skipped).
fn action(actions: Option<&Vec<ApiAction>>, used: &mut BTreeSet<String>) -> Option<Action> {
    let mut sorted: Vec<&ApiAction> = actions.into_iter().flatten().collect();
    sorted.sort_by_key(|a| a.order.unwrap_or(i32::MAX));
    for a in sorted {
        match a.r#type {
            ActionTypeEnum::Forward => {
                let mut groups: Vec<WeightedGroup> = Vec::new();
                let tuples = a.forward_config.as_ref().and_then(|f| f.target_groups.as_ref());
                for t in tuples.into_iter().flatten() {
                    if let Some(arn) = &t.target_group_arn {
                        groups.push(WeightedGroup { arn: arn.clone(), weight: t.weight.unwrap_or(1).max(0) as u32 });
                    }
                }
                if groups.is_empty() {
                    if let Some(arn) = &a.target_group_arn {
                        groups.push(WeightedGroup { arn: arn.clone(), weight: 1 });
                    }
                }
                used.extend(groups.iter().map(|g| g.arn.clone()));
                let stick = a.forward_config.as_ref().and_then(|f| f.target_group_stickiness_config.as_ref());
                let stickiness = stick
                    .filter(|s| s.enabled == Some(true))
                    .map(|s| Duration::from_secs(s.duration_seconds.unwrap_or(3600).max(1) as u64));
                return Some(Action::Forward { groups, stickiness });
            }
            ActionTypeEnum::FixedResponse => {
                let f = a.fixed_response_config.as_ref()?;
                return Some(Action::FixedResponse {
                    status: f.status_code.parse().unwrap_or(200),
                    content_type: f.content_type.clone(),
                    body: f.message_body.clone(),
                });
            }
            ActionTypeEnum::Redirect => {
                let r = a.redirect_config.as_ref()?;
                let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_owned());
                return Some(Action::Redirect {
                    protocol: or(&r.protocol, "#{protocol}"),
                    host: or(&r.host, "#{host}"),
                    port: or(&r.port, "#{port}"),
                    path: or(&r.path, "/#{path}"),
                    query: or(&r.query, "#{query}"),
                    status: match r.status_code {
                        RedirectActionStatusCodeEnum::Http301 => 301,
                        RedirectActionStatusCodeEnum::Http302 => 302,
                    },
                });
            }
            _ => continue,
        }
    }
    None
}

fn condition(c: &RuleCondition) -> Option<Condition> {
    let legacy = || c.values.clone().unwrap_or_default();
    let or_legacy = |v: Option<&Vec<String>>| v.cloned().unwrap_or_else(legacy);
    Some(match c.field.as_deref()? {
        "path-pattern" => {
            Condition::PathPattern(or_legacy(c.path_pattern_config.as_ref().and_then(|p| p.values.as_ref())))
        }
        "host-header" => {
            Condition::HostHeader(or_legacy(c.host_header_config.as_ref().and_then(|p| p.values.as_ref())))
        }
        "http-header" => {
            let h = c.http_header_config.as_ref()?;
            Condition::HttpHeader { name: h.http_header_name.clone()?, values: h.values.clone().unwrap_or_default() }
        }
        "http-request-method" => Condition::HttpRequestMethod(
            c.http_request_method_config.as_ref().and_then(|m| m.values.clone()).unwrap_or_default(),
        ),
        "query-string" => Condition::QueryString(
            c.query_string_config
                .as_ref()
                .and_then(|q| q.values.as_ref())
                .into_iter()
                .flatten()
                .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
                .collect(),
        ),
        "source-ip" => {
            Condition::SourceIp(c.source_ip_config.as_ref().and_then(|s| s.values.clone()).unwrap_or_default())
        }
        _ => return None,
    })
}

fn target_group(st: &State, g: &TargetGroupDoc) -> TargetGroup {
    let tg = &g.tg;
    let arn = tg.target_group_arn.clone().unwrap_or_default();
    let attr = |k: &str| g.attributes.get(k).map(String::as_str);
    let secs = |k: &str| attr(k).and_then(|v| v.parse::<u64>().ok());
    let protocol = match tg.protocol {
        Some(ProtocolEnum::Https) => TargetProtocol::Https,
        Some(ProtocolEnum::Tcp) => TargetProtocol::Tcp,
        Some(ProtocolEnum::Tls) => TargetProtocol::Tls,
        Some(ProtocolEnum::Udp) => TargetProtocol::Udp,
        Some(ProtocolEnum::TcpUdp) => TargetProtocol::TcpUdp,
        _ => TargetProtocol::Http,
    };
    let health = HealthCheck {
        enabled: tg.health_check_enabled != Some(false),
        protocol: match tg.health_check_protocol {
            Some(ProtocolEnum::Https) => HealthProtocol::Https,
            Some(ProtocolEnum::Http) => HealthProtocol::Http,
            Some(_) => HealthProtocol::Tcp,
            None if protocol == TargetProtocol::Http => HealthProtocol::Http,
            None if protocol == TargetProtocol::Https => HealthProtocol::Https,
            None => HealthProtocol::Tcp,
        },
        port: tg.health_check_port.as_deref().and_then(|p| p.parse().ok()),
        path: tg.health_check_path.clone().unwrap_or_else(|| "/".into()),
        interval: Duration::from_secs(tg.health_check_interval_seconds.unwrap_or(30).max(1) as u64),
        timeout: Duration::from_secs(tg.health_check_timeout_seconds.unwrap_or(5).max(1) as u64),
        healthy_threshold: tg.healthy_threshold_count.unwrap_or(5).max(1) as u32,
        unhealthy_threshold: tg.unhealthy_threshold_count.unwrap_or(2).max(1) as u32,
        matcher: tg.matcher.as_ref().and_then(|m| m.http_code.clone()).unwrap_or_else(|| "200".into()),
    };
    let sticky = attr("stickiness.enabled") == Some("true") && attr("stickiness.type").is_none_or(|t| t == "lb_cookie");
    let stickiness =
        sticky.then(|| Duration::from_secs(secs("stickiness.lb_cookie.duration_seconds").unwrap_or(86400)));
    let algorithm = match attr("load_balancing.algorithm.type") {
        Some("least_outstanding_requests") => Algorithm::LeastOutstandingRequests,
        _ => Algorithm::RoundRobin,
    };
    let tt = tg.target_type.unwrap_or(TargetTypeEnum::Instance);
    let mut targets = Vec::new();
    if let Some(p) = elb::parse_arn(&arn) {
        let prefix = elb::key(&p.scope, elb::TARGETS, &format!("{}/", p.path[0]));
        for t in st.docs::<TargetDoc>(table(T::Targets), &prefix) {
            if let Some(addr) = crate::targets::target_addr(st, tt, &t.value.id, t.value.port) {
                targets.push(Target { addr, draining: t.value.draining_since.is_some() });
            }
        }
    }
    let dimension =
        elb::parse_arn(&arn).map(|p| format!("targetgroup/{}/{}", p.path[0], p.path[1])).unwrap_or_default();
    TargetGroup {
        arn,
        dimension,
        protocol,
        health,
        algorithm,
        stickiness,
        slow_start: Duration::from_secs(secs("slow_start.duration_seconds").unwrap_or(0)),
        targets,
    }
}

/// The load balancer counters nodes report (`Telemetry::LbMetrics`), the latest per node,
/// kept for CloudWatch (AWS/ApplicationELB and AWS/NetworkELB) until the metrics store takes
/// them. [`Metrics::totals`] sums the nodes: `GET /_estiba/lb-metrics`.
#[derive(Default)]
pub struct Metrics {
    by_node: Mutex<BTreeMap<String, LbMetrics>>,
}

/// Counters summed over nodes, by dimension value.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub load_balancers: BTreeMap<String, Counters>,
    pub target_groups: BTreeMap<String, Counters>,
}

impl Metrics {
    pub fn report(&self, m: LbMetrics) {
        let mut g = self.by_node.lock().unwrap_or_else(|e| e.into_inner());
        g.insert(m.node.clone(), m);
    }

    pub fn totals(&self) -> Totals {
        let g = self.by_node.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = Totals::default();
        let add = |into: &mut BTreeMap<String, Counters>, from: &BTreeMap<String, Counters>| {
            for (dim, counters) in from {
                let sum = into.entry(dim.clone()).or_default();
                for (name, n) in counters {
                    *sum.entry(name.clone()).or_default() += n;
                }
            }
        };
        for m in g.values() {
            add(&mut t.load_balancers, &m.load_balancers);
            add(&mut t.target_groups, &m.target_groups);
        }
        t
    }
}
