//! `cargo xtask bench <name>`: benchmarks that measure estiba beside its peers in one run,
//! and print a Markdown table for BENCHMARKS.md (also written under `bench-results/`).
//!
//! - `api`: the control plane on loopback with wrk (`-t2 -c8`, keep-alive; `--auth sigv4`
//!   signs every request and starts estiba with a credentials file), beside moto's
//!   server and fakecloud answering the same calls: ECS DescribeClusters, DescribeTasks (10
//!   tasks), ListTasks, RegisterTaskDefinition + RunTask writes, and one call of each other
//!   protocol: ELBv2 DescribeTargetGroups (AWS Query) and CloudWatch ListMetrics (RPC v2
//!   CBOR); plus idle resident memory and the time from process start to the first answered
//!   request. Each run also gives the server's CPU time per answered request; `--only CALL`
//!   runs the calls whose name holds CALL alone (for profiling one).
//! - `placement` (in `bench_placement`): RunTask placements per second on 10,000 container
//!   instances, with the SQLite and etcd stores.
//! - `failover` (in `bench_failover`): leader failover time over 20 `kill -9`s of the leader.
//! - `agent` (in `bench_agent`): RunTask → RUNNING on an agent host beside the server's own
//!   node.
//! - `memory`: estiba's resident memory per stored task document: RunTask until the store
//!   holds `--docs` task documents (100,000), then RSS against the idle server's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const TARGET: &str = "AmazonEC2ContainerServiceV20141113";
const AUTH: &str =
    "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/ecs/aws4_request, SignedHeaders=host;x-amz-date, Signature=0";

/// Printed for `--help` and for an unknown bench.
const USAGE: &str = "usage: cargo xtask bench api [--seconds N] [--rounds N] [--auth sigv4] [--only CALL]\n       cargo xtask bench memory [--docs N]\n       cargo xtask bench agent [--rounds N] [--bin PATH]\n       cargo xtask bench run [--rounds N] [--many N] [--pull-rounds N] [--peers docker,podman,skopeo]\n       cargo xtask bench registry [--rounds N] [--blob-mb N] [--image-mb N] [--rss-mb N]\n       cargo xtask bench services [--rounds N] [--scale N] [--roll N] [--peers swarm]\n       cargo xtask bench net [--rounds N] [--many N] [--peers docker]\n       cargo xtask bench dns [--rounds N] [--seconds N] [--samples N] [--sc-blocks N]\n       cargo xtask bench lb [--rounds N] [--seconds N] [--idle N]\n       cargo xtask bench lb-service [--tasks N] [--rate N] [--clients N]\n       cargo xtask bench logs [--rounds N] [--lines N] [--peers none] [--bin PATH]\n       cargo xtask bench metrics [--tasks N] [--seconds N] [--rounds N]\n       cargo xtask bench console [--tasks N] [--rounds N]\n       cargo xtask bench placement [--instances N] [--seconds N] [--clients N] [--stores sqlite,etcd]\n       cargo xtask bench failover [--kills N] [--servers N] [--members N] [--debug]";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    // Help before anything runs or builds.
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    // Placement has no peer to install: etcd is used when present.
    if args.first().map(String::as_str) == Some("placement") {
        return crate::bench_placement::run(root, &args[1..]);
    }
    if args.first().map(String::as_str) == Some("failover") {
        return crate::bench_failover::run(root, &args[1..]);
    }
    // The peers and tools first (not again inside `bench run`'s namespace, which is offline;
    // the console bench has no peers).
    if std::env::var_os(crate::bench_run::ISOLATED).is_none()
        && !matches!(args.first().map(String::as_str), Some("console" | "agent"))
    {
        let st = Command::new(root.join("scripts/install-bench-deps.sh")).status()?;
        if !st.success() {
            bail!("scripts/install-bench-deps.sh failed");
        }
    }
    match args.first().map(String::as_str) {
        Some("api") => api(root, &args[1..]),
        Some("memory") => memory(root, &args[1..]),
        Some("run") => crate::bench_run::run(root, &args[1..]),
        Some("agent") => crate::bench_agent::run(root, &args[1..]),
        Some("registry") => crate::bench_registry::run(root, &args[1..]),
        Some("services") => crate::bench_services::run(root, &args[1..]),
        Some("net") => crate::bench_net::run(root, &args[1..]),
        Some("dns") => crate::bench_dns::run(root, &args[1..]),
        Some("lb") => crate::bench_lb::run(root, &args[1..]),
        Some("logs") => crate::bench_logs::run(root, &args[1..]),
        Some("metrics") => crate::bench_metrics::run(root, &args[1..]),
        Some("lb-service") => crate::bench_lb_service::run(root, &args[1..]),
        Some("console") => crate::bench_console::run(root, &args[1..]),
        _ => bail!("{USAGE}"),
    }
}

/// Builds estiba in release mode (before the namespace: cargo may want the network), then
/// re-executes `cargo xtask bench <sub> <args>` as root in a network and mount namespace of
/// its own, so no packet leaves the machine and no mount outlives the run.
pub(crate) fn build_and_isolate(root: &Path, sub: &str, args: &[String]) -> Result<()> {
    let uid = Command::new("id").arg("-u").output().context("running id")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("`cargo xtask bench {sub}` starts containers or namespaces: run it as root");
    }
    crate::build::build(root, true)?;
    isolate(root, sub, args, &[])
}

/// Re-executes `cargo xtask bench <sub> <args>` in a network and mount namespace of its own,
/// with `envs` set besides the flag that says it is isolated.
pub(crate) fn isolate(root: &Path, sub: &str, args: &[String], envs: &[(&str, &Path)]) -> Result<()> {
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe()?)
        .args(["bench", sub])
        .args(args)
        .env(crate::bench_run::ISOLATED, "1")
        .current_dir(root);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let st = cmd.status().context("running unshare (util-linux)")?;
    if !st.success() {
        bail!("the benchmark failed");
    }
    Ok(())
}

/// Inside the namespace: brings loopback up, runs `measure` in a fresh `/tmp/<prefix>-<pid>`
/// (short: dockerd's exec root holds unix sockets, whose paths are limited to 108 bytes),
/// removes it, prints the report and keeps it as `bench-results/<name>.md`.
pub(crate) fn in_workdir(
    root: &Path,
    prefix: &str,
    name: &str,
    measure: impl FnOnce(&Path) -> Result<String>,
) -> Result<()> {
    crate::bench_run::quiet(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    let work = PathBuf::from(format!("/tmp/{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = measure(&work);
    let _ = std::fs::remove_dir_all(&work);
    let md = result?;
    println!("{md}");
    let out = root.join("bench-results");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join(format!("{name}.md")), &md)?;
    Ok(())
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One POST with a fresh connection; returns (status, body).
/// One AWS JSON 1.1 call to another API than ECS: `signing` is its SigV4 service name,
/// `target` its `X-Amz-Target` prefix.
pub(crate) fn post_to(port: u16, signing: &str, target: &str, op: &str, body: &str) -> Result<(u16, String)> {
    let auth = AUTH.replace("/ecs/", &format!("/{signing}/"));
    raw_post(
        port,
        &format!("Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: {target}.{op}\r\nAuthorization: {auth}"),
        body,
    )
}

/// One AWS JSON 1.0 call in query-compatible mode (what boto3 sends CloudWatch): `signing`
/// is its SigV4 service name, `target` its `X-Amz-Target` prefix.
pub(crate) fn post_json10(port: u16, signing: &str, target: &str, op: &str, body: &str) -> Result<(u16, String)> {
    raw_post(
        port,
        &format!(
            "Content-Type: application/x-amz-json-1.0\r\nX-Amz-Target: {target}.{op}\r\nx-amzn-query-mode: true\r\nAuthorization: {}",
            auth_for(signing)
        ),
        body,
    )
}

/// One AWS Query call (form-encoded `Action=<op>&Version=<version>&<params>`, what boto3 and
/// the AWS CLI send to ELBv2 and EC2): `signing` is its SigV4 service name. Returns (status,
/// XML body).
pub(crate) fn post_query(
    port: u16,
    signing: &str,
    version: &str,
    op: &str,
    params: &[(&str, &str)],
) -> Result<(u16, String)> {
    let mut body = format!("Action={op}&Version={version}");
    for (k, v) in params {
        body.push_str(&format!("&{}={}", form_encode(k), form_encode(v)));
    }
    raw_post(
        port,
        &format!(
            "Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\nAuthorization: {}",
            auth_for(signing)
        ),
        &body,
    )
}

/// `application/x-www-form-urlencoded` escaping: unreserved characters stay, the rest is %XX.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn post(port: u16, op: &str, body: &str) -> Result<(u16, String)> {
    raw_post(
        port,
        &format!("Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: {TARGET}.{op}\r\nAuthorization: {AUTH}"),
        body,
    )
}

fn raw_post(port: u16, headers: &str, body: &str) -> Result<(u16, String)> {
    raw_post_to(port, "/", headers, body.as_bytes())
}

fn raw_post_to(port: u16, path: &str, headers: &str, body: &[u8]) -> Result<(u16, String)> {
    let headers = sign(port, path, headers, body);
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    // Chunked bodies (moto) carry size lines; the benchmark only needs the JSON inside.
    Ok((status, body))
}

pub(crate) fn wait_ready(port: u16, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok((200, _)) = post(port, "ListClusters", "{}") {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    bail!("no answer on port {port} within {timeout:?}")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (ns) all threads of a process have used, from the scheduler's own accounting
/// (`/proc/<pid>/task/*/schedstat`; `stat`'s clock ticks are too coarse to see a short burst).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time (ns) a process has used, threads that have exited included (`/proc/<pid>/stat`'s
/// utime and stime, in clock ticks of 10 ms: for runs of seconds; [`cpu_ns`] sees short bursts
/// but only the threads alive when it reads).
fn process_cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces: state is
    // the first, utime the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    ticks * 10_000_000
}

/// Time the hypervisor took from this VM's CPUs (`steal` of /proc/stat, in clock ticks of
/// 10 ms): printed with each run, it tells a tail the machine caused from one the peer did.
fn steal_ticks() -> u64 {
    cpu_fields().get(7).copied().unwrap_or(0)
}

/// The clock ticks of all CPUs so far, by kind: /proc/stat's first line (user nice system idle
/// iowait irq softirq steal guest guest_nice); empty when it cannot be read.
fn cpu_fields() -> Vec<u64> {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect()
}

/// Busy and total clock ticks of all CPUs so far (idle and iowait count as idle).
fn cpu_ticks() -> (u64, u64) {
    let v = cpu_fields();
    // Up to steal: guest time is within user already.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Waits (at most 5 s) until the machine is quiet: written dirty pages out (`sync`), then until
/// its CPUs are idle 90 % of three 100 ms windows in a row. For benches whose runs leave work
/// behind them (the log store sealing what a task logged, the page cache's writeback of its
/// files: either can pause for longer than one window), which would otherwise be charged to
/// whichever run comes next.
pub(crate) fn settle_machine() {
    let _ = Command::new("sync").status();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut quiet = 0;
    while quiet < 3 && Instant::now() < deadline {
        let (b0, t0) = cpu_ticks();
        std::thread::sleep(Duration::from_millis(100));
        let (b1, t1) = cpu_ticks();
        let (busy, total) = (b1.saturating_sub(b0), t1.saturating_sub(t0));
        quiet = if total == 0 || busy * 10 <= total { quiet + 1 } else { 0 };
    }
}

/// Waits (at most 10 s) until none of `peers` uses more than 1% of a CPU over 200 ms. A
/// peer still busy after the previous run (a backlog, background work) would otherwise share
/// the cores with the next run, and its tail would be charged to the peer measured then. Only
/// the peers' own threads are counted: processes they start are not (see `fakecloud_cmd`).
fn settle(peers: &[Peer]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let window = Duration::from_millis(200);
    loop {
        let before: Vec<u64> = peers.iter().map(|p| cpu_ns(p.child.id())).collect();
        std::thread::sleep(window);
        let busy = peers.iter().zip(&before).any(|(p, b)| cpu_ns(p.child.id()).saturating_sub(*b) > 2_000_000);
        if !busy || Instant::now() > deadline {
            return;
        }
    }
}

struct Peer {
    name: &'static str,
    child: Child,
    port: u16,
    startup: Duration,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, cmd: &mut Command, port: u16) -> Result<Peer> {
    let started = Instant::now();
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().with_context(|| format!("starting {name}"))?;
    let mut peer = Peer { name, child, port, startup: Duration::ZERO };
    wait_ready(port, Duration::from_secs(60))?;
    peer.startup = started.elapsed();
    Ok(peer)
}

fn estiba_cmd(bin: &Path, port: u16, dir: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(dir).env("ESTIBA_LOG", "warn");
    with_credentials(&mut c);
    c
}

fn find_fakecloud() -> Option<PathBuf> {
    std::env::var_os("FAKECLOUD_BIN")
        .map(PathBuf::from)
        .or_else(|| which("fakecloud"))
        .or_else(|| Some(PathBuf::from("/work/peers/fakecloud/bin/fakecloud")).filter(|p| p.exists()))
}

/// fakecloud as a control plane alone, like estiba's `--local-node off`. It would run ECS
/// tasks with the first container CLI it finds (podman and docker are installed here for the
/// tasks benchmark): one CLI process per task, which outlive fakecloud and load the machine
/// during the next runs. With no CLI its tasks stay PROVISIONING, as estiba's do.
fn fakecloud_cmd(fc: &Path, port: u16, cpu: Option<u32>) -> Command {
    let mut c = pinned(fc, cpu);
    c.args(["--addr", &format!("127.0.0.1:{port}"), "--log-level", "error"])
        .env("FAKECLOUD_CONTAINER_CLI", "/nonexistent/container-cli");
    c
}

/// moto's server from the venv install-bench-deps.sh makes (never Debian's python: its
/// awscli breaks on the cryptography moto brings), else from PATH.
fn find_moto(root: &Path) -> Option<PathBuf> {
    Some(root.join("target/bench-venv/bin/moto_server")).filter(|p| p.exists()).or_else(|| which("moto_server"))
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

/// One request wrk sends: path, header lines (`Name: value` joined by CRLF, with the
/// placeholder `Authorization` naming the service's scope) and body.
#[derive(Clone)]
struct Req {
    path: &'static str,
    headers: String,
    body: Vec<u8>,
}

/// An ECS call (AWS JSON 1.1).
fn ecs_req(op: &str, body: &str) -> Req {
    Req {
        path: "/",
        headers: format!(
            "Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: {TARGET}.{op}\r\nAuthorization: {AUTH}"
        ),
        body: body.as_bytes().to_vec(),
    }
}

fn auth_for(service: &str) -> String {
    format!("AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=0")
}

/// ELBv2 DescribeTargetGroups in AWS Query (what boto3 and the AWS CLI send).
fn elbv2_query() -> Req {
    Req {
        path: "/",
        headers: format!(
            "Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\nAuthorization: {}",
            auth_for("elasticloadbalancing")
        ),
        body: b"Action=DescribeTargetGroups&Version=2015-12-01".to_vec(),
    }
}

/// CloudWatch ListMetrics in Smithy RPC v2 CBOR (what newer SDKs send): `{"Namespace": "AWS/ECS"}`.
fn cloudwatch_cbor() -> Req {
    let mut body = vec![0xa1, 0x69];
    body.extend_from_slice(b"Namespace");
    body.push(0x67);
    body.extend_from_slice(b"AWS/ECS");
    Req {
        path: "/service/GraniteServiceVersion20100801/operation/ListMetrics",
        headers: format!(
            "Content-Type: application/cbor\r\nAccept: application/cbor\r\nsmithy-protocol: rpc-v2-cbor\r\nAuthorization: {}",
            auth_for("monitoring")
        ),
        body,
    }
}

impl Req {
    /// Whether the peer answers the call with 200.
    fn answered(&self, port: u16) -> Result<u16> {
        Ok(raw_post_to(port, self.path, &self.headers, &self.body)?.0)
    }
}

/// The wrk script sending `reqs` to `port` in turn (signed now, with `--auth sigv4`: a
/// signature stays valid for 15 minutes, so scripts are written right before each run).
/// Bodies are written with Lua's decimal escapes (CBOR is binary).
fn lua(port: u16, reqs: &[Req]) -> String {
    let signed = |r: &Req| {
        let headers = sign(port, r.path, &r.headers, &r.body);
        let pairs: Vec<(String, String)> = headers
            .split("\r\n")
            .filter_map(|h| h.split_once(": ").map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let body: String = r.body.iter().map(|b| format!("\\{b}")).collect();
        (pairs, body)
    };
    if let [r] = reqs {
        // One request: wrk's static form, no Lua call per request.
        let (pairs, body) = signed(r);
        let mut out = format!("wrk.method = \"POST\"\nwrk.path = \"{}\"\n", r.path);
        for (k, v) in pairs {
            out.push_str(&format!("wrk.headers[\"{k}\"] = \"{v}\"\n"));
        }
        out.push_str(&format!("wrk.body = \"{body}\"\n"));
        return out;
    }
    let mut out = String::from("local reqs = {\n");
    for r in reqs {
        let (pairs, body) = signed(r);
        // `Host` written out: this table is built when the script loads, before wrk sets
        // `wrk.headers.Host` that `wrk.format` would copy, and a signature covers the host.
        let headers: String = std::iter::once(("Host".to_owned(), format!("127.0.0.1:{port}")))
            .chain(pairs)
            .map(|(k, v)| format!("[\"{k}\"] = \"{v}\", "))
            .collect();
        out.push_str(&format!("  wrk.format(\"POST\", \"{}\", {{{headers}}}, \"{body}\"),\n", r.path));
    }
    out.push_str("}\nlocal n = 0\nrequest = function()\n  n = n % #reqs + 1\n  return reqs[n]\nend\n");
    out
}

/// With `--auth sigv4` the API bench signs every request with this key (estiba is given it in
/// a credentials file; the peers do not check signatures and get the same bytes).
static SIGV4: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
const BENCH_KEY: (&str, &str, &str) = ("AKIABENCH00000000001", "bench/secret+key", "123456789012");
/// The credentials file holding [`BENCH_KEY`], given to every estiba the bench starts.
static CREDENTIALS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Turns signing on: writes the credentials file estiba is started with.
fn sign_with_bench_key(work: &Path) -> Result<()> {
    let (key, secret, account) = BENCH_KEY;
    let file = work.join("credentials");
    std::fs::write(
        &file,
        format!("[bench]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\naccount = {account}\n"),
    )?;
    let _ = CREDENTIALS.set(file);
    let _ = SIGV4.set(true);
    Ok(())
}

/// `--credentials FILE` for an estiba the bench starts, when it signs.
fn with_credentials(c: &mut Command) -> &mut Command {
    if let Some(f) = CREDENTIALS.get() {
        c.arg("--credentials").arg(f);
    }
    c
}

/// `headers` (`Name: value` lines joined by CRLF) of a `POST path` of `body` to
/// `127.0.0.1:port`, signed now with Signature Version 4 by [`BENCH_KEY`] when the bench signs
/// (the service taken from the placeholder `Authorization`'s scope), else as given. Written
/// out here (SHA-256 and HMAC from RustCrypto) so the bench does not sign with the verifier's
/// own code.
fn sign(port: u16, path: &str, headers: &str, body: &[u8]) -> String {
    if !SIGV4.get().copied().unwrap_or(false) {
        return headers.to_owned();
    }
    let (access_key, secret, _) = BENCH_KEY;
    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    sign_at(port, path, headers, body, &amz_date, access_key, secret)
}

#[allow(clippy::too_many_arguments)]
fn sign_at(
    port: u16,
    path: &str,
    headers: &str,
    body: &[u8],
    amz_date: &str,
    access_key: &str,
    secret: &str,
) -> String {
    use hmac::Mac as _;
    use sha2::Digest as _;
    let hmac = |key: &[u8], data: &str| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
        m.update(data.as_bytes());
        m.finalize().into_bytes().to_vec()
    };
    let mut service = "ecs".to_owned();
    let mut lines: Vec<(String, String)> = Vec::new();
    for (k, v) in headers.split("\r\n").filter_map(|h| h.split_once(": ")) {
        if k.eq_ignore_ascii_case("authorization") {
            // `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request, ...`
            service = v.split('/').nth(3).unwrap_or("ecs").to_owned();
        } else {
            lines.push((k.to_owned(), v.to_owned()));
        }
    }
    let date = &amz_date[..8];
    lines.push(("X-Amz-Date".into(), amz_date.to_owned()));
    let mut canon: Vec<(String, String)> = lines
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    canon.push(("host".into(), format!("127.0.0.1:{port}")));
    canon.sort();
    let names = canon.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let mut request = format!("POST\n{path}\n\n");
    for (k, v) in &canon {
        request.push_str(&format!("{k}:{v}\n"));
    }
    request.push_str(&format!("\n{names}\n{}", hex::encode(sha2::Sha256::digest(body))));
    let scope = format!("{date}/us-east-1/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(sha2::Sha256::digest(&request)));
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date);
    for part in ["us-east-1", service.as_str(), "aws4_request"] {
        key = hmac(&key, part);
    }
    let signature = hex::encode(hmac(&key, &to_sign));
    lines.push((
        "Authorization".into(),
        format!("AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={names}, Signature={signature}"),
    ));
    lines.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("\r\n")
}

/// `subnet: None` is the variant for moto, which crashes creating awsvpc tasks (moto 5.2.1:
/// `'NetworkInterface' object has no attribute 'private_dns_name'`): bridge mode, and RunTask
/// without a network configuration (moto does not check Fargate's rules).
fn taskdef_body(fam: &str, awsvpc: bool) -> String {
    // moto turns requiresCompatibilities FARGATE into awsvpc, so its variant leaves it out.
    let (mode, requires) =
        if awsvpc { ("awsvpc", r#","requiresCompatibilities":["FARGATE"]"#) } else { ("bridge", "") };
    format!(
        r#"{{"family":"{fam}","networkMode":"{mode}"{requires},"cpu":"256","memory":"512","containerDefinitions":[{{"name":"app","image":"busybox","essential":true,"cpu":256,"memory":512}}]}}"#
    )
}

fn run_task_body(cluster: &str, fam: &str, count: u32, subnet: Option<&str>) -> String {
    let net = match subnet {
        Some(s) => format!(
            r#","networkConfiguration":{{"awsvpcConfiguration":{{"subnets":["{s}"],"securityGroups":["sg-12345678"]}}}}"#
        ),
        None => String::new(),
    };
    format!(r#"{{"cluster":"{cluster}","taskDefinition":"{fam}","count":{count},"launchType":"FARGATE"{net}}}"#)
}

/// The write benchmark's requests: RegisterTaskDefinition and RunTask in turn.
fn writes(fam: &str, cluster: &str, subnet: Option<&str>) -> Vec<Req> {
    vec![
        ecs_req("RegisterTaskDefinition", &taskdef_body(fam, subnet.is_some())),
        ecs_req("RunTask", &run_task_body(cluster, fam, 1, subnet)),
    ]
}

#[derive(Debug, Default, Clone)]
pub(crate) struct WrkResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub requests: u64,
    /// CPU time the server's own threads used per answered request (µs), where the bench
    /// measured it: what the server costs, apart from whether wrk or the server set the pace.
    pub server_us: Option<f64>,
}

/// What wrk printed (with `--latency`): requests per second, p50 and p99, errors (non-2xx/3xx
/// answers and socket errors), requests.
pub(crate) fn parse_wrk(text: &str) -> WrkResult {
    let mut r = WrkResult::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if t.starts_with("Socket errors:") {
            r.errors += t.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).sum::<u64>();
        } else if t.contains(" requests in ") {
            r.requests = t.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    r
}

pub(crate) fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(0.0)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

fn wrk(port: u16, script: &Path, seconds: u64, cpu: Option<u32>) -> Result<WrkResult> {
    let out = pinned(Path::new("wrk"), cpu)
        .args(["-t2", "-c8", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk (apt-get install wrk)")?;
    Ok(parse_wrk(&String::from_utf8_lossy(&out.stdout)))
}

pub(crate) fn json_of(b: &str) -> Result<serde_json::Value> {
    let start = b.find('{').unwrap_or(0);
    let end = b.rfind('}').map_or(b.len(), |e| e + 1);
    serde_json::from_str(&b[start..end]).with_context(|| format!("not JSON: {b}"))
}

/// The data the read benchmarks use on one peer.
struct Setup {
    task_arns: Vec<String>,
    /// The ListTasks `desiredStatus` under which this peer lists the 10 tasks: RUNNING where
    /// they wait to run, STOPPED where the peer stopped them at once (fakecloud, no Docker).
    listed_as: &'static str,
    subnet: Option<String>,
}

/// Creates the cluster, the task definition and 10 tasks the read benchmarks use, and checks
/// that the peer lists them.
fn setup(port: u16, subnet: Option<String>) -> Result<Setup> {
    let (s, b) = post(port, "CreateCluster", r#"{"clusterName":"bench"}"#)?;
    if s != 200 {
        bail!("CreateCluster: {s} {b}");
    }
    let (s, b) = post(port, "RegisterTaskDefinition", &taskdef_body("bench", subnet.is_some()))?;
    if s != 200 {
        bail!("RegisterTaskDefinition: {s} {b}");
    }
    let (s, b) = post(port, "RunTask", &run_task_body("bench", "bench", 10, subnet.as_deref()))?;
    if s != 200 {
        bail!("RunTask: {s} {b}");
    }
    let v = json_of(&b)?;
    let task_arns: Vec<String> =
        v["tasks"].as_array().into_iter().flatten().filter_map(|t| t["taskArn"].as_str().map(str::to_owned)).collect();
    if task_arns.len() != 10 {
        bail!("RunTask started {} tasks, not 10: {b}", task_arns.len());
    }
    for listed_as in ["RUNNING", "STOPPED"] {
        let (_, b) = post(port, "ListTasks", &format!(r#"{{"cluster":"bench","desiredStatus":"{listed_as}"}}"#))?;
        if json_of(&b)?["taskArns"].as_array().map_or(0, Vec::len) == 10 {
            return Ok(Setup { task_arns, listed_as, subnet });
        }
    }
    bail!("the peer lists none of its 10 tasks")
}

/// `--bin PATH`: a given build of estiba (its `estiba-shim` beside it) instead of
/// `target/release/estiba`, to compare two builds.
pub(crate) fn bin_arg(args: &[String]) -> Option<PathBuf> {
    args.iter().position(|a| a == "--bin").and_then(|i| args.get(i + 1)).map(PathBuf::from)
}

/// Re-runs the bench in its namespaces: with a given build as it is, else after building.
pub(crate) fn isolate_bin(root: &Path, sub: &str, args: &[String], bin: Option<&Path>) -> Result<()> {
    match bin {
        Some(_) => isolate(root, sub, args, &[]),
        None => build_and_isolate(root, sub, args),
    }
}

pub(crate) fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// `taskset -c <cpu> <program>` when pinning, else the program itself.
fn pinned(program: &Path, cpu: Option<u32>) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Per peer: its name, per call its runs, the status its tasks are listed under, and per
/// call why it was not run (empty when it was).
type ModeResults = (Vec<String>, Vec<Vec<Vec<WrkResult>>>, Vec<&'static str>, Vec<Vec<String>>);

const OPS: [&str; 6] = [
    "DescribeClusters",
    "DescribeTasks (10)",
    "ListTasks",
    "ELBv2 DescribeTargetGroups (Query)",
    "CloudWatch ListMetrics (RPC v2 CBOR)",
    "RegisterTaskDefinition + RunTask",
];

/// Runs every peer through every call `rounds` times, interleaved so that drifts of the
/// machine hit every peer alike. Returns per peer, per call, the runs.
fn api_mode(
    root: &Path,
    bin: &Path,
    work: &Path,
    seconds: u64,
    rounds: usize,
    pin: bool,
    only: Option<&str>,
) -> Result<ModeResults> {
    let server_cpu = pin.then_some(1);
    let mut peers: Vec<Peer> = Vec::new();
    {
        let port = free_port();
        let mut c = pinned(bin, server_cpu);
        // The control plane alone, as the peers: with a node its tasks would really start
        // (and, with the bench's unpullable image, stop), and the calls would race them.
        c.args(["server", "--local-node", "off", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(work.join(format!("estiba-{pin}")))
            .env("ESTIBA_LOG", "warn");
        peers.push(spawn("estiba", with_credentials(&mut c), port)?);
    }
    if let Some(fc) = find_fakecloud() {
        let port = free_port();
        peers.push(spawn("fakecloud", &mut fakecloud_cmd(&fc, port, server_cpu), port)?);
    } else {
        eprintln!("fakecloud not found (cargo install fakecloud, or set FAKECLOUD_BIN): skipped");
    }
    if let Some(moto) = find_moto(root) {
        let port = free_port();
        let mut c = pinned(&moto, server_cpu);
        c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        peers.push(spawn("moto", &mut c, port)?);
    } else {
        eprintln!("moto_server not found (pip install 'moto[server]'): skipped");
    }
    // Per peer, per call: the requests, or why the peer does not take part.
    let mut scripts: Vec<Vec<Result<Vec<Req>, String>>> = Vec::new();
    let mut listed = Vec::new();
    for p in &peers {
        let subnet = (p.name != "moto").then(|| "subnet-12345678".to_owned());
        match setup(p.port, subnet) {
            Ok(setup) => {
                let tasks = setup.task_arns.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(",");
                let mut calls = vec![
                    Ok(vec![ecs_req("DescribeClusters", r#"{"clusters":["bench"]}"#)]),
                    Ok(vec![ecs_req("DescribeTasks", &format!(r#"{{"cluster":"bench","tasks":[{tasks}]}}"#))]),
                    Ok(vec![ecs_req(
                        "ListTasks",
                        &format!(r#"{{"cluster":"bench","desiredStatus":"{}"}}"#, setup.listed_as),
                    )]),
                ];
                for call in [elbv2_query(), cloudwatch_cbor()] {
                    calls.push(match call.answered(p.port) {
                        Ok(200) => Ok(vec![call]),
                        Ok(status) => Err(format!("answers {status}")),
                        Err(e) => Err(format!("no answer: {e}")),
                    });
                }
                calls.push(Ok(writes("benchw", "bench", setup.subnet.as_deref())));
                let _ = post(p.port, "RegisterTaskDefinition", &taskdef_body("benchw", setup.subnet.is_some()));
                scripts.push(calls);
                listed.push(setup.listed_as);
            }
            Err(e) => {
                eprintln!("{}: setup failed: {e}", p.name);
                scripts.push(vec![Err("setup failed".into()); OPS.len()]);
                listed.push("-");
            }
        }
    }
    let mut results: Vec<Vec<Vec<WrkResult>>> = vec![vec![Vec::new(); OPS.len()]; peers.len()];
    // Writes last: they grow the state the reads would see.
    for (op, name) in OPS.iter().enumerate() {
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        for _ in 0..rounds {
            for (pi, p) in peers.iter().enumerate() {
                let Ok(reqs) = &scripts[pi][op] else { continue };
                let path = work.join(format!("{}-{pin}-{op}.lua", p.name));
                std::fs::write(&path, lua(p.port, reqs))?;
                settle(&peers);
                let steal = steal_ticks();
                let cpu = process_cpu_ns(p.child.id());
                let mut r = wrk(p.port, &path, seconds, pin.then_some(0))?;
                if r.requests > 0 {
                    r.server_us =
                        Some(process_cpu_ns(p.child.id()).saturating_sub(cpu) as f64 / 1000.0 / r.requests as f64);
                }
                eprintln!(
                    "{} {:10} {:34} {:>10.0} req/s  p50 {:.3} ms  p99 {:.3} ms  errors {}  server {:.1} µs/req  stolen {} ms",
                    if pin { "pinned" } else { "shared" },
                    p.name,
                    OPS[op],
                    r.rps,
                    r.p50_ms,
                    r.p99_ms,
                    r.errors,
                    r.server_us.unwrap_or(0.0),
                    (steal_ticks() - steal) * 10
                );
                results[pi][op].push(r);
            }
        }
    }
    let why: Vec<Vec<String>> = scripts
        .iter()
        .map(|calls| calls.iter().map(|c| c.as_ref().err().cloned().unwrap_or_default()).collect())
        .collect();
    Ok((peers.iter().map(|p| p.name.to_string()).collect(), results, listed, why))
}

/// A Markdown table of the calls by peer: the header names each peer with `unit`, `cell(peer,
/// call)` fills the cells; a call no peer has a cell for (left out by `--only`) has no row.
fn ops_table(names: &[String], unit: &str, cell: impl Fn(usize, usize) -> String) -> String {
    let mut md = String::from("| call | ");
    md.push_str(&names.iter().map(|n| format!("{n} {unit}")).collect::<Vec<_>>().join(" | "));
    md.push_str(" |\n|---|");
    md.push_str(&names.iter().map(|_| "---:").collect::<Vec<_>>().join("|"));
    md.push_str("|\n");
    for (op, name) in OPS.iter().enumerate() {
        let cells: Vec<String> = (0..names.len()).map(|p| cell(p, op)).collect();
        if cells.iter().any(|c| !c.is_empty()) {
            md.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
        }
    }
    md
}

fn table(names: &[String], results: &[Vec<Vec<WrkResult>>], why: &[Vec<String>]) -> String {
    ops_table(names, "req/s (p99 ms)", |p, op| {
        let rs = &results[p][op];
        if rs.is_empty() {
            return why[p][op].clone();
        }
        let errors: u64 = rs.iter().map(|r| r.errors).sum();
        let requests: u64 = rs.iter().map(|r| r.requests).sum();
        if errors * 2 > requests {
            return format!("failed ({errors} of {requests} errors)");
        }
        let rps = median(rs.iter().map(|r| r.rps).collect());
        let p99 = median(rs.iter().map(|r| r.p99_ms).collect());
        format!("{rps:.0} ({p99:.2}){}", if errors > 0 { format!(", {errors} errors") } else { String::new() })
    })
}

/// The server CPU time per request (µs, median of the runs) of every peer and call: on one core
/// each, wrk on its core may set the pace before the server is busy, and then only this tells
/// the servers' costs apart.
fn cpu_table(names: &[String], results: &[Vec<Vec<WrkResult>>]) -> String {
    ops_table(names, "µs/request", |p, op| {
        let us: Vec<f64> = results[p][op].iter().filter_map(|r| r.server_us).collect();
        if us.is_empty() {
            String::new()
        } else {
            format!("{:.1}", median(us))
        }
    })
}

/// `bench api` runs in a network namespace of its own like the others: it only talks over
/// loopback, but its peers are other projects' emulators, and one of them (fakecloud) would
/// start containers if it found a container CLI.
fn api(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(crate::bench_run::ISOLATED).is_none() {
        return build_and_isolate(root, "api", args);
    }
    let seconds: u64 = arg(args, "--seconds", 5);
    let rounds: usize = arg(args, "--rounds", 3);
    // `--only ListTasks`: the calls whose name holds this alone (for profiling one call).
    let only = match args.iter().position(|a| a == "--only") {
        None => None,
        Some(i) => match args.get(i + 1) {
            Some(o) if OPS.iter().any(|op| op.contains(o.as_str())) => Some(o.clone()),
            _ => bail!("--only takes part of a call's name: one of {}", OPS.join(", ")),
        },
    };
    let signed = match arg(args, "--auth", String::from("none")).as_str() {
        "none" => false,
        "sigv4" => true,
        other => bail!("--auth {other}: use none or sigv4"),
    };
    in_workdir(root, "eba", "api", |work| {
        if signed {
            sign_with_bench_key(work)?;
        }
        measure_api(root, work, seconds, rounds, only.as_deref())
    })
}

/// `bench memory`: a control plane alone (`--local-node off`, as the API bench runs it: no
/// node claims the tasks) given `--docs` task documents through RunTask (10 per call), then
/// its resident memory against the idle server's; fakecloud (a control plane alone too)
/// beside it, given the same calls.
fn memory(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(crate::bench_run::ISOLATED).is_none() {
        return build_and_isolate(root, "memory", args);
    }
    let docs: usize = arg(args, "--docs", 100_000);
    in_workdir(root, "ebm", "memory", |work| {
        let bin = root.join("target/release/estiba");
        let mut md = format!(
            "Command: `cargo xtask bench memory --docs {docs}`. Control planes alone (estiba `--local-node off`, \
             release build; fakecloud without a container CLI), given the same RunTask calls.\n\n\
             | | task documents | idle RSS (MiB) | RSS after (MiB) | bytes per task document | writing took |\n\
             |---|---:|---:|---:|---:|---:|\n"
        );
        let port = free_port();
        let mut c = Command::new(&bin);
        c.args(["server", "--local-node", "off", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(work.join("estiba"))
            .env("ESTIBA_LOG", "warn");
        md.push_str(&memory_row(spawn("estiba", &mut c, port)?, docs)?);
        if let Some(fc) = find_fakecloud() {
            let port = free_port();
            md.push_str(&memory_row(spawn("fakecloud", &mut fakecloud_cmd(&fc, port, None), port)?, docs)?);
        }
        Ok(md)
    })
}

/// Writes `docs` task documents to a started control plane; its row of the memory table.
fn memory_row(p: Peer, docs: usize) -> Result<String> {
    let setup = setup(p.port, Some("subnet-12345678".into()))?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_kib(p.child.id());
    let body = run_task_body("bench", "bench", 10, setup.subnet.as_deref());
    let started = Instant::now();
    let mut written = setup.task_arns.len();
    while written < docs {
        let (status, b) = post(p.port, "RunTask", &body)?;
        if status != 200 {
            bail!("{}: RunTask: {status} {b}", p.name);
        }
        written += 10;
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let full = rss_kib(p.child.id());
    let per_doc = (full.saturating_sub(idle) * 1024) as f64 / written as f64;
    Ok(format!(
        "| {} | {written} | {:.1} | {:.1} | {per_doc:.0} | {:.1} s |\n",
        p.name,
        idle as f64 / 1024.0,
        full as f64 / 1024.0,
        took.as_secs_f64()
    ))
}

fn measure_api(root: &Path, work: &Path, seconds: u64, rounds: usize, only: Option<&str>) -> Result<String> {
    let bin = root.join("target/release/estiba");

    // Start-up: process start to first answered request, and idle memory.
    let mut startups = Vec::new();
    let mut idle_rss = Vec::new();
    for i in 0..15 {
        let port = free_port();
        let dir = work.join(format!("start-{i}"));
        let p = spawn("estiba", &mut estiba_cmd(&bin, port, &dir), port)?;
        startups.push(p.startup.as_secs_f64() * 1000.0);
        if i < 3 {
            std::thread::sleep(Duration::from_secs(1));
            idle_rss.push(rss_kib(p.child.id()) as f64 / 1024.0);
        }
    }
    let mut peer_start = Vec::new();
    if let Some(fc) = find_fakecloud() {
        let port = free_port();
        let p = spawn("fakecloud", &mut fakecloud_cmd(&fc, port, None), port)?;
        std::thread::sleep(Duration::from_secs(1));
        peer_start.push(("fakecloud", p.startup.as_secs_f64() * 1000.0, rss_kib(p.child.id()) as f64 / 1024.0));
    }
    if let Some(moto) = find_moto(root) {
        let port = free_port();
        let mut c = Command::new(moto);
        c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let p = spawn("moto", &mut c, port)?;
        std::thread::sleep(Duration::from_secs(1));
        peer_start.push(("moto", p.startup.as_secs_f64() * 1000.0, rss_kib(p.child.id()) as f64 / 1024.0));
    }

    let signed = CREDENTIALS.get().is_some();
    let mut md = format!(
        "Command: `cargo xtask bench api --seconds {seconds} --rounds {rounds}{}{}`. wrk -t2 -c8 -d{seconds}s --latency \
         (keep-alive, loopback); release build; SQLite store with fsync on every commit. Each cell is the median of \
         {rounds} runs, peers interleaved; each run starts once every peer is idle (under 1% CPU for 200 ms).{}\n\n",
        if signed { " --auth sigv4" } else { "" },
        only.map(|o| format!(" --only {o}")).unwrap_or_default(),
        if signed {
            " Every request is signed (SigV4, signed right before each run and replayed by wrk within the 15 minutes a \
             signature is good for); estiba verifies each one (`--credentials`), the peers check none."
        } else {
            ""
        }
    );
    for pin in [false, true] {
        let (names, results, listed, why) = api_mode(root, &bin, work, seconds, rounds, pin, only)?;
        md.push_str(if pin {
            "\n**One core each** (server pinned to CPU 1 with `taskset`, wrk to CPU 0):\n\n"
        } else {
            "**Shared cores** (server and wrk on both CPUs, as the issue's reference numbers):\n\n"
        });
        md.push_str(&table(&names, &results, &why));
        md.push_str("\nCPU time of the server's own threads per answered request (median of the runs):\n\n");
        md.push_str(&cpu_table(&names, &results));
        // The size of estiba's state after the write runs (the file and its WAL): each write
        // request stores one document (a task definition revision or a task).
        let state = work.join(format!("estiba-{pin}"));
        let bytes: u64 = ["state.db", "state.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(state.join(f)).ok())
            .map(|m| m.len())
            .sum();
        let written: u64 = results[0][OPS.len() - 1].iter().map(|r| r.requests).sum();
        if written > 0 {
            md.push_str(&format!(
                "\nestiba's state file after the runs: {:.1} MB for {written} documents written ({:.0} bytes each).\n",
                bytes as f64 / 1e6,
                bytes as f64 / written as f64
            ));
        }
        if !pin {
            md.push_str(&format!(
                "\nEvery peer answers the same calls with the same 10 tasks; ListTasks uses the desiredStatus under which the peer lists them ({}). moto 5.2.1 crashes creating awsvpc tasks, so its task definitions use bridge mode and its RunTask calls carry no network configuration.\n",
                names.iter().zip(&listed).map(|(n, l)| format!("{n}: {l}")).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    md.push_str(&format!(
        "\n| | estiba | {} |\n|---|---:|{}\n| start → first answered request (ms) | {:.1} (median of {}) | {} |\n| idle resident memory (MiB) | {:.1} | {} |\n",
        peer_start.iter().map(|p| p.0).collect::<Vec<_>>().join(" | "),
        peer_start.iter().map(|_| "---:|").collect::<String>(),
        median(startups.clone()),
        startups.len(),
        peer_start.iter().map(|p| format!("{:.0}", p.1)).collect::<Vec<_>>().join(" | "),
        median(idle_rss),
        peer_start.iter().map(|p| format!("{:.1}", p.2)).collect::<Vec<_>>().join(" | "),
    ));
    Ok(md)
}

#[cfg(test)]
mod tests {
    #[test]
    fn signs_as_botocore_does() {
        // botocore 1.43's SigV4Auth over the same request at 2015-08-30T12:36:00Z.
        let headers = super::ecs_req("ListClusters", "{}").headers;
        let out = super::sign_at(
            4566,
            "/",
            &headers,
            b"{}",
            "20150830T123600Z",
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        );
        assert!(out.contains("X-Amz-Date: 20150830T123600Z"), "{out}");
        assert!(
            out.ends_with(
                "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/ecs/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
                 Signature=d6790525c868bb3acb14a8b95348bac16bfe1b9f09b3fb04aa0f92f0466f6fed"
            ),
            "{out}"
        );
    }
}
