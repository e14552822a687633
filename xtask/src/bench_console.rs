//! `cargo xtask bench console`: the web console's speed (issue 19's Speed section), on a
//! release server with `--local-node off` and a cluster of `--tasks` (1,000) tasks that never
//! run (RunTask 10 at a time; they stay PROVISIONING, which is what the pages list and
//! describe either way):
//!
//! - **page server time**: for each console page, every API call the page makes, in the order
//!   the browser makes them (read from its module in `crates/estiba-server/console/js/pages/`),
//!   timed in Rust from each request to its answer's last byte, summed per page load; p50 and
//!   p99 over `--rounds` (50) loads. Aim: under 20 ms.
//! - **first page bytes**: `GET /`, the stylesheet and every JavaScript module the first page
//!   loads (app.js imports each page's module, so all of them), as the server sends them
//!   (with `Accept-Encoding: gzip`: the server does not compress, so the bytes are the files').
//!   Aim: under 300 KB.
//! - **a task's state change in an open service view**: the view asks again every `POLL_MS`
//!   (750 ms, js/pages/service.js), so a change shows within the poll interval plus one poll's
//!   server time, printed here as that bound; test_console_run.py measures it in a browser.
//!
//! It runs inside a network and mount namespace of its own, like the other benches.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::{arg, free_port, json_of, post, post_json10, post_query, post_to, wait_ready};
use crate::bench_run::{ms, percentile, Guard, ISOLATED};

const LOGS: &str = "Logs_20140328";
const CW: &str = "GraniteServiceVersion20100801";
/// The service view's poll interval (js/pages/service.js `POLL_MS`).
const POLL_MS: f64 = 750.0;

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        let tasks: usize = arg(args, "--tasks", 1000);
        let rounds: usize = arg(args, "--rounds", 50);
        return crate::bench::in_workdir(root, "ebc", "console", |work| measure(root, work, tasks, rounds));
    }
    crate::bench::build_and_isolate(root, "console", args)
}

/// One API call of a page: which API and its input.
enum Call {
    Ecs(&'static str, Value),
    Logs(&'static str, Value),
    Cw(&'static str, Value),
    Ec2(&'static str, Vec<(&'static str, String)>),
}

/// Makes one call; its answer's JSON (EC2's XML is kept as a string value).
fn call(port: u16, c: &Call) -> Result<Value> {
    let (status, body) = match c {
        Call::Ecs(op, v) => post(port, op, &v.to_string())?,
        Call::Logs(op, v) => post_to(port, "logs", LOGS, op, &v.to_string())?,
        Call::Cw(op, v) => post_json10(port, "monitoring", CW, op, &v.to_string())?,
        Call::Ec2(op, p) => {
            let params: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (s, b) = post_query(port, "ec2", "2016-11-15", op, &params)?;
            return if s == 200 { Ok(Value::String(b)) } else { bail!("{op}: {s} {b}") };
        }
    };
    if status != 200 {
        bail!("{}: {status} {body}", name(c));
    }
    // Some operations answer an empty body (CreateLogGroup).
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    json_of(&body)
}

fn name(c: &Call) -> &'static str {
    match c {
        Call::Ecs(op, _) | Call::Logs(op, _) | Call::Cw(op, _) | Call::Ec2(op, _) => op,
    }
}

/// Times `f` (one page load's calls), in milliseconds.
fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t0 = Instant::now();
    f()?;
    Ok(ms(t0.elapsed()))
}

/// An ECS List* operation's every page, as the console's `listAll` asks for them.
fn list_all(port: u16, op: &'static str, input: Value, key: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut i = input.clone();
        if let Some(t) = &token {
            i["nextToken"] = json!(t);
        }
        let page = call(port, &Call::Ecs(op, i))?;
        out.extend(page[key].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)));
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(out),
        }
    }
}

/// A Describe* over `ids` in batches of `size`, as the console's `describeAll` does.
fn describe_all(port: u16, op: &'static str, input: Value, key: &str, ids: &[String], size: usize) -> Result<usize> {
    let mut n = 0;
    for chunk in ids.chunks(size) {
        let mut i = input.clone();
        i[key] = json!(chunk);
        n += call(port, &Call::Ecs(op, i))?[key].as_array().map_or(0, Vec::len);
    }
    Ok(n)
}

/// `GET path` with `Accept-Encoding: gzip`; the bytes the server sent (head and body).
fn get_bytes(port: u16, path: &str) -> Result<(usize, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", text.lines().next().unwrap_or_default());
    }
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((out.len(), body))
}

/// The modules a module imports (`import ... from "./x.js"`), resolved against its path.
fn imports(path: &str, text: &str) -> Vec<String> {
    let dir: Vec<&str> = path.rsplit_once('/').map_or(vec![], |(d, _)| d.split('/').collect());
    text.lines()
        .filter(|l| l.starts_with("import "))
        .filter_map(|l| {
            l.rsplit_once(" from ").map(|(_, s)| s.trim().trim_end_matches(';').trim_matches('"').to_owned())
        })
        .map(|spec| {
            let mut parts = dir.clone();
            for seg in spec.split('/') {
                match seg {
                    "." => {}
                    ".." => {
                        parts.pop();
                    }
                    s => parts.push(s),
                }
            }
            parts.join("/")
        })
        .collect()
}

fn measure(root: &Path, work: &Path, tasks: usize, rounds: usize) -> Result<String> {
    // Where `cargo build --release` put it (CARGO_TARGET_DIR when set).
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let bin = target.join("release/estiba");
    let mut guard = Guard(Vec::new());
    let port = free_port();
    let server = Command::new(&bin)
        .args(["server", "--local-node", "off", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(work.join("data"))
        .env("ESTIBA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("server.log"))?)
        .spawn()
        .context("starting estiba")?;
    guard.0.push(server);
    wait_ready(port, Duration::from_secs(30))?;

    // The load: a cluster, a task definition logging to a group, a service of 10 tasks and
    // `tasks` more from RunTask, 10 a call.
    eprintln!("{tasks} tasks…");
    let cluster = "bench";
    call(port, &Call::Ecs("CreateCluster", json!({"clusterName": cluster})))?;
    call(port, &Call::Logs("CreateLogGroup", json!({"logGroupName": "/ecs/web"})))?;
    let td = json!({"family": "web", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512",
        "containerDefinitions": [{"name": "web", "image": "busybox", "portMappings": [{"containerPort": 80}],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/web", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs"}}}]});
    call(port, &Call::Ecs("RegisterTaskDefinition", td))?;
    let net = json!({"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}});
    call(
        port,
        &Call::Ecs(
            "CreateService",
            json!({"cluster": cluster, "serviceName": "web", "taskDefinition": "web", "desiredCount": 10, "launchType": "FARGATE", "networkConfiguration": net}),
        ),
    )?;
    for _ in 0..tasks.div_ceil(10) {
        let out = call(
            port,
            &Call::Ecs(
                "RunTask",
                json!({"cluster": cluster, "taskDefinition": "web", "count": 10, "launchType": "FARGATE", "networkConfiguration": net}),
            ),
        )?;
        if out["tasks"].as_array().map_or(0, Vec::len) != 10 {
            bail!("RunTask started fewer than 10 tasks: {out}");
        }
    }
    // Every task of the service, and every RUNNING-desired task of the cluster (ListTasks pages).
    let service_tasks = || {
        list_all(port, "ListTasks", json!({"cluster": cluster, "serviceName": "web", "maxResults": 100}), "taskArns")
    };
    let running_tasks = || {
        list_all(
            port,
            "ListTasks",
            json!({"cluster": cluster, "desiredStatus": "RUNNING", "maxResults": 100}),
            "taskArns",
        )
    };
    let task_id = {
        let arns = service_tasks()?;
        arns.first().context("the service has no task")?.rsplit('/').next().unwrap_or_default().to_owned()
    };
    let listed = running_tasks()?;
    eprintln!("{} tasks listed in {cluster}", listed.len());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();

    // The pages, each as its module makes its calls.
    let clusters = || -> Result<()> {
        let arns = list_all(port, "ListClusters", json!({}), "clusterArns")?;
        describe_all(port, "DescribeClusters", json!({"include": ["SETTINGS"]}), "clusters", &arns, 100)?;
        Ok(())
    };
    let describe_cluster = || {
        call(
            port,
            &Call::Ecs(
                "DescribeClusters",
                json!({"clusters": [cluster], "include": ["SETTINGS", "STATISTICS", "TAGS"]}),
            ),
        )
    };
    let cluster_services = || -> Result<()> {
        describe_cluster()?;
        let arns = list_all(port, "ListServices", json!({"cluster": cluster, "maxResults": 100}), "serviceArns")?;
        describe_all(port, "DescribeServices", json!({"cluster": cluster}), "services", &arns, 10)?;
        Ok(())
    };
    // The Tasks tab shows a page of 100 tasks (js/pages/cluster.js); every task, 10 pages of
    // list and describe, is what it cost before it paged, kept as a reference.
    let cluster_tasks = || -> Result<()> {
        describe_cluster()?;
        let page = call(
            port,
            &Call::Ecs("ListTasks", json!({"cluster": cluster, "desiredStatus": "RUNNING", "maxResults": 100})),
        )?;
        let arns: Vec<String> =
            page["taskArns"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
        let n = describe_all(port, "DescribeTasks", json!({"cluster": cluster}), "tasks", &arns, 100)?;
        if n != 100 {
            bail!("the tasks tab described {n} tasks, not a page of 100");
        }
        Ok(())
    };
    let cluster_every_task = || -> Result<()> {
        describe_cluster()?;
        let arns = running_tasks()?;
        let n = describe_all(port, "DescribeTasks", json!({"cluster": cluster}), "tasks", &arns, 100)?;
        if n < tasks {
            bail!("described {n} tasks");
        }
        Ok(())
    };
    // The service view's poll: DescribeServices, ListTasks, DescribeTasks.
    let service_poll = || -> Result<()> {
        call(
            port,
            &Call::Ecs("DescribeServices", json!({"cluster": cluster, "services": ["web"], "include": ["TAGS"]})),
        )?;
        let arns = service_tasks()?;
        describe_all(port, "DescribeTasks", json!({"cluster": cluster}), "tasks", &arns, 100)?;
        Ok(())
    };
    let metrics = |end: f64| {
        let dims = json!([{"Name": "ClusterName", "Value": cluster}, {"Name": "ServiceName", "Value": "web"}]);
        let q = |id: &str, m: &str| json!({"Id": id, "MetricStat": {"Metric": {"Namespace": "AWS/ECS", "MetricName": m, "Dimensions": dims}, "Period": 60, "Stat": "Average"}, "ReturnData": true});
        Call::Cw(
            "GetMetricData",
            json!({"StartTime": end - 3600.0, "EndTime": end, "MetricDataQueries": [q("cpu", "CPUUtilization"), q("memory", "MemoryUtilization")]}),
        )
    };
    let service = || -> Result<()> {
        service_poll()?;
        call(port, &Call::Ecs("DescribeTaskDefinition", json!({"taskDefinition": "web:1"})))?;
        call(
            port,
            &Call::Logs(
                "FilterLogEvents",
                json!({"logGroupName": "/ecs/web", "logStreamNamePrefix": "ecs/web/", "startTime": ((now - 3600.0) * 1000.0) as i64, "limit": 1000}),
            ),
        )?;
        call(port, &metrics(now))?;
        Ok(())
    };
    let task = || -> Result<()> {
        call(port, &Call::Ecs("DescribeTasks", json!({"cluster": cluster, "tasks": [task_id], "include": ["TAGS"]})))?;
        call(port, &Call::Ecs("DescribeTaskDefinition", json!({"taskDefinition": "web:1"})))?;
        call(
            port,
            &Call::Logs(
                "FilterLogEvents",
                json!({"logGroupName": "/ecs/web", "logStreamNames": [format!("ecs/web/{task_id}")], "startTime": ((now - 3600.0) * 1000.0) as i64, "limit": 1000}),
            ),
        )?;
        Ok(())
    };
    let taskdefs = || -> Result<()> {
        list_all(port, "ListTaskDefinitionFamilies", json!({"status": "ACTIVE", "maxResults": 100}), "families")?;
        list_all(
            port,
            "ListTaskDefinitions",
            json!({"status": "ACTIVE", "sort": "DESC", "maxResults": 100}),
            "taskDefinitionArns",
        )?;
        Ok(())
    };
    let create_service = || -> Result<()> {
        call(port, &Call::Ecs("DescribeClusters", json!({"clusters": [cluster]})))?;
        list_all(port, "ListTaskDefinitionFamilies", json!({"status": "ACTIVE", "maxResults": 100}), "families")?;
        let vpcs = call(port, &Call::Ec2("DescribeVpcs", vec![]))?;
        let vpc =
            vpcs.as_str().and_then(|x| x.split("<vpcId>").nth(1)?.split('<').next()).context("no VPC")?.to_owned();
        let filter = vec![("Filter.1.Name", "vpc-id".to_owned()), ("Filter.1.Value.1", vpc)];
        call(port, &Call::Ec2("DescribeSubnets", filter.clone()))?;
        call(port, &Call::Ec2("DescribeSecurityGroups", filter))?;
        list_all(
            port,
            "ListTaskDefinitions",
            json!({"familyPrefix": "web", "status": "ACTIVE", "sort": "DESC", "maxResults": 100}),
            "taskDefinitionArns",
        )?;
        call(port, &Call::Ecs("DescribeTaskDefinition", json!({"taskDefinition": "web:1"})))?;
        Ok(())
    };
    let pages: Vec<(&str, &dyn Fn() -> Result<()>)> = vec![
        ("Clusters", &clusters),
        ("Cluster, Services tab", &cluster_services),
        ("Cluster, Tasks tab (a page of 100)", &cluster_tasks),
        ("(reference: every task, 10 pages)", &cluster_every_task),
        ("Service view (first load)", &service),
        ("Service view (each poll)", &service_poll),
        ("Task view", &task),
        ("Task definitions", &taskdefs),
        ("Create service form", &create_service),
    ];
    let mut rows = Vec::new();
    for (page, load) in &pages {
        load()?; // warm
        let mut t = Vec::new();
        for _ in 0..rounds {
            t.push(timed(load)?);
        }
        rows.push((page.to_string(), percentile(t.clone(), 0.5), percentile(t, 0.99)));
        eprintln!("{page}: p50 {:.1} ms", rows.last().unwrap().1);
    }

    // The first page's bytes: the HTML, then what it links and what the modules import.
    let (mut total, html) = get_bytes(port, "/")?;
    let prefix = "/_estiba/console/";
    let mut queue: Vec<String> =
        html.split(prefix).skip(1).filter_map(|p| p.split('"').next().map(str::to_owned)).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut files = 0;
    while let Some(f) = queue.pop() {
        if !seen.insert(f.clone()) {
            continue;
        }
        let (n, body) = get_bytes(port, &format!("{prefix}{f}"))?;
        total += n;
        files += 1;
        if f.ends_with(".js") {
            queue.extend(imports(&f, &body));
        }
    }
    let poll_p99 = rows.iter().find(|r| r.0.starts_with("Service view (each")).map_or(0.0, |r| r.2);

    let mut md = format!(
        "Command: `cargo xtask bench console --tasks {tasks} --rounds {rounds}`. A release server, `--local-node off`, \
         a cluster of {} tasks (RunTask 10 a call, plus a service of 10; they stay PROVISIONING). Each page's API \
         calls made in the order its module makes them, one connection per call, timed from request to answer; \
         a page's time is the sum over its calls, {rounds} loads each.\n\n\
         | Page | p50 (ms) | p99 (ms) | aim |\n|---|---:|---:|---|\n",
        listed.len()
    );
    for (page, p50, p99) in &rows {
        md.push_str(&format!("| {page} | {p50:.1} | {p99:.1} | < 20 ms |\n"));
    }
    md.push_str(&format!(
        "\nFirst page: {total} bytes ({:.0} KB) for `GET /` and {files} files it links and imports (no \
         compression: the server sends the files as they are); aim < 300 KB.\n\n\
         A task's state change in an open service view: the view asks every {POLL_MS:.0} ms, so it shows \
         within {:.0} ms (the interval plus one poll's p99, {poll_p99:.1} ms); test_console_run.py measures the \
         same in a browser.\n",
        total as f64 / 1024.0,
        POLL_MS + poll_p99
    ));
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_resolve_against_the_module() {
        let text = "import { h } from \"../ui.js\";\nimport * as a from \"./pages/a.js\";\nconst x = 1;\n";
        assert_eq!(imports("js/pages/x.js", text), vec!["js/ui.js".to_owned(), "js/pages/pages/a.js".to_owned()]);
        assert_eq!(imports("js/app.js", "import { h } from \"./ui.js\";\n"), vec!["js/ui.js".to_owned()]);
    }
}
