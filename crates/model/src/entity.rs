//! Entities, and the shape a client sends to write one.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    pub properties: Option<Fields>,
    pub relations: Option<Fields>,
}

/// A string field of a body: absent, null, or a string.
fn opt_string(given: Option<Value>, key: &str) -> Result<Field<String>, DomainError> {
    match given {
        None => Ok(Field::Absent),
        Some(Value::Null) => Ok(Field::Null),
        Some(Value::String(s)) => Ok(Field::Set(s)),
        Some(other) => Err(DomainError::Invalid(format!("`{key}` must be a string, got {}", kind_of(&other)))),
    }
}

/// A JSON value read as an object (into `M`), as null, or as the name of its other kind: what a body gives
/// for an entity, or for its `properties` or `relations`.
#[derive(Debug, Default)]
enum ObjectOr<M> {
    Object(M),
    #[default]
    Null,
    Other(&'static str),
}

/// What an object is read into by [`ObjectOr`].
trait ReadObject: Sized {
    fn read<'de, A: serde::de::MapAccess<'de>>(access: A) -> Result<Self, A::Error>;
}

impl ReadObject for Fields {
    fn read<'de, A: serde::de::MapAccess<'de>>(access: A) -> Result<Fields, A::Error> {
        crate::fields::read_fields(access)
    }
}

impl ObjectOr<Fields> {
    fn into_fields(self, key: &str) -> Result<Option<Fields>, DomainError> {
        match self {
            ObjectOr::Object(fields) => Ok(Some(fields)),
            ObjectOr::Null => Ok(None),
            ObjectOr::Other(kind) => Err(DomainError::Invalid(format!("`{key}` must be an object, got {kind}"))),
        }
    }
}

impl<'de, M: ReadObject> Deserialize<'de> for ObjectOr<M> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ObjectOr<M>, D::Error> {
        struct ObjectOrVisitor<M>(std::marker::PhantomData<M>);
        impl<'de, M: ReadObject> serde::de::Visitor<'de> for ObjectOrVisitor<M> {
            type Value = ObjectOr<M>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, access: A) -> Result<ObjectOr<M>, A::Error> {
                M::read(access).map(ObjectOr::Object)
            }
            fn visit_unit<E>(self) -> Result<ObjectOr<M>, E> {
                Ok(ObjectOr::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<ObjectOr<M>, E> {
                Ok(ObjectOr::Other("boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ObjectOr<M>, E> {
                Ok(ObjectOr::Other("number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ObjectOr<M>, E> {
                Ok(ObjectOr::Other("number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ObjectOr<M>, E> {
                Ok(ObjectOr::Other("number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<ObjectOr<M>, E> {
                Ok(ObjectOr::Other("string"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ObjectOr<M>, A::Error> {
                // Read (not skipped) so that nesting deeper than the parser's limit is malformed JSON here too.
                while seq.next_element::<Value>()?.is_some() {}
                Ok(ObjectOr::Other("array"))
            }
        }
        deserializer.deserialize_any(ObjectOrVisitor(std::marker::PhantomData))
    }
}

/// The keys of an entity body the server reads, each as given (`None`: absent); the rest are ignored.
#[derive(Debug, Default)]
struct Parts {
    identifier: Option<Value>,
    title: Option<Value>,
    icon: Option<Value>,
    team: Option<Value>,
    properties: ObjectOr<Fields>,
    relations: ObjectOr<Fields>,
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

    /// Parses a request body it owns, moving its values instead of copying them.
    pub fn from_owned(v: Value) -> Result<EntityInput, DomainError> {
        let Value::Object(mut obj) = v else {
            return Err(DomainError::Invalid(format!("an entity must be an object, got {}", kind_of(&v))));
        };
        let mut shape = |key: &str| match obj.remove(key) {
            None | Some(Value::Null) => ObjectOr::Null,
            Some(Value::Object(m)) => ObjectOr::Object(m.into_iter().collect()),
            Some(other) => ObjectOr::Other(kind_of(&other)),
        };
        let (properties, relations) = (shape("properties"), shape("relations"));
        Self::from_parts(Parts {
            identifier: obj.remove("identifier"),
            title: obj.remove("title"),
            icon: obj.remove("icon"),
            team: obj.remove("team"),
            properties,
            relations,
        })
    }

    /// Checks and converts the parts of a body; the first error, in a fixed order of keys, is the answer.
    fn from_parts(parts: Parts) -> Result<EntityInput, DomainError> {
        let identifier = match parts.identifier {
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
        let team = match parts.team {
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
        let properties = parts.properties.into_fields("properties")?;
        let relations = parts.relations.into_fields("relations")?;
        Ok(EntityInput {
            identifier,
            title: opt_string(parts.title, "title")?,
            icon: opt_string(parts.icon, "icon")?,
            team,
            team_query,
            properties,
            relations,
        })
    }
}

/// One entity of a request body, read straight from the JSON text (no intermediate `serde_json::Value` for
/// the entity, its properties or its relations). A body of the wrong shape is an error of this entity alone
/// (a bulk request answers per item); only malformed JSON fails the whole request.
#[derive(Debug)]
pub struct EntityBody {
    /// The identifier as given, when it is a string (how an answer names the item).
    pub label: Option<String>,
    pub input: Result<EntityInput, DomainError>,
}

impl EntityBody {
    fn not_an_object(kind: &str) -> EntityBody {
        EntityBody { label: None, input: Err(DomainError::Invalid(format!("an entity must be an object, got {kind}"))) }
    }
}

/// The keys of an entity body, read without allocating.
enum BodyKey {
    Identifier,
    Title,
    Icon,
    Team,
    Properties,
    Relations,
    Other,
}

impl<'de> Deserialize<'de> for BodyKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<BodyKey, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = BodyKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<BodyKey, E> {
                Ok(match key {
                    "identifier" => BodyKey::Identifier,
                    "title" => BodyKey::Title,
                    "icon" => BodyKey::Icon,
                    "team" => BodyKey::Team,
                    "properties" => BodyKey::Properties,
                    "relations" => BodyKey::Relations,
                    _ => BodyKey::Other,
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl ReadObject for Parts {
    fn read<'de, A: serde::de::MapAccess<'de>>(mut access: A) -> Result<Parts, A::Error> {
        let mut parts = Parts::default();
        while let Some(key) = access.next_key::<BodyKey>()? {
            match key {
                BodyKey::Identifier => parts.identifier = Some(access.next_value()?),
                BodyKey::Title => parts.title = Some(access.next_value()?),
                BodyKey::Icon => parts.icon = Some(access.next_value()?),
                BodyKey::Team => parts.team = Some(access.next_value()?),
                BodyKey::Properties => parts.properties = access.next_value()?,
                BodyKey::Relations => parts.relations = access.next_value()?,
                BodyKey::Other => {
                    // Read (not skipped) so that nesting deeper than the parser's limit is malformed JSON
                    // wherever it is, as with any other body.
                    access.next_value::<Value>()?;
                }
            }
        }
        Ok(parts)
    }
}

impl<'de> Deserialize<'de> for EntityBody {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<EntityBody, D::Error> {
        Ok(match ObjectOr::<Parts>::deserialize(deserializer)? {
            ObjectOr::Object(parts) => {
                let label = parts.identifier.as_ref().and_then(Value::as_str).map(str::to_string);
                EntityBody { label, input: EntityInput::from_parts(parts) }
            }
            ObjectOr::Null => EntityBody::not_an_object("null"),
            ObjectOr::Other(kind) => EntityBody::not_an_object(kind),
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

        /// Read straight from JSON text, an entity body gives what parsing its `Value` gives, errors included.
        #[test]
        fn bodies_read_from_text_agree_with_values(v in arb_json()) {
            let text = serde_json::to_string(&v).expect("json");
            let body: EntityBody = serde_json::from_str(&text).expect("any JSON value is a body or its error");
            prop_assert_eq!(body.label.as_deref(), v.get("identifier").and_then(Value::as_str));
            prop_assert_eq!(body.input, EntityInput::from_owned(v));
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
