//! CloudWatch Logs housekeeping: enforces each group's retention (`LogStore::expire` with now
//! minus the retention period) and removes the log store's data of groups no document names
//! (a DeleteLogGroup whose store deletion failed or was cut short by a crash). Runs every
//! `every`, first at once.
//!
//! No race with a concurrent CreateLogGroup: the store's groups are listed first and the view
//! read after it has caught up with the store. A group's data appears in the log store only
//! after its document is committed (streams are created once the view holds the group), so
//! every id listed whose document exists is in that view.

use std::collections::HashSet;
use std::time::Duration;

use estiba_core::logs::{self as core, LogGroupDoc};

use super::{Controller, Wake};
use crate::services::logs::groups_table;
use crate::{now, Server};

pub struct LogsHousekeeping {
    pub every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LogsHousekeepingError {
    #[error("log store: {0}")]
    Store(#[from] estiba_logstore::Error),
    #[error("log store call: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl Controller for LogsHousekeeping {
    type Error = LogsHousekeepingError;

    fn name(&self) -> &'static str {
        "logs-housekeeping"
    }

    fn after_error(&self) -> Wake {
        Wake::after(self.every)
    }

    async fn pass(&self, server: &Server) -> Result<Wake, LogsHousekeepingError> {
        let logs = server.logs.clone();
        let stored = tokio::task::spawn_blocking(move || logs.groups()).await?;
        server.catch_up().await;
        let now_ms = (now() * 1000.0) as i64;
        let (named, expiring): (HashSet<String>, Vec<(String, i64)>) = {
            let st = server.view.read();
            let docs: Vec<&LogGroupDoc> =
                st.docs::<LogGroupDoc>(groups_table(), core::PREFIX).map(|d| &d.value).collect();
            let named = docs.iter().map(|d| d.id.clone()).collect();
            let expiring = docs
                .iter()
                .filter_map(|d| d.retention_in_days.map(|r| (d.id.clone(), core::retention_cutoff(now_ms, r))))
                .collect();
            (named, expiring)
        };
        let orphans: Vec<String> = stored.into_iter().filter(|id| !named.contains(id)).collect();
        let (logs, repl) = (server.logs.clone(), server.replication.clone());
        tokio::task::spawn_blocking(move || {
            for (id, before) in &expiring {
                let freed = repl.expire(&logs, id, *before)?;
                if freed > 0 {
                    tracing::debug!(group = %id, freed, "log retention");
                }
            }
            for id in &orphans {
                tracing::info!(group = %id, "removing the events of a deleted log group");
                repl.delete_group(&logs, id)?;
            }
            Ok::<_, estiba_logstore::Error>(())
        })
        .await??;
        Ok(Wake::after(self.every))
    }
}
