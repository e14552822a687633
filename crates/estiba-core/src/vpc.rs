//! The default VPC every account and region has in estiba, as AWS gives each a default VPC:
//! a CIDR (172.31.0.0/16 unless configured), default subnets of one sixteenth of it in
//! availability zones `a`, `b` and `c`, and a default security group. Subnet ids estiba does
//! not know map onto the first default subnet, so network configurations written for AWS
//! run unchanged; security groups are recorded, not enforced.
//!
//! Identifiers are derived from the account, region and CIDR, so they are stable across
//! restarts without being stored.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::Scope;

pub const DEFAULT_CIDR: &str = "172.31.0.0/16";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub availability_zone: String,
    pub cidr: Ipv4Net,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vpc {
    pub id: String,
    pub cidr: Ipv4Net,
    pub subnets: Vec<Subnet>,
    pub security_group_id: String,
}

/// FNV-1a: ids only need to be stable and spread, not secret.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// An AWS-style id: `prefix-` and 17 hex digits.
fn id(prefix: &str, parts: &[&str]) -> String {
    let h = fnv(parts);
    format!("{prefix}-{:x}{h:016x}", (h >> 60) ^ (h & 0xf))
}

impl Vpc {
    /// The default VPC of `scope` over `cidr`.
    pub fn default_for(scope: &Scope, cidr: Ipv4Net) -> Vpc {
        let c = cidr.to_string();
        let base = [scope.account.as_str(), scope.region.as_str(), c.as_str()];
        let sub_prefix = (cidr.prefix_len() + 4).min(28);
        let subnets = cidr
            .subnets(sub_prefix)
            .map(|it| it.take(3).collect::<Vec<_>>())
            .unwrap_or_else(|_| vec![cidr])
            .into_iter()
            .zip(['a', 'b', 'c'])
            .map(|(net, az)| {
                let az = format!("{}{az}", scope.region);
                Subnet { id: id("subnet", &[&base[..], &[az.as_str()]].concat()), availability_zone: az, cidr: net }
            })
            .collect();
        Vpc { id: id("vpc", &base), cidr, subnets, security_group_id: id("sg", &[&base[..], &["default"]].concat()) }
    }

    /// The subnet an id names; ids estiba does not know get the first default subnet.
    pub fn subnet(&self, id: &str) -> &Subnet {
        self.subnets.iter().find(|s| s.id == id).unwrap_or(&self.subnets[0])
    }
}

/// The private DNS name AWS gives an address: `ip-a-b-c-d.ec2.internal` in us-east-1,
/// `ip-a-b-c-d.<region>.compute.internal` elsewhere.
pub fn private_dns_name(region: &str, ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("ip-{}-{}-{}-{}.{}", o[0], o[1], o[2], o[3], private_dns_domain(region))
}

/// The domain of a region's private DNS names (and the search domain of its VPCs).
pub fn private_dns_domain(region: &str) -> String {
    if region == "us-east-1" {
        "ec2.internal".into()
    } else {
        format!("{region}.compute.internal")
    }
}

/// The VPC resolver's address: the VPC's base address plus two (172.31.0.2).
pub fn resolver_address(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(2))
}

/// The id of the network interface behind an ENI attachment (from the attachment's id, so
/// it is the same every time the agent reports it).
pub fn eni_id(attachment_id: &str) -> String {
    let hex: String = attachment_id.chars().filter(char::is_ascii_hexdigit).take(17).collect();
    format!("eni-{hex:0<17}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_vpc_subnets_and_ids() {
        let scope = Scope::new("000000000000", "us-east-1");
        let vpc = Vpc::default_for(&scope, DEFAULT_CIDR.parse().unwrap());
        let cidrs: Vec<String> = vpc.subnets.iter().map(|s| s.cidr.to_string()).collect();
        assert_eq!(cidrs, ["172.31.0.0/20", "172.31.16.0/20", "172.31.32.0/20"]);
        assert_eq!(vpc.subnets[1].availability_zone, "us-east-1b");
        assert!(vpc.id.starts_with("vpc-") && vpc.id.len() == 21, "{}", vpc.id);
        assert!(vpc.security_group_id.starts_with("sg-"));
        // Stable, and different per region.
        assert_eq!(vpc, Vpc::default_for(&scope, DEFAULT_CIDR.parse().unwrap()));
        let other = Vpc::default_for(&Scope::new("000000000000", "eu-west-1"), DEFAULT_CIDR.parse().unwrap());
        assert_ne!(vpc.subnets[0].id, other.subnets[0].id);
        // Known ids find their subnet; others get the first.
        assert_eq!(vpc.subnet(&vpc.subnets[2].id).cidr.to_string(), "172.31.32.0/20");
        assert_eq!(vpc.subnet("subnet-0123456789abcdef0").cidr.to_string(), "172.31.0.0/20");
        // A small VPC still has subnets.
        let small = Vpc::default_for(&scope, "10.0.0.0/26".parse().unwrap());
        assert_eq!(small.subnets[0].cidr.to_string(), "10.0.0.0/28");
    }

    #[test]
    fn dns_names_and_eni_ids() {
        let ip = Ipv4Addr::new(172, 31, 0, 4);
        assert_eq!(private_dns_name("us-east-1", ip), "ip-172-31-0-4.ec2.internal");
        assert_eq!(private_dns_name("eu-west-1", ip), "ip-172-31-0-4.eu-west-1.compute.internal");
        assert_eq!(resolver_address(DEFAULT_CIDR.parse().unwrap()), Ipv4Addr::new(172, 31, 0, 2));
        assert_eq!(eni_id("8c3f6c9e-6e0d-4a1b-9f7a-0b1c2d3e4f50"), "eni-8c3f6c9e6e0d4a1b9");
    }
}
