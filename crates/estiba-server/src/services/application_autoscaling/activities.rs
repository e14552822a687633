//! Scaling activities: DescribeScalingActivities, newest first, the not-scaled ones only
//! with IncludeNotScaledActivities.

use bytes::Bytes;
use estiba_api::application_autoscaling::*;
use estiba_core::autoscaling::docs::{self, ActivityLog, ActivityRecord};

use super::{activities_table, ecs_matches, limit, page, Result};
use crate::services::{json, Call};
use crate::Server;

/// The paging key: newest first; in one instant, the later added first.
fn sort_key(r: &(String, ActivityRecord)) -> String {
    format!("{:020.6}/{:020}/{}", r.1.start, r.1.seq, r.1.id)
}

pub async fn describe_scaling_activities(
    s: &Server,
    cx: &Call,
    req: DescribeScalingActivitiesRequest,
) -> Result<Bytes> {
    let n = limit(req.max_results, 50, 50)?;
    if !ecs_matches(req.service_namespace, req.scalable_dimension) {
        return Ok(json(&DescribeScalingActivitiesResponse { scaling_activities: Some(vec![]), next_token: None }));
    }
    let include_not_scaled = req.include_not_scaled_activities.unwrap_or(false);
    let mut all: Vec<(String, ActivityRecord)> = {
        let st = s.view.read();
        let logs: Vec<&ActivityLog> = match &req.resource_id {
            Some(r) => st
                .doc::<ActivityLog>(activities_table(), &docs::activities_key(&cx.scope, r))
                .map(|d| &d.value)
                .into_iter()
                .collect(),
            None => st
                .docs::<ActivityLog>(activities_table(), &docs::kind_prefix(&cx.scope, docs::ACTIVITIES))
                .map(|d| &d.value)
                .collect(),
        };
        logs.iter()
            .flat_map(|log| log.items.iter().map(|r| (log.resource_id.clone(), r.clone())))
            .filter(|(_, r)| include_not_scaled || r.activity.not_scaled_reasons.is_empty())
            .collect()
    };
    all.sort_by_key(|r| std::cmp::Reverse(sort_key(r)));
    let p = page(all, sort_key, req.next_token.as_deref(), n, true)?;
    let items = p.items.iter().map(|(rid, r)| r.activity.to_wire(&r.id, rid, r.start, r.end)).collect();
    Ok(json(&DescribeScalingActivitiesResponse { scaling_activities: Some(items), next_token: p.next_token }))
}
