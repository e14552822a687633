//! Publishes the VPC resolvers' zone ([`crate::dns`]), Service Connect's proxy table
//! ([`crate::connect`]), the load balancers' table ([`crate::lb`]) and the VPC's address
//! blocks ([`crate::netblocks`]) on every change of the view.
//!
//! It only reads the view and writes nothing, so it runs on every server, leader or not
//! ([`super::run_everywhere`]): agents connected to any server get the tables.

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
        let (zone, table, lbs, routes) = {
            let st = server.view.read();
            let entries = crate::connect::entries(&st);
            let zone = crate::dns::zone(&st, &entries, server.config.vpc_cidr, &server.config.default_region);
            let lbs = crate::lb::table_of(&st, server.config.lb_host_address);
            (zone, crate::connect::proxy_table(&entries), lbs, crate::netblocks::routes(&st))
        };
        server.routes.send_if_modified(|r| {
            if **r == routes {
                return false;
            }
            *r = Arc::new(routes);
            true
        });
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
