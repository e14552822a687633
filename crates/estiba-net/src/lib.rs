//! Task networking on one node: each task's network namespace (`netns`), the bridges its
//! namespaces hang off through veth pairs (`Host::attach`), the addresses they get (`ipam`),
//! and host ports published to task addresses (`ports`).
//!
//! A [`Network`] is a bridge with a CIDR: its first address is the gateway, held by the
//! bridge; every task on it gets a veth pair whose host end is on the bridge and whose other
//! end is `eth0` in the task's namespace, with an address from a [`ipam::Range`] of the
//! network and a MAC address derived from that address. Tasks on one network reach each
//! other directly (one L2 segment) and the host through the gateway.
//!
//! **Architecture invariant:** knows nothing about ECS or the store: it is told which
//! network, range and owner (a task id) to use, and keeps only what it needs to clean up
//! (address leases on disk, listeners in memory). Every step is idempotent, so a task's
//! network can be set up again after a crash and torn down by a sweep.

mod egress;
pub mod ipam;
pub mod netns;
pub mod nl;
pub mod ports;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use ipnet::Ipv4Net;

pub use ipam::Range;
pub use ports::{Binding, Mapping, Protocol};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("host port {port}/{protocol:?} is not available: {source}")]
    Port { port: u16, protocol: Protocol, source: std::io::Error },
    #[error("{0}")]
    Namespace(String),
}

impl NetError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> NetError {
        NetError::Io { what: what.into(), source }
    }
}

/// A bridge and the CIDR of the addresses behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// The IPAM pool's name (`vpc`, `bridge`).
    pub name: String,
    /// The bridge device (at most 15 characters).
    pub bridge: String,
    pub cidr: Ipv4Net,
}

impl Network {
    /// A network whose bridge is named after its kind (`v` for a VPC, `b` for the bridge
    /// network) and CIDR, e.g. `evac1f000016` for 172.31.0.0/16: servers on one host with
    /// different CIDRs never share a bridge, and one with the same CIDR finds its own again.
    pub fn named(name: &str, kind: char, cidr: Ipv4Net) -> Network {
        let bridge = format!("e{kind}{:08x}{:02}", u32::from(cidr.network()), cidr.prefix_len());
        Network { name: name.into(), bridge, cidr }
    }

    /// The bridge's own address: the first of the CIDR.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }
}

/// A task's place on a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: [u8; 6],
    /// The host end of the veth pair.
    pub host_link: String,
}

/// The locally administered MAC address of an IP address (`0a:58:` and the four octets, as
/// Kubernetes' bridge networking does).
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The host end of an owner's veth pair: `es` and the last 12 characters of the owner (a
/// task id, whose head is its start time: see `estiba_core::ids::Ids::task_id`).
pub fn host_link_of(owner: &str) -> String {
    format!("es{}", tail(owner, 12))
}

/// The last `n` characters of `s` (all of it when shorter).
pub fn tail(s: &str, n: usize) -> &str {
    let skip = s.chars().count().saturating_sub(n);
    s.char_indices().nth(skip).map_or("", |(i, _)| &s[i..])
}

/// The networks of a node: leases on disk, published ports in memory.
pub struct Host {
    pub ipam: ipam::Ipam,
    pub ports: ports::Publisher,
    /// Bridges this process has made sure of (with their egress rules), by name: their index.
    bridges: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl Host {
    /// `state_dir` keeps the address leases (`<state_dir>/ipam`).
    pub fn new(state_dir: &Path) -> Host {
        Host {
            ipam: ipam::Ipam::new(&state_dir.join("ipam")),
            ports: ports::Publisher::default(),
            bridges: Default::default(),
        }
    }

    /// Puts the namespace pinned at `netns` on `net` with an address from `range`, for
    /// `owner`. `inside` is a netlink socket of that namespace (from `netns::create`); without
    /// one a thread enters the namespace. Blocking (a few netlink requests); safe to repeat: a
    /// previous veth of the owner is replaced and its address kept.
    pub fn attach(
        &self,
        net: &Network,
        range: Range,
        owner: &str,
        netns: &Path,
        inside: Option<nl::Netlink>,
    ) -> Result<Endpoint, NetError> {
        let ip = self.ipam.allocate(&net.name, range, owner)?;
        let r = self.plug(net, ip, owner, netns, inside);
        if r.is_err() {
            self.ipam.release(owner);
        }
        r
    }

    fn plug(
        &self,
        net: &Network,
        ip: Ipv4Addr,
        owner: &str,
        netns: &Path,
        inside: Option<nl::Netlink>,
    ) -> Result<Endpoint, NetError> {
        let nlerr = |what: &str| {
            let what = what.to_owned();
            move |e| NetError::io(what, e)
        };
        let mut nl = nl::Netlink::open().map_err(nlerr("opening a netlink socket"))?;
        let host_link = host_link_of(owner);
        nl.del_link(&host_link).map_err(nlerr("removing a previous veth"))?;
        let ns = std::fs::File::open(netns).map_err(|e| NetError::io(format!("opening {}", netns.display()), e))?;
        let mac = mac_of(ip);
        // The bridge's index is remembered; a bridge deleted behind our back is made again.
        let mut bridge = self.bridge(&mut nl, net)?;
        if let Err(e) = nl.add_veth(&host_link, bridge, "eth0", ns.as_raw_fd(), mac) {
            self.bridges.lock().unwrap().remove(&net.bridge);
            bridge = self.bridge(&mut nl, net)?;
            nl.add_veth(&host_link, bridge, "eth0", ns.as_raw_fd(), mac)
                .map_err(|_| NetError::io("creating the veth pair", e))?;
        }
        let (prefix, gateway) = (net.cidr.prefix_len(), net.gateway());
        let configure = move |mut nl: nl::Netlink| -> Result<(), String> {
            let eth0 = nl
                .link_index("eth0")
                .and_then(|i| i.ok_or_else(|| std::io::Error::other("eth0 is missing")))
                .map_err(|e| format!("eth0: {e}"))?;
            nl.add_address(eth0, ip, prefix).map_err(|e| format!("adding {ip}/{prefix}: {e}"))?;
            nl.set_up(eth0).map_err(|e| format!("setting eth0 up: {e}"))?;
            nl.add_default_route(eth0, gateway).map_err(|e| format!("adding the default route: {e}"))
        };
        match inside {
            Some(nl) => configure(nl),
            None => netns::run_in(netns, move || {
                configure(nl::Netlink::open().map_err(|e| format!("netlink in the task's namespace: {e}"))?)
            }),
        }
        .map_err(NetError::Namespace)?;
        Ok(Endpoint { ip, prefix, gateway, mac, host_link })
    }

    /// The index of `net`'s bridge, made (with its egress rules) the first time.
    fn bridge(&self, nl: &mut nl::Netlink, net: &Network) -> Result<u32, NetError> {
        if let Some(i) = self.bridges.lock().unwrap().get(&net.bridge) {
            return Ok(*i);
        }
        let i = ensure_bridge(nl, net)?;
        egress::ensure(net);
        // Answers the tasks' neighbour requests for addresses of the network that are routed
        // elsewhere (other machines' address blocks, `route_blocks`): tasks see the whole
        // network as one link. Addresses on the bridge itself are never answered for.
        let proxy_arp = format!("/proc/sys/net/ipv4/conf/{}/proxy_arp", net.bridge);
        if let Err(e) = std::fs::write(&proxy_arp, "1") {
            tracing::warn!(bridge = %net.bridge, error = %e, "proxy ARP is off: tasks reach no task of another machine");
        }
        self.bridges.lock().unwrap().insert(net.bridge.clone(), i);
        Ok(i)
    }

    /// Gives the host one more address on `net`'s bridge (made if needed), for a service the
    /// tasks on it reach directly: the VPC resolver at the network's base address plus two.
    pub fn add_service_address(&self, net: &Network, ip: Ipv4Addr) -> Result<(), NetError> {
        let mut nl = nl::Netlink::open().map_err(|e| NetError::io("opening a netlink socket", e))?;
        let bridge = self.bridge(&mut nl, net)?;
        nl.add_address(bridge, ip, net.cidr.prefix_len())
            .map_err(|e| NetError::io(format!("adding {ip} to bridge {}", net.bridge), e))
    }

    /// Gives the host one address (a /32) on `net`'s bridge (made if needed), for a service
    /// at an address outside the network that tasks reach through their gateway (Service
    /// Connect's VIPs). Blocking.
    pub fn add_host_address(&self, net: &Network, ip: Ipv4Addr) -> Result<(), NetError> {
        let mut nl = nl::Netlink::open().map_err(|e| NetError::io("opening a netlink socket", e))?;
        let bridge = self.bridge(&mut nl, net)?;
        nl.add_address(bridge, ip, 32).map_err(|e| NetError::io(format!("adding {ip}/32 to bridge {}", net.bridge), e))
    }

    /// Makes the host's routes to other machines' address blocks of `net` what `wanted` says
    /// (block → the machine's address), given the routes it made before (`made`, updated).
    /// Blocking. A route that cannot be made is logged and tried again at the next call.
    pub fn route_blocks(
        &self,
        net: &Network,
        wanted: &std::collections::BTreeMap<Ipv4Net, Ipv4Addr>,
        made: &mut std::collections::BTreeMap<Ipv4Net, Ipv4Addr>,
    ) -> Result<(), NetError> {
        let mut nl = nl::Netlink::open().map_err(|e| NetError::io("opening a netlink socket", e))?;
        // The bridge (with proxy ARP on) must exist for tasks to reach the routes.
        self.bridge(&mut nl, net)?;
        for block in made.keys().filter(|b| !wanted.contains_key(*b)).copied().collect::<Vec<_>>() {
            match nl.del_route(block) {
                Ok(()) => {
                    made.remove(&block);
                }
                Err(e) => tracing::warn!(%block, error = %e, "removing the route to an address block failed"),
            }
        }
        for (block, via) in wanted {
            if made.get(block) == Some(via) {
                continue;
            }
            match nl.replace_route(*block, *via) {
                Ok(()) => {
                    tracing::info!(%block, %via, "routing another machine's address block");
                    made.insert(*block, *via);
                }
                Err(e) => tracing::warn!(%block, %via, error = %e, "routing an address block failed"),
            }
        }
        Ok(())
    }

    /// Undoes what `attach` and `ports.publish` did for `owner`: ports closed, the veth pair
    /// deleted (it also goes with the namespace), the address released. Blocking.
    pub fn detach(&self, owner: &str) {
        self.ports.unpublish(owner);
        if let Ok(mut nl) = nl::Netlink::open() {
            let _ = nl.del_link(&host_link_of(owner));
        }
        self.ipam.release(owner);
    }

    /// Removes what owners that are no longer `live` left: their ports, veths and leases.
    /// Only owners with a lease here are touched, so another estiba on the same host (with
    /// its own state directory) keeps its veths.
    pub fn sweep(&self, live: &HashSet<String>) {
        for owner in self.ports.owners() {
            if !live.contains(&owner) {
                self.ports.unpublish(&owner);
            }
        }
        for (_, ip, owner) in self.ipam.leases() {
            if !live.contains(&owner) {
                tracing::info!(%ip, owner, "releasing the network of a task that is gone");
                self.detach(&owner);
            }
        }
    }
}

/// The bridge of `net`, created with the gateway address and up if it is not there yet.
fn ensure_bridge(nl: &mut nl::Netlink, net: &Network) -> Result<u32, NetError> {
    let e = |what: &'static str| move |err| NetError::io(format!("{what} {}", net.bridge), err);
    // The bridge's MAC is fixed (that of its gateway address, which no task has): left to the
    // kernel it follows the lowest MAC among the bridge's ports, so it changes as tasks come
    // and go, and tasks whose neighbour entry for the gateway (or the resolver, or a Service
    // Connect VIP behind it) holds the old one lose their packets until it expires (~30 s).
    let mac = mac_of(net.gateway());
    if let Some(i) = nl.link_index(&net.bridge).map_err(e("looking up bridge"))? {
        nl.set_mac(i, mac).map_err(e("setting the MAC address of"))?;
        return Ok(i);
    }
    nl.add_bridge(&net.bridge).map_err(e("creating bridge"))?;
    let i = nl
        .link_index(&net.bridge)
        .map_err(e("looking up bridge"))?
        .ok_or_else(|| NetError::io(format!("bridge {}", net.bridge), std::io::Error::other("vanished")))?;
    nl.set_mac(i, mac).map_err(e("setting the MAC address of"))?;
    nl.add_address(i, net.gateway(), net.cidr.prefix_len()).map_err(e("adding the gateway address to"))?;
    nl.set_up(i).map_err(e("setting up"))?;
    tracing::info!(bridge = %net.bridge, cidr = %net.cidr, "created the bridge");
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        let ip = Ipv4Addr::new(172, 31, 0, 4);
        assert_eq!(mac_string(mac_of(ip)), "0a:58:ac:1f:00:04");
        assert_eq!(host_link_of("0123456789abcdef0123456789abcdef"), "es456789abcdef");
        assert!(host_link_of("0123456789abcdef").len() <= 15);
        assert_eq!(host_link_of("abc"), "esabc");
        assert_eq!(tail("héllo", 4), "éllo");
        let net = Network::named("vpc", 'v', "172.31.0.0/16".parse().unwrap());
        assert_eq!(net.gateway(), Ipv4Addr::new(172, 31, 0, 1));
        assert_eq!(net.bridge, "evac1f000016");
    }
}

#[cfg(test)]
mod tests_ns;
