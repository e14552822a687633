//! Any OCI runtime binary (runc, crun, youki) as executor: the supervisor mounts the overlay
//! root in a mount namespace of its own (so the host's mount table never holds it), writes
//! an OCI bundle `config.json`, and runs `<runtime> create` then `<runtime> start`. The
//! supervisor is a subreaper, so the container's process becomes its child when the runtime
//! exits.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde_json::json;

use super::native::{capabilities, clamp_rlimit, overlay_options, DEFAULT_PATH};
use super::spec::ContainerSpec;
use super::{cgroup, user};
use crate::Error;

/// Where the runtime keeps its own state (`--root`).
pub const RUNTIME_ROOT: &str = "/run/estiba/oci";

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Container(format!("{what}: {e}"))
}

fn runtime_cmd(runtime: &Path) -> Command {
    let mut c = Command::new(runtime);
    c.arg("--root").arg(RUNTIME_ROOT);
    c
}

/// Builds the bundle's `config.json`.
pub fn config(spec: &ContainerSpec, rootfs: &Path, u: &user::User) -> serde_json::Value {
    let caps = capabilities(spec);
    let seccomp = if spec.privileged || spec.seccomp_unconfined {
        serde_json::Value::Null
    } else {
        let parsed: Vec<caps::Capability> = caps.iter().filter_map(|c| c.parse().ok()).collect();
        super::seccomp::oci_profile(&parsed)
    };
    let process_caps: Vec<String> = if u.uid == 0 { caps.clone() } else { vec![] };
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", u.home));
    }
    let rlimits: Vec<serde_json::Value> = spec
        .rlimits
        .iter()
        .filter_map(|r| {
            let (soft, hard) = clamp_rlimit(&r.kind, r.soft, r.hard)?;
            let kind = if r.kind.starts_with("RLIMIT_") {
                r.kind.clone()
            } else {
                format!("RLIMIT_{}", r.kind.to_ascii_uppercase())
            };
            Some(json!({ "type": kind, "soft": soft, "hard": hard }))
        })
        .collect();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for m in &spec.mounts {
        let mut opts = vec!["rbind"];
        if m.readonly {
            opts.push("ro");
        }
        mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": opts}));
    }
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    match &spec.netns {
        _ if spec.host_network => {}
        Some(p) => namespaces.push(json!({"type": "network", "path": p})),
        None => namespaces.push(json!({"type": "network"})),
    }
    let mut resources = serde_json::Map::new();
    let mut memory = serde_json::Map::new();
    if let Some(m) = spec.cgroup.memory_bytes {
        memory.insert("limit".into(), json!(m));
    }
    if let Some(r) = spec.cgroup.memory_reservation_bytes {
        memory.insert("reservation".into(), json!(r));
    }
    if !memory.is_empty() {
        resources.insert("memory".into(), memory.into());
    }
    if let Some(s) = spec.cgroup.cpu_shares {
        resources.insert("cpu".into(), json!({"shares": s.max(2)}));
    }
    if let Some(p) = spec.cgroup.pids_limit {
        resources.insert("pids".into(), json!({"limit": p}));
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids},
            "args": spec.args,
            "env": env,
            "cwd": if spec.cwd.is_empty() { "/" } else { spec.cwd.as_str() },
            "capabilities": {"bounding": caps, "effective": process_caps, "permitted": process_caps},
            "rlimits": rlimits,
            "noNewPrivileges": !spec.privileged
        },
        "root": {"path": rootfs, "readonly": spec.readonly_rootfs},
        "hostname": spec.hostname.clone().unwrap_or_default(),
        "annotations": spec.labels,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroup::container_path(&spec.cgroup),
            "resources": resources,
            "maskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            "seccomp": seccomp
        }
    })
}

/// Starts the container with the OCI runtime at `runtime`; returns its PID.
pub fn start(spec: &ContainerSpec, runtime: &Path, out: &OwnedFd, errfd: &OwnedFd) -> Result<i32, Error> {
    // The overlay lives in the supervisor's own mount namespace, which the runtime inherits.
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| err("unshare mount namespace", e))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| err("making / private", e))?;
    let rootfs = spec.state_dir.join("rootfs");
    let upper = spec.state_dir.join("upper");
    let work = spec.state_dir.join("work");
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(d).map_err(|e| err(&format!("creating {}", d.display()), e))?;
    }
    if !spec.layers.is_empty() {
        let opts = overlay_options(&spec.layers, &upper, &work);
        // nodev, as the built-in executor mounts it: device nodes made in the root open nothing.
        mount(Some("overlay"), &rootfs, Some("overlay"), MsFlags::MS_NODEV, Some(opts.as_str()))
            .map_err(|e| err("mounting the overlay root", e))?;
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let u = user::resolve(spec.user.as_deref(), &passwd, &group)?;
    // `spec.init` is not honoured here (the OCI runtime starts the process itself); the agent
    // warns about it when it translates the task.
    let cfg = config(spec, &rootfs, &u);
    std::fs::write(spec.state_dir.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap())
        .map_err(|e| err("writing config.json", e))?;
    std::fs::create_dir_all(RUNTIME_ROOT).map_err(|e| err(RUNTIME_ROOT, e))?;
    let pid_file: PathBuf = spec.state_dir.join("pid");
    let output = runtime_cmd(runtime)
        .arg("create")
        .arg("--bundle")
        .arg(&spec.state_dir)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&spec.id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().map_err(|e| err("dup", e))?))
        .stderr(Stdio::from(errfd.try_clone().map_err(|e| err("dup", e))?))
        .status()
        .map_err(|e| err(&format!("running {}", runtime.display()), e))?;
    if !output.success() {
        let log = std::fs::read_to_string(spec.log_path()).unwrap_or_default();
        return Err(Error::Container(format!(
            "{} create failed ({output}) {}",
            runtime.display(),
            log.lines().last().unwrap_or("")
        )));
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::Container(format!("{} wrote no pid file", runtime.display())))?;
    // Task-level limits live on the task's cgroup, which the runtime created as the parent of
    // the container's but does not manage.
    cgroup::apply_task_limits(&spec.cgroup)?;
    let st = runtime_cmd(runtime)
        .arg("start")
        .arg(&spec.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match st {
        Ok(o) if o.status.success() => Ok(pid),
        Ok(o) => Err(Error::Container(format!(
            "{} start failed: {}",
            runtime.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(err(&format!("running {}", runtime.display()), e)),
    }
}

/// Removes what the runtime keeps for the container (its state, its cgroup).
pub fn delete(spec: &ContainerSpec, runtime: &Path) {
    let _ = runtime_cmd(runtime)
        .args(["delete", "--force"])
        .arg(&spec.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = cgroup::remove(&cgroup::container_path(&spec.cgroup));
}
