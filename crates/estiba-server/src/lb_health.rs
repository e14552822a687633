//! The health of ELBv2 targets, as the data plane's probes report it: kept in memory (it
//! changes with every probe round and is rebuilt by the next one after a restart), read by
//! DescribeTargetHealth. Targets the book has no entry for are `initial`.

use std::collections::HashMap;
use std::sync::RwLock;

use estiba_api::elbv2::{TargetHealthReasonEnum, TargetHealthStateEnum};

/// A target's health: its state, reason and description.
pub type Health = (TargetHealthStateEnum, Option<TargetHealthReasonEnum>, Option<String>);

/// The targets of one group: (id or IP, port) → health.
type Group = HashMap<(String, u16), Health>;

/// Target health by target group ARN, then target (id or IP, port).
#[derive(Default)]
pub struct TargetHealthBook {
    by_group: RwLock<HashMap<String, Group>>,
}

impl TargetHealthBook {
    /// Records a target's health.
    pub fn set(
        &self,
        tg_arn: &str,
        target: (&str, u16),
        state: TargetHealthStateEnum,
        reason: Option<TargetHealthReasonEnum>,
        description: Option<String>,
    ) {
        let mut g = self.by_group.write().unwrap_or_else(|e| e.into_inner());
        g.entry(tg_arn.to_owned()).or_default().insert((target.0.to_owned(), target.1), (state, reason, description));
    }

    /// A target's last recorded health.
    pub fn get(&self, tg_arn: &str, target: (&str, u16)) -> Option<Health> {
        let g = self.by_group.read().unwrap_or_else(|e| e.into_inner());
        g.get(tg_arn)?.get(&(target.0.to_owned(), target.1)).cloned()
    }

    /// Forgets one target (deregistered).
    pub fn forget(&self, tg_arn: &str, target: (&str, u16)) {
        let mut g = self.by_group.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = g.get_mut(tg_arn) {
            t.remove(&(target.0.to_owned(), target.1));
        }
    }

    /// How many of a group's targets are healthy and unhealthy now (CloudWatch's
    /// HealthyHostCount and UnHealthyHostCount).
    pub fn counts(&self, tg_arn: &str) -> (u32, u32) {
        let g = self.by_group.read().unwrap_or_else(|e| e.into_inner());
        let mut c = (0, 0);
        for (state, _, _) in g.get(tg_arn).into_iter().flat_map(|t| t.values()) {
            match state {
                TargetHealthStateEnum::Healthy => c.0 += 1,
                TargetHealthStateEnum::Unhealthy => c.1 += 1,
                _ => {}
            }
        }
        c
    }

    /// Forgets every target of a group (deleted).
    pub fn forget_group(&self, tg_arn: &str) {
        self.by_group.write().unwrap_or_else(|e| e.into_inner()).remove(tg_arn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_forget() {
        let b = TargetHealthBook::default();
        assert_eq!(b.get("tg", ("10.0.0.1", 80)), None);
        b.set("tg", ("10.0.0.1", 80), TargetHealthStateEnum::Healthy, None, None);
        assert_eq!(b.get("tg", ("10.0.0.1", 80)).unwrap().0, TargetHealthStateEnum::Healthy);
        assert_eq!(b.get("tg", ("10.0.0.1", 81)), None);
        assert_eq!(b.counts("tg"), (1, 0));
        b.forget("tg", ("10.0.0.1", 80));
        assert_eq!(b.get("tg", ("10.0.0.1", 80)), None);
        b.set("tg", ("a", 1), TargetHealthStateEnum::Unhealthy, Some(TargetHealthReasonEnum::TargetTimeout), None);
        b.forget_group("tg");
        assert_eq!(b.get("tg", ("a", 1)), None);
    }
}
