//! `berth bench --search`: a search battery over a generated catalog, through HTTP against a real server
//! process. The catalog: 100 teams, systems (1 per 1000 entities), services (20 %), 10 environments, and
//! deployments (the rest) related to a service and an environment. Each query runs many times; p50 / p95 /
//! p99 are printed, with the ingest rate, RSS and start-up time at that size.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use crate::bench::{ingest_into, percentile, poll_readyz, rss_mib, spawn, token, wait_ready, wait_started};

fn chunks(items: Vec<Value>, per: usize) -> Vec<Vec<u8>> {
    items.chunks(per).map(|c| serde_json::to_vec(&json!({"entities": c})).unwrap_or_default()).collect()
}

struct Timed {
    name: String,
    samples: Vec<Duration>,
    note: String,
}

pub async fn run(entities: usize, keep: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(16).build()?;
    let server = spawn(dir.path())?;
    wait_ready(&client, &server.base).await?;
    let tok = token(&client, &server.base).await?;
    let base = server.base.clone();
    for body in [
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
    ] {
        let r = client.post(format!("{base}/v1/blueprints")).bearer_auth(&tok).json(&body).send().await?;
        if !r.status().is_success() {
            bail!("blueprint refused: {}", r.text().await.unwrap_or_default());
        }
    }
    let systems = (entities / 1000).max(10);
    let services = entities / 5;
    let envs = 10;
    let deployments = entities.saturating_sub(100 + systems + services + envs);
    let langs = ["Rust", "Go", "Python", "Java", "TypeScript"];
    let lifecycles = ["production", "experimental", "deprecated"];
    let statuses = ["success", "failed", "rolled-back"];
    let started = Instant::now();
    ingest_into(
        &client,
        &base,
        &tok,
        "team",
        chunks(
            (0..100).map(|i| json!({"identifier": format!("team-{i}"), "properties": {"size": i % 12}})).collect(),
            1000,
        ),
        1,
    )
    .await?;
    ingest_into(
        &client,
        &base,
        &tok,
        "environment",
        chunks(
            (0..envs).map(|i| json!({"identifier": format!("env-{i}"), "properties": {"kind": "k8s"}})).collect(),
            1000,
        ),
        1,
    )
    .await?;
    ingest_into(&client, &base, &tok, "system", chunks((0..systems).map(|i| json!({"identifier": format!("sys-{i}"), "properties": {"tier": (["t1", "t2", "t3"][i % 3])}, "relations": {"team": format!("team-{}", i % 100)}})).collect(), 1000), 4).await?;
    ingest_into(&client, &base, &tok, "service", chunks((0..services).map(|i| json!({"identifier": format!("svc-{i}"), "title": format!("Service {i}"),
        "properties": {"language": langs[i % 5], "lifecycle": lifecycles[i % 3]}, "relations": {"system": format!("sys-{}", i % systems)}})).collect(), 1000), 4).await?;
    let dep_bodies: Vec<Value> = (0..deployments)
        .map(|i| json!({"identifier": format!("dep-{i:07}"), "properties": {"status": statuses[i % 3], "version": format!("v1.{}.{}", i % 50, i % 7),
            "deployedAt": format!("2026-{:02}-{:02}T{:02}:00:00Z", 1 + i % 12, 1 + i % 28, i % 24), "durationSeconds": i % 900},
            "relations": {"service": format!("svc-{}", i % services.max(1)), "environment": format!("env-{}", i % envs)}}))
        .collect();
    ingest_into(&client, &base, &tok, "deployment", chunks(dep_bodies, 1000), 4).await?;
    let ingest = started.elapsed();
    // The server snapshots once writes pause if `snapshot_every` events or more are not in a snapshot yet:
    // the battery measures the settled server, after that snapshot (at once when none is due).
    let every = berth_server::ServerConfig::new(dir.path().to_path_buf()).snapshot_every;
    let snapshotted = poll_readyz(&client, &base, "snapshot of the loaded catalog", |b| {
        let (applied, snapshot) = (b["applied"].as_u64().unwrap_or(0), b["snapshotSeq"].as_u64().unwrap_or(0));
        applied.saturating_sub(snapshot) < every
    })
    .await?;

    let search = |bp: &str, body: Value| {
        let (client, url, tok) = (client.clone(), format!("{base}/v1/blueprints/{bp}/entities/search"), tok.clone());
        async move {
            let t = Instant::now();
            let r = client.post(&url).bearer_auth(&tok).json(&body).send().await?;
            let status = r.status();
            let v: Value = r.json().await?;
            if !status.is_success() {
                bail!("search answered {status}: {v}");
            }
            Ok::<_, anyhow::Error>((t.elapsed(), v))
        }
    };
    let q = |rules: Value| json!({"combinator": "and", "rules": rules});
    let battery: Vec<(&str, &str, Value, &str)> = vec![
        (
            "$identifier = (entity map)",
            "deployment",
            q(json!([{"property": "$identifier", "operator": "=", "value": "dep-0123456"}])),
            "indexed",
        ),
        (
            "relation = service (reverse index)",
            "deployment",
            q(json!([{"relation": "service", "operator": "=", "value": "svc-42"}])),
            "indexed",
        ),
        (
            "page of a big relation: environment = env-3 (1 in 10)",
            "deployment",
            q(json!([{"relation": "environment", "operator": "=", "value": "env-3"}])),
            "reverse index, read lazily",
        ),
        (
            "page of a big relation and a rule: environment = env-3 and status = failed",
            "deployment",
            q(json!([{"relation": "environment", "operator": "=", "value": "env-3"},
                {"property": "status", "operator": "=", "value": "failed"}])),
            "reverse index, read lazily",
        ),
        (
            "property equality: status = failed",
            "deployment",
            q(json!([{"property": "status", "operator": "=", "value": "failed"}])),
            "property index",
        ),
        (
            "number equality: durationSeconds = 421",
            "deployment",
            q(json!([{"property": "durationSeconds", "operator": "=", "value": 421}])),
            "property index",
        ),
        (
            "date range: deployedAt between",
            "deployment",
            q(
                json!([{"property": "deployedAt", "operator": "between", "value": {"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}}]),
            ),
            "property index (instants)",
        ),
        (
            "relatedTo, 1 hop: deployments of svc-42",
            "deployment",
            q(json!([{"operator": "relatedTo", "blueprint": "service", "value": "svc-42", "direction": "downstream"}])),
            "graph walk",
        ),
        (
            "relatedTo, 3 hops: deployments under team-7",
            "deployment",
            q(json!([{"operator": "relatedTo", "blueprint": "team", "value": "team-7", "direction": "downstream"}])),
            "graph walk",
        ),
        (
            "matchAny: deployments whose service's system is sys-3",
            "deployment",
            q(json!([{"operator": "matchAny", "value": "sys-3", "property": {"path": ["service", "system"]}}])),
            "reverse index",
        ),
        (
            "contains on a string: version contains 1.49",
            "deployment",
            q(json!([{"property": "version", "operator": "contains", "value": "1.49"}])),
            "scan",
        ),
        (
            "4-rule and/or mix",
            "deployment",
            q(json!([
            {"property": "status", "operator": "in", "value": ["failed", "rolled-back"]},
            {"property": "durationSeconds", "operator": ">", "value": 800},
            {"combinator": "or", "rules": [{"relation": "environment", "operator": "=", "value": "env-3"}, {"property": "version", "operator": "beginsWith", "value": "v1.4"}]}])),
            "scan",
        ),
    ];
    // Enough samples that p99 is a percentile, not the single slowest request (of 30, p99 was the maximum).
    let reps = 200;
    let mut results = Vec::new();
    for (name, bp, query, note) in battery {
        let mut samples = Vec::with_capacity(reps);
        for _ in 0..reps {
            let (d, _) = search(bp, json!({"query": query.clone(), "limit": 200, "include": ["identifier"]})).await?;
            samples.push(d);
        }
        samples.sort();
        results.push(Timed { name: name.to_string(), samples, note: note.to_string() });
    }
    // count
    let mut samples = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        client
            .get(format!("{base}/v1/blueprints/deployment/entities-count"))
            .bearer_auth(&tok)
            .send()
            .await?
            .bytes()
            .await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    results.push(Timed { name: "count (entities-count)".into(), samples, note: "O(1)".into() });
    // Aggregations over every deployment: a count with a filter, and facets by an enum property.
    for (name, body) in [
        (
            "aggregate count: status = failed",
            json!({"func": "count", "query": q(json!([{"property": "$blueprint", "operator": "=", "value": "deployment"},
                {"property": "status", "operator": "=", "value": "failed"}]))}),
        ),
        (
            "facets: countValues by status (every deployment)",
            json!({"func": "countValues", "property": "status", "query": q(json!([{"property": "$blueprint", "operator": "=", "value": "deployment"}]))}),
        ),
    ] {
        let mut samples = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            let r = client.post(format!("{base}/v1/entities/aggregate")).bearer_auth(&tok).json(&body).send().await?;
            if !r.status().is_success() {
                bail!("aggregate answered {}", r.status());
            }
            r.bytes().await?;
            samples.push(t.elapsed());
        }
        samples.sort();
        results.push(Timed { name: name.into(), samples, note: "aggregate".into() });
    }
    // A paginated walk through 100,000 results.
    let walk_started = Instant::now();
    let mut from: Option<String> = None;
    let mut walked = 0usize;
    while walked < 100_000 {
        let mut body = json!({"limit": 1000, "include": ["identifier"], "query": q(json!([{"property": "status", "operator": "!=", "value": "none"}]))});
        if let Some(f) = &from {
            body["from"] = json!(f);
        }
        let (_, v) = search("deployment", body).await?;
        walked += v["entities"].as_array().map_or(0, Vec::len);
        match v["next"].as_str() {
            Some(n) => from = Some(n.to_string()),
            None => break,
        }
    }
    let walk = walk_started.elapsed();
    let rss = rss_mib(server.child.id());
    drop(server);
    let restarted = spawn(dir.path())?;
    let start_up = wait_started(&client, &restarted.base).await?;
    // A graceful stop writes a snapshot at the head: the next start loads it and replays nothing.
    restarted.stop_gracefully();
    let from_snapshot = spawn(dir.path())?;
    let warm_start = wait_started(&client, &from_snapshot.base).await?;
    drop(from_snapshot);

    let total = 100 + systems + services + envs + deployments;
    println!("berth bench --search: {total} entities");
    println!();
    println!("| measure | p50 | p95 | p99 | path |");
    println!("|---|---|---|---|---|");
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    for t in &results {
        println!(
            "| {} | {} | {} | {} | {} |",
            t.name,
            ms(percentile(&t.samples, 0.5)),
            ms(percentile(&t.samples, 0.95)),
            ms(percentile(&t.samples, 0.99)),
            t.note
        );
    }
    println!();
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| ingest of {total} entities (batches of 1000, 4 connections) | {:.0} entities/s ({:.1} s) |",
        total as f64 / ingest.as_secs_f64(),
        ingest.as_secs_f64()
    );
    println!("| snapshot of the loaded catalog written (after the load ended) | {:.1} s |", snapshotted.as_secs_f64());
    println!("| paginated walk, {walked} results in pages of 1000 | {:.2} s |", walk.as_secs_f64());
    println!("| server RSS | {rss:.0} MiB |");
    println!("| start-up after SIGKILL at this size (snapshot, if one was written, plus the tail) | {start_up} |");
    println!("| start-up after a graceful stop (from the snapshot at the head) | {warm_start} |");
    if keep {
        println!("\ndata kept in {}", dir.keep().display());
    }
    Ok(())
}
