//! Where data comes in (Admins): `GET /integrations` lists the Ocean integrations and the inbound webhooks;
//! `GET /integrations/{id}`: one integration, its mapping, its last resyncs with their counts and errors
//! per kind (as Ocean reported them), its newest log lines, and "Resync now" (`POST .../resync`, which moves
//! its `resync-request`); `GET /webhooks/{id}`: one inbound webhook, its ingest URL and mappings, its
//! newest requests with what each mapping did, and "Process again" for a failed one
//! (`POST /webhooks/{id}/events/{event}/retry`).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use berth_engine::Command;
use berth_engine::definitions::DefinitionWrite;
use berth_model::DefinitionKind;
use berth_server::AppState;
use serde_json::{Map, Value, json};

use crate::page::{Layout, UiError, UiResult};
use crate::session::{Session, encode};

pub struct IntegrationRow {
    pub href: String,
    pub identifier: String,
    pub kind: String,
    pub version: String,
    pub status: String,
    pub last_start: String,
    pub last_end: String,
}

pub struct WebhookRow {
    pub href: String,
    pub identifier: String,
    pub title: String,
    pub enabled: bool,
    pub mappings: usize,
    pub pending: usize,
    pub failed: usize,
}

#[derive(Template)]
#[template(path = "integrations.html")]
struct ListPage {
    layout: Layout,
    integrations: Vec<IntegrationRow>,
    webhooks: Vec<WebhookRow>,
}

/// One kind's counts in one resync.
pub struct KindRow {
    pub kind: String,
    pub state: String,
    /// `phase type: count` for every count Ocean reported (extracted, transformed, loaded, failed, deleted).
    pub counts: Vec<(String, String)>,
    pub failed: bool,
}

pub struct SyncRow {
    pub event: String,
    pub at: String,
    pub kinds: Vec<KindRow>,
}

#[derive(Template)]
#[template(path = "integration.html")]
struct IntegrationPage {
    layout: Layout,
    row: IntegrationRow,
    config: String,
    requested: String,
    syncs: Vec<SyncRow>,
    logs: Vec<(String, String, String)>,
    example_kinds: Vec<String>,
}

pub struct EventRow {
    pub id: String,
    pub retry_href: String,
    pub audit_href: String,
    pub received: String,
    pub status: String,
    pub results: Vec<String>,
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct WebhookPage {
    layout: Layout,
    row: WebhookRow,
    url: String,
    security: String,
    mappings: Vec<(String, String, String)>,
    events: Vec<EventRow>,
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn integration_row(d: &berth_model::Definition) -> IntegrationRow {
    let b = &d.body;
    let state = b.get("resyncState");
    IntegrationRow {
        href: format!("/integrations/{}", encode(&d.identifier)),
        identifier: d.identifier.clone(),
        kind: text(b.get("installationAppType")),
        version: text(b.get("version")),
        status: text(state.and_then(|s| s.get("status"))),
        last_start: text(state.and_then(|s| s.get("lastResyncStart"))),
        last_end: text(state.and_then(|s| s.get("lastResyncEnd"))),
    }
}

/// The events of a webhook, newest first.
fn events_of(view: &berth_engine::State, webhook: &str) -> Vec<std::sync::Arc<berth_model::Definition>> {
    let prefix = format!("{webhook}#");
    let mut all: Vec<_> = view
        .definitions_from(DefinitionKind::WebhookEvent, &prefix)
        .take_while(|d| d.identifier.starts_with(&prefix))
        .cloned()
        .collect();
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.identifier.cmp(&a.identifier)));
    all
}

fn webhook_row(view: &berth_engine::State, d: &berth_model::Definition) -> WebhookRow {
    let events = events_of(view, &d.identifier);
    let count =
        |status: &str| events.iter().filter(|e| e.body.get("status").and_then(Value::as_str) == Some(status)).count();
    WebhookRow {
        href: format!("/webhooks/{}", encode(&d.identifier)),
        identifier: d.identifier.clone(),
        title: d.body.get("title").and_then(Value::as_str).unwrap_or(&d.identifier).to_string(),
        enabled: d.body.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        mappings: d.body.get("mappings").and_then(Value::as_array).map_or(0, Vec::len),
        pending: count("pending"),
        failed: count("failed"),
    }
}

pub async fn list(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    session.require_admin("see integrations")?;
    let view = app.pipeline.view();
    let integrations = view.definitions(DefinitionKind::Integration).map(|d| integration_row(d)).collect();
    let webhooks = view.definitions(DefinitionKind::Webhook).map(|d| webhook_row(&view, d)).collect();
    crate::page::html(&ListPage {
        layout: session.layout(&app, "Integrations", "integrations"),
        integrations,
        webhooks,
    })
}

/// Every `{phase}.object_count_type.{type}.object_count` Ocean reported for a kind.
fn counts(metrics: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(phases) = metrics.pointer("/metrics/phase").and_then(Value::as_object) else { return out };
    for (phase, body) in phases {
        let Some(types) = body.get("object_count_type").and_then(Value::as_object) else { continue };
        for (kind, v) in types {
            if let Some(n) = v.get("object_count").and_then(Value::as_f64) {
                out.push((format!("{phase} {}", kind.replace('_', " ")), format!("{n:.0}")));
            }
        }
    }
    out
}

fn sync_row(sync: &Value) -> SyncRow {
    let kinds = sync
        .get("kinds")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.starts_with("__"))
                .map(|(k, v)| {
                    let counts = counts(v);
                    let failed = counts.iter().any(|(what, n)| what.ends_with("failed") && n != "0");
                    KindRow { kind: k.clone(), state: text(v.get("syncState")), counts, failed }
                })
                .collect()
        })
        .unwrap_or_default();
    SyncRow { event: text(sync.get("eventId")), at: text(sync.get("createdAt")), kinds }
}

pub async fn integration(State(app): State<AppState>, session: Session, Path(id): Path<String>) -> UiResult<Response> {
    session.require_admin("see integrations")?;
    let view = app.pipeline.view();
    let d = view
        .definition(DefinitionKind::Integration, &id)
        .cloned()
        .ok_or_else(|| UiError::not_found(format!("there is no integration `{id}`")))?;
    let syncs = berth_server::routes::integrations::syncs(&view, &id).iter().map(sync_row).collect();
    let logs = berth_server::routes::integrations::newest_log_lines(&view, &id, 200)
        .iter()
        .map(|l| (text(l.get("timestamp")), text(l.get("level")), text(l.get("message"))))
        .collect();
    let prefix = berth_model::integration::record_prefix(&id, "examples");
    let example_kinds = view
        .definitions_from(DefinitionKind::IntegrationRecord, &prefix)
        .take_while(|r| r.identifier.starts_with(&prefix))
        .map(|r| r.identifier[prefix.len()..].to_string())
        .collect();
    let row = integration_row(&d);
    let page = IntegrationPage {
        layout: session.layout(&app, row.identifier.clone(), "integrations"),
        config: serde_json::to_string_pretty(d.body.get("config").unwrap_or(&Value::Null)).unwrap_or_default(),
        requested: text(d.body.pointer("/resyncRequest/updatedAt")),
        syncs,
        logs,
        example_kinds,
        row,
    };
    crate::page::html(&page)
}

/// "Resync now": moves the integration's `resync-request`, which a polling integration picks up.
pub async fn resync(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    let href = format!("/integrations/{}", encode(&id));
    session.require_admin_to_change(&app, &href, "resync integrations")?;
    let mut changes = Map::new();
    changes.insert("resyncRequest".into(), json!({"updatedAt": berth_server::now(), "by": session.meta().actor}));
    let command = Command::WriteDefinition {
        kind: DefinitionKind::Integration,
        identifier: id,
        how: DefinitionWrite::Merge(changes),
    };
    let (outcome, _) =
        app.pipeline.write_one(session.meta(), command).await.map_err(berth_server::error::ApiError::from)?;
    outcome.map_err(berth_server::error::ApiError::from)?;
    Ok(crate::page::see_other(&href))
}

fn result_lines(results: Option<&Value>) -> Vec<String> {
    results
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let n = |k: &str| r.get(k).and_then(Value::as_array).map_or(0, Vec::len);
            let errors: Vec<String> =
                r.get("errors").and_then(Value::as_array).into_iter().flatten().map(|e| text(Some(e))).collect();
            let matched =
                if r.get("matched").and_then(Value::as_bool) == Some(false) { ", filter not met" } else { "" };
            let mut line = format!("mapping {i}: {} written, {} deleted{matched}", n("upserted"), n("deleted"));
            if !errors.is_empty() {
                line.push_str(&format!("; {}", errors.join("; ")));
            }
            line
        })
        .collect()
}

pub async fn webhook(
    State(app): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> UiResult<Response> {
    session.require_admin("see webhooks")?;
    let view = app.pipeline.view();
    let d = view
        .definition(DefinitionKind::Webhook, &id)
        .cloned()
        .ok_or_else(|| UiError::not_found(format!("there is no webhook `{id}`")))?;
    let b = &d.body;
    let key = text(b.get("webhookKey"));
    let security = match b.get("security").and_then(|s| s.get("signatureAlgorithm")).and_then(Value::as_str) {
        Some(alg) => format!(
            "{alg} in `{}`",
            text(b.pointer("/security/signatureHeaderName")).chars().take(100).collect::<String>()
        ),
        None => "none: anyone with the URL may send".into(),
    };
    let mappings = b
        .get("mappings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| {
            let operation = match m.get("operation") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => text(o.get("type")),
                _ => "create".into(),
            };
            (text(m.get("blueprint")), operation, text(m.get("filter")))
        })
        .collect();
    let events = events_of(&view, &id)
        .iter()
        .take(100)
        .map(|e| EventRow {
            id: e.identifier.clone(),
            retry_href: format!("/webhooks/{}/events/{}/retry", encode(&id), encode(&e.identifier)),
            audit_href: format!("/audit?webhookEventId={}", encode(&e.identifier)),
            received: e.created_at.to_rfc3339(),
            status: text(e.body.get("status")),
            results: result_lines(e.body.get("results")),
        })
        .collect();
    let row = webhook_row(&view, &d);
    let page = WebhookPage {
        layout: session.layout(&app, row.title.clone(), "integrations"),
        url: format!("{}/ingest/{key}", berth_server::routes::public_base(&headers)),
        security,
        mappings,
        events,
        row,
    };
    crate::page::html(&page)
}

/// "Process again": a failed request back to the ingestion worker, with the webhook as it is now.
pub async fn retry_event(
    State(app): State<AppState>,
    session: Session,
    Path((id, event)): Path<(String, String)>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    let href = format!("/webhooks/{}", encode(&id));
    session.require_admin_to_change(&app, &href, "process webhook requests again")?;
    if !event.starts_with(&format!("{id}#")) {
        return Err(UiError::not_found(format!("webhook `{id}` has no request `{event}`")));
    }
    let (outcome, _) = app
        .pipeline
        .write_one(berth_server::system_meta(), Command::RequeueWebhookEvent { id: event })
        .await
        .map_err(berth_server::error::ApiError::from)?;
    outcome.map_err(berth_server::error::ApiError::from)?;
    Ok(crate::page::see_other(&href))
}
