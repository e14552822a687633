//! `cargo xtask bench agent`: RunTask → RUNNING of one awsvpc Fargate task on an agent host
//! (`estiba agent` in a network namespace of its own, joined to the server's by a bridge, as
//! tests/e2e/hosts.py makes hosts) beside the same on the server's in-process node, in one run,
//! interleaved round by round.
//!
//! The server listens on the bridge (10.79.0.1) and on loopback; the agent names zone
//! `us-east-1b` (`--attribute ecs.availability-zone=us-east-1b`), so a task in that zone's
//! subnet goes to the agent and one in zone a's to the server's own node, which names none
//! (the Fargate placement's zone tiers). Every placement is checked against `/_estiba/nodes`.
//! The image (busybox, `scripts/bench-images.py`) is pushed to the server's own registry and
//! cached on both nodes by the warm-up.
//!
//! It runs as root inside a network and mount namespace of its own (it re-executes itself
//! under `unshare --net --mount`, or runs as it is when already isolated), so no packet
//! leaves the machine. `--bin PATH` measures a given build instead of building the release.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{arg, median, post, post_query, post_to, wait_ready};
use crate::bench_run::{ms, percentile, quiet, Estiba, Guard, Peer, ISOLATED};

const BRIDGE: &str = "br-ebench";
const SERVER_IP: &str = "10.79.0.1";
const HOST_IP: &str = "10.79.0.2";
const HOST_NODE: &str = "bench-host";
const TOKEN: &str = "bench-agent-token";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let bin = crate::bench::bin_arg(args);
    if std::env::var_os(ISOLATED).is_some() {
        let rounds: usize = arg(args, "--rounds", 30);
        let bin = bin.unwrap_or_else(|| root.join("target/release/estiba"));
        return crate::bench::in_workdir(root, "eba", "agent", |work| measure(&bin, root, work, rounds, args));
    }
    crate::bench::isolate_bin(root, "agent", args, bin.as_deref())
}

/// One GET on loopback; the body.
fn get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The node `/_estiba/nodes` says runs task `arn`.
fn node_of(port: u16, arn: &str) -> Result<Option<String>> {
    let id = arn.rsplit('/').next().unwrap_or_default();
    let nodes: serde_json::Value = serde_json::from_str(&get(port, "/_estiba/nodes")?)?;
    Ok(nodes.as_array().into_iter().flatten().find_map(|n| {
        n["tasks"].as_array()?.iter().any(|t| t == id).then(|| n["id"].as_str().unwrap_or_default().to_owned())
    }))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The id of the default VPC's subnet in `zone` (EC2 DescribeSubnets, AWS Query).
fn subnet_in(port: u16, zone: &str) -> Result<String> {
    let (s, xml) = post_query(port, "ec2", "2016-11-15", "DescribeSubnets", &[])?;
    if s != 200 {
        bail!("DescribeSubnets: {s} {xml}");
    }
    xml.split("<item>")
        .filter(|item| item.contains(&format!("<availabilityZone>{zone}</availabilityZone>")))
        .find_map(|item| Some(item.split_once("<subnetId>")?.1.split_once("</subnetId>")?.0.to_owned()))
        .with_context(|| format!("no subnet in {zone}: {xml}"))
}

fn measure(bin: &Path, root: &Path, work: &Path, rounds: usize, args: &[String]) -> Result<String> {
    if !bin.exists() {
        bail!("{} not found (build it, or give --bin PATH)", bin.display());
    }
    let load_before = loadavg();
    let mut guard = Guard(Vec::new());
    // The underlay: a bridge here, and the host: a namespace held by `sleep`, on a veth.
    quiet(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
    quiet(Command::new("ip").args(["addr", "add", &format!("{SERVER_IP}/24"), "dev", BRIDGE]))?;
    quiet(Command::new("ip").args(["link", "set", BRIDGE, "up"]))?;
    let holder = Command::new("unshare").args(["--net", "--", "sleep", "infinity"]).spawn()?;
    let pid = holder.id().to_string();
    guard.0.push(holder);
    std::thread::sleep(Duration::from_millis(100));
    quiet(Command::new("ip").args(["link", "add", "v-ebench", "type", "veth", "peer", "name", "eth0", "netns", &pid]))?;
    quiet(Command::new("ip").args(["link", "set", "v-ebench", "master", BRIDGE, "up"]))?;
    let in_host =
        |a: &[&str]| -> Result<String> { quiet(Command::new("nsenter").args(["-t", &pid, "-n", "--"]).args(a)) };
    in_host(&["ip", "link", "set", "lo", "up"])?;
    in_host(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", "eth0"])?;
    in_host(&["ip", "link", "set", "eth0", "up"])?;

    // The server, with its own node, on the bridge and loopback.
    let port = crate::bench::free_port();
    let tokens = work.join("join-tokens");
    std::fs::write(&tokens, format!("{TOKEN} node={HOST_NODE}\n"))?;
    let server = Command::new(bin)
        // Off loopback the server verifies signatures unless told not to; this bench's calls
        // are unsigned (its network namespace has no route out).
        .args(["server", "--local-node", "on", "--auth", "none", "--listen", &format!("0.0.0.0:{port}"), "--data-dir"])
        .arg(work.join("estiba"))
        .arg("--join-tokens")
        .arg(&tokens)
        .args(["--registry-host", &format!("{SERVER_IP}:{port}"), "--node-id", "bench-server"])
        .env("ESTIBA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("estiba.log"))?)
        .spawn()?;
    guard.0.push(server);
    wait_ready(port, Duration::from_secs(30))?;
    let agent = Command::new("nsenter")
        .args(["-t", &pid, "-n", "--"])
        .arg(bin)
        .args(["agent", "--server", &format!("http://{SERVER_IP}:{port}"), "--join-token", TOKEN, "--fargate"])
        .args(["--node-id", HOST_NODE, "--attribute", "ecs.availability-zone=us-east-1b", "--data-dir"])
        .arg(work.join("agent"))
        .env("ESTIBA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("agent.log"))?)
        .spawn()?;
    guard.0.push(agent);
    let joined = Instant::now();
    while !get(port, "/_estiba/nodes")?.contains(&format!("\"{HOST_NODE}\"")) {
        if joined.elapsed() > Duration::from_secs(30) {
            bail!("the agent did not join: {}", std::fs::read_to_string(work.join("agent.log")).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // The image, in the server's own registry (reached by both nodes at SERVER_IP).
    let (s, b) = post_to(
        port,
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921",
        "CreateRepository",
        r#"{"repositoryName":"bench/busybox"}"#,
    )?;
    if s != 200 {
        bail!("CreateRepository: {s} {b}");
    }
    let images = crate::bench_run::push_images(root, &format!("{SERVER_IP}:{port}"), work, false)?;
    let busybox = images["busybox"].as_str().context("no busybox image")?.to_owned();
    let call = |op: &str, body: &str| -> Result<String> {
        let (s, b) = post(port, op, body)?;
        if s != 200 {
            bail!("{op}: {s} {b}");
        }
        Ok(b)
    };
    call("CreateCluster", "{}")?;
    let container =
        format!(r#"[{{"name":"app","image":"{busybox}","memory":64,"command":["sleep","600"],"stopTimeout":2}}]"#);
    call(
        "RegisterTaskDefinition",
        &format!(
            r#"{{"family":"bench-agent","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512","containerDefinitions":{container}}}"#
        ),
    )?;
    let launch = |subnet: &str| -> &'static str {
        Box::leak(
            format!(
                r#""launchType":"FARGATE","networkConfiguration":{{"awsvpcConfiguration":{{"subnets":["{subnet}"]}}}}"#
            )
            .into_boxed_str(),
        )
    };
    let state = work.join("estiba").display().to_string();
    let peers = [
        (
            "bench-server",
            Estiba {
                name: "in-process node",
                port,
                family: "bench-agent".into(),
                launch: launch(&subnet_in(port, "us-east-1a")?),
                state_dir: state.clone(),
            },
        ),
        (
            HOST_NODE,
            Estiba {
                name: "agent host",
                port,
                family: "bench-agent".into(),
                launch: launch(&subnet_in(port, "us-east-1b")?),
                state_dir: state,
            },
        ),
    ];
    // Warm-up: each node pulls the image once; every placement lands where it should.
    for (node, p) in &peers {
        for _ in 0..2 {
            let id = p.start_one().with_context(|| format!("{}: warm-up", p.name()))?;
            let on = node_of(port, &id)?;
            if on.as_deref() != Some(*node) {
                bail!("{}: the task went to {on:?}, not {node}", p.name());
            }
            p.remove(&[id])?;
        }
    }
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    for r in 0..rounds {
        for k in 0..peers.len() {
            let i = (k + r) % peers.len();
            let (node, p) = &peers[i];
            let t0 = Instant::now();
            let id = p.start_one().with_context(|| format!("{}: start", p.name()))?;
            lat[i].push(ms(t0.elapsed()));
            if node_of(port, &id)?.as_deref() != Some(*node) {
                bail!("{}: a task went elsewhere than {node}", p.name());
            }
            p.remove(&[id])?;
        }
        if r % 10 == 9 {
            eprintln!("agent bench: {} rounds", r + 1);
        }
    }
    let load_after = loadavg();
    drop(guard);
    let _ = quiet(Command::new("ip").args(["link", "del", BRIDGE]));

    let mut md = format!(
        "Command: `cargo xtask bench agent {}` (as root; it re-executes itself in a network and mount namespace \
         of its own). Binary: `{}`. One server (SQLite store, its own node) and one `estiba agent --fargate` in a \
         network namespace of its own on a bridge, on the same machine; one awsvpc Fargate task (busybox `sleep`, \
         image cached) at a time, the two nodes interleaved, the order alternating by round; RunTask until \
         DescribeTasks (polled every 1 ms) shows RUNNING. Load average (1, 5, 15 min) before: {load_before}; \
         after: {load_after}.\n\n| node | p50 (ms) | p90 (ms) | p99 (ms) | runs |\n|---|---:|---:|---:|---:|\n",
        args.join(" "),
        bin.display(),
    );
    for (i, (_, p)) in peers.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {} |\n",
            p.name(),
            median(lat[i].clone()),
            percentile(lat[i].clone(), 0.9),
            percentile(lat[i].clone(), 0.99),
            lat[i].len()
        ));
    }
    Ok(md)
}
