//! Administration (Admins): `/admin/users` (invite, a user's role and teams, disable, delete),
//! `/blueprints/{bp}/permissions` (who may read, with the read policy, create, update and delete),
//! `GET /admin/apps` lists the machine credentials, makes one (`POST /admin/apps`:
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

/// What every change here checks first: the form's CSRF token, then that the user is an Admin (a refusal
/// recorded in the audit log under `path`).
fn may_change(app: &AppState, session: &Session, form: &crate::form::FormData, path: &str, what: &str) -> UiResult<()> {
    session.check_csrf(form)?;
    session.require_admin_to_change(app, path, what)
}

/// The role a form picked: `Admin`, or `Member` for anything else.
fn role_of(form: &crate::form::FormData) -> String {
    if form.raw("role") == "Admin" { "Admin" } else { "Member" }.to_string()
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
    may_change(&app, &session, &form, "/admin/apps", "manage apps")?;
    let name = form.raw("name").trim().to_string();
    let (credential, secret) =
        berth_server::routes::apps::new_credential(name, vec![role_of(&form)], form.all("teams"))?;
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
    may_change(&app, &session, &form, &format!("/admin/apps/{}/rotate", encode(&id)), "manage apps")?;
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
    may_change(&app, &session, &form, &format!("/admin/apps/{}/delete", encode(&id)), "manage apps")?;
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
    may_change(&app, &session, &form, "/admin/teams", "manage teams")?;
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
    may_change(&app, &session, &form, &format!("/admin/teams/{}/delete", encode(&name)), "manage teams")?;
    write(&app, &session, Command::DeleteTeam { name }).await?;
    Ok(see_other("/admin/teams"))
}

pub struct UserRow {
    pub email: String,
    pub name: String,
    pub status: String,
    pub roles: String,
    pub teams: String,
    /// How the user signs in: "single sign-on", "password", or "not yet" (invited).
    pub sign_in: &'static str,
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
    /// Whether single sign-on is configured.
    sso: bool,
}

/// A user as the users pages show them.
fn user_row(view: &berth_engine::State, u: &berth_model::User) -> UserRow {
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
        sign_in: match (&u.sso, &u.password_hash) {
            (Some(_), _) => "single sign-on",
            (None, Some(_)) => "password",
            (None, None) => "not yet",
        },
        href: format!("/admin/users/{}", encode(&u.email)),
        toggle: if status == "disabled" { ("active", "Enable") } else { ("disabled", "Disable") },
    }
}

fn users_page(app: &AppState, session: &Session, revealed: Option<(String, String)>) -> UiResult<Response> {
    let view = app.pipeline.view();
    let rows = view.users().map(|u| user_row(&view, u)).collect();
    let teams = view.teams().map(|t| t.name.clone()).collect();
    let sso = app.sso.is_some();
    html(&UsersPage { layout: session.layout(app, "Users", "admin-users"), rows, teams, revealed, sso })
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
    may_change(&app, &session, &form, "/admin/users", "manage users")?;
    let (user, code) = berth_server::routes::users::new_invitation(
        form.raw("email"),
        String::new(),
        String::new(),
        vec![role_of(&form)],
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
    let row = user_row(&view, u);
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
    may_change(&app, &session, &form, &href, "manage users")?;
    let changes = berth_engine::UserChanges {
        roles: Some(vec![role_of(&form)]),
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
    may_change(&app, &session, &form, &format!("/admin/users/{}/status", encode(&email)), "manage users")?;
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
    may_change(&app, &session, &form, &format!("/admin/users/{}/delete", encode(&email)), "manage users")?;
    write(&app, &session, Command::DeleteUser { email }).await?;
    Ok(see_other("/admin/users"))
}

/// One action's grant as the permissions page shows and edits it.
pub struct GrantRow {
    pub action: &'static str,
    pub label: &'static str,
    pub roles: Vec<(String, bool)>,
    pub teams: String,
    pub users: String,
    pub owned_by_team: bool,
}

#[derive(Template)]
#[template(path = "admin_permissions.html")]
struct PermissionsPage {
    layout: Layout,
    blueprint: String,
    title: String,
    href: String,
    rows: Vec<GrantRow>,
    policy: String,
    /// Per-property and per-relation overrides, as JSON (kept as they are by this page).
    overrides: Vec<(String, String)>,
}

const ACTIONS: [(&str, &str); 4] =
    [("read", "Read"), ("register", "Create"), ("update", "Update"), ("unregister", "Delete")];

/// `/blueprints/{bp}/permissions` (Admins): who may read (with the read policy, a rules-language query an
/// entity must also match), create, update and delete the blueprint's entities: roles, teams, users and
/// "its owning team". Saved as one `SetPermissions`, after the same merge and checks as `PATCH
/// /v1/blueprints/{bp}/permissions`; per-property and per-relation overrides are shown and kept.
pub async fn permissions(State(app): State<AppState>, session: Session, Path(bp): Path<String>) -> UiResult<Response> {
    session.require_admin("change permissions")?;
    let view = app.pipeline.view();
    let b = view.blueprint(&bp).ok_or_else(|| UiError::not_found(format!("no blueprint {bp}")))?;
    let current = berth_engine::access::permissions(&view, &bp);
    let as_json = serde_json::to_value(&current.entities).unwrap_or_default();
    let moderator = format!("{bp}-moderator");
    let rows = ACTIONS
        .iter()
        .map(|(action, label)| {
            let g = &as_json[*action];
            let list = |k: &str| -> Vec<String> {
                g[k].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
            };
            let roles = list("roles");
            GrantRow {
                action,
                label,
                roles: ["Admin", "Member", moderator.as_str()]
                    .iter()
                    .map(|r| (r.to_string(), roles.iter().any(|x| x == r)))
                    .collect(),
                teams: list("teams").join(", "),
                users: list("users").join(", "),
                owned_by_team: g["ownedByTeam"].as_bool().unwrap_or(false),
            }
        })
        .collect();
    let policy = current
        .entities
        .read
        .policy
        .as_ref()
        .map(|p| serde_json::to_string_pretty(p).unwrap_or_default())
        .unwrap_or_default();
    let overrides = ["updateProperties", "updateRelations"]
        .iter()
        .flat_map(|k| {
            as_json[*k]
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |(n, g)| (format!("{k}.{n}"), g.to_string()))
        })
        .collect();
    html(&PermissionsPage {
        layout: session.layout(&app, format!("{} permissions", b.def.title), bp.clone()),
        href: format!("/blueprints/{}/permissions", encode(&bp)),
        title: b.def.title.clone(),
        blueprint: bp,
        rows,
        policy,
        overrides,
    })
}

pub async fn save_permissions(
    State(app): State<AppState>,
    session: Session,
    Path(bp): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    let href = format!("/blueprints/{}/permissions", encode(&bp));
    may_change(&app, &session, &form, &href, "change permissions")?;
    let names = |field: String| -> Vec<String> {
        form.raw(&field).split([',', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let mut patch = serde_json::Map::new();
    for (action, _) in ACTIONS {
        let mut grant = serde_json::json!({
            "roles": form.all(&format!("{action}.roles")),
            "teams": names(format!("{action}.teams")),
            "users": names(format!("{action}.users")),
            "ownedByTeam": form.get(&format!("{action}.ownedByTeam")).is_some(),
        });
        if action == "read" {
            let text = form.raw("read.policy").trim();
            grant["policy"] = if text.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(text).map_err(|e| {
                    UiError::new(berth_model::ErrorCode::InvalidRequest, format!("the read policy is not JSON: {e}"))
                })?
            };
        }
        patch.insert(action.to_string(), grant);
    }
    let view = app.pipeline.view();
    if view.blueprint(&bp).is_none() {
        return Err(UiError::not_found(format!("no blueprint {bp}")));
    }
    let permissions = berth_engine::access::permissions(&view, &bp)
        .patched(&serde_json::json!({"entities": patch}))
        .map_err(berth_server::error::ApiError::from)?;
    write(&app, &session, Command::SetPermissions { blueprint: bp, permissions: Box::new(permissions) }).await?;
    Ok(see_other(&href))
}

pub struct SecretRow {
    pub name: String,
    pub description: String,
    pub updated: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "admin_settings.html")]
struct SettingsPage {
    layout: Layout,
    organization: String,
    store: String,
    version: &'static str,
    /// The data formats this Berth reads.
    formats: String,
    secrets: Vec<SecretRow>,
    sign_in: SignInFacts,
}

/// How people sign in, as configured (`--oidc-*`, `--password-sign-in`): shown, not edited here.
struct SignInFacts {
    password: bool,
    /// `(name, value)` pairs describing single sign-on, when configured.
    sso: Option<Vec<(&'static str, String)>>,
}

fn sign_in_facts(app: &AppState) -> SignInFacts {
    let pairs = |pairs: &[(String, String)]| {
        if pairs.is_empty() {
            "none".to_string()
        } else {
            pairs.iter().map(|(g, v)| format!("{g} → {v}")).collect::<Vec<_>>().join(", ")
        }
    };
    let list = |items: &[String]| if items.is_empty() { "any".to_string() } else { items.join(", ") };
    let sso = app.sso.as_ref().map(|sso| {
        let c = &sso.config;
        let m = &c.mapping;
        vec![
            ("Provider (issuer)", c.issuer.clone()),
            ("Client id", c.client_id.clone()),
            (
                "Client",
                if c.client_secret.is_some() { "confidential (with a secret)" } else { "public (PKCE alone)" }.into(),
            ),
            ("Redirect URI to register", c.redirect_uri()),
            ("Scopes", c.scopes.join(" ")),
            ("Email claim", m.email_claim.clone()),
            ("Groups claim", m.groups_claim.clone()),
            ("Groups → roles", pairs(&m.group_roles)),
            ("Groups → teams", pairs(&m.group_teams)),
            ("Default role", m.default_roles.join(", ")),
            ("Email domains allowed", list(&m.allowed_domains)),
            ("Groups allowed", list(&m.allowed_groups)),
            (
                "Signing out",
                if c.sign_out_at_provider {
                    format!("also at the provider (register {})", c.post_logout_redirect_uri())
                } else {
                    "of Berth only".into()
                },
            ),
        ]
    });
    SignInFacts { password: app.config.password_sign_in, sso }
}

/// `/admin/settings` (Admins): the organisation as configured (its name, the store, the formats this Berth
/// reads) and its secrets (names and descriptions; a value is written, sealed, and never shown again).
pub async fn settings(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    session.require_admin("manage the organisation's settings")?;
    let view = app.pipeline.view();
    let now = berth_server::now();
    let secrets = view
        .definitions(berth_model::DefinitionKind::Secret)
        .map(|d| SecretRow {
            name: d.identifier.clone(),
            description: d.body.get("description").and_then(|v| v.as_str()).unwrap_or_default().to_string(),
            updated: crate::fmt::relative(d.updated_at, now),
            href: format!("/admin/settings/secrets/{}", encode(&d.identifier)),
        })
        .collect();
    html(&SettingsPage {
        layout: session.layout(&app, "Settings", "admin-settings"),
        organization: app.config.organization.clone(),
        store: app.pipeline.store_kind(),
        version: env!("CARGO_PKG_VERSION"),
        formats: format!(
            "reads event format {}, snapshot format {}",
            berth_engine::codec::FORMAT,
            berth_engine::SNAPSHOT_FORMAT
        ),
        secrets,
        sign_in: sign_in_facts(&app),
    })
}

/// Creates a secret, or replaces the value of one (`POST /admin/settings/secrets`), sealed as the API seals it.
pub async fn save_secret(
    State(app): State<AppState>,
    session: Session,
    form: crate::form::FormData,
) -> UiResult<Response> {
    may_change(&app, &session, &form, "/admin/settings/secrets", "change organisation secrets")?;
    let mut body = serde_json::json!({"secretName": form.raw("name").trim(), "secretValue": form.raw("value")});
    let description = form.raw("description").trim();
    if !description.is_empty() {
        body["description"] = serde_json::json!(description);
    }
    let input = berth_model::secret::SecretInput::parse(&body).map_err(berth_server::error::ApiError::from)?;
    let (Some(name), Some(value)) = (input.name, input.value) else {
        return Err(UiError::new(berth_model::ErrorCode::InvalidRequest, "a secret needs a name and a value"));
    };
    let sealed = app.delivery.config().seal_org_secret(&name, &value).map_err(UiError::internal)?;
    let exists = app.pipeline.view().definition(berth_model::DefinitionKind::Secret, &name).is_some();
    let body = berth_model::secret::body(sealed, input.description);
    let how = if exists {
        berth_engine::definitions::DefinitionWrite::Replace(body)
    } else {
        berth_engine::definitions::DefinitionWrite::Create(body)
    };
    let command = Command::WriteDefinition { kind: berth_model::DefinitionKind::Secret, identifier: name, how };
    write(&app, &session, command).await?;
    Ok(see_other("/admin/settings"))
}

pub async fn delete_secret(
    State(app): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    let href = format!("/admin/settings/secrets/{}/delete", encode(&name));
    may_change(&app, &session, &form, &href, "change organisation secrets")?;
    let command = Command::DeleteDefinition { kind: berth_model::DefinitionKind::Secret, identifier: name };
    write(&app, &session, command).await?;
    Ok(see_other("/admin/settings"))
}
