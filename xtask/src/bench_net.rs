//! `cargo xtask bench net`: what task networking costs, beside Docker doing the same.
//!
//! - Start latency (RunTask → RUNNING, the image cached) of one task per network mode, all
//!   on the machine joined as an EC2 container instance (one launch path), modes interleaved
//!   round by round: `none` (loopback only), `awsvpc` (a veth on the VPC bridge and an
//!   address) and `bridge` with one published dynamic port. The network's cost is the
//!   difference of medians to `none`, as the client sees it and in the node's own
//!   timestamps (createdAt → pullStartedAt, which holds the network step and not the start). Docker does the same with `docker run -d`
//!   `--network none` and `--network bridge -p 80` (dockerd with `--iptables=false`: a veth
//!   on docker0 and its userland proxy, no firewall rules, like estiba).
//! - `--many` (default 200) awsvpc tasks started at once (RunTask calls of 10 from 10
//!   clients), each serving HTTP with busybox httpd; then every task is fetched by its
//!   private address from the benchmark (the host side of the bridge).
//!
//! It runs as root inside a network and mount namespace of its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::{arg, json_of, median, post};
use crate::bench_run::{
    ms, quiet, registry_with_images, start_dockerd, start_estiba_node, Cli, Estiba, Guard, Peer, ISOLATED,
};

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        let rounds: usize = arg(args, "--rounds", 30);
        let many: usize = arg(args, "--many", 200);
        let docker = arg(args, "--peers", "docker".to_owned()).split(',').any(|p| p == "docker");
        return crate::bench::in_workdir(root, "ebn", "net", |work| measure(root, work, rounds, many, docker));
    }
    crate::bench::build_and_isolate(root, "net", args)
}

/// Calls estiba and fails on an error answer.
fn call(port: u16, op: &str, body: &str) -> Result<Value> {
    let (s, b) = post(port, op, body)?;
    if s != 200 {
        bail!("{op}: {s} {b}");
    }
    json_of(&b)
}

/// One HTTP GET of `/` at `addr`; the body.
fn get(addr: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn measure(root: &Path, work: &Path, rounds: usize, many: usize, with_docker: bool) -> Result<String> {
    let bin = root.join("target/release/estiba");
    let mut guard = Guard(Vec::new());
    let images = registry_with_images(root, work, &mut guard, false)?;
    let busybox = images["busybox"].as_str().context("no busybox image")?.to_owned();
    let port = start_estiba_node(&bin, work, &mut guard, &["--join-cluster", "net"])?;
    call(port, "CreateCluster", r#"{"clusterName":"net"}"#)?;
    let start = Instant::now();
    while call(port, "ListContainerInstances", r#"{"cluster":"net"}"#)?["containerInstanceArns"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the node did not join cluster net");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let serve = r#"["sh","-c","mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]"#;
    for (family, mode, extra) in [
        ("bench-fargate", "awsvpc", r#","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512""#),
        ("bench-vpc", "awsvpc", ""),
        ("bench-none", "none", ""),
        ("bench-bridge", "bridge", ""),
    ] {
        let ports = if mode == "bridge" { r#","portMappings":[{"containerPort":8080}]"# } else { "" };
        call(
            port,
            "RegisterTaskDefinition",
            &format!(
                r#"{{"family":"{family}","networkMode":"{mode}"{extra},"containerDefinitions":[{{"name":"app","image":"{busybox}","memory":64,"command":{serve},"stopTimeout":2{ports}}}]}}"#
            ),
        )?;
    }
    let docker = if with_docker { start_dockerd(work, &mut guard, true)? } else { None };
    const EC2_VPC: &str =
        r#""launchType":"EC2","cluster":"net","networkConfiguration":{"awsvpcConfiguration":{"subnets":["subnet-1"]}}"#;
    let estiba = |family: &str, launch: &'static str| Estiba {
        name: "estiba",
        port,
        family: family.into(),
        launch,
        state_dir: work.join("estiba").display().to_string(),
    };
    let fargate = Arc::new(estiba(
        "bench-fargate",
        r#""launchType":"FARGATE","networkConfiguration":{"awsvpcConfiguration":{"subnets":["subnet-1"]}}"#,
    ));
    let modes = [
        estiba("bench-none", r#""launchType":"EC2","cluster":"net""#),
        estiba("bench-vpc", EC2_VPC),
        estiba("bench-bridge", r#""launchType":"EC2","cluster":"net""#),
    ];

    // 1. Start latency per mode, interleaved: as the client sees it, and the node's part of
    // it before the image step (createdAt → pullStartedAt: claim, namespace, network).
    let one = |e: &Estiba| -> Result<(f64, f64)> {
        let t0 = Instant::now();
        let arns = e.run_task(1)?;
        let t = e.wait_for(&arns, "RUNNING", Duration::from_secs(60))?;
        let took = ms(t0.elapsed());
        let provisioning =
            (t[0]["pullStartedAt"].as_f64().unwrap_or(0.0) - t[0]["createdAt"].as_f64().unwrap_or(0.0)) * 1e3;
        e.remove(&arns)?;
        Ok((took, provisioning))
    };
    let docker_one = |d: &Cli, args: &[&str]| -> Result<f64> {
        let t0 = Instant::now();
        let id = quiet(d.cmd().args(["run", "-d"]).args(args).args(["bench-busybox", "sleep", "600"]))?;
        let took = ms(t0.elapsed());
        quiet(d.cmd().args(["rm", "-f", &id]))?;
        Ok(took)
    };
    for e in modes.iter().chain([&*fargate]) {
        one(e)?; // warm-up: the image is pulled, the bridges exist
    }
    if let Some(d) = &docker {
        docker_one(d, &["--network", "none"])?;
        docker_one(d, &["--network", "bridge", "-p", "80"])?;
    }
    let (mut none, mut vpc, mut bridge, mut d_none, mut d_bridge) = (vec![], vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        // The order rotates, so no mode always follows the same one.
        let mut order = [(&modes[0], &mut none), (&modes[1], &mut vpc), (&modes[2], &mut bridge)];
        order.rotate_left(r % 3);
        for (e, out) in order {
            out.push(one(e)?);
        }
        if let Some(d) = &docker {
            d_none.push(docker_one(d, &["--network", "none"])?);
            d_bridge.push(docker_one(d, &["--network", "bridge", "-p", "80"])?);
        }
        if r % 10 == 9 {
            eprintln!("{} rounds", r + 1);
        }
    }
    drop(docker);

    // 2. Many awsvpc tasks at once, each fetched by its address.
    let t0 = Instant::now();
    let per = 10;
    let calls = many.div_ceil(per);
    let arns: Vec<String> = std::thread::scope(|s| -> Result<Vec<String>> {
        let hs: Vec<_> = (0..10)
            .map(|c| {
                let e = fargate.clone();
                s.spawn(move || -> Result<Vec<String>> {
                    let mut out = Vec::new();
                    for _ in (c..calls).step_by(10) {
                        out.extend(e.run_task(per)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in hs {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("client panicked"))??);
        }
        Ok(all)
    })?;
    let tasks = fargate.wait_for(&arns, "RUNNING", Duration::from_secs(300))?;
    let all_running = ms(t0.elapsed());
    let ips: Vec<String> = tasks
        .iter()
        .filter_map(|t| {
            t["attachments"][0]["details"].as_array()?.iter().find(|d| d["name"] == "privateIPv4Address")?["value"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let distinct = ips.iter().collect::<std::collections::HashSet<_>>().len();
    let t1 = Instant::now();
    let mut reached = 0;
    for ip in &ips {
        // httpd may still be starting in a task that just reached RUNNING: a few tries.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match get(&format!("{ip}:8080")) {
                Ok(b) if b.contains("\r\n\r\nok") => {
                    reached += 1;
                    break;
                }
                _ if Instant::now() > deadline => break,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    let fetch_all = ms(t1.elapsed());
    eprintln!(
        "{} tasks running after {all_running:.0} ms; {reached} of {} answered in {fetch_all:.0} ms",
        arns.len(),
        ips.len()
    );
    fargate.remove(&arns)?;

    let med = |v: &Vec<(f64, f64)>, k: usize| median(v.iter().map(|x| if k == 0 { x.0 } else { x.1 }).collect());
    let mut md = format!(
        "Command: `cargo xtask bench net --rounds {rounds} --many {many}{}` (as root; it re-executes itself in a network and \
         mount namespace of its own). Release build, busybox cached; estiba with its built-in executor and its SQLite \
         store, the machine joined to an EC2 cluster on which every mode runs (same launch path); docker with runc and \
         `--iptables=false`. Modes interleaved round by round; medians of {rounds}.\n\n",
        if with_docker { "" } else { " --peers none" }
    );
    md.push_str(
        "| start one task, p50 (ms) | estiba RunTask → RUNNING | estiba createdAt → pullStartedAt | docker run -d |\n|---|---:|---:|---:|\n",
    );
    let dm = |v: &Vec<f64>| if v.is_empty() { "-".to_owned() } else { format!("{:.1}", median(v.clone())) };
    md.push_str(&format!("| network mode `none` | {:.1} | {:.1} | {} |\n", med(&none, 0), med(&none, 1), dm(&d_none)));
    md.push_str(&format!("| `awsvpc` (veth, address) | {:.1} | {:.1} | |\n", med(&vpc, 0), med(&vpc, 1)));
    md.push_str(&format!(
        "| `bridge` with one published port | {:.1} | {:.1} | {} |\n",
        med(&bridge, 0),
        med(&bridge, 1),
        dm(&d_bridge)
    ));
    md.push_str(&format!(
        "| **network setup's cost**: awsvpc − none | **{:.1}** | **{:.1}** | |\n",
        med(&vpc, 0) - med(&none, 0),
        med(&vpc, 1) - med(&none, 1)
    ));
    let d_cost = if d_none.is_empty() {
        "-".into()
    } else {
        format!("{:.1}", median(d_bridge.clone()) - median(d_none.clone()))
    };
    md.push_str(&format!(
        "| bridge + port − none | {:.1} | {:.1} | {d_cost} |\n",
        med(&bridge, 0) - med(&none, 0),
        med(&bridge, 1) - med(&none, 1)
    ));
    md.push_str(&format!(
        "\n{many} awsvpc tasks started at once: all RUNNING after {all_running:.0} ms, {distinct} distinct addresses, \
         **{reached} of {} answered** an HTTP GET by private address ({fetch_all:.0} ms for all, one after another).\n",
        ips.len()
    ));
    Ok(md)
}
