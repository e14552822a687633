//! `cargo xtask bench dns`: the VPC resolver, beside dnsmasq (Debian) serving the same records
//! from a hosts file, both loaded by dnsperf (Debian) in one run, peers interleaved round by
//! round:
//!
//! - throughput: queries per second for a Cloud Map name (`api.bench.local`, three healthy
//!   instances, MULTIVALUE) with 4 clients over 2 threads and 200 queries in flight;
//! - latency at a fixed rate (20,000 queries per second, well under both peers' capacity):
//!   p50 and p99 of every query's time, from dnsperf's per-query report;
//! - the time from a service task RUNNING (DescribeTasks polled every 2 ms) to its name
//!   answering (a Cloud Map service `web` the ECS service registers its tasks in, polled every
//!   millisecond), one sample per task as the service scales from 1 to `--samples` tasks;
//! - Service Connect's added latency: HTTP GETs (a connection each) to a task directly and
//!   through its alias's VIP (the node's proxy), alternately in blocks of 100, `--sc-blocks`
//!   blocks each.
//!
//! It runs as root inside a network and mount namespace of its own: the resolver lives on the
//! VPC bridge there, dnsmasq on 127.0.0.2, and no query leaves.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::{arg, json_of, median, post, post_to};
use crate::bench_run::{ms, quiet, registry_with_images, start_estiba_node, Guard, ISOLATED};

pub(crate) const RESOLVER: &str = "172.31.0.2";
const DNSMASQ: &str = "127.0.0.2";
const NAME: &str = "api.bench.local";
const CLOUD_MAP: &str = "Route53AutoNaming_v20170314";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        let rounds: usize = arg(args, "--rounds", 3);
        let seconds: u64 = arg(args, "--seconds", 5);
        let samples: usize = arg(args, "--samples", 7);
        let sc_blocks: usize = arg(args, "--sc-blocks", 20);
        return crate::bench::in_workdir(root, "ebd", "dns", |work| {
            measure(root, work, rounds, seconds, samples, sc_blocks)
        });
    }
    crate::bench::build_and_isolate(root, "dns", args)
}

fn ecs(port: u16, op: &str, body: &str) -> Result<Value> {
    let (s, b) = post(port, op, body)?;
    if s != 200 {
        bail!("{op}: {s} {b}");
    }
    json_of(&b)
}

fn cloud_map(port: u16, op: &str, body: &str) -> Result<Value> {
    let (s, b) = post_to(port, "servicediscovery", CLOUD_MAP, op, body)?;
    if s != 200 {
        bail!("{op}: {s} {b}");
    }
    json_of(&b)
}

/// One A question over UDP; the addresses answered (empty on NXDOMAIN, NODATA or no answer).
pub(crate) fn a_records(server: &str, name: &str) -> Vec<[u8; 4]> {
    let Ok(s) = UdpSocket::bind("0.0.0.0:0") else { return vec![] };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if s.send_to(&q, (server, 53)).is_err() {
        return vec![];
    }
    let mut buf = [0u8; 1500];
    let Ok(n) = s.recv(&mut buf) else { return vec![] };
    let d = &buf[..n];
    if d.len() < 12 {
        return vec![];
    }
    let answers = u16::from_be_bytes([d[6], d[7]]);
    // Skip the header and the question (its name is ours, uncompressed).
    let mut i = 12 + name.len() + 2 + 4;
    let mut out = vec![];
    for _ in 0..answers {
        i = skip_name(d, i);
        // Type, class, TTL, length, then the data.
        if i + 10 > d.len() {
            break;
        }
        let rtype = u16::from_be_bytes([d[i], d[i + 1]]);
        let len = u16::from_be_bytes([d[i + 8], d[i + 9]]) as usize;
        if rtype == 1 && len == 4 && i + 14 <= d.len() {
            out.push([d[i + 10], d[i + 11], d[i + 12], d[i + 13]]);
        }
        i += 10 + len;
    }
    out
}

/// One HTTP/1.0 GET of `/` at `addr` (a new connection); fails unless the answer is 200.
fn http_get(addr: &str) -> Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_nodelay(true)?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = Vec::with_capacity(256);
    s.read_to_end(&mut out)?;
    if !out.starts_with(b"HTTP/1.0 200") && !out.starts_with(b"HTTP/1.1 200") {
        bail!("{addr} answered {:?}", String::from_utf8_lossy(&out[..out.len().min(40)]));
    }
    Ok(())
}

/// The index after the (possibly compressed) name at `i`.
fn skip_name(d: &[u8], mut i: usize) -> usize {
    while i < d.len() {
        match d[i] {
            0 => return i + 1,
            n if n & 0xC0 == 0xC0 => return i + 2,
            n => i += n as usize + 1,
        }
    }
    i
}

/// dnsperf's queries per second against `server` for `seconds`, and the queries it lost.
fn throughput(queries: &Path, server: &str, seconds: u64) -> Result<(f64, u64)> {
    let out =
        quiet(Command::new("dnsperf").args(["-s", server, "-l", &seconds.to_string(), "-c", "4", "-T", "2"]).args([
            "-q",
            "200",
            "-d",
            &queries.display().to_string(),
        ]))?;
    let field = |label: &str| -> Option<String> {
        out.lines().find_map(|l| l.trim().strip_prefix(label)).map(|v| v.split_whitespace().next().unwrap_or("").into())
    };
    let qps: f64 = field("Queries per second:").context("dnsperf printed no rate")?.parse()?;
    let lost: u64 = field("Queries lost:").and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((qps, lost))
}

/// p50 and p99 (ms) of every query's latency at a fixed rate, from dnsperf's per-query
/// lines (`> NOERROR api.bench.local A 0.000123`); the first half second is warm-up.
fn latency(queries: &Path, server: &str, seconds: u64) -> Result<(f64, f64, usize)> {
    let out = quiet(
        Command::new("dnsperf")
            .args(["-s", server, "-l", &seconds.to_string(), "-Q", "20000", "-v"])
            .args(["-d", &queries.display().to_string()]),
    )?;
    let mut lat: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("> NOERROR "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|s| s * 1e3)
        .collect();
    let warm = (lat.len() as f64 * 0.5 / seconds as f64) as usize;
    lat.drain(..warm.min(lat.len()));
    if lat.is_empty() {
        bail!("dnsperf reported no answered query from {server}");
    }
    let n = lat.len();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok((lat[n / 2], lat[(n * 99 / 100).min(n - 1)], n))
}

fn measure(root: &Path, work: &Path, rounds: usize, seconds: u64, samples: usize, sc_blocks: usize) -> Result<String> {
    let bin = root.join("target/release/estiba");
    let mut guard = Guard(Vec::new());
    let images = registry_with_images(root, work, &mut guard, false)?;
    let busybox = images["busybox"].as_str().context("no busybox image")?.to_owned();
    let port = start_estiba_node(&bin, work, &mut guard, &[])?;

    // Cloud Map: the namespace, a service with three instances for the load, and one the
    // ECS service registers its tasks in.
    let op = cloud_map(port, "CreatePrivateDnsNamespace", r#"{"Name":"bench.local","Vpc":"vpc-1"}"#)?;
    let op_id = op["OperationId"].as_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    let ns = loop {
        let o = cloud_map(port, "GetOperation", &format!(r#"{{"OperationId":"{op_id}"}}"#))?;
        if o["Operation"]["Status"] == "SUCCESS" {
            break o["Operation"]["Targets"]["NAMESPACE"].as_str().unwrap_or_default().to_owned();
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the namespace was not created");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let service = |name: &str| -> Result<(String, String)> {
        let s = cloud_map(
            port,
            "CreateService",
            &format!(
                r#"{{"Name":"{name}","NamespaceId":"{ns}","DnsConfig":{{"RoutingPolicy":"MULTIVALUE","DnsRecords":[{{"Type":"A","TTL":10}}]}}}}"#
            ),
        )?;
        Ok((
            s["Service"]["Id"].as_str().unwrap_or_default().into(),
            s["Service"]["Arn"].as_str().unwrap_or_default().into(),
        ))
    };
    let (api, _) = service("api")?;
    let (_, web_arn) = service("web")?;
    let mut hosts = String::new();
    for i in 1..=3 {
        cloud_map(
            port,
            "RegisterInstance",
            &format!(
                r#"{{"ServiceId":"{api}","InstanceId":"i{i}","Attributes":{{"AWS_INSTANCE_IPV4":"172.31.5.{i}"}}}}"#
            ),
        )?;
        hosts.push_str(&format!("172.31.5.{i} {NAME}\n"));
    }
    let started = Instant::now();
    while a_records(RESOLVER, NAME).len() != 3 {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the VPC resolver does not answer {NAME} at {RESOLVER}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // dnsmasq with the same records, on loopback.
    let hosts_file = work.join("hosts");
    std::fs::write(&hosts_file, hosts)?;
    let dnsmasq = Command::new("dnsmasq")
        .args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--port=53", "--user=root"])
        .args(["--pid-file=", "--log-facility=/dev/null", &format!("--listen-address={DNSMASQ}")])
        .arg(format!("--addn-hosts={}", hosts_file.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq (apt-get install dnsmasq-base)")?;
    guard.0.push(dnsmasq);
    let started = Instant::now();
    while a_records(DNSMASQ, NAME).len() != 3 {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("dnsmasq does not answer {NAME}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let queries = work.join("queries");
    std::fs::write(&queries, format!("{NAME} A\n"))?;

    let peers = [("estiba", RESOLVER), ("dnsmasq", DNSMASQ)];
    let mut qps = vec![vec![]; 2];
    let mut lost = [0u64; 2];
    let mut p50 = vec![vec![]; 2];
    let mut p99 = vec![vec![]; 2];
    let mut answered = [0usize; 2];
    for r in 0..rounds {
        for (i, (name, addr)) in peers.iter().enumerate() {
            let (q, l) = throughput(&queries, addr, seconds)?;
            let (a, b, n) = latency(&queries, addr, 3)?;
            eprintln!("round {r} {name}: {q:.0} q/s ({l} lost), p50 {a:.3} ms, p99 {b:.3} ms");
            qps[i].push(q);
            lost[i] += l;
            p50[i].push(a);
            p99[i].push(b);
            answered[i] += n;
        }
    }

    // RUNNING → resolvable, for the tasks of an ECS service registered in `web`.
    ecs(port, "CreateCluster", r#"{"clusterName":"dns"}"#)?;
    let serve = r#"["sh","-c","trap 'exit 0' TERM; while :; do sleep 1; done"]"#;
    ecs(
        port,
        "RegisterTaskDefinition",
        &format!(
            r#"{{"family":"bench-dns","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512","containerDefinitions":[{{"name":"app","image":"{busybox}","command":{serve},"stopTimeout":2}}]}}"#
        ),
    )?;
    ecs(
        port,
        "CreateService",
        &format!(
            r#"{{"cluster":"dns","serviceName":"web","taskDefinition":"bench-dns","desiredCount":0,"launchType":"FARGATE","networkConfiguration":{{"awsvpcConfiguration":{{"subnets":["subnet-1"]}}}},"serviceRegistries":[{{"registryArn":"{web_arn}"}}]}}"#
        ),
    )?;
    let mut to_dns = vec![];
    for n in 1..=samples {
        let origin = Instant::now();
        // The resolver side: the first time `n` addresses answer.
        let done = Arc::new(AtomicBool::new(false));
        let resolved: Arc<Mutex<Option<Duration>>> = Arc::default();
        let poller = {
            let (done, resolved) = (done.clone(), resolved.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if a_records(RESOLVER, "web.bench.local").len() >= n {
                        *resolved.lock().unwrap() = Some(origin.elapsed());
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        ecs(port, "UpdateService", &format!(r#"{{"cluster":"dns","service":"web","desiredCount":{n}}}"#))?;
        // The control plane side: the first time `n` tasks are RUNNING.
        let running = loop {
            let arns = ecs(port, "ListTasks", r#"{"cluster":"dns","serviceName":"web"}"#)?["taskArns"].clone();
            let count = if arns.as_array().is_some_and(|a| !a.is_empty()) {
                let d = ecs(port, "DescribeTasks", &format!(r#"{{"cluster":"dns","tasks":{arns}}}"#))?;
                d["tasks"].as_array().map_or(0, |t| t.iter().filter(|t| t["lastStatus"] == "RUNNING").count())
            } else {
                0
            };
            if count >= n {
                break origin.elapsed();
            }
            if origin.elapsed() > Duration::from_secs(60) {
                bail!("task {n} of service web did not start");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let waited = Instant::now();
        while resolved.lock().unwrap().is_none() && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        done.store(true, Ordering::Relaxed);
        let _ = poller.join();
        let Some(at) = *resolved.lock().unwrap() else { bail!("task {n}'s address never answered") };
        to_dns.push(ms(at) - ms(running));
    }
    ecs(port, "UpdateService", r#"{"cluster":"dns","service":"web","desiredCount":0}"#)?;

    // Service Connect: one task serving HTTP (busybox httpd, a connection per request), asked
    // directly at its address and through its alias's VIP, alternately, in blocks.
    let httpd = r#"["sh","-c","mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]"#;
    ecs(
        port,
        "RegisterTaskDefinition",
        &format!(
            r#"{{"family":"bench-sc","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512","containerDefinitions":[{{"name":"web","image":"{busybox}","command":{httpd},"stopTimeout":2,"portMappings":[{{"name":"http","containerPort":8080}}]}}]}}"#
        ),
    )?;
    ecs(
        port,
        "CreateService",
        r#"{"cluster":"dns","serviceName":"api","taskDefinition":"bench-sc","desiredCount":1,"launchType":"FARGATE","networkConfiguration":{"awsvpcConfiguration":{"subnets":["subnet-1"]}},"serviceConnectConfiguration":{"enabled":true,"namespace":"bench.local","services":[{"portName":"http","clientAliases":[{"port":8080,"dnsName":"api"}]}]}}"#,
    )?;
    let started = Instant::now();
    let task_ip = loop {
        let arns = ecs(port, "ListTasks", r#"{"cluster":"dns","serviceName":"api"}"#)?["taskArns"].clone();
        if arns.as_array().is_some_and(|a| !a.is_empty()) {
            let d = ecs(port, "DescribeTasks", &format!(r#"{{"cluster":"dns","tasks":{arns}}}"#))?;
            let t = &d["tasks"][0];
            let ip = t["attachments"][0]["details"]
                .as_array()
                .and_then(|ds| ds.iter().find(|x| x["name"] == "privateIPv4Address"))
                .and_then(|x| x["value"].as_str())
                .map(str::to_owned);
            if let (true, Some(ip)) = (t["lastStatus"] == "RUNNING", ip) {
                break ip;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the Service Connect task did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let vip = loop {
        if let Some(a) = a_records(RESOLVER, "api").first() {
            break std::net::Ipv4Addr::from(*a).to_string();
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the alias api does not resolve");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let direct_at = format!("{task_ip}:8080");
    let vip_at = format!("{vip}:8080");
    // Until both answer (the proxy's table reaches the node).
    while http_get(&vip_at).is_err() || http_get(&direct_at).is_err() {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("no answer through the alias {vip_at}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut direct, mut through) = (vec![], vec![]);
    for _ in 0..sc_blocks {
        for (at, out) in [(&direct_at, &mut direct), (&vip_at, &mut through)] {
            for _ in 0..100 {
                let t0 = Instant::now();
                http_get(at)?;
                out.push(t0.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    let pct = |v: &[f64], p: usize| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[(v.len() * p / 100).min(v.len() - 1)]
    };

    let mut md = format!(
        "Command: `cargo xtask bench dns --rounds {rounds} --seconds {seconds} --samples {samples} --sc-blocks \
         {sc_blocks}`. \
         dnsperf 2.10 (Debian) against estiba's VPC resolver (release build, at {RESOLVER} on the VPC bridge) and \
         dnsmasq (Debian, `--addn-hosts` with the same three records, at {DNSMASQ}), one name: `{NAME} A`, three \
         addresses. Throughput: `-c 4 -T 2 -q 200 -l {seconds}`, median of {rounds} rounds; latency: `-Q 20000 -l 3 \
         -v`, every query's time (the first half second dropped), median over rounds of each round's percentile. \
         Peers interleaved.\n\n\
         | | queries per second | lost | p50 at 20k q/s (ms) | p99 at 20k q/s (ms) | queries timed |\n\
         |---|---:|---:|---:|---:|---:|\n"
    );
    for (i, (name, _)) in peers.iter().enumerate() {
        md.push_str(&format!(
            "| {name} | {:.0} | {} | {:.3} | {:.3} | {} |\n",
            median(qps[i].clone()),
            lost[i],
            median(p50[i].clone()),
            median(p99[i].clone()),
            answered[i]
        ));
    }
    md.push_str(&format!(
        "\nService Connect: {n} HTTP GETs each (busybox httpd, a new connection per request, from the host's \
         side of the VPC bridge), to the task's address and through the alias's VIP (estiba's node proxy), \
         alternately in blocks of 100.\n\n\
         | | p50 (µs) | p99 (µs) |\n|---|---:|---:|\n\
         | task directly | {:.0} | {:.0} |\n| through Service Connect | {:.0} | {:.0} |\n\
         | added by Service Connect | {:.0} | {:.0} |\n",
        pct(&direct, 50),
        pct(&direct, 99),
        pct(&through, 50),
        pct(&through, 99),
        pct(&through, 50) - pct(&direct, 50),
        pct(&through, 99) - pct(&direct, 99),
        n = direct.len(),
    ));
    let mut sorted = to_dns.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    md.push_str(&format!(
        "\nTask RUNNING (DescribeTasks, polled every 2 ms) → its address answers `web.bench.local` (polled every \
         1 ms), {samples} tasks of an ECS service with `serviceRegistries`: median {:.1} ms, max {:.1} ms \
         (each: {}).\n",
        median(to_dns.clone()),
        sorted.last().copied().unwrap_or(0.0),
        to_dns.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(", ")
    ));
    Ok(md)
}
