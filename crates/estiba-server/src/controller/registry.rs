//! Registry housekeeping: applies repositories' lifecycle policies, then collects the blobs
//! no image and no recent push uses (`crate::services::ecr::housekeeping`). Runs every
//! `registry_housekeeping_every`, first that long after the start; a server without a
//! registry has nothing to do.

use std::time::Duration;

use super::{Controller, Wake};
use crate::Server;

pub struct RegistryHousekeeping {
    pub every: Duration,
}

impl Controller for RegistryHousekeeping {
    type Error = estiba_core::ecr::EcrError;

    fn name(&self) -> &'static str {
        "registry-housekeeping"
    }

    fn first(&self) -> Wake {
        Wake::after(self.every)
    }

    fn after_error(&self) -> Wake {
        Wake::after(self.every)
    }

    async fn pass(&self, server: &Server) -> Result<Wake, Self::Error> {
        if server.registry.is_none() {
            return Ok(Wake::Done);
        }
        if crate::services::ecr::housekeeping(server).await? {
            // Lifecycle expiries were left over for lack of room in one transaction.
            return Ok(Wake::after(super::housekeeping::LEFT_OVER_WAKE.min(self.every)));
        }
        Ok(Wake::after(self.every))
    }
}
