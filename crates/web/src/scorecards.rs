//! Scorecard pages: `GET /scorecards` lists every blueprint's scorecards; `GET /scorecards/{bp}/{id}` shows
//! one: how many entities are at each level, each rule's pass rate, and the levels per team. Everything is
//! counted through the session's view (what it may not read is not counted), on the search pool under the
//! search deadline.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use berth_engine::aggregate::{Aggregation, Func, GroupBy};
use berth_model::DefinitionKind;
use berth_model::definition::{scorecard_key, split_scorecard_key};
use berth_model::query::Query as Rules;
use berth_server::AppState;
use serde_json::{Value, json};

use crate::dashboards::bars;
use crate::page::{Layout, UiError, UiResult};
use crate::session::{Session, encode};

/// The most teams the per-team table shows.
const MAX_TEAMS: usize = 50;

pub struct CardLink {
    pub href: String,
    pub title: String,
    pub blueprint: String,
}

#[derive(Template)]
#[template(path = "scorecards.html")]
struct ListPage {
    layout: Layout,
    cards: Vec<CardLink>,
    /// The blueprints a new scorecard may judge, the last attempt's form and error (Admins).
    blueprints: Vec<String>,
    form: crate::form::FormData,
    error: Option<String>,
}

pub struct RuleRate {
    pub title: String,
    pub level: String,
    pub passed: usize,
    pub judged: usize,
    /// Percent, rounded.
    pub rate: usize,
}

/// One day of the trend, as text: its date and the count at each level (in level order).
pub struct TrendRow {
    pub date: String,
    pub counts: Vec<usize>,
}

/// How many days the trend shows.
const TREND_DAYS: u32 = 14;

pub struct TeamLevels {
    pub team: String,
    /// (level, count), in level order.
    pub counts: Vec<(String, usize)>,
}

#[derive(Template)]
#[template(path = "scorecard.html")]
struct CardPage {
    layout: Layout,
    title: String,
    blueprint: String,
    bp_href: String,
    levels: Vec<String>,
    /// The level distribution, drawn (safe HTML).
    chart: String,
    /// The distribution on each of the last days, drawn (safe HTML), and as a table.
    trend: String,
    trend_rows: Vec<TrendRow>,
    rules: Vec<RuleRate>,
    teams: Vec<TeamLevels>,
    /// The rule builder (Admins): where it posts, the levels a rule may have, the fields and operators
    /// offered, and the last attempt's error.
    action: String,
    rule_levels: Vec<String>,
    fields: Vec<String>,
    operators: &'static [&'static str],
    rule_error: Option<String>,
}

/// The operators the rule builder offers (the rules language has more; the API takes them all).
const OPERATORS: &[&str] =
    &["=", "!=", ">", ">=", "<", "<=", "isEmpty", "isNotEmpty", "contains", "beginsWith", "in", "containsAny"];

/// The fields a rule may test: meta-properties, stored and derived properties.
fn rule_fields(view: &berth_engine::State, bp: &str) -> Vec<String> {
    let mut out: Vec<String> =
        ["$title", "$identifier", "$team", "$createdAt", "$updatedAt"].map(String::from).to_vec();
    if let Some(b) = view.blueprint(bp) {
        out.extend(b.def.schema.properties.keys().cloned());
        for m in [&b.def.mirror_properties, &b.def.calculation_properties, &b.def.aggregation_properties] {
            out.extend(m.keys().cloned());
        }
    }
    out
}

/// The rule the builder form describes (`{identifier, title, level, query}`); a value that parses as JSON is
/// taken as JSON (a number, `true`, a list), else as text.
pub fn rule_of(form: &crate::form::FormData) -> Result<Value, String> {
    let id = form.get("identifier").ok_or("a rule needs an identifier")?;
    let level = form.get("level").ok_or("a rule needs a level")?;
    let field = form.get("property").ok_or("a rule needs a field to test")?;
    let op = form.get("operator").unwrap_or("=");
    let mut condition = json!({"property": field, "operator": op});
    if !matches!(op, "isEmpty" | "isNotEmpty") {
        let raw = form.get("value").ok_or("this operator needs a value")?;
        condition["value"] = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    }
    Ok(json!({"identifier": id, "title": form.get("title").unwrap_or(id), "level": level,
        "query": {"combinator": "and", "conditions": [condition]}}))
}

/// Adds a rule to a scorecard (Admins): the scorecard's rules with this one added (or replaced, by
/// identifier), written as one change; a refusal shows the page again with the reason.
pub async fn add_rule(
    State(app): State<AppState>,
    session: Session,
    Path((bp, id)): Path<(String, String)>,
    form: crate::form::FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, &href(&bp, &id), "change scorecards")?;
    let view = app.pipeline.view();
    let key = scorecard_key(&bp, &id);
    let def = view
        .definition(DefinitionKind::Scorecard, &key)
        .cloned()
        .ok_or_else(|| UiError::not_found(format!("there is no scorecard `{id}` of blueprint `{bp}`")))?;
    let invalid = berth_server::error::status_of(berth_model::ErrorCode::InvalidRequest);
    let rule = match rule_of(&form) {
        Ok(r) => r,
        Err(e) => return render(&app, &session, bp, id, Some(e), invalid).await,
    };
    let mut rules: Vec<Value> = def.body["rules"].as_array().cloned().unwrap_or_default();
    rules.retain(|r| r["identifier"] != rule["identifier"]);
    rules.push(rule);
    let mut changes = serde_json::Map::new();
    changes.insert("rules".into(), Value::Array(rules));
    let how = berth_engine::definitions::DefinitionWrite::Merge(changes);
    let command = berth_engine::Command::WriteDefinition { kind: DefinitionKind::Scorecard, identifier: key, how };
    let (outcome, _) = app.pipeline.write_one(session.meta(), command).await?;
    match outcome {
        Ok(_) => Ok(crate::page::see_other(&href(&bp, &id))),
        Err(e) => {
            let status = berth_server::error::ApiError::from(e.clone()).status;
            render(&app, &session, bp, id, Some(e.to_string()), status).await
        }
    }
}

pub async fn list(State(app): State<AppState>, session: Session) -> UiResult<Response> {
    render_list(&app, &session, crate::form::FormData::default(), None, axum::http::StatusCode::OK)
}

fn render_list(
    app: &AppState,
    session: &Session,
    form: crate::form::FormData,
    error: Option<String>,
    status: axum::http::StatusCode,
) -> UiResult<Response> {
    let view = app.pipeline.view();
    let cards = view
        .definitions(DefinitionKind::Scorecard)
        .filter_map(|d| {
            let (bp, id) = split_scorecard_key(&d.identifier)?;
            Some(CardLink {
                href: format!("/scorecards/{}/{}", encode(bp), encode(id)),
                title: d.body["title"].as_str().unwrap_or(id).to_string(),
                blueprint: bp.to_string(),
            })
        })
        .collect();
    let blueprints = view.blueprints().map(|b| b.def.identifier.clone()).collect();
    let page = ListPage { layout: session.layout(app, "Scorecards", "scorecards"), cards, blueprints, form, error };
    crate::page::html_status(status, &page)
}

/// Creates a scorecard without rules (Admins), then shows its page, where rules are added.
pub async fn create(State(app): State<AppState>, session: Session, form: crate::form::FormData) -> UiResult<Response> {
    session.check_csrf(&form)?;
    session.require_admin_to_change(&app, "/scorecards", "create scorecards")?;
    let invalid = berth_server::error::status_of(berth_model::ErrorCode::InvalidRequest);
    let (Some(bp), Some(id)) = (form.get("blueprint"), form.get("identifier")) else {
        let e = "a scorecard needs a blueprint and an identifier".to_string();
        return render_list(&app, &session, form, Some(e), invalid);
    };
    let (bp, id) = (bp.to_string(), id.to_string());
    if let Err(e) = berth_model::ids::validate_blueprint_id(&id) {
        return render_list(&app, &session, form.clone(), Some(e.to_string()), invalid);
    }
    let body = json!({"title": form.get("title").unwrap_or(&id), "rules": []});
    let how = berth_engine::definitions::DefinitionWrite::Create(body);
    let identifier = scorecard_key(&bp, &id);
    let command = berth_engine::Command::WriteDefinition { kind: DefinitionKind::Scorecard, identifier, how };
    let (outcome, _) = app.pipeline.write_one(session.meta(), command).await?;
    match outcome {
        Ok(_) => Ok(crate::page::see_other(&href(&bp, &id))),
        Err(e) => {
            let status = berth_server::error::ApiError::from(e.clone()).status;
            render_list(&app, &session, form, Some(e.to_string()), status)
        }
    }
}

/// How many readable entities of `blueprint` matching `query` have each value of the scorecard (or rule).
fn count_values(
    scoped: &berth_server::access::Scoped<'_>,
    query: Rules,
    scorecard: &str,
    rule: Option<&str>,
) -> Result<Vec<(Value, usize)>, berth_model::DomainError> {
    let group_by = Some(GroupBy::Scorecard { scorecard: scorecard.to_string(), rule: rule.map(str::to_string) });
    let agg =
        Aggregation { func: Func::CountValues, query, property: None, group_by, per: None, measure_time_by: None };
    Ok(scoped.aggregate(agg)?.values.unwrap_or_default())
}

fn count_of(values: &[(Value, usize)], wanted: &str) -> usize {
    values.iter().filter(|(v, _)| v.as_str() == Some(wanted)).map(|(_, n)| n).sum()
}

pub async fn page(
    State(app): State<AppState>,
    session: Session,
    Path((bp, id)): Path<(String, String)>,
) -> UiResult<Response> {
    render(&app, &session, bp, id, None, axum::http::StatusCode::OK).await
}

/// The scorecard's page, with the rule builder's error when it has one.
async fn render(
    app: &AppState,
    session: &Session,
    bp: String,
    id: String,
    rule_error: Option<String>,
    status: axum::http::StatusCode,
) -> UiResult<Response> {
    let app = app.clone();
    let view = app.pipeline.view();
    let def = view
        .definition(DefinitionKind::Scorecard, &scorecard_key(&bp, &id))
        .cloned()
        .ok_or_else(|| UiError::not_found(format!("there is no scorecard `{id}` of blueprint `{bp}`")))?;
    let card = berth_model::scorecard::Scorecard::parse(&bp, &id, &def.body)
        .map_err(|e| UiError::internal(format!("stored scorecard {bp}/{id}: {e}")))?
        .0;
    let title = card.title.clone();
    let levels: Vec<String> = card.levels.iter().map(|l| l.title.clone()).collect();
    let caller = session.caller.clone();
    // The trend: the catalog of each past day (replayed from the log) judged by this scorecard.
    let history = berth_server::routes::scorecards::level_history(&app, &caller, card.clone(), TREND_DAYS).await?;
    let trend = trend_chart(&history, &levels);
    let trend_rows = history
        .iter()
        .map(|d| TrendRow {
            date: d.date.clone(),
            counts: levels.iter().map(|l| d.levels.get(l).copied().unwrap_or(0)).collect(),
        })
        .collect();
    let (blueprint, card_id) = (bp.clone(), id.clone());
    let known: Vec<String> = view.teams().map(|t| t.name.clone()).collect();
    let level_names = levels.clone();
    let (chart, rules, per_team) = berth_server::searching::run(&app, move || {
        let scoped = berth_server::access::scoped(&view, &caller);
        let all = || Rules::of_blueprint(&blueprint);
        let distribution = count_values(&scoped, all(), &card_id, None)?;
        // Levels in their order (every level shown, at 0 when nobody is there); entities the filter leaves
        // out are not judged.
        let ordered: Vec<(Value, usize)> = level_names.iter().map(|l| (json!(l), count_of(&distribution, l))).collect();
        let chart = bars(&ordered);
        let mut rules = Vec::new();
        for r in &card.rules {
            let statuses = count_values(&scoped, all(), &card_id, Some(&r.identifier))?;
            let (passed, failed) = (count_of(&statuses, "SUCCESS"), count_of(&statuses, "FAILURE"));
            let judged = passed + failed;
            let rate = (passed * 100 + judged / 2).checked_div(judged).unwrap_or(0);
            rules.push(RuleRate { title: r.title.clone(), level: r.level.clone(), passed, judged, rate });
        }
        // The teams: those defined, and those the readable entities name (teams are names on entities).
        let mut teams: std::collections::BTreeSet<String> = known.into_iter().collect();
        for e in scoped.entities_of(&blueprint) {
            if teams.len() >= MAX_TEAMS {
                break;
            }
            teams.extend(e.team.iter().cloned());
        }
        let mut per_team = Vec::new();
        for team in teams.into_iter().take(MAX_TEAMS) {
            let theirs = all().and(
                Rules::parse(&json!({"property": "$team", "operator": "containsAny", "value": [team]}))
                    .map_err(|e| berth_model::DomainError::BadRequest(e.message))?,
            );
            let values = count_values(&scoped, theirs, &card_id, None)?;
            let counts: Vec<(String, usize)> = level_names.iter().map(|l| (l.clone(), count_of(&values, l))).collect();
            if counts.iter().any(|(_, n)| *n > 0) {
                per_team.push(TeamLevels { team, counts });
            }
        }
        Ok((chart, rules, per_team))
    })
    .await?;
    let layout = session.layout(&app, title.clone(), "scorecards");
    let bp_href = format!("/blueprints/{}/entities", encode(&bp));
    let fields = rule_fields(&app.pipeline.view(), &bp);
    let rule_levels: Vec<String> = levels.iter().skip(1).cloned().collect();
    let page = CardPage {
        layout,
        title,
        action: format!("{}/rules", href(&bp, &id)),
        blueprint: bp,
        bp_href,
        levels,
        rule_levels,
        fields,
        operators: OPERATORS,
        rule_error,
        chart,
        trend,
        trend_rows,
        rules,
        teams: per_team,
    };
    crate::page::html_status(status, &page)
}

/// A stacked bar per day (levels bottom up, lowest first), each segment titled with its day, level and
/// count, each bar labelled with its date; the same figures are in the table beside it.
fn trend_chart(days: &[berth_catalog::standards::Day], levels: &[String]) -> String {
    use crate::fmt::esc;
    let max = days.iter().map(|d| d.levels.values().sum::<usize>()).max().unwrap_or(0).max(1);
    let (bar, gap, height, label) = (26usize, 8usize, 160usize, 18usize);
    let width = days.len() * (bar + gap);
    let mut svg = format!(
        r#"<svg class="chart trend" role="img" aria-labelledby="trend-t" viewBox="0 0 {width} {}" width="{width}" height="{}"><title id="trend-t">Entities per level on each of the last {} days</title>"#,
        height + label,
        height + label,
        days.len()
    );
    for (i, d) in days.iter().enumerate() {
        let x = i * (bar + gap);
        let mut top = height;
        for (li, level) in levels.iter().enumerate() {
            let n = d.levels.get(level).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let h = (n * height).div_ceil(max).max(1);
            top = top.saturating_sub(h);
            svg.push_str(&format!(
                r#"<rect class="bar bar-{}" x="{x}" y="{top}" width="{bar}" height="{h}"><title>{}: {} {}</title></rect>"#,
                li % 6,
                esc(&d.date),
                n,
                esc(level)
            ));
        }
        svg.push_str(&format!(
            r#"<text class="bar-label" x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x + bar / 2,
            height + label - 4,
            esc(d.date.get(8..10).unwrap_or(&d.date))
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// The link to a scorecard's page.
pub fn href(blueprint: &str, id: &str) -> String {
    format!("/scorecards/{}/{}", encode(blueprint), encode(id))
}
