//! Counters for CloudWatch (AWS/ApplicationELB and AWS/NetworkELB names): relaxed atomics on
//! the hot path, read as a [`MetricsSnapshot`]. Every counter is cumulative since the load
//! balancer (or target group) appeared on this node; the caller takes differences.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// Counters of one load balancer or one target group (same names, some stay 0 for either).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub request_count: AtomicU64,
    pub target_2xx: AtomicU64,
    pub target_3xx: AtomicU64,
    pub target_4xx: AtomicU64,
    pub target_5xx: AtomicU64,
    pub elb_4xx: AtomicU64,
    pub elb_3xx: AtomicU64,
    pub elb_5xx: AtomicU64,
    pub elb_502: AtomicU64,
    pub elb_503: AtomicU64,
    pub elb_504: AtomicU64,
    pub target_response_time_us: AtomicU64,
    pub target_responses: AtomicU64,
    pub active_connections: AtomicU64,
    pub new_connections: AtomicU64,
    pub processed_bytes: AtomicU64,
    pub target_connection_errors: AtomicU64,
    pub active_flows: AtomicU64,
    pub new_flows: AtomicU64,
}

/// One load balancer's or target group's counters at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Counts {
    pub request_count: u64,
    #[serde(rename = "HTTPCode_Target_2XX_Count")]
    pub target_2xx: u64,
    #[serde(rename = "HTTPCode_Target_3XX_Count")]
    pub target_3xx: u64,
    #[serde(rename = "HTTPCode_Target_4XX_Count")]
    pub target_4xx: u64,
    #[serde(rename = "HTTPCode_Target_5XX_Count")]
    pub target_5xx: u64,
    #[serde(rename = "HTTPCode_ELB_4XX_Count")]
    pub elb_4xx: u64,
    #[serde(rename = "HTTPCode_ELB_3XX_Count")]
    pub elb_3xx: u64,
    #[serde(rename = "HTTPCode_ELB_5XX_Count")]
    pub elb_5xx: u64,
    #[serde(rename = "HTTPCode_ELB_502_Count")]
    pub elb_502: u64,
    #[serde(rename = "HTTPCode_ELB_503_Count")]
    pub elb_503: u64,
    #[serde(rename = "HTTPCode_ELB_504_Count")]
    pub elb_504: u64,
    /// TargetResponseTime: the sum (microseconds) and the number of responses it adds up.
    pub target_response_time_us_sum: u64,
    pub target_response_time_count: u64,
    /// A gauge: client connections open now (NLB: TCP flows).
    pub active_connection_count: u64,
    pub new_connection_count: u64,
    pub processed_bytes: u64,
    pub target_connection_error_count: u64,
    /// NLB UDP: flows open now, flows made.
    pub active_flow_count_udp: u64,
    pub new_flow_count_udp: u64,
}

/// Every load balancer's (by its `LoadBalancer` dimension) and target group's (by its
/// `TargetGroup` dimension) counters. `RequestCountPerTarget` is a group's `request_count`
/// divided by its healthy targets, which the caller knows from [`crate::Lb::health`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub load_balancers: BTreeMap<String, Counts>,
    pub target_groups: BTreeMap<String, Counts>,
}

impl Counters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// A response a target gave.
    pub(crate) fn target_status(&self, status: u16) {
        let c = match status {
            200..=299 => &self.target_2xx,
            300..=399 => &self.target_3xx,
            400..=499 => &self.target_4xx,
            500..=599 => &self.target_5xx,
            _ => return,
        };
        Self::inc(c);
    }

    /// A response the load balancer made itself (fixed responses count as neither).
    pub(crate) fn elb_status(&self, status: u16) {
        match status {
            400..=499 => Self::inc(&self.elb_4xx),
            500..=599 => {
                Self::inc(&self.elb_5xx);
                match status {
                    502 => Self::inc(&self.elb_502),
                    503 => Self::inc(&self.elb_503),
                    504 => Self::inc(&self.elb_504),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    pub(crate) fn response_time(&self, us: u64) {
        self.target_response_time_us.fetch_add(us, Relaxed);
        Self::inc(&self.target_responses);
    }

    pub(crate) fn snapshot(&self) -> Counts {
        let g = |c: &AtomicU64| c.load(Relaxed);
        Counts {
            request_count: g(&self.request_count),
            target_2xx: g(&self.target_2xx),
            target_3xx: g(&self.target_3xx),
            target_4xx: g(&self.target_4xx),
            target_5xx: g(&self.target_5xx),
            elb_4xx: g(&self.elb_4xx),
            elb_3xx: g(&self.elb_3xx),
            elb_5xx: g(&self.elb_5xx),
            elb_502: g(&self.elb_502),
            elb_503: g(&self.elb_503),
            elb_504: g(&self.elb_504),
            target_response_time_us_sum: g(&self.target_response_time_us),
            target_response_time_count: g(&self.target_responses),
            active_connection_count: g(&self.active_connections),
            new_connection_count: g(&self.new_connections),
            processed_bytes: g(&self.processed_bytes),
            target_connection_error_count: g(&self.target_connection_errors),
            active_flow_count_udp: g(&self.active_flows),
            new_flow_count_udp: g(&self.new_flows),
        }
    }
}

/// Counts one open connection (or flow) while it lives.
pub(crate) struct Active<'a>(&'a AtomicU64);

impl<'a> Active<'a> {
    pub(crate) fn new(active: &'a AtomicU64, new: &AtomicU64) -> Active<'a> {
        active.fetch_add(1, Relaxed);
        new.fetch_add(1, Relaxed);
        Active(active)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
