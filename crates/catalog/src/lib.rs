//! Berth's catalog layer: everything between the pure engine and store below and the frontends above (the
//! HTTP API, the web UI, and the workers to come), with no HTTP in it.
//!
//! - [`pipeline`]: the write pipeline ([`Pipeline`]): one writer group-commits commands to the log and
//!   publishes the new state; it follows other replicas' writes and writes snapshots. Nothing else in
//!   Berth appends to the log.
//! - [`feed`]: the log read forward from a position, and [`feed::Consumer`], a position shared by replicas
//!   through a cursor lease; what leaves the process is the public event form (`berth_model::public`).
//!   `recent` keeps the events this process committed lately in memory, so the feed's readers that keep
//!   up never read the store.
//! - [`history`]: an entity's versions and the entity at a time, read through the version index.
//! - [`audit`]: the audit log's pages, in the public event form, scoped to the viewer.
//! - [`deployments`]: deployment and incident reports written into the ready model, and the matrix of
//!   what runs where.
//! - [`standards`]: a scorecard's level distribution on past days, replayed from the log.
//! - [`replay`]: the catalog as it was at a past time, replayed from the log.
//! - [`refusals`]: refused requests stopped before the pipeline, recorded in the log in the background.
//! - [`now`]: the clock every write and every read's time-based rule uses.
//! - `testing` (feature `testing`): a store with injected failures and counted reads, for unit tests.
//!
//! Frontends read through the caller's scoped view of the published state (`berth_engine::scoped`) and
//! write through the pipeline.

pub mod audit;
pub mod backstage;
pub mod deployments;
pub mod feed;
pub mod history;
pub mod kept;
pub mod pipeline;
mod recent;
pub mod refusals;
pub mod replay;
pub mod standards;
#[cfg(test)]
mod test_writes;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod writer_idle;
pub mod writer_metrics;

pub use pipeline::{Pipeline, PipelineError};

use berth_model::{Event, Timestamp};
use berth_store::{StoreError, StoredEvent};

/// Why a read of the log failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// An event in the log does not decode: the log is damaged, and the read stops rather than skip it.
    #[error("event {seq} does not decode: {message}")]
    Damaged { seq: u64, message: String },
}

impl ReadError {
    /// Decodes a stored event, or says which one is damaged.
    pub fn decode(stored: &StoredEvent) -> Result<Event, ReadError> {
        berth_engine::decode_event(stored.seq, &stored.payload)
            .map_err(|e| ReadError::Damaged { seq: stored.seq, message: e.to_string() })
    }
}

/// The current time, in milliseconds (the only clock the catalog layer and its frontends read).
pub fn now() -> Timestamp {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    Timestamp::from_millis(ms)
}
