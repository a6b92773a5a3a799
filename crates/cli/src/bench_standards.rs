//! `berth bench --standards`: derived data and scorecards at scale, in process (the engine's state machine:
//! what the writer and every replica do per event, without the store's fsync or HTTP around it).
//!
//! The catalog (`--entities`, 1,000,000 by default): 100 teams, 20 domains, 1,000 systems, services (a
//! tenth) and deployments (the rest). Every service mirrors its team's on-call and title and its domain's
//! owner (two hops), counts its deployments, its failed ones and their median duration, and is judged by 3
//! scorecards of 10 rules (on stored, mirrored and aggregated values); every domain counts its deployments
//! three hops away (~45,000 each at 1M: a large fan-in). All services belong to `team-0`, so
//! a write to `team-0` is one that every service mirrors from. A second catalog, the same without derived
//! data or scorecards, is the baseline; measurements alternate between the two.
//!
//! Printed: the build; start-up (a snapshot loaded with every aggregation computed); a write to `team-0`
//! (command, event applied, aggregations refreshed) and a read of a service's mirror after it; ordinary
//! writes against the baseline (a deployment that keeps its service, one moved to another service, a
//! service that keeps its system, a new service); a search by scorecard level (a page of 50); then the
//! same ordinary writes acknowledged by the catalog layer on SQLite (what a client waits for), alternating
//! the two catalogs written through it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_engine::{Command, State, WriteMeta, WriteMode, execute};
use berth_model::query::Query;
use berth_model::{EntityInput, Origin, Timestamp};
use serde_json::{Value, json};

use crate::bench::percentile;

/// The `n`th write's metadata, at `base_ms + n`.
fn meta(base_ms: i64, n: i64) -> WriteMeta {
    WriteMeta {
        actor: "bench".into(),
        origin: Origin::Api,
        now: Timestamp::from_millis(base_ms + n),
        datasource: None,
        run_id: None,
        principal: None,
    }
}

/// Executes and applies a command; the time it took.
fn write(state: &mut State, n: &mut i64, cmd: &Command) -> anyhow::Result<Duration> {
    write_at(state, n, cmd, 1_760_000_000_000)
}

/// Executes and applies a command as the `n`th write, at `base_ms + n` (the other in-process benches
/// share it); the time it took.
pub(crate) fn write_at(state: &mut State, n: &mut i64, cmd: &Command, base_ms: i64) -> anyhow::Result<Duration> {
    *n += 1;
    let meta = meta(base_ms, *n);
    let started = Instant::now();
    let (changes, _) = execute(state, &meta, cmd).map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    for change in changes {
        let before = state.previous_of(&change);
        let event = meta.event_after(state, change, before);
        state.apply(&event)?;
    }
    Ok(started.elapsed())
}

/// An upsert of an entity of `bp`.
pub(crate) fn entity(bp: &str, body: Value) -> anyhow::Result<Command> {
    Ok(Command::WriteEntity {
        blueprint: bp.into(),
        path_id: None,
        input: EntityInput::from_value(&body)?,
        mode: WriteMode::Upsert,
        create_missing_related: false,
    })
}

fn blueprints(derived: bool) -> Vec<Value> {
    let mut service = json!({"identifier": "service", "title": "Service", "schema": {"properties": {
            "language": {"type": "string", "enum": ["Rust", "Go", "Python", "Java"]},
            "lifecycle": {"type": "string", "enum": ["production", "experimental", "deprecated"]},
            "replicas": {"type": "number"}, "repo": {"type": "string"}}},
        "relations": {"system": {"target": "system", "required": false, "many": false},
                      "team": {"target": "team", "required": false, "many": false}}});
    if derived {
        service["mirrorProperties"] = json!({
            "oncall": {"path": "team.oncall"}, "teamTitle": {"path": "team.$title"},
            "domainOwner": {"path": "system.domain.owner"}});
    }
    vec![
        json!({"identifier": "team", "title": "Team", "schema": {"properties": {"oncall": {"type": "string"}}}}),
        json!({"identifier": "domain", "title": "Domain", "schema": {"properties": {"owner": {"type": "string"}}}}),
        json!({"identifier": "system", "title": "System", "schema": {"properties": {"tier": {"type": "number"}}},
            "relations": {"domain": {"target": "domain", "required": false, "many": false}}}),
        service,
        json!({"identifier": "deployment", "title": "Deployment", "schema": {"properties": {
            "status": {"type": "string", "enum": ["success", "failed"]}, "duration": {"type": "number"}}},
            "relations": {"service": {"target": "service", "required": true, "many": false}}}),
    ]
}

fn aggregations() -> Value {
    json!({"aggregationProperties": {
        "deploys": {"target": "deployment", "calculationSpec": {"func": "count", "calculationBy": "entities"}},
        "failed": {"target": "deployment", "calculationSpec": {"func": "count", "calculationBy": "entities"},
            "query": {"combinator": "and", "rules": [{"property": "status", "operator": "=", "value": "failed"}]}},
        "medianDuration": {"target": "deployment", "calculationSpec": {"func": "median", "calculationBy": "property", "property": "duration"}}}})
}

/// Three scorecards of ten rules on services: stored, mirrored and aggregated values.
fn scorecards() -> Vec<(String, Value)> {
    let rule = |id: String, level: &str, cond: Value| json!({"identifier": id, "title": "r", "level": level, "query": {"combinator": "and", "conditions": [cond]}});
    (0..3)
        .map(|c| {
            let rules: Vec<Value> = (0..10)
                .map(|r| {
                    let level = ["Bronze", "Silver", "Gold"][r % 3];
                    let cond = match (r + c) % 5 {
                        0 => json!({"property": "replicas", "operator": ">=", "value": (r % 4) + 1}),
                        1 => json!({"property": "oncall", "operator": "isNotEmpty"}),
                        2 => json!({"property": "deploys", "operator": ">", "value": r % 3}),
                        3 => json!({"property": "language", "operator": "in", "value": ["Rust", "Go"]}),
                        _ => json!({"property": "failed", "operator": "<", "value": 3}),
                    };
                    rule(format!("rule-{r}"), level, cond)
                })
                .collect();
            (format!("card-{c}"), json!({"title": format!("Card {c}"), "rules": rules}))
        })
        .collect()
}

/// Builds a catalog of `entities` entities (applying events with deferred index updates, as a replay does).
fn build(entities: usize, derived: bool) -> anyhow::Result<(State, i64)> {
    let mut state = State::default();
    let mut n = 0i64;
    for cmd in definitions(derived) {
        write(&mut state, &mut n, &cmd)?;
    }
    load(&mut state, &mut n, &catalog_entities(entities)?, 1_760_000_000_000)?;
    Ok((state, n))
}

/// The catalog's blueprints, and with `derived` its derived properties and scorecards.
fn definitions(derived: bool) -> Vec<Command> {
    let mut out: Vec<Command> = blueprints(derived).into_iter().map(|body| Command::CreateBlueprint { body }).collect();
    if derived {
        out.push(Command::PatchBlueprint { id: "service".into(), patch: aggregations() });
        // A count of a large fan-in: each domain over ~45,000 deployments, three hops away (kept by deltas).
        let domain = json!({"aggregationProperties": {"deploys": {"target": "deployment",
            "calculationSpec": {"func": "count", "calculationBy": "entities"},
            "pathFilter": [{"fromBlueprint": "deployment", "path": ["service", "system", "domain"]}]}}});
        out.push(Command::PatchBlueprint { id: "domain".into(), patch: domain });
        out.push(Command::ReplaceScorecards { blueprint: "service".into(), scorecards: scorecards() });
    }
    out
}

/// The catalog's entities: teams, domains, systems, services, then deployments.
fn catalog_entities(entities: usize) -> anyhow::Result<Vec<Command>> {
    let services = entities / 10;
    let systems = 1000;
    let fixed = 100 + 20 + systems + services;
    let deployments = entities.saturating_sub(fixed);
    let mut cmds = Vec::with_capacity(entities);
    for t in 0..100 {
        cmds.push(entity("team", json!({"identifier": format!("team-{t}"), "title": format!("Team {t}"), "properties": {"oncall": format!("oncall-{t}")}}))?);
    }
    for d in 0..20 {
        cmds.push(entity(
            "domain",
            json!({"identifier": format!("dom-{d}"), "properties": {"owner": format!("owner-{d}")}}),
        )?);
    }
    for s in 0..systems {
        cmds.push(entity("system", json!({"identifier": format!("sys-{s}"), "properties": {"tier": s % 3}, "relations": {"domain": format!("dom-{}", s % 20)}}))?);
    }
    let langs = ["Rust", "Go", "Python", "Java"];
    for s in 0..services {
        cmds.push(entity(
            "service",
            json!({"identifier": format!("svc-{s:06}"), "properties": {"language": langs[s % 4],
            "lifecycle": "production", "replicas": s % 5},
            "relations": {"system": format!("sys-{}", s % systems), "team": "team-0"}}),
        )?);
    }
    for d in 0..deployments {
        cmds.push(entity(
            "deployment",
            json!({"identifier": format!("dep-{d:07}"), "properties": {
            "status": if d % 7 == 0 { "failed" } else { "success" }, "duration": (d % 300) as f64},
            "relations": {"service": format!("svc-{:06}", (d * 7919) % services.max(1))}}),
        )?);
    }
    Ok(cmds)
}

/// Writes `cmds` as a replay does: index updates deferred and settled every 50,000 writes.
pub(crate) fn load(state: &mut State, n: &mut i64, cmds: &[Command], base_ms: i64) -> anyhow::Result<()> {
    state.defer_indexes();
    for (i, cmd) in cmds.iter().enumerate() {
        write_at(state, n, cmd, base_ms)?;
        if i % 50_000 == 49_999 {
            state.settle_indexes()?;
            state.defer_indexes();
        }
    }
    state.settle_indexes()?;
    Ok(())
}

pub(crate) fn report(name: &str, samples: &mut [Duration], note: &str) {
    samples.sort();
    println!(
        "  {name:<58} p50 {:>9.3} ms   p99 {:>9.3} ms   {note}",
        percentile(samples, 0.5).as_secs_f64() * 1e3,
        percentile(samples, 0.99).as_secs_f64() * 1e3
    );
}

pub async fn run(entities: usize) -> anyhow::Result<()> {
    if entities < 10 {
        anyhow::bail!("--standards needs at least 10 entities (a tenth of them are services)");
    }
    println!(
        "berth bench --standards: {entities} entities, in process (engine), 2 catalogs: with derived data + 3x10 scorecards, and without"
    );
    let started = Instant::now();
    let (mut with, mut n) = build(entities, true)?;
    println!("  built with derived data in {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let (mut without, mut m) = build(entities, false)?;
    println!("  built without in {:.1} s", started.elapsed().as_secs_f64());

    // Start-up: a snapshot loaded, every aggregation computed (mirrors, calculations and scorecards are read-time).
    for (name, state) in [("with derived data", &with), ("without", &without)] {
        let snapshot = state.to_snapshot()?;
        let started = Instant::now();
        let loaded = State::from_snapshot(&snapshot)?;
        println!(
            "  start-up (snapshot load + indexes + aggregations), {name}: {:.2} s",
            started.elapsed().as_secs_f64()
        );
        drop(loaded);
    }

    // A write to the team every service mirrors from, then a read of a service's mirror.
    let mut team_writes = Vec::new();
    for i in 0..50 {
        let cmd = entity(
            "team",
            json!({"identifier": "team-0", "title": "Team 0", "properties": {"oncall": format!("pager-{i}")}}),
        )?;
        team_writes.push(write(&mut with, &mut n, &cmd)?);
        let e = with.entity("service", "svc-000042").context("a service")?;
        let seen = berth_engine::derived::value(&with, e, "oncall", &berth_engine::derived::Everything);
        if seen != Some(json!(format!("pager-{i}"))) {
            bail!("the mirror is not current after the write: {seen:?}");
        }
    }
    report("write to team-0 (100% of services mirror it)", &mut team_writes, "");

    // Ordinary writes, alternating the two catalogs: a deployment's status and duration (its service
    // stays), a deployment moved to another service (two services and their domains change), a service
    // (its system stays), a new service (its domain's count of deployments goes through it).
    let services = (entities / 10).max(1);
    let writes: [(&str, &str, MakeBody); 4] = [
        (
            "deployment",
            "deployment write (its service stays)",
            Box::new(move |i: usize| {
                let d = i * 13;
                json!({"identifier": format!("dep-{d:07}"), "properties": {"status": if i.is_multiple_of(2) { "failed" } else { "success" },
                "duration": i as f64}, "relations": {"service": format!("svc-{:06}", (d * 7919) % services)}})
            }),
        ),
        (
            "deployment",
            "deployment moved to another service",
            Box::new(move |i: usize| {
                json!({"identifier": format!("dep-{:07}", i * 13), "properties": {"status": "failed", "duration": i as f64},
                "relations": {"service": format!("svc-{:06}", i % services.min(1000))}})
            }),
        ),
        (
            "service",
            "service write (its system stays)",
            Box::new(|i: usize| {
                json!({"identifier": format!("svc-{:06}", i * 7), "properties": {"language": "Go", "replicas": i % 5},
                "relations": {"team": "team-0", "system": format!("sys-{}", (i * 7) % 1000)}})
            }),
        ),
        (
            "service",
            "service created (its domain counts through it)",
            Box::new(|i: usize| {
                json!({"identifier": format!("svc-new-{i:06}"), "properties": {"language": "Rust", "replicas": 2},
                "relations": {"team": "team-0", "system": format!("sys-{}", (i * 7) % 1000)}})
            }),
        ),
    ];
    for (bp, name, make) in &writes {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..2000 {
            let cmd = entity(bp, make(i))?;
            a.push(write(&mut with, &mut n, &cmd)?);
            b.push(write(&mut without, &mut m, &cmd)?);
        }
        let (pa, pb) = (percentile_of(&mut a, 0.5), percentile_of(&mut b, 0.5));
        report(&format!("{name}, with derived data"), &mut a, &format!("ratio p50 {:.2}x", pa / pb));
        report(&format!("{name}, without"), &mut b, "");
    }

    // Search by scorecard level: a page of 50, every level of every scorecard (common and rare ones).
    for (card, level) in
        (0..3).flat_map(|c| ["Basic", "Bronze", "Silver", "Gold"].map(move |l| (format!("card-{c}"), l)))
    {
        let q = Query::parse(
            &json!({"combinator": "and", "rules": [{"scorecard": card, "operator": "=", "value": level}]}),
        )?;
        let mut samples = Vec::new();
        let mut found = 0;
        for _ in 0..50 {
            let started = Instant::now();
            let page = berth_engine::search::search_blueprint(
                &with,
                "service",
                Some(&q),
                Timestamp::from_millis(0),
                None,
                50,
            )?;
            samples.push(started.elapsed());
            found = page.entities.len();
        }
        report(
            &format!("search services at level {level} of {card} (page of 50)"),
            &mut samples,
            &format!("{found} found"),
        );
    }
    drop((with, without));
    acknowledged(entities, &writes).await
}

/// The same ordinary writes as a client waits for them: each its own request to the catalog layer (a
/// `Pipeline` on a SQLite store in a temporary directory: the command, derived data kept current, the
/// append made durable, the answer), alternating a catalog loaded with derived data and one without.
async fn acknowledged(entities: usize, writes: &[(&str, &str, MakeBody)]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let with = seeded(&dir.path().join("with.db"), entities, true).await?;
    let without = seeded(&dir.path().join("without.db"), entities, false).await?;
    println!(
        "  acknowledged writes: both catalogs written through the catalog layer (SQLite) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (bp, name, make) in writes {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let busy = (with.writer_busy(), without.writer_busy());
        for i in 2000..2500 {
            for (pipeline, samples) in [(&with, &mut a), (&without, &mut b)] {
                let cmd = entity(bp, make(i))?;
                let started = Instant::now();
                pipeline.write_one(pipeline_meta(), cmd).await?.0.map_err(|e| anyhow::anyhow!("refused: {e}"))?;
                samples.push(started.elapsed());
            }
        }
        // The writer's own time per write (the command, derived data, the indexes; not the append).
        let executing = |now: Duration, then: Duration, n: usize| (now - then).as_secs_f64() * 1e3 / n.max(1) as f64;
        let (ea, eb) =
            (executing(with.writer_busy(), busy.0, a.len()), executing(without.writer_busy(), busy.1, b.len()));
        let (pa, pb) = (percentile_of(&mut a, 0.5), percentile_of(&mut b, 0.5));
        report(
            &format!("{name}, acknowledged, with derived data"),
            &mut a,
            &format!("ratio p50 {:.2}x; writer executing {ea:.3} ms a write", pa / pb),
        );
        report(&format!("{name}, acknowledged, without"), &mut b, &format!("writer executing {eb:.3} ms a write"));
    }
    Ok(())
}

/// A catalog layer on a new SQLite store at `path`, with the bench's catalog written through it in batches.
async fn seeded(
    path: &std::path::Path,
    entities: usize,
    derived: bool,
) -> anyhow::Result<std::sync::Arc<berth_catalog::Pipeline>> {
    let store: std::sync::Arc<dyn berth_store::LogStore> =
        std::sync::Arc::new(berth_store::sqlite::SqliteStore::open(path)?);
    let pipeline = berth_catalog::Pipeline::open(store, 0).await?;
    for cmd in definitions(derived) {
        pipeline.write_one(pipeline_meta(), cmd).await?.0.map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    }
    let cmds = catalog_entities(entities)?;
    for chunk in cmds.chunks(1000) {
        let result = pipeline.write(pipeline_meta(), chunk.to_vec()).await?;
        if let Some(Err(e)) = result.outcomes.into_iter().find(Result::is_err) {
            bail!("refused: {e}");
        }
    }
    Ok(pipeline)
}

fn pipeline_meta() -> WriteMeta {
    WriteMeta { now: berth_catalog::now(), ..meta(0, 0) }
}

/// Makes the body of the `i`th write of one kind.
type MakeBody = Box<dyn Fn(usize) -> Value>;

fn percentile_of(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    percentile(samples, p).as_secs_f64()
}
