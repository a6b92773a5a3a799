//! An index of scorecard level *ceilings*, so a search by level reads candidates instead of judging every
//! entity of the blueprint.
//!
//! A rule is **local** when its result depends only on the entity itself and the state's aggregation
//! values (its stored properties, meta-properties, relations, aggregation properties), which are exactly
//! what an event refreshes in place: the entity's own write, or its aggregations being recomputed. Mirror
//! and calculation properties, relation-path rules, scorecard rules and the clock (date presets, timers)
//! are not local: a write elsewhere (a team 100,000 services mirror) would change them, and keeping an
//! index of those current would cost every such write what the derived data design avoids.
//!
//! So the index keeps, per entity and scorecard, the highest level whose *local* rules (and those of every
//! level below) all pass: an upper bound of the entity's level. A search for level `L` (or any of a list)
//! takes as candidates the entities whose ceiling is `L` (or at least `L`, when the level above `L` has a
//! rule that is not local: an entity may pass every local rule above and still fail that one) and judges
//! only them. A scorecard whose
//! filter is not local is not indexed (searches judge every entity, as before).
//!
//! Each ceiling is kept with the results of the rules judged to reach it ([`Mark`]): an entity whose
//! aggregation values alone changed (a deployment of a service written) has only the rules that read them
//! judged again ([`Rejudge::Aggregates`]).
//!
//! A rule that reads nothing but mirrors through one single relation (`team.oncall`,
//! `system.domain.owner`) is **read through** that relation: its result is a function of the entity the
//! relation leads to. The ceiling judges it on an entity whose relation leads nowhere (no value, or an
//! entity that does not exist: the mirrors are null, a function of the entity itself), and takes it as
//! passed otherwise; the sources of a target that appears or disappears are judged again. An entity whose
//! ceiling is above `L` stops at `L` only by failing a rule of level `L + 1` the ceilings leave out; when
//! those are all read through relations, each is judged once per entity of the relation's target blueprint
//! (100 teams, not 100,000 services) and the sources of those that fail are read from the reverse-relation
//! index ([`CardLevels::stopped_at`]). So a level nobody is at, under a level with a rule on a mirrored
//! value, is found empty without judging everyone above it.

use std::sync::Arc;

use berth_model::query::{Op, Operand, Query, Rule, Target};
use berth_model::scorecard::Scorecard;
use berth_model::{Entity, Timestamp};
use imbl::{OrdMap, OrdSet};
use serde_json::Value;

use crate::State;
use crate::search::{Ctx, matches};

/// One scorecard's ceilings, ordered by (ceiling, entity) for searches (each entity's own ceilings are
/// in its blueprint's [`BlueprintLevels`]).
#[derive(Clone, Debug)]
pub struct CardLevels {
    /// The scorecard, parsed (a ceiling is an index into its levels).
    card: Arc<Scorecard>,
    /// How its marks are judged (worked out once, when the index is built).
    plan: Arc<Plan>,
    /// Its place in its blueprint's [`Marks`].
    slot: usize,
    by_level: OrdSet<LevelKey>,
}

/// An entry of [`CardLevels::by_level`]: a ceiling and an entity, ordered by (ceiling, identifier). The
/// ceiling and the identifier's first 15 bytes are packed into one integer kept in the B-tree's node, so a
/// descent compares integers and reads an identifier's own bytes only past a shared 15-byte prefix (a
/// comparison of two `Arc<str>` reads both strings, a cache miss each in a large set).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LevelKey {
    /// The ceiling in the top byte, then the identifier's first 15 bytes (zero-padded), big-endian: the
    /// integer's order is the order of (ceiling, padded prefix), which agrees with the identifiers' order.
    packed: u128,
    id: Arc<str>,
}

impl LevelKey {
    fn new(ceiling: u8, id: Arc<str>) -> Self {
        let mut bytes = [0u8; 16];
        bytes[0] = ceiling;
        let prefix = id.as_bytes().get(..15).unwrap_or(id.as_bytes());
        bytes[1..1 + prefix.len()].copy_from_slice(prefix);
        Self { packed: u128::from_be_bytes(bytes), id }
    }

    fn ceiling(&self) -> u8 {
        (self.packed >> 120) as u8
    }
}

/// One blueprint's indexed scorecards, and each entity's mark on every one of them in one record: a write
/// judges all of them, and finds what they were with one lookup rather than one per scorecard.
#[derive(Clone, Debug, Default)]
pub struct BlueprintLevels {
    /// The scorecards, in the order they were indexed (the order of an entity's [`Marks`]).
    cards: Vec<(Arc<str>, CardLevels)>,
    /// The entities some scorecard's filter admits: their mark on each scorecard (hashed: read and written
    /// by identifier only).
    by_id: imbl::HashMap<Arc<str>, Marks>,
}

/// An entity's standing on one indexed scorecard: its ceiling, and the rules judged to reach it (bit `i`
/// for rule `i`: `known`, the rules judged; `passed`, those of them it passed). When only the entity's
/// aggregation values change, the rules that read them are judged again and the others' results are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub ceiling: u8,
    known: u64,
    passed: u64,
}

impl Mark {
    /// Whether every rule both marks judged has the same result in both.
    #[cfg(test)]
    pub(crate) fn agrees_with(&self, other: &Mark) -> bool {
        (self.passed ^ other.passed) & self.known & other.known == 0
    }
}

/// An entity's mark on each of its blueprint's indexed scorecards, in their order (`None` where the
/// scorecard's filter leaves it out).
pub type Marks = Arc<[Option<Mark>]>;

/// The most rules of a scorecard whose results a mark keeps (one bit each); a scorecard with more (up to
/// `berth_model::scorecard::MAX_RULES`) keeps ceilings alone, every rule judged again on every change.
const MAX_KEPT_RULES: usize = 64;

/// The ceiling of a mark.
fn ceiling_of(mark: Option<&Option<Mark>>) -> Option<u8> {
    mark.copied().flatten().map(|m| m.ceiling)
}

impl BlueprintLevels {
    /// One scorecard's ceilings, when it is indexed.
    pub fn card(&self, identifier: &str) -> Option<&CardLevels> {
        self.cards.iter().find(|(k, _)| **k == *identifier).map(|(_, c)| c)
    }

    /// Every entity's ceilings, in identifier order.
    pub fn ceilings(&self) -> Vec<(&str, Vec<Option<u8>>)> {
        let mut out: Vec<(&str, Vec<Option<u8>>)> =
            self.by_id.iter().map(|(id, m)| (&**id, m.iter().map(|m| m.map(|m| m.ceiling)).collect())).collect();
        out.sort_unstable();
        out
    }

    /// Every entity's marks, by identifier.
    #[cfg(test)]
    pub(crate) fn marks(&self) -> std::collections::BTreeMap<&str, &[Option<Mark>]> {
        self.by_id.iter().map(|(id, m)| (&**id, &**m)).collect()
    }

    /// Sets an entity's marks (`new`: one per scorecard, all `None` for an entity that no longer exists or
    /// that no filter admits), moving it in the order of each scorecard whose ceiling changed.
    fn set(&mut self, id: &Arc<str>, new: &[Option<Mark>]) {
        let old = self.by_id.get(&**id).cloned();
        self.replace(id, old, new);
    }

    /// [`BlueprintLevels::set`], given the entity's marks now (`old`, read already).
    fn replace(&mut self, id: &Arc<str>, old: Option<Marks>, new: &[Option<Mark>]) {
        if old.is_none() && new.iter().all(Option::is_none) {
            return;
        }
        for (k, (_, card)) in self.cards.iter_mut().enumerate() {
            let (was, is) = (old.as_ref().and_then(|o| ceiling_of(o.get(k))), ceiling_of(new.get(k)));
            if was == is {
                continue;
            }
            if let Some(o) = was {
                card.by_level.remove(&LevelKey::new(o, Arc::clone(id)));
            }
            if let Some(c) = is {
                card.by_level.insert(LevelKey::new(c, Arc::clone(id)));
            }
        }
        if new.iter().all(Option::is_none) {
            self.by_id.remove(&**id);
        } else {
            self.by_id.insert(Arc::clone(id), Arc::from(new));
        }
    }

    /// Whether `new` is what the entity's marks (`old`) are already.
    fn holds(old: Option<&Marks>, new: &[Option<Mark>]) -> bool {
        match old {
            Some(old) => **old == *new,
            None => new.iter().all(Option::is_none),
        }
    }
}

impl CardLevels {
    /// The rank of a level title.
    pub fn rank(&self, title: &str) -> Option<u8> {
        self.card.levels.iter().position(|l| l.title == title).map(|p| p as u8)
    }

    /// Each entity's ceiling (those the filter admits), in identifier order.
    pub fn ceilings(&self) -> Vec<(&str, u8)> {
        let mut out: Vec<(&str, u8)> = self.by_level.iter().map(|k| (&*k.id, k.ceiling())).collect();
        out.sort_unstable();
        out
    }

    /// How many entities have a ceiling (those the filter admits).
    pub fn len(&self) -> usize {
        self.by_level.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_level.is_empty()
    }

    /// The ceilings an entity at one of the `asked` levels can have: at least that level, and exactly it
    /// when the next level has no rule the ceiling leaves out (then a local rule of it failed), ascending.
    pub fn ceilings_for(&self, asked: &[u8]) -> Vec<u8> {
        let top = self.card.levels.len() as u8;
        let mut out: Vec<u8> = Vec::new();
        for &level in asked {
            let open = self.plan.open_above.get(level as usize).copied().unwrap_or(true);
            if open {
                out.extend(level..top);
            } else {
                out.push(level);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The entities with one of these ceilings, after `after`, in identifier order (a merge of one ordered
    /// run per ceiling).
    /// `extra` (sorted) joins them: entities with other ceilings that may be at the level asked.
    pub fn with_ceilings<'a>(
        &'a self,
        ceilings: &[u8],
        extra: Vec<&'a str>,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a str> + 'a {
        let mut runs: Vec<std::iter::Peekable<Box<dyn Iterator<Item = &'a str> + 'a>>> = ceilings
            .iter()
            .map(|&l| {
                let run: Box<dyn Iterator<Item = &'a str> + 'a> = Box::new(
                    self.by_level
                        .range(LevelKey::new(l, Arc::from(after.unwrap_or("")))..)
                        .take_while(move |k| k.ceiling() == l)
                        .map(|k| &*k.id)
                        .filter(move |id| after.is_none_or(|a| *id > a)),
                );
                run.peekable()
            })
            .collect();
        let extra: Box<dyn Iterator<Item = &'a str> + 'a> =
            Box::new(extra.into_iter().filter(move |id| after.is_none_or(|a| *id > a)));
        runs.push(extra.peekable());
        let mut last: Option<&'a str> = None;
        std::iter::from_fn(move || {
            loop {
                let next = runs.iter_mut().enumerate().filter_map(|(i, r)| r.peek().map(|id| (*id, i))).min()?;
                let id = runs[next.1].next()?;
                if last != Some(id) {
                    last = Some(id);
                    return Some(id);
                }
            }
        })
    }

    /// The entities with one of these ceilings (in no particular order), unless there are `cap` or more.
    pub fn gather(&self, ceilings: &[u8], cap: usize) -> Option<Vec<&str>> {
        let mut out = Vec::new();
        for &l in ceilings {
            for LevelKey { id, .. } in
                self.by_level.range(LevelKey::new(l, Arc::from(""))..).take_while(|k| k.ceiling() == l)
            {
                if out.len() >= cap {
                    return None;
                }
                out.push(&**id);
            }
        }
        Some(out)
    }
}

/// The relation a rule is read through: every condition reads a mirror property whose path starts with
/// it, and it is single, so the rule's result is a function of the entity it leads to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Through {
    pub(crate) relation: String,
    /// The relation's target blueprint.
    pub(crate) target: String,
}

/// The most entities of a relation's target blueprint judged to answer [`CardLevels::stopped_at`].
const MAX_RELATED_JUDGED: usize = 5_000;

impl CardLevels {
    /// The entities whose ceiling is above `level` and that may still stop at it (having failed a rule of the
    /// next level that the ceilings leave out), sorted; `None` when those rules are not all read through a
    /// relation ([`Through`]), or when there would be more than `cap`.
    ///
    /// An entity whose relation leads nowhere was judged by its ceiling (its mirrors are null): only entities
    /// whose relation leads to an entity `x` are left, and for each `x` one of them is judged.
    pub(crate) fn stopped_at<'s>(&'s self, state: &'s State, level: u8, cap: usize) -> Option<Vec<&'s str>> {
        let next = &self.card.levels.get(level as usize + 1)?.title;
        let bp: &str = &self.card.blueprint;
        let group = state.blueprint_levels(bp)?;
        let above =
            |id: &str| group.by_id.get(id).and_then(|m| ceiling_of(m.get(self.slot))).is_some_and(|c| c > level);
        let mut out: Vec<&'s str> = Vec::new();
        for (i, rule) in self.card.rules.iter().enumerate() {
            if rule.level != *next {
                continue;
            }
            let through = match self.plan.kinds.get(i)? {
                RuleKind::Through(t) => t,
                // A local rule: the ceiling judged it.
                RuleKind::Local => continue,
                RuleKind::Open => return None,
            };
            if state.entity_count(&through.target) > MAX_RELATED_JUDGED {
                return None;
            }
            let ctx = Ctx::new(state, &rule.query, Timestamp::from_millis(0), Some(bp)).ok()?;
            for x in state.entities_of(&through.target) {
                let mut sources = state.sources(&through.target, &x.identifier, bp, &through.relation, None).peekable();
                // The rule's result on any source is the result on all of them: judged on the first.
                let failed = sources
                    .peek()
                    .and_then(|id| state.entity(bp, id))
                    .is_some_and(|probe| !matches(&ctx, probe, &rule.query));
                if !failed {
                    continue;
                }
                for id in sources {
                    if above(id) {
                        if out.len() >= cap {
                            return None;
                        }
                        out.push(&**id);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// Whether the level above `level` has a rule the ceilings leave out.
    pub(crate) fn is_open_above(&self, level: u8) -> bool {
        self.plan.open_above.get(level as usize).copied().unwrap_or(true)
    }
}

/// The relation (and its target blueprint) every condition of `q` reads a mirror through, when there is
/// one and it is single (not `many`): then `q`'s result on an entity is a function of the entity that
/// relation leads to.
fn read_through_relation(state: &State, blueprint: &str, q: &Query) -> Option<Through> {
    let spec = state.derived().spec(blueprint)?;
    let mut hop: Option<&str> = None;
    let mut ok = true;
    q.visit(&mut |node| match node {
        Query::Rule(Rule { target: Target::Property(p), op, operand }) => {
            let clock = matches!(operand, Operand::Preset { .. }) || matches!(op, Op::IsExpired | Op::IsNotExpired);
            let first = match spec.kind(p) {
                Some(crate::derived::Kind::Mirror(i)) if spec.mirrors[i].error.is_none() => {
                    spec.mirrors[i].hops.first().map(String::as_str)
                }
                _ => None,
            };
            match first {
                Some(h) if !clock && hop.is_none_or(|at| at == h) => hop = Some(h),
                _ => ok = false,
            }
        }
        Query::Rule(_) | Query::Graph(_) => ok = false,
        Query::Group { .. } => {}
    });
    let hop = hop.filter(|_| ok)?;
    let rel = state.blueprint(blueprint)?.def.relations.get(hop).filter(|r| !r.many)?;
    Some(Through { relation: hop.to_string(), target: rel.target.clone() })
}

/// For one entity: whether each relation a rule is read through leads to an entity (see [`Judge::mark`]).
pub(crate) type Resolved<'j> = Vec<(&'j str, bool)>;

/// How the ceiling counts one rule.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RuleKind {
    /// Judged on the entity.
    Local,
    /// Judged on the entity when its relation leads nowhere; else taken as passed.
    Through(Through),
    /// Taken as passed.
    Open,
}

impl RuleKind {
    fn of(state: &State, blueprint: &str, q: &Query) -> RuleKind {
        if q.slots() > 0 {
            // Something to prepare (a date preset, a graph rule): neither local nor read through.
            RuleKind::Open
        } else if is_local(state, blueprint, q) {
            RuleKind::Local
        } else {
            read_through_relation(state, blueprint, q).map_or(RuleKind::Open, RuleKind::Through)
        }
    }
}

/// How one scorecard's marks are judged, worked out when the index is built.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Per rule: how the ceiling counts it.
    kinds: Vec<RuleKind>,
    /// Per level: its rules (bit `i` for rule `i`; the first level has none). Empty when the scorecard
    /// has more rules than a mark keeps results of (then marks keep ceilings alone).
    masks: Vec<u64>,
    /// The rules whose result may change with the entity's aggregation values (local rules reading one).
    on_aggregates: u64,
    /// Whether the filter reads an aggregation value (then a change of those judges the entity anew).
    filter_on_aggregates: bool,
    /// Every condition of the filter and of the `on_aggregates` rules that reads an aggregation value: (its
    /// position in the blueprint's aggregations, the condition). When each has the same result with an
    /// entity's new aggregation values as with its old ones, its mark is what it was.
    agg_conditions: Vec<(usize, Rule)>,
    /// Per level: whether the level above it has a rule the ceiling leaves out (so an entity whose ceiling
    /// is higher may still stop at this level).
    open_above: Vec<bool>,
}

impl Plan {
    /// `None` when the scorecard cannot be indexed: its filter is not local.
    fn new(state: &State, card: &Scorecard) -> Option<Plan> {
        let bp = card.blueprint.as_str();
        if card.filter.as_ref().is_some_and(|f| f.slots() > 0 || !is_local(state, bp, f)) {
            return None;
        }
        let kinds: Vec<RuleKind> = card.rules.iter().map(|r| RuleKind::of(state, bp, &r.query)).collect();
        let kept = card.rules.len() <= MAX_KEPT_RULES;
        let bits = |keep: &dyn Fn(usize) -> bool| {
            (0..card.rules.len()).filter(|i| kept && keep(*i)).fold(0u64, |m, i| m | 1 << i)
        };
        let masks = if kept {
            card.levels.iter().map(|l| bits(&|i| card.rules[i].level == l.title)).collect()
        } else {
            Vec::new()
        };
        let on_aggregates = bits(&|i| kinds[i] == RuleKind::Local && reads_aggregates(state, bp, &card.rules[i].query));
        let open_above = (0..card.levels.len())
            .map(|l| {
                let Some(next) = card.levels.get(l + 1) else { return false };
                card.rules.iter().zip(&kinds).any(|(r, kind)| r.level == next.title && *kind != RuleKind::Local)
            })
            .collect();
        let filter_on_aggregates = card.filter.as_ref().is_some_and(|f| reads_aggregates(state, bp, f));
        let mut agg_conditions = Vec::new();
        let on_aggs = card
            .rules
            .iter()
            .enumerate()
            .filter(|(i, _)| 1u64.checked_shl(*i as u32).is_some_and(|bit| on_aggregates & bit != 0))
            .map(|(_, r)| &r.query);
        for q in card.filter.as_ref().filter(|_| filter_on_aggregates).into_iter().chain(on_aggs) {
            agg_conditions.extend(aggregate_conditions(state, bp, q));
        }
        Some(Plan { masks, on_aggregates, filter_on_aggregates, agg_conditions, open_above, kinds })
    }
}

/// A scorecard prepared to compute marks: how each rule counts. The filter and the rules it judges are
/// local or read through a relation: no date preset and no graph rule, so nothing to prepare, and one
/// plain context judges them all.
pub(crate) struct Judge<'s> {
    state: &'s State,
    card: Arc<Scorecard>,
    plan: Arc<Plan>,
}

impl<'s> Judge<'s> {
    /// Prepares `card` for marks, `None` when it cannot be indexed (see [`Plan::new`]).
    pub(crate) fn new(state: &'s State, card: Arc<Scorecard>) -> Option<Judge<'s>> {
        let plan = Plan::new(state, &card)?;
        Some(Judge { state, card, plan: Arc::new(plan) })
    }

    /// The entity's mark, `None` when the filter leaves it out. `ctx` judges `e` (see [`judging`]);
    /// `resolved` remembers, for `e`, whether each relation read through leads to an entity (the scorecards
    /// of a blueprint often read the same one). `after`: the entity's mark before a change of its
    /// aggregation values alone, whose other results still hold; `None` when it is judged anew.
    ///
    /// Levels are judged in order, each rule of a level until one fails; the ceiling is the last level
    /// whose rules (and those of every level below) all passed.
    pub(crate) fn mark<'j>(
        &'j self,
        ctx: &Ctx<'_>,
        e: &Entity,
        resolved: &mut Resolved<'j>,
        after: Option<Option<Mark>>,
    ) -> Option<Mark> {
        let plan = &*self.plan;
        if plan.masks.is_empty() {
            // Too many rules to keep their results: judged anew, level by level, until a rule fails.
            if self.card.filter.as_ref().is_some_and(|f| !matches(ctx, e, f)) {
                return None;
            }
            let resolved = std::cell::RefCell::new(resolved);
            let title = self.card.level_of(|i| self.passes(i, ctx, e, &mut resolved.borrow_mut()));
            let ceiling = self.card.levels.iter().position(|l| l.title == title)? as u8;
            return Some(Mark { ceiling, known: 0, passed: 0 });
        }
        // (the results kept, the rules judged again first)
        let (mut known, mut passed, again) = match after {
            Some(Some(m)) if !plan.filter_on_aggregates => {
                (m.known & !plan.on_aggregates, m.passed & !plan.on_aggregates, m.known & plan.on_aggregates)
            }
            // Left out by a filter that reads no aggregation value: still left out.
            Some(None) if !plan.filter_on_aggregates && self.card.filter.is_some() => return None,
            _ => {
                if self.card.filter.as_ref().is_some_and(|f| !matches(ctx, e, f)) {
                    return None;
                }
                (0, 0, 0)
            }
        };
        let mut judge = |i: usize, known: &mut u64, passed: &mut u64| {
            *known |= 1 << i;
            let ok = self.passes(i, ctx, e, resolved);
            if ok {
                *passed |= 1 << i;
            }
            ok
        };
        for i in (0..plan.kinds.len()).filter(|i| again & (1 << i) != 0) {
            judge(i, &mut known, &mut passed);
        }
        let mut ceiling = 0u8;
        for (level, &mask) in plan.masks.iter().enumerate().skip(1) {
            for i in 0..plan.kinds.len() {
                if mask & !known & (1 << i) != 0 && !judge(i, &mut known, &mut passed) {
                    break;
                }
            }
            if passed & mask != mask {
                break;
            }
            ceiling = level as u8;
        }
        Some(Mark { ceiling, known, passed })
    }

    /// Whether `e` passes rule `i`, as the ceiling counts it.
    fn passes<'j>(&'j self, i: usize, ctx: &Ctx<'_>, e: &Entity, resolved: &mut Resolved<'j>) -> bool {
        let Some(rule) = self.card.rules.get(i) else { return false };
        match self.plan.kinds.get(i) {
            None => false,
            Some(RuleKind::Open) => true,
            Some(RuleKind::Local) => matches(ctx, e, &rule.query),
            Some(RuleKind::Through(t)) => {
                let known = resolved.iter().find(|(r, _)| *r == t.relation).map(|(_, leads)| *leads);
                let leads = known.unwrap_or_else(|| {
                    let ids = e.relations.get(&t.relation).map(Entity::relation_targets).unwrap_or_default();
                    let leads = ids.first().is_some_and(|id| self.state.entity(&t.target, id).is_some());
                    resolved.push((&t.relation, leads));
                    leads
                });
                leads || matches(ctx, e, &rule.query)
            }
        }
    }

    pub(crate) fn identifier(&self) -> &str {
        &self.card.identifier
    }
}

/// The conditions of `q` that read one of the blueprint's aggregation properties, with its position.
fn aggregate_conditions(state: &State, blueprint: &str, q: &Query) -> Vec<(usize, Rule)> {
    let Some(spec) = state.derived().spec(blueprint) else { return Vec::new() };
    let mut out = Vec::new();
    q.visit(&mut |node| {
        if let Query::Rule(rule @ Rule { target: Target::Property(p), .. }) = node {
            if let Some(crate::derived::Kind::Aggregation(i)) = spec.kind(p) {
                out.push((i, rule.clone()));
            }
        }
    });
    out
}

/// Whether a change of some of an entity's aggregation values (`moved`: (position in its blueprint's
/// spec, the value before); `now`: every value now) may change its marks, the entity itself unchanged:
/// some condition of an indexed scorecard that reads a moved value has another result (a count that goes
/// from 12 to 13 under a rule `> 2` changes nothing). A scorecard whose marks keep no rule results always
/// may. The entity is looked up (`entity`) only for a condition whose result moved, and a missing one may.
pub(crate) fn aggregates_may_change_marks<'a>(
    state: &State,
    blueprint: &str,
    entity: impl FnOnce() -> Option<&'a Entity>,
    moved: &[(usize, Value)],
    now: &[Value],
) -> bool {
    let Some(group) = state.blueprint_levels(blueprint) else { return false };
    // The conditions are local: no clock, nothing prepared.
    let ctx = Ctx::empty(state, Timestamp::from_millis(0));
    let mut flipped: Vec<&Rule> = Vec::new();
    for (_, card) in group.cards.iter() {
        let plan = &*card.plan;
        if plan.masks.is_empty() {
            return true;
        }
        for (i, rule) in &plan.agg_conditions {
            let Some((_, before)) = moved.iter().find(|(m, _)| m == i) else { continue };
            if crate::search::value_matches(&ctx, rule, Some(before))
                != crate::search::value_matches(&ctx, rule, now.get(*i))
            {
                flipped.push(rule);
            }
        }
    }
    if flipped.is_empty() {
        return false;
    }
    let Some(e) = entity() else { return true };
    // A stored property of the same name is what the rule reads (the same before and after).
    flipped.iter().any(|rule| !matches!(&rule.target, Target::Property(p) if e.properties.get(p).is_some()))
}

/// Whether `q` reads one of the blueprint's aggregation properties.
fn reads_aggregates(state: &State, blueprint: &str, q: &Query) -> bool {
    let Some(spec) = state.derived().spec(blueprint) else { return false };
    let mut reads = false;
    q.visit(&mut |node| {
        if let Query::Rule(Rule { target: Target::Property(p), .. }) = node {
            reads |= matches!(spec.kind(p), Some(crate::derived::Kind::Aggregation(_)));
        }
    });
    reads
}

/// Whether `q`'s result on an entity depends only on the entity and the state's aggregation values.
fn is_local(state: &State, blueprint: &str, q: &Query) -> bool {
    let spec = state.derived().spec(blueprint);
    let mut local = true;
    q.visit(&mut |node| match node {
        Query::Graph(_) => local = false,
        Query::Rule(Rule { target, op, operand }) => {
            let clock = matches!(operand, Operand::Preset { .. }) || matches!(op, Op::IsExpired | Op::IsNotExpired);
            let elsewhere = match target {
                Target::Scorecard { .. } => true,
                Target::Property(p) => {
                    spec.and_then(|s| s.kind(p)).is_some_and(|k| !matches!(k, crate::derived::Kind::Aggregation(_)))
                }
                _ => false,
            };
            if clock || elsewhere {
                local = false;
            }
        }
        Query::Group { .. } => {}
    });
    local
}

/// The context that judges `e`'s ceilings: it reads `e`'s aggregation values (the only derived values
/// local rules read) from what the state keeps, found once rather than once per rule.
fn judging<'a>(state: &'a State, e: &'a Entity) -> Ctx<'a> {
    Ctx::with_aggregates(state, e, state.aggregate_values(&e.blueprint, &e.identifier).map(Vec::as_slice))
}

/// Every blueprint's indexed scorecards and ceilings.
pub(crate) type Levels = OrdMap<Arc<str>, BlueprintLevels>;

/// Computes every ceiling of every indexed scorecard (entities in chunks, on two threads).
pub(crate) fn build(state: &State) -> Levels {
    const CHUNK: usize = 5_000;
    let judges = judges_by_blueprint(state);
    // Chunks of a blueprint's entities, each judged by all of the blueprint's scorecards (one context each).
    let mut chunks: Vec<(usize, Vec<&Arc<Entity>>)> = Vec::new();
    for (g, (bp, _)) in judges.iter().enumerate() {
        let entities: Vec<&Arc<Entity>> = state.entities_of(bp).collect();
        crate::work_count::add(entities.len());
        chunks.extend(entities.chunks(CHUNK).map(|c| (g, c.to_vec())));
    }
    let judge = |(g, entities): (usize, Vec<&Arc<Entity>>)| {
        let js = &judges[g].1;
        let marks: Vec<(Arc<str>, Vec<Option<Mark>>)> = entities
            .into_iter()
            .map(|e| {
                let ctx = judging(state, e);
                let mut resolved = Resolved::new();
                (Arc::clone(&e.identifier), js.iter().map(|j| j.mark(&ctx, e, &mut resolved, None)).collect())
            })
            .collect();
        (g, marks)
    };
    let judged = match crate::parallel::on_two_threads(chunks.clone(), judge) {
        Some(done) => done,
        None => chunks.into_iter().map(judge).collect(),
    };
    let mut groups: Vec<BlueprintLevels> = judges
        .iter()
        .map(|(_, js)| BlueprintLevels {
            cards: js
                .iter()
                .enumerate()
                .map(|(slot, j)| {
                    let levels = CardLevels {
                        card: Arc::clone(&j.card),
                        plan: Arc::clone(&j.plan),
                        slot,
                        by_level: OrdSet::new(),
                    };
                    (Arc::from(j.identifier()), levels)
                })
                .collect(),
            by_id: imbl::HashMap::new(),
        })
        .collect();
    for (g, ceilings) in judged {
        if let Some(group) = groups.get_mut(g) {
            for (id, cs) in ceilings {
                group.set(&id, &cs);
            }
        }
    }
    judges
        .iter()
        .zip(groups)
        .filter(|(_, g)| !g.cards.is_empty())
        .map(|((bp, _), g)| (Arc::from(bp.as_str()), g))
        .collect()
}

/// The indexable scorecards of every blueprint that has some.
pub(crate) fn judges_by_blueprint(state: &State) -> Vec<(String, Vec<Judge<'_>>)> {
    let blueprints: std::collections::BTreeSet<&str> = state
        .definitions(berth_model::DefinitionKind::Scorecard)
        .filter_map(|d| berth_model::definition::split_scorecard_key(&d.identifier).map(|(bp, _)| bp))
        .collect();
    blueprints.into_iter().map(|bp| (bp.to_string(), judges_of(state, bp))).collect()
}

fn judges_of<'s>(state: &'s State, blueprint: &str) -> Vec<Judge<'s>> {
    crate::definitions::scorecards::of_blueprint(state, blueprint)
        .into_iter()
        .filter_map(|c| Judge::new(state, Arc::new(c)))
        .collect()
}

/// Why an entity is judged again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rejudge {
    /// It was written (or deleted), or something it reads through a relation appeared or disappeared.
    Written,
    /// Only its aggregation values changed: the rules that read none keep their results.
    Aggregates,
}

/// Recomputes the marks of the given entities (each `(blueprint, identifier, why)`; a deleted one leaves),
/// with the scorecards the index holds (parsed once, when it was built).
pub(crate) fn refresh(state: &State, levels: &mut Levels, entities: &[(Arc<str>, Arc<str>, Rejudge)]) {
    crate::work_count::add(entities.len());
    if levels.is_empty() || entities.is_empty() {
        return;
    }
    // Each entity once, judged anew when it was written at all.
    let mut entities: Vec<&(Arc<str>, Arc<str>, Rejudge)> = entities.iter().collect();
    entities.sort_unstable();
    entities.dedup_by(|later, first| later.0 == first.0 && later.1 == first.1);
    // Each blueprint's judges, made once (the entities are usually of one or two blueprints).
    let mut judges: Vec<(&str, Vec<Judge<'_>>)> = Vec::new();
    let mut marks: Vec<Option<Mark>> = Vec::new();
    for (bp, id, why) in entities {
        // Read first: the maps are copied on the way down only when a mark changed (most writes leave them
        // as they were).
        let Some(group) = levels.get(&**bp) else { continue };
        let at = match judges.iter().position(|(b, _)| *b == &**bp) {
            Some(at) => at,
            None => {
                let js = group
                    .cards
                    .iter()
                    .map(|(_, c)| Judge { state, card: Arc::clone(&c.card), plan: Arc::clone(&c.plan) })
                    .collect();
                judges.push((bp, js));
                judges.len() - 1
            }
        };
        let js = &judges[at].1;
        let old = group.by_id.get(&**id).cloned();
        marks.clear();
        match state.entity(bp, id) {
            Some(e) => {
                let ctx = judging(state, e);
                let mut resolved = Resolved::new();
                marks.extend(js.iter().enumerate().map(|(k, j)| {
                    let after =
                        (*why == Rejudge::Aggregates).then(|| old.as_ref().and_then(|o| o.get(k).copied().flatten()));
                    j.mark(&ctx, e, &mut resolved, after)
                }));
            }
            None => marks.resize(js.len(), None),
        }
        if BlueprintLevels::holds(old.as_ref(), &marks) {
            continue;
        }
        if let Some(group) = levels.get_mut(&**bp) {
            group.replace(id, old, &marks);
        }
    }
}

/// Every relation some indexed rule is read through: (target blueprint, source blueprint, relation). The
/// sources of a target that appears or disappears have their ceilings judged again.
pub(crate) fn read_through(levels: &Levels) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = levels
        .iter()
        .flat_map(|(bp, group)| {
            group.cards.iter().flat_map(move |(_, c)| {
                c.plan.kinds.iter().filter_map(move |k| match k {
                    RuleKind::Through(t) => Some((t.target.clone(), bp.to_string(), t.relation.clone())),
                    _ => None,
                })
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::LevelKey;
    use proptest::prelude::*;
    use std::sync::Arc;

    // Identifiers that share long prefixes, end in NUL bytes or not, and are shorter and longer than the
    // packed prefix.
    fn identifier() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c]{0,20}",
            "svc-0000000000[0-9]{0,8}",
            proptest::collection::vec(prop_oneof![Just('\0'), Just('a'), Just('é')], 0..20)
                .prop_map(|cs| cs.into_iter().collect()),
        ]
    }

    proptest! {
        /// The packed key orders entries exactly as (ceiling, identifier) does: searches page by it.
        #[test]
        fn a_level_key_orders_as_its_ceiling_then_its_identifier(
            a in (0u8..=255, identifier()),
            b in (0u8..=255, identifier()),
        ) {
            let (ka, kb) = (LevelKey::new(a.0, Arc::from(a.1.as_str())), LevelKey::new(b.0, Arc::from(b.1.as_str())));
            prop_assert_eq!(ka.cmp(&kb), (a.0, &a.1).cmp(&(b.0, &b.1)));
            prop_assert_eq!(ka.ceiling(), a.0);
            prop_assert_eq!(ka == kb, a == b);
        }
    }
}
