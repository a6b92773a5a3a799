//! Entities, and the shape a client sends to write one.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::query::Query;
use crate::schema::kind_of;
use crate::{DomainError, Fields, Timestamp};

/// An entity as stored and returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    /// Shared with the catalog's maps and indexes, which key the entity by it.
    #[schema(value_type = String)]
    pub identifier: Arc<str>,
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub icon: Option<Box<str>>,
    #[schema(value_type = String)]
    pub blueprint: Arc<str>,
    #[serde(default)]
    pub team: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Fields,
    /// Relation key → target identifier (single), array of identifiers (many), or null.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub relations: Fields,
    pub created_at: Timestamp,
    /// Who wrote it first and last, and with what (shared strings: a catalog has millions of entities and a
    /// handful of writers; the engine interns them).
    #[schema(value_type = String)]
    pub created_by: Arc<str>,
    pub updated_at: Timestamp,
    #[schema(value_type = String)]
    pub updated_by: Arc<str>,
    /// The `User-Agent` of the last writer (Port's `$datasource`).
    #[serde(rename = "$datasource", default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub datasource: Option<Arc<str>>,
}

impl Entity {
    /// Target identifiers of a relation value (a string, an array of strings, or null).
    pub fn relation_targets(value: &Value) -> Vec<&str> {
        match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// A field of a partial update: absent (keep), null (clear), or a value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T> Field<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }
}

/// An entity's identifier as a client gives it: the identifier itself, or a search query that must match
/// exactly one existing entity of the blueprint.
#[derive(Clone, Debug, PartialEq)]
pub enum IdentifierInput {
    Id(String),
    Search(Box<Query>),
}

/// What a client sends to create or change an entity. Relation values may also be search queries
/// (objects); the engine resolves them against the relation's target blueprint.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct EntityInput {
    pub identifier: Option<IdentifierInput>,
    pub title: Field<String>,
    pub icon: Field<String>,
    pub team: Field<Vec<String>>,
    /// `team` given as a search query over the teams (the engine resolves it into `team`).
    pub team_query: Option<Box<Query>>,
    pub properties: Option<Map<String, Value>>,
    pub relations: Option<Map<String, Value>>,
}

fn opt_string(obj: &Map<String, Value>, key: &str) -> Result<Field<String>, DomainError> {
    match obj.get(key) {
        None => Ok(Field::Absent),
        Some(Value::Null) => Ok(Field::Null),
        Some(Value::String(s)) => Ok(Field::Set(s.clone())),
        Some(other) => Err(DomainError::Invalid(format!("`{key}` must be a string, got {}", kind_of(other)))),
    }
}

impl EntityInput {
    /// Whether a field is given as a search query (resolved against the catalog's indexes when written).
    pub fn uses_search(&self) -> bool {
        matches!(self.identifier, Some(IdentifierInput::Search(_)))
            || self.team_query.is_some()
            || self.relations.iter().flatten().any(|(_, v)| v.is_object())
    }

    /// Parses a request body. Server-owned keys (`createdAt`, `blueprint`, ...) are ignored.
    pub fn from_value(v: &Value) -> Result<EntityInput, DomainError> {
        Self::from_owned(v.clone())
    }

    /// Parses a request body it owns, moving its maps instead of copying them.
    pub fn from_owned(v: Value) -> Result<EntityInput, DomainError> {
        let Value::Object(mut obj) = v else {
            return Err(DomainError::Invalid(format!("an entity must be an object, got {}", kind_of(&v))));
        };
        let identifier = match obj.remove("identifier") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(IdentifierInput::Id(s)),
            Some(q @ Value::Object(_)) => Some(IdentifierInput::Search(Box::new(
                Query::parse(&q).map_err(|e| DomainError::Invalid(format!("`identifier` search query: {e}")))?,
            ))),
            Some(other) => {
                return Err(DomainError::Invalid(format!("`identifier` must be a string, got {}", kind_of(&other))));
            }
        };
        let mut team_query = None;
        let team = match obj.remove("team") {
            None => Field::Absent,
            Some(q @ Value::Object(_)) => {
                team_query = Some(Box::new(
                    Query::parse(&q).map_err(|e| DomainError::Invalid(format!("`team` search query: {e}")))?,
                ));
                Field::Absent
            }
            Some(Value::Null) => Field::Null,
            Some(Value::String(s)) => Field::Set(vec![s]),
            Some(Value::Array(items)) => {
                let mut teams = Vec::with_capacity(items.len());
                for t in items {
                    match t {
                        Value::String(s) => teams.push(s),
                        other => {
                            return Err(DomainError::Invalid(format!(
                                "`team` items must be strings, got {}",
                                kind_of(&other)
                            )));
                        }
                    }
                }
                Field::Set(teams)
            }
            Some(other) => {
                return Err(DomainError::Invalid(format!(
                    "`team` must be a string, an array of strings or a search query, got {}",
                    kind_of(&other)
                )));
            }
        };
        let mut map = |key: &str| -> Result<Option<Map<String, Value>>, DomainError> {
            match obj.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(m)) => Ok(Some(m)),
                Some(other) => Err(DomainError::Invalid(format!("`{key}` must be an object, got {}", kind_of(&other)))),
            }
        };
        let properties = map("properties")?;
        let relations = map("relations")?;
        Ok(EntityInput {
            identifier,
            title: opt_string(&obj, "title")?,
            icon: opt_string(&obj, "icon")?,
            team,
            team_query,
            properties,
            relations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_team_shapes() {
        let i = EntityInput::from_value(&json!({"identifier": "a", "team": "t"})).expect("ok");
        assert_eq!(i.team, Field::Set(vec!["t".to_string()]));
        let i = EntityInput::from_value(&json!({"team": null})).expect("ok");
        assert_eq!(i.team, Field::Null);
        assert!(EntityInput::from_value(&json!({"team": 3})).is_err());
        assert!(EntityInput::from_value(&json!({"properties": []})).is_err());
        assert!(EntityInput::from_value(&json!([1])).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::Blueprint;
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z ]{0,8}".prop_map(Value::String),
            prop_oneof![
                Just("identifier"),
                Just("title"),
                Just("team"),
                Just("properties"),
                Just("relations"),
                Just("type"),
                Just("schema")
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("identifier".to_string()),
                        Just("title".to_string()),
                        Just("team".to_string()),
                        Just("properties".to_string()),
                        Just("relations".to_string()),
                        Just("schema".to_string()),
                        Just("type".to_string()),
                        Just("required".to_string()),
                        "[a-z]{1,4}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any JSON body gives an entity input or an error, never a panic; parsing by reference and by value agree.
        #[test]
        fn entity_bodies_never_panic(v in arb_json()) {
            let a = EntityInput::from_value(&v);
            let b = EntityInput::from_owned(v);
            prop_assert_eq!(a, b);
        }

        /// Any JSON body gives a blueprint or an error, and compiling a parsed blueprint never panics.
        #[test]
        fn blueprint_bodies_never_panic(v in arb_json(), id in "[a-z]{1,5}") {
            let mut v = v;
            if let Value::Object(m) = &mut v {
                m.entry("identifier").or_insert(json!(id));
                m.entry("title").or_insert(json!("T"));
            }
            if let Ok(bp) = Blueprint::from_body(&v, "t", crate::Timestamp::from_millis(0), None) {
                let _ = bp.compile();
            }
        }
    }
}
