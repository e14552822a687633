//! A task's network, set up for its network mode as ECS does, on `estiba-net`:
//!
//! - `awsvpc`: a namespace on the VPC's bridge with an address from the task's subnet (its
//!   ENI), reported in the ENI attachment and in every container's `networkInterfaces`; the
//!   hostname is the address's private DNS name. With `assignPublicIp: ENABLED` the container
//!   ports are also published on the host, on the same port when it is free, else on any.
//! - `bridge`: a namespace on the node's bridge network; `portMappings` are published on the
//!   host (`hostPort`, or a free ephemeral port when it is 0 or absent) and reported in the
//!   containers' `networkBindings`. Unlike Docker, the containers of one task share the
//!   namespace (they talk over localhost in every mode).
//! - `host`: the host's namespace; port mappings are reported as they are.
//! - `none`: a namespace with loopback only.
//!
//! What was set up is saved in the task's directory (`net.json`) so that an agent that
//! restarts publishes the same host ports again for the tasks it adopts.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

use estiba_api::ecs::{KeyValuePair, NetworkBinding, NetworkInterface, NetworkMode, TransportProtocol};
use estiba_core::vpc::{self, Vpc};
use estiba_core::{arn, taskdef, Scope};
use estiba_net::{netns, Mapping, Network, Protocol, Range};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::control::Assignment;
use crate::Shared;

/// The node's networks.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The default VPC's CIDR (awsvpc tasks).
    pub vpc_cidr: Ipv4Net,
    /// The bridge network's CIDR (bridge tasks).
    pub bridge_cidr: Ipv4Net,
}

impl NetConfig {
    pub fn vpc(&self) -> Network {
        Network::named("vpc", 'v', self.vpc_cidr)
    }

    pub fn bridge(&self) -> Network {
        Network::named("bridge", 'b', self.bridge_cidr)
    }
}

/// A published or reported port of one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub container: String,
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: Protocol,
}

/// What the agent set up for a task (`net.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNet {
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<String>,
    pub private_dns_name: Option<String>,
    pub hostname: String,
    pub bindings: Vec<PortBinding>,
    /// What to publish again after a restart (host ports as they were given).
    pub published: Vec<Mapping>,
}

const FILE: &str = "net.json";

fn scope_of(a: &Assignment) -> Scope {
    a.task
        .task_arn
        .as_deref()
        .and_then(arn::Arn::parse)
        .map(|p| Scope::new(p.account, p.region))
        .unwrap_or_else(|| Scope::new("000000000000", "us-east-1"))
}

fn protocol(p: Option<TransportProtocol>) -> Protocol {
    match p {
        Some(TransportProtocol::Udp) => Protocol::Udp,
        _ => Protocol::Tcp,
    }
}

/// The ENI's subnet id (the first of the task's network configuration).
fn subnet_id(a: &Assignment) -> String {
    a.task
        .attachments
        .iter()
        .flatten()
        .flat_map(|at| at.details.iter().flatten())
        .find(|d| d.name.as_deref() == Some("subnetId"))
        .and_then(|d| d.value.clone())
        .unwrap_or_default()
}

/// The host's name, for `host` mode.
fn host_name() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// Sets up the task's network (idempotent: after a crash it is done again over what is
/// there). The namespace is pinned at `<dir>/netns` unless the mode is `host`.
pub async fn setup(shared: &Arc<Shared>, a: &Assignment, task_id: &str, dir: &Path) -> Result<TaskNet, String> {
    let mode = taskdef::network_mode(&a.taskdef);
    let ns = dir.join("netns");
    let pinned = netns::is_pinned(&ns);
    // `net.json` is written last: a task that has it was set up completely before a
    // restart, and `restore` has published its ports again.
    if let Some(done) = saved(dir).filter(|_| pinned || mode == NetworkMode::Host) {
        return Ok(done);
    }
    // Twelve characters of the task id, as Docker names a container's host: the random tail
    // (the head is the start time, shared by tasks started together).
    let short = estiba_net::tail(task_id, 12).to_owned();
    let mut net = TaskNet { hostname: short, ..Default::default() };
    // The network and address range the task goes on (none in `host` and `none` modes).
    let on = match mode {
        NetworkMode::Awsvpc => {
            let vpc = Vpc::default_for(&scope_of(a), shared.cfg.net.vpc_cidr);
            let subnet = vpc.subnet(&subnet_id(a)).cidr;
            Some((shared.cfg.net.vpc(), vpc_range(shared, subnet, task_id).await?))
        }
        NetworkMode::Bridge => {
            let n = shared.cfg.net.bridge();
            let r = Range { net: n.cidr, reserved_head: 2, reserved_tail: 0 };
            Some((n, r))
        }
        _ => None,
    };
    let (host, owner, t0) = (shared.net.clone(), task_id.to_owned(), std::time::Instant::now());
    let spares = shared.spare_netns.clone();
    let endpoint = tokio::task::spawn_blocking(move || -> Result<Option<estiba_net::Endpoint>, String> {
        let inside = if mode != NetworkMode::Host && !pinned {
            Some(spares.take(&ns).map_or_else(|| netns::create(&ns), Ok)?)
        } else {
            None
        };
        match on {
            Some((network, range)) => {
                host.attach(&network, range, &owner, &ns, inside).map(Some).map_err(|e| e.to_string())
            }
            None => Ok(None),
        }
    })
    .await
    .map_err(|e| format!("network setup: {e}"))??;
    tracing::debug!(task = task_id, ms = t0.elapsed().as_secs_f64() * 1e3, "namespace and address ready");
    if let Some(ep) = endpoint {
        net.ip = Some(ep.ip);
        net.mac = Some(estiba_net::mac_string(ep.mac));
    }
    let mut wanted: Vec<(String, Mapping, u16)> = Vec::new();
    for c in a.taskdef.container_definitions.iter().flatten() {
        let name = c.name.clone().unwrap_or_default();
        for pm in c.port_mappings.iter().flatten() {
            let Some(cport) = pm.container_port.and_then(|p| u16::try_from(p).ok()) else { continue };
            let proto = protocol(pm.protocol);
            match (mode, net.ip) {
                (NetworkMode::Host, _) => net.bindings.push(PortBinding {
                    container: name.clone(),
                    container_port: cport,
                    host_port: cport,
                    protocol: proto,
                }),
                (NetworkMode::Bridge, Some(ip)) => {
                    let host_port = pm.host_port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
                    let m = Mapping { protocol: proto, host_port, target: SocketAddrV4::new(ip, cport), or_any: false };
                    wanted.push((name.clone(), m, cport));
                }
                (NetworkMode::Awsvpc, Some(ip)) if a.claim.public_ip => {
                    let m = Mapping {
                        protocol: proto,
                        host_port: cport,
                        target: SocketAddrV4::new(ip, cport),
                        or_any: true,
                    };
                    wanted.push((name.clone(), m, cport));
                }
                _ => {}
            }
        }
    }
    match mode {
        NetworkMode::Awsvpc => {
            let dns = net.ip.map(|ip| vpc::private_dns_name(&scope_of(a).region, ip));
            net.hostname = dns.clone().unwrap_or(net.hostname);
            net.private_dns_name = dns;
        }
        NetworkMode::Host => net.hostname = host_name(),
        _ => {}
    }
    if !wanted.is_empty() {
        let mappings: Vec<Mapping> = wanted.iter().map(|(_, m, _)| m.clone()).collect();
        let bound = shared.net.ports.publish(task_id, &mappings).map_err(|e| e.to_string())?;
        for ((container, m, cport), b) in wanted.into_iter().zip(bound) {
            net.bindings.push(PortBinding {
                container,
                container_port: cport,
                host_port: b.host_port,
                protocol: b.protocol,
            });
            // After a restart the same host port is asked for, not any.
            net.published.push(Mapping { host_port: b.host_port, or_any: false, ..m });
        }
    }
    let text = serde_json::to_vec(&net).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(FILE), text).map_err(|e| format!("saving {FILE}: {e}"))?;
    Ok(net)
}

/// The range of `subnet` a task's address comes from: the node's block that holds the
/// address the task already has (a task set up again after a crash) or has a free one,
/// claiming one more block from the control plane when none has ([`estiba_core::netblock`]).
async fn vpc_range(shared: &Arc<Shared>, subnet: Ipv4Net, task_id: &str) -> Result<Range, String> {
    let pool = shared.cfg.net.vpc().name;
    let held = shared.net.ipam.held(&pool, subnet, task_id);
    let mut blocks = blocks(shared, subnet);
    loop {
        for block in &blocks {
            let Some(range) = block_range(*block, subnet) else { continue };
            let inside = |ip: Ipv4Addr| range.net.contains(&ip);
            if held.is_some_and(inside) || (held.is_none() && shared.net.ipam.has_free(&pool, range)) {
                return Ok(range);
            }
        }
        if held.is_some() {
            // An address of a block this node no longer lists: the whole subnet keeps it.
            return block_range(subnet, subnet).ok_or_else(|| format!("subnet {subnet} has no addresses"));
        }
        let block = shared.cp.claim_block(subnet, &blocks).await.map_err(|e| format!("no address block: {e}"))?;
        if blocks.contains(&block) {
            return Err(format!("no free address left in subnet {subnet}"));
        }
        shared.claimed_blocks.lock().unwrap().push(block);
        blocks.push(block);
    }
}

/// The blocks of `subnet` this node holds: published ones and those it claimed since.
pub fn blocks(shared: &Shared, subnet: Ipv4Net) -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> =
        shared.cp.published().routes.map(|r| r.borrow().held(&shared.cfg.node_id, subnet)).unwrap_or_default();
    v.extend(shared.claimed_blocks.lock().unwrap().iter().filter(|b| subnet.contains(*b)));
    v.sort();
    v.dedup();
    v
}

/// An IPAM range over a block's usable addresses.
fn block_range(block: Ipv4Net, subnet: Ipv4Net) -> Option<Range> {
    let (first, last) = estiba_core::netblock::usable(block, subnet)?;
    Some(Range {
        net: block,
        reserved_head: u32::from(first) - u32::from(block.network()),
        reserved_tail: u32::from(block.broadcast()) - 1 - u32::from(last),
    })
}

/// Routes the other nodes' address blocks of the VPC to their machines, as the control plane
/// publishes them, until `shutdown` flips ([`estiba_net::Host::route_blocks`]).
pub async fn run_routes(
    shared: Arc<Shared>,
    mut rx: tokio::sync::watch::Receiver<Arc<estiba_core::netblock::Routes>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let made = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    loop {
        let routes = rx.borrow_and_update().clone();
        let net = shared.cfg.net.vpc();
        let wanted: std::collections::BTreeMap<Ipv4Net, Ipv4Addr> =
            routes.foreign(&shared.cfg.node_id, net.cidr).filter(|(b, _)| net.cidr.contains(b)).collect();
        {
            // Published blocks of its own need no local record any more.
            let mine: Vec<Ipv4Net> =
                routes.routes.iter().filter(|r| r.node == shared.cfg.node_id).map(|r| r.block).collect();
            shared.claimed_blocks.lock().unwrap().retain(|b| !mine.contains(b));
        }
        let (host, made2) = (shared.net.clone(), made.clone());
        let done = tokio::task::spawn_blocking(move || host.route_blocks(&net, &wanted, &mut made2.lock().unwrap()));
        if let Ok(Err(e)) = done.await {
            tracing::warn!(error = %e, "routing other machines' address blocks failed");
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
            // Routes that failed are tried again.
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
        }
    }
}

fn saved(dir: &Path) -> Option<TaskNet> {
    serde_json::from_slice(&std::fs::read(dir.join(FILE)).ok()?).ok()
}

/// After a restart: what was set up for an adopted task, with its ports published again.
pub fn restore(shared: &Shared, task_id: &str, dir: &Path) -> Option<TaskNet> {
    let net = saved(dir)?;
    if !net.published.is_empty() {
        if let Err(e) = shared.net.ports.publish(task_id, &net.published) {
            tracing::warn!(task = task_id, error = %e, "publishing the ports of an adopted task again failed");
        }
    }
    Some(net)
}

/// Undoes `setup`: ports, veth, address, namespace. Blocking, and quick.
pub fn teardown(shared: &Shared, task_id: &str, dir: &Path) {
    shared.task_addresses.lock().unwrap_or_else(|e| e.into_inner()).remove(task_id);
    shared.net.detach(task_id);
    netns::remove(&dir.join("netns"));
}

/// What the API shows of a task's network: the ENI attachment's details (after its
/// `subnetId`), the containers' `networkInterfaces` (awsvpc), and each container's
/// `networkBindings`.
pub struct Shown {
    pub eni_details: Option<Vec<KeyValuePair>>,
    pub interfaces: Option<Vec<NetworkInterface>>,
    pub bindings: Vec<(String, Vec<NetworkBinding>)>,
}

pub fn shown(net: &TaskNet, a: &Assignment) -> Shown {
    let eni = a.task.attachments.iter().flatten().find(|at| at.r#type.as_deref() == Some("ElasticNetworkInterface"));
    let kv = |n: &str, v: String| KeyValuePair { name: Some(n.into()), value: Some(v) };
    let (eni_details, interfaces) = match (eni, net.ip) {
        (Some(eni), Some(ip)) => {
            let attachment = eni.id.clone().unwrap_or_default();
            (
                Some(vec![
                    kv("subnetId", subnet_id(a)),
                    kv("networkInterfaceId", vpc::eni_id(&attachment)),
                    kv("macAddress", net.mac.clone().unwrap_or_default()),
                    kv("privateDnsName", net.private_dns_name.clone().unwrap_or_default()),
                    kv("privateIPv4Address", ip.to_string()),
                ]),
                Some(vec![NetworkInterface {
                    attachment_id: Some(attachment),
                    private_ipv4_address: Some(ip.to_string()),
                    ipv6_address: None,
                }]),
            )
        }
        _ => (None, None),
    };
    let mut bindings: Vec<(String, Vec<NetworkBinding>)> = Vec::new();
    for b in &net.bindings {
        let nb = NetworkBinding {
            bind_ip: Some("0.0.0.0".into()),
            container_port: Some(b.container_port as i32),
            host_port: Some(b.host_port as i32),
            protocol: Some(match b.protocol {
                Protocol::Tcp => TransportProtocol::Tcp,
                Protocol::Udp => TransportProtocol::Udp,
            }),
            ..Default::default()
        };
        match bindings.iter_mut().find(|(c, _)| *c == b.container) {
            Some((_, l)) => l.push(nb),
            None => bindings.push((b.container.clone(), vec![nb])),
        }
    }
    Shown { eni_details, interfaces, bindings }
}

/// Starts the VPC resolver when the agent has the control plane's DNS records: the address
/// goes on the VPC's bridge (reachable from every task network and from the host), the
/// host's own name servers (`/etc/resolv.conf`) answer what is not ours. `None` (logged)
/// when it cannot serve: tasks then use the host's name servers.
pub async fn start_resolver(
    shared: &Arc<Shared>,
    zone: tokio::sync::watch::Receiver<Arc<estiba_dns::Zone>>,
) -> Option<estiba_dns::Resolver> {
    let net = shared.cfg.net.vpc();
    let ip = vpc::resolver_address(net.cidr);
    let host = shared.net.clone();
    let added = tokio::task::spawn_blocking(move || host.add_service_address(&net, ip)).await;
    if let Err(e) = added.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        tracing::warn!(error = %e, "the VPC resolver has no address; tasks use the host's name servers");
        return None;
    }
    let upstreams = estiba_dns::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let handler = estiba_dns::Handler::new(zone, estiba_dns::Forwarder::new(upstreams));
    match estiba_dns::Resolver::serve(&[SocketAddrV4::new(ip, 53).into()], handler).await {
        Ok(r) => {
            tracing::info!(address = %ip, "serving the VPC resolver");
            let _ = shared.resolver.set(ip);
            Some(r)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the VPC resolver cannot serve; tasks use the host's name servers");
            None
        }
    }
}

/// Runs Service Connect's proxy on this node until `shutdown` flips: every table the control
/// plane publishes is applied, each VIP first put on the VPC bridge (a /32, reachable from
/// every task network through its gateway and from the host). A VIP that cannot be added is
/// logged and tried again with the next table.
pub async fn run_service_connect(
    shared: Arc<Shared>,
    mut rx: tokio::sync::watch::Receiver<Arc<estiba_proxy::Table>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let proxy = estiba_proxy::Proxy::new(estiba_proxy::Settings::default());
    let mut added: std::collections::HashSet<Ipv4Addr> = Default::default();
    loop {
        let table = rx.borrow_and_update().clone();
        let new: Vec<Ipv4Addr> = {
            let mut v: Vec<Ipv4Addr> =
                table.listeners.iter().map(|l| *l.addr.ip()).filter(|ip| !added.contains(ip)).collect();
            v.sort();
            v.dedup();
            v
        };
        added.extend(add_vpc_addresses(&shared, new, "Service Connect").await);
        let table = estiba_proxy::Table {
            listeners: table.listeners.iter().filter(|l| added.contains(l.addr.ip())).cloned().collect(),
        };
        proxy.apply(&table).await;
        shared.connect_applied.send_replace(Arc::new(table));
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Puts each of `ips` on the VPC bridge as a /32 (a service the node serves there: Service
/// Connect's VIPs, load balancers); returns those that are there. `what` names the service in
/// the warning about one that cannot be added.
pub async fn add_vpc_addresses(shared: &Shared, ips: Vec<Ipv4Addr>, what: &'static str) -> Vec<Ipv4Addr> {
    if ips.is_empty() {
        return ips;
    }
    let (host, net) = (shared.net.clone(), shared.cfg.net.vpc());
    tokio::task::spawn_blocking(move || {
        ips.into_iter()
            .filter(|ip| match host.add_host_address(&net, *ip) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(address = %ip, error = %e, "a {what} address cannot be added");
                    false
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default()
}

/// Waits (at most a second) until this node's proxy no longer sends connections to `ip`:
/// the control plane takes a task it stops out of the Service Connect table in the same
/// change that asks for the stop, and the proxy applies it within moments.
pub async fn drain_service_connect(shared: &Shared, ip: Ipv4Addr) {
    let mut rx = shared.connect_applied.subscribe();
    let gone = |t: &Arc<estiba_proxy::Table>| !t.listeners.iter().any(|l| l.endpoints.iter().any(|e| *e.ip() == ip));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), rx.wait_for(gone)).await;
}

/// The task's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, shared by its containers.
/// `hosts` holds localhost, the task's own name and address, and the containers'
/// `extraHosts`. A task with a namespace of its own (awsvpc, bridge) asks the VPC resolver
/// when the node runs one (`resolver`), with the region's private DNS domain to search, as in
/// a VPC; otherwise, and in `host` mode, `resolv.conf` is the host's, without loopback name
/// servers when the task cannot reach them.
pub fn write_etc_files(dir: &Path, net: &TaskNet, a: &Assignment, resolver: Option<Ipv4Addr>) -> std::io::Result<()> {
    let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let short = net.hostname.split('.').next().unwrap_or(&net.hostname);
    match net.ip {
        Some(ip) if short != net.hostname => hosts.push_str(&format!("{ip}\t{} {short}\n", net.hostname)),
        Some(ip) => hosts.push_str(&format!("{ip}\t{}\n", net.hostname)),
        None if taskdef::network_mode(&a.taskdef) == NetworkMode::Host => {
            hosts = std::fs::read_to_string("/etc/hosts").unwrap_or(hosts);
        }
        None => hosts.push_str(&format!("127.0.1.1\t{}\n", net.hostname)),
    }
    for c in a.taskdef.container_definitions.iter().flatten() {
        for h in c.extra_hosts.iter().flatten() {
            hosts.push_str(&format!("{}\t{}\n", h.ip_address, h.hostname));
        }
    }
    std::fs::write(dir.join("hosts"), hosts)?;
    std::fs::write(dir.join("hostname"), format!("{}\n", net.hostname))?;
    let own_ns = taskdef::network_mode(&a.taskdef) != NetworkMode::Host;
    let on_a_network = matches!(taskdef::network_mode(&a.taskdef), NetworkMode::Awsvpc | NetworkMode::Bridge);
    if let Some(ip) = resolver.filter(|_| on_a_network) {
        let domain = vpc::private_dns_domain(&scope_of(a).region);
        return std::fs::write(dir.join("resolv.conf"), format!("search {domain}\nnameserver {ip}\n"));
    }
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv: String = resolv
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            let local = w.next() == Some("nameserver") && w.next().is_some_and(|s| s.starts_with("127.") || s == "::1");
            !(own_ns && local)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("resolv.conf"), resolv)
}
