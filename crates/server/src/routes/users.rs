//! Users: `GET /v1/users`, `GET/PATCH/DELETE /v1/users/{email}`, `POST /v1/users/invite` (Port's routes), and
//! `POST /v1/users/accept-invite` (Berth's: the invitee sets its password with the one-time code).
//!
//! Anyone signed in reads users; only an Admin invites, changes or deletes them. A user's teams are the teams
//! that list its email. Password hashes and invitation codes never leave the server.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::{Command, Outcome, UserChanges};
use berth_model::user::normalize_email;
use berth_model::{User, UserStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::{Caller, hash_secret, random_hex};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathParams};

/// The routes that need a signed-in caller; changes are Admin-only, checked before any body is read.
pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/users", get(list))
        .route("/v1/users/invite", post(invite))
        .route("/v1/users/{email}", get(get_one).patch(update).delete(delete))
        .route_layer(axum::middleware::from_fn(admin_for_changes))
}

async fn admin_for_changes(req: axum::extract::Request, next: axum::middleware::Next) -> ApiResult<Response> {
    if req.method() != axum::http::Method::GET {
        super::require_admin_request(&req, "manage users")?;
    }
    Ok(next.run(req).await)
}

/// A user as the API shows it: never its password hash or invitation code. `teams` is given when known
/// (the audit log shows users without it: membership lives in teams).
/// A user as Port answers one ([`berth_model::public::user`]), with `teams` and `teamsIdentifiers` as lists
/// of names when given.
pub fn user_view(user: &User, teams: Option<Vec<String>>) -> Value {
    let mut v = berth_model::public::user(user);
    if let Some(teams) = teams {
        v["teams"] = json!(teams);
        v["teamsIdentifiers"] = json!(teams);
    }
    v
}

fn view_with_teams(app: &AppState, user: &User) -> Value {
    user_view(user, Some(app.pipeline.view().teams_of(&user.email)))
}

fn email_param(params: &PathParams) -> ApiResult<String> {
    Ok(normalize_email(&params.get("email")?))
}

async fn run(app: &AppState, caller: &Caller, command: Command) -> ApiResult<(Outcome, u64)> {
    let meta = super::blueprints::meta(caller, &axum::http::HeaderMap::new(), None);
    let (outcome, seq) = app.pipeline.write_one(meta, command).await?;
    Ok((outcome?, seq))
}

#[utoipa::path(get, path = "/v1/users", tag = "Users", summary = "List users", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, users: [{email, firstName, lastName, status, roles, teams}]}`")))]
pub async fn list(State(app): State<AppState>) -> ApiResult<Response> {
    let view = app.pipeline.view();
    let users: Vec<Value> = view.users().map(|u| user_view(u, Some(view.teams_of(&u.email)))).collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "users": users}), None))
}

#[utoipa::path(get, path = "/v1/users/{email}", tag = "Users", summary = "Get a user", security(("bearer" = [])),
    params(("email" = String, Path)),
    responses((status = 200, description = "`{ok, user}`"), (status = 404, description = "No such user")))]
pub async fn get_one(State(app): State<AppState>, params: PathParams) -> ApiResult<Response> {
    let email = email_param(&params)?;
    let view = app.pipeline.view();
    let user = view.user(&email).ok_or_else(|| ApiError::not_found(format!("user `{email}` was not found")))?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "user": view_with_teams(&app, user)}), None))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Invitee {
    pub email: String,
    /// `Admin`, `Member` or `<blueprint>-moderator` (default `Member`).
    pub roles: Option<Vec<String>>,
    /// Names of existing teams.
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    pub invitee: Invitee,
}

#[utoipa::path(post, path = "/v1/users/invite", tag = "Users", summary = "Invite a user (Admin)",
    description = "Creates the user with status `invited` and answers a one-time invitation code (shown only here) and the UI address where the invitee sets its password. `notify` is accepted for Port compatibility; Berth sends no email.",
    security(("bearer" = [])), request_body = InviteBody, params(("notify" = Option<bool>, Query)),
    responses((status = 201, description = "`{ok, user, invitation: {code, url, expiresAt}}` (an invitation is valid for 7 days)"), (status = 403, description = "Not an Admin"),
        (status = 409, description = "The email is taken"), (status = 422, description = "Bad email, role or team")))]
pub async fn invite(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<InviteBody>,
) -> ApiResult<Response> {
    let invitee = body.invitee;
    let roles = invitee.roles.unwrap_or_else(|| vec!["Member".into()]);
    let (user, code) = new_invitation(&invitee.email, invitee.first_name, invitee.last_name, roles)?;
    let (outcome, seq) = run(&app, &caller, Command::InviteUser { user, teams: invitee.teams }).await?;
    let Outcome::User(user) = outcome else { return Err(ApiError::internal("invite answered no user")) };
    let url = invitation_url(&user.email, &code);
    let body = json!({"ok": true, "user": view_with_teams(&app, &user),
        "invitation": {"code": code, "url": url, "expiresAt": user.invitation_expires_at()}});
    Ok(reply(StatusCode::CREATED, body, Some(seq)))
}

/// An invited user and its one-time invitation code (stored only as a hash): the API's invite and the UI's
/// both make theirs here.
pub fn new_invitation(
    email: &str,
    first_name: String,
    last_name: String,
    roles: Vec<String>,
) -> ApiResult<(User, String)> {
    let code = random_hex(24)?;
    let now = crate::now();
    let user = User {
        email: normalize_email(email),
        first_name,
        last_name,
        status: UserStatus::Invited,
        roles,
        password_hash: None,
        invite_sha256: Some(hash_secret(&code)),
        session_epoch: 0,
        sso: None,
        created_at: now,
        updated_at: now,
    };
    Ok((user, code))
}

/// Where the invitee sets its password (the UI's `/invite` page, with the code).
pub fn invitation_url(email: &str, code: &str) -> String {
    format!(
        "/invite?email={}&code={code}",
        percent_encoding::utf8_percent_encode(email, percent_encoding::NON_ALPHANUMERIC)
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserPatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub roles: Option<Vec<String>>,
    /// `active` or `disabled` (a disabled user cannot sign in, and its sessions end).
    pub status: Option<UserStatus>,
    /// The full list of teams the user belongs to.
    pub teams: Option<Vec<String>>,
    /// Sent by Port's clients; sessions here last a token's lifetime, so it is accepted and ignored.
    #[schema(ignore)]
    #[allow(dead_code)]
    pub inactivity_timeout: Option<Value>,
    /// Sent back by Port's clients from a read; ignored (the email is the path's).
    #[schema(ignore)]
    #[allow(dead_code)]
    pub email: Option<Value>,
    /// Sent back by Port's clients from a read; ignored.
    #[schema(ignore)]
    #[allow(dead_code)]
    pub picture: Option<Value>,
}

#[utoipa::path(patch, path = "/v1/users/{email}", tag = "Users", summary = "Change a user (Admin)",
    security(("bearer" = [])), params(("email" = String, Path)), request_body = UserPatch,
    responses((status = 200, description = "`{ok, user}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such user"),
        (status = 409, description = "It would leave no Admin"), (status = 422, description = "Bad role, team or status")))]
pub async fn update(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<UserPatch>,
) -> ApiResult<Response> {
    let email = email_param(&params)?;
    let changes = UserChanges {
        first_name: body.first_name,
        last_name: body.last_name,
        roles: body.roles,
        status: body.status,
        teams: body.teams,
    };
    let (outcome, seq) = run(&app, &caller, Command::UpdateUser { email, changes }).await?;
    let Outcome::User(user) = outcome else { return Err(ApiError::internal("update answered no user")) };
    Ok(reply(StatusCode::OK, json!({"ok": true, "user": view_with_teams(&app, &user)}), Some(seq)))
}

#[utoipa::path(delete, path = "/v1/users/{email}", tag = "Users", summary = "Delete a user (Admin)",
    security(("bearer" = [])), params(("email" = String, Path)),
    responses((status = 200, description = "`{ok}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such user"),
        (status = 409, description = "It is the last Admin")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let email = email_param(&params)?;
    let (_, seq) = run(&app, &caller, Command::DeleteUser { email }).await?;
    Ok(reply(StatusCode::OK, json!({"ok": true}), Some(seq)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvite {
    pub email: String,
    /// The code `POST /v1/users/invite` answered.
    pub code: String,
    /// The new password (8 to 1024 characters).
    pub password: String,
}

#[utoipa::path(post, path = "/v1/users/accept-invite", tag = "Users", summary = "Accept an invitation",
    description = "The invitee sets its password with the one-time code; the user becomes `active`. No token needed.",
    request_body = AcceptInvite,
    responses((status = 200, description = "`{ok, user}`"), (status = 401, description = "Unknown email or code, or already accepted"),
        (status = 422, description = "Password too short or too long")))]
pub async fn accept_invite(State(app): State<AppState>, ApiJson(body): ApiJson<AcceptInvite>) -> ApiResult<Response> {
    let (user, seq) =
        crate::invitations::accept(&app, berth_model::Origin::Api, &body.email, &body.code, &body.password).await?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "user": view_with_teams(&app, &user)}), Some(seq)))
}
