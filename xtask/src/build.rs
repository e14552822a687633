//! `cargo xtask build [--debug]`: the estiba binaries as they are shipped, into
//! `target/release` (or `target/debug`): `estiba`, and `estiba-shim` linked statically
//! (`-C target-feature=+crt-static`). A static supervisor maps no loader and no `libc.so`:
//! 1.7 MiB resident per container instead of 2.5 (BENCHMARKS.md). Cargo.toml cannot give a
//! flag to one binary only, so `cargo rustc` links that binary again after the build; a plain
//! `cargo build` gives a dynamically linked `estiba-shim`, which works the same.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

pub fn build(root: &Path, release: bool) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    let run = |args: &[&str]| -> Result<()> {
        eprintln!("+ cargo {}", args.join(" "));
        if !Command::new(&cargo).args(args).current_dir(root).status()?.success() {
            bail!("cargo {} failed", args.join(" "));
        }
        Ok(())
    };
    run(&[&["build", "-p", "estiba"][..], profile].concat())?;
    run(&[&["rustc", "-p", "estiba", "--bin", "estiba-shim"][..], profile, &["--", "-C", "target-feature=+crt-static"]]
        .concat())
}
