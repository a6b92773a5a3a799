//! Memory footprint of the in-memory catalog: builds the search battery's catalog (teams, systems, services,
//! environments, deployments; `berth bench --search`) by applying events, and prints the bytes the entities
//! take on their own (resident memory, so allocator overhead included) and what the state (maps, relation and property indexes) adds on top, per entity.
//!
//! `cargo run --release -p berth-engine --example footprint -- 1000000`

use std::sync::Arc;
use std::time::Instant;

use berth_engine::State;
use berth_model::{Blueprint, Change, Entity, Event, Origin, Timestamp};
use serde_json::json;

/// The allocator the server runs with, so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The process's resident memory in bytes (Linux), 0 elsewhere.
fn live() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn event(seq: u64, change: Change) -> Event {
    Event {
        seq,
        time: Timestamp::from_millis(1_780_000_000_000),
        actor: "bench".into(),
        origin: Origin::Api,
        run_id: None,
        change,
        before: None,
    }
}

fn entity(state: &State, bp: &str, v: serde_json::Value) -> Arc<Entity> {
    let mut v = v;
    v["blueprint"] = json!(bp);
    v["createdAt"] = json!("2026-11-26T10:00:00Z");
    v["updatedAt"] = json!("2026-11-26T10:00:00Z");
    v["createdBy"] = json!("berth-admin-client");
    v["updatedBy"] = json!("berth-admin-client");
    v["$datasource"] = json!("berth-bench/0.1");
    let mut e: Entity = serde_json::from_value(v).expect("a valid entity");
    e.blueprint = state.blueprint_name(bp); // shared and compact, as the engine's writes make them
    // One copy of each writer's name, as the engine's writes share them once the first is applied.
    thread_local! {
        static NAMES: std::cell::RefCell<std::collections::HashMap<String, Arc<str>>> = Default::default();
    }
    let share = |name: &str| {
        NAMES.with(|n| Arc::clone(n.borrow_mut().entry(name.to_string()).or_insert_with(|| Arc::from(name))))
    };
    e.created_by = share(&e.created_by);
    e.updated_by = share(&e.updated_by);
    e.datasource = e.datasource.as_deref().map(share);
    Arc::new(e)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `--load FILE`: load a snapshot another run saved (`N --save FILE`) in a fresh process, then time queries.
    if let (Some("--load"), Some(path)) = (args.get(1).map(String::as_str), args.get(2)) {
        let bytes = std::fs::read(path).expect("a snapshot file");
        let base = live();
        let started = Instant::now();
        let state = State::from_snapshot(&bytes).expect("loads");
        println!(
            "loaded {} entities in {:.2} s; resident memory grew {:.0} MiB",
            state.total_entities(),
            started.elapsed().as_secs_f64(),
            live().saturating_sub(base) as f64 / (1024.0 * 1024.0)
        );
        latencies(&state);
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let blueprints = [
        json!({"identifier": "team", "title": "Team", "schema": {"properties": {"size": {"type": "number"}}}}),
        json!({"identifier": "system", "title": "System", "schema": {"properties": {"tier": {"type": "string", "enum": ["t1", "t2", "t3"]}}},
            "relations": {"team": {"target": "team", "required": false, "many": false}}}),
        json!({"identifier": "service", "title": "Service", "schema": {"properties": {
            "language": {"type": "string", "enum": ["Rust", "Go", "Python", "Java", "TypeScript"]},
            "lifecycle": {"type": "string", "enum": ["production", "experimental", "deprecated"]}}},
            "relations": {"system": {"target": "system", "required": false, "many": false}}}),
        json!({"identifier": "environment", "title": "Environment", "schema": {"properties": {"kind": {"type": "string"}}}}),
        json!({"identifier": "deployment", "title": "Deployment", "schema": {"properties": {
            "status": {"type": "string", "enum": ["success", "failed", "rolled-back"]},
            "version": {"type": "string"},
            "deployedAt": {"type": "string", "format": "date-time"},
            "durationSeconds": {"type": "number"}}},
            "relations": {"service": {"target": "service", "required": true, "many": false},
                          "environment": {"target": "environment", "required": true, "many": false}}}),
    ];
    let mut state = State::default();
    let mut seq = 0;
    for b in blueprints {
        let mut b = b;
        for (k, v) in [
            ("createdAt", "2026-11-26T10:00:00Z"),
            ("updatedAt", "2026-11-26T10:00:00Z"),
            ("createdBy", "bench"),
            ("updatedBy", "bench"),
        ] {
            b[k] = json!(v);
        }
        let blueprint: Blueprint = serde_json::from_value(b).expect("a valid blueprint");
        seq += 1;
        state.apply(&event(seq, Change::BlueprintPut { blueprint: Box::new(blueprint) })).expect("applies");
    }
    let systems = (n / 1000).max(10);
    let services = n / 5;
    let envs = 10;
    let deployments = n.saturating_sub(100 + systems + services + envs);
    let (langs, lifecycles, statuses) = (
        ["Rust", "Go", "Python", "Java", "TypeScript"],
        ["production", "experimental", "deprecated"],
        ["success", "failed", "rolled-back"],
    );
    let base = live();
    let mut all: Vec<Arc<Entity>> = Vec::with_capacity(n);
    all.extend(
        (0..100).map(|i| {
            entity(&state, "team", json!({"identifier": format!("team-{i}"), "properties": {"size": i % 12}}))
        }),
    );
    all.extend((0..envs).map(|i| {
        entity(&state, "environment", json!({"identifier": format!("env-{i}"), "properties": {"kind": "k8s"}}))
    }));
    all.extend((0..systems).map(|i| entity(&state, "system", json!({"identifier": format!("sys-{i}"), "properties": {"tier": (["t1", "t2", "t3"][i % 3])}, "relations": {"team": format!("team-{}", i % 100)}}))));
    all.extend((0..services).map(|i| entity(&state, "service", json!({"identifier": format!("svc-{i}"), "title": format!("Service {i}"),
        "properties": {"language": langs[i % 5], "lifecycle": lifecycles[i % 3]}, "relations": {"system": format!("sys-{}", i % systems)}}))));
    all.extend((0..deployments).map(|i| entity(&state, "deployment", json!({"identifier": format!("dep-{i:07}"), "properties": {"status": statuses[i % 3], "version": format!("v1.{}.{}", i % 50, i % 7),
            "deployedAt": format!("2026-{:02}-{:02}T{:02}:00:00Z", 1 + i % 12, 1 + i % 28, i % 24), "durationSeconds": i % 900},
            "relations": {"service": format!("svc-{}", i % services.max(1)), "environment": format!("env-{}", i % envs)}}))));
    let entities_bytes = live() - base;
    let started = Instant::now();
    for e in &all {
        seq += 1;
        state.apply(&event(seq, Change::EntityPut { entity: Arc::clone(e) })).expect("applies");
    }
    let applied = started.elapsed();
    let state_bytes = live() - base - entities_bytes;
    let count = all.len();
    drop(all);
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!("entities: {count}");
    println!(
        "sizes: Entity {} bytes, serde_json::Value {} bytes, Map {} bytes",
        std::mem::size_of::<Entity>(),
        std::mem::size_of::<serde_json::Value>(),
        std::mem::size_of::<serde_json::Map<String, serde_json::Value>>()
    );
    println!("entity objects: {:.0} MiB ({} bytes each)", mib(entities_bytes), entities_bytes / count);
    println!(
        "state on top (maps, relation and property indexes): {:.0} MiB ({} bytes per entity)",
        mib(state_bytes),
        state_bytes / count
    );
    println!(
        "total: {:.0} MiB; applying took {:.2} s ({:.0} entities/s)",
        mib(entities_bytes + state_bytes),
        applied.as_secs_f64(),
        count as f64 / applied.as_secs_f64()
    );
    latencies(&state);
    let started = Instant::now();
    let snapshot = state.to_snapshot().expect("serialises");
    let written = started.elapsed();
    if let (Some("--save"), Some(path)) = (args.get(2).map(String::as_str), args.get(3)) {
        std::fs::write(path, &snapshot).expect("writes the snapshot");
    }
    drop(state);
    let before_load = live();
    let started = Instant::now();
    let loaded = State::from_snapshot(&snapshot).expect("loads");
    println!(
        "snapshot: {:.0} MiB, written in {:.2} s, loaded in {:.2} s ({} entities; resident memory grew {:.0} MiB)",
        mib(snapshot.len()),
        written.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        loaded.total_entities(),
        mib(live().saturating_sub(before_load))
    );
}

/// Engine-only query latencies (no HTTP): what the search battery's slowest shapes cost inside the engine.
fn latencies(state: &State) {
    let queries = [
        (
            "relatedTo, 3 hops",
            json!({"combinator": "and", "rules": [{"operator": "relatedTo", "blueprint": "team", "value": "team-7", "direction": "downstream"}]}),
        ),
        (
            "relatedTo, 1 hop",
            json!({"combinator": "and", "rules": [{"operator": "relatedTo", "blueprint": "service", "value": "svc-42", "direction": "downstream"}]}),
        ),
        (
            "$identifier = (one entity)",
            json!({"combinator": "and", "rules": [{"property": "$identifier", "operator": "=", "value": "dep-0123456"}]}),
        ),
        (
            "status = failed",
            json!({"combinator": "and", "rules": [{"property": "status", "operator": "=", "value": "failed"}]}),
        ),
        (
            "durationSeconds = 421",
            json!({"combinator": "and", "rules": [{"property": "durationSeconds", "operator": "=", "value": 421}]}),
        ),
    ];
    for (name, q) in queries {
        let query = berth_model::query::Query::parse(&q).expect("parses");
        let mut samples: Vec<f64> = (0..100)
            .map(|_| {
                let t = Instant::now();
                let page = berth_engine::search::search_blueprint(
                    state,
                    "deployment",
                    Some(&query),
                    Timestamp::from_millis(1_780_000_000_000),
                    None,
                    200,
                )
                .expect("searches");
                assert!(!page.entities.is_empty());
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        println!("{name}: p50 {:.3} ms, p99 {:.3} ms (engine only, page of 200)", samples[50], samples[98]);
    }
    let rounds = std::env::var("FOOTPRINT_WALKS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let mut walk: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let set = berth_engine::graph::related_to(
                state,
                "team",
                &["team-7".to_string()],
                Some(berth_model::query::Direction::Downstream),
                false,
            );
            assert!(set.len() == 3);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    walk.sort_by(f64::total_cmp);
    println!(
        "relatedTo, 3 hops, the walk alone: p50 {:.3} ms, p99 {:.3} ms",
        walk[walk.len() / 2],
        walk[walk.len() * 98 / 100]
    );
}
