//! Integration tests: a real server on a real socket over a real SQLite file, driven with an HTTP client.
//! One test binary with a module per area, to keep link time down.

mod access;
mod actions;
mod auth;
mod backstage_catalog;
mod blueprints;
mod bulk;
mod common;
mod deployments;
mod derived;
mod entities;
mod errors;
mod feed;
mod integrations;
mod invocations;
mod layering;
mod lifecycle;
mod metrics;
mod pages;
mod permissions;
mod read_scope;
mod runs;
mod scorecards;
mod search;
mod subscriptions;
mod users;
mod webhook_templates;
mod webhooks;
