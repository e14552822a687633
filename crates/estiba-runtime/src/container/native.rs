//! The built-in executor: makes a container's process with `clone(2)` in new PID, IPC and
//! UTS namespaces ([`premake`]), which unshares its own mount namespace (and a network
//! namespace, when the task has none to join) and becomes the container: an overlay root
//! filesystem mounted inside that mount namespace, `pivot_root`, the usual `/proc`, `/dev` and
//! `/sys`, rlimits, user, capabilities, then `execve`. [`start`] does it all at once; a warm
//! slot's process is made ahead of time and becomes the container later
//! ([`become_container`]).
//!
//! Written by hand rather than through youki's `libcontainer` for two reasons: start-up
//! latency (one clone and a handful of mounts, no intermediate processes or state files),
//! and `initProcessEnabled`: here the container's PID 1 can stay as a small reaper running
//! estiba's own code, already in memory, so no init binary has to exist in the image.
//! Must be called from a single-threaded process (the supervisor): the child runs Rust code
//! between `clone` and `execve`.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{clone, setns, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, execve, pivot_root, sethostname, Gid, Pid, Uid};

use super::seccomp;
use super::spec::ContainerSpec;
use super::user;
use crate::Error;

/// Capabilities a container gets by default (Docker's set).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths hidden from the container (bind-mounted over with /dev/null or an empty tmpfs).
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Every capability this process holds (privileged, `ALL`), as Docker gives its own: not
/// `caps::all()`, which also names capabilities the kernel or the host's bounding set lack
/// and `capset` refuses.
fn all_caps() -> Vec<String> {
    let held = caps::read(None, caps::CapSet::Permitted).unwrap_or_default();
    let mut v: Vec<String> = caps::all().into_iter().filter(|c| held.contains(c)).map(|c| c.to_string()).collect();
    v.sort();
    v
}

/// The capability set a spec asks for.
pub fn capabilities(spec: &ContainerSpec) -> Vec<String> {
    let mut caps: Vec<String> =
        if spec.privileged { all_caps() } else { DEFAULT_CAPS.iter().map(|s| s.to_string()).collect() };
    let norm = |c: &str| if c.starts_with("CAP_") { c.to_owned() } else { format!("CAP_{c}") };
    for a in &spec.cap_add {
        let a = norm(a);
        if a == "CAP_ALL" {
            caps = all_caps();
        } else if !caps.contains(&a) {
            caps.push(a);
        }
    }
    for d in &spec.cap_drop {
        let d = norm(d);
        if d == "CAP_ALL" {
            caps.clear();
        } else {
            caps.retain(|c| *c != d);
        }
    }
    caps
}

/// The overlay mount options for `layers` (bottom first).
pub fn overlay_options(layers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
    format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display())
}

/// Everything the child needs, prepared before `clone` so the child only makes syscalls.
struct Plan {
    rootfs: PathBuf,
    overlay: Option<String>,
    netns: Option<PathBuf>,
    host_network: bool,
    hostname: Option<String>,
    readonly: bool,
    init: bool,
    rlimits: Vec<(nix::sys::resource::Resource, u64, u64)>,
    user: Option<String>,
    caps: Vec<caps::Capability>,
    /// Installed just before exec; `None` for privileged and `seccomp=unconfined` containers.
    seccomp: Option<std::sync::Arc<seccomp::Compiled>>,
    no_new_privs: bool,
    /// Host devices to make in /dev: path in the container, type, number, mode.
    devices: Vec<(String, SFlag, u64, Mode)>,
    env: Vec<String>,
    args: Vec<String>,
    cwd: String,
    mounts: Vec<(PathBuf, String, bool)>,
    stdout: RawFd,
    stderr: RawFd,
    /// Waited on for the supervisor's go ahead (after cgroup placement) before user code.
    go: Option<RawFd>,
    err: RawFd,
    /// The user namespace to run in (`--userns remap`), and each layer with where its
    /// idmapped mount goes (the overlay's lower directories then).
    userns: Option<super::spec::UserNs>,
    idmaps: Vec<(PathBuf, PathBuf)>,
}

fn resource(kind: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match kind.trim_start_matches("RLIMIT_").to_ascii_uppercase().as_str() {
        "CORE" => R::RLIMIT_CORE,
        "CPU" => R::RLIMIT_CPU,
        "DATA" => R::RLIMIT_DATA,
        "FSIZE" => R::RLIMIT_FSIZE,
        "LOCKS" => R::RLIMIT_LOCKS,
        "MEMLOCK" => R::RLIMIT_MEMLOCK,
        "MSGQUEUE" => R::RLIMIT_MSGQUEUE,
        "NICE" => R::RLIMIT_NICE,
        "NOFILE" => R::RLIMIT_NOFILE,
        "NPROC" => R::RLIMIT_NPROC,
        "RSS" => R::RLIMIT_RSS,
        "RTPRIO" => R::RLIMIT_RTPRIO,
        "RTTIME" => R::RLIMIT_RTTIME,
        "SIGPENDING" => R::RLIMIT_SIGPENDING,
        "STACK" => R::RLIMIT_STACK,
        _ => return None,
    })
}

/// Clamps an rlimit to what this host allows (its own hard limit; `nr_open` for NOFILE).
pub fn clamp_rlimit(kind: &str, soft: u64, hard: u64) -> Option<(u64, u64)> {
    let r = resource(kind)?;
    let (_, host_hard) = nix::sys::resource::getrlimit(r).ok()?;
    let hard = hard.min(host_hard);
    Some((soft.min(hard), hard))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Container(format!("pipe: {e}")))
}

/// Everything of `spec` the container's setup needs, checked before any process is made.
/// `go` is the read end the setup waits on before user code runs (none: it does not wait);
/// `err` is where a failure is written (it closes on exec).
fn plan(spec: &ContainerSpec, stdout: RawFd, stderr: RawFd, go: Option<RawFd>, err: RawFd) -> Result<Plan, Error> {
    let rootfs = spec.state_dir.join("rootfs");
    let upper = spec.state_dir.join("upper");
    let work = spec.state_dir.join("work");
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(d).map_err(|e| Error::Container(format!("creating {}: {e}", d.display())))?;
    }
    // Remapped: each layer is seen through an idmapped mount (made in the container's mount
    // namespace), and the writable layer belongs to the namespace's root.
    let idmaps: Vec<(PathBuf, PathBuf)> = match &spec.userns {
        Some(ns) => {
            let owner = Some(nix::unistd::Uid::from_raw(ns.base));
            for d in [&upper, &work] {
                nix::unistd::chown(d, owner, Some(Gid::from_raw(ns.base)))
                    .map_err(|e| Error::Container(format!("chown {}: {e}", d.display())))?;
            }
            let lower = spec.state_dir.join("lower");
            spec.layers
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let target = lower.join(i.to_string());
                    std::fs::create_dir_all(&target)
                        .map_err(|e| Error::Container(format!("creating {}: {e}", target.display())))?;
                    Ok((l.clone(), target))
                })
                .collect::<Result<_, Error>>()?
        }
        None => Vec::new(),
    };
    let lowers: Vec<PathBuf> = match spec.userns {
        Some(_) => idmaps.iter().map(|(_, t)| t.clone()).collect(),
        None => spec.layers.clone(),
    };
    let overlay = (!lowers.is_empty()).then(|| overlay_options(&lowers, &upper, &work));
    if overlay.as_ref().is_some_and(|o| o.len() > 4000) {
        return Err(Error::Container("too many image layers for one overlay mount".into()));
    }
    let mut rlimits = Vec::new();
    for r in &spec.rlimits {
        let Some(res) = resource(&r.kind) else {
            return Err(Error::Container(format!("unknown ulimit {}", r.kind)));
        };
        let (soft, hard) = clamp_rlimit(&r.kind, r.soft, r.hard).unwrap_or((r.soft, r.hard));
        rlimits.push((res, soft, hard));
    }
    let mut caps = Vec::new();
    for c in capabilities(spec) {
        caps.push(c.parse::<caps::Capability>().map_err(|_| Error::Container(format!("unknown capability {c}")))?);
    }
    let seccomp = if spec.privileged || spec.seccomp_unconfined { None } else { Some(seccomp::cached(&caps)?) };
    let mut devices = Vec::new();
    for d in &spec.devices {
        let st = nix::sys::stat::stat(&d.host_path)
            .map_err(|e| Error::Container(format!("device {}: {e}", d.host_path.display())))?;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if kind != SFlag::S_IFCHR && kind != SFlag::S_IFBLK {
            return Err(Error::Container(format!("device {}: not a device node", d.host_path.display())));
        }
        let dest =
            if d.container_path.is_empty() { d.host_path.display().to_string() } else { d.container_path.clone() };
        devices.push((dest, kind, st.st_rdev, Mode::from_bits_truncate(st.st_mode & 0o777)));
    }
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if spec.args.is_empty() {
        return Err(Error::Container("no command to run: the image and the container definition give none".into()));
    }
    Ok(Plan {
        rootfs,
        overlay,
        netns: spec.netns.clone().filter(|_| !spec.host_network),
        host_network: spec.host_network,
        hostname: spec.hostname.clone(),
        readonly: spec.readonly_rootfs,
        init: spec.init,
        rlimits,
        user: spec.user.clone(),
        caps,
        seccomp,
        no_new_privs: !spec.privileged,
        devices,
        env,
        args: spec.args.clone(),
        cwd: if spec.cwd.is_empty() { "/".into() } else { spec.cwd.clone() },
        mounts: spec.mounts.iter().map(|m| (m.source.clone(), m.destination.clone(), m.readonly)).collect(),
        stdout,
        stderr,
        go,
        err,
        userns: spec.userns.clone(),
        idmaps,
    })
}

/// The namespaces a container's process is made with ([`premake`]). The others it unshares
/// when it becomes the container ([`become_planned`]).
const PREMADE_NAMESPACES: CloneFlags =
    CloneFlags::CLONE_NEWPID.union(CloneFlags::CLONE_NEWIPC).union(CloneFlags::CLONE_NEWUTS);

/// Starts the container. `stdout`/`stderr` become its standard output and error; its
/// standard input is `/dev/null`. `before_run` is called with the container's PID (in this
/// namespace) before its first instruction of user code (to place it in its cgroup).
/// Returns the PID.
pub fn start(
    spec: &ContainerSpec,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    before_run: impl FnOnce(i32) -> Result<(), Error>,
) -> Result<i32, Error> {
    let (go_r, go_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let plan = plan(spec, stdout.as_raw_fd(), stderr.as_raw_fd(), Some(go_r.as_raw_fd()), err_w.as_raw_fd())?;
    let pid = premake(|| fail(plan.err, become_planned(&plan)))?;
    drop(go_r);
    drop(err_w);
    let pid_raw = pid.as_raw();
    let mut go = std::fs::File::from(go_w);
    let mut errs = std::fs::File::from(err_r);
    if let Err(e) = before_run(pid_raw) {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        // A child that failed its own setup first says better what went wrong.
        let mut msg = String::new();
        let _ = errs.read_to_string(&mut msg);
        return Err(if msg.is_empty() { e } else { Error::Container(msg) });
    }
    let _ = go.write_all(b"g");
    drop(go);
    let mut msg = String::new();
    let _ = errs.read_to_string(&mut msg);
    if !msg.is_empty() {
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(Error::Container(msg));
    }
    Ok(pid_raw)
}

/// Makes a container's process, in new PID, IPC and UTS namespaces, running `body` (whose
/// return value is its exit code): at once for [`start`], ahead of time for a warm slot, whose
/// process calls [`become_container`] later. What `body` captures is moved into the child's
/// copy of the address space and dropped in the caller once the child exists. Returns the
/// PID. Must be called from a single-threaded process.
pub fn premake(body: impl FnOnce() -> isize) -> Result<Pid, Error> {
    let mut stack = vec![0u8; 1 << 20];
    // clone(2) takes an FnMut; the child calls it once.
    let mut body = Some(body);
    // SAFETY: the caller is single-threaded; the child runs `body` on its own copy of the
    // address space and then exits, never returning into the parent's frames.
    unsafe {
        clone(
            Box::new(move || body.take().map_or(1, |f| f())),
            &mut stack,
            PREMADE_NAMESPACES,
            Some(Signal::SIGCHLD as i32),
        )
    }
    .map_err(|e| Error::Container(format!("clone: {e}")))
}

/// Turns the calling process, made by [`premake`] and already in the container's cgroup,
/// into the container of `spec`: on success it runs the container's program and never
/// returns, and `err` (close-on-exec) closes; otherwise returns what went wrong.
pub fn become_container(spec: &ContainerSpec, stdout: RawFd, stderr: RawFd, err: RawFd) -> String {
    match plan(spec, stdout, stderr, None, err) {
        Ok(p) => become_planned(&p),
        Err(e) => e.to_string(),
    }
}

/// Unshares the container's mount namespace (copied now, so it sees every mount made until
/// then) and, when the task has no network namespace, a network namespace of its own; then
/// sets the container up and execs it. Returns only what went wrong.
fn become_planned(p: &Plan) -> String {
    let mut late = CloneFlags::CLONE_NEWNS;
    if p.netns.is_none() && !p.host_network {
        late |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = nix::sched::unshare(late) {
        return format!("unshare: {e}");
    }
    match setup(p) {
        Ok(never) => match never {},
        Err(msg) => msg,
    }
}

/// Reports a setup failure to the parent and exits.
fn fail(err_fd: RawFd, msg: String) -> ! {
    // SAFETY: err_fd is the child's copy of the error pipe, open until exec or exit.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(err_fd) });
    let _ = f.write_all(msg.as_bytes());
    // SAFETY: leaving the child without running the parent's destructors.
    unsafe { nix::libc::_exit(127) }
}

fn at(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

fn mnt(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(src, target, fstype, flags, data)
        .map_err(|e| format!("mounting {} on {}: {e}", fstype.or(src).unwrap_or("-"), target.display()))
}

/// Everything between clone and exec. Returns only on error.
fn setup(p: &Plan) -> Result<std::convert::Infallible, String> {
    if let Some(ns) = &p.netns {
        let f = std::fs::File::open(ns).map_err(|e| format!("opening network namespace {}: {e}", ns.display()))?;
        setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("joining network namespace {}: {e}", ns.display()))?;
    }
    mnt(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    let userns = match &p.userns {
        Some(ns) => {
            let fd = super::userns::open(&ns.path)?;
            for (layer, target) in &p.idmaps {
                super::userns::idmap(layer, target, fd.as_fd())?;
            }
            if !p.host_network {
                // The network namespace is the host's user namespace's: the container's root
                // binds low ports and pings by these (as Docker sets them), not by capabilities.
                for (knob, value) in [("ip_unprivileged_port_start", "0"), ("ping_group_range", "0 2147483647")] {
                    std::fs::write(format!("/proc/sys/net/ipv4/{knob}"), value)
                        .map_err(|e| format!("setting net.ipv4.{knob}: {e}"))?;
                }
            }
            Some((fd, ns))
        }
        None => None,
    };
    let root = &p.rootfs;
    match &p.overlay {
        // nodev: a device node made in the writable layer opens nothing (a root container
        // keeps CAP_MKNOD, as with Docker); the container's /dev is its own mount.
        Some(opts) => mnt(Some("overlay"), root, Some("overlay"), MsFlags::MS_NODEV, Some(opts))?,
        None => mnt(Some(root.to_str().unwrap_or("/")), root, None, MsFlags::MS_BIND, None)?,
    }
    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    for d in ["proc", "sys", "dev"] {
        let _ = std::fs::create_dir_all(root.join(d));
    }
    mnt(Some("proc"), &root.join("proc"), Some("proc"), nosuid_noexec_nodev, None)?;
    // sysfs cannot be mounted from a network namespace we do not own; bind the host's then.
    if mnt(Some("sysfs"), &root.join("sys"), Some("sysfs"), nosuid_noexec_nodev | MsFlags::MS_RDONLY, None).is_err() {
        mnt(Some("/sys"), &root.join("sys"), None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        let _ = mount(
            None::<&str>,
            &root.join("sys"),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        );
    }
    mnt(
        Some("tmpfs"),
        &root.join("dev"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let path = root.join("dev").join(name);
        mknod(&path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), makedev(major, minor))
            .map_err(|e| format!("creating /dev/{name}: {e}"))?;
        // mknod applies the umask; the nodes are world-usable.
        let _ = nix::sys::stat::fchmodat(
            None,
            &path,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
    }
    for (dest, kind, rdev, mode) in &p.devices {
        let path = at(root, dest);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::remove_file(&path);
        mknod(&path, *kind, *mode, *rdev).map_err(|e| format!("creating device {dest}: {e}"))?;
        let _ = nix::sys::stat::fchmodat(None, &path, *mode, nix::sys::stat::FchmodatFlags::FollowSymlink);
    }
    for d in ["pts", "shm", "mqueue"] {
        let _ = std::fs::create_dir(root.join("dev").join(d));
    }
    mnt(
        Some("devpts"),
        &root.join("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mnt(Some("shm"), &root.join("dev/shm"), Some("tmpfs"), nosuid_noexec_nodev, Some("mode=1777,size=65536k"))?;
    mnt(Some("mqueue"), &root.join("dev/mqueue"), Some("mqueue"), nosuid_noexec_nodev, None)?;
    for (link, target) in [
        ("dev/ptmx", "pts/ptmx"),
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
        ("dev/core", "/proc/kcore"),
    ] {
        let _ = std::os::unix::fs::symlink(target, root.join(link));
    }
    for (src, dest, ro) in &p.mounts {
        let target = at(root, dest);
        if src.is_dir() {
            let _ = std::fs::create_dir_all(&target);
        } else {
            if let Some(parent) = target.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if std::fs::symlink_metadata(&target).is_err() {
                let _ = std::fs::write(&target, b"");
            }
        }
        mnt(Some(src.to_str().unwrap_or("")), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        if *ro {
            let _ = mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
        }
    }

    // Make the overlay the root and drop the host's tree.
    chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;

    for m in MASKED {
        let path = Path::new(m);
        match std::fs::symlink_metadata(path) {
            Ok(md) if md.is_dir() => {
                let _ = mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>);
            }
            Ok(_) => {
                let _ = mount(Some("/dev/null"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>);
            }
            Err(_) => {}
        }
    }
    for r in READONLY {
        let path = Path::new(r);
        if path.exists()
            && mount(Some(path), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).is_ok()
        {
            let _ = mount(
                Some(path),
                path,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
        }
    }
    if p.readonly {
        mnt(None, Path::new("/"), None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None)?;
    }
    if let Some(h) = &p.hostname {
        sethostname(h).map_err(|e| format!("setting the hostname: {e}"))?;
    }
    for (r, soft, hard) in &p.rlimits {
        nix::sys::resource::setrlimit(*r, *soft, *hard).map_err(|e| format!("setting {r:?} to {soft}:{hard}: {e}"))?;
    }

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let u = user::resolve(p.user.as_deref(), &passwd, &group).map_err(|e| e.to_string())?;
    let mut env = p.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", u.home));
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        if let Some(h) = &p.hostname {
            env.push(format!("HOSTNAME={h}"));
        }
    }
    // The root filesystem is ready. Wait until the parent has placed us in our cgroup (a
    // first migration in a while waits ~10 ms for an RCU grace period: the mounts above
    // overlap it), before anything of the container's own runs or writes.
    if let Some(go) = p.go {
        // SAFETY: go is the child's copy of the read end of the go pipe.
        let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(go) });
        let mut b = [0u8; 1];
        if f.read(&mut b).map_err(|e| format!("waiting for the supervisor: {e}"))? != 1 {
            return Err("the supervisor went away before the container started".into());
        }
    }
    let cwd = Path::new(&p.cwd);
    if !cwd.exists() {
        std::fs::create_dir_all(cwd).map_err(|e| format!("creating the working directory {}: {e}", p.cwd))?;
        let host = |id: u32| match &userns {
            Some((_, ns)) => ns.host_id(id),
            None => Some(id),
        };
        let _ = nix::unistd::chown(cwd, host(u.uid).map(Uid::from_raw), host(u.gid).map(Gid::from_raw));
    }
    // Remapped: from here on the container's root is the namespace's, and the user and
    // capabilities below are set inside it.
    if let Some((fd, _)) = &userns {
        super::userns::enter(fd.as_fd())?;
    }
    drop(userns);

    // Capabilities: the bounding set first (needs CAP_SETPCAP), then the user, then the
    // process sets. A non-root user ends with empty effective and permitted sets, as in Docker.
    let keep: caps::CapsHashSet = p.caps.iter().copied().collect();
    for c in caps::all() {
        if !keep.contains(&c) {
            let _ = caps::drop(None, caps::CapSet::Bounding, c);
        }
    }
    let gids: Vec<Gid> = u.additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(Gid::from_raw(u.gid)).map_err(|e| format!("setgid {}: {e}", u.gid))?;
    nix::unistd::setuid(Uid::from_raw(u.uid)).map_err(|e| format!("setuid {}: {e}", u.uid))?;
    if u.uid == 0 {
        for set in [caps::CapSet::Effective, caps::CapSet::Permitted, caps::CapSet::Inheritable] {
            caps::set(None, set, &keep).map_err(|e| format!("setting capabilities: {e}"))?;
        }
    }
    // No ambient capabilities: a non-root program gets none across exec.
    let _ = caps::clear(None, caps::CapSet::Ambient);
    if p.no_new_privs {
        seccomp::no_new_privs()?;
    }
    chdir(cwd).map_err(|e| format!("chdir {}: {e}", p.cwd))?;

    let program = find_program(&p.args[0], &env)
        .ok_or_else(|| format!("exec: \"{}\": executable file not found in $PATH", p.args[0]))?;
    let argv: Vec<CString> = p.args.iter().map(|a| CString::new(a.as_bytes()).unwrap_or_default()).collect();
    let envp: Vec<CString> = env.iter().map(|e| CString::new(e.as_bytes()).unwrap_or_default()).collect();
    let prog = CString::new(program.as_os_str().as_bytes()).map_err(|_| "bad program path".to_string())?;

    // stdio: /dev/null in, the supervisor's pipes out.
    let null = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDONLY, Mode::empty())
        .map_err(|e| format!("/dev/null: {e}"))?;
    dup_to(null, 0)?;
    dup_to(p.stdout, 1)?;
    dup_to(p.stderr, 2)?;
    // Nothing else leaks into the container: every other descriptor closes on exec
    // (the error pipe too, which tells the supervisor the exec succeeded).
    // SAFETY: plain syscall on descriptor numbers.
    unsafe {
        nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, nix::libc::CLOSE_RANGE_CLOEXEC);
    }
    // The supervisor blocks SIGCHLD and, like every Rust program, ignores SIGPIPE; both would
    // survive the exec. Containers start with every signal at its default and none blocked.
    // SAFETY: setting SIGPIPE's disposition to the default installs no handler.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    // Last, so that nothing of the setup above runs under the filter.
    if let Some(f) = &p.seccomp {
        seccomp::install(f)?;
    }
    if p.init {
        run_init(&prog, &argv, &envp, p.err)
    } else {
        let e = execve(&prog, &argv, &envp).unwrap_err();
        Err(format!("exec {}: {e}", program.display()))
    }
}

fn dup_to(from: RawFd, to: RawFd) -> Result<(), String> {
    if from != to {
        // SAFETY: dup2 on descriptors this process owns.
        if unsafe { nix::libc::dup2(from, to) } < 0 {
            return Err(format!("dup2 to {to}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Finds the program like execvp, but in the container's PATH.
fn find_program(name: &str, env: &[String]) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    path.split(':').map(|d| Path::new(if d.is_empty() { "." } else { d }).join(name)).find(|p| {
        std::fs::metadata(p)
            .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
    })
}

/// PID 1 for `initProcessEnabled`: starts the program as its child, forwards signals to it,
/// reaps every orphan, and exits with the program's status.
fn run_init(
    prog: &CString,
    argv: &[CString],
    envp: &[CString],
    err_fd: RawFd,
) -> Result<std::convert::Infallible, String> {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let all = SigSet::all();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None).map_err(|e| format!("sigprocmask: {e}"))?;
    let (cr, cw) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this process is single-threaded (the container's PID 1).
    let main = match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            let _ = nix::unistd::setsid();
            let e = execve(prog, argv, envp).unwrap_err();
            let mut w = std::fs::File::from(cw);
            let _ = w.write_all(format!("exec {}: {e}", prog.to_string_lossy()).as_bytes());
            // SAFETY: leaving the forked child.
            unsafe { nix::libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(cw);
    let mut msg = String::new();
    let _ = std::fs::File::from(cr).read_to_string(&mut msg);
    if !msg.is_empty() {
        return Err(msg);
    }
    // The program runs: tell the supervisor by closing our copy of the error pipe.
    let _ = nix::unistd::close(err_fd);
    loop {
        let sig = all.wait().unwrap_or(Signal::SIGCHLD);
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(main, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == main => {
                    // SAFETY: PID 1 leaving; the kernel kills the rest of the namespace.
                    unsafe { nix::libc::_exit(code) }
                }
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == main => unsafe { nix::libc::_exit(128 + s as i32) },
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}
