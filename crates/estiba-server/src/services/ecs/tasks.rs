//! RunTask, StartTask, StopTask, DescribeTasks, ListTasks.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use estiba_api::ecs::*;
use estiba_core::capacity;
use estiba_core::instance;
use estiba_core::placement::{self, Fleet, Host, Placer, Summary};
use estiba_core::task::{self, Launch, Spec};
use estiba_core::{arn, page, EcsError, Ids, Scope};
use estiba_store::{Compare, Txn};

use super::{active_cluster, cluster_for_write, json, put, put_tags, runnable_taskdef, Ctx, Result};
use crate::view::State;
use crate::{keys, RandomIds, Server};

/// The tags a new task gets: its own, plus propagated and ECS-managed ones.
pub(crate) fn task_tags(
    st: &State,
    td_key: &str,
    own: &[Tag],
    propagate: Option<PropagateTags>,
    service_tags: Option<&[Tag]>,
    managed: Option<(&str, Option<&str>)>,
) -> Result<Vec<Tag>> {
    let mut tags = Vec::new();
    match propagate {
        Some(PropagateTags::TaskDefinition) => tags.extend(st.tags_of(td_key).unwrap_or_default().iter().cloned()),
        Some(PropagateTags::Service) => tags.extend(service_tags.unwrap_or_default().iter().cloned()),
        _ => {}
    }
    estiba_core::tags::merge(&mut tags, own)?;
    if let Some((cluster, service)) = managed {
        tags.push(Tag { key: Some("aws:ecs:clusterName".into()), value: Some(cluster.into()) });
        if let Some(s) = service {
            tags.push(Tag { key: Some("aws:ecs:serviceName".into()), value: Some(s.into()) });
        }
    }
    Ok(tags)
}

/// Placements made on this server whose write is not in the view yet: a request that places
/// on container instances counts them as taken, so concurrent requests (RunTask, StartTask,
/// the service scheduler) never fill the same room twice. A request's entries go when its
/// [`Held`] is dropped, after its write is in the view (or failed); each attempt at the write
/// begins with [`Held::begin_attempt`], which drops the entries of the earlier attempt: a
/// retry on the same view (its conflict not in the view yet, as happens on etcd) must not
/// count its own earlier picks as taken by someone else. Across servers sharing one etcd
/// this does not hold: see ARCHITECTURE.md.
#[derive(Default)]
pub struct Reservations {
    next: u64,
    held: Vec<Reserved>,
}

struct Reserved {
    token: u64,
    cluster: String,
    slot: usize,
    need: placement::Need,
    group: String,
}

/// One request's hold on [`Reservations`]; dropping it releases what the request reserved.
pub struct Held {
    book: Arc<Mutex<Reservations>>,
    token: u64,
}

impl Held {
    pub fn new(book: &Arc<Mutex<Reservations>>) -> Held {
        let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
        b.next += 1;
        Held { book: book.clone(), token: b.next }
    }

    /// A new attempt at the request's write (the first, or a retry after a conflict, or a
    /// smaller write after one over the store's limits): what earlier attempts placed is
    /// no longer held. Placements within one attempt add up (a daemon's task per instance).
    pub fn begin_attempt(&self) {
        let mut b = self.book.lock().unwrap_or_else(|e| e.into_inner());
        b.held.retain(|r| r.token != self.token);
    }
}

impl Ctx {
    /// [`Held::begin_attempt`] of the request's hold, if it has one.
    pub(crate) fn begin_attempt(&self) {
        if let Some(h) = &self.held {
            h.begin_attempt();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut b = self.book.lock().unwrap_or_else(|e| e.into_inner());
        b.held.retain(|r| r.token != self.token);
    }
}

/// The cluster's registered (ACTIVE or DRAINING) container instances as placement hosts,
/// numbered by their slots in the view's index and read from it as placement asks: no task
/// and no unregistered instance's document is looked at, and no list is built. The default
/// has no host (a request with no task for an instance).
#[derive(Default)]
pub(crate) struct ClusterHosts<'a> {
    hosts: Option<&'a crate::view::Hosts>,
    /// The request's group's live tasks per slot.
    in_group: &'a [u32],
    /// Slots the request must keep off (a service's tasks, off new instances that await their
    /// daemons' tasks).
    kept_off: std::collections::HashSet<usize>,
}

impl<'a> ClusterHosts<'a> {
    pub(crate) fn of(st: &'a State, scope: &Scope, cluster: &str, group: &str) -> Self {
        let hosts = st.hosts(&keys::cluster(scope, cluster));
        ClusterHosts { hosts, in_group: hosts.map_or(&[], |h| h.group_counts(group)), kept_off: Default::default() }
    }

    /// The number of the host with this ARN.
    fn number(&self, arn: &str) -> Option<usize> {
        self.hosts?.number(arn).filter(|&i| self.host(i).is_some())
    }

    fn is_empty(&self) -> bool {
        (0..self.end()).all(|i| self.host(i).is_none())
    }
}

impl<'a> Fleet<'a> for ClusterHosts<'a> {
    fn end(&self) -> usize {
        self.hosts.map_or(0, |h| h.slots.len())
    }

    fn host(&self, id: usize) -> Option<Host<'a>> {
        let s = self.hosts?.slots.get(id)?;
        // `info` says whether it is registered: no document is read for the others.
        if !s.info.registered_now || self.kept_off.contains(&id) {
            return None;
        }
        let d = s.doc.as_ref()?;
        let in_group = self.in_group.get(id).copied().unwrap_or(0);
        Some(Host { id, arn: &s.arn, ci: &d.value, info: &s.info, used: &s.used, in_group })
    }

    fn summary(&self, id: usize) -> Summary {
        let sum = match self.hosts.and_then(|h| h.summaries.get(id)) {
            Some(s) if s.present && !self.kept_off.contains(&id) => {
                Summary { in_group: self.in_group.get(id).copied().unwrap_or(0), ..*s }
            }
            _ => Summary::default(),
        };
        // The view keeps the summaries beside the slots; a debug build (the tests') checks
        // that they agree at every call.
        debug_assert_eq!(sum, self.host(id).map_or(Summary::default(), |h| Summary::of(&h)), "slot {id}");
        sum
    }
}

pub(crate) struct Placed {
    pub tasks: Vec<Task>,
    pub failures: Vec<Failure>,
}

/// Builds and places `launches.len()` tasks of one request: EC2 and EXTERNAL ones on the
/// cluster's container instances (on `fixed_instances`, one each, for StartTask), by the
/// request's and the task definition's constraints and the request's strategies.
#[allow(clippy::too_many_arguments)]
pub(crate) fn place_tasks(
    st: &State,
    cx: &Ctx,
    cluster: &str,
    td: &TaskDefinition,
    launches: Vec<Launch>,
    fixed_instances: Option<Vec<String>>,
    proto: &Spec<'_>,
    constraints: &[PlacementConstraint],
    strategies: &[PlacementStrategy],
    ids: &mut dyn Ids,
) -> Result<Placed> {
    let mut compiled = placement::compile_constraints(constraints)?;
    placement::validate_strategies(strategies)?;
    // Only EC2 and EXTERNAL tasks go to container instances; Fargate ones skip them.
    let on_instances = launches.iter().filter(|l| l.launch_type != LaunchType::Fargate).count();
    let group =
        proto.group.map(str::to_owned).unwrap_or_else(|| format!("family:{}", td.family.as_deref().unwrap_or("")));
    let mut hosts =
        if on_instances > 0 { ClusterHosts::of(st, &cx.scope, cluster, &group) } else { Default::default() };
    // A service's tasks wait for the daemons' tasks on a new instance (ECS starts those first).
    if on_instances > 0 && proto.group.is_some_and(|g| g.starts_with("service:")) {
        hosts.kept_off = (0..hosts.end())
            .filter_map(|i| hosts.host(i))
            .filter(|h| super::daemons::awaits_daemon(st, &cx.scope, cluster, h.ci, h.used, cx.now))
            .map(|h| h.id)
            .collect();
    }
    if on_instances > 0 {
        compiled.extend(placement::taskdef_constraints(td)?);
    }
    let need = placement::need_of(td, proto.overrides);
    let req = placement::Request {
        need: &need,
        group: &group,
        required: td.requires_attributes.as_deref().unwrap_or_default(),
        constraints: &compiled,
        strategies,
    };
    let mut placer = Placer::new(&hosts);
    // What requests on this server placed and have not written yet.
    let cluster_key = keys::cluster(&cx.scope, cluster);
    let mut book = cx
        .held
        .as_ref()
        .filter(|_| on_instances > 0)
        .map(|h| (h.book.lock().unwrap_or_else(|e| e.into_inner()), h.token));
    if let Some((b, _)) = &book {
        for r in b.held.iter().filter(|r| r.cluster == cluster_key) {
            if hosts.host(r.slot).is_some() {
                placer.hold_other(r.slot, &r.need, r.group == group);
            }
        }
    }
    let mut out = Placed { tasks: vec![], failures: vec![] };
    // The tasks that go wherever the strategies say are placed together.
    let mut picks = Vec::new().into_iter();
    if fixed_instances.is_none() && on_instances > 0 {
        if hosts.is_empty() {
            return Err(EcsError::invalid("No Container Instances were found in your cluster."));
        }
        let p = placer.place(&req, on_instances, ids.deployment_number());
        picks = p.picks.into_iter();
        out.failures.extend(p.failures);
    }
    for (i, launch) in launches.into_iter().enumerate() {
        let on: Option<usize> = if launch.launch_type == LaunchType::Fargate {
            // Fargate capacity is not reserved: a node refuses only when its available
            // memory is below its floor, and RunTask only when every live Fargate node does.
            let nodes = fargate_nodes(st, cx);
            if !nodes.is_empty() && !nodes.iter().any(|n| n.has_memory()) {
                out.failures.push(Failure { arn: None, reason: Some("RESOURCE:MEMORY".into()), detail: None });
                continue;
            }
            None
        } else if let Some(fixed) = &fixed_instances {
            let target = &fixed[i];
            let Some(idx) = hosts.number(target) else {
                out.failures.push(Failure { arn: Some(target.clone()), reason: Some("MISSING".into()), detail: None });
                continue;
            };
            if let Err(f) = placer.place_on(idx, &req) {
                out.failures.push(f);
                continue;
            }
            Some(idx)
        } else {
            match picks.next() {
                Some(idx) => Some(idx),
                None => continue,
            }
        };
        if let (Some((b, token)), Some(idx)) = (&mut book, on) {
            b.held.push(Reserved {
                token: *token,
                cluster: cluster_key.clone(),
                slot: idx,
                need: need.clone(),
                group: group.clone(),
            });
        }
        let instance_arn = on.and_then(|idx| Some(hosts.host(idx)?.arn.to_owned()));
        let spec = Spec { launch, container_instance_arn: instance_arn, tags: proto.tags.clone(), ..*proto };
        out.tasks.push(task::build(&spec, ids, cx.now));
    }
    Ok(out)
}

/// Writes new tasks (and their tags), each with the claim of the node that runs it, in the
/// same transaction, so the agent sees its work at once: Fargate tasks go to this machine's
/// node, tasks placed on a container instance to the node that registered it (none for
/// instances registered by hand: those tasks wait in PROVISIONING, as without an agent).
pub(crate) fn write_tasks(
    txn: &mut Txn,
    st: &State,
    cx: &Ctx,
    cluster: &str,
    tasks: &[Task],
    network: Option<&NetworkConfiguration>,
) {
    let _ = guard_instances(txn, st, cx, cluster, tasks);
    for g in task_write_groups(st, cx, cluster, tasks, network) {
        txn.compares.extend(g.compares);
        txn.ops.extend(g.ops);
    }
}

/// When other servers write the same state, placements on container instances are checked in
/// the store: `txn` compares each instance the tasks go to with the revision placement read
/// and rewrites it with its `version` one higher (ECS counts a change of an instance's
/// resources as a new version). A server that placed on the same instance in between makes
/// the compare fail, and the request is placed again from the fresher view; reservations
/// ([`Reservations`]) only see this server's own requests. One server alone needs no guard.
/// Returns the keys of the instances guarded (none when not shared), which this server's own
/// requests lock while they write ([`Server::transact_locked`]).
pub(crate) fn guard_instances(
    txn: &mut Txn,
    st: &State,
    cx: &Ctx,
    cluster: &str,
    tasks: &[Task],
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    if !cx.shared {
        return seen;
    }
    for arn in tasks.iter().filter_map(|t| t.container_instance_arn.as_deref()) {
        let Some((_, id)) = arn::member_id("container-instance", arn) else { continue };
        let key = keys::instance(&cx.scope, cluster, id);
        if !seen.insert(key.clone()) {
            continue;
        }
        let Some(d) = st.instances.get(&key) else { continue };
        let mut ci = d.value.clone();
        ci.version += 1;
        txn.compares.push(Compare::mod_revision(&key, d.rev));
        txn.ops.push(put(&key, &ci));
    }
    seen
}

/// [`write_tasks`] as one group per task (its document, tags and claim), for callers that may
/// split them over transactions; Fargate tasks are spread over the nodes across all groups.
pub(crate) fn task_write_groups(
    st: &State,
    cx: &Ctx,
    cluster: &str,
    tasks: &[Task],
    network: Option<&NetworkConfiguration>,
) -> Vec<Txn> {
    let public_ip = network
        .and_then(|n| n.awsvpc_configuration.as_ref())
        .is_some_and(|v| v.assign_public_ip == Some(AssignPublicIp::Enabled));
    // Counted on the first Fargate task only.
    let mut loads: Option<FargateLoads> = None;
    let mut groups = Vec::with_capacity(tasks.len());
    for t in tasks {
        let key = keys::task(&cx.scope, cluster, task::task_id(t));
        let mut doc = t.clone();
        let tags = doc.tags.take().unwrap_or_default();
        let mut g = Txn::new().when(Compare::absent(&key)).then(put(&key, &doc));
        if !tags.is_empty() {
            g.ops.push(put_tags(&key, &tags));
        }
        let node = match &t.container_instance_arn {
            None if task::is_fargate(t) => {
                fargate_node(loads.get_or_insert_with(|| FargateLoads::of(st, cx)), cx, t.availability_zone.as_deref())
            }
            None => None,
            Some(arn) => arn::member_id("container-instance", arn)
                .and_then(|(_, id)| st.instances.get(&keys::instance(&cx.scope, cluster, id)))
                .and_then(|d| instance::node_of(&d.value)),
        };
        if let Some(node) = node {
            let claim = keys::claim(node, &cx.scope, cluster, task::task_id(t));
            g.ops.push(put(
                claim,
                &estiba_core::node::Claim { node: node.to_string(), public_ip, ..Default::default() },
            ));
        }
        groups.push(g);
    }
    groups
}

/// The nodes that take Fargate tasks and reported within the node lease.
fn fargate_nodes<'a>(st: &'a State, cx: &Ctx) -> Vec<&'a estiba_core::node::NodeStatus> {
    st.nodes.values().map(|d| &d.value).filter(|n| n.fargate && cx.liveness.alive(st, &n.id, cx.now)).collect()
}

/// The Fargate nodes a call may place on, each with the tasks it runs: counted once per call
/// (RunTask's, or a scheduler pass's), then kept up to date as [`fargate_node`] places.
struct FargateLoads<'a> {
    /// Live Fargate nodes with memory to spare: id, availability zone (its
    /// `ecs.availability-zone` attribute), and the tasks each runs.
    nodes: Vec<(&'a str, Option<&'a str>, usize)>,
    /// No live Fargate node at all (not even one short of memory).
    none_alive: bool,
}

impl<'a> FargateLoads<'a> {
    fn of(st: &'a State, cx: &Ctx) -> Self {
        let alive = fargate_nodes(st, cx);
        let running = |id: &str| {
            st.claims_by_node
                .get(id)
                .map_or(0, |keys| keys.iter().filter(|k| st.tasks.get(*k).is_some_and(|d| !d.value.stopped())).count())
        };
        let az = |n: &'a estiba_core::node::NodeStatus| {
            n.attributes.iter().find(|(k, _)| k == "ecs.availability-zone").map(|(_, v)| v.as_str())
        };
        let nodes = alive.iter().filter(|n| n.has_memory()).map(|n| (n.id.as_str(), az(n), running(&n.id))).collect();
        FargateLoads { nodes, none_alive: alive.is_empty() }
    }
}

/// The node a new Fargate task goes to: of the live Fargate nodes with memory to spare, the
/// one running the fewest tasks (counting those this call placed), ties by node id. Nodes in
/// the task's availability zone (the zone of its subnet) come first, then nodes that name no
/// zone, then any: Fargate has capacity in every zone, so a zone without hosts borrows.
fn fargate_node<'a>(loads: &mut FargateLoads<'a>, cx: &'a Ctx, az: Option<&str>) -> Option<&'a str> {
    let tier = |n_az: Option<&str>| match (n_az, az) {
        (Some(a), Some(b)) if a == b => 0,
        (None, _) => 1,
        _ => 2,
    };
    let Some(best) = loads.nodes.iter_mut().min_by(|a, b| (tier(a.1), a.2, a.0).cmp(&(tier(b.1), b.2, b.0))) else {
        // No live Fargate node reported yet: this server's own node, if it has one and no
        // node refused for lack of memory, gets the task (its agent starts with the server).
        return cx.node.as_deref().filter(|_| loads.none_alive);
    };
    best.2 += 1;
    Some(best.0)
}

/// Environment files named in container overrides follow the task definition's rules.
fn check_override_files(s: &Server, overrides: Option<&TaskOverride>) -> Result<()> {
    let containers = overrides.iter().flat_map(|o| o.container_overrides.iter().flatten());
    for f in containers.flat_map(|c| c.environment_files.iter().flatten()) {
        super::taskdefs::environment_files_enabled(s)?;
        estiba_core::taskdef::environment_file_name(&f.value)?;
    }
    Ok(())
}

pub async fn run(s: &Server, cx: &Ctx, req: RunTaskRequest) -> Result<Bytes> {
    let count = req.count.unwrap_or(1);
    if !(1..=10).contains(&count) {
        return Err(EcsError::invalid(format!("The count must be between 1 and 10, got {count}.")));
    }
    if let Some(tags) = &req.tags {
        estiba_core::tags::validate(tags)?;
    }
    check_override_files(s, req.overrides.as_ref())?;
    let mut ids = RandomIds;
    let ((placed, first, rest, keys), locks, at) = s
        .transact_locked::<_, EcsError>(|st| {
            cx.begin_attempt();
            let mut txn = Txn::new();
            let (cluster, c) = cluster_for_write(st, cx, req.cluster.as_deref(), &mut txn)?;
            let td = runnable_taskdef(st, cx, &req.task_definition)?;
            let plan = super::launch_plan(
                st,
                cx,
                (&cluster, &c),
                req.launch_type,
                req.capacity_provider_strategy.as_deref(),
                &td.value,
            )?;
            task::check_platform_version(plan.launch_type(), req.platform_version.as_deref())?;
            task::check_exec_role(
                req.enable_execute_command,
                &td.value,
                req.overrides.as_ref(),
                task::ExecRoleCheck::Task,
            )?;
            task::validate(
                &td.value,
                plan.launch_type(),
                req.network_configuration.as_ref(),
                req.overrides.as_ref(),
                req.group.as_deref(),
                req.started_by.as_deref(),
            )?;
            if req.propagate_tags == Some(PropagateTags::Service) {
                return Err(EcsError::invalid("propagateTags SERVICE is only valid for tasks started by a service."));
            }
            let tags = task_tags(
                st,
                &td.key,
                req.tags.as_deref().unwrap_or_default(),
                req.propagate_tags,
                None,
                req.enable_ecs_managed_tags.then_some((cluster.as_str(), None)),
            )?;
            let launches = plan.launches(&[], count as usize, capacity::is_fargate);
            let proto = Spec {
                scope: &cx.scope,
                cluster: &cluster,
                td: &td.value,
                launch: Launch { launch_type: plan.launch_type(), capacity_provider: None },
                platform_version: req.platform_version.as_deref(),
                overrides: req.overrides.as_ref(),
                group: req.group.as_deref(),
                started_by: req.started_by.as_deref(),
                network: req.network_configuration.as_ref(),
                vpc_cidr: cx.vpc_cidr,
                container_instance_arn: None,
                enable_execute_command: req.enable_execute_command,
                tags,
            };
            let placed = place_tasks(
                st,
                cx,
                &cluster,
                &td.value,
                launches,
                None,
                &proto,
                req.placement_constraints.as_deref().unwrap_or_default(),
                req.placement_strategy.as_deref().unwrap_or_default(),
                &mut ids,
            )?;
            txn.compares.push(Compare::mod_revision(&td.key, td.rev));
            let keys = guard_instances(&mut txn, st, cx, &cluster, &placed.tasks);
            let groups = task_write_groups(st, cx, &cluster, &placed.tasks, req.network_configuration.as_ref());
            let mut reserve = Txn::new();
            reguard(st, &keys, 0, &mut reserve);
            let (txn, first, rest) = split_task_writes(s.txn_limits(), txn, groups, &reserve);
            Ok((txn, (placed, first, rest, keys.clone()), keys))
        })
        .await?;
    let placed = write_rest(s, cx, placed, first, rest, (&keys, at), locks).await;
    Ok(json(&RunTaskResponse { tasks: Some(placed.tasks), failures: Some(placed.failures) }))
}

/// Splits the write of new tasks when it does not fit one transaction of the store (RunTask
/// of 10 tasks, each with its tags and claim, on a store with a small limit; AWS's RunTask is
/// not atomic either and answers task by task): `shared` (the cluster's and task definition's
/// compares) with as many whole tasks as fit, how many that is, and the other tasks' writes in
/// as few transactions as fit, with how many tasks each holds, each leaving room for `reserve`
/// (the guard [`write_rest`] adds to it). With no limit, or when all fit, one transaction holds
/// everything.
pub(crate) fn split_task_writes(
    limits: estiba_store::TxnLimits,
    shared: Txn,
    per_task: Vec<Txn>,
    reserve: &Txn,
) -> (Txn, usize, Vec<(Txn, usize)>) {
    let mut first = estiba_store::BoundedTxn::new(limits);
    if !first.add(shared.clone()) {
        // The shared part alone is over the limits: everything in one, which the store
        // refuses with the reason.
        let n = per_task.len();
        let all = per_task.into_iter().fold(shared, |mut t, g| {
            t.compares.extend(g.compares);
            t.ops.extend(g.ops);
            t
        });
        return (all, n, Vec::new());
    }
    let mut n = 0;
    for g in &per_task {
        if !first.add(g.clone()) {
            break;
        }
        n += 1;
    }
    let room = estiba_store::TxnLimits {
        max_ops: limits.max_ops.saturating_sub(reserve.compares.len().max(reserve.ops.len())),
        // The guard is written later, with versions a little higher (a few more digits at most).
        max_bytes: limits.max_bytes.saturating_sub(limits.size_of(reserve) + 8 * reserve.ops.len()),
        ..limits
    };
    let rest = estiba_store::pack(room, per_task.into_iter().skip(n));
    (first.into_txn(), n, rest)
}

/// The guard of a later transaction of a split RunTask or StartTask: each instance the first
/// guarded ([`guard_instances`]) must still be as this request's last commit (revision `at`)
/// left it, and is rewritten one version higher. So a server that placed on one in between,
/// counting only the tasks written so far, makes this transaction fail (its tasks become
/// failures) rather than overfill the instance, and one placing on it meanwhile fails its own
/// compare. An instance gone from the view gets only the compare, which then fails.
fn reguard(st: &State, keys: &BTreeSet<String>, at: estiba_store::Revision, txn: &mut Txn) {
    for key in keys {
        txn.compares.push(Compare::mod_revision(key, at));
        if let Some(d) = st.instances.get(key) {
            let mut ci = d.value.clone();
            ci.version += 1;
            txn.ops.push(put(key, &ci));
        }
    }
}

/// Commits the transactions [`split_task_writes`] left after the first (which has committed
/// with the first `first` tasks of `placed`, at revision `guarded.1`), each with the guard of
/// the instances in `guarded.0` ([`reguard`]; none when not shared); tasks whose transaction did
/// not commit become failures, so the answer names only tasks that exist. Then the request's placements are all
/// in the view (or failed), so it lets go of its reservations before its instances' `locks`
/// ([`Server::transact_locked`]): the next holder must not count them twice, in the view and
/// in the book.
pub(crate) async fn write_rest(
    s: &Server,
    cx: &Ctx,
    mut placed: Placed,
    first: usize,
    rest: Vec<(Txn, usize)>,
    guarded: (&BTreeSet<String>, estiba_store::Revision),
    locks: crate::key_locks::KeyGuards,
) -> Placed {
    let (keys, mut at) = guarded;
    let mut written = first;
    let mut failed = false;
    for (mut txn, n) in rest {
        if !failed {
            reguard(&s.view.read(), keys, at, &mut txn);
            match s.commit_at(txn).await {
                Ok(Some(rev)) => {
                    at = rev;
                    written += n;
                    continue;
                }
                Ok(None) => tracing::warn!("a batch of new tasks conflicted; reported as failures"),
                Err(e) => tracing::warn!(error = %e, "a batch of new tasks could not be written; reported as failures"),
            }
            failed = true;
        }
    }
    for t in placed.tasks.split_off(written.min(placed.tasks.len())) {
        placed.failures.push(Failure {
            arn: t.task_arn.clone(),
            reason: Some("The task could not be recorded; run it again.".into()),
            detail: None,
        });
    }
    cx.begin_attempt();
    drop(locks);
    placed
}

pub async fn start(s: &Server, cx: &Ctx, req: StartTaskRequest) -> Result<Bytes> {
    if req.container_instances.is_empty() || req.container_instances.len() > 10 {
        return Err(EcsError::invalid("Specify between 1 and 10 container instances."));
    }
    if let Some(tags) = &req.tags {
        estiba_core::tags::validate(tags)?;
    }
    check_override_files(s, req.overrides.as_ref())?;
    let mut ids = RandomIds;
    let ((placed, first, rest, keys), locks, at) = s
        .transact_locked::<_, EcsError>(|st| {
            cx.begin_attempt();
            let mut txn = Txn::new();
            let (cluster, _) = cluster_for_write(st, cx, req.cluster.as_deref(), &mut txn)?;
            let td = runnable_taskdef(st, cx, &req.task_definition)?;
            task::validate(
                &td.value,
                LaunchType::Ec2,
                req.network_configuration.as_ref(),
                req.overrides.as_ref(),
                req.group.as_deref(),
                req.started_by.as_deref(),
            )?;
            task::check_exec_role(
                req.enable_execute_command,
                &td.value,
                req.overrides.as_ref(),
                task::ExecRoleCheck::Task,
            )?;
            let mut fixed = Vec::new();
            for ci in &req.container_instances {
                match arn::member_id("container-instance", ci) {
                    Some((c, id)) if c.is_none_or(|c| c == cluster) => {
                        fixed.push(cx.scope.container_instance_arn(&cluster, id))
                    }
                    _ => return Err(EcsError::invalid(format!("Invalid container instance: {ci}"))),
                }
            }
            let tags = task_tags(
                st,
                &td.key,
                req.tags.as_deref().unwrap_or_default(),
                req.propagate_tags,
                None,
                req.enable_ecs_managed_tags.then_some((cluster.as_str(), None)),
            )?;
            let proto = Spec {
                scope: &cx.scope,
                cluster: &cluster,
                td: &td.value,
                launch: Launch { launch_type: LaunchType::Ec2, capacity_provider: None },
                platform_version: None,
                overrides: req.overrides.as_ref(),
                group: req.group.as_deref(),
                started_by: req.started_by.as_deref(),
                network: req.network_configuration.as_ref(),
                vpc_cidr: cx.vpc_cidr,
                container_instance_arn: None,
                enable_execute_command: req.enable_execute_command,
                tags,
            };
            let launches = vec![Launch { launch_type: LaunchType::Ec2, capacity_provider: None }; fixed.len()];
            let placed = place_tasks(st, cx, &cluster, &td.value, launches, Some(fixed), &proto, &[], &[], &mut ids)?;
            txn.compares.push(Compare::mod_revision(&td.key, td.rev));
            let keys = guard_instances(&mut txn, st, cx, &cluster, &placed.tasks);
            let groups = task_write_groups(st, cx, &cluster, &placed.tasks, req.network_configuration.as_ref());
            let mut reserve = Txn::new();
            reguard(st, &keys, 0, &mut reserve);
            let (txn, first, rest) = split_task_writes(s.txn_limits(), txn, groups, &reserve);
            Ok((txn, (placed, first, rest, keys.clone()), keys))
        })
        .await?;
    let placed = write_rest(s, cx, placed, first, rest, (&keys, at), locks).await;
    Ok(json(&StartTaskResponse { tasks: Some(placed.tasks), failures: Some(placed.failures) }))
}

/// Resolves a task reference to its key, or `None` when it names another cluster.
pub(super) fn task_key(cx: &Ctx, cluster: &str, id: &str) -> Option<String> {
    let (c, id) = arn::member_id("task", id)?;
    if c.is_some_and(|c| c != cluster) {
        return None;
    }
    Some(keys::task(&cx.scope, cluster, id))
}

/// The cluster a request means: the `cluster` parameter, else the one in a task ARN.
pub(super) fn cluster_param(cluster: Option<&str>, task_ref: &str) -> Option<String> {
    match cluster {
        Some(c) => Some(c.to_owned()),
        None => arn::member_id("task", task_ref).and_then(|(c, _)| c.map(str::to_owned)),
    }
}

pub async fn stop(s: &Server, cx: &Ctx, req: StopTaskRequest) -> Result<Bytes> {
    let cluster_ref = cluster_param(req.cluster.as_deref(), &req.task);
    let t = s
        .transact::<_, EcsError>(|st| {
            let (cluster, _) = active_cluster(st, cx, cluster_ref.as_deref())?;
            let not_found = || EcsError::invalid("The referenced task was not found.");
            let key = task_key(cx, &cluster, &req.task).ok_or_else(not_found)?;
            let d = st.tasks.get(&key).ok_or_else(not_found)?;
            let mut t = d.task().into_owned();
            let reason = req.reason.as_deref().unwrap_or("Task stopped by user");
            let mut txn = Txn::new();
            if task::request_stop(&mut t, TaskStopCode::UserInitiated, reason) {
                if !crate::controller::is_claimed(st, &key) && task::last_status(&t) != task::Status::Stopped {
                    task::stop_unstarted(&mut t, cx.now);
                }
                txn = txn.when(Compare::mod_revision(&key, d.rev)).then(put(&key, &t));
                // Out of Cloud Map before its node is told to stop it.
                txn.ops.extend(crate::stop_ops(st, &key, cx.now));
            }
            t.tags = Some(st.tags_of(&key).unwrap_or_default().to_vec());
            Ok((txn, t))
        })
        .await?;
    Ok(json(&StopTaskResponse { task: Some(t) }))
}

pub async fn describe(s: &Server, cx: &Ctx, req: DescribeTasksRequest) -> Result<Bytes> {
    if req.tasks.is_empty() || req.tasks.len() > 100 {
        return Err(EcsError::invalid("Specify between 1 and 100 tasks to describe."));
    }
    let with_tags = req.include.as_ref().is_some_and(|i| i.contains(&TaskField::Tags));
    let cluster_ref = req.cluster.clone().or_else(|| req.tasks.first().and_then(|t| cluster_param(None, t)));
    let st = s.view.read();
    // Tasks of a deleted (INACTIVE) cluster stay describable.
    let cluster = arn::cluster_name(cluster_ref.as_deref())?;
    if !st.clusters.contains_key(&keys::cluster(&cx.scope, &cluster)) {
        return Err(EcsError::cluster_not_found());
    }
    // The stored documents are wire shapes: without tags, splice them in as they are.
    let mut out = BytesMut::with_capacity(64 + req.tasks.len() * 2048);
    out.put_slice(b"{\"tasks\":[");
    let mut failures = Vec::new();
    let mut first = true;
    let mut seen = BTreeSet::new();
    for id in &req.tasks {
        let key = task_key(cx, &cluster, id);
        match key.as_ref().and_then(|k| st.tasks.get(k)) {
            Some(d) => {
                if !seen.insert(d.key.clone()) {
                    continue;
                }
                if !first {
                    out.put_u8(b',');
                }
                first = false;
                if with_tags {
                    let mut t = d.task().into_owned();
                    t.tags = Some(st.tags_of(&d.key).unwrap_or_default().to_vec());
                    out.put_slice(&json(&t));
                } else {
                    out.put_slice(&d.raw);
                }
            }
            None => failures.push(super::missing(if id.starts_with("arn:") {
                id.clone()
            } else {
                cx.scope.task_arn(&cluster, id)
            })),
        }
    }
    out.put_slice(b"],\"failures\":");
    out.put_slice(&json(&failures));
    out.put_u8(b'}');
    Ok(out.freeze())
}

pub async fn list(s: &Server, cx: &Ctx, req: ListTasksRequest) -> Result<Bytes> {
    let limit = page::limit(req.max_results, 100, 100)?;
    if req.family.is_some() && req.service_name.is_some() {
        return Err(EcsError::invalid("family and serviceName cannot both be specified."));
    }
    let st = s.view.read();
    let (cluster, _) = active_cluster(&st, cx, req.cluster.as_deref())?;
    let want = req.desired_status.unwrap_or(DesiredStatus::Running);
    let group = req.service_name.as_deref().map(|n| {
        let name = arn::Arn::parse(n)
            .map(|a| a.path.rsplit('/').next().unwrap_or("").to_owned())
            .unwrap_or_else(|| n.to_owned());
        format!("service:{name}")
    });
    let instance = match req.container_instance.as_deref() {
        None => None,
        Some(ci) => match arn::member_id("container-instance", ci) {
            Some((_, id)) => Some(cx.scope.container_instance_arn(&cluster, id)),
            None => return Err(EcsError::invalid(format!("Invalid container instance: {ci}"))),
        },
    };
    let family_prefix = req
        .family
        .as_deref()
        .map(|f| format!("arn:aws:ecs:{}:{}:task-definition/{f}:", cx.scope.region, cx.scope.account));
    let under = keys::tasks_of(&cx.scope, &cluster);
    let matches = State::range(&st.tasks, &under).filter(|d| {
        let t = &d.value;
        t.desired_status == Some(want)
            && group.as_deref().is_none_or(|g| t.group() == Some(g))
            && req.started_by.as_deref().is_none_or(|s| t.started_by.as_deref() == Some(s))
            && req.launch_type.is_none_or(|l| t.launch_type == Some(l))
            && instance.as_deref().is_none_or(|i| t.container_instance_arn() == Some(i))
            && family_prefix.as_deref().is_none_or(|f| t.task_definition_arn().is_some_and(|a| a.starts_with(f)))
    });
    let p = page::paginate(matches, |d| d.key.as_str(), req.next_token.as_deref(), limit, false)?;
    // A task's key is its cluster's prefix and its id; its ARN, the cluster's ARN prefix and the id.
    let arn_prefix = cx.scope.task_arn(&cluster, "");
    let ids = p.items.iter().map(|d| &d.key[under.len()..]);
    Ok(super::list_json_under("taskArns", &arn_prefix, ids, p.next_token.as_deref()))
}

/// A task's protection as the API shows it (none, or expired, is `protectionEnabled: false`).
fn protection_of(st: &State, key: &str, arn: String, now: f64) -> ProtectedTask {
    match st.task_protection.get(&keys::protection_of(key)) {
        Some(p) if task::is_protected(&p.value, now) => {
            ProtectedTask { task_arn: Some(arn), protection_enabled: true, expiration_date: p.value.expiration_date }
        }
        _ => ProtectedTask { task_arn: Some(arn), protection_enabled: false, expiration_date: None },
    }
}

pub async fn update_protection(s: &Server, cx: &Ctx, req: UpdateTaskProtectionRequest) -> Result<Bytes> {
    if req.tasks.is_empty() || req.tasks.len() > 10 {
        return Err(EcsError::invalid("Specify between 1 and 10 tasks."));
    }
    let expires =
        if req.protection_enabled { Some(task::protection_expiry(cx.now, req.expires_in_minutes)?) } else { None };
    let resp = s
        .transact::<_, EcsError>(|st| {
            let (cluster, _) = active_cluster(st, cx, Some(&req.cluster))?;
            let mut txn = Txn::new();
            let mut resp = UpdateTaskProtectionResponse { protected_tasks: Some(vec![]), failures: Some(vec![]) };
            for id in &req.tasks {
                let fail = |reason: &str, detail: Option<&str>| Failure {
                    arn: Some(id.clone()),
                    reason: Some(reason.into()),
                    detail: detail.map(str::to_owned),
                };
                let Some(d) = task_key(cx, &cluster, id).and_then(|k| st.tasks.get(&k)) else {
                    resp.failures.as_mut().unwrap().push(fail("MISSING", None));
                    continue;
                };
                // As in ECS: only tasks of a service can be protected from its scale-in.
                if !d.value.group().is_some_and(|g| g.starts_with("service:")) {
                    resp.failures.as_mut().unwrap().push(fail(
                        "TASK_NOT_VALID",
                        Some("The task is not part of a service: task scale-in protection applies to service tasks."),
                    ));
                    continue;
                }
                let arn = d.arn();
                let key = keys::protection_of(&d.key);
                let p = ProtectedTask {
                    task_arn: Some(arn),
                    protection_enabled: req.protection_enabled,
                    expiration_date: expires,
                };
                txn.compares.push(Compare::mod_revision(&d.key, d.rev));
                txn.ops.push(if req.protection_enabled { put(&key, &p) } else { estiba_store::Op::delete(&key) });
                resp.protected_tasks.as_mut().unwrap().push(p);
            }
            Ok((txn, resp))
        })
        .await?;
    Ok(json(&resp))
}

pub async fn get_protection(s: &Server, cx: &Ctx, req: GetTaskProtectionRequest) -> Result<Bytes> {
    let st = s.view.read();
    let (cluster, _) = active_cluster(&st, cx, Some(&req.cluster))?;
    let mut resp = GetTaskProtectionResponse { protected_tasks: Some(vec![]), failures: Some(vec![]) };
    match &req.tasks {
        Some(ids) => {
            for id in ids {
                match task_key(cx, &cluster, id).and_then(|k| st.tasks.get(&k)) {
                    Some(d) => {
                        let arn = d.arn();
                        resp.protected_tasks.as_mut().unwrap().push(protection_of(&st, &d.key, arn, cx.now));
                    }
                    None => resp.failures.as_mut().unwrap().push(super::missing(id.clone())),
                }
            }
        }
        // Without tasks: every protected task of the cluster.
        None => {
            for d in State::range(&st.tasks, &keys::tasks_of(&cx.scope, &cluster)) {
                let p = protection_of(&st, &d.key, d.arn(), cx.now);
                if p.protection_enabled {
                    resp.protected_tasks.as_mut().unwrap().push(p);
                }
            }
        }
    }
    Ok(json(&resp))
}

#[cfg(test)]
mod tests {
    use estiba_store::{Op, TxnLimits};

    use super::*;

    fn group(i: usize) -> Txn {
        Txn::new().then(Op::put(format!("t{i}"), "x")).then(Op::put(format!("c{i}"), "y"))
    }

    #[test]
    fn later_transactions_of_a_split_leave_room_for_their_guard() {
        let limits = TxnLimits { max_ops: 8, max_bytes: usize::MAX, per_op_overhead: 0 };
        let guard = Txn::new().when(Compare::mod_revision("i1", 1)).then(Op::put("i1", "doc"));
        let shared = guard.clone();
        let (first, n, rest) = split_task_writes(limits, shared, (0..10).map(group).collect(), &guard);
        // The first holds the shared part (its own guard) and 3 tasks of 2 operations.
        assert_eq!((n, first.ops.len()), (3, 7));
        // The others hold 3 tasks each, leaving one compare and one operation for the guard.
        assert_eq!(rest.iter().map(|(_, n)| *n).collect::<Vec<_>>(), vec![3, 3, 1]);
        assert!(rest.iter().all(|(t, _)| t.ops.len() + guard.ops.len() <= 8));
        // Without a guard (one server alone), they fill up.
        let (_, _, rest) = split_task_writes(limits, Txn::new(), (0..10).map(group).collect(), &Txn::new());
        assert_eq!(rest.iter().map(|(_, n)| *n).collect::<Vec<_>>(), vec![4, 2]);
    }
}
