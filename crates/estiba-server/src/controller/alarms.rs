//! The alarm controller: evaluates every metric alarm once per AWS minute of real time
//! (`metric_clock.real_duration(60 s)`), and high-resolution alarms (10, 20 or 30-second
//! periods) once per period, from the metric store in AWS time. Each evaluation is
//! `services::cloudwatch::evaluate::evaluate_alarm`: a change of state is written with its
//! history in one CAS transaction and the alarm's actions are invoked (scaling policies
//! through `crate::scaling::alarm_action`).
//!
//! "Now" is [`Server::alarm_now_ms`]: held back until the metric ingest has written the
//! minute that just ended, so the newest period of an `AWS/ECS` alarm is not judged missing
//! while its datapoint is on its way.
//!
//! Passes run every 10 AWS seconds; an alarm is evaluated when the minute (or period) it
//! falls in has changed since its last evaluation, which this controller keeps in memory
//! (after a restart every alarm is evaluated at once). Writes happen only on a change of
//! state, so a SetAlarmState holds until the next evaluation, as in CloudWatch.
//!
//! May not: decide states itself (`estiba_core::alarms` does), or wake on view changes
//! (evaluation is periodic: a PutMetricAlarm must not hasten the next one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use estiba_api::ApiError;
use estiba_core::alarms::{self as core, AlarmDoc};
use estiba_core::Scope;

use super::{Controller, Wake};
use crate::services::cloudwatch::{alarms_table, evaluate};
use crate::{now, Server};

#[derive(Default)]
pub struct AlarmEvaluator {
    /// Per alarm key, the AWS boundary (seconds) of its last evaluation.
    last: Mutex<HashMap<String, i64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AlarmEvaluatorError {
    #[error("evaluating alarm {key}: {error}")]
    Alarm { key: String, error: String },
}

/// The scope of a key `cloudwatch/<account>/<region>/alarms/<name>`.
fn scope_of(key: &str) -> Option<Scope> {
    let mut parts = key.strip_prefix(core::PREFIX)?.strip_prefix('/')?.splitn(3, '/');
    Some(Scope::new(parts.next()?, parts.next()?))
}

impl AlarmEvaluator {
    fn tick(server: &Server) -> Duration {
        server.metric_clock.real_duration(Duration::from_secs(10)).max(Duration::from_millis(100))
    }
}

impl Controller for AlarmEvaluator {
    type Error = AlarmEvaluatorError;

    fn name(&self) -> &'static str {
        "cloudwatch-alarms"
    }

    fn after_error(&self) -> Wake {
        Wake::after(Duration::from_secs(1))
    }

    async fn pass(&self, server: &Server) -> Result<Wake, AlarmEvaluatorError> {
        let now_aws = server.alarm_now_ms();
        let due: Vec<(String, i64)> = {
            let st = server.view.read();
            let last = self.last.lock().expect("not poisoned");
            st.docs::<AlarmDoc>(alarms_table(), core::PREFIX)
                .filter_map(|d| {
                    let period = d.value.rule.period.max(1);
                    let step = if core::is_high_resolution(period) { i64::from(period) } else { 60 };
                    let boundary = (now_aws / 1000).div_euclid(step) * step;
                    (last.get(&d.key) != Some(&boundary)).then(|| (d.key.clone(), boundary))
                })
                .collect()
        };
        let mut first_error = None;
        for (key, boundary) in due {
            let Some(scope) = scope_of(&key) else { continue };
            match evaluate::evaluate_alarm(server, &scope, &key, now_aws, now()).await {
                Ok(()) => {
                    self.last.lock().expect("not poisoned").insert(key, boundary);
                }
                Err(e) => {
                    let e: ApiError = e;
                    tracing::warn!(alarm = %key, error = %e.message, "alarm evaluation failed");
                    // Not retried before the next boundary: a broken alarm must not spin.
                    self.last.lock().expect("not poisoned").insert(key.clone(), boundary);
                    first_error.get_or_insert(AlarmEvaluatorError::Alarm { key, error: e.message });
                }
            }
        }
        {
            // Forget alarms that are gone.
            let st = server.view.read();
            self.last.lock().expect("not poisoned").retain(|k, _| st.doc::<AlarmDoc>(alarms_table(), k).is_some());
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(Wake::after(Self::tick(server))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_from_key() {
        let s = Scope::new("123456789012", "us-east-1");
        let key = core::alarm_key(&s, "cpu/high");
        assert_eq!(scope_of(&key), Some(s));
        assert_eq!(scope_of("logs/x"), None);
    }
}
