//! What stands between an unauthenticated caller and a password or secret check (the security review's H4):
//!
//! - **A bounded pool for password hashing.** Argon2id takes ~19 MiB and tens of milliseconds per check; at
//!   most one check per core runs at once, and a check that finds no free slot is answered at once with a 503
//!   (`Retry-After: 1`) instead of queueing on the shared blocking pool, where store I/O runs too.
//! - **Attempt limits with backoff**, per client address and per account (email or client id): the first
//!   failures are free, then each further failure blocks that key for twice as long as the last (1 s, 2 s, 4 s,
//!   ... up to 15 minutes); a blocked key is answered 429 with `Retry-After` before any hashing. A success
//!   clears the account's count. Keys are forgotten after 15 minutes without a failure, and the table is
//!   bounded, so spraying made-up names costs memory only up to a cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Failures an account may make before backoff starts; an address gets more (several people behind one NAT).
const FREE_PER_ACCOUNT: u32 = 5;
const FREE_PER_ADDRESS: u32 = 30;
/// The longest block, and how long a key is remembered after its last failure.
const MAX_BLOCK: Duration = Duration::from_secs(15 * 60);
/// The most keys remembered per table.
const MAX_KEYS: usize = 100_000;

#[derive(Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Failures per key, with backoff.
pub struct Attempts {
    free: u32,
    records: Mutex<HashMap<String, Record>>,
}

impl Attempts {
    pub fn new(free: u32) -> Attempts {
        Attempts { free, records: Mutex::new(HashMap::new()) }
    }

    /// `Err(wait)` while `key` is blocked.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(records) = self.records.lock() else { return Ok(()) };
        match records.get(key).and_then(|r| r.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failure of `key`; past the free ones it blocks the key (doubling each time).
    pub fn failed(&self, key: &str, now: Instant) {
        let Ok(mut records) = self.records.lock() else { return };
        if records.len() >= MAX_KEYS {
            records.retain(|_, r| now.duration_since(r.last) < MAX_BLOCK);
            if records.len() >= MAX_KEYS {
                // Still full of live keys: forget the oldest half rather than grow.
                let mut lasts: Vec<Instant> = records.values().map(|r| r.last).collect();
                lasts.sort_unstable();
                let cut = lasts[lasts.len() / 2];
                records.retain(|_, r| r.last > cut);
            }
        }
        let r = records.entry(key.to_string()).or_insert(Record { failures: 0, last: now, blocked_until: None });
        if now.duration_since(r.last) >= MAX_BLOCK {
            *r = Record { failures: 0, last: now, blocked_until: None };
        }
        r.failures = r.failures.saturating_add(1);
        r.last = now;
        if r.failures > self.free {
            let doublings = (r.failures - self.free - 1).min(20);
            let block = Duration::from_secs(1u64 << doublings).min(MAX_BLOCK);
            r.blocked_until = Some(now + block);
        }
    }

    /// Clears `key` (a successful sign-in).
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut records) = self.records.lock() {
            records.remove(key);
        }
    }
}

/// The sign-in guard one server shares between `/login`, invitations and `/v1/auth/access_token`.
pub struct SignInGuard {
    hashing: Arc<Semaphore>,
    pub accounts: Attempts,
    pub addresses: Attempts,
}

impl Default for SignInGuard {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        SignInGuard::new(cores)
    }
}

impl SignInGuard {
    /// A guard running at most `parallel` password checks at once.
    pub fn new(parallel: usize) -> SignInGuard {
        SignInGuard {
            hashing: Arc::new(Semaphore::new(parallel.max(1))),
            accounts: Attempts::new(FREE_PER_ACCOUNT),
            addresses: Attempts::new(FREE_PER_ADDRESS),
        }
    }

    /// A 429 if the account or the address is blocked (checked before any hashing).
    pub fn admit(&self, account: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        self.admit_keys(Some(account), address)
    }

    /// [`SignInGuard::admit`] for a sign-in that names no account before it succeeds (single sign-on's
    /// callback): the address alone.
    pub fn admit_address(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        self.admit_keys(None, address)
    }

    /// [`SignInGuard::record`] for the address alone.
    pub fn record_address(&self, address: Option<IpAddr>, ok: bool) {
        if let (Some(a), false) = (address, ok) {
            self.addresses.failed(&a.to_string(), Instant::now());
        }
    }

    fn admit_keys(&self, account: Option<&str>, address: Option<IpAddr>) -> Result<(), ApiError> {
        let now = Instant::now();
        let address_key = address.map(|a| a.to_string());
        let wait = [(account, &self.accounts), (address_key.as_deref(), &self.addresses)]
            .into_iter()
            .filter_map(|(key, table)| table.check(key?, now).err())
            .max();
        match wait {
            None => Ok(()),
            Some(wait) => {
                let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
                let mut e = ApiError::new(
                    berth_model::ErrorCode::RateLimited,
                    format!("too many failed sign-in attempts; retry in {secs} s"),
                );
                e.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
                Err(e)
            }
        }
    }

    /// Records the outcome of a check for the account and the address.
    pub fn record(&self, account: &str, address: Option<IpAddr>, ok: bool) {
        let now = Instant::now();
        if ok {
            self.accounts.succeeded(account);
            return;
        }
        self.accounts.failed(account, now);
        if let Some(a) = address {
            self.addresses.failed(&a.to_string(), now);
        }
    }

    /// Runs `work` (a password hash or check) on the blocking pool if a slot is free, else a 503 at once.
    pub async fn hash<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let Ok(permit) = Arc::clone(&self.hashing).try_acquire_owned() else {
            let mut e = ApiError::new(
                berth_model::ErrorCode::Busy,
                "too many sign-ins are being checked right now; retry in a second",
            );
            e.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(e);
        };
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(ApiError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_free_ones_block_with_doubling_waits() {
        let a = Attempts::new(2);
        let t0 = Instant::now();
        a.failed("x", t0);
        a.failed("x", t0);
        assert!(a.check("x", t0).is_ok(), "two free failures");
        a.failed("x", t0);
        assert_eq!(a.check("x", t0), Err(Duration::from_secs(1)), "the 3rd blocks 1 s");
        assert!(a.check("x", t0 + Duration::from_secs(1)).is_ok());
        a.failed("x", t0 + Duration::from_secs(1));
        assert_eq!(a.check("x", t0 + Duration::from_secs(1)), Err(Duration::from_secs(2)), "then 2 s");
        assert!(a.check("y", t0).is_ok(), "per key");
        a.succeeded("x");
        assert!(a.check("x", t0 + Duration::from_secs(1)).is_ok(), "a success clears it");
        // Forgotten after a quiet quarter hour.
        for _ in 0..10 {
            a.failed("z", t0);
        }
        a.failed("z", t0 + MAX_BLOCK + Duration::from_secs(1));
        assert!(a.check("z", t0 + MAX_BLOCK + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn blocks_are_capped() {
        let a = Attempts::new(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            a.failed("x", t0);
        }
        assert_eq!(a.check("x", t0), Err(MAX_BLOCK));
    }

    #[tokio::test]
    async fn hashing_beyond_the_pool_is_refused_at_once() {
        let guard = Arc::new(SignInGuard::new(1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let g = Arc::clone(&guard);
        let busy = tokio::spawn(async move { g.hash(move || rx.recv().is_ok()).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = guard.hash(|| true).await.err().map(|e| e.status);
        assert_eq!(refused, Some(axum::http::StatusCode::SERVICE_UNAVAILABLE));
        tx.send(()).expect("release");
        assert!(busy.await.expect("joined").expect("ran"));
        assert!(guard.hash(|| true).await.expect("a slot again"));
    }
}
