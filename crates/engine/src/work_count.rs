//! How many entities the engine has read on this thread through the paths that keep derived data current:
//! sources found through the relation index (by any caller: a test counts around one write), entities put
//! in a finder's tables, entities whose scorecard marks are judged (a refresh, or a full build of the
//! levels). The engine's tests bound a write's work with it (a write that reads a few dozen entities where it
//! should, and not the catalog, is what keeps derived data within its cost target); outside tests it counts
//! nothing and costs nothing. It also counts searches of the relation index ([`seek`]).

#[cfg(test)]
thread_local! {
    static READ: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts `n` entities read.
#[inline(always)]
pub(crate) fn add(n: usize) {
    #[cfg(test)]
    READ.with(|c| c.set(c.get() + n));
    #[cfg(not(test))]
    let _ = n;
}

/// The entities counted on this thread since the last call, and starts again from zero.
#[cfg(test)]
pub(crate) fn take() -> usize {
    READ.with(|c| c.replace(0))
}

#[cfg(test)]
thread_local! {
    static SEEKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one search of the relation index for an entity's sources (a descent of its tree, whatever it
/// finds).
#[inline(always)]
pub(crate) fn seek() {
    #[cfg(test)]
    SEEKS.with(|c| c.set(c.get() + 1));
}

/// The searches of the relation index counted on this thread since the last call, and starts again.
#[cfg(test)]
pub(crate) fn take_seeks() -> usize {
    SEEKS.with(|c| c.replace(0))
}
