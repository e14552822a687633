//! The VPC's address blocks ([`estiba_core::netblock`]): nodes claim them here (the agent
//! API's `POST nodes/<n>/blocks`, or the server's own node directly) and every node gets the
//! table of all blocks with their machines' addresses, to route the others' blocks.
//!
//! A claim is one create-only write of the block's document: two nodes asking at once get
//! different blocks (the loser's compare fails and it takes the next one).

use std::sync::Arc;

use estiba_core::netblock::{self, BlockClaims, BlockError, NetBlock, Route, Routes};
use estiba_core::telemetry::BoxFuture;
use estiba_store::{Compare, Op, Txn};
use ipnet::Ipv4Net;

use crate::view::State;
use crate::{Server, WriteError};

/// One more block of `subnet` for `node` (a node asks when the blocks it knows of are full):
/// one it holds and did not list in `known`, else the lowest free block, claimed.
pub async fn claim(server: &Server, node: &str, subnet: Ipv4Net, known: &[Ipv4Net]) -> Result<Ipv4Net, BlockError> {
    let vpc = server.config.vpc_cidr;
    if !vpc.contains(&subnet) {
        return Err(BlockError::NotInVpc { subnet, vpc });
    }
    let r = server
        .transact::<_, Claim>(|st| {
            let held = st.netblocks.iter().find(|(key, doc)| {
                doc.value.node == node
                    && netblock::parse_key(key).is_some_and(|b| subnet.contains(&b) && !known.contains(&b))
            });
            if let Some(block) = held.and_then(|(key, _)| netblock::parse_key(key)) {
                return Ok((Txn::new(), block));
            }
            let block = netblock::free_block(subnet, |b| st.netblocks.contains_key(&netblock::key(*b)))
                .ok_or(Claim::Refused(BlockError::Exhausted(subnet)))?;
            let doc = serde_json::to_vec(&NetBlock { node: node.to_owned(), subnet })
                .map_err(|e| Claim::Refused(BlockError::Unavailable(e.to_string())))?;
            let key = netblock::key(block);
            Ok((Txn::new().when(Compare::absent(key.clone())).then(Op::put(key, doc)), block))
        })
        .await;
    match r {
        Ok(block) => {
            tracing::info!(node, %block, "address block claimed");
            Ok(block)
        }
        Err(Claim::Refused(e)) => Err(e),
        Err(Claim::Write(e)) => Err(BlockError::Unavailable(e.to_string())),
    }
}

enum Claim {
    Refused(BlockError),
    Write(WriteError),
}

impl From<WriteError> for Claim {
    fn from(e: WriteError) -> Self {
        Claim::Write(e)
    }
}

/// How long a node stays lost, in node leases, before its address blocks go back to the
/// free pool (when none of its tasks is left running).
pub const RELEASE_AFTER_LEASES: u32 = 10;

/// The deletion of every block `node` holds (each compared with the revision read), or
/// `None` when it holds none.
pub fn release(st: &State, node: &str) -> Option<Txn> {
    let mut txn = Txn::new();
    for (key, doc) in st.netblocks.iter().filter(|(_, d)| d.value.node == node) {
        txn = txn.when(Compare::mod_revision(key, doc.rev)).then(Op::delete(key.clone()));
    }
    (!txn.ops.is_empty()).then_some(txn)
}

/// Every block with the address its node last reported.
pub fn routes(st: &State) -> Routes {
    let routes = st
        .netblocks
        .iter()
        .filter_map(|(key, doc)| {
            let block = netblock::parse_key(key)?;
            let node = &doc.value.node;
            let via = st.nodes.get(&estiba_core::keys::node(node)).and_then(|n| n.value.address);
            Some(Route { block, node: node.clone(), via })
        })
        .collect();
    Routes { routes }
}

/// The server's side of claims, for its own node.
pub struct ServerBlocks(pub Arc<Server>);

impl BlockClaims for ServerBlocks {
    fn claim<'a>(
        &'a self,
        node: &'a str,
        subnet: Ipv4Net,
        known: &'a [Ipv4Net],
    ) -> BoxFuture<'a, Result<Ipv4Net, BlockError>> {
        Box::pin(claim(&self.0, node, subnet, known))
    }
}
