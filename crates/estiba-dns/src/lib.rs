//! The VPC resolver: what AWS runs at a VPC's base address plus two (172.31.0.2 for the
//! default 172.31.0.0/16), run by every node for the task networks on it.
//!
//! It answers with authority from a [`Zone`] (private DNS namespaces' records, tasks' private
//! DNS names and their PTRs, load balancers' names), replaced as a whole through a
//! `tokio::sync::watch` channel whenever the control plane's state changes, and forwards
//! every other question to the host's own resolvers ([`forward`]), with a small cache. UDP
//! and TCP, EDNS(0), truncation and NXDOMAIN vs NODATA; the wire format is hickory-proto's,
//! the serving loops are ours ([`Resolver::serve`] says why).
//!
//! **Architecture invariant:** knows nothing about ECS, Cloud Map or the store: it is given
//! a zone and addresses to serve on. The zone is built from the control plane's state (never
//! from the node's own tasks), so every node answers the same.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

pub mod forward;
pub mod zone;

pub use forward::{nameservers, Forwarder};
pub use zone::{Lookup, Pick, Zone, ZoneBuilder, ZoneWire};

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{0:?} is not a valid DNS name: {1}")]
    Name(String, String),
    #[error("{0} is not in a zone this resolver is the authority for")]
    NotOurs(String),
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("upstream resolver {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("upstream resolver {0} answered {1}")]
    Upstream(SocketAddr, String),
    #[error("upstream resolver {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("DNS message: {0}")]
    Wire(String),
    #[error("serving DNS on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// The largest UDP answer offered to EDNS clients (the DNS flag day 2020 value: no
/// fragmentation on common paths).
const UDP_PAYLOAD: u16 = 1232;
/// How long an idle TCP client is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often a UDP thread looks up from its socket to see whether it should stop.
const UDP_POLL: Duration = Duration::from_millis(200);

/// Answers one question at a time: from the zone when it is ours, else from upstream.
pub struct Handler {
    zone: watch::Receiver<Arc<Zone>>,
    forwarder: Forwarder,
}

/// What a question gets.
enum Answer {
    /// The response, and whether the same question (at the same rotation) always gets it.
    Now(Message, bool),
    /// Not ours: the response (header and question set) to fill from upstream.
    Forward(Message, LowerName, hickory_proto::rr::RecordType),
}

impl Handler {
    pub fn new(zone: watch::Receiver<Arc<Zone>>, forwarder: Forwarder) -> Self {
        Handler { zone, forwarder }
    }

    /// The answer to `req` from `zone`, or what to ask upstream; record sets rotated by
    /// `rotation`.
    fn answer(&self, zone: &Zone, req: &Message, rotation: usize) -> Answer {
        let mut meta = Metadata::response_from_request(&req.metadata);
        meta.recursion_available = true;
        let mut resp = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
        resp.metadata = meta;
        resp.queries = req.queries.clone();
        if req.edns.is_some() {
            let mut e = Edns::new();
            e.set_max_payload(UDP_PAYLOAD);
            resp.set_edns(e);
        }
        let refuse = |mut resp: Message, code: ResponseCode| {
            resp.metadata.response_code = code;
            Answer::Now(resp, true)
        };
        // Questions this server takes: standard queries, one question, class IN; EDNS
        // version 0.
        if req.metadata.message_type != MessageType::Query || req.queries.len() != 1 {
            return refuse(resp, ResponseCode::FormErr);
        }
        if req.metadata.op_code != OpCode::Query {
            return refuse(resp, ResponseCode::NotImp);
        }
        if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return refuse(resp, ResponseCode::BADVERS);
        }
        let q = &req.queries[0];
        if q.query_class() != DNSClass::IN {
            return refuse(resp, ResponseCode::Refused);
        }
        let name = LowerName::from(q.name());
        let (lookup, varies) = zone.lookup_rotated(&name, q.query_type(), rotation);
        match lookup {
            Lookup::Answer(records) => {
                resp.metadata.authoritative = true;
                resp.answers = records;
            }
            Lookup::NoData(soa) => {
                resp.metadata.authoritative = true;
                resp.authorities.push(soa);
            }
            Lookup::NxDomain(soa) => {
                resp.metadata.authoritative = true;
                resp.metadata.response_code = ResponseCode::NXDomain;
                resp.authorities.push(soa);
            }
            Lookup::Elsewhere if !req.metadata.recursion_desired => return refuse(resp, ResponseCode::Refused),
            Lookup::Elsewhere => return Answer::Forward(resp, name, q.query_type()),
        }
        Answer::Now(resp, !varies)
    }

    /// Fills a response from upstream (SERVFAIL when no upstream answers).
    async fn forwarded(&self, mut resp: Message, name: &LowerName, rtype: hickory_proto::rr::RecordType) -> Message {
        match self.forwarder.resolve(name, rtype).await {
            Ok(f) => {
                resp.metadata.response_code = f.code;
                resp.answers = f.answers;
                resp.authorities = f.authorities;
            }
            Err(e) => {
                tracing::debug!(%name, error = %e, "forwarding failed");
                resp.metadata.response_code = ResponseCode::ServFail;
            }
        }
        resp
    }

    /// The response to a raw question, for TCP (no size limit).
    async fn respond(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let req = parse(raw)?;
        let zone = self.zone.borrow().clone();
        let resp = match self.answer(&zone, &req, rand::random::<u32>() as usize) {
            Answer::Now(m, _) => m,
            Answer::Forward(m, name, rtype) => self.forwarded(m, &name, rtype).await,
        };
        encode(&resp, usize::from(u16::MAX))
    }
}

/// A question, or `None` for bytes that are not one (a malformed packet gets no answer, as
/// its id cannot be trusted).
fn parse(raw: &[u8]) -> Option<Message> {
    Message::from_vec(raw).ok().filter(|m| m.metadata.message_type == MessageType::Query)
}

/// The wire form of `resp`, truncated (TC set, answers dropped) beyond `max` bytes.
fn encode(resp: &Message, max: usize) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().map_err(|e| tracing::debug!(error = %e, "encoding a DNS answer")).ok()?;
    if bytes.len() <= max {
        return Some(bytes);
    }
    resp.truncate().to_vec().ok()
}

/// The UDP payload a question allows its answer: 512 bytes, or what its EDNS offers (at
/// most ours).
fn udp_limit(req: &Message) -> usize {
    req.edns.as_ref().map_or(512, |e| e.max_payload().clamp(512, UDP_PAYLOAD)) as usize
}

/// A running resolver: stops serving when dropped.
pub struct Resolver {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    tcp: Vec<tokio::task::JoinHandle<()>>,
}

impl Resolver {
    /// Serves `handler` on UDP and TCP at each address (port 0 picks one: see
    /// [`Resolver::addrs`]).
    ///
    /// UDP, the hot path, is served by threads of its own (one per core, at most four)
    /// reading one socket, each answering in a plain loop:
    /// no task or channel per question, and a question asked before (same bytes after the
    /// id, same zone, same rotation) is answered with a copy of the earlier answer.
    /// hickory-server spawns a task per question and sends each answer through a channel to
    /// the socket's task; on the server's one runtime worker that served 130,000 questions a
    /// second where dnsmasq serves 185,000 (`cargo xtask bench dns`). Questions for upstream
    /// go to the runtime. TCP is a task per connection.
    pub async fn serve(addrs: &[SocketAddr], handler: Handler) -> Result<Resolver, DnsError> {
        let handler = Arc::new(handler);
        let rt = tokio::runtime::Handle::current();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let mut bound = Vec::new();
        let mut tcp = Vec::new();
        for addr in addrs {
            // One socket, read by every thread: a second resolver on the same address (another
            // estiba on this host) fails to bind instead of sharing its questions, as it would
            // with SO_REUSEPORT.
            let sock = std::net::UdpSocket::bind(addr).map_err(|e| DnsError::Bind(*addr, e))?;
            let at = sock.local_addr().map_err(|e| DnsError::Bind(*addr, e))?;
            sock.set_read_timeout(Some(UDP_POLL)).map_err(|e| DnsError::Bind(at, e))?;
            for _ in 0..threads {
                let sock = sock.try_clone().map_err(|e| DnsError::Bind(at, e))?;
                let (handler, rt, stop) = (handler.clone(), rt.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("estiba-dns".into())
                    .spawn(move || udp_loop(sock, handler, rt, stop))
                    .map_err(|e| DnsError::Bind(at, e))?;
            }
            let listener = tokio::net::TcpListener::bind(at).await.map_err(|e| DnsError::Bind(at, e))?;
            tcp.push(tokio::spawn(tcp_loop(listener, handler.clone())));
            bound.push(at);
        }
        Ok(Resolver { addrs: bound, stop, tcp })
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops serving (the UDP threads leave within a fraction of a second).
    pub async fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tcp {
            t.abort();
        }
    }
}

/// Answers a UDP thread has sent, by the question's bytes after its id, one map per
/// rotation; emptied when the zone changes or the map is full.
struct Sent {
    zone: *const Zone,
    by_rotation: Vec<HashMap<Vec<u8>, Vec<u8>>>,
}

/// Successive answers to one question cycle through this many rotations of its record sets.
const ROTATIONS: usize = 8;
const SENT_PER_ROTATION: usize = 1024;

fn udp_loop(sock: std::net::UdpSocket, handler: Arc<Handler>, rt: tokio::runtime::Handle, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 4096];
    let mut sent = Sent { zone: std::ptr::null(), by_rotation: vec![HashMap::new(); ROTATIONS] };
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "receiving a DNS question");
                continue;
            }
        };
        if n < 12 {
            continue;
        }
        turn = turn.wrapping_add(1);
        let rotation = turn % ROTATIONS;
        let zone = handler.zone.borrow().clone();
        if !std::ptr::eq(sent.zone, Arc::as_ptr(&zone)) {
            sent.zone = Arc::as_ptr(&zone);
            sent.by_rotation.iter_mut().for_each(HashMap::clear);
        }
        // The same question (flags, EDNS and all) gets the same answer from the same zone:
        // a copy with the question's id, without decoding it again.
        if let Some(b) = sent.by_rotation[rotation].get(&buf[2..n]) {
            let mut out = b.clone();
            out[..2].copy_from_slice(&buf[..2]);
            let _ = sock.send_to(&out, src);
            continue;
        }
        let Some(req) = parse(&buf[..n]) else { continue };
        let limit = udp_limit(&req);
        match handler.answer(&zone, &req, rotation) {
            Answer::Now(resp, same) => {
                if let Some(b) = encode(&resp, limit) {
                    let _ = sock.send_to(&b, src);
                    if same {
                        let map = &mut sent.by_rotation[rotation];
                        if map.len() >= SENT_PER_ROTATION {
                            map.clear();
                        }
                        map.insert(buf[2..n].to_vec(), b);
                    }
                }
            }
            Answer::Forward(resp, name, rtype) => {
                let Ok(sock) = sock.try_clone() else { continue };
                let handler = handler.clone();
                rt.spawn(async move {
                    let resp = handler.forwarded(resp, &name, rtype).await;
                    if let Some(b) = encode(&resp, limit) {
                        let _ = sock.send_to(&b, src);
                    }
                });
            }
        }
    }
}

async fn tcp_loop(listener: tokio::net::TcpListener, handler: Arc<Handler>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { continue };
        let handler = handler.clone();
        tokio::spawn(async move {
            // Length-prefixed messages (RFC 1035 4.2.2), one after another, until the client
            // closes or idles.
            loop {
                let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, conn.read_u16()).await else { return };
                let mut raw = vec![0u8; len as usize];
                if conn.read_exact(&mut raw).await.is_err() {
                    return;
                }
                let Some(out) = handler.respond(&raw).await else { return };
                let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                if conn.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
