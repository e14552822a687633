//! Clusters: creation, settings, capacity provider associations, and the counts and
//! statistics DescribeClusters reports.

use estiba_api::ecs::{
    CapacityProviderStrategyItem, Cluster, ClusterField, ClusterSetting, ClusterSettingName, CreateClusterRequest,
    KeyValuePair,
};

use crate::arn::Scope;
use crate::error::Result;
use crate::{bail, capacity, names};

pub const ACTIVE: &str = "ACTIVE";
pub const INACTIVE: &str = "INACTIVE";

/// Task and service counts of one cluster, derived from the tasks, services and container
/// instances that exist (never stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub running_ec2: i32,
    pub running_fargate: i32,
    pub pending_ec2: i32,
    pub pending_fargate: i32,
    pub active_ec2_services: i32,
    pub active_fargate_services: i32,
    pub draining_ec2_services: i32,
    pub draining_fargate_services: i32,
    pub registered_instances: i32,
}

impl Counts {
    pub fn add(&mut self, other: &Counts, sign: i32) {
        self.running_ec2 += sign * other.running_ec2;
        self.running_fargate += sign * other.running_fargate;
        self.pending_ec2 += sign * other.pending_ec2;
        self.pending_fargate += sign * other.pending_fargate;
        self.active_ec2_services += sign * other.active_ec2_services;
        self.active_fargate_services += sign * other.active_fargate_services;
        self.draining_ec2_services += sign * other.draining_ec2_services;
        self.draining_fargate_services += sign * other.draining_fargate_services;
        self.registered_instances += sign * other.registered_instances;
    }

    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

pub fn validate_name(name: &str) -> Result<()> {
    if !names::valid_name(name) {
        bail!(
            invalid,
            "Cluster name '{}' is not valid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
            names::shown(name)
        );
    }
    Ok(())
}

fn validate_settings(settings: &[ClusterSetting]) -> Result<()> {
    for s in settings {
        match (s.name, s.value.as_deref()) {
            (Some(ClusterSettingName::ContainerInsights), Some("enabled" | "disabled" | "enhanced")) => {}
            (Some(ClusterSettingName::ContainerInsights), v) => bail!(
                invalid,
                "Invalid value {:?} for cluster setting containerInsights. Valid values are enabled, disabled and enhanced.",
                v.unwrap_or("")
            ),
            (None, _) => bail!(invalid, "Cluster setting name must be specified."),
        }
    }
    Ok(())
}

/// Applies settings over the current ones, by name.
pub fn apply_settings(current: &mut Vec<ClusterSetting>, new: &[ClusterSetting]) -> Result<()> {
    validate_settings(new)?;
    for s in new {
        match current.iter_mut().find(|c| c.name == s.name) {
            Some(c) => c.value = s.value.clone(),
            None => current.push(s.clone()),
        }
    }
    Ok(())
}

/// Builds a new cluster. `known_provider` says whether a capacity provider name exists.
pub fn create(scope: &Scope, req: &CreateClusterRequest, known_provider: impl Fn(&str) -> bool) -> Result<Cluster> {
    let name = req.cluster_name.clone().unwrap_or_else(|| "default".into());
    validate_name(&name)?;
    let mut settings =
        vec![ClusterSetting { name: Some(ClusterSettingName::ContainerInsights), value: Some("disabled".into()) }];
    apply_settings(&mut settings, req.settings.as_deref().unwrap_or_default())?;
    if let Some(tags) = &req.tags {
        crate::tags::validate(tags)?;
    }
    let providers = req.capacity_providers.clone().unwrap_or_default();
    let strategy = req.default_capacity_provider_strategy.clone().unwrap_or_default();
    capacity::validate_association(&providers, &strategy, &known_provider)?;
    Ok(Cluster {
        cluster_arn: Some(scope.cluster_arn(&name)),
        cluster_name: Some(name),
        status: Some(ACTIVE.into()),
        statistics: Some(vec![]),
        tags: Some(vec![]),
        settings: Some(settings),
        capacity_providers: Some(providers),
        default_capacity_provider_strategy: Some(strategy),
        configuration: req.configuration.clone(),
        service_connect_defaults: req
            .service_connect_defaults
            .as_ref()
            .map(|d| estiba_api::ecs::ClusterServiceConnectDefaults { namespace: Some(d.namespace.clone()) }),
        attachments_status: None,
        attachments: None,
        ..Default::default()
    })
}

/// Replaces the cluster's capacity provider associations (PutClusterCapacityProviders).
pub fn put_capacity_providers(
    cluster: &mut Cluster,
    providers: Vec<String>,
    strategy: Vec<CapacityProviderStrategyItem>,
    known_provider: impl Fn(&str) -> bool,
) -> Result<()> {
    capacity::validate_association(&providers, &strategy, &known_provider)?;
    cluster.capacity_providers = Some(providers);
    cluster.default_capacity_provider_strategy = Some(strategy);
    Ok(())
}

/// The cluster as DescribeClusters shows it: counts filled, optional parts per `include`.
pub fn describe(
    cluster: &Cluster,
    counts: &Counts,
    include: &[ClusterField],
    tags: Option<&[estiba_api::ecs::Tag]>,
) -> Cluster {
    let mut c = cluster.clone();
    c.running_tasks_count = counts.running_ec2 + counts.running_fargate;
    c.pending_tasks_count = counts.pending_ec2 + counts.pending_fargate;
    c.active_services_count = counts.active_ec2_services + counts.active_fargate_services;
    c.registered_container_instances_count = counts.registered_instances;
    c.statistics = Some(if include.contains(&ClusterField::Statistics) { statistics(counts) } else { vec![] });
    c.tags = Some(if include.contains(&ClusterField::Tags) { tags.unwrap_or_default().to_vec() } else { vec![] });
    if !include.contains(&ClusterField::Settings) {
        c.settings = None;
    }
    if !include.contains(&ClusterField::Configurations) {
        c.configuration = None;
    }
    if include.contains(&ClusterField::Attachments) {
        c.attachments.get_or_insert_with(Vec::new);
    } else {
        c.attachments = None;
        c.attachments_status = None;
    }
    c
}

/// The cluster as a mutating call (CreateCluster, UpdateCluster, DeleteCluster) returns it.
pub fn full(cluster: &Cluster, counts: &Counts, tags: Option<&[estiba_api::ecs::Tag]>) -> Cluster {
    let mut c =
        describe(cluster, counts, &[ClusterField::Settings, ClusterField::Configurations, ClusterField::Tags], tags);
    c.statistics = Some(vec![]);
    c
}

fn statistics(c: &Counts) -> Vec<KeyValuePair> {
    [
        ("runningEC2TasksCount", c.running_ec2),
        ("runningFargateTasksCount", c.running_fargate),
        ("pendingEC2TasksCount", c.pending_ec2),
        ("pendingFargateTasksCount", c.pending_fargate),
        ("activeEC2ServiceCount", c.active_ec2_services),
        ("activeFargateServiceCount", c.active_fargate_services),
        ("drainingEC2ServiceCount", c.draining_ec2_services),
        ("drainingFargateServiceCount", c.draining_fargate_services),
    ]
    .into_iter()
    .map(|(n, v)| KeyValuePair { name: Some(n.into()), value: Some(v.to_string()) })
    .collect()
}
