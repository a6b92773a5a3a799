//! Delivery across processes: `berth serve` killed with SIGKILL while delivering, then restarted, delivers
//! everything (duplicates only of the page in flight and the last 100 ms); two replicas on one store deliver each message once
//! between them, and when the one delivering dies the other takes over from the durable position.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::Berth;

/// The most messages a crash may make the receiver get twice: the page in flight (200 for a webhook
/// delivering in log order) and what was delivered since the last commit (committed every 100 ms: about
/// 50 messages at this receiver's pace).
const PAGE: usize = 400;

/// A receiver that takes `delay` per message (so delivery lags the writes) and keeps the `seq` of each.
async fn receiver(delay: Duration) -> (String, Arc<Mutex<Vec<u64>>>) {
    let seqs: Arc<Mutex<Vec<u64>>> = Arc::default();
    let kept = Arc::clone(&seqs);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                tokio::time::sleep(delay).await;
                let m: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Some(seq) = m["seq"].as_u64() {
                    kept.lock().expect("lock").push(seq);
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, seqs)
}

async fn post(
    client: &reqwest::Client,
    server: &Berth,
    token: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value, u64) {
    let r = client.post(server.url(path)).bearer_auth(token).json(&body).send().await.expect("post");
    let status = r.status();
    let seq = support::seq_of(&r);
    (status, r.json().await.unwrap_or(Value::Null), seq)
}

/// Writes `n` items in bulk requests of 100; the sequence numbers they took, from `first` on.
async fn write_items(client: &reqwest::Client, server: &Berth, token: &str, from: usize, n: usize) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(100) {
        let entities: Vec<Value> =
            chunk.iter().map(|i| json!({"identifier": format!("i{i}"), "properties": {"n": i}})).collect();
        let (status, body, _) =
            post(client, server, token, "/v1/blueprints/item/entities/bulk", json!({"entities": entities})).await;
        assert!(status.is_success(), "{body}");
    }
}

async fn setup(client: &reqwest::Client, server: &Berth, token: &str, url: &str) -> u64 {
    let (status, body, _) = post(
        client,
        server,
        token,
        "/v1/blueprints",
        json!({"identifier": "item", "title": "Item", "schema": {"properties": {"n": {"type": "number"}}}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body, seq) = post(client, server, token, "/v1/subscriptions",
        json!({"identifier": "items", "destination": {"type": "WEBHOOK", "url": url}, "filter": {"blueprints": ["item"]}})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    seq
}

async fn head(client: &reqwest::Client, server: &Berth, token: &str) -> u64 {
    let r = client.get(server.url("/v1/subscriptions/items/status")).bearer_auth(token).send().await.expect("status");
    let body: Value = r.json().await.expect("json");
    body["status"]["head"].as_u64().expect("head")
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks a delivery log against the changes `(created, head]`: every one there; received in increasing
/// order but for rewinds (a crash's repeated page), each repeating at most one page.
fn check(seqs: &[u64], created: u64, head: u64, rewinds_allowed: usize) {
    let distinct: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    let expected: std::collections::BTreeSet<u64> = (created + 1..=head).collect();
    assert_eq!(distinct, expected, "every change delivered (and nothing else)");
    let mut rewinds = 0;
    for w in seqs.windows(2) {
        if w[1] <= w[0] {
            rewinds += 1;
            assert!(w[0] - w[1] < PAGE as u64, "a rewind of at most one page: {} after {}", w[1], w[0]);
        }
    }
    assert!(rewinds <= rewinds_allowed, "{rewinds} rewinds");
    assert!(seqs.len() - distinct.len() <= PAGE * rewinds_allowed, "{} duplicates", seqs.len() - distinct.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_delivering_then_restart_delivers_everything() {
    let dir = tempfile::tempdir().expect("dir");
    let store = support::sqlite_url(dir.path(), "delivery.db");
    let client = support::client();
    let (url, seqs) = receiver(Duration::from_millis(2)).await;
    let mut server = Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1"]);
    let token = server.token(&client).await;
    let created = setup(&client, &server, &token, &url).await;
    write_items(&client, &server, &token, 0, 1500).await;
    let head_before = head(&client, &server, &token).await;
    // Killed mid-delivery.
    wait_for("some deliveries", 60, || seqs.lock().expect("lock").len() > 200).await;
    server.kill();
    let at_kill = seqs.lock().expect("lock").len();
    assert!(at_kill < 1500, "killed while delivering ({at_kill} delivered)");
    // Same data directory and store: the position is durable.
    let data_dir = server.data_dir.clone();
    drop(server);
    let server = Berth::spawn_in(&data_dir, &store, &["--allow-destination", "127.0.0.1"]);
    let token = server.token(&client).await;
    write_items(&client, &server, &token, 1500, 100).await;
    let head_after = head(&client, &server, &token).await;
    assert!(head_after > head_before);
    wait_for("everything after the restart", 120, || {
        let got = seqs.lock().expect("lock");
        got.iter().copied().collect::<std::collections::BTreeSet<u64>>().len() as u64 >= head_after - created
    })
    .await;
    check(&seqs.lock().expect("lock"), created, head_after, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_each_message_once_and_the_survivor_takes_over() {
    let dir = tempfile::tempdir().expect("dir");
    let store = support::postgres_url("delivery");
    let client = support::client();
    let (url, seqs) = receiver(Duration::from_millis(1)).await;
    let mut a = Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1"]);
    let mut b = Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1"]);
    let (ta, tb) = (a.token(&client).await, b.token(&client).await);
    let created = setup(&client, &a, &ta, &url).await;
    // Writes through both replicas.
    write_items(&client, &a, &ta, 0, 300).await;
    write_items(&client, &b, &tb, 300, 300).await;
    let head1 = head(&client, &a, &ta).await;
    wait_for("the first 600", 60, || seqs.lock().expect("lock").len() as u64 >= head1 - created).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    check(&seqs.lock().expect("lock"), created, head1, 0);
    // Which replica delivers: the other is on standby.
    let state = |server: &Berth, token: &str| {
        let (client, url, token) = (client.clone(), server.url("/v1/subscriptions/items/status"), token.to_string());
        async move {
            let body: Value =
                client.get(url).bearer_auth(token).send().await.expect("status").json().await.expect("json");
            body["status"]["state"].as_str().unwrap_or_default().to_string()
        }
    };
    let (sa, sb) = (state(&a, &ta).await, state(&b, &tb).await);
    assert!([sa.as_str(), sb.as_str()].contains(&"standby"), "one replica waits: {sa} / {sb}");
    // The delivering one dies; the survivor takes over when its lease runs out (15 s).
    let survivor = if sa == "standby" {
        b.kill();
        &a
    } else {
        a.kill();
        &b
    };
    let token = if sa == "standby" { &ta } else { &tb };
    write_items(&client, survivor, token, 600, 200).await;
    let head2 = head(&client, survivor, token).await;
    wait_for("the survivor's deliveries", 90, || {
        let got = seqs.lock().expect("lock");
        got.iter().copied().collect::<std::collections::BTreeSet<u64>>().len() as u64 >= head2 - created
    })
    .await;
    check(&seqs.lock().expect("lock"), created, head2, 1);
}
