//! The search rules language, parsed once into a typed AST.
//!
//! Grammar (JSON):
//! ```text
//! query    := { "combinator": "and" | "or", "rules": [ node, ... ] }      ("conditions" is accepted for "rules")
//! node     := query | rule
//! rule     := { "property": NAME, "operator": OP, "value"?: VALUE }
//!           | { "relation": NAME, "operator": "=" | "!=" | "in" | "notIn" | "isEmpty" | "isNotEmpty", "value"?: VALUE }
//!           | { "propertySchema": {"type": TYPE, "format"?: FORMAT}, "operator": "=" | "!=" | "contains", "value": VALUE }
//!           | { "scorecard": ID, "scorecardRule"?: ID, "operator": "=" | "!=" | "in" | "notIn" | "isEmpty" | "isNotEmpty", "value"?: VALUE }
//!           | { "operator": "relatedTo", "blueprint": BP, "value": ID | [ID, ...],
//!               "direction"?: "upstream" | "downstream", "required"?: BOOL }
//!           | { "operator": "matchAny", "property": { "path": [STEP, ...], "fromBlueprint"?: BP }, "value": ID | [ID, ...] }
//! STEP     := RELATION | { "relation": RELATION, "maxHops": 1..15 }          (at most one step with maxHops)
//! NAME     := a property identifier, or a meta-property: $identifier $title $team $icon $blueprint
//!             $createdAt $updatedAt $createdBy $updatedBy $datasource
//! OP       := "=" "!=" ">" ">=" "<" "<=" "in" "notIn" "contains" "doesNotContains" "beginsWith"
//!             "doesNotBeginsWith" "endsWith" "doesNotEndsWith" "containsAny" "isEmpty" "isNotEmpty"
//!             "between" "notBetween" "isExpired" "isNotExpired"
//! ```
//! - `in`, `notIn`, `containsAny` take an array; `between` / `notBetween` (and `=` given an object) take
//!   `{"from": DATE, "to": DATE}` or `{"preset": PRESET, "timeZone"?: IANA}` (see [`crate::date_preset`]);
//!   `isEmpty`, `isNotEmpty`, `isExpired`, `isNotExpired` take no value; the comparison operators take a
//!   number or a date-time string.
//! - `relatedTo` matches the entities reachable from the given entities of `blueprint` through relations:
//!   `upstream` follows their relations (what they depend on), `downstream` follows relations pointing at
//!   them (what depends on them), neither means both; `required` follows only required relations; at most
//!   15 hops. `matchAny` matches an entity when following `path` from it reaches one of the given entities.
//! - Rules that need the catalog or the clock to be evaluated (graph rules, date presets) carry a `slot`,
//!   unique within the query, where the engine keeps what it computed for them.
//! - Contextual values (`{"context": "user" | "userTeams", "property": ...}`) are resolved for the caller
//!   before parsing ([`crate::query_context`]); where no caller is known (queries inside entity writes), the
//!   parser refuses them with a 400 that says so.
//!
//! A query that does not parse gives a [`QueryError`] naming the offending node by its path, such as
//! `rules[2].rules[0]`, and what was expected there.

use serde_json::{Map, Value};

use crate::Timestamp;
use crate::date_preset::{DatePreset, PRESET_NAMES, known_time_zone};
use crate::schema::kind_of;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combinator {
    And,
    Or,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meta {
    Identifier,
    Title,
    Team,
    Icon,
    Blueprint,
    CreatedAt,
    UpdatedAt,
    CreatedBy,
    UpdatedBy,
    Datasource,
}

impl Meta {
    pub fn parse(name: &str) -> Option<Meta> {
        Some(match name {
            "$identifier" => Meta::Identifier,
            "$title" => Meta::Title,
            "$team" => Meta::Team,
            "$icon" => Meta::Icon,
            "$blueprint" => Meta::Blueprint,
            "$createdAt" => Meta::CreatedAt,
            "$updatedAt" => Meta::UpdatedAt,
            "$createdBy" => Meta::CreatedBy,
            "$updatedBy" => Meta::UpdatedBy,
            "$datasource" => Meta::Datasource,
            _ => return None,
        })
    }
}

/// What a rule looks at.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Property(String),
    Meta(Meta),
    Relation(String),
    /// Every property of the blueprint with this type (and format).
    PropertySchema {
        kind: String,
        format: Option<String>,
    },
    /// An entity's level on a scorecard, or its status on one rule of it.
    Scorecard {
        scorecard: String,
        rule: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Contains,
    DoesNotContain,
    BeginsWith,
    DoesNotBeginWith,
    EndsWith,
    DoesNotEndWith,
    ContainsAny,
    IsEmpty,
    IsNotEmpty,
    Between,
    NotBetween,
    IsExpired,
    IsNotExpired,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "=" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "in" => Op::In,
            "notIn" => Op::NotIn,
            "contains" => Op::Contains,
            "doesNotContains" => Op::DoesNotContain,
            "beginsWith" => Op::BeginsWith,
            "doesNotBeginsWith" => Op::DoesNotBeginWith,
            "endsWith" => Op::EndsWith,
            "doesNotEndsWith" => Op::DoesNotEndWith,
            "containsAny" => Op::ContainsAny,
            "isEmpty" => Op::IsEmpty,
            "isNotEmpty" => Op::IsNotEmpty,
            "between" => Op::Between,
            "notBetween" => Op::NotBetween,
            "isExpired" => Op::IsExpired,
            "isNotExpired" => Op::IsNotExpired,
            _ => return None,
        })
    }
}

/// A rule's operand, checked against its operator.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    None,
    /// A scalar (string, number, boolean or null).
    Scalar(Value),
    /// A number or a date-time, for `>`, `>=`, `<`, `<=`.
    Bound(Bound),
    List(Vec<Value>),
    Range {
        from: Timestamp,
        to: Timestamp,
    },
    /// A date preset, resolved by the engine against the time of the search.
    Preset {
        preset: DatePreset,
        time_zone: String,
        slot: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Bound {
    Number(f64),
    Time(Timestamp),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub target: Target,
    pub op: Op,
    pub operand: Operand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Upstream,
    Downstream,
}

/// One step of a `matchAny` path: a relation followed 1 to `max_hops` times.
#[derive(Clone, Debug, PartialEq)]
pub struct PathStep {
    pub relation: String,
    pub max_hops: u32,
}

/// The most hops a graph rule follows.
pub const MAX_HOPS: u32 = 15;

#[derive(Clone, Debug, PartialEq)]
pub enum GraphKind {
    RelatedTo { blueprint: String, identifiers: Vec<String>, direction: Option<Direction>, required: bool },
    MatchAny { from_blueprint: Option<String>, path: Vec<PathStep>, identifiers: Vec<String> },
}

/// A rule answered from the relation graph; the engine computes its matching set once per search.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphRule {
    pub slot: usize,
    pub kind: GraphKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    Group { combinator: Combinator, rules: Vec<Query> },
    Rule(Rule),
    Graph(GraphRule),
}

/// A query that does not parse: where, and what was wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct QueryError {
    pub path: String,
    pub message: String,
}

/// The deepest nesting of groups accepted.
pub const MAX_DEPTH: usize = 32;
/// The most nodes (groups and rules) one query holds.
pub const MAX_NODES: usize = 1_000;
/// The most values one `in` / `notIn` / `containsAny` list, or one graph rule's identifiers, holds.
pub const MAX_LIST: usize = 10_000;
/// The most graph rules (`relatedTo`, `matchAny`) one query holds: each walks the relation graph.
pub const MAX_GRAPH_RULES: usize = 8;

/// What parsing has counted so far, to bound a query's cost.
#[derive(Default)]
struct Budget {
    slots: usize,
    nodes: usize,
    graph_rules: usize,
}

impl Query {
    /// Parses a query (`{"combinator", "rules"}`).
    pub fn parse(v: &Value) -> Result<Query, QueryError> {
        parse_node(v, "query", 0, &mut Budget::default())
    }

    /// `self and other` as one query: an `and` group's rules stay at the top level (where the planner and
    /// the `$blueprint` filter look), and `other`'s slots are renumbered after `self`'s so both keep theirs.
    pub fn and(self, mut other: Query) -> Query {
        other.shift_slots(self.slots());
        let mut rules = self.into_and_rules();
        rules.extend(other.into_and_rules());
        Query::Group { combinator: Combinator::And, rules }
    }

    /// `any of queries` as one query, each query's slots renumbered so none collide.
    pub fn any(queries: Vec<Query>) -> Query {
        let mut next = 0;
        let rules = queries
            .into_iter()
            .map(|mut q| {
                q.shift_slots(next);
                next = next.max(q.slots());
                q
            })
            .collect();
        Query::Group { combinator: Combinator::Or, rules }
    }

    /// A query no entity matches.
    pub fn nothing() -> Query {
        Query::Group { combinator: Combinator::Or, rules: Vec::new() }
    }

    /// The rule `$blueprint = blueprint`.
    pub fn of_blueprint(blueprint: &str) -> Query {
        Query::Rule(Rule {
            target: Target::Meta(Meta::Blueprint),
            op: Op::Eq,
            operand: Operand::Scalar(Value::String(blueprint.to_string())),
        })
    }

    fn into_and_rules(self) -> Vec<Query> {
        match self {
            Query::Group { combinator: Combinator::And, rules } => rules,
            other => vec![other],
        }
    }

    fn shift_slots(&mut self, by: usize) {
        match self {
            Query::Group { rules, .. } => rules.iter_mut().for_each(|q| q.shift_slots(by)),
            Query::Graph(g) => g.slot += by,
            Query::Rule(Rule { operand: Operand::Preset { slot, .. }, .. }) => *slot += by,
            Query::Rule(_) => {}
        }
    }

    /// How many slots the query's rules use (see the module docs).
    pub fn slots(&self) -> usize {
        let mut n = 0;
        self.visit(&mut |q| match q {
            Query::Graph(g) => n = n.max(g.slot + 1),
            Query::Rule(Rule { operand: Operand::Preset { slot, .. }, .. }) => n = n.max(slot + 1),
            _ => {}
        });
        n
    }

    /// Every node, depth first.
    pub fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Query)) {
        f(self);
        if let Query::Group { rules, .. } = self {
            rules.iter().for_each(|q| q.visit(f));
        }
    }

    /// Every property name a rule names (for checking them against a blueprint).
    pub fn properties(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk(&mut |r| {
            if let Target::Property(p) = &r.target {
                out.push(p.as_str());
            }
        });
        out
    }

    /// Every relation name a rule names.
    pub fn relations(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk(&mut |r| {
            if let Target::Relation(p) = &r.target {
                out.push(p.as_str());
            }
        });
        out
    }

    fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Rule)) {
        match self {
            Query::Group { rules, .. } => rules.iter().for_each(|q| q.walk(f)),
            Query::Rule(r) => f(r),
            Query::Graph(_) => {}
        }
    }

    /// The blueprints a top-level `$blueprint =` / `in` rule (under `and`) restricts the query to.
    pub fn blueprint_filter(&self) -> Option<Vec<String>> {
        let Query::Group { combinator: Combinator::And, rules } = self else {
            return None;
        };
        rules.iter().find_map(|q| match q {
            Query::Rule(Rule {
                target: Target::Meta(Meta::Blueprint),
                op: Op::Eq,
                operand: Operand::Scalar(Value::String(b)),
            }) => Some(vec![b.clone()]),
            Query::Rule(Rule { target: Target::Meta(Meta::Blueprint), op: Op::In, operand: Operand::List(list) }) => {
                // Each blueprint once, in the order first named: a repeated name is not searched twice.
                let mut seen = std::collections::HashSet::new();
                Some(list.iter().filter_map(Value::as_str).filter(|b| seen.insert(*b)).map(str::to_string).collect())
            }
            _ => None,
        })
    }
}

fn err(path: &str, message: impl Into<String>) -> QueryError {
    QueryError { path: path.to_string(), message: message.into() }
}

/// The keys only a rule has: an object with one of them and a group key is neither, and is refused (a reader
/// that saw the rule would disagree with one that saw the group).
const RULE_KEYS: [&str; 8] =
    ["property", "relation", "operator", "value", "propertySchema", "scorecard", "scorecardRule", "blueprint"];

fn parse_node(v: &Value, path: &str, depth: usize, budget: &mut Budget) -> Result<Query, QueryError> {
    if depth > MAX_DEPTH {
        return Err(err(path, format!("groups nest deeper than {MAX_DEPTH} levels")));
    }
    budget.nodes += 1;
    if budget.nodes > MAX_NODES {
        return Err(err(path, format!("a query holds at most {MAX_NODES} rules and groups")));
    }
    let obj = v.as_object().ok_or_else(|| err(path, format!("expected an object, got {}", kind_of(v))))?;
    if obj.contains_key("combinator") || obj.contains_key("rules") || obj.contains_key("conditions") {
        if let Some(key) = RULE_KEYS.iter().find(|k| obj.contains_key(**k)) {
            return Err(err(
                path,
                format!("an object is a group (`combinator`, `rules`) or a rule (`{key}`, ...), not both"),
            ));
        }
        return parse_group(obj, path, depth, budget);
    }
    if let Some(op @ ("relatedTo" | "matchAny")) = obj.get("operator").and_then(Value::as_str) {
        budget.graph_rules += 1;
        if budget.graph_rules > MAX_GRAPH_RULES {
            return Err(err(path, format!("a query holds at most {MAX_GRAPH_RULES} relatedTo / matchAny rules")));
        }
        let slots = &mut budget.slots;
        return if op == "relatedTo" { parse_related_to(obj, path, slots) } else { parse_match_any(obj, path, slots) };
    }
    parse_rule(obj, path, &mut budget.slots).map(Query::Rule)
}

fn next_slot(slots: &mut usize) -> usize {
    *slots += 1;
    *slots - 1
}

fn too_long(path: &str) -> QueryError {
    err(path, format!("`value` holds at most {MAX_LIST} items"))
}

/// `value` as one identifier or a non-empty array of them.
fn identifiers(obj: &Map<String, Value>, path: &str) -> Result<Vec<String>, QueryError> {
    match obj.get("value") {
        Some(Value::String(id)) => Ok(vec![id.clone()]),
        Some(Value::Array(items)) if items.len() > MAX_LIST => Err(too_long(path)),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| err(path, "`value` must be an identifier or an array of identifiers")),
        Some(Value::Object(_)) => {
            Err(err(path, "contextual values ({\"context\": ...}) are not supported in this query"))
        }
        _ => Err(err(path, "`value` must be an identifier or a non-empty array of identifiers")),
    }
}

fn parse_related_to(obj: &Map<String, Value>, path: &str, slots: &mut usize) -> Result<Query, QueryError> {
    let blueprint = match obj.get("blueprint") {
        Some(Value::String(b)) if !b.is_empty() => b.clone(),
        _ => return Err(err(path, "`relatedTo` needs `blueprint`: the blueprint of the entities in `value`")),
    };
    let direction = match obj.get("direction") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if d == "upstream" => Some(Direction::Upstream),
        Some(Value::String(d)) if d == "downstream" => Some(Direction::Downstream),
        Some(other) => {
            return Err(err(path, format!("`direction` must be \"upstream\" or \"downstream\", got {other}")));
        }
    };
    let required = match obj.get("required") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(err(path, format!("`required` must be a boolean, got {}", kind_of(other)))),
    };
    let identifiers = identifiers(obj, path)?;
    let kind = GraphKind::RelatedTo { blueprint, identifiers, direction, required };
    Ok(Query::Graph(GraphRule { slot: next_slot(slots), kind }))
}

fn parse_match_any(obj: &Map<String, Value>, path: &str, slots: &mut usize) -> Result<Query, QueryError> {
    let spec = obj.get("property").and_then(Value::as_object).ok_or_else(|| {
        err(path, "`matchAny` needs `property`: {\"path\": [relation, ...], \"fromBlueprint\"?: blueprint}")
    })?;
    let steps = spec
        .get("path")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| err(path, "`property.path` must be a non-empty array of relations"))?;
    let mut out = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let step = match step {
            Value::String(r) => PathStep { relation: r.clone(), max_hops: 1 },
            Value::Object(o) => {
                let relation = o
                    .get("relation")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(path, format!("`property.path[{i}]` needs `relation` (a string)")))?;
                let max_hops = match o.get("maxHops") {
                    None => 1,
                    Some(v) => v
                        .as_u64()
                        .filter(|h| (1..=u64::from(MAX_HOPS)).contains(h))
                        .ok_or_else(|| err(path, format!("`property.path[{i}].maxHops` must be 1 to {MAX_HOPS}")))?
                        as u32,
                };
                PathStep { relation: relation.to_string(), max_hops }
            }
            other => {
                return Err(err(path, format!("`property.path[{i}]` must be a relation name, got {}", kind_of(other))));
            }
        };
        out.push(step);
    }
    if out.iter().filter(|s| s.max_hops > 1).count() > 1 {
        return Err(err(path, "`maxHops` may be given once per path"));
    }
    let from_blueprint = match spec.get("fromBlueprint") {
        None | Some(Value::Null) => None,
        Some(Value::String(b)) => Some(b.clone()),
        Some(other) => return Err(err(path, format!("`fromBlueprint` must be a string, got {}", kind_of(other)))),
    };
    let identifiers = identifiers(obj, path)?;
    let kind = GraphKind::MatchAny { from_blueprint, path: out, identifiers };
    Ok(Query::Graph(GraphRule { slot: next_slot(slots), kind }))
}

fn parse_group(obj: &Map<String, Value>, path: &str, depth: usize, budget: &mut Budget) -> Result<Query, QueryError> {
    let combinator = match obj.get("combinator") {
        Some(Value::String(c)) if c == "and" => Combinator::And,
        Some(Value::String(c)) if c == "or" => Combinator::Or,
        Some(other) => return Err(err(path, format!("`combinator` must be \"and\" or \"or\", got {other}"))),
        None => return Err(err(path, "a group needs a `combinator` (\"and\" or \"or\")")),
    };
    // Scorecard queries name their rules `conditions`.
    let rules = match obj.get("rules").or_else(|| obj.get("conditions")) {
        Some(Value::Array(rules)) => rules,
        Some(other) => return Err(err(path, format!("`rules` must be an array, got {}", kind_of(other)))),
        None => return Err(err(path, "a group needs `rules` (an array)")),
    };
    let prefix = if path == "query" { String::new() } else { format!("{path}.") };
    let rules = rules
        .iter()
        .enumerate()
        .map(|(i, r)| parse_node(r, &format!("{prefix}rules[{i}]"), depth + 1, budget))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Query::Group { combinator, rules })
}

fn parse_rule(obj: &Map<String, Value>, path: &str, slots: &mut usize) -> Result<Rule, QueryError> {
    let op_name = match obj.get("operator") {
        Some(Value::String(o)) => o.as_str(),
        Some(other) => return Err(err(path, format!("`operator` must be a string, got {}", kind_of(other)))),
        None => return Err(err(path, "a rule needs an `operator`")),
    };
    let mut op = Op::parse(op_name).ok_or_else(|| {
        err(
            path,
            format!(
                "unknown operator {op_name:?}; expected one of = != > >= < <= in notIn contains doesNotContains beginsWith doesNotBeginsWith endsWith doesNotEndsWith containsAny isEmpty isNotEmpty between notBetween isExpired isNotExpired relatedTo matchAny"
            ),
        )
    })?;
    let named: Vec<&str> =
        ["property", "relation", "propertySchema", "scorecard"].into_iter().filter(|k| obj.contains_key(*k)).collect();
    if named.len() > 1 {
        return Err(err(
            path,
            format!(
                "a rule names one of `property`, `relation`, `propertySchema`, `scorecard`, not {}",
                named.join(" and ")
            ),
        ));
    }
    if let Some(spec) = obj.get("propertySchema") {
        return parse_property_schema(spec, op, op_name, obj.get("value"), path);
    }
    if let Some(scorecard) = obj.get("scorecard") {
        return parse_scorecard_rule(obj, scorecard, op, op_name, path);
    }
    let target = match (obj.get("property"), obj.get("relation")) {
        (Some(Value::String(p)), None) => match p.strip_prefix('$') {
            Some(_) => Target::Meta(Meta::parse(p).ok_or_else(|| err(path, format!("unknown meta-property {p:?}")))?),
            None => Target::Property(p.clone()),
        },
        (None, Some(Value::String(r))) => Target::Relation(r.clone()),
        (Some(Value::Object(_)), None) => {
            return Err(err(path, "contextual properties ({\"context\": ...}) are not supported in this query"));
        }
        (Some(_), Some(_)) => return Err(err(path, "a rule names a `property` or a `relation`, not both")),
        (Some(other), None) | (None, Some(other)) => {
            return Err(err(path, format!("`property` / `relation` must be a string, got {}", kind_of(other))));
        }
        (None, None) => return Err(err(path, "a rule needs a `property` or a `relation`")),
    };
    // `=` with a date object is `between`.
    if op == Op::Eq && obj.get("value").is_some_and(Value::is_object) {
        op = Op::Between;
    }
    if matches!(target, Target::Relation(_))
        && !matches!(op, Op::Eq | Op::Ne | Op::In | Op::NotIn | Op::IsEmpty | Op::IsNotEmpty)
    {
        return Err(err(
            path,
            format!("operator {op_name:?} does not apply to a relation (use = != in notIn isEmpty isNotEmpty)"),
        ));
    }
    let value = obj.get("value");
    let operand = match op {
        Op::IsEmpty | Op::IsNotEmpty | Op::IsExpired | Op::IsNotExpired => Operand::None,
        Op::In | Op::NotIn | Op::ContainsAny => match value {
            Some(Value::Array(items)) if items.len() > MAX_LIST => return Err(too_long(path)),
            Some(Value::Array(items)) => {
                if let Some(bad) = items.iter().find(|v| v.is_array() || v.is_object()) {
                    return Err(err(path, format!("`value` items must be scalars, got {}", kind_of(bad))));
                }
                Operand::List(items.clone())
            }
            Some(other) => {
                return Err(err(path, format!("operator {op_name:?} needs an array `value`, got {}", kind_of(other))));
            }
            None => return Err(err(path, format!("operator {op_name:?} needs a `value` (an array)"))),
        },
        Op::Gt | Op::Ge | Op::Lt | Op::Le => match value {
            Some(Value::Number(n)) => Operand::Bound(Bound::Number(n.as_f64().unwrap_or(f64::NAN))),
            Some(Value::String(s)) => Operand::Bound(Bound::Time(Timestamp::parse(s).ok_or_else(|| {
                err(path, format!("operator {op_name:?} needs a number or an RFC 3339 date-time, got {s:?}"))
            })?)),
            Some(other) => {
                return Err(err(
                    path,
                    format!("operator {op_name:?} needs a number or a date-time, got {}", kind_of(other)),
                ));
            }
            None => return Err(err(path, format!("operator {op_name:?} needs a `value`"))),
        },
        Op::Between | Op::NotBetween => {
            let range = value.and_then(Value::as_object).ok_or_else(|| {
                err(path, format!("operator {op_name:?} needs a `value` of the form {{\"from\": DATE, \"to\": DATE}}"))
            })?;
            if let Some(preset) = range.get("preset") {
                let name = preset.as_str().unwrap_or_default();
                let preset = DatePreset::parse(name).ok_or_else(|| {
                    err(path, format!("unknown date preset {preset}; expected one of {PRESET_NAMES}"))
                })?;
                let time_zone = match range.get("timeZone") {
                    None | Some(Value::Null) => "UTC".to_string(),
                    Some(Value::String(tz)) if known_time_zone(tz) => tz.clone(),
                    Some(other) => {
                        return Err(err(
                            path,
                            format!("`value.timeZone` must be an IANA time zone such as Europe/Paris, got {other}"),
                        ));
                    }
                };
                return Ok(Rule { target, op, operand: Operand::Preset { preset, time_zone, slot: next_slot(slots) } });
            }
            let date = |k: &str| {
                range.get(k).and_then(Value::as_str).and_then(Timestamp::parse).ok_or_else(|| {
                    err(path, format!("`value.{k}` must be an RFC 3339 date-time such as 2024-01-01T00:00:00Z"))
                })
            };
            Operand::Range { from: date("from")?, to: date("to")? }
        }
        Op::Contains
        | Op::DoesNotContain
        | Op::BeginsWith
        | Op::DoesNotBeginWith
        | Op::EndsWith
        | Op::DoesNotEndWith => match value {
            Some(Value::String(s)) => Operand::Scalar(Value::String(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) if matches!(op, Op::Contains | Op::DoesNotContain) => {
                Operand::Scalar(v.clone())
            }
            Some(other) => {
                return Err(err(path, format!("operator {op_name:?} needs a string `value`, got {}", kind_of(other))));
            }
            None => return Err(err(path, format!("operator {op_name:?} needs a `value`"))),
        },
        Op::Eq | Op::Ne => match value {
            Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null)) => {
                Operand::Scalar(v.clone())
            }
            Some(other) => {
                return Err(err(path, format!("operator {op_name:?} needs a scalar `value`, got {}", kind_of(other))));
            }
            None => return Err(err(path, format!("operator {op_name:?} needs a `value`"))),
        },
    };
    Ok(Rule { target, op, operand })
}

fn parse_property_schema(
    spec: &Value,
    op: Op,
    op_name: &str,
    value: Option<&Value>,
    path: &str,
) -> Result<Rule, QueryError> {
    let spec =
        spec.as_object().ok_or_else(|| err(path, "`propertySchema` must be {\"type\": TYPE, \"format\"?: FORMAT}"))?;
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| err(path, "`propertySchema.type` (a string) is required"))?
        .to_string();
    let format = match spec.get("format") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) => Some(f.clone()),
        Some(other) => {
            return Err(err(path, format!("`propertySchema.format` must be a string, got {}", kind_of(other))));
        }
    };
    if !matches!(op, Op::Eq | Op::Ne | Op::Contains) {
        return Err(err(path, format!("operator {op_name:?} does not apply to `propertySchema` (use = != contains)")));
    }
    let operand = match value {
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null)) => Operand::Scalar(v.clone()),
        _ => return Err(err(path, format!("operator {op_name:?} needs a scalar `value`"))),
    };
    Ok(Rule { target: Target::PropertySchema { kind, format }, op, operand })
}

fn parse_scorecard_rule(
    obj: &Map<String, Value>,
    scorecard: &Value,
    op: Op,
    op_name: &str,
    path: &str,
) -> Result<Rule, QueryError> {
    let scorecard =
        scorecard.as_str().ok_or_else(|| err(path, "`scorecard` must be a scorecard identifier"))?.to_string();
    let rule = match obj.get("scorecardRule") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => Some(r.clone()),
        Some(other) => return Err(err(path, format!("`scorecardRule` must be a string, got {}", kind_of(other)))),
    };
    let operand = match (op, obj.get("value")) {
        (Op::IsEmpty | Op::IsNotEmpty, _) => Operand::None,
        (Op::Eq | Op::Ne, Some(v @ (Value::String(_) | Value::Null))) => Operand::Scalar(v.clone()),
        (Op::In | Op::NotIn, Some(Value::Array(items))) if items.iter().all(Value::is_string) => {
            Operand::List(items.clone())
        }
        _ => {
            return Err(err(
                path,
                format!(
                    "operator {op_name:?} on a scorecard: use = != with a level (or rule status), in notIn with an array, isEmpty isNotEmpty"
                ),
            ));
        }
    };
    Ok(Rule { target: Target::Scorecard { scorecard, rule }, op, operand })
}

/// One sort key of a search: a property or meta-property, ascending or descending.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub target: Target,
    pub descending: bool,
}

/// Parses Berth's sort extension: `[{"property": NAME, "order": "asc" | "desc"}, ...]` (at most 8 keys).
pub fn parse_sort(v: &Value) -> Result<Vec<SortKey>, QueryError> {
    let items = v.as_array().ok_or_else(|| err("sort", format!("expected an array, got {}", kind_of(v))))?;
    if items.len() > 8 {
        return Err(err("sort", "at most 8 sort keys"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("sort[{i}]");
            let obj =
                item.as_object().ok_or_else(|| err(&path, format!("expected an object, got {}", kind_of(item))))?;
            let target = match obj.get("property") {
                Some(Value::String(p)) if p.starts_with('$') => {
                    Target::Meta(Meta::parse(p).ok_or_else(|| err(&path, format!("unknown meta-property {p:?}")))?)
                }
                Some(Value::String(p)) => Target::Property(p.clone()),
                _ => return Err(err(&path, "`property` (a string) is required")),
            };
            let descending = match obj.get("order") {
                None => false,
                Some(Value::String(o)) if o == "asc" => false,
                Some(Value::String(o)) if o == "desc" => true,
                Some(other) => return Err(err(&path, format!("`order` must be \"asc\" or \"desc\", got {other}"))),
            };
            Ok(SortKey { target, descending })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn parses_nested_groups() {
        let q = Query::parse(&json!({"combinator": "and", "rules": [
            {"property": "$blueprint", "operator": "=", "value": "service"},
            {"combinator": "or", "rules": [
                {"property": "lang", "operator": "in", "value": ["go", "rust"]},
                {"relation": "team", "operator": "=", "value": "core"}]}]}))
        .expect("parses");
        assert_eq!(q.blueprint_filter(), Some(vec!["service".to_string()]));
        assert_eq!(q.properties(), vec!["lang"]);
        assert_eq!(q.relations(), vec!["team"]);
    }

    #[test]
    fn errors_name_the_rule() {
        let e = Query::parse(&json!({"combinator": "and", "rules": [
            {"property": "a", "operator": "=", "value": 1},
            {"combinator": "or", "rules": [{"property": "b", "operator": "like", "value": "x"}]}]}))
        .expect_err("fails");
        assert_eq!(e.path, "rules[1].rules[0]");
        assert!(e.message.contains("unknown operator \"like\""), "{e}");
        let e = Query::parse(&json!({"combinator": "and", "rules": [{"property": "a", "operator": "in", "value": 1}]}))
            .expect_err("x");
        assert_eq!(e.path, "rules[0]");
        assert!(e.message.contains("array"));
        let e =
            Query::parse(&json!({"combinator": "and", "rules": [{"property": "a", "operator": ">", "value": "soon"}]}))
                .expect_err("x");
        assert!(e.message.contains("date-time"));
        assert!(Query::parse(&json!({"combinator": "xor", "rules": []})).is_err());
        assert!(
            Query::parse(&json!({"combinator": "and", "rules": [{"property": "$nope", "operator": "=", "value": 1}]}))
                .is_err()
        );
        let e = Query::parse(&json!({"combinator": "and", "rules": [{"operator": "relatedTo", "value": "y"}]}))
            .expect_err("no blueprint");
        assert!(e.message.contains("`blueprint`"), "{e}");
        let e = Query::parse(&json!({"combinator": "and", "rules": [{"operator": "matchAny", "value": "y",
            "property": {"path": [{"relation": "a", "maxHops": 2}, {"relation": "b", "maxHops": 3}]}}]}))
        .expect_err("two maxHops");
        assert!(e.message.contains("once per path"), "{e}");
        let e = Query::parse(&json!({"combinator": "and", "rules": [{"operator": "matchAny", "value": "y",
            "property": {"path": [{"relation": "a", "maxHops": 16}]}}]}))
        .expect_err("too many hops");
        assert!(e.message.contains("1 to 15"), "{e}");
        let e = Query::parse(&json!({"combinator": "and", "rules": [{"property": "d", "operator": "between",
            "value": {"preset": "lastWeek", "timeZone": "Mars/Olympus"}}]}))
        .expect_err("bad zone");
        assert!(e.message.contains("IANA"), "{e}");
        let e = Query::parse(&json!({"combinator": "and", "rules": [{"property": "d", "operator": "between",
            "value": {"preset": "lastCentury"}}]}))
        .expect_err("bad preset");
        assert!(e.message.contains("lastWeek"), "{e}");
    }

    #[test]
    fn parses_graph_rules_presets_and_schemas_with_slots() {
        let q = Query::parse(&json!({"combinator": "or", "conditions": [
            {"operator": "relatedTo", "blueprint": "team", "value": ["a", "b"], "direction": "downstream", "required": true},
            {"operator": "matchAny", "value": "root", "property": {"path": ["system", {"relation": "parent", "maxHops": 3}], "fromBlueprint": "service"}},
            {"property": "$createdAt", "operator": "=", "value": {"preset": "today", "timeZone": "Europe/Paris"}},
            {"propertySchema": {"type": "string", "format": "url"}, "operator": "contains", "value": "git"},
            {"scorecard": "ownership", "operator": "in", "value": ["Gold", "Silver"]},
            {"property": "deadline", "operator": "isExpired"}]}))
        .expect("parses");
        assert_eq!(q.slots(), 3);
        let Query::Group { rules, .. } = &q else { panic!("a group") };
        assert_eq!(
            rules[0],
            Query::Graph(GraphRule {
                slot: 0,
                kind: GraphKind::RelatedTo {
                    blueprint: "team".into(),
                    identifiers: vec!["a".into(), "b".into()],
                    direction: Some(Direction::Downstream),
                    required: true
                }
            })
        );
        let Query::Graph(GraphRule { slot: 1, kind: GraphKind::MatchAny { path, .. } }) = &rules[1] else {
            panic!("matchAny in slot 1")
        };
        assert_eq!(path[1], PathStep { relation: "parent".into(), max_hops: 3 });
        assert!(matches!(
            &rules[2],
            Query::Rule(Rule { op: Op::Between, operand: Operand::Preset { slot: 2, .. }, .. })
        ));
    }

    #[test]
    fn parses_sort() {
        let keys =
            parse_sort(&json!([{"property": "replicas", "order": "desc"}, {"property": "$title"}])).expect("parses");
        assert_eq!(keys[0], SortKey { target: Target::Property("replicas".into()), descending: true });
        assert_eq!(keys[1], SortKey { target: Target::Meta(Meta::Title), descending: false });
        assert_eq!(parse_sort(&json!([{"property": "a", "order": "up"}])).expect_err("x").path, "sort[0]");
        assert!(parse_sort(&json!({"property": "a"})).is_err());
    }

    #[test]
    fn objects_that_are_both_group_and_rule_are_refused() {
        for body in [
            json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "x", "combinator": "and", "rules": []}]}),
            json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "x", "conditions": []}]}),
            json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "x", "propertySchema": {"type": "string"}}]}),
        ] {
            let e = Query::parse(&body).expect_err("mixed keys must be refused");
            assert_eq!(e.path, "rules[0]", "{e}");
        }
    }

    #[test]
    fn lists_rules_and_graph_rules_are_bounded() {
        let long: Vec<u32> = (0..=MAX_LIST as u32).collect();
        let e =
            Query::parse(&json!({"combinator": "and", "rules": [{"property": "n", "operator": "in", "value": long}]}));
        assert!(e.expect_err("too long").message.contains("at most"));
        let many: Vec<Value> = (0..MAX_NODES).map(|_| json!({"property": "n", "operator": "isEmpty"})).collect();
        assert!(Query::parse(&json!({"combinator": "or", "rules": many})).is_err());
        let graph: Vec<Value> =
            (0..=MAX_GRAPH_RULES).map(|_| json!({"operator": "relatedTo", "blueprint": "b", "value": "x"})).collect();
        assert!(Query::parse(&json!({"combinator": "or", "rules": graph})).is_err());
        let dups = json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "in", "value": ["a", "b", "a", "a"]}]});
        assert_eq!(
            Query::parse(&dups).expect("parses").blueprint_filter(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
    }

    #[test]
    fn joined_queries_keep_their_slots_apart() {
        let a = Query::parse(&json!({"combinator": "and", "rules": [
            {"operator": "relatedTo", "blueprint": "b", "value": "x"},
            {"property": "$createdAt", "operator": "between", "value": {"preset": "today"}}]}))
        .expect("a");
        let b = Query::parse(&json!({"operator": "relatedTo", "blueprint": "c", "value": "y"})).expect("b");
        let joined = a.clone().and(b.clone());
        assert_eq!(joined.slots(), 3);
        let mut seen = Vec::new();
        joined.visit(&mut |q| match q {
            Query::Graph(g) => seen.push(g.slot),
            Query::Rule(Rule { operand: Operand::Preset { slot, .. }, .. }) => seen.push(*slot),
            _ => {}
        });
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2]);
        let any = Query::any(vec![a.clone(), b, a]);
        assert_eq!(any.slots(), 5);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut q = json!({"property": "a", "operator": "isEmpty"});
        for _ in 0..40 {
            q = json!({"combinator": "and", "rules": [q]});
        }
        assert!(Query::parse(&q).expect_err("too deep").message.contains("deeper"));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            prop_oneof![
                Just("and"),
                Just("or"),
                Just("="),
                Just("in"),
                Just(">"),
                Just("between"),
                Just("$title"),
                Just("relatedTo"),
                Just("matchAny"),
                Just("lastWeek"),
                Just("UTC"),
                Just("upstream"),
                Just("x")
            ]
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("combinator"),
                        Just("rules"),
                        Just("property"),
                        Just("relation"),
                        Just("operator"),
                        Just("value"),
                        Just("from"),
                        Just("to"),
                        Just("preset"),
                        Just("timeZone"),
                        Just("blueprint"),
                        Just("direction"),
                        Just("path"),
                        Just("maxHops"),
                        Just("conditions"),
                        Just("propertySchema"),
                        Just("scorecard")
                    ]
                    .prop_map(str::to_string),
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any JSON gives a query or an error with a path; never a panic.
        #[test]
        fn never_panics(v in arb_json()) {
            match Query::parse(&v) {
                Ok(_) => {}
                Err(e) => prop_assert!(e.path.starts_with("query") || e.path.starts_with("rules["), "{}", e.path),
            }
        }
    }
}
