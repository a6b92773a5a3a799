//! Aggregations over the entities a query matches (`POST /v1/entities/aggregate`): counts, sums, averages,
//! extremes and medians of a number property, and value counts (facets) by property, relation or scorecard.
//! Entities are visited without being collected.

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use berth_model::query::Query;
use berth_model::{DomainError, Entity, Timestamp};
use serde_json::{Value, json};

use crate::State;
use crate::search::for_each_match;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Count,
    Average,
    Sum,
    Min,
    Max,
    Median,
    CountValues,
}

impl Func {
    pub fn parse(s: &str) -> Option<Func> {
        Some(match s {
            "count" => Func::Count,
            "average" => Func::Average,
            "sum" => Func::Sum,
            "min" => Func::Min,
            "max" => Func::Max,
            "median" => Func::Median,
            "countValues" => Func::CountValues,
            _ => return None,
        })
    }
}

/// The unit an `average` is taken per (`total`: the plain mean, or the plain count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    Hour,
    Day,
    Week,
    Month,
    Total,
}

impl Per {
    pub fn parse(s: &str) -> Option<Per> {
        Some(match s {
            "hour" => Per::Hour,
            "day" => Per::Day,
            "week" => Per::Week,
            "month" => Per::Month,
            "total" => Per::Total,
            _ => return None,
        })
    }

    fn millis(self) -> Option<i64> {
        Some(match self {
            Per::Hour => 3_600_000,
            Per::Day => 86_400_000,
            Per::Week => 7 * 86_400_000,
            Per::Month => 30 * 86_400_000,
            Per::Total => return None,
        })
    }
}

/// What `countValues` groups by.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupBy {
    Property(String),
    Relation(String),
    Scorecard { scorecard: String, rule: Option<String> },
}

#[derive(Clone, Debug)]
pub struct Aggregation {
    pub func: Func,
    pub query: Query,
    /// The number property of `sum`, `average`, `min`, `max`, `median`.
    pub property: Option<String>,
    pub group_by: Option<GroupBy>,
    pub per: Option<Per>,
    /// The date-time an `average` per unit measures its time span by (default `$createdAt`).
    pub measure_time_by: Option<String>,
}

/// The answer: `result` (a number, `null` when nothing was measured, or for `countValues` an object of
/// value → count), the value counts in descending order for `countValues`, and the blueprints that matched.
#[derive(Debug)]
pub struct Aggregated {
    pub result: Value,
    pub values: Option<Vec<(Value, usize)>>,
    pub matching: Vec<String>,
}

/// Whole-blueprint counts and facets read from the value counts instead of visiting every entity: a count of
/// `$blueprint = B` (optionally with one `=` / `in` rule on a counted property holding one scalar: an enum or
/// a boolean), and `countValues` of such a property over the whole blueprint. `None` when the query is of another shape.
fn from_index(state: &State, agg: &Aggregation) -> Option<Aggregated> {
    use berth_model::query::{Combinator, Meta, Op, Operand, Rule, Target};

    use crate::index::ScalarKey;
    let rules: Vec<&Rule> = match &agg.query {
        Query::Group { combinator: Combinator::And, rules } => {
            rules.iter().map(|q| if let Query::Rule(r) = q { Some(r) } else { None }).collect::<Option<Vec<_>>>()?
        }
        Query::Rule(r) => vec![r],
        _ => return None,
    };
    let is_blueprint = |r: &Rule| {
        matches!(
            r,
            Rule { target: Target::Meta(Meta::Blueprint), op: Op::Eq, operand: Operand::Scalar(Value::String(_)) }
        )
    };
    let blueprint = match rules.iter().find(|r| is_blueprint(r))? {
        Rule { operand: Operand::Scalar(Value::String(b)), .. } => b.as_str(),
        _ => return None,
    };
    let others: Vec<&Rule> = rules.iter().copied().filter(|r| !is_blueprint(r)).collect();
    let bp = state.blueprint(blueprint)?;
    // A property holding one scalar (not an array, not a date-time): one index entry per entity with a value.
    let single_scalar = |p: &str| {
        bp.def
            .schema
            .properties
            .get(p)
            .and_then(|d| d.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t != "array")
            && !state.is_date_time(blueprint, p)
            && state.is_counted(blueprint, p)
    };
    let total = state.entity_count(blueprint);
    let matching = vec![blueprint.to_string()];
    let no_counts = imbl::OrdMap::new();
    match (agg.func, others.as_slice(), &agg.group_by) {
        (Func::Count, [], _) => Some(Aggregated { result: json!(total), values: None, matching }),
        (Func::Count, ranges, _)
            if !ranges.is_empty() && ranges.iter().all(|r| matches!(r.op, Op::Gt | Op::Ge | Op::Lt | Op::Le)) =>
        {
            let count = count_number_range(state, blueprint, ranges)?;
            Some(Aggregated { result: json!(count), values: None, matching })
        }
        (Func::Count, [rule], _) => {
            let Target::Property(p) = &rule.target else { return None };
            if !single_scalar(p) {
                return None;
            }
            let counts = state.value_counts(blueprint, p).unwrap_or(&no_counts);
            let wanted: Vec<&Value> = match (&rule.op, &rule.operand) {
                (Op::Eq, Operand::Scalar(v)) if !v.is_null() => vec![v],
                (Op::In, Operand::List(l)) if l.iter().all(|v| !v.is_null()) => l.iter().collect(),
                _ => return None,
            };
            let mut keys: Vec<ScalarKey> = wanted.into_iter().filter_map(|v| ScalarKey::of(v, false)).collect();
            keys.sort();
            keys.dedup();
            let count: usize = keys.iter().map(|k| counts.get(k).copied().unwrap_or(0)).sum();
            Some(Aggregated { result: json!(count), values: None, matching })
        }
        (Func::CountValues, [], Some(GroupBy::Property(p))) if single_scalar(p) => {
            let by_value = state.value_counts(blueprint, p).unwrap_or(&no_counts);
            let mut counts: Vec<(Value, usize)> = by_value.iter().map(|(k, n)| (key_value(k), *n)).collect();
            let with_value: usize = counts.iter().map(|(_, n)| n).sum();
            let mut object = serde_json::Map::new();
            for (value, n) in &counts {
                let key = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                object.insert(key, json!(n));
            }
            if total > with_value {
                counts.push((Value::Null, total - with_value));
            }
            counts.sort_by(|a, b| {
                b.1.cmp(&a.1)
                    .then(a.0.is_null().cmp(&b.0.is_null()))
                    .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
            });
            Some(Aggregated { result: Value::Object(object), values: Some(counts), matching })
        }
        _ => None,
    }
}

/// How many entities have a number property within the bounds that `rules` (all `>`, `>=`, `<`, `<=` on the
/// same `number` property) set, counted on the property's ordered index. `None` for any other shape.
fn count_number_range(state: &State, blueprint: &str, rules: &[&berth_model::query::Rule]) -> Option<usize> {
    use std::ops::Bound::{Excluded, Included, Unbounded};

    use berth_model::query::{Bound, Op, Operand, Target};

    use crate::index::{Entry, ScalarKey};
    let Target::Property(p) = &rules.first()?.target else { return None };
    let def = state.blueprint(blueprint)?.def.schema.properties.get(p)?;
    if def.get("type").and_then(Value::as_str) != Some("number") {
        return None;
    }
    let (mut lo, mut hi): (std::ops::Bound<f64>, std::ops::Bound<f64>) = (Unbounded, Unbounded);
    for rule in rules {
        let (Target::Property(q), Operand::Bound(Bound::Number(x))) = (&rule.target, &rule.operand) else {
            return None;
        };
        let x = Some(*x).filter(|x| x.is_finite() && q == p)?;
        // The tighter of two bounds on one side wins.
        match rule.op {
            Op::Gt | Op::Ge => {
                let b = if rule.op == Op::Gt { Excluded(x) } else { Included(x) };
                lo = match (lo, b) {
                    (Unbounded, b) => b,
                    (Included(a) | Excluded(a), b @ (Included(y) | Excluded(y))) if y > a => b,
                    (Included(a), Excluded(y)) if y == a => Excluded(y),
                    (old, _) => old,
                };
            }
            Op::Lt | Op::Le => {
                let b = if rule.op == Op::Lt { Excluded(x) } else { Included(x) };
                hi = match (hi, b) {
                    (Unbounded, b) => b,
                    (Included(a) | Excluded(a), b @ (Included(y) | Excluded(y))) if y < a => b,
                    (Included(a), Excluded(y)) if y == a => Excluded(y),
                    (old, _) => old,
                };
            }
            _ => return None,
        }
    }
    let index = state.property_index(blueprint, p)?;
    // Entries order by (value, identifier): the empty identifier is below every entry of a value, and
    // MAX_ID above.
    let entry = |x: f64, id: &str| Entry { value: ScalarKey::Num(if x == 0.0 { 0.0 } else { x }), id: id.into() };
    let from = match lo {
        Included(x) => Included(entry(x, "")),
        Excluded(x) => Excluded(entry(x, crate::search::MAX_ID)),
        Unbounded => Included(entry(f64::NEG_INFINITY, "")),
    };
    let to = match hi {
        Included(x) => Included(entry(x, crate::search::MAX_ID)),
        Excluded(x) => Excluded(entry(x, "")),
        Unbounded => Included(entry(f64::INFINITY, crate::search::MAX_ID)),
    };
    // An empty range (ordered sets refuse a start above the end).
    match (&from, &to) {
        (Included(a), Included(b)) if a > b => return Some(0),
        (Included(a) | Excluded(a), Included(b) | Excluded(b))
            if a >= b && !matches!((&from, &to), (Included(_), Included(_))) =>
        {
            return Some(0);
        }
        _ => {}
    }
    Some(index.range((from, to)).count())
}

/// An index key back as the JSON value it came from.
fn key_value(k: &crate::index::ScalarKey) -> Value {
    use crate::index::ScalarKey;
    match k {
        ScalarKey::Bool(b) => Value::Bool(*b),
        ScalarKey::Num(n) => facet_number(*n),
        ScalarKey::Time(ms) => json!(ms),
        ScalarKey::Str(s) => Value::String(s.to_string()),
    }
}

/// A number as a facet value: integral numbers as integers (`3`, not `3.0`), whichever way they were written.
fn facet_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 { json!(n as i64) } else { json_number(n) }
}

fn number(state: &State, e: &Entity, property: &str) -> Option<f64> {
    let n = match e.properties.get(property) {
        Some(v) => v.as_f64(),
        None => crate::search::derived_value(state, e, property).and_then(|v| v.as_f64()),
    };
    n.filter(|n| n.is_finite())
}

fn time_of(e: &Entity, measure: Option<&str>) -> Option<Timestamp> {
    match measure {
        None | Some("$createdAt") => Some(e.created_at),
        Some("$updatedAt") => Some(e.updated_at),
        Some(p) => e.properties.get(p).and_then(Value::as_str).and_then(Timestamp::parse),
    }
}

fn json_number(n: f64) -> Value {
    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
}

/// The median of `numbers` (sorted in place), `None` when there are none.
pub(crate) fn median(numbers: &mut [f64]) -> Option<f64> {
    if numbers.is_empty() {
        return None;
    }
    numbers.sort_by(f64::total_cmp);
    let mid = numbers.len() / 2;
    Some(if numbers.len().is_multiple_of(2) { (numbers[mid - 1] + numbers[mid]) / 2.0 } else { numbers[mid] })
}

/// Runs an aggregation at `now` (for date presets in the query and averages per unit of time).
pub fn aggregate<'s>(state: &'s State, agg: &Aggregation, now: Timestamp) -> Result<Aggregated, DomainError> {
    let needs_property = matches!(agg.func, Func::Sum | Func::Min | Func::Max | Func::Median)
        || (agg.func == Func::Average && agg.property.is_some());
    if needs_property && agg.property.is_none() {
        return Err(DomainError::BadRequest("this aggregation needs `property` (a number property)".into()));
    }
    if agg.func == Func::CountValues && agg.group_by.is_none() {
        return Err(DomainError::BadRequest("countValues needs `property`, `relation` or `scorecard`".into()));
    }
    if let Some(fast) = from_index(state, agg) {
        return Ok(fast);
    }
    let mut count = 0usize;
    let mut numbers: Vec<f64> = Vec::new();
    let mut earliest: Option<Timestamp> = None;
    // Strings (the usual facet values) are counted by reference, without allocating per entity.
    let mut by_str: HashMap<&'s str, usize> = HashMap::new();
    let mut others: BTreeMap<String, (Value, usize)> = BTreeMap::new();
    fn bump<'a>(by_str: &mut HashMap<&'a str, usize>, others: &mut BTreeMap<String, (Value, usize)>, v: &'a Value) {
        match v {
            Value::String(s) => *by_str.entry(s.as_str()).or_default() += 1,
            Value::Number(n) => {
                let v = facet_number(n.as_f64().unwrap_or(f64::NAN));
                others.entry(v.to_string()).or_insert((v, 0)).1 += 1
            }
            other => others.entry(other.to_string()).or_insert((other.clone(), 0)).1 += 1,
        }
    }
    static NULL: Value = Value::Null;
    // Where scorecard levels are judged, for a count of values by scorecard.
    let cards = crate::search::Ctx::empty(state, now);
    let matching = for_each_match(state, &agg.query, now, |e: &'s Arc<Entity>| {
        count += 1;
        if let Some(p) = &agg.property {
            if agg.func != Func::CountValues {
                if let Some(n) = number(state, e, p) {
                    numbers.push(n);
                }
            }
        }
        if agg.func == Func::Average {
            if let Some(t) = time_of(e, agg.measure_time_by.as_deref()) {
                earliest = Some(earliest.map_or(t, |x| x.min(t)));
            }
        }
        match &agg.group_by {
            Some(GroupBy::Property(p)) | Some(GroupBy::Relation(p)) => {
                let is_property = matches!(agg.group_by, Some(GroupBy::Property(_)));
                if is_property && !e.properties.contains_key(p) {
                    // A derived value is made here, so it is counted by value rather than by reference.
                    if let Some(v) = crate::search::derived_value(state, e, p) {
                        let items = match v {
                            Value::Array(items) if !items.is_empty() => items,
                            Value::Array(_) => vec![Value::Null],
                            one => vec![one],
                        };
                        for v in items {
                            others.entry(v.to_string()).or_insert((v, 0)).1 += 1;
                        }
                        return;
                    }
                }
                let v = if is_property { e.properties.get(p) } else { e.relations.get(p) };
                match v {
                    Some(Value::Array(items)) if !items.is_empty() => {
                        items.iter().for_each(|i| bump(&mut by_str, &mut others, i))
                    }
                    Some(Value::Array(_)) | Some(Value::Null) | None => bump(&mut by_str, &mut others, &NULL),
                    Some(v) => bump(&mut by_str, &mut others, v),
                }
            }
            Some(GroupBy::Scorecard { scorecard, rule }) => {
                let v = crate::search::scorecard_value(&cards, e, scorecard, rule.as_deref()).unwrap_or(Value::Null);
                others.entry(v.to_string()).or_insert((v, 0)).1 += 1;
            }
            None => {}
        }
    })?;

    let units = |per: Per| -> f64 {
        let (Some(unit), Some(first)) = (per.millis(), earliest) else { return 1.0 };
        let span = (now.millis() - first.millis()).max(0);
        ((span as f64) / (unit as f64)).ceil().max(1.0)
    };
    let result = match agg.func {
        Func::Count => json!(count),
        Func::Average => match (&agg.property, agg.per.unwrap_or(Per::Total)) {
            (None, Per::Total) => json!(count),
            (None, per) => json_number(count as f64 / units(per)),
            (Some(_), _) if numbers.is_empty() => Value::Null,
            (Some(_), Per::Total) => json_number(numbers.iter().sum::<f64>() / numbers.len() as f64),
            (Some(_), per) => json_number(numbers.iter().sum::<f64>() / units(per)),
        },
        Func::Sum => json_number(numbers.iter().sum()),
        Func::Min => numbers.iter().copied().reduce(f64::min).map_or(Value::Null, json_number),
        Func::Max => numbers.iter().copied().reduce(f64::max).map_or(Value::Null, json_number),
        Func::Median => median(&mut numbers).map_or(Value::Null, json_number),
        Func::CountValues => {
            for (s, n) in by_str.drain() {
                others
                    .entry(Value::String(s.to_string()).to_string())
                    .or_insert((Value::String(s.to_string()), 0))
                    .1 += n;
            }
            let mut object = serde_json::Map::new();
            for (value, n) in others.values() {
                let key = match value {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                object.insert(key, json!(n));
            }
            Value::Object(object)
        }
    };
    let values = (agg.func == Func::CountValues).then(|| {
        let mut v: Vec<(Value, usize)> = others.into_values().collect();
        // By count, then values before "no value", then by value.
        v.sort_by(|a, b| {
            b.1.cmp(&a.1).then(a.0.is_null().cmp(&b.0.is_null())).then_with(|| a.0.to_string().cmp(&b.0.to_string()))
        });
        v
    });
    Ok(Aggregated { result, values, matching })
}
