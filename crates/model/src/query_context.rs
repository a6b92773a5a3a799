//! Contextual values in rules, as Port's rules language has them: a rule's `value` (or its `property`) may
//! be `{"context": "user" | "userTeams", "property": P}`, read from the caller: "services owned by my
//! teams" is `{"property": "$team", "operator": "containsAny", "value": {"context": "userTeams",
//! "property": "$identifier"}}`, whoever asks.
//!
//! [`resolve`] replaces every contextual value of a query (as JSON) with the caller's values before the query
//! is parsed, so the parser, the planner and the evaluator never see one:
//! - `user`: `$identifier` and `email` (the caller's id: a user's email or an app's client id), `$title`
//!   (the user's name, else the id), `firstName`, `lastName`, `$team` (the caller's teams, a list);
//! - `userTeams`: `$identifier`, `name`, `$title` (the team names, a list), `description` (a list).
//!
//! A rule whose `property` is contextual tests the caller, not the entity: it is decided at once and becomes
//! a group that matches everything (`and` of nothing) or nothing (`or` of nothing). It takes `=`, `!=`, `in`,
//! `notIn`, `containsAny`, `contains`, `isEmpty` and `isNotEmpty` (for `userTeams`, `=` and `in` hold when any
//! team does). Without a caller (a stored query checked on write), contextual values read as empty ones.

use serde_json::{Map, Value, json};

use crate::query::{MAX_DEPTH, QueryError};

/// Who asks: what `user` and `userTeams` read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryContext {
    /// The caller's id (a user's email or an app's client id).
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    /// The caller's teams: (name, description).
    pub teams: Vec<(String, Option<String>)>,
}

fn err(path: &str, message: impl Into<String>) -> QueryError {
    QueryError { path: path.to_string(), message: message.into() }
}

impl QueryContext {
    /// The value `property` of `context` (`user` or `userTeams`) for this caller.
    fn value(&self, context: &str, property: &str, path: &str) -> Result<Value, QueryError> {
        let names = || Value::Array(self.teams.iter().map(|(n, _)| json!(n)).collect());
        match (context, property) {
            ("user", "$identifier" | "email") => Ok(json!(self.id)),
            ("user", "$title") => {
                let name = format!("{} {}", self.first_name, self.last_name).trim().to_string();
                Ok(json!(if name.is_empty() { self.id.clone() } else { name }))
            }
            ("user", "firstName") => Ok(json!(self.first_name)),
            ("user", "lastName") => Ok(json!(self.last_name)),
            ("user", "$team") => Ok(names()),
            ("userTeams", "$identifier" | "name" | "$title") => Ok(names()),
            ("userTeams", "description") => {
                Ok(Value::Array(self.teams.iter().map(|(_, d)| d.clone().map_or(Value::Null, Value::String)).collect()))
            }
            ("user" | "userTeams", other) => Err(err(
                path,
                format!(
                    "the `{context}` context has no property {other:?} (user: $identifier, email, $title, firstName, lastName, $team; userTeams: $identifier, name, $title, description)"
                ),
            )),
            (other, _) => Err(err(path, format!("`context` must be \"user\" or \"userTeams\", got {other:?}"))),
        }
    }
}

/// `v` as a contextual reference `(context, property)`, if it is one.
fn reference<'v>(v: &'v Value, path: &str) -> Result<Option<(&'v str, &'v str)>, QueryError> {
    let Some(obj) = v.as_object().filter(|o| o.contains_key("context")) else { return Ok(None) };
    match (obj.get("context"), obj.get("property")) {
        (Some(Value::String(c)), Some(Value::String(p))) if obj.len() == 2 => Ok(Some((c.as_str(), p.as_str()))),
        _ => Err(err(path, "a contextual value is {\"context\": \"user\" | \"userTeams\", \"property\": NAME}")),
    }
}

/// `query` with every contextual value replaced by the caller's (see the module's documentation); `None`
/// when it holds none (the common case costs one walk, no copy).
pub fn resolve(query: &Value, ctx: Option<&QueryContext>) -> Result<Option<Value>, QueryError> {
    if !mentions_context(query, 0) {
        return Ok(None);
    }
    let empty = QueryContext::default();
    let mut out = query.clone();
    resolve_node(&mut out, ctx.unwrap_or(&empty), "query", 0)?;
    Ok(Some(out))
}

/// Parses `query` for a caller: its contextual values resolved first ([`resolve`]).
pub fn parse_for(query: &Value, ctx: Option<&QueryContext>) -> Result<crate::query::Query, QueryError> {
    match resolve(query, ctx)? {
        Some(resolved) => crate::query::Query::parse(&resolved),
        None => crate::query::Query::parse(query),
    }
}

/// Whether a `context` key appears anywhere a rule could hold one (bounded like the parser).
fn mentions_context(v: &Value, depth: usize) -> bool {
    if depth > MAX_DEPTH * 2 + 4 {
        return false;
    }
    match v {
        Value::Object(m) => m.contains_key("context") || m.values().any(|x| mentions_context(x, depth + 1)),
        Value::Array(items) => items.iter().any(|x| mentions_context(x, depth + 1)),
        _ => false,
    }
}

fn resolve_node(v: &mut Value, ctx: &QueryContext, path: &str, depth: usize) -> Result<(), QueryError> {
    if depth > MAX_DEPTH {
        // The parser refuses it with its own message.
        return Ok(());
    }
    let Some(obj) = v.as_object_mut() else { return Ok(()) };
    let prefix = if path == "query" { String::new() } else { format!("{path}.") };
    if let Some(Value::Array(rules)) = obj.get_mut("rules").or(None) {
        for (i, rule) in rules.iter_mut().enumerate() {
            resolve_node(rule, ctx, &format!("{prefix}rules[{i}]"), depth + 1)?;
        }
        return Ok(());
    }
    if let Some(Value::Array(rules)) = obj.get_mut("conditions") {
        for (i, rule) in rules.iter_mut().enumerate() {
            resolve_node(rule, ctx, &format!("{prefix}conditions[{i}]"), depth + 1)?;
        }
        return Ok(());
    }
    if let Some((context, property)) = obj.get("value").map(|v| reference(v, path)).transpose()?.flatten() {
        let value = ctx.value(context, property, path)?;
        obj.insert("value".into(), value);
    }
    if let Some((context, property)) = obj.get("property").map(|v| reference(v, path)).transpose()?.flatten() {
        let subject = ctx.value(context, property, path)?;
        let holds = decide(&subject, obj, context == "userTeams", path)?;
        *v = json!({"combinator": if holds { "and" } else { "or" }, "rules": []});
    }
    Ok(())
}

/// Whether a rule about the caller holds: `subject` is the caller's value (a list for `userTeams`).
fn decide(subject: &Value, rule: &Map<String, Value>, any_team: bool, path: &str) -> Result<bool, QueryError> {
    let op = rule.get("operator").and_then(Value::as_str).unwrap_or("");
    let value = rule.get("value");
    let items: Vec<&Value> = match subject {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    };
    let in_list = |x: &Value| value.and_then(Value::as_array).is_some_and(|l| l.contains(x));
    let equal = |x: &Value| value.is_some_and(|v| v == x);
    let text = |x: &Value| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
    Ok(match op {
        "=" if any_team || subject.is_array() => items.iter().any(|x| equal(x)),
        "=" => equal(subject),
        "!=" if any_team || subject.is_array() => !items.iter().any(|x| equal(x)),
        "!=" => !equal(subject),
        "in" => items.iter().any(|x| in_list(x)),
        "notIn" => !items.iter().any(|x| in_list(x)),
        "containsAny" => items.iter().any(|x| in_list(x)),
        "contains" => {
            let needle = value.map(text).unwrap_or_default();
            items.iter().any(|x| text(x).contains(&needle))
        }
        "isEmpty" => items.is_empty() || items.iter().all(|x| x.as_str() == Some("")),
        "isNotEmpty" => !(items.is_empty() || items.iter().all(|x| x.as_str() == Some(""))),
        other => {
            return Err(err(
                path,
                format!(
                    "a rule on a contextual property takes =, !=, in, notIn, containsAny, contains, isEmpty or isNotEmpty, not {other:?}"
                ),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Query;

    fn ann() -> QueryContext {
        QueryContext {
            id: "ann@example.com".into(),
            first_name: "Ann".into(),
            last_name: "Lee".into(),
            teams: vec![("payments".into(), Some("Money".into())), ("search".into(), None)],
        }
    }

    fn resolved(q: Value, ctx: Option<&QueryContext>) -> Result<Value, QueryError> {
        Ok(resolve(&q, ctx)?.unwrap_or(q))
    }

    #[test]
    fn contextual_values_become_the_callers() {
        let q = json!({"combinator": "and", "rules": [
            {"property": "$team", "operator": "containsAny", "value": {"context": "userTeams", "property": "$identifier"}},
            {"combinator": "or", "rules": [{"property": "$createdBy", "operator": "=", "value": {"context": "user", "property": "$identifier"}}]}]});
        let r = resolved(q, Some(&ann())).expect("resolves");
        assert_eq!(r["rules"][0]["value"], json!(["payments", "search"]));
        assert_eq!(r["rules"][1]["rules"][0]["value"], json!("ann@example.com"));
        assert!(Query::parse(&r).is_ok(), "what is resolved parses: {r}");
        let title = resolved(
            json!({"property": "$title", "operator": "=", "value": {"context": "user", "property": "$title"}}),
            Some(&ann()),
        );
        assert_eq!(title.expect("title")["value"], json!("Ann Lee"));
    }

    #[test]
    fn rules_on_the_caller_are_decided_at_once() {
        let on = |op: &str, value: Value, ctx: &str, prop: &str| {
            resolved(json!({"combinator": "and", "rules": [{"property": {"context": ctx, "property": prop}, "operator": op, "value": value}]}), Some(&ann()))
                .expect("resolves")["rules"][0]["combinator"]
                .clone()
        };
        assert_eq!(on("=", json!("ann@example.com"), "user", "$identifier"), json!("and"));
        assert_eq!(on("=", json!("bo@example.com"), "user", "$identifier"), json!("or"));
        assert_eq!(on("in", json!(["x", "search"]), "userTeams", "name"), json!("and"));
        assert_eq!(on("=", json!("payments"), "userTeams", "$identifier"), json!("and"), "any team");
        assert_eq!(on("notIn", json!(["payments"]), "userTeams", "name"), json!("or"));
        assert_eq!(on("isNotEmpty", Value::Null, "userTeams", "name"), json!("and"));
        let everything = resolved(json!({"combinator": "and", "rules": [{"property": {"context": "user", "property": "$identifier"}, "operator": "=", "value": "ann@example.com"}]}), Some(&ann())).expect("ok");
        assert!(Query::parse(&everything).is_ok(), "{everything}");
    }

    #[test]
    fn bad_contextual_values_name_the_rule() {
        for (bad, needle) in [
            (
                json!({"property": "x", "operator": "=", "value": {"context": "org", "property": "$identifier"}}),
                "\"user\" or \"userTeams\"",
            ),
            (
                json!({"property": "x", "operator": "=", "value": {"context": "user", "property": "shoeSize"}}),
                "no property",
            ),
            (json!({"property": "x", "operator": "=", "value": {"context": "user"}}), "a contextual value is"),
            (json!({"property": {"context": "user", "property": "email"}, "operator": ">", "value": 3}), "takes ="),
        ] {
            let e = resolved(json!({"combinator": "and", "rules": [bad]}), Some(&ann())).expect_err("refused");
            assert!(e.message.contains(needle), "{}", e.message);
            assert_eq!(e.path, "rules[0]");
        }
        // A query without one is left alone; without a caller, contextual values read as empty ones.
        assert_eq!(resolve(&json!({"combinator": "and", "rules": []}), None).expect("ok"), None);
        let r = resolved(json!({"property": "$team", "operator": "containsAny", "value": {"context": "userTeams", "property": "name"}}), None).expect("ok");
        assert_eq!(r["value"], json!([]));
    }
}
