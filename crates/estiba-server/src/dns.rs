//! The records every node's VPC resolver answers (`estiba_dns`), built from the view, so
//! that every node answers the same whichever node runs a task: the tasks' private DNS names
//! (`ip-172-31-0-4.ec2.internal`, A) and their reverse names in the VPC's reverse zone (PTR).
//! The [`crate::controller::dns`] controller rebuilds the zone on every change of the view and
//! publishes it on [`crate::Server::dns`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use estiba_core::vpc;
use estiba_dns::{Pick, Zone, ZoneBuilder};
use ipnet::Ipv4Net;

use crate::keys;
use crate::view::State;

/// The TTL of private DNS names (EC2's).
const PRIVATE_NAME_TTL: u32 = 60;

/// The zone for the view's current state.
pub fn zone(st: &State, vpc_cidr: Ipv4Net, default_region: &str) -> Zone {
    let mut b = ZoneBuilder::new();
    let live = st.tasks.values().filter(|d| !d.value.stopped()).filter_map(|d| {
        let ip = d.value.private_ipv4?;
        let (scope, _, _) = keys::parse_task(&d.key)?;
        Some((scope.region, ip))
    });
    let live: Vec<_> = live.collect();
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

/// A record that cannot be added (a name the DNS does not allow) is logged and left out.
fn add(r: Result<(), estiba_dns::DnsError>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "a DNS record left out of the VPC resolver's zone");
    }
}
