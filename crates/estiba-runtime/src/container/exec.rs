//! Runs a command inside a running container (health checks): joins the container's cgroup
//! and namespaces (IPC, UTS, network, PID, mount; joining the mount namespace also moves to
//! its root), then forks so the command is inside the PID namespace, and runs it as the
//! container's user with the container's environment.
//!
//! The command gets the container's own confinement, read from its process (as `docker exec`
//! does): its capability bounding set (and effective set, for root), `no_new_privs`, and the
//! default seccomp profile when the container has a filter.
//!
//! Called as `estiba exec-in`, a fresh single-threaded process: joining namespaces and
//! forking are unsafe in the agent's multi-threaded one.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Uid};

use super::native::DEFAULT_PATH;
use super::user;
use crate::Error;

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Container(format!("{what}: {e}"))
}

/// Moves this process into the cgroups of `pid`.
fn join_cgroups(pid: i32) -> Result<(), Error> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| err("reading the container's cgroups", e))?;
    let me = std::process::id().to_string();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let rel = path.trim_start_matches('/');
        let dirs: Vec<String> = if controllers.is_empty() {
            vec!["/sys/fs/cgroup".into(), "/sys/fs/cgroup/unified".into()]
        } else {
            controllers.split(',').map(|c| format!("/sys/fs/cgroup/{}", c.trim_start_matches("name="))).collect()
        };
        for d in dirs {
            let procs = Path::new(&d).join(rel).join("cgroup.procs");
            if procs.exists() {
                let _ = std::fs::write(&procs, &me);
                break;
            }
        }
    }
    Ok(())
}

/// Runs `args` in the container whose first process is `pid`; returns the exit code.
/// What confines the container's process, read from `/proc/<pid>/status`.
struct Confinement {
    bounding: Vec<caps::Capability>,
    effective: caps::CapsHashSet,
    no_new_privs: bool,
    seccomp: Option<std::sync::Arc<super::seccomp::Compiled>>,
}

impl Confinement {
    fn of(pid: i32) -> Result<Confinement, Error> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| err("reading the container's status", e))?;
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned())).unwrap_or_default()
        };
        let mask = |name: &str| -> caps::CapsHashSet {
            let m = u64::from_str_radix(&field(name), 16).unwrap_or(0);
            caps::all().into_iter().filter(|c| m & c.bitmask() != 0).collect()
        };
        let bounding: Vec<caps::Capability> = mask("CapBnd:").into_iter().collect();
        let seccomp = match field("Seccomp:").as_str() {
            "0" => None,
            _ => Some(super::seccomp::cached(&bounding)?),
        };
        Ok(Confinement { effective: mask("CapEff:"), bounding, no_new_privs: field("NoNewPrivs:") == "1", seccomp })
    }

    /// In the forked child, before setuid (it needs CAP_SETPCAP): the bounding set.
    fn bound(&self) {
        for c in caps::all() {
            if !self.bounding.contains(&c) {
                let _ = caps::drop(None, caps::CapSet::Bounding, c);
            }
        }
    }

    /// In the forked child, after setuid: the process's capabilities, `no_new_privs` and the
    /// filter.
    fn apply(&self, uid: u32) -> Result<(), String> {
        if uid == 0 {
            for set in [caps::CapSet::Effective, caps::CapSet::Permitted, caps::CapSet::Inheritable] {
                caps::set(None, set, &self.effective).map_err(|e| e.to_string())?;
            }
        }
        let _ = caps::clear(None, caps::CapSet::Ambient);
        if self.no_new_privs {
            super::seccomp::no_new_privs()?;
        }
        if let Some(f) = &self.seccomp {
            super::seccomp::install(f)?;
        }
        Ok(())
    }
}

/// The user namespace of process `pid`, when it is not this process's (a remapped container).
fn other_userns(pid: i32) -> Result<Option<std::fs::File>, Error> {
    use std::os::unix::fs::MetadataExt;
    let theirs =
        std::fs::File::open(format!("/proc/{pid}/ns/user")).map_err(|e| err("opening the user namespace", e))?;
    let ours = std::fs::metadata("/proc/self/ns/user").map_err(|e| err("reading this user namespace", e))?;
    let md = theirs.metadata().map_err(|e| err("reading the user namespace", e))?;
    Ok((md.ino() != ours.ino() || md.dev() != ours.dev()).then_some(theirs))
}

pub fn exec_in(pid: i32, args: &[String], user_spec: Option<&str>, cwd: Option<&str>) -> Result<i32, Error> {
    if args.is_empty() {
        return Err(Error::Container("no command given".into()));
    }
    let environ =
        std::fs::read(format!("/proc/{pid}/environ")).map_err(|e| err("reading the container's environment", e))?;
    let mut env: Vec<String> =
        environ.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let mut nss = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let f = std::fs::File::open(format!("/proc/{pid}/ns/{name}"))
            .map_err(|e| err(&format!("opening the {name} namespace"), e))?;
        nss.push((f, flag, name));
    }
    let confinement = Confinement::of(pid)?;
    join_cgroups(pid)?;
    // A remapped container's user namespace is joined last: the others belong to the host's,
    // where this process still has its capabilities.
    let userns = other_userns(pid)?;
    for (f, flag, name) in &nss {
        setns(f, *flag).map_err(|e| err(&format!("joining the {name} namespace"), e))?;
    }
    drop(nss);
    if let Some(f) = &userns {
        super::userns::enter(f.as_fd()).map_err(Error::Container)?;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let u = user::resolve(user_spec, &passwd, &group)?;
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH).to_owned();
    let program = if args[0].contains('/') {
        std::path::PathBuf::from(&args[0])
    } else {
        path.split(':')
            .map(|d| Path::new(d).join(&args[0]))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Container(format!("exec: \"{}\": executable file not found in $PATH", args[0])))?
    };
    let prog = CString::new(program.as_os_str().as_bytes()).map_err(|e| err("program", e))?;
    let argv: Vec<CString> = args.iter().map(|a| CString::new(a.as_bytes()).unwrap_or_default()).collect();
    let envp: Vec<CString> = env.iter().map(|e| CString::new(e.as_bytes()).unwrap_or_default()).collect();
    // SAFETY: this process is single-threaded.
    match unsafe { nix::unistd::fork() }.map_err(|e| err("fork", e))? {
        ForkResult::Child => {
            confinement.bound();
            let gids: Vec<Gid> = u.additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
            let _ = nix::unistd::setgroups(&gids);
            let ok =
                nix::unistd::setgid(Gid::from_raw(u.gid)).is_ok() && nix::unistd::setuid(Uid::from_raw(u.uid)).is_ok();
            if !ok {
                // SAFETY: leaving the forked child.
                unsafe { nix::libc::_exit(126) }
            }
            let _ = nix::unistd::chdir(cwd.unwrap_or("/"));
            // The command dies with this process (killed when a health check times out or an
            // exec session ends). Set after setuid, which clears it.
            // SAFETY: prctl with integer arguments only.
            unsafe { nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL as nix::libc::c_ulong, 0, 0, 0) };
            if confinement.apply(u.uid).is_err() {
                // SAFETY: leaving the forked child.
                unsafe { nix::libc::_exit(126) }
            }
            let _ = nix::unistd::execve(&prog, &argv, &envp);
            // SAFETY: leaving the forked child after a failed exec.
            unsafe { nix::libc::_exit(127) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => return Ok(c),
                Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                Ok(_) => continue,
                Err(e) => return Err(err("waiting for the command", e)),
            }
        },
    }
}
