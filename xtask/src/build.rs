//! `cargo xtask build [--debug]`: the estiba binaries as they are shipped, into
//! `target/release` (or `target/debug`): `estiba`, and `estiba-shim` linked statically
//! (`-C target-feature=+crt-static`). A static supervisor maps no loader and no `libc.so`:
//! 1.7 MiB resident per container instead of 2.5 (BENCHMARKS.md). Cargo.toml cannot give a
//! flag to one binary only, so `cargo rustc` links that binary again after the build; a plain
//! `cargo build` gives a dynamically linked `estiba-shim`, which works the same.
//!
//! The etcd store's client (`etcd-client`) compiles etcd's protobufs at build time with
//! `protoc` and the well-known types: Debian's `protobuf-compiler` and `libprotobuf-dev`.
//! When they are missing this installs them as root, and otherwise stops with a message
//! naming them.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

/// The Debian packages the build needs, and a file each one provides.
const BUILD_PACKAGES: &[(&str, &str)] =
    &[("protobuf-compiler", "/usr/bin/protoc"), ("libprotobuf-dev", "/usr/include/google/protobuf/descriptor.proto")];

/// Installs protoc and the protobuf well-known types when missing (as root), else fails naming
/// the packages. `PROTOC` pointing at a compiler skips the check.
pub fn ensure_build_deps() -> Result<()> {
    if std::env::var_os("PROTOC").is_some() {
        return Ok(());
    }
    let missing: Vec<&str> =
        BUILD_PACKAGES.iter().filter(|(_, file)| !Path::new(file).exists()).map(|(pkg, _)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false);
    if !root {
        bail!(
            "building estiba needs protoc (the etcd store's client compiles etcd's protobufs): \
             install Debian's {} (apt-get install {}), or set PROTOC",
            missing.join(" and "),
            missing.join(" ")
        );
    }
    eprintln!("+ apt-get install {}", missing.join(" "));
    let apt = |args: &[&str]| -> Result<()> {
        let ok = Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").status()?.success();
        if !ok {
            bail!("apt-get {} failed", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    apt(&[&["install", "-y", "-qq", "--no-install-recommends"][..], &missing].concat())
}

pub fn build(root: &Path, release: bool) -> Result<()> {
    ensure_build_deps()?;
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
