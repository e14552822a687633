//! AWS Cloud Map (servicediscovery): its key layout, identifiers and ARNs, and the rules of
//! its API as pure functions (namespace and service configuration, instance attributes,
//! health, discovery, operations, filters).
//!
//! Store layout under `servicediscovery/<account>/<region>/`:
//!
//! | key | value |
//! |---|---|
//! | `namespaces/<ns-id>` | [`NamespaceDoc`]: the `Namespace` shape, its VPC and creating operation |
//! | `services/<srv-id>` | the `Service` shape (`InstanceCount` is counted when read) |
//! | `instances/<srv-id>/<instance-id>` | the `Instance` shape: one put registers an instance |
//! | `health/<srv-id>/<instance-id>` | [`HealthDoc`]: a custom health status set by UpdateInstanceCustomHealthStatus |
//! | `revisions/<srv-id>` | [`Marker`], written when an instance registers or deregisters |
//! | `service-attributes/<srv-id>` | the service's attributes (UpdateServiceAttributes), a string map |
//! | `operations/<operation-id>` | the `Operation` shape, status computed from its age ([`op_status`]) |
//! | `tags/<namespace\|service>/<id>` | `[Tag]` |
//!
//! A service's `InstancesRevision` is the highest store revision among its instance documents
//! and its `revisions/` marker: registering and deregistering move it, health changes do not.

use std::collections::BTreeMap;

use estiba_api::servicediscovery::{
    DnsConfig, DnsRecord, ErrorCode, FilterCondition, HealthCheckConfig, HealthCheckType, HealthStatus,
    HealthStatusFilter, Namespace, NamespaceFilter, NamespaceFilterName, NamespaceType, OperationFilter,
    OperationFilterName, OperationShape, OperationStatus, OperationTargetType, RecordType, RoutingPolicy, Service,
    ServiceType, Tag,
};
use serde::{Deserialize, Serialize};

use crate::{Ids, Now, Scope};

/// A Cloud Map error: the exception of the model and AWS's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    NamespaceNotFound(String),
    #[error("{0}")]
    NamespaceAlreadyExists(String),
    #[error("{0}")]
    ServiceNotFound(String),
    #[error("{0}")]
    ServiceAlreadyExists(String),
    #[error("{0}")]
    InstanceNotFound(String),
    #[error("{0}")]
    OperationNotFound(String),
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    CustomHealthNotFound(String),
    #[error("{0}")]
    DuplicateRequest(String),
    #[error("{0}")]
    TooManyTags(String),
    #[error("{0}")]
    ServiceAttributesLimitExceeded(String),
}

pub type Result<T, E = SdError> = std::result::Result<T, E>;

impl SdError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SdError::InvalidInput(_) => ErrorCode::InvalidInput,
            SdError::NamespaceNotFound(_) => ErrorCode::NamespaceNotFound,
            SdError::NamespaceAlreadyExists(_) => ErrorCode::NamespaceAlreadyExists,
            SdError::ServiceNotFound(_) => ErrorCode::ServiceNotFound,
            SdError::ServiceAlreadyExists(_) => ErrorCode::ServiceAlreadyExists,
            SdError::InstanceNotFound(_) => ErrorCode::InstanceNotFound,
            SdError::OperationNotFound(_) => ErrorCode::OperationNotFound,
            SdError::ResourceInUse(_) => ErrorCode::ResourceInUse,
            SdError::ResourceNotFound(_) => ErrorCode::ResourceNotFoundException,
            SdError::CustomHealthNotFound(_) => ErrorCode::CustomHealthNotFound,
            SdError::DuplicateRequest(_) => ErrorCode::DuplicateRequest,
            SdError::TooManyTags(_) => ErrorCode::TooManyTagsException,
            SdError::ServiceAttributesLimitExceeded(_) => ErrorCode::ServiceAttributesLimitExceededException,
        }
    }

    pub fn namespace_not_found(id: &str) -> Self {
        SdError::NamespaceNotFound(format!("Namespace not found: {id}"))
    }

    pub fn service_not_found(id: &str) -> Self {
        SdError::ServiceNotFound(format!("Service not found: {id}"))
    }

    pub fn instance_not_found(id: &str) -> Self {
        SdError::InstanceNotFound(format!("Instance not found: {id}"))
    }
}

impl From<SdError> for estiba_api::ApiError {
    fn from(e: SdError) -> Self {
        let code = e.code();
        estiba_api::ApiError::new(code, e.to_string())
    }
}

fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(SdError::InvalidInput(message.into()))
}

// Keys.

pub const PREFIX: &str = "servicediscovery/";
pub const NAMESPACES: &str = "namespaces";
pub const SERVICES: &str = "services";
pub const INSTANCES: &str = "instances";
pub const HEALTH: &str = "health";
pub const REVISIONS: &str = "revisions";
pub const OPERATIONS: &str = "operations";
pub const TAGS: &str = "tags";
pub const SERVICE_ATTRIBUTES: &str = "service-attributes";

/// `servicediscovery/<account>/<region>/<kind>/`: every document of one kind in a scope.
pub fn kind_prefix(s: &Scope, kind: &str) -> String {
    format!("{PREFIX}{}/{}/{kind}/", s.account, s.region)
}

pub fn namespace_key(s: &Scope, id: &str) -> String {
    kind_prefix(s, NAMESPACES) + id
}

pub fn service_key(s: &Scope, id: &str) -> String {
    kind_prefix(s, SERVICES) + id
}

pub fn instance_key(s: &Scope, service_id: &str, instance_id: &str) -> String {
    format!("{}{service_id}/{instance_id}", kind_prefix(s, INSTANCES))
}

/// The instances of one service.
pub fn instances_of(s: &Scope, service_id: &str) -> String {
    format!("{}{service_id}/", kind_prefix(s, INSTANCES))
}

pub fn health_key(s: &Scope, service_id: &str, instance_id: &str) -> String {
    format!("{}{service_id}/{instance_id}", kind_prefix(s, HEALTH))
}

pub fn revision_key(s: &Scope, service_id: &str) -> String {
    kind_prefix(s, REVISIONS) + service_id
}

pub fn service_attributes_key(s: &Scope, service_id: &str) -> String {
    kind_prefix(s, SERVICE_ATTRIBUTES) + service_id
}

pub fn operation_key(s: &Scope, id: &str) -> String {
    kind_prefix(s, OPERATIONS) + id
}

pub fn tags_key(s: &Scope, resource: Resource, id: &str) -> String {
    format!("{}{}/{id}", kind_prefix(s, TAGS), resource.as_str())
}

/// The scope of a key of this service (`servicediscovery/<account>/<region>/...`).
pub fn scope_of_key(key: &str) -> Option<Scope> {
    let mut p = key.strip_prefix(PREFIX)?.split('/');
    Some(Scope::new(p.next()?, p.next()?))
}

/// The scope and service id of an instance key
/// (`servicediscovery/<account>/<region>/instances/<service>/<instance>`).
pub fn service_of_instance_key(key: &str) -> Option<(Scope, &str)> {
    let mut p = key.strip_prefix(PREFIX)?.split('/');
    let (account, region, kind, service) = (p.next()?, p.next()?, p.next()?, p.next()?);
    (kind == INSTANCES).then(|| (Scope::new(account, region), service))
}

/// The instance id of an instance key (the last segment).
pub fn instance_id_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

// Documents.

/// A namespace as stored: the wire shape (without `ServiceCount`, counted when read), the
/// VPC of a private DNS namespace, and the operation that created it (a create retried with
/// the same `CreatorRequestId` answers it again).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamespaceDoc {
    #[serde(flatten)]
    pub namespace: Namespace,
    #[serde(rename = "Vpc", default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<String>,
    #[serde(rename = "OperationId", default)]
    pub operation_id: String,
}

/// An instance's custom health status (UpdateInstanceCustomHealthStatus).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthDoc {
    #[serde(rename = "Status")]
    pub status: HealthStatus,
}

/// A document whose revision is all that matters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Marker {}

// Identifiers and ARNs.

/// `ns-` and 16 lowercase letters and digits, as Cloud Map's.
pub fn namespace_id(ids: &mut dyn Ids) -> String {
    format!("ns-{}", &ids.hex32()[..16])
}

/// `srv-` and 16 lowercase letters and digits.
pub fn service_id(ids: &mut dyn Ids) -> String {
    format!("srv-{}", &ids.hex32()[..16])
}

/// An operation id: 32 characters, a dash, 8 characters (`gv4g5meo7ndmeh4fqskygvk23d2fijwa-k9302yzd`).
pub fn operation_id(ids: &mut dyn Ids) -> String {
    let tail = ids.hex32();
    format!("{}-{}", ids.hex32(), &tail[..8])
}

/// A Route 53 hosted zone id for a DNS namespace: `Z` and 20 uppercase characters.
pub fn hosted_zone_id(ids: &mut dyn Ids) -> String {
    format!("Z{}", ids.hex32()[..20].to_uppercase())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Namespace,
    Service,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Namespace => "namespace",
            Resource::Service => "service",
        }
    }
}

pub fn arn(s: &Scope, resource: Resource, id: &str) -> String {
    format!("arn:aws:servicediscovery:{}:{}:{}/{id}", s.region, s.account, resource.as_str())
}

/// The resource an ARN of this scope names.
pub fn parse_arn(s: &Scope, arn: &str) -> Option<(Resource, String)> {
    let rest = arn.strip_prefix("arn:")?;
    let mut parts = rest.splitn(5, ':');
    let (_partition, service, region, account, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if service != "servicediscovery" || region != s.region || account != s.account {
        return None;
    }
    let (kind, id) = resource.split_once('/')?;
    let kind = match kind {
        "namespace" => Resource::Namespace,
        "service" => Resource::Service,
        _ => return None,
    };
    (!id.is_empty() && !id.contains('/')).then(|| (kind, id.to_owned()))
}

/// The id in `Id` or `ServiceId` members, which take an id or (for shared namespaces) an ARN.
pub fn id_of(id_or_arn: &str) -> &str {
    match id_or_arn.strip_prefix("arn:") {
        Some(_) => id_or_arn.rsplit('/').next().unwrap_or(id_or_arn),
        None => id_or_arn,
    }
}

// Operations.

/// How long an operation stays SUBMITTED, then PENDING, before it reports SUCCESS.
pub const SUBMITTED_FOR: f64 = 0.1;
pub const PENDING_UNTIL: f64 = 0.25;

/// An operation's status and update date at `now`: operations take effect when they are
/// submitted, and report their progress like Cloud Map's, SUBMITTED → PENDING → SUCCESS.
pub fn op_status(created: f64, now: Now) -> (OperationStatus, f64) {
    let age = now - created;
    if age < SUBMITTED_FOR {
        (OperationStatus::Submitted, created)
    } else if age < PENDING_UNTIL {
        (OperationStatus::Pending, created + SUBMITTED_FOR)
    } else {
        (OperationStatus::Success, created + PENDING_UNTIL)
    }
}

/// A new operation on `targets`.
pub fn operation(
    s: &Scope,
    id: String,
    kind: estiba_api::servicediscovery::OperationType,
    targets: &[(OperationTargetType, &str)],
    now: Now,
) -> OperationShape {
    OperationShape {
        id: Some(id),
        owner_account: Some(s.account.clone()),
        r#type: Some(kind),
        status: Some(OperationStatus::Submitted),
        create_date: Some(now),
        update_date: Some(now),
        targets: Some(targets.iter().map(|(t, v)| (*t, v.to_string())).collect()),
        error_code: None,
        error_message: None,
    }
}

/// How long operations stay listed: Cloud Map keeps an operation's record for a while after
/// it ends; here for a day after it was submitted.
pub const OPERATION_RETENTION: f64 = 24.0 * 3600.0;

/// Whether an operation's record has outlived [`OPERATION_RETENTION`] at `now`.
pub fn operation_expired(op: &OperationShape, now: Now) -> bool {
    op.create_date.is_some_and(|c| now - c >= OPERATION_RETENTION)
}

/// The operation as GetOperation shows it at `now`.
pub fn operation_at(op: &OperationShape, now: Now) -> OperationShape {
    let mut op = op.clone();
    let (status, updated) = op_status(op.create_date.unwrap_or(now), now);
    op.status = Some(status);
    op.update_date = Some(updated);
    op
}

// Namespaces.

/// Namespace names other than public DNS ones may not look like ARNs (the model's
/// `(?!arn:)`, which its generated check cannot express).
pub fn check_namespace_name(name: &str) -> Result<()> {
    if name.starts_with("arn:") {
        return invalid(format!("Namespace name '{name}' must not start with 'arn:'."));
    }
    Ok(())
}

/// The stored form of a new namespace. A DNS namespace's SOA TTL defaults to 15 seconds.
#[allow(clippy::too_many_arguments)]
pub fn new_namespace(
    s: &Scope,
    id: &str,
    kind: NamespaceType,
    name: &str,
    description: Option<String>,
    creator_request_id: Option<String>,
    soa_ttl: Option<i64>,
    hosted_zone: Option<String>,
    now: Now,
) -> Namespace {
    use estiba_api::servicediscovery::{DnsProperties, HttpProperties, NamespaceProperties, SOA};
    let dns = match kind {
        NamespaceType::Http => DnsProperties::default(),
        _ => DnsProperties { hosted_zone_id: hosted_zone, soa: Some(SOA { ttl: soa_ttl.unwrap_or(15) }) },
    };
    Namespace {
        arn: Some(arn(s, Resource::Namespace, id)),
        create_date: Some(now),
        creator_request_id,
        description,
        id: Some(id.to_owned()),
        name: Some(name.to_owned()),
        properties: Some(NamespaceProperties {
            dns_properties: Some(dns),
            http_properties: Some(HttpProperties { http_name: Some(name.to_owned()) }),
        }),
        resource_owner: Some(s.account.clone()),
        service_count: None,
        r#type: Some(kind),
    }
}

/// What a create call with this name and `CreatorRequestId` finds among the existing
/// namespaces: `Some(operation)` when it repeats an earlier create (same request id, same
/// name), an error when the name is taken or the request id was used for another name.
pub fn namespace_conflict<'a>(
    existing: impl IntoIterator<Item = &'a NamespaceDoc>,
    name: &str,
    creator_request_id: Option<&str>,
) -> Result<Option<String>> {
    for d in existing {
        let ns = &d.namespace;
        let same_request = creator_request_id.is_some() && ns.creator_request_id.as_deref() == creator_request_id;
        let same_name = ns.name.as_deref() == Some(name);
        match (same_name, same_request) {
            (true, true) => return Ok(Some(d.operation_id.clone())),
            (true, false) => {
                return Err(SdError::NamespaceAlreadyExists(format!(
                    "Namespace with name {name} already exists: {}",
                    ns.id.as_deref().unwrap_or_default()
                )))
            }
            (false, true) => {
                return Err(SdError::DuplicateRequest(format!(
                    "CreatorRequestId {} was already used for namespace {}",
                    creator_request_id.unwrap_or_default(),
                    ns.id.as_deref().unwrap_or_default()
                )))
            }
            (false, false) => {}
        }
    }
    Ok(None)
}

/// Whether a namespace passes all of ListNamespaces' filters.
pub fn namespace_matches(ns: &Namespace, filters: &[NamespaceFilter]) -> Result<bool> {
    for f in filters {
        let cond = f.condition.unwrap_or(FilterCondition::Eq);
        let value = match f.name {
            NamespaceFilterName::Type => ns.r#type.map(|t| t.as_str().to_owned()),
            NamespaceFilterName::Name => ns.name.clone(),
            NamespaceFilterName::HttpName => {
                ns.properties.as_ref().and_then(|p| p.http_properties.as_ref()).and_then(|h| h.http_name.clone())
            }
            NamespaceFilterName::ResourceOwner => Some("SELF".to_owned()),
        }
        .unwrap_or_default();
        let allowed = match f.name {
            NamespaceFilterName::Type => matches!(cond, FilterCondition::Eq | FilterCondition::In),
            NamespaceFilterName::Name | NamespaceFilterName::HttpName => {
                matches!(cond, FilterCondition::Eq | FilterCondition::BeginsWith)
            }
            NamespaceFilterName::ResourceOwner => cond == FilterCondition::Eq,
        };
        if !allowed {
            return invalid(format!("Condition {} is not supported for filter {}.", cond.as_str(), f.name.as_str()));
        }
        if !matches_condition(&value, cond, &f.values)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn matches_condition(value: &str, cond: FilterCondition, values: &[String]) -> Result<bool> {
    Ok(match cond {
        FilterCondition::Eq => {
            let [v] = values else {
                return invalid("A filter with the EQ condition takes exactly one value.");
            };
            value == v
        }
        FilterCondition::In => values.iter().any(|v| v == value),
        FilterCondition::BeginsWith => {
            let [v] = values else {
                return invalid("A filter with the BEGINS_WITH condition takes exactly one value.");
            };
            value.starts_with(v.as_str())
        }
        FilterCondition::Between => return invalid("The BETWEEN condition is only supported for UPDATE_DATE."),
    })
}

// Services.

/// Service names are at most 127 characters (the part of the model's pattern that its
/// generated check cannot express).
pub fn check_service_name(name: &str) -> Result<()> {
    if name.len() > 127 {
        return invalid(format!("Service name '{name}' is longer than 127 characters."));
    }
    Ok(())
}

/// What CreateService asks for, beyond the name and namespace.
pub struct ServiceSpec<'a> {
    pub dns_config: Option<&'a DnsConfig>,
    pub health_check_config: Option<&'a HealthCheckConfig>,
    pub http_only: bool,
    pub has_custom_health: bool,
}

/// The service type and the DNS configuration as stored (routing policy defaulted), after
/// Cloud Map's rules for the namespace's type.
pub fn service_config(ns_type: NamespaceType, spec: &ServiceSpec<'_>) -> Result<(ServiceType, Option<DnsConfig>)> {
    if spec.health_check_config.is_some() && spec.has_custom_health {
        return invalid("HealthCheckConfig and HealthCheckCustomConfig can't both be specified.");
    }
    if let Some(h) = spec.health_check_config {
        if ns_type != NamespaceType::DnsPublic {
            return invalid("HealthCheckConfig can only be specified for services in public DNS namespaces.");
        }
        check_health_check(h)?;
    }
    let ty = if ns_type == NamespaceType::Http || spec.http_only {
        if spec.dns_config.is_some() {
            return invalid(if ns_type == NamespaceType::Http {
                "DnsConfig can't be specified for a service in an HTTP namespace."
            } else {
                "DnsConfig can't be specified for a service of type HTTP."
            });
        }
        ServiceType::Http
    } else {
        ServiceType::DnsHttp
    };
    let dns = match (ty, spec.dns_config) {
        (ServiceType::DnsHttp, None) => {
            return invalid("DnsConfig is required for a service in a DNS namespace, unless its Type is HTTP.")
        }
        (_, Some(d)) => {
            let policy = d.routing_policy.unwrap_or(RoutingPolicy::Multivalue);
            check_dns_records(&d.dns_records, policy, spec.health_check_config.is_some())?;
            Some(DnsConfig { dns_records: d.dns_records.clone(), namespace_id: None, routing_policy: Some(policy) })
        }
        _ => None,
    };
    Ok((ty, dns))
}

/// Cloud Map's rules for a service's DNS records: at most one A, one AAAA and one SRV record,
/// in any combination, or one CNAME record alone; CNAME records route WEIGHTED and have no
/// Route 53 health check.
pub fn check_dns_records(records: &[DnsRecord], policy: RoutingPolicy, health_check: bool) -> Result<()> {
    if records.is_empty() {
        return invalid("DnsRecords must contain at least one record.");
    }
    for (i, r) in records.iter().enumerate() {
        if records[..i].iter().any(|o| o.r#type == r.r#type) {
            return invalid(format!("DnsRecords can contain only one record of type {}.", r.r#type.as_str()));
        }
    }
    if records.iter().any(|r| r.r#type == RecordType::Cname) {
        if records.len() > 1 {
            return invalid("A CNAME record can't be combined with records of other types.");
        }
        if policy != RoutingPolicy::Weighted {
            return invalid("The routing policy of a service with a CNAME record must be WEIGHTED.");
        }
        if health_check {
            return invalid("HealthCheckConfig can't be specified for a service with a CNAME record.");
        }
    }
    Ok(())
}

fn check_health_check(h: &HealthCheckConfig) -> Result<()> {
    if h.r#type == HealthCheckType::Tcp && h.resource_path.is_some() {
        return invalid("ResourcePath can't be specified for a TCP health check.");
    }
    Ok(())
}

/// The health check as stored: HTTP and HTTPS checks default to `/`, every check to one failure.
pub fn health_check_defaults(h: &HealthCheckConfig) -> HealthCheckConfig {
    let mut h = h.clone();
    if h.r#type != HealthCheckType::Tcp && h.resource_path.is_none() {
        h.resource_path = Some("/".into());
    }
    h.failure_threshold.get_or_insert(1);
    h
}

/// UpdateService: new TTLs for the same record types, a description, a Route 53 health check.
/// As in Cloud Map, a health check configuration left out of the change is deleted (a
/// custom health check stays); a DNS configuration left out stays as it is.
pub fn update_service(
    svc: &Service,
    ns_type: NamespaceType,
    change: &estiba_api::servicediscovery::ServiceChange,
) -> Result<Service> {
    let mut svc = svc.clone();
    if let Some(d) = &change.description {
        svc.description = Some(d.clone());
    }
    if let Some(h) = &change.health_check_config {
        if svc.health_check_custom_config.is_some() {
            return invalid("HealthCheckConfig can't be added to a service with HealthCheckCustomConfig.");
        }
        if ns_type != NamespaceType::DnsPublic {
            return invalid("HealthCheckConfig can only be specified for services in public DNS namespaces.");
        }
        check_health_check(h)?;
        svc.health_check_config = Some(health_check_defaults(h));
    } else {
        svc.health_check_config = None;
    }
    if let Some(dc) = &change.dns_config {
        let Some(cur) = svc.dns_config.as_mut() else {
            return invalid("DnsConfig can't be updated for a service that has no DNS configuration.");
        };
        let mut old: Vec<RecordType> = cur.dns_records.iter().map(|r| r.r#type).collect();
        let mut new: Vec<RecordType> = dc.dns_records.iter().map(|r| r.r#type).collect();
        old.sort();
        new.sort();
        if old != new {
            return invalid("The record types of a service can't be updated; only their TTLs can.");
        }
        cur.dns_records = dc.dns_records.clone();
    }
    let policy = svc.dns_config.as_ref().and_then(|d| d.routing_policy).unwrap_or(RoutingPolicy::Multivalue);
    if let Some(d) = &svc.dns_config {
        check_dns_records(&d.dns_records, policy, svc.health_check_config.is_some())?;
    }
    Ok(svc)
}

// Instances.

pub const ALIAS_DNS_NAME: &str = "AWS_ALIAS_DNS_NAME";
pub const INIT_HEALTH_STATUS: &str = "AWS_INIT_HEALTH_STATUS";
pub const INSTANCE_CNAME: &str = "AWS_INSTANCE_CNAME";
pub const INSTANCE_IPV4: &str = "AWS_INSTANCE_IPV4";
pub const INSTANCE_IPV6: &str = "AWS_INSTANCE_IPV6";
pub const INSTANCE_PORT: &str = "AWS_INSTANCE_PORT";
pub const EC2_INSTANCE_ID: &str = "AWS_EC2_INSTANCE_ID";

/// At most 30 custom attributes, and all attributes together at most 5,000 characters.
pub const MAX_CUSTOM_ATTRIBUTES: usize = 30;
pub const MAX_ATTRIBUTES_SIZE: usize = 5000;

/// RegisterInstance's rules for `attributes` against the service's DNS records and health
/// checks (see the `Attributes` member of RegisterInstance in the API reference).
pub fn check_instance_attributes(svc: &Service, attrs: &BTreeMap<String, String>) -> Result<()> {
    let records: Vec<RecordType> = svc.dns_config.iter().flat_map(|d| d.dns_records.iter().map(|r| r.r#type)).collect();
    let has = |t: RecordType| records.contains(&t);
    let get = |k: &str| attrs.get(k).map(String::as_str);
    let custom = attrs.keys().filter(|k| !k.starts_with("AWS_")).count();
    if custom > MAX_CUSTOM_ATTRIBUTES {
        return invalid(format!("An instance can have at most {MAX_CUSTOM_ATTRIBUTES} custom attributes."));
    }
    let size: usize = attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ATTRIBUTES_SIZE {
        return invalid(format!("The attributes of an instance can total at most {MAX_ATTRIBUTES_SIZE} characters."));
    }
    if let Some(v) = get(INSTANCE_IPV4) {
        if v.parse::<std::net::Ipv4Addr>().is_err() {
            return invalid(format!("{INSTANCE_IPV4} '{v}' is not a valid IPv4 address."));
        }
    }
    if let Some(v) = get(INSTANCE_IPV6) {
        if v.parse::<std::net::Ipv6Addr>().is_err() {
            return invalid(format!("{INSTANCE_IPV6} '{v}' is not a valid IPv6 address."));
        }
    }
    if let Some(v) = get(INSTANCE_PORT) {
        if !matches!(v.parse::<u32>(), Ok(1..=65535)) {
            return invalid(format!("{INSTANCE_PORT} '{v}' must be an integer between 1 and 65535."));
        }
    }
    if let Some(v) = get(INIT_HEALTH_STATUS) {
        if svc.health_check_custom_config.is_none() {
            return invalid(format!(
                "{INIT_HEALTH_STATUS} can only be specified for a service with HealthCheckCustomConfig."
            ));
        }
        if v != "HEALTHY" && v != "UNHEALTHY" {
            return invalid(format!("{INIT_HEALTH_STATUS} must be HEALTHY or UNHEALTHY, not '{v}'."));
        }
    }
    if get(ALIAS_DNS_NAME).is_some() {
        if !(has(RecordType::A) || has(RecordType::Aaaa)) {
            return invalid(format!("{ALIAS_DNS_NAME} requires a service with an A or AAAA record."));
        }
        if svc.dns_config.as_ref().and_then(|d| d.routing_policy) != Some(RoutingPolicy::Weighted) {
            return invalid(format!("{ALIAS_DNS_NAME} requires a service whose routing policy is WEIGHTED."));
        }
        if let Some(k) = attrs.keys().find(|k| k.starts_with("AWS_INSTANCE_")) {
            return invalid(format!("{k} can't be specified together with {ALIAS_DNS_NAME}."));
        }
        return Ok(());
    }
    if has(RecordType::Cname) && get(INSTANCE_CNAME).is_none() {
        return invalid(format!("{INSTANCE_CNAME} is required for a service with a CNAME record."));
    }
    if get(INSTANCE_CNAME).is_some() && svc.dns_config.is_some() && !has(RecordType::Cname) {
        return invalid(format!("{INSTANCE_CNAME} can only be specified for a service with a CNAME record."));
    }
    if has(RecordType::A) && get(INSTANCE_IPV4).is_none() {
        return invalid(format!("{INSTANCE_IPV4} is required for a service with an A record."));
    }
    if has(RecordType::Aaaa) && get(INSTANCE_IPV6).is_none() {
        return invalid(format!("{INSTANCE_IPV6} is required for a service with an AAAA record."));
    }
    if has(RecordType::Srv) {
        if get(INSTANCE_PORT).is_none() {
            return invalid(format!("{INSTANCE_PORT} is required for a service with an SRV record."));
        }
        if get(INSTANCE_IPV4).is_none() && get(INSTANCE_IPV6).is_none() {
            return invalid(format!(
                "{INSTANCE_IPV4} or {INSTANCE_IPV6} is required for a service with an SRV record."
            ));
        }
    }
    if svc.health_check_config.is_some() && get(INSTANCE_IPV4).is_none() && get(INSTANCE_IPV6).is_none() {
        return invalid(format!(
            "{INSTANCE_IPV4} or {INSTANCE_IPV6} is required for a service with HealthCheckConfig."
        ));
    }
    Ok(())
}

/// An instance's health: its custom status (or `AWS_INIT_HEALTH_STATUS`, else HEALTHY) when
/// the service has a custom health check; HEALTHY with a Route 53 health check (estiba runs
/// none); UNKNOWN without any.
pub fn health_of(
    svc: &Service,
    attrs: Option<&BTreeMap<String, String>>,
    custom: Option<HealthStatus>,
) -> HealthStatus {
    if svc.health_check_custom_config.is_some() {
        custom
            .or_else(|| match attrs.and_then(|a| a.get(INIT_HEALTH_STATUS)).map(String::as_str) {
                Some("UNHEALTHY") => Some(HealthStatus::Unhealthy),
                _ => None,
            })
            .unwrap_or(HealthStatus::Healthy)
    } else if svc.health_check_config.is_some() {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unknown
    }
}

/// Whether the service has any health check (DiscoverInstances ignores `HealthStatus` for
/// services without one).
pub fn has_health_check(svc: &Service) -> bool {
    svc.health_check_custom_config.is_some() || svc.health_check_config.is_some()
}

/// DiscoverInstances' selection from `(health, attributes)` items, in order: those matching
/// every query parameter (and every optional parameter, unless none does), then by health.
pub fn discover<T>(
    items: Vec<(HealthStatus, &BTreeMap<String, String>, T)>,
    query: &BTreeMap<String, String>,
    optional: &BTreeMap<String, String>,
    health: HealthStatusFilter,
    health_checked: bool,
) -> Vec<(HealthStatus, T)> {
    let has_all =
        |a: &BTreeMap<String, String>, want: &BTreeMap<String, String>| want.iter().all(|(k, v)| a.get(k) == Some(v));
    let matching: Vec<_> = items.into_iter().filter(|(_, a, _)| has_all(a, query)).collect();
    let matching = if !optional.is_empty() && matching.iter().any(|(_, a, _)| has_all(a, optional)) {
        matching.into_iter().filter(|(_, a, _)| has_all(a, optional)).collect()
    } else {
        matching
    };
    let all: Vec<(HealthStatus, T)> = matching.into_iter().map(|(h, _, t)| (h, t)).collect();
    if !health_checked {
        return all;
    }
    let healthy = |h: &HealthStatus| *h == HealthStatus::Healthy;
    match health {
        HealthStatusFilter::All => all,
        HealthStatusFilter::Healthy => all.into_iter().filter(|(h, _)| healthy(h)).collect(),
        HealthStatusFilter::Unhealthy => all.into_iter().filter(|(h, _)| *h == HealthStatus::Unhealthy).collect(),
        HealthStatusFilter::HealthyOrElseAll => {
            if all.iter().any(|(h, _)| healthy(h)) {
                all.into_iter().filter(|(h, _)| healthy(h)).collect()
            } else {
                all
            }
        }
    }
}

// Operations' filters.

/// Whether an operation (as shown at the time of the call) passes all of ListOperations'
/// filters.
pub fn operation_matches(op: &OperationShape, filters: &[OperationFilter]) -> Result<bool> {
    for f in filters {
        let cond = f.condition.unwrap_or(FilterCondition::Eq);
        let target = |t: OperationTargetType| op.targets.as_ref().and_then(|m| m.get(&t)).cloned().unwrap_or_default();
        let ok = match f.name {
            OperationFilterName::NamespaceId | OperationFilterName::ServiceId => {
                if cond != FilterCondition::Eq {
                    return invalid(format!("Only the EQ condition is supported for filter {}.", f.name.as_str()));
                }
                let t = if f.name == OperationFilterName::NamespaceId {
                    OperationTargetType::Namespace
                } else {
                    OperationTargetType::Service
                };
                matches_condition(&target(t), cond, &f.values)?
            }
            OperationFilterName::Status | OperationFilterName::Type => {
                if !matches!(cond, FilterCondition::Eq | FilterCondition::In) {
                    return invalid(format!(
                        "Only the EQ and IN conditions are supported for filter {}.",
                        f.name.as_str()
                    ));
                }
                let value = if f.name == OperationFilterName::Status {
                    op.status.map(|s| s.as_str())
                } else {
                    op.r#type.map(|t| t.as_str())
                };
                matches_condition(value.unwrap_or_default(), cond, &f.values)?
            }
            OperationFilterName::UpdateDate => {
                if cond != FilterCondition::Between {
                    return invalid("Only the BETWEEN condition is supported for filter UPDATE_DATE.");
                }
                let [from, to] = f.values.as_slice() else {
                    return invalid("The UPDATE_DATE filter takes two values: a start and an end date.");
                };
                let (from, to) = (parse_date(from)?, parse_date(to)?);
                let d = op.update_date.unwrap_or_default();
                from <= d && d <= to
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A date of the UPDATE_DATE filter: Unix time in seconds.
fn parse_date(v: &str) -> Result<f64> {
    v.parse::<f64>().or_else(|_| invalid(format!("'{v}' is not a date in Unix time (seconds).")))
}

// Service attributes.

/// A service has at most 30 attributes.
pub const MAX_SERVICE_ATTRIBUTES: usize = 30;

/// UpdateServiceAttributes: adds or replaces attributes, at most 30 in all.
pub fn update_service_attributes(
    current: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mut out = current.clone();
    out.extend(new.iter().map(|(k, v)| (k.clone(), v.clone())));
    if out.len() > MAX_SERVICE_ATTRIBUTES {
        return Err(SdError::ServiceAttributesLimitExceeded(format!(
            "A service can have at most {MAX_SERVICE_ATTRIBUTES} attributes."
        )));
    }
    Ok(out)
}

// Tags.

/// At most 50 tags per resource.
pub const MAX_TAGS: usize = 50;

/// Adds or replaces tags by key.
pub fn merge_tags(current: &[Tag], new: &[Tag]) -> Result<Vec<Tag>> {
    let mut out: Vec<Tag> = current.iter().filter(|t| !new.iter().any(|n| n.key == t.key)).cloned().collect();
    for t in new {
        if t.key.starts_with("aws:") {
            return invalid(format!("Tag keys starting with 'aws:' are reserved: {}", t.key));
        }
        if let Some(o) = out.iter_mut().find(|o| o.key == t.key) {
            o.value = t.value.clone();
        } else {
            out.push(t.clone());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(SdError::TooManyTags(format!("A resource can have at most {MAX_TAGS} tags.")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SeqIds;
    use estiba_api::servicediscovery::{HealthCheckCustomConfig, OperationType, ServiceChange};

    fn scope() -> Scope {
        Scope::new("123456789012", "eu-west-1")
    }

    #[test]
    fn keys_parse_back() {
        let s = scope();
        let k = instance_key(&s, "srv-1", "i-1");
        assert_eq!(service_of_instance_key(&k), Some((s.clone(), "srv-1")));
        assert_eq!(scope_of_key(&namespace_key(&s, "ns-1")), Some(s.clone()));
        assert_eq!(service_of_instance_key(&service_key(&s, "srv-1")), None);
        assert_eq!(scope_of_key("ecs/1/r/tasks/c/x"), None);
    }

    fn rec(t: RecordType) -> DnsRecord {
        DnsRecord { ttl: 60, r#type: t }
    }

    fn dns(records: &[RecordType], policy: Option<RoutingPolicy>) -> DnsConfig {
        DnsConfig { dns_records: records.iter().map(|t| rec(*t)).collect(), namespace_id: None, routing_policy: policy }
    }

    fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn ids_keys_and_arns() {
        let mut ids = SeqIds::default();
        let ns = namespace_id(&mut ids);
        assert!(ns.starts_with("ns-") && ns.len() == 19, "{ns}");
        let srv = service_id(&mut ids);
        assert!(srv.starts_with("srv-") && srv.len() == 20, "{srv}");
        let op = operation_id(&mut ids);
        assert_eq!(op.len(), 41);
        assert_eq!(op.as_bytes()[32], b'-');
        let z = hosted_zone_id(&mut ids);
        assert!(z.starts_with('Z') && z.len() == 21 && z == z.to_uppercase());
        let s = scope();
        assert_eq!(namespace_key(&s, "ns-1"), "servicediscovery/123456789012/eu-west-1/namespaces/ns-1");
        assert_eq!(instance_key(&s, "srv-1", "i-1"), "servicediscovery/123456789012/eu-west-1/instances/srv-1/i-1");
        assert!(instance_key(&s, "srv-1", "x").starts_with(&instances_of(&s, "srv-1")));
        assert_eq!(instance_id_of(&instance_key(&s, "srv-1", "i-1")), "i-1");
        assert_eq!(
            tags_key(&s, Resource::Service, "srv-1"),
            "servicediscovery/123456789012/eu-west-1/tags/service/srv-1"
        );
        let a = arn(&s, Resource::Namespace, "ns-abc");
        assert_eq!(a, "arn:aws:servicediscovery:eu-west-1:123456789012:namespace/ns-abc");
        assert_eq!(parse_arn(&s, &a), Some((Resource::Namespace, "ns-abc".into())));
        assert_eq!(parse_arn(&Scope::new("123456789012", "us-east-1"), &a), None);
        assert_eq!(parse_arn(&s, "arn:aws:ecs:eu-west-1:123456789012:service/x"), None);
        assert_eq!(parse_arn(&s, "not an arn"), None);
        assert_eq!(id_of(&arn(&s, Resource::Service, "srv-9")), "srv-9");
        assert_eq!(id_of("srv-9"), "srv-9");
    }

    #[test]
    fn operations_advance_with_time() {
        assert_eq!(op_status(100.0, 100.0), (OperationStatus::Submitted, 100.0));
        assert_eq!(op_status(100.0, 100.15).0, OperationStatus::Pending);
        assert_eq!(op_status(100.0, 101.0), (OperationStatus::Success, 100.25));
        let old = OperationShape { create_date: Some(1.0), ..Default::default() };
        assert!(!operation_expired(&old, 1.0 + OPERATION_RETENTION - 1.0));
        assert!(operation_expired(&old, 1.0 + OPERATION_RETENTION));
        let op = operation(
            &scope(),
            "op".into(),
            OperationType::CreateNamespace,
            &[(OperationTargetType::Namespace, "ns-1")],
            5.0,
        );
        let shown = operation_at(&op, 9.0);
        assert_eq!(shown.status, Some(OperationStatus::Success));
        assert_eq!(shown.targets.unwrap()[&OperationTargetType::Namespace], "ns-1");
        let f = |name, cond, values: &[&str]| OperationFilter {
            name,
            condition: cond,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let shown = operation_at(&op, 9.0);
        let m = |fs: &[OperationFilter]| operation_matches(&shown, fs);
        assert_eq!(m(&[f(OperationFilterName::NamespaceId, None, &["ns-1"])]), Ok(true));
        assert_eq!(m(&[f(OperationFilterName::ServiceId, None, &["srv-1"])]), Ok(false));
        assert_eq!(m(&[f(OperationFilterName::Status, Some(FilterCondition::In), &["PENDING", "SUCCESS"])]), Ok(true));
        assert_eq!(m(&[f(OperationFilterName::Type, None, &["DELETE_NAMESPACE"])]), Ok(false));
        assert_eq!(m(&[f(OperationFilterName::UpdateDate, Some(FilterCondition::Between), &["5", "6"])]), Ok(true));
        assert_eq!(m(&[f(OperationFilterName::UpdateDate, Some(FilterCondition::Between), &["6", "7"])]), Ok(false));
        assert!(m(&[f(OperationFilterName::UpdateDate, None, &["5"])]).is_err());
        assert!(m(&[f(OperationFilterName::NamespaceId, Some(FilterCondition::In), &["ns-1"])]).is_err());
    }

    #[test]
    fn namespace_names_and_conflicts() {
        assert!(check_namespace_name("arn:aws:x").is_err());
        assert!(check_namespace_name("shop.local").is_ok());
        let s = scope();
        let ns = new_namespace(
            &s,
            "ns-1",
            NamespaceType::DnsPrivate,
            "shop.local",
            None,
            Some("r1".into()),
            None,
            Some("Z1".into()),
            1.0,
        );
        let soa = ns.properties.as_ref().unwrap().dns_properties.as_ref().unwrap().soa.as_ref().unwrap().ttl;
        assert_eq!(soa, 15);
        let doc = NamespaceDoc { namespace: ns, vpc: Some("vpc-1".into()), operation_id: "op-1".into() };
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["Vpc"], "vpc-1");
        assert_eq!(json["Properties"]["HttpProperties"]["HttpName"], "shop.local");
        assert_eq!(serde_json::from_value::<NamespaceDoc>(json).unwrap(), doc);
        let docs = [doc];
        assert_eq!(namespace_conflict(&docs, "shop.local", Some("r1")), Ok(Some("op-1".into())));
        assert!(matches!(namespace_conflict(&docs, "shop.local", None), Err(SdError::NamespaceAlreadyExists(_))));
        assert!(matches!(namespace_conflict(&docs, "other", Some("r1")), Err(SdError::DuplicateRequest(_))));
        assert_eq!(namespace_conflict(&docs, "other", Some("r2")), Ok(None));
        let f = |name, cond, v: &[&str]| NamespaceFilter {
            name,
            condition: cond,
            values: v.iter().map(|x| x.to_string()).collect(),
        };
        let n = &docs[0].namespace;
        assert_eq!(
            namespace_matches(n, &[f(NamespaceFilterName::Type, Some(FilterCondition::In), &["HTTP", "DNS_PRIVATE"])]),
            Ok(true)
        );
        assert_eq!(namespace_matches(n, &[f(NamespaceFilterName::Type, None, &["HTTP"])]), Ok(false));
        assert_eq!(
            namespace_matches(n, &[f(NamespaceFilterName::Name, Some(FilterCondition::BeginsWith), &["shop"])]),
            Ok(true)
        );
        assert_eq!(namespace_matches(n, &[f(NamespaceFilterName::HttpName, None, &["shop.local"])]), Ok(true));
        assert!(
            namespace_matches(n, &[f(NamespaceFilterName::Type, Some(FilterCondition::BeginsWith), &["H"])]).is_err()
        );
        assert!(namespace_matches(n, &[f(NamespaceFilterName::Name, None, &["a", "b"])]).is_err());
    }

    #[test]
    fn service_configuration_rules() {
        fn spec<'a>(
            d: Option<&'a DnsConfig>,
            h: Option<&'a HealthCheckConfig>,
            http: bool,
            custom: bool,
        ) -> ServiceSpec<'a> {
            ServiceSpec { dns_config: d, health_check_config: h, http_only: http, has_custom_health: custom }
        }
        let a = dns(&[RecordType::A, RecordType::Srv], None);
        let (ty, d) = service_config(NamespaceType::DnsPrivate, &spec(Some(&a), None, false, false)).unwrap();
        assert_eq!(ty, ServiceType::DnsHttp);
        assert_eq!(d.unwrap().routing_policy, Some(RoutingPolicy::Multivalue));
        assert_eq!(
            service_config(NamespaceType::Http, &spec(None, None, false, false)).unwrap(),
            (ServiceType::Http, None)
        );
        assert_eq!(
            service_config(NamespaceType::DnsPrivate, &spec(None, None, true, false)).unwrap().0,
            ServiceType::Http
        );
        assert!(service_config(NamespaceType::Http, &spec(Some(&a), None, false, false)).is_err());
        assert!(service_config(NamespaceType::DnsPrivate, &spec(None, None, false, false)).is_err());
        let dup = dns(&[RecordType::A, RecordType::A], None);
        assert!(service_config(NamespaceType::DnsPrivate, &spec(Some(&dup), None, false, false)).is_err());
        let cname = dns(&[RecordType::Cname], None);
        assert!(service_config(NamespaceType::DnsPrivate, &spec(Some(&cname), None, false, false)).is_err());
        let cname_w = dns(&[RecordType::Cname], Some(RoutingPolicy::Weighted));
        assert!(service_config(NamespaceType::DnsPrivate, &spec(Some(&cname_w), None, false, false)).is_ok());
        let mixed = dns(&[RecordType::Cname, RecordType::A], Some(RoutingPolicy::Weighted));
        assert!(service_config(NamespaceType::DnsPrivate, &spec(Some(&mixed), None, false, false)).is_err());
        let hc = HealthCheckConfig { failure_threshold: None, resource_path: None, r#type: HealthCheckType::Http };
        assert!(service_config(NamespaceType::DnsPrivate, &spec(Some(&a), Some(&hc), false, false)).is_err());
        assert!(service_config(NamespaceType::DnsPublic, &spec(Some(&a), Some(&hc), false, false)).is_ok());
        assert!(service_config(NamespaceType::DnsPublic, &spec(Some(&a), Some(&hc), false, true)).is_err());
        assert!(service_config(NamespaceType::DnsPublic, &spec(Some(&cname_w), Some(&hc), false, false)).is_err());
        let tcp = HealthCheckConfig {
            failure_threshold: None,
            resource_path: Some("/x".into()),
            r#type: HealthCheckType::Tcp,
        };
        assert!(service_config(NamespaceType::DnsPublic, &spec(Some(&a), Some(&tcp), false, false)).is_err());
        let d = health_check_defaults(&hc);
        assert_eq!((d.resource_path.as_deref(), d.failure_threshold), (Some("/"), Some(1)));
        assert!(check_service_name(&"a".repeat(128)).is_err());
        assert!(check_service_name("web").is_ok());
    }

    #[test]
    fn updates_keep_record_types() {
        let svc = Service { dns_config: Some(dns(&[RecordType::A], None)), ..Default::default() };
        let ttl = |t: RecordType, ttl| estiba_api::servicediscovery::DnsConfigChange {
            dns_records: vec![DnsRecord { ttl, r#type: t }],
        };
        let ch = ServiceChange {
            description: Some("d".into()),
            dns_config: Some(ttl(RecordType::A, 10)),
            health_check_config: None,
        };
        let out = update_service(&svc, NamespaceType::DnsPrivate, &ch).unwrap();
        assert_eq!(out.dns_config.unwrap().dns_records[0].ttl, 10);
        assert_eq!(out.description.as_deref(), Some("d"));
        let ch =
            ServiceChange { description: None, dns_config: Some(ttl(RecordType::Aaaa, 10)), health_check_config: None };
        assert!(update_service(&svc, NamespaceType::DnsPrivate, &ch).is_err());
        let http = Service::default();
        let ch =
            ServiceChange { description: None, dns_config: Some(ttl(RecordType::A, 10)), health_check_config: None };
        assert!(update_service(&http, NamespaceType::Http, &ch).is_err());
        let hc = HealthCheckConfig { failure_threshold: Some(2), resource_path: None, r#type: HealthCheckType::Tcp };
        let checked = Service { health_check_config: Some(hc.clone()), ..svc.clone() };
        let keep = ServiceChange { description: None, dns_config: None, health_check_config: Some(hc) };
        assert!(update_service(&checked, NamespaceType::DnsPublic, &keep).unwrap().health_check_config.is_some());
        assert!(update_service(&checked, NamespaceType::DnsPrivate, &keep).is_err());
        let drop = ServiceChange { description: None, dns_config: None, health_check_config: None };
        let out = update_service(&checked, NamespaceType::DnsPublic, &drop).unwrap();
        assert!(out.health_check_config.is_none() && out.dns_config.is_some());
    }

    #[test]
    fn instance_attributes_follow_the_records() {
        let svc =
            |records: &[RecordType], policy| Service { dns_config: Some(dns(records, policy)), ..Default::default() };
        let a = svc(&[RecordType::A], None);
        assert!(check_instance_attributes(&a, &attrs(&[(INSTANCE_IPV4, "10.0.0.1")])).is_ok());
        assert!(check_instance_attributes(&a, &attrs(&[])).is_err());
        assert!(check_instance_attributes(&a, &attrs(&[(INSTANCE_IPV4, "10.0.0.300")])).is_err());
        let srv = svc(&[RecordType::Srv], None);
        assert!(check_instance_attributes(&srv, &attrs(&[(INSTANCE_IPV4, "10.0.0.1")])).is_err());
        assert!(check_instance_attributes(&srv, &attrs(&[(INSTANCE_PORT, "80")])).is_err());
        assert!(check_instance_attributes(&srv, &attrs(&[(INSTANCE_IPV6, "::1"), (INSTANCE_PORT, "80")])).is_ok());
        assert!(check_instance_attributes(&srv, &attrs(&[(INSTANCE_IPV4, "10.0.0.1"), (INSTANCE_PORT, "0")])).is_err());
        let aaaa = svc(&[RecordType::Aaaa], None);
        assert!(check_instance_attributes(&aaaa, &attrs(&[(INSTANCE_IPV4, "10.0.0.1")])).is_err());
        let cname = svc(&[RecordType::Cname], Some(RoutingPolicy::Weighted));
        assert!(check_instance_attributes(&cname, &attrs(&[(INSTANCE_CNAME, "x.example.com")])).is_ok());
        assert!(check_instance_attributes(&cname, &attrs(&[])).is_err());
        assert!(check_instance_attributes(&a, &attrs(&[(INSTANCE_IPV4, "10.0.0.1"), (INSTANCE_CNAME, "x")])).is_err());
        let weighted = svc(&[RecordType::A], Some(RoutingPolicy::Weighted));
        assert!(check_instance_attributes(&weighted, &attrs(&[(ALIAS_DNS_NAME, "lb.elb.amazonaws.com")])).is_ok());
        assert!(check_instance_attributes(&a, &attrs(&[(ALIAS_DNS_NAME, "lb.elb.amazonaws.com")])).is_err());
        assert!(check_instance_attributes(&weighted, &attrs(&[(ALIAS_DNS_NAME, "lb"), (INSTANCE_IPV4, "10.0.0.1")]))
            .is_err());
        let http = Service::default();
        assert!(check_instance_attributes(&http, &attrs(&[("color", "blue")])).is_ok());
        assert!(check_instance_attributes(&http, &attrs(&[(INSTANCE_CNAME, "x.example.com")])).is_ok());
        assert!(check_instance_attributes(&http, &attrs(&[(INIT_HEALTH_STATUS, "HEALTHY")])).is_err());
        let many: BTreeMap<String, String> = (0..31).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(check_instance_attributes(&http, &many).is_err());
        let big = attrs(&[
            ("a", &"x".repeat(1000)),
            ("b", &"x".repeat(1000)),
            ("c", &"x".repeat(1000)),
            ("d", &"x".repeat(1000)),
            ("e", &"x".repeat(1000)),
        ]);
        assert!(check_instance_attributes(&http, &big).is_err());
        let custom =
            Service { health_check_custom_config: Some(HealthCheckCustomConfig::default()), ..Default::default() };
        assert!(check_instance_attributes(&custom, &attrs(&[(INIT_HEALTH_STATUS, "UNHEALTHY")])).is_ok());
        assert!(check_instance_attributes(&custom, &attrs(&[(INIT_HEALTH_STATUS, "MAYBE")])).is_err());
    }

    #[test]
    fn health_and_discovery() {
        let custom =
            Service { health_check_custom_config: Some(HealthCheckCustomConfig::default()), ..Default::default() };
        let plain = Service::default();
        let init = attrs(&[(INIT_HEALTH_STATUS, "UNHEALTHY")]);
        assert_eq!(health_of(&custom, Some(&init), None), HealthStatus::Unhealthy);
        assert_eq!(health_of(&custom, Some(&init), Some(HealthStatus::Healthy)), HealthStatus::Healthy);
        assert_eq!(health_of(&custom, None, None), HealthStatus::Healthy);
        assert_eq!(health_of(&plain, None, None), HealthStatus::Unknown);
        let (blue, green) = (attrs(&[("color", "blue"), ("v", "1")]), attrs(&[("color", "green"), ("v", "1")]));
        let items = || vec![(HealthStatus::Healthy, &blue, "b"), (HealthStatus::Unhealthy, &green, "g")];
        fn names(v: Vec<(HealthStatus, &'static str)>) -> Vec<&'static str> {
            v.into_iter().map(|(_, n)| n).collect()
        }
        let none = BTreeMap::new();
        let h = HealthStatusFilter::Healthy;
        assert_eq!(names(discover(items(), &none, &none, h, true)), ["b"]);
        assert_eq!(names(discover(items(), &none, &none, h, false)), ["b", "g"]);
        assert_eq!(names(discover(items(), &none, &none, HealthStatusFilter::All, true)), ["b", "g"]);
        assert_eq!(names(discover(items(), &none, &none, HealthStatusFilter::Unhealthy, true)), ["g"]);
        let green_only = attrs(&[("color", "green")]);
        assert_eq!(names(discover(items(), &green_only, &none, HealthStatusFilter::HealthyOrElseAll, true)), ["g"]);
        assert_eq!(names(discover(items(), &green_only, &none, h, true)), Vec::<&str>::new());
        let v1 = attrs(&[("v", "1")]);
        assert_eq!(names(discover(items(), &v1, &green_only, HealthStatusFilter::All, true)), ["g"]);
        let red = attrs(&[("color", "red")]);
        assert_eq!(names(discover(items(), &v1, &red, HealthStatusFilter::All, true)), ["b", "g"]);
    }

    #[test]
    fn service_attributes_are_limited() {
        let a = attrs(&[("a", "1")]);
        assert_eq!(
            update_service_attributes(&a, &attrs(&[("a", "2"), ("b", "3")])).unwrap(),
            attrs(&[("a", "2"), ("b", "3")])
        );
        let many: BTreeMap<String, String> = (0..30).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(update_service_attributes(&many, &attrs(&[("k0", "w")])).is_ok());
        assert!(matches!(update_service_attributes(&many, &a), Err(SdError::ServiceAttributesLimitExceeded(_))));
    }

    #[test]
    fn tags_merge_by_key() {
        let t = |k: &str, v: &str| Tag { key: k.into(), value: v.into() };
        let out = merge_tags(&[t("a", "1"), t("b", "2")], &[t("b", "3"), t("c", "4")]).unwrap();
        assert_eq!(out, [t("a", "1"), t("b", "3"), t("c", "4")]);
        assert!(merge_tags(&[], &[t("aws:x", "1")]).is_err());
        let many: Vec<Tag> = (0..51).map(|i| t(&i.to_string(), "v")).collect();
        assert!(matches!(merge_tags(&[], &many), Err(SdError::TooManyTags(_))));
    }
}
