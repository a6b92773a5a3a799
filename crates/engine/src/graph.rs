//! Relation-graph rules of the rules language, answered as sets of entities computed once per search:
//! - `relatedTo`: a breadth-first walk from the given entities, along their relations (upstream) or along
//!   relations pointing at them (downstream), at most [`MAX_HOPS`] hops;
//! - `matchAny`: a walk backwards along a relation path, from the given end entities to the entities the
//!   path starts from, read from the reverse-relation index.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use berth_model::DomainError;
use berth_model::query::{Direction, MAX_HOPS, PathStep};
use serde_json::Value;

use crate::State;

/// Entities by blueprint, then identifier (shared strings: a walk over thousands of entities allocates
/// nothing per entity).
pub type EntitySet = HashMap<Arc<str>, HashSet<Arc<str>>>;

type Node = (Arc<str>, Arc<str>);

fn ids_of(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The neighbours of one entity in one direction.
fn neighbours(state: &State, blueprint: &str, id: &str, direction: Direction, required: bool) -> Vec<Node> {
    let mut out = Vec::new();
    match direction {
        Direction::Upstream => {
            let (Some(entity), Some(bp)) = (state.entity(blueprint, id), state.blueprint(blueprint)) else {
                return out;
            };
            for (name, value) in &entity.relations {
                let Some(def) = bp.def.relations.get(name) else { continue };
                if required && !def.required {
                    continue;
                }
                out.extend(ids_of(value).into_iter().filter_map(|t| state.entity_key(&def.target, t)));
            }
        }
        Direction::Downstream => {
            if !state.is_relation_target(blueprint) {
                return out;
            }
            for edge in state.incoming(blueprint, id) {
                if required {
                    let is_required = state
                        .blueprint(&edge.blueprint)
                        .and_then(|b| b.def.relations.get(&*edge.relation))
                        .is_some_and(|r| r.required);
                    if !is_required {
                        continue;
                    }
                }
                out.push((Arc::clone(&edge.blueprint), Arc::clone(&edge.identifier)));
            }
        }
    }
    out
}

/// The entities related to `identifiers` of `blueprint` (themselves excluded).
pub fn related_to(
    state: &State,
    blueprint: &str,
    identifiers: &[String],
    direction: Option<Direction>,
    required: bool,
) -> EntitySet {
    let mut out = EntitySet::new();
    let directions = match direction {
        Some(d) => vec![d],
        None => vec![Direction::Upstream, Direction::Downstream],
    };
    let sources: Vec<Node> = identifiers.iter().filter_map(|id| state.entity_key(blueprint, id)).collect();
    for direction in directions {
        let mut seen: HashSet<Node> = sources.iter().cloned().collect();
        let mut frontier = sources.clone();
        for _ in 0..MAX_HOPS {
            let mut next = Vec::new();
            for (bp, id) in &frontier {
                for node in neighbours(state, bp, id, direction, required) {
                    if seen.insert(node.clone()) {
                        out.entry(Arc::clone(&node.0)).or_default().insert(Arc::clone(&node.1));
                        next.push(node);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
    }
    out
}

/// The blueprints a path visits from `start`, or why it cannot be followed from there.
pub fn path_blueprints(state: &State, start: &str, path: &[PathStep]) -> Result<Vec<String>, DomainError> {
    let mut chain = vec![start.to_string()];
    for step in path {
        let current = chain.last().cloned().unwrap_or_default();
        let bp = state.blueprint(&current).ok_or_else(|| DomainError::not_found("blueprint", &current))?;
        let def = bp.def.relations.get(&step.relation).ok_or_else(|| {
            DomainError::BadRequest(format!("matchAny path: blueprint `{current}` has no relation `{}`", step.relation))
        })?;
        if step.max_hops > 1 && def.target != current {
            return Err(DomainError::BadRequest(format!(
                "matchAny path: relation `{}` of `{current}` points to `{}`, so it cannot be followed more than once",
                step.relation, def.target
            )));
        }
        chain.push(def.target.clone());
    }
    Ok(chain)
}

/// The entities of `start` from which following `path` reaches one of `identifiers` (of the path's last
/// blueprint).
pub fn match_any(
    state: &State,
    start: &str,
    path: &[PathStep],
    identifiers: &[String],
) -> Result<HashSet<Arc<str>>, DomainError> {
    let chain = path_blueprints(state, start, path)?;
    let last = chain.last().cloned().unwrap_or_default();
    let mut current: HashSet<Arc<str>> =
        identifiers.iter().filter_map(|id| state.entity_key(&last, id)).map(|(_, id)| id).collect();
    for (i, step) in path.iter().enumerate().rev() {
        let (source, target) = (&chain[i], &chain[i + 1]);
        let mut reached = HashSet::new();
        let mut frontier = current;
        for _ in 0..step.max_hops {
            let mut next = HashSet::new();
            for id in &frontier {
                for edge in state.incoming(target, id) {
                    if &*edge.blueprint == source.as_str()
                        && &*edge.relation == step.relation.as_str()
                        && !reached.contains(&edge.identifier)
                    {
                        next.insert(Arc::clone(&edge.identifier));
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            reached.extend(next.iter().cloned());
            frontier = next;
        }
        current = reached;
    }
    Ok(current)
}
