//! Metric ingest: turns what nodes measure (cgroup samples, load balancer counters, both
//! cumulative) into CloudWatch datapoints in the metric store, one per AWS minute, as AWS
//! names them:
//!
//! - `AWS/ECS` `CPUUtilization` and `MemoryUtilization` (Percent) by `ClusterName` and by
//!   `ClusterName, ServiceName`: one statistic set per minute over the tasks, each task's
//!   utilisation being what it used of what it reserved (task-level `cpu`/`memory`, else the
//!   sum of its containers'), so Average = total used / (reserved × tasks) as "Amazon ECS
//!   service utilization metrics" computes it, Minimum and Maximum the least and most busy
//!   task, SampleCount the tasks. A task without a hard CPU limit may exceed 100 %.
//! - with the cluster setting `containerInsights` `enabled` or `enhanced`,
//!   `ECS/ContainerInsights` `CpuUtilized`, `CpuReserved` (CPU units), `MemoryUtilized`,
//!   `MemoryReserved` (Megabytes), `NetworkRxBytes`, `NetworkTxBytes` (Bytes/Second),
//!   `StorageReadBytes`, `StorageWriteBytes` (Bytes) as statistic sets over tasks (Sum is the
//!   total), and `RunningTaskCount`, `PendingTaskCount` (Count), plus `DesiredTaskCount` and
//!   `DeploymentCount` for services, by `ClusterName`, `ClusterName, ServiceName` and
//!   `ClusterName, TaskDefinitionFamily`.
//! - `AWS/ApplicationELB` `RequestCount`, `HTTPCode_Target_2XX/3XX/4XX/5XX_Count`,
//!   `HTTPCode_ELB_4XX/5XX_Count`, `TargetResponseTime` (Seconds) by `LoadBalancer` and by
//!   `TargetGroup, LoadBalancer`; `RequestCountPerTarget` (by `TargetGroup` and by
//!   `TargetGroup, LoadBalancer`), `HealthyHostCount` and `UnHealthyHostCount`.
//!
//! Counters become rates here: the ingest keeps each task's (and each node's) previous
//! sample, and spreads the difference between two samples over the AWS minutes their
//! interval covers, in proportion, so a minute gets its share whatever the sampling interval
//! and `--metric-period`. A minute is written once it is over and a grace (a sampling
//! interval) has passed for its last samples to arrive; what arrives later for it is
//! dropped. Everything is in AWS time ([`Server::metric_clock`]).
//!
//! Samples are stamped by the node's clock, which on another machine may be off. The ingest
//! learns each sender's lag (this server's time of receipt minus the newest stamp of a
//! batch, the smallest seen) and, when it is beyond what delivery explains, shifts that
//! sender's stamps by it ([`Skews`]); no stamp is ever taken as later than its receipt.
//!
//! **Architecture invariant:** datapoints go to the metric store only, never through the
//! versioned store; this module reads the view, never writes the store, and imports no
//! service's handlers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estiba_core::arn::Scope;
use estiba_core::metric_time::AWS_MINUTE_MS;
use estiba_core::telemetry::{LbMetrics, MetricSample};
use estiba_core::{keys, task as task_rules};
use estiba_metricstore::{Datum, Dimension, Resolution, StatisticSet, Unit, Value};

use crate::view::State;
use crate::Server;

const MIB: f64 = 1024.0 * 1024.0;

/// Forget a task's last sample when it has sent none for this long (real time).
const FORGET_AFTER_MS: i64 = 10 * 60_000;

/// A sender may be this much ahead (its clock) or behind (clock or delivery) before its
/// stamps are shifted: within it, a sample lands in time for its minute.
const AHEAD_OK_MS: i64 = 1000;

/// How long a sender's batches must all be later than its learned lag before it is learned
/// anew (real time).
const RELEARN_AFTER_MS: i64 = 30_000;

/// The clock lag of each sender (a task's samples, a node's load balancer counters), learned
/// from when their batches arrive (no I/O: [`MetricIngest`] feeds it receipt times).
#[derive(Debug, Default)]
pub struct Skews {
    /// Key → (smallest lag seen, real time a batch last came within `behind_ok` of it).
    by: HashMap<String, (i64, i64)>,
}

impl Skews {
    /// What to add to the stamps of `key`'s batch whose newest stamp is `newest`, received at
    /// `now`: 0 while the sender's lag stays within `[-AHEAD_OK_MS, behind_ok]`, else the
    /// learned lag; never so much that the newest stamp passes `now`. One late batch leaves
    /// the learned lag alone (it is delivery, not the clock); a lag that stays longer by more
    /// than `behind_ok` for [`RELEARN_AFTER_MS`] (the sender's clock was set back) is learned
    /// anew.
    pub fn shift(&mut self, key: &str, newest: i64, now: i64, behind_ok: i64) -> i64 {
        let lag = now - newest;
        let l = self.by.entry(key.to_owned()).or_insert((lag, now));
        if lag <= l.0 + behind_ok {
            *l = (l.0.min(lag), now);
        } else if now - l.1 > RELEARN_AFTER_MS {
            *l = (lag, now);
        }
        let shift = if (-AHEAD_OK_MS..=behind_ok).contains(&l.0) { 0 } else { l.0 };
        shift.min(lag)
    }

    /// Forgets senders not heard from since `before` (real time).
    pub fn forget(&mut self, before: i64) {
        self.by.retain(|_, l| l.1 >= before);
    }
}

/// One task's share of one AWS minute.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskMinute {
    /// CPU nanoseconds used, and the real milliseconds they were measured over (with
    /// `--metric-period`, an AWS minute is shorter than a real one).
    pub cpu_ns: f64,
    pub cpu_ms: f64,
    pub mem_bytes_sum: f64,
    pub mem_n: u32,
    pub rx_bytes: f64,
    pub tx_bytes: f64,
    pub net_ms: f64,
    pub read_bytes: f64,
    pub write_bytes: f64,
}

/// Load balancer counters of one AWS minute, by dimension value, then counter name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LbMinute {
    pub load_balancers: BTreeMap<String, BTreeMap<String, f64>>,
    pub target_groups: BTreeMap<String, BTreeMap<String, f64>>,
}

/// The counters being turned into minutes (no I/O: [`MetricIngest`] drives it).
#[derive(Debug, Default)]
pub struct Accumulator {
    prev: HashMap<String, MetricSample>,
    tasks: BTreeMap<i64, HashMap<String, TaskMinute>>,
    lb_prev: HashMap<String, LbMetrics>,
    lb: BTreeMap<i64, LbMinute>,
    /// Minutes before this one were written: later samples for them are dropped.
    written_before: i64,
}

/// Calls `f(minute, overlap_ms)` for every AWS minute `[a, b)` overlaps.
fn spread(a: i64, b: i64, mut f: impl FnMut(i64, f64)) {
    if b <= a {
        return;
    }
    let mut m = a.div_euclid(AWS_MINUTE_MS) * AWS_MINUTE_MS;
    while m < b {
        let overlap = (b.min(m + AWS_MINUTE_MS) - a.max(m)) as f64;
        if overlap > 0.0 {
            f(m, overlap);
        }
        m += AWS_MINUTE_MS;
    }
}

fn delta(prev: Option<u64>, now: Option<u64>) -> Option<f64> {
    match (prev, now) {
        (Some(p), Some(n)) if n >= p => Some((n - p) as f64),
        _ => None,
    }
}

impl Accumulator {
    /// Takes task samples (container samples are not used yet); `to_aws` maps a real
    /// timestamp to AWS time.
    pub fn samples(&mut self, batch: &[MetricSample], to_aws: impl Fn(i64) -> i64) {
        for s in batch.iter().filter(|s| s.container.is_none()) {
            if let Some(p) = self.prev.get(&s.task_arn) {
                let (a, b) = (to_aws(p.timestamp).max(self.written_before), to_aws(s.timestamp));
                let (full_a, full_b) = (to_aws(p.timestamp), b);
                let whole = (full_b - full_a) as f64;
                let cpu = delta(p.cpu_usage_ns, s.cpu_usage_ns);
                let rx = delta(p.network_rx_bytes, s.network_rx_bytes);
                let tx = delta(p.network_tx_bytes, s.network_tx_bytes);
                let rd = delta(p.storage_read_bytes, s.storage_read_bytes);
                let wr = delta(p.storage_write_bytes, s.storage_write_bytes);
                // Rates are per real second: the AWS minute's share of the real interval.
                let real = (s.timestamp - p.timestamp) as f64;
                let tasks = &mut self.tasks;
                spread(a, b, |m, overlap| {
                    let frac = overlap / whole;
                    let real_ms = real * frac;
                    let t = tasks.entry(m).or_default().entry(s.task_arn.clone()).or_default();
                    if let Some(c) = cpu {
                        t.cpu_ns += c * frac;
                        t.cpu_ms += real_ms;
                    }
                    if let Some(mem) = s.memory_usage_bytes {
                        t.mem_bytes_sum += mem as f64;
                        t.mem_n += 1;
                    }
                    if let (Some(r), Some(x)) = (rx, tx) {
                        t.rx_bytes += r * frac;
                        t.tx_bytes += x * frac;
                        t.net_ms += real_ms;
                    }
                    t.read_bytes += rd.unwrap_or(0.0) * frac;
                    t.write_bytes += wr.unwrap_or(0.0) * frac;
                });
            }
            if self.prev.get(&s.task_arn).is_none_or(|p| p.timestamp < s.timestamp) {
                self.prev.insert(s.task_arn.clone(), s.clone());
            }
        }
    }

    /// Takes one node's load balancer counters.
    pub fn lb_report(&mut self, r: &LbMetrics, to_aws: impl Fn(i64) -> i64) {
        if let Some(p) = self.lb_prev.get(&r.node) {
            let (full_a, b) = (to_aws(p.timestamp), to_aws(r.timestamp));
            let a = full_a.max(self.written_before);
            let whole = (b - full_a) as f64;
            let diff = |now: &BTreeMap<String, estiba_core::telemetry::Counters>,
                        before: &BTreeMap<String, estiba_core::telemetry::Counters>| {
                let mut out: Vec<(String, String, f64)> = Vec::new();
                for (dim, counters) in now {
                    for (name, &n) in counters {
                        // A counter that went down: the node's load balancer restarted.
                        let p = before.get(dim).and_then(|c| c.get(name)).copied().unwrap_or(0);
                        let d = if n >= p { n - p } else { n };
                        if d > 0 {
                            out.push((dim.clone(), name.clone(), d as f64));
                        }
                    }
                }
                out
            };
            let lbs = diff(&r.load_balancers, &p.load_balancers);
            let tgs = diff(&r.target_groups, &p.target_groups);
            let minutes = &mut self.lb;
            spread(a, b, |m, overlap| {
                let frac = overlap / whole;
                let e = minutes.entry(m).or_default();
                for (dim, name, d) in &lbs {
                    *e.load_balancers.entry(dim.clone()).or_default().entry(name.clone()).or_default() += d * frac;
                }
                for (dim, name, d) in &tgs {
                    *e.target_groups.entry(dim.clone()).or_default().entry(name.clone()).or_default() += d * frac;
                }
            });
        }
        if self.lb_prev.get(&r.node).is_none_or(|p| p.timestamp < r.timestamp) {
            self.lb_prev.insert(r.node.clone(), r.clone());
        }
    }

    /// The minutes that end at or before `cutoff` (AWS time), taken out; `forget_before`
    /// (real time) drops the last samples of tasks and nodes that went quiet.
    #[allow(clippy::type_complexity)]
    pub fn take(
        &mut self,
        cutoff: i64,
        forget_before: i64,
    ) -> (Vec<(i64, HashMap<String, TaskMinute>)>, Vec<(i64, LbMinute)>) {
        let done = |m: &i64| m + AWS_MINUTE_MS <= cutoff;
        let mut tasks = Vec::new();
        while let Some(e) = self.tasks.first_entry() {
            if !done(e.key()) {
                break;
            }
            tasks.push(e.remove_entry());
        }
        let mut lb = Vec::new();
        while let Some(e) = self.lb.first_entry() {
            if !done(e.key()) {
                break;
            }
            lb.push(e.remove_entry());
        }
        let minute_of_cutoff = cutoff.div_euclid(AWS_MINUTE_MS) * AWS_MINUTE_MS;
        self.written_before = self.written_before.max(minute_of_cutoff);
        self.prev.retain(|_, s| s.timestamp >= forget_before);
        self.lb_prev.retain(|_, s| s.timestamp >= forget_before);
        (tasks, lb)
    }
}

/// What the view says of a task the metrics are about.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskInfo {
    pub scope: Scope,
    pub cluster: String,
    pub service: Option<String>,
    pub family: Option<String>,
    /// CPU units and MiB reserved (task level, else the sum of its containers').
    pub cpu_units: Option<f64>,
    pub memory_mib: Option<f64>,
    /// Whether its cluster has Container Insights on.
    pub insights: bool,
}

/// `arn:aws:ecs:<region>:<account>:task/<cluster>/<id>` → (scope, cluster, id).
fn parse_task_arn(arn: &str) -> Option<(Scope, &str, &str)> {
    let mut p = arn.splitn(6, ':');
    let (_, _, _, region, account, res) = (p.next()?, p.next()?, p.next()?, p.next()?, p.next()?, p.next()?);
    let mut r = res.splitn(3, '/');
    let (kind, cluster, id) = (r.next()?, r.next()?, r.next()?);
    (kind == "task").then(|| (Scope::new(account, region), cluster, id))
}

fn insights_on(st: &State, scope: &Scope, cluster: &str) -> bool {
    st.clusters.get(&keys::cluster(scope, cluster)).is_some_and(|c| {
        c.value.settings.iter().flatten().any(|s| {
            s.name == Some(estiba_api::ecs::ClusterSettingName::ContainerInsights)
                && matches!(s.value.as_deref(), Some("enabled" | "enhanced"))
        })
    })
}

fn num(s: Option<&str>) -> Option<f64> {
    s.and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| *v > 0.0)
}

/// Looks a task up in the view.
pub fn task_info(st: &State, task_arn: &str) -> Option<TaskInfo> {
    let (scope, cluster, id) = parse_task_arn(task_arn)?;
    let doc = st.tasks.get(&keys::task(&scope, cluster, id))?;
    let t = doc.task();
    let sum = |f: fn(&estiba_api::ecs::Container) -> Option<&str>| {
        let v: f64 = t.containers.iter().flatten().filter_map(|c| num(f(c))).sum();
        (v > 0.0).then_some(v)
    };
    let cpu_units = num(t.cpu.as_deref()).or_else(|| sum(|c| c.cpu.as_deref()));
    let memory_mib = num(t.memory.as_deref())
        .or_else(|| sum(|c| c.memory.as_deref()))
        .or_else(|| sum(|c| c.memory_reservation.as_deref()));
    let family = t
        .task_definition_arn
        .as_deref()
        .and_then(|a| a.rsplit_once(":task-definition/"))
        .and_then(|(_, fr)| fr.rsplit_once(':'))
        .map(|(f, _)| f.to_owned());
    Some(TaskInfo {
        insights: insights_on(st, &scope, cluster),
        cluster: cluster.to_owned(),
        service: t.group.as_deref().and_then(|g| g.strip_prefix("service:")).map(str::to_owned),
        family,
        cpu_units,
        memory_mib,
        scope,
    })
}

/// A series of one minute: account, region, `namespace\0name`, dimensions, unit.
type SeriesKey = (String, String, String, Vec<Dimension>, &'static str);

/// Statistic sets over values (one per task), by series.
#[derive(Default)]
struct Sets(BTreeMap<SeriesKey, Vec<f64>>);

impl Sets {
    fn add(&mut self, scope: &Scope, ns: &str, name: &str, dims: &[Dimension], unit: &'static str, v: f64) {
        self.0
            .entry((scope.account.clone(), scope.region.clone(), format!("{ns}\u{0}{name}"), dims.to_vec(), unit))
            .or_default()
            .push(v);
    }
}

/// A datum of one namespace, in an account and region.
#[derive(Clone, Debug, PartialEq)]
pub struct Put {
    pub account: String,
    pub region: String,
    pub namespace: String,
    pub datum: Datum,
}

fn units() -> &'static HashMap<&'static str, Unit> {
    static U: std::sync::OnceLock<HashMap<&'static str, Unit>> = std::sync::OnceLock::new();
    U.get_or_init(|| {
        ["Percent", "None", "Megabytes", "Bytes/Second", "Bytes", "Count", "Seconds"]
            .into_iter()
            .map(|u| (u, Unit::from(u)))
            .collect()
    })
}

fn datum(name: &str, dims: Vec<Dimension>, ts: i64, unit: &str, value: Value) -> Datum {
    Datum {
        name: name.to_owned(),
        dimensions: dims,
        timestamp: ts,
        unit: units().get(unit).cloned().unwrap_or_else(|| Unit::from(unit)),
        resolution: Resolution::Standard,
        value,
    }
}

fn set_of(values: &[f64]) -> Value {
    let sum: f64 = values.iter().sum();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() == 1 {
        return Value::Single(sum);
    }
    Value::Statistics(StatisticSet { sample_count: values.len() as f64, sum, minimum: min, maximum: max })
}

fn dim(name: &str, value: &str) -> Dimension {
    Dimension::new(name, value)
}

/// The datapoints of one AWS minute of tasks.
pub fn task_datums(
    minute: i64,
    tasks: &HashMap<String, TaskMinute>,
    info: impl Fn(&str) -> Option<TaskInfo>,
) -> Vec<Put> {
    let mut sets = Sets::default();
    for (arn, t) in tasks {
        let Some(i) = info(arn) else { continue };
        let cluster = [dim("ClusterName", &i.cluster)];
        let mut groups: Vec<Vec<Dimension>> = vec![cluster.to_vec()];
        if let Some(s) = &i.service {
            groups.push(vec![dim("ClusterName", &i.cluster), dim("ServiceName", s)]);
        }
        let cpu_used = (t.cpu_ms > 0.0).then(|| t.cpu_ns / (t.cpu_ms * 1e6) * 1024.0);
        let mem_mib = (t.mem_n > 0).then(|| t.mem_bytes_sum / t.mem_n as f64 / MIB);
        for g in &groups {
            if let (Some(used), Some(res)) = (cpu_used, i.cpu_units) {
                sets.add(&i.scope, "AWS/ECS", "CPUUtilization", g, "Percent", used / res * 100.0);
            }
            if let (Some(used), Some(res)) = (mem_mib, i.memory_mib) {
                sets.add(&i.scope, "AWS/ECS", "MemoryUtilization", g, "Percent", used / res * 100.0);
            }
        }
        if !i.insights {
            continue;
        }
        if let Some(f) = &i.family {
            groups.push(vec![dim("ClusterName", &i.cluster), dim("TaskDefinitionFamily", f)]);
        }
        const CI: &str = "ECS/ContainerInsights";
        for g in &groups {
            if let Some(u) = cpu_used {
                sets.add(&i.scope, CI, "CpuUtilized", g, "None", u);
            }
            if let Some(r) = i.cpu_units {
                sets.add(&i.scope, CI, "CpuReserved", g, "None", r);
            }
            if let Some(m) = mem_mib {
                sets.add(&i.scope, CI, "MemoryUtilized", g, "Megabytes", m);
            }
            if let Some(r) = i.memory_mib {
                sets.add(&i.scope, CI, "MemoryReserved", g, "Megabytes", r);
            }
            if t.net_ms > 0.0 {
                sets.add(&i.scope, CI, "NetworkRxBytes", g, "Bytes/Second", t.rx_bytes / (t.net_ms / 1000.0));
                sets.add(&i.scope, CI, "NetworkTxBytes", g, "Bytes/Second", t.tx_bytes / (t.net_ms / 1000.0));
            }
            sets.add(&i.scope, CI, "StorageReadBytes", g, "Bytes", t.read_bytes.round());
            sets.add(&i.scope, CI, "StorageWriteBytes", g, "Bytes", t.write_bytes.round());
        }
    }
    sets.0
        .into_iter()
        .map(|((account, region, nsname, dims, unit), values)| {
            let (ns, name) = nsname.split_once('\u{0}').unwrap_or(("", ""));
            Put { account, region, namespace: ns.to_owned(), datum: datum(name, dims, minute, unit, set_of(&values)) }
        })
        .collect()
}

/// Container Insights' task counts of every cluster that has it on, at `minute`.
pub fn count_datums(st: &State, minute: i64) -> Vec<Put> {
    let mut out = Vec::new();
    for (ckey, c) in &st.clusters {
        let Some(rest) = ckey.strip_prefix("ecs/") else { continue };
        let mut p = rest.splitn(4, '/');
        let (Some(account), Some(region), Some("clusters"), Some(cluster)) = (p.next(), p.next(), p.next(), p.next())
        else {
            continue;
        };
        let scope = Scope::new(account, region);
        if c.value.status.as_deref() != Some("ACTIVE") || !insights_on(st, &scope, cluster) {
            continue;
        }
        // (service or None, family or None) → (running, pending)
        let mut counts: BTreeMap<(u8, String), (u32, u32)> = BTreeMap::new();
        let mut total = (0u32, 0u32);
        for d in State::range(&st.tasks, &keys::tasks_of(&scope, cluster)) {
            let running = match d.value.last_status {
                task_rules::Status::Running => true,
                task_rules::Status::Provisioning | task_rules::Status::Pending | task_rules::Status::Activating => {
                    false
                }
                _ => continue,
            };
            let bump = |e: &mut (u32, u32)| if running { e.0 += 1 } else { e.1 += 1 };
            bump(&mut total);
            if let Some(s) = d.value.group().and_then(|g| g.strip_prefix("service:")) {
                bump(counts.entry((0, s.to_owned())).or_default());
            }
            if let Some(f) = d
                .value
                .task_definition_arn()
                .and_then(|a| a.rsplit_once(":task-definition/"))
                .and_then(|(_, fr)| fr.rsplit_once(':'))
            {
                bump(counts.entry((1, f.0.to_owned())).or_default());
            }
        }
        let mut put = |name: &str, dims: Vec<Dimension>, v: f64| {
            out.push(Put {
                account: account.to_owned(),
                region: region.to_owned(),
                namespace: "ECS/ContainerInsights".into(),
                datum: datum(name, dims, minute, "Count", Value::Single(v)),
            })
        };
        let cd = || vec![dim("ClusterName", cluster)];
        put("RunningTaskCount", cd(), total.0 as f64);
        put("PendingTaskCount", cd(), total.1 as f64);
        for s in State::range(&st.services, &keys::service(&scope, cluster, "")) {
            let Some(name) = s.value.service_name.as_deref() else { continue };
            if s.value.status.as_deref() != Some("ACTIVE") {
                continue;
            }
            let (r, p) = counts.get(&(0, name.to_owned())).copied().unwrap_or_default();
            let sd = || vec![dim("ClusterName", cluster), dim("ServiceName", name)];
            put("RunningTaskCount", sd(), r as f64);
            put("PendingTaskCount", sd(), p as f64);
            put("DesiredTaskCount", sd(), s.value.desired_count as f64);
            put("DeploymentCount", sd(), s.value.deployments.as_ref().map_or(0, Vec::len) as f64);
        }
        for ((kind, f), (r, p)) in &counts {
            if *kind == 1 {
                let fd = || vec![dim("ClusterName", cluster), dim("TaskDefinitionFamily", f)];
                put("RunningTaskCount", fd(), *r as f64);
                put("PendingTaskCount", fd(), *p as f64);
            }
        }
    }
    out
}

/// What the load balancer datums need to know of the published table and target health.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LbTopology {
    /// `LoadBalancer` dimension → (account, region).
    pub scopes: BTreeMap<String, (String, String)>,
    /// `TargetGroup` dimension → the `LoadBalancer` dimensions forwarding to it.
    pub group_lbs: BTreeMap<String, Vec<String>>,
    /// `TargetGroup` dimension → (healthy, unhealthy) targets now.
    pub health: BTreeMap<String, (u32, u32)>,
}

/// The counters AWS/ApplicationELB sums, by the names the data plane counts them under.
const LB_COUNTERS: &[&str] = &[
    "RequestCount",
    "HTTPCode_Target_2XX_Count",
    "HTTPCode_Target_3XX_Count",
    "HTTPCode_Target_4XX_Count",
    "HTTPCode_Target_5XX_Count",
    "HTTPCode_ELB_3XX_Count",
    "HTTPCode_ELB_4XX_Count",
    "HTTPCode_ELB_5XX_Count",
    "HTTPCode_ELB_502_Count",
    "HTTPCode_ELB_503_Count",
    "HTTPCode_ELB_504_Count",
    "NewConnectionCount",
    "ProcessedBytes",
    "TargetConnectionErrorCount",
];

/// The AWS/ApplicationELB datapoints of one minute (only application load balancers:
/// `app/...` dimensions).
pub fn lb_datums(minute: i64, m: &LbMinute, topo: &LbTopology) -> Vec<Put> {
    const NS: &str = "AWS/ApplicationELB";
    let mut out = Vec::new();
    let mut counters = |scope: &(String, String), dims: Vec<Dimension>, c: &BTreeMap<String, f64>| {
        for name in LB_COUNTERS {
            let Some(&v) = c.get(*name) else { continue };
            let unit = if *name == "ProcessedBytes" { "Bytes" } else { "Count" };
            out.push(Put {
                account: scope.0.clone(),
                region: scope.1.clone(),
                namespace: NS.into(),
                datum: datum(name, dims.clone(), minute, unit, Value::Single(v.round())),
            });
        }
        let (sum_us, n) = (
            c.get("TargetResponseTimeUsSum").copied().unwrap_or(0.0),
            c.get("TargetResponseTimeCount").copied().unwrap_or(0.0).round(),
        );
        if n >= 1.0 {
            let avg = sum_us / 1e6 / n;
            let v = Value::Statistics(StatisticSet { sample_count: n, sum: sum_us / 1e6, minimum: avg, maximum: avg });
            out.push(Put {
                account: scope.0.clone(),
                region: scope.1.clone(),
                namespace: NS.into(),
                datum: datum("TargetResponseTime", dims, minute, "Seconds", v),
            });
        }
    };
    for (lb, c) in &m.load_balancers {
        if !lb.starts_with("app/") {
            continue;
        }
        let Some(scope) = topo.scopes.get(lb) else { continue };
        counters(scope, vec![dim("LoadBalancer", lb)], c);
    }
    for (tg, c) in &m.target_groups {
        for lb in topo.group_lbs.get(tg).into_iter().flatten().filter(|l| l.starts_with("app/")) {
            let Some(scope) = topo.scopes.get(lb) else { continue };
            counters(scope, vec![dim("LoadBalancer", lb), dim("TargetGroup", tg)], c);
        }
    }
    // RequestCountPerTarget and host counts: every group behind an application load
    // balancer, each minute (0 requests when none came).
    for (tg, lbs) in &topo.group_lbs {
        let (healthy, unhealthy) = topo.health.get(tg).copied().unwrap_or_default();
        let requests = m.target_groups.get(tg).and_then(|c| c.get("RequestCount")).copied().unwrap_or(0.0).round();
        let per_target = if healthy > 0 { requests / healthy as f64 } else { requests };
        let mut first = true;
        for lb in lbs.iter().filter(|l| l.starts_with("app/")) {
            let Some((account, region)) = topo.scopes.get(lb) else { continue };
            let mut put = |name: &str, dims: Vec<Dimension>, v: f64| {
                out.push(Put {
                    account: account.clone(),
                    region: region.clone(),
                    namespace: NS.into(),
                    datum: datum(name, dims, minute, "Count", Value::Single(v)),
                })
            };
            let both = || vec![dim("LoadBalancer", lb), dim("TargetGroup", tg)];
            put("RequestCountPerTarget", both(), per_target);
            put("HealthyHostCount", both(), healthy as f64);
            put("UnHealthyHostCount", both(), unhealthy as f64);
            if first {
                put("RequestCountPerTarget", vec![dim("TargetGroup", tg)], per_target);
                first = false;
            }
        }
    }
    out
}

/// The published load balancer table and the target health book, as [`lb_datums`] needs them.
fn topology(server: &Server) -> LbTopology {
    let table = server.lb.borrow().clone();
    let mut t = LbTopology::default();
    let by_arn: HashMap<&str, &str> =
        table.target_groups.iter().map(|g| (g.arn.as_str(), g.dimension.as_str())).collect();
    for lb in &table.load_balancers {
        // arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/<name>/<id>
        let mut p = lb.arn.split(':');
        let (region, account) = (p.nth(3).unwrap_or_default(), p.next().unwrap_or_default());
        t.scopes.insert(lb.dimension.clone(), (account.to_owned(), region.to_owned()));
        for l in &lb.listeners {
            for r in &l.rules {
                if let estiba_lb::Action::Forward { groups, .. } = &r.action {
                    for g in groups {
                        if let Some(dim) = by_arn.get(g.arn.as_str()) {
                            let lbs = t.group_lbs.entry((*dim).to_owned()).or_default();
                            if !lbs.contains(&lb.dimension) {
                                lbs.push(lb.dimension.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    for g in &table.target_groups {
        let (healthy, unhealthy) = server.target_health.counts(&g.arn);
        t.health.insert(g.dimension.clone(), (healthy, unhealthy));
    }
    t
}

/// The server's metric ingest: takes samples and load balancer reports as they come
/// ([`MetricIngest::samples`], [`MetricIngest::lb_report`], cheap), and writes each AWS minute
/// once it is over ([`MetricIngest::start`]'s loop).
pub struct MetricIngest {
    server: Arc<Server>,
    acc: Mutex<Accumulator>,
    skews: Mutex<Skews>,
    /// How long after a minute's end its last samples may still arrive (real time).
    grace: Duration,
    /// Whether any node has sent anything: until one has, the ingest holds no alarm back
    /// ([`Server::alarm_now_ms`]), as when no ingest runs.
    fed: std::sync::atomic::AtomicBool,
}

impl MetricIngest {
    /// Starts the loop that writes finished minutes until `shutdown` flips. `grace`: the
    /// nodes' sampling interval (plus a little).
    pub fn start(
        server: Arc<Server>,
        grace: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<MetricIngest> {
        let ingest = Arc::new(MetricIngest {
            server,
            acc: Mutex::new(Accumulator::default()),
            skews: Mutex::new(Skews::default()),
            grace,
            fed: Default::default(),
        });
        let me = ingest.clone();
        tokio::spawn(async move {
            let every = (me.server.metric_clock.period() / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_counts = i64::MIN;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let me2 = me.clone();
                let done = tokio::task::spawn_blocking(move || me2.flush(&mut last_counts).map(|()| last_counts)).await;
                match done {
                    Ok(Ok(l)) => last_counts = l,
                    Ok(Err(e)) => tracing::warn!(error = %e, "writing ECS and load balancer metrics failed"),
                    Err(_) => return,
                }
            }
        });
        ingest
    }

    pub fn samples(&self, batch: &[MetricSample]) {
        self.fed.store(true, std::sync::atomic::Ordering::Relaxed);
        let clock = self.server.metric_clock;
        let batch = self.unskewed(batch);
        self.acc.lock().unwrap_or_else(|e| e.into_inner()).samples(&batch, |t| clock.to_aws(t));
    }

    pub fn lb_report(&self, r: &LbMetrics) {
        self.fed.store(true, std::sync::atomic::Ordering::Relaxed);
        let clock = self.server.metric_clock;
        let shift = self.skews.lock().unwrap_or_else(|e| e.into_inner()).shift(
            &format!("node/{}", r.node),
            r.timestamp,
            crate::now_ms(),
            self.behind_ok(),
        );
        let r = LbMetrics { timestamp: r.timestamp + shift, ..r.clone() };
        self.acc.lock().unwrap_or_else(|e| e.into_inner()).lb_report(&r, |t| clock.to_aws(t));
    }

    /// Half the grace: a sample that late still makes its minute.
    fn behind_ok(&self) -> i64 {
        self.grace.as_millis() as i64 / 2
    }

    /// The batch with each task's stamps moved onto this server's clock ([`Skews`]).
    fn unskewed(&self, batch: &[MetricSample]) -> Vec<MetricSample> {
        let now = crate::now_ms();
        let mut newest: HashMap<&str, i64> = HashMap::new();
        for s in batch {
            let n = newest.entry(&s.task_arn).or_insert(s.timestamp);
            *n = (*n).max(s.timestamp);
        }
        let mut skews = self.skews.lock().unwrap_or_else(|e| e.into_inner());
        let shifts: HashMap<&str, i64> =
            newest.into_iter().map(|(k, n)| (k, skews.shift(k, n, now, self.behind_ok()))).collect();
        batch
            .iter()
            .map(|s| MetricSample { timestamp: s.timestamp + shifts[s.task_arn.as_str()], ..s.clone() })
            .collect()
    }

    /// Writes the minutes that are over (and the task counts of the last minute that ended,
    /// once per minute).
    fn flush(&self, last_counts: &mut i64) -> Result<(), estiba_metricstore::Error> {
        let now = crate::now_ms();
        let clock = self.server.metric_clock;
        let cutoff = clock.to_aws(now - self.grace.as_millis() as i64);
        let (tasks, lbs) = self.acc.lock().unwrap_or_else(|e| e.into_inner()).take(cutoff, now - FORGET_AFTER_MS);
        self.skews.lock().unwrap_or_else(|e| e.into_inner()).forget(now - FORGET_AFTER_MS);
        let mut puts = Vec::new();
        {
            let st = self.server.view.read();
            for (minute, t) in &tasks {
                puts.extend(task_datums(*minute, t, |arn| task_info(&st, arn)));
            }
            let ended = clock.to_aws(now).div_euclid(AWS_MINUTE_MS) * AWS_MINUTE_MS - AWS_MINUTE_MS;
            // Task counts come from the shared state: the leader alone writes them.
            if ended > *last_counts && !crate::replication::follower(&self.server) {
                *last_counts = ended;
                puts.extend(count_datums(&st, ended));
            }
        }
        if !lbs.is_empty() {
            let topo = topology(&self.server);
            for (minute, m) in &lbs {
                puts.extend(lb_datums(*minute, m, &topo));
            }
        }
        self.put(puts, clock.to_aws(now))?;
        if self.fed.load(std::sync::atomic::Ordering::Relaxed) {
            self.server.metrics_written_to.fetch_max(cutoff, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn put(&self, puts: Vec<Put>, now_aws: i64) -> Result<(), estiba_metricstore::Error> {
        let mut by: BTreeMap<(String, String, String), Vec<Datum>> = BTreeMap::new();
        for p in puts {
            by.entry((p.account, p.region, p.namespace)).or_default().push(p.datum);
        }
        let follower = crate::replication::follower(&self.server);
        for ((account, region, namespace), data) in by {
            if follower {
                // What this server's nodes measured goes to the leader, which owns metrics.
                let r = crate::replication::Record::PutMetrics {
                    account,
                    region,
                    namespace,
                    now: now_aws,
                    data: data.iter().map(Into::into).collect(),
                };
                let sent =
                    tokio::runtime::Handle::current().block_on(crate::replication::send_to_leader(&self.server, &r));
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "node metrics could not be sent to the leader; this minute is lost");
                }
                continue;
            }
            self.server.replication.put_metrics(&self.server.metrics, &account, &region, &namespace, &data, now_aws)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
