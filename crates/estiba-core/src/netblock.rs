//! Address blocks of the VPC's subnets, one owner node each, so that task addresses are
//! routable between machines.
//!
//! Every node that runs awsvpc tasks hands out their addresses only from blocks it holds: a
//! block is a fixed-size slice ([`BLOCK_PREFIX`], a /24 unless the subnet is smaller) of one
//! subnet, claimed by the node through the control plane when it has none left with a free
//! address in that subnet (a create-only write of `ecs/-/-/netblocks/<block>`, so two nodes
//! never hold the same block). The control plane publishes every block with its node's
//! address ([`Route`]); each node routes the other nodes' blocks to their hosts, and answers
//! its own tasks' neighbour requests for those addresses (proxy ARP on the VPC bridge), so a
//! task on one machine reaches a task on another by its private address, as in a VPC. This is
//! Calico's host-local block scheme rather than an overlay: no encapsulation, no MTU cost,
//! and the machines only need to reach each other (one L2 or routed underlay).
//!
//! A block keeps its node until the node is gone from the control plane; addresses of the
//! subnet's load balancer range ([`crate::elbv2::lb_address_range`]) are never in a block.
//!
//! **Architecture invariant:** pure rules: no I/O, no store access.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The size of a block: 256 addresses (fewer when the subnet itself is smaller).
pub const BLOCK_PREFIX: u8 = 24;

/// Where the blocks' documents live: `ecs/-/-/netblocks/<a.b.c.d>-<prefix>`.
pub const PREFIX: &str = "ecs/-/-/netblocks/";

/// The document of one block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetBlock {
    /// The node that hands out its addresses.
    pub node: String,
    /// The subnet it is a slice of.
    pub subnet: Ipv4Net,
}

/// The store key of `block`.
pub fn key(block: Ipv4Net) -> String {
    format!("{PREFIX}{}-{}", block.network(), block.prefix_len())
}

/// The block a key names.
pub fn parse_key(key: &str) -> Option<Ipv4Net> {
    let (ip, len) = key.strip_prefix(PREFIX)?.split_once('-')?;
    Ipv4Net::new(ip.parse().ok()?, len.parse().ok()?).ok()
}

/// The blocks of `subnet` that can be claimed, lowest first: every block-sized slice that
/// starts below the subnet's load balancer range.
pub fn blocks_of(subnet: Ipv4Net) -> Vec<Ipv4Net> {
    let prefix = BLOCK_PREFIX.max(subnet.prefix_len());
    let lbs = crate::elbv2::lb_address_range(subnet);
    subnet.subnets(prefix).map(|it| it.filter(|b| u32::from(b.network()) < lbs.start).collect()).unwrap_or_default()
}

/// The lowest claimable block of `subnet` that `taken` says is free.
pub fn free_block(subnet: Ipv4Net, taken: impl Fn(&Ipv4Net) -> bool) -> Option<Ipv4Net> {
    blocks_of(subnet).into_iter().find(|b| !taken(b))
}

/// The addresses of `block` a node may hand out, as (first, last): not the subnet's first
/// four (AWS keeps them), not the block's own last address, not the load balancer range.
pub fn usable(block: Ipv4Net, subnet: Ipv4Net) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let head = if block.network() == subnet.network() { 4 } else { 0 };
    let first = u32::from(block.network()) + head;
    let lbs = crate::elbv2::lb_address_range(subnet);
    let last = (u32::from(block.broadcast()) - 1).min(lbs.start.saturating_sub(1));
    (first <= last).then(|| (Ipv4Addr::from(first), Ipv4Addr::from(last)))
}

/// A block and where its addresses are reached: the host address of the node holding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub block: Ipv4Net,
    pub node: String,
    /// `None` while the node has not reported an address other machines reach it at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Ipv4Addr>,
}

/// Every block with its node's address, as the control plane publishes them to all nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Routes {
    pub routes: Vec<Route>,
}

impl Routes {
    /// The blocks `node` holds in `subnet`, lowest first.
    pub fn held(&self, node: &str, subnet: Ipv4Net) -> Vec<Ipv4Net> {
        let mut v: Vec<Ipv4Net> =
            self.routes.iter().filter(|r| r.node == node && subnet.contains(&r.block)).map(|r| r.block).collect();
        v.sort();
        v
    }

    /// The routes a node installs: other nodes' blocks with a usable address to go through
    /// (loopback, unspecified, or an address inside the VPC, such as a lone node's bridge
    /// gateway, is no way to another machine).
    pub fn foreign<'a>(&'a self, node: &'a str, vpc: Ipv4Net) -> impl Iterator<Item = (Ipv4Net, Ipv4Addr)> + 'a {
        self.routes.iter().filter(move |r| r.node != node).filter_map(move |r| {
            let via = r.via?;
            (!via.is_loopback() && !via.is_unspecified() && !vpc.contains(&via)).then_some((r.block, via))
        })
    }
}

/// Why a node got no block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BlockError {
    #[error("subnet {subnet} is not in the VPC {vpc}: give the agent the server's --vpc-cidr")]
    NotInVpc { subnet: Ipv4Net, vpc: Ipv4Net },
    #[error("every address block of subnet {0} is held by a node")]
    Exhausted(Ipv4Net),
    #[error("{0}")]
    Unavailable(String),
}

/// Hands nodes blocks (the control plane's side of a claim).
pub trait BlockClaims: Send + Sync + 'static {
    /// One more block of `subnet` for `node`: a block the node already holds and does not
    /// know of (`known`: an agent that restarted before the published table reached it), or
    /// else the lowest free block, claimed.
    fn claim<'a>(
        &'a self,
        node: &'a str,
        subnet: Ipv4Net,
        known: &'a [Ipv4Net],
    ) -> crate::telemetry::BoxFuture<'a, Result<Ipv4Net, BlockError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn keys_round_trip() {
        let b = net("172.31.16.0/24");
        assert_eq!(key(b), "ecs/-/-/netblocks/172.31.16.0-24");
        assert_eq!(parse_key(&key(b)), Some(b));
        assert_eq!(parse_key("ecs/-/-/netblocks/nonsense"), None);
    }

    #[test]
    fn blocks_stop_below_the_load_balancer_range() {
        // A /20: sixteen /24s, the top one (and the last address of the one below) is the
        // load balancers' (172.31.14.255 to 172.31.15.254).
        let s = net("172.31.0.0/20");
        let blocks = blocks_of(s);
        assert_eq!(blocks.len(), 15);
        assert_eq!(blocks[0], net("172.31.0.0/24"));
        assert_eq!(blocks[14], net("172.31.14.0/24"));
        assert_eq!(usable(blocks[0], s), Some((Ipv4Addr::new(172, 31, 0, 4), Ipv4Addr::new(172, 31, 0, 254))));
        assert_eq!(usable(blocks[1], s), Some((Ipv4Addr::new(172, 31, 1, 0), Ipv4Addr::new(172, 31, 1, 254))));
        assert_eq!(usable(blocks[14], s), Some((Ipv4Addr::new(172, 31, 14, 0), Ipv4Addr::new(172, 31, 14, 254))));
        // A small subnet is one block.
        let small = net("10.0.0.0/28");
        assert_eq!(blocks_of(small), vec![small]);
        let (first, last) = usable(small, small).unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 0, 0, 4));
        assert!(u32::from(last) < crate::elbv2::lb_address_range(small).start);
    }

    #[test]
    fn free_blocks_and_routes() {
        let s = net("172.31.16.0/20");
        let taken = [net("172.31.16.0/24"), net("172.31.18.0/24")];
        assert_eq!(free_block(s, |b| taken.contains(b)), Some(net("172.31.17.0/24")));
        let routes = Routes {
            routes: vec![
                Route { block: net("172.31.16.0/24"), node: "a".into(), via: Some(Ipv4Addr::new(10, 77, 0, 11)) },
                Route { block: net("172.31.18.0/24"), node: "a".into(), via: Some(Ipv4Addr::new(10, 77, 0, 11)) },
                Route { block: net("172.31.17.0/24"), node: "b".into(), via: Some(Ipv4Addr::new(10, 77, 0, 12)) },
                Route { block: net("172.31.0.0/24"), node: "c".into(), via: Some(Ipv4Addr::LOCALHOST) },
                Route { block: net("172.31.1.0/24"), node: "d".into(), via: None },
            ],
        };
        assert_eq!(routes.held("a", s), vec![net("172.31.16.0/24"), net("172.31.18.0/24")]);
        assert!(routes.held("a", net("172.31.0.0/20")).is_empty());
        let foreign: Vec<_> = routes.foreign("a", net("172.31.0.0/16")).collect();
        assert_eq!(foreign, vec![(net("172.31.17.0/24"), Ipv4Addr::new(10, 77, 0, 12))]);
        // A node whose address is inside the VPC (its own bridge's gateway) is not routed to.
        assert_eq!(routes.foreign("a", net("10.77.0.0/16")).count(), 0);
    }
}
