//! CreateCapacityProvider, UpdateCapacityProvider, DeleteCapacityProvider,
//! DescribeCapacityProviders.

use bytes::Bytes;
use estiba_api::ecs::*;
use estiba_core::{arn, capacity, page, EcsError};
use estiba_store::{Compare, Txn};

use super::{json, put, put_tags, Ctx, Result};
use crate::view::State;
use crate::{keys, Server};

/// A provider name from a name or an ARN.
fn provider_name(id: &str) -> String {
    match arn::Arn::parse(id) {
        Some(a) if a.kind == "capacity-provider" => a.path.to_owned(),
        _ => id.to_owned(),
    }
}

pub async fn create(s: &Server, cx: &Ctx, req: CreateCapacityProviderRequest) -> Result<Bytes> {
    let out = s
        .transact::<_, EcsError>(|st| {
            if capacity::is_fargate(&req.name) {
                return Err(EcsError::invalid(
                    "The capacity provider name cannot start with 'aws', 'ecs', or 'fargate'.",
                ));
            }
            let mut cp = capacity::create(&cx.scope, &req)?;
            let key = keys::capacity_provider(&cx.scope, &req.name);
            let mut txn = Txn::new();
            match st.capacity_providers.get(&key) {
                Some(d) if d.value.status != Some(CapacityProviderStatus::Inactive) => {
                    return Err(EcsError::client(format!(
                        "A capacity provider named {} already exists. Specify a different name and try again.",
                        req.name
                    )));
                }
                Some(d) => txn.compares.push(Compare::mod_revision(&key, d.rev)),
                None => txn.compares.push(Compare::absent(&key)),
            }
            let tags = req.tags.clone().unwrap_or_default();
            cp.update_status = Some(CapacityProviderUpdateStatus::CreateComplete);
            txn.ops.push(put(&key, &cp));
            txn.ops.push(put_tags(&key, &tags));
            cp.tags = Some(tags);
            Ok((txn, cp))
        })
        .await?;
    Ok(json(&CreateCapacityProviderResponse { capacity_provider: Some(out) }))
}

pub async fn update(s: &Server, cx: &Ctx, req: UpdateCapacityProviderRequest) -> Result<Bytes> {
    let out = s
        .transact::<_, EcsError>(|st| {
            let name = provider_name(&req.name);
            if capacity::is_fargate(&name) {
                return Err(EcsError::invalid("The FARGATE and FARGATE_SPOT capacity providers cannot be updated."));
            }
            let key = keys::capacity_provider(&cx.scope, &name);
            let d =
                st.capacity_providers.get(&key).filter(|d| capacity::is_live(&d.value)).ok_or_else(|| {
                    EcsError::invalid(format!("The specified capacity provider {name} does not exist."))
                })?;
            let mut cp = d.value.clone();
            if let Some(u) = &req.auto_scaling_group_provider {
                let asg = cp.auto_scaling_group_provider.as_mut().ok_or_else(|| {
                    EcsError::invalid(
                        "autoScalingGroupProvider can only update a capacity provider that has an Auto Scaling group.",
                    )
                })?;
                capacity::update(asg, u);
            }
            cp.update_status = Some(CapacityProviderUpdateStatus::UpdateComplete);
            let txn = Txn::new().when(Compare::mod_revision(&key, d.rev)).then(put(&key, &cp));
            cp.tags = Some(st.tags_of(&key).unwrap_or_default().to_vec());
            Ok((txn, cp))
        })
        .await?;
    Ok(json(&UpdateCapacityProviderResponse { capacity_provider: Some(out) }))
}

pub async fn delete(s: &Server, cx: &Ctx, req: DeleteCapacityProviderRequest) -> Result<Bytes> {
    let out = s
        .transact::<_, EcsError>(|st| {
            let name = provider_name(&req.capacity_provider);
            if capacity::is_fargate(&name) {
                return Err(EcsError::invalid("The FARGATE and FARGATE_SPOT capacity providers cannot be deleted."));
            }
            let key = keys::capacity_provider(&cx.scope, &name);
            let d = st
                .capacity_providers
                .get(&key)
                .filter(|d| capacity::is_live(&d.value))
                .ok_or_else(|| EcsError::invalid(format!("The specified capacity provider {name} does not exist.")))?;
            let prefix = format!("{}clusters/", keys::scope_prefix(&cx.scope));
            let in_use = State::range(&st.clusters, &prefix).any(|c| {
                c.value.status.as_deref() == Some(estiba_core::cluster::ACTIVE) && c.value.capacity_providers.iter().flatten().any(|p| *p == name)
            });
            if in_use {
                return Err(EcsError::client(
                    "The specified capacity provider is in use and cannot be removed. Remove it from its clusters with PutClusterCapacityProviders first.",
                ));
            }
            // As in ECS: ACTIVE with DELETE_IN_PROGRESS now; housekeeping makes it INACTIVE.
            let mut cp = d.value.clone();
            cp.update_status = Some(CapacityProviderUpdateStatus::DeleteInProgress);
            let txn = Txn::new().when(Compare::mod_revision(&key, d.rev)).then(put(&key, &cp));
            Ok((txn, cp))
        })
        .await?;
    Ok(json(&DeleteCapacityProviderResponse { capacity_provider: Some(out) }))
}

pub async fn describe(s: &Server, cx: &Ctx, req: DescribeCapacityProvidersRequest) -> Result<Bytes> {
    let with_tags = req.include.as_ref().is_some_and(|i| i.contains(&CapacityProviderField::Tags));
    let st = s.view.read();
    let shown = |name: &str| -> Option<CapacityProvider> {
        if capacity::is_fargate(name) {
            return Some(capacity::builtin(&cx.scope, name));
        }
        let key = keys::capacity_provider(&cx.scope, name);
        st.capacity_providers.get(&key).map(|d| {
            let mut cp = d.value.clone();
            cp.tags = with_tags.then(|| st.tags_of(&key).unwrap_or_default().to_vec());
            cp
        })
    };
    let mut resp = DescribeCapacityProvidersResponse {
        capacity_providers: Some(vec![]),
        failures: Some(vec![]),
        next_token: None,
    };
    match &req.capacity_providers {
        Some(list) => {
            for id in list {
                let name = provider_name(id);
                match shown(&name) {
                    Some(cp) => resp.capacity_providers.as_mut().unwrap().push(cp),
                    None => resp.failures.as_mut().unwrap().push(super::missing(cx.scope.capacity_provider_arn(&name))),
                }
            }
        }
        None => {
            let limit = page::limit(req.max_results, 10, 10)?;
            let prefix = format!("{}capacity-providers/", keys::scope_prefix(&cx.scope));
            let mut names: Vec<String> = vec![capacity::FARGATE.into(), capacity::FARGATE_SPOT.into()];
            names.extend(
                State::range(&st.capacity_providers, &prefix)
                    .filter(|d| d.value.status == Some(CapacityProviderStatus::Active))
                    .filter_map(|d| d.value.name.clone()),
            );
            names.sort();
            let p = page::paginate(names, |n| n.clone(), req.next_token.as_deref(), limit, false)?;
            resp.capacity_providers = Some(p.items.iter().filter_map(|n| shown(n)).collect());
            resp.next_token = p.next_token;
        }
    }
    Ok(json(&resp))
}
