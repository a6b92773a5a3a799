//! The audit log: the change log read backwards, newest first, as audit records in the public event form
//! (`berth_model::public`, no secrets). It is a view of the log itself, so it cannot miss a change. Filters
//! combine with AND; a page stops at `limit` records or after scanning [`SCAN_BUDGET`] events, and the next
//! page continues where it stopped. The records of one entity are read from its own events, named by the
//! version index.

use berth_engine::access::Principal;
use berth_engine::scoped::Scoped;
use berth_model::public::PublicChange as Record;
use berth_model::{Change, Event, Previous, Timestamp};
use serde_json::{Value, json};

use crate::{Pipeline, ReadError};

/// The most events one request reads from the log.
pub const SCAN_BUDGET: usize = 100_000;
/// Events read per store call.
const PAGE: usize = 1_000;

/// What records a page shows (every filter given must hold).
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub identifier: Option<String>,
    pub entity: Option<String>,
    pub blueprint: Option<String>,
    pub run_id: Option<String>,
    pub resources: Vec<String>,
    pub actions: Vec<String>,
    pub origins: Vec<String>,
    pub status: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// An inbound webhook's records: the webhook's own changes, the requests it received, and the entity
    /// changes its requests made (written as `webhook:<id>`).
    pub webhook: Option<String>,
    /// One request of an inbound webhook: its own records and the entity changes it made.
    pub webhook_event: Option<WebhookEventFilter>,
}

/// What a request of a webhook made, read from its record (the entities its mappings wrote or deleted, and
/// when it was received and processed): entity changes by the webhook, of those entities, in that window.
#[derive(Clone, Debug, Default)]
pub struct WebhookEventFilter {
    pub webhook: String,
    pub event: String,
    pub entities: Vec<String>,
    pub from: Timestamp,
    pub to: Timestamp,
}

impl Filters {
    /// The entity identifier when the filters name one entity's records only (so the version index can
    /// answer them).
    pub fn one_entity(&self) -> Option<&str> {
        match (&self.entity, &self.identifier) {
            (Some(entity), identifier) if identifier.as_ref().is_none_or(|i| i == entity) => Some(entity),
            (None, Some(identifier)) if self.resources.iter().all(|r| r == "entity") && !self.resources.is_empty() => {
                Some(identifier)
            }
            _ => None,
        }
    }

    fn matches(&self, event: &Event, record: &Record) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        eq(&self.identifier, &record.identifier)
            && (self.entity.is_none() || (record.resource == "entity" && eq(&self.entity, &record.identifier)))
            && eq(&self.blueprint, &record.blueprint)
            && eq(&self.run_id, &event.run_id)
            && (self.resources.is_empty() || self.resources.iter().any(|r| r == record.resource))
            && (self.actions.is_empty() || self.actions.iter().any(|a| a == record.action))
            && (self.origins.is_empty() || {
                let origin = serde_json::to_value(event.origin).unwrap_or(Value::Null);
                self.origins.iter().any(|o| origin.as_str() == Some(o.as_str()))
            })
            && self.status.as_deref().is_none_or(|s| s == record.status)
            && self.to.is_none_or(|to| event.time <= to)
            && self.webhook.as_deref().is_none_or(|w| {
                event.actor.strip_prefix("webhook:") == Some(w)
                    || (record.resource == "webhook" && record.identifier.as_deref() == Some(w))
                    || (record.resource == "webhook_event"
                        && record
                            .identifier
                            .as_deref()
                            .is_some_and(|i| i.strip_prefix(w).is_some_and(|r| r.starts_with('#'))))
            })
            && self.webhook_event.as_ref().is_none_or(|f| {
                (record.resource == "webhook_event" && record.identifier.as_deref() == Some(f.event.as_str()))
                    || (record.resource == "entity"
                        && event.actor.strip_prefix("webhook:") == Some(f.webhook.as_str())
                        && (f.from..=f.to).contains(&event.time)
                        && record.identifier.as_ref().is_some_and(|i| f.entities.contains(i)))
            })
    }
}

/// Whether `viewer` may see an event's record: Admins all; others only entity changes of entities they may
/// read and page changes of pages they may read (judged on the version the event carries), their own
/// refused attempts, and neither apps nor keys.
fn visible(scoped: &Scoped<'_>, viewer: &Principal, event: &Event) -> bool {
    if viewer.is_admin() {
        return true;
    }
    match &event.change {
        Change::EntityPut { entity } => scoped.can_read(entity),
        Change::EntityDeleted { .. } => {
            matches!(&event.before, Some(Previous::Entity { entity }) if scoped.can_read(entity))
        }
        Change::Refused { .. } => event.actor == viewer.id,
        // A page read only by some is audited only for them (judged on its version the event carries).
        Change::DefinitionPut { definition } if definition.kind == berth_model::DefinitionKind::Page => {
            page_visible(scoped, viewer, definition)
        }
        Change::DefinitionDeleted { kind: berth_model::DefinitionKind::Page, .. } => matches!(
            &event.before,
            Some(Previous::Definition { definition }) if page_visible(scoped, viewer, definition)
        ),
        Change::CredentialPut { .. } | Change::CredentialDeleted { .. } | Change::SigningKeySet { .. } => false,
        _ => true,
    }
}

/// Whether `viewer` may see a version of a page: when it may read that version and, if the page still
/// exists, the page as it is now (a page restricted since is hidden from its whole past, like a page that
/// never existed).
fn page_visible(scoped: &Scoped<'_>, viewer: &Principal, version: &berth_model::Definition) -> bool {
    use berth_engine::definitions::pages::readable;
    let now = scoped.state().definition(berth_model::DefinitionKind::Page, &version.identifier);
    readable(&version.body, viewer) && now.is_none_or(|page| readable(&page.body, viewer))
}

/// Whether the version an entity change replaced may be shown with it: a record the caller sees because
/// the entity became readable does not show what it was while hidden.
fn before_visible(scoped: &Scoped<'_>, viewer: &Principal, event: &Event) -> bool {
    match &event.before {
        Some(Previous::Entity { entity }) => scoped.can_read(entity),
        Some(Previous::Definition { definition }) if definition.kind == berth_model::DefinitionKind::Page => {
            page_visible(scoped, viewer, definition)
        }
        _ => true,
    }
}

/// One page of audit records matching `filters`, newest first, from the events before `cursor` (the log's
/// head when `None`), and the cursor of the next page; `viewer` sees only what it may ([`visible`]).
///
/// A page about one entity (an `entity` filter, or an `identifier` filter on entities only) reads the
/// entity's own events named by the version index (refused attempts included), so its cost grows with the
/// entity's events, not the log; only the part of the log older than the index is scanned.
pub async fn page(
    pipeline: &Pipeline,
    viewer: &Principal,
    filters: &Filters,
    cursor: Option<u64>,
    limit: usize,
) -> Result<(Vec<Value>, Option<u64>), ReadError> {
    let view = pipeline.view();
    let scoped = Scoped::new(&view, viewer.clone(), crate::now());
    let store = pipeline.store();
    let mut before = match cursor {
        Some(c) => c,
        None => store.head().await? + 1,
    };
    let mut page = Page { filters, scoped: &scoped, viewer, limit, audits: Vec::new() };
    if let Some(id) = filters.one_entity() {
        let (seqs, indexed_from) = view.entity_events(filters.blueprint.as_deref(), id);
        let wanted: Vec<u64> = seqs.into_iter().rev().filter(|s| *s < before).collect();
        for chunk in wanted.chunks(PAGE.min(berth_store::MAX_READ_SEQS)) {
            let events = store.read_seqs(chunk.to_vec()).await?;
            for stored in events {
                before = stored.seq;
                let event = ReadError::decode(&stored)?;
                if filters.from.is_some_and(|from| event.time < from) {
                    continue;
                }
                if page.offer(&event) {
                    let more = wanted.last().is_some_and(|l| *l < before) || indexed_from > 1;
                    return Ok((page.audits, more.then_some(before)));
                }
            }
        }
        if indexed_from <= 1 {
            return Ok((page.audits, None));
        }
        before = before.min(indexed_from);
    }
    let mut scanned = 0usize;
    let mut done = false;
    'scan: while before > 1 && scanned < SCAN_BUDGET {
        let events = store.read_before(before, PAGE).await?;
        if events.is_empty() {
            done = true;
            break;
        }
        for stored in events {
            scanned += 1;
            before = stored.seq;
            let event = ReadError::decode(&stored)?;
            if let Some(from) = filters.from {
                // Replicas' clocks may disagree a little, so the log is not strictly in time order: the scan
                // goes on a minute past `from` before it stops.
                if event.time.millis() < from.millis() - crate::history::CLOCK_SLACK_MS {
                    done = true;
                    break 'scan;
                }
                if event.time < from {
                    continue;
                }
            }
            if page.offer(&event) {
                break 'scan;
            }
        }
    }
    let next = (!done && before > 1).then_some(before);
    Ok((page.audits, next))
}

/// The records of one page as they are found.
struct Page<'a> {
    filters: &'a Filters,
    scoped: &'a Scoped<'a>,
    viewer: &'a Principal,
    limit: usize,
    audits: Vec<Value>,
}

impl Page<'_> {
    /// Adds the event's record if it matches the filters and the caller may see it; whether the page is full.
    fn offer(&mut self, event: &Event) -> bool {
        let mut record = berth_model::public::change(event);
        if !self.filters.matches(event, &record) || !visible(self.scoped, self.viewer, event) {
            return false;
        }
        if !before_visible(self.scoped, self.viewer, event) {
            record.before = Value::Null;
        }
        self.audits.push(json!({
            "identifier": format!("audit-{}", event.seq),
            "seq": event.seq,
            "action": record.action,
            "resourceType": record.resource,
            "status": record.status,
            "trigger": {"by": {"userId": event.actor}, "origin": event.origin, "at": event.time},
            "context": {
                "blueprintIdentifier": record.blueprint,
                "entityIdentifier": if record.resource == "entity" { record.identifier.clone() } else { None },
                "runId": event.run_id,
            },
            "diff": {"before": record.before, "after": record.after},
        }));
        self.audits.len() == self.limit
    }
}
