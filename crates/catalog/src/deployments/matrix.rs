//! The matrix: what runs in every environment of every service, now (from the kept index) or at a past
//! state (from an index built for it).

use std::collections::{BTreeMap, BTreeSet};

use berth_engine::State;
use berth_model::deployment::{self, Status};
use berth_model::{Entity, Timestamp};
use serde_json::{Map, Value, json};

use super::{Index, Reader, deployed_at};

/// Which services the matrix shows.
#[derive(Debug, Clone, Default)]
pub struct MatrixFilter {
    /// Services owned by this team.
    pub team: Option<String>,
    /// Services whose `system` relation names this system.
    pub system: Option<String>,
    /// Services whose system's `domain` relation names this domain.
    pub domain: Option<String>,
    /// An environment whose running version was deployed more than this many days ago is stale.
    pub stale_days: Option<u32>,
}

/// What runs in one environment of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The deployment running: the latest successful one (by when it finished, else started, else was
    /// written), so a rollback or a failure leaves the one before running, and reports read out of order
    /// land where their times put them.
    pub deployment: String,
    pub version: String,
    pub since: Timestamp,
    pub by: Option<String>,
    /// Deployed more than `stale_days` ago.
    pub stale: bool,
}

/// One service's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub service: String,
    pub title: Option<String>,
    /// Environment → what runs there (absent: never deployed there).
    pub cells: BTreeMap<String, Cell>,
    /// The environments run different versions.
    pub drift: bool,
}

/// Services × environments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matrix {
    /// Every environment the caller may read, in identifier order.
    pub environments: Vec<String>,
    pub rows: Vec<Row>,
}

/// The matrix of `state` (with `index` built or caught up to it) as `reader` may read it: services,
/// environments and deployments it cannot read are left out (a cell whose running deployment it cannot
/// read shows the latest one it can).
pub fn matrix(index: &Index, state: &State, reader: &dyn Reader, filter: &MatrixFilter, now: Timestamp) -> Matrix {
    let readable = |bp: &str, id: &str| state.entity(bp, id).filter(|e| reader.can_read(e));
    let environments = environments(state, reader);
    let in_system = |svc: &Entity, system: &str| svc.relations.get("system").and_then(Value::as_str) == Some(system);
    let in_domain = |svc: &Entity, domain: &str| {
        let sys = svc.relations.get("system").and_then(Value::as_str);
        sys.and_then(|s| readable("system", s))
            .is_some_and(|s| s.relations.get("domain").and_then(Value::as_str) == Some(domain))
    };
    let stale_before = filter.stale_days.map(|d| Timestamp::from_millis(now.millis() - i64::from(d) * 86_400_000));
    let rows = state
        .entities_of(deployment::SERVICE)
        .filter(|e| reader.can_read(e))
        .filter(|svc| {
            !(filter.team.as_ref().is_some_and(|t| !svc.team.contains(t))
                || filter.system.as_ref().is_some_and(|s| !in_system(svc, s))
                || filter.domain.as_ref().is_some_and(|d| !in_domain(svc, d)))
        })
        .map(|svc| {
            let cells = cells(index, state, reader, &svc.identifier, &environments, stale_before);
            let versions: BTreeSet<&str> = cells.values().map(|c| c.version.as_str()).collect();
            Row { service: svc.identifier.to_string(), title: svc.title.clone(), drift: versions.len() > 1, cells }
        })
        .collect();
    Matrix { environments, rows }
}

/// What runs in each environment of one service (the service page's table).
pub fn running(index: &Index, state: &State, reader: &dyn Reader, service: &str) -> BTreeMap<String, Cell> {
    cells(index, state, reader, service, &environments(state, reader), None)
}

/// The environments `reader` may read, in identifier order.
fn environments(state: &State, reader: &dyn Reader) -> Vec<String> {
    state
        .entities_of(deployment::ENVIRONMENT)
        .filter(|e| reader.can_read(e))
        .map(|e| e.identifier.to_string())
        .collect()
}

fn cells(
    index: &Index,
    state: &State,
    reader: &dyn Reader,
    service: &str,
    environments: &[String],
    stale_before: Option<Timestamp>,
) -> BTreeMap<String, Cell> {
    let all = reader.reads_all(deployment::DEPLOYMENT);
    environments
        .iter()
        .filter_map(|env| {
            let running = index
                .running(service, env)
                .and_then(|(at, id)| Some((at, state.entity(deployment::DEPLOYMENT, id)?)))
                .filter(|(_, d)| all || reader.can_read(d));
            let (at, d) = match running {
                Some((at, d)) => (at, &**d),
                // Hidden from this reader (or none): the latest it may read, if any.
                None if !all => latest_readable(state, reader, service, env)?,
                None => return None,
            };
            let cell = Cell {
                deployment: d.identifier.to_string(),
                version: d.properties.get("version").and_then(Value::as_str).unwrap_or_default().to_string(),
                since: at,
                by: d.properties.get("actor").and_then(Value::as_str).map(str::to_string),
                stale: stale_before.is_some_and(|b| at < b),
            };
            Some((env.clone(), cell))
        })
        .collect()
}

/// The latest successful deployment of `service` in `environment` that `reader` may read, through the
/// service's deployments (a reader some deployments are hidden from).
fn latest_readable<'s>(
    state: &'s State,
    reader: &dyn Reader,
    service: &str,
    environment: &str,
) -> Option<(Timestamp, &'s Entity)> {
    let (service_rel, env_rel) = super::report::deployment_relations(state)?;
    state
        .sources(deployment::SERVICE, service, deployment::DEPLOYMENT, service_rel, None)
        .filter_map(|id| state.entity(deployment::DEPLOYMENT, id))
        .filter(|d| d.relations.get(env_rel).and_then(Value::as_str) == Some(environment))
        .filter(|d| d.properties.get("status").and_then(Value::as_str).and_then(Status::parse) == Some(Status::Success))
        .filter(|d| reader.can_read(d))
        .map(|d| (deployed_at(d), &**d))
        .max_by(|a, b| (a.0, &a.1.identifier).cmp(&(b.0, &b.1.identifier)))
}

/// A matrix as JSON (the API's and the UI's shape).
pub fn matrix_json(m: &Matrix) -> Value {
    let rows: Vec<Value> = m
        .rows
        .iter()
        .map(|r| {
            let cells: Map<String, Value> = r
                .cells
                .iter()
                .map(|(env, c)| {
                    (
                        env.clone(),
                        json!({"deployment": c.deployment, "version": c.version,
                        "since": c.since.to_rfc3339(), "by": c.by, "stale": c.stale}),
                    )
                })
                .collect();
            json!({"service": r.service, "title": r.title, "drift": r.drift, "environments": cells})
        })
        .collect();
    json!({"environments": m.environments, "services": rows})
}
