//! Warm supervisors: a few `estiba-shim --park` processes started ahead of time, each holding
//! a process already inside a cgroup of its own (see `estiba_runtime::container::cgroup`'s
//! warm slots). Starting a container through one skips both the supervisor's own start and
//! the cgroup migration, which after a quiet spell waits for a kernel RCU grace period; the
//! pool is refilled in the background after each use. When it is empty (a burst of starts),
//! or on hosts without cgroup v1, containers start the ordinary way.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// How long after a supervisor is taken the pool starts refilling. Parking one moves a
/// process between cgroups, which holds up every fork and exit on the machine while the kernel
/// waits for its grace period: done right away it would slow the very start that took the
/// supervisor (and the ones after it in a burst).
const REFILL_DELAY: Duration = Duration::from_millis(300);

/// The command that starts a supervisor with `last` as its argument (a state directory, or
/// `--park`): its report comes on stdout, its stderr goes nowhere, and it outlives the agent.
pub fn supervisor_command(
    supervisor: &(PathBuf, Vec<String>),
    last: &std::ffi::OsStr,
    stdin: std::process::Stdio,
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&supervisor.0);
    c.args(&supervisor.1)
        .arg(last)
        .env("ESTIBA_SYSTEM_ALLOCATOR", "1")
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(false);
    c
}

/// A parked supervisor, waiting for a state directory.
pub struct Parked {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: BufReader<ChildStdout>,
}

pub struct Pool {
    supervisor: (PathBuf, Vec<String>),
    size: usize,
    parked: Mutex<Vec<Parked>>,
    filling: AtomicBool,
}

impl Pool {
    /// A pool of `size` parked supervisors (none when `size` is 0 or this host's cgroups do
    /// not allow slots). Call [`Pool::refill`] to start them.
    pub fn new(supervisor: (PathBuf, Vec<String>), size: usize) -> Arc<Pool> {
        let size = if estiba_runtime::container::cgroup::slots_supported() { size } else { 0 };
        Arc::new(Pool { supervisor, size, parked: Mutex::new(Vec::new()), filling: AtomicBool::new(false) })
    }

    /// Takes a parked supervisor, if one is ready, and refills the pool a little later.
    pub fn take(self: &Arc<Self>) -> Option<Parked> {
        if self.size == 0 {
            return None;
        }
        let p = self.parked.lock().unwrap_or_else(|e| e.into_inner()).pop();
        self.refill_after(REFILL_DELAY);
        p
    }

    /// How many supervisors are parked.
    pub fn len(&self) -> usize {
        self.parked.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks supervisors, one at a time in the background, until the pool is full.
    pub fn refill(self: &Arc<Self>) {
        self.refill_after(Duration::ZERO)
    }

    fn refill_after(self: &Arc<Self>, delay: Duration) {
        if self.size == 0 || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            while pool.len() < pool.size {
                match pool.park().await {
                    Ok(p) => pool.parked.lock().unwrap_or_else(|e| e.into_inner()).push(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot park a supervisor; containers start without");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
            pool.filling.store(false, Ordering::Release);
        });
    }

    async fn park(&self) -> Result<Parked, String> {
        let mut child = supervisor_command(&self.supervisor, "--park".as_ref(), std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.supervisor.0.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("no pipes to the supervisor".into());
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line)).await;
        if matches!(read, Ok(Ok(_))) && line.trim() == "ready" {
            return Ok(Parked { child, stdin, stdout });
        }
        // Dropping its input tells a parked supervisor to remove its slot and go.
        drop(stdin);
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
        Err(format!("the supervisor did not park: {}", line.trim()))
    }
}
