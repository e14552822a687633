//! Amazon CloudWatch Logs (signing name `logs`, AWS JSON 1.1, target prefix `Logs_20140328`):
//! log groups with their retention, class, tags and metric filters, log streams and their
//! events, search (FilterLogEvents with filter patterns), live tail (StartLiveTail's event
//! stream) and Logs Insights basics.
//!
//! Groups are documents in the versioned store (`estiba_core::logs::LogGroupDoc` under
//! `logs/<account>/<region>/groups/<name>`), written with [`Server::transact`] and read
//! through the view table [`groups_table`]. Streams and events live in the log store
//! ([`Server::logs`], `estiba-logstore`) under the group's `id`; its calls block, so they run
//! on `spawn_blocking` ([`blocking`]). AWS's rules and messages are `estiba_core::logs`;
//! filter patterns `estiba_core::logs_pattern`, Insights `estiba_core::logs_insights`.
//!
//! - [`groups`]: CreateLogGroup, DeleteLogGroup, DescribeLogGroups, retention, tags;
//! - [`streams`]: CreateLogStream, DeleteLogStream, DescribeLogStreams, PutLogEvents,
//!   GetLogEvents;
//! - [`search`]: FilterLogEvents;
//! - [`live_tail`]: StartLiveTail;
//! - [`metric_filters`]: PutMetricFilter, DescribeMetricFilters, DeleteMetricFilter;
//! - [`insights`]: StartQuery, GetQueryResults, StopQuery, DescribeQueries.
//!
//! The `logs-housekeeping` controller (`controller::logs`) enforces retention and removes the
//! log store's data of deleted groups.

use bytes::Bytes;
use estiba_api::logs::*;
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, DecodeError};
use estiba_core::logs::{self as core, LogGroupDoc, LogsError};
use estiba_core::Scope;

use super::{route, BoxFuture, Call, EventStream, Input, Service};
use crate::view::{Doc, State, TableDef};
use crate::Server;

mod groups;
mod insights;
mod live_tail;
mod metric_filters;
mod search;
mod streams;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The CloudWatch Logs service.
pub struct Logs;

/// The key prefix of the service's documents, as view tables take it.
const PREFIX: &str = "logs/";

static TABLES: [TableDef; 1] = [TableDef::of::<LogGroupDoc>(PREFIX, core::GROUPS)];

/// The view table of log groups (the one [`Logs::tables`] registers).
pub fn groups_table() -> &'static TableDef {
    &TABLES[0]
}

impl Service for Logs {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let missing = |other: Operation| super::not_implemented(&Logs, other.name());
            route! { &Logs, s, &cx, Operation::ALL[op], input, missing;
                CreateLogGroup => groups::create_log_group,
                DeleteLogGroup => groups::delete_log_group,
                DescribeLogGroups => groups::describe_log_groups,
                PutRetentionPolicy => groups::put_retention_policy,
                DeleteRetentionPolicy => groups::delete_retention_policy,
                TagResource => groups::tag_resource,
                UntagResource => groups::untag_resource,
                ListTagsForResource => groups::list_tags_for_resource,
                TagLogGroup => groups::tag_log_group,
                UntagLogGroup => groups::untag_log_group,
                ListTagsLogGroup => groups::list_tags_log_group,
                CreateLogStream => streams::create_log_stream,
                DeleteLogStream => streams::delete_log_stream,
                DescribeLogStreams => streams::describe_log_streams,
                PutLogEvents => streams::put_log_events,
                GetLogEvents => streams::get_log_events,
                FilterLogEvents => search::filter_log_events,
                PutMetricFilter => metric_filters::put_metric_filter,
                DescribeMetricFilters => metric_filters::describe_metric_filters,
                DeleteMetricFilter => metric_filters::delete_metric_filter,
                StartQuery => insights::start_query,
                GetQueryResults => insights::get_query_results,
                StopQuery => insights::stop_query,
                DescribeQueries => insights::describe_queries,
            }
        })
    }

    /// A body that is not JSON is a `SerializationException`; any value the model refuses is
    /// an `InvalidParameterException` with AWS's validation message.
    fn decode_error(&self, e: DecodeError, _protocol: Protocol) -> ApiError {
        super::json_decode_error(e, ErrorCode::InvalidParameterException)
    }

    fn tables(&self) -> &'static [TableDef] {
        &TABLES
    }

    fn streams(&self, op: usize) -> bool {
        Operation::ALL[op] == Operation::StartLiveTail
    }

    fn call_stream<'a>(
        &'a self,
        s: &'a Server,
        cx: Call,
        _op: usize,
        input: Input,
    ) -> BoxFuture<'a, Result<EventStream>> {
        Box::pin(async move {
            let req: StartLiveTailRequest = input.decode().map_err(|e| self.decode_error(e, Protocol::Json))?;
            live_tail::start_live_tail(s, &cx, req).await
        })
    }
}

/// The group named `name` in the caller's scope.
pub(crate) fn find_group<'a>(st: &'a State, scope: &Scope, name: &str) -> Result<&'a Doc<LogGroupDoc>, LogsError> {
    st.doc::<LogGroupDoc>(groups_table(), &core::group_key(scope, name)).ok_or_else(LogsError::group_not_found)
}

/// A copy of the group named `name` (the view's lock is not held across awaits).
pub(crate) fn group_doc(s: &Server, scope: &Scope, name: &str) -> Result<LogGroupDoc, LogsError> {
    let st = s.view.read();
    find_group(&st, scope, name).map(|d| d.value.clone())
}

/// Runs a log store call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorCode::ServiceUnavailableException, format!("log store call failed: {e}")))
}

/// A log store error in the API's terms.
pub(crate) fn store_error(e: estiba_logstore::Error) -> ApiError {
    match e {
        estiba_logstore::Error::NoSuchStream { .. } => LogsError::stream_not_found().into(),
        estiba_logstore::Error::StreamExists { .. } => LogsError::stream_exists().into(),
        e => {
            tracing::error!(error = %e, "log store");
            ApiError::new(ErrorCode::ServiceUnavailableException, e.to_string())
        }
    }
}

/// The call's time in milliseconds since the epoch.
pub(crate) fn now_ms(cx: &Call) -> i64 {
    (cx.now * 1000.0).round() as i64
}

/// A page size: `limit` when given (the model checks its range), else `default`.
pub(crate) fn limit(limit: Option<i32>, default: usize) -> usize {
    limit.filter(|n| *n > 0).map_or(default, |n| n as usize)
}

/// A page of `items` sorted by `key` (see `estiba_core::page`), with the Logs API's message
/// for a token it did not give out.
pub(crate) fn page<T, K: AsRef<str>>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
    token: Option<&str>,
    limit: usize,
    desc: bool,
) -> Result<estiba_core::page::Page<T>, LogsError> {
    estiba_core::page::paginate(items, key, token, limit, desc).map_err(|_| LogsError::bad_token())
}
