//! `berth bench --deployments`: what is deployed where at scale, in process (the engine's state and the
//! catalog layer's answers, without HTTP): 500 services × 5 environments and `--entities` deployments
//! (1,000,000 by default) spread over two years, a tenth of them failed or rolled back, each with its
//! commit time, and an incident per 500 deployments.
//!
//! Printed: the build; the matrix of every service (p50 / p99 of 20); DORA for the organisation over 90
//! days; a report written (command, event applied) and then seen in the matrix, from the kept index.

use std::time::{Duration, Instant};

use anyhow::bail;
use berth_catalog::deployments::{self, DoraFilter, MatrixFilter};
use berth_engine::{Command, State};
use berth_model::Timestamp;
use serde_json::json;

use crate::bench_standards::{entity, report};

const SERVICES: usize = 500;
const ENVIRONMENTS: [&str; 5] = ["production", "staging", "qa", "dev", "production-us"];
const DAY_MS: i64 = 86_400_000;
/// The bench's "now": the end of the two years.
const NOW: i64 = 1_780_000_000_000;

fn write(state: &mut State, n: &mut i64, cmd: &Command) -> anyhow::Result<Duration> {
    crate::bench_standards::write_at(state, n, cmd, NOW)
}

pub fn run(deployments: usize) -> anyhow::Result<()> {
    println!(
        "berth bench --deployments: {SERVICES} services x {} environments, {deployments} deployments over two years, in process",
        ENVIRONMENTS.len()
    );
    let started = Instant::now();
    let mut state = State::default();
    let mut n = 0i64;
    for body in berth_model::deployment::model() {
        write(&mut state, &mut n, &Command::CreateBlueprint { body })?;
    }
    let mut cmds = Vec::new();
    for s in 0..SERVICES {
        cmds.push(entity("service", json!({"identifier": format!("svc-{s:03}"), "team": []}))?);
    }
    for env in ENVIRONMENTS {
        cmds.push(entity(
            "environment",
            json!({"identifier": env, "properties": {"production": env.starts_with("production")}}),
        )?);
    }
    let span = 730 * DAY_MS;
    let start = NOW - span;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    for d in 0..deployments {
        let at = start + (d as i64) * (span / deployments.max(1) as i64);
        let status = match next(20) {
            0 => "failure",
            1 => "rolled_back",
            _ => "success",
        };
        let lead = (1 + next(72)) as i64 * 3_600_000;
        cmds.push(entity(
            "deployment",
            json!({"identifier": format!("dep-{d:07}"), "properties": {"version": format!("v{}", d / 100),
                "status": status, "finishedAt": Timestamp::from_millis(at).to_rfc3339(),
                "commitTime": Timestamp::from_millis(at - lead).to_rfc3339(), "actor": "ci"},
                "relations": {"service": format!("svc-{:03}", next(SERVICES as u64)),
                    "environment": ENVIRONMENTS[next(ENVIRONMENTS.len() as u64) as usize]}}),
        )?);
        if d % 500 == 0 {
            let opened = at + 3_600_000;
            cmds.push(entity(
                "incident",
                json!({"identifier": format!("inc-{d:07}"), "properties": {"severity": "high",
                    "openedAt": Timestamp::from_millis(opened).to_rfc3339(),
                    "resolvedAt": Timestamp::from_millis(opened + (1 + next(48) as i64) * 1_800_000).to_rfc3339()},
                    "relations": {"service": format!("svc-{:03}", next(SERVICES as u64)), "environment": "production"}}),
            )?);
        }
    }
    crate::bench_standards::load(&mut state, &mut n, &cmds, NOW)?;
    drop(cmds);
    println!("  built in {:.1} s", started.elapsed().as_secs_f64());

    let everything = &deployments::Everything;
    let now = Timestamp::from_millis(NOW);
    // The index a server builds in the background after start, then keeps current.
    let kept = deployments::Kept::new();
    let t = Instant::now();
    let indexed = kept.with(&state, |index, _| index.len());
    println!("  deployments index built in {:.0} ms ({indexed} deployments)", t.elapsed().as_secs_f64() * 1000.0);
    let filter = MatrixFilter { stale_days: Some(30), ..Default::default() };
    let mut samples = Vec::new();
    let mut rows = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let m = kept.with(&state, |index, state| deployments::matrix(index, state, everything, &filter, now));
        samples.push(t.elapsed());
        rows = m.rows.len();
    }
    report("matrix of every service (target p99 < 100 ms)", &mut samples, &format!("{rows} rows"));

    let dora_filter = DoraFilter {
        service: None,
        team: None,
        environment: "production".into(),
        from: Timestamp::from_millis(NOW - 90 * DAY_MS),
        to: Timestamp::from_millis(NOW + 1),
        failure_window_hours: 24,
    };
    let mut samples = Vec::new();
    let mut figures = String::new();
    for _ in 0..10 {
        let t = Instant::now();
        let d = kept.with(&state, |index, state| deployments::dora(index, state, everything, &dora_filter));
        samples.push(t.elapsed());
        figures = format!(
            "{} deployments, lead {:.1} h, failure rate {:.1} %",
            d.deployments,
            d.lead_time_hours.unwrap_or(0.0),
            d.change_failure_rate.unwrap_or(0.0) * 100.0
        );
    }
    report("DORA, organisation, production, 90 days (target < 200 ms)", &mut samples, &figures);

    // A report, then the whole matrix: from the write to seeing it there (the index caught up by the
    // answer itself, as when no background catch-up has run yet).
    let mut samples = Vec::new();
    for i in 0..50 {
        let svc = format!("svc-{:03}", i * 7 % SERVICES);
        let version = format!("bench-{i}");
        let cmd = entity(
            "deployment",
            json!({"identifier": format!("report-{i}"), "properties": {"version": version, "status": "success",
                "finishedAt": Timestamp::from_millis(NOW + 1000 + i as i64).to_rfc3339()},
                "relations": {"service": svc, "environment": "production"}}),
        )?;
        let t = Instant::now();
        write(&mut state, &mut n, &cmd)?;
        let m = kept.with(&state, |index, state| deployments::matrix(index, state, everything, &filter, now));
        samples.push(t.elapsed());
        let row = m.rows.iter().find(|r| r.service == svc).map(|r| &r.cells);
        if row.and_then(|r| r.get("production")).map(|c| c.version.as_str()) != Some(version.as_str()) {
            bail!("the report is not in the matrix after its write");
        }
    }
    report("a report written, then seen in the matrix (< 10 ms)", &mut samples, "");
    Ok(())
}
