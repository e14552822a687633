//! `cargo xtask bench registry`: estiba's registry (`/v2/`) beside Debian's `docker-registry`
//! (the reference distribution registry), both on loopback, in one run:
//!
//! - a 200 MB blob uploaded with one monolithic PUT (curl), and downloaded (curl);
//! - `skopeo copy` of a 500 MB image of five layers, push and pull;
//! - the registry's peak resident memory while a 1 GB blob is pushed.
//!
//! Like `bench run`, it re-executes itself in a network namespace of its own.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bench::{arg, free_port, median, wait_ready, which};
use crate::bench_run::{ms, quiet, start_registry, Guard, ISOLATED};

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if std::env::var_os(ISOLATED).is_some() {
        return isolated(root, args);
    }
    crate::bench::build_and_isolate(root, "registry", args)
}

/// `n` bytes of pseudo-random data (xorshift: incompressible enough, and fast to make).
fn random_file(path: &Path, n: u64, seed: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let k = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..k])?;
        left -= k as u64;
    }
    f.flush()?;
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String> {
    let out = quiet(Command::new("sha256sum").arg(path))?;
    Ok(format!("sha256:{}", out.split_whitespace().next().unwrap_or_default()))
}

/// One registry under test.
struct Target {
    name: &'static str,
    base: String,
    pid: u32,
}

impl Target {
    /// Starts an upload and returns its absolute location.
    fn start_upload(&self, repo: &str) -> Result<String> {
        let out = quiet(
            Command::new("curl")
                .args(["-s", "-D", "-", "-o", "/dev/null", "-X", "POST"])
                .arg(format!("{}/v2/{repo}/blobs/uploads/", self.base)),
        )?;
        let loc = out
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.trim()))
            .with_context(|| format!("{}: no Location in {out}", self.name))?;
        Ok(if loc.starts_with('/') { format!("{}{loc}", self.base) } else { loc.to_owned() })
    }

    /// Uploads `file` with one PUT; returns the time the PUT took.
    fn put_blob(&self, repo: &str, file: &Path, digest: &str) -> Result<Duration> {
        let loc = self.start_upload(repo)?;
        let sep = if loc.contains('?') { '&' } else { '?' };
        let mut put = Command::new("curl");
        put.args([
            "-s",
            "-f",
            "-o",
            "/dev/null",
            "-H",
            "Expect:",
            "-H",
            "Content-Type: application/octet-stream",
            "-T",
        ])
        .arg(file)
        .arg(format!("{loc}{sep}digest={digest}"));
        let t = Instant::now();
        quiet(&mut put).with_context(|| format!("{}: upload", self.name))?;
        Ok(t.elapsed())
    }

    fn get_blob(&self, repo: &str, digest: &str) -> Result<Duration> {
        let t = Instant::now();
        quiet(
            Command::new("curl")
                .args(["-s", "-f", "-o", "/dev/null"])
                .arg(format!("{}/v2/{repo}/blobs/{digest}", self.base)),
        )?;
        Ok(t.elapsed())
    }

    /// CPU time the registry process has used (user + system), in ms.
    fn cpu_ms(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the parenthesised command: utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe {
            libc_sysconf(2 /* _SC_CLK_TCK */)
        } as f64;
        (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) * 1000.0 / hz.max(1.0)
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

extern "C" {
    #[link_name = "sysconf"]
    fn libc_sysconf(name: i32) -> i64;
}

/// An OCI image layout of `layers` uncompressed layers of `size` random bytes each.
fn oci_layout(dir: &Path, layers: usize, size: u64, seed: u64) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let content = dir.join(format!("layer{i}.bin"));
        random_file(&content, size, seed.wrapping_mul(0x9E37_79B9) + i as u64)?;
        let tar = dir.join(format!("layer{i}.tar"));
        quiet(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(dir).arg(format!("layer{i}.bin")))?;
        std::fs::remove_file(&content)?;
        let d = sha256_of(&tar)?;
        let len = std::fs::metadata(&tar)?.len();
        std::fs::rename(&tar, blobs.join(&d[7..]))?;
        descs
            .push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len}));
        diff_ids.push(d);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let put = |data: &[u8]| -> Result<(String, usize)> {
        let p = dir.join("tmp.json");
        std::fs::write(&p, data)?;
        let d = sha256_of(&p)?;
        std::fs::rename(&p, blobs.join(&d[7..]))?;
        Ok((d, data.len()))
    };
    let (cd, cl) = put(&config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cl},
        "layers": descs,
    }))?;
    let (md, ml) = put(&manifest)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ml,
        "annotations": {"org.opencontainers.image.ref.name": "big"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

fn create_repository(port: u16, name: &str) -> Result<()> {
    quiet(
        Command::new("curl")
            .args([
                "-s",
                "-f",
                "-X",
                "POST",
                "-H",
                "X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.CreateRepository",
            ])
            .args(["-H", "Content-Type: application/x-amz-json-1.1", "-d"])
            .arg(format!(r#"{{"repositoryName":"{name}"}}"#))
            .arg(format!("http://127.0.0.1:{port}/")),
    )?;
    Ok(())
}

fn isolated(root: &Path, args: &[String]) -> Result<()> {
    let rounds: usize = arg(args, "--rounds", 3);
    let blob_mb: u64 = arg(args, "--blob-mb", 200);
    let image_mb: u64 = arg(args, "--image-mb", 500);
    let rss_mb: u64 = arg(args, "--rss-mb", 1024);
    crate::bench::in_workdir(root, "ebg", "registry", |work| measure(root, work, rounds, blob_mb, image_mb, rss_mb))
}

fn measure(root: &Path, work: &Path, rounds: usize, blob_mb: u64, image_mb: u64, rss_mb: u64) -> Result<String> {
    let mut guard = Guard(Vec::new());
    let (reference, ref_port) = start_registry(work)?;
    let ref_pid = reference.id();
    guard.0.push(reference);
    let port = free_port();
    let server = Command::new(root.join("target/release/estiba"))
        .args(["server", "--local-node", "off", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(work.join("estiba"))
        .env("ESTIBA_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = server.id();
    guard.0.push(server);
    wait_ready(port, Duration::from_secs(30))?;
    for repo in ["bench/blob", "bench/big"] {
        create_repository(port, repo)?;
    }
    let targets = [
        Target { name: "estiba", base: format!("http://127.0.0.1:{port}"), pid },
        Target { name: "docker-registry", base: format!("http://127.0.0.1:{ref_port}"), pid: ref_pid },
    ];
    let settle = || quiet(&mut Command::new("sync"));

    // 1. One blob, up and down.
    eprintln!("making a {blob_mb} MB blob…");
    let blob = work.join("blob.bin");
    random_file(&blob, blob_mb << 20, 7)?;
    let digest = sha256_of(&blob)?;
    let mb = blob_mb as f64 * 1.048_576;
    let mut up: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut down: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    // Which registry goes first alternates by round, so neither always follows the other.
    let order = |r: usize| -> [usize; 2] {
        if r.is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        }
    };
    for r in 0..rounds {
        for i in order(r) {
            let t = &targets[i];
            settle()?;
            up[i].push(mb / t.put_blob("bench/blob", &blob, &digest)?.as_secs_f64());
            down[i].push(mb / t.get_blob("bench/blob", &digest)?.as_secs_f64());
        }
        eprintln!(
            "blob round {}: up {:?} down {:?} MB/s",
            r + 1,
            up.iter().map(|v| v[r]).collect::<Vec<_>>(),
            down.iter().map(|v| v[r]).collect::<Vec<_>>()
        );
    }
    std::fs::remove_file(&blob)?;

    // 2. Peak memory while a large blob is pushed.
    eprintln!("making a {rss_mb} MB blob…");
    let large = work.join("large.bin");
    random_file(&large, rss_mb << 20, 11)?;
    let large_digest = sha256_of(&large)?;
    let mut peaks = Vec::new();
    for t in &targets {
        settle()?;
        let before = t.rss_kib();
        let peak = std::sync::atomic::AtomicU64::new(before);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| -> Result<()> {
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(t.rss_kib(), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            let r = t.put_blob("bench/blob", &large, &large_digest);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            r.map(|_| ())
        })?;
        peaks.push((before as f64 / 1024.0, peak.into_inner() as f64 / 1024.0));
    }
    std::fs::remove_file(&large)?;

    // 3. skopeo copy of a multi-layer image, push and pull.
    let mut copies: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); targets.len()];
    let mut pull_cpu: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let skopeo = which("skopeo").is_some();
    if skopeo {
        for r in 0..rounds {
            // New content every round: a registry that already holds a blob answers the
            // push's HEAD and skopeo skips the upload.
            eprintln!("making a {image_mb} MB image of 5 layers…");
            let layout = work.join(format!("layout-{r}"));
            oci_layout(&layout, 5, (image_mb << 20) / 5, r as u64 + 1)?;
            for i in order(r) {
                let t = &targets[i];
                let dest = format!("docker://{}/bench/big:r{r}", t.base.trim_start_matches("http://"));
                settle()?;
                let tm = Instant::now();
                quiet(
                    Command::new("skopeo")
                        .args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"])
                        .arg(format!("oci:{}:big", layout.display()))
                        .arg(&dest),
                )?;
                copies[i].0.push(ms(tm.elapsed()));
                let pulled = work.join(format!("pulled-{i}-{r}"));
                settle()?;
                let (tm, cpu) = (Instant::now(), t.cpu_ms());
                quiet(
                    Command::new("skopeo")
                        .args(["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"])
                        .arg(&dest)
                        .arg(format!("oci:{}:big", pulled.display())),
                )?;
                copies[i].1.push(ms(tm.elapsed()));
                pull_cpu[i].push(t.cpu_ms() - cpu);
                std::fs::remove_dir_all(&pulled)?;
            }
            std::fs::remove_dir_all(&layout)?;
            eprintln!(
                "skopeo round {}: (push, pull) ms {:?}, server CPU during the pull (ms) {:?}",
                r + 1,
                copies.iter().map(|c| (c.0[r], c.1[r])).collect::<Vec<_>>(),
                pull_cpu.iter().map(|c| c[r]).collect::<Vec<_>>()
            );
        }
    } else {
        eprintln!("skopeo not found (apt-get install skopeo): image copies skipped");
    }
    drop(guard);

    let mut md = format!(
        "Command: `cargo xtask bench registry --rounds {rounds} --blob-mb {blob_mb} --image-mb {image_mb} --rss-mb {rss_mb}` \
         (as root; it re-executes itself in a network and mount namespace of its own). estiba release build with its SQLite store; \
         Debian's docker-registry {} with filesystem storage; both on loopback; curl {}; `sync` before each measurement; \
         medians of {rounds}.\n\n| | estiba | docker-registry | ratio |\n|---|---:|---:|---:|\n",
        quiet(Command::new("docker-registry").arg("--version")).unwrap_or_default().split_whitespace().nth(2).unwrap_or("?"),
        quiet(Command::new("curl").arg("--version")).unwrap_or_default().split_whitespace().nth(1).unwrap_or("?"),
    );
    let row = |md: &mut String, name: &str, a: f64, b: f64, higher_better: bool| {
        let ratio = if higher_better { a / b } else { b / a };
        md.push_str(&format!("| {name} | {a:.0} | {b:.0} | {ratio:.2}× |\n"));
    };
    row(
        &mut md,
        &format!("{blob_mb} MB blob, one monolithic PUT (MB/s)"),
        median(up[0].clone()),
        median(up[1].clone()),
        true,
    );
    row(&mut md, &format!("{blob_mb} MB blob, GET (MB/s)"), median(down[0].clone()), median(down[1].clone()), true);
    if skopeo {
        row(
            &mut md,
            &format!("skopeo copy push, {image_mb} MB / 5 layers (ms)"),
            median(copies[0].0.clone()),
            median(copies[1].0.clone()),
            false,
        );
        row(
            &mut md,
            &format!("skopeo copy pull, {image_mb} MB / 5 layers (ms)"),
            median(copies[0].1.clone()),
            median(copies[1].1.clone()),
            false,
        );
        row(
            &mut md,
            "… the registry's CPU time during the pull (ms)",
            median(pull_cpu[0].clone()),
            median(pull_cpu[1].clone()),
            false,
        );
    }
    md.push_str(&format!(
        "| resident memory before → peak during a {rss_mb} MB push (MiB) | {:.1} → {:.1} | {:.1} → {:.1} | |\n",
        peaks[0].0, peaks[0].1, peaks[1].0, peaks[1].1
    ));
    md.push_str("\nRatios are estiba's advantage: throughput estiba / reference, times reference / estiba.\n");
    Ok(md)
}
