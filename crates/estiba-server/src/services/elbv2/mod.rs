//! Elastic Load Balancing v2 (AWS Query, version 2015-12-01, signing name
//! `elasticloadbalancing`): load balancers, target groups and their targets, listeners,
//! rules and tags, over the documents of `estiba_core::elbv2` (keys
//! `elbv2/<account>/<region>/<kind>/...`) and the view tables declared here. The rules
//! (names, defaults, validation) are `estiba_core::elbv2_rules`; each handler reads the view,
//! asks them, and writes one compare-and-swap transaction.
//!
//! Consistency across documents: a write that adds a child (a listener to a load balancer, a
//! rule to a listener, a target to a group, a reference from an action to a group) writes the
//! parent again unchanged, guarded by its revision, so a concurrent deletion of the parent
//! (which compares the same revision) cannot leave the child behind.
//!
//! Readers outside this module (the data plane glue) use [`table`] with the `Table` they need
//! and the helpers [`target_group_load_balancers`], [`shown_load_balancer`] and
//! [`target_health`].

use bytes::Bytes;
use estiba_api::elbv2::*;
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, Common, DecodeError};
use estiba_core::elbv2::{self as elb, AddressClaim, ListenerDoc, LoadBalancerDoc, RuleDoc, TargetDoc, TargetGroupDoc};
use estiba_core::elbv2_rules::{self as rules, ElbError};
use estiba_core::vpc::Vpc;
use estiba_core::{Ids, Scope};
use estiba_store::{Compare, Op, Txn};
use serde::Serialize;

use super::{json, route, BoxFuture, Call, Input, Service};
use crate::view::{Doc, State, TableDef};
use crate::{RandomIds, Server};

mod listeners;
mod load_balancers;
mod misc;
mod rules_api;
mod target_groups;
mod targets;

pub(crate) use listeners::new_listener;
pub(crate) use load_balancers::{delete_load_balancer, new_load_balancer, requested_subnets};
pub(crate) use rules_api::forward_weighted;
pub(crate) use rules_api::new_rule;
pub(crate) use target_groups::{delete_target_group, new_target_group};
pub use targets::target_health;

/// The document of the rule `arn` (ECS checks its blue/green rules with it).
pub(crate) fn find_rule<'a>(st: &'a State, scope: &Scope, arn: &str) -> Option<&'a Doc<RuleDoc>> {
    rule_doc(st, scope, arn).ok()
}

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The ELBv2 service.
pub struct Elbv2;

/// The key prefix of this service's view tables.
pub const PREFIX: &str = "elbv2/";

/// This service's view tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    LoadBalancers,
    TargetGroups,
    Listeners,
    Rules,
    Targets,
    Addresses,
}

static TABLES: [TableDef; 6] = [
    TableDef::of::<LoadBalancerDoc>(PREFIX, elb::LOAD_BALANCERS),
    TableDef::of::<TargetGroupDoc>(PREFIX, elb::TARGET_GROUPS),
    TableDef::of::<ListenerDoc>(PREFIX, elb::LISTENERS),
    TableDef::of::<RuleDoc>(PREFIX, elb::RULES),
    TableDef::of::<TargetDoc>(PREFIX, elb::TARGETS),
    TableDef::of::<AddressClaim>(PREFIX, elb::ADDRESSES),
];

/// The view table of one kind (documents: [`LoadBalancerDoc`], [`TargetGroupDoc`],
/// [`ListenerDoc`], [`RuleDoc`], [`TargetDoc`], [`AddressClaim`]). Keys are those of
/// `estiba_core::elbv2`; `st.docs::<T>(table(t), &elb::kind_prefix(scope, kind))` lists a
/// scope's, `st.docs::<T>(table(t), PREFIX)` every scope's.
pub fn table(t: Table) -> &'static TableDef {
    &TABLES[t as usize]
}

impl Service for Elbv2 {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let missing = |other: Operation| super::not_implemented(&Elbv2, other.name());
            route! { &Elbv2, s, &cx, Operation::ALL[op], input, missing;
                CreateLoadBalancer => load_balancers::create,
                DescribeLoadBalancers => load_balancers::describe,
                DeleteLoadBalancer => load_balancers::delete,
                DescribeLoadBalancerAttributes => load_balancers::describe_attributes,
                ModifyLoadBalancerAttributes => load_balancers::modify_attributes,
                SetSubnets => load_balancers::set_subnets,
                SetSecurityGroups => load_balancers::set_security_groups,
                SetIpAddressType => load_balancers::set_ip_address_type,
                CreateTargetGroup => target_groups::create,
                DescribeTargetGroups => target_groups::describe,
                ModifyTargetGroup => target_groups::modify,
                DeleteTargetGroup => target_groups::delete,
                DescribeTargetGroupAttributes => target_groups::describe_attributes,
                ModifyTargetGroupAttributes => target_groups::modify_attributes,
                RegisterTargets => targets::register,
                DeregisterTargets => targets::deregister,
                DescribeTargetHealth => targets::describe_health,
                CreateListener => listeners::create,
                DescribeListeners => listeners::describe,
                ModifyListener => listeners::modify,
                DeleteListener => listeners::delete,
                DescribeListenerAttributes => listeners::describe_attributes,
                ModifyListenerAttributes => listeners::modify_attributes,
                CreateRule => rules_api::create,
                DescribeRules => rules_api::describe,
                ModifyRule => rules_api::modify,
                DeleteRule => rules_api::delete,
                SetRulePriorities => rules_api::set_priorities,
                AddTags => misc::add_tags,
                RemoveTags => misc::remove_tags,
                DescribeTags => misc::describe_tags,
                DescribeAccountLimits => misc::account_limits,
                DescribeSSLPolicies => misc::ssl_policies,
            }
        })
    }

    /// ELBv2 answers every malformed or invalid input with `ValidationError`.
    fn decode_error(&self, e: DecodeError, _: Protocol) -> ApiError {
        ApiError::new(Common::ValidationError, e.to_string())
    }

    fn tables(&self) -> &'static [TableDef] {
        &TABLES
    }
}

/// A document as a store write.
fn put<T: Serialize>(key: &str, v: &T) -> Op {
    Op::put(key.to_owned(), serde_json::to_vec(v).expect("documents always serialize"))
}

/// A document as a store write (for writers outside this module: Express Mode).
pub(crate) fn put_doc<T: Serialize>(key: &str, v: &T) -> Op {
    put(key, v)
}

/// Writes `d` again unchanged, guarded by its revision (see the module's comment).
fn touch<T>(txn: Txn, d: &Doc<T>) -> Txn {
    txn.when(Compare::mod_revision(&d.key, d.rev)).then(Op::put(d.key.clone(), d.raw.clone()))
}

/// Guards a write by `d`'s revision.
fn guard<T>(txn: Txn, d: &Doc<T>) -> Txn {
    txn.when(Compare::mod_revision(&d.key, d.rev))
}

/// A new 16-hex-digit id (load balancers, target groups, listeners, rules).
fn new_id() -> String {
    RandomIds.hex32()[..16].to_owned()
}

/// The default VPC of the caller's scope.
fn vpc(s: &Server, scope: &Scope) -> Vpc {
    Vpc::default_for(scope, s.config.vpc_cidr)
}

/// The document an ARN of the caller's scope names, if it exists and is the one the ARN
/// names (a name reused after a deletion has another id).
fn by_arn<'a, T: 'static>(
    st: &'a State,
    scope: &Scope,
    t: Table,
    arn: &str,
    arn_of: impl Fn(&T) -> Option<&str>,
) -> Option<&'a Doc<T>> {
    let p = elb::parse_arn(arn)?;
    if p.scope != *scope {
        return None;
    }
    let d = st.doc::<T>(table(t), &elb::key_of_arn(arn)?)?;
    (arn_of(&d.value) == Some(arn)).then_some(d)
}

fn lb_doc<'a>(st: &'a State, scope: &Scope, arn: &str) -> Result<&'a Doc<LoadBalancerDoc>, ElbError> {
    by_arn(st, scope, Table::LoadBalancers, arn, |d: &LoadBalancerDoc| d.lb.load_balancer_arn.as_deref())
        .ok_or_else(ElbError::lb_not_found)
}

fn tg_doc<'a>(st: &'a State, scope: &Scope, arn: &str) -> Result<&'a Doc<TargetGroupDoc>, ElbError> {
    by_arn(st, scope, Table::TargetGroups, arn, |d: &TargetGroupDoc| d.tg.target_group_arn.as_deref())
        .ok_or_else(ElbError::tg_not_found)
}

fn listener_doc<'a>(st: &'a State, scope: &Scope, arn: &str) -> Result<&'a Doc<ListenerDoc>, ElbError> {
    by_arn(st, scope, Table::Listeners, arn, |d: &ListenerDoc| d.listener.listener_arn.as_deref())
        .ok_or_else(ElbError::listener_not_found)
}

fn rule_doc<'a>(st: &'a State, scope: &Scope, arn: &str) -> Result<&'a Doc<RuleDoc>, ElbError> {
    by_arn(st, scope, Table::Rules, arn, |d: &RuleDoc| d.rule.rule_arn.as_deref()).ok_or_else(ElbError::rule_not_found)
}

/// The documents of one kind in `scope` whose keys continue with `rest`.
fn docs<'a, T: 'static>(st: &'a State, scope: &Scope, t: Table, rest: &str) -> impl Iterator<Item = &'a Doc<T>> + 'a {
    st.docs::<T>(table(t), &elb::key(scope, table(t).kind, rest))
}

/// The load balancer name and listener id of a listener's key.
fn listener_path(key: &str) -> (&str, &str) {
    let mut it = key.rsplit('/');
    let id = it.next().unwrap_or_default();
    (it.next().unwrap_or_default(), id)
}

/// The load balancer a listener or rule document (by key) belongs to.
fn lb_of_key<'a>(st: &'a State, scope: &Scope, kind: &str, key: &str) -> Option<&'a Doc<LoadBalancerDoc>> {
    let rest = key.strip_prefix(&elb::kind_prefix(scope, kind))?;
    let name = rest.split('/').next()?;
    st.doc::<LoadBalancerDoc>(table(Table::LoadBalancers), &elb::key(scope, elb::LOAD_BALANCERS, name))
}

/// The ARNs of the load balancers whose listeners or rules forward to the target group
/// `tg_arn` (sorted): its `LoadBalancerArns`, and whether it is in use.
pub fn target_group_load_balancers(st: &State, scope: &Scope, tg_arn: &str) -> Vec<String> {
    let mut out: Vec<String> = docs::<RuleDoc>(st, scope, Table::Rules, "")
        .filter(|r| rules::rule_target_groups(&r.value.rule).contains(&tg_arn))
        .filter_map(|r| lb_of_key(st, scope, elb::RULES, &r.key))
        .filter_map(|lb| lb.value.lb.load_balancer_arn.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A load balancer as the API shows it at `now`: its state computed from its age.
pub fn shown_load_balancer(d: &LoadBalancerDoc, now: f64, provisioning: std::time::Duration) -> LoadBalancer {
    let mut lb = d.lb.clone();
    let created = lb.created_time.unwrap_or(now);
    lb.state =
        Some(LoadBalancerState { code: Some(rules::lb_state(created, now, provisioning.as_secs_f64())), reason: None });
    lb
}

/// A page of `items` (sorted by `key`) after `marker`, at most `page_size` (default 400).
fn page<T, K: AsRef<str>>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
    marker: Option<&str>,
    page_size: Option<i32>,
) -> Result<estiba_core::page::Page<T>, ElbError> {
    let limit = page_size.filter(|n| *n > 0).unwrap_or(400) as usize;
    estiba_core::page::paginate(items, key, marker, limit, false)
        .map_err(|_| ElbError::Validation("The marker is not valid: pass the NextMarker of an earlier answer".into()))
}

/// Items of a describe call named by `names` or `arns` (each must exist: `missing`), or all
/// of them; names and ARNs together are refused.
fn select<'a, T>(
    all: Vec<&'a Doc<T>>,
    names: Option<&[String]>,
    arns: Option<&[String]>,
    name_of: impl Fn(&T) -> Option<&str>,
    arn_of: impl Fn(&T) -> Option<&str>,
    what: &str,
    missing: fn() -> ElbError,
) -> Result<Vec<&'a Doc<T>>, ElbError> {
    let names = names.unwrap_or_default();
    let arns = arns.unwrap_or_default();
    if !names.is_empty() && !arns.is_empty() {
        return Err(ElbError::Validation(format!("{what} names and {what} ARNs cannot be specified at the same time")));
    }
    let by_name = !names.is_empty();
    let wanted = if by_name { names } else { arns };
    if wanted.is_empty() {
        return Ok(all);
    }
    let field = |v: &T| if by_name { name_of(v) } else { arn_of(v) }.map(str::to_owned);
    let mut out = vec![];
    for w in wanted {
        let d = all.iter().find(|d| field(&d.value).as_deref() == Some(w.as_str())).ok_or_else(missing)?;
        if !out.iter().any(|o: &&Doc<T>| std::ptr::eq(*o, *d)) {
            out.push(*d);
        }
    }
    Ok(out)
}

/// A key/value attribute list as the rules take it.
fn changes<'a>(
    it: impl IntoIterator<Item = (&'a Option<String>, &'a Option<String>)>,
) -> Vec<(Option<String>, Option<String>)> {
    it.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_one_per_kind_in_order() {
        let kinds = [
            (Table::LoadBalancers, elb::LOAD_BALANCERS),
            (Table::TargetGroups, elb::TARGET_GROUPS),
            (Table::Listeners, elb::LISTENERS),
            (Table::Rules, elb::RULES),
            (Table::Targets, elb::TARGETS),
            (Table::Addresses, elb::ADDRESSES),
        ];
        assert_eq!(kinds.len(), TABLES.len());
        for (t, kind) in kinds {
            assert_eq!((table(t).prefix, table(t).kind), (PREFIX, kind));
        }
        assert_eq!(format!("{}/", elb::PREFIX), PREFIX);
    }

    #[test]
    fn key_segments() {
        assert_eq!(listener_path("elbv2/1/r/listeners/web/abc"), ("web", "abc"));
    }
}
