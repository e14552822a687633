//! cgroups for a task and its containers, through youki's `libcgroups` (v1, hybrid and v2
//! hosts). The task's cgroup carries the task-level limits (ECS task `cpu` as a CFS quota,
//! task `memory` as a hard limit); each container gets a child with its own (`cpu` as
//! shares, `memory` hard, `memoryReservation` soft).

use std::path::{Path, PathBuf};

use libcgroups::common::{create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder};

use super::spec::Cgroup;
use crate::Error;

/// The CFS period quotas are measured against.
pub const CPU_PERIOD_US: u64 = 100_000;

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Container(format!("cgroup {what}: {e}"))
}

fn manager(path: &Path, name: &str) -> Result<AnyCgroupManager, Error> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: path.to_path_buf(),
        systemd_cgroup: false,
        container_name: name.to_owned(),
    })
    .map_err(|e| err(&format!("{}", path.display()), e))
}

pub fn task_path(spec: &Cgroup) -> PathBuf {
    PathBuf::from("/").join(&spec.task_path)
}

pub fn container_path(spec: &Cgroup) -> PathBuf {
    task_path(spec).join(&spec.name)
}

fn apply(m: &AnyCgroupManager, r: &LinuxResources, what: &Path) -> Result<(), Error> {
    let opt = ControllerOpt { resources: r, disable_oom_killer: false, oom_score_adj: None, freezer_state: None };
    m.apply(&opt).map_err(|e| err(&format!("limits of {}", what.display()), e))
}

fn task_resources(spec: &Cgroup) -> Result<LinuxResources, Error> {
    let mut tr = LinuxResourcesBuilder::default();
    if let Some(q) = spec.task_cpu_quota_us {
        tr = tr.cpu(LinuxCpuBuilder::default().quota(q).period(CPU_PERIOD_US).build().map_err(|e| err("cpu", e))?);
    }
    if let Some(m) = spec.task_memory_bytes {
        tr = tr.memory(LinuxMemoryBuilder::default().limit(m).build().map_err(|e| err("memory", e))?);
    }
    tr.build().map_err(|e| err("resources", e))
}

fn container_resources(spec: &Cgroup) -> Result<LinuxResources, Error> {
    let mut cr = LinuxResourcesBuilder::default();
    if let Some(s) = spec.cpu_shares {
        cr = cr.cpu(LinuxCpuBuilder::default().shares(s.max(2)).build().map_err(|e| err("cpu", e))?);
    }
    if spec.memory_bytes.is_some() || spec.memory_reservation_bytes.is_some() {
        let mut mb = LinuxMemoryBuilder::default();
        if let Some(m) = spec.memory_bytes {
            mb = mb.limit(m);
        }
        if let Some(r) = spec.memory_reservation_bytes {
            mb = mb.reservation(r);
        }
        cr = cr.memory(mb.build().map_err(|e| err("memory", e))?);
    }
    if let Some(p) = spec.pids_limit {
        cr = cr.pids(LinuxPidsBuilder::default().limit(p).build().map_err(|e| err("pids", e))?);
    }
    cr.build().map_err(|e| err("resources", e))
}

/// Places `pid` in the container's cgroup (creating it and the task's) and applies both
/// levels of limits. The process goes straight to the container's cgroup: on cgroup v2 the
/// task's cgroup must hold no process of its own.
pub fn attach(spec: &Cgroup, pid: i32) -> Result<(), Error> {
    let cpath = container_path(spec);
    let ctr = manager(&cpath, &spec.name)?;
    ctr.add_task(Pid::from_raw(pid)).map_err(|e| err(&format!("adding the container to {}", cpath.display()), e))?;
    apply_task_limits(spec)?;
    apply(&ctr, &container_resources(spec)?, &cpath)
}

/// Applies the task-level limits to the task's cgroup, which must exist.
pub fn apply_task_limits(spec: &Cgroup) -> Result<(), Error> {
    let tpath = task_path(spec);
    let task = manager(&tpath, &spec.name)?;
    apply(&task, &task_resources(spec)?, &tpath)
}

/// Removes a cgroup (killing what is left in it).
pub fn remove(path: &Path) -> Result<(), Error> {
    if let Ok(m) = manager(path, "") {
        m.remove().map_err(|e| err(&format!("removing {}", path.display()), e))?;
    }
    Ok(())
}

/// The cgroup filesystem roots to look in: v1 controllers, then the unified hierarchy.
fn memory_files(path: &Path) -> Vec<PathBuf> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    vec![
        Path::new("/sys/fs/cgroup/memory").join(rel).join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
        Path::new("/sys/fs/cgroup/unified").join(rel).join("memory.events"),
    ]
}

/// How many processes the kernel's OOM killer killed in the cgroup.
pub fn oom_kills(path: &Path) -> u64 {
    for f in memory_files(path) {
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

/// Whether the cgroup still holds processes (`cgroup.procs` of any hierarchy).
pub fn has_processes(path: &Path) -> bool {
    let rel = path.strip_prefix("/").unwrap_or(path);
    ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .iter()
        .filter_map(|root| std::fs::read_to_string(Path::new(root).join(rel).join("cgroup.procs")).ok())
        .any(|t| !t.trim().is_empty())
}
