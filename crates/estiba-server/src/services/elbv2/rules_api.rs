//! CreateRule, DescribeRules, ModifyRule, DeleteRule, SetRulePriorities.

use bytes::Bytes;
use estiba_api::elbv2::*;
use estiba_api::ApiError;
use estiba_core::elbv2::{self as elb, ListenerDoc, RuleDoc};
use estiba_core::elbv2_rules::{self as rules, ElbError};
use estiba_core::Scope;
use estiba_store::{Op, Txn};

use super::listeners::check_forwards;
use super::{docs, guard, json, lb_of_key, listener_doc, listener_path, new_id, put, rule_doc, touch, Result, Table};
use crate::services::Call;
use crate::view::{Doc, State};
use crate::Server;

/// The rules of the listener whose document has key `listener_key`.
fn rules_of<'a>(st: &'a State, scope: &Scope, listener_key: &str) -> impl Iterator<Item = &'a Doc<RuleDoc>> + 'a {
    let (lb, id) = listener_path(listener_key);
    docs::<RuleDoc>(st, scope, Table::Rules, &format!("{lb}/{id}/"))
}

/// The listener of a rule (by the rule document's key).
fn listener_of<'a>(st: &'a State, scope: &Scope, rule_key: &str) -> Option<&'a Doc<ListenerDoc>> {
    let rest = rule_key.strip_prefix(&elb::kind_prefix(scope, elb::RULES))?;
    let mut parts = rest.split('/');
    let (lb, id) = (parts.next()?, parts.next()?);
    st.doc::<ListenerDoc>(super::table(Table::Listeners), &elb::key(scope, elb::LISTENERS, &format!("{lb}/{id}")))
}

fn priority(r: &RuleDoc) -> Option<i32> {
    r.rule.priority.as_deref().and_then(|p| p.parse().ok())
}

/// A new (non-default) rule's key and document under the listener `listener_arn` whose
/// document is at `listener_key` (CreateRule's write, and Express Mode's host rule).
pub(crate) fn new_rule(
    scope: &Scope,
    listener_arn: &str,
    listener_key: &str,
    priority: i32,
    conditions: Vec<RuleCondition>,
    actions: &[Action],
    tags: Vec<Tag>,
) -> (String, RuleDoc) {
    let id = new_id();
    let rule = Rule {
        rule_arn: Some(elb::rule_arn(listener_arn, &id)),
        priority: Some(priority.to_string()),
        is_default: Some(false),
        conditions: Some(conditions),
        actions: Some(actions.to_vec()),
        transforms: None,
    };
    let (lb_name, listener_id) = listener_path(listener_key);
    (elb::key(scope, elb::RULES, &format!("{lb_name}/{listener_id}/{id}")), RuleDoc { rule, tags })
}

pub async fn create(s: &Server, cx: &Call, req: CreateRuleInput) -> Result<Bytes> {
    let scope = &cx.scope;
    let rule = s
        .transact::<_, ApiError>(|st| {
            let l = listener_doc(st, scope, &req.listener_arn)?;
            let lb = lb_of_key(st, scope, elb::LISTENERS, &l.key).ok_or_else(ElbError::listener_not_found)?;
            let t = lb.value.lb.r#type.unwrap_or_default();
            if t != LoadBalancerTypeEnum::Application {
                return Err(
                    ElbError::config("Rules can only be added to listeners of application load balancers").into()
                );
            }
            let existing: Vec<_> =
                rules_of(st, scope, &l.key).filter(|r| r.value.rule.is_default != Some(true)).collect();
            rules::check_priority_free(req.priority, existing.iter().filter_map(|r| priority(&r.value)))?;
            if existing.len() >= rules::MAX_RULES_PER_LISTENER {
                return Err(ElbError::Code(
                    ErrorCode::TooManyRulesException,
                    format!("The limit of '{}' rules per listener has been reached", rules::MAX_RULES_PER_LISTENER),
                )
                .into());
            }
            let conditions = rules::check_conditions(&req.conditions)?;
            let actions = rules::check_actions(t, &req.actions)?;
            let tags = rules::add_tags(&[], req.tags.as_deref().unwrap_or_default())?;
            let (key, doc) = new_rule(scope, &req.listener_arn, &l.key, req.priority, conditions, &actions, tags);
            let rule = doc.rule.clone();
            // The listener is written again: concurrent creates of one priority conflict.
            let txn = touch(Txn::new(), l).when(estiba_store::Compare::absent(&key)).then(put(&key, &doc));
            let txn = check_forwards(st, scope, &lb.value, l.value.listener.protocol, &actions, txn)?;
            Ok((txn, rule))
        })
        .await?;
    Ok(json(&CreateRuleOutput { rules: Some(vec![rule]) }))
}

pub async fn describe(s: &Server, cx: &Call, req: DescribeRulesInput) -> Result<Bytes> {
    let st = s.view.read();
    let scope = &cx.scope;
    let arns = req.rule_arns.clone().unwrap_or_default();
    let mut chosen: Vec<&Doc<RuleDoc>> = match (&req.listener_arn, arns.is_empty()) {
        (Some(_), false) => {
            return Err(
                ElbError::Validation("Listener ARN and rule ARNs cannot be specified at the same time".into()).into()
            )
        }
        (None, true) => {
            return Err(
                ElbError::Validation("You must specify either listener rule ARNs or a listener ARN".into()).into()
            )
        }
        (Some(l), true) => {
            let l = listener_doc(&st, scope, l)?;
            rules_of(&st, scope, &l.key).collect()
        }
        (None, false) => arns.iter().map(|a| rule_doc(&st, scope, a)).collect::<Result<_, _>>()?,
    };
    if req.listener_arn.is_some() {
        chosen.sort_by_key(|d| rules::priority_order(d.value.rule.priority.as_deref()));
    }
    let start = match req.marker.as_deref() {
        Some(m) => m.parse::<usize>().map_err(|_| ElbError::Validation("The marker is not valid".into()))?,
        None => 0,
    };
    let size = req.page_size.filter(|n| *n > 0).unwrap_or(400) as usize;
    // Rules page by position (their order is by priority, not key).
    let all: Vec<Rule> = chosen.iter().map(|d| d.value.rule.clone()).collect();
    let end = (start + size).min(all.len());
    let next = (end < all.len()).then(|| end.to_string());
    let rules = all.get(start.min(all.len())..end).unwrap_or_default().to_vec();
    Ok(json(&DescribeRulesOutput { rules: Some(rules), next_marker: next }))
}

pub async fn modify(s: &Server, cx: &Call, req: ModifyRuleInput) -> Result<Bytes> {
    let scope = &cx.scope;
    if req.actions.is_none() && req.conditions.is_none() {
        return Err(ElbError::Validation("Either conditions or actions must be specified".into()).into());
    }
    let rule = s
        .transact::<_, ApiError>(|st| {
            let d = rule_doc(st, scope, &req.rule_arn)?;
            listener_of(st, scope, &d.key).ok_or_else(ElbError::rule_not_found)?;
            let default = d.value.rule.is_default == Some(true);
            let mut doc = d.value.clone();
            if let Some(c) = &req.conditions {
                if default {
                    return Err(ElbError::Code(
                        ErrorCode::OperationNotPermittedException,
                        "The conditions of a default rule cannot be modified".into(),
                    )
                    .into());
                }
                doc.rule.conditions = Some(rules::check_conditions(c)?);
            }
            let mut txn = guard(Txn::new(), d);
            if let Some(a) = &req.actions {
                txn = set_actions(st, scope, d, &mut doc, a, txn)?;
            }
            let rule = doc.rule.clone();
            Ok((txn.then(put(&d.key, &doc)), rule))
        })
        .await?;
    Ok(json(&ModifyRuleOutput { rules: Some(vec![rule]) }))
}

/// Gives the rule `doc` (stored as `d`) the actions `given`, checked as ModifyRule checks
/// them; a default rule's listener gets them as its default actions.
fn set_actions(
    st: &State,
    scope: &Scope,
    d: &Doc<RuleDoc>,
    doc: &mut RuleDoc,
    given: &[Action],
    txn: Txn,
) -> Result<Txn> {
    let l = listener_of(st, scope, &d.key).ok_or_else(ElbError::rule_not_found)?;
    let lb = lb_of_key(st, scope, elb::LISTENERS, &l.key).ok_or_else(ElbError::rule_not_found)?;
    let actions = rules::check_actions(lb.value.lb.r#type.unwrap_or_default(), given)?;
    doc.rule.actions = Some(actions.clone());
    let mut txn = check_forwards(st, scope, &lb.value, l.value.listener.protocol, &actions, txn)?;
    if doc.rule.is_default == Some(true) {
        let mut listener = l.value.clone();
        listener.listener.default_actions = Some(actions);
        txn = guard(txn, l).then(put(&l.key, &listener));
    }
    Ok(txn)
}

/// What makes the rule `rule_arn` forward to `weights` (target group, weight), as ModifyRule
/// would with a weighted forward action in place of its forward action: `None` when it already
/// does. ECS's blue/green, linear and canary deployments shift traffic with it.
pub(crate) fn forward_weighted(
    st: &State,
    scope: &Scope,
    rule_arn: &str,
    weights: &[(String, i32)],
) -> Result<Option<Txn>> {
    let d = rule_doc(st, scope, rule_arn)?;
    let forward = |a: &Action| Action {
        target_group_arn: None,
        forward_config: Some(ForwardActionConfig {
            target_groups: Some(
                weights
                    .iter()
                    .map(|(g, w)| TargetGroupTuple { target_group_arn: Some(g.clone()), weight: Some(*w) })
                    .collect(),
            ),
            target_group_stickiness_config: a
                .forward_config
                .as_ref()
                .and_then(|f| f.target_group_stickiness_config.clone()),
        }),
        ..a.clone()
    };
    let current = d.value.rule.actions.clone().unwrap_or_default();
    let given: Vec<Action> =
        current.iter().map(|a| if a.r#type == ActionTypeEnum::Forward { forward(a) } else { a.clone() }).collect();
    let lb = listener_of(st, scope, &d.key).and_then(|l| lb_of_key(st, scope, elb::LISTENERS, &l.key));
    let t = lb.ok_or_else(ElbError::rule_not_found)?.value.lb.r#type.unwrap_or_default();
    if rules::check_actions(t, &given)? == current {
        return Ok(None);
    }
    let mut doc = d.value.clone();
    let txn = set_actions(st, scope, d, &mut doc, &given, guard(Txn::new(), d))?;
    Ok(Some(txn.then(put(&d.key, &doc))))
}

pub async fn delete(s: &Server, cx: &Call, req: DeleteRuleInput) -> Result<Bytes> {
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = rule_doc(st, scope, &req.rule_arn)?;
        if d.value.rule.is_default == Some(true) {
            return Err(ElbError::Code(
                ErrorCode::OperationNotPermittedException,
                format!("Default rule '{}' cannot be deleted", req.rule_arn),
            )
            .into());
        }
        Ok((guard(Txn::new(), d).then(Op::delete(d.key.clone())), ()))
    })
    .await?;
    Ok(json(&DeleteRuleOutput {}))
}

pub async fn set_priorities(s: &Server, cx: &Call, req: SetRulePrioritiesInput) -> Result<Bytes> {
    let scope = &cx.scope;
    let out = s
        .transact::<_, ApiError>(|st| {
            let mut changed: Vec<(&Doc<RuleDoc>, &Doc<ListenerDoc>, i32)> = vec![];
            for pair in &req.rule_priorities {
                let arn = pair.rule_arn.as_deref().unwrap_or_default();
                let d = rule_doc(st, scope, arn)?;
                if d.value.rule.is_default == Some(true) {
                    return Err(ElbError::Code(
                        ErrorCode::OperationNotPermittedException,
                        format!("The priority of default rule '{arn}' cannot be changed"),
                    )
                    .into());
                }
                let l = listener_of(st, scope, &d.key).ok_or_else(ElbError::rule_not_found)?;
                let p = pair.priority.ok_or_else(|| ElbError::Validation("A priority must be specified".into()))?;
                changed.push((d, l, p));
            }
            let changes: Vec<(String, i32)> = changed.iter().map(|(_, l, p)| (l.key.clone(), *p)).collect();
            let mut others = vec![];
            let mut txn = Txn::new();
            let mut listeners: Vec<&str> = vec![];
            for (_, l, _) in &changed {
                if listeners.contains(&l.key.as_str()) {
                    continue;
                }
                listeners.push(&l.key);
                // The listeners are written again: a concurrent CreateRule conflicts.
                txn = touch(txn, l);
                for r in rules_of(st, scope, &l.key) {
                    if r.value.rule.is_default != Some(true) && !changed.iter().any(|(c, _, _)| c.key == r.key) {
                        others.extend(priority(&r.value).map(|p| (l.key.clone(), p)));
                    }
                }
            }
            rules::check_new_priorities(&changes, &others)?;
            let mut out = vec![];
            for (d, _, p) in &changed {
                let mut doc = d.value.clone();
                doc.rule.priority = Some(p.to_string());
                txn = guard(txn, d).then(put(&d.key, &doc));
                out.push(doc.rule);
            }
            Ok((txn, out))
        })
        .await?;
    Ok(json(&SetRulePrioritiesOutput { rules: Some(out) }))
}
