//! ECS managed daemons: RegisterDaemonTaskDefinition, DescribeDaemonTaskDefinition,
//! ListDaemonTaskDefinitions, DeleteDaemonTaskDefinition, CreateDaemon, UpdateDaemon,
//! DeleteDaemon, DescribeDaemon, ListDaemons, DescribeDaemonDeployments,
//! ListDaemonDeployments, DescribeDaemonRevisions. The rules are `estiba_core::daemon`'s;
//! the daemon controller (`crate::controller::daemons`) runs the tasks. Handlers here write
//! documents only, never tasks.

use bytes::Bytes;
use estiba_api::ecs::*;
use estiba_core::daemon::{self, DaemonDoc, DeploymentDoc, FamilyDoc, RevisionDoc, TaskDefDoc};
use estiba_core::{capacity, page, EcsError, Scope};
use estiba_store::{Compare, Txn};

use super::{active_cluster, cluster_for_write, json, put, put_tags, Ctx, Result};
use crate::view::{Doc, State, TableDef};
use crate::{keys, RandomIds, Server};

pub fn taskdefs_table() -> &'static TableDef {
    &super::TABLES[1]
}
pub fn families_table() -> &'static TableDef {
    &super::TABLES[2]
}
pub fn daemons_table() -> &'static TableDef {
    &super::TABLES[3]
}
pub fn revisions_table() -> &'static TableDef {
    &super::TABLES[4]
}
pub fn deployments_table() -> &'static TableDef {
    &super::TABLES[5]
}

pub fn daemon_not_found() -> EcsError {
    EcsError::new(ErrorCode::DaemonNotFoundException, "Daemon not found.")
}

fn daemon_not_active() -> EcsError {
    EcsError::new(ErrorCode::DaemonNotActiveException, "Daemon was not ACTIVE.")
}

fn taskdef_not_found() -> EcsError {
    EcsError::client("Unable to describe daemon task definition.")
}

/// A daemon task definition by `family`, `family:revision` or ARN; a bare family means its
/// latest ACTIVE revision.
fn find_taskdef<'a>(st: &'a State, scope: &Scope, reference: &str) -> Option<&'a Doc<TaskDefDoc>> {
    let (family, revision) = daemon::parse_taskdef_ref(scope, reference)?;
    match revision {
        Some(r) => st.doc::<TaskDefDoc>(taskdefs_table(), &daemon::taskdef_key(scope, &family, r)),
        None => st
            .docs::<TaskDefDoc>(taskdefs_table(), &daemon::key(scope, daemon::TASKDEFS, &format!("{family}/")))
            .rev()
            .find(|d| d.value.definition.status == Some(DaemonTaskDefinitionStatus::Active)),
    }
}

/// A daemon task definition new revisions may use.
fn usable_taskdef<'a>(st: &'a State, scope: &Scope, reference: &str) -> Result<&'a Doc<TaskDefDoc>> {
    match find_taskdef(st, scope, reference) {
        Some(d) if d.value.definition.status == Some(DaemonTaskDefinitionStatus::Active) => Ok(d),
        Some(_) => Err(EcsError::client(format!(
            "The daemon task definition {reference} is not ACTIVE. Register a new revision or use an ACTIVE one."
        ))),
        None => Err(EcsError::client(format!("The daemon task definition {reference} was not found."))),
    }
}

/// The daemon an ARN names: its key and document.
fn find_daemon<'a>(st: &'a State, cx: &Ctx, arn: &str) -> Result<&'a Doc<DaemonDoc>> {
    let Some((cluster, name, _)) = daemon::parse_member(&cx.scope, "daemon", arn) else {
        return Err(if arn.starts_with("arn:") {
            daemon_not_found()
        } else {
            EcsError::invalid(format!("Invalid daemon ARN: {arn}. Pass the daemon's full ARN."))
        });
    };
    st.doc::<DaemonDoc>(daemons_table(), &daemon::daemon_key(&cx.scope, cluster, name)).ok_or_else(daemon_not_found)
}

/// The providers a daemon may use in the cluster: Managed Instances ones, associated with it.
fn providers(st: &State, cx: &Ctx, cluster: &Cluster, given: &[String]) -> Result<Vec<String>> {
    let associated = cluster.capacity_providers.clone().unwrap_or_default();
    daemon::check_providers(given, &associated, |name| {
        st.capacity_providers
            .get(&keys::capacity_provider(&cx.scope, name))
            .filter(|d| capacity::is_live(&d.value))
            .and_then(|d| d.value.r#type)
    })
}

pub async fn register_taskdef(s: &Server, cx: &Ctx, req: RegisterDaemonTaskDefinitionRequest) -> Result<Bytes> {
    if let Some(tags) = &req.tags {
        estiba_core::tags::validate(tags)?;
    }
    let arn = s
        .transact::<_, EcsError>(|st| {
            let fkey = daemon::key(&cx.scope, daemon::FAMILIES, &req.family);
            let (last, compare) = match st.doc::<FamilyDoc>(families_table(), &fkey) {
                Some(d) => (d.value.last_revision, Compare::mod_revision(&fkey, d.rev)),
                None => (0, Compare::absent(&fkey)),
            };
            let revision = last + 1;
            let (td, runnable) = daemon::register_taskdef(&cx.scope, &req, revision, cx.now)?;
            let key = daemon::taskdef_key(&cx.scope, &req.family, revision);
            let run_key = keys::taskdef(&cx.scope, &daemon::runnable_family(&req.family), revision);
            let arn = td.daemon_task_definition_arn.clone().unwrap_or_default();
            let doc = TaskDefDoc { definition: td };
            let tagged = daemon::taskdef_tagged_key(&cx.scope, &req.family, revision);
            let txn = Txn::new()
                .when(compare)
                .when(Compare::absent(&run_key))
                .then(put(&fkey, &FamilyDoc { last_revision: revision }))
                .then(put(&key, &doc))
                .then(put(&run_key, &runnable))
                .then(put_tags(&tagged, req.tags.as_deref().unwrap_or_default()));
            Ok((txn, arn))
        })
        .await?;
    Ok(json(&RegisterDaemonTaskDefinitionResponse { daemon_task_definition_arn: Some(arn) }))
}

pub async fn describe_taskdef(s: &Server, cx: &Ctx, req: DescribeDaemonTaskDefinitionRequest) -> Result<Bytes> {
    let st = s.view.read();
    let d = find_taskdef(&st, &cx.scope, &req.daemon_task_definition).ok_or_else(taskdef_not_found)?;
    Ok(json(&DescribeDaemonTaskDefinitionResponse { daemon_task_definition: Some(d.value.definition.clone()) }))
}

pub async fn list_taskdefs(s: &Server, cx: &Ctx, req: ListDaemonTaskDefinitionsRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 100, 100)?;
    let desc = req.sort == Some(SortOrder::Desc);
    let want = req.status.unwrap_or(DaemonTaskDefinitionStatusFilter::Active);
    let st = s.view.read();
    let prefix = match &req.family {
        Some(f) => daemon::key(&cx.scope, daemon::TASKDEFS, &format!("{f}/")),
        None => format!(
            "{}{}",
            daemon::scope_prefix(&cx.scope, daemon::TASKDEFS),
            req.family_prefix.as_deref().unwrap_or("")
        ),
    };
    let mut items: Vec<(String, String, DaemonTaskDefinitionSummary)> = st
        .docs::<TaskDefDoc>(taskdefs_table(), &prefix)
        .filter(|d| match want {
            DaemonTaskDefinitionStatusFilter::All => true,
            DaemonTaskDefinitionStatusFilter::Active => {
                d.value.definition.status == Some(DaemonTaskDefinitionStatus::Active)
            }
            DaemonTaskDefinitionStatusFilter::DeleteInProgress => {
                d.value.definition.status == Some(DaemonTaskDefinitionStatus::DeleteInProgress)
            }
        })
        .map(|d| {
            let td = &d.value.definition;
            let family = td.family.clone().unwrap_or_default();
            let summary = DaemonTaskDefinitionSummary {
                arn: td.daemon_task_definition_arn.clone(),
                delete_requested_at: td.delete_requested_at,
                registered_at: td.registered_at,
                registered_by: td.registered_by.clone(),
                status: td.status,
            };
            (format!("{family}\t{:010}", td.revision), family, summary)
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if req.revision == Some(DaemonTaskDefinitionRevisionFilter::LastRegistered) {
        // The last revision of each family: the last item of each run of one family.
        let mut last: Vec<(String, String, DaemonTaskDefinitionSummary)> = Vec::new();
        for it in items {
            if last.last().is_some_and(|l| l.1 == it.1) {
                last.pop();
            }
            last.push(it);
        }
        items = last;
    }
    if desc {
        items.reverse();
    }
    let p = page::paginate(items, |(k, _, _)| k.clone(), req.next_token.as_deref(), limit, desc)?;
    Ok(json(&ListDaemonTaskDefinitionsResponse {
        daemon_task_definitions: Some(p.items.into_iter().map(|(_, _, s)| s).collect()),
        next_token: p.next_token,
    }))
}

pub async fn delete_taskdef(s: &Server, cx: &Ctx, req: DeleteDaemonTaskDefinitionRequest) -> Result<Bytes> {
    match daemon::parse_taskdef_ref(&cx.scope, &req.daemon_task_definition) {
        Some((_, Some(_))) => {}
        Some((_, None)) => {
            return Err(EcsError::client(
                "The daemon task definition revision must be specified: pass family:revision or the daemon task definition ARN.",
            ))
        }
        None => return Err(taskdef_not_found()),
    }
    let arn = s
        .transact::<_, EcsError>(|st| {
            let d = find_taskdef(st, &cx.scope, &req.daemon_task_definition).ok_or_else(taskdef_not_found)?;
            let arn = d.value.definition.daemon_task_definition_arn.clone();
            if d.value.definition.status != Some(DaemonTaskDefinitionStatus::Active) {
                return Ok((Txn::new(), arn));
            }
            let mut doc = d.value.clone();
            doc.definition.status = Some(DaemonTaskDefinitionStatus::DeleteInProgress);
            doc.definition.delete_requested_at = Some(cx.now);
            Ok((Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put(&d.key, &doc)), arn))
        })
        .await?;
    Ok(json(&DeleteDaemonTaskDefinitionResponse { daemon_task_definition_arn: arn }))
}

pub async fn create(s: &Server, cx: &Ctx, req: CreateDaemonRequest) -> Result<Bytes> {
    daemon::check_create(&req)?;
    let config = daemon::deployment_configuration(req.deployment_configuration.as_ref())?;
    let mut ids = RandomIds;
    let (d, dep) = s
        .transact::<_, EcsError>(|st| {
            let mut txn = Txn::new();
            let (cluster, c) = cluster_for_write(st, cx, req.cluster_arn.as_deref(), &mut txn)?;
            let key = daemon::daemon_key(&cx.scope, &cluster, &req.daemon_name);
            if let Some(existing) = st.doc::<DaemonDoc>(daemons_table(), &key) {
                let same = req.client_token.is_some() && existing.value.client_token == req.client_token;
                if same && existing.value.status == DaemonStatus::Active {
                    let dep =
                        daemon::deployment_arn(&cx.scope, &cluster, &req.daemon_name, &existing.value.deployment_id);
                    return Ok((Txn::new(), (existing.value.clone(), dep)));
                }
                return Err(EcsError::invalid(match existing.value.status {
                    DaemonStatus::Active => "Creation of daemon was not idempotent.".to_owned(),
                    DaemonStatus::DeleteInProgress => format!(
                        "The daemon {} is being deleted. Create it again once its deletion is complete.",
                        req.daemon_name
                    ),
                }));
            }
            let td = usable_taskdef(st, &cx.scope, &req.daemon_task_definition_arn)?;
            let providers = providers(st, cx, &c, &req.capacity_provider_arns)?;
            let mut d = DaemonDoc {
                name: req.daemon_name.clone(),
                cluster: cluster.clone(),
                arn: daemon::daemon_arn(&cx.scope, &cluster, &req.daemon_name),
                cluster_arn: cx.scope.cluster_arn(&cluster),
                status: DaemonStatus::Active,
                capacity_providers: providers,
                created_at: cx.now,
                updated_at: cx.now,
                client_token: req.client_token.clone(),
                ..Default::default()
            };
            let options = (req.enable_ecs_managed_tags, req.enable_execute_command, req.propagate_tags);
            let r = daemon::new_rollout(
                &cx.scope,
                &d,
                &td.value.definition,
                options,
                config.clone(),
                &[],
                &mut ids,
                cx.now,
            );
            d.revision_id = r.revision.id.clone();
            d.deployment_id = r.deployment.id.clone();
            let dep_arn = r.deployment.deployment.daemon_deployment_arn.clone().unwrap_or_default();
            txn.compares.push(Compare::mod_revision(&td.key, td.rev));
            txn.compares.push(Compare::absent(&key));
            txn.ops.push(put(&key, &d));
            let tagged = daemon::daemon_tagged_key(&cx.scope, &cluster, &req.daemon_name);
            txn.ops.push(put_tags(&tagged, req.tags.as_deref().unwrap_or_default()));
            write_rollout(&mut txn, &cx.scope, &d, &r);
            Ok((txn, (d, dep_arn)))
        })
        .await?;
    Ok(json(&CreateDaemonResponse {
        created_at: Some(d.created_at),
        daemon_arn: Some(d.arn),
        deployment_arn: Some(dep),
        status: Some(d.status),
    }))
}

fn write_rollout(txn: &mut Txn, scope: &Scope, d: &DaemonDoc, r: &daemon::Rollout) {
    let rkey = daemon::revision_key(scope, &d.cluster, &d.name, &r.revision.id);
    let dkey = daemon::deployment_key(scope, &d.cluster, &d.name, &r.deployment.id);
    txn.compares.push(Compare::absent(&rkey));
    txn.compares.push(Compare::absent(&dkey));
    txn.ops.push(put(rkey, &r.revision));
    txn.ops.push(put(dkey, &r.deployment));
}

/// Stops the daemon's latest deployment if it is still running (a newer one takes over).
fn supersede_latest(st: &State, cx: &Ctx, d: &DaemonDoc, reason: &str, txn: &mut Txn) {
    let key = daemon::deployment_key(&cx.scope, &d.cluster, &d.name, &d.deployment_id);
    if let Some(dep) = st.doc::<DeploymentDoc>(deployments_table(), &key) {
        let mut v = dep.value.clone();
        daemon::supersede(&mut v, reason, cx.now);
        if v != dep.value {
            txn.compares.push(Compare::mod_revision(&key, dep.rev));
            txn.ops.push(put(&key, &v));
        }
    }
}

pub async fn update(s: &Server, cx: &Ctx, req: UpdateDaemonRequest) -> Result<Bytes> {
    let config = daemon::deployment_configuration(req.deployment_configuration.as_ref())?;
    let mut ids = RandomIds;
    let (d, dep) = s
        .transact::<_, EcsError>(|st| {
            let doc = find_daemon(st, cx, &req.daemon_arn)?;
            if doc.value.status != DaemonStatus::Active {
                return Err(daemon_not_active());
            }
            let mut txn = Txn::new().when(Compare::mod_revision(&doc.key, doc.rev));
            let (_, c) = cluster_for_write(st, cx, Some(&doc.value.cluster), &mut txn)?;
            let td = usable_taskdef(st, &cx.scope, &req.daemon_task_definition_arn)?;
            let providers = providers(st, cx, &c, &req.capacity_provider_arns)?;
            let mut d = doc.value.clone();
            d.capacity_providers = providers;
            d.updated_at = cx.now;
            let options = (req.enable_ecs_managed_tags, req.enable_execute_command, req.propagate_tags);
            let source = [doc.value.revision_id.clone()];
            let r = daemon::new_rollout(
                &cx.scope,
                &d,
                &td.value.definition,
                options,
                config.clone(),
                &source,
                &mut ids,
                cx.now,
            );
            supersede_latest(
                st,
                cx,
                &doc.value,
                &format!("Superseded by daemon deployment {}.", r.deployment.id),
                &mut txn,
            );
            d.revision_id = r.revision.id.clone();
            d.deployment_id = r.deployment.id.clone();
            let dep_arn = r.deployment.deployment.daemon_deployment_arn.clone().unwrap_or_default();
            txn.compares.push(Compare::mod_revision(&td.key, td.rev));
            txn.ops.push(put(&doc.key, &d));
            write_rollout(&mut txn, &cx.scope, &d, &r);
            Ok((txn, (d, dep_arn)))
        })
        .await?;
    Ok(json(&UpdateDaemonResponse {
        created_at: Some(d.created_at),
        daemon_arn: Some(d.arn),
        deployment_arn: Some(dep),
        status: Some(d.status),
        updated_at: Some(d.updated_at),
    }))
}

pub async fn delete(s: &Server, cx: &Ctx, req: DeleteDaemonRequest) -> Result<Bytes> {
    let mut ids = RandomIds;
    let (d, dep) = s
        .transact::<_, EcsError>(|st| {
            let doc = find_daemon(st, cx, &req.daemon_arn)?;
            let mut d = doc.value.clone();
            if d.status == DaemonStatus::DeleteInProgress {
                let dep = daemon::deployment_arn(&cx.scope, &d.cluster, &d.name, &d.deployment_id);
                return Ok((Txn::new(), (d, dep)));
            }
            let mut txn = Txn::new().when(Compare::mod_revision(&doc.key, doc.rev));
            // The deletion is a deployment of its own: from the running revision to none.
            let id = estiba_core::Ids::hex32(&mut ids)[..16].to_owned();
            supersede_latest(st, cx, &d, &format!("Superseded by daemon deployment {id}."), &mut txn);
            let dep = DeploymentDoc {
                id: id.clone(),
                deployment: DaemonDeployment {
                    cluster_arn: Some(d.cluster_arn.clone()),
                    created_at: Some(cx.now),
                    daemon_deployment_arn: Some(daemon::deployment_arn(&cx.scope, &d.cluster, &d.name, &id)),
                    status: Some(DaemonDeploymentStatus::Pending),
                    status_reason: Some("Daemon deletion".into()),
                    source_daemon_revisions: Some(vec![DaemonDeploymentRevisionDetail {
                        arn: Some(daemon::revision_arn(&cx.scope, &d.cluster, &d.name, &d.revision_id)),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                target_revision_id: String::new(),
                source_revision_ids: vec![d.revision_id.clone()],
                ..Default::default()
            };
            d.status = DaemonStatus::DeleteInProgress;
            d.deployment_id = id.clone();
            d.updated_at = cx.now;
            let dkey = daemon::deployment_key(&cx.scope, &d.cluster, &d.name, &id);
            txn.compares.push(Compare::absent(&dkey));
            txn.ops.push(put(dkey, &dep));
            txn.ops.push(put(&doc.key, &d));
            let arn = dep.deployment.daemon_deployment_arn.clone().unwrap_or_default();
            Ok((txn, (d, arn)))
        })
        .await?;
    Ok(json(&DeleteDaemonResponse {
        created_at: Some(d.created_at),
        daemon_arn: Some(d.arn),
        deployment_arn: Some(dep),
        status: Some(d.status),
        updated_at: Some(d.updated_at),
    }))
}

/// The daemon's instances and tasks as the planner sees them (`estiba_core::daemon`). Task
/// "arns" are their store keys.
/// Whether service tasks should keep off the instance for now: it is new and a daemon of the
/// cluster has no task on it yet (`estiba_core::daemon::awaits_daemon`).
pub(crate) fn awaits_daemon(
    st: &State,
    scope: &Scope,
    cluster: &str,
    ci: &ContainerInstance,
    used: &estiba_core::placement::Usage,
    now: f64,
) -> bool {
    if ci.registered_at.is_none_or(|at| now - at > daemon::DAEMON_FIRST_SECONDS) {
        return false;
    }
    let daemons = st.docs::<DaemonDoc>(daemons_table(), &daemon::key(scope, daemon::DAEMONS, &format!("{cluster}/")));
    daemon::awaits_daemon(ci, daemons.map(|d| &d.value), |g| used.group_count(g) > 0, now)
}

pub(crate) fn snapshot<'a>(
    st: &'a State,
    scope: &Scope,
    d: &'a DaemonDoc,
) -> (Vec<daemon::Instance<'a>>, Vec<(daemon::DaemonTask<'a>, &'a Doc<crate::view::TaskFacts>)>) {
    let instances = State::range(&st.instances, &keys::instances_of(scope, &d.cluster))
        .filter(|i| estiba_core::instance::is_registered(&i.value))
        .filter_map(|i| {
            let arn = i.value.container_instance_arn.as_deref()?;
            let own = daemon::instance_provider(&i.value);
            let provider = if daemon::instance_matches(own, &d.capacity_providers) {
                own.and_then(|p| d.capacity_providers.iter().find(|x| *x == p)).or(d.capacity_providers.first())
            } else {
                None
            };
            Some(daemon::Instance {
                arn,
                active: estiba_core::instance::status(&i.value) == "ACTIVE",
                provider: provider.map(String::as_str),
            })
        })
        .collect();
    let group = daemon::task_group(&d.name);
    let tasks = State::range(&st.tasks, &keys::tasks_of(scope, &d.cluster))
        .filter(|t| t.value.group() == Some(group.as_str()))
        .map(|t| {
            let f = &t.value;
            let task = daemon::DaemonTask {
                arn: t.key.as_str(),
                instance: f.container_instance_arn(),
                revision: f.started_by.as_deref().and_then(daemon::revision_of_started_by),
                status: f.last_status,
                desired_stopped: f.desired_stopped(),
                started_at: t.rev as f64,
            };
            (task, &**t)
        })
        .collect();
    (instances, tasks)
}

fn provider_arn(scope: &Scope, name: &str) -> String {
    scope.capacity_provider_arn(name)
}

pub async fn describe(s: &Server, cx: &Ctx, req: DescribeDaemonRequest) -> Result<Bytes> {
    let st = s.view.read();
    let d = &find_daemon(&st, cx, &req.daemon_arn)?.value;
    let (instances, tasks) = snapshot(&st, &cx.scope, d);
    let tasks: Vec<daemon::DaemonTask> = tasks.into_iter().map(|(t, _)| t).collect();
    let counts = daemon::running_counts(&instances, &tasks);
    let mut revisions: Vec<String> = counts.keys().map(|(r, _)| r.clone()).collect();
    if d.status == DaemonStatus::Active {
        revisions.push(d.revision_id.clone());
    }
    revisions.sort();
    revisions.dedup();
    // The daemon's own revision first.
    revisions.sort_by_key(|r| *r != d.revision_id);
    let current = revisions
        .iter()
        .map(|r| {
            let per: Vec<DaemonCapacityProvider> = d
                .capacity_providers
                .iter()
                .map(|p| DaemonCapacityProvider {
                    arn: Some(provider_arn(&cx.scope, p)),
                    running_count: counts.get(&(r.clone(), p.clone())).copied().unwrap_or(0),
                })
                .collect();
            DaemonRevisionDetail {
                arn: Some(daemon::revision_arn(&cx.scope, &d.cluster, &d.name, r)),
                total_running_count: per.iter().map(|p| p.running_count).sum(),
                capacity_providers: Some(per),
            }
        })
        .collect();
    Ok(json(&DescribeDaemonResponse {
        daemon: Some(DaemonDetail {
            cluster_arn: Some(d.cluster_arn.clone()),
            created_at: Some(d.created_at),
            current_revisions: Some(current),
            daemon_arn: Some(d.arn.clone()),
            deployment_arn: Some(daemon::deployment_arn(&cx.scope, &d.cluster, &d.name, &d.deployment_id)),
            status: Some(d.status),
            updated_at: Some(d.updated_at),
        }),
    }))
}

pub async fn list(s: &Server, cx: &Ctx, req: ListDaemonsRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 100, 100)?;
    let st = s.view.read();
    let prefix = match &req.cluster_arn {
        Some(c) => {
            let (name, _) = active_cluster(&st, cx, Some(c))?;
            daemon::key(&cx.scope, daemon::DAEMONS, &format!("{name}/"))
        }
        None => daemon::scope_prefix(&cx.scope, daemon::DAEMONS),
    };
    let wanted: Vec<String> = req
        .capacity_provider_arns
        .iter()
        .flatten()
        .map(|p| p.rsplit_once("capacity-provider/").map_or(p.as_str(), |(_, n)| n).to_owned())
        .collect();
    let items = st
        .docs::<DaemonDoc>(daemons_table(), &prefix)
        .filter(|d| wanted.is_empty() || d.value.capacity_providers.iter().any(|p| wanted.contains(p)))
        .map(|d| {
            let summary = DaemonSummary {
                created_at: Some(d.value.created_at),
                daemon_arn: Some(d.value.arn.clone()),
                status: Some(d.value.status),
                updated_at: Some(d.value.updated_at),
            };
            (d.key.clone(), summary)
        });
    let p = page::paginate(items, |(k, _)| k.clone(), req.next_token.as_deref(), limit, false)?;
    Ok(json(&ListDaemonsResponse {
        daemon_summaries_list: Some(p.items.into_iter().map(|(_, s)| s).collect()),
        next_token: p.next_token,
    }))
}

fn check_count(n: usize, what: &str) -> Result<()> {
    if n == 0 || n > 20 {
        return Err(EcsError::invalid(format!("Specify between 1 and 20 {what}.")));
    }
    Ok(())
}

/// The documents a Describe call names by ARN (`kind`: the ARN's resource type), with a
/// `MISSING` failure for each ARN that names none; `key` makes a document's key from the
/// ARN's cluster, daemon name and id.
fn describe_members<D: 'static, T: Clone>(
    st: &crate::view::State,
    cx: &Ctx,
    arns: &[String],
    kind: &str,
    table: &'static crate::view::TableDef,
    key: impl Fn(&str, &str, &str) -> String,
    member: impl Fn(&D) -> &T,
) -> (Vec<T>, Vec<estiba_api::ecs::Failure>) {
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for a in arns {
        let doc = daemon::parse_member(&cx.scope, kind, a).and_then(|(c, n, id)| st.doc::<D>(table, &key(c, n, id?)));
        match doc {
            Some(d) => found.push(member(&d.value).clone()),
            None => failures.push(super::missing(a.clone())),
        }
    }
    (found, failures)
}

pub async fn describe_deployments(s: &Server, cx: &Ctx, req: DescribeDaemonDeploymentsRequest) -> Result<Bytes> {
    check_count(req.daemon_deployment_arns.len(), "daemon deployment ARNs")?;
    let st = s.view.read();
    let key = |c: &str, n: &str, id: &str| daemon::deployment_key(&cx.scope, c, n, id);
    let (found, failures) = describe_members(
        &st,
        cx,
        &req.daemon_deployment_arns,
        "daemon-deployment",
        deployments_table(),
        key,
        |d: &DeploymentDoc| &d.deployment,
    );
    Ok(json(&DescribeDaemonDeploymentsResponse { daemon_deployments: Some(found), failures: Some(failures) }))
}

pub async fn describe_revisions(s: &Server, cx: &Ctx, req: DescribeDaemonRevisionsRequest) -> Result<Bytes> {
    check_count(req.daemon_revision_arns.len(), "daemon revision ARNs")?;
    let st = s.view.read();
    let key = |c: &str, n: &str, id: &str| daemon::revision_key(&cx.scope, c, n, id);
    let (found, failures) = describe_members(
        &st,
        cx,
        &req.daemon_revision_arns,
        "daemon-revision",
        revisions_table(),
        key,
        |d: &RevisionDoc| &d.revision,
    );
    Ok(json(&DescribeDaemonRevisionsResponse { daemon_revisions: Some(found), failures: Some(failures) }))
}

pub async fn list_deployments(s: &Server, cx: &Ctx, req: ListDaemonDeploymentsRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 20, 100)?;
    let st = s.view.read();
    let Some((cluster, name, _)) = daemon::parse_member(&cx.scope, "daemon", &req.daemon_arn) else {
        return Err(daemon_not_found());
    };
    let prefix = daemon::key(&cx.scope, daemon::DEPLOYMENTS, &format!("{cluster}/{name}/"));
    let known = st.doc::<DaemonDoc>(daemons_table(), &daemon::daemon_key(&cx.scope, cluster, name)).is_some();
    let mut items: Vec<(String, DaemonDeploymentSummary)> = st
        .docs::<DeploymentDoc>(deployments_table(), &prefix)
        .filter(|d| req.status.as_ref().is_none_or(|w| w.is_empty() || w.contains(&d.value.status())))
        .filter(|d| {
            let at = d.value.deployment.created_at.unwrap_or(0.0);
            req.created_at.as_ref().is_none_or(|c| c.after.is_none_or(|a| at >= a) && c.before.is_none_or(|b| at <= b))
        })
        .map(|d| {
            let dep = &d.value.deployment;
            let summary = DaemonDeploymentSummary {
                cluster_arn: dep.cluster_arn.clone(),
                created_at: dep.created_at,
                daemon_arn: Some(daemon::daemon_arn(&cx.scope, cluster, name)),
                daemon_deployment_arn: dep.daemon_deployment_arn.clone(),
                finished_at: dep.finished_at,
                started_at: dep.started_at,
                status: dep.status,
                status_reason: dep.status_reason.clone(),
                stopped_at: dep.stopped_at,
                target_daemon_revision_arn: dep.target_daemon_revision.as_ref().and_then(|t| t.arn.clone()),
            };
            // Newest first, as ListServiceDeployments.
            (format!("{:020.6}\t{}", 1e12 - dep.created_at.unwrap_or(0.0), d.value.id), summary)
        })
        .collect();
    if items.is_empty() && !known {
        return Err(daemon_not_found());
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let p = page::paginate(items, |(k, _)| k.clone(), req.next_token.as_deref(), limit, false)?;
    Ok(json(&ListDaemonDeploymentsResponse {
        daemon_deployments: Some(p.items.into_iter().map(|(_, s)| s).collect()),
        next_token: p.next_token,
    }))
}
