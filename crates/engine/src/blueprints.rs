//! Blueprint commands: create, replace, patch (JSON merge patch), delete.

use std::sync::Arc;

use berth_model::blueprint::merge_patch;
use berth_model::{Blueprint, Change, DomainError, Entity};
use serde_json::Value;

use crate::State;
use crate::command::{Outcome, WriteMeta};

pub(crate) fn create(state: &State, meta: &WriteMeta, body: &Value) -> Result<(Vec<Change>, Outcome), DomainError> {
    let bp = Blueprint::from_body(body, &meta.actor, meta.now, None)?;
    if state.blueprint(&bp.identifier).is_some() {
        return Err(DomainError::AlreadyExists { kind: "blueprint", id: bp.identifier });
    }
    check(state, &bp)?;
    let bp = Arc::new(bp);
    Ok((vec![Change::BlueprintPut { blueprint: Box::new((*bp).clone()) }], Outcome::Blueprint(bp)))
}

pub(crate) fn replace(
    state: &State,
    meta: &WriteMeta,
    id: &str,
    body: &Value,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let mut body = body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.entry("identifier").or_insert_with(|| Value::String(id.to_string()));
    }
    rewrite(state, meta, id, &body)
}

pub(crate) fn patch(
    state: &State,
    meta: &WriteMeta,
    id: &str,
    patch: &Value,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let existing = state.blueprint(id).ok_or_else(|| DomainError::not_found("blueprint", id))?;
    if !patch.is_object() {
        return Err(DomainError::Invalid("a blueprint patch must be an object".into()));
    }
    let mut merged = existing.def.to_value();
    merge_patch(&mut merged, patch);
    rewrite(state, meta, id, &merged)
}

/// Replaces blueprint `id` by the definition `body` (a full body, or a patch already merged), keeping its
/// creation stamp. A body naming another identifier is refused: blueprints cannot be renamed.
fn rewrite(state: &State, meta: &WriteMeta, id: &str, body: &Value) -> Result<(Vec<Change>, Outcome), DomainError> {
    let existing = state.blueprint(id).ok_or_else(|| DomainError::not_found("blueprint", id))?;
    if let Some(Value::String(given)) = body.get("identifier") {
        if given != id {
            return Err(DomainError::Invalid(format!(
                "the body's identifier `{given}` differs from the route's `{id}`; blueprints cannot be renamed"
            )));
        }
    }
    let created = Some((existing.def.created_at, existing.def.created_by.clone()));
    let bp = Blueprint::from_body(body, &meta.actor, meta.now, created)?;
    update(state, &existing.def, bp)
}

/// Replaces `old` by `new`. Entities lose the values of properties and relations that no longer exist (or
/// whose relation target changed): those strip changes come first, under the old definition.
fn update(state: &State, old: &Blueprint, new: Blueprint) -> Result<(Vec<Change>, Outcome), DomainError> {
    check(state, &new)?;
    let gone_props: Vec<&String> =
        old.schema.properties.keys().filter(|k| !new.schema.properties.contains_key(*k)).collect();
    let gone_rels: Vec<&String> = old
        .relations
        .iter()
        .filter(|(k, r)| new.relations.get(*k).is_none_or(|n| n.target != r.target))
        .map(|(k, _)| k)
        .collect();
    let mut changes = Vec::new();
    if !gone_props.is_empty() || !gone_rels.is_empty() {
        for e in state.entities_of(&old.identifier) {
            let stale = gone_props.iter().any(|k| e.properties.contains_key(k))
                || gone_rels.iter().any(|k| e.relations.contains_key(k));
            if stale {
                let mut stripped: Entity = (**e).clone();
                for k in &gone_props {
                    stripped.properties.remove(k);
                }
                for k in &gone_rels {
                    stripped.relations.remove(k);
                }
                changes.push(Change::EntityPut { entity: Arc::new(stripped) });
            }
        }
    }
    let new = Arc::new(new);
    changes.push(Change::BlueprintPut { blueprint: Box::new((*new).clone()) });
    Ok((changes, Outcome::Blueprint(new)))
}

/// Checks what needs the rest of the catalog: relation targets exist, ownership follows real relations.
fn check(state: &State, bp: &Blueprint) -> Result<(), DomainError> {
    bp.compile()?;
    crate::derived::check(state, bp)?;
    for (key, rel) in &bp.relations {
        if rel.target != bp.identifier && state.blueprint(&rel.target).is_none() {
            return Err(DomainError::InvalidBlueprint(format!(
                "relation `{key}` targets blueprint `{}`, which does not exist",
                rel.target
            )));
        }
    }
    // Ownership: Direct, or Inherited along relations that exist (the first step on this blueprint).
    match berth_model::Ownership::of(bp.ownership.as_ref()).map_err(DomainError::InvalidBlueprint)? {
        berth_model::Ownership::Direct => {}
        berth_model::Ownership::Inherited { path } => {
            if !bp.relations.contains_key(&path[0]) {
                return Err(DomainError::InvalidBlueprint(format!(
                    "`ownership.path` starts with relation `{}`, which blueprint `{}` does not have",
                    path[0], bp.identifier
                )));
            }
        }
    }
    Ok(())
}

pub(crate) fn delete(state: &State, id: &str) -> Result<(Vec<Change>, Outcome), DomainError> {
    if state.blueprint(id).is_none() {
        return Err(DomainError::not_found("blueprint", id));
    }
    let count = state.entity_count(id);
    if count > 0 {
        return Err(DomainError::HasDependents(format!(
            "blueprint `{id}` still has {count} entities; delete them first (DELETE /v1/blueprints/{id}/all-entities)"
        )));
    }
    ensure_not_a_relation_target(state, id)?;
    let mut changes = scorecards_of(state, id);
    changes.push(Change::BlueprintDeleted { identifier: id.to_string() });
    Ok((changes, Outcome::Done))
}

/// The changes that delete a blueprint's scorecards (they go with it).
pub(crate) fn scorecards_of(state: &State, id: &str) -> Vec<Change> {
    state
        .definitions(berth_model::DefinitionKind::Scorecard)
        .filter(|d| berth_model::definition::split_scorecard_key(&d.identifier).is_some_and(|(bp, _)| bp == id))
        .map(|d| Change::DefinitionDeleted { kind: d.kind, identifier: d.identifier.clone() })
        .collect()
}

/// Refuses (409) while other blueprints have relations targeting `id`.
pub(crate) fn ensure_not_a_relation_target(state: &State, id: &str) -> Result<(), DomainError> {
    let referrers: Vec<&str> = state
        .blueprints()
        .filter(|b| b.def.identifier != id && b.def.relations.values().any(|r| r.target == id))
        .map(|b| b.def.identifier.as_str())
        .collect();
    if referrers.is_empty() {
        Ok(())
    } else {
        Err(DomainError::HasDependents(format!(
            "blueprint `{id}` is the target of relations in {}; remove those relations first",
            referrers.join(", ")
        )))
    }
}
