//! Refused attempts stopped before they reached the pipeline (an Admin check in a route layer or a page):
//! recorded in the log like the refusals the pipeline records itself, so the audit log's `FAILURE` records
//! show every denied write wherever it was stopped.

use std::sync::Arc;

use berth_engine::{Command, WriteMeta};
use berth_model::ErrorCode;

use crate::Pipeline;

/// What a refused request tried to do.
pub struct Refusal {
    /// `entity`, `blueprint`, `permissions`, `team`, `user`, `app`, or a definition kind (`page`, ...).
    pub resource: String,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub action: &'static str,
    /// What the request named (its path, cut to a few hundred bytes by the engine).
    pub identifier: String,
    pub code: ErrorCode,
    pub message: String,
}

/// Writes the refusal to the log in the background: the caller's answer does not wait for it, and a
/// failing store does not change that answer.
pub fn record(pipeline: &Arc<Pipeline>, meta: WriteMeta, refusal: Refusal) {
    let command = Command::Refuse {
        resource: refusal.resource,
        action: refusal.action.into(),
        blueprint: None,
        identifier: Some(refusal.identifier),
        code: refusal.code,
        message: refusal.message,
    };
    let pipeline = Arc::clone(pipeline);
    tokio::spawn(async move {
        let _ = pipeline.write_one(meta, command).await;
    });
}
