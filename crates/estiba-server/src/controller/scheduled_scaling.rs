//! Application Auto Scaling's scheduled actions: runs each action once per due time (wall
//! clock, not the compressed metric clock), setting its target's MinCapacity / MaxCapacity,
//! moving the ECS service's desired count into the new range, and recording the activities
//! (`estiba_core::autoscaling::run_scheduled_action`). Wakes on changes and at the next due
//! time (at most a minute ahead).
//!
//! A crash between a due time and the write runs the action at the next pass; a run is one
//! transaction (action's last run, target, service, activities), so it never runs twice. Due
//! times missed while the server was down run once, not once each.
//!
//! May not: read other services' handlers; scaling writes go through `crate::scaling`.

use std::time::Duration;

use estiba_core::autoscaling::docs::{self, ScheduledDoc, TargetDoc};
use estiba_core::autoscaling::{self as rules, Schedule, ScheduledAction, Zone};
use estiba_core::Scope;
use estiba_store::{Compare, Txn};

use super::{Controller, Wake};
use crate::services::application_autoscaling::{scheduled_table, targets_table};
use crate::{now, scaling, Server, WriteError};

pub struct ScheduledScaling;

#[derive(Debug, thiserror::Error)]
pub enum ScheduledScalingError {
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The longest sleep between passes (time zones' rules and clock jumps are looked at again).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The scope a document's key names: `autoscaling/<account>/<region>/...`.
fn scope_of(key: &str) -> Option<Scope> {
    let mut parts = key.split('/');
    let (_, account, region) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Scope::new(account, region))
}

impl Controller for ScheduledScaling {
    type Error = ScheduledScalingError;

    fn name(&self) -> &'static str {
        "scheduled-scaling"
    }

    async fn pass(&self, server: &Server) -> Result<Wake, ScheduledScalingError> {
        let t = now();
        let (due, next): (Vec<String>, Option<f64>) = {
            let st = server.view.read();
            let mut due = Vec::new();
            let mut next: Option<f64> = None;
            for d in st.docs::<ScheduledDoc>(scheduled_table(), docs::PREFIX) {
                match d.value.next_run() {
                    Some(at) if at <= t => due.push(d.key.clone()),
                    Some(at) => next = Some(next.map_or(at, |n: f64| n.min(at))),
                    None => {}
                }
            }
            (due, next)
        };
        for key in due {
            run(server, &key).await?;
        }
        let sleep = next.map_or(MAX_SLEEP, |at| Duration::from_secs_f64((at - now()).max(0.05)).min(MAX_SLEEP));
        Ok(Wake::change_or_after(sleep))
    }
}

/// Runs the scheduled action at `key` if it is still due.
async fn run(server: &Server, key: &str) -> Result<(), WriteError> {
    let Some(scope) = scope_of(key) else { return Ok(()) };
    let ran = server
        .transact::<_, WriteError>(|st| {
            let t = now();
            let Some(d) = st.doc::<ScheduledDoc>(scheduled_table(), key) else {
                return Ok((Txn::new(), None));
            };
            if d.value.next_run().is_none_or(|at| at > t) {
                return Ok((Txn::new(), None));
            }
            let mut txn = Txn::new().when(Compare::mod_revision(key, d.rev));
            let mut doc = d.value.clone();
            doc.last_run = Some(t);
            txn.ops.push(crate::services::application_autoscaling::put_doc(key, &doc));
            let a = &d.value.action;
            let resource_id = a.resource_id.clone();
            let tkey = docs::target_key(&scope, &resource_id);
            let Some(target) = st.doc::<TargetDoc>(targets_table(), &tkey) else {
                return Ok((txn, None));
            };
            let (Ok(schedule), Ok(zone)) = (Schedule::parse(&a.schedule), Zone::parse(a.timezone.as_deref())) else {
                return Ok((txn, None));
            };
            let action = ScheduledAction {
                schedule,
                zone,
                min_capacity: a.scalable_target_action.as_ref().and_then(|x| x.min_capacity),
                max_capacity: a.scalable_target_action.as_ref().and_then(|x| x.max_capacity),
            };
            let current = scaling::desired_count(st, &scope, &target.value.service);
            let Some(run) = rules::run_scheduled_action(
                &a.scheduled_action_name,
                &action,
                &target.value.bounds,
                current.unwrap_or(target.value.bounds.min_capacity),
            ) else {
                // ScheduledScalingSuspended: the run is skipped, not kept for later.
                return Ok((txn, None));
            };
            let mut tdoc = target.value.clone();
            tdoc.bounds = run.bounds;
            txn.compares.push(Compare::mod_revision(&tkey, target.rev));
            txn.ops.push(crate::services::application_autoscaling::put_doc(&tkey, &tdoc));
            let mut activities = vec![run.activity];
            if let (Some((desired, activity)), Some(_)) = (run.desired, current) {
                activities.push(
                    match scaling::set_desired_count(st, &scope, &target.value.service, desired, t, &mut txn) {
                        Ok(()) => activity,
                        Err(e) => rules::Activity::desired_count_failed(desired, activity.cause, &e.message),
                    },
                );
            }
            scaling::record_activities(st, &scope, &resource_id, activities, t, &mut txn);
            Ok((txn, Some((a.scheduled_action_name.clone(), run.bounds))))
        })
        .await?;
    if let Some((name, b)) = ran {
        tracing::info!(action = %name, min = b.min_capacity, max = b.max_capacity, "scheduled action ran");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use estiba_api::application_autoscaling::{ScalableTargetAction, ScheduledAction as WireAction};
    use estiba_store::Op;
    use serde_json::json;

    use super::*;
    use crate::scaling::tests::{activities, call, desired, server_with_service};

    #[tokio::test]
    async fn a_due_action_runs_once_and_moves_the_desired_count() {
        let s = server_with_service().await;
        let scope = Scope::new("123456789012", "us-east-1");
        let rid = "service/c/web";
        let key = docs::scheduled_key(&scope, rid, "every-minute");
        let action = WireAction {
            creation_time: now() - 90.0,
            resource_id: rid.into(),
            schedule: "rate(1 minute)".into(),
            scheduled_action_name: "every-minute".into(),
            scalable_target_action: Some(ScalableTargetAction { min_capacity: Some(3), max_capacity: Some(5) }),
            ..Default::default()
        };
        let doc = ScheduledDoc { action, last_run: None };
        assert!(s.commit(Txn::new().then(Op::put(key.clone(), serde_json::to_vec(&doc).unwrap()))).await.unwrap());
        let wake = ScheduledScaling.pass(&s).await.unwrap();
        assert!(matches!(wake, Wake::ChangeOrAt(_)));
        assert_eq!(desired(&s).await, 3);
        let acts = activities(&s, false).await;
        assert_eq!(acts.len(), 2, "{acts:#?}");
        assert_eq!(acts[0]["Description"], "Setting desired count to 3.");
        assert_eq!(acts[1]["Description"], "Setting min capacity to 3 and max capacity to 5");
        let targets = call(
            &s,
            "application-autoscaling",
            "DescribeScalableTargets",
            json!({"ServiceNamespace": "ecs", "ResourceIds": [rid]}),
        )
        .await;
        assert_eq!(targets["ScalableTargets"][0]["MinCapacity"], 3);
        // Not due again for a minute.
        ScheduledScaling.pass(&s).await.unwrap();
        assert_eq!(activities(&s, false).await.len(), 2);

        // Suspended: a due run is skipped (and not kept for later).
        call(
            &s,
            "application-autoscaling",
            "RegisterScalableTarget",
            json!({"ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount", "ResourceId": rid,
                   "MinCapacity": 1, "SuspendedState": {"ScheduledScalingSuspended": true}}),
        )
        .await;
        let mut doc = doc;
        doc.last_run = Some(now() - 120.0);
        assert!(s.commit(Txn::new().then(Op::put(key.clone(), serde_json::to_vec(&doc).unwrap()))).await.unwrap());
        ScheduledScaling.pass(&s).await.unwrap();
        assert_eq!(activities(&s, false).await.len(), 2);
        let st = s.view.read();
        let left = st.doc::<ScheduledDoc>(scheduled_table(), &key).unwrap();
        assert!(left.value.last_run.unwrap() > now() - 10.0, "the skipped run counts as run");
    }
}
