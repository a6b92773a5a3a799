//! User commands: invite, update (names, roles, status, teams), set a password, delete, put whole, bootstrap,
//! and a single sign-on sign-in (create or link the user, and sync the roles and teams its groups map to).
//!
//! A user's teams are the teams whose `members` list its email, so changing them writes those teams; the
//! user and its teams change in one atomic batch of events.

use berth_model::{Change, DomainError, SsoIdentity, Team, User, UserStatus};

use crate::State;
use crate::command::{Outcome, WriteMeta};

/// What [`crate::Command::UpdateUser`] changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UserChanges {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub status: Option<UserStatus>,
    pub teams: Option<Vec<String>>,
}

pub(crate) fn invite(
    state: &State,
    meta: &WriteMeta,
    user: &User,
    teams: &[String],
) -> Result<(Vec<Change>, Outcome), DomainError> {
    user.check()?;
    if state.user(&user.email).is_some() {
        return Err(DomainError::AlreadyExists { kind: "user", id: user.email.clone() });
    }
    let user = User { created_at: meta.now, updated_at: meta.now, ..user.clone() };
    let mut changes = vec![Change::UserPut { user: user.clone() }];
    changes.extend(membership_changes(state, meta, &user.email, teams)?);
    Ok((changes, Outcome::User(user)))
}

pub(crate) fn update(
    state: &State,
    meta: &WriteMeta,
    email: &str,
    changes: &UserChanges,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let current = state.user(email).ok_or_else(|| DomainError::not_found("user", email))?;
    let mut user = current.clone();
    if let Some(v) = &changes.first_name {
        user.first_name = v.clone();
    }
    if let Some(v) = &changes.last_name {
        user.last_name = v.clone();
    }
    if let Some(v) = &changes.roles {
        user.roles = v.clone();
    }
    if let Some(v) = changes.status {
        if v == UserStatus::Active && user.password_hash.is_none() && user.sso.is_none() {
            return Err(DomainError::Invalid(format!(
                "`{email}` has not set a password yet; it becomes active when it accepts its invitation"
            )));
        }
        if v == UserStatus::Invited && current.status != UserStatus::Invited {
            return Err(DomainError::Invalid("a user who accepted its invitation cannot be invited again".into()));
        }
        if v != current.status {
            // Every session issued before a change of status ends, for good.
            user.session_epoch += 1;
        }
        user.status = v;
    }
    user.check()?;
    if counts_as_admin(current) && !counts_as_admin(&user) {
        ensure_another_admin(state, email)?;
    }
    user.updated_at = meta.now;
    let mut out = vec![Change::UserPut { user: user.clone() }];
    if let Some(teams) = &changes.teams {
        out.extend(membership_changes(state, meta, email, teams)?);
    }
    Ok((out, Outcome::User(user)))
}

/// Ends every session of a user (its sign-out): the session epoch moves on.
pub(crate) fn end_sessions(
    state: &State,
    meta: &WriteMeta,
    email: &str,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let mut user = state.user(email).ok_or_else(|| DomainError::not_found("user", email))?.clone();
    user.session_epoch += 1;
    user.updated_at = meta.now;
    Ok((vec![Change::UserPut { user: user.clone() }], Outcome::User(user)))
}

/// Sets a password hash. With `invite_sha256`, only for the user holding that pending invitation, which the
/// password then accepts.
pub(crate) fn set_password(
    state: &State,
    meta: &WriteMeta,
    email: &str,
    password_hash: &str,
    invite_sha256: Option<&str>,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let current = state.user(email).ok_or_else(|| DomainError::not_found("user", email))?;
    let mut user = current.clone();
    if let Some(code) = invite_sha256 {
        if current.status != UserStatus::Invited || current.invite_sha256.as_deref() != Some(code) {
            return Err(DomainError::Unauthorized("this invitation is not valid (any more)".into()));
        }
        if meta.now > current.invitation_expires_at() {
            return Err(DomainError::Unauthorized(
                "this invitation has expired (after 7 days); ask an Admin to invite you again".into(),
            ));
        }
        user.status = UserStatus::Active;
        user.invite_sha256 = None;
    }
    user.password_hash = Some(password_hash.to_string());
    user.updated_at = meta.now;
    Ok((vec![Change::UserPut { user: user.clone() }], Outcome::User(user)))
}

pub(crate) fn delete(state: &State, meta: &WriteMeta, email: &str) -> Result<(Vec<Change>, Outcome), DomainError> {
    let current = state.user(email).ok_or_else(|| DomainError::not_found("user", email))?;
    if counts_as_admin(current) {
        ensure_another_admin(state, email)?;
    }
    let mut out = membership_changes(state, meta, email, &[])?;
    out.push(Change::UserDeleted { email: email.to_string() });
    Ok((out, Outcome::Done))
}

pub(crate) fn put(state: &State, meta: &WriteMeta, user: &User) -> Result<(Vec<Change>, Outcome), DomainError> {
    user.check()?;
    let created_at = state.user(&user.email).map_or(meta.now, |u| u.created_at);
    let user = User { created_at, updated_at: meta.now, ..user.clone() };
    Ok((vec![Change::UserPut { user: user.clone() }], Outcome::User(user)))
}

pub(crate) fn bootstrap(state: &State, user: &User) -> Result<(Vec<Change>, Outcome), DomainError> {
    if state.users().next().is_some() {
        return Ok((vec![], Outcome::Unchanged));
    }
    user.check()?;
    Ok((vec![Change::UserPut { user: user.clone() }], Outcome::User(user.clone())))
}

/// What [`crate::Command::SsoSignIn`] knows of a user its provider vouched for.
#[derive(Clone, Debug)]
pub struct SsoSignIn {
    pub email: String,
    pub identity: SsoIdentity,
    /// Names from the provider; empty ones leave the user's as they are.
    pub first_name: String,
    pub last_name: String,
    /// The roles its groups map to; `None` when no role mapping is configured (a new user then gets
    /// `default_roles`, a known one keeps its own).
    pub roles: Option<Vec<String>>,
    pub default_roles: Vec<String>,
    /// The teams single sign-on manages (every team named in the group mapping; created when missing) and,
    /// of those, the ones this user belongs to. Other teams' membership is left as it is.
    pub managed_teams: Vec<String>,
    pub teams: Vec<String>,
}

/// A single sign-on sign-in: creates the user on its first sign-in (active, no password), links a known user
/// to its identity (an invited one becomes active: the provider proved the email), syncs its roles and its
/// managed teams. Nothing is written when nothing changed.
///
/// Refused: a disabled user, and a user linked to another identity (another account claiming the email).
/// Role sync never takes Admin away from the last Admin (nobody could manage the portal any more).
pub(crate) fn sso_sign_in(
    state: &State,
    meta: &WriteMeta,
    sign_in: &SsoSignIn,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let email = &sign_in.email;
    let current = state.user(email);
    let mut user = match current {
        Some(u) => {
            if u.status == UserStatus::Disabled {
                return Err(DomainError::Unauthorized(format!("`{email}` is disabled; ask an Admin")));
            }
            if u.sso.as_ref().is_some_and(|id| id != &sign_in.identity) {
                return Err(DomainError::Unauthorized(format!(
                    "`{email}` is linked to another single sign-on account; ask an Admin"
                )));
            }
            u.clone()
        }
        None => User {
            email: email.clone(),
            first_name: String::new(),
            last_name: String::new(),
            status: UserStatus::Active,
            roles: sign_in.default_roles.clone(),
            password_hash: None,
            invite_sha256: None,
            session_epoch: 0,
            sso: None,
            created_at: meta.now,
            updated_at: meta.now,
        },
    };
    user.sso = Some(sign_in.identity.clone());
    if user.status == UserStatus::Invited {
        user.status = UserStatus::Active;
        user.invite_sha256 = None;
    }
    if !sign_in.first_name.trim().is_empty() {
        user.first_name = sign_in.first_name.trim().to_string();
    }
    if !sign_in.last_name.trim().is_empty() {
        user.last_name = sign_in.last_name.trim().to_string();
    }
    if let Some(roles) = &sign_in.roles {
        let mut roles = roles.clone();
        let demoted = current.is_some_and(counts_as_admin) && !roles.iter().any(|r| r == "Admin");
        if demoted && ensure_another_admin(state, email).is_err() {
            roles.push("Admin".into());
        }
        user.roles = roles;
    }
    user.check()?;
    let mut out = Vec::new();
    if current != Some(&user) {
        user.updated_at = meta.now;
        out.push(Change::UserPut { user: user.clone() });
    }
    for name in &sign_in.managed_teams {
        let wanted = sign_in.teams.contains(name);
        let created;
        let team = match state.team(name) {
            Some(t) => t,
            None if wanted => {
                created = Team {
                    name: name.clone(),
                    description: None,
                    members: vec![],
                    created_at: meta.now,
                    updated_at: meta.now,
                };
                created.check()?;
                &created
            }
            None => continue,
        };
        out.extend(membership_change(meta, team, email, wanted));
    }
    Ok((out, Outcome::User(user)))
}

/// The team write that adds `member` to `team` or takes it out (`wanted`), if it is not so already.
fn membership_change(meta: &WriteMeta, team: &Team, member: &str, wanted: bool) -> Option<Change> {
    if team.members.iter().any(|m| m == member) == wanted {
        return None;
    }
    let mut members = team.members.clone();
    if wanted {
        members.push(member.to_string());
    } else {
        members.retain(|m| m != member);
    }
    Some(Change::TeamPut { team: Team { members, updated_at: meta.now, ..team.clone() } })
}

/// The team writes that make `member` belong to exactly `teams` (which must exist).
fn membership_changes(
    state: &State,
    meta: &WriteMeta,
    member: &str,
    teams: &[String],
) -> Result<Vec<Change>, DomainError> {
    if let Some(missing) = teams.iter().find(|t| state.team(t).is_none()) {
        return Err(DomainError::Invalid(format!("there is no team named {missing:?}; create it first")));
    }
    Ok(state
        .teams()
        .filter_map(|team| membership_change(meta, team, member, teams.iter().any(|t| t == &team.name)))
        .collect())
}

/// An Admin who can act now: an invited user who has not set a password yet cannot sign in, so it does not
/// count.
fn counts_as_admin(user: &User) -> bool {
    user.is_admin() && user.status == UserStatus::Active
}

/// Refuses a change that would leave no Admin (user or credential) other than `except`: nobody could manage
/// the portal any more.
pub(crate) fn ensure_another_admin(state: &State, except: &str) -> Result<(), DomainError> {
    let other_credential = state.credentials().any(|c| c.client_id != except && c.is_admin());
    let other_user = state.users().any(|u| u.email != except && counts_as_admin(u));
    if other_credential || other_user {
        Ok(())
    } else {
        Err(DomainError::HasDependents(format!("`{except}` is the last Admin; make another Admin first")))
    }
}
