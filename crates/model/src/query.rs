//! The search rules language, parsed once into a typed AST.
//!
//! Grammar (JSON):
//! ```text
//! query    := { "combinator": "and" | "or", "rules": [ node, ... ] }
//! node     := query | rule
//! rule     := { "property": NAME, "operator": OP, "value"?: VALUE }
//!           | { "relation": NAME, "operator": "=" | "!=" | "in" | "notIn" | "isEmpty" | "isNotEmpty", "value"?: VALUE }
//! NAME     := a property identifier, or a meta-property: $identifier $title $team $icon $blueprint
//!             $createdAt $updatedAt $createdBy $updatedBy $datasource
//! OP       := "=" "!=" ">" ">=" "<" "<=" "in" "notIn" "contains" "doesNotContains" "beginsWith"
//!             "doesNotBeginsWith" "endsWith" "doesNotEndsWith" "containsAny" "isEmpty" "isNotEmpty"
//!             "between" "notBetween"
//! ```
//! - `in`, `notIn`, `containsAny` take an array; `between` / `notBetween` take `{"from": DATE, "to": DATE}`;
//!   `isEmpty` / `isNotEmpty` take no value; the comparison operators take a number or a date-time string.
//! - Not yet supported (refused with a 400 that says so): `relatedTo`, `matchAny`, `propertySchema`, date
//!   presets, scorecard rules, contextual values.
//!
//! A query that does not parse gives a [`QueryError`] naming the offending node by its path, such as
//! `rules[2].rules[0]`, and what was expected there.

use serde_json::{Map, Value};

use crate::Timestamp;
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
    fn parse(name: &str) -> Option<Meta> {
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

#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    Group { combinator: Combinator, rules: Vec<Query> },
    Rule(Rule),
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

impl Query {
    /// Parses a query (`{"combinator", "rules"}`).
    pub fn parse(v: &Value) -> Result<Query, QueryError> {
        parse_node(v, "query", 0)
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
                Some(list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            }
            _ => None,
        })
    }
}

fn err(path: &str, message: impl Into<String>) -> QueryError {
    QueryError { path: path.to_string(), message: message.into() }
}

fn parse_node(v: &Value, path: &str, depth: usize) -> Result<Query, QueryError> {
    if depth > MAX_DEPTH {
        return Err(err(path, format!("groups nest deeper than {MAX_DEPTH} levels")));
    }
    let obj = v.as_object().ok_or_else(|| err(path, format!("expected an object, got {}", kind_of(v))))?;
    if obj.contains_key("combinator") || obj.contains_key("rules") {
        return parse_group(obj, path, depth);
    }
    parse_rule(obj, path).map(Query::Rule)
}

fn parse_group(obj: &Map<String, Value>, path: &str, depth: usize) -> Result<Query, QueryError> {
    let combinator = match obj.get("combinator") {
        Some(Value::String(c)) if c == "and" => Combinator::And,
        Some(Value::String(c)) if c == "or" => Combinator::Or,
        Some(other) => return Err(err(path, format!("`combinator` must be \"and\" or \"or\", got {other}"))),
        None => return Err(err(path, "a group needs a `combinator` (\"and\" or \"or\")")),
    };
    let rules = match obj.get("rules") {
        Some(Value::Array(rules)) => rules,
        Some(other) => return Err(err(path, format!("`rules` must be an array, got {}", kind_of(other)))),
        None => return Err(err(path, "a group needs `rules` (an array)")),
    };
    let prefix = if path == "query" { String::new() } else { format!("{path}.") };
    let rules = rules
        .iter()
        .enumerate()
        .map(|(i, r)| parse_node(r, &format!("{prefix}rules[{i}]"), depth + 1))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Query::Group { combinator, rules })
}

const UNSUPPORTED: &[&str] = &["relatedTo", "matchAny", "propertySchema", "scorecard"];

fn parse_rule(obj: &Map<String, Value>, path: &str) -> Result<Rule, QueryError> {
    let op_name = match obj.get("operator") {
        Some(Value::String(o)) => o.as_str(),
        Some(other) => return Err(err(path, format!("`operator` must be a string, got {}", kind_of(other)))),
        None => return Err(err(path, "a rule needs an `operator`")),
    };
    for key in UNSUPPORTED {
        if op_name == *key || obj.contains_key(*key) {
            return Err(err(path, format!("`{key}` rules are not supported yet")));
        }
    }
    let op = Op::parse(op_name).ok_or_else(|| {
        err(
            path,
            format!(
                "unknown operator {op_name:?}; expected one of = != > >= < <= in notIn contains doesNotContains beginsWith doesNotBeginsWith endsWith doesNotEndsWith containsAny isEmpty isNotEmpty between notBetween"
            ),
        )
    })?;
    let target = match (obj.get("property"), obj.get("relation")) {
        (Some(Value::String(p)), None) => match p.strip_prefix('$') {
            Some(_) => Target::Meta(Meta::parse(p).ok_or_else(|| err(path, format!("unknown meta-property {p:?}")))?),
            None => Target::Property(p.clone()),
        },
        (None, Some(Value::String(r))) => Target::Relation(r.clone()),
        (Some(Value::Object(_)), None) => {
            return Err(err(path, "contextual properties ({\"context\": ...}) are not supported yet"));
        }
        (Some(_), Some(_)) => return Err(err(path, "a rule names a `property` or a `relation`, not both")),
        (Some(other), None) | (None, Some(other)) => {
            return Err(err(path, format!("`property` / `relation` must be a string, got {}", kind_of(other))));
        }
        (None, None) => return Err(err(path, "a rule needs a `property` or a `relation`")),
    };
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
        Op::IsEmpty | Op::IsNotEmpty => Operand::None,
        Op::In | Op::NotIn | Op::ContainsAny => match value {
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
            if range.contains_key("preset") {
                return Err(err(path, "date presets are not supported yet; give `from` and `to`"));
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
        assert!(
            Query::parse(
                &json!({"combinator": "and", "rules": [{"operator": "relatedTo", "blueprint": "x", "value": "y"}]})
            )
            .is_err()
        );
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
                        Just("to")
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
