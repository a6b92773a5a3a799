//! `GET /v1/audit-log`: the change log read backwards, newest first, as audit records. It is a view of the
//! log itself, so it cannot miss a change. Filters combine with AND; a page stops at `limit` records or
//! after scanning [`SCAN_BUDGET`] events, and `next` continues where it stopped. Secrets (credential hashes,
//! password hashes, invitation codes, the signing key) are never shown.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::decode_event;
use berth_model::{Change, Event, Previous, Timestamp};
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::access::Scoped;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Params;

/// The most events one request reads from the log.
const SCAN_BUDGET: usize = 100_000;
/// Events read per store call.
const PAGE: usize = 1_000;

use berth_model::public::PublicChange as Record;

struct Filters {
    identifier: Option<String>,
    entity: Option<String>,
    blueprint: Option<String>,
    run_id: Option<String>,
    resources: Vec<String>,
    actions: Vec<String>,
    origins: Vec<String>,
    status: Option<String>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
}

impl Filters {
    fn parse(q: &Params) -> ApiResult<Filters> {
        let time = |key: &str| -> ApiResult<Option<Timestamp>> {
            match q.get(key).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => Timestamp::parse(v)
                    .map(Some)
                    .ok_or_else(|| ApiError::bad_request(format!("`{key}` must be an RFC 3339 date-time, got {v:?}"))),
            }
        };
        let text = |key: &str| q.get(key).filter(|v| !v.is_empty()).map(str::to_string);
        let upper = |key: &str| q.list(key).into_iter().map(|v| v.to_uppercase()).collect::<Vec<_>>();
        let status = text("status").map(|s| s.to_uppercase());
        if let Some(s) = &status {
            if s != "SUCCESS" && s != "FAILURE" {
                return Err(ApiError::bad_request(format!("`status` must be SUCCESS or FAILURE, got {s:?}")));
            }
        }
        Ok(Filters {
            identifier: text("identifier"),
            entity: text("entity"),
            blueprint: text("blueprint"),
            run_id: text("run_id"),
            resources: q.list("resources"),
            actions: upper("action"),
            origins: upper("origin"),
            status,
            from: time("from")?,
            to: time("to")?,
        })
    }

    /// The entity identifier when the filters name one entity's records only (so the version index can
    /// answer them).
    fn one_entity(&self) -> Option<&str> {
        match (&self.entity, &self.identifier) {
            (Some(entity), identifier) if identifier.as_ref().is_none_or(|i| i == entity) => Some(entity),
            (None, Some(identifier)) if self.resources.iter().all(|r| r == "entity") && !self.resources.is_empty() => {
                Some(identifier)
            }
            _ => None,
        }
    }

    fn matches(&self, event: &Event, record: &Record) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        eq(&self.identifier, &record.identifier)
            && (self.entity.is_none() || (record.resource == "entity" && eq(&self.entity, &record.identifier)))
            && eq(&self.blueprint, &record.blueprint)
            && eq(&self.run_id, &event.run_id)
            && (self.resources.is_empty() || self.resources.iter().any(|r| r == record.resource))
            && (self.actions.is_empty() || self.actions.iter().any(|a| a == record.action))
            && (self.origins.is_empty() || {
                let origin = serde_json::to_value(event.origin).unwrap_or(Value::Null);
                self.origins.iter().any(|o| origin.as_str() == Some(o.as_str()))
            })
            && self.status.as_deref().is_none_or(|s| s == record.status)
            && self.to.is_none_or(|to| event.time <= to)
    }
}

#[utoipa::path(get, path = "/v1/audit-log", tag = "Audit", summary = "The audit log: every change, newest first",
    description = "Filters (ANDed): `identifier` (the resource's), `entity`, `blueprint`, `run_id`, `resources` (entity, blueprint, permissions, team, user, app, signing_key), `action` (CREATE, UPDATE, DELETE, UPSERT), `origin` (API, UI, INTEGRATION, AUTOMATION, SYSTEM), `status` (SUCCESS, or FAILURE for refused writes: validation and permission errors, with the status and message as the diff's `after`), `from` / `to` (date-times), `limit` (1-1000, default 100), `cursor` (the `next` of the previous page). Members must filter by `identifier`, `entity` or `run_id`, and see only changes of entities they may read and their own refused attempts (never apps or keys). Each record: `{identifier, seq, action, resourceType, status, trigger: {by: {userId}, origin, at}, context: {blueprintIdentifier, entityIdentifier, runId}, diff: {before, after}}`.",
    security(("bearer" = [])),
    responses((status = 200, description = "`{ok, audits: [...], next?}`"), (status = 400, description = "Bad filter or cursor"), (status = 403, description = "A Member without an identifier, entity or run_id filter")))]
pub async fn audit_log(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> ApiResult<Response> {
    let filters = Filters::parse(&q)?;
    if !caller.is_admin() && filters.identifier.is_none() && filters.entity.is_none() && filters.run_id.is_none() {
        return Err(ApiError::new(
            berth_model::ErrorCode::Forbidden,
            "only an Admin may read the whole audit log; filter by `identifier`, `entity` or `run_id`",
        ));
    }
    let (audits, next) = read(&app, &caller, &q).await?;
    let mut answer = json!({"ok": true, "audits": audits});
    if let Some(next) = next {
        answer["next"] = json!(next);
    }
    Ok(reply(StatusCode::OK, answer, None))
}

/// Whether `caller` may see an event's record: Admins all; others only entity changes of entities they may
/// read (judged on the version the event carries), their own refused attempts, and neither apps nor keys.
fn visible(scoped: &Scoped<'_>, caller: &Caller, event: &Event) -> bool {
    if caller.is_admin() {
        return true;
    }
    match &event.change {
        Change::EntityPut { entity } => scoped.can_read(entity),
        Change::EntityDeleted { .. } => {
            matches!(&event.before, Some(Previous::Entity { entity }) if scoped.can_read(entity))
        }
        Change::Refused { .. } => event.actor == caller.client_id,
        Change::CredentialPut { .. } | Change::CredentialDeleted { .. } | Change::SigningKeySet { .. } => false,
        _ => true,
    }
}

/// Whether the version an entity change replaced may be shown with it: a record the caller sees because
/// the entity became readable does not show what it was while hidden.
fn before_visible(scoped: &Scoped<'_>, event: &Event) -> bool {
    match &event.before {
        Some(Previous::Entity { entity }) => scoped.can_read(entity),
        _ => true,
    }
}

/// One page of audit records matching the filters in `q` (as `GET /v1/audit-log` takes them), newest first,
/// and the cursor of the next page, showing `caller` only what it may see ([`visible`]).
///
/// A page about one entity (an `entity` filter, or an `identifier` filter on entities only) reads the
/// entity's own events named by the version index (refused attempts included), so its cost grows with the
/// entity's events, not the log; only the part of the log older than the index is scanned.
pub async fn read(app: &AppState, caller: &Caller, q: &Params) -> ApiResult<(Vec<Value>, Option<String>)> {
    let filters = Filters::parse(q)?;
    let view = app.pipeline.view();
    let scoped = crate::access::scoped(&view, caller);
    let limit = q.page_size(100)?;
    let store = app.pipeline.store();
    let mut before = match q.get("cursor").filter(|v| !v.is_empty()) {
        Some(c) => c.parse::<u64>().map_err(|_| ApiError::bad_request("`cursor` is not a `next` of this log"))?,
        None => store.head().await.map_err(|e| ApiError::unavailable(format!("store: {e}")))? + 1,
    };
    let mut page = Page { filters: &filters, scoped: &scoped, caller, limit, audits: Vec::new() };
    if let Some(id) = filters.one_entity() {
        let (seqs, indexed_from) = view.entity_events(filters.blueprint.as_deref(), id);
        let wanted: Vec<u64> = seqs.into_iter().rev().filter(|s| *s < before).collect();
        for chunk in wanted.chunks(PAGE.min(berth_store::MAX_READ_SEQS)) {
            let events =
                store.read_seqs(chunk.to_vec()).await.map_err(|e| ApiError::unavailable(format!("store: {e}")))?;
            for stored in events {
                before = stored.seq;
                let event = decode_event(stored.seq, &stored.payload).map_err(ApiError::internal)?;
                if filters.from.is_some_and(|from| event.time < from) {
                    continue;
                }
                if page.offer(&event) {
                    let more = wanted.last().is_some_and(|l| *l < before) || indexed_from > 1;
                    return Ok((page.audits, more.then(|| before.to_string())));
                }
            }
        }
        if indexed_from <= 1 {
            return Ok((page.audits, None));
        }
        before = before.min(indexed_from);
    }
    let mut scanned = 0usize;
    let mut done = false;
    'scan: while before > 1 && scanned < SCAN_BUDGET {
        let events = store.read_before(before, PAGE).await.map_err(|e| ApiError::unavailable(format!("store: {e}")))?;
        if events.is_empty() {
            done = true;
            break;
        }
        for stored in events {
            scanned += 1;
            before = stored.seq;
            let event = decode_event(stored.seq, &stored.payload).map_err(ApiError::internal)?;
            if let Some(from) = filters.from {
                // Replicas' clocks may disagree a little, so the log is not strictly in time order: the scan
                // goes on a minute past `from` before it stops.
                if event.time.millis() < from.millis() - super::history::CLOCK_SLACK_MS {
                    done = true;
                    break 'scan;
                }
                if event.time < from {
                    continue;
                }
            }
            if page.offer(&event) {
                break 'scan;
            }
        }
    }
    let next = (!done && before > 1).then(|| before.to_string());
    Ok((page.audits, next))
}

/// The records of one page as they are found.
struct Page<'a> {
    filters: &'a Filters,
    scoped: &'a Scoped<'a>,
    caller: &'a Caller,
    limit: usize,
    audits: Vec<Value>,
}

impl Page<'_> {
    /// Adds the event's record if it matches the filters and the caller may see it; whether the page is full.
    fn offer(&mut self, event: &Event) -> bool {
        let mut record = berth_model::public::change(event);
        if !self.filters.matches(event, &record) || !visible(self.scoped, self.caller, event) {
            return false;
        }
        if !before_visible(self.scoped, event) {
            record.before = Value::Null;
        }
        self.audits.push(json!({
            "identifier": format!("audit-{}", event.seq),
            "seq": event.seq,
            "action": record.action,
            "resourceType": record.resource,
            "status": record.status,
            "trigger": {"by": {"userId": event.actor}, "origin": event.origin, "at": event.time},
            "context": {
                "blueprintIdentifier": record.blueprint,
                "entityIdentifier": if record.resource == "entity" { record.identifier.clone() } else { None },
                "runId": event.run_id,
            },
            "diff": {"before": record.before, "after": record.after},
        }));
        self.audits.len() == self.limit
    }
}
