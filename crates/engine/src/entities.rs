//! Entity commands: write (create / upsert / merge / replace / patch) and delete (with dependents).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use berth_model::Relation;
use berth_model::entity::{Field, IdentifierInput};
use berth_model::ids::{self, MAX_ENTITY_TITLE_LEN};
use berth_model::query::Query;
use berth_model::{Change, DomainError, Entity, EntityInput, Fields, Timestamp};
use serde_json::Value;

use crate::State;
use crate::command::{Outcome, WriteMeta, WriteMode};

type Key = (String, String);

pub(crate) fn write(
    state: &State,
    meta: &WriteMeta,
    blueprint: &str,
    path_id: Option<&str>,
    input: &EntityInput,
    mode: WriteMode,
    create_missing_related: bool,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let bp = state.blueprint(blueprint).ok_or_else(|| DomainError::not_found("blueprint", blueprint))?;
    // `team` given as a search query becomes the names it matches.
    let resolved;
    let input = match &input.team_query {
        Some(q) => {
            resolved =
                EntityInput { team: Field::Set(resolve_teams(state, q, meta.now)?), team_query: None, ..input.clone() };
            &resolved
        }
        None => input,
    };
    let given: Option<std::borrow::Cow<str>> = match &input.identifier {
        Some(IdentifierInput::Id(id)) => Some(id.as_str().into()),
        Some(IdentifierInput::Search(q)) => Some(resolve_one(state, meta, blueprint, q)?.into()),
        None => None,
    };
    let identifier = match (path_id, given) {
        (Some(p), Some(i)) if p != i => {
            return Err(DomainError::Invalid(format!("the body's identifier `{i}` differs from the route's `{p}`")));
        }
        (Some(p), _) => p.to_string(),
        (None, Some(i)) => i.into_owned(),
        (None, None) => generate_id(state, blueprint),
    };
    ids::validate_entity_id(&identifier)?;
    let existing = state.entity(blueprint, &identifier);
    match (mode, existing) {
        (WriteMode::Create, Some(_)) => {
            return Err(DomainError::AlreadyExists { kind: "entity", id: identifier });
        }
        (WriteMode::Replace | WriteMode::Patch, None) => {
            return Err(DomainError::not_found("entity", format!("{blueprint}/{identifier}")));
        }
        _ => {}
    }
    let merge = matches!(mode, WriteMode::UpsertMerge | WriteMode::Patch);
    let known_prop = |k: &str| bp.compiled.properties.contains_key(k);
    let known_rel = |k: &str| bp.def.relations.contains_key(k);

    let mut entity = match (existing, merge) {
        (Some(old), true) => {
            let mut e: Entity = (**old).clone();
            // Values of properties removed from the blueprint are not carried along.
            e.properties.retain(|k, _| known_prop(k));
            e.relations.retain(|k, _| known_rel(k));
            match &input.title {
                Field::Set(t) => e.title = Some(t.clone()),
                Field::Null => e.title = None,
                Field::Absent => {}
            }
            match &input.icon {
                Field::Set(t) => e.icon = Some(t.as_str().into()),
                Field::Null => e.icon = None,
                Field::Absent => {}
            }
            match &input.team {
                Field::Set(t) => e.team = t.clone(),
                Field::Null => e.team = Vec::new(),
                Field::Absent => {}
            }
            if let Some(given) = &input.properties {
                e.properties.merge(given);
            }
            if let Some(given) = &input.relations {
                e.relations.merge(given);
            }
            e
        }
        _ => {
            let mut properties = input.properties.as_ref().map(Fields::without_nulls).unwrap_or_default();
            bp.compiled.apply_defaults(&mut properties);
            Entity {
                // An existing entity's identifier is the key the catalog already holds: share it.
                identifier: existing.map_or_else(|| Arc::from(identifier.as_str()), |o| Arc::clone(&o.identifier)),
                title: match &input.title {
                    Field::Set(t) => Some(t.clone()),
                    _ => None,
                },
                icon: match &input.icon {
                    Field::Set(t) => Some(t.as_str().into()),
                    _ => None,
                },
                blueprint: state.blueprint_name(blueprint),
                team: match &input.team {
                    Field::Set(t) => t.clone(),
                    _ => Vec::new(),
                },
                properties,
                relations: input.relations.as_ref().map(Fields::without_nulls).unwrap_or_default(),
                created_at: existing.map_or(meta.now, |o| o.created_at),
                created_by: existing.map_or_else(|| state.intern(&meta.actor), |o| Arc::clone(&o.created_by)),
                updated_at: meta.now,
                updated_by: state.intern(&meta.actor),
                datasource: None,
            }
        }
    };
    entity.updated_at = meta.now;
    entity.updated_by = state.intern(&meta.actor);
    if let Some(d) = &meta.datasource {
        entity.datasource = Some(state.intern(d));
    }
    if let Some(t) = &entity.title {
        ids::validate_title("entity", t, MAX_ENTITY_TITLE_LEN)?;
    }
    if entity.team.iter().any(|t| t.trim().is_empty()) {
        return Err(DomainError::SchemaMismatch("`team` must not contain empty names".into()));
    }
    bp.compiled.validate_properties(blueprint, &entity.properties)?;

    // Relations: known keys, the right shape, targets that exist (or are created on request).
    // Relation values given as search queries become the identifiers they match.
    for (key, value) in entity.relations.iter_mut() {
        if value.is_object() {
            let rel = bp.def.relations.get(key).ok_or_else(|| {
                DomainError::SchemaMismatch(format!("relation `{key}` is not defined in blueprint `{blueprint}`"))
            })?;
            *value = resolve_relation(state, meta, key, rel, value)?;
        }
    }
    let mut changes = Vec::new();
    let mut created_targets: BTreeSet<Key> = BTreeSet::new();
    for (key, value) in entity.relations.iter_mut() {
        let Some(rel) = bp.def.relations.get(key) else {
            return Err(DomainError::SchemaMismatch(format!(
                "relation `{key}` is not defined in blueprint `{blueprint}`"
            )));
        };
        let mut normalised: Option<Value> = None;
        let targets: Vec<String> = match (&*value, rel.many) {
            (Value::String(s), false) => vec![s.clone()],
            (Value::String(s), true) => {
                normalised = Some(Value::Array(vec![Value::String(s.clone())]));
                vec![s.clone()]
            }
            (Value::Array(items), true) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => {
                            return Err(DomainError::SchemaMismatch(format!(
                                "relation `{key}`: items must be identifiers (strings), got {other}"
                            )));
                        }
                    }
                }
                let mut dedup = out.clone();
                dedup.sort();
                dedup.dedup();
                if dedup.len() != out.len() {
                    let mut seen = BTreeSet::new();
                    out.retain(|s| seen.insert(s.clone()));
                    normalised = Some(Value::Array(out.iter().cloned().map(Value::String).collect()));
                }
                out
            }
            (Value::Array(_), false) => {
                return Err(DomainError::SchemaMismatch(format!(
                    "relation `{key}` is single (many: false): give one identifier, not an array"
                )));
            }
            (other, _) => {
                return Err(DomainError::SchemaMismatch(format!(
                    "relation `{key}` must be an identifier{}, got {other}",
                    if rel.many { " or an array of identifiers" } else { "" }
                )));
            }
        };
        if let Some(v) = normalised {
            *value = v;
        }
        for target in targets {
            ids::validate_entity_id(&target)?;
            let self_ref = rel.target == blueprint && target == identifier;
            if self_ref || state.entity(&rel.target, &target).is_some() {
                continue;
            }
            if !create_missing_related {
                return Err(DomainError::RelatedNotFound {
                    relation: key.to_string(),
                    blueprint: rel.target.clone(),
                    id: target,
                });
            }
            if created_targets.insert((rel.target.clone(), target.clone())) {
                changes.push(Change::EntityPut { entity: Arc::new(bare_entity(state, meta, &rel.target, &target)?) });
            }
        }
    }
    for (key, rel) in &bp.def.relations {
        let empty = match entity.relations.get(key) {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if rel.required && empty {
            return Err(DomainError::SchemaMismatch(format!(
                "relation `{key}` is required by blueprint `{blueprint}`"
            )));
        }
    }
    let created = existing.is_none();
    let entity = Arc::new(entity);
    changes.push(Change::EntityPut { entity: Arc::clone(&entity) });
    Ok((changes, Outcome::Entity { entity, created }))
}

/// The teams a search query matches. Each team is seen as an entity whose `$identifier` and `$title` are
/// its name, with properties `name` and `description`.
fn resolve_teams(state: &State, query: &Query, now: Timestamp) -> Result<Vec<String>, DomainError> {
    let ctx = crate::search::Ctx::new(state, query, now, None)?;
    let names: Vec<String> = state
        .teams()
        .filter(|t| {
            let mut properties = Fields::new();
            properties.insert("name", Value::String(t.name.clone()));
            if let Some(d) = &t.description {
                properties.insert("description", Value::String(d.clone()));
            }
            let as_entity = Entity {
                identifier: Arc::from(t.name.as_str()),
                title: Some(t.name.clone()),
                icon: None,
                blueprint: Arc::from("_team"),
                team: vec![t.name.clone()],
                properties,
                relations: Fields::new(),
                created_at: t.created_at,
                created_by: Arc::from(""),
                updated_at: t.updated_at,
                updated_by: Arc::from(""),
                datasource: None,
            };
            crate::search::matches(&ctx, &as_entity, query)
        })
        .map(|t| t.name.clone())
        .collect();
    if names.is_empty() {
        return Err(DomainError::Invalid("the `team` search query matches no team".into()));
    }
    Ok(names)
}

/// `input` with every search query it holds (identifier, team, relation values) replaced by what it matches
/// in `state`, narrowed to what the writer may read. A server resolves searches this way before a write
/// reaches the single writer, so their cost is paid by the request (under its deadline), not by every write
/// queued behind it; the writer then only checks the resolved identifiers.
pub fn resolve_searches(
    state: &State,
    meta: &WriteMeta,
    blueprint: &str,
    mut input: EntityInput,
) -> Result<EntityInput, DomainError> {
    if !input.uses_search() {
        return Ok(input);
    }
    let bp = state.blueprint(blueprint).ok_or_else(|| DomainError::not_found("blueprint", blueprint))?;
    if let Some(q) = input.team_query.take() {
        input.team = Field::Set(resolve_teams(state, &q, meta.now)?);
    }
    if let Some(IdentifierInput::Search(q)) = &input.identifier {
        input.identifier = Some(IdentifierInput::Id(resolve_one(state, meta, blueprint, q)?));
    }
    if let Some(relations) = input.relations.as_mut() {
        for (key, value) in relations.iter_mut() {
            if value.is_object() {
                let rel = bp.def.relations.get(key).ok_or_else(|| {
                    DomainError::SchemaMismatch(format!("relation `{key}` is not defined in blueprint `{blueprint}`"))
                })?;
                *value = resolve_relation(state, meta, key, rel, value)?;
            }
        }
    }
    Ok(input)
}

/// The most entities a relation search query may match (Port's limit).
pub const MAX_SEARCH_RELATION_MATCHES: usize = 100;

/// A search query inside a write, narrowed to what the writer may read: an entity hidden from it is not
/// matched, so the answer is the same whether or not one exists (no oracle, no identifier named).
fn scoped_query(state: &State, meta: &WriteMeta, blueprint: &str, query: &Query) -> Query {
    match &meta.principal {
        Some(p) => crate::scoped::Scoped::new(state, p.clone(), meta.now)
            .narrow(blueprint, Some(query.clone()))
            .unwrap_or_else(|| query.clone()),
        None => query.clone(),
    }
}

/// The one entity of `blueprint` an identifier search query matches.
fn resolve_one(state: &State, meta: &WriteMeta, blueprint: &str, query: &Query) -> Result<String, DomainError> {
    if state.blueprint(blueprint).is_some() {
        crate::search::check_against(state, blueprint, query)?;
    }
    let query = scoped_query(state, meta, blueprint, query);
    let page = crate::search::search_blueprint(state, blueprint, Some(&query), meta.now, None, 2)?;
    match page.entities.as_slice() {
        [one] => Ok(one.identifier.to_string()),
        [] => Err(DomainError::not_found("entity", format!("{blueprint} matching the identifier search query"))),
        _ => Err(DomainError::Invalid(format!(
            "the identifier search query matches more than one entity of `{blueprint}`; it must match exactly one"
        ))),
    }
}

/// The identifier(s) a relation search query matches: one for a single relation, up to 100 for a many one.
fn resolve_relation(
    state: &State,
    meta: &WriteMeta,
    key: &str,
    rel: &Relation,
    value: &Value,
) -> Result<Value, DomainError> {
    let query = Query::parse(value).map_err(|e| DomainError::Invalid(format!("relation `{key}` search query: {e}")))?;
    if state.blueprint(&rel.target).is_some() {
        crate::search::check_against(state, &rel.target, &query)?;
    }
    let query = scoped_query(state, meta, &rel.target, &query);
    let page = crate::search::search_blueprint(
        state,
        &rel.target,
        Some(&query),
        meta.now,
        None,
        MAX_SEARCH_RELATION_MATCHES + 1,
    )?;
    let ids: Vec<Value> = page.entities.iter().map(|e| Value::String(e.identifier.to_string())).collect();
    match (rel.many, ids.len()) {
        (true, n) if n > MAX_SEARCH_RELATION_MATCHES => Err(DomainError::Invalid(format!(
            "relation `{key}` search query matches more than {MAX_SEARCH_RELATION_MATCHES} entities of `{}`",
            rel.target
        ))),
        (true, _) => Ok(Value::Array(ids)),
        (false, 1) => Ok(ids.into_iter().next().unwrap_or(Value::Null)),
        (false, 0) => Err(DomainError::RelatedNotFound {
            relation: key.to_string(),
            blueprint: rel.target.clone(),
            id: "(no entity matches the search query)".into(),
        }),
        (false, n) => Err(DomainError::SchemaMismatch(format!(
            "relation `{key}` is single, but its search query matches {n} entities of `{}`",
            rel.target
        ))),
    }
}

/// An entity created only because another one relates to it (`create_missing_related_entities`).
fn bare_entity(state: &State, meta: &WriteMeta, blueprint: &str, id: &str) -> Result<Entity, DomainError> {
    let bp = state.blueprint(blueprint).ok_or_else(|| DomainError::not_found("blueprint", blueprint))?;
    let mut properties = Fields::new();
    bp.compiled.apply_defaults(&mut properties);
    bp.compiled.validate_properties(blueprint, &properties).map_err(|e| {
        DomainError::SchemaMismatch(format!("cannot create missing related entity `{blueprint}/{id}`: {e}"))
    })?;
    if let Some((key, _)) = bp.def.relations.iter().find(|(_, r)| r.required) {
        return Err(DomainError::SchemaMismatch(format!(
            "cannot create missing related entity `{blueprint}/{id}`: its relation `{key}` is required"
        )));
    }
    Ok(Entity {
        identifier: Arc::from(id),
        title: None,
        icon: None,
        blueprint: state.blueprint_name(blueprint),
        team: Vec::new(),
        properties,
        relations: Fields::new(),
        created_at: meta.now,
        created_by: state.intern(&meta.actor),
        updated_at: meta.now,
        updated_by: state.intern(&meta.actor),
        datasource: meta.datasource.as_deref().map(|d| state.intern(d)),
    })
}

fn generate_id(state: &State, blueprint: &str) -> String {
    let mut n = state.seq() + 1;
    loop {
        let id = format!("e_{n:08x}");
        if state.entity(blueprint, &id).is_none() {
            return id;
        }
        n += 1 << 32;
    }
}

pub(crate) fn delete(
    state: &State,
    meta: &WriteMeta,
    blueprint: &str,
    identifier: &str,
    delete_dependents: bool,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    if state.blueprint(blueprint).is_none() {
        return Err(DomainError::not_found("blueprint", blueprint));
    }
    if state.entity(blueprint, identifier).is_none() {
        return Err(DomainError::not_found("entity", format!("{blueprint}/{identifier}")));
    }
    let roots = BTreeSet::from([(blueprint.to_string(), identifier.to_string())]);
    plan_delete(state, meta, roots, delete_dependents)
}

pub(crate) fn delete_all(
    state: &State,
    meta: &WriteMeta,
    blueprint: &str,
    delete_blueprint: bool,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    if state.blueprint(blueprint).is_none() {
        return Err(DomainError::not_found("blueprint", blueprint));
    }
    let roots: BTreeSet<Key> =
        state.entities_of(blueprint).map(|e| (blueprint.to_string(), e.identifier.to_string())).collect();
    let (mut changes, outcome) = plan_delete(state, meta, roots, false)?;
    if delete_blueprint {
        crate::blueprints::ensure_not_a_relation_target(state, blueprint)?;
        changes.extend(crate::blueprints::scorecards_of(state, blueprint));
        changes.push(Change::BlueprintDeleted { identifier: blueprint.to_string() });
    }
    Ok((changes, outcome))
}

/// Deletes `roots`. Entities with a *required* relation to a deleted entity are deleted too when `cascade`,
/// or make the delete fail otherwise; entities with an optional relation to it lose that relation value.
fn plan_delete(
    state: &State,
    meta: &WriteMeta,
    roots: BTreeSet<Key>,
    cascade: bool,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let mut doomed: BTreeSet<Key> = roots.clone();
    let mut order: Vec<Key> = roots.iter().cloned().collect();
    let mut queue: VecDeque<Key> = roots.into_iter().collect();
    while let Some((bp, id)) = queue.pop_front() {
        for edge in state.incoming(&bp, &id) {
            let required = state
                .blueprint(edge.blueprint())
                .and_then(|b| b.def.relations.get(&**edge.relation()))
                .is_some_and(|r| r.required);
            let key = (edge.blueprint().to_string(), edge.identifier.to_string());
            if !required || doomed.contains(&key) {
                continue;
            }
            if !cascade {
                // A dependent the caller may not read is not named.
                let readable = state.entity(edge.blueprint(), &edge.identifier).is_none_or(|e| {
                    meta.principal.as_ref().is_none_or(|p| crate::access::can_read(state, p, e, meta.now))
                });
                let who = if readable {
                    format!("entity `{}/{}`", edge.blueprint(), edge.identifier)
                } else {
                    "an entity you may not read".to_string()
                };
                return Err(DomainError::HasDependents(format!(
                    "{who} has a required relation `{}` to `{bp}/{id}`; delete it first or pass delete_dependents=true",
                    edge.relation()
                )));
            }
            doomed.insert(key.clone());
            order.push(key.clone());
            queue.push_back(key);
        }
    }
    // Survivors that point at a deleted entity through an optional relation lose that value.
    let mut edits: BTreeMap<Key, Entity> = BTreeMap::new();
    for (bp, id) in &doomed {
        for edge in state.incoming(bp, id) {
            let key = (edge.blueprint().to_string(), edge.identifier.to_string());
            if doomed.contains(&key) {
                continue;
            }
            let Some(current) = state.entity(&key.0, &key.1) else {
                continue;
            };
            let e = edits.entry(key).or_insert_with(|| (**current).clone());
            if let Some(v) = e.relations.get_mut(edge.relation()) {
                match v {
                    Value::Array(items) => items.retain(|x| x.as_str() != Some(id.as_str())),
                    _ => *v = Value::Null,
                }
            }
            e.relations.retain(|_, v| !v.is_null());
            e.updated_at = meta.now;
            e.updated_by = state.intern(&meta.actor);
        }
    }
    let mut changes: Vec<Change> =
        edits.into_values().map(|entity| Change::EntityPut { entity: Arc::new(entity) }).collect();
    for (bp, id) in &order {
        changes.push(Change::EntityDeleted { blueprint: bp.clone(), identifier: id.clone() });
    }
    Ok((changes, Outcome::Deleted { identifiers: order.into_iter().map(|(_, id)| id).collect() }))
}
