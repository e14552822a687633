//! ECS Service Connect in the control plane: what CreateService and UpdateService check and
//! record ([`prepare`]: the namespace from the configuration or the cluster's
//! `serviceConnectDefaults`, the rules of `estiba_core::service_connect`, client aliases unique
//! in their namespace, a VIP for each), and the table every node's proxy and VPC resolver
//! serve ([`entries`]): each client alias's DNS name and VIP, and for each of its ports the
//! endpoints (task address and container port) of the RUNNING tasks of the services that
//! publish it.
//!
//! The [`crate::controller::dns`] controller rebuilds both on every change of the view: the
//! names go into the resolver's zone ([`crate::dns`]), the listeners are published on
//! [`crate::Server::connect`] for the nodes' proxies (`estiba_proxy`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use estiba_api::ecs::{
    Cluster, ClusterServiceConnectDefaults, ServiceConnectConfiguration, ServiceConnectServiceResource, TaskDefinition,
};
use estiba_core::service as svc_rules;
use estiba_core::service_connect::{self as rules, alias_key, Vips};
use estiba_core::servicediscovery::{self as sd, NamespaceDoc};
use estiba_core::{keys, EcsError, Scope};
use estiba_store::{Compare, Op, Txn};

use crate::services::servicediscovery::{self as cloudmap, Table};
use crate::view::State;

/// A Cloud Map namespace as Service Connect uses it.
pub struct Namespace {
    pub id: String,
    pub arn: String,
    pub name: String,
}

/// The namespace a reference (name or ARN) names in `scope`.
pub fn namespace(st: &State, scope: &Scope, reference: &str) -> Option<Namespace> {
    let of = |d: &NamespaceDoc| {
        let n = &d.namespace;
        Some(Namespace { id: n.id.clone()?, arn: n.arn.clone()?, name: n.name.clone()? })
    };
    if reference.starts_with("arn:") {
        let (sd::Resource::Namespace, id) = sd::parse_arn(scope, reference)? else { return None };
        let d = st.doc::<NamespaceDoc>(cloudmap::table(Table::Namespaces), &sd::namespace_key(scope, &id))?;
        return of(&d.value);
    }
    let prefix = sd::kind_prefix(scope, sd::NAMESPACES);
    st.docs::<NamespaceDoc>(cloudmap::table(Table::Namespaces), &prefix)
        .find(|d| d.value.namespace.name.as_deref() == Some(reference))
        .and_then(|d| of(&d.value))
}

/// A cluster's `serviceConnectDefaults` as CreateCluster and UpdateCluster record it: an
/// existing namespace (name or ARN) as its ARN; a name Cloud Map does not know is created as
/// an HTTP namespace in `txn`, as ECS does; `""` removes the defaults (`None`).
pub fn cluster_defaults(
    st: &State,
    scope: &Scope,
    reference: &str,
    now: f64,
    txn: &mut Txn,
) -> Result<Option<ClusterServiceConnectDefaults>, EcsError> {
    if reference.is_empty() {
        return Ok(None);
    }
    rules::check_namespace_ref(reference)?;
    let arn = match namespace(st, scope, reference) {
        Some(ns) => ns.arn,
        None if reference.starts_with("arn:") => return Err(namespace_not_found(reference)),
        None => {
            let (t, arn) = crate::services::servicediscovery::namespaces::new_http_namespace(scope, reference, now)
                .map_err(|e| EcsError::invalid(e.message))?;
            txn.compares.extend(t.compares);
            txn.ops.extend(t.ops);
            arn
        }
    };
    Ok(Some(ClusterServiceConnectDefaults { namespace: Some(arn) }))
}

fn namespace_not_found(reference: &str) -> EcsError {
    EcsError::new(
        estiba_api::ecs::ErrorCode::NamespaceNotFoundException,
        format!("The Cloud Map namespace '{reference}' does not exist in this account and Region."),
    )
}

/// What a service's Service Connect configuration becomes once checked.
pub struct Prepared {
    /// As recorded on the deployment: the namespace as its ARN, discovery and DNS names
    /// filled in with ECS's defaults.
    pub config: ServiceConnectConfiguration,
    pub resources: Vec<ServiceConnectServiceResource>,
}

/// Checks a CreateService / UpdateService configuration and adds to `txn` the VIPs its client
/// aliases need. `service_key` is the service's own key (its aliases may stay its own).
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    st: &State,
    scope: &Scope,
    cluster: &Cluster,
    cfg: &ServiceConnectConfiguration,
    td: &TaskDefinition,
    service_key: &str,
    now: f64,
    txn: &mut Txn,
) -> Result<Prepared, EcsError> {
    if !cfg.enabled {
        return Ok(Prepared { config: cfg.clone(), resources: vec![] });
    }
    let reference = cfg
        .namespace
        .clone()
        .or_else(|| cluster.service_connect_defaults.as_ref().and_then(|d| d.namespace.clone()))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            EcsError::invalid(
                "Service Connect needs a namespace: set serviceConnectConfiguration.namespace, or the cluster's \
                 serviceConnectDefaults.",
            )
        })?;
    rules::check_namespace_ref(&reference)?;
    let ns = namespace(st, scope, &reference).ok_or_else(|| namespace_not_found(&reference))?;
    let published = rules::validate(cfg, td, &ns.name)?;
    // Client aliases are unique in their namespace, across services and clusters.
    for (_, other) in st.services.iter().filter(|(k, _)| k.as_str() != service_key) {
        if svc_rules::status(&other.value) == svc_rules::INACTIVE {
            continue;
        }
        let Some(oc) = svc_rules::primary(&other.value).and_then(|p| p.service_connect_configuration.as_ref()) else {
            continue;
        };
        if !oc.enabled || oc.namespace.as_deref() != Some(ns.arn.as_str()) {
            continue;
        }
        for s in oc.services.iter().flatten() {
            if published.iter().any(|p| Some(&p.discovery_name) == s.discovery_name.as_ref()) {
                return Err(EcsError::invalid(format!(
                    "The discoveryName '{}' is already used in namespace {} by service {}.",
                    s.discovery_name.as_deref().unwrap_or_default(),
                    ns.name,
                    svc_rules::name(&other.value)
                )));
            }
        }
        for (dns, port) in aliases(oc) {
            if published.iter().any(|p| p.alias.as_ref() == Some(&(dns.clone(), port))) {
                return Err(EcsError::invalid(format!(
                    "The client alias {dns}:{port} is already used in namespace {} by service {}.",
                    ns.name,
                    svc_rules::name(&other.value)
                )));
            }
        }
    }
    // A VIP for each DNS name, handed out in this transaction.
    let current = st.service_connect.get(keys::SERVICE_CONNECT_VIPS);
    let mut vips = current.map(|d| d.value.clone()).unwrap_or_default();
    let before = vips.clone();
    for p in &published {
        if let Some((dns, _)) = &p.alias {
            vips.assign(&alias_key(&ns.arn, dns))?;
        }
    }
    if vips != before {
        txn.compares.push(match current {
            Some(d) => Compare::mod_revision(keys::SERVICE_CONNECT_VIPS, d.rev),
            None => Compare::absent(keys::SERVICE_CONNECT_VIPS),
        });
        txn.ops.push(Op::put(keys::SERVICE_CONNECT_VIPS, serde_json::to_vec(&vips).expect("serializes")));
    }
    // A Cloud Map service per discovery name (ECS's discoveryArn), made here if needed; the
    // registrar registers the service's RUNNING tasks in it ([`crate::discovery`]).
    let mut arns = Vec::new();
    for p in &published {
        let (t, arn) = crate::services::servicediscovery::services::service_for_discovery(
            st,
            scope,
            &ns.id,
            &p.discovery_name,
            now,
        )
        .map_err(|e| EcsError::invalid(e.message))?;
        // Each new service guards (and rewrites, unchanged) the namespace document: once.
        for c in t.iter().flat_map(|t| &t.compares) {
            if !txn.compares.contains(c) {
                txn.compares.push(c.clone());
            }
        }
        for o in t.iter().flat_map(|t| &t.ops) {
            if !txn.ops.contains(o) {
                txn.ops.push(o.clone());
            }
        }
        arns.push(arn);
    }
    let mut config = cfg.clone();
    config.namespace = Some(ns.arn.clone());
    for (s, p) in config.services.iter_mut().flatten().zip(&published) {
        s.discovery_name = Some(p.discovery_name.clone());
        if let (Some(a), Some((dns, _))) = (s.client_aliases.as_mut().and_then(|a| a.first_mut()), &p.alias) {
            a.dns_name = Some(dns.clone());
        }
    }
    Ok(Prepared { config, resources: rules::resources(&published, &arns) })
}

/// The client aliases of a recorded configuration (DNS names already filled in).
fn aliases(cfg: &ServiceConnectConfiguration) -> impl Iterator<Item = (String, u16)> + '_ {
    cfg.services
        .iter()
        .flatten()
        .flat_map(|s| s.client_aliases.iter().flatten())
        .filter_map(|a| Some((a.dns_name.clone()?, u16::try_from(a.port).ok()?)))
}

/// One client alias port as nodes serve it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub dns_name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<SocketAddrV4>,
}

/// Every client alias of the ACTIVE Service Connect services, with the endpoints of the
/// tasks (of any of the service's deployments) that are endpoints ([`rules::is_endpoint`]:
/// HEALTHY when their task definition has health checks); sorted by VIP and port.
pub fn entries(st: &State) -> Vec<Entry> {
    let vips = st.service_connect.get(keys::SERVICE_CONNECT_VIPS).map(|d| &d.value);
    let empty = Vips::default();
    let vips = vips.unwrap_or(&empty);
    let mut out: BTreeMap<(Ipv4Addr, u16), Entry> = BTreeMap::new();
    for d in st.services.values() {
        if svc_rules::status(&d.value) == svc_rules::INACTIVE {
            continue;
        }
        let Some(cfg) = svc_rules::primary(&d.value).and_then(|p| p.service_connect_configuration.as_ref()) else {
            continue;
        };
        if !rules::serves(Some(cfg)) {
            continue;
        }
        let Some(ns) = cfg.namespace.as_deref() else { continue };
        let Some((scope, cluster, name)) = keys::parse_service(&d.key) else { continue };
        let group = svc_rules::task_group(&name);
        let tasks: Vec<_> = State::range(&st.tasks, &keys::tasks_of(&scope, &cluster))
            .filter(|t| t.value.group() == Some(group.as_str()) && !t.value.stopped())
            .map(|t| t.task())
            .filter(|t| {
                let td = t.task_definition_arn.as_deref().and_then(|a| taskdef_of(st, &scope, a));
                rules::is_endpoint(t, td.is_some_and(rules::has_health_check))
            })
            .collect();
        for s in cfg.services.iter().flatten() {
            for a in s.client_aliases.iter().flatten() {
                let (Some(dns), Ok(port)) = (a.dns_name.as_deref(), u16::try_from(a.port)) else { continue };
                let Some(vip) = vips.by_alias.get(&alias_key(ns, dns)).copied() else { continue };
                let e = out.entry((vip, port)).or_insert_with(|| Entry {
                    dns_name: dns.to_owned(),
                    vip,
                    port,
                    endpoints: vec![],
                });
                for t in &tasks {
                    let Some(ip) = estiba_core::task::private_ipv4(t) else { continue };
                    let td = t.task_definition_arn.as_deref().and_then(|a| taskdef_of(st, &scope, a));
                    if let Some(cp) = td.and_then(|td| rules::container_port(td, &s.port_name)) {
                        e.endpoints.push(SocketAddrV4::new(ip, cp));
                    }
                }
            }
        }
    }
    let mut v: Vec<Entry> = out.into_values().collect();
    for e in &mut v {
        e.endpoints.sort();
        e.endpoints.dedup();
    }
    v
}

/// Service Connect's Cloud Map services of an ECS service (its PRIMARY deployment's
/// `serviceConnectResources`) as registries, each with its port name: the registrar
/// registers the service's RUNNING tasks in them as it does for `serviceRegistries`.
pub fn discovery_registries(svc: &estiba_api::ecs::Service) -> Vec<(estiba_api::ecs::ServiceRegistry, String)> {
    let Some(p) = svc_rules::primary(svc) else { return vec![] };
    let Some(cfg) = p.service_connect_configuration.as_ref().filter(|c| c.enabled) else { return vec![] };
    let resources = p.service_connect_resources.as_deref().unwrap_or_default();
    cfg.services
        .iter()
        .flatten()
        .filter_map(|s| {
            let r = resources.iter().find(|r| r.discovery_name.is_some() && r.discovery_name == s.discovery_name)?;
            let registry =
                estiba_api::ecs::ServiceRegistry { registry_arn: r.discovery_arn.clone(), ..Default::default() };
            Some((registry, s.port_name.clone()))
        })
        .collect()
}

/// The container port of the port mapping `port_name` in a task's task definition.
pub fn container_port_of(st: &State, scope: &Scope, t: &estiba_api::ecs::Task, port_name: &str) -> Option<i32> {
    let td = taskdef_of(st, scope, t.task_definition_arn.as_deref()?)?;
    rules::container_port(td, port_name).map(i32::from)
}

/// The task definition an ARN (`...:task-definition/<family>:<revision>`) names.
fn taskdef_of<'a>(st: &'a State, scope: &Scope, arn: &str) -> Option<&'a TaskDefinition> {
    let (family, rev) = arn.rsplit('/').next()?.rsplit_once(':')?;
    st.taskdefs.get(&keys::taskdef(scope, family, rev.parse().ok()?)).map(|d| &d.value)
}

/// The proxy's table for these entries.
pub fn proxy_table(entries: &[Entry]) -> estiba_proxy::Table {
    estiba_proxy::Table {
        listeners: entries
            .iter()
            .map(|e| estiba_proxy::Listener { addr: SocketAddrV4::new(e.vip, e.port), endpoints: e.endpoints.clone() })
            .collect(),
    }
}
