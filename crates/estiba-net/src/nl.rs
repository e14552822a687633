//! A small synchronous rtnetlink client: the handful of link, address and route requests a
//! task's network needs. Messages are built and parsed by `netlink-packet-route`; the
//! requests are sent on a plain blocking `netlink-sys` socket because each is one round trip
//! of a few microseconds, done on a thread that may have entered a task's namespace (a
//! netlink socket acts in the network namespace of the thread that opened it). The async
//! `rtnetlink` crate would add a connection task and an executor for no gain here.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A link as a dump lists it.
#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The bridge (or bond) it is attached to.
    pub controller: Option<u32>,
}

pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn is(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 0, buf: vec![0; 1 << 16] })
    }

    /// Sends one request and returns the messages of its answer (an error answer becomes the
    /// `io::Error` of its errno).
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.sock.send(&out, 0)?;
        let mut answers = Vec::new();
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[at..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}")))?;
                let len = m.header.length as usize;
                if len == 0 {
                    break;
                }
                at += (len + 3) & !3;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(answers),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// The index of the link called `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if is(&e, nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let answers = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(answers
            .into_iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => {
                    let mut link = Link { index: l.header.index, name: String::new(), controller: None };
                    for at in l.attributes {
                        match at {
                            LinkAttribute::IfName(n) => link.name = n,
                            LinkAttribute::Controller(c) => link.controller = Some(c),
                            _ => {}
                        }
                    }
                    Some(link)
                }
                _ => None,
            })
            .collect())
    }

    /// Creates a bridge called `name` (it exists afterwards whether this call made it or not).
    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        match self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if is(&e, nix::libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Creates a veth pair: `host` here, attached to the bridge `master` and up, and `peer`
    /// with the MAC address `mac` inside the network namespace `peer_ns`.
    pub fn add_veth(&mut self, host: &str, master: u32, peer: &str, peer_ns: RawFd, mac: [u8; 6]) -> io::Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.into()));
        p.attributes.push(LinkAttribute::NetNsFd(peer_ns));
        p.attributes.push(LinkAttribute::Address(mac.to_vec()));
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(host.into()));
        m.attributes.push(LinkAttribute::Controller(master));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// Deletes the link called `name`; a missing link is not an error.
    pub fn del_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        match self.request(RouteNetlinkMessage::DelLink(m), 0) {
            Err(e) if is(&e, nix::libc::ENODEV) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Sets a link's MAC address (for a bridge: fixed from then on, instead of following the
    /// lowest MAC among its ports, which changes as ports come and go).
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }

    /// Adds `ip/prefix` to a link; an address it already has is not an error.
    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(ip.into()));
        m.attributes.push(AddressAttribute::Address(ip.into()));
        let bits = u32::from(ip) | (u32::MAX.checked_shr(prefix as u32).unwrap_or(0));
        m.attributes.push(AddressAttribute::Broadcast(Ipv4Addr::from(bits)));
        match self.request(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if is(&e, nix::libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Adds the default route through `gateway` on link `index`.
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let default = ipnet::Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("a /0 is valid");
        let mut m = route_message(default, Some(gateway), RouteProtocol::Boot);
        m.attributes.push(RouteAttribute::Oif(index));
        match self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if is(&e, nix::libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Routes `dest` through `gateway` (found on whichever link reaches it), replacing any
    /// route to `dest` there was.
    pub fn replace_route(&mut self, dest: ipnet::Ipv4Net, gateway: Ipv4Addr) -> io::Result<()> {
        let m = route_message(dest, Some(gateway), RouteProtocol::Static);
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_REPLACE).map(drop)
    }

    /// Removes the route to `dest`; a missing route is not an error.
    pub fn del_route(&mut self, dest: ipnet::Ipv4Net) -> io::Result<()> {
        match self.request(RouteNetlinkMessage::DelRoute(route_message(dest, None, RouteProtocol::Static)), 0) {
            Err(e) if is(&e, nix::libc::ESRCH) => Ok(()),
            r => r.map(drop),
        }
    }
}

/// A unicast route of the main table to `dest` (estiba's own routes between machines are
/// marked with protocol `static`; a task's default route with `boot`, as `ip route` does).
fn route_message(dest: ipnet::Ipv4Net, gateway: Option<Ipv4Addr>, protocol: RouteProtocol) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = protocol;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.header.destination_prefix_length = dest.prefix_len();
    if dest.prefix_len() > 0 {
        m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dest.network())));
    }
    if let Some(g) = gateway {
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(g)));
    }
    m
}
