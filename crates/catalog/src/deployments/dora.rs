//! DORA's four keys over a period (deployment frequency, lead time for changes, change failure rate, time
//! to restore), with the performance band of each and a weekly trend, read from the deployments index.

use std::collections::{BTreeMap, HashMap, HashSet};

use berth_engine::State;
use berth_model::Timestamp;
use berth_model::deployment::{self, Status};
use serde_json::{Value, json};

use super::index::Name;
use super::{Index, Reader};

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

/// DORA's four keys for the deployments and incidents of `state` (with `index` built or caught up to it)
/// that `reader` may read.
pub fn dora(index: &Index, state: &State, reader: &dyn Reader, f: &DoraFilter) -> Dora {
    let span_days = ((f.to.millis() - f.from.millis()) as f64 / DAY_MS as f64).max(1.0);
    // The services measured (`None`: all of them), by interned name (a service the index never saw has
    // no deployment).
    let services: Option<HashSet<Name>> = match (&f.service, &f.team) {
        (Some(s), _) => Some(index.name(s).into_iter().collect()),
        (None, Some(t)) => Some(
            state
                .entities_of(deployment::SERVICE)
                .filter(|e| e.team.contains(t) && reader.can_read(e))
                .filter_map(|e| index.name(&e.identifier))
                .collect(),
        ),
        (None, None) => None,
    };
    let measured = |s: &Name| services.as_ref().is_none_or(|set| set.contains(s));
    let environment = index.name(&f.environment);
    let visible = |bp: &str, id: &str| reader.reads_all(bp) || state.entity(bp, id).is_some_and(|e| reader.can_read(e));
    // Incidents of the scope (all of them: one opened just after the period still fails a change in it);
    // per service, the times they opened, in order.
    let mut opened_on: HashMap<Name, Vec<Timestamp>> = HashMap::new();
    let (mut incidents, mut restore) = (0usize, Vec::new());
    for (id, i) in index.incidents() {
        if i.environment.is_some_and(|e| Some(e) != environment) {
            continue;
        }
        let hit: Vec<Name> = i.services.iter().copied().filter(measured).collect();
        if hit.is_empty() || !visible(deployment::INCIDENT, id) {
            continue;
        }
        for s in hit {
            opened_on.entry(s).or_default().push(i.opened);
        }
        if i.opened >= f.from && i.opened < f.to {
            incidents += 1;
            if let Some(r) = i.resolved.filter(|r| *r >= i.opened) {
                restore.push((r.millis() - i.opened.millis()) as f64 / HOUR_MS);
            }
        }
    }
    for times in opened_on.values_mut() {
        times.sort_unstable();
    }
    let window = i64::from(f.failure_window_hours) * 3_600_000;
    let followed = |service: Name, at: Timestamp| {
        opened_on.get(&service).is_some_and(|times| {
            let first = times.partition_point(|o| *o < at);
            times.get(first).is_some_and(|o| o.millis() - at.millis() <= window)
        })
    };
    let weeks = (((f.to.millis() - f.from.millis()) + 7 * DAY_MS - 1) / (7 * DAY_MS)).max(1) as usize;
    let mut week = vec![(0usize, 0usize, 0usize, Vec::new()); weeks];
    let (mut deployments, mut finished, mut failed) = (0usize, 0usize, 0usize);
    let mut lead = Vec::new();
    let all = reader.reads_all(deployment::DEPLOYMENT);
    for (at, id, d) in index.between(f.from, f.to) {
        if Some(d.environment) != environment || !measured(&d.service) {
            continue;
        }
        let Some(status) = d.status.filter(|s| *s != Status::InProgress) else { continue };
        if !all && !visible(deployment::DEPLOYMENT, id) {
            continue;
        }
        let w = &mut week[((at.millis() - f.from.millis()) / (7 * DAY_MS)) as usize];
        finished += 1;
        w.2 += 1;
        if status.failed() || (status == Status::Success && followed(d.service, at)) {
            failed += 1;
            w.1 += 1;
        }
        if status == Status::Success {
            deployments += 1;
            w.0 += 1;
            if let Some(c) = d.commit_time.filter(|c| *c <= at) {
                let h = (at.millis() - c.millis()) as f64 / HOUR_MS;
                lead.push(h);
                w.3.push(h);
            }
        }
    }
    let mut out = Dora {
        deployments,
        per_day: deployments as f64 / span_days,
        lead_time_hours: median(lead),
        change_failure_rate: (finished > 0).then(|| failed as f64 / finished as f64),
        failed_changes: failed,
        time_to_restore_hours: median(restore),
        incidents,
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
