//! What is deployed where: reports of deployments and incidents written into the catalog (the ready model
//! created on first use), and the matrix of what runs in every environment now.
//!
//! A report is one entity write through the pipeline, as the caller: the model's missing blueprints are
//! created in the same batch (a concurrent first report that created them first is not an error), the
//! service and the environment are created when they do not exist, and the deployment is merged into an
//! earlier report of the same deployment (a pipeline reports `in_progress`, then `success`). A finished
//! status is never taken back by a late `in_progress` report.
//!
//! **Existing blueprints.** When the catalog already has a `deployment` (or `incident`, `service`,
//! `environment`) blueprint, the report maps onto it and never changes it: properties it does not define
//! are left out (and named in the answer as `ignored`), its relation to `service` is the one named
//! `service` or else its only relation whose target is `service` (likewise for `environment`); a blueprint
//! with no such relation refuses the report (422) and says which relation to add.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_engine::scoped::Scoped;
use berth_engine::{Command, Outcome, State, WriteMeta, WriteMode};
use berth_model::deployment::{self, DeploymentReport, IncidentReport, Status};
use berth_model::{DomainError, Entity, EntityInput, Timestamp};
use serde_json::{Map, Value, json};

use crate::{Pipeline, PipelineError};

/// Why a report was not written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// A written report.
#[derive(Debug, Clone)]
pub struct Reported {
    pub entity: Arc<Entity>,
    pub created: bool,
    pub seq: u64,
    /// Fields of the report the existing blueprint does not define (left out).
    pub ignored: Vec<String>,
    /// The blueprints of the ready model this report created.
    pub model_created: Vec<String>,
}

/// Writes a deployment report.
pub async fn report_deployment(
    pipeline: &Pipeline,
    meta: WriteMeta,
    report: &DeploymentReport,
) -> Result<Reported, ReportError> {
    let id = report.identifier();
    let mut properties = report.properties();
    // A late `in_progress` report does not take back a finished status.
    if report.status == Status::InProgress {
        let view = pipeline.view();
        let finished = view
            .entity(deployment::DEPLOYMENT, &id)
            .and_then(|e| e.properties.get("status").and_then(Value::as_str).and_then(Status::parse))
            .is_some_and(|s| s != Status::InProgress);
        if finished {
            properties.remove("status");
        }
    }
    let title = format!("{} {} → {}", report.service, report.version, report.environment);
    write_report(pipeline, meta, deployment::DEPLOYMENT, &id, &title, properties, &report.service, &report.environment)
        .await
}

/// Writes an incident report.
pub async fn report_incident(
    pipeline: &Pipeline,
    meta: WriteMeta,
    report: &IncidentReport,
) -> Result<Reported, ReportError> {
    let title =
        report.title.clone().unwrap_or_else(|| format!("Incident on {} ({})", report.service, report.environment));
    write_report(
        pipeline,
        meta,
        deployment::INCIDENT,
        &report.identifier,
        &title,
        report.properties(),
        &report.service,
        &report.environment,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn write_report(
    pipeline: &Pipeline,
    meta: WriteMeta,
    blueprint: &str,
    id: &str,
    title: &str,
    mut properties: Map<String, Value>,
    service: &str,
    environment: &str,
) -> Result<Reported, ReportError> {
    let view = pipeline.view();
    let model: Vec<Value> = deployment::model();
    let missing: Vec<&Value> =
        model.iter().filter(|b| b["identifier"].as_str().is_some_and(|id| view.blueprint(id).is_none())).collect();
    let mut commands: Vec<Command> = missing.iter().map(|b| Command::CreateBlueprint { body: (*b).clone() }).collect();
    // Map onto the blueprint as it is (or as the model makes it).
    let def: berth_model::Blueprint = match view.blueprint(blueprint) {
        Some(b) => (*b.def).clone(),
        None => {
            let body = model.iter().find(|b| b["identifier"] == blueprint).cloned().unwrap_or_default();
            serde_json::from_value(stamp(body)).map_err(|e| DomainError::Internal(e.to_string()))?
        }
    };
    adapt(&def, &mut properties);
    let mut ignored = Vec::new();
    properties.retain(|k, _| {
        let known = def.schema.properties.contains_key(k);
        if !known {
            ignored.push(k.clone());
        }
        known
    });
    let service_rel = relation_to(&def, deployment::SERVICE)?;
    let environment_rel = relation_to(&def, deployment::ENVIRONMENT)?;
    let body = json!({"identifier": id, "title": title, "properties": properties,
        "relations": {service_rel: service, environment_rel: environment}});
    let write = Command::WriteEntity {
        blueprint: blueprint.to_string(),
        path_id: None,
        input: EntityInput::from_value(&body)?,
        mode: WriteMode::UpsertMerge,
        create_missing_related: true,
    };
    // Into an existing blueprint the write may be refused (its own rules, the caller's rights): found out
    // before the rest of the model is created, so a refused report leaves nothing behind.
    if view.blueprint(blueprint).is_some()
        && view.blueprint(deployment::SERVICE).is_some()
        && view.blueprint(deployment::ENVIRONMENT).is_some()
    {
        pipeline.dry_run(&meta, &write)?;
    }
    commands.push(write);
    let created_model: Vec<String> =
        missing.iter().filter_map(|b| b["identifier"].as_str().map(str::to_string)).collect();
    let result = pipeline.write(meta, commands).await?;
    let mut outcomes = result.outcomes.into_iter();
    let mut model_created = Vec::new();
    for name in created_model {
        // What this report writes into needs its blueprint; the rest of the model is a courtesy (a caller
        // who may not create blueprints still reports into a model that has what it needs).
        let needed = [blueprint, deployment::SERVICE, deployment::ENVIRONMENT].contains(&name.as_str());
        match outcomes.next() {
            Some(Ok(_)) => model_created.push(name),
            // Created by a concurrent first report: as good.
            Some(Err(DomainError::AlreadyExists { .. })) => {}
            Some(Err(_)) if !needed => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(DomainError::Internal("a report's write lost an answer".into()).into()),
        }
    }
    match outcomes.next() {
        Some(Ok(Outcome::Entity { entity, created })) => {
            Ok(Reported { entity, created, seq: result.seq, ignored, model_created })
        }
        Some(Err(e)) => Err(e.into()),
        _ => Err(DomainError::Internal("a report's write answered no entity".into()).into()),
    }
}

/// Fits a report's values to an existing blueprint's conventions: a status written as its `status` enum
/// spells it (`failed` for `failure`, `rolled-back` for `rolled_back`), and `finishedAt` as `deployedAt`
/// when the blueprint has that date-time and no `finishedAt`.
fn adapt(def: &berth_model::Blueprint, properties: &mut Map<String, Value>) {
    let props = &def.schema.properties;
    if let (Some(ours), Some(allowed)) = (
        properties.get("status").and_then(Value::as_str).and_then(Status::parse),
        props.get("status").and_then(|p| p.get("enum")).and_then(Value::as_array),
    ) {
        if let Some(theirs) = allowed.iter().find(|v| v.as_str().and_then(Status::parse) == Some(ours)) {
            properties.insert("status".into(), theirs.clone());
        }
    }
    let is_time = |k: &str| props.get(k).and_then(|p| p.get("format")).and_then(Value::as_str) == Some("date-time");
    if !props.contains_key("finishedAt") && is_time("deployedAt") {
        if let Some(v) = properties.remove("finishedAt") {
            properties.insert("deployedAt".into(), v);
        }
    }
}

/// The deployment blueprint's relations to `service` and `environment`, when it has both.
fn deployment_relations(state: &State) -> Option<(&str, &str)> {
    let def = &state.blueprint(deployment::DEPLOYMENT)?.def;
    Some((relation_to(def, deployment::SERVICE).ok()?, relation_to(def, deployment::ENVIRONMENT).ok()?))
}

/// The relation of `def` to the blueprint `target`: the one named like it, else its only one to it.
fn relation_to<'a>(def: &'a berth_model::Blueprint, target: &'a str) -> Result<&'a str, DomainError> {
    if def.relations.get(target).is_some_and(|r| r.target == target && !r.many) {
        return Ok(target);
    }
    let to: Vec<&String> =
        def.relations.iter().filter(|(_, r)| r.target == target && !r.many).map(|(k, _)| k).collect();
    match to.as_slice() {
        [one] => Ok(one.as_str()),
        [] => Err(DomainError::Invalid(format!(
            "blueprint `{}` has no single relation to `{target}`: add one named `{target}` to report into it",
            def.identifier
        ))),
        _ => Err(DomainError::Invalid(format!(
            "blueprint `{}` has several relations to `{target}`: name one `{target}`",
            def.identifier
        ))),
    }
}

/// The fields a stored blueprint has that a body of the model does not.
fn stamp(mut body: Value) -> Value {
    for (k, v) in [
        ("createdAt", "1970-01-01T00:00:00Z"),
        ("updatedAt", "1970-01-01T00:00:00Z"),
        ("createdBy", "berth"),
        ("updatedBy", "berth"),
    ] {
        body[k] = json!(v);
    }
    body
}

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

/// Up to this many services, the matrix reads their deployments through the reverse index.
const MATRIX_LOOKUPS: usize = 32;

/// Services × environments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matrix {
    /// Every environment the caller may read, in identifier order.
    pub environments: Vec<String>,
    pub rows: Vec<Row>,
}

/// When a deployment took effect: `finishedAt` (or `deployedAt`, a common name for it), else `startedAt`,
/// else when it was last written.
fn deployed_at(e: &Entity) -> Timestamp {
    let at = |k: &str| e.properties.get(k).and_then(Value::as_str).and_then(Timestamp::parse);
    at("finishedAt").or_else(|| at("deployedAt")).or_else(|| at("startedAt")).unwrap_or(e.updated_at)
}

/// The matrix as `scoped` may read it (services, environments and deployments it cannot read are left out).
pub fn matrix(scoped: &Scoped<'_>, filter: &MatrixFilter, now: Timestamp) -> Matrix {
    matrix_of(scoped.state(), &|e| scoped.can_read(e), filter, now)
}

/// The matrix of the catalog `state` (now, or as it was), showing the entities `can_read` allows.
pub fn matrix_of(state: &State, can_read: &dyn Fn(&Entity) -> bool, filter: &MatrixFilter, now: Timestamp) -> Matrix {
    let readable = |bp: &str, id: &str| state.entity(bp, id).filter(|e| can_read(e));
    let Some((service_rel, env_rel)) = deployment_relations(state) else { return Matrix::default() };
    let environments: Vec<String> =
        state.entities_of(deployment::ENVIRONMENT).filter(|e| can_read(e)).map(|e| e.identifier.to_string()).collect();
    let readable_envs: BTreeSet<&str> = environments.iter().map(String::as_str).collect();
    let in_system = |svc: &Entity, system: &str| svc.relations.get("system").and_then(Value::as_str) == Some(system);
    let in_domain = |svc: &Entity, domain: &str| {
        let sys = svc.relations.get("system").and_then(Value::as_str);
        sys.and_then(|s| readable("system", s))
            .is_some_and(|s| s.relations.get("domain").and_then(Value::as_str) == Some(domain))
    };
    let stale_before = filter.stale_days.map(|d| Timestamp::from_millis(now.millis() - i64::from(d) * 86_400_000));
    let services: Vec<&Entity> = state
        .entities_of(deployment::SERVICE)
        .filter(|e| can_read(e))
        .filter(|svc| {
            !(filter.team.as_ref().is_some_and(|t| !svc.team.contains(t))
                || filter.system.as_ref().is_some_and(|s| !in_system(svc, s))
                || filter.domain.as_ref().is_some_and(|d| !in_domain(svc, d)))
        })
        .map(|e| &**e)
        .collect();
    // A few services: their deployments from the reverse index; many: one pass over every deployment in
    // map order (random lookups of a million deployments cost more than reading them all in order).
    let rels = (service_rel, env_rel);
    let best = if services.len() <= MATRIX_LOOKUPS {
        best_of(
            services.iter().flat_map(|svc| deployments_of(state, can_read, &svc.identifier, service_rel)),
            rels,
            &readable_envs,
        )
    } else {
        best_of(state.entities_of(deployment::DEPLOYMENT).filter(|d| can_read(d)).map(|d| &**d), rels, &readable_envs)
    };
    let mut rows = Vec::new();
    for svc in services {
        let cells = cells_of(&best, &svc.identifier, &environments, stale_before);
        let versions: BTreeSet<&str> = cells.values().map(|c| c.version.as_str()).collect();
        rows.push(Row {
            service: svc.identifier.to_string(),
            title: svc.title.clone(),
            drift: versions.len() > 1,
            cells,
        });
    }
    Matrix { environments, rows }
}

/// The deployment running per (service, environment) among `deps`: the latest successful one (ties to the
/// larger identifier, so the answer does not depend on order), in environments `readable_envs` names.
fn best_of<'s>(
    deps: impl Iterator<Item = &'s Entity>,
    (service_rel, env_rel): (&str, &str),
    readable_envs: &BTreeSet<&str>,
) -> std::collections::HashMap<(&'s str, &'s str), (Timestamp, &'s Entity)> {
    let mut best: std::collections::HashMap<(&'s str, &'s str), (Timestamp, &'s Entity)> =
        std::collections::HashMap::new();
    for d in deps {
        if d.properties.get("status").and_then(Value::as_str).and_then(Status::parse) != Some(Status::Success) {
            continue;
        }
        let (Some(service), Some(env)) = (
            d.relations.get(service_rel).and_then(Value::as_str),
            d.relations.get(env_rel).and_then(Value::as_str).filter(|e| readable_envs.contains(e)),
        ) else {
            continue;
        };
        let at = deployed_at(d);
        let slot = best.entry((service, env)).or_insert((at, d));
        if (at, &*d.identifier) > (slot.0, &*slot.1.identifier) {
            *slot = (at, d);
        }
    }
    best
}

/// One service's cells from [`best_of`]'s answer.
fn cells_of(
    best: &std::collections::HashMap<(&str, &str), (Timestamp, &Entity)>,
    service: &str,
    environments: &[String],
    stale_before: Option<Timestamp>,
) -> BTreeMap<String, Cell> {
    environments
        .iter()
        .filter_map(|env| {
            let (at, d) = best.get(&(service, env.as_str()))?;
            let cell = Cell {
                deployment: d.identifier.to_string(),
                version: d.properties.get("version").and_then(Value::as_str).unwrap_or_default().to_string(),
                since: *at,
                by: d.properties.get("actor").and_then(Value::as_str).map(str::to_string),
                stale: stale_before.is_some_and(|b| *at < b),
            };
            Some((env.clone(), cell))
        })
        .collect()
}

/// A service's deployments `can_read` allows, from the reverse index.
fn deployments_of<'s>(
    state: &'s State,
    can_read: &'s dyn Fn(&Entity) -> bool,
    service: &'s str,
    service_rel: &'s str,
) -> impl Iterator<Item = &'s Entity> + 's {
    state
        .sources(deployment::SERVICE, service, deployment::DEPLOYMENT, service_rel, None)
        .filter_map(move |id| state.entity(deployment::DEPLOYMENT, id))
        .filter(move |d| can_read(d))
        .map(|d| &**d)
}

/// What runs in each environment of one service now, as `can_read` allows (the service page's table).
pub fn running(state: &State, can_read: &dyn Fn(&Entity) -> bool, service: &str) -> BTreeMap<String, Cell> {
    let Some((service_rel, env_rel)) = deployment_relations(state) else { return BTreeMap::new() };
    let envs: Vec<String> =
        state.entities_of(deployment::ENVIRONMENT).filter(|e| can_read(e)).map(|e| e.identifier.to_string()).collect();
    let readable: BTreeSet<&str> = envs.iter().map(String::as_str).collect();
    let best = best_of(deployments_of(state, can_read, service, service_rel), (service_rel, env_rel), &readable);
    cells_of(&best, service, &envs, None)
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

/// Which deployments DORA figures read.
#[derive(Debug, Clone)]
pub struct DoraFilter {
    /// One service, or the services of `team`, or (neither) the organisation.
    pub service: Option<String>,
    pub team: Option<String>,
    /// The environment measured (`production` by default).
    pub environment: String,
    /// The period: deployments that took effect in `[from, to)`, incidents opened in it.
    pub from: Timestamp,
    pub to: Timestamp,
    /// A deployment followed by an incident of its service and environment within this many hours is a
    /// failed change.
    pub failure_window_hours: u32,
}

/// DORA's four keys over a period, with their performance bands, and per week for the trend charts.
#[derive(Debug, Clone, PartialEq)]
pub struct Dora {
    /// Successful deployments in the period, and per day.
    pub deployments: usize,
    pub per_day: f64,
    /// Median hours from commit to successful deployment (deployments that give their commit time).
    pub lead_time_hours: Option<f64>,
    /// Failed changes (failed, rolled back, or followed by an incident within the window) over finished
    /// deployments.
    pub change_failure_rate: Option<f64>,
    pub failed_changes: usize,
    /// Median hours from an incident opened to resolved (incidents opened in the period and resolved).
    pub time_to_restore_hours: Option<f64>,
    pub incidents: usize,
    /// Band per key: `elite`, `high`, `medium`, `low` (none when there is nothing to measure).
    pub bands: BTreeMap<&'static str, &'static str>,
    pub weeks: Vec<Week>,
}

/// One week of the trend.
#[derive(Debug, Clone, PartialEq)]
pub struct Week {
    /// The week's first day (UTC midnight), counting weeks from the period's start.
    pub start: Timestamp,
    pub deployments: usize,
    pub failed_changes: usize,
    pub finished: usize,
    pub lead_time_hours: Option<f64>,
}

const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: i64 = 86_400_000;

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] })
}

/// The bands, as DORA's 2023 report draws them: frequency (per day) ≥ 1 elite, ≥ 1/7 high, ≥ 1/30 medium;
/// lead time < 24 h elite, < 1 week high, < 30 days medium; change failure rate ≤ 5 % elite, ≤ 10 % high,
/// ≤ 15 % medium; time to restore < 1 h elite, < 24 h high, < 1 week medium; else low.
fn bands(d: &Dora) -> BTreeMap<&'static str, &'static str> {
    let band = |elite: bool, high: bool, medium: bool| {
        if elite {
            "elite"
        } else if high {
            "high"
        } else if medium {
            "medium"
        } else {
            "low"
        }
    };
    let mut out = BTreeMap::new();
    out.insert("deploymentFrequency", band(d.per_day >= 1.0, d.per_day >= 1.0 / 7.0, d.per_day >= 1.0 / 30.0));
    if let Some(h) = d.lead_time_hours {
        out.insert("leadTime", band(h < 24.0, h < 168.0, h < 720.0));
    }
    if let Some(r) = d.change_failure_rate {
        out.insert("changeFailureRate", band(r <= 0.05, r <= 0.10, r <= 0.15));
    }
    if let Some(h) = d.time_to_restore_hours {
        out.insert("timeToRestore", band(h < 1.0, h < 24.0, h < 168.0));
    }
    out
}

/// DORA's four keys for the deployments and incidents `can_read` allows in `state`.
pub fn dora(state: &State, can_read: &dyn Fn(&Entity) -> bool, f: &DoraFilter) -> Dora {
    let span_days = ((f.to.millis() - f.from.millis()) as f64 / DAY_MS as f64).max(1.0);
    let services: Option<BTreeSet<String>> = match (&f.service, &f.team) {
        (Some(s), _) => Some(std::iter::once(s.clone()).collect()),
        (None, Some(t)) => Some(
            state
                .entities_of(deployment::SERVICE)
                .filter(|e| can_read(e) && e.team.contains(t))
                .map(|e| e.identifier.to_string())
                .collect(),
        ),
        (None, None) => None,
    };
    let rels = |bp: &str| {
        state.blueprint(bp).and_then(|b| {
            let s = relation_to(&b.def, deployment::SERVICE).ok()?.to_string();
            let e = relation_to(&b.def, deployment::ENVIRONMENT).ok()?.to_string();
            Some((s, e))
        })
    };
    let time = |e: &Entity, k: &str| e.properties.get(k).and_then(Value::as_str).and_then(Timestamp::parse);
    let in_scope = |e: &Entity, (srel, erel): &(String, String)| {
        let service = e.relations.get(srel.as_str()).and_then(Value::as_str);
        e.relations.get(erel.as_str()).and_then(Value::as_str) == Some(f.environment.as_str())
            && service.is_some_and(|s| services.as_ref().is_none_or(|set| set.contains(s)))
    };
    // Incidents of the scope (all of them: one opened just after the period still fails a change in it).
    // An incident blueprint may relate to several services (`many`), and to no environment (then it counts
    // in every one).
    let mut incidents: Vec<(Vec<&str>, Timestamp, Option<Timestamp>)> = Vec::new();
    let incident_rels = state.blueprint(deployment::INCIDENT).and_then(|b| {
        // The relation named like its target, else the first one to it (single or many).
        let to = |target: &'static str| -> Option<&str> {
            let named = b.def.relations.get(target).filter(|r| r.target == target).map(|_| target);
            named.or_else(|| b.def.relations.iter().find(|(_, r)| r.target == target).map(|(k, _)| k.as_str()))
        };
        Some((to(deployment::SERVICE)?, to(deployment::ENVIRONMENT)))
    });
    if let Some((srel, erel)) = incident_rels {
        for i in state.entities_of(deployment::INCIDENT).filter(|e| can_read(e)) {
            let env = erel.and_then(|r| i.relations.get(r)).and_then(Value::as_str);
            if erel.is_some() && env != Some(f.environment.as_str()) {
                continue;
            }
            let hit: Vec<&str> = i
                .relations
                .get(srel)
                .map(Entity::relation_targets)
                .unwrap_or_default()
                .into_iter()
                .filter(|s| services.as_ref().is_none_or(|set| set.contains(*s)))
                .collect();
            if !hit.is_empty() {
                incidents.push((hit, time(i, "openedAt").unwrap_or(i.created_at), time(i, "resolvedAt")));
            }
        }
    }
    let window = i64::from(f.failure_window_hours) * 3_600_000;
    let weeks = (((f.to.millis() - f.from.millis()) + 7 * DAY_MS - 1) / (7 * DAY_MS)).max(1) as usize;
    let mut week = vec![(0usize, 0usize, 0usize, Vec::new()); weeks];
    let (mut deployments, mut finished, mut failed) = (0usize, 0usize, 0usize);
    let mut lead = Vec::new();
    if let Some(r) = rels(deployment::DEPLOYMENT) {
        for d in state.entities_of(deployment::DEPLOYMENT).filter(|e| in_scope(e, &r) && can_read(e)) {
            let at = deployed_at(d);
            if at < f.from || at >= f.to {
                continue;
            }
            let Some(status) = d.properties.get("status").and_then(Value::as_str).and_then(Status::parse) else {
                continue;
            };
            if status == Status::InProgress {
                continue;
            }
            let w = &mut week[((at.millis() - f.from.millis()) / (7 * DAY_MS)) as usize];
            let service = d.relations.get(r.0.as_str()).and_then(Value::as_str).unwrap_or_default();
            let followed = incidents
                .iter()
                .any(|(s, opened, _)| s.contains(&service) && *opened >= at && opened.millis() - at.millis() <= window);
            finished += 1;
            w.2 += 1;
            if status.failed() || (status == Status::Success && followed) {
                failed += 1;
                w.1 += 1;
            }
            if status == Status::Success {
                deployments += 1;
                w.0 += 1;
                if let Some(c) = time(d, "commitTime").filter(|c| *c <= at) {
                    let h = (at.millis() - c.millis()) as f64 / HOUR_MS;
                    lead.push(h);
                    w.3.push(h);
                }
            }
        }
    }
    let restore: Vec<f64> = incidents
        .iter()
        .filter(|(_, opened, _)| *opened >= f.from && *opened < f.to)
        .filter_map(|(_, opened, resolved)| {
            resolved.filter(|r| r >= opened).map(|r| (r.millis() - opened.millis()) as f64 / HOUR_MS)
        })
        .collect();
    let incident_count = incidents.iter().filter(|(_, o, _)| *o >= f.from && *o < f.to).count();
    let mut out = Dora {
        deployments,
        per_day: deployments as f64 / span_days,
        lead_time_hours: median(lead),
        change_failure_rate: (finished > 0).then(|| failed as f64 / finished as f64),
        failed_changes: failed,
        time_to_restore_hours: median(restore),
        incidents: incident_count,
        bands: BTreeMap::new(),
        weeks: week
            .into_iter()
            .enumerate()
            .map(|(i, (n, failed, finished, lead))| Week {
                start: Timestamp::from_millis(f.from.millis() + i as i64 * 7 * DAY_MS),
                deployments: n,
                failed_changes: failed,
                finished,
                lead_time_hours: median(lead),
            })
            .collect(),
    };
    out.bands = bands(&out);
    out
}

/// DORA figures as JSON (the API's and the UI's shape).
pub fn dora_json(d: &Dora) -> Value {
    let weeks: Vec<Value> = d
        .weeks
        .iter()
        .map(|w| {
            json!({"start": w.start.to_rfc3339(), "deployments": w.deployments, "finished": w.finished,
                "failedChanges": w.failed_changes, "leadTimeHours": w.lead_time_hours})
        })
        .collect();
    json!({"deploymentFrequency": {"deployments": d.deployments, "perDay": d.per_day},
        "leadTimeHours": d.lead_time_hours,
        "changeFailureRate": {"rate": d.change_failure_rate, "failedChanges": d.failed_changes},
        "timeToRestoreHours": {"median": d.time_to_restore_hours, "incidents": d.incidents},
        "bands": d.bands, "weeks": weeks})
}

/// A service's deployments, newest first (every status), optionally in one environment, at most `limit`.
pub fn timeline(
    state: &State,
    can_read: &dyn Fn(&Entity) -> bool,
    service: &str,
    environment: Option<&str>,
    limit: usize,
) -> Vec<Value> {
    let Some((srel, erel)) = deployment_relations(state) else { return Vec::new() };
    let mut out: Vec<(Timestamp, &Entity)> = state
        .sources(deployment::SERVICE, service, deployment::DEPLOYMENT, srel, None)
        .filter_map(|id| state.entity(deployment::DEPLOYMENT, id))
        .filter(|d| can_read(d))
        .filter(|d| environment.is_none_or(|env| d.relations.get(erel).and_then(Value::as_str) == Some(env)))
        .map(|d| (deployed_at(d), &**d))
        .collect();
    out.sort_by(|a, b| (b.0, &*b.1.identifier).cmp(&(a.0, &*a.1.identifier)));
    out.into_iter()
        .take(limit)
        .map(|(at, d)| {
            let p = |k: &str| d.properties.get(k).cloned().unwrap_or(Value::Null);
            json!({"deployment": &*d.identifier, "environment": d.relations.get(erel).cloned().unwrap_or(Value::Null),
                "version": p("version"), "status": p("status"), "at": at.to_rfc3339(), "actor": p("actor"),
                "commit": p("commitSha"), "url": p("runUrl")})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_model_reads_as_blueprints_with_the_relations_reports_use() {
        for body in deployment::model() {
            let bp: berth_model::Blueprint = serde_json::from_value(stamp(body.clone())).expect("a blueprint");
            if bp.identifier == deployment::DEPLOYMENT || bp.identifier == deployment::INCIDENT {
                assert_eq!(relation_to(&bp, deployment::SERVICE).expect("service"), "service");
                assert_eq!(relation_to(&bp, deployment::ENVIRONMENT).expect("environment"), "environment");
            }
        }
    }
}
