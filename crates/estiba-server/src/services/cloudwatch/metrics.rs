//! Metrics: PutMetricData (AWS's checks, then the metric store), ListMetrics,
//! GetMetricStatistics and GetMetricData (MetricStat queries and metric math,
//! `estiba_core::metric_math`). [`run_queries`] is shared with alarm evaluation.
//!
//! Times: the store holds AWS time. Request timestamps are mapped with `to_aws`, answered
//! ones with `to_real`; periods and limits stay AWS's numbers.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use estiba_api::cloudwatch::*;
use estiba_api::{ApiError, Common};
use estiba_core::metric_math::{self, Series, Value as MathValue};
use estiba_core::Scope;
use estiba_metricstore as store;
use estiba_metricstore::{ListCursor, MetricId, MetricStore, Query, Selector, UnitFilter};

use super::{blocking, exclusive, invalid, missing, ms, store_error, Result};
use crate::services::{json, Call};
use crate::Server;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The largest magnitude CloudWatch takes (2^360), and the smallest other than zero (2^-360).
const MAX_VALUE: f64 = 2.348_542_582_773_833_2e108;
const MIN_VALUE: f64 = 4.257_959_840_008_151e-109;

fn unit_of(u: Option<StandardUnit>) -> store::Unit {
    Arc::from(u.unwrap_or(StandardUnit::None).as_str())
}

fn dims(d: &Option<Vec<Dimension>>) -> Vec<store::Dimension> {
    d.iter().flatten().map(|d| store::Dimension::new(&d.name, &d.value)).collect()
}

fn check_value(v: f64, path: &str) -> Result<()> {
    if !v.is_finite() || v.abs() > MAX_VALUE || (v != 0.0 && v.abs() < MIN_VALUE) {
        return Err(invalid(format!(
            "The value {v} for parameter {path} is invalid: values must be finite, between -2^360 and 2^360, and \
             zero or at least 2^-360 in magnitude."
        )));
    }
    Ok(())
}

/// Checks one datum as CloudWatch does and turns it into the store's form.
fn datum(
    d: &MetricDatum,
    path: &str,
    now_aws: i64,
    clock: &estiba_core::metric_time::MetricClock,
) -> Result<store::Datum> {
    if d.dimensions.as_ref().is_some_and(|x| x.len() > 30) {
        return Err(invalid(format!("The collection {path}.Dimensions must not have a size greater than 30.")));
    }
    let mut names = HashSet::new();
    for x in d.dimensions.iter().flatten() {
        if !names.insert(x.name.as_str()) {
            return Err(invalid(format!("The dimension name {} appears more than once in {path}.Dimensions.", x.name)));
        }
    }
    let value = match (&d.value, &d.values, &d.statistic_values) {
        (Some(_), Some(_), _) => return Err(exclusive(&format!("{path}.Value"), &format!("{path}.Values"))),
        (Some(_), _, Some(_)) => return Err(exclusive(&format!("{path}.Value"), &format!("{path}.StatisticValues"))),
        (_, Some(_), Some(_)) => return Err(exclusive(&format!("{path}.Values"), &format!("{path}.StatisticValues"))),
        (None, None, None) => {
            return Err(ApiError::new(
                ErrorCode::MissingRequiredParameterException,
                format!(
                    "One of the parameters {path}.Value, {path}.Values or {path}.StatisticValues must be specified."
                ),
            ))
        }
        (Some(v), None, None) => {
            check_value(*v, &format!("{path}.Value"))?;
            store::Value::Single(*v)
        }
        (None, Some(values), None) => {
            if values.len() > 150 {
                return Err(invalid(format!("The collection {path}.Values must not have a size greater than 150.")));
            }
            for v in values {
                check_value(*v, &format!("{path}.Values"))?;
            }
            let counts = d.counts.clone().unwrap_or_default();
            if d.counts.is_some() && counts.len() != values.len() {
                return Err(invalid(format!(
                    "The parameters {path}.Values and {path}.Counts must be of the same size (got {} and {}).",
                    values.len(),
                    counts.len()
                )));
            }
            for c in &counts {
                if !c.is_finite() || *c < 0.0 {
                    return Err(invalid(format!(
                        "The value {c} for parameter {path}.Counts is invalid: counts may not be negative."
                    )));
                }
            }
            store::Value::Values { values: values.clone(), counts }
        }
        (None, None, Some(s)) => {
            for (v, n) in
                [(s.sample_count, "SampleCount"), (s.sum, "Sum"), (s.minimum, "Minimum"), (s.maximum, "Maximum")]
            {
                check_value(v, &format!("{path}.StatisticValues.{n}"))?;
            }
            if s.sample_count <= 0.0 {
                return Err(invalid(format!(
                    "The parameter {path}.StatisticValues.SampleCount must be greater than 0."
                )));
            }
            if s.minimum > s.maximum {
                return Err(invalid(format!(
                    "The parameter {path}.StatisticValues.Minimum must be less than or equal to {path}.StatisticValues.Maximum."
                )));
            }
            store::Value::Statistics(store::StatisticSet {
                sample_count: s.sample_count,
                sum: s.sum,
                minimum: s.minimum,
                maximum: s.maximum,
            })
        }
    };
    if d.counts.is_some() && d.values.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterCombinationException,
            format!("The parameter {path}.Counts may only be given with {path}.Values."),
        ));
    }
    let resolution = match d.storage_resolution {
        None | Some(60) => store::Resolution::Standard,
        Some(1) => store::Resolution::High,
        Some(r) => {
            return Err(invalid(format!(
                "The value {r} for parameter {path}.StorageResolution is invalid. Valid values are 1 and 60."
            )))
        }
    };
    let timestamp = d.timestamp.map_or(now_aws, |t| clock.to_aws(ms(t)));
    if timestamp < now_aws - 14 * DAY_MS {
        return Err(invalid(format!("The parameter {path}.Timestamp must specify a time within the past two weeks.")));
    }
    if timestamp > now_aws + 2 * HOUR_MS {
        return Err(invalid(format!(
            "The parameter {path}.Timestamp must specify a time no more than two hours in the future."
        )));
    }
    Ok(store::Datum {
        name: d.metric_name.clone(),
        dimensions: dims(&d.dimensions),
        timestamp,
        unit: unit_of(d.unit),
        resolution,
        value,
    })
}

pub async fn put_metric_data(s: &Server, cx: &Call, req: PutMetricDataInput) -> Result<Bytes> {
    if req.namespace.starts_with("AWS/") {
        return Err(invalid(format!(
            "The value {} for parameter Namespace is invalid: namespaces starting with AWS/ are reserved for AWS services.",
            req.namespace
        )));
    }
    let mut given: Vec<(String, &MetricDatum)> = Vec::new();
    for (i, d) in req.metric_data.iter().flatten().enumerate() {
        given.push((format!("MetricData.member.{}", i + 1), d));
    }
    for (i, e) in req.entity_metric_data.iter().flatten().enumerate() {
        for (j, d) in e.metric_data.iter().flatten().enumerate() {
            given.push((format!("EntityMetricData.member.{}.MetricData.member.{}", i + 1, j + 1), d));
        }
    }
    if given.is_empty() {
        return Err(missing("MetricData"));
    }
    if given.len() > 1000 {
        return Err(invalid("The collection MetricData must not have a size greater than 1000."));
    }
    let now = s.metric_now_ms();
    let data = given.iter().map(|(path, d)| datum(d, path, now, &s.metric_clock)).collect::<Result<Vec<_>>>()?;
    let (metrics, repl, scope, ns) =
        (s.metrics.clone(), s.replication.clone(), cx.scope.clone(), req.namespace.clone());
    blocking(move || repl.put_metrics(&metrics, &scope.account, &scope.region, &ns, &data, now))
        .await?
        .map_err(store_error)?;
    Ok(Bytes::new())
}

fn wire_metric(m: &MetricId) -> Metric {
    Metric {
        namespace: Some(m.namespace.clone()),
        metric_name: Some(m.name.clone()),
        dimensions: Some(
            m.dimensions().iter().map(|d| Dimension { name: d.name.clone(), value: d.value.clone() }).collect(),
        ),
    }
}

/// Up to this many series in the store, ListMetrics scans them on the async worker.
const INLINE_LIST_SERIES: usize = 2_048;

pub async fn list_metrics(s: &Server, cx: &Call, req: ListMetricsInput) -> Result<Bytes> {
    let after = match req.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(ListCursor::from_token(t).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidNextToken,
                "The NextToken is invalid: pass the NextToken of a previous answer.",
            )
        })?),
    };
    let selector = Selector {
        account: cx.scope.account.clone(),
        region: cx.scope.region.clone(),
        namespace: req.namespace.clone(),
        name: req.metric_name.clone(),
        dimensions: req
            .dimensions
            .iter()
            .flatten()
            .map(|f| store::DimensionFilter { name: f.name.clone(), value: f.value.clone() })
            .collect(),
        exact_dimension_names: false,
    };
    let now = s.metric_now_ms();
    let since = if req.recently_active.is_some() { now - 3 * HOUR_MS } else { now - 14 * DAY_MS };
    // The scan is in memory: over a few thousand series it takes microseconds, less than the
    // blocking pool's hand-off (a thread woken, two context switches, the pool's lock), so it
    // runs here when the store is that small and no shard is busy; else on the blocking pool,
    // off the async workers.
    let page = match s.metrics.try_list(&selector, since, after.as_ref(), 500, INLINE_LIST_SERIES) {
        Some(page) => page,
        None => {
            let metrics = s.metrics.clone();
            blocking(move || metrics.list(&selector, since, after.as_ref(), 500)).await?
        }
    };
    Ok(json(&ListMetricsOutput {
        metrics: Some(page.metrics.iter().map(wire_metric).collect()),
        next_token: page.next.map(|c| c.to_token()),
        owning_accounts: None,
    }))
}

/// `1,440` as CloudWatch writes counts in messages.
fn thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whether GetMetricStatistics and GetMetricData take this period.
fn valid_query_period(p: i64) -> bool {
    matches!(p, 1 | 5 | 10 | 20 | 30) || (p >= 60 && p % 60 == 0)
}

fn period_error(p: i64) -> ApiError {
    invalid(format!(
        "The parameter Period ({p}) must be a multiple of 60, or 1, 5, 10, 20 or 30 for high-resolution metrics."
    ))
}

pub async fn get_metric_statistics(s: &Server, cx: &Call, req: GetMetricStatisticsInput) -> Result<Bytes> {
    let mut statistics = Vec::new();
    match (&req.statistics, &req.extended_statistics) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {
            return Err(exclusive("Statistics", "ExtendedStatistics"));
        }
        _ => {}
    }
    let mut names = Vec::new();
    for st in req.statistics.iter().flatten() {
        statistics.push(store::Statistic::parse(st.as_str()).expect("the model's statistics parse"));
        names.push((st.as_str().to_owned(), false));
    }
    for e in req.extended_statistics.iter().flatten() {
        match store::Statistic::parse(e) {
            Some(p @ store::Statistic::Percentile(_)) => {
                statistics.push(p);
                names.push((e.clone(), true));
            }
            _ => {
                return Err(invalid(format!(
                    "The value {e} for parameter ExtendedStatistics is not supported: use a percentile, p0.0 to p100."
                )))
            }
        }
    }
    if statistics.is_empty() {
        return Err(missing("Statistics or ExtendedStatistics"));
    }
    let period = i64::from(req.period);
    if !valid_query_period(period) {
        return Err(period_error(period));
    }
    let (start, end) = (s.metric_clock.to_aws(ms(req.start_time)), s.metric_clock.to_aws(ms(req.end_time)));
    if start >= end {
        return Err(invalid("The parameter StartTime must be less than the parameter EndTime."));
    }
    let requested = (end - start + period * 1000 - 1) / (period * 1000);
    if requested > 1440 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterCombinationException,
            format!(
                "You have requested up to {} datapoints, which exceeds the limit of 1,440. You may reduce the datapoints \
                 requested by increasing Period, or decreasing the time range.",
                thousands(requested)
            ),
        ));
    }
    let unit = match req.unit {
        Some(u) => UnitFilter::Only(unit_of(Some(u))),
        None => UnitFilter::Each,
    };
    let id =
        MetricId::new(&cx.scope.account, &cx.scope.region, &req.namespace, &req.metric_name, dims(&req.dimensions));
    let q = Query { start, end, period, statistics, unit };
    let now = s.metric_now_ms();
    let metrics = s.metrics.clone();
    let points = blocking(move || metrics.get(&id, &q, now)).await?.map_err(store_error)?;
    let datapoints = points
        .iter()
        .map(|p| {
            let mut d = Datapoint {
                timestamp: Some(s.metric_clock.to_real(p.timestamp) as f64 / 1000.0),
                unit: p.unit.as_deref().and_then(StandardUnit::from_str_opt),
                ..Default::default()
            };
            let mut ext = BTreeMap::new();
            for ((name, extended), v) in names.iter().zip(&p.values) {
                let Some(v) = *v else { continue };
                if *extended {
                    ext.insert(name.clone(), v);
                    continue;
                }
                match name.as_str() {
                    "SampleCount" => d.sample_count = Some(v),
                    "Sum" => d.sum = Some(v),
                    "Average" => d.average = Some(v),
                    "Minimum" => d.minimum = Some(v),
                    _ => d.maximum = Some(v),
                }
            }
            if names.iter().any(|(_, e)| *e) {
                d.extended_statistics = Some(ext);
            }
            d
        })
        .collect();
    Ok(json(&GetMetricStatisticsOutput { datapoints: Some(datapoints), label: Some(req.metric_name) }))
}

// ---------------------------------------------------------------------------------------
// GetMetricData

/// One query's answer: its series (AWS time, ms) and label.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    pub id: String,
    pub label: String,
    pub return_data: bool,
    pub series: Series,
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new(Common::ValidationError, message.into())
}

/// Checks GetMetricData's (or a metric math alarm's) queries: unique ids that start with a
/// lowercase letter, exactly one of MetricStat and Expression, a known statistic, a valid
/// period, expressions that parse and name known ids.
fn check_queries(queries: &[MetricDataQuery]) -> Result<Vec<Option<metric_math::Expr>>> {
    if queries.is_empty() {
        return Err(missing("MetricDataQueries"));
    }
    if queries.len() > 500 {
        return Err(invalid("The collection MetricDataQueries must not have a size greater than 500."));
    }
    let mut ids = HashSet::new();
    for q in queries {
        if !q.id.starts_with(|c: char| c.is_ascii_lowercase())
            || !q.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(validation(format!(
                "The value {} for parameter MetricDataQueries.Id is invalid: an id starts with a lowercase letter and \
                 holds only letters, digits and underscores.",
                q.id
            )));
        }
        if !ids.insert(q.id.as_str()) {
            return Err(validation(format!("The value {} for parameter MetricDataQueries.Id is duplicated.", q.id)));
        }
    }
    let mut out = Vec::new();
    for q in queries {
        match (&q.metric_stat, &q.expression) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(validation(format!(
                    "Exactly one of the parameters MetricStat and Expression must be specified in the query {}.",
                    q.id
                )))
            }
            (Some(st), None) => {
                if !valid_query_period(i64::from(st.period)) {
                    return Err(period_error(i64::from(st.period)));
                }
                if st.metric.metric_name.is_none() || st.metric.namespace.is_none() {
                    return Err(missing(&format!("MetricStat.Metric.MetricName and Namespace of the query {}", q.id)));
                }
                if store::Statistic::parse(&st.stat).is_none() {
                    return Err(invalid(format!(
                        "The value {} for parameter MetricStat.Stat of the query {} is not supported: use SampleCount, \
                         Sum, Average, Minimum, Maximum or a percentile (p99).",
                        st.stat, q.id
                    )));
                }
                out.push(None);
            }
            (None, Some(e)) => {
                let parsed =
                    metric_math::parse(e).map_err(|m| validation(format!("Error in expression {}: {m}", q.id)))?;
                let mut refs = Vec::new();
                metric_math::references(&parsed, &mut refs);
                for r in refs {
                    if !ids.contains(r.as_str()) || r == q.id {
                        return Err(validation(format!("Error in expression {}: Unrecognized identifier {r}", q.id)));
                    }
                }
                out.push(Some(parsed));
            }
        }
    }
    Ok(out)
}

struct Env<'a> {
    done: &'a BTreeMap<String, Series>,
    stats: &'a [String],
}

impl metric_math::Env for Env<'_> {
    fn series(&self, id: &str) -> Option<&Series> {
        self.done.get(id)
    }
    fn metric_ids(&self) -> Vec<String> {
        self.stats.to_vec()
    }
}

/// The queries of one request over `[start, end)` (AWS time, ms) as of `now`, checked, and
/// the series computed so far: a MetricStat is read from the store only when something needs
/// it (an expression, or the page being answered). Blocking (the store's calls).
struct Run<'a> {
    metrics: &'a MetricStore,
    scope: &'a Scope,
    queries: &'a [MetricDataQuery],
    exprs: Vec<Option<metric_math::Expr>>,
    start: i64,
    end: i64,
    now: i64,
    done: BTreeMap<String, Series>,
    /// The ids of the MetricStat queries, in order (what `METRICS()` covers).
    stat_ids: Vec<String>,
}

impl<'a> Run<'a> {
    fn new(
        metrics: &'a MetricStore,
        scope: &'a Scope,
        queries: &'a [MetricDataQuery],
        start: i64,
        end: i64,
        now: i64,
    ) -> Result<Run<'a>> {
        let exprs = check_queries(queries)?;
        let stat_ids = queries.iter().filter(|q| q.metric_stat.is_some()).map(|q| q.id.clone()).collect();
        Ok(Run { metrics, scope, queries, exprs, start, end, now, done: BTreeMap::new(), stat_ids })
    }

    /// The store's series and query of a MetricStat.
    fn store_query(&self, st: &MetricStat) -> (MetricId, Query) {
        let id = MetricId::new(
            &self.scope.account,
            &self.scope.region,
            st.metric.namespace.clone().unwrap_or_default(),
            st.metric.metric_name.clone().unwrap_or_default(),
            dims(&st.metric.dimensions),
        );
        let statistic = store::Statistic::parse(&st.stat).expect("checked");
        let unit = st.unit.map_or(UnitFilter::Merged, |u| UnitFilter::Only(unit_of(Some(u))));
        (
            id,
            Query { start: self.start, end: self.end, period: i64::from(st.period), statistics: vec![statistic], unit },
        )
    }

    /// Reads the MetricStat query `i` from the store, unless it was.
    fn fetch(&mut self, i: usize) -> Result<()> {
        let q = &self.queries[i];
        let Some(st) = &q.metric_stat else { return Ok(()) };
        if self.done.contains_key(&q.id) {
            return Ok(());
        }
        let (id, query) = self.store_query(st);
        let mut series = Series::with_capacity(
            usize::try_from((self.end - self.start) / (query.period * 1000) + 1).unwrap_or(0).min(1 << 16),
        );
        self.metrics
            .get_values(&id, &query, self.now, |t, v| {
                series.push(t, v);
                true
            })
            .map_err(store_error)?;
        self.done.insert(q.id.clone(), series);
        Ok(())
    }

    /// Whether query `i` has any datapoint (a MetricStat not read yet is asked for its first
    /// one only).
    fn has_data(&self, i: usize) -> Result<bool> {
        let q = &self.queries[i];
        if let Some(s) = self.done.get(&q.id) {
            return Ok(!s.is_empty());
        }
        let Some(st) = &q.metric_stat else { return Ok(false) };
        let (id, query) = self.store_query(st);
        let mut any = false;
        self.metrics
            .get_values(&id, &query, self.now, |_, _| {
                any = true;
                false
            })
            .map_err(store_error)?;
        Ok(any)
    }

    /// Evaluates every expression, in dependency order, after reading the MetricStat queries
    /// they name (all of them when one uses `METRICS()`) and those `wanted` says.
    fn run(&mut self, wanted: impl Fn(usize) -> bool) -> Result<()> {
        let mut named = HashSet::new();
        let mut all = false;
        for e in self.exprs.iter().flatten() {
            let mut refs = Vec::new();
            metric_math::references(e, &mut refs);
            named.extend(refs);
            all |= metric_math::uses_metrics(e);
        }
        for i in 0..self.queries.len() {
            if all || wanted(i) || named.contains(&self.queries[i].id) {
                self.fetch(i)?;
            }
        }
        // Expressions, as their inputs become available.
        let exprs = std::mem::take(&mut self.exprs);
        let mut pending: Vec<(usize, &metric_math::Expr)> =
            exprs.iter().enumerate().filter_map(|(i, e)| e.as_ref().map(|e| (i, e))).collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut still = Vec::new();
            for (i, e) in pending {
                let mut refs = Vec::new();
                metric_math::references(e, &mut refs);
                if !refs.iter().all(|r| self.done.contains_key(r)) {
                    still.push((i, e));
                    continue;
                }
                let q = &self.queries[i];
                let env = Env { done: &self.done, stats: &self.stat_ids };
                let v = metric_math::evaluate(e, &env)
                    .map_err(|m| validation(format!("Error in expression {}: {m}", q.id)))?;
                let series = match v {
                    MathValue::Series(s) => s,
                    MathValue::Scalar(x) => {
                        // A scalar is answered at every timestamp the request's metrics have.
                        for j in 0..self.queries.len() {
                            self.fetch(j)?;
                        }
                        let ts = metric_math::union_timestamps(self.stat_ids.iter().map(|id| &self.done[id]));
                        if x.is_finite() {
                            ts.into_iter().map(|t| (t, x)).collect()
                        } else {
                            Series::new()
                        }
                    }
                    MathValue::List(_) => {
                        return Err(validation(format!(
                        "Error in expression {}: it returns an array of time series; wrap it in SUM, AVG, MIN or MAX.",
                        q.id
                    )))
                    }
                };
                self.done.insert(q.id.clone(), series);
            }
            if still.len() == before {
                let ids: Vec<&str> = still.iter().map(|(i, _)| self.queries[*i].id.as_str()).collect();
                return Err(validation(format!("Circular reference between the expressions {}.", ids.join(", "))));
            }
            pending = still;
        }
        self.exprs = exprs;
        Ok(())
    }

    /// The label of query `i`.
    fn label(&self, i: usize) -> String {
        let q = &self.queries[i];
        q.label.clone().unwrap_or_else(|| match &q.metric_stat {
            Some(st) => st.metric.metric_name.clone().unwrap_or_default(),
            None => q.id.clone(),
        })
    }
}

/// Runs `queries` over `[start, end)` (AWS time, ms) as of `now`: each MetricStat from the
/// store, then the expressions in dependency order. Blocking (the store's calls).
pub fn run_queries(
    metrics: &MetricStore,
    scope: &Scope,
    queries: &[MetricDataQuery],
    start: i64,
    end: i64,
    now: i64,
) -> Result<Vec<QueryResult>> {
    let mut run = Run::new(metrics, scope, queries, start, end, now)?;
    run.run(|_| true)?;
    Ok((0..queries.len())
        .map(|i| QueryResult {
            id: queries[i].id.clone(),
            label: run.label(i),
            return_data: queries[i].return_data.unwrap_or(true),
            series: run.done.remove(&queries[i].id).unwrap_or_default(),
        })
        .collect())
}

/// Where a page of GetMetricData starts: the query (its index in MetricDataQueries) whose
/// datapoints earlier pages did not all give, and how many of them they gave. The results
/// before it are complete; those after it not begun.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    query: usize,
    given: usize,
}

/// GetMetricData's NextToken.
fn token(p: Position) -> String {
    format!("estiba-gmd-{}-{}", p.query, p.given)
}

/// A NextToken: a [`Position`], or (`Err`) the count of datapoints earlier pages gave, which
/// tokens of earlier estiba versions say.
fn parse_token(t: &str) -> Option<std::result::Result<Position, usize>> {
    let rest = t.strip_prefix("estiba-gmd-")?;
    Some(match rest.split_once('-') {
        Some((q, g)) => Ok(Position { query: q.parse().ok()?, given: g.parse().ok()? }),
        None => Err(rest.parse().ok()?),
    })
}

/// One page of GetMetricData's answer, from `from`: every query that returns data, in order,
/// with at most `max` datapoints in all (newest first when `descending`), and where the next
/// page starts. Only the queries this page gives datapoints of are read whole; for those after
/// the page's last, whether they have data is enough (it makes their status `PartialData`).
fn page(
    run: &mut Run,
    from: std::result::Result<Position, usize>,
    max: usize,
    descending: bool,
    clock: &estiba_core::metric_time::MetricClock,
) -> Result<(Vec<MetricDataResult>, Option<Position>)> {
    let returned: Vec<usize> = (0..run.queries.len()).filter(|&i| run.queries[i].return_data.unwrap_or(true)).collect();
    let from = match from {
        Ok(p) => p,
        Err(mut skip) => {
            // A count of datapoints: read the queries it covers to find where it ends.
            run.run(|_| true)?;
            let mut at = Position { query: run.queries.len(), given: 0 };
            for &i in &returned {
                let n = run.done.get(&run.queries[i].id).map_or(0, Series::len);
                if skip < n {
                    at = Position { query: i, given: skip };
                    break;
                }
                skip -= n;
            }
            at
        }
    };
    run.run(|_| false)?;
    let mut budget = max;
    let mut out = Vec::with_capacity(returned.len());
    let mut next = None;
    for i in returned {
        let (id, label) = (run.queries[i].id.clone(), run.label(i));
        let result = |ts: Vec<f64>, vs: Vec<f64>, complete: bool| MetricDataResult {
            id: Some(id),
            label: Some(label),
            timestamps: Some(ts),
            values: Some(vs),
            status_code: Some(if complete { StatusCode::Complete } else { StatusCode::PartialData }),
            messages: Some(vec![]),
        };
        if i < from.query {
            // Given whole by earlier pages.
            out.push(result(vec![], vec![], true));
            continue;
        }
        let skip = if i == from.query { from.given } else { 0 };
        if budget == 0 {
            // Past this page: only whether anything is left matters.
            let left = if skip == 0 {
                run.has_data(i)?
            } else {
                run.fetch(i)?;
                run.done.get(&run.queries[i].id).is_some_and(|s| s.len() > skip)
            };
            if left {
                next.get_or_insert(Position { query: i, given: skip });
            }
            out.push(result(vec![], vec![], !left));
            continue;
        }
        run.fetch(i)?;
        let series = &run.done[&run.queries[i].id];
        let skipped = skip.min(series.len());
        let take = (series.len() - skipped).min(budget);
        budget -= take;
        let complete = skipped + take == series.len();
        if !complete {
            next.get_or_insert(Position { query: i, given: skipped + take });
        }
        let range =
            if descending { series.len() - skipped - take..series.len() - skipped } else { skipped..skipped + take };
        let (ts, vs) = (&series.timestamps()[range.clone()], &series.values()[range]);
        let (ts, vs): (Vec<f64>, Vec<f64>) = if descending {
            (ts.iter().rev().map(|t| clock.to_real(*t) as f64 / 1000.0).collect(), vs.iter().rev().copied().collect())
        } else {
            (ts.iter().map(|t| clock.to_real(*t) as f64 / 1000.0).collect(), vs.to_vec())
        };
        out.push(result(ts, vs, complete));
        // Nothing later reads it again.
        run.done.remove(&run.queries[i].id);
    }
    Ok((out, next))
}

pub async fn get_metric_data(s: &Server, cx: &Call, req: GetMetricDataInput) -> Result<Bytes> {
    let (start, end) = (s.metric_clock.to_aws(ms(req.start_time)), s.metric_clock.to_aws(ms(req.end_time)));
    if start >= end {
        return Err(validation("The parameter StartTime must be less than the parameter EndTime."));
    }
    if !req.metric_data_queries.iter().any(|q| q.return_data.unwrap_or(true)) {
        return Err(validation("At least one query of MetricDataQueries must have ReturnData set to true."));
    }
    let bad_token = || {
        ApiError::new(ErrorCode::InvalidNextToken, "The NextToken is invalid: pass the NextToken of a previous answer.")
    };
    let from = match req.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => Ok(Position { query: 0, given: 0 }),
        Some(t) => match parse_token(t).ok_or_else(bad_token)? {
            Ok(p) if p.query >= req.metric_data_queries.len() => return Err(bad_token()),
            other => other,
        },
    };
    let max = req.max_datapoints.filter(|m| *m > 0).map_or(100_800, |m| m as usize);
    let descending = req.scan_by != Some(ScanBy::TimestampAscending);
    let now = s.metric_now_ms();
    let (metrics, scope, queries, clock) =
        (s.metrics.clone(), cx.scope.clone(), req.metric_data_queries, s.metric_clock);
    let (out, next) = blocking(move || {
        let mut run = Run::new(&metrics, &scope, &queries, start, end, now)?;
        page(&mut run, from, max, descending, &clock)
    })
    .await??;
    Ok(json(&GetMetricDataOutput {
        metric_data_results: Some(out),
        next_token: next.map(token),
        messages: Some(vec![]),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_written_with_thousands_separators() {
        assert_eq!(thousands(1441), "1,441");
        assert_eq!(thousands(100), "100");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn query_periods() {
        for ok in [1, 5, 10, 20, 30, 60, 300, 3600] {
            assert!(valid_query_period(ok), "{ok}");
        }
        for bad in [0, 2, 15, 45, 90] {
            assert!(!valid_query_period(bad), "{bad}");
        }
    }

    fn stat(id: &str, name: &str) -> MetricDataQuery {
        MetricDataQuery {
            id: id.into(),
            metric_stat: Some(MetricStat {
                metric: Metric { namespace: Some("App".into()), metric_name: Some(name.into()), dimensions: None },
                period: 60,
                stat: "Sum".into(),
                unit: None,
            }),
            return_data: Some(false),
            ..Default::default()
        }
    }

    fn expr(id: &str, e: &str) -> MetricDataQuery {
        MetricDataQuery { id: id.into(), expression: Some(e.into()), ..Default::default() }
    }

    #[test]
    fn queries_are_checked() {
        assert!(check_queries(&[stat("m1", "A"), expr("e1", "m1 * 2")]).is_ok());
        let e = check_queries(&[stat("m1", "A"), expr("e1", "m2 * 2")]).unwrap_err();
        assert_eq!(e.message, "Error in expression e1: Unrecognized identifier m2");
        let e = check_queries(&[stat("m1", "A"), stat("m1", "B")]).unwrap_err();
        assert!(e.message.contains("duplicated"));
        let e = check_queries(&[stat("M1", "A")]).unwrap_err();
        assert!(e.message.contains("lowercase"));
        let mut bad = stat("m1", "A");
        bad.metric_stat.as_mut().unwrap().stat = "tm90".into();
        assert_eq!(check_queries(&[bad]).unwrap_err().code, "InvalidParameterValue");
        let mut both = stat("m1", "A");
        both.expression = Some("1".into());
        assert!(check_queries(&[both]).unwrap_err().message.contains("Exactly one"));
    }

    #[test]
    fn queries_run_over_the_store_with_math_in_dependency_order() {
        let dir = tempfile::tempdir().unwrap();
        let st = MetricStore::open(dir.path(), Default::default()).unwrap();
        let scope = Scope { account: "123456789012".into(), region: "us-east-1".into() };
        let t0: i64 = 1_800_000_020_000 / 60_000 * 60_000;
        let put = |name: &str, t: i64, v: f64| {
            let d = store::Datum {
                name: name.into(),
                dimensions: vec![],
                timestamp: t,
                unit: Arc::from("None"),
                resolution: store::Resolution::Standard,
                value: store::Value::Single(v),
            };
            st.put(&scope.account, &scope.region, "App", &[d], t).unwrap();
        };
        put("A", t0, 10.0);
        put("A", t0 + 60_000, 30.0);
        put("B", t0, 40.0);
        put("B", t0 + 60_000, 60.0);
        // e2 uses e1, listed before it.
        let qs = [
            stat("m1", "A"),
            stat("m2", "B"),
            expr("e2", "e1 / 2"),
            expr("e1", "m1/m2*100"),
            expr("e3", "SUM(METRICS())"),
        ];
        let r = run_queries(&st, &scope, &qs, t0, t0 + 120_000, t0 + 120_000).unwrap();
        let get = |id: &str| r.iter().find(|q| q.id == id).unwrap().series.clone();
        assert_eq!(get("e1"), Series::from([(t0, 25.0), (t0 + 60_000, 50.0)]));
        assert_eq!(get("e2"), Series::from([(t0, 12.5), (t0 + 60_000, 25.0)]));
        assert_eq!(get("e3"), Series::from([(t0, 50.0), (t0 + 60_000, 90.0)]));
        assert_eq!(r[0].label, "A");
        assert!(!r[0].return_data && r[2].return_data);
        let cyc = [stat("m1", "A"), expr("e1", "e2 + 1"), expr("e2", "e1 + 1")];
        assert!(run_queries(&st, &scope, &cyc, t0, t0 + 60_000, t0).unwrap_err().message.contains("Circular"));
    }

    /// A page's results: timestamps, values, whether complete.
    type Page = Vec<(Vec<i64>, Vec<f64>, bool)>;

    /// GetMetricData's pages as the first version made them: every query computed, the
    /// returned ones' datapoints (newest first when `descending`) cut at `offset` + `max`.
    fn reference_page(results: &[QueryResult], offset: usize, max: usize, descending: bool) -> (Page, Option<usize>) {
        let (mut skip, mut budget, mut more) = (offset, max, false);
        let mut out = Vec::new();
        for r in results.iter().filter(|r| r.return_data) {
            let mut points: Vec<(i64, f64)> = r.series.iter().collect();
            if descending {
                points.reverse();
            }
            let skipped = skip.min(points.len());
            skip -= skipped;
            let rest = &points[skipped..];
            let take = rest.len().min(budget);
            budget -= take;
            more |= take != rest.len();
            out.push((
                rest[..take].iter().map(|p| p.0).collect(),
                rest[..take].iter().map(|p| p.1).collect(),
                take == rest.len(),
            ));
        }
        (out, more.then_some(offset + max - budget))
    }

    #[test]
    fn pages_resume_where_the_last_ended_and_match_computing_everything() {
        let dir = tempfile::tempdir().unwrap();
        let st = MetricStore::open(dir.path(), Default::default()).unwrap();
        let scope = Scope { account: "123456789012".into(), region: "us-east-1".into() };
        let t0: i64 = 1_800_000_000_000 / 60_000 * 60_000;
        let mut data = Vec::new();
        for (name, n) in [("A", 7), ("B", 0), ("C", 5), ("D", 3), ("E", 6)] {
            for k in 0..n {
                data.push(store::Datum {
                    name: name.into(),
                    dimensions: vec![],
                    timestamp: t0 + k * 60_000 + (if name == "E" { 120_000 } else { 0 }),
                    unit: Arc::from("None"),
                    resolution: store::Resolution::Standard,
                    value: store::Value::Single((k + 1) as f64 * 10.0 + name.len() as f64),
                });
            }
        }
        st.put(&scope.account, &scope.region, "App", &data, t0 + 600_000).unwrap();
        let shown = |mut q: MetricDataQuery| {
            q.return_data = None;
            q
        };
        let qs = [
            shown(stat("a", "A")),
            shown(stat("b", "B")),
            stat("hidden", "C"),
            shown(expr("e", "a + hidden")),
            shown(stat("d", "D")),
            shown(expr("s", "SUM(METRICS())")),
            shown(stat("late", "E")),
        ];
        let (start, end, now) = (t0, t0 + 600_000, t0 + 600_000);
        let all = run_queries(&st, &scope, &qs, start, end, now).unwrap();
        let clock = estiba_core::metric_time::MetricClock::default();
        for descending in [true, false] {
            for max in [1, 2, 3, 5, 7, 11, 100] {
                let (mut from, mut offset, mut pages) = (Ok(Position { query: 0, given: 0 }), 0, 0);
                loop {
                    let mut run = Run::new(&st, &scope, &qs, start, end, now).unwrap();
                    let (got, next) = page(&mut run, from, max, descending, &clock).unwrap();
                    let (want, want_next) = reference_page(&all, offset, max, descending);
                    let got: Vec<_> = got
                        .iter()
                        .map(|r| {
                            let ts = r.timestamps.as_ref().unwrap().iter().map(|t| (*t * 1000.0) as i64).collect();
                            (ts, r.values.clone().unwrap(), r.status_code == Some(StatusCode::Complete))
                        })
                        .collect();
                    assert_eq!(got, want, "descending {descending}, max {max}, page {pages}");
                    assert_eq!(next.is_some(), want_next.is_some());
                    // An old token (a count) resumes at the same place.
                    if let Some(o) = want_next {
                        let mut run = Run::new(&st, &scope, &qs, start, end, now).unwrap();
                        let (old, old_next) = page(&mut run, Err(o), max, descending, &clock).unwrap();
                        let mut run = Run::new(&st, &scope, &qs, start, end, now).unwrap();
                        let (new, new_next) = page(&mut run, Ok(next.unwrap()), max, descending, &clock).unwrap();
                        assert_eq!((old, old_next), (new, new_next));
                        assert_eq!(parse_token(&token(next.unwrap())), Some(Ok(next.unwrap())));
                    }
                    pages += 1;
                    match (next, want_next) {
                        (Some(p), Some(o)) => {
                            from = Ok(p);
                            offset = o;
                        }
                        _ => break,
                    }
                }
                // 29 returned datapoints: a + e + d + s + late = 7 + 5 + 3 + 8 + 6 (b has none).
                assert_eq!(pages, 29usize.div_ceil(max), "descending {descending}, max {max}");
            }
        }
        assert_eq!(parse_token("estiba-gmd-12"), Some(Err(12)));
        assert_eq!(parse_token("estiba-gmd-x-1"), None);
        assert_eq!(parse_token("other"), None);
    }
}
