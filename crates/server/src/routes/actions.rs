//! Actions and automations, as Port serves them: `GET|POST /v1/actions` (with the list filters),
//! `GET|PUT|DELETE /v1/actions/{identifier}`, and the deprecated blueprint-scoped routes
//! `GET|POST /v1/blueprints/{bp}/actions`, `GET|PUT|DELETE /v1/blueprints/{bp}/actions/{identifier}`.
//! An action is a definition object (`berth_engine::definitions::actions` checks its body against the
//! catalog). Anyone signed in reads actions (the forms need them), without their `invocationMethod` unless
//! an Admin (where a run goes, and with what, is the organisation's plumbing); only Admins change them,
//! checked before any body is read.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::Command;
use berth_engine::definitions::DefinitionWrite;
use berth_model::DefinitionKind;
use berth_model::action::{Action, AutomationEvent, Operation, Trigger};
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Params, PathParams};

const KIND: DefinitionKind = DefinitionKind::Action;

pub fn router() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/v1/actions", get(list).post(create))
        .route("/v1/actions/{identifier}", get(get_one).put(replace).delete(delete))
        .route("/v1/blueprints/{bp}/actions", get(list_of_blueprint).post(create_in_blueprint))
        .route(
            "/v1/blueprints/{bp}/actions/{identifier}",
            get(get_in_blueprint).put(replace_in_blueprint).delete(delete_in_blueprint),
        )
        .route_layer(axum::middleware::from_fn(admin_for_changes))
}

async fn admin_for_changes(req: axum::extract::Request, next: axum::middleware::Next) -> ApiResult<Response> {
    if req.method() != axum::http::Method::GET {
        super::require_admin_request(&req, "change actions")?;
    }
    Ok(next.run(req).await)
}

/// An action as `caller` reads it.
fn view_for(caller: &Caller, d: &berth_model::Definition) -> Value {
    let mut v = d.view();
    if !caller.principal().is_admin() {
        if let Some(map) = v.as_object_mut() {
            map.remove("invocationMethod");
        }
    }
    v
}

/// The action, if it exists (and, for the blueprint-scoped routes, is about `blueprint`).
fn existing(app: &AppState, id: &str, blueprint: Option<&str>) -> ApiResult<std::sync::Arc<berth_model::Definition>> {
    app.pipeline
        .view()
        .definition(KIND, id)
        .filter(|d| blueprint.is_none_or(|bp| blueprint_of(&d.body).as_deref() == Some(bp)))
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("action `{id}` was not found")))
}

fn blueprint_of(body: &Value) -> Option<String> {
    Action::parse(body).ok().and_then(|a| a.blueprint().map(str::to_string))
}

/// Whether an action passes the list filters.
fn passes(params: &Params, id: &str, action: &Action) -> ApiResult<bool> {
    let any = |key: &str, value: Option<&str>| -> bool {
        {
            let list = params.list(key);
            list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
        }
    };
    let operation = match &action.trigger {
        Trigger::SelfService { operation: Operation::Create, .. } => Some("CREATE"),
        Trigger::SelfService { operation: Operation::Day2, .. } => Some("DAY-2"),
        Trigger::SelfService { operation: Operation::Delete, .. } => Some("DELETE"),
        Trigger::Automation { .. } => None,
    };
    let (event, event_action) = match &action.trigger {
        Trigger::Automation { event: AutomationEvent::Entity { kind, .. } } => (Some(kind.as_str()), None),
        Trigger::Automation { event: AutomationEvent::Timer { .. } } => (Some("TIMER_PROPERTY_EXPIRED"), None),
        Trigger::Automation { event: AutomationEvent::Run { kind, action } } => {
            (Some(kind.as_str()), Some(action.as_str()))
        }
        Trigger::SelfService { .. } => (None, None),
    };
    let published = match params.get("published") {
        None => true,
        Some(_) => params.flag("published", true)? == action.publish,
    };
    let trigger_type = params.get("trigger_type").is_none_or(|t| t == action.trigger_type());
    Ok(published
        && trigger_type
        && any("action_identifier", Some(id))
        && any("blueprint_identifier", action.blueprint())
        && any("operation", operation)
        && any("trigger_event", event)
        && any("trigger_event_action_identifier", event_action))
}

fn listed(app: &AppState, caller: &Caller, params: &Params, blueprint: Option<&str>) -> ApiResult<Response> {
    if let Some(t) = params.get("trigger_type") {
        if !["self-service", "automation"].contains(&t) {
            return Err(ApiError::bad_request("`trigger_type` is self-service or automation"));
        }
    }
    let view = app.pipeline.view();
    let mut actions = Vec::new();
    for d in view.definitions(KIND) {
        // Each action read once (a stored body always reads: it was checked when written).
        let Ok(action) = Action::parse(&d.body) else { continue };
        if blueprint.is_some_and(|bp| action.blueprint() != Some(bp)) {
            continue;
        }
        if passes(params, &d.identifier, &action)? {
            actions.push(view_for(caller, d));
        }
    }
    Ok(reply(StatusCode::OK, json!({"ok": true, "actions": actions}), None))
}

/// The blueprint-scoped routes' body: its trigger about `bp` (set when absent, refused when another).
fn scoped(bp: &str, body: &mut Value) -> ApiResult<()> {
    let Some(trigger) = body.get_mut("trigger").and_then(Value::as_object_mut) else { return Ok(()) };
    let is_timer_or_entity = trigger.get("type").and_then(Value::as_str) == Some("automation");
    let slot = if is_timer_or_entity {
        match trigger.get_mut("event").and_then(Value::as_object_mut) {
            Some(event) => event,
            None => return Ok(()),
        }
    } else {
        trigger
    };
    match slot.get("blueprintIdentifier").and_then(Value::as_str) {
        None => {
            slot.insert("blueprintIdentifier".into(), Value::String(bp.to_string()));
            Ok(())
        }
        Some(other) if other == bp => Ok(()),
        Some(other) => {
            Err(ApiError::unprocessable(format!("the action is about blueprint `{other}`, not `{bp}` (the route's)")))
        }
    }
}

async fn write(app: &AppState, caller: &Caller, id: String, how: DefinitionWrite) -> ApiResult<Response> {
    super::write_definition(app, caller, Command::WriteDefinition { kind: KIND, identifier: id, how }, "action").await
}

#[utoipa::path(get, path = "/v1/actions", tag = "Actions", summary = "List actions and automations", security(("bearer" = [])),
    params(
        ("action_identifier" = Option<Vec<String>>, Query, description = "Only these actions (repeated, `[]` or comma-joined)"),
        ("blueprint_identifier" = Option<Vec<String>>, Query, description = "Only those about these blueprints"),
        ("operation" = Option<Vec<String>>, Query, description = "CREATE, DAY-2, DELETE"),
        ("published" = Option<bool>, Query, description = "Only (un)published ones"),
        ("trigger_type" = Option<String>, Query, description = "self-service or automation"),
        ("trigger_event" = Option<Vec<String>>, Query, description = "Automations on these events"),
        ("trigger_event_action_identifier" = Option<Vec<String>>, Query, description = "Run automations of these actions"),
    ),
    description = "Anyone signed in; `invocationMethod` is shown to Admins only.",
    responses((status = 200, description = "`{ok, actions}`"), (status = 400, description = "A bad filter")))]
pub async fn list(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> ApiResult<Response> {
    listed(&app, &caller, &params, None)
}

#[utoipa::path(post, path = "/v1/actions", tag = "Actions", summary = "Create an action or automation (Admin)", security(("bearer" = [])),
    description = "Port's action object: `{identifier, title?, icon?, description?, trigger, invocationMethod, requiredApproval?, approvalNotification?, publish?, allowAnyoneToViewRuns?}`. `trigger` is `{type: self-service, operation: CREATE | DAY-2 | DELETE, blueprintIdentifier, userInputs?, condition?}` or `{type: automation, event: {type, blueprintIdentifier | propertyIdentifier | actionIdentifier}, condition?: {type: JQ, expressions, combinator}}`; `invocationMethod` is WEBHOOK, GITHUB, GITLAB, AZURE_DEVOPS, KAFKA, UPSERT_ENTITY or INTEGRATION_ACTION with Port's fields. The blueprint must exist, a `condition` must name its properties, and every jq expression (templates `{{ }}`, conditions, input rules) must compile: a 422 says which and where.",
    responses((status = 201, description = "`{ok, action}`"), (status = 403, description = "Not an Admin"), (status = 409, description = "The identifier is taken"), (status = 422, description = "A bad action")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = super::take_identifier(&mut body)?;
    write(&app, &caller, id, DefinitionWrite::Create(body)).await
}

#[utoipa::path(get, path = "/v1/actions/{identifier}", tag = "Actions", summary = "Get an action or automation", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Action identifier")),
    responses((status = 200, description = "`{ok, action}`"), (status = 404, description = "No such action")))]
pub async fn get_one(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let d = existing(&app, &params.get("identifier")?, None)?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "action": view_for(&caller, &d)}), None))
}

#[utoipa::path(put, path = "/v1/actions/{identifier}", tag = "Actions", summary = "Replace an action or automation (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Action identifier")),
    responses((status = 200, description = "`{ok, action}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such action"), (status = 422, description = "A bad action")))]
pub async fn replace(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = params.get("identifier")?;
    write(&app, &caller, id, DefinitionWrite::Replace(body)).await
}

#[utoipa::path(delete, path = "/v1/actions/{identifier}", tag = "Actions", summary = "Delete an action or automation (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Action identifier")),
    responses((status = 200, description = "`{ok}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such action")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let identifier = params.get("identifier")?;
    super::write_definition(&app, &caller, Command::DeleteDefinition { kind: KIND, identifier }, "action").await
}

#[utoipa::path(get, path = "/v1/blueprints/{bp}/actions", tag = "Actions", summary = "List a blueprint's actions (deprecated by Port; use /v1/actions?blueprint_identifier=)", security(("bearer" = [])),
    params(("bp" = String, Path, description = "Blueprint identifier")),
    responses((status = 200, description = "`{ok, actions}`")))]
pub async fn list_of_blueprint(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    params: Params,
) -> ApiResult<Response> {
    let bp = path.get("bp")?;
    listed(&app, &caller, &params, Some(&bp))
}

#[utoipa::path(post, path = "/v1/blueprints/{bp}/actions", tag = "Actions", summary = "Create an action of a blueprint (Admin; deprecated by Port)", security(("bearer" = [])),
    params(("bp" = String, Path, description = "Blueprint identifier")),
    description = "As `POST /v1/actions`; the trigger's blueprint is the route's when the body does not name one.",
    responses((status = 201, description = "`{ok, action}`"), (status = 403, description = "Not an Admin"), (status = 409, description = "The identifier is taken"), (status = 422, description = "A bad action, or one about another blueprint")))]
pub async fn create_in_blueprint(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<Response> {
    let bp = path.get("bp")?;
    let id = super::take_identifier(&mut body)?;
    scoped(&bp, &mut body)?;
    write(&app, &caller, id, DefinitionWrite::Create(body)).await
}

#[utoipa::path(get, path = "/v1/blueprints/{bp}/actions/{identifier}", tag = "Actions", summary = "Get an action of a blueprint (deprecated by Port)", security(("bearer" = [])),
    params(("bp" = String, Path, description = "Blueprint identifier"), ("identifier" = String, Path, description = "Action identifier")),
    responses((status = 200, description = "`{ok, action}`"), (status = 404, description = "No such action of this blueprint")))]
pub async fn get_in_blueprint(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    let d = existing(&app, &path.get("identifier")?, Some(&path.get("bp")?))?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "action": view_for(&caller, &d)}), None))
}

#[utoipa::path(put, path = "/v1/blueprints/{bp}/actions/{identifier}", tag = "Actions", summary = "Replace an action of a blueprint (Admin; deprecated by Port)", security(("bearer" = [])),
    params(("bp" = String, Path, description = "Blueprint identifier"), ("identifier" = String, Path, description = "Action identifier")),
    responses((status = 200, description = "`{ok, action}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such action of this blueprint"), (status = 422, description = "A bad action")))]
pub async fn replace_in_blueprint(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<Response> {
    let (bp, id) = (path.get("bp")?, path.get("identifier")?);
    existing(&app, &id, Some(&bp))?;
    scoped(&bp, &mut body)?;
    write(&app, &caller, id, DefinitionWrite::Replace(body)).await
}

#[utoipa::path(delete, path = "/v1/blueprints/{bp}/actions/{identifier}", tag = "Actions", summary = "Delete an action of a blueprint (Admin; deprecated by Port)", security(("bearer" = [])),
    params(("bp" = String, Path, description = "Blueprint identifier"), ("identifier" = String, Path, description = "Action identifier")),
    responses((status = 200, description = "`{ok}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such action of this blueprint")))]
pub async fn delete_in_blueprint(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    let (bp, identifier) = (path.get("bp")?, path.get("identifier")?);
    existing(&app, &identifier, Some(&bp))?;
    super::write_definition(&app, &caller, Command::DeleteDefinition { kind: KIND, identifier }, "action").await
}
