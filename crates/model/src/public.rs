//! The public form of a change-log event: what leaves the process (the event feed, the audit log, and the
//! outbound streams to come). One projection, versioned, with every secret removed: credential and password
//! hashes, invitation codes, session epochs and the token signing key never appear in it.
//!
//! The shape (version [`VERSION`]):
//! `{v, seq, time, actor, origin, runId?, resourceType, action, status, blueprint?, identifier?,
//!   diff: {before, after}}`, where `resourceType` is `entity`, `blueprint`, `permissions`, `team`, `user`,
//! `app`, `signing_key`, or a definition object's kind (`page`, ...); `action` is `CREATE`, `UPDATE`, `DELETE` or `UPSERT`; `status` is `SUCCESS`, or
//! `FAILURE` for a refused attempt (its diff's `after` is `{code, status, message}`). Consumers outside the process
//! read it: a change of shape is a new version, never an edit of this one.

use serde_json::{Value, json};

use crate::{Change, Credential, Event, Previous, Team, User};

/// The version of the public event shape.
pub const VERSION: u32 = 1;

/// What an event did, in public terms.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicChange {
    pub resource: &'static str,
    pub action: &'static str,
    /// `SUCCESS`, or `FAILURE` for a refused attempt.
    pub status: &'static str,
    pub blueprint: Option<String>,
    pub identifier: Option<String>,
    pub before: Value,
    pub after: Value,
}

/// A user without its password hash, invitation code or session epoch; roles as Port names them (`[{name}]`).
pub fn user(user: &User) -> Value {
    json!({
        "email": user.email, "id": user.email, "firstName": user.first_name, "lastName": user.last_name,
        "picture": "", "providers": if user.sso.is_some() { json!(["oidc"]) } else { json!([]) },
        "status": user.status, "type": "standard",
        "roles": user.roles.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "createdAt": user.created_at, "updatedAt": user.updated_at,
    })
}

/// A machine credential without its secret's hash.
pub fn credential(c: &Credential) -> Value {
    json!({"clientId": c.client_id, "name": c.name, "roles": c.roles, "teams": c.teams})
}

fn team(t: &Team) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

fn previous(before: &Option<Previous>) -> Value {
    match before {
        Some(Previous::Entity { entity }) => serde_json::to_value(entity).unwrap_or(Value::Null),
        Some(Previous::Blueprint { blueprint }) => serde_json::to_value(blueprint).unwrap_or(Value::Null),
        Some(Previous::Team { team: t }) => team(t),
        Some(Previous::User { user: u }) => user(u),
        Some(Previous::Permissions { permissions }) => serde_json::to_value(permissions).unwrap_or(Value::Null),
        Some(Previous::Definition { definition }) => definition.view(),
        None => Value::Null,
    }
}

/// The public form of what `event` changed.
pub fn change(event: &Event) -> PublicChange {
    change_with(event, true)
}

/// [`change`] without the entity versions of an entity change (`before` and `after` left null: a caller
/// that serializes them straight from the event, as [`crate::subscription::message_body`] does, saves
/// building their JSON trees). Every other change is whole.
pub fn change_head(event: &Event) -> PublicChange {
    change_with(event, false)
}

fn change_with(event: &Event, entities: bool) -> PublicChange {
    if !entities {
        let put = if event.before.is_some() { "UPDATE" } else { "CREATE" };
        let head = |action, blueprint: &str, identifier: &str| PublicChange {
            resource: "entity",
            action,
            status: "SUCCESS",
            blueprint: Some(blueprint.to_string()),
            identifier: Some(identifier.to_string()),
            before: Value::Null,
            after: Value::Null,
        };
        match &event.change {
            Change::EntityPut { entity } => return head(put, &entity.blueprint, &entity.identifier),
            Change::EntityDeleted { blueprint, identifier } => return head("DELETE", blueprint, identifier),
            _ => {}
        }
    }
    let before = previous(&event.before);
    // Events written before `before` existed cannot tell a creation from an update.
    let put = if event.before.is_some() { "UPDATE" } else { "CREATE" };
    let done = |resource, action, blueprint: Option<&str>, identifier: Option<&str>, before, after| PublicChange {
        resource,
        action,
        status: "SUCCESS",
        blueprint: blueprint.map(str::to_string),
        identifier: identifier.map(str::to_string),
        before,
        after,
    };
    match &event.change {
        Change::EntityPut { entity } => done(
            "entity",
            put,
            Some(&entity.blueprint),
            Some(&entity.identifier),
            before,
            serde_json::to_value(entity).unwrap_or(Value::Null),
        ),
        Change::EntityDeleted { blueprint, identifier } => {
            done("entity", "DELETE", Some(blueprint), Some(identifier), before, Value::Null)
        }
        Change::BlueprintPut { blueprint } => done(
            "blueprint",
            put,
            Some(&blueprint.identifier),
            Some(&blueprint.identifier),
            before,
            serde_json::to_value(blueprint).unwrap_or(Value::Null),
        ),
        Change::BlueprintDeleted { identifier } => {
            done("blueprint", "DELETE", Some(identifier), Some(identifier), before, Value::Null)
        }
        Change::CredentialPut { credential: c } => {
            done("app", "UPSERT", None, Some(&c.client_id), Value::Null, credential(c))
        }
        Change::CredentialDeleted { client_id } => {
            done("app", "DELETE", None, Some(client_id), Value::Null, Value::Null)
        }
        Change::TeamPut { team: t } => done("team", put, None, Some(&t.name), before, team(t)),
        Change::TeamDeleted { name } => done("team", "DELETE", None, Some(name), before, Value::Null),
        Change::UserPut { user: u } => done("user", put, None, Some(&u.email), before, user(u)),
        Change::UserDeleted { email } => done("user", "DELETE", None, Some(email), before, Value::Null),
        Change::PermissionsSet { blueprint, permissions } => done(
            "permissions",
            put,
            Some(blueprint),
            Some(blueprint),
            before,
            serde_json::to_value(permissions).unwrap_or(Value::Null),
        ),
        Change::Refused { resource, action, blueprint, identifier, message, .. } => PublicChange {
            status: "FAILURE",
            resource: match resource.as_str() {
                "entity" => "entity",
                "blueprint" => "blueprint",
                "permissions" => "permissions",
                "team" => "team",
                "user" => "user",
                other => crate::DefinitionKind::ALL.iter().map(|k| k.as_str()).find(|k| *k == other).unwrap_or("app"),
            },
            action: match action.as_str() {
                "CREATE" => "CREATE",
                "DELETE" => "DELETE",
                "UPSERT" => "UPSERT",
                _ => "UPDATE",
            },
            blueprint: blueprint.clone(),
            identifier: identifier.clone(),
            before: Value::Null,
            after: {
                let code = event.change.refusal_code().unwrap_or(crate::error::ErrorCode::InternalError);
                json!({"code": code.as_str(), "status": code.status(), "message": message})
            },
        },
        Change::DefinitionPut { definition } => PublicChange {
            resource: definition.kind.as_str(),
            action: put,
            status: "SUCCESS",
            blueprint: None,
            identifier: Some(definition.identifier.clone()),
            before,
            after: definition.view(),
        },
        Change::DefinitionDeleted { kind, identifier } => PublicChange {
            resource: kind.as_str(),
            action: "DELETE",
            status: "SUCCESS",
            blueprint: None,
            identifier: Some(identifier.clone()),
            before,
            after: Value::Null,
        },
        // The key itself never leaves the process.
        Change::SigningKeySet { .. } => done("signing_key", "CREATE", None, None, Value::Null, Value::Null),
    }
}

/// The whole public event, as the feed serves it.
pub fn event(event: &Event) -> Value {
    let c = change(event);
    json!({
        "v": VERSION,
        "seq": event.seq,
        "time": event.time,
        "actor": event.actor,
        "origin": event.origin,
        "runId": event.run_id,
        "resourceType": c.resource,
        "action": c.action,
        "status": c.status,
        "blueprint": c.blueprint,
        "identifier": c.identifier,
        "diff": {"before": c.before, "after": c.after},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Origin, Timestamp};

    fn at(change: Change, before: Option<Previous>) -> Event {
        Event {
            seq: 7,
            time: Timestamp::from_millis(0),
            actor: "me".into(),
            origin: Origin::Api,
            run_id: None,
            change,
            before,
        }
    }

    #[test]
    fn no_secret_leaves_in_a_public_event() {
        let u: User = serde_json::from_value(json!({"email": "a@x.io", "roles": ["Admin"], "status": "active",
            "passwordHash": "$argon2id$SECRET-HASH", "inviteSha256": "SECRET-CODE", "sessionEpoch": 3,
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"}))
        .expect("user");
        let c = Credential {
            client_id: "berth_1".into(),
            name: "ci".into(),
            secret_sha256: "SECRET-SHA".into(),
            roles: vec!["Member".into()],
            teams: vec![],
            created_at: Timestamp::from_millis(0),
        };
        let events = [
            at(Change::UserPut { user: u.clone() }, Some(Previous::User { user: u.clone() })),
            at(Change::CredentialPut { credential: c }, None),
            at(Change::SigningKeySet { key: "SECRET-KEY".into() }, None),
        ];
        for e in &events {
            let text = event(e).to_string();
            assert!(!text.contains("SECRET"), "{text}");
            assert!(!text.contains("sessionEpoch") && !text.contains("passwordHash"), "{text}");
            assert_eq!(event(e)["v"], json!(VERSION));
        }
        assert_eq!(event(&events[0])["diff"]["after"]["roles"], json!([{"name": "Admin"}]));
        assert_eq!(event(&events[0])["action"], json!("UPDATE"));
        assert_eq!(event(&events[1])["resourceType"], json!("app"));
    }

    #[test]
    fn a_refusal_records_a_code_and_old_refusals_read_as_one() {
        let new: Change = serde_json::from_value(json!({"type": "refused", "resource": "entity", "action": "CREATE",
            "code": "schema_mismatch", "message": "no"}))
        .expect("a refusal with a code");
        let old: Change = serde_json::from_value(json!({"type": "refused", "resource": "entity", "action": "CREATE",
            "status": 403, "message": "no"}))
        .expect("a refusal written before codes");
        let text = serde_json::to_value(&new).expect("encodes").to_string();
        assert!(!text.contains("status"), "new refusals keep no HTTP status: {text}");
        let after = |c: Change| event(&at(c, None))["diff"]["after"].clone();
        assert_eq!(after(new), json!({"code": "schema_mismatch", "status": 422, "message": "no"}));
        assert_eq!(after(old), json!({"code": "forbidden", "status": 403, "message": "no"}));
    }
}
