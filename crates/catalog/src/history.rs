//! An entity's past, read from the change log. The catalog's version index ([`berth_engine::State::versions`])
//! names the entity's events, which are read by sequence number, so the cost grows with the entity's
//! versions, not with the log. Only events older than the index (a catalog loaded from a snapshot written by
//! an older Berth) are found by reading the log backwards, at most [`SCAN_BUDGET`] events per request.

use std::sync::Arc;

use berth_engine::access::Principal;
use berth_engine::scoped::Scoped;
use berth_model::{Change, Entity, Event, Timestamp};

use crate::{Pipeline, ReadError};

/// The most events one history request reads.
const SCAN_BUDGET: usize = 1_000_000;
const PAGE: usize = 1_000;

/// One version of an entity: the event that made it, and the entity after it (`None`: deleted).
pub struct Version {
    pub event: Event,
    pub entity: Option<Arc<Entity>>,
}

/// The entity's versions, newest first, from the events before `before`; stops after `limit` versions or
/// when `stop` says so for an event of the entity. Returns the versions and where the scan stopped (`Some`
/// when there is more to read).
pub async fn versions(
    pipeline: &Pipeline,
    blueprint: &str,
    id: &str,
    before: u64,
    limit: usize,
    stop: impl Fn(&Event) -> bool,
) -> Result<(Vec<Version>, Option<u64>), ReadError> {
    versions_since(pipeline, blueprint, id, before, limit, None, stop).await
}

/// How far before an entity's `createdAt` [`versions_since`] still reads (clocks of replicas may disagree a
/// little, so events are not strictly in time order across writers).
pub const CLOCK_SLACK_MS: i64 = 60_000;

/// [`versions`] that stops reading the log at the first event older than `floor` (an entity's `createdAt`
/// minus [`CLOCK_SLACK_MS`]: nothing of its current life is older), so a page about a young entity in a long
/// log reads only the log's tail.
pub async fn versions_since(
    pipeline: &Pipeline,
    blueprint: &str,
    id: &str,
    mut before: u64,
    limit: usize,
    floor: Option<Timestamp>,
    stop: impl Fn(&Event) -> bool,
) -> Result<(Vec<Version>, Option<u64>), ReadError> {
    let store = pipeline.store();
    let mut out = Vec::new();
    // The version index names this entity's events: read just those, newest first, a page at a time. Only
    // the part of the log it does not cover (before `indexed_from`, after a snapshot from an older Berth)
    // is scanned.
    let (indexed, indexed_from) = {
        let view = pipeline.view();
        let (seqs, from) = view.versions(blueprint, id);
        let seqs: Vec<u64> =
            seqs.map(|v| v.seqs().into_iter().rev().filter(|s| *s < before).collect()).unwrap_or_default();
        (seqs, from)
    };
    for page in indexed.chunks(PAGE.min(berth_store::MAX_READ_SEQS)) {
        let events = store.read_seqs(page.to_vec()).await?;
        for stored in events {
            before = stored.seq;
            let event = ReadError::decode(&stored)?;
            if floor.is_some_and(|f| event.time < f) {
                return Ok((out, None));
            }
            let entity = match &event.change {
                Change::EntityPut { entity } => Some(Arc::clone(entity)),
                Change::EntityDeleted { .. } => None,
                _ => continue,
            };
            let done = stop(&event);
            out.push(Version { event, entity });
            if done || out.len() >= limit {
                // More: older indexed versions, or a part of the log the index does not cover.
                let more = indexed.last().is_some_and(|l| *l < before) || indexed_from > 1;
                return Ok((out, more.then_some(before)));
            }
        }
    }
    if indexed_from <= 1 {
        return Ok((out, None));
    }
    before = before.min(indexed_from);
    let mut scanned = 0usize;
    // The identifier as the event's JSON spells it.
    let needle = serde_json::to_string(id).map_err(|e| ReadError::Damaged { seq: 0, message: e.to_string() })?;
    while before > 1 {
        if scanned >= SCAN_BUDGET {
            return Ok((out, Some(before)));
        }
        let page = store.read_before(before, PAGE).await?;
        if page.is_empty() {
            break;
        }
        // The oldest event of the page tells whether the scan passes the floor with it.
        let past_floor = match (floor, page.last()) {
            (Some(f), Some(oldest)) => ReadError::decode(oldest)?.time < f,
            _ => false,
        };
        for stored in page {
            scanned += 1;
            before = stored.seq;
            // Decoding is most of the cost: skip events whose bytes cannot name the entity.
            if !contains(&stored.payload, needle.as_bytes()) {
                continue;
            }
            let event = ReadError::decode(&stored)?;
            let entity = match &event.change {
                Change::EntityPut { entity } if &*entity.blueprint == blueprint && *entity.identifier == *id => {
                    Some(Arc::clone(entity))
                }
                Change::EntityDeleted { blueprint: b, identifier } if b == blueprint && identifier == id => None,
                _ => continue,
            };
            let done = stop(&event);
            out.push(Version { event, entity });
            if done || out.len() >= limit {
                return Ok((out, (before > 1).then_some(before)));
            }
        }
        if past_floor {
            return Ok((out, None));
        }
    }
    Ok((out, None))
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The entity as it was at `at`, if it existed then and `principal` may read that version (`None`
/// otherwise: the same answer for both).
pub async fn entity_at(
    pipeline: &Pipeline,
    principal: Principal,
    blueprint: &str,
    id: &str,
    at: Timestamp,
) -> Result<Option<Arc<Entity>>, ReadError> {
    let view = pipeline.view();
    let (found, _) = versions(pipeline, blueprint, id, view.seq() + 1, usize::MAX, |e| e.time <= at).await?;
    let scoped = Scoped::new(&view, principal, crate::now());
    Ok(match found.into_iter().find(|v| v.event.time <= at) {
        Some(Version { entity: Some(entity), .. }) if scoped.can_read(&entity) => Some(entity),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use berth_engine::Command;
    use berth_store::LogStore;
    use serde_json::json;

    use crate::Pipeline;
    use crate::testing::{Failures, TestStore, meta, upsert};

    /// A pipeline over a counting store: blueprint `s`, 3,000 other entities and three versions of `target`.
    pub(crate) async fn long_log(dir: &std::path::Path) -> (Arc<TestStore>, Arc<Pipeline>) {
        let store = Arc::new(TestStore::new(&dir.join("log.db"), Failures::None));
        let pipeline = Pipeline::open(store.clone() as Arc<dyn LogStore>, 0).await.expect("pipeline");
        let bp = json!({"identifier": "s", "title": "S", "schema": {"properties": {"n": {"type": "number"}}}});
        pipeline.write_one(meta(), Command::CreateBlueprint { body: bp }).await.expect("write").0.expect("bp");
        for round in 0..3 {
            let commands: Vec<Command> =
                (0..1_000).map(|i| upsert(&format!("other-{i}"), json!({"n": round}))).collect();
            pipeline.write(meta(), commands).await.expect("bulk");
            pipeline.write_one(meta(), upsert("target", json!({"n": round}))).await.expect("write").0.expect("target");
        }
        (store, pipeline)
    }

    /// H8: an entity's history reads its own events by sequence number (one read per page), never a scan of
    /// the log, however long the log; a missing entity reads nothing at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_reads_the_entitys_own_events_not_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, pipeline) = long_log(dir.path()).await;
        let head = pipeline.view().seq();
        assert!(head > 3_000);
        let (found, next) = super::versions(&pipeline, "s", "target", head + 1, 100, |_| false).await.expect("history");
        assert_eq!(found.len(), 3);
        assert_eq!(next, None);
        assert_eq!(found[0].entity.as_ref().map(|e| e.properties.get("n").cloned()), Some(Some(json!(2))));
        assert_eq!(store.scans.load(Ordering::SeqCst), 0, "no scan of the log");
        assert_eq!(store.point_reads.load(Ordering::SeqCst), 1, "one read for the page");
        // Paged: the cursor continues where the page stopped.
        let (first, next) = super::versions(&pipeline, "s", "target", head + 1, 2, |_| false).await.expect("page 1");
        assert_eq!(first.len(), 2);
        let next = next.expect("a next page");
        let (rest, last) = super::versions(&pipeline, "s", "target", next, 2, |_| false).await.expect("page 2");
        assert_eq!((rest.len(), last), (1, None));
        // An entity that never existed costs nothing.
        let reads = store.point_reads.load(Ordering::SeqCst);
        let (none, _) = super::versions(&pipeline, "s", "never", head + 1, 100, |_| false).await.expect("history");
        assert!(none.is_empty());
        assert_eq!(store.point_reads.load(Ordering::SeqCst), reads);
        assert_eq!(store.scans.load(Ordering::SeqCst), 0);
    }

    /// The audit log of one entity reads the entity's events by sequence number, not the log backwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_audit_of_one_entity_reads_its_own_events_not_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, pipeline) = long_log(dir.path()).await;
        let admin = berth_engine::access::Principal { id: "a".into(), roles: vec!["Admin".into()], teams: vec![] };
        let filters = crate::audit::Filters { entity: Some("target".into()), ..Default::default() };
        let (records, next) = crate::audit::page(&pipeline, &admin, &filters, None, 100).await.expect("audit");
        assert_eq!(records.len(), 3, "{records:?}");
        assert_eq!(next, None);
        assert_eq!(store.scans.load(Ordering::SeqCst), 0, "no scan of the log");
        assert_eq!(store.point_reads.load(Ordering::SeqCst), 1);
        // Without an entity filter the log is read backwards (bounded per page).
        let filters = crate::audit::Filters { run_id: Some("none".into()), ..Default::default() };
        crate::audit::page(&pipeline, &admin, &filters, None, 100).await.expect("audit");
        assert!(store.scans.load(Ordering::SeqCst) > 0);
    }
}
