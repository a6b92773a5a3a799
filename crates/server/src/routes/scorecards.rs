//! Scorecards, as Port serves them: `GET /v1/scorecards`, `GET/POST/PUT /v1/blueprints/{bp}/scorecards`
//! (PUT takes a bare array and makes the blueprint's scorecards exactly those, atomically),
//! `GET/PUT/PATCH/DELETE /v1/blueprints/{bp}/scorecards/{id}`. A scorecard is a definition object of its
//! blueprint (`berth_engine::definitions::scorecards` checks it); entities carry their results as
//! `scorecards.<id> = {level, rules: [{identifier, status, level}]}` on every read. Anyone signed in reads
//! scorecards; only Admins change them.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::Command;
use berth_engine::definitions::DefinitionWrite;
use berth_model::DefinitionKind;
use berth_model::definition::{scorecard_key, split_scorecard_key};
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathParams};

const KIND: DefinitionKind = DefinitionKind::Scorecard;

/// The scorecard routes; changes are Admin-only, checked before any body is read.
pub fn router() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/v1/scorecards", get(list_all))
        .route("/v1/blueprints/{bp}/scorecards", get(list).post(create).put(replace_all))
        .route("/v1/blueprints/{bp}/scorecards/{id}", get(get_one).put(replace).patch(patch).delete(delete))
        .route("/v1/blueprints/{bp}/scorecards/{id}/history", get(history))
        .route_layer(axum::middleware::from_fn(admin_for_changes))
}

async fn admin_for_changes(req: axum::extract::Request, next: axum::middleware::Next) -> ApiResult<Response> {
    if req.method() != axum::http::Method::GET {
        super::require_admin_request(&req, "change scorecards")?;
    }
    Ok(next.run(req).await)
}

fn blueprint_of(app: &AppState, params: &PathParams) -> ApiResult<String> {
    let bp = params.get("bp")?;
    if app.pipeline.view().blueprint(&bp).is_none() {
        return Err(ApiError::not_found(format!("blueprint `{bp}` was not found")));
    }
    Ok(bp)
}

async fn write(app: &AppState, caller: &Caller, command: Command) -> ApiResult<Response> {
    super::write_definition(app, caller, command, "scorecard").await
}

/// Every scorecard of `blueprint` (all blueprints when `None`), in (blueprint, identifier) order.
fn scorecards(app: &AppState, blueprint: Option<&str>) -> Vec<Value> {
    let view = app.pipeline.view();
    view.definitions(KIND)
        .filter(|d| blueprint.is_none_or(|bp| split_scorecard_key(&d.identifier).is_some_and(|(b, _)| b == bp)))
        .map(|d| d.view())
        .collect()
}

#[utoipa::path(get, path = "/v1/scorecards", tag = "Scorecards", summary = "List every blueprint's scorecards",
    security(("bearer" = [])), responses((status = 200, description = "`{ok, scorecards: [...]}`")))]
pub async fn list_all(State(app): State<AppState>) -> ApiResult<Response> {
    Ok(reply(StatusCode::OK, json!({"ok": true, "scorecards": scorecards(&app, None)}), None))
}

#[utoipa::path(get, path = "/v1/blueprints/{blueprint}/scorecards", tag = "Scorecards", summary = "List a blueprint's scorecards",
    security(("bearer" = [])), params(("blueprint" = String, Path, description = "Blueprint identifier")),
    responses((status = 200, description = "`{ok, scorecards: [...]}`"), (status = 404, description = "No such blueprint")))]
pub async fn list(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let bp = blueprint_of(&app, &params)?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "scorecards": scorecards(&app, Some(&bp))}), None))
}

#[utoipa::path(get, path = "/v1/blueprints/{blueprint}/scorecards/{id}", tag = "Scorecards", summary = "Get a scorecard",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"), ("id" = String, Path, description = "Scorecard identifier")),
    responses((status = 200, description = "`{ok, scorecard}`"), (status = 404, description = "No such blueprint or scorecard")))]
pub async fn get_one(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let (bp, id) = (blueprint_of(&app, &params)?, params.get("id")?);
    let view = app.pipeline.view();
    let card = view
        .definition(KIND, &scorecard_key(&bp, &id))
        .ok_or_else(|| ApiError::not_found(format!("scorecard `{id}` of blueprint `{bp}` was not found")))?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "scorecard": card.view()}), None))
}

#[utoipa::path(get, path = "/v1/blueprints/{blueprint}/scorecards/{id}/history", tag = "Scorecards",
    summary = "A scorecard's level distribution on past days (Berth extension)",
    description = "For each of the last `days` days (1 to 90, default 30; the last is today, judged now), how many entities the caller may read were at each level at the end of that day, overall and per team: the catalog as it was (replayed from the change log), judged by the scorecard as it is now. Reads the whole log once (at most 5,000,000 events).",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"), ("id" = String, Path, description = "Scorecard identifier"),
        ("days" = Option<u32>, Query, description = "How many days, 1 to 90 (default 30)")),
    responses((status = 200, description = "`{ok, scorecard, levels: [titles], days: [{date, at, levels: {title: n}, teams: {team: {title: n}}}]}`"),
        (status = 400, description = "A bad `days`"), (status = 404, description = "No such blueprint or scorecard"),
        (status = 503, description = "The log is too long to replay, or another replay is running")))]
pub async fn history(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    q: crate::extract::Params,
) -> ApiResult<Response> {
    let (bp, id) = (blueprint_of(&app, &params)?, params.get("id")?);
    let days = match q.get("days") {
        None => 30,
        Some(d) => {
            d.parse::<u32>().ok().filter(|d| (1..=berth_catalog::standards::MAX_DAYS).contains(d)).ok_or_else(|| {
                ApiError::bad_request(format!("`days` must be a whole number from 1 to 90, got {d:?}"))
            })?
        }
    };
    let view = app.pipeline.view();
    let def = view
        .definition(KIND, &scorecard_key(&bp, &id))
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("scorecard `{id}` of blueprint `{bp}` was not found")))?;
    let card = berth_model::scorecard::Scorecard::parse(&bp, &id, &def.body).map_err(ApiError::internal)?.0;
    let levels: Vec<String> = card.levels.iter().map(|l| l.title.clone()).collect();
    let days = level_history(&app, &caller, card, days).await?;
    let days: Vec<Value> =
        days.into_iter().map(|d| json!({"date": d.date, "at": d.at, "levels": d.levels, "teams": d.teams})).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "scorecard": id, "levels": levels, "days": days}), None))
}

/// [`berth_catalog::standards::level_history`] for the caller, its failures as API errors.
pub async fn level_history(
    app: &AppState,
    caller: &Caller,
    card: berth_model::scorecard::Scorecard,
    days: u32,
) -> ApiResult<Vec<berth_catalog::standards::Day>> {
    Ok(berth_catalog::standards::level_history(&app.pipeline, caller.principal(), card, days, crate::now()).await?)
}

#[utoipa::path(post, path = "/v1/blueprints/{blueprint}/scorecards", tag = "Scorecards", summary = "Create a scorecard (Admin)",
    security(("bearer" = [])), params(("blueprint" = String, Path, description = "Blueprint identifier")),
    description = "Body: `{identifier, title, levels?, filter?, rules: [{identifier, title, level, query: {combinator, conditions}}]}`. Levels default to Basic / Bronze / Silver / Gold (`{title, color}`); the first level has no rules; a rule's `level` is one of the others. An entity reaches a level when it passes every rule of that level and of the levels below. Queries are rules-language queries on the blueprint.",
    responses((status = 201, description = "`{ok, scorecard}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such blueprint"),
        (status = 409, description = "The identifier is taken"), (status = 422, description = "A bad scorecard")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let bp = blueprint_of(&app, &params)?;
    let id = match body.get("identifier") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(ApiError::unprocessable("a scorecard needs an `identifier` (a string)")),
    };
    let body = without_identifier(body);
    let how = DefinitionWrite::Create(body);
    write(&app, &caller, Command::WriteDefinition { kind: KIND, identifier: scorecard_key(&bp, &id), how }).await
}

/// The body without the fields the key holds (the identifier is checked against the path by the engine
/// through the key; the blueprint is the path's).
fn without_identifier(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.remove("identifier");
        map.remove("blueprint");
        map.remove("blueprintIdentifier");
    }
    body
}

#[utoipa::path(put, path = "/v1/blueprints/{blueprint}/scorecards", tag = "Scorecards", summary = "Set all of a blueprint's scorecards (Admin)",
    security(("bearer" = [])), params(("blueprint" = String, Path, description = "Blueprint identifier")),
    description = "A bare JSON array of scorecards (as POST takes them): each is created or replaced, and the blueprint's other scorecards are deleted; all of it or, if one is refused, none.",
    responses((status = 200, description = "`{ok, scorecards: [...]}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such blueprint"), (status = 422, description = "A bad scorecard (nothing changed)")))]
pub async fn replace_all(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let bp = blueprint_of(&app, &params)?;
    let Value::Array(items) = body else {
        return Err(ApiError::unprocessable("the body is a JSON array of scorecards"));
    };
    let mut wanted = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let id = match item.get("identifier") {
            Some(Value::String(id)) => id.clone(),
            _ => return Err(ApiError::unprocessable(format!("scorecard {i} needs an `identifier` (a string)"))),
        };
        wanted.push((id, without_identifier(item)));
    }
    let meta = super::blueprints::meta(&caller, &axum::http::HeaderMap::new(), None);
    let (outcome, seq) =
        app.pipeline.write_one(meta, Command::ReplaceScorecards { blueprint: bp.clone(), scorecards: wanted }).await?;
    outcome?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "scorecards": scorecards(&app, Some(&bp))}), Some(seq)))
}

#[utoipa::path(put, path = "/v1/blueprints/{blueprint}/scorecards/{id}", tag = "Scorecards", summary = "Create or replace a scorecard (Admin)",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"), ("id" = String, Path, description = "Scorecard identifier")),
    responses((status = 200, description = "`{ok, scorecard}` (replaced)"), (status = 201, description = "`{ok, scorecard}` (created)"), (status = 403, description = "Not an Admin"), (status = 422, description = "A bad scorecard")))]
pub async fn replace(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let (bp, id) = (blueprint_of(&app, &params)?, params.get("id")?);
    if body.get("identifier").and_then(Value::as_str).is_some_and(|given| given != id) {
        return Err(ApiError::unprocessable("the body's `identifier` differs from the path's"));
    }
    let how = DefinitionWrite::Upsert(without_identifier(body));
    write(&app, &caller, Command::WriteDefinition { kind: KIND, identifier: scorecard_key(&bp, &id), how }).await
}

#[utoipa::path(patch, path = "/v1/blueprints/{blueprint}/scorecards/{id}", tag = "Scorecards", summary = "Change a scorecard (Admin)",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"), ("id" = String, Path, description = "Scorecard identifier")),
    description = "The body's top-level keys (`title`, `levels`, `filter`, `rules`) replace the scorecard's; the whole is checked again.",
    responses((status = 200, description = "`{ok, scorecard}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such scorecard"), (status = 422, description = "A bad scorecard")))]
pub async fn patch(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let (bp, id) = (blueprint_of(&app, &params)?, params.get("id")?);
    let Value::Object(changes) = without_identifier(body) else {
        return Err(ApiError::unprocessable("a scorecard change is a JSON object"));
    };
    // Merged in the writer: two concurrent changes of different keys both land; a scorecard deleted
    // meanwhile stays deleted (404).
    let (key, how) = (scorecard_key(&bp, &id), DefinitionWrite::Merge(changes));
    write(&app, &caller, Command::WriteDefinition { kind: KIND, identifier: key, how }).await
}

#[utoipa::path(delete, path = "/v1/blueprints/{blueprint}/scorecards/{id}", tag = "Scorecards", summary = "Delete a scorecard (Admin)",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"), ("id" = String, Path, description = "Scorecard identifier")),
    responses((status = 200, description = "`{ok}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such scorecard")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let (bp, id) = (blueprint_of(&app, &params)?, params.get("id")?);
    write(&app, &caller, Command::DeleteDefinition { kind: KIND, identifier: scorecard_key(&bp, &id) }).await
}
