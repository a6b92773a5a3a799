//! Definition objects: everything that is "a JSON definition with an identifier, validated on write, written
//! by Admins" (pages today; scorecards, actions, webhooks, integrations and subscriptions as they arrive).
//! They share one change kind (`Change::DefinitionPut` / `DefinitionDeleted`), so the snapshot, the digest,
//! the audit log, history, backups and migrations handle every kind at once. What a kind's body may hold is
//! checked by the engine's module for that kind (`berth_engine::definitions`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DomainError, Timestamp};

/// The kinds of definition object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefinitionKind {
    /// A portal page (Port's pages: dashboards, blueprint and entity pages) with its widgets.
    Page,
    /// A scorecard of a blueprint (identified as `{blueprint}#{identifier}`: see [`scorecard_key`]).
    Scorecard,
    /// Where changes are delivered (see [`crate::subscription`]).
    Subscription,
    /// A self-service action or an automation (see [`crate::action`]).
    Action,
    /// Who may execute and approve an action (see [`crate::action_permissions`]), under the action's
    /// identifier; deleted with it.
    ActionPermissions,
    /// One run of an action (see [`crate::run`]); written by the engine's run commands only.
    Run,
    /// One log line of a run, kept as `{run}#{number}` ([`crate::run::log_key`]).
    RunLog,
    /// An organisation secret (`{{ .secrets.NAME }}` in action templates): its value sealed by the server
    /// before it is written, never shown.
    Secret,
    /// An inbound webhook: its ingest key, security and mappings (see [`crate::webhook`]).
    Webhook,
    /// A request an inbound webhook received, kept as `{webhook}#{key}` until and after it is processed;
    /// written by the ingest route and the ingestion worker only.
    WebhookEvent,
    /// An Ocean integration (see [`crate::integration`]): its installation, mapping config and resync
    /// state, as Ocean reads and writes it.
    Integration,
    /// What an integration reported, kept as `{integration}#{log|sync|examples}#{key}`
    /// ([`crate::integration::record_prefix`]): written by the engine's `RecordIntegration` only, for
    /// Admins (Ocean's credentials), and deleted with the integration.
    IntegrationRecord,
}

impl DefinitionKind {
    /// Every kind.
    pub const ALL: [DefinitionKind; 12] = [
        DefinitionKind::Page,
        DefinitionKind::Scorecard,
        DefinitionKind::Subscription,
        DefinitionKind::Action,
        DefinitionKind::ActionPermissions,
        DefinitionKind::Run,
        DefinitionKind::RunLog,
        DefinitionKind::Secret,
        DefinitionKind::Webhook,
        DefinitionKind::WebhookEvent,
        DefinitionKind::Integration,
        DefinitionKind::IntegrationRecord,
    ];

    /// The kind as the log, the audit log (`resourceType`) and messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            DefinitionKind::Page => "page",
            DefinitionKind::Scorecard => "scorecard",
            DefinitionKind::Subscription => "subscription",
            DefinitionKind::Action => "action",
            DefinitionKind::ActionPermissions => "action_permissions",
            DefinitionKind::Run => "run",
            DefinitionKind::RunLog => "run_log",
            DefinitionKind::Secret => "secret",
            DefinitionKind::Webhook => "webhook",
            DefinitionKind::WebhookEvent => "webhook_event",
            DefinitionKind::Integration => "integration",
            DefinitionKind::IntegrationRecord => "integration_record",
        }
    }

    /// Whether definitions of this kind are written by the engine's own commands (runs, their logs, webhook
    /// events), never through the generic definition writes.
    pub fn written_by_commands(self) -> bool {
        matches!(self, DefinitionKind::Run | DefinitionKind::RunLog | DefinitionKind::WebhookEvent)
    }
}

/// One definition object: its kind, identifier and body (the definition as its kind's API shows it, without
/// the fields below), with who made and last changed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    pub kind: DefinitionKind,
    pub identifier: String,
    pub body: Arc<Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub created_by: String,
    pub updated_by: String,
}

/// The longest definition body accepted, as JSON.
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;

impl Definition {
    /// The body with the identifier and the bookkeeping fields, as the API answers a definition.
    pub fn view(&self) -> Value {
        match self.kind {
            DefinitionKind::Run => {
                return match crate::run::Run::from_body(&self.body) {
                    Ok(run) => run.view(&self.identifier),
                    Err(_) => Value::Null,
                };
            }
            DefinitionKind::RunLog => return crate::run::log_view(&self.identifier, self),
            DefinitionKind::Secret => return crate::secret::view(self),
            _ => {}
        }
        let mut v = match &*self.body {
            Value::Object(m) => Value::Object(m.clone()),
            _ => Value::Object(Default::default()),
        };
        match (self.kind, split_scorecard_key(&self.identifier)) {
            (DefinitionKind::Scorecard, Some((blueprint, id))) => {
                v["identifier"] = Value::String(id.to_string());
                v["blueprint"] = Value::String(blueprint.to_string());
            }
            _ => v["identifier"] = Value::String(self.identifier.clone()),
        }
        v["createdAt"] = serde_json::to_value(self.created_at).unwrap_or(Value::Null);
        v["updatedAt"] = serde_json::to_value(self.updated_at).unwrap_or(Value::Null);
        v["createdBy"] = Value::String(self.created_by.clone());
        v["updatedBy"] = Value::String(self.updated_by.clone());
        v
    }

    /// Checks what every kind shares: an identifier by Port's rules, an object body of bounded size.
    pub fn check_common(kind: DefinitionKind, identifier: &str, body: &Value) -> Result<(), DomainError> {
        match (kind, split_scorecard_key(identifier)) {
            (DefinitionKind::Scorecard, Some((blueprint, id))) => {
                crate::ids::validate_blueprint_id(blueprint)?;
                crate::ids::validate_key("scorecard", id)?;
            }
            (DefinitionKind::Scorecard, None) => {
                return Err(DomainError::Invalid(format!(
                    "scorecard key {identifier:?} is not `blueprint#identifier`"
                )));
            }
            (_, _) => crate::ids::validate_key(kind.as_str(), identifier)?,
        }
        if !body.is_object() {
            return Err(DomainError::Invalid(format!("a {} is a JSON object", kind.as_str())));
        }
        let size = serde_json::to_vec(body).map(|b| b.len()).unwrap_or(usize::MAX);
        if size > MAX_DEFINITION_BYTES {
            return Err(DomainError::Invalid(format!(
                "the {} is {size} bytes of JSON; the limit is {MAX_DEFINITION_BYTES}",
                kind.as_str()
            )));
        }
        Ok(())
    }
}

/// The key a scorecard is kept under: its blueprint and identifier (a scorecard's identifier is unique in
/// its blueprint). `#` is in no identifier, so the key splits back unambiguously.
pub fn scorecard_key(blueprint: &str, identifier: &str) -> String {
    format!("{blueprint}#{identifier}")
}

/// The blueprint and identifier of a scorecard key.
pub fn split_scorecard_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('#')
}
