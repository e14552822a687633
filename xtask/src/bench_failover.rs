//! `cargo xtask bench failover`: how long the control plane has no leader when the leader
//! server is killed (issue 20, "leader failover time").
//!
//! In a network namespace of its own: a `--members` (3) member etcd cluster on loopback and
//! `--servers` (2) `estiba server --store etcd --local-node off` on one prefix (no node runs
//! the tasks: they stay PROVISIONING, which is all this needs). A FARGATE service starts at
//! desiredCount 0. Then `--kills` (20) times:
//!
//! 1. find the leader (`GET /_estiba/health` answers `"leader":true` on exactly one server);
//! 2. `kill -9` it, and at once raise the service's desiredCount by one through a survivor
//!    (an acknowledged write the dead leader can no longer act on);
//! 3. poll a survivor until the service's new task exists: the first write the new leader's
//!    controllers make (the scheduler's). Kill to that moment is the failover time; kill to a
//!    survivor saying `"leader":true` is reported beside it (the election alone);
//! 4. restart the killed server on the same port and data directory, and wait until it answers.
//!
//! The published leader-election settings printed beside are quoted, not measured here. Never
//! a timed test: it measures and reports, and fails only when a failover never completes
//! (60 s) or a write is lost.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{arg, free_port, post, wait_ready, which};
use crate::bench_run::{ms, percentile, ISOLATED};

/// How long one failover may take before the bench gives up.
const GIVE_UP: Duration = Duration::from_secs(60);

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        return isolated(root, args);
    }
    let uid = Command::new("id").arg("-u").output().context("running id")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("`cargo xtask bench failover` runs in a network namespace of its own: run it as root");
    }
    // Failover time is the election lease and the controllers' first pass, not CPU: `--debug`
    // measures a debug build (no release build needed), and says so in the report.
    crate::build::build(root, !args.iter().any(|a| a == "--debug"))?;
    crate::bench::isolate(root, "failover", args, &[])
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill9();
    }
}

struct Server {
    port: u16,
    dir: PathBuf,
    proc: Proc,
}

fn isolated(root: &Path, args: &[String]) -> Result<()> {
    let kills: usize = arg(args, "--kills", 20);
    let servers: usize = arg(args, "--servers", 2).max(2);
    let members: usize = arg(args, "--members", 3).max(1);
    let profile = if args.iter().any(|a| a == "--debug") { "debug" } else { "release" };
    let Some(etcd) = which("etcd") else {
        bail!("no `etcd` binary on the PATH: install Debian's etcd-server");
    };
    let load_before = loadavg();
    crate::bench::in_workdir(root, "ebf", "failover", |work| {
        let bin = target_dir(root).join(profile).join("estiba");
        let (endpoints, _etcd) = start_etcd(&etcd, work, members)?;
        let mut srvs = Vec::new();
        for i in 0..servers {
            let dir = work.join(format!("server-{i}"));
            std::fs::create_dir_all(&dir)?;
            let port = free_port();
            let proc = start_server(&bin, &dir, port, &endpoints)?;
            srvs.push(Server { port, dir, proc });
        }
        for s in &srvs {
            wait_ready(s.port, Duration::from_secs(60))?;
        }
        let first = wait_one_leader(&srvs, GIVE_UP)?;
        call(srvs[first].port, "CreateCluster", r#"{"clusterName":"fo"}"#)?;
        call(
            srvs[first].port,
            "RegisterTaskDefinition",
            r#"{"family":"fo","requiresCompatibilities":["FARGATE"],"networkMode":"awsvpc","cpu":"256","memory":"512","containerDefinitions":[{"name":"app","image":"busybox","essential":true}]}"#,
        )?;
        call(
            srvs[first].port,
            "CreateService",
            r#"{"cluster":"fo","serviceName":"web","taskDefinition":"fo","desiredCount":0,"launchType":"FARGATE","networkConfiguration":{"awsvpcConfiguration":{"subnets":["subnet-12345678"],"securityGroups":["sg-12345678"]}}}"#,
        )?;

        let mut elected_ms = Vec::new();
        let mut write_ms = Vec::new();
        for k in 0..kills {
            let leader = wait_one_leader(&srvs, GIVE_UP)?;
            let survivor = (leader + 1) % srvs.len();
            let want = k + 1;
            // Every server's view has the previous round's task: the survivor's reads below
            // count from a settled state. (A server's view follows etcd's watch: a write through
            // one server reaches the others' views a moment later, so "not found yet" is waited
            // out here.)
            for s in &srvs {
                wait_for(
                    || Ok(tasks(s.port).ok() == Some(k)),
                    GIVE_UP,
                    "every server seeing the previous round's tasks",
                )?;
            }
            srvs[leader].proc.kill9();
            let killed = Instant::now();
            call(
                srvs[survivor].port,
                "UpdateService",
                &format!(r#"{{"cluster":"fo","service":"web","desiredCount":{want}}}"#),
            )?;
            let mut elected = None;
            let created = loop {
                if elected.is_none() && srvs.iter().enumerate().any(|(i, s)| i != leader && leads(s.port)) {
                    elected = Some(killed.elapsed());
                }
                let n = tasks(srvs[survivor].port)?;
                if n == want {
                    break killed.elapsed();
                }
                if n > want {
                    bail!("round {k}: {n} tasks for a desiredCount of {want}");
                }
                if killed.elapsed() > GIVE_UP {
                    bail!("round {k}: no new task within {GIVE_UP:?} of killing the leader");
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            // The election is seen before (or with) the scheduler's write.
            let elected = elected.unwrap_or(created);
            elected_ms.push(ms(elected));
            write_ms.push(ms(created));
            eprintln!(
                "kill {:>2}: server {leader} killed; a survivor led after {:.0} ms, the new task after {:.0} ms",
                k + 1,
                ms(elected),
                ms(created)
            );
            let s = &mut srvs[leader];
            s.proc = start_server(&bin, &s.dir, s.port, &endpoints)?;
            wait_ready(s.port, Duration::from_secs(60))?;
        }
        Ok(report(kills, servers, members, profile, &load_before, &loadavg(), &elected_ms, &write_ms))
    })
}

/// `members` etcd members on loopback ports, one cluster; returns the client endpoints
/// (comma-separated) and the processes.
fn start_etcd(etcd: &Path, dir: &Path, members: usize) -> Result<(String, Vec<Proc>)> {
    let ports: Vec<(u16, u16)> = (0..members).map(|_| (free_port(), free_port())).collect();
    let cluster: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
    let mut procs = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(etcd)
            .args(["--name", &format!("m{i}"), "--data-dir"])
            .arg(dir.join(format!("etcd-m{i}")))
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "estiba-bench-failover"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join(format!("etcd-m{i}.log")))?))
            .spawn()
            .context("starting etcd")?;
        procs.push(Proc(Some(child)));
    }
    for (client, _) in &ports {
        wait_for(
            || Ok(get(*client, "/health").is_ok_and(|(s, b)| s == 200 && b.contains("true"))),
            Duration::from_secs(30),
            "every etcd member healthy",
        )?;
    }
    let endpoints: Vec<String> = ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect();
    Ok((endpoints.join(","), procs))
}

fn start_server(bin: &Path, dir: &Path, port: u16, endpoints: &str) -> Result<Proc> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("estiba.log"))?;
    let child = Command::new(bin)
        .args(["server", "--local-node", "off", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.join("data"))
        .args(["--store", "etcd", "--etcd-endpoints", endpoints, "--etcd-prefix", "/bench-failover/"])
        .env("ESTIBA_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting estiba")?;
    Ok(Proc(Some(child)))
}

fn call(port: u16, op: &str, body: &str) -> Result<String> {
    let (s, b) = post(port, op, body)?;
    if s != 200 {
        bail!("{op}: {s} {b}");
    }
    Ok(b)
}

/// The service's tasks, as one server's view lists them.
fn tasks(port: u16) -> Result<usize> {
    let b = call(port, "ListTasks", r#"{"cluster":"fo","serviceName":"web","maxResults":100}"#)?;
    Ok(b.matches("arn:aws:ecs:").count())
}

/// One GET with a fresh connection; returns (status, body).
fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

fn leads(port: u16) -> bool {
    get(port, "/_estiba/health").is_ok_and(|(s, b)| s == 200 && b.contains(r#""leader":true"#))
}

/// The index of the one server that leads, once exactly one does.
fn wait_one_leader(srvs: &[Server], timeout: Duration) -> Result<usize> {
    let start = Instant::now();
    loop {
        let leading: Vec<usize> = (0..srvs.len()).filter(|&i| leads(srvs[i].port)).collect();
        if let [one] = leading[..] {
            return Ok(one);
        }
        if start.elapsed() > timeout {
            bail!("no single leader within {timeout:?} (leading: {leading:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for(mut f: impl FnMut() -> Result<bool>, timeout: Duration, what: &str) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn report(
    kills: usize,
    servers: usize,
    members: usize,
    profile: &str,
    load_before: &str,
    load_after: &str,
    elected: &[f64],
    write: &[f64],
) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let debug = if profile == "debug" { " --debug" } else { "" };
    let stat = |v: &[f64]| {
        format!(
            "{:.0} | {:.0} | {:.0} | {:.0}",
            percentile(v.to_vec(), 0.5),
            percentile(v.to_vec(), 0.99),
            v.iter().cloned().fold(f64::INFINITY, f64::min),
            v.iter().cloned().fold(0.0, f64::max)
        )
    };
    format!(
        "Command: `cargo xtask bench failover --kills {kills} --servers {servers} --members {members}{debug}`. \
         {members}-member etcd on loopback, {servers} servers (`--store etcd --local-node off`, {profile} build) \
         on one prefix; {kills} times: `kill -9` of the leader, its service's desiredCount raised through a \
         survivor at once, the killed server restarted after. {cores} cores; load average (1, 5, 15 min) \
         {load_before} before, {load_after} after.\n\n\
         | from the kill to | p50 (ms) | p99 (ms) | min (ms) | max (ms) |\n\
         |---|---:|---:|---:|---:|\n\
         | a survivor answering `\"leader\":true` | {} |\n\
         | the new leader's first write (the service's new task) | {} |\n\
         | Kubernetes leader election (published defaults: 15 s lease, 10 s renew deadline, 2 s retry; not measured here) | ~15,000 (derived from the settings) | | | |\n\n\
         - estiba's leader lease is 5 s, renewed every 5/3 s: a killed leader's lease runs out 3.3-5 s after \
         the kill; the survivor's campaign then wins and its controllers' first pass writes the task.\n",
        stat(elected),
        stat(write)
    )
}
