//! Creating and editing an entity through a form generated from its blueprint's schema: the right input for
//! each type and format, enum selects, relation pickers that search as you type, and server-side validation
//! errors shown next to their fields (the engine validates exactly as it does for the API).
//!
//! Field names: `identifier`, `title`, `icon`, `team` (repeated), `p.<property>`, `r.<relation>`.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::{Command, WriteMode};
use berth_model::{Blueprint, Entity, EntityInput};
use berth_server::AppState;
use serde_json::{Map, Value, json};

use crate::entity::entity_href;
use crate::fmt::short;
use crate::form::{FormData, Query};
use crate::page::{Layout, UiError, UiResult, html, html_status, see_other};
use crate::session::{Session, encode};

pub struct FormField {
    pub name: String,
    /// The name as an HTML id (no dots, so it also works as a CSS selector).
    pub id: String,
    pub label: String,
    /// text, url, email, number, checkbox, select, textarea, datetime, relation.
    pub kind: &'static str,
    pub options: Vec<String>,
    pub value: String,
    pub required: bool,
    pub help: String,
    pub error: Option<String>,
    /// For relations: the target blueprint (the picker searches it).
    pub target: String,
}

#[derive(Template)]
#[template(path = "entity_form.html")]
struct FormPage {
    layout: Layout,
    bp: String,
    bp_title: String,
    editing: bool,
    action: String,
    cancel: String,
    identifier: String,
    title: String,
    icon: String,
    teams: Vec<(String, bool)>,
    fields: Vec<FormField>,
    error: Option<String>,
    /// The version (`updatedAt`, in ms) the edit form was opened on: a save over a newer one is refused.
    version: String,
}

fn kind_of(def: &Value) -> (&'static str, String) {
    let ty = def.get("type").and_then(Value::as_str).unwrap_or("string");
    let format = def.get("format").and_then(Value::as_str).unwrap_or("");
    if def.get("enum").is_some() {
        return ("select", String::new());
    }
    match (ty, format) {
        ("boolean", _) => ("checkbox", String::new()),
        ("number", _) => ("number", String::new()),
        ("array", _) => ("textarea", "One item per line.".into()),
        ("object", _) => ("textarea", "A JSON object.".into()),
        ("string", "date-time") => ("datetime", "UTC.".into()),
        ("string", "url") => ("url", String::new()),
        ("string", "email") => ("email", String::new()),
        ("string", "markdown") => ("textarea", "Markdown.".into()),
        ("string", "yaml") => ("textarea", "YAML.".into()),
        _ => ("text", String::new()),
    }
}

/// How a stored value shows in its input.
fn input_value(def: &Value, v: Option<&Value>) -> String {
    let Some(v) = v.filter(|v| !v.is_null()) else { return String::new() };
    match (kind_of(def).0, v) {
        ("textarea", Value::Array(items)) => items.iter().map(short).collect::<Vec<_>>().join("\n"),
        ("textarea", Value::Object(_)) => serde_json::to_string_pretty(v).unwrap_or_default(),
        ("datetime", Value::String(s)) => berth_model::Timestamp::parse(s)
            .map(|t| t.to_rfc3339().chars().take(16).collect())
            .unwrap_or_else(|| s.clone()),
        _ => short(v),
    }
}

fn fields(def: &Blueprint, entity: Option<&Entity>, form: Option<&FormData>) -> Vec<FormField> {
    let mut out = Vec::new();
    for (key, d) in &def.schema.properties {
        let (kind, help) = kind_of(d);
        let name = format!("p.{key}");
        let value = match form {
            Some(f) if kind == "checkbox" => {
                if f.has(&name) {
                    "true".into()
                } else {
                    String::new()
                }
            }
            Some(f) => f.raw(&name).to_string(),
            None => input_value(
                d,
                entity
                    .and_then(|e| e.properties.get(key))
                    .or_else(|| if entity.is_none() { d.get("default") } else { None }),
            ),
        };
        out.push(FormField {
            label: d.get("title").and_then(Value::as_str).unwrap_or(key).to_string(),
            kind,
            options: d.get("enum").and_then(Value::as_array).map(|l| l.iter().map(short).collect()).unwrap_or_default(),
            value,
            required: def.schema.required.contains(key),
            help: d.get("description").and_then(Value::as_str).map(|s| format!("{s} {help}")).unwrap_or(help),
            error: None,
            target: String::new(),
            id: name.replace('.', "-"),
            name,
        });
    }
    for (key, r) in &def.relations {
        let name = format!("r.{key}");
        let value = match form {
            Some(f) => f.raw(&name).to_string(),
            None => entity
                .and_then(|e| e.relations.get(key))
                .map(|v| Entity::relation_targets(v).join(", "))
                .unwrap_or_default(),
        };
        out.push(FormField {
            label: r.title.clone().unwrap_or_else(|| key.clone()),
            kind: "relation",
            options: Vec::new(),
            value,
            required: r.required,
            help: if r.many {
                format!("Identifiers of {} entities, separated by commas.", r.target)
            } else {
                format!("The identifier of a {} entity.", r.target)
            },
            error: None,
            target: r.target.clone(),
            id: name.replace('.', "-"),
            name,
        });
    }
    out
}

/// The entity body a form stands for, or the errors of the fields that did not convert.
pub fn body_of(def: &Blueprint, f: &FormData, path_id: Option<&str>) -> Result<Value, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut props = Map::new();
    for (key, d) in &def.schema.properties {
        let name = format!("p.{key}");
        let (kind, _) = kind_of(d);
        let ty = d.get("type").and_then(Value::as_str).unwrap_or("string");
        if kind == "checkbox" {
            props.insert(key.clone(), json!(f.has(&name)));
            continue;
        }
        let Some(raw) = f.get(&name) else { continue };
        let value = match (kind, ty) {
            ("number", _) | ("select", "number") => match raw.parse::<f64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    errors.push((name, format!("{raw:?} is not a number")));
                    continue;
                }
            },
            ("textarea", "array") => {
                let item_ty = d.get("items").and_then(|i| i.get("type")).and_then(Value::as_str).unwrap_or("string");
                let mut items = Vec::new();
                for line in raw.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    match item_ty {
                        "number" => match line.parse::<f64>() {
                            Ok(n) => items.push(json!(n)),
                            Err(_) => errors.push((name.clone(), format!("{line:?} is not a number"))),
                        },
                        "boolean" => items.push(json!(line == "true")),
                        _ => items.push(json!(line)),
                    }
                }
                json!(items)
            }
            ("textarea", "object") => match serde_json::from_str::<Value>(raw) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    errors.push((name, "this is not a JSON object".into()));
                    continue;
                }
            },
            ("datetime", _) => {
                let full = if raw.len() == 16 { format!("{raw}:00Z") } else { raw.to_string() };
                match berth_model::Timestamp::parse(&full) {
                    Some(t) => json!(t.to_rfc3339()),
                    None => {
                        errors.push((name, format!("{raw:?} is not a date and time")));
                        continue;
                    }
                }
            }
            _ => json!(raw),
        };
        props.insert(key.clone(), value);
    }
    let mut rels = Map::new();
    for (key, r) in &def.relations {
        let raw = f.raw(&format!("r.{key}"));
        let ids: Vec<&str> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if r.many {
            rels.insert(key.clone(), json!(ids));
        } else if let Some(first) = ids.first() {
            if ids.len() > 1 {
                errors.push((format!("r.{key}"), "this relation takes one entity".into()));
            }
            rels.insert(key.clone(), json!(first));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let identifier = path_id.map(str::to_string).or_else(|| f.get("identifier").map(str::to_string));
    let mut body = json!({"properties": props, "relations": rels, "team": f.all("team")});
    if let Some(id) = identifier {
        body["identifier"] = json!(id);
    }
    if let Some(t) = f.get("title") {
        body["title"] = json!(t);
    }
    if let Some(i) = f.get("icon") {
        body["icon"] = json!(i);
    }
    Ok(body)
}

/// The form field an engine message is about (`properties.x`, property `x`, relation `y`), if any.
fn field_of(message: &str) -> Option<String> {
    for (marker, prefix) in [("`properties.", "p."), ("property `", "p."), ("relation `", "r.")] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            let end = rest.find(['`', '.', '[']).unwrap_or(rest.len());
            return Some(format!("{prefix}{}", &rest[..end]));
        }
    }
    if message.contains("identifier") {
        return Some("identifier".into());
    }
    None
}

struct Ctx<'a> {
    app: &'a AppState,
    session: &'a Session,
    def: &'a Blueprint,
    editing: Option<&'a str>,
}

impl Ctx<'_> {
    fn render(
        &self,
        entity: Option<&Entity>,
        form: Option<&FormData>,
        errors: &[(String, String)],
        status: StatusCode,
    ) -> UiResult<Response> {
        let bp = &self.def.identifier;
        let mut fields = fields(self.def, entity, form);
        let mut general = Vec::new();
        for (name, message) in errors {
            match fields.iter_mut().find(|f| &f.name == name) {
                Some(f) => f.error = Some(message.clone()),
                None => general.push(message.clone()),
            }
        }
        let chosen: Vec<String> = match form {
            Some(f) => f.all("team"),
            None => entity.map(|e| e.team.clone()).unwrap_or_default(),
        };
        let teams = self.app.pipeline.view().teams().map(|t| (t.name.clone(), chosen.contains(&t.name))).collect();
        let text =
            |key: &str, stored: Option<String>| form.map(|f| f.raw(key).to_string()).or(stored).unwrap_or_default();
        let (action, cancel) = match self.editing {
            Some(id) => (format!("{}/edit", entity_href(bp, id)), entity_href(bp, id)),
            None => {
                (format!("/blueprints/{}/entities/new", encode(bp)), format!("/blueprints/{}/entities", encode(bp)))
            }
        };
        let version = form
            .map(|f| f.raw("_version").to_string())
            .or_else(|| entity.map(|e| e.updated_at.millis().to_string()))
            .unwrap_or_default();
        let page = FormPage {
            version,
            layout: self.session.layout(
                self.app,
                if self.editing.is_some() { "Edit" } else { "New entity" },
                bp.clone(),
            ),
            bp: bp.clone(),
            bp_title: self.def.title.clone(),
            editing: self.editing.is_some(),
            action,
            cancel,
            identifier: text("identifier", entity.map(|e| e.identifier.to_string())),
            title: text("title", entity.and_then(|e| e.title.clone())),
            icon: text("icon", entity.and_then(|e| e.icon.as_deref().map(str::to_string))),
            teams,
            fields,
            error: (!general.is_empty()).then(|| general.join("; ")),
        };
        html_status(status, &page)
    }

    async fn submit(&self, form: FormData) -> UiResult<Response> {
        self.session.check_csrf(&form)?;
        let bp = self.def.identifier.clone();
        // An edit saves over the version the form was opened on, or not at all (no lost update).
        if let (Some(id), Some(opened)) = (self.editing, form.get("_version").filter(|v| !v.is_empty())) {
            let view = self.app.pipeline.view();
            let current = berth_server::access::scoped(&view, &self.session.caller).entity(&bp, id).cloned();
            if let Some(current) = current.filter(|c| c.updated_at.millis().to_string() != opened) {
                let message = format!(
                    "{} changed this entity at {} after you opened the form; your changes are below: reload the entity to see theirs, then edit again",
                    current.updated_by,
                    current.updated_at.to_rfc3339()
                );
                return self.render(
                    None,
                    Some(&form),
                    &[(String::new(), message)],
                    berth_server::error::status_of(berth_model::ErrorCode::Conflict),
                );
            }
        }
        let body = match body_of(self.def, &form, self.editing) {
            Ok(b) => b,
            Err(errors) => {
                return self.render(
                    None,
                    Some(&form),
                    &errors,
                    berth_server::error::status_of(berth_model::ErrorCode::InvalidRequest),
                );
            }
        };
        let input = match EntityInput::from_value(&body) {
            Ok(i) => i,
            Err(e) => {
                let m = e.to_string();
                return self.render(
                    None,
                    Some(&form),
                    &[(field_of(&m).unwrap_or_default(), m)],
                    berth_server::error::status_of(berth_model::ErrorCode::InvalidRequest),
                );
            }
        };
        let command = Command::WriteEntity {
            blueprint: bp.clone(),
            path_id: self.editing.map(str::to_string),
            input,
            mode: if self.editing.is_some() { WriteMode::Replace } else { WriteMode::Create },
            create_missing_related: false,
        };
        let (outcome, _) = self.app.pipeline.write_one(self.session.meta(), command).await?;
        match outcome {
            Ok(berth_engine::Outcome::Entity { entity, .. }) => Ok(see_other(&entity_href(&bp, &entity.identifier))),
            Ok(_) => Err(UiError::internal("the write answered no entity")),
            Err(e) => {
                let status = berth_server::error::ApiError::from(e.clone()).status;
                let m = e.to_string();
                self.render(None, Some(&form), &[(field_of(&m).unwrap_or_default(), m)], status)
            }
        }
    }
}

fn blueprint(app: &AppState, bp: &str) -> UiResult<std::sync::Arc<Blueprint>> {
    app.pipeline
        .view()
        .blueprint(bp)
        .map(|b| b.def.clone())
        .ok_or_else(|| UiError::not_found(format!("there is no blueprint `{bp}`")))
}

pub async fn new_form(State(app): State<AppState>, session: Session, Path(bp): Path<String>) -> UiResult<Response> {
    let def = blueprint(&app, &bp)?;
    Ctx { app: &app, session: &session, def: &def, editing: None }.render(None, None, &[], StatusCode::OK)
}

pub async fn create(
    State(app): State<AppState>,
    session: Session,
    Path(bp): Path<String>,
    form: FormData,
) -> UiResult<Response> {
    let def = blueprint(&app, &bp)?;
    Ctx { app: &app, session: &session, def: &def, editing: None }.submit(form).await
}

pub async fn edit_form(
    State(app): State<AppState>,
    session: Session,
    Path((bp, id)): Path<(String, String)>,
) -> UiResult<Response> {
    let def = blueprint(&app, &bp)?;
    let e = crate::entity::load(&app, &session, &bp, &id)?;
    Ctx { app: &app, session: &session, def: &def, editing: Some(&id) }.render(Some(&e), None, &[], StatusCode::OK)
}

pub async fn update(
    State(app): State<AppState>,
    session: Session,
    Path((bp, id)): Path<(String, String)>,
    form: FormData,
) -> UiResult<Response> {
    let def = blueprint(&app, &bp)?;
    Ctx { app: &app, session: &session, def: &def, editing: Some(&id) }.submit(form).await
}

#[derive(Template)]
#[template(path = "pick.html")]
pub(crate) struct PickOptions {
    pub options: Vec<(String, String)>,
}

/// What a picker typed so far: its `q`, or the input's own value (it sends it under its field name); of a
/// list, the last item, lower-cased.
pub(crate) fn typed(p: &FormData) -> String {
    let q = p.get("q").or_else(|| p.0.last().map(|(_, v)| v.as_str())).unwrap_or("").to_lowercase();
    q.rsplit(',').next().unwrap_or("").trim().to_string()
}

/// A picker's options: the first 20 entities whose identifier or title contains `needle`.
pub(crate) fn options<'a>(
    entities: impl Iterator<Item = &'a std::sync::Arc<Entity>>,
    needle: &str,
) -> Vec<(String, String)> {
    entities
        .filter(|e| {
            needle.is_empty()
                || e.identifier.to_lowercase().contains(needle)
                || e.title.as_deref().is_some_and(|t| t.to_lowercase().contains(needle))
        })
        .take(20)
        .map(|e| (e.identifier.to_string(), e.title.clone().unwrap_or_default()))
        .collect()
}

/// `GET /blueprints/{bp}/pick?q=`: `<option>`s of the blueprint's entities whose title or identifier contains
/// `q` (at most 20), for a relation picker's datalist.
pub async fn pick(
    State(app): State<AppState>,
    session: Session,
    Path(bp): Path<String>,
    Query(p): Query,
) -> UiResult<Response> {
    let view = app.pipeline.view();
    let needle = typed(&p);
    let caller = session.caller.clone();
    // A scan of the blueprint: off the async workers, under the search deadline.
    let options = berth_server::searching::run(&app, move || {
        let scoped = berth_server::access::scoped(&view, &caller);
        Ok(options(scoped.entities_of(&bp), &needle))
    })
    .await?;
    html(&PickOptions { options })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_messages_point_at_their_field() {
        assert_eq!(field_of("`properties.replicas` is 99, above the maximum 50").as_deref(), Some("p.replicas"));
        assert_eq!(field_of("property `url` is required by blueprint `service`").as_deref(), Some("p.url"));
        assert_eq!(field_of("relation `team` is not defined").as_deref(), Some("r.team"));
        assert_eq!(field_of("something else"), None);
    }

    proptest::proptest! {
        /// Any form converts to a body the entity parser takes, or to field errors; never a panic.
        #[test]
        fn any_form_converts_or_reports(
            pairs in proptest::collection::vec(
                (proptest::sample::select(vec!["identifier", "title", "icon", "team", "p.replicas", "p.tags",
                    "p.on", "p.at", "p.meta", "r.deps", "p.unknown"]),
                 ".{0,16}"),
                0..10),
        ) {
            let body = json!({"identifier": "service", "title": "Service", "schema": {"properties": {
                "replicas": {"type": "number"}, "tags": {"type": "array", "items": {"type": "number"}},
                "on": {"type": "boolean"}, "at": {"type": "string", "format": "date-time"}, "meta": {"type": "object"}}},
                "relations": {"deps": {"target": "service", "many": true}}});
            let def = Blueprint::from_body(&body, "t", berth_model::Timestamp::from_millis(0), None).expect("bp");
            let raw: String = pairs.iter().map(|(k, v)| format!("{}={}", k, crate::session::encode(v))).collect::<Vec<_>>().join("&");
            match body_of(&def, &FormData::parse(raw.as_bytes()), None) {
                Ok(v) => {
                    let parsed = EntityInput::from_value(&v);
                    proptest::prop_assert!(parsed.is_ok(), "the form gave a body the parser refuses: {v} ({:?})", parsed.err());
                }
                Err(errors) => proptest::prop_assert!(
                    errors.iter().all(|(name, m)| (name.starts_with("p.") || name.starts_with("r.")) && !m.is_empty()),
                    "{errors:?}"
                ),
            }
        }
    }

    #[test]
    fn forms_convert_by_type_and_report_bad_fields() {
        let body = json!({"identifier": "service", "title": "Service", "schema": {"properties": {
            "replicas": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}},
            "on": {"type": "boolean"}, "at": {"type": "string", "format": "date-time"}, "meta": {"type": "object"}}},
            "relations": {"deps": {"target": "service", "many": true}}});
        let def = Blueprint::from_body(&body, "t", berth_model::Timestamp::from_millis(0), None).expect("bp");
        let f = FormData::parse(b"identifier=a&p.replicas=3&p.tags=x%0Ay&p.on=on&p.at=2024-01-02T03:04&p.meta=%7B%22k%22%3A1%7D&r.deps=b%2C+c");
        let v = body_of(&def, &f, None).expect("converts");
        assert_eq!(v["properties"]["replicas"], json!(3.0));
        assert_eq!(v["properties"]["tags"], json!(["x", "y"]));
        assert_eq!(v["properties"]["on"], json!(true));
        assert_eq!(v["properties"]["at"], json!("2024-01-02T03:04:00.000Z"));
        assert_eq!(v["relations"]["deps"], json!(["b", "c"]));
        let bad = body_of(&def, &FormData::parse(b"p.replicas=many&p.meta=%5B%5D"), None).expect_err("bad");
        let names: Vec<&str> = bad.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["p.replicas", "p.meta"]);
    }
}
