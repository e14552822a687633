//! The records every node's VPC resolver answers (`estiba_dns`), built from the view, so
//! that every node answers the same whichever node runs a task:
//!
//! - Cloud Map's DNS namespaces (private and public: both answered only here), each an
//!   authority with its SOA TTL; each service with a DNS configuration is
//!   `<service>.<namespace>` with its healthy instances' A, AAAA, SRV or CNAME records (SRV
//!   targets `<instance>.<service>.<namespace>`, which has the instance's A/AAAA, priority and
//!   weight 1, as Cloud Map makes them). MULTIVALUE answers up to eight at random, WEIGHTED
//!   one; when none is healthy, all are candidates (Route 53 answers with unhealthy records
//!   rather than none).
//! - Service Connect's client aliases ([`crate::connect`]): each DNS name (`api`, `api.local`)
//!   its own apex with one A record, its VIP; a name another zone already holds is left out.
//! - The tasks' private DNS names (`ip-172-31-0-4.ec2.internal`, A) and their reverse names in
//!   the VPC's reverse zone (PTR).
//!
//! The [`crate::controller::dns`] controller rebuilds the zone on every change of the view and
//! publishes it on [`crate::Server::dns`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use estiba_api::servicediscovery::{
    HealthStatus, Instance, NamespaceType, RecordType, RoutingPolicy, Service as SdService,
};
use estiba_core::servicediscovery::{self as sd, NamespaceDoc};
use estiba_core::vpc;
use estiba_dns::{Pick, Zone, ZoneBuilder};
use ipnet::Ipv4Net;

use crate::keys;
use crate::services::servicediscovery::{self as cloudmap, Table};
use crate::view::State;

/// The TTL of Service Connect names (their VIPs do not change while the alias exists).
const CONNECT_TTL: u32 = 60;

/// The TTL of private DNS names (EC2's).
const PRIVATE_NAME_TTL: u32 = 60;

/// The zone for the view's current state.
pub fn zone(st: &State, connect: &[crate::connect::Entry], vpc_cidr: Ipv4Net, default_region: &str) -> Zone {
    let mut b = ZoneBuilder::new();
    cloud_map(st, &mut b);
    load_balancers(st, &mut b);
    express_endpoints(st, &mut b);
    let mut named = BTreeSet::new();
    for e in connect {
        if named.insert(e.dns_name.as_str()) {
            // Inside a Cloud Map DNS namespace's apex (`api.local` when `local` is one), the
            // name is a record of that zone; elsewhere it is an apex of its own.
            let _ = b.apex(&e.dns_name, CONNECT_TTL);
            add(b.addresses(&e.dns_name, &[IpAddr::V4(e.vip)], CONNECT_TTL, Pick::All).map(drop));
        }
    }
    // Live tasks with an address, from the view's index: bridge and host network tasks cost
    // nothing here, however many there are.
    let live: Vec<_> = st.task_addresses.values().map(|(region, ip)| (region, *ip)).collect();
    let regions: BTreeSet<&str> = live.iter().map(|(r, _)| r.as_str()).chain([default_region]).collect();
    for region in regions {
        add(b.apex(&vpc::private_dns_domain(region), PRIVATE_NAME_TTL).map(drop));
    }
    add(b
        .apex(&estiba_dns::zone::reverse_apex_v4(vpc_cidr.network(), vpc_cidr.prefix_len()), PRIVATE_NAME_TTL)
        .map(drop));
    for (region, ip) in &live {
        let name = vpc::private_dns_name(region, *ip);
        add(b.addresses(&name, &[IpAddr::V4(*ip)], PRIVATE_NAME_TTL, Pick::All).map(drop));
        if vpc_cidr.contains(ip) {
            add(b.ptr(IpAddr::V4(*ip), &name, PRIVATE_NAME_TTL).map(drop));
        }
    }
    b.build()
}

/// The TTL of load balancers' names (ELB's: 60 s).
const LB_TTL: u32 = 60;

/// Every load balancer's DNS name (`<name>-<digits>.<region>.elb.amazonaws.com`) with the
/// addresses it has in the VPC, in an apex per region.
fn load_balancers(st: &State, b: &mut ZoneBuilder) {
    use estiba_core::elbv2::{self as elb, LoadBalancerDoc};
    let mut apexes = BTreeSet::new();
    for d in st.docs::<LoadBalancerDoc>(
        crate::services::elbv2::table(crate::services::elbv2::Table::LoadBalancers),
        elb::PREFIX,
    ) {
        let Some(name) = d.value.lb.dns_name.as_deref() else { continue };
        let Some((_, apex)) = name.split_once('.') else { continue };
        if apexes.insert(apex.to_owned()) {
            add(b.apex(apex, LB_TTL).map(drop));
        }
        let ips: Vec<IpAddr> = d.value.addresses.iter().map(|a| IpAddr::V4(a.ip)).collect();
        if !ips.is_empty() {
            add(b.addresses(name, &ips, LB_TTL, Pick::All).map(drop));
        }
    }
}

/// Every ACTIVE Express service's endpoint host (`<name>-<id>.ecs.<region>.on.aws`) with its
/// shared load balancer's addresses, in an apex per region.
fn express_endpoints(st: &State, b: &mut ZoneBuilder) {
    use estiba_core::elbv2::{self as elb, LoadBalancerDoc};
    use estiba_core::express::{self, ExpressDoc};
    let mut apexes = BTreeSet::new();
    for d in st.docs::<ExpressDoc>(crate::services::ecs::EXPRESS_TABLE, express::PREFIX) {
        let e = &d.value;
        let scope = estiba_core::Scope { account: account_of(&d.key), region: region_of(&d.key) };
        let active = st
            .services
            .get(&keys::service(&scope, &e.cluster, &e.service_name))
            .is_some_and(|s| estiba_core::service::status(&s.value) == estiba_core::service::ACTIVE);
        let lb = elb::key_of_arn(&e.resources.load_balancer_arn).and_then(|k| {
            st.doc::<LoadBalancerDoc>(crate::services::elbv2::table(crate::services::elbv2::Table::LoadBalancers), &k)
        });
        let (true, Some(lb)) = (active, lb) else { continue };
        let Some((_, apex)) = e.host.split_once('.') else { continue };
        if apexes.insert(apex.to_owned()) {
            add(b.apex(apex, LB_TTL).map(drop));
        }
        let ips: Vec<IpAddr> = lb.value.addresses.iter().map(|a| IpAddr::V4(a.ip)).collect();
        if !ips.is_empty() {
            add(b.addresses(&e.host, &ips, LB_TTL, Pick::All).map(drop));
        }
    }
}

/// The account and region segments of a `<prefix>/<account>/<region>/...` key.
fn account_of(key: &str) -> String {
    key.split('/').nth(1).unwrap_or_default().to_owned()
}

fn region_of(key: &str) -> String {
    key.split('/').nth(2).unwrap_or_default().to_owned()
}

/// The SOA TTL of a namespace without one (Cloud Map's default).
const NAMESPACE_SOA_TTL: u32 = 15;

fn cloud_map(st: &State, b: &mut ZoneBuilder) {
    for ns in st.docs::<NamespaceDoc>(cloudmap::table(Table::Namespaces), sd::PREFIX) {
        let n = &ns.value.namespace;
        if !matches!(n.r#type, Some(NamespaceType::DnsPrivate | NamespaceType::DnsPublic)) {
            continue;
        }
        let Some(name) = n.name.as_deref() else { continue };
        let soa = n.properties.as_ref().and_then(|p| p.dns_properties.as_ref()).and_then(|d| d.soa.as_ref());
        let ttl = soa.map_or(NAMESPACE_SOA_TTL, |s| s.ttl.clamp(0, u32::MAX as i64) as u32);
        add(b.apex(name, ttl).map(drop));
    }
    for svc in st.docs::<SdService>(cloudmap::table(Table::Services), sd::PREFIX) {
        let (Some(scope), Some(dns)) = (sd::scope_of_key(&svc.key), svc.value.dns_config.as_ref()) else { continue };
        let (Some(name), Some(ns_id)) = (svc.value.name.as_deref(), svc.value.namespace_id.as_deref()) else {
            continue;
        };
        let Some(ns) = st.doc::<NamespaceDoc>(cloudmap::table(Table::Namespaces), &sd::namespace_key(&scope, ns_id))
        else {
            continue;
        };
        let Some(ns_name) = ns.value.namespace.name.as_deref() else { continue };
        let owner = format!("{name}.{ns_name}");
        let id = svc.value.id.as_deref().unwrap_or_default();
        let all: Vec<&Instance> = st
            .docs::<Instance>(cloudmap::table(Table::Instances), &sd::instances_of(&scope, id))
            .map(|d| &d.value)
            .collect();
        let healthy: Vec<&Instance> = all
            .iter()
            .copied()
            .filter(|i| cloudmap::instance_health(st, &scope, &svc.value, i) != HealthStatus::Unhealthy)
            .collect();
        let instances = if healthy.is_empty() { all } else { healthy };
        let pick = match dns.routing_policy {
            Some(RoutingPolicy::Weighted) => Pick::Random(1),
            _ => Pick::Random(8),
        };
        add(b.exists(&owner).map(drop));
        let attr = |i: &Instance, k: &str| i.attributes.as_ref().and_then(|a| a.get(k)).cloned();
        // The addresses of the service's A/AAAA records (`typed`), or all (an SRV target has
        // the instance's A and AAAA records whatever the service's records are, as in Cloud Map).
        let ips = |i: &Instance, typed: bool| -> Vec<IpAddr> {
            [sd::INSTANCE_IPV4, sd::INSTANCE_IPV6]
                .iter()
                .filter(|k| !typed || dns.dns_records.iter().any(|r| r.r#type == record_type_of(k)))
                .filter_map(|k| attr(i, k)?.parse().ok())
                .collect()
        };
        for rec in &dns.dns_records {
            let ttl = rec.ttl.clamp(0, u32::MAX as i64) as u32;
            match rec.r#type {
                RecordType::A | RecordType::Aaaa => {
                    let all: Vec<IpAddr> = instances.iter().flat_map(|i| ips(i, true)).collect();
                    add(b.addresses(&owner, &all, ttl, pick).map(drop));
                }
                RecordType::Srv => {
                    let mut targets = Vec::new();
                    for i in &instances {
                        let Some(port) = attr(i, sd::INSTANCE_PORT).and_then(|p| p.parse::<u16>().ok()) else {
                            continue;
                        };
                        let host = format!("{}.{owner}", i.id);
                        add(b.addresses(&host, &ips(i, false), ttl, Pick::All).map(drop));
                        targets.push((1, 1, port, host));
                    }
                    add(b.srv(&owner, &targets, ttl, pick).map(drop));
                }
                RecordType::Cname => {
                    let targets: Vec<String> = instances.iter().filter_map(|i| attr(i, sd::INSTANCE_CNAME)).collect();
                    add(b.cname(&owner, &targets, ttl).map(drop));
                }
            }
        }
    }
}

fn record_type_of(attribute: &str) -> RecordType {
    if attribute == sd::INSTANCE_IPV6 {
        RecordType::Aaaa
    } else {
        RecordType::A
    }
}

/// A record that cannot be added (a name the DNS does not allow) is logged and left out.
fn add(r: Result<(), estiba_dns::DnsError>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "a DNS record left out of the VPC resolver's zone");
    }
}
