//! Target groups on the node: their targets' health and outstanding requests (kept across
//! tables), and the choice of a target for a request or a flow.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::header::HeaderValue;

use crate::health::{HealthState, Machine, ProbeSpec, TargetHealthReport};
use crate::metrics::Counters;
use crate::table::{Algorithm, TargetGroup};

pub(crate) const TARGET_COOKIE: &str = "AWSALB";
pub(crate) const GROUP_COOKIE: &str = "AWSALBTG";

/// A registered target's state that outlives tables.
#[derive(Debug)]
pub(crate) struct TargetState {
    pub addr: SocketAddrV4,
    pub machine: Mutex<Machine>,
    /// `machine.state == Healthy`, read on the hot path.
    healthy: AtomicBool,
    /// When it last became healthy (ms since the Lb's epoch): slow start counts from there.
    healthy_since_ms: AtomicU64,
    pub outstanding: AtomicU32,
    /// The (state, reason) last published, so that only transitions are.
    last_published: Mutex<Option<(HealthState, Option<&'static str>)>>,
    /// Idle keep-alive connections to it (ALB).
    pub pool: crate::pool::Pool,
}

impl TargetState {
    /// No probe has been seen yet.
    pub(crate) fn never_probed(&self) -> bool {
        self.machine.lock().unwrap_or_else(|p| p.into_inner()).last.is_none()
    }

    fn new(addr: SocketAddrV4) -> TargetState {
        TargetState {
            addr,
            machine: Mutex::new(Machine::default()),
            healthy: AtomicBool::new(false),
            healthy_since_ms: AtomicU64::new(0),
            outstanding: AtomicU32::new(0),
            last_published: Mutex::new(None),
            pool: Default::default(),
        }
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Records a probe; true when the probed state changed.
    pub(crate) fn observe(&self, p: crate::health::Probe, healthy: u32, unhealthy: u32, now_ms: u64) -> bool {
        let mut m = self.machine.lock().unwrap_or_else(|e| e.into_inner());
        let changed = m.observe(p, healthy, unhealthy);
        let is = m.state == HealthState::Healthy;
        if is && !self.healthy.load(Relaxed) {
            self.healthy_since_ms.store(now_ms, Relaxed);
        }
        self.healthy.store(is, Relaxed);
        changed
    }
}

/// One target as the current table has it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub t: Arc<TargetState>,
    pub draining: bool,
    /// The `AWSALB` value naming this target, and the Set-Cookie header carrying it.
    pub cookie: Box<[u8]>,
    pub set_cookie: Option<HeaderValue>,
}

/// A group as the current table has it; swapped whole.
#[derive(Debug)]
pub(crate) struct View {
    pub entries: Vec<Entry>,
    pub algorithm: Algorithm,
    pub slow_start_ms: u64,
    pub health_enabled: bool,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub interval: Duration,
    pub probe: ProbeSpec,
    pub stickiness: bool,
    /// Whether a listener of the table forwards to it (else its targets are `unused`).
    pub used: bool,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub arn: String,
    pub dimension: String,
    pub counters: Counters,
    rr: AtomicUsize,
    pub view: ArcSwap<View>,
    /// The `AWSALBTG` value naming this group.
    pub group_cookie: Box<[u8]>,
    /// Signalled when the table brings targets that were never probed: the health loop
    /// probes them at once instead of at its next round.
    pub new_targets: tokio::sync::Notify,
}

/// A keyed hash (per `Lb`), so cookies cannot be forged to pick an arbitrary address.
pub(crate) fn mac(key: &std::collections::hash_map::RandomState, parts: &[&[u8]]) -> u64 {
    let mut h = key.build_hasher();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

impl Group {
    /// `used`: as in [`View::used`]; right from the start, since the checker may publish the
    /// first view before the table's next update.
    pub(crate) fn new(tg: &TargetGroup, key: &std::collections::hash_map::RandomState, used: bool) -> Group {
        let group_cookie = format!("{:016x}", mac(key, &[b"tg", tg.arn.as_bytes()])).into_bytes().into();
        let first = View::build(tg, &[], key, used);
        Group {
            arn: tg.arn.clone(),
            dimension: tg.dimension.clone(),
            counters: Counters::default(),
            rr: AtomicUsize::new(0),
            view: ArcSwap::from_pointee(first),
            group_cookie,
            new_targets: tokio::sync::Notify::new(),
        }
    }

    /// Replaces the view with `tg`'s, keeping the state of targets that stay.
    pub(crate) fn update(&self, tg: &TargetGroup, key: &std::collections::hash_map::RandomState, used: bool) {
        let old = self.view.load();
        let states: Vec<Arc<TargetState>> = old.entries.iter().map(|e| e.t.clone()).collect();
        let new = View::build(tg, &states, key, used);
        let unprobed = new.entries.iter().any(|e| !e.draining && e.t.never_probed());
        self.view.store(Arc::new(new));
        if unprobed {
            self.new_targets.notify_one();
        }
    }

    /// Reports of every target, and publishes those that changed since last published.
    pub(crate) fn reports(
        &self,
        publish: Option<&tokio::sync::broadcast::Sender<TargetHealthReport>>,
    ) -> Vec<TargetHealthReport> {
        let v = self.view.load();
        v.entries
            .iter()
            .map(|e| {
                let m = e.t.machine.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let (state, reason, description) = crate::health::report(&m, e.draining, v.health_enabled, v.used);
                let r = TargetHealthReport {
                    group_arn: self.arn.clone(),
                    target: e.t.addr,
                    state,
                    reason: reason.map(str::to_string),
                    description,
                };
                if let Some(tx) = publish {
                    let mut last = e.t.last_published.lock().unwrap_or_else(|p| p.into_inner());
                    if *last != Some((state, reason)) {
                        *last = Some((state, reason));
                        let _ = tx.send(r.clone());
                    }
                }
                r
            })
            .collect()
    }

    /// The target for a request or flow: among healthy, non-draining targets (all
    /// non-draining ones when none is healthy: fail-open; all when checks are disabled).
    /// `sticky`: an `AWSALB` value from the client; `flow`: a flow hash (NLB) instead of the
    /// group's algorithm. `None`: no target can take it (none registered, or all draining).
    pub(crate) fn pick(&self, v: &View, sticky: Option<&[u8]>, flow: Option<u64>, now_ms: u64) -> Option<usize> {
        let healthy = |e: &Entry| !e.draining && (!v.health_enabled || e.t.healthy());
        let n_healthy = v.entries.iter().filter(|e| healthy(e)).count();
        let ok = |e: &Entry| if n_healthy > 0 { healthy(e) } else { !e.draining };
        let n = if n_healthy > 0 { n_healthy } else { v.entries.iter().filter(|e| !e.draining).count() };
        if n == 0 {
            return None;
        }
        if let Some(c) = sticky {
            if let Some(i) = v.entries.iter().position(|e| &*e.cookie == c && ok(e)) {
                return Some(i);
            }
        }
        let nth = |k: usize| v.entries.iter().enumerate().filter(|(_, e)| ok(e)).nth(k % n).map(|(i, _)| i);
        if let Some(h) = flow {
            return nth(h as usize);
        }
        let start = self.rr.fetch_add(1, Relaxed);
        let factor = |e: &Entry| -> f64 {
            if v.slow_start_ms == 0 || !e.t.healthy() {
                return 1.0;
            }
            let since = e.t.healthy_since_ms.load(Relaxed);
            (now_ms.saturating_sub(since) as f64 / v.slow_start_ms as f64).min(1.0)
        };
        match v.algorithm {
            Algorithm::RoundRobin => {
                // A target in slow start takes its turn with the probability of its weight.
                for k in 0..n {
                    let i = nth(start + k)?;
                    let f = factor(&v.entries[i]);
                    if f >= 1.0 || crate::rand_unit() < f {
                        return Some(i);
                    }
                }
                nth(start)
            }
            Algorithm::LeastOutstandingRequests => {
                let mut best: Option<(f64, usize)> = None;
                for k in 0..n {
                    let i = nth(start + k)?;
                    let e = &v.entries[i];
                    let load = (e.t.outstanding.load(Relaxed) as f64 + 1.0) / factor(e).max(0.01);
                    if best.is_none_or(|(b, _)| load < b) {
                        best = Some((load, i));
                    }
                }
                best.map(|(_, i)| i)
            }
        }
    }
}

impl View {
    fn build(
        tg: &TargetGroup,
        states: &[Arc<TargetState>],
        key: &std::collections::hash_map::RandomState,
        used: bool,
    ) -> View {
        let hc = &tg.health;
        let entries = tg
            .targets
            .iter()
            .map(|t| {
                let state = states
                    .iter()
                    .find(|s| s.addr == t.addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(TargetState::new(t.addr)));
                let ip = u32::from(*t.addr.ip());
                let m = mac(key, &[tg.arn.as_bytes(), &ip.to_be_bytes(), &t.addr.port().to_be_bytes()]);
                let cookie = format!("{m:016x}{ip:08x}{:04x}", t.addr.port());
                let set_cookie = tg.stickiness.and_then(|d| {
                    HeaderValue::from_str(&format!("{TARGET_COOKIE}={cookie}; Max-Age={}; Path=/", d.as_secs())).ok()
                });
                Entry { t: state, draining: t.draining, cookie: cookie.into_bytes().into(), set_cookie }
            })
            .collect();
        let path = hc.path.parse().unwrap_or_else(|_| hyper::Uri::from_static("/"));
        View {
            entries,
            algorithm: tg.algorithm,
            slow_start_ms: tg.slow_start.as_millis() as u64,
            health_enabled: hc.enabled,
            healthy_threshold: hc.healthy_threshold,
            unhealthy_threshold: hc.unhealthy_threshold,
            interval: hc.interval.max(Duration::from_millis(100)),
            probe: ProbeSpec {
                kind: hc.protocol,
                port: hc.port,
                path,
                timeout: hc.timeout,
                codes: crate::health::CodeMatcher::parse(&hc.matcher),
            },
            stickiness: tg.stickiness.is_some(),
            used,
        }
    }
}

/// Probes a group's targets every interval for as long as the task lives (aborted when the
/// group leaves the table), publishing transitions. Targets the table adds are probed as soon
/// as they come (AWS checks a target when it is registered), the others each interval.
pub(crate) async fn check(group: Arc<Group>, lb: Arc<crate::Inner>) {
    loop {
        let v = group.view.load_full();
        probe_round(&group, &lb, &v, false).await;
        let round = tokio::time::sleep(v.interval);
        tokio::pin!(round);
        loop {
            tokio::select! {
                _ = &mut round => break,
                // New targets: their first probe now, the round keeps its time.
                _ = group.new_targets.notified() => probe_round(&group, &lb, &group.view.load_full(), true).await,
            }
        }
    }
}

/// Probes the group's targets (`only_new`: those never probed), then publishes transitions.
async fn probe_round(group: &Group, lb: &crate::Inner, v: &Arc<View>, only_new: bool) {
    if v.health_enabled && v.used {
        let mut probes = tokio::task::JoinSet::new();
        for (i, e) in v.entries.iter().enumerate() {
            if e.draining || (only_new && !e.t.never_probed()) {
                continue;
            }
            let addr = SocketAddrV4::new(*e.t.addr.ip(), v.probe.port.unwrap_or(e.t.addr.port()));
            let v = v.clone();
            probes.spawn(async move { (i, crate::health::probe(&v.probe, addr).await) });
        }
        while let Some(Ok((i, p))) = probes.join_next().await {
            let e = &v.entries[i];
            if e.t.observe(p, v.healthy_threshold, v.unhealthy_threshold, lb.now_ms()) {
                tracing::debug!(group = %group.arn, target = %e.t.addr, probe = ?p, "target health changed");
            }
        }
    }
    group.reports(Some(&lb.health_tx));
}
