//! The part of the EC2 API that ECS users touch to find where tasks go: DescribeVpcs,
//! DescribeSubnets and DescribeSecurityGroups over estiba's default VPC
//! ([`estiba_core::vpc`]), so scripts that look up the default subnets
//! (`aws ec2 describe-subnets --filters Name=default-for-az,Values=true`) work unchanged.
//!
//! EC2 speaks its own flavour of the Query protocol; the front door decodes it into the
//! generated types (only these operations' shapes are generated from EC2's large model).

use bytes::Bytes;
use estiba_api::ec2::*;
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, Common, DecodeError, ErrorShape};
use estiba_core::vpc::{self, Vpc as DefaultVpc};
use estiba_core::Scope;

use super::{json, route, BoxFuture, Call, Input, Service};
use crate::Server;

/// EC2's error codes: its model declares none, the API documents them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ec2Code {
    InvalidParameterValue,
    InvalidVpcIdNotFound,
    InvalidSubnetIdNotFound,
    InvalidGroupNotFound,
}

impl ErrorShape for Ec2Code {
    fn name(self) -> &'static str {
        match self {
            Ec2Code::InvalidParameterValue => "InvalidParameterValue",
            Ec2Code::InvalidVpcIdNotFound => "InvalidVpcID.NotFound",
            Ec2Code::InvalidSubnetIdNotFound => "InvalidSubnetID.NotFound",
            Ec2Code::InvalidGroupNotFound => "InvalidGroup.NotFound",
        }
    }

    fn shape_name(self) -> &'static str {
        self.name()
    }

    fn status(self) -> u16 {
        400
    }

    fn sender_fault(self) -> bool {
        true
    }
}

type Result<T, E = ApiError> = std::result::Result<T, E>;

fn err(code: Ec2Code, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

/// The EC2 service.
pub struct Ec2;

impl Service for Ec2 {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let missing = |other: Operation| super::not_implemented(&Ec2, other.name());
            route! { &Ec2, s, &cx, Operation::ALL[op], input, missing;
                DescribeVpcs => describe_vpcs,
                DescribeSubnets => describe_subnets,
                DescribeSecurityGroups => describe_security_groups,
            }
        })
    }

    fn decode_error(&self, e: DecodeError, _: Protocol) -> ApiError {
        match e {
            DecodeError::Unknown(m) => ApiError::new(Common::UnknownParameter, m),
            DecodeError::Missing(m) => ApiError::new(Common::MissingParameter, m),
            DecodeError::Serialization(m) | DecodeError::Validation(m) => err(Ec2Code::InvalidParameterValue, m),
        }
    }
}

/// Whether `value` matches an EC2 filter pattern: `*` is any run of characters, `?` any one.
/// Linear in practice and never exponential (one backtrack point, the last `*`): patterns
/// come from callers.
fn glob(pattern: &str, value: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// Keeps the items every filter passes; `field` gives an item's values for a filter name, or
/// `None` when the name is not a filter of this call.
fn filtered<T>(items: Vec<T>, filters: &[Filter], field: impl Fn(&T, &str) -> Option<Vec<String>>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for it in items {
        let mut keep = true;
        for f in filters {
            let name = f.name.as_deref().unwrap_or("");
            let wanted = f.values.as_deref().unwrap_or_default();
            match field(&it, name) {
                Some(have) => keep &= have.iter().any(|h| wanted.iter().any(|w| glob(w, h))),
                None => {
                    return Err(err(Ec2Code::InvalidParameterValue, format!("The filter '{name}' is invalid")));
                }
            }
        }
        if keep {
            out.push(it);
        }
    }
    Ok(out)
}

/// Keeps the items named by `ids` (all when none are given); an unknown id is an error.
fn by_id<T>(
    items: Vec<T>,
    ids: Option<&[String]>,
    id: impl Fn(&T) -> &str,
    missing: impl Fn(&str) -> ApiError,
) -> Result<Vec<T>> {
    let ids = ids.unwrap_or_default();
    if ids.is_empty() {
        return Ok(items);
    }
    if let Some(m) = ids.iter().find(|i| !items.iter().any(|it| id(it) == i.as_str())) {
        return Err(missing(m));
    }
    Ok(items.into_iter().filter(|it| ids.iter().any(|i| i == id(it))).collect())
}

fn one(v: impl Into<String>) -> Option<Vec<String>> {
    Some(vec![v.into()])
}

fn default_vpc(s: &Server, scope: &Scope) -> DefaultVpc {
    DefaultVpc::default_for(scope, s.config.vpc_cidr)
}

async fn describe_vpcs(s: &Server, cx: &Call, req: DescribeVpcsRequest) -> Result<Bytes> {
    let v = default_vpc(s, &cx.scope);
    let vpcs = by_id(
        vec![&v],
        req.vpc_ids.as_deref(),
        |v| v.id.as_str(),
        |m| err(Ec2Code::InvalidVpcIdNotFound, format!("The vpc ID '{m}' does not exist")),
    )?;
    let vpcs = filtered(vpcs, req.filters.as_deref().unwrap_or_default(), |v, name| match name {
        "vpc-id" => one(&v.id),
        "cidr" | "cidr-block-association.cidr-block" => one(v.cidr.to_string()),
        "is-default" | "isDefault" => one("true"),
        "state" => one("available"),
        "owner-id" => one(&cx.scope.account),
        _ => None,
    })?;
    let vpcs = vpcs
        .iter()
        .map(|v| Vpc {
            vpc_id: Some(v.id.clone()),
            owner_id: Some(cx.scope.account.clone()),
            state: Some(VpcState::Available),
            cidr_block: Some(v.cidr.to_string()),
            cidr_block_association_set: Some(vec![VpcCidrBlockAssociation {
                association_id: Some(format!("vpc-cidr-assoc-{}", &v.id[4..])),
                cidr_block: Some(v.cidr.to_string()),
                cidr_block_state: Some(VpcCidrBlockState {
                    state: Some(VpcCidrBlockStateCode::Associated),
                    status_message: None,
                }),
            }]),
            dhcp_options_id: Some("default".into()),
            instance_tenancy: Some(Tenancy::Default),
            is_default: Some(true),
            ..Default::default()
        })
        .collect();
    Ok(json(&DescribeVpcsResult { vpcs: Some(vpcs), next_token: None }))
}

async fn describe_subnets(s: &Server, cx: &Call, req: DescribeSubnetsRequest) -> Result<Bytes> {
    let v = default_vpc(s, &cx.scope);
    let subnets: Vec<&vpc::Subnet> = v.subnets.iter().collect();
    let subnets = by_id(
        subnets,
        req.subnet_ids.as_deref(),
        |s| s.id.as_str(),
        |m| err(Ec2Code::InvalidSubnetIdNotFound, format!("The subnet ID '{m}' does not exist")),
    )?;
    let subnets = filtered(subnets, req.filters.as_deref().unwrap_or_default(), |s, name| match name {
        "subnet-id" => one(&s.id),
        "vpc-id" => one(&v.id),
        "availability-zone" | "availabilityZone" => one(&s.availability_zone),
        "cidr-block" | "cidr" | "cidrBlock" => one(s.cidr.to_string()),
        "default-for-az" | "defaultForAz" => one("true"),
        "map-public-ip-on-launch" => one("true"),
        "state" => one("available"),
        "owner-id" => one(&cx.scope.account),
        _ => None,
    })?;
    let subnets = subnets
        .iter()
        .map(|sn| Subnet {
            subnet_id: Some(sn.id.clone()),
            subnet_arn: Some(format!("arn:aws:ec2:{}:{}:subnet/{}", cx.scope.region, cx.scope.account, sn.id)),
            state: Some(SubnetState::Available),
            owner_id: Some(cx.scope.account.clone()),
            vpc_id: Some(v.id.clone()),
            cidr_block: Some(sn.cidr.to_string()),
            // AWS keeps the first four and the last address of every subnet.
            available_ip_address_count: Some(
                ((1u64 << (32 - sn.cidr.prefix_len() as u32)).saturating_sub(5)).min(i32::MAX as u64) as i32,
            ),
            availability_zone: Some(sn.availability_zone.clone()),
            default_for_az: Some(true),
            map_public_ip_on_launch: Some(true),
            assign_ipv6_address_on_creation: Some(false),
            ipv6_cidr_block_association_set: Some(vec![]),
            ..Default::default()
        })
        .collect();
    Ok(json(&DescribeSubnetsResult { subnets: Some(subnets), next_token: None }))
}

async fn describe_security_groups(s: &Server, cx: &Call, req: DescribeSecurityGroupsRequest) -> Result<Bytes> {
    let v = default_vpc(s, &cx.scope);
    let groups = by_id(
        vec![&v],
        req.group_ids.as_deref(),
        |v| v.security_group_id.as_str(),
        |m| err(Ec2Code::InvalidGroupNotFound, format!("The security group '{m}' does not exist")),
    )?;
    if let Some(m) = req.group_names.iter().flatten().find(|n| *n != "default") {
        return Err(err(
            Ec2Code::InvalidGroupNotFound,
            format!("The security group '{m}' does not exist in default VPC '{}'", v.id),
        ));
    }
    let groups = filtered(groups, req.filters.as_deref().unwrap_or_default(), |v, name| match name {
        "group-id" => one(&v.security_group_id),
        "group-name" => one("default"),
        "vpc-id" => one(&v.id),
        "owner-id" => one(&cx.scope.account),
        "description" => one("default VPC security group"),
        _ => None,
    })?;
    let all = |groups, ranges| IpPermission {
        ip_protocol: Some("-1".into()),
        user_id_group_pairs: Some(groups),
        ip_ranges: Some(ranges),
        ipv6_ranges: Some(vec![]),
        prefix_list_ids: Some(vec![]),
        ..Default::default()
    };
    let groups = groups
        .iter()
        .map(|v| SecurityGroup {
            owner_id: Some(cx.scope.account.clone()),
            group_id: Some(v.security_group_id.clone()),
            group_name: Some("default".into()),
            description: Some("default VPC security group".into()),
            vpc_id: Some(v.id.clone()),
            security_group_arn: Some(format!(
                "arn:aws:ec2:{}:{}:security-group/{}",
                cx.scope.region, cx.scope.account, v.security_group_id
            )),
            // The default group: all traffic from members of the group in, everything out.
            ip_permissions: Some(vec![all(
                vec![UserIdGroupPair {
                    user_id: Some(cx.scope.account.clone()),
                    group_id: Some(v.security_group_id.clone()),
                    ..Default::default()
                }],
                vec![],
            )]),
            ip_permissions_egress: Some(vec![all(
                vec![],
                vec![IpRange { cidr_ip: Some("0.0.0.0/0".into()), description: None }],
            )]),
            ..Default::default()
        })
        .collect();
    Ok(json(&DescribeSecurityGroupsResult { security_groups: Some(groups), next_token: None }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_linear_and_correct() {
        assert!(glob("us-east-1*", "us-east-1b"));
        assert!(!glob("us-east-1*", "eu-west-1a"));
        assert!(glob("*", ""));
        assert!(glob("us-east-1?", "us-east-1c"));
        assert!(!glob("us-east-1?", "us-east-1"));
        assert!(glob("*a*b", "xxaxxb"));
        assert!(!glob("a", "ab"));
        // The pattern that took exponential time with a backtracking matcher.
        let long = "a".repeat(100_000);
        let t = std::time::Instant::now();
        assert!(!glob("*a*a*a*a*a*a*a*a*a*a*a*a*b", &long));
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn filters_and_ids() {
        let items = vec!["a", "b"];
        let f = |name: &str, v: &str| Filter { name: Some(name.into()), values: Some(vec![v.into()]) };
        let kept = filtered(items.clone(), &[f("x", "a*")], |it, n| (n == "x").then(|| vec![it.to_string()])).unwrap();
        assert_eq!(kept, ["a"]);
        let e = filtered(items.clone(), &[f("bogus", "a")], |_, _| None).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), ("InvalidParameterValue", "The filter 'bogus' is invalid"));
        let e = by_id(items, Some(&["c".to_owned()]), |s| s, |m| err(Ec2Code::InvalidSubnetIdNotFound, m)).unwrap_err();
        assert_eq!(e.code, "InvalidSubnetID.NotFound");
    }
}
