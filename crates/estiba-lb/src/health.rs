//! Active health checks: the per-target state machine (pure, AWS's states and reason codes)
//! and the probes (HTTP/HTTPS GET expecting the matcher, TCP connect).

use std::net::SocketAddrV4;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// AWS's `TargetHealth.State`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthState {
    Initial,
    Healthy,
    Unhealthy,
    Unused,
    Draining,
    Unavailable,
}

impl HealthState {
    /// AWS's wire name (`initial`, `healthy`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Initial => "initial",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Unused => "unused",
            HealthState::Draining => "draining",
            HealthState::Unavailable => "unavailable",
        }
    }
}

/// One target's health as `DescribeTargetHealth` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealthReport {
    pub group_arn: String,
    pub target: SocketAddrV4,
    pub state: HealthState,
    /// AWS's reason code (`Elb.RegistrationInProgress`, `Target.Timeout`, ...); none when healthy.
    pub reason: Option<String>,
    pub description: Option<String>,
}

/// What one probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Ok,
    /// An HTTP answer whose code the matcher refused.
    CodeMismatch(u16),
    Timeout,
    /// Refused, reset, or anything else.
    Failed,
}

/// The probed part of a target's health (draining, disabled checks and unused groups are
/// decided outside, from the table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub state: HealthState,
    pub last: Option<Probe>,
    successes: u32,
    failures: u32,
}

impl Default for Machine {
    fn default() -> Self {
        Machine { state: HealthState::Initial, last: None, successes: 0, failures: 0 }
    }
}

impl Machine {
    /// Feeds one probe; true when the state or its reason changed.
    pub fn observe(&mut self, p: Probe, healthy_threshold: u32, unhealthy_threshold: u32) -> bool {
        let before = (self.state, self.reason());
        if p == Probe::Ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            // A new target needs one passing check (AWS: "After your target is registered, it
            // must pass one health check to be considered healthy"); an unhealthy one needs
            // the healthy threshold in a row.
            let needed = if self.state == HealthState::Initial { 1 } else { healthy_threshold.max(1) };
            if self.state != HealthState::Healthy && self.successes >= needed {
                self.state = HealthState::Healthy;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.state != HealthState::Unhealthy && self.failures >= unhealthy_threshold.max(1) {
                self.state = HealthState::Unhealthy;
            }
        }
        self.last = Some(p);
        before != (self.state, self.reason())
    }

    pub fn reason(&self) -> Option<&'static str> {
        match self.state {
            HealthState::Initial => Some("Elb.RegistrationInProgress"),
            HealthState::Unhealthy => Some(match self.last {
                Some(Probe::CodeMismatch(_)) => "Target.ResponseCodeMismatch",
                Some(Probe::Timeout) => "Target.Timeout",
                _ => "Target.FailedHealthChecks",
            }),
            _ => None,
        }
    }

    pub fn description(&self) -> Option<String> {
        match self.state {
            HealthState::Initial => Some("Target registration is in progress".into()),
            HealthState::Unhealthy => Some(match self.last {
                Some(Probe::CodeMismatch(c)) => format!("Health checks failed with these codes: [{c}]"),
                Some(Probe::Timeout) => "Request timed out".into(),
                _ => "Health checks failed".into(),
            }),
            _ => None,
        }
    }
}

/// The state, reason and description reported for a target, the table's facts first.
pub(crate) fn report(
    m: &Machine,
    draining: bool,
    enabled: bool,
    used: bool,
) -> (HealthState, Option<&'static str>, Option<String>) {
    if draining {
        (
            HealthState::Draining,
            Some("Target.DeregistrationInProgress"),
            Some("Target deregistration is in progress".into()),
        )
    } else if !used {
        (
            HealthState::Unused,
            Some("Target.NotInUse"),
            Some("Target group is not configured to receive traffic from the load balancer".into()),
        )
    } else if !enabled {
        (HealthState::Unavailable, Some("Target.HealthCheckDisabled"), Some("Health checks are disabled".into()))
    } else {
        (m.state, m.reason(), m.description())
    }
}

/// AWS's matcher syntax: `200`, `200,202`, `200-299`. Invalid parts are ignored; nothing valid
/// means 200.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CodeMatcher(Vec<(u16, u16)>);

impl CodeMatcher {
    pub(crate) fn parse(s: &str) -> CodeMatcher {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim) {
            let r = match part.split_once('-') {
                Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                None => part.parse().ok().map(|c| (c, c)),
            };
            v.extend(r);
        }
        if v.is_empty() {
            v.push((200, 200));
        }
        CodeMatcher(v)
    }

    pub(crate) fn matches(&self, code: u16) -> bool {
        self.0.iter().any(|&(a, b)| a <= code && code <= b)
    }
}

/// What a probe needs, from the group's health check.
#[derive(Clone, Debug)]
pub(crate) struct ProbeSpec {
    pub kind: crate::table::HealthProtocol,
    /// `None`: the traffic port.
    pub port: Option<u16>,
    pub path: hyper::Uri,
    pub timeout: Duration,
    pub codes: CodeMatcher,
}

/// One probe of `addr`.
pub(crate) async fn probe(spec: &ProbeSpec, addr: SocketAddrV4) -> Probe {
    match tokio::time::timeout(spec.timeout, probe_inner(spec, addr)).await {
        Ok(p) => p,
        Err(_) => Probe::Timeout,
    }
}

async fn probe_inner(spec: &ProbeSpec, addr: SocketAddrV4) -> Probe {
    use crate::table::HealthProtocol;
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else { return Probe::Failed };
    let _ = tcp.set_nodelay(true);
    match spec.kind {
        HealthProtocol::Tcp => Probe::Ok,
        HealthProtocol::Http => http_probe(spec, addr, hyper_util::rt::TokioIo::new(tcp)).await,
        HealthProtocol::Https => {
            let connector = tokio_rustls::TlsConnector::from(crate::tls::insecure_client());
            let name = rustls::pki_types::ServerName::IpAddress((*addr.ip()).into());
            match connector.connect(name, tcp).await {
                Ok(tls) => http_probe(spec, addr, hyper_util::rt::TokioIo::new(tls)).await,
                Err(_) => Probe::Failed,
            }
        }
    }
}

async fn http_probe<T>(spec: &ProbeSpec, addr: SocketAddrV4, io: T) -> Probe
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Ok((mut send, conn)) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(io).await
    else {
        return Probe::Failed;
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(spec.path.clone())
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "ELB-HealthChecker/2.0")
        .header(hyper::header::CONNECTION, "close")
        .body(http_body_util::Empty::new());
    let Ok(req) = req else { return Probe::Failed };
    match send.send_request(req).await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            if spec.codes.matches(code) {
                Probe::Ok
            } else {
                Probe::CodeMismatch(code)
            }
        }
        Err(_) => Probe::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(m: &mut Machine, probes: &[Probe]) -> Vec<bool> {
        probes.iter().map(|&p| m.observe(p, 3, 2)).collect()
    }

    #[test]
    fn a_new_target_is_healthy_after_one_check_an_unhealthy_one_after_the_threshold() {
        let mut m = Machine::default();
        assert_eq!((m.state, m.reason()), (HealthState::Initial, Some("Elb.RegistrationInProgress")));
        assert_eq!(run(&mut m, &[Probe::Ok]), [true]);
        assert_eq!((m.state, m.reason()), (HealthState::Healthy, None));
        run(&mut m, &[Probe::Failed, Probe::Failed]);
        assert_eq!(m.state, HealthState::Unhealthy);
        assert_eq!(run(&mut m, &[Probe::Ok, Probe::Ok]), [false, false]);
        assert_eq!(m.state, HealthState::Unhealthy);
        assert_eq!(run(&mut m, &[Probe::Ok]), [true]);
        assert_eq!((m.state, m.reason()), (HealthState::Healthy, None));
    }

    #[test]
    fn initial_failures_become_unhealthy_with_the_reason() {
        for (p, reason) in [
            (Probe::CodeMismatch(404), "Target.ResponseCodeMismatch"),
            (Probe::Timeout, "Target.Timeout"),
            (Probe::Failed, "Target.FailedHealthChecks"),
        ] {
            let mut m = Machine::default();
            assert_eq!(run(&mut m, &[p, p]), [false, true]);
            assert_eq!((m.state, m.reason()), (HealthState::Unhealthy, Some(reason)));
        }
        let mut m = Machine::default();
        run(&mut m, &[Probe::CodeMismatch(500), Probe::CodeMismatch(500)]);
        assert_eq!(m.description().unwrap(), "Health checks failed with these codes: [500]");
    }

    #[test]
    fn healthy_needs_failures_in_a_row() {
        let mut m = Machine::default();
        run(&mut m, &[Probe::Ok; 3]);
        // A success between failures resets the count.
        assert_eq!(run(&mut m, &[Probe::Failed, Probe::Ok, Probe::Failed]), [false, false, false]);
        assert_eq!(m.state, HealthState::Healthy);
        assert_eq!(run(&mut m, &[Probe::Timeout]), [true]);
        assert_eq!((m.state, m.reason()), (HealthState::Unhealthy, Some("Target.Timeout")));
        // Another failure kind changes the reason: a transition.
        assert_eq!(run(&mut m, &[Probe::Failed]), [true]);
        assert_eq!(m.reason(), Some("Target.FailedHealthChecks"));
        assert_eq!(run(&mut m, &[Probe::Failed]), [false]);
    }

    #[test]
    fn unhealthy_needs_successes_in_a_row() {
        let mut m = Machine::default();
        run(&mut m, &[Probe::Failed; 2]);
        assert_eq!(run(&mut m, &[Probe::Ok, Probe::Ok, Probe::Failed, Probe::Ok, Probe::Ok]), [false; 5]);
        assert_eq!(m.state, HealthState::Unhealthy);
        assert_eq!(run(&mut m, &[Probe::Ok]), [true]);
        assert_eq!(m.state, HealthState::Healthy);
    }

    #[test]
    fn table_facts_win() {
        let m = Machine::default();
        assert_eq!(report(&m, true, true, true).1, Some("Target.DeregistrationInProgress"));
        assert_eq!(report(&m, true, true, true).0, HealthState::Draining);
        assert_eq!(report(&m, false, false, true).0, HealthState::Unavailable);
        assert_eq!(report(&m, false, false, true).1, Some("Target.HealthCheckDisabled"));
        assert_eq!(report(&m, false, true, false).0, HealthState::Unused);
        assert_eq!(report(&m, false, true, true).0, HealthState::Initial);
    }

    #[test]
    fn matcher_syntax() {
        let m = CodeMatcher::parse("200,202, 300-399");
        assert!(m.matches(200) && m.matches(202) && m.matches(301));
        assert!(!m.matches(201) && !m.matches(404));
        assert!(CodeMatcher::parse("nonsense").matches(200));
        assert!(!CodeMatcher::parse("nonsense").matches(204));
    }
}
