//! The audit log page (`GET /audit`): the same records and filters as `GET /v1/audit-log`, newest first, with
//! their diffs. Admins see everything; Members must name an entity or identifier, as in the API.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use berth_server::AppState;
use berth_server::extract::Params;
use serde_json::Value;

use crate::form::Query;
use crate::home::{Change, changes_of};
use crate::page::{Layout, UiResult, html};
use crate::session::Session;
use crate::session::encode;

pub struct Record {
    pub change: Change,
    pub diff: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    records: Vec<Record>,
    next_href: Option<String>,
    blueprint: String,
    identifier: String,
    action: String,
    origin: String,
    resource: String,
    error: Option<String>,
}

const FILTERS: &[&str] =
    &["blueprint", "identifier", "action", "origin", "resources", "from", "to", "webhookId", "webhookEventId"];

pub async fn page(State(app): State<AppState>, session: Session, Query(p): Query) -> UiResult<Response> {
    let mut params: Vec<(String, String)> =
        FILTERS.iter().filter_map(|k| p.get(k).map(|v| (k.to_string(), v.to_string()))).collect();
    params.push(("limit".into(), "50".into()));
    if let Some(c) = p.get("cursor") {
        params.push(("cursor".into(), c.to_string()));
    }
    let mut error = None;
    let restricted = !session.caller.is_admin() && p.get("identifier").is_none();
    let (audits, next) = if restricted {
        error = Some("Only an Admin may read the whole audit log; filter by an identifier.".to_string());
        (Vec::new(), None)
    } else {
        match berth_server::routes::audit::read(&app, &session.caller, &Params(params)).await {
            Ok(r) => r,
            Err(e) => {
                error = Some(e.message);
                (Vec::new(), None)
            }
        }
    };
    let now = berth_server::now();
    let records = changes_of(&audits, now)
        .into_iter()
        .zip(audits.iter())
        .map(|(change, a)| Record { change, diff: diff_text(&a["diff"]["before"], &a["diff"]["after"]) })
        .collect();
    let next_href = next.map(|n| {
        let mut qs: Vec<String> =
            FILTERS.iter().filter_map(|k| p.get(k).map(|v| format!("{k}={}", encode(v)))).collect();
        qs.push(format!("cursor={n}"));
        format!("/audit?{}", qs.join("&"))
    });
    let text = |k: &str| p.get(k).unwrap_or("").to_string();
    let page = AuditPage {
        layout: session.layout(&app, "Audit log", "audit"),
        records,
        next_href,
        blueprint: text("blueprint"),
        identifier: text("identifier"),
        action: text("action"),
        origin: text("origin"),
        resource: text("resources"),
        error,
    };
    html(&page)
}

/// The keys that differ between two JSON objects, one `key: before → after` per line.
fn diff_text(before: &Value, after: &Value) -> String {
    let empty = serde_json::Map::new();
    let (b, a) = (before.as_object().unwrap_or(&empty), after.as_object().unwrap_or(&empty));
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut lines = Vec::new();
    for k in keys {
        if matches!(k.as_str(), "updatedAt" | "updatedBy" | "createdAt" | "createdBy") {
            continue;
        }
        let (x, y) = (b.get(k).unwrap_or(&Value::Null), a.get(k).unwrap_or(&Value::Null));
        if x != y {
            lines.push(format!("{k}: {} → {}", compact(x), compact(y)));
        }
    }
    lines.join("\n")
}

fn compact(v: &Value) -> String {
    let s = if v.is_null() { "∅".to_string() } else { v.to_string() };
    if s.chars().count() > 160 { format!("{}…", s.chars().take(160).collect::<String>()) } else { s }
}
