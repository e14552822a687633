//! The controller runtime: every controller runs in its own tokio task with the same shape.
//!
//! A pass is level-triggered: it reads the whole current state from the view, never an event.
//! Between passes the task sleeps until what the last pass asked for ([`Wake`]): the next
//! change of the view (a burst of changes is one wake-up: the view's revision is a watch
//! channel, which keeps only the newest value), an instant, or both; shutdown ends the wait.
//! A failed pass is logged and counted, never fatal; so is a panicking one. Each controller's
//! passes, errors and pass times are kept in [`Metrics`] ([`crate::Server::controller_stats`],
//! `GET /_estiba/controllers`).

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Server;

/// When a controller's next pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// On the next change of the view.
    Change,
    /// On the next change of the view, or at this instant if none comes first.
    ChangeOrAt(Instant),
    /// At this instant; changes meanwhile wait for it (periodic work).
    At(Instant),
    /// Never: the controller's work is done and its task ends.
    Done,
}

impl Wake {
    /// On the next change, or after `d` at the latest.
    pub fn change_or_after(d: Duration) -> Wake {
        Wake::ChangeOrAt(Instant::now() + d)
    }

    /// After `d`, whatever changes meanwhile.
    pub fn after(d: Duration) -> Wake {
        Wake::At(Instant::now() + d)
    }
}

/// A control loop. The runtime calls [`Controller::pass`] when [`Controller::first`], and
/// then each pass's [`Wake`], say so.
pub trait Controller: Send + Sync + 'static {
    /// Logged and counted when a pass fails; the next pass is at [`Controller::after_error`].
    type Error: std::fmt::Display + Send;

    /// Unique among the controllers: the key of its metrics and its logs.
    fn name(&self) -> &'static str;

    /// When the first pass runs: at once unless overridden.
    fn first(&self) -> Wake {
        Wake::At(Instant::now())
    }

    /// When the pass after a failed one runs: on the next change, or a second later.
    fn after_error(&self) -> Wake {
        Wake::change_or_after(Duration::from_secs(1))
    }

    /// One level-triggered pass over the current state; returns when to run again.
    fn pass(&self, server: &Server) -> impl Future<Output = Result<Wake, Self::Error>> + Send;
}

/// One controller's counters (pass times in seconds on the wire).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStats {
    pub name: &'static str,
    /// Passes run, failed ones included.
    pub passes: u64,
    /// Passes that failed (returned an error or panicked).
    pub errors: u64,
    #[serde(rename = "lastPassSeconds", serialize_with = "seconds")]
    pub last_pass: Duration,
    #[serde(rename = "maxPassSeconds", serialize_with = "seconds")]
    pub max_pass: Duration,
    #[serde(rename = "totalPassSeconds", serialize_with = "seconds")]
    pub total_pass: Duration,
    pub last_error: Option<String>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Every controller's counters, by name.
#[derive(Debug, Default)]
pub struct Metrics {
    by_name: Mutex<BTreeMap<&'static str, ControllerStats>>,
}

impl Metrics {
    fn register(&self, name: &'static str) {
        self.by_name.lock().unwrap().entry(name).or_insert_with(|| ControllerStats { name, ..Default::default() });
    }

    fn record(&self, name: &'static str, took: Duration, error: Option<String>) -> ControllerStats {
        let mut all = self.by_name.lock().unwrap();
        let s = all.entry(name).or_insert_with(|| ControllerStats { name, ..Default::default() });
        s.passes += 1;
        s.last_pass = took;
        s.max_pass = s.max_pass.max(took);
        s.total_pass += took;
        if error.is_some() {
            s.errors += 1;
            s.last_error = error;
        }
        s.clone()
    }

    /// The counters of every controller, sorted by name.
    pub fn snapshot(&self) -> Vec<ControllerStats> {
        self.by_name.lock().unwrap().values().cloned().collect()
    }
}

/// Runs controllers, each in its own task, until shutdown.
pub struct Runtime {
    server: Arc<Server>,
    shutdown: watch::Receiver<bool>,
    tasks: JoinSet<()>,
}

impl Runtime {
    /// Controllers stop when `shutdown` turns true (or its sender is dropped).
    pub fn new(server: Arc<Server>, shutdown: watch::Receiver<bool>) -> Self {
        Runtime { server, shutdown, tasks: JoinSet::new() }
    }

    /// Starts `c` in a task of its own.
    pub fn add<C: Controller>(&mut self, c: C) {
        self.server.controllers.register(c.name());
        self.tasks.spawn(run(self.server.clone(), c, self.shutdown.clone()));
    }

    /// Waits until every controller has stopped.
    pub async fn wait(mut self) {
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "a controller task ended abnormally");
            }
        }
    }
}

/// How long a controller rests after a pass, in units of the time the pass ran (its polls, not
/// its waits), before a change may wake it again: a busy controller takes at most a quarter of
/// a core, and one whose pass runs 100 µs answers a change 300 µs later at worst.
const REST_PER_PASS: u32 = 3;

/// One controller's loop.
async fn run<C: Controller>(server: Arc<Server>, c: C, mut shutdown: watch::Receiver<bool>) {
    let name = c.name();
    let mut changes = server.view.changes();
    let mut nudges = server.nudge.subscribe();
    let mut wake = c.first();
    // No pass that a change wakes starts before this: a pass that reads much of the view
    // (one that grows with the state) would otherwise run back to back under a stream of
    // writes and take a core from the API.
    let mut rested = Instant::now();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if matches!(wake, Wake::Change | Wake::ChangeOrAt(_)) && rested > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(rested) => {}
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
        }
        let deadline = match wake {
            Wake::Change => None,
            Wake::ChangeOrAt(at) | Wake::At(at) => Some(at),
            Wake::Done => return,
        };
        let on_change = matches!(wake, Wake::Change | Wake::ChangeOrAt(_));
        tokio::select! {
            r = changes.changed(), if on_change => if r.is_err() { return },
            _ = nudges.changed(), if on_change => {}
            _ = sleep_until(deadline) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
        if *shutdown.borrow() {
            return;
        }
        // Changes that come while the pass runs wake the next one (a write of the pass's
        // own included: the next pass then finds nothing to do).
        let started = std::time::Instant::now();
        // The time the pass spent running, not waiting (on a commit, say), sets the rest.
        let mut busy = Duration::ZERO;
        let mut pass = std::pin::pin!(AssertUnwindSafe(c.pass(&server)).catch_unwind());
        let result = std::future::poll_fn(|cx| {
            let polled = std::time::Instant::now();
            let r = pass.as_mut().poll(cx);
            busy += polled.elapsed();
            r
        })
        .await;
        let took = started.elapsed();
        rested = Instant::now() + busy * REST_PER_PASS;
        let error = match result {
            Ok(Ok(next)) => {
                wake = next;
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(controller = name, error = %e, "controller pass failed");
                wake = c.after_error();
                Some(e.to_string())
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(controller = name, panic = %what, "controller pass panicked");
                wake = c.after_error();
                Some(format!("panicked: {what}"))
            }
        };
        let s = server.controllers.record(name, took, error);
        tracing::debug!(
            controller = name,
            took_us = took.as_micros() as u64,
            passes = s.passes,
            errors = s.errors,
            max_us = s.max_pass.as_micros() as u64,
            total_ms = s.total_pass.as_millis() as u64,
            "controller pass"
        );
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use estiba_store::{MemStore, Op, Txn};

    use super::*;

    async fn server() -> Arc<Server> {
        Server::new(crate::Config::default(), Arc::new(MemStore::new())).await.unwrap()
    }

    async fn write(s: &Server, n: usize) {
        for i in 0..n {
            assert!(s.commit(Txn::new().then(Op::put(format!("ecs/test/{i}"), "x"))).await.unwrap());
        }
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    /// Waits (5 s at most, the machine may be busy) until `passes` is `n`, then a little
    /// longer to see that it stays there.
    async fn reaches(passes: &AtomicU64, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while passes.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        settle().await;
        assert_eq!(passes.load(Ordering::SeqCst), n);
    }

    async fn stop(tx: watch::Sender<bool>, rt: Runtime) {
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), rt.wait()).await.expect("controllers stop at shutdown");
    }

    /// Counts its passes; what each pass does and asks for is given.
    struct Probe<F> {
        name: &'static str,
        passes: Arc<AtomicU64>,
        f: F,
    }

    impl<F> Controller for Probe<F>
    where
        F: Fn(u64) -> Result<Wake, String> + Send + Sync + 'static,
    {
        type Error = String;

        fn name(&self) -> &'static str {
            self.name
        }

        fn after_error(&self) -> Wake {
            Wake::after(Duration::from_millis(5))
        }

        async fn pass(&self, _server: &Server) -> Result<Wake, String> {
            let n = self.passes.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 {
                // Long enough for a burst of changes to land while it runs.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            (self.f)(n)
        }
    }

    fn probe<F>(name: &'static str, f: F) -> (Probe<F>, Arc<AtomicU64>)
    where
        F: Fn(u64) -> Result<Wake, String> + Send + Sync + 'static,
    {
        let passes = Arc::new(AtomicU64::new(0));
        (Probe { name, passes: passes.clone(), f }, passes)
    }

    #[tokio::test]
    async fn a_burst_of_changes_is_one_pass() {
        let s = server().await;
        let (tx, rx) = watch::channel(false);
        let mut rt = Runtime::new(s.clone(), rx);
        let (c, passes) = probe("watcher", |_| Ok(Wake::Change));
        rt.add(c);
        tokio::time::sleep(Duration::from_millis(10)).await;
        write(&s, 20).await; // while the first pass runs
        reaches(&passes, 2).await; // the first pass, then one for the burst
        write(&s, 1).await;
        reaches(&passes, 3).await;
        stop(tx, rt).await;
    }

    #[tokio::test]
    async fn timers_and_periodic_work() {
        let s = server().await;
        let (tx, rx) = watch::channel(false);
        let mut rt = Runtime::new(s.clone(), rx);
        // Periodic: changes do not wake it.
        let (periodic, periodic_passes) = probe("periodic", |_| Ok(Wake::after(Duration::from_secs(3600))));
        // A deadline: it runs without any change.
        let (ticker, ticker_passes) = probe("ticker", |_| Ok(Wake::change_or_after(Duration::from_millis(20))));
        // Done after its second pass.
        let (once, once_passes) = probe("once", |n| Ok(if n == 2 { Wake::Done } else { Wake::Change }));
        rt.add(periodic);
        rt.add(ticker);
        rt.add(once);
        reaches(&periodic_passes, 1).await;
        write(&s, 3).await;
        reaches(&once_passes, 2).await;
        write(&s, 3).await;
        reaches(&once_passes, 2).await;
        assert_eq!(periodic_passes.load(Ordering::SeqCst), 1);
        assert!(ticker_passes.load(Ordering::SeqCst) >= 5, "{ticker_passes:?}");
        stop(tx, rt).await;
    }

    #[tokio::test]
    async fn failures_are_counted_and_not_fatal() {
        let s = server().await;
        let (tx, rx) = watch::channel(false);
        let mut rt = Runtime::new(s.clone(), rx);
        let (c, passes) = probe("flaky", |n| match n {
            1 => Err("the store is away".into()),
            2 => panic!("a bug"),
            _ => Ok(Wake::Change),
        });
        rt.add(c);
        reaches(&passes, 3).await;
        let stats = s.controller_stats();
        assert_eq!(stats.len(), 1);
        let st = &stats[0];
        assert_eq!((st.name, st.passes, st.errors), ("flaky", 3, 2));
        assert_eq!(st.last_error.as_deref(), Some("panicked: a bug"));
        assert!(st.max_pass >= Duration::from_millis(300) && st.total_pass >= st.max_pass, "{st:?}");
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json[0]["name"], "flaky");
        assert!(json[0]["maxPassSeconds"].as_f64().unwrap() >= 0.3, "{json}");
        stop(tx, rt).await;
    }
}
