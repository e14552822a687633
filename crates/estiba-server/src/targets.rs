//! ECS services' tasks in Elastic Load Balancing v2 target groups (`loadBalancers`): the
//! targets the view says should be registered ([`sync`], written by
//! [`crate::controller::targets`]), the draining that goes into the very transaction that asks
//! a task to stop ([`deregister_on_stop`]: its node keeps it DEACTIVATING until the
//! deregistration delay is over), how a task fares in its groups for the scheduler
//! ([`lb_health`]), and CreateService's checks ([`check_load_balancers`]).
//!
//! Targets ECS registered carry their task's store key (`TargetDoc::owner`); targets registered
//! through the API are never touched here, except that a drained one is deleted once its
//! deregistration delay is over, whoever registered it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use estiba_api::ecs::{Service, Task, TaskDefinition};
use estiba_api::elbv2::{TargetHealthReasonEnum, TargetHealthStateEnum, TargetTypeEnum};
use estiba_core::deploy::LbHealth;
use estiba_core::elbv2::{self as elb, TargetDoc, TargetGroupDoc};
use estiba_core::elbv2_rules as rules;
use estiba_core::load_balancing::{self as lbr, GroupFacts, GroupHealth};
use estiba_core::node::Claim;
use estiba_core::service as svc_rules;
use estiba_core::telemetry::TargetHealthChange;
use estiba_core::{keys, task, EcsError, Scope};
use estiba_store::{Compare, Op, Txn};

use crate::services::elbv2::{table, Table};
use crate::view::{Doc, State};
use crate::Server;

/// The target group an ARN names, if it exists.
pub fn group<'a>(st: &'a State, arn: &str) -> Option<&'a Doc<TargetGroupDoc>> {
    st.doc::<TargetGroupDoc>(table(Table::TargetGroups), &elb::key_of_arn(arn)?)
}

/// Whether a listener or rule forwards to the group (it is in use: its targets drain when
/// deregistered, and ECS may register tasks in it).
pub fn attached(st: &State, scope: &Scope, tg_arn: &str) -> bool {
    !crate::services::elbv2::target_group_load_balancers(st, scope, tg_arn).is_empty()
}

fn target_type(g: &TargetGroupDoc) -> TargetTypeEnum {
    g.tg.target_type.unwrap_or(TargetTypeEnum::Instance)
}

/// Checks a service's `loadBalancers` for `td` against the target groups the view holds.
pub fn check_load_balancers(
    st: &State,
    scope: &Scope,
    lbs: &[estiba_api::ecs::LoadBalancer],
    td: &TaskDefinition,
) -> Result<(), EcsError> {
    svc_rules::validate_load_balancers(lbs, td)?;
    let mode = estiba_core::taskdef::network_mode(td);
    lbr::check_target_groups(lbs, mode, &|arn| {
        let g = group(st, arn)?;
        Some(GroupFacts { target_type: target_type(&g.value), attached: attached(st, scope, arn) })
    })
}

/// Checks the `advancedConfiguration` of a blue/green, linear or canary service's
/// `loadBalancers` against the view: the alternate target group exists with the primary's
/// target type, and each listener rule exists and forwards to the primary or the alternate
/// group only.
pub fn check_traffic(
    st: &State,
    scope: &Scope,
    lbs: &[estiba_api::ecs::LoadBalancer],
    config: &estiba_api::ecs::DeploymentConfiguration,
) -> Result<(), EcsError> {
    if config.strategy.unwrap_or_default() == estiba_api::ecs::DeploymentStrategy::Rolling {
        return Ok(());
    }
    for lb in lbs {
        let Some(adv) = &lb.advanced_configuration else { continue };
        let tg = lb.target_group_arn.as_deref().unwrap_or_default();
        if let Some(alt) = adv.alternate_target_group_arn.as_deref() {
            let g =
                group(st, alt).ok_or_else(|| EcsError::invalid(format!("Unable to find the target group {alt}.")))?;
            if group(st, tg).is_some_and(|p| target_type(&p.value) != target_type(&g.value)) {
                return Err(EcsError::invalid(format!(
                    "The alternate target group {alt} must have the same target type as the target group {tg}."
                )));
            }
        }
        for rule in [&adv.production_listener_rule, &adv.test_listener_rule].into_iter().flatten() {
            let d = crate::services::elbv2::find_rule(st, scope, rule)
                .ok_or_else(|| EcsError::invalid(format!("Unable to find the listener rule {rule}.")))?;
            let forwards = rules::rule_target_groups(&d.value.rule);
            estiba_core::traffic::check_rule_forwards(rule, lb, &forwards)?;
        }
    }
    Ok(())
}

/// The EC2 instance id of the container instance a task runs on.
fn instance_id_of(st: &State, scope: &Scope, cluster: &str, t: &Task) -> Option<String> {
    let id = t.container_instance_arn.as_deref()?.rsplit('/').next()?;
    st.instances.get(&keys::instance(scope, cluster, id))?.value.ec2_instance_id.clone()
}

/// Where the data plane reaches a target: an `ip` target at its address, an `instance`
/// target at the address its node reports (`NodeStatus::address`) and the target's port.
pub fn target_addr(st: &State, target_type: TargetTypeEnum, id: &str, port: u16) -> Option<SocketAddrV4> {
    let ip = match target_type {
        TargetTypeEnum::Ip => id.parse::<Ipv4Addr>().ok()?,
        TargetTypeEnum::Instance => {
            let ci = st.instances.values().find(|c| c.value.ec2_instance_id.as_deref() == Some(id))?;
            let node = estiba_core::instance::node_of(&ci.value)?;
            st.nodes.get(&keys::node(node))?.value.address?
        }
        _ => return None,
    };
    Some(SocketAddrV4::new(ip, port))
}

/// The service's `loadBalancers` entries as the task is registered in them: a blue/green,
/// linear or canary service's deployments each have their target groups
/// (`estiba_core::traffic`); a task of a task set (EXTERNAL deployment controller) is in its
/// own task set's.
fn task_load_balancers(
    st: &State,
    scope: &Scope,
    cluster: &str,
    svc: &Service,
    t: &Task,
) -> Vec<estiba_api::ecs::LoadBalancer> {
    let started_by = t.started_by.as_deref().unwrap_or("");
    if svc_rules::is_external(svc) {
        let key = keys::task_set(scope, cluster, svc_rules::name(svc), started_by);
        return st.task_sets.get(&key).and_then(|d| d.value.load_balancers.clone()).unwrap_or_default();
    }
    let traffic = st.traffic.get(&keys::traffic(scope, cluster, svc_rules::name(svc)));
    estiba_core::traffic::load_balancers_of(svc, traffic.map(|d| &d.value), t.started_by.as_deref().unwrap_or(""))
}

/// A task's standing in its service's target groups, for the scheduler.
pub fn lb_health(server: &Server, st: &State, scope: &Scope, cluster: &str, svc: &Service, t: &Task) -> LbHealth {
    let lbs = task_load_balancers(st, scope, cluster, svc, t);
    let lbs: Vec<_> = lbs.iter().filter(|l| l.target_group_arn.is_some()).collect();
    if lbs.is_empty() {
        return LbHealth::NotBehind;
    }
    let instance = instance_id_of(st, scope, cluster, t);
    let mut groups = Vec::with_capacity(lbs.len());
    let mut described = Vec::with_capacity(lbs.len());
    for lb in &lbs {
        let arn = lb.target_group_arn.as_deref().unwrap_or_default();
        let Some(g) = group(st, arn) else { continue };
        let tt = target_type(&g.value);
        let target = lbr::target_of(t, lb, tt, instance.as_deref());
        let doc = target.as_ref().and_then(|(id, port)| target_doc(st, &g.value, id, *port));
        let registered = doc.is_some_and(|d| d.value.draining_since.is_none());
        let health = if g.value.tg.health_check_enabled == Some(false) {
            Some((TargetHealthStateEnum::Unavailable, None, None))
        } else {
            target.as_ref().and_then(|(id, port)| server.target_health.get(arn, (id, *port)))
        };
        described.push((arn, lb.container_port.unwrap_or(0), registered, health));
    }
    for (arn, port, registered, health) in &described {
        let (state, reason, description) = match health {
            Some((s, r, d)) => (Some(*s), *r, d.as_deref()),
            None => (None, None, None),
        };
        groups.push(GroupHealth {
            target_group: arn,
            port: *port,
            registered: *registered,
            state,
            reason,
            description,
        });
    }
    lbr::combine(&groups)
}

fn target_doc<'a>(st: &'a State, g: &TargetGroupDoc, id: &str, port: u16) -> Option<&'a Doc<TargetDoc>> {
    let arn = g.tg.target_group_arn.as_deref()?;
    let p = elb::parse_arn(arn)?;
    let name = p.path[0];
    st.doc::<TargetDoc>(table(Table::Targets), &elb::key(&p.scope, elb::TARGETS, &elb::target_suffix(name, id, port)))
}

fn put<T: serde::Serialize>(key: &str, v: &T) -> Op {
    Op::put(key.to_owned(), serde_json::to_vec(v).expect("serializes"))
}

/// The writes that bring target groups in line with the services' tasks, one group per
/// target (the registrar commits as many as fit a transaction at a time): every
/// RUNNING task of a service with target groups, not asked to stop, registered in each
/// (with its task's key as owner); targets ECS registered whose task is no longer so,
/// draining (or deleted at once when the group is not in use or its task is gone). Drained
/// targets are deleted by `controller::elbv2::Draining`.
pub fn sync(st: &State, now: f64) -> Vec<Txn> {
    let mut groups = Vec::new();
    let mut wanted: HashSet<String> = HashSet::new();
    for d in st.services.values() {
        let Some((scope, cluster, name)) = keys::parse_service(&d.key) else { continue };
        let behind = if svc_rules::is_external(&d.value) {
            State::range(&st.task_sets, &keys::task_sets_of(&scope, &cluster, &name))
                .any(|t| t.value.load_balancers.iter().flatten().any(|l| l.target_group_arn.is_some()))
        } else {
            d.value.load_balancers.iter().flatten().any(|l| l.target_group_arn.is_some())
        };
        if !behind || svc_rules::status(&d.value) == svc_rules::INACTIVE {
            continue;
        }
        let group_name = svc_rules::task_group(&name);
        let running = State::range(&st.tasks, &keys::tasks_of(&scope, &cluster)).filter(|t| {
            t.value.group() == Some(group_name.as_str())
                && t.value.last_status == task::Status::Running
                && !t.value.desired_stopped()
        });
        for t in running {
            let full = t.task();
            let instance = instance_id_of(st, &scope, &cluster, &full);
            let lbs = task_load_balancers(st, &scope, &cluster, &d.value, &full);
            for lb in lbs.iter().filter(|l| l.target_group_arn.is_some()) {
                let arn = lb.target_group_arn.as_deref().unwrap_or_default();
                let Some(g) = group(st, arn) else { continue };
                let Some((id, port)) = lbr::target_of(&full, lb, target_type(&g.value), instance.as_deref()) else {
                    continue;
                };
                let Some(p) = elb::parse_arn(arn) else { continue };
                let key = elb::key(&p.scope, elb::TARGETS, &elb::target_suffix(p.path[0], &id, port));
                wanted.insert(key.clone());
                match st.doc::<TargetDoc>(table(Table::Targets), &key) {
                    Some(have) if have.value.draining_since.is_none() => {}
                    have => {
                        // Registered only while the task is as read: a stop written meanwhile wins.
                        let mut g = Txn::new().when(Compare::mod_revision(&t.key, t.rev));
                        if let Some(h) = have {
                            g.compares.push(Compare::mod_revision(&h.key, h.rev));
                        }
                        let doc = TargetDoc {
                            id,
                            port,
                            availability_zone: full.availability_zone.clone(),
                            registered_at: now,
                            draining_since: None,
                            owner: Some(t.key.clone()),
                        };
                        groups.push(g.then(put(&key, &doc)));
                    }
                }
            }
        }
    }
    for t in st.docs::<TargetDoc>(table(Table::Targets), elb::PREFIX) {
        if wanted.contains(&t.key) || t.value.draining_since.is_some() || t.value.owner.is_none() {
            continue;
        }
        let Some(g) = group_of_target_key(st, &t.key) else { continue };
        let tg_arn = g.value.tg.target_group_arn.as_deref().unwrap_or_default();
        let task_gone = t.value.owner.as_deref().is_none_or(|k| !task_is_live(st, k));
        let in_use = elb::parse_arn(tg_arn).is_some_and(|p| attached(st, &p.scope, tg_arn));
        let txn = Txn::new().when(Compare::mod_revision(&t.key, t.rev));
        groups.push(if task_gone || !in_use || rules::deregistration_delay(&g.value.attributes) <= 0.0 {
            txn.then(Op::delete(t.key.clone()))
        } else {
            txn.then(put(&t.key, &TargetDoc { draining_since: Some(now), ..t.value.clone() }))
        });
    }
    groups
}

/// The target group document a target key belongs to.
fn group_of_target_key<'a>(st: &'a State, key: &str) -> Option<&'a Doc<TargetGroupDoc>> {
    st.doc::<TargetGroupDoc>(table(Table::TargetGroups), &elb::group_key_of_target(key)?)
}

/// Whether the task at a key exists and has not stopped.
fn task_is_live(st: &State, task_key: &str) -> bool {
    st.tasks.get(task_key).is_some_and(|t| t.value.last_status != task::Status::Stopped)
}

/// What to write with a stop request for the task at `task_key`: its targets in its
/// service's groups draining from `now`, and its claim's `drain_until` at the end of the
/// longest deregistration delay among them, so its node waits that long before SIGTERM.
pub fn deregister_on_stop(st: &State, task_key: &str, now: f64) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut until: Option<f64> = None;
    for d in st.docs::<TargetDoc>(table(Table::Targets), elb::PREFIX) {
        if d.value.owner.as_deref() != Some(task_key) || d.value.draining_since.is_some() {
            continue;
        }
        let Some(g) = group_of_target_key(st, &d.key) else { continue };
        let delay = rules::deregistration_delay(&g.value.attributes);
        let tg_arn = g.value.tg.target_group_arn.as_deref().unwrap_or_default();
        let in_use = elb::parse_arn(tg_arn).is_some_and(|p| attached(st, &p.scope, tg_arn));
        if !in_use || delay <= 0.0 {
            ops.push(Op::delete(d.key.clone()));
            continue;
        }
        ops.push(put(&d.key, &TargetDoc { draining_since: Some(now), ..d.value.clone() }));
        until = Some(until.map_or(now + delay, |u: f64| u.max(now + delay)));
    }
    if let (Some(until), Some(claim)) = (until, st.claim(task_key)) {
        ops.push(put(&claim.key, &Claim { drain_until: Some(until), ..claim.value.clone() }));
    }
    ops
}

impl Server {
    /// Records target health reported by a node's load balancer (by the address it probes)
    /// under the target's id and port, and wakes the controllers when a state changed.
    pub fn target_health_reported(&self, changes: &[TargetHealthChange]) {
        let mut changed = false;
        {
            let st = self.view.read();
            for c in changes {
                let Ok(addr) = c.target.parse::<SocketAddrV4>() else { continue };
                let Some(g) = group(&st, &c.target_group_arn) else { continue };
                let id = match target_type(&g.value) {
                    TargetTypeEnum::Ip => addr.ip().to_string(),
                    tt => {
                        // The registered target this node reaches at `addr`.
                        let Some(p) = elb::parse_arn(&c.target_group_arn) else { continue };
                        let prefix = elb::key(&p.scope, elb::TARGETS, &format!("{}/", p.path[0]));
                        let found = st
                            .docs::<TargetDoc>(table(Table::Targets), &prefix)
                            .find(|t| target_addr(&st, tt, &t.value.id, t.value.port) == Some(addr));
                        match found {
                            Some(t) => t.value.id.clone(),
                            None => continue,
                        }
                    }
                };
                let Some(state) = TargetHealthStateEnum::from_str_opt(&c.state) else { continue };
                let reason = c.reason.as_deref().and_then(TargetHealthReasonEnum::from_str_opt);
                let key = (id.as_str(), addr.port());
                let before = self.target_health.get(&c.target_group_arn, key);
                if before.as_ref().map(|h| h.0) != Some(state) {
                    changed = true;
                }
                self.target_health.set(&c.target_group_arn, key, state, reason, c.description.clone());
            }
        }
        if changed {
            self.nudge();
        }
    }
}
