//! Evaluating one alarm: gathers the values of its evaluation range from the metric store
//! (AWS time), decides the state with `estiba_core::alarms::evaluate`, writes a change of
//! state with its history items in one CAS transaction, then invokes the actions CloudWatch
//! would: scaling policies through `crate::scaling::alarm_action` (on the transition and again
//! every period the alarm stays in the state), any other action (SNS) recorded as a failed
//! `Action` history item on the transition (estiba has no SNS: as CloudWatch does when the
//! topic does not exist).
//!
//! May not: decide anything `estiba_core::alarms` decides; read a clock other than the
//! server's (`now` comes from the caller).

use estiba_api::cloudwatch::{AlarmHistoryItem, MetricAlarm, StateValue};
use estiba_api::ApiError;
use estiba_core::alarms::{self as core, AlarmDoc, HistoryDoc, Outcome, Slot};
use estiba_core::metric_math::Series;
use estiba_core::metric_time::MetricClock;
use estiba_core::Scope;
use estiba_metricstore::{MetricId, MetricStore, Query, UnitFilter};
use estiba_store::{Compare, Op, Txn};

use super::{alarms_table, blocking, history_table, metrics, store_error, Result};
use crate::scaling::AlarmAction;
use crate::view::State;
use crate::Server;

/// The evaluation range's slots (oldest first, timestamps in real seconds) and the newest
/// value, for `doc` at AWS time `now_aws` (ms). Blocking.
pub fn gather(
    store: &MetricStore,
    clock: &MetricClock,
    scope: &Scope,
    doc: &AlarmDoc,
    now_aws: i64,
) -> Result<Vec<Slot>> {
    let rule = &doc.rule;
    let starts = core::range_starts(rule, now_aws as f64 / 1000.0);
    let (Some(first), Some(last)) = (starts.first(), starts.last()) else { return Ok(vec![]) };
    let start = (*first * 1000.0) as i64;
    let end = ((*last + f64::from(rule.period)) * 1000.0) as i64;
    let series: Series = match &doc.alarm.metrics {
        Some(queries) => {
            let results = metrics::run_queries(store, scope, queries, start, end, now_aws)?;
            results.into_iter().find(|r| r.return_data).map(|r| r.series).unwrap_or_default()
        }
        None => {
            let a = &doc.alarm;
            let statistic = rule.statistic.as_deref().and_then(estiba_metricstore::Statistic::parse);
            match statistic {
                // An extended statistic the store cannot compute (tm90): no data.
                None => Default::default(),
                Some(statistic) => {
                    let id = MetricId::new(
                        &scope.account,
                        &scope.region,
                        a.namespace.clone().unwrap_or_default(),
                        a.metric_name.clone().unwrap_or_default(),
                        a.dimensions
                            .iter()
                            .flatten()
                            .map(|d| estiba_metricstore::Dimension::new(&d.name, &d.value))
                            .collect(),
                    );
                    let unit = match &rule.unit {
                        Some(u) => UnitFilter::Only(u.as_str().into()),
                        None => UnitFilter::Merged,
                    };
                    let q = Query { start, end, period: i64::from(rule.period), statistics: vec![statistic], unit };
                    let points = store.get(&id, &q, now_aws).map_err(store_error)?;
                    points.iter().filter_map(|p| p.values[0].map(|v| (p.timestamp, v))).collect()
                }
            }
        }
    };
    Ok(starts
        .iter()
        .map(|s| {
            let aws_ms = (*s * 1000.0) as i64;
            let real = clock.to_real(aws_ms) as f64 / 1000.0;
            match series.get(aws_ms) {
                Some(v) => Slot::value(real, v),
                None => Slot::missing(real),
            }
        })
        .collect())
}

/// The actions list of a state.
fn actions_of(a: &MetricAlarm, state: StateValue) -> &[String] {
    let list = match state {
        StateValue::Alarm => &a.alarm_actions,
        StateValue::Ok => &a.ok_actions,
        _ => &a.insufficient_data_actions,
    };
    list.as_deref().unwrap_or(&[])
}

/// A state an alarm is left in, as actions see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub previous: StateValue,
    pub new: StateValue,
    /// The evaluation falls on a period boundary (scaling actions fire again).
    pub repeat: bool,
    /// The newest datapoint's value.
    pub value: Option<f64>,
    /// Real time, seconds.
    pub now_real: f64,
    /// AWS time, ms.
    pub now_aws_ms: i64,
}

/// What an evaluation (or SetAlarmState) that leaves `doc`'s alarm in `new` (from `previous`)
/// invokes: the scaling policies to call, and the history items of the actions. Nothing when
/// actions are disabled.
pub fn plan_actions(scope: &Scope, doc: &AlarmDoc, t: &Transition) -> (Vec<AlarmAction>, Vec<AlarmHistoryItem>) {
    let Transition { previous, new, repeat, value, now_real, now_aws_ms } = *t;
    let a = &doc.alarm;
    let mut calls = Vec::new();
    let mut items = Vec::new();
    if a.actions_enabled == Some(false) {
        return (calls, items);
    }
    let name = a.alarm_name.clone().unwrap_or_default();
    let changed = previous != new;
    for arn in actions_of(a, new) {
        if !core::invokes_action(previous, new, arn) {
            continue;
        }
        if core::is_scaling_action(arn) {
            if !changed && !repeat {
                continue;
            }
            calls.push(AlarmAction {
                scope: scope.clone(),
                policy_arn: arn.clone(),
                alarm_name: name.clone(),
                alarm_arn: a.alarm_arn.clone().unwrap_or_else(|| core::alarm_arn(scope, &name)),
                state: new,
                threshold: doc.rule.threshold,
                value,
                at_ms: now_aws_ms,
            });
            if changed {
                items.push(core::executed_action_item(&name, arn, now_real));
            }
        } else if changed {
            let error = if arn.starts_with("arn:aws:sns:") {
                "Resource not found: estiba has no Amazon SNS, so the topic does not exist"
            } else {
                "estiba does not run this kind of alarm action"
            };
            items.push(core::failed_action_item(&name, arn, error, now_real));
        }
    }
    (calls, items)
}

/// Runs the scaling policies an alarm invoked.
pub async fn run_actions(s: &Server, calls: Vec<AlarmAction>) {
    for c in calls {
        crate::scaling::alarm_action(s, c).await;
    }
}

/// Appends `items` to the history of alarm `name` in `txn` (CAS on the history document).
pub fn with_history(st: &State, scope: &Scope, name: &str, items: Vec<AlarmHistoryItem>, txn: Txn) -> Txn {
    if items.is_empty() {
        return txn;
    }
    let key = core::history_key(scope, name);
    let (mut doc, compare) = match st.doc::<HistoryDoc>(history_table(), &key) {
        Some(d) => (d.value.clone(), Compare::mod_revision(key.clone(), d.rev)),
        None => (HistoryDoc::default(), Compare::absent(key.clone())),
    };
    for i in items {
        doc.push(i);
    }
    txn.when(compare).then(Op::put(key, serde_json::to_vec(&doc).expect("serializes")))
}

/// Evaluates the alarm at `key` (in `scope`) as of AWS time `now_aws` (ms) and real time
/// `now_real` (s): writes a change of state, then runs its actions.
pub async fn evaluate_alarm(s: &Server, scope: &Scope, key: &str, now_aws: i64, now_real: f64) -> Result<()> {
    let Some(doc) = s.view.read().doc::<AlarmDoc>(alarms_table(), key).map(|d| d.value.clone()) else {
        return Ok(());
    };
    let (store, clock, sc, d) = (s.metrics.clone(), s.metric_clock, scope.clone(), doc.clone());
    let slots = blocking(move || gather(&store, &clock, &sc, &d, now_aws)).await??;
    let outcome = core::evaluate(&doc.rule, &slots, now_real);
    let value = slots.iter().rev().find_map(|s| s.value);
    let previous = doc.alarm.state_value.unwrap_or(StateValue::InsufficientData);
    let step = if core::is_high_resolution(doc.rule.period) { i64::from(doc.rule.period) } else { 60 };
    let boundary = (now_aws / 1000).div_euclid(step) * step;
    let repeat = boundary % i64::from(doc.rule.period.max(1)) == 0;
    let name = doc.alarm.alarm_name.clone().unwrap_or_default();
    let update = match outcome {
        Outcome::Set(u) if u.state != previous => u,
        _ => {
            // The state holds: only scaling actions may fire again.
            let t = Transition { previous, new: previous, repeat, value, now_real, now_aws_ms: now_aws };
            let (calls, _) = plan_actions(scope, &doc, &t);
            run_actions(s, calls).await;
            return Ok(());
        }
    };
    let written = s
        .transact(|st| {
            let Some(cur) = st.doc::<AlarmDoc>(alarms_table(), key) else { return Ok((Txn::new(), None)) };
            let mut next = cur.value.clone();
            let old = next.alarm.state_value.unwrap_or(StateValue::InsufficientData);
            if old == update.state {
                return Ok((Txn::new(), None));
            }
            let item = core::state_update_item(
                &name,
                (old, next.alarm.state_reason.as_deref().unwrap_or(""), next.alarm.state_reason_data.as_deref()),
                (update.state, &update.reason, Some(&update.reason_data)),
                now_real,
            );
            next.alarm.state_value = Some(update.state);
            next.alarm.state_reason = Some(update.reason.clone());
            next.alarm.state_reason_data = Some(update.reason_data.clone());
            next.alarm.state_updated_timestamp = Some(now_real);
            next.alarm.state_transitioned_timestamp = Some(now_real);
            let t = Transition { previous: old, new: update.state, repeat, value, now_real, now_aws_ms: now_aws };
            let (calls, mut items) = plan_actions(scope, &next, &t);
            items.insert(0, item);
            let txn = Txn::new()
                .when(Compare::mod_revision(key.to_owned(), cur.rev))
                .then(Op::put(key.to_owned(), serde_json::to_vec(&next).expect("serializes")));
            Ok::<_, ApiError>((with_history(st, scope, &name, items, txn), Some(calls)))
        })
        .await?;
    if let Some(calls) = written {
        tracing::info!(alarm = %name, from = previous.as_str(), to = update.state.as_str(), "alarm state changed");
        run_actions(s, calls).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use estiba_api::cloudwatch::PutMetricAlarmInput;

    use super::*;

    const POLICY: &str =
        "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:1:resource/ecs/service/default/web:policyName/up";
    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ops";

    fn doc(enabled: bool) -> AlarmDoc {
        let input = PutMetricAlarmInput {
            alarm_name: "a".into(),
            namespace: Some("App".into()),
            metric_name: Some("M".into()),
            statistic: Some(estiba_api::cloudwatch::Statistic::Average),
            period: Some(60),
            evaluation_periods: Some(1),
            threshold: Some(1.0),
            comparison_operator: Some(estiba_api::cloudwatch::ComparisonOperator::GreaterThanThreshold),
            alarm_actions: Some(vec![POLICY.into(), TOPIC.into()]),
            actions_enabled: Some(enabled),
            ..Default::default()
        };
        let rule = core::validate_put_metric_alarm(&input).unwrap();
        AlarmDoc::new(&Scope::new("123456789012", "us-east-1"), &input, rule, 0.0)
    }

    fn t(previous: StateValue, new: StateValue, repeat: bool) -> Transition {
        Transition { previous, new, repeat, value: Some(5.0), now_real: 10.0, now_aws_ms: 10_000 }
    }

    #[test]
    fn actions_on_transition_and_scaling_again_each_period() {
        let scope = Scope::new("123456789012", "us-east-1");
        let (calls, items) = plan_actions(&scope, &doc(true), &t(StateValue::Ok, StateValue::Alarm, false));
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].policy_arn.as_str(), calls[0].value, calls[0].threshold), (POLICY, Some(5.0), 1.0));
        let summaries: Vec<_> = items.iter().map(|i| i.history_summary.clone().unwrap()).collect();
        assert_eq!(
            summaries,
            [format!("Successfully executed action {POLICY}"), format!("Failed to execute action {TOPIC}")]
        );
        // Staying in ALARM: the policy again on a period boundary, never SNS, no history.
        let (calls, items) = plan_actions(&scope, &doc(true), &t(StateValue::Alarm, StateValue::Alarm, true));
        assert_eq!((calls.len(), items.len()), (1, 0));
        let (calls, _) = plan_actions(&scope, &doc(true), &t(StateValue::Alarm, StateValue::Alarm, false));
        assert!(calls.is_empty());
        // OK has no actions; disabled actions never run.
        assert_eq!(plan_actions(&scope, &doc(true), &t(StateValue::Alarm, StateValue::Ok, false)).0.len(), 0);
        let (calls, items) = plan_actions(&scope, &doc(false), &t(StateValue::Ok, StateValue::Alarm, true));
        assert!(calls.is_empty() && items.is_empty());
    }
}
