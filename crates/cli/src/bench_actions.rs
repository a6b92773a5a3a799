//! `berth bench --actions`: runs and automations under load, in process (the pipeline on a SQLite store in a
//! temporary directory, the delivery supervisor with the action invoker and the automations worker, and a
//! webhook receiver on a runtime of its own).
//!
//! Printed:
//! - runs created at `--rate` runs/s (default 1,000) for `--read-seconds`, ten per write, for an action
//!   with a WEBHOOK invocation: how many reached the receiver, and run-created-to-webhook-received p50 /
//!   p99 (from the creating write's acknowledgement to the receiver seeing the run);
//! - entity writes at 10,000/s for `--read-seconds` (bulk batches of 200, each an update) while an
//!   automation on ENTITY_UPDATED judges every one (its condition matches one in a hundred, each match a
//!   run sent to the receiver): the automations' largest lag (head minus their position), the time they
//!   took to catch up once the writes stopped, and the runs the matches made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use berth_catalog::Pipeline;
use berth_engine::runs::NewRun;
use berth_engine::{Command, WriteMeta, WriteMode};
use berth_model::run::{RunRequest, Source};
use berth_model::{DefinitionKind, EntityInput, Origin};
use serde_json::{Value, json};

use crate::bench::percentile;

/// Runs per write request; entities per write request.
const RUNS_PER_WRITE: usize = 10;
const ENTITIES_PER_WRITE: usize = 200;
/// The automation battery's write rate, and how many entities it updates.
const ENTITY_RATE: u64 = 10_000;
const ENTITIES: usize = 10_000;

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn meta() -> WriteMeta {
    WriteMeta {
        actor: "bench".into(),
        origin: Origin::Api,
        now: berth_catalog::now(),
        datasource: None,
        run_id: None,
        principal: None,
    }
}

fn run_id(n: usize) -> String {
    format!("r_bench{n:011}")
}

fn entities(round: usize, from: usize) -> anyhow::Result<Vec<Command>> {
    (from..from + ENTITIES_PER_WRITE)
        .map(|i| {
            Ok(Command::WriteEntity {
                blueprint: "item".into(),
                path_id: None,
                input: EntityInput::from_value(
                    &json!({"identifier": format!("i{}", i % ENTITIES), "properties": {"n": i, "round": round}}),
                )?,
                mode: WriteMode::Upsert,
                create_missing_related: false,
            })
        })
        .collect()
}

pub async fn run(rate: u64, seconds: u64) -> anyhow::Result<()> {
    let seconds = seconds.max(3);
    let rate = rate.max(10);
    println!(
        "berth bench --actions: {rate} runs/s for {seconds} s ({RUNS_PER_WRITE} a write), then {ENTITY_RATE} entity \
         updates/s for {seconds} s under an ENTITY_UPDATED automation; in process, SQLite"
    );
    // The receiver stands in for another machine's backend: a runtime of its own.
    let receivers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-receiver")
        .enable_all()
        .build()?;
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let s = Arc::clone(&s);
            async move {
                if let Some(run) = body.get("run").and_then(Value::as_str) {
                    s.lock().map(|mut m| m.insert(run.to_string(), Instant::now())).ok();
                }
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    receivers.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, app).await
    });

    let dir = tempfile::tempdir()?;
    let store: Arc<dyn berth_store::LogStore> =
        Arc::new(berth_store::sqlite::SqliteStore::open(&dir.path().join("log.db"))?);
    let pipeline = Pipeline::open(store, 0).await?;
    let setup = vec![
        Command::CreateBlueprint {
            body: json!({"identifier": "item", "title": "Item", "schema": {"properties": {
                "n": {"type": "number"}, "round": {"type": "number"}}}}),
        },
        Command::WriteDefinition {
            kind: DefinitionKind::Action,
            identifier: "deploy".into(),
            how: berth_engine::definitions::DefinitionWrite::Create(json!({"title": "Deploy",
                "trigger": {"type": "self-service", "operation": "CREATE", "blueprintIdentifier": "item",
                    "userInputs": {"properties": {"version": {"type": "string"}}}},
                "invocationMethod": {"type": "WEBHOOK", "url": hook,
                    "body": {"run": "{{ .run.id }}", "version": "{{ .inputs.version }}"}}})),
        },
    ];
    for outcome in pipeline.write(meta(), setup).await?.outcomes {
        outcome?;
    }
    let config = berth_delivery::Config {
        key: b"berth-bench-delivery-key-0123456789abcdef".to_vec(),
        holder: "bench".into(),
        allow: vec!["127.0.0.1".into()],
        ..Default::default()
    };
    let delivery = berth_delivery::Delivery::start(Arc::clone(&pipeline), config);

    // 1. Runs created at `rate`, each sent to the webhook.
    let mut created: HashMap<String, Instant> = HashMap::new();
    let per_tick = RUNS_PER_WRITE as u64;
    let interval = Duration::from_secs_f64(per_tick as f64 / rate as f64);
    let started = Instant::now();
    let mut n = 0usize;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let ids: Vec<String> = (n..n + RUNS_PER_WRITE).map(run_id).collect();
        let commands = ids
            .iter()
            .map(|id| {
                Ok(Command::CreateRun(Box::new(NewRun {
                    id: id.clone(),
                    action: "deploy".into(),
                    request: RunRequest {
                        properties: serde_json::from_value(json!({"version": "v1.2.3"}))?,
                        entity: None,
                    },
                    source: Source::Api,
                    run_as: None,
                    event: None,
                })))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let result = pipeline.write(meta(), commands).await?;
        let at = Instant::now();
        for (id, outcome) in ids.into_iter().zip(result.outcomes) {
            outcome?;
            created.insert(id, at);
        }
        n += RUNS_PER_WRITE;
    }
    let made = n as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().map(|m| m.len()).unwrap_or(0) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = seen.lock().map(|m| m.clone()).unwrap_or_default();
    let mut latencies: Vec<Duration> =
        created.iter().filter_map(|(id, at)| got.get(id).map(|seen| seen.saturating_duration_since(*at))).collect();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "runs:        {n} created ({made:.0}/s), {} received by the webhook; created-to-received p50 {:.1} ms, p99 {:.1} ms",
        got.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99))
    );
    // Every run's invocation recorded (pendingExecution cleared).
    let deadline = Instant::now() + Duration::from_secs(30);
    while pipeline.view().pending_runs().next().is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("             {} runs still pending once received", pipeline.view().pending_runs().count());

    // 2. An automation on ENTITY_UPDATED under 10,000 updates/s.
    let mut commands = Vec::new();
    for from in (0..ENTITIES).step_by(ENTITIES_PER_WRITE) {
        commands.extend(entities(0, from)?);
    }
    for outcome in pipeline.write(meta(), commands).await?.outcomes {
        outcome?;
    }
    let automation = Command::WriteDefinition {
        kind: DefinitionKind::Action,
        identifier: "every-hundredth".into(),
        how: berth_engine::definitions::DefinitionWrite::Create(json!({"title": "Every hundredth update",
            "trigger": {"type": "automation", "event": {"type": "ENTITY_UPDATED", "blueprintIdentifier": "item"},
                "condition": {"type": "JQ", "combinator": "and", "expressions": [".diff.after.properties.n % 100 == 0"]}},
            "invocationMethod": {"type": "WEBHOOK", "url": hook, "body": {"run": "{{ .run.id }}"}}})),
    };
    pipeline.write_one(meta(), automation).await?.0?;
    // Wait for the automations worker to hold its position at the head.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs_before = pipeline.view().definitions(DefinitionKind::Run).count();
    let start_seq = pipeline.view().seq();
    let interval = Duration::from_secs_f64(ENTITIES_PER_WRITE as f64 / ENTITY_RATE as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut written = 0usize;
    let mut worst_lag = 0u64;
    let mut sampled = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        pipeline.write(meta(), entities(1, written)?).await?;
        written += ENTITIES_PER_WRITE;
        if sampled.elapsed() >= Duration::from_millis(250) {
            sampled = Instant::now();
            let head = pipeline.view().seq();
            let at = pipeline.position("actions:automations").await?.unwrap_or(0);
            worst_lag = worst_lag.max(head.saturating_sub(at));
        }
    }
    let rate_done = written as f64 / started.elapsed().as_secs_f64();
    let stopped = Instant::now();
    let head = pipeline.view().seq();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let at = pipeline.position("actions:automations").await?.unwrap_or(0);
        if at >= head {
            break;
        }
        if Instant::now() > deadline {
            bail!("the automations did not catch up in 60 s (at {at}, head {head})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = stopped.elapsed();
    let runs = pipeline.view().definitions(DefinitionKind::Run).count() - runs_before;
    let expected = (0..written).filter(|i| i % 100 == 0).count();
    println!(
        "automation:  {written} updates ({rate_done:.0}/s, {} events), largest lag {worst_lag} events, caught up {} ms \
         after the writes stopped; {runs} runs made (matches expected: {expected})",
        head - start_seq,
        caught_up.as_millis()
    );
    delivery.stop();
    receivers.shutdown_background();
    Ok(())
}
