//! Subscriptions: the API (Admin only, destinations the server cannot deliver to refused with the flag to
//! set, private addresses refused unless allowed), and delivery to a live HTTP receiver and a real Redis:
//! every admitted change, in log order, signed with the subscription's secret; a receiver that fails for a
//! while receives everything afterwards; a restart continues from the durable position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use berth_testkit::brokers::{broker, kafka_records, kafka_seq, nats_messages};
use berth_testkit::server::TestServer;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::permissions::call;

/// A Redis stream's entries: (id, [(field, value)]).
type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// What the receiver got: (headers, body).
type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// An HTTP receiver on a free port that answers 503 to its first `fail_first` requests, then 200.
async fn receiver(fail_first: usize) -> (String, Received, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let received: Received = Arc::default();
    let (failures, stop) = receiver_on(listener, fail_first, Arc::clone(&received));
    // Runs to the end of the test.
    std::mem::forget(stop);
    (url, received, failures)
}

/// [`receiver`] on a listener, into `received`; it stops (its port refuses connections) when the sender
/// answered is used or dropped.
fn receiver_on(
    listener: tokio::net::TcpListener,
    fail_first: usize,
    received: Received,
) -> (Arc<AtomicUsize>, tokio::sync::oneshot::Sender<()>) {
    let failures = Arc::new(AtomicUsize::new(fail_first));
    let (r, f) = (Arc::clone(&received), Arc::clone(&failures));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (r, f) = (Arc::clone(&r), Arc::clone(&f));
            async move {
                if f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                r.lock().expect("lock").push((headers, body.to_vec()));
                StatusCode::OK
            }
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .expect("serve")
    });
    (failures, stop)
}

/// A receiver that answers 503 for a while, then is down (connections refused), then is back on the same
/// port: every change arrives, in order, once, and the status shows what failed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_then_is_down_gets_everything_when_it_is_back() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received: Received = Arc::default();
    let (failures, stop) = receiver_on(listener, usize::MAX / 2, Arc::clone(&received));
    let s = TestServer::start_with(|c| c.allow_destinations = vec!["127.0.0.1".into()]).await;
    blueprints(&s).await;
    let a = s
        .post(
            "/v1/subscriptions",
            json!({"identifier": "flaky-then-down", "maxAttempts": 100,
            "destination": {"type": "WEBHOOK", "url": format!("http://{addr}/hook")}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let mut expected = Vec::new();
    let mut write = async |s: &TestServer, from: usize| {
        for i in from..from + 20 {
            let a = s
                .post("/v1/blueprints/service/entities?upsert=true", json!({"identifier": format!("s{}", i % 5)}))
                .await;
            expected.push(a.seq());
        }
    };
    write(&s, 0).await;
    let status = async |s: &TestServer| s.get("/v1/subscriptions/flaky-then-down/status").await.body["status"].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&s).await["failures"].as_u64() < Some(2) {
        assert!(Instant::now() < deadline, "no 503 seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&s).await["attempts"][0]["status"], 503, "the receiver's answer is shown");
    // Down: connections refused.
    let _ = stop.send(());
    let answered = usize::MAX / 2 - failures.load(Ordering::SeqCst);
    write(&s, 20).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(&s).await;
        let last = &st["attempts"][0];
        if last["status"].is_null() && last["delivered"] == false {
            let error = last["error"].as_str().unwrap_or_default().to_lowercase();
            assert!(error.contains("refused") || error.contains("connect"), "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "no refused connection seen: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(usize::MAX / 2 - failures.load(Ordering::SeqCst), answered, "nothing reached the closed port");
    assert!(received.lock().expect("lock").is_empty());
    // Back, on the same port, accepting everything.
    let listener = tokio::net::TcpListener::bind(addr).await.expect("the same port again");
    let (_, _back) = receiver_on(listener, 0, Arc::clone(&received));
    wait_for("everything after the receiver came back", || received.lock().expect("lock").len() >= expected.len())
        .await;
    let seqs: Vec<u64> = bodies(&received).iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, expected, "nothing lost, in log order, once");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(&s).await;
        assert_eq!(st["deadLettered"], 0, "{st}");
        assert!(st["yieldedMillis"].is_u64(), "{st}");
        if st["position"].as_u64() >= expected.last().copied() {
            break;
        }
        assert!(Instant::now() < deadline, "the position did not reach the last change: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a message carries Port's signature under `secret`.
fn signed_with(headers: &HeaderMap, body: &[u8], secret: &str) -> bool {
    let ts = headers.get("x-port-timestamp").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let sig = headers.get("x-port-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    sig == format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited 60 s for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bodies(received: &Received) -> Vec<Value> {
    received.lock().expect("lock").iter().map(|(_, b)| serde_json::from_slice(b).expect("json")).collect()
}

async fn blueprints(s: &TestServer) {
    for id in ["service", "team-x"] {
        let a = s
            .post(
                "/v1/blueprints",
                json!({"identifier": id, "title": id, "schema": {"properties": {"n": {"type": "number"}}}}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_the_server_cannot_deliver() {
    let s = TestServer::start().await;
    let (url, _, _) = receiver(0).await;
    // Loopback is private: refused unless allowed.
    let a = s
        .post("/v1/subscriptions", json!({"identifier": "hooks", "destination": {"type": "WEBHOOK", "url": url}}))
        .await;
    a.assert_error(422, "invalid_request");
    assert!(a.body["message"].as_str().is_some_and(|m| m.contains("--allow-destination")), "{}", a.body);
    // A broker the server was not started with: the flag to set.
    for (destination, flag) in [
        (json!({"type": "REDIS_STREAM", "stream": "s"}), "--redis-stream-url"),
        (json!({"type": "NATS", "subject": "s"}), "--nats-url"),
        (json!({"type": "KAFKA", "topic": "t"}), "--kafka-brokers"),
    ] {
        let a = s.post("/v1/subscriptions", json!({"identifier": "b", "destination": destination})).await;
        a.assert_error(422, "invalid_request");
        assert!(a.body["message"].as_str().is_some_and(|m| m.contains(flag)), "{}", a.body);
    }
    // A bad body says what is wrong; nothing is created.
    let a = s
        .post("/v1/subscriptions", json!({"identifier": "b", "destination": {"type": "WEBHOOK", "url": "https://hooks.example.com/x"}, "filter": {"actions": ["MOVE"]}}))
        .await;
    a.assert_error(422, "invalid_request");
    assert_eq!(s.get("/v1/subscriptions").await.body["subscriptions"], json!([]));
    // Admins only, reads included.
    let member = crate::common::app_token(&s, "viewer", &["Member"], &[]).await;
    let (status, _) = call(&s, &member, Method::GET, "/v1/subscriptions", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &s,
        &member,
        Method::POST,
        "/v1/subscriptions",
        Some(json!({"identifier": "m", "destination": {"type": "WEBHOOK", "url": "https://hooks.example.com/x"}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A public URL is accepted; the secret is shown once, never in a read.
    let a = s
        .post(
            "/v1/subscriptions",
            json!({"identifier": "public", "destination": {"type": "WEBHOOK", "url": "https://hooks.example.com/x"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let secret = a.body["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"));
    let read = s.get("/v1/subscriptions/public").await;
    assert!(!read.body.to_string().contains(&secret), "{}", read.body);
    assert_eq!(read.body["subscription"]["maxAttempts"], 10);
    assert_eq!(s.delete("/v1/subscriptions/public").await.status, StatusCode::OK);
    assert_eq!(s.get("/v1/subscriptions/public").await.status, StatusCode::NOT_FOUND);
    // At most 100 (each one's worker reads the whole log); replacing one at the limit is fine.
    let body = |i: usize| json!({"identifier": format!("s{i}"), "enabled": false, "destination": {"type": "WEBHOOK", "url": "https://hooks.example.com/x"}});
    for i in 0..100 {
        assert_eq!(s.post("/v1/subscriptions", body(i)).await.status, StatusCode::CREATED);
    }
    let over = s.post("/v1/subscriptions", body(100)).await;
    over.assert_error(422, "invalid_request");
    assert!(over.body["message"].as_str().is_some_and(|m| m.contains("limit is 100")), "{}", over.body);
    let again = s.put("/v1/subscriptions/s7", json!({"title": "seven", "enabled": false, "destination": {"type": "WEBHOOK", "url": "https://hooks.example.com/y"}})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_receive_every_admitted_change_in_order_signed_through_failures_and_a_restart() {
    let (url, received, failures) = receiver(3).await;
    let s = TestServer::start_with(|c| c.allow_destinations = vec!["127.0.0.1".into()]).await;
    blueprints(&s).await;
    let a = s
        .post(
            "/v1/subscriptions",
            json!({"identifier": "services", "title": "Services",
            "destination": {"type": "WEBHOOK", "url": url, "headers": {"X-Team": "platform"}},
            "filter": {"resources": ["entity"], "blueprints": ["service"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let secret = a.body["secret"].as_str().expect("secret").to_string();
    // The header's value is sealed: not in the answer, the log's event feed or a read.
    assert!(a.body["subscription"]["destination"]["headers"]["X-Team"]["sealed"].is_string(), "{}", a.body);
    for answer in
        [a.body.clone(), s.get("/v1/subscriptions/services").await.body, s.get("/v1/events?limit=1000").await.body]
    {
        assert!(!answer.to_string().contains("platform"), "{answer}");
    }
    // Sent back unchanged, a sealed value stays; one sealed for another subscription is refused.
    let mut same = json!({"title": "Services", "destination": a.body["subscription"]["destination"].clone(),
        "filter": {"resources": ["entity"], "blueprints": ["service"]}});
    assert_eq!(s.put("/v1/subscriptions/services", same.clone()).await.status, StatusCode::OK);
    let other = s
        .post(
            "/v1/subscriptions",
            json!({"identifier": "other", "destination": {"type": "WEBHOOK", "url": url, "headers": {"X-Team": "x"}},
                "filter": {"blueprints": ["none"]}}),
        )
        .await;
    same["destination"]["headers"]["X-Team"] = other.body["subscription"]["destination"]["headers"]["X-Team"].clone();
    let moved = s.put("/v1/subscriptions/services", same).await;
    assert_eq!(moved.status.as_u16(), 422, "{}", moved.body);
    assert!(moved.body["message"].as_str().unwrap_or_default().contains("another subscription"), "{}", moved.body);
    assert_eq!(s.delete("/v1/subscriptions/other").await.status, StatusCode::OK);
    // 300 writes over 10 services (creations, updates, deletions) and some of another blueprint.
    let mut expected: Vec<(u64, String, &str)> = Vec::new();
    for i in 0..300u64 {
        let id = format!("svc-{}", i % 10);
        let answer = if i % 37 == 36 {
            s.delete(&format!("/v1/blueprints/service/entities/{id}")).await
        } else {
            s.post("/v1/blueprints/service/entities?upsert=true", json!({"identifier": id, "properties": {"n": i}}))
                .await
        };
        if answer.status == StatusCode::NOT_FOUND {
            continue;
        }
        assert!(answer.status.is_success(), "{}", answer.body);
        expected.push((answer.seq(), id, if i % 37 == 36 { "DELETE" } else { "PUT" }));
        if i % 50 == 0 {
            let other = s
                .post("/v1/blueprints/team-x/entities?upsert=true", json!({"identifier": "t", "properties": {"n": i}}))
                .await;
            assert!(other.status.is_success());
        }
    }
    wait_for("every change", || received.lock().expect("lock").len() >= expected.len()).await;
    assert_eq!(failures.load(Ordering::SeqCst), 0, "the first three attempts failed and were retried");
    let got = bodies(&received);
    assert_eq!(got.len(), expected.len(), "nothing twice, nothing of the filtered-out blueprint");
    for ((seq, id, kind), m) in expected.iter().zip(&got) {
        assert_eq!(m["seq"], json!(seq), "log order");
        assert_eq!(m["context"]["entityIdentifier"], json!(id));
        assert_eq!(m["resourceType"], "entity");
        assert_eq!(m["subscription"], "services");
        if *kind == "DELETE" {
            assert_eq!(m["action"], "DELETE");
            assert!(m["diff"]["after"].is_null() && m["diff"]["before"]["identifier"] == json!(id), "{m}");
        } else {
            assert!(["CREATE", "UPDATE"].contains(&m["action"].as_str().unwrap_or_default()), "{m}");
        }
    }
    for (headers, body) in received.lock().expect("lock").iter() {
        assert!(signed_with(headers, body, &secret), "every signature valid");
        assert_eq!(headers.get("x-team").and_then(|v| v.to_str().ok()), Some("platform"));
    }
    // The status: delivered, the failures seen, the position at the last change.
    let st = s.get("/v1/subscriptions/services/status").await;
    assert_eq!(st.status, StatusCode::OK, "{}", st.body);
    assert!(st.body["status"]["failures"].as_u64() >= Some(3), "{}", st.body);
    assert_eq!(st.body["status"]["attempts"][0]["delivered"], true);
    let last = expected.last().expect("writes").0;

    // A rotated secret signs what follows.
    let r = s.post("/v1/subscriptions/services/rotate-secret", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let rotated = r.body["secret"].as_str().expect("secret").to_string();
    assert_ne!(rotated, secret);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = s.post("/v1/blueprints/service/entities?upsert=true", json!({"identifier": "after-rotation"})).await;
    wait_for("the change after the rotation", || received.lock().expect("lock").len() > expected.len()).await;
    {
        let all = received.lock().expect("lock");
        let (headers, body) = all.last().expect("one");
        assert!(signed_with(headers, body, &rotated), "signed with the new secret");
        assert!(!signed_with(headers, body, &secret));
    }
    let delivered = received.lock().expect("lock").len();
    assert!(a.seq() > last);

    // A restart: the receiver refuses for a while, the server stops with changes undelivered, starts again
    // on the same directory, and delivers them all, in order, from the durable position.
    failures.store(usize::MAX / 2, Ordering::SeqCst);
    let mut pending = Vec::new();
    for i in 0..5 {
        let a = s.post("/v1/blueprints/service/entities?upsert=true", json!({"identifier": format!("late-{i}")})).await;
        pending.push(a.seq());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (dir, data_dir) = s.stop().await;
    failures.store(0, Ordering::SeqCst);
    let s = TestServer::start_configured(data_dir, |c| c.allow_destinations = vec!["127.0.0.1".into()]).await;
    wait_for("the changes made before the restart", || {
        received.lock().expect("lock").len() >= delivered + pending.len()
    })
    .await;
    let got = bodies(&received);
    let seqs: Vec<u64> = got[delivered..].iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, pending, "nothing missing, in order, once (the receiver accepted none of them before)");
    drop(s);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_receive_the_changes_in_order() {
    let redis_url = berth_testkit::stores::redis_base();
    let stream = berth_testkit::stores::unique("berth-stream");
    let s = TestServer::start_with(|c| c.redis_stream_url = Some(redis_url.clone())).await;
    blueprints(&s).await;
    let a = s
        .post(
            "/v1/subscriptions",
            json!({"identifier": "to-redis", "destination": {"type": "REDIS_STREAM", "stream": stream},
            "filter": {"blueprints": ["service"], "actions": ["CREATE", "DELETE"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let mut expected = Vec::new();
    for i in 0..50 {
        let a = s.post("/v1/blueprints/service/entities", json!({"identifier": format!("s{i}")})).await;
        expected.push((a.seq(), "CREATE"));
        // Updates are filtered out.
        s.patch(&format!("/v1/blueprints/service/entities/s{i}"), json!({"properties": {"n": 1}})).await;
    }
    let d = s.delete("/v1/blueprints/service/entities/s7").await;
    expected.push((d.seq(), "DELETE"));
    let client = redis::Client::open(redis_url.as_str()).expect("redis");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    let entries: StreamEntries = loop {
        let entries: StreamEntries =
            redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut conn).await.expect("xrange");
        if entries.len() >= expected.len() || Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entries.len(), expected.len(), "every admitted change, once");
    for ((seq, action), (_, fields)) in expected.iter().zip(&entries) {
        let field = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        assert_eq!(field("seq"), Some(seq.to_string()));
        assert_eq!(field("subscription").as_deref(), Some("to-redis"));
        let message: Value = serde_json::from_str(&field("message").expect("message")).expect("json");
        assert_eq!(message["action"], *action);
        assert_eq!(message["seq"], json!(seq));
        assert!(field("key").is_some_and(|k| k.starts_with("service/s")));
    }
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.expect("del");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_receives_the_changes_in_order_with_message_ids() {
    let nats_url = std::env::var("BERTH_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let tag = berth_testkit::stores::unique("n").replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let subject = format!("berth.test.{tag}");
    let s = TestServer::start_with(|c| c.nats_url = Some(nats_url.clone())).await;
    blueprints(&s).await;
    let id = format!("to-nats-{tag}");
    let a = s
        .post(
            "/v1/subscriptions",
            json!({"identifier": id, "destination": {"type": "NATS", "subject": subject},
            "filter": {"blueprints": ["service"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let mut expected = Vec::new();
    for i in 0..40 {
        let a = s
            .post(
                "/v1/blueprints/service/entities?upsert=true",
                json!({"identifier": format!("s{}", i % 4), "properties": {"n": i}}),
            )
            .await;
        expected.push(a.seq());
    }
    let mut seqs = Vec::new();
    for (headers, body) in nats_messages(&nats_url, &subject, expected.len()).await {
        let seq: u64 = headers.get("Berth-Seq").expect("Berth-Seq").as_str().parse().expect("number");
        assert_eq!(headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string()), Some(format!("{id}:{seq}")));
        assert_eq!(body["seq"], json!(seq));
        assert_eq!(body["resourceType"], "entity");
        seqs.push(seq);
    }
    assert_eq!(seqs, expected, "every change, in log order, once");
    berth_testkit::brokers::nats_delete(&nats_url, &subject).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_keep_failing_go_to_the_dead_letters_and_are_retried_from_the_api() {
    let (url, received, failures) = receiver(usize::MAX / 2).await;
    let s = TestServer::start_with(|c| c.allow_destinations = vec!["127.0.0.1".into()]).await;
    blueprints(&s).await;
    let a = s
        .post(
            "/v1/subscriptions",
            json!({"identifier": "flaky", "maxAttempts": 2,
            "destination": {"type": "WEBHOOK", "url": url}, "filter": {"blueprints": ["service"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let mut dead = Vec::new();
    for i in 0..3 {
        dead.push(s.post("/v1/blueprints/service/entities", json!({"identifier": format!("d{i}")})).await.seq());
    }
    // Each fails twice and is set aside; delivery goes on.
    let deadline = Instant::now() + Duration::from_secs(60);
    let letters = loop {
        let l = s.get("/v1/subscriptions/flaky/dead-letters").await.body["deadLetters"].clone();
        if l.as_array().is_some_and(|a| a.len() == 3) {
            break l;
        }
        assert!(Instant::now() < deadline, "waited for 3 dead letters: {l}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seqs: Vec<u64> = letters.as_array().expect("list").iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, dead);
    assert_eq!(letters[0]["attempts"], 2);
    assert!(letters[0]["error"].as_str().is_some_and(|e| e.contains("503")), "{letters}");
    // The receiver recovers: a new change arrives at once, the dead letters only when retried.
    failures.store(0, Ordering::SeqCst);
    let next = s.post("/v1/blueprints/service/entities", json!({"identifier": "after"})).await.seq();
    wait_for("the change after the dead letters", || received.lock().expect("lock").len() == 1).await;
    assert_eq!(bodies(&received)[0]["seq"], json!(next));
    let r = s.post("/v1/subscriptions/flaky/dead-letters/retry", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    wait_for("the retried dead letters", || received.lock().expect("lock").len() == 4).await;
    let got: Vec<u64> = bodies(&received).iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(&got[1..], dead.as_slice(), "each once, carrying its own seq");
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get("/v1/subscriptions/flaky/dead-letters").await.body["deadLetters"] != json!([]) {
        assert!(Instant::now() < deadline, "the delivered dead letters leave the list");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Dropping: a bad body is refused; none left to drop is fine.
    let bad = s.call(Method::DELETE, "/v1/subscriptions/flaky/dead-letters", Some(json!({"seqs": "all"}))).await;
    bad.assert_error(422, "invalid_request");
    assert_eq!(s.delete("/v1/subscriptions/flaky/dead-letters").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_receives_the_changes_keyed_in_order() {
    let broker = broker();
    let s = TestServer::start_with(|c| c.kafka_brokers = Some(broker.address.clone())).await;
    blueprints(&s).await;
    let a = s
        .post(
            "/v1/subscriptions",
            json!({"identifier": "to-kafka", "destination": {"type": "KAFKA", "topic": "berth.changes"},
            "filter": {"blueprints": ["service"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let mut expected = Vec::new();
    for i in 0..30 {
        let a = s
            .post(
                "/v1/blueprints/service/entities?upsert=true",
                json!({"identifier": format!("k{}", i % 3), "properties": {"n": i}}),
            )
            .await;
        expected.push((a.seq(), format!("service/k{}", i % 3)));
    }
    let (partitions, records) = kafka_records(&broker.address, "berth.changes", expected.len()).await;
    let records = kafka_partitioned_in_order(&partitions, records);
    assert_eq!(records.len(), expected.len(), "every change, once");
    for ((seq, key), r) in expected.iter().zip(&records) {
        assert_eq!(r.record.key.as_deref(), Some(key.as_bytes()), "keyed by blueprint/entity");
        assert_eq!(
            r.record.headers.get("berth-seq").map(|v| String::from_utf8_lossy(v).into_owned()),
            Some(seq.to_string())
        );
        let body: Value = serde_json::from_slice(r.record.value.as_deref().expect("value")).expect("json");
        assert_eq!(body["seq"], json!(seq), "log order");
    }
}

/// Checks that each record is in the partition Kafka's default partitioner gives its key, in log order
/// within it; the records, by sequence number.
fn kafka_partitioned_in_order(
    partitions: &[i32],
    mut records: Vec<(i32, rskafka::record::RecordAndOffset)>,
) -> Vec<rskafka::record::RecordAndOffset> {
    for (p, r) in &records {
        let key = r.record.key.clone().expect("key");
        let expected_partition = partitions[berth_delivery::kafka::partition_of(&key, partitions.len())];
        assert_eq!(*p, expected_partition, "the default partitioner's partition for {}", String::from_utf8_lossy(&key));
    }
    records.sort_by_key(|(p, r)| (*p, r.offset));
    for w in records.windows(2) {
        if w[0].0 == w[1].0 {
            assert!(kafka_seq(&w[0].1) < kafka_seq(&w[1].1), "log order within a partition");
        }
    }
    let mut records: Vec<rskafka::record::RecordAndOffset> = records.into_iter().map(|(_, r)| r).collect();
    records.sort_by_key(kafka_seq);
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blueprints_changelog_destination_receives_its_entities_changes() {
    let (url, received, _) = receiver(0).await;
    let s = TestServer::start_with(|c| c.allow_destinations = vec!["127.0.0.1".into()]).await;
    let a = s
        .post(
            "/v1/blueprints",
            json!({"identifier": "repo", "title": "Repo", "schema": {"properties": {}},
            "changelogDestination": {"type": "WEBHOOK", "url": url}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let d = s.get("/v1/blueprints/repo/changelog-destination").await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    let secret = d.body["secret"].as_str().expect("secret").to_string();
    // The worker starts within a second; changes after it are delivered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(s.post("/v1/blueprints/repo/entities", json!({"identifier": format!("r{i}")})).await.seq());
    }
    wait_for("the changelog", || received.lock().expect("lock").len() >= expected.len()).await;
    let got = bodies(&received);
    let seqs: Vec<u64> = got.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, expected);
    assert_eq!(got[0]["subscription"], "changelog#repo");
    // A user's subscription cannot take the implicit one's name (its position would be shared).
    let taken = s
        .post(
            "/v1/subscriptions",
            json!({"identifier": "changelog#repo", "destination": {"type": "WEBHOOK", "url": url}}),
        )
        .await;
    assert_eq!(taken.status.as_u16(), 422, "{}", taken.body);
    for (headers, body) in received.lock().expect("lock").iter() {
        assert!(signed_with(headers, body, &secret));
    }
    // A blueprint without one: 404.
    assert_eq!(
        s.post("/v1/blueprints", json!({"identifier": "plain", "title": "Plain", "schema": {"properties": {}}}))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(s.get("/v1/blueprints/plain/changelog-destination").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_a_sequence_number_or_a_time_delivers_again() {
    let (url, received, _) = receiver(0).await;
    let s = TestServer::start_with(|c| c.allow_destinations = vec!["127.0.0.1".into()]).await;
    blueprints(&s).await;
    let a = s.post("/v1/subscriptions", json!({"identifier": "again", "destination": {"type": "WEBHOOK", "url": url}, "filter": {"blueprints": ["service"]}})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let mut written = Vec::new();
    for i in 0..5 {
        let a = s.post("/v1/blueprints/service/entities", json!({"identifier": format!("a{i}")})).await;
        written.push((a.seq(), a.body["entity"]["updatedAt"].as_str().expect("updatedAt").to_string()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for("the first delivery", || received.lock().expect("lock").len() >= 5).await;
    // From the time the third was written (just before it): the third, fourth and fifth again.
    let third = berth_model::Timestamp::parse(&written[2].1).expect("time");
    let before = berth_model::Timestamp::from_millis(third.millis() - 1).to_rfc3339();
    let r = s.post("/v1/subscriptions/again/replay", json!({"fromTime": before})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["position"], json!(written[1].0), "the last change before that time");
    wait_for("the replay by time", || received.lock().expect("lock").len() >= 8).await;
    let seqs: Vec<u64> = bodies(&received).iter().filter_map(|m| m["seq"].as_u64()).collect();
    let w: Vec<u64> = written.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs[5..], w[2..]);
    // From a sequence number: the last one again.
    let r = s.post("/v1/subscriptions/again/replay", json!({"fromSeq": w[3]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    wait_for("the replay by sequence number", || received.lock().expect("lock").len() >= 9).await;
    assert_eq!(bodies(&received)[8]["seq"], json!(w[4]));
    for bad in [
        json!({}),
        json!({"fromSeq": 1_000_000}),
        json!({"fromTime": "yesterday"}),
        json!({"fromSeq": 1, "fromTime": "2026-01-01T00:00:00Z"}),
    ] {
        s.post("/v1/subscriptions/again/replay", bad).await.assert_error(422, "invalid_request");
    }
}

/// The sequence numbers a Redis stream holds, in stream order.
async fn stream_seqs(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<u64> {
    let entries: StreamEntries =
        redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query_async(conn).await.expect("xrange");
    entries
        .iter()
        .filter_map(|(_, fields)| {
            fields.iter().find(|(f, _)| f == "seq").and_then(|(_, v)| String::from_utf8_lossy(v).parse().ok())
        })
        .collect()
}

/// 10,000 changes to every kind of destination at once: each receives every one, once, in log order (a
/// webhook with `concurrency` in log order per entity), every webhook signature valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_changes_reach_every_destination_in_log_order() {
    let (url, received, _) = receiver(0).await;
    let (lanes_url, lanes_received, _) = receiver(0).await;
    let redis_url = berth_testkit::stores::redis_base();
    let nats_url = std::env::var("BERTH_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let tag = berth_testkit::stores::unique("k").replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let (stream, subject) = (format!("berth-10k-{tag}"), format!("berth.test.{tag}"));
    let broker = broker();
    let s = TestServer::start_with(|c| {
        c.allow_destinations = vec!["127.0.0.1".into()];
        c.redis_stream_url = Some(redis_url.clone());
        c.nats_url = Some(nats_url.clone());
        c.kafka_brokers = Some(broker.address.clone());
    })
    .await;
    blueprints(&s).await;
    let mut secrets = HashMap::new();
    for (id, destination) in [
        ("hook", json!({"type": "WEBHOOK", "url": url})),
        ("lanes", json!({"type": "WEBHOOK", "url": lanes_url})),
        ("stream", json!({"type": "REDIS_STREAM", "stream": stream})),
        ("nats", json!({"type": "NATS", "subject": subject})),
        ("kafka", json!({"type": "KAFKA", "topic": "berth.10k"})),
    ] {
        let mut body = json!({"identifier": id, "destination": destination, "filter": {"blueprints": ["service"]}});
        if id == "lanes" {
            body["concurrency"] = json!(8);
        }
        let a = s.post("/v1/subscriptions", body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        if let Some(secret) = a.body["secret"].as_str() {
            secrets.insert(id, secret.to_string());
        }
    }
    // 10,000 writes, 100 at a time, over 100 services (100 versions each).
    let mut expected = Vec::new();
    let mut entity_of = HashMap::new();
    for round in 0..100 {
        let entities: Vec<Value> =
            (0..100).map(|i| json!({"identifier": format!("svc-{i}"), "properties": {"n": round}})).collect();
        let a = s.post("/v1/blueprints/service/entities/bulk", json!({"entities": entities})).await;
        assert!(a.status.is_success(), "{}", a.body);
        let last = a.seq();
        for (i, seq) in (last + 1 - 100..=last).enumerate() {
            expected.push(seq);
            entity_of.insert(seq, format!("svc-{i}"));
        }
    }
    let n = expected.len();
    let redis = redis::Client::open(redis_url.as_str()).expect("redis");
    let mut conn = redis.get_multiplexed_async_connection().await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let hook = received.lock().expect("lock").len();
        let lanes = lanes_received.lock().expect("lock").len();
        let in_stream: usize = redis::cmd("XLEN").arg(&stream).query_async(&mut conn).await.expect("xlen");
        if hook >= n && lanes >= n && in_stream >= n {
            break;
        }
        assert!(Instant::now() < deadline, "after 180 s: webhook {hook}, lanes {lanes}, Redis {in_stream} of {n}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let hook: Vec<u64> = bodies(&received).iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(hook, expected, "webhook: every change once, in log order");
    assert!(received.lock().expect("lock").iter().all(|(h, b)| signed_with(h, b, &secrets["hook"])), "signatures");
    // With lanes: every change once, each entity's in log order.
    let lanes: Vec<u64> = bodies(&lanes_received).iter().filter_map(|m| m["seq"].as_u64()).collect();
    let mut sorted = lanes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "webhook with lanes: every change once");
    let mut per_entity: HashMap<&String, u64> = HashMap::new();
    for seq in &lanes {
        let last = per_entity.insert(&entity_of[seq], *seq);
        assert!(last.is_none_or(|l| l < *seq), "webhook with lanes: {} out of order", entity_of[seq]);
    }
    assert!(lanes_received.lock().expect("lock").iter().all(|(h, b)| signed_with(h, b, &secrets["lanes"])));
    assert_eq!(stream_seqs(&mut conn, &stream).await, expected, "Redis: every change once, in log order");
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.expect("del");
    let nats: Vec<u64> =
        nats_messages(&nats_url, &subject, n).await.iter().filter_map(|(_, m)| m["seq"].as_u64()).collect();
    assert_eq!(nats, expected, "NATS: every change once, in log order");
    berth_testkit::brokers::nats_delete(&nats_url, &subject).await;
    let (partitions, records) = kafka_records(&broker.address, "berth.10k", n).await;
    let kafka: Vec<u64> = kafka_partitioned_in_order(&partitions, records).iter().map(kafka_seq).collect();
    assert_eq!(kafka, expected, "Kafka: every change once");
}
