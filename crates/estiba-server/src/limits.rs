//! Limits that keep one client from starving the others: a request rate per account (a token
//! bucket; over it, AWS's throttling error in the request's protocol), a cap on open
//! connections and a deadline for request bodies (`http`, `body`).
//!
//! May not: decide who a caller is (the front door hands the account in).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use estiba_api::ApiError;

use estiba_auth::Family;

/// The most accounts whose buckets are remembered; past it, full buckets are forgotten (a
/// full bucket is what a new one starts as, so nothing is lost).
const MAX_BUCKETS: usize = 10_000;

/// Requests per second per account, with bursts of `burst`.
pub struct RateLimits {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    /// `rate` requests per second per account, bursts of `burst` (at least one).
    pub fn new(rate: u32, burst: u32) -> RateLimits {
        RateLimits { rate: f64::from(rate), burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// Takes one request of `account` at `now`: false when its bucket is empty.
    pub fn admit(&self, account: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let refill = |b: &mut Bucket| {
            b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
            b.at = now;
        };
        if !buckets.contains_key(account) && buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| {
                refill(b);
                b.tokens < self.burst
            });
        }
        let b = buckets.entry(account.to_owned()).or_insert(Bucket { tokens: self.burst, at: now });
        refill(b);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The error AWS answers a throttled request with, in its protocol family: JSON and CBOR
/// services say `ThrottlingException`, Query services `Throttling`, EC2
/// `RequestLimitExceeded`; a query-compatible JSON service (CloudWatch) sends the Query code
/// beside the JSON shape, as `auth::refusal` does.
pub fn throttled(family: Family, query_compatible: bool) -> ApiError {
    let (code, shape, status, message) = match family {
        Family::Json if query_compatible => ("Throttling", "ThrottlingException", 400, "Rate exceeded"),
        Family::Json => ("ThrottlingException", "ThrottlingException", 400, "Rate exceeded"),
        Family::Query => ("Throttling", "Throttling", 400, "Rate exceeded"),
        Family::Ec2 => ("RequestLimitExceeded", "RequestLimitExceeded", 503, "Request limit exceeded."),
    };
    ApiError { code, shape, status, sender_fault: true, message: message.into() }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_per_account_refills_at_the_rate() {
        let l = RateLimits::new(10, 5);
        let t0 = Instant::now();
        assert!((0..5).all(|_| l.admit("111111111111", t0)));
        assert!(!l.admit("111111111111", t0));
        // Another account has its own bucket.
        assert!(l.admit("222222222222", t0));
        // A tenth of a second later: one more request.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.admit("111111111111", t1));
        assert!(!l.admit("111111111111", t1));
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| l.admit("111111111111", t2)).count(), 5);
    }

    #[test]
    fn full_buckets_are_forgotten_past_the_bound() {
        let l = RateLimits::new(1000, 1);
        let t0 = Instant::now();
        for n in 0..MAX_BUCKETS {
            assert!(l.admit(&n.to_string(), t0));
        }
        // All empty: none is forgotten, the map grows by one.
        assert!(l.admit("new", t0));
        assert_eq!(l.buckets.lock().unwrap().len(), MAX_BUCKETS + 1);
        // A second later all are full again, and are forgotten before the next new one.
        assert!(l.admit("newer", t0 + Duration::from_secs(1)));
        assert_eq!(l.buckets.lock().unwrap().len(), 1);
    }
}
