//! Blueprint permissions (Port's `GET/PATCH /v1/blueprints/{bp}/permissions`): who may read, register,
//! update and unregister a blueprint's entities, and who may update single properties and relations.
//!
//! A grant names users (emails or client ids), teams, roles, and `ownedByTeam` (the caller's teams own the
//! entity). The read grant may add a `policy`: rules-language rules an entity must also match to be read.
//! Admins are never restricted. [`BlueprintPermissions::defaults`] is what a blueprint without stored
//! permissions has: everyone reads; Admins, the blueprint's moderators and members of an owning team write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::DomainError;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub owned_by_team: bool,
    /// Only on `read`: rules an entity must also match (the rules language).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityPermissions {
    pub read: Grant,
    pub register: Grant,
    pub update: Grant,
    pub unregister: Grant,
    /// Property → who may change it (instead of `update`, for that property).
    #[serde(default)]
    pub update_properties: BTreeMap<String, Grant>,
    /// Relation → who may change it (instead of `update`, for that relation).
    #[serde(default)]
    pub update_relations: BTreeMap<String, Grant>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueprintPermissions {
    pub entities: EntityPermissions,
}

impl BlueprintPermissions {
    /// A blueprint's permissions until someone sets them.
    pub fn defaults(blueprint: &str) -> BlueprintPermissions {
        let writers = Grant {
            roles: vec!["Admin".into(), format!("{blueprint}-moderator")],
            owned_by_team: true,
            ..Grant::default()
        };
        BlueprintPermissions {
            entities: EntityPermissions {
                read: Grant {
                    roles: vec!["Admin".into(), "Member".into(), format!("{blueprint}-moderator")],
                    ..Grant::default()
                },
                register: writers.clone(),
                update: writers.clone(),
                unregister: writers,
                update_properties: BTreeMap::new(),
                update_relations: BTreeMap::new(),
            },
        }
    }

    /// Applies a JSON merge patch (`PATCH .../permissions`) and checks the result.
    pub fn patched(&self, patch: &Value) -> Result<BlueprintPermissions, DomainError> {
        let mut current = serde_json::to_value(self).map_err(|e| DomainError::Invalid(e.to_string()))?;
        crate::blueprint::merge_patch(&mut current, patch);
        let out: BlueprintPermissions =
            serde_json::from_value(current).map_err(|e| DomainError::Invalid(format!("invalid permissions: {e}")))?;
        out.check()?;
        Ok(out)
    }

    /// A policy only on `read`, and one that parses; roles that exist.
    pub fn check(&self) -> Result<(), DomainError> {
        let e = &self.entities;
        let writes = [("register", &e.register), ("update", &e.update), ("unregister", &e.unregister)];
        let extra = e.update_properties.iter().chain(e.update_relations.iter()).map(|(k, g)| (k.as_str(), g));
        for (name, grant) in writes.into_iter().chain(extra) {
            if grant.policy.is_some() {
                return Err(DomainError::Invalid(format!("`{name}`: only `read` takes a `policy`")));
            }
        }
        for grant in [&e.read, &e.register, &e.update, &e.unregister]
            .into_iter()
            .chain(e.update_properties.values())
            .chain(e.update_relations.values())
        {
            for role in &grant.roles {
                crate::credential::check_role(role).map_err(DomainError::Invalid)?;
            }
        }
        if let Some(policy) = &e.read.policy {
            // Contextual values are resolved for each reader; here they only have to be well formed.
            crate::query_context::parse_for(policy, None)
                .map_err(|err| DomainError::Invalid(format!("read policy: {}: {}", err.path, err.message)))?;
        }
        Ok(())
    }
}

/// How an entity's owning teams are found (a blueprint's `ownership`): its own `team` list, or the teams of
/// the entities reached by following a path of relations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    Direct,
    Inherited { path: Vec<String> },
}

impl Ownership {
    /// Reads a blueprint's `ownership` value (`{"type": "Direct"}` or `{"type": "Inherited", "path": "a.b"}`).
    pub fn of(value: Option<&Value>) -> Result<Ownership, String> {
        let Some(v) = value.filter(|v| !v.is_null()) else { return Ok(Ownership::Direct) };
        match v.get("type").and_then(Value::as_str) {
            Some("Direct") => Ok(Ownership::Direct),
            Some("Inherited") => {
                let path = v.get("path").and_then(Value::as_str).unwrap_or("");
                let steps: Vec<String> = path.split('.').map(str::trim).map(str::to_string).collect();
                if steps.iter().any(String::is_empty) {
                    return Err(format!("`ownership.path` must name relations joined by dots, got {path:?}"));
                }
                Ok(Ownership::Inherited { path: steps })
            }
            _ => Err("`ownership.type` must be \"Direct\" or \"Inherited\"".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_patch_and_checks() {
        let d = BlueprintPermissions::defaults("service");
        assert!(d.entities.update.roles.contains(&"service-moderator".to_string()));
        let p = d
            .patched(&json!({"entities": {"read": {"ownedByTeam": true, "roles": [], "policy": {"combinator": "and", "rules": [{"property": "tier", "operator": "=", "value": "1"}]}}}}))
            .expect("patch");
        assert!(p.entities.read.owned_by_team && p.entities.read.roles.is_empty());
        assert_eq!(p.entities.update, d.entities.update, "untouched parts stay");
        assert!(d.patched(&json!({"entities": {"update": {"policy": {}}}})).is_err(), "policy only on read");
        assert!(d.patched(&json!({"entities": {"read": {"roles": ["Owner"]}}})).is_err(), "unknown role");
        assert!(d.patched(&json!({"entities": {"read": {"policy": {"combinator": "xor"}}}})).is_err(), "bad policy");
        assert!(d.patched(&json!({"entities": {"reed": {}}})).is_err(), "unknown key");
    }

    #[test]
    fn ownership_values() {
        assert_eq!(Ownership::of(None), Ok(Ownership::Direct));
        assert_eq!(Ownership::of(Some(&json!({"type": "Direct"}))), Ok(Ownership::Direct));
        assert_eq!(
            Ownership::of(Some(&json!({"type": "Inherited", "path": "system.domain"}))),
            Ok(Ownership::Inherited { path: vec!["system".into(), "domain".into()] })
        );
        assert!(Ownership::of(Some(&json!({"type": "Inherited", "path": "a..b"}))).is_err());
        assert!(Ownership::of(Some(&json!({"type": "Other"}))).is_err());
    }
}
