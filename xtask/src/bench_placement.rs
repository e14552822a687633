//! `cargo xtask bench placement`: task placement on many container instances (issue 20).
//!
//! A control plane alone (`--local-node off`: no agent runs the tasks, which stay
//! PROVISIONING; the bench measures placement, not starts), with the SQLite store and, when an
//! `etcd` binary is on the PATH, with `--store etcd` on a one-member etcd started here on
//! loopback. For each store:
//!
//! - `--instances` (10,000) "simulated" EC2 container instances registered through
//!   RegisterContainerInstance, each with CPU, MEMORY and PORTS resources and an
//!   `ecs.availability-zone` over three zones (from its instance identity document);
//! - RunTask with count 10 in a loop from `--clients` (4) clients for `--seconds` (5), a bridge
//!   mode task definition of 16 CPU units and 32 MiB (capacity never runs out), once with
//!   binpack on memory and once with spread on `attribute:ecs.availability-zone` then
//!   `instanceId`: placements per second and RunTask's latency;
//! - a run that uses capacity up: on a cluster of `--instances / 10` instances, tasks of 1024
//!   CPU units that fit 4 to an instance, RunTask (binpack on cpu) until one answers with
//!   failures: every slot is filled, none twice (the number placed is exactly the capacity),
//!   and the failures are `RESOURCE:CPU`.
//!
//! The published figures printed beside (Nomad's C2M, Kubernetes' scheduler throughput
//! target) are quoted, not measured here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{arg, free_port, json_of, post, wait_ready, which};
use crate::bench_run::{ms, percentile, Guard, ISOLATED};

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        return isolated(root, args);
    }
    crate::bench::build_and_isolate(root, "placement", args)
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

fn isolated(root: &Path, args: &[String]) -> Result<()> {
    let instances: usize = arg(args, "--instances", 10_000);
    let seconds: u64 = arg(args, "--seconds", 5);
    let clients: usize = arg(args, "--clients", 4);
    let stores: String = arg(args, "--stores", "sqlite,etcd".to_owned());
    crate::bench::in_workdir(root, "ebp", "placement", |work| {
        let bin = target_dir(root).join("release/estiba");
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        for store in stores.split(',') {
            let etcd = match store {
                "sqlite" => None,
                "etcd" => match which("etcd") {
                    Some(b) => Some(b),
                    None => {
                        notes.push("etcd: no `etcd` binary on the PATH (Debian's etcd-server); skipped.".to_owned());
                        continue;
                    }
                },
                other => bail!("unknown store {other} (sqlite, etcd)"),
            };
            let dir = work.join(store);
            std::fs::create_dir_all(&dir)?;
            let mut guard = Guard(Vec::new());
            let port = start_server(&bin, &dir, etcd.as_deref(), &mut guard)?;
            let r = measure(store, port, instances, seconds, clients)?;
            rows.extend(r.0);
            notes.extend(r.1);
            drop(guard);
        }
        Ok(report(instances, seconds, clients, &rows, &notes))
    })
}

/// Starts etcd (when given) and the server on loopback; returns the server's port.
fn start_server(bin: &Path, dir: &Path, etcd: Option<&Path>, guard: &mut Guard) -> Result<u16> {
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["server", "--local-node", "off", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.join("estiba"))
        .env("ESTIBA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("estiba.log"))?));
    if let Some(etcd) = etcd {
        let endpoint = start_etcd(etcd, dir, guard)?;
        cmd.args(["--store", "etcd", "--etcd-endpoints", &endpoint]);
    }
    guard.0.push(cmd.spawn().context("starting estiba")?);
    wait_ready(port, Duration::from_secs(60))?;
    Ok(port)
}

/// One etcd member on loopback ports with its data under `dir`, as tests/e2e/test_etcd.py.
fn start_etcd(etcd: &Path, dir: &Path, guard: &mut Guard) -> Result<String> {
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child: Child = Command::new(etcd)
        .args(["--name", "default", "--data-dir"])
        .arg(dir.join("etcd-data"))
        .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .arg(format!("--initial-cluster=default={peer_url}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("etcd.log"))?))
        .spawn()
        .context("starting etcd")?;
    guard.0.push(child);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", client)).is_ok() {
            return Ok(endpoint);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("etcd did not listen on {endpoint} within 20 s")
}

fn call(port: u16, op: &str, body: &str) -> Result<String> {
    let (s, b) = post(port, op, body)?;
    if s != 200 {
        bail!("{op}: {s} {b}");
    }
    Ok(b)
}

fn taskdef(port: u16, family: &str, cpu: u32, memory: u32) -> Result<()> {
    call(
        port,
        "RegisterTaskDefinition",
        &format!(
            r#"{{"family":"{family}","requiresCompatibilities":["EC2"],"networkMode":"bridge","containerDefinitions":[{{"name":"app","image":"busybox","cpu":{cpu},"memory":{memory},"essential":true}}]}}"#
        ),
    )
    .map(drop)
}

/// Registers `n` EC2 instances of 4 vCPUs and 8 GiB over three zones, from `clients`
/// threads; returns how long it took.
fn register(port: u16, cluster: &str, n: usize, clients: usize) -> Result<Duration> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        let doc = format!(
                            r#"{{\"instanceId\":\"i-{i:017x}\",\"instanceType\":\"m5.xlarge\",\"availabilityZone\":\"{}\",\"architecture\":\"x86_64\"}}"#,
                            ZONES[i % ZONES.len()]
                        );
                        call(
                            port,
                            "RegisterContainerInstance",
                            &format!(
                                r#"{{"cluster":"{cluster}","instanceIdentityDocument":"{doc}","totalResources":[{{"name":"CPU","type":"INTEGER","integerValue":4096}},{{"name":"MEMORY","type":"INTEGER","integerValue":8192}},{{"name":"PORTS","type":"STRINGSET","stringSetValue":["22","2375","2376","51678","51679"]}}],"attributes":[{{"name":"bench.rack","value":"r{}"}}]}}"#,
                                i % 20
                            ),
                        )?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(start.elapsed())
}

/// The tasks a RunTask answer holds (each task has one `taskDefinitionArn`; its containers
/// have none).
fn placed_in(body: &str) -> usize {
    body.matches("\"taskDefinitionArn\"").count()
}

struct Run {
    placed: usize,
    calls: usize,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

/// RunTask count 10 from `clients` threads for `seconds`.
fn hammer(port: u16, body: &str, seconds: u64, clients: usize) -> Result<Run> {
    let placed = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let lat = std::thread::scope(|s| -> Result<Vec<f64>> {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| -> Result<Vec<f64>> {
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let b = call(port, "RunTask", body)?;
                        lat.push(ms(t.elapsed()));
                        placed.fetch_add(placed_in(&b), Ordering::Relaxed);
                        if start.elapsed() >= Duration::from_secs(seconds) {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??);
        }
        Ok(all)
    })?;
    Ok(Run { placed: placed.into_inner(), calls: lat.len(), elapsed: start.elapsed(), latencies_ms: lat })
}

struct Row {
    store: String,
    what: String,
    placements_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    calls: usize,
    placed: usize,
}

fn row(store: &str, what: &str, r: &Run) -> Row {
    Row {
        store: store.to_owned(),
        what: what.to_owned(),
        placements_per_s: r.placed as f64 / r.elapsed.as_secs_f64(),
        p50_ms: percentile(r.latencies_ms.clone(), 0.5),
        p99_ms: percentile(r.latencies_ms.clone(), 0.99),
        calls: r.calls,
        placed: r.placed,
    }
}

fn measure(store: &str, port: u16, instances: usize, seconds: u64, clients: usize) -> Result<(Vec<Row>, Vec<String>)> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    call(port, "CreateCluster", r#"{"clusterName":"big"}"#)?;
    taskdef(port, "small", 16, 32)?;
    let took = register(port, "big", instances, clients)?;
    notes.push(format!(
        "{store}: {instances} RegisterContainerInstance calls in {:.1} s ({:.0}/s).",
        took.as_secs_f64(),
        instances as f64 / took.as_secs_f64()
    ));
    // One call first, checked in full: the count of tasks in an answer is read by substring
    // in the timed loop.
    let first = call(port, "RunTask", r#"{"cluster":"big","taskDefinition":"small","count":10,"launchType":"EC2"}"#)?;
    let v = json_of(&first)?;
    let n = v["tasks"].as_array().map_or(0, Vec::len);
    if n != 10 || placed_in(&first) != 10 {
        bail!("{store}: the first RunTask placed {n} tasks (counted {}): {first:.400}", placed_in(&first));
    }
    for (what, strategy) in [
        ("binpack memory", r#"[{"type":"binpack","field":"memory"}]"#),
        (
            "spread zone, then instanceId",
            r#"[{"type":"spread","field":"attribute:ecs.availability-zone"},{"type":"spread","field":"instanceId"}]"#,
        ),
    ] {
        let body = format!(
            r#"{{"cluster":"big","taskDefinition":"small","count":10,"launchType":"EC2","placementStrategy":{strategy}}}"#
        );
        let r = hammer(port, &body, seconds, clients)?;
        rows.push(row(store, what, &r));
    }

    // Capacity used up: 4 tasks of 1024 CPU units fit an instance of 4096.
    let small = (instances / 10).max(1);
    call(port, "CreateCluster", r#"{"clusterName":"full"}"#)?;
    taskdef(port, "large", 1024, 1024)?;
    register(port, "full", small, clients)?;
    let capacity = small * 4;
    let body = r#"{"cluster":"full","taskDefinition":"large","count":10,"launchType":"EC2","placementStrategy":[{"type":"binpack","field":"cpu"}]}"#;
    let placed = AtomicUsize::new(0);
    let full = AtomicBool::new(false);
    let reasons = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let start = Instant::now();
    let lat = std::thread::scope(|s| -> Result<Vec<f64>> {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| -> Result<Vec<f64>> {
                    let mut lat = Vec::new();
                    while !full.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let b = call(port, "RunTask", body)?;
                        lat.push(ms(t.elapsed()));
                        let n = placed_in(&b);
                        placed.fetch_add(n, Ordering::Relaxed);
                        if n < 10 {
                            let v = json_of(&b)?;
                            let mut r = reasons.lock().unwrap();
                            for f in v["failures"].as_array().into_iter().flatten() {
                                r.insert(f["reason"].as_str().unwrap_or("").to_owned());
                            }
                            full.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??);
        }
        Ok(all)
    })?;
    let r = Run { placed: placed.into_inner(), calls: lat.len(), elapsed: start.elapsed(), latencies_ms: lat };
    let reasons = reasons.into_inner().unwrap();
    if r.placed != capacity {
        bail!("{store}: {} tasks placed on {small} instances that hold {capacity}", r.placed);
    }
    if reasons.iter().any(|x| x != "RESOURCE:CPU") {
        bail!("{store}: failures other than RESOURCE:CPU once full: {reasons:?}");
    }
    notes.push(format!(
        "{store}: capacity run: {} tasks placed on {small} instances of room for {capacity}, then failures {reasons:?}.",
        r.placed
    ));
    rows.push(row(store, &format!("binpack cpu until full ({small} instances)"), &r));
    Ok((rows, notes))
}

fn report(instances: usize, seconds: u64, clients: usize, rows: &[Row], notes: &[String]) -> String {
    let mut md = format!(
        "Command: `cargo xtask bench placement --instances {instances} --seconds {seconds} --clients {clients}`. \
         Control plane alone (`--local-node off`, release build), {instances} simulated EC2 container instances \
         over 3 zones; RunTask count 10 from {clients} clients.\n\n\
         | store | strategy | placements/s | RunTask p50 (ms) | p99 (ms) | calls | tasks placed |\n\
         |---|---|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} |\n",
            r.store, r.what, r.placements_per_s, r.p50_ms, r.p99_ms, r.calls, r.placed
        ));
    }
    md.push_str(
        "| Nomad (published, C2M: 1,000,000 containers on 5,000 hosts) | — | ~1,500 (not measured here) | | | | |\n\
         | Kubernetes (published scheduler throughput target) | — | ~100 pods/s (not measured here) | | | | |\n",
    );
    for n in notes {
        md.push_str(&format!("\n- {n}"));
    }
    md.push('\n');
    md
}
