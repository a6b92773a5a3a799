//! The events this process's writer committed lately, kept decoded in memory for the feed's consumers: a
//! delivery worker that keeps up reads them from here (no store read, no decode, the same `Arc<Event>` for
//! every consumer) and falls back to the store when it is further behind than this window, or when the
//! window has a gap (events another replica wrote, which this one followed from the store).
//!
//! Bounded by count and by encoded size; only events already durable in the log are ever pushed. Kept only
//! while someone reads the feed: after [`IDLE`] without a read, pushes stop and the window empties (a
//! catalog without subscriptions holds no events in memory for it).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use berth_model::Event;

/// The most events kept.
const MAX_EVENTS: usize = 100_000;
/// The most encoded bytes kept (the decoded form is a few times larger).
const MAX_BYTES: usize = 32 << 20;
/// How long the window is kept without a read.
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) struct Recent {
    window: Mutex<Window>,
    /// Milliseconds from `epoch` to the last read (0: none yet).
    read_at: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent { window: Mutex::default(), read_at: Default::default(), epoch: std::time::Instant::now() }
    }
}

/// One batch the writer made durable: consecutive events.
struct Batch {
    events: Vec<Arc<Event>>,
    bytes: usize,
}

impl Batch {
    fn first(&self) -> u64 {
        self.events.first().map_or(0, |e| e.seq)
    }
    fn last(&self) -> u64 {
        self.events.last().map_or(0, |e| e.seq)
    }
}

/// Whole batches, oldest first, consecutive: the lock is held to add one or to clone a few `Arc`s, never
/// to copy events (a reader slices outside it), so a reader the scheduler preempts cannot hold the writer
/// up for long.
#[derive(Default)]
struct Window {
    batches: VecDeque<Arc<Batch>>,
    events: usize,
    bytes: usize,
}

impl Recent {
    /// Adds a batch just made durable (consecutive events with their encoded sizes). A batch that does not
    /// follow the window starts it anew.
    pub(crate) fn push(&self, events: impl IntoIterator<Item = (Event, usize)>) {
        let read_at = self.read_at.load(std::sync::atomic::Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        if read_at == 0 || now.saturating_sub(read_at) > IDLE.as_millis() as u64 {
            // Nobody reads: keep nothing (what was kept is let go here, once).
            if let Ok(mut w) = self.window.lock() {
                if !w.batches.is_empty() {
                    let old = std::mem::take(&mut *w);
                    drop(w);
                    drop(old);
                }
            }
            return;
        }
        let mut bytes = 0;
        let events: Vec<Arc<Event>> = events
            .into_iter()
            .map(|(e, size)| {
                bytes += size;
                Arc::new(e)
            })
            .collect();
        let consecutive = events.windows(2).all(|w| w[0].seq + 1 == w[1].seq);
        let batch = Arc::new(Batch { events, bytes });
        // Let go of outside the lock (the events' last owner may be here).
        let mut evicted = Vec::new();
        {
            let Ok(mut w) = self.window.lock() else { return };
            let follows = w.batches.back().is_none_or(|last| last.last() + 1 == batch.first());
            if !follows || !consecutive || batch.events.is_empty() {
                evicted.extend(w.batches.drain(..));
                w.events = 0;
                w.bytes = 0;
            }
            if consecutive && !batch.events.is_empty() {
                w.events += batch.events.len();
                w.bytes += batch.bytes;
                w.batches.push_back(batch);
            }
            while w.batches.len() > 1 && (w.events > MAX_EVENTS || w.bytes > MAX_BYTES) {
                if let Some(old) = w.batches.pop_front() {
                    w.events -= old.events.len();
                    w.bytes -= old.bytes;
                    evicted.push(old);
                }
            }
        }
        drop(evicted);
    }

    /// Up to `limit` events after `after`, if the window holds the next one (`None`: read the store).
    pub(crate) fn after(&self, after: u64, limit: usize) -> Option<Vec<Arc<Event>>> {
        let now = (self.epoch.elapsed().as_millis() as u64).max(1);
        self.read_at.store(now, std::sync::atomic::Ordering::Relaxed);
        let batches: Vec<Arc<Batch>> = {
            let w = self.window.lock().ok()?;
            let first = w.batches.front()?.first();
            let last = w.batches.back()?.last();
            if after + 1 < first || after >= last {
                return None;
            }
            // The batch holding `after + 1`, and those after it until `limit` events.
            let start = w.batches.partition_point(|b| b.last() <= after);
            let mut taken = 0;
            w.batches
                .range(start..)
                .take_while(|b| {
                    let more = taken < limit;
                    taken += b.events.len();
                    more
                })
                .cloned()
                .collect()
        };
        Some(batches.iter().flat_map(|b| b.events.iter()).skip_while(|e| e.seq <= after).take(limit).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> (Event, usize) {
        let e = Event {
            seq,
            time: berth_model::Timestamp::from_millis(seq as i64),
            actor: "t".into(),
            origin: berth_model::Origin::Api,
            run_id: None,
            change: berth_model::Change::TeamDeleted { name: format!("t{seq}") },
            before: None,
        };
        (e, 100)
    }

    fn seqs(events: Option<Vec<Arc<Event>>>) -> Option<Vec<u64>> {
        events.map(|v| v.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn nothing_is_kept_until_someone_reads() {
        let r = Recent::default();
        r.push((1..=3).map(event));
        assert_eq!(seqs(r.after(0, 10)), None, "no reader yet: nothing kept");
        r.push((4..=5).map(event));
        assert_eq!(seqs(r.after(3, 10)), Some(vec![4, 5]), "kept once read");
    }

    #[test]
    fn the_window_answers_only_what_it_holds_without_gaps() {
        let r = Recent::default();
        assert_eq!(seqs(r.after(0, 10)), None, "empty");
        r.push((5..=9).map(event));
        assert_eq!(seqs(r.after(4, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(seqs(r.after(6, 2)), Some(vec![7, 8]));
        assert_eq!(seqs(r.after(3, 10)), None, "4 is older than the window");
        assert_eq!(seqs(r.after(9, 10)), None, "nothing newer");
        // A gap (another replica's events were followed from the store): the window starts again.
        r.push((12..=13).map(event));
        assert_eq!(seqs(r.after(9, 10)), None);
        assert_eq!(seqs(r.after(11, 10)), Some(vec![12, 13]));
    }

    #[test]
    fn the_window_is_bounded() {
        let r = Recent::default();
        r.after(0, 1);
        for from in (1..=(MAX_EVENTS as u64 + 10)).step_by(10) {
            r.push((from..from + 10).map(event));
        }
        assert_eq!(seqs(r.after(0, 1)), None, "the oldest left");
        assert_eq!(seqs(r.after(20, 1)), Some(vec![21]));
        assert_eq!(seqs(r.after(25, 12)), Some((26..=37).collect()), "across batches");
        let big = Recent::default();
        big.after(0, 1);
        for seq in 1..=3 {
            big.push([(event(seq).0, MAX_BYTES / 2)]);
        }
        assert_eq!(seqs(big.after(1, 10)), Some(vec![2, 3]), "two halves fit, three do not");
        assert_eq!(seqs(big.after(0, 10)), None);
    }
}
