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
        let txn = crate::targets::sync(&server.view.read(), now);
        if !txn.ops.is_empty() {
            let n = txn.ops.len();
            // A task that changed meanwhile: the next pass (woken by its change) retries.
            let done = server.commit(txn).await?;
            tracing::debug!(ops = n, done, "load balancer targets");
        }
        Ok(Wake::change_or_after(Duration::from_secs(30)))
    }
}
