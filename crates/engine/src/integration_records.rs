//! What an Ocean integration reports (definitions of kind `IntegrationRecord`, kept as
//! `{integration}#{sort}#{key}`): log batches (`log`, keyed by time, the newest [`MAX_LOG_BATCHES`] kept),
//! one record per resync with its metrics per kind (`sync`, the newest [`MAX_SYNCS`] kept) and the latest
//! raw examples of each kind (`examples`, at most [`MAX_EXAMPLE_KINDS`] kinds). Bounded, so an integration
//! that reports forever holds a fixed amount of memory. Admins only (the access layer judges the changes).

use berth_model::integration::{MAX_EXAMPLE_KINDS, MAX_LOG_BATCHES, MAX_SYNC_KINDS, MAX_SYNCS, Report, record_prefix};
use berth_model::{Change, DefinitionKind, DomainError};
use serde_json::{Map, Value, json};

use crate::State;
use crate::command::{Outcome, WriteMeta};
use crate::definitions::version;

const KIND: DefinitionKind = DefinitionKind::IntegrationRecord;

/// The records of one sort of an integration, in key order.
fn records<'s: 'p, 'p>(
    state: &'s State,
    prefix: &'p str,
) -> impl Iterator<Item = &'s std::sync::Arc<berth_model::Definition>> + 'p {
    state.definitions_from(KIND, prefix).take_while(move |d| d.identifier.starts_with(prefix))
}

/// The deletions that leave room for one more record of a sort holding at most `keep` (its oldest keys
/// first: the keys sort by time).
fn pruned(state: &State, prefix: &str, keep: usize) -> Vec<Change> {
    let all: Vec<String> = records(state, prefix).map(|d| d.identifier.clone()).collect();
    let over = (all.len() + 1).saturating_sub(keep);
    all.into_iter().take(over).map(|identifier| Change::DefinitionDeleted { kind: KIND, identifier }).collect()
}

/// A time-ordered key: `t` and the write's time in milliseconds, then how many records of the sort were
/// written at that same millisecond.
fn time_key(state: &State, prefix: &str, meta: &WriteMeta) -> String {
    let stamp = format!("t{:013}", meta.now.millis().max(0));
    let same = records(state, prefix).filter(|d| d.identifier[prefix.len()..].starts_with(&stamp)).count();
    format!("{prefix}{stamp}-{same:04}")
}

/// Records `report` for `integration` (which must exist).
pub(crate) fn record(
    state: &State,
    meta: &WriteMeta,
    integration: &str,
    report: &Report,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    if state.definition(DefinitionKind::Integration, integration).is_none() {
        return Err(DomainError::not_found("integration", integration.to_string()));
    }
    let mut changes = Vec::new();
    let (key, body, existing) = match report {
        Report::Logs(lines) => {
            if lines.is_empty() {
                return Ok((Vec::new(), Outcome::Unchanged));
            }
            let prefix = record_prefix(integration, "log");
            changes.extend(pruned(state, &prefix, MAX_LOG_BATCHES));
            (time_key(state, &prefix, meta), json!({"logs": lines}), None)
        }
        Report::SyncMetrics { event, kinds } => {
            let prefix = record_prefix(integration, "sync");
            let found = records(state, &prefix).find(|d| d.body.get("eventId").and_then(Value::as_str) == Some(event));
            match found {
                Some(d) => {
                    let mut all = d.body.get("kinds").and_then(Value::as_object).cloned().unwrap_or_default();
                    for (k, v) in kinds {
                        if all.len() < MAX_SYNC_KINDS || all.contains_key(k) {
                            all.insert(k.clone(), v.clone());
                        }
                    }
                    let mut body = (*d.body).clone();
                    body["kinds"] = Value::Object(all);
                    (d.identifier.clone(), body, Some(d))
                }
                None => {
                    changes.extend(pruned(state, &prefix, MAX_SYNCS));
                    let kinds: Map<String, Value> =
                        kinds.iter().take(MAX_SYNC_KINDS).map(|(k, v)| (k.clone(), v.clone())).collect();
                    (time_key(state, &prefix, meta), json!({"eventId": event, "kinds": kinds}), None)
                }
            }
        }
        Report::Examples { kind, examples } => {
            let prefix = record_prefix(integration, "examples");
            let key = format!("{prefix}{kind}");
            let existing = state.definition(KIND, &key);
            if existing.is_none() && records(state, &prefix).count() >= MAX_EXAMPLE_KINDS {
                return Err(DomainError::Invalid(format!(
                    "integration `{integration}` keeps examples of {MAX_EXAMPLE_KINDS} kinds, the most it keeps"
                )));
            }
            (key, json!({"kind": kind, "examples": examples}), existing)
        }
    };
    let definition = version(meta, existing.map(|d| &**d), KIND, &key, body);
    let created = existing.is_none();
    changes.push(Change::DefinitionPut { definition: std::sync::Arc::clone(&definition) });
    Ok((changes, Outcome::Definition { definition, created }))
}

/// The deletions of every record of `integration` (when it is deleted).
pub(crate) fn all_of(state: &State, integration: &str) -> Vec<Change> {
    let prefix = format!("{integration}#");
    records(state, &prefix)
        .map(|d| Change::DefinitionDeleted { kind: KIND, identifier: d.identifier.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::definitions::DefinitionWrite;

    fn apply(state: &mut State, meta: &WriteMeta, cmd: &Command) -> Result<(), DomainError> {
        crate::execute_and_apply(state, meta, cmd).map(|_| ())
    }

    fn meta(millis: i64) -> WriteMeta {
        WriteMeta {
            actor: "ocean".into(),
            origin: berth_model::Origin::Api,
            now: berth_model::Timestamp::from_millis(millis),
            datasource: None,
            run_id: None,
            principal: None,
        }
    }

    #[test]
    fn reports_are_kept_bounded_and_go_with_their_integration() {
        let mut state = State::default();
        let create = Command::WriteDefinition {
            kind: DefinitionKind::Integration,
            identifier: "ocean1".into(),
            how: DefinitionWrite::Create(json!({"installationAppType": "mytest"})),
        };
        let log = |i: i64| Command::RecordIntegration {
            integration: "ocean1".into(),
            report: Report::Logs(vec![json!({"message": format!("line {i}")})]),
        };
        assert!(matches!(apply(&mut state, &meta(0), &log(0)), Err(DomainError::NotFound { .. })));
        apply(&mut state, &meta(0), &create).expect("created");
        for i in 0..(MAX_LOG_BATCHES as i64 + 5) {
            // Two batches in one millisecond each get their own key.
            apply(&mut state, &meta(i / 2), &log(i)).expect("logged");
        }
        let prefix = record_prefix("ocean1", "log");
        let kept: Vec<_> = records(&state, &prefix).collect();
        assert_eq!(kept.len(), MAX_LOG_BATCHES);
        assert_eq!(kept[0].body["logs"][0]["message"], "line 5", "the oldest batches were dropped");
        assert_eq!(kept[MAX_LOG_BATCHES - 1].body["logs"][0]["message"], format!("line {}", MAX_LOG_BATCHES + 4));

        let metrics = |event: &str, kind: &str, n: i64| Command::RecordIntegration {
            integration: "ocean1".into(),
            report: Report::SyncMetrics {
                event: event.into(),
                kinds: [(kind.to_string(), json!({"n": n}))].into_iter().collect(),
            },
        };
        apply(&mut state, &meta(1_000), &metrics("e1", "item-0", 1)).expect("recorded");
        apply(&mut state, &meta(1_001), &metrics("e1", "other-0", 2)).expect("merged");
        apply(&mut state, &meta(1_002), &metrics("e1", "item-0", 3)).expect("replaced");
        let syncs: Vec<_> = records(&state, &record_prefix("ocean1", "sync")).collect();
        assert_eq!(syncs.len(), 1);
        assert_eq!(syncs[0].body["kinds"], json!({"item-0": {"n": 3}, "other-0": {"n": 2}}));

        apply(
            &mut state,
            &meta(0),
            &Command::DeleteDefinition { kind: DefinitionKind::Integration, identifier: "ocean1".into() },
        )
        .expect("deleted");
        assert_eq!(state.definitions(KIND).count(), 0, "its records went with it");
    }

    #[test]
    fn records_are_not_written_or_deleted_through_the_generic_definition_commands() {
        let mut state = State::default();
        let forged =
            Command::WriteDefinition { kind: KIND, identifier: "x".into(), how: DefinitionWrite::Create(json!({})) };
        assert!(apply(&mut state, &meta(0), &forged).is_err());
    }
}
