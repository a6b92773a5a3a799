//! The store as the server uses it: every call timed and its errors counted in [`crate::metrics`], then
//! passed on unchanged. `wait_for` (a long poll that waits on purpose) is passed on without timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_store::{BoxFuture, LogStore, Snapshot, StoreError, StoredEvent};

use crate::metrics::Metrics;

pub struct MeteredStore {
    inner: Arc<dyn LogStore>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn LogStore>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }
}

/// Times `call` as `operation`.
fn timed<'a, T: Send + 'a>(
    metrics: &'a Metrics,
    operation: &'static str,
    call: BoxFuture<'a, Result<T, StoreError>>,
) -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(async move {
        let started = Instant::now();
        let result = call.await;
        metrics.store_call(operation, started.elapsed(), result.is_ok());
        result
    })
}

impl LogStore for MeteredStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn head(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        timed(&self.metrics, "head", self.inner.head())
    }

    fn append(&self, expected_head: u64, events: Vec<Vec<u8>>) -> BoxFuture<'_, Result<u64, StoreError>> {
        timed(&self.metrics, "append", self.inner.append(expected_head, events))
    }

    fn append_blocking(&self, expected_head: u64, events: &[Vec<u8>]) -> Option<Result<u64, StoreError>> {
        let started = Instant::now();
        let result = self.inner.append_blocking(expected_head, events)?;
        self.metrics.store_call("append", started.elapsed(), result.is_ok());
        Some(result)
    }

    fn read_from(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        timed(&self.metrics, "read_from", self.inner.read_from(after, limit))
    }

    fn read_before(&self, before: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        timed(&self.metrics, "read_before", self.inner.read_before(before, limit))
    }

    fn read_seqs(&self, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        timed(&self.metrics, "read_seqs", self.inner.read_seqs(seqs))
    }

    fn wait_for(&self, after: u64, timeout: Duration) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.wait_for(after, timeout)
    }

    fn save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>> {
        timed(&self.metrics, "save_snapshot", self.inner.save_snapshot(snapshot))
    }

    fn load_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, StoreError>> {
        timed(&self.metrics, "load_snapshot", self.inner.load_snapshot())
    }

    fn get_cursor(&self, name: &str) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        timed(&self.metrics, "get_cursor", self.inner.get_cursor(name))
    }

    fn set_cursor(&self, name: &str, seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        timed(&self.metrics, "set_cursor", self.inner.set_cursor(name, seq))
    }

    fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        timed(&self.metrics, "take_lease", self.inner.take_lease(name, holder, ttl))
    }

    fn release_lease(&self, name: &str, holder: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        timed(&self.metrics, "release_lease", self.inner.release_lease(name, holder))
    }

    fn set_cursor_leased(
        &self,
        name: &str,
        holder: &str,
        token: u64,
        seq: u64,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        timed(&self.metrics, "set_cursor_leased", self.inner.set_cursor_leased(name, holder, token, seq))
    }
}
