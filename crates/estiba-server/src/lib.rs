//! The control plane server: the front door for every AWS API estiba answers (AWS JSON 1.0
//! and 1.1, Query, EC2, RPC v2 CBOR), the OCI registry, and the controllers (service
//! scheduler, housekeeping, ...), which run under one runtime ([`controller`]).
//!
//! Request flow: [`http`] routes by path → [`front`] finds the service (SigV4 scope, then
//! `X-Amz-Target`, then `Action`) and the operation, and decodes the input → the service's
//! handler ([`services`]) reads the [`view::View`], calls estiba-core for the rules, and
//! writes to the store with compare-and-swap ([`Server::transact`]) → [`front`] encodes the
//! answer in the request's protocol.
//!
//! **Architecture invariant:** no container syscalls here; this crate decides and records,
//! the agent does. Errors reach the wire in exactly one place ([`front::error_response`]).
//! Modules depend downwards: `http` → `front` → `services` → `view`, store; never back up.

pub mod agent_api;
pub mod auth;
pub mod body;
#[cfg(test)]
mod budget_tests;
pub mod catch_up;
pub mod connect;
pub mod console;
pub mod controller;
pub mod discovery;
pub mod dns;
pub mod exec;
pub mod front;
pub mod http;
pub mod key_locks;
pub mod lb;
pub mod lb_health;
pub mod limits;
pub mod liveness;
pub mod log_ingest;
pub mod metric_ingest;
mod migrate;
pub mod netblocks;
pub mod peers;
pub mod registry;
pub mod replication;
#[cfg(test)]
mod reservation_tests;
pub mod scaling;
pub mod sealing;
pub mod services;
pub mod sts;
pub mod targets;
pub mod task_credentials;
pub mod task_secrets;
pub use estiba_core::keys;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use estiba_core::{EcsError, Ids};
use estiba_store::{BoundedTxn, Compare, Op, Revision, Store, StoreError, Txn, TxnLimits};

/// What goes into the transaction that asks the task at `task_key` to stop, besides the
/// task itself: its Cloud Map instances deregistered, and its load balancer targets
/// draining (with the claim's `drain_until`, so its node waits before SIGTERM).
pub fn stop_ops(st: &view::State, task_key: &str, now: f64) -> Vec<estiba_store::Op> {
    let mut ops = discovery::deregister_on_stop(st, task_key);
    ops.extend(targets::deregister_on_stop(st, task_key, now));
    ops
}

/// The write that applies a node's `change` to the task at `key` as the view holds it, under a
/// compare on the task (`TaskStateChange::apply`: never backwards): an empty transaction when
/// nothing changes, `None` when there is no such task. The agent API and ECS's
/// Submit*StateChange operations both apply through it.
pub fn task_state_write(
    st: &view::State,
    key: &str,
    change: &estiba_core::node::TaskStateChange,
) -> Option<(Txn, estiba_core::node::TaskStateAck)> {
    let d = st.tasks.get(key)?;
    let before = d.task();
    let mut task = before.clone().into_owned();
    change.apply(&mut task);
    if task == *before {
        return Some((Txn::new(), estiba_core::node::TaskStateAck { version: task.version, changed: false }));
    }
    task.version = before.version + 1;
    let txn = Txn::new()
        .when(estiba_store::Compare::mod_revision(key, d.rev))
        .then(estiba_store::Op::put(key, serde_json::to_vec(&task).unwrap_or_default()));
    Some((txn, estiba_core::node::TaskStateAck { version: task.version, changed: true }))
}

/// Server settings (the binary maps its flags onto this).
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// The account when the access key is not a 12-digit account id.
    pub account_id: String,
    /// The region when a request carries no SigV4 credential scope.
    pub default_region: String,
    /// Larger request bodies are refused.
    pub max_body_bytes: usize,
    /// API requests per second per account, and the burst (`None`: no limit); over it,
    /// AWS's throttling error ([`limits`]).
    pub rate_limit: Option<(u32, u32)>,
    /// The most connections open at once; more wait in the listen queue.
    pub max_connections: usize,
    /// How long STOPPED tasks stay visible before they are removed.
    pub stopped_task_retention: Duration,
    /// The node of this machine, which runs Fargate tasks; `None` when no agent runs here
    /// (tasks then wait in PROVISIONING).
    pub local_node: Option<String>,
    /// How long a node may stay silent (no heartbeat) before it counts as lost: no new
    /// Fargate task goes to it.
    pub node_lease: Duration,
    /// Where the agent API reads its join tokens (one per line; `#` comments), re-read when
    /// the file changes, so that removing a line revokes the token; `None`: agents cannot
    /// join.
    pub join_tokens_file: Option<std::path::PathBuf>,
    /// The default VPC's CIDR (its subnets are what awsvpc tasks' addresses come from).
    pub vpc_cidr: ipnet::Ipv4Net,
    /// Where registry blobs live; `None` turns the registry (`/v2/`) off.
    pub registry_dir: Option<std::path::PathBuf>,
    /// `host:port` advertised in `repositoryUri`; defaults to the listen address.
    pub registry_host: Option<String>,
    pub registry_auth: registry::Auth,
    /// Unreferenced blobs younger than this are kept (a push may be about to use them).
    pub registry_gc_grace: Duration,
    /// Where the local node reads `environmentFiles`; `None` refuses them (they could name
    /// any file of the host).
    pub environment_files_dir: Option<std::path::PathBuf>,
    /// How long a new ELBv2 load balancer reports `provisioning` before `active`.
    pub lb_provisioning: Duration,
    /// Load balancer listeners are also published on this host address (their own port),
    /// besides the load balancers' VPC addresses (`--lb-host-address`).
    pub lb_host_address: Option<std::net::IpAddr>,
    /// Where the log store keeps CloudWatch Logs' streams and events; `None`: a temporary
    /// directory removed when the server ends (as with the in-memory store).
    pub logs_dir: Option<std::path::PathBuf>,
    /// The most bytes the log store keeps on disk (oldest data goes first).
    pub logs_disk_budget: Option<u64>,
    /// The metric store's directory (`<data-dir>/metrics`); `None` keeps metrics in a
    /// temporary directory that goes away with the server.
    pub metrics_dir: Option<std::path::PathBuf>,
    /// How long one AWS minute of metrics lasts (`--metric-period`, default 60 s): see
    /// [`estiba_core::metric_time`].
    pub metric_period: Duration,
    /// Where the console's files are read from on each request instead of the embedded
    /// copies (`--console-dir`, for working on the console); `None` serves the embedded ones.
    pub console_dir: Option<std::path::PathBuf>,
    /// The key SSM SecureString and Secrets Manager values are sealed under ([`sealing`]),
    /// created on first start; `None`: a key that lives as long as the process (the in-memory
    /// store). Servers sharing an etcd store must share this file.
    pub secrets_key_file: Option<std::path::PathBuf>,
    /// The credentials file (`--credentials`): when set, every API request must carry a valid
    /// SigV4 signature of one of its keys, and its account is the key's ([`auth`]); `None`:
    /// requests are not verified (the account is a 12-digit access key id, else `account_id`).
    pub credentials_file: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:4566".parse().unwrap(),
            account_id: "000000000000".into(),
            default_region: "us-east-1".into(),
            max_body_bytes: 4 << 20,
            rate_limit: None,
            max_connections: 4096,
            stopped_task_retention: Duration::from_secs(3600),
            local_node: None,
            node_lease: Duration::from_secs(30),
            join_tokens_file: None,
            vpc_cidr: estiba_core::vpc::DEFAULT_CIDR.parse().unwrap(),
            registry_dir: None,
            registry_host: None,
            registry_auth: registry::Auth::Open,
            registry_gc_grace: Duration::from_secs(3600),
            environment_files_dir: None,
            lb_provisioning: Duration::from_secs(2),
            lb_host_address: None,
            logs_dir: None,
            logs_disk_budget: None,
            metrics_dir: None,
            metric_period: Duration::from_secs(60),
            console_dir: None,
            secrets_key_file: None,
            credentials_file: None,
        }
    }
}

/// Shared state of a running server.
pub struct Server {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub view: Arc<view::View>,
    pub local_node: Option<Arc<str>>,
    pub registry: Option<Arc<registry::Registry>>,
    /// The controllers' pass counters ([`controller::runtime`]).
    pub controllers: controller::Metrics,
    /// The VPC resolvers' zone, republished on every change ([`dns`]); nodes serve it.
    pub dns: tokio::sync::watch::Sender<Arc<estiba_dns::Zone>>,
    /// Service Connect's listeners (VIP:port → endpoints), republished with the zone
    /// ([`connect`]); nodes' proxies serve them.
    pub connect: tokio::sync::watch::Sender<Arc<estiba_proxy::Table>>,
    /// ELBv2 target health as the data plane reports it ([`lb_health`]).
    pub target_health: lb_health::TargetHealthBook,
    /// The load balancers' data plane table ([`lb`]), republished on every change; nodes'
    /// load balancers serve it.
    pub lb: tokio::sync::watch::Sender<Arc<estiba_lb::Table>>,
    /// Every node's VPC address blocks and where they are reached ([`netblocks`]),
    /// republished with the zone; nodes route other nodes' blocks.
    pub routes: tokio::sync::watch::Sender<Arc<estiba_core::netblock::Routes>>,
    /// The latest load balancer counters each node reported ([`lb::Metrics`]).
    pub lb_metrics: lb::Metrics,
    /// Bumped when something the controllers read changes outside the view (target health
    /// reported by nodes): controllers waiting for a change wake as for a view change.
    pub nudge: tokio::sync::watch::Sender<u64>,
    /// CloudWatch Logs' streams and events (groups are documents in the store).
    pub logs: estiba_logstore::LogStore,
    /// The key secret values are sealed under in the store ([`sealing`]).
    pub secrets_key: sealing::SecretsKey,
    /// Issues and opens the temporary credentials of STS AssumeRole and task roles
    /// ([`estiba_auth::session`]), under a key derived from `secrets_key`.
    pub sessions: estiba_auth::session::Issuer,
    /// Test only: the lifetime of every issued credential, in seconds, from the environment
    /// variable `ESTIBA_TEST_ONLY_SESSION_SECONDS` (expiry tests); `None` in real use.
    pub test_only_session_seconds: Option<i64>,
    /// The log store's directory when the configuration named none.
    _logs_tmp: Option<tempfile::TempDir>,
    /// CloudWatch metrics' datapoints, in AWS time ([`Server::metric_clock`]).
    pub metrics: estiba_metricstore::MetricStore,
    /// Real time to AWS time and back (`--metric-period`).
    pub metric_clock: estiba_core::metric_time::MetricClock,
    /// The metric store's directory when the configuration named none.
    _metrics_tmp: Option<tempfile::TempDir>,
    /// AWS time (ms) up to which the metric ingest has written what nodes measured
    /// ([`metric_ingest`]); 0 while no ingest runs. Alarms are evaluated as of this time, so
    /// they never judge a minute whose datapoints are still on their way.
    pub metrics_written_to: std::sync::atomic::AtomicI64,
    /// The agent API's join tokens, as last read from `Config::join_tokens_file`.
    pub join_tokens: agent_api::Tokens,
    /// Where agents' telemetry and container logs go (set once by the binary).
    pub agent_sinks: std::sync::OnceLock<agent_api::Sinks>,
    /// Whether this server leads (runs the controllers): always when it is alone, by etcd's
    /// election when several servers share an etcd (the binary's `lead`).
    pub leader: std::sync::atomic::AtomicBool,
    /// Placements on container instances whose write is not in the view yet
    /// ([`services::ecs::Reservations`]).
    pub reservations: Arc<std::sync::Mutex<services::ecs::Reservations>>,
    /// The store keys this server's own requests are writing under [`Server::transact_locked`]
    /// (container instances placed on, when their writes are guarded in the store).
    pub key_locks: key_locks::KeyLocks,
    /// The other servers sharing the state, and which one leads ([`peers`]).
    pub peers: peers::Peers,
    /// Which nodes reported within the node lease ([`liveness`]).
    pub liveness: Arc<liveness::Liveness>,
    /// API requests per account ([`limits`], `Config::rate_limit`).
    pub rate_limits: Option<limits::RateLimits>,
    /// The leader's log and metric ingest, kept for the followers ([`replication`]); every
    /// change to `logs` and `metrics` goes through it.
    pub replication: replication::Replication,
    /// The keys API requests are verified with (`Config::credentials_file`); `None`: auth off.
    pub credentials: Option<auth::Credentials>,
    /// ECS Exec's sessions ([`exec`]).
    pub exec: exec::Exec,
}

/// Why a write could not be made. Every service's error type converts from it (into its
/// internal-failure code), so [`Server::transact`] serves them all.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("The request conflicted with concurrent changes too many times; retry it.")]
    Conflicts,
}

impl From<WriteError> for EcsError {
    fn from(e: WriteError) -> Self {
        EcsError::server(e.to_string())
    }
}

impl From<WriteError> for estiba_core::ecr::EcrError {
    fn from(e: WriteError) -> Self {
        estiba_core::ecr::EcrError::new(estiba_api::ecr::ErrorCode::ServerException, e.to_string())
    }
}

impl From<WriteError> for estiba_api::ApiError {
    fn from(e: WriteError) -> Self {
        estiba_api::ApiError::new(estiba_api::Common::InternalFailure, e.to_string())
    }
}

/// Random identifiers from UUID v4.
pub struct RandomIds;

impl Ids for RandomIds {
    fn uuid(&mut self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    fn hex32(&mut self) -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }

    fn deployment_number(&mut self) -> u64 {
        let b = uuid::Uuid::new_v4().into_bytes();
        let n = u64::from_le_bytes(b[..8].try_into().unwrap());
        1_000_000_000_000_000_000 + n % 9_000_000_000_000_000_000
    }

    /// The start time in milliseconds (12 hex digits), then 80 random bits (20), in the
    /// spirit of ULIDs and UUID v7: still 32 hex characters as ECS's, but new tasks' keys sort
    /// after the old ones, so a commit of new tasks fills the last pages of the store's
    /// B-tree instead of dirtying one scattered 8 KiB page per task (placements +50 %,
    /// BENCHMARKS.md). Nothing may take a task id's head for a short name: its tail is the
    /// random part (`estiba_net::tail`).
    fn task_id(&mut self) -> String {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        // 80 random bits of a v4 UUID (its first 6 bytes and last 4: the version and variant
        // bits lie between them) as 20 hex digits.
        let u = u128::from_be_bytes(*uuid::Uuid::new_v4().as_bytes());
        let r = ((u >> 80) << 32) | (u & 0xffff_ffff);
        format!("{:012x}{:020x}", ms as u64 & 0xffff_ffff_ffff, r)
    }
}

/// The current time as AWS JSON reports it: seconds since the epoch, millisecond precision.
pub fn now() -> f64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// A store's directory: the configured one, or a temporary one that goes away with the
/// server (then returned too, to be kept alive).
fn data_dir(
    what: &str,
    configured: Option<&std::path::Path>,
) -> Result<(std::path::PathBuf, Option<tempfile::TempDir>), estiba_store::StoreError> {
    match configured {
        Some(dir) => Ok((dir.to_path_buf(), None)),
        None => {
            let tmp = tempfile::Builder::new().prefix(&format!("estiba-{what}-")).tempdir().map_err(|e| {
                estiba_store::StoreError::Backend(format!("a temporary directory for the {what} store: {e}"))
            })?;
            Ok((tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The metric clock, kept in `<metrics dir>/ORIGIN` as `<anchor real ms> <anchor AWS ms>
/// <period ms>` (an older file holds the origin alone), so stored datapoints keep lining up
/// across restarts. Started with another `--metric-period`, the clock is rebased: AWS time
/// goes on from where it was, at the new pace, and the file is rewritten.
fn metric_clock(
    dir: &std::path::Path,
    period: Duration,
) -> Result<estiba_core::metric_time::MetricClock, estiba_store::StoreError> {
    use estiba_core::metric_time::MetricClock;
    let path = dir.join("ORIGIN");
    let fail = |e: std::io::Error| estiba_store::StoreError::Backend(format!("{}: {e}", path.display()));
    let write = |c: &MetricClock| {
        let ((real, aws), p) = (c.anchor(), c.period().as_millis());
        let tmp = dir.join("ORIGIN.tmp");
        std::fs::write(&tmp, format!("{real} {aws} {p}\n")).map_err(fail)?;
        std::fs::rename(&tmp, &path).map_err(fail)
    };
    let now = now_ms();
    let text = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let clock = MetricClock::new(now, period);
            write(&clock)?;
            return Ok(clock);
        }
        Err(e) => return Err(fail(e)),
    };
    let bad = || fail(std::io::Error::other(format!("expected `<real ms> <aws ms> <period ms>`, found {text:?}")));
    let nums = text.split_whitespace().map(|n| n.parse::<i64>().map_err(|_| bad())).collect::<Result<Vec<_>, _>>()?;
    let (real, aws, stored) = match nums[..] {
        // Written before the period was kept: taken as made with this one.
        [origin] => (origin, origin, period.as_millis() as i64),
        [real, aws, p] if p > 0 => (real, aws, p),
        _ => return Err(bad()),
    };
    let clock = MetricClock::anchored(real, aws, Duration::from_millis(stored as u64));
    if clock.period() == period {
        if nums.len() == 1 {
            write(&clock)?;
        }
        return Ok(clock);
    }
    let rebased = clock.rebased(now, period);
    tracing::info!(
        from = ?clock.period(),
        to = ?period,
        "--metric-period changed: metric time goes on from where it was, at the new pace"
    );
    write(&rebased)?;
    Ok(rebased)
}

/// How long a write keeps retrying when other writers keep changing what it read. Writers of
/// one key (say, registrations of one family) conflict and go one per group commit, so a
/// write may need as many attempts as there are concurrent writers of its key.
/// A background writer's budget per transaction, within the store's own limits: controllers
/// keep their transactions this small on every backend (short, rarely conflicting) and come
/// back soon for what is left ([`Server::txn_budget`]).
pub const BACKGROUND_TXN_OPS: usize = 100;
pub const BACKGROUND_TXN_BYTES: usize = 512 << 10;

const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a retry after a conflict waits for the view to hear of the write that won
/// ([`Server::after_conflict`]); then it retries anyway.
const CONFLICT_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

impl Server {
    pub async fn new(config: Config, store: Arc<dyn Store>) -> Result<Arc<Server>, estiba_store::StoreError> {
        let liveness = Arc::new(liveness::Liveness::new(config.node_lease));
        let rate_limits = config.rate_limit.map(|(rate, burst)| limits::RateLimits::new(rate, burst));
        migrate::claims_by_node(&*store).await?;
        let view = view::View::start(store.clone(), services::SERVICES.iter().flat_map(|s| s.tables())).await?;
        let local_node = config.local_node.as_deref().map(Arc::from);
        let registry = match &config.registry_dir {
            Some(dir) => {
                let host = config.registry_host.clone().unwrap_or_else(|| config.listen.to_string());
                let r = registry::Registry::open(dir, host, config.registry_auth)
                    .map_err(|e| estiba_store::StoreError::Backend(format!("registry at {}: {e}", dir.display())))?;
                Some(Arc::new(r))
            }
            None => None,
        };
        let (logs_dir, logs_tmp) = data_dir("logs", config.logs_dir.as_deref())?;
        let options = estiba_logstore::Options { disk_budget: config.logs_disk_budget, ..Default::default() };
        let logs = estiba_logstore::LogStore::open(&logs_dir, options)
            .map_err(|e| estiba_store::StoreError::Backend(format!("log store at {}: {e}", logs_dir.display())))?;
        let (metrics_dir, metrics_tmp) = data_dir("metrics", config.metrics_dir.as_deref())?;
        let metrics = estiba_metricstore::MetricStore::open(&metrics_dir, Default::default()).map_err(|e| {
            estiba_store::StoreError::Backend(format!("metric store at {}: {e}", metrics_dir.display()))
        })?;
        let metric_clock = metric_clock(&metrics_dir, config.metric_period)?;
        let secrets_key = match &config.secrets_key_file {
            Some(path) => sealing::SecretsKey::load_or_create(path)
                .map_err(|e| estiba_store::StoreError::Backend(e.to_string()))?,
            None => sealing::SecretsKey::ephemeral(),
        };
        let credentials = match &config.credentials_file {
            Some(f) => Some(
                auth::Credentials::open(f)
                    .map_err(|e| estiba_store::StoreError::Backend(format!("credentials file {}: {e}", f.display())))?,
            ),
            None => None,
        };
        let (dns, _) = tokio::sync::watch::channel(Arc::new(estiba_dns::Zone::default()));
        let (connect, _) = tokio::sync::watch::channel(Arc::new(estiba_proxy::Table::default()));
        Ok(Arc::new(Server {
            config,
            store,
            view,
            local_node,
            registry,
            controllers: Default::default(),
            dns,
            connect,
            target_health: Default::default(),
            lb: tokio::sync::watch::channel(Arc::new(estiba_lb::Table::default())).0,
            routes: tokio::sync::watch::channel(Arc::new(Default::default())).0,
            lb_metrics: Default::default(),
            nudge: tokio::sync::watch::channel(0).0,
            logs,
            sessions: secrets_key.session_issuer(),
            test_only_session_seconds: std::env::var("ESTIBA_TEST_ONLY_SESSION_SECONDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|v: &i64| *v > 0),
            secrets_key,
            _logs_tmp: logs_tmp,
            metrics,
            metric_clock,
            _metrics_tmp: metrics_tmp,
            metrics_written_to: Default::default(),
            join_tokens: Default::default(),
            agent_sinks: Default::default(),
            leader: Default::default(),
            reservations: Default::default(),
            key_locks: Default::default(),
            peers: Default::default(),
            liveness,
            rate_limits,
            replication: Default::default(),
            credentials,
            exec: Default::default(),
        }))
    }

    /// Now, in AWS time for metrics ([`estiba_core::metric_time`]), milliseconds.
    pub fn metric_now_ms(&self) -> i64 {
        self.metric_clock.to_aws(now_ms())
    }

    /// The AWS time (ms) alarms are evaluated as of: now, held back to what the metric ingest
    /// has written ([`Server::metrics_written_to`]), unless the ingest has fallen more than
    /// five AWS minutes behind (then it is failing, and alarms must not stop with it).
    pub fn alarm_now_ms(&self) -> i64 {
        let now = self.metric_now_ms();
        let written = self.metrics_written_to.load(std::sync::atomic::Ordering::Relaxed);
        if written > now - 5 * estiba_core::metric_time::AWS_MINUTE_MS {
            written.min(now)
        } else {
            now
        }
    }

    /// Wakes the controllers that wait for changes (see [`Server::nudge`]).
    pub fn nudge(&self) {
        self.nudge.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Commits `txn`; returns false when a compare failed. On success the view holds the
    /// write before this returns.
    pub async fn commit(&self, txn: Txn) -> Result<bool, WriteError> {
        if txn.ops.is_empty() && txn.compares.is_empty() {
            return Ok(true);
        }
        Ok(self.commit_at(txn).await?.is_some())
    }

    /// [`Server::commit`], with the revision of the write when it committed (the view's when
    /// there was nothing to write).
    pub async fn commit_at(&self, txn: Txn) -> Result<Option<estiba_store::Revision>, WriteError> {
        if txn.ops.is_empty() && txn.compares.is_empty() {
            return Ok(Some(self.view.read().revision));
        }
        let r = self.store.txn(txn).await?;
        if !r.succeeded {
            return Ok(None);
        }
        self.view.wait_for(r.revision).await;
        Ok(Some(r.revision))
    }

    /// Runs read-compute-write with compare-and-swap until it commits: `f` reads the view and
    /// returns the transaction to write and the result to return, or the service's error.
    pub async fn transact<R, E: From<WriteError>>(
        &self,
        mut f: impl FnMut(&view::State) -> Result<(Txn, R), E>,
    ) -> Result<R, E> {
        let deadline = std::time::Instant::now() + RETRY_FOR;
        while std::time::Instant::now() < deadline {
            let (txn, r, read) = {
                let st = self.view.read();
                let (txn, r) = f(&st)?;
                (txn, r, st.revision)
            };
            if self.commit(txn).await? {
                return Ok(r);
            }
            self.after_conflict(read).await;
        }
        Err(WriteError::Conflicts.into())
    }

    /// [`Server::transact`] for writes that compare keys many of this server's own requests
    /// write at once (the container instances placements go to, when other servers may share
    /// the state): `f` also returns those keys, and the write goes under their locks
    /// ([`key_locks`]), so this server's requests take turns instead of failing each other's
    /// compares and placing again and again. A request that waited for a lock runs `f` again
    /// under it (the holder changed what it read). Returns the locks still held: the caller
    /// releases them once what it wrote is counted where the next holder reads (the view, not
    /// the reservations). With no keys it is [`Server::transact`].
    pub async fn transact_locked<R, E: From<WriteError>>(
        &self,
        mut f: impl FnMut(&view::State) -> Result<(Txn, R, std::collections::BTreeSet<String>), E>,
    ) -> Result<(R, key_locks::KeyGuards, estiba_store::Revision), E> {
        let deadline = std::time::Instant::now() + RETRY_FOR;
        let mut guards = key_locks::KeyGuards::default();
        // Locks just taken after a wait: `f` runs again under them even past the deadline.
        let mut fresh = false;
        while std::mem::take(&mut fresh) || std::time::Instant::now() < deadline {
            let (txn, r, keys, read) = {
                let st = self.view.read();
                let (txn, r, keys) = f(&st)?;
                (txn, r, keys, st.revision)
            };
            if !guards.cover(&keys) {
                // Sorted order holds only for one set at a time: let go of the old set first.
                drop(std::mem::take(&mut guards));
                let waiting = self.key_locks.lock(&keys);
                let Ok((g, contended)) = tokio::time::timeout_at(deadline.into(), waiting).await else { break };
                guards = g;
                if contended {
                    fresh = true;
                    continue;
                }
            }
            if let Some(at) = self.commit_at(txn).await? {
                return Ok((r, guards, at));
            }
            // Another server's write won: no lock of this process helps against it.
            drop(std::mem::take(&mut guards));
            self.after_conflict(read).await;
        }
        Err(WriteError::Conflicts.into())
    }

    /// The nodes that reported, each with whether it reported within the node lease and the
    /// ids of the tasks it runs (`GET /_estiba/nodes`).
    pub fn nodes(&self) -> Vec<serde_json::Value> {
        let now = now();
        let st = self.view.read();
        st.nodes
            .values()
            .map(|d| {
                let mut v = serde_json::to_value(&d.value).unwrap_or_default();
                v["connected"] = self.liveness.alive(&st, &d.value.id, now).into();
                // The ids of the tasks it runs (claimed, not stopped).
                let running: Vec<&str> = st
                    .claims_by_node
                    .get(&d.value.id)
                    .into_iter()
                    .flatten()
                    .filter(|k| st.tasks.get(*k).is_some_and(|t| !t.value.stopped()))
                    .filter_map(|k| k.rsplit('/').next())
                    .collect();
                v["tasks"] = running.into();
                v
            })
            .collect()
    }

    /// How big one transaction may be on this store (API operations may use all of it).
    pub fn txn_limits(&self) -> TxnLimits {
        self.store.limits()
    }

    /// A background writer's budget per transaction: the store's limits, at most
    /// [`BACKGROUND_TXN_OPS`] operations and [`BACKGROUND_TXN_BYTES`].
    pub fn txn_budget(&self) -> TxnLimits {
        self.store.limits().at_most(BACKGROUND_TXN_OPS, BACKGROUND_TXN_BYTES)
    }

    /// For operations AWS applies item by item (RegisterTargets, DeleteAlarms once its names
    /// are checked): writes items `0..n` in as few transactions as the store's limits allow.
    /// `f` reads the view and builds the transaction of the items in `range` with what the
    /// answer needs of them (`range.start == 0` is the first batch: the one to check the whole
    /// request in, so that bad input writes nothing); the range halves until its transaction
    /// fits (one item is always tried). A batch whose compare fails is built again from a
    /// fresh view, as [`Server::transact`] does. Returns each batch's result, in order.
    pub async fn transact_in_batches<R, E: From<WriteError>>(
        &self,
        n: usize,
        mut f: impl FnMut(&view::State, std::ops::Range<usize>) -> Result<(Txn, R), E>,
    ) -> Result<Vec<R>, E> {
        let limits = self.txn_limits();
        let deadline = std::time::Instant::now() + RETRY_FOR;
        let mut out = Vec::new();
        let mut done = 0;
        while done < n || (n == 0 && out.is_empty()) {
            let mut len = n - done;
            let (txn, r, read) = loop {
                let st = self.view.read();
                let (txn, r) = f(&st, done..done + len)?;
                if len <= 1 || limits.fits(&txn) {
                    break (txn, r, st.revision);
                }
                len = len.div_ceil(2);
            };
            if self.commit(txn).await? {
                out.push(r);
                done += len;
                if n == 0 {
                    break;
                }
            } else if std::time::Instant::now() > deadline {
                return Err(WriteError::Conflicts.into());
            } else {
                self.after_conflict(read).await;
            }
        }
        Ok(out)
    }

    /// For deletions too big for one transaction: deletes a resource's children in batches
    /// within the store's limits until the rest (its own `parent_ops` operations and the
    /// children left) fits one, which the caller then writes atomically as usual. `f` reads the
    /// view and returns the compares that guard every batch (the parent's revision, so no batch
    /// lands once the parent changed), `parent_ops` and the keys of the children still there;
    /// `None` stops (the caller's own transaction then says why). Only for children whose loss
    /// before the parent's is harmless and which a retry of the operation deletes anyway: each
    /// batch is then safe to crash after.
    pub async fn trim_children(
        &self,
        mut f: impl FnMut(&view::State) -> Option<(Vec<Compare>, usize, Vec<String>)>,
    ) -> Result<(), WriteError> {
        let limits = self.txn_limits();
        let deadline = std::time::Instant::now() + RETRY_FOR;
        while std::time::Instant::now() < deadline {
            let txn = {
                let st = self.view.read();
                let Some((guard, parent_ops, children)) = f(&st) else { return Ok(()) };
                let whole = Txn { compares: guard.clone(), ops: children.iter().map(Op::delete).collect() };
                // The parent's operations are counted as deletes of its children's size.
                let room = limits.max_ops.saturating_sub(parent_ops);
                let per_op = whole.ops.first().map_or(0, |o| limits.size_of(&Txn::new().then(o.clone())));
                let room_bytes = limits.max_bytes.saturating_sub(per_op.saturating_mul(parent_ops));
                if whole.ops.len() <= room && limits.size_of(&whole) <= room_bytes {
                    return Ok(());
                }
                let mut batch = BoundedTxn::new(limits);
                if !batch.add(Txn { compares: guard, ops: vec![] }) {
                    return Ok(());
                }
                for k in children {
                    if !batch.add(Txn::new().then(Op::delete(k))) {
                        break;
                    }
                }
                batch.into_txn()
            };
            let n = txn.ops.len();
            if n == 0 {
                return Ok(());
            }
            if self.commit(txn).await? {
                tracing::debug!(deleted = n, "deleted a batch of children ahead of their parent");
            } else {
                self.catch_up().await;
            }
        }
        Err(WriteError::Conflicts)
    }

    /// Each controller's passes, errors and pass times, by name.
    pub fn controller_stats(&self) -> Vec<controller::ControllerStats> {
        self.controllers.snapshot()
    }

    /// Waits until the view holds everything the store has committed.
    pub async fn catch_up(&self) {
        let rev: Revision = self.store.revision();
        self.view.wait_for(rev).await;
    }

    /// After a write whose compare failed on the view at revision `read`: waits until the
    /// view holds what the store has committed and has moved past `read`, for at most
    /// [`CONFLICT_WAIT`]. The second wait matters on etcd, where the write that won (another
    /// request's, or another server's) can be in etcd before this server has heard of it: a
    /// retry on the same view would only fail again.
    pub async fn after_conflict(&self, read: Revision) {
        self.catch_up().await;
        if self.view.revision() <= read {
            let _ = tokio::time::timeout(CONFLICT_WAIT, self.view.wait_for(read + 1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn task_ids_are_32_hex_characters_that_sort_by_start_time() {
        use estiba_core::Ids;
        let a = RandomIds.task_id();
        std::thread::sleep(Duration::from_millis(2));
        let (b, c) = (RandomIds.task_id(), RandomIds.task_id());
        for id in [&a, &b, &c] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x)), "{id}");
        }
        assert!(a < b && a < c, "{a} {b} {c}");
        // The random tail tells apart tasks started in the same millisecond.
        assert_ne!(b[20..], c[20..]);
    }

    #[test]
    fn the_metric_clock_survives_restarts_and_a_new_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let five = metric_clock(dir.path(), Duration::from_secs(5)).expect("clock");
        assert_eq!(metric_clock(dir.path(), Duration::from_secs(5)).expect("again"), five);
        let now = now_ms();
        let sixty = metric_clock(dir.path(), Duration::from_secs(60)).expect("rebased");
        assert_eq!(sixty.period(), Duration::from_secs(60));
        // No jump: AWS time now is what the old clock says (to the few ms this test takes).
        assert!((sixty.to_aws(now) - five.to_aws(now)).abs() < 1000, "{sixty:?} {five:?}");
        assert_eq!(metric_clock(dir.path(), Duration::from_secs(60)).expect("kept"), sixty);
        // An older file: the origin alone.
        std::fs::write(dir.path().join("ORIGIN"), "1700000000000\n").expect("write");
        let old = metric_clock(dir.path(), Duration::from_secs(5)).expect("old file");
        assert_eq!(old, estiba_core::metric_time::MetricClock::new(1_700_000_000_000, Duration::from_secs(5)));
        std::fs::write(dir.path().join("ORIGIN"), "12 x\n").expect("write");
        assert!(metric_clock(dir.path(), Duration::from_secs(5)).is_err());
    }

    #[tokio::test]
    async fn alarms_wait_for_the_ingest_but_not_for_ever() {
        let s = Server::new(Config::default(), Arc::new(estiba_store::MemStore::new())).await.expect("server");
        let now = s.metric_now_ms();
        // No ingest running: alarms go by the clock.
        assert!(s.alarm_now_ms() >= now);
        // The ingest has written up to 10 AWS seconds ago: alarms judge up to there.
        s.metrics_written_to.store(now - 10_000, Ordering::Relaxed);
        assert_eq!(s.alarm_now_ms(), now - 10_000);
        // An ingest stuck for more than five AWS minutes no longer holds them back.
        s.metrics_written_to.store(now - 6 * 60_000, Ordering::Relaxed);
        assert!(s.alarm_now_ms() >= now);
    }
}
