//! The home page (blueprints with counts and icons, recent changes, quick search) and the global search
//! (`GET /search?q=`: identifiers and titles across blueprints; a dropdown fragment for htmx as you type, a
//! full page otherwise).

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use berth_server::AppState;
use berth_server::extract::Params;
use serde_json::{Value, json};

use crate::fmt::relative;
use crate::form::Query;
use crate::page::{Layout, UiResult, html};
use crate::session::{Session, encode};

pub struct BlueprintCard {
    pub id: String,
    pub title: String,
    pub icon: String,
    pub count: usize,
    pub description: String,
}

pub struct Change {
    pub what: String,
    pub href: Option<String>,
    pub action: String,
    pub who: String,
    pub when: String,
    pub at: String,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    cards: Vec<BlueprintCard>,
    changes: Vec<Change>,
    total: usize,
}

/// How many recent changes the home page lists.
const RECENT: usize = 12;

/// Audit records (as `GET /v1/audit-log` answers them) as display rows.
pub fn changes_of(audits: &[Value], now: berth_model::Timestamp) -> Vec<Change> {
    audits
        .iter()
        .map(|a| {
            let resource = a["resourceType"].as_str().unwrap_or("");
            let ident = a["context"]["entityIdentifier"].as_str().or(a["diff"]["after"]["identifier"].as_str());
            let bp = a["context"]["blueprintIdentifier"].as_str();
            let href = match (resource, bp, ident) {
                ("entity", Some(bp), Some(id)) if a["action"] != "DELETE" => {
                    Some(format!("/entities/{}/{}", encode(bp), encode(id)))
                }
                ("blueprint", Some(bp), _) if a["action"] != "DELETE" => Some(format!("/blueprints/{}", encode(bp))),
                _ => None,
            };
            let after_or_before = |key: &str| a["diff"]["after"][key].as_str().or(a["diff"]["before"][key].as_str());
            let what = match (resource, bp, ident) {
                ("entity", Some(bp), Some(id)) => format!("{} ({bp})", after_or_before("title").unwrap_or(id)),
                _ => {
                    let name = ["identifier", "name", "email", "clientId"].iter().find_map(|k| after_or_before(k));
                    format!("{resource} {}", name.or(a["identifier"].as_str()).unwrap_or(""))
                }
            };
            let at = a["trigger"]["at"].as_str().unwrap_or("").to_string();
            let when = berth_model::Timestamp::parse(&at).map(|t| relative(t, now)).unwrap_or_default();
            Change {
                what,
                href,
                action: a["action"].as_str().unwrap_or("").to_string(),
                who: a["trigger"]["by"]["userId"].as_str().unwrap_or("").to_string(),
                when,
                at,
            }
        })
        .collect()
}

pub async fn home(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    let view = app.pipeline.view();
    let scoped = berth_server::access::scoped(&view, &session.caller);
    let cards = view
        .blueprints()
        .map(|b| BlueprintCard {
            id: b.def.identifier.clone(),
            title: b.def.title.clone(),
            icon: crate::fmt::glyph(b.def.icon.as_deref()),
            count: crate::table::visible_count(&scoped, &b.def.identifier),
            description: b.def.description.clone().unwrap_or_default(),
        })
        .collect();
    // Members read the catalog's changes; who changed users and apps is for Admins.
    let mut filter = vec![("limit".to_string(), RECENT.to_string())];
    if !session.caller.is_admin() {
        filter.push(("resources".into(), "entity".into()));
        filter.push(("resources".into(), "blueprint".into()));
    }
    let (audits, _) = berth_server::routes::audit::read(&app, &session.caller, &Params(filter)).await?;
    let page = HomePage {
        layout: session.layout(&app, "Home", "home"),
        cards,
        changes: changes_of(&audits, berth_server::now()),
        total: view.total_entities(),
    };
    html(&page)
}

pub struct Hit {
    pub href: String,
    pub title: String,
    pub identifier: String,
    pub blueprint: String,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    layout: Layout,
    q: String,
    hits: Vec<Hit>,
}

#[derive(Template)]
#[template(path = "search_results.html")]
struct SearchFragment {
    q: String,
    hits: Vec<Hit>,
}

/// Titles and identifiers containing `q` (case-insensitive), across blueprints, at most `limit`.
async fn find(app: &AppState, session: &Session, q: &str, limit: usize) -> UiResult<Vec<Hit>> {
    if q.is_empty() {
        return Ok(Vec::new());
    }
    let view = app.pipeline.view();
    let rules = json!({"combinator": "or", "rules": [
        {"property": "$title", "operator": "contains", "value": q},
        {"property": "$identifier", "operator": "contains", "value": q},
    ]});
    let query = berth_model::query::Query::parse(&rules)
        .map_err(|e| crate::page::UiError::new(berth_model::ErrorCode::BadRequest, e.message))?;
    let titles: std::collections::HashMap<String, String> =
        view.blueprints().map(|b| (b.def.identifier.clone(), b.def.title.clone())).collect();
    let caller = session.caller.clone();
    // Off the async workers, under the search deadline.
    let hits = berth_server::searching::run(app, move || {
        let scoped = berth_server::access::scoped(&view, &caller);
        let mut hits = Vec::new();
        scoped.for_each_match(query, |e| {
            if hits.len() < limit {
                hits.push(Hit {
                    href: format!("/entities/{}/{}", encode(&e.blueprint), encode(&e.identifier)),
                    title: e.title.clone().unwrap_or_else(|| e.identifier.to_string()),
                    identifier: e.identifier.to_string(),
                    blueprint: titles.get(&*e.blueprint).cloned().unwrap_or_else(|| e.blueprint.to_string()),
                });
            }
        })?;
        Ok(hits)
    })
    .await?;
    Ok(hits)
}

pub async fn search(
    State(app): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(p): Query,
) -> UiResult<Response> {
    let q = p.get("q").unwrap_or("").to_string();
    if headers.contains_key("hx-request") {
        let hits = find(&app, &session, &q, 10).await?;
        return html(&SearchFragment { q, hits });
    }
    let hits = find(&app, &session, &q, 200).await?;
    html(&SearchPage { layout: session.layout(&app, format!("Search: {q}"), ""), q, hits })
}
