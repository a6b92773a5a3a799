//! `GET /deployments`: what runs where (services × environments, drift and stale versions highlighted,
//! filtered by team, system, domain; at a past time from the log) and DORA's four keys with their bands
//! and a weekly chart (the organisation, a team or a service, in one environment). Everything is read
//! through the session's view, on the search pool.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use berth_catalog::deployments::{self, Dora, DoraFilter, Matrix, MatrixFilter};
use berth_catalog::replay::ReplayError;
use berth_server::AppState;

use crate::page::{Layout, UiResult};
use crate::session::{Session, encode};

/// The page's filters, as the form sends them (empty fields are absent).
#[derive(serde::Deserialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    pub team: String,
    #[serde(default)]
    pub system: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub stale_days: String,
    #[serde(default)]
    pub days: String,
    #[serde(default)]
    pub at: String,
}

pub struct CellView {
    pub version: String,
    pub since: String,
    pub by: String,
    pub stale: bool,
    pub href: String,
}

pub struct RowView {
    pub service: String,
    pub href: String,
    /// This page with the service's timeline.
    pub timeline: String,
    pub drift: bool,
    /// One per environment column (`None`: never deployed there).
    pub cells: Vec<Option<CellView>>,
}

/// One deployment of the chosen service's timeline.
pub struct DeployView {
    pub at: String,
    pub environment: String,
    pub version: String,
    pub status: String,
    /// The status badge's colour class.
    pub class: &'static str,
    pub actor: String,
    pub commit: String,
    pub href: String,
    /// The pipeline run, when reported (a link out).
    pub run: Option<String>,
}

/// The most deployments the timeline shows.
const TIMELINE_LIMIT: usize = 100;

pub struct Key {
    pub name: &'static str,
    pub value: String,
    pub band: String,
    /// The badge's colour class for the band.
    pub class: &'static str,
}

fn band_class(band: &str) -> &'static str {
    match band {
        "elite" => "badge-green",
        "high" => "badge-blue",
        "medium" => "badge-yellow",
        "low" => "badge-red",
        _ => "badge-gray",
    }
}

#[derive(Template)]
#[template(path = "deployments.html")]
struct DeploymentsPage {
    layout: Layout,
    f: Filters,
    environments: Vec<String>,
    rows: Vec<RowView>,
    at: Option<String>,
    dora_environment: String,
    dora_days: u32,
    dora_scope: String,
    keys: Vec<Key>,
    chart: String,
    /// The chosen service's deployments, newest first (`None`: no service chosen).
    timeline: Option<Vec<DeployView>>,
    error: Option<String>,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

pub async fn page(State(app): State<AppState>, session: Session, Query(f): Query<Filters>) -> UiResult<Response> {
    let mut error = None;
    let stale_days = some(&f.stale_days).and_then(|d| d.parse::<u32>().ok()).filter(|d| (1..=3650).contains(d));
    let days = some(&f.days).and_then(|d| d.parse::<u32>().ok()).filter(|d| (1..=730).contains(d)).unwrap_or(90);
    let at = match some(&f.at) {
        None => None,
        Some(t) => match berth_model::Timestamp::parse(&t) {
            Some(t) => Some(t),
            None => {
                error = Some(format!("{t:?} is not a date-time (use ISO 8601, like 2026-12-01T00:00:00Z)"));
                None
            }
        },
    };
    // A past time the log cannot be replayed for now (too long, or another replay running) is said on the
    // page, which then shows the present.
    let mut at = at;
    let past = match at {
        Some(t) => match berth_catalog::replay::state_at(&app.pipeline, t).await {
            Ok(state) => Some(state),
            Err(e @ (ReplayError::TooLong | ReplayError::Busy)) => {
                error = Some(e.to_string());
                at = None;
                None
            }
            Err(e) => return Err(berth_server::error::ApiError::from(e).into()),
        },
        None => None,
    };
    let matrix_filter = MatrixFilter {
        team: some(&f.team),
        system: some(&f.system),
        domain: some(&f.domain),
        stale_days: Some(stale_days.unwrap_or(30)),
    };
    let now = berth_server::now();
    let environment = some(&f.environment).unwrap_or_else(|| "production".to_string());
    let dora_filter = DoraFilter {
        service: some(&f.service),
        team: some(&f.team),
        environment: environment.clone(),
        from: berth_model::Timestamp::from_millis(now.millis() - i64::from(days) * 86_400_000),
        to: berth_model::Timestamp::from_millis(now.millis() + 1),
        failure_window_hours: 24,
    };
    let view = app.pipeline.view();
    let caller = session.caller.clone();
    let pipeline = std::sync::Arc::clone(&app.pipeline);
    let (service, timeline_env) = (some(&f.service), some(&f.environment));
    let (matrix, dora, timeline) = berth_server::searching::run(&app, move || {
        let scoped = berth_server::access::scoped(&view, &caller);
        let at_time = at.unwrap_or(now);
        // A past matrix from an index of its own (built outside the kept one's lock).
        let past =
            past.map(|p| deployments::matrix(&deployments::Index::build(&p), &p, &scoped, &matrix_filter, at_time));
        let timeline =
            service.map(|s| deployments::timeline(&view, &scoped, &s, timeline_env.as_deref(), TIMELINE_LIMIT));
        let (m, d): (Matrix, Dora) = pipeline.deployments().with(&view, |index, state| {
            let m = past.unwrap_or_else(|| deployments::matrix(index, state, &scoped, &matrix_filter, at_time));
            (m, deployments::dora(index, state, &scoped, &dora_filter))
        });
        Ok((m, d, timeline))
    })
    .await?;
    let rows = matrix
        .rows
        .iter()
        .map(|r| RowView {
            service: r.title.clone().unwrap_or_else(|| r.service.clone()),
            href: format!("/entities/service/{}", encode(&r.service)),
            timeline: format!("/deployments?service={}#timeline", encode(&r.service)),
            drift: r.drift,
            cells: matrix
                .environments
                .iter()
                .map(|env| {
                    r.cells.get(env).map(|c| CellView {
                        version: c.version.clone(),
                        since: c.since.to_rfc3339().chars().take(10).collect(),
                        by: c.by.clone().unwrap_or_default(),
                        stale: c.stale,
                        href: format!("/entities/deployment/{}", encode(&c.deployment)),
                    })
                })
                .collect(),
        })
        .collect();
    let band = |k: &str| dora.bands.get(k).map(|b| b.to_string()).unwrap_or_else(|| "none".into());
    let hours = |h: Option<f64>| h.map_or("no data".to_string(), |h| format!("{h:.1} h"));
    let keys = vec![
        Key {
            name: "Deployment frequency",
            value: format!("{} in {days} days ({:.2} a day)", dora.deployments, dora.per_day),
            band: band("deploymentFrequency"),
            class: band_class(&band("deploymentFrequency")),
        },
        Key {
            name: "Lead time for changes (median)",
            value: hours(dora.lead_time_hours),
            band: band("leadTime"),
            class: band_class(&band("leadTime")),
        },
        Key {
            name: "Change failure rate",
            value: dora.change_failure_rate.map_or("no data".into(), |r| {
                format!(
                    "{:.0} % ({} of {})",
                    r * 100.0,
                    dora.failed_changes,
                    dora.weeks.iter().map(|w| w.finished).sum::<usize>()
                )
            }),
            band: band("changeFailureRate"),
            class: band_class(&band("changeFailureRate")),
        },
        Key {
            name: "Time to restore (median)",
            value: format!("{} over {} incidents", hours(dora.time_to_restore_hours), dora.incidents),
            band: band("timeToRestore"),
            class: band_class(&band("timeToRestore")),
        },
    ];
    let dora_scope = match (some(&f.service), some(&f.team)) {
        (Some(s), _) => format!("service {s}"),
        (None, Some(t)) => format!("team {t}"),
        (None, None) => "the organisation".to_string(),
    };
    let timeline = timeline.map(|list| {
        list.into_iter()
            .map(|d| {
                let status = d.status.unwrap_or_default();
                let class = match berth_model::deployment::Status::parse(&status) {
                    Some(berth_model::deployment::Status::Success) => "badge-green",
                    Some(berth_model::deployment::Status::InProgress) => "badge-blue",
                    Some(_) => "badge-red",
                    None => "badge-gray",
                };
                DeployView {
                    at: d.at.to_rfc3339().chars().take(16).collect::<String>().replace('T', " "),
                    environment: d.environment.unwrap_or_default(),
                    version: d.version.unwrap_or_default(),
                    status,
                    class,
                    actor: d.actor.unwrap_or_default(),
                    commit: d.commit.map(|c| c.chars().take(10).collect()).unwrap_or_default(),
                    href: format!("/entities/deployment/{}", encode(&d.deployment)),
                    run: d.url.filter(|u| u.starts_with("https://") || u.starts_with("http://")),
                }
            })
            .collect()
    });
    let page = DeploymentsPage {
        layout: session.layout(&app, "Deployments", "deployments"),
        chart: weekly_chart(&dora),
        f,
        environments: matrix.environments,
        rows,
        at: at.map(|t| t.to_rfc3339()),
        dora_environment: environment,
        dora_days: days,
        dora_scope,
        keys,
        timeline,
        error,
    };
    crate::page::html_status(axum::http::StatusCode::OK, &page)
}

/// Successful deployments per week as bars, failed changes as a darker part of each, each bar titled with
/// its week and figures (the same figures are in the table beside it).
fn weekly_chart(d: &Dora) -> String {
    use crate::fmt::esc;
    let max = d.weeks.iter().map(|w| w.deployments.max(w.failed_changes)).max().unwrap_or(0).max(1);
    let (bar, gap, height, label, pad) = (18usize, 6usize, 120usize, 18usize, 16usize);
    let width = d.weeks.len() * (bar + gap) + 2 * pad;
    let mut svg = format!(
        r#"<svg class="chart trend" role="img" aria-labelledby="dora-t" viewBox="0 0 {width} {}" width="{width}" height="{}"><title id="dora-t">Deployments and failed changes per week</title>"#,
        height + label,
        height + label
    );
    for (i, w) in d.weeks.iter().enumerate() {
        let x = pad + i * (bar + gap);
        let date: String = w.start.to_rfc3339().chars().take(10).collect();
        let h = (w.deployments * height).div_ceil(max);
        svg.push_str(&format!(
            r#"<rect class="bar bar-2" x="{x}" y="{}" width="{bar}" height="{h}"><title>week of {}: {} deployments, {} failed changes</title></rect>"#,
            height - h,
            esc(&date),
            w.deployments,
            w.failed_changes
        ));
        let fh = (w.failed_changes * height).div_ceil(max);
        if fh > 0 {
            svg.push_str(&format!(
                r#"<rect class="bar bar-4" x="{}" y="{}" width="{}" height="{fh}"><title>week of {}: {} failed changes</title></rect>"#,
                x + bar / 4,
                height - fh,
                bar / 2,
                esc(&date),
                w.failed_changes
            ));
        }
        if i % 2 == 0 {
            svg.push_str(&format!(
                r#"<text class="bar-label" x="{}" y="{}" text-anchor="middle">{}</text>"#,
                x + bar / 2,
                height + label - 4,
                esc(date.get(5..10).unwrap_or(&date))
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}
