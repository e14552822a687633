//! Application Auto Scaling's side of the server: what happens when an alarm invokes a
//! scaling policy. The alarm controller (CloudWatch) calls [`alarm_action`] for every action
//! ARN of a scaling policy that its evaluation invokes; the policy's arithmetic lives in
//! `estiba_core::autoscaling`, and the new desired count goes through the path UpdateService
//! uses.
//!
//! May not: import a service module's handlers (what CloudWatch and Application Auto Scaling
//! share is in estiba-core).

use estiba_api::cloudwatch::StateValue;
use estiba_core::Scope;

use crate::Server;

/// An alarm invoking a scaling policy.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmAction {
    pub scope: Scope,
    /// The action ARN: the scaling policy's ARN.
    pub policy_arn: String,
    pub alarm_name: String,
    pub alarm_arn: String,
    /// The state the alarm is in (actions of scaling policies are invoked on the transition
    /// and again every period the alarm stays in it, as CloudWatch does for Auto Scaling).
    pub state: StateValue,
    /// The alarm's threshold and the newest datapoint's value it evaluated (step scaling picks
    /// its step from `value - threshold`; target tracking scales by `value / target`).
    pub threshold: f64,
    pub value: Option<f64>,
    /// When the alarm was evaluated, in AWS time (ms).
    pub at_ms: i64,
}

/// Runs the scaling policy an alarm invokes.
pub async fn alarm_action(s: &Server, action: AlarmAction) {
    let _ = s;
    tracing::debug!(policy = %action.policy_arn, alarm = %action.alarm_name, "scaling policies are not executed yet");
}
