//! The Network Load Balancer's listeners: TCP (and TLS, terminated here) connections and UDP
//! flows, each to a target chosen by a hash of the client's address and port, so that one
//! flow always reaches one target.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpStream, UdpSocket};

use crate::group::{mac, Group};
use crate::metrics::{Active, Counters};
use crate::{Inner, ListenerConfig, Slot};

/// The flow's hash: the client's address and port, and the listener's port.
pub(crate) fn flow_hash(inner: &Inner, peer: SocketAddr, port: u16) -> u64 {
    let ip = match peer.ip() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    mac(&inner.key, &[&ip, &peer.port().to_be_bytes(), &port.to_be_bytes()])
}

/// The target for a new flow (none registered, or all draining: `None`).
fn target(inner: &Inner, g: &Group, peer: SocketAddr, port: u16) -> Option<SocketAddrV4> {
    let v = g.view.load();
    let i = g.pick(&v, None, Some(flow_hash(inner, peer, port)), inner.now_ms())?;
    Some(v.entries[i].t.addr)
}

pub(crate) async fn tcp(inner: Arc<Inner>, cfg: Arc<ListenerConfig>, client: TcpStream, peer: SocketAddr, port: u16) {
    let _ = client.set_nodelay(true);
    let Some(g) = cfg.nlb_group.as_ref() else { return };
    let lb = &cfg.lb.counters;
    let _active = Active::new(&lb.active_connections, &lb.new_connections);
    let Some(addr) = target(&inner, g, peer, port) else { return };
    Counters::inc(&g.counters.new_connections);
    let mut upstream = match tokio::time::timeout(inner.settings.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        _ => {
            tracing::debug!(target = %addr, "NLB: connect to target failed");
            Counters::inc(&lb.target_connection_errors);
            Counters::inc(&g.counters.target_connection_errors);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let copied = match &cfg.tls {
        None => {
            let mut client = client;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
        }
        Some(acceptor) => match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(client)).await {
            Ok(Ok(mut tls)) => tokio::io::copy_bidirectional(&mut tls, &mut upstream).await,
            _ => return,
        },
    };
    if let Ok((a, b)) = copied {
        lb.processed_bytes.fetch_add(a + b, Relaxed);
        g.counters.processed_bytes.fetch_add(a + b, Relaxed);
    }
}

struct Flow {
    up: Arc<UdpSocket>,
    last_ms: Arc<AtomicU64>,
    replies: tokio::task::JoinHandle<()>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// A UDP listener: datagrams of one client (address and port) go to one target, from one
/// socket of ours, whose replies go back to the client, until the flow is idle for
/// [`crate::Settings::udp_idle_timeout`].
pub(crate) async fn udp(inner: Arc<Inner>, slot: Arc<Slot>, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut since_sweep = 0u32;
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "NLB: UDP receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        since_sweep += 1;
        if since_sweep >= 1024 {
            since_sweep = 0;
            flows.retain(|_, f| !f.replies.is_finished());
        }
        let cfg = slot.cfg.load_full();
        let Some(g) = cfg.nlb_group.as_ref() else { continue };
        let lb = &cfg.lb.counters;
        let now = inner.now_ms();
        let live = flows.get(&peer).is_some_and(|f| !f.replies.is_finished());
        if !live {
            let Some(addr) = target(&inner, g, peer, port) else { continue };
            let up = match UdpSocket::bind("0.0.0.0:0").await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "NLB: cannot open a UDP socket");
                    continue;
                }
            };
            if up.connect(addr).await.is_err() {
                Counters::inc(&lb.target_connection_errors);
                continue;
            }
            let up = Arc::new(up);
            let last_ms = Arc::new(AtomicU64::new(now));
            Counters::inc(&lb.new_flows);
            Counters::inc(&g.counters.new_flows);
            let replies = tokio::spawn(replies(
                inner.clone(),
                cfg.clone(),
                g.clone(),
                sock.clone(),
                up.clone(),
                peer,
                last_ms.clone(),
            ));
            flows.insert(peer, Flow { up, last_ms, replies });
        }
        let Some(f) = flows.get(&peer) else { continue };
        f.last_ms.store(now, Relaxed);
        if f.up.send(&buf[..n]).await.is_ok() {
            lb.processed_bytes.fetch_add(n as u64, Relaxed);
            g.counters.processed_bytes.fetch_add(n as u64, Relaxed);
        }
    }
}

async fn replies(
    inner: Arc<Inner>,
    cfg: Arc<ListenerConfig>,
    g: Arc<Group>,
    sock: Arc<UdpSocket>,
    up: Arc<UdpSocket>,
    peer: SocketAddr,
    last_ms: Arc<AtomicU64>,
) {
    let lb = &cfg.lb.counters;
    let _active = Active::new(&lb.active_flows, &AtomicU64::new(0));
    let idle = inner.settings.udp_idle_timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = (last_ms.load(Relaxed) + idle.as_millis() as u64).saturating_sub(inner.now_ms());
        if left == 0 {
            return;
        }
        match tokio::time::timeout(Duration::from_millis(left), up.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                last_ms.store(inner.now_ms(), Relaxed);
                if sock.send_to(&buf[..n], peer).await.is_ok() {
                    lb.processed_bytes.fetch_add(n as u64, Relaxed);
                    g.counters.processed_bytes.fetch_add(n as u64, Relaxed);
                }
            }
            // ICMP unreachable and the like: the flow stays until idle.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => {}
        }
    }
}
