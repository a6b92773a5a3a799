//! A service's deployments, newest first, read through the service's reverse index.

use berth_engine::State;
use berth_model::deployment;
use berth_model::{Entity, Timestamp};
use serde_json::{Value, json};

use super::{Reader, deployed_at};

/// One deployment of a service's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Deploy {
    pub deployment: String,
    pub environment: Option<String>,
    pub version: Option<String>,
    /// As written (the blueprint's own spelling).
    pub status: Option<String>,
    /// When it took effect (finished, else started, else written).
    pub at: Timestamp,
    pub actor: Option<String>,
    pub commit: Option<String>,
    pub url: Option<String>,
}

/// A service's deployments `reader` may read, newest first (every status), optionally in one environment,
/// at most `limit`.
pub fn timeline(
    state: &State,
    reader: &dyn Reader,
    service: &str,
    environment: Option<&str>,
    limit: usize,
) -> Vec<Deploy> {
    let Some((srel, erel)) = super::report::deployment_relations(state) else { return Vec::new() };
    let mut out: Vec<(Timestamp, &Entity)> = state
        .sources(deployment::SERVICE, service, deployment::DEPLOYMENT, srel, None)
        .filter_map(|id| state.entity(deployment::DEPLOYMENT, id))
        .filter(|d| reader.can_read(d))
        .filter(|d| environment.is_none_or(|env| d.relations.get(erel).and_then(Value::as_str) == Some(env)))
        .map(|d| (deployed_at(d), &**d))
        .collect();
    out.sort_by(|a, b| (b.0, &*b.1.identifier).cmp(&(a.0, &*a.1.identifier)));
    out.into_iter()
        .take(limit)
        .map(|(at, d)| {
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
            let p = |k: &str| text(d.properties.get(k));
            Deploy {
                deployment: d.identifier.to_string(),
                environment: text(d.relations.get(erel)),
                version: p("version"),
                status: p("status"),
                at,
                actor: p("actor"),
                commit: p("commitSha"),
                url: p("runUrl"),
            }
        })
        .collect()
}

/// A timeline as JSON (the API's shape).
pub fn timeline_json(list: &[Deploy]) -> Value {
    list.iter()
        .map(|d| {
            json!({"deployment": d.deployment, "environment": d.environment, "version": d.version,
                "status": d.status, "at": d.at.to_rfc3339(), "actor": d.actor, "commit": d.commit, "url": d.url})
        })
        .collect()
}
