//! An index derived from the catalog, kept with the state it reflects and caught up when an answer asks for a
//! later state (the deployments index, the Backstage index). Cheap to hold: the state it keeps shares
//! everything but what changed since with the published one.

use std::sync::RwLock;

use berth_engine::State;

/// An index that can be built from a state and moved from one version of it to a later one.
pub trait Derived {
    fn build(state: &State) -> Self;
    fn catch_up(&mut self, older: &State, newer: &State);
}

/// One index kept with the state it reflects. Answers read it together (a read lock); only a catch-up or
/// a build holds it alone.
pub struct Kept<I> {
    inner: RwLock<Option<(State, I)>>,
}

impl<I> Default for Kept<I> {
    fn default() -> Self {
        Kept { inner: RwLock::new(None) }
    }
}

impl<I: Derived> Kept<I> {
    pub fn new() -> Kept<I> {
        Kept::default()
    }

    /// Runs `answer` on the index caught up to `state` (or to a later state another answer caught it up to:
    /// then with that state, so the index and the entities it names agree).
    pub fn with<R>(&self, state: &State, answer: impl FnOnce(&I, &State) -> R) -> R {
        loop {
            // Only a panic under the write lock poisons it; the write path below rebuilds then.
            if let Ok(kept) = self.inner.read() {
                if let Some((at, index)) = kept.as_ref().filter(|(at, _)| at.seq() >= state.seq()) {
                    return answer(index, at);
                }
            }
            let mut kept = self.inner.write().unwrap_or_else(|poisoned| {
                // A catch-up that panicked may have left the index half moved: build it again.
                self.inner.clear_poison();
                let mut guard = poisoned.into_inner();
                *guard = None;
                guard
            });
            match kept.as_mut() {
                Some((at, index)) if at.seq() < state.seq() => {
                    index.catch_up(at, state);
                    *at = state.clone();
                }
                Some(_) => {}
                None => *kept = Some((state.clone(), I::build(state))),
            }
        }
    }

    /// The sequence number the index reflects (0 before the first answer).
    pub fn seq(&self) -> u64 {
        self.inner.read().map(|k| k.as_ref().map_or(0, |(s, _)| s.seq())).unwrap_or(0)
    }
}
