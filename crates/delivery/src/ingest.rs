//! Inbound webhook requests processed (see `berth_model::webhook`): the ingest route stores each accepted
//! request as a `WebhookEvent` (durable before it answers 202); this worker, holding the lease
//! `webhooks:ingest` (one replica at a time), takes the pending events oldest first, applies their webhook's
//! mappings (`berth_engine::inbound`), writes the entities as the webhook (`webhook:<id>`, origin
//! INTEGRATION), and records each event's outcome: per mapping, the entities written or deleted and every
//! error with where it came from. An event whose mappings failed keeps its request: it can be processed
//! again once the mapping is fixed. A crash processes again what was in flight (entity upserts are
//! idempotent; the outcome is recorded once).
//!
//! **In the request.** When a webhook has no request waiting here (status `pending`), the ingest route
//! applies the mappings itself ([`plan`], with the jq compiled once per webhook version by [`ReadyCache`]) and
//! writes the request (status `processing`) with its entity writes in one batch, so the entities are
//! visible when it answers; it then records the outcome ([`record`]). Requests that arrive while others wait
//! here queue behind them, so a webhook's requests keep their order.

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
const PASS: usize = 500;
/// How long an event the ingest route processes in the request is left to it.
const INLINE_GRACE: Duration = Duration::from_secs(30);

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

/// One event, planned: the entity writes its webhook's mappings ask for, and its results so far.
pub struct Planned {
    id: String,
    pub commands: Vec<Command>,
    /// For each command: the mapping it came from, whether it upserts, the entity's identifier.
    origins: Vec<(usize, bool, String)>,
    results: Vec<Value>,
}

/// A webhook read and its jq compiled, as of one version of it.
pub type Ready = (Webhook, inbound::Compiled);

/// Webhooks ready to apply, kept per identifier and version so a request does not compile its webhook's jq
/// again (the ingest route applies mappings in the request; see the module's note on order).
#[derive(Default)]
pub struct ReadyCache {
    ready: std::sync::Mutex<std::collections::HashMap<String, (berth_model::Timestamp, Arc<Ready>)>>,
}

impl ReadyCache {
    /// `d` (a webhook definition) read and compiled: from the cache when this version was seen.
    pub fn get(&self, d: &berth_model::Definition) -> Option<Arc<Ready>> {
        let mut ready = self.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, r)) = ready.get(&d.identifier) {
            if *at == d.updated_at {
                return Some(Arc::clone(r));
            }
        }
        let webhook = Webhook::parse(&d.body).ok()?;
        let compiled = inbound::Compiled::new(&webhook);
        let r = Arc::new((webhook, compiled));
        // A bounded cache: the organisation has at most MAX_WEBHOOKS webhooks; forget all past that.
        if ready.len() > berth_model::webhook::MAX_WEBHOOKS {
            ready.clear();
        }
        ready.insert(d.identifier.clone(), (d.updated_at, Arc::clone(&r)));
        Some(r)
    }
}

/// Plans one event (pure: nothing is written).
pub fn plan(webhook: Option<&Ready>, webhook_id: &str, id: &str, event: &Value) -> Planned {
    let Some((webhook, compiled)) = webhook else {
        return Planned {
            id: id.to_string(),
            commands: Vec::new(),
            origins: Vec::new(),
            results: vec![json!({"errors": [format!("webhook `{webhook_id}` no longer exists")]})],
        };
    };
    let request = event.get("request").cloned().unwrap_or(Value::Null);
    let empty = Map::new();
    let context = inbound::context(
        request.get("body").unwrap_or(&Value::Null),
        request.get("headers").and_then(Value::as_object).unwrap_or(&empty),
        request.get("queryParams").and_then(Value::as_object).unwrap_or(&empty),
    );
    let outcomes = inbound::apply_compiled(webhook, compiled, &context);
    let mut planned = Planned {
        id: id.to_string(),
        commands: Vec::new(),
        origins: Vec::new(),
        results: outcomes
            .iter()
            .map(|o| json!({"matched": o.matched, "upserted": [], "deleted": [], "errors": o.errors}))
            .collect(),
    };
    for (i, outcome) in outcomes.into_iter().enumerate() {
        for mapped in outcome.mapped {
            let (command, upsert, identifier) = match mapped {
                Mapped::Upsert { blueprint, entity } => {
                    let identifier = entity["identifier"].as_str().unwrap_or_default().to_string();
                    match EntityInput::from_owned(entity) {
                        Ok(input) => (
                            Command::WriteEntity {
                                blueprint,
                                path_id: None,
                                input,
                                mode: WriteMode::UpsertMerge,
                                create_missing_related: false,
                            },
                            true,
                            identifier,
                        ),
                        Err(e) => {
                            push(&mut planned.results[i], "errors", json!(format!("mappings[{i}]: {e}")));
                            continue;
                        }
                    }
                }
                Mapped::Delete { blueprint, identifier, dependents } => (
                    Command::DeleteEntity { blueprint, identifier: identifier.clone(), delete_dependents: dependents },
                    false,
                    identifier,
                ),
            };
            planned.origins.push((i, upsert, identifier));
            planned.commands.push(command);
        }
    }
    planned
}

/// Processes consecutive events of one webhook: all their entity writes in one request (in order), then all
/// their outcomes in another.
async fn process(
    pipeline: &Pipeline,
    webhook_id: &str,
    events: &[std::sync::Arc<berth_model::Definition>],
) -> Result<(), String> {
    let mut planned: Vec<Planned> = {
        let view = pipeline.view();
        let webhook =
            view.definition(DefinitionKind::Webhook, webhook_id).and_then(|d| Webhook::parse(&d.body).ok()).map(|w| {
                let compiled = inbound::Compiled::new(&w);
                (w, compiled)
            });
        events.iter().map(|e| plan(webhook.as_ref(), webhook_id, &e.identifier, &e.body)).collect()
    };
    let commands: Vec<Command> = planned.iter_mut().flat_map(|p| std::mem::take(&mut p.commands)).collect();
    let mut written =
        if commands.is_empty() { Vec::new() } else { write(pipeline, webhook_id, commands).await? }.into_iter();
    let records = planned.into_iter().map(|p| record(p, &mut written)).collect();
    write(pipeline, webhook_id, records).await.map(|_| ())
}

/// The command that records a planned event's outcome, given the outcomes of its entity writes (taken from
/// `written` in order).
pub fn record(
    mut p: Planned,
    written: &mut impl Iterator<Item = Result<berth_engine::Outcome, berth_model::DomainError>>,
) -> Command {
    for (i, upsert, identifier) in std::mem::take(&mut p.origins) {
        match written.next() {
            Some(Ok(_)) => push(&mut p.results[i], if upsert { "upserted" } else { "deleted" }, json!(identifier)),
            Some(Err(e)) => push(&mut p.results[i], "errors", json!(format!("mappings[{i}] `{identifier}`: {e}"))),
            None => push(&mut p.results[i], "errors", json!(format!("mappings[{i}] `{identifier}`: not written"))),
        }
    }
    let failed = p.results.iter().any(|r| r["errors"].as_array().is_some_and(|e| !e.is_empty()));
    Command::RecordWebhookEvent {
        id: p.id,
        status: if failed { "failed".into() } else { "processed".into() },
        results: Value::Array(p.results),
    }
}

/// The write metadata of what a webhook's requests do (as `webhook:<id>`, origin INTEGRATION).
pub fn webhook_meta(webhook: &str) -> WriteMeta {
    meta(webhook)
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
        if !crate::hold_lease(&mut lease, "the webhook ingestion").await {
            continue;
        }
        let view = pipeline.view();
        // Events the ingest route is processing in the request are left to it, unless it has not recorded
        // them for a while (the replica stopped): then they are processed here (entity upserts are
        // idempotent; the outcome is recorded once).
        let now = berth_catalog::now();
        let mut pending: Vec<_> = view
            .pending_events()
            .filter_map(|id| view.definition(DefinitionKind::WebhookEvent, id).cloned())
            .filter(|e| {
                e.body.get("status").and_then(Value::as_str) != Some("processing")
                    || now.millis() - e.created_at.millis() > INLINE_GRACE.as_millis() as i64
            })
            .collect();
        pending.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.identifier.cmp(&b.identifier)));
        let seq = view.seq();
        drop(view);
        let mut stalled = false;
        pending.truncate(PASS);
        // Consecutive events of one webhook are processed together.
        let mut rest = &pending[..];
        while let Some(first) = rest.first() {
            let webhook = first.body.get("webhook").and_then(Value::as_str).unwrap_or_default().to_string();
            let n = rest
                .iter()
                .take_while(|e| e.body.get("webhook").and_then(Value::as_str) == Some(webhook.as_str()))
                .count();
            if let Err(e) = process(&pipeline, &webhook, &rest[..n]).await {
                tracing::warn!(webhook = %webhook, error = %e, "webhook events were not processed; they are tried again");
                stalled = true;
                break;
            }
            rest = &rest[n..];
        }
        if stalled {
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            pipeline.wait_past(seq, LEASE / 3).await;
        }
    }
}
