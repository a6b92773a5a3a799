//! The change-log event: every durable change in Berth is one of these, carrying the full new state of the
//! object it changes (never a diff), so replay, history and streaming need nothing else.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Blueprint, BlueprintPermissions, Credential, Definition, DefinitionKind, Entity, Team, Timestamp, User};

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Origin {
    #[default]
    Api,
    Ui,
    Integration,
    Automation,
    System,
}

/// One durable change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// Boxed: a blueprint is large, and every event of the hot path would pay for its size.
    BlueprintPut {
        blueprint: Box<Blueprint>,
    },
    BlueprintDeleted {
        identifier: String,
    },
    /// Shared with the state that applies it, so applying never copies the entity.
    EntityPut {
        entity: Arc<Entity>,
    },
    EntityDeleted {
        blueprint: String,
        identifier: String,
    },
    CredentialPut {
        credential: Credential,
    },
    CredentialDeleted {
        client_id: String,
    },
    TeamPut {
        team: Team,
    },
    TeamDeleted {
        name: String,
    },
    UserPut {
        user: User,
    },
    UserDeleted {
        email: String,
    },
    /// A blueprint's entity permissions (removed with the blueprint).
    PermissionsSet {
        blueprint: String,
        permissions: Box<BlueprintPermissions>,
    },
    /// A write that was refused (validation or permission): recorded so the audit log shows failed attempts.
    /// Applying it changes nothing.
    Refused {
        resource: String,
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blueprint: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identifier: Option<String>,
        /// Why it was refused (absent in events written before codes were recorded: see `status`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<crate::error::ErrorCode>,
        /// The HTTP status events written before codes recorded instead; new events leave it out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        message: String,
    },
    /// The key that signs access tokens; shared by every replica through the log.
    SigningKeySet {
        key: String,
    },
    /// A definition object (a page, ...) created or changed: its whole new version.
    DefinitionPut {
        definition: Arc<Definition>,
    },
    DefinitionDeleted {
        kind: DefinitionKind,
        identifier: String,
    },
}

impl Change {
    /// A refusal's code (read off the HTTP status an older event recorded); `None` for other changes.
    pub fn refusal_code(&self) -> Option<crate::error::ErrorCode> {
        match self {
            Change::Refused { code: Some(code), .. } => Some(*code),
            Change::Refused { status, .. } => Some(crate::error::ErrorCode::from_status(status.unwrap_or(500))),
            _ => None,
        }
    }
}

/// The version of an object a change replaced or deleted: what audit diffs are made of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Previous {
    Entity { entity: Arc<Entity> },
    Blueprint { blueprint: Box<Blueprint> },
    Team { team: Team },
    User { user: User },
    Permissions { permissions: Box<BlueprintPermissions> },
    Definition { definition: Arc<Definition> },
}

/// A change with its place in the global order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time: Timestamp,
    pub actor: String,
    pub origin: Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub change: Change,
    /// The version the change replaced (absent for creations, and in events written before it existed).
    /// Replay ignores it; the audit log shows it as the diff's left side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Previous>,
}
