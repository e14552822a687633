//! AddTags, RemoveTags, DescribeTags (over load balancers, target groups, listeners and
//! rules: each document's `Tags`), DescribeAccountLimits, DescribeSSLPolicies.

use bytes::Bytes;
use estiba_api::elbv2::*;
use estiba_api::ApiError;
use estiba_core::elbv2::{self as elb};
use estiba_core::elbv2_rules::{self as rules, ElbError};
use estiba_core::Scope;
use estiba_store::Txn;

use super::{json, lb_doc, listener_doc, rule_doc, tg_doc, Result};
use crate::services::Call;
use crate::view::{Doc, State};
use crate::Server;

/// The document an ARN names, as JSON (every kind keeps its tags in `Tags`), with its key
/// and revision.
fn tagged(
    st: &State,
    scope: &Scope,
    arn: &str,
) -> Result<(String, estiba_store::Revision, serde_json::Value), ElbError> {
    fn raw<T>(d: &Doc<T>) -> (String, estiba_store::Revision, serde_json::Value) {
        (d.key.clone(), d.rev, serde_json::from_slice(&d.raw).unwrap_or_default())
    }
    match elb::parse_arn(arn).map(|p| p.resource) {
        Some("loadbalancer") => lb_doc(st, scope, arn).map(raw),
        Some("targetgroup") => tg_doc(st, scope, arn).map(raw),
        Some("listener") => listener_doc(st, scope, arn).map(raw),
        Some("listener-rule") => rule_doc(st, scope, arn).map(raw),
        _ => Err(ElbError::Validation(format!(
            "'{arn}' is not a valid load balancer, target group, listener or rule ARN"
        ))),
    }
}

fn tags_of(v: &serde_json::Value) -> Vec<Tag> {
    v.get("Tags").and_then(|t| serde_json::from_value(t.clone()).ok()).unwrap_or_default()
}

/// Read-modify-write of the tags of every resource named, in one transaction.
async fn retag(s: &Server, cx: &Call, arns: &[String], f: impl Fn(&[Tag]) -> Result<Vec<Tag>, ElbError>) -> Result<()> {
    s.transact::<_, ApiError>(|st| {
        let mut txn = Txn::new();
        for arn in arns {
            let (key, rev, mut v) = tagged(st, &cx.scope, arn)?;
            let tags = f(&tags_of(&v))?;
            v["Tags"] = serde_json::to_value(&tags).expect("tags serialize");
            txn = txn
                .when(estiba_store::Compare::mod_revision(&key, rev))
                .then(estiba_store::Op::put(key, serde_json::to_vec(&v).expect("documents serialize")));
        }
        Ok((txn, ()))
    })
    .await
}

pub async fn add_tags(s: &Server, cx: &Call, req: AddTagsInput) -> Result<Bytes> {
    retag(s, cx, &req.resource_arns, |cur| rules::add_tags(cur, &req.tags)).await?;
    Ok(json(&AddTagsOutput {}))
}

pub async fn remove_tags(s: &Server, cx: &Call, req: RemoveTagsInput) -> Result<Bytes> {
    retag(s, cx, &req.resource_arns, |cur| {
        Ok(cur.iter().filter(|t| !req.tag_keys.contains(&t.key)).cloned().collect())
    })
    .await?;
    Ok(json(&RemoveTagsOutput {}))
}

pub async fn describe_tags(s: &Server, cx: &Call, req: DescribeTagsInput) -> Result<Bytes> {
    let st = s.view.read();
    let mut out = vec![];
    for arn in &req.resource_arns {
        let (_, _, v) = tagged(&st, &cx.scope, arn)?;
        out.push(TagDescription { resource_arn: Some(arn.clone()), tags: Some(tags_of(&v)) });
    }
    Ok(json(&DescribeTagsOutput { tag_descriptions: Some(out) }))
}

const LIMITS: &[(&str, &str)] = &[
    ("application-load-balancers", "50"),
    ("condition-values-per-alb-rule", "5"),
    ("condition-wildcards-per-alb-rule", "5"),
    ("listeners-per-application-load-balancer", "50"),
    ("listeners-per-network-load-balancer", "50"),
    ("network-load-balancers", "50"),
    ("rules-per-application-load-balancer", "100"),
    ("target-groups", "3000"),
    ("target-groups-per-action-on-application-load-balancer", "5"),
    ("targets-per-application-load-balancer", "1000"),
    ("targets-per-network-load-balancer", "3000"),
    ("targets-per-target-group", "1000"),
];

pub async fn account_limits(_: &Server, _: &Call, _: DescribeAccountLimitsInput) -> Result<Bytes> {
    let limits = LIMITS.iter().map(|(n, m)| Limit { name: Some(n.to_string()), max: Some(m.to_string()) }).collect();
    Ok(json(&DescribeAccountLimitsOutput { limits: Some(limits), next_marker: None }))
}

pub async fn ssl_policies(_: &Server, _: &Call, req: DescribeSSLPoliciesInput) -> Result<Bytes> {
    let names = req.names.unwrap_or_default();
    if let Some(n) = names.iter().find(|n| !rules::SSL_POLICIES.iter().any(|(p, _)| p == n)) {
        return Err(ElbError::Code(ErrorCode::SSLPolicyNotFoundException, format!("SSL policy '{n}' not found")).into());
    }
    let types: &[&str] = match req.load_balancer_type {
        Some(LoadBalancerTypeEnum::Network) => &["network"],
        Some(_) => &["application"],
        None => &["application", "network"],
    };
    let policies = rules::SSL_POLICIES
        .iter()
        .filter(|(n, _)| names.is_empty() || names.iter().any(|m| m == n))
        .map(|(n, protocols)| SslPolicy {
            name: Some(n.to_string()),
            ssl_protocols: Some(protocols.iter().map(|p| p.to_string()).collect()),
            ciphers: Some(vec![]),
            supported_load_balancer_types: Some(types.iter().map(|t| t.to_string()).collect()),
        })
        .collect();
    Ok(json(&DescribeSSLPoliciesOutput { ssl_policies: Some(policies), next_marker: None }))
}
