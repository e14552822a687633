//! CreateLoadBalancer, DescribeLoadBalancers, DeleteLoadBalancer,
//! Describe/ModifyLoadBalancerAttributes, SetSubnets, SetSecurityGroups, SetIpAddressType.

use std::net::Ipv4Addr;

use bytes::Bytes;
use estiba_api::elbv2::*;
use estiba_api::ApiError;
use estiba_core::elbv2::{self as elb, AddressClaim, LbAddress, ListenerDoc, LoadBalancerDoc, RuleDoc};
use estiba_core::elbv2_rules::{self as rules, ElbError};
use estiba_core::vpc::{Subnet, Vpc};
use estiba_store::{Compare, Op, Txn};

use super::{
    changes, docs, guard, json, lb_doc, new_id, page, put, select, shown_load_balancer, table, vpc, Result, Table,
};
use crate::services::Call;
use crate::view::State;
use crate::Server;

/// The subnets asked for (by `Subnets` or `SubnetMappings`), with a fixed private address
/// when a mapping names one.
pub(crate) fn requested_subnets<'v>(
    vpc: &'v Vpc,
    t: LoadBalancerTypeEnum,
    subnets: Option<&[String]>,
    mappings: Option<&[SubnetMapping]>,
) -> Result<Vec<(&'v Subnet, Option<Ipv4Addr>)>, ElbError> {
    let subnets = subnets.unwrap_or_default();
    let mappings = mappings.unwrap_or_default();
    if !subnets.is_empty() && !mappings.is_empty() {
        return Err(ElbError::Validation("You can specify subnets or subnet mappings, not both".into()));
    }
    let asked: Vec<(String, Option<String>)> = if subnets.is_empty() {
        mappings.iter().map(|m| (m.subnet_id.clone().unwrap_or_default(), m.private_i_pv4_address.clone())).collect()
    } else {
        subnets.iter().map(|s| (s.clone(), None)).collect()
    };
    let mut out = vec![];
    for (id, ip) in asked {
        let subnet = vpc.subnets.iter().find(|s| s.id == id).ok_or_else(|| {
            ElbError::Code(ErrorCode::SubnetNotFoundException, format!("The subnet ID '{id}' was not found"))
        })?;
        let ip = match ip {
            None => None,
            Some(_) if t != LoadBalancerTypeEnum::Network => {
                return Err(ElbError::Validation(
                    "Private IPv4 addresses can only be specified for network load balancers".into(),
                ))
            }
            Some(ip) => {
                let parsed = ip.parse::<Ipv4Addr>().ok().filter(|a| subnet.cidr.contains(a));
                Some(parsed.ok_or_else(|| {
                    ElbError::config(format!("The private IPv4 address '{ip}' is not in the subnet '{id}'"))
                })?)
            }
        };
        out.push((subnet, ip));
    }
    let zones: Vec<&str> = out.iter().map(|(s, _)| s.availability_zone.as_str()).collect();
    rules::check_lb_zones(t, &zones)?;
    Ok(out)
}

/// One address per subnet: the one asked for, the one the load balancer already has there
/// (`kept`), or the first free one of the subnet's load balancer range. Answers the addresses
/// and the claims to write (those not already the load balancer's).
fn allocate(
    st: &State,
    asked: &[(&Subnet, Option<Ipv4Addr>)],
    kept: &[LbAddress],
) -> Result<(Vec<LbAddress>, Vec<Ipv4Addr>), ElbError> {
    let claimed = |ip: Ipv4Addr| st.doc::<AddressClaim>(table(Table::Addresses), &elb::address_key(ip)).is_some();
    let mut out: Vec<LbAddress> = vec![];
    let mut new = vec![];
    for (subnet, want) in asked {
        if let Some(k) = kept.iter().find(|k| k.subnet_id == subnet.id && want.is_none_or(|w| w == k.ip)) {
            out.push(k.clone());
            continue;
        }
        let ip = match want {
            Some(ip) if claimed(*ip) => {
                return Err(ElbError::config(format!("The private IPv4 address '{ip}' is already in use")))
            }
            Some(ip) => *ip,
            None => elb::free_lb_address(subnet.cidr, |ip| claimed(ip) || new.contains(&ip)).ok_or_else(|| {
                ElbError::Code(
                    ErrorCode::InvalidSubnetException,
                    format!("Not enough IP space available in subnet '{}'", subnet.id),
                )
            })?,
        };
        new.push(ip);
        out.push(LbAddress { subnet_id: subnet.id.clone(), ip });
    }
    Ok((out, new))
}

fn availability_zones(t: LoadBalancerTypeEnum, vpc: &Vpc, addresses: &[LbAddress]) -> Vec<AvailabilityZone> {
    addresses
        .iter()
        .map(|a| AvailabilityZone {
            subnet_id: Some(a.subnet_id.clone()),
            zone_name: Some(vpc.subnet(&a.subnet_id).availability_zone.clone()),
            load_balancer_addresses: (t == LoadBalancerTypeEnum::Network).then(|| {
                vec![LoadBalancerAddress { private_i_pv4_address: Some(a.ip.to_string()), ..Default::default() }]
            }),
            ..Default::default()
        })
        .collect()
}

fn check_security_groups(groups: &[String]) -> Result<(), ElbError> {
    if let Some(g) = groups.iter().find(|g| !g.starts_with("sg-") || g.len() < 4) {
        return Err(ElbError::Code(ErrorCode::InvalidSecurityGroupException, format!("Invalid security group '{g}'")));
    }
    Ok(())
}

fn claims_txn(mut txn: Txn, lb_arn: &str, new: &[Ipv4Addr], freed: &[Ipv4Addr]) -> Txn {
    for ip in new {
        let key = elb::address_key(*ip);
        txn = txn.when(Compare::absent(&key)).then(put(&key, &AddressClaim { load_balancer_arn: lb_arn.to_owned() }));
    }
    for ip in freed {
        txn = txn.then(Op::delete(elb::address_key(*ip)));
    }
    txn
}

/// A new load balancer named `name` (not taken: the caller checked) with an address in each
/// subnet asked for, and the transaction that writes it and claims its name and addresses:
/// CreateLoadBalancer's write, and Express Mode's shared load balancer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_load_balancer(
    st: &State,
    scope: &estiba_core::Scope,
    vpc: &Vpc,
    now: f64,
    name: &str,
    t: LoadBalancerTypeEnum,
    scheme: LoadBalancerSchemeEnum,
    asked: &[(&Subnet, Option<Ipv4Addr>)],
    groups: Vec<String>,
    tags: Vec<Tag>,
) -> Result<(Txn, LoadBalancerDoc), ElbError> {
    let key = elb::key(scope, elb::LOAD_BALANCERS, name);
    let id = new_id();
    let arn = elb::load_balancer_arn(scope, t, name, &id);
    let (addresses, new) = allocate(st, asked, &[])?;
    let doc = LoadBalancerDoc {
        lb: LoadBalancer {
            availability_zones: Some(availability_zones(t, vpc, &addresses)),
            canonical_hosted_zone_id: Some(rules::canonical_hosted_zone_id(&scope.region, t).into()),
            created_time: Some(now),
            dns_name: Some(elb::dns_name(&scope.region, name, &id, scheme == LoadBalancerSchemeEnum::Internal)),
            ip_address_type: Some(IpAddressType::Ipv4),
            load_balancer_arn: Some(arn.clone()),
            load_balancer_name: Some(name.to_owned()),
            scheme: Some(scheme),
            security_groups: (!groups.is_empty() || t == LoadBalancerTypeEnum::Application).then_some(groups),
            r#type: Some(t),
            vpc_id: Some(vpc.id.clone()),
            ..Default::default()
        },
        attributes: rules::default_lb_attributes(t),
        tags,
        addresses,
    };
    let txn = Txn::new().when(Compare::absent(&key)).then(put(&key, &doc));
    Ok((claims_txn(txn, &arn, &new, &[]), doc))
}

/// Adds to `txn` the deletion of a load balancer with its listeners, rules and address
/// claims (DeleteLoadBalancer's write; Express Mode's when its last service goes).
pub(crate) fn delete_load_balancer(
    st: &State,
    scope: &estiba_core::Scope,
    d: &crate::view::Doc<LoadBalancerDoc>,
    txn: Txn,
) -> Txn {
    let name = d.value.lb.load_balancer_name.clone().unwrap_or_default();
    let mut txn = guard(txn, d).then(Op::delete(d.key.clone()));
    for l in docs::<ListenerDoc>(st, scope, Table::Listeners, &format!("{name}/")) {
        txn = guard(txn, l).then(Op::delete(l.key.clone()));
    }
    for r in docs::<RuleDoc>(st, scope, Table::Rules, &format!("{name}/")) {
        txn = guard(txn, r).then(Op::delete(r.key.clone()));
    }
    let freed: Vec<Ipv4Addr> = d.value.addresses.iter().map(|a| a.ip).collect();
    claims_txn(txn, "", &[], &freed)
}

pub async fn create(s: &Server, cx: &Call, req: CreateLoadBalancerInput) -> Result<Bytes> {
    let t = req.r#type.unwrap_or(LoadBalancerTypeEnum::Application);
    if t == LoadBalancerTypeEnum::Gateway {
        return Err(ElbError::config("estiba does not support gateway load balancers").into());
    }
    rules::check_lb_name(&req.name)?;
    if req.ip_address_type.is_some_and(|a| a != IpAddressType::Ipv4) {
        return Err(ElbError::Validation("estiba supports only the 'ipv4' IP address type".into()).into());
    }
    let scope = &cx.scope;
    let vpc = vpc(s, scope);
    let asked = requested_subnets(&vpc, t, req.subnets.as_deref(), req.subnet_mappings.as_deref())?;
    let scheme = req.scheme.unwrap_or(LoadBalancerSchemeEnum::InternetFacing);
    let groups = match &req.security_groups {
        Some(g) => g.clone(),
        None if t == LoadBalancerTypeEnum::Application => vec![vpc.security_group_id.clone()],
        None => vec![],
    };
    check_security_groups(&groups)?;
    let tags = rules::add_tags(&[], req.tags.as_deref().unwrap_or_default())?;
    let key = elb::key(scope, elb::LOAD_BALANCERS, &req.name);
    let lb = s
        .transact::<_, ApiError>(|st| {
            if let Some(d) = st.doc::<LoadBalancerDoc>(table(Table::LoadBalancers), &key) {
                // AWS answers a create repeated with the same settings with the load balancer.
                let same_subnets = d.value.addresses.iter().map(|a| &a.subnet_id).eq(asked.iter().map(|(s, _)| &s.id));
                if d.value.lb.r#type == Some(t) && d.value.lb.scheme == Some(scheme) && same_subnets {
                    return Ok((Txn::new(), d.value.clone()));
                }
                return Err(ElbError::Code(
                    ErrorCode::DuplicateLoadBalancerNameException,
                    format!("A load balancer with the same name '{}' exists, but with different settings", req.name),
                )
                .into());
            }
            let (txn, doc) =
                new_load_balancer(st, scope, &vpc, cx.now, &req.name, t, scheme, &asked, groups.clone(), tags.clone())?;
            Ok((txn, doc))
        })
        .await?;
    let shown = shown_load_balancer(&lb, cx.now, s.config.lb_provisioning);
    Ok(json(&CreateLoadBalancerOutput { load_balancers: Some(vec![shown]) }))
}

pub async fn describe(s: &Server, cx: &Call, req: DescribeLoadBalancersInput) -> Result<Bytes> {
    let st = s.view.read();
    let all: Vec<_> = docs::<LoadBalancerDoc>(&st, &cx.scope, Table::LoadBalancers, "").collect();
    let chosen = select(
        all,
        req.names.as_deref(),
        req.load_balancer_arns.as_deref(),
        |d| d.lb.load_balancer_name.as_deref(),
        |d| d.lb.load_balancer_arn.as_deref(),
        "Load balancer",
        ElbError::lb_not_found,
    )?;
    let p = page(chosen, |d| d.key.clone(), req.marker.as_deref(), req.page_size)?;
    let lbs = p.items.iter().map(|d| shown_load_balancer(&d.value, cx.now, s.config.lb_provisioning)).collect();
    Ok(json(&DescribeLoadBalancersOutput { load_balancers: Some(lbs), next_marker: p.next_token }))
}

/// The keys of a load balancer's rules, then of its listeners: what goes ahead of it when it
/// is too big to delete in one transaction.
fn children(st: &State, scope: &estiba_core::Scope, d: &crate::view::Doc<LoadBalancerDoc>) -> Vec<String> {
    let name = d.value.lb.load_balancer_name.clone().unwrap_or_default();
    let rules = docs::<RuleDoc>(st, scope, Table::Rules, &format!("{name}/")).map(|r| r.key.clone());
    let listeners = docs::<ListenerDoc>(st, scope, Table::Listeners, &format!("{name}/")).map(|l| l.key.clone());
    rules.chain(listeners).collect()
}

pub async fn delete(s: &Server, cx: &Call, req: DeleteLoadBalancerInput) -> Result<Bytes> {
    let scope = &cx.scope;
    // AWS does not delete a load balancer's listeners and rules atomically either: when they
    // do not fit one transaction with it, its rules go first, then its listeners, in batches
    // guarded by its revision (each step leaves a valid configuration: a listener without
    // some rules, or fewer listeners). A crash leaves the load balancer with fewer of them;
    // the retry finishes.
    s.trim_children(|st| {
        let d = lb_doc(st, scope, &req.load_balancer_arn).ok()?;
        if d.value.attributes.get("deletion_protection.enabled").is_some_and(|v| v == "true") {
            return None;
        }
        let children = children(st, scope, d);
        let whole = delete_load_balancer(st, scope, d, Txn::new()).ops.len();
        Some((vec![Compare::mod_revision(&d.key, d.rev)], whole.saturating_sub(children.len()), children))
    })
    .await?;
    s.transact::<_, ApiError>(|st| {
        // Deleting a load balancer that does not exist succeeds, as on AWS.
        let Ok(d) = lb_doc(st, scope, &req.load_balancer_arn) else {
            return Ok((Txn::new(), ()));
        };
        if d.value.attributes.get("deletion_protection.enabled").is_some_and(|v| v == "true") {
            return Err(ElbError::Code(
                ErrorCode::OperationNotPermittedException,
                format!(
                    "Load balancer '{}' cannot be deleted because deletion protection is enabled",
                    req.load_balancer_arn
                ),
            )
            .into());
        }
        Ok((delete_load_balancer(st, scope, d, Txn::new()), ()))
    })
    .await?;
    Ok(json(&DeleteLoadBalancerOutput {}))
}

fn lb_attributes(d: &LoadBalancerDoc) -> Vec<LoadBalancerAttribute> {
    d.attributes.iter().map(|(k, v)| LoadBalancerAttribute { key: Some(k.clone()), value: Some(v.clone()) }).collect()
}

pub async fn describe_attributes(s: &Server, cx: &Call, req: DescribeLoadBalancerAttributesInput) -> Result<Bytes> {
    let st = s.view.read();
    let d = lb_doc(&st, &cx.scope, &req.load_balancer_arn)?;
    Ok(json(&DescribeLoadBalancerAttributesOutput { attributes: Some(lb_attributes(&d.value)) }))
}

/// Read-modify-write of a load balancer's document.
async fn update<R>(
    s: &Server,
    cx: &Call,
    arn: &str,
    f: impl Fn(&State, &LoadBalancerDoc) -> Result<(LoadBalancerDoc, Txn, R), ApiError>,
) -> Result<R> {
    s.transact::<_, ApiError>(|st| {
        let d = lb_doc(st, &cx.scope, arn)?;
        let (new, txn, r) = f(st, &d.value)?;
        Ok((guard(txn, d).then(put(&d.key, &new)), r))
    })
    .await
}

pub async fn modify_attributes(s: &Server, cx: &Call, req: ModifyLoadBalancerAttributesInput) -> Result<Bytes> {
    let ch = changes(req.attributes.iter().map(|a| (&a.key, &a.value)));
    let attrs = update(s, cx, &req.load_balancer_arn, |_, d| {
        let mut new = d.clone();
        new.attributes = rules::modify_lb_attributes(d.lb.r#type.unwrap_or_default(), &d.attributes, &ch)?;
        let shown = lb_attributes(&new);
        Ok((new, Txn::new(), shown))
    })
    .await?;
    Ok(json(&ModifyLoadBalancerAttributesOutput { attributes: Some(attrs) }))
}

pub async fn set_subnets(s: &Server, cx: &Call, req: SetSubnetsInput) -> Result<Bytes> {
    if req.ip_address_type.is_some_and(|a| a != IpAddressType::Ipv4) {
        return Err(ElbError::Validation("estiba supports only the 'ipv4' IP address type".into()).into());
    }
    let vpc = vpc(s, &cx.scope);
    let zones = update(s, cx, &req.load_balancer_arn, |st, d| {
        let t = d.lb.r#type.unwrap_or_default();
        let asked = requested_subnets(&vpc, t, req.subnets.as_deref(), req.subnet_mappings.as_deref())?;
        let (addresses, new) = allocate(st, &asked, &d.addresses)?;
        let freed: Vec<Ipv4Addr> = d.addresses.iter().filter(|a| !addresses.contains(a)).map(|a| a.ip).collect();
        let mut doc = d.clone();
        doc.lb.availability_zones = Some(availability_zones(t, &vpc, &addresses));
        doc.addresses = addresses;
        let arn = d.lb.load_balancer_arn.clone().unwrap_or_default();
        let zones = doc.lb.availability_zones.clone();
        Ok((doc, claims_txn(Txn::new(), &arn, &new, &freed), zones))
    })
    .await?;
    Ok(json(&SetSubnetsOutput {
        availability_zones: zones,
        ip_address_type: Some(IpAddressType::Ipv4),
        enable_prefix_for_ipv6_source_nat: None,
    }))
}

pub async fn set_security_groups(s: &Server, cx: &Call, req: SetSecurityGroupsInput) -> Result<Bytes> {
    check_security_groups(&req.security_groups)?;
    let groups = update(s, cx, &req.load_balancer_arn, |_, d| {
        if d.lb.r#type == Some(LoadBalancerTypeEnum::Network) && d.lb.security_groups.is_none() {
            return Err(ElbError::config(
                "A network load balancer created without security groups cannot have security groups set",
            )
            .into());
        }
        let mut doc = d.clone();
        doc.lb.security_groups = Some(req.security_groups.clone());
        Ok((doc, Txn::new(), req.security_groups.clone()))
    })
    .await?;
    Ok(json(&SetSecurityGroupsOutput {
        security_group_ids: Some(groups),
        enforce_security_group_inbound_rules_on_private_link_traffic: None,
    }))
}

pub async fn set_ip_address_type(s: &Server, cx: &Call, req: SetIpAddressTypeInput) -> Result<Bytes> {
    {
        let st = s.view.read();
        lb_doc(&st, &cx.scope, &req.load_balancer_arn)?;
    }
    if req.ip_address_type != IpAddressType::Ipv4 {
        return Err(ElbError::Validation("estiba supports only the 'ipv4' IP address type".into()).into());
    }
    Ok(json(&SetIpAddressTypeOutput { ip_address_type: Some(IpAddressType::Ipv4) }))
}
