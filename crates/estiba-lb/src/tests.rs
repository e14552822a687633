//! End to end on 127.0.0.1: tiny hyper and tokio backends, the load balancer on its own
//! runtime, hyper clients.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::*;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!(),
    }
}

/// An HTTP/1.1 server on 127.0.0.1 answering each request with `f`.
async fn serve_fn<F>(f: F) -> SocketAddrV4
where
    F: Fn(Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = v4(l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let f = f.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let f = f.clone();
                    async move { Ok::<_, std::convert::Infallible>(f(req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(c), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A backend answering `name`, echoing the request's headers as `echo-<name>` headers, and
/// 500 on `/unhealthy`.
async fn named(name: &'static str) -> SocketAddrV4 {
    serve_fn(move |req| {
        let mut r = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
        for (k, v) in req.headers() {
            if let Ok(n) = hyper::header::HeaderName::from_bytes(format!("echo-{k}").as_bytes()) {
                r.headers_mut().append(n, v.clone());
            }
        }
        if req.uri().path() == "/unhealthy" {
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        r
    })
    .await
}

fn no_checks() -> HealthCheck {
    HealthCheck { enabled: false, ..HealthCheck::default() }
}

fn fast_checks(path: &str) -> HealthCheck {
    HealthCheck {
        enabled: true,
        path: path.into(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        ..HealthCheck::default()
    }
}

fn group(arn: &str, targets: &[SocketAddrV4], health: HealthCheck) -> TargetGroup {
    TargetGroup {
        arn: arn.into(),
        dimension: format!("targetgroup/{arn}/0"),
        protocol: TargetProtocol::Http,
        health,
        algorithm: Algorithm::RoundRobin,
        stickiness: None,
        slow_start: Duration::ZERO,
        targets: targets.iter().map(|&addr| Target { addr, draining: false }).collect(),
    }
}

fn forward(arn: &str) -> Action {
    Action::Forward { groups: vec![WeightedGroup { arn: arn.into(), weight: 1 }], stickiness: None }
}

fn default_rule(action: Action) -> Rule {
    Rule { arn: "default".into(), priority: None, conditions: vec![], action }
}

fn alb(bind: SocketAddr, rules: Vec<Rule>, groups: Vec<TargetGroup>) -> Table {
    Table {
        load_balancers: vec![LoadBalancer {
            arn: "lb".into(),
            kind: Kind::Application,
            dimension: "app/lb/1".into(),
            idle_timeout: Duration::from_secs(60),
            http2: true,
            listeners: vec![Listener {
                arn: "l".into(),
                protocol: ListenerProtocol::Http,
                binds: vec![bind],
                certificate: None,
                rules,
            }],
        }],
        target_groups: groups,
    }
}

fn lb() -> Lb {
    Lb::new(Settings { connect_timeout: Duration::from_secs(1), ..Settings::default() })
}

type TestClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn client() -> TestClient {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

async fn get_with(c: &TestClient, req: Request<Empty<Bytes>>) -> (StatusCode, hyper::HeaderMap, String) {
    let r = c.request(req).await.unwrap();
    let (p, b) = r.into_parts();
    let body = b.collect().await.unwrap().to_bytes();
    (p.status, p.headers, String::from_utf8_lossy(&body).into_owned())
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, hyper::HeaderMap, String) {
    get_with(&client(), Request::get(format!("http://{addr}{path}")).body(Empty::new()).unwrap()).await
}

fn counts(bodies: &[String]) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for b in bodies {
        *m.entry(b.as_str()).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn forwards_with_forwarded_headers_and_without_hop_by_hop_ones() {
    let a = named("a").await;
    let bind = free_addr();
    let lb = lb();
    lb.apply(Arc::new(alb(bind, vec![default_rule(forward("g"))], vec![group("g", &[a], no_checks())])));
    let req = Request::get(format!("http://{bind}/x?y=1"))
        .header("x-forwarded-for", "10.9.9.9")
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .body(Empty::new())
        .unwrap();
    let (status, h, body) = get_with(&client(), req).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
    assert_eq!(h["echo-x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    assert_eq!(h["echo-x-forwarded-proto"], "http");
    assert_eq!(h["echo-x-forwarded-port"], bind.port().to_string().as_str());
    assert!(h["echo-x-amzn-trace-id"].to_str().unwrap().starts_with("Root=1-"));
    assert_eq!(h["echo-host"], bind.to_string().as_str());
    assert!(!h.contains_key("echo-x-secret"));
    // An incoming trace id is kept.
    let req =
        Request::get(format!("http://{bind}/")).header("x-amzn-trace-id", "Root=1-abc").body(Empty::new()).unwrap();
    assert_eq!(get_with(&client(), req).await.1["echo-x-amzn-trace-id"], "Root=1-abc");
    let m = lb.metrics();
    assert_eq!(m.load_balancers["app/lb/1"].request_count, 2);
    assert_eq!(m.load_balancers["app/lb/1"].target_2xx, 2);
    assert_eq!(m.load_balancers["app/lb/1"].new_connection_count, 2);
    assert!(m.load_balancers["app/lb/1"].processed_bytes > 100);
    assert_eq!(m.target_groups["targetgroup/g/0"].request_count, 2);
    assert_eq!(m.target_groups["targetgroup/g/0"].target_response_time_count, 2);
}

#[tokio::test]
async fn rules_by_priority_then_the_default() {
    let (a, b) = (named("a").await, named("b").await);
    let bind = free_addr();
    let rules = vec![
        Rule {
            arn: "r1".into(),
            priority: Some(1),
            conditions: vec![
                Condition::PathPattern(vec!["/api/*".into()]),
                Condition::HttpRequestMethod(vec!["GET".into()]),
            ],
            action: forward("ga"),
        },
        Rule {
            arn: "r2".into(),
            priority: Some(2),
            conditions: vec![Condition::PathPattern(vec!["/api/*".into(), "/fixed".into()])],
            action: Action::FixedResponse {
                status: 418,
                content_type: Some("text/plain".into()),
                body: Some("teapot".into()),
            },
        },
        Rule {
            arn: "r3".into(),
            priority: Some(3),
            conditions: vec![Condition::PathPattern(vec!["/old/*".into()])],
            action: Action::Redirect {
                protocol: "#{protocol}".into(),
                host: "new.example.com".into(),
                port: "#{port}".into(),
                path: "/new/#{path}".into(),
                query: "#{query}&r=1".into(),
                status: 301,
            },
        },
        default_rule(forward("gb")),
    ];
    let lb = lb();
    lb.apply(Arc::new(alb(bind, rules, vec![group("ga", &[a], no_checks()), group("gb", &[b], no_checks())])));
    assert_eq!(get(bind, "/api/x").await.2, "a");
    let c = client();
    let post = Request::post(format!("http://{bind}/api/x")).body(Empty::new()).unwrap();
    let (s, h, body) = get_with(&c, post).await;
    assert_eq!((s.as_u16(), body.as_str(), h["content-type"].to_str().unwrap()), (418, "teapot", "text/plain"));
    assert_eq!(get(bind, "/fixed").await.0.as_u16(), 418);
    let (s, h, _) = get(bind, "/old/page?q=2").await;
    assert_eq!(s.as_u16(), 301);
    assert_eq!(h["location"], format!("http://new.example.com:{}/new/old/page?q=2&r=1", bind.port()).as_str());
    assert_eq!(get(bind, "/other").await.2, "b");
    assert_eq!(lb.metrics().load_balancers["app/lb/1"].elb_3xx, 1);
}

#[tokio::test]
async fn elb_errors_503_502_504() {
    let refused = free_addr(); // nothing listens there any more
    let slow = serve_fn(|_| {
        std::thread::sleep(Duration::from_millis(700));
        Response::new(Full::new(Bytes::from_static(b"late")))
    })
    .await;
    let (b503, b502, b504) = (free_addr(), free_addr(), free_addr());
    let mut t = alb(b503, vec![default_rule(forward("empty"))], vec![group("empty", &[], no_checks())]);
    let mut l502 = t.load_balancers[0].listeners[0].clone();
    l502.binds = vec![b502];
    l502.rules = vec![default_rule(forward("refused"))];
    let mut lb504 = t.load_balancers[0].clone();
    lb504.arn = "slow-lb".into();
    lb504.dimension = "app/slow/1".into();
    lb504.idle_timeout = Duration::from_millis(200);
    lb504.listeners[0].binds = vec![b504];
    lb504.listeners[0].rules = vec![default_rule(forward("slow"))];
    t.load_balancers[0].listeners.push(l502);
    t.load_balancers.push(lb504);
    t.target_groups.push(group("refused", &[v4(refused)], no_checks()));
    t.target_groups.push(group("slow", &[slow], no_checks()));
    let lb = lb();
    lb.apply(Arc::new(t));
    let (s, h, body) = get(b503, "/").await;
    assert_eq!(s.as_u16(), 503);
    assert!(body.contains("503 Service Temporarily Unavailable"));
    assert_eq!(h["server"], "awselb/2.0");
    assert_eq!(get(b502, "/").await.0.as_u16(), 502);
    assert_eq!(get(b504, "/").await.0.as_u16(), 504);
    let m = lb.metrics();
    let main = &m.load_balancers["app/lb/1"];
    assert_eq!((main.elb_503, main.elb_502, main.elb_5xx), (1, 1, 2));
    assert_eq!(m.load_balancers["app/slow/1"].elb_504, 1);
    assert_eq!(m.target_groups["targetgroup/refused/0"].target_connection_error_count, 1);
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn state_of(lb: &Lb, t: SocketAddrV4) -> (HealthState, Option<String>) {
    let r = lb.health().into_iter().find(|r| r.target == t).unwrap();
    (r.state, r.reason)
}

#[tokio::test]
async fn health_checks_route_around_unhealthy_targets_and_publish_transitions() {
    let (a, b) = (named("a").await, named("b").await);
    let bind = free_addr();
    let lb = lb();
    let mut rx = lb.subscribe_health();
    let mut g = group("g", &[a, b], fast_checks("/health"));
    let t = |g: TargetGroup| Arc::new(alb(bind, vec![default_rule(forward("g"))], vec![g]));
    lb.apply(t(g.clone()));
    assert_eq!(state_of(&lb, a), (HealthState::Initial, Some("Elb.RegistrationInProgress".into())));
    wait_for("healthy", || state_of(&lb, a).0 == HealthState::Healthy && state_of(&lb, b).0 == HealthState::Healthy)
        .await;
    // Both targets answer 500 on /unhealthy: both become unhealthy.
    g.health.path = "/unhealthy".into();
    lb.apply(t(g.clone()));
    // Both: until b is unhealthy too, a healthy b would take every request.
    wait_for("unhealthy", || {
        state_of(&lb, a).0 == HealthState::Unhealthy && state_of(&lb, b).0 == HealthState::Unhealthy
    })
    .await;
    assert_eq!(state_of(&lb, a).1.as_deref(), Some("Target.ResponseCodeMismatch"));
    // Every target unhealthy: fail open, both get requests.
    let mut bodies = Vec::new();
    for _ in 0..10 {
        bodies.push(get(bind, "/").await.2);
    }
    let c = counts(&bodies);
    assert_eq!((c["a"], c["b"]), (5, 5));
    // The transitions seen: initial, healthy, unhealthy per target, no more (not per probe).
    let mut seen = Vec::new();
    while let Ok(r) = rx.try_recv() {
        seen.push((r.target, r.state));
    }
    let for_a: Vec<HealthState> = seen.iter().filter(|s| s.0 == a).map(|s| s.1).collect();
    assert_eq!(for_a, [HealthState::Initial, HealthState::Healthy, HealthState::Unhealthy]);
}

#[tokio::test]
async fn a_registered_target_is_probed_at_once_and_healthy_after_one_check() {
    let (a, b) = (named("a").await, named("b").await);
    let bind = free_addr();
    let lb = lb();
    // A long interval: only the probe of a new target can make it healthy within the test.
    let slow = HealthCheck { interval: Duration::from_secs(300), healthy_threshold: 5, ..fast_checks("/health") };
    let t = |targets: &[SocketAddrV4]| {
        Arc::new(alb(bind, vec![default_rule(forward("g"))], vec![group("g", targets, slow.clone())]))
    };
    lb.apply(t(&[a]));
    wait_for("a healthy", || state_of(&lb, a).0 == HealthState::Healthy).await;
    lb.apply(t(&[a, b]));
    wait_for("b healthy", || state_of(&lb, b).0 == HealthState::Healthy).await;
}

#[tokio::test]
async fn unhealthy_targets_get_nothing_while_one_is_healthy() {
    let a = named("a").await;
    let dead = v4(free_addr());
    let bind = free_addr();
    let lb = lb();
    lb.apply(Arc::new(alb(bind, vec![default_rule(forward("g"))], vec![group("g", &[a, dead], fast_checks("/"))])));
    wait_for("a healthy, dead unhealthy", || {
        state_of(&lb, a).0 == HealthState::Healthy && state_of(&lb, dead).0 == HealthState::Unhealthy
    })
    .await;
    assert_eq!(state_of(&lb, dead).1.as_deref(), Some("Target.FailedHealthChecks"));
    for _ in 0..6 {
        let (s, _, body) = get(bind, "/").await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "a"));
    }
}

#[tokio::test]
async fn draining_targets_get_no_new_requests() {
    let (a, b) = (named("a").await, named("b").await);
    let bind = free_addr();
    let lb = lb();
    let mut g = group("g", &[a, b], no_checks());
    g.targets[0].draining = true;
    lb.apply(Arc::new(alb(bind, vec![default_rule(forward("g"))], vec![g.clone()])));
    for _ in 0..6 {
        assert_eq!(get(bind, "/").await.2, "b");
    }
    assert_eq!(state_of(&lb, a), (HealthState::Draining, Some("Target.DeregistrationInProgress".into())));
    assert_eq!(state_of(&lb, b), (HealthState::Unavailable, Some("Target.HealthCheckDisabled".into())));
    // Every target draining: 503.
    g.targets[1].draining = true;
    lb.apply(Arc::new(alb(bind, vec![default_rule(forward("g"))], vec![g])));
    assert_eq!(get(bind, "/").await.0.as_u16(), 503);
}

#[tokio::test]
async fn weighted_groups_share_requests_by_weight() {
    let (a, b) = (named("a").await, named("b").await);
    let bind = free_addr();
    let lb = lb();
    let action = Action::Forward {
        groups: vec![WeightedGroup { arn: "ga".into(), weight: 1 }, WeightedGroup { arn: "gb".into(), weight: 3 }],
        stickiness: None,
    };
    lb.apply(Arc::new(alb(
        bind,
        vec![default_rule(action)],
        vec![group("ga", &[a], no_checks()), group("gb", &[b], no_checks())],
    )));
    let c = client();
    let mut bodies = Vec::new();
    for _ in 0..400 {
        bodies.push(get_with(&c, Request::get(format!("http://{bind}/")).body(Empty::new()).unwrap()).await.2);
    }
    let n = counts(&bodies);
    assert!((60..=140).contains(&n["a"]), "{n:?}");
    assert!((260..=340).contains(&n["b"]), "{n:?}");
}

#[tokio::test]
async fn sticky_cookie_keeps_a_client_on_its_target() {
    let (a, b) = (named("a").await, named("b").await);
    let bind = free_addr();
    let lb = lb();
    let mut g = group("g", &[a, b], no_checks());
    g.stickiness = Some(Duration::from_secs(86400));
    lb.apply(Arc::new(alb(bind, vec![default_rule(forward("g"))], vec![g])));
    let (_, h, first) = get(bind, "/").await;
    let set = h["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("AWSALB=") && set.contains("Max-Age=86400"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let c = client();
    for _ in 0..6 {
        let req = Request::get(format!("http://{bind}/"))
            .header("cookie", format!("x=1; {cookie}"))
            .body(Empty::new())
            .unwrap();
        assert_eq!(get_with(&c, req).await.2, first);
    }
    // A forged cookie is ignored: round robin again.
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let req = Request::get(format!("http://{bind}/"))
            .header("cookie", "AWSALB=0000000000000000")
            .body(Empty::new())
            .unwrap();
        bodies.push(get_with(&c, req).await.2);
    }
    assert_eq!(counts(&bodies).len(), 2);
}

/// A load balancer and the table of one ALB (HTTP, HTTP/2 on) forwarding to `named("a")`,
/// not applied yet.
async fn alb_to_a() -> (SocketAddr, Lb, Table) {
    let a = named("a").await;
    let bind = free_addr();
    (bind, lb(), alb(bind, vec![default_rule(forward("g"))], vec![group("g", &[a], no_checks())]))
}

#[tokio::test]
async fn http_listeners_speak_http1_only() {
    // As on AWS: no h2c on an HTTP listener, even with HTTP/2 on.
    let (bind, lb, t) = alb_to_a().await;
    lb.apply(Arc::new(t));
    let tcp = TcpStream::connect(bind).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{bind}/h2")).body(Empty::<Bytes>::new()).unwrap();
    assert!(send.send_request(req).await.is_err());
    assert_eq!(get(bind, "/").await.2, "a");
}

/// A TLS connection to an HTTPS listener offering `alpn`.
async fn tls_connect(bind: SocketAddr, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(bind).await.unwrap();
    let mut cfg = (*crate::tls::insecure_client()).clone();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn https_with_a_self_signed_certificate_http2_and_http1_by_alpn() {
    let (bind, lb, mut t) = alb_to_a().await;
    t.load_balancers[0].listeners[0].protocol = ListenerProtocol::Https;
    t.load_balancers[0].listeners[0].certificate = Some(Certificate::SelfSigned);
    lb.apply(Arc::new(t.clone()));

    // HTTP/2, chosen by ALPN.
    let tls = tls_connect(bind, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let r = send
        .send_request(Request::get(format!("https://{bind}/h2")).body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.headers()["echo-x-forwarded-proto"], "https");
    // The target got HTTP/1.1 with a Host from the authority.
    assert_eq!(r.headers()["echo-host"], bind.to_string().as_str());
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "a");

    // HTTP/1.1, chosen by ALPN.
    let tls = tls_connect(bind, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let r =
        send.send_request(Request::get("/").header("host", "x").body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    assert_eq!(r.headers()["echo-x-forwarded-proto"], "https");
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "a");

    // HTTP/2 off: only http/1.1 is offered.
    t.load_balancers[0].http2 = false;
    lb.apply(Arc::new(t));
    let tls = tls_connect(bind, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    // A target that switches protocols and then echoes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = v4(l.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut c, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        let req = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(req.contains("upgrade: websocket") && req.contains("connection: upgrade"), "{req}");
        c.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        loop {
            let n = c.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            c.write_all(&buf[..n]).await.unwrap();
        }
    });
    let bind = free_addr();
    let lb = lb();
    lb.apply(Arc::new(alb(bind, vec![default_rule(forward("g"))], vec![group("g", &[target], no_checks())])));
    let mut c = TcpStream::connect(bind).await.unwrap();
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0);
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    c.write_all(b"ping").await.unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"ping");
}

#[tokio::test]
async fn apply_keeps_sockets_and_connections_and_closes_removed_listeners() {
    let (a, b) = (named("a").await, named("b").await);
    let bind = free_addr();
    let lb = lb();
    let t = |g: &str| {
        Arc::new(alb(
            bind,
            vec![default_rule(forward(g))],
            vec![group("ga", &[a], no_checks()), group("gb", &[b], no_checks())],
        ))
    };
    lb.apply(t("ga"));
    // One keep-alive connection across the update.
    let tcp = TcpStream::connect(bind).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let ask = |send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>| {
        let f = send.send_request(Request::get("/").header("host", "x").body(Empty::new()).unwrap());
        async move { f.await.unwrap().into_body().collect().await.unwrap().to_bytes() }
    };
    assert_eq!(ask(&mut send).await, "a");
    lb.apply(t("gb"));
    assert_eq!(lb.listening(), vec![bind]);
    assert_eq!(ask(&mut send).await, "b");
    assert_eq!(lb.metrics().load_balancers["app/lb/1"].new_connection_count, 1);
    // The listener goes: no new connections, and the idle one is closed.
    lb.apply(Arc::new(Table::default()));
    assert!(lb.listening().is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(bind).await.is_err());
    send.ready().await.expect_err("the idle connection is closed");
    assert!(lb.health().is_empty());
}

#[tokio::test]
async fn a_bind_that_fails_is_retried_on_the_next_apply() {
    let a = named("a").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap();
    let lb = lb();
    let t = Arc::new(alb(bind, vec![default_rule(forward("g"))], vec![group("g", &[a], no_checks())]));
    lb.apply(t.clone());
    assert!(lb.listening().is_empty());
    drop(taken);
    lb.apply(t);
    assert_eq!(lb.listening(), vec![bind]);
    assert_eq!(get(bind, "/").await.2, "a");
}

fn nlb(bind: SocketAddr, protocol: ListenerProtocol, targets: &[SocketAddrV4]) -> Table {
    let mut t = alb(bind, vec![default_rule(forward("g"))], vec![group("g", targets, no_checks())]);
    t.load_balancers[0].kind = Kind::Network;
    t.load_balancers[0].dimension = "net/lb/1".into();
    t.load_balancers[0].listeners[0].protocol = protocol;
    t.target_groups[0].protocol = TargetProtocol::Tcp;
    t
}

/// A TCP server that writes `name` and what it reads back to each connection.
async fn tcp_named(name: &'static str) -> SocketAddrV4 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = v4(l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let n = c.read(&mut buf).await.unwrap_or(0);
                let _ = c.write_all(name.as_bytes()).await;
                let _ = c.write_all(&buf[..n]).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn nlb_tcp_forwards_connections_over_targets() {
    let (a, b) = (tcp_named("a").await, tcp_named("b").await);
    let bind = free_addr();
    let lb = lb();
    lb.apply(Arc::new(nlb(bind, ListenerProtocol::Tcp, &[a, b])));
    let mut got = Vec::new();
    for _ in 0..24 {
        let mut c = TcpStream::connect(bind).await.unwrap();
        c.write_all(b"!").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        got.push(out);
    }
    let n = counts(&got);
    assert_eq!(n.keys().len(), 2, "{n:?}");
    assert_eq!(n["a!"] + n["b!"], 24);
    assert_eq!(lb.metrics().load_balancers["net/lb/1"].new_connection_count, 24);
    // Counted when each copy ends, which may be just after the client saw the end.
    wait_for("bytes counted", || lb.metrics().target_groups["targetgroup/g/0"].processed_bytes == 24 * 3).await;
}

#[test]
fn flow_hash_affinity() {
    let lb = lb();
    let key = &lb.inner.key;
    let tg = group("g", &[v4(free_addr()), v4(free_addr()), v4(free_addr())], no_checks());
    let g = group::Group::new(&tg, key, true);
    g.update(&tg, key, true);
    let v = g.view.load();
    let pick = |peer: &str| {
        let h = nlb::flow_hash(&lb.inner, peer.parse().unwrap(), 80);
        g.pick(&v, None, Some(h), 1).unwrap()
    };
    for port in 1000..1100 {
        let p = format!("127.0.0.1:{port}");
        assert_eq!(pick(&p), pick(&p));
    }
    let spread: std::collections::HashSet<usize> =
        (1000..1100).map(|port| pick(&format!("127.0.0.1:{port}"))).collect();
    assert_eq!(spread.len(), 3);
}

#[test]
fn slow_start_ramps_a_new_target() {
    let lb = lb();
    let key = &lb.inner.key;
    let mut tg = group("g", &[v4(free_addr()), v4(free_addr())], fast_checks("/"));
    tg.slow_start = Duration::from_secs(100);
    let g = group::Group::new(&tg, key, true);
    g.update(&tg, key, true);
    let v = g.view.load();
    // Target 0 healthy long ago (t=1 ms), target 1 healthy at t=90 s: at t=100 s target 1
    // is 10 s into its slow start (weight 0.1).
    v.entries[0].t.observe(Probe::Ok, 1, 1, 1);
    v.entries[1].t.observe(Probe::Ok, 1, 1, 90_000);
    let mut n = [0usize; 2];
    for _ in 0..4000 {
        n[g.pick(&v, None, None, 100_000).unwrap()] += 1;
    }
    // Round robin offers each half the turns; target 1 takes about 10% of its own.
    assert!(n[1] > 80 && n[1] < 400, "{n:?}");
    let mut n = [0usize; 2];
    for _ in 0..4000 {
        n[g.pick(&v, None, None, 200_000).unwrap()] += 1;
    }
    assert_eq!(n, [2000, 2000]);
}

#[test]
fn least_outstanding_requests_picks_the_least_busy() {
    let lb = lb();
    let key = &lb.inner.key;
    let mut tg = group("g", &[v4(free_addr()), v4(free_addr()), v4(free_addr())], no_checks());
    tg.algorithm = Algorithm::LeastOutstandingRequests;
    let g = group::Group::new(&tg, key, true);
    g.update(&tg, key, true);
    let v = g.view.load();
    v.entries[0].t.outstanding.store(5, std::sync::atomic::Ordering::Relaxed);
    v.entries[1].t.outstanding.store(1, std::sync::atomic::Ordering::Relaxed);
    v.entries[2].t.outstanding.store(3, std::sync::atomic::Ordering::Relaxed);
    for _ in 0..5 {
        assert_eq!(g.pick(&v, None, None, 1), Some(1));
    }
}

#[tokio::test]
async fn nlb_udp_keeps_a_flow_on_one_target() {
    async fn udp_named(name: &'static str) -> SocketAddrV4 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = v4(s.local_addr().unwrap());
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let mut out = name.as_bytes().to_vec();
                out.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&out, from).await;
            }
        });
        addr
    }
    let (a, b) = (udp_named("a").await, udp_named("b").await);
    let bind = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let lb = lb();
    lb.apply(Arc::new(nlb(bind, ListenerProtocol::Udp, &[a, b])));
    let mut names = std::collections::HashSet::new();
    for _ in 0..16 {
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.connect(bind).await.unwrap();
        let mut first = None;
        for i in 0..4u8 {
            c.send(&[b'0' + i]).await.unwrap();
            let mut buf = [0u8; 16];
            let n = tokio::time::timeout(Duration::from_secs(2), c.recv(&mut buf)).await.unwrap().unwrap();
            assert_eq!(buf[1], b'0' + i);
            let name = buf[0];
            assert_eq!(*first.get_or_insert(name), name, "a flow changed target");
            assert_eq!(n, 2);
        }
        names.insert(first.unwrap());
    }
    assert_eq!(names.len(), 2);
    let m = &lb.metrics().load_balancers["net/lb/1"];
    assert_eq!(m.new_flow_count_udp, 16);
}

#[test]
fn table_round_trips_through_json() {
    let t = alb(free_addr(), vec![default_rule(forward("g"))], vec![group("g", &[v4(free_addr())], fast_checks("/"))]);
    let s = serde_json::to_string(&t).unwrap();
    assert_eq!(serde_json::from_str::<Table>(&s).unwrap(), t);
}

/// Reads one response (head and a `Content-Length` body) from a raw connection.
async fn read_response(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn idle_connections_are_parked_and_served_again_then_idle_out() {
    let (bind, lb, mut t) = alb_to_a().await;
    t.load_balancers[0].idle_timeout = Duration::from_millis(1500);
    lb.apply(Arc::new(t));
    let mut c = TcpStream::connect(bind).await.unwrap();
    c.write_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(read_response(&mut c).await.ends_with("\r\n\r\na"));
    // Parked (more than two ticks idle), then a request in two halves with a park between.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.write_all(b"GET /2 HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.write_all(b"st: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let r = read_response(&mut c).await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\na"), "{r}");
    let r = read_response(&mut c).await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\na"), "{r}");
    assert_eq!(lb.metrics().load_balancers["app/lb/1"].new_connection_count, 1);
    // No byte for the idle timeout: closed.
    let start = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    assert!(start.elapsed() >= Duration::from_millis(1200), "{:?}", start.elapsed());
}

/// A response body of two chunks with no length: hyper sends it chunked.
struct TwoChunks(Vec<Bytes>);

impl hyper::body::Body for TwoChunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(if self.0.is_empty() {
            None
        } else {
            Some(Ok(hyper::body::Frame::data(self.0.remove(0))))
        })
    }
}

/// A backend answering `/chunked` with a chunked "abcd", anything else with the request's
/// method, version and body (`<method> <version> <body>`).
async fn echo_body() -> SocketAddrV4 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = v4(l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    if req.uri().path() == "/chunked" {
                        let body = http_body_util::Either::Left(TwoChunks(vec![
                            Bytes::from_static(b"ab"),
                            Bytes::from_static(b"cd"),
                        ]));
                        return Ok::<_, std::convert::Infallible>(Response::new(body));
                    }
                    let head = format!("{} {:?} ", req.method(), req.version());
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    Ok(Response::new(http_body_util::Either::Right(Full::new(Bytes::from(
                        [head.as_bytes(), &body].concat(),
                    )))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(c), svc).await;
            });
        }
    });
    addr
}

/// Reads one whole response (a `Content-Length` or chunked body) from a raw connection: its
/// head (lowercased) and its body (chunks joined).
async fn read_any_response(c: &mut TcpStream, got: &mut Vec<u8>) -> (String, String) {
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let rest = &got[end + 4..];
            if head.contains("transfer-encoding: chunked") {
                if let Some(e) = rest.windows(5).position(|w| w == b"0\r\n\r\n") {
                    let (mut body, mut r) = (Vec::new(), &rest[..e]);
                    while let Some(i) = r.windows(2).position(|w| w == b"\r\n") {
                        let n = usize::from_str_radix(std::str::from_utf8(&r[..i]).unwrap(), 16).unwrap();
                        body.extend_from_slice(&r[i + 2..i + 2 + n]);
                        r = &r[i + 4 + n..];
                    }
                    got.drain(..end + 4 + e + 5);
                    return (head, String::from_utf8(body).unwrap());
                }
            } else {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                    .unwrap_or(0);
                if rest.len() >= len {
                    let body = String::from_utf8_lossy(&rest[..len]).into_owned();
                    got.drain(..end + 4 + len);
                    return (head, body);
                }
            }
        }
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn http_listener_bodies_pipelining_and_what_goes_to_hyper() {
    let target = echo_body().await;
    let bind = free_addr();
    let fixed = Rule {
        arn: "fixed".into(),
        priority: Some(1),
        conditions: vec![Condition::PathPattern(vec!["/fixed".into()])],
        action: Action::FixedResponse {
            status: 418,
            content_type: Some("text/plain".into()),
            body: Some("teapot".into()),
        },
    };
    let lb = lb();
    lb.apply(Arc::new(alb(bind, vec![fixed, default_rule(forward("g"))], vec![group("g", &[target], no_checks())])));
    let mut c = TcpStream::connect(bind).await.unwrap();
    let mut got = Vec::new();
    // A Content-Length body, and a request pipelined behind it whose answer is chunked.
    c.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /chunked HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let (h, body) = read_any_response(&mut c, &mut got).await;
    assert!(h.starts_with("http/1.1 200") && h.contains("content-length: 19"), "{h}");
    assert_eq!(body, "POST HTTP/1.1 hello");
    let (h, body) = read_any_response(&mut c, &mut got).await;
    assert!(h.contains("transfer-encoding: chunked"), "{h}");
    assert_eq!(body, "abcd");
    // A chunked request body, in pieces.
    c.write_all(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.write_all(b"c\r\n2;x=y\r\nde\r\n0\r\n\r\n").await.unwrap();
    assert_eq!(read_any_response(&mut c, &mut got).await.1, "PUT HTTP/1.1 abcde");
    // Hyper serves a fixed response, an HTTP/1.0 request and an Expect: 100-continue, and the
    // connection comes back to the fast path after each.
    c.write_all(b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (h, body) = read_any_response(&mut c, &mut got).await;
    assert!(h.starts_with("http/1.1 418"), "{h}");
    assert_eq!(body, "teapot");
    c.write_all(b"GET /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
    assert_eq!(read_any_response(&mut c, &mut got).await.1, "GET HTTP/1.1 ");
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").await.unwrap();
    let (h, _) = read_any_response(&mut c, &mut got).await;
    assert!(h.starts_with("http/1.1 100"), "{h}");
    c.write_all(b"ok").await.unwrap();
    assert_eq!(read_any_response(&mut c, &mut got).await.1, "POST HTTP/1.1 ok");
    // A malformed head: hyper's 400.
    let mut bad = TcpStream::connect(bind).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").await.unwrap();
    let (h, _) = read_any_response(&mut bad, &mut Vec::new()).await;
    assert!(h.starts_with("http/1.1 400"), "{h}");
    // Connection: close is honoured.
    c.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let (h, _) = read_any_response(&mut c, &mut got).await;
    assert!(h.contains("connection: close"), "{h}");
    assert_eq!(c.read(&mut [0u8; 16]).await.unwrap(), 0);
    let m = &lb.metrics().load_balancers["app/lb/1"];
    assert_eq!((m.request_count, m.target_2xx, m.new_connection_count), (7, 6, 2));
}
