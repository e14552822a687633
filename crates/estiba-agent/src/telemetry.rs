//! The agent's telemetry channel: log lines, cgroup samples and health results go to the
//! control plane beside the store, never through it ([`estiba_core::telemetry`]).
//!
//! A [`TelemetrySender`] is a bounded queue that never makes its sender wait: when the
//! control plane's side falls behind, batches are dropped and counted (telemetry is worth
//! less than a task that keeps running). Each control plane drains the queue its own way:
//! in-process, [`deliver`] hands the batches to a [`TelemetrySink`]; over the network, a
//! remote agent would send them in requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use estiba_core::telemetry::{Telemetry, TelemetrySink};
use tokio::sync::mpsc;

/// How many batches may wait for delivery.
pub const CAPACITY: usize = 1024;

/// The sending end of the telemetry queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct TelemetrySender {
    tx: mpsc::Sender<Telemetry>,
    dropped: Arc<AtomicU64>,
}

impl TelemetrySender {
    /// A queue of `capacity` batches: the sender, and the end the control plane drains.
    pub fn channel(capacity: usize) -> (TelemetrySender, mpsc::Receiver<Telemetry>) {
        let (tx, rx) = mpsc::channel(capacity);
        (TelemetrySender { tx, dropped: Arc::new(AtomicU64::new(0)) }, rx)
    }

    /// Queues a batch without waiting. A full (or closed) queue drops it and counts the
    /// drop; returns whether it was queued.
    pub fn send(&self, batch: Telemetry) -> bool {
        if batch.is_empty() {
            return true;
        }
        let kind = batch.kind();
        match self.tx.try_send(batch) {
            Ok(()) => true,
            Err(_) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(kind, dropped = n, "telemetry queue full: batches dropped");
                }
                false
            }
        }
    }

    /// How many batches were dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Hands every batch to `sink`, in order, until every sender is gone.
pub async fn deliver(mut rx: mpsc::Receiver<Telemetry>, sink: Arc<dyn TelemetrySink>) {
    while let Some(batch) = rx.recv().await {
        sink.deliver(batch);
    }
}

/// How many items of each kind a [`CountingSink`] received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub logs: u64,
    pub metrics: u64,
    pub health: u64,
}

/// A sink that only counts what it receives (with a debug line per batch): the server's
/// sink until the log and metric stores take telemetry.
#[derive(Debug, Default)]
pub struct CountingSink {
    logs: AtomicU64,
    metrics: AtomicU64,
    health: AtomicU64,
}

impl CountingSink {
    pub fn counts(&self) -> Counts {
        Counts {
            logs: self.logs.load(Ordering::Relaxed),
            metrics: self.metrics.load(Ordering::Relaxed),
            health: self.health.load(Ordering::Relaxed),
        }
    }
}

impl TelemetrySink for CountingSink {
    fn deliver(&self, batch: Telemetry) {
        let counter = match &batch {
            Telemetry::Logs(_) => &self.logs,
            Telemetry::Metrics(_) | Telemetry::LbMetrics(_) => &self.metrics,
            Telemetry::Health(_) | Telemetry::TargetHealth(_) => &self.health,
        };
        let total = counter.fetch_add(batch.len() as u64, Ordering::Relaxed) + batch.len() as u64;
        tracing::debug!(kind = batch.kind(), items = batch.len(), total, "telemetry received");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_core::telemetry::{LogLine, LogStream};

    fn logs(n: usize) -> Telemetry {
        Telemetry::Logs(
            (0..n)
                .map(|i| LogLine {
                    task_arn: "arn:t".into(),
                    container: "web".into(),
                    timestamp: i as i64,
                    stream: LogStream::Stdout,
                    line: format!("line {i}"),
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, rx) = TelemetrySender::channel(2);
        assert!(tx.send(logs(1)));
        assert!(tx.send(logs(2)));
        assert!(!tx.send(logs(3)));
        assert!(tx.send(logs(0)), "an empty batch is not queued, nor dropped");
        assert_eq!(tx.dropped(), 1);
        let sink = Arc::new(CountingSink::default());
        let drain = tokio::spawn(deliver(rx, sink.clone()));
        drop(tx);
        drain.await.unwrap();
        assert_eq!(sink.counts(), Counts { logs: 3, metrics: 0, health: 0 });
    }
}
