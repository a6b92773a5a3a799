//! Berth's pure data model: the types every other crate speaks, and their validation.
//!
//! Nothing in this crate does I/O, spawns tasks or reads the clock: callers pass times in.
//! - [`ids`]: identifier and title rules (Port's patterns and lengths).
//! - [`timestamp`]: the millisecond UTC timestamp used on every object and event.
//! - [`schema`]: a blueprint property definition compiled into a validator.
//! - [`blueprint`]: blueprint definitions and their validation.
//! - [`entity`]: entities and the shapes clients send to write them; [`fields`]: an entity's properties and
//!   relations as it is kept (compact, names shared).
//! - [`event`]: the change-log event, the unit of durability.
//! - [`definition`]: definition objects (pages, and the scorecards, actions, webhooks... to come): one
//!   change kind for every "JSON definition with an identifier, written by Admins".
//! - [`deployment`]: deployment and incident reports, their validation, and the ready model they create.
//! - [`credential`]: machine credentials (secrets are stored only as hashes).
//! - [`user`]: people who sign in (passwords are stored only as Argon2id hashes); [`team`]: teams.
//! - [`query`]: the search rules language, parsed into a typed AST; [`query_context`]: contextual values
//!   (`{"context": "user" | "userTeams"}`) resolved for the caller before parsing.
//! - [`permissions`]: who may read and write a blueprint's entities, and how entities are owned.
//! - [`error`]: [`DomainError`], every way a request can be refused.
//! - [`action`]: self-service actions and automations; [`action_permissions`]: who may run and
//!   approve them; [`run`]: their runs, logs and approvals; [`secret`]: organisation secrets.
//! - [`limits`]: bounds on what a write may put in the log (nesting depth, metadata sizes).
//! - [`webhook`]: inbound webhooks (an ingest URL and jq mappings into entity writes).
//! - [`public`]: the public, versioned form of an event (no secrets): what the feed and the audit log show.

pub mod action;
pub mod action_permissions;
pub mod backstage;
pub mod blueprint;
pub mod credential;
pub mod date_preset;
pub mod definition;
pub mod deployment;
pub mod entity;
pub mod error;
pub mod event;
pub mod fields;
pub mod ids;
pub mod integration;
pub mod limits;
pub mod permissions;
pub mod public;
pub mod query;
pub mod query_context;
pub mod run;
pub mod schema;
pub mod scorecard;
pub mod secret;
pub mod subscription;
pub mod team;
pub mod timestamp;
pub mod user;
pub mod webhook;
pub mod webhook_templates;

pub use blueprint::{Blueprint, Relation};
pub use credential::Credential;
pub use definition::{Definition, DefinitionKind};
pub use entity::{Entity, EntityBody, EntityInput};
pub use error::{DomainError, ErrorCode};
pub use event::{Change, Event, Origin, Previous};
pub use fields::Fields;
pub use permissions::{BlueprintPermissions, Grant, Ownership};
pub use team::Team;
pub use timestamp::Timestamp;
pub use user::{SsoIdentity, User, UserStatus};
