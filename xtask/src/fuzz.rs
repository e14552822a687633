//! `cargo xtask fuzz [--seconds N] [TARGET...]`: builds the libFuzzer targets in `fuzz/` and
//! runs each for N seconds (15 by default) over its checked-in seed corpus; fails when one
//! crashes, times out or runs out of memory, printing the reproducer and how to rerun it.
//! `cargo xtask test` runs every target this way after the unit tests.
//!
//! Stable Rust, no cargo-fuzz: cargo-fuzz only adds build flags, and the ones it needs without a
//! sanitizer are stable (`-Cpasses=sancov-module` and the `-Cllvm-args` of LLVM's
//! SanitizerCoverage, the same list cargo-fuzz passes; `--cfg fuzzing`). Its nightly-only part
//! is `-Zsanitizer=address`, which this leaves out: Rust code is memory-safe without it, and
//! what the targets look for is panics, overflows (the profile keeps overflow checks and debug
//! assertions on), hangs and runaway memory. The build names `--target` explicitly, as
//! cargo-fuzz does, so the flags reach the targets and their dependencies but not build
//! scripts or proc macros. It builds into `<target dir>/fuzz`, apart from the normal build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The targets, with their seed corpora (folders, read recursively) relative to the root.
const TARGETS: &[(&str, &[&str])] = &[
    ("sigv4", &["crates/estiba-auth/testdata/v4"]),
    ("credentials", &["fuzz/seeds/credentials"]),
    ("aws_json", &["fuzz/seeds/aws_json"]),
    ("aws_query", &["fuzz/seeds/aws_query"]),
    ("rpcv2_cbor", &["fuzz/seeds/rpcv2_cbor"]),
    ("manifest", &["fuzz/seeds/manifest"]),
    ("unpack", &["fuzz/seeds/unpack"]),
    ("expressions", &["fuzz/seeds/expressions"]),
    ("exec_session", &["fuzz/seeds/exec_session"]),
];

/// SanitizerCoverage as cargo-fuzz configures it (inline 8-bit counters, the PC table libFuzzer
/// reads, comparison tracing for its value profile and dictionary).
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing";

/// How many targets run at once (each libFuzzer process uses one core).
const PARALLEL: usize = 2;

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut seconds = 15u64;
    let mut wanted = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it.next().and_then(|s| s.parse().ok()).context("--seconds takes a number of seconds")?
            }
            t if TARGETS.iter().any(|(n, _)| *n == t) => wanted.push(t.to_owned()),
            other => bail!(
                "unknown fuzz target or option {other}; targets: {}",
                TARGETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    let targets: Vec<_> = TARGETS.iter().filter(|(n, _)| wanted.is_empty() || wanted.iter().any(|w| w == n)).collect();
    fuzz(root, seconds, &targets)
}

/// Builds the targets and runs each for `seconds`; the whole suite when called from `cargo
/// xtask test`.
pub fn run_all(root: &Path, seconds: u64) -> Result<()> {
    let targets: Vec<_> = TARGETS.iter().collect();
    fuzz(root, seconds, &targets)
}

fn fuzz(root: &Path, seconds: u64, targets: &[&(&str, &[&str])]) -> Result<()> {
    let started = Instant::now();
    let out = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from).join("fuzz");
    let host = host_triple()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--release", "--locked", "--bins", "--target", &host, "--manifest-path"])
        .arg(root.join("fuzz/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &out)
        .env("RUSTFLAGS", RUSTFLAGS.split_whitespace().collect::<Vec<_>>().join(" "))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(root);
    eprintln!("+ {build:?}");
    let status = build.status().context("building the fuzz targets")?;
    if !status.success() {
        bail!("building the fuzz targets failed with {status}");
    }
    let built = started.elapsed();
    let bin_dir = out.join(&host).join("release");
    let mut failed = Vec::new();
    for batch in targets.chunks(PARALLEL) {
        let mut running = Vec::new();
        for (name, seeds) in batch {
            let corpus = out.join("corpus").join(name);
            let artifacts = out.join("artifacts").join(name);
            let _ = std::fs::remove_dir_all(&artifacts);
            std::fs::create_dir_all(&corpus)?;
            std::fs::create_dir_all(&artifacts)?;
            let log = out.join(format!("{name}.log"));
            let mut cmd = Command::new(bin_dir.join(name));
            cmd.arg(format!("-max_total_time={seconds}"))
                .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
                .arg(format!("-artifact_prefix={}/", artifacts.display()))
                .arg(&corpus)
                .args(seeds.iter().map(|s| root.join(s)));
            let file = std::fs::File::create(&log)?;
            cmd.stdout(file.try_clone()?).stderr(file);
            eprintln!("== fuzz {name}: {seconds} s");
            running.push((*name, cmd.spawn().with_context(|| format!("starting fuzz target {name}"))?, log, artifacts));
        }
        for (name, mut child, log, artifacts) in running {
            let status = child.wait()?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let stats: Vec<&str> = text.lines().filter(|l| l.starts_with("stat::number_of_executed_units")).collect();
            if status.success() {
                eprintln!("   {name}: ok ({})", stats.first().map_or("?", |s| s.trim_start_matches("stat::")));
                continue;
            }
            eprintln!("   {name}: FAILED ({status}); the end of {}:", log.display());
            let lines: Vec<&str> = text.lines().collect();
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("   | {l}");
            }
            for entry in std::fs::read_dir(&artifacts)?.flatten() {
                let path = entry.path();
                let bytes = std::fs::read(&path).unwrap_or_default();
                eprintln!(
                    "   reproducer {} ({} bytes): {:?}",
                    path.display(),
                    bytes.len(),
                    String::from_utf8_lossy(&bytes)
                );
                eprintln!("   rerun: {} {}", bin_dir.join(name).display(), path.display());
            }
            failed.push(name);
        }
    }
    eprintln!("== fuzzing: build {:.0} s, total {:.0} s", built.as_secs_f64(), started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV names no host")
}
