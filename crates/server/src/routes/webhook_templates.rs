//! Ready-made inbound webhooks (Berth extension; [`berth_model::webhook_templates`]): `GET
//! /v1/webhook-templates` lists them, `GET /v1/webhook-templates/{template}` shows one whole (its mappings,
//! blueprints and sample payloads), and `POST /v1/webhook-templates/{template}/install` (Admins) creates the
//! blueprints it writes into where absent and the webhook, in one batch, after checking that every property
//! and relation its mappings write exists on the blueprints the catalog already has.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use berth_engine::Command;
use berth_engine::definitions::DefinitionWrite;
use berth_model::{DefinitionKind, DomainError, webhook_templates};
use serde::Deserialize;
use serde_json::{Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathParams};

pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/webhook-templates", get(list))
        .route("/v1/webhook-templates/{template}", get(get_one))
        .route("/v1/webhook-templates/{template}/install", post(install))
}

fn template(id: &str) -> ApiResult<Value> {
    webhook_templates::get(id).ok_or_else(|| ApiError::not_found(format!("there is no webhook template `{id}`")))
}

#[utoipa::path(get, path = "/v1/webhook-templates", tag = "Webhooks", summary = "Ready-made inbound webhooks (Berth extension)", security(("bearer" = [])),
    responses((status = 200, description = "`{ok, templates: [{identifier, title, description, events, blueprints, usesDeploymentsModel, samples}]}`")))]
pub async fn list() -> ApiResult<Response> {
    let all: Vec<Value> = webhook_templates::all()
        .into_iter()
        .map(|(id, t)| {
            let names = |field: &str, key: &str| -> Vec<Value> {
                t[field].as_array().into_iter().flatten().map(|x| x[key].clone()).collect()
            };
            json!({"identifier": id, "title": t["title"], "description": t["description"], "events": t["events"],
                "usesDeploymentsModel": t["usesDeploymentsModel"], "blueprints": names("blueprints", "identifier"),
                "samples": names("samples", "name"), "needsBlueprint": webhook_templates::needs_blueprint(&t)})
        })
        .collect();
    Ok(reply(StatusCode::OK, json!({"ok": true, "templates": all}), None))
}

#[utoipa::path(get, path = "/v1/webhook-templates/{template}", tag = "Webhooks", summary = "One ready-made webhook with its sample payloads (Berth extension)", security(("bearer" = [])),
    params(("template" = String, Path, description = "github, gitlab, pagerduty or generic")),
    responses((status = 200, description = "`{ok, template: {title, description, events, usesDeploymentsModel, blueprints, webhook, samples: [{name, headers, body}]}}`"), (status = 404, description = "No such template")))]
pub async fn get_one(path: PathParams) -> ApiResult<Response> {
    let id = path.get("template")?;
    let mut t = template(&id)?;
    t["identifier"] = Value::String(id);
    Ok(reply(StatusCode::OK, json!({"ok": true, "template": t}), None))
}

/// What an install takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// The webhook's identifier (default: the template's).
    pub identifier: Option<String>,
    /// Its title (default: the template's).
    pub title: Option<String>,
    /// The secret the sender signs with (GitHub's webhook secret, GitLab's secret token, PagerDuty's signing
    /// secret). Required.
    pub secret: String,
    /// The generic template's blueprint (it must exist).
    pub blueprint: Option<String>,
}

/// 422 unless every property and relation the mappings write exists on its blueprint (as the catalog has
/// it, or as the template creates it).
fn check_keys(view: &berth_engine::State, template: &Value, webhook: &Value) -> ApiResult<()> {
    let created: Vec<Value> = template["blueprints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .chain(if template["usesDeploymentsModel"] == true { berth_model::deployment::model() } else { Vec::new() })
        .collect();
    let mut missing = Vec::new();
    for (blueprint, properties, relations) in webhook_templates::written_keys(webhook) {
        let (props, rels): (Vec<String>, Vec<String>) = match view.blueprint(&blueprint) {
            Some(b) => (b.def.schema.properties.keys().cloned().collect(), b.def.relations.keys().cloned().collect()),
            None => match created.iter().find(|c| c["identifier"] == blueprint.as_str()) {
                Some(c) => {
                    let keys =
                        |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
                    (keys(&c["schema"]["properties"]), keys(&c["relations"]))
                }
                None => {
                    missing.push(format!("blueprint `{blueprint}`"));
                    continue;
                }
            },
        };
        missing.extend(properties.iter().filter(|p| !props.contains(p)).map(|p| format!("`{blueprint}.{p}`")));
        missing.extend(rels_missing(&blueprint, &relations, &rels));
    }
    missing.dedup();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "the template writes what the catalog's blueprints do not have: {} (add them, or install into a catalog without these blueprints)",
            missing.join(", ")
        )))
    }
}

fn rels_missing(blueprint: &str, wanted: &[String], have: &[String]) -> Vec<String> {
    wanted.iter().filter(|r| !have.contains(r)).map(|r| format!("relation `{blueprint}.{r}`")).collect()
}

#[utoipa::path(post, path = "/v1/webhook-templates/{template}/install", tag = "Webhooks", summary = "Install a ready-made webhook (Admin; Berth extension)", security(("bearer" = [])),
    params(("template" = String, Path, description = "github, gitlab, pagerduty or generic")),
    request_body = Install,
    description = "Creates the blueprints the template writes into where absent (the deployments model for GitHub, GitLab and PagerDuty) and the webhook, sealed secret and all. Refused (422, nothing written) when an existing blueprint lacks a property or relation the mappings write.",
    responses((status = 201, description = "`{ok, integration (the webhook, with its url), createdBlueprints}`"), (status = 403, description = "Not an Admin"), (status = 404, description = "No such template, or the generic template's blueprint does not exist"), (status = 409, description = "The webhook identifier is taken"), (status = 422, description = "No secret, or a blueprint lacks what the mappings write")))]
pub async fn install(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    path: PathParams,
    ApiJson(body): ApiJson<Install>,
) -> ApiResult<Response> {
    super::require_admin(&caller, "install webhooks")?;
    let name = path.get("template")?;
    let t = template(&name)?;
    let id = body.identifier.clone().unwrap_or_else(|| name.clone());
    berth_model::ids::validate_key("webhook", &id).map_err(ApiError::from)?;
    let view = app.pipeline.view();
    if view.definition(DefinitionKind::Webhook, &id).is_some() {
        return Err(DomainError::AlreadyExists { kind: "webhook", id }.into());
    }
    let target = match (&body.blueprint, webhook_templates::needs_blueprint(&t)) {
        (Some(bp), true) => {
            let b = view.blueprint(bp).ok_or_else(|| ApiError::not_found(format!("blueprint `{bp}` was not found")))?;
            let props = b.def.schema.properties.keys().cloned().collect();
            let rels = b.def.relations.keys().cloned().collect();
            Some((bp.as_str(), props, rels))
        }
        (None, true) => return Err(ApiError::unprocessable("`blueprint` is required: the entities' blueprint")),
        (Some(_), false) => {
            return Err(ApiError::unprocessable(format!("the `{name}` template writes into its own blueprints")));
        }
        (None, false) => None,
    };
    let webhook = webhook_templates::webhook_body(&t, &body.secret, body.title.as_deref(), target)?;
    check_keys(&view, &t, &webhook)?;
    let mut blueprints: Vec<Value> =
        if t["usesDeploymentsModel"] == true { berth_model::deployment::model() } else { Vec::new() };
    blueprints.extend(t["blueprints"].as_array().cloned().unwrap_or_default());
    blueprints.retain(|b| b["identifier"].as_str().is_some_and(|bp| view.blueprint(bp).is_none()));
    drop(view);
    let prepared = super::webhooks::prepared(&app, &id, webhook)?;
    let mut commands: Vec<Command> = blueprints.iter().map(|b| Command::CreateBlueprint { body: b.clone() }).collect();
    commands.push(Command::WriteDefinition {
        kind: DefinitionKind::Webhook,
        identifier: id,
        how: DefinitionWrite::Create(prepared),
    });
    let meta = super::blueprints::meta(&caller, &HeaderMap::new(), None);
    let result = app.pipeline.write(meta, commands).await?;
    let mut created = Vec::new();
    let mut outcomes = result.outcomes.into_iter();
    for b in &blueprints {
        match outcomes.next() {
            Some(Ok(_)) => created.push(b["identifier"].clone()),
            // Created meanwhile by someone else: as good.
            Some(Err(DomainError::AlreadyExists { .. })) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ApiError::internal("an install's write lost an answer")),
        }
    }
    match outcomes.next() {
        Some(Ok(berth_engine::Outcome::Definition { definition, .. })) => {
            let view = super::webhooks::view_of(&headers, &definition);
            Ok(reply(
                StatusCode::CREATED,
                json!({"ok": true, "integration": view, "createdBlueprints": created}),
                Some(result.seq),
            ))
        }
        Some(Err(e)) => Err(e.into()),
        _ => Err(ApiError::internal("an install's write answered no webhook")),
    }
}
