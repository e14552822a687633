//! CloudWatch Logs: its key layout, identifiers and ARNs. Log groups (and their metric
//! filters) are control-plane documents in the versioned store, few and rarely written; log
//! streams and their events live in the log store (`estiba-logstore`), keyed by the group's
//! [`LogGroupDoc::id`], never in the versioned store.
//!
//! Store layout under `logs/<account>/<region>/`:
//!
//! | key | value |
//! |---|---|
//! | `groups/<name>` | [`LogGroupDoc`] |
//!
//! A group's `id` is random and new for every creation, so a group deleted and created again
//! under the same name never sees the old group's streams, even when the log store's data of
//! the old one has not been removed yet (a crash between the two deletions): housekeeping
//! removes log-store groups whose id no document names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Scope;

pub const PREFIX: &str = "logs";
pub const GROUPS: &str = "groups";

/// `logs/<account>/<region>/groups/<name>`.
pub fn group_key(scope: &Scope, name: &str) -> String {
    format!("{}{name}", groups_prefix(scope))
}

/// `logs/<account>/<region>/groups/`: every group of a scope, ordered by name.
pub fn groups_prefix(scope: &Scope) -> String {
    format!("{PREFIX}/{}/{}/{GROUPS}/", scope.account, scope.region)
}

/// `arn:aws:logs:<region>:<account>:log-group:<name>` (DescribeLogGroups' `logGroupArn`).
pub fn group_arn(scope: &Scope, name: &str) -> String {
    format!("arn:aws:logs:{}:{}:log-group:{name}", scope.region, scope.account)
}

/// The same ARN with `:*` appended (DescribeLogGroups' `arn`, and IAM's form).
pub fn group_arn_wildcard(scope: &Scope, name: &str) -> String {
    format!("{}:*", group_arn(scope, name))
}

/// `arn:aws:logs:<region>:<account>:log-group:<group>:log-stream:<stream>`.
pub fn stream_arn(scope: &Scope, group: &str, stream: &str) -> String {
    format!("{}:log-stream:{stream}", group_arn(scope, group))
}

/// A log group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroupDoc {
    /// The log store's name for this group's data (a UUID, new for every creation).
    pub id: String,
    pub name: String,
    /// Milliseconds since the epoch.
    pub creation_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_in_days: Option<i32>,
    /// `STANDARD` or `INFREQUENT_ACCESS` (`DELIVERY` where AWS allows it).
    pub log_group_class: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub deletion_protection: bool,
    /// Metric filters by name.
    #[serde(default)]
    pub metric_filters: BTreeMap<String, MetricFilterDoc>,
}

/// A metric filter (PutMetricFilter); the metrics issue turns matches into datapoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricFilterDoc {
    pub filter_name: String,
    pub filter_pattern: String,
    pub creation_time: i64,
    /// The `metricTransformations` member as the API took it (JSON of the wire shape).
    pub metric_transformations: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_on_transformed_logs: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_arns() {
        let s = Scope::new("000000000000", "us-east-1");
        assert_eq!(group_key(&s, "/ecs/web"), "logs/000000000000/us-east-1/groups//ecs/web");
        assert!(group_key(&s, "/ecs/web").starts_with(&groups_prefix(&s)));
        assert_eq!(group_arn(&s, "/ecs/web"), "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/web");
        assert_eq!(group_arn_wildcard(&s, "g"), "arn:aws:logs:us-east-1:000000000000:log-group:g:*");
        assert_eq!(
            stream_arn(&s, "g", "ecs/web/1"),
            "arn:aws:logs:us-east-1:000000000000:log-group:g:log-stream:ecs/web/1"
        );
    }
}
