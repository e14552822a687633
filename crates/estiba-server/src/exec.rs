//! ECS Exec's sessions: the one-time tokens ExecuteCommand mints, the data channel (a
//! websocket under [`PREFIX`] on the API listener, speaking the Session Manager protocol of
//! `session-manager-plugin`, [`estiba_api::session`]) and the splice from it to the node
//! that runs the container, as [`estiba_core::exec::Frame`]s over a byte stream.
//!
//! The stream to the server's own node is opened in process ([`LocalNode`], set by the
//! binary). An `estiba agent` on another machine dials back: it keeps a stream of exec
//! requests open on every server it knows (`GET <agent API>nodes/<node>/exec`), and for each
//! session it is sent it opens an upgraded connection to that server (`POST
//! nodes/<node>/exec/<session-id>`, `Upgrade: estiba-exec`) that becomes the session's stream.
//! The server never dials agents (they may sit behind NAT; only the agent API is trusted to
//! authenticate nodes). A node with no request stream open to this server is not reachable:
//! ExecuteCommand answers `TargetNotConnectedException`. Sessions live in this server's
//! memory: the data channel must reach the server that answered ExecuteCommand.
//!
//! May not: run anything itself (nodes do), or let a token open more than one session.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use estiba_api::session::{self as wire, payload, ClientMessage};
use estiba_core::exec::{ExecTarget, Frame};
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::body::{self, Body};
use crate::Server;

/// How far ahead of the next expected input a client message may be and still be kept.
const MAX_EARLY: i64 = 256;
/// How many bytes of early client messages one session keeps.
const MAX_EARLY_BYTES: usize = 4 << 20;
/// The largest client message (Session Manager's client sends input in small pieces).
const MAX_CLIENT_MESSAGE: usize = 4 << 20;

/// Where the data channel is served: `<PREFIX><session-id>`.
pub const PREFIX: &str = "/_estiba/exec/v1/data-channel/";

/// How long a token ExecuteCommand minted may wait for its data channel.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// Drops the request streams whose agent has gone, and the nodes left with none.
fn sweep(remote: &mut HashMap<String, Vec<tokio::sync::mpsc::Sender<ExecTarget>>>) {
    remote.retain(|_, streams| {
        streams.retain(|t| !t.is_closed());
        !streams.is_empty()
    });
}

/// How long a remote node may take to dial back for a session.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The `Upgrade` protocol of an agent's dial-back connection.
pub const DIAL_PROTOCOL: &str = "estiba-exec";

/// A byte stream to the node that runs a session's command.
pub trait NodeStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> NodeStream for T {}

/// The server's own node (the in-process agent): opens a session's stream to it.
pub trait LocalNode: Send + Sync {
    fn open(&self, target: ExecTarget) -> Pin<Box<dyn NodeStream>>;
}

/// Where a remote node's dial-back for a session goes.
type Dialed = tokio::sync::oneshot::Sender<Pin<Box<dyn NodeStream>>>;

/// A session ExecuteCommand started and no data channel has used yet.
struct Pending {
    token: String,
    account: String,
    target: ExecTarget,
    expires: Instant,
    stream_url: String,
}

/// Every exec session this server knows.
#[derive(Default)]
pub struct Exec {
    pending: Mutex<HashMap<String, Pending>>,
    /// Sessions with an open data channel, by id: their account, and how to end them
    /// (SSM TerminateSession).
    active: Mutex<HashMap<String, (String, Arc<tokio::sync::Notify>)>>,
    local: OnceLock<Arc<dyn LocalNode>>,
    /// Remote nodes' open request streams, by node.
    remote: Mutex<HashMap<String, Vec<tokio::sync::mpsc::Sender<ExecTarget>>>>,
    /// Sessions waiting for their node to dial back: the node, and where its stream goes.
    dials: Mutex<HashMap<String, (String, Dialed)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a session could not be opened or resumed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("Session {0} was not found.")]
    NotFound(String),
}

fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

tokio::task_local! {
    /// Where the API request being served came in: ExecuteCommand's `streamUrl` points back at
    /// the address the client used.
    pub static ORIGIN: Origin;
}

/// A request's `Host` header, the listen address and whether it came over TLS: kept for every
/// `POST /` request, formed into a URL only by the one call that needs it (ExecuteCommand).
pub struct Origin {
    host: Option<hyper::header::HeaderValue>,
    listen: std::net::SocketAddr,
    tls: bool,
}

impl Origin {
    pub fn of(server: &Server, headers: &hyper::HeaderMap, tls: bool) -> Origin {
        Origin { host: headers.get(hyper::header::HOST).cloned(), listen: server.config.listen, tls }
    }

    /// `ws`/`wss` and the `Host` header (else the listen address).
    fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        match self
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)))
        {
            Some(host) => format!("{scheme}://{host}"),
            None => format!("{scheme}://{}", self.listen),
        }
    }
}

impl Exec {
    /// Sets the server's own node (once, by the binary).
    pub fn set_local(&self, node: Arc<dyn LocalNode>) {
        let _ = self.local.set(node);
    }

    /// Mints a session for `target` in `account`: its id is `target.session_id`; returns
    /// (stream URL, token).
    pub fn start(&self, account: &str, target: ExecTarget) -> (String, String) {
        let token = random_hex(32);
        let base = ORIGIN.try_with(Origin::url).unwrap_or_else(|_| "ws://127.0.0.1:4566".into());
        let url = format!("{base}{PREFIX}{}?stream=input", target.session_id);
        let mut p = lock(&self.pending);
        let now = Instant::now();
        p.retain(|_, s| s.expires > now);
        p.insert(
            target.session_id.clone(),
            Pending {
                token: token.clone(),
                account: account.to_owned(),
                target,
                expires: now + TOKEN_TTL,
                stream_url: url.clone(),
            },
        );
        (url, token)
    }

    /// A fresh session id in ECS's form.
    pub fn new_session_id() -> String {
        format!("ecs-execute-command-{}", &random_hex(9)[..17])
    }

    /// Takes the pending session `id` if `token` is its token and it has not expired.
    fn redeem(&self, id: &str, token: &str) -> Option<ExecTarget> {
        let mut p = lock(&self.pending);
        let ok = p
            .get(id)
            .is_some_and(|s| s.expires > Instant::now() && constant_time_eq(s.token.as_bytes(), token.as_bytes()));
        ok.then(|| p.remove(id).map(|s| s.target)).flatten()
    }

    /// SSM TerminateSession: ends the session's data channel (or forgets its unused token).
    pub fn terminate(&self, account: &str, id: &str) {
        lock(&self.pending).retain(|k, s| !(k == id && s.account == account));
        if let Some((a, n)) = lock(&self.active).get(id) {
            if a == account {
                n.notify_one();
            }
        }
    }

    /// SSM ResumeSession: a fresh token for a session whose data channel has not been used
    /// yet (an open or ended one cannot be resumed: its command ends with its channel).
    pub fn resume(&self, account: &str, id: &str) -> Result<(String, String), SessionError> {
        let mut p = lock(&self.pending);
        match p.get_mut(id) {
            Some(s) if s.account == account && s.expires > Instant::now() => {
                s.token = random_hex(32);
                s.expires = Instant::now() + TOKEN_TTL;
                Ok((s.stream_url.clone(), s.token.clone()))
            }
            _ => Err(SessionError::NotFound(id.to_owned())),
        }
    }

    /// Whether sessions can reach node `node`: this server's own (when it runs tasks), or a
    /// remote node with a request stream open to this server.
    pub fn reaches(&self, node: &str, local_node: Option<&str>) -> bool {
        if local_node == Some(node) {
            return self.local.get().is_some();
        }
        lock(&self.remote).get(node).is_some_and(|v| v.iter().any(|t| !t.is_closed()))
    }

    /// Opens the stream to the node that runs `target`: in process for the server's own
    /// node, else by asking the remote node to dial back (and waiting up to [`DIAL_TIMEOUT`]).
    async fn open(&self, target: &ExecTarget, local_node: Option<&str>) -> Option<Pin<Box<dyn NodeStream>>> {
        if local_node == Some(target.node.as_str()) {
            return self.local.get().map(|l| l.open(target.clone()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = target.session_id.clone();
        lock(&self.dials).insert(id.clone(), (target.node.clone(), tx));
        let asked = {
            let mut remote = lock(&self.remote);
            sweep(&mut remote);
            // Newest first: an older stream of the same node may be one whose agent is gone.
            remote.get(&target.node).is_some_and(|v| v.iter().rev().any(|t| t.try_send(target.clone()).is_ok()))
        };
        let stream = match asked {
            true => tokio::time::timeout(DIAL_TIMEOUT, rx).await.ok().and_then(Result::ok),
            false => None,
        };
        lock(&self.dials).remove(&id);
        stream
    }

    /// A remote node's stream of exec requests opens: the sessions it must dial back for.
    pub fn requests(&self, node: &str) -> tokio::sync::mpsc::Receiver<ExecTarget> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut remote = lock(&self.remote);
        sweep(&mut remote);
        remote.entry(node.to_owned()).or_default().push(tx);
        rx
    }

    /// A remote node dials back for session `id` (`POST nodes/<node>/exec/<id>` of the agent
    /// API, with `Upgrade: estiba-exec`): the upgraded connection becomes the session's
    /// stream. Only the node the session waits for may answer it.
    pub fn dialed(&self, node: &str, id: &str, mut req: Request<Incoming>) -> Response<Body> {
        let upgrading = req
            .headers()
            .get(hyper::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(DIAL_PROTOCOL));
        if !upgrading {
            return bad_request("an upgrade to estiba-exec is expected");
        }
        let waiting = {
            let mut dials = lock(&self.dials);
            match dials.get(id) {
                Some((n, _)) if n == node => dials.remove(id).map(|(_, tx)| tx),
                _ => None,
            }
        };
        let Some(tx) = waiting else {
            return body::response(StatusCode::NOT_FOUND, bytes::Bytes::from(format!("no session {id}")), "text/plain");
        };
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let _ = tx.send(Box::pin(hyper_util::rt::TokioIo::new(up)));
            }
        });
        let mut r = Response::new(body::full(bytes::Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert(hyper::header::UPGRADE, HeaderValue::from_static(DIAL_PROTOCOL));
        r.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("Upgrade"));
        r
    }
}

fn bad_request(msg: &str) -> Response<Body> {
    body::response(StatusCode::BAD_REQUEST, bytes::Bytes::from(msg.to_owned()), "text/plain")
}

/// The 101 answer to a websocket upgrade with key `key`.
fn switching(key: &[u8]) -> Response<Body> {
    let mut r = Response::new(body::full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(hyper::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(hyper::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).expect("base64 is a header value"));
    r
}

/// `GET <PREFIX><session-id>`: upgrades to a websocket and serves the session on it.
pub fn data_channel(server: &Arc<Server>, mut req: Request<Incoming>) -> Response<Body> {
    let id = req.uri().path()[PREFIX.len()..].to_owned();
    let is_ws = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(hyper::header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec()) else {
        return bad_request("a websocket upgrade is expected");
    };
    if !is_ws {
        return bad_request("a websocket upgrade is expected");
    }
    if !lock(&server.exec.pending).contains_key(&id) {
        return body::response(StatusCode::NOT_FOUND, bytes::Bytes::from(format!("no session {id}")), "text/plain");
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let server = server.clone();
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else { return };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(up),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            Some(
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .max_message_size(Some(MAX_CLIENT_MESSAGE))
                    .max_frame_size(Some(MAX_CLIENT_MESSAGE)),
            ),
        )
        .await;
        serve(server, id, ws).await;
    });
    switching(&key)
}

/// One side of the data channel: the outgoing sequence and what is owed.
struct Channel<S> {
    ws: tokio_tungstenite::WebSocketStream<S>,
    seq: i64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    async fn send(&mut self, m: ClientMessage) -> bool {
        self.ws.send(Message::Binary(m.encode().into())).await.is_ok()
    }

    async fn output(&mut self, payload_type: u32, payload: Vec<u8>) -> bool {
        let m = ClientMessage::new(
            wire::OUTPUT_STREAM_DATA,
            self.seq,
            payload_type,
            payload,
            now_ms(),
            uuid::Uuid::new_v4().into_bytes(),
        );
        self.seq += 1;
        self.send(m).await
    }

    async fn close(&mut self, session_id: &str, output: &str, exit_code: Option<i32>) {
        let id = uuid::Uuid::new_v4();
        let content = wire::ChannelClosed {
            message_id: id.to_string(),
            created_date: now_ms().to_string(),
            destination_id: session_id.to_owned(),
            session_id: session_id.to_owned(),
            message_type: wire::CHANNEL_CLOSED.into(),
            schema_version: 1,
            output: output.to_owned(),
            exit_code,
        };
        let m = ClientMessage::new(
            wire::CHANNEL_CLOSED,
            self.seq,
            0,
            serde_json::to_vec(&content).unwrap_or_default(),
            now_ms(),
            id.into_bytes(),
        );
        self.seq += 1;
        let _ = self.send(m).await;
        let _ = self.ws.close(None).await;
        // Reads until the client's close (its last acknowledgements included): closing the
        // socket with unread bytes would reset the connection and lose what was sent.
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    }
}

/// Serves one data channel: the token, the handshake, then input to the node and output
/// back, until the command ends, the client leaves or SSM TerminateSession is called.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    server: Arc<Server>,
    id: String,
    ws: tokio_tungstenite::WebSocketStream<S>,
) {
    let mut ch = Channel { ws, seq: 0 };
    let first = tokio::time::timeout(Duration::from_secs(30), ch.ws.next()).await;
    let open: Option<wire::OpenDataChannel> = match first {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(t.as_str()).ok(),
        Ok(Some(Ok(Message::Binary(b)))) => serde_json::from_slice(&b).ok(),
        _ => None,
    };
    let Some(target) = open.and_then(|o| server.exec.redeem(&id, &o.token_value)) else {
        tracing::info!(session = %id, "exec data channel refused: bad or used token");
        ch.close(&id, "The session token is not valid or was already used.", None).await;
        return;
    };
    let Some(mut node) = server.exec.open(&target, server.local_node.as_deref()).await else {
        tracing::warn!(session = %id, node = %target.node, "exec: the task's node is not reachable");
        ch.close(&id, "The execute command failed due to an internal error. Try again later.", None).await;
        return;
    };
    let stop = Arc::new(tokio::sync::Notify::new());
    let acct = task_account(&target.task_arn);
    lock(&server.exec.active).insert(id.clone(), (acct, stop.clone()));
    let started = Instant::now();
    if !ch.output(payload::HANDSHAKE_REQUEST, wire::handshake_request("estiba", "Standard_Stream")).await {
        lock(&server.exec.active).remove(&id);
        return;
    }
    let end = splice(&mut ch, &mut node, &stop, started).await;
    lock(&server.exec.active).remove(&id);
    let (output, code) = match end {
        End::Exit(c) => (String::new(), Some(c)),
        End::Error(m) => (m, Some(126)),
        End::Terminated => ("The session was terminated.".into(), None),
        End::ClientGone | End::NodeGone => (String::new(), None),
    };
    tracing::info!(session = %id, code, "exec session closed");
    let _ = node.shutdown().await;
    ch.close(&id, &output, code).await;
}

/// The account of a task ARN (`arn:aws:ecs:<region>:<account>:task/...`).
fn task_account(task_arn: &str) -> String {
    task_arn.split(':').nth(4).unwrap_or_default().to_owned()
}

enum End {
    Exit(i32),
    Error(String),
    Terminated,
    ClientGone,
    NodeGone,
}

async fn splice<S: AsyncRead + AsyncWrite + Unpin>(
    ch: &mut Channel<S>,
    node: &mut Pin<Box<dyn NodeStream>>,
    stop: &tokio::sync::Notify,
    started: Instant,
) -> End {
    let mut expected: i64 = 0;
    let mut early: BTreeMap<i64, ClientMessage> = BTreeMap::new();
    let mut ready = false;
    let mut nbuf = Vec::new();
    let mut chunk = vec![0u8; 32 << 10];
    loop {
        tokio::select! {
            m = ch.ws.next() => {
                let bytes = match m {
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return End::ClientGone,
                    Some(Ok(_)) => continue,
                };
                let msg = match ClientMessage::decode(&bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(error = %e, "exec: a client message was dropped");
                        continue;
                    }
                };
                if msg.message_type != wire::INPUT_STREAM_DATA {
                    continue;
                }
                // Too far ahead to keep (or too much kept already): not acknowledged, so the
                // client sends it again later.
                let kept: usize = early.values().map(|m| m.payload.len()).sum();
                if msg.sequence_number > expected
                    && (msg.sequence_number >= expected + MAX_EARLY || kept + msg.payload.len() > MAX_EARLY_BYTES)
                {
                    continue;
                }
                // Every input is acknowledged (the client resends until it is); duplicates
                // are acknowledged again and dropped, early ones wait for their turn.
                if !ch.send(msg.ack(now_ms(), uuid::Uuid::new_v4().into_bytes())).await {
                    return End::ClientGone;
                }
                if msg.sequence_number < expected {
                    continue;
                }
                early.insert(msg.sequence_number, msg);
                while let Some(m) = early.remove(&expected) {
                    expected += 1;
                    let frame = match m.payload_type {
                        payload::HANDSHAKE_RESPONSE if !ready => {
                            ready = true;
                            let took = started.elapsed().as_nanos() as i64;
                            if !ch.output(payload::HANDSHAKE_COMPLETE, wire::handshake_complete(took, "")).await {
                                return End::ClientGone;
                            }
                            None
                        }
                        payload::OUTPUT => {
                            // In frames the node accepts, however large the client's message.
                            for part in m.payload.chunks(estiba_core::exec::MAX_FRAME) {
                                if node.write_all(&Frame::Input(part.to_vec()).encode()).await.is_err() {
                                    return End::NodeGone;
                                }
                            }
                            None
                        }
                        payload::SIZE => serde_json::from_slice::<wire::Size>(&m.payload).ok().map(|s| Frame::Resize {
                            cols: s.cols.min(u16::MAX as u32) as u16,
                            rows: s.rows.min(u16::MAX as u32) as u16,
                        }),
                        payload::FLAG if m.payload.get(..4) == Some(&2u32.to_be_bytes()) => return End::Terminated,
                        _ => None,
                    };
                    if let Some(f) = frame {
                        if node.write_all(&f.encode()).await.is_err() {
                            return End::NodeGone;
                        }
                    }
                }
            }
            n = node.read(&mut chunk), if ready => {
                let n = match n { Ok(0) | Err(_) => return End::NodeGone, Ok(n) => n };
                nbuf.extend_from_slice(&chunk[..n]);
                loop {
                    match Frame::take(&mut nbuf) {
                        Ok(Some(Frame::Output(b))) => {
                            if !ch.output(payload::OUTPUT, b).await {
                                return End::ClientGone;
                            }
                        }
                        Ok(Some(Frame::Exit(c))) => return End::Exit(c),
                        Ok(Some(Frame::Error(m))) => return End::Error(m),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return End::NodeGone,
                    }
                }
            }
            _ = stop.notified() => return End::Terminated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(node: &str) -> ExecTarget {
        ExecTarget {
            session_id: Exec::new_session_id(),
            node: node.into(),
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/default/abc".into(),
            task_id: "abc".into(),
            container: "app".into(),
            command: vec!["true".into()],
        }
    }

    #[test]
    fn a_remote_node_is_reachable_while_its_request_stream_is_open() {
        let exec = Exec::default();
        assert!(!exec.reaches("n1", Some("local")));
        let rx = exec.requests("n1");
        assert!(exec.reaches("n1", Some("local")));
        assert!(!exec.reaches("n2", Some("local")));
        drop(rx);
        assert!(!exec.reaches("n1", Some("local")));
        // The server's own node is reachable only once the binary set it.
        assert!(!exec.reaches("local", Some("local")));
    }

    #[tokio::test]
    async fn a_session_for_a_remote_node_is_asked_of_it_and_waits_for_its_dial() {
        let exec = Arc::new(Exec::default());
        let mut rx = exec.requests("n1");
        let t = target("n1");
        let opening = {
            let (exec, t) = (exec.clone(), t.clone());
            tokio::spawn(async move { exec.open(&t, Some("local")).await.is_some() })
        };
        let asked = rx.recv().await.expect("the node is asked to dial back");
        assert_eq!(asked, t);
        // The dial arrives (as `dialed` hands it over once the connection is upgraded).
        let (a, _b) = tokio::io::duplex(64);
        let (_, tx) = lock(&exec.dials).remove(&t.session_id).expect("the session waits");
        assert!(tx.send(Box::pin(a)).is_ok());
        assert!(opening.await.unwrap());
        assert!(lock(&exec.dials).is_empty());
    }

    #[tokio::test]
    async fn a_node_without_a_request_stream_is_not_asked() {
        let exec = Exec::default();
        let started = Instant::now();
        assert!(exec.open(&target("n1"), Some("local")).await.is_none());
        assert!(started.elapsed() < DIAL_TIMEOUT, "nobody to ask: no wait");
        assert!(lock(&exec.dials).is_empty());
    }
}
