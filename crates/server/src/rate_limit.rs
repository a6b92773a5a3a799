//! Per-credential rate limits: a fixed window of `limit` requests per `period`, counted on this replica
//! (several replicas each allow `limit`). Every authenticated answer carries `x-ratelimit-period`,
//! `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` (seconds until the window
//! restarts); a request over the limit gets a 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

use crate::error::ApiError;

pub struct RateLimiter {
    limit: u32,
    period: Duration,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Where a caller stands in its window.
pub struct Allowance {
    limit: u32,
    period: Duration,
    remaining: u32,
    reset: Duration,
}

impl RateLimiter {
    pub fn new(limit: u32, period: Duration) -> RateLimiter {
        RateLimiter { limit, period: period.max(Duration::from_secs(1)), windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one request of `client_id`; `Err` (a 429 with headers) when over the limit, `Ok(None)` when
    /// there is no limit.
    pub fn check(&self, client_id: &str, now: Instant) -> Result<Option<Allowance>, ApiError> {
        if self.limit == 0 {
            return Ok(None);
        }
        let Ok(mut windows) = self.windows.lock() else { return Ok(None) };
        if windows.len() > 100_000 {
            // Forget finished windows (credentials are few; this only bounds memory against token churn).
            windows.retain(|_, (start, _)| now.duration_since(*start) < self.period);
        }
        let (start, count) = windows.entry(client_id.to_string()).or_insert((now, 0));
        if now.duration_since(*start) >= self.period {
            *start = now;
            *count = 0;
        }
        let reset = self.period.saturating_sub(now.duration_since(*start));
        if *count >= self.limit {
            let allowance = Allowance { limit: self.limit, period: self.period, remaining: 0, reset };
            let mut error = ApiError::new(
                berth_model::ErrorCode::RateLimited,
                format!(
                    "this credential made {} requests in {} s; retry in {} s",
                    self.limit,
                    self.period.as_secs(),
                    seconds(reset)
                ),
            );
            allowance.write(error.headers_mut());
            error.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds(reset)));
            return Err(error);
        }
        *count += 1;
        Ok(Some(Allowance { limit: self.limit, period: self.period, remaining: self.limit - *count, reset }))
    }
}

/// Whole seconds, rounded up (a client waiting that long is past the reset).
fn seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

impl Allowance {
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-period", HeaderValue::from(self.period.as_secs()));
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(seconds(self.reset)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_then_refuses_then_resets() {
        let limiter = RateLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for left in [2, 1, 0] {
            let a = limiter.check("c", t0).expect("allowed").expect("limited");
            assert_eq!(a.remaining, left);
        }
        assert!(limiter.check("c", t0 + Duration::from_secs(1)).is_err(), "the fourth is refused");
        assert!(limiter.check("other", t0).is_ok(), "limits are per credential");
        let a = limiter.check("c", t0 + Duration::from_secs(10)).expect("a new window").expect("limited");
        assert_eq!(a.remaining, 2);
        assert!(RateLimiter::new(0, Duration::from_secs(1)).check("c", t0).expect("ok").is_none());
    }
}
