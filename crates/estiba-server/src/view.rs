//! The view: a typed, indexed copy of the store, fed by its watch stream.
//!
//! Handlers and controllers read from the view (decoded documents, cluster and deployment
//! counts) and write to the store with compare-and-swap on the revision they read. After a
//! write, a handler waits for the view to reach the write's revision, so a client always
//! reads its own writes. Counts, and each task's claim (claims are keyed by node), are
//! derived here from the documents, never stored.
//!
//! ECS's and ECR's tables are fields of [`State`] (with counts kept as documents change);
//! other services register theirs ([`TableDef`], declared by the service, see
//! [`crate::services::Service::tables`]) and read them typed through [`State::docs`] and
//! [`State::doc`].

use std::any::Any;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};

use bytes::Bytes;
use estiba_api::ecs::{
    CapacityProvider, Cluster, ContainerInstance, DesiredStatus, LaunchType, Service, ServiceDeployment,
    ServiceRevision, Setting, Tag, Task, TaskDefinition,
};
use estiba_core::cluster::Counts;
use estiba_core::node::{Claim, NodeStatus};
use estiba_core::placement::{HostInfo, Need, Usage};
use estiba_core::service::DeploymentCounts;
use estiba_core::{ecr, instance, service, task};
use estiba_store::{EventKind, KeyValue, Revision, Store, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys;

/// A decoded document with the revision that wrote it and its raw JSON.
#[derive(Debug)]
pub struct Doc<T> {
    pub key: String,
    pub rev: Revision,
    pub raw: Bytes,
    pub value: T,
}

pub type Table<T> = BTreeMap<String, Arc<Doc<T>>>;

/// What the view keeps decoded of a task: the fields handlers and controllers filter and count
/// on. The whole task is decoded from its raw JSON when something needs it ([`Doc::task`]) and
/// kept only while the task is live: a server keeps an hour of stopped tasks (a CI server
/// tens of thousands), and holding each decoded cost about 5 KB of memory per task.
#[derive(Debug)]
pub struct TaskFacts {
    pub last_status: task::Status,
    pub desired_status: Option<DesiredStatus>,
    pub launch_type: Option<LaunchType>,
    /// `service:<name>` or `family:<family>`.
    pub group: Option<Arc<str>>,
    pub started_by: Option<Arc<str>>,
    pub container_instance_arn: Option<Arc<str>>,
    pub task_definition_arn: Option<Arc<str>>,
    pub stopped_at: Option<f64>,
    /// The address of its ENI (awsvpc), once a node set it up.
    pub private_ipv4: Option<std::net::Ipv4Addr>,
    /// What it reserves on its container instance, while it holds a place there (placed on
    /// one and not STOPPED).
    pub hold: Option<Need>,
    /// The whole task, once something asked for it (never for a stopped task).
    full: OnceLock<Box<Task>>,
}

impl TaskFacts {
    fn of(t: &Task, strings: &mut Interner, hold: Option<Need>) -> TaskFacts {
        let mut boxed = |s: &Option<String>| s.as_deref().map(|s| strings.get(s));
        let last_status = task::last_status(t);
        TaskFacts {
            hold: hold.filter(|_| t.container_instance_arn.is_some() && last_status != task::Status::Stopped),
            last_status,
            desired_status: t.desired_status.as_deref().and_then(DesiredStatus::from_str_opt),
            launch_type: t.launch_type,
            group: boxed(&t.group),
            started_by: boxed(&t.started_by),
            container_instance_arn: boxed(&t.container_instance_arn),
            task_definition_arn: boxed(&t.task_definition_arn),
            stopped_at: t.stopped_at,
            private_ipv4: task::private_ipv4(t),
            full: OnceLock::new(),
        }
    }

    pub fn stopped(&self) -> bool {
        self.last_status == task::Status::Stopped
    }

    pub fn desired_stopped(&self) -> bool {
        self.desired_status == Some(DesiredStatus::Stopped)
    }

    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    pub fn container_instance_arn(&self) -> Option<&str> {
        self.container_instance_arn.as_deref()
    }

    pub fn task_definition_arn(&self) -> Option<&str> {
        self.task_definition_arn.as_deref()
    }
}

/// Strings many documents repeat (task definition ARNs, groups, deployment ids, instance
/// ARNs), held once: a task's facts would otherwise be mostly copies of them.
#[derive(Default)]
struct Interner {
    set: HashSet<Arc<str>>,
    /// Size after the last sweep of strings no document holds any more.
    swept: usize,
}

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.set.get(s) {
            return a.clone();
        }
        if self.set.len() >= 2 * self.swept.max(256) {
            self.set.retain(|a| Arc::strong_count(a) > 1);
            self.swept = self.set.len();
        }
        let a: Arc<str> = Arc::from(s);
        self.set.insert(a.clone());
        a
    }
}

impl Doc<TaskFacts> {
    /// The whole task, decoded from the stored JSON (which the view decoded once already when
    /// it took the document, so this does not fail). A live task keeps it for the next call;
    /// a stopped one is decoded on every call.
    pub fn task(&self) -> Cow<'_, Task> {
        if let Some(t) = self.value.full.get() {
            return Cow::Borrowed(t);
        }
        let t = serde_json::from_slice(&self.raw).unwrap_or_else(|e| {
            tracing::error!(key = %self.key, error = %e, "a task the view decoded no longer decodes");
            Task::default()
        });
        if self.value.stopped() {
            Cow::Owned(t)
        } else {
            Cow::Borrowed(self.value.full.get_or_init(|| Box::new(t)))
        }
    }

    /// The task's ARN, from its key.
    pub fn arn(&self) -> String {
        keys::task_arn_of(&self.key).unwrap_or_default()
    }

    /// The task's id, the last segment of its key.
    pub fn id(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or("")
    }
}

/// A task definition family: the last revision number given out (revisions are never
/// reused, even after deletion).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Family {
    pub name: String,
    pub last_revision: i32,
}

/// A view table a service registers: the documents of one kind under the service's key
/// prefix (`<prefix><account>/<region>/<kind>/...`), decoded as `T`.
pub struct TableDef {
    /// The service's key prefix, ending in `/` (`elbv2/`).
    pub prefix: &'static str,
    pub kind: &'static str,
    decode: fn(&KeyValue) -> Option<Arc<dyn Any + Send + Sync>>,
}

impl TableDef {
    /// A table of documents of type `T`.
    pub const fn of<T: DeserializeOwned + Send + Sync + 'static>(prefix: &'static str, kind: &'static str) -> TableDef {
        TableDef { prefix, kind, decode: decode_doc::<T> }
    }

    fn holds(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix).and_then(|rest| rest.split('/').nth(2)) == Some(self.kind)
    }
}

fn decode_doc<T: DeserializeOwned + Send + Sync + 'static>(kv: &KeyValue) -> Option<Arc<dyn Any + Send + Sync>> {
    doc_of::<T>(kv).map(|d| d as Arc<dyn Any + Send + Sync>)
}

/// The documents of the registered tables, by key.
type AnyTable = BTreeMap<String, Arc<dyn Any + Send + Sync>>;

#[derive(Default)]
pub struct State {
    /// Registered tables, in the order given to [`View::start`].
    registered: Vec<(&'static TableDef, AnyTable)>,
    pub revision: Revision,
    pub clusters: Table<Cluster>,
    pub families: Table<Family>,
    pub taskdefs: Table<TaskDefinition>,
    pub tasks: Table<TaskFacts>,
    /// The strings tasks' facts share.
    strings: Interner,
    pub services: Table<Service>,
    pub instances: Table<ContainerInstance>,
    pub capacity_providers: Table<CapacityProvider>,
    pub settings: Table<Setting>,
    pub service_deployments: Table<ServiceDeployment>,
    pub service_revisions: Table<ServiceRevision>,
    pub tags: Table<Vec<Tag>>,
    /// Scale-in protection of tasks (UpdateTaskProtection), by protection key.
    pub task_protection: Table<estiba_api::ecs::ProtectedTask>,
    /// Blue/green, linear and canary services' traffic documents, by traffic key.
    pub traffic: Table<estiba_core::traffic::Traffic>,
    /// Task sets of services with the EXTERNAL deployment controller, by task set key.
    pub task_sets: Table<estiba_api::ecs::TaskSet>,
    /// Task key → its claim (claims are keyed by node: `keys::claim`; this is the only copy).
    pub claim_by_task: HashMap<String, Arc<Doc<Claim>>>,
    /// Node id → the keys of the tasks it holds claims of (the agent API sends a node its
    /// own; Fargate tasks are spread by their number).
    pub claims_by_node: HashMap<String, std::collections::BTreeSet<String>>,
    pub nodes: Table<NodeStatus>,
    /// With etcd, the liveness keys of the nodes that are alive ([`crate::liveness`]).
    pub node_leases: Table<estiba_core::node::NodeLease>,
    /// The VPC's address blocks, by block key ([`estiba_core::netblock`]).
    pub netblocks: Table<estiba_core::netblock::NetBlock>,
    /// Service Connect's VIPs (one document, [`estiba_core::keys::SERVICE_CONNECT_VIPS`]).
    pub service_connect: Table<estiba_core::service_connect::Vips>,
    pub ecr_repos: Table<ecr::RepoDoc>,
    pub ecr_images: Table<ecr::ImageDoc>,
    pub ecr_tags: Table<ecr::TagDoc>,
    pub ecr_blobs: Table<ecr::BlobLink>,
    /// Image key → the tags that point at it.
    pub ecr_image_tags: HashMap<String, std::collections::BTreeSet<String>>,
    /// Cluster key → counts of its tasks, services and instances.
    pub cluster_counts: HashMap<String, Counts>,
    /// (cluster key, deployment id) → task counts of the deployment.
    pub deployment_counts: HashMap<(String, String), DeploymentCounts>,
    /// Cluster key → its container instances as placement reads them.
    pub hosts: HashMap<String, Hosts>,
    /// Task key → the region and private address of each live task that has one, so the VPC
    /// resolver's zone is built from these and not from a pass over every task.
    pub task_addresses: std::collections::BTreeMap<String, (String, std::net::Ipv4Addr)>,
    /// The distinct attribute sets of container instances, shared by their `HostInfo`s.
    attribute_sets: estiba_core::placement::AttributeSets,
}

/// A container instance as placement reads it: its document, what placement needs of it
/// (worked out once per change), and what its live tasks hold (changed as tasks change).
#[derive(Debug)]
pub struct Slot {
    pub arn: Arc<str>,
    /// `None` once the document is gone (or before it arrives, for a task naming it).
    pub doc: Option<Arc<Doc<ContainerInstance>>>,
    pub info: HostInfo,
    pub used: Usage,
}

/// One cluster's container instances for placement: a vector it scans, and an index by ARN.
#[derive(Debug, Default)]
pub struct Hosts {
    by_arn: HashMap<Arc<str>, usize>,
    pub slots: Vec<Slot>,
    /// Per slot, what a placement pass reads of every host first, kept dense beside the slots
    /// (a pass over 10,000 scattered slots is bound by fetching them): refreshed wherever a
    /// slot's document, `info` or `used` changes. `in_group` is left 0 (the groups below).
    pub summaries: Vec<estiba_core::placement::Summary>,
    /// Group → its live tasks on each slot (by slot number; shorter when the last slots have
    /// none): the same counts as the slots' `used.groups`, laid out for a pass over every host.
    groups: HashMap<Arc<str>, GroupCounts>,
}

/// One group's live tasks: in all, and per slot.
#[derive(Debug, Default)]
struct GroupCounts {
    total: u64,
    per_slot: Vec<u32>,
}

impl Hosts {
    pub fn get(&self, arn: &str) -> Option<&Slot> {
        self.by_arn.get(arn).map(|&i| &self.slots[i])
    }

    /// The slot number of the instance with this ARN.
    pub fn number(&self, arn: &str) -> Option<usize> {
        self.by_arn.get(arn).copied()
    }

    /// The group's live tasks per slot (missing slots hold none).
    pub fn group_counts(&self, group: &str) -> &[u32] {
        self.groups.get(group).map_or(&[], |g| g.per_slot.as_slice())
    }

    /// Counts one task of `group` more (`sign` 1) or less (-1) on slot `i`.
    fn count_group(&mut self, group: &Arc<str>, i: usize, sign: i64) {
        let g = self.groups.entry(group.clone()).or_default();
        if g.per_slot.len() <= i {
            g.per_slot.resize(i + 1, 0);
        }
        if sign > 0 {
            g.per_slot[i] += 1;
            g.total += 1;
        } else if g.per_slot[i] > 0 {
            g.per_slot[i] -= 1;
            g.total -= 1;
        }
        if g.total == 0 {
            self.groups.remove(group);
        }
    }

    /// Works slot `i`'s summary out again, after a change of it.
    fn refresh(&mut self, i: usize) {
        let s = &self.slots[i];
        let present = s.info.registered_now && s.doc.is_some();
        let sum = estiba_core::placement::Summary::new(present, &s.info, &s.used, 0);
        if self.summaries.len() <= i {
            self.summaries.resize(i + 1, Default::default());
        }
        self.summaries[i] = sum;
    }

    fn slot_number(&mut self, arn: &str) -> usize {
        match self.by_arn.get(arn) {
            Some(&i) => i,
            None => {
                let arn: Arc<str> = Arc::from(arn);
                self.slots.push(Slot {
                    arn: arn.clone(),
                    doc: None,
                    info: HostInfo::default(),
                    used: Usage::default(),
                });
                let i = self.slots.len() - 1;
                self.by_arn.insert(arn, i);
                self.refresh(i);
                i
            }
        }
    }
}

impl State {
    fn unclaim(&mut self, node: &str, task_key: &str) {
        if let Some(set) = self.claims_by_node.get_mut(node) {
            set.remove(task_key);
            if set.is_empty() {
                self.claims_by_node.remove(node);
            }
        }
    }

    /// Documents whose key starts with `prefix`, in key order; iterable from either end.
    pub fn range<'a, T>(table: &'a Table<T>, prefix: &str) -> impl DoubleEndedIterator<Item = &'a Arc<Doc<T>>> + 'a {
        // Every key with the prefix sorts below prefix + U+10FFFF.
        let mut upper = String::with_capacity(prefix.len() + 4);
        upper.push_str(prefix);
        upper.push(char::MAX);
        table
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Excluded(upper.as_str())))
            .map(|(_, v)| v)
    }

    pub fn counts(&self, cluster_key: &str) -> Counts {
        self.cluster_counts.get(cluster_key).copied().unwrap_or_default()
    }

    /// A cluster's container instances as placement reads them.
    pub fn hosts(&self, cluster_key: &str) -> Option<&Hosts> {
        self.hosts.get(cluster_key)
    }

    pub fn deployment_counts(&self, cluster_key: &str, deployment_id: &str) -> DeploymentCounts {
        self.deployment_counts.get(&(cluster_key.to_owned(), deployment_id.to_owned())).copied().unwrap_or_default()
    }

    /// The documents of a registered table whose key starts with `prefix`, in key order.
    /// Panics when `T` is not the table's type (a programming error).
    pub fn docs<'a, T: 'static>(
        &'a self,
        def: &TableDef,
        prefix: &str,
    ) -> impl DoubleEndedIterator<Item = &'a Doc<T>> + 'a {
        let table = self.registered.iter().find(|(d, _)| std::ptr::eq(*d, def)).map(|(_, t)| t);
        let mut upper = String::with_capacity(prefix.len() + 4);
        upper.push_str(prefix);
        upper.push(char::MAX);
        let range = table
            .map(|t| t.range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Excluded(upper.as_str()))));
        range.into_iter().flatten().map(|(_, d)| d.downcast_ref::<Doc<T>>().expect("the table's document type"))
    }

    /// One document of a registered table.
    pub fn doc<T: 'static>(&self, def: &TableDef, key: &str) -> Option<&Doc<T>> {
        let table = self.registered.iter().find(|(d, _)| std::ptr::eq(*d, def)).map(|(_, t)| t)?;
        table.get(key).map(|d| d.downcast_ref::<Doc<T>>().expect("the table's document type"))
    }

    /// The tags pointing at an ECR image (by its key), in order.
    pub fn image_tags(&self, image_key: &str) -> impl Iterator<Item = &String> {
        self.ecr_image_tags.get(image_key).into_iter().flatten()
    }

    /// The claim of a task (by its key): which node runs it.
    pub fn claim(&self, task_key: &str) -> Option<&Arc<Doc<Claim>>> {
        self.claim_by_task.get(task_key)
    }

    pub fn tags_of(&self, resource_key: &str) -> Option<&[Tag]> {
        self.tags.get(&keys::tags_of(resource_key)).map(|d| d.value.as_slice())
    }

    fn apply(&mut self, kind: EventKind, kv: &KeyValue) {
        if !kv.key.starts_with("ecs/") {
            return self.apply_registered(kind, kv);
        }
        let Some((table, _)) = keys::split(&kv.key) else {
            return;
        };
        match table {
            "clusters" => {
                put(&mut self.clusters, kind, kv);
            }
            "families" => {
                put(&mut self.families, kind, kv);
            }
            "taskdefs" => {
                put(&mut self.taskdefs, kind, kv);
            }
            "tasks" => {
                let (old, new) = put_task(&mut self.tasks, &mut self.strings, &self.taskdefs, kind, kv);
                let cluster = keys::cluster_of(&kv.key).unwrap_or_default();
                let address = new.as_ref().filter(|d| !d.value.stopped()).and_then(|d| {
                    let (scope, _, _) = keys::parse_task(&d.key)?;
                    Some((scope.region, d.value.private_ipv4?))
                });
                match address {
                    Some(a) => {
                        self.task_addresses.insert(kv.key.clone(), a);
                    }
                    None => {
                        self.task_addresses.remove(&kv.key);
                    }
                }
                for (doc, sign) in [(old, -1), (new, 1)] {
                    if let Some(d) = doc {
                        let f = &d.value;
                        if let (Some(need), Some(arn)) = (&f.hold, f.container_instance_arn()) {
                            let hosts = self.hosts.entry(cluster.clone()).or_default();
                            let running = f.last_status == task::Status::Running;
                            let i = hosts.slot_number(arn);
                            hosts.slots[i].used.apply(
                                need,
                                f.group.as_ref(),
                                running,
                                f.last_status.is_pending(),
                                sign as i64,
                            );
                            hosts.refresh(i);
                            if let Some(g) = &f.group {
                                hosts.count_group(g, i, sign as i64);
                            }
                        }
                        let (c, dep) = task_contribution(&d.value);
                        self.cluster_counts.entry(cluster.clone()).or_default().add(&c, sign);
                        if let Some((id, dc)) = dep {
                            let e = self.deployment_counts.entry((cluster.clone(), id)).or_default();
                            e.running += sign * dc.running;
                            e.pending += sign * dc.pending;
                        }
                    }
                }
            }
            "services" => {
                let (old, new) = put(&mut self.services, kind, kv);
                self.adjust(
                    &kv.key,
                    old.map(|d| service_contribution(&d.value)),
                    new.map(|d| service_contribution(&d.value)),
                );
            }
            "instances" => {
                let (old, new) = put(&mut self.instances, kind, kv);
                let hosts = self.hosts.entry(keys::cluster_of(&kv.key).unwrap_or_default()).or_default();
                match (&old, &new) {
                    (_, Some(n)) => {
                        let i = hosts.slot_number(n.value.container_instance_arn.as_deref().unwrap_or_default());
                        let slot = &mut hosts.slots[i];
                        slot.info = HostInfo::of(&n.value).interned(&mut self.attribute_sets);
                        slot.doc = Some(n.clone());
                        hosts.refresh(i);
                    }
                    (Some(o), None) => {
                        let i = hosts.slot_number(o.value.container_instance_arn.as_deref().unwrap_or_default());
                        let slot = &mut hosts.slots[i];
                        slot.doc = None;
                        slot.info = HostInfo::default();
                        hosts.refresh(i);
                    }
                    (None, None) => {}
                }
                self.adjust(
                    &kv.key,
                    old.map(|d| instance_contribution(&d.value)),
                    new.map(|d| instance_contribution(&d.value)),
                );
            }
            "capacity-providers" => {
                put(&mut self.capacity_providers, kind, kv);
            }
            "settings" => {
                put(&mut self.settings, kind, kv);
            }
            "service-deployments" => {
                put(&mut self.service_deployments, kind, kv);
            }
            "service-revisions" => {
                put(&mut self.service_revisions, kind, kv);
            }
            "tags" => {
                put(&mut self.tags, kind, kv);
            }
            "task-protection" => {
                put(&mut self.task_protection, kind, kv);
            }
            "traffic" => {
                put(&mut self.traffic, kind, kv);
            }
            "task-sets" => {
                put(&mut self.task_sets, kind, kv);
            }
            "claims" => {
                let Some(task_key) = keys::task_of_claim(&kv.key) else { return };
                match (kind, doc_of::<Claim>(kv)) {
                    (EventKind::Put, Some(d)) => {
                        let node = d.value.node.clone();
                        if let Some(old) = self.claim_by_task.insert(task_key.clone(), d) {
                            self.unclaim(&old.value.node, &task_key);
                        }
                        self.claims_by_node.entry(node).or_default().insert(task_key);
                    }
                    // Only this claim's own entry goes (a task has one claim; a stale second
                    // one going away must not hide the other).
                    _ if self.claim_by_task.get(&task_key).is_some_and(|d| d.key == kv.key) => {
                        if let Some(old) = self.claim_by_task.remove(&task_key) {
                            self.unclaim(&old.value.node, &task_key);
                        }
                    }
                    _ => {}
                }
            }
            "nodes" => {
                put(&mut self.nodes, kind, kv);
            }
            "netblocks" => {
                put(&mut self.netblocks, kind, kv);
            }
            "node-leases" => {
                put(&mut self.node_leases, kind, kv);
            }
            "service-connect" => {
                put(&mut self.service_connect, kind, kv);
            }
            "ecr-repos" => {
                put(&mut self.ecr_repos, kind, kv);
            }
            "ecr-images" => {
                put(&mut self.ecr_images, kind, kv);
            }
            "ecr-blobs" => {
                put(&mut self.ecr_blobs, kind, kv);
            }
            "ecr-tags" => {
                let (old, new) = put(&mut self.ecr_tags, kind, kv);
                let Some((repo_key, tag)) = kv.key.rsplit_once(':') else { return };
                let image_key = |digest: &str| format!("{}@{digest}", ecr::rekind(repo_key, "ecr-images"));
                if let Some(o) = old {
                    let k = image_key(&o.value.digest);
                    if let Some(set) = self.ecr_image_tags.get_mut(&k) {
                        set.remove(tag);
                        if set.is_empty() {
                            self.ecr_image_tags.remove(&k);
                        }
                    }
                }
                if let Some(n) = new {
                    self.ecr_image_tags.entry(image_key(&n.value.digest)).or_default().insert(tag.to_owned());
                }
            }
            other => tracing::warn!(kind = other, key = %kv.key, "unknown key kind in store"),
        }
    }

    fn apply_registered(&mut self, kind: EventKind, kv: &KeyValue) {
        if kv.key.strip_prefix(keys::ELECTION).is_some_and(|rest| rest.starts_with('/')) {
            return;
        }
        let Some((def, table)) = self.registered.iter_mut().find(|(d, _)| d.holds(&kv.key)) else {
            return tracing::warn!(key = %kv.key, "a key no service registered a table for");
        };
        // A deletion carries no value to decode (etcd's delete events have none).
        match (kind == EventKind::Put).then(|| (def.decode)(kv)).flatten() {
            Some(d) => {
                table.insert(kv.key.clone(), d);
            }
            None => {
                table.remove(&kv.key);
            }
        }
    }

    fn adjust(&mut self, key: &str, old: Option<Counts>, new: Option<Counts>) {
        let cluster = keys::cluster_of(key).unwrap_or_default();
        let e = self.cluster_counts.entry(cluster).or_default();
        if let Some(o) = old {
            e.add(&o, -1);
        }
        if let Some(n) = new {
            e.add(&n, 1);
        }
    }
}

/// A document's version before and after a change.
type Change<T> = (Option<Arc<Doc<T>>>, Option<Arc<Doc<T>>>);

/// Replaces or removes a document; returns the old and new versions.
fn put<T: DeserializeOwned>(table: &mut Table<T>, kind: EventKind, kv: &KeyValue) -> Change<T> {
    match (kind, doc_of(kv)) {
        (EventKind::Put, Some(doc)) => (table.insert(kv.key.clone(), doc.clone()), Some(doc)),
        _ => (table.remove(&kv.key), None),
    }
}

/// [`put`] for tasks: the view keeps their [`TaskFacts`], with what a task placed on a
/// container instance reserves there (from its task definition, read once here).
fn put_task(
    table: &mut Table<TaskFacts>,
    strings: &mut Interner,
    taskdefs: &Table<TaskDefinition>,
    kind: EventKind,
    kv: &KeyValue,
) -> Change<TaskFacts> {
    // A task whose task definition was deleted keeps the reservation it had.
    let before = table.get(&kv.key).and_then(|d| d.value.hold.clone());
    let doc = decoded::<Task>(kv).map(|t| {
        let hold = t.container_instance_arn.as_ref().map(|_| {
            let td = t
                .task_definition_arn
                .as_deref()
                .and_then(estiba_core::arn::TaskDefRef::parse)
                .zip(keys::parse_task(&kv.key))
                .and_then(|(r, (scope, _, _))| {
                    taskdefs.get(&keys::taskdef(&scope, &r.family, r.revision.unwrap_or(0)))
                });
            match td {
                Some(td) => estiba_core::placement::need_of(&td.value, t.overrides.as_ref()),
                None => before.unwrap_or_default(),
            }
        });
        Arc::new(Doc {
            key: kv.key.clone(),
            rev: kv.mod_revision,
            raw: kv.value.clone(),
            value: TaskFacts::of(&t, strings, hold),
        })
    });
    match (kind, doc) {
        (EventKind::Put, Some(doc)) => (table.insert(kv.key.clone(), doc.clone()), Some(doc)),
        _ => (table.remove(&kv.key), None),
    }
}

/// A stored document, decoded; `None` (logged) when it does not decode.
fn doc_of<T: DeserializeOwned>(kv: &KeyValue) -> Option<Arc<Doc<T>>> {
    let value = decoded(kv)?;
    Some(Arc::new(Doc { key: kv.key.clone(), rev: kv.mod_revision, raw: kv.value.clone(), value }))
}

fn decoded<T: DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    serde_json::from_slice::<T>(&kv.value)
        .map_err(|e| tracing::error!(key = %kv.key, error = %e, "undecodable document in store; ignored"))
        .ok()
}

fn task_contribution(t: &TaskFacts) -> (Counts, Option<(String, DeploymentCounts)>) {
    let st = t.last_status;
    let fargate = t.launch_type == Some(LaunchType::Fargate);
    let mut c = Counts::default();
    let mut d = DeploymentCounts::default();
    if st == task::Status::Running {
        d.running = 1;
        if fargate {
            c.running_fargate = 1
        } else {
            c.running_ec2 = 1
        }
    } else if st.is_pending() {
        d.pending = 1;
        if fargate {
            c.pending_fargate = 1
        } else {
            c.pending_ec2 = 1
        }
    }
    let dep =
        t.group.as_deref().filter(|g| g.starts_with("service:")).and(t.started_by.as_deref()).map(|id| (id.into(), d));
    (c, dep)
}

fn service_contribution(s: &Service) -> Counts {
    let mut c = Counts::default();
    let fargate = service::is_fargate(s);
    match service::status(s) {
        service::ACTIVE if fargate => c.active_fargate_services = 1,
        service::ACTIVE => c.active_ec2_services = 1,
        service::DRAINING if fargate => c.draining_fargate_services = 1,
        service::DRAINING => c.draining_ec2_services = 1,
        _ => {}
    }
    c
}

fn instance_contribution(ci: &ContainerInstance) -> Counts {
    Counts { registered_instances: instance::is_registered(ci) as i32, ..Default::default() }
}

pub struct View {
    state: RwLock<State>,
    revision: tokio::sync::watch::Sender<Revision>,
    tables: Vec<&'static TableDef>,
}

impl View {
    /// Loads the whole store and keeps following it: ECS's and ECR's documents and the
    /// tables services register.
    pub async fn start(
        store: Arc<dyn Store>,
        tables: impl IntoIterator<Item = &'static TableDef>,
    ) -> Result<Arc<View>, StoreError> {
        let (tx, _) = tokio::sync::watch::channel(0);
        let tables: Vec<&'static TableDef> = tables.into_iter().collect();
        let view = Arc::new(View { state: RwLock::new(State::default()), revision: tx, tables });
        let rev = view.reload(&*store).await?;
        let v = view.clone();
        tokio::spawn(async move { v.follow(store, rev).await });
        Ok(view)
    }

    /// What the view lists and watches: ECS's and ECR's keys (`ecs/`), or the whole store once
    /// a service registers tables under a prefix of its own (one listing keeps one revision).
    fn prefix(&self) -> &'static str {
        if self.tables.iter().all(|d| d.prefix.starts_with("ecs/")) {
            "ecs/"
        } else {
            ""
        }
    }

    async fn reload(&self, store: &dyn Store) -> Result<Revision, StoreError> {
        let all = store.range(self.prefix()).await?;
        let registered = self.tables.iter().map(|d| (*d, AnyTable::new())).collect();
        let mut st = State { revision: all.revision, registered, ..Default::default() };
        for kv in &all.kvs {
            st.apply(EventKind::Put, kv);
        }
        *self.state.write().unwrap() = st;
        self.revision.send_replace(all.revision);
        Ok(all.revision)
    }

    async fn follow(self: Arc<Self>, store: Arc<dyn Store>, mut rev: Revision) {
        loop {
            let mut watch = match store.watch(self.prefix(), rev) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "view watch failed; reloading");
                    match self.reload(&*store).await {
                        Ok(r) => rev = r,
                        Err(e) => {
                            tracing::error!(error = %e, "view reload failed");
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                    }
                    continue;
                }
            };
            loop {
                match watch.next().await {
                    Ok(batch) => {
                        {
                            let mut st = self.state.write().unwrap();
                            for e in &batch.events {
                                st.apply(e.kind.clone(), &e.kv);
                            }
                            st.revision = batch.revision;
                        }
                        rev = batch.revision;
                        self.revision.send_replace(rev);
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "view fell behind the store; reloading");
                        if let Ok(r) = self.reload(&*store).await {
                            rev = r;
                        }
                        break;
                    }
                }
            }
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap()
    }

    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Waits until the view holds every write up to `rev`.
    pub async fn wait_for(&self, rev: Revision) {
        let mut rx = self.revision.subscribe();
        let _ = rx.wait_for(|r| *r >= rev).await;
    }

    /// Subscribes to revision changes: controllers wake on them.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.revision.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_store::{MemStore, Op, Txn};

    #[derive(Debug, Deserialize, PartialEq)]
    struct Thing {
        n: u32,
    }

    static THINGS: TableDef = TableDef::of::<Thing>("test/", "things");
    static OTHERS: TableDef = TableDef::of::<Thing>("test/", "others");

    #[tokio::test]
    async fn registered_tables_follow_the_store() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        store.txn(Txn::new().then(Op::put("test/a/r/things/1", &br#"{"n":1}"#[..]))).await.unwrap();
        let view = View::start(store.clone(), [&THINGS, &OTHERS]).await.unwrap();
        let r = store
            .txn(
                Txn::new()
                    .then(Op::put("test/a/r/things/2", &br#"{"n":2}"#[..]))
                    .then(Op::put("test/a/r/others/1", &br#"{"n":9}"#[..]))
                    .then(Op::put("test/a/r/things/bad", &b"not json"[..])),
            )
            .await
            .unwrap();
        view.wait_for(r.revision).await;
        {
            let st = view.read();
            let ns: Vec<u32> = st.docs::<Thing>(&THINGS, "test/a/r/things/").map(|d| d.value.n).collect();
            assert_eq!(ns, [1, 2]);
            assert_eq!(st.doc::<Thing>(&OTHERS, "test/a/r/others/1").map(|d| d.value.n), Some(9));
            assert!(st.doc::<Thing>(&THINGS, "test/a/r/things/bad").is_none());
            assert_eq!(st.docs::<Thing>(&THINGS, "test/b/").count(), 0);
        }
        let r = store.txn(Txn::new().then(Op::delete("test/a/r/things/1"))).await.unwrap();
        view.wait_for(r.revision).await;
        assert_eq!(view.read().docs::<Thing>(&THINGS, "test/").count(), 1);
    }

    #[test]
    fn interned_strings_are_shared_and_swept() {
        let mut i = Interner::default();
        let a = i.get("arn:aws:ecs:r:1:task-definition/web:1");
        assert!(Arc::ptr_eq(&a, &i.get("arn:aws:ecs:r:1:task-definition/web:1")));
        for n in 0..600 {
            i.get(&format!("unheld-{n}"));
        }
        // Sweeps drop what nothing holds, never what something does.
        assert!(i.set.len() < 600);
        assert!(Arc::ptr_eq(&a, &i.get("arn:aws:ecs:r:1:task-definition/web:1")));
    }

    /// Tasks are kept as facts plus raw JSON: decoded in full on demand, and kept decoded only
    /// while live. Counts follow the facts.
    #[tokio::test]
    async fn tasks_decode_on_demand() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let view = View::start(store.clone(), []).await.unwrap();
        let key = "ecs/1/r/tasks/c/abc";
        let task = |status: &str| Task {
            task_arn: Some("arn:aws:ecs:r:1:task/c/abc".into()),
            last_status: Some(status.into()),
            desired_status: Some("RUNNING".into()),
            launch_type: Some(LaunchType::Fargate),
            group: Some("service:web".into()),
            started_by: Some("ecs-svc/1".into()),
            cpu: Some("256".into()),
            ..Default::default()
        };
        let write = |t: Task| {
            let store = store.clone();
            async move { store.txn(Txn::new().then(Op::put(key, serde_json::to_vec(&t).unwrap()))).await.unwrap() }
        };
        view.wait_for(write(task("RUNNING")).await.revision).await;
        {
            let st = view.read();
            let d = st.tasks.get(key).unwrap();
            assert_eq!((d.value.last_status, d.value.group()), (task::Status::Running, Some("service:web")));
            assert_eq!(d.arn(), "arn:aws:ecs:r:1:task/c/abc");
            assert!(d.value.full.get().is_none());
            assert_eq!(d.task().cpu.as_deref(), Some("256"));
            assert!(matches!(d.task(), Cow::Borrowed(_)), "a live task stays decoded");
            assert_eq!(st.counts("ecs/1/r/clusters/c").running_fargate, 1);
            assert_eq!(st.deployment_counts("ecs/1/r/clusters/c", "ecs-svc/1").running, 1);
        }
        view.wait_for(write(task("STOPPED")).await.revision).await;
        let st = view.read();
        let d = st.tasks.get(key).unwrap();
        assert!(matches!(d.task(), Cow::Owned(_)), "a stopped task is decoded on each call");
        assert!(d.value.full.get().is_none());
        assert_eq!(st.counts("ecs/1/r/clusters/c").running_fargate, 0);
    }

    /// Placement's per-group counts and the resolver's task addresses follow tasks as they
    /// are placed, move and stop, like the per-instance usage they stand beside.
    #[tokio::test]
    async fn group_counts_and_addresses_follow_tasks() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let view = View::start(store.clone(), []).await.unwrap();
        let instance = |n: u32| format!("arn:aws:ecs:r:1:container-instance/c/i{n}");
        let task = |id: &str, on: u32, status: &str, ip: Option<&str>| Task {
            task_arn: Some(format!("arn:aws:ecs:r:1:task/c/{id}")),
            last_status: Some(status.into()),
            group: Some("service:web".into()),
            container_instance_arn: Some(instance(on)),
            attachments: ip.map(|ip| {
                vec![estiba_api::ecs::Attachment {
                    r#type: Some("ElasticNetworkInterface".into()),
                    details: Some(vec![estiba_api::ecs::KeyValuePair {
                        name: Some("privateIPv4Address".into()),
                        value: Some(ip.into()),
                    }]),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        };
        let write = |id: &str, t: Task| {
            let (store, key) = (store.clone(), format!("ecs/1/r/tasks/c/{id}"));
            async move { store.txn(Txn::new().then(Op::put(key, serde_json::to_vec(&t).unwrap()))).await.unwrap() }
        };
        let check = |want: &[u32], addresses: &[&str]| {
            let st = view.read();
            let hosts = st.hosts("ecs/1/r/clusters/c").unwrap();
            for (n, &count) in want.iter().enumerate() {
                let slot = hosts.get(&instance(n as u32)).map(|s| s.used.group_count("service:web"));
                let i = hosts.by_arn.get(instance(n as u32).as_str()).copied();
                let dense = i.and_then(|i| hosts.group_counts("service:web").get(i).copied()).unwrap_or(0);
                assert_eq!((slot.unwrap_or(0), dense), (count, count), "instance {n}");
            }
            let ips: Vec<String> = st.task_addresses.values().map(|(r, ip)| format!("{r}/{ip}")).collect();
            assert_eq!(ips, addresses);
        };
        write("a", task("a", 0, "PENDING", Some("10.0.0.5"))).await;
        write("b", task("b", 1, "RUNNING", None)).await;
        view.wait_for(write("c", task("c", 1, "RUNNING", Some("10.0.0.6"))).await.revision).await;
        check(&[1, 2], &["r/10.0.0.5", "r/10.0.0.6"]);
        view.wait_for(write("c", task("c", 1, "STOPPED", Some("10.0.0.6"))).await.revision).await;
        check(&[1, 1], &["r/10.0.0.5"]);
        let r = store.txn(Txn::new().then(Op::delete("ecs/1/r/tasks/c/a"))).await.unwrap();
        view.wait_for(r.revision).await;
        check(&[0, 1], &[]);
        assert!(view.read().hosts("ecs/1/r/clusters/c").unwrap().groups.contains_key("service:web"));
        view.wait_for(write("b", task("b", 1, "STOPPED", None)).await.revision).await;
        check(&[0, 0], &[]);
        assert!(view.read().hosts("ecs/1/r/clusters/c").unwrap().groups.is_empty(), "an empty group is dropped");
    }
}
