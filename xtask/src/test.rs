//! `cargo xtask test`: every test of the project, in one command.
//!
//! 1. installs what the tests need (`scripts/install-test-deps.sh`, skipped when present);
//! 2. builds the workspace and runs the unit tests (`cargo test --workspace`, which also
//!    checks that generated code is fresh);
//! 3. builds the fuzz targets (`fuzz/`) and runs each for 15 seconds over its seed corpus
//!    (`--fuzz-seconds N` to change it, 0 to skip; see `fuzz.rs`);
//! 4. runs the end-to-end tests (`tests/e2e`, pytest) against the built `estiba` binary.
//!
//! The end-to-end suite runs twice: in full with the SQLite store, then its control-plane
//! tests (those that run no container: `ESTIBA_TEST_CONTAINERS=off`) with every server's state
//! in etcd (`ESTIBA_TEST_STORE=etcd`: one etcd member for the session, started by
//! tests/e2e/conftest.py). The whole suite on etcd takes about as long as on SQLite (~20 min),
//! which would take CI past 50 minutes; `--store etcd` runs it in full on etcd alone, and
//! `--store sqlite` the SQLite pass alone.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub fn run_all(root: &Path, args: &[String]) -> Result<()> {
    let unit_only = args.iter().any(|a| a == "--unit");
    let e2e_only = args.iter().any(|a| a == "--e2e");
    let pytest_args: Vec<&String> = args.iter().skip_while(|a| *a != "--").skip(1).collect();
    let own_args: Vec<&String> = args.iter().take_while(|a| *a != "--").collect();
    let fuzz_seconds = match own_args.iter().position(|a| *a == "--fuzz-seconds") {
        None => 15,
        Some(i) => own_args.get(i + 1).and_then(|s| s.parse().ok()).context("--fuzz-seconds takes a number")?,
    };
    // (store, whether container tests run, files left out)
    let passes: Vec<(&str, bool, &[&str])> = match own_args.iter().position(|a| *a == "--store") {
        None => vec![("sqlite", true, &[]), ("etcd", false, &["tests/e2e/test_etcd.py"])],
        Some(i) => match own_args.get(i + 1).map(|s| s.as_str()) {
            Some("sqlite") => vec![("sqlite", true, &[])],
            Some("etcd") => vec![("etcd", true, &[])],
            other => bail!("--store {}: expected sqlite or etcd", other.unwrap_or("(missing)")),
        },
    };
    run(Command::new(root.join("scripts/install-test-deps.sh")).current_dir(root))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).args(["build", "--workspace", "--bins"]).current_dir(root))?;
    if !e2e_only {
        run(Command::new(&cargo).args(["test", "--workspace"]).current_dir(root))?;
        if fuzz_seconds > 0 {
            crate::fuzz::run_all(root, fuzz_seconds)?;
        }
    }
    if !unit_only {
        // The binaries as shipped (a static `estiba-shim`), after the unit tests' build.
        crate::build::build(root, false)?;
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
        let bin = target.join("debug/estiba");
        let mut failed = Vec::new();
        for (store, containers, ignore) in passes {
            // Tests that start containers make network namespaces and send traffic to tasks:
            // the whole suite runs in a network namespace of its own, with only loopback and no
            // route out, so no packet can leave the machine.
            let mut cmd = if is_root() {
                let mut c = Command::new("unshare");
                c.args(["--net", "--", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh", "python3"]);
                c
            } else {
                eprintln!("not root: container tests will be skipped");
                Command::new("python3")
            };
            eprintln!(
                "== end-to-end tests, {store} store{}",
                if containers { "" } else { ", control plane only (no containers)" }
            );
            let started = std::time::Instant::now();
            let result = run(cmd
                .args(["-m", "pytest", "-q", "--timeout", "300", "-p", "no:cacheprovider"])
                .args(ignore.iter().map(|f| format!("--ignore={f}")))
                .args(&pytest_args)
                .arg("tests/e2e")
                .env("ESTIBA_BIN", &bin)
                .env("ESTIBA_TEST_STORE", store)
                .env("ESTIBA_TEST_CONTAINERS", if containers { "on" } else { "off" })
                .current_dir(root));
            eprintln!("== {store} store: {:.0} s", started.elapsed().as_secs_f64());
            if let Err(e) = result {
                failed.push(format!("{store}: {e:#}"));
            }
        }
        if !failed.is_empty() {
            bail!("end-to-end tests failed: {}", failed.join("; "));
        }
    }

    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}
