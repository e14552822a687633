//! The control plane of an agent on another machine (`estiba agent`): [`RemoteControl`]
//! implements [`ControlPlane`] over the server's agent API (`/_estiba/agent/v1/`, see
//! crates/estiba-server/src/agent_api.rs), so the runner and everything else in the agent work
//! as they do in the server's process.
//!
//! - Assignments and the published tables arrive as streams of JSON lines; a stream that
//!   breaks or stays silent past [`SILENCE`] is opened again, on the next server of the list,
//!   and its first message is a full listing. Until the first listing, [`ControlPlane::listed`]
//!   does not resolve, so an agent that cannot reach any server touches none of its tasks.
//! - Servers are `http://` or `https://` URLs; HTTPS verifies the server's certificate
//!   against the roots the agent was given (its `--server-ca`, or the system's).
//! - State changes, the heartbeat and log appends are requests, retried on the next server when
//!   one does not answer; telemetry is posted in batches from its queue (dropped, and counted
//!   by the queue, when no server takes it).
//!
//! May not: read or write the store, or decide anything the control plane decides.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use estiba_api::ecs::{Task, TaskDefinition};
use estiba_core::exec::ExecTarget;
use estiba_core::node::{Claim, NodeStatus, TaskStateAck, TaskStateChange};
use estiba_core::telemetry::{LogDestination, LogEvents, LogIngestError, Telemetry};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::control::{Assignment, Assignments, BoxFuture, ControlError, ControlPlane, Published};
use crate::telemetry::TelemetrySender;
use estiba_core::netblock::{BlockError, Routes};

const PREFIX: &str = "/_estiba/agent/v1/";
/// A stream silent for longer than this (the server sends an empty line every 10 s) is
/// taken for dead and opened again.
const SILENCE: Duration = Duration::from_secs(30);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between attempts when no server answers.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0} is not a server URL (http://HOST:PORT or https://HOST:PORT)")]
    BadServer(String),
    #[error("{0}: an https:// server needs the certificates to trust (--server-ca FILE, or the system's roots)")]
    NoTls(String),
    #[error("{server}: {message}")]
    Refused { server: String, status: u16, message: String },
    #[error("{server}: {message}")]
    Unreachable { server: String, message: String },
    #[error("an answer does not decode: {0}")]
    Decode(String),
}

impl RemoteError {
    /// A refusal that another try cannot change (a bad token, a gone task).
    fn is_final(&self) -> bool {
        matches!(self, RemoteError::Refused { status, .. } if *status < 500)
    }
}

/// One line of the assignments stream (see the server's `agent_api::Sent::diff`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignmentsLine {
    full: bool,
    upsert: Vec<Upsert>,
    task_definitions: HashMap<String, TaskDefinition>,
    remove: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Upsert {
    key: String,
    task_definition_key: String,
    task: Task,
    claim: Claim,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum PublishedLine {
    Dns(estiba_dns::ZoneWire),
    ServiceConnect(estiba_proxy::Table),
    LoadBalancers(estiba_lb::Table),
    Routes(Routes),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskStateMessage<'a> {
    task_key: &'a str,
    change: &'a TaskStateChange,
}

#[derive(Serialize)]
struct LogAppend<'a> {
    dest: &'a LogDestination,
    seq: u64,
    events: &'a LogEvents,
}

/// The HTTP side: the servers, the token, a pooled client.
struct Api {
    servers: Vec<Uri>,
    /// The server that answered last (requests start there).
    current: AtomicUsize,
    token: String,
    node: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// An error with its causes (hyper's client errors say "client error (Connect)" and keep
/// the reason, a refused connection or an untrusted certificate, in their sources).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cause = c.source();
    }
    s
}

impl Api {
    fn request(&self, server: &Uri, method: Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        let uri = format!("{}{PREFIX}{path}", server.to_string().trim_end_matches('/'));
        Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("a well-formed request")
    }

    /// Sends a request to the current server, then to each other one in turn, until one
    /// answers; returns the answer's body.
    async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, RemoteError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.servers.len() {
            let idx = (start + i) % self.servers.len();
            let server = &self.servers[idx];
            match self.once(server, method.clone(), path, body.clone()).await {
                Ok(b) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(b);
                }
                Err(e) if e.is_final() => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RemoteError::Unreachable { server: String::new(), message: "no server".into() }))
    }

    async fn once(&self, server: &Uri, method: Method, path: &str, body: Bytes) -> Result<Bytes, RemoteError> {
        let unreachable = |message: String| RemoteError::Unreachable { server: server.to_string(), message };
        let req = self.request(server, method, path, body);
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| unreachable("no answer in time".into()))?
            .map_err(|e| unreachable(with_causes(&e)))?;
        let status = resp.status();
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer did not arrive in time".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        Err(RemoteError::Refused { server: server.to_string(), status: status.as_u16(), message })
    }

    /// Opens a stream of JSON lines on the current server (then the others) and hands each
    /// non-empty line to `line` until the stream ends or stays silent too long.
    async fn follow(&self, path: &str, mut line: impl FnMut(&[u8]) -> Result<(), RemoteError>) -> RemoteError {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.servers.len() {
            let idx = (start + i) % self.servers.len();
            match self.follow_on(idx, path, true, &mut line).await {
                Followed::Unreachable(e) => last = Some(e),
                Followed::Ended(e) => return e,
            }
        }
        last.unwrap_or_else(|| RemoteError::Unreachable { server: String::new(), message: "no server".into() })
    }

    /// [`Api::follow`] on server `idx` only; `prefer` makes it the server requests start at
    /// once its stream opens.
    async fn follow_on(
        &self,
        idx: usize,
        path: &str,
        prefer: bool,
        mut line: impl FnMut(&[u8]) -> Result<(), RemoteError>,
    ) -> Followed {
        let server = &self.servers[idx];
        let req = self.request(server, Method::GET, path, Bytes::new());
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Followed::Unreachable(RemoteError::Unreachable {
                    server: server.to_string(),
                    message: with_causes(&e),
                })
            }
            Err(_) => {
                return Followed::Unreachable(RemoteError::Unreachable {
                    server: server.to_string(),
                    message: "no answer".into(),
                })
            }
        };
        if resp.status() != StatusCode::OK {
            let status = resp.status().as_u16();
            return Followed::Ended(RemoteError::Refused {
                server: server.to_string(),
                status,
                message: format!("the stream {path} was refused ({status})"),
            });
        }
        if prefer {
            self.current.store(idx, Ordering::Relaxed);
        }
        let ended = |message: String| Followed::Ended(RemoteError::Unreachable { server: server.to_string(), message });
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = match tokio::time::timeout(SILENCE, body.frame()).await {
                Err(_) => return ended("stream went silent".into()),
                Ok(None) => return ended("stream ended".into()),
                Ok(Some(Err(e))) => return ended(e.to_string()),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = buf.drain(..=nl).collect();
                let l = &l[..l.len() - 1];
                if l.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Err(e) = line(l) {
                    return Followed::Ended(e);
                }
            }
        }
    }
}

/// An ECS Exec session's stream, dialed back to the server that asked for it.
pub type ExecStream = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

/// Follows server `idx`'s exec requests for this node for as long as the agent runs, and
/// dials back for each session it asks for; the sessions go to `sessions`.
async fn follow_exec(api: Arc<Api>, idx: usize, sessions: mpsc::Sender<(ExecTarget, ExecStream)>) {
    let path = format!("nodes/{}/exec", api.node);
    while !sessions.is_closed() {
        let ended = api
            .follow_on(idx, &path, false, |line| {
                let target: ExecTarget =
                    serde_json::from_slice(line).map_err(|e| RemoteError::Decode(e.to_string()))?;
                if target.node != api.node || !is_session_id(&target.session_id) {
                    tracing::warn!(session = %target.session_id, node = %target.node, "exec: a request for another node, or a bad session id, ignored");
                    return Ok(());
                }
                let (api, sessions) = (api.clone(), sessions.clone());
                tokio::spawn(async move {
                    match dial_back(&api, idx, &target).await {
                        Ok(stream) => {
                            let _ = sessions.send((target, stream)).await;
                        }
                        Err(e) => tracing::warn!(session = %target.session_id, error = %e, "exec: dialing back failed"),
                    }
                });
                Ok(())
            })
            .await;
        let (Followed::Unreachable(e) | Followed::Ended(e)) = ended;
        tracing::debug!(server = %api.servers[idx], error = %e, "exec requests stream ended; opening it again");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// A session id as the server mints them (`ecs-execute-command-<hex>`): letters, digits, `-`.
fn is_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Opens the upgraded connection that carries session `target` to server `idx`.
async fn dial_back(api: &Api, idx: usize, target: &ExecTarget) -> Result<ExecStream, RemoteError> {
    let server = &api.servers[idx];
    let unreachable = |message: String| RemoteError::Unreachable { server: server.to_string(), message };
    let path = format!("nodes/{}/exec/{}", api.node, target.session_id);
    let mut req = api.request(server, Method::POST, &path, Bytes::new());
    req.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("Upgrade"));
    req.headers_mut().insert(hyper::header::UPGRADE, hyper::header::HeaderValue::from_static("estiba-exec"));
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, api.client.request(req))
        .await
        .map_err(|_| unreachable("no answer in time".into()))?
        .map_err(|e| unreachable(with_causes(&e)))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status().as_u16();
        return Err(RemoteError::Refused {
            server: server.to_string(),
            status,
            message: format!("dial-back refused ({status})"),
        });
    }
    let up = hyper::upgrade::on(resp).await.map_err(|e| unreachable(with_causes(&e)))?;
    Ok(hyper_util::rt::TokioIo::new(up))
}

/// How following a stream on one server ended.
enum Followed {
    /// The server did not answer: the next one may.
    Unreachable(RemoteError),
    /// The server answered, and the stream was refused, broke or went silent.
    Ended(RemoteError),
}

/// The control plane of an agent on another machine.
pub struct RemoteControl {
    api: Arc<Api>,
    rx: watch::Receiver<Assignments>,
    listed: watch::Receiver<bool>,
    telemetry: TelemetrySender,
    published: Published,
}

impl RemoteControl {
    /// ECS Exec sessions for this node's tasks, as their servers dial them: the agent follows
    /// the exec requests of every server it knows (a session lives on the server that
    /// answered ExecuteCommand) and dials back to that server for each.
    pub fn exec_sessions(&self) -> mpsc::Receiver<(ExecTarget, ExecStream)> {
        let (tx, rx) = mpsc::channel(8);
        for idx in 0..self.api.servers.len() {
            tokio::spawn(follow_exec(self.api.clone(), idx, tx.clone()));
        }
        rx
    }

    /// Starts following the servers (`http://HOST:PORT`, tried in order) as node `node`,
    /// with the join token `token`. The published tables are followed only when asked for
    /// (`resolver`, `load_balancers`: the node serves them); Service Connect's always.
    pub fn start(
        servers: &[String],
        token: String,
        node: String,
        resolver: bool,
        load_balancers: bool,
    ) -> Result<Arc<Self>, RemoteError> {
        Self::start_with_tls(servers, token, node, resolver, load_balancers, None)
    }

    /// [`RemoteControl::start`] for servers that may be `https://` URLs too: `tls` verifies
    /// their certificates (an `https://` server without it is refused).
    pub fn start_with_tls(
        servers: &[String],
        token: String,
        node: String,
        resolver: bool,
        load_balancers: bool,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Arc<Self>, RemoteError> {
        let servers = servers
            .iter()
            .map(|s| {
                let u = s
                    .parse::<Uri>()
                    .ok()
                    .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
                    .ok_or_else(|| RemoteError::BadServer(s.clone()))?;
                if u.scheme_str() == Some("https") && tls.is_none() {
                    return Err(RemoteError::NoTls(s.clone()));
                }
                Ok(u)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(RemoteError::BadServer(String::new()));
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.enforce_http(false);
        // Without a TLS configuration no server is https (checked above): the connector's
        // configuration then trusts nothing and is never used.
        let tls = match tls {
            // The connector offers ALPN itself (HTTP/1.1) and refuses a configuration that
            // already names protocols.
            Some(t) => {
                let mut c = (*t).clone();
                c.alpn_protocols.clear();
                c
            }
            None => rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| RemoteError::BadServer(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector);
        let api = Arc::new(Api { servers, current: AtomicUsize::new(0), token, node, client });

        let (tx, rx) = watch::channel(Arc::new(HashMap::new()));
        let (listed_tx, listed) = watch::channel(false);
        tokio::spawn(follow_assignments(api.clone(), tx, listed_tx));

        let (dns_tx, dns_rx) = watch::channel(Arc::new(estiba_dns::Zone::default()));
        let (sc_tx, sc_rx) = watch::channel(Arc::new(estiba_proxy::Table::default()));
        let (lb_tx, lb_rx) = watch::channel(Arc::new(estiba_lb::Table::default()));
        let (routes_tx, routes_rx) = watch::channel(Arc::new(Routes::default()));
        tokio::spawn(follow_published(api.clone(), dns_tx, sc_tx, lb_tx, routes_tx));
        let published = Published {
            dns_zone: resolver.then_some(dns_rx),
            service_connect: Some(sc_rx),
            load_balancers: load_balancers.then_some(lb_rx),
            routes: Some(routes_rx),
        };

        let (telemetry, queue) = TelemetrySender::channel(crate::telemetry::CAPACITY);
        tokio::spawn(post_telemetry(api.clone(), queue));
        Ok(Arc::new(RemoteControl { api, rx, listed, telemetry, published }))
    }
}

async fn follow_assignments(api: Arc<Api>, tx: watch::Sender<Assignments>, listed: watch::Sender<bool>) {
    let path = format!("nodes/{}/assignments", api.node);
    let mut taskdefs: HashMap<String, Arc<TaskDefinition>> = HashMap::new();
    loop {
        let err = api
            .follow(&path, |line| {
                let l: AssignmentsLine =
                    serde_json::from_slice(line).map_err(|e| RemoteError::Decode(e.to_string()))?;
                apply_line(&tx, &mut taskdefs, l);
                listed.send_replace(true);
                Ok(())
            })
            .await;
        tracing::warn!(error = %err, "the assignments stream broke; opening it again");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Applies one assignments line: a full listing replaces the map (keeping the `Arc` of every
/// assignment that did not change, so runners are not told of a change that is none).
fn apply_line(
    tx: &watch::Sender<Assignments>,
    taskdefs: &mut HashMap<String, Arc<TaskDefinition>>,
    l: AssignmentsLine,
) {
    if l.full {
        taskdefs.clear();
    }
    for (k, td) in l.task_definitions {
        taskdefs.insert(k, Arc::new(td));
    }
    let old = tx.borrow().clone();
    let mut next: HashMap<String, Arc<Assignment>> = if l.full { HashMap::new() } else { (*old).clone() };
    for k in &l.remove {
        next.remove(k);
    }
    for u in l.upsert {
        let Some(taskdef) = taskdefs.get(&u.task_definition_key).cloned() else {
            tracing::warn!(task = %u.key, "an assignment came without its task definition");
            continue;
        };
        let a = Assignment { key: u.key.clone(), task: u.task, taskdef, claim: u.claim };
        match old.get(&u.key) {
            Some(prev) if **prev == a => next.insert(u.key, prev.clone()),
            _ => next.insert(u.key, Arc::new(a)),
        };
    }
    if l.full {
        // Task definitions no assignment uses any more are let go.
        let used: std::collections::HashSet<String> =
            next.values().filter_map(|a| crate::control::taskdef_key(&a.task)).collect();
        taskdefs.retain(|k, _| used.contains(k));
    }
    tx.send_replace(Arc::new(next));
}

async fn follow_published(
    api: Arc<Api>,
    dns: watch::Sender<Arc<estiba_dns::Zone>>,
    connect: watch::Sender<Arc<estiba_proxy::Table>>,
    lb: watch::Sender<Arc<estiba_lb::Table>>,
    routes: watch::Sender<Arc<Routes>>,
) {
    loop {
        let err = api
            .follow("published", |line| {
                match serde_json::from_slice(line).map_err(|e| RemoteError::Decode(e.to_string()))? {
                    PublishedLine::Dns(w) => match estiba_dns::Zone::from_wire(&w) {
                        Ok(z) => {
                            dns.send_replace(Arc::new(z));
                        }
                        Err(e) => tracing::warn!(error = %e, "the published zone does not decode"),
                    },
                    PublishedLine::ServiceConnect(t) => {
                        connect.send_replace(Arc::new(t));
                    }
                    PublishedLine::LoadBalancers(t) => {
                        lb.send_replace(Arc::new(t));
                    }
                    PublishedLine::Routes(r) => {
                        routes.send_replace(Arc::new(r));
                    }
                }
                Ok(())
            })
            .await;
        tracing::warn!(error = %err, "the published tables' stream broke; opening it again");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Posts telemetry from the queue, as many batches per request as have gathered.
async fn post_telemetry(api: Arc<Api>, mut queue: mpsc::Receiver<Telemetry>) {
    let path = format!("nodes/{}/telemetry", api.node);
    while let Some(first) = queue.recv().await {
        let mut batches = vec![first];
        while batches.len() < 64 {
            match queue.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let body = Bytes::from(serde_json::to_vec(&batches).unwrap_or_default());
        if let Err(e) = api.call(Method::POST, &path, body).await {
            tracing::debug!(error = %e, dropped = batches.len(), "telemetry not delivered");
        }
    }
}

fn failed(e: RemoteError) -> ControlError {
    match e {
        RemoteError::Refused { status: 404, .. } => ControlError::Gone,
        e => ControlError::Failed(e.to_string()),
    }
}

fn log_failed(e: RemoteError) -> LogIngestError {
    LogIngestError::Unavailable(e.to_string())
}

impl ControlPlane for RemoteControl {
    fn assignments(&self) -> watch::Receiver<Assignments> {
        self.rx.clone()
    }

    fn listed(&self) -> BoxFuture<'_, ()> {
        crate::control::wait_listed(&self.listed)
    }

    fn submit_task_state<'a>(
        &'a self,
        task_key: &'a str,
        change: TaskStateChange,
    ) -> BoxFuture<'a, Result<TaskStateAck, ControlError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&TaskStateMessage { task_key, change: &change })
                .map_err(|e| ControlError::Failed(e.to_string()))?;
            let path = format!("nodes/{}/tasks", self.api.node);
            let answer = self.api.call(Method::POST, &path, Bytes::from(body)).await.map_err(failed)?;
            serde_json::from_slice(&answer).map_err(|e| ControlError::Failed(e.to_string()))
        })
    }

    fn report_node(&self, status: NodeStatus) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&status).map_err(|e| ControlError::Failed(e.to_string()))?;
            let path = format!("nodes/{}", self.api.node);
            self.api.call(Method::PUT, &path, Bytes::from(body)).await.map_err(failed)?;
            Ok(())
        })
    }

    fn telemetry(&self) -> TelemetrySender {
        self.telemetry.clone()
    }

    fn published(&self) -> Published {
        self.published.clone()
    }

    fn task_secrets<'a>(&'a self, task_key: &'a str) -> BoxFuture<'a, Result<estiba_core::node::TaskSecrets, String>> {
        Box::pin(async move {
            let failed = |e: String| format!("{}{e}", estiba_core::node::SECRETS_FAILURE);
            let body =
                serde_json::to_vec(&serde_json::json!({ "taskKey": task_key })).map_err(|e| failed(e.to_string()))?;
            let path = format!("nodes/{}/secrets", self.api.node);
            let answer =
                self.api.call(Method::POST, &path, Bytes::from(body)).await.map_err(|e| failed(e.to_string()))?;
            serde_json::from_slice::<Result<estiba_core::node::TaskSecrets, String>>(&answer)
                .map_err(|e| failed(e.to_string()))?
        })
    }

    fn task_credentials<'a>(
        &'a self,
        task_key: &'a str,
    ) -> BoxFuture<'a, Result<estiba_core::node::TaskCredentials, String>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&serde_json::json!({ "taskKey": task_key })).map_err(|e| e.to_string())?;
            let path = format!("nodes/{}/credentials", self.api.node);
            let answer = self.api.call(Method::POST, &path, Bytes::from(body)).await.map_err(|e| e.to_string())?;
            serde_json::from_slice::<Result<estiba_core::node::TaskCredentials, String>>(&answer)
                .map_err(|e| e.to_string())?
        })
    }

    fn claim_block<'a>(
        &'a self,
        subnet: ipnet::Ipv4Net,
        known: &'a [ipnet::Ipv4Net],
    ) -> BoxFuture<'a, Result<ipnet::Ipv4Net, BlockError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&serde_json::json!({ "subnet": subnet, "known": known }))
                .map_err(|e| BlockError::Unavailable(e.to_string()))?;
            let path = format!("nodes/{}/blocks", self.api.node);
            let answer = self
                .api
                .call(Method::POST, &path, Bytes::from(body))
                .await
                .map_err(|e| BlockError::Unavailable(e.to_string()))?;
            serde_json::from_slice::<Result<ipnet::Ipv4Net, BlockError>>(&answer)
                .map_err(|e| BlockError::Unavailable(e.to_string()))?
        })
    }

    fn open_log_stream<'a>(&'a self, dest: &'a LogDestination) -> BoxFuture<'a, Result<u64, LogIngestError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(dest).map_err(|e| LogIngestError::Unavailable(e.to_string()))?;
            let path = format!("nodes/{}/logs/open", self.api.node);
            let answer = self.api.call(Method::POST, &path, Bytes::from(body)).await.map_err(log_failed)?;
            serde_json::from_slice::<Result<u64, LogIngestError>>(&answer)
                .map_err(|e| LogIngestError::Unavailable(e.to_string()))?
        })
    }

    fn ship_logs<'a>(
        &'a self,
        dest: &'a LogDestination,
        seq: u64,
        events: LogEvents,
    ) -> BoxFuture<'a, Result<u64, LogIngestError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&LogAppend { dest, seq, events: &events })
                .map_err(|e| LogIngestError::Unavailable(e.to_string()))?;
            events.recycle();
            let path = format!("nodes/{}/logs/append", self.api.node);
            let answer = self.api.call(Method::POST, &path, Bytes::from(body)).await.map_err(log_failed)?;
            serde_json::from_slice::<Result<u64, LogIngestError>>(&answer)
                .map_err(|e| LogIngestError::Unavailable(e.to_string()))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(json: serde_json::Value) -> AssignmentsLine {
        serde_json::from_value(json).unwrap()
    }

    fn task(id: &str, status: &str) -> serde_json::Value {
        serde_json::json!({
            "taskArn": format!("arn:aws:ecs:us-east-1:000000000000:task/c/{id}"),
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1",
            "lastStatus": status,
        })
    }

    #[test]
    fn lines_build_the_assignments_and_unchanged_ones_keep_their_arc() {
        let (tx, rx) = watch::channel(Arc::new(HashMap::new()));
        let mut tds = HashMap::new();
        let td_key = crate::control::taskdef_key(&serde_json::from_value(task("a", "PENDING")).unwrap()).unwrap();
        apply_line(
            &tx,
            &mut tds,
            line(serde_json::json!({
                "full": true,
                "upsert": [
                    {"key": "k/a", "taskDefinitionKey": td_key, "task": task("a", "PENDING"), "claim": {"node": "n1"}},
                    {"key": "k/b", "taskDefinitionKey": td_key, "task": task("b", "PENDING"), "claim": {"node": "n1"}},
                ],
                "taskDefinitions": {td_key.clone(): {"family": "web", "revision": 1}},
                "remove": [],
            })),
        );
        let first = rx.borrow().clone();
        assert_eq!(first.len(), 2);
        assert_eq!(first["k/a"].taskdef.family.as_deref(), Some("web"));
        // A change to one task and the removal of none: the other keeps its pointer.
        apply_line(
            &tx,
            &mut tds,
            line(serde_json::json!({
                "full": false,
                "upsert": [{"key": "k/a", "taskDefinitionKey": td_key, "task": task("a", "RUNNING"), "claim": {"node": "n1"}}],
                "taskDefinitions": {},
                "remove": [],
            })),
        );
        let second = rx.borrow().clone();
        assert!(Arc::ptr_eq(&first["k/b"], &second["k/b"]));
        assert_eq!(second["k/a"].task.last_status.as_deref(), Some("RUNNING"));
        // A removal, then a full listing that repeats an unchanged task.
        apply_line(
            &tx,
            &mut tds,
            line(serde_json::json!({"full": false, "upsert": [], "taskDefinitions": {}, "remove": ["k/a"]})),
        );
        assert_eq!(rx.borrow().len(), 1);
        apply_line(
            &tx,
            &mut tds,
            line(serde_json::json!({
                "full": true,
                "upsert": [{"key": "k/b", "taskDefinitionKey": td_key, "task": task("b", "PENDING"), "claim": {"node": "n1"}}],
                "taskDefinitions": {td_key.clone(): {"family": "web", "revision": 1}},
                "remove": [],
            })),
        );
        let third = rx.borrow().clone();
        assert!(Arc::ptr_eq(&first["k/b"], &third["k/b"]));
        assert_eq!(tds.len(), 1);
    }

    #[test]
    fn exec_session_ids_are_plain() {
        assert!(is_session_id("ecs-execute-command-0a1b2c3d4e5f6a7b8"));
        for bad in ["", "../x", "a/b", "a?b", "a b", &"a".repeat(129)] {
            assert!(!is_session_id(bad), "{bad}");
        }
    }

    #[test]
    fn only_http_server_urls_are_taken() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // https:// only with certificates to trust.
            let https = ["https://127.0.0.1:9".to_string()];
            let e = RemoteControl::start(&https, "t".into(), "n".into(), false, false).err().unwrap();
            assert!(e.to_string().contains("--server-ca"), "{e}");
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            assert!(RemoteControl::start_with_tls(&https, "t".into(), "n".into(), false, false, Some(Arc::new(tls)))
                .is_ok());
            assert!(RemoteControl::start(&["ftp://x".into()], "t".into(), "n".into(), false, false).is_err());
            assert!(RemoteControl::start(&["nonsense".into()], "t".into(), "n".into(), false, false).is_err());
            assert!(RemoteControl::start(&[], "t".into(), "n".into(), false, false).is_err());
            assert!(RemoteControl::start(&["http://127.0.0.1:9".into()], "t".into(), "n".into(), false, false).is_ok());
        });
    }
}
