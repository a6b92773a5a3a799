//! Berth's engine: a deterministic state machine over the change log.
//!
//! - [`State`] is the whole catalog in memory, built only by [`State::apply`]ing events. It uses persistent
//!   maps (`imbl`), so a clone is O(1): the server publishes clones to readers while it keeps writing.
//! - [`execute`] validates a [`Command`] against a state and returns the [`Change`]s it makes (or a
//!   [`DomainError`]) without touching the state. The caller numbers the changes into events, makes them
//!   durable, then applies them.
//! - [`State::digest`] proves two states equal (migrations, backups).
//! - [`codec`]: the stored event format (versioned), the one encoder and decoder of the log's bytes.
//! - [`search`] answers rules-language queries against a state.
//! - [`definitions`]: definition objects (pages, ...): one change kind, one module per kind.
//! - [`runs`]: action runs (create, update, log, approve) and who may run and read them.
//! - [`access`] is the permission layer: [`execute`] authorizes every change a command makes for the
//!   caller in its [`WriteMeta`], and [`access::read_scope`] says what a caller may read; every read goes
//!   through a [`scoped::Scoped`] view, which compiles those scopes once per request.
//! - Given the same events, every replica builds the same state: no clock, no randomness, no I/O here.
//!   Some work is split over two threads ([`parallel`]); results never depend on how it was split.

pub mod access;
pub mod aggregate;
mod blueprints;
pub mod codec;
mod command;
pub mod definitions;
pub mod derived;
mod digest;
mod entities;
pub mod graph;
pub mod inbound;
pub mod index;
mod index_work;
mod integration_records;
pub mod levels;
pub mod parallel;
pub mod runs;
pub mod scoped;
pub mod search;
mod state;
mod users;
mod webhook_events;
mod work_count;

pub use codec::{decode_event, encode_event};
pub use command::{Command, Outcome, WriteMeta, WriteMode, execute, execute_and_apply, resolve_batch_searches};
pub use digest::{BlueprintDigest, CatalogDigest, LogDigest};
pub use entities::resolve_searches;
pub use state::{BlueprintEntry, Edge, EntityChange, RelationOf, SNAPSHOT_FORMAT, State, StateError, Versions};
pub use users::{SsoSignIn, UserChanges};

pub use berth_model::{Change, DomainError, Event};
