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

use estiba_api::logs::ErrorCode;

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

impl LogGroupDoc {
    /// A new group of class `STANDARD` with nothing set (CreateLogGroup's defaults).
    pub fn new(id: String, name: &str, creation_time: i64) -> LogGroupDoc {
        LogGroupDoc {
            id,
            name: name.to_owned(),
            creation_time,
            log_group_class: "STANDARD".into(),
            ..Default::default()
        }
    }
}

/// CreateLogGroup's rule for a name (the model's length and pattern), with the message AWS's
/// validation gives.
pub fn check_group_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/#".contains(&b));
    if ok {
        return Ok(());
    }
    Err(format!(
        "1 validation error detected: Value '{name}' at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+"
    ))
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

// ---------------------------------------------------------------------------------------------
// AWS's rules for the Logs API, as pure functions.

/// A Logs API error: the model's exception and AWS's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LogsError {
    pub code: ErrorCode,
    pub message: String,
}

impl LogsError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> LogsError {
        LogsError { code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> LogsError {
        LogsError::new(ErrorCode::InvalidParameterException, message)
    }

    pub fn group_not_found() -> LogsError {
        LogsError::new(ErrorCode::ResourceNotFoundException, "The specified log group does not exist.")
    }

    pub fn stream_not_found() -> LogsError {
        LogsError::new(ErrorCode::ResourceNotFoundException, "The specified log stream does not exist.")
    }

    pub fn group_exists() -> LogsError {
        LogsError::new(ErrorCode::ResourceAlreadyExistsException, "The specified log group already exists")
    }

    pub fn stream_exists() -> LogsError {
        LogsError::new(ErrorCode::ResourceAlreadyExistsException, "The specified log stream already exists")
    }

    pub fn bad_token() -> LogsError {
        LogsError::invalid("The specified nextToken is invalid.")
    }
}

impl From<LogsError> for estiba_api::ApiError {
    fn from(e: LogsError) -> Self {
        estiba_api::ApiError::new(e.code, e.message)
    }
}

pub type LogsResult<T> = std::result::Result<T, LogsError>;

/// The retention periods PutRetentionPolicy accepts, in days.
pub const RETENTION_DAYS: [i32; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/// PutRetentionPolicy's check, with AWS's validation message.
pub fn check_retention(days: i32) -> LogsResult<()> {
    if RETENTION_DAYS.contains(&days) {
        return Ok(());
    }
    let set: Vec<String> = RETENTION_DAYS.iter().map(|d| d.to_string()).collect();
    Err(LogsError::invalid(format!(
        "1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: \
         Member must satisfy enum value set: [{}]",
        set.join(", ")
    )))
}

const DAY_MS: i64 = 86_400_000;

/// Events older than this instant (ms) fall out of a group with `retention_in_days`.
pub fn retention_cutoff(now_ms: i64, retention_in_days: i32) -> i64 {
    now_ms - i64::from(retention_in_days) * DAY_MS
}

/// The group a `logGroupIdentifier` names: a name, or the group's ARN (with or without the
/// trailing `:*`) in the caller's account and region.
pub fn group_name_of<'a>(scope: &Scope, identifier: &'a str) -> LogsResult<&'a str> {
    let Some(rest) = identifier.strip_prefix("arn:") else {
        return Ok(identifier);
    };
    // aws:logs:<region>:<account>:log-group:<name>[:*]
    let mut parts = rest.splitn(6, ':');
    let (partition, service, region, account, kind, name) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next());
    match (partition, service, region, account, kind, name) {
        (Some(_), Some("logs"), Some(region), Some(account), Some("log-group"), Some(name)) if !name.is_empty() => {
            if region != scope.region || account != scope.account {
                return Err(LogsError::group_not_found());
            }
            Ok(name.strip_suffix(":*").unwrap_or(name))
        }
        _ => Err(LogsError::invalid(format!("Invalid ARN format: {identifier}"))),
    }
}

/// The one group a call names with `logGroupName` or `logGroupIdentifier` (exactly one).
pub fn one_group<'a>(scope: &Scope, name: Option<&'a str>, identifier: Option<&'a str>) -> LogsResult<&'a str> {
    match (name, identifier) {
        (Some(n), None) => Ok(n),
        (None, Some(id)) => group_name_of(scope, id),
        (Some(_), Some(_)) => {
            Err(LogsError::invalid("LogGroup name and LogGroup identifier are mutually exclusive parameters."))
        }
        (None, None) => Err(LogsError::invalid("Should provide either name or identifier of the log group.")),
    }
}

/// DescribeLogGroups' `logGroupNamePattern`: a case-sensitive substring of the name.
pub fn name_matches_pattern(name: &str, pattern: &str) -> bool {
    name.contains(pattern)
}

/// PutLogEvents' limits.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// Bytes counted for each event beside its message (PutLogEvents' batch size).
pub const EVENT_OVERHEAD_BYTES: usize = 26;
pub const MAX_BATCH_SPAN_MS: i64 = DAY_MS;
/// Events older than this are rejected (`tooOldLogEventEndIndex`).
pub const MAX_EVENT_AGE_MS: i64 = 14 * DAY_MS;
/// Events further ahead than this are rejected (`tooNewLogEventStartIndex`).
pub const MAX_EVENT_AHEAD_MS: i64 = 2 * 3_600_000;

/// What PutLogEvents keeps of a valid batch: the events in `accepted` (a range of indices),
/// and the indices it rejects, as `rejectedLogEventsInfo` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchVerdict {
    pub accepted: std::ops::Range<usize>,
    /// The last event older than 14 days.
    pub too_old_end: Option<usize>,
    /// The last event older than the group's retention.
    pub expired_end: Option<usize>,
    /// The first event more than 2 hours ahead.
    pub too_new_start: Option<usize>,
}

impl BatchVerdict {
    pub fn rejected_any(&self) -> bool {
        self.too_old_end.is_some() || self.expired_end.is_some() || self.too_new_start.is_some()
    }
}

/// PutLogEvents' checks on a batch of `(timestamp, message bytes)`: the size (26 bytes per
/// event counted), chronological order and the 24 hour span fail the call; events too old
/// (14 days, or the group's retention) or too new (2 hours ahead) are rejected, the rest kept.
pub fn check_batch(events: &[(i64, usize)], now_ms: i64, retention_in_days: Option<i32>) -> LogsResult<BatchVerdict> {
    let bytes: usize = events.iter().map(|(_, len)| len + EVENT_OVERHEAD_BYTES).sum();
    if bytes > MAX_BATCH_BYTES {
        return Err(LogsError::invalid(format!("Upload too large: {bytes} bytes exceeds limit of {MAX_BATCH_BYTES}")));
    }
    if events.windows(2).any(|w| w[1].0 < w[0].0) {
        return Err(LogsError::invalid("Log events in a single PutLogEvents request must be in chronological order."));
    }
    if let (Some(first), Some(last)) = (events.first(), events.last()) {
        if last.0 - first.0 > MAX_BATCH_SPAN_MS {
            return Err(LogsError::invalid(
                "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
            ));
        }
    }
    let too_old = now_ms - MAX_EVENT_AGE_MS;
    let expired = retention_in_days.map(|d| retention_cutoff(now_ms, d));
    let too_new = now_ms + MAX_EVENT_AHEAD_MS;
    // Sorted by time: the too old and expired events lead, the too new ones trail.
    let old_n = events.partition_point(|(t, _)| *t < too_old);
    let expired_n = expired.map_or(0, |cut| events.partition_point(|(t, _)| *t < cut));
    let new_from = events.partition_point(|(t, _)| *t <= too_new);
    let start = old_n.max(expired_n).min(new_from);
    Ok(BatchVerdict {
        accepted: start..new_from,
        too_old_end: old_n.checked_sub(1),
        expired_end: expired_n.checked_sub(1),
        too_new_start: (new_from < events.len()).then_some(new_from),
    })
}

/// A 56-digit token, as AWS's look.
fn digits56(hi: u64, lo: u64) -> String {
    format!("{hi:036}{lo:020}")
}

/// PutLogEvents' `nextSequenceToken` (AWS no longer asks for it back): the stream's next
/// sequence number.
pub fn sequence_token(next_seq: u64) -> String {
    digits56(0, next_seq)
}

/// Where GetLogEvents continues: `f/<digits>` reads on towards newer events, `b/<digits>`
/// towards older ones, from the position the digits hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamToken {
    Forward(u64),
    Backward(u64),
}

impl StreamToken {
    pub fn format(self) -> String {
        match self {
            StreamToken::Forward(p) => format!("f/{}", digits56(0, p)),
            StreamToken::Backward(p) => format!("b/{}", digits56(0, p)),
        }
    }

    pub fn parse(token: &str) -> LogsResult<StreamToken> {
        let (dir, digits) = token.split_at_checked(2).ok_or_else(LogsError::bad_token)?;
        if digits.is_empty() || digits.len() > 56 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LogsError::bad_token());
        }
        let pos: u64 = digits.parse().map_err(|_| LogsError::bad_token())?;
        match dir {
            "f/" => Ok(StreamToken::Forward(pos)),
            "b/" => Ok(StreamToken::Backward(pos)),
            _ => Err(LogsError::bad_token()),
        }
    }
}

/// FNV-1a, for stable identifiers (not for security).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A FilterLogEvents `eventId`: 56 digits, the same for an event on every call (`aws logs
/// tail --follow` drops events whose id it has printed).
pub fn event_id(timestamp: i64, stream: &str, seq: u64) -> String {
    format!("{:020}{:016}{seq:020}", timestamp.max(0), fnv(stream) % 10_000_000_000_000_000)
}

/// Where FilterLogEvents continues: after this event of the scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterToken {
    #[serde(rename = "t")]
    pub timestamp: i64,
    #[serde(rename = "s")]
    pub stream: String,
    #[serde(rename = "q")]
    pub seq: u64,
}

impl FilterToken {
    pub fn encode(&self) -> String {
        use base64::Engine;
        let json = serde_json::to_vec(self).expect("serializes");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(token: &str) -> LogsResult<FilterToken> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(LogsError::bad_token)
    }
}

/// At most this many tags on a log group.
pub const MAX_TAGS: usize = 50;

/// Tags added to a group's: more than [`MAX_TAGS`] in all is `TooManyTagsException`.
pub fn merge_tags(current: &mut BTreeMap<String, String>, new: &BTreeMap<String, String>, arn: &str) -> LogsResult<()> {
    let mut merged = current.clone();
    merged.extend(new.iter().map(|(k, v)| (k.clone(), v.clone())));
    if merged.len() > MAX_TAGS {
        return Err(LogsError::new(
            ErrorCode::TooManyTagsException,
            format!("A resource can have no more than {MAX_TAGS} tags: {arn}"),
        ));
    }
    *current = merged;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_follow_create_log_group() {
        check_group_name("/ecs/web-app_1.#x").unwrap();
        assert!(check_group_name("bad name").unwrap_err().contains("regular expression pattern"));
        assert!(check_group_name("").is_err());
        assert!(check_group_name(&"a".repeat(513)).is_err());
    }

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

    #[test]
    fn retention_values() {
        assert!(check_retention(1).is_ok());
        assert!(check_retention(3653).is_ok());
        let e = check_retention(2).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParameterException);
        assert!(e.message.contains("Value '2' at 'retentionInDays'"), "{}", e.message);
        assert!(e.message.ends_with(
            "[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]"
        ));
    }

    #[test]
    fn identifiers() {
        let s = Scope::new("000000000000", "us-east-1");
        assert_eq!(group_name_of(&s, "/ecs/web").unwrap(), "/ecs/web");
        assert_eq!(group_name_of(&s, &group_arn(&s, "/ecs/web")).unwrap(), "/ecs/web");
        assert_eq!(group_name_of(&s, &group_arn_wildcard(&s, "g")).unwrap(), "g");
        let other = Scope::new("111111111111", "us-east-1");
        assert_eq!(group_name_of(&s, &group_arn(&other, "g")).unwrap_err().code, ErrorCode::ResourceNotFoundException);
        assert_eq!(group_name_of(&s, "arn:aws:s3:::bucket").unwrap_err().code, ErrorCode::InvalidParameterException);
        assert!(one_group(&s, Some("a"), Some("b")).is_err());
        assert_eq!(one_group(&s, None, Some("b")).unwrap(), "b");
    }

    #[test]
    fn batches() {
        let now = 1_000 * DAY_MS;
        let ok = check_batch(&[(now - 1000, 5), (now, 5)], now, None).unwrap();
        assert_eq!(ok.accepted, 0..2);
        assert!(!ok.rejected_any());
        let e = check_batch(&[(now, 5), (now - 1, 5)], now, None).unwrap_err();
        assert_eq!(e.message, "Log events in a single PutLogEvents request must be in chronological order.");
        assert!(check_batch(&[(now - DAY_MS - 1, 1), (now, 1)], now, None).unwrap_err().message.contains("24 hours"));
        let big = vec![(now, MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES)];
        assert!(check_batch(&big, now, None).is_ok());
        let too_big = vec![(now, MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES + 1)];
        assert!(check_batch(&too_big, now, None).unwrap_err().message.starts_with("Upload too large: 1048577 bytes"));
        // Too old (15 days), then fine; all within 24 hours of each other would fail, so use
        // separate batches for the edges.
        let v = check_batch(&[(now - 15 * DAY_MS, 1), (now - 15 * DAY_MS + 10, 1)], now, None).unwrap();
        assert_eq!((v.accepted.clone(), v.too_old_end), (2..2, Some(1)));
        let v = check_batch(&[(now + 1, 1), (now + 3 * 3_600_000, 1)], now, None).unwrap();
        assert_eq!((v.accepted.clone(), v.too_new_start), (0..1, Some(1)));
        let v = check_batch(&[(now - DAY_MS - 1000, 1), (now - DAY_MS + 1000, 1)], now, Some(1)).unwrap();
        assert_eq!((v.accepted.clone(), v.expired_end, v.too_old_end), (1..2, Some(0), None));
    }

    #[test]
    fn tokens() {
        let t = StreamToken::Forward(42).format();
        assert_eq!(t.len(), 58);
        assert!(t.starts_with("f/000"));
        assert_eq!(StreamToken::parse(&t).unwrap(), StreamToken::Forward(42));
        assert_eq!(StreamToken::parse(&StreamToken::Backward(7).format()).unwrap(), StreamToken::Backward(7));
        for bad in ["", "f/", "x/12", "f/1a", "f12"] {
            assert_eq!(StreamToken::parse(bad).unwrap_err().message, "The specified nextToken is invalid.");
        }
        assert_eq!(sequence_token(3).len(), 56);
        let id = event_id(1_700_000_000_000, "s", 9);
        assert_eq!(id.len(), 56);
        assert_eq!(id, event_id(1_700_000_000_000, "s", 9));
        assert_ne!(id, event_id(1_700_000_000_000, "t", 9));
        let f = FilterToken { timestamp: 5, stream: "a/b".into(), seq: 3 };
        assert_eq!(FilterToken::decode(&f.encode()).unwrap(), f);
        assert!(FilterToken::decode("nope!").is_err());
    }

    #[test]
    fn tags_limit() {
        let mut cur: BTreeMap<String, String> = (0..49).map(|i| (format!("k{i}"), "v".into())).collect();
        merge_tags(&mut cur, &BTreeMap::from([("k0".into(), "w".into()), ("x".into(), "y".into())]), "arn").unwrap();
        assert_eq!(cur.len(), 50);
        let e = merge_tags(&mut cur, &BTreeMap::from([("z".into(), "z".into())]), "arn").unwrap_err();
        assert_eq!(e.code, ErrorCode::TooManyTagsException);
    }
}
