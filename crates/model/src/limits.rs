//! Bounds on what a write may put in the log, so that everything accepted can be read back.
//!
//! An event is decoded with serde_json's nesting limit (128 levels). The envelope around a property value
//! adds levels (`event.change.entity.properties.value`: 4; a snapshot chunk: 3 + `entity.properties`: 2), so
//! values are capped well below the decoder's limit: a write that would nest deeper is refused with a 422
//! naming the property, and nothing accepted can stop the log from replaying.

use serde_json::Value;

use crate::{Change, DomainError};

/// The deepest nesting of arrays and objects in one property value.
pub const MAX_VALUE_DEPTH: usize = 64;
/// The deepest nesting of any other change's JSON (blueprints, permissions, users, teams), envelope included.
pub const MAX_CHANGE_DEPTH: usize = 96;
/// The longest `run_id` a write may carry (it is copied into every event of the write).
pub const MAX_RUN_ID_LEN: usize = 256;
/// The longest `$datasource` kept (the writer's `User-Agent`; longer ones are cut).
pub const MAX_DATASOURCE_LEN: usize = 256;

/// Whether `v` nests arrays and objects deeper than `max` levels (a scalar is 0, `[]` is 1).
pub fn deeper_than(v: &Value, max: usize) -> bool {
    match v {
        Value::Array(items) => max == 0 || items.iter().any(|i| deeper_than(i, max - 1)),
        Value::Object(map) => max == 0 || map.values().any(|i| deeper_than(i, max - 1)),
        _ => false,
    }
}

/// Refuses a change whose JSON would nest too deep to be decoded again.
pub fn check_change(change: &Change) -> Result<(), DomainError> {
    match change {
        Change::EntityPut { entity } => {
            for (name, value) in entity.properties.iter() {
                if deeper_than(value, MAX_VALUE_DEPTH) {
                    return Err(DomainError::SchemaMismatch(format!(
                        "property `{name}` nests arrays and objects deeper than {MAX_VALUE_DEPTH} levels"
                    )));
                }
            }
            Ok(())
        }
        Change::EntityDeleted { .. } | Change::Refused { .. } => Ok(()),
        other => match serde_json::to_value(other) {
            Ok(v) if !deeper_than(&v, MAX_CHANGE_DEPTH) => Ok(()),
            Ok(_) => Err(DomainError::Invalid(format!(
                "the definition nests arrays and objects deeper than {MAX_CHANGE_DEPTH} levels"
            ))),
            Err(e) => Err(DomainError::Invalid(format!("the change cannot be recorded: {e}"))),
        },
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |v, _| json!({ "a": v }))
    }

    #[test]
    fn depth_counts_levels() {
        assert!(!deeper_than(&json!(1), 0));
        assert!(deeper_than(&json!([]), 0));
        assert!(!deeper_than(&json!([]), 1));
        assert!(!deeper_than(&nested(64), 64));
        assert!(deeper_than(&nested(65), 64));
        assert!(deeper_than(&json!([[1], {"a": [[2]]}]), 3));
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
