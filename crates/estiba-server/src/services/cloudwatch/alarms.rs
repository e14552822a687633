//! Metric alarms: PutMetricAlarm (create or replace; a replaced alarm keeps its state),
//! DescribeAlarms, DescribeAlarmsForMetric, DeleteAlarms, SetAlarmState, DescribeAlarmHistory,
//! EnableAlarmActions, DisableAlarmActions, and TagResource, UntagResource and
//! ListTagsForResource for alarms. Composite alarms are not supported: they are never listed.

use std::collections::BTreeMap;

use bytes::Bytes;
use estiba_api::cloudwatch::*;
use estiba_api::ApiError;
use estiba_core::alarms::{self as core, AlarmDoc, ConfigChange, HistoryDoc};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::evaluate::{plan_actions, run_actions, with_history, Transition};
use super::{alarms_table, exclusive, history_table, invalid, Result};
use crate::services::{json, Call};
use crate::view::{Doc, State};
use crate::Server;

fn put_op(key: &str, doc: &AlarmDoc) -> Op {
    Op::put(key.to_owned(), serde_json::to_vec(doc).expect("serializes"))
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ResourceNotFound, message.into())
}

fn alarm_doc<'a>(st: &'a State, scope: &Scope, name: &str) -> Option<&'a Doc<AlarmDoc>> {
    st.doc::<AlarmDoc>(alarms_table(), &core::alarm_key(scope, name))
}

pub async fn put_metric_alarm(s: &Server, cx: &Call, req: PutMetricAlarmInput) -> Result<Bytes> {
    let rule = core::validate_put_metric_alarm(&req)?;
    if req.tags.as_ref().is_some_and(|t| t.len() > 50) {
        return Err(invalid("The collection Tags must not have a size greater than 50."));
    }
    let key = core::alarm_key(&cx.scope, &req.alarm_name);
    let fresh = AlarmDoc::new(&cx.scope, &req, rule, cx.now);
    s.transact(|st| {
        let mut doc = fresh.clone();
        let (compare, item) = match alarm_doc(st, &cx.scope, &req.alarm_name) {
            Some(old) => {
                // Replacing keeps the state (and the tags: Tags only apply to a new alarm).
                let o = &old.value.alarm;
                doc.alarm.state_value = o.state_value;
                doc.alarm.state_reason = o.state_reason.clone();
                doc.alarm.state_reason_data = o.state_reason_data.clone();
                doc.alarm.state_updated_timestamp = o.state_updated_timestamp;
                doc.alarm.state_transitioned_timestamp = o.state_transitioned_timestamp;
                doc.tags = old.value.tags.clone();
                let item =
                    core::configuration_item(&req.alarm_name, ConfigChange::Update, Some(o), Some(&doc.alarm), cx.now);
                (Compare::mod_revision(key.clone(), old.rev), item)
            }
            None => {
                let item =
                    core::configuration_item(&req.alarm_name, ConfigChange::Create, None, Some(&doc.alarm), cx.now);
                (Compare::absent(key.clone()), item)
            }
        };
        let txn = Txn::new().when(compare).then(put_op(&key, &doc));
        Ok::<_, ApiError>((with_history(st, &cx.scope, &req.alarm_name, vec![item], txn), ()))
    })
    .await?;
    Ok(Bytes::new())
}

fn all_alarms(st: &State, scope: &Scope) -> Vec<AlarmDoc> {
    st.docs::<AlarmDoc>(alarms_table(), &core::alarms_prefix(scope)).map(|d| d.value.clone()).collect()
}

fn has_action_prefix(a: &MetricAlarm, prefix: &str) -> bool {
    [&a.alarm_actions, &a.ok_actions, &a.insufficient_data_actions]
        .into_iter()
        .flat_map(|l| l.iter().flatten())
        .any(|arn| arn.starts_with(prefix))
}

fn name_of(d: &AlarmDoc) -> String {
    d.alarm.alarm_name.clone().unwrap_or_default()
}

pub async fn describe_alarms(s: &Server, cx: &Call, req: DescribeAlarmsInput) -> Result<Bytes> {
    if req.alarm_names.is_some() && req.alarm_name_prefix.is_some() {
        return Err(exclusive("AlarmNames", "AlarmNamePrefix"));
    }
    let metric_wanted = req.alarm_types.as_ref().is_none_or(|t| t.contains(&AlarmType::MetricAlarm));
    // Composite alarms are not supported: their parents and children are never metric alarms
    // listed here.
    let related = req.children_of_alarm_name.is_some() || req.parents_of_alarm_name.is_some();
    let limit = req.max_records.filter(|n| *n > 0).map_or(50, |n| n as usize);
    let docs = if metric_wanted && !related { all_alarms(&s.view.read(), &cx.scope) } else { vec![] };
    let wanted = docs.into_iter().filter(|d| {
        let a = &d.alarm;
        let name = a.alarm_name.as_deref().unwrap_or("");
        req.alarm_names.as_ref().is_none_or(|n| n.iter().any(|x| x == name))
            && req.alarm_name_prefix.as_deref().is_none_or(|p| name.starts_with(p))
            && req.state_value.is_none_or(|v| a.state_value == Some(v))
            && req.action_prefix.as_deref().is_none_or(|p| has_action_prefix(a, p))
    });
    let page = estiba_core::page::paginate(wanted, name_of, req.next_token.as_deref(), limit, false).map_err(|_| {
        ApiError::new(ErrorCode::InvalidNextToken, "The NextToken is invalid: pass the NextToken of a previous answer.")
    })?;
    Ok(json(&DescribeAlarmsOutput {
        metric_alarms: Some(page.items.into_iter().map(|d| d.alarm).collect()),
        composite_alarms: Some(vec![]),
        next_token: page.next_token,
    }))
}

fn same_dimensions(a: &Option<Vec<Dimension>>, b: &Option<Vec<Dimension>>) -> bool {
    let sorted = |d: &Option<Vec<Dimension>>| {
        let mut v: Vec<(String, String)> = d.iter().flatten().map(|d| (d.name.clone(), d.value.clone())).collect();
        v.sort();
        v
    };
    sorted(a) == sorted(b)
}

pub async fn describe_alarms_for_metric(s: &Server, cx: &Call, req: DescribeAlarmsForMetricInput) -> Result<Bytes> {
    if req.statistic.is_some() && req.extended_statistic.is_some() {
        return Err(exclusive("Statistic", "ExtendedStatistic"));
    }
    let docs = all_alarms(&s.view.read(), &cx.scope);
    let alarms = docs
        .into_iter()
        .map(|d| d.alarm)
        .filter(|a| {
            a.metric_name.as_deref() == Some(req.metric_name.as_str())
                && a.namespace.as_deref() == Some(req.namespace.as_str())
                && (req.dimensions.is_none() || same_dimensions(&a.dimensions, &req.dimensions))
                && req.statistic.is_none_or(|st| a.statistic == Some(st))
                && req.extended_statistic.as_ref().is_none_or(|e| a.extended_statistic.as_ref() == Some(e))
                && req.period.is_none_or(|p| a.period == Some(p))
                && req.unit.is_none_or(|u| a.unit == Some(u))
        })
        .collect();
    Ok(json(&DescribeAlarmsForMetricOutput { metric_alarms: Some(alarms) }))
}

pub async fn delete_alarms(s: &Server, cx: &Call, req: DeleteAlarmsInput) -> Result<Bytes> {
    let mut seen = std::collections::HashSet::new();
    let names: Vec<&str> = req.alarm_names.iter().map(String::as_str).filter(|n| seen.insert(*n)).collect();
    // CloudWatch checks every name before it deletes any ("No alarm was deleted"): the first
    // batch checks them all against the view it is built from. Up to 100 alarms, each with its
    // history document, need not fit one transaction of the store: they go in as few as fit,
    // each alarm whole with its history. An alarm gone before its batch (another DeleteAlarms)
    // counts as deleted: the call's answer, all deleted, stays true.
    let limits = s.txn_limits();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut done = 0;
    while done < names.len() {
        let mut n = names.len() - done;
        let txn = loop {
            let st = s.view.read();
            if done == 0 {
                let missing: Vec<&str> =
                    names.iter().copied().filter(|n| alarm_doc(&st, &cx.scope, n).is_none()).collect();
                if !missing.is_empty() {
                    // CloudWatch deletes nothing when a name is wrong.
                    return Err(not_found(format!(
                        "The following alarms were not found: {}. No alarm was deleted.",
                        missing.join(", ")
                    )));
                }
            }
            let mut txn = Txn::new();
            for name in &names[done..done + n] {
                let Some(d) = alarm_doc(&st, &cx.scope, name) else { continue };
                txn = txn.when(Compare::mod_revision(d.key.clone(), d.rev)).then(Op::delete(d.key.clone()));
                let item = core::configuration_item(name, ConfigChange::Delete, Some(&d.value.alarm), None, cx.now);
                txn = with_history(&st, &cx.scope, name, vec![item], txn);
            }
            if n <= 1 || limits.fits(&txn) {
                break txn;
            }
            n = n.div_ceil(2);
        };
        if s.commit(txn).await? {
            done += n;
        } else if std::time::Instant::now() > deadline {
            return Err(crate::WriteError::Conflicts.into());
        } else {
            s.catch_up().await;
        }
    }
    Ok(Bytes::new())
}

pub async fn set_alarm_state(s: &Server, cx: &Call, req: SetAlarmStateInput) -> Result<Bytes> {
    if let Some(data) = &req.state_reason_data {
        if serde_json::from_str::<serde_json::Value>(data).is_err() {
            return Err(ApiError::new(
                ErrorCode::InvalidFormatFault,
                "The parameter StateReasonData must be a JSON document.",
            ));
        }
    }
    let now_aws = s.metric_now_ms();
    let calls = s
        .transact(|st| {
            let d = alarm_doc(st, &cx.scope, &req.alarm_name)
                .ok_or_else(|| not_found(format!("Alarm {} not found.", req.alarm_name)))?;
            let mut doc = d.value.clone();
            let old = doc.alarm.state_value.unwrap_or(StateValue::InsufficientData);
            let item = core::state_update_item(
                &req.alarm_name,
                (old, doc.alarm.state_reason.as_deref().unwrap_or(""), doc.alarm.state_reason_data.as_deref()),
                (req.state_value, &req.state_reason, req.state_reason_data.as_deref()),
                cx.now,
            );
            doc.alarm.state_value = Some(req.state_value);
            doc.alarm.state_reason = Some(req.state_reason.clone());
            doc.alarm.state_reason_data = req.state_reason_data.clone();
            doc.alarm.state_updated_timestamp = Some(cx.now);
            if old != req.state_value {
                doc.alarm.state_transitioned_timestamp = Some(cx.now);
            }
            let t = Transition {
                previous: old,
                new: req.state_value,
                repeat: false,
                value: None,
                now_real: cx.now,
                now_aws_ms: now_aws,
            };
            let (calls, mut items) = plan_actions(&cx.scope, &doc, &t);
            items.insert(0, item);
            let txn = Txn::new().when(Compare::mod_revision(d.key.clone(), d.rev)).then(put_op(&d.key, &doc));
            Ok::<_, ApiError>((with_history(st, &cx.scope, &req.alarm_name, items, txn), calls))
        })
        .await?;
    run_actions(s, calls).await;
    Ok(Bytes::new())
}

pub async fn describe_alarm_history(s: &Server, cx: &Call, req: DescribeAlarmHistoryInput) -> Result<Bytes> {
    if req.alarm_types.as_ref().is_some_and(|t| !t.contains(&AlarmType::MetricAlarm)) {
        return Ok(json(&DescribeAlarmHistoryOutput { alarm_history_items: Some(vec![]), next_token: None }));
    }
    let limit = req.max_records.filter(|n| *n > 0).map_or(100, |n| n as usize);
    let mut items: Vec<AlarmHistoryItem> = {
        let st = s.view.read();
        let prefix = core::history_key(&cx.scope, req.alarm_name.as_deref().unwrap_or(""));
        st.docs::<HistoryDoc>(history_table(), &prefix)
            .filter(|d| req.alarm_name.is_none() || d.key == prefix)
            .flat_map(|d| d.value.items.clone())
            .collect()
    };
    items.retain(|i| {
        let t = i.timestamp.unwrap_or(0.0);
        req.history_item_type.is_none_or(|k| i.history_item_type == Some(k))
            && req.start_date.is_none_or(|s| t >= s)
            && req.end_date.is_none_or(|e| t < e)
    });
    // Newest first unless asked otherwise; the key of an item is its time and alarm name.
    let ascending = req.scan_by == Some(ScanBy::TimestampAscending);
    let key = |i: &AlarmHistoryItem| {
        format!(
            "{:020.6}/{}/{}",
            i.timestamp.unwrap_or(0.0),
            i.alarm_name.as_deref().unwrap_or(""),
            i.history_summary.as_deref().unwrap_or("")
        )
    };
    items.sort_by_key(key);
    if !ascending {
        items.reverse();
    }
    let page = estiba_core::page::paginate(items, key, req.next_token.as_deref(), limit, !ascending).map_err(|_| {
        ApiError::new(ErrorCode::InvalidNextToken, "The NextToken is invalid: pass the NextToken of a previous answer.")
    })?;
    Ok(json(&DescribeAlarmHistoryOutput { alarm_history_items: Some(page.items), next_token: page.next_token }))
}

async fn set_actions_enabled(s: &Server, cx: &Call, names: &[String], enabled: bool) -> Result<()> {
    s.transact(|st| {
        let mut txn = Txn::new();
        for name in names {
            // Names that are no alarm are ignored, as CloudWatch does.
            let Some(d) = alarm_doc(st, &cx.scope, name) else { continue };
            if d.value.alarm.actions_enabled == Some(enabled) {
                continue;
            }
            let mut doc = d.value.clone();
            doc.alarm.actions_enabled = Some(enabled);
            txn = txn.when(Compare::mod_revision(d.key.clone(), d.rev)).then(put_op(&d.key, &doc));
        }
        Ok::<_, ApiError>((txn, ()))
    })
    .await
}

pub async fn enable_alarm_actions(s: &Server, cx: &Call, req: EnableAlarmActionsInput) -> Result<Bytes> {
    set_actions_enabled(s, cx, &req.alarm_names, true).await?;
    Ok(Bytes::new())
}

pub async fn disable_alarm_actions(s: &Server, cx: &Call, req: DisableAlarmActionsInput) -> Result<Bytes> {
    set_actions_enabled(s, cx, &req.alarm_names, false).await?;
    Ok(Bytes::new())
}

/// The alarm an ARN names in the caller's scope.
fn tagged_alarm(scope: &Scope, arn: &str) -> Result<String> {
    let prefix = format!("arn:aws:cloudwatch:{}:{}:alarm:", scope.region, scope.account);
    match arn.strip_prefix(&prefix) {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ if arn.starts_with("arn:") => {
            Err(ApiError::new(ErrorCode::ResourceNotFoundException, format!("The resource {arn} does not exist.")))
        }
        _ => Err(invalid(format!(
            "Invalid ARN: {arn}. Pass an alarm ARN, arn:aws:cloudwatch:<region>:<account>:alarm:<name>."
        ))),
    }
}

async fn update_tags(
    s: &Server,
    cx: &Call,
    arn: &str,
    f: impl Fn(&mut BTreeMap<String, String>) -> Result<()>,
) -> Result<()> {
    let name = tagged_alarm(&cx.scope, arn)?;
    s.transact(|st| {
        let d = alarm_doc(st, &cx.scope, &name).ok_or_else(|| {
            ApiError::new(ErrorCode::ResourceNotFoundException, format!("The resource {arn} does not exist."))
        })?;
        let mut doc = d.value.clone();
        f(&mut doc.tags)?;
        Ok((Txn::new().when(Compare::mod_revision(d.key.clone(), d.rev)).then(put_op(&d.key, &doc)), ()))
    })
    .await
}

pub async fn tag_resource(s: &Server, cx: &Call, req: TagResourceInput) -> Result<Bytes> {
    update_tags(s, cx, &req.resource_arn, |tags| {
        for t in &req.tags {
            if t.key.starts_with("aws:") {
                return Err(invalid(format!("Tag keys beginning with aws: are reserved: {}.", t.key)));
            }
            tags.insert(t.key.clone(), t.value.clone());
        }
        if tags.len() > 50 {
            return Err(ApiError::new(ErrorCode::LimitExceededFault, "An alarm may have at most 50 tags."));
        }
        Ok(())
    })
    .await?;
    Ok(Bytes::new())
}

pub async fn untag_resource(s: &Server, cx: &Call, req: UntagResourceInput) -> Result<Bytes> {
    update_tags(s, cx, &req.resource_arn, |tags| {
        tags.retain(|k, _| !req.tag_keys.contains(k));
        Ok(())
    })
    .await?;
    Ok(Bytes::new())
}

pub async fn list_tags_for_resource(s: &Server, cx: &Call, req: ListTagsForResourceInput) -> Result<Bytes> {
    let name = tagged_alarm(&cx.scope, &req.resource_arn)?;
    let tags = {
        let st = s.view.read();
        alarm_doc(&st, &cx.scope, &name).map(|d| d.value.tags.clone()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::ResourceNotFoundException,
                format!("The resource {} does not exist.", req.resource_arn),
            )
        })?
    };
    Ok(json(&ListTagsForResourceOutput {
        tags: Some(tags.into_iter().map(|(key, value)| Tag { key, value }).collect()),
    }))
}
