//! Task placement on container instances (EC2 and EXTERNAL launch types): resources, host
//! ports, placement constraints (distinctInstance, memberOf) and strategies (binpack, spread,
//! random), with ECS's failure reasons (RESOURCE:CPU, RESOURCE:MEMORY, RESOURCE:PORTS,
//! ATTRIBUTE).
//!
//! Fargate tasks do not come here: Fargate capacity is not reserved (see the agent's node).

use estiba_api::ecs::{
    Failure, NetworkMode, PlacementConstraint, PlacementConstraintType, PlacementStrategy, PlacementStrategyType,
    TaskDefinition, TaskOverride, TransportProtocol,
};

use crate::instance::{Capacity, Queried};
use crate::query::{self, QueryTarget};
use crate::taskdef;

/// What one task reserves on an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Need {
    pub cpu: i64,
    pub memory: i64,
    pub ports: Vec<(i32, TransportProtocol)>,
}

/// A task's reservation: task-level sizes when set, else the sum of its containers'.
pub fn need_of(td: &TaskDefinition, overrides: Option<&TaskOverride>) -> Need {
    let size = taskdef::task_size(
        overrides.and_then(|o| o.cpu.as_deref()).or(td.cpu.as_deref()),
        overrides.and_then(|o| o.memory.as_deref()).or(td.memory.as_deref()),
    )
    .unwrap_or_default();
    let mode = taskdef::network_mode(td);
    let mut need = Need::default();
    let mut cpu = 0i64;
    let mut mem = 0i64;
    for c in td.container_definitions.iter().flatten() {
        let o =
            overrides.and_then(|o| o.container_overrides.as_ref()).and_then(|l| l.iter().find(|x| x.name == c.name));
        cpu += o.and_then(|o| o.cpu).unwrap_or(c.cpu) as i64;
        mem +=
            o.and_then(|o| o.memory.or(o.memory_reservation)).or(c.memory_reservation.or(c.memory)).unwrap_or(0) as i64;
        if matches!(mode, NetworkMode::Bridge | NetworkMode::Host) {
            for pm in c.port_mappings.iter().flatten() {
                let host = if mode == NetworkMode::Host { pm.container_port } else { pm.host_port };
                if let Some(p) = host.filter(|&p| p > 0) {
                    need.ports.push((p, pm.protocol.unwrap_or(TransportProtocol::Tcp)));
                }
            }
        }
    }
    need.cpu = size.cpu.map_or(cpu, i64::from);
    need.memory = size.memory.map_or(mem, i64::from);
    need
}

/// An instance that could take tasks, with what it has left.
pub struct Candidate<'a> {
    pub arn: String,
    pub target: Queried<'a>,
    pub left: Capacity,
    /// ACTIVE and with a connected agent (or registered without one).
    pub usable: bool,
    /// Tasks placed here by the current request (all of one group).
    pub added: usize,
}

impl Candidate<'_> {
    fn group_count(&self, group: &str) -> usize {
        self.target.groups.iter().filter(|g| **g == group).count() + self.added
    }
}

/// Why an instance cannot take the task, or `None` when it can.
fn rejection(
    c: &Candidate<'_>,
    need: &Need,
    group: &str,
    constraints: &[(PlacementConstraintType, Option<query::Expr>)],
) -> Option<&'static str> {
    for (kind, expr) in constraints {
        match kind {
            PlacementConstraintType::DistinctInstance => {
                if c.group_count(group) > 0 {
                    return Some("DistinctInstance placement constraint unsatisfied.");
                }
            }
            PlacementConstraintType::MemberOf => {
                if let Some(e) = expr {
                    if !query::eval(e, &c.target) {
                        return Some("MemberOf placement constraint unsatisfied.");
                    }
                }
            }
        }
    }
    if c.left.cpu < need.cpu {
        return Some("RESOURCE:CPU");
    }
    if c.left.memory < need.memory {
        return Some("RESOURCE:MEMORY");
    }
    if need.ports.iter().any(|p| c.left.ports.contains(p)) {
        return Some("RESOURCE:PORTS");
    }
    None
}

/// Parses placement constraints once per request.
pub fn compile_constraints(
    cs: &[PlacementConstraint],
) -> crate::Result<Vec<(PlacementConstraintType, Option<query::Expr>)>> {
    if cs.len() > 10 {
        return Err(crate::EcsError::invalid("At most 10 placement constraints can be specified."));
    }
    cs.iter()
        .map(|c| {
            let kind = c.r#type.unwrap_or(PlacementConstraintType::MemberOf);
            let expr = match (kind, c.expression.as_deref()) {
                (PlacementConstraintType::MemberOf, Some(e)) => Some(query::parse(e)?),
                (PlacementConstraintType::MemberOf, None) => {
                    return Err(crate::EcsError::invalid("A memberOf placement constraint needs an expression."))
                }
                (PlacementConstraintType::DistinctInstance, Some(_)) => {
                    return Err(crate::EcsError::invalid(
                        "A distinctInstance placement constraint takes no expression.",
                    ))
                }
                _ => None,
            };
            Ok((kind, expr))
        })
        .collect()
}

pub fn validate_strategies(ss: &[PlacementStrategy]) -> crate::Result<()> {
    if ss.len() > 5 {
        return Err(crate::EcsError::invalid("At most 5 placement strategies can be specified."));
    }
    for s in ss {
        match (s.r#type, s.field.as_deref()) {
            (Some(PlacementStrategyType::Binpack), Some(f))
                if f.eq_ignore_ascii_case("cpu") || f.eq_ignore_ascii_case("memory") => {}
            (Some(PlacementStrategyType::Binpack), _) => {
                return Err(crate::EcsError::invalid("The binpack placement strategy takes field cpu or memory."))
            }
            (Some(PlacementStrategyType::Spread), Some(_)) => {}
            (Some(PlacementStrategyType::Spread), None) => return Err(crate::EcsError::invalid(
                "The spread placement strategy needs a field, such as instanceId or attribute:ecs.availability-zone.",
            )),
            (Some(PlacementStrategyType::Random), _) | (None, _) => {}
        }
    }
    Ok(())
}

/// Picks an instance for one task and reserves its resources there. On failure, returns one
/// failure per instance considered, as RunTask reports them.
pub fn place_one(
    cands: &mut [Candidate<'_>],
    need: &Need,
    group: &str,
    constraints: &[(PlacementConstraintType, Option<query::Expr>)],
    strategies: &[PlacementStrategy],
    random: u64,
) -> Result<usize, Vec<Failure>> {
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        if !c.usable {
            continue;
        }
        match rejection(c, need, group, constraints) {
            None => ok.push(i),
            Some(reason) => {
                failures.push(Failure { arn: Some(c.arn.clone()), reason: Some(reason.into()), detail: None })
            }
        }
    }
    if ok.is_empty() {
        return Err(failures);
    }
    let score = |i: usize| -> Vec<i64> {
        let c = &cands[i];
        strategies
            .iter()
            .map(|s| match (s.r#type, s.field.as_deref().map(str::to_ascii_lowercase).as_deref()) {
                (Some(PlacementStrategyType::Binpack), Some("memory")) => c.left.memory,
                (Some(PlacementStrategyType::Binpack), _) => c.left.cpu,
                (Some(PlacementStrategyType::Spread), Some(f)) if f.starts_with("attribute:") => {
                    let attr = &s.field.as_deref().unwrap()["attribute:".len()..];
                    let value = c.target.attribute(attr);
                    cands
                        .iter()
                        .filter(|o| o.target.attribute(attr) == value)
                        .map(|o| o.group_count(group) as i64)
                        .sum()
                }
                (Some(PlacementStrategyType::Spread), _) => c.group_count(group) as i64,
                _ => 0,
            })
            .collect()
    };
    let mut best: Vec<(Vec<i64>, usize)> = ok.iter().map(|&i| (score(i), i)).collect();
    best.sort();
    let top = best[0].0.clone();
    let tied: Vec<usize> = best.iter().filter(|(s, _)| *s == top).map(|(_, i)| *i).collect();
    let pick = tied[(random % tied.len() as u64) as usize];
    let c = &mut cands[pick];
    c.left.cpu -= need.cpu;
    c.left.memory -= need.memory;
    c.left.ports.extend(need.ports.iter().copied());
    c.added += 1;
    Ok(pick)
}
