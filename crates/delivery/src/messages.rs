//! Each change's message, built once for every subscription that delivers it: the public change (what the
//! filters read), the key, and the body without the subscription's own identifier
//! ([`berth_model::subscription::message_body`]). Workers that keep up ask for the same changes within
//! moments of each other; the most recent are kept, up to [`KEPT`] messages and [`KEPT_BYTES`] of bodies: as
//! many as the feed keeps decoded in memory, so that a worker that fell behind (a slow webhook on a full
//! machine) pays no more per message than one that keeps up, rather than building every message again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use berth_model::Event;
use berth_model::public::PublicChange;
use berth_model::subscription;

/// The most built messages kept, and the most bytes of their bodies.
const KEPT: usize = 100_000;
const KEPT_BYTES: usize = 48 << 20;

/// One change, ready to send.
pub(crate) struct Built {
    pub event: Arc<Event>,
    pub change: PublicChange,
    /// `blueprint/entity` (or the resource and its identifier): what Kafka partitions by.
    pub key: Arc<str>,
    pub body: Vec<u8>,
}

impl Built {
    fn new(event: &Arc<Event>) -> Built {
        let change = berth_model::public::change_head(event);
        let key = format!(
            "{}/{}",
            change.blueprint.as_deref().unwrap_or(change.resource),
            change.identifier.as_deref().unwrap_or("")
        );
        let body = subscription::message_body(event, &change);
        Built { event: Arc::clone(event), change, key: key.into(), body }
    }
}

#[derive(Default)]
pub(crate) struct Messages {
    built: Mutex<Kept>,
}

/// The kept messages by sequence number, and their bodies' bytes.
#[derive(Default)]
struct Kept {
    by_seq: BTreeMap<u64, Arc<Built>>,
    bytes: usize,
}

impl Messages {
    /// The messages of these events, in their order (built here for those no worker asked for yet, outside
    /// the lock).
    pub(crate) fn of(&self, events: &[Arc<Event>]) -> Vec<Arc<Built>> {
        let mut found: Vec<Option<Arc<Built>>> = match self.built.lock() {
            Ok(built) => events.iter().map(|e| built.by_seq.get(&e.seq).cloned()).collect(),
            Err(_) => vec![None; events.len()],
        };
        let mut made = Vec::new();
        for (slot, event) in found.iter_mut().zip(events) {
            if slot.is_none() {
                let b = Arc::new(Built::new(event));
                made.push((event.seq, Arc::clone(&b)));
                *slot = Some(b);
            }
        }
        if !made.is_empty() {
            if let Ok(mut built) = self.built.lock() {
                for (seq, b) in made {
                    let size = b.body.len();
                    if let Some(old) = built.by_seq.insert(seq, b) {
                        built.bytes -= old.body.len();
                    }
                    built.bytes += size;
                }
                while built.by_seq.len() > KEPT || built.bytes > KEPT_BYTES {
                    let Some((_, old)) = built.by_seq.pop_first() else { break };
                    built.bytes -= old.body.len();
                }
            }
        }
        found.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Arc<Event> {
        event_with(seq, serde_json::json!({}))
    }

    fn event_with(seq: u64, properties: serde_json::Value) -> Arc<Event> {
        let entity: berth_model::Entity =
            serde_json::from_value(serde_json::json!({"identifier": format!("e{seq}"), "blueprint": "service",
                "properties": properties,
                "createdAt": "2026-01-01T00:00:00.000Z", "createdBy": "a",
                "updatedAt": "2026-01-01T00:00:00.000Z", "updatedBy": "a"}))
            .expect("entity");
        Arc::new(Event {
            seq,
            time: berth_model::Timestamp::from_millis(seq as i64),
            actor: "t".into(),
            origin: berth_model::Origin::Api,
            run_id: None,
            change: berth_model::Change::EntityPut { entity: entity.into() },
            before: None,
        })
    }

    #[test]
    fn a_message_is_built_once_and_the_oldest_are_let_go() {
        let m = Messages::default();
        let events: Vec<Arc<Event>> = (1..=3).map(event).collect();
        let first = m.of(&events);
        assert_eq!(first.iter().map(|b| &*b.key).collect::<Vec<_>>(), vec!["service/e1", "service/e2", "service/e3"]);
        let again = m.of(&events[1..]);
        assert!(Arc::ptr_eq(&first[1], &again[0]) && Arc::ptr_eq(&first[2], &again[1]), "shared, not rebuilt");
        let many: Vec<Arc<Event>> = (4..=(KEPT as u64 + 3)).map(event).collect();
        m.of(&many);
        assert!(!Arc::ptr_eq(&m.of(&events[..1])[0], &first[0]), "the oldest was let go");
        let kept = m.built.lock().expect("lock");
        assert_eq!(kept.by_seq.len(), KEPT);
        assert_eq!(kept.bytes, kept.by_seq.values().map(|b| b.body.len()).sum::<usize>(), "the bytes counted");
    }

    #[test]
    fn the_kept_bodies_are_bounded_by_their_bytes() {
        // Bodies large enough that the bytes, not the count, bound what is kept.
        let big = |seq| event_with(seq, serde_json::json!({"readme": "x".repeat(4_000)}));
        let m = Messages::default();
        let size = m.of(&[big(1)])[0].body.len();
        let fit = KEPT_BYTES / size;
        assert!(fit < KEPT);
        let many: Vec<Arc<Event>> = (2..=(fit as u64 + 50)).map(big).collect();
        m.of(&many);
        let kept = m.built.lock().expect("lock");
        assert!(kept.bytes <= KEPT_BYTES && kept.bytes + 2 * size > KEPT_BYTES, "{} bytes kept", kept.bytes);
        assert_eq!(kept.by_seq.last_key_value().map(|(s, _)| *s), Some(fit as u64 + 50), "the newest are kept");
    }
}
