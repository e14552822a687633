//! Capacity providers: the built-in FARGATE and FARGATE_SPOT, providers callers create, and
//! capacity provider strategies (validation and how tasks are spread across providers).

use estiba_api::ecs::{
    AutoScalingGroupProvider, AutoScalingGroupProviderUpdate, CapacityProvider, CapacityProviderStatus,
    CapacityProviderStrategyItem, CapacityProviderType, CapacityProviderUpdateStatus, CreateCapacityProviderRequest,
    ManagedDraining, ManagedScaling, ManagedScalingStatus, ManagedTerminationProtection,
};

use crate::arn::Scope;
use crate::error::Result;
use crate::{bail, names};

pub const FARGATE: &str = "FARGATE";
pub const FARGATE_SPOT: &str = "FARGATE_SPOT";

pub fn is_fargate(name: &str) -> bool {
    name == FARGATE || name == FARGATE_SPOT
}

/// The always-present Fargate providers.
pub fn builtin(scope: &Scope, name: &str) -> CapacityProvider {
    CapacityProvider {
        capacity_provider_arn: Some(scope.capacity_provider_arn(name)),
        name: Some(name.into()),
        status: Some(CapacityProviderStatus::Active),
        r#type: Some(if name == FARGATE { CapacityProviderType::Fargate } else { CapacityProviderType::FargateSpot }),
        tags: Some(vec![]),
        ..Default::default()
    }
}

pub fn create(scope: &Scope, req: &CreateCapacityProviderRequest) -> Result<CapacityProvider> {
    let name = &req.name;
    if !names::valid_name(name) {
        bail!(
            invalid,
            "Capacity provider name '{}' is not valid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
            names::shown(name)
        );
    }
    let lower = name.to_ascii_lowercase();
    if ["aws", "ecs", "fargate"].iter().any(|p| lower.starts_with(p)) {
        bail!(invalid, "The capacity provider name cannot start with 'aws', 'ecs', or 'fargate'.");
    }
    if let Some(tags) = &req.tags {
        crate::tags::validate(tags)?;
    }
    let (kind, asg) = match (&req.auto_scaling_group_provider, &req.managed_instances_provider) {
        (Some(asg), None) => (CapacityProviderType::Ec2Autoscaling, Some(asg.clone())),
        (None, Some(_)) => (CapacityProviderType::ManagedInstances, None),
        (None, None) => bail!(invalid, "Specify either autoScalingGroupProvider or managedInstancesProvider."),
        (Some(_), Some(_)) => {
            bail!(invalid, "Specify only one of autoScalingGroupProvider and managedInstancesProvider.")
        }
    };
    let asg = asg.map(|mut a| {
        fill_defaults(&mut a);
        a
    });
    Ok(CapacityProvider {
        capacity_provider_arn: Some(scope.capacity_provider_arn(name)),
        name: Some(name.clone()),
        status: Some(CapacityProviderStatus::Active),
        auto_scaling_group_provider: asg,
        update_status: None,
        r#type: Some(kind),
        cluster: req.cluster.clone(),
        tags: Some(vec![]),
        ..Default::default()
    })
}

/// AWS's defaults for an Auto Scaling group provider: managed scaling (off unless asked, target
/// 100 %, steps 1 to 10,000, warm-up 300 s), termination protection off, draining on.
fn fill_defaults(a: &mut AutoScalingGroupProvider) {
    let ms = a.managed_scaling.get_or_insert_with(ManagedScaling::default);
    ms.status.get_or_insert(ManagedScalingStatus::Disabled);
    ms.target_capacity.get_or_insert(100);
    ms.minimum_scaling_step_size.get_or_insert(1);
    ms.maximum_scaling_step_size.get_or_insert(10_000);
    ms.instance_warmup_period.get_or_insert(300);
    a.managed_termination_protection.get_or_insert(ManagedTerminationProtection::Disabled);
    a.managed_draining.get_or_insert(ManagedDraining::Enabled);
}

/// UpdateCapacityProvider: the members given replace the stored ones, the others stay.
pub fn update(a: &mut AutoScalingGroupProvider, u: &AutoScalingGroupProviderUpdate) {
    if let Some(new) = &u.managed_scaling {
        let ms = a.managed_scaling.get_or_insert_with(ManagedScaling::default);
        macro_rules! keep {
            ($($f:ident),*) => { $( if new.$f.is_some() { ms.$f = new.$f; } )* };
        }
        keep!(status, target_capacity, minimum_scaling_step_size, maximum_scaling_step_size, instance_warmup_period);
    }
    if let Some(tp) = u.managed_termination_protection {
        a.managed_termination_protection = Some(tp);
    }
    if let Some(md) = u.managed_draining {
        a.managed_draining = Some(md);
    }
    fill_defaults(a);
}

/// A provider that can be associated, updated or deleted: ACTIVE and not being deleted
/// (ECS shows a deleted provider ACTIVE with `updateStatus` DELETE_IN_PROGRESS for a while).
pub fn is_live(cp: &CapacityProvider) -> bool {
    cp.status == Some(CapacityProviderStatus::Active)
        && cp.update_status != Some(CapacityProviderUpdateStatus::DeleteInProgress)
}

/// Checks a cluster's providers and default strategy: providers exist, the strategy only
/// uses associated providers, and its weights and base are sane.
pub fn validate_association(
    providers: &[String],
    strategy: &[CapacityProviderStrategyItem],
    known: &impl Fn(&str) -> bool,
) -> Result<()> {
    for p in providers {
        if !known(p) {
            bail!(
                invalid,
                "The specified capacity provider '{}' does not exist. Specify a valid capacity provider and try again.",
                names::shown(p)
            );
        }
    }
    validate_strategy(strategy, |p| providers.iter().any(|x| x == p))
}

/// Checks a capacity provider strategy against the cluster's associated providers.
pub fn validate_strategy(strategy: &[CapacityProviderStrategyItem], associated: impl Fn(&str) -> bool) -> Result<()> {
    if strategy.len() > 20 {
        bail!(invalid, "A capacity provider strategy can contain at most 20 capacity providers.");
    }
    let mut seen = std::collections::BTreeSet::new();
    for item in strategy {
        if !associated(&item.capacity_provider) {
            bail!(
                invalid,
                "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again."
            );
        }
        if !seen.insert(item.capacity_provider.as_str()) {
            bail!(invalid, "The capacity provider strategy contains '{}' more than once.", item.capacity_provider);
        }
    }
    if strategy.iter().filter(|i| i.base > 0).count() > 1 {
        bail!(invalid, "Only one capacity provider in a capacity provider strategy can have a base defined.");
    }
    if !strategy.is_empty() && strategy.iter().all(|i| i.weight == 0) {
        bail!(
            invalid,
            "At least one capacity provider in a capacity provider strategy must have a weight greater than 0."
        );
    }
    let fargate = strategy.iter().filter(|i| is_fargate(&i.capacity_provider)).count();
    if fargate > 0 && fargate < strategy.len() {
        bail!(
            invalid,
            "A capacity provider strategy cannot contain both Fargate and Auto Scaling group capacity providers."
        );
    }
    Ok(())
}

/// Which provider each of `already + count` tasks goes to, for the `count` new ones: the
/// base is filled first, then tasks are spread in proportion to the weights.
pub fn distribute(strategy: &[CapacityProviderStrategyItem], already: &[usize], count: usize) -> Vec<usize> {
    let mut placed: Vec<usize> = (0..strategy.len()).map(|i| already.get(i).copied().unwrap_or(0)).collect();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let base = strategy.iter().enumerate().find(|(i, s)| placed[*i] < s.base.max(0) as usize).map(|(i, _)| i);
        let pick = base.unwrap_or_else(|| {
            // Choose the provider furthest below its weighted share.
            let total_weight: f64 = strategy.iter().map(|s| s.weight.max(0) as f64).sum();
            let total: f64 =
                placed.iter().zip(strategy).map(|(p, s)| (*p as f64 - s.base.max(0) as f64).max(0.0)).sum::<f64>()
                    + 1.0;
            (0..strategy.len())
                .filter(|&i| strategy[i].weight > 0)
                .max_by(|&a, &b| {
                    let deficit = |i: usize| {
                        let beyond_base = (placed[i] as f64 - strategy[i].base.max(0) as f64).max(0.0);
                        strategy[i].weight as f64 / total_weight * total - beyond_base
                    };
                    deficit(a)
                        .partial_cmp(&deficit(b))
                        .unwrap()
                        .then(strategy[a].weight.cmp(&strategy[b].weight))
                        .then(b.cmp(&a))
                })
                .unwrap_or(0)
        });
        placed[pick] += 1;
        out.push(pick);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(p: &str, base: i32, weight: i32) -> CapacityProviderStrategyItem {
        CapacityProviderStrategyItem { capacity_provider: p.into(), base, weight }
    }

    #[test]
    fn distribution_follows_base_then_weight() {
        let s = vec![item("FARGATE", 2, 1), item("FARGATE_SPOT", 0, 3)];
        let picks = distribute(&s, &[], 10);
        assert_eq!(&picks[..2], &[0, 0]);
        let spot = picks.iter().filter(|&&p| p == 1).count();
        assert_eq!(spot, 6, "8 tasks beyond base split 1:3 → 2 and 6, {picks:?}");
    }

    #[test]
    fn asg_providers_get_aws_defaults_and_updates_keep_the_rest() {
        let scope = Scope::new("1", "us-east-1");
        let req = CreateCapacityProviderRequest {
            name: "asg".into(),
            auto_scaling_group_provider: Some(AutoScalingGroupProvider {
                auto_scaling_group_arn: "arn:aws:autoscaling:us-east-1:1:autoScalingGroup:x".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cp = create(&scope, &req).unwrap();
        let mut asg = cp.auto_scaling_group_provider.unwrap();
        let ms = asg.managed_scaling.clone().unwrap();
        assert_eq!(ms.status, Some(ManagedScalingStatus::Disabled));
        assert_eq!(
            (ms.target_capacity, ms.minimum_scaling_step_size, ms.maximum_scaling_step_size, ms.instance_warmup_period),
            (Some(100), Some(1), Some(10_000), Some(300))
        );
        assert_eq!(asg.managed_termination_protection, Some(ManagedTerminationProtection::Disabled));
        let u = AutoScalingGroupProviderUpdate {
            managed_scaling: Some(ManagedScaling { target_capacity: Some(80), ..Default::default() }),
            ..Default::default()
        };
        update(&mut asg, &u);
        let ms = asg.managed_scaling.unwrap();
        assert_eq!(
            (ms.target_capacity, ms.instance_warmup_period, ms.status),
            (Some(80), Some(300), Some(ManagedScalingStatus::Disabled))
        );
        assert_eq!(asg.managed_termination_protection, Some(ManagedTerminationProtection::Disabled));
    }

    #[test]
    fn strategy_rules() {
        let assoc = |p: &str| p == "FARGATE" || p == "FARGATE_SPOT" || p == "asg";
        assert!(validate_strategy(&[item("FARGATE", 1, 1), item("FARGATE_SPOT", 1, 1)], assoc).is_err());
        assert!(validate_strategy(&[item("FARGATE", 0, 0)], assoc).is_err());
        assert!(validate_strategy(&[item("FARGATE", 0, 1), item("asg", 0, 1)], assoc).is_err());
        assert!(validate_strategy(&[item("other", 0, 1)], assoc).is_err());
        assert!(validate_strategy(&[item("FARGATE", 1, 1), item("FARGATE_SPOT", 0, 4)], assoc).is_ok());
    }
}

/// How tasks of a RunTask call or a service are launched.
#[derive(Clone, Debug, PartialEq)]
pub enum LaunchPlan {
    Type(estiba_api::ecs::LaunchType),
    Strategy(Vec<CapacityProviderStrategyItem>),
}

impl LaunchPlan {
    /// The launch of each of `count` new tasks, `already` tasks per strategy item existing.
    pub fn launches(
        &self,
        already: &[usize],
        count: usize,
        provider_is_fargate: impl Fn(&str) -> bool,
    ) -> Vec<crate::task::Launch> {
        use estiba_api::ecs::LaunchType;
        match self {
            LaunchPlan::Type(t) => vec![crate::task::Launch { launch_type: *t, capacity_provider: None }; count],
            LaunchPlan::Strategy(s) => distribute(s, already, count)
                .into_iter()
                .map(|i| {
                    let p = &s[i].capacity_provider;
                    crate::task::Launch {
                        launch_type: if provider_is_fargate(p) { LaunchType::Fargate } else { LaunchType::Ec2 },
                        capacity_provider: Some(p.clone()),
                    }
                })
                .collect(),
        }
    }

    /// The launch type the plan's tasks share, for validation (a strategy does not mix Fargate
    /// with EC2 providers).
    pub fn launch_type(&self) -> estiba_api::ecs::LaunchType {
        use estiba_api::ecs::LaunchType;
        match self {
            LaunchPlan::Type(t) => *t,
            LaunchPlan::Strategy(s) if s.iter().any(|i| is_fargate(&i.capacity_provider)) => LaunchType::Fargate,
            LaunchPlan::Strategy(_) => LaunchType::Ec2,
        }
    }
}

/// Chooses between launchType and capacityProviderStrategy as ECS does, with one estiba
/// default: when neither is given and the cluster has no default strategy, a task definition
/// that Fargate can run goes to FARGATE unless the cluster has container instances (AWS would
/// pick EC2, which has no capacity on a cluster without instances).
pub fn resolve_launch(
    launch_type: Option<estiba_api::ecs::LaunchType>,
    strategy: Option<&[CapacityProviderStrategyItem]>,
    cluster: &estiba_api::ecs::Cluster,
    fargate_compatible: bool,
    has_instances: bool,
) -> Result<LaunchPlan> {
    use estiba_api::ecs::LaunchType;
    let strategy = strategy.filter(|s| !s.is_empty());
    let associated = |p: &str| cluster.capacity_providers.iter().flatten().any(|x| x == p);
    match (launch_type, strategy) {
        (Some(_), Some(_)) => {
            bail!(invalid, "Specifying both a launchType and capacityProviderStrategy is not supported.")
        }
        (Some(LaunchType::ManagedInstances), None) => {
            bail!(unsupported, "The MANAGED_INSTANCES launch type is not supported by estiba.")
        }
        (Some(t), None) => Ok(LaunchPlan::Type(t)),
        (None, Some(s)) => {
            validate_strategy(s, associated)?;
            Ok(LaunchPlan::Strategy(s.to_vec()))
        }
        (None, None) => {
            let default = cluster.default_capacity_provider_strategy.clone().unwrap_or_default();
            if !default.is_empty() {
                Ok(LaunchPlan::Strategy(default))
            } else if fargate_compatible && !has_instances {
                Ok(LaunchPlan::Type(LaunchType::Fargate))
            } else {
                Ok(LaunchPlan::Type(LaunchType::Ec2))
            }
        }
    }
}
