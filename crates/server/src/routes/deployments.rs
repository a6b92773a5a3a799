//! Berth extensions for what is deployed where: `POST /v1/deployments` and `POST /v1/incidents` (what a
//! pipeline or `berth report` calls), and `GET /v1/deployments/matrix` (services × environments).

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use berth_catalog::deployments::{self, MatrixFilter, ReportError, Reported};
use berth_model::deployment::{DeploymentReport, IncidentReport};
use serde_json::{Value, json};

use super::blueprints::meta;
use super::render::{self, Projection};
use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Params};

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/deployments", post(report_deployment))
        .route("/v1/deployments/matrix", get(matrix))
        .route("/v1/incidents", post(report_incident))
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Domain(e) => e.into(),
            ReportError::Pipeline(e) => e.into(),
        }
    }
}

/// The answer to a report: the entity as a read shows it, its page in the portal, what was left out.
fn answer(blueprint: &str, r: Reported) -> Response {
    let status = if r.created { StatusCode::CREATED } else { StatusCode::OK };
    // Identifiers keep their letters, digits and `@_.+:=-` readable; anything else in a path segment is encoded.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'@')
        .remove(b'+')
        .remove(b':')
        .remove(b'=');
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string();
    let path = format!("/entities/{}/{}", encode(blueprint), encode(&r.entity.identifier));
    let body = json!({"ok": true, "entity": render::entity(&r.entity, &Projection::default()), "url": path,
        "ignored": r.ignored, "modelCreated": r.model_created});
    reply(status, body, Some(r.seq))
}

#[utoipa::path(post, path = "/v1/deployments", tag = "Deployments", summary = "Report a deployment (Berth extension)",
    description = "What a pipeline calls when it deploys (or `berth report deployment`). Body: `{service, environment, version, status?, commit?, commitTime?, url?, startedAt?, finishedAt?, actor?, summary?, identifier?}`; `status` is `in_progress`, `success` (the default), `failure` or `rolled_back` (CI words like `succeeded`, `failed`, `running` are read too); times are ISO 8601. The first report creates the ready model (`service`, `environment`, `deployment`, `incident` blueprints) where absent, and the service and environment entities when they do not exist. The deployment's identifier is `identifier`, else `service-environment-version` with a hash of `url` (so a pipeline's `in_progress` then `success` reports are one deployment, merged); a finished status is not taken back by a late `in_progress`. An existing `deployment` blueprint is mapped onto, never changed: fields it does not define are left out and listed in `ignored`. Answers `{ok, entity, url (its page in the portal), ignored, modelCreated}`.",
    security(("bearer" = [])),
    request_body(content = Object, description = "The report"),
    responses((status = 201, description = "A new deployment"), (status = 200, description = "A deployment reported before, updated"),
        (status = 400, description = "Not an object, or an unknown field"), (status = 403, description = "The caller may not write deployments (or create the model)"),
        (status = 422, description = "A bad field (named), or an existing blueprint without a relation to `service` / `environment`")))]
pub async fn report_deployment(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let report = DeploymentReport::parse(&body)?;
    let reported = deployments::report_deployment(&app.pipeline, meta(&caller, &headers, None), &report).await?;
    Ok(answer(berth_model::deployment::DEPLOYMENT, reported))
}

#[utoipa::path(post, path = "/v1/incidents", tag = "Deployments", summary = "Report an incident (Berth extension)",
    description = "Body: `{identifier, service, environment, title?, severity? (critical, high, medium, low), openedAt?, resolvedAt?, url?}`. Written into the `incident` blueprint of the ready model (created where absent), merged into an earlier report of the same identifier (report it opened, then resolved).",
    security(("bearer" = [])),
    request_body(content = Object, description = "The report"),
    responses((status = 201, description = "A new incident"), (status = 200, description = "Updated"),
        (status = 400, description = "Not an object, or an unknown field"), (status = 422, description = "A bad field (named)")))]
pub async fn report_incident(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let report = IncidentReport::parse(&body)?;
    let reported = deployments::report_incident(&app.pipeline, meta(&caller, &headers, None), &report).await?;
    Ok(answer(berth_model::deployment::INCIDENT, reported))
}

#[utoipa::path(get, path = "/v1/deployments/matrix", tag = "Deployments", summary = "What runs where (Berth extension)",
    description = "For every service the caller may read (rows) and environment (columns): the version running now (the latest successful deployment, by `finishedAt`, else `startedAt`), since when and by whom; `drift` when a service's environments run different versions; `stale` when the version was deployed more than `stale_days` ago.",
    security(("bearer" = [])),
    params(("team" = Option<String>, Query, description = "Services of this team"),
        ("system" = Option<String>, Query, description = "Services whose `system` relation names it"),
        ("domain" = Option<String>, Query, description = "Services whose system's `domain` relation names it"),
        ("stale_days" = Option<u32>, Query, description = "Older than this many days is stale (default 30)")),
    responses((status = 200, description = "`{ok, environments: [id], services: [{service, title, drift, environments: {env: {deployment, version, since, by, stale}}}]}`"),
        (status = 400, description = "A bad `stale_days`")))]
pub async fn matrix(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> ApiResult<Response> {
    let stale_days = match q.get("stale_days") {
        None => 30,
        Some(d) => d.parse::<u32>().ok().filter(|d| (1..=3650).contains(d)).ok_or_else(|| {
            ApiError::bad_request(format!("`stale_days` must be a whole number from 1 to 3650, got {d:?}"))
        })?,
    };
    let filter = MatrixFilter {
        team: q.get("team").map(str::to_string),
        system: q.get("system").map(str::to_string),
        domain: q.get("domain").map(str::to_string),
        stale_days: Some(stale_days),
    };
    let view = app.pipeline.view();
    let body = crate::searching::run(&app, move || {
        let scoped = crate::access::scoped(&view, &caller);
        let m = deployments::matrix(&scoped, &filter, crate::now());
        let mut body = deployments::matrix_json(&m);
        body["ok"] = json!(true);
        Ok(body)
    })
    .await?;
    Ok(reply(StatusCode::OK, body, None))
}
