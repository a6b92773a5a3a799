//! `/v1/blueprints`: list, create, get, replace, patch (JSON merge patch), delete.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::{Command, Outcome, WriteMeta};
use berth_model::{Blueprint, Origin};
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathParams};

pub fn meta(caller: &Caller, headers: &axum::http::HeaderMap, run_id: Option<String>) -> WriteMeta {
    WriteMeta {
        actor: caller.client_id.clone(),
        origin: Origin::Api,
        now: crate::now(),
        // Kept in every entity the write touches: cut to a bounded length.
        datasource: headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| berth_model::limits::truncate(ua, berth_model::limits::MAX_DATASOURCE_LEN).to_string()),
        run_id,
        principal: Some(caller.principal()),
    }
}

fn require_admin(caller: &Caller) -> ApiResult<()> {
    super::require_admin(caller, "change blueprints")
}

async fn write_blueprint(
    app: &AppState,
    meta: WriteMeta,
    command: Command,
    created: StatusCode,
) -> ApiResult<Response> {
    let (outcome, seq) = app.pipeline.write_one(meta, command).await?;
    match outcome? {
        Outcome::Blueprint(bp) => Ok(reply(created, json!({"ok": true, "blueprint": *bp}), Some(seq))),
        _ => Ok(reply(StatusCode::OK, json!({"ok": true}), Some(seq))),
    }
}

#[utoipa::path(get, path = "/v1/blueprints", tag = "Blueprints", summary = "List blueprints",
    security(("bearer" = [])),
    responses((status = 200, description = "`{ok, blueprints: [...]}`", body = Vec<Blueprint>)))]
pub async fn list(State(app): State<AppState>) -> ApiResult<Response> {
    let view = app.pipeline.view();
    let blueprints: Vec<&Blueprint> = view.blueprints().map(|b| &*b.def).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "blueprints": blueprints}), None))
}

#[utoipa::path(post, path = "/v1/blueprints", tag = "Blueprints", summary = "Create a blueprint",
    description = "Validates the definition: identifier rules, property types and formats, `enum`, `pattern`, bounds, `required` naming existing properties, relation targets that exist. Unknown keys of property definitions are kept and echoed back.",
    security(("bearer" = [])),
    request_body(content = Object, description = "A blueprint: `identifier`, `title`, `schema` required"),
    responses((status = 201, description = "`{ok, blueprint}`", body = Blueprint),
              (status = 409, description = "The identifier is taken"),
              (status = 422, description = "The definition is invalid")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    write_blueprint(&app, meta(&caller, &headers, None), Command::CreateBlueprint { body }, StatusCode::CREATED).await
}

#[utoipa::path(get, path = "/v1/blueprints/{blueprint}", tag = "Blueprints", summary = "Get a blueprint",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier")),
    responses((status = 200, description = "`{ok, blueprint}`", body = Blueprint), (status = 404, description = "No such blueprint")))]
pub async fn get_one(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let id = params.get("bp")?;
    let view = app.pipeline.view();
    let bp = view.blueprint(&id).ok_or_else(|| ApiError::from(berth_model::DomainError::not_found("blueprint", id)))?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "blueprint": *bp.def}), None))
}

#[utoipa::path(put, path = "/v1/blueprints/{blueprint}", tag = "Blueprints", summary = "Replace a blueprint",
    description = "Replaces the whole definition. Values of properties and relations that disappear are removed from the blueprint's entities.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier")),
    request_body(content = Object, description = "The full blueprint"),
    responses((status = 200, description = "`{ok, blueprint}`", body = Blueprint), (status = 404, description = "No such blueprint"), (status = 422, description = "Invalid definition")))]
pub async fn replace(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let id = params.get("bp")?;
    write_blueprint(&app, meta(&caller, &headers, None), Command::ReplaceBlueprint { id, body }, StatusCode::OK).await
}

#[utoipa::path(patch, path = "/v1/blueprints/{blueprint}", tag = "Blueprints", summary = "Change part of a blueprint",
    description = "A JSON merge patch (RFC 7386): objects merge key by key, `null` removes a key (a property, a relation), anything else replaces. Relations may name blueprints created earlier in the same sequence of calls.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier")),
    request_body(content = Object, description = "A merge patch"),
    responses((status = 200, description = "`{ok, blueprint}`", body = Blueprint), (status = 404, description = "No such blueprint"), (status = 422, description = "Invalid definition")))]
pub async fn patch(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    params: PathParams,
    ApiJson(patch): ApiJson<Value>,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let id = params.get("bp")?;
    write_blueprint(&app, meta(&caller, &headers, None), Command::PatchBlueprint { id, patch }, StatusCode::OK).await
}

#[utoipa::path(delete, path = "/v1/blueprints/{blueprint}", tag = "Blueprints", summary = "Delete a blueprint",
    description = "Refused with 409 while the blueprint has entities or other blueprints relate to it.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier")),
    responses((status = 200, description = "`{ok: true}`"), (status = 404, description = "No such blueprint"), (status = 409, description = "It still has entities or is a relation target")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    params: PathParams,
) -> ApiResult<Response> {
    require_admin(&caller)?;
    let id = params.get("bp")?;
    write_blueprint(&app, meta(&caller, &headers, None), Command::DeleteBlueprint { id }, StatusCode::OK).await
}

#[utoipa::path(get, path = "/v1/blueprints/{blueprint}/permissions", tag = "Blueprints", summary = "A blueprint's entity permissions",
    description = "`{ok, permissions: {entities: {read, register, update, unregister, updateProperties, updateRelations}}}`; each grant is `{users, teams, roles, ownedByTeam}`, `read` may add a rules-language `policy`. A blueprint whose permissions were never set shows the defaults: everyone reads; Admins, `<blueprint>-moderator` and members of an owning team write.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier")),
    responses((status = 200, description = "`{ok, permissions}`"), (status = 404, description = "No such blueprint")))]
pub async fn get_permissions(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let id = params.get("bp")?;
    let view = app.pipeline.view();
    if view.blueprint(&id).is_none() {
        return Err(berth_model::DomainError::not_found("blueprint", id).into());
    }
    let permissions = berth_engine::access::permissions(&view, &id).into_owned();
    Ok(reply(StatusCode::OK, json!({"ok": true, "permissions": permissions}), None))
}

#[utoipa::path(patch, path = "/v1/blueprints/{blueprint}/permissions", tag = "Blueprints", summary = "Change a blueprint's entity permissions (Admin)",
    description = "A JSON merge patch over the current permissions (`{entities: {update: {ownedByTeam: true}}}`); the result must be valid: known keys and roles, a `policy` only on `read`, and one that parses.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier")),
    request_body(content = Object, description = "A merge patch of `{entities: {...}}`"),
    responses((status = 200, description = "`{ok, permissions}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such blueprint"), (status = 422, description = "Invalid permissions")))]
pub async fn patch_permissions(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    super::require_admin(&caller, "change permissions")?;
    let id = params.get("bp")?;
    let view = app.pipeline.view();
    if view.blueprint(&id).is_none() {
        return Err(berth_model::DomainError::not_found("blueprint", id).into());
    }
    let permissions = berth_engine::access::permissions(&view, &id).patched(&body)?;
    let command = Command::SetPermissions { blueprint: id, permissions: Box::new(permissions.clone()) };
    let (outcome, seq) = app.pipeline.write_one(meta(&caller, &headers, None), command).await?;
    outcome?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "permissions": permissions}), Some(seq)))
}
