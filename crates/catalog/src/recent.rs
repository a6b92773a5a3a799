//! The events this process's writer committed lately, kept decoded in memory for the feed's consumers: a
//! delivery worker that keeps up reads them from here (no store read, no decode, the same `Arc<Event>` for
//! every consumer) and falls back to the store when it is further behind than this window, or when the
//! window has a gap (events another replica wrote, which this one followed from the store).
//!
//! Bounded by count and by encoded size; only events already durable in the log are ever pushed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use berth_model::Event;

/// The most events kept.
const MAX_EVENTS: usize = 100_000;
/// The most encoded bytes kept (the decoded form is a few times larger).
const MAX_BYTES: usize = 32 << 20;

#[derive(Default)]
pub(crate) struct Recent {
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// Consecutive sequence numbers, oldest first, each with its encoded size.
    events: VecDeque<(Arc<Event>, usize)>,
    bytes: usize,
}

impl Recent {
    /// Adds a batch just made durable (consecutive events with their encoded sizes). A batch that does not
    /// follow the window starts it anew.
    pub(crate) fn push(&self, events: impl IntoIterator<Item = (Event, usize)>) {
        let Ok(mut w) = self.window.lock() else { return };
        for (event, size) in events {
            let follows = w.events.back().is_none_or(|(last, _)| last.seq + 1 == event.seq);
            if !follows {
                w.events.clear();
                w.bytes = 0;
            }
            w.bytes += size;
            w.events.push_back((Arc::new(event), size));
        }
        while w.events.len() > MAX_EVENTS || (w.bytes > MAX_BYTES && w.events.len() > 1) {
            if let Some((_, size)) = w.events.pop_front() {
                w.bytes -= size;
            }
        }
    }

    /// Up to `limit` events after `after`, if the window holds the next one (`None`: read the store).
    pub(crate) fn after(&self, after: u64, limit: usize) -> Option<Vec<Arc<Event>>> {
        let w = self.window.lock().ok()?;
        let first = w.events.front()?.0.seq;
        let last = w.events.back()?.0.seq;
        if after + 1 < first || after >= last {
            return None;
        }
        let start = (after + 1 - first) as usize;
        Some(w.events.range(start..).take(limit).map(|(e, _)| Arc::clone(e)).collect())
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
    fn the_window_answers_only_what_it_holds_without_gaps() {
        let r = Recent::default();
        assert_eq!(seqs(r.after(0, 10)), None, "empty");
        r.push((5..=9).map(event));
        assert_eq!(seqs(r.after(4, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(seqs(r.after(6, 2)), Some(vec![7, 8]));
        assert_eq!(seqs(r.after(3, 10)), None, "6 is older than the window");
        assert_eq!(seqs(r.after(9, 10)), None, "nothing newer");
        // A gap (another replica's events were followed from the store): the window starts again.
        r.push((12..=13).map(event));
        assert_eq!(seqs(r.after(9, 10)), None);
        assert_eq!(seqs(r.after(11, 10)), Some(vec![12, 13]));
    }

    #[test]
    fn the_window_is_bounded() {
        let r = Recent::default();
        r.push((1..=(MAX_EVENTS as u64 + 10)).map(event));
        assert_eq!(seqs(r.after(0, 1)), None, "the oldest left");
        assert_eq!(seqs(r.after(10, 1)), Some(vec![11]));
        let big = Recent::default();
        big.push((1..=3).map(|s| (event(s).0, MAX_BYTES / 2)));
        assert_eq!(seqs(big.after(1, 10)), Some(vec![2, 3]), "two halves fit, three do not");
        assert_eq!(seqs(big.after(0, 10)), None);
    }
}
