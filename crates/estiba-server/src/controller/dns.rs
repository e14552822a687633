//! Publishes the VPC resolvers' zone ([`crate::dns`]), Service Connect's proxy table
//! ([`crate::connect`]) and the load balancers' table ([`crate::lb`]) on every change of the
//! view.

use std::convert::Infallible;
use std::sync::Arc;

use super::{Controller, Wake};
use crate::Server;

pub struct Zones;

impl Controller for Zones {
    type Error = Infallible;

    fn name(&self) -> &'static str {
        "dns"
    }

    async fn pass(&self, server: &Server) -> Result<Wake, Infallible> {
        let (zone, table, lbs) = {
            let st = server.view.read();
            let entries = crate::connect::entries(&st);
            let zone = crate::dns::zone(&st, &entries, server.config.vpc_cidr, &server.config.default_region);
            (zone, crate::connect::proxy_table(&entries), crate::lb::table_of(&st, server.config.lb_host_address))
        };
        // An unchanged zone or table is not published again: resolvers keep the answers they
        // copied, proxies their listeners.
        server.dns.send_if_modified(|z| {
            let changed = **z != zone;
            if changed {
                *z = Arc::new(zone);
            }
            changed
        });
        server.connect.send_if_modified(|t| {
            if **t == table {
                return false;
            }
            *t = Arc::new(table);
            true
        });
        server.lb.send_if_modified(|t| {
            if **t == lbs {
                return false;
            }
            *t = Arc::new(lbs);
            true
        });
        Ok(Wake::Change)
    }
}
