//! Traffic between a network's tasks and the world beyond the host: forwarding on, the
//! network's source addresses masqueraded behind the host's, and the bridge's traffic
//! accepted in the FORWARD chain ahead of anything else (Docker sets that chain's policy to
//! DROP, which with `br_netfilter` would also drop traffic between tasks on one bridge).
//!
//! Traffic between the network's addresses on different machines (other machines' address
//! blocks are routed through the underlay) keeps its addresses: it is neither masqueraded nor
//! refused on its way into the bridge.
//!
//! Four iptables rules per network, added once per process when missing (`-C` first), with
//! the `iptables` binary: they are written once per bridge, never per task, so the cost of a
//! process does not matter, and the binary picks the host's backend (nftables or legacy),
//! which a netlink implementation would have to guess. They belong to the bridge and stay
//! with it, as Docker's stay with docker0. Without `iptables` on the host, tasks reach the
//! host and each other only (a warning says so).

use std::process::{Command, Stdio};

use crate::Network;

/// The rules for `net`: (table, chain, rule).
fn rules(net: &Network) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let (cidr, br) = (net.cidr.to_string(), net.bridge.clone());
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        ("nat", "POSTROUTING", v(&["-s", &cidr, "!", "-d", &cidr, "!", "-o", &br, "-j", "MASQUERADE"])),
        ("filter", "FORWARD", v(&["-i", &br, "-j", "ACCEPT"])),
        ("filter", "FORWARD", v(&["-s", &cidr, "-o", &br, "-j", "ACCEPT"])),
        ("filter", "FORWARD", v(&["-o", &br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"])),
    ]
}

fn iptables(args: &[&str], rule: &[String]) -> std::io::Result<bool> {
    Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .args(rule)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
}

/// Turns forwarding on and adds `net`'s rules that are missing. Errors are logged: a task
/// without a way out still runs.
pub fn ensure(net: &Network) {
    if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
        tracing::warn!(error = %e, "could not turn IPv4 forwarding on: tasks cannot reach beyond the host");
    }
    // Earlier versions masqueraded traffic to the network's own addresses on other machines.
    let (cidr, br) = (net.cidr.to_string(), net.bridge.clone());
    let old: Vec<String> = ["-s", &cidr, "!", "-o", &br, "-j", "MASQUERADE"].iter().map(|s| s.to_string()).collect();
    if matches!(iptables(&["-t", "nat", "-C", "POSTROUTING"], &old), Ok(true)) {
        let _ = iptables(&["-t", "nat", "-D", "POSTROUTING"], &old);
    }
    for (table, chain, rule) in rules(net) {
        match iptables(&["-t", table, "-C", chain], &rule) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, bridge = %net.bridge, "iptables not found: tasks cannot reach beyond the host");
                return;
            }
        }
        let add = if chain == "FORWARD" { "-I" } else { "-A" };
        if !matches!(iptables(&["-t", table, add, chain], &rule), Ok(true)) {
            tracing::warn!(bridge = %net.bridge, table, chain, rule = rule.join(" "), "adding an iptables rule failed");
        }
    }
}
