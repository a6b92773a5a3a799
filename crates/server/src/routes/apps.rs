//! Machine credentials under Port's `/v1/apps` (Admin only), and `GET /v1/organization`.
//! An app's id is its client id. Its secret is shown once, in the answer that creates or rotates it; only a
//! SHA-256 of it is kept.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::Command;
use berth_model::Credential;
use serde::Deserialize;
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::{Caller, hash_secret, random_hex};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathParams};

/// The `/v1/apps` routes, behind an Admin check that runs before any body is read (a Member learns nothing
/// about what a valid body would be).
pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/apps", get(list).post(create))
        .route("/v1/apps/{id}", get(get_one).put(update).delete(delete))
        .route("/v1/apps/{id}/rotate-secret", post(rotate_secret))
        .route_layer(axum::middleware::from_fn(admin_only))
}

async fn admin_only(req: axum::extract::Request, next: axum::middleware::Next) -> ApiResult<Response> {
    super::require_admin_request(&req, "manage apps")?;
    Ok(next.run(req).await)
}

fn render(c: &Credential, secret: Option<&str>) -> Value {
    let mut app = json!({
        "id": c.client_id, "name": c.name, "roles": c.roles, "teams": c.teams,
        "clientId": c.client_id, "enabled": true, "createdAt": c.created_at, "updatedAt": c.created_at,
    });
    if let Some(secret) = secret {
        // `secret` is Port's name for it; `clientSecret` pairs with `clientId`.
        app["secret"] = json!(secret);
        app["clientSecret"] = json!(secret);
    }
    app
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppBody {
    /// A name for people.
    pub name: String,
    /// `Admin`, `Member`, or `<blueprint>-moderator` (default: `Member`).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Teams the app acts for (default on create: none; on PUT: unchanged).
    #[serde(default)]
    pub teams: Option<Vec<String>>,
    /// Port's clients send it; an app is always enabled here (`false` is refused: delete the app instead).
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl AppBody {
    fn check(&self) -> ApiResult<()> {
        if self.enabled == Some(false) {
            return Err(ApiError::unprocessable("apps cannot be disabled; delete the app to revoke it"));
        }
        Ok(())
    }
}

/// A new machine credential and its secret (shown once, stored only as a hash): the API's create and the
/// UI's both make theirs here.
pub fn new_credential(name: String, roles: Vec<String>, teams: Vec<String>) -> ApiResult<(Credential, String)> {
    let (secret, secret_sha256) = new_secret()?;
    let credential = Credential {
        client_id: format!("berth_{}", random_hex(8)?),
        name,
        secret_sha256,
        roles,
        teams,
        created_at: crate::now(),
    };
    Ok((credential, secret))
}

/// A new secret and the hash that is stored.
pub fn new_secret() -> ApiResult<(String, String)> {
    let secret = random_hex(32)?;
    let hash = hash_secret(&secret);
    Ok((secret, hash))
}

async fn run(app: &AppState, caller: &Caller, command: Command) -> ApiResult<u64> {
    let meta = super::blueprints::meta(caller, &axum::http::HeaderMap::new(), None);
    let (outcome, seq) = app.pipeline.write_one(meta, command).await?;
    outcome?;
    Ok(seq)
}

fn app_id(params: &PathParams) -> ApiResult<String> {
    params.get("id")
}

#[utoipa::path(post, path = "/v1/apps", tag = "Apps", summary = "Create a machine credential",
    security(("bearer" = [])), request_body = AppBody,
    responses((status = 201, description = "`{ok, app: {id, name, roles, teams, clientId, enabled, secret, clientSecret}}`: the secret (under Port's name and Berth's) is shown only here"),
        (status = 403, description = "Not an Admin"), (status = 422, description = "Bad name, role or team")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<AppBody>,
) -> ApiResult<Response> {
    body.check()?;
    let roles = body.roles.unwrap_or_else(|| vec!["Member".into()]);
    let (credential, secret) = new_credential(body.name, roles, body.teams.unwrap_or_default())?;
    let seq = run(&app, &caller, Command::PutCredential { credential: credential.clone() }).await?;
    Ok(reply(StatusCode::CREATED, json!({"ok": true, "app": render(&credential, Some(&secret))}), Some(seq)))
}

#[utoipa::path(get, path = "/v1/apps", tag = "Apps", summary = "List machine credentials (without secrets)",
    security(("bearer" = [])),
    responses((status = 200, description = "`{ok, apps: [...]}`"), (status = 403, description = "Not an Admin")))]
pub async fn list(State(app): State<AppState>) -> ApiResult<Response> {
    let view = app.pipeline.view();
    let apps: Vec<Value> = view.credentials().map(|c| render(c, None)).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "apps": apps}), None))
}

#[utoipa::path(get, path = "/v1/apps/{id}", tag = "Apps", summary = "Get a machine credential (without its secret)",
    security(("bearer" = [])), params(("id" = String, Path, description = "App id (its client id)")),
    responses((status = 200, description = "`{ok, app}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such app")))]
pub async fn get_one(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let id = app_id(&params)?;
    let view = app.pipeline.view();
    let credential = view.credential(&id).ok_or_else(|| ApiError::not_found(format!("app `{id}` was not found")))?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "app": render(credential, None)}), None))
}

#[utoipa::path(put, path = "/v1/apps/{id}", tag = "Apps", summary = "Change a machine credential's name, roles and teams (what the body leaves out stays)",
    security(("bearer" = [])), params(("id" = String, Path, description = "App id (its client id)")), request_body = AppBody,
    responses((status = 200, description = "`{ok, app}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such app"),
        (status = 409, description = "It is the last Admin credential and would lose the role")))]
pub async fn update(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<AppBody>,
) -> ApiResult<Response> {
    body.check()?;
    let id = app_id(&params)?;
    // What the body does not name stays as it is (Port's clients send `{name}` alone).
    let (roles, teams) = {
        let view = app.pipeline.view();
        let current = view.credential(&id);
        (
            body.roles.unwrap_or_else(|| current.map(|c| c.roles.clone()).unwrap_or_default()),
            body.teams.unwrap_or_else(|| current.map(|c| c.teams.clone()).unwrap_or_default()),
        )
    };
    let command = Command::UpdateCredential { client_id: id.clone(), name: body.name, roles, teams };
    let seq = run(&app, &caller, command).await?;
    let view = app.pipeline.view();
    let credential = view.credential(&id).ok_or_else(|| ApiError::not_found(format!("app `{id}` was not found")))?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "app": render(credential, None)}), Some(seq)))
}

#[utoipa::path(post, path = "/v1/apps/{id}/rotate-secret", tag = "Apps", summary = "Replace a machine credential's secret",
    description = "The new secret is shown only in this answer. Tokens issued for the old secret stop working at once.",
    security(("bearer" = [])), params(("id" = String, Path, description = "App id (its client id)")),
    responses((status = 200, description = "`{ok, app: {..., secret, clientSecret}}` (the same new secret under Port's name and Berth's)"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such app")))]
pub async fn rotate_secret(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let id = app_id(&params)?;
    let (secret, secret_sha256) = new_secret()?;
    let seq = run(&app, &caller, Command::RotateSecret { client_id: id.clone(), secret_sha256 }).await?;
    let view = app.pipeline.view();
    let credential = view.credential(&id).ok_or_else(|| ApiError::not_found(format!("app `{id}` was not found")))?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "app": render(credential, Some(&secret))}), Some(seq)))
}

#[utoipa::path(delete, path = "/v1/apps/{id}", tag = "Apps", summary = "Revoke a machine credential",
    description = "Its tokens stop working at once. The last Admin credential cannot be deleted (409).",
    security(("bearer" = [])), params(("id" = String, Path, description = "App id (its client id)")),
    responses((status = 200, description = "`{ok}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such app"),
        (status = 409, description = "The last Admin credential")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let id = app_id(&params)?;
    let seq = run(&app, &caller, Command::DeleteCredential { client_id: id }).await?;
    Ok(reply(StatusCode::OK, json!({"ok": true}), Some(seq)))
}

#[utoipa::path(get, path = "/v1/organization", tag = "Apps", summary = "The organization",
    description = "A Berth installation is one organization; its id and name come from the configuration (`--org-name`).",
    security(("bearer" = [])),
    responses((status = 200, description = "`{ok, organization: {id, name, featureFlags: []}}`")))]
pub async fn organization(State(app): State<AppState>) -> ApiResult<Response> {
    let name = &app.config.organization;
    let id = format!("org_{}", &crate::auth::hex(name.as_bytes()).chars().take(16).collect::<String>());
    Ok(reply(StatusCode::OK, json!({"ok": true, "organization": {"id": id, "name": name, "featureFlags": []}}), None))
}
