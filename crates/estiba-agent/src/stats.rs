//! The cgroup sampler: every [`crate::AgentConfig::metrics_interval`] it reads the counters of
//! each running task's cgroup (`/estiba/<task-id>`) and of each of its containers'
//! (`/estiba/<task-id>/<container>`): CPU time, memory usage (without inactive file cache, as
//! `docker stats` shows it) and limit, block I/O bytes, and the network bytes of the task's
//! network namespace (`/proc/<pid>/net/dev` of one of its processes, `lo` excluded; none for
//! tasks in the host's namespace). Samples go to the control plane as
//! [`Telemetry::Metrics`]; counters stay cumulative, rates are the receiver's business.
//!
//! cgroup v1 (and hybrid hosts, whose controllers are v1) read `cpuacct.usage`,
//! `memory.usage_in_bytes`, `memory.stat`, `memory.limit_in_bytes` and
//! `blkio.throttle.io_service_bytes`; pure v2 reads `cpu.stat`, `memory.current`,
//! `memory.stat`, `memory.max` and `io.stat`. Each file is read with one `read` into a
//! buffer the sampler keeps, and nothing starts a process.
//!
//! **Architecture invariant:** the sampler sees only this node's assignments and reports
//! through the telemetry channel; it never writes a cgroup nor the versioned store.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use estiba_core::task as task_rules;
use estiba_core::telemetry::{MetricSample, Telemetry};
use tokio::sync::watch;

use crate::Shared;

/// The default sampling interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// A v1 memory limit at or above this means "no limit" (the kernel's is `PAGE_COUNTER_MAX`
/// pages, 9223372036854771712 bytes with 4 KiB pages).
const V1_UNLIMITED: u64 = 1 << 60;

/// Where the hierarchies the sampler reads are mounted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roots {
    /// The unified hierarchy when it holds the controllers (pure v2 hosts).
    pub v2: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
}

impl Roots {
    /// This host's hierarchies.
    pub fn host() -> Roots {
        let h = estiba_runtime::container::cgroup::hierarchies();
        if let Some(v2) = &h.v2 {
            return Roots { v2: Some(v2.clone()), ..Default::default() };
        }
        Roots {
            v2: None,
            cpuacct: h.v1.get("cpuacct").cloned(),
            memory: h.v1.get("memory").cloned(),
            blkio: h.v1.get("blkio").cloned(),
        }
    }
}

/// One cgroup's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub storage_read_bytes: Option<u64>,
    pub storage_write_bytes: Option<u64>,
}

/// Reads cgroups and `/proc` files with one reused buffer.
#[derive(Debug)]
pub struct Sampler {
    roots: Roots,
    proc: PathBuf,
    buf: Vec<u8>,
    path: PathBuf,
    /// The network namespace of this process (tasks in it are not measured).
    own_netns: Option<u64>,
}

impl Sampler {
    pub fn new(roots: Roots, proc: PathBuf) -> Sampler {
        let own_netns = std::fs::metadata(proc.join("self/ns/net")).ok().map(|m| m.ino());
        Sampler { roots, proc, buf: Vec::with_capacity(4096), path: PathBuf::new(), own_netns }
    }

    /// Reads `root/rel/file` whole into the buffer; `None` when it cannot be read.
    fn read(&mut self, root: &Path, rel: &Path, file: &str) -> Option<&str> {
        self.path.clear();
        self.path.push(root);
        self.path.push(rel);
        self.path.push(file);
        self.buf.clear();
        let mut f = std::fs::File::open(&self.path).ok()?;
        // cgroup files answer a read whole; loop for regular files (tests) and long ones.
        loop {
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            let len = self.buf.len();
            let cap = self.buf.capacity();
            self.buf.resize(cap, 0);
            match f.read(&mut self.buf[len..]) {
                Ok(0) => {
                    self.buf.truncate(len);
                    break;
                }
                Ok(n) => self.buf.truncate(len + n),
                Err(_) => return None,
            }
        }
        std::str::from_utf8(&self.buf).ok()
    }

    fn read_u64(&mut self, root: &Path, rel: &Path, file: &str) -> Option<u64> {
        self.read(root, rel, file)?.trim().parse().ok()
    }

    /// The counters of the cgroup at `rel` (relative to each hierarchy's root, e.g.
    /// `estiba/<task-id>`). `None` when no hierarchy has it.
    pub fn cgroup(&mut self, rel: &Path) -> Option<CgroupStats> {
        let mut s = CgroupStats::default();
        if let Some(root) = self.roots.v2.clone() {
            s.cpu_usage_ns = self.read(&root, rel, "cpu.stat").and_then(|t| field(t, "usage_usec")).map(|us| us * 1000);
            let current = self.read_u64(&root, rel, "memory.current");
            let inactive = self.read(&root, rel, "memory.stat").and_then(|t| field(t, "inactive_file"));
            s.memory_usage_bytes = current.map(|c| without_cache(c, inactive));
            s.memory_limit_bytes = self.read(&root, rel, "memory.max").and_then(|t| t.trim().parse().ok());
            if let Some((r, w)) = self.read(&root, rel, "io.stat").map(io_stat) {
                (s.storage_read_bytes, s.storage_write_bytes) = (Some(r), Some(w));
            }
        } else {
            if let Some(root) = self.roots.cpuacct.clone() {
                s.cpu_usage_ns = self.read_u64(&root, rel, "cpuacct.usage");
            }
            if let Some(root) = self.roots.memory.clone() {
                let usage = self.read_u64(&root, rel, "memory.usage_in_bytes");
                let inactive = self.read(&root, rel, "memory.stat").and_then(|t| field(t, "total_inactive_file"));
                s.memory_usage_bytes = usage.map(|u| without_cache(u, inactive));
                s.memory_limit_bytes = self.read_u64(&root, rel, "memory.limit_in_bytes").filter(|&l| l < V1_UNLIMITED);
            }
            if let Some(root) = self.roots.blkio.clone() {
                if let Some((r, w)) = self.read(&root, rel, "blkio.throttle.io_service_bytes").map(blkio_service_bytes)
                {
                    (s.storage_read_bytes, s.storage_write_bytes) = (Some(r), Some(w));
                }
            }
        }
        (s != CgroupStats::default()).then_some(s)
    }

    /// A process of the cgroup at `rel`, if it has one.
    pub fn first_pid(&mut self, rel: &Path) -> Option<i32> {
        let root =
            self.roots.v2.clone().or_else(|| self.roots.memory.clone()).or_else(|| self.roots.cpuacct.clone())?;
        self.read(&root, rel, "cgroup.procs")?.lines().find_map(|l| l.trim().parse().ok())
    }

    /// Bytes received and sent by the network namespace of `pid`, loopback excluded; `None`
    /// when the process is gone or shares this process's namespace (host network mode).
    pub fn network(&mut self, pid: i32) -> Option<(u64, u64)> {
        let proc = self.proc.clone();
        let ns = std::fs::metadata(proc.join(format!("{pid}/ns/net"))).ok()?.ino();
        if Some(ns) == self.own_netns {
            return None;
        }
        self.read(&proc, Path::new(&pid.to_string()), "net/dev").map(net_dev)
    }

    /// Samples of a task's cgroup and of each of its containers', at `timestamp` (ms).
    pub fn task(&mut self, task_arn: &str, task_id: &str, containers: &[&str], timestamp: i64) -> Vec<MetricSample> {
        let task_rel = PathBuf::from("estiba").join(task_id);
        let mut out = Vec::with_capacity(containers.len() + 1);
        let mut pid = None;
        for c in containers {
            let rel = task_rel.join(c);
            let Some(s) = self.cgroup(&rel) else { continue };
            if pid.is_none() {
                pid = self.first_pid(&rel);
            }
            out.push(sample(task_arn, Some(c), timestamp, s, None));
        }
        if let Some(s) = self.cgroup(&task_rel) {
            let net = pid.and_then(|p| self.network(p));
            out.push(sample(task_arn, None, timestamp, s, net));
        }
        out
    }
}

fn sample(
    task_arn: &str,
    container: Option<&str>,
    timestamp: i64,
    s: CgroupStats,
    net: Option<(u64, u64)>,
) -> MetricSample {
    MetricSample {
        task_arn: task_arn.to_owned(),
        container: container.map(str::to_owned),
        timestamp,
        cpu_usage_ns: s.cpu_usage_ns,
        memory_usage_bytes: s.memory_usage_bytes,
        memory_limit_bytes: s.memory_limit_bytes,
        network_rx_bytes: net.map(|n| n.0),
        network_tx_bytes: net.map(|n| n.1),
        storage_read_bytes: s.storage_read_bytes,
        storage_write_bytes: s.storage_write_bytes,
    }
}

fn without_cache(usage: u64, inactive_file: Option<u64>) -> u64 {
    match inactive_file {
        Some(i) if i < usage => usage - i,
        _ => usage,
    }
}

/// The value of `name value` lines (`cpu.stat`, `memory.stat`).
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `blkio.throttle.io_service_bytes`: `8:0 Read 1234` lines, summed over devices.
fn blkio_service_bytes(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let (Some(_dev), Some(op), Some(n)) = (f.next(), f.next(), f.next()) else { continue };
        let n: u64 = n.parse().unwrap_or(0);
        match op {
            "Read" => r += n,
            "Write" => w += n,
            _ => {}
        }
    }
    (r, w)
}

/// `io.stat`: `8:0 rbytes=1 wbytes=2 rios=...` lines, summed over devices.
fn io_stat(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for kv in text.split_whitespace() {
        if let Some(n) = kv.strip_prefix("rbytes=") {
            r += n.parse::<u64>().unwrap_or(0);
        } else if let Some(n) = kv.strip_prefix("wbytes=") {
            w += n.parse::<u64>().unwrap_or(0);
        }
    }
    (r, w)
}

/// `/proc/<pid>/net/dev`: received and sent bytes of every interface but `lo`.
fn net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for l in text.lines().skip(2) {
        let Some((iface, rest)) = l.split_once(':') else { continue };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() >= 9 {
            rx += f[0].parse::<u64>().unwrap_or(0);
            tx += f[8].parse::<u64>().unwrap_or(0);
        }
    }
    (rx, tx)
}

/// The real time now, in milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Samples this node's running tasks every `interval` until `shutdown` flips.
pub async fn run(
    shared: Arc<Shared>,
    interval: Duration,
    latest: Arc<crate::metadata::Latest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let rx = shared.cp.assignments();
    let mut sampler = Some(Sampler::new(Roots::host(), PathBuf::from("/proc")));
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let tasks: Vec<(String, String, Vec<String>)> = rx
            .borrow()
            .values()
            .filter(|a| task_rules::last_status(&a.task) == task_rules::Status::Running)
            .filter_map(|a| {
                let arn = a.task.task_arn.clone()?;
                let names = a.taskdef.container_definitions.iter().flatten().filter_map(|d| d.name.clone()).collect();
                Some((arn, task_rules::task_id(&a.task).to_owned(), names))
            })
            .collect();
        if tasks.is_empty() {
            continue;
        }
        let Some(mut s) = sampler.take() else { return };
        let joined = tokio::task::spawn_blocking(move || {
            let ts = now_ms();
            let mut out = Vec::new();
            for (arn, id, names) in &tasks {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                out.extend(s.task(arn, id, &names, ts));
            }
            (s, out, crate::metadata::system_cpu_ns())
        })
        .await;
        let Ok((s, samples, system_cpu_ns)) = joined else { return };
        sampler = Some(s);
        let online_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        latest.record(
            samples
                .iter()
                .map(|s| crate::metadata::Reading { sample: s.clone(), system_cpu_ns, online_cpus })
                .collect(),
        );
        if !samples.is_empty() {
            shared.cp.telemetry().send(Telemetry::Metrics(samples));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, file: &str, text: &str) {
        let d = root.join(rel);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file), text).unwrap();
    }

    #[test]
    fn reads_a_v1_tree() {
        let t = tempfile::tempdir().unwrap();
        let (cpu, mem, blk) = (t.path().join("cpu,cpuacct"), t.path().join("memory"), t.path().join("blkio"));
        let rel = "estiba/t1/web";
        put(&cpu, rel, "cpuacct.usage", "123456789\n");
        put(&mem, rel, "memory.usage_in_bytes", "10485760\n");
        put(&mem, rel, "memory.stat", "cache 4096\ninactive_file 1\ntotal_cache 8192\ntotal_inactive_file 2097152\n");
        put(&mem, rel, "memory.limit_in_bytes", "9223372036854771712\n");
        put(&mem, rel, "cgroup.procs", "4242\n4243\n");
        put(
            &blk,
            rel,
            "blkio.throttle.io_service_bytes",
            "8:0 Read 100\n8:0 Write 200\n8:0 Sync 0\n8:0 Total 300\n8:16 Read 1\n8:16 Write 2\nTotal 303\n",
        );
        put(&mem, "estiba/t1", "memory.limit_in_bytes", "536870912\n");
        put(&mem, "estiba/t1", "memory.usage_in_bytes", "10485760\n");
        let roots = Roots { v2: None, cpuacct: Some(cpu), memory: Some(mem), blkio: Some(blk) };
        let mut s = Sampler::new(roots, t.path().join("proc"));
        let c = s.cgroup(Path::new(rel)).unwrap();
        assert_eq!(
            c,
            CgroupStats {
                cpu_usage_ns: Some(123456789),
                memory_usage_bytes: Some(10485760 - 2097152),
                memory_limit_bytes: None,
                storage_read_bytes: Some(101),
                storage_write_bytes: Some(202),
            }
        );
        assert_eq!(s.first_pid(Path::new(rel)), Some(4242));
        let task = s.cgroup(Path::new("estiba/t1")).unwrap();
        assert_eq!((task.memory_usage_bytes, task.memory_limit_bytes), (Some(10485760), Some(536870912)));
        assert_eq!(s.cgroup(Path::new("estiba/gone")), None);
    }

    #[test]
    fn reads_a_v2_tree_and_the_task_network() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("unified");
        let rel = "estiba/t2/web";
        put(&root, rel, "cpu.stat", "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n");
        put(&root, rel, "memory.current", "3000000\n");
        put(&root, rel, "memory.stat", "anon 1000\nfile 2000\ninactive_file 1000000\n");
        put(&root, rel, "memory.max", "max\n");
        put(
            &root,
            rel,
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=1\n",
        );
        put(&root, rel, "cgroup.procs", "77\n");
        put(&root, "estiba/t2", "cpu.stat", "usage_usec 3000\n");
        put(&root, "estiba/t2", "memory.max", "268435456\n");
        let proc = t.path().join("proc");
        // A namespace other than the test's own: a file stands for it (its inode differs).
        put(&proc, "77/ns", "net", "");
        put(&proc, "self/ns", "net", "");
        put(
            &proc,
            "77/net",
            "dev",
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:  999 9 0 0 0 0 0 0  999 9 0 0 0 0 0 0\n  \
             eth0: 1500 10 0 0 0 0 0 0  700 5 0 0 0 0 0 0\n",
        );
        let roots = Roots { v2: Some(root), ..Default::default() };
        let mut s = Sampler::new(roots, proc);
        let samples = s.task("arn:t2", "t2", &["web", "sidecar"], 42);
        assert_eq!(samples.len(), 2, "{samples:?}");
        let web = &samples[0];
        assert_eq!(web.container.as_deref(), Some("web"));
        assert_eq!(web.cpu_usage_ns, Some(2_500_000));
        assert_eq!(web.memory_usage_bytes, Some(2_000_000));
        assert_eq!(web.memory_limit_bytes, None);
        assert_eq!((web.storage_read_bytes, web.storage_write_bytes), (Some(4097), Some(8193)));
        let task = &samples[1];
        assert_eq!(task.container, None);
        assert_eq!((task.cpu_usage_ns, task.memory_limit_bytes), (Some(3_000_000), Some(268435456)));
        assert_eq!((task.network_rx_bytes, task.network_tx_bytes), (Some(1500), Some(700)));
        assert_eq!(task.timestamp, 42);
    }

    /// What sampling costs on this host: `cargo test -p estiba-agent --lib stats::tests::cost
    /// -- --ignored --nocapture` (reads this process's own cgroups, as many as 100 tasks of one
    /// container each would make the sampler read every interval).
    #[test]
    #[ignore]
    fn cost() {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own.lines().find_map(|l| l.strip_prefix("4:memory:").or(l.strip_prefix("0::"))).unwrap_or("/");
        let rel = PathBuf::from(rel.trim_start_matches('/'));
        let mut s = Sampler::new(Roots::host(), PathBuf::from("/proc"));
        let pid = std::process::id() as i32;
        let start = std::time::Instant::now();
        let cpu0 = std::fs::read_to_string("/proc/self/stat").unwrap();
        for _ in 0..100 {
            // A task's cgroup and its container's, and the task's network.
            assert!(s.cgroup(&rel).is_some());
            s.cgroup(&rel);
            s.first_pid(&rel);
            s.network(pid);
        }
        let cpu1 = std::fs::read_to_string("/proc/self/stat").unwrap();
        let ticks =
            |st: &str| -> u64 { st.split_whitespace().skip(13).take(2).map(|v| v.parse::<u64>().unwrap()).sum() };
        println!(
            "100 tasks sampled in {:?} ({} clock ticks of CPU): {:.3} % of a core at a 5 s interval",
            start.elapsed(),
            ticks(&cpu1) - ticks(&cpu0),
            start.elapsed().as_secs_f64() / 5.0 * 100.0
        );
    }

    #[test]
    fn a_task_in_the_hosts_network_has_no_network_numbers() {
        let mut s = Sampler::new(Roots::default(), PathBuf::from("/proc"));
        assert_eq!(s.network(std::process::id() as i32), None);
    }
}
