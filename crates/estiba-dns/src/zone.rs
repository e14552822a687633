//! The records the resolver answers with authority: a snapshot the control plane builds
//! ([`ZoneBuilder`]) and replaces as a whole when something changes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::DnsError;

/// How many records of a set one answer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Every record (a task's own name, an SRV set).
    All,
    /// Up to this many, chosen at random for each answer (Cloud Map's MULTIVALUE: up to
    /// eight healthy records; WEIGHTED: one).
    Random(usize),
}

#[derive(Clone, Debug, PartialEq)]
struct RecordSet {
    rtype: RecordType,
    records: Vec<Record>,
    pick: Pick,
}

/// A name's records, by type; a name with none exists all the same (an empty non-terminal,
/// or a name whose records are all unhealthy): it answers NODATA, not NXDOMAIN.
#[derive(Clone, Debug, Default, PartialEq)]
struct Node {
    sets: Vec<RecordSet>,
}

/// An authoritative snapshot: the zones it is the authority for (by apex) and their names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Zone {
    /// Apex and its SOA record, longest apex first (the most specific zone wins).
    apexes: Vec<(LowerName, Record)>,
    names: HashMap<LowerName, Node>,
}

/// What the zone says about a question.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// Records for the name and type (CNAMEs on the way first).
    Answer(Vec<Record>),
    /// The name exists without records of that type: NOERROR with the zone's SOA.
    NoData(Record),
    /// The name does not exist in a zone this resolver is the authority for.
    NxDomain(Record),
    /// Not in any zone of ours: a question for the upstream resolvers.
    Elsewhere,
}

/// A CNAME chain longer than this is answered as far as it got.
const MAX_CHAIN: usize = 8;

impl Zone {
    /// The zone's apex and SOA record for `name`, if the name is in one of our zones.
    fn authority(&self, name: &LowerName) -> Option<&(LowerName, Record)> {
        self.apexes.iter().find(|(apex, _)| apex.zone_of(name))
    }

    /// Answers a question about `name` and `rtype`.
    pub fn lookup(&self, name: &LowerName, rtype: RecordType) -> Lookup {
        self.lookup_rotated(name, rtype, 0).0
    }

    /// Answers a question, a set of several records rotated by `rotation` (successive
    /// answers cycle through the records, as round-robin DNS servers do); and whether the
    /// answer varies otherwise (a random subset of a set larger than its pick), so that the
    /// same question and rotation may not be answered from a copy of an earlier answer.
    pub fn lookup_rotated(&self, name: &LowerName, rtype: RecordType, rotation: usize) -> (Lookup, bool) {
        let mut order = Order { rotation, varies: false };
        let l = self.lookup_in(name, rtype, &mut order);
        (l, order.varies)
    }

    fn lookup_in(&self, name: &LowerName, rtype: RecordType, order: &mut Order) -> Lookup {
        let Some((_, soa)) = self.authority(name) else { return Lookup::Elsewhere };
        let Some(node) = self.names.get(name) else { return Lookup::NxDomain(soa.clone()) };
        let mut answer = Vec::new();
        let mut node = node;
        for _ in 0..MAX_CHAIN {
            if let Some(set) = node.set(rtype) {
                answer.extend(set.pick(order));
                return Lookup::Answer(answer);
            }
            if rtype == RecordType::ANY {
                for set in &node.sets {
                    answer.extend(set.pick(order));
                }
                return if answer.is_empty() { Lookup::NoData(soa.clone()) } else { Lookup::Answer(answer) };
            }
            // Follow an alias while it stays in our zones; the client follows the rest.
            let Some(cname) = node.set(RecordType::CNAME).and_then(|s| s.pick(order).into_iter().next()) else {
                break;
            };
            let RData::CNAME(target) = &cname.data else { break };
            let target = target.0.clone();
            answer.push(cname);
            let target = LowerName::from(&target);
            match self.authority(&target).and_then(|_| self.names.get(&target)) {
                Some(next) => node = next,
                None => return Lookup::Answer(answer),
            }
        }
        if answer.is_empty() {
            Lookup::NoData(soa.clone())
        } else {
            Lookup::Answer(answer)
        }
    }
}

impl Node {
    fn set(&self, rtype: RecordType) -> Option<&RecordSet> {
        self.sets.iter().find(|s| s.rtype == rtype && !s.records.is_empty())
    }
}

/// How the records of an answer are ordered, and whether it varied at random.
struct Order {
    rotation: usize,
    varies: bool,
}

impl RecordSet {
    fn pick(&self, order: &mut Order) -> Vec<Record> {
        match self.pick {
            Pick::Random(n) if n < self.records.len() => {
                order.varies = true;
                // A partial Fisher-Yates shuffle: `n` distinct records, each equally likely.
                let mut idx: Vec<usize> = (0..self.records.len()).collect();
                for i in 0..n {
                    let j = rand::random_range(i..idx.len());
                    idx.swap(i, j);
                }
                idx[..n].iter().map(|&i| self.records[i].clone()).collect()
            }
            Pick::Random(_) if self.records.len() > 1 => {
                let k = order.rotation % self.records.len();
                self.records[k..].iter().chain(&self.records[..k]).cloned().collect()
            }
            _ => self.records.clone(),
        }
    }
}

/// Builds a [`Zone`]. Names are absolute (a trailing dot is added when missing) and
/// compared case-insensitively.
#[derive(Default)]
pub struct ZoneBuilder {
    zone: Zone,
}

/// The SOA timers of a zone of ours: Route 53's defaults for a hosted zone.
const SOA_REFRESH: i32 = 7200;
const SOA_RETRY: i32 = 900;
const SOA_EXPIRE: i32 = 1_209_600;

pub fn name(s: &str) -> Result<Name, DnsError> {
    let mut n = Name::from_str(s).map_err(|e| DnsError::Name(s.to_owned(), e.to_string()))?;
    n.set_fqdn(true);
    Ok(n)
}

impl ZoneBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes this resolver the authority for `apex`, with an SOA whose minimum (the TTL of
    /// negative answers) is `negative_ttl`. Adding an apex twice keeps the first.
    pub fn apex(&mut self, apex: &str, negative_ttl: u32) -> Result<&mut Self, DnsError> {
        let apex = name(apex)?;
        let lower = LowerName::from(&apex);
        if self.zone.apexes.iter().any(|(a, _)| *a == lower) {
            return Ok(self);
        }
        let mname = name(&format!("ns.{apex}")).unwrap_or_else(|_| apex.clone());
        let rname = name(&format!("hostmaster.{apex}")).unwrap_or_else(|_| apex.clone());
        let soa = SOA::new(mname, rname, 1, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, negative_ttl);
        let record = Record::from_rdata(apex.clone(), negative_ttl, RData::SOA(soa));
        self.zone.apexes.push((lower.clone(), record));
        self.zone.apexes.sort_by_key(|(a, _)| std::cmp::Reverse(a.num_labels()));
        self.zone.names.entry(lower).or_default();
        Ok(self)
    }

    /// Adds a record set (records of one type at one name), replacing one of that type
    /// there. The name must be in a zone added with [`ZoneBuilder::apex`].
    fn set(&mut self, owner: &Name, rtype: RecordType, records: Vec<Record>, pick: Pick) -> Result<(), DnsError> {
        let lower = LowerName::from(owner);
        let Some((apex, _)) = self.zone.authority(&lower) else {
            return Err(DnsError::NotOurs(owner.to_string()));
        };
        let apex = apex.clone();
        // Every name between the owner and the apex exists (empty non-terminals).
        let mut up = lower.base_name();
        while apex.zone_of(&up) && up != apex {
            self.zone.names.entry(up.clone()).or_default();
            up = up.base_name();
        }
        let node = self.zone.names.entry(lower).or_default();
        node.sets.retain(|s| s.rtype != rtype);
        node.sets.push(RecordSet { rtype, records, pick });
        Ok(())
    }

    /// A name that exists with no records (a Cloud Map service whose instances are all
    /// unhealthy answers NODATA).
    pub fn exists(&mut self, owner: &str) -> Result<&mut Self, DnsError> {
        let owner = name(owner)?;
        self.set(&owner, RecordType::A, vec![], Pick::All)?;
        Ok(self)
    }

    /// A and AAAA records of `owner`, one set per family (a family with no address leaves
    /// that type's set as it was).
    pub fn addresses(&mut self, owner: &str, ips: &[IpAddr], ttl: u32, pick: Pick) -> Result<&mut Self, DnsError> {
        let owner = name(owner)?;
        let v4: Vec<Record> = ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(a) => Some(Record::from_rdata(owner.clone(), ttl, RData::A(A(*a)))),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6: Vec<Record> = ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(a) => Some(Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(*a)))),
                IpAddr::V4(_) => None,
            })
            .collect();
        for (rtype, set) in [(RecordType::A, v4), (RecordType::AAAA, v6)] {
            if !set.is_empty() {
                self.set(&owner, rtype, set, pick)?;
            }
        }
        Ok(self)
    }

    /// SRV records of `owner`: (priority, weight, port, target).
    pub fn srv(
        &mut self,
        owner: &str,
        targets: &[(u16, u16, u16, String)],
        ttl: u32,
        pick: Pick,
    ) -> Result<&mut Self, DnsError> {
        let owner = name(owner)?;
        let mut records = Vec::new();
        for (priority, weight, port, target) in targets {
            let rdata = RData::SRV(SRV::new(*priority, *weight, *port, name(target)?));
            records.push(Record::from_rdata(owner.clone(), ttl, rdata));
        }
        self.set(&owner, RecordType::SRV, records, pick)?;
        Ok(self)
    }

    /// CNAME records: `owner` is an alias of one of `targets` (Cloud Map's WEIGHTED routing
    /// picks one instance's at random for each answer).
    pub fn cname(&mut self, owner: &str, targets: &[String], ttl: u32) -> Result<&mut Self, DnsError> {
        let owner = name(owner)?;
        let mut records = Vec::new();
        for t in targets {
            records.push(Record::from_rdata(owner.clone(), ttl, RData::CNAME(CNAME(name(t)?))));
        }
        self.set(&owner, RecordType::CNAME, records, Pick::Random(1))?;
        Ok(self)
    }

    /// The PTR record of an address: `4.0.31.172.in-addr.arpa.` → `target`.
    pub fn ptr(&mut self, ip: IpAddr, target: &str, ttl: u32) -> Result<&mut Self, DnsError> {
        let owner = reverse_name(ip);
        let record = Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(name(target)?)));
        self.set(&owner, RecordType::PTR, vec![record], Pick::All)?;
        Ok(self)
    }

    pub fn build(self) -> Zone {
        self.zone
    }
}

/// The reverse-lookup name of an address (`in-addr.arpa` or `ip6.arpa`).
pub fn reverse_name(ip: IpAddr) -> Name {
    let s = match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::new();
            for b in a.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa."
        }
    };
    Name::from_str(&s).expect("a reverse name is well formed")
}

/// The reverse zone apex of an IPv4 network, on an octet boundary at or above its prefix
/// (`172.31.0.0/16` → `31.172.in-addr.arpa.`).
pub fn reverse_apex_v4(net: Ipv4Addr, prefix: u8) -> String {
    let o = net.octets();
    let labels = (prefix / 8).clamp(1, 4) as usize;
    let mut parts: Vec<String> = o[..labels].iter().rev().map(u8::to_string).collect();
    parts.push("in-addr.arpa.".into());
    parts.join(".")
}

/// A [`Zone`] as data, for a node on another machine (the agent API sends it as JSON): each
/// record set's records in DNS wire format, base64-encoded.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ZoneWire {
    /// The apexes' SOA records.
    pub apexes: String,
    /// (name, sets): a name with no sets exists all the same.
    pub names: Vec<(String, Vec<SetWire>)>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SetWire {
    pub rtype: u16,
    /// `None`: every record ([`Pick::All`]); `Some(n)`: [`Pick::Random`].
    pub pick: Option<usize>,
    pub records: String,
}

fn encode_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Result<String, DnsError> {
    use base64::Engine;
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    // One encoder for all: its name compression points into the one buffer the decoder reads.
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    for r in records {
        r.emit(&mut encoder).map_err(|e| DnsError::Wire(e.to_string()))?;
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn decode_records(s: &str) -> Result<Vec<Record>, DnsError> {
    use base64::Engine;
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| DnsError::Wire(e.to_string()))?;
    let mut decoder = BinDecoder::new(&bytes);
    let mut out = Vec::new();
    while !decoder.is_empty() {
        out.push(Record::read(&mut decoder).map_err(|e| DnsError::Wire(e.to_string()))?);
    }
    Ok(out)
}

impl Zone {
    pub fn to_wire(&self) -> Result<ZoneWire, DnsError> {
        let mut names = Vec::with_capacity(self.names.len());
        for (name, node) in &self.names {
            let mut sets = Vec::with_capacity(node.sets.len());
            for set in &node.sets {
                let pick = match set.pick {
                    Pick::All => None,
                    Pick::Random(n) => Some(n),
                };
                sets.push(SetWire { rtype: u16::from(set.rtype), pick, records: encode_records(&set.records)? });
            }
            names.push((name.to_string(), sets));
        }
        Ok(ZoneWire { apexes: encode_records(self.apexes.iter().map(|(_, r)| r))?, names })
    }

    pub fn from_wire(w: &ZoneWire) -> Result<Zone, DnsError> {
        let mut zone = Zone::default();
        for soa in decode_records(&w.apexes)? {
            zone.apexes.push((LowerName::from(&soa.name), soa));
        }
        zone.apexes.sort_by_key(|(a, _)| std::cmp::Reverse(a.num_labels()));
        for (n, sets) in &w.names {
            let mut node = Node::default();
            for s in sets {
                let pick = s.pick.map_or(Pick::All, Pick::Random);
                node.sets.push(RecordSet {
                    rtype: RecordType::from(s.rtype),
                    records: decode_records(&s.records)?,
                    pick,
                });
            }
            zone.names.insert(LowerName::from(&name(n)?), node);
        }
        Ok(zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(s: &str) -> LowerName {
        LowerName::from(&name(s).unwrap())
    }

    fn zone() -> Zone {
        let mut b = ZoneBuilder::new();
        b.apex("local", 15).unwrap().apex("ec2.internal", 60).unwrap();
        b.apex("31.172.in-addr.arpa", 60).unwrap();
        let ips: Vec<IpAddr> = (1..=10).map(|i| IpAddr::V4(Ipv4Addr::new(172, 31, 0, i))).collect();
        b.addresses("api.local", &ips, 10, Pick::Random(8)).unwrap();
        b.addresses("one.local", &ips[..1], 10, Pick::All).unwrap();
        b.srv("_http._tcp.api.local", &[(1, 1, 8080, "t1.api.local".into())], 10, Pick::All).unwrap();
        b.cname("www.local", &["api.local".into()], 10).unwrap();
        b.cname("out.local", &["example.com".into()], 10).unwrap();
        b.exists("down.local").unwrap();
        b.ptr(ips[0], "ip-172-31-0-1.ec2.internal", 60).unwrap();
        b.build()
    }

    #[test]
    fn a_zone_survives_its_wire_form() {
        let z = zone();
        let wire = z.to_wire().unwrap();
        let json = serde_json::to_string(&wire).unwrap();
        let back = Zone::from_wire(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back, z);
        assert!(matches!(back.lookup(&lower("down.local"), RecordType::A), Lookup::NoData(_)));
        assert!(matches!(back.lookup(&lower("nope.local"), RecordType::A), Lookup::NxDomain(_)));
        assert!(Zone::from_wire(&ZoneWire { apexes: "!".into(), names: vec![] }).is_err());
    }

    #[test]
    fn answers_nodata_nxdomain_and_elsewhere() {
        let z = zone();
        let Lookup::Answer(a) = z.lookup(&lower("API.local"), RecordType::A) else { panic!() };
        assert_eq!(a.len(), 8, "MULTIVALUE answers up to eight records");
        let mut distinct: Vec<String> = a.iter().map(|r| r.data.to_string()).collect();
        distinct.dedup();
        assert_eq!(distinct.len(), 8);
        assert!(matches!(z.lookup(&lower("api.local"), RecordType::AAAA), Lookup::NoData(_)));
        assert!(matches!(z.lookup(&lower("down.local"), RecordType::A), Lookup::NoData(_)));
        // An empty non-terminal exists.
        assert!(matches!(z.lookup(&lower("_tcp.api.local"), RecordType::A), Lookup::NoData(_)));
        assert!(matches!(z.lookup(&lower("nope.local"), RecordType::A), Lookup::NxDomain(_)));
        assert!(matches!(z.lookup(&lower("local"), RecordType::A), Lookup::NoData(_)));
        assert_eq!(z.lookup(&lower("example.com"), RecordType::A), Lookup::Elsewhere);
        let Lookup::Answer(s) = z.lookup(&lower("_http._tcp.api.local"), RecordType::SRV) else { panic!() };
        assert_eq!(s[0].data.to_string(), "1 1 8080 t1.api.local.");
    }

    #[test]
    fn small_sets_rotate_and_large_ones_vary() {
        let mut b = ZoneBuilder::new();
        b.apex("local", 15).unwrap();
        let ips: Vec<IpAddr> = (1..=3).map(|i| IpAddr::V4(Ipv4Addr::new(172, 31, 0, i))).collect();
        b.addresses("three.local", &ips, 10, Pick::Random(8)).unwrap();
        let z = b.build();
        let first = |rot| match z.lookup_rotated(&lower("three.local"), RecordType::A, rot) {
            (Lookup::Answer(a), varies) => (a[0].data.to_string(), a.len(), varies),
            other => panic!("{other:?}"),
        };
        assert_eq!(first(0), ("172.31.0.1".into(), 3, false));
        assert_eq!(first(1), ("172.31.0.2".into(), 3, false));
        assert_eq!(first(5), ("172.31.0.3".into(), 3, false));
        let big = zone();
        assert!(big.lookup_rotated(&lower("api.local"), RecordType::A, 0).1, "8 of 10 at random varies");
    }

    #[test]
    fn cnames_are_followed_inside_our_zones() {
        let z = zone();
        let Lookup::Answer(a) = z.lookup(&lower("www.local"), RecordType::A) else { panic!() };
        assert_eq!(a[0].record_type(), RecordType::CNAME);
        assert_eq!(a.len(), 9);
        let Lookup::Answer(a) = z.lookup(&lower("out.local"), RecordType::A) else { panic!() };
        assert_eq!(a.len(), 1);
        let Lookup::Answer(a) = z.lookup(&lower("www.local"), RecordType::CNAME) else { panic!() };
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn reverse_names() {
        let ip = IpAddr::V4(Ipv4Addr::new(172, 31, 0, 4));
        assert_eq!(reverse_name(ip).to_string(), "4.0.31.172.in-addr.arpa.");
        assert_eq!(reverse_apex_v4(Ipv4Addr::new(172, 31, 0, 0), 16), "31.172.in-addr.arpa.");
        assert_eq!(reverse_apex_v4(Ipv4Addr::new(10, 0, 0, 0), 8), "10.in-addr.arpa.");
        let mut b = ZoneBuilder::new();
        b.apex(&reverse_apex_v4(Ipv4Addr::new(172, 31, 0, 0), 16), 60).unwrap();
        b.ptr(ip, "ip-172-31-0-4.ec2.internal", 60).unwrap();
        let z = b.build();
        let Lookup::Answer(a) = z.lookup(&LowerName::from(&reverse_name(ip)), RecordType::PTR) else { panic!() };
        assert_eq!(a[0].data.to_string(), "ip-172-31-0-4.ec2.internal.");
        assert!(ZoneBuilder::new().exists("x.example.com").is_err(), "records need a zone of ours");
    }
}
