//! The supervisor: one small process per container (`estiba shim <state-dir>`), started by
//! the agent, that outlives it.
//!
//! It starts the container, reports `ok <pid>` (or `error <message>`) on its standard output
//! to the agent and then lets go of it, forwards the container's stdout and stderr to the log
//! file, reaps it, and records how it ended in `exit.json`. Because the supervisor, not the
//! agent, holds the container's output and exit status, the agent (and the server it lives
//! in) can restart or be killed without losing either.
//!
//! It stays single-threaded and never starts an async runtime, to stay small.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::spec::{files, ContainerSpec, Executor, Exit, Started};
use super::{cgroup, native, oci};
use crate::logs::{LogWriter, Stream};
use crate::Error;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Writes `value` as JSON to `dir/name` atomically.
pub fn write_json<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(value)?)?;
    std::fs::rename(tmp, dir.join(name))
}

pub fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Option<T> {
    serde_json::from_slice(&std::fs::read(dir.join(name)).ok()?).ok()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Container(format!("pipe: {e}")))
}

/// Writes the one line the agent reads; a reader that is gone is not an error (`println!`
/// would panic on the broken pipe and orphan the container).
fn report(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Points our stdout and stderr at /dev/null: the agent stops listening after the report.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto this process's own standard descriptors.
        unsafe {
            nix::libc::dup2(null.as_raw_fd(), 1);
            nix::libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

/// The supervisor's command line, shared by `estiba-shim` and `estiba shim`: `<state-dir>`
/// supervises the container described there; `--park` parks a warm slot first (see
/// [`park`]). Returns the process exit code.
pub fn main(args: &[std::ffi::OsString]) -> i32 {
    match args {
        [dir] if dir != "--park" => run(Path::new(dir)),
        [flag] if flag == "--park" => park(),
        _ => {
            eprintln!("usage: estiba-shim <state-dir> | estiba-shim --park");
            2
        }
    }
}

/// What every supervisor does first: its own session, a subreaper for what the container
/// leaves, SIGCHLD blocked for the signalfd.
fn become_supervisor() -> SigSet {
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None);
    mask
}

/// Runs the supervisor for the container in `state_dir`. Returns the process exit code.
pub fn run(state_dir: &Path) -> i32 {
    let spec: ContainerSpec = match read_json(state_dir, files::SPEC) {
        Some(s) => s,
        None => {
            report(&format!("error cannot read {}", state_dir.join(files::SPEC).display()));
            return 1;
        }
    };
    let mask = become_supervisor();
    finish(&spec, start(&spec), &mask)
}

/// Reports how the start went, then supervises the container until it ends.
fn finish(spec: &ContainerSpec, started: Result<(i32, OwnedFd, OwnedFd), Error>, mask: &SigSet) -> i32 {
    match started {
        Ok((pid, out, err)) => {
            let started = Started { pid, shim_pid: std::process::id() as i32, started_at_ms: now_ms() };
            let _ = write_json(&spec.state_dir, files::STARTED, &started);
            // The agent may have died since it started us: the container is ours all the
            // same, and `started.json` tells the next agent about it.
            report(&format!("ok {pid}"));
            detach_stdio();
            let exit = supervise(spec, pid, out, err, mask);
            cleanup(spec);
            let _ = write_json(&spec.state_dir, files::EXIT, &exit);
            0
        }
        Err(e) => {
            cleanup(spec);
            let exit = Exit {
                code: -1,
                signal: None,
                oom_killed: false,
                finished_at_ms: now_ms(),
                error: Some(e.to_string()),
            };
            let _ = write_json(&spec.state_dir, files::EXIT, &exit);
            report(&format!("error {}", e.to_string().replace('\n', " ")));
            1
        }
    }
}

/// Starts the container; returns its PID and the read ends of its stdout and stderr.
fn start(spec: &ContainerSpec) -> Result<(i32, OwnedFd, OwnedFd), Error> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let pid = match &spec.executor {
        Executor::Native => native::start(spec, &out_w, &err_w, |pid| cgroup::attach(&spec.cgroup, pid))?,
        Executor::Oci(runtime) => oci::start(spec, runtime, &out_w, &err_w)?,
    };
    Ok((pid, out_r, err_r))
}

/// A parked supervisor (`estiba-shim --park`), started by the agent before it has a
/// container for it, so that neither this process's start, nor the container's cgroup
/// migration, nor the making of its process is on a task's start path (see
/// [`cgroup::enter_slot`]).
///
/// It makes the container's process ahead of time (a zygote, in new PID, IPC and UTS
/// namespaces: [`native::premake`]), which moves itself into a fresh slot cgroup and waits;
/// then it says `ready` on its standard output and reads a state directory from its standard
/// input. The slot becomes the container's cgroup and the zygote becomes the container
/// ([`native::become_container`]); from there on this is an ordinary supervisor. When the
/// agent goes away first (end of input), the slot is removed and the process exits.
/// Whatever goes wrong with the slot, the container is started the ordinary way instead.
pub fn park() -> i32 {
    let mask = become_supervisor();
    let slot = cgroup::slot_path(&std::process::id().to_string());
    let zygote = match Zygote::fork(&slot) {
        Ok(z) => z,
        Err(e) => {
            report(&format!("error {e}"));
            let _ = cgroup::remove(&slot);
            return 1;
        }
    };
    // Learned now, not on the start path.
    let _ = cgroup::hierarchies();
    report("ready");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let dir = line.trim_end_matches('\n');
    if dir.is_empty() {
        zygote.abandon(&slot);
        return 0;
    }
    let Some(spec) = read_json::<ContainerSpec>(Path::new(dir), files::SPEC) else {
        zygote.abandon(&slot);
        report(&format!("error cannot read {}", Path::new(dir).join(files::SPEC).display()));
        return 1;
    };
    let usable =
        spec.executor == Executor::Native && cgroup::adopt_slot(&slot, &spec.cgroup, zygote.pid.as_raw()).is_ok();
    let started = if !usable {
        zygote.abandon(&slot);
        start(&spec)
    } else {
        zygote.start(&spec)
    };
    finish(&spec, started, &mask)
}

/// The parked process in a slot, and the pipes to it.
struct Zygote {
    pid: Pid,
    /// Where the state directory is written (closed after it).
    go: std::fs::File,
    /// `ready`; then, when it cannot become the container, `error <message>`. It closes
    /// when the container's program runs (or the process ends).
    answer: std::fs::File,
    out: OwnedFd,
    err: OwnedFd,
}

impl Zygote {
    fn fork(slot: &Path) -> Result<Zygote, Error> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (go_r, go_w) = pipe()?;
        let (ans_r, ans_w) = pipe()?;
        let ours = [out_r.as_raw_fd(), err_r.as_raw_fd(), go_w.as_raw_fd(), ans_r.as_raw_fd()];
        // The zygote's ends move into it; here they close once it exists.
        let pid = native::premake(move || {
            // Its copies of the supervisor's ends: with `go`'s write end open it would never
            // see the end of the state directory.
            for fd in ours {
                let _ = nix::unistd::close(fd);
            }
            zygote(slot, go_r, ans_w, out_w, err_w) as isize
        })?;
        let mut z = Zygote { pid, go: go_w.into(), answer: ans_r.into(), out: out_r, err: err_r };
        match read_line(&mut z.answer).as_deref() {
            Some("ready") => Ok(z),
            other => {
                z.reap();
                Err(Error::Container(format!(
                    "parking a supervisor: {}",
                    other.and_then(|a| a.strip_prefix("error ")).unwrap_or("the slot process ended")
                )))
            }
        }
    }

    fn reap(&self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }

    /// Ends the zygote and removes its slot.
    fn abandon(self, slot: &Path) {
        self.reap();
        let _ = cgroup::remove(slot);
    }

    /// Has the zygote become the container described by `spec` (its cgroup is ready).
    fn start(self, spec: &ContainerSpec) -> Result<(i32, OwnedFd, OwnedFd), Error> {
        let Zygote { pid, mut go, mut answer, out, err } = self;
        let _ = go.write_all(spec.state_dir.as_os_str().as_bytes());
        drop(go);
        // Nothing more than end of file means the program runs. (A zygote killed before it
        // got there says nothing either: the supervisor then reports how it ended.)
        let mut msg = String::new();
        let _ = answer.read_to_string(&mut msg);
        match msg.trim().strip_prefix("error ") {
            None if msg.trim().is_empty() => Ok((pid.as_raw(), out, err)),
            failed => {
                let _ = waitpid(pid, None);
                Err(Error::Container(failed.unwrap_or(msg.trim()).to_owned()))
            }
        }
    }
}

/// One line (without its newline) from a pipe, read a byte at a time so nothing after it is
/// consumed; `None` at end of file.
fn read_line(f: &mut std::fs::File) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = f.read(&mut b) {
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned())
}

/// The zygote: enters the slot, says `ready`, waits for a state directory and becomes that
/// container. Returns its exit code when it cannot.
fn zygote(slot: &Path, go: OwnedFd, answer: OwnedFd, out: OwnedFd, err: OwnedFd) -> i32 {
    let answer_fd = answer.as_raw_fd();
    let mut answer = std::fs::File::from(answer);
    let mut say = |line: String| {
        let _ = answer.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes());
    };
    if let Err(e) = cgroup::enter_slot(slot) {
        say(format!("error {e}"));
        return 1;
    }
    // The usual seccomp filter, compiled while parked rather than on the start path.
    super::seccomp::warm();
    say("ready".into());
    let mut dir = Vec::new();
    let _ = std::fs::File::from(go).read_to_end(&mut dir);
    if dir.is_empty() {
        return 0;
    }
    let dir = Path::new(std::ffi::OsStr::from_bytes(&dir));
    let msg = match read_json::<ContainerSpec>(dir, files::SPEC) {
        Some(spec) => native::become_container(&spec, out.as_raw_fd(), err.as_raw_fd(), answer_fd),
        None => format!("cannot read {}", dir.join(files::SPEC).display()),
    };
    say(format!("error {msg}"));
    1
}

/// How big a container's output pipe is made once it floods (best effort; 64 KiB by default):
/// room for what the container writes while its supervisor naps (below) or writes out a read.
/// Only flooding pipes grow: every pipe's slots count against its creator's (root's) pipe
/// budget (`pipe-user-pages-soft`, 64 MiB), past which new pipes of containers without
/// CAP_SYS_RESOURCE get 8 KiB.
const PIPE_BYTES: i32 = 256 << 10;

/// After a read of at least this much output (a container writing as fast as it can, 4 KiB at
/// a time through stdio), the supervisor naps for [`FLOOD_NAP`] before it polls again, so it
/// wakes once per tens of kilobytes instead of once per write: a million 100-byte lines were
/// 21,000 wake-ups, each a poll, a read and a file write. Smaller reads (a line now and then)
/// are written at once.
const FLOOD_READ: usize = 4 << 10;
const FLOOD_NAP: Duration = Duration::from_micros(250);

fn supervise(spec: &ContainerSpec, pid: i32, out: OwnedFd, err: OwnedFd, mask: &SigSet) -> Exit {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let mut log = LogWriter::open(spec.log_path(), spec.log_rotation).ok();
    let sigfd = SignalFd::with_flags(mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok();
    for fd in [&out, &err] {
        // Non-blocking, so a read that filled the buffer can be followed by another without a
        // poll (the pipe's read end is the supervisor's alone).
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    }
    let mut grown = [false; 2];
    let mut streams: Vec<(Option<std::fs::File>, Stream)> =
        vec![(Some(std::fs::File::from(out)), Stream::Stdout), (Some(std::fs::File::from(err)), Stream::Stderr)];
    let mut status: Option<WaitStatus> = None;
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 64 << 10];
    // Whether a child may have changed state: at first, after a SIGCHLD, after a quiet poll
    // (a lost signal costs a timeout, not the container's exit), and always without a signalfd.
    let mut reap = true;
    loop {
        if reap || sigfd.is_none() {
            reap = false;
            // Reap: the container, and anything reparented to us (we are a subreaper).
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(s @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _))) if p.as_raw() == pid => {
                        status = Some(s);
                        exited_at.get_or_insert_with(Instant::now);
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        }
        let open = streams.iter().any(|(f, _)| f.is_some());
        if status.is_some() && (!open || exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2))) {
            break;
        }
        let mut fds: Vec<rustix::event::PollFd<'_>> = Vec::with_capacity(3);
        let mut which: Vec<usize> = Vec::with_capacity(2);
        for (i, (f, _)) in streams.iter().enumerate() {
            if let Some(f) = f {
                fds.push(rustix::event::PollFd::new(f, rustix::event::PollFlags::IN));
                which.push(i);
            }
        }
        if let Some(s) = &sigfd {
            fds.push(rustix::event::PollFd::new(s, rustix::event::PollFlags::IN));
        }
        let timeout =
            rustix::event::Timespec { tv_sec: 0, tv_nsec: if status.is_some() { 100_000_000 } else { 500_000_000 } };
        let ready_count = rustix::event::poll(&mut fds, Some(&timeout)).unwrap_or(0);
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        if ready_count == 0 {
            reap = true;
        }
        if let Some(s) = &sigfd {
            if ready.last() == Some(&true) {
                while let Ok(Some(_)) = s.read_signal() {}
                reap = true;
            }
        }
        let mut flood = false;
        for (k, &i) in which.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let (slot, stream) = &mut streams[i];
            let Some(f) = slot.as_mut() else { continue };
            // A full read is followed by up to a grown pipe's worth more, then the other
            // stream and the reaping get their turn (a writer faster than the disk cannot hold
            // the loop here).
            let mut full_reads = 0;
            loop {
                match f.read(&mut buf) {
                    Ok(0) => *slot = None,
                    Ok(n) => {
                        if let Some(l) = &mut log {
                            let _ = l.write(*stream, &buf[..n]);
                        }
                        if n == buf.len() && full_reads < PIPE_BYTES as usize / buf.len() {
                            full_reads += 1;
                            continue;
                        }
                        if n >= FLOOD_READ && !grown[i] {
                            grown[i] = true;
                            let _ = fcntl(f.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
                        }
                        // Behind (still a full read): no nap, poll again at once.
                        flood |= n >= FLOOD_READ && n < buf.len();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => *slot = None,
                }
                break;
            }
        }
        if flood && status.is_none() {
            std::thread::sleep(FLOOD_NAP);
        }
    }
    if let Some(l) = &mut log {
        let _ = l.flush();
    }
    let (code, signal) = match status {
        Some(WaitStatus::Exited(_, c)) => (c, None),
        Some(WaitStatus::Signaled(_, s, _)) => (128 + s as i32, Some(s as i32)),
        _ => (137, Some(9)),
    };
    let oom = signal == Some(9)
        && (cgroup::oom_kills(&cgroup::container_path(&spec.cgroup)) > 0
            || cgroup::oom_kills(&cgroup::task_path(&spec.cgroup)) > 0);
    Exit { code, signal, oom_killed: oom, finished_at_ms: now_ms(), error: None }
}

fn cleanup(spec: &ContainerSpec) {
    match &spec.executor {
        Executor::Native => {
            let _ = cgroup::remove(&cgroup::container_path(&spec.cgroup));
        }
        Executor::Oci(runtime) => oci::delete(spec, runtime),
    }
}
