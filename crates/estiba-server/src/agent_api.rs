//! The agent API: all an `estiba agent` on another machine sees of the control plane, on the
//! server's own listener under [`PREFIX`]. It is the network form of the agent's
//! `ControlPlane` trait (crates/estiba-agent/src/control.rs), message for message:
//!
//! - `GET  nodes/<node>/assignments`: the node's tasks, with their task definitions and
//!   claims, as a stream of JSON lines: a full listing first, then changes as the view
//!   applies them (an empty line every [`KEEPALIVE`] so both ends notice a dead connection);
//! - `GET  published`: the VPC resolver's zone, Service Connect's table, the load
//!   balancers' table and the VPC's address blocks, each sent whole when it changes;
//! - `PUT  nodes/<node>`: the node's status (its heartbeat);
//! - `POST nodes/<node>/secrets`: the container secrets and registry credentials of one of
//!   the node's own tasks, resolved when it starts (`crate::task_secrets`);
//! - `POST nodes/<node>/credentials`: temporary credentials for the task role of one of the
//!   node's own tasks (`crate::task_credentials`);
//! - `POST nodes/<node>/blocks`: one more VPC address block of a subnet for the node;
//! - `POST nodes/<node>/tasks`: a `TaskStateChange` of one of the node's own tasks;
//! - `GET  nodes/<node>/exec`: the ECS Exec sessions the node must dial back for, as JSON
//!   lines; `POST nodes/<node>/exec/<session>` with `Upgrade: estiba-exec` is that dial-back,
//!   whose connection carries the session (`crate::exec`);
//! - `POST nodes/<node>/telemetry`: telemetry batches (never the store);
//! - `POST nodes/<node>/logs/open` and `logs/append`: the awslogs driver's numbered appends.
//!
//! Every request carries `Authorization: Bearer <join token>`; the tokens are the lines of
//! `Config::join_tokens_file`, read again when the file changes, so removing a line revokes
//! a token at the next request. An unknown token gets 401 and nothing else. A line
//! `TOKEN node=NODE-ID` binds its token to one node: its requests for any other node get 403
//! (a line with only a token may act as any node; a line that does not parse admits nothing).
//!
//! May not: decide placement, or write anything but what an agent's messages say (its node's
//! status, the state of tasks claimed for that node, the address blocks it claims).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use estiba_core::node::{NodeStatus, TaskStateAck, TaskStateChange};
use estiba_core::telemetry::{LogDestination, LogEvents, LogIngest, LogIngestError, Telemetry, TelemetrySink};
use estiba_store::Revision;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::{self, Body};
use crate::view::State;
use crate::{keys, Server, WriteError};

pub const PREFIX: &str = "/_estiba/agent/v1/";

/// How often a stream with nothing to say sends an empty line.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

/// One line of the join tokens file: a token, and the node it may act as (`None`: any).
#[derive(Clone, Debug, PartialEq, Eq)]
struct TokenLine {
    token: String,
    node: Option<String>,
}

/// The join tokens, as last read from their file.
#[derive(Default)]
pub struct Tokens {
    read: Mutex<Option<(SystemTime, Arc<Vec<TokenLine>>)>>,
}

/// What a presented token may do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Not a token of the file.
    Unknown,
    /// A token for any node.
    AnyNode,
    /// A token bound to these nodes (it appears on several lines).
    Nodes(Vec<String>),
}

impl Admission {
    /// Whether the token may act as `node` (`None`: a request that names no node).
    fn may_act_as(&self, node: Option<&str>) -> bool {
        match (self, node) {
            (Admission::Unknown, _) => false,
            (Admission::AnyNode, _) | (Admission::Nodes(_), None) => true,
            (Admission::Nodes(nodes), Some(n)) => nodes.iter().any(|b| b == n),
        }
    }
}

impl Tokens {
    /// The first token of `file` that may act as any node (what this server presents to the
    /// other servers: tokens bound to a node are agents').
    pub fn first(&self, file: &std::path::Path) -> Option<String> {
        let (lines, _) = parse_tokens(&std::fs::read_to_string(file).ok()?);
        lines.into_iter().find(|l| l.node.is_none()).map(|l| l.token)
    }

    /// What `presented` may do as a token of `file` (read again when its modification time
    /// changed).
    fn admits(&self, file: &std::path::Path, presented: &str) -> Admission {
        let Ok(mtime) = std::fs::metadata(file).and_then(|m| m.modified()) else { return Admission::Unknown };
        let lines = {
            let mut read = self.read.lock().unwrap();
            match &*read {
                Some((at, t)) if *at == mtime => t.clone(),
                _ => {
                    let (lines, bad) = parse_tokens(&std::fs::read_to_string(file).unwrap_or_default());
                    for (n, why) in bad {
                        tracing::warn!(file = %file.display(), line = n, "a join token line is ignored: {why}");
                    }
                    let t = Arc::new(lines);
                    *read = Some((mtime, t.clone()));
                    t
                }
            }
        };
        // Every token is compared in full, whatever matched, so that timing tells nothing.
        let mut any = false;
        let mut nodes = Vec::new();
        for l in lines.iter() {
            if constant_time_eq(l.token.as_bytes(), presented.as_bytes()) {
                match &l.node {
                    None => any = true,
                    Some(n) => nodes.push(n.clone()),
                }
            }
        }
        if any {
            Admission::AnyNode
        } else if nodes.is_empty() {
            Admission::Unknown
        } else {
            Admission::Nodes(nodes)
        }
    }
}

/// The lines of a join tokens file: `TOKEN` or `TOKEN node=NODE-ID`, blank lines and `#`
/// comments skipped; with the (1-based) numbers of the lines that do not parse, and why.
fn parse_tokens(text: &str) -> (Vec<TokenLine>, Vec<(usize, String)>) {
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut words = l.split_whitespace();
        let token = words.next().unwrap_or_default().to_owned();
        let node = match (words.next(), words.next()) {
            (None, _) => None,
            (Some(w), None) => match w.strip_prefix("node=") {
                Some(n) if keys::valid_node_id(n) => Some(n.to_owned()),
                Some(n) => {
                    bad.push((i + 1, format!("'{n}' is not a node id")));
                    continue;
                }
                None => {
                    bad.push((i + 1, format!("expected `TOKEN` or `TOKEN node=NODE-ID`, found '{w}' after the token")));
                    continue;
                }
            },
            (Some(_), Some(_)) => {
                bad.push((i + 1, "expected `TOKEN` or `TOKEN node=NODE-ID`: too many words".into()));
                continue;
            }
        };
        lines.push(TokenLine { token, node });
    }
    (lines, bad)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the agent API's answers carry when they refuse.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Token(#[from] TokenRefusal),
    #[error("this join token may act only as node {bound}, not as node {asked}")]
    OtherNode { bound: String, asked: String },
    #[error("no such agent API route: {0}")]
    NoRoute(String),
    #[error("the request does not decode: {0}")]
    BadRequest(String),
    #[error("the task {0} is not claimed for this node")]
    NotYours(String),
    #[error("the task no longer exists")]
    Gone,
    #[error("the store did not take the write: {0}")]
    Write(#[from] WriteError),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Token(t) => t.status(),
            Refusal::OtherNode { .. } => StatusCode::FORBIDDEN,
            Refusal::NoRoute(_) | Refusal::Gone => StatusCode::NOT_FOUND,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::NotYours(_) => StatusCode::CONFLICT,
            Refusal::Write(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn response(&self) -> Response<Body> {
        let body = serde_json::json!({ "message": self.to_string() }).to_string();
        body::response(self.status(), Bytes::from(body), "application/json")
    }
}

/// A task state change as the agent sends it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStateMessage {
    pub task_key: String,
    pub change: TaskStateChange,
}

/// `POST nodes/<node>/secrets`: which task's secrets.
#[derive(Serialize, Deserialize)]
pub struct SecretsRequest {
    #[serde(rename = "taskKey")]
    pub task_key: String,
}

/// A node's request for one more address block of a subnet.
#[derive(Serialize, Deserialize)]
pub struct BlockRequest {
    pub subnet: ipnet::Ipv4Net,
    /// The blocks of the subnet the node knows it holds.
    #[serde(default)]
    pub known: Vec<ipnet::Ipv4Net>,
}

/// A container log append as the agent sends it.
#[derive(Serialize, Deserialize)]
pub struct LogAppend {
    pub dest: LogDestination,
    pub seq: u64,
    pub events: LogEvents,
}

/// A change of the published tables, one per line of `published`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PublishedMessage {
    Dns(estiba_dns::ZoneWire),
    ServiceConnect(estiba_proxy::Table),
    LoadBalancers(estiba_lb::Table),
    Routes(estiba_core::netblock::Routes),
}

/// Where agents' telemetry and container logs go; set once by the binary that starts the
/// server (the server's own sinks, the same as its local node's).
pub struct Sinks {
    pub telemetry: Arc<dyn TelemetrySink>,
    pub logs: Arc<dyn LogIngest>,
}

pub async fn handle(server: &Arc<Server>, req: Request<Incoming>) -> Response<Body> {
    match route(server, req).await {
        Ok(r) => r,
        Err(e) => {
            if !matches!(e, Refusal::Gone) {
                tracing::debug!(error = %e, "agent API refused a request");
            }
            e.response()
        }
    }
}

async fn route(server: &Arc<Server>, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let admission = authenticate(server, &req)?;
    let path = req.uri().path()[PREFIX.len()..].to_owned();
    let parts: Vec<&str> = path.split('/').collect();
    // Every route under `nodes/<node>/` acts as that node.
    let node = match parts.as_slice() {
        ["nodes", node, ..] => Some(*node),
        _ => None,
    };
    if !admission.may_act_as(node) {
        let bound = match &admission {
            Admission::Nodes(n) => n.join(", "),
            _ => String::new(),
        };
        return Err(Refusal::OtherNode { bound, asked: node.unwrap_or_default().to_owned() });
    }
    let max = server.config.max_body_bytes;
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["published"]) => Ok(published(server)),
        (Method::GET, ["nodes", node, "assignments"]) if keys::valid_node_id(node) => {
            Ok(assignments(server.clone(), node.to_string()))
        }
        (Method::PUT, ["nodes", node]) if keys::valid_node_id(node) => {
            let mut status: NodeStatus = decode(req, max).await?;
            status.id = node.to_string();
            status.remote = true;
            server.liveness.report(server, status).await?;
            Ok(no_content())
        }
        (Method::GET, ["nodes", node, "exec"]) if keys::valid_node_id(node) => {
            Ok(exec_requests(server.clone(), node.to_string()))
        }
        (Method::POST, ["nodes", node, "exec", id]) if keys::valid_node_id(node) => {
            Ok(server.exec.dialed(node, id, req))
        }
        (Method::POST, ["nodes", node, "tasks"]) if keys::valid_node_id(node) => {
            let m: TaskStateMessage = decode(req, max).await?;
            let ack = submit_task_state(server, node, &m.task_key, &m.change).await?;
            Ok(json(&ack))
        }
        (Method::POST, ["nodes", node, "secrets"]) if keys::valid_node_id(node) => {
            let ask: SecretsRequest = decode(req, max).await?;
            Ok(json(&crate::task_secrets::resolve(server, node, &ask.task_key)))
        }
        (Method::POST, ["nodes", node, "credentials"]) if keys::valid_node_id(node) => {
            let ask: SecretsRequest = decode(req, max).await?;
            Ok(json(&crate::task_credentials::issue(server, node, &ask.task_key, crate::now() as i64)))
        }
        (Method::POST, ["nodes", node, "blocks"]) if keys::valid_node_id(node) => {
            let ask: BlockRequest = decode(req, max).await?;
            Ok(json(&crate::netblocks::claim(server, node, ask.subnet, &ask.known).await))
        }
        (Method::POST, ["nodes", _, "telemetry"]) => {
            let batches: Vec<Telemetry> = decode(req, max).await?;
            if let Some(s) = server.agent_sinks.get() {
                batches.into_iter().for_each(|b| s.telemetry.deliver(b));
            }
            Ok(no_content())
        }
        (Method::POST, ["nodes", _, "logs", "open"]) => {
            let dest: LogDestination = decode(req, max).await?;
            let r = match server.agent_sinks.get() {
                Some(s) => s.logs.open_stream(&dest).await,
                None => Err(LogIngestError::Unavailable("the server keeps no container logs".into())),
            };
            Ok(json(&r))
        }
        (Method::POST, ["nodes", _, "logs", "append"]) => {
            let a: LogAppend = decode(req, max).await?;
            let r = match server.agent_sinks.get() {
                Some(s) => s.logs.append(&a.dest, a.seq, a.events).await,
                None => Err(LogIngestError::Unavailable("the server keeps no container logs".into())),
            };
            Ok(json(&r))
        }
        _ => Err(Refusal::NoRoute(path)),
    }
}

fn authenticate(server: &Server, req: &Request<Incoming>) -> Result<Admission, Refusal> {
    Ok(admission(server, req.headers())?)
}

/// Why a request's join token was refused (by the agent API or the peer API).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenRefusal {
    /// The server has no join tokens file.
    #[error("this server takes no agents or peers: start it with --join-tokens FILE")]
    Closed,
    #[error("a join token is required (Authorization: Bearer <token>)")]
    NoToken,
    #[error("the join token is not valid")]
    BadToken,
}

impl TokenRefusal {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            TokenRefusal::Closed => StatusCode::FORBIDDEN,
            TokenRefusal::NoToken | TokenRefusal::BadToken => StatusCode::UNAUTHORIZED,
        }
    }
}

/// What the join token of a request (`Authorization: Bearer <token>`) may do: the agent API
/// and the servers' peer API ([`crate::peers`]) check their callers with it.
pub(crate) fn admission(server: &Server, headers: &hyper::HeaderMap) -> Result<Admission, TokenRefusal> {
    let Some(file) = &server.config.join_tokens_file else { return Err(TokenRefusal::Closed) };
    let presented = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(TokenRefusal::NoToken)?;
    match server.join_tokens.admits(file, presented.trim()) {
        Admission::Unknown => Err(TokenRefusal::BadToken),
        a => Ok(a),
    }
}

async fn decode<T: serde::de::DeserializeOwned>(req: Request<Incoming>, max: usize) -> Result<T, Refusal> {
    let bytes = body::read(req, max).await.map_err(|e| Refusal::BadRequest(e.message.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| Refusal::BadRequest(e.to_string()))
}

fn json<T: Serialize>(v: &T) -> Response<Body> {
    body::response(StatusCode::OK, Bytes::from(serde_json::to_vec(v).unwrap_or_default()), "application/json")
}

fn no_content() -> Response<Body> {
    body::response(StatusCode::NO_CONTENT, Bytes::new(), "application/json")
}

/// Applies a node's state change to one of its own tasks, under a compare on the task.
async fn submit_task_state(
    server: &Server,
    node: &str,
    key: &str,
    change: &TaskStateChange,
) -> Result<TaskStateAck, Refusal> {
    server
        .transact::<_, Refusal>(|st| {
            if st.claim(key).is_none_or(|c| c.value.node != node) {
                return Err(Refusal::NotYours(key.to_owned()));
            }
            crate::task_state_write(st, key, change).ok_or(Refusal::Gone)
        })
        .await
}

/// The stream of a node's assignments.
fn assignments(server: Arc<Server>, node: String) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut changes = server.view.changes();
        let mut sent = Sent::default();
        let mut full = true;
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let line = {
                let st = server.view.read();
                sent.diff(&st, &node, full)
            };
            full = false;
            if let Some(line) = line {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
                quiet_since = tokio::time::Instant::now();
            }
            // Views change often without touching this node (other nodes' heartbeats): the
            // keepalive is due after KEEPALIVE without a line, however many changes came.
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(quiet_since + KEEPALIVE) => {
                    if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                        return;
                    }
                    quiet_since = tokio::time::Instant::now();
                }
            }
        }
    });
    ndjson(rx)
}

/// The stream of a node's exec requests: one JSON line per session it must dial back for
/// ([`crate::exec`]), an empty line every [`KEEPALIVE`].
fn exec_requests(server: Arc<Server>, node: String) -> Response<Body> {
    let mut requests = server.exec.requests(&node);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                t = requests.recv() => match t {
                    Some(t) => {
                        let mut b = serde_json::to_vec(&t).unwrap_or_default();
                        b.push(b'\n');
                        Bytes::from(b)
                    }
                    None => return,
                },
                _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b"\n"),
            };
            // The agent gone: the requests' receiver goes with this task, so the node is no
            // longer reachable for sessions.
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    ndjson(rx)
}

fn ndjson(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Response<Body> {
    let mut r = Response::new(body::streamed(rx));
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/x-ndjson"));
    r
}

/// What one assignments stream has sent: each task's and claim's revision, and the task
/// definitions (sent once per stream: they do not change in what a node reads of them).
#[derive(Default)]
struct Sent {
    tasks: HashMap<String, (Revision, Revision)>,
    taskdefs: HashSet<String>,
}

impl Sent {
    /// The line that brings the agent from what was sent to the view's state (`None`: nothing
    /// changed). Written by hand around the documents' stored JSON, which is sent as it is:
    /// `{"full":bool,"upsert":[{"key","task","claim","taskDefinitionKey"}],"taskDefinitions":{key:doc},"remove":[key]}`.
    fn diff(&mut self, st: &State, node: &str, full: bool) -> Option<Bytes> {
        let mut upsert = BytesMut::new();
        let mut taskdefs = BytesMut::new();
        let mut now: HashMap<String, (Revision, Revision)> = HashMap::new();
        for key in st.claims_by_node.get(node).into_iter().flatten() {
            let (Some(claim), Some(task)) = (st.claim(key), st.tasks.get(key)) else { continue };
            let Some(td_key) = task.value.task_definition_arn.as_deref().and_then(taskdef_key) else { continue };
            let Some(td) = st.taskdefs.get(&td_key) else { continue };
            now.insert(key.clone(), (task.rev, claim.rev));
            if !full && self.tasks.get(key) == Some(&(task.rev, claim.rev)) {
                continue;
            }
            if !self.taskdefs.contains(&td_key) || full {
                comma(&mut taskdefs);
                put_str(&mut taskdefs, &td_key);
                taskdefs.put_u8(b':');
                taskdefs.put_slice(&td.raw);
                self.taskdefs.insert(td_key.clone());
            }
            comma(&mut upsert);
            upsert.put_slice(b"{\"key\":");
            put_str(&mut upsert, key);
            upsert.put_slice(b",\"taskDefinitionKey\":");
            put_str(&mut upsert, &td_key);
            upsert.put_slice(b",\"task\":");
            upsert.put_slice(&task.raw);
            upsert.put_slice(b",\"claim\":");
            upsert.put_slice(&claim.raw);
            upsert.put_u8(b'}');
        }
        let mut remove = BytesMut::new();
        for key in self.tasks.keys().filter(|k| !now.contains_key(*k)) {
            comma(&mut remove);
            put_str(&mut remove, key);
        }
        self.tasks = now;
        if !full && upsert.is_empty() && remove.is_empty() {
            return None;
        }
        let mut line = BytesMut::with_capacity(upsert.len() + taskdefs.len() + remove.len() + 64);
        line.put_slice(if full { b"{\"full\":true,\"upsert\":[" } else { b"{\"full\":false,\"upsert\":[" });
        line.put_slice(&upsert);
        line.put_slice(b"],\"taskDefinitions\":{");
        line.put_slice(&taskdefs);
        line.put_slice(b"},\"remove\":[");
        line.put_slice(&remove);
        line.put_slice(b"]}\n");
        Some(line.freeze())
    }
}

fn comma(b: &mut BytesMut) {
    if !b.is_empty() {
        b.put_u8(b',');
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_slice(serde_json::to_string(s).unwrap_or_default().as_bytes());
}

/// The store key of the task definition an ARN names.
fn taskdef_key(arn: &str) -> Option<String> {
    let parsed = estiba_core::arn::Arn::parse(arn)?;
    let r = estiba_core::arn::TaskDefRef::parse(arn)?;
    Some(keys::taskdef(&estiba_core::Scope::new(parsed.account, parsed.region), &r.family, r.revision?))
}

/// The stream of the published tables: each sent at the start and whenever it changes.
fn published(server: &Server) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut dns = server.dns.subscribe();
    let mut connect = server.connect.subscribe();
    let mut lb = server.lb.subscribe();
    let mut routes = server.routes.subscribe();
    dns.mark_changed();
    connect.mark_changed();
    lb.mark_changed();
    routes.mark_changed();
    tokio::spawn(async move {
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let message = tokio::select! {
                r = dns.changed() => match r {
                    Ok(()) => match dns.borrow_and_update().to_wire() {
                        Ok(w) => PublishedMessage::Dns(w),
                        Err(e) => {
                            tracing::warn!(error = %e, "the zone does not encode for agents");
                            continue;
                        }
                    },
                    Err(_) => return,
                },
                r = connect.changed() => match r {
                    Ok(()) => PublishedMessage::ServiceConnect((**connect.borrow_and_update()).clone()),
                    Err(_) => return,
                },
                r = lb.changed() => match r {
                    Ok(()) => PublishedMessage::LoadBalancers((**lb.borrow_and_update()).clone()),
                    Err(_) => return,
                },
                r = routes.changed() => match r {
                    Ok(()) => PublishedMessage::Routes((**routes.borrow_and_update()).clone()),
                    Err(_) => return,
                },
                _ = tokio::time::sleep_until(quiet_since + KEEPALIVE) => {
                    if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                        return;
                    }
                    quiet_since = tokio::time::Instant::now();
                    continue;
                }
            };
            let mut line = serde_json::to_vec(&message).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
            quiet_since = tokio::time::Instant::now();
        }
    });
    ndjson(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(token: &str, node: Option<&str>) -> TokenLine {
        TokenLine { token: token.into(), node: node.map(str::to_owned) }
    }

    #[test]
    fn tokens_are_lines_without_comments() {
        let (t, bad) = parse_tokens("# agents\n  abc \n\ndef\n#old\n");
        assert_eq!(t, vec![line("abc", None), line("def", None)]);
        assert!(bad.is_empty());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn a_token_line_may_bind_its_token_to_a_node() {
        let (t, bad) = parse_tokens(
            "free\nbound node=host-a\n  tabs\tnode=host-b  \nwrong host-c\nempty node=\nslash node=a/b\nmany node=x y\n",
        );
        assert_eq!(t, vec![line("free", None), line("bound", Some("host-a")), line("tabs", Some("host-b"))]);
        let lines: Vec<usize> = bad.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![4, 5, 6, 7], "{bad:?}");
        assert!(bad[0].1.contains("TOKEN node=NODE-ID"), "{bad:?}");
        assert!(bad[1].1.contains("not a node id"), "{bad:?}");
    }

    #[test]
    fn a_bound_token_acts_only_as_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "free\nbound node=host-a\ntwice node=host-a\ntwice node=host-b\nwrong host-c\n").unwrap();
        let tokens = Tokens::default();
        let free = tokens.admits(&file, "free");
        assert_eq!(free, Admission::AnyNode);
        assert!(free.may_act_as(Some("anything")) && free.may_act_as(None));
        let bound = tokens.admits(&file, "bound");
        assert_eq!(bound, Admission::Nodes(vec!["host-a".into()]));
        assert!(bound.may_act_as(Some("host-a")));
        assert!(!bound.may_act_as(Some("host-b")));
        // Routes that name no node (the published tables) are open to every valid token.
        assert!(bound.may_act_as(None));
        let twice = tokens.admits(&file, "twice");
        assert!(twice.may_act_as(Some("host-a")) && twice.may_act_as(Some("host-b")));
        assert!(!twice.may_act_as(Some("host-c")));
        // A line that does not parse admits nothing (rather than any node).
        assert_eq!(tokens.admits(&file, "wrong"), Admission::Unknown);
        assert!(!Admission::Unknown.may_act_as(None));
    }

    #[test]
    fn a_removed_token_is_refused_after_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "one\ntwo\n").unwrap();
        let tokens = Tokens::default();
        assert_eq!(tokens.admits(&file, "two"), Admission::AnyNode);
        assert_eq!(tokens.admits(&file, "three"), Admission::Unknown);
        // A different modification time makes it read again.
        std::fs::write(&file, "one\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(later).unwrap();
        assert_eq!(tokens.admits(&file, "two"), Admission::Unknown);
        assert_eq!(tokens.admits(&file, "one"), Admission::AnyNode);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(tokens.admits(&file, "one"), Admission::Unknown, "no file: no token is valid");
    }
}
