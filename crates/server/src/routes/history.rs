//! An entity's past, read from the change log: its versions (Berth extension), the entity as it was at a
//! time (`?at=` on GET), and Port's `POST /v1/entities/properties-history`. The catalog's version index
//! ([`berth_engine::State::versions`]) names the entity's events, which are read by sequence number, so the
//! cost grows with the entity's versions, not with the log. Only events older than the index (a catalog
//! loaded from a snapshot written by an older Berth) are found by reading the log backwards, at most
//! [`SCAN_BUDGET`] events per request.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::decode_event;
use berth_model::date_preset::{DatePreset, Interval, PRESET_NAMES, buckets};
use berth_model::{Change, DomainError, Entity, Event, Previous, Timestamp};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Params, PathParams};

/// The most events one history request reads.
const SCAN_BUDGET: usize = 1_000_000;
const PAGE: usize = 1_000;

/// One version of an entity: the event that made it, and the entity after it (`None`: deleted).
pub struct Version {
    pub event: Event,
    pub entity: Option<std::sync::Arc<Entity>>,
}

/// The entity's versions, newest first, from the events before `before`; stops after `limit` versions or
/// when `stop` says so for an event of the entity. Returns the versions and where the scan stopped (`Some`
/// when there is more to read).
pub async fn versions(
    app: &AppState,
    blueprint: &str,
    id: &str,
    before: u64,
    limit: usize,
    stop: impl Fn(&Event) -> bool,
) -> ApiResult<(Vec<Version>, Option<u64>)> {
    versions_since(app, blueprint, id, before, limit, None, stop).await
}

/// How far before an entity's `createdAt` [`versions_since`] still reads (clocks of replicas may disagree a
/// little, so events are not strictly in time order across writers).
pub const CLOCK_SLACK_MS: i64 = 60_000;

/// [`versions`] that stops reading the log at the first event older than `floor` (an entity's `createdAt`
/// minus [`CLOCK_SLACK_MS`]: nothing of its current life is older), so a page about a young entity in a long
/// log reads only the log's tail.
pub async fn versions_since(
    app: &AppState,
    blueprint: &str,
    id: &str,
    mut before: u64,
    limit: usize,
    floor: Option<Timestamp>,
    stop: impl Fn(&Event) -> bool,
) -> ApiResult<(Vec<Version>, Option<u64>)> {
    let store = app.pipeline.store();
    let mut out = Vec::new();
    // The version index names this entity's events: read just those, newest first, a page at a time. Only
    // the part of the log it does not cover (before `indexed_from`, after a snapshot from an older Berth)
    // is scanned.
    let (indexed, indexed_from) = {
        let view = app.pipeline.view();
        let (seqs, from) = view.versions(blueprint, id);
        let seqs: Vec<u64> =
            seqs.map(|v| v.seqs().into_iter().rev().filter(|s| *s < before).collect()).unwrap_or_default();
        (seqs, from)
    };
    for page in indexed.chunks(PAGE.min(berth_store::MAX_READ_SEQS)) {
        let events = store.read_seqs(page.to_vec()).await.map_err(|e| ApiError::unavailable(format!("store: {e}")))?;
        for stored in events {
            before = stored.seq;
            let event = decode_event(stored.seq, &stored.payload).map_err(ApiError::internal)?;
            if floor.is_some_and(|f| event.time < f) {
                return Ok((out, None));
            }
            let entity = match &event.change {
                Change::EntityPut { entity } => Some(std::sync::Arc::clone(entity)),
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
    let needle = serde_json::to_string(id).map_err(ApiError::internal)?;
    while before > 1 {
        if scanned >= SCAN_BUDGET {
            return Ok((out, Some(before)));
        }
        let page = store.read_before(before, PAGE).await.map_err(|e| ApiError::unavailable(format!("store: {e}")))?;
        if page.is_empty() {
            break;
        }
        // The oldest event of the page tells whether the scan passes the floor with it.
        let past_floor = match (floor, page.last()) {
            (Some(f), Some(oldest)) => decode_event(oldest.seq, &oldest.payload).map_err(ApiError::internal)?.time < f,
            _ => false,
        };
        for stored in page {
            scanned += 1;
            before = stored.seq;
            // Decoding is most of the cost: skip events whose bytes cannot name the entity.
            if !contains(&stored.payload, needle.as_bytes()) {
                continue;
            }
            let event = decode_event(stored.seq, &stored.payload).map_err(ApiError::internal)?;
            let entity = match &event.change {
                Change::EntityPut { entity } if &*entity.blueprint == blueprint && *entity.identifier == *id => {
                    Some(std::sync::Arc::clone(entity))
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

/// The entity as it was at `at`, or a 404 if it did not exist then or `caller` may not read that version
/// (the same answer).
pub async fn entity_at(
    app: &AppState,
    caller: &Caller,
    blueprint: &str,
    id: &str,
    at: Timestamp,
) -> ApiResult<std::sync::Arc<Entity>> {
    let view = app.pipeline.view();
    let (found, _) = versions(app, blueprint, id, view.seq() + 1, usize::MAX, |e| e.time <= at).await?;
    let scoped = crate::access::scoped(&view, caller);
    match found.into_iter().find(|v| v.event.time <= at) {
        Some(Version { entity: Some(entity), .. }) if scoped.can_read(&entity) => Ok(entity),
        _ => Err(DomainError::not_found("entity", format!("{blueprint}/{id} at {}", at.to_rfc3339())).into()),
    }
}

/// The version before this one, as the event recorded it.
fn previous(v: &Version) -> Option<&Entity> {
    match &v.event.before {
        Some(Previous::Entity { entity }) => Some(&**entity),
        _ => None,
    }
}

/// Whether `caller` may see a version: the entity it left, or for a delete the entity it removed.
fn readable(scoped: &crate::access::Scoped<'_>, v: &Version) -> bool {
    match (&v.entity, previous(v)) {
        (Some(e), _) => scoped.can_read(e),
        (None, Some(old)) => scoped.can_read(old),
        (None, None) => false,
    }
}

/// The top-level fields and `properties.*` / `relations.*` keys that differ between two versions.
pub fn changed_fields(before: Option<&Entity>, after: Option<&Entity>) -> Vec<String> {
    let to_map = |e: Option<&Entity>| match e.map(serde_json::to_value) {
        Some(Ok(Value::Object(m))) => m,
        _ => Map::new(),
    };
    let (b, a) = (to_map(before), to_map(after));
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    for key in keys {
        if matches!(key.as_str(), "updatedAt" | "updatedBy" | "createdAt" | "createdBy") {
            continue;
        }
        match (b.get(key), a.get(key)) {
            (Some(Value::Object(x)), Some(Value::Object(y))) if key == "properties" || key == "relations" => {
                let inner: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                out.extend(inner.into_iter().filter(|k| x.get(*k) != y.get(*k)).map(|k| format!("{key}.{k}")));
            }
            (x, y) if x != y => out.push(key.clone()),
            _ => {}
        }
    }
    out
}

#[utoipa::path(get, path = "/v1/blueprints/{blueprint}/entities/{entity}/history", tag = "Entities",
    summary = "An entity's versions, newest first (Berth extension)",
    description = "Each version: `{seq, at, actor, origin, action, changed, entity}` (`entity` is null after a delete; `changed` lists the fields and `properties.*` / `relations.*` that differ from the version before). `limit` 1-1000 (default 100), `cursor` = the previous page's `next`.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"), ("entity" = String, Path, description = "Entity identifier"),
        ("limit" = Option<usize>, Query, description = "Versions per page"), ("cursor" = Option<String>, Query, description = "The previous page's `next`")),
    responses((status = 200, description = "`{ok, versions: [...], next?}`"), (status = 400, description = "Bad limit or cursor"), (status = 404, description = "The entity never existed")))]
pub async fn history(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    q: Params,
) -> ApiResult<Response> {
    let blueprint = params.get("bp")?;
    let id = params.get("id")?;
    let limit = q.page_size(100)?;
    let before = match q.get("cursor").filter(|v| !v.is_empty()) {
        Some(c) => c.parse::<u64>().map_err(|_| ApiError::bad_request("`cursor` is not a `next` of this history"))?,
        None => app.pipeline.view().seq() + 1,
    };
    let (found, next) = versions(&app, &blueprint, &id, before, limit, |_| false).await?;
    // Versions the caller may not read are not there for it; an entity none of whose versions it may read
    // is answered like one that never existed.
    let view = app.pipeline.view();
    let scoped = crate::access::scoped(&view, &caller);
    let found: Vec<&Version> = found.iter().filter(|v| readable(&scoped, v)).collect();
    if found.is_empty() && q.get("cursor").is_none() {
        return Err(DomainError::not_found("entity", format!("{blueprint}/{id}")).into());
    }
    let versions: Vec<Value> = found
        .iter()
        .map(|v| {
            // A version before that the caller may not read is not compared with (nor named).
            let previous = previous(v).filter(|p| scoped.can_read(p));
            let action = match (&v.entity, previous) {
                (None, _) => "DELETE",
                (Some(_), None) => "CREATE",
                (Some(_), Some(_)) => "UPDATE",
            };
            json!({
                "seq": v.event.seq, "at": v.event.time, "actor": v.event.actor, "origin": v.event.origin,
                "action": action, "changed": changed_fields(previous, v.entity.as_deref()), "entity": v.entity,
            })
        })
        .collect();
    let mut answer = json!({"ok": true, "versions": versions});
    if let Some(n) = next {
        answer["next"] = json!(n.to_string());
    }
    Ok(reply(StatusCode::OK, answer, None))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertiesHistoryRequest {
    pub entity_identifier: String,
    pub blueprint_identifier: String,
    /// The properties to report (default: every property).
    #[serde(default)]
    pub property_names: Vec<String>,
    /// `hour`, `day`, `isoWeek`, `month` or `quarter`.
    pub time_interval: String,
    /// `{"preset": "lastWeek", "timeZone": "Europe/Paris"}`.
    #[schema(value_type = Object)]
    pub time_range: Value,
}

/// The most buckets one answer holds.
const MAX_BUCKETS: usize = 2_000;

#[utoipa::path(post, path = "/v1/entities/properties-history", tag = "Entities",
    summary = "An entity's property values over time, one point per interval",
    description = "For each bucket of `timeInterval` within `timeRange` (a preset in a time zone), the values the properties had at the end of the bucket (`null` before the entity existed or after it was deleted).",
    security(("bearer" = [])), request_body = PropertiesHistoryRequest,
    responses((status = 200, description = "`{ok, result: {minDate, maxDate, data: [{date, values: {property: value}}]}}`"),
        (status = 400, description = "Bad interval, preset or time zone"), (status = 404, description = "No such blueprint or entity")))]
pub async fn properties_history(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<PropertiesHistoryRequest>,
) -> ApiResult<Response> {
    let interval = Interval::parse(&body.time_interval).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`timeInterval` must be hour, day, isoWeek, month or quarter; got {:?}",
            body.time_interval
        ))
    })?;
    let preset_name = body.time_range.get("preset").and_then(Value::as_str).unwrap_or_default();
    let preset = DatePreset::parse(preset_name).ok_or_else(|| {
        ApiError::bad_request(format!("`timeRange.preset` must be one of {PRESET_NAMES}; got {preset_name:?}"))
    })?;
    let zone = body.time_range.get("timeZone").and_then(Value::as_str).unwrap_or("UTC");
    let now = crate::now();
    let (from, to) = preset
        .range(now, zone)
        .ok_or_else(|| ApiError::bad_request(format!("`timeRange.timeZone` {zone:?} is not an IANA time zone")))?;
    let view = app.pipeline.view();
    let bp = view
        .blueprint(&body.blueprint_identifier)
        .ok_or_else(|| ApiError::from(DomainError::not_found("blueprint", body.blueprint_identifier.clone())))?;
    let names: Vec<String> = if body.property_names.is_empty() {
        bp.def.schema.properties.keys().cloned().collect()
    } else {
        for p in &body.property_names {
            if !bp.def.schema.properties.contains_key(p) {
                return Err(ApiError::bad_request(format!(
                    "blueprint `{}` has no property `{p}`",
                    body.blueprint_identifier
                )));
            }
        }
        body.property_names.clone()
    };
    // Versions back to the last one before the range (the value the range starts with).
    let (found, _) =
        versions(&app, &body.blueprint_identifier, &body.entity_identifier, view.seq() + 1, usize::MAX, |e| {
            e.time < from
        })
        .await?;
    // Values of versions the caller may not read are nulls; none readable is a 404, as for a missing entity.
    let scoped = crate::access::scoped(&view, &caller);
    let mut found: Vec<Version> = found.into_iter().filter(|v| readable(&scoped, v)).collect();
    if found.is_empty() {
        return Err(DomainError::not_found("entity", body.entity_identifier.clone()).into());
    }
    found.reverse(); // oldest first
    let mut starts = buckets(from, to, interval, zone, MAX_BUCKETS + 1)
        .ok_or_else(|| ApiError::bad_request(format!("`timeRange.timeZone` {zone:?} is not an IANA time zone")))?;
    // At most MAX_BUCKETS points: a longer range is cut, and the answer says where it ends (`maxDate`) and
    // that it was cut (`truncated`), rather than claiming the whole range.
    let (to, truncated) = match starts.get(MAX_BUCKETS) {
        Some(next) => (Timestamp::from_millis(next.millis() - 1), true),
        None => (to, false),
    };
    starts.truncate(MAX_BUCKETS);
    let mut data = Vec::with_capacity(starts.len());
    for (i, start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(to, |next| Timestamp::from_millis(next.millis() - 1)).min(to);
        let current = found.iter().rev().find(|v| v.event.time <= end).and_then(|v| v.entity.as_deref());
        let values: Map<String, Value> = names
            .iter()
            .map(|n| (n.clone(), current.and_then(|e| e.properties.get(n)).cloned().unwrap_or(Value::Null)))
            .collect();
        data.push(json!({"date": start, "values": values}));
    }
    let mut result = json!({"minDate": from, "maxDate": to, "data": data});
    if truncated {
        result["truncated"] = json!(true);
    }
    Ok(reply(StatusCode::OK, json!({"ok": true, "result": result}), None))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use berth_engine::Command;
    use berth_store::LogStore;
    use serde_json::json;

    use crate::AppState;
    use berth_catalog::pipeline::Pipeline;
    use berth_catalog::testing::{Failures, TestStore, meta, upsert};

    /// H8: an entity's history reads its own events by sequence number (one read per page), never a scan of
    /// the log, however long the log; a missing entity reads nothing at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_reads_the_entitys_own_events_not_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(TestStore::new(&dir.path().join("log.db"), Failures::None));
        let catalog = Pipeline::open(store.clone() as Arc<dyn LogStore>, 0).await.expect("catalog");
        let bp = json!({"identifier": "s", "title": "S", "schema": {"properties": {"n": {"type": "number"}}}});
        catalog.write_one(meta(), Command::CreateBlueprint { body: bp }).await.expect("write").0.expect("bp");
        for round in 0..3 {
            let commands: Vec<Command> =
                (0..1_000).map(|i| upsert(&format!("other-{i}"), json!({"n": round}))).collect();
            catalog.write(meta(), commands).await.expect("bulk");
            catalog.write_one(meta(), upsert("target", json!({"n": round}))).await.expect("write").0.expect("target");
        }
        let mut config = crate::ServerConfig::new(dir.path().to_path_buf());
        config.rate_limit = 0;
        let keys = crate::keys::KeyFile { current: "k".repeat(32), previous: None, rotated_at: None };
        let app = AppState {
            pipeline: catalog,
            tokens: Default::default(),
            keys: Arc::new(crate::keys::SigningKeys::fixed(crate::keys::KeySource::Environment, keys)),
            limits: Arc::new(crate::rate_limit::RateLimiter::new(0, Duration::from_secs(60))),
            sign_in: Default::default(),
            searches: Default::default(),
            config: Arc::new(config),
            started: std::time::Instant::now(),
        };
        let head = app.pipeline.view().seq();
        assert!(head > 3_000);
        let (found, next) = super::versions(&app, "s", "target", head + 1, 100, |_| false).await.expect("history");
        assert_eq!(found.len(), 3);
        assert_eq!(next, None);
        assert_eq!(found[0].entity.as_ref().map(|e| e.properties.get("n").cloned()), Some(Some(json!(2))));
        assert_eq!(store.scans.load(Ordering::SeqCst), 0, "no scan of the log");
        assert_eq!(store.point_reads.load(Ordering::SeqCst), 1, "one read for the page");
        // Paged: the cursor continues where the page stopped.
        let (first, next) = super::versions(&app, "s", "target", head + 1, 2, |_| false).await.expect("page 1");
        assert_eq!(first.len(), 2);
        let next = next.expect("a next page");
        let (rest, last) = super::versions(&app, "s", "target", next, 2, |_| false).await.expect("page 2");
        assert_eq!((rest.len(), last), (1, None));
        // An entity that never existed costs nothing.
        let reads = store.point_reads.load(Ordering::SeqCst);
        let (none, _) = super::versions(&app, "s", "never", head + 1, 100, |_| false).await.expect("history");
        assert!(none.is_empty());
        assert_eq!(store.point_reads.load(Ordering::SeqCst), reads);
        assert_eq!(store.scans.load(Ordering::SeqCst), 0);
    }
}
