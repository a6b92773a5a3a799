//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at `/openapi.json`.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    actions, apps, audit, backstage_catalog, blueprints, deployments, entities, events, history, integrations, pages,
    runs, scorecards, search, secrets, subscriptions, system, teams, token, users, webhook_templates, webhooks,
};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
            );
        }
    }
}

/// `X-Berth-Min-Seq` is accepted by every route (a middleware, not a handler, reads it).
struct MinSeqHeader;

impl Modify for MinSeqHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{Required, ResponseBuilder};
        let header = ParameterBuilder::new()
            .name("X-Berth-Min-Seq")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Wait until this replica has applied this log sequence number (the `X-Berth-Seq` of an earlier \
                 write, possibly made through another replica) before answering; 503 if it has not within the \
                 server's `--min-seq-wait-ms`, 400 if it is not a non-negative integer.",
            ))
            .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).build()))
            .build();
        let unavailable = ResponseBuilder::new()
            .description("The store is unavailable, or `X-Berth-Min-Seq` was not reached in time")
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
            {
                op.parameters.get_or_insert_with(Vec::new).push(header.clone().into());
                op.responses.responses.entry("503".into()).or_insert_with(|| unavailable.clone().into());
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth API", description = "Berth's REST API. Compatible with Port's public v1 API: every answer carries `ok`, errors are `{ok: false, error, message}`, every response has an `X-Trace-Id` header, and every write answers the sequence number it reached in `X-Berth-Seq`. With several replicas on one store, send that number back as `X-Berth-Min-Seq` to read your own write on any replica."),
    paths(
        token::access_token,
        blueprints::list, blueprints::create, blueprints::get_one, blueprints::replace, blueprints::patch, blueprints::delete, blueprints::get_permissions, blueprints::patch_permissions,
        entities::create, entities::get_one, entities::list, entities::replace, entities::patch, entities::delete,
        entities::bulk_upsert, entities::bulk_delete, entities::delete_all, entities::count,
        search::search_all, search::search_blueprint, search::aggregate,
        system::migration, system::healthz, system::readyz, system::metrics,
        apps::create, apps::list, apps::get_one, apps::update, apps::rotate_secret, apps::delete, apps::organization, audit::audit_log, events::events,
        history::history, history::properties_history,
        teams::list, teams::create, teams::get_one, teams::replace, teams::patch, teams::delete,
        users::list, users::get_one, users::invite, users::update, users::delete, users::accept_invite,
        pages::list, pages::get_one, pages::create, pages::replace, pages::delete, pages::patch_widget, pages::delete_widget, pages::get_permissions, pages::patch_permissions,
        scorecards::list_all, scorecards::list, scorecards::get_one, scorecards::history, scorecards::create, scorecards::replace_all, scorecards::replace, scorecards::patch, scorecards::delete,
        deployments::report_deployment, deployments::report_incident, deployments::matrix, deployments::dora, deployments::timeline,
        actions::list, actions::create, actions::get_one, actions::replace, actions::delete, actions::list_of_blueprint, actions::create_in_blueprint, actions::get_in_blueprint, actions::replace_in_blueprint, actions::delete_in_blueprint,
        runs::create, runs::list, runs::get_one, runs::update, runs::add_log, runs::logs, runs::approve, runs::approvers, runs::get_permissions, runs::patch_permissions, runs::signing_secret,
        secrets::list, secrets::create, secrets::get_one, secrets::update, secrets::delete,
        webhooks::list, webhooks::metadata, webhooks::create, webhooks::get_one, webhooks::replace, webhooks::patch, webhooks::delete, webhooks::events, webhooks::retry, webhooks::ingest, webhook_templates::list, webhook_templates::get_one, webhook_templates::install,
        backstage_catalog::entities, backstage_catalog::by_query, backstage_catalog::by_name, backstage_catalog::ancestry, backstage_catalog::rules, backstage_catalog::by_uid, backstage_catalog::by_refs, backstage_catalog::facets,
        integrations::kafka_credentials, integrations::list, integrations::metadata, integrations::provision_enabled, integrations::create, integrations::get_one, integrations::change, integrations::delete, integrations::set_config, integrations::set_resync_state, integrations::resync_request, integrations::request_resync, integrations::add_logs, integrations::logs, integrations::add_sync_metrics, integrations::add_kind_metrics, integrations::heartbeat, integrations::sync_metrics, integrations::syncs_metadata, integrations::add_examples, integrations::examples, integrations::datasource_entities,
        subscriptions::list, subscriptions::create, subscriptions::get_one, subscriptions::replace, subscriptions::delete, subscriptions::status, subscriptions::rotate_secret, subscriptions::replay, subscriptions::dead_letters, subscriptions::retry_dead_letters, subscriptions::drop_dead_letters, subscriptions::changelog_destination,
    ),
    components(schemas(berth_model::Team, berth_model::Blueprint, berth_model::Entity, berth_model::Relation, berth_model::blueprint::BlueprintSchema)),
    modifiers(&BearerAuth, &MinSeqHeader),
    tags((name = "Authentication"), (name = "Blueprints"), (name = "Entities"), (name = "Search"), (name = "Apps"), (name = "Teams"), (name = "Users"), (name = "Pages"), (name = "Scorecards"), (name = "Deployments"), (name = "Subscriptions"), (name = "Actions"), (name = "Action Runs"), (name = "Organization"), (name = "Webhooks"), (name = "Integrations"), (name = "Backstage"), (name = "Audit"), (name = "Operations"))
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".into()))
}
