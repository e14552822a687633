//! Lost nodes: a node that has not reported for longer than the node lease
//! (`Config::node_lease`) is lost. Its container instances show `agentConnected: false`
//! (and `true` again once it reports), and its Fargate tasks are stopped with a reason
//! naming the node, so that services replace them on other nodes. Tasks on container
//! instances stay, as ECS leaves tasks of an instance whose agent disconnected: a returning
//! agent reconciles them with what the control plane wants.
//!
//! A lost node's document records since when it is lost (`lostAt`, cleared by its next
//! report). Once it has been lost for [`crate::netblocks::RELEASE_AFTER_LEASES`] node leases
//! and none of its tasks is left unstopped, its address blocks go back to the free pool: no
//! address in them is in use, and a node that returns later claims blocks again.
//!
//! May not: remove claims or tasks (housekeeping does, once stopped tasks expire).

use std::convert::Infallible;
use std::time::Duration;

use estiba_api::ecs::TaskStopCode;
use estiba_core::task;
use estiba_store::{Compare, Txn};

use super::{Controller, Wake};
use crate::services::ecs::put;
use crate::{now, Server};

pub struct LostNodes;

impl Controller for LostNodes {
    type Error = Infallible;

    fn name(&self) -> &'static str {
        "lost-nodes"
    }

    async fn pass(&self, server: &Server) -> Result<Wake, Infallible> {
        let lease = server.config.node_lease;
        // One group per instance or task (a task with its deregistrations), within the
        // background budget (`commit_bounded`); what is left waits for the next pass.
        let groups = {
            let st = server.view.read();
            let now = now();
            let mut groups = Vec::new();
            let alive =
                |node: &str| st.nodes.get(&crate::keys::node(node)).map(|_| server.liveness.alive(&st, node, now));
            for d in st.instances.values() {
                let Some(alive) = estiba_core::instance::node_of(&d.value).and_then(alive) else { continue };
                if d.value.agent_connected != alive {
                    let mut ci = d.value.clone();
                    ci.agent_connected = alive;
                    ci.version += 1;
                    groups.push(Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put(&d.key, &ci)));
                }
            }
            let release_after = (lease * crate::netblocks::RELEASE_AFTER_LEASES).as_secs_f64();
            for n in st.nodes.values().filter(|n| !server.liveness.alive(&st, &n.value.id, now)) {
                let claimed: Vec<&String> = st.claims_by_node.get(&n.value.id).into_iter().flatten().collect();
                let unstopped = claimed.iter().any(|k| st.tasks.get(*k).is_some_and(|t| !t.value.stopped()));
                match n.value.lost_at {
                    None => {
                        let mut v = n.value.clone();
                        v.lost_at = Some(now);
                        groups.push(Txn::new().when(Compare::mod_revision(&n.key, n.rev)).then(put(&n.key, &v)));
                    }
                    Some(at) if now - at > release_after && !unstopped => {
                        groups.extend(crate::netblocks::release(&st, &n.value.id));
                    }
                    Some(_) => {}
                }
                if !n.value.fargate {
                    continue;
                }
                // A lost Fargate node's tasks are stopped, so that services replace them.
                for key in claimed {
                    let Some(d) = st.tasks.get(key) else { continue };
                    if d.value.stopped() || d.value.launch_type != Some(estiba_api::ecs::LaunchType::Fargate) {
                        continue;
                    }
                    let mut t = d.task().into_owned();
                    let reason = format!(
                        "Task stopped: the host running it (node {}) has not reported for more than {}s",
                        n.value.id,
                        lease.as_secs()
                    );
                    task::request_stop(&mut t, TaskStopCode::TerminationNotice, &reason);
                    task::stop_unstarted(&mut t, now);
                    let mut g = Txn::new().when(Compare::mod_revision(key, d.rev)).then(put(key, &t));
                    g.ops.extend(crate::stop_ops(&st, key, now));
                    groups.push(g);
                }
            }
            groups
        };
        // A conflict or a store error is retried at the next pass.
        let more = !groups.is_empty() && super::commit_bounded(server, groups, "lost nodes").await.unwrap_or(false);
        // A node becomes lost by time passing, not by a change: a periodic pass (every quarter
        // of the lease, at most 5 s), which scans every instance, so not on every change.
        let next = if more {
            Duration::from_millis(50)
        } else {
            (lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
        };
        Ok(Wake::At(tokio::time::Instant::now() + next))
    }
}
