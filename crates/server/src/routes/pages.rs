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

#[utoipa::path(get, path = "/v1/pages", tag = "Pages", summary = "List pages", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, pages: [{identifier, title, type, widgets, ...}]}`")))]
pub async fn list(State(app): State<AppState>) -> ApiResult<Response> {
    let view = app.pipeline.view();
    let pages: Vec<Value> = view.definitions(KIND).map(|d| d.view()).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "pages": pages}), None))
}

#[utoipa::path(get, path = "/v1/pages/{identifier}", tag = "Pages", summary = "Get a page", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Page identifier")),
    responses((status = 200, description = "`{ok, page}`"), (status = 404, description = "No such page")))]
pub async fn get_one(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let id = params.get("identifier")?;
    let view = app.pipeline.view();
    let page = view.definition(KIND, &id).ok_or_else(|| ApiError::not_found(format!("page `{id}` was not found")))?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "page": page.view()}), None))
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
