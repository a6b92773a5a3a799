//! Blueprints: user-defined entity types.
//!
//! A blueprint is written as JSON (create, replace, or a JSON merge patch over its current form), parsed into
//! [`Blueprint`], and compiled into a [`CompiledBlueprint`] that validates entities. Unknown keys, at the top
//! level and inside property and relation definitions, are kept and echoed back. Relation targets are checked
//! by the engine, which knows which blueprints exist.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{self, MAX_TITLE_LEN};
use crate::schema::{PropertySchema, kind_of};
use crate::{DomainError, Fields, Timestamp};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct BlueprintSchema {
    /// Property definitions by key (JSON-Schema-like; unknown keys are kept).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Relation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub target: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub many: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

/// A blueprint as stored and returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Blueprint {
    pub identifier: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub schema: BlueprintSchema,
    #[serde(default)]
    pub relations: std::collections::BTreeMap<String, Relation>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub mirror_properties: Map<String, Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub calculation_properties: Map<String, Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub aggregation_properties: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub changelog_destination: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub team_inheritance: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ownership: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_in_global_search: Option<bool>,
    /// Unknown top-level keys, kept verbatim.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// Keys the server owns; they are ignored in request bodies.
const SERVER_KEYS: &[&str] = &["createdAt", "createdBy", "updatedAt", "updatedBy"];

impl Blueprint {
    /// Parses a request body into a blueprint, stamping it as written by `actor` at `now`
    /// (`created` keeps the creation stamp of the blueprint it replaces).
    pub fn from_body(
        body: &Value,
        actor: &str,
        now: Timestamp,
        created: Option<(Timestamp, String)>,
    ) -> Result<Blueprint, DomainError> {
        let mut obj = body.as_object().cloned().ok_or_else(|| {
            DomainError::InvalidBlueprint(format!("the body must be an object, got {}", kind_of(body)))
        })?;
        for k in SERVER_KEYS {
            obj.remove(*k);
        }
        for key in ["identifier", "title", "schema"] {
            if obj.get(key).is_none_or(Value::is_null) {
                return Err(DomainError::InvalidBlueprint(format!("`{key}` is required")));
            }
        }
        let (created_at, created_by) = created.unwrap_or_else(|| (now, actor.to_string()));
        obj.insert("createdAt".into(), Value::String(created_at.to_rfc3339()));
        obj.insert("createdBy".into(), Value::String(created_by));
        obj.insert("updatedAt".into(), Value::String(now.to_rfc3339()));
        obj.insert("updatedBy".into(), Value::String(actor.to_string()));
        let bp: Blueprint =
            serde_json::from_value(Value::Object(obj)).map_err(|e| DomainError::InvalidBlueprint(e.to_string()))?;
        Ok(bp)
    }

    /// The blueprint as JSON (what a merge patch applies to).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Validates the definition on its own (everything but relation targets) and compiles its validators.
    pub fn compile(&self) -> Result<CompiledBlueprint, DomainError> {
        let bad = DomainError::InvalidBlueprint;
        ids::validate_blueprint_id(&self.identifier)?;
        if self.title.trim().is_empty() {
            return Err(bad("`title` must not be empty".into()));
        }
        ids::validate_title("blueprint", &self.title, MAX_TITLE_LEN)?;
        let mut properties = HashMap::with_capacity(self.schema.properties.len());
        for (key, def) in &self.schema.properties {
            ids::validate_key("property", key)?;
            let schema = PropertySchema::compile(key, def).map_err(bad)?;
            schema.check_default(key).map_err(|e| bad(format!("property `{key}`: {e}")))?;
            properties.insert(key.clone(), schema);
        }
        for key in &self.schema.required {
            if !properties.contains_key(key) {
                return Err(bad(format!("`schema.required` names `{key}`, which is not a property")));
            }
        }
        for (key, rel) in &self.relations {
            ids::validate_key("relation", key)?;
            ids::validate_blueprint_id(&rel.target).map_err(|e| bad(format!("relation `{key}`: target: {e}")))?;
        }
        for (key, def) in &self.mirror_properties {
            ids::validate_key("mirror property", key)?;
            let path = def.get("path").and_then(Value::as_str).unwrap_or_default();
            if path.split('.').count() < 2 || path.split('.').any(str::is_empty) {
                return Err(bad(format!(
                    "mirror property `{key}`: `path` must look like `relation.property` (got {:?})",
                    path
                )));
            }
            let first = path.split('.').next().unwrap_or_default();
            if !self.relations.contains_key(first) {
                return Err(bad(format!("mirror property `{key}`: `{first}` is not a relation of this blueprint")));
            }
        }
        for (key, def) in &self.calculation_properties {
            ids::validate_key("calculation property", key)?;
            if !def.get("calculation").is_some_and(Value::is_string) {
                return Err(bad(format!("calculation property `{key}`: `calculation` (a jq expression) is required")));
            }
            if !def.get("type").is_some_and(Value::is_string) {
                return Err(bad(format!("calculation property `{key}`: `type` is required")));
            }
        }
        for (key, def) in &self.aggregation_properties {
            ids::validate_key("aggregation property", key)?;
            if !def.get("target").is_some_and(Value::is_string) {
                return Err(bad(format!("aggregation property `{key}`: `target` is required")));
            }
            if !def.get("calculationSpec").is_some_and(Value::is_object) {
                return Err(bad(format!("aggregation property `{key}`: `calculationSpec` is required")));
            }
        }
        for (kind, keys) in [
            ("mirror", self.mirror_properties.keys().collect::<Vec<_>>()),
            ("calculation", self.calculation_properties.keys().collect()),
            ("aggregation", self.aggregation_properties.keys().collect()),
        ] {
            if let Some(k) = keys.iter().find(|k| properties.contains_key(k.as_str())) {
                return Err(bad(format!("{kind} property `{k}` has the same key as a schema property")));
            }
        }
        Ok(CompiledBlueprint { properties, required: self.schema.required.clone() })
    }
}

/// A blueprint's validators, built once per definition.
#[derive(Clone, Debug)]
pub struct CompiledBlueprint {
    pub properties: HashMap<String, PropertySchema>,
    pub required: Vec<String>,
}

impl CompiledBlueprint {
    /// Validates an entity's full property map (after merge and defaults): known keys, values, required.
    pub fn validate_properties(&self, blueprint: &str, props: &Fields) -> Result<(), DomainError> {
        for (key, value) in props {
            let Some(schema) = self.properties.get(key) else {
                return Err(DomainError::SchemaMismatch(format!(
                    "property `{key}` is not defined in blueprint `{blueprint}`"
                )));
            };
            if !value.is_null() {
                schema.validate(&format_args!("properties.{key}"), value).map_err(DomainError::SchemaMismatch)?;
            }
        }
        for key in &self.required {
            if props.get(key).is_none_or(Value::is_null) {
                return Err(DomainError::SchemaMismatch(format!(
                    "property `{key}` is required by blueprint `{blueprint}`"
                )));
            }
        }
        Ok(())
    }

    /// Fills in `default` values for properties that are absent.
    pub fn apply_defaults(&self, props: &mut Fields) {
        for (key, schema) in &self.properties {
            if let Some(d) = &schema.default {
                if props.get(key).is_none_or(Value::is_null) {
                    props.insert(key, d.clone());
                }
            }
        }
    }
}

/// Applies a JSON merge patch (RFC 7386): objects merge key by key, `null` removes a key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bp(body: Value) -> Result<CompiledBlueprint, DomainError> {
        Blueprint::from_body(&body, "tester", Timestamp::from_millis(0), None)?.compile()
    }

    #[test]
    fn keeps_unknown_keys() {
        let body = json!({"identifier": "svc", "title": "Service", "x-custom": 1,
            "schema": {"properties": {"a": {"type": "string", "spec": "open-api", "whatever": [1]}}}});
        let b = Blueprint::from_body(&body, "t", Timestamp::from_millis(0), None).expect("parses");
        let v = b.to_value();
        assert_eq!(v["x-custom"], json!(1));
        assert_eq!(v["schema"]["properties"]["a"]["whatever"], json!([1]));
    }

    #[test]
    fn rejects_invalid_definitions() {
        assert!(
            bp(json!({"identifier": "svc", "title": "S", "schema": {"properties": {}, "required": ["x"]}})).is_err()
        );
        assert!(bp(json!({"identifier": "s s", "title": "S", "schema": {}})).is_err());
        assert!(bp(json!({"identifier": "svc", "schema": {}})).is_err());
        assert!(bp(json!({"identifier": "svc", "title": "S", "schema": {"properties": {"n": {"type": "number", "default": "x"}}}})).is_err());
        assert!(
            bp(json!({"identifier": "svc", "title": "S", "schema": {}, "mirrorProperties": {"m": {"path": "nope.x"}}}))
                .is_err()
        );
        assert!(bp(json!({"identifier": "svc", "title": "S", "schema": {"properties": "x"}})).is_err());
    }

    #[test]
    fn merge_patch_semantics() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
