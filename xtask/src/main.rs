//! Project chores: `cargo xtask codegen` regenerates the AWS wire types, `cargo xtask build`
//! builds the binaries as shipped, `cargo xtask test` runs every test (unit and end-to-end),
//! `cargo xtask bench` runs the benchmarks, `cargo xtask fuzz` the fuzz targets.
//!
//! xtask may use anyhow and shell out; it is never a dependency of the product crates.

mod bench;
mod bench_agent;
mod bench_console;
mod bench_dns;
mod bench_failover;
mod bench_lb;
mod bench_lb_service;
mod bench_logs;
mod bench_metrics;
mod bench_net;
mod bench_placement;
mod bench_registry;
mod bench_run;
mod bench_services;
mod build;
mod codegen;
mod fuzz;
mod test;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("codegen") => codegen::run(args.iter().any(|a| a == "--check")),
        Some("test") => test::run_all(&codegen::workspace_root(), &args[1..]),
        Some("bench") => bench::run(&codegen::workspace_root(), &args[1..]),
        Some("fuzz") => fuzz::run(&codegen::workspace_root(), &args[1..]),
        Some("build") => build::build(&codegen::workspace_root(), !args.iter().any(|a| a == "--debug")),
        _ => {
            eprintln!("usage: cargo xtask <codegen [--check] | build [--debug] | test [--unit|--e2e] [--fuzz-seconds N] [--store sqlite|etcd] [-- PYTEST ARGS] | fuzz [--seconds N] [TARGET...] | bench api|run|registry|services|net [OPTIONS]>");
            bail!("unknown or missing command")
        }
    }
}
