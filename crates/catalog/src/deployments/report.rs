//! Deployment and incident reports written into the catalog, the ready model created on first use.
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

use std::sync::Arc;

use berth_engine::{Command, Outcome, State, WriteMeta, WriteMode};
use berth_model::deployment::{self, DeploymentReport, IncidentReport, Status};
use berth_model::{DomainError, Entity, EntityInput};
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
pub(super) fn deployment_relations(state: &State) -> Option<(&str, &str)> {
    let def = &state.blueprint(deployment::DEPLOYMENT)?.def;
    Some((relation_to(def, deployment::SERVICE).ok()?, relation_to(def, deployment::ENVIRONMENT).ok()?))
}

/// The relation of `def` to the blueprint `target`: the one named like it, else its only one to it.
pub(super) fn relation_to<'a>(def: &'a berth_model::Blueprint, target: &'a str) -> Result<&'a str, DomainError> {
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
