//! HTTP routes, one module per resource. Every `/v1` route but the token route sits behind
//! [`crate::auth::require_auth`].

pub mod actions;
pub mod apps;
pub mod audit;
pub mod backstage_catalog;
pub mod blueprints;
pub mod deployments;
pub mod entities;
pub mod events;
pub mod history;
pub mod integrations;
pub mod pages;
pub mod render;
pub mod runs;
pub mod scorecards;
pub mod search;
pub mod secrets;
pub mod subscriptions;
pub mod system;
pub mod teams;
pub mod token;
pub mod users;
pub mod webhook_templates;
pub mod webhooks;

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::AppState;
use crate::error::ApiError;
use berth_catalog::pipeline::PipelineError;

/// 403 unless the caller is an Admin; `what` completes "only an Admin may ...".
pub fn require_admin(caller: &crate::auth::Caller, what: &str) -> crate::error::ApiResult<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        let mut e = crate::error::ApiError::new(berth_model::ErrorCode::Forbidden, format!("only an Admin may {what}"));
        // Refused before the catalog saw it: [`record_refusals`] writes it to the log.
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(RECORD_REFUSAL, HeaderValue::from_static("1"));
        e.headers = Some(Box::new(headers));
        Err(e)
    }
}

/// Marks a refusal made before the catalog saw the request (the catalog records its own).
const RECORD_REFUSAL: &str = "x-berth-record-refusal";

/// Middleware inside `require_auth`: a request refused by an Admin check is written to the log as a refused
/// attempt (the audit log's `FAILURE` records), so denied writes are audited wherever they were stopped.
async fn record_refusals(
    axum::extract::State(app): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let caller = req.extensions().get::<crate::auth::Caller>().cloned();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let mut response = next.run(req).await;
    // Refused reads are not attempts to change anything.
    if response.headers_mut().remove(RECORD_REFUSAL).is_none() || method == axum::http::Method::GET {
        return response;
    }
    let Some(caller) = caller else { return response };
    let meta = blueprints::meta(&caller, &axum::http::HeaderMap::new(), None);
    let code = berth_model::ErrorCode::from_status(response.status().as_u16());
    record_refusal(&app, meta, &method, &path, code);
    response
}

/// Records a refused change request (`method` on `path`, stopped by an Admin check before the catalog saw it)
/// through [`berth_catalog::refusals`]: in the background, so the answer does not wait. The API and the UI
/// both record through here; this maps the HTTP request to what it tried to do.
pub fn record_refusal(
    app: &AppState,
    meta: berth_engine::WriteMeta,
    method: &axum::http::Method,
    path: &str,
    code: berth_model::ErrorCode,
) {
    let action = match *method {
        axum::http::Method::POST => "CREATE",
        axum::http::Method::DELETE => "DELETE",
        _ => "UPDATE",
    };
    // `/v1/apps/x` → app, `/blueprints/x/properties` (UI) → blueprint, `.../permissions` → permissions.
    let resource = path.trim_start_matches("/v1").split('/').nth(1).unwrap_or("").trim_end_matches('s').to_string();
    let resource = if path.ends_with("/permissions") { "permissions".into() } else { resource };
    let refusal = berth_catalog::refusals::Refusal {
        resource,
        action,
        identifier: path.to_string(),
        code,
        message: "only an Admin may do this".into(),
    };
    berth_catalog::refusals::record(&app.pipeline, meta, refusal);
}

/// [`require_admin`] for a request `require_auth` has identified (route layers run it before any body is
/// read, so a Member learns nothing about what a valid body would be).
pub fn require_admin_request(req: &axum::extract::Request, what: &str) -> crate::error::ApiResult<()> {
    let caller = req
        .extensions()
        .get::<crate::auth::Caller>()
        .ok_or_else(|| crate::error::ApiError::unauthorized("an Authorization: Bearer <token> header is required"))?;
    require_admin(caller, what)
}

/// The API routes, plus `ui` (the web UI's pages, which then own `/`).
pub fn router(state: AppState, ui: Option<Router<AppState>>) -> Router {
    let protected = Router::new()
        .route("/v1/blueprints", get(blueprints::list).post(blueprints::create))
        .route(
            "/v1/blueprints/{bp}",
            get(blueprints::get_one).put(blueprints::replace).patch(blueprints::patch).delete(blueprints::delete),
        )
        .route("/v1/blueprints/{bp}/entities-count", get(entities::count))
        .route("/v1/blueprints/{bp}/permissions", get(blueprints::get_permissions).patch(blueprints::patch_permissions))
        .route("/v1/blueprints/{bp}/all-entities", axum::routing::delete(entities::delete_all))
        .route("/v1/blueprints/{bp}/entities", get(entities::list).post(entities::create))
        .route(
            "/v1/blueprints/{bp}/entities/bulk",
            post(entities::bulk_upsert)
                .get(entities::get_one)
                .put(entities::replace)
                .patch(entities::patch)
                .delete(entities::delete),
        )
        .route(
            "/v1/blueprints/{bp}/entities/{id}",
            get(entities::get_one).put(entities::replace).patch(entities::patch).delete(entities::delete),
        )
        .route("/v1/blueprints/{bp}/bulk/entities/delete", post(entities::bulk_delete))
        .route(
            "/v1/blueprints/{bp}/entities/search",
            post(search::search_blueprint)
                .get(entities::get_one)
                .put(entities::replace)
                .patch(entities::patch)
                .delete(entities::delete),
        )
        .route("/v1/entities/search", post(search::search_all))
        .route("/v1/entities/aggregate", post(search::aggregate))
        .route("/v1/migrations/{id}", get(system::migration))
        .merge(apps::router())
        .merge(teams::router())
        .merge(users::router())
        .merge(pages::router())
        .merge(scorecards::router())
        .merge(deployments::router())
        .merge(subscriptions::router())
        .merge(actions::router())
        .merge(runs::router())
        .merge(secrets::router())
        .merge(webhooks::router())
        .merge(integrations::router())
        .merge(webhook_templates::router())
        .merge(backstage_catalog::router())
        .route(
            "/v1/blueprints/entities/datasource-entities",
            post(integrations::datasource_entities)
                .get(entities::get_one)
                .put(entities::replace)
                .patch(entities::patch)
                .delete(entities::delete),
        )
        .route("/v1/organization", get(apps::organization))
        .route("/v1/audit-log", get(audit::audit_log))
        .route("/v1/events", get(events::events))
        .route("/v1/blueprints/{bp}/entities/{id}/history", get(history::history))
        .route("/v1/entities/properties-history", post(history::properties_history))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), record_refusals))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::require_auth));
    let root: Router<AppState> = match ui {
        Some(ui) => ui,
        None => Router::new().route("/", get(system::root)),
    };
    Router::new()
        .route("/v1/auth/access_token", post(token::access_token))
        .route("/v1/users/accept-invite", post(users::accept_invite))
        .route("/ingest/{webhookKey}", post(webhooks::ingest))
        .merge(protected)
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi_json))
        .route("/docs", get(system::docs))
        .route("/docs/redoc.standalone.js", get(system::redoc_js))
        .merge(root)
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .with_state(state)
}

/// Runs a definition object's command for `caller` and answers Port's envelope: `{ok, <field>: definition}`
/// with 201 for a creation, `{ok}` for a delete. The routes of every definition kind answer through here.
pub async fn write_definition(
    app: &AppState,
    caller: &crate::auth::Caller,
    command: berth_engine::Command,
    field: &'static str,
) -> crate::error::ApiResult<Response> {
    write_definition_shown(app, caller, command, field, berth_model::Definition::view).await
}

/// [`write_definition`], the definition shown by `show` (a kind whose answer adds what the server computes,
/// such as a webhook's ingest URL).
pub async fn write_definition_shown(
    app: &AppState,
    caller: &crate::auth::Caller,
    command: berth_engine::Command,
    field: &'static str,
    show: impl Fn(&berth_model::Definition) -> serde_json::Value,
) -> crate::error::ApiResult<Response> {
    let meta = blueprints::meta(caller, &axum::http::HeaderMap::new(), None);
    let (outcome, seq) = app.pipeline.write_one(meta, command).await?;
    match outcome? {
        berth_engine::Outcome::Definition { definition, created } => {
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok(reply(status, serde_json::json!({"ok": true, field: show(&definition)}), Some(seq)))
        }
        _ => Ok(reply(StatusCode::OK, serde_json::json!({"ok": true}), Some(seq))),
    }
}

/// The stored definition of `kind` named `id`, or a 404 naming it.
pub(super) fn existing_definition(
    app: &AppState,
    kind: berth_model::DefinitionKind,
    id: &str,
) -> crate::error::ApiResult<std::sync::Arc<berth_model::Definition>> {
    app.pipeline
        .view()
        .definition(kind, id)
        .cloned()
        .ok_or_else(|| crate::error::ApiError::not_found(format!("{} `{id}` was not found", kind.as_str())))
}

/// A create's body with its `identifier` taken out (a definition keeps it beside the body); 422 without one.
pub(super) fn take_identifier(body: &mut serde_json::Value) -> crate::error::ApiResult<String> {
    let id = body
        .get("identifier")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| crate::error::ApiError::unprocessable("`identifier` is required"))?
        .to_string();
    if let Some(map) = body.as_object_mut() {
        map.remove("identifier");
    }
    Ok(id)
}

/// This server's address as the caller reached it (`Host`, and `X-Forwarded-Proto` behind a proxy), for
/// the URLs an answer gives (a webhook's ingest URL, an integration's report URLs).
pub fn public_base(headers: &axum::http::HeaderMap) -> String {
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
    format!("{scheme}://{host}")
}

/// A success answer in Port's envelope, with the sequence number a write reached in `X-Berth-Seq`.
pub fn reply(status: StatusCode, body: impl serde::Serialize, seq: Option<u64>) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seq) = seq {
        if let Ok(v) = HeaderValue::from_str(&seq.to_string()) {
            response.headers_mut().insert("x-berth-seq", v);
        }
    }
    response
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Store(inner) => ApiError::unavailable(format!("the write was not applied: {inner}")),
            PipelineError::Stopped => ApiError::unavailable("the server is shutting down; the write was not applied"),
            PipelineError::Unknown(m) => {
                let mut e = ApiError::new(
                    berth_model::ErrorCode::OutcomeUnknown,
                    format!(
                        "the store did not confirm the write, which may or may not have been applied: read it back before retrying ({m})"
                    ),
                );
                e.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
                e
            }
            PipelineError::Replay(m) => ApiError::internal(m),
        }
    }
}
