//! Questions outside our zones go to the host's own resolvers, over UDP (TCP when the answer
//! is truncated), with a small cache of answers and of negative answers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{LowerName, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::DnsError;

/// How long one upstream gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Answers kept at most; past it the expired ones go, then all.
const CACHE_ENTRIES: usize = 4096;
/// The longest an answer is kept, whatever its TTL.
const MAX_TTL: u32 = 300;
/// How long a negative answer without an SOA is kept.
const NEGATIVE_TTL: u32 = 30;

/// An upstream's answer as the resolver passes it on.
#[derive(Clone, Debug)]
pub struct Forwarded {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
}

struct Cached {
    answer: Forwarded,
    until: Instant,
}

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<(LowerName, RecordType), Cached>>,
}

/// The name servers of a `resolv.conf` (only its `nameserver` lines matter here, so it is
/// read by hand rather than with a whole resolver-configuration crate).
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|s| s.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Forwarder { upstreams, cache: Mutex::new(HashMap::new()) }
    }

    /// The answer to `name`/`rtype`: from the cache, or from the first upstream that answers.
    pub async fn resolve(&self, name: &LowerName, rtype: RecordType) -> Result<Forwarded, DnsError> {
        let key = (name.clone(), rtype);
        if let Some(c) = self.cache.lock().unwrap().get(&key) {
            if c.until > Instant::now() {
                return Ok(c.answer.clone());
            }
        }
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(name.into(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        query.set_edns(edns);
        let mut last = DnsError::NoUpstream;
        for up in &self.upstreams {
            match ask(*up, &mut query).await {
                Ok(m) if matches!(m.metadata.response_code, ResponseCode::ServFail | ResponseCode::Refused) => {
                    last = DnsError::Upstream(*up, m.metadata.response_code.to_string());
                }
                Ok(m) => {
                    let answer =
                        Forwarded { code: m.metadata.response_code, answers: m.answers, authorities: m.authorities };
                    self.keep(key, &answer);
                    return Ok(answer);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn keep(&self, key: (LowerName, RecordType), answer: &Forwarded) {
        let ttl = if answer.answers.is_empty() {
            // RFC 2308: a negative answer lives for the SOA's minimum (or its TTL if lower).
            answer
                .authorities
                .iter()
                .find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })
                .unwrap_or(NEGATIVE_TTL)
        } else {
            answer.answers.iter().map(|r| r.ttl).min().unwrap_or(0)
        }
        .min(MAX_TTL);
        if ttl == 0 {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, Cached { answer: answer.clone(), until: now + Duration::from_secs(ttl.into()) });
    }
}

/// One question to one upstream: UDP, then TCP when the answer came back truncated.
async fn ask(up: SocketAddr, query: &mut Message) -> Result<Message, DnsError> {
    query.metadata.id = rand::random();
    let bytes = query.to_vec().map_err(|e| DnsError::Wire(e.to_string()))?;
    let io = |e: std::io::Error| DnsError::Io(up, e);
    let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(up).await.map_err(io)?;
    sock.send(&bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    let answer = loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await.map_err(|_| DnsError::Timeout(up))?;
        let n = n.map_err(io)?;
        // Anything but the answer to this very question (a late answer to another) is dropped.
        match Message::from_vec(&buf[..n]) {
            Ok(m) if m.metadata.id == query.metadata.id && m.metadata.message_type == MessageType::Response => break m,
            _ => continue,
        }
    };
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    let tcp = async {
        let mut s = TcpStream::connect(up).await.map_err(io)?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        s.write_all(&framed).await.map_err(io)?;
        let len = s.read_u16().await.map_err(io)?;
        let mut body = vec![0u8; len as usize];
        s.read_exact(&mut body).await.map_err(io)?;
        Message::from_vec(&body).map_err(|e| DnsError::Wire(e.to_string()))
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, tcp).await.map_err(|_| DnsError::Timeout(up))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_of_resolv_conf() {
        let conf = "# comment\nnameserver 127.0.0.53\nsearch example.com\nnameserver fe80::1%eth0\nnameserver bad\n";
        let ns = nameservers(conf);
        assert_eq!(ns, ["127.0.0.53:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
    }
}
