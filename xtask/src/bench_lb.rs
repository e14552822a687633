//! `cargo xtask bench lb`: the load balancer's data plane (estiba-lb, one proxy thread, an ALB
//! with one HTTP listener forwarding to one target group) beside HAProxy (`nbthread 1`, http
//! mode, keep-alive to the server) and nginx (`worker_processes 1`, HTTP/1.1 upstream
//! keep-alive), all in front of the same backend (nginx, one worker, a fixed 13-byte body),
//! in one run, peers interleaved round by round:
//!
//! - `wrk -t1 -c32 -d<seconds>s --latency` against the backend alone and through each proxy:
//!   requests per second, p50 and p99; the added latency at p50 is a proxy's p50 minus the
//!   backend's in the same round;
//! - the same with one connection (`-c1`, half as long): a proxy's own time per request,
//!   without the queueing 32 connections on 2 cores add;
//! - memory per idle keep-alive client connection: `--idle` connections (at most the
//!   descriptor limit, 20,000) each make one request and stay open; the proxy's resident set
//!   (all its processes) before and after, divided by their number.
//!
//! Every proxy sets `X-Forwarded-For` (estiba also `X-Forwarded-Proto`, `-Port` and
//! `X-Amzn-Trace-Id`, as ALB does). It runs as root in a network namespace of its own, on
//! loopback only; the load balancer runs as `crates/estiba-lb/examples/lb-bench.rs`, built
//! in release mode. With `LB_BENCH_BASE` (the isolated step's environment) naming another
//! build of that example, it is measured beside as `estiba-lb (base)`: a before and after.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{arg, median};
use crate::bench_run::{quiet, ISOLATED};

const BACKEND: u16 = 18080;
const BODY: &str = "hello, world\n";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        let rounds: usize = arg(args, "--rounds", 3);
        let seconds: u64 = arg(args, "--seconds", 10);
        let idle: usize = arg(args, "--idle", 2000);
        return crate::bench::in_workdir(root, "ebl", "lb", |work| measure(work, rounds, seconds, idle));
    }
    let uid = quiet(Command::new("id").arg("-u"))?;
    if uid != "0" {
        bail!("`cargo xtask bench lb` makes a network namespace: run it as root");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "-p", "estiba-lb", "--example", "lb-bench"])
        .current_dir(root)
        .status()?;
    if !st.success() {
        bail!("building the lb-bench example failed");
    }
    crate::bench::isolate(root, "lb", args, &[("LB_BENCH_BIN", &target_dir(root).join("release/examples/lb-bench"))])
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

struct Peer {
    name: &'static str,
    port: u16,
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        // TERM (nginx's master takes its workers with it), then reap.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// The peer's process and its children (nginx's workers).
    fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        let mut v = vec![pid];
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            v.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
        v
    }

    fn rss_kib(&self) -> u64 {
        self.pids().iter().map(|p| rss_kib(*p)).sum()
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One GET on a connection of its own; true on a 200 with the body.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n").is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.starts_with("HTTP/1.") && text.contains(" 200 ") && text.ends_with(BODY)
}

fn wait_answers(name: &str, port: u16) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if answers(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{name} does not answer on port {port}")
}

fn spawn(name: &'static str, port: u16, cmd: &mut Command) -> Result<Peer> {
    let child =
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().with_context(|| format!("starting {name}"))?;
    let peer = Peer { name, port, child };
    wait_answers(name, port)?;
    Ok(peer)
}

fn nginx_conf(work: &Path, name: &str, server: &str) -> Result<PathBuf> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    let d = dir.display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\nworker_rlimit_nofile 20000;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n{server}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

type Wrk = crate::bench::WrkResult;

fn wrk(port: u16, seconds: u64) -> Result<Wrk> {
    wrk_with(port, seconds, 32)
}

fn wrk_with(port: u16, seconds: u64, conns: u32) -> Result<Wrk> {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{conns}"), &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let r = crate::bench::parse_wrk(&text);
    if r.rps == 0.0 {
        bail!("wrk on port {port} measured nothing: {text}");
    }
    Ok(r)
}

/// The hard limit on descriptors (at most 20,000), made the soft one for this process and
/// the peers it starts.
fn raise_nofile() -> Result<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let hard: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4)?.parse().ok())
        .unwrap_or(1024);
    let n = hard.min(20_000);
    quiet(Command::new("prlimit").arg("--pid").arg(std::process::id().to_string()).arg(format!("--nofile={n}:{n}")))?;
    Ok(n)
}

/// KiB of resident memory per idle keep-alive connection: `n` connections, one request each.
fn idle_cost(peer: &Peer, n: usize) -> Result<f64> {
    std::thread::sleep(Duration::from_millis(300));
    let before = peer.rss_kib();
    let mut conns = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        let mut s =
            TcpStream::connect(("127.0.0.1", peer.port)).with_context(|| format!("connecting to {}", peer.name))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let mut got = Vec::new();
        while !got.ends_with(BODY.as_bytes()) {
            let k = s.read(&mut buf)?;
            if k == 0 {
                bail!("{} closed an idle connection", peer.name);
            }
            got.extend_from_slice(&buf[..k]);
        }
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = peer.rss_kib();
    drop(conns);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// The lb-bench example (`bin`) listening on `port`, in front of the backend.
fn start_lb(name: &'static str, bin: &Path, port: u16) -> Result<Peer> {
    let mut child = Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--target", &format!("127.0.0.1:{BACKEND}"), "--threads", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("lb-bench: {line}");
    }
    let p = Peer { name, port, child };
    wait_answers(p.name, p.port)?;
    Ok(p)
}

fn measure(work: &Path, rounds: usize, seconds: u64, idle: usize) -> Result<String> {
    let nofile = raise_nofile()?;
    let idle = idle.min(nofile.saturating_sub(200));
    let lb_bin = PathBuf::from(std::env::var_os("LB_BENCH_BIN").context("LB_BENCH_BIN")?);
    let nginx = |name: &'static str, port: u16, server: String| -> Result<Peer> {
        let conf = nginx_conf(work, name, &server)?;
        spawn(
            name,
            port,
            Command::new("nginx").arg("-p").arg(work.join(name)).arg("-e").arg("stderr").arg("-c").arg(conf),
        )
    };
    let backend = nginx(
        "backend",
        BACKEND,
        format!(
            "  server {{ listen 127.0.0.1:{BACKEND}; location / {{ default_type text/plain; return 200 \"{}\"; }} }}",
            BODY.escape_default()
        ),
    )?;
    let estiba = start_lb("estiba-lb", &lb_bin, 18081)?;
    let haproxy_cfg = work.join("haproxy.cfg");
    std::fs::write(
        &haproxy_cfg,
        format!(
            "global\n  nbthread 1\n  maxconn 9000\n\ndefaults\n  mode http\n  option http-keep-alive\n  option forwardfor\n  http-reuse always\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  timeout http-keep-alive 60s\n\nfrontend f\n  bind 127.0.0.1:18082\n  default_backend b\n\nbackend b\n  server s1 127.0.0.1:{BACKEND}\n"
        ),
    )?;
    let haproxy = spawn("haproxy", 18082, Command::new("haproxy").arg("-db").arg("-f").arg(&haproxy_cfg))?;
    let nginx_proxy = nginx(
        "nginx",
        18083,
        format!(
            "  upstream b {{ server 127.0.0.1:{BACKEND}; keepalive 64; keepalive_requests 100000000; }}\n  server {{ listen 127.0.0.1:18083; location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}"
        ),
    )?;
    // Another build of the example (`LB_BENCH_BASE`, e.g. main's) beside, for a before and after.
    let base = match std::env::var_os("LB_BENCH_BASE") {
        Some(bin) => Some(start_lb("estiba-lb (base)", Path::new(&bin), 18084)?),
        None => None,
    };
    let mut peers = vec![&backend, &estiba, &haproxy, &nginx_proxy];
    peers.extend(base.as_ref());
    let versions = format!(
        "{}; {}",
        quiet(Command::new("haproxy").arg("-v"))?.lines().next().unwrap_or(""),
        String::from_utf8_lossy(&Command::new("nginx").arg("-v").output()?.stderr).trim()
    );

    // Warm up (pools, caches), then the rounds.
    for p in &peers {
        wrk(p.port, 2)?;
    }
    let mut runs: Vec<Vec<Wrk>> = vec![Vec::new(); peers.len()];
    for round in 0..rounds {
        for (i, p) in peers.iter().enumerate() {
            let r = wrk(p.port, seconds)?;
            eprintln!(
                "round {round}: {:<10} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  errors {}",
                p.name, r.rps, r.p50_ms, r.p99_ms, r.errors
            );
            runs[i].push(r);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // One connection, one request at a time: the proxy's own time per request, no queueing.
    let mut single: Vec<Vec<Wrk>> = vec![Vec::new(); peers.len()];
    for _ in 0..rounds {
        for (i, p) in peers.iter().enumerate() {
            let r = wrk_with(p.port, seconds.div_ceil(2), 1)?;
            eprintln!(
                "one connection: {:<10} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
                p.name, r.rps, r.p50_ms, r.p99_ms
            );
            single[i].push(r);
        }
    }
    let mut mem = Vec::new();
    for p in &peers[1..] {
        let kib = idle_cost(p, idle)?;
        eprintln!("{:<10} {:.1} KiB per idle connection", p.name, kib);
        mem.push(kib);
    }

    let med = |i: usize, f: fn(&Wrk) -> f64| median(runs[i].iter().map(f).collect());
    let base_p50 = med(0, |w| w.p50_ms);
    let mut md = String::new();
    let single_p50 = |i: usize| median(single[i].iter().map(|w| w.p50_ms).collect());
    md.push_str("| | req/s | p50 | p99 | added p50 | p50, one connection | added p50, one connection | KiB per idle connection | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (i, p) in peers.iter().enumerate() {
        let added =
            if i == 0 { "—".to_string() } else { format!("{:.0} µs", (med(i, |w| w.p50_ms) - base_p50) * 1000.0) };
        let kib = if i == 0 { "—".to_string() } else { format!("{:.1}", mem[i - 1]) };
        let added1 =
            if i == 0 { "—".to_string() } else { format!("{:.0} µs", (single_p50(i) - single_p50(0)) * 1000.0) };
        let errors: u64 = runs[i].iter().map(|w| w.errors).sum();
        md.push_str(&format!(
            "| {} | {:.0} | {:.3} ms | {:.3} ms | {added} | {:.3} ms | {added1} | {kib} | {errors} |\n",
            if i == 0 { "backend alone" } else { p.name },
            med(i, |w| w.rps),
            med(i, |w| w.p50_ms),
            med(i, |w| w.p99_ms),
            single_p50(i),
        ));
    }
    let ratio = med(1, |w| w.rps) / med(2, |w| w.rps);
    md.push_str(&format!(
        "\nMedians of {rounds} rounds of `wrk -t1 -c32 -d{seconds}s --latency` per peer, peers interleaved; \
         idle connections: {idle}. estiba-lb / HAProxy req/s: {ratio:.2}×. Peers: {versions}. Machine: {} CPUs.\n\nPer round (req/s, p50 ms, p99 ms):\n\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    ));
    for (i, p) in peers.iter().enumerate() {
        let rs: Vec<String> =
            runs[i].iter().map(|w| format!("{:.0} / {:.3} / {:.3}", w.rps, w.p50_ms, w.p99_ms)).collect();
        md.push_str(&format!("- {}: {}\n", p.name, rs.join("; ")));
    }
    Ok(md)
}
