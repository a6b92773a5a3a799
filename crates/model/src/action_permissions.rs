//! Who may execute and approve an action (Port's `GET|PATCH /v1/actions/{id}/permissions`):
//! `{"execute": {users, roles, teams, ownedByTeam, policy}, "approve": {users, roles, teams, policy}}`.
//! Users are named by email, teams by name; `ownedByTeam` (DAY-2 and DELETE) lets the members of the teams
//! owning the entity execute. A `policy` (`{queries: {name: rules-language query}, conditions: [jq]}`) decides
//! alone when present: its queries' rule values may hold `{{ jq }}` templates over the run's trigger data,
//! and every condition must yield `true` over `{queries: {name: [entities]}, ...trigger data}`; the lists
//! then only say who sees the action. Without a policy, the lists decide. Admins always may.
//!
//! Kept as a definition of kind `ActionPermissions` under the action's identifier; an action without one
//! has [`ActionPermissions::default`]: Admins execute and approve.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::DomainError;

/// The most names a list holds, and the most queries and conditions of a policy.
pub const MAX_NAMES: usize = 1000;
pub const MAX_POLICY_ITEMS: usize = 20;

/// A dynamic permission: queries over the catalog and jq conditions over their results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub queries: Map<String, Value>,
    pub conditions: Vec<String>,
}

/// Who may do one thing (execute, or approve).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Who {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub owned_by_team: bool,
    #[serde(default)]
    pub policy: Option<Policy>,
}

/// An action's permissions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionPermissions {
    pub execute: Who,
    pub approve: Who,
}

impl Default for ActionPermissions {
    fn default() -> Self {
        let admins = Who { roles: vec!["Admin".into()], ..Who::default() };
        ActionPermissions { execute: admins.clone(), approve: admins }
    }
}

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::Invalid(message.into())
}

fn names(v: &Value, at: &str) -> Result<Vec<String>, DomainError> {
    let list = v.as_array().ok_or_else(|| invalid(format!("`{at}` is a list of names")))?;
    if list.len() > MAX_NAMES {
        return Err(invalid(format!("`{at}` holds at most {MAX_NAMES} names")));
    }
    list.iter()
        .map(|n| match n.as_str() {
            Some(s) if !s.is_empty() && s.len() <= 320 => Ok(s.to_string()),
            _ => Err(invalid(format!("`{at}` is a list of names"))),
        })
        .collect()
}

impl Who {
    /// This grant with the fields of `patch` (an object) replacing its own.
    fn patched(&self, patch: &Value, at: &str, execute: bool) -> Result<Who, DomainError> {
        let map = patch.as_object().ok_or_else(|| invalid(format!("`{at}` is an object")))?;
        let mut who = self.clone();
        for (key, v) in map {
            match key.as_str() {
                "users" => who.users = names(v, &format!("{at}.users"))?,
                "roles" => who.roles = names(v, &format!("{at}.roles"))?,
                "teams" => who.teams = names(v, &format!("{at}.teams"))?,
                "ownedByTeam" if execute => {
                    who.owned_by_team =
                        v.as_bool().ok_or_else(|| invalid(format!("`{at}.ownedByTeam` is a boolean")))?
                }
                "policy" => who.policy = Policy::parse(v, &format!("{at}.policy"))?,
                // What a read shows of `approve`, sent back (a copy of the permissions): nothing to change.
                "ownedByTeam" if v == &Value::Bool(false) => {}
                other => {
                    return Err(invalid(format!(
                        "`{at}` has no field {:?} (it has users, roles, teams{}, policy)",
                        crate::limits::truncate(other, 60),
                        if execute { ", ownedByTeam" } else { "" }
                    )));
                }
            }
        }
        Ok(who)
    }
}

impl Policy {
    fn parse(v: &Value, at: &str) -> Result<Option<Policy>, DomainError> {
        let map = match v {
            Value::Null => return Ok(None),
            Value::Object(m) => m,
            _ => return Err(invalid(format!("`{at}` is {{queries, conditions}} or null"))),
        };
        if let Some(k) = map.keys().find(|k| !["queries", "conditions"].contains(&k.as_str())) {
            return Err(invalid(format!("`{at}` has no field {:?}", crate::limits::truncate(k, 60))));
        }
        let queries = map
            .get("queries")
            .and_then(Value::as_object)
            .filter(|q| !q.is_empty() && q.len() <= MAX_POLICY_ITEMS && q.values().all(Value::is_object))
            .ok_or_else(|| invalid(format!("`{at}.queries` names 1 to {MAX_POLICY_ITEMS} rules-language queries")))?
            .clone();
        let conditions: Vec<String> = map
            .get("conditions")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty() && c.len() <= MAX_POLICY_ITEMS)
            .and_then(|c| c.iter().map(|x| x.as_str().filter(|s| !s.trim().is_empty()).map(str::to_string)).collect())
            .ok_or_else(|| invalid(format!("`{at}.conditions` is 1 to {MAX_POLICY_ITEMS} jq expressions")))?;
        Ok(Some(Policy { queries, conditions }))
    }
}

impl ActionPermissions {
    /// Reads a stored body (one written by [`ActionPermissions::patched`]).
    pub fn from_body(body: &Value) -> ActionPermissions {
        ActionPermissions::deserialize(body).unwrap_or_default()
    }

    /// These permissions with a `PATCH` body applied: `execute` and `approve`, each field given replacing its
    /// own. Unknown fields are refused.
    pub fn patched(&self, patch: &Value) -> Result<ActionPermissions, DomainError> {
        let map = patch.as_object().ok_or_else(|| invalid("permissions are a JSON object"))?;
        let mut out = self.clone();
        for (key, v) in map {
            match key.as_str() {
                "execute" => out.execute = self.execute.patched(v, "execute", true)?,
                "approve" => out.approve = self.approve.patched(v, "approve", false)?,
                other => {
                    return Err(invalid(format!(
                        "permissions have no field {:?} (they have execute, approve)",
                        crate::limits::truncate(other, 60)
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Every jq expression the permissions hold (the policies' conditions and their queries' templates),
    /// with where it is.
    pub fn jq(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (at, who) in [("execute", &self.execute), ("approve", &self.approve)] {
            if let Some(p) = &who.policy {
                for (i, c) in p.conditions.iter().enumerate() {
                    out.push((format!("{at}.policy.conditions[{i}]"), c.clone()));
                }
            }
        }
        out
    }

    /// As the API answers them.
    pub fn view(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patch_replaces_the_fields_it_names_and_refuses_unknown_ones() {
        let p = ActionPermissions::default();
        assert_eq!(p.execute.roles, vec!["Admin"]);
        let q = p
            .patched(&json!({"execute": {"roles": ["Member"], "teams": ["core"], "ownedByTeam": true}}))
            .expect("patch");
        assert_eq!(q.execute.roles, vec!["Member"]);
        assert!(q.execute.owned_by_team);
        assert_eq!(q.approve.roles, vec!["Admin"], "approve untouched");
        let r = q
            .patched(&json!({"approve": {"users": ["a@x.io"], "policy": {"queries": {"me": {"rules": []}},
                "conditions": [".queries.me | length > 0"]}}}))
            .expect("policy");
        assert_eq!(r.jq().len(), 1);
        assert_eq!(ActionPermissions::from_body(&r.view()), r, "stored and read back");
        // What a read shows patches back to the same (a copy to another portal).
        assert_eq!(ActionPermissions::default().patched(&r.view()).expect("round trip"), r);
        for bad in [
            json!({"run": {}}),
            json!({"execute": {"users": "a"}}),
            json!({"approve": {"ownedByTeam": true}}),
            json!({"execute": {"policy": {"queries": {}, "conditions": ["true"]}}}),
            json!({"execute": {"policy": {"queries": {"a": {}}, "conditions": []}}}),
            json!([]),
        ] {
            assert!(p.patched(&bad).is_err(), "{bad}");
        }
    }
}
