//! The HTTP front door: one listener for the AWS JSON APIs (`POST /` with `X-Amz-Target`),
//! the OCI registry (`/v2/`, see [`crate::registry`]) and a health check. HTTP/1.1 with
//! keep-alive, served by hyper.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use estiba_api::protocol::{error_body, CredentialScope};
use estiba_core::Scope;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::Server;

/// Response bodies: whole (API answers, no allocation beyond the bytes) or streamed (registry
/// blobs, see [`crate::registry`]).
pub type Body = http_body_util::Either<Full<Bytes>, crate::registry::ChannelBody>;

/// A body sent whole.
pub fn full(b: Bytes) -> Body {
    http_body_util::Either::Left(Full::new(b))
}

/// An error as it goes on the wire: AWS's `__type`, a message and the HTTP status.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub status: u16,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>, status: u16) -> Self {
        ApiError { code: code.into(), message: message.into(), status }
    }
}

impl From<estiba_core::EcsError> for ApiError {
    fn from(e: estiba_core::EcsError) -> Self {
        ApiError { code: e.code.name().into(), status: e.code.status(), message: e.message }
    }
}

/// Serves until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let server = server.clone();
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(handle(&server, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .writev(false)

                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            tracing::warn!("open connections did not finish within 10 s");
        }
    }
    Ok(())
}

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

async fn handle(server: &Server, req: Request<Incoming>) -> Response<Body> {
    let request_id = request_id();

    let started = std::time::Instant::now();
    let path = req.uri().path().to_owned();
    let mut resp = match (req.method(), path.as_str()) {
        (&Method::POST, "/") => aws_json(server, req, &request_id).await,
        (_, p) if p == "/v2" || p.starts_with("/v2/") => match &server.registry {
            Some(reg) => crate::registry::handle(server, reg, req).await,
            None => error_response(&ApiError::new("UnknownOperationException", "the registry is not enabled", 404)),
        },
        (&Method::GET, "/health") | (&Method::GET, "/_estiba/health") => {
            body_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#), "application/json")
        }
        (&Method::GET, "/_estiba/controllers") => {
            let stats = serde_json::to_vec(&server.controller_stats()).unwrap_or_default();
            body_response(StatusCode::OK, Bytes::from(stats), "application/json")
        }
        _ => error_response(&ApiError::new("UnknownOperationException", format!("No route for {path}"), 404)),
    };
    resp.headers_mut().insert("x-amzn-RequestId", HeaderValue::from_str(&request_id).unwrap());
    tracing::debug!(
        path,
        status = resp.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

/// The AWS Query protocol (EC2): a form-encoded body, an XML answer.
async fn ec2_query(server: &Server, req: Request<Incoming>, scope: &Scope, request_id: &str) -> Response<Body> {
    let result = match read_body(req, server.config.max_body_bytes).await {
        Ok(body) => crate::ec2::handle(server, scope, &body, request_id),
        Err(e) => Err(crate::ec2::Ec2Error { code: "RequestEntityTooLarge", message: e.message }),
    };
    match result {
        Ok(xml) => body_response(StatusCode::OK, xml, "text/xml;charset=UTF-8"),
        Err(e) => {
            body_response(StatusCode::BAD_REQUEST, crate::ec2::error_body(&e, request_id), "text/xml;charset=UTF-8")
        }
    }
}

fn body_response(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// The one place errors become HTTP responses.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = body_response(status, Bytes::from(error_body(&e.code, &e.message)), "application/x-amz-json-1.1");
    r.headers_mut()
        .insert("x-amzn-ErrorType", HeaderValue::from_str(&e.code).unwrap_or(HeaderValue::from_static("Error")));
    r
}

/// How much of an oversized body is read (and dropped) before answering 413.
const DRAIN_LIMIT: usize = 64 << 20;

/// Reads a request body, refusing anything larger than `max`.
pub async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            "RequestEntityTooLargeException",
            format!("The request body is larger than the {max} bytes allowed."),
            413,
        )
    };
    let declared =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let mut body = req.into_body();
    if declared.is_none_or(|len| len <= max) {
        match Limited::new(&mut body, max).collect().await {
            Ok(c) => return Ok(c.to_bytes()),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {}
            Err(e) => {
                return Err(ApiError::new(
                    "SerializationException",
                    format!("Could not read the request body: {e}"),
                    400,
                ))
            }
        }
    }
    // Too large. Drain a bounded amount so that a client still sending gets the error rather
    // than a reset connection; past that the connection is closed.
    let mut drained = 0usize;
    while drained < DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(f)) => drained += f.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
    Err(too_large())
}

/// The caller's account and region, from the SigV4 credential scope.
fn scope_of(server: &Server, req: &Request<Incoming>) -> Scope {
    let auth = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match auth.and_then(CredentialScope::parse) {
        Some(cs) => Scope::new(
            cs.account_from_access_key().unwrap_or(&server.config.account_id),
            if cs.region.is_empty() { server.config.default_region.as_str() } else { cs.region },
        ),
        None => Scope::new(server.config.account_id.clone(), server.config.default_region.clone()),
    }
}

async fn aws_json(server: &Server, req: Request<Incoming>, request_id: &str) -> Response<Body> {
    let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let scope = scope_of(server, &req);
    // No target and a form body: the Query protocol (EC2).
    if target.is_empty()
        && req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
    {
        return ec2_query(server, req, &scope, request_id).await;
    }
    let Some((prefix, op_name)) = target.split_once('.') else {
        return error_response(&ApiError::new(
            "UnknownOperationException",
            "The request has no X-Amz-Target header naming an operation.",
            400,
        ));
    };
    let body = match read_body(req, server.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let result = if prefix == estiba_api::ecs::TARGET_PREFIX {
        match estiba_api::ecs::Operation::from_name(op_name) {
            Some(op) => {
                let cx = crate::ecs::Ctx { scope, now: crate::now(), node: server.local_node.clone() };

                crate::ecs::dispatch(server, &cx, op, &body).await
            }
            None => Err(ApiError::new("UnknownOperationException", format!("Unknown operation {target}"), 400)),
        }
    } else if prefix == estiba_api::ecr::TARGET_PREFIX {
        match estiba_api::ecr::Operation::from_name(op_name) {
            Some(op) => {
                let cx = crate::ecr::Ctx { scope, now: crate::now() };
                crate::ecr::dispatch(server, &cx, op, &body).await
            }
            None => Err(ApiError::new("UnknownOperationException", format!("Unknown operation {target}"), 400)),
        }
    } else {
        Err(ApiError::new("UnknownOperationException", format!("Unknown operation {target}"), 400))
    };
    match result {
        Ok(body) => body_response(StatusCode::OK, body, "application/x-amz-json-1.1"),
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(target, code = %e.code, message = %e.message, "request failed");
            } else {
                tracing::debug!(target, code = %e.code, message = %e.message, "request refused");
            }
            error_response(&e)
        }
    }
}
