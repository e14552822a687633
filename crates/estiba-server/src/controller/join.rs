//! Joining clusters: registers each node as a container instance of each cluster it joins
//! (`NodeStatus::join_clusters`: the server's own node's `--join-cluster`, an agent's
//! `--cluster`), as the ECS agent does with `ECS_CLUSTER`, once the cluster is ACTIVE. An
//! ACTIVE instance of the node found in the cluster is kept. Each (node, cluster) is joined
//! once per process, so an instance deregistered by hand stays deregistered until the server
//! starts again.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use estiba_core::{arn, Scope};
use estiba_store::{Compare, Txn};

use super::{Controller, Wake};
use crate::services::ecs::put;
use crate::view::State;
use crate::{keys, now, RandomIds, Server};

#[derive(Default)]
pub struct Join {
    /// The (node, `join_clusters` entry) pairs joined so far.
    joined: Mutex<HashSet<(String, String)>>,
}

impl Controller for Join {
    type Error = Infallible;

    fn name(&self) -> &'static str {
        "join"
    }

    async fn pass(&self, server: &Server) -> Result<Wake, Infallible> {
        let todo: Vec<(String, String)> = {
            let st = server.view.read();
            let joined = self.joined.lock().unwrap();
            st.nodes
                .values()
                .flat_map(|d| d.value.join_clusters.iter().map(|c| (d.value.id.clone(), c.clone())))
                .filter(|p| !joined.contains(p))
                .collect()
        };
        if todo.is_empty() {
            return Ok(Wake::Change);
        }
        for (node, reference) in todo {
            match join(server, &node, &reference).await {
                Ok(true) => {
                    self.joined.lock().unwrap().insert((node, reference));
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(%node, cluster = %reference, error = %e, "joining the cluster failed"),
            }
        }
        Ok(Wake::change_or_after(Duration::from_secs(1)))
    }
}

/// Registers `node` in the cluster `reference` (a name or an ARN); false while the cluster is
/// not ACTIVE or the node has not reported yet.
async fn join(server: &Server, node: &str, reference: &str) -> Result<bool, estiba_core::EcsError> {
    let (scope, name) = match arn::Arn::parse(reference) {
        Some(a) => (Scope::new(a.account, a.region), arn::cluster_name(Some(reference)).unwrap_or_default()),
        None => (Scope::new(&server.config.account_id, &server.config.default_region), reference.to_owned()),
    };
    let cluster_key = keys::cluster(&scope, &name);
    let mut ids = RandomIds;
    server
        .transact::<_, estiba_core::EcsError>(|st| {
            let Some(c) = st.clusters.get(&cluster_key).filter(|c| c.value.status.as_deref() == Some("ACTIVE")) else {
                return Ok((Txn::new(), false));
            };
            let Some(status) = st.nodes.get(&keys::node(node)) else { return Ok((Txn::new(), false)) };
            let mine = State::range(&st.instances, &keys::instances_of(&scope, &name)).any(|d| {
                estiba_core::instance::node_of(&d.value) == Some(node) && estiba_core::instance::status(&d.value) == "ACTIVE"
            });
            if mine {
                return Ok((Txn::new(), true));
            }
            let req = estiba_core::instance::node_registration(
                &status.value,
                &[server.config.listen.port()],
                env!("CARGO_PKG_VERSION"),
            );
            let mut ci = estiba_core::instance::register(&scope, &name, &req, None, &mut ids, now())?;
            ci.agent_connected = true;
            let key = keys::instance(&scope, &name, estiba_core::instance::id_of(&ci));
            let txn = Txn::new()
                .when(Compare::mod_revision(&cluster_key, c.rev))
                .when(Compare::absent(&key))
                .then(put(&key, &ci))
                .then(crate::services::ecs::put_tags(&key, &[]));
            tracing::info!(%node, cluster = %name, instance = %estiba_core::instance::id_of(&ci), "the node joined the cluster as a container instance");
            Ok((txn, true))
        })
        .await
}
