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
        let txn = crate::discovery::sync(&server.view.read());
        if !txn.ops.is_empty() {
            let n = txn.ops.len();
            // A task that changed meanwhile: the next pass (woken by its change) retries.
            let done = server.commit(txn).await?;
            tracing::debug!(ops = n, done, "Cloud Map registrations");
        }
        // Health follows the tasks' checks, which change with the view: nothing is timed.
        Ok(Wake::change_or_after(Duration::from_secs(10)))
    }
}
