//! The listener: one HTTP/1.1 port (keep-alive, served by hyper; HTTPS when the server has a
//! certificate, ALPN `http/1.1`) for the AWS APIs
//! ([`crate::front`]), the OCI registry (`/v2/`, [`crate::registry`]), the web console (`GET /` and
//! `/_estiba/console/`, [`crate::console`]), ECS Exec's data channel (a websocket,
//! [`crate::exec`]) and a health check. It only routes by method and path.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use estiba_api::{ApiError, Common};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::Server;

/// Serves plain HTTP until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(server, listener, None, shutdown).await
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves until `shutdown` resolves, then lets open requests finish: HTTPS with `tls` (every
/// route alike: the AWS APIs, the registry, the console and the agent API), else plain HTTP.
pub async fn serve_with(
    server: Arc<Server>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Connections that may upgrade are not `GracefulConnection`s: each watches this flag to
    // shut down gracefully, and holds its watcher so that `graceful` waits for it.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    // At most `max_connections` open: past it, new connections wait in the listen queue
    // until one closes (each connection holds a permit for its life).
    let open = Arc::new(tokio::sync::Semaphore::new(server.config.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let watcher = graceful.watcher();
                let stop = stop_rx.clone();
                let server = server.clone();
                match &acceptor {
                    None => {
                        tokio::spawn(async move {
                            serve_connection(server, (watcher, stop), TokioIo::new(stream), false).await;
                            drop(permit);
                        });
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => serve_connection(server, (watcher, stop), TokioIo::new(tls), true).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake did not finish in time"),
                            }
                        });
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            tracing::warn!("open connections did not finish within 10 s");
        }
    }
    Ok(())
}

/// Serves HTTP/1.1 (keep-alive) on one connection, plain or TLS.
async fn serve_connection<I>(
    server: Arc<Server>,
    (watcher, mut stop): (hyper_util::server::graceful::Watcher, tokio::sync::watch::Receiver<bool>),
    io: I,
    tls: bool,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(handle(&server, req, tls).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // A client that does not send a request's whole head within this is disconnected
        // (request bodies have their own deadline, `body::BODY_DEADLINE`).
        .header_read_timeout(std::time::Duration::from_secs(30))
        .keep_alive(true)
        .writev(false)
        .serve_connection(io, service)
        // ECS Exec's data channel is a websocket ([`crate::exec`]).
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    drop(watcher);
}

/// Made at compile time: a name given as `&str` is parsed and lower-cased on every answer.
const X_AMZN_REQUESTID: hyper::header::HeaderName = hyper::header::HeaderName::from_static("x-amzn-requestid");

/// A request id in UUID form, unique per process run, without a system call per request: a
/// per-thread SplitMix64 sequence seeded once from the OS.
fn request_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap()));
    }
    fn next(s: &Cell<u64>) -> u64 {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let (a, b) = STATE.with(|s| (next(s), next(s)));
    let v = ((a as u128) << 64 | b as u128) & !(0xF000u128 << 64) | (0x4000u128 << 64);
    uuid::Uuid::from_u128(v).to_string()
}

async fn handle(server: &Arc<Server>, req: Request<Incoming>, tls: bool) -> Response<Body> {
    let request_id = request_id();
    // Timed only for the debug log that shows it (a clock read per request otherwise).
    let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
    // A copy of the URI shares its bytes (no allocation, unlike copying the path).
    let uri = req.uri().clone();
    let path = uri.path();
    let mut resp = match (req.method(), path) {
        (&Method::POST, "/") => {
            // ExecuteCommand's stream URL points back where the client came in.
            let origin = crate::exec::Origin::of(server, req.headers(), tls);
            crate::exec::ORIGIN.scope(origin, crate::front::call(server, req, &request_id)).await
        }
        (&Method::GET, p) if p.starts_with(crate::exec::PREFIX) => crate::exec::data_channel(server, req),
        (&Method::POST, p) if p.starts_with("/service/") => crate::front::call(server, req, &request_id).await,
        // A Query request sent as GET (a presigned STS GetCallerIdentity, say).
        (&Method::GET, "/") if req.uri().query().is_some_and(|q| q.contains("Action=")) => {
            crate::front::call(server, req, &request_id).await
        }
        (_, p) if p == "/v2" || p.starts_with("/v2/") => match &server.registry {
            Some(reg) => crate::registry::handle(server, reg, req).await,
            None => not_found("the registry is not enabled"),
        },
        (&Method::GET, "/health") | (&Method::GET, "/_estiba/health") => {
            let body: &'static [u8] = if server.leader.load(std::sync::atomic::Ordering::Relaxed) {
                br#"{"status":"ok","leader":true}"#
            } else {
                br#"{"status":"ok","leader":false}"#
            };
            body::response(StatusCode::OK, Bytes::from_static(body), "application/json")
        }
        (&Method::GET, "/_estiba/controllers") => {
            let stats = serde_json::to_vec(&server.controller_stats()).unwrap_or_default();
            body::response(StatusCode::OK, Bytes::from(stats), "application/json")
        }
        (&Method::GET, "/_estiba/nodes") => {
            let body = serde_json::to_vec(&server.nodes()).unwrap_or_default();
            body::response(StatusCode::OK, Bytes::from(body), "application/json")
        }
        (&Method::GET, "/_estiba/lb-metrics") => {
            let totals = serde_json::to_vec(&server.lb_metrics.totals()).unwrap_or_default();
            body::response(StatusCode::OK, Bytes::from(totals), "application/json")
        }
        (_, p) if p.starts_with(crate::agent_api::PREFIX) => crate::agent_api::handle(server, req).await,
        (_, p) if p.starts_with(crate::peers::PREFIX) => crate::peers::handle(server, req).await,
        (&Method::GET, "/") => crate::console::index(server, req.headers()),
        (&Method::GET, p) if p.starts_with(crate::console::ASSET_PREFIX) => crate::console::asset(
            server.config.console_dir.as_deref(),
            &p[crate::console::ASSET_PREFIX.len()..],
            req.headers(),
        )
        .unwrap_or_else(|| not_found(&format!("No console file {path}"))),
        _ => not_found(&format!("No route for {path}")),
    };
    let id = HeaderValue::from_maybe_shared(Bytes::from(request_id)).expect("a UUID is a header value");
    resp.headers_mut().insert(X_AMZN_REQUESTID, id);
    tracing::debug!(
        path,
        status = resp.status().as_u16(),
        elapsed_us = started.map(|t| t.elapsed().as_micros() as u64),
        "request"
    );
    resp
}

fn not_found(message: &str) -> Response<Body> {
    let e = ApiError::new(Common::UnknownOperationException, message);
    body::response(
        StatusCode::NOT_FOUND,
        Bytes::from(estiba_api::protocol::error_body(e.code, &e.message)),
        "application/json",
    )
}
