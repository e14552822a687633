//! `cargo xtask bench metrics`: what CloudWatch metrics and autoscaling cost and how fast they
//! answer (issue 18):
//!
//! - **sampling cost**: an estiba node with `--tasks` (100) running busybox tasks; the
//!   server's CPU time (utime + stime of the process, which holds the agent, the sampler and
//!   the metric ingest) over `--seconds` with the agent sampling every 5 s, against the same
//!   node sampling every hour (so the difference is the sampling and its ingest), and its RSS;
//! - **PutMetricData** datapoints accepted per second by a server confined to one core
//!   (`taskset -c 0`), 1,000 datapoints per call (JSON 1.0, as boto3 sends), from 4 clients;
//! - **GetMetricData** over a day of 1-minute data for 100 series (100 MetricStat queries,
//!   Period 60, every page), median latency: each page from its request to the last byte of
//!   its answer (the bench's own JSON work, in a debug build, is not counted);
//! - **time to scale out**: a service of one CPU-burning task (`cpu` 256) with a target
//!   tracking policy at 50 % on `ECSServiceAverageCPUUtilization`, `--metric-period 5s`: from
//!   the task RUNNING (the load starting) until the service's desired count grows.
//!
//! `--parts sampling,put,get,scale` (the default: all) chooses what is measured. It runs as root inside a network and mount namespace of its own, like the other benches.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::bench::{arg, free_port, json_of, median, post, post_json10, post_to, wait_ready};
use crate::bench_run::{ms, registry_with_images, start_estiba_node, Guard, ISOLATED};

const CW: &str = "GraniteServiceVersion20100801";
const AAS: &str = "AnyScaleFrontendService";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        let tasks: usize = arg(args, "--tasks", 100);
        let seconds: u64 = arg(args, "--seconds", 60);
        let rounds: usize = arg(args, "--rounds", 3);
        let parts: String = arg(args, "--parts", "sampling,put,get,scale".to_owned());
        let parts: Vec<&str> = parts.split(',').collect();
        return crate::bench::in_workdir(root, "ebm", "metrics", |work| {
            measure(root, work, tasks, seconds, rounds, &parts)
        });
    }
    crate::bench::build_and_isolate(root, "metrics", args)
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// utime + stime of a process, in seconds; and its RSS in MiB.
fn cpu_and_rss(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is 3rd overall, utime the 14th, stime the 15th, rss the 24th.
    let tick = 100.0; // USER_HZ on Linux
    let utime: f64 = f.get(11).context("utime")?.parse()?;
    let stime: f64 = f.get(12).context("stime")?.parse()?;
    let rss_pages: f64 = f.get(21).context("rss")?.parse()?;
    Ok(((utime + stime) / tick, rss_pages * 4096.0 / (1 << 20) as f64))
}

/// Stops every task of the server (its services deleted first, so none is replaced) and waits
/// until they have stopped: a server's containers outlive it (the next start adopts them), and
/// a burner left running would skew whatever runs after.
fn stop_everything(port: u16) -> Result<()> {
    let b = ok(post(port, "ListServices", r#"{"maxResults":100}"#)?, "ListServices")?;
    for arn in json_of(&b)?["serviceArns"].as_array().into_iter().flatten().filter_map(|a| a.as_str()) {
        ok(post(port, "DeleteService", &format!(r#"{{"service":"{arn}","force":true}}"#))?, "DeleteService")?;
    }
    let t0 = Instant::now();
    loop {
        // Both lists: tasks being stopped are listed under STOPPED before they have stopped.
        let mut arns: Vec<String> = Vec::new();
        for desired in ["RUNNING", "STOPPED"] {
            let body = format!(r#"{{"maxResults":100,"desiredStatus":"{desired}"}}"#);
            let b = ok(post(port, "ListTasks", &body)?, "ListTasks")?;
            arns.extend(
                json_of(&b)?["taskArns"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)),
            );
        }
        let mut live = 0;
        for chunk in arns.chunks(100) {
            let list = chunk.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(",");
            let d = ok(post(port, "DescribeTasks", &format!(r#"{{"tasks":[{list}]}}"#))?, "DescribeTasks")?;
            for t in json_of(&d)?["tasks"].as_array().into_iter().flatten() {
                if t["lastStatus"] == "STOPPED" {
                    continue;
                }
                live += 1;
                if t["desiredStatus"] != "STOPPED" {
                    let arn = t["taskArn"].as_str().unwrap_or_default();
                    ok(post(port, "StopTask", &format!(r#"{{"task":"{arn}","reason":"benchmark"}}"#))?, "StopTask")?;
                }
            }
        }
        if live == 0 {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("{live} tasks not STOPPED after 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn ok(r: (u16, String), what: &str) -> Result<String> {
    if r.0 != 200 {
        bail!("{what}: {} {}", r.0, r.1);
    }
    Ok(r.1)
}

fn measure(root: &Path, work: &Path, tasks: usize, seconds: u64, rounds: usize, parts: &[&str]) -> Result<String> {
    let bin = root.join("target/release/estiba");
    let mut guard = Guard(Vec::new());
    let images = registry_with_images(root, work, &mut guard, false)?;
    let busybox = images["busybox"].as_str().context("no busybox image")?.to_owned();

    // 1. Sampling cost with `tasks` running tasks: every 5 s against every hour.
    let mut sampling = Vec::new();
    let intervals: &[&str] = if parts.contains(&"sampling") { &["5s", "3600s"] } else { &[] };
    for interval in intervals {
        eprintln!("sampling: {tasks} tasks, --metrics-interval {interval}…");
        let dir = work.join(format!("sampling-{interval}"));
        std::fs::create_dir_all(&dir)?;
        let mut g = Guard(Vec::new());
        let port = start_estiba_node(&bin, &dir, &mut g, &["--metrics-interval", interval])?;
        let pid = g.0[0].id();
        ok(post(port, "CreateCluster", r#"{"clusterName":"default"}"#)?, "CreateCluster")?;
        let td = serde_json::json!({"family": "idle", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "app", "image": busybox, "command": ["sleep", "3600"]}]});
        ok(post(port, "RegisterTaskDefinition", &td.to_string())?, "RegisterTaskDefinition")?;
        let mut left = tasks;
        while left > 0 {
            let n = left.min(10);
            let body = format!(
                r#"{{"taskDefinition":"idle","count":{n},"launchType":"FARGATE","networkConfiguration":{{"awsvpcConfiguration":{{"subnets":["subnet-1"]}}}}}}"#
            );
            ok(post(port, "RunTask", &body)?, "RunTask")?;
            left -= n;
        }
        let t0 = Instant::now();
        loop {
            let b = ok(post(port, "ListTasks", r#"{"desiredStatus":"RUNNING","maxResults":100}"#)?, "ListTasks")?;
            let arns: Vec<String> = json_of(&b)?["taskArns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(|s| format!("\"{s}\"")))
                .collect();
            let running = if arns.is_empty() {
                0
            } else {
                let mut n = 0;
                for chunk in arns.chunks(100) {
                    let d = ok(
                        post(port, "DescribeTasks", &format!(r#"{{"tasks":[{}]}}"#, chunk.join(",")))?,
                        "DescribeTasks",
                    )?;
                    n += json_of(&d)?["tasks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|t| t["lastStatus"] == "RUNNING")
                        .count();
                }
                n
            };
            if running >= tasks {
                break;
            }
            if t0.elapsed() > Duration::from_secs(180) {
                bail!("only {running} of {tasks} tasks RUNNING after 3 minutes");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        // Let start-up work settle, then measure.
        std::thread::sleep(Duration::from_secs(10));
        let (c0, _) = cpu_and_rss(pid)?;
        let w0 = Instant::now();
        std::thread::sleep(Duration::from_secs(seconds));
        let (c1, rss) = cpu_and_rss(pid)?;
        let share = (c1 - c0) / w0.elapsed().as_secs_f64() * 100.0;
        sampling.push((interval, share, rss));
        stop_everything(port)?;
        drop(g);
    }

    // 2. PutMetricData on one core.
    eprintln!("PutMetricData…");
    let port = free_port();
    let dir = work.join("put");
    let mut g = Guard(Vec::new());
    let server = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&bin)
        .args(["server", "--local-node", "off", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&dir)
        .env("ESTIBA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("put.log"))?)
        .spawn()
        .context("taskset (util-linux)")?;
    g.0.push(server);
    wait_ready(port, Duration::from_secs(30))?;
    let body = |series: usize, base: usize, ts: Option<f64>| -> String {
        let data: Vec<serde_json::Value> = (0..1000)
            .map(|i| {
                let mut d = serde_json::json!({"MetricName": "Latency", "Value": (i % 97) as f64,
                    "Dimensions": [{"Name": "Service", "Value": format!("s{}", (base + i) % series)},
                                   {"Name": "Host", "Value": "h1"}]});
                if let Some(t) = ts {
                    d["Timestamp"] = serde_json::json!(t);
                }
                d
            })
            .collect();
        serde_json::json!({"Namespace": "Bench", "MetricData": data}).to_string()
    };
    let mut put_rates = Vec::new();
    for _ in 0..if parts.contains(&"put") { rounds } else { 0 } {
        let bodies: Vec<String> = (0..8).map(|k| body(1000, k * 1000, None)).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let t0 = Instant::now();
        let total: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|c| {
                    let bodies = &bodies;
                    s.spawn(move || -> Result<usize> {
                        let mut n = 0;
                        let mut k = c;
                        while Instant::now() < deadline {
                            ok(
                                post_json10(port, "monitoring", CW, "PutMetricData", &bodies[k % bodies.len()])?,
                                "PutMetricData",
                            )?;
                            n += 1000;
                            k += 4;
                        }
                        Ok(n)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().ok().and_then(|r| r.ok()).unwrap_or(0)).sum()
        });
        put_rates.push(total as f64 / t0.elapsed().as_secs_f64());
    }

    // 3. GetMetricData over a day of 1-minute data for 100 series.
    eprintln!("GetMetricData…");
    let end = (now_s() / 60.0).floor() * 60.0;
    let start = end - 86_400.0;
    for minute in 0..1440 {
        let ts = start + minute as f64 * 60.0 + 1.0;
        // 1,000 data per call: 100 series × 10 minutes.
        if minute % 10 != 0 {
            continue;
        }
        let data: Vec<serde_json::Value> = (0..1000)
            .map(|i| {
                serde_json::json!({"MetricName": "Day", "Value": (i % 13) as f64,
                    "Dimensions": [{"Name": "Service", "Value": format!("s{}", i % 100)}],
                    "Timestamp": ts + (i / 100) as f64 * 60.0})
            })
            .collect();
        let b = serde_json::json!({"Namespace": "Bench", "MetricData": data}).to_string();
        ok(post_json10(port, "monitoring", CW, "PutMetricData", &b)?, "PutMetricData (a day)")?;
    }
    let queries: Vec<serde_json::Value> = (0..100)
        .map(|i| {
            serde_json::json!({"Id": format!("m{i}"), "MetricStat": {"Metric": {"Namespace": "Bench", "MetricName": "Day",
                "Dimensions": [{"Name": "Service", "Value": format!("s{i}")}]}, "Period": 60, "Stat": "Average"}})
        })
        .collect();
    let mut get_ms = Vec::new();
    let mut points = 0usize;
    for _ in 0..if parts.contains(&"get") { rounds * 5 } else { 0 } {
        // Timed: each page from its request to the last byte of its answer; the bench's own
        // JSON handling (building requests, parsing 2.6 MB answers) is not the server's time.
        let mut spent = Duration::ZERO;
        let mut token: Option<String> = None;
        points = 0;
        loop {
            let mut req = serde_json::json!({"MetricDataQueries": queries, "StartTime": start, "EndTime": end + 60.0});
            if let Some(t) = &token {
                req["NextToken"] = serde_json::json!(t);
            }
            let body = req.to_string();
            let t0 = Instant::now();
            let answer = post_json10(port, "monitoring", CW, "GetMetricData", &body)?;
            spent += t0.elapsed();
            let v = json_of(&ok(answer, "GetMetricData")?)?;
            points += v["MetricDataResults"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["Values"].as_array().map_or(0, Vec::len))
                .sum::<usize>();
            token = v["NextToken"].as_str().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        get_ms.push(ms(spent));
    }
    if parts.contains(&"get") && points < 100 * 1400 {
        bail!("GetMetricData returned {points} datapoints, expected about {}", 100 * 1440);
    }
    drop(g);

    // 4. Time from load to the first scale-out.
    eprintln!("scale-out…");
    let mut scale = Vec::new();
    for round in 0..if parts.contains(&"scale") { rounds } else { 0 } {
        let dir = work.join(format!("scale-{round}"));
        std::fs::create_dir_all(&dir)?;
        let mut g = Guard(Vec::new());
        let port = start_estiba_node(&bin, &dir, &mut g, &["--metric-period", "5s"])?;
        ok(post(port, "CreateCluster", r#"{"clusterName":"default"}"#)?, "CreateCluster")?;
        let td = serde_json::json!({"family": "burn", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "app", "image": busybox, "command": ["sh", "-c", "while :; do :; done"]}]});
        ok(post(port, "RegisterTaskDefinition", &td.to_string())?, "RegisterTaskDefinition")?;
        ok(
            post(
                port,
                "CreateService",
                r#"{"serviceName":"web","taskDefinition":"burn","desiredCount":1,"launchType":"FARGATE","networkConfiguration":{"awsvpcConfiguration":{"subnets":["subnet-1"]}}}"#,
            )?,
            "CreateService",
        )?;
        let target = r#""ServiceNamespace":"ecs","ResourceId":"service/default/web","ScalableDimension":"ecs:service:DesiredCount""#;
        ok(
            post_to(
                port,
                "application-autoscaling",
                AAS,
                "RegisterScalableTarget",
                &format!(r#"{{{target},"MinCapacity":1,"MaxCapacity":4}}"#),
            )?,
            "RegisterScalableTarget",
        )?;
        ok(
            post_to(
                port,
                "application-autoscaling",
                AAS,
                "PutScalingPolicy",
                &format!(
                    r#"{{{target},"PolicyName":"cpu50","PolicyType":"TargetTrackingScaling","TargetTrackingScalingPolicyConfiguration":{{"TargetValue":50.0,"PredefinedMetricSpecification":{{"PredefinedMetricType":"ECSServiceAverageCPUUtilization"}},"ScaleOutCooldown":60,"ScaleInCooldown":60}}}}"#
                ),
            )?,
            "PutScalingPolicy",
        )?;
        let describe = || -> Result<serde_json::Value> {
            let b = ok(post(port, "DescribeServices", r#"{"services":["web"]}"#)?, "DescribeServices")?;
            Ok(json_of(&b)?["services"][0].clone())
        };
        let t0 = Instant::now();
        let running_at = loop {
            if describe()?["runningCount"] == 1 {
                break Instant::now();
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("the burner did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        loop {
            if describe()?["desiredCount"].as_i64().unwrap_or(0) > 1 {
                scale.push(ms(running_at.elapsed()) / 1000.0);
                break;
            }
            if running_at.elapsed() > Duration::from_secs(180) {
                bail!("no scale-out within 3 minutes of the load");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        stop_everything(port)?;
        drop(g);
    }

    let mut md = format!(
        "## bench metrics\n\n`cargo xtask bench metrics --tasks {tasks} --seconds {seconds} --rounds {rounds} --parts {}` (release build, as \
         root in a network and mount namespace of its own).\n\n\
         | sampling ({tasks} running tasks) | server CPU | server RSS |\n|---|---:|---:|\n",
        parts.join(",")
    );
    for (interval, share, rss) in &sampling {
        md.push_str(&format!("| --metrics-interval {interval} | {share:.2} % of a core | {rss:.0} MiB |\n"));
    }
    md.push_str(&format!(
        "\n| metrics | |\n|---|---:|\n\
         | PutMetricData, server on one core (`taskset -c 0`), 1,000 data per call, 4 clients | {:.0} datapoints/s |\n\
         | GetMetricData, 100 series × a day of 1-minute data ({points} datapoints, every page) | {:.1} ms (median of {}) |\n\
         | load start → first scale-out (`--metric-period 5s`, target tracking at 50 %) | {:.1} s (median of {rounds}) |\n",
        median(put_rates),
        median(get_ms.clone()),
        get_ms.len(),
        median(scale),
    ));
    Ok(md)
}
