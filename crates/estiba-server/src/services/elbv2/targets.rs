//! RegisterTargets, DeregisterTargets, DescribeTargetHealth.

use bytes::Bytes;
use estiba_api::elbv2::*;
use estiba_api::ApiError;
use estiba_core::elbv2::{self as elb, TargetDoc, TargetGroupDoc};
use estiba_core::elbv2_rules::{self as rules, ElbError, TargetSpec};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::{docs, json, put, table, target_group_load_balancers, tg_doc, touch, vpc, Result, Table};
use crate::lb_health::TargetHealthBook;
use crate::services::Call;
use crate::view::{Doc, State};
use crate::Server;

/// The targets of a request, checked against the group.
fn specs(
    s: &Server,
    cx: &Call,
    st: &State,
    tg: &TargetGroup,
    targets: &[TargetDescription],
) -> Result<Vec<TargetSpec>> {
    let vpc = vpc(s, &cx.scope);
    let subnets: Vec<_> = vpc.subnets.iter().map(|s| (s.cidr, s.availability_zone.clone())).collect();
    let t = tg.target_type.unwrap_or_default();
    let mut out = vec![];
    for d in targets {
        let spec = rules::check_target(t, tg.port, &d.id, d.port, d.availability_zone.as_deref(), vpc.cidr, &subnets)?;
        if t == TargetTypeEnum::Alb
            && super::lb_doc(st, &cx.scope, &d.id).ok().and_then(|l| l.value.lb.r#type)
                != Some(LoadBalancerTypeEnum::Application)
        {
            return Err(
                ElbError::invalid_target(format!("The target '{}' is not an application load balancer", d.id)).into()
            );
        }
        out.push(spec);
    }
    Ok(out)
}

fn target_key(scope: &Scope, tg_name: &str, id: &str, port: u16) -> String {
    elb::key(scope, elb::TARGETS, &elb::target_suffix(tg_name, id, port))
}

fn not_registered(id: &str) -> ElbError {
    ElbError::invalid_target(format!(
        "The target '{id}' is not registered in the target group, or is not in the same VPC as the target group"
    ))
}

pub async fn register(s: &Server, cx: &Call, req: RegisterTargetsInput) -> Result<Bytes> {
    let scope = &cx.scope;
    // Every target is checked first (bad input registers none); many targets may then take
    // several transactions, as many as the store's limits need.
    s.transact_in_batches::<_, ApiError>(req.targets.len(), |st, range| {
        let tg = tg_doc(st, scope, &req.target_group_arn)?;
        let name = tg.value.tg.target_group_name.clone().unwrap_or_default();
        if range.start == 0 {
            specs(s, cx, st, &tg.value.tg, &req.targets)?;
        }
        let specs = specs(s, cx, st, &tg.value.tg, &req.targets[range])?;
        // The group is written again so that a concurrent deletion leaves no target behind.
        let mut txn = touch(Txn::new(), tg);
        for t in specs {
            let key = target_key(scope, &name, &t.id, t.port);
            let doc = match st.doc::<TargetDoc>(table(Table::Targets), &key) {
                Some(d) if d.value.draining_since.is_none() => continue,
                Some(d) => {
                    txn = txn.when(Compare::mod_revision(&key, d.rev));
                    TargetDoc { draining_since: None, registered_at: cx.now, owner: None, ..d.value.clone() }
                }
                None => {
                    txn = txn.when(Compare::absent(&key));
                    TargetDoc {
                        id: t.id.clone(),
                        port: t.port,
                        availability_zone: t.availability_zone.clone(),
                        registered_at: cx.now,
                        draining_since: None,
                        owner: None,
                    }
                }
            };
            txn = txn.then(put(&key, &doc));
        }
        Ok((txn, ()))
    })
    .await?;
    Ok(json(&RegisterTargetsOutput {}))
}

pub async fn deregister(s: &Server, cx: &Call, req: DeregisterTargetsInput) -> Result<Bytes> {
    let scope = &cx.scope;
    // Every target is checked in the first batch (one not registered deregisters none); many
    // targets may then take several transactions, as the store's limits need. A target gone
    // before its batch (deregistered meanwhile) is skipped.
    let gone = s
        .transact_in_batches::<_, ApiError>(req.targets.len(), |st, range| {
            let tg = tg_doc(st, scope, &req.target_group_arn)?;
            let name = tg.value.tg.target_group_name.clone().unwrap_or_default();
            let in_use = !target_group_load_balancers(st, scope, &req.target_group_arn).is_empty();
            let drains = in_use && rules::deregistration_delay(&tg.value.attributes) > 0.0;
            let key_of = |t: &TargetDescription| {
                let port = t.port.or(tg.value.tg.port).unwrap_or(0);
                let port = u16::try_from(port).map_err(|_| not_registered(&t.id))?;
                Ok::<_, ApiError>((target_key(scope, &name, &t.id, port), port))
            };
            if range.start == 0 {
                for t in &req.targets {
                    let (key, _) = key_of(t)?;
                    st.doc::<TargetDoc>(table(Table::Targets), &key).ok_or_else(|| not_registered(&t.id))?;
                }
            }
            let mut txn = Txn::new().when(Compare::mod_revision(&tg.key, tg.rev));
            let mut gone = vec![];
            for t in &req.targets[range] {
                let (key, port) = key_of(t)?;
                let Some(d) = st.doc::<TargetDoc>(table(Table::Targets), &key) else { continue };
                if d.value.draining_since.is_some() {
                    continue;
                }
                txn = txn.when(Compare::mod_revision(&key, d.rev));
                if drains {
                    txn = txn.then(put(&key, &TargetDoc { draining_since: Some(cx.now), ..d.value.clone() }));
                } else {
                    txn = txn.then(Op::delete(key));
                    gone.push((t.id.clone(), port));
                }
            }
            Ok((txn, gone))
        })
        .await?
        .into_iter()
        .flatten();
    for (id, port) in gone {
        s.target_health.forget(&req.target_group_arn, (&id, port));
    }
    Ok(json(&DeregisterTargetsOutput {}))
}

/// A registered target's health as DescribeTargetHealth answers it: draining while
/// deregistered in use, `unused` in a group no load balancer forwards to, `unavailable`
/// with health checks off, else what the data plane reported (`initial` until then).
pub fn target_health(book: &TargetHealthBook, tg: &TargetGroup, in_use: bool, t: &TargetDoc) -> TargetHealth {
    let arn = tg.target_group_arn.as_deref().unwrap_or_default();
    let (state, reason, description) = if t.draining_since.is_some() {
        (
            TargetHealthStateEnum::Draining,
            Some(TargetHealthReasonEnum::TargetDeregistrationInProgress),
            Some("Target deregistration is in progress".to_string()),
        )
    } else if !in_use {
        (
            TargetHealthStateEnum::Unused,
            Some(TargetHealthReasonEnum::TargetNotInUse),
            Some("Target group is not configured to receive traffic from the load balancer".to_string()),
        )
    } else if tg.health_check_enabled == Some(false) {
        (
            TargetHealthStateEnum::Unavailable,
            Some(TargetHealthReasonEnum::TargetHealthCheckDisabled),
            Some("Health checks are disabled for the target group".to_string()),
        )
    } else {
        book.get(arn, (&t.id, t.port)).unwrap_or((
            TargetHealthStateEnum::Initial,
            Some(TargetHealthReasonEnum::ElbRegistrationInProgress),
            Some("Target registration is in progress".to_string()),
        ))
    };
    // A healthy target has no reason.
    let reason = reason.filter(|_| state != TargetHealthStateEnum::Healthy);
    TargetHealth { state: Some(state), reason, description: description.filter(|_| reason.is_some()) }
}

/// The registered targets of a group (drained ones, not yet removed, left out).
fn registered<'a>(
    st: &'a State,
    scope: &Scope,
    tg: &'a TargetGroupDoc,
    now: f64,
) -> impl Iterator<Item = &'a Doc<TargetDoc>> {
    let name = tg.tg.target_group_name.clone().unwrap_or_default();
    docs::<TargetDoc>(st, scope, Table::Targets, &format!("{name}/"))
        .filter(move |d| d.value.draining_since.is_none_or(|since| !rules::drained(since, &tg.attributes, now)))
}

pub async fn describe_health(s: &Server, cx: &Call, req: DescribeTargetHealthInput) -> Result<Bytes> {
    let st = s.view.read();
    let scope = &cx.scope;
    let tg = tg_doc(&st, scope, &req.target_group_arn)?;
    let in_use = !target_group_load_balancers(&st, scope, &req.target_group_arn).is_empty();
    let all: Vec<&TargetDoc> = registered(&st, scope, &tg.value, cx.now).map(|d| &d.value).collect();
    let hc_port = tg.value.tg.health_check_port.clone().unwrap_or_else(|| "traffic-port".into());
    let shown_port = |port: u16| if hc_port == "traffic-port" { port.to_string() } else { hc_port.clone() };
    let describe = |t: &TargetDoc| TargetHealthDescription {
        target: Some(TargetDescription {
            id: t.id.clone(),
            port: Some(t.port as i32),
            availability_zone: t.availability_zone.clone(),
            quic_server_id: None,
        }),
        health_check_port: Some(shown_port(t.port)),
        target_health: Some(target_health(&s.target_health, &tg.value.tg, in_use, t)),
        ..Default::default()
    };
    let descriptions: Vec<TargetHealthDescription> = match req.targets.as_deref() {
        None | Some([]) => all.into_iter().map(describe).collect(),
        // Targets asked for by name: one that is not registered is `unused` with
        // `Target.NotRegistered`, as AWS answers.
        Some(asked) => asked
            .iter()
            .map(|a| {
                let port = a.port.or(tg.value.tg.port);
                match all.iter().find(|t| t.id == a.id && port.is_none_or(|p| p == t.port as i32)) {
                    Some(t) => describe(t),
                    None => TargetHealthDescription {
                        target: Some(TargetDescription { id: a.id.clone(), port, ..Default::default() }),
                        health_check_port: port.and_then(|p| u16::try_from(p).ok()).map(shown_port),
                        target_health: Some(TargetHealth {
                            state: Some(TargetHealthStateEnum::Unused),
                            reason: Some(TargetHealthReasonEnum::TargetNotRegistered),
                            description: Some("Target is not registered to the target group".into()),
                        }),
                        ..Default::default()
                    },
                }
            })
            .collect(),
    };
    Ok(json(&DescribeTargetHealthOutput { target_health_descriptions: Some(descriptions) }))
}
