//! The front door of the AWS APIs: finds which service and operation a request is for,
//! decodes its input in the request's protocol, calls the service, and encodes the answer
//! or the error in the same protocol. This is the one place errors become responses.
//!
//! Protocols, told apart by the request's shape:
//! - AWS JSON 1.0 / 1.1: `POST /` with `X-Amz-Target: <prefix>.<Operation>`;
//! - Smithy RPC v2 CBOR: `POST /service/<prefix>/operation/<Operation>`;
//! - AWS Query and EC2: `POST /` with a form body holding `Action` and `Version`.
//!
//! The service is the SigV4 credential scope's (`ecs`, `elasticloadbalancing`, `monitoring`,
//! ...) when the request is signed, else the one the target prefix, path or `Action` and
//! `Version` name. A service estiba does not serve is refused with a message that names it.

use std::borrow::Cow;

use bytes::Bytes;
use estiba_api::protocol::{cbor, query};
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, Common, CredentialScope};
use estiba_core::Scope;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::services::{self, Call, Input, InputBody, Service};
use crate::Server;

/// How a request was encoded, and so how its answer must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// AWS JSON; the answer's content type names the version the request used.
    Json {
        v10: bool,
    },
    Query(query::Flavour),
    Cbor,
}

impl Wire {
    /// The family of AWS error codes its answers use (auth refusals, throttling).
    pub fn family(self) -> estiba_auth::Family {
        match self {
            Wire::Query(query::Flavour::Ec2) => estiba_auth::Family::Ec2,
            Wire::Query(_) => estiba_auth::Family::Query,
            Wire::Json { .. } | Wire::Cbor => estiba_auth::Family::Json,
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Wire::Json { .. } => Protocol::Json,
            Wire::Query(query::Flavour::Query) => Protocol::Query,
            Wire::Query(query::Flavour::Ec2) => Protocol::Ec2,
            Wire::Cbor => Protocol::RpcV2Cbor,
        }
    }
}

/// A request's service and operation, found; its input still to decode.
struct Target {
    svc: &'static dyn Service,
    op: usize,
}

/// The service a request is signed for.
enum Signed {
    No,
    For(&'static dyn Service),
    /// A service estiba does not serve (its signing name).
    Other(String),
}

/// What the front door knows of a request once it has looked at it.
struct Seen {
    wire: Wire,
    signed: Signed,
    /// A Query request's parameters, parsed once to find the operation and decode its input.
    params: query::Params,
}

/// Made at compile time (a `&str` name is parsed on every lookup).
const X_AMZ_TARGET: hyper::header::HeaderName = hyper::header::HeaderName::from_static("x-amz-target");

/// CloudWatch's `X-Amz-Target` prefix (also its service name in RPC v2 CBOR paths).
const CLOUDWATCH_PREFIX: &str = "GraniteServiceVersion20100801";
/// CloudWatch's request-size limit: PutMetricData "is limited to 1 MB in size for HTTP POST
/// requests" (its API reference); bigger bodies get `RequestEntityTooLarge` as from AWS.
const CLOUDWATCH_MAX_BODY: usize = 1 << 20;
/// GetMetricData's, as AWS answers it ("Request size 639468 exceeded 614400 bytes").
const GET_METRIC_DATA_MAX_BODY: usize = 614_400;

/// CloudWatch's form of a body over its limit: `RequestEntityTooLarge`, 413 (no `Exception`).
fn cloudwatch_error(e: ApiError) -> ApiError {
    if e.status != 413 {
        return e;
    }
    ApiError { code: "RequestEntityTooLarge", shape: "RequestEntityTooLarge", ..e }
}

fn signing_name_of<'c>(credential: &'c Option<Claimed<'_>>) -> Option<&'c str> {
    credential.as_ref().map(|c| c.service.as_ref())
}

/// What a request's SigV4 credential scope claims: access key, region and service (borrowed
/// from the `Authorization` header, or copied from the `X-Amz-Credential` of a presigned query).
struct Claimed<'h> {
    key: Cow<'h, str>,
    region: Cow<'h, str>,
    service: Cow<'h, str>,
}

fn claimed<'h>(headers: &'h hyper::HeaderMap, query: Option<&str>) -> Option<Claimed<'h>> {
    if let Some(cs) =
        headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(CredentialScope::parse)
    {
        return Some(Claimed { key: cs.access_key.into(), region: cs.region.into(), service: cs.service.into() });
    }
    let (_, cred) = estiba_auth::sigv4::pairs(query?).find(|(k, _)| k == "X-Amz-Credential")?;
    let mut p = cred.split('/');
    let (key, _date, region, service) = (p.next()?, p.next()?, p.next()?, p.next()?);
    Some(Claimed { key: key.to_owned().into(), region: region.to_owned().into(), service: service.to_owned().into() })
}

/// Answers an AWS API request (`POST /`, `POST /service/...`, or a presigned or Query `GET /?Action=...`).
pub async fn call(server: &Server, req: Request<Incoming>, request_id: &str) -> Response<Body> {
    // The head is kept (the signature covers its method and headers) while the body is read.
    let (head, incoming) = req.into_parts();
    let headers = &head.headers;
    let header = |name: &hyper::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let uri_query = head.uri.query();
    // With verification on, the signature is read once, here: its scope routes the request
    // and its parts are checked once the body is read. A malformed one is refused then (after
    // the body's own checks, as before); its scope is still read for the refusal's form.
    let parsed = server.credentials.as_ref().map(|_| estiba_auth::sigv4::parse_parts(headers, uri_query));
    let credential = match &parsed {
        Some(Ok(p)) => Some(Claimed {
            key: Cow::Borrowed(p.access_key.as_ref()),
            region: Cow::Borrowed(p.region.as_ref()),
            service: Cow::Borrowed(p.service.as_ref()),
        }),
        _ => claimed(headers, uri_query),
    };
    // Without verification, the account the access key names (or the server's) and the
    // region the request claims (or the server's); with it, the verified key's (below).
    let claimed_scope = || match &credential {
        Some(Claimed { key, region, .. }) => Scope::new(
            match CredentialScope::account_of(key) {
                Some(account) => account,
                None => &server.config.account_id,
            },
            if region.is_empty() { server.config.default_region.as_str() } else { region },
        ),
        None => Scope::new(server.config.account_id.clone(), server.config.default_region.clone()),
    };
    let signed = match &credential {
        None => Signed::No,
        Some(Claimed { service, .. }) => {
            services::by_signing_name(service).map_or_else(|| Signed::Other(service.to_string()), Signed::For)
        }
    };
    let path = head.uri.path();
    let target = header(&X_AMZ_TARGET);
    let content_type = header(&hyper::header::CONTENT_TYPE);
    let form = content_type.is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let v10 = content_type.is_some_and(|v| v.starts_with("application/x-amz-json-1.0"));
    let get = head.method == hyper::Method::GET;
    // A presigned Query request carries its parameters in the URL (boto3 presigns POST, the
    // Go SDK GET).
    let query_in_url = uri_query.is_some_and(|q| q.starts_with("Action=") || q.contains("&Action="));

    let wire = if path.starts_with("/service/") {
        Wire::Cbor
    } else if target.is_none() && (form || get || query_in_url) {
        Wire::Query(query::Flavour::Query)
    } else {
        Wire::Json { v10 }
    };
    let mut r = Seen { wire, signed, params: query::Params::default() };
    // On a follower of several servers, what the leader owns is forwarded to it as received.
    let forwardable = server.peers.shared() && !server.leader.load(std::sync::atomic::Ordering::Relaxed);
    let verify = server.credentials.is_some();
    // CloudWatch's own request-size limit, else the server's.
    let cloudwatch = signing_name_of(&credential) == Some("monitoring")
        || target.is_some_and(|t| t.starts_with(CLOUDWATCH_PREFIX))
        || path.strip_prefix("/service/").is_some_and(|p| p.starts_with(CLOUDWATCH_PREFIX));
    let max =
        if cloudwatch { CLOUDWATCH_MAX_BODY.min(server.config.max_body_bytes) } else { server.config.max_body_bytes };
    let (body, body_sha256, as_sent) = match body::read_body(headers, incoming, max, verify).await {
        Ok(b) => b,
        Err(e) if cloudwatch => {
            let model = services::by_signing_name("monitoring").map(|s| s.model());
            return error_response(&r, model, &cloudwatch_error(e), request_id);
        }
        Err(e) => return error_response(&r, None, &e, request_id),
    };
    // The request's time, read once for its signature's clock check and for the call.
    let now = crate::now();
    if let Wire::Query(_) = wire {
        r.params = query::Params::parse(&body);
        if query_in_url {
            let url = query::Params::parse(uri_query.unwrap_or("").as_bytes());
            // The presigned signature's own parameters are not the operation's input.
            r.params.0.extend(url.0.into_iter().filter(|(k, _)| !k.starts_with("X-Amz-")));
        }
    }
    let signing_name = signing_name_of(&credential);
    // The caller, verified before anything of the body is decoded.
    let (caller, scope) = match (&server.credentials, &parsed) {
        (Some(creds), Some(parsed)) => {
            let req = estiba_auth::SignedRequest {
                method: head.method.as_str(),
                path,
                query: uri_query,
                headers,
                body_sha256,
            };
            let verified = match parsed {
                Ok(p) => creds.keys().verify_parsed(&req, p, now as i64, Some(&server.sessions)),
                Err(e) => Err(e.clone()),
            };
            match verified {
                Ok(v) => {
                    let scope = Scope::new(v.credential.account.clone(), v.region);
                    (Some(v.credential), scope)
                }
                Err(e) => {
                    let family = family_before_lookup(wire, signing_name, &r.params);
                    if family == estiba_auth::Family::Ec2 {
                        r.wire = Wire::Query(query::Flavour::Ec2);
                    }
                    let model = signing_name.and_then(services::by_signing_name).map(|s| s.model());
                    let err = crate::auth::refusal(&e, family, model.is_some_and(|m| m.query_compatible));
                    tracing::debug!(code = err.code, message = %err.message, "request not authenticated");
                    return error_response(&r, model, &err, request_id);
                }
            }
        }
        _ => (None, claimed_scope()),
    };
    // STS, served here rather than from the service table (see `crate::sts`).
    let sts = match signing_name {
        Some(name) => name == crate::sts::SIGNING_NAME,
        None => r.params.get("Version") == Some(crate::sts::VERSION),
    };
    if matches!(wire, Wire::Query(_)) && sts {
        if let Err(e) = admit(server, &r, &scope, false) {
            return error_response(&r, None, &e, request_id);
        }
        return crate::sts::answer(server, &r.params, caller.as_deref(), &scope.account, request_id);
    }
    let found = match wire {
        Wire::Cbor => find_cbor(&r, path),
        Wire::Json { .. } => find_json(&r, target),
        Wire::Query(_) => find_query(&mut r),
    };
    let t = match found {
        Ok(t) => t,
        Err(e) => return error_response(&r, None, &e, request_id),
    };
    let model = t.svc.model();
    let op = &model.operations[t.op];
    // CloudWatch's limits again, now that the service is known (an unsigned Query request
    // names it only in its body).
    if model.signing_name == "monitoring" {
        let limit = if op.name == "GetMetricData" { GET_METRIC_DATA_MAX_BODY } else { CLOUDWATCH_MAX_BODY };
        if body.len() > limit {
            let e = cloudwatch_error(body::too_large(Some(body.len()), limit));
            return error_response(&r, Some(model), &e, request_id);
        }
    }
    if let Some(cred) = &caller {
        if let Err(e) = authorize(server, &r, model, op.name, cred, &body, &scope) {
            return error_response(&r, Some(model), &e, request_id);
        }
    }
    // The rate is counted once the caller and the protocol are known (EC2 and Query look
    // alike until then).
    if let Err(e) = admit(server, &r, &scope, model.query_compatible) {
        return error_response(&r, Some(model), &e, request_id);
    }
    if forwardable && crate::peers::leader_owns(model.module, op.name) {
        let pq = head.uri.path_and_query().map_or(path, |p| p.as_str());
        match crate::peers::forward(server, &head.method, pq, headers, as_sent.clone()).await {
            Ok(Some(resp)) => return resp,
            Ok(None) => {}
            Err(e) => return error_response(&r, Some(model), &e, request_id),
        }
    }
    // Timed only for the debug log that shows it (a clock read per request otherwise).
    let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
    if t.svc.streams(t.op) {
        let result = match decode(&r, &t, body) {
            Ok(input) => t.svc.call_stream(server, Call { scope: scope.clone(), now }, t.op, input).await,
            Err(e) => Err(e),
        };
        return match result {
            Ok(rx) => {
                tracing::debug!(service = model.module, op = op.name, "event stream");
                let mut resp = Response::new(body::streamed(rx));
                resp.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/vnd.amazon.eventstream"),
                );
                resp
            }
            Err(e) => error_response(&r, Some(model), &e, request_id),
        };
    }
    let result = match decode(&r, &t, body) {
        Ok(input) => t.svc.call(server, Call { scope, now }, t.op, input).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(out) => {
            tracing::debug!(
                service = model.module,
                op = op.name,
                elapsed_us = started.map(|t| t.elapsed().as_micros() as u64),
                "call"
            );
            answer(&r, model, op, out, request_id)
        }
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(service = model.module, op = op.name, code = e.code, message = %e.message, "request failed");
            } else {
                tracing::debug!(service = model.module, op = op.name, code = e.code, message = %e.message, "request refused");
            }
            error_response(&r, Some(model), &e, request_id)
        }
    }
}

/// Counts the request against its account's rate: `ThrottlingException` (in the request's
/// protocol family) when over it.
fn admit(server: &Server, r: &Seen, scope: &Scope, query_compatible: bool) -> Result<(), ApiError> {
    match &server.rate_limits {
        Some(limits) if !limits.admit(&scope.account, std::time::Instant::now()) => {
            Err(crate::limits::throttled(r.wire.family(), query_compatible))
        }
        _ => Ok(()),
    }
}

/// The protocol family of a request refused before its service is looked up: EC2 when it is
/// signed for `ec2` (or, unsigned, names EC2's API version), else by its wire.
fn family_before_lookup(wire: Wire, signing_name: Option<&str>, params: &query::Params) -> estiba_auth::Family {
    use estiba_auth::Family;
    match wire {
        Wire::Query(_) => {
            let ec2 = services::ec2::Ec2.model();
            let is_ec2 = match signing_name {
                Some(name) => name == ec2.signing_name,
                None => params.get("Version") == Some(ec2.api_version),
            };
            if is_ec2 {
                Family::Ec2
            } else {
                Family::Query
            }
        }
        _ => Family::Json,
    }
}

/// Whether the verified caller may call the operation: its key's access (full, read-only or
/// a policy), on each resource the input names where that is plain (`crate::auth::resources`).
fn authorize(
    server: &Server,
    r: &Seen,
    model: &Model,
    operation: &str,
    cred: &estiba_auth::Credential,
    body: &[u8],
    scope: &Scope,
) -> Result<(), ApiError> {
    let service = crate::auth::iam_prefix(model.signing_name);
    // The input, read once for what a restricted key's decisions look at (JSON APIs only).
    let input: Option<serde_json::Value> = match r.wire {
        Wire::Json { .. } if !cred.unrestricted() => serde_json::from_slice(body).ok(),
        _ => None,
    };
    let resources = match &input {
        Some(v) if cred.resource_scoped() => {
            crate::auth::resources(model.signing_name, v, &scope.account, &scope.region)
        }
        _ => vec!["*".to_owned()],
    };
    for resource in &resources {
        let d = cred.decide(service, operation, resource);
        if d != estiba_auth::Decision::Allow {
            tracing::debug!(user = %cred.arn(), service, operation, resource, "access denied");
            return Err(crate::auth::denied(
                cred,
                service,
                operation,
                resource,
                d,
                r.wire.family(),
                model.query_compatible,
            ));
        }
    }
    // The roles the request hands to ECS need `iam:PassRole` on each (as IAM checks it).
    if let Some(v) = input.as_ref().filter(|_| model.signing_name == "ecs") {
        for role in crate::services::ecs::passed_roles(server, scope, operation, v) {
            let d = cred.decide("iam", "PassRole", &role);
            if d != estiba_auth::Decision::Allow {
                tracing::debug!(user = %cred.arn(), operation, role, "iam:PassRole denied");
                return Err(crate::auth::denied(cred, "iam", "PassRole", &role, d, r.wire.family(), false));
            }
        }
    }
    Ok(())
}

/// The service a signed request names, if estiba serves it; an error naming it if not.
fn signed_service(r: &Seen) -> Result<Option<&'static dyn Service>, ApiError> {
    match &r.signed {
        Signed::No => Ok(None),
        Signed::For(s) => Ok(Some(*s)),
        Signed::Other(name) => Err(not_served(r.wire, name)),
    }
}

fn not_served(wire: Wire, name: &str) -> ApiError {
    let code = unknown_operation(wire);
    match services::not_served(name) {
        Some(m) => ApiError::new(code, format!("estiba does not serve the {} API ({}) yet.", m.title, m.signing_name)),
        None => ApiError::new(code, format!("estiba does not serve the '{name}' service.")),
    }
}

/// The error code for a request naming no operation of the service, in the wire's terms.
fn unknown_operation(wire: Wire) -> Common {
    match wire {
        Wire::Query(_) => Common::InvalidAction,
        _ => Common::UnknownOperationException,
    }
}

fn speaks(svc: &dyn Service, wire: Wire) -> Result<(), ApiError> {
    if svc.model().speaks(wire.protocol()) {
        return Ok(());
    }
    let how = match wire {
        Wire::Json { .. } => "AWS JSON (X-Amz-Target)",
        Wire::Query(_) => "the AWS Query protocol",
        Wire::Cbor => "Smithy RPC v2 CBOR",
    };
    Err(ApiError::new(unknown_operation(wire), format!("{} is not served over {how}.", svc.model().title)))
}

/// The operation `name` of `svc`; `prefix` is the target prefix the request named it with.
fn operation(svc: &'static dyn Service, wire: Wire, name: &str, prefix: Option<&str>) -> Result<Target, ApiError> {
    match svc.model().operation_index(name) {
        Some(op) => Ok(Target { svc, op }),
        None if matches!(wire, Wire::Query(_)) => {
            Err(ApiError::new(Common::InvalidAction, format!("The action {name} is not valid for this web service.")))
        }
        None => {
            let shown = prefix.map_or_else(|| name.to_owned(), |p| format!("{p}.{name}"));
            Err(ApiError::new(
                Common::UnknownOperationException,
                format!("Unknown operation {shown} for {}.", svc.model().title),
            ))
        }
    }
}

/// The service of an `X-Amz-Target` prefix or RPC v2 path (`what` names which, in messages):
/// the one the request is signed for, which must be that prefix's, or else the prefix's.
fn by_prefix(r: &Seen, prefix: &str, what: &str) -> Result<&'static dyn Service, ApiError> {
    let svc = match signed_service(r)? {
        Some(s) if s.model().target_prefix == prefix => s,
        Some(s) => {
            return Err(ApiError::new(
                Common::UnknownOperationException,
                format!("Unknown {what} {prefix}: the request is signed for {}.", s.model().signing_name),
            ))
        }
        None => services::by_target_prefix(prefix).ok_or_else(|| not_served(r.wire, prefix))?,
    };
    speaks(svc, r.wire)?;
    Ok(svc)
}

/// `X-Amz-Target: <prefix>.<Operation>`.
fn find_json(r: &Seen, target: Option<&str>) -> Result<Target, ApiError> {
    let Some((prefix, name)) = target.and_then(|t| t.split_once('.')) else {
        return Err(ApiError::new(
            Common::UnknownOperationException,
            "The request has no X-Amz-Target header naming an operation.",
        ));
    };
    let svc = by_prefix(r, prefix, "target")?;
    operation(svc, r.wire, name, Some(prefix))
}

/// `/service/<prefix>/operation/<Operation>`.
fn find_cbor(r: &Seen, path: &str) -> Result<Target, ApiError> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["service", prefix, "operation", name] = parts[..] else {
        return Err(ApiError::new(
            Common::UnknownOperationException,
            format!("{path} is not an RPC v2 path (/service/<service>/operation/<operation>)."),
        ));
    };
    operation(by_prefix(r, prefix, "service")?, r.wire, name, None)
}

/// `Action=<Operation>&Version=<api version>` in a form body. Unsigned, the service is the
/// Query service whose API version matches (else the one that has the action).
fn find_query(r: &mut Seen) -> Result<Target, ApiError> {
    let action = r.params.get("Action").unwrap_or("").to_owned();
    let version = r.params.get("Version").map(str::to_owned);
    let query_services = || {
        services::SERVICES
            .iter()
            .copied()
            .filter(|s| s.model().speaks(Protocol::Query) || s.model().speaks(Protocol::Ec2))
    };
    let svc = match signed_service(r)? {
        Some(s) => s,
        None => {
            let by_version = query_services().find(|s| Some(s.model().api_version) == version.as_deref());
            let by_action = || query_services().find(|s| s.model().operation_index(&action).is_some());
            by_version.or_else(by_action).ok_or_else(|| {
                ApiError::new(
                    Common::InvalidAction,
                    format!("The action {action} is not valid for any service estiba serves."),
                )
            })?
        }
    };
    r.wire = Wire::Query(query::Flavour::of(svc.model()));
    speaks(svc, r.wire)?;
    if action.is_empty() {
        return Err(ApiError::new(Common::MissingAction, "The request must contain the parameter Action"));
    }
    if let Some(v) = version.filter(|v| v != svc.model().api_version) {
        return Err(ApiError::new(
            Common::NoSuchVersion,
            format!("estiba answers {} version {}, not {v}.", svc.model().title, svc.model().api_version),
        ));
    }
    operation(svc, r.wire, &action, None)
}

/// The operation's input in the form its service decodes.
fn decode(r: &Seen, t: &Target, body: Bytes) -> Result<Input, ApiError> {
    let model = t.svc.model();
    let op = &model.operations[t.op];
    let protocol = r.wire.protocol();
    let v = match r.wire {
        Wire::Json { .. } => return Ok(Input { body: InputBody::Json(body), protocol, style: model.path_style() }),
        Wire::Query(flavour) => query::to_value(model, op.input, &r.params, flavour),
        Wire::Cbor => cbor::to_value(model, op.input, &body),
    };
    v.map(|v| Input { body: InputBody::Value(v), protocol, style: model.path_style() })
        .map_err(|e| t.svc.decode_error(e, protocol))
}

fn json_content_type(r: &Seen, model: Option<&Model>) -> &'static str {
    let v10 = match (r.wire, model) {
        (Wire::Json { v10 }, None) => v10,
        (_, Some(m)) => m.json_version == "1.0",
        _ => false,
    };
    if v10 {
        "application/x-amz-json-1.0"
    } else {
        "application/x-amz-json-1.1"
    }
}

/// A successful answer in the request's protocol, from the handler's JSON.
fn answer(r: &Seen, model: &Model, op: &estiba_api::schema::OperationSchema, out: Bytes, rid: &str) -> Response<Body> {
    match r.wire {
        Wire::Json { .. } => body::response(StatusCode::OK, out, json_content_type(r, Some(model))),
        Wire::Query(flavour) => {
            let v = output_value(&out);
            body::response(StatusCode::OK, Bytes::from(query::response(model, op, &v, rid, flavour)), "text/xml")
        }
        Wire::Cbor => {
            let v = output_value(&out);
            let mut resp =
                body::response(StatusCode::OK, Bytes::from(cbor::from_value(model, op.output, &v)), "application/cbor");
            resp.headers_mut().insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
            resp
        }
    }
}

/// Handlers write their output as JSON; the other protocols start from its parsed form.
fn output_value(out: &[u8]) -> serde_json::Value {
    if out.is_empty() {
        return serde_json::Value::Object(Default::default());
    }
    serde_json::from_slice(out).expect("handlers answer JSON")
}

/// The one place an error becomes a response, in the request's protocol: AWS JSON's
/// `{"__type", "message"}`, Query's `<ErrorResponse>`, EC2's `<Response><Errors>`, or RPC v2
/// CBOR's map. A query-compatible service (CloudWatch) also puts its Query code in
/// `x-amzn-query-error` when answering JSON or CBOR.
fn error_response(r: &Seen, model: Option<&Model>, e: &ApiError, rid: &str) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let query_compatible = model.is_some_and(|m| m.query_compatible);
    let type_ = if query_compatible { e.shape } else { e.code };
    let mut resp = match r.wire {
        Wire::Json { .. } => {
            let body = estiba_api::protocol::error_body(type_, &e.message);
            body::response(status, Bytes::from(body), json_content_type(r, model))
        }
        Wire::Query(flavour) => {
            let ns = model.map(|m| m.xml_namespace).unwrap_or("");
            let body = query::error(flavour, ns, e.code, &e.message, e.sender_fault, rid);
            body::response(status, Bytes::from(body), "text/xml")
        }
        Wire::Cbor => {
            let mut resp = body::response(status, Bytes::from(cbor::error_body(type_, &e.message)), "application/cbor");
            resp.headers_mut().insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
            resp
        }
    };
    let h = resp.headers_mut();
    h.insert("x-amzn-ErrorType", HeaderValue::from_str(type_).unwrap_or(HeaderValue::from_static("Error")));
    if query_compatible && r.wire != Wire::Query(query::Flavour::Query) {
        let v = format!("{};{}", e.code, if e.sender_fault { "Sender" } else { "Receiver" });
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert("x-amzn-query-error", v);
        }
    }
    resp
}
