//! Mirror properties: a field of a related entity (`system.domain.$title`), read through relations when the
//! entity is read, so always current.

use berth_model::query::Meta;
use berth_model::{Blueprint, Entity};
use serde_json::Value;

use super::Sees;
use crate::State;

/// How many related entities one mirror value reads at most (a path through `many` relations fans out).
pub const MAX_MIRRORED: usize = 1000;
/// How deep a mirror of a mirror goes before it is null (a cycle of mirrors ends there).
const MAX_DEPTH: usize = 4;

#[derive(Debug)]
pub struct Mirror {
    pub name: String,
    /// The relations followed, from this blueprint.
    pub hops: Vec<String>,
    /// What is read at the end: `$identifier`, `$title`, `$team`, ... or a property (stored or derived).
    pub field: String,
    /// The blueprints passed through (the relations' targets), when they exist.
    pub blueprints: Vec<String>,
    /// Why the mirror computes null, when it does.
    pub error: Option<String>,
}

impl Mirror {
    /// Compiles `def` (`{"title"?, "path"}`) of blueprint `bp`.
    pub fn compile<'a>(
        name: &str,
        def: &Value,
        bp: &Blueprint,
        lookup: &dyn Fn(&str) -> Option<&'a Blueprint>,
    ) -> Mirror {
        let path = def.get("path").and_then(Value::as_str).unwrap_or_default();
        let mut parts: Vec<String> = path.split('.').map(str::to_string).collect();
        let field = parts.pop().unwrap_or_default();
        let mut m = Mirror { name: name.to_string(), hops: parts, field, blueprints: Vec::new(), error: None };
        if m.hops.is_empty() || m.field.is_empty() || m.hops.iter().any(String::is_empty) {
            m.error = Some(format!("`path` must be `relation[.relation...].field`, got {path:?}"));
            return m;
        }
        // Each hop must be a relation of the blueprint reached so far; the field, one of its properties, its
        // derived properties or a meta-property.
        let mut current: Option<&Blueprint> = Some(bp);
        for hop in &m.hops {
            let Some(at) = current else { break };
            match at.relations.get(hop) {
                None => {
                    m.error = Some(format!("`{hop}` is not a relation of blueprint `{}`", at.identifier));
                    return m;
                }
                Some(rel) => {
                    m.blueprints.push(rel.target.clone());
                    current = lookup(&rel.target);
                }
            }
        }
        if let Some(last) = current {
            let known = Meta::parse(&m.field).is_some()
                || last.schema.properties.contains_key(&m.field)
                || last.mirror_properties.contains_key(&m.field)
                || last.calculation_properties.contains_key(&m.field)
                || last.aggregation_properties.contains_key(&m.field);
            if !known {
                m.error = Some(format!("`{}` is not a property of blueprint `{}`", m.field, last.identifier));
            }
        }
        m
    }

    /// The mirrored value for `e` as `reader` sees it: one value, or an array when the path goes through a
    /// `many` relation; null where the path ends or the reader may not read a related entity.
    pub fn value(&self, state: &State, e: &Entity, reader: &dyn Sees, depth: usize) -> Value {
        if self.error.is_some() || depth > MAX_DEPTH {
            return Value::Null;
        }
        let mut many = false;
        let mut blueprint: &str = &e.blueprint;
        let mut current: Vec<&Entity> = vec![e];
        for hop in &self.hops {
            let Some(rel) = state.blueprint(blueprint).and_then(|b| b.def.relations.get(hop)) else {
                return Value::Null;
            };
            many |= rel.many;
            let mut next = Vec::new();
            'each: for x in &current {
                for id in x.relations.get(hop).map(Entity::relation_targets).unwrap_or_default() {
                    if next.len() >= MAX_MIRRORED {
                        break 'each;
                    }
                    if let Some(target) = state.entity(&rel.target, id).filter(|t| reader.can_read(t)) {
                        next.push(&**target);
                    }
                }
            }
            blueprint = &rel.target;
            current = next;
        }
        let read = |x: &Entity| match Meta::parse(&self.field) {
            Some(meta) => crate::search::meta_value(x, meta),
            None => match x.properties.get(&self.field) {
                Some(v) => v.clone(),
                None => super::value_at(state, x, &self.field, reader, depth + 1).unwrap_or(Value::Null),
            },
        };
        if many {
            Value::Array(current.into_iter().map(read).collect())
        } else {
            current.first().map_or(Value::Null, |x| read(x))
        }
    }
}
