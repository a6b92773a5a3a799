//! Writes first: while the writer is busy, each delivery worker works a twentieth of the time.
//!
//! Delivery shares the machine with the writes it delivers, and on a small machine with the brokers and
//! consumers it feeds. The workers run at the lowest priority (nice 19), but what they make the brokers do
//! does not: under a burst of writes (a bulk import, a migration) delivering at full speed takes CPU the
//! writes would use. So while the writer has had a write to do at least [`BUSY`] of the time (sampled over
//! the last [`WINDOW`] or more, [`Pipeline::writer_idle`]), a worker rests after each page [`REST_FACTOR`]
//! times as long as the page took, at most [`MAX_REST`] (as PostgreSQL's autovacuum rests by its cost
//! delay): delivery, and the brokers' work it causes, take about a twentieth of what they would, and the lag
//! grows while the burst lasts, then drains.
//!
//! A worker whose page's newest change is older than the bound (`--delivery-yield-for`, see
//! [`crate::Config::yield_for`]) does not rest, so under writes that never let up a change waits about that
//! long more than it would, not without end; a bound of zero turns yielding off. Writes at a steady pace
//! leave the writer idle most of the time (at 20,000 entities/s in writes of 200 it is busy 29-43 % of the
//! time on the project's 2-core machine, where one client writing as fast as it can keeps it busy 92-95 %),
//! so outside bursts delivery's latency is untouched by this.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_catalog::Pipeline;
use berth_model::Timestamp;

/// The share of the time the writer has a write to do from which delivery yields.
pub(crate) const BUSY: f64 = 0.85;
/// The shortest time over which the writer's share is measured.
pub(crate) const WINDOW: Duration = Duration::from_millis(250);
/// A yielding worker rests this many times as long as its page took: it works a twentieth of the time.
pub(crate) const REST_FACTOR: u32 = 19;
/// The bound servers start with (`--delivery-yield-for`).
pub const DEFAULT_BOUND: Duration = Duration::from_secs(10);
/// The longest rest after one page (a page slowed by a failing destination does not stop delivery for long).
pub(crate) const MAX_REST: Duration = Duration::from_secs(1);

/// The writer's load, sampled for every worker of a supervisor.
pub(crate) struct Yielding {
    pipeline: Arc<Pipeline>,
    bound: Duration,
    sample: Mutex<Sample>,
}

struct Sample {
    at: Instant,
    idle: Duration,
    busy: f64,
}

impl Yielding {
    /// Yielding to `pipeline`'s writer, for changes at most `bound` old (zero: never).
    pub(crate) fn new(pipeline: Arc<Pipeline>, bound: Duration) -> Yielding {
        let sample = Sample { at: Instant::now(), idle: pipeline.writer_idle(), busy: 0.0 };
        Yielding { pipeline, bound, sample: Mutex::new(sample) }
    }

    /// The share of the time the writer had a write to do over the last [`WINDOW`] or more (sampled anew
    /// when the last sample is older than that: an idle server samples nothing).
    fn writer_busy(&self) -> f64 {
        let Ok(mut s) = self.sample.lock() else { return 0.0 };
        let since = s.at.elapsed();
        if since >= WINDOW {
            let idle = self.pipeline.writer_idle();
            s.busy = 1.0 - idle.saturating_sub(s.idle).as_secs_f64() / since.as_secs_f64();
            s.at = Instant::now();
            s.idle = idle;
        }
        s.busy
    }

    /// How long a worker rests after a page that took `took` whose newest change was written at `newest`.
    pub(crate) fn rest(&self, took: Duration, newest: Timestamp) -> Duration {
        if self.bound.is_zero() {
            return Duration::ZERO;
        }
        let age = Duration::from_millis(berth_catalog::now().millis().saturating_sub(newest.millis()).max(0) as u64);
        rest_for(took, age, self.writer_busy(), self.bound)
    }
}

/// A page that took `took` whose newest change is `age` old, the writer busy `busy` of the time: the rest
/// (see the module's documentation).
pub(crate) fn rest_for(took: Duration, age: Duration, busy: f64, bound: Duration) -> Duration {
    if bound.is_zero() || age >= bound || busy < BUSY {
        return Duration::ZERO;
    }
    took.saturating_mul(REST_FACTOR).min(MAX_REST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_rests_while_the_writer_is_busy_and_its_changes_are_younger_than_the_bound() {
        let ms = Duration::from_millis;
        let bound = Duration::from_secs(10);
        // Busy writer, young changes: nineteen times the page's time, at most MAX_REST.
        assert_eq!(rest_for(ms(4), ms(100), 0.95, bound), ms(76));
        assert_eq!(rest_for(ms(4), ms(100), BUSY, bound), ms(76));
        assert_eq!(rest_for(ms(200), ms(100), 0.9, bound), MAX_REST);
        // A writer at a steady pace, changes older than the bound, or yielding off: no rest.
        assert_eq!(rest_for(ms(4), ms(100), 0.4, bound), Duration::ZERO);
        assert_eq!(rest_for(ms(4), ms(100), BUSY - 0.01, bound), Duration::ZERO);
        assert_eq!(rest_for(ms(4), bound, 0.9, bound), Duration::ZERO);
        assert_eq!(rest_for(ms(4), ms(20_000), 0.9, bound), Duration::ZERO);
        assert_eq!(rest_for(ms(4), ms(100), 0.9, Duration::ZERO), Duration::ZERO);
        // A page that took nothing rests nothing.
        assert_eq!(rest_for(Duration::ZERO, ms(1), 0.9, bound), Duration::ZERO);
    }
}
