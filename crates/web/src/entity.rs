//! An entity's page (`GET /entities/{bp}/{id}`): title, icon, team, properties rendered by format, relations
//! in both directions, and its history with diffs read from the change log; and deleting it, behind a
//! confirmation page.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use berth_engine::Command;
use berth_model::Entity;
use berth_server::AppState;
use berth_server::routes::history;
use serde_json::Value;

use crate::fmt::{esc, short, time_html, value_html};
use crate::form::FormData;
use crate::page::{Layout, UiError, UiResult, html, see_other};
use crate::session::{Session, encode};

pub struct Field {
    pub label: String,
    pub key: String,
    /// Safe HTML.
    pub value: String,
}

pub struct Link {
    pub href: String,
    pub text: String,
}

pub struct RelationGroup {
    pub label: String,
    pub links: Vec<Link>,
}

pub struct DiffLine {
    pub field: String,
    pub before: String,
    pub after: String,
}

pub struct VersionView {
    pub seq: u64,
    pub action: &'static str,
    pub who: String,
    pub origin: String,
    /// Safe HTML.
    pub when: String,
    pub diff: Vec<DiffLine>,
}

#[derive(Template)]
#[template(path = "entity.html")]
struct EntityPage {
    layout: Layout,
    bp: String,
    bp_title: String,
    id: String,
    title: String,
    icon: String,
    team: Vec<String>,
    fields: Vec<Field>,
    outgoing: Vec<RelationGroup>,
    incoming: Vec<RelationGroup>,
    meta: Vec<Field>,
    versions: Vec<VersionView>,
    scorecards: Vec<CardView>,
    /// A service's environments and what runs there (empty for other blueprints).
    running: Vec<RunningView>,
    base: String,
    /// The DAY-2 and DELETE actions the session may run on this entity.
    buttons: Vec<crate::actions::Button>,
}

/// What runs in one environment of a service.
struct RunningView {
    environment: String,
    version: String,
    href: String,
    since: String,
}

/// A scorecard's result for the entity, as the page shows it.
struct CardView {
    title: String,
    href: String,
    level: String,
    /// The level's colour as a badge class (`level-gold`, ...; `level-other` for a colour without one).
    class: String,
    rules: Vec<RuleView>,
}

struct RuleView {
    title: String,
    level: String,
    passed: bool,
    /// The rule's query in words (`language = "go"`, ...).
    words: String,
}

/// The colours a level badge has a style for.
const LEVEL_COLOURS: [&str; 12] =
    ["paleBlue", "bronze", "silver", "gold", "red", "green", "blue", "orange", "yellow", "purple", "pink", "gray"];

/// A rules-language query in words: `a = "x" and b isNotEmpty`, nested groups in brackets.
fn in_words(q: &Value) -> String {
    let node = |r: &Value| -> String {
        if r.get("combinator").is_some() {
            return format!("({})", in_words(r));
        }
        let subject = r
            .get("property")
            .or_else(|| r.get("relation"))
            .or_else(|| r.get("scorecard"))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_default();
        let op = r.get("operator").and_then(Value::as_str).unwrap_or("?");
        match r.get("value") {
            Some(v) => format!("{subject} {op} {v}"),
            None => format!("{subject} {op}"),
        }
    };
    let joiner = if q.get("combinator").and_then(Value::as_str) == Some("or") { " or " } else { " and " };
    let rules = q.get("conditions").or_else(|| q.get("rules")).and_then(Value::as_array);
    rules.map(|rs| rs.iter().map(node).collect::<Vec<_>>().join(joiner)).unwrap_or_default()
}

/// The entity's scorecards as the session sees them: each scorecard's level (in its colour) and every rule
/// passed or failed, with its query in words.
fn scorecards_of(view: &berth_engine::State, scoped: &berth_server::access::Scoped<'_>, e: &Entity) -> Vec<CardView> {
    let Some(Value::Object(results)) = scoped.scorecards(e) else { return Vec::new() };
    let mut out = Vec::new();
    for (id, result) in results {
        let key = berth_model::definition::scorecard_key(&e.blueprint, &id);
        let Some(def) = view.definition(berth_model::DefinitionKind::Scorecard, &key) else { continue };
        let body = &*def.body;
        let level = result["level"].as_str().unwrap_or_default().to_string();
        let colour = body["levels"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["title"] == level.as_str()))
            .and_then(|l| l["color"].as_str())
            .unwrap_or("");
        let class = if LEVEL_COLOURS.contains(&colour) { format!("level-{colour}") } else { "level-other".into() };
        let rules = result["rules"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        let rid = r["identifier"].as_str().unwrap_or_default();
                        let rule = body["rules"].as_array().and_then(|all| all.iter().find(|x| x["identifier"] == rid));
                        RuleView {
                            title: rule.and_then(|x| x["title"].as_str()).unwrap_or(rid).to_string(),
                            level: r["level"].as_str().unwrap_or_default().to_string(),
                            passed: r["status"] == "SUCCESS",
                            words: rule.map(|x| in_words(&x["query"])).unwrap_or_default(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let href = crate::scorecards::href(&e.blueprint, &id);
        out.push(CardView { title: body["title"].as_str().unwrap_or(&id).to_string(), href, level, class, rules });
    }
    out
}

pub fn entity_href(bp: &str, id: &str) -> String {
    format!("/entities/{}/{}", encode(bp), encode(id))
}

/// The entity, if it exists and the session may read it (else a 404, as if it did not exist).
pub fn load(app: &AppState, session: &Session, bp: &str, id: &str) -> UiResult<std::sync::Arc<Entity>> {
    let view = app.pipeline.view();
    berth_server::access::scoped(&view, &session.caller)
        .entity(bp, id)
        .cloned()
        .ok_or_else(|| UiError::not_found(format!("there is no entity `{id}` of blueprint `{bp}`")))
}

/// The field's value in an entity as it is serialised (`properties.x`, `relations.y`, `title`, `team`).
fn field_value(e: Option<&Entity>, field: &str) -> String {
    let Some(e) = e else { return String::new() };
    let Ok(v) = serde_json::to_value(e) else { return String::new() };
    let found = match field.split_once('.') {
        Some((outer, inner)) => v.get(outer).and_then(|o| o.get(inner)).cloned(),
        None => v.get(field).cloned(),
    };
    short(&found.unwrap_or(Value::Null))
}

pub async fn page(
    State(app): State<AppState>,
    session: Session,
    Path((bp, id)): Path<(String, String)>,
) -> UiResult<Response> {
    let view = app.pipeline.view();
    let entry = view.blueprint(&bp).ok_or_else(|| UiError::not_found(format!("there is no blueprint `{bp}`")))?;
    let def = &entry.def;
    let e = load(&app, &session, &bp, &id)?;
    let scoped = berth_server::access::scoped(&view, &session.caller);
    let readable = |bp: &str, id: &str| scoped.entity(bp, id).is_some();
    let now = scoped.now();
    let mut fields: Vec<Field> = def
        .schema
        .properties
        .iter()
        .map(|(k, d)| Field {
            label: d.get("title").and_then(Value::as_str).unwrap_or(k).to_string(),
            key: k.clone(),
            value: value_html(Some(d), e.properties.get(k).unwrap_or(&Value::Null), now),
        })
        .collect();
    // Derived values (as the caller sees them), after the stored ones, marked as derived.
    if let Some((values, errors)) = scoped.derived(&e) {
        for (k, v) in values {
            let d = [&def.mirror_properties, &def.calculation_properties, &def.aggregation_properties]
                .into_iter()
                .find_map(|m| m.get(&k));
            let title = d.and_then(|d| d.get("title")).and_then(Value::as_str).unwrap_or(&k).to_string();
            let mut value = value_html(crate::table::derived_def(def, &k), &v, now);
            if let Some(reason) = errors.get(&k).and_then(Value::as_str) {
                value = format!(r#"<span class="muted" title="{}">—</span>"#, crate::fmt::esc(reason));
            }
            fields.push(Field { label: format!("{title} (derived)"), key: k, value });
        }
    }
    let outgoing = def
        .relations
        .iter()
        .map(|(k, r)| RelationGroup {
            label: format!("{} → {}", r.title.clone().unwrap_or_else(|| k.clone()), r.target),
            links: e
                .relations
                .get(k)
                .map(Entity::relation_targets)
                .unwrap_or_default()
                .into_iter()
                .filter(|t| readable(&r.target, t))
                .map(|t| Link { href: entity_href(&r.target, t), text: title_of(&scoped, &r.target, t) })
                .collect(),
        })
        .collect();
    let mut incoming: Vec<RelationGroup> = Vec::new();
    for edge in view.incoming(&bp, &id).filter(|edge| readable(edge.blueprint(), &edge.identifier)) {
        let label = format!("{} ← (their `{}`)", edge.blueprint(), edge.relation());
        let link = Link {
            href: entity_href(edge.blueprint(), &edge.identifier),
            text: title_of(&scoped, edge.blueprint(), &edge.identifier),
        };
        match incoming.iter_mut().find(|g| g.label == label) {
            Some(g) => g.links.push(link),
            None => incoming.push(RelationGroup { label, links: vec![link] }),
        }
    }
    let meta = vec![
        Field {
            label: "Identifier".into(),
            key: "$identifier".into(),
            value: format!("<code>{}</code>", esc(&e.identifier)),
        },
        Field {
            label: "Created".into(),
            key: "$createdAt".into(),
            value: format!("{} by {}", time_html(e.created_at, now), esc(&e.created_by)),
        },
        Field {
            label: "Updated".into(),
            key: "$updatedAt".into(),
            value: format!("{} by {}", time_html(e.updated_at, now), esc(&e.updated_by)),
        },
        Field {
            label: "Data source".into(),
            key: "$datasource".into(),
            value: esc(e.datasource.as_deref().unwrap_or("—")),
        },
    ];
    // This life of the entity only: the scan stops a little before its creation.
    let floor = berth_model::Timestamp::from_millis(e.created_at.millis() - history::CLOCK_SLACK_MS);
    let (found, _) =
        berth_catalog::history::versions_since(&app.pipeline, &bp, &id, view.seq() + 1, 21, Some(floor), |_| false)
            .await?;
    // Versions the session may not read are left out, and never shown as the "before" of a diff.
    let mut versions = Vec::new();
    for (i, v) in found.iter().enumerate().take(20) {
        let older = found.get(i + 1).and_then(|o| o.entity.as_deref()).filter(|o| scoped.can_read(o));
        let newer = v.entity.as_deref();
        if newer.is_some_and(|n| !scoped.can_read(n)) {
            continue;
        }
        let diff = history::changed_fields(older, newer)
            .into_iter()
            .map(|f| DiffLine { before: field_value(older, &f), after: field_value(newer, &f), field: f })
            .collect();
        versions.push(VersionView {
            seq: v.event.seq,
            action: if newer.is_none() {
                "deleted"
            } else if older.is_none() && i + 1 == found.len() {
                "created"
            } else {
                "updated"
            },
            who: v.event.actor.clone(),
            origin: format!("{:?}", v.event.origin).to_uppercase(),
            when: time_html(v.event.time, now),
            diff,
        });
    }
    // Judging scorecards runs their rules: on the search pool, under its deadline (none: nothing to do).
    let scorecards = if view.definitions(berth_model::DefinitionKind::Scorecard).next().is_some() {
        let (v, caller, entity) = (std::sync::Arc::clone(&view), session.caller.clone(), std::sync::Arc::clone(&e));
        berth_server::searching::run(&app, move || {
            let scoped = berth_server::access::scoped(&v, &caller);
            Ok(scorecards_of(&v, &scoped, &entity))
        })
        .await?
    } else {
        Vec::new()
    };
    // A service shows what runs where (its deployments read through the session's view).
    let running = if bp == berth_model::deployment::SERVICE {
        let (v, caller, service, pipeline) = (
            std::sync::Arc::clone(&view),
            session.caller.clone(),
            id.to_string(),
            std::sync::Arc::clone(&app.pipeline),
        );
        berth_server::searching::run(&app, move || {
            let scoped = berth_server::access::scoped(&v, &caller);
            Ok(pipeline
                .deployments()
                .with(&v, |index, state| berth_catalog::deployments::running(index, state, &scoped, &service)))
        })
        .await?
        .into_iter()
        .map(|(environment, c)| RunningView {
            environment,
            version: c.version,
            href: entity_href(berth_model::deployment::DEPLOYMENT, &c.deployment),
            since: time_html(c.since, now),
        })
        .collect()
    } else {
        Vec::new()
    };
    let page = EntityPage {
        buttons: crate::actions::buttons(&app, &session, &bp, Some(&e)),
        layout: session.layout(&app, e.title.clone().unwrap_or_else(|| id.clone()), bp.clone()),
        bp_title: def.title.clone(),
        base: entity_href(&bp, &id),
        bp,
        id: id.clone(),
        title: e.title.clone().unwrap_or_else(|| id.clone()),
        icon: crate::fmt::glyph(e.icon.as_deref().or(def.icon.as_deref())),
        team: e.team.clone(),
        fields,
        outgoing,
        incoming,
        meta,
        versions,
        scorecards,
        running,
    };
    html(&page)
}

/// A related entity's title, as the session may read it (else its identifier).
fn title_of(scoped: &berth_server::access::Scoped<'_>, bp: &str, id: &str) -> String {
    scoped.title(bp, id).map_or_else(|| id.to_string(), str::to_string)
}

#[derive(Template)]
#[template(path = "confirm_delete.html")]
struct ConfirmPage {
    layout: Layout,
    title: String,
    base: String,
    dependents: usize,
}

pub async fn confirm_delete(
    State(app): State<AppState>,
    session: Session,
    Path((bp, id)): Path<(String, String)>,
) -> UiResult<Response> {
    let e = load(&app, &session, &bp, &id)?;
    // Only the dependents the session may read are counted (the others are not there for it).
    let view = app.pipeline.view();
    let scoped = berth_server::access::scoped(&view, &session.caller);
    let dependents = view.incoming(&bp, &id).filter(|d| scoped.entity(d.blueprint(), &d.identifier).is_some()).count();
    let page = ConfirmPage {
        layout: session.layout(&app, "Delete", bp.clone()),
        title: e.title.clone().unwrap_or_else(|| id.clone()),
        base: entity_href(&bp, &id),
        dependents,
    };
    html(&page)
}

pub async fn delete(
    State(app): State<AppState>,
    session: Session,
    Path((bp, id)): Path<(String, String)>,
    form: FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    let command = Command::DeleteEntity {
        blueprint: bp.clone(),
        identifier: id,
        delete_dependents: form.has("delete_dependents"),
    };
    let (outcome, _) = app.pipeline.write_one(session.meta(), command).await?;
    outcome?;
    Ok(see_other(&format!("/blueprints/{}/entities?deleted=1", encode(&bp))))
}
