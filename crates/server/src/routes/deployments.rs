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
        .route("/v1/deployments/dora", get(dora))
        .route("/v1/deployments/timeline", get(timeline))
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
    description = "For every service the caller may read (rows) and environment (columns): the version running now (the latest successful deployment, by `finishedAt`, else `startedAt`), since when and by whom; `drift` when a service's environments run different versions; `stale` when the version was deployed more than `stale_days` ago. With `at`, what was running then: the catalog replayed from the change log up to that time (exact), shown through the caller's permissions of today.",
    security(("bearer" = [])),
    params(("team" = Option<String>, Query, description = "Services of this team"),
        ("system" = Option<String>, Query, description = "Services whose `system` relation names it"),
        ("domain" = Option<String>, Query, description = "Services whose system's `domain` relation names it"),
        ("stale_days" = Option<u32>, Query, description = "Older than this many days is stale (default 30)"),
        ("at" = Option<String>, Query, description = "A past time (ISO 8601): what was running then")),
    responses((status = 200, description = "`{ok, at?, environments: [id], services: [{service, title, drift, environments: {env: {deployment, version, since, by, stale}}}]}`"),
        (status = 400, description = "A bad `stale_days` or `at`"), (status = 503, description = "The log is too long to replay for `at`, or another replay is running")))]
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
    let at = match q.get("at") {
        None => None,
        Some(t) => Some(time(t, "at")?),
    };
    let past = match at {
        Some(t) => Some(berth_catalog::replay::state_at(&app.pipeline, t).await?),
        None => None,
    };
    let view = app.pipeline.view();
    let pipeline = std::sync::Arc::clone(&app.pipeline);
    let body = crate::searching::run(&app, move || {
        // Today's permissions decide what the caller sees, of the catalog as it is or as it was.
        let scoped = crate::access::scoped(&view, &caller);
        let now = at.unwrap_or_else(crate::now);
        let m = match &past {
            Some(state) => deployments::matrix(&deployments::Index::build(state), state, &scoped, &filter, now),
            None => pipeline
                .deployments()
                .with(&view, |index, state| deployments::matrix(index, state, &scoped, &filter, now)),
        };
        let mut body = deployments::matrix_json(&m);
        body["ok"] = json!(true);
        if let Some(t) = at {
            body["at"] = json!(t.to_rfc3339());
        }
        Ok(body)
    })
    .await?;
    Ok(reply(StatusCode::OK, body, None))
}

/// A time parameter, or a 400 naming it.
fn time(s: &str, name: &str) -> ApiResult<berth_model::Timestamp> {
    berth_model::Timestamp::parse(s)
        .ok_or_else(|| ApiError::bad_request(format!("`{name}` must be an ISO 8601 date-time, got {s:?}")))
}

#[utoipa::path(get, path = "/v1/deployments/dora", tag = "Deployments", summary = "DORA metrics (Berth extension)",
    description = "DORA's four keys for one service, a team's services, or the organisation (neither), in one environment, over the last `days` days: deployment frequency (successful deployments, per day), lead time for changes (median hours from `commitTime` to the deployment), change failure rate (failed or rolled back, or followed within `failure_window_hours` by an incident of the same service and environment, over finished deployments), time to restore (median hours from an incident opened to resolved), each with its DORA band (elite, high, medium, low: frequency ≥ 1/day, ≥ 1/week, ≥ 1/month; lead time < 1 day, < 1 week, < 30 days; failure rate ≤ 5 %, ≤ 10 %, ≤ 15 %; restore < 1 h, < 1 day, < 1 week), and per week for trend charts. Only what the caller may read counts.",
    security(("bearer" = [])),
    params(("service" = Option<String>, Query, description = "One service"), ("team" = Option<String>, Query, description = "The services of a team"),
        ("environment" = Option<String>, Query, description = "The environment measured (default production)"),
        ("days" = Option<u32>, Query, description = "The period: the last 1 to 730 days (default 90)"),
        ("failure_window_hours" = Option<u32>, Query, description = "An incident this soon after a deployment fails it (default 24, at most 720)")),
    responses((status = 200, description = "`{ok, scope, environment, from, to, deploymentFrequency: {deployments, perDay}, leadTimeHours, changeFailureRate: {rate, failedChanges}, timeToRestoreHours: {median, incidents}, bands, weeks: [{start, deployments, finished, failedChanges, leadTimeHours}]}`"),
        (status = 400, description = "A bad parameter")))]
pub async fn dora(State(app): State<AppState>, Extension(caller): Extension<Caller>, q: Params) -> ApiResult<Response> {
    let number = |name: &str, default: u32, max: u32| -> ApiResult<u32> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                ApiError::bad_request(format!("`{name}` must be a whole number from 1 to {max}, got {v:?}"))
            }),
        }
    };
    let days = number("days", 90, 730)?;
    let window = number("failure_window_hours", 24, 720)?;
    let now = crate::now();
    let filter = deployments::DoraFilter {
        service: q.get("service").map(str::to_string),
        team: q.get("team").map(str::to_string),
        environment: q.get("environment").unwrap_or("production").to_string(),
        from: berth_model::Timestamp::from_millis(now.millis() - i64::from(days) * 86_400_000),
        to: berth_model::Timestamp::from_millis(now.millis() + 1),
        failure_window_hours: window,
    };
    let scope = match (&filter.service, &filter.team) {
        (Some(s), _) => json!({"service": s}),
        (None, Some(t)) => json!({"team": t}),
        (None, None) => json!("organization"),
    };
    let view = app.pipeline.view();
    let pipeline = std::sync::Arc::clone(&app.pipeline);
    let body = crate::searching::run(&app, move || {
        let scoped = crate::access::scoped(&view, &caller);
        let d = pipeline.deployments().with(&view, |index, state| deployments::dora(index, state, &scoped, &filter));
        let mut body = deployments::dora_json(&d);
        body["ok"] = json!(true);
        body["scope"] = scope;
        body["environment"] = json!(filter.environment);
        body["from"] = json!(filter.from.to_rfc3339());
        body["to"] = json!(now.to_rfc3339());
        Ok(body)
    })
    .await?;
    Ok(reply(StatusCode::OK, body, None))
}

#[utoipa::path(get, path = "/v1/deployments/timeline", tag = "Deployments", summary = "A service's deployments (Berth extension)",
    description = "A service's deployments the caller may read, newest first (by `finishedAt`, else `startedAt`), every status, optionally in one environment.",
    security(("bearer" = [])),
    params(("service" = String, Query, description = "The service"), ("environment" = Option<String>, Query, description = "One environment"),
        ("limit" = Option<u32>, Query, description = "At most this many (1 to 1000, default 100)")),
    responses((status = 200, description = "`{ok, service, deployments: [{deployment, environment, version, status, at, actor, commit, url}]}`"),
        (status = 400, description = "No `service`, or a bad `limit`")))]
pub async fn timeline(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> ApiResult<Response> {
    let service = q.get("service").ok_or_else(|| ApiError::bad_request("`service` is required"))?.to_string();
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
            ApiError::bad_request(format!("`limit` must be a whole number from 1 to 1000, got {v:?}"))
        })?,
    };
    let environment = q.get("environment").map(str::to_string);
    let view = app.pipeline.view();
    let body = crate::searching::run(&app, move || {
        let scoped = crate::access::scoped(&view, &caller);
        let list = deployments::timeline(&view, &scoped, &service, environment.as_deref(), limit);
        Ok(json!({"ok": true, "service": service, "deployments": deployments::timeline_json(&list)}))
    })
    .await?;
    Ok(reply(StatusCode::OK, body, None))
}
