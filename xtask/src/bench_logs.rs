//! `cargo xtask bench logs`: the awslogs driver's cost. One busybox container prints
//! 1,000,000 lines of 100 bytes as fast as it can (`yes <99 bytes> | head -n 999999; echo END`):
//!
//! - wall time of the task (RunTask → STOPPED) with `logDriver: awslogs` (blocking mode, so
//!   every line is kept), against the same task writing to `/dev/null` (the logging cost) and
//!   against `docker run --log-driver json-file` of the same image (dockerd started here;
//!   skipped with a note when it is not installed or does not start, or with `--peers none`),
//!   split into the container's life and its exit → STOPPED (the logging either slows the
//!   container while it prints or adds the drain after it); beside them the same task without
//!   a log driver (output captured to its log file only): the share of capture in the cost;
//! - the time from the container's exit (its supervisor's `exit.json`) until every line is
//!   visible to GetLogEvents (the stream's last event read backwards is the last line, `END`; when
//!   the Logs API does not answer yet, until the task reports STOPPED, which waits for the
//!   shipper);
//! - ingest rate: lines over the time from the container's start until all are visible;
//! - bytes on disk per event in the log store (`<data-dir>/logs`).
//!
//! Every run starts on a quiet machine (`sync`, then CPUs 90 % idle for 300 ms): the log store
//! seals what an awslogs run stored after the task stopped, and that work must not be charged
//! to the run after it. It runs as root inside a network and mount namespace of its own, like
//! the other benches.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::bench::{arg, json_of, median, post, post_to};
use crate::bench_run::{ms, quiet, registry_with_images, start_dockerd, start_estiba_node, Guard, ISOLATED};

const LOGS_TARGET: &str = "Logs_20140328";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let bin = crate::bench::bin_arg(args);
    if std::env::var_os(ISOLATED).is_some() {
        let rounds: usize = arg(args, "--rounds", 3);
        let lines: u64 = arg(args, "--lines", 1_000_000);
        // `--peers none`: estiba alone (for profiling it).
        let docker = arg(args, "--peers", "docker".to_owned()).split(',').any(|p| p == "docker");
        let bin = bin.unwrap_or_else(|| root.join("target/release/estiba"));
        return crate::bench::in_workdir(root, "ebl", "logs", |work| measure(&bin, root, work, rounds, lines, docker));
    }
    crate::bench::isolate_bin(root, "logs", args, bin.as_deref())
}

/// One run of the task: wall time, how it splits, exit → visible, start → visible.
struct Run {
    wall: Duration,
    /// The container's life in ms (its start as the task reports it → its supervisor's exit
    /// record): what the logging slows down while the container prints.
    ran: f64,
    /// The container's exit → STOPPED seen by the bench, in ms (one poll late at most): what
    /// the drain adds.
    exit_to_stopped: f64,
    exit_to_visible: Option<Duration>,
    start_to_visible: Option<Duration>,
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0
}

/// `lines` lines of 100 bytes, the last one `END` (so a reader knows it has them all).
fn script(lines: u64, devnull: bool) -> String {
    let line = "x".repeat(99);
    let out = if devnull { " > /dev/null" } else { "" };
    format!("(yes {line} | head -n {}; echo END){out}", lines - 1)
}

fn measure(bin: &Path, root: &Path, work: &Path, rounds: usize, lines: u64, with_docker: bool) -> Result<String> {
    let mut guard = Guard(Vec::new());
    let images = registry_with_images(root, work, &mut guard, false)?;
    let busybox = images["busybox"].as_str().context("no busybox image")?.to_owned();
    let port = start_estiba_node(bin, work, &mut guard, &[])?;
    let call = |op: &str, body: &str| -> Result<String> {
        let (s, b) = post(port, op, body)?;
        if s != 200 {
            bail!("{op}: {s} {b}");
        }
        Ok(b)
    };
    let logs_call = |op: &str, body: &str| -> Result<(u16, String)> { post_to(port, "logs", LOGS_TARGET, op, body) };
    let register = |fam: &str, cmd: &str, log: &str| -> Result<()> {
        let c = serde_json::json!([{"name": "app", "image": busybox, "memory": 256, "command": ["sh", "-c", cmd]}]);
        let mut c = c;
        if !log.is_empty() {
            c[0]["logConfiguration"] = serde_json::from_str(log)?;
        }
        let body = serde_json::json!({"family": fam, "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "1024", "memory": "2048", "containerDefinitions": c});
        call("RegisterTaskDefinition", &body.to_string())?;
        Ok(())
    };
    call("CreateCluster", r#"{"clusterName":"default"}"#)?;
    let group = "/bench/logs";
    let awslogs = format!(
        r#"{{"logDriver":"awslogs","options":{{"awslogs-group":"{group}","awslogs-region":"us-east-1","awslogs-stream-prefix":"b","awslogs-create-group":"true","mode":"blocking"}}}}"#
    );
    register("bench-devnull", &script(lines, true), "")?;
    register("bench-awslogs", &script(lines, false), &awslogs)?;
    // No log driver: the output is captured to the container's log file (what `estiba logs`
    // reads) and shipped nowhere, which splits the awslogs cost into capture and shipping.
    register("bench-captured", &script(lines, false), "")?;
    let data = work.join("estiba");

    let run_task = |fam: &str, awslogs: bool| -> Result<Run> {
        let t0 = Instant::now();
        let b = call(
            "RunTask",
            &format!(
                r#"{{"taskDefinition":"{fam}","launchType":"FARGATE","networkConfiguration":{{"awsvpcConfiguration":{{"subnets":["subnet-1"]}}}}}}"#
            ),
        )?;
        let arn = json_of(&b)?["tasks"][0]["taskArn"].as_str().context("no task")?.to_owned();
        let id = arn.rsplit('/').next().unwrap_or_default().to_owned();
        let exit_file = data.join("agent/tasks").join(&id).join("app/exit.json");
        let stream = format!("b/app/{id}");
        let mut visible_at: Option<f64> = None;
        let mut api = awslogs;
        let wall;
        loop {
            let b = call("DescribeTasks", &format!(r#"{{"tasks":["{arn}"]}}"#))?;
            let t = &json_of(&b)?["tasks"][0];
            if awslogs && api && visible_at.is_none() && exit_file.exists() {
                // The stream's newest event, read backwards: the last line once all are in.
                let body = serde_json::json!({"logGroupName": group, "logStreamName": stream, "startFromHead": false, "limit": 1});
                match logs_call("GetLogEvents", &body.to_string()) {
                    Ok((200, r)) => {
                        // Lines are shipped in order: the last one visible means all are.
                        let v = json_of(&r)?;
                        if v["events"][0]["message"] == "END" {
                            visible_at = Some(now_ms());
                        }
                    }
                    _ => api = false,
                }
            }
            if t["lastStatus"] == "STOPPED" {
                wall = t0.elapsed();
                if t["stopCode"] != "EssentialContainerExited" {
                    bail!("task stopped: {}", t["stoppedReason"]);
                }
                let stopped = now_ms();
                let visible = visible_at.unwrap_or(stopped);
                let exit: serde_json::Value = serde_json::from_slice(&std::fs::read(&exit_file)?)?;
                let exited = exit["finished_at_ms"].as_f64().unwrap_or(0.0);
                let started = t["startedAt"].as_f64().unwrap_or(0.0) * 1000.0;
                return Ok(Run {
                    wall,
                    ran: exited - started,
                    exit_to_stopped: stopped - exited,
                    exit_to_visible: awslogs.then(|| Duration::from_secs_f64(((visible - exited) / 1000.0).max(0.0))),
                    start_to_visible: awslogs.then(|| Duration::from_secs_f64(((visible - started) / 1000.0).max(0.0))),
                });
            }
            if t0.elapsed() > Duration::from_secs(600) {
                bail!("task not STOPPED after 10 minutes");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    let mut devnull = Vec::new();
    let mut with_logs = Vec::new();
    let mut captured = Vec::new();
    let mut docker = Vec::new();
    let mut docker_note = String::new();
    let mut peers_guard = Guard(Vec::new());
    let started = if with_docker { start_dockerd(work, &mut peers_guard, false) } else { Ok(None) };
    let dockerd = match started {
        Ok(Some(d)) => Some(d),
        Ok(None) if !with_docker => {
            docker_note = "docker not measured (`--peers none`)".into();
            None
        }
        Ok(None) => {
            docker_note = "docker not installed: skipped".into();
            None
        }
        Err(e) => {
            docker_note = format!("dockerd did not start: {e}");
            None
        }
    };
    for round in 0..rounds {
        eprintln!("round {}/{rounds}…", round + 1);
        // Each run starts on a quiet machine: what the one before left (sealing, writeback)
        // is not charged to it.
        crate::bench::settle_machine();
        devnull.push(run_task("bench-devnull", false)?);
        crate::bench::settle_machine();
        with_logs.push(run_task("bench-awslogs", true)?);
        crate::bench::settle_machine();
        captured.push(run_task("bench-captured", false)?);
        let (n, l, c) = (&devnull[round], &with_logs[round], &captured[round]);
        eprintln!(
            "  /dev/null {:.0} ms (ran {:.0}, exit → STOPPED {:.0}), awslogs {:.0} ms (ran {:.0}, exit → STOPPED {:.0}), \
             captured {:.0} ms",
            ms(n.wall),
            n.ran,
            n.exit_to_stopped,
            ms(l.wall),
            l.ran,
            l.exit_to_stopped,
            ms(c.wall)
        );
        if let Some(d) = &dockerd {
            crate::bench::settle_machine();
            let t0 = Instant::now();
            quiet(
                d.cmd()
                    .args([
                        "run",
                        "--rm",
                        "--network",
                        "none",
                        "--log-driver",
                        "json-file",
                        "bench-busybox",
                        "sh",
                        "-c",
                    ])
                    .arg(script(lines, false))
                    .stdout(std::process::Stdio::null()),
            )?;
            docker.push(t0.elapsed());
        }
    }
    let disk = du(&data.join("logs"))?;
    let events = (rounds as u64 * lines).max(1);

    let wall = |v: &[Run]| median(v.iter().map(|r| ms(r.wall)).collect());
    let (w_null, w_logs) = (wall(&devnull), wall(&with_logs));
    let split =
        |v: &[Run]| (median(v.iter().map(|r| r.ran).collect()), median(v.iter().map(|r| r.exit_to_stopped).collect()));
    let ((ran_null, stop_null), (ran_logs, stop_logs)) = (split(&devnull), split(&with_logs));
    let (w_cap, (ran_cap, stop_cap)) = (wall(&captured), split(&captured));
    // Each round's pair ran back to back: the ratio within a round cancels the machine's
    // drift from one round to the next (its speed moves by a quarter within minutes).
    let paired = median(devnull.iter().zip(&with_logs).map(|(n, l)| ms(l.wall) / ms(n.wall)).collect());
    let e2v = median(with_logs.iter().filter_map(|r| r.exit_to_visible).map(ms).collect());
    let s2v = median(with_logs.iter().filter_map(|r| r.start_to_visible).map(ms).collect());
    let mut md = format!(
        "## bench logs\n\n`cargo xtask bench logs --rounds {rounds} --lines {lines}` (release build, as root in a network \
         and mount namespace of its own). A busybox container prints {lines} lines of 100 bytes \
         (`yes <99 x> | head -n {lines}-1; echo END`); Fargate awsvpc task, RunTask → STOPPED; awslogs in blocking mode \
         (every line kept). Median of {rounds}. Of the wall time, the container's life (start → its \
         exit record) and its exit → STOPPED seen (the awslogs drain is in it).\n\n\
         | | wall ms | vs /dev/null | container ran ms | exit → STOPPED ms |\n|---|---:|---:|---:|---:|\n\
         | estiba, output to /dev/null | {w_null:.0} | 1.00x | {ran_null:.0} | {stop_null:.0} |\n\
         | estiba, awslogs | {w_logs:.0} | {:.2}x (median of the rounds' own ratios: {paired:.2}x) | {ran_logs:.0} | {stop_logs:.0} |\n\
         | estiba, no log driver (captured to the container's log file only) | {w_cap:.0} | {:.2}x | {ran_cap:.0} | {stop_cap:.0} |\n",
        w_logs / w_null,
        w_cap / w_null
    );
    if docker.is_empty() {
        md.push_str(&format!("| docker run --log-driver json-file | ({docker_note}) | | | |\n"));
    } else {
        let d = median(docker.iter().map(|d| ms(*d)).collect());
        md.push_str(&format!("| docker run --log-driver json-file | {d:.0} | {:.2}x | | |\n", d / w_null));
    }
    md.push_str(&format!(
        "\n| awslogs | |\n|---|---:|\n| container exit → every line visible to GetLogEvents | {e2v:.0} ms |\n\
         | ingest (lines / (container start → all visible)) | {:.0} lines/s |\n\
         | log store on disk per event | {:.1} bytes |\n",
        lines as f64 / (s2v / 1000.0),
        disk as f64 / events as f64
    ));
    Ok(md)
}

fn du(dir: &Path) -> Result<u64> {
    let out = Command::new("du").args(["-sb"]).arg(dir).output()?;
    let s = String::from_utf8_lossy(&out.stdout);
    Ok(s.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0))
}
