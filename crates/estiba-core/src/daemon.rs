//! ECS managed daemons: daemon task definitions, daemons, their revisions and deployments,
//! and the planner that keeps exactly one daemon task on every container instance of a
//! daemon's capacity providers and rolls a new revision out instance by instance.
//!
//! The documents are stored under `ecs-daemons/<account>/<region>/<kind>/...` ([`key`]): the
//! wire shapes (`DaemonTaskDefinition`, `DaemonRevision`, `DaemonDeployment`) wrapped with what
//! the planner needs beside them. A daemon task definition also has a runnable form, an
//! ordinary `TaskDefinition` kept at the task definition key of the family
//! [`RUNNABLE_MARK`]`<family>` (a name no RegisterTaskDefinition can take), so nodes and
//! placement read it like any task definition while tasks show the daemon task definition's
//! ARN.
//!
//! **Invariant:** no I/O, no clock reads, no randomness (ids and time come in).

use estiba_api::ecs::{
    ContainerDefinition, CreateDaemonRequest, DaemonAlarmConfiguration, DaemonDeployment, DaemonDeploymentAlarms,
    DaemonDeploymentCapacityProvider, DaemonDeploymentConfiguration, DaemonDeploymentRevisionDetail,
    DaemonDeploymentRollbackMonitorsStatus as Monitors, DaemonDeploymentStatus, DaemonRevision, DaemonRollback,
    DaemonStatus, DaemonTaskDefinition, DaemonTaskDefinitionStatus, RegisterDaemonTaskDefinitionRequest,
    RegisterTaskDefinitionRequest, TaskDefinition, Volume,
};
use serde::{Deserialize, Serialize};

use crate::arn::Scope;
use crate::error::{EcsError, Result};
use crate::ids::{Ids, Now};
use crate::{bail, names, task};

/// The key prefix of every daemon document.
pub const PREFIX: &str = "ecs-daemons/";
/// Store kinds (`ecs-daemons/<account>/<region>/<kind>/...`).
pub const TASKDEFS: &str = "daemon-taskdefs";
pub const FAMILIES: &str = "daemon-families";
pub const DAEMONS: &str = "daemons";
pub const REVISIONS: &str = "daemon-revisions";
pub const DEPLOYMENTS: &str = "daemon-deployments";

/// The family prefix of a daemon task definition's runnable form (`~daemon~<family>`).
pub const RUNNABLE_MARK: &str = "~daemon~";

/// ECS's default share of instances replaced at once.
pub const DEFAULT_DRAIN_PERCENT: f64 = 25.0;
/// The task group of a daemon's tasks (`daemon:<name>`, as services' are `service:<name>`).
pub fn task_group(daemon: &str) -> String {
    format!("daemon:{daemon}")
}
/// The `startedBy` of a daemon's tasks: the revision they run (`ecs-daemon/<revision id>`).
pub fn started_by(revision_id: &str) -> String {
    format!("ecs-daemon/{revision_id}")
}
pub fn revision_of_started_by(s: &str) -> Option<&str> {
    s.strip_prefix("ecs-daemon/")
}

pub fn key(scope: &Scope, kind: &str, rest: &str) -> String {
    format!("{PREFIX}{}/{}/{kind}/{rest}", scope.account, scope.region)
}
pub fn scope_prefix(scope: &Scope, kind: &str) -> String {
    format!("{PREFIX}{}/{}/{kind}/", scope.account, scope.region)
}
pub fn taskdef_key(scope: &Scope, family: &str, revision: i32) -> String {
    key(scope, TASKDEFS, &format!("{family}/{revision:010}"))
}
pub fn daemon_key(scope: &Scope, cluster: &str, name: &str) -> String {
    key(scope, DAEMONS, &format!("{cluster}/{name}"))
}
pub fn revision_key(scope: &Scope, cluster: &str, name: &str, id: &str) -> String {
    key(scope, REVISIONS, &format!("{cluster}/{name}/{id}"))
}
pub fn deployment_key(scope: &Scope, cluster: &str, name: &str, id: &str) -> String {
    key(scope, DEPLOYMENTS, &format!("{cluster}/{name}/{id}"))
}

/// The resource key a daemon's or daemon task definition's tags hang from
/// (`keys::tags_of` of it: `ecs/<account>/<region>/tags/<kind>/<rest>`): their tags live in
/// ECS's tag table like every ECS resource's; no document is stored at the key itself.
pub fn tagged_key(scope: &Scope, kind: &str, rest: &str) -> String {
    format!("ecs/{}/{}/{kind}/{rest}", scope.account, scope.region)
}
pub fn daemon_tagged_key(scope: &Scope, cluster: &str, name: &str) -> String {
    tagged_key(scope, DAEMONS, &format!("{cluster}/{name}"))
}
pub fn taskdef_tagged_key(scope: &Scope, family: &str, revision: i32) -> String {
    tagged_key(scope, TASKDEFS, &format!("{family}/{revision:010}"))
}

fn arn(scope: &Scope, resource: &str) -> String {
    format!("arn:aws:ecs:{}:{}:{resource}", scope.region, scope.account)
}
pub fn taskdef_arn(scope: &Scope, family: &str, revision: i32) -> String {
    arn(scope, &format!("daemon-task-definition/{family}:{revision}"))
}
pub fn daemon_arn(scope: &Scope, cluster: &str, name: &str) -> String {
    arn(scope, &format!("daemon/{cluster}/{name}"))
}
pub fn revision_arn(scope: &Scope, cluster: &str, name: &str, id: &str) -> String {
    arn(scope, &format!("daemon-revision/{cluster}/{name}/{id}"))
}
pub fn deployment_arn(scope: &Scope, cluster: &str, name: &str, id: &str) -> String {
    arn(scope, &format!("daemon-deployment/{cluster}/{name}/{id}"))
}

/// A daemon, revision or deployment ARN in `scope`: (cluster, daemon name, id, if any).
pub fn parse_member<'a>(scope: &Scope, kind: &str, s: &'a str) -> Option<(&'a str, &'a str, Option<&'a str>)> {
    let a = crate::arn::Arn::parse(s)?;
    if a.kind != kind || !a.in_scope(scope) {
        return None;
    }
    let mut p = a.path.split('/');
    let (cluster, name, id) = (p.next()?, p.next()?, p.next());
    if p.next().is_some() || cluster.is_empty() || name.is_empty() || (kind != "daemon") != id.is_some() {
        return None;
    }
    Some((cluster, name, id))
}

/// `family`, `family:revision` or a daemon task definition ARN in `scope`.
pub fn parse_taskdef_ref(scope: &Scope, s: &str) -> Option<(String, Option<i32>)> {
    let body = if s.starts_with("arn:") {
        let a = crate::arn::Arn::parse(s)?;
        if a.kind != "daemon-task-definition" || !a.in_scope(scope) {
            return None;
        }
        a.path
    } else {
        s
    };
    let (family, revision) = match body.rsplit_once(':') {
        Some((f, r)) => (f, Some(r.parse::<i32>().ok().filter(|&r| r > 0)?)),
        None => (body, None),
    };
    names::valid_name(family).then(|| (family.to_owned(), revision))
}

/// The last revision number a daemon task definition family handed out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyDoc {
    pub last_revision: i32,
}

/// A registered daemon task definition (its tags: [`taskdef_tagged_key`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefDoc {
    pub definition: DaemonTaskDefinition,
}

/// A daemon: its identity, configuration and the revision its tasks should run (its tags:
/// [`daemon_tagged_key`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonDoc {
    pub name: String,
    pub cluster: String,
    pub arn: String,
    pub cluster_arn: String,
    pub status: DaemonStatus,
    /// Capacity provider names.
    pub capacity_providers: Vec<String>,
    /// The revision every instance should run (the latest deployment's target, or its
    /// rollback's).
    pub revision_id: String,
    /// The latest deployment.
    pub deployment_id: String,
    pub created_at: f64,
    pub updated_at: f64,
    #[serde(default)]
    pub client_token: Option<String>,
}

/// A daemon revision: the wire shape and the capacity providers (names) it was made for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionDoc {
    pub id: String,
    pub revision: DaemonRevision,
    pub capacity_providers: Vec<String>,
}

/// A daemon deployment: the wire shape and the rollout's bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentDoc {
    pub id: String,
    pub deployment: DaemonDeployment,
    pub target_revision_id: String,
    #[serde(default)]
    pub source_revision_ids: Vec<String>,
    /// A replacement step was started and has not finished yet.
    #[serde(default)]
    pub step_open: bool,
    /// No new step (nor the deployment's success) before this time: the bake time after a step.
    #[serde(default)]
    pub bake_until: Option<f64>,
}

impl DeploymentDoc {
    pub fn status(&self) -> DaemonDeploymentStatus {
        self.deployment.status.unwrap_or_default()
    }

    pub fn is_finished(&self) -> bool {
        use DaemonDeploymentStatus::*;
        matches!(self.status(), Successful | Stopped | RollbackSuccessful | RollbackFailed)
    }
}

/// RegisterDaemonTaskDefinition: the daemon task definition and its runnable form (host
/// networking, EC2 compatibility), checked with RegisterTaskDefinition's rules and messages.
pub fn register_taskdef(
    scope: &Scope,
    req: &RegisterDaemonTaskDefinitionRequest,
    revision: i32,
    now: Now,
) -> Result<(DaemonTaskDefinition, TaskDefinition)> {
    if req.container_definitions.is_empty() {
        bail!(client, "Container list cannot be empty.");
    }
    let containers: Vec<ContainerDefinition> = convert(&req.container_definitions)?;
    let volumes: Option<Vec<Volume>> = req.volumes.as_ref().map(convert).transpose()?;
    let treq = RegisterTaskDefinitionRequest {
        family: req.family.clone(),
        container_definitions: containers,
        cpu: req.cpu.clone(),
        memory: req.memory.clone(),
        execution_role_arn: req.execution_role_arn.clone(),
        task_role_arn: req.task_role_arn.clone(),
        volumes,
        network_mode: Some(estiba_api::ecs::NetworkMode::Host),
        requires_compatibilities: Some(vec![estiba_api::ecs::Compatibility::Ec2]),
        ..Default::default()
    };
    let mut runnable = crate::taskdef::register(scope, &treq, revision, now)?;
    let arn = taskdef_arn(scope, &req.family, revision);
    runnable.task_definition_arn = Some(arn.clone());
    let td = DaemonTaskDefinition {
        container_definitions: Some(req.container_definitions.clone()),
        cpu: req.cpu.clone(),
        memory: req.memory.clone(),
        daemon_task_definition_arn: Some(arn),
        execution_role_arn: req.execution_role_arn.clone(),
        task_role_arn: req.task_role_arn.clone(),
        family: Some(req.family.clone()),
        registered_at: Some(now),
        registered_by: Some(format!("arn:aws:iam::{}:root", scope.account)),
        revision,
        status: Some(DaemonTaskDefinitionStatus::Active),
        volumes: req.volumes.clone(),
        delete_requested_at: None,
    };
    Ok((td, runnable))
}

/// Daemon container definitions and volumes are subsets of the task definition's shapes.
fn convert<A: Serialize, B: serde::de::DeserializeOwned>(a: &A) -> Result<B> {
    serde_json::to_value(a)
        .and_then(serde_json::from_value)
        .map_err(|e| EcsError::client(format!("The daemon task definition is not valid: {e}")))
}

/// The family of a daemon task definition's runnable form.
pub fn runnable_family(family: &str) -> String {
    format!("{RUNNABLE_MARK}{family}")
}

/// The deployment configuration with ECS's defaults (drainPercent 25, bake time 0, alarms
/// off), checked.
pub fn deployment_configuration(c: Option<&DaemonDeploymentConfiguration>) -> Result<DaemonDeploymentConfiguration> {
    let mut c = c.cloned().unwrap_or_default();
    let drain = c.drain_percent.unwrap_or(DEFAULT_DRAIN_PERCENT);
    if !(0.0..=100.0).contains(&drain) || drain.is_nan() {
        bail!(invalid, "drainPercent must be between 0.0 and 100.0, got {drain}.");
    }
    c.drain_percent = Some(drain);
    if !(0..=1440).contains(&c.bake_time_in_minutes) {
        bail!(invalid, "bakeTimeInMinutes must be between 0 and 1440, got {}.", c.bake_time_in_minutes);
    }
    if let Some(a) = &c.alarms {
        if a.enable && a.alarm_names.as_ref().is_none_or(|n| n.is_empty()) {
            bail!(invalid, "At least one alarm name is required when alarms are enabled.");
        }
    }
    Ok(c)
}

/// CreateDaemon's checks of its own members (the caller resolves the cluster, the task
/// definition and the providers).
pub fn check_create(req: &CreateDaemonRequest) -> Result<()> {
    if !names::valid_name(&req.daemon_name) {
        bail!(
            invalid,
            "Daemon name '{}' is not valid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
            names::shown(&req.daemon_name)
        );
    }
    if let Some(tags) = &req.tags {
        crate::tags::validate(tags)?;
    }
    Ok(())
}

/// Checks the capacity providers a daemon names: at least one, each a Managed Instances
/// provider associated with the cluster. `kind` answers a provider's type (None: unknown).
pub fn check_providers(
    names_given: &[String],
    associated: &[String],
    kind: impl Fn(&str) -> Option<estiba_api::ecs::CapacityProviderType>,
) -> Result<Vec<String>> {
    if names_given.is_empty() {
        bail!(invalid, "capacityProviderArns must name at least one capacity provider.");
    }
    let mut out: Vec<String> = Vec::new();
    for given in names_given {
        let name = given.rsplit_once("capacity-provider/").map_or(given.as_str(), |(_, n)| n).to_owned();
        match kind(&name) {
            None => bail!(invalid, "The specified capacity provider {given} does not exist."),
            Some(estiba_api::ecs::CapacityProviderType::ManagedInstances) => {}
            Some(_) => bail!(
                invalid,
                "The capacity provider {name} is not a Managed Instances capacity provider. ECS Managed Daemons is only supported for Amazon ECS Managed Instances capacity providers."
            ),
        }
        if !associated.contains(&name) {
            bail!(invalid, "The capacity provider {name} is not associated with the cluster.");
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// The custom attribute that names the capacity provider of a container instance registered
/// without one (set with PutAttributes, or an agent's `--attribute`).
pub const PROVIDER_ATTRIBUTE: &str = "estiba.capacity-provider";

/// The capacity provider a container instance names: its `capacityProviderName`, else its
/// [`PROVIDER_ATTRIBUTE`].
pub fn instance_provider(ci: &estiba_api::ecs::ContainerInstance) -> Option<&str> {
    ci.capacity_provider_name.as_deref().or_else(|| {
        ci.attributes.iter().flatten().find(|a| a.name == PROVIDER_ATTRIBUTE).and_then(|a| a.value.as_deref())
    })
}

/// Whether a container instance is capacity of a daemon with `providers`: an instance that
/// names its provider ([`instance_provider`]) belongs to that one only; one that names none
/// (estiba's nodes are not launched by a provider) is capacity of every Managed Instances
/// provider associated with its cluster, and so of every daemon of the cluster.
pub fn instance_matches(instance_provider: Option<&str>, providers: &[String]) -> bool {
    match instance_provider {
        Some(p) => providers.iter().any(|x| x == p),
        None => true,
    }
}

/// How long after it registers an instance keeps service tasks off while a daemon's task is
/// not on it yet: ECS starts daemon tasks before other tasks on a new instance. Bounded, so a
/// daemon task that cannot be placed never keeps an instance out of use.
pub const DAEMON_FIRST_SECONDS: f64 = 10.0;

/// Whether service tasks should wait before taking `ci`: it registered less than
/// [`DAEMON_FIRST_SECONDS`] ago and one of the ACTIVE `daemons` of its cluster whose capacity
/// it is has no task on it yet (`has_task`: the instance runs a task of that daemon's group).
pub fn awaits_daemon<'a>(
    ci: &estiba_api::ecs::ContainerInstance,
    daemons: impl IntoIterator<Item = &'a DaemonDoc>,
    has_task: impl Fn(&str) -> bool,
    now: Now,
) -> bool {
    if ci.registered_at.is_none_or(|at| now - at > DAEMON_FIRST_SECONDS) {
        return false;
    }
    daemons.into_iter().any(|d| {
        d.status == DaemonStatus::Active
            && instance_matches(instance_provider(ci), &d.capacity_providers)
            && !has_task(&task_group(&d.name))
    })
}

/// A new revision of a daemon and the deployment that rolls it out.
pub struct Rollout {
    pub revision: RevisionDoc,
    pub deployment: DeploymentDoc,
}

/// The revision and deployment CreateDaemon and UpdateDaemon make. `source`: the revisions
/// the daemon runs now (none for a new daemon).
#[allow(clippy::too_many_arguments)]
pub fn new_rollout(
    scope: &Scope,
    d: &DaemonDoc,
    taskdef: &DaemonTaskDefinition,
    (ecs_managed_tags, execute_command, propagate): (bool, bool, Option<estiba_api::ecs::DaemonPropagateTags>),
    config: DaemonDeploymentConfiguration,
    source: &[String],
    ids: &mut dyn Ids,
    now: Now,
) -> Rollout {
    let revision_id = ids.deployment_number().to_string();
    let deployment_id = ids.hex32()[..16].to_owned();
    let images = taskdef
        .container_definitions
        .iter()
        .flatten()
        .map(|c| estiba_api::ecs::DaemonContainerImage {
            container_name: c.name.clone(),
            image: Some(c.image.clone()),
            image_digest: None,
        })
        .collect();
    let revision = DaemonRevision {
        cluster_arn: Some(d.cluster_arn.clone()),
        container_images: Some(images),
        created_at: Some(now),
        daemon_arn: Some(d.arn.clone()),
        daemon_revision_arn: Some(revision_arn(scope, &d.cluster, &d.name, &revision_id)),
        daemon_task_definition_arn: taskdef.daemon_task_definition_arn.clone(),
        enable_ecs_managed_tags: Some(ecs_managed_tags),
        enable_execute_command: Some(execute_command),
        propagate_tags: Some(propagate.unwrap_or(estiba_api::ecs::DaemonPropagateTags::None)),
    };
    let alarms = match &config.alarms {
        Some(DaemonAlarmConfiguration { enable: true, alarm_names }) => DaemonDeploymentAlarms {
            alarm_names: alarm_names.clone(),
            status: Some(Monitors::Monitoring),
            triggered_alarm_names: Some(vec![]),
        },
        _ => DaemonDeploymentAlarms { status: Some(Monitors::Disabled), ..Default::default() },
    };
    let deployment = DaemonDeployment {
        alarms: Some(alarms),
        circuit_breaker: None,
        cluster_arn: Some(d.cluster_arn.clone()),
        created_at: Some(now),
        daemon_deployment_arn: Some(deployment_arn(scope, &d.cluster, &d.name, &deployment_id)),
        deployment_configuration: Some(config),
        status: Some(DaemonDeploymentStatus::Pending),
        target_daemon_revision: Some(DaemonDeploymentRevisionDetail {
            arn: revision.daemon_revision_arn.clone(),
            ..Default::default()
        }),
        source_daemon_revisions: Some(
            source
                .iter()
                .map(|id| DaemonDeploymentRevisionDetail {
                    arn: Some(revision_arn(scope, &d.cluster, &d.name, id)),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    };
    Rollout {
        revision: RevisionDoc { id: revision_id.clone(), revision, capacity_providers: d.capacity_providers.clone() },
        deployment: DeploymentDoc {
            id: deployment_id,
            deployment,
            target_revision_id: revision_id,
            source_revision_ids: source.to_vec(),
            step_open: false,
            bake_until: None,
        },
    }
}

/// A deployment superseded by a newer one (UpdateDaemon, DeleteDaemon) stops where it is.
pub fn supersede(dep: &mut DeploymentDoc, reason: &str, now: Now) {
    if dep.is_finished() {
        return;
    }
    dep.deployment.status = Some(DaemonDeploymentStatus::Stopped);
    dep.deployment.status_reason = Some(reason.into());
    dep.deployment.stopped_at = Some(now);
    dep.deployment.finished_at = Some(now);
    if let Some(a) = &mut dep.deployment.alarms {
        if a.status == Some(Monitors::Monitoring) {
            a.status = Some(Monitors::MonitoringComplete);
        }
    }
}

/// A container instance of the daemon's cluster, as the planner sees it.
#[derive(Clone, Debug)]
pub struct Instance<'a> {
    pub arn: &'a str,
    /// ACTIVE (DRAINING instances keep their daemon task and get no new one).
    pub active: bool,
    /// Whether it is capacity of the daemon ([`instance_matches`]) and which provider it
    /// counts under.
    pub provider: Option<&'a str>,
}

/// A task of the daemon.
#[derive(Clone, Debug)]
pub struct DaemonTask<'a> {
    pub arn: &'a str,
    pub instance: Option<&'a str>,
    pub revision: Option<&'a str>,
    pub status: task::Status,
    pub desired_stopped: bool,
    pub started_at: f64,
}

impl DaemonTask<'_> {
    fn live(&self) -> bool {
        self.status != task::Status::Stopped && !self.desired_stopped
    }
}

/// What one pass over a daemon does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Instances that get a new task of the daemon's revision.
    pub start: Vec<String>,
    /// Tasks to stop, with the reason.
    pub stop: Vec<(String, String)>,
    /// The latest deployment as it stands after this pass (when it changed).
    pub deployment: Option<DeploymentDoc>,
    /// The daemon's revision after this pass (a rollback changes it).
    pub revision_id: Option<String>,
    /// A deleted daemon whose tasks have all stopped: remove it.
    pub gone: bool,
    /// When time alone makes the next step (bake time).
    pub retry_at: Option<f64>,
}

/// The planner's view of alarms: whether the named alarm is in ALARM.
pub type AlarmProbe<'a> = &'a dyn Fn(&str) -> bool;

/// One pass over a daemon: exactly one task of its revision on each of its ACTIVE instances,
/// older revisions replaced at most `ceil(drainPercent × instances)` instances at a time (one
/// at the least), with the bake time after each step; the deployment's status and counts as
/// ECS shows them; a triggered alarm rolls back to the source revision.
pub fn plan(
    d: &DaemonDoc,
    dep: Option<&DeploymentDoc>,
    instances: &[Instance],
    tasks: &[DaemonTask],
    in_alarm: AlarmProbe,
    now: Now,
) -> Plan {
    let mut out = Plan::default();
    let live: Vec<&DaemonTask> = tasks.iter().filter(|t| t.live()).collect();
    if d.status == DaemonStatus::DeleteInProgress {
        for t in &live {
            out.stop.push((t.arn.to_owned(), "Daemon deleted".into()));
        }
        out.gone = live.is_empty() && tasks.iter().all(|t| t.status == task::Status::Stopped);
        if let Some(before) = dep.filter(|dep| !dep.is_finished()) {
            let mut dep = before.clone();
            if out.gone {
                dep.deployment.status = Some(DaemonDeploymentStatus::Successful);
                dep.deployment.finished_at = Some(now);
            } else if dep.status() == DaemonDeploymentStatus::Pending {
                dep.deployment.status = Some(DaemonDeploymentStatus::InProgress);
                dep.deployment.started_at = Some(now);
            }
            if &dep != before {
                out.deployment = Some(dep);
            }
        }
        return out;
    }
    let mut target = d.revision_id.as_str();
    let mut dep = dep.cloned();
    // Alarms: a triggered alarm during the rollout rolls back to the source revision.
    if let Some(dp) = dep
        .as_mut()
        .filter(|dp| matches!(dp.status(), DaemonDeploymentStatus::Pending | DaemonDeploymentStatus::InProgress))
    {
        let names: Vec<String> = dp
            .deployment
            .alarms
            .as_ref()
            .filter(|a| a.status == Some(Monitors::Monitoring))
            .and_then(|a| a.alarm_names.clone())
            .unwrap_or_default();
        let fired: Vec<String> = names.into_iter().filter(|n| in_alarm(n)).collect();
        if !fired.is_empty() {
            if let Some(a) = &mut dp.deployment.alarms {
                a.status = Some(Monitors::Triggered);
                a.triggered_alarm_names = Some(fired.clone());
            }
            match dp.source_revision_ids.first().cloned() {
                Some(src) => {
                    let reason = format!("Daemon deployment rolled back: alarm {} is in ALARM.", fired.join(", "));
                    dp.deployment.status = Some(DaemonDeploymentStatus::RollbackInProgress);
                    dp.deployment.status_reason = Some(reason.clone());
                    dp.deployment.rollback = Some(DaemonRollback {
                        reason: Some(reason),
                        rollback_capacity_providers: Some(d.capacity_providers.clone()),
                        rollback_target_daemon_revision_arn: dp
                            .deployment
                            .source_daemon_revisions
                            .as_ref()
                            .and_then(|s| s.first())
                            .and_then(|s| s.arn.clone()),
                        started_at: Some(now),
                    });
                    dp.step_open = false;
                    dp.bake_until = None;
                    out.revision_id = Some(src);
                }
                None => {
                    let reason = format!("Daemon deployment failed: alarm {} is in ALARM.", fired.join(", "));
                    dp.deployment.status = Some(DaemonDeploymentStatus::RollbackFailed);
                    dp.deployment.status_reason = Some(reason);
                    dp.deployment.finished_at = Some(now);
                }
            }
        }
    }
    if let Some(r) = &out.revision_id {
        target = r.as_str();
    }

    // Which instance holds which live task; tasks on instances that are no longer the
    // daemon's stop, and so do duplicates (the newest task of the target revision stays).
    let matching: Vec<&Instance> = instances.iter().filter(|i| i.provider.is_some()).collect();
    let mut held: std::collections::HashMap<&str, &DaemonTask> = std::collections::HashMap::new();
    let mut ordered = live.clone();
    ordered.sort_by(|a, b| {
        let rank = |t: &DaemonTask| (t.revision == Some(target), t.status == task::Status::Running, t.started_at);
        rank(b).partial_cmp(&rank(a)).unwrap_or(std::cmp::Ordering::Equal)
    });
    for t in ordered {
        let here = t.instance.and_then(|a| matching.iter().find(|i| i.arn == a));
        match here {
            None => out.stop.push((t.arn.to_owned(), "Container instance is not capacity of the daemon".into())),
            Some(i) if held.contains_key(i.arn) => {
                out.stop.push((t.arn.to_owned(), "Only one task of a daemon runs on an instance".into()))
            }
            Some(i) => {
                held.insert(i.arn, t);
            }
        }
    }
    // Instances whose daemon task is being replaced: an older task stopping, or no task yet
    // on an instance that had one (both count against drainPercent), or a new task starting.
    let stopping_old: std::collections::HashSet<&str> = tasks
        .iter()
        .filter(|t| t.desired_stopped && t.status != task::Status::Stopped && t.revision != Some(target))
        .filter_map(|t| t.instance)
        .collect();
    let stopping: std::collections::HashSet<&str> = tasks
        .iter()
        .filter(|t| t.desired_stopped && t.status != task::Status::Stopped)
        .filter_map(|t| t.instance)
        .collect();
    let mut in_flight = 0usize;
    let mut done = 0usize;
    let mut candidates: Vec<&DaemonTask> = Vec::new();
    for i in &matching {
        match held.get(i.arn) {
            // A task still stopping holds the instance (its ports, its resources) until it
            // has stopped.
            None if i.active => {
                if !stopping.contains(i.arn) {
                    out.start.push(i.arn.to_owned());
                }
                in_flight += 1;
            }
            None => {}
            Some(t) if t.revision == Some(target) => {
                if t.status == task::Status::Running {
                    done += 1;
                } else {
                    in_flight += 1;
                }
            }
            Some(t) if i.active => {
                if stopping_old.contains(i.arn) {
                    in_flight += 1;
                }
                candidates.push(t);
            }
            Some(_) => {}
        }
    }
    let Some(mut dp) = dep else {
        return out;
    };
    let before = dp.clone();
    let rolling_back = dp.status() == DaemonDeploymentStatus::RollbackInProgress;
    if dp.is_finished() {
        // Finished deployments keep replacing what stops, without limits.
        for t in candidates {
            out.stop.push((t.arn.to_owned(), "Task replaced by the daemon's current revision".into()));
        }
        return out;
    }
    if dp.status() == DaemonDeploymentStatus::Pending {
        dp.deployment.status = Some(DaemonDeploymentStatus::InProgress);
        dp.deployment.started_at = Some(now);
    }
    let config = dp.deployment.deployment_configuration.clone().unwrap_or_default();
    let drain = config.drain_percent.unwrap_or(DEFAULT_DRAIN_PERCENT);
    // A rollback goes back without baking.
    let bake = if rolling_back { 0.0 } else { config.bake_time_in_minutes.max(0) as f64 * 60.0 };
    let batch = ((drain / 100.0 * matching.len() as f64).ceil() as usize).max(1);
    if in_flight == 0 && dp.step_open {
        dp.step_open = false;
        if bake > 0.0 {
            dp.bake_until = Some(now + bake);
        }
    }
    let baking = dp.bake_until.is_some_and(|at| at > now);
    if baking {
        out.retry_at = dp.bake_until;
    } else {
        dp.bake_until = None;
        let room = batch.saturating_sub(in_flight);
        for t in candidates.iter().take(room) {
            out.stop.push((t.arn.to_owned(), format!("Task replaced by daemon deployment {}", dp.id)));
            dp.step_open = true;
        }
    }
    // Counts per capacity provider: instances running the target revision, and instances
    // being replaced.
    let mut per: Vec<DaemonDeploymentCapacityProvider> = Vec::new();
    for p in &d.capacity_providers {
        let of_p: Vec<&&Instance> = matching.iter().filter(|i| i.provider == Some(p.as_str())).collect();
        let running = of_p
            .iter()
            .filter(|i| {
                held.get(i.arn).is_some_and(|t| t.revision == Some(target) && t.status == task::Status::Running)
            })
            .count() as i32;
        let draining = of_p.iter().filter(|i| stopping_old.contains(i.arn)).count() as i32;
        per.push(DaemonDeploymentCapacityProvider {
            arn: Some(p.clone()),
            draining_instance_count: Some(draining),
            running_instance_count: Some(running),
        });
    }
    if let Some(tr) = &mut dp.deployment.target_daemon_revision {
        tr.total_running_instance_count = Some(per.iter().filter_map(|p| p.running_instance_count).sum());
        tr.total_draining_instance_count = Some(per.iter().filter_map(|p| p.draining_instance_count).sum());
        tr.capacity_providers = Some(per);
    }
    let all_done = done == matching.iter().filter(|i| i.active).count() && in_flight == 0 && candidates.is_empty();
    if all_done && !dp.step_open && !baking {
        dp.deployment.status = Some(if rolling_back {
            DaemonDeploymentStatus::RollbackSuccessful
        } else {
            DaemonDeploymentStatus::Successful
        });
        dp.deployment.finished_at = Some(now);
        if let Some(a) = &mut dp.deployment.alarms {
            if a.status == Some(Monitors::Monitoring) {
                a.status = Some(Monitors::MonitoringComplete);
            }
        }
    }
    if dp != before || out.revision_id.is_some() {
        out.deployment = Some(dp);
    }
    out
}

/// Which revisions run where: (revision id, provider) → instances running it.
pub fn running_counts<'a>(
    instances: &[Instance<'a>],
    tasks: &[DaemonTask<'a>],
) -> std::collections::BTreeMap<(String, String), i32> {
    let mut out = std::collections::BTreeMap::new();
    for t in tasks.iter().filter(|t| t.status == task::Status::Running && !t.desired_stopped) {
        let Some(p) = t.instance.and_then(|a| instances.iter().find(|i| i.arn == a)).and_then(|i| i.provider) else {
            continue;
        };
        if let Some(r) = t.revision {
            *out.entry((r.to_owned(), p.to_owned())).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SeqIds;
    use estiba_api::ecs::{DaemonContainerDefinition, DaemonTaskDefinition};

    fn scope() -> Scope {
        Scope::new("000000000000", "us-east-1")
    }

    fn daemon(rev: &str) -> DaemonDoc {
        DaemonDoc {
            name: "mon".into(),
            cluster: "c".into(),
            arn: daemon_arn(&scope(), "c", "mon"),
            cluster_arn: scope().cluster_arn("c"),
            status: DaemonStatus::Active,
            capacity_providers: vec!["mi".into()],
            revision_id: rev.into(),
            deployment_id: "d".into(),
            ..Default::default()
        }
    }

    fn deployment(target: &str, source: &[&str], drain: f64, bake: i32) -> DeploymentDoc {
        DeploymentDoc {
            id: "d".into(),
            deployment: DaemonDeployment {
                status: Some(DaemonDeploymentStatus::Pending),
                deployment_configuration: Some(DaemonDeploymentConfiguration {
                    drain_percent: Some(drain),
                    bake_time_in_minutes: bake,
                    alarms: None,
                }),
                target_daemon_revision: Some(Default::default()),
                ..Default::default()
            },
            target_revision_id: target.into(),
            source_revision_ids: source.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn inst(arn: &str) -> Instance<'_> {
        Instance { arn, active: true, provider: Some("mi") }
    }

    fn run<'a>(arn: &'a str, on: &'a str, rev: &'a str) -> DaemonTask<'a> {
        DaemonTask {
            arn,
            instance: Some(on),
            revision: Some(rev),
            status: task::Status::Running,
            desired_stopped: false,
            started_at: 1.0,
        }
    }

    const NO_ALARM: &dyn Fn(&str) -> bool = &|_| false;

    #[test]
    fn one_task_per_instance_and_replacement_of_stopped_ones() {
        let d = daemon("r1");
        let is = [inst("i1"), inst("i2"), Instance { arn: "i3", active: false, provider: Some("mi") }];
        let p = plan(&d, None, &is, &[run("t1", "i1", "r1")], NO_ALARM, 10.0);
        assert_eq!(p.start, vec!["i2".to_string()], "the ACTIVE instance without a task gets one, DRAINING not");
        assert!(p.stop.is_empty());
        // Two on one instance: the running one of the revision stays.
        let mut pending = run("t2", "i1", "r1");
        pending.status = task::Status::Pending;
        let p = plan(&d, None, &is[..1], &[pending, run("t1", "i1", "r1")], NO_ALARM, 10.0);
        assert_eq!(p.stop.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["t2"]);
        // A task on an instance that is not the daemon's capacity stops.
        let p = plan(
            &d,
            None,
            &[Instance { arn: "i1", active: true, provider: None }],
            &[run("t1", "i1", "r1")],
            NO_ALARM,
            1.0,
        );
        assert_eq!(p.stop.len(), 1);
        assert!(p.start.is_empty());
    }

    #[test]
    fn rollout_respects_drain_percent_and_bake_time() {
        let d = daemon("r2");
        let names: Vec<String> = (0..8).map(|i| format!("i{i}")).collect();
        let is: Vec<Instance> = names.iter().map(|n| inst(n)).collect();
        let tnames: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
        let tasks: Vec<DaemonTask> = (0..8).map(|i| run(&tnames[i], &names[i], "r1")).collect();
        let dep = deployment("r2", &["r1"], 25.0, 1);
        // 25 % of 8: two instances at a time.
        let p = plan(&d, Some(&dep), &is, &tasks, NO_ALARM, 100.0);
        assert_eq!(p.stop.len(), 2);
        let dep = p.deployment.unwrap();
        assert_eq!(dep.status(), DaemonDeploymentStatus::InProgress);
        assert!(dep.step_open);
        // While those two are replaced, nothing else stops.
        let mut tasks2 = tasks.clone();
        tasks2[0].desired_stopped = true;
        tasks2[1].desired_stopped = true;
        let p = plan(&d, Some(&dep), &is, &tasks2, NO_ALARM, 101.0);
        assert!(p.stop.is_empty(), "{:?}", p.stop);
        assert!(p.start.is_empty(), "the old task still holds the instance until it stops");
        // They stopped: new tasks start there, still nothing else stops.
        tasks2[0].status = task::Status::Stopped;
        tasks2[1].status = task::Status::Stopped;
        let p = plan(&d, Some(&dep), &is, &tasks2, NO_ALARM, 102.0);
        assert_eq!(p.start, vec!["i0".to_string(), "i1".to_string()]);
        assert!(p.stop.is_empty());
        // The new tasks run: the step is over, and the bake time (1 minute) holds the next.
        let mut tasks3 = tasks2.clone();
        tasks3.push(run("n0", "i0", "r2"));
        tasks3.push(run("n1", "i1", "r2"));
        let p = plan(&d, Some(&dep), &is, &tasks3, NO_ALARM, 103.0);
        assert!(p.stop.is_empty());
        assert_eq!(p.retry_at, Some(163.0));
        let dep = p.deployment.unwrap();
        assert_eq!(dep.bake_until, Some(163.0));
        let counts = dep.deployment.target_daemon_revision.as_ref().unwrap();
        assert_eq!(counts.total_running_instance_count, Some(2));
        let p = plan(&d, Some(&dep), &is, &tasks3, NO_ALARM, 164.0);
        assert_eq!(p.stop.len(), 2, "after the bake time, the next step");
    }

    #[test]
    fn deployment_succeeds_once_every_instance_runs_the_revision() {
        let d = daemon("r2");
        let is = [inst("i1")];
        let dep = deployment("r2", &["r1"], 100.0, 0);
        let p = plan(&d, Some(&dep), &is, &[run("n", "i1", "r2")], NO_ALARM, 5.0);
        let dep = p.deployment.unwrap();
        assert_eq!(dep.status(), DaemonDeploymentStatus::Successful);
        assert_eq!(dep.deployment.finished_at, Some(5.0));
        // No instances at all: nothing to do, successful at once.
        let dep0 = deployment("r2", &[], 25.0, 0);
        let p = plan(&d, Some(&dep0), &[], &[], NO_ALARM, 5.0);
        assert_eq!(p.deployment.unwrap().status(), DaemonDeploymentStatus::Successful);
    }

    #[test]
    fn an_alarm_rolls_the_deployment_back() {
        let d = daemon("r2");
        let is = [inst("i1"), inst("i2")];
        let mut dep = deployment("r2", &["r1"], 50.0, 0);
        dep.deployment.alarms = Some(DaemonDeploymentAlarms {
            alarm_names: Some(vec!["high-errors".into()]),
            status: Some(Monitors::Monitoring),
            triggered_alarm_names: Some(vec![]),
        });
        let tasks = [run("n1", "i1", "r2"), run("t2", "i2", "r1")];
        let p = plan(&d, Some(&dep), &is, &tasks, &|n| n == "high-errors", 9.0);
        assert_eq!(p.revision_id.as_deref(), Some("r1"));
        let dep = p.deployment.unwrap();
        assert_eq!(dep.status(), DaemonDeploymentStatus::RollbackInProgress);
        assert_eq!(dep.deployment.alarms.as_ref().unwrap().status, Some(Monitors::Triggered));
        assert_eq!(p.stop.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["n1"], "the new revision's task goes");
        // A rollback does not bake: once the stopped task's replacement runs, it is done.
        let d1 = daemon("r1");
        let mut baking = dep.clone();
        baking.deployment.deployment_configuration.as_mut().unwrap().bake_time_in_minutes = 10;
        baking.step_open = true;
        let p = plan(&d1, Some(&baking), &is, &[run("x1", "i1", "r1"), run("t2", "i2", "r1")], &|_| true, 10.0);
        assert_eq!(p.deployment.unwrap().status(), DaemonDeploymentStatus::RollbackSuccessful);
        // Back on r1 everywhere: ROLLBACK_SUCCESSFUL.
        let p = plan(&d1, Some(&dep), &is, &[run("x1", "i1", "r1"), run("t2", "i2", "r1")], &|_| true, 10.0);
        assert_eq!(p.deployment.unwrap().status(), DaemonDeploymentStatus::RollbackSuccessful);
    }

    #[test]
    fn a_deleted_daemon_stops_its_tasks_then_goes() {
        let mut d = daemon("r1");
        d.status = DaemonStatus::DeleteInProgress;
        let p = plan(&d, None, &[inst("i1")], &[run("t1", "i1", "r1")], NO_ALARM, 1.0);
        assert_eq!(p.stop.len(), 1);
        assert!(!p.gone);
        let mut stopped = run("t1", "i1", "r1");
        stopped.status = task::Status::Stopped;
        assert!(plan(&d, None, &[inst("i1")], &[stopped], NO_ALARM, 2.0).gone);
    }

    #[test]
    fn which_instances_are_a_daemons_capacity() {
        use estiba_api::ecs::{Attribute, ContainerInstance};
        let ps = vec!["a".to_string()];
        let named = |p: &str| ContainerInstance {
            attributes: Some(vec![Attribute {
                name: PROVIDER_ATTRIBUTE.into(),
                value: Some(p.into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(instance_provider(&named("b")), Some("b"));
        assert!(!instance_matches(instance_provider(&named("b")), &ps));
        assert!(instance_matches(instance_provider(&named("a")), &ps));
        assert!(instance_matches(instance_provider(&ContainerInstance::default()), &ps), "no provider: every daemon's");
        let own = ContainerInstance { capacity_provider_name: Some("a".into()), ..named("b") };
        assert_eq!(instance_provider(&own), Some("a"), "capacityProviderName first");
    }

    #[test]
    fn service_tasks_wait_for_the_daemon_on_a_new_instance() {
        use estiba_api::ecs::ContainerInstance;
        let ci = ContainerInstance { registered_at: Some(100.0), ..Default::default() };
        let ds = [daemon("r")];
        assert!(awaits_daemon(&ci, &ds, |_| false, 101.0));
        assert!(!awaits_daemon(&ci, &ds, |g| g == "daemon:mon", 101.0), "its daemon task is there");
        assert!(!awaits_daemon(&ci, &ds, |_| false, 100.0 + DAEMON_FIRST_SECONDS + 1.0), "not forever");
        let mut deleting = daemon("r");
        deleting.status = DaemonStatus::DeleteInProgress;
        assert!(!awaits_daemon(&ci, &[deleting], |_| false, 101.0));
        assert!(!awaits_daemon(&ci, &[], |_| false, 101.0));
    }

    #[test]
    fn registration_checks_and_runnable_form() {
        let req = RegisterDaemonTaskDefinitionRequest {
            family: "agent".into(),
            container_definitions: vec![DaemonContainerDefinition {
                name: Some("a".into()),
                image: "busybox".into(),
                memory: Some(64),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (td, run) = register_taskdef(&scope(), &req, 3, 7.0).unwrap();
        assert_eq!(
            td.daemon_task_definition_arn.as_deref(),
            Some("arn:aws:ecs:us-east-1:000000000000:daemon-task-definition/agent:3")
        );
        assert_eq!(td.status, Some(DaemonTaskDefinitionStatus::Active));
        assert_eq!(run.network_mode, Some(estiba_api::ecs::NetworkMode::Host));
        assert_eq!(run.task_definition_arn, td.daemon_task_definition_arn);
        let bad = RegisterDaemonTaskDefinitionRequest { family: "no spaces".into(), ..req.clone() };
        assert_eq!(
            register_taskdef(&scope(), &bad, 1, 0.0).unwrap_err().code,
            estiba_api::ecs::ErrorCode::ClientException
        );
        let empty = RegisterDaemonTaskDefinitionRequest { container_definitions: vec![], ..req };
        assert!(register_taskdef(&scope(), &empty, 1, 0.0).is_err());
        let _ = DaemonTaskDefinition::default();
    }

    #[test]
    fn references_configuration_and_providers() {
        let s = scope();
        assert_eq!(parse_taskdef_ref(&s, "agent:2"), Some(("agent".into(), Some(2))));
        assert_eq!(parse_taskdef_ref(&s, &taskdef_arn(&s, "agent", 4)), Some(("agent".into(), Some(4))));
        assert_eq!(parse_taskdef_ref(&s, "arn:aws:ecs:us-east-1:000000000000:task-definition/agent:4"), None);
        let a = deployment_arn(&s, "c", "mon", "abc");
        assert_eq!(parse_member(&s, "daemon-deployment", &a), Some(("c", "mon", Some("abc"))));
        assert_eq!(parse_member(&s, "daemon", &daemon_arn(&s, "c", "mon")), Some(("c", "mon", None)));
        assert_eq!(parse_member(&s, "daemon", &a), None);
        let c = deployment_configuration(None).unwrap();
        assert_eq!((c.drain_percent, c.bake_time_in_minutes), (Some(25.0), 0));
        let bad = DaemonDeploymentConfiguration { bake_time_in_minutes: 2000, ..Default::default() };
        assert!(deployment_configuration(Some(&bad)).is_err());
        use estiba_api::ecs::CapacityProviderType as T;
        let kind = |n: &str| match n {
            "mi" => Some(T::ManagedInstances),
            "asg" => Some(T::Ec2Autoscaling),
            _ => None,
        };
        let assoc = vec!["mi".to_string(), "asg".to_string()];
        assert_eq!(check_providers(&[s.capacity_provider_arn("mi")], &assoc, kind).unwrap(), ["mi"]);
        assert!(check_providers(&["asg".into()], &assoc, kind).unwrap_err().message.contains("Managed Instances"));
        assert!(check_providers(&["nope".into()], &assoc, kind).is_err());
        assert!(check_providers(&["mi".into()], &[], kind).unwrap_err().message.contains("not associated"));
        assert!(check_providers(&[], &assoc, kind).is_err());
        let mut ids = SeqIds::default();
        let td = DaemonTaskDefinition {
            daemon_task_definition_arn: Some(taskdef_arn(&s, "agent", 1)),
            ..Default::default()
        };
        let r = new_rollout(&s, &daemon("x"), &td, (false, false, None), c, &[], &mut ids, 1.0);
        // Tasks name the daemon task definition; they run its runnable form.
        let r2 = crate::arn::TaskDefRef::parse(&taskdef_arn(&s, "agent", 4)).unwrap();
        assert_eq!((r2.family.as_str(), r2.revision), ("~daemon~agent", Some(4)));
        assert_eq!(r.deployment.id.len(), 16);
        assert!(r.revision.revision.daemon_revision_arn.unwrap().contains(":daemon-revision/c/mon/"));
    }
}
