//! Publishes the VPC resolvers' zone ([`crate::dns`]) and Service Connect's proxy table
//! ([`crate::connect`]) on every change of the view.

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
        let (zone, table) = {
            let st = server.view.read();
            let entries = crate::connect::entries(&st);
            let zone = crate::dns::zone(&st, &entries, server.config.vpc_cidr, &server.config.default_region);
            (zone, crate::connect::proxy_table(&entries))
        };
        server.dns.send_replace(Arc::new(zone));
        server.connect.send_if_modified(|t| {
            if **t == table {
                return false;
            }
            *t = Arc::new(table);
            true
        });
        Ok(Wake::Change)
    }
}
