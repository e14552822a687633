//! Container health checks, with Docker's (and so ECS's) rules: a probe every `interval`,
//! each given `timeout`; failures during `startPeriod` do not count; `retries` failures in a
//! row make the container UNHEALTHY, one success makes it HEALTHY.
//!
//! Probes run inside the container through `estiba exec-in` (joining namespaces needs a
//! fresh single-threaded process). Every probe's result is also health telemetry
//! ([`Probe::telemetry`]).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use estiba_api::ecs::HealthStatus;
use estiba_core::telemetry::{HealthResult, HealthSubject, Telemetry};

use crate::translate::Health;

/// Runs one probe; true when the command exits 0 within the timeout.
pub async fn probe(exe: &PathBuf, pid: i32, user: Option<&str>, args: &[String], timeout: Duration) -> bool {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("exec-in").arg("--pid").arg(pid.to_string());
    if let Some(u) = user {
        cmd.arg("--user").arg(u);
    }
    cmd.arg("--")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd.kill_on_drop(true);
    let Ok(mut child) = cmd.spawn() else { return false };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        _ => {
            let _ = child.kill().await;
            false
        }
    }
}

/// One probe's outcome and the container's status after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub passed: bool,
    pub status: HealthStatus,
    /// Whether this probe changed the status.
    pub changed: bool,
    /// When the probe ended, in milliseconds since the epoch.
    pub at_ms: i64,
}

impl Probe {
    /// The probe as health telemetry of container `container` of task `task_arn`.
    pub fn telemetry(&self, task_arn: &str, container: &str) -> Telemetry {
        Telemetry::Health(vec![HealthResult {
            task_arn: task_arn.to_owned(),
            subject: HealthSubject::Container { name: container.to_owned() },
            timestamp: self.at_ms,
            passed: self.passed,
            status: self.status,
        }])
    }
}

/// Probes until aborted, calling `report` after every probe.
pub async fn run(exe: PathBuf, pid: i32, user: Option<String>, h: Health, report: impl Fn(Probe) + Send + 'static) {
    let started = Instant::now();
    let mut failures = 0u32;
    let mut status = HealthStatus::Unknown;
    loop {
        tokio::time::sleep(h.interval).await;
        let ok = probe(&exe, pid, user.as_deref(), &h.args, h.timeout).await;
        let next = if ok {
            failures = 0;
            HealthStatus::Healthy
        } else if started.elapsed() < h.start_period {
            status
        } else {
            failures += 1;
            if failures >= h.retries {
                HealthStatus::Unhealthy
            } else {
                status
            }
        };
        let changed = next != status;
        status = next;
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        report(Probe { passed: ok, status, changed, at_ms });
    }
}
