//! ECS's blue/green, linear and canary deployments (`deploymentConfiguration.strategy`
//! `BLUE_GREEN`, `LINEAR`, `CANARY`): the new revision ("green") is started in full beside
//! the old one ("blue"), registered in the target groups that do not take production traffic
//! (each `loadBalancers` entry's `targetGroupArn` or `advancedConfiguration.alternateTargetGroupArn`,
//! whichever the blue tasks are not in), then production traffic moves to it by the weights of
//! each entry's `productionListenerRule` (all at once, in steps, or a canary share first), the
//! deployment bakes for `bakeTimeInMinutes`, and the blue tasks stop.
//!
//! The state of that walk is one document per service, [`Traffic`]: which target groups each
//! deployment's tasks are in, the lifecycle stage, the share of production traffic on the
//! green groups, and the PAUSE lifecycle hooks met so far. [`plan`] is the planner for such a
//! service: level-triggered like [`crate::deploy::plan`], which it wraps (it lends it the blue
//! tasks as protected until the clean-up, and lifts the ceiling of tasks while green scales
//! up); [`rule_weights`] says what each listener rule should forward, so the caller writes a
//! rule only when it differs. A rollback ([`Traffic::rolled_back`]) moves traffic back to the
//! blue target groups at once, where the rollback deployment's tasks join the blue ones.
//!
//! Lifecycle hooks whose target is a Lambda function cannot run here (CreateService and
//! UpdateService refuse them); `PAUSE` hooks stop the walk before their stage ends until
//! ContinueServiceDeployment says CONTINUE or ROLLBACK ([`continue_hook`]), or their timeout
//! passes.

use std::collections::BTreeMap;

use estiba_api::ecs::{
    DeploymentConfiguration, DeploymentLifecycleHookAction, DeploymentLifecycleHookDetail,
    DeploymentLifecycleHookStage as HookStage, DeploymentLifecycleHookStatus, DeploymentLifecycleHookTargetType,
    DeploymentStrategy, LoadBalancer, SchedulingStrategy, Service, ServiceDeploymentLifecycleStage as Stage, Task,
};
use serde::{Deserialize, Serialize};

use crate::bail;
use crate::deploy::{self, Plan, Probes, Settings, Stop};
use crate::error::{EcsError, Result};
use crate::ids::Now;
use crate::service;
use crate::task::{self, Status};

/// A PAUSE hook met on the walk: the hook stage it belongs to, the traffic step it paused
/// (production traffic shifts pause once per step), and its detail as DescribeServiceDeployments
/// shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// The index of the hook in the configuration's `lifecycleHooks`.
    pub index: usize,
    pub stage: HookStage,
    pub step: u32,
    pub detail: DeploymentLifecycleHookDetail,
}

/// A service's traffic between its deployments (`ecs/<account>/<region>/traffic/<cluster>/<service>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Each deployment's target groups, by the index of the service's `loadBalancers` entry.
    /// A deployment not here (one made before the service's first blue/green deployment) is
    /// in the entries' `targetGroupArn`.
    pub groups: BTreeMap<String, Vec<String>>,
    /// The deployment taking production traffic over (green).
    pub deployment: String,
    /// The deployment it takes traffic from (blue); none after a rollback.
    pub source: Option<String>,
    pub stage: Stage,
    pub stage_at: Now,
    /// The share (percent) of production traffic on the green groups.
    pub percent: f64,
    /// When production traffic last moved, and how many steps it has made.
    pub shifted_at: Now,
    pub steps: u32,
    /// The walk is over: green takes all traffic and blue is gone (or it was rolled back).
    pub done: bool,
    pub hooks: Vec<Hook>,
}

impl Traffic {
    /// The deployment's target groups, for a service with `lbs`.
    pub fn groups_of(&self, lbs: &[LoadBalancer], deployment: &str) -> Vec<String> {
        self.groups.get(deployment).cloned().unwrap_or_else(|| primary_groups(lbs))
    }

    /// The groups that hold most of production traffic.
    fn production(&self, lbs: &[LoadBalancer]) -> Vec<String> {
        match &self.source {
            Some(s) if self.percent < 50.0 => self.groups_of(lbs, s),
            _ => self.groups_of(lbs, &self.deployment),
        }
    }

    /// After a rollback to a new deployment `to`: its tasks join the groups blue is in, which
    /// take all traffic again at once; the green tasks stop.
    pub fn rolled_back(&mut self, lbs: &[LoadBalancer], to: &str, now: Now) {
        let blue = match &self.source {
            Some(s) => self.groups_of(lbs, s),
            None => self.production(lbs),
        };
        self.groups.insert(to.to_owned(), blue);
        self.deployment = to.to_owned();
        self.source = None;
        self.percent = 100.0;
        self.shifted_at = now;
        self.done = true;
        self.hooks.clear();
    }
}

/// The service's deployment strategy.
pub fn strategy(svc: &Service) -> DeploymentStrategy {
    svc.deployment_configuration.as_ref().and_then(|c| c.strategy).unwrap_or_default()
}

/// Whether the service deploys blue/green (or linear, or canary).
pub fn shifts_traffic(svc: &Service) -> bool {
    strategy(svc) != DeploymentStrategy::Rolling
        && svc.scheduling_strategy.unwrap_or(SchedulingStrategy::Replica) == SchedulingStrategy::Replica
        && !service::is_external(svc)
}

fn primary_groups(lbs: &[LoadBalancer]) -> Vec<String> {
    lbs.iter().map(|l| l.target_group_arn.clone().unwrap_or_default()).collect()
}

/// The entry's other group: the alternate for the primary and back (the same when it has no
/// alternate).
fn other(lb: &LoadBalancer, g: &str) -> String {
    let alt = lb.advanced_configuration.as_ref().and_then(|a| a.alternate_target_group_arn.clone());
    match alt {
        Some(alt) if lb.target_group_arn.as_deref() == Some(g) => alt,
        Some(_) => lb.target_group_arn.clone().unwrap_or_default(),
        None => g.to_owned(),
    }
}

/// The service's `loadBalancers` entries as a task of `deployment` is registered in them.
pub fn load_balancers_of(svc: &Service, traffic: Option<&Traffic>, deployment: &str) -> Vec<LoadBalancer> {
    let lbs = svc.load_balancers.clone().unwrap_or_default();
    let Some(t) = traffic else { return lbs };
    let groups = t.groups_of(&lbs, deployment);
    lbs.into_iter()
        .zip(groups)
        .map(|(mut lb, g)| {
            if lb.target_group_arn.is_some() && !g.is_empty() {
                lb.target_group_arn = Some(g);
            }
            lb
        })
        .collect()
}

/// A listener rule's forward: target groups and their weights.
pub type Weights = Vec<(String, i32)>;

/// Weights for a share `p` (percent) on `green`: whole percents as they are, fractions (a
/// 0.5% canary) in tenths, so no share is lost (ELB weights are 0 to 999).
fn split(p: f64) -> (i32, i32) {
    if p.fract() == 0.0 {
        (100 - p as i32, p as i32)
    } else {
        let g = ((p * 10.0).round() as i32).clamp(1, 999);
        ((1000 - g).clamp(1, 999), g)
    }
}

/// What each production (and test) listener rule of the service should forward, given its
/// traffic document: `(rule ARN, [(group, weight)])`, groups in the entry's order (primary,
/// alternate). Nothing before the service's first traffic shifting deployment.
pub fn rule_weights(svc: &Service, traffic: Option<&Traffic>) -> Vec<(String, Weights)> {
    let Some(t) = traffic else { return vec![] };
    let lbs = svc.load_balancers.clone().unwrap_or_default();
    let green = t.groups_of(&lbs, &t.deployment);
    let mut out: Vec<(String, Weights)> = Vec::new();
    for (lb, g) in lbs.iter().zip(green) {
        let Some(adv) = &lb.advanced_configuration else { continue };
        let (Some(primary), Some(alt)) = (lb.target_group_arn.clone(), adv.alternate_target_group_arn.clone()) else {
            continue;
        };
        let weights = |green_share: f64| -> Weights {
            let (b, gr) = split(green_share);
            let w = |tg: &str| if tg == g { gr } else { b };
            vec![(primary.clone(), w(&primary)), (alt.clone(), w(&alt))]
        };
        let prod = if t.done { 100.0 } else { t.percent };
        if let Some(r) = &adv.production_listener_rule {
            out.push((r.clone(), weights(prod)));
        }
        if let Some(r) = &adv.test_listener_rule {
            let test = if t.done || t.stage >= Stage::TestTrafficShift { 100.0 } else { 0.0 };
            if !out.iter().any(|(a, _)| a == r) {
                out.push((r.clone(), weights(test)));
            }
        }
    }
    out
}

/// Checks a deployment configuration's strategy against the service (ECS's rules; the
/// target groups and rules themselves are checked where they are known).
pub fn check_configuration(
    c: &DeploymentConfiguration,
    lbs: &[LoadBalancer],
    scheduling: SchedulingStrategy,
) -> Result<()> {
    let strategy = c.strategy.unwrap_or_default();
    let minutes = |v: Option<i32>, what: &str| -> Result<()> {
        if let Some(m) = v {
            if !(0..=1440).contains(&m) {
                bail!(invalid, "{what} must be between 0 and 1440 minutes, got {m}.");
            }
        }
        Ok(())
    };
    minutes(c.bake_time_in_minutes, "bakeTimeInMinutes")?;
    for h in c.lifecycle_hooks.iter().flatten() {
        match h.target_type.unwrap_or(DeploymentLifecycleHookTargetType::AwsLambda) {
            DeploymentLifecycleHookTargetType::AwsLambda => bail!(
                unsupported,
                "estiba cannot invoke AWS Lambda lifecycle hooks ({}); use a hook with targetType PAUSE and ContinueServiceDeployment.",
                h.hook_target_arn.as_deref().unwrap_or("no hookTargetArn")
            ),
            DeploymentLifecycleHookTargetType::Pause => {
                if h.lifecycle_stages.as_ref().is_none_or(|s| s.is_empty()) {
                    bail!(invalid, "A lifecycle hook must specify at least one lifecycle stage.");
                }
                if let Some(m) = h.timeout_configuration.as_ref().and_then(|t| t.timeout_in_minutes) {
                    if !(1..=10080).contains(&m) {
                        bail!(invalid, "timeoutInMinutes must be between 1 and 10080, got {m}.");
                    }
                }
            }
        }
    }
    if strategy == DeploymentStrategy::Rolling {
        if c.lifecycle_hooks.as_ref().is_some_and(|h| !h.is_empty()) {
            bail!(
                invalid,
                "Lifecycle hooks are supported only with the BLUE_GREEN, LINEAR and CANARY deployment strategies."
            );
        }
        return Ok(());
    }
    let name = strategy.as_str();
    if scheduling == SchedulingStrategy::Daemon {
        bail!(invalid, "The {name} deployment strategy is not supported with the DAEMON scheduling strategy.");
    }
    match strategy {
        DeploymentStrategy::Linear => {
            let l = c.linear_configuration.clone().unwrap_or_default();
            if let Some(p) = l.step_percent {
                if !(3.0..=100.0).contains(&p) {
                    bail!(invalid, "linearConfiguration.stepPercent must be between 3.0 and 100.0, got {p}.");
                }
            }
            minutes(l.step_bake_time_in_minutes, "linearConfiguration.stepBakeTimeInMinutes")?;
        }
        DeploymentStrategy::Canary => {
            let k = c.canary_configuration.clone().unwrap_or_default();
            if let Some(p) = k.canary_percent {
                if !(0.1..=100.0).contains(&p) {
                    bail!(invalid, "canaryConfiguration.canaryPercent must be between 0.1 and 100.0, got {p}.");
                }
            }
            minutes(k.canary_bake_time_in_minutes, "canaryConfiguration.canaryBakeTimeInMinutes")?;
        }
        _ => {}
    }
    for lb in lbs.iter().filter(|l| l.target_group_arn.is_some()) {
        let tg = lb.target_group_arn.as_deref().unwrap_or_default();
        let adv = lb.advanced_configuration.as_ref();
        let Some(alt) = adv.and_then(|a| a.alternate_target_group_arn.as_deref()) else {
            bail!(
                invalid,
                "The {name} deployment strategy requires advancedConfiguration with an alternateTargetGroupArn for the load balancer with targetGroupArn {tg}."
            );
        };
        if adv.and_then(|a| a.production_listener_rule.as_deref()).is_none() {
            bail!(
                invalid,
                "The {name} deployment strategy requires advancedConfiguration with a productionListenerRule for the load balancer with targetGroupArn {tg}."
            );
        }
        if alt == tg {
            bail!(invalid, "The alternateTargetGroupArn must be different from the targetGroupArn {tg}.");
        }
    }
    Ok(())
}

/// Where a listener rule's forward may point for one `loadBalancers` entry: it must forward
/// to the primary or the alternate target group and to nothing else.
pub fn check_rule_forwards(rule_arn: &str, lb: &LoadBalancer, forwards: &[&str]) -> Result<()> {
    let tg = lb.target_group_arn.as_deref().unwrap_or_default();
    let alt =
        lb.advanced_configuration.as_ref().and_then(|a| a.alternate_target_group_arn.as_deref()).unwrap_or_default();
    if forwards.is_empty() || forwards.iter().any(|g| *g != tg && *g != alt) {
        bail!(
            invalid,
            "The listener rule {rule_arn} must forward to the target group {tg} or the alternate target group {alt} only."
        );
    }
    Ok(())
}

/// The stages a walk goes through, in order.
const WALK: [Stage; 10] = [
    Stage::ReconcileService,
    Stage::PreScaleUp,
    Stage::ScaleUp,
    Stage::PostScaleUp,
    Stage::TestTrafficShift,
    Stage::PostTestTrafficShift,
    Stage::ProductionTrafficShift,
    Stage::PostProductionTrafficShift,
    Stage::BakeTime,
    Stage::CleanUp,
];

fn next_stage(s: Stage) -> Stage {
    let i = WALK.iter().position(|w| *w == s).unwrap_or(0);
    WALK[(i + 1).min(WALK.len() - 1)]
}

/// The hook stages whose PAUSE hooks hold the walk before `s` ends.
fn hook_stages(s: Stage) -> &'static [HookStage] {
    match s {
        Stage::ReconcileService => &[HookStage::ReconcileService],
        Stage::PreScaleUp => &[HookStage::PreScaleUp],
        Stage::PostScaleUp => &[HookStage::PostScaleUp],
        Stage::TestTrafficShift => &[HookStage::TestTrafficShift],
        Stage::PostTestTrafficShift => &[HookStage::PostTestTrafficShift, HookStage::PreProductionTrafficShift],
        Stage::ProductionTrafficShift => &[HookStage::ProductionTrafficShift],
        Stage::PostProductionTrafficShift => &[HookStage::PostProductionTrafficShift],
        _ => &[],
    }
}

/// The share of production traffic after the next step, and how long the share before it
/// bakes (seconds).
fn next_share(c: &DeploymentConfiguration, percent: f64, steps: u32) -> (f64, f64) {
    match c.strategy.unwrap_or_default() {
        DeploymentStrategy::Linear => {
            let l = c.linear_configuration.clone().unwrap_or_default();
            let step = l.step_percent.unwrap_or(10.0);
            ((percent + step).min(100.0), l.step_bake_time_in_minutes.unwrap_or(6) as f64 * 60.0)
        }
        DeploymentStrategy::Canary => {
            let k = c.canary_configuration.clone().unwrap_or_default();
            let first = k.canary_percent.unwrap_or(5.0);
            let share = if steps == 0 { first } else { 100.0 };
            (share, k.canary_bake_time_in_minutes.unwrap_or(10) as f64 * 60.0)
        }
        _ => (100.0, 0.0),
    }
}

/// What holds the walk at its stage: `Err(true)` rolls back, `Err(false)` waits; `Ok` goes on.
fn pause_hooks(c: &DeploymentConfiguration, t: &mut Traffic, now: Now) -> std::result::Result<(), bool> {
    let n = service::deployment_number(&t.deployment).to_owned();
    for (i, h) in c.lifecycle_hooks.iter().flatten().enumerate() {
        if h.target_type != Some(DeploymentLifecycleHookTargetType::Pause) {
            continue;
        }
        for hs in hook_stages(t.stage) {
            if !h.lifecycle_stages.iter().flatten().any(|s| s == hs) {
                continue;
            }
            let step = if *hs == HookStage::ProductionTrafficShift { t.steps } else { 0 };
            let Some(k) = t.hooks.iter().position(|x| x.index == i && x.stage == *hs && x.step == step) else {
                let timeout = h.timeout_configuration.clone().unwrap_or_default();
                t.hooks.push(Hook {
                    index: i,
                    stage: *hs,
                    step,
                    detail: DeploymentLifecycleHookDetail {
                        hook_id: Some(format!("{n}-{}-{step}-{i}", hs.as_str().to_ascii_lowercase().replace('_', "-"))),
                        status: Some(DeploymentLifecycleHookStatus::AwaitingAction),
                        target_type: Some(DeploymentLifecycleHookTargetType::Pause),
                        target_arn: h.hook_target_arn.clone(),
                        expires_at: timeout.timeout_in_minutes.map(|m| now + m as f64 * 60.0),
                        timeout_action: Some(timeout.action.unwrap_or(DeploymentLifecycleHookAction::Rollback)),
                    },
                });
                return Err(false);
            };
            let d = &mut t.hooks[k].detail;
            match d.status {
                Some(DeploymentLifecycleHookStatus::AwaitingAction) => {
                    if d.expires_at.is_some_and(|e| now >= e) {
                        d.status = Some(DeploymentLifecycleHookStatus::TimedOut);
                        if d.timeout_action != Some(DeploymentLifecycleHookAction::Continue) {
                            return Err(true);
                        }
                    } else {
                        return Err(false);
                    }
                }
                Some(DeploymentLifecycleHookStatus::Failed) => return Err(true),
                _ => {}
            }
        }
    }
    Ok(())
}

/// ContinueServiceDeployment on the traffic document: the hook `hook_id` must be awaiting
/// action; CONTINUE lets the walk go on, ROLLBACK rolls the deployment back.
pub fn continue_hook(t: &mut Traffic, hook_id: &str, action: DeploymentLifecycleHookAction) -> Result<()> {
    let Some(h) = t.hooks.iter_mut().find(|h| h.detail.hook_id.as_deref() == Some(hook_id)) else {
        return Err(EcsError::invalid(format!(
            "The lifecycle hook {hook_id} was not found in the service deployment."
        )));
    };
    if h.detail.status != Some(DeploymentLifecycleHookStatus::AwaitingAction) || t.done {
        return Err(EcsError::invalid(format!(
            "The lifecycle hook {hook_id} is not in AWAITING_ACTION status: it is {}.",
            h.detail.status.map(|s| s.as_str()).unwrap_or("unknown")
        )));
    }
    h.detail.status = Some(match action {
        DeploymentLifecycleHookAction::Continue => DeploymentLifecycleHookStatus::Succeeded,
        DeploymentLifecycleHookAction::Rollback => DeploymentLifecycleHookStatus::Failed,
    });
    Ok(())
}

fn deployment_of(t: &Task) -> &str {
    t.started_by.as_deref().unwrap_or("")
}

/// Plans one pass for a REPLICA service whose strategy shifts traffic, given its traffic
/// document (none before its first such deployment). The plan's `traffic` is the document
/// after the pass.
pub fn plan(
    svc: &Service,
    tasks: &[&Task],
    probes: &Probes,
    now: Now,
    settings: &Settings,
    doc: Option<&Traffic>,
) -> Plan {
    let status = service::status(svc);
    let Some(primary) = service::primary(svc).and_then(|p| p.id.clone()) else {
        let mut p = deploy::plan(svc, tasks, probes, now, settings);
        p.traffic = doc.cloned();
        return p;
    };
    if status != service::ACTIVE {
        let mut p = deploy::plan(svc, tasks, probes, now, settings);
        p.traffic = doc.cloned();
        return p;
    }
    let lbs = svc.load_balancers.clone().unwrap_or_default();
    let config = svc.deployment_configuration.clone().unwrap_or_default();
    let wanted = |t: &Task| task::last_status(t) != Status::Stopped && !task::desired_stopped(t);
    let old_live: Vec<&str> =
        tasks.iter().filter(|t| wanted(t) && deployment_of(t) != primary).map(|t| deployment_of(t)).collect();

    let mut t = doc.cloned().unwrap_or_default();
    // Deployments gone from the service keep no groups.
    let known: Vec<&str> = svc.deployments.iter().flatten().filter_map(|d| d.id.as_deref()).collect();
    t.groups.retain(|d, _| known.contains(&d.as_str()));
    let fresh = doc.is_none_or(|d| d.deployment != primary);
    if fresh {
        let production = match doc {
            Some(d) => d.production(&lbs),
            None => primary_groups(&lbs),
        };
        let source = match doc {
            Some(d) => match &d.source {
                Some(s) if d.percent < 50.0 => Some(s.clone()),
                _ => Some(d.deployment.clone()),
            },
            None => service::rollback_target(svc).and_then(|d| d.id.clone()),
        }
        .filter(|s| old_live.contains(&s.as_str()));
        match source {
            Some(s) if !old_live.is_empty() => {
                let green: Vec<String> = lbs.iter().zip(&production).map(|(lb, g)| other(lb, g)).collect();
                t.groups.insert(s.clone(), production);
                t.groups.insert(primary.clone(), green);
                let several = old_live.iter().any(|d| *d != s);
                t.source = Some(s);
                t.stage = if several { Stage::ReconcileService } else { Stage::PreScaleUp };
                t.percent = 0.0;
                t.steps = 0;
                t.done = false;
            }
            _ => {
                // Nothing runs to take traffic from: the deployment starts where traffic is.
                t.groups.insert(primary.clone(), production);
                t.source = None;
                t.stage = Stage::ScaleUp;
                t.percent = 100.0;
                t.done = true;
            }
        }
        t.deployment = primary.clone();
        t.stage_at = now;
        t.shifted_at = now;
        t.hooks.clear();
    }

    let groups_of = |d: &str| t.groups_of(&lbs, d);
    let green_groups = groups_of(&primary);
    // Tasks no traffic can reach (not in the green groups, nor blue's while the walk is on)
    // are stopped at once; the planner sees them as already asked to.
    let serving = |d: &str| d == primary || groups_of(d) == green_groups || (!t.done && t.source.as_deref() == Some(d));
    let mut stops: Vec<Stop> = Vec::new();
    let mut adjusted: Vec<Task> = Vec::new();
    for task in tasks {
        if wanted(task) && !serving(deployment_of(task)) && !(probes.protected)(task) {
            stops.push(Stop {
                task_arn: task.task_arn.clone().unwrap_or_default(),
                code: estiba_api::ecs::TaskStopCode::ServiceSchedulerInitiated,
                reason: format!("Scaling activity initiated by (deployment {primary})"),
            });
            let mut s = (*task).clone();
            s.desired_status = Some("STOPPED".into());
            adjusted.push(s);
        }
    }
    let view: Vec<&Task> =
        tasks.iter().map(|task| adjusted.iter().find(|a| a.task_arn == task.task_arn).unwrap_or(task)).collect();

    if t.done {
        let mut p = deploy::plan(svc, &view, probes, now, settings);
        p.stop.extend(stops);
        p.traffic = Some(t);
        return p;
    }

    // The walk. Blue is kept (protected) until the clean-up; green may start in full.
    let desired = svc.desired_count.max(0);
    let cleaning = t.stage == Stage::CleanUp;
    let is_blue = |task: &Task| deployment_of(task) != primary;
    let protected = |task: &Task| (probes.protected)(task) || (!cleaning && is_blue(task));
    let walk_probes =
        Probes { checked: probes.checked, protected: &protected, lb: probes.lb, draining: probes.draining };
    let mut lifted = svc.clone();
    if let Some(c) = lifted.deployment_configuration.as_mut() {
        c.maximum_percent = Some(2000);
    }
    let mut p = deploy::plan(&lifted, &view, &walk_probes, now, settings);
    p.service.deployment_configuration = svc.deployment_configuration.clone();
    p.stop.extend(stops);
    if p.failed.is_some() {
        p.traffic = Some(t);
        return p;
    }
    if p.completed.is_some() && !cleaning {
        // Blue is gone before its time: green takes all traffic now.
        t.percent = 100.0;
        t.stage = Stage::CleanUp;
        t.stage_at = now;
        t.done = true;
        p.traffic = Some(t);
        return p;
    }
    if t.stage < Stage::ScaleUp {
        // Green has not started yet (a PRE_SCALE_UP hook may hold it).
        p.start = 0;
    }
    if fresh {
        p.traffic = Some(t);
        return p;
    }
    let green_healthy = view
        .iter()
        .filter(|task| !is_blue(task))
        .filter(|task| deploy::is_healthy(task, (probes.checked)(task), &(probes.lb)(task), now, settings))
        .count() as i32;

    // One stage a pass, each held by its PAUSE hooks.
    let ready = match t.stage {
        Stage::ScaleUp => green_healthy >= desired,
        Stage::ProductionTrafficShift => {
            let (share, bake) = next_share(&config, t.percent, t.steps);
            if t.steps == 0 || (t.percent < 100.0 && now >= t.shifted_at + bake) {
                match pause_hooks(&config, &mut t, now) {
                    Ok(()) => {
                        t.percent = share;
                        t.steps += 1;
                        t.shifted_at = now;
                    }
                    Err(true) => return rollback(svc, p, t),
                    Err(false) => {}
                }
            }
            t.percent >= 100.0
        }
        Stage::BakeTime => now >= t.stage_at + config.bake_time_in_minutes.unwrap_or(0) as f64 * 60.0,
        Stage::CleanUp => {
            if p.completed.is_some() || old_live.iter().all(|d| *d == primary) && p.start == 0 && p.stop.is_empty() {
                t.done = true;
            }
            false
        }
        _ => true,
    };
    if ready && t.stage != Stage::ProductionTrafficShift {
        match pause_hooks(&config, &mut t, now) {
            Ok(()) => {
                t.stage = next_stage(t.stage);
                t.stage_at = now;
            }
            Err(true) => return rollback(svc, p, t),
            Err(false) => {}
        }
    } else if ready {
        t.stage = next_stage(t.stage);
        t.stage_at = now;
    }
    p.traffic = Some(t);
    p
}

/// A PAUSE hook said ROLLBACK (or timed out so): the deployment fails and rolls back.
fn rollback(svc: &Service, mut p: Plan, t: Traffic) -> Plan {
    let id = t.deployment.clone();
    p.failed = Some(id);
    p.rollback_to = service::rollback_target(svc).cloned();
    p.start = 0;
    if let Some(d) = service::primary_mut(&mut p.service) {
        d.rollout_state = Some(estiba_api::ecs::DeploymentRolloutState::Failed);
        d.rollout_state_reason = Some(HOOK_ROLLBACK.into());
    }
    p.traffic = Some(t);
    p
}

/// The reason of a deployment rolled back by a lifecycle hook.
pub const HOOK_ROLLBACK: &str = "ECS deployment lifecycle hook: rollback requested.";

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_api::ecs::{
        AdvancedConfiguration, CanaryConfiguration, Deployment, DeploymentLifecycleHook, DeploymentRolloutState,
        LaunchType, LinearConfiguration,
    };

    const TG: &str = "arn:tg/blue";
    const ALT: &str = "arn:tg/green";
    const RULE: &str = "arn:rule/prod";

    fn svc(strategy: DeploymentStrategy) -> Service {
        let mut s = crate::testing::rolling_service(2, 100, 200);
        let c = s.deployment_configuration.as_mut().unwrap();
        c.strategy = Some(strategy);
        c.bake_time_in_minutes = Some(1);
        s.load_balancers = Some(vec![LoadBalancer {
            target_group_arn: Some(TG.into()),
            container_name: Some("web".into()),
            container_port: Some(80),
            advanced_configuration: Some(AdvancedConfiguration {
                alternate_target_group_arn: Some(ALT.into()),
                production_listener_rule: Some(RULE.into()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        s
    }

    fn t(n: usize, dep: &str) -> Task {
        Task {
            task_arn: Some(format!("arn:t/{dep}/{n}")),
            started_by: Some(dep.into()),
            last_status: Some("RUNNING".into()),
            desired_status: Some("RUNNING".into()),
            started_at: Some(0.0),
            created_at: Some(n as f64),
            launch_type: Some(LaunchType::Fargate),
            ..Default::default()
        }
    }

    /// Runs passes as the scheduler would (the document carried over, green's tasks added as
    /// the plan asks) and returns the document and plan of the last.
    struct World {
        svc: Service,
        tasks: Vec<Task>,
        doc: Option<Traffic>,
        healthy: bool,
    }

    impl World {
        fn new(s: DeploymentStrategy) -> Self {
            World { svc: svc(s), tasks: vec![t(0, "ecs-svc/1"), t(1, "ecs-svc/1")], doc: None, healthy: true }
        }

        fn pass(&mut self, now: Now) -> Plan {
            let refs: Vec<&Task> = self.tasks.iter().collect();
            let healthy = self.healthy;
            let lb = move |_: &Task| if healthy { deploy::LbHealth::Healthy } else { deploy::LbHealth::Pending };
            let probes = Probes { lb: &lb, ..Probes::NONE };
            let p = plan(&self.svc, &refs, &probes, now, &Settings::default(), self.doc.as_ref());
            for i in 0..p.start {
                self.tasks.push(t(10 + self.tasks.len() + i, "ecs-svc/2"));
            }
            for s in &p.stop {
                self.tasks.retain(|x| x.task_arn.as_deref() != Some(s.task_arn.as_str()));
            }
            self.svc = p.service.clone();
            self.doc = p.traffic.clone();
            p
        }

        fn stage(&self) -> Stage {
            self.doc.as_ref().unwrap().stage
        }

        fn weights(&self) -> Weights {
            rule_weights(&self.svc, self.doc.as_ref()).into_iter().next().unwrap().1
        }
    }

    #[test]
    fn blue_green_scales_up_green_shifts_all_at_once_bakes_then_cleans_up() {
        let mut w = World::new(DeploymentStrategy::BlueGreen);
        w.healthy = false;
        let p = w.pass(0.0);
        assert_eq!(w.stage(), Stage::PreScaleUp);
        assert!(p.stop.is_empty());
        let d = w.doc.as_ref().unwrap();
        assert_eq!(d.groups["ecs-svc/1"], [TG]);
        assert_eq!(d.groups["ecs-svc/2"], [ALT], "green goes to the group not taking production traffic");
        assert_eq!(w.weights(), [(TG.to_string(), 100), (ALT.to_string(), 0)]);
        let p = w.pass(1.0);
        assert_eq!((w.stage(), p.start), (Stage::ScaleUp, 0), "nothing starts before SCALE_UP");
        let p = w.pass(1.5);
        assert_eq!(p.start, 2, "green starts in full beside blue");
        // Green not yet healthy in its group: no move, blue untouched.
        let p = w.pass(2.0);
        assert_eq!((w.stage(), p.start, p.stop.len()), (Stage::ScaleUp, 0, 0));
        w.healthy = true;
        for (now, stage) in [
            (3.0, Stage::PostScaleUp),
            (4.0, Stage::TestTrafficShift),
            (5.0, Stage::PostTestTrafficShift),
            (6.0, Stage::ProductionTrafficShift),
        ] {
            let p = w.pass(now);
            assert_eq!(w.stage(), stage);
            assert!(p.stop.is_empty(), "{stage:?}: {:?}", p.stop);
        }
        w.pass(7.0);
        assert_eq!(w.doc.as_ref().unwrap().percent, 100.0);
        assert_eq!(w.weights(), [(TG.to_string(), 0), (ALT.to_string(), 100)]);
        w.pass(8.0);
        assert_eq!(w.stage(), Stage::BakeTime);
        let p = w.pass(30.0);
        assert_eq!((w.stage(), p.stop.len()), (Stage::BakeTime, 0), "a minute of bake time");
        w.pass(70.0);
        assert_eq!(w.stage(), Stage::CleanUp);
        let p = w.pass(71.0);
        assert_eq!(p.stop.len(), 2, "blue stops");
        assert!(p.stop.iter().all(|s| s.task_arn.contains("ecs-svc/1")));
        let p = w.pass(72.0);
        assert_eq!(p.completed.as_deref(), Some("ecs-svc/2"));
        assert!(w.doc.as_ref().unwrap().done);
        assert_eq!(w.weights(), [(TG.to_string(), 0), (ALT.to_string(), 100)]);
    }

    fn to_traffic_shift(w: &mut World) {
        let mut now = 0.0;
        while w.doc.as_ref().is_none_or(|d| d.stage != Stage::ProductionTrafficShift) {
            w.pass(now);
            now += 1.0;
        }
    }

    #[test]
    fn linear_steps_and_canary_shares() {
        let mut w = World::new(DeploymentStrategy::Linear);
        w.svc.deployment_configuration.as_mut().unwrap().linear_configuration =
            Some(LinearConfiguration { step_percent: Some(40.0), step_bake_time_in_minutes: Some(1) });
        to_traffic_shift(&mut w);
        w.pass(100.0);
        assert_eq!(w.weights(), [(TG.to_string(), 60), (ALT.to_string(), 40)]);
        w.pass(130.0);
        assert_eq!(w.doc.as_ref().unwrap().percent, 40.0, "the step bakes a minute");
        w.pass(160.0);
        assert_eq!(w.weights(), [(TG.to_string(), 20), (ALT.to_string(), 80)]);
        w.pass(220.0);
        assert_eq!(w.doc.as_ref().unwrap().percent, 100.0);
        assert_eq!(w.stage(), Stage::PostProductionTrafficShift);

        let mut w = World::new(DeploymentStrategy::Canary);
        w.svc.deployment_configuration.as_mut().unwrap().canary_configuration =
            Some(CanaryConfiguration { canary_percent: Some(0.5), canary_bake_time_in_minutes: Some(2) });
        to_traffic_shift(&mut w);
        w.pass(100.0);
        assert_eq!(w.weights(), [(TG.to_string(), 995), (ALT.to_string(), 5)], "a fractional share in tenths");
        w.pass(200.0);
        assert_eq!(w.doc.as_ref().unwrap().percent, 0.5);
        w.pass(221.0);
        assert_eq!(w.weights(), [(TG.to_string(), 0), (ALT.to_string(), 100)]);
    }

    #[test]
    fn a_pause_hook_holds_the_walk_until_continued_or_rolled_back() {
        let mut w = World::new(DeploymentStrategy::BlueGreen);
        w.svc.deployment_configuration.as_mut().unwrap().lifecycle_hooks = Some(vec![DeploymentLifecycleHook {
            target_type: Some(DeploymentLifecycleHookTargetType::Pause),
            lifecycle_stages: Some(vec![HookStage::PostScaleUp]),
            ..Default::default()
        }]);
        for now in 0..6 {
            w.pass(now as f64);
        }
        assert_eq!(w.stage(), Stage::PostScaleUp, "held");
        let id = w.doc.as_ref().unwrap().hooks[0].detail.hook_id.clone().unwrap();
        assert_eq!(w.doc.as_ref().unwrap().hooks[0].detail.status, Some(DeploymentLifecycleHookStatus::AwaitingAction));
        let mut held = w.doc.clone().unwrap();
        assert!(continue_hook(&mut held, "nope", DeploymentLifecycleHookAction::Continue).is_err());
        continue_hook(w.doc.as_mut().unwrap(), &id, DeploymentLifecycleHookAction::Continue).unwrap();
        assert!(continue_hook(w.doc.as_mut().unwrap(), &id, DeploymentLifecycleHookAction::Continue).is_err());
        w.pass(7.0);
        assert_eq!(w.stage(), Stage::TestTrafficShift);

        // ROLLBACK: the deployment fails; the rollback's deployment joins blue's groups.
        continue_hook(&mut held, &id, DeploymentLifecycleHookAction::Rollback).unwrap();
        w.doc = Some(held);
        w.svc.deployments.as_mut().unwrap()[0].rollout_state = Some(DeploymentRolloutState::InProgress);
        let refs: Vec<&Task> = w.tasks.iter().collect();
        let lb = |_: &Task| deploy::LbHealth::Healthy;
        let mut p = plan(&w.svc, &refs, &Probes { lb: &lb, ..Probes::NONE }, 8.0, &Settings::default(), w.doc.as_ref());
        assert_eq!(p.failed.as_deref(), Some("ecs-svc/2"));
        assert_eq!(p.rollback_to.and_then(|d| d.id).as_deref(), Some("ecs-svc/1"));
        let t = p.traffic.as_mut().unwrap();
        t.rolled_back(w.svc.load_balancers.as_deref().unwrap(), "ecs-svc/3", 8.0);
        assert_eq!(t.groups["ecs-svc/3"], [TG]);
        assert_eq!(rule_weights(&w.svc, Some(t))[0].1, [(TG.to_string(), 100), (ALT.to_string(), 0)]);
    }

    #[test]
    fn the_first_deployment_serves_from_the_primary_group_and_the_next_swaps() {
        let mut w = World::new(DeploymentStrategy::BlueGreen);
        w.svc.deployments.as_mut().unwrap().truncate(1);
        w.tasks.clear();
        let p = w.pass(0.0);
        assert_eq!(p.start, 2);
        let d = w.doc.as_ref().unwrap();
        assert!(d.done && d.groups["ecs-svc/2"] == [TG]);
        assert_eq!(w.weights(), [(TG.to_string(), 100), (ALT.to_string(), 0)]);
        // The next deployment's green is the alternate; the one after swaps back.
        let mut s = w.svc.clone();
        s.deployments.as_mut().unwrap()[0].status = Some("ACTIVE".into());
        s.deployments.as_mut().unwrap().insert(
            0,
            Deployment {
                id: Some("ecs-svc/3".into()),
                status: Some("PRIMARY".into()),
                desired_count: 2,
                ..Default::default()
            },
        );
        w.svc = s;
        w.pass(1.0);
        assert_eq!(w.doc.as_ref().unwrap().groups["ecs-svc/3"], [ALT]);
        assert_eq!(load_balancers_of(&w.svc, w.doc.as_ref(), "ecs-svc/3")[0].target_group_arn.as_deref(), Some(ALT));
        assert_eq!(load_balancers_of(&w.svc, w.doc.as_ref(), "ecs-svc/2")[0].target_group_arn.as_deref(), Some(TG));
    }

    #[test]
    fn configuration_checks() {
        let lbs = svc(DeploymentStrategy::BlueGreen).load_balancers.unwrap();
        let c = |s: DeploymentStrategy| DeploymentConfiguration { strategy: Some(s), ..Default::default() };
        check_configuration(&c(DeploymentStrategy::BlueGreen), &lbs, SchedulingStrategy::Replica).unwrap();
        let bare = vec![LoadBalancer { target_group_arn: Some(TG.into()), ..Default::default() }];
        let e = check_configuration(&c(DeploymentStrategy::BlueGreen), &bare, SchedulingStrategy::Replica).unwrap_err();
        assert!(e.message.contains("alternateTargetGroupArn"), "{}", e.message);
        assert!(check_configuration(&c(DeploymentStrategy::Canary), &lbs, SchedulingStrategy::Daemon).is_err());
        let mut lambda = c(DeploymentStrategy::BlueGreen);
        lambda.lifecycle_hooks = Some(vec![DeploymentLifecycleHook {
            hook_target_arn: Some("arn:aws:lambda:us-east-1:0:function:f".into()),
            lifecycle_stages: Some(vec![HookStage::PostScaleUp]),
            ..Default::default()
        }]);
        let e = check_configuration(&lambda, &lbs, SchedulingStrategy::Replica).unwrap_err();
        assert_eq!(e.code, estiba_api::ecs::ErrorCode::UnsupportedFeatureException);
        assert!(check_rule_forwards(RULE, &lbs[0], &[TG]).is_ok());
        assert!(check_rule_forwards(RULE, &lbs[0], &[TG, ALT]).is_ok());
        assert!(check_rule_forwards(RULE, &lbs[0], &["arn:tg/other"]).is_err());
    }
}
