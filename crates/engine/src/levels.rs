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

use std::sync::Arc;

use berth_model::query::{Op, Operand, Query, Rule, Target};
use berth_model::scorecard::Scorecard;
use berth_model::{Entity, Timestamp};
use imbl::{OrdMap, OrdSet};

use crate::State;
use crate::search::{Ctx, matches};

/// One scorecard's ceilings: by entity, and ordered by (ceiling, entity) for searches.
#[derive(Clone, Debug)]
pub struct CardLevels {
    /// The scorecard, parsed (a ceiling is an index into its levels).
    card: Arc<Scorecard>,
    /// Per level: whether the level above it has a rule the ceiling leaves out (so an entity whose ceiling
    /// is higher may still stop at this level).
    open_above: Arc<Vec<bool>>,
    by_id: OrdMap<Arc<str>, u8>,
    by_level: OrdSet<(u8, Arc<str>)>,
}

impl CardLevels {
    fn set(&mut self, id: &Arc<str>, ceiling: Option<u8>) {
        let old = match ceiling {
            Some(c) => self.by_id.insert(Arc::clone(id), c),
            None => self.by_id.remove(id),
        };
        if old == ceiling {
            return;
        }
        if let Some(o) = old {
            self.by_level.remove(&(o, Arc::clone(id)));
        }
        if let Some(c) = ceiling {
            self.by_level.insert((c, Arc::clone(id)));
        }
    }

    /// The rank of a level title.
    pub fn rank(&self, title: &str) -> Option<u8> {
        self.card.levels.iter().position(|l| l.title == title).map(|p| p as u8)
    }

    /// Each entity's ceiling, in identifier order.
    pub fn ceilings(&self) -> impl Iterator<Item = (&str, u8)> {
        self.by_id.iter().map(|(id, c)| (&**id, *c))
    }

    /// How many entities have a ceiling (those the filter admits).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The ceilings an entity at one of the `asked` levels can have: at least that level, and exactly it
    /// when the next level has no rule the ceiling leaves out (then a local rule of it failed), ascending.
    pub fn ceilings_for(&self, asked: &[u8]) -> Vec<u8> {
        let top = self.card.levels.len() as u8;
        let mut out: Vec<u8> = Vec::new();
        for &level in asked {
            let open = self.open_above.get(level as usize).copied().unwrap_or(true);
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
    pub fn with_ceilings<'a>(&'a self, ceilings: &[u8], after: Option<&'a str>) -> impl Iterator<Item = &'a str> + 'a {
        let mut runs: Vec<std::iter::Peekable<Box<dyn Iterator<Item = &'a str> + 'a>>> = ceilings
            .iter()
            .map(|&l| {
                let run: Box<dyn Iterator<Item = &'a str> + 'a> = Box::new(
                    self.by_level
                        .range((l, Arc::from(after.unwrap_or("")))..)
                        .take_while(move |(at, _)| *at == l)
                        .map(|(_, id)| &**id)
                        .filter(move |id| after.is_none_or(|a| *id > a)),
                );
                run.peekable()
            })
            .collect();
        std::iter::from_fn(move || {
            let next = runs.iter_mut().enumerate().filter_map(|(i, r)| r.peek().map(|id| (*id, i))).min()?;
            runs[next.1].next()
        })
    }

    /// The entities with one of these ceilings (in no particular order), unless there are `cap` or more.
    pub fn gather(&self, ceilings: &[u8], cap: usize) -> Option<Vec<&str>> {
        let mut out = Vec::new();
        for &l in ceilings {
            for (_, id) in self.by_level.range((l, Arc::from(""))..).take_while(|(at, _)| *at == l) {
                if out.len() >= cap {
                    return None;
                }
                out.push(&**id);
            }
        }
        Some(out)
    }
}

/// A scorecard prepared to compute ceilings: which rules count, and their prepared contexts.
pub(crate) struct Judge<'s> {
    card: Arc<Scorecard>,
    filter: Option<Ctx<'s>>,
    /// `None`: the rule is not local, and is taken as passed.
    rules: Vec<Option<Ctx<'s>>>,
}

impl<'s> Judge<'s> {
    /// Prepares `card` for ceilings, `None` when it cannot be indexed (its filter is not local).
    pub(crate) fn new(state: &'s State, card: Arc<Scorecard>) -> Option<Judge<'s>> {
        let bp = card.blueprint.clone();
        let prepare = |q: &Query| Ctx::new(state, q, Timestamp::from_millis(0), Some(&bp)).ok();
        let filter = match &card.filter {
            None => None,
            Some(f) if is_local(state, &bp, f) => Some(prepare(f)?),
            Some(_) => return None,
        };
        let rules =
            card.rules.iter().map(|r| if is_local(state, &bp, &r.query) { prepare(&r.query) } else { None }).collect();
        Some(Judge { card, filter, rules })
    }

    /// The entity's ceiling (the index of a level), `None` when the filter leaves it out.
    pub(crate) fn ceiling(&self, e: &Entity) -> Option<u8> {
        if let (Some(ctx), Some(f)) = (&self.filter, &self.card.filter) {
            if !matches(ctx, e, f) {
                return None;
            }
        }
        let passed = |i: usize| match &self.rules[i] {
            None => true,
            Some(ctx) => matches(ctx, e, &self.card.rules[i].query),
        };
        let title = self.card.level_of(passed);
        self.card.levels.iter().position(|l| l.title == title).map(|p| p as u8)
    }

    /// Per level: whether the next level has a rule that is not local.
    fn open_above(&self) -> Vec<bool> {
        let levels = &self.card.levels;
        (0..levels.len())
            .map(|l| {
                let Some(next) = levels.get(l + 1) else { return false };
                self.card.rules.iter().zip(&self.rules).any(|(r, ctx)| r.level == next.title && ctx.is_none())
            })
            .collect()
    }

    pub(crate) fn identifier(&self) -> &str {
        &self.card.identifier
    }
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

/// Every blueprint's indexed scorecards: blueprint → scorecard → ceilings.
pub(crate) type Levels = OrdMap<Arc<str>, OrdMap<Arc<str>, CardLevels>>;

/// Computes every ceiling of every indexed scorecard (entities in chunks, on two threads).
pub(crate) fn build(state: &State) -> Levels {
    const CHUNK: usize = 5_000;
    let judges = judges_by_blueprint(state);
    let cards: Vec<(&str, &Judge<'_>)> =
        judges.iter().flat_map(|(bp, js)| js.iter().map(move |j| (bp.as_str(), j))).collect();
    let mut chunks: Vec<(usize, Vec<&Arc<Entity>>)> = Vec::new();
    for (i, (bp, _)) in cards.iter().enumerate() {
        let entities: Vec<&Arc<Entity>> = state.entities_of(bp).collect();
        chunks.extend(entities.chunks(CHUNK).map(|c| (i, c.to_vec())));
    }
    let judge = |(i, entities): (usize, Vec<&Arc<Entity>>)| {
        let j = cards[i].1;
        (i, entities.into_iter().map(|e| (Arc::clone(&e.identifier), j.ceiling(e))).collect::<Vec<_>>())
    };
    let judged = match crate::parallel::on_two_threads(chunks.clone(), judge) {
        Some(done) => done,
        None => chunks.into_iter().map(judge).collect(),
    };
    let mut levels: Vec<CardLevels> = cards
        .iter()
        .map(|(_, j)| CardLevels {
            card: Arc::clone(&j.card),
            open_above: Arc::new(j.open_above()),
            by_id: OrdMap::new(),
            by_level: OrdSet::new(),
        })
        .collect();
    for (i, ceilings) in judged {
        for (id, c) in ceilings {
            levels[i].set(&id, c);
        }
    }
    let mut out: Levels = OrdMap::new();
    for ((bp, j), l) in cards.iter().zip(levels) {
        out.entry(Arc::from(*bp)).or_default().insert(Arc::from(j.identifier()), l);
    }
    out
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

/// Recomputes the ceilings of the given entities (each `(blueprint, identifier)`; a deleted one leaves), with
/// the scorecards the index holds (parsed once, when it was built).
pub(crate) fn refresh(state: &State, levels: &mut Levels, entities: &[(Arc<str>, Arc<str>)]) {
    if levels.is_empty() || entities.is_empty() {
        return;
    }
    let mut judges: std::collections::HashMap<Arc<str>, Vec<(Arc<str>, Judge<'_>)>> = std::collections::HashMap::new();
    for (bp, id) in entities {
        let Some(cards) = levels.get_mut(&**bp) else { continue };
        let js = judges.entry(Arc::clone(bp)).or_insert_with(|| {
            cards.iter().filter_map(|(k, c)| Some((Arc::clone(k), Judge::new(state, Arc::clone(&c.card))?))).collect()
        });
        let e = state.entity(bp, id);
        for (k, j) in js.iter() {
            if let Some(c) = cards.get_mut(&**k) {
                c.set(id, e.and_then(|e| j.ceiling(e)));
            }
        }
    }
}
