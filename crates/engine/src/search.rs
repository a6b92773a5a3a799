//! Answering rules-language queries.
//!
//! - [`Ctx`] prepares a query for one search: the time it runs at (for date presets and `isExpired`) and the
//!   entity sets of its graph rules (`relatedTo`, `matchAny`, see [`crate::graph`]), computed once.
//! - [`matches`] evaluates a whole query on one entity: the reference every plan must agree with.
//! - The planner narrows the candidates before evaluating: a top-level `and` rule on `$identifier`
//!   (`=`, `in`) reads the entity map, a rule on a relation (`=`, `in`) reads the reverse-relation index, a
//!   graph rule reads its computed set; the smallest such set wins. Without one, the blueprint is scanned in
//!   identifier order.

use std::sync::Arc;

use std::cmp::Ordering;

use berth_model::query::{Bound, GraphKind, Meta, Op, Operand, Query, Rule, SortKey, Target};
use berth_model::{DomainError, Entity, Timestamp};
use serde_json::Value;

use crate::State;
use crate::graph::{self, EntitySet};
use crate::index::{self, ScalarKey};

/// What a rule with a slot resolved to for this search.
enum Slot<'a> {
    Unused,
    Range(Timestamp, Timestamp),
    Set(EntitySet<'a>),
}

/// A query prepared for one search: the state, the time, and what its slotted rules resolved to.
pub struct Ctx<'a> {
    state: &'a State,
    now: Timestamp,
    slots: Vec<Slot<'a>>,
    /// The scorecards judged in this search, prepared on first use, by blueprint.
    cards: std::sync::Mutex<std::collections::HashMap<String, Arc<Vec<Arc<Card<'a>>>>>>,
    /// A scorecard rule's own context: scorecard rules inside it judge nothing (no scorecard depends on
    /// another, so no cycle can form).
    nested: bool,
    /// One entity's aggregation values, read by its rules without a lookup in the state (see
    /// [`Ctx::with_aggregates`]).
    own: Option<OwnAggregates<'a>>,
}

/// An entity's aggregation values, handed to a context that judges that entity.
struct OwnAggregates<'a> {
    blueprint: &'a str,
    identifier: &'a str,
    spec: &'a crate::derived::DerivedSpec,
    values: &'a [Value],
}

/// A scorecard prepared for judging entities: its filter's and rules' contexts.
struct Card<'a> {
    card: berth_model::scorecard::Scorecard,
    filter: Option<Ctx<'a>>,
    rules: Vec<Ctx<'a>>,
}

impl<'a> Card<'a> {
    /// Prepares a scorecard's filter and rules against `state` at `now` (`None`: one no longer fits the
    /// blueprint, and the scorecard is not judged rather than judged wrongly).
    fn prepare(state: &'a State, now: Timestamp, card: berth_model::scorecard::Scorecard) -> Option<Card<'a>> {
        let prepare = |q: &Query| -> Option<Ctx<'a>> {
            let mut ctx = Ctx::new(state, q, now, Some(&card.blueprint)).ok()?;
            ctx.nested = true;
            Some(ctx)
        };
        let filter = match &card.filter {
            Some(f) => Some(prepare(f)?),
            None => None,
        };
        let rules = card.rules.iter().map(|r| prepare(&r.query)).collect::<Option<Vec<_>>>()?;
        Some(Card { card, filter, rules })
    }

    /// Which rules `e` passes, or `None` when the filter leaves it out.
    fn judge(&self, e: &Entity) -> Option<Vec<bool>> {
        if let (Some(ctx), Some(f)) = (&self.filter, &self.card.filter) {
            if !matches(ctx, e, f) {
                return None;
            }
        }
        Some(self.card.rules.iter().zip(&self.rules).map(|(r, ctx)| matches(ctx, e, &r.query)).collect())
    }
}

impl<'a> Ctx<'a> {
    /// Prepares `query` for a search of the blueprint `scope`, or of every blueprint when `None`.
    pub fn new(state: &'a State, query: &Query, now: Timestamp, scope: Option<&str>) -> Result<Ctx<'a>, DomainError> {
        let mut slots: Vec<Slot> = (0..query.slots()).map(|_| Slot::Unused).collect();
        let mut failure = None;
        query.visit(&mut |node| {
            let (slot, resolved) = match node {
                Query::Rule(Rule { operand: Operand::Preset { preset, time_zone, slot }, .. }) => {
                    let Some((from, to)) = preset.range(now, time_zone) else {
                        failure = Some(DomainError::BadRequest(format!("unknown time zone {time_zone:?}")));
                        return;
                    };
                    (*slot, Slot::Range(from, to))
                }
                Query::Graph(rule) => match resolve_graph(state, &rule.kind, scope) {
                    Ok(set) => (rule.slot, Slot::Set(set)),
                    Err(e) => {
                        failure = Some(e);
                        return;
                    }
                },
                _ => return,
            };
            if let Some(s) = slots.get_mut(slot) {
                *s = resolved;
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(Ctx { state, now, slots, cards: Default::default(), nested: false, own: None }),
        }
    }

    /// A context without a query: for judging scorecards alone.
    pub fn empty(state: &'a State, now: Timestamp) -> Ctx<'a> {
        Ctx { state, now, slots: Vec::new(), cards: Default::default(), nested: false, own: None }
    }

    /// A context with nothing to prepare that judges entity `e`, whose aggregation values (in its blueprint's
    /// spec order, as the state keeps them) are `values`: its rules read them there, not from the state.
    pub(crate) fn with_aggregates(state: &'a State, e: &'a Entity, values: Option<&'a [Value]>) -> Ctx<'a> {
        let own = values.and_then(|values| {
            let spec = state.derived().spec(&e.blueprint)?;
            Some(OwnAggregates { blueprint: &e.blueprint, identifier: &e.identifier, spec, values })
        });
        Ctx { own, ..Ctx::empty(state, Timestamp::from_millis(0)) }
    }

    /// `e`'s aggregation value `name`, when this context was handed `e`'s values.
    fn own_aggregate(&self, e: &Entity, name: &str) -> Option<&'a Value> {
        let own = self.own.as_ref().filter(|o| o.identifier == &*e.identifier && o.blueprint == &*e.blueprint)?;
        match own.spec.kind(name)? {
            crate::derived::Kind::Aggregation(i) => own.values.get(i),
            _ => None,
        }
    }

    /// The scorecards of `blueprint`, prepared (once per context).
    fn cards(&self, blueprint: &str) -> Arc<Vec<Arc<Card<'a>>>> {
        if self.nested {
            return Arc::default();
        }
        let Ok(mut cache) = self.cards.lock() else { return Arc::default() };
        if let Some(found) = cache.get(blueprint) {
            return Arc::clone(found);
        }
        let cards: Vec<Arc<Card<'a>>> = crate::definitions::scorecards::of_blueprint(self.state, blueprint)
            .into_iter()
            .filter_map(|card| Card::prepare(self.state, self.now, card).map(Arc::new))
            .collect();
        let cards = Arc::new(cards);
        cache.insert(blueprint.to_string(), Arc::clone(&cards));
        cards
    }

    fn set(&self, slot: usize) -> Option<&EntitySet<'a>> {
        match self.slots.get(slot) {
            Some(Slot::Set(set)) => Some(set),
            _ => None,
        }
    }

    fn range(&self, slot: usize) -> Option<(Timestamp, Timestamp)> {
        match self.slots.get(slot) {
            Some(Slot::Range(from, to)) => Some((*from, *to)),
            _ => None,
        }
    }
}

fn resolve_graph<'a>(state: &'a State, kind: &GraphKind, scope: Option<&str>) -> Result<EntitySet<'a>, DomainError> {
    match kind {
        GraphKind::RelatedTo { blueprint, identifiers, direction, required } => {
            if state.blueprint(blueprint).is_none() {
                return Err(DomainError::BadRequest(format!(
                    "relatedTo names blueprint `{blueprint}`, which does not exist"
                )));
            }
            Ok(graph::related_to(state, blueprint, identifiers, *direction, *required))
        }
        GraphKind::MatchAny { from_blueprint, path, identifiers } => {
            let mut out = EntitySet::default();
            let starts: Vec<String> = match (from_blueprint, scope) {
                (Some(from), Some(scope)) if from != scope => Vec::new(),
                (Some(from), _) => vec![from.clone()],
                (None, Some(scope)) => vec![scope.to_string()],
                (None, None) => state
                    .blueprints()
                    .map(|b| b.def.identifier.clone())
                    .filter(|b| graph::path_blueprints(state, b, path).is_ok())
                    .collect(),
            };
            for start in starts {
                let set = graph::match_any(state, &start, path, identifiers)?;
                if let Some(bp) = state.blueprint(&start) {
                    out.insert(bp.def.identifier.as_str(), set);
                }
            }
            Ok(out)
        }
    }
}

/// One page of a blueprint search; `next` is the cursor for the page after it.
#[derive(Debug)]
pub struct Page {
    pub entities: Vec<Arc<Entity>>,
    pub next: Option<String>,
}

/// Checks that every property and relation a query names exists on the blueprint.
pub fn check_against(state: &State, blueprint: &str, query: &Query) -> Result<(), DomainError> {
    let bp = state.blueprint(blueprint).ok_or_else(|| DomainError::not_found("blueprint", blueprint))?;
    let def = &bp.def;
    for p in query.properties() {
        let known = def.schema.properties.contains_key(p)
            || def.mirror_properties.contains_key(p)
            || def.calculation_properties.contains_key(p)
            || def.aggregation_properties.contains_key(p);
        if !known {
            return Err(DomainError::BadRequest(format!(
                "the query names property `{p}`, which blueprint `{blueprint}` does not have"
            )));
        }
    }
    for r in query.relations() {
        if !def.relations.contains_key(r) {
            return Err(DomainError::BadRequest(format!(
                "the query names relation `{r}`, which blueprint `{blueprint}` does not have"
            )));
        }
    }
    Ok(())
}

/// A page of a blueprint's entities matching `query`, in identifier order, after the cursor `from`.
pub fn search_blueprint(
    state: &State,
    blueprint: &str,
    query: Option<&Query>,
    now: Timestamp,
    from: Option<&str>,
    limit: usize,
) -> Result<Page, DomainError> {
    if state.blueprint(blueprint).is_none() {
        return Err(DomainError::not_found("blueprint", blueprint));
    }
    if let Some(q) = query {
        check_against(state, blueprint, q)?;
    }
    let ctx = prepare(state, query, now, Some(blueprint))?;
    let after = match from {
        Some(c) => Some(decode_cursor(c)?),
        None => None,
    };
    let mut out = Vec::with_capacity(limit.min(1024));
    let planned = query.and_then(|q| candidates(&ctx, blueprint, q, Some(limit)));
    let iter: Box<dyn Iterator<Item = &Arc<Entity>>> = match (planned, &after) {
        (Some(plan), after) => {
            Box::new(plan.sorted_after(state, blueprint, after.as_deref()).filter_map(|id| state.entity(blueprint, id)))
        }
        (None, Some(a)) => Box::new(state.entities_after(blueprint, a)),
        (None, None) => Box::new(state.entities_of(blueprint)),
    };
    let mut more = false;
    for e in iter.filter(|e| query.is_none_or(|q| matches(&ctx, e, q))) {
        if out.len() == limit {
            more = true;
            break;
        }
        out.push(Arc::clone(e));
    }
    let next = if more { out.last().map(|e| encode_cursor(&e.identifier)) } else { None };
    Ok(Page { entities: out, next })
}

/// A query's context, or an empty one when there is no query.
fn prepare<'a>(
    state: &'a State,
    query: Option<&Query>,
    now: Timestamp,
    scope: Option<&str>,
) -> Result<Ctx<'a>, DomainError> {
    match query {
        Some(q) => Ctx::new(state, q, now, scope),
        None => Ok(Ctx::empty(state, now)),
    }
}

/// Every entity of every blueprint (or of the blueprints a top-level `$blueprint` rule names) matching `query`,
/// with the blueprints that had matches.
pub fn search_all(
    state: &State,
    query: &Query,
    now: Timestamp,
) -> Result<(Vec<Arc<Entity>>, Vec<String>), DomainError> {
    let mut out = Vec::new();
    let matching = for_each_match(state, query, now, |e| out.push(Arc::clone(e)))?;
    Ok((out, matching))
}

/// Calls `f` on every entity matching `query` across blueprints (as [`search_all`] finds them) without
/// collecting them; returns the blueprints that had matches.
pub fn for_each_match<'s>(
    state: &'s State,
    query: &Query,
    now: Timestamp,
    mut f: impl FnMut(&'s Arc<Entity>),
) -> Result<Vec<String>, DomainError> {
    let ctx = Ctx::new(state, query, now, None)?;
    let blueprints: Vec<String> = match query.blueprint_filter() {
        Some(list) => list,
        None => state.blueprints().map(|b| b.def.identifier.clone()).collect(),
    };
    let mut matching = Vec::new();
    for bp in blueprints {
        let mut hits = 0usize;
        let mut visit = |e: &'s Arc<Entity>| {
            if matches(&ctx, e, query) {
                hits += 1;
                f(e);
            }
        };
        match candidates(&ctx, &bp, query, None) {
            Some(plan) => {
                plan.sorted_after(state, &bp, None).filter_map(|id| state.entity(&bp, id)).for_each(&mut visit)
            }
            None => state.entities_of(&bp).for_each(&mut visit),
        }
        if hits > 0 {
            matching.push(bp);
        }
    }
    Ok(matching)
}

/// How many entities of `blueprint` match `query` (planned like a page, nothing collected).
pub fn count_blueprint(state: &State, blueprint: &str, query: &Query, now: Timestamp) -> Result<usize, DomainError> {
    let ctx = Ctx::new(state, query, now, Some(blueprint))?;
    Ok(match candidates(&ctx, blueprint, query, None) {
        Some(plan) => plan
            .sorted_after(state, blueprint, None)
            .filter_map(|id| state.entity(blueprint, id))
            .filter(|e| matches(&ctx, e, query))
            .count(),
        None => state.entities_of(blueprint).filter(|e| matches(&ctx, e, query)).count(),
    })
}

/// An entity's place in a sorted result: its sort-key values, then its identifier.
type Position = (Vec<Option<Value>>, String);

/// Like [`search_blueprint`], ordered by `sort` (ties broken by identifier), with a cursor that stays valid
/// while writes happen: the next page starts after the last entity's sort position.
pub fn search_blueprint_sorted(
    state: &State,
    blueprint: &str,
    query: Option<&Query>,
    sort: &[SortKey],
    now: Timestamp,
    from: Option<&str>,
    limit: usize,
) -> Result<Page, DomainError> {
    if sort.is_empty() {
        return search_blueprint(state, blueprint, query, now, from, limit);
    }
    let bp = state.blueprint(blueprint).ok_or_else(|| DomainError::not_found("blueprint", blueprint))?;
    if let Some(q) = query {
        check_against(state, blueprint, q)?;
    }
    let ctx = prepare(state, query, now, Some(blueprint))?;
    for key in sort {
        if let Target::Property(p) = &key.target {
            let derived = state.derived().spec(blueprint).is_some_and(|s| s.kind(p).is_some());
            if !bp.def.schema.properties.contains_key(p) && !derived {
                return Err(DomainError::BadRequest(format!(
                    "cannot sort by `{p}`: blueprint `{blueprint}` has no such property"
                )));
            }
        }
    }
    let position = |e: &Entity| -> Position {
        (sort.iter().map(|k| sort_value(state, e, &k.target)).collect(), e.identifier.to_string())
    };
    let compare = |a: &Position, b: &Position| -> Ordering {
        for (i, key) in sort.iter().enumerate() {
            let (x, y) = (a.0[i].as_ref(), b.0[i].as_ref());
            // Entities without a value come last in either direction.
            let o = match (x, y) {
                (Some(_), Some(_)) if key.descending => sort_cmp(x, y).reverse(),
                _ => sort_cmp(x, y),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.1.cmp(&b.1)
    };
    let after = match from {
        Some(c) => {
            let text = decode_cursor(c)?;
            let v: Value = serde_json::from_str(&text).map_err(|_| bad_cursor())?;
            let mut items = v.as_array().cloned().ok_or_else(bad_cursor)?;
            let id = items.pop().and_then(|v| v.as_str().map(str::to_string)).ok_or_else(bad_cursor)?;
            if items.len() != sort.len() {
                return Err(bad_cursor());
            }
            Some((items.into_iter().map(|v| if v.is_null() { None } else { Some(v) }).collect::<Vec<_>>(), id))
        }
        None => None,
    };
    // A sorted page needs every match (to sort them), so the planner plans for all of them.
    let planned = query.and_then(|q| candidates(&ctx, blueprint, q, None));
    // Unless the matches are few, walking the sort property's ordered index yields the page in order.
    let walk = match (&planned, sort) {
        (Some(Plan::Ids(ids)), _) if ids.len() <= state.entity_count(blueprint) / 16 => None,
        (_, [key]) => walk_index(&ctx, blueprint, query, key, after.as_ref(), limit, &position, &compare),
        _ => None,
    };
    let mut hits: Vec<(Position, Arc<Entity>)> = match (walk, planned) {
        (Some(hits), _) => hits,
        (None, Some(plan)) => plan
            .sorted_after(state, blueprint, None)
            .filter_map(|id| state.entity(blueprint, id))
            .filter(|e| query.is_none_or(|q| matches(&ctx, e, q)))
            .map(|e| (position(e), Arc::clone(e)))
            .collect(),
        (None, None) => state
            .entities_of(blueprint)
            .filter(|e| query.is_none_or(|q| matches(&ctx, e, q)))
            .map(|e| (position(e), Arc::clone(e)))
            .collect(),
    };
    if let Some(a) = &after {
        hits.retain(|(p, _)| compare(p, a) == Ordering::Greater);
    }
    hits.sort_by(|x, y| compare(&x.0, &y.0));
    let more = hits.len() > limit;
    hits.truncate(limit);
    let next = if more {
        hits.last().map(|((keys, id), _)| {
            let mut items: Vec<Value> = keys.iter().map(|k| k.clone().unwrap_or(Value::Null)).collect();
            items.push(Value::String(id.clone()));
            encode_cursor(&Value::Array(items).to_string())
        })
    } else {
        None
    };
    Ok(Page { entities: hits.into_iter().map(|(_, e)| e).collect(), next })
}

/// The first `limit + 1` matches after `after`, in sort order, read from the ordered index of the one sort
/// property instead of sorting every match; `None` when the property's index cannot give the sort order
/// (not a single-scalar property, or a date-time, which sorts as text but is indexed as an instant).
///
/// Index entries come ordered by (value, identifier); walking them backwards gives descending values, and each
/// run of equal values is re-sorted with `compare` (identifiers ascending in both directions). Entities
/// without a value come last, in identifier order.
#[allow(clippy::too_many_arguments)]
fn walk_index(
    ctx: &Ctx<'_>,
    blueprint: &str,
    query: Option<&Query>,
    key: &SortKey,
    after: Option<&Position>,
    limit: usize,
    position: &dyn Fn(&Entity) -> Position,
    compare: &dyn Fn(&Position, &Position) -> Ordering,
) -> Option<Vec<(Position, Arc<Entity>)>> {
    let state = ctx.state;
    let Target::Property(p) = &key.target else { return None };
    let def = state.blueprint(blueprint)?;
    let ty = def.def.schema.properties.get(p)?.get("type").and_then(Value::as_str)?;
    if !matches!(ty, "string" | "number" | "boolean") || state.is_date_time(blueprint, p) {
        return None;
    }
    let index = state.property_index(blueprint, p)?;
    let wanted = limit + 1;
    let mut out: Vec<(Position, Arc<Entity>)> = Vec::with_capacity(wanted.min(1024));
    let keep = |h: &(Position, Arc<Entity>)| after.is_none_or(|a| compare(&h.0, a) == Ordering::Greater);
    let accepts = |e: &Entity| query.is_none_or(|q| matches(ctx, e, q));
    // A cursor past every valued entity skips the index.
    let after_value = after.map(|a| a.0.first().cloned().flatten());
    if !matches!(after_value, Some(None)) {
        let start = after_value.flatten().and_then(|v| ScalarKey::of(&v, false));
        let entries: Box<dyn Iterator<Item = &index::Entry>> = match (key.descending, start) {
            (false, Some(k)) => Box::new(index.range(index::Entry { value: k, id: Arc::from("") }..)),
            (true, Some(k)) => Box::new(index.range(..=index::Entry { value: k, id: Arc::from(MAX_ID) }).rev()),
            (false, None) => Box::new(index.iter()),
            (true, None) => Box::new(index.iter().rev()),
        };
        let mut run: Vec<(Position, Arc<Entity>)> = Vec::new();
        let mut run_value: Option<&ScalarKey> = None;
        for entry in entries {
            if run_value != Some(&entry.value) {
                run.sort_by(|x, y| compare(&x.0, &y.0));
                out.extend(run.drain(..).filter(keep));
                if out.len() >= wanted {
                    break;
                }
                run_value = Some(&entry.value);
            }
            if let Some(e) = state.entity(blueprint, &entry.id) {
                if is_scalar(e.properties.get(p)) && accepts(e) {
                    run.push((position(e), Arc::clone(e)));
                }
            }
        }
        run.sort_by(|x, y| compare(&x.0, &y.0));
        out.extend(run.drain(..).filter(keep));
    }
    if out.len() < wanted {
        // The rest: entities without a value, and any whose value is not a scalar (written before a schema
        // change), which the index does not order as the sort does.
        let mut rest: Vec<(Position, Arc<Entity>)> = state
            .entities_of(blueprint)
            .filter(|e| !is_scalar(e.properties.get(p)) && accepts(e))
            .map(|e| (position(e), Arc::clone(e)))
            .filter(keep)
            .collect();
        rest.sort_by(|x, y| compare(&x.0, &y.0));
        out.extend(rest.into_iter().take(wanted - out.len()));
    }
    out.truncate(wanted);
    Some(out)
}

fn is_scalar(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(_) | Value::Number(_) | Value::String(_)))
}

/// Greater than any identifier (identifiers are at most a few hundred characters, none of them U+10FFFF).
pub(crate) const MAX_ID: &str = "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}";

fn bad_cursor() -> DomainError {
    DomainError::BadRequest("`from` is not a cursor returned by this search".into())
}

/// A derived property's value (mirror, calculation, aggregation) of `e`, when its blueprint has one named
/// `name`. Searches see every value: a caller's search is refused before it gets here if it names a derived
/// property computed from entities the caller may not all read (see `Scoped`).
pub(crate) fn derived_value(state: &State, e: &Entity, name: &str) -> Option<Value> {
    crate::derived::value(state, e, name, &crate::derived::Everything)
}

fn sort_value(state: &State, e: &Entity, target: &Target) -> Option<Value> {
    let v = match target {
        Target::Property(p) => e.properties.get(p).cloned().or_else(|| derived_value(state, e, p)),
        Target::Relation(r) => e.relations.get(r).cloned(),
        Target::Meta(m) => Some(meta_value(e, *m)),
        Target::PropertySchema { .. } | Target::Scorecard { .. } => None,
    };
    v.filter(|v| !v.is_null())
}

/// A total order for sorting: booleans, then numbers, then strings, then arrays and objects (by their JSON
/// text); absent values after all others (the caller keeps them last when sorting in descending order).
fn sort_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => match (x, y) {
            (Value::Bool(p), Value::Bool(q)) => p.cmp(q),
            (Value::Number(p), Value::Number(q)) => {
                p.as_f64().unwrap_or(f64::NAN).total_cmp(&q.as_f64().unwrap_or(f64::NAN))
            }
            (Value::String(p), Value::String(q)) => p.cmp(q),
            _ if rank(x) != rank(y) => rank(x).cmp(&rank(y)),
            _ => x.to_string().cmp(&y.to_string()),
        },
    }
}

/// Candidate identifiers, read in identifier order without duplicates. They are sorted lazily (a heap built in
/// O(n)): a page that needs its first 200 of 8,000 candidates pays for 200 pops, not a sort of 8,000 strings.
/// The identifiers are borrowed (from the state, the query's graph sets or the query): collecting thousands
/// of candidates then touches no reference counts, each a cache miss on a string somewhere in the heap.
#[derive(Default)]
struct IdSet<'a>(Vec<&'a str>);

/// An identifier with its first 16 bytes as an integer: ordering compares the integers first (in the heap's
/// own memory) and reads the strings, scattered over the heap, only on a tie. Byte order is string order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Prefixed<'a>(u128, &'a str);

impl<'a> Prefixed<'a> {
    fn new(id: &'a str) -> Prefixed<'a> {
        let mut head = [0u8; 16];
        let n = id.len().min(16);
        head[..n].copy_from_slice(&id.as_bytes()[..n]);
        Prefixed(u128::from_be_bytes(head), id)
    }
}

impl<'a> IdSet<'a> {
    /// How many candidates (an upper bound: a repeated identifier counts each time).
    fn len(&self) -> usize {
        self.0.len()
    }

    /// The candidates in identifier order, each once.
    fn into_sorted(self) -> impl Iterator<Item = &'a str> {
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<Prefixed<'a>>> =
            self.0.into_iter().map(|id| std::cmp::Reverse(Prefixed::new(id))).collect();
        let mut last: Option<&'a str> = None;
        std::iter::from_fn(move || {
            loop {
                let std::cmp::Reverse(Prefixed(_, id)) = heap.pop()?;
                if last != Some(id) {
                    last = Some(id);
                    return Some(id);
                }
            }
        })
    }
}

impl<'a> FromIterator<&'a str> for IdSet<'a> {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        IdSet(iter.into_iter().collect())
    }
}

/// Where a search reads its candidates from.
enum Plan<'c> {
    /// Identifiers gathered from an index or a graph rule, sorted when read.
    Ids(IdSet<'c>),
    /// The sources of one relation into one target, read lazily from the reverse-relation index in
    /// identifier order: a page of a target with many sources reads about the page.
    Sources { target_blueprint: &'c str, target: &'c str, relation: &'c str },
    /// The entities whose scorecard level ceiling allows the level asked, read lazily in identifier order: a
    /// page of a common level reads about the page, and judges only entities that can be at that level.
    /// `extra`: entities with other ceilings that may be at a level asked (sorted).
    Levels { levels: &'c crate::levels::CardLevels, ceilings: Vec<u8>, extra: Vec<&'c str> },
}

impl<'c> Plan<'c> {
    /// The candidates of `blueprint` in identifier order, each once, after `after` when given.
    fn sorted_after(
        self,
        state: &'c State,
        blueprint: &'c str,
        after: Option<&'c str>,
    ) -> Box<dyn Iterator<Item = &'c str> + 'c> {
        match self {
            Plan::Ids(ids) => Box::new(ids.into_sorted().filter(move |id| after.is_none_or(|a| *id > a))),
            Plan::Sources { target_blueprint, target, relation } => {
                Box::new(state.sources(target_blueprint, target, blueprint, relation, after).map(|id| &**id))
            }
            Plan::Levels { levels, ceilings, extra } => Box::new(levels.with_ceilings(&ceilings, extra, after)),
        }
    }
}

/// The most candidates worth reading from a property index. A search that wants `limit` results stops its
/// scan after about `limit * total / matches` entities, while reading `matches` candidates costs about
/// `matches`: the index pays while `matches < sqrt(limit * total)`. A search that wants every result scans
/// everything, and the index pays while the candidates are a small part of the blueprint.
fn index_cap(total: usize, limit: Option<usize>) -> usize {
    match limit {
        Some(limit) => (((limit.max(1) * total) as f64).sqrt() as usize).clamp(64, (total / 2).max(64)),
        None => (total / 16).max(64),
    }
}

/// A superset of the identifiers (of `blueprint`) that can match `query`, in identifier order, when a top-level
/// `and` rule allows reading them from an index; `None` when a scan will do better. `limit` is how many
/// results the caller wants (`None`: all of them).
///
/// For a page (`limit` given), a relation rule naming one target is read lazily ([`Plan::Sources`]) unless a
/// smaller gathered set exists: reading sources in order until the page is full costs at most what gathering
/// them would, so it is counted only against a gathered rival, and only up to that rival's size.
fn candidates<'c>(ctx: &'c Ctx<'_>, blueprint: &str, query: &'c Query, limit: Option<usize>) -> Option<Plan<'c>> {
    let state = ctx.state;
    let nodes: Vec<&Query> = match query {
        Query::Group { combinator: berth_model::query::Combinator::And, rules } => rules.iter().collect(),
        Query::Group { .. } => return None,
        single => vec![single],
    };
    let bp = state.blueprint(blueprint)?;
    let mut best: Option<IdSet> = None;
    // A graph rule's computed set, restricted to this blueprint.
    for node in &nodes {
        if let Query::Graph(g) = node {
            let set: IdSet = ctx
                .set(g.slot)
                .and_then(|s| s.get(blueprint))
                .map(|ids| ids.iter().map(|id| &**id).collect())
                .unwrap_or_default();
            if best.as_ref().is_none_or(|b| set.len() < b.len()) {
                best = Some(set);
            }
        }
    }
    let rules = nodes.into_iter().filter_map(|q| match q {
        Query::Rule(r) => Some(r),
        _ => None,
    });
    let rules: Vec<&Rule> = rules.collect();
    // Relation rules naming one target, left lazy for a page: (target blueprint, target, relation).
    let mut lazy: Vec<(&'c str, &'c str, &'c str)> = Vec::new();
    for rule in &rules {
        let values: Vec<&str> = match (&rule.op, &rule.operand) {
            (Op::Eq, Operand::Scalar(Value::String(v))) => vec![v.as_str()],
            (Op::In, Operand::List(list)) if list.iter().all(Value::is_string) => {
                list.iter().filter_map(Value::as_str).collect()
            }
            _ => continue,
        };
        let set: IdSet = match &rule.target {
            Target::Meta(Meta::Identifier) => {
                values.into_iter().filter(|id| state.entity(blueprint, id).is_some()).collect()
            }
            Target::Relation(r) => {
                let Some(def) = bp.def.relations.get(r) else { continue };
                if let (Some(_), [target]) = (limit, values.as_slice()) {
                    lazy.push((def.target.as_str(), target, r.as_str()));
                    continue;
                }
                values
                    .into_iter()
                    .flat_map(|target| state.incoming(&def.target, target))
                    .filter(|edge| &**edge.blueprint() == blueprint && &**edge.relation() == r.as_str())
                    .map(|edge| &*edge.identifier)
                    .collect()
            }
            _ => continue,
        };
        if best.as_ref().is_none_or(|b| set.len() < b.len()) {
            best = Some(set);
        }
    }
    // Property indexes: only when nothing cheaper was found or they may be smaller; a rule whose index
    // answer would exceed the cap (or the best set so far) is left to the evaluator.
    let total = state.entity_count(blueprint);
    for rule in &rules {
        let cap = best.as_ref().map_or(index_cap(total, limit), |b| b.len()).max(1);
        if let Some(ids) = index_candidates(ctx, blueprint, rule, cap) {
            if best.as_ref().is_none_or(|b| ids.len() < b.len()) {
                best = Some(IdSet(ids));
            }
        }
    }
    // A lazy relation read wins unless a gathered set is smaller than it (counted up to that set's size).
    let sources = |&(target_blueprint, target, relation): &(&'c str, &'c str, &'c str)| Plan::Sources {
        target_blueprint,
        target,
        relation,
    };
    match (&best, lazy.as_slice()) {
        (None, [first, ..]) => return Some(sources(first)),
        (Some(b), lazy) => {
            let shorter = lazy.iter().find(|(target_blueprint, target, relation)| {
                state.sources(target_blueprint, target, blueprint, relation, None).take(b.len()).count() < b.len()
            });
            if let Some(found) = shorter {
                return Some(sources(found));
            }
        }
        (None, []) => {}
    }
    // A page of a scorecard level whose candidates were too many to gather: read them lazily, in order.
    if best.is_none() && limit.is_some() {
        for rule in &rules {
            if let Some((levels, ceilings, extra)) = level_range(state, blueprint, rule, (total / 2).max(64)) {
                return Some(Plan::Levels { levels, ceilings, extra });
            }
        }
    }
    // A search for every match where no one rule is selective enough: the intersection of the two smallest
    // index answers (each under half the blueprint) costs less than visiting everything, and is often far
    // smaller than either (a team's entities of one language).
    if best.is_none() && limit.is_none() && rules.len() >= 2 {
        let cap = (total / 2).max(64);
        let mut sets: Vec<Vec<&str>> = rules.iter().filter_map(|r| index_candidates(ctx, blueprint, r, cap)).collect();
        if sets.len() >= 2 {
            sets.sort_by_key(Vec::len);
            let second: std::collections::HashSet<&str> = sets[1].iter().copied().collect();
            best = Some(sets[0].iter().filter(|id| second.contains(*id)).copied().collect());
        }
    }
    best.map(Plan::Ids)
}

/// The candidates of a search by scorecard level (`=` a level, or `in` levels): the entities whose level
/// ceiling ([`crate::levels`]) allows a level asked, unless there are `cap` or more.
fn level_candidates<'c>(
    state: &'c State,
    blueprint: &str,
    scorecard: &str,
    rule: &Rule,
    cap: usize,
) -> Option<Vec<&'c str>> {
    let levels = state.card_levels(blueprint, scorecard)?;
    let (ceilings, extra) = level_reads(state, levels, rule, cap)?;
    let mut out = levels.gather(&ceilings, cap.saturating_sub(extra.len()))?;
    out.extend(extra);
    Some(out)
}

/// What to read for a scorecard-level rule (none: it names no level of the scorecard): the ceilings an
/// entity at a level asked can have, and entities with a higher ceiling that may stop at it (sorted; see
/// [`crate::levels::CardLevels::stopped_at`], given up past `cap`: then every higher ceiling is read);
/// `None` when the rule is not one the ceilings answer.
fn level_reads<'c>(
    state: &'c State,
    levels: &'c crate::levels::CardLevels,
    rule: &Rule,
    cap: usize,
) -> Option<(Vec<u8>, Vec<&'c str>)> {
    let asked: Vec<&str> = match (&rule.op, &rule.operand) {
        (Op::Eq, Operand::Scalar(Value::String(v))) => vec![v.as_str()],
        (Op::In, Operand::List(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    let mut ceilings = Vec::new();
    let mut extra = Vec::new();
    for level in asked.iter().filter_map(|t| levels.rank(t)) {
        let stopped = if levels.is_open_above(level) { levels.stopped_at(state, level, cap) } else { None };
        match stopped {
            Some(ids) => {
                ceilings.push(level);
                extra.extend(ids);
            }
            None => ceilings.extend(levels.ceilings_for(&[level])),
        }
    }
    ceilings.sort_unstable();
    ceilings.dedup();
    extra.sort_unstable();
    extra.dedup();
    Some((ceilings, extra))
}

/// The ceilings and entities a scorecard-level rule of `blueprint` reads, when it is one (see
/// [`level_reads`]).
fn level_range<'c>(
    state: &'c State,
    blueprint: &str,
    rule: &Rule,
    cap: usize,
) -> Option<(&'c crate::levels::CardLevels, Vec<u8>, Vec<&'c str>)> {
    let Target::Scorecard { scorecard, rule: None } = &rule.target else { return None };
    let levels = state.card_levels(blueprint, scorecard)?;
    let (ceilings, extra) = level_reads(state, levels, rule, cap)?;
    Some((levels, ceilings, extra))
}

/// The identifiers a property index gives for one rule, unless there are `cap` or more of them (or the rule
/// cannot be answered by an index).
fn index_candidates<'c>(ctx: &Ctx<'c>, blueprint: &str, rule: &Rule, cap: usize) -> Option<Vec<&'c str>> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let state = ctx.state;
    let name = match &rule.target {
        Target::Property(p) => p.as_str(),
        Target::Meta(Meta::Title) => crate::index::TITLE,
        Target::Meta(Meta::Team) => crate::index::TEAM,
        Target::Scorecard { scorecard, rule: None } => return level_candidates(state, blueprint, scorecard, rule, cap),
        _ => return None,
    };
    if state.property_indexes_pending() {
        // Not built yet (just after start-up): the rule is left to the evaluator.
        return None;
    }
    if state.derived().spec(blueprint).is_some_and(|s| s.kind(name).is_some()) {
        // A derived property has no index: the evaluator computes it.
        return None;
    }
    let set = state.property_index(blueprint, name);
    let date_time = state.is_date_time(blueprint, name);
    let key = |v: &Value| ScalarKey::of(v, date_time);
    let bounded = |it: &mut dyn Iterator<Item = &'c Arc<str>>| -> Option<Vec<&'c str>> {
        let mut out = Vec::new();
        for id in it {
            if out.len() >= cap {
                return None;
            }
            out.push(&**id);
        }
        Some(out)
    };
    // A property no entity has a value for yet has no index: read an empty one.
    static EMPTY: std::sync::LazyLock<imbl::OrdSet<index::Entry>> = std::sync::LazyLock::new(imbl::OrdSet::new);
    let set = set.unwrap_or(&EMPTY);
    // A counted property (an enum) knows how many entries each value has: a value over the cap is not read
    // entry by entry only to be given up (a status that a third of the catalog has).
    let counts = if state.is_counted(blueprint, name) { state.value_counts(blueprint, name) } else { None };
    let entries_of = |keys: &[ScalarKey]| -> Option<usize> {
        counts.map(|c| keys.iter().map(|k| c.get(k).copied().unwrap_or(0)).sum())
    };
    match (&rule.op, &rule.operand) {
        // Equality on a date-time compares the strings, which the instant index cannot answer.
        (Op::Eq, Operand::Scalar(v)) if !v.is_null() && !date_time => {
            let k = key(v)?;
            if entries_of(std::slice::from_ref(&k)).is_some_and(|n| n > cap) {
                return None;
            }
            bounded(&mut index::equal(set, &k))
        }
        (Op::In | Op::ContainsAny, Operand::List(list)) if !date_time && list.iter().all(|v| !v.is_null()) => {
            let keys: Vec<ScalarKey> = list.iter().map(key).collect::<Option<Vec<_>>>()?;
            if entries_of(&keys).is_some_and(|n| n >= cap) {
                return None;
            }
            let mut out = Vec::new();
            for k in &keys {
                let mut part = bounded(&mut index::equal(set, k))?;
                out.append(&mut part);
                if out.len() >= cap {
                    return None;
                }
            }
            Some(out)
        }
        (Op::Gt | Op::Ge | Op::Lt | Op::Le, Operand::Bound(b)) => {
            let k = match b {
                Bound::Number(n) if n.is_finite() => ScalarKey::Num(*n),
                Bound::Time(t) if date_time => ScalarKey::Time(t.millis()),
                _ => return None,
            };
            let (low, high) = match rule.op {
                Op::Gt => (Excluded(k), Unbounded),
                Op::Ge => (Included(k), Unbounded),
                Op::Lt => (Unbounded, Excluded(k)),
                _ => (Unbounded, Included(k)),
            };
            bounded(&mut index::range(set, low, high))
        }
        (Op::Between, operand) if date_time => {
            let (from, to) = match operand {
                Operand::Range { from, to } => (*from, *to),
                Operand::Preset { slot, .. } => ctx.range(*slot)?,
                _ => return None,
            };
            bounded(&mut index::range(
                set,
                Included(ScalarKey::Time(from.millis())),
                Included(ScalarKey::Time(to.millis())),
            ))
        }
        (Op::BeginsWith, Operand::Scalar(Value::String(prefix))) if !date_time => {
            bounded(&mut index::prefixed(set, prefix))
        }
        _ => None,
    }
}

/// The reference answer: a plain scan of the blueprint with [`matches`], no planning. For tests and
/// for checking plans.
pub fn scan(state: &State, blueprint: &str, query: &Query, now: Timestamp) -> Result<Vec<Arc<Entity>>, DomainError> {
    let ctx = Ctx::new(state, query, now, Some(blueprint))?;
    Ok(state.entities_of(blueprint).filter(|e| matches(&ctx, e, query)).cloned().collect())
}

fn encode_cursor(id: &str) -> String {
    id.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(c: &str) -> Result<String, DomainError> {
    let bad = || DomainError::BadRequest("`from` is not a cursor returned by this search".into());
    if !c.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(c.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

thread_local! {
    /// The deadline of the search running on this thread ([`with_deadline`]), how many entities it has
    /// judged since it last read the clock, and whether the deadline has passed.
    static DEADLINE: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    static JUDGED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static EXPIRED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The search was stopped at its deadline ([`with_deadline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePassed;

/// Runs `f` (searches, counts, aggregates) with a deadline: once it has passed, every entity is judged a
/// non-match at once, so the search ends in time linear in what is left, and the answer is
/// `Err(DeadlinePassed)` instead of a partial result. The clock is read every 1024 entities; without a
/// deadline, searches never read it (results depend only on the state and the query).
pub fn with_deadline<T>(deadline: std::time::Instant, f: impl FnOnce() -> T) -> Result<T, DeadlinePassed> {
    DEADLINE.set(Some(deadline));
    JUDGED.set(0);
    EXPIRED.set(false);
    let out = f();
    DEADLINE.set(None);
    if EXPIRED.replace(false) { Err(DeadlinePassed) } else { Ok(out) }
}

/// Whether this thread's search has passed its deadline.
pub(crate) fn interrupted() -> bool {
    if EXPIRED.get() {
        return true;
    }
    let Some(deadline) = DEADLINE.get() else { return false };
    let n = JUDGED.get().wrapping_add(1);
    JUDGED.set(n);
    if n.is_multiple_of(1024) && std::time::Instant::now() >= deadline {
        EXPIRED.set(true);
        return true;
    }
    false
}

/// Whether an entity matches a query prepared as `ctx` (always false once a deadline has passed).
pub fn matches(ctx: &Ctx<'_>, e: &Entity, q: &Query) -> bool {
    !interrupted() && matches_node(ctx, e, q)
}

fn matches_node(ctx: &Ctx<'_>, e: &Entity, q: &Query) -> bool {
    match q {
        Query::Group { combinator, rules } => match combinator {
            berth_model::query::Combinator::And => rules.iter().all(|r| matches_node(ctx, e, r)),
            berth_model::query::Combinator::Or => rules.iter().any(|r| matches_node(ctx, e, r)),
        },
        Query::Rule(rule) => rule_matches(ctx, e, rule),
        Query::Graph(g) => {
            ctx.set(g.slot).and_then(|s| s.get(&*e.blueprint)).is_some_and(|ids| ids.contains(&*e.identifier))
        }
    }
}

pub(crate) fn meta_value(e: &Entity, m: Meta) -> Value {
    let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    match m {
        Meta::Identifier => Value::String(e.identifier.to_string()),
        Meta::Title => opt(&e.title),
        Meta::Team => Value::Array(e.team.iter().cloned().map(Value::String).collect()),
        Meta::Icon => e.icon.as_deref().map_or(Value::Null, |i| Value::String(i.to_string())),
        Meta::Blueprint => Value::String(e.blueprint.to_string()),
        Meta::CreatedAt => Value::String(e.created_at.to_rfc3339()),
        Meta::UpdatedAt => Value::String(e.updated_at.to_rfc3339()),
        Meta::CreatedBy => Value::String(e.created_by.to_string()),
        Meta::UpdatedBy => Value::String(e.updated_by.to_string()),
        Meta::Datasource => e.datasource.as_deref().map_or(Value::Null, |d| Value::String(d.to_string())),
    }
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Equality; an array matches when one of its items does.
fn eq(v: Option<&Value>, want: &Value) -> bool {
    match v {
        Some(Value::Array(items)) => items.iter().any(|i| scalar_eq(i, want)),
        Some(v) => scalar_eq(v, want),
        None => want.is_null(),
    }
}

fn in_list(v: Option<&Value>, list: &[Value]) -> bool {
    list.iter().any(|want| eq(v, want))
}

fn compare(v: Option<&Value>, bound: &Bound) -> Option<std::cmp::Ordering> {
    match (v?, bound) {
        (Value::Number(n), Bound::Number(b)) => n.as_f64()?.partial_cmp(b),
        (Value::String(s), Bound::Time(t)) => Timestamp::parse(s).map(|x| x.cmp(t)),
        _ => None,
    }
}

fn string_test(v: Option<&Value>, want: &Value, f: fn(&str, &str) -> bool) -> bool {
    match (v, want) {
        (Some(Value::String(s)), Value::String(w)) => f(s, w),
        (Some(Value::Array(items)), Value::String(w)) => items.iter().any(|i| i.as_str().is_some_and(|s| f(s, w))),
        _ => false,
    }
}

/// `$createdAt` / `$updatedAt` against a date bound or range, compared as timestamps (no formatting and
/// re-parsing per entity on a scan). `None` when the rule is not of that kind.
fn meta_time_matches(ctx: &Ctx<'_>, e: &Entity, rule: &Rule) -> Option<bool> {
    let t = match rule.target {
        Target::Meta(Meta::CreatedAt) => e.created_at,
        Target::Meta(Meta::UpdatedAt) => e.updated_at,
        _ => return None,
    };
    Some(match (&rule.op, &rule.operand) {
        (Op::Between, Operand::Preset { slot, .. }) => ctx.range(*slot).is_some_and(|(from, to)| t >= from && t <= to),
        (Op::NotBetween, Operand::Preset { slot, .. }) => {
            !ctx.range(*slot).is_some_and(|(from, to)| t >= from && t <= to)
        }
        (Op::IsExpired, _) => t < ctx.now,
        (Op::IsNotExpired, _) => t >= ctx.now,
        (Op::Gt, Operand::Bound(Bound::Time(b))) => t > *b,
        (Op::Ge, Operand::Bound(Bound::Time(b))) => t >= *b,
        (Op::Lt, Operand::Bound(Bound::Time(b))) => t < *b,
        (Op::Le, Operand::Bound(Bound::Time(b))) => t <= *b,
        (Op::Between, Operand::Range { from, to }) => t >= *from && t <= *to,
        (Op::NotBetween, Operand::Range { from, to }) => !(t >= *from && t <= *to),
        _ => return None,
    })
}

/// `propertySchema` rules: every property of the entity's blueprint with that type and format is tested;
/// `=` and `contains` match when one of them does, `!=` when none is equal.
fn schema_rule_matches(ctx: &Ctx<'_>, e: &Entity, rule: &Rule, kind: &str, format: Option<&str>) -> bool {
    let Some(bp) = ctx.state.blueprint(&e.blueprint) else { return false };
    let mut values = bp.def.schema.properties.iter().filter_map(|(name, def)| {
        let same_type = def.get("type").and_then(Value::as_str) == Some(kind);
        let same_format = format.is_none_or(|f| def.get("format").and_then(Value::as_str) == Some(f));
        (same_type && same_format).then(|| e.properties.get(name))
    });
    match (&rule.op, &rule.operand) {
        (Op::Eq, Operand::Scalar(w)) => values.any(|v| eq(v, w)),
        (Op::Ne, Operand::Scalar(w)) => !values.any(|v| eq(v, w)),
        (Op::Contains, Operand::Scalar(w)) => values.any(|v| contains(v, w)),
        _ => false,
    }
}

fn contains(v: Option<&Value>, w: &Value) -> bool {
    match (v, w) {
        (Some(Value::String(s)), Value::String(w)) => s.contains(w.as_str()),
        (Some(Value::Array(items)), w) => items.iter().any(|i| scalar_eq(i, w)),
        _ => false,
    }
}

fn in_range(v: Option<&Value>, from: Timestamp, to: Timestamp) -> bool {
    v.and_then(Value::as_str).and_then(Timestamp::parse).is_some_and(|t| t >= from && t <= to)
}

/// A string meta-property as a borrowed string (`Some(None)` when it is null); `None` for the others.
fn meta_str(e: &Entity, m: Meta) -> Option<Option<&str>> {
    Some(match m {
        Meta::Identifier => Some(&*e.identifier),
        Meta::Blueprint => Some(&*e.blueprint),
        Meta::Title => e.title.as_deref(),
        Meta::Icon => e.icon.as_deref(),
        Meta::CreatedBy => Some(&*e.created_by),
        Meta::UpdatedBy => Some(&*e.updated_by),
        Meta::Datasource => e.datasource.as_deref(),
        Meta::Team | Meta::CreatedAt | Meta::UpdatedAt => return None,
    })
}

/// `=`, `!=`, `in`, `notIn` on a string meta-property without building a JSON value (the common `$blueprint`
/// and `$identifier` rules on every scanned entity). `None` when the rule is not of that kind.
fn meta_str_matches(e: &Entity, rule: &Rule) -> Option<bool> {
    let Target::Meta(m) = rule.target else { return None };
    let v = meta_str(e, m)?;
    let equal = |want: &Value| match (v, want) {
        (Some(s), Value::String(w)) => s == w,
        (None, Value::Null) => true,
        _ => false,
    };
    match (&rule.op, &rule.operand) {
        (Op::Eq, Operand::Scalar(w)) => Some(equal(w)),
        (Op::Ne, Operand::Scalar(w)) => Some(!equal(w)),
        (Op::In, Operand::List(l)) => Some(l.iter().any(equal)),
        (Op::NotIn, Operand::List(l)) => Some(!l.iter().any(equal)),
        _ => None,
    }
}

fn rule_matches(ctx: &Ctx<'_>, e: &Entity, rule: &Rule) -> bool {
    if let Some(hit) = meta_time_matches(ctx, e, rule) {
        return hit;
    }
    if let Some(hit) = meta_str_matches(e, rule) {
        return hit;
    }
    let owned;
    let v: Option<&Value> = match &rule.target {
        Target::Property(p) => match e.properties.get(p).or_else(|| ctx.own_aggregate(e, p)) {
            Some(v) => Some(v),
            None => match derived_value(ctx.state, e, p) {
                Some(v) => {
                    owned = v;
                    Some(&owned)
                }
                None => None,
            },
        },
        Target::Relation(r) => e.relations.get(r),
        Target::Meta(m) => {
            owned = meta_value(e, *m);
            Some(&owned)
        }
        Target::PropertySchema { kind, format } => return schema_rule_matches(ctx, e, rule, kind, format.as_deref()),
        Target::Scorecard { scorecard, rule } => {
            owned = scorecard_value(ctx, e, scorecard, rule.as_deref()).unwrap_or(Value::Null);
            Some(&owned)
        }
    };
    value_matches(ctx, rule, v)
}

/// Whether the value a rule reads (`None`: absent) passes the rule's operator and operand.
pub(crate) fn value_matches(ctx: &Ctx<'_>, rule: &Rule, v: Option<&Value>) -> bool {
    use std::cmp::Ordering::*;
    match (&rule.op, &rule.operand) {
        (Op::IsEmpty, _) => is_empty(v),
        (Op::IsNotEmpty, _) => !is_empty(v),
        (Op::Eq, Operand::Scalar(w)) => eq(v, w),
        (Op::Ne, Operand::Scalar(w)) => !eq(v, w),
        (Op::Gt, Operand::Bound(b)) => compare(v, b) == Some(Greater),
        (Op::Ge, Operand::Bound(b)) => matches!(compare(v, b), Some(Greater | Equal)),
        (Op::Lt, Operand::Bound(b)) => compare(v, b) == Some(Less),
        (Op::Le, Operand::Bound(b)) => matches!(compare(v, b), Some(Less | Equal)),
        (Op::In | Op::ContainsAny, Operand::List(l)) => in_list(v, l),
        (Op::NotIn, Operand::List(l)) => !in_list(v, l),
        (Op::Contains, Operand::Scalar(w)) => contains(v, w),
        (Op::DoesNotContain, Operand::Scalar(w)) => !contains(v, w),
        (Op::BeginsWith, Operand::Scalar(w)) => string_test(v, w, |s, w| s.starts_with(w)),
        (Op::DoesNotBeginWith, Operand::Scalar(w)) => !string_test(v, w, |s, w| s.starts_with(w)),
        (Op::EndsWith, Operand::Scalar(w)) => string_test(v, w, |s, w| s.ends_with(w)),
        (Op::DoesNotEndWith, Operand::Scalar(w)) => !string_test(v, w, |s, w| s.ends_with(w)),
        (Op::Between, Operand::Range { from, to }) => in_range(v, *from, *to),
        (Op::NotBetween, Operand::Range { from, to }) => !in_range(v, *from, *to),
        (Op::Between, Operand::Preset { slot, .. }) => ctx.range(*slot).is_some_and(|(f, t)| in_range(v, f, t)),
        (Op::NotBetween, Operand::Preset { slot, .. }) => !ctx.range(*slot).is_some_and(|(f, t)| in_range(v, f, t)),
        (Op::IsExpired, _) => v.and_then(Value::as_str).and_then(Timestamp::parse).is_some_and(|t| t < ctx.now),
        (Op::IsNotExpired, _) => v.and_then(Value::as_str).and_then(Timestamp::parse).is_some_and(|t| t >= ctx.now),
        // The parser pairs every operator with its operand kind; any other pairing cannot be built.
        _ => false,
    }
}

/// An entity's level on a scorecard of its blueprint (with `rule`: its status on that rule, `SUCCESS` or
/// `FAILURE`), judged now; `None` when the scorecard does not exist or its filter leaves the entity out.
pub fn scorecard_value(ctx: &Ctx<'_>, e: &Entity, scorecard: &str, rule: Option<&str>) -> Option<Value> {
    let cards = ctx.cards(&e.blueprint);
    let card = cards.iter().find(|c| c.card.identifier == scorecard)?;
    let passed = card.judge(e)?;
    match rule {
        Some(r) => {
            let at = card.card.rules.iter().position(|x| x.identifier == r)?;
            Some(Value::String(if passed[at] { "SUCCESS" } else { "FAILURE" }.into()))
        }
        None => Some(Value::String(card.card.level_of(|i| passed.get(i).copied().unwrap_or(false)).to_string())),
    }
}

/// A scorecard (any: the current definition judging a past catalog) prepared to judge entities of `state`.
pub struct Judging<'a>(Card<'a>);

impl<'a> Judging<'a> {
    /// `None` when the scorecard's queries do not fit the state (its blueprint was different then).
    pub fn new(state: &'a State, now: Timestamp, card: berth_model::scorecard::Scorecard) -> Option<Judging<'a>> {
        Card::prepare(state, now, card).map(Judging)
    }

    /// The entity's level, `None` when the scorecard's filter leaves it out.
    pub fn level(&self, e: &Entity) -> Option<&str> {
        let passed = self.0.judge(e)?;
        Some(self.0.card.level_of(|i| passed.get(i).copied().unwrap_or(false)))
    }
}

/// An entity's scorecards in Port's shape, `{<scorecard>: {level, rules: [{identifier, status, level}]}}`,
/// judged now; `None` when its blueprint has no scorecard that applies to it.
pub fn scorecard_results(ctx: &Ctx<'_>, e: &Entity) -> Option<Value> {
    let cards = ctx.cards(&e.blueprint);
    let mut out = serde_json::Map::new();
    for c in cards.iter() {
        let Some(passed) = c.judge(e) else { continue };
        let rules: Vec<Value> = c
            .card
            .rules
            .iter()
            .zip(&passed)
            .map(|(r, ok)| {
                serde_json::json!({"identifier": r.identifier, "status": if *ok { "SUCCESS" } else { "FAILURE" },
                    "level": r.level})
            })
            .collect();
        let level = c.card.level_of(|i| passed.get(i).copied().unwrap_or(false));
        out.insert(c.card.identifier.clone(), serde_json::json!({"level": level, "rules": rules}));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Candidates come out in string order, each once, whatever their prefixes share (long common
        /// prefixes, strings that are prefixes of others, NUL bytes).
        #[test]
        fn candidates_come_out_sorted_and_distinct(ids in proptest::collection::vec("(service-[0-9]{0,3}|a|ab\0?|[a-c\0]{0,20})", 0..300)) {
            let set: IdSet = ids.iter().map(String::as_str).collect();
            let got: Vec<String> = set.into_sorted().map(|s| s.to_string()).collect();
            let mut want = ids.clone();
            want.sort();
            want.dedup();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
