//! ECS Exec's sessions: the one-time tokens ExecuteCommand mints, the data channel (a
//! websocket under [`PREFIX`] on the API listener, speaking the Session Manager protocol of
//! `session-manager-plugin`, [`estiba_api::session`]) and the splice from it to the node
//! that runs the container, as [`estiba_core::exec::Frame`]s over a byte stream.
//!
//! The stream to the node is opened in process ([`LocalNode`], set by the binary): sessions
//! reach the tasks of the server's own node only. Tasks on an `estiba agent` of another
//! machine are refused by ExecuteCommand with `TargetNotConnectedException` (the agent API
//! has no call yet for an agent to dial back for a session; the server never dials agents).
//! Sessions live in this server's memory: the data channel must reach the server that
//! answered ExecuteCommand.
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

/// A byte stream to the node that runs a session's command.
pub trait NodeStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> NodeStream for T {}

/// The server's own node (the in-process agent): opens a session's stream to it.
pub trait LocalNode: Send + Sync {
    fn open(&self, target: ExecTarget) -> Pin<Box<dyn NodeStream>>;
}

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
    /// `scheme://host[:port]` of the API request being served: ExecuteCommand's `streamUrl`
    /// points back at the address the client used.
    pub static ORIGIN: String;
}

/// The origin of a request: `ws`/`wss` and its `Host` header (else the listen address).
pub fn origin(server: &Server, headers: &hyper::HeaderMap, tls: bool) -> String {
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)))
        .map(str::to_owned)
        .unwrap_or_else(|| server.config.listen.to_string());
    format!("{}://{host}", if tls { "wss" } else { "ws" })
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
        let base = ORIGIN.try_with(|o| o.clone()).unwrap_or_else(|_| "ws://127.0.0.1:4566".into());
        let url = format!("{base}{PREFIX}{}?stream=input", target.session_id);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let ok = p
            .get(id)
            .is_some_and(|s| s.expires > Instant::now() && constant_time_eq(s.token.as_bytes(), token.as_bytes()));
        ok.then(|| p.remove(id).map(|s| s.target)).flatten()
    }

    /// SSM TerminateSession: ends the session's data channel (or forgets its unused token).
    pub fn terminate(&self, account: &str, id: &str) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, s| !(k == id && s.account == account));
        if let Some((a, n)) = self.active.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            if a == account {
                n.notify_one();
            }
        }
    }

    /// SSM ResumeSession: a fresh token for a session whose data channel has not been used
    /// yet (an open or ended one cannot be resumed: its command ends with its channel).
    pub fn resume(&self, account: &str, id: &str) -> Result<(String, String), SessionError> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.get_mut(id) {
            Some(s) if s.account == account && s.expires > Instant::now() => {
                s.token = random_hex(32);
                s.expires = Instant::now() + TOKEN_TTL;
                Ok((s.stream_url.clone(), s.token.clone()))
            }
            _ => Err(SessionError::NotFound(id.to_owned())),
        }
    }

    /// Whether sessions can reach node `node` (this server's own, when it runs tasks).
    pub fn reaches(&self, node: &str, local_node: Option<&str>) -> bool {
        local_node == Some(node) && self.local.get().is_some()
    }

    /// Opens the stream to the node that runs `target`.
    fn open(&self, target: &ExecTarget, local_node: Option<&str>) -> Option<Pin<Box<dyn NodeStream>>> {
        if !self.reaches(&target.node, local_node) {
            return None;
        }
        self.local.get().map(|l| l.open(target.clone()))
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
    if !server.exec.pending.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&id) {
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
    let Some(mut node) = server.exec.open(&target, server.local_node.as_deref()) else {
        tracing::warn!(session = %id, node = %target.node, "exec: the task's node is not reachable");
        ch.close(&id, "The execute command failed due to an internal error. Try again later.", None).await;
        return;
    };
    let stop = Arc::new(tokio::sync::Notify::new());
    let acct = task_account(&target.task_arn);
    server.exec.active.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), (acct, stop.clone()));
    let started = Instant::now();
    if !ch.output(payload::HANDSHAKE_REQUEST, wire::handshake_request("estiba", "Standard_Stream")).await {
        server.exec.active.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        return;
    }
    let end = splice(&mut ch, &mut node, &stop, started).await;
    server.exec.active.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
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
