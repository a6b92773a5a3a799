//! The permission layer: who may write what ([`authorize`], run by [`crate::execute`] on the changes a
//! command makes, so cascades and bulk items are checked like direct writes) and what a caller may read
//! ([`read_scope`], the rules every read is narrowed by, so search results, counts and aggregates agree).
//!
//! - Admins may do anything. Everyone else is checked against the blueprint's [`BlueprintPermissions`]
//!   (stored, or the defaults).
//! - A grant allows a caller named in `users`, holding one of `roles`, in one of `teams`, or, with
//!   `ownedByTeam`, in a team that owns the entity.
//! - An entity's owners are its own `team` list, or with `ownership: {"type": "Inherited", "path": "a.b"}`
//!   the teams of the entities reached along that relation path, read from the current state (so ownership
//!   follows relation changes at once).
//! - A create needs `register` (ownership judged on the new entity); a delete `unregister` (on the old one);
//!   an update needs, for each changed property or relation, its `updateProperties` / `updateRelations`
//!   grant when there is one and `update` otherwise, and `update` for any other change (title, icon, team);
//!   with `ownedByTeam`, the caller's teams must own the entity before and after.
//! - Anything but entities (blueprints, permissions, apps, teams, users) is for Admins only.

use std::borrow::Cow;
use std::collections::BTreeSet;

use berth_model::query::Query;
use berth_model::{BlueprintPermissions, Change, DomainError, Entity, Fields, Grant, Ownership};
use serde_json::{Value, json};

use crate::State;

/// Who is asking: an id (user email or client id), roles and teams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub roles: Vec<String>,
    pub teams: Vec<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "Admin")
    }
}

/// A blueprint's permissions: the stored ones, or the defaults.
pub fn permissions<'s>(state: &'s State, blueprint: &str) -> Cow<'s, BlueprintPermissions> {
    match state.stored_permissions(blueprint) {
        Some(p) => Cow::Borrowed(&**p),
        None => Cow::Owned(BlueprintPermissions::defaults(blueprint)),
    }
}

/// How a blueprint's entities are owned (Direct when its `ownership` is absent or unreadable).
pub fn ownership(state: &State, blueprint: &str) -> Ownership {
    state.blueprint(blueprint).and_then(|b| Ownership::of(b.def.ownership.as_ref()).ok()).unwrap_or(Ownership::Direct)
}

/// The teams that own `entity` (which need not be in `state`: a new entity's relations are followed into it).
pub fn owning_teams(state: &State, entity: &Entity) -> BTreeSet<String> {
    match ownership(state, &entity.blueprint) {
        Ownership::Direct => entity.team.iter().cloned().collect(),
        Ownership::Inherited { path } => {
            // The first step reads the entity's own relation values.
            let mut blueprint = entity.blueprint.to_string();
            let mut current: Vec<std::sync::Arc<Entity>> = Vec::new();
            for (i, step) in path.iter().enumerate() {
                let Some(rel) = state.blueprint(&blueprint).and_then(|b| b.def.relations.get(step).cloned()) else {
                    return BTreeSet::new();
                };
                let targets: Vec<String> = if i == 0 {
                    entity
                        .relations
                        .get(step)
                        .map(Entity::relation_targets)
                        .unwrap_or_default()
                        .into_iter()
                        .map(str::to_string)
                        .collect()
                } else {
                    current
                        .iter()
                        .flat_map(|e| e.relations.get(step).map(Entity::relation_targets).unwrap_or_default())
                        .map(str::to_string)
                        .collect()
                };
                current = targets.iter().filter_map(|t| state.entity(&rel.target, t).cloned()).collect();
                blueprint = rel.target;
            }
            current.iter().flat_map(|e| e.team.iter().cloned()).collect()
        }
    }
}

/// Whether `p`'s teams own `entity`.
pub(crate) fn owned_by(state: &State, p: &Principal, entity: &Entity) -> bool {
    !p.teams.is_empty() && owning_teams(state, entity).iter().any(|t| p.teams.contains(t))
}

/// Whether `grant` lets `p` act; `owned` says whether the caller's teams own the entity (asked only when the
/// grant has `ownedByTeam` and nothing else allowed it).
fn allows(grant: &Grant, p: &Principal, owned: impl FnOnce() -> bool) -> bool {
    p.is_admin()
        || grant.users.iter().any(|u| u == &p.id)
        || grant.roles.iter().any(|r| p.roles.contains(r))
        || grant.teams.iter().any(|t| p.teams.contains(t))
        || (grant.owned_by_team && owned())
}

fn denied(p: &Principal, what: String) -> DomainError {
    DomainError::Forbidden(format!("`{}` may not {what}", p.id))
}

/// Checks that `p` may make every change of a command, judged against the state before it.
pub fn authorize(state: &State, p: &Principal, changes: &[Change]) -> Result<(), DomainError> {
    if p.is_admin() {
        return Ok(());
    }
    for change in changes {
        match change {
            Change::EntityPut { entity } => authorize_put(state, p, entity)?,
            Change::EntityDeleted { blueprint, identifier } => {
                let Some(old) = state.entity(blueprint, identifier) else { continue };
                let perms = permissions(state, blueprint);
                if !allows(&perms.entities.unregister, p, || owned_by(state, p, old)) {
                    let what = entity_name(state, p, old);
                    return Err(denied(p, format!("delete {what} of blueprint `{blueprint}`")));
                }
            }
            Change::Refused { .. } => {}
            // Runs and their logs are made only by the run commands, which judge the caller themselves.
            Change::DefinitionPut { definition } if definition.kind.written_by_commands() => {}
            other => {
                let what = match other {
                    Change::BlueprintPut { .. } | Change::BlueprintDeleted { .. } => "change blueprints",
                    Change::PermissionsSet { .. } => "change permissions",
                    Change::TeamPut { .. } | Change::TeamDeleted { .. } => "change teams",
                    Change::UserPut { .. } | Change::UserDeleted { .. } => "change users",
                    Change::DefinitionPut { definition } => {
                        return Err(denied(p, format!("change {}s (Admins only)", definition.kind.as_str())));
                    }
                    Change::DefinitionDeleted { kind, .. } => {
                        return Err(denied(p, format!("change {}s (Admins only)", kind.as_str())));
                    }
                    _ => "change credentials",
                };
                return Err(denied(p, format!("{what} (Admins only)")));
            }
        }
    }
    Ok(())
}

/// How a refusal names an entity: by its identifier when the caller may read it, else not at all (a
/// cascade can touch entities the caller cannot see; the refusal must not reveal them).
fn entity_name(state: &State, p: &Principal, e: &Entity) -> String {
    // Refusals are judged at the entity's own last write: no clock is read here.
    if can_read(state, p, e, e.updated_at) {
        format!("entity `{}`", e.identifier)
    } else {
        "an entity you may not read".to_string()
    }
}

fn authorize_put(state: &State, p: &Principal, new: &Entity) -> Result<(), DomainError> {
    let (bp, id) = (&*new.blueprint, &new.identifier);
    let perms = permissions(state, bp);
    let e = &perms.entities;
    let Some(old) = state.entity(bp, id) else {
        if allows(&e.register, p, || owned_by(state, p, new)) {
            return Ok(());
        }
        return Err(denied(p, format!("create entities of blueprint `{bp}` (`register` permission)")));
    };
    let owned = || owned_by(state, p, old) && owned_by(state, p, new);
    let mut checked_update = false;
    let keys = |a: &Fields, b: &Fields| -> BTreeSet<String> {
        a.keys().chain(b.keys()).filter(|k| a.get(k) != b.get(k)).map(str::to_string).collect()
    };
    for (kind, changed, per) in [
        ("property", keys(&old.properties, &new.properties), &e.update_properties),
        ("relation", keys(&old.relations, &new.relations), &e.update_relations),
    ] {
        for key in changed {
            let grant = match per.get(&key) {
                Some(g) => g,
                None => {
                    checked_update = true;
                    &e.update
                }
            };
            if !allows(grant, p, owned) {
                let what = entity_name(state, p, old);
                return Err(denied(p, format!("change {kind} `{key}` of {what} of blueprint `{bp}`")));
            }
        }
    }
    let other_changes = old.title != new.title || old.icon != new.icon || old.team != new.team;
    let nothing_changed = keys(&old.properties, &new.properties).is_empty()
        && keys(&old.relations, &new.relations).is_empty()
        && !other_changes;
    if (other_changes || nothing_changed) && !checked_update && !allows(&e.update, p, owned) {
        let what = entity_name(state, p, old);
        return Err(denied(p, format!("update {what} of blueprint `{bp}` (`update` permission)")));
    }
    Ok(())
}

/// Which of a blueprint's entities a caller may read.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadScope {
    All,
    Nothing,
    /// Those matching this query.
    Rules(Query),
}

/// The entities of `blueprint` that `p` may read. A stored policy that no longer parses hides everything (a
/// read restriction fails closed).
pub fn read_scope(state: &State, p: &Principal, blueprint: &str) -> ReadScope {
    if p.is_admin() {
        return ReadScope::All;
    }
    let perms = permissions(state, blueprint);
    let read = &perms.entities.read;
    let named = allows(&Grant { owned_by_team: false, ..read.clone() }, p, || false);
    let base = if named {
        None
    } else if read.owned_by_team {
        match owner_rule(state, p, blueprint) {
            Some(rule) => Some(rule),
            None => return ReadScope::Nothing,
        }
    } else {
        return ReadScope::Nothing;
    };
    let rules = match (base, &read.policy) {
        (None, None) => return ReadScope::All,
        (Some(rule), None) => json!({"combinator": "and", "rules": [rule]}),
        (None, Some(policy)) => policy.clone(),
        (Some(rule), Some(policy)) => json!({"combinator": "and", "rules": [rule, policy]}),
    };
    match berth_model::query_context::parse_for(&rules, Some(&query_context(state, p))) {
        Ok(q) => ReadScope::Rules(q),
        Err(_) => ReadScope::Nothing,
    }
}

/// What contextual values (`{"context": "user" | "userTeams"}`) read for `p`: its id, a user's name, and
/// its teams with their descriptions.
pub fn query_context(state: &State, p: &Principal) -> berth_model::query_context::QueryContext {
    let user = state.user(&p.id);
    berth_model::query_context::QueryContext {
        id: p.id.clone(),
        first_name: user.map(|u| u.first_name.clone()).unwrap_or_default(),
        last_name: user.map(|u| u.last_name.clone()).unwrap_or_default(),
        teams: p.teams.iter().map(|t| (t.clone(), state.team(t).and_then(|t| t.description.clone()))).collect(),
    }
}

/// The rule "owned by one of the caller's teams" for a blueprint's entities (`None`: nothing can be).
fn owner_rule(state: &State, p: &Principal, blueprint: &str) -> Option<Value> {
    if p.teams.is_empty() {
        return None;
    }
    match ownership(state, blueprint) {
        Ownership::Direct => Some(json!({"property": "$team", "operator": "containsAny", "value": p.teams})),
        Ownership::Inherited { path } => {
            let last = crate::graph::path_blueprints(state, blueprint, &path_steps(&path)).ok()?.pop()?;
            let owned: Vec<&str> = state
                .entities_of(&last)
                .filter(|e| e.team.iter().any(|t| p.teams.contains(t)))
                .map(|e| &*e.identifier)
                .collect();
            if owned.is_empty() {
                return None;
            }
            Some(json!({"operator": "matchAny", "property": {"path": path}, "value": owned}))
        }
    }
}

fn path_steps(path: &[String]) -> Vec<berth_model::query::PathStep> {
    path.iter().map(|r| berth_model::query::PathStep { relation: r.clone(), max_hops: 1 }).collect()
}

/// Whether `p` may read `entity`: one judgement, for the entity's blueprint only (a request judging many
/// entities uses a [`crate::scoped::Scoped`], which compiles each scope once).
pub fn can_read(state: &State, p: &Principal, entity: &Entity, now: berth_model::Timestamp) -> bool {
    match read_scope(state, p, &entity.blueprint) {
        ReadScope::All => true,
        ReadScope::Nothing => false,
        ReadScope::Rules(q) => crate::search::Ctx::new(state, &q, now, Some(&entity.blueprint))
            .is_ok_and(|ctx| crate::search::matches(&ctx, entity, &q)),
    }
}
