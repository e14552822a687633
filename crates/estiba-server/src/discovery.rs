//! ECS services' tasks in Cloud Map (`serviceRegistries`): which instances the view says
//! should exist ([`sync`], written by [`crate::controller::discovery`]), and the
//! deregistration that goes into the very transaction that asks a task to stop
//! ([`deregister_on_stop`]), so its name is gone before its node sends SIGTERM.

use std::collections::HashSet;

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

/// The transaction that brings Cloud Map in line with the services' running tasks: every
/// RUNNING task of a service with registries, with an address and not asked to stop,
/// registered (and its custom health kept in step with its checks); every instance ECS
/// registered for a task that is no longer so, deregistered. A registration holds only if
/// its task is unchanged since it was read: a stop request written meanwhile (which
/// deregisters, [`deregister_on_stop`]) is never undone.
///
/// A task without an ENI (bridge and host modes) is reached at the address its node reports
/// (`NodeStatus::address`) and the host port published for it.
pub fn sync(st: &State) -> Txn {
    let mut ops = Vec::new();
    let mut compares = Vec::new();
    // (Cloud Map service key, instance id) of every instance that should be there.
    let mut wanted: HashSet<(String, String)> = HashSet::new();
    for d in st.services.values() {
        let registries = d.value.service_registries.as_deref().unwrap_or_default();
        let connect = crate::connect::discovery_registries(&d.value);
        if (registries.is_empty() && connect.is_empty()) || svc_rules::status(&d.value) == svc_rules::INACTIVE {
            continue;
        }
        let Some((scope, cluster, name)) = keys::parse_service(&d.key) else { continue };
        let group = svc_rules::task_group(&name);
        let running: Vec<_> = crate::view::State::range(&st.tasks, &keys::tasks_of(&scope, &cluster))
            .filter(|t| {
                t.value.group() == Some(group.as_str())
                    && t.value.last_status == task::Status::Running
                    && !t.value.desired_stopped()
            })
            .collect();
        // serviceRegistries, then Service Connect's discovery names (the port: the named port
        // mapping's container port in each task's own task definition).
        let all = registries.iter().map(|r| (r.clone(), None)).chain(connect.into_iter().map(|(r, p)| (r, Some(p))));
        for (registry, port_name) in all {
            let Some((sid, cm)) = registry.registry_arn.as_deref().and_then(|a| cloud_map_service(st, &scope, a))
            else {
                continue;
            };
            for t in &running {
                let full = t.task();
                let mut registry = registry.clone();
                if let Some(port_name) = &port_name {
                    registry.container_port = crate::connect::container_port_of(st, &scope, &full, port_name);
                }
                let node = st
                    .claim(&t.key)
                    .and_then(|c| st.nodes.get(&keys::node(&c.value.node)))
                    .and_then(|n| n.value.address);
                let Some(at) = discovery::endpoint_of(&full, t.value.private_ipv4, node, &registry) else { continue };
                let r = Registration { cluster: &cluster, service: &name, region: &scope.region, registry: &registry };
                let instance = discovery::instance_for(&full, at, &r);
                wanted.insert((sd::service_key(&scope, &sid), instance.id.clone()));
                let key = sd::instance_key(&scope, &sid, &instance.id);
                match st.doc::<Instance>(cloudmap::table(Table::Instances), &key) {
                    None => {
                        compares.push(Compare::mod_revision(&t.key, t.rev));
                        ops.extend(cloudmap::register_ops(&scope, &sid, &instance));
                    }
                    Some(have) if cm.health_check_custom_config.is_some() => {
                        let health = discovery::health_of(&full);
                        if cloudmap::instance_health(st, &scope, cm, &have.value) != health {
                            ops.push(health_op(&scope, &sid, &instance.id, health));
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
            ops.extend(cloudmap::deregister_ops(&scope, sid, &i.value.id));
        }
    }
    Txn { compares, ops }
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
    let connect = crate::connect::discovery_registries(&svc.value).into_iter().map(|(r, _)| r);
    for registry in svc.value.service_registries.iter().flatten().cloned().chain(connect) {
        let Some((sid, _)) = registry.registry_arn.as_deref().and_then(|a| cloud_map_service(st, &scope, a)) else {
            continue;
        };
        if st.doc::<Instance>(cloudmap::table(Table::Instances), &sd::instance_key(&scope, &sid, id)).is_some() {
            ops.extend(cloudmap::deregister_ops(&scope, &sid, id));
        }
    }
    ops
}
