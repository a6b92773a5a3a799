//! Action runs (see [`berth_model::run`]): the commands that make and change them, and who may.
//!
//! - **Create** (`POST /v1/actions/{id}/runs`, or an automation): the action must be a self-service action
//!   (an automation's runs are made by the automation worker, as the server), its entity (DAY-2, DELETE)
//!   readable by the runner and matched by the action's `condition`, the inputs valid ([`inputs`]), and the
//!   runner allowed by the action's permissions ([`may_execute`]). A run that needs approval waits
//!   (`WAITING_FOR_APPROVAL`); any other starts `IN_PROGRESS` with `pendingExecution` set, which the
//!   invocation worker clears when it has sent it ([`Command::RecordInvocation`]).
//! - **Update** (`PATCH`, a log line with `terminationStatus`): by Admins and the run's creator; an ended
//!   run is frozen (422).
//! - **Approve** / **decline**: by the action's approvers, once each; `ANY` needs one approval, `ALL` every
//!   approver's; one decline ends the run.
//!
//! Runs are definitions of kind `Run` (their logs `RunLog`): the permission layer lets these changes through
//! because only the commands here make them, and they judge the caller themselves.
//!
//! [`Command::RecordInvocation`]: crate::Command::RecordInvocation

pub mod inputs;
pub mod template;

use std::sync::Arc;

use berth_model::action::{Action, Approval as Required, Operation, Trigger};
use berth_model::action_permissions::{ActionPermissions, Policy, Who};
use berth_model::run::{self, Decision, LogLine, Named, Run, RunPatch, RunRequest, Source, Status};
use berth_model::{Change, Definition, DefinitionKind, DomainError, Entity, Timestamp};
use serde_json::{Map, Value, json};

use crate::State;
use crate::access::{Principal, can_read, owned_by};
use crate::command::{Outcome, WriteMeta};

/// The most entities a permission policy's query reads.
const POLICY_QUERY_LIMIT: usize = 1000;
/// The longest a permission policy's queries may search, all together (they run in the writer): past it, the
/// policy denies.
const POLICY_QUERY_BUDGET: std::time::Duration = std::time::Duration::from_millis(200);

/// A run to make.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Its id (the server draws it; an automation derives it from the change that fired it).
    pub id: String,
    pub action: String,
    pub request: RunRequest,
    pub source: Source,
    /// `run_as`: the user the run is for, when an Admin asks on its behalf.
    pub run_as: Option<String>,
    /// An automation's change event (its trigger data's `event`).
    pub event: Option<Value>,
}

/// What a record is about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Record {
    /// The run was sent to its backend.
    #[default]
    Sent,
    /// The approvers were told.
    Notified,
    /// The backend's own run was followed to its end (`reportWorkflowStatus`).
    Reported,
}

/// What the invocation worker records about a run it sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Invocation {
    /// What was sent, templates rendered (secrets masked).
    pub payload: Option<Value>,
    /// A synchronized webhook's answer.
    pub response: Option<Value>,
    /// The run ended by the invocation (a synchronized webhook, an entity upsert, a failure to send).
    pub end: Option<(Status, Option<String>)>,
    /// A log line to add.
    pub log: Option<String>,
    /// What this records.
    pub kind: Record,
    /// The backend's id of its run, and a link to it (a GitHub workflow run).
    pub external_run_id: Option<String>,
    pub link: Option<String>,
    /// Where the backend's run is followed until it ends (its API URL), when the run's status is reported
    /// from it.
    pub follow: Option<String>,
}

/// A run by id.
pub fn get(state: &State, id: &str) -> Option<(Arc<Definition>, Run)> {
    let d = state.definition(DefinitionKind::Run, id)?;
    Run::from_body(&d.body).ok().map(|r| (Arc::clone(d), r))
}

/// Every run, newest first (by creation, then id), without reading their bodies: a list reads only the
/// runs it shows (and those its filters pass over).
pub fn newest_first(state: &State) -> Vec<&Arc<Definition>> {
    let mut all: Vec<&Arc<Definition>> = state.definitions(DefinitionKind::Run).collect();
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.identifier.cmp(&a.identifier)));
    all
}

/// An action's permissions: the stored ones, or the defaults (Admins only).
pub fn permissions(state: &State, action: &str) -> ActionPermissions {
    state
        .definition(DefinitionKind::ActionPermissions, action)
        .map(|d| ActionPermissions::from_body(&d.body))
        .unwrap_or_default()
}

/// Whether `p` is named by a grant's lists (users by email or client id, roles, teams), or owns `entity`
/// through its team when the grant allows owners.
fn listed(state: &State, who: &Who, p: &Principal, entity: Option<&Entity>) -> bool {
    p.is_admin()
        || who.users.iter().any(|u| u == &p.id)
        || who.roles.iter().any(|r| p.roles.contains(r))
        || who.teams.iter().any(|t| p.teams.contains(t))
        || (who.owned_by_team && entity.is_some_and(|e| owned_by(state, p, e)))
}

/// A policy judged over a run's trigger data: every query run (its `{{ }}` templates rendered first), then
/// every condition over `{queries, ...data}`. Anything that fails denies.
fn policy_allows(state: &State, policy: &Policy, data: &Value, now: Timestamp) -> bool {
    let mut results = Map::new();
    // One budget for all the policy's queries.
    let deadline = std::time::Instant::now() + POLICY_QUERY_BUDGET;
    for (name, query) in &policy.queries {
        let Ok(rendered) = template::render(query, data) else { return false };
        let Ok(query) = berth_model::query::Query::parse(&rendered) else { return false };
        let mut found = Vec::new();
        // Judged in the writer: each query has a budget, and one that runs out denies.
        let searched = crate::search::with_deadline(deadline, || {
            crate::search::for_each_match(state, &query, now, |e| {
                if found.len() < POLICY_QUERY_LIMIT {
                    found.push(serde_json::to_value(&**e).unwrap_or(Value::Null));
                }
            })
        });
        if !matches!(searched, Ok(Ok(_))) {
            return false;
        }
        results.insert(name.clone(), Value::Array(found));
    }
    let mut input = data.clone();
    if let Some(map) = input.as_object_mut() {
        map.insert("queries".into(), Value::Object(results));
    }
    policy
        .conditions
        .iter()
        .all(|c| crate::derived::jq::compile(c).and_then(|p| p.run(&input)).is_ok_and(|v| v == Value::Bool(true)))
}

/// Whether `p` may execute the action: Admins always; with a policy, the policy alone; else the lists.
pub fn may_execute(
    state: &State,
    p: &Principal,
    perms: &ActionPermissions,
    entity: Option<&Entity>,
    data: &Value,
    now: Timestamp,
) -> bool {
    if p.is_admin() {
        return true;
    }
    match &perms.execute.policy {
        Some(policy) => policy_allows(state, policy, data, now),
        None => listed(state, &perms.execute, p, entity),
    }
}

/// Whether `p` sees the action among those it may run (a policy decides execution, the lists who sees it).
pub fn sees_action(state: &State, p: &Principal, action: &str, entity: Option<&Entity>) -> bool {
    let perms = permissions(state, action);
    listed(state, &perms.execute, p, entity)
}

/// Whether `p` may approve runs of the action.
pub fn may_approve(state: &State, p: &Principal, perms: &ActionPermissions, data: &Value, now: Timestamp) -> bool {
    if p.is_admin() {
        return true;
    }
    match &perms.approve.policy {
        Some(policy) => policy_allows(state, policy, data, now),
        None => listed(state, &perms.approve, p, None),
    }
}

/// Whose approval `ALL` needs: the active users the approve lists name (by email, role or team), in email
/// order, then the apps they name by client id (an app counts only when named: an Admin app in CI never
/// votes).
pub fn approvers(state: &State, perms: &ActionPermissions) -> Vec<String> {
    let who = &perms.approve;
    let apps = who.users.iter().filter(|u| state.credential(u).is_some()).cloned();
    state
        .users()
        .filter(|u| u.status == berth_model::UserStatus::Active)
        .filter(|u| {
            who.users.iter().any(|x| x == &u.email)
                || u.roles.iter().any(|r| who.roles.contains(r))
                || state.teams_of(&u.email).iter().any(|t| who.teams.contains(t))
        })
        .map(|u| u.email.clone())
        .chain(apps)
        .collect()
}

/// Whether `p` may read a run: Admins; its creator; anyone else when the action lets anyone view its runs
/// and `p` may read the run's entity; an approver while it waits.
pub fn may_read(state: &State, p: &Principal, run: &Run, now: Timestamp) -> bool {
    if p.is_admin() || run.created_by == p.id {
        return true;
    }
    let entity_readable = match (&run.blueprint, &run.entity) {
        (Some(bp), Some(e)) => state.entity(&bp.identifier, &e.identifier).is_none_or(|e| can_read(state, p, e, now)),
        _ => true,
    };
    if !entity_readable {
        return false;
    }
    let action = state.definition(DefinitionKind::Action, &run.action.identifier);
    let anyone = action.is_none_or(|d| d.body.get("allowAnyoneToViewRuns").and_then(Value::as_bool) != Some(false));
    anyone
        || (run.status == Status::WaitingForApproval
            && listed(state, &permissions(state, &run.action.identifier).approve, p, None))
}

fn named(identifier: &str, title: Option<&str>, icon: Option<&str>) -> Named {
    Named {
        identifier: identifier.to_string(),
        title: title.map(str::to_string),
        icon: icon.map(str::to_string),
        deleted: false,
    }
}

fn store(meta: &WriteMeta, existing: Option<&Definition>, id: &str, run: &Run) -> Result<Arc<Definition>, DomainError> {
    let body = serde_json::to_value(run).map_err(|e| DomainError::Internal(format!("a run does not encode: {e}")))?;
    Ok(crate::definitions::version(meta, existing, DefinitionKind::Run, id, body))
}

/// The user a trigger names: `{email, firstName, lastName, id}` (an app: its client id only).
fn user_of(state: &State, id: &str) -> Value {
    match state.user(id) {
        Some(u) => json!({"email": u.email, "firstName": u.first_name, "lastName": u.last_name, "id": u.email}),
        None => json!({"email": null, "id": id}),
    }
}

/// Makes a run.
pub(crate) fn create(state: &State, meta: &WriteMeta, new: &NewRun) -> Result<(Vec<Change>, Outcome), DomainError> {
    if !run::is_run_id(&new.id) {
        return Err(DomainError::Internal(format!("`{}` is not a run id", new.id)));
    }
    if state.definition(DefinitionKind::Run, &new.id).is_some() {
        return Err(DomainError::AlreadyExists { kind: "run", id: new.id.clone() });
    }
    let action_def = state
        .definition(DefinitionKind::Action, &new.action)
        .ok_or_else(|| DomainError::not_found("action", new.action.clone()))?;
    let action = Action::parse(&action_def.body)?;
    let caller = meta.principal.clone();
    let (created_by, impersonated_by) = match (&new.run_as, &caller) {
        (Some(user), Some(p)) if p.is_admin() => {
            if state.user(user).is_none() {
                return Err(DomainError::Invalid(format!("`run_as`: user `{user}` was not found")));
            }
            (user.clone(), Some(meta.actor.clone()))
        }
        (Some(_), Some(_)) => {
            return Err(DomainError::Forbidden("only Admins run actions on another's behalf (`run_as`)".into()));
        }
        _ => (meta.actor.clone(), None),
    };
    // The runner: whose permissions the inputs and the entity are read with.
    let runner = match (&new.run_as, &caller) {
        (Some(user), Some(_)) => state
            .user(user)
            .map(|u| Principal { id: u.email.clone(), roles: u.roles.clone(), teams: state.teams_of(&u.email) })
            .unwrap_or_default(),
        (_, Some(p)) => p.clone(),
        (_, None) => Principal { id: meta.actor.clone(), roles: vec!["Admin".into()], teams: Vec::new() },
    };
    let (operation, blueprint) = match (&action.trigger, new.source) {
        (Trigger::SelfService { operation, blueprint, .. }, Source::Ui | Source::Api) => {
            (Some(*operation), blueprint.clone())
        }
        (Trigger::Automation { .. }, Source::Automation) if caller.is_none() => {
            (None, action.blueprint().unwrap_or_default().to_string())
        }
        (Trigger::Automation { .. }, _) => {
            return Err(DomainError::Invalid(format!(
                "`{}` is an automation: it runs when its event happens, not on request",
                new.action
            )));
        }
        (Trigger::SelfService { .. }, Source::Automation) => {
            return Err(DomainError::Internal("an automation run of a self-service action".into()));
        }
    };
    let blueprint_def = state.blueprint(&blueprint);
    let entity: Option<Arc<Entity>> = match (operation, &new.request.entity) {
        (Some(Operation::Create), Some(_)) => {
            return Err(DomainError::Invalid("a CREATE action takes no `entity`: it makes one".into()));
        }
        (Some(Operation::Day2 | Operation::Delete), None) => {
            return Err(DomainError::Invalid(format!(
                "action `{}` runs on an entity of blueprint `{blueprint}`: `entity` is required",
                new.action
            )));
        }
        (Some(_), Some(id)) => {
            let e = state
                .entity(&blueprint, id)
                .filter(|e| can_read(state, &runner, e, meta.now))
                .ok_or_else(|| DomainError::not_found("entity", format!("{blueprint}/{id}")))?;
            if let Trigger::SelfService { condition: Some(q), .. } = &action.trigger {
                let ctx = crate::search::Ctx::new(state, q, meta.now, Some(&blueprint))?;
                if !crate::search::matches(&ctx, e, q) {
                    return Err(DomainError::Invalid(format!(
                        "action `{}` does not apply to entity `{id}` (its condition does not hold)",
                        new.action
                    )));
                }
            }
            Some(Arc::clone(e))
        }
        (None, _) | (Some(Operation::Create), None) => None,
    };
    let entity_json = entity.as_ref().map_or_else(|| json!({}), |e| serde_json::to_value(&**e).unwrap_or(Value::Null));
    let user = user_of(state, &created_by);
    let user_inputs = match &action.trigger {
        Trigger::SelfService { .. } => action_def.body.pointer("/trigger/userInputs"),
        Trigger::Automation { .. } => None,
    };
    let checked = inputs::check(
        state,
        user_inputs,
        &new.request.properties,
        &inputs::Context { user: user.clone(), entity: entity_json.clone(), runner: &runner, now: meta.now },
        true,
    )?;
    let operation_name = match operation {
        Some(Operation::Create) => Value::from("CREATE"),
        Some(Operation::Day2) => Value::from("DAY-2"),
        Some(Operation::Delete) => Value::from("DELETE"),
        None => Value::Null,
    };
    let source = serde_json::to_value(new.source).unwrap_or(Value::Null);
    let trigger = json!({
        "inputs": checked.values,
        "entity": entity_json,
        "trigger": {"by": {"userId": created_by, "user": user}, "origin": source, "at": meta.now,
                    "operation": operation_name},
        "event": new.event.clone().unwrap_or(Value::Null),
        "action": {"identifier": new.action, "blueprint": blueprint, "encryptedProperties": checked.encrypted},
        "run": {"id": new.id},
    });
    let perms = permissions(state, &new.action);
    if let Some(p) = &caller {
        if !may_execute(state, p, &perms, entity.as_deref(), &trigger, meta.now) {
            return Err(DomainError::Forbidden(format!("`{}` may not execute action `{}`", p.id, new.action)));
        }
    }
    let waits = action.approval != Required::None;
    let title = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let run = Run {
        action: Named {
            identifier: new.action.clone(),
            title: title(&action_def.body, "title"),
            icon: title(&action_def.body, "icon"),
            deleted: false,
        },
        blueprint: blueprint_def.map(|b| named(&blueprint, Some(b.def.title.as_str()), b.def.icon.as_deref())),
        entity: entity.as_ref().map(|e| named(&e.identifier, e.title.as_deref(), e.icon.as_deref())),
        properties: checked.values,
        source: new.source,
        required_approval: action_def.body.get("requiredApproval").cloned().unwrap_or(Value::Bool(false)),
        status: if waits { Status::WaitingForApproval } else { Status::InProgress },
        status_label: None,
        link: Vec::new(),
        summary: String::new(),
        approval: waits.then(|| run::Approval {
            state: "PENDING".into(),
            user_id: None,
            description: None,
            votes: Vec::new(),
        }),
        payload: None,
        response: None,
        pending_execution: !waits,
        pending_notification: waits
            && action_def.body.pointer("/approvalNotification/type").and_then(Value::as_str) == Some("webhook"),
        follow: None,
        external_run_id: None,
        created_by,
        impersonated_by,
        updated_by: meta.actor.clone(),
        created_at: meta.now,
        updated_at: meta.now,
        ended_at: None,
        logs: 0,
        log_bytes: 0,
        trigger,
    };
    let d = store(meta, None, &new.id, &run)?;
    Ok(crate::definitions::stored(d, true))
}

/// The run `id` as `p` may change it: 404 when it does not exist or `p` may not read it, 403 when `p` reads
/// it but may not change it, 422 once it ended.
fn changeable(state: &State, meta: &WriteMeta, id: &str) -> Result<(Arc<Definition>, Run), DomainError> {
    let (d, run) = get(state, id).ok_or_else(|| DomainError::not_found("run", id.to_string()))?;
    if let Some(p) = &meta.principal {
        if !may_read(state, p, &run, meta.now) {
            return Err(DomainError::not_found("run", id.to_string()));
        }
        if !p.is_admin() && run.created_by != p.id {
            return Err(DomainError::Forbidden(format!(
                "`{}` may not update run `{id}` (Admins and its creator may)",
                p.id
            )));
        }
    }
    if run.status.ended() {
        return Err(DomainError::Invalid(format!(
            "run `{id}` has ended ({}): it no longer changes",
            run.status.as_str()
        )));
    }
    Ok((d, run))
}

fn end(run: &mut Run, status: Status, now: Timestamp) {
    run.status = status;
    run.ended_at = Some(now);
    run.pending_execution = false;
    run.pending_notification = false;
    run.follow = None;
}

/// `PATCH /v1/actions/runs/{id}`.
pub(crate) fn patch(
    state: &State,
    meta: &WriteMeta,
    id: &str,
    patch: &RunPatch,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let (d, mut run) = changeable(state, meta, id)?;
    if let Some(status) = patch.status {
        if run.status == Status::WaitingForApproval {
            return Err(DomainError::Invalid(format!("run `{id}` waits for approval: it cannot end before it starts")));
        }
        end(&mut run, status, meta.now);
    }
    if let Some(label) = &patch.status_label {
        run.status_label = Some(label.clone());
    }
    if let Some(link) = &patch.link {
        run.link = link.clone();
    }
    if let Some(summary) = &patch.summary {
        run.summary = summary.clone();
    }
    if let Some(external) = &patch.external_run_id {
        run.external_run_id = Some(external.clone());
    }
    run.updated_by = meta.actor.clone();
    run.updated_at = meta.now;
    let d = store(meta, Some(&d), id, &run)?;
    Ok(crate::definitions::stored(d, false))
}

/// `POST /v1/actions/runs/{id}/logs`: a log line (with `terminationStatus`, the run's end).
pub(crate) fn log(
    state: &State,
    meta: &WriteMeta,
    id: &str,
    line: &LogLine,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let (d, mut run) = changeable(state, meta, id)?;
    if run.logs >= run::MAX_LOGS || run.log_bytes + line.message.len() as u64 > run::MAX_LOG_BYTES {
        return Err(DomainError::Invalid(format!(
            "run `{id}` has {} log lines of {} bytes; a run keeps at most {} lines and {} bytes",
            run.logs,
            run.log_bytes,
            run::MAX_LOGS,
            run::MAX_LOG_BYTES
        )));
    }
    if let Some(status) = line.termination_status {
        if run.status == Status::WaitingForApproval {
            return Err(DomainError::Invalid(format!("run `{id}` waits for approval: it cannot end before it starts")));
        }
        end(&mut run, status, meta.now);
        if let Some(label) = &line.status_label {
            run.status_label = Some(label.clone());
        }
    }
    run.logs += 1;
    run.log_bytes += line.message.len() as u64;
    run.updated_by = meta.actor.clone();
    run.updated_at = meta.now;
    let body = serde_json::to_value(line).map_err(|e| DomainError::Internal(e.to_string()))?;
    let log = crate::definitions::version(meta, None, DefinitionKind::RunLog, &run::log_key(id, run.logs), body);
    let d = store(meta, Some(&d), id, &run)?;
    Ok((
        vec![
            Change::DefinitionPut { definition: Arc::clone(&d) },
            Change::DefinitionPut { definition: Arc::clone(&log) },
        ],
        Outcome::Definition { definition: log, created: true },
    ))
}

/// `PATCH /v1/actions/runs/{id}/approval`.
pub(crate) fn decide(
    state: &State,
    meta: &WriteMeta,
    id: &str,
    decision: &Decision,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    let (d, mut run) = get(state, id).ok_or_else(|| DomainError::not_found("run", id.to_string()))?;
    let voter = meta.principal.clone().unwrap_or_else(|| Principal {
        id: meta.actor.clone(),
        roles: vec!["Admin".into()],
        teams: Vec::new(),
    });
    if !may_read(state, &voter, &run, meta.now) {
        return Err(DomainError::not_found("run", id.to_string()));
    }
    let perms = permissions(state, &run.action.identifier);
    if !may_approve(state, &voter, &perms, &run.trigger, meta.now) {
        return Err(DomainError::Forbidden(format!(
            "`{}` may not approve runs of action `{}`",
            voter.id, run.action.identifier
        )));
    }
    if run.status != Status::WaitingForApproval {
        return Err(DomainError::Invalid(format!(
            "run `{id}` does not wait for approval (it is {})",
            run.status.as_str()
        )));
    }
    if !run.awaits_vote_of(&voter.id) {
        return Err(DomainError::AlreadyExists { kind: "approval by", id: voter.id.clone() });
    }
    let all = run.required_approval.get("type").and_then(Value::as_str) == Some("ALL");
    let Some(approval) = run.approval.as_mut() else {
        return Err(DomainError::Internal(format!("run `{id}` waits without an approval")));
    };
    approval.votes.push(run::Vote {
        user_id: voter.id.clone(),
        approved: decision.approve,
        description: decision.description.clone(),
        at: meta.now,
    });
    let approved_by: Vec<&str> = approval.votes.iter().filter(|v| v.approved).map(|v| v.user_id.as_str()).collect();
    let outcome = if !decision.approve {
        Some(false)
    } else if !all {
        Some(true)
    } else {
        // ALL: every approver the lists name (an action whose lists name nobody but Admins counts its Admins).
        let needed = approvers(state, &perms);
        (needed.is_empty() || needed.iter().all(|n| approved_by.contains(&n.as_str()))).then_some(true)
    };
    match outcome {
        Some(true) => {
            approval.state = "APPROVED".into();
            approval.user_id = Some(voter.id.clone());
            approval.description = decision.description.clone();
            run.status = Status::InProgress;
            run.pending_execution = true;
        }
        Some(false) => {
            approval.state = "DECLINED".into();
            approval.user_id = Some(voter.id.clone());
            approval.description = decision.description.clone();
            run.status_label = Some("Declined".into());
            end(&mut run, Status::Failure, meta.now);
        }
        None => {}
    }
    run.updated_by = meta.actor.clone();
    run.updated_at = meta.now;
    let d = store(meta, Some(&d), id, &run)?;
    Ok(crate::definitions::stored(d, false))
}

/// The invocation worker's record of a run it sent (the server only). A run already recorded is left as it
/// is (the worker may send a run twice after a crash; the first record stands).
pub(crate) fn record(
    state: &State,
    meta: &WriteMeta,
    id: &str,
    inv: &Invocation,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    if meta.principal.as_ref().is_some_and(|p| !p.is_admin()) {
        return Err(DomainError::Forbidden("only the server records invocations".into()));
    }
    let (d, mut run) = get(state, id).ok_or_else(|| DomainError::not_found("run", id.to_string()))?;
    match inv.kind {
        Record::Notified => {
            if !run.pending_notification {
                return Ok((Vec::new(), Outcome::Unchanged));
            }
            run.pending_notification = false;
        }
        Record::Reported => {
            if run.follow.is_none() {
                return Ok((Vec::new(), Outcome::Unchanged));
            }
            run.follow = None;
        }
        Record::Sent => {
            if !run.pending_execution {
                return Ok((Vec::new(), Outcome::Unchanged));
            }
            run.pending_execution = false;
            run.payload = inv.payload.clone();
            run.response = inv.response.clone();
            if inv.external_run_id.is_some() {
                run.external_run_id = inv.external_run_id.clone();
            }
            if let Some(link) = &inv.link {
                run.link.push(link.clone());
            }
            if !run.status.ended() {
                run.follow = inv.follow.clone();
            }
        }
    }
    let mut changes = Vec::new();
    if let Some((status, label)) = &inv.end {
        if !run.status.ended() {
            end(&mut run, *status, meta.now);
            if label.is_some() {
                run.status_label = label.clone();
            }
        }
    }
    if let Some(message) = &inv.log {
        if run.logs < run::MAX_LOGS && run.log_bytes + message.len() as u64 <= run::MAX_LOG_BYTES {
            run.logs += 1;
            run.log_bytes += message.len().min(run::MAX_LONG_TEXT) as u64;
            let line = LogLine {
                message: berth_model::limits::truncate(message, run::MAX_LONG_TEXT).to_string(),
                termination_status: None,
                status_label: None,
            };
            let body = serde_json::to_value(&line).map_err(|e| DomainError::Internal(e.to_string()))?;
            changes.push(Change::DefinitionPut {
                definition: crate::definitions::version(
                    meta,
                    None,
                    DefinitionKind::RunLog,
                    &run::log_key(id, run.logs),
                    body,
                ),
            });
        }
    }
    run.updated_at = meta.now;
    let d = store(meta, Some(&d), id, &run)?;
    changes.insert(0, Change::DefinitionPut { definition: Arc::clone(&d) });
    Ok((changes, Outcome::Definition { definition: d, created: false }))
}

/// `PATCH /v1/actions/{id}/permissions` (Admins: the permission layer refuses the change to anyone else).
pub(crate) fn set_permissions(
    state: &State,
    meta: &WriteMeta,
    action: &str,
    patch: &Value,
) -> Result<(Vec<Change>, Outcome), DomainError> {
    if state.definition(DefinitionKind::Action, action).is_none() {
        return Err(DomainError::not_found("action", action.to_string()));
    }
    let updated = permissions(state, action).patched(patch)?;
    for (at, code) in updated.jq() {
        crate::derived::jq::compile(&code).map_err(|e| DomainError::Invalid(format!("`{at}`: {e}")))?;
    }
    let existing = state.definition(DefinitionKind::ActionPermissions, action);
    let d = crate::definitions::version(
        meta,
        existing.map(|d| &**d),
        DefinitionKind::ActionPermissions,
        action,
        updated.view(),
    );
    Ok(crate::definitions::stored(d, existing.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use serde_json::json;

    fn meta(n: i64) -> WriteMeta {
        WriteMeta {
            actor: "t".into(),
            origin: berth_model::Origin::Api,
            now: Timestamp::from_millis(1_700_000_000_000 + n),
            datasource: None,
            run_id: None,
            principal: None,
        }
    }

    fn apply(state: &mut State, n: i64, cmd: &Command) -> Result<(), DomainError> {
        let m = meta(n);
        let (changes, _) = crate::execute(state, &m, cmd)?;
        for change in changes {
            let before = state.previous_of(&change);
            let event = m.event_after(state, change, before);
            state.apply(&event).map_err(|e| DomainError::Internal(e.to_string()))?;
        }
        Ok(())
    }

    #[test]
    fn a_day2_run_with_rules_datasets_and_sealed_inputs_is_made() {
        let mut state = State::default();
        let bp = json!({"identifier": "svc", "title": "S", "schema": {"properties": {"n": {"type": "number"}}}});
        apply(&mut state, 1, &Command::CreateBlueprint { body: bp }).expect("bp");
        let input =
            berth_model::EntityInput::from_value(&json!({"identifier": "a", "properties": {"n": 1}})).expect("e");
        let write = Command::WriteEntity {
            blueprint: "svc".into(),
            path_id: None,
            input,
            mode: crate::WriteMode::Upsert,
            create_missing_related: false,
        };
        apply(&mut state, 2, &write).expect("entity");
        let action = json!({"title": "Deploy", "trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "svc",
            "condition": {"type": "SEARCH", "combinator": "and", "rules": [{"property": "n", "operator": ">", "value": 0}]},
            "userInputs": {"properties": {
                "v": {"type": "string", "pattern": "^v[0-9]+$"},
                "n": {"type": "number", "minimum": 1, "maximum": 9, "default": 2},
                "env": {"type": "string", "enum": ["a", "b"], "visible": {"jqQuery": ".form.n > 1"}},
                "dep": {"type": "string", "format": "entity", "blueprint": "svc"},
                "secret": {"type": "string", "encryption": "aes256-gcm"}},
                "required": {"jqQuery": "if .form.n > 3 then [\"v\"] else [] end"}}},
            "invocationMethod": {"type": "KAFKA"}, "requiredApproval": {"type": "ALL"}});
        let how = crate::definitions::DefinitionWrite::Create(action);
        let cmd = Command::WriteDefinition { kind: DefinitionKind::Action, identifier: "deploy".into(), how };
        apply(&mut state, 3, &cmd).expect("action");
        let run = |props: serde_json::Value| {
            Command::CreateRun(Box::new(NewRun {
                id: "r_aaaaaaaaaaaaaaaa".into(),
                action: "deploy".into(),
                request: RunRequest {
                    properties: props.as_object().cloned().unwrap_or_default(),
                    entity: Some("a".into()),
                },
                source: Source::Api,
                run_as: None,
                event: None,
            }))
        };
        apply(&mut state, 4, &run(json!({"v": "v1", "n": 3, "env": "a", "dep": "a", "secret": {"sealed": "AAAA"}})))
            .expect("a valid run");
        let (_, made) = get(&state, "r_aaaaaaaaaaaaaaaa").expect("made");
        assert_eq!(made.status, Status::WaitingForApproval);
        assert_eq!(made.trigger["action"]["encryptedProperties"], json!(["secret"]));
        let e = apply(&mut state, 5, &run(json!({"n": 5}))).expect_err("v is required when n > 3").to_string();
        assert!(e.contains("`v` is required") || e.contains("already exists"), "{e}");
    }
}
