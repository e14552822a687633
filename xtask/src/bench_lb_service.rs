//! `cargo xtask bench lb-service`: an Application Load Balancer in front of an ECS service of
//! real containers (busybox httpd answering its host name), on one estiba node:
//!
//! - time from a task RUNNING to serving traffic through the LB: per task, its `startedAt`
//!   until a request through the LB's address (its DNS name, resolved by the VPC resolver) is
//!   first answered by it (its host name in the body); and until DescribeTargetHealth first
//!   calls it `healthy`. Measured for the service's first 10 tasks and for the 10 new tasks
//!   of the rolling update below (where the old tasks are healthy and serving, so a new one
//!   gets traffic only once healthy: no fail-open);
//! - a rolling update of all tasks (UpdateService forceNewDeployment, 100/200) under a
//!   bounded load through the LB: requests sent, failed (a status other than 200 or a
//!   connection error: must be 0), the rollout's duration (call → the new deployment
//!   COMPLETED, and → every old task STOPPED after its drain), latency p50/p99 during it.
//!
//! Docker Swarm's routing mesh is not a peer here: it needs IPVS (`CONFIG_IP_VS`), which the
//! reference machine's kernel does not have (see BENCHMARKS.md).
//!
//! It runs as root inside a network and mount namespace of its own; the load only goes to the
//! LB's address in the namespace's VPC, and is bounded by `--max-seconds`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::{arg, median, post_query};
use crate::bench_dns::{a_records, RESOLVER};
use crate::bench_run::{ms, percentile, Guard, ISOLATED};
use crate::bench_services::{epoch, poll, Estiba};

/// test_lb.py's server: busybox httpd answering its host name on `/`. It ignores SIGTERM
/// (pid 1 without a handler): a draining task serves until killed after its stopTimeout.
const HTTPD: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";
const CLUSTER: &str = "lb";
const ELB_VERSION: &str = "2015-12-01";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        let cfg = Config {
            tasks: arg(args, "--tasks", 10),
            rate: arg(args, "--rate", 400),
            clients: arg(args, "--clients", 4),
            max_seconds: arg(args, "--max-seconds", 300),
        };
        return crate::bench::in_workdir(root, "ebls", "lb-service", |work| measure(root, work, &cfg));
    }
    crate::bench::build_and_isolate(root, "lb-service", args)
}

struct Config {
    tasks: usize,
    /// Requests per second of the whole load, spread over `clients` keep-alive connections.
    rate: u64,
    clients: u64,
    max_seconds: u64,
}

// ---------------------------------------------------------------------------------------
// ELBv2 and EC2 (AWS Query, XML answers)

fn query(port: u16, signing: &str, version: &str, op: &str, params: &[(&str, &str)]) -> Result<String> {
    let (s, b) = post_query(port, signing, version, op, params)?;
    if s != 200 {
        bail!("{op}: {s} {b}");
    }
    Ok(b)
}

fn elb(port: u16, op: &str, params: &[(&str, &str)]) -> Result<String> {
    query(port, "elasticloadbalancing", ELB_VERSION, op, params)
}

/// The text of every `<tag>…</tag>` in `xml`, in order (the answers here have no attributes on
/// the elements read and no escaped characters in their values).
fn xml_all(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(rest[..j].to_owned());
        rest = &rest[j + close.len()..];
    }
    out
}

fn xml_first(xml: &str, tag: &str) -> Result<String> {
    xml_all(xml, tag).into_iter().next().with_context(|| format!("no <{tag}> in {xml}"))
}

/// DescribeTargetHealth: (target id, state) per registered target.
fn target_states(port: u16, tg: &str) -> Result<Vec<(String, String)>> {
    let xml = elb(port, "DescribeTargetHealth", &[("TargetGroupArn", tg)])?;
    Ok(xml
        .split("<Target>")
        .skip(1)
        .filter_map(|d| {
            let id = xml_all(d, "Id").into_iter().next()?;
            let health = &d[d.find("<TargetHealth>")?..];
            Some((id, xml_all(health, "State").into_iter().next()?))
        })
        .collect())
}

/// The ALB, its `ip` target group and HTTP listener: (LB address, target group ARN).
fn load_balancer(port: u16) -> Result<([u8; 4], String)> {
    let subnets = query(port, "ec2", "2016-11-15", "DescribeSubnets", &[])?;
    let ids = xml_all(&subnets, "subnetId");
    let vpc = xml_first(&subnets, "vpcId")?;
    if ids.len() < 2 {
        bail!("fewer than two default subnets: {subnets}");
    }
    let lb = elb(
        port,
        "CreateLoadBalancer",
        &[("Name", "web"), ("Type", "application"), ("Subnets.member.1", &ids[0]), ("Subnets.member.2", &ids[1])],
    )?;
    let (lb_arn, dns) = (xml_first(&lb, "LoadBalancerArn")?, xml_first(&lb, "DNSName")?);
    let tg = elb(
        port,
        "CreateTargetGroup",
        &[
            ("Name", "web"),
            ("Protocol", "HTTP"),
            ("Port", "8080"),
            ("VpcId", &vpc),
            ("TargetType", "ip"),
            ("HealthCheckPath", "/"),
            ("HealthCheckIntervalSeconds", "5"),
            ("HealthCheckTimeoutSeconds", "2"),
            ("HealthyThresholdCount", "2"),
            ("UnhealthyThresholdCount", "2"),
        ],
    )?;
    let tg = xml_first(&tg, "TargetGroupArn")?;
    elb(
        port,
        "ModifyTargetGroupAttributes",
        &[
            ("TargetGroupArn", &tg),
            ("Attributes.member.1.Key", "deregistration_delay.timeout_seconds"),
            ("Attributes.member.1.Value", "5"),
        ],
    )?;
    elb(
        port,
        "CreateListener",
        &[
            ("LoadBalancerArn", &lb_arn),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", &tg),
        ],
    )?;
    poll("the load balancer active", Duration::from_secs(30), Duration::from_millis(100), || {
        let d = elb(port, "DescribeLoadBalancers", &[("LoadBalancerArns.member.1", &lb_arn)])?;
        Ok(xml_all(&d, "Code").iter().any(|c| c == "active").then_some(()))
    })?;
    // What a client does: the DNS name, through the VPC resolver.
    let addr = poll("the LB's name in the VPC resolver", Duration::from_secs(30), Duration::from_millis(50), || {
        Ok(a_records(RESOLVER, &dns).first().copied())
    })?;
    eprintln!("load balancer {dns} at {}", std::net::Ipv4Addr::from(addr));
    Ok((addr, tg))
}

// ---------------------------------------------------------------------------------------
// The load: `clients` keep-alive HTTP/1.1 connections to the LB, paced to `rate` in all.

#[derive(Default)]
struct Stats {
    sent: u64,
    failed: u64,
    /// The first few failures, for the log.
    failures: Vec<String>,
    /// (epoch seconds at the answer, latency ms) of each successful request.
    answers: Vec<(f64, f64)>,
    /// Per host name answering (its first label): the epoch seconds of its first answer.
    first_seen: HashMap<String, f64>,
}

struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Stats>>,
}

impl Load {
    fn start(addr: SocketAddr, cfg: &Config) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let every = Duration::from_secs_f64(cfg.clients as f64 / cfg.rate as f64);
        let deadline = Instant::now() + Duration::from_secs(cfg.max_seconds);
        let threads = (0..cfg.clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || client(addr, every, deadline, &stop))
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Stats::default();
        for t in self.threads {
            let s = t.join().unwrap_or_default();
            all.sent += s.sent;
            all.failed += s.failed;
            all.failures.extend(s.failures);
            all.answers.extend(s.answers);
            for (k, v) in s.first_seen {
                let e = all.first_seen.entry(k).or_insert(v);
                *e = e.min(v);
            }
        }
        all
    }
}

fn client(addr: SocketAddr, every: Duration, deadline: Instant, stop: &AtomicBool) -> Stats {
    let mut stats = Stats::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += every;
        stats.sent += 1;
        let t0 = Instant::now();
        match request(addr, &mut conn) {
            Ok(body) => {
                let host = body.trim().split('.').next().unwrap_or_default().to_owned();
                let at = epoch();
                stats.answers.push((at, ms(t0.elapsed())));
                stats.first_seen.entry(host).or_insert(at);
            }
            Err(e) => {
                conn = None;
                stats.failed += 1;
                if stats.failures.len() < 5 {
                    stats.failures.push(format!("{:.3}: {e:#}", epoch()));
                }
            }
        }
    }
    stats
}

/// One `GET /` on the kept connection (made when there is none); the body of a 200.
fn request(addr: SocketAddr, conn: &mut Option<BufReader<TcpStream>>) -> Result<String> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        *conn = Some(BufReader::new(s));
    }
    let r = conn.as_mut().context("no connection")?;
    r.get_mut().write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line.get(9..12).unwrap_or_default().to_owned();
    let (mut length, mut close) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse::<usize>().ok(),
            "connection" => close = v.trim().eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = vec![0; length.context("an answer without Content-Length")?];
    r.read_exact(&mut body)?;
    if close {
        *conn = None;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    if status != "200" {
        bail!("status {status}: {}", body.trim());
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------

/// A task's ENI address and host name (its private DNS name's first label).
fn eni(task: &Value) -> (String, String) {
    let (mut ip, mut name) = (String::new(), String::new());
    for d in task["attachments"][0]["details"].as_array().into_iter().flatten() {
        match d["name"].as_str() {
            Some("privateIPv4Address") => ip = d["value"].as_str().unwrap_or_default().to_owned(),
            Some("privateDnsName") => {
                name = d["value"].as_str().unwrap_or_default().split('.').next().unwrap_or_default().to_owned()
            }
            _ => {}
        }
    }
    (ip, name)
}

/// Records the first time each target is `healthy` in `first`.
fn note_health(port: u16, tg: &str, first: &mut HashMap<String, f64>) -> Result<()> {
    let at = epoch();
    for (id, state) in target_states(port, tg)? {
        if state == "healthy" {
            first.entry(id).or_insert(at);
        }
    }
    Ok(())
}

/// Per task: seconds from `startedAt` to its first answer through the LB, and to healthy.
fn to_serving(
    tasks: &[Value],
    seen: &HashMap<String, f64>,
    healthy: &HashMap<String, f64>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut serve, mut health) = (Vec::new(), Vec::new());
    for t in tasks {
        let started = t["startedAt"].as_f64().context("a task without startedAt")?;
        let (ip, name) = eni(t);
        let s = seen.get(&name).with_context(|| format!("task {name} never answered through the LB"))?;
        serve.push(s - started);
        if let Some(h) = healthy.get(&ip) {
            health.push(h - started);
        }
    }
    Ok((serve, health))
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn measure(root: &Path, work: &Path, cfg: &Config) -> Result<String> {
    let n = cfg.tasks;
    let mut guard = Guard(Vec::new());
    let (estiba, busybox) = Estiba::start(root, work, &mut guard)?;
    let port = estiba.port;

    let (addr, tg) = load_balancer(port)?;
    let lb = SocketAddr::from((addr, 80));
    estiba.call("CreateCluster", &json!({ "clusterName": CLUSTER }).to_string())?;
    estiba.call(
        "RegisterTaskDefinition",
        &json!({
            "family": "bench-lb", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512",
            "containerDefinitions": [{
                "name": "web", "image": busybox, "command": ["sh", "-c", HTTPD], "stopTimeout": 2,
                "portMappings": [{ "containerPort": 8080 }],
            }],
        })
        .to_string(),
    )?;

    // 1. The service's first tasks: a request loop through the LB from before they exist.
    let load = Load::start(lb, cfg);
    let created = epoch();
    estiba.call(
        "CreateService",
        &json!({
            "cluster": CLUSTER, "serviceName": "web", "taskDefinition": "bench-lb", "desiredCount": n,
            "launchType": "FARGATE", "healthCheckGracePeriodSeconds": 0,
            "deploymentConfiguration": { "minimumHealthyPercent": 100, "maximumPercent": 200 },
            "networkConfiguration": { "awsvpcConfiguration": { "subnets": ["subnet-1"] } },
            "loadBalancers": [{ "targetGroupArn": tg, "containerName": "web", "containerPort": 8080 }],
        })
        .to_string(),
    )?;
    let mut healthy = HashMap::new();
    poll("the first deployment to complete", Duration::from_secs(180), Duration::from_millis(100), || {
        note_health(port, &tg, &mut healthy)?;
        let s = estiba.service(CLUSTER)?;
        let done = s["deployments"].as_array().is_some_and(|d| d.len() == 1 && d[0]["rolloutState"] == "COMPLETED")
            && s["runningCount"].as_u64() == Some(n as u64)
            && healthy.len() >= n;
        Ok(done.then_some(()))
    })?;
    let first_done = epoch();
    std::thread::sleep(Duration::from_secs(1));
    let warm = load.finish();
    let first = estiba.tasks(CLUSTER, "RUNNING")?;
    let (c_serve, c_health) = to_serving(&first, &warm.first_seen, &healthy)?;
    eprintln!(
        "creation: {n} tasks COMPLETED in {:.1} s; RUNNING → served (s): {:?}; → healthy: {:?}",
        first_done - created,
        c_serve.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>(),
        c_health.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>()
    );

    // 2. The rolling update under load.
    let load = Load::start(lb, cfg);
    std::thread::sleep(Duration::from_secs(2));
    let old: Vec<String> = first.iter().filter_map(|t| t["taskArn"].as_str().map(str::to_owned)).collect();
    let (t0, at) = (Instant::now(), epoch());
    estiba.call(
        "UpdateService",
        &json!({ "cluster": CLUSTER, "service": "web", "forceNewDeployment": true }).to_string(),
    )?;
    let mut healthy = HashMap::new();
    let mut completed = None;
    poll(
        "the rolling update to complete and the old tasks to stop",
        Duration::from_secs(300),
        Duration::from_millis(100),
        || {
            note_health(port, &tg, &mut healthy)?;
            if completed.is_none() {
                let s = estiba.service(CLUSTER)?;
                let deps = s["deployments"].as_array().cloned().unwrap_or_default();
                if deps.len() == 1
                    && deps[0]["rolloutState"] == "COMPLETED"
                    && s["runningCount"].as_u64() == Some(n as u64)
                {
                    completed = Some((t0.elapsed(), epoch()));
                }
            }
            let stopped = estiba.tasks(CLUSTER, "STOPPED")?;
            let gone =
                old.iter().all(|a| stopped.iter().any(|t| t["taskArn"] == a.as_str() && t["lastStatus"] == "STOPPED"));
            Ok((completed.is_some() && gone).then_some(()))
        },
    )?;
    let all_stopped = t0.elapsed();
    let (to_completed, completed_at) = completed.context("not completed")?;
    std::thread::sleep(Duration::from_secs(1));
    let roll = load.finish();
    let new: Vec<Value> = estiba
        .tasks(CLUSTER, "RUNNING")?
        .into_iter()
        .filter(|t| !old.iter().any(|a| t["taskArn"] == a.as_str()))
        .collect();
    if new.len() != n {
        bail!("{} new tasks running after the update, not {n}", new.len());
    }
    let new_ips: Vec<String> = new.iter().map(|t| eni(t).0).collect();
    healthy.retain(|ip, _| new_ips.contains(ip));
    let (r_serve, r_health) = to_serving(&new, &roll.first_seen, &healthy)?;
    let during: Vec<f64> = roll.answers.iter().filter(|(t, _)| *t >= at && *t <= completed_at).map(|a| a.1).collect();
    eprintln!(
        "rolling update: COMPLETED after {:.1} s, old tasks stopped after {:.1} s; {} requests, {} failed {:?}; RUNNING → served (s): {:?}",
        to_completed.as_secs_f64(),
        all_stopped.as_secs_f64(),
        roll.sent,
        roll.failed,
        roll.failures,
        r_serve.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>(),
    );
    estiba.remove(CLUSTER)?;

    let s = |v: &[f64]| format!("{:.2} / {:.2}", median(v.to_vec()), max(v));
    let mut md = format!(
        "Command: `cargo xtask bench lb-service --tasks {n} --rate {} --clients {}` (as root; it re-executes itself in \
         a network and mount namespace of its own). One estiba node (release build, `--unchecked-task-healthy-after \
         0s`), an ALB (two default subnets) with an HTTP:80 listener forwarding to an `ip` target group (health check \
         `/` every 5 s, timeout 2 s, healthy threshold 2, deregistration delay 5 s), a FARGATE awsvpc service of {n} \
         tasks of busybox `httpd` answering its host name (`healthCheckGracePeriodSeconds` 0, 100/200, stopTimeout \
         2 s). The load: {} keep-alive HTTP/1.1 connections sending `GET /` to the LB's address (its DNS name, \
         resolved by the VPC resolver) at {} requests/s in all.\n\n",
        cfg.rate, cfg.clients, cfg.clients, cfg.rate
    );
    md.push_str("| RUNNING (`startedAt`) → | first answer through the LB, median / max (s) | DescribeTargetHealth `healthy` first seen, median / max (s) |\n|---|---:|---:|\n");
    md.push_str(&format!("| the service's first {n} tasks | {} | {} |\n", s(&c_serve), s(&c_health)));
    md.push_str(&format!("| the {n} new tasks of the rolling update | {} | {} |\n\n", s(&r_serve), s(&r_health)));
    md.push_str("| rolling update of {n} under load | |\n|---|---:|\n".replace("{n}", &n.to_string()).as_str());
    md.push_str(&format!(
        "| requests sent (from 2 s before the call to 1 s after the last old task stopped) | {} |\n",
        roll.sent
    ));
    md.push_str(&format!("| requests failed (non-200 or connection error) | **{}** |\n", roll.failed));
    md.push_str(&format!("| UpdateService → deployment COMPLETED (s) | {:.1} |\n", to_completed.as_secs_f64()));
    md.push_str(&format!("| UpdateService → every old task STOPPED (s) | {:.1} |\n", all_stopped.as_secs_f64()));
    md.push_str(&format!(
        "| latency during the rollout (call → COMPLETED), p50 / p99 (ms) | {:.2} / {:.2} |\n",
        percentile(during.clone(), 0.5),
        percentile(during, 0.99)
    ));
    if !roll.failures.is_empty() {
        md.push_str(&format!("\nFirst failures: {:?}\n", roll.failures));
    }
    Ok(md)
}
