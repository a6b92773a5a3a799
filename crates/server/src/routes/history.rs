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
use berth_model::date_preset::{DatePreset, Interval, PRESET_NAMES, buckets};
use berth_model::{DomainError, Entity, Event, Previous, Timestamp};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Params, PathParams};

pub use berth_catalog::history::{CLOCK_SLACK_MS, Version};

/// The entity's versions, newest first (see [`berth_catalog::history::versions`]).
pub async fn versions(
    app: &AppState,
    blueprint: &str,
    id: &str,
    before: u64,
    limit: usize,
    stop: impl Fn(&Event) -> bool,
) -> ApiResult<(Vec<Version>, Option<u64>)> {
    Ok(berth_catalog::history::versions(&app.pipeline, blueprint, id, before, limit, stop).await?)
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
    berth_catalog::history::entity_at(&app.pipeline, caller.principal(), blueprint, id, at)
        .await?
        .ok_or_else(|| DomainError::not_found("entity", format!("{blueprint}/{id} at {}", at.to_rfc3339())).into())
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
