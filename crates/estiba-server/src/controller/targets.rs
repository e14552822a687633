//! Keeps ECS services' tasks registered in their target groups ([`crate::targets`]) on every
//! change.

use std::time::Duration;

use estiba_core::EcsError;

use super::{Controller, Wake};
use crate::Server;

pub struct Registrar;

impl Controller for Registrar {
    type Error = EcsError;

    fn name(&self) -> &'static str {
        "target-registrar"
    }

    async fn pass(&self, server: &Server) -> Result<Wake, EcsError> {
        let now = crate::now();
        let groups = crate::targets::sync(&server.view.read(), now);
        if super::commit_bounded(server, groups, "load balancer targets").await? {
            return Ok(Wake::change_or_after(super::housekeeping::LEFT_OVER_WAKE));
        }
        Ok(Wake::change_or_after(Duration::from_secs(30)))
    }
}
