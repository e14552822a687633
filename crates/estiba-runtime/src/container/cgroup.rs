//! cgroups for a task and its containers, on cgroup v1, hybrid and v2 hosts.
//!
//! The task's cgroup (`/estiba/<task-id>`) carries the task-level limits: ECS task `cpu` as a
//! CFS quota (a limit, as on Fargate) and task `memory` as a hard limit. Each container gets a
//! child with its own: `cpu` as shares (v1) or weight (v2), `memory` hard, `memoryReservation`
//! soft. On v1 the devices controller gets Docker's whitelist (on v2 the same rules as an eBPF
//! filter, [`super::devices`]), so a container cannot reach
//! any device beyond the ones its /dev holds.
//!
//! Written by hand rather than with youki's `libcgroups`: that crate re-reads
//! `/proc/self/mountinfo` and `/proc/self/cgroup` for every controller on every call and
//! writes its whole default device list twice, which cost tens of milliseconds per container
//! start here; this module discovers the hierarchies once per process and touches only the
//! controllers ECS limits need.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use super::spec::Cgroup;
use crate::Error;

/// The CFS period quotas are measured against.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The v1 controllers a container is placed in.
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids", "devices", "freezer", "blkio"];

/// Devices a container may use (Docker's defaults): `type major:minor access`.
const ALLOWED_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",    // null
    "c 1:5 rwm",    // zero
    "c 1:7 rwm",    // full
    "c 1:8 rwm",    // random
    "c 1:9 rwm",    // urandom
    "c 5:0 rwm",    // tty
    "c 5:1 rwm",    // console
    "c 5:2 rwm",    // ptmx
    "c 136:* rwm",  // pts
    "c 10:200 rwm", // tun
];

/// [`ALLOWED_DEVICES`] as rules of the cgroup v2 device filter.
pub(crate) fn device_rules() -> &'static [super::devices::Rule] {
    static RULES: OnceLock<Vec<super::devices::Rule>> = OnceLock::new();
    RULES.get_or_init(|| ALLOWED_DEVICES.iter().map(|r| super::devices::Rule::parse(r).expect("valid rule")).collect())
}

/// Where the hierarchies are mounted on this host.
#[derive(Debug, Default)]
pub struct Hierarchies {
    /// v1 controller → mount point.
    pub v1: BTreeMap<String, PathBuf>,
    /// The unified hierarchy, when it holds the memory controller (pure v2 hosts).
    pub v2: Option<PathBuf>,
}

/// Reads `/proc/self/mountinfo` once per process.
pub fn hierarchies() -> &'static Hierarchies {
    static H: OnceLock<Hierarchies> = OnceLock::new();
    H.get_or_init(|| {
        let mut h = Hierarchies::default();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in info.lines() {
            let Some((pre, post)) = line.split_once(" - ") else { continue };
            let mount_point = pre.split(' ').nth(4).unwrap_or("");
            let mut post = post.split(' ');
            let (fstype, _source, options) = (post.next().unwrap_or(""), post.next(), post.next().unwrap_or(""));
            match fstype {
                "cgroup" => {
                    for opt in options.split(',') {
                        if V1_CONTROLLERS.contains(&opt) {
                            h.v1.entry(opt.to_owned()).or_insert_with(|| PathBuf::from(mount_point));
                        }
                    }
                }
                "cgroup2" => {
                    let controllers =
                        std::fs::read_to_string(Path::new(mount_point).join("cgroup.controllers")).unwrap_or_default();
                    if controllers.split_whitespace().any(|c| c == "memory") {
                        h.v2 = Some(PathBuf::from(mount_point));
                    }
                }
                _ => {}
            }
        }
        h
    })
}

pub fn task_path(spec: &Cgroup) -> PathBuf {
    PathBuf::from("/").join(&spec.task_path)
}

pub fn container_path(spec: &Cgroup) -> PathBuf {
    task_path(spec).join(&spec.name)
}

fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), Error> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| Error::Container(format!("cgroup: writing {value} to {}: {e}", dir.join(file).display())))
}

fn mkdir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Container(format!("cgroup: creating {}: {e}", dir.display())))
}

/// CPU shares (2..262144) as a cgroup v2 weight (1..10000), as runc converts them.
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// Places `pid` in the container's cgroup (creating it and the task's) and applies both
/// levels of limits. The process goes straight to the container's cgroup: on cgroup v2 the
/// task's cgroup must hold no process of its own.
pub fn attach(spec: &Cgroup, pid: i32) -> Result<(), Error> {
    let h = hierarchies();
    let (tpath, cpath) = (task_path(spec), container_path(spec));
    if let Some(root) = &h.v2 {
        // Controllers must be enabled in every parent on the way down.
        let mut dir = root.clone();
        for comp in rel(&tpath).components() {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory +pids");
            dir = dir.join(comp);
            mkdir(&dir)?;
        }
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory +pids");
        let cdir = root.join(rel(&cpath));
        mkdir(&cdir)?;
        // cgroup v2 has no devices controller: the same whitelist as an eBPF filter.
        if spec.extra_devices.is_empty() {
            super::devices::attach(&cdir, device_rules())?;
        } else {
            let mut rules = device_rules().to_vec();
            for r in &spec.extra_devices {
                rules.push(
                    super::devices::Rule::parse(r)
                        .ok_or_else(|| Error::Container(format!("cgroup: bad device rule {r:?}")))?,
                );
            }
            super::devices::attach(&cdir, &rules)?;
        }
        apply_v2_task(&root.join(rel(&tpath)), spec)?;
        if let Some(s) = spec.cpu_shares {
            write(&cdir, "cpu.weight", &shares_to_weight(s).to_string())?;
        }
        if let Some(m) = spec.memory_bytes {
            write(&cdir, "memory.max", &m.to_string())?;
        }
        if let Some(r) = spec.memory_reservation_bytes {
            write(&cdir, "memory.low", &r.to_string())?;
        }
        if let Some(p) = spec.pids_limit {
            write(&cdir, "pids.max", &p.to_string())?;
        }
        return write(&cdir, "cgroup.procs", &pid.to_string());
    }
    let mounts = v1_mounts(h);
    for mount in &mounts {
        mkdir(&mount.join(rel(&cpath)))?;
    }
    apply_v1(h, spec)?;
    for mount in &mounts {
        write(&mount.join(rel(&cpath)), "cgroup.procs", &pid.to_string())?;
    }
    Ok(())
}

/// The v1 mount points, each once (co-mounted controllers such as `cpu,cpuacct` share one).
fn v1_mounts(h: &Hierarchies) -> Vec<&Path> {
    let mut mounts: Vec<&Path> = h.v1.values().map(PathBuf::as_path).collect();
    mounts.sort();
    mounts.dedup();
    mounts
}

/// Writes the task's and the container's limits into their (existing) v1 cgroups.
fn apply_v1(h: &Hierarchies, spec: &Cgroup) -> Result<(), Error> {
    let (tpath, cpath) = (task_path(spec), container_path(spec));
    for (ctrl, mount) in &h.v1 {
        let tdir = mount.join(rel(&tpath));
        let cdir = mount.join(rel(&cpath));
        match ctrl.as_str() {
            "memory" => {
                if let Some(m) = spec.task_memory_bytes {
                    write(&tdir, "memory.limit_in_bytes", &m.to_string())?;
                }
                if let Some(m) = spec.memory_bytes {
                    write(&cdir, "memory.limit_in_bytes", &m.to_string())?;
                }
                if let Some(r) = spec.memory_reservation_bytes {
                    write(&cdir, "memory.soft_limit_in_bytes", &r.to_string())?;
                }
            }
            "cpu" => {
                if let Some(q) = spec.task_cpu_quota_us {
                    write(&tdir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                    write(&tdir, "cpu.cfs_quota_us", &q.to_string())?;
                }
                if let Some(s) = spec.cpu_shares {
                    write(&cdir, "cpu.shares", &s.max(2).to_string())?;
                }
            }
            "pids" => {
                if let Some(p) = spec.pids_limit {
                    write(&cdir, "pids.max", &p.to_string())?;
                }
            }
            "devices" => {
                write(&cdir, "devices.deny", "a")?;
                for d in ALLOWED_DEVICES.iter().copied().chain(spec.extra_devices.iter().map(String::as_str)) {
                    write(&cdir, "devices.allow", d)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

// Warm slots.
//
// Moving a process into a cgroup (a write to `cgroup.procs`) takes the kernel's
// `cgroup_threadgroup_rwsem` for writing, which after a quiet spell first waits for an RCU
// grace period: 6 to 15 ms on this kind of host, most of a container's start. A slot moves a
// parked process into a cgroup of its own ahead of time, off the start path; the container
// is then forked from that process (so it is born in the cgroup, no migration), and the slot
// is renamed to the task's cgroup. cgroup v1 renames cgroups within their parent, so slots
// live beside the tasks' cgroups, as `estiba/.slot-<pid>`, with the container's cgroup
// inside as `c`. cgroup v2 cannot rename; there `clone3(CLONE_INTO_CGROUP)` would be the way.

/// Whether this host's cgroups allow warm slots (v1 and hybrid hosts).
pub fn slots_supported() -> bool {
    let h = hierarchies();
    h.v2.is_none() && !h.v1.is_empty()
}

/// The task-level path of slot `name` (`estiba/.slot-<name>`).
pub fn slot_path(name: &str) -> PathBuf {
    PathBuf::from("/estiba").join(format!(".slot-{name}"))
}

/// Moves the calling process into a new slot's container cgroup in every hierarchy.
pub fn enter_slot(slot: &Path) -> Result<(), Error> {
    if !slots_supported() {
        return Err(Error::Container("cgroup slots need cgroup v1".into()));
    }
    for mount in v1_mounts(hierarchies()) {
        let dir = mount.join(rel(slot)).join("c");
        mkdir(&dir)?;
        write(&dir, "cgroup.procs", "0")?;
    }
    Ok(())
}

/// Turns the slot holding `pid` into the container's cgroup described by `spec`, and applies
/// its limits. In a hierarchy where the task's cgroup already exists (a task's second
/// container), the process is moved there instead.
pub fn adopt_slot(slot: &Path, spec: &Cgroup, pid: i32) -> Result<(), Error> {
    let h = hierarchies();
    let (tpath, cpath) = (task_path(spec), container_path(spec));
    for mount in v1_mounts(h) {
        let (sdir, tdir, cdir) = (mount.join(rel(slot)), mount.join(rel(&tpath)), mount.join(rel(&cpath)));
        if std::fs::rename(&sdir, &tdir).is_ok() {
            std::fs::rename(tdir.join("c"), &cdir).map_err(|e| {
                Error::Container(format!("cgroup: renaming {} to {}: {e}", tdir.join("c").display(), cdir.display()))
            })?;
        } else {
            mkdir(&cdir)?;
            write(&cdir, "cgroup.procs", &pid.to_string())?;
            let _ = std::fs::remove_dir(sdir.join("c"));
            let _ = std::fs::remove_dir(&sdir);
        }
    }
    apply_v1(h, spec)
}

/// Removes empty slots that no parked process holds any more (left by a `kill -9`).
pub fn sweep_slots() {
    for mount in v1_mounts(hierarchies()) {
        let Ok(entries) = std::fs::read_dir(mount.join("estiba")) else { continue };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".slot-") {
                // rmdir fails while a process is inside: live slots stay.
                let _ = std::fs::remove_dir(e.path().join("c"));
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

fn apply_v2_task(tdir: &Path, spec: &Cgroup) -> Result<(), Error> {
    if let Some(q) = spec.task_cpu_quota_us {
        write(tdir, "cpu.max", &format!("{q} {CPU_PERIOD_US}"))?;
    }
    if let Some(m) = spec.task_memory_bytes {
        write(tdir, "memory.max", &m.to_string())?;
    }
    Ok(())
}

/// Applies the task-level limits to the task's cgroup (for OCI runtimes, which create the
/// container's cgroup themselves and the task's as its parent).
pub fn apply_task_limits(spec: &Cgroup) -> Result<(), Error> {
    let h = hierarchies();
    let tpath = task_path(spec);
    if let Some(root) = &h.v2 {
        return apply_v2_task(&root.join(rel(&tpath)), spec);
    }
    if let (Some(m), Some(mount)) = (spec.task_memory_bytes, h.v1.get("memory")) {
        write(&mount.join(rel(&tpath)), "memory.limit_in_bytes", &m.to_string())?;
    }
    if let (Some(q), Some(mount)) = (spec.task_cpu_quota_us, h.v1.get("cpu")) {
        let d = mount.join(rel(&tpath));
        write(&d, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
        write(&d, "cpu.cfs_quota_us", &q.to_string())?;
    }
    Ok(())
}

/// Starts, on a thread of its own, the RCU grace period the kernel waits for (about 10 ms)
/// before the first cgroup migration after a quiet spell, so that it elapses while a task's
/// network namespace and supervisors are set up instead of after. It moves this process into
/// the cgroup it is already in: a no-op migration that takes the same kernel lock
/// (`cgroup_threadgroup_rwsem`), after which migrations stay cheap for a grace period.
pub fn prime_migration() {
    static BUSY: AtomicBool = AtomicBool::new(false);
    if BUSY.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new().name("cgroup-prime".into()).spawn(|| {
        if let Some(procs) = own_procs_file() {
            let _ = std::fs::write(procs, "0");
        }
        BUSY.store(false, Ordering::Release);
    });
    if spawned.is_err() {
        BUSY.store(false, Ordering::Release);
    }
}

/// `cgroup.procs` of the cgroup this process is in, in one hierarchy.
fn own_procs_file() -> Option<PathBuf> {
    let h = hierarchies();
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (mount, path) = if let Some(root) = &h.v2 {
        (root, own.lines().find_map(|l| l.strip_prefix("0::"))?)
    } else {
        let (ctrl, mount) = h.v1.iter().next()?;
        let path = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls.split(',').any(|c| c == ctrl).then_some(path)
        })?;
        (mount, path)
    };
    Some(mount.join(rel(Path::new(path))).join("cgroup.procs"))
}

/// Every directory of `path` (with its children) across the hierarchies, deepest first.
fn dirs_of(path: &Path) -> Vec<PathBuf> {
    let h = hierarchies();
    let mut roots: Vec<&PathBuf> = h.v1.values().collect();
    if let Some(v2) = &h.v2 {
        roots.push(v2);
    }
    roots.sort();
    roots.dedup();
    let mut out = Vec::new();
    for r in roots {
        let d = r.join(rel(path));
        if let Ok(children) = std::fs::read_dir(&d) {
            for c in children.flatten() {
                if c.path().is_dir() {
                    out.push(c.path());
                }
            }
        }
        out.push(d);
    }
    out
}

/// Removes a cgroup (and its children), killing what is left in it first.
pub fn remove(path: &Path) -> Result<(), Error> {
    for dir in dirs_of(path) {
        if !dir.exists() {
            continue;
        }
        for _ in 0..50 {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    Ok(())
}

/// How many processes the kernel's OOM killer killed in the cgroup.
pub fn oom_kills(path: &Path) -> u64 {
    let h = hierarchies();
    let files: Vec<PathBuf> = match (&h.v2, h.v1.get("memory")) {
        (Some(v2), _) => vec![v2.join(rel(path)).join("memory.events")],
        (None, Some(m)) => vec![m.join(rel(path)).join("memory.oom_control")],
        (None, None) => vec![],
    };
    for f in files {
        if let Ok(text) = std::fs::read_to_string(&f) {
            for line in text.lines() {
                if let Some(n) = line.strip_prefix("oom_kill ") {
                    return n.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn finds_its_own_cgroup() {
        let f = own_procs_file().expect("this process's cgroup");
        assert!(f.exists(), "{}", f.display());
    }

    #[test]
    fn finds_this_hosts_hierarchies() {
        let h = hierarchies();
        assert!(h.v2.is_some() || h.v1.contains_key("memory"), "{h:?}");
    }
}
