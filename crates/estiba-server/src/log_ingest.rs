//! Container logs from nodes into CloudWatch Logs: the server's side of the awslogs driver
//! ([`LogIngest`]), which the in-process agent's `StoreControl` calls and a remote agent's
//! API would call the same way.
//!
//! A destination names its group; the group's document (`logs/<account>/<region>/groups/<name>`)
//! gives the log store's id of its data. `awslogs-create-group` creates the group as
//! CreateLogGroup does (a new random id, class STANDARD) with a write that claims the key only
//! if it is absent, so tasks racing to create one group all end with the one that won. Events
//! go to `Server::logs` (never to the versioned store), numbered by the sender, on blocking
//! threads. On a follower of several servers the appends go to the leader, which owns the
//! logs ([`crate::replication`]).

use std::sync::Arc;

use estiba_core::logs::{group_key, LogGroupDoc};
use estiba_core::telemetry::{BoxFuture, LogDestination, LogEvents, LogIngest, LogIngestError};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use crate::replication::{Record, WireEvent};
use crate::{now_ms, Server};

/// The server's [`LogIngest`].
pub struct ServerLogIngest {
    server: Arc<Server>,
}

impl ServerLogIngest {
    pub fn new(server: Arc<Server>) -> Self {
        ServerLogIngest { server }
    }

    /// The log store's id of the destination's group, creating the group when asked to.
    async fn group_id(&self, dest: &LogDestination, create: bool) -> Result<String, LogIngestError> {
        let scope = Scope::new(dest.account.clone(), dest.region.clone());
        let key = group_key(&scope, &dest.group);
        loop {
            let existing = crate::services::logs::group_doc(&self.server, &scope, &dest.group).ok();
            if let Some(doc) = existing {
                return Ok(doc.id);
            }
            if !create {
                return Err(LogIngestError::NoSuchGroup);
            }
            estiba_core::logs::check_group_name(&dest.group).map_err(|m| {
                LogIngestError::Refused(format!(
                    "failed to create Cloudwatch log group: InvalidParameterException: {m}"
                ))
            })?;
            let doc = LogGroupDoc::new(uuid::Uuid::new_v4().to_string(), &dest.group, now_ms());
            let value = serde_json::to_vec(&doc).map_err(|e| LogIngestError::Unavailable(e.to_string()))?;
            let txn = Txn::new().when(Compare::absent(&key)).then(Op::put(&key, value));
            if self.server.commit(txn).await.map_err(|e| LogIngestError::Unavailable(e.to_string()))? {
                tracing::info!(group = %dest.group, region = %dest.region, "awslogs: created the log group");
                return Ok(doc.id);
            }
            // Another task created it first: read theirs once the view has it.
            self.server.view.wait_for(self.server.store.revision()).await;
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> LogIngestError {
    LogIngestError::Unavailable(e.to_string())
}

fn store_error(e: estiba_logstore::Error) -> LogIngestError {
    LogIngestError::Unavailable(e.to_string())
}

impl LogIngest for ServerLogIngest {
    fn open_stream<'a>(&'a self, dest: &'a LogDestination) -> BoxFuture<'a, Result<u64, LogIngestError>> {
        Box::pin(async move {
            let id = self.group_id(dest, dest.create_group).await?;
            if crate::replication::follower(&self.server) {
                let r = Record::EnsureStream { group: id, stream: dest.stream.clone(), now: now_ms() };
                return crate::replication::send_to_leader(&self.server, &r).await.map_err(unavailable);
            }
            let (logs, repl) = (self.server.logs.clone(), self.server.replication.clone());
            let stream = dest.stream.clone();
            let info = tokio::task::spawn_blocking(move || repl.ensure_stream(&logs, &id, &stream, now_ms()))
                .await
                .map_err(unavailable)?
                .map_err(store_error)?;
            Ok(info.next_seq)
        })
    }

    fn append<'a>(
        &'a self,
        dest: &'a LogDestination,
        seq: u64,
        events: LogEvents,
    ) -> BoxFuture<'a, Result<u64, LogIngestError>> {
        Box::pin(async move {
            let id = self.group_id(dest, false).await?;
            if crate::replication::follower(&self.server) {
                // The leader owns the logs: the append goes there, numbered as the node sent it.
                let events = events.iter().map(|(t, m)| WireEvent { t, m: m.to_owned() }).collect();
                let r =
                    Record::Append { group: id, stream: dest.stream.clone(), seq: Some(seq), now: now_ms(), events };
                return crate::replication::send_to_leader(&self.server, &r).await.map_err(unavailable);
            }
            let (logs, repl) = (self.server.logs.clone(), self.server.replication.clone());
            let stream = dest.stream.clone();
            let appended = tokio::task::spawn_blocking(move || {
                let r = match repl.append(&logs, &id, &stream, events.iter(), Some(seq), now_ms()) {
                    // A group created again under its name (new id) has no stream yet.
                    Err(estiba_logstore::Error::NoSuchStream { .. }) => repl
                        .ensure_stream(&logs, &id, &stream, now_ms())
                        .and_then(|_| repl.append(&logs, &id, &stream, events.iter(), Some(seq), now_ms())),
                    r => r,
                };
                // An in-process shipper forms its next batch in these buffers.
                events.recycle();
                r
            })
            .await
            .map_err(unavailable)?
            .map_err(store_error)?;
            Ok(appended.next_seq)
        })
    }
}
