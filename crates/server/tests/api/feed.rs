//! The public event feed, `GET /v1/events`: every change in order, in its public form, paged by `next`,
//! waiting for new changes when asked, Admins only, and no secret in it.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;

fn seqs(body: &Value) -> Vec<u64> {
    body["events"].as_array().expect("events").iter().map(|e| e["seq"].as_u64().expect("seq")).collect()
}

#[tokio::test]
async fn the_feed_serves_every_change_in_order_without_secrets() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let app = s.post("/v1/apps", json!({"name": "consumer"})).await;
    let secret = app.body["app"]["secret"].as_str().expect("secret").to_string();
    let invite = s.post("/v1/users/invite", json!({"invitee": {"email": "ann@example.com"}})).await;
    let code = invite.body["invitation"]["code"].as_str().expect("code").to_string();
    s.post("/v1/blueprints/service/entities", json!({"identifier": "svc", "properties": {"replicas": 2}})).await;
    s.post(
        "/v1/blueprints/service/entities?upsert=true&run_id=r-1",
        json!({"identifier": "svc", "properties": {"replicas": 3}}),
    )
    .await;
    s.delete("/v1/blueprints/service/entities/svc").await;

    // Paged by `next`, one event at a time: every sequence number once, in order.
    let head = s.get("/healthz").await.body["seq"].as_u64().expect("seq");
    let mut walked = Vec::new();
    let mut after = 0;
    loop {
        let page = s.get(&format!("/v1/events?after={after}&limit=2")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let got = seqs(&page.body);
        if got.is_empty() {
            assert_eq!(page.body["next"], json!(after), "an empty page does not move");
            break;
        }
        assert!(got.len() <= 2);
        walked.extend(got);
        after = page.body["next"].as_u64().expect("next");
        assert_eq!(page.body["head"], json!(head));
    }
    assert_eq!(walked, (1..=head).collect::<Vec<_>>());

    // The public form: versioned, the diff of an update, the run, and no secret anywhere.
    let all = s.get("/v1/events?limit=1000").await;
    let text = all.body.to_string();
    for secret in [secret.as_str(), code.as_str(), "secretSha256", "passwordHash", "inviteSha256", "sessionEpoch"] {
        assert!(!text.contains(secret), "{secret} leaked into the feed");
    }
    let events = all.body["events"].as_array().expect("events");
    assert!(events.iter().all(|e| e["v"] == json!(1)));
    let update = events.iter().find(|e| e["runId"] == json!("r-1")).expect("the update");
    assert_eq!((update["resourceType"].as_str(), update["action"].as_str()), (Some("entity"), Some("UPDATE")));
    assert_eq!(update["diff"]["before"]["properties"]["replicas"], json!(2));
    assert_eq!(update["diff"]["after"]["properties"]["replicas"], json!(3));
    assert_eq!((update["blueprint"].as_str(), update["identifier"].as_str()), (Some("service"), Some("svc")));
    let last = events.last().expect("last");
    assert_eq!((last["action"].as_str(), last["diff"]["after"].clone()), (Some("DELETE"), Value::Null));

    // Only Admins read it; bad arguments are 400s.
    let member = s.token_for(app.body["app"]["clientId"].as_str().expect("id"), &secret).await;
    let a = s.raw(Method::GET, "/v1/events", None, Some(&member)).await;
    a.assert_error(403, "forbidden");
    for bad in ["after=-1", "after=x", "limit=0", "limit=5000", "wait_ms=30001", "wait_ms=soon"] {
        s.get(&format!("/v1/events?{bad}")).await.assert_error(400, "bad_request");
    }
}

#[tokio::test]
async fn a_waiting_read_wakes_on_the_next_change() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let head = s.get("/healthz").await.body["seq"].as_u64().expect("seq");
    // Nothing new: a read without wait answers at once, empty.
    let page = s.get(&format!("/v1/events?after={head}")).await;
    assert_eq!(seqs(&page.body), Vec::<u64>::new());
    let started = Instant::now();
    let waiting = format!("/v1/events?after={head}&wait_ms=20000");
    let (page, _) = tokio::join!(s.get(&waiting), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.post("/v1/blueprints/team/entities", json!({"identifier": "core"})).await
    });
    assert_eq!(seqs(&page.body), vec![head + 1], "{}", page.body);
    assert!(started.elapsed() < Duration::from_secs(10), "woken by the write, not by the wait running out");
    assert_eq!(page.body["events"][0]["identifier"], json!("core"));
    // A wait with nothing to wake it ends empty after the wait.
    let started = Instant::now();
    let page = s.get(&format!("/v1/events?after={}&wait_ms=300", head + 1)).await;
    assert_eq!(seqs(&page.body), Vec::<u64>::new());
    assert!(started.elapsed() >= Duration::from_millis(250));
}
