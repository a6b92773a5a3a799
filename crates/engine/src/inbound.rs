//! An inbound webhook's mappings applied to one request (pure): for each mapping whose `filter` holds, each
//! item of `itemsToParse` (or the request itself) becomes an entity body (`create`) or an identifier
//! (`delete`), every field a jq expression over `{body, headers, queryParams, item?}` checked and bounded as
//! calculations are. Errors name the mapping, the item and the field; nothing here writes.

use berth_model::webhook::{MAX_ENTITIES_PER_REQUEST, Mapping, Operation, Webhook};
use serde_json::{Map, Value, json};

use crate::derived::jq;

/// What one item of one mapping asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Mapped {
    /// An entity body to upsert into `blueprint`.
    Upsert { blueprint: String, entity: Value },
    /// An entity of `blueprint` to delete.
    Delete { blueprint: String, identifier: String, dependents: bool },
}

/// One mapping's outcome for a request: what it asks for, and the items that failed (with why).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MappingOutcome {
    pub mapped: Vec<Mapped>,
    pub errors: Vec<String>,
    /// Whether the filter held.
    pub matched: bool,
}

/// A webhook's jq expressions compiled once, for every request of a batch (compiling costs more than
/// running).
pub struct Compiled {
    programs: std::collections::HashMap<String, Result<jq::Program, String>>,
}

impl Compiled {
    pub fn new(webhook: &Webhook) -> Compiled {
        let mut programs = std::collections::HashMap::new();
        for (_, code) in webhook.jq() {
            programs.entry(code.clone()).or_insert_with(|| jq::compile(&code));
        }
        Compiled { programs }
    }

    /// Runs one of the webhook's expressions (compiled here if it was not among them).
    pub fn run(&self, code: &str, input: &Value) -> Result<Value, String> {
        match self.programs.get(code) {
            Some(Ok(p)) => p.run(input),
            Some(Err(e)) => Err(e.clone()),
            None => jq::compile(code).and_then(|p| p.run(input)),
        }
    }
}

/// The jq input of a request.
pub fn context(body: &Value, headers: &Map<String, Value>, query: &Map<String, Value>) -> Value {
    json!({"body": body, "headers": headers, "queryParams": query})
}

/// Applies every mapping of `webhook` to the request `context` (see [`context`]).
pub fn apply(webhook: &Webhook, context: &Value) -> Vec<MappingOutcome> {
    apply_compiled(webhook, &Compiled::new(webhook), context)
}

/// [`apply`] with the webhook's expressions compiled already.
pub fn apply_compiled(webhook: &Webhook, compiled: &Compiled, context: &Value) -> Vec<MappingOutcome> {
    let mut budget = MAX_ENTITIES_PER_REQUEST;
    webhook.mappings.iter().enumerate().map(|(i, m)| apply_one(compiled, i, m, context, &mut budget)).collect()
}

fn apply_one(c: &Compiled, i: usize, m: &Mapping, context: &Value, budget: &mut usize) -> MappingOutcome {
    let run = |code: &str, input: &Value| c.run(code, input);
    let mut out = MappingOutcome::default();
    if let Some(filter) = &m.filter {
        match run(filter, context) {
            Ok(Value::Bool(true)) => {}
            Ok(_) => return out,
            Err(e) => {
                out.errors.push(format!("mappings[{i}].filter: {e}"));
                return out;
            }
        }
    }
    out.matched = true;
    let items: Vec<Value> = match &m.items {
        None => vec![context.clone()],
        Some(code) => match run(code, context) {
            Ok(Value::Array(items)) => items
                .into_iter()
                .map(|item| {
                    let mut c = context.clone();
                    c["item"] = item;
                    c
                })
                .collect(),
            Ok(Value::Null) => Vec::new(),
            Ok(other) => {
                out.errors.push(format!(
                    "mappings[{i}].itemsToParse yields {}, not a list",
                    berth_model::schema::kind_of(&other)
                ));
                return out;
            }
            Err(e) => {
                out.errors.push(format!("mappings[{i}].itemsToParse: {e}"));
                return out;
            }
        },
    };
    for (n, item) in items.iter().enumerate() {
        if *budget == 0 {
            out.errors.push(format!(
                "mappings[{i}]: the request maps more than {MAX_ENTITIES_PER_REQUEST} entities; the rest were left out"
            ));
            break;
        }
        let at = if m.items.is_some() { format!("mappings[{i}] item {n}") } else { format!("mappings[{i}]") };
        match entity(c, m, item) {
            Ok(entity) => {
                *budget -= 1;
                out.mapped.push(match m.operation {
                    Operation::Create => Mapped::Upsert { blueprint: m.blueprint.clone(), entity },
                    Operation::Delete { dependents } => Mapped::Delete {
                        blueprint: m.blueprint.clone(),
                        identifier: entity["identifier"].as_str().unwrap_or_default().to_string(),
                        dependents,
                    },
                });
            }
            Err(e) => out.errors.push(format!("{at}: {e}")),
        }
    }
    out
}

/// One item's entity body: every field evaluated; the identifier must be a non-empty string.
fn entity(c: &Compiled, m: &Mapping, item: &Value) -> Result<Value, String> {
    let mut body = json!({});
    let mut properties = Map::new();
    let mut relations = Map::new();
    for (field, code) in &m.entity {
        let v = c.run(code, item).map_err(|e| format!("entity.{field}: {e}"))?;
        match field.split_once('.') {
            Some(("properties", k)) => {
                properties.insert(k.to_string(), v);
            }
            Some(("relations", k)) => {
                relations.insert(k.to_string(), v);
            }
            _ => body[field.as_str()] = v,
        }
    }
    match &body["identifier"] {
        Value::String(s) if !s.is_empty() => {}
        Value::Number(n) => body["identifier"] = Value::String(n.to_string()),
        other => {
            return Err(format!(
                "entity.identifier yields {}, not a non-empty string",
                berth_model::schema::kind_of(other)
            ));
        }
    }
    if let Some(map) = body.as_object_mut() {
        // A title or icon that yields null is left out (the entity keeps none).
        map.retain(|_, v| !v.is_null());
        if !properties.is_empty() {
            map.insert("properties".into(), Value::Object(properties));
        }
        if !relations.is_empty() {
            map.insert("relations".into(), Value::Object(relations));
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(mappings: Value) -> Webhook {
        Webhook::parse(&json!({"title": "t", "mappings": mappings})).expect("webhook")
    }

    #[test]
    fn mappings_filter_parse_items_and_name_their_errors() {
        let w = webhook(json!([
            {"blueprint": "commit", "filter": ".headers.\"x-github-event\" == \"push\"", "itemsToParse": ".body.commits",
             "entity": {"identifier": ".item.id", "title": ".item.message", "properties": {"author": ".item.author.name"},
                 "relations": {"repo": ".body.repository.name"}}},
            {"blueprint": "repo", "entity": {"identifier": ".body.repository.name"}},
            {"blueprint": "repo", "operation": "delete", "filter": ".body.deleted == true",
             "entity": {"identifier": ".body.repository.name"}},
            {"blueprint": "repo", "entity": {"identifier": ".body.nothing"}}
        ]));
        let ctx = context(
            &json!({"repository": {"name": "api"}, "commits": [{"id": "c1", "message": "fix", "author": {"name": "ada"}},
                {"id": 2, "message": null}]}),
            &serde_json::from_value(json!({"x-github-event": "push"})).expect("h"),
            &Map::new(),
        );
        let out = apply(&w, &ctx);
        assert_eq!(out[0].mapped.len(), 2);
        assert_eq!(
            out[0].mapped[0],
            Mapped::Upsert {
                blueprint: "commit".into(),
                entity: json!({"identifier": "c1", "title": "fix",
                "properties": {"author": "ada"}, "relations": {"repo": "api"}})
            }
        );
        assert_eq!(
            out[0].mapped[1],
            Mapped::Upsert {
                blueprint: "commit".into(),
                entity: json!({"identifier": "2",
            "properties": {"author": null}, "relations": {"repo": "api"}})
            }
        );
        assert_eq!(out[1].mapped.len(), 1);
        assert!(!out[2].matched && out[2].mapped.is_empty(), "the filter does not hold");
        assert_eq!(out[3].errors, ["mappings[3]: entity.identifier yields null, not a non-empty string"]);
    }

    proptest::proptest! {
        /// Any request maps or reports errors; never a panic, never more than the request's entity budget.
        #[test]
        fn any_request_maps_or_reports(body in "[a-z0-9{}:\"\\[\\], ]{0,80}") {
            let w = webhook(json!([{"blueprint": "b", "itemsToParse": ".body.items", "entity": {"identifier": ".item.id",
                "properties": {"n": ".item.n + 1"}}}, {"blueprint": "b", "entity": {"identifier": ".body.id"}}]));
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
            let out = apply(&w, &context(&body, &Map::new(), &Map::new()));
            let total: usize = out.iter().map(|o| o.mapped.len()).sum();
            proptest::prop_assert!(total <= MAX_ENTITIES_PER_REQUEST);
        }
    }
}
