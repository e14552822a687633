//! Keeps ECS services' tasks registered in Cloud Map ([`crate::discovery`]) on every change.

use std::time::Duration;

use estiba_core::EcsError;

use super::{Controller, Wake};
use crate::Server;

pub struct Registrar;

impl Controller for Registrar {
    type Error = EcsError;

    fn name(&self) -> &'static str {
        "cloudmap-registrar"
    }

    async fn pass(&self, server: &Server) -> Result<Wake, EcsError> {
        let groups = crate::discovery::sync(&server.view.read());
        if super::commit_bounded(server, groups, "Cloud Map registrations").await? {
            return Ok(Wake::change_or_after(super::housekeeping::LEFT_OVER_WAKE));
        }
        // Health follows the tasks' checks, which change with the view: nothing is timed.
        Ok(Wake::change_or_after(Duration::from_secs(10)))
    }
}
