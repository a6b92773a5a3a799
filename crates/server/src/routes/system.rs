//! Operations and documentation routes: health, readiness, the OpenAPI document, the reference page,
//! migration status, and the JSON answers for unknown routes and methods.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::reply;
use crate::error::{ApiError, ApiResult};
use crate::extract::PathParams;
use crate::{AppState, MigrationRecord};

const REDOC_JS: &[u8] = include_bytes!("../../assets/vendor/redoc/redoc.standalone.js");

#[utoipa::path(get, path = "/healthz", tag = "Operations", summary = "Liveness",
    responses((status = 200, description = "The process is up: `{ok: true, seq, uptimeSeconds}`")))]
pub async fn healthz(State(app): State<AppState>) -> Response {
    reply(
        StatusCode::OK,
        json!({"ok": true, "seq": app.pipeline.view().seq(), "uptimeSeconds": app.started.elapsed().as_secs()}),
        None,
    )
}

#[utoipa::path(get, path = "/readyz", tag = "Operations", summary = "Readiness",
    responses((status = 200, description = "The store answers and the catalog is loaded: `{ok, storeHead, applied, snapshotSeq, store, writer, indexes}`: `store` is the kind of store (sqlite, postgres, redis); `snapshotSeq` is the newest snapshot (a crash now replays the log after it); `indexes` is `building` for a moment after start-up (searches scan, writes wait) and then `ready`"), (status = 503, description = "The store does not answer, or the writer has stopped")))]
pub async fn readyz(State(app): State<AppState>) -> Response {
    if !app.pipeline.writer_alive() {
        return ApiError::unavailable("the writer has stopped; restart this replica").into_response();
    }
    match tokio::time::timeout(crate::READY_TIMEOUT, app.pipeline.store_head()).await {
        Ok(Ok(head)) => reply(
            StatusCode::OK,
            {
                let view = app.pipeline.view();
                let indexes = if view.property_indexes_pending() { "building" } else { "ready" };
                // The kind of store only: where it is (paths, hosts, databases) is not for anonymous callers.
                let kind = app.pipeline.store_kind();
                json!({"ok": true, "storeHead": head, "applied": view.seq(), "snapshotSeq": app.pipeline.snapshot_seq(),
                    "store": kind, "writer": "running", "indexes": indexes})
            },
            None,
        ),
        Ok(Err(e)) => ApiError::unavailable(format!("store: {e}")).into_response(),
        Err(_) => ApiError::unavailable("the store did not answer in time").into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "Operations", summary = "Prometheus metrics",
    description = "The server's measurements in the OpenMetrics text format Prometheus scrapes: `berth_http_requests_total` and `berth_http_request_seconds` (per route pattern, method, status), `berth_store_call_seconds` / `berth_store_call_errors_total` (per store operation), `berth_writer_batch_writes`, `berth_writer_batch_seconds`, `berth_writer_failed_batches_total`, and, read when scraped, `berth_log_head_seq`, `berth_snapshot_seq`, `berth_replica_lag_events`, `berth_entities` (per blueprint), `berth_delivery_lag_events` (per subscription this replica delivers), `berth_resident_memory_bytes`. Here it answers an Admin's token or the `--metrics-token`; on `--metrics-listen` it answers anyone.",
    security(("bearer" = [])),
    responses((status = 200, description = "OpenMetrics text"), (status = 401, description = "No token, or not one this server accepts"), (status = 403, description = "A token of someone who is not an Admin")))]
pub async fn metrics(State(app): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("/metrics needs an Admin's token or the --metrics-token"))?;
    let configured = app.config.metrics_token.as_deref().filter(|t| !t.is_empty());
    if !configured.is_some_and(|t| crate::auth::constant_time_eq(t.as_bytes(), token.as_bytes())) {
        let caller = crate::auth::authenticate(&app.keys, &app.pipeline.view(), token, crate::now().millis() / 1000)?;
        if !caller.is_admin() {
            return Err(ApiError::forbidden("/metrics is for Admins (or the --metrics-token)"));
        }
    }
    Ok(open_metrics(State(app)).await)
}

/// `/metrics` on `--metrics-listen`: no token (that address is for Prometheus alone).
pub async fn open_metrics(State(app): State<AppState>) -> Response {
    let text = app.metrics.render(&app).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::document_json()).into_response()
}

pub async fn docs() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Berth API reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json" hide-download-button="false"></redoc>
<noscript>The reference needs JavaScript; the raw document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
<script src="/docs/redoc.standalone.js"></script></body></html>"#,
    )
}

pub async fn redoc_js() -> Response {
    ([(header::CONTENT_TYPE, "application/javascript"), (header::CACHE_CONTROL, "public, max-age=86400")], REDOC_JS)
        .into_response()
}

pub async fn root() -> Response {
    reply(
        StatusCode::OK,
        json!({"ok": true, "name": "berth", "version": env!("CARGO_PKG_VERSION"), "docs": "/docs", "openapi": "/openapi.json"}),
        None,
    )
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the API is described at /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(berth_model::ErrorCode::MethodNotAllowed, "this route does not accept that method")
}

#[utoipa::path(get, path = "/v1/migrations/{id}", tag = "Entities", summary = "Status of an all-entities delete",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The `migrationId` answered by DELETE all-entities")),
    responses((status = 200, description = "`{ok, migration: {id, actor, sourceBlueprint, mapping, status: \"COMPLETED\" | \"RUNNING\", ...}}` in Port's shape (Terraform's forced delete polls for COMPLETED; Ocean's model needs `actor` and `mapping`)"), (status = 404, description = "Unknown id")))]
pub async fn migration(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let id = params.get("id")?;
    let record =
        MigrationRecord::parse(&id).ok_or_else(|| ApiError::not_found(format!("migration `{id}` was not found")))?;
    // Applied here already, or (on another replica) still on its way.
    let status = if app.pipeline.view().seq() >= record.seq { "COMPLETED" } else { "RUNNING" };
    Ok(reply(
        StatusCode::OK,
        json!({"ok": true, "migration": {
            "id": id, "status": status, "actor": record.actor, "sourceBlueprint": record.blueprint,
            "targetBlueprint": null, "mapping": {},
            "deleteBlueprint": record.delete_blueprint, "deleteEntities": true,
            "successCount": record.deleted, "failureCount": 0, "createdAt": record.at, "updatedAt": record.at}}),
        None,
    ))
}
