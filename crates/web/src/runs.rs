//! Runs in the UI: the runs list with filters (`GET /runs`), a run's page (`GET /runs/{id}`: status, label,
//! links, summary, inputs, approval and logs) whose live part follows the run as it changes through
//! server-sent events (`GET /runs/{id}/live`, one HTML fragment per change, until the run ends), and the
//! approvers' answer (`POST /runs/{id}/approval`). Every read goes through `berth_engine::runs::may_read`:
//! a run the session may not read is a 404 like a missing one.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use berth_engine::Command;
use berth_model::DefinitionKind;
use berth_model::run::{Decision, Run, Status};
use berth_server::AppState;
use serde_json::Value;

use crate::form::{FormData, Query};
use crate::page::{Layout, UiError, UiResult, html, see_other};
use crate::session::{Session, encode};

struct RunRow {
    id: String,
    href: String,
    action: String,
    entity: String,
    status: &'static str,
    class: &'static str,
    label: String,
    by: String,
    /// Safe HTML.
    at: String,
}

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Success => "badge-green",
        Status::Failure => "badge-red",
        Status::InProgress => "badge-blue",
        Status::WaitingForApproval => "badge-yellow",
    }
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    layout: Layout,
    rows: Vec<RunRow>,
    actions: Vec<String>,
    action: String,
    status: String,
    mine: bool,
}

/// `GET /runs?action=&status=&mine=`: the newest 200 runs the session may read.
pub async fn list(State(app): State<AppState>, session: Session, Query(q): Query) -> UiResult<Response> {
    let view = app.pipeline.view();
    let principal = session.caller.principal();
    let now = berth_server::now();
    let action = q.get("action").unwrap_or_default().to_string();
    let status = q.get("status").unwrap_or_default().to_string();
    let mine = q.has("mine");
    let rows = berth_engine::runs::newest_first(&view)
        .into_iter()
        .filter_map(|d| Run::from_body(&d.body).ok().map(|r| (d.created_at, d.identifier.clone(), r)))
        .filter(|(_, _, r)| {
            (action.is_empty() || r.action.identifier == action)
                && (status.is_empty() || r.status.as_str() == status)
                && (!mine || r.created_by == principal.id)
                && berth_engine::runs::may_read(&view, &principal, r, now)
        })
        .take(200)
        .map(|(at, id, r)| RunRow {
            href: format!("/runs/{id}"),
            action: r.action.title.clone().unwrap_or_else(|| r.action.identifier.clone()),
            entity: r.entity.as_ref().map(|e| e.identifier.clone()).unwrap_or_default(),
            status: r.status.as_str(),
            class: status_class(r.status),
            label: r.status_label.clone().unwrap_or_default(),
            by: r.created_by.clone(),
            at: crate::fmt::time_html(at, now),
            id,
        })
        .collect();
    let actions = view.definitions(DefinitionKind::Action).map(|d| d.identifier.clone()).collect();
    html(&RunsPage { layout: session.layout(&app, "Runs", "runs"), rows, actions, action, status, mine })
}

struct LogRow {
    message: String,
    /// Safe HTML.
    at: String,
}

/// The part of a run's page that changes while it runs.
#[derive(Template)]
#[template(path = "run_live.html")]
struct Live {
    id: String,
    status: &'static str,
    class: &'static str,
    label: String,
    ended: bool,
    links: Vec<String>,
    summary: String,
    logs: Vec<LogRow>,
    approval: String,
    votes: Vec<(String, &'static str)>,
    can_vote: bool,
    csrf: String,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    layout: Layout,
    id: String,
    action: String,
    action_href: String,
    entity: Option<(String, String)>,
    by: String,
    source: String,
    inputs: Vec<(String, String)>,
    live: String,
}

/// The run, if the session may read it (else a 404, as for a missing run).
fn readable(app: &AppState, session: &Session, id: &str) -> UiResult<Run> {
    let view = app.pipeline.view();
    let (_, run) =
        berth_engine::runs::get(&view, id).ok_or_else(|| UiError::not_found(format!("there is no run `{id}`")))?;
    if !berth_engine::runs::may_read(&view, &session.caller.principal(), &run, berth_server::now()) {
        return Err(UiError::not_found(format!("there is no run `{id}`")));
    }
    Ok(run)
}

fn live(app: &AppState, session: &Session, id: &str, run: &Run) -> Live {
    let view = app.pipeline.view();
    let now = berth_server::now();
    let prefix = format!("{id}#");
    let logs = view
        .definitions_from(DefinitionKind::RunLog, &prefix)
        .take_while(|d| d.identifier.starts_with(&prefix))
        .map(|d| LogRow {
            message: d.body.get("message").and_then(Value::as_str).unwrap_or_default().to_string(),
            at: crate::fmt::time_html(d.created_at, now),
        })
        .collect();
    let principal = session.caller.principal();
    let perms = berth_engine::runs::permissions(&view, &run.action.identifier);
    let can_vote = run.awaits_vote_of(&principal.id)
        && berth_engine::runs::may_approve(&view, &principal, &perms, &run.trigger, now);
    Live {
        id: id.to_string(),
        status: run.status.as_str(),
        class: status_class(run.status),
        label: run.status_label.clone().unwrap_or_default(),
        ended: run.status.ended(),
        links: run.link.clone(),
        summary: run.summary.clone(),
        logs,
        approval: run.approval.as_ref().map(|a| a.state.clone()).unwrap_or_default(),
        votes: run
            .approval
            .as_ref()
            .map(|a| {
                a.votes.iter().map(|v| (v.user_id.clone(), if v.approved { "approved" } else { "declined" })).collect()
            })
            .unwrap_or_default(),
        can_vote,
        csrf: session.csrf.clone(),
    }
}

/// `GET /runs/{id}`.
pub async fn page(State(app): State<AppState>, session: Session, Path(id): Path<String>) -> UiResult<Response> {
    let run = readable(&app, &session, &id)?;
    let fragment = live(&app, &session, &id, &run).render().map_err(|e| UiError::internal(format!("template: {e}")))?;
    let show = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.contains_key("sealed") => "•••••• (encrypted)".into(),
        other => other.to_string(),
    };
    let page = RunPage {
        layout: session.layout(&app, format!("Run {id}"), "runs"),
        action: run.action.title.clone().unwrap_or_else(|| run.action.identifier.clone()),
        action_href: format!("/runs?action={}", encode(&run.action.identifier)),
        entity: match (&run.blueprint, &run.entity) {
            (Some(b), Some(e)) => {
                Some((crate::entity::entity_href(&b.identifier, &e.identifier), e.identifier.clone()))
            }
            _ => None,
        },
        by: run.created_by.clone(),
        source: format!("{:?}", run.source).to_uppercase(),
        inputs: run.properties.iter().map(|(k, v)| (k.clone(), show(v))).collect(),
        live: fragment,
        id,
    };
    html(&page)
}

/// `GET /runs/{id}/live`: server-sent events, each the run's live part as HTML, sent when the run or its
/// logs change; the stream ends with the run.
pub async fn events(State(app): State<AppState>, session: Session, Path(id): Path<String>) -> UiResult<Response> {
    readable(&app, &session, &id)?;
    let stream = async_stream(app, session, id);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

fn async_stream(
    app: AppState,
    session: Session,
    id: String,
) -> impl futures_util::Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(
        (app, session, id, None::<(u64, u32, Status)>, false),
        |(app, session, id, last, done)| async move {
            if done {
                return None;
            }
            loop {
                let view = app.pipeline.view();
                let (d, run) = berth_engine::runs::get(&view, &id)?;
                let mark = (d.updated_at.millis() as u64, run.logs, run.status);
                if last != Some(mark) {
                    let html = live(&app, &session, &id, &run).render().unwrap_or_default();
                    let ended = run.status.ended();
                    return Some((
                        Ok(SseEvent::default().event("run").data(html)),
                        (app, session, id, Some(mark), ended),
                    ));
                }
                let seq = view.seq();
                drop(view);
                app.pipeline.wait_past(seq, Duration::from_secs(10)).await;
            }
        },
    )
}

/// `POST /runs/{id}/approval`: an approver's answer (`decision` APPROVE or DECLINE, `description`).
pub async fn approve(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    form: FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    readable(&app, &session, &id)?;
    let decision = Decision {
        approve: form.get("decision") == Some("APPROVE"),
        description: form.get("description").map(str::to_string),
    };
    let (outcome, _) = app.pipeline.write_one(session.meta(), Command::DecideRun { id: id.clone(), decision }).await?;
    outcome?;
    Ok(see_other(&format!("/runs/{id}")))
}
