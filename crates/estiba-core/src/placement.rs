//! Task placement on container instances (EC2 and EXTERNAL launch types): resources, host
//! ports, required attributes, placement constraints (distinctInstance, memberOf) and
//! strategies (binpack, spread, random), with ECS's failure reasons (`RESOURCE:CPU`,
//! `RESOURCE:MEMORY`, `RESOURCE:PORTS`, `ATTRIBUTE`, and the unsatisfied constraint).
//!
//! Pure: the caller gives each instance's registered capacity and what its live tasks hold
//! ([`Usage`], kept by the server's view as tasks change), so placement never scans tasks.
//! Placing `count` tasks costs one pass over the instances plus `count` small selections:
//! strategies are compared in order, each a tie-breaker for the ones before, and what is
//! still tied is broken by a per-request random order.
//!
//! Fargate tasks do not come here: Fargate capacity is not reserved (see the agent's node).

use std::sync::Arc;

use estiba_api::ecs::{
    Attribute, ContainerInstance, Failure, NetworkMode, PlacementConstraint, PlacementConstraintType,
    PlacementStrategy, PlacementStrategyType, TaskDefinition, TaskDefinitionPlacementConstraintType, TaskOverride,
    TransportProtocol,
};

use crate::instance::{Capacity, Queried};
use crate::query;
use crate::taskdef;

/// What one task reserves on an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Need {
    pub cpu: i64,
    pub memory: i64,
    pub ports: Vec<(i32, TransportProtocol)>,
}

/// A task's reservation: task-level sizes when set, else the sum of its containers'.
pub fn need_of(td: &TaskDefinition, overrides: Option<&TaskOverride>) -> Need {
    let size = taskdef::task_size(
        overrides.and_then(|o| o.cpu.as_deref()).or(td.cpu.as_deref()),
        overrides.and_then(|o| o.memory.as_deref()).or(td.memory.as_deref()),
    )
    .unwrap_or_default();
    let mode = taskdef::network_mode(td);
    let mut need = Need::default();
    let mut cpu = 0i64;
    let mut mem = 0i64;
    for c in td.container_definitions.iter().flatten() {
        let o =
            overrides.and_then(|o| o.container_overrides.as_ref()).and_then(|l| l.iter().find(|x| x.name == c.name));
        cpu += o.and_then(|o| o.cpu).unwrap_or(c.cpu) as i64;
        mem +=
            o.and_then(|o| o.memory.or(o.memory_reservation)).or(c.memory_reservation.or(c.memory)).unwrap_or(0) as i64;
        if matches!(mode, NetworkMode::Bridge | NetworkMode::Host) {
            for pm in c.port_mappings.iter().flatten() {
                let host = if mode == NetworkMode::Host { pm.container_port } else { pm.host_port };
                if let Some(p) = host.filter(|&p| p > 0) {
                    need.ports.push((p, pm.protocol.unwrap_or(TransportProtocol::Tcp)));
                }
            }
        }
    }
    need.cpu = size.cpu.map_or(cpu, i64::from);
    need.memory = size.memory.map_or(mem, i64::from);
    need
}

/// What the live (not STOPPED) tasks on one container instance hold. The server's view keeps
/// one per instance and changes it as tasks are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu: i64,
    pub memory: i64,
    /// Host ports held, one entry per task's mapping.
    pub ports: Vec<(i32, TransportProtocol)>,
    /// Live tasks per group (`service:<name>`, `family:<family>`).
    pub groups: Vec<(Arc<str>, u32)>,
    pub running: i64,
    pub pending: i64,
}

/// No task on the instance.
pub static NO_USAGE: Usage = Usage { cpu: 0, memory: 0, ports: Vec::new(), groups: Vec::new(), running: 0, pending: 0 };

impl Usage {
    /// Adds (`sign` 1) or takes away (`sign` -1) one task's hold.
    pub fn apply(&mut self, need: &Need, group: Option<&Arc<str>>, running: bool, pending: bool, sign: i64) {
        self.cpu += sign * need.cpu;
        self.memory += sign * need.memory;
        self.running += sign * running as i64;
        self.pending += sign * pending as i64;
        for p in &need.ports {
            if sign > 0 {
                self.ports.push(*p);
            } else if let Some(i) = self.ports.iter().position(|x| x == p) {
                self.ports.swap_remove(i);
            }
        }
        if let Some(g) = group {
            match self.groups.iter().position(|(x, _)| x == g) {
                Some(i) if sign < 0 => {
                    self.groups[i].1 = self.groups[i].1.saturating_sub(1);
                    if self.groups[i].1 == 0 {
                        self.groups.swap_remove(i);
                    }
                }
                Some(i) => self.groups[i].1 += 1,
                None if sign > 0 => self.groups.push((g.clone(), 1)),
                None => {}
            }
        }
    }

    pub fn group_count(&self, group: &str) -> u32 {
        self.groups.iter().find(|(g, _)| &**g == group).map_or(0, |(_, n)| *n)
    }

    pub fn is_empty(&self) -> bool {
        self.cpu == 0 && self.memory == 0 && self.ports.is_empty() && self.groups.is_empty()
    }
}

/// What placement reads of a container instance document, worked out once per change of it
/// (the server's view keeps one per instance).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub registered: Capacity,
    /// Attribute names and values, sorted by name. Instances mostly share one set: the view
    /// interns them ([`HostInfo::interned`]) and placement works each set out once.
    pub attributes: Arc<[(String, Option<String>)]>,
    /// ACTIVE: new tasks may go here (not DRAINING, not INACTIVE).
    pub usable: bool,
    /// ACTIVE or DRAINING ([`crate::instance::is_registered`]): what callers list as hosts,
    /// read here so that listing them does not touch each instance's document.
    pub registered_now: bool,
}

impl HostInfo {
    pub fn of(ci: &ContainerInstance) -> HostInfo {
        let mut attributes: Vec<(String, Option<String>)> =
            ci.attributes.iter().flatten().map(|a| (a.name.clone(), a.value.clone())).collect();
        attributes.sort();
        HostInfo {
            registered: crate::instance::registered_capacity(ci),
            attributes: attributes.into(),
            usable: crate::instance::status(ci) == "ACTIVE",
            registered_now: crate::instance::is_registered(ci),
        }
    }

    /// The same, its attribute set shared with the equal ones in `sets`.
    pub fn interned(mut self, sets: &mut AttributeSets) -> HostInfo {
        match sets.get(&*self.attributes) {
            Some(a) => self.attributes = a.clone(),
            None => {
                sets.insert(self.attributes.clone());
            }
        }
        self
    }

    /// The attribute's value: `Some("")` when it exists without one.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        let i = self.attributes.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok()?;
        Some(self.attributes[i].1.as_deref().unwrap_or(""))
    }

    fn has(&self, want: &Attribute) -> bool {
        match self.attribute(&want.name) {
            None => false,
            Some(v) => want.value.as_deref().is_none_or(|w| w == v),
        }
    }
}

/// Distinct attribute sets of instances ([`HostInfo::interned`]).
pub type AttributeSets = std::collections::HashSet<Arc<[(String, Option<String>)]>>;

/// One container instance as placement sees it.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    /// The caller's own number for the instance (the server's view: its slot).
    pub id: usize,
    pub arn: &'a str,
    pub ci: &'a ContainerInstance,
    pub info: &'a HostInfo,
    pub used: &'a Usage,
    /// The live tasks of the request's group on it (`used.group_count(group)`, which the
    /// server's view keeps in one vector per group so that a pass over thousands of hosts
    /// reads no per-host allocation).
    pub in_group: u32,
}

impl<'a> Host<'a> {
    pub fn usable(&self) -> bool {
        self.info.usable
    }

    /// The instance as the cluster query language sees it.
    pub fn queried(&self) -> Queried<'a> {
        Queried { ci: self.ci, used: self.used, added: None }
    }
}

/// What this request has placed on one host so far.
#[derive(Clone, Debug, Default)]
struct Added {
    cpu: i64,
    memory: i64,
    ports: Vec<(i32, TransportProtocol)>,
    tasks: u32,
}

/// A compiled placement constraint.
pub type Constraint = (PlacementConstraintType, Option<query::Expr>);

/// What is being placed: one task's needs, its group, and the request's rules.
pub struct Request<'r> {
    pub need: &'r Need,
    pub group: &'r str,
    /// The task definition's `requiresAttributes`.
    pub required: &'r [Attribute],
    pub constraints: &'r [Constraint],
    pub strategies: &'r [PlacementStrategy],
}

/// A reason ECS gives for an instance that cannot take the task, with a detail.
type Rejection = (&'static str, Option<String>);

/// Why `host` (with `added` from this request) cannot take one more task, or `None`.
fn rejection(host: &Host<'_>, added: Option<&Added>, req: &Request<'_>) -> Option<Rejection> {
    if let Some(a) = req.required.iter().find(|a| !host.info.has(a)) {
        return Some(("ATTRIBUTE", Some(format!("MissingAttribute: {}", a.name))));
    }
    rejection_but_attributes(host, added, req)
}

/// [`rejection`] once the required attributes are known to be there.
fn rejection_but_attributes(host: &Host<'_>, added: Option<&Added>, req: &Request<'_>) -> Option<Rejection> {
    let placed_here = added.map_or(0, |a| a.tasks);
    for (kind, expr) in req.constraints {
        match kind {
            PlacementConstraintType::DistinctInstance => {
                if host.in_group + placed_here > 0 {
                    return Some(("DistinctInstance placement constraint unsatisfied.", None));
                }
            }
            PlacementConstraintType::MemberOf => {
                if let Some(e) = expr {
                    let q = Queried {
                        ci: host.ci,
                        used: host.used,
                        added: (placed_here > 0).then_some((req.group, placed_here)),
                    };
                    if !query::eval(e, &q) {
                        return Some(("MemberOf placement constraint unsatisfied.", None));
                    }
                }
            }
        }
    }
    let (acpu, amem) = added.map_or((0, 0), |a| (a.cpu, a.memory));
    if host.info.registered.cpu - host.used.cpu - acpu < req.need.cpu {
        return Some(("RESOURCE:CPU", None));
    }
    if host.info.registered.memory - host.used.memory - amem < req.need.memory {
        return Some(("RESOURCE:MEMORY", None));
    }
    let taken = |p: &(i32, TransportProtocol)| {
        host.info.registered.ports.contains(p)
            || host.used.ports.contains(p)
            || added.is_some_and(|a| a.ports.contains(p))
    };
    if req.need.ports.iter().any(taken) {
        return Some(("RESOURCE:PORTS", None));
    }
    None
}

/// Parses placement constraints once per request.
pub fn compile_constraints(cs: &[PlacementConstraint]) -> crate::Result<Vec<Constraint>> {
    if cs.len() > 10 {
        return Err(crate::EcsError::invalid("At most 10 placement constraints can be specified."));
    }
    cs.iter()
        .map(|c| {
            let kind = c.r#type.unwrap_or(PlacementConstraintType::MemberOf);
            let expr = match (kind, c.expression.as_deref()) {
                (PlacementConstraintType::MemberOf, Some(e)) => Some(query::parse(e)?),
                (PlacementConstraintType::MemberOf, None) => {
                    return Err(crate::EcsError::invalid("A memberOf placement constraint needs an expression."))
                }
                (PlacementConstraintType::DistinctInstance, Some(_)) => {
                    return Err(crate::EcsError::invalid(
                        "A distinctInstance placement constraint takes no expression.",
                    ))
                }
                _ => None,
            };
            Ok((kind, expr))
        })
        .collect()
}

/// The task definition's `placementConstraints` (memberOf only), which apply to every task
/// of it besides the request's own.
pub fn taskdef_constraints(td: &TaskDefinition) -> crate::Result<Vec<Constraint>> {
    let cs: Vec<PlacementConstraint> = td
        .placement_constraints
        .iter()
        .flatten()
        .filter(|c| c.r#type.is_none_or(|t| t == TaskDefinitionPlacementConstraintType::MemberOf))
        .map(|c| PlacementConstraint {
            r#type: Some(PlacementConstraintType::MemberOf),
            expression: c.expression.clone(),
        })
        .collect();
    compile_constraints(&cs)
}

pub fn validate_strategies(ss: &[PlacementStrategy]) -> crate::Result<()> {
    if ss.len() > 5 {
        return Err(crate::EcsError::invalid("At most 5 placement strategies can be specified."));
    }
    for s in ss {
        match (s.r#type, s.field.as_deref()) {
            (Some(PlacementStrategyType::Binpack), Some(f))
                if f.eq_ignore_ascii_case("cpu") || f.eq_ignore_ascii_case("memory") => {}
            (Some(PlacementStrategyType::Binpack), _) => {
                return Err(crate::EcsError::invalid("The binpack placement strategy takes field cpu or memory."))
            }
            (Some(PlacementStrategyType::Spread), Some(f))
                if f.eq_ignore_ascii_case("instanceId")
                    || f.eq_ignore_ascii_case("host")
                    || f.strip_prefix("attribute:").is_some_and(|a| !a.is_empty()) => {}
            (Some(PlacementStrategyType::Spread), _) => return Err(crate::EcsError::invalid(
                "The spread placement strategy takes field instanceId, host, or attribute:<name>, such as attribute:ecs.availability-zone.",
            )),
            (Some(PlacementStrategyType::Random), _) | (None, _) => {}
        }
    }
    Ok(())
}

/// The strategy a service without one gets, as in ECS: spread over availability zones.
pub fn default_service_strategies() -> Vec<PlacementStrategy> {
    vec![PlacementStrategy {
        r#type: Some(PlacementStrategyType::Spread),
        field: Some("attribute:ecs.availability-zone".into()),
    }]
}

/// One component of the order strategies put on hosts (lower is better).
#[derive(Clone, Copy, Debug)]
enum Part {
    /// binpack: least remaining first.
    LeftCpu,
    LeftMemory,
    /// spread on instanceId: fewest tasks of the group first.
    Group,
    /// spread on an attribute: fewest tasks of the group among hosts with the same value.
    Attr(usize),
}

/// What a placement pass works out once per attribute set: whether it has the required
/// attributes, the ids of its values of the spread attributes, and its bucket.
type SetFacts = (bool, [usize; 5], usize);

/// At most 5 strategies plus the random tie-break.
type Key = [i64; 6];

/// A host that can take the task, with what ordering it needs.
#[derive(Clone, Debug)]
struct Cand {
    idx: usize,
    bucket: usize,
    left_cpu: i64,
    left_mem: i64,
    group: i64,
    rand: i64,
    ok: bool,
    /// Its order within its bucket (the attribute parts left out), for the selection.
    within: Key,
}

/// The random tie-break of host `i` once it holds `added` of the request's tasks: drawn again
/// for each task placed there, so `random` (or a tie) sends tasks to different hosts.
fn tie(seed: u64, i: usize, added: u32) -> i64 {
    mix(seed.wrapping_add((added as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)), i as u64)
}

/// splitmix64: a well-mixed 64-bit value per (seed, host).
fn mix(seed: u64, i: u64) -> i64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// What the placement pass reads of every host before it looks closer. A pass over 10,000
/// hosts is bound by fetching each host's data from memory, so a fleet may keep these densely
/// (the server's view does: ~50 bytes a host) and the pass reads a host in full
/// ([`Fleet::host`]) only when it could be picked, or for the first host of an attribute set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Whether [`Fleet::host`] answers for it.
    pub present: bool,
    /// [`Host::usable`].
    pub usable: bool,
    /// Its attribute set, by address ([`set_id`]): hosts with one interned set share it.
    pub set: usize,
    /// Registered less used, before this request.
    pub left_cpu: i64,
    pub left_mem: i64,
    /// [`Host::in_group`].
    pub in_group: u32,
}

impl Summary {
    pub fn of(h: &Host<'_>) -> Summary {
        Summary::new(true, h.info, h.used, h.in_group)
    }

    /// The summary of an instance with this info and usage (`present`: [`Fleet::host`]
    /// answers for it).
    pub fn new(present: bool, info: &HostInfo, used: &Usage, in_group: u32) -> Summary {
        Summary {
            present,
            usable: info.usable,
            set: set_id(&info.attributes),
            left_cpu: info.registered.cpu - used.cpu,
            left_mem: info.registered.memory - used.memory,
            in_group,
        }
    }
}

/// An attribute set's identity: its address (interned sets: equal sets, one address).
pub fn set_id(attributes: &Arc<[(String, Option<String>)]>) -> usize {
    Arc::as_ptr(attributes) as *const () as usize
}

/// The container instances a request may place on, by number: a host's number is its
/// [`Host::id`]. The server's view answers from its slots as placement asks, so a request
/// builds no list of its cluster's instances (10,000 of them are half a megabyte).
pub trait Fleet<'a> {
    /// One past the highest number.
    fn end(&self) -> usize;
    /// The host numbered `i`, when there is one (a registered instance) the request may use.
    fn host(&self, i: usize) -> Option<Host<'a>>;
    /// What the pass reads of host `i` first; must agree with [`Fleet::host`] (absent when
    /// it is `None`, else [`Summary::of`] its host).
    fn summary(&self, i: usize) -> Summary {
        self.host(i).map_or(Summary::default(), |h| Summary::of(&h))
    }
}

/// A list of hosts whose numbers are their places in it.
impl<'a> Fleet<'a> for [Host<'a>] {
    fn end(&self) -> usize {
        self.len()
    }

    fn host(&self, i: usize) -> Option<Host<'a>> {
        self.get(i).copied()
    }
}

impl<'a> Fleet<'a> for Vec<Host<'a>> {
    fn end(&self) -> usize {
        self.len()
    }

    fn host(&self, i: usize) -> Option<Host<'a>> {
        self.get(i).copied()
    }
}

/// Places tasks on `hosts` for one request, remembering what it placed, so several calls
/// (RunTask's count, StartTask's instances) see each other's tasks.
pub struct Placer<'h, 'a, F: Fleet<'a> + ?Sized = [Host<'a>]> {
    hosts: &'h F,
    _hosts: std::marker::PhantomData<Host<'a>>,
    added: Vec<(usize, Added)>,
    /// Host index → its position in `added` plus one (0: nothing added), once anything is.
    at: Vec<u32>,
}

/// The outcome of placing `count` tasks: the host index of each placed task, in order, and
/// when some could not be placed, one failure per instance saying why.
#[derive(Debug, Default)]
pub struct Placement {
    pub picks: Vec<usize>,
    pub failures: Vec<Failure>,
}

impl<'h, 'a, F: Fleet<'a> + ?Sized> Placer<'h, 'a, F> {
    pub fn new(hosts: &'h F) -> Self {
        Placer { hosts, _hosts: std::marker::PhantomData, added: Vec::new(), at: Vec::new() }
    }

    fn added(&self, idx: usize) -> Option<&Added> {
        match self.at.get(idx) {
            Some(&p) if p > 0 => Some(&self.added[p as usize - 1].1),
            _ => None,
        }
    }

    fn reserve(&mut self, idx: usize, need: &Need) {
        if self.at.is_empty() {
            self.at = vec![0; self.hosts.end()];
        }
        let pos = match self.at[idx] {
            0 => {
                self.added.push((idx, Added::default()));
                self.at[idx] = self.added.len() as u32;
                self.added.len() - 1
            }
            p => p as usize - 1,
        };
        let a = &mut self.added[pos].1;
        a.cpu += need.cpu;
        a.memory += need.memory;
        a.ports.extend(need.ports.iter().copied());
        a.tasks += 1;
    }

    /// Why no usable host can take the task: one failure per usable instance.
    fn failures(&self, req: &Request<'_>) -> Vec<Failure> {
        (0..self.hosts.end())
            .filter_map(|i| Some((i, self.hosts.host(i)?)))
            .filter(|(_, h)| h.usable())
            .filter_map(|(i, h)| {
                rejection(&h, self.added(i), req).map(|(reason, detail)| Failure {
                    arn: Some(h.arn.to_owned()),
                    reason: Some(reason.into()),
                    detail,
                })
            })
            .collect()
    }

    /// Counts a task another request placed on the host at `idx` and has not written yet:
    /// its resources are taken, and it counts for spread and distinctInstance when it is of
    /// this request's group.
    pub fn hold_other(&mut self, idx: usize, need: &Need, same_group: bool) {
        self.reserve(idx, need);
        if !same_group {
            let p = self.at[idx] as usize - 1;
            self.added[p].1.tasks -= 1;
        }
    }

    /// Places one task on the host numbered `idx` (StartTask): its failure when it cannot go
    /// there. `idx` must be a host of the fleet.
    pub fn place_on(&mut self, idx: usize, req: &Request<'_>) -> Result<(), Failure> {
        let Some(h) = self.hosts.host(idx) else {
            return Err(Failure { arn: None, reason: Some("MISSING".into()), detail: None });
        };
        let h = &h;
        let fail = |reason: &str, detail| Failure { arn: Some(h.arn.to_owned()), reason: Some(reason.into()), detail };
        if !h.usable() {
            return Err(fail("INACTIVE", None));
        }
        if let Some((reason, detail)) = rejection(h, self.added(idx), req) {
            return Err(fail(reason, detail));
        }
        self.reserve(idx, req.need);
        Ok(())
    }

    /// Places up to `count` tasks by the request's strategies; `seed` orders what they leave
    /// tied (and is the whole order for `random`).
    pub fn place(&mut self, req: &Request<'_>, count: usize, seed: u64) -> Placement {
        let mut out = Placement::default();
        if count == 0 {
            return out;
        }
        // The order: strategies in turn, then the random tie-break.
        let mut attrs: Vec<&str> = Vec::new();
        let parts: Vec<Part> = req
            .strategies
            .iter()
            .filter_map(|s| match (s.r#type, s.field.as_deref()) {
                (Some(PlacementStrategyType::Binpack), Some(f)) if f.eq_ignore_ascii_case("memory") => {
                    Some(Part::LeftMemory)
                }
                (Some(PlacementStrategyType::Binpack), _) => Some(Part::LeftCpu),
                (Some(PlacementStrategyType::Spread), Some(f)) if f.starts_with("attribute:") => {
                    attrs.push(&f["attribute:".len()..]);
                    Some(Part::Attr(attrs.len() - 1))
                }
                (Some(PlacementStrategyType::Spread), _) => Some(Part::Group),
                _ => None,
            })
            .take(5)
            .collect();

        // Hosts with the same values of the spread attributes share a bucket; `counts[j]`
        // holds, per value of attribute j, the group's tasks on hosts with that value.
        let mut values: Vec<Vec<Option<&str>>> = vec![Vec::new(); attrs.len()];
        let mut counts: Vec<Vec<i64>> = vec![Vec::new(); attrs.len()];
        let mut buckets: Vec<[usize; 5]> = Vec::new();
        let mut bucket_of = |ids: [usize; 5]| match buckets.iter().position(|b| *b == ids) {
            Some(b) => b,
            None => {
                buckets.push(ids);
                buckets.len() - 1
            }
        };
        // Per attribute set: whether it has the required attributes, its spread values and its
        // bucket.
        // Keyed by the interned set's address, looked up for nearly every host (neighbours
        // seldom share a set: zones alternate), so with a fast hasher, not SipHash.
        let mut memo: std::collections::HashMap<usize, SetFacts, foldhash::fast::FixedState> = Default::default();
        // The last few sets seen, looked through before the map: hosts of a few sets (three
        // zones, alternating) find theirs here, without hashing (the map lookup per host was a
        // quarter of a spread's scan).
        let mut recent: [(usize, SetFacts); 4] = [(usize::MAX, (false, [0; 5], 0)); 4];
        let mut next_recent = 0;
        // Within a bucket the attribute parts are equal, so its best hosts by the other parts
        // stay its best: each placement changes one host, so `count` of them per bucket are
        // enough for `count` placements. Each bucket keeps its `count` best seen so far (and
        // where its worst one is), so the pass keeps nothing of the other hosts.
        let mut tops: Vec<(Vec<Cand>, usize)> = Vec::new();
        let within = |left_cpu: i64, left_mem: i64, group: i64, rand: i64| -> Key {
            let mut k = [0i64; 6];
            for (n, p) in parts.iter().enumerate() {
                k[n] = match p {
                    Part::LeftCpu => left_cpu,
                    Part::LeftMemory => left_mem,
                    Part::Group => group,
                    Part::Attr(_) => 0,
                };
            }
            k[5] = rand;
            k
        };
        for i in 0..self.hosts.end() {
            let sum = self.hosts.summary(i);
            if !sum.present {
                continue;
            }
            let added = self.added(i);
            let group = sum.in_group as i64 + added.map_or(0, |a| a.tasks as i64);
            let set = sum.set;
            let (has_required, ids, bucket) = match recent.iter().find(|(k, _)| *k == set) {
                Some((_, v)) => *v,
                None => {
                    let v = match memo.get(&set) {
                        Some(v) => *v,
                        None => {
                            // The first host of this attribute set: read in full.
                            let Some(h) = self.hosts.host(i) else { continue };
                            let mut ids = [0usize; 5];
                            for (j, name) in attrs.iter().enumerate() {
                                let v = h.info.attribute(name);
                                ids[j] = match values[j].iter().position(|x| *x == v) {
                                    Some(id) => id,
                                    None => {
                                        values[j].push(v);
                                        counts[j].push(0);
                                        values[j].len() - 1
                                    }
                                };
                            }
                            let v = (req.required.iter().all(|a| h.info.has(a)), ids, bucket_of(ids));
                            memo.insert(set, v);
                            v
                        }
                    };
                    recent[next_recent] = (set, v);
                    next_recent = (next_recent + 1) % recent.len();
                    v
                }
            };
            if group != 0 {
                for (j, count) in counts.iter_mut().enumerate() {
                    count[ids[j]] += group;
                }
            }
            if !sum.usable || !has_required {
                continue;
            }
            let (acpu, amem) = added.map_or((0, 0), |a| (a.cpu, a.memory));
            let (left_cpu, left_mem) = (sum.left_cpu - acpu, sum.left_mem - amem);
            let rand = tie(seed, i, added.map_or(0, |a| a.tasks));
            let w = within(left_cpu, left_mem, group, rand);
            while tops.len() <= bucket {
                tops.push((Vec::with_capacity(count), 0));
            }
            let (top, worst) = &mut tops[bucket];
            if top.len() == count && w >= top[*worst].within {
                continue;
            }
            // Only a host that would make its bucket's list is read in full and checked.
            let Some(h) = self.hosts.host(i) else { continue };
            if rejection_but_attributes(&h, added, req).is_some() {
                continue;
            }
            let cand = Cand { idx: i, bucket, left_cpu, left_mem, group, rand, ok: true, within: w };
            if top.len() < count {
                top.push(cand);
            } else {
                top[*worst] = cand;
            }
            if top.len() == count {
                *worst = (0..count).max_by_key(|&k| top[k].within).unwrap_or(0);
            }
        }
        let key = |c: &Cand, counts: &[Vec<i64>], buckets: &[[usize; 5]]| -> Key {
            let mut k = c.within;
            for (n, p) in parts.iter().enumerate() {
                if let Part::Attr(j) = p {
                    k[n] = counts[*j][buckets[c.bucket][*j]];
                }
            }
            k
        };
        let mut kept: Vec<Cand> = tops.into_iter().flat_map(|(t, _)| t).collect();
        for _ in 0..count {
            let best = kept.iter().enumerate().filter(|(_, c)| c.ok).min_by_key(|(_, c)| key(c, &counts, &buckets));
            let Some((k, _)) = best else {
                out.failures = self.failures(req);
                break;
            };
            let idx = kept[k].idx;
            self.reserve(idx, req.need);
            out.picks.push(idx);
            let c = &mut kept[k];
            c.left_cpu -= req.need.cpu;
            c.left_mem -= req.need.memory;
            c.group += 1;
            c.rand = tie(seed, idx, self.added(idx).map_or(0, |a| a.tasks));
            c.within = within(c.left_cpu, c.left_mem, c.group, c.rand);
            for (j, count) in counts.iter_mut().enumerate() {
                count[buckets[c.bucket][j]] += 1;
            }
            kept[k].ok = self.hosts.host(idx).is_some_and(|h| rejection(&h, self.added(idx), req).is_none());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(n: usize, zone: &str, itype: &str, status: &str) -> ContainerInstance {
        let attr = |k: &str, v: &str| Attribute { name: k.into(), value: Some(v.into()), ..Default::default() };
        ContainerInstance {
            container_instance_arn: Some(format!("arn:aws:ecs:us-east-1:1:container-instance/c/{n:04}")),
            ec2_instance_id: Some(format!("i-{n:04}")),
            status: Some(status.into()),
            attributes: Some(vec![
                attr("ecs.availability-zone", zone),
                attr("ecs.instance-type", itype),
                Attribute { name: "ecs.capability.task-eni".into(), ..Default::default() },
            ]),
            ..Default::default()
        }
    }

    /// Instances with their documents, capacities and usage, owned for a test.
    struct Fleet {
        cis: Vec<ContainerInstance>,
        infos: Vec<HostInfo>,
        used: Vec<Usage>,
    }

    impl Fleet {
        /// `(zone, instance type, status, cpu, memory)` per instance.
        fn new(spec: &[(&str, &str, &str, i64, i64)]) -> Fleet {
            let cis: Vec<_> = spec.iter().enumerate().map(|(i, s)| ci(i, s.0, s.1, s.2)).collect();
            let infos = cis
                .iter()
                .zip(spec)
                .map(|(c, s)| {
                    let mut info = HostInfo::of(c);
                    info.registered.cpu = s.3;
                    info.registered.memory = s.4;
                    info.registered.ports.insert((22, TransportProtocol::Tcp));
                    info
                })
                .collect();
            Fleet { used: vec![Usage::default(); cis.len()], cis, infos }
        }

        /// The hosts for a request of `group`.
        fn hosts(&self, group: &str) -> Vec<Host<'_>> {
            (0..self.cis.len())
                .map(|i| Host {
                    id: i,
                    arn: self.cis[i].container_instance_arn.as_deref().unwrap(),
                    ci: &self.cis[i],
                    info: &self.infos[i],
                    used: &self.used[i],
                    in_group: self.used[i].group_count(group),
                })
                .collect()
        }

        fn hold(&mut self, i: usize, need: &Need, group: &str) {
            self.used[i].apply(need, Some(&Arc::from(group)), true, false, 1);
        }
    }

    fn strategy(t: PlacementStrategyType, f: Option<&str>) -> PlacementStrategy {
        PlacementStrategy { r#type: Some(t), field: f.map(str::to_owned) }
    }

    fn need(cpu: i64, memory: i64) -> Need {
        Need { cpu, memory, ports: vec![] }
    }

    fn place(f: &Fleet, need: &Need, cs: &[Constraint], ss: &[PlacementStrategy], count: usize) -> Placement {
        let hosts = f.hosts("family:web");
        let req = Request { need, group: "family:web", required: &[], constraints: cs, strategies: ss };
        Placer::new(&hosts).place(&req, count, 7)
    }

    fn member_of(e: &str) -> Vec<Constraint> {
        compile_constraints(&[PlacementConstraint {
            r#type: Some(PlacementConstraintType::MemberOf),
            expression: Some(e.into()),
        }])
        .unwrap()
    }

    const A: &str = "us-east-1a";
    const B: &str = "us-east-1b";
    const C: &str = "us-east-1c";

    #[test]
    fn binpack_fills_the_fullest_instance_first() {
        let mut f = Fleet::new(&[(A, "t2.micro", "ACTIVE", 1024, 2048); 3]);
        f.hold(1, &need(0, 1500), "family:other");
        let p = place(&f, &need(10, 100), &[], &[strategy(PlacementStrategyType::Binpack, Some("memory"))], 5);
        // Instance 1 has the least memory left and room for five.
        assert_eq!(p.picks, [1, 1, 1, 1, 1]);
        // Once it is full, the next least: 548 left fits 5 more of 100, not 6.
        let p = place(&f, &need(10, 100), &[], &[strategy(PlacementStrategyType::Binpack, Some("memory"))], 7);
        assert_eq!(&p.picks[..5], [1, 1, 1, 1, 1]);
        assert_ne!(p.picks[5], 1);
        assert_eq!(p.picks[5], p.picks[6], "then the next instance, filled in turn");
    }

    #[test]
    fn spread_balances_zones_then_instances() {
        let spec = [
            (A, "m5", "ACTIVE", 4096, 8192),
            (A, "m5", "ACTIVE", 4096, 8192),
            (B, "m5", "ACTIVE", 4096, 8192),
            (C, "m5", "ACTIVE", 4096, 8192),
            (C, "m5", "ACTIVE", 4096, 8192),
            (C, "m5", "ACTIVE", 4096, 8192),
        ];
        let mut f = Fleet::new(&spec);
        // Zone a already has two tasks of the group, zone c one.
        f.hold(0, &need(10, 10), "family:web");
        f.hold(1, &need(10, 10), "family:web");
        f.hold(3, &need(10, 10), "family:web");
        let ss = [
            strategy(PlacementStrategyType::Spread, Some("attribute:ecs.availability-zone")),
            strategy(PlacementStrategyType::Spread, Some("instanceId")),
        ];
        let p = place(&f, &need(10, 10), &[], &ss, 6);
        let zone = |i: usize| spec[i].0;
        let per_zone = |z: &str| p.picks.iter().filter(|&&i| zone(i) == z).count();
        // 3 placed before: 2/0/1; 6 more make 3/3/3.
        assert_eq!((per_zone(A), per_zone(B), per_zone(C)), (1, 3, 2));
        // Within zone c, the two empty instances first.
        let in_c: Vec<usize> = p.picks.iter().copied().filter(|&i| zone(i) == C).collect();
        assert!(!in_c.contains(&3), "{in_c:?}");
        // Other tasks (another group) do not count for the spread.
        let mut g = Fleet::new(&spec);
        g.hold(2, &need(10, 10), "family:other");
        let p = place(&g, &need(10, 10), &[], &ss, 3);
        let zones: std::collections::BTreeSet<&str> = p.picks.iter().map(|&i| zone(i)).collect();
        assert_eq!(zones.len(), 3);
    }

    #[test]
    fn strategies_break_ties_in_order() {
        // binpack cpu first: instances 0 and 1 have the same cpu left; spread decides.
        let mut f = Fleet::new(&[(A, "m5", "ACTIVE", 2048, 8192); 3]);
        f.hold(0, &need(1024, 10), "family:web");
        f.hold(1, &need(1024, 10), "family:other");
        let ss = [
            strategy(PlacementStrategyType::Binpack, Some("cpu")),
            strategy(PlacementStrategyType::Spread, Some("instanceId")),
        ];
        assert_eq!(place(&f, &need(100, 10), &[], &ss, 1).picks, [1]);
        // The other way round, spread first: instances 1 and 2 have no task of the group, and
        // binpack breaks that tie towards 1.
        let ss = [ss[1].clone(), ss[0].clone()];
        assert_eq!(place(&f, &need(100, 10), &[], &ss, 1).picks, [1]);
    }

    #[test]
    fn random_and_ties_follow_the_seed() {
        let f = Fleet::new(&[(A, "m5", "ACTIVE", 4096, 8192); 50]);
        let hosts = f.hosts("g");
        let ss = [strategy(PlacementStrategyType::Random, None)];
        let req = Request { need: &need(1, 1), group: "g", required: &[], constraints: &[], strategies: &ss };
        let a = Placer::new(&hosts).place(&req, 10, 1).picks;
        assert_eq!(a, Placer::new(&hosts).place(&req, 10, 1).picks);
        let b = Placer::new(&hosts).place(&req, 10, 2).picks;
        assert_ne!(a, b);
        let distinct: std::collections::BTreeSet<usize> = a.iter().copied().chain(b.iter().copied()).collect();
        assert!(distinct.len() > 1);
    }

    #[test]
    fn failures_name_each_instance_and_its_reason() {
        let mut f = Fleet::new(&[
            (A, "m5", "ACTIVE", 100, 8192),
            (A, "m5", "ACTIVE", 4096, 64),
            (A, "m5", "ACTIVE", 4096, 8192),
            (A, "m5", "DRAINING", 4096, 8192),
        ]);
        let web = Need { cpu: 200, memory: 128, ports: vec![(8080, TransportProtocol::Tcp)] };
        f.hold(2, &web, "family:other");
        let p = place(&f, &web, &[], &[], 1);
        assert!(p.picks.is_empty());
        let reasons: Vec<(String, String)> =
            p.failures.iter().map(|x| (x.arn.clone().unwrap(), x.reason.clone().unwrap())).collect();
        let arn = |i: usize| f.cis[i].container_instance_arn.clone().unwrap();
        assert_eq!(
            reasons,
            [(arn(0), "RESOURCE:CPU".into()), (arn(1), "RESOURCE:MEMORY".into()), (arn(2), "RESOURCE:PORTS".into()),],
            "a DRAINING instance takes no task and is not listed"
        );
        // A reserved port is taken too.
        let ssh = Need { cpu: 1, memory: 1, ports: vec![(22, TransportProtocol::Tcp)] };
        assert_eq!(place(&f, &ssh, &[], &[], 1).failures.len(), 3);
        // The same port twice in one request: one task per instance.
        let g = Fleet::new(&[(A, "m5", "ACTIVE", 4096, 8192); 2]);
        let p = place(&g, &web, &[], &[], 3);
        assert_eq!(p.picks.len(), 2);
        assert_ne!(p.picks[0], p.picks[1]);
        assert!(p.failures.iter().all(|x| x.reason.as_deref() == Some("RESOURCE:PORTS")));
    }

    #[test]
    fn required_attributes() {
        let f = Fleet::new(&[(A, "m5", "ACTIVE", 4096, 8192); 2]);
        let hosts = f.hosts("g");
        let eni = [Attribute { name: "ecs.capability.task-eni".into(), ..Default::default() }];
        let n = need(1, 1);
        let req = Request { need: &n, group: "g", required: &eni, constraints: &[], strategies: &[] };
        assert_eq!(Placer::new(&hosts).place(&req, 2, 0).picks.len(), 2);
        let gpu = [Attribute { name: "ecs.capability.gpu".into(), ..Default::default() }];
        let req = Request { required: &gpu, ..req };
        let p = Placer::new(&hosts).place(&req, 1, 0);
        assert_eq!(p.failures.len(), 2);
        assert_eq!(p.failures[0].reason.as_deref(), Some("ATTRIBUTE"));
        assert_eq!(p.failures[0].detail.as_deref(), Some("MissingAttribute: ecs.capability.gpu"));
        // With a value, the value must match.
        let zone = [Attribute { name: "ecs.availability-zone".into(), value: Some(B.into()), ..Default::default() }];
        let req = Request { required: &zone, ..req };
        assert!(Placer::new(&hosts).place(&req, 1, 0).picks.is_empty());
    }

    #[test]
    fn constraints() {
        let mut f = Fleet::new(&[
            (A, "t2.micro", "ACTIVE", 4096, 8192),
            (B, "t2.small", "ACTIVE", 4096, 8192),
            (C, "m5.large", "ACTIVE", 4096, 8192),
        ]);
        f.hold(2, &need(1, 1), "service:db");
        let n = need(1, 1);
        let picks = |cs: &[Constraint], count| place(&f, &n, cs, &[], count).picks;
        let set = |v: Vec<usize>| v.into_iter().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(set(picks(&member_of("attribute:ecs.instance-type =~ t2.*"), 6)), set(vec![0, 1]));
        assert_eq!(set(picks(&member_of("ec2InstanceId in ['i-0001', 'i-0002']"), 4)), set(vec![1, 2]));
        assert_eq!(picks(&member_of("task:group == service:db"), 2), [2, 2]);
        assert_eq!(set(picks(&member_of("not(task:group == service:db)"), 4)), set(vec![0, 1]));
        assert_eq!(
            picks(
                &member_of("attribute:ecs.availability-zone == us-east-1b or attribute:ecs.instance-type == nope"),
                2
            ),
            [1, 1]
        );
        let failed = place(&f, &n, &member_of("attribute:ecs.instance-type == x1"), &[], 1).failures;
        assert_eq!(failed.len(), 3);
        assert!(failed.iter().all(|x| x.reason.as_deref() == Some("MemberOf placement constraint unsatisfied.")));
        // distinctInstance: one task of the group per instance, counting the request's own.
        let distinct = [(PlacementConstraintType::DistinctInstance, None)];
        let p = place(&f, &n, &distinct, &[], 4);
        assert_eq!(set(p.picks.clone()), set(vec![0, 1, 2]));
        assert_eq!(p.picks.len(), 3);
        assert_eq!(p.failures.len(), 3);
        assert!(p
            .failures
            .iter()
            .all(|x| x.reason.as_deref() == Some("DistinctInstance placement constraint unsatisfied.")));
    }

    #[test]
    fn taskdef_constraints_join_the_request() {
        let td = TaskDefinition {
            placement_constraints: Some(vec![estiba_api::ecs::TaskDefinitionPlacementConstraint {
                r#type: Some(TaskDefinitionPlacementConstraintType::MemberOf),
                expression: Some("attribute:ecs.instance-type =~ t2.*".into()),
            }]),
            ..Default::default()
        };
        let mut cs = taskdef_constraints(&td).unwrap();
        cs.extend(member_of("attribute:ecs.availability-zone == us-east-1b"));
        let f = Fleet::new(&[
            (A, "t2.micro", "ACTIVE", 4096, 8192),
            (B, "t2.small", "ACTIVE", 4096, 8192),
            (B, "m5.large", "ACTIVE", 4096, 8192),
        ]);
        assert_eq!(place(&f, &need(1, 1), &cs, &[], 2).picks, [1, 1]);
    }

    #[test]
    fn tasks_other_requests_hold_are_taken() {
        let f = Fleet::new(&[(A, "m5", "ACTIVE", 1024, 8192), (B, "m5", "ACTIVE", 1024, 8192)]);
        let hosts = f.hosts("family:web");
        let n = need(512, 10);
        let ss = [strategy(PlacementStrategyType::Spread, Some("instanceId"))];
        let req = Request { need: &n, group: "family:web", required: &[], constraints: &[], strategies: &ss };
        // Another request's task of another group: its CPU is taken, the spread ignores it.
        let mut p = Placer::new(&hosts);
        p.hold_other(0, &need(1024, 10), false);
        assert_eq!(p.place(&req, 3, 0).picks, [1, 1]);
        // Of the same group: the spread counts it.
        let mut p = Placer::new(&hosts);
        p.hold_other(0, &need(0, 0), true);
        assert_eq!(p.place(&req, 1, 0).picks, [1]);
    }

    /// How long one placement of 10 tasks on 10,000 hosts takes (BENCHMARKS.md):
    /// `cargo test --release -p estiba-core --lib placement::tests::timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn timing() {
        let zones = [A, B, C];
        let spec: Vec<_> = (0..10_000).map(|i| (zones[i % 3], "m5", "ACTIVE", 4096, 8192)).collect();
        let mut f = Fleet::new(&spec);
        // About 20 attributes each, as instances registered through the API carry, in one
        // set per zone, interned as the view does.
        let mut sets = AttributeSets::new();
        for (i, ci) in f.cis.iter_mut().enumerate() {
            for cap in [
                "docker-remote-api.1.18",
                "docker-remote-api.1.19",
                "docker-remote-api.1.21",
                "docker-remote-api.1.24",
                "task-iam-role",
                "logging-driver.awslogs",
                "logging-driver.json-file",
                "logging-driver.none",
                "private-registry-authentication.secretsmanager",
                "ecs.os-type",
                "ecs.os-family",
                "ecs.cpu-architecture",
                "container-health-check",
                "container-ordering",
            ] {
                let name = format!("com.amazonaws.ecs.capability.{cap}");
                ci.attributes.as_mut().unwrap().push(Attribute { name, ..Default::default() });
            }
            let registered = f.infos[i].registered.clone();
            f.infos[i] = HostInfo { registered, ..HostInfo::of(ci) }.interned(&mut sets);
        }
        for i in 0..10_000 {
            f.hold(i, &need(16, 32), "family:small");
        }
        let hosts = f.hosts("family:small");
        let required =
            [Attribute { name: "com.amazonaws.ecs.capability.docker-remote-api.1.18".into(), ..Default::default() }];
        let n = need(16, 32);
        for ss in [
            vec![strategy(PlacementStrategyType::Binpack, Some("memory"))],
            vec![
                strategy(PlacementStrategyType::Spread, Some("attribute:ecs.availability-zone")),
                strategy(PlacementStrategyType::Spread, Some("instanceId")),
            ],
        ] {
            let req =
                Request { need: &n, group: "family:small", required: &required, constraints: &[], strategies: &ss };
            let start = std::time::Instant::now();
            for seed in 0..100 {
                let p = std::hint::black_box(Placer::new(&hosts).place(&req, 10, seed));
                assert_eq!(p.picks.len(), 10);
            }
            eprintln!("{ss:?}: {:?} per place(10) on 10,000 hosts", start.elapsed() / 100);
        }
    }

    #[test]
    fn host_info_says_whether_the_instance_is_listed_and_usable() {
        let of = |status: &str| {
            let i = HostInfo::of(&ci(0, A, "m5", status));
            (i.registered_now, i.usable)
        };
        assert_eq!(of("ACTIVE"), (true, true));
        assert_eq!(of("DRAINING"), (true, false));
        assert_eq!(of("INACTIVE"), (false, false));
        assert!(!HostInfo::default().registered_now);
    }

    #[test]
    fn usage_adds_and_takes_away() {
        let mut u = Usage::default();
        let web = Need { cpu: 256, memory: 512, ports: vec![(80, TransportProtocol::Tcp)] };
        let g: Arc<str> = Arc::from("service:web");
        u.apply(&web, Some(&g), true, false, 1);
        u.apply(&web, Some(&g), false, true, 1);
        assert_eq!((u.cpu, u.memory, u.running, u.pending, u.group_count("service:web")), (512, 1024, 1, 1, 2));
        u.apply(&web, Some(&g), true, false, -1);
        u.apply(&web, Some(&g), false, true, -1);
        assert!(u.is_empty());
        assert_eq!((u.running, u.pending), (0, 0));
    }

    #[test]
    fn strategy_fields_are_checked() {
        let bad = [
            strategy(PlacementStrategyType::Binpack, Some("disk")),
            strategy(PlacementStrategyType::Spread, None),
            strategy(PlacementStrategyType::Spread, Some("attribute:")),
            strategy(PlacementStrategyType::Spread, Some("zone")),
        ];
        for s in bad {
            assert!(validate_strategies(std::slice::from_ref(&s)).is_err(), "{s:?}");
        }
        let good = [
            strategy(PlacementStrategyType::Spread, Some("host")),
            strategy(PlacementStrategyType::Spread, Some("instanceId")),
            strategy(PlacementStrategyType::Binpack, Some("MEMORY")),
            strategy(PlacementStrategyType::Random, None),
        ];
        assert!(validate_strategies(&good).is_ok());
        assert!(validate_strategies(&vec![good[0].clone(); 6]).is_err());
    }

    /// The selection keeps only each bucket's best few hosts; on random fleets it must place
    /// exactly as trying every host for every task does.
    #[test]
    fn same_picks_as_trying_every_host() {
        let mut seed = 12345u64;
        let mut rnd = |m: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let strategies = [
            vec![strategy(PlacementStrategyType::Binpack, Some("memory"))],
            vec![
                strategy(PlacementStrategyType::Binpack, Some("cpu")),
                strategy(PlacementStrategyType::Spread, Some("instanceId")),
            ],
            vec![
                strategy(PlacementStrategyType::Spread, Some("attribute:ecs.availability-zone")),
                strategy(PlacementStrategyType::Spread, Some("instanceId")),
            ],
            vec![
                strategy(PlacementStrategyType::Spread, Some("attribute:ecs.availability-zone")),
                strategy(PlacementStrategyType::Binpack, Some("memory")),
            ],
            vec![strategy(PlacementStrategyType::Spread, Some("attribute:ecs.instance-type"))],
            vec![],
        ];
        for round in 0..60 {
            let n = 1 + rnd(40) as usize;
            let spec: Vec<(&str, &str, &str, i64, i64)> = (0..n)
                .map(|_| {
                    let zone = [A, B, C][rnd(3) as usize];
                    let it = ["t2.micro", "m5.large"][rnd(2) as usize];
                    let st = if rnd(10) == 0 { "DRAINING" } else { "ACTIVE" };
                    (zone, it, st, 256 + 256 * rnd(8) as i64, 512 + 512 * rnd(8) as i64)
                })
                .collect();
            let mut f = Fleet::new(&spec);
            for i in 0..n {
                for _ in 0..rnd(4) {
                    let group = if rnd(2) == 0 { "family:web" } else { "family:x" };
                    f.hold(i, &need(128 * rnd(3) as i64, 256 * rnd(3) as i64), group);
                }
            }
            let ss = &strategies[round % strategies.len()];
            let t = need(128 + 128 * rnd(3) as i64, 256 + 256 * rnd(3) as i64);
            let count = 1 + rnd(10) as usize;
            let hosts = f.hosts("family:web");
            let cs: Vec<Constraint> =
                if round % 4 == 3 { vec![(PlacementConstraintType::DistinctInstance, None)] } else { vec![] };
            let req = Request { need: &t, group: "family:web", required: &[], constraints: &cs, strategies: ss };
            let fast = Placer::new(&hosts).place(&req, count, round as u64);
            // Every host, every task: one-task placements in a row share what they added.
            let mut slow = Placer::new(&hosts);
            let mut picks = Vec::new();
            for _ in 0..count {
                let mut one = Placer {
                    hosts: &hosts[..],
                    _hosts: std::marker::PhantomData,
                    added: slow.added.clone(),
                    at: slow.at.clone(),
                };
                let p = one.place_all_hosts(&req, round as u64);
                match p {
                    Some(i) => {
                        slow.reserve(i, &t);
                        picks.push(i);
                    }
                    None => break,
                }
            }
            assert_eq!(fast.picks, picks, "round {round}: {ss:?} count {count}");
        }
    }

    impl Placer<'_, '_> {
        /// The reference: every usable host that can take the task, by the full order.
        fn place_all_hosts(&mut self, req: &Request<'_>, seed: u64) -> Option<usize> {
            let count_of = |attr: &str, v: Option<&str>| -> i64 {
                (0..self.hosts.len())
                    .filter(|&j| self.hosts[j].info.attribute(attr) == v)
                    .map(|j| {
                        self.hosts[j].used.group_count(req.group) as i64 + self.added(j).map_or(0, |a| a.tasks as i64)
                    })
                    .sum()
            };
            (0..self.hosts.len())
                .filter(|&i| self.hosts[i].usable() && rejection(&self.hosts[i], self.added(i), req).is_none())
                .min_by_key(|&i| {
                    let h = &self.hosts[i];
                    let a = self.added(i);
                    let mut k = [0i64; 6];
                    for (n, s) in req.strategies.iter().enumerate() {
                        k[n] = match (s.r#type, s.field.as_deref()) {
                            (Some(PlacementStrategyType::Binpack), Some("memory")) => {
                                h.info.registered.memory - h.used.memory - a.map_or(0, |a| a.memory)
                            }
                            (Some(PlacementStrategyType::Binpack), _) => {
                                h.info.registered.cpu - h.used.cpu - a.map_or(0, |a| a.cpu)
                            }
                            (Some(PlacementStrategyType::Spread), Some(f)) if f.starts_with("attribute:") => {
                                count_of(&f[10..], h.info.attribute(&f[10..]))
                            }
                            (Some(PlacementStrategyType::Spread), _) => {
                                h.used.group_count(req.group) as i64 + a.map_or(0, |a| a.tasks as i64)
                            }
                            _ => 0,
                        };
                    }
                    k[5] = tie(seed, i, a.map_or(0, |a| a.tasks));
                    k
                })
        }
    }
}
