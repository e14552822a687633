//! CreateCluster, DescribeClusters, ListClusters, UpdateCluster, UpdateClusterSettings,
//! PutClusterCapacityProviders, DeleteCluster.

use bytes::Bytes;
use estiba_api::ecs::*;
use estiba_core::{arn, capacity, cluster, page, EcsError};
use estiba_store::{Compare, Txn};

use super::{active_cluster, json, put, put_tags, Ctx, Result};
use crate::view::State;
use crate::{keys, Server};

/// Whether a capacity provider can be associated: the Fargate ones or an ACTIVE one created
/// in this scope.
pub(super) fn provider_exists(st: &State, cx: &Ctx, name: &str) -> bool {
    capacity::is_fargate(name)
        || st
            .capacity_providers
            .get(&keys::capacity_provider(&cx.scope, name))
            .is_some_and(|d| capacity::is_live(&d.value))
}

fn full(st: &State, key: &str, c: &Cluster) -> Cluster {
    cluster::full(c, &st.counts(key), st.tags_of(key))
}

pub async fn create(s: &Server, cx: &Ctx, req: CreateClusterRequest) -> Result<Bytes> {
    let out = s
        .transact::<_, EcsError>(|st| {
            let mut c = cluster::create(&cx.scope, &req, |p| provider_exists(st, cx, p))?;
            let name = c.cluster_name.clone().unwrap();
            let key = keys::cluster(&cx.scope, &name);
            let mut txn = Txn::new();
            match st.clusters.get(&key) {
                // CreateCluster on an ACTIVE cluster returns it unchanged.
                Some(d) if d.value.status.as_deref() == Some(cluster::ACTIVE) => {
                    return Ok((txn, full(st, &key, &d.value)));
                }
                Some(d) => txn.compares.push(Compare::mod_revision(&key, d.rev)),
                None => txn.compares.push(Compare::absent(&key)),
            }
            if let Some(d) = &req.service_connect_defaults {
                c.service_connect_defaults =
                    crate::connect::cluster_defaults(st, &cx.scope, &d.namespace, cx.now, &mut txn)?;
            }
            let tags = req.tags.clone().unwrap_or_default();
            txn.ops.push(put(&key, &c));
            txn.ops.push(put_tags(&key, &tags));
            c.tags = Some(tags);
            Ok((txn, c))
        })
        .await?;
    Ok(json(&CreateClusterResponse { cluster: Some(out) }))
}

pub async fn describe(s: &Server, cx: &Ctx, req: DescribeClustersRequest) -> Result<Bytes> {
    let ids = req.clusters.unwrap_or_else(|| vec!["default".into()]);
    if ids.len() > 100 {
        return Err(EcsError::invalid("At most 100 clusters can be described at once."));
    }
    let include = req.include.unwrap_or_default();
    let st = s.view.read();
    let mut resp = DescribeClustersResponse { clusters: Some(vec![]), failures: Some(vec![]) };
    for id in &ids {
        let name = match arn::cluster_name(Some(id)) {
            Ok(n) => n,
            Err(_) => {
                resp.failures.as_mut().unwrap().push(super::missing(id.clone()));
                continue;
            }
        };
        let key = keys::cluster(&cx.scope, &name);
        match st.clusters.get(&key) {
            Some(d) => resp.clusters.as_mut().unwrap().push(cluster::describe(
                &d.value,
                &st.counts(&key),
                &include,
                st.tags_of(&key),
            )),
            None => resp.failures.as_mut().unwrap().push(super::missing(cx.scope.cluster_arn(&name))),
        }
    }
    Ok(json(&resp))
}

pub async fn list(s: &Server, cx: &Ctx, req: ListClustersRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 100, 100)?;
    let st = s.view.read();
    let prefix = format!("{}clusters/", keys::scope_prefix(&cx.scope));
    // Deleted (INACTIVE) clusters stay listed until housekeeping forgets them, as in ECS
    // ("deleted clusters might remain discoverable in your account for a period of time").
    let all = State::range(&st.clusters, &prefix);
    let p = page::paginate(all, |d| d.key.as_str(), req.next_token.as_deref(), limit, false)?;
    let arns = p.items.iter().filter_map(|d| d.value.cluster_arn.as_deref());
    Ok(super::list_json("clusterArns", arns, p.next_token.as_deref()))
}

/// Read-modify-write of one ACTIVE cluster.
async fn modify(
    s: &Server,
    cx: &Ctx,
    id: &str,
    mut f: impl FnMut(&State, &mut Cluster, &mut Txn) -> Result<()>,
) -> Result<Cluster> {
    s.transact::<_, EcsError>(|st| {
        let (name, d) = active_cluster(st, cx, Some(id))?;
        let key = keys::cluster(&cx.scope, &name);
        let mut c = d.value.clone();
        let mut txn = Txn::new().when(Compare::mod_revision(&key, d.rev));
        f(st, &mut c, &mut txn)?;
        txn.ops.push(put(&key, &c));
        Ok((txn, full(st, &key, &c)))
    })
    .await
}

pub async fn update(s: &Server, cx: &Ctx, req: UpdateClusterRequest) -> Result<Bytes> {
    let c = modify(s, cx, &req.cluster, |st, c, txn| {
        if let Some(settings) = &req.settings {
            cluster::apply_settings(c.settings.get_or_insert_with(Vec::new), settings)?;
        }
        if let Some(conf) = &req.configuration {
            c.configuration = Some(conf.clone());
        }
        if let Some(d) = &req.service_connect_defaults {
            c.service_connect_defaults = crate::connect::cluster_defaults(st, &cx.scope, &d.namespace, cx.now, txn)?;
        }
        Ok(())
    })
    .await?;
    Ok(json(&UpdateClusterResponse { cluster: Some(c) }))
}

pub async fn update_settings(s: &Server, cx: &Ctx, req: UpdateClusterSettingsRequest) -> Result<Bytes> {
    let c = modify(s, cx, &req.cluster, |_, c, _| {
        cluster::apply_settings(c.settings.get_or_insert_with(Vec::new), &req.settings)
    })
    .await?;
    Ok(json(&UpdateClusterSettingsResponse { cluster: Some(c) }))
}

pub async fn put_capacity_providers(s: &Server, cx: &Ctx, req: PutClusterCapacityProvidersRequest) -> Result<Bytes> {
    let c = modify(s, cx, &req.cluster, |st, c, _| {
        let name = c.cluster_name.clone().unwrap_or_default();
        let removed: Vec<&String> =
            c.capacity_providers.iter().flatten().filter(|p| !req.capacity_providers.contains(p)).collect();
        for p in removed {
            let in_use = State::range(&st.services, &keys::services_of(&cx.scope, &name)).any(|d| {
                estiba_core::service::status(&d.value) == estiba_core::service::ACTIVE
                    && d.value.capacity_provider_strategy.iter().flatten().any(|i| &i.capacity_provider == p)
            });
            if in_use {
                return Err(EcsError::new(
                    ErrorCode::ResourceInUseException,
                    format!("The capacity provider {p} cannot be removed: a service in the cluster uses it in its capacity provider strategy."),
                ));
            }
        }
        cluster::put_capacity_providers(
            c,
            req.capacity_providers.clone(),
            req.default_capacity_provider_strategy.clone(),
            |p| provider_exists(st, cx, p),
        )
    })
    .await?;
    Ok(json(&PutClusterCapacityProvidersResponse { cluster: Some(c) }))
}

pub async fn delete(s: &Server, cx: &Ctx, req: DeleteClusterRequest) -> Result<Bytes> {
    let c = s
        .transact::<_, EcsError>(|st| {
            let (name, d) = active_cluster(st, cx, Some(&req.cluster))?;
            let key = keys::cluster(&cx.scope, &name);
            let counts = st.counts(&key);
            if counts.registered_instances > 0 {
                return Err(EcsError::new(
                    ErrorCode::ClusterContainsContainerInstancesException,
                    "The Cluster cannot be deleted while Container Instances are active or draining.",
                ));
            }
            if counts.active_ec2_services
                + counts.active_fargate_services
                + counts.draining_ec2_services
                + counts.draining_fargate_services
                > 0
            {
                return Err(EcsError::new(
                    ErrorCode::ClusterContainsServicesException,
                    "The Cluster cannot be deleted while Services are active.",
                ));
            }
            let live_task = State::range(&st.tasks, &keys::tasks_of(&cx.scope, &name)).any(|t| !t.value.stopped());
            if live_task {
                return Err(EcsError::new(
                    ErrorCode::ClusterContainsTasksException,
                    "The Cluster cannot be deleted while Tasks are active.",
                ));
            }
            let mut c = d.value.clone();
            c.status = Some(cluster::INACTIVE.into());
            let txn = Txn::new().when(Compare::mod_revision(&key, d.rev)).then(put(&key, &c));
            Ok((txn, full(st, &key, &c)))
        })
        .await?;
    Ok(json(&DeleteClusterResponse { cluster: Some(c) }))
}
