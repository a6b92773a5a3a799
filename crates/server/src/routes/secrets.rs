//! Organisation secrets, as Port serves them: `GET|POST /v1/organization/secrets`,
//! `GET|PATCH|DELETE /v1/organization/secrets/{name}`. Admins only, reads included. A value is sealed here
//! before the secret is written (see [`berth_model::secret`]); no answer ever holds it, sealed or not. Action
//! templates read it as `{{ .secrets.NAME }}` when a run is sent.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::Command;
use berth_engine::definitions::DefinitionWrite;
use berth_model::DefinitionKind;
use berth_model::secret::SecretInput;
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathParams};

const KIND: DefinitionKind = DefinitionKind::Secret;

pub fn router() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/v1/organization/secrets", get(list).post(create))
        .route("/v1/organization/secrets/{name}", get(get_one).patch(update).delete(delete))
        .route_layer(axum::middleware::from_fn(admins_only))
}

async fn admins_only(req: axum::extract::Request, next: axum::middleware::Next) -> ApiResult<Response> {
    super::require_admin_request(&req, "read or change organisation secrets")?;
    Ok(next.run(req).await)
}

async fn write(app: &AppState, caller: &Caller, name: String, how: DefinitionWrite) -> ApiResult<Response> {
    super::write_definition(app, caller, Command::WriteDefinition { kind: KIND, identifier: name, how }, "secret").await
}

#[utoipa::path(get, path = "/v1/organization/secrets", tag = "Organization", summary = "List organisation secrets (Admin)", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, secrets: [{secretName, description, createdAt, ...}]}`: never a value"), (status = 403, description = "Not an Admin")))]
pub async fn list(State(app): State<AppState>) -> ApiResult<Response> {
    let secrets: Vec<Value> = app.pipeline.view().definitions(KIND).map(|d| d.view()).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "secrets": secrets}), None))
}

#[utoipa::path(post, path = "/v1/organization/secrets", tag = "Organization", summary = "Create an organisation secret (Admin)", security(("bearer" = [])),
    description = "Body `{secretName, secretValue, description?}`. The value is sealed before it is written; actions read it as `{{ .secrets.NAME }}`. At most 500 secrets.",
    responses((status = 201, description = "`{ok, secret}` without the value"), (status = 403, description = "Not an Admin"), (status = 409, description = "The name is taken"), (status = 422, description = "A bad body")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let input = SecretInput::parse(&body)?;
    let name = input.name.ok_or_else(|| ApiError::unprocessable("`secretName` is required"))?;
    let value = input.value.ok_or_else(|| ApiError::unprocessable("`secretValue` is required"))?;
    let sealed = app.delivery.config().seal_org_secret(&name, &value).map_err(ApiError::internal)?;
    write(&app, &caller, name, DefinitionWrite::Create(berth_model::secret::body(sealed, input.description))).await
}

fn existing(app: &AppState, name: &str) -> ApiResult<std::sync::Arc<berth_model::Definition>> {
    super::existing_definition(app, KIND, name)
}

#[utoipa::path(get, path = "/v1/organization/secrets/{name}", tag = "Organization", summary = "Get an organisation secret's name and description (Admin)", security(("bearer" = [])),
    params(("name" = String, Path, description = "Secret name")),
    responses((status = 200, description = "`{ok, secret}` without the value"), (status = 404, description = "No such secret")))]
pub async fn get_one(State(app): State<AppState>, path: PathParams) -> ApiResult<Response> {
    let d = existing(&app, &path.get("name")?)?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "secret": d.view()}), None))
}

#[utoipa::path(patch, path = "/v1/organization/secrets/{name}", tag = "Organization", summary = "Change an organisation secret's value or description (Admin)", security(("bearer" = [])),
    params(("name" = String, Path, description = "Secret name")),
    description = "Body `{secretValue?, description?}`.",
    responses((status = 200, description = "`{ok, secret}` without the value"), (status = 404, description = "No such secret"), (status = 422, description = "A bad body")))]
pub async fn update(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let name = path.get("name")?;
    let input = SecretInput::parse(&body)?;
    if input.name.as_ref().is_some_and(|n| n != &name) {
        return Err(ApiError::unprocessable("a secret's name does not change"));
    }
    let current = existing(&app, &name)?;
    let sealed = match &input.value {
        Some(v) => app.delivery.config().seal_org_secret(&name, v).map_err(ApiError::internal)?,
        None => berth_model::secret::sealed(&current.body).unwrap_or_default().to_string(),
    };
    let description =
        input.description.or_else(|| current.body.get("description").and_then(Value::as_str).map(str::to_string));
    write(&app, &caller, name, DefinitionWrite::Replace(berth_model::secret::body(sealed, description))).await
}

#[utoipa::path(delete, path = "/v1/organization/secrets/{name}", tag = "Organization", summary = "Delete an organisation secret (Admin)", security(("bearer" = [])),
    params(("name" = String, Path, description = "Secret name")),
    responses((status = 200, description = "`{ok}`"), (status = 404, description = "No such secret")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    let identifier = path.get("name")?;
    super::write_definition(&app, &caller, Command::DeleteDefinition { kind: KIND, identifier }, "secret").await
}
