//! Commands: what a client asks the catalog to do, and [`execute`], which turns one into changes.

use std::sync::Arc;

use berth_model::{
    Blueprint, Change, Credential, DomainError, Entity, EntityInput, Event, Origin, Team, Timestamp, User,
};
use serde_json::Value;

use crate::State;
use crate::users::UserChanges;
use crate::{blueprints, entities, users};

/// Who writes, when, from where. The engine never reads a clock: `now` comes from here.
#[derive(Clone, Debug)]
pub struct WriteMeta {
    pub actor: String,
    pub origin: Origin,
    pub now: Timestamp,
    /// The writer's `User-Agent`, recorded as the entity's `$datasource`.
    pub datasource: Option<String>,
    pub run_id: Option<String>,
    /// Whose permissions the changes are checked against (`None`: the server itself, unchecked).
    pub principal: Option<crate::access::Principal>,
}

impl WriteMeta {
    /// The event that follows `state`, carrying `change` made by this writer (with the version it replaces,
    /// when `before` is given).
    pub fn event_after(&self, state: &State, change: Change, before: Option<berth_model::Previous>) -> Event {
        Event {
            seq: state.seq() + 1,
            time: self.now,
            actor: self.actor.clone(),
            origin: self.origin,
            run_id: self.run_id.clone(),
            before,
            change,
        }
    }
}

/// How an entity write treats an existing entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Fail with a conflict if it exists (`upsert=false`).
    Create,
    /// Create, or replace it whole (`upsert=true`).
    Upsert,
    /// Create, or merge the given fields into it (`upsert=true&merge=true`).
    UpsertMerge,
    /// Replace an existing entity (`PUT`); fail if it does not exist.
    Replace,
    /// Merge into an existing entity (`PATCH`); fail if it does not exist.
    Patch,
}

#[derive(Clone, Debug)]
pub enum Command {
    CreateBlueprint {
        body: Value,
    },
    ReplaceBlueprint {
        id: String,
        body: Value,
    },
    PatchBlueprint {
        id: String,
        patch: Value,
    },
    DeleteBlueprint {
        id: String,
    },
    DeleteAllEntities {
        blueprint: String,
        delete_blueprint: bool,
    },
    WriteEntity {
        blueprint: String,
        /// The identifier named by the route, for `PUT`/`PATCH`.
        path_id: Option<String>,
        input: EntityInput,
        mode: WriteMode,
        create_missing_related: bool,
    },
    DeleteEntity {
        blueprint: String,
        identifier: String,
        delete_dependents: bool,
    },
    PutCredential {
        credential: Credential,
    },
    /// Changes a credential's name, roles and teams; its secret stays.
    UpdateCredential {
        client_id: String,
        name: String,
        roles: Vec<String>,
        teams: Vec<String>,
    },
    /// Replaces a credential's secret (tokens issued for the old one stop working).
    RotateSecret {
        client_id: String,
        secret_sha256: String,
    },
    DeleteCredential {
        client_id: String,
    },
    /// Creates a team (`create`: fail if it exists) or replaces one.
    PutTeam {
        team: Team,
        create: bool,
    },
    DeleteTeam {
        name: String,
    },
    /// Creates an invited user and adds it to `teams`.
    InviteUser {
        user: User,
        teams: Vec<String>,
    },
    UpdateUser {
        email: String,
        changes: UserChanges,
    },
    /// Sets a user's password hash; with `invite_sha256`, only if it matches the pending invitation.
    SetPassword {
        email: String,
        password_hash: String,
        invite_sha256: Option<String>,
    },
    DeleteUser {
        email: String,
    },
    /// Ends every session of a user (sign-out).
    EndSessions {
        email: String,
    },
    /// Creates or replaces a user whole (the operator's configured admin); its teams stay.
    PutUser {
        user: User,
    },
    /// A user signed in through single sign-on (boxed: large and rare).
    SsoSignIn {
        sign_in: Box<crate::users::SsoSignIn>,
    },
    /// Stores the first user unless any user exists.
    BootstrapUser {
        user: User,
    },
    /// Replaces a blueprint's entity permissions.
    SetPermissions {
        blueprint: String,
        /// Boxed: permissions are large and rare.
        permissions: Box<berth_model::BlueprintPermissions>,
    },
    /// Records a refused request (one stopped before it reached the catalog).
    Refuse {
        resource: String,
        action: String,
        blueprint: Option<String>,
        identifier: Option<String>,
        code: berth_model::ErrorCode,
        message: String,
    },
    /// Creates, replaces or edits a definition object (a page, ...). Admins only.
    WriteDefinition {
        kind: berth_model::DefinitionKind,
        identifier: String,
        how: crate::definitions::DefinitionWrite,
    },
    DeleteDefinition {
        kind: berth_model::DefinitionKind,
        identifier: String,
    },
    /// Makes a blueprint's scorecards exactly these (identifier, body), atomically. Admins only.
    ReplaceScorecards {
        blueprint: String,
        scorecards: Vec<(String, Value)>,
    },
    /// Runs an action (see [`crate::runs`]).
    CreateRun(Box<crate::runs::NewRun>),
    /// Updates a run's status, label, links, summary or external id.
    PatchRun {
        id: String,
        patch: berth_model::run::RunPatch,
    },
    /// Adds a log line to a run.
    AddRunLog {
        id: String,
        line: berth_model::run::LogLine,
    },
    /// An approver's answer.
    DecideRun {
        id: String,
        decision: berth_model::run::Decision,
    },
    /// The invocation worker's record of a run it sent (the server only).
    RecordInvocation {
        id: String,
        invocation: Box<crate::runs::Invocation>,
    },
    /// Stores a request an inbound webhook received (the server only): `{webhook, status: pending, request:
    /// {body, headers, queryParams}, requestId?}`; a duplicate (same identifier) is a conflict.
    ReceiveWebhookEvent {
        id: String,
        body: Value,
    },
    /// Records what processing a webhook event did (the server only): its `status` (processed or failed)
    /// and `results`; an event processed already is left as it is. A processed event's request is dropped
    /// (its entities are the record); a failed one's is kept, to process it again.
    RecordWebhookEvent {
        id: String,
        status: String,
        results: Value,
    },
    /// Puts a processed webhook event back to be processed again (the server, for an Admin).
    RequeueWebhookEvent {
        id: String,
    },
    /// Records what an Ocean integration reported (logs, a resync's metrics, a kind's examples), bounded per
    /// integration. Admins only (an integration's credentials).
    RecordIntegration {
        integration: String,
        report: berth_model::integration::Report,
    },
    /// Changes who may execute and approve an action. Admins only.
    SetActionPermissions {
        action: String,
        patch: Value,
    },
    /// Sets the token signing key (so replicas starting together agree on one).
    InitSigningKey {
        key: String,
    },
    /// Stores the first credential unless any credential exists (so replicas starting together make one).
    BootstrapCredential {
        credential: Credential,
    },
}

impl Command {
    /// What the command is about, for the audit record of a refused attempt: resource, action, blueprint and
    /// identifier.
    pub fn describe(&self) -> (&'static str, &'static str, Option<String>, Option<String>) {
        use berth_model::entity::IdentifierInput;
        match self {
            Command::CreateBlueprint { body } => {
                ("blueprint", "CREATE", body.get("identifier").and_then(Value::as_str).map(str::to_string), None)
            }
            Command::ReplaceBlueprint { id, .. } | Command::PatchBlueprint { id, .. } => {
                ("blueprint", "UPDATE", Some(id.clone()), Some(id.clone()))
            }
            Command::DeleteBlueprint { id } => ("blueprint", "DELETE", Some(id.clone()), Some(id.clone())),
            Command::DeleteAllEntities { blueprint, .. } => ("entity", "DELETE", Some(blueprint.clone()), None),
            Command::WriteEntity { blueprint, path_id, input, mode, .. } => {
                let id = path_id.clone().or_else(|| match &input.identifier {
                    Some(IdentifierInput::Id(id)) => Some(id.clone()),
                    _ => None,
                });
                let action = match mode {
                    WriteMode::Create => "CREATE",
                    WriteMode::Upsert | WriteMode::UpsertMerge => "UPSERT",
                    WriteMode::Replace | WriteMode::Patch => "UPDATE",
                };
                ("entity", action, Some(blueprint.clone()), id)
            }
            Command::DeleteEntity { blueprint, identifier, .. } => {
                ("entity", "DELETE", Some(blueprint.clone()), Some(identifier.clone()))
            }
            Command::SetPermissions { blueprint, .. } => {
                ("permissions", "UPDATE", Some(blueprint.clone()), Some(blueprint.clone()))
            }
            Command::PutTeam { team, .. } => ("team", "UPDATE", None, Some(team.name.clone())),
            Command::DeleteTeam { name } => ("team", "DELETE", None, Some(name.clone())),
            Command::InviteUser { user, .. } | Command::PutUser { user } | Command::BootstrapUser { user } => {
                ("user", "CREATE", None, Some(user.email.clone()))
            }
            Command::UpdateUser { email, .. } | Command::SetPassword { email, .. } | Command::EndSessions { email } => {
                ("user", "UPDATE", None, Some(email.clone()))
            }
            Command::DeleteUser { email } => ("user", "DELETE", None, Some(email.clone())),
            Command::SsoSignIn { sign_in } => ("user", "UPDATE", None, Some(sign_in.email.clone())),
            Command::PutCredential { credential } | Command::BootstrapCredential { credential } => {
                ("app", "CREATE", None, Some(credential.client_id.clone()))
            }
            Command::UpdateCredential { client_id, .. } | Command::RotateSecret { client_id, .. } => {
                ("app", "UPDATE", None, Some(client_id.clone()))
            }
            Command::DeleteCredential { client_id } => ("app", "DELETE", None, Some(client_id.clone())),
            Command::InitSigningKey { .. } => ("signing_key", "CREATE", None, None),
            Command::Refuse { .. } => ("refusal", "CREATE", None, None),
            Command::WriteDefinition { kind, identifier, how } => (
                kind.as_str(),
                match how {
                    crate::definitions::DefinitionWrite::Create(_) => "CREATE",
                    crate::definitions::DefinitionWrite::Upsert(_) => "UPSERT",
                    _ => "UPDATE",
                },
                None,
                Some(identifier.clone()),
            ),
            Command::DeleteDefinition { kind, identifier } => (kind.as_str(), "DELETE", None, Some(identifier.clone())),
            Command::ReplaceScorecards { blueprint, .. } => ("scorecard", "UPDATE", Some(blueprint.clone()), None),
            Command::CreateRun(new) => ("run", "CREATE", None, Some(new.action.clone())),
            Command::PatchRun { id, .. }
            | Command::AddRunLog { id, .. }
            | Command::DecideRun { id, .. }
            | Command::RecordInvocation { id, .. } => ("run", "UPDATE", None, Some(id.clone())),
            Command::SetActionPermissions { action, .. } => {
                ("action_permissions", "UPDATE", None, Some(action.clone()))
            }
            Command::ReceiveWebhookEvent { id, .. } => ("webhook_event", "CREATE", None, Some(id.clone())),
            Command::RecordWebhookEvent { id, .. } | Command::RequeueWebhookEvent { id } => {
                ("webhook_event", "UPDATE", None, Some(id.clone()))
            }
            Command::RecordIntegration { integration, .. } => {
                ("integration_record", "CREATE", None, Some(integration.clone()))
            }
        }
    }

    /// The change that records this command's refusal, with the error's code. Names and the message are cut
    /// to a few hundred bytes: a refused attempt costs the log little, however large the identifier a caller
    /// sent.
    pub fn refusal(&self, error: &DomainError) -> Change {
        let (resource, action, blueprint, identifier) = self.describe();
        let cut = |s: String, max: usize| {
            if s.len() <= max { s } else { format!("{}…", berth_model::limits::truncate(&s, max)) }
        };
        Change::Refused {
            resource: resource.into(),
            action: action.into(),
            blueprint: blueprint.map(|b| cut(b, REFUSAL_NAME_LEN)),
            identifier: identifier.map(|i| cut(i, REFUSAL_NAME_LEN)),
            code: Some(error.code()),
            status: None,
            message: cut(error.to_string(), REFUSAL_MESSAGE_LEN),
        }
    }
}

/// The longest blueprint or identifier, and message, a refusal records.
const REFUSAL_NAME_LEN: usize = 200;
const REFUSAL_MESSAGE_LEN: usize = 500;

/// What a successful command answers with.
#[derive(Clone, Debug)]
pub enum Outcome {
    Blueprint(Arc<Blueprint>),
    Entity {
        entity: Arc<Entity>,
        created: bool,
    },
    /// Identifiers of the entities deleted (of the command's blueprint first, then cascaded ones).
    Deleted {
        identifiers: Vec<String>,
    },
    Done,
    /// The command had nothing to do (an init that found its work done).
    Unchanged,
    Team(Team),
    User(User),
    Definition {
        definition: Arc<berth_model::Definition>,
        created: bool,
    },
}

/// Validates `cmd` against `state` and returns the changes it makes and its answer. Pure: `state` is not changed.
impl Command {
    /// Whether executing the command may read more than blueprints and entities (property indexes, value
    /// counts, reverse relations: search-query inputs, dependents, permission rules of non-admins). A batch
    /// that defers index updates ([`State::defer_indexes`]) settles them before such a command.
    pub fn reads_indexes(&self, meta: &WriteMeta) -> bool {
        let checked = meta.principal.as_ref().is_some_and(|p| !p.is_admin());
        match self {
            Command::WriteEntity { input, .. } => checked || input.uses_search(),
            _ => true,
        }
    }
}

/// The search queries of a batch of entity writes to one blueprint, resolved as the writer would see them:
/// in order, each item against the catalog with the items before it applied (to a scratch copy; nothing
/// is published), so a later item finds an earlier one of the same batch. An item whose input or search
/// fails keeps its error; the others come back with plain identifiers only (see
/// [`crate::resolve_searches`]). A server runs this before a batch reaches the single writer.
pub fn resolve_batch_searches(
    state: &State,
    meta: &WriteMeta,
    blueprint: &str,
    mode: WriteMode,
    create_missing_related: bool,
    inputs: Vec<Result<EntityInput, DomainError>>,
) -> Vec<Result<EntityInput, DomainError>> {
    let Some(last) = inputs.iter().rposition(|i| i.as_ref().is_ok_and(EntityInput::uses_search)) else {
        return inputs;
    };
    let mut scratch = state.clone();
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            let input = input.and_then(|input| crate::resolve_searches(&scratch, meta, blueprint, input))?;
            if i < last {
                // Later items may search for this one: apply it to the scratch copy.
                let command = Command::WriteEntity {
                    blueprint: blueprint.to_string(),
                    path_id: None,
                    input: input.clone(),
                    mode,
                    create_missing_related,
                };
                if let Ok((changes, _)) = execute(&scratch, meta, &command) {
                    for change in changes {
                        let before = scratch.previous_of(&change);
                        let event = meta.event_after(&scratch, change, before);
                        if scratch.apply(&event).is_err() {
                            break;
                        }
                    }
                }
            }
            Ok(input)
        })
        .collect()
}

/// A delete, replace or patch of an entity the caller may not read is answered as for a missing one (a 404
/// naming only what the caller gave), never with a 403 that would tell it exists.
fn hidden_as_missing(
    state: &State,
    p: &crate::access::Principal,
    now: Timestamp,
    cmd: &Command,
) -> Result<(), DomainError> {
    let (blueprint, id) = match cmd {
        Command::DeleteEntity { blueprint, identifier, .. } => (blueprint, identifier.as_str()),
        Command::WriteEntity { blueprint, path_id, input, mode: WriteMode::Replace | WriteMode::Patch, .. } => {
            match (path_id, &input.identifier) {
                (Some(id), _) => (blueprint, id.as_str()),
                (None, Some(berth_model::entity::IdentifierInput::Id(id))) => (blueprint, id.as_str()),
                _ => return Ok(()),
            }
        }
        _ => return Ok(()),
    };
    match state.entity(blueprint, id) {
        Some(e) if !crate::access::can_read(state, p, e, now) => {
            Err(DomainError::not_found("entity", format!("{blueprint}/{id}")))
        }
        _ => Ok(()),
    }
}

/// An entity write tied to a run (`run_id`) that Berth knows is accepted only while that run is in progress
/// (an id Berth does not know is a backend's own, and only recorded).
fn tied_to_a_running_run(state: &State, meta: &WriteMeta, cmd: &Command) -> Result<(), DomainError> {
    let Some(id) = &meta.run_id else { return Ok(()) };
    if !matches!(cmd, Command::WriteEntity { .. } | Command::DeleteEntity { .. } | Command::DeleteAllEntities { .. }) {
        return Ok(());
    }
    match crate::runs::get(state, id) {
        Some((_, run)) if run.status != berth_model::run::Status::InProgress => Err(DomainError::Invalid(format!(
            "run `{id}` is {}: entities are tied to a run only while it is in progress",
            run.status.as_str()
        ))),
        _ => Ok(()),
    }
}

/// [`execute`], then its changes applied to `state` one by one (what the writer does for one command, without
/// a log): for tests and tools that build a state by hand.
pub fn execute_and_apply(state: &mut State, meta: &WriteMeta, cmd: &Command) -> Result<Outcome, DomainError> {
    let (changes, outcome) = execute(state, meta, cmd)?;
    for change in changes {
        let before = state.previous_of(&change);
        let event = meta.event_after(state, change, before);
        state.apply(&event).map_err(|e| DomainError::Internal(e.to_string()))?;
    }
    Ok(outcome)
}

pub fn execute(state: &State, meta: &WriteMeta, cmd: &Command) -> Result<(Vec<Change>, Outcome), DomainError> {
    if let Some(p) = meta.principal.as_ref().filter(|p| !p.is_admin()) {
        hidden_as_missing(state, p, meta.now, cmd)?;
    }
    tied_to_a_running_run(state, meta, cmd)?;
    let (changes, outcome) = run(state, meta, cmd)?;
    if let Some(p) = &meta.principal {
        crate::access::authorize(state, p, &changes)?;
    }
    changes.iter().try_for_each(berth_model::limits::check_change)?;
    Ok((changes, outcome))
}

fn run(state: &State, meta: &WriteMeta, cmd: &Command) -> Result<(Vec<Change>, Outcome), DomainError> {
    match cmd {
        Command::CreateBlueprint { body } => blueprints::create(state, meta, body),
        Command::ReplaceBlueprint { id, body } => blueprints::replace(state, meta, id, body),
        Command::PatchBlueprint { id, patch } => blueprints::patch(state, meta, id, patch),
        Command::DeleteBlueprint { id } => blueprints::delete(state, id),
        Command::DeleteAllEntities { blueprint, delete_blueprint } => {
            entities::delete_all(state, meta, blueprint, *delete_blueprint)
        }
        Command::WriteEntity { blueprint, path_id, input, mode, create_missing_related } => {
            entities::write(state, meta, blueprint, path_id.as_deref(), input, *mode, *create_missing_related)
        }
        Command::DeleteEntity { blueprint, identifier, delete_dependents } => {
            entities::delete(state, meta, blueprint, identifier, *delete_dependents)
        }
        Command::PutCredential { credential } => {
            check_credential(credential)?;
            Ok((vec![Change::CredentialPut { credential: credential.clone() }], Outcome::Done))
        }
        Command::UpdateCredential { client_id, name, roles, teams } => {
            let current =
                state.credential(client_id).ok_or_else(|| DomainError::not_found("app", client_id.clone()))?;
            let updated =
                Credential { name: name.clone(), roles: roles.clone(), teams: teams.clone(), ..current.clone() };
            check_credential(&updated)?;
            if current.is_admin() && !updated.is_admin() {
                users::ensure_another_admin(state, client_id)?;
            }
            Ok((vec![Change::CredentialPut { credential: updated }], Outcome::Done))
        }
        Command::RotateSecret { client_id, secret_sha256 } => {
            let current =
                state.credential(client_id).ok_or_else(|| DomainError::not_found("app", client_id.clone()))?;
            let rotated = Credential { secret_sha256: secret_sha256.clone(), ..current.clone() };
            Ok((vec![Change::CredentialPut { credential: rotated }], Outcome::Done))
        }
        Command::DeleteCredential { client_id } => {
            let current =
                state.credential(client_id).ok_or_else(|| DomainError::not_found("app", client_id.clone()))?;
            if current.is_admin() {
                users::ensure_another_admin(state, client_id)?;
            }
            Ok((vec![Change::CredentialDeleted { client_id: client_id.clone() }], Outcome::Done))
        }
        Command::PutTeam { team, create } => {
            team.check()?;
            let existing = state.team(&team.name);
            if *create && existing.is_some() {
                return Err(DomainError::AlreadyExists { kind: "team", id: team.name.clone() });
            }
            if !*create && existing.is_none() {
                return Err(DomainError::not_found("team", team.name.clone()));
            }
            let created_at = existing.map_or(team.created_at, |t| t.created_at);
            let team = Team { created_at, updated_at: meta.now, ..team.clone() };
            Ok((vec![Change::TeamPut { team: team.clone() }], Outcome::Team(team)))
        }
        Command::WriteDefinition { kind, identifier, how } => {
            crate::definitions::write(state, meta, *kind, identifier, how)
        }
        Command::DeleteDefinition { kind, identifier } => crate::definitions::delete(state, *kind, identifier),
        Command::ReplaceScorecards { blueprint, scorecards } => {
            crate::definitions::scorecards::replace_all(state, meta, blueprint, scorecards)
        }
        Command::DeleteTeam { name } => {
            if state.team(name).is_none() {
                return Err(DomainError::not_found("team", name.clone()));
            }
            Ok((vec![Change::TeamDeleted { name: name.clone() }], Outcome::Done))
        }
        Command::InviteUser { user, teams } => users::invite(state, meta, user, teams),
        Command::UpdateUser { email, changes } => users::update(state, meta, email, changes),
        Command::EndSessions { email } => users::end_sessions(state, meta, email),
        Command::SetPassword { email, password_hash, invite_sha256 } => {
            users::set_password(state, meta, email, password_hash, invite_sha256.as_deref())
        }
        Command::DeleteUser { email } => users::delete(state, meta, email),
        Command::BootstrapUser { user } => users::bootstrap(state, user),
        Command::SsoSignIn { sign_in } => users::sso_sign_in(state, meta, sign_in),
        Command::PutUser { user } => users::put(state, meta, user),
        Command::SetPermissions { blueprint, permissions } => {
            if state.blueprint(blueprint).is_none() {
                return Err(DomainError::not_found("blueprint", blueprint.clone()));
            }
            permissions.check()?;
            let change = Change::PermissionsSet { blueprint: blueprint.clone(), permissions: permissions.clone() };
            Ok((vec![change], Outcome::Done))
        }
        Command::Refuse { resource, action, blueprint, identifier, code, message } => {
            let change = Change::Refused {
                resource: resource.clone(),
                action: action.clone(),
                blueprint: blueprint.clone(),
                identifier: identifier.clone(),
                code: Some(*code),
                status: None,
                message: message.clone(),
            };
            Ok((vec![change], Outcome::Done))
        }
        Command::CreateRun(new) => crate::runs::create(state, meta, new),
        Command::PatchRun { id, patch } => crate::runs::patch(state, meta, id, patch),
        Command::AddRunLog { id, line } => crate::runs::log(state, meta, id, line),
        Command::DecideRun { id, decision } => crate::runs::decide(state, meta, id, decision),
        Command::RecordInvocation { id, invocation } => crate::runs::record(state, meta, id, invocation),
        Command::SetActionPermissions { action, patch } => crate::runs::set_permissions(state, meta, action, patch),
        Command::ReceiveWebhookEvent { id, body } => crate::webhook_events::receive(state, meta, id, body),
        Command::RecordWebhookEvent { id, status, results } => {
            crate::webhook_events::record(state, meta, id, status, results)
        }
        Command::RequeueWebhookEvent { id } => crate::webhook_events::requeue(state, meta, id),
        Command::RecordIntegration { integration, report } => {
            crate::integration_records::record(state, meta, integration, report)
        }
        Command::InitSigningKey { key } => match state.signing_key() {
            Some(_) => Ok((vec![], Outcome::Unchanged)),
            None => Ok((vec![Change::SigningKeySet { key: key.clone() }], Outcome::Done)),
        },
        Command::BootstrapCredential { credential } => match state.credentials().next() {
            Some(_) => Ok((vec![], Outcome::Unchanged)),
            None => Ok((vec![Change::CredentialPut { credential: credential.clone() }], Outcome::Done)),
        },
    }
}

fn check_credential(c: &Credential) -> Result<(), DomainError> {
    if c.name.trim().is_empty() || c.name.len() > 200 {
        return Err(DomainError::Invalid("an app needs a `name` of 1 to 200 characters".into()));
    }
    for role in &c.roles {
        berth_model::credential::check_role(role).map_err(DomainError::Invalid)?;
    }
    if c.teams.iter().any(|t| t.trim().is_empty()) {
        return Err(DomainError::Invalid("`teams` must not contain empty names".into()));
    }
    Ok(())
}
