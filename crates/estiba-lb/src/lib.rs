//! Elastic Load Balancing v2's data plane on a node: the listeners of Application Load
//! Balancers (HTTP and HTTPS, HTTP/1.1 and HTTP/2 to clients, HTTP/1.1 with keep-alive pools
//! to targets) and Network Load Balancers (TCP, TLS, UDP, TCP_UDP), their rules, their target
//! groups with active health checks, and CloudWatch's counters.
//!
//! **Architecture invariant:** knows nothing of ECS, the ELBv2 API or the store, and does not
//! touch interfaces: its caller puts the load balancers' addresses on interfaces first, then
//! gives it a [`Table`]. The table is applied as a whole ([`Lb::apply`]): listeners that stay
//! keep their sockets (and their connections), target groups and targets that stay keep their
//! pools, health state and counters, load balancers that stay keep their counters; what goes
//! is closed (a listener that goes stops accepting and its connections finish the requests
//! in flight).
//!
//! - **Runtime:** [`Lb::new`] starts the load balancer's own tokio runtime: with
//!   [`Settings::threads`] = 1 a current-thread runtime on one thread of its own (the fastest
//!   for one core), else a multi-thread runtime with that many workers. Everything (accepts,
//!   proxying, health checks) runs there; dropping the [`Lb`] stops it. [`Lb::apply`] is a plain
//!   function and may be called from any thread, inside another runtime or not.
//! - **ALB** (`http`): HTTP listeners speak HTTP/1.1 only (as on AWS: no h2c), HTTPS ones
//!   HTTP/1.1 or HTTP/2 as the client chooses by ALPN (`h2` offered when `http2` is on);
//!   rules evaluated in the table's order, Forward (weighted groups, then a target by the
//!   group's algorithm among healthy non-draining targets, fail-open when none is healthy),
//!   fixed responses and redirects; ELB's own 502/503/504; `X-Forwarded-*` and
//!   `X-Amzn-Trace-Id`; hop-by-hop headers removed; Upgrade (WebSocket) passed through;
//!   `AWSALB` / `AWSALBTG` stickiness; slow start; idle timeout.
//! - **NLB** (`nlb`): TCP connections and UDP flows to a target chosen by a hash of the
//!   client's address and port; TLS listeners terminate TLS and forward TCP.
//! - **Health** (`health`, `group`): AWS's states and reasons; [`Lb::health`] for a full
//!   picture, [`Lb::subscribe_health`] for transitions only.
//! - **Metrics** (`metrics`): [`Lb::metrics`].

mod group;
mod h1;
mod health;
mod http;
mod metrics;
mod nlb;
mod pool;
mod rules;
mod table;
mod tls;

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, watch};

pub use health::{HealthState, Machine, Probe, TargetHealthReport};
pub use metrics::{Counts, MetricsSnapshot};
pub use table::*;

use group::Group;
use metrics::Counters;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Worker threads of the load balancer's runtime (1 or 2 on a node).
    pub threads: usize,
    /// Connecting to a target (ALB and NLB).
    pub connect_timeout: Duration,
    /// A UDP flow with no datagram either way for this long is forgotten (NLB: 120 s).
    pub udp_idle_timeout: Duration,
    /// Idle keep-alive connections kept per target.
    pub pool_max_idle_per_target: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            threads: 1,
            connect_timeout: Duration::from_secs(10),
            udp_idle_timeout: Duration::from_secs(120),
            pool_max_idle_per_target: 1024,
        }
    }
}

/// What every task of the load balancer shares.
pub(crate) struct Inner {
    pub settings: Settings,
    epoch: Instant,
    /// Keys the cookies' hashes and the flow hash.
    pub key: RandomState,
    pub health_tx: broadcast::Sender<TargetHealthReport>,
}

impl Inner {
    /// Milliseconds since the load balancer started (never 0).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// A load balancer's counters, kept while it is in the table.
pub(crate) struct LbCounters {
    pub dimension: String,
    pub counters: Counters,
}

/// What a listener does, rebuilt on each table.
pub(crate) struct ListenerConfig {
    pub protocol: ListenerProtocol,
    pub lb: Arc<LbCounters>,
    pub idle_timeout: Duration,
    pub rules: Vec<http::CompiledRule>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// ALB: every HTTP/1.1 connection (HTTP and HTTPS listeners).
    pub http1: hyper::server::conn::http1::Builder,
    /// ALB: HTTPS listeners with HTTP/2 on, for connections that chose `h2` by ALPN.
    pub http2: Option<hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>>,
    /// NLB: the group its default rule forwards to.
    pub nlb_group: Option<Arc<Group>>,
}

/// A bound socket's current configuration, and the signal that it closes.
pub(crate) struct Slot {
    pub cfg: ArcSwap<ListenerConfig>,
    pub closing: watch::Sender<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Transport {
    Tcp,
    Udp,
}

struct Socket {
    slot: Arc<Slot>,
    task: tokio::task::AbortHandle,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.slot.closing.send(true);
    }
}

struct GroupSlot {
    group: Arc<Group>,
    checker: tokio::task::AbortHandle,
}

impl Drop for GroupSlot {
    fn drop(&mut self) {
        self.checker.abort();
    }
}

#[derive(Default)]
struct State {
    groups: HashMap<String, GroupSlot>,
    lbs: HashMap<String, Arc<LbCounters>>,
    sockets: HashMap<(SocketAddr, Transport), Socket>,
}

enum Rt {
    /// A current-thread runtime driven by a thread of its own until `stop` fires.
    Thread {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    Multi(Option<tokio::runtime::Runtime>),
}

/// The load balancers of one node. Dropping it closes every listener and stops its runtime.
pub struct Lb {
    inner: Arc<Inner>,
    handle: tokio::runtime::Handle,
    state: Mutex<State>,
    rt: Rt,
}

impl Lb {
    /// Starts the runtime (see the crate's documentation). Panics only if the operating
    /// system refuses a thread or an event loop.
    pub fn new(settings: Settings) -> Lb {
        let (handle, rt) = if settings.threads <= 1 {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
            let handle = rt.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name("estiba-lb".into())
                .spawn(move || {
                    let _ = rt.block_on(stopped);
                    rt.shutdown_background();
                })
                .expect("a thread");
            (handle, Rt::Thread { stop: Some(stop), thread: Some(thread) })
        } else {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(settings.threads)
                .thread_name("estiba-lb")
                .enable_all()
                .build()
                .expect("a tokio runtime");
            (rt.handle().clone(), Rt::Multi(Some(rt)))
        };
        let inner = Arc::new(Inner {
            settings,
            epoch: Instant::now(),
            key: RandomState::new(),
            health_tx: broadcast::channel(4096).0,
        });
        Lb { inner, handle, state: Mutex::new(State::default()), rt }
    }

    /// Makes the node's load balancers `table`'s (see the crate's documentation). A listener
    /// that cannot bind (or whose certificate cannot be loaded) is logged and tried again on
    /// the next call.
    pub fn apply(&self, table: Arc<Table>) {
        let _rt = self.handle.enter();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;

        // Target groups: kept by ARN.
        let used: HashSet<&str> = table
            .load_balancers
            .iter()
            .flat_map(|lb| &lb.listeners)
            .flat_map(|l| &l.rules)
            .filter_map(|r| match &r.action {
                Action::Forward { groups, .. } => Some(groups.iter().map(|g| g.arn.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        st.groups.retain(|arn, _| table.target_groups.iter().any(|tg| &tg.arn == arn));
        for tg in &table.target_groups {
            let used = used.contains(tg.arn.as_str());
            let slot = st.groups.entry(tg.arn.clone()).or_insert_with(|| {
                let group = Arc::new(Group::new(tg, &self.inner.key, used));
                let checker = self.handle.spawn(group::check(group.clone(), self.inner.clone())).abort_handle();
                GroupSlot { group, checker }
            });
            slot.group.update(tg, &self.inner.key, used);
        }

        // Load balancers' counters: kept by ARN.
        st.lbs.retain(|arn, _| table.load_balancers.iter().any(|lb| &lb.arn == arn));
        let mut wanted: HashMap<(SocketAddr, Transport), Arc<ListenerConfig>> = HashMap::new();
        for lb in &table.load_balancers {
            let counters = st
                .lbs
                .entry(lb.arn.clone())
                .or_insert_with(|| {
                    Arc::new(LbCounters { dimension: lb.dimension.clone(), counters: Counters::default() })
                })
                .clone();
            for l in &lb.listeners {
                let cfg = match http::compile(lb, l, counters.clone(), &st.groups) {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        tracing::warn!(listener = %l.arn, error = %e, "a load balancer listener cannot start");
                        continue;
                    }
                };
                let transports: &[Transport] = match l.protocol {
                    ListenerProtocol::Udp => &[Transport::Udp],
                    ListenerProtocol::TcpUdp => &[Transport::Tcp, Transport::Udp],
                    _ => &[Transport::Tcp],
                };
                for addr in &l.binds {
                    for t in transports {
                        if wanted.insert((*addr, *t), cfg.clone()).is_some() {
                            tracing::warn!(%addr, listener = %l.arn, "two listeners on one address: the last one wins");
                        }
                    }
                }
            }
        }

        st.sockets.retain(|k, _| wanted.contains_key(k));
        for (key, cfg) in wanted {
            if let Some(s) = st.sockets.get(&key) {
                s.slot.cfg.store(cfg);
                continue;
            }
            match self.bind(key, cfg) {
                Ok(s) => {
                    tracing::debug!(addr = %key.0, transport = ?key.1, "load balancer listener up");
                    st.sockets.insert(key, s);
                }
                Err(e) => tracing::warn!(error = %e, "a load balancer listener cannot bind"),
            }
        }
        for g in st.groups.values() {
            g.group.reports(Some(&self.inner.health_tx));
        }
    }

    fn bind(&self, (addr, transport): (SocketAddr, Transport), cfg: Arc<ListenerConfig>) -> Result<Socket, Error> {
        let err = |source| Error::Bind { addr, source };
        let slot = Arc::new(Slot { cfg: ArcSwap::new(cfg), closing: watch::channel(false).0 });
        let task = match transport {
            Transport::Tcp => {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )
                .map_err(err)?;
                s.set_reuse_address(true).map_err(err)?;
                s.set_nonblocking(true).map_err(err)?;
                s.bind(&addr.into()).map_err(err)?;
                s.listen(4096).map_err(err)?;
                let sock = TcpListener::from_std(s.into()).map_err(err)?;
                self.handle.spawn(accept(self.inner.clone(), slot.clone(), sock, addr.port()))
            }
            Transport::Udp => {
                let s = std::net::UdpSocket::bind(addr).map_err(err)?;
                s.set_nonblocking(true).map_err(err)?;
                let sock = UdpSocket::from_std(s).map_err(err)?;
                self.handle.spawn(nlb::udp(self.inner.clone(), slot.clone(), sock))
            }
        };
        Ok(Socket { slot, task: task.abort_handle() })
    }

    /// The addresses it listens on (TCP and UDP alike).
    pub fn listening(&self) -> Vec<SocketAddr> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<SocketAddr> = st.sockets.keys().map(|k| k.0).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Every registered target's health, as `DescribeTargetHealth` reports it.
    pub fn health(&self) -> Vec<TargetHealthReport> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.groups.values().flat_map(|g| g.group.reports(None)).collect()
    }

    /// Health transitions only (a target's state or reason changed; a new target's first
    /// state), never one event per probe. A receiver that lags should read [`Lb::health`].
    pub fn subscribe_health(&self) -> broadcast::Receiver<TargetHealthReport> {
        self.inner.health_tx.subscribe()
    }

    /// Every load balancer's and target group's counters (cumulative).
    pub fn metrics(&self) -> MetricsSnapshot {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        MetricsSnapshot {
            load_balancers: st.lbs.values().map(|l| (l.dimension.clone(), l.counters.snapshot())).collect(),
            target_groups: st
                .groups
                .values()
                .map(|g| (g.group.dimension.clone(), g.group.counters.snapshot()))
                .collect(),
        }
    }

    /// The runtime the load balancer runs on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        // Sockets and checkers are aborted from this thread, then the runtime stops.
        {
            let _rt = self.handle.enter();
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.sockets.clear();
            st.groups.clear();
        }
        match &mut self.rt {
            Rt::Thread { stop, thread } => {
                if let Some(s) = stop.take() {
                    let _ = s.send(());
                }
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            Rt::Multi(rt) => {
                if let Some(rt) = rt.take() {
                    rt.shutdown_background();
                }
            }
        }
    }
}

async fn accept(inner: Arc<Inner>, slot: Arc<Slot>, sock: TcpListener, port: u16) {
    loop {
        match sock.accept().await {
            Ok((conn, peer)) => {
                let cfg = slot.cfg.load_full();
                match cfg.protocol {
                    ListenerProtocol::Http | ListenerProtocol::Https => {
                        tokio::spawn(http::serve(inner.clone(), slot.clone(), cfg, conn, peer, port));
                    }
                    _ => {
                        tokio::spawn(nlb::tcp(inner.clone(), cfg, conn, peer, port));
                    }
                }
            }
            Err(e) => {
                // Out of descriptors and the like: do not spin.
                tracing::warn!(error = %e, "load balancer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

/// A fast, non-cryptographic random number (xorshift64*), per thread.
pub(crate) fn rand_u64() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Uniform in [0, 1).
pub(crate) fn rand_unit() -> f64 {
    (rand_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests;
