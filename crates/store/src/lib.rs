//! The change log's storage: a small interface ([`LogStore`]) and its backends.
//!
//! A store knows nothing of blueprints or entities: it keeps an ordered list of opaque events numbered
//! 1, 2, 3, ... (the sequence), the newest snapshot, and named cursors with leases (one holder at a time, so
//! several replicas can share a delivery cursor). Everything else is the engine's.
//! - [`LogStore::append`] is compare-and-append: it succeeds only when the caller's expected head is the
//!   store's head, and it returns only once the events are durable.
//! - [`conformance`] is the test suite every backend must pass.
//! - [`sqlite`] is the embedded default backend (one file, WAL); [`postgres`] and [`redis`] serve many
//!   replicas on one database.

pub mod conformance;
mod head_watch;
pub mod postgres;
pub mod redis;
pub mod sqlite;
pub mod tls;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use thiserror::Error;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One stored event: its sequence number and its bytes (the engine's JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// A snapshot: the state after event `seq`, as the engine serialised it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    pub data: Vec<u8>,
}

#[derive(Debug, Error)]
pub enum StoreError {
    /// Another writer appended first: the store's head is `actual`, not the expected one.
    #[error("append conflict: expected head {expected}, store is at {actual}")]
    Conflict { expected: u64, actual: u64 },
    /// The backend cannot be reached or failed; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data is not what it must be (a gap in the log, a snapshot ahead of the log, ...).
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// A bad argument (a URL that names no backend, ...).
    #[error("{0}")]
    Config(String),
    /// An append failed in a way that leaves it undecided: the store may still apply it (a request that may
    /// yet reach it, or one it is still running), so reading the log back now cannot prove it was not
    /// applied, only that it was.
    #[error("store unavailable, append undecided: {0}")]
    Undecided(String),
}

/// The most sequence numbers one [`LogStore::read_seqs`] call reads.
pub const MAX_READ_SEQS: usize = 1_000;

/// The log interface every backend implements.
pub trait LogStore: Send + Sync + 'static {
    /// A human-readable description (kind and location, without secrets).
    fn describe(&self) -> String;

    /// The sequence number of the newest event (0 when empty).
    fn head(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Appends `events` as `expected_head + 1 ..`, only if the head is `expected_head`; returns the new head
    /// once the events are durable.
    fn append(&self, expected_head: u64, events: Vec<Vec<u8>>) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// [`LogStore::append`] on the calling thread, for a store whose append is a local blocking call (an
    /// embedded database): the writer then makes a batch durable on the thread that executed it, without
    /// handing it to another thread and waiting for that thread to be scheduled. `None`: this store only
    /// appends asynchronously (over a network). Blocks; call it off the async runtime's worker threads.
    fn append_blocking(&self, expected_head: u64, events: &[Vec<u8>]) -> Option<Result<u64, StoreError>> {
        let _ = (expected_head, events);
        None
    }

    /// Events with a sequence number greater than `after`, in order, at most `limit` of them.
    fn read_from(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// Events with a sequence number smaller than `before`, newest first, at most `limit` of them (the audit
    /// log reads the log backwards).
    fn read_before(&self, before: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// The events with these sequence numbers (those that exist, at most [`MAX_READ_SEQS`] asked at once), in
    /// the order asked: one entity's versions, read through the catalog's version index.
    fn read_seqs(&self, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(seqs.len());
            for seq in seqs.into_iter().take(MAX_READ_SEQS) {
                if let Some(e) = self.read_from(seq.saturating_sub(1), 1).await?.into_iter().find(|e| e.seq == seq) {
                    out.push(e);
                }
            }
            Ok(out)
        })
    }

    /// Waits until the head is greater than `after` or `timeout` passes; returns the head.
    fn wait_for(&self, after: u64, timeout: Duration) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Stores a snapshot, unless the stored one is newer (replicas may race to save theirs). A snapshot ahead
    /// of the log is refused.
    fn save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The newest snapshot, if any.
    fn load_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, StoreError>>;

    /// A named cursor's position (for delivery workers).
    fn get_cursor(&self, name: &str) -> BoxFuture<'_, Result<Option<u64>, StoreError>>;

    /// Moves a named cursor.
    fn set_cursor(&self, name: &str, seq: u64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Takes or renews the lease on the named cursor for `holder`, for `ttl` from now (the store's clock, so
    /// replicas' clocks need not agree): answers the lease's fencing token, or `None` while another holder's
    /// lease runs. The token grows each time the lease changes hands and stays the same on a renewal; a
    /// holder that lost its lease (it paused past `ttl` and another took over) cannot move the cursor with
    /// its old token ([`LogStore::set_cursor_leased`]).
    fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<Option<u64>, StoreError>>;

    /// Ends `holder`'s lease on the named cursor at once (nothing happens if another holds it).
    fn release_lease(&self, name: &str, holder: &str) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Moves the named cursor only while `holder` holds its lease with fencing token `token` (its lease may
    /// have run out, as long as nobody took it over); answers whether it moved.
    fn set_cursor_leased(
        &self,
        name: &str,
        holder: &str,
        token: u64,
        seq: u64,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
}

/// The longest lease a holder may ask for, and the longest holder name.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
pub const MAX_HOLDER_LEN: usize = 200;

/// Checks a lease request's arguments (the same limits for every backend).
pub fn check_lease(holder: &str, ttl: Duration) -> Result<i64, StoreError> {
    if holder.is_empty() || holder.len() > MAX_HOLDER_LEN {
        return Err(StoreError::Config(format!("a lease holder's name is 1 to {MAX_HOLDER_LEN} bytes")));
    }
    if ttl.is_zero() || ttl > MAX_LEASE {
        return Err(StoreError::Config(format!("a lease lasts more than 0 and at most {} s", MAX_LEASE.as_secs())));
    }
    Ok(ttl.as_millis() as i64)
}

/// Opens a store from a URL: `sqlite://PATH` (or a plain path), `postgres://...` / `postgresql://...`
/// (`?schema=NAME`), `redis://...` / `rediss://...` (`?prefix=NAME`).
pub async fn open(url: &str) -> Result<Box<dyn LogStore>, StoreError> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("sqlite") => {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            Ok(Box::new(sqlite::SqliteStore::open(std::path::Path::new(path))?))
        }
        Some("postgres" | "postgresql") => Ok(Box::new(postgres::PostgresStore::open(url).await?)),
        Some("redis" | "rediss") => Ok(Box::new(redis::RedisStore::open(url).await?)),
        Some(other) => Err(StoreError::Config(format!(
            "store URL scheme `{other}` is not supported (use sqlite://PATH, postgres://... or redis://...)"
        ))),
        None => Ok(Box::new(sqlite::SqliteStore::open(std::path::Path::new(url))?)),
    }
}
