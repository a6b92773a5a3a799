//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at `/openapi.json`.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{blueprints, entities, search, system, token};

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

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth API", description = "Berth's REST API. Compatible with Port's public v1 API: every answer carries `ok`, errors are `{ok: false, error, message}`, every response has an `X-Trace-Id` header, and every write answers the sequence number it reached in `X-Berth-Seq`."),
    paths(
        token::access_token,
        blueprints::list, blueprints::create, blueprints::get_one, blueprints::replace, blueprints::patch, blueprints::delete,
        entities::create, entities::get_one, entities::list, entities::replace, entities::patch, entities::delete,
        entities::bulk_upsert, entities::bulk_delete, entities::delete_all, entities::count,
        search::search_all, search::search_blueprint,
        system::migration, system::healthz, system::readyz,
    ),
    components(schemas(berth_model::Blueprint, berth_model::Entity, berth_model::Relation, berth_model::blueprint::BlueprintSchema)),
    modifiers(&BearerAuth),
    tags((name = "Authentication"), (name = "Blueprints"), (name = "Entities"), (name = "Search"), (name = "Operations"))
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".into()))
}
