//! The Application Load Balancer's listeners: the rules and targets a request goes to
//! (`route`), and hyper 1 to clients with its own keep-alive pool of hyper client connections
//! (HTTP/1.1) to targets.
//!
//! As on AWS, an HTTP listener speaks HTTP/1.1 only (ALB has no h2c), without sniffing for an
//! HTTP/2 preface: its connections are served by the fast path (`h1`), which hands what it
//! does not do itself to hyper's HTTP/1 server for a spell (`hyper_spell`). An HTTPS listener
//! offers `h2` by ALPN when the load balancer has `routing.http2.enabled`, and serves what the
//! client chose, through hyper.
//!
//! A spell of hyper on an HTTP listener's connection ends as soon as hyper waits for the next
//! request (no request in flight, nothing left to write): its hyper connection finishes
//! (hyper's graceful shutdown of an idle connection, without shutting the socket) and hands
//! the socket back with any bytes it read but did not parse, so that an idle connection keeps
//! none of hyper's buffers. The connection's one timer (`h1::Clock`) enforces the load
//! balancer's idle timeout (no byte either way for that long closes it), so hyper needs no
//! timer per request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::group::{Group, View, GROUP_COOKIE, TARGET_COOKIE};
use crate::metrics::{Active, Counters};
use crate::pool::{Pooled, SendError};
use crate::rules::{all_match, Headers, Matcher, Subject};
use crate::table::{Action, Listener, ListenerProtocol, LoadBalancer};
use crate::{Error, Inner, LbCounters, ListenerConfig, Slot};

pub(crate) type Body = Either<Pooled, Full<Bytes>>;

pub(crate) struct CompiledRule {
    conds: Vec<Matcher>,
    action: CompiledAction,
}

pub(crate) enum CompiledAction {
    Forward {
        /// Each group with its weight's upper bound in [0, total) and its `AWSALBTG` cookie.
        groups: Vec<(Arc<Group>, u32, Option<HeaderValue>)>,
        total: u32,
        sticky: bool,
    },
    Fixed {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    Redirect {
        protocol: String,
        host: String,
        port: String,
        path: String,
        query: String,
        status: StatusCode,
    },
}

/// A listener's configuration from the table (groups by ARN already updated).
pub(crate) fn compile(
    lb: &LoadBalancer,
    l: &Listener,
    counters: Arc<LbCounters>,
    groups: &HashMap<String, crate::GroupSlot>,
) -> Result<ListenerConfig, Error> {
    let mut rules = Vec::with_capacity(l.rules.len());
    let mut nlb_group = None;
    for r in &l.rules {
        let action = match &r.action {
            Action::Forward { groups: wg, stickiness } => {
                let mut total = 0u32;
                let mut gs = Vec::new();
                for w in wg {
                    let Some(g) = groups.get(&w.arn) else {
                        tracing::warn!(listener = %l.arn, group = %w.arn, "a rule forwards to a target group not in the table");
                        continue;
                    };
                    // A single group gets all requests whatever its weight.
                    let weight = if wg.len() == 1 { 1 } else { w.weight };
                    if weight == 0 {
                        continue;
                    }
                    total = total.saturating_add(weight);
                    let cookie = stickiness.and_then(|d| {
                        let v = String::from_utf8_lossy(&g.group.group_cookie).into_owned();
                        HeaderValue::from_str(&format!("{GROUP_COOKIE}={v}; Max-Age={}; Path=/", d.as_secs())).ok()
                    });
                    gs.push((g.group.clone(), total, cookie));
                }
                nlb_group = nlb_group.or_else(|| gs.first().map(|g| g.0.clone()));
                CompiledAction::Forward { groups: gs, total, sticky: stickiness.is_some() && wg.len() > 1 }
            }
            Action::FixedResponse { status, content_type, body } => CompiledAction::Fixed {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                content_type: content_type.as_deref().and_then(|c| HeaderValue::from_str(c).ok()),
                body: Bytes::from(body.clone().unwrap_or_default()),
            },
            Action::Redirect { protocol, host, port, path, query, status } => CompiledAction::Redirect {
                protocol: protocol.clone(),
                host: host.clone(),
                port: port.clone(),
                path: path.clone(),
                query: query.clone(),
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::FOUND),
            },
        };
        rules.push(CompiledRule { conds: r.conditions.iter().map(Matcher::compile).collect(), action });
    }
    let alpn: &[&[u8]] = match l.protocol {
        ListenerProtocol::Https if lb.http2 => &[b"h2", b"http/1.1"],
        ListenerProtocol::Https => &[b"http/1.1"],
        _ => &[],
    };
    let tls = match (l.protocol, &l.certificate) {
        (ListenerProtocol::Https | ListenerProtocol::Tls, Some(c)) => {
            Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(c, alpn)?))
        }
        (ListenerProtocol::Https | ListenerProtocol::Tls, None) => {
            return Err(Error::Certificate(format!("listener {} has no certificate", l.arn)))
        }
        _ => None,
    };
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.writev(true);
    if tls.is_some() {
        // HTTP listeners keep the idle timeout themselves (see the module's documentation).
        http1.timer(TokioTimer::new()).header_read_timeout(lb.idle_timeout);
    }
    let http2 = (l.protocol == ListenerProtocol::Https && lb.http2).then(|| {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new()).keep_alive_interval(None);
        b
    });
    Ok(ListenerConfig {
        protocol: l.protocol,
        lb: counters,
        idle_timeout: lb.idle_timeout,
        rules,
        tls,
        http1,
        http2,
        nlb_group,
    })
}

/// One client connection.
pub(crate) struct Conn {
    pub inner: Arc<Inner>,
    pub slot: Arc<Slot>,
    pub peer: SocketAddr,
    https: bool,
    /// The client's address and the listener's port, rendered once.
    pub client_ip: HeaderValue,
    pub port: HeaderValue,
    /// Requests whose responses are not done (their bodies not dropped).
    pub in_flight: AtomicUsize,
    /// Reads and writes that moved bytes, and whether the last write was refused (the client
    /// reads slowly: hyper may hold unwritten bytes).
    pub ops: AtomicU64,
    pub write_blocked: AtomicBool,
    /// Plain HTTP connections: a protocol switch's target side, for the serving loop to tunnel
    /// to once hyper hands the client's socket back (TLS ones use hyper's upgrades).
    switched: Option<Mutex<Option<hyper::upgrade::OnUpgrade>>>,
}

impl Conn {
    /// One more read or write that moved bytes (only the connection's task calls it).
    fn moved(&self, wrote: Option<bool>) {
        self.ops.store(self.ops.load(Relaxed).wrapping_add(1), Relaxed);
        if let Some(blocked) = wrote {
            self.write_blocked.store(blocked, Relaxed);
        }
    }
}

/// A response body that keeps its request counted in flight until it is dropped.
pub(crate) struct Tracked {
    body: Body,
    conn: Arc<Conn>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Relaxed);
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

pub(crate) type Svc = Pin<Box<dyn std::future::Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

/// A client connection's hyper service: `handle`, each request counted in flight until its
/// response's body is dropped. Its future is boxed: hyper keeps the service's future inline
/// in the connection, and an idle keep-alive connection should not carry a request's worth of
/// state.
pub(crate) fn service(
    c: &Arc<Conn>,
) -> impl hyper::service::Service<Request<Incoming>, Response = Response<Tracked>, Error = Infallible, Future = Svc>
       + Send
       + Unpin
       + 'static {
    let c = c.clone();
    hyper::service::service_fn(move |req| {
        c.in_flight.fetch_add(1, Relaxed);
        let conn = c.clone();
        Box::pin(async move {
            let r = handle(&conn, req).await;
            Ok::<_, Infallible>(r.map(|body| Tracked { body, conn }))
        }) as Svc
    })
}

pub(crate) async fn serve(
    inner: Arc<Inner>,
    slot: Arc<Slot>,
    cfg: Arc<ListenerConfig>,
    tcp: TcpStream,
    peer: SocketAddr,
    port: u16,
) {
    let _ = tcp.set_nodelay(true);
    let lb = cfg.lb.clone();
    let _active = Active::new(&lb.counters.active_connections, &lb.counters.new_connections);
    let closing = slot.closing.subscribe();
    let conn = Arc::new(Conn {
        inner,
        slot,
        peer,
        https: cfg.tls.is_some(),
        client_ip: HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("")),
        port: HeaderValue::from(port),
        in_flight: AtomicUsize::new(0),
        ops: AtomicU64::new(0),
        write_blocked: AtomicBool::new(false),
        switched: cfg.tls.is_none().then(|| Mutex::new(None)),
    });
    match cfg.tls.clone() {
        None => crate::h1::serve(&cfg, &conn, tcp, closing).await,
        // Boxed, so that plain connections' tasks are not the size of a TLS one.
        Some(acceptor) => {
            let io = Counted::new(tcp, lb.clone(), Bytes::new(), Some(conn.clone()));
            let svc = service(&conn);
            Box::pin(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(io)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                };
                // ALPN: `h2` only when offered (an HTTPS listener with HTTP/2 on).
                match &cfg.http2 {
                    Some(h2) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => serve_h2(h2, tls, svc, closing).await,
                    _ => {
                        let conn = cfg.http1.serve_connection(TokioIo::new(tls), svc).with_upgrades();
                        drive(conn, |c| c.graceful_shutdown(), closing).await
                    }
                }
            })
            .await
        }
    }
}

type Tls = tokio_rustls::server::TlsStream<Counted<TcpStream>>;

/// An HTTP/2 connection (boxed here, with its types known, for the compiler to see it `Send`).
fn serve_h2<S>(
    h2: &hyper::server::conn::http2::Builder<TokioExecutor>,
    tls: Tls,
    svc: S,
    closing: tokio::sync::watch::Receiver<bool>,
) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Tracked>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    Box::pin(drive(h2.serve_connection(TokioIo::new(tls), svc), |c| c.graceful_shutdown(), closing))
}

/// Why a plain connection's hyper connection ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The client closed, or the connection is not kept alive.
    Done,
    /// Idle: parked (its socket back, hyper's buffers freed).
    Parked,
    /// The listener left the table, or the idle timeout passed.
    Closing,
}

/// A spell of hyper on an HTTP listener's connection (see the module's documentation): one
/// hyper connection, until it parks (`Some`: the socket back, with what hyper read but did not
/// parse) or the client's connection ends (`None`). `closed` fires when the listener leaves
/// the table; it is not polled again once it has (the spell then ends with `None`).
pub(crate) async fn hyper_spell<S>(
    cfg: &ListenerConfig,
    c: &Conn,
    io: Counted<TcpStream>,
    svc: &mut Option<S>,
    clock: &mut crate::h1::Clock<'_>,
    mut closed: Pin<&mut (impl std::future::Future<Output = ()> + ?Sized)>,
) -> Option<Counted<TcpStream>>
where
    S: hyper::service::HttpService<Incoming, ResBody = Tracked> + Unpin,
    S::Future: Unpin,
{
    let idle = clock.idle;
    let mut seen = c.ops.load(Relaxed);
    let mut conn = cfg.http1.serve_connection(TokioIo::new(io), svc.take()?);
    let mut ended = Ended::Done;
    let done = loop {
        tokio::select! {
            biased;
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            // Hyper waits for the next request (nothing in flight, nothing left to write).
            _ = std::future::poll_fn(|_| {
                if c.in_flight.load(Relaxed) == 0 && !c.write_blocked.load(Relaxed) { Poll::Ready(()) } else { Poll::Pending }
            }), if ended == Ended::Done => {
                ended = Ended::Parked;
                Pin::new(&mut conn).graceful_shutdown();
            }
            _ = clock.tick.as_mut() => {
                let now = tokio::time::Instant::now();
                let ops = c.ops.load(Relaxed);
                if ops != seen {
                    (seen, clock.last) = (ops, now);
                } else if now >= clock.last + idle && (c.in_flight.load(Relaxed) == 0 || c.write_blocked.load(Relaxed)) {
                    ended = Ended::Closing;
                    Pin::new(&mut conn).graceful_shutdown();
                }
                let due = clock.last + idle;
                clock.tick.as_mut().reset(if due > now { due } else { now + idle });
            }
            _ = closed.as_mut(), if ended != Ended::Closing => {
                // The listener left the table: finish what is in flight, then close.
                ended = Ended::Closing;
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    let parts = conn.into_parts();
    *svc = Some(parts.service);
    let mut io = parts.io.into_inner();
    io.prefix = parts.read_buf;
    if let Some(up) = c.switched.as_ref().and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take()) {
        tunnel_plain(io, up).await;
        return None;
    }
    if done.is_err() {
        return None;
    }
    if ended != Ended::Parked {
        use tokio::io::AsyncWriteExt as _;
        let _ = io.shutdown().await;
        return None;
    }
    clock.last = tokio::time::Instant::now();
    Some(io)
}

/// Copies both ways between a plain client connection hyper handed back after a protocol
/// switch (with what it read past the request) and the target's upgraded connection.
async fn tunnel_plain(mut down: Counted<TcpStream>, up: hyper::upgrade::OnUpgrade) {
    match up.await {
        Ok(up) => {
            let _ = tokio::io::copy_bidirectional(&mut down, &mut TokioIo::new(up)).await;
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

/// Serves `conn` until it ends or the listener leaves the table; then `graceful` makes it
/// finish what is in flight and close.
async fn drive<C: std::future::Future>(
    conn: C,
    graceful: impl FnOnce(Pin<&mut C>),
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    tokio::pin!(conn);
    let closed = async move {
        loop {
            let now = *closing.borrow_and_update();
            if now || closing.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = closed => {
            // The listener left the table: finish what is in flight, then close.
            graceful(conn.as_mut());
            let _ = conn.await;
        }
    }
}

/// Where a request goes, as its listener's rules and its group decide.
pub(crate) enum Route<'a> {
    /// Target `i` of view `v` of group `g`; `group_cookie`: the `AWSALBTG` Set-Cookie to add.
    Forward { g: &'a Arc<Group>, group_cookie: Option<&'a HeaderValue>, v: Arc<View>, i: usize },
    /// A fixed response or a redirect.
    Respond(&'a CompiledAction),
    /// No rule matches, or no target can take it (ELB's 503).
    Unavailable,
}

/// The rule a request matches, and for Forward its group (by its `AWSALBTG` cookie when group
/// stickiness is on, else by weight) and target (see `Group::pick`). Counts nothing.
pub(crate) fn route<'a>(cfg: &'a ListenerConfig, s: &Subject<'_>, now_ms: u64) -> Route<'a> {
    let Some(rule) = cfg.rules.iter().find(|r| all_match(&r.conds, s)) else { return Route::Unavailable };
    let CompiledAction::Forward { groups, total, sticky } = &rule.action else { return Route::Respond(&rule.action) };
    let g = if groups.len() <= 1 {
        groups.first()
    } else {
        let by_cookie = sticky
            .then(|| cookie(s.headers, GROUP_COOKIE))
            .flatten()
            .and_then(|v| groups.iter().find(|g| &*g.0.group_cookie == v));
        by_cookie.or_else(|| {
            let r = (crate::rand_u64() % u64::from((*total).max(1))) as u32;
            groups.iter().find(|g| r < g.1)
        })
    };
    let Some((g, _, group_cookie)) = g else { return Route::Unavailable };
    let v = g.view.load_full();
    let sticky = if v.stickiness { cookie(s.headers, TARGET_COOKIE) } else { None };
    match g.pick(&v, sticky, None, now_ms) {
        Some(i) => Route::Forward { g, group_cookie: group_cookie.as_ref(), v, i },
        None => Route::Unavailable,
    }
}

async fn handle(c: &Conn, req: Request<Incoming>) -> Response<Body> {
    let cfg = c.slot.cfg.load_full();
    let lb = &cfg.lb.counters;
    Counters::inc(&lb.request_count);
    let (mut parts, body) = req.into_parts();
    let subject = Subject::of(&parts, c.peer.ip());
    let (g, group_cookie, v, i) = match route(&cfg, &subject, c.inner.now_ms()) {
        Route::Forward { g, group_cookie, v, i } => (g, group_cookie, v, i),
        Route::Unavailable | Route::Respond(CompiledAction::Forward { .. }) => {
            return elb(lb, StatusCode::SERVICE_UNAVAILABLE)
        }
        Route::Respond(CompiledAction::Fixed { status, content_type, body }) => {
            let mut r = Response::new(Either::Right(Full::new(body.clone())));
            *r.status_mut() = *status;
            if let Some(ct) = content_type {
                r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
            }
            return r;
        }
        Route::Respond(CompiledAction::Redirect { protocol, host, port, path, query, status }) => {
            let to = redirect(c, &subject, [protocol, host, port, path, query]);
            let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
            *r.status_mut() = *status;
            match HeaderValue::from_str(&to) {
                Ok(v) => r.headers_mut().insert(header::LOCATION, v),
                Err(_) => return elb(lb, StatusCode::BAD_REQUEST),
            };
            Counters::inc(&lb.elb_3xx);
            return r;
        }
    };
    Counters::inc(&g.counters.request_count);
    let e = &v.entries[i];

    // The request to the target.
    let upgrade = parts.version == Version::HTTP_11 && is_upgrade(&parts.headers);
    let client_upgrade = if upgrade { parts.extensions.remove::<hyper::upgrade::OnUpgrade>() } else { None };
    let h = &mut parts.headers;
    strip_hop_by_hop(h, upgrade);
    if !h.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            h.insert(header::HOST, a);
        }
    }
    forwarded_for(h, &c.client_ip);
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if c.https { "https" } else { "http" }));
    h.insert(X_FORWARDED_PORT, c.port.clone());
    if !h.contains_key(X_AMZN_TRACE_ID) {
        h.insert(X_AMZN_TRACE_ID, trace_id());
    }
    if parts.uri.authority().is_some() {
        // HTTP/2 (or an absolute-form request): origin form to the target.
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = Uri::try_from(pq) else { return elb(lb, StatusCode::BAD_REQUEST) };
        parts.uri = uri;
    }
    parts.version = Version::HTTP_11;
    let req = Request::from_parts(parts, body);

    e.t.outstanding.fetch_add(1, Relaxed);
    let start = Instant::now();
    let sent = tokio::time::timeout(cfg.idle_timeout, crate::pool::send(&c.inner, &e.t, req)).await;
    e.t.outstanding.fetch_sub(1, Relaxed);
    let (mut resp, sender) = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(err)) => {
            tracing::debug!(target = %e.t.addr, error = ?err, "target request failed");
            if matches!(err, SendError::Connect) {
                Counters::inc(&lb.target_connection_errors);
                Counters::inc(&g.counters.target_connection_errors);
            }
            return elb(lb, StatusCode::BAD_GATEWAY);
        }
        Err(_) => return elb(lb, StatusCode::GATEWAY_TIMEOUT),
    };
    let us = start.elapsed().as_micros() as u64;
    let status = resp.status().as_u16();
    for k in [lb, &g.counters] {
        k.target_status(status);
        k.response_time(us);
    }

    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(resp.headers_mut(), upgrade && switched);
    if let Some(sc) = e.set_cookie.as_ref().filter(|_| v.stickiness) {
        resp.headers_mut().append(header::SET_COOKIE, sc.clone());
    }
    if let Some(sc) = group_cookie {
        resp.headers_mut().append(header::SET_COOKIE, sc.clone());
    }
    if switched {
        let up = resp.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
        match (&c.switched, client_upgrade, up) {
            (Some(slot), _, up @ Some(_)) => *slot.lock().unwrap_or_else(|e| e.into_inner()) = up,
            (None, Some(down), Some(up)) => {
                tokio::spawn(tunnel(down, up));
            }
            _ => {}
        }
        // The connection is the tunnel's now: not back to the pool.
        return resp.map(|_| Either::Right(Full::new(Bytes::new())));
    }
    let max_idle = c.inner.settings.pool_max_idle_per_target;
    resp.map(|b| Either::Left(Pooled::new(b, sender, e.t.clone(), max_idle)))
}

/// Copies both ways between an upgraded client connection and its target's.
async fn tunnel(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(down, up) {
        Ok((down, up)) => {
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up)).await;
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade")))
}

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

// Made once (`from_static` in a `const`), not parsed on each request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn is_hop(n: &HeaderName) -> bool {
    HOP_BY_HOP.contains(n) || n == KEEP_ALIVE || n == PROXY_CONNECTION
}

/// Removes hop-by-hop headers (and those `Connection` names); an upgrade keeps `Upgrade` and
/// `Connection: upgrade`.
fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    if !h.keys().any(is_hop) {
        return;
    }
    // Other headers `Connection` names (its usual tokens name none, or one removed anyway:
    // no allocation for them).
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| {
            !t.is_empty() && ![&b"keep-alive"[..], b"close", b"upgrade"].iter().any(|k| t.eq_ignore_ascii_case(k))
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    for n in named {
        if !(upgrade && n == header::UPGRADE) {
            h.remove(n);
        }
    }
    for n in HOP_BY_HOP {
        if !(upgrade && n == header::UPGRADE) {
            h.remove(n);
        }
    }
    h.remove(KEEP_ALIVE);
    h.remove(PROXY_CONNECTION);
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Appends the client's address to `X-Forwarded-For`.
fn forwarded_for(h: &mut HeaderMap, ip: &HeaderValue) {
    let Some(prev) = h.get(&X_FORWARDED_FOR) else {
        h.insert(X_FORWARDED_FOR, ip.clone());
        return;
    };
    let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
    v.extend_from_slice(prev.as_bytes());
    v.extend_from_slice(b", ");
    v.extend_from_slice(ip.as_bytes());
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(v)) {
        h.insert(X_FORWARDED_FOR, v);
    }
}

/// `Root=1-<epoch seconds, 8 hex>-<96 random bits, 24 hex>`.
pub(crate) fn trace_id() -> HeaderValue {
    HeaderValue::from_bytes(&trace_id_bytes())
        .unwrap_or(HeaderValue::from_static("Root=1-00000000-000000000000000000000000"))
}

pub(crate) fn trace_id_bytes() -> [u8; 40] {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as u32;
    let mut buf = *b"Root=1-00000000-000000000000000000000000";
    hex(&mut buf[7..15], u64::from(secs));
    hex(&mut buf[16..24], crate::rand_u64() >> 32);
    hex(&mut buf[24..40], crate::rand_u64());
    buf
}

/// The low `out.len()` hex digits of `v`, most significant first.
fn hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'a>(h: Headers<'a>, name: &str) -> Option<&'a [u8]> {
    h.find_map(&header::COOKIE, |v| {
        v.split(|&b| b == b';').find_map(|kv| {
            let kv = kv.trim_ascii();
            let rest = kv.strip_prefix(name.as_bytes())?;
            rest.strip_prefix(b"=")
        })
    })
}

/// AWS's redirect: each part with `#{protocol}`, `#{host}`, `#{port}`, `#{path}` (without its
/// leading `/`) and `#{query}` replaced by the request's.
fn redirect(c: &Conn, s: &Subject<'_>, [protocol, host, port, path, query]: [&String; 5]) -> String {
    let req_host = String::from_utf8_lossy(crate::rules::strip_port(s.host)).into_owned();
    let req_proto = if c.https { "https" } else { "http" };
    let req_port = c.port.to_str().unwrap_or("");
    let req_path = s.path.strip_prefix('/').unwrap_or(s.path);
    let req_query = s.query;
    let fill = |s: &str| {
        s.replace("#{protocol}", req_proto)
            .replace("#{host}", &req_host)
            .replace("#{port}", req_port)
            .replace("#{path}", req_path)
            .replace("#{query}", req_query)
    };
    let proto = fill(protocol).to_ascii_lowercase();
    let port = fill(port);
    let default_port = matches!((proto.as_str(), port.as_str()), ("http", "80") | ("https", "443"));
    let mut out = format!("{proto}://{}", fill(host));
    if !default_port && !port.is_empty() {
        out.push(':');
        out.push_str(&port);
    }
    let path = fill(path);
    if !path.starts_with('/') {
        out.push('/');
    }
    out.push_str(&path);
    let q = fill(query);
    if !q.is_empty() {
        out.push('?');
        out.push_str(&q);
    }
    out
}

/// A response the load balancer makes itself, counted as ELB's.
fn elb(lb: &Counters, status: StatusCode) -> Response<Body> {
    lb.elb_status(status.as_u16());
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(elb_body(status).as_bytes()))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::SERVER, HeaderValue::from_static("awselb/2.0"));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

/// The body of ELB's own error response.
pub(crate) fn elb_body(status: StatusCode) -> &'static str {
    match status.as_u16() {
        502 => "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
        503 => "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n",
        504 => "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n",
        _ => "<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n</body>\r\n</html>\r\n",
    }
}

/// A client connection that counts its bytes (ProcessedBytes) and, for an HTTP listener,
/// its activity; `prefix` is read first (bytes a parked hyper connection read but did not use).
pub(crate) struct Counted<T> {
    pub io: T,
    pub lb: Arc<LbCounters>,
    prefix: Bytes,
    conn: Option<Arc<Conn>>,
}

impl<T> Counted<T> {
    pub(crate) fn new(io: T, lb: Arc<LbCounters>, prefix: Bytes, conn: Option<Arc<Conn>>) -> Counted<T> {
        Counted { io, lb, prefix, conn }
    }

    /// The connection, and the bytes read first (what a parked hyper connection left).
    pub(crate) fn into_parts(self) -> (T, Bytes) {
        (self.io, self.prefix)
    }

    fn wrote(&self, r: &Poll<std::io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) => {
                self.lb.counters.processed_bytes.fetch_add(*n as u64, Relaxed);
                if let Some(c) = &self.conn {
                    c.moved(Some(false));
                }
            }
            Poll::Pending => {
                if let Some(c) = &self.conn {
                    c.moved(Some(true));
                }
            }
            Poll::Ready(Err(_)) => {}
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.lb.counters.processed_bytes.fetch_add(n as u64, Relaxed);
            if let Some(c) = &self.conn {
                c.moved(None);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_for_appends() {
        let ip = HeaderValue::from_static("127.0.0.1");
        let mut h = HeaderMap::new();
        forwarded_for(&mut h, &ip);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "127.0.0.1");
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        forwarded_for(&mut h, &ip);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
    }

    #[test]
    fn trace_id_shape() {
        let t = trace_id();
        let s = t.to_str().unwrap();
        let parts: Vec<&str> = s.strip_prefix("Root=1-").unwrap().split('-').collect();
        assert_eq!(parts[0].len(), 8);
        assert_eq!(parts[1].len(), 24);
        assert!(s.chars().skip(7).all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_ne!(trace_id(), t);
    }

    #[test]
    fn cookies_by_name() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; AWSALBTG=tg; AWSALB=t"));
        assert_eq!(cookie(Headers::Map(&h), "AWSALB"), Some(&b"t"[..]));
        assert_eq!(cookie(Headers::Map(&h), "AWSALBTG"), Some(&b"tg"[..]));
        assert_eq!(cookie(Headers::Map(&h), "b"), None);
    }
}
