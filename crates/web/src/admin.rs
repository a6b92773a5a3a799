//! Administration (Admins): `GET /admin/apps` lists the machine credentials, makes one (`POST /admin/apps`:
//! its secret shown once, on the answer's page, never in a URL), rotates a secret (`POST
//! /admin/apps/{id}/rotate`, the new one shown once) and deletes one (`POST /admin/apps/{id}/delete`);
//! `GET /admin/teams` lists the teams with their members, makes one (`POST /admin/teams`) and deletes one
//! (`POST /admin/teams/{name}/delete`). Each change is the same command the API runs, written as the signed-in
//! user (so the same checks: the last Admin credential cannot go; and the same audit records).

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use berth_engine::Command;
use berth_model::Team;
use berth_server::AppState;

use crate::page::{Layout, UiError, UiResult, html, see_other};
use crate::session::{Session, encode};

pub struct AppRow {
    pub id: String,
    pub name: String,
    pub roles: String,
    pub teams: String,
    pub created: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "admin_apps.html")]
struct AppsPage {
    layout: Layout,
    rows: Vec<AppRow>,
    teams: Vec<String>,
    /// `(client id, secret)` of the app just made or rotated: shown this once.
    revealed: Option<(String, String)>,
}

pub struct TeamRow {
    pub name: String,
    pub description: String,
    pub members: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "admin_teams.html")]
struct TeamsPage {
    layout: Layout,
    rows: Vec<TeamRow>,
}

async fn write(app: &AppState, session: &Session, command: Command) -> UiResult<()> {
    let (outcome, _) =
        app.pipeline.write_one(session.meta(), command).await.map_err(berth_server::error::ApiError::from)?;
    outcome.map_err(berth_server::error::ApiError::from)?;
    Ok(())
}

fn apps_page(app: &AppState, session: &Session, revealed: Option<(String, String)>) -> UiResult<Response> {
    let view = app.pipeline.view();
    let now = berth_server::now();
    let rows = view
        .credentials()
        .map(|c| AppRow {
            id: c.client_id.clone(),
            name: c.name.clone(),
            roles: c.roles.join(", "),
            teams: c.teams.join(", "),
            created: crate::fmt::relative(c.created_at, now),
            href: format!("/admin/apps/{}", encode(&c.client_id)),
        })
        .collect();
    let teams = view.teams().map(|t| t.name.clone()).collect();
    html(&AppsPage { layout: session.layout(app, "Apps", "admin-apps"), rows, teams, revealed })
}

pub async fn apps(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    session.require_admin("manage apps")?;
    apps_page(&app, &session, None)
}

pub async fn create_app(
    State(app): State<AppState>,
    session: Session,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, "/admin/apps", "manage apps")?;
    let name = form.raw("name").trim().to_string();
    let role = match form.raw("role") {
        "Admin" => "Admin",
        _ => "Member",
    };
    let teams: Vec<String> = form.all("teams");
    let (credential, secret) = berth_server::routes::apps::new_credential(name, vec![role.to_string()], teams)?;
    let id = credential.client_id.clone();
    write(&app, &session, Command::PutCredential { credential }).await?;
    apps_page(&app, &session, Some((id, secret)))
}

pub async fn rotate_app(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, &format!("/admin/apps/{}/rotate", encode(&id)), "manage apps")?;
    let (secret, secret_sha256) = berth_server::routes::apps::new_secret()?;
    write(&app, &session, Command::RotateSecret { client_id: id.clone(), secret_sha256 }).await?;
    apps_page(&app, &session, Some((id, secret)))
}

pub async fn delete_app(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, &format!("/admin/apps/{}/delete", encode(&id)), "manage apps")?;
    write(&app, &session, Command::DeleteCredential { client_id: id }).await?;
    Ok(see_other("/admin/apps"))
}

pub async fn teams(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    session.require_admin("manage teams")?;
    let view = app.pipeline.view();
    let rows = view
        .teams()
        .map(|t| TeamRow {
            name: t.name.clone(),
            description: t.description.clone().unwrap_or_default(),
            members: t.members.join(", "),
            href: format!("/admin/teams/{}", encode(&t.name)),
        })
        .collect();
    html(&TeamsPage { layout: session.layout(&app, "Teams", "admin-teams"), rows })
}

pub async fn create_team(
    State(app): State<AppState>,
    session: Session,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, "/admin/teams", "manage teams")?;
    let name = form.raw("name").trim().to_string();
    if name.is_empty() {
        return Err(UiError::new(berth_model::ErrorCode::InvalidRequest, "a team needs a name"));
    }
    let description = Some(form.raw("description").trim().to_string()).filter(|d| !d.is_empty());
    let now = berth_server::now();
    let team = Team { name, description, members: Vec::new(), created_at: now, updated_at: now };
    write(&app, &session, Command::PutTeam { team, create: true }).await?;
    Ok(see_other("/admin/teams"))
}

pub async fn delete_team(
    State(app): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, &format!("/admin/teams/{}/delete", encode(&name)), "manage teams")?;
    write(&app, &session, Command::DeleteTeam { name }).await?;
    Ok(see_other("/admin/teams"))
}

pub struct UserRow {
    pub email: String,
    pub name: String,
    pub status: String,
    pub roles: String,
    pub teams: String,
    pub href: String,
    /// What the status button does: `disabled` for an active or invited user, `active` for a disabled one.
    pub toggle: (&'static str, &'static str),
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    layout: Layout,
    rows: Vec<UserRow>,
    teams: Vec<String>,
    /// `(email, invitation link)` of the user just invited: shown this once.
    revealed: Option<(String, String)>,
}

fn users_page(app: &AppState, session: &Session, revealed: Option<(String, String)>) -> UiResult<Response> {
    let view = app.pipeline.view();
    let rows = view
        .users()
        .map(|u| {
            let status = match u.status {
                berth_model::UserStatus::Invited => "invited",
                berth_model::UserStatus::Active => "active",
                berth_model::UserStatus::Disabled => "disabled",
            };
            UserRow {
                email: u.email.clone(),
                name: u.display_name(),
                status: status.to_string(),
                roles: u.roles.join(", "),
                teams: view.teams_of(&u.email).join(", "),
                href: format!("/admin/users/{}", encode(&u.email)),
                toggle: if status == "disabled" { ("active", "Enable") } else { ("disabled", "Disable") },
            }
        })
        .collect();
    let teams = view.teams().map(|t| t.name.clone()).collect();
    html(&UsersPage { layout: session.layout(app, "Users", "admin-users"), rows, teams, revealed })
}

pub async fn users(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    session.require_admin("manage users")?;
    users_page(&app, &session, None)
}

pub async fn invite_user(
    State(app): State<AppState>,
    session: Session,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, "/admin/users", "manage users")?;
    let role = if form.raw("role") == "Admin" { "Admin" } else { "Member" };
    let (user, code) = berth_server::routes::users::new_invitation(
        form.raw("email"),
        String::new(),
        String::new(),
        vec![role.into()],
    )?;
    let email = user.email.clone();
    write(&app, &session, Command::InviteUser { user, teams: form.all("teams") }).await?;
    let link = berth_server::routes::users::invitation_url(&email, &code);
    users_page(&app, &session, Some((email, link)))
}

#[derive(Template)]
#[template(path = "admin_user.html")]
struct UserPage {
    layout: Layout,
    row: UserRow,
    admin: bool,
    /// Every team, and whether the user is in it.
    teams: Vec<(String, bool)>,
}

pub async fn user(State(app): State<AppState>, session: Session, Path(email): Path<String>) -> UiResult<Response> {
    session.require_admin("manage users")?;
    let view = app.pipeline.view();
    let u = view.user(&email).ok_or_else(|| UiError::not_found(format!("no user {email}")))?;
    let member_of = view.teams_of(&u.email);
    let teams = view.teams().map(|t| (t.name.clone(), member_of.contains(&t.name))).collect();
    let row = UserRow {
        email: u.email.clone(),
        name: u.display_name(),
        status: format!("{:?}", u.status).to_lowercase(),
        roles: u.roles.join(", "),
        teams: member_of.join(", "),
        href: format!("/admin/users/{}", encode(&u.email)),
        toggle: ("", ""),
    };
    let admin = u.roles.iter().any(|r| r == "Admin");
    html(&UserPage { layout: session.layout(&app, &u.email, "admin-users"), row, admin, teams })
}

/// Saves a user's role and teams (`UpdateUser`, as `PATCH /v1/users/{email}`; the last Admin keeps the role).
pub async fn save_user(
    State(app): State<AppState>,
    session: Session,
    Path(email): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    let href = format!("/admin/users/{}", encode(&email));
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, &href, "manage users")?;
    let role = if form.raw("role") == "Admin" { "Admin" } else { "Member" };
    let changes = berth_engine::UserChanges {
        roles: Some(vec![role.to_string()]),
        teams: Some(form.all("teams")),
        ..Default::default()
    };
    write(&app, &session, Command::UpdateUser { email, changes }).await?;
    Ok(see_other(&href))
}

pub async fn user_status(
    State(app): State<AppState>,
    session: Session,
    Path(email): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, &format!("/admin/users/{}/status", encode(&email)), "manage users")?;
    let status = match form.raw("status") {
        "active" => berth_model::UserStatus::Active,
        "disabled" => berth_model::UserStatus::Disabled,
        other => {
            return Err(UiError::new(berth_model::ErrorCode::InvalidRequest, format!("no status {other:?}")));
        }
    };
    let changes = berth_engine::UserChanges { status: Some(status), ..Default::default() };
    write(&app, &session, Command::UpdateUser { email, changes }).await?;
    Ok(see_other("/admin/users"))
}

pub async fn delete_user(
    State(app): State<AppState>,
    session: Session,
    Path(email): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, &format!("/admin/users/{}/delete", encode(&email)), "manage users")?;
    write(&app, &session, Command::DeleteUser { email }).await?;
    Ok(see_other("/admin/users"))
}
