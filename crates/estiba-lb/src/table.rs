//! The table the node applies: load balancers, their listeners and rules, and target groups.
//! The caller (the ELBv2 glue) builds it from the store; this crate never reads the store.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the node's load balancers do, applied as a whole by [`crate::Lb::apply`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub load_balancers: Vec<LoadBalancer>,
    pub target_groups: Vec<TargetGroup>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    Application,
    Network,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub arn: String,
    pub kind: Kind,
    /// CloudWatch's `LoadBalancer` dimension: `app/<name>/<id>` or `net/<name>/<id>`.
    pub dimension: String,
    /// `idle_timeout.timeout_seconds` (ALB, default 60 s): keep-alive idle time of client
    /// connections, and how long a target may take to answer before a 504.
    pub idle_timeout: Duration,
    /// `routing.http2.enabled` (default true).
    pub http2: bool,
    pub listeners: Vec<Listener>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ListenerProtocol {
    Http,
    Https,
    Tcp,
    Tls,
    Udp,
    TcpUdp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub arn: String,
    pub protocol: ListenerProtocol,
    /// Every address:port it answers on (already on an interface).
    pub binds: Vec<SocketAddr>,
    /// Https and Tls listeners' certificate.
    pub certificate: Option<Certificate>,
    /// Sorted: by priority ascending, the default rule (priority `None`) last. NLB listeners
    /// have only a default rule forwarding to one group.
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Certificate {
    Pem {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
    /// A certificate generated (rcgen) when the listener starts, for `localhost`.
    SelfSigned,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub arn: String,
    pub priority: Option<u32>,
    /// Every condition must match; a condition matches when any of its values does.
    pub conditions: Vec<Condition>,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Wildcards `*` and `?`, case-sensitive, on the path only.
    PathPattern(Vec<String>),
    /// Case-insensitive, wildcards; the port of the Host header is ignored.
    HostHeader(Vec<String>),
    /// Header name case-insensitive; values with wildcards, case-insensitive.
    HttpHeader { name: String, values: Vec<String> },
    /// Exact, case-sensitive.
    HttpRequestMethod(Vec<String>),
    /// (key, value) pairs, key optional, wildcards, case-insensitive; any pair matches.
    QueryString(Vec<(Option<String>, String)>),
    /// CIDRs the client's address (not X-Forwarded-For) is in.
    SourceIp(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// `stickiness`: group-level stickiness (the `AWSALBTG` cookie) when several groups.
    Forward {
        groups: Vec<WeightedGroup>,
        stickiness: Option<Duration>,
    },
    FixedResponse {
        status: u16,
        content_type: Option<String>,
        body: Option<String>,
    },
    /// Each part may use AWS's `#{protocol}`, `#{host}`, `#{port}`, `#{path}` and `#{query}`.
    Redirect {
        protocol: String,
        host: String,
        port: String,
        path: String,
        query: String,
        status: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedGroup {
    pub arn: String,
    pub weight: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TargetProtocol {
    Http,
    Https,
    Tcp,
    Tls,
    Udp,
    TcpUdp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    RoundRobin,
    LeastOutstandingRequests,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub arn: String,
    /// CloudWatch's `TargetGroup` dimension: `targetgroup/<name>/<id>`.
    pub dimension: String,
    pub protocol: TargetProtocol,
    pub health: HealthCheck,
    pub algorithm: Algorithm,
    /// ALB: the `AWSALB` (lb_cookie) duration when stickiness is on. NLB: ignored (flows
    /// always keep their target).
    pub stickiness: Option<Duration>,
    /// Slow start: a target that becomes healthy gets its share linearly over this (0: off).
    pub slow_start: Duration,
    pub targets: Vec<Target>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    pub addr: SocketAddrV4,
    /// Deregistering: no new requests or flows; those in flight finish.
    pub draining: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthProtocol {
    Http,
    Https,
    Tcp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub enabled: bool,
    pub protocol: HealthProtocol,
    /// `None`: the traffic port.
    pub port: Option<u16>,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// HTTP codes in AWS's syntax: `200`, `200,202`, `200-299`.
    pub matcher: String,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            protocol: HealthProtocol::Http,
            port: None,
            path: "/".into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: "200".into(),
        }
    }
}
