//! Pages, as Port serves them: `GET/POST /v1/pages`, `GET/PUT/DELETE /v1/pages/{identifier}`,
//! `PATCH/DELETE /v1/pages/{identifier}/widgets/{widget_id}`. A page is a definition object
//! (`berth_engine::definitions::pages` checks its body): anyone signed in reads pages, only Admins change
//! them (checked before any body is read).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::Command;
use berth_engine::definitions::DefinitionWrite;
use berth_model::DefinitionKind;
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathParams};

const KIND: DefinitionKind = DefinitionKind::Page;

/// The page routes; changes are Admin-only, checked before any body is read.
pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, patch};
    axum::Router::new()
        .route("/v1/pages", get(list).post(create))
        .route("/v1/pages/{identifier}", get(get_one).put(replace).delete(delete))
        .route("/v1/pages/{identifier}/widgets/{widget_id}", patch(patch_widget).delete(delete_widget))
        .route("/v1/pages/{identifier}/permissions", get(get_permissions).patch(patch_permissions))
        .route_layer(axum::middleware::from_fn(admin_for_changes))
}

async fn admin_for_changes(req: axum::extract::Request, next: axum::middleware::Next) -> ApiResult<Response> {
    if req.method() != axum::http::Method::GET {
        super::require_admin_request(&req, "change pages")?;
    }
    Ok(next.run(req).await)
}

async fn write(app: &AppState, caller: &Caller, command: Command) -> ApiResult<Response> {
    super::write_definition(app, caller, command, "page").await
}

/// A page as a caller reads it: without its permissions (`GET .../permissions` shows them).
fn page_view(d: &berth_model::Definition) -> Value {
    let mut v = d.view();
    if let Some(map) = v.as_object_mut() {
        map.remove("permissions");
    }
    v
}

/// The page, if it exists and `caller` may read it (a page it may not read answers like a missing one).
fn readable_page(app: &AppState, caller: &Caller, id: &str) -> ApiResult<std::sync::Arc<berth_model::Definition>> {
    let view = app.pipeline.view();
    view.definition(KIND, id)
        .filter(|d| berth_engine::definitions::pages::readable(&d.body, &caller.principal()))
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("page `{id}` was not found")))
}

#[utoipa::path(get, path = "/v1/pages", tag = "Pages", summary = "List the pages the caller may read", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, pages: [{identifier, title, type, widgets, ...}]}`")))]
pub async fn list(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Response> {
    let view = app.pipeline.view();
    let principal = caller.principal();
    let pages: Vec<Value> = view
        .definitions(KIND)
        .filter(|d| berth_engine::definitions::pages::readable(&d.body, &principal))
        .map(|d| page_view(d))
        .collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "pages": pages}), None))
}

#[utoipa::path(get, path = "/v1/pages/{identifier}", tag = "Pages", summary = "Get a page", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Page identifier")),
    responses((status = 200, description = "`{ok, page}`"), (status = 404, description = "No such page")))]
pub async fn get_one(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let page = readable_page(&app, &caller, &params.get("identifier")?)?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "page": page_view(&page)}), None))
}

/// Who may read a page, as stored (empty lists: everyone signed in).
fn permissions_of(page: &berth_model::Definition) -> Value {
    let read = page.body.get("permissions").and_then(|p| p.get("read")).cloned().unwrap_or(Value::Null);
    let list = |key: &str| read.get(key).cloned().filter(Value::is_array).unwrap_or_else(|| json!([]));
    json!({"read": {"users": list("users"), "roles": list("roles"), "teams": list("teams")}})
}

#[utoipa::path(get, path = "/v1/pages/{identifier}/permissions", tag = "Pages", summary = "Who may read a page",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Page identifier")),
    description = "`{read: {users, roles, teams}}`: a page is read by Admins, and by the users, roles and teams named; when none is named (the default), by everyone signed in.",
    responses((status = 200, description = "`{ok, permissions}`"), (status = 404, description = "No such page (or one the caller may not read)")))]
pub async fn get_permissions(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let page = readable_page(&app, &caller, &params.get("identifier")?)?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "permissions": permissions_of(&page)}), None))
}

#[utoipa::path(patch, path = "/v1/pages/{identifier}/permissions", tag = "Pages", summary = "Change who may read a page (Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Page identifier")),
    description = "Body `{read: {users, roles, teams}}` replaces the read permission (empty lists: everyone signed in). `update` is accepted only empty: only Admins change pages.",
    responses((status = 200, description = "`{ok, permissions}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such page"), (status = 422, description = "A bad permission")))]
pub async fn patch_permissions(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let identifier = params.get("identifier")?;
    let Some(map) = body.as_object() else { return Err(ApiError::unprocessable("permissions are a JSON object")) };
    if let Some(key) = map.keys().find(|k| *k != "read" && *k != "update") {
        return Err(ApiError::unprocessable(format!("unknown permission `{key}`: a page has `read`")));
    }
    let grants_update = map
        .get("update")
        .and_then(Value::as_object)
        .is_some_and(|u| u.values().any(|l| l.as_array().is_some_and(|l| !l.is_empty())));
    if grants_update {
        return Err(ApiError::unprocessable("`update` cannot name anyone: only Admins change pages"));
    }
    let Some(read) = map.get("read").cloned() else {
        // Nothing to change: the page's permissions as they are.
        let page = readable_page(&app, &caller, &identifier)?;
        return Ok(reply(StatusCode::OK, json!({"ok": true, "permissions": permissions_of(&page)}), None));
    };
    let mut changes = serde_json::Map::new();
    changes.insert("permissions".into(), json!({"read": read}));
    let meta = super::blueprints::meta(&caller, &axum::http::HeaderMap::new(), None);
    let command = Command::WriteDefinition { kind: KIND, identifier, how: DefinitionWrite::Merge(changes) };
    let (outcome, seq) = app.pipeline.write_one(meta, command).await?;
    match outcome? {
        berth_engine::Outcome::Definition { definition, .. } => {
            Ok(reply(StatusCode::OK, json!({"ok": true, "permissions": permissions_of(&definition)}), Some(seq)))
        }
        _ => Err(ApiError::internal("a page write answered no page")),
    }
}

#[utoipa::path(post, path = "/v1/pages", tag = "Pages", summary = "Create a page (Admin)", security(("bearer" = [])),
    description = "Body: `{identifier, title, type?, icon?, description?, parent?, after?, locked?, blueprint?, widgets?, pageFilters?}`. `type` is `dashboard` (default), `blueprint-entities` or `entity` (these name an existing `blueprint`), or `home`; each widget is an object with a `type` and a unique `id` (given one when missing); at most 100 widgets and 256 KiB.",
    responses((status = 201, description = "`{ok, page}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "The named blueprint does not exist"),
        (status = 409, description = "The identifier is taken"), (status = 422, description = "A bad identifier or body")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let identifier = match body.get("identifier") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(ApiError::unprocessable("a page needs an `identifier` (a string)")),
    };
    write(&app, &caller, Command::WriteDefinition { kind: KIND, identifier, how: DefinitionWrite::Create(body) }).await
}

#[utoipa::path(put, path = "/v1/pages/{identifier}", tag = "Pages", summary = "Create or replace a page (Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Page identifier")),
    description = "The whole page, as for POST; the path's identifier wins (a different one in the body is a 422).",
    responses((status = 200, description = "`{ok, page}` (replaced)"), (status = 201, description = "`{ok, page}` (created)"),
        (status = 403, description = "Not an Admin"), (status = 422, description = "A bad body")))]
pub async fn replace(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let identifier = params.get("identifier")?;
    write(&app, &caller, Command::WriteDefinition { kind: KIND, identifier, how: DefinitionWrite::Upsert(body) }).await
}

#[utoipa::path(delete, path = "/v1/pages/{identifier}", tag = "Pages", summary = "Delete a page (Admin)",
    security(("bearer" = [])), params(("identifier" = String, Path, description = "Page identifier")),
    responses((status = 200, description = "`{ok}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such page")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let identifier = params.get("identifier")?;
    write(&app, &caller, Command::DeleteDefinition { kind: KIND, identifier }).await
}

#[utoipa::path(patch, path = "/v1/pages/{identifier}/widgets/{widget_id}", tag = "Pages", summary = "Change a widget of a page (Admin)",
    security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Page identifier"), ("widget_id" = String, Path, description = "Widget id")),
    description = "The body's keys replace the widget's (its `id` stays); the page is checked again as a whole.",
    responses((status = 200, description = "`{ok, page}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such page or widget"), (status = 422, description = "The page would be invalid")))]
pub async fn patch_widget(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(patch): ApiJson<Value>,
) -> ApiResult<Response> {
    let (identifier, id) = (params.get("identifier")?, params.get("widget_id")?);
    let how = DefinitionWrite::Part { id, patch: Some(patch) };
    write(&app, &caller, Command::WriteDefinition { kind: KIND, identifier, how }).await
}

#[utoipa::path(delete, path = "/v1/pages/{identifier}/widgets/{widget_id}", tag = "Pages", summary = "Remove a widget from a page (Admin)",
    security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Page identifier"), ("widget_id" = String, Path, description = "Widget id")),
    responses((status = 200, description = "`{ok, page}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such page or widget")))]
pub async fn delete_widget(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let (identifier, id) = (params.get("identifier")?, params.get("widget_id")?);
    let how = DefinitionWrite::Part { id, patch: None };
    write(&app, &caller, Command::WriteDefinition { kind: KIND, identifier, how }).await
}
