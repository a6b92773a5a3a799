//! `GET /subscriptions` (Admins): every subscription with its destination and delivery (state, lag,
//! delivered, failures, dead letters); `GET /subscriptions/{id}`: one subscription, its last attempts on
//! this replica and its dead letters, which can be retried or dropped (`POST .../dead-letters/retry`,
//! `POST .../dead-letters/drop`).

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use berth_model::DefinitionKind;
use berth_model::subscription::{DeadLetter, Destination, Subscription};
use berth_server::AppState;

use crate::page::{Layout, UiError, UiResult};
use crate::session::{Session, encode};

pub struct Row {
    pub href: String,
    pub title: String,
    pub kind: &'static str,
    pub target: String,
    pub enabled: bool,
    pub state: String,
    pub lag: u64,
    pub delivered: u64,
    pub failures: u64,
    pub dead: usize,
}

#[derive(Template)]
#[template(path = "subscriptions.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
}

pub struct AttemptRow {
    pub at: String,
    pub seq: u64,
    pub delivered: bool,
    pub detail: String,
    pub millis: u64,
}

#[derive(Template)]
#[template(path = "subscription.html")]
struct OnePage {
    layout: Layout,
    row: Row,
    filter: String,
    max_attempts: u32,
    /// How the destination's order is kept (`concurrency`).
    order: String,
    last_error: String,
    /// How long the worker rested for a busy writer (`berth_delivery::yielding`), in seconds.
    yielded: String,
    position: u64,
    head: u64,
    attempts: Vec<AttemptRow>,
    dead: Vec<DeadLetter>,
    dropped: u64,
}

/// Where a destination sends (the URL without its query, which may hold a token).
fn target(d: &Destination) -> String {
    match d {
        Destination::Webhook { url, .. } => url.split('?').next().unwrap_or_default().to_string(),
        Destination::Kafka { topic } => topic.clone(),
        Destination::Nats { subject } => subject.clone(),
        Destination::RedisStream { stream } => stream.clone(),
    }
}

fn row(app: &AppState, d: &berth_model::Definition, s: &Subscription) -> Row {
    let status = app.delivery.status(&d.identifier).unwrap_or_default();
    Row {
        href: format!("/subscriptions/{}", encode(&d.identifier)),
        title: s.title.clone().unwrap_or_else(|| d.identifier.clone()),
        kind: s.destination.kind(),
        target: target(&s.destination),
        enabled: s.enabled,
        state: if status.state.is_empty() { "not running here".into() } else { status.state.to_string() },
        lag: status.head.saturating_sub(status.position),
        delivered: status.delivered,
        failures: status.failures,
        dead: s.dead_letters.len(),
    }
}

pub async fn list(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    session.require_admin("see subscriptions")?;
    let view = app.pipeline.view();
    let rows = view
        .definitions(DefinitionKind::Subscription)
        .filter_map(|d| Subscription::parse(&d.body).ok().map(|s| row(&app, d, &s)))
        .collect();
    crate::page::html(&ListPage { layout: session.layout(&app, "Subscriptions", "subscriptions"), rows })
}

fn subscription(app: &AppState, id: &str) -> UiResult<(std::sync::Arc<berth_model::Definition>, Subscription)> {
    let view = app.pipeline.view();
    let d = view
        .definition(DefinitionKind::Subscription, id)
        .cloned()
        .ok_or_else(|| UiError::not_found(format!("there is no subscription `{id}`")))?;
    let s = Subscription::parse(&d.body).map_err(|e| UiError::not_found(e.to_string()))?;
    Ok((d, s))
}

pub async fn page(State(app): State<AppState>, session: Session, Path(id): Path<String>) -> UiResult<Response> {
    session.require_admin("see subscriptions")?;
    let (d, s) = subscription(&app, &id)?;
    let status = app.delivery.status(&id).unwrap_or_default();
    let position = app.pipeline.position(&berth_delivery::position_name(&id)).await.ok().flatten().unwrap_or(0);
    let head = app.pipeline.store_head().await.unwrap_or(status.head);
    let attempts = status
        .attempts
        .iter()
        .rev()
        .map(|a| AttemptRow {
            at: a.at.to_rfc3339(),
            seq: a.seq,
            delivered: a.delivered,
            detail: match (&a.status, &a.error) {
                (_, Some(e)) => e.clone(),
                (Some(code), None) => format!("HTTP {code}"),
                (None, None) => "acknowledged".into(),
            },
            millis: a.millis,
        })
        .collect();
    let mut row = row(&app, &d, &s);
    row.lag = head.saturating_sub(position);
    let page = OnePage {
        layout: session.layout(&app, row.title.clone(), "subscriptions"),
        filter: d.body.get("filter").map(|f| f.to_string()).unwrap_or_else(|| "{}".into()),
        max_attempts: s.max_attempts,
        order: if s.concurrency > 1 {
            format!("per entity, {} requests in flight", s.concurrency)
        } else {
            "log order".to_string()
        },
        last_error: status.last_error.clone().unwrap_or_default(),
        yielded: format!("{:.1} s", status.yielded.as_secs_f64()),
        position,
        head,
        attempts,
        dead: s.dead_letters.clone(),
        dropped: s.dead_letters_dropped,
        row,
    };
    crate::page::html(&page)
}

async fn edit_dead(
    app: &AppState,
    session: &Session,
    id: &str,
    form: &crate::form::FormData,
    edit: impl FnOnce(&mut Vec<DeadLetter>),
) -> UiResult<Response> {
    session.check_csrf(form)?;
    let href = format!("/subscriptions/{}", encode(id));
    session.require_admin_to_change(app, &href, "change subscriptions")?;
    subscription(app, id)?;
    match berth_delivery::dead_letters::edit(&app.pipeline, session.meta(), id, edit).await {
        Ok(_) => Ok(crate::page::see_other(&href)),
        Err(berth_delivery::dead_letters::EditError::Domain(e)) => Err(berth_server::error::ApiError::from(e).into()),
        Err(berth_delivery::dead_letters::EditError::Pipeline(e)) => Err(berth_server::error::ApiError::from(e).into()),
    }
}

pub async fn retry(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    edit_dead(&app, &session, &id, &form, |l| berth_delivery::dead_letters::mark_for_retry(l, None)).await
}

pub async fn drop_all(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    edit_dead(&app, &session, &id, &form, |l| berth_delivery::dead_letters::drop_letters(l, None)).await
}
