//! Action runs (Port's run object, `../shared/brief/port-api.md` §6.2): one execution of a self-service
//! action or an automation, its status, links, logs and approval. A run is a definition object of kind
//! `Run` (its identifier the run's id, `r_` and 16 letters or digits), written by the engine's run commands
//! only, so runs are events in the log like everything else: history, audit, time travel and replicas. A
//! run's logs are definitions of kind `RunLog`, kept as `{run}#{number}` (see [`log_key`]).
//!
//! This module holds the run's shape ([`Run`]) and reads what clients send to change one ([`RunPatch`],
//! [`LogInput`], [`Decision`]); pure: the engine decides who may do what.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{DomainError, Timestamp};

/// The most links a run shows.
pub const MAX_LINKS: usize = 20;
/// The longest link, label or external run id.
pub const MAX_SHORT_TEXT: usize = 2048;
/// The longest summary or log message.
pub const MAX_LONG_TEXT: usize = 64 * 1024;
/// The most log lines one run keeps, and the most bytes of them (a backend that logs more is told so).
pub const MAX_LOGS: u32 = 10_000;
pub const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;
/// The length of a run id after its `r_`.
pub const RUN_ID_LEN: usize = 16;

/// Where a run comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Source {
    Ui,
    Api,
    Automation,
}

/// A run's status: waiting for its approvers, running, or ended (and then frozen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    WaitingForApproval,
    InProgress,
    Success,
    Failure,
}

impl Status {
    /// Whether the run has ended (nothing about it changes any more).
    pub fn ended(self) -> bool {
        matches!(self, Status::Success | Status::Failure)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::WaitingForApproval => "WAITING_FOR_APPROVAL",
            Status::InProgress => "IN_PROGRESS",
            Status::Success => "SUCCESS",
            Status::Failure => "FAILURE",
        }
    }

    /// An ending status as clients send it (`SUCCESS` or `FAILURE`).
    fn ending(v: &Value, what: &str) -> Result<Status, DomainError> {
        match v.as_str() {
            Some("SUCCESS") => Ok(Status::Success),
            Some("FAILURE") => Ok(Status::Failure),
            _ => Err(DomainError::Invalid(format!("`{what}` is SUCCESS or FAILURE"))),
        }
    }
}

/// What a run names (its action, blueprint or entity), as Port shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Named {
    pub identifier: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub deleted: bool,
}

/// An approver's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vote {
    pub user_id: String,
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub at: Timestamp,
}

/// A run's approval: `PENDING` until decided, then `APPROVED` or `DECLINED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub state: String,
    /// Who decided it (the last vote that did).
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Every vote, in order.
    #[serde(default)]
    pub votes: Vec<Vote>,
}

/// One run, as it is kept (the body of its definition) and, through [`Run::view`], shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub action: Named,
    #[serde(default)]
    pub blueprint: Option<Named>,
    #[serde(default)]
    pub entity: Option<Named>,
    /// The inputs, defaults filled in; an encrypted input's value is sealed (see `trigger`).
    pub properties: Map<String, Value>,
    pub source: Source,
    /// The action's `requiredApproval` when the run was made.
    pub required_approval: Value,
    pub status: Status,
    pub status_label: Option<String>,
    #[serde(default)]
    pub link: Vec<String>,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub approval: Option<Approval>,
    /// What was sent to the backend, templates rendered (organisation secrets masked).
    #[serde(default)]
    pub payload: Option<Value>,
    /// A synchronized webhook's answer.
    #[serde(default)]
    pub response: Option<Value>,
    /// Whether the run waits to be sent to its backend (set when it may start, cleared once sent).
    #[serde(default)]
    pub pending_execution: bool,
    /// Whether the approvers wait to be told by webhook (`approvalNotification: {"type": "webhook"}`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_notification: bool,
    /// Where the backend's own run is followed until it ends (a GitHub workflow run's API URL), when the
    /// action reports its status from it; cleared once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<String>,
    #[serde(default)]
    pub external_run_id: Option<String>,
    /// The user or app the run is for (`run_as`, else the caller).
    pub created_by: String,
    /// Who asked on `created_by`'s behalf (`run_as`).
    #[serde(default)]
    pub impersonated_by: Option<String>,
    pub updated_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default)]
    pub ended_at: Option<Timestamp>,
    /// How many log lines it has, and their bytes.
    #[serde(default)]
    pub logs: u32,
    #[serde(default)]
    pub log_bytes: u64,
    /// The trigger data templates are rendered over (`inputs`, `entity`, `trigger`, `event`, `action`), as it
    /// was when the run was made; never shown.
    #[serde(default)]
    pub trigger: Value,
}

impl Run {
    /// Reads a run's stored body.
    pub fn from_body(body: &Value) -> Result<Run, DomainError> {
        Run::deserialize(body).map_err(|e| DomainError::Internal(format!("a stored run does not read back: {e}")))
    }

    /// The run as the API shows it: Port's run object with its `id` (the trigger data left out).
    pub fn view(&self, id: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(map) = v.as_object_mut() {
            map.remove("trigger");
            map.remove("logs");
            map.remove("logBytes");
            map.remove("follow");
            map.insert("id".into(), Value::String(id.to_string()));
            map.insert("rawProperties".into(), Value::Object(self.properties.clone()));
            map.insert("status".into(), Value::String(self.status.as_str().into()));
        }
        v
    }

    /// Whether `user` may vote on this run's approval now (it waits, and `user` has not voted).
    pub fn awaits_vote_of(&self, user: &str) -> bool {
        self.status == Status::WaitingForApproval
            && self.approval.as_ref().is_some_and(|a| !a.votes.iter().any(|v| v.user_id == user))
    }
}

/// Whether `id` has the shape of a run id (`r_` and [`RUN_ID_LEN`] letters or digits).
pub fn is_run_id(id: &str) -> bool {
    id.strip_prefix("r_")
        .is_some_and(|rest| rest.len() == RUN_ID_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The key a run's log line `number` (from 1) is kept under: its run's id and the number, zero-padded so
/// that the keys sort in order.
pub fn log_key(run: &str, number: u32) -> String {
    format!("{run}#{number:06}")
}

/// A log line as the API shows it: `{id, runId, message, terminationStatus?, statusLabel?, createdBy,
/// createdAt}`.
pub fn log_view(key: &str, d: &crate::Definition) -> Value {
    let run = key.split_once('#').map_or(key, |(run, _)| run);
    let mut v = match &*d.body {
        Value::Object(m) => Value::Object(m.clone()),
        _ => Value::Object(Map::new()),
    };
    v["id"] = Value::String(key.to_string());
    v["runId"] = Value::String(run.to_string());
    v["createdBy"] = Value::String(d.created_by.clone());
    v["createdAt"] = serde_json::to_value(d.created_at).unwrap_or(Value::Null);
    v
}

/// A log line, as kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_label: Option<String>,
}

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::Invalid(message.into())
}

fn object<'a>(body: &'a Value, what: &str, allowed: &[&str]) -> Result<&'a Map<String, Value>, DomainError> {
    let map = body.as_object().ok_or_else(|| invalid(format!("{what} is a JSON object")))?;
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!(
            "{what} has no field {:?} (it has {})",
            crate::limits::truncate(k, 60),
            allowed.join(", ")
        ))),
        None => Ok(map),
    }
}

fn text(map: &Map<String, Value>, key: &str, max: usize) -> Result<Option<String>, DomainError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(invalid(format!("`{key}` is at most {max} bytes"))),
        Some(_) => Err(invalid(format!("`{key}` is a string"))),
    }
}

/// What `PATCH /v1/actions/runs/{id}` may change. Every field given overwrites (the last `link` wins).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunPatch {
    pub status: Option<Status>,
    pub status_label: Option<String>,
    pub link: Option<Vec<String>>,
    pub summary: Option<String>,
    pub external_run_id: Option<String>,
}

impl RunPatch {
    pub fn parse(body: &Value) -> Result<RunPatch, DomainError> {
        let map =
            object(body, "a run update", &["status", "statusLabel", "link", "summary", "externalRunId", "message"])?;
        let status = match map.get("status") {
            None | Some(Value::Null) => None,
            Some(s) => Some(Status::ending(s, "status")?),
        };
        let link = match map.get("link") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or_else(|| invalid("`link` is a URL or a list of URLs")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(invalid("`link` is a URL or a list of URLs")),
        };
        if let Some(links) = &link {
            if links.len() > MAX_LINKS || links.iter().any(|l| l.is_empty() || l.len() > MAX_SHORT_TEXT) {
                return Err(invalid(format!("`link` is at most {MAX_LINKS} URLs of 1 to {MAX_SHORT_TEXT} bytes")));
            }
        }
        if map.get("message").is_some_and(|m| !m.is_null() && !m.is_object()) {
            return Err(invalid("`message` (deprecated) is an object"));
        }
        Ok(RunPatch {
            status,
            status_label: text(map, "statusLabel", MAX_SHORT_TEXT)?,
            link,
            summary: text(map, "summary", MAX_LONG_TEXT)?,
            external_run_id: text(map, "externalRunId", MAX_SHORT_TEXT)?.filter(|s| !s.is_empty()),
        })
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == RunPatch::default()
    }
}

impl LogLine {
    /// Reads `POST /v1/actions/runs/{id}/logs`.
    pub fn parse(body: &Value) -> Result<LogLine, DomainError> {
        let map = object(body, "a run log", &["message", "terminationStatus", "statusLabel"])?;
        let message = text(map, "message", MAX_LONG_TEXT)?.ok_or_else(|| invalid("`message` is required"))?;
        let termination_status = match map.get("terminationStatus") {
            None | Some(Value::Null) => None,
            Some(s) => Some(Status::ending(s, "terminationStatus")?),
        };
        Ok(LogLine { message, termination_status, status_label: text(map, "statusLabel", MAX_SHORT_TEXT)? })
    }
}

/// An approver's answer to `PATCH /v1/actions/runs/{id}/approval`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub approve: bool,
    pub description: Option<String>,
}

impl Decision {
    pub fn parse(body: &Value) -> Result<Decision, DomainError> {
        let map = object(body, "an approval", &["status", "description"])?;
        let approve = match map.get("status").and_then(Value::as_str) {
            Some("APPROVE") => true,
            Some("DECLINE") => false,
            _ => return Err(invalid("`status` is APPROVE or DECLINE")),
        };
        Ok(Decision { approve, description: text(map, "description", MAX_SHORT_TEXT)? })
    }
}

/// What `POST /v1/actions/{id}/runs` sends: the inputs and, for DAY-2 and DELETE actions, the entity.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRequest {
    pub properties: Map<String, Value>,
    pub entity: Option<String>,
}

impl RunRequest {
    pub fn parse(body: &Value) -> Result<RunRequest, DomainError> {
        let map = object(body, "a run", &["properties", "entity"])?;
        let properties = match map.get("properties") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(_) => return Err(invalid("`properties` (the inputs) is an object")),
        };
        let entity = match map.get("entity") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => return Err(invalid("`entity` is an entity identifier")),
        };
        Ok(RunRequest { properties, entity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patches_logs_and_decisions_read_what_port_sends_and_refuse_the_rest() {
        let p = RunPatch::parse(&json!({"status": "SUCCESS", "statusLabel": "Deployed", "link": "https://ci/1",
            "summary": "done", "externalRunId": "gha-1"}))
        .expect("patch");
        assert_eq!(p.status, Some(Status::Success));
        assert_eq!(p.link, Some(vec!["https://ci/1".to_string()]));
        assert_eq!(RunPatch::parse(&json!({"link": ["a", "b"]})).expect("links").link.map(|l| l.len()), Some(2));
        for bad in [
            json!({"status": "IN_PROGRESS"}),
            json!({"status": "DONE"}),
            json!({"link": 3}),
            json!({"link": [1]}),
            json!({"nope": 1}),
            json!({"summary": "x".repeat(MAX_LONG_TEXT + 1)}),
            json!({"link": vec!["https://x"; MAX_LINKS + 1]}),
            json!([]),
        ] {
            assert!(RunPatch::parse(&bad).is_err(), "{bad}");
        }
        let l = LogLine::parse(&json!({"message": "hi", "terminationStatus": "FAILURE"})).expect("log");
        assert_eq!(l.termination_status, Some(Status::Failure));
        assert!(LogLine::parse(&json!({"terminationStatus": "SUCCESS"})).is_err(), "a message is required");
        assert!(Decision::parse(&json!({"status": "APPROVE"})).expect("d").approve);
        assert!(!Decision::parse(&json!({"status": "DECLINE", "description": "no"})).expect("d").approve);
        assert!(Decision::parse(&json!({"status": "MAYBE"})).is_err());
        assert!(RunRequest::parse(&json!({"properties": {"a": 1}, "entity": "x"})).is_ok());
        assert!(RunRequest::parse(&json!({"properties": [], "entity": "x"})).is_err());
        assert!(RunRequest::parse(&json!({"entity": 3})).is_err());
    }

    #[test]
    fn run_ids_and_log_keys() {
        assert!(is_run_id("r_abcdefgh12345678"));
        assert!(!is_run_id("r_abc"));
        assert!(!is_run_id("x_abcdefgh12345678"));
        assert!(!is_run_id("r_abcdefgh1234567!"));
        assert!(log_key("r_a", 2) < log_key("r_a", 10));
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            prop_oneof![Just("SUCCESS"), Just("FAILURE"), Just("APPROVE"), Just("DECLINE"), Just("")]
                .prop_map(|s| json!(s)),
            "[a-z: /]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("status".to_string()),
                        Just("link".to_string()),
                        Just("message".to_string()),
                        Just("terminationStatus".to_string()),
                        Just("properties".to_string()),
                        Just("entity".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn run_inputs_never_panic(body in json_value()) {
            let _ = RunPatch::parse(&body);
            let _ = LogLine::parse(&body);
            let _ = Decision::parse(&body);
            let _ = RunRequest::parse(&body);
        }
    }
}
