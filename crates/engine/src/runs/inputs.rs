//! A run's inputs checked against its action's `userInputs`: unknown inputs refused, defaults filled in
//! (static or `{"jqQuery"}`), hidden inputs (`visible` false) dropped, `required` (a list or a jq
//! expression) enforced, each value checked as a property of its type and format, entity pickers pointed at
//! entities the runner may read, user and team pickers at users and teams that exist. Every bad input is
//! named in one error. jq rules see `{form, inputs, user, entity}` (`form` and `inputs` are the inputs so
//! far).

use berth_model::action::input_schema;
use berth_model::{DomainError, Timestamp};
use serde_json::{Map, Value};

use crate::State;
use crate::access::{Principal, can_read};
use crate::derived::jq;

/// The inputs as the run keeps them, and the names of those to encrypt.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub values: Map<String, Value>,
    pub encrypted: Vec<String>,
}

/// What the jq rules of a form read besides the inputs.
pub struct Context<'a> {
    pub user: Value,
    pub entity: Value,
    pub runner: &'a Principal,
    pub now: Timestamp,
}

fn jq_value(code: &str, data: &Value) -> Result<Value, String> {
    jq::compile(code).and_then(|p| p.run(data))
}

/// A `true` / `false` / `{"jqQuery"}` rule's value.
fn truth(rule: Option<&Value>, data: &Value, default: bool) -> Result<bool, String> {
    match rule {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Object(m)) => match m.get("jqQuery").and_then(Value::as_str) {
            Some(code) => Ok(jq_value(code, data)? == Value::Bool(true)),
            None => Ok(default),
        },
        Some(_) => Ok(default),
    }
}

/// Checks `given` against the action's `userInputs` (`sealed`: values given as `{"sealed"}` are accepted for
/// encrypted inputs, sealed by the server after it checked them in the clear).
pub fn check(
    state: &State,
    user_inputs: Option<&Value>,
    given: &Map<String, Value>,
    cx: &Context<'_>,
    sealed: bool,
) -> Result<Checked, DomainError> {
    let empty = Map::new();
    let props = user_inputs.and_then(|u| u.get("properties")).and_then(Value::as_object).unwrap_or(&empty);
    let mut errors: Vec<String> = Vec::new();
    for name in given.keys() {
        if !props.contains_key(name) {
            errors.push(format!("`{}` is not an input of this action", berth_model::limits::truncate(name, 100)));
        }
    }
    let mut values: Map<String, Value> = given
        .iter()
        .filter(|(k, v)| props.contains_key(*k) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let data = |values: &Map<String, Value>| serde_json::json!({"form": values, "inputs": values, "user": cx.user, "entity": cx.entity});
    // Defaults first (a jq default sees the inputs given), then visibility.
    for (name, def) in props {
        if values.contains_key(name) {
            continue;
        }
        match def.get("default") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.len() == 1 && m.contains_key("jqQuery") => {
                let code = m.get("jqQuery").and_then(Value::as_str).unwrap_or_default();
                match jq_value(code, &data(&values)) {
                    Ok(Value::Null) => {}
                    Ok(v) => {
                        values.insert(name.clone(), v);
                    }
                    Err(e) => errors.push(format!("`{name}`: its default failed: {e}")),
                }
            }
            Some(d) => {
                values.insert(name.clone(), d.clone());
            }
        }
    }
    let snapshot = data(&values);
    for (name, def) in props {
        match truth(def.get("visible"), &snapshot, true) {
            Ok(true) => {}
            Ok(false) => {
                values.remove(name);
            }
            Err(e) => errors.push(format!("`{name}`: its `visible` rule failed: {e}")),
        }
    }
    let required: Vec<String> = match user_inputs.and_then(|u| u.get("required")) {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(Value::Object(m)) => match m.get("jqQuery").and_then(Value::as_str).map(|c| jq_value(c, &snapshot)) {
            Some(Ok(Value::Array(list))) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(Ok(Value::Null)) | None => Vec::new(),
            Some(Ok(_)) => {
                errors.push("the `required` rule yields a list of input names".into());
                Vec::new()
            }
            Some(Err(e)) => {
                errors.push(format!("the `required` rule failed: {e}"));
                Vec::new()
            }
        },
        _ => Vec::new(),
    };
    for name in &required {
        let visible = props.get(name).is_some_and(|d| truth(d.get("visible"), &snapshot, true).unwrap_or(true));
        if visible && !values.contains_key(name) {
            errors.push(format!("`{name}` is required"));
        }
    }
    let mut encrypted = Vec::new();
    for (name, def) in props {
        let Some(value) = values.get_mut(name) else { continue };
        let encrypt = def.get("encryption").is_some_and(|e| !e.is_null());
        if encrypt {
            encrypted.push(name.clone());
            if sealed && value.get("sealed").is_some_and(Value::is_string) {
                continue;
            }
        }
        if let Err(e) = check_value(state, name, def, value, cx) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(Checked { values, encrypted })
    } else {
        let shown = errors.len().min(20);
        let more = if errors.len() > shown { format!(" (and {} more)", errors.len() - shown) } else { String::new() };
        Err(DomainError::Invalid(format!("invalid inputs: {}{more}", errors[..shown].join("; "))))
    }
}

/// One input's value checked (an entity picker given an entity object keeps its identifier).
fn check_value(state: &State, name: &str, def: &Value, value: &mut Value, cx: &Context<'_>) -> Result<(), String> {
    let format = def.get("format").and_then(Value::as_str);
    let items_format = def.pointer("/items/format").and_then(Value::as_str);
    // An entity picker may be given the entity itself (as Port's forms send it): its identifier is kept.
    let as_id = |v: &mut Value| {
        if let Some(id) = v.get("identifier").and_then(Value::as_str).map(str::to_string) {
            *v = Value::String(id);
        }
    };
    if format == Some("entity") {
        as_id(value);
    }
    if items_format == Some("entity") {
        if let Value::Array(items) = value {
            items.iter_mut().for_each(as_id);
        }
    }
    let schema = input_schema(name, def).map_err(|e| format!("`{name}`: {e}"))?;
    schema.validate(name, value)?;
    let picked: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    match format.or(items_format) {
        Some("entity") => {
            let blueprint = def.get("blueprint").and_then(Value::as_str).unwrap_or_default();
            for id in picked {
                let readable = state.entity(blueprint, id).is_some_and(|e| can_read(state, cx.runner, e, cx.now));
                if !readable {
                    return Err(format!(
                        "`{name}`: entity `{}` of blueprint `{blueprint}` was not found",
                        berth_model::limits::truncate(id, 200)
                    ));
                }
            }
        }
        Some("user") => {
            for email in picked {
                if state.user(email).is_none() {
                    return Err(format!(
                        "`{name}`: user `{}` was not found",
                        berth_model::limits::truncate(email, 200)
                    ));
                }
            }
        }
        Some("team") => {
            for team in picked {
                if state.team(team).is_none() {
                    return Err(format!("`{name}`: team `{}` was not found", berth_model::limits::truncate(team, 200)));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn inputs() -> Value {
        json!({"properties": {
            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
            "n": {"type": "number", "minimum": 1, "maximum": 5},
            "lang": {"type": "string", "enum": ["go", "rust"], "default": "rust"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "svc": {"type": "string", "format": "entity", "blueprint": "service"},
            "who": {"type": "string", "format": "user"},
            "extra": {"type": "string", "visible": {"jqQuery": ".form.lang == \"go\""}},
            "computed": {"type": "string", "default": {"jqQuery": ".form.name"}}},
            "required": {"jqQuery": "if .form.lang == \"go\" then [\"name\", \"extra\"] else [\"name\"] end"}})
    }

    fn check_on(given: Value) -> Result<Checked, DomainError> {
        let state = State::default();
        let runner = Principal { id: "a@x.io".into(), roles: vec!["Admin".into()], teams: vec![] };
        let cx = Context { user: json!({}), entity: json!({}), runner: &runner, now: Timestamp::from_millis(0) };
        let given = given.as_object().cloned().unwrap_or_default();
        check(&state, Some(&inputs()), &given, &cx, false)
    }

    #[test]
    fn defaults_rules_and_every_bad_input_named() {
        let ok = check_on(json!({"name": "pay"})).expect("valid");
        assert_eq!(Value::Object(ok.values), json!({"name": "pay", "lang": "rust", "computed": "pay"}));
        let e = check_on(json!({"name": "Pay!", "n": 9, "lang": "go", "tags": [1], "svc": "x", "who": "y", "z": 1}))
            .expect_err("bad")
            .to_string();
        for named in ["`name`", "`n`", "`tags", "`svc`", "`who`", "`z`", "`extra` is required"] {
            assert!(e.contains(named), "{named} in {e}");
        }
        let hidden = check_on(json!({"name": "pay", "extra": "dropped"})).expect("valid");
        assert!(!hidden.values.contains_key("extra"), "a hidden input is dropped");
    }

    fn arb() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z!{}.]{0,10}".prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any inputs are accepted or refused with every bad one named; never a panic.
        #[test]
        fn any_inputs_are_checked(values in prop::collection::btree_map(
            prop_oneof![Just("name".to_string()), Just("n".to_string()), Just("lang".to_string()),
                Just("tags".to_string()), Just("svc".to_string()), Just("extra".to_string()), "[a-z]{1,3}"],
            arb(), 0..6)) {
            let given = Value::Object(values.into_iter().collect());
            match check_on(given) {
                Ok(c) => prop_assert!(c.values.contains_key("name")),
                Err(e) => prop_assert!(e.to_string().starts_with("invalid inputs: ")),
            }
        }
    }
}
