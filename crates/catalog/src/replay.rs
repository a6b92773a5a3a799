//! The catalog as it was at past times: the change log replayed into a scratch state, a page at a time on
//! the blocking pool. Exact (it is the log), and bounded: at most [`MAX_EVENTS`] events per replay, and
//! one replay at a time in the process (a replay is the most expensive read there is; others wait up to
//! [`WAIT`] for their turn, then are told to come back).
//!
//! Used by what is deployed where (`matrix?at=`) and by standards over time (a scorecard's level
//! distribution at the end of each past day).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use berth_engine::State;
use berth_model::Timestamp;
use tokio::sync::Semaphore;

use crate::{Pipeline, ReadError};

/// The most events one replay reads.
pub const MAX_EVENTS: u64 = 5_000_000;
/// How long a replay waits for the one running before it.
pub const WAIT: Duration = Duration::from_secs(30);
const PAGE: usize = 10_000;

static TURN: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(1)));

/// Why the past catalog could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the log holds more than {MAX_EVENTS} events: the catalog at a past time would read too much")]
    TooLong,
    #[error("another replay of the log is running: try again in a moment")]
    Busy,
    #[error("replaying the log failed: {0}")]
    Replay(String),
}

/// The catalog after every event written at or before `at`.
pub async fn state_at(pipeline: &Pipeline, at: Timestamp) -> Result<State, ReplayError> {
    let mut states = at_each(pipeline, vec![at], |state: &State, _| state.clone()).await?;
    states.pop().ok_or_else(|| ReplayError::Replay("no state".into()))
}

/// `look` at the catalog as it was at each of `ends` (ascending): after every event written at or before
/// that time. Answers in the order of `ends`; the times after the last event see the catalog as it is at
/// the end of the log (as of the replay's start).
pub async fn at_each<T, F>(pipeline: &Pipeline, ends: Vec<Timestamp>, look: F) -> Result<Vec<T>, ReplayError>
where
    T: Send + 'static,
    F: Fn(&State, usize) -> T + Clone + Send + 'static,
{
    let head = pipeline.view().seq();
    if head > MAX_EVENTS {
        return Err(ReplayError::TooLong);
    }
    let _turn = tokio::time::timeout(WAIT, Arc::clone(&TURN).acquire_owned())
        .await
        .map_err(|_| ReplayError::Busy)?
        .map_err(|e| ReplayError::Replay(e.to_string()))?;
    let store = pipeline.store();
    let ends = Arc::new(ends);
    let mut state = State::default();
    let mut out = Vec::with_capacity(ends.len());
    let mut next = 0;
    let mut after = 0u64;
    while after < head && next < ends.len() {
        let page = store.read_from(after, PAGE).await.map_err(ReadError::from)?;
        if page.is_empty() {
            break;
        }
        let events = page.iter().map(ReadError::decode).collect::<Result<Vec<_>, _>>()?;
        after = events.last().map_or(after, |e| e.seq);
        let (ends, look) = (Arc::clone(&ends), look.clone());
        let replayed = tokio::task::spawn_blocking(move || -> Result<(State, Vec<T>, usize), String> {
            let mut seen = Vec::new();
            state.defer_indexes();
            for event in events {
                // Look at every time that ended before this event.
                while next < ends.len() && event.time > ends[next] {
                    state.settle_indexes().map_err(|e| e.to_string())?;
                    seen.push(look(&state, next));
                    next += 1;
                    state.defer_indexes();
                }
                if next == ends.len() {
                    break;
                }
                state.apply_owned(event).map_err(|e| e.to_string())?;
            }
            state.settle_indexes().map_err(|e| e.to_string())?;
            Ok((state, seen, next))
        })
        .await
        .map_err(|e| ReplayError::Replay(e.to_string()))?
        .map_err(ReplayError::Replay)?;
        (state, next) = (replayed.0, replayed.2);
        out.extend(replayed.1);
    }
    let rest = next..ends.len();
    let seen = tokio::task::spawn_blocking(move || rest.map(|i| look(&state, i)).collect::<Vec<T>>())
        .await
        .map_err(|e| ReplayError::Replay(e.to_string()))?;
    out.extend(seen);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_engine::{Command, WriteMeta};
    use berth_model::Timestamp;
    use berth_store::LogStore;
    use serde_json::json;

    use crate::Pipeline;
    use crate::testing::{Failures, TestStore, meta};

    fn at(ms: i64) -> WriteMeta {
        WriteMeta { now: Timestamp::from_millis(ms), ..meta() }
    }

    /// Each time sees exactly the events written at or before it; times past the log see all of it; a
    /// replay waits for the one before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_time_sees_the_catalog_as_it_was_and_replays_take_turns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(TestStore::new(&dir.path().join("log.db"), Failures::None));
        let pipeline = Pipeline::open(store as Arc<dyn LogStore>, 0).await.expect("pipeline");
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let body = json!({"identifier": id, "title": id, "schema": {"properties": {}}});
            let t = 1_000 * (i as i64 + 1);
            pipeline.write_one(at(t), Command::CreateBlueprint { body }).await.expect("w").0.expect("bp");
        }
        let ends: Vec<Timestamp> = [500, 1_000, 2_500, 9_000].map(Timestamp::from_millis).to_vec();
        let counts =
            super::at_each(&pipeline, ends, |s: &berth_engine::State, _| s.blueprints().count()).await.expect("replay");
        assert_eq!(counts, [0, 1, 2, 3]);
        let state = super::state_at(&pipeline, Timestamp::from_millis(2_000)).await.expect("state");
        assert_eq!(state.blueprints().count(), 2);
        // While one replay holds the turn, another waits for it (and gets it once it is free).
        let turn = Arc::clone(&super::TURN).acquire_owned().await.expect("turn");
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            super::state_at(&pipeline, Timestamp::from_millis(9_000)),
        )
        .await;
        assert!(waiting.is_err(), "a second replay waits for the first");
        drop(turn);
        let state = super::state_at(&pipeline, Timestamp::from_millis(9_000)).await.expect("after");
        assert_eq!(state.blueprints().count(), 3);
    }
}
