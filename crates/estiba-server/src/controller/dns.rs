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
        server.dns.send_replace(Arc::new(zone));
        Ok(Wake::Change)
    }
}
