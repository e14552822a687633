//! Service Connect's data plane on a node: a TCP proxy that listens on virtual addresses
//! (`VIP:port`, one [`Listener`] per client alias) and hands each accepted connection to one
//! endpoint of the listener's pool, picked round robin among those not ejected.
//!
//! - **Retries:** a connect that fails (refused, unreachable, or not done within
//!   [`Settings::connect_timeout`]) is tried again on another endpoint, up to
//!   [`Settings::attempts`] in all; only then is the client's connection closed.
//! - **Outlier detection** (passive, Envoy's `consecutive_5xx` defaults as ECS's Service Connect
//!   proxy uses them; for TCP a failure is a failed connect): after
//!   [`Settings::consecutive_failures`] failures in a row an endpoint is ejected for
//!   [`Settings::base_ejection`] times the number of its ejections (at most
//!   [`Settings::max_ejection`]); a success resets the count. When every endpoint is ejected,
//!   all are candidates again (Envoy's panic mode): a pool never refuses only because of
//!   ejections.
//! - The table is replaced as a whole ([`Proxy::apply`]); an endpoint that stays keeps its
//!   failure count and ejection, a listener that goes stops accepting (connections already
//!   made run to their end), a listener that stays keeps its socket.
//!
//! The hot path is accept, pick (a few atomics under a read lock), connect, then
//! `copy_bidirectional` with `TCP_NODELAY` on both sides: nothing is allocated per connection
//! beyond the spawned task and its copy buffers.
//!
//! **Architecture invariant:** knows nothing of ECS, Cloud Map or the store, and does not touch
//! interfaces: it is given addresses (its caller puts the VIPs on an interface first).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

/// What the node proxies: the control plane builds it, the node applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub listeners: Vec<Listener>,
}

/// One virtual address and the endpoints its connections go to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub addr: SocketAddrV4,
    pub endpoints: Vec<SocketAddrV4>,
}

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Connect attempts per client connection, each on another endpoint when there is one.
    pub attempts: usize,
    pub connect_timeout: Duration,
    /// Failed connects in a row that eject an endpoint.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            attempts: 3,
            connect_timeout: Duration::from_secs(1),
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// An endpoint's passive health, kept across table updates.
#[derive(Debug, Default)]
struct Health {
    failures: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds since the proxy's epoch until which it is ejected (0: not ejected).
    ejected_until: AtomicU64,
}

#[derive(Debug)]
struct Endpoint {
    addr: SocketAddrV4,
    health: Arc<Health>,
}

/// A listener's endpoints, swapped whole on a table update.
#[derive(Debug, Default)]
struct Pool {
    endpoints: RwLock<Arc<[Endpoint]>>,
    next: AtomicUsize,
}

struct Running {
    pool: Arc<Pool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The proxy: its listeners by address. Dropping it closes them (connections already made
/// run to their end).
pub struct Proxy {
    core: Arc<Core>,
    running: Mutex<HashMap<SocketAddrV4, Running>>,
}

/// What the listeners' tasks share.
struct Core {
    settings: Settings,
    epoch: Instant,
}

impl Proxy {
    pub fn new(settings: Settings) -> Arc<Proxy> {
        Arc::new(Proxy {
            core: Arc::new(Core { settings, epoch: Instant::now() }),
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Makes the listeners `table`'s: new ones bound, gone ones closed, every pool replaced.
    /// A listener that cannot bind is logged and tried again on the next call.
    pub async fn apply(&self, table: &Table) {
        let wanted: HashMap<SocketAddrV4, &Listener> = table.listeners.iter().map(|l| (l.addr, l)).collect();
        let mut to_bind = Vec::new();
        {
            let mut running = self.running.lock().unwrap();
            running.retain(|addr, _| wanted.contains_key(addr));
            for (addr, l) in &wanted {
                match running.get(addr) {
                    Some(r) => r.pool.replace(&l.endpoints),
                    None => to_bind.push(*l),
                }
            }
        }
        for l in to_bind {
            match TcpListener::bind(l.addr).await {
                Ok(sock) => {
                    let pool = Arc::new(Pool::default());
                    pool.replace(&l.endpoints);
                    let accept = tokio::spawn(self.core.clone().accept(sock, pool.clone()));
                    self.running.lock().unwrap().insert(l.addr, Running { pool, accept });
                    tracing::debug!(addr = %l.addr, endpoints = l.endpoints.len(), "service connect listener up");
                }
                Err(e) => tracing::warn!(addr = %l.addr, error = %e, "a service connect listener cannot bind"),
            }
        }
    }

    /// The addresses it listens on.
    pub fn listening(&self) -> Vec<SocketAddrV4> {
        self.running.lock().unwrap().keys().copied().collect()
    }

    #[cfg(test)]
    fn now_ms(&self) -> u64 {
        self.core.now_ms()
    }
}

impl Core {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    async fn accept(self: Arc<Self>, sock: TcpListener, pool: Arc<Pool>) {
        loop {
            match sock.accept().await {
                Ok((conn, _)) => {
                    tokio::spawn(self.clone().serve(conn, pool.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "service connect accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve(self: Arc<Self>, mut conn: TcpStream, pool: Arc<Pool>) {
        let _ = conn.set_nodelay(true);
        let Some(mut upstream) = self.connect(&pool).await else { return };
        let _ = upstream.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
    }

    /// A connection to an endpoint of `pool`, trying others when one fails.
    async fn connect(&self, pool: &Pool) -> Option<TcpStream> {
        let endpoints = pool.endpoints.read().unwrap().clone();
        if endpoints.is_empty() {
            return None;
        }
        let mut tried: u64 = 0; // bit i: endpoint i (of the first 64) was tried
        for _ in 0..self.settings.attempts.max(1) {
            let i = self.pick(pool, &endpoints, tried)?;
            tried |= 1u64.checked_shl(i as u32).unwrap_or(0);
            let ep = &endpoints[i];
            match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(ep.addr)).await {
                Ok(Ok(s)) => {
                    ep.health.failures.store(0, Ordering::Relaxed);
                    return Some(s);
                }
                Ok(Err(e)) => {
                    tracing::debug!(endpoint = %ep.addr, error = %e, "service connect: connect failed");
                    self.failed(&ep.health);
                }
                Err(_) => {
                    tracing::debug!(endpoint = %ep.addr, "service connect: connect timed out");
                    self.failed(&ep.health);
                }
            }
        }
        None
    }

    /// The next endpoint round robin, skipping ejected and already tried ones; when every
    /// untried one is ejected, the next untried one; `None` when all were tried.
    fn pick(&self, pool: &Pool, endpoints: &[Endpoint], tried: u64) -> Option<usize> {
        let n = endpoints.len();
        let now = self.now_ms();
        let start = pool.next.fetch_add(1, Ordering::Relaxed);
        let untried = |i: usize| i >= 64 || tried & (1 << i) == 0;
        let mut fallback = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !untried(i) {
                continue;
            }
            if endpoints[i].health.ejected_until.load(Ordering::Relaxed) <= now {
                return Some(i);
            }
            fallback.get_or_insert(i);
        }
        fallback
    }

    fn failed(&self, h: &Health) {
        let f = h.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if f >= self.settings.consecutive_failures {
            h.failures.store(0, Ordering::Relaxed);
            let times = h.ejections.fetch_add(1, Ordering::Relaxed) + 1;
            let d = (self.settings.base_ejection * times).min(self.settings.max_ejection);
            h.ejected_until.store(self.now_ms() + d.as_millis() as u64, Ordering::Relaxed);
        }
    }
}

impl Pool {
    /// Replaces the endpoints, keeping the health of those that stay.
    fn replace(&self, addrs: &[SocketAddrV4]) {
        let mut guard = self.endpoints.write().unwrap();
        let same = guard.len() == addrs.len() && guard.iter().zip(addrs).all(|(e, a)| e.addr == *a);
        if same {
            return;
        }
        let old: HashMap<SocketAddrV4, Arc<Health>> = guard.iter().map(|e| (e.addr, e.health.clone())).collect();
        let new: Vec<Endpoint> =
            addrs.iter().map(|a| Endpoint { addr: *a, health: old.get(a).cloned().unwrap_or_default() }).collect();
        *guard = new.into();
    }
}

#[cfg(test)]
mod tests;
