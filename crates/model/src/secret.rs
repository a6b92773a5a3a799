//! Organisation secrets (Port's `/v1/organization/secrets`): named values that action templates use as
//! `{{ .secrets.NAME }}`. A secret is a definition of kind `Secret` whose body is `{"value": {"sealed"},
//! "description"?}`: the server seals the value (an AEAD under its delivery key) before the definition is
//! written, so the log, snapshots, backups, the event feed and the audit log hold only the sealed form, and
//! no read shows even that.

use serde_json::{Map, Value, json};

use crate::{Definition, DomainError};

/// The most secrets an organisation keeps.
pub const MAX_SECRETS: usize = 500;
/// The longest secret value.
pub const MAX_VALUE: usize = 16 * 1024;

/// What a client sends to create (`secretName`, `secretValue`, `description`?) or change (`secretValue`?,
/// `description`?) a secret.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretInput {
    pub name: Option<String>,
    pub value: Option<String>,
    pub description: Option<String>,
}

impl SecretInput {
    pub fn parse(body: &Value) -> Result<SecretInput, DomainError> {
        let invalid = |m: &str| DomainError::Invalid(m.to_string());
        let map = body.as_object().ok_or_else(|| invalid("a secret is a JSON object"))?;
        if let Some(k) = map.keys().find(|k| !["secretName", "secretValue", "description"].contains(&k.as_str())) {
            return Err(DomainError::Invalid(format!(
                "a secret has no field {:?} (it has secretName, secretValue, description)",
                crate::limits::truncate(k, 60)
            )));
        }
        let text = |key: &str, max: usize| -> Result<Option<String>, DomainError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(Some(s.clone())),
                Some(_) => Err(DomainError::Invalid(format!("`{key}` is a string of 1 to {max} bytes"))),
            }
        };
        let name = text("secretName", 200)?;
        if let Some(n) = &name {
            if !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(invalid("`secretName` is letters, digits, `_` and `-`"));
            }
        }
        Ok(SecretInput { name, value: text("secretValue", MAX_VALUE)?, description: text("description", 1000)? })
    }
}

/// A secret's body: the sealed value and the description.
pub fn body(sealed: String, description: Option<String>) -> Value {
    let mut map = Map::new();
    map.insert("value".into(), json!({"sealed": sealed}));
    if let Some(d) = description {
        map.insert("description".into(), Value::String(d));
    }
    Value::Object(map)
}

/// The sealed value of a secret's body.
pub fn sealed(body: &Value) -> Option<&str> {
    body.pointer("/value/sealed").and_then(Value::as_str)
}

/// A secret as every read shows it: its name, description and times, never its value.
pub fn view(d: &Definition) -> Value {
    json!({
        "secretName": d.identifier,
        "description": d.body.get("description").cloned().unwrap_or(Value::Null),
        "createdAt": d.created_at, "updatedAt": d.updated_at, "createdBy": d.created_by, "updatedBy": d.updated_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_read_and_a_view_never_holds_the_value() {
        let i = SecretInput::parse(&json!({"secretName": "GH_TOKEN", "secretValue": "s3cret"})).expect("input");
        assert_eq!(i.name.as_deref(), Some("GH_TOKEN"));
        for bad in [json!({"secretName": "a b"}), json!({"secretValue": ""}), json!({"x": 1}), json!(3)] {
            assert!(SecretInput::parse(&bad).is_err(), "{bad}");
        }
        let d = Definition {
            kind: crate::DefinitionKind::Secret,
            identifier: "GH_TOKEN".into(),
            body: std::sync::Arc::new(body("SEALED-BYTES".into(), Some("ci".into()))),
            created_at: crate::Timestamp::from_millis(0),
            updated_at: crate::Timestamp::from_millis(0),
            created_by: "a".into(),
            updated_by: "a".into(),
        };
        assert!(!d.view().to_string().contains("SEALED"), "{}", d.view());
        assert_eq!(sealed(&d.body), Some("SEALED-BYTES"));
    }
}
