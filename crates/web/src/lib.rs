//! Berth's web UI: server-rendered pages (askama templates, checked at compile time) with a little htmx,
//! readable without JavaScript. Every asset is compiled into the binary; nothing loads from elsewhere.
//!
//! - [`session`]: sign-in, sign-out, invitations, the [`session::Session`] each page extracts, CSRF.
//! - [`home`]: the home page and the global search. [`table`]: a blueprint's entity table (filters, sort,
//!   pages, live count). [`entity`]: an entity's page, history and deletion. [`entity_form`]: the schema-made
//!   create/edit form. [`graph`]: the relation graph as SVG. [`blueprints`]: a blueprint's page and the
//!   builder. [`audit`]: the audit log. [`actions`]: self-service actions (buttons, forms made from their
//!   inputs, the builder); [`runs`]: runs, their live page and approvals. `integrations`: Ocean
//!   integrations and inbound webhooks (their resyncs, logs, requests; resync now, process again).
//! - [`fmt`]: values to safe HTML; [`page`]: layout, rendering and [`page::UiError`]; [`form`]: form bodies;
//!   [`assets`]: the embedded CSS, JS and vendored htmx.
//!
//! Pages read the catalog's current view and write through the same engine commands as the API (origin `UI`),
//! so validation, the audit log and history are the API's.

pub mod actions;
pub mod admin;
pub mod assets;
pub mod audit;
pub mod blueprints;
mod dashboards;
mod deployments;
pub mod entity;
pub mod entity_form;
pub mod fmt;
pub mod form;
pub mod graph;
pub mod guide;
pub mod home;
mod integrations;
pub mod page;
pub mod runs;
mod scorecards;
pub mod session;
mod sso;
mod subscriptions;
pub mod table;

use axum::Router;
use axum::routing::{get, post};
use berth_server::AppState;

/// The UI's routes, to hand to [`berth_server::Server::with_ui`].
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home::home))
        .route("/login", get(session::login_form).post(session::login))
        .route("/login/sso", get(sso::begin))
        .route("/login/sso/callback", get(sso::callback))
        .route("/guide", get(guide::index))
        .route("/guide/{page}", get(guide::show))
        .route("/logout", post(session::logout))
        .route("/invite", get(session::invite_form).post(session::accept_invite))
        .route("/search", get(home::search))
        .route("/audit", get(audit::page))
        .route("/deployments", get(deployments::page))
        .route("/subscriptions", get(subscriptions::list))
        .route("/subscriptions/{id}", get(subscriptions::page))
        .route("/subscriptions/{id}/dead-letters/retry", post(subscriptions::retry))
        .route("/subscriptions/{id}/dead-letters/drop", post(subscriptions::drop_all))
        .route("/admin/apps", get(admin::apps).post(admin::create_app))
        .route("/admin/apps/{id}/rotate", post(admin::rotate_app))
        .route("/admin/apps/{id}/delete", post(admin::delete_app))
        .route("/admin/users", get(admin::users).post(admin::invite_user))
        .route("/admin/users/{email}", get(admin::user).post(admin::save_user))
        .route("/admin/users/{email}/status", post(admin::user_status))
        .route("/admin/users/{email}/delete", post(admin::delete_user))
        .route("/admin/teams", get(admin::teams).post(admin::create_team))
        .route("/admin/settings", get(admin::settings))
        .route("/admin/settings/secrets", post(admin::save_secret))
        .route("/admin/settings/secrets/{name}/delete", post(admin::delete_secret))
        .route("/admin/teams/{name}/delete", post(admin::delete_team))
        .route("/integrations", get(integrations::list))
        .route("/integrations/{id}", get(integrations::integration))
        .route("/integrations/{id}/resync", post(integrations::resync))
        .route("/webhooks/{id}", get(integrations::webhook))
        .route("/webhooks/{id}/events/{event}/retry", post(integrations::retry_event))
        .route("/actions", get(actions::list))
        .route("/actions/new", get(actions::builder).post(actions::save))
        .route("/actions/{id}/edit", get(actions::builder).post(actions::save))
        .route("/actions/{id}/run", get(actions::form).post(actions::run))
        .route("/actions/{id}/form", post(actions::refresh))
        .route("/actions/{id}/pick/{input}", get(actions::pick))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::page))
        .route("/runs/{id}/live", get(runs::events))
        .route("/runs/{id}/approval", post(runs::approve))
        .route("/pages", get(dashboards::list))
        .route("/pages/{id}", get(dashboards::page))
        .route("/scorecards", get(scorecards::list).post(scorecards::create))
        .route("/scorecards/{bp}/{id}", get(scorecards::page))
        .route("/scorecards/{bp}/{id}/rules", post(scorecards::add_rule))
        .route("/blueprints", post(blueprints::create))
        .route("/blueprints/new", get(blueprints::new_form))
        .route("/blueprints/{bp}", get(blueprints::page))
        .route("/blueprints/{bp}/permissions", get(admin::permissions).post(admin::save_permissions))
        .route("/blueprints/{bp}/properties", post(blueprints::add_property))
        .route("/blueprints/{bp}/properties/{key}/delete", post(blueprints::remove_property))
        .route("/blueprints/{bp}/relations", post(blueprints::add_relation))
        .route("/blueprints/{bp}/derived", post(blueprints::add_derived))
        .route("/blueprints/{bp}/derived/{key}/delete", post(blueprints::remove_derived))
        .route("/blueprints/{bp}/entities", get(table::page))
        .route("/blueprints/{bp}/entities/new", get(entity_form::new_form).post(entity_form::create))
        .route("/blueprints/{bp}/pick", get(entity_form::pick))
        .route("/entities/{bp}/{id}", get(entity::page))
        .route("/entities/{bp}/{id}/edit", get(entity_form::edit_form).post(entity_form::update))
        .route("/entities/{bp}/{id}/delete", get(entity::confirm_delete).post(entity::delete))
        .route("/entities/{bp}/{id}/graph", get(graph::page))
        .route(assets::HTMX_PATH, get(assets::htmx))
        .route(assets::CSS_PATH, get(assets::css))
        .route(assets::JS_PATH, get(assets::js))
}
