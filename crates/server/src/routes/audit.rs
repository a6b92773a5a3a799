//! `GET /v1/audit-log`: the audit log ([`berth_catalog::audit`]) over HTTP: filters from the query string,
//! the Member rule (filter by `identifier`, `entity` or `run_id`), and the page in Port's shape.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_catalog::audit::Filters;
use berth_model::Timestamp;
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Params;

/// The filters `GET /v1/audit-log` takes.
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
        webhook: text("webhookId"),
        webhook_event: None,
    })
}

/// The `webhookEventId` filter, from the request's record: the entities its mappings wrote or deleted, in the
/// window from its receipt to its processing. 404 for a request that does not exist.
fn webhook_event_filter(app: &AppState, event: &str) -> ApiResult<berth_catalog::audit::WebhookEventFilter> {
    let view = app.pipeline.view();
    let d = view
        .definition(berth_model::DefinitionKind::WebhookEvent, event)
        .ok_or_else(|| ApiError::not_found(format!("webhook request `{event}` was not found")))?;
    let entities = d
        .body
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|r| ["upserted", "deleted"].map(|k| r.get(k).and_then(Value::as_array).cloned().unwrap_or_default()))
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let webhook = event.split_once('#').map(|(w, _)| w.to_string()).unwrap_or_default();
    Ok(berth_catalog::audit::WebhookEventFilter {
        webhook,
        event: event.to_string(),
        entities,
        from: d.created_at,
        to: d.updated_at,
    })
}

#[utoipa::path(get, path = "/v1/audit-log", tag = "Audit", summary = "The audit log: every change, newest first",
    description = "Filters (ANDed): `identifier` (the resource's), `entity`, `blueprint`, `run_id`, `resources` (entity, blueprint, permissions, team, user, app, signing_key), `action` (CREATE, UPDATE, DELETE, UPSERT), `origin` (API, UI, INTEGRATION, AUTOMATION, SYSTEM), `status` (SUCCESS, or FAILURE for refused writes: validation and permission errors, with the status and message as the diff's `after`), `from` / `to` (date-times), `webhookId` (an inbound webhook's changes, the requests it received and the entity changes they made; Admins), `webhookEventId` (one request's record and the entity changes it made; Admins), `limit` (1-1000, default 100), `cursor` (the `next` of the previous page). Members must filter by `identifier`, `entity` or `run_id`, and see only changes of entities they may read and their own refused attempts (never apps or keys). Each record: `{identifier, seq, action, resourceType, status, trigger: {by: {userId}, origin, at}, context: {blueprintIdentifier, entityIdentifier, runId}, diff: {before, after}}`.",
    security(("bearer" = [])),
    responses((status = 200, description = "`{ok, audits: [...], next?}`"), (status = 400, description = "Bad filter or cursor"), (status = 403, description = "A Member without an identifier, entity or run_id filter")))]
pub async fn audit_log(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> ApiResult<Response> {
    let filters = parse(&q)?;
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

/// One page of audit records matching the filters in `q` (as `GET /v1/audit-log` takes them), newest first,
/// and the cursor of the next page, showing `caller` only what it may see (the UI's audit page reads
/// through here too).
pub async fn read(app: &AppState, caller: &Caller, q: &Params) -> ApiResult<(Vec<Value>, Option<String>)> {
    let mut filters = parse(q)?;
    if !caller.is_admin() && (filters.webhook.is_some() || q.get("webhookEventId").is_some_and(|v| !v.is_empty())) {
        return Err(ApiError::new(berth_model::ErrorCode::Forbidden, "only an Admin may read webhooks' records"));
    }
    if let Some(event) = q.get("webhookEventId").filter(|v| !v.is_empty()) {
        filters.webhook_event = Some(webhook_event_filter(app, event)?);
    }
    let limit = q.page_size(100)?;
    let cursor = match q.get("cursor").filter(|v| !v.is_empty()) {
        Some(c) => Some(c.parse::<u64>().map_err(|_| ApiError::bad_request("`cursor` is not a `next` of this log"))?),
        None => None,
    };
    let (audits, next) =
        berth_catalog::audit::page(&app.pipeline, &caller.principal(), &filters, cursor, limit).await?;
    Ok((audits, next.map(|n| n.to_string())))
}
