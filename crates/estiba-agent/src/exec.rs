//! ECS Exec on the node: runs a session's command inside a running container, on a
//! pseudo-terminal, and carries it over one byte stream of [`estiba_core::exec::Frame`]s
//! (input and terminal sizes in, output and the exit code out).
//!
//! The command runs through `estiba exec-in` (as health checks do), so it gets the
//! container's namespaces, cgroup, capabilities, `no_new_privs` and seccomp filter. It runs
//! as root, as ECS Exec's commands do. The pseudo-terminal is its controlling terminal:
//! hanging it up (the session ends) signals what still runs.
//!
//! May not: decide who may open a session (the server checked the token).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use estiba_core::exec::{ExecTarget, Frame};
use estiba_runtime::container::spec::{files, Started};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Shared;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("exec: {0}")]
    Io(#[from] std::io::Error),
    #[error("exec: {0}")]
    Sys(#[from] nix::Error),
    #[error("exec stream: {0}")]
    Frame(#[from] estiba_core::exec::FrameError),
}

/// The host PID of the running container `container` of task `task_id`.
fn container_pid(shared: &Shared, task_id: &str, container: &str) -> Result<i32, ExecError> {
    let dir = crate::runner::task_dir(shared, task_id).join(container);
    let not_running = || ExecError::NotRunning(container.to_owned());
    if dir.join(files::EXIT).exists() {
        return Err(not_running());
    }
    let st: Started = std::fs::read(dir.join(files::STARTED))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(not_running)?;
    if st.pid <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), None).is_err() {
        return Err(not_running());
    }
    Ok(st.pid)
}

fn set_size(master: &OwnedFd, cols: u16, rows: u16) {
    let ws = nix::libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    unsafe { nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ, &ws) };
}

struct Running {
    child: tokio::process::Child,
    master: OwnedFd,
}

/// Whether `s` can name a task or a container (letters, digits, `-`, `_`): a session's
/// target comes from a server, and names a directory under the node's tasks.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Starts `estiba exec-in` on a new pseudo-terminal, as the leader of a new session whose
/// controlling terminal it is.
fn start(shared: &Shared, target: &ExecTarget) -> Result<Running, ExecError> {
    if target.command.is_empty() {
        return Err(ExecError::Io(std::io::Error::other("no command given")));
    }
    if !plain_name(&target.task_id) || !plain_name(&target.container) {
        return Err(ExecError::NotRunning(target.container.clone()));
    }
    let pid = container_pid(shared, &target.task_id, &target.container)?;
    let pty = nix::pty::openpty(None, None)?;
    set_size(&pty.master, 80, 24);
    let mut cmd = tokio::process::Command::new(&shared.cfg.exe);
    cmd.arg("exec-in").arg("--pid").arg(pid.to_string()).arg("--").args(&target.command);
    cmd.stdin(std::process::Stdio::from(pty.slave.try_clone()?))
        .stdout(std::process::Stdio::from(pty.slave.try_clone()?))
        .stderr(std::process::Stdio::from(pty.slave));
    cmd.env("TERM", "xterm-256color");
    cmd.kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The slave's last copies in this process go with the command.
    drop(cmd);
    Ok(Running { child, master: pty.master })
}

/// Kills a session's process group (its command is the group's leader) when dropped.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0 as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Runs `target`'s command and serves its session over `io` until the command ends (then
/// its exit code is the last frame) or the stream closes (then the command is killed).
pub async fn serve<S>(shared: &Shared, target: &ExecTarget, io: S) -> Result<(), ExecError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let Running { mut child, master } = match start(shared, target) {
        Ok(s) => s,
        Err(e) => {
            wr.write_all(&Frame::Error(e.to_string()).encode()).await?;
            wr.flush().await?;
            return Err(e);
        }
    };
    // However the session ends, what the command started on its terminal ends with it.
    let _group = child.id().map(KillGroup);
    tracing::info!(session = %target.session_id, task = %target.task_id, container = %target.container, "exec session started");
    // Blocking threads read and write the terminal: a pseudo-terminal's master gives EIO once
    // every slave is closed, which ends the reader.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let mut reader = std::fs::File::from(master.try_clone()?);
    std::thread::spawn(move || {
        let mut b = vec![0u8; 16 << 10];
        loop {
            match reader.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out_tx.blocking_send(b[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (in_tx, in_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut writer = std::fs::File::from(master.try_clone()?);
    std::thread::spawn(move || {
        while let Ok(b) = in_rx.recv() {
            if writer.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    let mut output_open = true;
    let mut exit: Option<i32> = None;
    // Once the command has exited, what it wrote is read within this; a process it left
    // behind that holds the terminal does not keep the session open.
    let drain = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(drain);
    loop {
        if exit.is_some() && !output_open {
            break;
        }
        tokio::select! {
            n = rd.read(&mut chunk) => {
                let n = n.unwrap_or(0);
                if n == 0 {
                    tracing::info!(session = %target.session_id, "exec stream closed; ending the command");
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(f) = Frame::take(&mut buf)? {
                    match f {
                        Frame::Input(b) => {
                            let _ = in_tx.send(b);
                        }
                        Frame::Resize { cols, rows } => set_size(&master, cols, rows),
                        _ => {}
                    }
                }
            }
            b = out_rx.recv(), if output_open => match b {
                Some(b) => wr.write_all(&Frame::Output(b).encode()).await?,
                None => output_open = false,
            },
            st = child.wait(), if exit.is_none() => {
                use std::os::unix::process::ExitStatusExt;
                let st = st?;
                exit = Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)));
                drain.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(500));
            }
            _ = &mut drain, if exit.is_some() => break,
        }
    }
    let code = exit.unwrap_or(0);
    tracing::info!(session = %target.session_id, code, "exec session ended");
    wr.write_all(&Frame::Exit(code).encode()).await?;
    wr.flush().await?;
    Ok(())
}

/// Serves the sessions an agent on another machine dials back for
/// ([`crate::remote::RemoteControl::exec_sessions`]), each on its own task, until the agent
/// stops following servers.
pub async fn serve_remote(
    shared: std::sync::Arc<Shared>,
    mut sessions: tokio::sync::mpsc::Receiver<(ExecTarget, crate::remote::ExecStream)>,
) {
    while let Some((target, stream)) = sessions.recv().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(&shared, &target, stream).await {
                tracing::info!(session = %target.session_id, error = %e, "exec session failed");
            }
        });
    }
}
