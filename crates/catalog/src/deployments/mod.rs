//! What is deployed where: reports of deployments and incidents written into the catalog, and the answers
//! read from them.
//!
//! - [`report`]: a deployment or incident report written into the ready model (created on first use) or
//!   mapped onto existing blueprints.
//! - [`index`]: the deployments and incidents kept in a compact form, per service × environment and by
//!   time, caught up with each published state by the changes since (so an answer reads a few thousand
//!   cells or one period, not a million deployments); [`Kept`] holds one per process.
//! - [`matrix`]: what runs in every environment of every service, now or at a past state.
//! - [`dora`]: DORA's four keys over a period, with their bands and weekly trends.
//! - [`timeline`]: a service's deployments, newest first.
//!
//! Every answer shows only what its [`Reader`] may read.

pub mod dora;
pub mod index;
pub mod matrix;
pub mod report;
pub mod timeline;

use berth_engine::scoped::Scoped;
use berth_model::{Entity, Timestamp};
use serde_json::Value;

pub use dora::{Dora, DoraFilter, Week, dora, dora_json};
pub use index::{Index, Kept};
pub use matrix::{Cell, Matrix, MatrixFilter, Row, matrix, matrix_json, running};
pub use report::{ReportError, Reported, report_deployment, report_incident};
pub use timeline::{Deploy, timeline, timeline_json};

/// Who reads an answer: which entities it may see.
pub trait Reader {
    fn can_read(&self, entity: &Entity) -> bool;
    /// It may read every entity of `blueprint` (so an answer need not look each one up).
    fn reads_all(&self, blueprint: &str) -> bool;
}

impl Reader for Scoped<'_> {
    fn can_read(&self, entity: &Entity) -> bool {
        Scoped::can_read(self, entity)
    }
    fn reads_all(&self, blueprint: &str) -> bool {
        Scoped::reads_all(self, blueprint)
    }
}

/// A reader who may read everything (benchmarks, the server's own reads).
pub struct Everything;

impl Reader for Everything {
    fn can_read(&self, _: &Entity) -> bool {
        true
    }
    fn reads_all(&self, _: &str) -> bool {
        true
    }
}

/// When a deployment took effect: `finishedAt` (or `deployedAt`, a common name for it), else `startedAt`,
/// else when it was last written.
pub(crate) fn deployed_at(e: &Entity) -> Timestamp {
    let at = |k: &str| time_of(e, k);
    at("finishedAt").or_else(|| at("deployedAt")).or_else(|| at("startedAt")).unwrap_or(e.updated_at)
}

/// An entity's date-time property.
pub(crate) fn time_of(e: &Entity, key: &str) -> Option<Timestamp> {
    e.properties.get(key).and_then(Value::as_str).and_then(Timestamp::parse)
}
