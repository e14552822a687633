//! CreateListener, DescribeListeners, ModifyListener, DeleteListener,
//! Describe/ModifyListenerAttributes. A listener's default actions are also its default
//! rule's (a [`RuleDoc`] with `IsDefault`), written together.

use bytes::Bytes;
use estiba_api::elbv2::*;
use estiba_api::ApiError;
use estiba_core::elbv2::{self as elb, ListenerDoc, LoadBalancerDoc, RuleDoc};
use estiba_core::elbv2_rules::{self as rules, ElbError};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::{
    changes, docs, guard, json, lb_doc, lb_of_key, listener_doc, listener_path, new_id, page, put,
    target_group_load_balancers, tg_doc, touch, Result, Table,
};
use crate::services::Call;
use crate::view::{Doc, State};
use crate::Server;

/// Checks the groups `actions` forward to (they exist, fit the listener's protocol and are
/// not another load balancer's) and adds their guards to `txn`.
pub(super) fn check_forwards(
    st: &State,
    scope: &Scope,
    lb: &LoadBalancerDoc,
    protocol: Option<ProtocolEnum>,
    actions: &[Action],
    mut txn: Txn,
) -> Result<Txn> {
    let t = lb.lb.r#type.unwrap_or_default();
    let lb_arn = lb.lb.load_balancer_arn.clone().unwrap_or_default();
    let mut seen: Vec<&str> = vec![];
    for arn in actions.iter().flat_map(rules::action_target_groups) {
        if seen.contains(&arn) {
            continue;
        }
        seen.push(arn);
        let tg = tg_doc(st, scope, arn).map_err(|_| {
            ElbError::Code(ErrorCode::TargetGroupNotFoundException, format!("Target group '{arn}' not found"))
        })?;
        rules::check_forward_target(t, protocol, arn, tg.value.tg.protocol.unwrap_or_default())?;
        if tg.value.tg.target_type == Some(TargetTypeEnum::Alb) && protocol != Some(ProtocolEnum::Tcp) {
            return Err(ElbError::Code(
                ErrorCode::IncompatibleProtocolsException,
                format!("Target group '{arn}' of target type 'alb' can only be used by TCP listeners"),
            )
            .into());
        }
        if target_group_load_balancers(st, scope, arn).iter().any(|other| *other != lb_arn) {
            return Err(ElbError::Code(
                ErrorCode::TargetGroupAssociationLimitException,
                format!("The following target groups cannot be associated with more than one load balancer: {arn}"),
            )
            .into());
        }
        txn = touch(txn, tg);
    }
    Ok(txn)
}

/// The default rule of a listener (by the listener document's key).
fn default_rule<'a>(st: &'a State, scope: &Scope, listener_key: &str) -> Option<&'a Doc<RuleDoc>> {
    let (lb, id) = listener_path(listener_key);
    docs::<RuleDoc>(st, scope, Table::Rules, &format!("{lb}/{id}/")).find(|r| r.value.rule.is_default == Some(true))
}

/// A new listener's key and document with its default rule's (CreateListener's write, and
/// Express Mode's shared listener).
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_listener(
    scope: &Scope,
    lb_arn: &str,
    lb_name: &str,
    protocol: ProtocolEnum,
    port: i32,
    cert: Option<String>,
    ssl_policy: Option<String>,
    actions: &[Action],
    alpn_policy: Option<Vec<String>>,
    tags: Vec<Tag>,
) -> (String, ListenerDoc, String, RuleDoc) {
    let id = new_id();
    let arn = elb::listener_arn(lb_arn, &id);
    let listener = Listener {
        listener_arn: Some(arn.clone()),
        load_balancer_arn: Some(lb_arn.to_owned()),
        port: Some(port),
        protocol: Some(protocol),
        certificates: cert.map(|c| vec![Certificate { certificate_arn: Some(c), is_default: None }]),
        ssl_policy,
        default_actions: Some(actions.to_vec()),
        alpn_policy,
        mutual_authentication: None,
    };
    let key = elb::key(scope, elb::LISTENERS, &format!("{lb_name}/{id}"));
    let rule_id = new_id();
    let rule = RuleDoc {
        rule: Rule {
            rule_arn: Some(elb::rule_arn(&arn, &rule_id)),
            priority: Some("default".into()),
            is_default: Some(true),
            conditions: Some(vec![]),
            actions: Some(actions.to_vec()),
            transforms: None,
        },
        tags: vec![],
    };
    let rule_key = elb::key(scope, elb::RULES, &format!("{lb_name}/{id}/{rule_id}"));
    let doc = ListenerDoc { listener, attributes: rules::default_listener_attributes(protocol), tags };
    (key, doc, rule_key, rule)
}

pub async fn create(s: &Server, cx: &Call, req: CreateListenerInput) -> Result<Bytes> {
    let scope = &cx.scope;
    let listener = s
        .transact::<_, ApiError>(|st| {
            let lb = lb_doc(st, scope, &req.load_balancer_arn)?;
            let t = lb.value.lb.r#type.unwrap_or_default();
            let protocol =
                req.protocol.ok_or_else(|| ElbError::Validation("A listener protocol must be specified".into()))?;
            let port = req.port.ok_or_else(|| ElbError::Validation("A listener port must be specified".into()))?;
            rules::check_listener_protocol(t, protocol)?;
            let tls = matches!(protocol, ProtocolEnum::Https | ProtocolEnum::Tls);
            let cert = req.certificates.as_ref().and_then(|c| c.first()).and_then(|c| c.certificate_arn.clone());
            let ssl_policy = tls.then(|| req.ssl_policy.clone().unwrap_or_else(|| rules::DEFAULT_SSL_POLICY.into()));
            rules::check_listener(protocol, port, cert.as_deref(), ssl_policy.as_deref())?;
            let lb_name = lb.value.lb.load_balancer_name.clone().unwrap_or_default();
            if docs::<ListenerDoc>(st, scope, Table::Listeners, &format!("{lb_name}/"))
                .any(|l| l.value.listener.port == Some(port))
            {
                return Err(ElbError::Code(
                    ErrorCode::DuplicateListenerException,
                    "A listener already exists on this port for this load balancer".into(),
                )
                .into());
            }
            let actions = rules::check_actions(t, &req.default_actions)?;
            let tags = rules::add_tags(&[], req.tags.as_deref().unwrap_or_default())?;
            let alpn = req.alpn_policy.clone().filter(|_| protocol == ProtocolEnum::Tls);
            let (key, doc, rule_key, rule) = new_listener(
                scope,
                &req.load_balancer_arn,
                &lb_name,
                protocol,
                port,
                cert,
                ssl_policy,
                &actions,
                alpn,
                tags,
            );
            let listener = doc.listener.clone();
            let txn = touch(Txn::new(), lb)
                .when(Compare::absent(&key))
                .then(put(&key, &doc))
                .when(Compare::absent(&rule_key))
                .then(put(&rule_key, &rule));
            let txn = check_forwards(st, scope, &lb.value, Some(protocol), &actions, txn)?;
            Ok((txn, listener))
        })
        .await?;
    Ok(json(&CreateListenerOutput { listeners: Some(vec![listener]) }))
}

pub async fn describe(s: &Server, cx: &Call, req: DescribeListenersInput) -> Result<Bytes> {
    let st = s.view.read();
    let scope = &cx.scope;
    let arns = req.listener_arns.clone().unwrap_or_default();
    let chosen: Vec<&Doc<ListenerDoc>> = match (&req.load_balancer_arn, arns.is_empty()) {
        (Some(_), false) => {
            return Err(ElbError::Validation(
                "Listener ARNs and a load balancer ARN cannot be specified at the same time".into(),
            )
            .into())
        }
        (None, true) => {
            return Err(
                ElbError::Validation("You must specify either listener ARNs or a load balancer ARN".into()).into()
            )
        }
        (Some(lb), true) => {
            let d = lb_doc(&st, scope, lb)?;
            let name = d.value.lb.load_balancer_name.clone().unwrap_or_default();
            docs::<ListenerDoc>(&st, scope, Table::Listeners, &format!("{name}/")).collect()
        }
        (None, false) => arns.iter().map(|a| listener_doc(&st, scope, a)).collect::<Result<_, _>>()?,
    };
    let p = page(chosen, |d| d.key.clone(), req.marker.as_deref(), req.page_size)?;
    let listeners = p.items.iter().map(|d| d.value.listener.clone()).collect();
    Ok(json(&DescribeListenersOutput { listeners: Some(listeners), next_marker: p.next_token }))
}

pub async fn modify(s: &Server, cx: &Call, req: ModifyListenerInput) -> Result<Bytes> {
    let scope = &cx.scope;
    let listener = s
        .transact::<_, ApiError>(|st| {
            let d = listener_doc(st, scope, &req.listener_arn)?;
            let lb = lb_of_key(st, scope, elb::LISTENERS, &d.key).ok_or_else(ElbError::listener_not_found)?;
            let t = lb.value.lb.r#type.unwrap_or_default();
            let mut doc = d.value.clone();
            let l = &mut doc.listener;
            if let Some(p) = req.protocol {
                rules::check_listener_protocol(t, p)?;
                l.protocol = Some(p);
            }
            let protocol = l.protocol.unwrap_or_default();
            let tls = matches!(protocol, ProtocolEnum::Https | ProtocolEnum::Tls);
            if let Some(c) = &req.certificates {
                l.certificates = Some(
                    c.iter()
                        .take(1)
                        .map(|c| Certificate { certificate_arn: c.certificate_arn.clone(), is_default: None })
                        .collect(),
                );
            }
            if let Some(p) = &req.ssl_policy {
                l.ssl_policy = Some(p.clone());
            }
            if tls {
                l.ssl_policy.get_or_insert_with(|| rules::DEFAULT_SSL_POLICY.into());
            } else {
                l.ssl_policy = None;
                l.certificates = None;
            }
            if let Some(port) = req.port {
                let (lb_name, _) = listener_path(&d.key);
                if docs::<ListenerDoc>(st, scope, Table::Listeners, &format!("{lb_name}/"))
                    .any(|o| o.key != d.key && o.value.listener.port == Some(port))
                {
                    return Err(ElbError::Code(
                        ErrorCode::DuplicateListenerException,
                        "A listener already exists on this port for this load balancer".into(),
                    )
                    .into());
                }
                l.port = Some(port);
            }
            let cert = l.certificates.as_ref().and_then(|c| c.first()).and_then(|c| c.certificate_arn.clone());
            rules::check_listener(protocol, l.port.unwrap_or_default(), cert.as_deref(), l.ssl_policy.as_deref())?;
            let actions = match &req.default_actions {
                Some(a) => rules::check_actions(t, a)?,
                None => l.default_actions.clone().unwrap_or_default(),
            };
            l.default_actions = Some(actions.clone());
            let listener = l.clone();
            let mut txn = guard(Txn::new(), d).then(put(&d.key, &doc));
            if let Some(r) = default_rule(st, scope, &d.key) {
                let mut rule = r.value.clone();
                rule.rule.actions = Some(actions.clone());
                txn = guard(txn, r).then(put(&r.key, &rule));
            }
            let txn = check_forwards(st, scope, &lb.value, Some(protocol), &actions, txn)?;
            Ok((txn, listener))
        })
        .await?;
    Ok(json(&ModifyListenerOutput { listeners: Some(vec![listener]) }))
}

pub async fn delete(s: &Server, cx: &Call, req: DeleteListenerInput) -> Result<Bytes> {
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = listener_doc(st, scope, &req.listener_arn)?;
        let (lb, id) = listener_path(&d.key);
        let mut txn = guard(Txn::new(), d).then(Op::delete(d.key.clone()));
        for r in docs::<RuleDoc>(st, scope, Table::Rules, &format!("{lb}/{id}/")) {
            txn = guard(txn, r).then(Op::delete(r.key.clone()));
        }
        Ok((txn, ()))
    })
    .await?;
    Ok(json(&DeleteListenerOutput {}))
}

fn listener_attributes(d: &ListenerDoc) -> Vec<ListenerAttribute> {
    d.attributes.iter().map(|(k, v)| ListenerAttribute { key: Some(k.clone()), value: Some(v.clone()) }).collect()
}

pub async fn describe_attributes(s: &Server, cx: &Call, req: DescribeListenerAttributesInput) -> Result<Bytes> {
    let st = s.view.read();
    let d = listener_doc(&st, &cx.scope, &req.listener_arn)?;
    Ok(json(&DescribeListenerAttributesOutput { attributes: Some(listener_attributes(&d.value)) }))
}

pub async fn modify_attributes(s: &Server, cx: &Call, req: ModifyListenerAttributesInput) -> Result<Bytes> {
    let ch = changes(req.attributes.iter().map(|a| (&a.key, &a.value)));
    let attrs = s
        .transact::<_, ApiError>(|st| {
            let d = listener_doc(st, &cx.scope, &req.listener_arn)?;
            let mut doc = d.value.clone();
            doc.attributes = rules::modify_listener_attributes(
                d.value.listener.protocol.unwrap_or_default(),
                &d.value.attributes,
                &ch,
            )?;
            let out = listener_attributes(&doc);
            Ok((guard(Txn::new(), d).then(put(&d.key, &doc)), out))
        })
        .await?;
    Ok(json(&ModifyListenerAttributesOutput { attributes: Some(attrs) }))
}
