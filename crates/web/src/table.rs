//! The entity table of a blueprint (`GET /blueprints/{bp}/entities`): columns chosen from the properties,
//! filters per property type turned into a rules-language query (so the table finds exactly what the search
//! API finds, with the same indexes), sort, cursor pagination and a live count.
//!
//! Query parameters: `cols` (repeated), `q` (text in title or identifier), `f.<prop>` (text contains, enum or
//! boolean equality, relation target), `min.<prop>` / `max.<prop>` (number range), `d.<prop>` (a date preset),
//! `sort` / `order`, `from` (cursor), `limit`.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use berth_model::Blueprint;
use berth_model::date_preset::PRESET_NAMES;
use berth_model::query::{Query as Rules, parse_sort};
use berth_server::AppState;
use berth_server::access::Scoped;
use serde_json::{Value, json};

use crate::fmt::{esc, short};
use crate::form::{FormData, Query};
use crate::page::{Layout, UiError, UiResult, html};
use crate::session::{Session, encode};

/// Rows per page unless `limit` says otherwise (at most 500).
pub const DEFAULT_LIMIT: usize = 50;

pub struct Column {
    pub key: String,
    pub title: String,
    pub sort_href: Option<String>,
    /// `▲` / `▼` when the table is sorted by this column.
    pub arrow: &'static str,
}

pub struct Choice {
    pub key: String,
    pub title: String,
    pub shown: bool,
}

pub struct Row {
    pub href: String,
    /// Cells as safe HTML.
    pub cells: Vec<String>,
}

/// One filter control: `kind` is text, enum, boolean, number, date or relation.
pub struct Filter {
    pub name: String,
    pub label: String,
    pub kind: &'static str,
    pub options: Vec<String>,
    pub value: String,
    pub min: String,
    pub max: String,
}

#[derive(Template)]
#[template(path = "table.html")]
pub struct TablePage {
    pub layout: Layout,
    pub bp: String,
    pub bp_title: String,
    pub icon: String,
    pub columns: Vec<Column>,
    /// Every column one may show.
    pub choosable: Vec<Choice>,
    pub rows: Vec<Row>,
    pub count: usize,
    pub total: usize,
    pub filters: Vec<Filter>,
    pub q: String,
    pub sort: String,
    pub order: String,
    pub limit: usize,
    pub next_href: Option<String>,
    pub first_href: Option<String>,
    pub error: Option<String>,
    /// Hidden inputs that keep the chosen columns and sort when the filter form is submitted.
    pub keep: Vec<(String, String)>,
    /// The CREATE actions the session may run on this blueprint.
    pub buttons: Vec<crate::actions::Button>,
}

fn property_defs(def: &Blueprint) -> impl Iterator<Item = (&String, &Value)> {
    def.schema.properties.iter()
}

fn title_of(def: &Value, key: &str) -> String {
    def.get("title").and_then(Value::as_str).unwrap_or(key).to_string()
}

/// The columns shown when none are chosen: title, identifier, the first five properties, relations, updated.
fn default_columns(def: &Blueprint) -> Vec<String> {
    let mut cols = vec!["$title".to_string()];
    cols.extend(property_defs(def).take(5).map(|(k, _)| k.clone()));
    cols.extend(def.relations.keys().take(2).cloned());
    cols.push("$updatedAt".into());
    cols
}

/// Every column the picker offers, with titles.
fn all_columns(def: &Blueprint) -> Vec<(String, String)> {
    let mut out = vec![
        ("$title".to_string(), "Title".to_string()),
        ("$identifier".to_string(), "Identifier".to_string()),
        ("$team".to_string(), "Team".to_string()),
    ];
    out.extend(property_defs(def).map(|(k, d)| (k.clone(), title_of(d, k))));
    // Mirror, calculation and aggregation properties, marked as derived.
    for derived in [&def.mirror_properties, &def.calculation_properties, &def.aggregation_properties] {
        out.extend(derived.iter().map(|(k, d)| (k.clone(), format!("{} (derived)", title_of(d, k)))));
    }
    out.extend(def.relations.iter().map(|(k, r)| (k.clone(), r.title.clone().unwrap_or_else(|| k.clone()))));
    out.push(("$createdAt".into(), "Created".into()));
    out.push(("$updatedAt".into(), "Updated".into()));
    out
}

/// The rules the filter parameters stand for (`None`: no filter), checked by the same parser as the API.
pub fn filter_rules(def: &Blueprint, p: &FormData) -> Result<Option<Value>, String> {
    let mut rules = Vec::new();
    if let Some(q) = p.get("q") {
        rules.push(json!({"combinator": "or", "rules": [
            {"property": "$title", "operator": "contains", "value": q},
            {"property": "$identifier", "operator": "contains", "value": q},
        ]}));
    }
    if let Some(team) = p.get("f.$team") {
        rules.push(json!({"property": "$team", "operator": "containsAny", "value": [team]}));
    }
    for (key, d) in property_defs(def) {
        let ty = d.get("type").and_then(Value::as_str).unwrap_or("string");
        let format = d.get("format").and_then(Value::as_str).unwrap_or("");
        if let Some(v) = p.get(&format!("f.{key}")) {
            let rule = match ty {
                "boolean" => json!({"property": key, "operator": "=", "value": v == "true"}),
                "number" => {
                    let n: f64 = v.parse().map_err(|_| format!("{key}: {v:?} is not a number"))?;
                    json!({"property": key, "operator": "=", "value": n})
                }
                "array" => json!({"property": key, "operator": "containsAny", "value": [v]}),
                _ if d.get("enum").is_some() => json!({"property": key, "operator": "=", "value": v}),
                _ => json!({"property": key, "operator": "contains", "value": v}),
            };
            rules.push(rule);
        }
        for (bound, op) in [("min", ">="), ("max", "<=")] {
            if let Some(v) = p.get(&format!("{bound}.{key}")) {
                let n: f64 = v.parse().map_err(|_| format!("{key}: {bound} {v:?} is not a number"))?;
                rules.push(json!({"property": key, "operator": op, "value": n}));
            }
        }
        if format == "date-time" {
            if let Some(preset) = p.get(&format!("d.{key}")) {
                if !PRESET_NAMES.split(", ").any(|n| n == preset) {
                    return Err(format!("{key}: {preset:?} is not a date preset ({PRESET_NAMES})"));
                }
                rules.push(json!({"property": key, "operator": "between", "value": {"preset": preset}}));
            }
        }
    }
    for key in def.relations.keys() {
        if let Some(v) = p.get(&format!("f.{key}")) {
            rules.push(json!({"relation": key, "operator": "=", "value": v}));
        }
    }
    Ok((!rules.is_empty()).then(|| json!({"combinator": "and", "rules": rules})))
}

/// The first 200 readable identifiers of each relation's target blueprint (the relation filters' choices).
fn relation_options(def: &Blueprint, scoped: &Scoped<'_>) -> HashMap<String, Vec<String>> {
    def.relations
        .iter()
        .map(|(key, r)| {
            let mut options: Vec<String> =
                scoped.entities_of(&r.target).take(200).map(|e| e.identifier.to_string()).collect();
            options.sort();
            (key.clone(), options)
        })
        .collect()
}

fn filters(def: &Blueprint, p: &FormData, relation_options: &mut HashMap<String, Vec<String>>) -> Vec<Filter> {
    let mut out = Vec::new();
    for (key, d) in property_defs(def) {
        let ty = d.get("type").and_then(Value::as_str).unwrap_or("string");
        let format = d.get("format").and_then(Value::as_str).unwrap_or("");
        let label = title_of(d, key);
        let mut f = Filter {
            name: key.clone(),
            label,
            kind: "text",
            options: Vec::new(),
            value: p.get(&format!("f.{key}")).unwrap_or("").to_string(),
            min: p.get(&format!("min.{key}")).unwrap_or("").to_string(),
            max: p.get(&format!("max.{key}")).unwrap_or("").to_string(),
        };
        if let Some(list) = d.get("enum").and_then(Value::as_array) {
            f.kind = "enum";
            f.options = list.iter().map(short).collect();
        } else if ty == "boolean" {
            f.kind = "boolean";
            f.options = vec!["true".into(), "false".into()];
        } else if ty == "number" {
            f.kind = "number";
        } else if format == "date-time" {
            f.kind = "date";
            f.value = p.get(&format!("d.{key}")).unwrap_or("").to_string();
            f.options = PRESET_NAMES.split(", ").map(str::to_string).collect();
        } else if ty == "object" {
            continue;
        }
        out.push(f);
    }
    for (key, r) in &def.relations {
        // Relation targets to choose from: the first 200 the session may read.
        let options = relation_options.remove(key).unwrap_or_default();
        out.push(Filter {
            name: key.clone(),
            label: r.title.clone().unwrap_or_else(|| key.clone()),
            kind: "relation",
            options,
            value: p.get(&format!("f.{key}")).unwrap_or("").to_string(),
            min: String::new(),
            max: String::new(),
        });
    }
    out
}

/// A derived property's definition (its `type` and `format` say how a value is shown).
pub fn derived_def<'d>(def: &'d Blueprint, key: &str) -> Option<&'d Value> {
    def.calculation_properties.get(key).or_else(|| def.aggregation_properties.get(key))
}

/// A cell's HTML for a column of an entity.
/// A related entity the caller may not read is named (it is the readable entity's own data) but not linked.
fn cell(def: &Blueprint, e: &berth_model::Entity, col: &str, scoped: &Scoped<'_>) -> String {
    let now = scoped.now();
    let link = |bp: &str, id: &str| match scoped.entity(bp, id) {
        Some(_) => format!(r#"<a href="/entities/{}/{}">{}</a>"#, encode(bp), encode(id), esc(id)),
        None => esc(id),
    };
    match col {
        "$title" => format!(
            r#"<a class="strong" href="/entities/{}/{}">{}</a>"#,
            encode(&e.blueprint),
            encode(&e.identifier),
            esc(e.title.as_deref().unwrap_or(&e.identifier))
        ),
        "$identifier" => format!("<code>{}</code>", esc(&e.identifier)),
        "$team" => esc(&e.team.join(", ")),
        "$createdAt" => crate::fmt::time_html(e.created_at, now),
        "$updatedAt" => crate::fmt::time_html(e.updated_at, now),
        key => {
            if let Some(r) = def.relations.get(key) {
                let targets = e.relations.get(key).map(berth_model::Entity::relation_targets).unwrap_or_default();
                return targets.iter().map(|t| link(&r.target, t)).collect::<Vec<_>>().join(", ");
            }
            match e.properties.get(key) {
                Some(v) => crate::fmt::cell_html(def.schema.properties.get(key), v, now),
                None => match scoped.derived_value(e, key) {
                    Some(v) if !v.is_null() => crate::fmt::cell_html(derived_def(def, key), &v, now),
                    _ => String::new(),
                },
            }
        }
    }
}

/// The URL of this table with some parameters replaced (`None` removes them).
fn href(bp: &str, p: &FormData, set: &[(&str, Option<&str>)]) -> String {
    let mut pairs: Vec<(String, String)> =
        p.0.iter().filter(|(k, v)| !v.is_empty() && !set.iter().any(|(s, _)| s == k)).cloned().collect();
    for (k, v) in set {
        if let Some(v) = v {
            pairs.push((k.to_string(), v.to_string()));
        }
    }
    let qs: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    format!("/blueprints/{}/entities?{}", encode(bp), qs.join("&"))
}

pub async fn page(
    State(app): State<AppState>,
    session: Session,
    Path(bp): Path<String>,
    Query(p): Query,
) -> UiResult<Response> {
    let view = app.pipeline.view();
    let entry = view.blueprint(&bp).ok_or_else(|| UiError::not_found(format!("there is no blueprint `{bp}`")))?;
    let def = &entry.def;
    let scoped = berth_server::access::scoped(&view, &session.caller);
    let limit = p.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(DEFAULT_LIMIT).clamp(1, 500);
    let known = all_columns(def);
    // Only the parameters this page reads are kept (they are copied into every link of the page).
    let p = FormData(p.0.into_iter().filter(|(k, _)| is_table_param(k)).take(MAX_PARAMS).collect());
    let cols: Vec<String> = {
        // Columns the blueprint has, each once, at most MAX_COLUMNS.
        let mut chosen: Vec<String> = Vec::new();
        for c in p.all("cols") {
            if chosen.len() < MAX_COLUMNS && known.iter().any(|(k, _)| *k == c) && !chosen.contains(&c) {
                chosen.push(c);
            }
        }
        if chosen.is_empty() { default_columns(def) } else { chosen }
    };
    // Links carry the validated columns, not what the URL repeated.
    let explicit = p.0.iter().any(|(k, _)| k == "cols");
    let mut p = FormData(p.0.into_iter().filter(|(k, _)| k != "cols").collect());
    if explicit {
        p.0.extend(cols.iter().map(|c| ("cols".to_string(), c.clone())));
    }
    let sort = p.get("sort").unwrap_or("").to_string();
    let order = if p.get("order") == Some("desc") { "desc" } else { "asc" }.to_string();
    let mut error = None;
    // The filters, narrowed to what the caller may read (the count uses the same rules).
    let chosen = match filter_rules(def, &p) {
        Ok(r) => r,
        Err(e) => {
            error = Some(e);
            None
        }
    };
    let query = match chosen.as_ref().map(Rules::parse).transpose() {
        Ok(q) => q,
        Err(e) => {
            error = Some(format!("{}: {}", e.path, e.message));
            None
        }
    };
    let sort_keys = if sort.is_empty() {
        Vec::new()
    } else {
        parse_sort(&json!([{"property": sort, "order": order}]))
            .map_err(|e| UiError::new(berth_model::ErrorCode::BadRequest, e.message))?
    };
    let from = p.get("from");
    // The page and its count run off the async workers, under the search deadline (as API searches do).
    let (v, caller, blueprint, q, keys, after) = (
        std::sync::Arc::clone(&view),
        session.caller.clone(),
        bp.clone(),
        query.clone(),
        sort_keys.clone(),
        from.map(str::to_string),
    );
    let searched = berth_server::searching::run(&app, move || {
        let scoped = berth_server::access::scoped(&v, &caller);
        let choices = match v.blueprint(&blueprint) {
            Some(entry) => relation_options(&entry.def, &scoped),
            None => HashMap::new(),
        };
        let page = scoped.search_page(&blueprint, q.clone(), &keys, after.as_deref(), limit)?;
        // The first page holds every match: no second pass to count them.
        let count = if after.is_none() && page.next.is_none() {
            page.entities.len()
        } else {
            scoped.count(&blueprint, q).unwrap_or(0)
        };
        Ok((page.entities, page.next, count, choices))
    })
    .await;
    let (entities, next, count, mut choices) = match searched {
        Ok(found) => found,
        Err(e) => {
            error = Some(e.message);
            (Vec::new(), None, 0, HashMap::new())
        }
    };
    let titles: std::collections::HashMap<String, String> = all_columns(def).into_iter().collect();
    let columns = cols
        .iter()
        .map(|c| {
            let sortable =
                !c.starts_with('$') || c == "$title" || c == "$identifier" || c == "$updatedAt" || c == "$createdAt";
            let sortable = sortable && !def.relations.contains_key(c);
            let next_order = if &sort == c && order == "asc" { "desc" } else { "asc" };
            Column {
                key: c.clone(),
                title: titles.get(c).cloned().unwrap_or_else(|| c.clone()),
                sort_href: sortable
                    .then(|| href(&bp, &p, &[("sort", Some(c)), ("order", Some(next_order)), ("from", None)])),
                arrow: if &sort == c { if order == "asc" { "▲" } else { "▼" } } else { "" },
            }
        })
        .collect();
    let rows = entities
        .iter()
        .map(|e| Row {
            href: format!("/entities/{}/{}", encode(&bp), encode(&e.identifier)),
            cells: cols.iter().map(|c| cell(def, e, c, &scoped)).collect(),
        })
        .collect();
    let choosable =
        all_columns(def).into_iter().map(|(key, title)| Choice { shown: cols.contains(&key), key, title }).collect();
    let mut keep: Vec<(String, String)> = cols.iter().map(|c| ("cols".to_string(), c.clone())).collect();
    if !sort.is_empty() {
        keep.push(("sort".into(), sort.clone()));
        keep.push(("order".into(), order.clone()));
    }
    let page = TablePage {
        buttons: crate::actions::buttons(&app, &session, &bp, None),
        layout: session.layout(&app, def.title.clone(), bp.clone()),
        bp: bp.clone(),
        bp_title: def.title.clone(),
        icon: crate::fmt::glyph(def.icon.as_deref()),
        columns,
        choosable,
        rows,
        count,
        total: visible_count(&scoped, &bp),
        filters: filters(def, &p, &mut choices),
        q: p.get("q").unwrap_or("").to_string(),
        sort,
        order,
        limit,
        next_href: next.as_deref().map(|n| href(&bp, &p, &[("from", Some(n))])),
        first_href: from.is_some().then(|| href(&bp, &p, &[("from", None)])),
        error,
        keep,
    };
    html(&page)
}

/// How many entities of `bp` the caller of `scoped` may read.
pub fn visible_count(scoped: &Scoped<'_>, bp: &str) -> usize {
    scoped.count(bp, None).unwrap_or(0)
}

/// The most columns a table shows, and the most query parameters a table page keeps.
const MAX_COLUMNS: usize = 64;
const MAX_PARAMS: usize = 256;

/// Whether a query parameter is one the table reads (filters, columns, sort, page).
fn is_table_param(key: &str) -> bool {
    matches!(key, "q" | "cols" | "sort" | "order" | "from" | "limit" | "deleted")
        || ["f.", "min.", "max.", "d."].iter().any(|p| key.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blueprint() -> Blueprint {
        let body = json!({"identifier": "service", "title": "Service", "schema": {"properties": {
            "language": {"type": "string", "enum": ["go", "rust"]},
            "replicas": {"type": "number"},
            "deployedAt": {"type": "string", "format": "date-time"},
            "on": {"type": "boolean"}}},
            "relations": {"team": {"target": "team", "many": false}}});
        Blueprint::from_body(&body, "t", berth_model::Timestamp::from_millis(0), None).expect("blueprint")
    }

    proptest::proptest! {
        /// Whatever a query string holds, the filters give rules the API's parser accepts, or a message; never
        /// a panic.
        #[test]
        fn any_query_string_gives_parsable_rules_or_an_error(
            pairs in proptest::collection::vec(
                (proptest::sample::select(vec!["q", "f.language", "f.replicas", "min.replicas", "max.replicas",
                    "d.deployedAt", "f.on", "f.team", "f.$team", "f.nope", "sort", "from", "cols"]),
                 ".{0,12}"),
                0..8),
        ) {
            let raw: String = pairs.iter().map(|(k, v)| format!("{}={}", k, super::encode(v))).collect::<Vec<_>>().join("&");
            let p = FormData::parse(raw.as_bytes());
            if let Ok(Some(rules)) = filter_rules(&blueprint(), &p) {
                proptest::prop_assert!(Rules::parse(&rules).is_ok(), "{rules}");
            }
        }
    }

    #[test]
    fn filters_become_rules_the_api_parser_accepts() {
        let def = blueprint();
        let p = FormData::parse(
            b"q=pay&f.language=go&min.replicas=2&max.replicas=5&d.deployedAt=lastWeek&f.on=true&f.team=core",
        );
        let rules = filter_rules(&def, &p).expect("rules").expect("some");
        Rules::parse(&rules).expect("parses");
        let text = rules.to_string();
        for part in
            [r#""operator":">=","value":2.0"#, r#""preset":"lastWeek""#, r#""relation":"team""#, r#""value":true"#]
        {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert!(filter_rules(&def, &FormData::parse(b"")).expect("ok").is_none());
        assert!(filter_rules(&def, &FormData::parse(b"min.replicas=lots")).is_err());
    }
}
