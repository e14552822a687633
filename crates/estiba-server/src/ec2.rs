//! The part of the EC2 API that ECS users touch to find where tasks go: DescribeVpcs,
//! DescribeSubnets and DescribeSecurityGroups over estiba's default VPC
//! ([`estiba_core::vpc`]), so scripts that look up the default subnets
//! (`aws ec2 describe-subnets --filters Name=default-for-az,Values=true`) work unchanged.
//!
//! EC2 speaks the AWS Query protocol: a form-encoded `POST /` with `Action=...`, answered in
//! XML. Three read-only answers are written by hand here: the EC2 model has thousands of
//! shapes, and generating them for three responses would cost more compile time than the
//! whole API does.

use bytes::Bytes;
use estiba_core::vpc::{Subnet, Vpc};
use estiba_core::Scope;

use crate::Server;

const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// An EC2 error: its code and message (always answered with status 400).
#[derive(Debug)]
pub struct Ec2Error {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> Ec2Error {
    Ec2Error { code, message: message.into() }
}

/// The request's parameters: ids (`<Key>.N`) and filters (`Filter.N.Name`, `Filter.N.Value.M`).
struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    fn parse(body: &[u8]) -> Params {
        Params { pairs: form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect() }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The values of `<prefix>.1`, `<prefix>.2`, ...
    fn list(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<(u32, String)> = self
            .pairs
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(prefix)?.strip_prefix('.')?.parse::<u32>().ok()?;
                Some((n, v.clone()))
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// `Filter.N.Name` → its `Filter.N.Value.M` values.
    fn filters(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for n in 1.. {
            let Some(name) = self.get(&format!("Filter.{n}.Name")) else { break };
            out.push((name.to_owned(), self.list(&format!("Filter.{n}.Value"))));
        }
        out
    }
}

/// Escapes text for an XML element.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `<name>value</name>` for each pair.
fn fields(pairs: &[(&str, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("<{k}>{}</{k}>", esc(v))).collect()
}

/// Whether `value` passes the filter values (any of them; `*` matches any run of characters).
fn matches(values: &[String], value: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
            _ => false,
        }
    }
    values.iter().any(|v| glob(v.as_bytes(), value.as_bytes()))
}

/// Keeps the items every filter passes; `field` gives an item's value for a filter name, or
/// `None` when the name is not a filter of this call.
fn filtered<T>(
    items: Vec<T>,
    filters: &[(String, Vec<String>)],
    field: impl Fn(&T, &str) -> Option<String>,
) -> Result<Vec<T>, Ec2Error> {
    let mut out = Vec::new();
    for it in items {
        let mut keep = true;
        for (name, values) in filters {
            match field(&it, name) {
                Some(v) => keep &= matches(values, &v),
                None => return Err(err("InvalidParameterValue", format!("The filter '{name}' is invalid"))),
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
    ids: &[String],
    id: impl Fn(&T) -> &str,
    missing: impl Fn(&str) -> Ec2Error,
) -> Result<Vec<T>, Ec2Error> {
    if ids.is_empty() {
        return Ok(items);
    }
    if let Some(m) = ids.iter().find(|i| !items.iter().any(|it| id(it) == i.as_str())) {
        return Err(missing(m));
    }
    Ok(items.into_iter().filter(|it| ids.iter().any(|i| i == id(it))).collect())
}

fn describe_vpcs(vpc: &Vpc, scope: &Scope, p: &Params) -> Result<String, Ec2Error> {
    let vpcs = by_id(
        vec![vpc],
        &p.list("VpcId"),
        |v| v.id.as_str(),
        |m| err("InvalidVpcID.NotFound", format!("The vpc ID '{m}' does not exist")),
    )?;
    let vpcs = filtered(vpcs, &p.filters(), |v, name| match name {
        "vpc-id" => Some(v.id.clone()),
        "cidr" | "cidr-block-association.cidr-block" => Some(v.cidr.to_string()),
        "is-default" | "isDefault" => Some("true".into()),
        "state" => Some("available".into()),
        "owner-id" => Some(scope.account.clone()),
        _ => None,
    })?;
    let items: String = vpcs
        .iter()
        .map(|v| {
            format!(
                "<item>{}<cidrBlockAssociationSet><item><cidrBlock>{}</cidrBlock><associationId>vpc-cidr-assoc-{}</associationId><cidrBlockState><state>associated</state></cidrBlockState></item></cidrBlockAssociationSet><isDefault>true</isDefault></item>",
                fields(&[
                    ("vpcId", v.id.clone()),
                    ("ownerId", scope.account.clone()),
                    ("state", "available".into()),
                    ("cidrBlock", v.cidr.to_string()),
                    ("dhcpOptionsId", "default".into()),
                    ("instanceTenancy", "default".into()),
                ]),
                v.cidr,
                &v.id[4..],
            )
        })
        .collect();
    Ok(format!("<vpcSet>{items}</vpcSet>"))
}

fn describe_subnets(vpc: &Vpc, scope: &Scope, p: &Params) -> Result<String, Ec2Error> {
    let subnets: Vec<&Subnet> = vpc.subnets.iter().collect();
    let subnets = by_id(
        subnets,
        &p.list("SubnetId"),
        |s| s.id.as_str(),
        |m| err("InvalidSubnetID.NotFound", format!("The subnet ID '{m}' does not exist")),
    )?;
    let subnets = filtered(subnets, &p.filters(), |s, name| match name {
        "subnet-id" => Some(s.id.clone()),
        "vpc-id" => Some(vpc.id.clone()),
        "availability-zone" | "availabilityZone" => Some(s.availability_zone.clone()),
        "cidr-block" | "cidr" | "cidrBlock" => Some(s.cidr.to_string()),
        "default-for-az" | "defaultForAz" => Some("true".into()),
        "map-public-ip-on-launch" => Some("true".into()),
        "state" => Some("available".into()),
        "owner-id" => Some(scope.account.clone()),
        _ => None,
    })?;
    let items: String = subnets
        .iter()
        .map(|s| {
            // AWS keeps the first four and the last address of every subnet.
            let usable = (1u64 << (32 - s.cidr.prefix_len() as u32)).saturating_sub(5);
            format!(
                "<item>{}<ipv6CidrBlockAssociationSet/></item>",
                fields(&[
                    ("subnetId", s.id.clone()),
                    ("subnetArn", format!("arn:aws:ec2:{}:{}:subnet/{}", scope.region, scope.account, s.id)),
                    ("state", "available".into()),
                    ("ownerId", scope.account.clone()),
                    ("vpcId", vpc.id.clone()),
                    ("cidrBlock", s.cidr.to_string()),
                    ("availableIpAddressCount", usable.to_string()),
                    ("availabilityZone", s.availability_zone.clone()),
                    ("defaultForAz", "true".into()),
                    ("mapPublicIpOnLaunch", "true".into()),
                    ("assignIpv6AddressOnCreation", "false".into()),
                ])
            )
        })
        .collect();
    Ok(format!("<subnetSet>{items}</subnetSet>"))
}

fn describe_security_groups(vpc: &Vpc, scope: &Scope, p: &Params) -> Result<String, Ec2Error> {
    let groups = by_id(
        vec![vpc],
        &p.list("GroupId"),
        |v| v.security_group_id.as_str(),
        |m| err("InvalidGroup.NotFound", format!("The security group '{m}' does not exist")),
    )?;
    let names = p.list("GroupName");
    if let Some(m) = names.iter().find(|n| *n != "default") {
        return Err(err(
            "InvalidGroup.NotFound",
            format!("The security group '{m}' does not exist in default VPC '{}'", vpc.id),
        ));
    }
    let groups = filtered(groups, &p.filters(), |v, name| match name {
        "group-id" => Some(v.security_group_id.clone()),
        "group-name" => Some("default".into()),
        "vpc-id" => Some(v.id.clone()),
        "owner-id" => Some(scope.account.clone()),
        "description" => Some("default VPC security group".into()),
        _ => None,
    })?;
    let items: String = groups
        .iter()
        .map(|v| {
            format!(
                "<item>{}<ipPermissions><item><ipProtocol>-1</ipProtocol><groups><item><userId>{}</userId><groupId>{}</groupId></item></groups><ipRanges/><ipv6Ranges/><prefixListIds/></item></ipPermissions><ipPermissionsEgress><item><ipProtocol>-1</ipProtocol><groups/><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges><ipv6Ranges/><prefixListIds/></item></ipPermissionsEgress></item>",
                fields(&[
                    ("ownerId", scope.account.clone()),
                    ("groupId", v.security_group_id.clone()),
                    ("groupName", "default".into()),
                    ("groupDescription", "default VPC security group".into()),
                    ("vpcId", v.id.clone()),
                ]),
                scope.account,
                v.security_group_id,
            )
        })
        .collect();
    Ok(format!("<securityGroupInfo>{items}</securityGroupInfo>"))
}

/// Answers one Query request: the XML body of the answer, or an error.
pub fn handle(server: &Server, scope: &Scope, body: &[u8], request_id: &str) -> Result<Bytes, Ec2Error> {
    let p = Params::parse(body);
    let action = p.get("Action").unwrap_or("").to_owned();
    let vpc = Vpc::default_for(scope, server.config.vpc_cidr);
    let inner = match action.as_str() {
        "DescribeVpcs" => describe_vpcs(&vpc, scope, &p)?,
        "DescribeSubnets" => describe_subnets(&vpc, scope, &p)?,
        "DescribeSecurityGroups" => describe_security_groups(&vpc, scope, &p)?,
        "" => return Err(err("MissingAction", "The request must contain the parameter Action")),
        other => {
            return Err(err("InvalidAction", format!("The action {} is not valid for this web service.", esc(other))))
        }
    };
    Ok(Bytes::from(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{XMLNS}\"><requestId>{request_id}</requestId>{inner}</{action}Response>"
    )))
}

/// An error in EC2's XML form.
pub fn error_body(e: &Ec2Error, request_id: &str) -> Bytes {
    Bytes::from(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
        e.code,
        esc(&e.message)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_lists_filters_and_globs() {
        let p = Params::parse(
            b"Action=DescribeSubnets&SubnetId.2=b&SubnetId.1=a&Filter.1.Name=availability-zone&Filter.1.Value.1=us-east-1*&Filter.2.Name=x",
        );
        assert_eq!(p.list("SubnetId"), ["a", "b"]);
        let f = p.filters();
        assert_eq!(f[0], ("availability-zone".to_owned(), vec!["us-east-1*".to_owned()]));
        assert_eq!(f[1].0, "x");
        assert!(matches(&f[0].1, "us-east-1b"));
        assert!(!matches(&f[0].1, "eu-west-1a"));
        assert!(matches(&["*".into()], ""));
    }

    #[test]
    fn subnets_by_filter_and_id() {
        let scope = Scope::new("000000000000", "us-east-1");
        let vpc = Vpc::default_for(&scope, "172.31.0.0/16".parse().unwrap());
        let q = |body: &str| describe_subnets(&vpc, &scope, &Params::parse(body.as_bytes()));
        let all = q("Filter.1.Name=default-for-az&Filter.1.Value.1=true").unwrap();
        assert_eq!(all.matches("<subnetId>").count(), 3);
        assert!(all.contains("<availableIpAddressCount>4091</availableIpAddressCount>"));
        let b = q("Filter.1.Name=availability-zone&Filter.1.Value.1=us-east-1b").unwrap();
        assert!(b.contains("<cidrBlock>172.31.16.0/20</cidrBlock>") && b.matches("<item>").count() == 1);
        let e = q("SubnetId.1=subnet-nope").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            ("InvalidSubnetID.NotFound", "The subnet ID 'subnet-nope' does not exist")
        );
        assert_eq!(q("Filter.1.Name=bogus&Filter.1.Value.1=x").unwrap_err().code, "InvalidParameterValue");
    }
}
