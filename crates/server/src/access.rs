//! Reads narrowed to what the caller may read: the one place every read of the API and the UI asks. The
//! engine's [`berth_engine::access::read_scope`] says which entities of a blueprint a caller may read, as
//! rules; here those rules are joined to the caller's own query before it is parsed, so one query answers
//! the page, its count and any aggregate alike.

use berth_engine::State;
use berth_engine::access::{ReadScope, match_nothing, read_scope};
use berth_model::Entity;
use serde_json::{Value, json};

use crate::auth::Caller;

/// `query` (or everything) of `blueprint`, narrowed to what `caller` may read; `None` means every entity.
pub fn narrow(view: &State, caller: &Caller, blueprint: &str, query: Option<Value>) -> Option<Value> {
    let extra = match read_scope(view, &caller.principal(), blueprint) {
        ReadScope::All => return query,
        ReadScope::Nothing => match_nothing(),
        ReadScope::Rules(rules) => rules,
    };
    Some(join(query, extra))
}

/// `query` across blueprints narrowed to what `caller` may read: each blueprint's scope joined by `or`.
pub fn narrow_all(view: &State, caller: &Caller, query: Value) -> Value {
    let principal = caller.principal();
    if principal.is_admin() {
        return query;
    }
    // A query about one blueprint (a top-level `$blueprint = X`) takes that blueprint's scope, flat, where
    // the planner can use it.
    if let Some(bp) = single_blueprint(&query) {
        return narrow(view, caller, &bp, Some(query)).unwrap_or_else(|| json!({"combinator": "and", "rules": []}));
    }
    let scopes: Vec<(String, ReadScope)> = view
        .blueprints()
        .map(|b| (b.def.identifier.clone(), read_scope(view, &principal, &b.def.identifier)))
        .collect();
    if scopes.iter().all(|(_, s)| *s == ReadScope::All) {
        return query;
    }
    let visible: Vec<Value> = scopes
        .into_iter()
        .filter_map(|(bp, scope)| {
            let is_bp = json!({"property": "$blueprint", "operator": "=", "value": bp});
            match scope {
                ReadScope::All => Some(is_bp),
                ReadScope::Nothing => None,
                ReadScope::Rules(r) => Some(json!({"combinator": "and", "rules": [is_bp, r]})),
            }
        })
        .collect();
    let extra = if visible.is_empty() { match_nothing() } else { json!({"combinator": "or", "rules": visible}) };
    join(Some(query), extra)
}

/// The blueprint named by a top-level `$blueprint = X` rule of an `and` query.
fn single_blueprint(query: &Value) -> Option<String> {
    if query.get("combinator").and_then(Value::as_str) != Some("and") {
        return None;
    }
    query.get("rules")?.as_array()?.iter().find_map(|r| {
        let is_bp = r.get("property").and_then(Value::as_str) == Some("$blueprint")
            && r.get("operator").and_then(Value::as_str) == Some("=");
        if is_bp { r.get("value").and_then(Value::as_str).map(str::to_string) } else { None }
    })
}

/// `and` of a query and a restriction; an `and` query's rules stay at the top level (where the planner and
/// the `$blueprint` filter look).
fn join(query: Option<Value>, extra: Value) -> Value {
    let mut rules = match query {
        Some(q) if q.get("combinator").and_then(Value::as_str) == Some("and") && q.get("conditions").is_none() => {
            q.get("rules").and_then(Value::as_array).cloned().unwrap_or_default()
        }
        Some(q) => vec![q],
        None => Vec::new(),
    };
    // An `and` restriction's rules join the top level too, so an owner rule can pick the candidates.
    match extra {
        Value::Object(ref o)
            if o.get("combinator").and_then(Value::as_str) == Some("and") && o.get("conditions").is_none() =>
        {
            rules.extend(o.get("rules").and_then(Value::as_array).cloned().unwrap_or_default());
        }
        other => rules.push(other),
    }
    json!({"combinator": "and", "rules": rules})
}

/// Whether `caller` may read `entity`.
pub fn can_read(view: &State, caller: &Caller, entity: &Entity) -> bool {
    berth_engine::access::can_read(view, &caller.principal(), entity, crate::now())
}
