//! ELBv2 draining: deletes the documents of targets deregistered while their group was in
//! use once their group's `deregistration_delay.timeout_seconds` has passed (until then
//! DescribeTargetHealth reports them `draining`, and the data plane lets their connections
//! finish). Runs every `every`.

use std::time::Duration;

use estiba_core::elbv2::{self as elb, TargetDoc, TargetGroupDoc};
use estiba_core::elbv2_rules as rules;
use estiba_store::{Compare, Op, Txn};

use super::{Controller, Wake};
use crate::services::elbv2::{table, Table, PREFIX};
use crate::{now, Server, WriteError};

pub struct Draining {
    pub every: Duration,
}

impl Controller for Draining {
    type Error = WriteError;

    fn name(&self) -> &'static str {
        "elbv2-draining"
    }

    fn first(&self) -> Wake {
        Wake::after(self.every)
    }

    fn after_error(&self) -> Wake {
        Wake::after(self.every)
    }

    async fn pass(&self, server: &Server) -> Result<Wake, WriteError> {
        let now = now();
        let done: Vec<(String, i64, Option<String>)> = {
            let st = server.view.read();
            st.docs::<TargetDoc>(table(Table::Targets), PREFIX)
                .filter_map(|d| {
                    let since = d.value.draining_since?;
                    let group = elb::group_key_of_target(&d.key)
                        .and_then(|k| st.doc::<TargetGroupDoc>(table(Table::TargetGroups), &k));
                    let finished = group.is_none_or(|g| rules::drained(since, &g.value.attributes, now));
                    finished.then(|| (d.key.clone(), d.rev, group.and_then(|g| g.value.tg.target_group_arn.clone())))
                })
                .collect()
        };
        // Each deletion is guarded (a target registered again meanwhile stays) and independent:
        // as many per transaction as the server's background budget allows.
        let groups = done.iter().map(|(k, rev, _)| Txn::new().when(Compare::mod_revision(k, *rev)).then(Op::delete(k)));
        let mut rest = &done[..];
        for (txn, n) in estiba_store::pack(server.txn_budget(), groups) {
            let (batch, after) = rest.split_at(n);
            rest = after;
            if !server.commit(txn).await? {
                return Ok(Wake::after(Duration::from_millis(100)));
            }
            for (k, _, arn) in batch {
                let target = k.rsplit('/').next().and_then(|t| t.rsplit_once(':'));
                if let (Some(arn), Some((id, port))) = (arn, target) {
                    server.target_health.forget(arn, (id, port.parse().unwrap_or(0)));
                }
            }
        }
        Ok(Wake::after(self.every))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_key_names_its_group() {
        assert_eq!(
            elb::group_key_of_target("elbv2/000000000000/us-east-1/targets/api/10.0.0.1:80").as_deref(),
            Some("elbv2/000000000000/us-east-1/target-groups/api")
        );
    }
}
