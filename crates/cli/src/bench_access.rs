//! `berth bench --permissions`: what the permission layer costs a search. Over `--entities` services owned by
//! ten teams, the same searches are timed as an Admin (never narrowed) and as a Member, first under the
//! default permissions (everyone reads: the layer only decides that) and then with `read: ownedByTeam`
//! (every query gains a `$team` rule). Requests alternate between the callers so both see the same noise.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use crate::bench::{ingest_into, percentile, spawn, token, wait_ready};

const ROUNDS: usize = 400;

fn bodies(n: usize) -> Vec<Vec<u8>> {
    let langs = ["Rust", "Go", "Python", "Java"];
    (0..n)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|chunk| {
            let entities: Vec<Value> = chunk
                .iter()
                .map(|i| {
                    json!({"identifier": format!("svc-{i}"), "title": format!("Service {i}"), "team": [format!("t{}", i % 10)],
                        "properties": {"language": langs[i % 4], "replicas": i % 20}})
                })
                .collect();
            serde_json::to_vec(&json!({"entities": entities})).unwrap_or_default()
        })
        .collect()
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let r = client.post(url).bearer_auth(token).json(body).send().await?;
    if !r.status().is_success() {
        bail!("{url} answered {}", r.status());
    }
    let _ = r.bytes().await?;
    Ok(started.elapsed())
}

pub async fn run(entities: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::new();
    let server = spawn(dir.path())?;
    wait_ready(&client, &server.base).await?;
    let admin = token(&client, &server.base).await?;
    let base = server.base.clone();
    let bp = json!({"identifier": "service", "title": "Service", "schema": {"properties": {
        "language": {"type": "string", "enum": ["Rust", "Go", "Python", "Java"]}, "replicas": {"type": "number"}}}});
    client.post(format!("{base}/v1/blueprints")).bearer_auth(&admin).json(&bp).send().await?.error_for_status()?;
    for t in 0..10 {
        client
            .post(format!("{base}/v1/teams"))
            .bearer_auth(&admin)
            .json(&json!({"name": format!("t{t}")}))
            .send()
            .await?
            .error_for_status()?;
    }
    ingest_into(&client, &base, &admin, "service", bodies(entities), 2).await?;
    let app: Value = client
        .post(format!("{base}/v1/apps"))
        .bearer_auth(&admin)
        .json(&json!({"name": "member", "roles": ["Member"], "teams": ["t4"]}))
        .send()
        .await?
        .json()
        .await?;
    let member: Value = client
        .post(format!("{base}/v1/auth/access_token"))
        .json(&json!({"clientId": app["app"]["clientId"], "clientSecret": app["app"]["clientSecret"]}))
        .send()
        .await?
        .json()
        .await?;
    let member = member["accessToken"].as_str().unwrap_or_default().to_string();
    println!("berth bench --permissions: {entities} services in 10 teams; {ROUNDS} requests per caller and case");
    println!(
        "machine: {} cores; client and server share them",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let cases = [
        (
            "blueprint search, language = Rust, 50 per page",
            format!("{base}/v1/blueprints/service/entities/search"),
            json!({"query": {"combinator": "and", "rules": [{"property": "language", "operator": "=", "value": "Rust"}]}, "limit": 50}),
        ),
        (
            "search all blueprints, replicas = 19 (5 %)",
            format!("{base}/v1/entities/search"),
            json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"}, {"property": "replicas", "operator": "=", "value": 19}]}),
        ),
        (
            "aggregate count, language = Go",
            format!("{base}/v1/entities/aggregate"),
            json!({"func": "count", "query": {"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"}, {"property": "language", "operator": "=", "value": "Go"}]}}),
        ),
    ];
    println!(
        "\n| permissions | request | Admin p50 / p99 | Member p50 / p99 | Member / Admin (p50) |\n|---|---|---|---|---|"
    );
    for (label, patch) in [
        ("defaults (everyone reads)", None),
        ("read: ownedByTeam", Some(json!({"entities": {"read": {"roles": [], "ownedByTeam": true}}}))),
    ] {
        if let Some(p) = patch {
            client
                .patch(format!("{base}/v1/blueprints/service/permissions"))
                .bearer_auth(&admin)
                .json(&p)
                .send()
                .await?
                .error_for_status()?;
        }
        for (name, url, body) in &cases {
            let (mut a, mut m) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
            for _ in 0..ROUNDS {
                a.push(post(&client, url, &admin, body).await?);
                m.push(post(&client, url, &member, body).await?);
            }
            a.sort();
            m.sort();
            let (a50, m50) = (ms(percentile(&a, 0.5)), ms(percentile(&m, 0.5)));
            println!(
                "| {label} | {name} | {a50:.2} / {:.2} ms | {m50:.2} / {:.2} ms | {:.2} |",
                ms(percentile(&a, 0.99)),
                ms(percentile(&m, 0.99)),
                m50 / a50
            );
        }
    }
    history(&client, &base, &admin, entities).await?;
    sign_in_burst(&client, &base, &admin).await?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `GET .../history` of single entities in a catalog whose log holds every ingested entity's event: the
/// version index makes it cost the entity's versions, not the log.
async fn history(client: &reqwest::Client, base: &str, admin: &str, entities: usize) -> anyhow::Result<()> {
    let head: Value = client.get(format!("{base}/healthz")).send().await?.json().await?;
    let mut times = Vec::with_capacity(ROUNDS * 2);
    let mut k: u64 = 0x2545_F491;
    for _ in 0..ROUNDS * 2 {
        k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let id = (k >> 33) as usize % entities.max(1);
        let started = Instant::now();
        let r = client
            .get(format!("{base}/v1/blueprints/service/entities/svc-{id}/history"))
            .bearer_auth(admin)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("history of svc-{id} answered {}", r.status());
        }
        let _ = r.bytes().await?;
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "\n| history of one entity (log of {} events) | p50 | p99 |\n|---|---|---|\n| GET .../entities/{{id}}/history | {:.2} ms | {:.2} ms |",
        head["seq"],
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    Ok(())
}

/// 200 concurrent wrong sign-ins on `/login` (Argon2 each, if let through) while an API client writes: how
/// much later the writes come back than before the burst.
async fn sign_in_burst(client: &reqwest::Client, base: &str, admin: &str) -> anyhow::Result<()> {
    let write = |i: usize| {
        let (client, base, admin) = (client.clone(), base.to_string(), admin.to_string());
        async move {
            let started = Instant::now();
            client
                .post(format!("{base}/v1/blueprints/service/entities?upsert=true"))
                .bearer_auth(&admin)
                .json(&json!({"identifier": format!("burst-{i}"), "team": ["t1"]}))
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(started.elapsed())
        }
    };
    let mut quiet = Vec::new();
    for i in 0..50 {
        quiet.push(write(i).await?);
    }
    let burst: Vec<_> = (0..200)
        .map(|i| {
            let (client, base) = (client.clone(), base.to_string());
            tokio::spawn(async move {
                let email = if i % 2 == 0 { "bench@example.com".to_string() } else { format!("nobody{i}@example.com") };
                let form = format!("email={email}&password=wrong-password&next=%2F");
                client
                    .post(format!("{base}/login"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let mut during = Vec::new();
    for i in 50..100 {
        during.push(write(i).await?);
    }
    let mut statuses = std::collections::BTreeMap::new();
    for b in burst {
        *statuses.entry(b.await.unwrap_or(0)).or_insert(0) += 1;
    }
    quiet.sort();
    during.sort();
    println!(
        "\n| API write (single upsert) | p50 | max |\n|---|---|---|\n| alone | {:.2} ms | {:.2} ms |\n| during 200 concurrent wrong sign-ins | {:.2} ms | {:.2} ms |",
        ms(percentile(&quiet, 0.5)),
        ms(percentile(&quiet, 1.0)),
        ms(percentile(&during, 0.5)),
        ms(percentile(&during, 1.0))
    );
    println!("sign-in answers: {statuses:?} (401 checked, 429 blocked, 503 no hashing slot)");
    Ok(())
}
