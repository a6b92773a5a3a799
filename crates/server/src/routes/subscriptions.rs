//! Subscriptions (a Berth extension): where the catalog's changes are delivered. `GET|POST /v1/subscriptions`,
//! `GET|PUT|DELETE /v1/subscriptions/{identifier}`, `GET .../status`, `POST .../rotate-secret`,
//! `POST .../replay`. A subscription is a definition object (`berth_engine::definitions::subscriptions`
//! checks its body); delivery is `berth_delivery`'s. Admin only, reads included (destinations and their
//! headers are the organisation's plumbing), checked before any body is read.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::Command;
use berth_engine::definitions::DefinitionWrite;
use berth_model::DefinitionKind;
use berth_model::subscription::{Destination, Subscription};
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathParams};

const KIND: DefinitionKind = DefinitionKind::Subscription;

pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/subscriptions", get(list).post(create))
        .route("/v1/subscriptions/{identifier}", get(get_one).put(replace).delete(delete))
        .route("/v1/subscriptions/{identifier}/status", get(status))
        .route("/v1/subscriptions/{identifier}/rotate-secret", post(rotate_secret))
        .route("/v1/subscriptions/{identifier}/replay", post(replay))
        .route("/v1/subscriptions/{identifier}/dead-letters", get(dead_letters).delete(drop_dead_letters))
        .route("/v1/subscriptions/{identifier}/dead-letters/retry", post(retry_dead_letters))
        .route("/v1/blueprints/{bp}/changelog-destination", get(changelog_destination))
        .route_layer(axum::middleware::from_fn(admin_only))
}

async fn admin_only(req: axum::extract::Request, next: axum::middleware::Next) -> ApiResult<Response> {
    super::require_admin_request(&req, "see or change subscriptions")?;
    Ok(next.run(req).await)
}

fn existing(app: &AppState, id: &str) -> ApiResult<std::sync::Arc<berth_model::Definition>> {
    super::existing_definition(app, KIND, id)
}

/// What the server can deliver: a destination whose broker is not configured, or a webhook to an address
/// the allow rules refuse, is a 422 that says why.
fn deliverable(app: &AppState, body: &Value) -> ApiResult<()> {
    let subscription = Subscription::parse(body).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let config = app.delivery.config();
    config.supports(&subscription.destination).map_err(ApiError::unprocessable)?;
    if let Destination::Webhook { url, .. } = &subscription.destination {
        config.check_url(url).map_err(ApiError::unprocessable)?;
    }
    Ok(())
}

async fn write(
    app: &AppState,
    caller: &Caller,
    id: &str,
    how: DefinitionWrite,
) -> ApiResult<(berth_model::Definition, bool, u64)> {
    let meta = super::blueprints::meta(caller, &axum::http::HeaderMap::new(), None);
    let command = Command::WriteDefinition { kind: KIND, identifier: id.to_string(), how };
    let (outcome, seq) = app.pipeline.write_one(meta, command).await?;
    match outcome? {
        berth_engine::Outcome::Definition { definition, created } => Ok(((*definition).clone(), created, seq)),
        _ => Err(ApiError::internal("a subscription write answered no definition")),
    }
}

/// A subscription as the API shows it (its secret never: it is shown once, at creation and rotation).
fn view_of(d: &berth_model::Definition) -> Value {
    d.view()
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "Subscriptions", summary = "List subscriptions (Berth extension, Admin)",
    security(("bearer" = [])),
    responses((status = 200, description = "`{ok, subscriptions: [{identifier, title, enabled, destination, filter, maxAttempts, concurrency, secretVersion, status}]}`"), (status = 403, description = "Not an Admin")))]
pub async fn list(State(app): State<AppState>) -> ApiResult<Response> {
    let view = app.pipeline.view();
    let subscriptions: Vec<Value> = view
        .definitions(KIND)
        .map(|d| {
            let mut v = view_of(d);
            v["status"] = app.delivery.status(&d.identifier).map(|s| s.json()).unwrap_or(Value::Null);
            v
        })
        .collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "subscriptions": subscriptions}), None))
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "Subscriptions", summary = "Create a subscription (Berth extension, Admin)",
    security(("bearer" = [])),
    description = "Body `{identifier, title?, enabled? (true), destination, filter?, maxAttempts? (10), concurrency? (1)}`; `destination` is `{type: WEBHOOK, url, headers?}` (header values are sealed before they are written: the API, the log and the event feed show `{sealed}`, which a PUT may send back unchanged), `{type: KAFKA, topic}`, `{type: NATS, subject}` or `{type: REDIS_STREAM, stream}`; `filter` is `{resources?, blueprints?, actions? (CREATE / UPDATE / DELETE), query? (rules language, on the entity)}`. Changes after the creation are delivered, in log order, at least once (a webhook with `concurrency` above 1, up to 32, keeps that many requests in flight and each entity's changes in log order, not the subscription's), each as Port's change event `{action, resourceType, trigger, context, diff: {before, after}, seq, subscription}`. Webhooks are signed as Port signs them (`x-port-timestamp`, `x-port-signature: v1,<base64 HMAC-SHA256 of \"timestamp.body\">`) with the subscription's secret, shown in this answer only. A destination whose broker the server was not started with is a 422 naming the flag; a webhook to a private or loopback address a 422 unless `--allow-destination` lists it.",
    responses((status = 201, description = "`{ok, subscription, secret}`"), (status = 403, description = "Not an Admin"), (status = 409, description = "The identifier is taken"), (status = 422, description = "A bad body, or a destination the server cannot deliver to")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = super::take_identifier(&mut body)?;
    if let Some(map) = body.as_object_mut() {
        // The secret's version and the dead letters are the server's to keep.
        for key in ["secretVersion", "deadLetters", "deadLettersDropped"] {
            map.remove(key);
        }
    }
    deliverable(&app, &body)?;
    app.delivery.config().seal_headers(&id, &mut body).map_err(ApiError::unprocessable)?;
    let (definition, _, seq) = write(&app, &caller, &id, DefinitionWrite::Create(body)).await?;
    // Delivery starts after the write that created it, on whichever replica takes it up. The subscription
    // is written already: if the store refuses the position now, its worker starts at the head it finds.
    if let Err(e) = app.pipeline.set_position(&berth_delivery::position_name(&id), seq).await {
        tracing::warn!(subscription = %id, error = %e, "recording a new subscription's first position failed; it starts at the head");
    }
    let secret = app.delivery.config().secret(&id, 1);
    Ok(reply(
        StatusCode::CREATED,
        json!({"ok": true, "subscription": view_of(&definition), "secret": secret}),
        Some(seq),
    ))
}

#[utoipa::path(get, path = "/v1/subscriptions/{identifier}", tag = "Subscriptions", summary = "Get a subscription and its delivery status (Berth extension, Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Subscription identifier")),
    responses((status = 200, description = "`{ok, subscription, status}`"), (status = 404, description = "No such subscription")))]
pub async fn get_one(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let id = params.get("identifier")?;
    let d = existing(&app, &id)?;
    let status = status_json(&app, &id).await?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "subscription": view_of(&d), "status": status}), None))
}

#[utoipa::path(put, path = "/v1/subscriptions/{identifier}", tag = "Subscriptions", summary = "Replace a subscription (Berth extension, Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Subscription identifier")),
    description = "The whole body, as at creation; delivery continues from where it was (the worker restarts with the new definition). The secret stays (rotate it with `rotate-secret`).",
    responses((status = 200, description = "`{ok, subscription}`"), (status = 404, description = "No such subscription"), (status = 422, description = "A bad body, or a destination the server cannot deliver to")))]
pub async fn replace(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = params.get("identifier")?;
    let current = existing(&app, &id)?;
    if let Some(map) = body.as_object_mut() {
        // What the server keeps in the body stays: the secret's version and the dead letters.
        for key in ["secretVersion", "deadLetters", "deadLettersDropped"] {
            map.remove(key);
            if let Some(v) = current.body.get(key) {
                map.insert(key.into(), v.clone());
            }
        }
    }
    deliverable(&app, &body)?;
    app.delivery.config().seal_headers(&id, &mut body).map_err(ApiError::unprocessable)?;
    let (definition, _, seq) = write(&app, &caller, &id, DefinitionWrite::Replace(body)).await?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "subscription": view_of(&definition)}), Some(seq)))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{identifier}", tag = "Subscriptions", summary = "Delete a subscription (Berth extension, Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Subscription identifier")),
    responses((status = 200, description = "`{ok}`: delivery stops within a second"), (status = 404, description = "No such subscription")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let id = params.get("identifier")?;
    let meta = super::blueprints::meta(&caller, &axum::http::HeaderMap::new(), None);
    let (outcome, seq) = app.pipeline.write_one(meta, Command::DeleteDefinition { kind: KIND, identifier: id }).await?;
    outcome?;
    Ok(reply(StatusCode::OK, json!({"ok": true}), Some(seq)))
}

/// The delivery status: this replica's view (attempts, counts) and the durable position every replica shares.
async fn status_json(app: &AppState, id: &str) -> ApiResult<Value> {
    let mut status = app.delivery.status(id).map(|s| s.json()).unwrap_or_else(|| json!({"state": "not running here"}));
    let position = app.pipeline.position(&berth_delivery::position_name(id)).await.map_err(ApiError::internal)?;
    let head = app.pipeline.store_head().await.map_err(ApiError::internal)?;
    if let Some(p) = position {
        status["position"] = json!(p);
        status["lag"] = json!(head.saturating_sub(p));
    }
    status["head"] = json!(head);
    Ok(status)
}

#[utoipa::path(get, path = "/v1/subscriptions/{identifier}/status", tag = "Subscriptions", summary = "A subscription's delivery status (Berth extension, Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Subscription identifier")),
    description = "`state` (`delivering`, `standby`: another replica delivers it, `failing`, `stopped`), `position` (the last sequence number delivered, shared by every replica), `head`, `lag`, `delivered`, `filteredOut`, `failures`, `deadLettered`, `yieldedMillis` (how long this replica's worker rested for a busy writer, see `--delivery-yield-for`), `lastError`, and this replica's last 50 `attempts` (`{at, seq, delivered, status, error, millis}`, newest first).",
    responses((status = 200, description = "`{ok, status}`"), (status = 404, description = "No such subscription")))]
pub async fn status(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let id = params.get("identifier")?;
    existing(&app, &id)?;
    let status = status_json(&app, &id).await?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "status": status}), None))
}

#[utoipa::path(post, path = "/v1/subscriptions/{identifier}/rotate-secret", tag = "Subscriptions", summary = "Rotate a subscription's signing secret (Berth extension, Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Subscription identifier")),
    description = "Messages are signed with a new secret from the next one the worker sends (within a second); the answer shows it, once.",
    responses((status = 200, description = "`{ok, secret, secretVersion}`"), (status = 404, description = "No such subscription")))]
pub async fn rotate_secret(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let id = params.get("identifier")?;
    let current = existing(&app, &id)?;
    let next = current
        .body
        .get("secretVersion")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .saturating_add(1)
        .min(u64::from(u32::MAX)) as u32;
    let mut changes = serde_json::Map::new();
    changes.insert("secretVersion".into(), json!(next));
    let (_, _, seq) = write(&app, &caller, &id, DefinitionWrite::Merge(changes)).await?;
    let secret = app.delivery.config().secret(&id, next);
    Ok(reply(StatusCode::OK, json!({"ok": true, "secret": secret, "secretVersion": next}), Some(seq)))
}

#[utoipa::path(post, path = "/v1/subscriptions/{identifier}/replay", tag = "Subscriptions", summary = "Deliver again from a sequence number (Berth extension, Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Subscription identifier")),
    description = "Body `{fromSeq}` or `{fromTime}`: the changes after that sequence number, or written after that time, are delivered again (or skipped, forward). The worker picks the position up at its next page.",
    responses((status = 200, description = "`{ok, position}`"), (status = 404, description = "No such subscription"), (status = 422, description = "A bad `fromSeq` or `fromTime`")))]
pub async fn replay(
    State(app): State<AppState>,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = params.get("identifier")?;
    existing(&app, &id)?;
    let head = app.pipeline.store_head().await.map_err(ApiError::internal)?;
    let from = match (body.get("fromSeq"), body.get("fromTime").and_then(Value::as_str)) {
        (Some(seq), None) => seq.as_u64().filter(|s| *s <= head).ok_or_else(|| {
            ApiError::unprocessable(format!("`fromSeq` is a sequence number from 0 to the log's head ({head})"))
        })?,
        (None, Some(t)) => {
            let time = berth_model::Timestamp::parse(t).ok_or_else(|| {
                ApiError::unprocessable(format!("`fromTime` must be an ISO 8601 date-time, got {t:?}"))
            })?;
            app.pipeline.seq_at(time).await.map_err(ApiError::internal)?
        }
        _ => {
            return Err(ApiError::unprocessable(
                "give `fromSeq` (a sequence number) or `fromTime` (an ISO 8601 date-time)",
            ));
        }
    };
    app.pipeline.set_position(&berth_delivery::position_name(&id), from).await.map_err(ApiError::internal)?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "position": from}), None))
}

/// The sequence numbers a body names (`{seqs: [..]}`), or `None` for all.
fn seqs_of(body: &Value) -> ApiResult<Option<Vec<u64>>> {
    match body.get("seqs") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.len() <= berth_model::subscription::MAX_DEAD_LETTERS => items
            .iter()
            .map(|v| v.as_u64().ok_or_else(|| ApiError::unprocessable("`seqs` is a list of sequence numbers")))
            .collect::<ApiResult<Vec<u64>>>()
            .map(Some),
        Some(_) => Err(ApiError::unprocessable("`seqs` is a list of at most 1000 sequence numbers")),
    }
}

/// Changes the dead letters of a subscription as the caller.
async fn edit_letters(
    app: &AppState,
    caller: &Caller,
    id: &str,
    edit: impl FnOnce(&mut Vec<berth_model::subscription::DeadLetter>),
) -> ApiResult<Value> {
    let meta = super::blueprints::meta(caller, &axum::http::HeaderMap::new(), None);
    match berth_delivery::dead_letters::edit(&app.pipeline, meta, id, edit).await {
        Ok(list) => Ok(serde_json::to_value(list).map_err(ApiError::internal)?),
        Err(berth_delivery::dead_letters::EditError::Domain(e)) => Err(e.into()),
        Err(berth_delivery::dead_letters::EditError::Pipeline(e)) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/v1/subscriptions/{identifier}/dead-letters", tag = "Subscriptions", summary = "A subscription's dead letters (Berth extension, Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Subscription identifier")),
    description = "Messages that failed `maxAttempts` times, oldest first: `{seq, attempts, error, at, retry}` (the message is the change at `seq`, rebuilt from the log). Delivery went on without them; at most 1,000 are kept (`deadLettersDropped` counts those dropped past it).",
    responses((status = 200, description = "`{ok, deadLetters, deadLettersDropped}`"), (status = 404, description = "No such subscription")))]
pub async fn dead_letters(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let d = existing(&app, &params.get("identifier")?)?;
    Ok(reply(
        StatusCode::OK,
        json!({"ok": true, "deadLetters": d.body.get("deadLetters").cloned().unwrap_or(json!([])),
            "deadLettersDropped": d.body.get("deadLettersDropped").cloned().unwrap_or(json!(0))}),
        None,
    ))
}

#[utoipa::path(post, path = "/v1/subscriptions/{identifier}/dead-letters/retry", tag = "Subscriptions", summary = "Retry dead letters (Berth extension, Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Subscription identifier")),
    description = "Body `{seqs?}` (all when absent): the worker sends them again (after later changes: each carries its `seq`); a delivered one leaves the list, one that fails again stays with its attempts counted.",
    responses((status = 200, description = "`{ok, deadLetters}`"), (status = 404, description = "No such subscription"), (status = 422, description = "A bad `seqs`")))]
pub async fn retry_dead_letters(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let seqs = seqs_of(&body)?;
    let letters = edit_letters(&app, &caller, &params.get("identifier")?, |letters| {
        berth_delivery::dead_letters::mark_for_retry(letters, seqs.as_deref())
    })
    .await?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "deadLetters": letters}), None))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{identifier}/dead-letters", tag = "Subscriptions", summary = "Drop dead letters (Berth extension, Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Subscription identifier")),
    description = "Body `{seqs?}` (all when absent, or no body): those dead letters are forgotten.",
    responses((status = 200, description = "`{ok, deadLetters}`"), (status = 404, description = "No such subscription"), (status = 422, description = "A bad `seqs`")))]
pub async fn drop_dead_letters(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    // The body is optional: none drops them all.
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?
    };
    let seqs = seqs_of(&body)?;
    let letters = edit_letters(&app, &caller, &params.get("identifier")?, |letters| {
        berth_delivery::dead_letters::drop_letters(letters, seqs.as_deref())
    })
    .await?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "deadLetters": letters}), None))
}

#[utoipa::path(get, path = "/v1/blueprints/{bp}/changelog-destination", tag = "Subscriptions", summary = "A blueprint's changelog destination and its delivery (Berth extension, Admin)",
    security(("bearer" = [])), params(("bp" = String, Path, description = "Blueprint identifier")),
    description = "A blueprint's `changelogDestination` (Port's: `{type: WEBHOOK, url}` or `{type: KAFKA}`, to `--kafka-changelog-topic`) is delivered like a subscription to the blueprint's entities, named `changelog#<blueprint>`: this answers it, the secret its webhooks are signed with, and its delivery status. A message that keeps failing is retried (a changelog destination keeps no dead letters).",
    responses((status = 200, description = "`{ok, destination, secret, status}`"), (status = 404, description = "No such blueprint, or it has no changelog destination Berth delivers")))]
pub async fn changelog_destination(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let bp = params.get("bp")?;
    let view = app.pipeline.view();
    let blueprint =
        view.blueprint(&bp).ok_or_else(|| ApiError::not_found(format!("blueprint `{bp}` was not found")))?;
    let body = blueprint
        .def
        .changelog_destination
        .as_ref()
        .and_then(|d| app.delivery.config().changelog_body(&bp, d))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "blueprint `{bp}` has no changelog destination Berth delivers (WEBHOOK with a url, or KAFKA)"
            ))
        })?;
    let id = berth_delivery::changelog_id(&bp);
    let status = status_json(&app, &id).await?;
    let secret = app.delivery.config().secret(&id, 1);
    Ok(reply(
        StatusCode::OK,
        json!({"ok": true, "destination": body["destination"], "secret": secret, "status": status}),
        None,
    ))
}
