//! Publishes the VPC resolvers' zone ([`crate::dns`]) on every change of the view.

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
        let zone = {
            let st = server.view.read();
            crate::dns::zone(&st, server.config.vpc_cidr, &server.config.default_region)
        };
        // An unchanged zone is not published again: resolvers keep the answers they copied.
        server.dns.send_if_modified(|z| {
            let changed = **z != zone;
            if changed {
                *z = Arc::new(zone);
            }
            changed
        });
        Ok(Wake::Change)
    }
}
