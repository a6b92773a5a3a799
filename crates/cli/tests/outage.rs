//! Connection loss: the network between a server and its PostgreSQL or Redis is cut (through a proxy) and
//! restored. Meanwhile the server reports not-ready, refuses writes with 503 and still answers reads from
//! memory; afterwards it is ready again and takes writes, with every acknowledged write present once and the
//! log without gaps or duplicates.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Berth, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_survived() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = postgres_via(&proxy, "outage");
    outage(&proxy, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_survived() {
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let url = format!("redis://127.0.0.1:{}?prefix={}", proxy.port, support::unique("outage"));
    outage(&proxy, &url).await;
}

/// The test PostgreSQL reached through `proxy`, in a schema of its own.
fn postgres_via(proxy: &Proxy, tag: &str) -> String {
    let base =
        std::env::var("BERTH_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let via_proxy = base.replacen(":5432", &format!(":{}", proxy.port), 1);
    format!("{via_proxy}{}schema={}", if via_proxy.contains('?') { '&' } else { '?' }, support::unique(tag))
}

async fn ready_status(client: &reqwest::Client, server: &Berth) -> u16 {
    client.get(server.url("/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn bulk(client: &reqwest::Client, server: &Berth, token: &str, ids: &[String]) -> u16 {
    let entities: Vec<Value> = ids.iter().map(|id| json!({"identifier": id, "properties": {}})).collect();
    client
        .post(server.url("/v1/blueprints/item/entities/bulk"))
        .bearer_auth(token)
        .json(&json!({"entities": entities}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn outage(proxy: &Proxy, url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = support::client();
    let server = Berth::spawn(dir.path(), url, &[]);
    let token = server.token(&client).await;
    support::create_blueprint(
        &client,
        &server,
        &token,
        json!({"identifier": "item", "title": "Item", "schema": {"properties": {}}}),
    )
    .await;
    let mut acked = BTreeSet::new();
    let before: Vec<String> = (0..50).map(|i| format!("before-{i}")).collect();
    assert_eq!(bulk(&client, &server, &token, &before).await, 200);
    acked.extend(before);

    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ready_status(&client, &server).await != 503 {
        assert!(Instant::now() < deadline, "the server did not report not-ready during the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during: Vec<String> = (0..10).map(|i| format!("during-{i}")).collect();
    assert_eq!(bulk(&client, &server, &token, &during).await, 503, "a write without a store is a 503");
    let r =
        client.get(server.url("/v1/blueprints/item/entities/before-3")).bearer_auth(&token).send().await.expect("read");
    assert_eq!(r.status(), 200, "reads are served from memory during the outage");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready_status(&client, &server).await != 200 {
        assert!(Instant::now() < deadline, "the server did not become ready after the store came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after: Vec<String> = (0..50).map(|i| format!("after-{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while bulk(&client, &server, &token, &after).await != 200 {
        assert!(Instant::now() < deadline, "writes did not resume after the outage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    acked.extend(after);

    let present = support::identifiers(&client, &server, &token, "item").await;
    assert_eq!(present, acked, "exactly the acknowledged writes, once each");
    let ready: Value = client.get(server.url("/readyz")).send().await.expect("readyz").json().await.expect("json");
    assert_eq!(ready["storeHead"], ready["applied"], "the replica's state is the store's log: {ready}");

    // A second server rebuilt from the store agrees: nothing was duplicated or lost in the log.
    let second = Berth::spawn(dir.path(), url, &[]);
    let token = second.token(&client).await;
    assert_eq!(support::entities(&client, &second, &token, "item").await.len(), acked.len());
}

/// M4 / T4: the network to PostgreSQL goes silent (nothing forwarded, nothing closed). A write ends in a 503
/// within the store's timeouts instead of hanging the writer; readiness says not-ready; once the network is
/// back, writes resume, and a write answered "not applied" is indeed absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_black_hole_ends_in_503s_and_recovers() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = postgres_via(&proxy, "hole");
    black_hole(&proxy, &url).await;
}

/// The same with Redis, whose one multiplexed connection queues every call behind the silent ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_black_hole_ends_in_503s_and_recovers() {
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let url = format!("redis://127.0.0.1:{}?prefix={}", proxy.port, support::unique("hole"));
    black_hole(&proxy, &url).await;
}

async fn black_hole(proxy: &Proxy, url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = support::client();
    let server = Berth::spawn(dir.path(), url, &[]);
    let token = server.token(&client).await;
    support::create_blueprint(
        &client,
        &server,
        &token,
        json!({"identifier": "item", "title": "Item", "schema": {"properties": {}}}),
    )
    .await;
    assert_eq!(bulk(&client, &server, &token, &["before".to_string()]).await, 200);

    proxy.stall();
    let started = Instant::now();
    let r = client
        .post(server.url("/v1/blueprints/item/entities/bulk"))
        .bearer_auth(&token)
        .json(&json!({"entities": [{"identifier": "during"}]}))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(75), "answered after {:?}", started.elapsed());
    let answer: Value = r.json().await.expect("json");
    let not_applied = answer["error"] != json!("outcome_unknown");
    assert_eq!(ready_status(&client, &server).await, 503, "not ready while the store is silent");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bulk(&client, &server, &token, &["after".to_string()]).await != 200 {
        assert!(Instant::now() < deadline, "writes did not resume after the network came back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let present = support::identifiers(&client, &server, &token, "item").await;
    assert!(present.contains("before") && present.contains("after"), "{present:?}");
    if not_applied {
        assert!(!present.contains("during"), "a write answered 'not applied' was applied: {answer}");
    }
    // The log holds what the server shows: a second server rebuilt from the store sees the same entities.
    let second = Berth::spawn(dir.path(), url, &[]);
    let token = second.token(&client).await;
    let rebuilt = support::identifiers(&client, &second, &token, "item").await;
    assert_eq!(rebuilt, present, "the server's catalog and its store's log differ");
}
