//! The HTTP listener's fast path: a hand-written HTTP/1.1 proxy for clear-text connections.
//!
//! Why it exists: through hyper (its HTTP/1 server to the client, its client connection to the
//! target with its own task and the channels between the two, a `HeaderMap` each way, a
//! `Request` and a `Response` with their extensions, boxed service futures), a proxied request
//! cost 37.9k user-space instructions (callgrind on the `lb-bench` example, keep-alive GETs on
//! 8 connections to an nginx target: the difference between 8000 and 4000 requests, divided by
//! 4000), and the ALB did 0.83x HAProxy's requests per second in `cargo xtask bench lb`. This
//! path does the same work in 11.0k (`httparse` about 2.2k of them), in one task per client
//! connection, sharing nothing per request with other tasks but the counters and the target's
//! pool.
//!
//! What it does, per request, in the client connection's own task: parse the head with
//! `httparse` (in the connection's read buffer, no copy), evaluate the listener's rules and pick
//! a target exactly as the hyper path does (`http::route`), write the target's head (hop-by-hop
//! headers dropped, `X-Forwarded-For` / `-Proto` / `-Port` and `X-Amzn-Trace-Id` added) into one
//! buffer, then pass the body (`Content-Length` or chunked, framed but not re-encoded) and the
//! response (head rewritten the same way, stickiness cookies added) through. Connections to
//! targets are raw keep-alive sockets in the target's pool (`pool::Pool`), checked for a close
//! before reuse. ELB's 502 and 504 are its own; everything else unusual goes to the hyper path
//! for one spell (`http::hyper_spell`) with the bytes read so far, and the connection comes back
//! here when hyper parks it: HTTP/1.0, `Upgrade` (WebSocket), `Expect`, absolute-form targets,
//! `Transfer-Encoding` other than `chunked`, malformed heads (hyper's 400), fixed responses,
//! redirects and ELB's 503.
//!
//! Between requests the connection holds no buffer (they go back to a small per-thread cache as
//! soon as a response is written and no pipelined bytes wait): an idle keep-alive connection
//! is its task, its socket and its timer.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::group::{Group, TargetState, View};
use crate::http::{Conn, Counted, Route};
use crate::metrics::Counters;
use crate::rules::{Headers, Subject};
use crate::ListenerConfig;

/// As hyper's server: at most 100 headers (more: hyper answers), a head of at most hyper's
/// largest read buffer (more: 431).
const MAX_HEADERS: usize = 100;
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// What a read asks for at least.
const READ: usize = 8192;

/// Why an I/O step stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// An error, or the peer closed.
    Io,
}

/// An HTTP listener's connection's idle clock, shared with its hyper spells: one timer for
/// the connection's life, due when it would idle out; it fires about once per idle timeout,
/// and then looks at the activity since (reads and writes that moved bytes, counted in
/// `moved`), so that requests cost it neither a timer update nor a reading of the time.
pub(crate) struct Clock<'a> {
    pub tick: Pin<&'a mut tokio::time::Sleep>,
    /// When activity was last seen.
    pub last: tokio::time::Instant,
    pub idle: Duration,
    moved: u64,
    seen: u64,
}

impl Clock<'_> {
    /// `f`, unless nothing moved (`last`) for the idle timeout first.
    async fn within<T>(&mut self, f: impl Future<Output = T>) -> Result<T, Stop> {
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            while self.tick.as_mut().poll(cx).is_ready() {
                let now = tokio::time::Instant::now();
                if self.moved != self.seen {
                    (self.seen, self.last) = (self.moved, now);
                } else if now >= self.last + self.idle {
                    return Poll::Ready(Err(Stop::Idle));
                }
                let due = self.last + self.idle;
                self.tick.as_mut().reset(if due > now { due } else { now + self.idle });
            }
            Poll::Pending
        })
        .await
    }

    /// Reads what `s` has (at least 1 byte, or 0 at its end) onto `buf`.
    async fn read(&mut self, s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, Stop> {
        if buf.capacity() - buf.len() < READ / 2 {
            buf.reserve(READ);
        }
        let n = self.within(s.read_buf(buf)).await?.map_err(|_| Stop::Io)?;
        self.moved += 1;
        Ok(n)
    }

    async fn write(&mut self, s: &mut TcpStream, mut buf: &[u8]) -> Result<(), Stop> {
        while !buf.is_empty() {
            let n = self.within(s.write(buf)).await?.map_err(|_| Stop::Io)?;
            if n == 0 {
                return Err(Stop::Io);
            }
            self.moved += 1;
            buf = &buf[n..];
        }
        Ok(())
    }
}

/// Serves an HTTP listener's connection until it ends (see the module's documentation).
pub(crate) async fn serve(
    cfg: &ListenerConfig,
    c: &Arc<Conn>,
    mut tcp: TcpStream,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let tick = std::pin::pin!(tokio::time::sleep(cfg.idle_timeout));
    let mut clock = Clock { tick, last: tokio::time::Instant::now(), idle: cfg.idle_timeout, moved: 0, seen: 0 };
    // Made once: registering with the watch on every poll would cost each request a lock.
    let mut closed = std::pin::pin!(async move {
        let _ = closing.wait_for(|c| *c).await;
    });
    let bytes = &cfg.lb.counters.processed_bytes;
    let mut svc = None;
    let mut rbuf: Vec<u8> = Vec::new();
    loop {
        if rbuf.is_empty() {
            // Idle: no buffer held until the client sends.
            recycle(std::mem::take(&mut rbuf));
            tokio::select! {
                biased;
                _ = closed.as_mut() => break,
                r = clock.within(std::future::poll_fn(|cx| tcp.poll_read_ready(cx))) => match r {
                    Ok(Ok(())) => rbuf = buffer(),
                    _ => return,
                },
            }
        } else if std::future::poll_fn(|cx| Poll::Ready(closed.as_mut().poll(cx).is_ready())).await {
            // The listener left the table with pipelined requests waiting.
            break;
        }
        match exchange(c, &mut tcp, &mut rbuf, &mut clock, bytes).await {
            Step::Next => {}
            Step::Close => break,
            Step::Hyper => {
                let io = Counted::new(tcp, cfg.lb.clone(), Bytes::from(std::mem::take(&mut rbuf)), Some(c.clone()));
                if svc.is_none() {
                    svc = Some(crate::http::service(c));
                }
                // Boxed: an idle connection's task should not be the size of a hyper connection.
                match Box::pin(crate::http::hyper_spell(cfg, c, io, &mut svc, &mut clock, closed.as_mut())).await {
                    Some(io) => {
                        let (io, prefix) = io.into_parts();
                        tcp = io;
                        rbuf = Vec::from(prefix);
                    }
                    None => return,
                }
            }
        }
    }
    let _ = tcp.shutdown().await;
}

/// What a request's exchange leaves the connection to do.
enum Step {
    /// Serve the next request.
    Next,
    Close,
    /// Hand the connection to hyper, with `rbuf` (the request, unparsed).
    Hyper,
}

/// How a message's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// At the connection's end (responses only).
    Close,
}

/// A request the fast path forwards.
struct Forward {
    head_len: usize,
    body: Framing,
    /// The client asked to close after this response.
    close: bool,
    /// A HEAD request (its response has no body whatever its head says).
    head: bool,
    group: Arc<Group>,
    group_cookie: Option<HeaderValue>,
    view: Arc<View>,
    i: usize,
}

enum Parsed {
    Partial,
    Hyper,
    Forward(Forward),
}

/// Header names the fast path looks at, by length first.
fn is(name: &str, lower: &str) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// Hop-by-hop headers (those `Connection` names aside): never forwarded either way.
fn hop_by_hop(name: &str) -> bool {
    match name.len() {
        2 => is(name, "te"),
        7 => is(name, "trailer") || is(name, "upgrade"),
        10 => is(name, "connection") || is(name, "keep-alive"),
        16 => is(name, "proxy-connection"),
        18 => is(name, "proxy-authenticate"),
        _ => false,
    }
}

/// The tokens of `Connection` values: `close` seen, and other headers named (up to 8; more,
/// or a token naming an upgrade, gives `None`).
struct Tokens<'a> {
    close: bool,
    upgrade: bool,
    named: [&'a [u8]; 8],
    n: usize,
}

impl<'a> Tokens<'a> {
    fn new() -> Self {
        Tokens { close: false, upgrade: false, named: [&[]; 8], n: 0 }
    }

    fn add(&mut self, v: &'a [u8]) -> Option<()> {
        for t in v.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty()) {
            if t.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                *self.named.get_mut(self.n)? = t;
                self.n += 1;
            }
        }
        Some(())
    }

    fn names(&self, name: &str) -> bool {
        self.named[..self.n].iter().any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

fn content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Parses the head at the start of `buf`; when the fast path forwards it, routes it and writes
/// the target's head into `out`.
fn parse_request(c: &Conn, cfg: &ListenerConfig, buf: &[u8], out: &mut Vec<u8>) -> Parsed {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut storage) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hyper,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else { return Parsed::Hyper };
    if !target.starts_with('/') || method == "CONNECT" {
        return Parsed::Hyper;
    }
    let headers: &[httparse::Header<'_>] = req.headers;
    let (mut length, mut chunked, mut host, mut xff, mut trace) = (None, false, None, None, false);
    let mut tokens = Tokens::new();
    for h in headers {
        let n = h.name;
        match n.len() {
            4 if is(n, "host") => host = host.or(Some(h.value)),
            6 if is(n, "expect") => return Parsed::Hyper,
            7 if is(n, "upgrade") => return Parsed::Hyper,
            10 if is(n, "connection") && tokens.add(h.value).is_none() => return Parsed::Hyper,
            14 if is(n, "content-length") => match (content_length(h.value), length) {
                (Some(l), None) => length = Some(l),
                (Some(l), Some(prev)) if l == prev => {}
                _ => return Parsed::Hyper,
            },
            15 if is(n, "x-forwarded-for") => xff = xff.or(Some(h.value)),
            15 if is(n, "x-amzn-trace-id") => trace = true,
            17 if is(n, "transfer-encoding") => {
                if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Parsed::Hyper;
                }
                chunked = true;
            }
            _ => {}
        }
    }
    if tokens.upgrade || (chunked && length.is_some()) {
        return Parsed::Hyper;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let subject =
        Subject { method, path, query, host: host.unwrap_or(b""), headers: Headers::Raw(headers), client: c.peer.ip() };
    let Route::Forward { g, group_cookie, v, i } = crate::http::route(cfg, &subject, c.inner.now_ms()) else {
        return Parsed::Hyper;
    };

    // The target's head.
    out.clear();
    out.reserve(head_len + 192);
    for p in [method.as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1\r\n"] {
        out.extend_from_slice(p);
    }
    for h in headers {
        let n = h.name;
        let skip = hop_by_hop(n)
            || match n.len() {
                15 => is(n, "x-forwarded-for"),
                16 => is(n, "x-forwarded-port"),
                17 => is(n, "x-forwarded-proto"),
                _ => false,
            }
            || (tokens.n > 0 && tokens.names(n));
        if !skip {
            for p in [n.as_bytes(), b": ", h.value, b"\r\n"] {
                out.extend_from_slice(p);
            }
        }
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prev) = xff {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    for p in [c.client_ip.as_bytes(), b"\r\nx-forwarded-proto: http\r\nx-forwarded-port: ", c.port.as_bytes(), b"\r\n"]
    {
        out.extend_from_slice(p);
    }
    if !trace {
        out.extend_from_slice(b"x-amzn-trace-id: ");
        out.extend_from_slice(&crate::http::trace_id_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let body = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) if n > 0 => Framing::Length(n),
        _ => Framing::Empty,
    };
    Parsed::Forward(Forward {
        head_len,
        body,
        close: tokens.close,
        head: method == "HEAD",
        group: g.clone(),
        group_cookie: group_cookie.cloned(),
        view: v,
        i,
    })
}

/// A response's head from a target.
struct Response {
    len: usize,
    status: u16,
    body: Framing,
    /// The target keeps the connection open after it.
    keep_alive: bool,
}

/// Parses a response head at the start of `buf`; unless it is informational (1xx), writes the
/// client's head into `out`. `None`: incomplete; `Err`: not a response to pass on (502).
fn parse_response(buf: &[u8], f: &Forward, out: &mut Vec<u8>) -> Result<Option<Response>, ()> {
    // Room for 24 headers first (httparse wants them initialised), as many as hyper's client
    // takes when that is not enough.
    let mut storage = [httparse::EMPTY_HEADER; 24];
    let mut resp = httparse::Response::new(&mut storage);
    match resp.parse(buf) {
        Err(httparse::Error::TooManyHeaders) => {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut storage);
            let r = resp.parse(buf);
            respond(r, resp, f, out)
        }
        r => respond(r, resp, f, out),
    }
}

/// `parse_response`'s work once parsed.
fn respond(
    parsed: httparse::Result<usize>,
    resp: httparse::Response<'_, '_>,
    f: &Forward,
    out: &mut Vec<u8>,
) -> Result<Option<Response>, ()> {
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else { return Err(()) };
    if status < 200 {
        // 101 only answers an upgrade, which hyper serves.
        return if status == 101 {
            Err(())
        } else {
            Ok(Some(Response { len, status, body: Framing::Empty, keep_alive: true }))
        };
    }
    let headers: &[httparse::Header<'_>] = resp.headers;
    let (mut length, mut coding, mut date) = (None, None::<&[u8]>, false);
    let mut tokens = Tokens::new();
    for h in headers {
        let n = h.name;
        match n.len() {
            4 if is(n, "date") => date = true,
            10 if is(n, "connection") && tokens.add(h.value).is_none() => return Err(()),
            14 if is(n, "content-length") => match (content_length(h.value), length) {
                (Some(l), None) => length = Some(l),
                (Some(l), Some(prev)) if l == prev => {}
                _ => return Err(()),
            },
            17 if is(n, "transfer-encoding") => coding = Some(h.value),
            _ => {}
        }
    }
    let body = if f.head || status == 204 || status == 304 {
        Framing::Empty
    } else if let Some(te) = coding {
        let last = te.rsplit(|&b| b == b',').next().unwrap_or(b"").trim_ascii();
        if last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let keep_alive = version == 1 && !tokens.close && body != Framing::Close;
    let close = f.close || body == Framing::Close;

    out.clear();
    out.reserve(len + 128);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    let reason = resp
        .reason
        .filter(|r| !r.is_empty())
        .or_else(|| StatusCode::from_u16(status).ok()?.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        let n = h.name;
        let skip = hop_by_hop(n) || (coding.is_some() && is(n, "content-length")) || (tokens.n > 0 && tokens.names(n));
        if !skip {
            for p in [n.as_bytes(), b": ", h.value, b"\r\n"] {
                out.extend_from_slice(p);
            }
        }
    }
    let e = &f.view.entries[f.i];
    let cookies = [e.set_cookie.as_ref().filter(|_| f.view.stickiness), f.group_cookie.as_ref()];
    for sc in cookies.into_iter().flatten() {
        for p in [&b"set-cookie: "[..], sc.as_bytes(), b"\r\n"] {
            out.extend_from_slice(p);
        }
    }
    if !date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&http_date());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Response { len, status, body, keep_alive }))
}

/// Follows a chunked body's framing without decoding it: how many bytes of a buffer belong to
/// the message, and whether it has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunks {
    /// In a chunk's size line: the size so far, and whether a digit was seen.
    Size(u64, bool),
    /// In a chunk's extensions.
    Ext(u64),
    /// After the size line's CR.
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// In the trailer section: the current line's length so far.
    Trailer(usize),
    TrailerLf(usize),
    Done,
}

impl Chunks {
    fn new() -> Chunks {
        Chunks::Size(0, false)
    }

    /// Consumes the start of `buf` up to the message's end; `Err` on a framing error.
    fn advance(&mut self, buf: &[u8]) -> Result<usize, ()> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            *self = match *self {
                Chunks::Done => return Ok(i),
                Chunks::Data(n) => {
                    let k = n.min((buf.len() - i) as u64);
                    i += k as usize;
                    *self = if n == k { Chunks::DataCr } else { Chunks::Data(n - k) };
                    continue;
                }
                Chunks::Size(n, digit) => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if n >> 60 != 0 {
                            return Err(());
                        }
                        Chunks::Size(n << 4 | u64::from((b as char).to_digit(16).unwrap_or(0)), true)
                    }
                    b';' | b' ' | b'\t' if digit => Chunks::Ext(n),
                    b'\r' if digit => Chunks::SizeLf(n),
                    _ => return Err(()),
                },
                Chunks::Ext(n) => match b {
                    b'\r' => Chunks::SizeLf(n),
                    b'\n' => return Err(()),
                    _ => Chunks::Ext(n),
                },
                Chunks::SizeLf(n) => match (b, n) {
                    (b'\n', 0) => Chunks::Trailer(0),
                    (b'\n', n) => Chunks::Data(n),
                    _ => return Err(()),
                },
                Chunks::DataCr if b == b'\r' => Chunks::DataLf,
                Chunks::DataLf if b == b'\n' => Chunks::Size(0, false),
                Chunks::DataCr | Chunks::DataLf => return Err(()),
                Chunks::Trailer(n) => match b {
                    b'\r' => Chunks::TrailerLf(n),
                    b'\n' => return Err(()),
                    _ if n >= 64 * 1024 => return Err(()),
                    _ => Chunks::Trailer(n + 1),
                },
                Chunks::TrailerLf(n) => match (b, n) {
                    (b'\n', 0) => Chunks::Done,
                    (b'\n', _) => Chunks::Trailer(0),
                    _ => return Err(()),
                },
            };
            i += 1;
        }
        Ok(i)
    }
}

/// How much of `buf` belongs to a body framed `f` (`left`: what a `Length` body still lacks; a
/// chunked body's state), and whether the body ends there.
fn body_part(framing: Framing, left: &mut u64, chunks: &mut Chunks, buf: &[u8]) -> Result<(usize, bool), ()> {
    Ok(match framing {
        Framing::Empty => (0, true),
        Framing::Length(_) => {
            let k = (*left).min(buf.len() as u64);
            *left -= k;
            (k as usize, *left == 0)
        }
        Framing::Chunked => {
            let k = chunks.advance(buf)?;
            (k, *chunks == Chunks::Done)
        }
        Framing::Close => (buf.len(), false),
    })
}

/// Decrements a target's outstanding requests when dropped (the response's head came, or the
/// exchange failed).
struct Outstanding<'a>(&'a TargetState);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

/// One request (the head at the start of `rbuf`, or to be read), its response, and what the
/// connection does next. Leaves in `rbuf` only the bytes after the request (pipelined).
async fn exchange(
    c: &Conn,
    tcp: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    clock: &mut Clock<'_>,
    bytes: &std::sync::atomic::AtomicU64,
) -> Step {
    let cfg = c.slot.cfg.load_full();
    let mut out = buffer();
    let f = loop {
        if !rbuf.is_empty() {
            match parse_request(c, &cfg, rbuf, &mut out) {
                Parsed::Forward(f) => break f,
                Parsed::Hyper => return Step::Hyper,
                Parsed::Partial if rbuf.len() >= MAX_HEAD => {
                    // As hyper answers a head larger than its buffer.
                    let mut r = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\ndate: ".to_vec();
                    r.extend_from_slice(&http_date());
                    r.extend_from_slice(b"\r\n\r\n");
                    let _ = clock.write(tcp, &r).await;
                    return Step::Close;
                }
                Parsed::Partial => {}
            }
        }
        match clock.read(tcp, rbuf).await {
            Ok(0) | Err(_) => return Step::Close,
            Ok(n) => {
                bytes.fetch_add(n as u64, Relaxed);
            }
        }
    };
    let lb = &cfg.lb.counters;
    let g = &f.group.counters;
    Counters::inc(&lb.request_count);
    Counters::inc(&g.request_count);
    let t = &f.view.entries[f.i].t;
    t.outstanding.fetch_add(1, Relaxed);
    let outstanding = Outstanding(t);
    // After a failure before the response: the connection goes on past the request if it was
    // read whole (unless the client asked to close).
    let after = |n: usize| (!f.close).then_some(n);
    let unread = if f.body == Framing::Empty { after(f.head_len) } else { None };
    let start = Instant::now();

    // A connection to the target, and the request on it.
    let mut up = match t.pool.take_raw() {
        Some(s) => s,
        None => {
            let idle = cfg.idle_timeout;
            let limit = c.inner.settings.connect_timeout.min(idle);
            match tokio::time::timeout(limit, TcpStream::connect(t.addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(_) if idle <= c.inner.settings.connect_timeout => {
                    return elb(tcp, rbuf, clock, bytes, lb, 504, unread).await
                }
                _ => {
                    tracing::debug!(target = %t.addr, "target connection failed");
                    Counters::inc(&lb.target_connection_errors);
                    Counters::inc(&g.target_connection_errors);
                    return elb(tcp, rbuf, clock, bytes, lb, 502, unread).await;
                }
            }
        }
    };
    let (mut left, mut chunks) = (if let Framing::Length(n) = f.body { n } else { 0 }, Chunks::new());
    let mut pos = f.head_len;
    let Ok((k, mut done)) = body_part(f.body, &mut left, &mut chunks, &rbuf[pos..]) else { return Step::Close };
    out.extend_from_slice(&rbuf[pos..pos + k]);
    pos += k;
    if clock.write(&mut up, &out).await.is_err() {
        return elb(tcp, rbuf, clock, bytes, lb, 502, if done { after(pos) } else { None }).await;
    }
    while !done {
        rbuf.clear();
        match clock.read(tcp, rbuf).await {
            Ok(0) | Err(_) => return Step::Close,
            Ok(n) => bytes.fetch_add(n as u64, Relaxed),
        };
        let Ok((k, d)) = body_part(f.body, &mut left, &mut chunks, rbuf) else { return Step::Close };
        if clock.write(&mut up, &rbuf[..k]).await.is_err() {
            return elb(tcp, rbuf, clock, bytes, lb, 502, None).await;
        }
        (pos, done) = (k, d);
    }
    // What follows is the next request.
    if pos == rbuf.len() {
        rbuf.clear();
    } else {
        rbuf.drain(..pos);
    }

    // The response's head (informational ones skipped).
    let mut ubuf = buffer();
    let r = loop {
        match parse_response(&ubuf, &f, &mut out) {
            Ok(Some(r)) if r.status < 200 => {
                ubuf.drain(..r.len);
                continue;
            }
            Ok(Some(r)) => break r,
            Ok(None) if ubuf.len() < MAX_HEAD => {}
            _ => return elb(tcp, rbuf, clock, bytes, lb, 502, after(0)).await,
        }
        match clock.read(&mut up, &mut ubuf).await {
            Ok(n) if n > 0 => {}
            Err(Stop::Idle) => return elb(tcp, rbuf, clock, bytes, lb, 504, after(0)).await,
            _ => {
                tracing::debug!(target = %t.addr, "target closed or failed before its response");
                return elb(tcp, rbuf, clock, bytes, lb, 502, after(0)).await;
            }
        }
    };
    drop(outstanding);
    let us = start.elapsed().as_micros() as u64;
    for k in [lb, g] {
        k.target_status(r.status);
        k.response_time(us);
    }

    // The response to the client.
    let close = f.close || r.body == Framing::Close;
    let (mut left, mut chunks) = (if let Framing::Length(n) = r.body { n } else { 0 }, Chunks::new());
    let Ok((k, mut done)) = body_part(r.body, &mut left, &mut chunks, &ubuf[r.len..]) else { return Step::Close };
    let mut clean = r.len + k == ubuf.len();
    out.extend_from_slice(&ubuf[r.len..r.len + k]);
    if clock.write(tcp, &out).await.is_err() {
        return Step::Close;
    }
    bytes.fetch_add(out.len() as u64, Relaxed);
    recycle(out);
    while !done {
        ubuf.clear();
        let n = match clock.read(&mut up, &mut ubuf).await {
            Ok(n) => n,
            Err(_) => return Step::Close,
        };
        if n == 0 {
            // The end of a body framed by the connection's; else the target broke off.
            if r.body == Framing::Close {
                break;
            }
            return Step::Close;
        }
        let Ok((k, d)) = body_part(r.body, &mut left, &mut chunks, &ubuf) else { return Step::Close };
        if clock.write(tcp, &ubuf[..k]).await.is_err() {
            return Step::Close;
        }
        bytes.fetch_add(k as u64, Relaxed);
        (done, clean) = (d, k == ubuf.len());
    }
    recycle(ubuf);
    if r.keep_alive && clean && r.body != Framing::Close {
        t.pool.put_raw(up, c.inner.settings.pool_max_idle_per_target);
    }
    if close {
        Step::Close
    } else {
        Step::Next
    }
}

/// ELB's own response (502, 504): the connection goes on after dropping `next` bytes of
/// `rbuf` (the failed request's), or closes (`None`: the request was not read whole).
async fn elb(
    tcp: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    clock: &mut Clock<'_>,
    bytes: &std::sync::atomic::AtomicU64,
    lb: &Counters,
    status: u16,
    next: Option<usize>,
) -> Step {
    lb.elb_status(status);
    if let Some(n) = next {
        rbuf.drain(..n.min(rbuf.len()));
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = crate::http::elb_body(code);
    let mut out = Vec::with_capacity(256 + body.len());
    for p in [&b"HTTP/1.1 "[..], code.as_str().as_bytes(), b" ", code.canonical_reason().unwrap_or("").as_bytes()] {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\nserver: awselb/2.0\r\ncontent-type: text/html\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(&http_date());
    if next.is_none() {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    if clock.write(tcp, &out).await.is_err() {
        return Step::Close;
    }
    bytes.fetch_add(out.len() as u64, Relaxed);
    if next.is_some() {
        Step::Next
    } else {
        Step::Close
    }
}

thread_local! {
    /// Buffers of requests that ended, for the next ones: at most 64 per thread, so that the
    /// load balancer keeps at most 512 KiB of them, never one per idle connection. (An 8 KiB
    /// allocation takes mimalloc's slow path: several hundred instructions.)
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of at least `READ` bytes, empty.
fn buffer() -> Vec<u8> {
    SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_else(|| Vec::with_capacity(READ))
}

/// Gives a buffer back for another request (one grown large is freed instead).
fn recycle(mut b: Vec<u8>) {
    if (READ..=4 * READ).contains(&b.capacity()) {
        b.clear();
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < 64 {
                s.push(b);
            }
        });
    }
}

thread_local! {
    static DATE: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((0, [0; 29])) };
}

/// The `Date` header's value for now (formatted once a second per thread).
fn http_date() -> [u8; 29] {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    DATE.with(|d| {
        let (at, v) = d.get();
        if at == secs {
            return v;
        }
        let mut v = [b' '; 29];
        let s = httpdate::fmt_http_date(now);
        let n = s.len().min(29);
        v[..n].copy_from_slice(&s.as_bytes()[..n]);
        d.set((secs, v));
        v
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&[u8]]) -> (Vec<usize>, Chunks) {
        let mut c = Chunks::new();
        let used = parts.iter().map(|p| c.advance(p).unwrap()).collect();
        (used, c)
    }

    #[test]
    fn chunked_framing_is_followed_across_reads() {
        let msg = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1";
        let (used, c) = chunked(&[msg]);
        assert_eq!(c, Chunks::Done);
        assert_eq!(&msg[used[0]..], b"GET / HTTP/1.1");
        // One byte at a time.
        let body = &msg[..used[0]];
        let mut c = Chunks::new();
        for b in body {
            assert_eq!(c.advance(std::slice::from_ref(b)), Ok(1));
        }
        assert_eq!(c, Chunks::Done);
        let (used, c) = chunked(&[b"A\r\n0123", b"456789\r\n0\r", b"\n\r\nrest"]);
        assert_eq!((used, c), (vec![7, 10, 3], Chunks::Done));
        assert!(Chunks::new().advance(b"x\r\n").is_err());
        assert!(Chunks::new().advance(b"1\r\nab\r\n").is_err());
    }

    #[test]
    fn connection_tokens() {
        let mut t = Tokens::new();
        t.add(b"keep-alive, X-Private ,close").unwrap();
        assert!(t.close && !t.upgrade);
        assert!(t.names("x-private") && !t.names("keep-alive"));
        assert_eq!(content_length(b" 42 "), Some(42));
        assert_eq!(content_length(b"4 2"), None);
        assert_eq!(content_length(b"-1"), None);
    }
}
