//! `GET /v1/events`: the public event feed (Berth extension). The change log read forward from a sequence
//! number, each event in its public, versioned form (no secrets), waiting a bounded time when there is
//! nothing new: a consumer outside the process follows every change by polling with the last `next`.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Params;
use berth_catalog::feed;

#[utoipa::path(get, path = "/v1/events", tag = "Audit", summary = "The event feed: every change after a sequence number (Berth extension, Admin)",
    description = "Answers up to `limit` (1-1000, default 100) events with a sequence number greater than `after` (default 0), oldest first, each in the public event form version 1: `{v, seq, time, actor, origin, runId, resourceType, action, status, blueprint, identifier, diff: {before, after}}` (credential and password hashes, invitation codes and keys never appear). When there is none yet, waits up to `wait_ms` (0-30000, default 0) for one. `next` is where the following read starts (`after=next`); `head` is the log's newest sequence number. Admins only: the feed is not filtered by read permissions.",
    security(("bearer" = [])),
    params(("after" = Option<u64>, Query), ("limit" = Option<usize>, Query), ("wait_ms" = Option<u64>, Query)),
    responses((status = 200, description = "`{ok, events: [...], next, head}`"), (status = 400, description = "Bad `after`, `limit` or `wait_ms`"),
        (status = 403, description = "Not an Admin"), (status = 503, description = "The store did not answer")))]
pub async fn events(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> ApiResult<Response> {
    super::require_admin(&caller, "read the event feed")?;
    let number =
        |key: &str, max: u64| -> ApiResult<u64> {
            match q.get(key).filter(|v| !v.is_empty()) {
                None => Ok(0),
                Some(v) => v.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(|| {
                    ApiError::bad_request(format!("`{key}` must be a number from 0 to {max}, got {v:?}"))
                }),
            }
        };
    let after = number("after", i64::MAX as u64)?;
    let wait = std::time::Duration::from_millis(number("wait_ms", feed::MAX_WAIT.as_millis() as u64)?);
    let limit = q.page_size(100)?;
    let page = app.pipeline.feed(after, limit, wait).await?;
    let next = page.next(after);
    let events: Vec<serde_json::Value> = page.events.iter().map(|e| berth_model::public::event(e)).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "events": events, "next": next, "head": page.head}), None))
}
