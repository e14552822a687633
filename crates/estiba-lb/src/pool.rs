//! Keep-alive connections to one target (HTTP/1.1, hyper's client connections): a request
//! takes an idle one or opens one, and its response's body gives it back when it ends.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::group::TargetState;

/// Idle connections to a target, most recently used last: hyper's (HTTPS listeners, and
/// what the fast path hands to hyper) and raw sockets (the fast path, `h1`). The locks are
/// uncontended on the default current-thread runtime: a lock and an unlock per request.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<SendRequest<Incoming>>>,
    raw: Mutex<Vec<TcpStream>>,
}

#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made (ELB's 502, a target connection error).
    Connect,
    /// The connection failed or was reset with the request sent (502).
    Failed,
}

impl Pool {
    fn take(&self) -> Option<SendRequest<Incoming>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put(&self, s: SendRequest<Incoming>, max: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < max {
            idle.push(s);
        }
    }

    /// An idle raw connection the target has not closed (nor sent anything on).
    pub(crate) fn take_raw(&self) -> Option<TcpStream> {
        loop {
            let s = self.raw.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            // Readiness is cleared by the read that ended its last response (a short read),
            // so a live connection costs no system call here.
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match s.poll_read_ready(&mut cx) {
                Poll::Pending => return Some(s),
                Poll::Ready(Err(_)) => {}
                Poll::Ready(Ok(())) => {
                    if matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                        return Some(s);
                    }
                }
            }
        }
    }

    pub(crate) fn put_raw(&self, s: TcpStream, max: usize) {
        let mut raw = self.raw.lock().unwrap_or_else(|e| e.into_inner());
        if raw.len() < max {
            raw.push(s);
        }
    }
}

/// Sends `req` to `t` on an idle connection (another when one turns out closed before the
/// request went out) or a new one.
pub(crate) async fn send(
    inner: &crate::Inner,
    t: &Arc<TargetState>,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, SendRequest<Incoming>), SendError> {
    while let Some(mut s) = t.pool.take() {
        if !s.is_ready() {
            continue;
        }
        match s.try_send_request(req).await {
            Ok(resp) => return Ok((resp, s)),
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => return Err(SendError::Failed),
            },
        }
    }
    let tcp = match tokio::time::timeout(inner.settings.connect_timeout, tokio::net::TcpStream::connect(t.addr)).await {
        Ok(Ok(s)) => s,
        _ => return Err(SendError::Connect),
    };
    let _ = tcp.set_nodelay(true);
    let (mut s, conn) = hyper::client::conn::http1::Builder::new()
        .writev(true)
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|_| SendError::Connect)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let resp = s.send_request(req).await.map_err(|_| SendError::Failed)?;
    Ok((resp, s))
}

/// A response body from a target: at its end, the connection goes back to the pool.
pub(crate) struct Pooled {
    body: Incoming,
    back: Option<(SendRequest<Incoming>, Arc<TargetState>, usize)>,
}

impl Pooled {
    pub(crate) fn new(body: Incoming, s: SendRequest<Incoming>, t: Arc<TargetState>, max_idle: usize) -> Pooled {
        let mut p = Pooled { body, back: Some((s, t, max_idle)) };
        if p.body.is_end_stream() {
            p.give_back();
        }
        p
    }

    fn give_back(&mut self) {
        if let Some((s, t, max)) = self.back.take() {
            t.pool.put(s, max);
        }
    }
}

impl Body for Pooled {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.give_back(),
            // An error: the connection is not reused (dropped with `back`).
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
