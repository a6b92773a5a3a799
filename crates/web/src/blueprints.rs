//! A blueprint's page (`GET /blueprints/{bp}`): its properties, relations and derived properties, and a
//! form-based builder for Admins: create a blueprint, add a property of any type and format (optionally
//! required), add a relation, remove a property. Every change is a blueprint patch through the engine, so
//! the same validation as the API applies, and its errors show next to the form that caused them.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::Command;
use berth_model::Blueprint;
use berth_server::AppState;
use serde_json::{Value, json};

use crate::form::FormData;
use crate::page::{Layout, UiError, UiResult, html, html_status, see_other};
use crate::session::{Session, encode};

/// The property types and formats the builder offers (type, format, label).
pub const PROPERTY_KINDS: &[(&str, &str, &str)] = &[
    ("string", "", "Text"),
    ("number", "", "Number"),
    ("boolean", "", "Boolean"),
    ("string", "url", "URL"),
    ("string", "email", "Email"),
    ("string", "date-time", "Date and time"),
    ("string", "markdown", "Markdown"),
    ("string", "yaml", "YAML"),
    ("string", "user", "User"),
    ("string", "team", "Team"),
    ("string", "ipv4", "IPv4 address"),
    ("string", "ipv6", "IPv6 address"),
    ("array", "", "List of text"),
    ("object", "", "JSON object"),
    ("enum", "", "Enum (choices)"),
];

pub struct PropRow {
    pub key: String,
    pub title: String,
    pub kind: String,
    pub required: bool,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "blueprint.html")]
struct BlueprintPage {
    layout: Layout,
    bp: String,
    title: String,
    icon: String,
    description: String,
    count: usize,
    props: Vec<PropRow>,
    relations: Vec<PropRow>,
    derived: Vec<PropRow>,
    kinds: Vec<(String, String)>,
    targets: Vec<String>,
    prop_error: Option<String>,
    rel_error: Option<String>,
    derived_error: Option<String>,
    form: FormData,
    json: String,
}

/// Where a builder form's error is shown.
#[derive(Clone, Copy)]
enum Slot {
    Property,
    Relation,
    Derived,
}

fn kind_label(d: &Value) -> String {
    let ty = d.get("type").and_then(Value::as_str).unwrap_or("?");
    match d.get("format").and_then(Value::as_str) {
        Some(f) => format!("{ty} ({f})"),
        None if d.get("enum").is_some() => format!("{ty} (enum)"),
        None => ty.to_string(),
    }
}

fn render(
    app: &AppState,
    session: &Session,
    def: &Blueprint,
    error: Option<(Slot, String)>,
    form: FormData,
    status: StatusCode,
) -> UiResult<Response> {
    let at = |slot: fn(Slot) -> bool| error.as_ref().filter(|(s, _)| slot(*s)).map(|(_, e)| e.clone());
    let view = app.pipeline.view();
    let props = def
        .schema
        .properties
        .iter()
        .map(|(k, d)| PropRow {
            key: k.clone(),
            title: d.get("title").and_then(Value::as_str).unwrap_or(k).to_string(),
            kind: kind_label(d),
            required: def.schema.required.contains(k),
            detail: d.get("enum").map(|e| e.to_string()).unwrap_or_default(),
        })
        .collect();
    let relations = def
        .relations
        .iter()
        .map(|(k, r)| PropRow {
            key: k.clone(),
            title: r.title.clone().unwrap_or_else(|| k.clone()),
            kind: format!("→ {}{}", r.target, if r.many { " (many)" } else { "" }),
            required: r.required,
            detail: String::new(),
        })
        .collect();
    let mut derived = Vec::new();
    for (label, map) in [
        ("mirror", &def.mirror_properties),
        ("calculation", &def.calculation_properties),
        ("aggregation", &def.aggregation_properties),
    ] {
        for (k, d) in map {
            derived.push(PropRow {
                key: k.clone(),
                title: d.get("title").and_then(Value::as_str).unwrap_or(k).to_string(),
                kind: label.to_string(),
                required: false,
                detail: d.get("path").or(d.get("calculation")).map(crate::fmt::short).unwrap_or_default(),
            });
        }
    }
    let page = BlueprintPage {
        layout: session.layout(app, def.title.clone(), def.identifier.clone()),
        bp: def.identifier.clone(),
        title: def.title.clone(),
        icon: crate::fmt::glyph(def.icon.as_deref()),
        description: def.description.clone().unwrap_or_default(),
        count: crate::table::visible_count(&berth_server::access::scoped(&view, &session.caller), &def.identifier),
        props,
        relations,
        derived,
        kinds: PROPERTY_KINDS.iter().map(|(t, f, l)| (format!("{t}:{f}"), l.to_string())).collect(),
        targets: view.blueprints().map(|b| b.def.identifier.clone()).collect(),
        prop_error: at(|s| matches!(s, Slot::Property)),
        rel_error: at(|s| matches!(s, Slot::Relation)),
        derived_error: at(|s| matches!(s, Slot::Derived)),
        form,
        json: serde_json::to_string_pretty(def).unwrap_or_default(),
    };
    html_status(status, &page)
}

fn load(app: &AppState, bp: &str) -> UiResult<std::sync::Arc<Blueprint>> {
    app.pipeline
        .view()
        .blueprint(bp)
        .map(|b| b.def.clone())
        .ok_or_else(|| UiError::not_found(format!("there is no blueprint `{bp}`")))
}

pub async fn page(State(app): State<AppState>, session: Session, Path(bp): Path<String>) -> UiResult<Response> {
    let def = load(&app, &bp)?;
    render(&app, &session, &def, None, FormData::default(), StatusCode::OK)
}

/// Applies a JSON merge patch to the blueprint; on a refusal shows the page again with the error at `slot`.
async fn patch(
    app: &AppState,
    session: &Session,
    def: &Blueprint,
    patch: Value,
    form: FormData,
    slot: Slot,
) -> UiResult<Response> {
    let command = Command::PatchBlueprint { id: def.identifier.clone(), patch };
    let (outcome, _) = app.pipeline.write_one(session.meta(), command).await?;
    match outcome {
        Ok(_) => Ok(see_other(&format!("/blueprints/{}", encode(&def.identifier)))),
        Err(e) => {
            let status = berth_server::error::ApiError::from(e.clone()).status;
            render(app, session, def, Some((slot, e.to_string())), form, status)
        }
    }
}

/// The property definition the builder form describes.
pub fn property_of(form: &FormData) -> Result<(String, Value, bool), String> {
    let key = form.get("key").ok_or("a property needs an identifier")?.to_string();
    let (ty, format) = form.get("kind").unwrap_or("string:").split_once(':').unwrap_or(("string", ""));
    let mut def = json!({"title": form.get("title").unwrap_or(&key)});
    match ty {
        "enum" => {
            let choices: Vec<&str> =
                form.raw("choices").split([',', '\n']).map(str::trim).filter(|c| !c.is_empty()).collect();
            if choices.is_empty() {
                return Err("an enum needs its choices, separated by commas".into());
            }
            def["type"] = json!("string");
            def["enum"] = json!(choices);
        }
        "array" => {
            def["type"] = json!("array");
            def["items"] = json!({"type": "string"});
        }
        ty => def["type"] = json!(ty),
    }
    if !format.is_empty() {
        def["format"] = json!(format);
    }
    if let Some(d) = form.get("description") {
        def["description"] = json!(d);
    }
    Ok((key, def, form.has("required")))
}

/// What every builder post checks first: the form's CSRF token, that the user is an Admin, the blueprint.
fn builder_target(app: &AppState, session: &Session, bp: &str, form: &FormData) -> UiResult<std::sync::Arc<Blueprint>> {
    session.check_csrf(form)?;
    session.require_admin_to_change(app, &format!("/blueprints/{bp}"), "change blueprints")?;
    load(app, bp)
}

pub async fn add_property(
    State(app): State<AppState>,
    session: Session,
    Path(bp): Path<String>,
    form: FormData,
) -> UiResult<Response> {
    let def = builder_target(&app, &session, &bp, &form)?;
    let (key, prop, required) = match property_of(&form) {
        Ok(p) => p,
        Err(e) => {
            return render(
                &app,
                &session,
                &def,
                Some((Slot::Property, e)),
                form,
                berth_server::error::status_of(berth_model::ErrorCode::InvalidRequest),
            );
        }
    };
    if def.schema.properties.contains_key(&key) {
        let e = format!("property `{key}` exists already");
        return render(
            &app,
            &session,
            &def,
            Some((Slot::Property, e)),
            form,
            berth_server::error::status_of(berth_model::ErrorCode::Conflict),
        );
    }
    let mut required_list = def.schema.required.clone();
    if required {
        required_list.push(key.clone());
    }
    let body = json!({"schema": {"properties": {key: prop}, "required": required_list}});
    patch(&app, &session, &def, body, form, Slot::Property).await
}

pub async fn remove_property(
    State(app): State<AppState>,
    session: Session,
    Path((bp, key)): Path<(String, String)>,
    form: FormData,
) -> UiResult<Response> {
    let def = builder_target(&app, &session, &bp, &form)?;
    let required: Vec<&String> = def.schema.required.iter().filter(|r| **r != key).collect();
    let body = json!({"schema": {"properties": {key: null}, "required": required}});
    patch(&app, &session, &def, body, form, Slot::Property).await
}

pub async fn add_relation(
    State(app): State<AppState>,
    session: Session,
    Path(bp): Path<String>,
    form: FormData,
) -> UiResult<Response> {
    let def = builder_target(&app, &session, &bp, &form)?;
    let (Some(key), Some(target)) = (form.get("key"), form.get("target")) else {
        let e = "a relation needs an identifier and a target blueprint".to_string();
        return render(
            &app,
            &session,
            &def,
            Some((Slot::Relation, e)),
            form,
            berth_server::error::status_of(berth_model::ErrorCode::InvalidRequest),
        );
    };
    let rel = json!({"title": form.get("title").unwrap_or(key), "target": target, "many": form.has("many"), "required": form.has("required")});
    let body = json!({"relations": {key: rel}});
    patch(&app, &session, &def, body, form.clone(), Slot::Relation).await
}

/// The derived property the builder form describes: the blueprint key it goes under, its key, its
/// definition (Port's shapes; the engine checks it when the blueprint is written).
pub fn derived_of(form: &FormData) -> Result<(&'static str, String, Value), String> {
    let key = form.get("key").ok_or("a derived property needs an identifier")?.to_string();
    let title = form.get("title").unwrap_or(&key).to_string();
    match form.get("kind").unwrap_or("") {
        "mirror" => {
            let path = form.get("path").ok_or("a mirror needs a path, such as `system.domain.$title`")?;
            Ok(("mirrorProperties", key, json!({"title": title, "path": path})))
        }
        "calculation" => {
            let calculation = form.get("calculation").ok_or("a calculation needs a jq expression")?;
            let ty = form.get("type").unwrap_or("string");
            Ok(("calculationProperties", key, json!({"title": title, "type": ty, "calculation": calculation})))
        }
        "aggregation" => {
            let target = form.get("target").ok_or("an aggregation needs a target blueprint")?;
            let func = form.get("func").unwrap_or("count");
            let mut spec = json!({"func": func, "calculationBy": "entities"});
            if let Some(p) = form.get("property") {
                spec["calculationBy"] = json!("property");
                spec["property"] = json!(p);
            }
            if let Some(per) = form.get("averageOf") {
                spec["averageOf"] = json!(per);
            }
            let mut def = json!({"title": title, "type": "number", "target": target, "calculationSpec": spec});
            if let Some(q) = form.get("query") {
                let query: Value = serde_json::from_str(q)
                    .map_err(|e| format!("the query is not JSON ({e}): write it as the API takes it"))?;
                def["query"] = query;
            }
            Ok(("aggregationProperties", key, def))
        }
        other => Err(format!("choose mirror, calculation or aggregation, not {other:?}")),
    }
}

pub async fn add_derived(
    State(app): State<AppState>,
    session: Session,
    Path(bp): Path<String>,
    form: FormData,
) -> UiResult<Response> {
    let def = builder_target(&app, &session, &bp, &form)?;
    match derived_of(&form) {
        Ok((map, key, derived)) => patch(&app, &session, &def, json!({map: {key: derived}}), form, Slot::Derived).await,
        Err(e) => render(
            &app,
            &session,
            &def,
            Some((Slot::Derived, e)),
            form,
            berth_server::error::status_of(berth_model::ErrorCode::InvalidRequest),
        ),
    }
}

pub async fn remove_derived(
    State(app): State<AppState>,
    session: Session,
    Path((bp, key)): Path<(String, String)>,
    form: FormData,
) -> UiResult<Response> {
    let def = builder_target(&app, &session, &bp, &form)?;
    let body = json!({"mirrorProperties": {&key: null}, "calculationProperties": {&key: null},
        "aggregationProperties": {&key: null}});
    patch(&app, &session, &def, body, form, Slot::Derived).await
}

#[derive(Template)]
#[template(path = "blueprint_new.html")]
struct NewPage {
    layout: Layout,
    form: FormData,
    error: Option<String>,
}

pub async fn new_form(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    session.require_admin("create blueprints")?;
    html(&NewPage { layout: session.layout(&app, "New blueprint", ""), form: FormData::default(), error: None })
}

pub async fn create(State(app): State<AppState>, session: Session, form: FormData) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, "/blueprints", "create blueprints")?;
    let id = form.get("identifier").unwrap_or("").to_string();
    let mut body = json!({"identifier": id, "title": form.get("title").unwrap_or(&id), "schema": {"properties": {}, "required": []}});
    if let Some(i) = form.get("icon") {
        body["icon"] = json!(i);
    }
    if let Some(d) = form.get("description") {
        body["description"] = json!(d);
    }
    let (outcome, _) = app.pipeline.write_one(session.meta(), Command::CreateBlueprint { body }).await?;
    match outcome {
        Ok(_) => Ok(see_other(&format!("/blueprints/{}", encode(&id)))),
        Err(e) => {
            let status = berth_server::error::ApiError::from(e.clone()).status;
            html_status(
                status,
                &NewPage { layout: session.layout(&app, "New blueprint", ""), form, error: Some(e.to_string()) },
            )
        }
    }
}
