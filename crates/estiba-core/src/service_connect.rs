//! Service Connect's rules: what a service's `serviceConnectConfiguration` publishes (named
//! ports of its task definition under discovery names, each with a client alias: a DNS name
//! and a port), how it is validated (ECS's messages), which tasks are endpoints, and the
//! virtual addresses (VIPs) client aliases get.
//!
//! Every client alias `(namespace, dnsName)` gets one VIP, the same on every node, from
//! [`vip_range`] (198.18.0.0/16, RFC 2544's benchmarking range: outside the VPC and bridge
//! networks, never a task's address). The control plane hands them out ([`Vips::assign`]) and
//! keeps them in one store document, so two aliases never share one.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use estiba_api::ecs::{
    HealthStatus, NetworkMode, ServiceConnectConfiguration, ServiceConnectServiceResource, Task, TaskDefinition,
};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{EcsError, Result};
use crate::task::{self, Status};
use crate::taskdef;

/// Where client aliases' VIPs come from.
pub fn vip_range() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 16).expect("a valid prefix")
}

/// One named port a service publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub port_name: String,
    pub discovery_name: String,
    /// The client alias (ECS allows at most one): DNS name and port.
    pub alias: Option<(String, u16)>,
}

/// Whether the configuration turns Service Connect on.
pub fn enabled(cfg: Option<&ServiceConnectConfiguration>) -> bool {
    cfg.is_some_and(|c| c.enabled)
}

/// Whether the service publishes endpoints (not only a client).
pub fn serves(cfg: Option<&ServiceConnectConfiguration>) -> bool {
    cfg.is_some_and(|c| c.enabled && c.services.as_ref().is_some_and(|s| !s.is_empty()))
}

/// A namespace reference (name or ARN) as ECS checks it.
pub fn check_namespace_ref(ns: &str) -> Result<()> {
    if ns.is_empty() || ns.len() > 1024 || ns.contains(['<', '>', '"']) || (!ns.starts_with("arn:") && ns.contains('/'))
    {
        return Err(EcsError::invalid(format!(
            "The namespace '{ns}' is not valid: it must be a Cloud Map namespace name or ARN of at most 1024 characters, \
             without <, >, \" or /."
        )));
    }
    Ok(())
}

/// A discovery name: 1 to 64 lowercase letters, digits, hyphens and underscores (and dots),
/// not starting with a hyphen.
fn check_discovery_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !ok {
        return Err(EcsError::invalid(format!(
            "The discoveryName '{name}' is not valid. It can include up to 64 characters: lowercase letters, numbers, \
             underscores (_), hyphens (-) and periods (.), and can't start with a hyphen."
        )));
    }
    Ok(())
}

fn check_dns_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !ok {
        return Err(EcsError::invalid(format!(
            "The clientAliases dnsName '{name}' is not valid. It can include up to 127 characters: lowercase letters, \
             numbers, underscores (_), hyphens (-) and periods (.), and can't start with a hyphen."
        )));
    }
    Ok(())
}

/// The container port of the port mapping named `port_name` in a task definition.
pub fn container_port(td: &TaskDefinition, port_name: &str) -> Option<u16> {
    td.container_definitions
        .iter()
        .flatten()
        .flat_map(|c| c.port_mappings.iter().flatten())
        .find(|m| m.name.as_deref() == Some(port_name))
        .and_then(|m| u16::try_from(m.container_port?).ok())
}

/// Validates a configuration against the service's task definition, as ECS does, and says
/// what it publishes. `namespace_name` is the resolved namespace's name (a client alias
/// without `dnsName` is `<discoveryName>.<namespace>`).
pub fn validate(
    cfg: &ServiceConnectConfiguration,
    td: &TaskDefinition,
    namespace_name: &str,
) -> Result<Vec<Published>> {
    if !cfg.enabled {
        return Ok(vec![]);
    }
    let mode = taskdef::network_mode(td);
    if !matches!(mode, NetworkMode::Awsvpc | NetworkMode::Bridge) {
        return Err(EcsError::invalid(format!(
            "Service Connect requires the awsvpc or bridge network mode; the task definition uses {}.",
            mode.as_str()
        )));
    }
    if mode != NetworkMode::Awsvpc && cfg.services.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(EcsError::invalid(
            "estiba's Service Connect publishes the ports of awsvpc tasks only: a bridge-mode service can be a client \
             (no services), not publish ports.",
        ));
    }
    let mut out: Vec<Published> = Vec::new();
    for (i, s) in cfg.services.iter().flatten().enumerate() {
        if s.port_name.is_empty() {
            return Err(EcsError::invalid(format!("serviceConnectConfiguration.services[{i}].portName is required.")));
        }
        if container_port(td, &s.port_name).is_none() {
            return Err(EcsError::invalid(format!(
                "The portName '{}' of serviceConnectConfiguration.services[{i}] does not name a port mapping of task \
                 definition {}: set portMappings[].name in a container definition.",
                s.port_name,
                td.task_definition_arn.as_deref().unwrap_or("")
            )));
        }
        if s.tls.is_some() {
            return Err(EcsError::invalid("Service Connect TLS is not supported by estiba."));
        }
        let discovery_name = s.discovery_name.clone().unwrap_or_else(|| s.port_name.clone());
        check_discovery_name(&discovery_name)?;
        if out.iter().any(|p| p.discovery_name == discovery_name) {
            return Err(EcsError::invalid(format!(
                "The discoveryName '{discovery_name}' is used more than once in serviceConnectConfiguration.services."
            )));
        }
        let aliases = s.client_aliases.as_deref().unwrap_or_default();
        if aliases.len() > 1 {
            return Err(EcsError::invalid(format!(
                "serviceConnectConfiguration.services[{i}] has {} clientAliases; at most 1 is allowed.",
                aliases.len()
            )));
        }
        let alias = match aliases.first() {
            Some(a) => {
                if !(1..=65535).contains(&a.port) {
                    return Err(EcsError::invalid(format!(
                        "The clientAliases port {} is not valid: it must be between 1 and 65535.",
                        a.port
                    )));
                }
                let dns = a.dns_name.clone().unwrap_or_else(|| format!("{discovery_name}.{namespace_name}"));
                check_dns_name(&dns)?;
                if out.iter().any(|p| p.alias.as_ref().is_some_and(|(d, port)| *d == dns && *port == a.port as u16)) {
                    return Err(EcsError::invalid(format!(
                        "The client alias {dns}:{} is used more than once in serviceConnectConfiguration.services.",
                        a.port
                    )));
                }
                Some((dns, a.port as u16))
            }
            None => None,
        };
        out.push(Published { port_name: s.port_name.clone(), discovery_name, alias });
    }
    Ok(out)
}

/// What the deployment shows under `serviceConnectResources`: each discovery name with the
/// ARN of its Cloud Map service (`arns`, in the same order).
pub fn resources(published: &[Published], arns: &[String]) -> Vec<ServiceConnectServiceResource> {
    published
        .iter()
        .zip(arns)
        .map(|(p, a)| ServiceConnectServiceResource {
            discovery_name: Some(p.discovery_name.clone()),
            discovery_arn: Some(a.clone()),
        })
        .collect()
}

/// Whether a task of a Service Connect service takes connections: RUNNING, not asked to stop,
/// with an address, and HEALTHY when it has container health checks (`checked`), else not
/// known to be unhealthy. The published table holds exactly these, and a new task of a
/// Service Connect service counts toward its deployment only once it is one
/// ([`crate::deploy`]).
pub fn is_endpoint(t: &Task, checked: bool) -> bool {
    task::last_status(t) == Status::Running
        && !task::desired_stopped(t)
        && task::private_ipv4(t).is_some()
        && if checked {
            t.health_status == Some(HealthStatus::Healthy)
        } else {
            t.health_status != Some(HealthStatus::Unhealthy)
        }
}

/// Whether a task definition has a container health check that counts (an essential
/// container's, not `NONE`), as the scheduler decides a task's health.
pub fn has_health_check(td: &TaskDefinition) -> bool {
    td.container_definitions.iter().flatten().any(|c| {
        c.essential != Some(false)
            && c.health_check.as_ref().is_some_and(|h| h.command.first().map(String::as_str) != Some("NONE"))
    })
}

/// The VIPs handed out, by alias key ([`alias_key`]); one store document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vips {
    pub by_alias: BTreeMap<String, Ipv4Addr>,
}

/// The key of a client alias: its namespace's ARN and DNS name (the port does not matter: a
/// name has one address).
pub fn alias_key(namespace_arn: &str, dns_name: &str) -> String {
    format!("{namespace_arn}|{dns_name}")
}

impl Vips {
    /// The alias's VIP, handed out now (the lowest free one) if it had none.
    pub fn assign(&mut self, key: &str) -> Result<Ipv4Addr> {
        if let Some(ip) = self.by_alias.get(key) {
            return Ok(*ip);
        }
        let used: std::collections::HashSet<Ipv4Addr> = self.by_alias.values().copied().collect();
        let range = vip_range();
        let ip = range
            .hosts()
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| EcsError::server("No Service Connect virtual address is free."))?;
        self.by_alias.insert(key.to_owned(), ip);
        Ok(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_api::ecs::{
        ContainerDefinition, PortMapping, ServiceConnectClientAlias, ServiceConnectService,
        ServiceConnectTlsConfiguration,
    };

    fn td(mode: NetworkMode) -> TaskDefinition {
        TaskDefinition {
            network_mode: Some(mode),
            container_definitions: Some(vec![ContainerDefinition {
                port_mappings: Some(vec![
                    PortMapping { name: Some("http".into()), container_port: Some(80), ..Default::default() },
                    PortMapping { container_port: Some(81), ..Default::default() },
                ]),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn cfg(services: Vec<ServiceConnectService>) -> ServiceConnectConfiguration {
        ServiceConnectConfiguration { enabled: true, services: Some(services), ..Default::default() }
    }

    fn svc(port: &str, discovery: Option<&str>, alias: Option<(Option<&str>, i32)>) -> ServiceConnectService {
        ServiceConnectService {
            port_name: port.into(),
            discovery_name: discovery.map(Into::into),
            client_aliases: alias.map(|(d, p)| {
                vec![ServiceConnectClientAlias { dns_name: d.map(Into::into), port: p, ..Default::default() }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_ecs() {
        let p = validate(&cfg(vec![svc("http", None, Some((None, 8080)))]), &td(NetworkMode::Awsvpc), "local").unwrap();
        assert_eq!(
            p,
            [Published {
                port_name: "http".into(),
                discovery_name: "http".into(),
                alias: Some(("http.local".into(), 8080))
            }]
        );
        let p =
            validate(&cfg(vec![svc("http", Some("api"), Some((Some("api"), 8080)))]), &td(NetworkMode::Awsvpc), "x")
                .unwrap();
        assert_eq!(p[0].alias, Some(("api".into(), 8080)));
        assert_eq!(p[0].discovery_name, "api");
        // A client only, and a configuration that is off, publish nothing.
        assert!(validate(&cfg(vec![]), &td(NetworkMode::Bridge), "x").unwrap().is_empty());
        let err = validate(&cfg(vec![svc("http", None, None)]), &td(NetworkMode::Bridge), "x").unwrap_err();
        assert!(err.message.contains("awsvpc tasks only"));
        let off = ServiceConnectConfiguration { enabled: false, ..cfg(vec![svc("nope", None, None)]) };
        assert!(validate(&off, &td(NetworkMode::Host), "x").unwrap().is_empty());
        assert!(serves(Some(&cfg(vec![svc("http", None, None)]))));
        assert!(!serves(Some(&cfg(vec![]))) && enabled(Some(&cfg(vec![]))));
    }

    #[test]
    fn validation_says_what_to_fix() {
        let err = |c: ServiceConnectConfiguration, mode| validate(&c, &td(mode), "local").unwrap_err().message;
        assert!(err(cfg(vec![svc("grpc", None, None)]), NetworkMode::Awsvpc).contains("does not name a port mapping"));
        assert!(err(cfg(vec![svc("", None, None)]), NetworkMode::Awsvpc).contains("portName is required"));
        assert!(err(cfg(vec![svc("http", None, None)]), NetworkMode::Host).contains("awsvpc or bridge"));
        assert!(err(cfg(vec![svc("http", Some("Bad"), None)]), NetworkMode::Awsvpc).contains("discoveryName 'Bad'"));
        assert!(err(cfg(vec![svc("http", None, Some((Some("-x"), 80)))]), NetworkMode::Awsvpc).contains("dnsName '-x'"));
        assert!(err(cfg(vec![svc("http", None, Some((None, 0)))]), NetworkMode::Awsvpc).contains("between 1 and 65535"));
        assert!(err(cfg(vec![svc("http", None, None), svc("http", None, None)]), NetworkMode::Awsvpc)
            .contains("more than once"));
        let mut two = svc("http", None, Some((None, 80)));
        two.client_aliases.as_mut().unwrap().push(ServiceConnectClientAlias { port: 81, ..Default::default() });
        assert!(err(cfg(vec![two]), NetworkMode::Awsvpc).contains("at most 1"));
        let mut tls = svc("http", None, None);
        tls.tls = Some(ServiceConnectTlsConfiguration::default());
        assert!(err(cfg(vec![tls]), NetworkMode::Awsvpc).contains("TLS"));
        assert!(check_namespace_ref("a/b").is_err());
        assert!(check_namespace_ref("arn:aws:servicediscovery:us-east-1:000000000000:namespace/ns-1").is_ok());
    }

    #[test]
    fn vips_are_stable_and_never_shared() {
        let mut v = Vips::default();
        let a = v.assign("ns|api").unwrap();
        let b = v.assign("ns|db").unwrap();
        assert_eq!(a, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(b, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(v.assign("ns|api").unwrap(), a);
        v.by_alias.remove("ns|api");
        assert_eq!(v.assign("other|api").unwrap(), a, "a freed address is handed out again");
        let vpc: Ipv4Net = "172.31.0.0/16".parse().unwrap();
        let bridge: Ipv4Net = "172.30.0.0/16".parse().unwrap();
        assert!(!vpc.contains(&vip_range()) && !bridge.contains(&vip_range()));
    }

    #[test]
    fn endpoints_are_running_addressed_and_not_unhealthy() {
        use estiba_api::ecs::{Attachment, KeyValuePair};
        let mut t = Task {
            last_status: Some("RUNNING".into()),
            desired_status: Some("RUNNING".into()),
            attachments: Some(vec![Attachment {
                r#type: Some("ElasticNetworkInterface".into()),
                details: Some(vec![KeyValuePair {
                    name: Some("privateIPv4Address".into()),
                    value: Some("172.31.0.9".into()),
                }]),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(is_endpoint(&t, false));
        assert!(!is_endpoint(&t, true), "with health checks: once HEALTHY");
        t.health_status = Some(HealthStatus::Healthy);
        assert!(is_endpoint(&t, true));
        t.health_status = Some(HealthStatus::Unhealthy);
        assert!(!is_endpoint(&t, false));
        t.health_status = Some(HealthStatus::Unknown);
        t.desired_status = Some("STOPPED".into());
        assert!(!is_endpoint(&t, false));
    }
}
