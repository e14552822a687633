//! CloudWatch metric alarms: what PutMetricAlarm accepts, and how an alarm's next state is
//! decided from the datapoints of its most recent periods.
//!
//! Follows the CloudWatch User Guide, "Using Amazon CloudWatch alarms"
//! (`AlarmThatSendsEmail`): "Evaluating an alarm", "Configuring how CloudWatch alarms treat
//! missing data", "How alarm state is evaluated when data is missing" (its two tables are unit
//! tests below), "Avoiding premature transitions to alarm state", "High-resolution alarms" and
//! "Common features of CloudWatch alarms"; and the CloudWatch API Reference, `PutMetricAlarm`.
//! The state reason texts and the reason data JSON follow what CloudWatch writes in
//! `StateReason` / `StateReasonData` (seen in alarm history and state-change events).
//!
//! The caller (the alarm controller) gathers one value per period of the *evaluation range*
//! ([`evaluation_range`], [`range_starts`]), oldest first, `None` where the period has no
//! data, and calls [`evaluate`] with the alarm's [`AlarmRule`] and its current state.
//!
//! What is not modelled: anomaly-detection bands (the `LessThanLowerOrGreaterThanUpperThreshold`
//! family of operators is refused), `EvaluateLowSampleCountPercentile`, Metrics Insights
//! queries, and the `AWS/DynamoDB` namespace's always-ignore rule.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use estiba_api::cloudwatch::{
    AlarmHistoryItem, AlarmType, ComparisonOperator, ErrorCode, HistoryItemType, MetricAlarm, PutMetricAlarmInput,
    StateValue,
};
use estiba_api::error::Common;
use estiba_api::ApiError;
use serde::{Deserialize, Serialize};

use crate::{Now, Scope};

// ---------------------------------------------------------------------------------------
// Documents

pub const PREFIX: &str = "cloudwatch";
pub const ALARMS: &str = "alarms";

/// `cloudwatch/<account>/<region>/alarms/<name>`: an alarm is configuration (and its state),
/// kept in the versioned store; its datapoints are in the metric store.
pub fn alarm_key(scope: &Scope, name: &str) -> String {
    format!("{}{name}", alarms_prefix(scope))
}

/// `cloudwatch/<account>/<region>/alarms/`: every alarm of a scope, ordered by name.
pub fn alarms_prefix(scope: &Scope) -> String {
    format!("{PREFIX}/{}/{}/{ALARMS}/", scope.account, scope.region)
}

/// `arn:aws:cloudwatch:<region>:<account>:alarm:<name>`.
pub fn alarm_arn(scope: &Scope, name: &str) -> String {
    format!("arn:aws:cloudwatch:{}:{}:alarm:{name}", scope.region, scope.account)
}

/// A metric alarm as stored at [`alarm_key`]. Written by PutMetricAlarm and by Application
/// Auto Scaling (the alarms target tracking owns); state changes are written by the server's
/// alarm controller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmDoc {
    /// As DescribeAlarms shows it: configuration, state, reason and timestamps.
    pub alarm: MetricAlarm,
    /// The checked rule evaluation uses ([`validate_put_metric_alarm`]).
    pub rule: AlarmRule,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl AlarmDoc {
    /// A new alarm from PutMetricAlarm's input (already checked into `rule`): state
    /// INSUFFICIENT_DATA with [`INITIAL_REASON`], actions enabled unless the input says no.
    /// Replacing an existing alarm keeps its state (the caller copies `state_*` over).
    pub fn new(scope: &Scope, input: &PutMetricAlarmInput, rule: AlarmRule, now: Now) -> AlarmDoc {
        let t = Some(now);
        let alarm = MetricAlarm {
            alarm_name: Some(input.alarm_name.clone()),
            alarm_arn: Some(alarm_arn(scope, &input.alarm_name)),
            alarm_description: input.alarm_description.clone(),
            alarm_configuration_updated_timestamp: t,
            actions_enabled: Some(input.actions_enabled.unwrap_or(true)),
            ok_actions: Some(input.ok_actions.clone().unwrap_or_default()),
            alarm_actions: Some(input.alarm_actions.clone().unwrap_or_default()),
            insufficient_data_actions: Some(input.insufficient_data_actions.clone().unwrap_or_default()),
            state_value: Some(StateValue::InsufficientData),
            state_reason: Some(INITIAL_REASON.to_owned()),
            state_updated_timestamp: t,
            state_transitioned_timestamp: t,
            metric_name: input.metric_name.clone(),
            namespace: input.namespace.clone(),
            statistic: input.statistic,
            extended_statistic: input.extended_statistic.clone(),
            dimensions: Some(input.dimensions.clone().unwrap_or_default()),
            period: input.period,
            unit: input.unit,
            evaluation_periods: input.evaluation_periods,
            datapoints_to_alarm: input.datapoints_to_alarm,
            threshold: input.threshold,
            comparison_operator: input.comparison_operator,
            treat_missing_data: input.treat_missing_data.clone(),
            evaluate_low_sample_count_percentile: input.evaluate_low_sample_count_percentile.clone(),
            metrics: input.metrics.clone(),
            threshold_metric_id: input.threshold_metric_id.clone(),
            ..Default::default()
        };
        let tags = input.tags.iter().flatten().map(|t| (t.key.clone(), t.value.clone())).collect();
        AlarmDoc { alarm, rule, tags }
    }
}

// ---------------------------------------------------------------------------------------
// History

pub const HISTORY: &str = "history";

/// How many history items are kept per alarm name (the oldest are dropped first).
pub const HISTORY_LIMIT: usize = 100;

/// `cloudwatch/<account>/<region>/history/<name>`: an alarm's history (DescribeAlarmHistory),
/// kept apart from the alarm so that it outlives DeleteAlarms as CloudWatch's does.
pub fn history_key(scope: &Scope, name: &str) -> String {
    format!("{PREFIX}/{}/{}/{HISTORY}/{name}", scope.account, scope.region)
}

/// The history of one alarm name, oldest first, at most [`HISTORY_LIMIT`] items.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryDoc {
    pub items: Vec<AlarmHistoryItem>,
}

impl HistoryDoc {
    /// Appends `item`, dropping the oldest past the limit.
    pub fn push(&mut self, item: AlarmHistoryItem) {
        self.items.push(item);
        if self.items.len() > HISTORY_LIMIT {
            let extra = self.items.len() - HISTORY_LIMIT;
            self.items.drain(..extra);
        }
    }
}

/// `INSUFFICIENT_DATA`, `OK`, `ALARM`.
pub fn state_name(s: StateValue) -> &'static str {
    s.as_str()
}

fn history_item(
    name: &str,
    kind: HistoryItemType,
    summary: String,
    data: serde_json::Value,
    now: Now,
) -> AlarmHistoryItem {
    AlarmHistoryItem {
        alarm_name: Some(name.to_owned()),
        alarm_type: Some(AlarmType::MetricAlarm),
        history_item_type: Some(kind),
        history_summary: Some(summary),
        history_data: Some(data.to_string()),
        timestamp: Some(now),
        ..Default::default()
    }
}

fn state_json(state: StateValue, reason: &str, reason_data: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({ "stateValue": state_name(state), "stateReason": reason });
    if let Some(d) = reason_data.and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()) {
        v["stateReasonData"] = d;
    }
    v
}

/// A `StateUpdate` item: `Alarm updated from OK to ALARM`, with the old and new state in its
/// data as CloudWatch writes them.
pub fn state_update_item(
    name: &str,
    old: (StateValue, &str, Option<&str>),
    new: (StateValue, &str, Option<&str>),
    now: Now,
) -> AlarmHistoryItem {
    let data = serde_json::json!({
        "version": "1.0",
        "oldState": state_json(old.0, old.1, old.2),
        "newState": state_json(new.0, new.1, new.2),
    });
    history_item(
        name,
        HistoryItemType::StateUpdate,
        format!("Alarm updated from {} to {}", state_name(old.0), state_name(new.0)),
        data,
        now,
    )
}

/// What a `ConfigurationUpdate` item records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    Create,
    Update,
    Delete,
}

/// A `ConfigurationUpdate` item: `Alarm "name" created` (updated, deleted), with the alarm's
/// configuration in its data (as DescribeAlarms shows it).
pub fn configuration_item(
    name: &str,
    change: ConfigChange,
    before: Option<&MetricAlarm>,
    after: Option<&MetricAlarm>,
    now: Now,
) -> AlarmHistoryItem {
    let json =
        |a: Option<&MetricAlarm>| a.map_or(serde_json::Value::Null, |a| serde_json::to_value(a).unwrap_or_default());
    let (word, data) = match change {
        ConfigChange::Create => {
            ("created", serde_json::json!({"version": "1.0", "type": "Create", "createdAlarm": json(after)}))
        }
        ConfigChange::Update => (
            "updated",
            serde_json::json!({"version": "1.0", "type": "Update", "originalUpdatedAlarm": json(before), "updatedAlarm": json(after)}),
        ),
        ConfigChange::Delete => {
            ("deleted", serde_json::json!({"version": "1.0", "type": "Delete", "deletedAlarm": json(before)}))
        }
    };
    history_item(name, HistoryItemType::ConfigurationUpdate, format!("Alarm \"{name}\" {word}"), data, now)
}

/// An `Action` item for an action that could not run: estiba has no SNS, so a notification
/// action fails as CloudWatch's does when its topic does not exist.
pub fn failed_action_item(name: &str, action_arn: &str, error: &str, now: Now) -> AlarmHistoryItem {
    let data = serde_json::json!({
        "actionState": "Failed",
        "notificationResource": action_arn,
        "stateUpdateTimestamp": (now * 1000.0).round() as i64,
        "error": error,
    });
    history_item(name, HistoryItemType::Action, format!("Failed to execute action {action_arn}"), data, now)
}

/// An `Action` item for a scaling policy the alarm invoked.
pub fn executed_action_item(name: &str, action_arn: &str, now: Now) -> AlarmHistoryItem {
    let data = serde_json::json!({
        "actionState": "Succeeded",
        "notificationResource": action_arn,
        "stateUpdateTimestamp": (now * 1000.0).round() as i64,
    });
    history_item(name, HistoryItemType::Action, format!("Successfully executed action {action_arn}"), data, now)
}

// ---------------------------------------------------------------------------------------
// Errors

/// The error codes PutMetricAlarm's checks answer with (Query codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmErrorCode {
    /// `ValidationError`: a value the model allows but CloudWatch does not.
    Validation,
    /// `InvalidParameterValue`.
    InvalidParameterValue,
    /// `InvalidParameterCombination`: two parameters that exclude each other.
    InvalidParameterCombination,
    /// `MissingParameter`.
    MissingParameter,
}

/// A refused PutMetricAlarm, with CloudWatch's code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmError {
    pub code: AlarmErrorCode,
    pub message: String,
}

impl AlarmError {
    fn new(code: AlarmErrorCode, message: impl Into<String>) -> Self {
        AlarmError { code, message: message.into() }
    }
    fn validation(message: impl Into<String>) -> Self {
        Self::new(AlarmErrorCode::Validation, message)
    }
    fn missing(parameter: &str) -> Self {
        Self::new(AlarmErrorCode::MissingParameter, format!("The request must contain the parameter {parameter}."))
    }
    fn combination(a: &str, b: &str) -> Self {
        Self::new(
            AlarmErrorCode::InvalidParameterCombination,
            format!("The parameters {a} and {b} are mutually exclusive and you have specified both."),
        )
    }
}

impl std::fmt::Display for AlarmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for AlarmError {}

impl From<AlarmError> for ApiError {
    fn from(e: AlarmError) -> Self {
        match e.code {
            AlarmErrorCode::Validation => ApiError::new(Common::ValidationError, e.message),
            AlarmErrorCode::InvalidParameterValue => {
                ApiError::new(ErrorCode::InvalidParameterValueException, e.message)
            }
            AlarmErrorCode::InvalidParameterCombination => {
                ApiError::new(ErrorCode::InvalidParameterCombinationException, e.message)
            }
            AlarmErrorCode::MissingParameter => ApiError::new(ErrorCode::MissingRequiredParameterException, e.message),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The rule an alarm evaluates

/// How an alarm treats periods without data (`TreatMissingData`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TreatMissingData {
    /// The default: missing points are neither good nor bad; all missing is INSUFFICIENT_DATA.
    #[default]
    Missing,
    /// Missing points count as within the threshold.
    NotBreaching,
    /// Missing points count as breaching.
    Breaching,
    /// The current state is kept when data is missing.
    Ignore,
}

impl TreatMissingData {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "missing" => Self::Missing,
            "notBreaching" => Self::NotBreaching,
            "breaching" => Self::Breaching,
            "ignore" => Self::Ignore,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NotBreaching => "notBreaching",
            Self::Breaching => "breaching",
            Self::Ignore => "ignore",
        }
    }
}

/// What evaluating an alarm needs of its configuration: the checked form of PutMetricAlarm's
/// input ([`validate_put_metric_alarm`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmRule {
    pub threshold: f64,
    /// One of the four static-threshold operators (the anomaly-band ones are refused).
    pub comparison_operator: ComparisonOperator,
    /// N: how many periods are evaluated.
    pub evaluation_periods: u32,
    /// M: how many of them must breach for ALARM. `None` when the alarm did not set it (then
    /// M = N, and the reason text takes CloudWatch's short form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapoints_to_alarm: Option<u32>,
    #[serde(default)]
    pub treat_missing_data: TreatMissingData,
    /// Seconds: 10, 20, 30 or a multiple of 60. For a metric math alarm, its metrics' period.
    pub period: u32,
    /// `Average`, `p99`, ... as the reason data names it; `None` for metric math alarms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
    /// The alarm's `Unit`, written into the reason data when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl AlarmRule {
    /// M, the datapoints that must breach (DatapointsToAlarm, else EvaluationPeriods).
    pub fn datapoints_to_alarm(&self) -> u32 {
        self.datapoints_to_alarm.unwrap_or(self.evaluation_periods)
    }

    /// Whether a value breaches the threshold.
    pub fn breaches(&self, value: f64) -> bool {
        match self.comparison_operator {
            ComparisonOperator::GreaterThanThreshold => value > self.threshold,
            ComparisonOperator::GreaterThanOrEqualToThreshold => value >= self.threshold,
            ComparisonOperator::LessThanThreshold => value < self.threshold,
            ComparisonOperator::LessThanOrEqualToThreshold => value <= self.threshold,
            // Refused by validation; never breaching if one gets here.
            _ => false,
        }
    }
}

/// The four operators of a static threshold, as the reason text words them.
fn operator_words(op: ComparisonOperator) -> &'static str {
    match op {
        ComparisonOperator::GreaterThanThreshold => "greater than",
        ComparisonOperator::GreaterThanOrEqualToThreshold => "greater than or equal to",
        ComparisonOperator::LessThanThreshold => "less than",
        ComparisonOperator::LessThanOrEqualToThreshold => "less than or equal to",
        _ => "outside the band of",
    }
}

// ---------------------------------------------------------------------------------------
// PutMetricAlarm

/// Seconds in a day and a week: EvaluationPeriods × Period may not pass a day for periods
/// under an hour, nor a week for longer periods.
const DAY: i64 = 86_400;
const WEEK: i64 = 604_800;

/// Whether CloudWatch takes this alarm period: 10, 20 or 30 seconds (high resolution) or a
/// multiple of 60.
pub fn valid_period(period: i64) -> bool {
    matches!(period, 10 | 20 | 30) || (period >= 60 && period % 60 == 0)
}

/// Whether a period is a high-resolution one (under a minute).
pub fn is_high_resolution(period: u32) -> bool {
    period < 60
}

/// `p99`, `p99.9`, `tm90`, `TM(10%:90%)`, ...: the extended statistics CloudWatch names.
pub fn valid_extended_statistic(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    for prefix in ["p", "tm", "wm", "tc", "ts"] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            if let Ok(v) = rest.parse::<f64>() {
                return (0.0..=100.0).contains(&v) && !rest.starts_with('+');
            }
            if prefix != "p" && rest.starts_with('(') && rest.ends_with(')') {
                return true;
            }
        }
    }
    lower == "iqm"
}

/// Checks a PutMetricAlarm input as CloudWatch does and returns the rule evaluation uses.
/// The model's own constraints (lengths, ranges, enum values) are the codec's; this is the rest.
pub fn validate_put_metric_alarm(input: &PutMetricAlarmInput) -> Result<AlarmRule, AlarmError> {
    if input.alarm_name.is_empty() || !input.alarm_name.is_ascii() {
        return Err(AlarmError::validation("Alarm names must contain only ASCII characters."));
    }
    let evaluation_periods = input.evaluation_periods.ok_or_else(|| AlarmError::missing("EvaluationPeriods"))?;
    if evaluation_periods < 1 {
        return Err(AlarmError::validation("EvaluationPeriods must be greater than or equal to 1."));
    }
    let operator = input.comparison_operator.ok_or_else(|| AlarmError::missing("ComparisonOperator"))?;
    if matches!(
        operator,
        ComparisonOperator::LessThanLowerOrGreaterThanUpperThreshold
            | ComparisonOperator::LessThanLowerThreshold
            | ComparisonOperator::GreaterThanUpperThreshold
    ) || input.threshold_metric_id.is_some()
    {
        return Err(AlarmError::new(
            AlarmErrorCode::InvalidParameterValue,
            format!(
                "ComparisonOperator {} compares with an anomaly detection band (ThresholdMetricId), \
                 which estiba does not support.",
                operator.as_str()
            ),
        ));
    }
    let threshold = input.threshold.ok_or_else(|| AlarmError::missing("Threshold"))?;
    let treat_missing_data = match &input.treat_missing_data {
        None => TreatMissingData::Missing,
        Some(s) => TreatMissingData::parse(s).ok_or_else(|| {
            AlarmError::validation(format!(
                "Invalid value {s} for TreatMissingData. Supported values are breaching, notBreaching, ignore and missing."
            ))
        })?,
    };
    if let Some(m) = input.datapoints_to_alarm {
        if m < 1 {
            return Err(AlarmError::validation("DatapointsToAlarm must be greater than or equal to 1."));
        }
        if m > evaluation_periods {
            return Err(AlarmError::validation("DatapointsToAlarm must be less than or equal to EvaluationPeriods"));
        }
    }

    let (period, statistic) = match &input.metrics {
        Some(metrics) => {
            for (given, name) in [
                (input.metric_name.is_some(), "MetricName"),
                (input.namespace.is_some(), "Namespace"),
                (input.statistic.is_some(), "Statistic"),
                (input.extended_statistic.is_some(), "ExtendedStatistic"),
                (input.dimensions.is_some(), "Dimensions"),
                (input.period.is_some(), "Period"),
                (input.unit.is_some(), "Unit"),
            ] {
                if given {
                    return Err(AlarmError::combination(name, "Metrics"));
                }
            }
            (math_period(metrics)?, None)
        }
        None => {
            if input.metric_name.is_none() {
                return Err(AlarmError::missing("MetricName"));
            }
            if input.namespace.is_none() {
                return Err(AlarmError::missing("Namespace"));
            }
            let statistic = match (&input.statistic, &input.extended_statistic) {
                (Some(_), Some(_)) => return Err(AlarmError::combination("Statistic", "ExtendedStatistic")),
                (None, None) => {
                    return Err(AlarmError::missing("Statistic or ExtendedStatistic"));
                }
                (Some(s), None) => s.as_str().to_string(),
                (None, Some(e)) => {
                    if !valid_extended_statistic(e) {
                        return Err(AlarmError::new(
                            AlarmErrorCode::InvalidParameterValue,
                            format!("The value {e} for parameter ExtendedStatistic is not supported."),
                        ));
                    }
                    e.clone()
                }
            };
            (input.period.ok_or_else(|| AlarmError::missing("Period"))?, Some(statistic))
        }
    };
    check_period(period, evaluation_periods)?;
    Ok(AlarmRule {
        threshold,
        comparison_operator: operator,
        evaluation_periods: evaluation_periods as u32,
        datapoints_to_alarm: input.datapoints_to_alarm.map(|m| m as u32),
        treat_missing_data,
        period: period as u32,
        statistic,
        unit: input.unit.map(|u| u.as_str().to_string()),
    })
}

fn check_period(period: i32, evaluation_periods: i32) -> Result<(), AlarmError> {
    let period = i64::from(period);
    if !valid_period(period) {
        return Err(AlarmError::validation("Period must be 10, 20, 30 or a multiple of 60"));
    }
    let total = period * i64::from(evaluation_periods);
    if period < 3600 && total > DAY {
        return Err(AlarmError::validation(
            "Metrics cannot be checked across more than a day (EvaluationPeriods * Period must be <= 86400) \
             for alarms using period < 3600",
        ));
    }
    if total > WEEK {
        return Err(AlarmError::validation(
            "Metrics cannot be checked across more than a week (EvaluationPeriods * Period must be <= 604800)",
        ));
    }
    Ok(())
}

/// A metric math alarm's metrics: exactly one returns data, every metric uses one period.
fn math_period(metrics: &[estiba_api::cloudwatch::MetricDataQuery]) -> Result<i32, AlarmError> {
    if metrics.is_empty() {
        return Err(AlarmError::missing("Metrics"));
    }
    let returning = metrics.iter().filter(|m| m.return_data.unwrap_or(true)).count();
    if returning != 1 {
        return Err(AlarmError::validation("Exactly one element of the metrics list should return data."));
    }
    let mut ids = std::collections::HashSet::new();
    let mut period = None;
    for m in metrics {
        if !ids.insert(m.id.as_str()) {
            return Err(AlarmError::validation(format!("The value {} for parameter Metrics.Id is duplicated.", m.id)));
        }
        match (&m.metric_stat, &m.expression) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(AlarmError::validation(
                    "Exactly one of the parameters MetricStat and Expression must be specified in each element of Metrics.",
                ));
            }
            (Some(stat), None) => {
                if *period.get_or_insert(stat.period) != stat.period {
                    return Err(AlarmError::validation("All metrics in an alarm must use the same period."));
                }
            }
            (None, Some(_)) => {}
        }
    }
    let period = period.or_else(|| metrics.iter().find_map(|m| m.period));
    period.ok_or_else(|| AlarmError::missing("Metrics.MetricStat.Period"))
}

// ---------------------------------------------------------------------------------------
// The evaluation range

/// How many periods CloudWatch fetches to evaluate an alarm of N evaluation periods. AWS
/// documents only its example (N = 3 → 5) and says the number depends on the period and the
/// resolution; estiba takes N + 2 for every alarm.
pub fn evaluation_range(rule: &AlarmRule) -> u32 {
    rule.evaluation_periods + 2
}

/// The start times of the evaluation range's periods at `now`, oldest first. Alarms are
/// evaluated every minute (every period for high-resolution alarms), and the newest period is
/// the last complete one: it ends at the current minute (or period) boundary, so a 5-minute
/// alarm's windows slide by one minute.
pub fn range_starts(rule: &AlarmRule, now: Now) -> Vec<f64> {
    let period = f64::from(rule.period);
    let step = if is_high_resolution(rule.period) { period } else { 60.0 };
    let end = (now / step).floor() * step;
    let n = evaluation_range(rule);
    (0..n).rev().map(|i| end - period * f64::from(i + 1)).collect()
}

/// One period of the evaluation range: its start and, if it had data, the statistic's value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    /// Start of the period, seconds since the epoch.
    pub timestamp: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// How many samples made the value (written into the reason data when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_count: Option<f64>,
}

impl Slot {
    pub fn missing(timestamp: f64) -> Self {
        Slot { timestamp, value: None, sample_count: None }
    }
    pub fn value(timestamp: f64, value: f64) -> Self {
        Slot { timestamp, value: Some(value), sample_count: None }
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation

/// What one evaluation decides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Outcome {
    /// Keep the current state and its reason (TreatMissingData `ignore` with too little data).
    Retain,
    /// The state the alarm is in now, with CloudWatch's reason text and reason data. The
    /// state may equal the current one; the caller records a transition only when it differs.
    Set(StateUpdate),
}

/// A state with its `StateReason` and `StateReasonData` (a JSON document, as a string).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateUpdate {
    pub state: StateValue,
    pub reason: String,
    pub reason_data: String,
}

impl Outcome {
    /// The state decided, `None` for [`Outcome::Retain`].
    pub fn state(&self) -> Option<StateValue> {
        match self {
            Outcome::Retain => None,
            Outcome::Set(u) => Some(u.state),
        }
    }
}

/// The reason an alarm is created with (`INSUFFICIENT_DATA`, before its first evaluation).
pub const INITIAL_REASON: &str = "Unchecked: Initial alarm creation";

/// Decides an alarm's state from its evaluation range (`slots`, oldest first, as many as
/// [`evaluation_range`]; fewer are taken as they come), as "How alarm state is evaluated when
/// data is missing" describes:
///
/// - with at least N real datapoints in the range, the newest N are evaluated and
///   TreatMissingData does not matter;
/// - with none, `missing` → INSUFFICIENT_DATA, `ignore` → keep the state, `breaching` →
///   ALARM, `notBreaching` → OK;
/// - with k (0 < k < N), `breaching` and `notBreaching` fill the N − k missing points; under
///   `missing` and `ignore` the real points are judged alone: at least M breaching → ALARM,
///   any non-breaching → OK, and with only breaching points (fewer than M) `missing` goes to
///   ALARM when the oldest of them is at least M periods old ("Avoiding premature transitions
///   to alarm state") and to INSUFFICIENT_DATA otherwise, while `ignore` keeps the state.
///
/// `now` is the evaluation time, written into the reason data as `queryDate`.
pub fn evaluate(rule: &AlarmRule, slots: &[Slot], now: Now) -> Outcome {
    let n = rule.evaluation_periods as usize;
    let m = rule.datapoints_to_alarm() as usize;
    let real: Vec<(usize, &Slot, f64)> =
        slots.iter().enumerate().filter_map(|(i, s)| s.value.map(|v| (i, s, v))).collect();
    let k = real.len();
    let report = Report { rule, now };

    if k >= n {
        let evaluated: Vec<(&Slot, f64)> = real[k - n..].iter().map(|&(_, s, v)| (s, v)).collect();
        let breaching = evaluated.iter().filter(|(_, v)| rule.breaches(*v)).count();
        let state = if breaching >= m { StateValue::Alarm } else { StateValue::Ok };
        return Outcome::Set(report.crossed(state, &evaluated, 0));
    }
    if k == 0 {
        return match rule.treat_missing_data {
            TreatMissingData::Missing => Outcome::Set(report.insufficient(slots)),
            TreatMissingData::Ignore => Outcome::Retain,
            TreatMissingData::Breaching => Outcome::Set(report.crossed(StateValue::Alarm, &[], n)),
            TreatMissingData::NotBreaching => Outcome::Set(report.crossed(StateValue::Ok, &[], n)),
        };
    }
    let evaluated: Vec<(&Slot, f64)> = real.iter().map(|&(_, s, v)| (s, v)).collect();
    let breaching = evaluated.iter().filter(|(_, v)| rule.breaches(*v)).count();
    let fill = n - k;
    match rule.treat_missing_data {
        TreatMissingData::Breaching | TreatMissingData::NotBreaching => {
            let filled = if rule.treat_missing_data == TreatMissingData::Breaching { fill } else { 0 };
            let state = if breaching + filled >= m { StateValue::Alarm } else { StateValue::Ok };
            Outcome::Set(report.crossed(state, &evaluated, fill))
        }
        TreatMissingData::Missing | TreatMissingData::Ignore => {
            if breaching >= m {
                return Outcome::Set(report.crossed(StateValue::Alarm, &evaluated, 0));
            }
            if breaching < k {
                return Outcome::Set(report.crossed(StateValue::Ok, &evaluated, 0));
            }
            // Only breaching points, fewer than M.
            if rule.treat_missing_data == TreatMissingData::Ignore {
                return Outcome::Retain;
            }
            let oldest_age = slots.len() - real[0].0;
            if oldest_age >= m {
                Outcome::Set(report.crossed(StateValue::Alarm, &evaluated, 0))
            } else {
                Outcome::Set(report.insufficient(slots))
            }
        }
    }
}

/// Whether an evaluation that leaves the alarm in `new` (it was in `previous`) invokes an
/// action of `new`'s list (AlarmActions, OKActions, InsufficientDataActions): every action on
/// a change of state; a scaling policy (`arn:aws:autoscaling:...`) also on every evaluation
/// while the state lasts ("For Auto Scaling actions, the alarm continues to invoke the action
/// for every period that the alarm remains in the new state"); other actions (SNS) not again.
/// [`Outcome::Retain`] leaves the state as it was, so only scaling actions fire.
pub fn invokes_action(previous: StateValue, new: StateValue, action_arn: &str) -> bool {
    previous != new || is_scaling_action(action_arn)
}

/// An Application Auto Scaling or EC2 Auto Scaling policy ARN.
pub fn is_scaling_action(action_arn: &str) -> bool {
    action_arn.starts_with("arn:aws:autoscaling:")
}

/// Writes reason texts and reason data for one evaluation.
struct Report<'a> {
    rule: &'a AlarmRule,
    now: Now,
}

impl Report<'_> {
    /// `Threshold Crossed: ...` for an OK or ALARM decision. `evaluated` are the real points
    /// evaluated (oldest first); `fill` how many missing points were filled by the treatment.
    fn crossed(&self, state: StateValue, evaluated: &[(&Slot, f64)], fill: usize) -> StateUpdate {
        let rule = self.rule;
        let n = rule.evaluation_periods as usize;
        let m = rule.datapoints_to_alarm() as usize;
        let alarm = state == StateValue::Alarm;
        // The points that support the decision, newest first.
        let support: Vec<(&Slot, f64)> =
            evaluated.iter().rev().filter(|(_, v)| rule.breaches(*v) == alarm).copied().collect();
        let minimum = if alarm { m } else { n - m + 1 };
        let fill_kind =
            if rule.treat_missing_data == TreatMissingData::Breaching { "Breaching" } else { "NonBreaching" };
        let fill_words = format!("{fill} missing {} treated as [{fill_kind}]", datapoints_were(fill));
        let threshold = java_double(rule.threshold);

        let reason = if support.is_empty() {
            let received = match evaluated.len() {
                0 => "no datapoints were".to_string(),
                k => format!("{k} {}", datapoints_were(k)),
            };
            format!(
                "Threshold Crossed: {received} received for {n} {} and {fill_words}.",
                plural(n, "period", "periods")
            )
        } else {
            let list = support
                .iter()
                .map(|(s, v)| format!("{} ({})", java_double(*v), reason_time(s.timestamp)))
                .collect::<Vec<_>>()
                .join(", ");
            let verb = if support.len() == 1 { "was" } else { "were" };
            let not = if alarm { "" } else { "not " };
            let op = operator_words(rule.comparison_operator);
            let fill_clause = if fill > 0 { format!(" and {fill_words}") } else { String::new() };
            match rule.datapoints_to_alarm {
                None => format!(
                    "Threshold Crossed: {} {} [{list}] {verb} {not}{op} the threshold ({threshold}){fill_clause}.",
                    support.len(),
                    plural(support.len(), "datapoint", "datapoints"),
                ),
                Some(_) => format!(
                    "Threshold Crossed: {} out of the last {n} datapoints [{list}] {verb} {not}{op} the threshold \
                     ({threshold}){fill_clause} (minimum {minimum} {} for {} transition).",
                    support.len(),
                    plural(minimum, "datapoint", "datapoints"),
                    if alarm { "OK -> ALARM" } else { "ALARM -> OK" },
                ),
            }
        };

        let mut data = self.data_head(evaluated.first().map(|(s, _)| s.timestamp));
        let recent: Vec<String> = evaluated.iter().map(|(_, v)| java_double(*v)).collect();
        data.push_str(&format!(",\"recentDatapoints\":[{}],\"threshold\":{threshold}", recent.join(",")));
        let shown: Vec<String> = support
            .iter()
            .take(minimum)
            .map(|(s, v)| {
                let count = s.sample_count.map(|c| format!(",\"sampleCount\":{}", java_double(c))).unwrap_or_default();
                format!("{{\"timestamp\":\"{}\"{count},\"value\":{}}}", data_time(s.timestamp), java_double(*v))
            })
            .collect();
        if !shown.is_empty() {
            data.push_str(&format!(",\"evaluatedDatapoints\":[{}]", shown.join(",")));
        }
        data.push('}');
        StateUpdate { state, reason, reason_data: data }
    }

    /// `Insufficient Data: N datapoints were unknown.`, listing the missing periods.
    fn insufficient(&self, slots: &[Slot]) -> StateUpdate {
        let missing: Vec<&Slot> = slots.iter().rev().filter(|s| s.value.is_none()).collect();
        let reason = format!("Insufficient Data: {} {} unknown.", missing.len(), datapoints_were(missing.len()));
        let mut data = self.data_head(None);
        data.push_str(&format!(",\"recentDatapoints\":[],\"threshold\":{}", java_double(self.rule.threshold)));
        let shown: Vec<String> =
            missing.iter().map(|s| format!("{{\"timestamp\":\"{}\"}}", data_time(s.timestamp))).collect();
        data.push_str(&format!(",\"evaluatedDatapoints\":[{}]}}", shown.join(",")));
        StateUpdate { state: StateValue::InsufficientData, reason, reason_data: data }
    }

    /// `{"version":"1.0","queryDate":...,"startDate":...,"unit":...,"statistic":...,"period":...`
    fn data_head(&self, start: Option<f64>) -> String {
        let mut s = format!("{{\"version\":\"1.0\",\"queryDate\":\"{}\"", data_time(self.now));
        if let Some(start) = start {
            s.push_str(&format!(",\"startDate\":\"{}\"", data_time(start)));
        }
        if let Some(unit) = &self.rule.unit {
            s.push_str(&format!(",\"unit\":{}", serde_json::Value::from(unit.as_str())));
        }
        if let Some(stat) = &self.rule.statistic {
            s.push_str(&format!(",\"statistic\":{}", serde_json::Value::from(stat.as_str())));
        }
        s.push_str(&format!(",\"period\":{}", self.rule.period));
        s
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn datapoints_were(n: usize) -> &'static str {
    if n == 1 {
        "datapoint was"
    } else {
        "datapoints were"
    }
}

fn utc(t: f64) -> DateTime<Utc> {
    let ms = (t * 1000.0).round() as i64;
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// `01/12/26 10:03:00`: how the reason text dates a datapoint (day/month/year, UTC).
pub fn reason_time(t: f64) -> String {
    utc(t).format("%d/%m/%y %H:%M:%S").to_string()
}

/// `2026-12-01T10:03:00.000+0000`: how the reason data dates things.
pub fn data_time(t: f64) -> String {
    utc(t).format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// A number as Java's `Double.toString` writes it, which CloudWatch's texts use: `85.0`,
/// `0.01758096118768056`, `1.0E7`, `1.0E-4`.
pub fn java_double(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let a = v.abs();
    if (1e-3..1e7).contains(&a) {
        let s = format!("{v}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{v:e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') { mantissa.to_string() } else { format!("{mantissa}.0") };
        format!("{mantissa}E{exponent}")
    }
}

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_api::cloudwatch::{Metric, MetricDataQuery, MetricStat, Statistic};

    /// 2026-12-01T10:00:00Z.
    const T0: f64 = 1_796_119_200.0;

    fn rule(m: u32, n: u32, treat: TreatMissingData) -> AlarmRule {
        AlarmRule {
            threshold: 50.0,
            comparison_operator: ComparisonOperator::GreaterThanThreshold,
            evaluation_periods: n,
            datapoints_to_alarm: Some(m),
            treat_missing_data: treat,
            period: 300,
            statistic: Some("Average".into()),
            unit: None,
        }
    }

    /// `0 - X - X` (oldest first, as AWS's tables write them): 0 is a good point (10), X a
    /// breaching one (90), - a missing one.
    fn slots(pattern: &str) -> Vec<Slot> {
        pattern
            .split_whitespace()
            .enumerate()
            .map(|(i, c)| {
                let t = T0 + 300.0 * i as f64;
                match c {
                    "0" => Slot::value(t, 10.0),
                    "X" => Slot::value(t, 90.0),
                    "-" => Slot::missing(t),
                    _ => panic!("bad pattern {c}"),
                }
            })
            .collect()
    }

    const ALL: [TreatMissingData; 4] = [
        TreatMissingData::Missing,
        TreatMissingData::Ignore,
        TreatMissingData::Breaching,
        TreatMissingData::NotBreaching,
    ];

    /// One row of AWS's table: the pattern and the state under missing, ignore, breaching,
    /// notBreaching (`None` = retain current state).
    fn row(m: u32, n: u32, pattern: &str, want: [Option<StateValue>; 4]) {
        for (treat, want) in ALL.iter().zip(want) {
            let got = evaluate(&rule(m, n, *treat), &slots(pattern), T0 + 3600.0).state();
            assert_eq!(got, want, "{m} of {n}, `{pattern}`, {treat:?}");
        }
    }

    const OK: Option<StateValue> = Some(StateValue::Ok);
    const ALARM: Option<StateValue> = Some(StateValue::Alarm);
    const INSUFFICIENT: Option<StateValue> = Some(StateValue::InsufficientData);
    const RETAIN: Option<StateValue> = None;

    #[test]
    fn aws_table_3_of_3() {
        // "How alarm state is evaluated when data is missing", first table (current edition
        // and the rows only the earlier edition has).
        row(3, 3, "0 - X - X", [OK, OK, OK, OK]);
        row(3, 3, "0 - - - -", [OK, OK, OK, OK]);
        row(3, 3, "- - - - -", [INSUFFICIENT, RETAIN, ALARM, OK]);
        row(3, 3, "0 X X - X", [ALARM, ALARM, ALARM, ALARM]);
        row(3, 3, "- - X - -", [ALARM, RETAIN, ALARM, OK]);
        row(3, 3, "- - - - X", [INSUFFICIENT, RETAIN, ALARM, OK]);
        row(3, 3, "X - - - -", [ALARM, RETAIN, ALARM, OK]);
    }

    #[test]
    fn aws_table_2_of_3() {
        row(2, 3, "0 - X - X", [ALARM, ALARM, ALARM, ALARM]);
        row(2, 3, "0 0 X 0 X", [ALARM, ALARM, ALARM, ALARM]);
        row(2, 3, "0 - X - -", [OK, OK, ALARM, OK]);
        row(2, 3, "- - - - 0", [OK, OK, ALARM, OK]);
        row(2, 3, "- - - X -", [ALARM, RETAIN, ALARM, OK]);
        row(2, 3, "- - - - X", [INSUFFICIENT, RETAIN, ALARM, OK]);
    }

    #[test]
    fn premature_alarm_is_avoided() {
        // "Avoiding premature transitions": with 3 of 3, `- - - X -` does not alarm yet.
        row(3, 3, "- - - X -", [INSUFFICIENT, RETAIN, ALARM, OK]);
        // A full window of real data decides alone.
        row(3, 3, "X X X X 0", [OK, OK, OK, OK]);
        row(1, 1, "- - - - X", [ALARM, ALARM, ALARM, ALARM]);
    }

    #[test]
    fn the_figure_of_evaluating_an_alarm() {
        // "Evaluating an alarm": threshold 3, 3 of 3; ALARM in periods 3–5, OK at 6, a single
        // breach at 9 keeps OK.
        let values = [1.0, 2.0, 4.0, 5.0, 4.0, 2.0, 1.0, 2.0, 4.0, 2.0];
        let mut r = rule(3, 3, TreatMissingData::Missing);
        r.threshold = 3.0;
        let states: Vec<StateValue> = (1..=values.len())
            .map(|end| {
                let window: Vec<Slot> =
                    values[..end].iter().enumerate().map(|(i, v)| Slot::value(T0 + 300.0 * i as f64, *v)).collect();
                evaluate(&r, &window, T0).state().unwrap()
            })
            .collect();
        use StateValue::{Alarm as A, Ok as O};
        assert_eq!(states, [O, O, O, O, A, O, O, O, O, O]);
    }

    #[test]
    fn reason_for_alarm_in_m_of_n_form() {
        let r = rule(3, 3, TreatMissingData::Missing);
        let s = vec![
            Slot { timestamp: T0 + 60.0, value: Some(80.0), sample_count: Some(1.0) },
            Slot { timestamp: T0 + 120.0, value: Some(90.0), sample_count: Some(1.0) },
            Slot { timestamp: T0 + 180.0, value: Some(85.0), sample_count: Some(1.0) },
        ];
        let Outcome::Set(u) = evaluate(&r, &s, T0 + 245.5) else { panic!() };
        assert_eq!(u.state, StateValue::Alarm);
        assert_eq!(
            u.reason,
            "Threshold Crossed: 3 out of the last 3 datapoints [85.0 (01/12/26 10:03:00), 90.0 (01/12/26 10:02:00), \
             80.0 (01/12/26 10:01:00)] were greater than the threshold (50.0) (minimum 3 datapoints for OK -> ALARM transition)."
        );
        assert_eq!(
            u.reason_data,
            "{\"version\":\"1.0\",\"queryDate\":\"2026-12-01T10:04:05.500+0000\",\"startDate\":\"2026-12-01T10:01:00.000+0000\",\
             \"statistic\":\"Average\",\"period\":300,\"recentDatapoints\":[80.0,90.0,85.0],\"threshold\":50.0,\
             \"evaluatedDatapoints\":[{\"timestamp\":\"2026-12-01T10:03:00.000+0000\",\"sampleCount\":1.0,\"value\":85.0},\
             {\"timestamp\":\"2026-12-01T10:02:00.000+0000\",\"sampleCount\":1.0,\"value\":90.0},\
             {\"timestamp\":\"2026-12-01T10:01:00.000+0000\",\"sampleCount\":1.0,\"value\":80.0}]}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&u.reason_data).unwrap();
        assert_eq!(parsed["evaluatedDatapoints"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn reason_for_ok_lists_the_good_points_and_the_minimum_for_alarm_to_ok() {
        // The documented shape: "2 out of the last 3 datapoints [...] were not greater than the
        // threshold (0.005) (minimum 1 datapoint for ALARM -> OK transition)."
        let mut r = rule(3, 3, TreatMissingData::Missing);
        r.threshold = 0.005;
        let s = vec![Slot::value(T0, 0.01), Slot::value(T0 + 300.0, 0.002), Slot::value(T0 + 600.0, 0.002)];
        let Outcome::Set(u) = evaluate(&r, &s, T0 + 900.0) else { panic!() };
        assert_eq!(u.state, StateValue::Ok);
        assert_eq!(
            u.reason,
            "Threshold Crossed: 2 out of the last 3 datapoints [0.002 (01/12/26 10:10:00), 0.002 (01/12/26 10:05:00)] \
             were not greater than the threshold (0.005) (minimum 1 datapoint for ALARM -> OK transition)."
        );
        // Only the minimum's worth of points is in evaluatedDatapoints.
        let parsed: serde_json::Value = serde_json::from_str(&u.reason_data).unwrap();
        assert_eq!(parsed["evaluatedDatapoints"].as_array().unwrap().len(), 1);
        assert_eq!(parsed["recentDatapoints"], serde_json::json!([0.01, 0.002, 0.002]));
    }

    #[test]
    fn short_form_without_datapoints_to_alarm() {
        let mut r = rule(1, 1, TreatMissingData::Missing);
        r.datapoints_to_alarm = None;
        r.threshold = 1.0;
        r.comparison_operator = ComparisonOperator::GreaterThanOrEqualToThreshold;
        let Outcome::Set(u) = evaluate(&r, &[Slot::value(T0 + 480.0, 0.0)], T0 + 555.0) else { panic!() };
        assert_eq!(
            u.reason,
            "Threshold Crossed: 1 datapoint [0.0 (01/12/26 10:08:00)] was not greater than or equal to the threshold (1.0)."
        );
        r.evaluation_periods = 3;
        r.threshold = 0.0;
        r.comparison_operator = ComparisonOperator::GreaterThanThreshold;
        let s = vec![Slot::value(T0 + 240.0, 1.0), Slot::value(T0 + 420.0, 3.0), Slot::value(T0 + 600.0, 2.0)];
        let Outcome::Set(u) = evaluate(&r, &s, T0 + 700.0) else { panic!() };
        assert_eq!(
            u.reason,
            "Threshold Crossed: 3 datapoints [2.0 (01/12/26 10:10:00), 3.0 (01/12/26 10:07:00), 1.0 (01/12/26 10:04:00)] \
             were greater than the threshold (0.0)."
        );
    }

    #[test]
    fn reasons_when_missing_points_are_filled() {
        let mut r = rule(3, 3, TreatMissingData::Breaching);
        r.datapoints_to_alarm = None;
        let Outcome::Set(u) = evaluate(&r, &slots("- - - - -"), T0) else { panic!() };
        assert_eq!(u.state, StateValue::Alarm);
        assert_eq!(
            u.reason,
            "Threshold Crossed: no datapoints were received for 3 periods and 3 missing datapoints were treated as [Breaching]."
        );
        assert!(!u.reason_data.contains("startDate"));
        assert!(u.reason_data.contains("\"recentDatapoints\":[]"));

        r.evaluation_periods = 1;
        r.treat_missing_data = TreatMissingData::NotBreaching;
        let Outcome::Set(u) = evaluate(&r, &slots("- - -"), T0) else { panic!() };
        assert_eq!(
            u.reason,
            "Threshold Crossed: no datapoints were received for 1 period and 1 missing datapoint was treated as [NonBreaching]."
        );

        // A real good point with breaching fills: the good point is listed, then the fill.
        r.evaluation_periods = 8;
        r.treat_missing_data = TreatMissingData::Breaching;
        r.comparison_operator = ComparisonOperator::LessThanOrEqualToThreshold;
        r.threshold = 0.0;
        let mut s: Vec<Slot> = (0..10).map(|i| Slot::missing(T0 + 300.0 * f64::from(i))).collect();
        s[9] = Slot::value(T0 + 2700.0, 2.0);
        let Outcome::Set(u) = evaluate(&r, &s, T0 + 3000.0) else { panic!() };
        assert_eq!(u.state, StateValue::Ok);
        assert_eq!(
            u.reason,
            "Threshold Crossed: 1 datapoint [2.0 (01/12/26 10:45:00)] was not less than or equal to the threshold (0.0) \
             and 7 missing datapoints were treated as [Breaching]."
        );

        // Real points that do not support the decision: counted as received.
        let mut r = rule(2, 3, TreatMissingData::Breaching);
        r.datapoints_to_alarm = Some(2);
        let Outcome::Set(u) = evaluate(&r, &slots("- - - - 0"), T0) else { panic!() };
        assert_eq!(u.state, StateValue::Alarm);
        assert_eq!(
            u.reason,
            "Threshold Crossed: 1 datapoint was received for 3 periods and 2 missing datapoints were treated as [Breaching]."
        );
    }

    #[test]
    fn insufficient_data_reason_lists_unknown_periods() {
        let r = rule(3, 3, TreatMissingData::Missing);
        let Outcome::Set(u) = evaluate(&r, &slots("- - - - -"), T0 + 1500.0) else { panic!() };
        assert_eq!(u.reason, "Insufficient Data: 5 datapoints were unknown.");
        let parsed: serde_json::Value = serde_json::from_str(&u.reason_data).unwrap();
        let shown = parsed["evaluatedDatapoints"].as_array().unwrap();
        assert_eq!(shown.len(), 5);
        assert_eq!(shown[0]["timestamp"], "2026-12-01T10:20:00.000+0000", "newest first");
        assert_eq!(parsed["recentDatapoints"], serde_json::json!([]));
    }

    #[test]
    fn comparison_operators() {
        let mut r = rule(1, 1, TreatMissingData::Missing);
        for (op, at, above, below) in [
            (ComparisonOperator::GreaterThanThreshold, false, true, false),
            (ComparisonOperator::GreaterThanOrEqualToThreshold, true, true, false),
            (ComparisonOperator::LessThanThreshold, false, false, true),
            (ComparisonOperator::LessThanOrEqualToThreshold, true, false, true),
        ] {
            r.comparison_operator = op;
            assert_eq!((r.breaches(50.0), r.breaches(51.0), r.breaches(49.0)), (at, above, below), "{op:?}");
        }
    }

    #[test]
    fn actions_fire_on_change_and_scaling_policies_on_every_period() {
        let policy = "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:6d8972f3-efc8-437c-92d1-6270f29a66e7:resource/ecs/service/default/web:policyName/cpu";
        let topic = "arn:aws:sns:us-east-1:123456789012:ops";
        assert!(invokes_action(StateValue::Ok, StateValue::Alarm, topic));
        assert!(invokes_action(StateValue::Ok, StateValue::Alarm, policy));
        assert!(!invokes_action(StateValue::Alarm, StateValue::Alarm, topic));
        assert!(invokes_action(StateValue::Alarm, StateValue::Alarm, policy));
        assert!(invokes_action(StateValue::InsufficientData, StateValue::Ok, topic));
    }

    #[test]
    fn java_doubles() {
        assert_eq!(java_double(85.0), "85.0");
        assert_eq!(java_double(0.01758096118768056), "0.01758096118768056");
        assert_eq!(java_double(20000.0), "20000.0");
        assert_eq!(java_double(1e7), "1.0E7");
        assert_eq!(java_double(12345678.9), "1.23456789E7");
        assert_eq!(java_double(0.0001), "1.0E-4");
        assert_eq!(java_double(-2.5), "-2.5");
        assert_eq!(java_double(0.0), "0.0");
    }

    #[test]
    fn range_slides_by_the_minute() {
        let r = rule(3, 3, TreatMissingData::Missing);
        // 5-minute periods evaluated at 10:16:30 end at 10:16.
        let starts = range_starts(&r, T0 + 990.0);
        assert_eq!(starts.len(), 5);
        assert_eq!(starts.last().copied(), Some(T0 + 960.0 - 300.0));
        assert_eq!(starts[0], T0 + 960.0 - 1500.0);
        let mut hr = r.clone();
        hr.period = 10;
        let starts = range_starts(&hr, T0 + 35.0);
        assert_eq!(starts, vec![T0 - 20.0, T0 - 10.0, T0, T0 + 10.0, T0 + 20.0]);
    }

    fn input() -> PutMetricAlarmInput {
        PutMetricAlarmInput {
            alarm_name: "cpu-high".into(),
            comparison_operator: Some(ComparisonOperator::GreaterThanThreshold),
            evaluation_periods: Some(3),
            metric_name: Some("CPUUtilization".into()),
            namespace: Some("AWS/ECS".into()),
            period: Some(60),
            statistic: Some(Statistic::Average),
            threshold: Some(50.0),
            ..Default::default()
        }
    }

    fn refused(i: PutMetricAlarmInput) -> AlarmError {
        validate_put_metric_alarm(&i).unwrap_err()
    }

    #[test]
    fn put_metric_alarm_accepts_and_builds_the_rule() {
        let r = validate_put_metric_alarm(&input()).unwrap();
        assert_eq!(r.evaluation_periods, 3);
        assert_eq!(r.datapoints_to_alarm(), 3);
        assert_eq!(r.treat_missing_data, TreatMissingData::Missing);
        assert_eq!(r.statistic.as_deref(), Some("Average"));
        let mut i = input();
        i.extended_statistic = Some("p99".into());
        i.statistic = None;
        i.treat_missing_data = Some("notBreaching".into());
        i.datapoints_to_alarm = Some(2);
        let r = validate_put_metric_alarm(&i).unwrap();
        assert_eq!(r.statistic.as_deref(), Some("p99"));
        assert_eq!(r.treat_missing_data, TreatMissingData::NotBreaching);
        assert_eq!(r.datapoints_to_alarm(), 2);
        // The rule keeps camelCase names for documents.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["treatMissingData"], "notBreaching");
        assert_eq!(json["comparisonOperator"], "GreaterThanThreshold");
    }

    #[test]
    fn put_metric_alarm_periods() {
        for ok in [10, 20, 30, 60, 120, 300, 3600] {
            let mut i = input();
            i.period = Some(ok);
            assert!(validate_put_metric_alarm(&i).is_ok(), "{ok}");
        }
        for bad in [1, 15, 45, 90, 61] {
            let mut i = input();
            i.period = Some(bad);
            let e = refused(i);
            assert_eq!(
                (e.code, e.message.as_str()),
                (AlarmErrorCode::Validation, "Period must be 10, 20, 30 or a multiple of 60")
            );
        }
        let mut i = input();
        i.evaluation_periods = Some(1441);
        assert!(refused(i).message.starts_with("Metrics cannot be checked across more than a day"));
        let mut i = input();
        i.evaluation_periods = Some(1440);
        assert!(validate_put_metric_alarm(&i).is_ok(), "exactly a day");
        let mut i = input();
        i.period = Some(3600);
        i.evaluation_periods = Some(168);
        assert!(validate_put_metric_alarm(&i).is_ok(), "a week of hours");
        let mut i = input();
        i.period = Some(3600);
        i.evaluation_periods = Some(169);
        assert!(refused(i).message.contains("more than a week"));
    }

    #[test]
    fn put_metric_alarm_refusals() {
        let mut i = input();
        i.datapoints_to_alarm = Some(4);
        assert_eq!(refused(i).message, "DatapointsToAlarm must be less than or equal to EvaluationPeriods");

        let mut i = input();
        i.extended_statistic = Some("p90".into());
        let e = refused(i);
        assert_eq!(e.code, AlarmErrorCode::InvalidParameterCombination);
        assert!(e.message.contains("Statistic and ExtendedStatistic"));

        let mut i = input();
        i.statistic = None;
        assert_eq!(refused(i).code, AlarmErrorCode::MissingParameter);

        let mut i = input();
        i.statistic = None;
        i.extended_statistic = Some("average".into());
        assert_eq!(refused(i).code, AlarmErrorCode::InvalidParameterValue);

        let mut i = input();
        i.evaluation_periods = None;
        assert_eq!(refused(i).message, "The request must contain the parameter EvaluationPeriods.");

        let mut i = input();
        i.threshold = None;
        assert_eq!(refused(i).code, AlarmErrorCode::MissingParameter);

        let mut i = input();
        i.treat_missing_data = Some("zero".into());
        assert_eq!(refused(i).code, AlarmErrorCode::Validation);

        for op in [
            ComparisonOperator::LessThanLowerOrGreaterThanUpperThreshold,
            ComparisonOperator::LessThanLowerThreshold,
            ComparisonOperator::GreaterThanUpperThreshold,
        ] {
            let mut i = input();
            i.comparison_operator = Some(op);
            i.threshold = None;
            i.threshold_metric_id = Some("ad1".into());
            assert_eq!(refused(i).code, AlarmErrorCode::InvalidParameterValue);
        }

        let mut i = input();
        i.alarm_name = "alarme-é".into();
        assert_eq!(refused(i).code, AlarmErrorCode::Validation);
    }

    fn stat(id: &str, period: i32, return_data: bool) -> MetricDataQuery {
        MetricDataQuery {
            id: id.into(),
            metric_stat: Some(MetricStat {
                metric: Metric {
                    metric_name: Some("RequestCount".into()),
                    namespace: Some("AWS/ApplicationELB".into()),
                    ..Default::default()
                },
                period,
                stat: "Sum".into(),
                unit: None,
            }),
            return_data: Some(return_data),
            ..Default::default()
        }
    }

    #[test]
    fn metric_math_alarms() {
        let mut i = input();
        i.metric_name = None;
        i.namespace = None;
        i.statistic = None;
        i.period = None;
        let expr = MetricDataQuery {
            id: "e1".into(),
            expression: Some("m1/m2*100".into()),
            return_data: Some(true),
            ..Default::default()
        };
        i.metrics = Some(vec![stat("m1", 60, false), stat("m2", 60, false), expr.clone()]);
        let r = validate_put_metric_alarm(&i).unwrap();
        assert_eq!((r.period, r.statistic), (60, None));

        let mut j = i.clone();
        j.metric_name = Some("CPUUtilization".into());
        let e = refused(j);
        assert_eq!(e.code, AlarmErrorCode::InvalidParameterCombination);
        assert_eq!(
            e.message,
            "The parameters MetricName and Metrics are mutually exclusive and you have specified both."
        );

        let mut j = i.clone();
        j.metrics = Some(vec![stat("m1", 60, true), expr.clone()]);
        assert_eq!(refused(j).message, "Exactly one element of the metrics list should return data.");

        let mut j = i.clone();
        j.metrics = Some(vec![stat("m1", 60, false), stat("m2", 300, false), expr]);
        assert_eq!(refused(j).message, "All metrics in an alarm must use the same period.");
    }

    #[test]
    fn history_is_bounded_and_worded_as_cloudwatch_does() {
        let mut h = HistoryDoc::default();
        for i in 0..(HISTORY_LIMIT + 5) {
            h.push(state_update_item("a", (StateValue::Ok, "x", None), (StateValue::Alarm, "y", None), i as f64));
        }
        assert_eq!(h.items.len(), HISTORY_LIMIT);
        assert_eq!(h.items[0].timestamp, Some(5.0), "the oldest go first");
        let item = &h.items[0];
        assert_eq!(item.history_summary.as_deref(), Some("Alarm updated from OK to ALARM"));
        let data: serde_json::Value = serde_json::from_str(item.history_data.as_deref().unwrap()).unwrap();
        assert_eq!(data["oldState"]["stateValue"], "OK");
        assert_eq!(data["newState"]["stateReason"], "y");
        let with_data = state_update_item(
            "a",
            (StateValue::Ok, "x", Some("{\"k\":1}")),
            (StateValue::Alarm, "y", Some("not json")),
            0.0,
        );
        let data: serde_json::Value = serde_json::from_str(with_data.history_data.as_deref().unwrap()).unwrap();
        assert_eq!(data["oldState"]["stateReasonData"]["k"], 1);
        assert!(data["newState"].get("stateReasonData").is_none());
        let c = configuration_item("a", ConfigChange::Create, None, Some(&MetricAlarm::default()), 0.0);
        assert_eq!(c.history_summary.as_deref(), Some("Alarm \"a\" created"));
        assert_eq!(c.history_item_type, Some(HistoryItemType::ConfigurationUpdate));
        let f = failed_action_item("a", "arn:aws:sns:us-east-1:1:t", "no topic", 1.5);
        assert_eq!(f.history_summary.as_deref(), Some("Failed to execute action arn:aws:sns:us-east-1:1:t"));
        assert_eq!(f.history_item_type, Some(HistoryItemType::Action));
    }

    #[test]
    fn errors_map_to_wire_codes() {
        let e: ApiError = AlarmError::validation("x").into();
        assert_eq!(e.code, "ValidationError");
        let e: ApiError = AlarmError::missing("Period").into();
        assert_eq!(e.code, "MissingParameter");
        let e: ApiError = AlarmError::combination("A", "B").into();
        assert_eq!(e.code, "InvalidParameterCombination");
    }
}
