//! Berth's catalog layer: everything between the pure engine and store below and the frontends above (the
//! HTTP API, the web UI, and the workers to come), with no HTTP in it.
//!
//! - [`pipeline`]: the write pipeline ([`Pipeline`]): one writer group-commits commands to the log and
//!   publishes the new state; it follows other replicas' writes and writes snapshots. Nothing else in
//!   Berth appends to the log.
//! - [`feed`]: the log read forward from a position, and [`feed::Consumer`], a position shared by replicas
//!   through a cursor lease; what leaves the process is the public event form (`berth_model::public`).
//! - [`now`]: the clock every write and every read's time-based rule uses.
//! - `testing` (feature `testing`): a store with injected failures and counted reads, for unit tests.
//!
//! Frontends read through the caller's scoped view of the published state (`berth_engine::scoped`) and
//! write through the pipeline.

pub mod feed;
pub mod pipeline;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use pipeline::{Pipeline, PipelineError};

use berth_model::Timestamp;

/// The current time, in milliseconds (the only clock the catalog layer and its frontends read).
pub fn now() -> Timestamp {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    Timestamp::from_millis(ms)
}
