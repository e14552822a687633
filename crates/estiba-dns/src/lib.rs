//! The VPC resolver: what AWS runs at a VPC's base address plus two (172.31.0.2 for the
//! default 172.31.0.0/16), run by every node for the task networks on it.
//!
//! It answers with authority from a [`Zone`] (private DNS namespaces' records, tasks' private
//! DNS names and their PTRs, load balancers' names), replaced as a whole through a
//! `tokio::sync::watch` channel whenever the control plane's state changes, and forwards
//! every other question to the host's own resolvers ([`forward`]), with a small cache. UDP
//! and TCP, EDNS(0), truncation and NXDOMAIN vs NODATA come from hickory: its server for the
//! serving, its protocol crate for the wire format.
//!
//! **Architecture invariant:** knows nothing about ECS, Cloud Map or the store: it is given
//! a zone and addresses to serve on. The zone is built from the control plane's state (never
//! from the node's own tasks), so every node answers the same.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::watch;

pub mod forward;
pub mod zone;

pub use forward::{nameservers, Forwarder};
pub use zone::{Lookup, Pick, Zone, ZoneBuilder};

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

/// Answers one question at a time: from the zone when it is ours, else from upstream.
pub struct Handler {
    zone: watch::Receiver<Arc<Zone>>,
    forwarder: Forwarder,
}

impl Handler {
    pub fn new(zone: watch::Receiver<Arc<Zone>>, forwarder: Forwarder) -> Self {
        Handler { zone, forwarder }
    }
}

/// A running resolver: stops serving when dropped.
pub struct Resolver {
    server: hickory_server::Server<Handler>,
    addrs: Vec<SocketAddr>,
}

impl Resolver {
    /// Serves `handler` on UDP and TCP at each address (port 0 picks one: see
    /// [`Resolver::addrs`]).
    pub async fn serve(addrs: &[SocketAddr], handler: Handler) -> Result<Resolver, DnsError> {
        let mut server = hickory_server::Server::new(handler);
        let mut bound = Vec::new();
        for addr in addrs {
            let udp = tokio::net::UdpSocket::bind(addr).await.map_err(|e| DnsError::Bind(*addr, e))?;
            let at = udp.local_addr().map_err(|e| DnsError::Bind(*addr, e))?;
            let tcp = tokio::net::TcpListener::bind(at).await.map_err(|e| DnsError::Bind(at, e))?;
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE, 64);
            bound.push(at);
        }
        Ok(Resolver { server, addrs: bound })
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops serving and waits for the listeners to close.
    pub async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut rh: R) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(UDP_PAYLOAD);
            e
        });
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let refuse = |code: ResponseCode, mut meta: Metadata| {
            meta.response_code = code;
            meta
        };
        // Questions this server takes: standard queries, one question, class IN; EDNS
        // version 0.
        let bad = if request.metadata.message_type != MessageType::Query {
            Some(ResponseCode::FormErr)
        } else if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Some(ResponseCode::BADVERS)
        } else if request.queries.queries().len() != 1 {
            Some(ResponseCode::FormErr)
        } else {
            None
        };
        if let Some(code) = bad {
            let r = builder.build_no_records(refuse(code, meta));
            return send(&mut rh, r).await;
        }
        let q = &request.queries.queries()[0];
        if q.query_class() != DNSClass::IN {
            let r = builder.build_no_records(refuse(ResponseCode::Refused, meta));
            return send(&mut rh, r).await;
        }
        let zone = self.zone.borrow().clone();
        match zone.lookup(q.name(), q.query_type()) {
            Lookup::Answer(records) => {
                meta.authoritative = true;
                let r = builder.build(meta, records.iter(), [], [], []);
                send(&mut rh, r).await
            }
            Lookup::NoData(soa) => {
                meta.authoritative = true;
                let r = builder.build(meta, [], [], [&soa], []);
                send(&mut rh, r).await
            }
            Lookup::NxDomain(soa) => {
                meta.authoritative = true;
                meta.response_code = ResponseCode::NXDomain;
                let r = builder.build(meta, [], [], [&soa], []);
                send(&mut rh, r).await
            }
            Lookup::Elsewhere if !request.metadata.recursion_desired => {
                let r = builder.build_no_records(refuse(ResponseCode::Refused, meta));
                send(&mut rh, r).await
            }
            Lookup::Elsewhere => match self.forwarder.resolve(q.name(), q.query_type()).await {
                Ok(f) => {
                    meta.response_code = f.code;
                    let r = builder.build(meta, f.answers.iter(), f.authorities.iter(), [], []);
                    send(&mut rh, r).await
                }
                Err(e) => {
                    tracing::debug!(name = %q.name(), error = %e, "forwarding failed");
                    let r = builder.build_no_records(refuse(ResponseCode::ServFail, meta));
                    send(&mut rh, r).await
                }
            },
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    rh: &mut R,
    r: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let meta = *r.metadata();
    match rh.send_response(r).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "sending a DNS answer failed");
            let mut meta = meta;
            meta.response_code = ResponseCode::ServFail;
            hickory_proto::op::Header { metadata: meta, counts: Default::default() }.into()
        }
    }
}

#[cfg(test)]
mod tests;
