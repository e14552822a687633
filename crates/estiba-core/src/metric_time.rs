//! Metric time: the server's `--metric-period` says how long one AWS minute of metrics lasts
//! in real time (default 60 s, real time). With 5 s, a standard-resolution datapoint, an
//! alarm's 60-second period and a 60-second scaling cooldown each last 5 real seconds, while
//! every API keeps AWS's numbers. Everything that stores or evaluates metrics works in *AWS
//! time*, `aws = origin + (real − origin) × 60 s / period`, and shows times back as real time.
//!
//! `origin` must stay the same while the metric data lives (the server keeps it beside the
//! metric store), or what was stored no longer lines up. A server restarted with another
//! period continues AWS time from where it was ([`MetricClock::rebased`]): the clock is then
//! anchored at a real instant and the AWS time it had, `aws = anchor_aws + (real −
//! anchor_real) × 60 s / period`. Nothing here reads a clock.

use std::time::Duration;

/// One AWS minute, in milliseconds.
pub const AWS_MINUTE_MS: i64 = 60_000;

/// Maps real time to AWS time and back. Times are milliseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricClock {
    /// A real instant and the AWS time it maps to (equal unless rebased).
    anchor_real: i64,
    anchor_aws: i64,
    period_ms: i64,
}

impl Default for MetricClock {
    /// Real time: one AWS minute is one minute.
    fn default() -> Self {
        MetricClock { anchor_real: 0, anchor_aws: 0, period_ms: AWS_MINUTE_MS }
    }
}

impl MetricClock {
    /// `period` is how long one AWS minute lasts (at least 1 ms).
    pub fn new(origin_ms: i64, period: Duration) -> MetricClock {
        MetricClock::anchored(origin_ms, origin_ms, period)
    }

    /// The clock whose real instant `real_ms` is AWS time `aws_ms`.
    pub fn anchored(real_ms: i64, aws_ms: i64, period: Duration) -> MetricClock {
        let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX).max(1);
        MetricClock { anchor_real: real_ms, anchor_aws: aws_ms, period_ms }
    }

    /// This clock with another period from real instant `now_ms` on: AWS time goes on from
    /// what it is at `now_ms`, so what was stored keeps lining up and time never jumps.
    pub fn rebased(&self, now_ms: i64, period: Duration) -> MetricClock {
        MetricClock::anchored(now_ms, self.to_aws(now_ms), period)
    }

    /// The anchor: a real instant and its AWS time.
    pub fn anchor(&self) -> (i64, i64) {
        (self.anchor_real, self.anchor_aws)
    }

    /// How long one AWS minute lasts.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms as u64)
    }

    /// Whether AWS time is real time.
    pub fn is_real_time(&self) -> bool {
        self.period_ms == AWS_MINUTE_MS
    }

    /// The AWS time of a real instant.
    pub fn to_aws(&self, real_ms: i64) -> i64 {
        scale(real_ms, (self.anchor_real, self.anchor_aws), AWS_MINUTE_MS, self.period_ms)
    }

    /// The real instant of an AWS time.
    pub fn to_real(&self, aws_ms: i64) -> i64 {
        scale(aws_ms, (self.anchor_aws, self.anchor_real), self.period_ms, AWS_MINUTE_MS)
    }

    /// How long an AWS duration (a period, a cooldown) lasts in real time.
    pub fn real_duration(&self, aws: Duration) -> Duration {
        let ms = aws.as_millis() * self.period_ms as u128 / AWS_MINUTE_MS as u128;
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// The AWS duration a real one stands for.
    pub fn aws_duration(&self, real: Duration) -> Duration {
        let ms = real.as_millis() * AWS_MINUTE_MS as u128 / self.period_ms as u128;
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

/// `t` on one time line to the other, `from` and `to` being the anchor on each, at `num / den`.
fn scale(t: i64, (from, to): (i64, i64), num: i64, den: i64) -> i64 {
    if num == den && from == to {
        return t;
    }
    let d = (t as i128 - from as i128) * num as i128 / den as i128;
    (to as i128 + d).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebased_clock_goes_on_without_a_jump() {
        let origin = 1_700_000_000_000;
        let fast = MetricClock::new(origin, Duration::from_secs(5));
        let now = origin + 3_600_000;
        let aws_now = fast.to_aws(now);
        assert_eq!(aws_now, origin + 12 * 3_600_000);
        // Back to real time: AWS time stays 11 hours ahead, and goes at the real pace.
        let real = fast.rebased(now, Duration::from_secs(60));
        assert_eq!(real.to_aws(now), aws_now);
        assert_eq!(real.to_aws(now + 60_000), aws_now + 60_000);
        assert_eq!(real.to_real(aws_now + 60_000), now + 60_000);
        assert_eq!(real.anchor(), (now, aws_now));
        // To a faster pace again.
        let faster = real.rebased(now + 60_000, Duration::from_secs(1));
        assert_eq!(faster.to_aws(now + 61_000), aws_now + 120_000);
        assert_eq!(faster.to_real(faster.to_aws(now + 61_234)), now + 61_234);
    }

    #[test]
    fn real_time_is_the_identity() {
        let c = MetricClock::default();
        assert!(c.is_real_time());
        assert_eq!(c.to_aws(1_700_000_000_123), 1_700_000_000_123);
        assert_eq!(c.real_duration(Duration::from_secs(300)), Duration::from_secs(300));
    }

    #[test]
    fn five_second_minutes() {
        let origin = 1_700_000_000_000;
        let c = MetricClock::new(origin, Duration::from_secs(5));
        assert_eq!(c.to_aws(origin), origin);
        assert_eq!(c.to_aws(origin + 5_000), origin + 60_000);
        assert_eq!(c.to_real(origin + 60_000), origin + 5_000);
        assert_eq!(c.to_real(c.to_aws(origin + 12_345)), origin + 12_345);
        assert_eq!(c.real_duration(Duration::from_secs(60)), Duration::from_secs(5));
        assert_eq!(c.real_duration(Duration::from_secs(300)), Duration::from_secs(25));
        assert_eq!(c.aws_duration(Duration::from_secs(5)), Duration::from_secs(60));
        // Before the origin too.
        assert_eq!(c.to_aws(origin - 5_000), origin - 60_000);
    }
}
