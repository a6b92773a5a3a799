//! Ocean integrations (`../shared/brief/port-api.md` §8, §9, §14): the integration object Port's Ocean
//! framework reads and writes (`/v1/integration/{identifier}`), and what an integration reports about its
//! resyncs (logs, sync metrics, kind examples). Pure: this module checks an integration's body and reads
//! a report; the engine keeps the records, the server serves the routes.
//!
//! The server only stores an integration's `config` (its jq mapping): Ocean evaluates it itself. Fields
//! Berth knows are checked by type; fields it does not know are kept as sent (Ocean adds fields from one
//! version to the next, and refusing them would stop it), within the definition size limit.

use serde_json::{Map, Value};

use crate::DomainError;

/// The most integrations an organisation has.
pub const MAX_INTEGRATIONS: usize = 100;
/// The log batches kept per integration (the oldest are dropped past it).
pub const MAX_LOG_BATCHES: usize = 100;
/// The most lines one log request takes, and the longest message kept (longer ones are cut).
pub const MAX_LOG_LINES: usize = 500;
pub const MAX_LOG_MESSAGE: usize = 2_048;
/// The resyncs whose metrics are kept per integration.
pub const MAX_SYNCS: usize = 50;
/// The kinds of one resync whose metrics are kept.
pub const MAX_SYNC_KINDS: usize = 100;
/// The raw examples kept per kind, the largest one example, and the kinds with examples per integration.
pub const MAX_EXAMPLES: usize = 10;
pub const MAX_EXAMPLE_BYTES: usize = 16 * 1024;
pub const MAX_EXAMPLE_KINDS: usize = 100;
/// The most resources (kinds mapped) an integration's config holds.
pub const MAX_RESOURCES: usize = 500;

/// The statuses of `resyncState.status`.
pub const RESYNC_STATUSES: [&str; 4] = ["running", "completed", "failed", "aborted"];

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::Invalid(message.into())
}

fn text(map: &Map<String, Value>, field: &str, max: usize) -> Result<(), DomainError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.len() <= max => Ok(()),
        Some(_) => Err(invalid(format!("`{field}` is a string of at most {max} bytes"))),
    }
}

fn flag(map: &Map<String, Value>, at: &str, field: &str) -> Result<(), DomainError> {
    match map.get(field) {
        None | Some(Value::Null | Value::Bool(_)) => Ok(()),
        Some(_) => Err(invalid(format!("`{at}{field}` is true or false"))),
    }
}

fn object<'a>(map: &'a Map<String, Value>, field: &str) -> Result<Option<&'a Map<String, Value>>, DomainError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(invalid(format!("`{field}` is an object"))),
    }
}

/// Checks an integration's body (without its identifier): the fields Berth reads have their types, the
/// config its bounds.
pub fn check(body: &Value) -> Result<(), DomainError> {
    let map = body.as_object().ok_or_else(|| invalid("an integration is a JSON object"))?;
    for field in [
        "title",
        "installationId",
        "installationAppType",
        "installationType",
        "version",
        "processingMode",
        "createPortResourcesOrigin",
        "oauthBrokerUrl",
    ] {
        text(map, field, 200)?;
    }
    for field in ["actionsProcessingEnabled", "incrementalSyncEnabled", "arePortResourcesInitialized"] {
        flag(map, "", field)?;
    }
    object(map, "changelogDestination")?;
    object(map, "resyncRequest")?;
    if let Some(config) = object(map, "config")? {
        check_config(config)?;
    }
    if let Some(state) = object(map, "resyncState")? {
        match state.get("status") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if RESYNC_STATUSES.contains(&s.as_str()) => {}
            Some(_) => {
                return Err(invalid(format!("`resyncState.status` is one of {}", RESYNC_STATUSES.join(", "))));
            }
        }
    }
    Ok(())
}

fn check_config(config: &Map<String, Value>) -> Result<(), DomainError> {
    for field in ["deleteDependentEntities", "createMissingRelatedEntities", "enableMergeEntity"] {
        flag(config, "config.", field)?;
    }
    match config.get("entityDeletionThreshold") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| (0.0..=1.0).contains(&f)) => {}
        Some(_) => return Err(invalid("`config.entityDeletionThreshold` is a number from 0 to 1")),
    }
    match config.get("resources") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(resources)) => {
            if resources.len() > MAX_RESOURCES {
                return Err(invalid(format!(
                    "`config.resources` has {} resources; the limit is {MAX_RESOURCES}",
                    resources.len()
                )));
            }
            for (i, r) in resources.iter().enumerate() {
                let kind = r.get("kind").and_then(Value::as_str);
                if !r.is_object() || kind.is_none_or(|k| k.is_empty() || k.len() > 200) {
                    return Err(invalid(format!(
                        "`config.resources[{i}]` is an object with a `kind` of 1 to 200 bytes"
                    )));
                }
            }
            Ok(())
        }
        Some(_) => Err(invalid("`config.resources` is an array")),
    }
}

/// A name an integration reports under (a kind, a resync's event id): 1 to 100 bytes of letters, digits
/// and `-_.:/@`, so it can be part of a record's key.
pub fn check_name(what: &str, name: &str) -> Result<(), DomainError> {
    let fine = !name.is_empty()
        && name.len() <= 100
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@'));
    if fine {
        Ok(())
    } else {
        Err(invalid(format!(
            "the {what} {:?} is 1 to 100 letters, digits or -_.:/@",
            crate::limits::truncate(name, 60)
        )))
    }
}

/// What an integration reports, as the engine records it.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// Log lines (`{message, level, timestamp, extra}`), as Ocean sends them to `logAttributes.ingestUrl`.
    Logs(Vec<Value>),
    /// One resync's metrics per kind (`kindIdentifier` → Ocean's `syncKindMetrics`), merged into what the
    /// resync reported before.
    SyncMetrics { event: String, kinds: Map<String, Value> },
    /// The latest raw examples of a kind (replacing the earlier ones).
    Examples { kind: String, examples: Vec<Value> },
}

impl Report {
    /// Reads `{logs: [...]}`: at most [`MAX_LOG_LINES`] lines, each an object with a `message`; messages cut
    /// to [`MAX_LOG_MESSAGE`] bytes, `extra` kept only when small.
    pub fn logs(body: &Value) -> Result<Report, DomainError> {
        let lines = body.get("logs").and_then(Value::as_array).ok_or_else(|| invalid("the body is `{logs: [...]}`"))?;
        if lines.len() > MAX_LOG_LINES {
            return Err(invalid(format!("{} log lines; one request takes at most {MAX_LOG_LINES}", lines.len())));
        }
        let mut kept = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let Some(m) = line.as_object() else {
                return Err(invalid(format!("`logs[{i}]` is an object")));
            };
            let message = match m.get("message") {
                Some(Value::String(s)) => crate::limits::truncate(s, MAX_LOG_MESSAGE).to_string(),
                Some(other) => crate::limits::truncate(&other.to_string(), MAX_LOG_MESSAGE).to_string(),
                None => String::new(),
            };
            let mut out = Map::new();
            out.insert("message".into(), Value::String(message));
            for field in ["level", "timestamp"] {
                if let Some(Value::String(s)) = m.get(field) {
                    out.insert(field.into(), Value::String(crate::limits::truncate(s, 64).to_string()));
                }
            }
            if let Some(extra) = m.get("extra").filter(|e| e.to_string().len() <= 1_024) {
                out.insert("extra".into(), extra.clone());
            }
            kept.push(Value::Object(out));
        }
        Ok(Report::Logs(kept))
    }

    /// Reads one kind's metrics (`PUT .../syncMetrics/resync/{event}/kind/{kind}`: `{syncKindMetrics}`).
    pub fn kind_metrics(event: &str, kind: &str, body: &Value) -> Result<Report, DomainError> {
        check_name("resync event id", event)?;
        check_name("kind", kind)?;
        let metrics = body
            .get("syncKindMetrics")
            .filter(|m| m.is_object())
            .ok_or_else(|| invalid("the body is `{syncKindMetrics: {...}}`"))?;
        let mut kinds = Map::new();
        kinds.insert(kind.to_string(), metrics.clone());
        Ok(Report::SyncMetrics { event: event.to_string(), kinds })
    }

    /// Reads several kinds' metrics (`POST .../syncMetrics`: `{syncKindsMetrics: [{eventId, kindIdentifier,
    /// ...}]}`), one report per resync event named.
    pub fn kinds_metrics(body: &Value) -> Result<Vec<Report>, DomainError> {
        let all = body
            .get("syncKindsMetrics")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("the body is `{syncKindsMetrics: [...]}`"))?;
        if all.len() > MAX_SYNC_KINDS {
            return Err(invalid(format!("{} kinds; one request takes at most {MAX_SYNC_KINDS}", all.len())));
        }
        let mut by_event: Vec<(String, Map<String, Value>)> = Vec::new();
        for (i, m) in all.iter().enumerate() {
            let event = m.get("eventId").and_then(Value::as_str).unwrap_or_default();
            let kind = m.get("kindIdentifier").and_then(Value::as_str).unwrap_or_default();
            check_name("resync event id", event).map_err(|e| invalid(format!("`syncKindsMetrics[{i}]`: {e}")))?;
            check_name("kind", kind).map_err(|e| invalid(format!("`syncKindsMetrics[{i}]`: {e}")))?;
            match by_event.iter_mut().find(|(e, _)| e == event) {
                Some((_, kinds)) => {
                    kinds.insert(kind.to_string(), m.clone());
                }
                None => {
                    let mut kinds = Map::new();
                    kinds.insert(kind.to_string(), m.clone());
                    by_event.push((event.to_string(), kinds));
                }
            }
        }
        Ok(by_event.into_iter().map(|(event, kinds)| Report::SyncMetrics { event, kinds }).collect())
    }

    /// Reads a kind's raw examples (`{examples: [...]}`): the first [`MAX_EXAMPLES`], each at most
    /// [`MAX_EXAMPLE_BYTES`] of JSON (a larger one is left out).
    pub fn examples(kind: &str, body: &Value) -> Result<Report, DomainError> {
        check_name("kind", kind)?;
        let all =
            body.get("examples").and_then(Value::as_array).ok_or_else(|| invalid("the body is `{examples: [...]}`"))?;
        let examples = all
            .iter()
            .filter(|e| serde_json::to_vec(e).map(|b| b.len()).unwrap_or(usize::MAX) <= MAX_EXAMPLE_BYTES)
            .take(MAX_EXAMPLES)
            .cloned()
            .collect();
        Ok(Report::Examples { kind: kind.to_string(), examples })
    }
}

/// The key prefix of an integration's records of one sort (`log`, `sync`, `examples`): `{integration}#{sort}#`.
/// `#` is in no identifier, so an integration's records are found by prefix.
pub fn record_prefix(integration: &str, sort: &str) -> String {
    format!("{integration}#{sort}#")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_integration_is_checked_by_the_fields_berth_reads_and_keeps_the_rest() {
        let ok = json!({"installationAppType": "mytest", "version": "0.1.0", "newField": {"x": 1},
            "config": {"entityDeletionThreshold": 0.9, "resources": [{"kind": "item", "selector": {"query": "true"}}]},
            "resyncState": {"status": "running"}, "actionsProcessingEnabled": false});
        check(&ok).expect("fine");
        for (bad, says) in [
            (json!({"version": 1}), "`version`"),
            (json!({"config": {"entityDeletionThreshold": 1.5}}), "entityDeletionThreshold"),
            (json!({"config": {"resources": [{"selector": {}}]}}), "resources[0]"),
            (json!({"config": {"resources": {}}}), "array"),
            (json!({"resyncState": {"status": "done"}}), "resyncState.status"),
            (json!({"incrementalSyncEnabled": "yes"}), "incrementalSyncEnabled"),
            (json!([]), "object"),
        ] {
            let e = check(&bad).expect_err("refused").to_string();
            assert!(e.contains(says), "{e} should name {says}");
        }
    }

    #[test]
    fn reports_are_read_within_their_bounds() {
        let long = "x".repeat(MAX_LOG_MESSAGE * 2);
        let Report::Logs(lines) =
            Report::logs(&json!({"logs": [{"message": long, "level": "INFO", "extra": {"a": 1}}]})).expect("read")
        else {
            panic!("logs")
        };
        assert_eq!(lines[0]["message"].as_str().map(str::len), Some(MAX_LOG_MESSAGE));
        assert_eq!(lines[0]["extra"], json!({"a": 1}));
        let too_many: Vec<Value> = (0..=MAX_LOG_LINES).map(|_| json!({"message": "m"})).collect();
        assert!(Report::logs(&json!({"logs": too_many})).is_err());
        assert!(Report::logs(&json!({"lines": []})).is_err());

        let reports = Report::kinds_metrics(&json!({"syncKindsMetrics": [
            {"eventId": "e1", "kindIdentifier": "item-0", "metrics": {}},
            {"eventId": "e1", "kindIdentifier": "other-0", "metrics": {}},
            {"eventId": "e2", "kindIdentifier": "item-0", "metrics": {}}]}))
        .expect("read");
        assert_eq!(reports.len(), 2);
        assert!(Report::kind_metrics("e1", "bad kind!", &json!({"syncKindMetrics": {}})).is_err());
        assert!(Report::kind_metrics("e1", "item-0", &json!({"syncKindMetrics": 3})).is_err());

        let big = json!({"blob": "y".repeat(MAX_EXAMPLE_BYTES)});
        let many: Vec<Value> = (0..20).map(|i| json!({"i": i})).chain([big]).collect();
        let Report::Examples { examples, .. } = Report::examples("item", &json!({"examples": many})).expect("read")
        else {
            panic!("examples")
        };
        assert_eq!(examples.len(), MAX_EXAMPLES);
    }
}
