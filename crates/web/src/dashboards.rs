//! Dashboards: `GET /pages` lists the portal's pages, `GET /pages/{id}` shows one with its widgets, each
//! computed through the session's view (what it may not read is neither counted nor listed), on the search
//! pool under the search deadline. Widgets, with Port's field names:
//! - `markdown` (`markdown`): the text, rendered safely;
//! - `entities-number-chart` (`blueprint`, `calculationBy`: `entities` (a count) or `property` with `func`
//!   `sum` / `average` / `min` / `max` / `median` of `property`, `dataset` rules): a number;
//! - `entities-pie-chart` (`blueprint`, `property`, `dataset`): how many entities have each value, as a
//!   bar chart drawn in SVG with every value and count also as text;
//! - `table-entities-explorer` (`blueprint`, `dataset`): the first 20 matching entities.
//!
//! Other widget types are named, not drawn.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use berth_engine::aggregate::{Aggregation, Func, GroupBy};
use berth_model::DefinitionKind;
use berth_model::query::Query as Rules;
use berth_server::AppState;
use serde_json::Value;

use crate::entity::entity_href;
use crate::fmt::{esc, markdown};
use crate::page::{Layout, UiError, UiResult, html};
use crate::session::{Session, encode};

/// The most values a chart draws (the rest are summed as "other"), and the rows a table widget shows.
const MAX_BARS: usize = 12;
const TABLE_ROWS: usize = 20;

pub struct PageLink {
    pub href: String,
    pub title: String,
    pub kind: String,
}

#[derive(Template)]
#[template(path = "dashboards.html")]
struct ListPage {
    layout: Layout,
    pages: Vec<PageLink>,
}

pub struct Widget {
    pub title: String,
    /// The widget, drawn (safe HTML).
    pub html: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Layout,
    title: String,
    description: String,
    widgets: Vec<Widget>,
}

pub async fn list(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    let view = app.pipeline.view();
    let principal = session.caller.principal();
    let pages = view
        .definitions(DefinitionKind::Page)
        .filter(|d| berth_engine::definitions::pages::readable(&d.body, &principal))
        .map(|d| PageLink {
            href: format!("/pages/{}", encode(&d.identifier)),
            title: d.body["title"].as_str().unwrap_or(&d.identifier).to_string(),
            kind: d.body["type"].as_str().unwrap_or("dashboard").to_string(),
        })
        .collect();
    html(&ListPage { layout: session.layout(&app, "Dashboards", "pages"), pages })
}

pub async fn page(State(app): State<AppState>, session: Session, Path(id): Path<String>) -> UiResult<Response> {
    let view = app.pipeline.view();
    let def = view
        .definition(DefinitionKind::Page, &id)
        .filter(|d| berth_engine::definitions::pages::readable(&d.body, &session.caller.principal()))
        .cloned()
        .ok_or_else(|| UiError::not_found(format!("there is no page `{id}`")))?;
    let title = def.body["title"].as_str().unwrap_or(&id).to_string();
    let description = def.body["description"].as_str().unwrap_or_default().to_string();
    let caller = session.caller.clone();
    let body = std::sync::Arc::clone(&def.body);
    let widgets = berth_server::searching::run(&app, move || {
        let scoped = berth_server::access::scoped(&view, &caller);
        let widgets = body["widgets"].as_array().cloned().unwrap_or_default();
        Ok(widgets.iter().map(|w| widget(&scoped, w)).collect::<Vec<_>>())
    })
    .await?;
    html(&DashboardPage { layout: session.layout(&app, title.clone(), "pages"), title, description, widgets })
}

/// A widget's `dataset` rules joined to "entities of `blueprint`".
fn dataset(blueprint: &str, w: &Value) -> Result<Rules, String> {
    let base = Rules::of_blueprint(blueprint);
    match w.get("dataset").filter(|d| !d.is_null()) {
        None => Ok(base),
        Some(d) => {
            let q = berth_model::query_context::parse_for(d, None).map_err(|e| format!("{}: {}", e.path, e.message))?;
            Ok(base.and(q))
        }
    }
}

fn note(text: &str) -> String {
    format!(r#"<p class="muted">{}</p>"#, esc(text))
}

/// One widget, drawn as safe HTML.
fn widget(scoped: &berth_server::access::Scoped<'_>, w: &Value) -> Widget {
    let ty = w["type"].as_str().unwrap_or_default();
    let title = w["title"].as_str().map(str::to_string).unwrap_or_else(|| ty.to_string());
    let blueprint = w["blueprint"].as_str().unwrap_or_default();
    let html = match ty {
        "markdown" => markdown(w["markdown"].as_str().unwrap_or_default()),
        "entities-number-chart" | "entities-pie-chart" | "table-entities-explorer"
            if scoped.state().blueprint(blueprint).is_none() =>
        {
            note(&format!("This widget names no existing blueprint ({blueprint:?})."))
        }
        "entities-number-chart" => number(scoped, blueprint, w),
        "entities-pie-chart" => chart(scoped, blueprint, w),
        "table-entities-explorer" => table(scoped, blueprint, w),
        other => note(&format!("Widgets of type {other:?} are not shown here yet.")),
    };
    Widget { title, html }
}

fn number(scoped: &berth_server::access::Scoped<'_>, blueprint: &str, w: &Value) -> String {
    let query = match dataset(blueprint, w) {
        Ok(q) => q,
        Err(e) => return note(&format!("The widget's dataset does not parse: {e}")),
    };
    let by_property = w["calculationBy"].as_str() == Some("property");
    let func = if by_property { w["func"].as_str().and_then(Func::parse).unwrap_or(Func::Sum) } else { Func::Count };
    let property = by_property.then(|| w["property"].as_str().unwrap_or_default().to_string());
    let agg = Aggregation { func, query, property, group_by: None, per: None, measure_time_by: None };
    match scoped.aggregate(agg) {
        Ok(out) => {
            let shown = match &out.result {
                Value::Number(n) => match n.as_f64() {
                    Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
                    Some(f) if f.abs() < 1e15 => format!("{f:.0}"),
                    _ => n.to_string(),
                },
                Value::Null => "—".to_string(),
                other => other.to_string(),
            };
            let unit = w["unit"].as_str().filter(|u| *u != "none" && *u != "custom").unwrap_or_default();
            format!(r#"<p class="number"><span class="value">{}</span> {}</p>"#, esc(&shown), esc(unit))
        }
        Err(e) => note(&e.to_string()),
    }
}

fn chart(scoped: &berth_server::access::Scoped<'_>, blueprint: &str, w: &Value) -> String {
    let query = match dataset(blueprint, w) {
        Ok(q) => q,
        Err(e) => return note(&format!("The widget's dataset does not parse: {e}")),
    };
    // Port names a chart's property as `property#name` at times.
    let raw = w["property"].as_str().unwrap_or_default();
    let property = raw.rsplit('#').next().unwrap_or(raw).to_string();
    let group = match raw.split_once('#') {
        Some(("relation", _)) => GroupBy::Relation(property),
        _ => GroupBy::Property(property),
    };
    let agg = Aggregation {
        func: Func::CountValues,
        query,
        property: None,
        group_by: Some(group),
        per: None,
        measure_time_by: None,
    };
    let values = match scoped.aggregate(agg) {
        Ok(out) => out.values.unwrap_or_default(),
        Err(e) => return note(&e.to_string()),
    };
    bars(&values)
}

/// A horizontal bar chart of (value, count), in SVG with a title, and the same figures as a list for
/// screen readers and copying.
pub(crate) fn bars(values: &[(Value, usize)]) -> String {
    if values.is_empty() {
        return note("No entities.");
    }
    let label = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".to_string(),
        other => other.to_string(),
    };
    let mut rows: Vec<(String, usize)> = values.iter().take(MAX_BARS).map(|(v, n)| (label(v), *n)).collect();
    let rest: usize = values.iter().skip(MAX_BARS).map(|(_, n)| n).sum();
    if rest > 0 {
        rows.push(("other".into(), rest));
    }
    let max = rows.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let (width, row) = (360usize, 22usize);
    let mut svg = format!(
        r#"<svg class="chart" role="img" viewBox="0 0 {} {}" width="{}" height="{}"><title>Entities by value</title>"#,
        width + 160,
        rows.len() * row,
        width + 160,
        rows.len() * row
    );
    for (i, (name, n)) in rows.iter().enumerate() {
        let y = i * row;
        let w = (n * width).div_ceil(max).max(1);
        svg.push_str(&format!(
            r#"<text x="0" y="{}" class="bar-label">{}</text><rect class="bar bar-{}" x="120" y="{}" width="{}" height="{}"><title>{}: {}</title></rect><text x="{}" y="{}" class="bar-count">{}</text>"#,
            y + 15,
            esc(&crate::fmt::short(&Value::String(name.clone()))),
            i % 6,
            y + 3,
            w,
            row - 6,
            esc(name),
            n,
            124 + w,
            y + 15,
            n
        ));
    }
    svg.push_str("</svg>");
    let list: String = rows.iter().map(|(name, n)| format!("<li>{}: <strong>{n}</strong></li>", esc(name))).collect();
    format!(r#"{svg}<ul class="chart-values">{list}</ul>"#)
}

fn table(scoped: &berth_server::access::Scoped<'_>, blueprint: &str, w: &Value) -> String {
    let dataset = match w.get("dataset").filter(|d| !d.is_null()) {
        None => None,
        Some(d) => match berth_model::query_context::parse_for(d, None) {
            Ok(q) => Some(q),
            Err(e) => return note(&format!("The widget's dataset does not parse: {}: {}", e.path, e.message)),
        },
    };
    let page = match scoped.search_page(blueprint, dataset, &[], None, TABLE_ROWS) {
        Ok(p) => p,
        Err(e) => return note(&e.to_string()),
    };
    if page.entities.is_empty() {
        return note("No entities.");
    }
    let rows: String = page
        .entities
        .iter()
        .map(|e| {
            format!(
                r#"<li><a href="{}">{}</a></li>"#,
                entity_href(&e.blueprint, &e.identifier),
                esc(e.title.as_deref().unwrap_or(&e.identifier))
            )
        })
        .collect();
    let more = if page.next.is_some() {
        format!(r#"<p><a href="/blueprints/{}/entities">All of them</a></p>"#, encode(blueprint))
    } else {
        String::new()
    };
    format!(r#"<ul class="links">{rows}</ul>{more}"#)
}
