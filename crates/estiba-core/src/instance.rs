//! Container instances: registration, attributes, resources and state changes.

use std::collections::BTreeSet;

use estiba_api::ecs::{
    Attribute, ContainerInstance, RegisterContainerInstanceRequest, Resource, TargetType, TransportProtocol,
};

use crate::arn::Scope;
use crate::error::{EcsError, Result};
use crate::ids::{Ids, Now};
use crate::{bail, query};

pub const MAX_CUSTOM_ATTRIBUTES: usize = 10;

/// Ports ECS reserves on every container instance (SSH, Docker, the agent).
pub const RESERVED_PORTS: [&str; 5] = ["22", "2375", "2376", "51678", "51679"];

pub fn id_of(ci: &ContainerInstance) -> &str {
    ci.container_instance_arn.as_deref().and_then(|a| a.rsplit('/').next()).unwrap_or("")
}

pub fn status(ci: &ContainerInstance) -> &str {
    ci.status.as_deref().unwrap_or("ACTIVE")
}

/// ACTIVE and DRAINING instances count as registered.
pub fn is_registered(ci: &ContainerInstance) -> bool {
    matches!(status(ci), "ACTIVE" | "DRAINING")
}

fn is_custom(name: &str) -> bool {
    !(name.starts_with("ecs.") || name.starts_with("com.amazonaws.ecs."))
}

fn int_resource(name: &str, v: i32) -> Resource {
    Resource { name: Some(name.into()), r#type: Some("INTEGER".into()), integer_value: v, ..Default::default() }
}

fn set_resource(name: &str, v: Vec<String>) -> Resource {
    Resource {
        name: Some(name.into()),
        r#type: Some("STRINGSET".into()),
        string_set_value: Some(v),
        ..Default::default()
    }
}

/// Checks one attribute's name and value the way PutAttributes does.
pub fn validate_attribute(a: &Attribute) -> Result<()> {
    let name_ok = !a.name.is_empty()
        && a.name.len() <= 128
        && a.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./\\".contains(&b));
    if !name_ok {
        bail!(
            invalid,
            "Attribute name '{}' is not valid. Names hold up to 128 letters, numbers, hyphens, underscores, periods, and forward or back slashes.",
            crate::names::shown(&a.name)
        );
    }
    if let Some(v) = &a.value {
        let ok = !v.is_empty()
            && v.len() <= 128
            && !v.starts_with(' ')
            && !v.ends_with(' ')
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./\\@: ".contains(&b));
        if !ok {
            bail!(
                invalid,
                "Attribute value '{}' for '{}' is not valid. Values hold up to 128 letters, numbers, hyphens, underscores, periods, at signs, slashes, colons and spaces, and do not start or end with a space.",
                crate::names::shown(v),
                a.name
            );
        }
    }
    if a.target_type.is_some_and(|t| t != TargetType::ContainerInstance) {
        bail!(invalid, "targetType must be container-instance");
    }
    Ok(())
}

/// Sets attributes on an instance, replacing same-named ones; at most 10 custom ones.
pub fn put_attributes(ci: &mut ContainerInstance, attrs: &[Attribute]) -> Result<()> {
    let list = ci.attributes.get_or_insert_with(Vec::new);
    for a in attrs {
        validate_attribute(a)?;
        let clean = Attribute { name: a.name.clone(), value: a.value.clone(), target_type: None, target_id: None };
        match list.iter_mut().find(|x| x.name == a.name) {
            Some(x) => *x = clean,
            None => list.push(clean),
        }
    }
    if list.iter().filter(|a| is_custom(&a.name)).count() > MAX_CUSTOM_ATTRIBUTES {
        return Err(EcsError::new(
            estiba_api::ecs::ErrorCode::AttributeLimitExceededException,
            format!("A container instance can have at most {MAX_CUSTOM_ATTRIBUTES} custom attributes."),
        ));
    }
    Ok(())
}

pub fn delete_attributes(ci: &mut ContainerInstance, attrs: &[Attribute]) {
    if let Some(list) = &mut ci.attributes {
        list.retain(|x| !attrs.iter().any(|a| a.name == x.name && (a.value.is_none() || a.value == x.value)));
    }
}

/// Registers (or, with `existing`, re-registers) a container instance.
pub fn register(
    scope: &Scope,
    cluster: &str,
    req: &RegisterContainerInstanceRequest,
    existing: Option<&ContainerInstance>,
    ids: &mut dyn Ids,
    now: Now,
) -> Result<ContainerInstance> {
    let doc: Option<serde_json::Value> = match &req.instance_identity_document {
        None => None,
        Some(d) => Some(serde_json::from_str(d).map_err(|_| {
            EcsError::invalid("instanceIdentityDocument must be the JSON document of the EC2 instance identity.")
        })?),
    };
    let field = |k: &str| doc.as_ref().and_then(|d| d.get(k)).and_then(|v| v.as_str()).map(str::to_owned);
    let id = match existing {
        Some(e) => id_of(e).to_owned(),
        None => ids.hex32(),
    };
    let ec2_id = field("instanceId")
        .or_else(|| existing.and_then(|e| e.ec2_instance_id.clone()))
        .unwrap_or_else(|| format!("i-{}", &ids.hex32()[..17]));
    let mut cpu = 1024;
    let mut memory = 2048;
    let mut ports: Vec<String> = RESERVED_PORTS.iter().map(|p| p.to_string()).collect();
    let mut ports_udp = Vec::new();
    for r in req.total_resources.iter().flatten() {
        match r.name.as_deref() {
            Some("CPU") => cpu = r.integer_value,
            Some("MEMORY") => memory = r.integer_value,
            Some("PORTS") => ports = r.string_set_value.clone().unwrap_or_default(),
            Some("PORTS_UDP") => ports_udp = r.string_set_value.clone().unwrap_or_default(),
            _ => {}
        }
    }
    if cpu <= 0 || memory <= 0 {
        bail!(invalid, "totalResources CPU and MEMORY must be positive.");
    }
    let registered = vec![
        int_resource("CPU", cpu),
        int_resource("MEMORY", memory),
        set_resource("PORTS", ports),
        set_resource("PORTS_UDP", ports_udp),
    ];
    let mut attributes = vec![
        Attribute { name: "ecs.os-type".into(), value: Some("linux".into()), ..Default::default() },
        Attribute { name: "ecs.os-family".into(), value: Some("LINUX".into()), ..Default::default() },
        Attribute {
            name: "ecs.cpu-architecture".into(),
            value: Some(field("architecture").unwrap_or_else(|| "x86_64".into())),
            ..Default::default()
        },
        Attribute {
            name: "ecs.availability-zone".into(),
            value: Some(field("availabilityZone").unwrap_or_else(|| format!("{}a", scope.region))),
            ..Default::default()
        },
    ];
    if let Some(t) = field("instanceType") {
        attributes.push(Attribute { name: "ecs.instance-type".into(), value: Some(t), ..Default::default() });
    }
    if let Some(a) = field("imageId") {
        attributes.push(Attribute { name: "ecs.ami-id".into(), value: Some(a), ..Default::default() });
    }
    for cap in [
        "com.amazonaws.ecs.capability.docker-remote-api.1.18",
        "com.amazonaws.ecs.capability.docker-remote-api.1.19",
        "com.amazonaws.ecs.capability.docker-remote-api.1.21",
        "com.amazonaws.ecs.capability.docker-remote-api.1.24",
        "ecs.capability.task-eni",
        "ecs.capability.container-health-check",
        "ecs.capability.container-ordering",
        "com.amazonaws.ecs.capability.task-iam-role",
        "com.amazonaws.ecs.capability.logging-driver.awslogs",
        "com.amazonaws.ecs.capability.logging-driver.json-file",
        "com.amazonaws.ecs.capability.logging-driver.none",
        "com.amazonaws.ecs.capability.private-registry-authentication.secretsmanager",
        "ecs.capability.env-files.s3",
    ] {
        attributes.push(Attribute { name: cap.into(), ..Default::default() });
    }
    let mut ci = ContainerInstance {
        container_instance_arn: Some(scope.container_instance_arn(cluster, &id)),
        ec2_instance_id: Some(ec2_id),
        version: existing.map_or(1, |e| e.version + 1),
        version_info: req.version_info.clone().or_else(|| existing.and_then(|e| e.version_info.clone())),
        remaining_resources: Some(registered.clone()),
        registered_resources: Some(registered),
        status: Some("ACTIVE".into()),
        agent_connected: existing.is_some_and(|e| e.agent_connected),
        attributes: Some(attributes),
        registered_at: Some(existing.and_then(|e| e.registered_at).unwrap_or(now)),
        tags: None,
        attachments: Some(vec![]),
        ..Default::default()
    };
    if let Some(old) = existing {
        let custom: Vec<Attribute> = old.attributes.iter().flatten().filter(|a| is_custom(&a.name)).cloned().collect();
        put_attributes(&mut ci, &custom)?;
    }
    put_attributes(&mut ci, req.attributes.as_deref().unwrap_or_default())?;
    if let Some(tags) = &req.tags {
        crate::tags::validate(tags)?;
    }
    Ok(ci)
}

/// The attribute naming the estiba node that runs a container instance's tasks. A node that
/// joins a cluster registers with it, and tasks placed on the instance are claimed for it.
pub const NODE_ATTRIBUTE: &str = "estiba.node-id";

/// The node behind a container instance, when one registered it.
pub fn node_of(ci: &ContainerInstance) -> Option<&str> {
    ci.attributes.iter().flatten().find(|a| a.name == NODE_ATTRIBUTE).and_then(|a| a.value.as_deref())
}

/// The registration a node makes when it joins a cluster, as the ECS agent does on an EC2
/// instance: all its CPUs and memory, the ports ECS reserves plus `reserved` (the server's
/// own listener).
pub fn node_registration(
    node: &crate::node::NodeStatus,
    reserved: &[u16],
    version: &str,
) -> RegisterContainerInstanceRequest {
    let int = |name: &str, v: i64| Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: v.clamp(1, i32::MAX as i64) as i32,
        ..Default::default()
    };
    let mut ports: Vec<String> = RESERVED_PORTS.iter().map(|p| p.to_string()).collect();
    ports.extend(reserved.iter().map(u16::to_string));
    RegisterContainerInstanceRequest {
        total_resources: Some(vec![
            int("CPU", node.cpus.max(1) as i64 * 1024),
            int("MEMORY", (node.mem_total_bytes >> 20) as i64),
            Resource {
                name: Some("PORTS".into()),
                r#type: Some("STRINGSET".into()),
                string_set_value: Some(ports),
                ..Default::default()
            },
        ]),
        attributes: Some(
            std::iter::once(Attribute {
                name: NODE_ATTRIBUTE.into(),
                value: Some(node.id.clone()),
                ..Default::default()
            })
            .chain(node.attributes.iter().filter(|(k, _)| k != AZ_ATTRIBUTE).map(|(k, v)| Attribute {
                name: k.clone(),
                value: Some(v.clone()),
                ..Default::default()
            }))
            .collect(),
        ),
        instance_identity_document: node_identity(node),
        version_info: Some(estiba_api::ecs::VersionInfo {
            agent_version: Some(version.into()),
            agent_hash: Some("estiba".into()),
            docker_version: Some(format!("estiba {}", node.executor)),
        }),
        ..Default::default()
    }
}

const AZ_ATTRIBUTE: &str = "ecs.availability-zone";

/// The identity document a node registers with: an EXTERNAL node's instance id is an SSM
/// managed instance id (`mi-`, as ECS Anywhere's), derived from the node id so that it stays
/// the same across registrations; an `ecs.availability-zone` attribute sets the zone.
fn node_identity(node: &crate::node::NodeStatus) -> Option<String> {
    let zone = node.attributes.iter().find(|(k, _)| k == AZ_ATTRIBUTE).map(|(_, v)| v.clone());
    if !node.external && zone.is_none() {
        return None;
    }
    let mut doc = serde_json::Map::new();
    if node.external {
        // FNV-1a: a stable id from the node id (no randomness, no dependency).
        let h = node.id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        doc.insert("instanceId".into(), format!("mi-{h:017x}").into());
    }
    if let Some(z) = zone {
        doc.insert("availabilityZone".into(), z.into());
    }
    Some(serde_json::Value::Object(doc).to_string())
}

/// What a container instance has left for placement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    pub cpu: i64,
    pub memory: i64,
    pub ports: BTreeSet<(i32, TransportProtocol)>,
}

/// Registered capacity of an instance, before any task is subtracted. The reserved ports
/// are the ones listed as PORTS/PORTS_UDP.
pub fn registered_capacity(ci: &ContainerInstance) -> Capacity {
    let mut c = Capacity::default();
    for r in ci.registered_resources.iter().flatten() {
        match r.name.as_deref() {
            Some("CPU") => c.cpu = r.integer_value as i64,
            Some("MEMORY") => c.memory = r.integer_value as i64,
            Some("PORTS") => {
                for p in r.string_set_value.iter().flatten() {
                    if let Ok(p) = p.parse() {
                        c.ports.insert((p, TransportProtocol::Tcp));
                    }
                }
            }
            Some("PORTS_UDP") => {
                for p in r.string_set_value.iter().flatten() {
                    if let Ok(p) = p.parse() {
                        c.ports.insert((p, TransportProtocol::Udp));
                    }
                }
            }
            _ => {}
        }
    }
    c
}

/// `remainingResources` for DescribeContainerInstances: registered minus what tasks hold.
/// `used_ports` holds the reserved ports plus the tasks' host ports.
pub fn remaining_resources(
    cpu_left: i64,
    memory_left: i64,
    used_ports: &BTreeSet<(i32, TransportProtocol)>,
) -> Vec<Resource> {
    let ports = |proto| used_ports.iter().filter(|(_, p)| *p == proto).map(|(n, _)| n.to_string()).collect::<Vec<_>>();
    vec![
        int_resource("CPU", cpu_left as i32),
        int_resource("MEMORY", memory_left as i32),
        set_resource("PORTS", ports(TransportProtocol::Tcp)),
        set_resource("PORTS_UDP", ports(TransportProtocol::Udp)),
    ]
}

/// A container instance seen by the query language: its document, what its live tasks hold,
/// and tasks of one group the current request has placed on it.
pub struct Queried<'a> {
    pub ci: &'a ContainerInstance,
    pub used: &'a crate::placement::Usage,
    pub added: Option<(&'a str, u32)>,
}

impl<'a> Queried<'a> {
    /// An instance with no task known.
    pub fn bare(ci: &'a ContainerInstance) -> Self {
        Queried { ci, used: &crate::placement::NO_USAGE, added: None }
    }
}

impl query::QueryTarget for Queried<'_> {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.ci.attributes.iter().flatten().find(|a| a.name == name).map(|a| a.value.as_deref().unwrap_or(""))
    }
    fn ec2_instance_id(&self) -> Option<&str> {
        self.ci.ec2_instance_id.as_deref()
    }
    fn registered_at(&self) -> Option<f64> {
        self.ci.registered_at
    }
    fn running_tasks_count(&self) -> i64 {
        self.used.running
    }
    fn agent_connected(&self) -> bool {
        self.ci.agent_connected
    }
    fn agent_version(&self) -> Option<&str> {
        self.ci.version_info.as_ref().and_then(|v| v.agent_version.as_deref())
    }
    fn task_groups(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.used.groups.iter().map(|(g, _)| &**g).collect();
        out.extend(self.added.map(|(g, _)| g));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SeqIds;

    #[test]
    fn register_and_attributes() {
        let scope = Scope::new("1", "us-east-1");
        let req = RegisterContainerInstanceRequest {
            instance_identity_document: Some(r#"{"instanceId":"i-0123","instanceType":"t3.small"}"#.into()),
            total_resources: Some(vec![int_resource("CPU", 2048), int_resource("MEMORY", 4096)]),
            attributes: Some(vec![Attribute {
                name: "stack".into(),
                value: Some("prod".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let mut ci = register(&scope, "c", &req, None, &mut SeqIds::default(), 1.0).unwrap();
        assert_eq!(ci.ec2_instance_id.as_deref(), Some("i-0123"));
        let cap = registered_capacity(&ci);
        assert_eq!((cap.cpu, cap.memory), (2048, 4096));
        let q = Queried::bare(&ci);
        assert_eq!(query::QueryTarget::attribute(&q, "ecs.instance-type"), Some("t3.small"));
        assert_eq!(query::QueryTarget::attribute(&q, "stack"), Some("prod"));
        let many: Vec<Attribute> = (0..10).map(|i| Attribute { name: format!("a{i}"), ..Default::default() }).collect();
        let e = put_attributes(&mut ci, &many).unwrap_err();
        assert_eq!(e.code, estiba_api::ecs::ErrorCode::AttributeLimitExceededException);
        assert!(validate_attribute(&Attribute { name: "bad name".into(), ..Default::default() }).is_err());
    }
}
