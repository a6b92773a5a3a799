//! `berth bench --replicas STORE_URL`: two server processes on one empty PostgreSQL or Redis store.
//! Measures ingest through replica A (large and Port-sized batches), how long a write acknowledged by A takes
//! to be visible on B (passively, as B follows the store; and with `X-Berth-Min-Seq`, as a client reading its
//! own write would), and `berth migrate` throughput out of and into that kind of store.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench::{bodies, ingest_into, percentile, setup_service_catalog, spawn_on, token, wait_ready};

/// Writes timed for visibility on the other replica.
const VISIBILITY_SAMPLES: usize = 300;

/// The same store URL with its schema / prefix suffixed, for a second, empty store of the same kind.
fn sibling(url: &str, suffix: &str) -> String {
    let key = if url.starts_with("redis") { "prefix" } else { "schema" };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut found = false;
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if k == key => {
                found = true;
                format!("{k}={v}{suffix}")
            }
            _ => p.to_string(),
        })
        .collect();
    if !found {
        params.push(format!("{key}=berth{suffix}"));
    }
    format!("{base}?{}", params.join("&"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `berth migrate`, returning its events per second.
fn migrate(from: &str, to: &str, report: &std::path::Path) -> anyhow::Result<u64> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["migrate", "--from", from, "--to", to, "--report"])
        .arg(report)
        .output()?;
    if !out.status.success() {
        bail!("migrate {from} -> {to} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(report)?)?;
    if report["equal"] != true {
        bail!("migrate {from} -> {to} did not verify");
    }
    report["eventsPerSecond"].as_u64().context("no eventsPerSecond in the report")
}

pub async fn run(store: &str, entities: usize) -> anyhow::Result<()> {
    let probe = berth_store::open(store).await?;
    if probe.head().await? > 0 {
        bail!("{} is not empty; give the bench an empty schema or prefix", probe.describe());
    }
    let described = probe.describe();
    drop(probe);
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    println!("berth bench --replicas: {described}, {entities} entities per ingest phase");
    let a = spawn_on(&dir.path().join("a"), Some(store))?;
    wait_ready(&client, &a.base).await?;
    let b = spawn_on(&dir.path().join("b"), Some(store))?;
    wait_ready(&client, &b.base).await?;
    let token_a = token(&client, &a.base).await?;
    let token_b = token(&client, &b.base).await?;
    setup_service_catalog(&client, &a.base, &token_a).await?;
    let mut rows: Vec<(String, String)> = Vec::new();

    for (label, prefix, per_request, connections) in
        [("batches of 1000 over 2 connections", "big", 1000, 2), ("batches of 20 over 8 connections", "small", 20, 8)]
    {
        let t = ingest_into(&client, &a.base, &token_a, "service", bodies(prefix, entities, per_request), connections)
            .await?;
        rows.push((
            format!("ingest through replica A, {label}"),
            format!("{:.0} entities/s ({:.2} s)", entities as f64 / t.as_secs_f64(), t.as_secs_f64()),
        ));
    }

    // Write on A, then watch B: passively (poll B's applied sequence) and with X-Berth-Min-Seq.
    let mut passive = Vec::with_capacity(VISIBILITY_SAMPLES);
    let mut min_seq = Vec::with_capacity(VISIBILITY_SAMPLES);
    for i in 0..2 * VISIBILITY_SAMPLES {
        let body = json!({"identifier": format!("vis-{i}"), "properties": {"replicas": i % 20}, "relations": {"team": "team-1"}});
        let r = client
            .post(format!("{}/v1/blueprints/service/entities?upsert=true", a.base))
            .bearer_auth(&token_a)
            .json(&body)
            .send()
            .await?;
        let seq: u64 = r
            .headers()
            .get("x-berth-seq")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .context("no X-Berth-Seq on a write")?;
        let acked = Instant::now();
        if i % 2 == 0 {
            loop {
                let h: Value = client.get(format!("{}/healthz", b.base)).send().await?.json().await?;
                if h["seq"].as_u64().unwrap_or(0) >= seq {
                    break;
                }
                if acked.elapsed() > Duration::from_secs(10) {
                    bail!("B did not apply {seq} within 10 s");
                }
            }
            passive.push(acked.elapsed());
        } else {
            let r = client
                .get(format!("{}/v1/blueprints/service/entities/vis-{i}", b.base))
                .bearer_auth(&token_b)
                .header("x-berth-min-seq", seq.to_string())
                .send()
                .await?;
            if r.status() != 200 {
                bail!("read-your-write on B answered {}", r.status());
            }
            min_seq.push(acked.elapsed());
        }
    }
    passive.sort();
    min_seq.sort();
    for (label, samples) in [
        ("write on A -> visible on B, B following the store (poll B's /healthz)", &passive),
        ("write on A -> read on B with X-Berth-Min-Seq (one request)", &min_seq),
    ] {
        rows.push((
            format!("{label}, {} writes", samples.len()),
            format!(
                "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
                ms(percentile(samples, 0.5)),
                ms(percentile(samples, 0.95)),
                ms(percentile(samples, 0.99))
            ),
        ));
    }
    drop(a);
    drop(b);

    // Migration throughput: out of the store into SQLite, then from SQLite into a sibling store of the same kind.
    let head = berth_store::open(store).await?.head().await?;
    let sqlite = format!("sqlite://{}", dir.path().join("copy.db").display());
    let out = migrate(store, &sqlite, &dir.path().join("out.json"))?;
    rows.push((format!("berth migrate {described} -> SQLite, {head} events"), format!("{out} events/s")));
    let target = sibling(store, "_copy");
    let into = migrate(&sqlite, &target, &dir.path().join("in.json"))?;
    rows.push((
        format!("berth migrate SQLite -> {}, {head} events", sibling(&described, "_copy")),
        format!("{into} events/s"),
    ));

    println!();
    println!("| measure | result |");
    println!("|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    println!("\n(the stores are left as they are: {store} and {target})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sibling;

    #[test]
    fn sibling_urls_name_another_schema_or_prefix() {
        assert_eq!(sibling("postgres://h/db?schema=b1", "_copy"), "postgres://h/db?schema=b1_copy");
        assert_eq!(sibling("postgres://h/db", "_copy"), "postgres://h/db?schema=berth_copy");
        assert_eq!(sibling("redis://h:1?prefix=p&x=1", "_c"), "redis://h:1?prefix=p_c&x=1");
    }
}
