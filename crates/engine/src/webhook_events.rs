//! Requests inbound webhooks received (definitions of kind `WebhookEvent`, kept as `{webhook}#{key}`): stored
//! by the ingest route, their outcome recorded by the ingestion worker, put back to be processed again for an
//! Admin. Only the server writes them (no caller's principal): the routes check who asked.

use berth_model::{DefinitionKind, DomainError};
use serde_json::Value;

use crate::State;
use crate::command::{Outcome, WriteMeta};
use crate::definitions::{stored, version};
use berth_model::Change;

const KIND: DefinitionKind = DefinitionKind::WebhookEvent;

fn server_only(meta: &WriteMeta) -> Result<(), DomainError> {
    match &meta.principal {
        None => Ok(()),
        Some(_) => Err(DomainError::Forbidden("only the server writes webhook events".into())),
    }
}

fn status(body: &Value) -> Option<&str> {
    body.get("status").and_then(Value::as_str)
}

/// Stores a received request (`{webhook, status: pending | processing, request, requestId?}`: `processing` when
/// the ingest route writes its entities in the same batch); a duplicate is a conflict.
pub(crate) fn receive(
    state: &State,
    meta: &WriteMeta,
    id: &str,
    body: &Value,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    server_only(meta)?;
    if state.definition(KIND, id).is_some() {
        return Err(DomainError::AlreadyExists { kind: "webhook event", id: id.to_string() });
    }
    if !matches!(status(body), Some("pending" | "processing")) {
        return Err(DomainError::Internal("a webhook event is received pending or processing".into()));
    }
    Ok(stored(version(meta, None, KIND, id, body.clone()), true))
}

/// Records a pending event's outcome (an event recorded already is left as it is). A processed request's
/// payload is dropped (its entities are the record); a failed one's is kept, to process it again.
pub(crate) fn record(
    state: &State,
    meta: &WriteMeta,
    id: &str,
    outcome: &str,
    results: &Value,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    server_only(meta)?;
    let current = state.definition(KIND, id).ok_or_else(|| DomainError::not_found("webhook event", id.to_string()))?;
    if !matches!(status(&current.body), Some("pending" | "processing")) {
        return Ok((Vec::new(), Outcome::Unchanged));
    }
    let mut body = (*current.body).clone();
    body["status"] = Value::String(outcome.to_string());
    body["results"] = results.clone();
    body["processedAt"] = serde_json::to_value(meta.now).unwrap_or(Value::Null);
    if outcome == "processed" {
        if let Some(map) = body.as_object_mut() {
            map.remove("request");
        }
    }
    Ok(stored(version(meta, Some(current), KIND, id, body), false))
}

/// Puts a failed event back to be processed again.
pub(crate) fn requeue(state: &State, meta: &WriteMeta, id: &str) -> Result<(Vec<Change>, Outcome), DomainError> {
    server_only(meta)?;
    let current = state.definition(KIND, id).ok_or_else(|| DomainError::not_found("webhook event", id.to_string()))?;
    if matches!(status(&current.body), Some("pending" | "processing")) {
        return Err(DomainError::Invalid(format!("webhook event `{id}` waits to be processed already")));
    }
    if current.body.get("request").is_none() {
        return Err(DomainError::Invalid(format!(
            "webhook event `{id}` was processed: its request was not kept (only failed requests are)"
        )));
    }
    let mut body = (*current.body).clone();
    body["status"] = Value::String("pending".into());
    if let Some(map) = body.as_object_mut() {
        map.remove("results");
        map.remove("processedAt");
    }
    Ok(stored(version(meta, Some(current), KIND, id, body), false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use serde_json::json;

    fn apply(state: &mut State, meta: &WriteMeta, cmd: &Command) -> Result<(), DomainError> {
        crate::execute_and_apply(state, meta, cmd).map(|_| ())
    }

    #[test]
    fn events_are_stored_once_recorded_once_counted_while_pending_and_only_by_the_server() {
        let mut state = State::default();
        let meta = WriteMeta {
            actor: "webhook:gh".into(),
            origin: berth_model::Origin::Integration,
            now: berth_model::Timestamp::from_millis(0),
            datasource: None,
            run_id: None,
            principal: None,
        };
        let body = json!({"webhook": "gh", "status": "pending", "request": {"body": {"a": 1}}});
        for i in 0..3 {
            let cmd = Command::ReceiveWebhookEvent { id: format!("gh#{i}"), body: body.clone() };
            apply(&mut state, &meta, &cmd).expect("stored");
        }
        let other = Command::ReceiveWebhookEvent { id: "ghx#0".into(), body: body.clone() };
        apply(&mut state, &meta, &other).expect("another webhook's");
        let again = Command::ReceiveWebhookEvent { id: "gh#1".into(), body: body.clone() };
        assert!(matches!(apply(&mut state, &meta, &again), Err(DomainError::AlreadyExists { .. })));
        assert_eq!(state.pending_events_of("gh", 100), 3, "a webhook's own, not `ghx`'s");
        assert_eq!(state.pending_events_of("gh", 2), 2, "counted up to the bound");
        let done = Command::RecordWebhookEvent { id: "gh#0".into(), status: "processed".into(), results: json!([]) };
        apply(&mut state, &meta, &done).expect("recorded");
        assert_eq!(state.pending_events_of("gh", 100), 2);
        let kept = state.definition(KIND, "gh#0").expect("event");
        assert!(kept.body.get("request").is_none(), "a processed request is dropped");
        let failed = Command::RecordWebhookEvent { id: "gh#1".into(), status: "failed".into(), results: json!([]) };
        apply(&mut state, &meta, &failed).expect("recorded");
        assert!(requeue(&state, &meta, "gh#0").is_err(), "nothing to process again");
        apply(&mut state, &meta, &Command::RequeueWebhookEvent { id: "gh#1".into() }).expect("requeued");
        assert_eq!(state.pending_events_of("gh", 100), 2);
        let caller = WriteMeta { principal: Some(crate::access::Principal::default()), ..meta };
        let forged = Command::ReceiveWebhookEvent { id: "gh#9".into(), body };
        assert!(matches!(apply(&mut state, &caller, &forged), Err(DomainError::Forbidden(_))));
    }
}
