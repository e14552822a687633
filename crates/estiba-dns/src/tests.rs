//! The resolver over real sockets on loopback: a client's questions over UDP and TCP, and a
//! second resolver standing in for the host's upstream.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(172, 31, 0, d))
}

async fn start(zone: Zone, upstreams: Vec<SocketAddr>) -> (Resolver, watch::Sender<Arc<Zone>>) {
    let (tx, rx) = watch::channel(Arc::new(zone));
    let r =
        Resolver::serve(&["127.0.0.1:0".parse().unwrap()], Handler::new(rx, Forwarder::new(upstreams))).await.unwrap();
    (r, tx)
}

fn question(name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

async fn udp(at: SocketAddr, q: &Message) -> Message {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&q.to_vec().unwrap(), at).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf)).await.unwrap().unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn tcp(at: SocketAddr, q: &Message) -> Message {
    let mut s = tokio::net::TcpStream::connect(at).await.unwrap();
    let b = q.to_vec().unwrap();
    s.write_all(&(b.len() as u16).to_be_bytes()).await.unwrap();
    s.write_all(&b).await.unwrap();
    let n = s.read_u16().await.unwrap();
    let mut body = vec![0u8; n as usize];
    s.read_exact(&mut body).await.unwrap();
    Message::from_vec(&body).unwrap()
}

fn local_zone() -> Zone {
    let mut b = ZoneBuilder::new();
    b.apex("local", 15).unwrap();
    b.addresses("api.local", &[v4(4), v4(5)], 10, Pick::Random(8)).unwrap();
    let many: Vec<IpAddr> = (1..=60).map(v4).collect();
    b.addresses("many.local", &many, 10, Pick::All).unwrap();
    b.build()
}

#[tokio::test]
async fn answers_with_authority_over_udp_and_tcp() {
    let (r, tx) = start(local_zone(), vec![]).await;
    let at = r.addrs()[0];

    let a = udp(at, &question("api.local.", RecordType::A, true)).await;
    assert_eq!(a.metadata.id, 4242);
    assert!(a.metadata.authoritative && a.metadata.recursion_available);
    let mut ips: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
    ips.sort();
    assert_eq!(ips, ["172.31.0.4", "172.31.0.5"]);
    assert!(a.edns.is_some(), "an EDNS question gets an EDNS answer");

    let nodata = udp(at, &question("api.local.", RecordType::AAAA, false)).await;
    assert_eq!((nodata.metadata.response_code, nodata.answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
    let nx = tcp(at, &question("nope.local.", RecordType::A, false)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);

    // 60 records do not fit in 512 bytes: truncated over UDP, whole over TCP.
    let t = udp(at, &question("many.local.", RecordType::A, false)).await;
    assert!(t.metadata.truncation);
    let whole = tcp(at, &question("many.local.", RecordType::A, false)).await;
    assert_eq!(whole.answers.len(), 60);

    // A new zone is served from the next question on.
    let mut b = ZoneBuilder::new();
    b.apex("local", 15).unwrap();
    b.addresses("api.local", &[v4(9)], 10, Pick::Random(8)).unwrap();
    tx.send_replace(Arc::new(b.build()));
    let a = udp(at, &question("api.local.", RecordType::A, true)).await;
    assert_eq!(a.answers.len(), 1);
    assert_eq!(a.answers[0].data.to_string(), "172.31.0.9");
    r.shutdown().await;
}

#[tokio::test]
async fn forwards_the_rest_upstream_and_caches() {
    let mut b = ZoneBuilder::new();
    b.apex("example.com", 30).unwrap();
    b.addresses("www.example.com", &[v4(77)], 60, Pick::All).unwrap();
    let (upstream, up_zone) = start(b.build(), vec![]).await;
    let (r, _tx) = start(local_zone(), upstream.addrs().to_vec()).await;
    let at = r.addrs()[0];

    let a = udp(at, &question("www.example.com.", RecordType::A, true)).await;
    assert!(!a.metadata.authoritative, "a forwarded answer is not ours");
    assert_eq!(a.answers[0].data.to_string(), "172.31.0.77");
    let nx = udp(at, &question("nope.example.com.", RecordType::A, true)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

    // Cached: the upstream's zone changes, the answer does not (within its TTL).
    up_zone.send_replace(Arc::new(Zone::default()));
    let a = udp(at, &question("www.example.com.", RecordType::A, true)).await;
    assert_eq!(a.answers[0].data.to_string(), "172.31.0.77");
    // A name the upstream cannot answer (it has no upstream of its own): SERVFAIL.
    let f = udp(at, &question("other.example.org.", RecordType::A, true)).await;
    assert_eq!(f.metadata.response_code, ResponseCode::ServFail);
    r.shutdown().await;
    upstream.shutdown().await;
}

#[tokio::test]
async fn refuses_what_it_does_not_serve() {
    let (r, _tx) = start(local_zone(), vec![]).await;
    let at = r.addrs()[0];
    let mut q = question("api.local.", RecordType::A, true);
    q.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    assert_eq!(udp(at, &q).await.metadata.response_code, ResponseCode::Refused);
    let mut q = question("api.local.", RecordType::A, true);
    q.metadata.op_code = OpCode::Status;
    assert_eq!(udp(at, &q).await.metadata.response_code, ResponseCode::NotImp);
    // Outside our zones without recursion desired: refused, not forwarded.
    let mut q = question("www.example.com.", RecordType::A, false);
    q.metadata.recursion_desired = false;
    assert_eq!(udp(at, &q).await.metadata.response_code, ResponseCode::Refused);
    r.shutdown().await;
}

#[tokio::test]
async fn answers_rotate_and_a_new_zone_is_never_answered_from_copies() {
    let (r, tx) = start(local_zone(), vec![]).await;
    let at = r.addrs()[0];
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ask = |q: Message| {
        let s = &s;
        async move {
            s.send_to(&q.to_vec().unwrap(), at).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf)).await.unwrap().unwrap();
            Message::from_vec(&buf[..n]).unwrap()
        }
    };
    // One client socket: one serving thread, whose copies cover every rotation after 8.
    let mut firsts = std::collections::BTreeSet::new();
    for i in 0..16u16 {
        let mut q = question("api.local.", RecordType::A, true);
        q.metadata.id = i;
        let a = ask(q).await;
        assert_eq!(a.metadata.id, i, "a copied answer carries the question's id");
        assert_eq!(a.answers.len(), 2);
        firsts.insert(a.answers[0].data.to_string());
    }
    assert_eq!(firsts.len(), 2, "successive answers rotate the records");
    let mut b = ZoneBuilder::new();
    b.apex("local", 15).unwrap();
    b.addresses("api.local", &[v4(9)], 10, Pick::Random(8)).unwrap();
    tx.send_replace(Arc::new(b.build()));
    for _ in 0..8 {
        let a = ask(question("api.local.", RecordType::A, true)).await;
        assert_eq!(a.answers.iter().map(|r| r.data.to_string()).collect::<Vec<_>>(), ["172.31.0.9"]);
    }
    r.shutdown().await;
}

#[tokio::test]
async fn a_second_resolver_cannot_take_the_address() {
    let (r, _tx) = start(local_zone(), vec![]).await;
    let (_, rx) = watch::channel(Arc::new(Zone::default()));
    let second = Resolver::serve(r.addrs(), Handler::new(rx, Forwarder::new(vec![]))).await;
    assert!(matches!(second, Err(DnsError::Bind(..))), "it would share (and answer) the first's questions");
    assert_eq!(udp(r.addrs()[0], &question("api.local.", RecordType::A, true)).await.answers.len(), 2);
    r.shutdown().await;
}
