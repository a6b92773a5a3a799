//! Teams: `GET/POST /v1/teams`, `GET/PUT/PATCH/DELETE /v1/teams/{name}`. Anyone signed in reads them; only
//! an Admin changes them. The names are what entities' `team` lists hold.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::{Command, Outcome};
use berth_model::Team;
use serde::Deserialize;
use serde_json::json;

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathParams};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamBody {
    /// The team's name (on PUT and PATCH, the path's name wins).
    pub name: Option<String>,
    pub description: Option<String>,
    /// User emails or app client ids.
    pub members: Option<Vec<String>>,
    /// Port's name for the members: user emails (the same list as `members`; give one or the other).
    pub users: Option<Vec<String>>,
    /// Sent back by Port's clients from a read; ignored (Berth's teams are its own).
    #[schema(ignore)]
    #[allow(dead_code)]
    pub provider: Option<serde_json::Value>,
    /// Sent back by Port's clients from a read; ignored.
    #[schema(ignore)]
    #[allow(dead_code)]
    pub id: Option<serde_json::Value>,
}

impl TeamBody {
    /// The members the body names, under either key.
    fn members(&mut self) -> ApiResult<Option<Vec<String>>> {
        match (self.members.take(), self.users.take()) {
            (Some(m), Some(u)) if m != u => {
                Err(ApiError::unprocessable("`members` and `users` name the same list; give one of them"))
            }
            (m, u) => Ok(m.or(u)),
        }
    }
}

/// A team as Port answers it (`id`, `provider`, `users` with each user's name, picture and status), with
/// Berth's `members` (which also holds app client ids).
pub fn team_view(view: &berth_engine::State, team: &Team) -> serde_json::Value {
    let users: Vec<serde_json::Value> = team
        .members
        .iter()
        .filter_map(|m| view.user(m))
        .map(|u| {
            json!({"email": u.email, "firstName": u.first_name, "lastName": u.last_name, "picture": null,
                "status": u.status})
        })
        .collect();
    json!({"id": team.name, "name": team.name, "description": team.description, "provider": "berth",
        "members": team.members, "users": users, "createdAt": team.created_at, "updatedAt": team.updated_at})
}

/// The team routes; changes are Admin-only, checked before any body is read.
pub fn router() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/v1/teams", get(list).post(create))
        .route("/v1/teams/{name}", get(get_one).put(replace).patch(patch).delete(delete))
        .route_layer(axum::middleware::from_fn(admin_for_changes))
}

async fn admin_for_changes(req: axum::extract::Request, next: axum::middleware::Next) -> ApiResult<Response> {
    if req.method() != axum::http::Method::GET {
        super::require_admin_request(&req, "change teams")?;
    }
    Ok(next.run(req).await)
}

async fn write(app: &AppState, caller: &Caller, command: Command, status: StatusCode) -> ApiResult<Response> {
    let meta = super::blueprints::meta(caller, &axum::http::HeaderMap::new(), None);
    let (outcome, seq) = app.pipeline.write_one(meta, command).await?;
    match outcome? {
        Outcome::Team(team) => {
            let view = team_view(&app.pipeline.view(), &team);
            Ok(reply(status, json!({"ok": true, "team": view}), Some(seq)))
        }
        _ => Ok(reply(status, json!({"ok": true}), Some(seq))),
    }
}

#[utoipa::path(get, path = "/v1/teams", tag = "Teams", summary = "List teams", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, teams: [...]}`")))]
pub async fn list(State(app): State<AppState>) -> ApiResult<Response> {
    let view = app.pipeline.view();
    let teams: Vec<serde_json::Value> = view.teams().map(|t| team_view(&view, t)).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "teams": teams}), None))
}

#[utoipa::path(post, path = "/v1/teams", tag = "Teams", summary = "Create a team (Admin)", security(("bearer" = [])),
    request_body = TeamBody,
    responses((status = 201, description = "`{ok, team}`"), (status = 403, description = "Not an Admin"), (status = 409, description = "The name is taken"), (status = 422, description = "Bad name or members")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(mut body): ApiJson<TeamBody>,
) -> ApiResult<Response> {
    let members = body.members()?;
    let name = body.name.ok_or_else(|| ApiError::unprocessable("a team needs a `name`"))?;
    let now = crate::now();
    let team = Team {
        name,
        description: body.description,
        members: members.unwrap_or_default(),
        created_at: now,
        updated_at: now,
    };
    write(&app, &caller, Command::PutTeam { team, create: true }, StatusCode::CREATED).await
}

#[utoipa::path(get, path = "/v1/teams/{name}", tag = "Teams", summary = "Get a team", security(("bearer" = [])),
    params(("name" = String, Path, description = "Team name")),
    responses((status = 200, description = "`{ok, team}`"), (status = 404, description = "No such team")))]
pub async fn get_one(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let name = params.get("name")?;
    let view = app.pipeline.view();
    let team = view.team(&name).ok_or_else(|| ApiError::not_found(format!("team `{name}` was not found")))?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "team": team_view(&view, team)}), None))
}

async fn change(app: AppState, caller: Caller, name: String, mut body: TeamBody, replace: bool) -> ApiResult<Response> {
    let members = body.members()?;
    let current = app
        .pipeline
        .view()
        .team(&name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("team `{name}` was not found")))?;
    let team = Team {
        name,
        description: if replace { body.description } else { body.description.or(current.description) },
        members: match members {
            Some(m) => m,
            None if replace => Vec::new(),
            None => current.members,
        },
        ..current
    };
    write(&app, &caller, Command::PutTeam { team, create: false }, StatusCode::OK).await
}

#[utoipa::path(put, path = "/v1/teams/{name}", tag = "Teams", summary = "Replace a team's description and members (Admin)",
    security(("bearer" = [])), params(("name" = String, Path, description = "Team name")), request_body = TeamBody,
    responses((status = 200, description = "`{ok, team}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such team")))]
pub async fn replace(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<TeamBody>,
) -> ApiResult<Response> {
    change(app, caller, params.get("name")?, body, true).await
}

#[utoipa::path(patch, path = "/v1/teams/{name}", tag = "Teams", summary = "Change a team's description or members (Admin)",
    security(("bearer" = [])), params(("name" = String, Path, description = "Team name")), request_body = TeamBody,
    responses((status = 200, description = "`{ok, team}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such team")))]
pub async fn patch(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<TeamBody>,
) -> ApiResult<Response> {
    change(app, caller, params.get("name")?, body, false).await
}

#[utoipa::path(delete, path = "/v1/teams/{name}", tag = "Teams", summary = "Delete a team (Admin)",
    security(("bearer" = [])), params(("name" = String, Path, description = "Team name")),
    responses((status = 200, description = "`{ok}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such team")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    write(&app, &caller, Command::DeleteTeam { name: params.get("name")? }, StatusCode::OK).await
}
