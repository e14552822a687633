//! Several servers on one etcd prefix: which servers there are, which one leads, and what
//! passes between them that the versioned store does not carry (issue 20, item 6).
//!
//! - Membership: every server campaigns in the leader election with its advertised base URL
//!   (`--advertise-url`) as the value, so the election's keys are the member list and its
//!   leader's value is the leader's URL ([`track`], every [`TRACK_EVERY`]; no key of its own).
//! - Registry blobs: a blob the view says a repository holds but this server's disk lacks is
//!   fetched from the other servers (`GET blobs/<digest>` under [`PREFIX`]), streamed into an
//!   upload that is committed only when its digest matches, then served ([`fetch_blob`]).
//! - Logs and CloudWatch are the leader's: a follower forwards those API requests to it
//!   unchanged ([`forward`]) and the leader replicates what it ingests to the followers
//!   ([`crate::replication`]).
//!
//! Peer requests carry `Authorization: Bearer <join token>` (the first unbound token of
//! `--join-tokens`, which every server of a prefix shares) and are checked as the agent API
//! checks agents. Without join tokens, servers fetch no blobs from each other.
//!
//! May not: write the versioned store, or carry anything it holds.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use estiba_registry::Digest;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};

use crate::agent_api::{Admission, TokenRefusal};
use crate::body::{self, Body};
use crate::Server;

/// Where the servers' calls to each other live on the listener.
pub const PREFIX: &str = "/_estiba/peer/v1/";

/// The services whose data only the leader ingests (the `module` of their models): their API
/// requests reaching a follower are forwarded to the leader.
pub const LEADER_OWNS: [&str; 2] = ["logs", "cloudwatch"];

/// Operations of other services whose answer only the leader has whole: target health is
/// kept in memory, and every node's probe results reach the leader (`tell_leader`), a
/// follower hears only its own nodes'.
pub const LEADER_ANSWERS: [(&str, &str); 1] = [("elbv2", "DescribeTargetHealth")];

/// Whether a follower sends `module`'s operation `op` to the leader.
pub fn leader_owns(module: &str, op: &str) -> bool {
    LEADER_OWNS.contains(&module) || LEADER_ANSWERS.contains(&(module, op))
}

/// How often [`track`] reads the election's members and leader.
pub const TRACK_EVERY: Duration = Duration::from_millis(300);

/// How long a request for the leader waits for one (an election after a leader died takes
/// up to its 5 s lease).
const LEADER_WAIT: Duration = Duration::from_secs(8);

/// What this server knows of the others.
#[derive(Default)]
pub struct Peers {
    state: RwLock<Members>,
    client: std::sync::OnceLock<reqwest::Client>,
    /// Where [`track`] reads the members: etcd, the election's name, this server's URL.
    source: std::sync::OnceLock<(Arc<estiba_store::EtcdStore>, String, String)>,
}

#[derive(Clone, Debug, Default)]
struct Members {
    /// This server's base URL; `None` while no [`track`] runs (a server alone).
    me: Option<String>,
    /// The leader's base URL, as etcd's election says.
    leader: Option<String>,
    /// Every campaigning server's base URL, this one included.
    all: Vec<String>,
}

impl Peers {
    /// Whether several servers may share the state (a [`track`] runs).
    pub fn shared(&self) -> bool {
        self.state.read().unwrap().me.is_some()
    }

    /// The leader's base URL when it is another server.
    pub fn leader_elsewhere(&self) -> Option<String> {
        let s = self.state.read().unwrap();
        s.leader.clone().filter(|l| Some(l) != s.me.as_ref())
    }

    /// The other servers, the leader first.
    pub fn others(&self) -> Vec<String> {
        let s = self.state.read().unwrap();
        let mut v: Vec<String> = s.all.iter().filter(|m| Some(*m) != s.me.as_ref()).cloned().collect();
        v.sort_by_key(|m| Some(m) != s.leader.as_ref());
        v.dedup();
        v
    }

    /// Makes [`Peers::shared`] true, as a [`track`] on etcd does, for tests on other stores.
    #[cfg(test)]
    pub(crate) fn pretend_shared(&self) {
        self.set("http://127.0.0.1:1", None, vec![]);
    }

    fn set(&self, me: &str, leader: Option<String>, all: Vec<String>) {
        let mut s = self.state.write().unwrap();
        s.me = Some(me.to_owned());
        s.leader = leader;
        s.all = all;
    }

    /// Reads the election's members and leader from etcd now.
    pub async fn refresh(&self) {
        let Some((etcd, election, me)) = self.source.get() else { return };
        let leader = etcd.leader(election).await;
        let members = estiba_store::Store::range(&**etcd, &format!("{election}/")).await;
        match (leader, members) {
            (Ok(leader), Ok(members)) => {
                let mut all: Vec<String> =
                    members.kvs.iter().filter_map(|kv| String::from_utf8(kv.value.to_vec()).ok()).collect();
                if !all.contains(me) {
                    all.push(me.clone());
                }
                self.set(me, leader, all);
            }
            (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "reading the servers from etcd failed"),
        }
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(2))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client without TLS roots to load")
        })
    }
}

/// The token this server presents to the others: the first of its join tokens.
pub(crate) fn token(server: &Server) -> Option<String> {
    let file = server.config.join_tokens_file.as_ref()?;
    server.join_tokens.first(file)
}

/// Keeps [`Server::peers`] up to date from etcd's election `election` until `stop`, with
/// `me` as this server's URL (the value it campaigns with).
pub async fn track(
    server: Arc<Server>,
    etcd: Arc<estiba_store::EtcdStore>,
    election: &str,
    me: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    server.peers.set(&me, None, vec![me.clone()]);
    let _ = server.peers.source.set((etcd, election.to_owned(), me));
    // A follower applies the leader's log and metric ingest to its own stores.
    tokio::spawn(crate::replication::follow(server.clone(), stop.clone()));
    // ... and removes its copies of registry blobs nothing uses any more, once a grace period
    // (at most a minute; the leader collects links and its own files).
    let sweep_every = server.config.registry_gc_grace.clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut last_sweep = tokio::time::Instant::now();
    while !*stop.borrow() {
        server.peers.refresh().await;
        if last_sweep.elapsed() >= sweep_every {
            last_sweep = tokio::time::Instant::now();
            if crate::replication::follower(&server) {
                crate::services::ecr::sweep_follower_copies(&server).await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TRACK_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}

/// On a follower, sends a telemetry batch its nodes reported (target health, which the
/// leader's controllers wait on) on to the leader's agent API as well, in the background;
/// lost if no leader takes it (nodes report every target's state again now and then).
pub fn tell_leader(server: &Arc<Server>, batch: &estiba_core::telemetry::Telemetry) {
    if !crate::replication::follower(server) {
        return;
    }
    let (Some(leader), Some(token)) = (server.peers.leader_elsewhere(), token(server)) else { return };
    let Ok(body) = serde_json::to_vec(&[batch]) else { return };
    let server = server.clone();
    tokio::spawn(async move {
        let url = format!("{leader}{}nodes/peer/telemetry", crate::agent_api::PREFIX);
        let sent = server.peers.client().post(&url).bearer_auth(token).body(body).send().await;
        if let Err(e) = sent.and_then(|r| r.error_for_status()) {
            tracing::debug!(leader, error = %e, "telemetry could not be sent on to the leader");
        }
    });
}

/// Why a peer request was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Token(#[from] TokenRefusal),
    #[error("no such peer API route: {0}")]
    NoRoute(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("blob {0} is not on this server")]
    NoBlob(String),
}

impl Refusal {
    fn response(&self) -> Response<Body> {
        let status = match self {
            Refusal::Token(t) => t.status(),
            Refusal::NoRoute(_) | Refusal::NoBlob(_) => StatusCode::NOT_FOUND,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        };
        let body = serde_json::json!({ "message": self.to_string() }).to_string();
        body::response(status, Bytes::from(body), "application/json")
    }
}

/// Answers a request under [`PREFIX`].
pub async fn handle(server: &Arc<Server>, req: Request<Incoming>) -> Response<Body> {
    match route(server, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "peer API refused a request");
            e.response()
        }
    }
}

async fn route(server: &Arc<Server>, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    authenticate(server, req.headers())?;
    let path = req.uri().path()[PREFIX.len()..].to_owned();
    let parts: Vec<&str> = path.split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["blobs", digest]) => {
            let d = Digest::parse(digest).map_err(|e| Refusal::BadRequest(e.message))?;
            let reg = server.registry.as_ref().ok_or_else(|| Refusal::NoBlob(d.to_string()))?;
            let size = reg.blobs.stat(&d).ok_or_else(|| Refusal::NoBlob(d.to_string()))?;
            let file = reg.blobs.open_blob(&d).map_err(|_| Refusal::NoBlob(d.to_string()))?;
            let mut r = Response::new(crate::registry::file_body(file, 0, size));
            r.headers_mut().insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(size));
            Ok(r)
        }
        (Method::GET, ["catchup", "metrics"]) => Ok(crate::catch_up::serve_metrics(server).await),
        (Method::GET, ["catchup", "streams"]) => Ok(crate::catch_up::serve_streams(server).await),
        (Method::GET, ["catchup", "events"]) => {
            Ok(crate::catch_up::serve_events(server, req.uri().query().unwrap_or("")).await)
        }
        (Method::GET, ["ingest"]) => Ok(crate::replication::serve(server, req.uri().query().unwrap_or("")).await),
        (Method::POST, ["apply"]) => {
            let body = body::read(req, server.config.max_body_bytes)
                .await
                .map_err(|e| Refusal::BadRequest(e.message.to_string()))?;
            Ok(crate::replication::serve_apply(server, body).await)
        }
        _ => Err(Refusal::NoRoute(path)),
    }
}

/// Peers present a join token that may act as any node: a token bound to a node is an
/// agent's, and gets nothing here.
fn authenticate(server: &Server, headers: &HeaderMap) -> Result<(), Refusal> {
    match crate::agent_api::admission(server, headers)? {
        Admission::AnyNode => Ok(()),
        _ => Err(TokenRefusal::BadToken.into()),
    }
}

/// Why a blob could not be fetched from the other servers.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no other server has blob {0}")]
    Missing(String),
    #[error("storing blob {digest} fetched from {from}: {message}")]
    Store { digest: String, from: String, message: String },
}

/// Fetches blob `d`, which this server's disk lacks, from the other servers (the leader
/// first), checks its digest and stores it. Returns its size. Concurrent fetches of one blob
/// each store the same bytes under the same name, which is harmless.
pub async fn fetch_blob(server: &Server, reg: &crate::registry::Registry, d: &Digest) -> Result<u64, FetchError> {
    let Some(token) = token(server) else { return Err(FetchError::Missing(d.to_string())) };
    let mut tried: Vec<String> = Vec::new();
    for round in 0..2 {
        if round == 1 {
            // A server that joined since the last look may have it.
            server.peers.refresh().await;
        }
        let peers: Vec<String> = server.peers.others().into_iter().filter(|p| !tried.contains(p)).collect();
        for peer in peers {
            tried.push(peer.clone());
            if let Some(size) = fetch_from(server, reg, d, &token, &peer).await? {
                return Ok(size);
            }
        }
    }
    Err(FetchError::Missing(d.to_string()))
}

/// One peer's copy of blob `d`: its size once stored, `None` when the peer has none.
async fn fetch_from(
    server: &Server,
    reg: &crate::registry::Registry,
    d: &Digest,
    token: &str,
    peer: &str,
) -> Result<Option<u64>, FetchError> {
    let url = format!("{peer}{PREFIX}blobs/{d}");
    let resp = match server.peers.client().get(&url).bearer_auth(token).send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            tracing::debug!(peer, digest = %d, status = r.status().as_u16(), "peer has no such blob");
            return Ok(None);
        }
        Err(e) => {
            tracing::debug!(peer, digest = %d, error = %e, "peer unreachable for a blob");
            return Ok(None);
        }
    };
    match store_fetched(reg, d, resp).await {
        Ok(size) => {
            tracing::info!(peer, digest = %d, size, "fetched a registry blob from another server");
            Ok(Some(size))
        }
        Err(message) => {
            // A body cut short or bytes that do not match: nothing is stored; say so
            // rather than try the next server with the same trust.
            tracing::warn!(peer, digest = %d, %message, "a blob fetched from another server was not stored");
            Err(FetchError::Store { digest: d.to_string(), from: peer.to_owned(), message })
        }
    }
}

async fn store_fetched(
    reg: &crate::registry::Registry,
    d: &Digest,
    mut resp: reqwest::Response,
) -> Result<u64, String> {
    let mut upload = tokio::task::block_in_place(|| reg.blobs.begin()).map_err(|e| e.message)?;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        tokio::task::block_in_place(|| upload.write(&chunk)).map_err(|e| e.message)?;
    }
    // Held shared as a push's commit is: collection never sees the blob half stored.
    let _g = reg.gc_lock.read().await;
    tokio::task::block_in_place(|| upload.commit(d)).map_err(|e| e.message)
}

/// Forwards an API request (its `headers` and `body` as received, still gzipped if it was) to the leader when another
/// server leads: `Ok(None)` when this server answers it itself (it leads, or it is alone);
/// `ServiceUnavailable` when no leader answers within [`LEADER_WAIT`].
pub async fn forward(
    server: &Server,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Option<Response<Body>>, estiba_api::ApiError> {
    if !server.peers.shared() {
        return Ok(None);
    }
    if headers.contains_key(FORWARDED) && !server.leader.load(std::sync::atomic::Ordering::Relaxed) {
        // Sent here as to the leader, which this server no longer is: never forward twice.
        return Err(estiba_api::ApiError::new(
            estiba_api::Common::ServiceUnavailable,
            "The server the request was forwarded to no longer leads; retry the request.",
        ));
    }
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        if server.leader.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(leader) = server.peers.leader_elsewhere() {
            match send(server, &leader, method, path_and_query, headers, body.clone()).await {
                Ok(r) => return Ok(Some(r)),
                Err(e) => tracing::debug!(leader, error = %e, "forwarding to the leader failed; waiting for a leader"),
            }
        }
        server.peers.refresh().await;
        if tokio::time::Instant::now() >= deadline {
            return Err(estiba_api::ApiError::new(
                estiba_api::Common::ServiceUnavailable,
                "No server leads at the moment (an election is under way); retry the request.",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Marks a request a follower forwarded.
const FORWARDED: &str = "x-estiba-forwarded";

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 5] = ["connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"];

async fn send(
    server: &Server,
    leader: &str,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, reqwest::Error> {
    let mut req = server.peers.client().request(method.clone(), format!("{leader}{path_and_query}"));
    for (name, value) in headers {
        // The body goes as it was sent (gzipped, say, with its Content-Encoding), so that the
        // leader verifies the same signature.
        if !HOP_BY_HOP.contains(&name.as_str()) {
            req = req.header(name, value);
        }
    }
    let mut resp = req.header(FORWARDED, "1").body(body).send().await?;
    let mut out = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    let streaming = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/vnd.amazon.eventstream"));
    let body = if streaming {
        // Live tail: relay the leader's event stream as it comes.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        if tx.send(Ok(c)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e))).await;
                        return;
                    }
                }
            }
        });
        body::streamed(rx)
    } else {
        let bytes = resp.bytes().await?;
        out = out.header(hyper::header::CONTENT_LENGTH, bytes.len());
        body::full(bytes)
    };
    Ok(out.body(body).unwrap_or_else(|_| Response::new(body::full(Bytes::new()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_presents_the_first_token_of_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# servers and agents\n\n  first \nsecond\n").unwrap();
        let tokens = crate::agent_api::Tokens::default();
        assert_eq!(tokens.first(&file).as_deref(), Some("first"));
        std::fs::write(&file, "# none\n").unwrap();
        assert_eq!(tokens.first(&file), None);
    }

    #[test]
    fn others_put_the_leader_first_and_leave_this_server_out() {
        let p = Peers::default();
        assert!(!p.shared());
        p.set(
            "http://a:1",
            Some("http://c:1".into()),
            vec!["http://a:1".into(), "http://b:1".into(), "http://c:1".into()],
        );
        assert!(p.shared());
        assert_eq!(p.others(), vec!["http://c:1".to_owned(), "http://b:1".to_owned()]);
        assert_eq!(p.leader_elsewhere().as_deref(), Some("http://c:1"));
        p.set("http://a:1", Some("http://a:1".into()), vec!["http://a:1".into()]);
        assert_eq!(p.leader_elsewhere(), None);
        assert!(p.others().is_empty());
    }
}
