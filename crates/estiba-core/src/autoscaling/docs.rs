//! Application Auto Scaling's documents in the versioned store, and their keys: scalable
//! targets, scaling policies (with what their cooldowns remember), scheduled actions (with
//! their last run) and each target's scaling activities (bounded to [`MAX_ACTIVITIES`]).
//!
//! Keys: `autoscaling/<account>/<region>/<kind>/<resource-id>[/<name>]`, `kind` one of
//! [`TARGETS`], [`POLICIES`], [`SCHEDULED`], [`ACTIVITIES`]. A resource id is
//! `service/<cluster>/<service>` (no `/` in cluster or service names), so the prefix
//! `.../<kind>/<resource-id>/` holds exactly one target's policies or actions.
//!
//! May not: read a clock or make ids (the caller passes them).

use std::collections::BTreeMap;

use estiba_api::application_autoscaling::{ScalingPolicy, ScheduledAction};
use serde::{Deserialize, Serialize};

use super::{Activity, Bounds, EcsService, PolicyMemory};
use crate::{Now, Scope};

pub const PREFIX: &str = "autoscaling";
pub const TARGETS: &str = "targets";
pub const POLICIES: &str = "policies";
pub const SCHEDULED: &str = "scheduled";
pub const ACTIVITIES: &str = "activities";

/// The scaling activities kept per scalable target (the newest).
pub const MAX_ACTIVITIES: usize = 100;

/// How often (seconds) a repeated not-scaled activity's times are refreshed in the log.
pub const REFRESH_REPEATS_AFTER: f64 = 300.0;

/// `autoscaling/<account>/<region>/<kind>/`.
pub fn kind_prefix(scope: &Scope, kind: &str) -> String {
    format!("{PREFIX}/{}/{}/{kind}/", scope.account, scope.region)
}

pub fn target_key(scope: &Scope, resource_id: &str) -> String {
    format!("{}{resource_id}", kind_prefix(scope, TARGETS))
}

/// The prefix of one target's policies (`resource_id` given) or of all of them.
pub fn policies_prefix(scope: &Scope, resource_id: Option<&str>) -> String {
    match resource_id {
        Some(r) => format!("{}{r}/", kind_prefix(scope, POLICIES)),
        None => kind_prefix(scope, POLICIES),
    }
}

pub fn policy_key(scope: &Scope, resource_id: &str, name: &str) -> String {
    format!("{}{name}", policies_prefix(scope, Some(resource_id)))
}

/// The prefix of one target's scheduled actions (`resource_id` given) or of all of them.
pub fn scheduled_prefix(scope: &Scope, resource_id: Option<&str>) -> String {
    match resource_id {
        Some(r) => format!("{}{r}/", kind_prefix(scope, SCHEDULED)),
        None => kind_prefix(scope, SCHEDULED),
    }
}

pub fn scheduled_key(scope: &Scope, resource_id: &str, name: &str) -> String {
    format!("{}{name}", scheduled_prefix(scope, Some(resource_id)))
}

pub fn activities_key(scope: &Scope, resource_id: &str) -> String {
    format!("{}{resource_id}", kind_prefix(scope, ACTIVITIES))
}

/// A registered scalable target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetDoc {
    pub service: EcsService,
    /// `arn:aws:application-autoscaling:...:scalable-target/<id>`.
    pub arn: String,
    pub creation_time: Now,
    pub bounds: Bounds,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// A scaling policy: as DescribeScalingPolicies shows it, and what its cooldowns remember
/// (times in AWS time, seconds: `Server::metric_clock`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDoc {
    pub policy: ScalingPolicy,
    #[serde(default)]
    pub memory: PolicyMemory,
}

/// A scheduled action: as DescribeScheduledActions shows it, and when it last ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledDoc {
    pub action: ScheduledAction,
    /// The wall-clock time of its last run; runs due after it are still to come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Now>,
}

impl ScheduledDoc {
    /// When the action runs next after its last run (or its creation), `None` when never.
    pub fn next_run(&self) -> Option<Now> {
        let a = &self.action;
        let schedule = super::Schedule::parse(&a.schedule).ok()?;
        let zone = super::Zone::parse(a.timezone.as_deref()).ok()?;
        let after = self.last_run.unwrap_or(a.creation_time);
        schedule.next_after(zone, after, a.start_time, a.end_time, a.creation_time)
    }
}

/// One scaling activity as kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityRecord {
    pub id: String,
    /// The log's count of activities when this one was added: orders activities of one
    /// instant.
    #[serde(default)]
    pub seq: u64,
    pub activity: Activity,
    pub start: Now,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Now>,
}

/// A target's scaling activities, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityLog {
    pub resource_id: String,
    pub items: Vec<ActivityRecord>,
    /// How many activities were ever added (the next one's `seq`).
    #[serde(default)]
    pub added: u64,
}

impl ActivityLog {
    pub fn new(resource_id: &str) -> ActivityLog {
        ActivityLog { resource_id: resource_id.to_string(), items: Vec::new(), added: 0 }
    }

    /// Whether adding `activity` at `now` would only refresh the times of the newest record
    /// (a not-scaled activity that repeats it) that were refreshed less than
    /// [`REFRESH_REPEATS_AFTER`] seconds ago: then the log need not be written at all, so an
    /// alarm that stays in ALARM at max capacity does not rewrite the log every period.
    pub fn is_fresh_repeat(&self, activity: &Activity, now: Now) -> bool {
        !activity.not_scaled_reasons.is_empty()
            && self.items.first().is_some_and(|first| {
                first.activity == *activity && now - first.end.unwrap_or(first.start) < REFRESH_REPEATS_AFTER
            })
    }

    /// Adds `record` as the newest, keeping at most [`MAX_ACTIVITIES`]. A not-scaled
    /// activity that repeats the newest one (same cause and reasons: an alarm that stays in
    /// ALARM) refreshes its times instead of adding another.
    pub fn push(&mut self, mut record: ActivityRecord) {
        if !record.activity.not_scaled_reasons.is_empty() {
            if let Some(first) = self.items.first_mut() {
                if first.activity == record.activity {
                    first.start = record.start;
                    first.end = record.end;
                    return;
                }
            }
        }
        record.seq = self.added;
        self.added += 1;
        self.items.insert(0, record);
        self.items.truncate(MAX_ACTIVITIES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaling::NotScaled;

    fn rec(id: usize, activity: Activity) -> ActivityRecord {
        ActivityRecord { id: id.to_string(), seq: 0, activity, start: id as f64, end: Some(id as f64) }
    }

    #[test]
    fn keys_keep_targets_apart() {
        let s = Scope::new("123456789012", "us-east-1");
        assert_eq!(target_key(&s, "service/c/web"), "autoscaling/123456789012/us-east-1/targets/service/c/web");
        let p = policy_key(&s, "service/c/web2", "cpu");
        assert!(!p.starts_with(&policies_prefix(&s, Some("service/c/web"))));
        assert!(p.starts_with(&policies_prefix(&s, Some("service/c/web2"))));
        assert!(p.starts_with(&policies_prefix(&s, None)));
    }

    #[test]
    fn log_is_bounded_and_newest_first() {
        let mut log = ActivityLog::new("service/c/s");
        for i in 0..(MAX_ACTIVITIES + 5) {
            log.push(rec(i, Activity::desired_count_set(i as i32, "x")));
        }
        assert_eq!(log.items.len(), MAX_ACTIVITIES);
        assert_eq!(log.items[0].id, (MAX_ACTIVITIES + 4).to_string());
        assert_eq!(log.items[0].seq, (MAX_ACTIVITIES + 4) as u64);
    }

    #[test]
    fn repeated_not_scaled_activity_is_refreshed_not_added() {
        let mut log = ActivityLog::new("service/c/s");
        let ns = || Activity::not_scaled("cause", NotScaled::AlreadyAtMaxCapacity { max_capacity: 3 });
        log.push(rec(1, ns()));
        log.push(rec(2, ns()));
        assert_eq!(log.items.len(), 1);
        assert_eq!(log.items[0].start, 2.0);
        log.push(rec(3, Activity::desired_count_set(2, "c")));
        log.push(rec(4, ns()));
        assert_eq!(log.items.len(), 3);
        // Within the refresh interval a repeat needs no write; after it, its times refresh.
        assert!(log.is_fresh_repeat(&ns(), 4.0 + REFRESH_REPEATS_AFTER - 1.0));
        assert!(!log.is_fresh_repeat(&ns(), 4.0 + REFRESH_REPEATS_AFTER));
        assert!(!log.is_fresh_repeat(&Activity::desired_count_set(2, "c"), 5.0));
        let other = Activity::not_scaled("cause", NotScaled::AlreadyAtMinCapacity { min_capacity: 1 });
        assert!(!log.is_fresh_repeat(&other, 5.0));
    }

    #[test]
    fn scheduled_at_runs_once() {
        let action = ScheduledAction {
            creation_time: 1_000.0,
            schedule: "at(1970-01-01T00:20:00)".into(),
            ..Default::default()
        };
        let mut doc = ScheduledDoc { action, last_run: None };
        assert_eq!(doc.next_run(), Some(1_200.0));
        doc.last_run = Some(1_200.5);
        assert_eq!(doc.next_run(), None);
    }
}
