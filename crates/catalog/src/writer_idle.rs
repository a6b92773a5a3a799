//! The time the writer has waited for work: how busy writes keep it, for whoever yields to them (the
//! delivery workers, `berth_delivery::yielding`). Sampled twice, `1 - idle / elapsed` is the share of the time
//! the writer had a write to do (executing it, appending it, or answering it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The writer's idle time: what its finished waits add up to, and when the wait under way began.
#[derive(Default)]
pub(crate) struct Idle {
    waits: Mutex<(Duration, Option<Instant>)>,
}

impl Idle {
    /// The writer starts waiting for work.
    pub(crate) fn begin(&self) {
        if let Ok(mut w) = self.waits.lock() {
            w.1 = Some(Instant::now());
        }
    }

    /// The writer has work again.
    pub(crate) fn end(&self) {
        if let Ok(mut w) = self.waits.lock() {
            if let Some(since) = w.1.take() {
                w.0 += since.elapsed();
            }
        }
    }

    /// The time spent waiting so far, the wait under way included.
    pub(crate) fn total(&self) -> Duration {
        self.waits.lock().map(|w| w.0 + w.1.map_or(Duration::ZERO, |since| since.elapsed())).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_under_way_counts_and_finished_waits_add_up() {
        let idle = Idle::default();
        assert_eq!(idle.total(), Duration::ZERO);
        idle.begin();
        std::thread::sleep(Duration::from_millis(20));
        // Still waiting: counted up to now.
        let during = idle.total();
        assert!(during >= Duration::from_millis(20), "{during:?}");
        idle.end();
        let after = idle.total();
        assert!(after >= during);
        // Busy: the total stands still.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(idle.total(), after);
        // A second wait adds to it; ending without a wait changes nothing.
        idle.begin();
        std::thread::sleep(Duration::from_millis(5));
        idle.end();
        idle.end();
        assert!(idle.total() >= after + Duration::from_millis(5));
    }
}
