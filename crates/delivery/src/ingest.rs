//! Inbound webhook requests processed (see `berth_model::webhook`): the ingest route stores each accepted
//! request as a `WebhookEvent` (durable before it answers 202); this worker, holding the lease
//! `webhooks:ingest` (one replica at a time), takes the pending events oldest first, applies their webhook's
//! mappings (`berth_engine::inbound`), writes the entities as the webhook (`webhook:<id>`, origin
//! INTEGRATION), and records each event's outcome: per mapping, the entities written or deleted and every
//! error with where it came from. An event whose mappings failed keeps its request: it can be processed
//! again once the mapping is fixed. A crash processes again what was in flight (entity upserts are
//! idempotent; the outcome is recorded once).

use std::sync::Arc;
use std::time::Duration;

use berth_catalog::Pipeline;
use berth_engine::inbound::{self, Mapped};
use berth_engine::{Command, WriteMeta, WriteMode};
use berth_model::webhook::Webhook;
use berth_model::{DefinitionKind, EntityInput, Origin};
use serde_json::{Map, Value, json};

use crate::Config;

pub const LEASE_NAME: &str = "webhooks:ingest";
const LEASE: Duration = Duration::from_secs(15);
/// The most events one pass takes.
const PASS: usize = 100;

fn meta(webhook: &str) -> WriteMeta {
    WriteMeta {
        actor: format!("webhook:{webhook}"),
        origin: Origin::Integration,
        now: berth_catalog::now(),
        datasource: Some(format!("berth/webhook/{webhook}")),
        run_id: None,
        principal: None,
    }
}

/// Processes one event: its webhook's mappings, the entity writes, the outcome recorded.
async fn process(pipeline: &Pipeline, id: &str, event: &Value) -> Result<(), String> {
    let webhook_id = event.get("webhook").and_then(Value::as_str).unwrap_or_default().to_string();
    let view = pipeline.view();
    let Some(webhook) =
        view.definition(DefinitionKind::Webhook, &webhook_id).and_then(|d| Webhook::parse(&d.body).ok())
    else {
        let record = Command::RecordWebhookEvent {
            id: id.to_string(),
            status: "failed".into(),
            results: json!([{"errors": [format!("webhook `{webhook_id}` no longer exists")]}]),
        };
        return write(pipeline, &webhook_id, vec![record]).await.map(|_| ());
    };
    drop(view);
    let request = event.get("request").cloned().unwrap_or(Value::Null);
    let empty = Map::new();
    let context = inbound::context(
        request.get("body").unwrap_or(&Value::Null),
        request.get("headers").and_then(Value::as_object).unwrap_or(&empty),
        request.get("queryParams").and_then(Value::as_object).unwrap_or(&empty),
    );
    let outcomes = inbound::apply(&webhook, &context);
    // Every mapped item as a command, remembering which mapping it came from.
    let mut commands = Vec::new();
    let mut origins = Vec::new();
    let mut results: Vec<Value> = outcomes
        .iter()
        .map(|o| json!({"matched": o.matched, "upserted": [], "deleted": [], "errors": o.errors}))
        .collect();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        for mapped in outcome.mapped {
            let command = match mapped {
                Mapped::Upsert { blueprint, entity } => match EntityInput::from_owned(entity) {
                    Ok(input) => Command::WriteEntity {
                        blueprint,
                        path_id: None,
                        input,
                        mode: WriteMode::UpsertMerge,
                        create_missing_related: false,
                    },
                    Err(e) => {
                        push(&mut results[i], "errors", json!(format!("mappings[{i}]: {e}")));
                        continue;
                    }
                },
                Mapped::Delete { blueprint, identifier, dependents } => {
                    Command::DeleteEntity { blueprint, identifier, delete_dependents: dependents }
                }
            };
            origins.push(i);
            commands.push(command);
        }
    }
    let kinds: Vec<(bool, String)> = commands
        .iter()
        .map(|c| match c {
            Command::WriteEntity { input, .. } => match &input.identifier {
                Some(berth_model::entity::IdentifierInput::Id(id)) => (true, id.clone()),
                _ => (true, String::new()),
            },
            Command::DeleteEntity { identifier, .. } => (false, identifier.clone()),
            _ => (false, String::new()),
        })
        .collect();
    let written = if commands.is_empty() { Vec::new() } else { write(pipeline, &webhook_id, commands).await? };
    for ((i, (upsert, identifier)), outcome) in origins.into_iter().zip(kinds).zip(written) {
        match outcome {
            Ok(_) => push(&mut results[i], if upsert { "upserted" } else { "deleted" }, json!(identifier)),
            Err(e) => push(&mut results[i], "errors", json!(format!("mappings[{i}] `{identifier}`: {e}"))),
        }
    }
    let failed = results.iter().any(|r| r["errors"].as_array().is_some_and(|e| !e.is_empty()));
    let record = Command::RecordWebhookEvent {
        id: id.to_string(),
        status: if failed { "failed".into() } else { "processed".into() },
        results: Value::Array(results),
    };
    write(pipeline, &webhook_id, vec![record]).await.map(|_| ())
}

fn push(result: &mut Value, key: &str, v: Value) {
    if let Some(list) = result.get_mut(key).and_then(Value::as_array_mut) {
        list.push(v);
    }
}

async fn write(
    pipeline: &Pipeline,
    webhook: &str,
    commands: Vec<Command>,
) -> Result<Vec<Result<berth_engine::Outcome, berth_model::DomainError>>, String> {
    pipeline.write(meta(webhook), commands).await.map(|r| r.outcomes).map_err(|e| e.to_string())
}

/// Processes pending events while this replica holds the lease; runs until the task is aborted.
pub(crate) async fn run(pipeline: Arc<Pipeline>, config: Config) {
    let mut lease = pipeline.consumer(LEASE_NAME, &config.holder, LEASE);
    loop {
        match lease.hold().await {
            Ok(true) => {}
            Ok(false) => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the webhook ingestion cannot take its lease");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let view = pipeline.view();
        let mut pending: Vec<_> =
            view.pending_events().filter_map(|id| view.definition(DefinitionKind::WebhookEvent, id).cloned()).collect();
        pending.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.identifier.cmp(&b.identifier)));
        let seq = view.seq();
        drop(view);
        let mut stalled = false;
        for event in pending.into_iter().take(PASS) {
            if let Err(e) = process(&pipeline, &event.identifier, &event.body).await {
                tracing::warn!(event = %event.identifier, error = %e, "a webhook event was not processed; it is tried again");
                stalled = true;
                break;
            }
        }
        if stalled {
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            pipeline.wait_applied(seq + 1, LEASE / 3).await;
        }
    }
}
