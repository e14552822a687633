//! ECS services' tasks in Cloud Map (`serviceRegistries`): which instances the view says
//! should exist ([`sync`], written by [`crate::controller::discovery`]), and the
//! deregistration that goes into the very transaction that asks a task to stop
//! ([`deregister_on_stop`]), so its name is gone before its node sends SIGTERM.

use std::collections::HashSet;

use estiba_api::ecs::{Service, ServiceRegistry};
use estiba_api::servicediscovery::{HealthStatus, Instance, Service as SdService};
use estiba_core::discovery::{self, Registration};
use estiba_core::service as svc_rules;
use estiba_core::servicediscovery::{self as sd, HealthDoc};
use estiba_core::{keys, task, Scope};
use estiba_store::{Compare, Op, Txn};

use crate::services::servicediscovery::{self as cloudmap, Table};
use crate::view::State;

/// The Cloud Map service a registry ARN names, with its id, if it exists.
fn cloud_map_service<'a>(st: &'a State, scope: &Scope, registry_arn: &str) -> Option<(String, &'a SdService)> {
    let (sd::Resource::Service, id) = sd::parse_arn(scope, registry_arn)? else { return None };
    let doc = st.doc::<SdService>(cloudmap::table(Table::Services), &sd::service_key(scope, &id))?;
    Some((id, &doc.value))
}

/// Checks `serviceRegistries` for a service running `td` ([`discovery::check_registries`])
/// against the Cloud Map services the view holds.
pub fn check_registries(
    st: &State,
    scope: &Scope,
    registries: &[estiba_api::ecs::ServiceRegistry],
    td: &estiba_api::ecs::TaskDefinition,
) -> Result<(), estiba_core::EcsError> {
    discovery::check_registries(scope, registries, td, |id| {
        let doc = st.doc::<SdService>(cloudmap::table(Table::Services), &sd::service_key(scope, id))?;
        Some(doc.value.dns_config.iter().flat_map(|d| d.dns_records.iter().map(|r| r.r#type)).collect())
    })
}

/// The writes that bring Cloud Map in line with the services' running tasks, one group per
/// instance (the registrar commits as many as fit a transaction at a time): every
/// RUNNING task of a service with registries, with an address and not asked to stop,
/// registered (and its custom health kept in step with its checks); every instance ECS
/// registered for a task that is no longer so, deregistered. A registration holds only if
/// its task is unchanged since it was read: a stop request written meanwhile (which
/// deregisters, [`deregister_on_stop`]) is never undone.
///
/// A task without an ENI (bridge and host modes) is reached at the address its node reports
/// (`NodeStatus::address`) and the host port published for it.
pub fn sync(st: &State) -> Vec<Txn> {
    let mut groups = Vec::new();
    // (Cloud Map service key, instance id) of every instance that should be there.
    let mut wanted: HashSet<(String, String)> = HashSet::new();
    for d in st.services.values() {
        let Some((scope, cluster, name)) = keys::parse_service(&d.key) else { continue };
        let sources = registries_of(st, (&scope, &cluster, &name), &d.value);
        if sources.is_empty() || svc_rules::status(&d.value) == svc_rules::INACTIVE {
            continue;
        }
        let group = svc_rules::task_group(&name);
        let running: Vec<_> = crate::view::State::range(&st.tasks, &keys::tasks_of(&scope, &cluster))
            .filter(|t| {
                t.value.group() == Some(group.as_str())
                    && t.value.last_status == task::Status::Running
                    && !t.value.desired_stopped()
            })
            .collect();
        for Source { registry, port_name, task_set } in sources {
            let Some((sid, cm)) = registry.registry_arn.as_deref().and_then(|a| cloud_map_service(st, &scope, a))
            else {
                continue;
            };
            for t in &running {
                let full = t.task();
                let external_id = match &task_set {
                    Some((id, _)) if full.started_by.as_deref() != Some(id.as_str()) => continue,
                    Some((_, external_id)) => external_id.as_deref(),
                    None => None,
                };
                let mut registry = registry.clone();
                if let Some(port_name) = &port_name {
                    registry.container_port = crate::connect::container_port_of(st, &scope, &full, port_name);
                }
                let node = st
                    .claim(&t.key)
                    .and_then(|c| st.nodes.get(&keys::node(&c.value.node)))
                    .and_then(|n| n.value.address);
                let Some(at) = discovery::endpoint_of(&full, t.value.private_ipv4, node, &registry) else { continue };
                let r = Registration {
                    cluster: &cluster,
                    service: &name,
                    region: &scope.region,
                    registry: &registry,
                    external_id,
                };
                let instance = discovery::instance_for(&full, at, &r);
                wanted.insert((sd::service_key(&scope, &sid), instance.id.clone()));
                let key = sd::instance_key(&scope, &sid, &instance.id);
                match st.doc::<Instance>(cloudmap::table(Table::Instances), &key) {
                    None => {
                        let mut g = Txn::new().when(Compare::mod_revision(&t.key, t.rev));
                        g.ops.extend(cloudmap::register_ops(&scope, &sid, &instance));
                        groups.push(g);
                    }
                    Some(have) if cm.health_check_custom_config.is_some() => {
                        let health = discovery::health_of(&full);
                        if cloudmap::instance_health(st, &scope, cm, &have.value) != health {
                            groups.push(Txn::new().then(health_op(&scope, &sid, &instance.id, health)));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
    // Instances ECS registered whose task is gone, stopping, or no longer in a registry.
    for i in st.docs::<Instance>(cloudmap::table(Table::Instances), sd::PREFIX) {
        let attrs = i.value.attributes.as_ref();
        if attrs.is_none_or(|a| !a.contains_key(discovery::CLUSTER_NAME) || !a.contains_key(discovery::SERVICE_NAME)) {
            continue;
        }
        let Some((scope, sid)) = sd::service_of_instance_key(&i.key) else { continue };
        if !wanted.contains(&(sd::service_key(&scope, sid), i.value.id.clone())) {
            groups.push(Txn { compares: vec![], ops: cloudmap::deregister_ops(&scope, sid, &i.value.id) });
        }
    }
    groups
}

/// A registry a service's tasks are registered in.
struct Source {
    registry: ServiceRegistry,
    /// Service Connect's discovery names: the port's name (its container port is the named
    /// port mapping's in each task's own task definition).
    port_name: Option<String>,
    /// The task set (id, externalId) whose tasks only go in (EXTERNAL deployment controller).
    task_set: Option<(String, Option<String>)>,
}

/// The registries of a service's tasks: its `serviceRegistries`, then Service Connect's
/// discovery names; for a service with the EXTERNAL deployment controller, each task set's
/// own `serviceRegistries`.
fn registries_of(st: &State, (scope, cluster, name): (&Scope, &str, &str), svc: &Service) -> Vec<Source> {
    if svc_rules::is_external(svc) {
        return State::range(&st.task_sets, &keys::task_sets_of(scope, cluster, name))
            .flat_map(|t| {
                let set = (estiba_core::task_set::id(&t.value).to_owned(), t.value.external_id.clone());
                t.value.service_registries.iter().flatten().map(move |r| Source {
                    registry: r.clone(),
                    port_name: None,
                    task_set: Some(set.clone()),
                })
            })
            .collect();
    }
    let own = svc.service_registries.iter().flatten().map(|r| Source {
        registry: r.clone(),
        port_name: None,
        task_set: None,
    });
    let connect = crate::connect::discovery_registries(svc).into_iter().map(|(r, p)| Source {
        registry: r,
        port_name: Some(p),
        task_set: None,
    });
    own.chain(connect).collect()
}

fn health_op(scope: &Scope, sid: &str, instance: &str, status: HealthStatus) -> Op {
    Op::put(sd::health_key(scope, sid, instance), serde_json::to_vec(&HealthDoc { status }).expect("serializes"))
}

/// The deregistrations to write with a stop request for the task at `task_key`: its
/// instances in its service's registries.
pub fn deregister_on_stop(st: &State, task_key: &str) -> Vec<Op> {
    let Some(t) = st.tasks.get(task_key) else { return vec![] };
    let Some(name) = t.value.group().and_then(|g| g.strip_prefix("service:")) else { return vec![] };
    let Some((scope, cluster, id)) = keys::parse_task(task_key) else { return vec![] };
    let Some(svc) = st.services.get(&keys::service(&scope, cluster, name)) else { return vec![] };
    let mut ops = Vec::new();
    for Source { registry, .. } in registries_of(st, (&scope, cluster, name), &svc.value) {
        let Some((sid, _)) = registry.registry_arn.as_deref().and_then(|a| cloud_map_service(st, &scope, a)) else {
            continue;
        };
        if st.doc::<Instance>(cloudmap::table(Table::Instances), &sd::instance_key(&scope, &sid, id)).is_some() {
            ops.extend(cloudmap::deregister_ops(&scope, &sid, id));
        }
    }
    ops
}
