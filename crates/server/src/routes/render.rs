//! How entities and blueprints are written out: Port's field names, `include` / `exclude` projections.

use berth_model::Entity;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::extract::Params;

/// Which fields of an entity a read returns (`include` / `exclude`, each repeated or comma-joined).
/// Field names: `identifier`, `title`, `icon`, `blueprint`, `team`, `properties`, `properties.<p>`,
/// `relations`, `relations.<r>`, `createdAt`, `createdBy`, `updatedAt`, `updatedBy`, `$datasource`.
#[derive(Debug, Default, Clone)]
pub struct Projection {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Projection {
    pub fn from_params(p: &Params) -> Result<Projection, ApiError> {
        Ok(Projection { include: p.list("include"), exclude: p.list("exclude") })
    }

    pub fn is_identity(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    fn wanted(&self, path: &str) -> bool {
        let matches = |list: &[String]| {
            list.iter().any(|f| f == path || path.strip_prefix(f.as_str()).is_some_and(|rest| rest.starts_with('.')))
        };
        let parent_included = |list: &[String]| list.iter().any(|f| f.starts_with(&format!("{path}.")));
        (self.include.is_empty() || matches(&self.include) || parent_included(&self.include)) && !matches(&self.exclude)
    }

    /// Applies the projection to an entity rendered as a JSON object.
    pub fn apply(&self, value: Value) -> Value {
        if self.is_identity() {
            return value;
        }
        let Value::Object(obj) = value else {
            return value;
        };
        let mut out = Map::new();
        for (k, v) in obj {
            if !self.wanted(&k) {
                continue;
            }
            match (k.as_str(), v) {
                ("properties" | "relations", Value::Object(inner)) => {
                    let filtered: Map<String, Value> =
                        inner.into_iter().filter(|(ik, _)| self.wanted(&format!("{k}.{ik}"))).collect();
                    out.insert(k, Value::Object(filtered));
                }
                (_, v) => {
                    out.insert(k, v);
                }
            }
        }
        Value::Object(out)
    }
}

/// `{"ok": true, "entity": ...}` as bytes, serialised straight from the entity when nothing is projected
/// (the common case: no intermediate JSON tree).
pub fn entity_answer(e: &Entity, projection: &Projection) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Answer<'a, T: serde::Serialize> {
        ok: bool,
        entity: &'a T,
    }
    let bytes = if projection.is_identity() {
        serde_json::to_vec(&Answer { ok: true, entity: e })
    } else {
        serde_json::to_vec(&Answer { ok: true, entity: &entity(e, projection) })
    };
    bytes.unwrap_or_else(|_| {
        br#"{"ok":false,"error":"internal_error","message":"the entity could not be serialised"}"#.to_vec()
    })
}

pub fn entity(e: &Entity, projection: &Projection) -> Value {
    projection.apply(serde_json::to_value(e).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn include_and_exclude() {
        let v = json!({"identifier": "a", "title": "A", "properties": {"x": 1, "y": 2}, "relations": {"r": "b"}});
        let p = Projection { include: vec!["identifier".into(), "properties.x".into()], exclude: vec![] };
        assert_eq!(p.apply(v.clone()), json!({"identifier": "a", "properties": {"x": 1}}));
        let p = Projection { include: vec![], exclude: vec!["relations".into(), "properties.y".into()] };
        assert_eq!(p.apply(v), json!({"identifier": "a", "title": "A", "properties": {"x": 1}}));
    }
}
