//! Port publishing: a host port forwards to a task's address, in user space (TCP streams
//! spliced with `copy_bidirectional`, UDP datagrams relayed per client), like Docker's
//! `docker-proxy`. User space rather than DNAT rules because it works from the host's
//! loopback without `route_localnet`, needs neither iptables nor nftables on the host, and
//! leaves nothing behind: a listener lives exactly as long as the task's publication (or the
//! process). The cost is that published ports answer only while estiba runs; after a restart
//! the agent publishes the ports of the tasks it adopts again, on the same host ports.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::NetError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// What to publish: `host_port` 0 asks for any free port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub protocol: Protocol,
    pub host_port: u16,
    pub target: SocketAddrV4,
    /// Take any free port when `host_port` is taken (instead of failing).
    #[serde(default)]
    pub or_any: bool,
}

/// What was published: the host port a mapping got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub protocol: Protocol,
    pub host_port: u16,
    pub target: SocketAddrV4,
}

/// How long a UDP client's relay lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Publisher {
    by_owner: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
}

enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

fn bind(m: &Mapping, port: u16) -> std::io::Result<Bound> {
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    let b = match m.protocol {
        Protocol::Tcp => Bound::Tcp(std::net::TcpListener::bind(addr)?),
        Protocol::Udp => Bound::Udp(std::net::UdpSocket::bind(addr)?),
    };
    match &b {
        Bound::Tcp(l) => l.set_nonblocking(true)?,
        Bound::Udp(u) => u.set_nonblocking(true)?,
    }
    Ok(b)
}

impl Publisher {
    /// Binds every mapping of `owner` on all host addresses and forwards what arrives, all or
    /// nothing: when one port cannot be bound, none stays bound. Needs a tokio runtime.
    pub fn publish(&self, owner: &str, mappings: &[Mapping]) -> Result<Vec<Binding>, NetError> {
        let mut bound = Vec::with_capacity(mappings.len());
        for m in mappings {
            let b = match bind(m, m.host_port) {
                Err(e) if m.or_any && e.kind() == std::io::ErrorKind::AddrInUse => bind(m, 0),
                r => r,
            }
            .map_err(|e| NetError::Port { port: m.host_port, protocol: m.protocol, source: e })?;
            bound.push((m, b));
        }
        let mut out = Vec::with_capacity(bound.len());
        let mut handles = Vec::with_capacity(bound.len());
        for (m, b) in bound {
            let (port, h) = match b {
                Bound::Tcp(l) => {
                    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                    let l = TcpListener::from_std(l).map_err(|e| NetError::io("registering a listener", e))?;
                    (port, tokio::spawn(forward_tcp(l, m.target)))
                }
                Bound::Udp(u) => {
                    let port = u.local_addr().map(|a| a.port()).unwrap_or(0);
                    let u = UdpSocket::from_std(u).map_err(|e| NetError::io("registering a socket", e))?;
                    (port, tokio::spawn(relay_udp(Arc::new(u), m.target)))
                }
            };
            handles.push(h);
            out.push(Binding { protocol: m.protocol, host_port: port, target: m.target });
        }
        let mut owners = self.by_owner.lock().unwrap();
        if let Some(old) = owners.insert(owner.to_owned(), handles) {
            old.into_iter().for_each(|h| h.abort());
        }
        Ok(out)
    }

    /// Closes every port `owner` published.
    pub fn unpublish(&self, owner: &str) {
        if let Some(hs) = self.by_owner.lock().unwrap().remove(owner) {
            hs.into_iter().for_each(|h| h.abort());
        }
    }

    /// The owners that have ports published.
    pub fn owners(&self) -> Vec<String> {
        self.by_owner.lock().unwrap().keys().cloned().collect()
    }
}

/// Accepts connections and splices each to `target`. Aborting the task closes the listener;
/// connections already spliced end when either side closes.
async fn forward_tcp(l: TcpListener, target: SocketAddrV4) {
    loop {
        let (mut inbound, _) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            match TcpStream::connect(target).await {
                Ok(mut out) => {
                    let _ = out.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
                Err(e) => tracing::debug!(%target, error = %e, "published port: the task refused the connection"),
            }
        });
    }
}

/// Relays datagrams: each client gets a socket of its own towards `target`, whose answers go
/// back to that client; a client's relay ends after `UDP_IDLE` without traffic.
async fn relay_udp(sock: Arc<UdpSocket>, target: SocketAddrV4) {
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    // Dropped with this future (when the publication ends), which aborts every relay.
    let mut relays = tokio::task::JoinSet::new();
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else { continue };
        let existing = clients.lock().unwrap().get(&from).cloned();
        let up = match existing {
            Some(u) => u,
            None => {
                let Ok(u) = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await else { continue };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                clients.lock().unwrap().insert(from, u.clone());
                let (u2, back, clients2) = (u.clone(), sock.clone(), clients.clone());
                // Answers go back to the client until the relay falls idle.
                while relays.try_join_next().is_some() {}
                relays.spawn(async move {
                    let mut rb = vec![0u8; 65536];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, u2.recv(&mut rb)).await {
                        let _ = back.send_to(&rb[..n], from).await;
                    }
                    clients2.lock().unwrap().remove(&from);
                });
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}
