//! Ordered per-property indexes: for every blueprint and every property (and `$title`, `$team`), the set of
//! `(value, identifier)` pairs, ordered by value then identifier. Scalars are indexed as they are; an array
//! is indexed once per scalar item (membership); a `date-time` property by its instant, so ranges of dates
//! compare as times. One ordered set per property (not one set per value) keeps a unique-valued property at
//! one entry per entity.
//!
//! The index answers equality, `in`, ranges and prefixes with a superset of the matching identifiers; the
//! search still evaluates every rule on each candidate, so the index never decides a match on its own.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use berth_model::{Entity, Timestamp};
use imbl::{OrdMap, OrdSet};
use serde_json::Value;

/// An indexed value. Ordered: booleans, then numbers, then instants, then strings.
#[derive(Clone, Debug)]
pub enum ScalarKey {
    Bool(bool),
    Num(f64),
    Time(i64),
    Str(Arc<str>),
}

impl ScalarKey {
    fn rank(&self) -> u8 {
        match self {
            ScalarKey::Bool(_) => 0,
            ScalarKey::Num(_) => 1,
            ScalarKey::Time(_) => 2,
            ScalarKey::Str(_) => 3,
        }
    }

    /// The key of a scalar JSON value (`None` for null, arrays, objects). Numbers are normalised so that
    /// equal numbers have equal keys.
    pub fn of(v: &Value, date_time: bool) -> Option<ScalarKey> {
        match v {
            Value::Bool(b) => Some(ScalarKey::Bool(*b)),
            Value::Number(n) => {
                n.as_f64().filter(|f| f.is_finite()).map(|f| ScalarKey::Num(if f == 0.0 { 0.0 } else { f }))
            }
            Value::String(s) if date_time => Timestamp::parse(s).map(|t| ScalarKey::Time(t.millis())),
            Value::String(s) => Some(ScalarKey::Str(Arc::from(s.as_str()))),
            _ => None,
        }
    }
}

impl PartialEq for ScalarKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ScalarKey {}

impl PartialOrd for ScalarKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ScalarKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (ScalarKey::Bool(a), ScalarKey::Bool(b)) => a.cmp(b),
            (ScalarKey::Num(a), ScalarKey::Num(b)) => a.total_cmp(b),
            (ScalarKey::Time(a), ScalarKey::Time(b)) => a.cmp(b),
            (ScalarKey::Str(a), ScalarKey::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// One index entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub value: ScalarKey,
    pub id: Arc<str>,
}

/// Property name (or `$title`) → its ordered entries.
pub type BlueprintIndex = OrdMap<Arc<str>, OrdSet<Entry>>;

/// The name `$title` is indexed under.
pub const TITLE: &str = "$title";
/// The name `$team` is indexed under (one entry per owning team: team-scoped reads use it).
pub const TEAM: &str = "$team";

/// How a blueprint's properties are indexed, worked out once per blueprint definition: the shared name of
/// each property, whether it is a date-time (indexed by instant) and whether its values are counted (an
/// `enum` or a boolean: the properties facets are made of).
#[derive(Debug, Default)]
pub struct IndexSpec {
    props: std::collections::HashMap<String, PropSpec>,
    /// The blueprint's relations as its edges name them, shared by every edge of the reverse-relation index.
    relations: std::collections::HashMap<String, Arc<crate::state::RelationOf>>,
    title: Option<PropSpec>,
    team: Option<PropSpec>,
}

#[derive(Clone, Debug)]
pub struct PropSpec {
    pub name: Arc<str>,
    pub date_time: bool,
    pub counted: bool,
}

impl IndexSpec {
    pub fn of(
        blueprint: &str,
        properties: &serde_json::Map<String, Value>,
        relations: impl Iterator<Item = String>,
    ) -> IndexSpec {
        let source: Arc<str> = Arc::from(blueprint);
        let props = properties
            .iter()
            .map(|(name, def)| {
                let format = def.get("format").and_then(Value::as_str);
                let kind = def.get("type").and_then(Value::as_str);
                let spec = PropSpec {
                    name: Arc::from(name.as_str()),
                    date_time: format == Some("date-time"),
                    counted: def.get("enum").is_some() || kind == Some("boolean"),
                };
                (name.clone(), spec)
            })
            .collect();
        IndexSpec {
            props,
            relations: relations
                .map(|r| {
                    let kind =
                        crate::state::RelationOf { blueprint: Arc::clone(&source), relation: Arc::from(r.as_str()) };
                    (r, Arc::new(kind))
                })
                .collect(),
            title: Some(PropSpec { name: Arc::from(TITLE), date_time: false, counted: false }),
            team: Some(PropSpec { name: Arc::from(TEAM), date_time: false, counted: false }),
        }
    }

    /// The shared name of a relation of the blueprint.
    pub fn relation(&self, name: &str) -> Option<&Arc<crate::state::RelationOf>> {
        self.relations.get(name)
    }

    pub fn get(&self, property: &str) -> Option<&PropSpec> {
        match property {
            TITLE => self.title.as_ref(),
            TEAM => self.team.as_ref(),
            _ => self.props.get(property),
        }
    }

    /// The entries one entity contributes: `(property, key)` pairs (properties the schema defines, and
    /// `$title`).
    pub fn entries_of(&self, e: &Entity) -> Vec<(&PropSpec, ScalarKey)> {
        let mut out = Vec::with_capacity(e.properties.len() + 1);
        for (name, value) in &e.properties {
            let Some(spec) = self.props.get(name) else { continue };
            match value {
                Value::Array(items) => {
                    let mut keys: Vec<ScalarKey> =
                        items.iter().filter_map(|i| ScalarKey::of(i, spec.date_time)).collect();
                    keys.sort();
                    keys.dedup();
                    out.extend(keys.into_iter().map(|k| (spec, k)));
                }
                v => out.extend(ScalarKey::of(v, spec.date_time).map(|k| (spec, k))),
            }
        }
        if let (Some(title), Some(spec)) = (&e.title, &self.title) {
            out.push((spec, ScalarKey::Str(Arc::from(title.as_str()))));
        }
        if let Some(spec) = &self.team {
            let mut teams: Vec<&String> = e.team.iter().collect();
            teams.sort();
            teams.dedup();
            out.extend(teams.into_iter().map(|t| (spec, ScalarKey::Str(Arc::from(t.as_str())))));
        }
        out
    }
}

/// The copy of `key` the index already holds, if an entry has that value: a string value repeated across
/// entities (a version, a region) is then kept once.
pub fn held_value(set: &OrdSet<Entry>, key: &ScalarKey) -> Option<ScalarKey> {
    if !matches!(key, ScalarKey::Str(_)) {
        return None;
    }
    set.get_next(&RunStart(key)).filter(|e| &e.value == key).map(|e| e.value.clone())
}

/// A probe that sorts just before every entry of its value (the start of that value's run): one descent
/// finds the run, with no entry (and no identifier) to allocate.
struct RunStart<'a>(&'a ScalarKey);

impl equivalent::Equivalent<Entry> for RunStart<'_> {
    fn equivalent(&self, _: &Entry) -> bool {
        false
    }
}

impl equivalent::Comparable<Entry> for RunStart<'_> {
    fn compare(&self, entry: &Entry) -> Ordering {
        self.0.cmp(&entry.value).then(Ordering::Less)
    }
}

/// Gives each run of equal values in sorted `entries` one shared copy of the value.
pub fn share_equal_values(entries: &mut [Entry]) {
    for i in 1..entries.len() {
        let (before, after) = entries.split_at_mut(i);
        if let (Some(prev), Some(this)) = (before.last(), after.first_mut()) {
            if prev.value == this.value {
                this.value = prev.value.clone();
            }
        }
    }
}

/// Identifiers whose value for the property equals `key`.
pub fn equal<'s, 'k>(set: &'s OrdSet<Entry>, key: &'k ScalarKey) -> impl Iterator<Item = &'s Arc<str>> + use<'s, 'k> {
    let start = Entry { value: key.clone(), id: Arc::from("") };
    set.range((Bound::Included(start), Bound::Unbounded)).take_while(move |e| &e.value == key).map(|e| &e.id)
}

/// Identifiers whose value lies within the bounds (of one key kind), in value order.
pub fn range<'a>(
    set: &'a OrdSet<Entry>,
    low: Bound<ScalarKey>,
    high: Bound<ScalarKey>,
) -> impl Iterator<Item = &'a Arc<str>> + 'a {
    let start = match &low {
        Bound::Included(k) | Bound::Excluded(k) => Bound::Included(Entry { value: k.clone(), id: Arc::from("") }),
        Bound::Unbounded => Bound::Unbounded,
    };
    let kind = match (&low, &high) {
        (Bound::Included(k) | Bound::Excluded(k), _) | (_, Bound::Included(k) | Bound::Excluded(k)) => Some(k.rank()),
        _ => None,
    };
    set.range((start, Bound::Unbounded))
        .skip_while(move |e| matches!(&low, Bound::Excluded(k) if &e.value == k))
        .take_while(move |e| match &high {
            Bound::Included(k) => &e.value <= k,
            Bound::Excluded(k) => &e.value < k,
            Bound::Unbounded => true,
        })
        .filter(move |e| kind.is_none_or(|r| e.value.rank() == r))
        .map(|e| &e.id)
}

/// Identifiers whose string value starts with `prefix`.
pub fn prefixed<'s, 'p>(set: &'s OrdSet<Entry>, prefix: &'p str) -> impl Iterator<Item = &'s Arc<str>> + use<'s, 'p> {
    let start = Entry { value: ScalarKey::Str(Arc::from(prefix)), id: Arc::from("") };
    set.range((Bound::Included(start), Bound::Unbounded))
        .take_while(move |e| matches!(&e.value, ScalarKey::Str(s) if s.starts_with(prefix)))
        .map(|e| &e.id)
}
