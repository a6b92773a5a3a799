//! The catalog as it was at a past time: the change log replayed into a scratch state, a page at a time on
//! the blocking pool, up to the last event at or before that time. Exact (it is the log), and bounded: at
//! most [`MAX_EVENTS`] events per request.

use berth_engine::State;
use berth_model::Timestamp;

use crate::{Pipeline, ReadError};

/// The most events one replay reads.
pub const MAX_EVENTS: u64 = 5_000_000;
const PAGE: usize = 10_000;

/// Why the past catalog could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the log holds more than {MAX_EVENTS} events: the catalog at a past time would read too much")]
    TooLong,
    #[error("replaying the log failed: {0}")]
    Replay(String),
}

/// The catalog after every event written at or before `at`.
pub async fn state_at(pipeline: &Pipeline, at: Timestamp) -> Result<State, ReplayError> {
    let head = pipeline.view().seq();
    if head > MAX_EVENTS {
        return Err(ReplayError::TooLong);
    }
    let store = pipeline.store();
    let mut state = State::default();
    let mut after = 0u64;
    while after < head {
        let page = store.read_from(after, PAGE).await.map_err(ReadError::from)?;
        if page.is_empty() {
            break;
        }
        let events = page.iter().map(ReadError::decode).collect::<Result<Vec<_>, _>>()?;
        after = events.last().map_or(after, |e| e.seq);
        let (replayed, done) = tokio::task::spawn_blocking(move || -> Result<(State, bool), String> {
            state.defer_indexes();
            let mut done = false;
            for event in events {
                if event.time > at {
                    done = true;
                    break;
                }
                state.apply_owned(event).map_err(|e| e.to_string())?;
            }
            state.settle_indexes().map_err(|e| e.to_string())?;
            Ok((state, done))
        })
        .await
        .map_err(|e| ReplayError::Replay(e.to_string()))?
        .map_err(ReplayError::Replay)?;
        state = replayed;
        if done {
            break;
        }
    }
    Ok(state)
}
