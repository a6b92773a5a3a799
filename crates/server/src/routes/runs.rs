//! Action runs, as Port serves them (`../shared/brief/port-api.md` §6.2): `POST /v1/actions/{id}/runs`,
//! `GET /v1/actions/runs` (filters), `GET|PATCH /v1/actions/runs/{run}`, `POST|GET .../logs`,
//! `PATCH .../approval`, `GET .../approvers`; and an action's permissions, `GET|PATCH
//! /v1/actions/{id}/permissions`. The engine judges who may (`berth_engine::runs`); every read goes through
//! [`berth_engine::runs::may_read`], and a run the caller may not read is a 404 like a missing one.
//!
//! An encrypted input (`encryption: aes256-gcm`) is checked here against its definition, then sealed before
//! the run is written: the log, the API and the event feed only ever hold the sealed form; the invocation
//! worker opens it for the backend.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::Command;
use berth_engine::runs::{self, NewRun};
use berth_model::DefinitionKind;
use berth_model::run::{Decision, LogLine, Run, RunPatch, RunRequest, Source};
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Params, PathParams};

pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, patch, post};
    axum::Router::new()
        .route("/v1/actions/{identifier}/runs", post(create))
        .route("/v1/actions/runs", get(list))
        .route("/v1/actions/runs/{run_id}", get(get_one).patch(update))
        .route("/v1/actions/runs/{run_id}/logs", get(logs).post(add_log))
        .route("/v1/actions/runs/{run_id}/approval", patch(approve))
        .route("/v1/actions/runs/{run_id}/approvers", get(approvers))
        .route("/v1/actions/{identifier}/permissions", get(get_permissions).patch(patch_permissions))
        .route("/v1/actions/{identifier}/signing-secret", get(signing_secret))
}

#[utoipa::path(get, path = "/v1/actions/{identifier}/signing-secret", tag = "Actions", summary = "The secret an action's webhooks are signed with (Admin; Berth extension)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Action identifier")),
    description = "Webhook invocations carry `x-port-timestamp` and `x-port-signature: v1,<base64 HMAC-SHA256(key = this secret, message = \"<timestamp>.<raw body>\")>`, as Port signs them. The secret is derived from the server's delivery key and the action's identifier: every replica signs alike, and nothing of it is stored.",
    responses((status = 200, description = "`{ok, secret}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such action")))]
pub async fn signing_secret(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    super::require_admin(&caller, "read an action's signing secret")?;
    let action = path.get("identifier")?;
    if app.pipeline.view().definition(DefinitionKind::Action, &action).is_none() {
        return Err(ApiError::not_found(format!("action `{action}` was not found")));
    }
    Ok(reply(StatusCode::OK, json!({"ok": true, "secret": app.delivery.config().action_secret(&action)}), None))
}

/// A fresh run id: `r_` and 16 random letters and digits.
pub fn run_id() -> ApiResult<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = [0u8; berth_model::run::RUN_ID_LEN];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness for a run id: {e}")))?;
    // 256 = 4 × 62 + 8: the bias toward the first 8 letters is small and harmless for an identifier.
    Ok(format!("r_{}", bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect::<String>()))
}

/// The run as `caller` reads it (404 when missing or hidden), with whether its action is gone.
fn readable(app: &AppState, caller: &Caller, id: &str) -> ApiResult<(Run, Value)> {
    let view = app.pipeline.view();
    let (_, run) = runs::get(&view, id).ok_or_else(|| ApiError::not_found(format!("run `{id}` was not found")))?;
    if !runs::may_read(&view, &caller.principal(), &run, crate::now()) {
        return Err(ApiError::not_found(format!("run `{id}` was not found")));
    }
    let shown = shown(&view, id, &run);
    Ok((run, shown))
}

fn shown(view: &berth_engine::State, id: &str, run: &Run) -> Value {
    let mut v = run.view(id);
    if view.definition(DefinitionKind::Action, &run.action.identifier).is_none() {
        v["action"]["deleted"] = Value::Bool(true);
    }
    v
}

/// Seals the encrypted inputs given in the clear, after checking each against its definition (the engine
/// sees only the sealed form).
pub fn seal_inputs(app: &AppState, action: &str, run: &str, request: &mut RunRequest) -> ApiResult<()> {
    let view = app.pipeline.view();
    let Some(d) = view.definition(DefinitionKind::Action, action) else { return Ok(()) };
    let Some(props) = d.body.pointer("/trigger/userInputs/properties").and_then(Value::as_object) else {
        return Ok(());
    };
    let config = app.delivery.config();
    for (name, def) in props {
        if def.get("encryption").is_none_or(Value::is_null) {
            continue;
        }
        let Some(value) = request.properties.get_mut(name) else { continue };
        let Value::String(plain) = value else {
            if value.is_null() {
                continue;
            }
            return Err(ApiError::unprocessable(format!("invalid inputs: `{name}` is an encrypted text input")));
        };
        let schema = berth_model::action::input_schema(name, def).map_err(ApiError::unprocessable)?;
        schema
            .validate(name.as_str(), &Value::String(plain.clone()))
            .map_err(|e| ApiError::unprocessable(format!("invalid inputs: {e}")))?;
        let sealed = config.seal_input(run, name, plain).map_err(ApiError::internal)?;
        *value = json!({"sealed": sealed});
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/actions/{identifier}/runs", tag = "Action Runs", summary = "Run a self-service action",
    security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Action identifier"),
        ("run_as" = Option<String>, Query, description = "Admins: the user the run is for")),
    description = "Body `{properties: {...inputs}, entity?}` (`entity` for DAY-2 and DELETE actions). The inputs are checked against the action's `userInputs` (types, formats, enums, patterns, bounds, `required` as a list or jq, defaults, hidden inputs dropped, entity pickers pointed at entities the runner may read); a 422 names every bad input. The runner needs the action's `execute` permission (Admins by default). A run that needs approval starts `WAITING_FOR_APPROVAL`, any other `IN_PROGRESS`, and is sent to its backend by the invocation worker.",
    responses((status = 202, description = "`{ok, run}`"), (status = 403, description = "Not allowed to execute it"), (status = 404, description = "No such action, or entity"), (status = 422, description = "Bad inputs, or an entity the action does not apply to")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    params: Params,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let action = path.get("identifier")?;
    let mut request = RunRequest::parse(&body)?;
    let id = run_id()?;
    seal_inputs(&app, &action, &id, &mut request)?;
    let new = NewRun {
        id: id.clone(),
        action,
        request,
        source: Source::Api,
        run_as: params.get("run_as").filter(|s| !s.is_empty()).map(str::to_string),
        event: None,
    };
    let meta = super::blueprints::meta(&caller, &axum::http::HeaderMap::new(), None);
    let (outcome, seq) = app.pipeline.write_one(meta, Command::CreateRun(Box::new(new))).await?;
    outcome?;
    // The caller reads it: it made it, or it is an Admin (`run_as` is for Admins).
    let (_, run) = readable(&app, &caller, &id)?;
    Ok(reply(StatusCode::ACCEPTED, json!({"ok": true, "run": run}), Some(seq)))
}

/// Whether a run passes `GET /v1/actions/runs`'s filters.
fn passes(params: &Params, run: &Run, active: Option<bool>, sources: &Option<Vec<String>>) -> bool {
    let is = |key: &str, value: Option<&str>| params.get(key).is_none_or(|want| value == Some(want));
    let source = serde_json::to_value(run.source).ok().and_then(|v| v.as_str().map(str::to_string));
    is("entity", run.entity.as_ref().map(|e| e.identifier.as_str()))
        && is("blueprint", run.blueprint.as_ref().map(|b| b.identifier.as_str()))
        && is("action", Some(&run.action.identifier))
        && is("user_email", Some(&run.created_by))
        && is("user_id", Some(&run.created_by))
        && is("external_run_id", run.external_run_id.as_deref())
        && active.is_none_or(|a| a != run.status.ended())
        && sources.as_ref().is_none_or(|list| source.is_some_and(|s| list.contains(&s)))
}

#[utoipa::path(get, path = "/v1/actions/runs", tag = "Action Runs", summary = "List runs", security(("bearer" = [])),
    params(
        ("entity" = Option<String>, Query, description = "Runs on this entity"),
        ("blueprint" = Option<String>, Query, description = "Runs about this blueprint"),
        ("action" = Option<String>, Query, description = "Runs of this action"),
        ("active" = Option<bool>, Query, description = "Only runs that have (not) ended"),
        ("user_email" = Option<String>, Query, description = "Runs made by this user"),
        ("user_id" = Option<String>, Query, description = "Runs made by this user or app"),
        ("external_run_id" = Option<String>, Query, description = "The backend's run id"),
        ("source" = Option<Vec<String>>, Query, description = "UI, API, AUTOMATION"),
        ("limit" = Option<usize>, Query, description = "1 to 1000 (default 1000)"),
        ("exclude" = Option<Vec<String>>, Query, description = "Fields left out of each run"),
    ),
    description = "Newest first; only the runs the caller may read.",
    responses((status = 200, description = "`{ok, runs}`"), (status = 400, description = "A bad filter")))]
pub async fn list(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> ApiResult<Response> {
    let limit = params.page_size(1000)?;
    let active = match params.get("active") {
        None | Some("") => None,
        Some(_) => Some(params.flag("active", true)?),
    };
    let sources = Some(params.list("source")).filter(|l| !l.is_empty());
    if let Some(list) = &sources {
        if let Some(bad) = list.iter().find(|s| !["UI", "API", "AUTOMATION"].contains(&s.as_str())) {
            return Err(ApiError::bad_request(format!("`source` is UI, API or AUTOMATION, not {bad:?}")));
        }
    }
    let exclude = params.list("exclude");
    let view = app.pipeline.view();
    let principal = caller.principal();
    let now = crate::now();
    let runs: Vec<Value> = runs::newest_first(&view)
        .into_iter()
        .filter_map(|d| Run::from_body(&d.body).ok().map(|r| (&d.identifier, r)))
        .filter(|(_, r)| passes(&params, r, active, &sources) && runs::may_read(&view, &principal, r, now))
        .take(limit)
        .map(|(id, r)| {
            let r = &r;
            let mut v = shown(&view, id, r);
            if let Some(map) = v.as_object_mut() {
                for field in &exclude {
                    if field != "id" {
                        map.remove(field);
                    }
                }
            }
            v
        })
        .collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "runs": runs}), None))
}

#[utoipa::path(get, path = "/v1/actions/runs/{run_id}", tag = "Action Runs", summary = "Get a run", security(("bearer" = [])),
    params(("run_id" = String, Path, description = "Run id")),
    responses((status = 200, description = "`{ok, run}`"), (status = 404, description = "No such run, or one the caller may not read")))]
pub async fn get_one(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    let (_, run) = readable(&app, &caller, &path.get("run_id")?)?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "run": run}), None))
}

/// Runs a run command for `caller` and answers the run as it is after it.
async fn run_command(
    app: &AppState,
    caller: &Caller,
    id: &str,
    command: Command,
    status: StatusCode,
) -> ApiResult<Response> {
    let meta = super::blueprints::meta(caller, &axum::http::HeaderMap::new(), None);
    let (outcome, seq) = app.pipeline.write_one(meta, command).await?;
    let outcome = outcome?;
    let view = app.pipeline.view();
    match outcome {
        berth_engine::Outcome::Definition { definition, .. } if definition.kind == DefinitionKind::RunLog => Ok(reply(
            status,
            json!({"ok": true, "runLog": berth_model::run::log_view(&definition.identifier, &definition)}),
            Some(seq),
        )),
        _ => {
            let (_, run) =
                runs::get(&view, id).ok_or_else(|| ApiError::not_found(format!("run `{id}` was not found")))?;
            Ok(reply(status, json!({"ok": true, "run": shown(&view, id, &run)}), Some(seq)))
        }
    }
}

#[utoipa::path(patch, path = "/v1/actions/runs/{run_id}", tag = "Action Runs", summary = "Update a run", security(("bearer" = [])),
    params(("run_id" = String, Path, description = "Run id")),
    description = "Body `{status? (SUCCESS | FAILURE: ends the run), statusLabel?, link? (a URL or a list), summary?, externalRunId?}`; each field given overwrites. Admins and the run's creator; an ended run is frozen (422).",
    responses((status = 200, description = "`{ok, run}`"), (status = 403, description = "Not allowed"), (status = 404, description = "No such run"), (status = 422, description = "A bad body, or an ended run")))]
pub async fn update(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("run_id")?;
    let patch = RunPatch::parse(&body)?;
    run_command(&app, &caller, &id.clone(), Command::PatchRun { id, patch }, StatusCode::OK).await
}

#[utoipa::path(post, path = "/v1/actions/runs/{run_id}/logs", tag = "Action Runs", summary = "Add a log line to a run", security(("bearer" = [])),
    params(("run_id" = String, Path, description = "Run id")),
    description = "Body `{message, terminationStatus? (SUCCESS | FAILURE: ends the run, once), statusLabel?}`. At most 10,000 lines a run.",
    responses((status = 201, description = "`{ok, runLog}`"), (status = 403, description = "Not allowed"), (status = 404, description = "No such run"), (status = 422, description = "A bad body, or an ended run")))]
pub async fn add_log(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("run_id")?;
    let line = LogLine::parse(&body)?;
    run_command(&app, &caller, &id.clone(), Command::AddRunLog { id, line }, StatusCode::CREATED).await
}

#[utoipa::path(get, path = "/v1/actions/runs/{run_id}/logs", tag = "Action Runs", summary = "A run's log lines", security(("bearer" = [])),
    params(("run_id" = String, Path, description = "Run id"),
        ("limit" = Option<usize>, Query, description = "1 to 50 (default 50)"),
        ("offset" = Option<usize>, Query, description = "Lines skipped (default 0)")),
    responses((status = 200, description = "`{ok, runLogs}` in order"), (status = 404, description = "No such run")))]
pub async fn logs(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    params: Params,
) -> ApiResult<Response> {
    let id = path.get("run_id")?;
    readable(&app, &caller, &id)?;
    let limit = match params.get("limit") {
        None | Some("") => 50,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=50).contains(n))
            .ok_or_else(|| ApiError::bad_request("`limit` is 1 to 50"))?,
    };
    let offset = match params.get("offset") {
        None | Some("") => 0,
        Some(v) => v.parse::<usize>().map_err(|_| ApiError::bad_request("`offset` is a whole number"))?,
    };
    let view = app.pipeline.view();
    let prefix = format!("{id}#");
    let lines: Vec<Value> = view
        .definitions_from(DefinitionKind::RunLog, &prefix)
        .take_while(|d| d.identifier.starts_with(&prefix))
        .skip(offset)
        .take(limit)
        .map(|d| berth_model::run::log_view(&d.identifier, d))
        .collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "runLogs": lines}), None))
}

#[utoipa::path(patch, path = "/v1/actions/runs/{run_id}/approval", tag = "Action Runs", summary = "Approve or decline a run", security(("bearer" = [])),
    params(("run_id" = String, Path, description = "Run id")),
    description = "Body `{status: APPROVE | DECLINE, description?}`, by the action's approvers (its `approve` permission; Admins by default), once each. `requiredApproval` ANY starts the run at the first approval, ALL at the last approver's; one decline ends it (FAILURE, approval DECLINED).",
    responses((status = 201, description = "`{ok, run}`"), (status = 403, description = "Not an approver"), (status = 404, description = "No such run"), (status = 409, description = "Already voted"), (status = 422, description = "The run does not wait for approval")))]
pub async fn approve(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = path.get("run_id")?;
    let decision = Decision::parse(&body)?;
    run_command(&app, &caller, &id.clone(), Command::DecideRun { id, decision }, StatusCode::CREATED).await
}

#[utoipa::path(get, path = "/v1/actions/runs/{run_id}/approvers", tag = "Action Runs", summary = "Who may approve a run, and how they voted", security(("bearer" = [])),
    params(("run_id" = String, Path, description = "Run id")),
    responses((status = 200, description = "`{ok, approvers: [{user: {id, email?, firstName?, lastName?}, status: APPROVED | DECLINED | PENDING}]}` (an app named by client id has only its `id`)"), (status = 404, description = "No such run")))]
pub async fn approvers(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    let id = path.get("run_id")?;
    let (run, _) = readable(&app, &caller, &id)?;
    let view = app.pipeline.view();
    let perms = runs::permissions(&view, &run.action.identifier);
    let votes = run.approval.as_ref().map(|a| a.votes.clone()).unwrap_or_default();
    let mut names = runs::approvers(&view, &perms);
    for v in &votes {
        if !names.contains(&v.user_id) {
            names.push(v.user_id.clone());
        }
    }
    let list: Vec<Value> = names
        .iter()
        .map(|email| {
            let user = view.user(email);
            let status = match votes.iter().find(|v| &v.user_id == email) {
                Some(v) if v.approved => "APPROVED",
                Some(_) => "DECLINED",
                None => "PENDING",
            };
            let who = match user {
                Some(u) => json!({"id": u.email, "email": u.email, "firstName": u.first_name, "lastName": u.last_name}),
                // An app named by client id.
                None => json!({"id": email}),
            };
            json!({"user": who, "status": status})
        })
        .collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "approvers": list}), None))
}

#[utoipa::path(get, path = "/v1/actions/{identifier}/permissions", tag = "Actions", summary = "Who may execute and approve an action", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Action identifier")),
    description = "`{execute: {users, roles, teams, ownedByTeam, policy}, approve: {users, roles, teams, policy}}`; an action never given any has Admins only. Anyone signed in reads them.",
    responses((status = 200, description = "`{ok, permissions}`"), (status = 404, description = "No such action")))]
pub async fn get_permissions(State(app): State<AppState>, path: PathParams) -> ApiResult<Response> {
    let action = path.get("identifier")?;
    let view = app.pipeline.view();
    if view.definition(DefinitionKind::Action, &action).is_none() {
        return Err(ApiError::not_found(format!("action `{action}` was not found")));
    }
    Ok(reply(StatusCode::OK, json!({"ok": true, "permissions": runs::permissions(&view, &action).view()}), None))
}

#[utoipa::path(patch, path = "/v1/actions/{identifier}/permissions", tag = "Actions", summary = "Change who may execute and approve an action (Admin)", security(("bearer" = [])),
    params(("identifier" = String, Path, description = "Action identifier")),
    description = "Body `{execute?, approve?}`; each field given replaces its own. A `policy` (`{queries: {name: rules-language query, values may hold {{ jq }} over the run's trigger data}, conditions: [jq over {queries, ...trigger data}]}`) decides alone when present; the lists then say who sees the action.",
    responses((status = 200, description = "`{ok, permissions}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such action"), (status = 422, description = "A bad body")))]
pub async fn patch_permissions(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    super::require_admin(&caller, "change an action's permissions")?;
    let action = path.get("identifier")?;
    let meta = super::blueprints::meta(&caller, &axum::http::HeaderMap::new(), None);
    let (outcome, seq) =
        app.pipeline.write_one(meta, Command::SetActionPermissions { action: action.clone(), patch: body }).await?;
    outcome?;
    let view = app.pipeline.view();
    Ok(reply(StatusCode::OK, json!({"ok": true, "permissions": runs::permissions(&view, &action).view()}), Some(seq)))
}
