//! `cargo xtask bench run`: tasks that really run, beside `docker run -d` (Debian's docker.io,
//! dockerd started here) and `podman run -d` (runc, cgroupfs), on the same busybox files:
//!
//! - RunTask → RUNNING of one single-container task (the image cached), against the time
//!   `docker run -d` / `podman run -d` take to return (they return once the container runs);
//!   with `--peers ...,unconfined`, also the same task without its seccomp filter (what the
//!   filter adds to a start; it takes part in the other measures too);
//! - 100 tasks started at once (10 RunTask calls of 10, concurrently) until all are RUNNING,
//!   against 100 `docker run -d` / `podman run -d` from 10 concurrent clients;
//! - the memory of the supervising process each running container has (estiba's shim,
//!   containerd's runc shim, podman's conmon): resident (RSS), proportional (PSS) and
//!   private (USS) set sizes, read from `/proc/<pid>/smaps_rollup` with the 100 running;
//! - pull and unpack of a 200 MB, 5-layer image from a registry on loopback (Debian's
//!   docker-registry): `estiba pull` against `skopeo copy` + `umoci unpack`, and `docker pull`
//!   and `podman pull` for context.
//!
//! It runs as root inside a network and mount namespace of its own (it re-executes itself
//! under `unshare --net --mount`), so no packet leaves the machine and no mount outlives it.
//! Peers that are not installed are skipped (`scripts/install-bench-deps.sh` installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::{arg, free_port, json_of, median, post, wait_ready, which};

pub(crate) const ISOLATED: &str = "ESTIBA_BENCH_ISOLATED";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        return isolated(root, args);
    }
    crate::bench::build_and_isolate(root, "run", args)
}

/// Child processes killed (and reaped) when dropped.
pub(crate) struct Guard(pub(crate) Vec<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        for c in &mut self.0 {
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn quiet(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

// ---------------------------------------------------------------------------------------
// The peers, behind one interface.

pub(crate) trait Peer: Send + Sync {
    fn name(&self) -> &'static str;
    /// Starts one container and returns once it runs; the id to stop it with.
    fn start_one(&self) -> Result<String>;
    /// Starts `n` containers from `clients` concurrent clients; returns their ids.
    fn start_many(self: Arc<Self>, n: usize, clients: usize) -> Result<Vec<String>>;
    /// Stops and removes containers (not timed).
    fn remove(&self, ids: &[String]) -> Result<()>;
    /// The processes supervising this peer's running containers.
    fn supervisors(&self) -> Vec<u32>;
}

/// Runs `one` `n` times over `clients` threads.
fn fan_out(n: usize, clients: usize, one: impl Fn() -> Result<Vec<String>> + Send + Sync) -> Result<Vec<String>> {
    let per = n.div_ceil(clients);
    let one = &one;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || -> Result<Vec<String>> {
                    let mut ids = Vec::new();
                    for _ in 0..per.min(n.saturating_sub(c * per)) {
                        ids.extend(one()?);
                    }
                    Ok(ids)
                })
            })
            .collect();
        let mut ids = Vec::new();
        for h in handles {
            ids.extend(h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??);
        }
        Ok(ids)
    })
}

/// estiba running tasks of one family, started one way.
pub(crate) struct Estiba {
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    pub(crate) family: String,
    /// The rest of RunTask's body: launch type, cluster, network configuration.
    pub(crate) launch: &'static str,
    pub(crate) state_dir: String,
}

impl Estiba {
    pub(crate) fn run_task(&self, count: usize) -> Result<Vec<String>> {
        let body = format!(r#"{{"taskDefinition":"{}","count":{count},{}}}"#, self.family, self.launch);
        let (s, b) = post(self.port, "RunTask", &body)?;
        let v = json_of(&b)?;
        if s != 200 || v["failures"].as_array().is_some_and(|f| !f.is_empty()) {
            bail!("RunTask: {s} {b}");
        }
        Ok(v["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["taskArn"].as_str().map(str::to_owned))
            .collect())
    }

    pub(crate) fn describe(&self, arns: &[String]) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for chunk in arns.chunks(100) {
            let list = chunk.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(",");
            let cluster = chunk[0].split('/').nth(1).unwrap_or("default");
            let (s, b) = post(self.port, "DescribeTasks", &format!(r#"{{"cluster":"{cluster}","tasks":[{list}]}}"#))?;
            if s != 200 {
                bail!("DescribeTasks: {s} {b}");
            }
            out.extend(json_of(&b)?["tasks"].as_array().cloned().unwrap_or_default());
        }
        Ok(out)
    }

    /// Polls until every task reports `status` and returns them; fails when one stops instead.
    pub(crate) fn wait_for(&self, arns: &[String], status: &str, timeout: Duration) -> Result<Vec<Value>> {
        let start = Instant::now();
        loop {
            let tasks = self.describe(arns)?;
            if tasks.len() == arns.len() && tasks.iter().all(|t| t["lastStatus"] == status) {
                return Ok(tasks);
            }
            if status != "STOPPED" {
                if let Some(t) = tasks.iter().find(|t| t["lastStatus"] == "STOPPED") {
                    bail!("task stopped: {}", t["stoppedReason"]);
                }
            }
            if start.elapsed() > timeout {
                bail!("tasks not {status} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Peer for Estiba {
    fn name(&self) -> &'static str {
        self.name
    }
    fn start_one(&self) -> Result<String> {
        let arns = self.run_task(1)?;
        self.wait_for(&arns, "RUNNING", Duration::from_secs(60))?;
        Ok(arns.into_iter().next().unwrap_or_default())
    }
    fn start_many(self: Arc<Self>, n: usize, clients: usize) -> Result<Vec<String>> {
        let per_call = n.div_ceil(clients).min(10);
        let arns = fan_out(n.div_ceil(per_call), clients, || self.run_task(per_call))?;
        self.wait_for(&arns, "RUNNING", Duration::from_secs(120))?;
        Ok(arns)
    }
    fn remove(&self, ids: &[String]) -> Result<()> {
        for id in ids {
            let cluster = id.split('/').nth(1).unwrap_or("default");
            let (s, b) = post(
                self.port,
                "StopTask",
                &format!(r#"{{"cluster":"{cluster}","task":"{id}","reason":"benchmark"}}"#),
            )?;
            if s != 200 {
                bail!("StopTask: {s} {b}");
            }
        }
        self.wait_for(ids, "STOPPED", Duration::from_secs(120)).map(drop)
    }
    /// From each running container's `started.json` (a parked supervisor's command line does
    /// not name its container).
    fn supervisors(&self) -> Vec<u32> {
        let tasks = Path::new(&self.state_dir).join("agent/tasks");
        let mut pids = Vec::new();
        for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            for ctr in std::fs::read_dir(task.path()).into_iter().flatten().flatten() {
                let dir = ctr.path();
                if dir.join("exit.json").exists() {
                    continue;
                }
                let started = std::fs::read_to_string(dir.join("started.json")).ok().and_then(|b| json_of(&b).ok());
                if let Some(pid) = started.and_then(|v| v["shim_pid"].as_u64()) {
                    pids.push(pid as u32);
                }
            }
        }
        pids
    }
}

/// docker or podman: a CLI with fixed leading arguments.
pub(crate) struct Cli {
    name: &'static str,
    program: PathBuf,
    base: Vec<String>,
    run_args: Vec<String>,
    /// A substring of its supervisors' command lines, and the supervisor's program name.
    supervisor: (&'static str, String),
}

impl Cli {
    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.base);
        c
    }
}

impl Peer for Cli {
    fn name(&self) -> &'static str {
        self.name
    }
    fn start_one(&self) -> Result<String> {
        quiet(self.cmd().args(["run", "-d", "--network", "none"]).args(&self.run_args).args([
            "bench-busybox",
            "sleep",
            "600",
        ]))
    }
    fn start_many(self: Arc<Self>, n: usize, clients: usize) -> Result<Vec<String>> {
        fan_out(n, clients, || Ok(vec![self.start_one()?]))
    }
    fn remove(&self, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(50) {
            quiet(self.cmd().args(["rm", "-f"]).args(chunk))?;
        }
        Ok(())
    }
    fn supervisors(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = std::fs::read_to_string(e.path().join("cmdline")) else { continue };
            let prog = cmdline.split('\0').next().unwrap_or("");
            if prog.rsplit('/').next() == Some(self.supervisor.0) && cmdline.contains(&self.supervisor.1) {
                pids.extend(e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
            }
        }
        pids
    }
}

// ---------------------------------------------------------------------------------------

/// Median RSS, PSS and USS (MiB) over the processes `pids`.
fn supervisor_memory(pids: &[u32]) -> (usize, f64, f64, f64) {
    let (mut rss, mut pss, mut uss) = (Vec::new(), Vec::new(), Vec::new());
    for pid in pids {
        let p = Path::new("/proc").join(pid.to_string());
        let Ok(rollup) = std::fs::read_to_string(p.join("smaps_rollup")) else { continue };
        let field = |name: &str| -> f64 {
            rollup
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        rss.push(field("Rss:"));
        pss.push(field("Pss:"));
        uss.push(field("Private_Clean:") + field("Private_Dirty:"));
    }
    (rss.len(), median(rss), median(pss), median(uss))
}

/// `estiba server` with its own node, its state in `<work>/estiba` and its log in
/// `<work>/estiba.log` (the process in `guard`); returns its port once it answers.
pub(crate) fn start_estiba_node(bin: &Path, work: &Path, guard: &mut Guard, extra: &[&str]) -> Result<u16> {
    let port = free_port();
    let server = Command::new(bin)
        .args(["server", "--local-node", "on", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(work.join("estiba"))
        .args(extra)
        .env("ESTIBA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("estiba.log"))?)
        .spawn()?;
    guard.0.push(server);
    wait_ready(port, Duration::from_secs(30))?;
    Ok(port)
}

/// docker-registry on loopback (its process in `guard`) with the bench images pushed to it
/// (`scripts/bench-images.py`; `big`: the 200 MB image too). Returns the script's summary.
pub(crate) fn registry_with_images(root: &Path, work: &Path, guard: &mut Guard, big: bool) -> Result<Value> {
    let (registry, reg_port) = start_registry(work)?;
    guard.0.push(registry);
    eprintln!("building and pushing the images…");
    push_images(root, &format!("127.0.0.1:{reg_port}"), work, big)
}

/// Builds the bench images and pushes them to the registry at `registry` (`host:port`) with
/// `scripts/bench-images.py` (`big`: the 200 MB image too). Returns the script's summary.
pub(crate) fn push_images(root: &Path, registry: &str, work: &Path, big: bool) -> Result<Value> {
    let summary = quiet(
        Command::new("python3")
            .arg(root.join("scripts/bench-images.py"))
            .arg(registry)
            .arg(work.join("images"))
            .args((!big).then_some("--no-big")),
    )?;
    json_of(&summary)
}

pub(crate) fn start_registry(work: &Path) -> Result<(Child, u16)> {
    let port = free_port();
    let dir = work.join("registry");
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting docker-registry (apt-get install docker-registry)")?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("docker-registry did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, port))
}

/// Starts dockerd on a socket under `work`. `bridge`: with its default bridge network (swarm
/// needs it); without, containers run with `--network none` only.
pub(crate) fn start_dockerd(work: &Path, guard: &mut Guard, bridge: bool) -> Result<Option<Cli>> {
    let (Some(dockerd), Some(docker)) = (which("dockerd"), which("docker")) else {
        eprintln!("dockerd or docker not found (apt-get install docker.io): docker skipped");
        return Ok(None);
    };
    let sock = work.join("docker.sock");
    let exec_root = work.join("docker-exec");
    let child = Command::new(dockerd)
        .arg("--data-root")
        .arg(work.join("docker"))
        .arg("--exec-root")
        .arg(&exec_root)
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .arg("--pidfile")
        .arg(work.join("docker.pid"))
        .args(if bridge { &[][..] } else { &["--bridge=none"][..] })
        .args(["--iptables=false", "--ip6tables=false"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("dockerd.log"))?)
        .spawn()?;
    guard.0.push(child);
    let cli = Cli {
        name: "docker",
        program: docker,
        base: vec!["-H".into(), format!("unix://{}", sock.display())],
        run_args: vec![],
        supervisor: ("containerd-shim-runc-v2", exec_root.display().to_string()),
    };
    let start = Instant::now();
    while cli
        .cmd()
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("dockerd did not start (see {})", work.join("dockerd.log").display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    quiet(cli.cmd().arg("import").arg(work.join("images/rootfs.tar")).arg("bench-busybox"))?;
    Ok(Some(cli))
}

fn podman(work: &Path) -> Result<Option<Cli>> {
    let (Some(podman), Some(runc)) = (which("podman"), which("runc")) else {
        eprintln!("podman or runc not found (apt-get install podman runc): podman skipped");
        return Ok(None);
    };
    let root = work.join("podman");
    let cli = Cli {
        name: "podman",
        program: podman,
        base: vec![
            "--root".into(),
            root.display().to_string(),
            "--runroot".into(),
            work.join("podman-run").display().to_string(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
            "--runtime".into(),
            runc.display().to_string(),
        ],
        // podman asks for nofile 1048576 by default, above this host's hard limit.
        run_args: vec!["--ulimit".into(), "nofile=1024:1024".into(), "--ulimit".into(), "nproc=1024:1024".into()],
        supervisor: ("conmon", root.display().to_string()),
    };
    quiet(cli.cmd().arg("import").arg(work.join("images/rootfs.tar")).arg("bench-busybox"))?;
    Ok(Some(cli))
}

fn time_cmds(cmds: &mut [Command]) -> Result<Duration> {
    let start = Instant::now();
    for c in cmds.iter_mut() {
        quiet(c)?;
    }
    Ok(start.elapsed())
}

fn isolated(root: &Path, args: &[String]) -> Result<()> {
    let rounds: usize = arg(args, "--rounds", 30);
    let many: usize = arg(args, "--many", 100);
    let pull_rounds: usize = arg(args, "--pull-rounds", 3);
    let peers: String = arg(args, "--peers", "docker,podman,skopeo".to_owned());
    let wanted: Vec<String> = peers.split(',').map(str::to_owned).collect();
    crate::bench::in_workdir(root, "ebr", "run", |work| measure(root, work, rounds, many, pull_rounds, &wanted))
}

fn measure(
    root: &Path,
    work: &Path,
    rounds: usize,
    many: usize,
    pull_rounds: usize,
    wanted: &[String],
) -> Result<String> {
    let bin = root.join("target/release/estiba");
    let mut guard = Guard(Vec::new());
    let images = registry_with_images(root, work, &mut guard, pull_rounds > 0)?;
    let busybox = images["busybox"].as_str().context("no busybox image")?.to_owned();
    let big = images["big"].as_str().unwrap_or_default().to_owned();

    // estiba, twice: a task with network mode `none` on the machine joined as an EC2
    // container instance (like the peers' `--network none`), and a Fargate awsvpc task (its
    // own veth and address, the default path).
    let state_dir = work.join("estiba");
    let port = start_estiba_node(&bin, work, &mut guard, &["--join-cluster", "bench"])?;
    let call = |op: &str, body: &str| -> Result<String> {
        let (s, b) = post(port, op, body)?;
        if s != 200 {
            bail!("{op}: {s} {b}");
        }
        Ok(b)
    };
    call("CreateCluster", r#"{"clusterName":"bench"}"#)?;
    let joined = Instant::now();
    while !call("ListContainerInstances", r#"{"cluster":"bench"}"#)?.contains("container-instance/") {
        if joined.elapsed() > Duration::from_secs(30) {
            bail!("the node did not join cluster bench");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The one container every estiba task runs; `extra` adds fields to its definition.
    let container_with = |extra: &str| {
        format!(
            r#"[{{"name":"app","image":"{busybox}","memory":64,"command":["sleep","600"],"stopTimeout":2{extra}}}]"#
        )
    };
    let container = container_with("");
    call(
        "RegisterTaskDefinition",
        &format!(r#"{{"family":"bench-none","networkMode":"none","containerDefinitions":{container}}}"#),
    )?;
    call(
        "RegisterTaskDefinition",
        &format!(
            r#"{{"family":"bench-run","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512","containerDefinitions":{container}}}"#
        ),
    )?;
    let state = state_dir.display().to_string();
    let estiba = Arc::new(Estiba {
        name: "estiba",
        port,
        family: "bench-none".into(),
        launch: r#""launchType":"EC2","cluster":"bench""#,
        state_dir: state.clone(),
    });
    let estiba_vpc = Arc::new(Estiba {
        name: "estiba (awsvpc)",
        port,
        family: "bench-run".into(),
        launch: r#""launchType":"FARGATE","cluster":"bench","networkConfiguration":{"awsvpcConfiguration":{"subnets":["subnet-1"]}}"#,
        state_dir: state.clone(),
    });

    let mut peers: Vec<Arc<dyn Peer>> = vec![estiba.clone(), estiba_vpc];
    if wanted.iter().any(|p| p == "unconfined") {
        // The same EC2 task without the seccomp filter (`dockerSecurityOptions`
        // `seccomp=unconfined`): what the filter adds to a start.
        let container = container_with(r#","dockerSecurityOptions":["seccomp=unconfined"]"#);
        call(
            "RegisterTaskDefinition",
            &format!(r#"{{"family":"bench-unconfined","networkMode":"none","containerDefinitions":{container}}}"#),
        )?;
        peers.push(Arc::new(Estiba {
            name: "estiba (seccomp=unconfined)",
            port,
            family: "bench-unconfined".into(),
            launch: r#""launchType":"EC2","cluster":"bench""#,
            state_dir: state,
        }));
    }
    let mut peers_guard = Guard(Vec::new());
    if wanted.iter().any(|p| p == "docker") {
        if let Some(d) = start_dockerd(work, &mut peers_guard, false)? {
            peers.push(Arc::new(d));
        }
    }
    if wanted.iter().any(|p| p == "podman") {
        if let Some(p) = podman(work)? {
            peers.push(Arc::new(p));
        }
    }

    // Warm up: the image is pulled (estiba) and every code path is in the page cache.
    for p in &peers {
        for _ in 0..2 {
            let id = p.start_one().with_context(|| format!("{}: warm-up", p.name()))?;
            p.remove(&[id])?;
        }
    }

    // 1. One task at a time, peers interleaved; the order rotates every round, so no peer
    // always starts right after the same other one (whose clean-up may still be running).
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    for r in 0..rounds {
        for k in 0..peers.len() {
            let i = (k + r) % peers.len();
            let p = &peers[i];
            let t0 = Instant::now();
            let id = p.start_one().with_context(|| format!("{}: start", p.name()))?;
            lat[i].push(ms(t0.elapsed()));
            p.remove(&[id])?;
        }
        if r % 10 == 9 {
            eprintln!("single starts: {} rounds", r + 1);
        }
    }

    // 2. Many at once; then the supervisors' memory with all of them running.
    let mut burst = Vec::new();
    for p in &peers {
        let t0 = Instant::now();
        let ids = p.clone().start_many(many, 10).with_context(|| format!("{}: {many} at once", p.name()))?;
        let took = t0.elapsed();
        if ids.len() != many {
            bail!("{}: started {} of {many}", p.name(), ids.len());
        }
        std::thread::sleep(Duration::from_millis(500));
        let mem = supervisor_memory(&p.supervisors());
        eprintln!("{}: {many} running after {:.0} ms; supervisors {mem:?}", p.name(), ms(took));
        burst.push((ms(took), mem));
        p.remove(&ids)?;
    }

    // 3. Pull and unpack.
    let mut pulls: Vec<(&str, Vec<f64>)> = Vec::new();
    let skopeo_umoci = which("skopeo").is_some() && which("umoci").is_some() && wanted.iter().any(|p| p == "skopeo");
    if !skopeo_umoci {
        eprintln!("skopeo or umoci not found (apt-get install skopeo umoci): skipped");
    }
    let docker = peers.iter().any(|p| p.name() == "docker");
    let (mut e, mut su, mut dk) = (Vec::new(), Vec::new(), Vec::new());
    // Every pull writes ~400 MB (blobs and the unpacked tree); `sync` before each one so none
    // pays for the write-back of the one before it.
    let settle = || quiet(&mut Command::new("sync"));
    for i in 0..pull_rounds {
        let dir = work.join(format!("pull-{i}"));
        settle()?;
        e.push(ms(time_cmds(&mut [{
            let mut c = Command::new(&bin);
            c.args(["pull", &big, "--data-dir"]).arg(&dir).env("ESTIBA_LOG", "warn");
            c
        }])?));
        let _ = std::fs::remove_dir_all(&dir);
        if skopeo_umoci {
            settle()?;
            let layout = format!("{}:big", work.join(format!("oci-{i}")).display());
            let bundle = work.join(format!("bundle-{i}"));
            let mut copy = Command::new("skopeo");
            copy.args([
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &format!("docker://{big}"),
                &format!("oci:{layout}"),
            ]);
            let mut unpack = Command::new("umoci");
            unpack.args(["unpack", "--image", &layout]).arg(&bundle);
            su.push(ms(time_cmds(&mut [copy, unpack])?));
            let _ = std::fs::remove_dir_all(work.join(format!("oci-{i}")));
            let _ = std::fs::remove_dir_all(&bundle);
        }
        if docker {
            let base = ["-H".to_owned(), format!("unix://{}", work.join("docker.sock").display())];
            let mut pull = Command::new("docker");
            pull.args(&base).args(["pull", "-q", &big]);
            settle()?;
            dk.push(ms(time_cmds(&mut [pull])?));
            quiet(Command::new("docker").args(&base).args(["rmi", &big]))?;
        }
        eprintln!("pull round {}: estiba {:.0} ms, skopeo+umoci {:?}, docker {:?}", i + 1, e[i], su.last(), dk.last());
    }
    pulls.push(("estiba pull", e));
    if skopeo_umoci {
        pulls.push(("skopeo copy + umoci unpack", su));
    }
    if docker {
        pulls.push(("docker pull", dk));
    }
    drop(peers_guard);

    // The report.
    let names: Vec<&str> = peers.iter().map(|p| p.name()).collect();
    let mut md = format!(
        "Command: `cargo xtask bench run --rounds {rounds} --many {many} --pull-rounds {pull_rounds} --peers {}` (as root; it \
         re-executes itself in a network and mount namespace of its own). Release build, one busybox image \
         cached by every peer; estiba with its built-in executor and its SQLite store: `estiba` runs tasks with \
         network mode `none` on the machine joined as an EC2 container instance (like the peers), `estiba \
         (awsvpc)` Fargate tasks with their own veth and address; docker {} and podman {} with runc, \
         `--network none`; `estiba (seccomp=unconfined)` (with `--peers unconfined`) the `estiba` task without \
         the seccomp filter.\n\n",
        wanted.join(","),
        peers.iter().find(|p| p.name() == "docker").map_or("-".into(), |_| version("docker")),
        peers.iter().find(|p| p.name() == "podman").map_or("-".into(), |_| version("podman")),
    );
    md.push_str(&format!("| | {} |\n|---|{}\n", names.join(" | "), names.iter().map(|_| "---:|").collect::<String>()));
    let row = |label: &str, f: &dyn Fn(usize) -> String| {
        format!("| {label} | {} |\n", (0..names.len()).map(f).collect::<Vec<_>>().join(" | "))
    };
    md.push_str(&row(&format!("start one task/container, p50 (ms, {rounds} runs)"), &|i| {
        format!("{:.1}", median(lat[i].clone()))
    }));
    md.push_str(&row("… p90 (ms)", &|i| format!("{:.1}", percentile(lat[i].clone(), 0.9))));
    md.push_str(&row("… estiba faster by", &|i| format!("{:.1}×", median(lat[i].clone()) / median(lat[0].clone()))));
    md.push_str(&row(&format!("{many} at once, all running (ms)"), &|i| format!("{:.0}", burst[i].0)));
    md.push_str(&row("supervisors found with all running", &|i| burst[i].1 .0.to_string()));
    md.push_str(&row("supervisor RSS per container (MiB, median)", &|i| format!("{:.2}", burst[i].1 .1)));
    md.push_str(&row("supervisor PSS per container (MiB)", &|i| format!("{:.2}", burst[i].1 .2)));
    md.push_str(&row("supervisor USS per container (MiB)", &|i| format!("{:.2}", burst[i].1 .3)));
    md.push_str(&format!(
        "\nPull and unpack of `bench/big` (5 gzip layers, 200 MB uncompressed, {:.0} MB compressed, 12,850 files) from \
         docker-registry on loopback, into an empty store each time; median of {pull_rounds}:\n\n| | ms |\n|---|---:|\n",
        images["big_compressed_bytes"].as_f64().unwrap_or(0.0) / 1e6
    ));
    for (name, v) in &pulls {
        md.push_str(&format!("| {name} | {:.0} |\n", median(v.clone())));
    }
    Ok(md)
}

fn version(program: &str) -> String {
    quiet(Command::new(program).arg("--version"))
        .unwrap_or_default()
        .split_whitespace()
        .nth(2)
        .unwrap_or("?")
        .trim_end_matches(',')
        .to_owned()
}
