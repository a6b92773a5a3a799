//! Automations fired (see the module above): each change of the log matched against the automations
//! waiting for its kind of event, their jq condition judged over the change event, and one run made per
//! match, all of a page's runs in one write.
//!
//! - Entity events: `ENTITY_CREATED`, `ENTITY_UPDATED`, `ENTITY_DELETED`, `ANY_ENTITY_CHANGE` on the
//!   automation's blueprint, with Port's event `{action, resourceType: entity, trigger, context, diff:
//!   {before, after}}` (derived values are not written, so a mirror's change fires nothing).
//! - Run events: `RUN_CREATED`, `RUN_UPDATED`, `ANY_RUN_CHANGE` of the automation's action
//!   (`resourceType: run`). An automation never fires on runs of its own action, nor on runs another
//!   automation made from a run event: chains of automations end after one step through runs.
//! - `TIMER_PROPERTY_EXPIRED`: each second, the entities whose timer property has passed (and was set after
//!   the automation was made) fire once each: the run's id is derived from the automation, the entity and
//!   the timer's value, so a restart or another replica finds it made already.
//!
//! The condition's expressions (`and`: all, `or`: any) must each yield `true`; one that fails counts as
//! false, logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_catalog::Pipeline;
use berth_engine::runs::NewRun;
use berth_engine::{Command, State};
use berth_model::action::{Action, AutomationEvent, Trigger};
use berth_model::run::{RUN_ID_LEN, Run, RunRequest, Source};
use berth_model::{Change, DefinitionKind, DomainError, Event, Previous, Timestamp};
use serde_json::{Value, json};
use sha2::Digest;

use crate::Config;

const LEASE: Duration = Duration::from_secs(15);
/// The most events one page reads.
const PAGE: usize = 1_000;
/// How often timers are looked at.
const TIMERS_EVERY: Duration = Duration::from_secs(1);

/// One automation, read from its definition.
struct Automation {
    id: String,
    created_at: Timestamp,
    event: AutomationEvent,
    expressions: Vec<berth_engine::derived::jq::Program>,
    any: bool,
}

impl Automation {
    fn all(view: &State) -> Vec<Automation> {
        let mut out = Vec::new();
        for d in view.definitions(DefinitionKind::Action) {
            let Ok(action) = Action::parse(&d.body) else { continue };
            let Trigger::Automation { event } = action.trigger else { continue };
            let condition = d.body.pointer("/trigger/condition");
            let expressions = condition
                .and_then(|c| c.get("expressions"))
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|c| berth_engine::derived::jq::compile(c).ok())
                        .collect()
                })
                .unwrap_or_default();
            let any = condition.and_then(|c| c.get("combinator")).and_then(Value::as_str) == Some("or");
            out.push(Automation { id: d.identifier.clone(), created_at: d.created_at, event, expressions, any });
        }
        out
    }

    /// Whether the condition holds for `event` (no condition: always).
    fn holds(&self, event: &Value) -> bool {
        if self.expressions.is_empty() {
            return true;
        }
        let judge = |p: &berth_engine::derived::jq::Program| match p.run(event) {
            Ok(v) => v == Value::Bool(true),
            Err(e) => {
                tracing::debug!(automation = %self.id, error = %e, "an automation's condition failed");
                false
            }
        };
        if self.any { self.expressions.iter().any(judge) } else { self.expressions.iter().all(judge) }
    }
}

/// A run id derived from what fired it: the same match always makes the same id.
fn derived_id(parts: &[&str]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut hash = sha2::Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let id: String =
        digest.iter().take(RUN_ID_LEN).map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    format!("r_{id}")
}

fn trigger_of(event: &Event) -> Value {
    json!({"by": {"userId": event.actor}, "origin": event.origin, "at": event.time})
}

/// The runs `event` makes: (id, automation, Port's change event).
fn matches(automations: &[Automation], event: &Event) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    match (&event.change, &event.before) {
        (Change::EntityPut { entity: after }, before)
        | (Change::EntityDeleted { .. }, before @ Some(Previous::Entity { entity: after })) => {
            let deleted = matches!(event.change, Change::EntityDeleted { .. });
            let (kind, action, before_v, after_v) = match (deleted, before) {
                (true, _) => {
                    ("ENTITY_DELETED", "DELETE", serde_json::to_value(&**after).unwrap_or(Value::Null), Value::Null)
                }
                (false, Some(Previous::Entity { entity: old })) => (
                    "ENTITY_UPDATED",
                    "UPDATE",
                    serde_json::to_value(&**old).unwrap_or(Value::Null),
                    serde_json::to_value(&**after).unwrap_or(Value::Null),
                ),
                (false, _) => {
                    ("ENTITY_CREATED", "CREATE", Value::Null, serde_json::to_value(&**after).unwrap_or(Value::Null))
                }
            };
            let blueprint = &*after.blueprint;
            let mut body: Option<Value> = None;
            for a in automations {
                let AutomationEvent::Entity { kind: wanted, blueprint: bp } = &a.event else { continue };
                if bp != blueprint || (wanted != kind && wanted != "ANY_ENTITY_CHANGE") {
                    continue;
                }
                let event_body = body.get_or_insert_with(|| {
                    json!({"action": action, "resourceType": "entity", "trigger": trigger_of(event),
                        "context": {"blueprintIdentifier": blueprint, "entityIdentifier": after.identifier},
                        "diff": {"before": before_v, "after": after_v}})
                });
                if a.holds(event_body) {
                    out.push((derived_id(&[&a.id, &event.seq.to_string()]), a.id.clone(), event_body.clone()));
                }
            }
        }
        (Change::DefinitionPut { definition }, before) if definition.kind == DefinitionKind::Run => {
            let Ok(run) = Run::from_body(&definition.body) else { return out };
            // Runs an automation made from a run event fire nothing: chains end here.
            if run.source == Source::Automation && run.trigger.pointer("/event/resourceType") == Some(&json!("run")) {
                return out;
            }
            let old = match before {
                Some(Previous::Definition { definition: d }) => {
                    Run::from_body(&d.body).ok().map(|r| r.view(&d.identifier))
                }
                _ => None,
            };
            let (kind, action) = if old.is_some() { ("RUN_UPDATED", "UPDATE") } else { ("RUN_CREATED", "CREATE") };
            let mut body: Option<Value> = None;
            for a in automations {
                let AutomationEvent::Run { kind: wanted, action: of } = &a.event else { continue };
                if *of != run.action.identifier || *of == a.id || (wanted != kind && wanted != "ANY_RUN_CHANGE") {
                    continue;
                }
                let event_body = body.get_or_insert_with(|| {
                    json!({"action": action, "resourceType": "run", "trigger": trigger_of(event),
                        "context": {"actionIdentifier": run.action.identifier, "runId": definition.identifier},
                        "diff": {"before": old, "after": run.view(&definition.identifier)}})
                });
                if a.holds(event_body) {
                    out.push((derived_id(&[&a.id, &event.seq.to_string()]), a.id.clone(), event_body.clone()));
                }
            }
        }
        _ => {}
    }
    out
}

fn new_run(id: String, automation: String, event: Value) -> Command {
    Command::CreateRun(Box::new(NewRun {
        id,
        action: automation,
        request: RunRequest { properties: Default::default(), entity: None },
        source: Source::Automation,
        run_as: None,
        event: Some(event),
    }))
}

/// Makes the runs; `false` when the store did not take them (the page is read again).
async fn make(pipeline: &Pipeline, commands: Vec<Command>) -> bool {
    if commands.is_empty() {
        return true;
    }
    match pipeline.write(super::system_meta(None), commands).await {
        Ok(result) => {
            for outcome in result.outcomes {
                match outcome {
                    Ok(_) | Err(DomainError::AlreadyExists { .. }) => {}
                    Err(e) => tracing::warn!(error = %e, "an automation's run was refused"),
                }
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "an automation's runs were not written; the changes are read again");
            false
        }
    }
}

/// The timers that ran out: one run per (automation, entity, timer value) not made yet.
fn expired(view: &State, automations: &[Automation], now: Timestamp) -> Vec<Command> {
    let mut out = Vec::new();
    for a in automations {
        let AutomationEvent::Timer { blueprint, property } = &a.event else { continue };
        for e in view.entities_of(blueprint) {
            let Some(at) = e.properties.get(property).and_then(Value::as_str).and_then(Timestamp::parse) else {
                continue;
            };
            if at > now || at < a.created_at {
                continue;
            }
            let id = derived_id(&[&a.id, &e.identifier, &at.millis().to_string()]);
            if view.definition(DefinitionKind::Run, &id).is_some() {
                continue;
            }
            let event = json!({"action": "TIMER_PROPERTY_EXPIRED", "resourceType": "entity",
                "trigger": {"by": {"userId": "berth"}, "origin": "AUTOMATION", "at": now},
                "context": {"blueprintIdentifier": blueprint, "entityIdentifier": e.identifier, "propertyIdentifier": property},
                "diff": {"before": null, "after": serde_json::to_value(&**e).unwrap_or(Value::Null)}});
            if a.holds(&event) {
                out.push(new_run(id, a.id.clone(), event));
            }
        }
    }
    out
}

/// Fires automations while this replica holds the lease; runs until the task is aborted.
pub(crate) async fn run(pipeline: Arc<Pipeline>, config: Config) {
    let mut consumer = pipeline.consumer("actions:automations", &config.holder, LEASE);
    let mut at: Option<u64> = None;
    let mut timers_at = Instant::now();
    loop {
        let Some(position) = at else {
            // Automations fire for the changes after the first start, not for the whole history.
            let head = pipeline.view().seq();
            match consumer.begin_at(head).await {
                Ok(true) => match consumer.position().await {
                    Ok(p) => at = Some(p.unwrap_or(head)),
                    Err(e) => tracing::warn!(error = %e, "reading the automations' position failed"),
                },
                Ok(false) => tokio::time::sleep(Duration::from_secs(2)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "the automations cannot take their lease");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        };
        if timers_at.elapsed() >= TIMERS_EVERY {
            timers_at = Instant::now();
            let view = pipeline.view();
            let automations = Automation::all(&view);
            let due = expired(&view, &automations, berth_catalog::now());
            drop(view);
            make(&pipeline, due).await;
        }
        let page = match consumer.next_after(position, PAGE, TIMERS_EVERY).await {
            Ok(Some(page)) => page,
            Ok(None) => {
                at = None;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the log for automations failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(last) = page.events.last().map(|e| e.seq) else { continue };
        let automations = Automation::all(&pipeline.view());
        let commands: Vec<Command> = if automations.is_empty() {
            Vec::new()
        } else {
            page.events
                .iter()
                .flat_map(|e| matches(&automations, e))
                .map(|(id, automation, event)| new_run(id, automation, event))
                .collect()
        };
        if !make(&pipeline, commands).await {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match consumer.commit(last).await {
            Ok(true) => at = Some(last),
            Ok(false) => at = None,
            Err(e) => {
                tracing::warn!(error = %e, "committing the automations' position failed");
                at = Some(last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_run_ids_and_differ_by_what_fired_them() {
        let a = derived_id(&["auto", "7"]);
        assert!(berth_model::run::is_run_id(&a), "{a}");
        assert_eq!(a, derived_id(&["auto", "7"]));
        assert_ne!(a, derived_id(&["auto", "8"]));
        assert_ne!(derived_id(&["a", "b7"]), derived_id(&["ab", "7"]));
    }
}
