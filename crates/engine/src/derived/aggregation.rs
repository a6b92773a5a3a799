//! Aggregation properties: count / sum / average / min / max / median over the entities related to an owner.
//!
//! An aggregation's **path** goes from the owner to the target blueprint, one relation a step, each step
//! followed forwards (`Out`: the entity's own relation) or backwards (`In`: entities whose relation points
//! here, read from the reverse-relation index). Values are kept in the state per owner and recomputed from
//! the owner's sources when a write can change them: a write to an entity at position `p` of the path reaches
//! its owners by walking the path back from it (its old and its new version), which is what
//! [`owners_of`] does. The query may use the target entity's own fields only, so nothing else feeds it.
//!
//! Each owner also keeps what its values are computed from ([`Acc`]: how many sources count, their numbers
//! and measured times, sorted), so a write of a target at the end of the path takes its old version out and
//! puts its new one in ([`Agg::account`]) instead of reading every source again. Numbers are summed in
//! sorted order, from scratch as in place, so both give the same value to the last bit.

use std::collections::HashSet;
use std::sync::Arc;

use berth_model::query::{Operand, Query, Rule, Target};
use berth_model::{Blueprint, Entity, Timestamp};
use serde_json::{Value, json};

use super::Sees;
use crate::State;
use crate::aggregate::{Func, Per};

/// One step of an aggregation's path, from the owner towards the target.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Follow the current entity's relation.
    Out(String),
    /// Go to the entities of `blueprint` whose `relation` points at the current entity.
    In { blueprint: String, relation: String },
}

#[derive(Debug)]
pub struct Agg {
    pub name: String,
    pub target: String,
    pub func: Func,
    /// The number property of the target read by sum / min / max / median / average by property.
    pub property: Option<String>,
    pub per: Per,
    /// `$createdAt`, `$updatedAt` or a date-time property of the target (for averages per unit of time).
    pub measure: Option<String>,
    pub query: Option<Query>,
    pub steps: Vec<Step>,
    /// The blueprints along the path: the owner first, the target last.
    pub path_blueprints: Vec<String>,
    /// Per step: whether walking it back from its far end leads to one entity at most (a backwards step
    /// through a relation that holds one entity).
    single_back: Vec<bool>,
    /// Why the aggregation computes null, when it does.
    pub error: Option<String>,
}

impl Agg {
    /// Compiles `def` of blueprint `owner` (see Port's `aggregationProperties`).
    pub fn compile<'a>(
        name: &str,
        def: &Value,
        owner: &Blueprint,
        lookup: &dyn Fn(&str) -> Option<&'a Blueprint>,
    ) -> Agg {
        let mut agg = Agg {
            name: name.to_string(),
            target: def.get("target").and_then(Value::as_str).unwrap_or_default().to_string(),
            func: Func::Count,
            property: None,
            per: Per::Total,
            measure: None,
            query: None,
            steps: Vec::new(),
            path_blueprints: Vec::new(),
            single_back: Vec::new(),
            error: None,
        };
        if let Err(e) = agg.fill(def, owner, lookup) {
            agg.error = Some(e);
        }
        agg
    }

    fn fill<'a>(
        &mut self,
        def: &Value,
        owner: &Blueprint,
        lookup: &dyn Fn(&str) -> Option<&'a Blueprint>,
    ) -> Result<(), String> {
        let target =
            lookup(&self.target).ok_or_else(|| format!("the target blueprint `{}` does not exist", self.target))?;
        let spec = def.get("calculationSpec").ok_or("`calculationSpec` is required")?;
        let func = spec.get("func").and_then(Value::as_str).unwrap_or_default();
        self.func = match func {
            "count" => Func::Count,
            "sum" => Func::Sum,
            "average" => Func::Average,
            "min" => Func::Min,
            "max" => Func::Max,
            "median" => Func::Median,
            other => {
                return Err(format!(
                    "`calculationSpec.func` must be count, sum, average, min, max or median, got {other:?}"
                ));
            }
        };
        let by = spec.get("calculationBy").and_then(Value::as_str).unwrap_or("entities");
        match (by, spec.get("property").and_then(Value::as_str)) {
            ("entities", _) if matches!(self.func, Func::Count | Func::Average) => {}
            ("entities", _) => return Err(format!("`{func}` needs `calculationBy: property` and `property`")),
            ("property", Some(p)) => {
                let ty = target.schema.properties.get(p).and_then(|d| d.get("type")).and_then(Value::as_str);
                if ty != Some("number") {
                    return Err(format!("`{p}` is not a number property of blueprint `{}`", self.target));
                }
                self.property = Some(p.to_string());
            }
            ("property", None) => {
                return Err("`calculationSpec.property` is required with `calculationBy: property`".into());
            }
            (other, _) => return Err(format!("`calculationBy` must be `entities` or `property`, got {other:?}")),
        }
        if self.func == Func::Count && self.property.is_some() {
            return Err("`count` counts entities: use `calculationBy: entities`".into());
        }
        if let Some(per) = spec.get("averageOf") {
            if self.func != Func::Average {
                return Err("`averageOf` applies to `average` only".into());
            }
            self.per =
                per.as_str().and_then(Per::parse).ok_or("`averageOf` must be hour, day, week, month or total")?;
        }
        if let Some(m) = spec.get("measureTimeBy") {
            let m = m.as_str().ok_or("`measureTimeBy` must be a string")?;
            let is_date = |p: &str| {
                target.schema.properties.get(p).and_then(|d| d.get("format")).and_then(Value::as_str)
                    == Some("date-time")
            };
            if !(m == "$createdAt" || m == "$updatedAt" || is_date(m)) {
                return Err(format!(
                    "`measureTimeBy` must be $createdAt, $updatedAt or a date-time property, got {m:?}"
                ));
            }
            self.measure = Some(m.to_string());
        }
        if let Some(q) = def.get("query").filter(|q| !q.is_null()) {
            let query = Query::parse(q).map_err(|e| format!("`query`: {e}"))?;
            check_query(&query, target)?;
            self.query = Some(query);
        }
        self.steps = path(def, owner, target, lookup)?;
        self.path_blueprints = walk_blueprints(owner, &self.steps, lookup);
        self.single_back = self
            .steps
            .iter()
            .map(|step| match step {
                Step::In { blueprint, relation } => {
                    let at = if *blueprint == owner.identifier { Some(owner) } else { lookup(blueprint) };
                    at.and_then(|b| b.relations.get(relation)).is_some_and(|r| !r.many)
                }
                Step::Out(_) => false,
            })
            .collect();
        if self.path_blueprints.last() != Some(&self.target) {
            return Err(format!("the path does not lead from `{}` to `{}`", owner.identifier, self.target));
        }
        Ok(())
    }

    /// Computes the value for owner `e` from its sources as `reader` sees them.
    pub fn compute(&self, state: &State, e: &Entity, reader: &dyn Sees) -> Value {
        if self.error.is_some() {
            return Value::Null;
        }
        self.compute_over(state, &sources(&Finder::new(state), e, &self.steps, reader))
    }

    /// Computes the value from the owner's `sources` (what its path reaches).
    pub(crate) fn compute_over(&self, state: &State, sources: &[&Arc<Entity>]) -> Value {
        match self.accumulate(state, sources) {
            Some(acc) => self.value_of(&acc),
            None => Value::Null,
        }
    }

    /// What the value is computed from, gathered from the owner's `sources` (`None`: the aggregation
    /// computes null).
    pub(crate) fn accumulate(&self, state: &State, sources: &[&Arc<Entity>]) -> Option<Acc> {
        if self.error.is_some() {
            return None;
        }
        let ctx = match &self.query {
            Some(q) => {
                Some((q, crate::search::Ctx::new(state, q, Timestamp::from_millis(0), Some(&self.target)).ok()?))
            }
            None => None,
        };
        let mut acc = Acc::default();
        for source in sources {
            if let Some((q, ctx)) = &ctx {
                if !crate::search::matches(ctx, source, q) {
                    continue;
                }
            }
            acc.count += 1;
            if let Some(n) = self.number_of(source) {
                acc.numbers.push(n);
            }
            if let Some(t) = self.time_of(source) {
                acc.times.push(t);
            }
        }
        acc.numbers.sort_by(f64::total_cmp);
        acc.times.sort_unstable();
        Some(acc)
    }

    /// Puts a counted source into `acc`, or (`remove`) takes it out.
    pub(crate) fn account(&self, acc: &mut Acc, source: &Entity, remove: bool) {
        acc.count = if remove { acc.count.saturating_sub(1) } else { acc.count + 1 };
        if let Some(n) = self.number_of(source) {
            sorted_edit(&mut acc.numbers, n, remove, f64::total_cmp);
        }
        if let Some(t) = self.time_of(source) {
            sorted_edit(&mut acc.times, t, remove, Ord::cmp);
        }
    }

    /// The value computed from what was gathered.
    pub(crate) fn value_of(&self, acc: &Acc) -> Value {
        if self.error.is_some() {
            return Value::Null;
        }
        let span = acc.times.first().zip(acc.times.last()).map(|(a, b)| (*a, *b));
        reduce(self.func, self.property.is_some(), self.per, acc.count, &acc.numbers, span)
    }

    /// The number a source adds, when the function reads one and the source has a finite one.
    fn number_of(&self, source: &Entity) -> Option<f64> {
        let p = self.property.as_ref()?;
        source.properties.get(p).and_then(Value::as_f64).filter(|n| n.is_finite())
    }

    /// The measured time a source adds, when the function is an average per unit of time.
    fn time_of(&self, source: &Entity) -> Option<i64> {
        if self.func != Func::Average || self.per == Per::Total {
            return None;
        }
        measured(source, self.measure.as_deref()).map(Timestamp::millis)
    }
}

/// What an owner's aggregation value is computed from: how many sources count, and their numbers and
/// measured times (each only when the function reads them), sorted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Acc {
    count: usize,
    numbers: Vec<f64>,
    times: Vec<i64>,
}

/// Inserts `x` into the sorted `v`, or (`remove`) takes one equal to it out.
fn sorted_edit<T: Copy>(v: &mut Vec<T>, x: T, remove: bool, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) {
    match (v.binary_search_by(|y| cmp(y, &x)), remove) {
        (Ok(i), true) => {
            v.remove(i);
        }
        (Err(_), true) => {}
        (Ok(i) | Err(i), false) => v.insert(i, x),
    }
}

/// An owner's aggregation values, in the order of its blueprint's spec, and what each is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub values: Vec<Value>,
    /// `None` for an aggregation that computes null.
    pub(crate) accs: Vec<Option<Acc>>,
}

/// A query an aggregation can keep current: the target's own fields only (no relation paths, date presets,
/// scorecards or derived properties, whose inputs are other entities or the clock).
fn check_query(q: &Query, target: &Blueprint) -> Result<(), String> {
    let mut problem = None;
    q.visit(&mut |node| match node {
        Query::Graph(_) => problem = Some("`query` may not follow relation paths".to_string()),
        Query::Rule(Rule { operand: Operand::Preset { .. }, .. }) => {
            problem = Some("`query` may not use a date preset (the value would change with the clock)".to_string())
        }
        Query::Rule(Rule { target: Target::Scorecard { .. }, .. }) => {
            problem = Some("`query` may not use scorecards".to_string())
        }
        Query::Rule(Rule { target: Target::Property(p), .. }) if !target.schema.properties.contains_key(p) => {
            problem = Some(format!("`query` names `{p}`, which is not a stored property of `{}`", target.identifier))
        }
        _ => {}
    });
    problem.map_or(Ok(()), Err)
}

/// The steps from the owner to the target: `pathFilter` (`[{path, fromBlueprint}]`, at most one) when
/// given, else the one relation between the two blueprints.
fn path<'a>(
    def: &Value,
    owner: &Blueprint,
    target: &'a Blueprint,
    lookup: &dyn Fn(&str) -> Option<&'a Blueprint>,
) -> Result<Vec<Step>, String> {
    let filters = def.get("pathFilter").and_then(Value::as_array).filter(|a| !a.is_empty());
    let Some(filters) = filters else {
        let back: Vec<&String> =
            target.relations.iter().filter(|(_, r)| r.target == owner.identifier).map(|(k, _)| k).collect();
        let forth: Vec<&String> =
            owner.relations.iter().filter(|(_, r)| r.target == target.identifier).map(|(k, _)| k).collect();
        return match (back.as_slice(), forth.as_slice()) {
            ([one], _) => Ok(vec![Step::In { blueprint: target.identifier.clone(), relation: (*one).clone() }]),
            ([], [one]) => Ok(vec![Step::Out((*one).clone())]),
            ([], []) => Err(format!(
                "no relation joins `{}` and `{}`: name the way with `pathFilter`",
                owner.identifier, target.identifier
            )),
            _ => Err(format!(
                "several relations join `{}` and `{}`: name one with `pathFilter`",
                owner.identifier, target.identifier
            )),
        };
    };
    if filters.len() > 1 {
        return Err("`pathFilter` takes one path".into());
    }
    let relations: Vec<String> = filters[0]
        .get("path")
        .and_then(Value::as_array)
        .map(|p| p.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if relations.is_empty() || relations.len() > 8 {
        return Err("`pathFilter[0].path` must name 1 to 8 relations".into());
    }
    let from = filters[0].get("fromBlueprint").and_then(Value::as_str).unwrap_or(&target.identifier);
    // Walk the relations from `from`, checking each exists.
    let mut at: &Blueprint = if from == owner.identifier {
        owner
    } else if from == target.identifier {
        target
    } else {
        return Err(format!("`fromBlueprint` must be `{}` or `{}`", owner.identifier, target.identifier));
    };
    let mut along = vec![at.identifier.clone()];
    for rel in &relations {
        let r = at.relations.get(rel).ok_or_else(|| format!("`{rel}` is not a relation of `{}`", at.identifier))?;
        at = if r.target == owner.identifier {
            owner
        } else {
            lookup(&r.target).ok_or_else(|| format!("blueprint `{}` does not exist", r.target))?
        };
        along.push(at.identifier.clone());
    }
    if from == owner.identifier {
        Ok(relations.into_iter().map(Step::Out).collect())
    } else {
        // From the target to the owner: reversed, each step backwards.
        if along.last() != Some(&owner.identifier) {
            return Err(format!(
                "`pathFilter` leads from `{from}` to `{}`, not to `{}`",
                at.identifier, owner.identifier
            ));
        }
        Ok(relations
            .iter()
            .enumerate()
            .rev()
            .map(|(i, rel)| Step::In { blueprint: along[i].clone(), relation: rel.clone() })
            .collect())
    }
}

/// The blueprints a path passes through, the owner first.
fn walk_blueprints<'a>(
    owner: &Blueprint,
    steps: &[Step],
    lookup: &dyn Fn(&str) -> Option<&'a Blueprint>,
) -> Vec<String> {
    let mut out = vec![owner.identifier.clone()];
    for step in steps {
        let next = match step {
            Step::Out(rel) => {
                let at = out.last().and_then(|b| if *b == owner.identifier { Some(owner) } else { lookup(b) });
                match at.and_then(|b| b.relations.get(rel)) {
                    Some(r) => r.target.clone(),
                    None => return out,
                }
            }
            Step::In { blueprint, .. } => blueprint.clone(),
        };
        out.push(next);
    }
    out
}

/// Finds entities by blueprint and identifier: in the state, or (for a recompute of every owner) in hash
/// tables of the blueprints the paths pass through, which a million lookups read in a fraction of the time
/// the state's ordered maps take (each of those compares the identifier with a score of others).
///
/// A finder that remembers (one refresh of derived data after a write) also keeps the first
/// [`MAX_REMEMBERED`] sets of sources it read: a new service's deployments are read once, for its domain's
/// count and for its own aggregations; a recompute walking thousands of services reads past it.
pub(crate) struct Finder<'s> {
    state: &'s State,
    tables: std::collections::HashMap<String, std::collections::HashMap<&'s str, &'s Arc<Entity>>>,
    remembered: Option<std::sync::Mutex<Remembered<'s>>>,
    /// Entities (blueprint, identifier) known to have no sources: entities just created that nothing points
    /// at (a new service has no deployments yet), whose sources are not looked for.
    sourceless: &'s [(Arc<str>, Arc<str>)],
}

/// Sources read by a remembering [`Finder`], by (target blueprint, target, source blueprint, relation)
/// written as one key ([`remembered_key`]); a few, found by a scan.
type Remembered<'s> = Vec<(String, Arc<[&'s Arc<str>]>)>;

/// The key of a set of sources in [`Remembered`]: each part after its length, so no two differ only in
/// where one part ends.
fn remembered_key(parts: [&str; 4]) -> String {
    use std::fmt::Write;
    let mut key = String::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for part in parts {
        let _ = write!(key, "{}:", part.len());
        key.push_str(part);
    }
    key
}

/// The most sets of sources a remembering [`Finder`] keeps (a write's own entities need a few).
const MAX_REMEMBERED: usize = 64;

impl<'s> Finder<'s> {
    /// Finds entities in the state's maps.
    pub(crate) fn new(state: &'s State) -> Finder<'s> {
        Finder { state, tables: std::collections::HashMap::new(), remembered: None, sourceless: &[] }
    }

    /// Finds entities in the state's maps, and remembers the sources it reads (for one refresh: the state
    /// must not change while it lives, which its borrow ensures). The `sourceless` entities have none.
    pub(crate) fn remembering(state: &'s State, sourceless: &'s [(Arc<str>, Arc<str>)]) -> Finder<'s> {
        Finder { remembered: Some(std::sync::Mutex::default()), sourceless, ..Finder::new(state) }
    }

    /// Calls `f` with the identifier of each `source` entity whose `relation` points at `id` (of
    /// `blueprint`), in identifier order (see [`State::sources`]).
    pub(crate) fn each_source(
        &self,
        blueprint: &str,
        id: &str,
        source: &str,
        relation: &str,
        mut f: impl FnMut(&'s Arc<str>),
    ) {
        if self.sourceless.iter().any(|(b, i)| **b == *blueprint && **i == *id) {
            return;
        }
        // A poisoned memory (a panic while it was held) is read around, not trusted; a full one is passed.
        let held = self.remembered.as_ref().and_then(|m| m.lock().ok());
        let Some(mut remembered) = held.filter(|r| r.len() < MAX_REMEMBERED) else {
            self.state.sources(blueprint, id, source, relation, None).for_each(f);
            return;
        };
        let key = remembered_key([blueprint, id, source, relation]);
        let found = match remembered.iter().find(|(k, _)| *k == key) {
            Some((_, found)) => Arc::clone(found),
            None => {
                let found: Arc<[&'s Arc<str>]> = self.state.sources(blueprint, id, source, relation, None).collect();
                remembered.push((key, Arc::clone(&found)));
                found
            }
        };
        drop(remembered);
        found.iter().copied().for_each(&mut f);
    }

    /// Finds the entities of `blueprints` in tables built now (once per recompute of every owner).
    pub(crate) fn with_tables<'b>(state: &'s State, blueprints: impl IntoIterator<Item = &'b str>) -> Finder<'s> {
        let mut tables = std::collections::HashMap::new();
        for bp in blueprints {
            if tables.contains_key(bp) {
                continue;
            }
            let mut table = std::collections::HashMap::with_capacity(state.entity_count(bp));
            table.extend(state.entities_of(bp).map(|e| (&*e.identifier, e)));
            crate::work_count::add(table.len());
            tables.insert(bp.to_string(), table);
        }
        Finder { state, tables, remembered: None, sourceless: &[] }
    }

    fn entity(&self, blueprint: &str, id: &str) -> Option<&'s Arc<Entity>> {
        match self.tables.get(blueprint) {
            Some(table) => table.get(id).copied(),
            None => self.state.entity(blueprint, id),
        }
    }
}

/// The target entities an owner's path reaches, each once, as `reader` sees them (an entity it may not read
/// is not passed through either).
pub(crate) fn sources<'s>(
    finder: &Finder<'s>,
    owner: &Entity,
    steps: &[Step],
    reader: &dyn Sees,
) -> Vec<&'s Arc<Entity>> {
    let state = finder.state;
    let Some(start) = state.entity(&owner.blueprint, &owner.identifier) else { return Vec::new() };
    let mut frontier: Vec<&'s Arc<Entity>> = vec![start];
    for step in steps {
        // One entity's sources through one relation are distinct already, and so is a source whose relation
        // holds one identifier (it leads back to one frontier entity): no set needed for those. A relation
        // declared single may still hold an array written while it was `many`: checked per source.
        let single = frontier.len() == 1 && matches!(step, Step::In { .. });
        let holds_one = |s: &Entity, relation: &str| matches!(s.relations.get(relation), Some(Value::String(_)));
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let mut next = Vec::new();
        for e in &frontier {
            match step {
                Step::Out(rel) => {
                    let Some(r) = state.blueprint(&e.blueprint).and_then(|b| b.def.relations.get(rel)) else {
                        continue;
                    };
                    for id in e.relations.get(rel).map(Entity::relation_targets).unwrap_or_default() {
                        if let Some(t) = finder.entity(&r.target, id) {
                            if seen.insert((&t.blueprint, &t.identifier)) && reader.can_read(t) {
                                next.push(t);
                            }
                        }
                    }
                }
                Step::In { blueprint, relation } => {
                    finder.each_source(&e.blueprint, &e.identifier, blueprint, relation, |id| {
                        if let Some(s) = finder.entity(blueprint, id) {
                            let distinct = single || holds_one(s, relation);
                            if (distinct || seen.insert((&s.blueprint, &s.identifier))) && reader.can_read(s) {
                                next.push(s);
                            }
                        }
                    });
                }
            }
        }
        frontier = next;
    }
    frontier
}

impl Agg {
    /// Whether a write of a target entity (at `position`) changes this aggregation in place rather than by a
    /// recompute: written at the end of a path that passes through the target's blueprint once (so each
    /// owner counts the entity at most once, and nothing else on the path changed with it).
    pub(crate) fn keeps_by_delta(&self, position: usize) -> bool {
        self.error.is_none()
            && position + 1 == self.path_blueprints.len()
            && self.path_blueprints.iter().filter(|b| **b == self.target).count() == 1
    }

    /// Whether a write of an entity at `position` (before the target) leaves this aggregation's sources as
    /// they were: it existed before and after, and the relations of its own that the path follows from it
    /// are the same (nothing else of an owner or an intermediate entity is read).
    pub(crate) fn passes_through_unchanged(&self, position: usize, old: Option<&Entity>, new: Option<&Entity>) -> bool {
        let (Some(old), Some(new)) = (old, new) else { return false };
        if position + 1 >= self.path_blueprints.len() {
            return false;
        }
        let mut own: Vec<&str> = Vec::new();
        if let Some(Step::Out(rel)) = self.steps.get(position) {
            own.push(rel);
        }
        if let Some(Step::In { relation, .. }) = position.checked_sub(1).and_then(|p| self.steps.get(p)) {
            own.push(relation);
        }
        own.iter().all(|r| old.relations.get(r) == new.relations.get(r))
    }

    /// Whether a write of an entity at `position` between the owner and the target changes this
    /// aggregation by a delta rather than by recomputing its owners: every step from there to the target
    /// goes backwards through a relation that holds one entity, and no blueprint is on the path twice. Then
    /// each target reached forward from the entity leads back to it alone, so those targets are its share
    /// of each owner it reaches, and they are the same for its old and new version (they are read from the
    /// relations pointing at it), as long as nothing else on the path was written with it.
    pub(crate) fn changes_through(&self, position: usize) -> bool {
        let backwards = self.steps.get(position..).is_some_and(|s| s.iter().all(|s| matches!(s, Step::In { .. })));
        let single = self.single_back.get(position..).is_some_and(|s| s.iter().all(|single| *single));
        self.error.is_none()
            && position > 0
            && position + 1 < self.path_blueprints.len()
            && backwards
            && single
            && self.path_blueprints.iter().enumerate().all(|(i, b)| !self.path_blueprints[..i].contains(b))
    }

    /// The targets reached forward from an entity at `position` (it may no longer exist: the entities whose
    /// relations point at it are read), counted or not.
    pub(crate) fn targets_from<'s>(&self, finder: &Finder<'s>, position: usize, e: &Entity) -> Vec<&'s Arc<Entity>> {
        let state = finder.state;
        let mut frontier: Vec<&'s Arc<Entity>> = Vec::new();
        for (i, step) in self.steps.iter().enumerate().skip(position) {
            let Step::In { blueprint, relation } = step else { return Vec::new() };
            let mut next = Vec::new();
            if i == position {
                finder.each_source(&e.blueprint, &e.identifier, blueprint, relation, |id| {
                    next.extend(state.entity(blueprint, id));
                });
            } else {
                for x in &frontier {
                    finder.each_source(&x.blueprint, &x.identifier, blueprint, relation, |id| {
                        next.extend(state.entity(blueprint, id));
                    });
                }
            }
            frontier = next;
        }
        frontier
    }

    /// What the first step of [`owners_of`] reads of an entity at `position`: its own relation, when the
    /// step follows it back (two versions with the same value reach the same owners); `None` when it reads
    /// only the identifier.
    pub(crate) fn first_step_back<'e>(&self, position: usize, e: &'e Entity) -> Option<&'e Value> {
        static NULL: Value = Value::Null;
        match position.checked_sub(1).and_then(|p| self.steps.get(p)) {
            Some(Step::In { relation, .. }) => Some(e.relations.get(relation).unwrap_or(&NULL)),
            _ => None,
        }
    }

    /// What a target entity adds to an owner's aggregation: nothing when it is not counted, else its
    /// number and measured time (when the function reads them).
    pub(crate) fn part_of(&self, state: &State, e: &Entity) -> Option<(Option<u64>, Option<i64>)> {
        self.counts(state, e).then(|| (self.number_of(e).map(f64::to_bits), self.time_of(e)))
    }

    /// Whether a target entity is counted: it matches the query (which reads only its own fields).
    pub(crate) fn counts(&self, state: &State, e: &Entity) -> bool {
        match &self.query {
            None => true,
            Some(q) => crate::search::Ctx::new(state, q, Timestamp::from_millis(0), Some(&self.target))
                .is_ok_and(|ctx| crate::search::matches(&ctx, e, q)),
        }
    }
}

/// Every aggregation of an owner, computed with each distinct path walked once (a blueprint's aggregations
/// usually share one).
pub(crate) fn compute_all(finder: &Finder<'_>, owner: &Entity, aggs: &[Agg]) -> Kept {
    let state = finder.state;
    let mut walked: Vec<(&[Step], Vec<&Arc<Entity>>)> = Vec::new();
    let accs: Vec<Option<Acc>> = aggs
        .iter()
        .map(|a| {
            if a.error.is_some() {
                return None;
            }
            let at = match walked.iter().position(|(steps, _)| *steps == a.steps.as_slice()) {
                Some(i) => i,
                None => {
                    walked.push((&a.steps, sources(finder, owner, &a.steps, &super::Everything)));
                    walked.len() - 1
                }
            };
            a.accumulate(state, &walked[at].1)
        })
        .collect();
    let values =
        aggs.iter().zip(&accs).map(|(a, acc)| acc.as_ref().map_or(Value::Null, |acc| a.value_of(acc))).collect();
    Kept { values, accs }
}

/// The owners whose value of `agg` an entity at `position` of its path can change: the path walked back
/// from `e` (pass the old version and the new one of a written entity). The frontier borrows the state's
/// strings; a few entities are kept distinct in a vector, more in a set.
pub(crate) fn owners_of<'a>(state: &'a State, agg: &Agg, position: usize, e: &'a Entity) -> Vec<&'a str> {
    if position == 0 {
        return vec![&e.identifier];
    }
    // While the way back is one entity through single relations (the usual chain: a deployment's service,
    // its system, its domain), it is followed without collecting anything.
    let mut single: Option<&'a str> = Some(&e.identifier);
    let mut frontier: Vec<&str> = Vec::new();
    for p in (1..=position).rev() {
        let (here, before) = (&agg.path_blueprints[p], &agg.path_blueprints[p - 1]);
        if let (Some(id), Step::In { relation, .. }) = (single, &agg.steps[p - 1]) {
            let current = if p == position { Some(e) } else { state.entity_linked_or_found(here, id).map(|x| &**x) };
            match current.and_then(|x| x.relations.get(relation)) {
                Some(Value::String(t)) => {
                    single = Some(t);
                    continue;
                }
                Some(Value::Array(_)) => {}
                // No entity there, or its relation leads nowhere.
                _ => return Vec::new(),
            }
        }
        if let Some(id) = single.take() {
            frontier = vec![id];
        }
        let mut next = Distinct::default();
        for id in &frontier {
            match &agg.steps[p - 1] {
                Step::Out(rel) => {
                    for s in state.sources(here, id, before, rel, None) {
                        next.push(s);
                    }
                }
                Step::In { relation, .. } => {
                    // The entity's own relation: the version given for the first step back, else the state's.
                    let current = if p == position && **id == *e.identifier {
                        Some(e)
                    } else {
                        state.entity_linked_or_found(here, id).map(|x| &**x)
                    };
                    let Some(x) = current else { continue };
                    // The target (single) or targets (many), read in place.
                    let target = x.relations.get(relation);
                    let many = target.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
                    for t in target.and_then(Value::as_str).into_iter().chain(many) {
                        next.push(t);
                    }
                }
            }
        }
        frontier = next.items;
    }
    match single {
        Some(id) => vec![id],
        None => frontier,
    }
}

/// Distinct strings in the order first pushed: a scan while few, a set beyond.
#[derive(Default)]
struct Distinct<'a> {
    items: Vec<&'a str>,
    set: Option<HashSet<&'a str>>,
}

impl<'a> Distinct<'a> {
    fn push(&mut self, s: &'a str) {
        const SCAN: usize = 16;
        let fresh = match &mut self.set {
            Some(set) => set.insert(s),
            None if self.items.len() < SCAN => !self.items.contains(&s),
            None => {
                let mut set: HashSet<&'a str> = self.items.iter().copied().collect();
                let fresh = set.insert(s);
                self.set = Some(set);
                fresh
            }
        };
        if fresh {
            self.items.push(s);
        }
    }
}

/// The value of aggregation `agg` (the `index`th of its blueprint) for owner `e` as `reader` sees it: the
/// value kept in the state when the reader sees every entity it is computed from, else computed from what
/// the reader sees.
pub fn value(state: &State, e: &Entity, agg: &Agg, index: usize, reader: &dyn Sees) -> Value {
    if agg.error.is_some() {
        return Value::Null;
    }
    let sees_all = agg.path_blueprints.iter().skip(1).all(|b| reader.reads_all(b));
    if sees_all {
        if let Some(v) = state.aggregate_values(&e.blueprint, &e.identifier).and_then(|vs| vs.get(index)) {
            return v.clone();
        }
    }
    agg.compute(state, e, reader)
}

fn measured(e: &Entity, measure: Option<&str>) -> Option<Timestamp> {
    match measure.unwrap_or("$createdAt") {
        "$createdAt" => Some(e.created_at),
        "$updatedAt" => Some(e.updated_at),
        p => e.properties.get(p).and_then(Value::as_str).and_then(Timestamp::parse),
    }
}

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 { json!(n as i64) } else { json!(n) }
}

/// The aggregate of `count` entities and their `numbers` (sorted, and summed in that order). An average per unit of time divides by the number
/// of units the measured times span (at least one): from the earliest to the latest source, so the value is
/// a function of the catalog, the same on every replica and in every replay (not of the clock).
fn reduce(func: Func, by_property: bool, per: Per, count: usize, numbers: &[f64], span: Option<(i64, i64)>) -> Value {
    let units = || -> f64 {
        let unit = match per {
            Per::Hour => 3_600_000.0,
            Per::Day => 86_400_000.0,
            Per::Week => 7.0 * 86_400_000.0,
            Per::Month => 30.0 * 86_400_000.0,
            Per::Total => return 1.0,
        };
        span.map_or(1.0, |(a, b)| (((b - a) as f64) / unit).ceil().max(1.0))
    };
    let sum: f64 = numbers.iter().sum();
    match func {
        Func::Count => json!(count),
        Func::Sum => number(sum),
        Func::Average if !by_property => {
            if count == 0 {
                json!(0)
            } else {
                number(count as f64 / units())
            }
        }
        Func::Average if numbers.is_empty() => Value::Null,
        Func::Average if per == Per::Total => number(sum / numbers.len() as f64),
        Func::Average => number(sum / units()),
        Func::Min => numbers.first().copied().map_or(Value::Null, number),
        Func::Max => numbers.last().copied().map_or(Value::Null, number),
        Func::Median if numbers.is_empty() => Value::Null,
        Func::Median => {
            let mid = numbers.len() / 2;
            let m =
                if numbers.len().is_multiple_of(2) { (numbers[mid - 1] + numbers[mid]) / 2.0 } else { numbers[mid] };
            number(m)
        }
        Func::CountValues => Value::Null,
    }
}
