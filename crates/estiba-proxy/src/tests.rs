use std::net::SocketAddrV4;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn free_addr() -> SocketAddrV4 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    match l.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    }
}

/// A server that answers each connection with `name` and closes.
async fn named(name: &'static str) -> SocketAddrV4 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let std::net::SocketAddr::V4(addr) = l.local_addr().unwrap() else { unreachable!() };
    tokio::spawn(async move {
        loop {
            let (mut c, _) = l.accept().await.unwrap();
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

async fn ask(addr: SocketAddrV4) -> std::io::Result<String> {
    let mut c = TcpStream::connect(addr).await?;
    c.write_all(b"!").await?;
    let mut out = String::new();
    c.read_to_string(&mut out).await?;
    Ok(out)
}

fn table(addr: SocketAddrV4, endpoints: &[SocketAddrV4]) -> Table {
    Table { listeners: vec![Listener { addr, endpoints: endpoints.to_vec() }] }
}

#[tokio::test]
async fn spreads_connections_round_robin() {
    let (a, b) = (named("a").await, named("b").await);
    let vip = free_addr();
    let p = Proxy::new(Settings::default());
    p.apply(&table(vip, &[a, b])).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(ask(vip).await.unwrap());
    }
    got.sort();
    assert_eq!(got, ["a!", "a!", "b!", "b!"]);
}

#[tokio::test]
async fn a_refused_connect_is_retried_and_the_endpoint_ejected() {
    let live = named("live").await;
    let dead = free_addr(); // nothing listens: connects are refused
    let vip = free_addr();
    let p = Proxy::new(Settings::default());
    p.apply(&table(vip, &[dead, live])).await;
    for _ in 0..10 {
        assert_eq!(ask(vip).await.unwrap(), "live!");
    }
    let running = p.running.lock().unwrap();
    let pool = running[&vip].pool.endpoints.read().unwrap().clone();
    let h = &pool.iter().find(|e| e.addr == dead).unwrap().health;
    assert_eq!(h.ejections.load(Ordering::Relaxed), 1, "five failures in a row eject it");
    assert!(h.ejected_until.load(Ordering::Relaxed) > p.now_ms() + 20_000);
}

#[tokio::test]
async fn when_every_endpoint_is_ejected_all_are_tried() {
    let live = named("back").await;
    let vip = free_addr();
    let p = Proxy::new(Settings::default());
    p.apply(&table(vip, &[live])).await;
    {
        let running = p.running.lock().unwrap();
        let pool = running[&vip].pool.endpoints.read().unwrap().clone();
        pool[0].health.ejected_until.store(u64::MAX, Ordering::Relaxed);
    }
    assert_eq!(ask(vip).await.unwrap(), "back!");
}

#[tokio::test]
async fn attempts_are_bounded_and_an_empty_pool_closes() {
    let vip = free_addr();
    let p = Proxy::new(Settings::default());
    p.apply(&table(vip, &[free_addr(), free_addr(), free_addr(), free_addr()])).await;
    assert_eq!(ask(vip).await.unwrap_or_default(), "", "no endpoint answers: the client's connection closes");
    p.apply(&table(vip, &[])).await;
    assert_eq!(ask(vip).await.unwrap_or_default(), "");
}

#[tokio::test]
async fn updates_keep_listeners_and_health_and_close_what_goes() {
    let (a, b) = (named("a").await, named("b").await);
    let (vip1, vip2) = (free_addr(), free_addr());
    let p = Proxy::new(Settings::default());
    p.apply(&Table {
        listeners: vec![Listener { addr: vip1, endpoints: vec![a] }, Listener { addr: vip2, endpoints: vec![b] }],
    })
    .await;
    assert_eq!(ask(vip1).await.unwrap(), "a!");
    assert_eq!(ask(vip2).await.unwrap(), "b!");
    let health = {
        let running = p.running.lock().unwrap();
        let pool = running[&vip1].pool.endpoints.read().unwrap().clone();
        pool[0].health.failures.store(3, Ordering::Relaxed);
        pool[0].health.clone()
    };
    // vip1 now goes to b and a; vip2 goes away.
    p.apply(&table(vip1, &[b, a])).await;
    let mut got = vec![ask(vip1).await.unwrap(), ask(vip1).await.unwrap()];
    got.sort();
    assert_eq!(got, ["a!", "b!"]);
    {
        let running = p.running.lock().unwrap();
        let pool = running[&vip1].pool.endpoints.read().unwrap().clone();
        let kept = &pool.iter().find(|e| e.addr == a).unwrap().health;
        assert!(Arc::ptr_eq(kept, &health), "an endpoint that stays keeps its health");
    }
    tokio::task::yield_now().await;
    assert!(ask(vip2).await.is_err(), "a listener that goes stops accepting");
    assert_eq!(p.listening(), [vip1]);
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_listeners() {
    let a = named("a").await;
    let vip = free_addr();
    let p = Proxy::new(Settings::default());
    p.apply(&table(vip, &[a])).await;
    assert_eq!(ask(vip).await.unwrap(), "a!");
    drop(p);
    tokio::task::yield_now().await;
    assert!(ask(vip).await.is_err());
}
