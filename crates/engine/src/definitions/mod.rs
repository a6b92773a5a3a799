//! Definition objects ([`berth_model::Definition`]): the commands that write them, and one module per kind
//! that says what a body of that kind may hold ([`pages`], [`scorecards`], [`subscriptions`], [`actions`]). Every kind is Admin-written (the permission
//! layer refuses them to anyone else) and shares one change kind, so snapshots, digests, the audit log,
//! backups and migrations carry every kind without knowing it.
//!
//! Adding a kind: a `DefinitionKind` variant (model), a module here with `check` (and edits, if the kind
//! has parts that can be changed one at a time), its arm in [`check`], and a route module in the server.

pub mod actions;
pub mod integrations;
pub mod pages;
pub mod scorecards;
pub mod subscriptions;
pub mod webhooks;

use std::sync::Arc;

use berth_model::{Change, Definition, DefinitionKind, DomainError};
use serde_json::Value;

use crate::State;
use crate::command::{Outcome, WriteMeta};

/// A definition's identifier as messages show it (a scorecard's without its blueprint's key prefix).
fn shown(kind: DefinitionKind, identifier: &str) -> String {
    match (kind, berth_model::definition::split_scorecard_key(identifier)) {
        (DefinitionKind::Scorecard, Some((blueprint, id))) => format!("{id}` of blueprint `{blueprint}"),
        _ => identifier.to_string(),
    }
}

/// How a definition is written.
#[derive(Clone, Debug, PartialEq)]
pub enum DefinitionWrite {
    /// A new definition: 409 if the identifier is taken.
    Create(Value),
    /// The whole body of an existing definition: 404 if it does not exist.
    Replace(Value),
    /// Created or replaced.
    Upsert(Value),
    /// One part of an existing definition (a page's widget), changed or, with `None`, removed.
    Part { id: String, patch: Option<Value> },
    /// The top-level keys of an existing definition replaced by these (in the writer, so two concurrent
    /// changes of different keys both land).
    Merge(serde_json::Map<String, Value>),
}

/// A kind's body, checked and normalized (defaults filled in, parts given identifiers) against the catalog.
fn check(state: &State, kind: DefinitionKind, identifier: &str, body: Value) -> Result<Value, DomainError> {
    let mut body = body;
    // The identifier lives beside the body, not in it.
    if let Some(map) = body.as_object_mut() {
        match map.remove("identifier") {
            Some(Value::String(id)) if id != identifier => {
                return Err(DomainError::Invalid(format!(
                    "the body's identifier `{}` differs from `{identifier}`",
                    berth_model::limits::truncate(&id, 120)
                )));
            }
            Some(Value::String(_)) | None => {}
            Some(_) => return Err(DomainError::Invalid("`identifier` is a string".into())),
        }
        for field in ["createdAt", "updatedAt", "createdBy", "updatedBy"] {
            map.remove(field);
        }
    }
    if kind.written_by_commands()
        || matches!(kind, DefinitionKind::ActionPermissions | DefinitionKind::IntegrationRecord)
    {
        return Err(DomainError::BadRequest(format!("a {} is written through its own routes", kind.as_str())));
    }
    Definition::check_common(kind, identifier, &body)?;
    match kind {
        DefinitionKind::Page => pages::check(state, body),
        DefinitionKind::Scorecard => scorecards::check(state, identifier, body),
        DefinitionKind::Subscription => subscriptions::check(state, identifier, body),
        DefinitionKind::Action => actions::check(state, identifier, body),
        DefinitionKind::Secret => check_secret(state, identifier, body),
        DefinitionKind::Webhook => webhooks::check(state, identifier, body),
        DefinitionKind::Integration => integrations::check(state, identifier, body),
        DefinitionKind::IntegrationRecord
        | DefinitionKind::ActionPermissions
        | DefinitionKind::Run
        | DefinitionKind::RunLog
        | DefinitionKind::WebhookEvent => {
            Err(DomainError::BadRequest(format!("a {} is written through its own routes", kind.as_str())))
        }
    }
}

/// A secret's body is its sealed value and description, sealed by the server (the engine never sees a value
/// in the clear); at most [`berth_model::secret::MAX_SECRETS`] of them.
fn check_secret(state: &State, identifier: &str, body: Value) -> Result<Value, DomainError> {
    let fine = berth_model::secret::sealed(&body).is_some_and(|s| !s.is_empty())
        && body.as_object().is_some_and(|m| m.keys().all(|k| k == "value" || k == "description"));
    if !fine {
        return Err(DomainError::Internal("a secret reached the engine unsealed".into()));
    }
    if state.definition(DefinitionKind::Secret, identifier).is_none()
        && state.definitions(DefinitionKind::Secret).count() >= berth_model::secret::MAX_SECRETS
    {
        return Err(DomainError::Invalid(format!(
            "the organisation has {} secrets, the most it keeps",
            berth_model::secret::MAX_SECRETS
        )));
    }
    Ok(body)
}

/// A definition's next version by `meta`'s writer: `body` at `identifier`, keeping when and by whom
/// `existing` (the version it replaces, if any) was created. Every command that writes a definition makes
/// its version here.
pub(crate) fn version(
    meta: &WriteMeta,
    existing: Option<&Definition>,
    kind: DefinitionKind,
    identifier: &str,
    body: Value,
) -> Arc<Definition> {
    Arc::new(Definition {
        kind,
        identifier: identifier.to_string(),
        body: Arc::new(body),
        created_at: existing.map_or(meta.now, |d| d.created_at),
        updated_at: meta.now,
        created_by: existing.map_or_else(|| meta.actor.clone(), |d| d.created_by.clone()),
        updated_by: meta.actor.clone(),
    })
}

/// The change that stores `definition`, and the outcome that answers it.
pub(crate) fn stored(definition: Arc<Definition>, created: bool) -> (Vec<Change>, Outcome) {
    (vec![Change::DefinitionPut { definition: Arc::clone(&definition) }], Outcome::Definition { definition, created })
}

/// The changes of a definition write by `meta`'s writer.
pub(crate) fn write(
    state: &State,
    meta: &WriteMeta,
    kind: DefinitionKind,
    identifier: &str,
    how: &DefinitionWrite,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    write_with(state, meta, kind, identifier, how, true)
}

/// [`write`], with the per-kind count limits checked for a new object or not (a caller that checks the
/// count of a whole set itself).
pub(crate) fn write_with(
    state: &State,
    meta: &WriteMeta,
    kind: DefinitionKind,
    identifier: &str,
    how: &DefinitionWrite,
    limit: bool,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let existing = state.definition(kind, identifier);
    if limit && existing.is_none() && kind == DefinitionKind::Scorecard {
        scorecards::check_room(state, identifier)?;
    }
    let body = match (how, existing) {
        (DefinitionWrite::Create(_), Some(_)) => {
            return Err(DomainError::AlreadyExists { kind: kind.as_str(), id: shown(kind, identifier) });
        }
        (DefinitionWrite::Replace(_) | DefinitionWrite::Part { .. } | DefinitionWrite::Merge(_), None) => {
            return Err(DomainError::not_found(kind.as_str(), shown(kind, identifier)));
        }
        (DefinitionWrite::Create(body) | DefinitionWrite::Replace(body) | DefinitionWrite::Upsert(body), _) => {
            body.clone()
        }
        (DefinitionWrite::Merge(changes), Some(current)) => {
            let mut body = (*current.body).clone();
            if let Some(map) = body.as_object_mut() {
                map.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            body
        }
        (DefinitionWrite::Part { id, patch }, Some(current)) => match kind {
            DefinitionKind::Page => pages::edit_widget(&current.body, id, patch.as_ref())?,
            _ => {
                return Err(DomainError::BadRequest(format!("a {} has no part `{id}` to change alone", kind.as_str())));
            }
        },
    };
    let body = check(state, kind, identifier, body)?;
    let definition = version(meta, existing.map(|d| &**d), kind, identifier, body);
    let created = existing.is_none();
    Ok((
        vec![Change::DefinitionPut { definition: Arc::clone(&definition) }],
        Outcome::Definition { definition, created },
    ))
}

/// The change that deletes a definition (404 if it does not exist).
pub(crate) fn delete(
    state: &State,
    kind: DefinitionKind,
    identifier: &str,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    if kind.written_by_commands()
        || matches!(kind, DefinitionKind::ActionPermissions | DefinitionKind::IntegrationRecord)
    {
        return Err(DomainError::BadRequest(format!("a {} is not deleted alone", kind.as_str())));
    }
    if state.definition(kind, identifier).is_none() {
        return Err(DomainError::not_found(kind.as_str(), shown(kind, identifier)));
    }
    let mut changes = vec![Change::DefinitionDeleted { kind, identifier: identifier.to_string() }];
    // An integration's reports go with it.
    if kind == DefinitionKind::Integration {
        changes.extend(crate::integration_records::all_of(state, identifier));
    }
    // An action's permissions go with it (its runs stay: they are history).
    if kind == DefinitionKind::Action && state.definition(DefinitionKind::ActionPermissions, identifier).is_some() {
        changes.push(Change::DefinitionDeleted {
            kind: DefinitionKind::ActionPermissions,
            identifier: identifier.to_string(),
        });
    }
    Ok((changes, Outcome::Done))
}
