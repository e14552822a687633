//! The etcd v3 backend: the [`Store`] trait on a real etcd cluster, through `etcd-client`.
//!
//! - Revisions, create/mod revisions and versions are etcd's own. A failed transaction, an
//!   empty one and one that changes nothing do not bump the revision (etcd's MVCC only
//!   advances it when a transaction changes a key).
//! - Every key lives under a configurable prefix (for example `/estiba/`), added on the way in
//!   and stripped on the way back, so estiba can share an etcd with other users.
//! - Transactions are checked against etcd's limits before they are sent (`--max-txn-ops`,
//!   128 by default, and `--max-request-bytes`, 1.5 MiB): one over them fails with
//!   [`StoreError::TooManyOps`] or [`StoreError::TooLarge`] and is never split, since a split
//!   transaction would no longer be atomic.
//! - Watches start at `after + 1`; a start etcd has compacted away ends the stream with
//!   [`StoreError::Compacted`] (the watcher lists again). A watch whose connection breaks is
//!   reopened from the last revision it delivered, on whichever endpoint answers.
//! - [`Store::revision`] is synchronous: the latest change under the prefix seen (this store's
//!   own writes and a background watch of the prefix, so other servers' writes too) is kept in
//!   an atomic. It deliberately ignores revisions that only other users of a shared etcd made:
//!   a view fed by a watch of the prefix never sees those, and callers wait for it to reach
//!   `revision()`.
//!
//! This module may not keep a copy of the key space: reads go to etcd (callers that need a
//! local view build it from `range` + `watch`).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, ElectionClient, EventType, GetOptions, KvClient,
    LeaderKey, LeaseClient, PutOptions, ResignOptions, Txn as EtcdTxn, TxnOp, WatchClient, WatchOptions,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{
    BoxFuture, Compare, Event, EventKind, KeyValue, Op, RangeResponse, Result, Revision, Store, StoreError, Txn,
    TxnLimits, TxnResponse, Watch, WatchBatch,
};

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// Keys per page when listing a prefix: each page is one read at the first page's revision.
const RANGE_PAGE: i64 = 500;
/// Largest response accepted from etcd (a page of large values, a watch response of a big
/// transaction).
const MAX_DECODE: usize = 256 << 20;
/// Protobuf framing per operation, counted generously (tags, lengths, the op's envelope).
const OP_OVERHEAD: usize = 24;
/// Buffer per watcher, in batches; a slow reader holds back only its own stream.
const WATCH_BUFFER: usize = 1024;

/// Where the etcd cluster is and how estiba uses it.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `http://host:port` of one or more members; the client balances over them and moves on
    /// when one goes away.
    pub endpoints: Vec<String>,
    /// Prepended to every key (for example `/estiba/`); empty for none.
    pub prefix: String,
    /// The cluster's `--max-txn-ops`: the most compares, and the most operations, in one txn.
    pub max_txn_ops: usize,
    /// The cluster's `--max-request-bytes`.
    pub max_request_bytes: usize,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: prefix.into(),
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// This process's lead in an etcd election ([`EtcdStore::campaign`]).
#[derive(Debug)]
pub struct Leadership {
    key: LeaderKey,
}

/// One client per endpoint and the one in use: a request that cannot reach its endpoint moves
/// to the next. (etcd-client balances over several endpoints, but keeps sending to one that
/// refuses connections.)
struct Endpoints {
    names: Vec<String>,
    kv: Vec<KvClient>,
    watch: Vec<WatchClient>,
    lease: Vec<LeaseClient>,
    election: Vec<ElectionClient>,
    current: AtomicUsize,
}

impl Endpoints {
    fn current(&self) -> usize {
        self.current.load(Ordering::Acquire) % self.kv.len()
    }

    /// Moves off endpoint `i` (unless another request already did).
    fn failed(&self, i: usize, e: &etcd_client::Error) {
        let next = (i + 1) % self.kv.len();
        if self.current.compare_exchange(i, next, Ordering::AcqRel, Ordering::Acquire).is_ok() && self.kv.len() > 1 {
            tracing::warn!(endpoint = %self.names[i], next = %self.names[next], error = %e, "etcd endpoint unreachable");
        }
    }

    /// Runs `call` against the endpoint in use, moving to the next one while endpoints refuse
    /// the connection (the request never left, so even a transaction is safe to send again);
    /// `retry_unavailable` also retries other unavailability, for reads.
    async fn call<T, F, Fut>(&self, what: &str, retry_unavailable: bool, call: F) -> Result<T>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let rounds = 3 * self.kv.len();
        for attempt in 0.. {
            let i = self.current();
            match call(i).await {
                Ok(v) => return Ok(v),
                Err(e) if attempt + 1 < rounds && (unreachable(&e) || (retry_unavailable && unavailable(&e))) => {
                    self.failed(i, &e);
                    if (attempt + 1) % self.kv.len() == 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Err(e) => return Err(backend(what, e)),
            }
        }
        unreachable!()
    }
}

/// The request could not reach the server at all (connection refused or timed out).
fn unreachable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            s.code() as i32 == GRPC_UNAVAILABLE && {
                let m = s.message();
                m.contains("connect") || m.contains("dns error")
            }
        }
        _ => false,
    }
}

fn unavailable(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() as i32 == GRPC_UNAVAILABLE)
}

/// gRPC's UNAVAILABLE (tonic's `Code`, which etcd-client does not re-export).
const GRPC_UNAVAILABLE: i32 = 14;

pub struct EtcdStore {
    endpoints: Arc<Endpoints>,
    prefix: Arc<str>,
    config: EtcdConfig,
    revision: Arc<AtomicI64>,
    background: JoinHandle<()>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.background.abort();
    }
}

fn backend(what: &str, e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd {what}: {e}"))
}

/// The first key after every key that starts with `prefix` (etcd's range end); `\0` (every
/// key) for the empty prefix.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// Connects to the cluster and reads its current revision (which also proves it answers).
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let mut eps = Endpoints {
            names: config.endpoints.clone(),
            kv: Vec::new(),
            watch: Vec::new(),
            lease: Vec::new(),
            election: Vec::new(),
            current: AtomicUsize::new(0),
        };
        for ep in &config.endpoints {
            let client = Client::connect([ep], Some(options.clone())).await.map_err(|e| backend("connect", e))?;
            eps.kv.push(
                client
                    .kv_client()
                    .max_decoding_message_size(MAX_DECODE)
                    .max_encoding_message_size(config.max_request_bytes + (512 << 10)),
            );
            eps.watch.push(client.watch_client().max_decoding_message_size(MAX_DECODE));
            eps.lease.push(client.lease_client());
            eps.election.push(client.election_client());
        }
        let endpoints = Arc::new(eps);
        let prefix: Arc<str> = config.prefix.clone().into();
        let revision = Arc::new(AtomicI64::new(0));
        let rev = tokio::time::timeout(Duration::from_secs(10), current_revision(&endpoints, &prefix)).await.map_err(
            |_| StoreError::Backend(format!("etcd at {} did not answer within 10s", config.endpoints.join(","))),
        )??;
        revision.store(rev, Ordering::Release);
        // Follow the prefix so `revision()` moves with other servers' writes too.
        let background = tokio::spawn({
            let endpoints = endpoints.clone();
            let prefix = prefix.clone();
            let revision = revision.clone();
            async move {
                loop {
                    let (tx, mut rx) = mpsc::channel(WATCH_BUFFER);
                    let from = revision.load(Ordering::Acquire);
                    let follower = tokio::spawn(watch_loop(
                        endpoints.clone(),
                        prefix.clone(),
                        String::new(),
                        from,
                        tx,
                        revision.clone(),
                    ));
                    // Ends when the follower fell behind a compaction (a long partition): read
                    // the revision and follow again from there.
                    while let Some(Ok(_)) = rx.recv().await {}
                    follower.abort();
                    match current_revision(&endpoints, &prefix).await {
                        Ok(r) => observe(&revision, r),
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
            }
        });
        Ok(EtcdStore { endpoints, prefix, config, revision, background })
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    fn full(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    fn observe(&self, rev: Revision) {
        observe(&self.revision, rev);
    }

    /// Refuses a transaction with more compares or operations than etcd takes, before
    /// anything is sent.
    fn check_ops(&self, compares: usize, ops: usize) -> Result<()> {
        let limit = self.config.max_txn_ops;
        let most = compares.max(ops);
        if most > limit {
            return Err(StoreError::TooManyOps { ops: most, limit });
        }
        Ok(())
    }

    /// Grants a lease of `ttl` seconds (the base of node liveness: keys written under it go
    /// away when it is neither renewed nor revoked). Returns its id.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<i64> {
        let ttl = ttl.as_secs().max(1) as i64;
        let eps = &self.endpoints;
        let r = eps
            .call("lease grant", false, |i| {
                let mut lease = eps.lease[i].clone();
                async move { lease.grant(ttl, None).await }
            })
            .await?;
        if let Some(h) = r.header() {
            self.observe(h.revision());
        }
        Ok(r.id())
    }

    /// Renews a lease once; `Ok(false)` when it has already expired.
    pub async fn keep_lease_alive(&self, id: i64) -> Result<bool> {
        let eps = &self.endpoints;
        let r = eps
            .call("lease keep-alive", true, |i| {
                let mut lease = eps.lease[i].clone();
                async move {
                    let (mut keeper, mut stream) = lease.keep_alive(id).await?;
                    keeper.keep_alive().await?;
                    stream.message().await
                }
            })
            .await;
        match r {
            Ok(Some(r)) => Ok(r.ttl() > 0),
            Ok(None) => Err(StoreError::Backend("etcd lease keep-alive: stream closed".into())),
            // etcd-client reports an expired or revoked lease as an error.
            Err(StoreError::Backend(m)) if m.contains("lease not found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn revoke_lease(&self, id: i64) -> Result<()> {
        let eps = &self.endpoints;
        eps.call("lease revoke", true, |i| {
            let mut lease = eps.lease[i].clone();
            async move { lease.revoke(id).await }
        })
        .await?;
        Ok(())
    }

    /// Campaigns in etcd's election `name` (under the key prefix) with `value`, holding lease
    /// `lease`: resolves once this campaigner leads, which etcd decides (the oldest live key
    /// of the election leads; a leader whose lease expires or who resigns makes way for the
    /// next). An unreachable endpoint is an error: the caller campaigns again.
    pub async fn campaign(&self, name: &str, value: &str, lease: i64) -> Result<Leadership> {
        let (name, value) = (self.full(name), value.to_owned());
        let eps = &self.endpoints;
        let r = eps
            .call("campaign", false, |i| {
                let mut election = eps.election[i].clone();
                let (name, value) = (name.clone(), value.clone());
                async move { election.campaign(name, value, lease).await }
            })
            .await?;
        let key = r.leader().cloned().ok_or_else(|| StoreError::Backend("etcd campaign: no leader key".into()))?;
        Ok(Leadership { key })
    }

    /// Gives up leadership (the next campaigner leads at once, without waiting for the lease).
    pub async fn resign(&self, leadership: Leadership) -> Result<()> {
        let eps = &self.endpoints;
        eps.call("resign", true, |i| {
            let mut election = eps.election[i].clone();
            let key = leadership.key.clone();
            async move { election.resign(Some(ResignOptions::new().with_leader(key))).await }
        })
        .await?;
        Ok(())
    }

    /// The value the leader of election `name` campaigned with, if there is a leader.
    pub async fn leader(&self, name: &str) -> Result<Option<String>> {
        let name = self.full(name);
        let eps = &self.endpoints;
        match eps
            .call("leader", true, |i| {
                let mut election = eps.election[i].clone();
                let name = name.clone();
                async move { election.leader(name).await }
            })
            .await
        {
            Ok(r) => Ok(r.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
            Err(StoreError::Backend(m)) if m.contains("no leader") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `key` bound to lease `lease` (it disappears with the lease).
    pub async fn put_with_lease(&self, key: &str, value: impl Into<Vec<u8>>, lease: i64) -> Result<Revision> {
        let (key, value) = (self.full(key), value.into());
        let eps = &self.endpoints;
        let r = eps
            .call("put", false, |i| {
                let mut kv = eps.kv[i].clone();
                let (key, value) = (key.clone(), value.clone());
                async move { kv.put(key, value, Some(PutOptions::new().with_lease(lease))).await }
            })
            .await?;
        let rev = r.header().map_or(0, |h| h.revision());
        self.observe(rev);
        Ok(rev)
    }

    /// Compacts etcd's history up to `revision` (watches from before it get `Compacted`).
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        let eps = &self.endpoints;
        eps.call("compact", true, |i| {
            let mut kv = eps.kv[i].clone();
            async move { kv.compact(revision, None).await }
        })
        .await?;
        Ok(())
    }

    /// Writes every key of `kvs` (which must all be absent) in as few transactions as etcd's
    /// limits allow, each one refusing to overwrite a key that exists. Returns how many
    /// transactions it took. Used by the migration from SQLite.
    pub async fn import(&self, kvs: &[(String, Bytes)]) -> Result<usize> {
        let mut batches = 0;
        let mut txn = Txn::new();
        let mut bytes = 0;
        for (key, value) in kvs {
            let size = 2 * (self.prefix.len() + key.len() + OP_OVERHEAD) + value.len();
            if !txn.ops.is_empty()
                && (txn.ops.len() + 1 > self.config.max_txn_ops || bytes + size > self.config.max_request_bytes)
            {
                self.import_batch(std::mem::take(&mut txn)).await?;
                batches += 1;
                bytes = 0;
            }
            txn = txn.when(Compare::absent(key.clone())).then(Op::put(key.clone(), value.clone()));
            bytes += size;
        }
        if !txn.ops.is_empty() {
            self.import_batch(txn).await?;
            batches += 1;
        }
        Ok(batches)
    }

    async fn import_batch(&self, txn: Txn) -> Result<()> {
        let first = txn.ops[0].key().to_owned();
        if !self.txn_inner(txn).await?.succeeded {
            return Err(StoreError::Backend(format!("a key of the batch starting at {first} already exists in etcd")));
        }
        Ok(())
    }

    async fn txn_inner(&self, txn: Txn) -> Result<TxnResponse> {
        // Fold repeated writes of one key into the last one (etcd refuses a key written twice
        // in one transaction; the outcome is the same), keeping the order of last writes.
        let mut ops: Vec<&Op> = Vec::with_capacity(txn.ops.len());
        {
            let mut seen = std::collections::HashSet::new();
            for op in txn.ops.iter().rev() {
                if seen.insert(op.key()) {
                    ops.push(op);
                }
            }
            ops.reverse();
        }
        self.check_ops(txn.compares.len(), ops.len())?;
        let mut size = 0;
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision { key, revision } => {
                    size += self.prefix.len() + key.len() + OP_OVERHEAD;
                    EtcdCompare::mod_revision(self.full(key), CompareOp::Equal, *revision)
                }
            })
            .collect();
        let etcd_ops: Vec<TxnOp> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => {
                    size += self.prefix.len() + key.len() + value.len() + OP_OVERHEAD;
                    TxnOp::put(self.full(key), value.to_vec(), None)
                }
                Op::Delete { key } => {
                    size += self.prefix.len() + key.len() + OP_OVERHEAD;
                    TxnOp::delete(self.full(key), None)
                }
            })
            .collect();
        if size > self.config.max_request_bytes {
            return Err(StoreError::TooLarge { bytes: size, limit: self.config.max_request_bytes });
        }
        let request = EtcdTxn::new().when(compares).and_then(etcd_ops);
        let eps = &self.endpoints;
        let r = eps
            .call("txn", false, |i| {
                let mut kv = eps.kv[i].clone();
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await?;
        // A transaction that changed a key reports its revision; one that changed nothing (a
        // failed compare, no operations, deletes of missing keys) reports the latest change
        // under the prefix rather than etcd's header, which other users of the cluster move:
        // callers wait for their view to reach it, and the view sees only this prefix.
        let header = r.header().map_or(0, |h| h.revision());
        let changed = r.succeeded()
            && r.op_responses().iter().any(|o| match o {
                etcd_client::TxnOpResponse::Put(_) => true,
                etcd_client::TxnOpResponse::Delete(d) => d.deleted() > 0,
                _ => false,
            });
        let revision = if changed {
            self.observe(header);
            header
        } else {
            self.revision()
        };
        Ok(TxnResponse { succeeded: r.succeeded(), revision })
    }

    async fn range_inner(&self, prefix: &str) -> Result<RangeResponse> {
        let full = self.full(prefix);
        let end = prefix_end(&full);
        let mut start = full;
        let mut at: Revision = 0;
        let mut kvs = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(RANGE_PAGE);
            if at > 0 {
                options = options.with_revision(at);
            }
            let eps = &self.endpoints;
            let mut r = eps
                .call("range", true, |i| {
                    let mut kv = eps.kv[i].clone();
                    let (start, options) = (start.clone(), options.clone());
                    async move { kv.get(start, Some(options)).await }
                })
                .await?;
            if at == 0 {
                at = r.header().map_or(0, |h| h.revision());
            }
            let more = r.more();
            let page = r.take_kvs();
            if let Some(last) = page.last() {
                start = last.key().to_vec();
                start.push(0);
            }
            for kv in page {
                kvs.push(self.convert(&kv)?);
            }
            if !more {
                break;
            }
        }
        Ok(RangeResponse { kvs, revision: at })
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        convert(&self.prefix, kv)
    }
}

async fn current_revision(endpoints: &Endpoints, prefix: &str) -> Result<Revision> {
    let r = endpoints
        .call("get", true, |i| {
            let mut kv = endpoints.kv[i].clone();
            async move { kv.get(prefix.as_bytes(), Some(GetOptions::new().with_count_only())).await }
        })
        .await?;
    Ok(r.header().map_or(0, |h| h.revision()))
}

fn observe(revision: &AtomicI64, rev: Revision) {
    revision.fetch_max(rev, Ordering::AcqRel);
}

fn convert(prefix: &str, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = kv
        .key()
        .strip_prefix(prefix.as_bytes())
        .ok_or_else(|| StoreError::Backend("etcd returned a key outside the prefix".into()))?;
    let key = std::str::from_utf8(key)
        .map_err(|_| StoreError::Backend(format!("etcd key {:?} is not UTF-8", String::from_utf8_lossy(key))))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    })
}

/// Streams the changes under `store_prefix + prefix` after `after` into `tx`, one batch per
/// revision, reopening the etcd watch from the last delivered revision when its connection
/// breaks. Ends when the receiver goes away or etcd says the start has been compacted.
async fn watch_loop(
    endpoints: Arc<Endpoints>,
    store_prefix: Arc<str>,
    prefix: String,
    mut after: Revision,
    tx: mpsc::Sender<Result<WatchBatch>>,
    revision: Arc<AtomicI64>,
) {
    let mut key = store_prefix.as_bytes().to_vec();
    key.extend_from_slice(prefix.as_bytes());
    let end = prefix_end(&key);
    let mut pause = Duration::from_millis(100);
    loop {
        let options = WatchOptions::new().with_range(end.clone()).with_start_revision(after + 1).with_progress_notify();
        let i = endpoints.current();
        let mut client = endpoints.watch[i].clone();
        let opened = tokio::select! {
            _ = tx.closed() => return,
            r = client.watch(key.clone(), Some(options)) => r,
        };
        match opened {
            Ok(mut stream) => loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    m = stream.message() => m,
                };
                let resp = match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "etcd watch broke; reopening");
                        endpoints.failed(i, &e);
                        break;
                    }
                };
                pause = Duration::from_millis(100);
                if resp.compact_revision() != 0 {
                    let _ =
                        tx.send(Err(StoreError::Compacted { requested: after, oldest: resp.compact_revision() })).await;
                    return;
                }
                if resp.canceled() {
                    tracing::warn!(reason = resp.cancel_reason(), "etcd cancelled a watch; reopening");
                    break;
                }
                let mut batch: Option<WatchBatch> = None;
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let rev = kv.mod_revision();
                    if rev <= after {
                        continue;
                    }
                    observe(&revision, rev);
                    let kv = match convert(&store_prefix, kv) {
                        Ok(kv) => kv,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    let kind = match ev.event_type() {
                        EventType::Put => EventKind::Put,
                        EventType::Delete => EventKind::Delete,
                    };
                    let kind2 = kind.clone();
                    if batch.as_ref().is_some_and(|b| b.revision != rev) {
                        let b = batch.take().unwrap();
                        after = b.revision;
                        if tx.send(Ok(b)).await.is_err() {
                            return;
                        }
                    }
                    batch.get_or_insert_with(|| WatchBatch { revision: rev, events: Vec::new() }).events.push(Event {
                        kind: kind2,
                        kv: KeyValue { value: if kind == EventKind::Delete { Bytes::new() } else { kv.value }, ..kv },
                    });
                }
                if let Some(b) = batch {
                    after = b.revision;
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                } else if resp.events().is_empty() && !resp.created() {
                    // A progress notification (when the cluster sends them): every change here
                    // up to its revision was sent. (The response that confirms the watch says
                    // nothing of the kind: events from the past may still be to come. Nor are
                    // progress *requests* used: etcd before 3.4.25 answers them before a
                    // catching-up watcher has sent its events.)
                    let at = resp.header().map_or(0, |h| h.revision());
                    if at > after {
                        after = at;
                        if tx.send(Ok(WatchBatch { revision: at, events: Vec::new() })).await.is_err() {
                            return;
                        }
                    }
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "opening an etcd watch failed; retrying");
                endpoints.failed(i, &e);
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(async move {
            let full = self.full(key);
            let eps = &self.endpoints;
            let mut r = eps
                .call("get", true, |i| {
                    let mut kv = eps.kv[i].clone();
                    let full = full.clone();
                    async move { kv.get(full, None).await }
                })
                .await?;
            r.take_kvs().first().map(|kv| self.convert(kv)).transpose()
        })
    }

    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<RangeResponse>> {
        Box::pin(self.range_inner(prefix))
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>> {
        Box::pin(self.txn_inner(txn))
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::Backend("an etcd watch needs a tokio runtime".into()))?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        handle.spawn(watch_loop(
            self.endpoints.clone(),
            self.prefix.clone(),
            prefix.to_owned(),
            after,
            tx,
            self.revision.clone(),
        ));
        Ok(Watch::new(rx))
    }

    fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    fn limits(&self) -> TxnLimits {
        TxnLimits {
            max_ops: self.config.max_txn_ops,
            max_bytes: self.config.max_request_bytes,
            per_op_overhead: self.prefix.len() + OP_OVERHEAD,
        }
    }
}

#[cfg(test)]
mod unit {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can() {
        assert_eq!(prefix_end(b"/estiba/"), b"/estiba0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), vec![0]);
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
