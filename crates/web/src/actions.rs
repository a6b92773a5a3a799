//! Self-service actions in the UI: the catalogue of actions a user may run (`GET /actions`), the buttons on
//! blueprint and entity pages ([`buttons`]), the form generated from an action's `userInputs`
//! (`GET|POST /actions/{id}/run`): the right input per type and format, entity pickers that search as you
//! type within the input's `dataset` (`/actions/{id}/pick/{input}`), user and team pickers, defaults, steps
//! as sections, `visible` / `disabled` rules and `dependsOn` re-evaluated as the form changes
//! (`POST /actions/{id}/form`, swapped in by htmx), and the engine's errors shown next to each input. And
//! the action builder for Admins (`/actions/new`, `/actions/{id}/edit`): the action and its permissions as
//! JSON, checked by the engine exactly as the API checks them.
//!
//! Field names: `i.<input>`.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::Command;
use berth_engine::definitions::DefinitionWrite;
use berth_model::action::{Action, Operation, Trigger};
use berth_model::run::{RunRequest, Source};
use berth_model::{DefinitionKind, Entity};
use berth_server::AppState;
use serde_json::{Map, Value, json};

use crate::form::{FormData, Query};
use crate::page::{Layout, UiError, UiResult, html, html_status, see_other};
use crate::session::{Session, encode};

/// A button that runs an action.
pub struct Button {
    pub href: String,
    pub label: String,
    pub id: String,
    pub danger: bool,
}

fn action_title(id: &str, body: &Value) -> String {
    body.get("title").and_then(Value::as_str).unwrap_or(id).to_string()
}

/// The actions `session` may run from a blueprint's page (CREATE, `entity` None) or an entity's page (DAY-2
/// and DELETE whose condition holds for it): published ones its permissions show it.
pub fn buttons(app: &AppState, session: &Session, blueprint: &str, entity: Option<&Entity>) -> Vec<Button> {
    let view = app.pipeline.view();
    let principal = session.caller.principal();
    let now = berth_server::now();
    let mut out = Vec::new();
    for d in view.definitions(DefinitionKind::Action) {
        let Ok(action) = Action::parse(&d.body) else { continue };
        let Trigger::SelfService { operation, blueprint: bp, condition, .. } = &action.trigger else { continue };
        if bp != blueprint || !action.publish || (*operation == Operation::Create) != entity.is_none() {
            continue;
        }
        if !berth_engine::runs::sees_action(&view, &principal, &d.identifier, entity) {
            continue;
        }
        if let (Some(e), Some(q)) = (entity, condition) {
            let holds = berth_engine::search::Ctx::new(&view, q, now, Some(blueprint))
                .is_ok_and(|ctx| berth_engine::search::matches(&ctx, e, q));
            if !holds {
                continue;
            }
        }
        let label = d
            .body
            .pointer("/trigger/actionCardButtonText")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| action_title(&d.identifier, &d.body));
        let href = match entity {
            Some(e) => format!("/actions/{}/run?entity={}", encode(&d.identifier), encode(&e.identifier)),
            None => format!("/actions/{}/run", encode(&d.identifier)),
        };
        out.push(Button {
            href,
            label,
            id: format!("action-{}", d.identifier),
            danger: *operation == Operation::Delete,
        });
    }
    out
}

struct ActionRow {
    id: String,
    title: String,
    kind: String,
    blueprint: String,
    run_href: Option<String>,
    description: String,
}

#[derive(Template)]
#[template(path = "actions.html")]
struct ActionsPage {
    layout: Layout,
    rows: Vec<ActionRow>,
}

/// `GET /actions`: the actions the session may run (Admins: every action and automation, with the builder).
pub async fn list(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    let view = app.pipeline.view();
    let principal = session.caller.principal();
    let admin = principal.is_admin();
    let mut rows = Vec::new();
    for d in view.definitions(DefinitionKind::Action) {
        let Ok(action) = Action::parse(&d.body) else { continue };
        let (kind, run_href) = match &action.trigger {
            Trigger::SelfService { operation: Operation::Create, .. } => {
                ("Create".to_string(), Some(format!("/actions/{}/run", encode(&d.identifier))))
            }
            Trigger::SelfService { operation: Operation::Day2, .. } => ("Day-2 (from an entity)".into(), None),
            Trigger::SelfService { operation: Operation::Delete, .. } => ("Delete (from an entity)".into(), None),
            Trigger::Automation { .. } => ("Automation".into(), None),
        };
        let visible = admin
            || (action.publish
                && matches!(action.trigger, Trigger::SelfService { .. })
                && berth_engine::runs::sees_action(&view, &principal, &d.identifier, None));
        if !visible {
            continue;
        }
        rows.push(ActionRow {
            id: d.identifier.clone(),
            title: action_title(&d.identifier, &d.body),
            kind,
            blueprint: action.blueprint().unwrap_or_default().to_string(),
            run_href,
            description: d.body.get("description").and_then(Value::as_str).unwrap_or_default().to_string(),
        });
    }
    html(&ActionsPage { layout: session.layout(&app, "Actions", "actions"), rows })
}

/// One input of the form.
pub struct InputField {
    pub name: String,
    pub id: String,
    pub label: String,
    /// text, number, checkbox, select, multiselect, textarea, datetime, entity, url, email.
    pub kind: &'static str,
    pub options: Vec<(String, String)>,
    /// The value as the input shows it (for a multiselect, its chosen options are in `chosen`).
    pub value: String,
    pub chosen: Vec<String>,
    pub required: bool,
    pub disabled: bool,
    pub help: String,
    pub error: Option<String>,
    /// For entity pickers: where the options come from.
    pub pick: String,
}

pub struct Section {
    pub title: String,
    pub fields: Vec<InputField>,
}

#[derive(Template)]
#[template(path = "action_form.html")]
struct FormPage {
    layout: Layout,
    action: String,
    title: String,
    description: String,
    entity: String,
    entity_title: String,
    button: String,
    sections: Vec<Section>,
    error: Option<String>,
    post: String,
    refresh: String,
    approval: bool,
}

#[derive(Template)]
#[template(path = "action_fields.html")]
struct FieldsFragment {
    sections: Vec<Section>,
}

/// What the form's rules read: the inputs so far, the user, the entity.
fn rule_data(values: &Map<String, Value>, user: &Value, entity: &Value) -> Value {
    json!({"form": values, "inputs": values, "user": user, "entity": entity})
}

fn truth(rule: Option<&Value>, data: &Value, default: bool) -> bool {
    match rule {
        Some(Value::Bool(b)) => *b,
        Some(Value::Object(m)) => m
            .get("jqQuery")
            .and_then(Value::as_str)
            .map(|c| {
                berth_engine::derived::jq::compile(c).and_then(|p| p.run(data)).is_ok_and(|v| v == Value::Bool(true))
            })
            .unwrap_or(default),
        _ => default,
    }
}

fn input_kind(def: &Value) -> (&'static str, String) {
    let ty = def.get("type").and_then(Value::as_str).unwrap_or("string");
    let format = def.get("format").and_then(Value::as_str).unwrap_or("");
    let items_format = def.pointer("/items/format").and_then(Value::as_str).unwrap_or("");
    if def.get("enum").is_some() {
        return ("select", String::new());
    }
    match (ty, format, items_format) {
        ("string", "entity", _) => ("entity", String::new()),
        ("array", _, "entity") => ("entity", "Identifiers, separated by commas.".into()),
        ("string", "user" | "team", _) => ("select", String::new()),
        ("array", _, "user" | "team") => ("multiselect", String::new()),
        ("boolean", _, _) => ("checkbox", String::new()),
        ("number", _, _) => ("number", String::new()),
        ("array", _, _) => ("textarea", "One item per line.".into()),
        ("object", _, _) => ("textarea", "A JSON object.".into()),
        ("string", "date-time", _) => ("datetime", "UTC.".into()),
        ("string", "url", _) => ("url", String::new()),
        ("string", "email", _) => ("email", String::new()),
        ("string", "markdown" | "multi-line" | "yaml", _) => ("textarea", String::new()),
        _ => ("text", String::new()),
    }
}

/// The inputs a form stands for (as the API takes them), or the errors of those that did not convert.
fn inputs_of(props: &Map<String, Value>, f: &FormData) -> (Map<String, Value>, Vec<(String, String)>) {
    let mut values = Map::new();
    let mut errors = Vec::new();
    for (name, def) in props {
        let field = format!("i.{name}");
        let (kind, _) = input_kind(def);
        let ty = def.get("type").and_then(Value::as_str).unwrap_or("string");
        if kind == "checkbox" {
            if f.has(&format!("{field}.shown")) {
                values.insert(name.clone(), json!(f.has(&field)));
            }
            continue;
        }
        if kind == "multiselect" {
            let chosen = f.all(&field);
            if !chosen.is_empty() {
                values.insert(name.clone(), json!(chosen));
            }
            continue;
        }
        let Some(raw) = f.get(&field) else { continue };
        let value = match (kind, ty) {
            ("number", _) | ("select", "number") => match raw.parse::<f64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    errors.push((name.clone(), format!("{raw:?} is not a number")));
                    continue;
                }
            },
            ("entity", "array") => json!(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>()),
            ("textarea", "array") => json!(raw.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>()),
            ("textarea", "object") => match serde_json::from_str::<Value>(raw) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    errors.push((name.clone(), "this is not a JSON object".into()));
                    continue;
                }
            },
            ("datetime", _) => {
                let full = if raw.len() == 16 { format!("{raw}:00Z") } else { raw.to_string() };
                match berth_model::Timestamp::parse(&full) {
                    Some(t) => json!(t.to_rfc3339()),
                    None => {
                        errors.push((name.clone(), format!("{raw:?} is not a date and time")));
                        continue;
                    }
                }
            }
            _ => json!(raw),
        };
        values.insert(name.clone(), value);
    }
    (values, errors)
}

/// The engine's "invalid inputs: `a`: ...; `b` ..." split by input.
fn input_errors(message: &str) -> Vec<(String, String)> {
    let Some(list) = message.strip_prefix("invalid inputs: ") else { return vec![(String::new(), message.into())] };
    list.split("; ")
        .map(|item| {
            let name =
                item.strip_prefix('`').and_then(|r| r.split_once('`')).map(|(n, _)| n.to_string()).unwrap_or_default();
            (name, item.to_string())
        })
        .collect()
}

struct FormCtx<'a> {
    app: &'a AppState,
    session: &'a Session,
    id: String,
    body: std::sync::Arc<Value>,
    entity: Option<std::sync::Arc<Entity>>,
}

impl<'a> FormCtx<'a> {
    fn load(app: &'a AppState, session: &'a Session, id: &str, entity: Option<&str>) -> UiResult<FormCtx<'a>> {
        let view = app.pipeline.view();
        let d = view
            .definition(DefinitionKind::Action, id)
            .ok_or_else(|| UiError::not_found(format!("there is no action `{id}`")))?;
        let action = Action::parse(&d.body)?;
        let Trigger::SelfService { blueprint, operation, .. } = &action.trigger else {
            return Err(UiError::not_found(format!("`{id}` is an automation: it runs by itself")));
        };
        let entity = match (operation, entity) {
            (Operation::Create, _) => None,
            (_, None) => {
                return Err(UiError::new(
                    berth_model::ErrorCode::BadRequest,
                    format!("action `{id}` runs on an entity: open it from the entity's page"),
                ));
            }
            (_, Some(e)) => {
                Some(berth_server::access::scoped(&view, &session.caller).entity(blueprint, e).cloned().ok_or_else(
                    || UiError::not_found(format!("there is no entity `{e}` of blueprint `{blueprint}`")),
                )?)
            }
        };
        Ok(FormCtx { app, session, id: id.to_string(), body: std::sync::Arc::clone(&d.body), entity })
    }

    fn props(&self) -> Map<String, Value> {
        self.body.pointer("/trigger/userInputs/properties").and_then(Value::as_object).cloned().unwrap_or_default()
    }

    fn user(&self) -> Value {
        let view = self.app.pipeline.view();
        match view.user(&self.session.caller.client_id) {
            Some(u) => json!({"email": u.email, "firstName": u.first_name, "lastName": u.last_name,
                "teams": view.teams_of(&u.email), "roles": u.roles}),
            None => json!({"email": null, "id": self.session.caller.client_id, "teams": self.session.caller.teams}),
        }
    }

    fn entity_json(&self) -> Value {
        self.entity.as_ref().map_or_else(|| json!({}), |e| serde_json::to_value(&**e).unwrap_or(Value::Null))
    }

    /// The form's sections (steps, then the inputs no step lists), each input with its value, shown only
    /// when its `visible` rule holds.
    fn sections(&self, form: Option<&FormData>, errors: &[(String, String)]) -> Vec<Section> {
        let props = self.props();
        let view = self.app.pipeline.view();
        let (mut values, _) = match form {
            Some(f) => inputs_of(&props, f),
            None => (Map::new(), Vec::new()),
        };
        if form.is_none() {
            for (name, def) in &props {
                if let Some(d) = def.get("default").filter(|d| !d.is_null() && d.get("jqQuery").is_none()) {
                    values.insert(name.clone(), d.clone());
                }
            }
        }
        let data = rule_data(&values, &self.user(), &self.entity_json());
        let required: Vec<String> = match self.body.pointer("/trigger/userInputs/required") {
            Some(Value::Array(r)) => r.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(rule @ Value::Object(_)) => rule
                .get("jqQuery")
                .and_then(Value::as_str)
                .and_then(|c| berth_engine::derived::jq::compile(c).and_then(|p| p.run(&data)).ok())
                .and_then(|v| v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let order: Vec<String> = self
            .body
            .pointer("/trigger/userInputs/order")
            .and_then(Value::as_array)
            .map(|o| o.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let mut names: Vec<String> = order.into_iter().filter(|n| props.contains_key(n)).collect();
        names.extend(props.keys().filter(|k| !names.contains(k)).cloned().collect::<Vec<_>>());
        let field = |name: &str| -> Option<InputField> {
            let def = props.get(name)?;
            if !truth(def.get("visible"), &data, true) {
                return None;
            }
            let (kind, help) = input_kind(def);
            let field_name = format!("i.{name}");
            let stored = values.get(name);
            let show = |v: &Value| if let Value::String(s) = v { s.clone() } else { v.to_string() };
            let value = match (kind, stored) {
                (_, None) => String::new(),
                ("textarea", Some(Value::Array(items))) => items.iter().map(show).collect::<Vec<_>>().join("\n"),
                ("entity", Some(Value::Array(items))) => items.iter().map(show).collect::<Vec<_>>().join(", "),
                ("textarea", Some(v @ Value::Object(_))) => serde_json::to_string_pretty(v).unwrap_or_default(),
                ("datetime", Some(Value::String(s))) => berth_model::Timestamp::parse(s)
                    .map(|t| t.to_rfc3339().chars().take(16).collect())
                    .unwrap_or_else(|| s.clone()),
                (_, Some(v)) => show(v),
            };
            let chosen: Vec<String> = match stored {
                Some(Value::Array(items)) => items.iter().map(show).collect(),
                Some(v) => vec![show(v)],
                None => Vec::new(),
            };
            let format = def.get("format").or_else(|| def.pointer("/items/format")).and_then(Value::as_str);
            let options: Vec<(String, String)> = if let Some(e) = def.get("enum").and_then(Value::as_array) {
                e.iter().map(|v| (show(v), show(v))).collect()
            } else if format == Some("user") {
                view.users().take(500).map(|u| (u.email.clone(), u.email.clone())).collect()
            } else if format == Some("team") {
                view.teams().take(500).map(|t| (t.name.clone(), t.name.clone())).collect()
            } else {
                Vec::new()
            };
            Some(InputField {
                id: format!("in-{}", name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
                label: def.get("title").and_then(Value::as_str).unwrap_or(name).to_string(),
                kind,
                options,
                value,
                chosen,
                required: required.iter().any(|r| r == name),
                disabled: truth(def.get("disabled"), &data, false),
                help: def.get("description").and_then(Value::as_str).map(|d| format!("{d} {help}")).unwrap_or(help),
                error: errors.iter().find(|(n, _)| n == name).map(|(_, m)| m.clone()),
                pick: format!("/actions/{}/pick/{}", encode(&self.id), encode(name)),
                name: field_name,
            })
        };
        let mut sections = Vec::new();
        let mut placed: Vec<String> = Vec::new();
        if let Some(steps) = self.body.pointer("/trigger/userInputs/steps").and_then(Value::as_array) {
            for step in steps {
                let listed: Vec<String> = step
                    .get("order")
                    .and_then(Value::as_array)
                    .map(|o| o.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default();
                placed.extend(listed.iter().cloned());
                sections.push(Section {
                    title: step.get("title").and_then(Value::as_str).unwrap_or_default().to_string(),
                    fields: listed.iter().filter_map(|n| field(n)).collect(),
                });
            }
        }
        let rest: Vec<InputField> = names.iter().filter(|n| !placed.contains(n)).filter_map(|n| field(n)).collect();
        if !rest.is_empty() || sections.is_empty() {
            sections.push(Section { title: String::new(), fields: rest });
        }
        sections
    }

    fn render(&self, form: Option<&FormData>, errors: &[(String, String)], status: StatusCode) -> UiResult<Response> {
        let general: Vec<String> = errors
            .iter()
            .filter(|(n, _)| n.is_empty() || !self.props().contains_key(n))
            .map(|(_, m)| m.clone())
            .collect();
        let entity_q = self.entity.as_ref().map(|e| format!("?entity={}", encode(&e.identifier))).unwrap_or_default();
        let page = FormPage {
            layout: self.session.layout(self.app, action_title(&self.id, &self.body), "actions"),
            action: self.id.clone(),
            title: action_title(&self.id, &self.body),
            description: self.body.get("description").and_then(Value::as_str).unwrap_or_default().to_string(),
            entity: self.entity.as_ref().map(|e| e.identifier.to_string()).unwrap_or_default(),
            entity_title: self.entity.as_ref().and_then(|e| e.title.clone()).unwrap_or_default(),
            button: self
                .body
                .pointer("/trigger/executeActionButtonText")
                .and_then(Value::as_str)
                .unwrap_or("Execute")
                .to_string(),
            sections: self.sections(form, errors),
            error: (!general.is_empty()).then(|| general.join("; ")),
            post: format!("/actions/{}/run{entity_q}", encode(&self.id)),
            refresh: format!("/actions/{}/form{entity_q}", encode(&self.id)),
            approval: self.body.get("requiredApproval").is_some_and(|a| a != &Value::Bool(false) && !a.is_null()),
        };
        html_status(status, &page)
    }
}

/// `GET /actions/{id}/run?entity=`: the action's form.
pub async fn form(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query,
) -> UiResult<Response> {
    let ctx = FormCtx::load(&app, &session, &id, q.get("entity"))?;
    ctx.render(None, &[], StatusCode::OK)
}

/// `POST /actions/{id}/form?entity=`: the form's inputs again for what is typed so far (rules re-judged).
pub async fn refresh(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query,
    form: FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    let ctx = FormCtx::load(&app, &session, &id, q.get("entity"))?;
    html(&FieldsFragment { sections: ctx.sections(Some(&form), &[]) })
}

/// `POST /actions/{id}/run?entity=`: runs it; the run's page, or the form again with each error at its input.
pub async fn run(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query,
    form: FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    let ctx = FormCtx::load(&app, &session, &id, q.get("entity"))?;
    let (inputs, errors) = inputs_of(&ctx.props(), &form);
    let unprocessable = berth_server::error::status_of(berth_model::ErrorCode::InvalidRequest);
    if !errors.is_empty() {
        return ctx.render(Some(&form), &errors, unprocessable);
    }
    let mut request = RunRequest { properties: inputs, entity: ctx.entity.as_ref().map(|e| e.identifier.to_string()) };
    let run_id = berth_server::routes::runs::run_id().map_err(UiError::from)?;
    berth_server::routes::runs::seal_inputs(&app, &id, &run_id, &mut request).map_err(UiError::from)?;
    let new = berth_engine::runs::NewRun {
        id: run_id.clone(),
        action: id.clone(),
        request,
        source: Source::Ui,
        run_as: None,
        event: None,
    };
    let (outcome, _) = app.pipeline.write_one(session.meta(), Command::CreateRun(Box::new(new))).await?;
    match outcome {
        Ok(_) => Ok(see_other(&format!("/runs/{run_id}"))),
        Err(e) => {
            let status = berth_server::error::ApiError::from(e.clone()).status;
            ctx.render(Some(&form), &input_errors(&e.to_string()), status)
        }
    }
}

/// `GET /actions/{id}/pick/{input}?q=`: `<option>`s for an entity picker: the input's blueprint's entities
/// the session may read, within the input's `dataset` (its `{"jqQuery"}` values judged over the user), whose
/// title or identifier contains what is typed (at most 20).
pub async fn pick(
    State(app): State<AppState>,
    session: Session,
    Path((id, input)): Path<(String, String)>,
    Query(p): Query,
) -> UiResult<Response> {
    let ctx = FormCtx::load(&app, &session, &id, p.get("entity"))?;
    let props = ctx.props();
    let def = props.get(&input).ok_or_else(|| UiError::not_found(format!("action `{id}` has no input `{input}`")))?;
    let blueprint = def.get("blueprint").and_then(Value::as_str).unwrap_or_default().to_string();
    let needle = crate::entity_form::typed(&p);
    let data = rule_data(&Map::new(), &ctx.user(), &ctx.entity_json());
    let dataset = match def.get("dataset") {
        Some(d) => {
            let mut d = d.clone();
            resolve_jq(&mut d, &data);
            Some(
                berth_model::query::Query::parse(&d)
                    .map_err(|e| UiError::new(berth_model::ErrorCode::InvalidRequest, e.to_string()))?,
            )
        }
        None => None,
    };
    let view = app.pipeline.view();
    let caller = session.caller.clone();
    let options = berth_server::searching::run(&app, move || {
        let scoped = berth_server::access::scoped(&view, &caller);
        let ctx = match &dataset {
            Some(q) => Some((berth_engine::search::Ctx::new(&view, q, scoped.now(), Some(&blueprint))?, q)),
            None => None,
        };
        let within = scoped
            .entities_of(&blueprint)
            .filter(|e| ctx.as_ref().is_none_or(|(c, q)| berth_engine::search::matches(c, e, q)));
        Ok(crate::entity_form::options(within, &needle))
    })
    .await?;
    html(&crate::entity_form::PickOptions { options })
}

/// Replaces every `{"jqQuery": "..."}` in a dataset with its value over `data` (null when it fails).
fn resolve_jq(v: &mut Value, data: &Value) {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("jqQuery") => {
            let code = m.get("jqQuery").and_then(Value::as_str).unwrap_or_default().to_string();
            *v = berth_engine::derived::jq::compile(&code).and_then(|p| p.run(data)).unwrap_or(Value::Null);
        }
        Value::Object(m) => m.values_mut().for_each(|x| resolve_jq(x, data)),
        Value::Array(items) => items.iter_mut().for_each(|x| resolve_jq(x, data)),
        _ => {}
    }
}

#[derive(Template)]
#[template(path = "action_builder.html")]
struct BuilderPage {
    layout: Layout,
    editing: bool,
    identifier: String,
    body: String,
    permissions: String,
    error: Option<String>,
}

const EXAMPLE: &str = r#"{
  "title": "Scaffold a service",
  "trigger": {
    "type": "self-service",
    "operation": "CREATE",
    "blueprintIdentifier": "service",
    "userInputs": {
      "properties": {
        "name": {"type": "string", "title": "Name", "pattern": "^[a-z][a-z0-9-]*$"}
      },
      "required": ["name"]
    }
  },
  "invocationMethod": {
    "type": "WEBHOOK",
    "url": "https://ci.example.com/scaffold",
    "body": {"name": "{{ .inputs.name }}", "runId": "{{ .run.id }}"}
  }
}"#;

/// `GET /actions/new`, `GET /actions/{id}/edit`: the builder (Admins).
pub async fn builder(State(app): State<AppState>, session: Session, id: Option<Path<String>>) -> UiResult<Response> {
    session.require_admin("build actions")?;
    let view = app.pipeline.view();
    let page = match id {
        Some(Path(id)) => {
            let d = view
                .definition(DefinitionKind::Action, &id)
                .ok_or_else(|| UiError::not_found(format!("there is no action `{id}`")))?;
            BuilderPage {
                layout: session.layout(&app, format!("Edit {id}"), "actions"),
                editing: true,
                body: serde_json::to_string_pretty(&*d.body).unwrap_or_default(),
                permissions: serde_json::to_string_pretty(&berth_engine::runs::permissions(&view, &id).view())
                    .unwrap_or_default(),
                identifier: id,
                error: None,
            }
        }
        None => BuilderPage {
            layout: session.layout(&app, "New action", "actions"),
            editing: false,
            identifier: String::new(),
            body: EXAMPLE.into(),
            permissions: serde_json::to_string_pretty(
                &berth_model::action_permissions::ActionPermissions::default().view(),
            )
            .unwrap_or_default(),
            error: None,
        },
    };
    html(&page)
}

/// `POST /actions/new`, `POST /actions/{id}/edit`: the action and its permissions written, or the builder
/// again with the engine's message.
pub async fn save(
    State(app): State<AppState>,
    session: Session,
    id: Option<Path<String>>,
    form: FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, "/actions", "build actions")?;
    let editing = id.is_some();
    let identifier = match &id {
        Some(Path(id)) => id.clone(),
        None => form.get("identifier").unwrap_or_default().to_string(),
    };
    let again = |message: String| {
        let page = BuilderPage {
            layout: session.layout(&app, "Action", "actions"),
            editing,
            identifier: identifier.clone(),
            body: form.raw("body").to_string(),
            permissions: form.raw("permissions").to_string(),
            error: Some(message),
        };
        html_status(berth_server::error::status_of(berth_model::ErrorCode::InvalidRequest), &page)
    };
    let body: Value = match serde_json::from_str(form.raw("body")) {
        Ok(v) => v,
        Err(e) => return again(format!("the action is not JSON: {e}")),
    };
    let permissions: Option<Value> = match form.get("permissions") {
        None => None,
        Some(text) => match serde_json::from_str(text) {
            Ok(v) => Some(v),
            Err(e) => return again(format!("the permissions are not JSON: {e}")),
        },
    };
    let how = if editing { DefinitionWrite::Replace(body) } else { DefinitionWrite::Create(body) };
    let mut commands =
        vec![Command::WriteDefinition { kind: DefinitionKind::Action, identifier: identifier.clone(), how }];
    if let Some(patch) = permissions {
        commands.push(Command::SetActionPermissions { action: identifier.clone(), patch });
    }
    let result = app.pipeline.write(session.meta(), commands).await?;
    for outcome in result.outcomes {
        if let Err(e) = outcome {
            return again(e.to_string());
        }
    }
    Ok(see_other("/actions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_messages_point_at_their_input() {
        let errors = input_errors(
            "invalid inputs: `name` must match ^[a-z]+$; `lang`: \"java\" is not one of go, rust; `extra` is not an input of this action",
        );
        let names: Vec<&str> = errors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["name", "lang", "extra"]);
        assert_eq!(input_errors("action `x` does not apply")[0].0, "");
    }

    #[test]
    fn forms_convert_by_type() {
        let props: Map<String, Value> = serde_json::from_value(json!({
            "n": {"type": "number"}, "on": {"type": "boolean"}, "tags": {"type": "array"},
            "svc": {"type": "string", "format": "entity", "blueprint": "service"},
            "svcs": {"type": "array", "items": {"type": "string", "format": "entity", "blueprint": "service"}},
            "who": {"type": "array", "items": {"type": "string", "format": "user"}},
            "meta": {"type": "object"}, "at": {"type": "string", "format": "date-time"}}))
        .expect("props");
        let f = FormData::parse(
            b"i.n=3&i.on.shown=1&i.on=on&i.tags=a%0Ab&i.svc=pay&i.svcs=a%2C+b&i.who=x%40y.io&i.who=z%40y.io&i.meta=%7B%7D&i.at=2024-01-02T03:04",
        );
        let (v, errors) = inputs_of(&props, &f);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            Value::Object(v),
            json!({"n": 3.0, "on": true, "tags": ["a", "b"], "svc": "pay", "svcs": ["a", "b"],
                "who": ["x@y.io", "z@y.io"], "meta": {}, "at": "2024-01-02T03:04:00.000Z"})
        );
        let (_, errors) = inputs_of(&props, &FormData::parse(b"i.n=many&i.meta=%5B%5D"));
        assert_eq!(errors.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["n", "meta"]);
    }
}
