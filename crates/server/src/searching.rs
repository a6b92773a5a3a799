//! Searches run off the async workers, with a deadline (the security review's H5).
//!
//! A search, count or aggregate can cost as much as the catalog is large. Each runs on the blocking pool
//! (so the runtime's workers keep answering `/healthz`, writes and cheap reads), at most
//! [`MAX_PARALLEL_PER_CORE`] per core at once (others wait their turn, within the deadline), and stops at
//! the deadline ([`berth_engine::search::with_deadline`]): the caller gets a 503 that says so, never a
//! partial answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use tokio::sync::Semaphore;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// How long one search may run (queueing included).
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Searches running at once, per core.
const MAX_PARALLEL_PER_CORE: usize = 2;

/// The slots searches run in.
pub struct SearchSlots(Arc<Semaphore>);

impl Default for SearchSlots {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        SearchSlots(Arc::new(Semaphore::new(cores * MAX_PARALLEL_PER_CORE)))
    }
}

fn too_slow() -> ApiError {
    let mut e = ApiError::new(
        berth_model::ErrorCode::SearchTimeout,
        format!(
            "the search did not finish within {} s; narrow the query (a `$blueprint` rule, an indexed rule such as `$identifier in` or a relation) and retry",
            DEADLINE.as_secs()
        ),
    );
    e.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    e
}

/// Runs `f` on the blocking pool within [`DEADLINE`].
pub async fn run<T: Send + 'static>(app: &AppState, f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    let deadline = Instant::now() + DEADLINE;
    let slot = tokio::time::timeout(DEADLINE, Arc::clone(&app.searches.0).acquire_owned())
        .await
        .map_err(|_| too_slow())?
        .map_err(ApiError::internal)?;
    let out = tokio::task::spawn_blocking(move || {
        let out = berth_engine::search::with_deadline(deadline, f);
        drop(slot);
        out
    })
    .await
    .map_err(ApiError::internal)?;
    out.map_err(|_| too_slow())?
}
