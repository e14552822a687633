//! AWS Cloud Map (servicediscovery, AWS JSON 1.1): namespaces, services, instances, health,
//! discovery, operations and tags, over the documents of `estiba_core::servicediscovery`
//! (keys `servicediscovery/<account>/<region>/<kind>/...`) and the view tables declared here.
//!
//! Cloud Map's namespace, service and instance changes are asynchronous: they answer an
//! operation id. Here every change is written by the call itself, with its operation
//! document; the operation reports SUBMITTED, PENDING and then SUCCESS as it ages
//! (`estiba_core::servicediscovery::op_status`), so clients that poll GetOperation see the
//! states they expect, and what they then read is already there.
//!
//! Readers outside this module (the DNS resolver, ECS services registering their tasks) use
//! [`table`] with the `Table` they need and [`register_ops`] / [`deregister_ops`].

use std::collections::BTreeMap;

use bytes::Bytes;
use estiba_api::schema::{Model, Protocol};
use estiba_api::servicediscovery::*;
use estiba_api::{ApiError, DecodeError};
use estiba_core::servicediscovery::{self as sd, HealthDoc, Marker, NamespaceDoc, SdError};
use estiba_core::Scope;
use estiba_store::Op;
use serde::{Deserialize, Serialize};

use super::{json, route, BoxFuture, Call, Input, Service as ApiService};
use crate::view::{Doc, State, TableDef};
use crate::Server;

mod instances;
pub(crate) mod namespaces;
mod operations;
pub(crate) mod services;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The Cloud Map service.
pub struct ServiceDiscovery;

/// A name taken in a scope: a namespace's (`namespace-names/<name>`) or a service's in its
/// namespace (`service-names/<ns-id>/<name>`). Creation claims the name with
/// `Compare::absent`, so two creates of one name never both succeed; discovery finds
/// namespaces and services by name through them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NameDoc {
    #[serde(rename = "Id")]
    pub id: String,
}

pub const NAMESPACE_NAMES: &str = "namespace-names";
pub const SERVICE_NAMES: &str = "service-names";

/// This service's view tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Namespaces,
    Services,
    Instances,
    Health,
    Revisions,
    Operations,
    Tags,
    NamespaceNames,
    ServiceNames,
    ServiceAttributes,
}

static TABLES: [TableDef; 10] = [
    TableDef::of::<NamespaceDoc>(sd::PREFIX, sd::NAMESPACES),
    TableDef::of::<Service>(sd::PREFIX, sd::SERVICES),
    TableDef::of::<Instance>(sd::PREFIX, sd::INSTANCES),
    TableDef::of::<HealthDoc>(sd::PREFIX, sd::HEALTH),
    TableDef::of::<Marker>(sd::PREFIX, sd::REVISIONS),
    TableDef::of::<OperationShape>(sd::PREFIX, sd::OPERATIONS),
    TableDef::of::<Vec<Tag>>(sd::PREFIX, sd::TAGS),
    TableDef::of::<NameDoc>(sd::PREFIX, NAMESPACE_NAMES),
    TableDef::of::<NameDoc>(sd::PREFIX, SERVICE_NAMES),
    TableDef::of::<BTreeMap<String, String>>(sd::PREFIX, sd::SERVICE_ATTRIBUTES),
];

/// The view table of one kind (documents: [`NamespaceDoc`], `Service`, `Instance`,
/// [`HealthDoc`], [`Marker`], `OperationShape`, `Vec<Tag>`, [`NameDoc`], [`NameDoc`], a
/// string map).
pub fn table(t: Table) -> &'static TableDef {
    &TABLES[t as usize]
}

impl ApiService for ServiceDiscovery {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let missing = |other: Operation| super::not_implemented(&ServiceDiscovery, other.name());
            route! { &ServiceDiscovery, s, &cx, Operation::ALL[op], input, missing;
                CreateHttpNamespace => namespaces::create_http,
                CreatePrivateDnsNamespace => namespaces::create_private_dns,
                CreatePublicDnsNamespace => namespaces::create_public_dns,
                GetNamespace => namespaces::get,
                ListNamespaces => namespaces::list,
                UpdateHttpNamespace => namespaces::update_http,
                UpdatePrivateDnsNamespace => namespaces::update_private_dns,
                UpdatePublicDnsNamespace => namespaces::update_public_dns,
                DeleteNamespace => namespaces::delete,
                CreateService => services::create,
                GetService => services::get,
                ListServices => services::list,
                UpdateService => services::update,
                DeleteService => services::delete,
                GetServiceAttributes => services::get_attributes,
                UpdateServiceAttributes => services::update_attributes,
                DeleteServiceAttributes => services::delete_attributes,
                RegisterInstance => instances::register,
                DeregisterInstance => instances::deregister,
                GetInstance => instances::get,
                ListInstances => instances::list,
                GetInstancesHealthStatus => instances::health_status,
                UpdateInstanceCustomHealthStatus => instances::update_custom_health,
                DiscoverInstances => instances::discover,
                DiscoverInstancesRevision => instances::discover_revision,
                GetOperation => operations::get,
                ListOperations => operations::list,
                TagResource => operations::tag,
                UntagResource => operations::untag,
                ListTagsForResource => operations::list_tags,
            }
        })
    }

    /// A body that is not JSON is a `SerializationException`; a value the model refuses is
    /// `InvalidInput`.
    fn decode_error(&self, e: DecodeError, _: Protocol) -> ApiError {
        super::json_decode_error(e, ErrorCode::InvalidInput)
    }

    fn tables(&self) -> &'static [TableDef] {
        &TABLES
    }
}

/// A document as a store write.
fn put<T: Serialize>(key: &str, v: &T) -> Op {
    Op::put(key.to_owned(), serde_json::to_vec(v).expect("documents always serialize"))
}

/// One document of this service's tables.
fn doc<'a, T: 'static>(st: &'a State, t: Table, key: &str) -> Option<&'a Doc<T>> {
    st.doc::<T>(table(t), key)
}

/// The documents of one kind in the scope whose keys start with `rest` after the kind.
fn docs<'a, T: 'static>(st: &'a State, scope: &Scope, t: Table, rest: &str) -> impl Iterator<Item = &'a Doc<T>> + 'a {
    st.docs::<T>(table(t), &(sd::kind_prefix(scope, table(t).kind) + rest))
}

fn namespace_name_key(scope: &Scope, name: &str) -> String {
    sd::kind_prefix(scope, NAMESPACE_NAMES) + name
}

fn service_name_key(scope: &Scope, namespace_id: &str, name: &str) -> String {
    format!("{}{namespace_id}/{name}", sd::kind_prefix(scope, SERVICE_NAMES))
}

fn namespace_doc<'a>(st: &'a State, scope: &Scope, id_or_arn: &str) -> Result<&'a Doc<NamespaceDoc>, SdError> {
    let id = sd::id_of(id_or_arn);
    doc(st, Table::Namespaces, &sd::namespace_key(scope, id)).ok_or_else(|| SdError::namespace_not_found(id))
}

fn service_doc<'a>(st: &'a State, scope: &Scope, id_or_arn: &str) -> Result<&'a Doc<Service>, SdError> {
    let id = sd::id_of(id_or_arn);
    doc(st, Table::Services, &sd::service_key(scope, id)).ok_or_else(|| SdError::service_not_found(id))
}

fn tags_of<'a>(st: &'a State, scope: &Scope, r: sd::Resource, id: &str) -> Option<&'a Doc<Vec<Tag>>> {
    doc(st, Table::Tags, &sd::tags_key(scope, r, id))
}

/// An instance's health in its service: its custom status, else `AWS_INIT_HEALTH_STATUS`,
/// for services with a custom health check; HEALTHY with a Route 53 one; UNKNOWN without.
pub fn instance_health(st: &State, scope: &Scope, svc: &Service, inst: &Instance) -> HealthStatus {
    let service_id = svc.id.as_deref().unwrap_or_default();
    let custom =
        doc::<HealthDoc>(st, Table::Health, &sd::health_key(scope, service_id, &inst.id)).map(|d| d.value.status);
    sd::health_of(svc, inst.attributes.as_ref(), custom)
}

/// The writes that register `instance` in a service: its document, and the service's
/// revision marker (which moves `InstancesRevision`); both unconditional, so registrations
/// of one service never conflict with each other. A custom health status set for an
/// earlier registration of the instance goes with it.
pub fn register_ops(scope: &Scope, service_id: &str, instance: &Instance) -> Vec<Op> {
    vec![
        put(&sd::instance_key(scope, service_id, &instance.id), instance),
        put(&sd::revision_key(scope, service_id), &Marker {}),
        Op::delete(sd::health_key(scope, service_id, &instance.id)),
    ]
}

/// The writes that deregister an instance.
pub fn deregister_ops(scope: &Scope, service_id: &str, instance_id: &str) -> Vec<Op> {
    vec![
        Op::delete(sd::instance_key(scope, service_id, instance_id)),
        Op::delete(sd::health_key(scope, service_id, instance_id)),
        put(&sd::revision_key(scope, service_id), &Marker {}),
    ]
}

/// A page of `items` (sorted by `key`) after `next_token`, at most `max_results` (default 100).
fn page<T, K: AsRef<str>>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
    next_token: Option<&str>,
    max_results: Option<i32>,
) -> Result<estiba_core::page::Page<T>, SdError> {
    let limit = max_results.filter(|n| *n > 0).unwrap_or(100) as usize;
    estiba_core::page::paginate(items, key, next_token, limit, false).map_err(|e| SdError::InvalidInput(e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_one_per_kind_in_order() {
        let kinds = [
            (Table::Namespaces, sd::NAMESPACES),
            (Table::Services, sd::SERVICES),
            (Table::Instances, sd::INSTANCES),
            (Table::Health, sd::HEALTH),
            (Table::Revisions, sd::REVISIONS),
            (Table::Operations, sd::OPERATIONS),
            (Table::Tags, sd::TAGS),
            (Table::NamespaceNames, NAMESPACE_NAMES),
            (Table::ServiceNames, SERVICE_NAMES),
            (Table::ServiceAttributes, sd::SERVICE_ATTRIBUTES),
        ];
        assert_eq!(kinds.len(), TABLES.len());
        for (t, kind) in kinds {
            assert_eq!((table(t).prefix, table(t).kind), (sd::PREFIX, kind));
        }
    }

    #[test]
    fn registration_is_unconditional_puts() {
        let scope = Scope::new("000000000000", "us-east-1");
        let inst = Instance { id: "i-1".into(), ..Default::default() };
        let ops = register_ops(&scope, "srv-1", &inst);
        let keys: Vec<&str> = ops.iter().map(|o| o.key()).collect();
        assert_eq!(
            keys,
            [
                "servicediscovery/000000000000/us-east-1/instances/srv-1/i-1",
                "servicediscovery/000000000000/us-east-1/revisions/srv-1",
                "servicediscovery/000000000000/us-east-1/health/srv-1/i-1",
            ]
        );
    }
}
