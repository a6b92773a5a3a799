//! Inbound webhooks over HTTP: the API (Admins; the ingest URL; the secret sealed), GitHub-style pushes signed
//! with HMAC-SHA256 (valid, invalid, missing), a duplicate delivery stored once, `itemsToParse` over an array,
//! a delete mapping, a mapping error that keeps the request and is processed again once fixed, and a
//! disabled webhook dropping requests.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use berth_testkit::server::{TestServer, app_token};
use reqwest::Method;
use serde_json::{Value, json};

use crate::permissions::call;

fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Sends `body` to an ingest URL with these headers.
async fn deliver(s: &TestServer, url: &str, body: &Value, headers: &[(&str, String)]) -> (StatusCode, Value) {
    let bytes = serde_json::to_vec(body).expect("json");
    let mut req = s.client.post(url).header("content-type", "application/json").body(bytes);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.expect("ingest");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn catalog() -> TestServer {
    let s = TestServer::start().await;
    for bp in [
        json!({"identifier": "repo", "title": "Repository", "schema": {"properties": {"branch": {"type": "string"}}}}),
        json!({"identifier": "commit", "title": "Commit", "schema": {"properties": {"author": {"type": "string"}}},
            "relations": {"repo": {"target": "repo", "many": false, "required": false}}}),
    ] {
        let a = s.post("/v1/blueprints", bp).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    s
}

fn github() -> Value {
    json!({"identifier": "github", "title": "GitHub",
    "security": {"secret": "whsec-SECRET-5", "signatureHeaderName": "X-Hub-Signature-256",
        "signatureAlgorithm": "sha256", "signaturePrefix": "sha256=",
        "requestIdentifierPath": ".headers.\"x-github-delivery\""},
    "mappings": [
        {"blueprint": "repo", "filter": ".headers.\"x-github-event\" == \"push\"",
         "entity": {"identifier": ".body.repository.name", "title": ".body.repository.full_name",
             "properties": {"branch": ".body.ref | sub(\"refs/heads/\"; \"\")"}}},
        {"blueprint": "commit", "filter": ".headers.\"x-github-event\" == \"push\"", "itemsToParse": ".body.commits",
         "entity": {"identifier": ".item.id", "title": ".item.message",
             "properties": {"author": ".item.author.name"}, "relations": {"repo": ".body.repository.name"}}},
        {"blueprint": "repo", "operation": "delete", "filter": ".headers.\"x-github-event\" == \"repository\" and .body.action == \"deleted\"",
         "entity": {"identifier": ".body.repository.name"}}
    ]})
}

fn push() -> Value {
    json!({"ref": "refs/heads/main", "repository": {"name": "api", "full_name": "acme/api"},
        "commits": [{"id": "c1", "message": "fix the build", "author": {"name": "ada"}},
                    {"id": "c2", "message": "add a test", "author": {"name": "linus"}}]})
}

#[tokio::test]
async fn a_signed_push_is_mapped_to_entities_once_and_bad_signatures_write_nothing() {
    let s = catalog().await;
    let a = s.post("/v1/webhooks", github()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let w = a.body["integration"].clone();
    let url = w["url"].as_str().expect("url").to_string();
    assert!(url.contains("/ingest/"), "{url}");
    assert!(w["security"]["secret"]["sealed"].is_string(), "sealed: {w}");
    assert!(!a.body.to_string().contains("whsec-SECRET-5"));
    // Members see what webhooks exist, not how they are secured; they cannot change them.
    let member = app_token(&s, "dev", &["Member"], &[]).await;
    let (status, meta) = call(&s, &member, Method::GET, "/v1/webhooks/metadata", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["integrations"][0]["title"], "GitHub");
    assert!(meta["integrations"][0].get("security").is_none());
    let (status, _) = call(&s, &member, Method::GET, "/v1/webhooks/github", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Bad webhooks say why.
    let mut bad = github();
    bad["identifier"] = json!("bad");
    bad["mappings"][0]["blueprint"] = json!("nothing");
    s.post("/v1/webhooks", bad.clone()).await.assert_error(422, "invalid_request");
    bad["mappings"][0]["blueprint"] = json!("repo");
    bad["mappings"][0]["entity"]["identifier"] = json!(".body | range(10)");
    s.post("/v1/webhooks", bad).await.assert_error(422, "invalid_request");

    let body = push();
    let bytes = serde_json::to_vec(&body).expect("json");
    let headers = |sig: String, delivery: &str| {
        vec![
            ("X-Hub-Signature-256", sig),
            ("X-GitHub-Event", "push".to_string()),
            ("X-GitHub-Delivery", delivery.to_string()),
        ]
    };
    // Wrong and missing signatures: 401, nothing stored.
    let (status, _) = deliver(&s, &url, &body, &headers(signature("other", &bytes), "d-0")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = deliver(&s, &url, &body, &[("X-GitHub-Event", "push".into())]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = deliver(&s, &format!("{url}x"), &body, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(s.get("/v1/webhooks/github/events").await.body["events"], json!([]));
    // A signed push: 202, then the repository and both commits.
    let (status, answer) = deliver(&s, &url, &body, &headers(signature("whsec-SECRET-5", &bytes), "d-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let c2 = eventually("the commits", async || {
        let a = s.get("/v1/blueprints/commit/entities/c2").await;
        (a.status == StatusCode::OK).then_some(a.body)
    })
    .await;
    assert_eq!(c2["entity"]["properties"]["author"], "linus");
    assert_eq!(c2["entity"]["relations"]["repo"], "api");
    let repo = s.get("/v1/blueprints/repo/entities/api").await.body;
    assert_eq!(repo["entity"]["title"], "acme/api");
    assert_eq!(repo["entity"]["properties"]["branch"], "main");
    // The same delivery again: stored once.
    let (status, again) = deliver(&s, &url, &body, &headers(signature("whsec-SECRET-5", &bytes), "d-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["duplicate"], true, "{again}");
    let events = eventually("the event processed", async || {
        let e = s.get("/v1/webhooks/github/events").await.body;
        (e["events"][0]["status"] == "processed").then_some(e)
    })
    .await;
    assert_eq!(events["events"].as_array().map(Vec::len), Some(1), "{events}");
    let results = &events["events"][0]["results"];
    assert_eq!(results[0]["upserted"], json!(["api"]));
    assert_eq!(results[1]["upserted"], json!(["c1", "c2"]));
    assert_eq!(results[2]["matched"], false);
    assert!(events["events"][0].get("request").is_none(), "a processed request is not kept");
    let id = events["events"][0]["id"].as_str().expect("id").replace('#', "%23");
    s.post(&format!("/v1/webhooks/github/events/{id}/retry"), json!({})).await.assert_error(422, "invalid_request");
    let kept = events.to_string();
    assert!(!kept.contains("x-hub-signature-256") && !kept.contains("whsec-SECRET-5"), "{kept}");
    // The writes are the webhook's in the audit log.
    let audit = s.get("/v1/audit-log?identifier=c1").await.body;
    assert!(audit.to_string().contains("webhook:github"), "{audit}");

    // A delete mapping.
    let deleted = json!({"action": "deleted", "repository": {"name": "api"}});
    let bytes = serde_json::to_vec(&deleted).expect("json");
    let h = vec![
        ("X-Hub-Signature-256", signature("whsec-SECRET-5", &bytes)),
        ("X-GitHub-Event", "repository".to_string()),
        ("X-GitHub-Delivery", "d-2".to_string()),
    ];
    let (status, _) = deliver(&s, &url, &deleted, &h).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("the repository deleted", async || {
        (s.get("/v1/blueprints/repo/entities/api").await.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_mapping_error_keeps_the_request_to_process_again_and_disabled_webhooks_drop() {
    let s = catalog().await;
    let hook = json!({"identifier": "plain", "title": "Plain",
        "mappings": [{"blueprint": "repo", "itemsToParse": ".body.repos",
            "entity": {"identifier": ".item.slug", "properties": {"branch": ".item.branch"}}}]});
    let a = s.post("/v1/webhooks", hook).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let url = a.body["integration"]["url"].as_str().expect("url").to_string();
    let body = json!({"repos": [{"name": "a", "branch": "main"}, {"name": "b", "branch": "dev"}]});
    let (status, _) = deliver(&s, &url, &body, &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let event = eventually("the failed event", async || {
        let e = s.get("/v1/webhooks/plain/events?status=failed").await.body;
        e["events"].as_array().and_then(|l| l.first().cloned())
    })
    .await;
    let errors = event["results"][0]["errors"].to_string();
    assert!(errors.contains("item 0") && errors.contains("entity.identifier"), "the error names where: {errors}");
    assert_eq!(event["request"]["body"], body, "the request is kept");
    // Fix the mapping, process it again.
    let a = s
        .patch(
            "/v1/webhooks/plain",
            json!({"mappings": [{"blueprint": "repo", "itemsToParse": ".body.repos",
                "entity": {"identifier": ".item.name", "properties": {"branch": ".item.branch"}}}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["integration"]["url"], url.as_str(), "the key stays");
    let id = event["id"].as_str().expect("id").to_string();
    let a = s.post(&format!("/v1/webhooks/plain/events/{}/retry", id.replace('#', "%23")), json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    eventually("the reprocessed entities", async || {
        (s.get("/v1/blueprints/repo/entities/b").await.status == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(s.get("/v1/blueprints/repo/entities/a").await.body["entity"]["properties"]["branch"], "main");
    // Not JSON: 400. Disabled: dropped.
    let r = s.client.post(&url).body("not json").send().await.expect("ingest");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let a = s.patch("/v1/webhooks/plain", json!({"enabled": false})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let (status, answer) = deliver(&s, &url, &json!({"repos": [{"name": "c"}]}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["dropped"], true);
    // Too large: 413.
    let big = json!({"x": "y".repeat(600 * 1024)});
    let (status, _) = deliver(&s, &url, &big, &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.delete("/v1/webhooks/plain").await.status, StatusCode::OK);
    let (status, _) = deliver(&s, &url, &json!({}), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a deleted webhook's URL takes nothing");
}
