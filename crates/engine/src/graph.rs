//! Relation-graph rules of the rules language, answered as sets of entities computed once per search:
//! - `relatedTo`: a breadth-first walk from the given entities, along their relations (upstream) or along
//!   relations pointing at them (downstream), at most [`MAX_HOPS`] hops;
//! - `matchAny`: a walk backwards along a relation path, from the given end entities to the entities the
//!   path starts from, read from the reverse-relation index.

use berth_model::DomainError;
use berth_model::query::{Direction, MAX_HOPS, PathStep};
use serde_json::Value;

use crate::State;

/// A set of identifiers, hashed with foldhash: a walk hashes every node it meets, and SipHash cost most of the
/// walk. The hasher is seeded at random per process, so writers cannot precompute colliding identifiers.
/// The identifiers are borrowed from the state: a walk over thousands of entities neither allocates nor
/// touches a reference count (each a cache miss) per entity.
pub type IdHashSet<'a> = std::collections::HashSet<&'a str, foldhash::fast::RandomState>;

/// Entities by blueprint, then identifier (strings borrowed from the state).
pub type EntitySet<'a> = std::collections::HashMap<&'a str, IdHashSet<'a>, foldhash::fast::RandomState>;

type Node<'a> = (&'a str, &'a str);

fn ids_of(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Calls `f` with each neighbour of one entity in one direction.
fn each_neighbour<'a>(
    state: &'a State,
    blueprint: &str,
    id: &str,
    direction: Direction,
    required: bool,
    mut f: impl FnMut(&'a str, &'a str),
) {
    match direction {
        Direction::Upstream => {
            let (Some(entity), Some(bp)) = (state.entity(blueprint, id), state.blueprint(blueprint)) else {
                return;
            };
            for (name, value) in &entity.relations {
                let Some(def) = bp.def.relations.get(name) else { continue };
                if required && !def.required {
                    continue;
                }
                for (target_bp, target) in ids_of(value).into_iter().filter_map(|t| state.entity_key(&def.target, t)) {
                    f(target_bp, target);
                }
            }
        }
        Direction::Downstream => {
            if !state.is_relation_target(blueprint) {
                return;
            }
            for edge in state.incoming(blueprint, id) {
                if required {
                    let is_required = state
                        .blueprint(edge.blueprint())
                        .and_then(|b| b.def.relations.get(&**edge.relation()))
                        .is_some_and(|r| r.required);
                    if !is_required {
                        continue;
                    }
                }
                f(edge.blueprint(), &edge.identifier);
            }
        }
    }
}

/// Whether entities of a blueprint can have neighbours in a direction (downstream: some relation points at the
/// blueprint; upstream: it has relations), remembered for the last blueprint asked about: the entities a walk
/// ends on (deployments under a team, say) are then not visited again for nothing.
#[derive(Default)]
struct Onward<'a> {
    last: Option<(&'a str, Direction, bool)>,
}

impl<'a> Onward<'a> {
    fn leads_on(&mut self, state: &State, blueprint: &'a str, direction: Direction) -> bool {
        if let Some((bp, d, answer)) = &self.last {
            if *bp == blueprint && *d == direction {
                return *answer;
            }
        }
        let answer = match direction {
            Direction::Downstream => state.is_relation_target(blueprint),
            Direction::Upstream => state.blueprint(blueprint).is_some_and(|b| !b.def.relations.is_empty()),
        };
        self.last = Some((blueprint, direction, answer));
        answer
    }
}

/// From how many entities on a hop the neighbours are looked up on two threads. Each lookup is a walk down an
/// index tree (mostly cache misses), so a hop of thousands dominates a deep `relatedTo`; but on two cores
/// the second thread is often busy with other requests, and waiting for it made the slowest walks slower
/// (at 1M entities, a 2,000-entity hop: p99 3.8 -> 7 ms split in two when the other core was loaded,
/// 2.3-3.7 ms on one thread). Only much wider hops, whose halves outlast a late start, are split.
const PARALLEL_FRONTIER: usize = 8192;

/// The neighbours of every entity of `frontier` (duplicates included), looked up on two threads from
/// [`PARALLEL_FRONTIER`] entities on.
fn neighbours<'a>(state: &'a State, frontier: &[Node<'a>], direction: Direction, required: bool) -> Vec<Node<'a>> {
    let collect = |part: &[Node<'a>]| {
        let mut out = Vec::with_capacity(part.len() * 2);
        for (bp, id) in part {
            each_neighbour(state, bp, id, direction, required, |nbp, nid| out.push((nbp, nid)));
        }
        out
    };
    if frontier.len() < PARALLEL_FRONTIER {
        return collect(frontier);
    }
    let (first, second) = frontier.split_at(frontier.len() / 2);
    match crate::parallel::on_two_threads(vec![first, second], collect) {
        Some(halves) => halves.concat(),
        None => collect(frontier),
    }
}

/// The entities related to `identifiers` of `blueprint` (themselves excluded).
pub fn related_to<'a>(
    state: &'a State,
    blueprint: &str,
    identifiers: &[String],
    direction: Option<Direction>,
    required: bool,
) -> EntitySet<'a> {
    let directions = match direction {
        Some(d) => vec![d],
        None => vec![Direction::Upstream, Direction::Downstream],
    };
    let sources: Vec<Node<'a>> = identifiers.iter().filter_map(|id| state.entity_key(blueprint, id)).collect();
    let mut out = EntitySet::default();
    for direction in directions {
        // Every entity this walk met, the sources included (they are removed at the end).
        let mut seen = EntitySet::default();
        for &(bp, id) in &sources {
            seen.entry(bp).or_default().insert(id);
        }
        let mut frontier = sources.clone();
        let mut onward = Onward::default();
        for _ in 0..MAX_HOPS {
            // The hop's neighbours are gathered first (duplicates included), so that each blueprint's set of
            // seen entities grows once to its size instead of rehashing as it fills (a hop can reach thousands).
            let hop = neighbours(state, &frontier, direction, required);
            let mut per_blueprint: Vec<(&'a str, usize)> = Vec::new();
            for (bp, _) in &hop {
                match per_blueprint.iter_mut().find(|(b, _)| b == bp) {
                    Some((_, n)) => *n += 1,
                    None => per_blueprint.push((bp, 1)),
                }
            }
            for (bp, n) in per_blueprint {
                seen.entry(bp).or_default().reserve(n);
            }
            let mut next = Vec::new();
            for run in hop.chunk_by(|a, b| a.0 == b.0) {
                let bp = run[0].0;
                let leads_on = onward.leads_on(state, bp, direction);
                let set = seen.entry(bp).or_default();
                for &(_, id) in run {
                    if set.insert(id) && leads_on {
                        next.push((bp, id));
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        for &(bp, id) in &sources {
            if let Some(set) = seen.get_mut(bp) {
                set.remove(id);
            }
        }
        if out.is_empty() {
            out = seen;
        } else {
            for (bp, ids) in seen {
                out.entry(bp).or_default().extend(ids);
            }
        }
    }
    out.retain(|_, ids| !ids.is_empty());
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
pub fn match_any<'a>(
    state: &'a State,
    start: &str,
    path: &[PathStep],
    identifiers: &[String],
) -> Result<IdHashSet<'a>, DomainError> {
    let chain = path_blueprints(state, start, path)?;
    let last = chain.last().cloned().unwrap_or_default();
    let mut current: IdHashSet<'a> =
        identifiers.iter().filter_map(|id| state.entity_key(&last, id)).map(|(_, id)| id).collect();
    for (i, step) in path.iter().enumerate().rev() {
        let (source, target) = (&chain[i], &chain[i + 1]);
        let mut reached = IdHashSet::default();
        let mut frontier = current;
        for _ in 0..step.max_hops {
            let mut next = IdHashSet::default();
            for id in &frontier {
                for edge in state.incoming(target, id) {
                    if &**edge.blueprint() == source.as_str()
                        && &**edge.relation() == step.relation.as_str()
                        && !reached.contains(&*edge.identifier)
                    {
                        next.insert(&edge.identifier);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            reached.extend(next.iter().copied());
            frontier = next;
        }
        current = reached;
    }
    Ok(current)
}
