//! Inbound webhooks, as Port serves them: `GET|POST /v1/webhooks`, `GET|PUT|PATCH|DELETE
//! /v1/webhooks/{identifier}` (Admins; answered under Port's envelope key `integration`), `GET
//! /v1/webhooks/metadata` (anyone signed in: what each webhook is, not how it is secured or mapped), and the
//! ingest URL `POST /ingest/{webhookKey}`, which takes any JSON without a token. Berth extensions: a
//! webhook's events with their outcomes (`GET /v1/webhooks/{identifier}/events`) and processing one again
//! (`POST .../events/{event}/retry`).
//!
//! An accepted request is stored (a `WebhookEvent`, durable) before the 202; the ingestion worker
//! (`berth_delivery::ingest`) processes the events in order. A wrong or missing signature is a 401 that
//! writes nothing; a request whose `requestIdentifierPath` was seen is a 202 that stores nothing again. The
//! webhook's secret is sealed before it is written; `authorization`, `cookie` and the signature header are
//! not kept with the request.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use berth_engine::Command;
use berth_engine::definitions::DefinitionWrite;
use berth_model::DefinitionKind;
use berth_model::webhook::{MAX_PENDING, MAX_REQUEST_BYTES, Signature, Webhook};
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Params, PathParams};

const KIND: DefinitionKind = DefinitionKind::Webhook;

/// The Admin routes; `metadata` and the ingest route are mounted apart (see [`ingest`]).
pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    let admin = axum::Router::new()
        .route("/v1/webhooks", get(list).post(create))
        .route("/v1/webhooks/{identifier}", get(get_one).put(replace).patch(patch).delete(delete))
        .route("/v1/webhooks/{identifier}/events", get(events))
        .route("/v1/webhooks/{identifier}/events/{event}/retry", post(retry))
        .route_layer(axum::middleware::from_fn(admins_only));
    axum::Router::new().route("/v1/webhooks/metadata", get(metadata)).merge(admin)
}

async fn admins_only(req: axum::extract::Request, next: axum::middleware::Next) -> ApiResult<Response> {
    super::require_admin_request(&req, "read or change webhooks")?;
    Ok(next.run(req).await)
}

/// The ingest URL of a webhook key, on the host the request came to.
fn url_of(headers: &HeaderMap, key: &str) -> String {
    format!("{}/ingest/{key}", super::public_base(headers))
}

/// A webhook as the API shows it: its body, identifier and times, and its ingest `url`.
pub(crate) fn view_of(headers: &HeaderMap, d: &berth_model::Definition) -> Value {
    let mut v = d.view();
    if let Some(key) = d.body.get("webhookKey").and_then(Value::as_str) {
        v["url"] = Value::String(url_of(headers, key));
    }
    v
}

/// A fresh webhook key: 32 random letters and digits.
fn new_key() -> ApiResult<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness for a webhook key: {e}")))?;
    Ok(bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect())
}

/// Seals `security.secret` when given in the clear; a sealed one (a body read back and sent again) is kept if
/// it opens for this webhook.
fn seal_secret(app: &AppState, id: &str, body: &mut Value) -> ApiResult<()> {
    let Some(secret) = body.pointer_mut("/security/secret") else { return Ok(()) };
    match secret {
        Value::String(plain) if !plain.is_empty() => {
            let sealed = app.delivery.config().seal_webhook_secret(id, plain).map_err(ApiError::internal)?;
            *secret = json!({"sealed": sealed});
        }
        Value::Object(m) => {
            let sealed = m.get("sealed").and_then(Value::as_str).unwrap_or_default();
            app.delivery
                .config()
                .open_webhook_secret(id, sealed)
                .map_err(|_| ApiError::unprocessable("`security.secret` was sealed for another webhook or server"))?;
        }
        _ => return Err(ApiError::unprocessable("`security.secret` is a string")),
    }
    Ok(())
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

fn existing(app: &AppState, id: &str) -> ApiResult<std::sync::Arc<berth_model::Definition>> {
    super::existing_definition(app, KIND, id)
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "Webhooks", summary = "List inbound webhooks (Admin)", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, integrations}`"), (status = 403, description = "Not an Admin")))]
pub async fn list(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let all: Vec<Value> = app.pipeline.view().definitions(KIND).map(|d| view_of(&headers, d)).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "integrations": all}), None))
}

#[utoipa::path(get, path = "/v1/webhooks/metadata", tag = "Webhooks", summary = "What each inbound webhook is (anyone signed in)", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, integrations: [{identifier, title, description, icon, enabled}]}`")))]
pub async fn metadata(State(app): State<AppState>) -> ApiResult<Response> {
    let all: Vec<Value> = app
        .pipeline
        .view()
        .definitions(KIND)
        .map(|d| {
            let b = &d.body;
            json!({"identifier": d.identifier, "title": b.get("title"), "description": b.get("description"),
                "icon": b.get("icon"), "enabled": b.get("enabled").cloned().unwrap_or(Value::Bool(true))})
        })
        .collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "integrations": all}), None))
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "Webhooks", summary = "Create an inbound webhook (Admin)", security(("bearer" = [])),
    description = "Port's webhook object: `{identifier, title, description?, icon?, enabled?, security?: {secret, signatureHeaderName, signatureAlgorithm: sha1 | sha256 | plain, signaturePrefix?, requestIdentifierPath?}, mappings: [{blueprint, filter?, operation?: create | delete | {type, deleteDependents}, itemsToParse?, entity: {identifier, title?, icon?, team?, properties?, relations?}}]}`; every mapping string is jq over `{body, headers, queryParams, item?}`. The answer carries the ingest `url` (`POST /ingest/{webhookKey}`, no token). The secret is sealed before it is written.",
    responses((status = 201, description = "`{ok, integration}`"), (status = 403, description = "Not an Admin"), (status = 409, description = "The identifier is taken"), (status = 422, description = "A bad webhook: a 422 names the field, or the jq that does not compile")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = super::take_identifier(&mut body)?;
    let body = prepared(&app, &id, body)?;
    write(&app, &caller, &headers, id, DefinitionWrite::Create(body)).await
}

/// A new webhook's body as it is written: a fresh ingest key, the secret sealed, no `url` (it is computed).
pub(crate) fn prepared(app: &AppState, id: &str, mut body: Value) -> ApiResult<Value> {
    if let Some(map) = body.as_object_mut() {
        map.remove("url");
        map.insert("webhookKey".into(), Value::String(new_key()?));
    }
    seal_secret(app, id, &mut body)?;
    Ok(body)
}

#[utoipa::path(get, path = "/v1/webhooks/{identifier}", tag = "Webhooks", summary = "Get an inbound webhook (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Webhook identifier")),
    responses((status = 200, description = "`{ok, integration}`"), (status = 404, description = "No such webhook")))]
pub async fn get_one(State(app): State<AppState>, headers: HeaderMap, path: PathParams) -> ApiResult<Response> {
    let d = existing(&app, &path.get("identifier")?)?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "integration": view_of(&headers, &d)}), None))
}

/// A replacement's or patch's body as it is written: the webhook's key kept (its ingest URL does not
/// change), the secret sealed. (An `identifier` other than the route's is refused by the definition check.)
fn changed(app: &AppState, id: &str, mut body: Value) -> ApiResult<Value> {
    let current = existing(app, id)?;
    let map = body.as_object_mut().ok_or_else(|| ApiError::unprocessable("a webhook is a JSON object"))?;
    map.remove("url");
    if let Some(key) = current.body.get("webhookKey") {
        map.insert("webhookKey".into(), key.clone());
    }
    seal_secret(app, id, &mut body)?;
    Ok(body)
}

#[utoipa::path(put, path = "/v1/webhooks/{identifier}", tag = "Webhooks", summary = "Replace an inbound webhook (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Webhook identifier")),
    responses((status = 200, description = "`{ok, integration}`"), (status = 404, description = "No such webhook"), (status = 422, description = "A bad webhook")))]
pub async fn replace(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let body = changed(&app, &id, body)?;
    write(&app, &caller, &headers, id, DefinitionWrite::Replace(body)).await
}

#[utoipa::path(patch, path = "/v1/webhooks/{identifier}", tag = "Webhooks", summary = "Change some fields of an inbound webhook (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Webhook identifier")),
    description = "The top-level fields given replace their own (`mappings` whole, `security` whole).",
    responses((status = 200, description = "`{ok, integration}`"), (status = 404, description = "No such webhook"), (status = 422, description = "A bad webhook")))]
pub async fn patch(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    let Value::Object(mut changes) = changed(&app, &id, body)? else {
        return Err(ApiError::unprocessable("a patch is a JSON object"));
    };
    // A merge's keys replace the body's: the identifier lives beside it.
    if changes.get("identifier").is_some_and(|v| v.as_str() == Some(id.as_str())) {
        changes.remove("identifier");
    }
    write(&app, &caller, &headers, id, DefinitionWrite::Merge(changes)).await
}

#[utoipa::path(delete, path = "/v1/webhooks/{identifier}", tag = "Webhooks", summary = "Delete an inbound webhook (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Webhook identifier")),
    responses((status = 200, description = "`{ok}`: its URL stops taking requests"), (status = 404, description = "No such webhook")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    let identifier = path.get("identifier")?;
    super::write_definition(&app, &caller, Command::DeleteDefinition { kind: KIND, identifier }, "integration").await
}

/// An event as the API shows it.
fn event_view(d: &berth_model::Definition) -> Value {
    let mut v = (*d.body).clone();
    v["id"] = Value::String(d.identifier.clone());
    v["receivedAt"] = serde_json::to_value(d.created_at).unwrap_or(Value::Null);
    v
}

#[utoipa::path(get, path = "/v1/webhooks/{identifier}/events", tag = "Webhooks", summary = "A webhook's requests and what they did (Admin; Berth extension)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Webhook identifier"),
        ("status" = Option<String>, Query, description = "pending, processed or failed"),
        ("limit" = Option<usize>, Query, description = "1 to 1000 (default 100)")),
    description = "Newest first: `{id, webhook, status, request: {body, headers, queryParams}, requestId?, results: [{matched, upserted, deleted, errors}] (one per mapping), receivedAt, processedAt}`.",
    responses((status = 200, description = "`{ok, events}`"), (status = 404, description = "No such webhook")))]
pub async fn events(State(app): State<AppState>, path: PathParams, params: Params) -> ApiResult<Response> {
    let id = path.get("identifier")?;
    existing(&app, &id)?;
    let limit = params.page_size(100)?;
    let status = params.get("status").filter(|s| !s.is_empty());
    let view = app.pipeline.view();
    let prefix = format!("{id}#");
    let mut found: Vec<&std::sync::Arc<berth_model::Definition>> = view
        .definitions_from(DefinitionKind::WebhookEvent, &prefix)
        .take_while(|d| d.identifier.starts_with(&prefix))
        .filter(|d| status.is_none_or(|s| d.body.get("status").and_then(Value::as_str) == Some(s)))
        .collect();
    found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.identifier.cmp(&a.identifier)));
    let events: Vec<Value> = found.into_iter().take(limit).map(|d| event_view(d)).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "events": events}), None))
}

#[utoipa::path(post, path = "/v1/webhooks/{identifier}/events/{event}/retry", tag = "Webhooks", summary = "Process a webhook request again (Admin; Berth extension)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Webhook identifier"), ("event" = String, Path, description = "Event id")),
    description = "After a mapping was fixed: the stored request is processed again with the webhook as it is now.",
    responses((status = 200, description = "`{ok}`"), (status = 404, description = "No such event"), (status = 422, description = "The event waits to be processed already")))]
pub async fn retry(State(app): State<AppState>, path: PathParams) -> ApiResult<Response> {
    let (webhook, event) = (path.get("identifier")?, path.get("event")?);
    if !event.starts_with(&format!("{webhook}#")) {
        return Err(ApiError::not_found(format!("event `{event}` of webhook `{webhook}` was not found")));
    }
    let (outcome, seq) =
        app.pipeline.write_one(crate::system_meta(), Command::RequeueWebhookEvent { id: event }).await?;
    outcome?;
    Ok(reply(StatusCode::OK, json!({"ok": true}), Some(seq)))
}

/// Whether the request carries the webhook's signature.
fn signed(app: &AppState, id: &str, webhook: &Webhook, headers: &HeaderMap, raw: &[u8]) -> bool {
    let (header, prefix) = match &webhook.signature {
        Signature::None => return true,
        Signature::Hmac { header, prefix, .. } | Signature::Plain { header, prefix } => (header, prefix),
    };
    let Some(secret) =
        webhook.sealed_secret.as_deref().and_then(|s| app.delivery.config().open_webhook_secret(id, s).ok())
    else {
        return false;
    };
    let Some(given) = headers.get(header.as_str()).and_then(|v| v.to_str().ok()) else { return false };
    let given = given.strip_prefix(prefix.as_str()).unwrap_or(given).trim();
    let expected = match &webhook.signature {
        Signature::Hmac { sha256: true, .. } => hex(&hmac(ring::hmac::HMAC_SHA256, secret.as_bytes(), raw)),
        Signature::Hmac { sha256: false, .. } => {
            hex(&hmac(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes(), raw))
        }
        _ => secret,
    };
    crate::auth::constant_time_eq(given.to_ascii_lowercase().as_bytes(), expected.to_ascii_lowercase().as_bytes())
}

/// HMAC of `message` under `key` (ring's; SHA-1 only because Port's webhooks offer it for legacy senders).
fn hmac(algorithm: ring::hmac::Algorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(algorithm, key), message).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The headers a request is kept with: names lower-cased, values as text; credentials and the signature
/// itself left out.
fn kept_headers(headers: &HeaderMap, webhook: &Webhook) -> Map<String, Value> {
    let signature = match &webhook.signature {
        Signature::Hmac { header, .. } | Signature::Plain { header, .. } => header.as_str(),
        Signature::None => "",
    };
    headers
        .iter()
        .filter(|(k, _)| !["authorization", "cookie", "proxy-authorization", signature].contains(&k.as_str()))
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), Value::String(v.to_string()))))
        .collect()
}

#[utoipa::path(post, path = "/ingest/{webhookKey}", tag = "Webhooks", summary = "A webhook's ingest URL (no token)",
    params(("webhookKey" = String, Path, description = "The webhook's key, from its `url`")),
    description = "Any JSON body up to 512 KiB. Answered 202 once the request is stored: its mappings run after, in order (see `/v1/webhooks/{identifier}/events`). 401 for a missing or wrong signature (nothing is stored); a request whose `requestIdentifierPath` was seen before is answered 202 `{duplicate: true}` and stored once; a disabled webhook drops requests (202 `{dropped: true}`).",
    responses((status = 202, description = "`{ok, eventId}`"), (status = 400, description = "Not JSON"), (status = 401, description = "A missing or wrong signature"), (status = 404, description = "No webhook has this key"), (status = 413, description = "Larger than 512 KiB"), (status = 503, description = "5,000 requests of this webhook wait to be processed: send it again later (`Retry-After`)")))]
pub async fn ingest(
    State(app): State<AppState>,
    path: PathParams,
    params: Params,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult<Response> {
    let key = path.get("webhookKey")?;
    let view = app.pipeline.view();
    let found = view
        .definitions(KIND)
        .find(|d| {
            d.body
                .get("webhookKey")
                .and_then(Value::as_str)
                .is_some_and(|k| crate::auth::constant_time_eq(k.as_bytes(), key.as_bytes()))
        })
        .cloned();
    drop(view);
    let Some(d) = found else { return Err(ApiError::not_found("no webhook has this key")) };
    // Read and compiled once per version of the webhook.
    let ready = app
        .delivery
        .webhooks_ready()
        .get(&d)
        .ok_or_else(|| ApiError::internal(format!("the stored webhook `{}` does not read", d.identifier)))?;
    let webhook = &ready.0;
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::new(
            berth_model::ErrorCode::PayloadTooLarge,
            format!("the request is {} bytes; a webhook takes at most {MAX_REQUEST_BYTES}", raw.len()),
        ));
    }
    if !signed(&app, &d.identifier, webhook, &headers, &raw) {
        return Err(ApiError::unauthorized("the request's signature is missing or wrong"));
    }
    if !webhook.enabled {
        return Ok(reply(StatusCode::ACCEPTED, json!({"ok": true, "dropped": true}), None));
    }
    if app.pipeline.view().pending_events_of(&d.identifier, MAX_PENDING) >= MAX_PENDING {
        let mut e = ApiError::unavailable(format!(
            "webhook `{}` has {MAX_PENDING} requests waiting to be processed; send this one again later",
            d.identifier
        ));
        e.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return Err(e);
    }
    let body: Value =
        serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let query: Map<String, Value> = params.0.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let kept = kept_headers(&headers, webhook);
    let context = berth_engine::inbound::context(&body, &kept, &query);
    let request_id = webhook.request_id.as_deref().and_then(|code| {
        ready.1.run(code, &context).ok().and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    });
    let suffix = match &request_id {
        Some(r) => {
            let digest = sha2::Sha256::digest(r.as_bytes());
            format!("r{}", hex(&digest[..12]))
        }
        None => {
            let mut bytes = [0u8; 6];
            getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
            format!("t{:013}{}", crate::now().millis(), hex(&bytes))
        }
    };
    let event = format!("{}#{suffix}", d.identifier);
    let mut stored = json!({"webhook": d.identifier, "status": "pending",
        "request": {"body": body, "headers": kept, "queryParams": query}});
    if let Some(r) = &request_id {
        stored["requestId"] = Value::String(r.clone());
    }
    if app.pipeline.view().definition(DefinitionKind::WebhookEvent, &event).is_some() {
        return Ok(reply(StatusCode::ACCEPTED, json!({"ok": true, "eventId": event, "duplicate": true}), None));
    }
    let meta = berth_delivery::ingest::webhook_meta(&d.identifier);
    if !app.pipeline.view().has_waiting_events(&d.identifier) {
        return inline(&app, &d, &ready, meta, event, stored).await;
    }
    let (outcome, seq) =
        app.pipeline.write_one(meta, Command::ReceiveWebhookEvent { id: event.clone(), body: stored }).await?;
    match outcome {
        Ok(_) => Ok(reply(StatusCode::ACCEPTED, json!({"ok": true, "eventId": event}), Some(seq))),
        Err(berth_model::DomainError::AlreadyExists { .. }) => {
            Ok(reply(StatusCode::ACCEPTED, json!({"ok": true, "eventId": event, "duplicate": true}), None))
        }
        Err(e) => Err(e.into()),
    }
}

/// A request processed in the request (its webhook has none waiting for the worker, so order holds): the
/// mappings applied here, the request (`processing`) and its entity writes stored in one batch, so the
/// entities are visible when the 202 goes out; the outcome recorded after (should that record be lost, the
/// worker processes the request again after a grace period: entity upserts are idempotent).
async fn inline(
    app: &AppState,
    d: &berth_model::Definition,
    ready: &berth_delivery::ingest::Ready,
    meta: berth_engine::WriteMeta,
    event: String,
    mut stored: Value,
) -> ApiResult<Response> {
    let mut planned = berth_delivery::ingest::plan(Some(ready), &d.identifier, &event, &stored);
    stored["status"] = Value::String("processing".into());
    let mut commands = vec![Command::ReceiveWebhookEvent { id: event.clone(), body: stored }];
    commands.append(&mut planned.commands);
    let result = app.pipeline.write(meta.clone(), commands).await?;
    let mut outcomes = result.outcomes.into_iter();
    match outcomes.next() {
        Some(Ok(_)) => {}
        // Two deliveries of one request at once: the other one stored it (and wrote the same entities).
        Some(Err(berth_model::DomainError::AlreadyExists { .. })) => {
            return Ok(reply(StatusCode::ACCEPTED, json!({"ok": true, "eventId": event, "duplicate": true}), None));
        }
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ApiError::internal("the request's write lost an answer")),
    }
    let record = berth_delivery::ingest::record(planned, &mut outcomes);
    let pipeline = std::sync::Arc::clone(&app.pipeline);
    tokio::spawn(async move {
        if let Err(e) = pipeline.write(meta, vec![record]).await {
            tracing::warn!(error = %e, "a webhook request's outcome was not recorded; the worker processes it again");
        }
    });
    Ok(reply(StatusCode::ACCEPTED, json!({"ok": true, "eventId": event}), Some(result.seq)))
}
