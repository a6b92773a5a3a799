//! Ocean integrations, as Port serves them to the Ocean framework (`../shared/brief/port-api.md` §8, §9,
//! §14): the integration object (`GET|POST /v1/integration`, `GET|PATCH|DELETE /v1/integration/{id}`,
//! `PATCH .../config`, `PATCH .../resync-state`, `GET .../resync-request`), what an integration reports
//! (`POST .../logs`, `.../metrics/syncMetrics`, `.../metrics/heartbeat`, `POST .../kinds/{kind}/examples`,
//! whose URLs the object's `logAttributes` and `metricAttributes` give), and the reconciliation read
//! (`POST /v1/blueprints/entities/datasource-entities`: the entities an integration wrote, by their
//! `$datasource`). Berth extensions: `POST .../resync-request` (ask the integration to resync: the UI's
//! "resync now"), `GET .../logs`, `GET .../kinds/{kind}/examples`, `GET .../syncMetrics`.
//!
//! Integrations are Admin objects (Ocean runs with an Admin's credentials); `metadata` and
//! `provision-enabled` answer anyone signed in.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use berth_engine::Command;
use berth_engine::definitions::DefinitionWrite;
use berth_model::DefinitionKind;
use berth_model::integration::{Report, record_prefix};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Params, PathParams};

const KIND: DefinitionKind = DefinitionKind::Integration;
const RECORD: DefinitionKind = DefinitionKind::IntegrationRecord;

pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, patch, post, put};
    let admin = axum::Router::new()
        .route("/v1/integration", get(list).post(create))
        .route("/v1/integration/{identifier}", get(get_one).patch(change).delete(delete))
        .route("/v1/integration/{identifier}/config", patch(set_config))
        .route("/v1/integration/{identifier}/resync-state", patch(set_resync_state))
        .route("/v1/integration/{identifier}/resync-request", get(resync_request).post(request_resync))
        .route("/v1/integration/{identifier}/kinds/{kind}/examples", get(examples).post(add_examples))
        .route("/v1/integration/{identifier}/logs", get(logs).post(add_logs))
        .route("/v1/integration/{identifier}/metrics/syncMetrics", post(add_sync_metrics))
        .route("/v1/integration/{identifier}/metrics/syncMetrics/resync/{event}/kind/{kind}", put(add_kind_metrics))
        .route("/v1/integration/{identifier}/metrics/heartbeat", post(heartbeat))
        .route("/v1/integration/{identifier}/syncMetrics", get(sync_metrics))
        .route("/v1/integration/{identifier}/syncsMetadata", get(syncs_metadata))
        .route_layer(axum::middleware::from_fn(admins_only));
    axum::Router::new()
        .route("/v1/kafka-credentials", get(kafka_credentials))
        .route("/v1/integration/metadata", get(metadata))
        .route("/v1/integration/provision-enabled", get(provision_enabled))
        .merge(admin)
}

async fn admins_only(req: axum::extract::Request, next: axum::middleware::Next) -> ApiResult<Response> {
    super::require_admin_request(&req, "read or change integrations")?;
    Ok(next.run(req).await)
}

/// A path segment for `s`: everything but letters, digits and `@_.:-` percent-encoded (an identifier may
/// hold `/`, `\` and `+`).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'@' | b'_' | b'.' | b':' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An integration as Ocean reads it: its body, with the installation defaults and the URLs it reports to
/// (on the host the request came to).
fn view_of(headers: &HeaderMap, d: &berth_model::Definition) -> Value {
    let mut v = d.view();
    let base = format!("{}/v1/integration/{}", super::public_base(headers), segment(&d.identifier));
    if v.get("installationId").is_none_or(Value::is_null) {
        v["installationId"] = Value::String(d.identifier.clone());
    }
    if v.get("installationType").is_none_or(Value::is_null) {
        v["installationType"] = Value::String("OnPrem".into());
    }
    for (field, default) in [("changelogDestination", json!({})), ("config", json!({}))] {
        if v.get(field).is_none_or(Value::is_null) {
            v[field] = default;
        }
    }
    v["logAttributes"] = json!({"ingestUrl": format!("{base}/logs")});
    v["metricAttributes"] = json!({"ingestUrl": format!("{base}/metrics")});
    v
}

fn existing(app: &AppState, id: &str) -> ApiResult<std::sync::Arc<berth_model::Definition>> {
    super::existing_definition(app, KIND, id)
}

async fn write(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: String,
    how: DefinitionWrite,
) -> ApiResult<Response> {
    let command = Command::WriteDefinition { kind: KIND, identifier: id, how };
    super::write_definition_shown(app, caller, command, "integration", |d| view_of(headers, d)).await
}

/// Changes some top-level fields of an integration (in the writer, so concurrent changes of different
/// fields both land). The fields the server computes are not stored.
async fn merge(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: String,
    mut changes: Map<String, Value>,
) -> ApiResult<Response> {
    existing(app, &id)?;
    for computed in ["logAttributes", "metricAttributes", "identifier"] {
        changes.remove(computed);
    }
    write(app, caller, headers, id, DefinitionWrite::Merge(changes)).await
}

#[utoipa::path(get, path = "/v1/integration", tag = "Integrations", summary = "List Ocean integrations (Admin)", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, integrations}`"), (status = 403, description = "Not an Admin")))]
pub async fn list(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let all: Vec<Value> = app.pipeline.view().definitions(KIND).map(|d| view_of(&headers, d)).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "integrations": all}), None))
}

#[utoipa::path(get, path = "/v1/integration/metadata", tag = "Integrations", summary = "What each integration is (anyone signed in)", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, integrations: [{identifier, installationAppType, version, title, resyncState}]}`: not its config")))]
pub async fn metadata(State(app): State<AppState>) -> ApiResult<Response> {
    let all: Vec<Value> = app
        .pipeline
        .view()
        .definitions(KIND)
        .map(|d| {
            let b = &d.body;
            json!({"identifier": d.identifier, "title": b.get("title"), "installationAppType": b.get("installationAppType"),
                "version": b.get("version"), "resyncState": b.get("resyncState")})
        })
        .collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "integrations": all}), None))
}

#[utoipa::path(get, path = "/v1/integration/provision-enabled", tag = "Integrations", summary = "Integration types the server provisions itself (none)", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, integrations: []}`: Berth runs no integration for you; Ocean runs on your side")))]
pub async fn provision_enabled() -> ApiResult<Response> {
    Ok(reply(StatusCode::OK, json!({"ok": true, "integrations": []}), None))
}

#[utoipa::path(get, path = "/v1/kafka-credentials", tag = "Integrations", summary = "Kafka credentials for Ocean's KAFKA event listener (not offered)", security(("bearer" = [])),
    description = "Port gives each organisation a Kafka topic of its changes; Berth does not run one for integrations, so this answers 404 with what to do instead: run Ocean with the POLLING (or ONCE) event listener, which reads `resync-request`. (Berth's own changes reach a Kafka broker through subscriptions.)",
    responses((status = 404, description = "`not_found`, naming the listener to use")))]
pub async fn kafka_credentials() -> ApiResult<Response> {
    Err(ApiError::not_found(
        "Berth has no Kafka credentials for integrations: run Ocean with the POLLING or ONCE event listener \
         (OCEAN__EVENT_LISTENER='{\"type\": \"POLLING\"}'); \"Resync now\" reaches it through resync-request",
    ))
}

#[utoipa::path(post, path = "/v1/integration", tag = "Integrations", summary = "Create an integration (Admin)", security(("bearer" = [])),
    description = "Ocean's body: `{installationId, installationAppType, version, changelogDestination, config: {resources, entityDeletionThreshold, deleteDependentEntities, createMissingRelatedEntities, enableMergeEntity}, actionsProcessingEnabled, incrementalSyncEnabled, createPortResourcesOrigin}`; the identifier is `identifier` or else `installationId`. Fields Berth does not read are kept as sent. Query parameters such as `integration_modes` are accepted and ignored.",
    responses((status = 201, description = "`{ok, integration}` with `logAttributes.ingestUrl` and `metricAttributes.ingestUrl`"), (status = 403, description = "Not an Admin"), (status = 409, description = "The identifier is taken"), (status = 422, description = "A field of the wrong type")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<Response> {
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::unprocessable("an integration is a JSON object"));
    };
    let id = match (map.remove("identifier"), map.get("installationId")) {
        (Some(Value::String(id)), _) => id,
        (None, Some(Value::String(id))) => id.clone(),
        _ => return Err(ApiError::unprocessable("`identifier` or `installationId` is required")),
    };
    for computed in ["logAttributes", "metricAttributes"] {
        map.remove(computed);
    }
    write(&app, &caller, &headers, id, DefinitionWrite::Create(body)).await
}

#[utoipa::path(get, path = "/v1/integration/{identifier}", tag = "Integrations", summary = "Get an integration (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    responses((status = 200, description = "`{ok, integration}`"), (status = 404, description = "`not_found`: Ocean then creates it")))]
pub async fn get_one(State(app): State<AppState>, headers: HeaderMap, path: PathParams) -> ApiResult<Response> {
    let d = existing(&app, &path.get("identifier")?)?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "integration": view_of(&headers, &d)}), None))
}

#[utoipa::path(patch, path = "/v1/integration/{identifier}", tag = "Integrations", summary = "Change some fields of an integration (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    description = "The top-level fields given replace their own (`config` whole).",
    responses((status = 200, description = "`{ok, integration}`"), (status = 404, description = "No such integration"), (status = 422, description = "A field of the wrong type")))]
pub async fn change(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let Value::Object(changes) = body else { return Err(ApiError::unprocessable("a patch is a JSON object")) };
    if changes.get("identifier").is_some_and(|v| v.as_str() != Some(id.as_str())) {
        return Err(ApiError::unprocessable("an integration's identifier does not change"));
    }
    merge(&app, &caller, &headers, id, changes).await
}

#[utoipa::path(delete, path = "/v1/integration/{identifier}", tag = "Integrations", summary = "Delete an integration (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    description = "The integration and what it reported (logs, metrics, examples) go; the entities it wrote stay.",
    responses((status = 200, description = "`{ok}`"), (status = 404, description = "No such integration")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    let identifier = path.get("identifier")?;
    super::write_definition(&app, &caller, Command::DeleteDefinition { kind: KIND, identifier }, "integration").await
}

#[utoipa::path(patch, path = "/v1/integration/{identifier}/config", tag = "Integrations", summary = "Replace an integration's mapping config (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier"),
        ("x-skip-resync" = Option<String>, Header, description = "`true`: do not ask the integration to resync")),
    description = "`{config}`. Unless `x-skip-resync: true`, the integration is asked to resync (its `resync-request` moves), as Port does when a mapping changes.",
    responses((status = 200, description = "`{ok, integration}`"), (status = 404, description = "No such integration"), (status = 422, description = "A bad config")))]
pub async fn set_config(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let config = body.get("config").filter(|c| c.is_object()).cloned();
    let Some(config) = config else { return Err(ApiError::unprocessable("the body is `{config: {...}}`")) };
    let mut changes = Map::new();
    changes.insert("config".into(), config);
    let skip =
        headers.get("x-skip-resync").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !skip {
        changes.insert("resyncRequest".into(), json!({"updatedAt": crate::now(), "by": caller.principal().id}));
    }
    merge(&app, &caller, &headers, id, changes).await
}

#[utoipa::path(patch, path = "/v1/integration/{identifier}/resync-state", tag = "Integrations", summary = "Record where an integration's resync is (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    description = "`{status: running | completed | failed | aborted, lastResyncStart, lastResyncEnd, nextResync, intervalInMinuets}` (Port's spelling): the fields given replace their own in `resyncState`, which gets the server's `updatedAt`.",
    responses((status = 200, description = "`{ok, integration}`"), (status = 404, description = "No such integration"), (status = 422, description = "A bad status")))]
pub async fn set_resync_state(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let Value::Object(given) = body else { return Err(ApiError::unprocessable("a resync state is a JSON object")) };
    // The fields given replace their own: a resync's end keeps its start.
    let mut state =
        existing(&app, &id)?.body.get("resyncState").and_then(Value::as_object).cloned().unwrap_or_default();
    for (k, v) in given {
        if ["status", "lastResyncStart", "lastResyncEnd", "nextResync", "intervalInMinuets"].contains(&k.as_str()) {
            state.insert(k, v);
        }
    }
    state.insert("updatedAt".into(), json!(crate::now()));
    let mut changes = Map::new();
    changes.insert("resyncState".into(), Value::Object(state));
    merge(&app, &caller, &headers, id, changes).await
}

#[utoipa::path(get, path = "/v1/integration/{identifier}/resync-request", tag = "Integrations", summary = "When a resync was last asked for (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    description = "`{ok, request: {updatedAt?}}`: a polling integration resyncs when `updatedAt` moves past its last resync.",
    responses((status = 200, description = "`{ok, request}`"), (status = 404, description = "No such integration")))]
pub async fn resync_request(State(app): State<AppState>, path: PathParams) -> ApiResult<Response> {
    let d = existing(&app, &path.get("identifier")?)?;
    let request = d.body.get("resyncRequest").cloned().unwrap_or_else(|| json!({}));
    Ok(reply(StatusCode::OK, json!({"ok": true, "request": request}), None))
}

#[utoipa::path(post, path = "/v1/integration/{identifier}/resync-request", tag = "Integrations", summary = "Ask an integration to resync now (Admin; Berth extension)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    description = "Moves `resync-request`'s `updatedAt` to now; a polling integration picks it up at its next poll.",
    responses((status = 200, description = "`{ok, integration}`"), (status = 404, description = "No such integration")))]
pub async fn request_resync(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    path: PathParams,
) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let mut changes = Map::new();
    changes.insert("resyncRequest".into(), json!({"updatedAt": crate::now(), "by": caller.principal().id}));
    merge(&app, &caller, &headers, id, changes).await
}

/// Records what an integration reported.
async fn report(app: &AppState, caller: &Caller, integration: String, report: Report) -> ApiResult<Option<u64>> {
    let meta = super::blueprints::meta(caller, &HeaderMap::new(), None);
    let (outcome, seq) = app.pipeline.write_one(meta, Command::RecordIntegration { integration, report }).await?;
    outcome?;
    Ok(Some(seq))
}

#[utoipa::path(post, path = "/v1/integration/{identifier}/logs", tag = "Integrations", summary = "An integration's log lines (its `logAttributes.ingestUrl`; Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    description = "`{logs: [{message, level, timestamp, extra}]}`, at most 500 lines; messages past 2 KiB are cut. The newest 100 requests are kept.",
    responses((status = 200, description = "`{ok}`"), (status = 404, description = "No such integration"), (status = 422, description = "Not `{logs: [...]}`, or too many lines")))]
pub async fn add_logs(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let seq = report(&app, &caller, id, Report::logs(&body)?).await?;
    Ok(reply(StatusCode::OK, json!({"ok": true}), seq))
}

#[utoipa::path(get, path = "/v1/integration/{identifier}/logs", tag = "Integrations", summary = "An integration's log lines, newest first (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier"),
        ("limit" = Option<usize>, Query, description = "1 to 1000 lines (default 200)")),
    responses((status = 200, description = "`{ok, data: {logs: [{message, level, timestamp, extra}]}}`"), (status = 404, description = "No such integration")))]
pub async fn logs(State(app): State<AppState>, path: PathParams, params: Params) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    existing(&app, &id)?;
    let limit = params.page_size(200)?;
    let lines = newest_log_lines(&app.pipeline.view(), &id, limit);
    Ok(reply(StatusCode::OK, json!({"ok": true, "data": {"logs": lines}}), None))
}

/// An integration's newest `limit` log lines, newest first (the UI shows them too).
pub fn newest_log_lines(view: &berth_engine::State, integration: &str, limit: usize) -> Vec<Value> {
    let prefix = record_prefix(integration, "log");
    let batches: Vec<_> =
        view.definitions_from(RECORD, &prefix).take_while(|d| d.identifier.starts_with(&prefix)).collect();
    batches
        .iter()
        .rev()
        .flat_map(|d| d.body.get("logs").and_then(Value::as_array).into_iter().flatten().rev())
        .take(limit)
        .cloned()
        .collect()
}

/// An integration's resyncs as it reported them, newest first: `{eventId, kinds, createdAt, updatedAt}`.
pub fn syncs(view: &berth_engine::State, integration: &str) -> Vec<Value> {
    let prefix = record_prefix(integration, "sync");
    let all: Vec<Value> = view
        .definitions_from(RECORD, &prefix)
        .take_while(|d| d.identifier.starts_with(&prefix))
        .map(|d| {
            let mut v = (*d.body).clone();
            v["createdAt"] = json!(d.created_at);
            v["updatedAt"] = json!(d.updated_at);
            v
        })
        .collect();
    all.into_iter().rev().collect()
}

#[utoipa::path(post, path = "/v1/integration/{identifier}/metrics/syncMetrics", tag = "Integrations", summary = "A resync's metrics for several kinds (its `metricAttributes.ingestUrl`; Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    description = "`{syncKindsMetrics: [{eventId, kindIdentifier, syncState, metrics, ...}]}`. The newest 50 resyncs are kept.",
    responses((status = 200, description = "`{ok}`"), (status = 404, description = "No such integration"), (status = 422, description = "A bad body")))]
pub async fn add_sync_metrics(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let mut seq = None;
    for r in Report::kinds_metrics(&body)? {
        seq = report(&app, &caller, id.clone(), r).await?;
    }
    Ok(reply(StatusCode::OK, json!({"ok": true}), seq))
}

#[utoipa::path(put, path = "/v1/integration/{identifier}/metrics/syncMetrics/resync/{event}/kind/{kind}", tag = "Integrations", summary = "A resync's metrics for one kind (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier"), ("event" = String, Path, description = "The resync's event id"), ("kind" = String, Path, description = "The kind's identifier")),
    description = "`{syncKindMetrics: {...}}`, merged into the resync's record.",
    responses((status = 200, description = "`{ok}`"), (status = 404, description = "No such integration"), (status = 422, description = "A bad body or name")))]
pub async fn add_kind_metrics(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let r = Report::kind_metrics(&path.get("event")?, &path.get("kind")?, &body)?;
    let seq = report(&app, &caller, id, r).await?;
    Ok(reply(StatusCode::OK, json!({"ok": true}), seq))
}

#[utoipa::path(post, path = "/v1/integration/{identifier}/metrics/heartbeat", tag = "Integrations", summary = "An integration's heartbeat (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    description = "Accepted and not stored: the resync state and metrics already say whether it lives.",
    responses((status = 200, description = "`{ok}`"), (status = 404, description = "No such integration")))]
pub async fn heartbeat(State(app): State<AppState>, path: PathParams) -> ApiResult<Response> {
    existing(&app, &path.get("identifier")?)?;
    Ok(reply(StatusCode::OK, json!({"ok": true}), None))
}

#[utoipa::path(get, path = "/v1/integration/{identifier}/syncMetrics", tag = "Integrations", summary = "An integration's resyncs and their metrics, newest first (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    description = "Also served as `.../syncsMetadata`. Each resync: `{eventId, kinds: {kindIdentifier: {syncState, metrics, ...}}, createdAt, updatedAt}`.",
    responses((status = 200, description = "`{ok, data: {syncs, resyncState}}`"), (status = 404, description = "No such integration")))]
pub async fn sync_metrics(State(app): State<AppState>, path: PathParams) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let d = existing(&app, &id)?;
    let syncs = syncs(&app.pipeline.view(), &id);
    Ok(reply(
        StatusCode::OK,
        json!({"ok": true, "data": {"syncs": syncs, "resyncState": d.body.get("resyncState")}}),
        None,
    ))
}

#[utoipa::path(get, path = "/v1/integration/{identifier}/syncsMetadata", tag = "Integrations", summary = "An integration's resyncs (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier")),
    description = "The same answer as `.../syncMetrics`.",
    responses((status = 200, description = "`{ok, data: {syncs, resyncState}}`"), (status = 404, description = "No such integration")))]
pub async fn syncs_metadata(app: State<AppState>, path: PathParams) -> ApiResult<Response> {
    sync_metrics(app, path).await
}

#[utoipa::path(post, path = "/v1/integration/{identifier}/kinds/{kind}/examples", tag = "Integrations", summary = "Raw examples of a kind, for writing its mapping (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier"), ("kind" = String, Path, description = "Kind")),
    description = "`{examples: [...]}`: the first 10, each at most 16 KiB of JSON, replace the kind's earlier ones.",
    responses((status = 200, description = "`{ok}`"), (status = 404, description = "No such integration"), (status = 422, description = "A bad body or kind")))]
pub async fn add_examples(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let r = Report::examples(&path.get("kind")?, &body)?;
    let seq = report(&app, &caller, id, r).await?;
    Ok(reply(StatusCode::OK, json!({"ok": true}), seq))
}

#[utoipa::path(get, path = "/v1/integration/{identifier}/kinds/{kind}/examples", tag = "Integrations", summary = "A kind's raw examples (Admin; Berth extension)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Integration identifier"), ("kind" = String, Path, description = "Kind")),
    responses((status = 200, description = "`{ok, examples}`"), (status = 404, description = "No such integration")))]
pub async fn examples(State(app): State<AppState>, path: PathParams) -> ApiResult<Response> {
    let (id, kind) = (path.get("identifier")?, path.get("kind")?);
    existing(&app, &id)?;
    let key = format!("{}{kind}", record_prefix(&id, "examples"));
    let found = app.pipeline.view().definition(RECORD, &key).and_then(|d| d.body.get("examples").cloned());
    Ok(reply(StatusCode::OK, json!({"ok": true, "examples": found.unwrap_or_else(|| json!([]))}), None))
}

/// The reconciliation read's body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasourceEntities {
    /// The start of the `$datasource` (`port-ocean/{type}/`).
    pub datasource_prefix: String,
    /// The end of the `$datasource` (`/{identifier}/exporter`).
    pub datasource_suffix: String,
    /// Page size, 1 to 10,000 (default 5,000).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub from: Option<String>,
    /// Only entities last written before this time (RFC 3339): the resync's start, so what the resync
    /// wrote itself is left out.
    pub before: Option<String>,
}

/// The most entities one page of the reconciliation read answers.
pub const MAX_DATASOURCE_PAGE: usize = 10_000;

#[utoipa::path(post, path = "/v1/blueprints/entities/datasource-entities", tag = "Integrations", summary = "The entities an integration wrote, for reconciliation", security(("bearer" = [])),
    description = "Every readable entity whose `$datasource` (its last writer's User-Agent) starts with `datasource_prefix` and ends with `datasource_suffix`, last written before `before`, in (blueprint, identifier) order; `next` is present while more pages remain. (This static route also answers GET / PUT / PATCH / DELETE for the entity `datasource-entities` of a blueprint named `entities`.)",
    request_body = DatasourceEntities,
    responses((status = 200, description = "`{ok, entities: [{identifier, blueprint, title, properties, relations, $datasource, updatedAt ...}], next?}`"), (status = 400, description = "A bad limit, time or cursor")))]
pub async fn datasource_entities(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<DatasourceEntities>,
) -> ApiResult<Response> {
    let limit = body.limit.unwrap_or(5_000);
    if !(1..=MAX_DATASOURCE_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("`limit` must be between 1 and {MAX_DATASOURCE_PAGE}, got {limit}")));
    }
    let before = match body.before.as_deref().filter(|b| !b.is_empty()) {
        Some(b) => Some(
            berth_model::Timestamp::parse(b)
                .ok_or_else(|| ApiError::bad_request(format!("`before` must be an RFC 3339 date-time, got {b:?}")))?,
        ),
        None => None,
    };
    let from: Option<(String, String)> = match body.from.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => {
            Some(serde_json::from_str(f).map_err(|_| ApiError::bad_request("`from` is not a `next` this route gave"))?)
        }
        None => None,
    };
    let view = app.pipeline.view();
    let answer = crate::searching::run(&app, move || {
        let scoped = crate::access::scoped(&view, &caller);
        let projection = super::render::Projection::from_params(&Params(Vec::new()))?.with_view(&scoped);
        let wanted = |e: &berth_model::Entity| {
            e.datasource.as_deref().is_some_and(|d| {
                d.len() >= body.datasource_prefix.len() + body.datasource_suffix.len()
                    && d.starts_with(&body.datasource_prefix)
                    && d.ends_with(&body.datasource_suffix)
            }) && before.is_none_or(|b| e.updated_at < b)
        };
        let mut found = Vec::new();
        let mut next = None;
        let blueprints: Vec<String> = view.blueprints().map(|b| b.def.identifier.to_string()).collect();
        'blueprints: for bp in blueprints.iter().filter(|bp| from.as_ref().is_none_or(|(b, _)| *bp >= b)) {
            let entities: Box<dyn Iterator<Item = &std::sync::Arc<berth_model::Entity>>> = match &from {
                Some((b, after)) if b == bp => Box::new(scoped.entities_after(bp, after)),
                _ => Box::new(scoped.entities_of(bp)),
            };
            for e in entities.filter(|e| wanted(e)) {
                if found.len() == limit {
                    next = found.last().map(|last: &std::sync::Arc<berth_model::Entity>| {
                        json!([last.blueprint.to_string(), last.identifier.to_string()]).to_string()
                    });
                    break 'blueprints;
                }
                found.push(std::sync::Arc::clone(e));
            }
        }
        let entities: Vec<Value> = found.iter().map(|e| super::render::entity(e, &projection)).collect();
        let mut answer = json!({"ok": true, "entities": entities});
        if let Some(next) = next {
            answer["next"] = Value::String(next);
        }
        Ok(answer)
    })
    .await?;
    Ok(reply(StatusCode::OK, answer, None))
}
