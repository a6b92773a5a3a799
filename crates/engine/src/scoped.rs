//! A caller's view of the catalog: the entities it may read, and nothing else.
//!
//! [`Scoped`] wraps one published [`State`] for one caller. Each blueprint's read scope
//! ([`access::read_scope`]) is compiled at most once per view into a typed [`Query`] prepared against the
//! state ([`Ctx`]), so judging an entity costs one evaluation, never a parse. Every entity read of the API and
//! the UI asks a `Scoped`: a hidden entity is answered exactly like a missing one. Searches, lists, counts
//! and aggregates are run *through* it ([`Scoped::search_page`], [`Scoped::list`], [`Scoped::count`],
//! [`Scoped::for_each_match`], [`Scoped::aggregate`]), which join the typed scope to the typed query before
//! the engine sees it, so a frontend cannot search without narrowing; the blueprints a cross-blueprint search
//! visits are those the *parsed* query names.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use berth_model::query::{Query, SortKey};
use berth_model::{DomainError, Entity, Timestamp};

use crate::State;
use crate::access::{self, Principal, ReadScope};
use crate::search::{self, Ctx};

/// One blueprint's scope, prepared for evaluation.
enum Compiled<'s> {
    All,
    Nothing,
    Rules { query: Query, ctx: Box<Ctx<'s>> },
}

/// What `principal` may read of `state`, at the time `now` (for date rules in policies).
pub struct Scoped<'s> {
    state: &'s State,
    principal: Principal,
    now: Timestamp,
    admin: bool,
    /// Each blueprint's compiled scope, made on first use.
    scopes: HashMap<&'s str, OnceLock<Compiled<'s>>, foldhash::fast::RandomState>,
    /// Where scorecards are prepared (once per blueprint per view) and judged.
    cards: Ctx<'s>,
}

impl<'s> Scoped<'s> {
    pub fn new(state: &'s State, principal: Principal, now: Timestamp) -> Scoped<'s> {
        let admin = principal.is_admin();
        let scopes = if admin {
            HashMap::default()
        } else {
            state.blueprints().map(|b| (b.def.identifier.as_str(), OnceLock::new())).collect()
        };
        Scoped { state, principal, now, admin, scopes, cards: Ctx::empty(state, now) }
    }

    /// The state beneath, for what is not entity data (blueprints, permissions, users for Admins). Entity
    /// reads go through the methods of this view.
    pub fn state(&self) -> &'s State {
        self.state
    }

    /// A page of the readable entities of `blueprint` matching `query` (every one when `None`), ordered by
    /// `sort` (identifier order when empty), after the cursor `from`.
    pub fn search_page(
        &self,
        blueprint: &str,
        query: Option<Query>,
        sort: &[SortKey],
        from: Option<&str>,
        limit: usize,
    ) -> Result<search::Page, DomainError> {
        let mut names: Vec<&str> = query.as_ref().map(Query::properties).unwrap_or_default();
        names.extend(sort.iter().filter_map(|k| match &k.target {
            berth_model::query::Target::Property(p) => Some(p.as_str()),
            _ => None,
        }));
        self.check_derived(&[blueprint], &names)?;
        let query = self.narrow(blueprint, query);
        search::search_blueprint_sorted(self.state, blueprint, query.as_ref(), sort, self.now, from, limit)
    }

    /// Every readable entity of `blueprint`, in identifier order.
    pub fn list(&self, blueprint: &str) -> Result<Vec<Arc<Entity>>, DomainError> {
        Ok(match self.narrow(blueprint, None) {
            None => self.state.entities_of(blueprint).cloned().collect(),
            Some(query) => search::scan(self.state, blueprint, &query, self.now)?,
        })
    }

    /// How many readable entities of `blueprint` match `query` (every one when `None`): O(1) for a caller
    /// who reads the whole blueprint, else the aggregate count with its index fast paths.
    pub fn count(&self, blueprint: &str, query: Option<Query>) -> Result<usize, DomainError> {
        self.check_derived(&[blueprint], &query.as_ref().map(Query::properties).unwrap_or_default())?;
        match self.narrow(blueprint, query) {
            None => Ok(self.state.entity_count(blueprint)),
            Some(q) => {
                // One flat `and`, so the aggregate's fast paths (value counts) recognise a single enum filter.
                let agg = crate::aggregate::Aggregation {
                    func: crate::aggregate::Func::Count,
                    query: Query::of_blueprint(blueprint).and(q),
                    property: None,
                    group_by: None,
                    per: None,
                    measure_time_by: None,
                };
                let out = crate::aggregate::aggregate(self.state, &agg, self.now)?;
                Ok(out.result.as_u64().map_or(0, |n| n as usize))
            }
        }
    }

    /// Calls `f` on every readable entity matching `query` across blueprints; answers the blueprints that had
    /// matches.
    pub fn for_each_match(&self, query: Query, f: impl FnMut(&'s Arc<Entity>)) -> Result<Vec<String>, DomainError> {
        self.check_derived_across(&query, &query.properties())?;
        let query = self.narrow_all(query);
        search::for_each_match(self.state, &query, self.now, f)
    }

    /// An aggregate over the readable entities its query matches (what the caller may not read is not
    /// counted either).
    pub fn aggregate(
        &self,
        mut agg: crate::aggregate::Aggregation,
    ) -> Result<crate::aggregate::Aggregated, DomainError> {
        let mut names = agg.query.properties();
        names.extend(agg.property.as_deref());
        if let Some(crate::aggregate::GroupBy::Property(p)) = &agg.group_by {
            names.push(p);
        }
        self.check_derived_across(&agg.query, &names)?;
        agg.query = self.narrow_all(agg.query);
        crate::aggregate::aggregate(self.state, &agg, self.now)
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    fn compiled(&self, blueprint: &str) -> Option<&Compiled<'s>> {
        let cell = self.scopes.get(blueprint)?;
        Some(cell.get_or_init(|| {
            match access::read_scope(self.state, &self.principal, blueprint) {
                ReadScope::All => Compiled::All,
                ReadScope::Nothing => Compiled::Nothing,
                // A scope that cannot be prepared (a policy naming a blueprint since deleted) hides everything:
                // a read restriction fails closed.
                ReadScope::Rules(query) => match Ctx::new(self.state, &query, self.now, Some(blueprint)) {
                    Ok(ctx) => Compiled::Rules { query, ctx: Box::new(ctx) },
                    Err(_) => Compiled::Nothing,
                },
            }
        }))
    }

    /// Whether the caller may read `entity` (current or a past version: it is judged as it is, against the
    /// current catalog).
    pub fn can_read(&self, entity: &Entity) -> bool {
        if self.admin {
            return true;
        }
        match self.compiled(&entity.blueprint) {
            None | Some(Compiled::Nothing) => false,
            Some(Compiled::All) => true,
            Some(Compiled::Rules { query, ctx }) => search::matches(ctx, entity, query),
        }
    }

    /// The entity, if it exists and the caller may read it.
    pub fn entity(&self, blueprint: &str, identifier: &str) -> Option<&'s Arc<Entity>> {
        self.state.entity(blueprint, identifier).filter(|e| self.can_read(e))
    }

    /// The entity's scorecards in Port's shape, `{<scorecard>: {level, rules: [{identifier, status, level}]}}`
    /// (`status` `SUCCESS` or `FAILURE`), judged now against the current catalog; `None` when its blueprint
    /// has no scorecard that applies to it. Computed when read, so always current.
    pub fn scorecards(&self, entity: &Entity) -> Option<serde_json::Value> {
        // Most catalogs have none: every read skips the preparation at the cost of one map lookup.
        self.state.definitions(berth_model::DefinitionKind::Scorecard).next()?;
        search::scorecard_results(&self.cards, entity)
    }

    /// The entity's derived values (mirror, calculation, aggregation properties) as the caller sees them,
    /// and why those that failed are null; `None` when its blueprint has none.
    pub fn derived(
        &self,
        entity: &Entity,
    ) -> Option<(serde_json::Map<String, serde_json::Value>, serde_json::Map<String, serde_json::Value>)> {
        crate::derived::values(self.state, entity, self)
    }

    /// One derived value of the entity as the caller sees it (`None`: its blueprint has no derived property
    /// of that name).
    pub fn derived_value(&self, entity: &Entity, name: &str) -> Option<serde_json::Value> {
        crate::derived::value(self.state, entity, name, self)
    }

    /// Refuses a search, sort or aggregate of `blueprints` that names a derived property computed from
    /// entities the caller may not all read: matching on it would tell what the caller may not see.
    fn check_derived(&self, blueprints: &[&str], names: &[&str]) -> Result<(), DomainError> {
        if self.admin || names.is_empty() {
            return Ok(());
        }
        for bp in blueprints {
            let Some(spec) = self.state.derived().spec(bp) else { continue };
            for name in names {
                if let Some(hidden) = spec.sources_of(name).into_iter().find(|b| !self.reads_all(b)) {
                    return Err(DomainError::Forbidden(format!(
                        "`{name}` of blueprint `{bp}` is derived from `{hidden}` entities you may not all read; \
                         it cannot be searched, sorted or aggregated by you"
                    )));
                }
            }
        }
        Ok(())
    }

    /// [`Scoped::check_derived`] for a query across blueprints (those it restricts itself to, or all).
    fn check_derived_across(&self, query: &Query, names: &[&str]) -> Result<(), DomainError> {
        if self.admin || names.is_empty() {
            return Ok(());
        }
        let blueprints: Vec<String> = match query.blueprint_filter() {
            Some(list) => list,
            None => self.state.blueprints().map(|b| b.def.identifier.clone()).collect(),
        };
        let refs: Vec<&str> = blueprints.iter().map(String::as_str).collect();
        self.check_derived(&refs, names)
    }

    /// Whether the caller may read every entity of `blueprint`.
    pub fn reads_all(&self, blueprint: &str) -> bool {
        self.admin || matches!(self.compiled(blueprint), Some(Compiled::All))
    }

    /// The title of a related entity the caller may read (`None` when hidden, missing or untitled).
    pub fn title(&self, blueprint: &str, identifier: &str) -> Option<&'s str> {
        self.entity(blueprint, identifier).and_then(|e| e.title.as_deref())
    }

    /// The readable entities of a blueprint, in identifier order. Under a search deadline
    /// ([`search::with_deadline`]) it ends early once the deadline has passed, which the deadline reports.
    pub fn entities_of<'a>(&'a self, blueprint: &'a str) -> impl Iterator<Item = &'s Arc<Entity>> + 'a {
        self.state.entities_of(blueprint).take_while(|_| !search::interrupted()).filter(move |e| self.can_read(e))
    }

    /// [`Scoped::entities_of`] from the first identifier greater than `after`.
    pub fn entities_after<'a>(
        &'a self,
        blueprint: &'a str,
        after: &'a str,
    ) -> impl Iterator<Item = &'s Arc<Entity>> + 'a {
        self.state
            .entities_after(blueprint, after)
            .take_while(|_| !search::interrupted())
            .filter(move |e| self.can_read(e))
    }

    /// `query` (or everything) of `blueprint`, narrowed to what the caller may read: `None` means every
    /// entity. The scope's rules join the query's top level, where the planner can use them.
    pub(crate) fn narrow(&self, blueprint: &str, query: Option<Query>) -> Option<Query> {
        if self.admin {
            return query;
        }
        let scope = match self.compiled(blueprint) {
            Some(Compiled::All) => return query,
            None | Some(Compiled::Nothing) => Query::nothing(),
            Some(Compiled::Rules { query: rules, .. }) => rules.clone(),
        };
        Some(match query {
            Some(q) => q.and(scope),
            None => scope,
        })
    }

    /// `query` across blueprints narrowed to what the caller may read. The blueprints considered are those
    /// the parsed query restricts itself to (its top-level `$blueprint` rule), or all of them; each brings
    /// its own scope, joined by `or`.
    pub(crate) fn narrow_all(&self, query: Query) -> Query {
        if self.admin {
            return query;
        }
        let blueprints: Vec<String> = match query.blueprint_filter() {
            Some(list) => list,
            None => self.state.blueprints().map(|b| b.def.identifier.clone()).collect(),
        };
        let scopes: Vec<(String, Option<&Compiled<'s>>)> = blueprints
            .into_iter()
            .map(|bp| {
                let c = self.compiled(&bp);
                (bp, c)
            })
            .collect();
        if scopes.iter().all(|(_, s)| matches!(s, Some(Compiled::All))) {
            return query;
        }
        if let [(_, scope)] = scopes.as_slice() {
            // One blueprint: its scope flat at the top level, where the planner can use it.
            return match scope {
                Some(Compiled::Rules { query: rules, .. }) => query.and(rules.clone()),
                _ => query.and(Query::nothing()),
            };
        }
        let visible: Vec<Query> = scopes
            .into_iter()
            .filter_map(|(bp, scope)| match scope? {
                Compiled::All => Some(Query::of_blueprint(&bp)),
                Compiled::Nothing => None,
                Compiled::Rules { query: rules, .. } => Some(Query::of_blueprint(&bp).and(rules.clone())),
            })
            .collect();
        query.and(Query::any(visible))
    }
}

impl crate::derived::Sees for Scoped<'_> {
    fn reads_all(&self, blueprint: &str) -> bool {
        Scoped::reads_all(self, blueprint)
    }

    fn can_read(&self, entity: &Entity) -> bool {
        Scoped::can_read(self, entity)
    }
}
