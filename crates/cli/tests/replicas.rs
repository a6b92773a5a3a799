//! Replicas: two `berth serve` processes on one PostgreSQL, and two on one Redis. A write on A is readable on
//! B with `X-Berth-Min-Seq`; a token from A works on B (one signing key in the store); 8 concurrent clients
//! merging different fields into the same entities through both replicas lose nothing.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Berth, seq_of};

const FIELDS: usize = 8;
const ENTITIES: usize = 12;
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres() {
    replicas(&support::postgres_url("replicas")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_redis() {
    replicas(&support::redis_url("replicas")).await;
}

async fn replicas(store: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = support::client();
    let flags = ["--min-seq-wait-ms", "3000"];
    let a = Berth::spawn(dir.path(), store, &flags);
    let b = Berth::spawn(dir.path(), store, &flags);
    let token_a = a.token(&client).await;
    let token_b = b.token(&client).await;

    // One signing key for both: A's token works on B and B's on A.
    for (server, token) in [(&b, &token_a), (&a, &token_b)] {
        let r = client.get(server.url("/v1/blueprints")).bearer_auth(token).send().await.expect("list");
        assert_eq!(r.status(), 200, "a token from one replica is valid on the other");
    }

    // A write on A, read on B at once with X-Berth-Min-Seq.
    let mut properties = serde_json::Map::new();
    for f in 0..FIELDS {
        properties.insert(format!("f{f}"), json!({"type": "string"}));
    }
    let seq = support::create_blueprint(
        &client,
        &a,
        &token_a,
        json!({"identifier": "svc", "title": "Service", "schema": {"properties": properties}}),
    )
    .await;
    let r = client
        .get(b.url("/v1/blueprints/svc"))
        .bearer_auth(&token_b)
        .header("x-berth-min-seq", seq.to_string())
        .send()
        .await
        .expect("read on B");
    assert_eq!(r.status(), 200, "B has applied A's write once it reaches its sequence");

    // A sequence no one wrote: a bounded wait, then 503. A malformed header: 400.
    let started = Instant::now();
    let r = client
        .get(b.url("/v1/blueprints/svc"))
        .bearer_auth(&token_b)
        .header("x-berth-min-seq", (seq + 1_000_000).to_string())
        .send()
        .await
        .expect("read");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert!(started.elapsed() >= Duration::from_millis(2900), "it waited for the configured time");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["ok"], false);
    assert!(body["message"].as_str().unwrap_or_default().contains("has not applied"), "{body}");
    let r = client
        .get(b.url("/v1/blueprints"))
        .bearer_auth(&token_b)
        .header("x-berth-min-seq", "soon")
        .send()
        .await
        .expect("read");
    assert_eq!(r.status(), 400);
    // Without a valid token the header is not even looked at: the answer is the 401 (security review L1).
    let r = client.get(b.url("/v1/blueprints")).header("x-berth-min-seq", "soon").send().await.expect("read");
    assert_eq!(r.status(), 401);

    // 8 clients, each owning one field, merge into the same entities through both replicas.
    let mut clients = Vec::new();
    for c in 0..FIELDS {
        let (server, token) = if c % 2 == 0 { (&a, &token_a) } else { (&b, &token_b) };
        let (client, url, token) = (client.clone(), server.url("/v1/blueprints/svc/entities"), token.clone());
        clients.push(tokio::spawn(async move {
            let mut last = 0;
            for round in 0..ROUNDS {
                for e in 0..ENTITIES {
                    let body =
                        json!({"identifier": format!("e{e}"), "properties": {format!("f{c}"): format!("r{round}")}});
                    let r = client
                        .post(format!("{url}?upsert=true&merge=true"))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .expect("merge");
                    assert!(r.status().is_success(), "merge answered {}", r.status());
                    last = last.max(seq_of(&r));
                }
            }
            last
        }));
    }
    let mut newest = 0;
    for c in clients {
        newest = newest.max(c.await.expect("client"));
    }

    // Both replicas, once at the newest sequence, hold every field of every client's last round.
    for (server, token) in [(&a, &token_a), (&b, &token_b)] {
        let r = client
            .get(server.url("/v1/blueprints/svc/entities"))
            .bearer_auth(token)
            .header("x-berth-min-seq", newest.to_string())
            .send()
            .await
            .expect("list");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("json");
        let entities = body["entities"].as_array().expect("entities");
        assert_eq!(entities.len(), ENTITIES, "on {}", server.base);
        for entity in entities {
            for f in 0..FIELDS {
                assert_eq!(
                    entity["properties"][format!("f{f}")],
                    format!("r{}", ROUNDS - 1),
                    "a merge was lost on {}: {entity}",
                    server.base
                );
            }
        }
    }

    // Without the header, B converges by itself (the store announces A's writes).
    let seq = support::create_blueprint(
        &client,
        &a,
        &token_a,
        json!({"identifier": "late", "title": "Late", "schema": {"properties": {}}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client.get(b.url("/healthz")).send().await.expect("healthz");
        let body: Value = r.json().await.expect("json");
        if body["seq"].as_u64().unwrap_or(0) >= seq {
            break;
        }
        assert!(Instant::now() < deadline, "B did not follow A's write within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
