//! Elastic Load Balancing v2: its key layout, identifiers, ARNs and DNS names, and the
//! documents the API writes and the data plane is built from.
//!
//! Store layout under `elbv2/<account>/<region>/`:
//!
//! | key | value |
//! |---|---|
//! | `load-balancers/<name>` | [`LoadBalancerDoc`]: the `LoadBalancer` shape, attributes, tags, VPC addresses |
//! | `target-groups/<name>` | [`TargetGroupDoc`]: the `TargetGroup` shape (without `LoadBalancerArns`, computed when read), attributes, tags |
//! | `listeners/<lb-name>/<listener-id>` | [`ListenerDoc`]: the `Listener` shape, attributes, tags |
//! | `rules/<lb-name>/<listener-id>/<rule-id>` | [`RuleDoc`]: the `Rule` shape (the listener's default rule too, `IsDefault`), tags |
//! | `targets/<tg-name>/<id>:<port>` | [`TargetDoc`]: one registration; draining once deregistered while in use |
//!
//! Names are unique per account and region, so a load balancer's and a target group's key is
//! its name: creation claims it with `Compare::absent`, and an ARN finds its document without
//! a scan (the name is in the ARN). Load balancer addresses are claimed across all accounts
//! under `elbv2/-/-/addresses/<ip>` ([`address_key`]), since every account's default VPC has
//! the same CIDR on a node.
//!
//! Target health is not stored: it changes with every probe round and lives with the nodes
//! that probe (reported to the server as transitions, kept in memory).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use estiba_api::elbv2::{Listener, LoadBalancer, LoadBalancerTypeEnum, Rule, Tag, TargetGroup};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::Scope;

pub const PREFIX: &str = "elbv2";
pub const LOAD_BALANCERS: &str = "load-balancers";
pub const TARGET_GROUPS: &str = "target-groups";
pub const LISTENERS: &str = "listeners";
pub const RULES: &str = "rules";
pub const TARGETS: &str = "targets";
pub const ADDRESSES: &str = "addresses";

/// How many addresses at the top of each subnet are kept for load balancers (the last
/// address, AWS's broadcast reservation, excluded). Task addresses come from below.
pub const LB_ADDRESSES_PER_SUBNET: u32 = 256;

/// A load balancer's document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancerDoc {
    #[serde(rename = "LoadBalancer")]
    pub lb: LoadBalancer,
    /// Every attribute with its value (defaults filled in at creation).
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<Tag>,
    /// One address per subnet, as AWS gives one ENI per subnet.
    #[serde(rename = "Addresses", default)]
    pub addresses: Vec<LbAddress>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbAddress {
    #[serde(rename = "SubnetId")]
    pub subnet_id: String,
    #[serde(rename = "Ip")]
    pub ip: Ipv4Addr,
}

/// A target group's document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetGroupDoc {
    #[serde(rename = "TargetGroup")]
    pub tg: TargetGroup,
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<Tag>,
}

/// A listener's document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenerDoc {
    #[serde(rename = "Listener")]
    pub listener: Listener,
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<Tag>,
}

/// A rule's document (a listener's default rule is one too, with `IsDefault` and priority
/// `default`, its actions the listener's default actions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleDoc {
    #[serde(rename = "Rule")]
    pub rule: Rule,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<Tag>,
}

/// One registered target: an IP address (target type `ip`) or an instance id (`instance`:
/// an ECS container instance's EC2 instance id) and a port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetDoc {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "AvailabilityZone", default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// When it was registered (seconds since the epoch).
    #[serde(rename = "RegisteredAt")]
    pub registered_at: f64,
    /// Set by DeregisterTargets while the group is in use: the target drains until this time
    /// plus the group's `deregistration_delay.timeout_seconds`, then its document is deleted.
    #[serde(rename = "DrainingSince", default, skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<f64>,
    /// The store key of the ECS task that registered it (a service's `loadBalancers`);
    /// `None` for targets registered through the API.
    #[serde(rename = "Owner", default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The claim of a load balancer address (`elbv2/-/-/addresses/<ip>`): whose it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressClaim {
    #[serde(rename = "LoadBalancerArn")]
    pub load_balancer_arn: String,
}

/// The key of a document of `kind` with `rest` (names and ids joined by `/`), in one
/// allocation (every Describe call forms one).
pub fn key(scope: &Scope, kind: &str, rest: &str) -> String {
    [PREFIX, "/", &scope.account, "/", &scope.region, "/", kind, "/", rest].concat()
}

/// The key prefix of every document of `kind` in `scope`.
pub fn kind_prefix(scope: &Scope, kind: &str) -> String {
    key(scope, kind, "")
}

/// The claim of a load balancer address (across accounts).
pub fn address_key(ip: Ipv4Addr) -> String {
    format!("{PREFIX}/-/-/{ADDRESSES}/{ip}")
}

/// The key of the target group a target's key (`.../targets/<tg-name>/<id>:<port>`) is in.
pub fn group_key_of_target(target_key: &str) -> Option<String> {
    let mut parts = target_key.splitn(6, '/');
    let (_, account, region, _, tg) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(format!("{PREFIX}/{account}/{region}/{TARGET_GROUPS}/{tg}"))
}

/// A target's key suffix: `<id>:<port>`.
pub fn target_suffix(tg_name: &str, id: &str, port: u16) -> String {
    format!("{tg_name}/{id}:{port}")
}

/// `app` for application load balancers, `net` for network ones (`gwy` for gateway).
pub fn type_segment(t: LoadBalancerTypeEnum) -> &'static str {
    match t {
        LoadBalancerTypeEnum::Application => "app",
        LoadBalancerTypeEnum::Network => "net",
        LoadBalancerTypeEnum::Gateway => "gwy",
    }
}

fn arn(scope: &Scope, resource: &str) -> String {
    format!("arn:aws:elasticloadbalancing:{}:{}:{resource}", scope.region, scope.account)
}

/// `arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/<name>/<id>`.
pub fn load_balancer_arn(scope: &Scope, t: LoadBalancerTypeEnum, name: &str, id: &str) -> String {
    arn(scope, &format!("loadbalancer/{}/{name}/{id}", type_segment(t)))
}

/// `arn:aws:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>`.
pub fn target_group_arn(scope: &Scope, name: &str, id: &str) -> String {
    arn(scope, &format!("targetgroup/{name}/{id}"))
}

/// `...:listener/app/<lb-name>/<lb-id>/<listener-id>`.
pub fn listener_arn(lb_arn: &str, listener_id: &str) -> String {
    format!("{}/{listener_id}", lb_arn.replacen(":loadbalancer/", ":listener/", 1))
}

/// `...:listener-rule/app/<lb-name>/<lb-id>/<listener-id>/<rule-id>`.
pub fn rule_arn(listener_arn: &str, rule_id: &str) -> String {
    format!("{}/{rule_id}", listener_arn.replacen(":listener/", ":listener-rule/", 1))
}

/// An ELBv2 ARN taken apart: its scope, resource type (`loadbalancer`, `targetgroup`,
/// `listener`, `listener-rule`) and the path after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedArn<'a> {
    pub scope: Scope,
    pub resource: &'a str,
    pub path: Vec<&'a str>,
}

pub fn parse_arn(arn: &str) -> Option<ParsedArn<'_>> {
    let rest = arn.strip_prefix("arn:aws:elasticloadbalancing:")?;
    let mut parts = rest.splitn(3, ':');
    let region = parts.next()?;
    let account = parts.next()?;
    let (resource, path) = parts.next()?.split_once('/')?;
    if region.is_empty() || account.is_empty() {
        return None;
    }
    let path: Vec<&str> = path.split('/').collect();
    let want = match resource {
        "loadbalancer" => 3,
        "targetgroup" => 2,
        "listener" => 4,
        "listener-rule" => 5,
        _ => return None,
    };
    (path.len() == want && path.iter().all(|p| !p.is_empty())).then(|| ParsedArn {
        scope: Scope::new(account, region),
        resource,
        path,
    })
}

/// The store key an ARN names (`None` when it is not a well-formed ELBv2 ARN).
pub fn key_of_arn(arn: &str) -> Option<String> {
    let p = parse_arn(arn)?;
    let (kind, rest) = match p.resource {
        "loadbalancer" => (LOAD_BALANCERS, p.path[1].to_string()),
        "targetgroup" => (TARGET_GROUPS, p.path[0].to_string()),
        "listener" => (LISTENERS, format!("{}/{}", p.path[1], p.path[3])),
        "listener-rule" => (RULES, format!("{}/{}/{}", p.path[1], p.path[3], p.path[4])),
        _ => return None,
    };
    Some(key(&p.scope, kind, &rest))
}

/// A load balancer's DNS name: `<name>-<digits>.<region>.elb.amazonaws.com`, with the
/// `internal-` prefix when it is internal. The digits come from the load balancer's id.
pub fn dns_name(region: &str, name: &str, id: &str, internal: bool) -> String {
    let digits = u64::from_str_radix(id.get(..12).unwrap_or(id), 16).unwrap_or(0) % 10_000_000_000;
    let prefix = if internal { "internal-" } else { "" };
    format!("{prefix}{name}-{digits}.{region}.elb.amazonaws.com")
}

/// The range of a subnet kept for load balancer addresses: the top
/// [`LB_ADDRESSES_PER_SUBNET`] addresses below the last one.
pub fn lb_address_range(subnet: Ipv4Net) -> std::ops::Range<u32> {
    let last = u32::from(subnet.broadcast());
    let size = 1u32 << (32 - subnet.prefix_len());
    let n = LB_ADDRESSES_PER_SUBNET.min(size / 4);
    (last - n)..last
}

/// The first address of `subnet`'s load balancer range that `taken` does not hold.
pub fn free_lb_address(subnet: Ipv4Net, taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    lb_address_range(subnet).map(Ipv4Addr::from).find(|ip| !taken(*ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_parse_back_to_their_keys() {
        let scope = Scope::new("000000000000", "us-east-1");
        let lb = load_balancer_arn(&scope, LoadBalancerTypeEnum::Application, "web", "50dc6c495c0c9188");
        assert_eq!(lb, "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/50dc6c495c0c9188");
        assert_eq!(key_of_arn(&lb).unwrap(), "elbv2/000000000000/us-east-1/load-balancers/web");
        let l = listener_arn(&lb, "f2f7dc8efc522ab2");
        assert_eq!(
            l,
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2"
        );
        assert_eq!(key_of_arn(&l).unwrap(), "elbv2/000000000000/us-east-1/listeners/web/f2f7dc8efc522ab2");
        let r = rule_arn(&l, "9683b2d02a6cabee");
        assert!(r.contains(":listener-rule/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee"));
        assert_eq!(key_of_arn(&r).unwrap(), "elbv2/000000000000/us-east-1/rules/web/f2f7dc8efc522ab2/9683b2d02a6cabee");
        let tg = target_group_arn(&scope, "api", "73e2d6bc24d8a067");
        assert_eq!(key_of_arn(&tg).unwrap(), "elbv2/000000000000/us-east-1/target-groups/api");
        for bad in [
            "",
            "arn:aws:ecs:us-east-1:0:cluster/x",
            "arn:aws:elasticloadbalancing:us-east-1:0:loadbalancer/app/web",
            "arn:aws:elasticloadbalancing:us-east-1:0:targetgroup//x",
            "arn:aws:elasticloadbalancing:us-east-1:0:thing/a/b",
        ] {
            assert_eq!(key_of_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn dns_names_have_aws_shape() {
        let n = dns_name("us-east-1", "web", "50dc6c495c0c9188", false);
        assert!(n.starts_with("web-") && n.ends_with(".us-east-1.elb.amazonaws.com"), "{n}");
        let digits = n.trim_start_matches("web-").split('.').next().unwrap();
        assert!(!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()), "{n}");
        assert!(dns_name("eu-west-1", "web", "50dc6c495c0c9188", true).starts_with("internal-web-"));
    }

    #[test]
    fn lb_addresses_come_from_the_top_of_the_subnet() {
        let subnet: Ipv4Net = "172.31.0.0/20".parse().unwrap();
        let r = lb_address_range(subnet);
        assert_eq!(Ipv4Addr::from(r.start), Ipv4Addr::new(172, 31, 14, 255));
        assert_eq!(Ipv4Addr::from(r.end - 1), Ipv4Addr::new(172, 31, 15, 254));
        let first = free_lb_address(subnet, |_| false).unwrap();
        let second = free_lb_address(subnet, |ip| ip == first).unwrap();
        assert_eq!(u32::from(second), u32::from(first) + 1);
        assert_eq!(free_lb_address(subnet, |_| true), None);
    }
}
