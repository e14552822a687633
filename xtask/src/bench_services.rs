//! `cargo xtask bench services`: the service scheduler with real containers, beside a
//! one-node Docker Swarm (Debian's docker.io, started here) doing the same with the same
//! busybox files and command:
//!
//! - scale a service from 0 to `--scale` tasks (default 100) until all of them run
//!   (estiba: DescribeServices `runningCount`; swarm: `docker service ls` replicas);
//! - a rolling update of `--roll` tasks (default 10) with 100/200, no health check and
//!   `--unchecked-task-healthy-after 0s`, from the UpdateService call until the new
//!   deployment is COMPLETED (swarm: `--update-order start-first --update-parallelism N`,
//!   until `UpdateStatus.State` is `completed`);
//! - estiba's control-plane share of both: the part of their time in which no container was
//!   being started or stopped, from the timestamps the API reports (`pullStartedAt` →
//!   `startedAt` for new tasks, `stoppingAt` → `stoppedAt` for old ones, is the node's work;
//!   the rest, up to the last `startedAt` or the deployment's `updatedAt` at COMPLETED, is the
//!   scheduler's, the agent's pick-up included). The timestamps have millisecond resolution.
//!
//! It runs as root inside a network and mount namespace of its own. Swarm needs an address
//! that is not loopback: a veth pair inside that namespace provides one.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::{arg, json_of, median, post};
use crate::bench_run::{ms, quiet, registry_with_images, start_dockerd, start_estiba_node, Cli, Guard, ISOLATED};

/// A container that runs until SIGTERM and then exits at once.
const SERVE: &str = "trap 'exit 0' TERM; while :; do sleep 0.1; done";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        return isolated(root, args);
    }
    crate::bench::build_and_isolate(root, "services", args)
}

fn isolated(root: &Path, args: &[String]) -> Result<()> {
    let rounds: usize = arg(args, "--rounds", 5);
    let scale: usize = arg(args, "--scale", 100);
    let roll: usize = arg(args, "--roll", 10);
    let peers: String = arg(args, "--peers", "swarm".to_owned());
    crate::bench::in_workdir(root, "ebs", "services", |work| {
        measure(root, work, rounds, scale, roll, peers.split(',').any(|p| p == "swarm"))
    })
}

pub(crate) fn epoch() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// Polls `f` every `every` until it returns Some; fails after `timeout`.
pub(crate) fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------------------
// estiba

pub(crate) struct Estiba {
    pub(crate) port: u16,
}

impl Estiba {
    /// A registry on loopback with the bench images, and an estiba node with
    /// `--unchecked-task-healthy-after 0s` (both in `guard`): the node and the busybox image.
    pub(crate) fn start(root: &Path, work: &Path, guard: &mut Guard) -> Result<(Estiba, String)> {
        let images = registry_with_images(root, work, guard, false)?;
        let busybox = images["busybox"].as_str().context("no busybox image")?.to_owned();
        let bin = root.join("target/release/estiba");
        let port = start_estiba_node(&bin, work, guard, &["--unchecked-task-healthy-after", "0s"])?;
        Ok((Estiba { port }, busybox))
    }

    pub(crate) fn call(&self, op: &str, body: &str) -> Result<Value> {
        let (s, b) = post(self.port, op, body)?;
        if s != 200 {
            bail!("{op}: {s} {b}");
        }
        json_of(&b)
    }

    pub(crate) fn service(&self, cluster: &str) -> Result<Value> {
        let v = self.call("DescribeServices", &format!(r#"{{"cluster":"{cluster}","services":["web"]}}"#))?;
        Ok(v["services"][0].clone())
    }

    /// The service's tasks with the given desired status, described.
    pub(crate) fn tasks(&self, cluster: &str, desired: &str) -> Result<Vec<Value>> {
        let mut arns: Vec<String> = Vec::new();
        let mut token = String::new();
        loop {
            let next = if token.is_empty() { String::new() } else { format!(r#","nextToken":"{token}""#) };
            let v = self.call(
                "ListTasks",
                &format!(r#"{{"cluster":"{cluster}","serviceName":"web","desiredStatus":"{desired}","maxResults":100{next}}}"#),
            )?;
            arns.extend(v["taskArns"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)));
            match v["nextToken"].as_str() {
                Some(t) => token = t.to_owned(),
                None => break,
            }
        }
        let mut out = Vec::new();
        for chunk in arns.chunks(100) {
            let list = chunk.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(",");
            let v = self.call("DescribeTasks", &format!(r#"{{"cluster":"{cluster}","tasks":[{list}]}}"#))?;
            out.extend(v["tasks"].as_array().cloned().unwrap_or_default());
        }
        Ok(out)
    }

    fn create(&self, cluster: &str, revision: u32, desired: usize) -> Result<()> {
        self.call("CreateCluster", &format!(r#"{{"clusterName":"{cluster}"}}"#))?;
        self.call(
            "CreateService",
            &format!(
                r#"{{"cluster":"{cluster}","serviceName":"web","taskDefinition":"bench-svc:{revision}","desiredCount":{desired},"networkConfiguration":{{"awsvpcConfiguration":{{"subnets":["subnet-1"]}}}}}}"#
            ),
        )?;
        self.wait_completed(cluster, revision, desired, Duration::from_secs(120))?;
        Ok(())
    }

    /// Waits for one deployment, of `revision`, COMPLETED with `count` running; returns the
    /// service.
    fn wait_completed(&self, cluster: &str, revision: u32, count: usize, timeout: Duration) -> Result<Value> {
        let suffix = format!(":{revision}");
        poll("the deployment to complete", timeout, Duration::from_millis(5), || {
            let s = self.service(cluster)?;
            let deps = s["deployments"].as_array().cloned().unwrap_or_default();
            let done = deps.len() == 1
                && deps[0]["rolloutState"] == "COMPLETED"
                && deps[0]["taskDefinition"].as_str().is_some_and(|t| t.ends_with(&suffix))
                && s["runningCount"].as_u64() == Some(count as u64);
            Ok(done.then_some(s))
        })
    }

    /// Deletes the service and waits until its tasks are STOPPED (not timed).
    pub(crate) fn remove(&self, cluster: &str) -> Result<()> {
        self.call("DeleteService", &format!(r#"{{"cluster":"{cluster}","service":"web","force":true}}"#))?;
        poll("the service's tasks to stop", Duration::from_secs(120), Duration::from_millis(50), || {
            let live = self.tasks(cluster, "STOPPED")?.iter().any(|t| t["lastStatus"] != "STOPPED")
                || !self.tasks(cluster, "RUNNING")?.is_empty();
            Ok((!live).then_some(()))
        })
    }

    /// Scale 0 → n: (ms until all run, the control plane's share of it).
    fn scale(&self, round: usize, n: usize) -> Result<(f64, f64)> {
        let cluster = format!("scale-{round}");
        self.create(&cluster, 1, 0)?;
        let (t0, at) = (Instant::now(), epoch());
        self.call("UpdateService", &format!(r#"{{"cluster":"{cluster}","service":"web","desiredCount":{n}}}"#))?;
        poll("all tasks running", Duration::from_secs(120), Duration::from_millis(5), || {
            Ok((self.service(&cluster)?["runningCount"].as_u64() == Some(n as u64)).then_some(()))
        })?;
        let took = ms(t0.elapsed());
        let tasks = self.tasks(&cluster, "RUNNING")?;
        let end = tasks.iter().filter_map(|t| t["startedAt"].as_f64()).fold(at, f64::max);
        let share = control_share(&tasks, at, end);
        self.remove(&cluster)?;
        Ok((took, share))
    }

    /// A rolling update of n tasks from revision 1 to 2: (ms until COMPLETED, the control
    /// plane's share of it).
    fn roll(&self, round: usize, n: usize) -> Result<(f64, f64)> {
        let cluster = format!("roll-{round}");
        self.create(&cluster, 1, n)?;
        let (t0, at) = (Instant::now(), epoch());
        self.call(
            "UpdateService",
            &format!(r#"{{"cluster":"{cluster}","service":"web","taskDefinition":"bench-svc:2"}}"#),
        )?;
        let s = self.wait_completed(&cluster, 2, n, Duration::from_secs(120))?;
        let took = ms(t0.elapsed());
        let end = s["deployments"][0]["updatedAt"].as_f64().context("no updatedAt")?;
        let mut tasks = self.tasks(&cluster, "RUNNING")?;
        tasks.extend(self.tasks(&cluster, "STOPPED")?);
        let share = control_share(&tasks, at, end);
        let new: Vec<&Value> =
            tasks.iter().filter(|t| t["createdAt"].as_f64().is_some_and(|c| c >= at - 0.001)).collect();
        let old: Vec<&Value> =
            tasks.iter().filter(|t| t["createdAt"].as_f64().is_some_and(|c| c < at - 0.001)).collect();
        let min = |v: &[&Value], k: &str| v.iter().filter_map(|t| t[k].as_f64()).fold(f64::MAX, f64::min);
        let max = |v: &[&Value], k: &str| v.iter().filter_map(|t| t[k].as_f64()).fold(f64::MIN, f64::max);
        eprintln!(
            "  roll phases (ms): call → created {:.0}, → pull started {:.0}, → all running {:.0}, → first stopping {:.0}, → all stopped {:.0}, → COMPLETED {:.0}",
            (min(&new, "createdAt") - at) * 1e3,
            (min(&new, "pullStartedAt") - min(&new, "createdAt")) * 1e3,
            (max(&new, "startedAt") - min(&new, "pullStartedAt")) * 1e3,
            (min(&old, "stoppingAt") - max(&new, "startedAt")) * 1e3,
            (max(&old, "stoppedAt") - min(&old, "stoppingAt")) * 1e3,
            (end - max(&old, "stoppedAt")) * 1e3,
        );
        self.remove(&cluster)?;
        Ok((took, share))
    }
}

/// The part of [at, end] in which no task was being started (`pullStartedAt` → `startedAt`)
/// or stopped (`stoppingAt` → `stoppedAt`) by the node.
fn control_share(tasks: &[Value], at: f64, end: f64) -> f64 {
    let mut node: Vec<(f64, f64)> = Vec::new();
    for t in tasks {
        let f = |k: &str| t[k].as_f64();
        if let (Some(a), Some(b)) = (f("pullStartedAt"), f("startedAt")) {
            node.push((a, b));
        }
        if let (Some(a), Some(b)) = (f("stoppingAt"), f("stoppedAt")) {
            node.push((a, b));
        }
    }
    if end <= at {
        return 0.0;
    }
    1.0 - covered(&mut node, at, end) / (end - at)
}

/// The length of the union of `spans`, clipped to [from, to].
fn covered(spans: &mut [(f64, f64)], from: f64, to: f64) -> f64 {
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut total, mut reach) = (0.0, from);
    for &(a, b) in spans.iter() {
        let (a, b) = (a.max(reach), b.min(to));
        if b > a {
            total += b - a;
            reach = b;
        }
    }
    total
}

// ---------------------------------------------------------------------------------------
// Docker Swarm

struct Swarm {
    docker: Cli,
}

impl Swarm {
    fn start(work: &Path, guard: &mut Guard) -> Result<Option<Swarm>> {
        // An address that is not loopback, inside this namespace only.
        quiet(Command::new("ip").args(["link", "add", "ebs0", "type", "veth", "peer", "name", "ebs1"]))?;
        quiet(Command::new("ip").args(["addr", "add", "10.213.0.1/24", "dev", "ebs0"]))?;
        quiet(Command::new("ip").args(["link", "set", "ebs0", "up"]))?;
        quiet(Command::new("ip").args(["link", "set", "ebs1", "up"]))?;
        let Some(docker) = start_dockerd(work, guard, true)? else { return Ok(None) };
        quiet(docker.cmd().args([
            "swarm",
            "init",
            "--advertise-addr",
            "10.213.0.1",
            "--listen-addr",
            "10.213.0.1:2377",
        ]))?;
        Ok(Some(Swarm { docker }))
    }

    fn create(&self, name: &str, replicas: usize) -> Result<()> {
        quiet(self.docker.cmd().args(["service", "create", "-d", "--name", name, "--replicas"]).args([
            &replicas.to_string(),
            "--stop-grace-period",
            "2s",
            "--update-order",
            "start-first",
            "--update-parallelism",
            "0",
            "--update-delay",
            "0s",
            "--update-monitor",
            "1ms",
            "bench-busybox",
            "sh",
            "-c",
            SERVE,
        ]))?;
        self.wait_replicas(name, replicas)
    }

    fn wait_replicas(&self, name: &str, n: usize) -> Result<()> {
        let want = format!("{n}/{n}");
        poll("swarm replicas", Duration::from_secs(180), Duration::from_millis(5), || {
            let out = quiet(self.docker.cmd().args([
                "service",
                "ls",
                "--filter",
                &format!("name={name}"),
                "--format",
                "{{.Replicas}}",
            ]))?;
            Ok((out.trim() == want).then_some(()))
        })
    }

    fn remove(&self, name: &str) -> Result<()> {
        quiet(self.docker.cmd().args(["service", "rm", name]))?;
        poll("swarm containers gone", Duration::from_secs(120), Duration::from_millis(100), || {
            Ok(quiet(self.docker.cmd().args(["ps", "-aq"]))?.is_empty().then_some(()))
        })
    }

    fn scale(&self, round: usize, n: usize) -> Result<f64> {
        let name = format!("scale{round}");
        self.create(&name, 0)?;
        let t0 = Instant::now();
        quiet(self.docker.cmd().args(["service", "scale", "-d", &format!("{name}={n}")]))?;
        self.wait_replicas(&name, n)?;
        let took = ms(t0.elapsed());
        self.remove(&name)?;
        Ok(took)
    }

    fn roll(&self, round: usize, n: usize) -> Result<f64> {
        let name = format!("roll{round}");
        self.create(&name, n)?;
        let t0 = Instant::now();
        quiet(self.docker.cmd().args(["service", "update", "-d", "--env-add", "ROUND=2", &name]))?;
        poll("the swarm update to complete", Duration::from_secs(180), Duration::from_millis(5), || {
            let state =
                quiet(self.docker.cmd().args(["service", "inspect", "--format", "{{.UpdateStatus.State}}", &name]))?;
            Ok((state.trim() == "completed").then_some(()))
        })?;
        let took = ms(t0.elapsed());
        self.remove(&name)?;
        Ok(took)
    }
}

// ---------------------------------------------------------------------------------------

fn measure(root: &Path, work: &Path, rounds: usize, scale: usize, roll: usize, swarm: bool) -> Result<String> {
    let mut guard = Guard(Vec::new());
    let (estiba, busybox) = Estiba::start(root, work, &mut guard)?;
    for _ in 0..2 {
        estiba.call(
            "RegisterTaskDefinition",
            &format!(
                r#"{{"family":"bench-svc","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512","containerDefinitions":[{{"name":"app","image":"{busybox}","command":["sh","-c","{SERVE}"],"stopTimeout":2}}]}}"#
            ),
        )?;
    }
    let mut peer_guard = Guard(Vec::new());
    let swarm = if swarm { Swarm::start(work, &mut peer_guard)? } else { None };

    // Warm-up: the image is pulled and every path is in the page cache.
    estiba.roll(0, 2)?;
    if let Some(s) = &swarm {
        s.roll(0, 2)?;
    }
    let (mut e_scale, mut e_scale_share, mut e_roll, mut e_share) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut s_scale, mut s_roll) = (Vec::new(), Vec::new());
    for r in 1..=rounds {
        let (took, share) = estiba.scale(r, scale)?;
        e_scale.push(took);
        e_scale_share.push(share * 100.0);
        let (took, share) = estiba.roll(r, roll)?;
        e_roll.push(took);
        e_share.push(share * 100.0);
        eprintln!(
            "round {r}: estiba scale 0→{scale} {:.0} ms (control plane {:.1} %), roll {roll} {took:.0} ms (control plane {:.1} %)",
            e_scale[r - 1],
            e_scale_share[r - 1],
            share * 100.0
        );
        if let Some(s) = &swarm {
            s_scale.push(s.scale(r, scale)?);
            s_roll.push(s.roll(r, roll)?);
            eprintln!("round {r}: swarm scale {:.0} ms, roll {:.0} ms", s_scale[r - 1], s_roll[r - 1]);
        }
    }
    drop(peer_guard);

    let docker_version = if swarm.is_some() {
        quiet(Command::new("docker").arg("--version"))?
            .split_whitespace()
            .nth(2)
            .unwrap_or("?")
            .trim_end_matches(',')
            .to_owned()
    } else {
        "-".into()
    };
    let cell = |v: &[f64], digits: usize| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.*}", digits, median(v.to_vec()))
        }
    };
    let mut md = format!(
        "Command: `cargo xtask bench services --rounds {rounds} --scale {scale} --roll {roll}{}` (as root; it re-executes \
         itself in a network and mount namespace of its own). Release build with its SQLite store and built-in executor, \
         `--unchecked-task-healthy-after 0s`; Docker Swarm {docker_version} (one node, runc) with `--update-order \
         start-first --update-parallelism 0 --update-delay 0s --update-monitor 1ms`. Both run busybox's `sh -c \"{SERVE}\"` \
         with a 2 s stop timeout; the image is cached. Medians of {rounds} rounds.\n\n",
        if swarm.is_some() { " --peers swarm" } else { "" }
    );
    md.push_str("| | estiba | Docker Swarm |\n|---|---:|---:|\n");
    md.push_str(&format!("| scale 0 → {scale}, all running (ms) | {} | {} |\n", cell(&e_scale, 0), cell(&s_scale, 0)));
    md.push_str(&format!("| … control plane's share: no container starting (%) | {} | |\n", cell(&e_scale_share, 1)));
    md.push_str(&format!(
        "| rolling update of {roll} (100/200), call → COMPLETED (ms) | {} | {} |\n",
        cell(&e_roll, 0),
        cell(&s_roll, 0)
    ));
    md.push_str(&format!(
        "| … control plane's share: no container starting or stopping (%) | {} | |\n",
        cell(&e_share, 1)
    ));
    Ok(md)
}
