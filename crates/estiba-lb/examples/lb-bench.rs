//! The load balancer alone, for `cargo xtask bench lb`: one ALB with one HTTP listener on
//! `--listen` forwarding to one target group of `--target`s (health checks on, every 5 s),
//! on `--threads` proxy threads, until stdin closes. Prints `ready` once it listens. Uses
//! mimalloc, as the estiba binary does.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use estiba_lb::*;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |n: &str| args.iter().position(|a| a == n).and_then(|i| args.get(i + 1)).cloned();
    let listen = arg("--listen").expect("--listen ADDR").parse().expect("an address");
    let threads = arg("--threads").map_or(1, |t| t.parse().expect("a number"));
    let targets: Vec<Target> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--target")
        .filter_map(|(i, _)| args.get(i + 1)?.parse().ok())
        .map(|addr| Target { addr, draining: false })
        .collect();
    let table = Table {
        load_balancers: vec![LoadBalancer {
            arn: "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/bench/1".into(),
            kind: Kind::Application,
            dimension: "app/bench/1".into(),
            idle_timeout: Duration::from_secs(60),
            http2: true,
            listeners: vec![Listener {
                arn: "listener".into(),
                protocol: ListenerProtocol::Http,
                binds: vec![listen],
                certificate: None,
                rules: vec![Rule {
                    arn: "default".into(),
                    priority: None,
                    conditions: vec![],
                    action: Action::Forward {
                        groups: vec![WeightedGroup { arn: "tg".into(), weight: 1 }],
                        stickiness: None,
                    },
                }],
            }],
        }],
        target_groups: vec![TargetGroup {
            arn: "tg".into(),
            dimension: "targetgroup/bench/1".into(),
            protocol: TargetProtocol::Http,
            health: HealthCheck { interval: Duration::from_secs(5), healthy_threshold: 2, ..HealthCheck::default() },
            algorithm: Algorithm::RoundRobin,
            stickiness: None,
            slow_start: Duration::ZERO,
            targets,
        }],
    };
    let lb = Lb::new(Settings { threads, ..Settings::default() });
    lb.apply(Arc::new(table));
    if lb.listening().is_empty() {
        eprintln!("cannot listen on {listen}");
        std::process::exit(1);
    }
    println!("ready");
    // Until stdin closes (the benchmark drops its end, or is killed).
    for _ in std::io::stdin().lock().lines() {}
    drop(lb);
}
