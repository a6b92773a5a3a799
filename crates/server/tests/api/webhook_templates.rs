//! The ready-made webhooks, installed and fed their own sample payloads (written from the providers'
//! documentation) as the providers send them: GitHub signed with HMAC-SHA256 (`x-hub-signature-256`),
//! GitLab with its plain token, PagerDuty with `v1=` HMAC; valid, wrong and missing signatures; duplicates
//! by the provider's delivery id; deployment_status and GitLab deployments into the deployments model (the
//! matrix shows the version); PagerDuty incidents opened then resolved; the generic one over an array of
//! items and a delete. An install into a catalog whose blueprints lack what the mappings write is refused
//! and writes nothing.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::TestServer;

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn install(s: &TestServer, template: &str, body: Value) -> Value {
    let a = s.post(&format!("/v1/webhook-templates/{template}/install"), body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    a.body
}

fn samples(template: &str) -> Vec<Value> {
    berth_model::webhook_templates::get(template).expect("template")["samples"].as_array().cloned().unwrap_or_default()
}

/// How a provider signs: the header and its value for a body.
enum Signing<'a> {
    Hmac { header: &'a str, prefix: &'a str, secret: &'a str },
    Token { header: &'a str, secret: &'a str },
}

/// Sends a sample as its provider would; the answer's status and body.
async fn send(s: &TestServer, url: &str, sample: &Value, signing: &Signing<'_>) -> (StatusCode, Value) {
    let body = serde_json::to_vec(&sample["body"]).expect("json");
    let mut req = s.client.post(url).header("content-type", "application/json");
    for (k, v) in sample["headers"].as_object().into_iter().flatten() {
        req = req.header(k.as_str(), v.as_str().unwrap_or_default());
    }
    req = match signing {
        Signing::Hmac { header, prefix, secret } => req.header(*header, format!("{prefix}{}", hmac_hex(secret, &body))),
        Signing::Token { header, secret } => req.header(*header, *secret),
    };
    let r = req.body(body).send().await.expect("send");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until no request of the webhook waits; its events, newest first.
async fn processed(s: &TestServer, webhook: &str) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let a = s.get(&format!("/v1/webhooks/{webhook}/events?limit=1000")).await;
        let events = a.body["events"].as_array().cloned().unwrap_or_default();
        if !events.is_empty() && events.iter().all(|e| e["status"] == "processed" || e["status"] == "failed") {
            for e in &events {
                assert_eq!(e["status"], "processed", "every sample maps cleanly: {e}");
            }
            return events;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "requests still pending: {}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn entity(s: &TestServer, blueprint: &str, id: &str) -> Value {
    let id = id.replace('/', "%2F");
    let a = s.get(&format!("/v1/blueprints/{blueprint}/entities/{id}")).await;
    assert_eq!(a.status, StatusCode::OK, "{blueprint}/{id}: {}", a.body);
    a.body["entity"].clone()
}

#[tokio::test]
async fn github_samples_land_as_repositories_pull_requests_runs_and_deployments() {
    let s = TestServer::start().await;
    let listed = s.get("/v1/webhook-templates").await;
    let names: Vec<&str> =
        listed.body["templates"].as_array().into_iter().flatten().filter_map(|t| t["identifier"].as_str()).collect();
    assert_eq!(names, ["github", "gitlab", "pagerduty", "generic"]);
    let one = s.get("/v1/webhook-templates/github").await;
    assert_eq!(one.body["template"]["samples"].as_array().map(Vec::len), Some(4));
    s.get("/v1/webhook-templates/nope").await.assert_error(404, "not_found");
    s.post("/v1/webhook-templates/github/install", json!({"secret": ""})).await.assert_error(422, "invalid_request");
    s.post("/v1/webhook-templates/github/install", json!({})).await.assert_error(422, "invalid_request");

    let installed = install(&s, "github", json!({"secret": "gh-secret"})).await;
    let created: Vec<&str> =
        installed["createdBlueprints"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for b in ["service", "environment", "deployment", "githubRepository", "githubPullRequest", "githubWorkflowRun"] {
        assert!(created.contains(&b), "{b} created: {created:?}");
    }
    let url = installed["integration"]["url"].as_str().expect("url").to_string();
    s.post("/v1/webhook-templates/github/install", json!({"secret": "x"})).await.assert_error(409, "conflict");

    let signing = Signing::Hmac { header: "x-hub-signature-256", prefix: "sha256=", secret: "gh-secret" };
    let all = samples("github");
    // Wrong and missing signatures: 401, nothing stored.
    let wrong = Signing::Hmac { header: "x-hub-signature-256", prefix: "sha256=", secret: "not-it" };
    assert_eq!(send(&s, &url, &all[0], &wrong).await.0, StatusCode::UNAUTHORIZED);
    let unsigned = Signing::Token { header: "x-nothing", secret: "" };
    assert_eq!(send(&s, &url, &all[0], &unsigned).await.0, StatusCode::UNAUTHORIZED);
    for sample in &all {
        let (status, answer) = send(&s, &url, sample, &signing).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{}: {answer}", sample["name"]);
    }
    // GitHub redelivers with the same delivery id: stored once.
    let (status, answer) = send(&s, &url, &all[0], &signing).await;
    assert_eq!((status, answer["duplicate"].clone()), (StatusCode::ACCEPTED, json!(true)));
    let events = processed(&s, "github").await;
    assert_eq!(events.len(), 4, "four deliveries, one duplicate left out");

    let repo = entity(&s, "githubRepository", "payments").await;
    assert_eq!(repo["title"], "acme/payments");
    assert_eq!(repo["properties"]["defaultBranch"], "main");
    assert_eq!(repo["properties"]["lastCommit"], "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    let pr = entity(&s, "githubPullRequest", "payments-42").await;
    assert_eq!(pr["properties"]["state"], "merged");
    assert_eq!(pr["properties"]["author"], "octocat");
    assert_eq!(pr["relations"]["repository"], "payments");
    let run = entity(&s, "githubWorkflowRun", "payments-30433642").await;
    assert_eq!(run["title"], "CI #562");
    assert_eq!(run["properties"]["conclusion"], "success");
    let deploy = entity(&s, "deployment", "payments-production-145988746").await;
    assert_eq!(deploy["properties"]["status"], "success");
    assert_eq!(deploy["properties"]["version"], "0d1a26e");
    assert_eq!(deploy["relations"]["environment"], "production");
    let env = entity(&s, "environment", "production").await;
    assert_eq!(env["properties"]["production"], true);
    // The deployments model answers from it: what runs in production.
    let matrix = s.get("/v1/deployments/matrix").await;
    let services = matrix.body["services"].as_array().cloned().unwrap_or_default();
    let payments = services.iter().find(|r| r["service"] == "payments").expect("payments in the matrix");
    assert_eq!(payments["environments"]["production"]["version"], "0d1a26e", "{}", matrix.body);

    // The audit log by webhook, and by one request: what that request wrote, and only that.
    let by_webhook = s.get("/v1/audit-log?webhookId=github&limit=1000").await;
    let records = by_webhook.body["audits"].as_array().cloned().unwrap_or_default();
    let written: Vec<&str> = records
        .iter()
        .filter(|r| r["resourceType"] == "entity")
        .filter_map(|r| r["context"]["entityIdentifier"].as_str())
        .collect();
    for id in ["payments", "payments-42", "payments-30433642", "payments-production-145988746"] {
        assert!(written.contains(&id), "{id} in the webhook's records: {written:?}");
    }
    assert!(records.iter().any(|r| r["resourceType"] == "webhook_event"), "its requests too");
    let pr_event = events
        .iter()
        .find(|e| e["requestId"] == "a1b2c3d4-0000-4000-8000-000000000042")
        .and_then(|e| e["id"].as_str())
        .expect("the pull request's event")
        .to_string();
    let encoded: String = pr_event.replace('#', "%23");
    let by_event = s.get(&format!("/v1/audit-log?webhookEventId={encoded}&limit=1000")).await;
    assert_eq!(by_event.status, StatusCode::OK, "{}", by_event.body);
    let mut ids: Vec<String> = by_event.body["audits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["resourceType"] == "entity")
        .filter_map(|r| r["context"]["entityIdentifier"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, ["payments", "payments-42"], "the repository it upserted and the pull request, nothing else");
    s.get("/v1/audit-log?webhookEventId=github%23nope").await.assert_error(404, "not_found");
    let member = berth_testkit::server::app_token(&s, "dev", &["Member"], &[]).await;
    let r = s.raw(reqwest::Method::GET, "/v1/audit-log?webhookId=github&identifier=x", None, Some(&member)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn gitlab_and_pagerduty_samples_land_in_the_deployments_model() {
    let s = TestServer::start().await;
    let gitlab = install(&s, "gitlab", json!({"secret": "gl-token"})).await;
    let url = gitlab["integration"]["url"].as_str().expect("url").to_string();
    let token = Signing::Token { header: "x-gitlab-token", secret: "gl-token" };
    let wrong = Signing::Token { header: "x-gitlab-token", secret: "nope" };
    let all = samples("gitlab");
    assert_eq!(send(&s, &url, &all[0], &wrong).await.0, StatusCode::UNAUTHORIZED);
    for sample in &all {
        assert_eq!(send(&s, &url, sample, &token).await.0, StatusCode::ACCEPTED, "{}", sample["name"]);
    }
    processed(&s, "gitlab").await;
    let project = entity(&s, "gitlabProject", "acme/billing").await;
    assert_eq!(project["properties"]["lastPusher"], "jsmith");
    let mr = entity(&s, "gitlabMergeRequest", "acme/billing-mr-7").await;
    assert_eq!(mr["properties"]["state"], "merged");
    let deploy = entity(&s, "deployment", "acme/billing-production-15").await;
    assert_eq!(
        (deploy["properties"]["status"].clone(), deploy["properties"]["version"].clone()),
        (json!("success"), json!("da156088"))
    );

    // PagerDuty, into the same model: an incident opened, then resolved.
    let pd = install(&s, "pagerduty", json!({"identifier": "pd", "secret": "pd-secret"})).await;
    assert!(pd["createdBlueprints"].as_array().is_some_and(Vec::is_empty), "the model exists already: {pd}");
    let url = pd["integration"]["url"].as_str().expect("url").to_string();
    let signing = Signing::Hmac { header: "x-pagerduty-signature", prefix: "v1=", secret: "pd-secret" };
    let all = samples("pagerduty");
    assert_eq!(send(&s, &url, &all[0], &signing).await.0, StatusCode::ACCEPTED);
    processed(&s, "pd").await;
    let incident = entity(&s, "incident", "pagerduty-PGR0VU2").await;
    assert_eq!(incident["properties"]["severity"], "critical");
    assert_eq!(incident["relations"]["service"], "payments-api");
    assert!(incident["properties"].get("resolvedAt").is_none_or(Value::is_null), "{incident}");
    assert_eq!(send(&s, &url, &all[1], &signing).await.0, StatusCode::ACCEPTED);
    processed(&s, "pd").await;
    let incident = entity(&s, "incident", "pagerduty-PGR0VU2").await;
    assert_eq!(incident["properties"]["resolvedAt"], "2026-12-01T16:42:00.000Z");
    assert_eq!(incident["properties"]["openedAt"], "2026-12-01T16:00:00Z", "merged into the opened incident");
}

#[tokio::test]
async fn the_generic_webhook_maps_arrays_of_items_and_deletes() {
    let s = TestServer::start().await;
    let a = s
        .post(
            "/v1/blueprints",
            json!({"identifier": "component", "title": "Component",
            "schema": {"properties": {"size": {"type": "number"}, "tier": {"type": "string"}}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    s.post("/v1/webhook-templates/generic/install", json!({"secret": "g"})).await.assert_error(422, "invalid_request");
    s.post("/v1/webhook-templates/generic/install", json!({"secret": "g", "blueprint": "nope"}))
        .await
        .assert_error(404, "not_found");
    let installed =
        install(&s, "generic", json!({"identifier": "components", "secret": "g", "blueprint": "component"})).await;
    let url = installed["integration"]["url"].as_str().expect("url").to_string();
    let signing = Signing::Hmac { header: "x-berth-signature", prefix: "sha256=", secret: "g" };
    let upsert = json!({"name": "upsert", "headers": {"x-request-id": "r1"}, "body": {"entities": [
        {"identifier": "ledger", "title": "Ledger", "properties": {"size": 3, "tier": "gold"}},
        {"identifier": "invoicing", "properties": {"size": 1}}]}});
    assert_eq!(send(&s, &url, &upsert, &signing).await.0, StatusCode::ACCEPTED);
    let single = json!({"name": "one", "headers": {"x-request-id": "r2"},
        "body": {"identifier": "search", "title": "Search", "properties": {"size": 8}}});
    assert_eq!(send(&s, &url, &single, &signing).await.0, StatusCode::ACCEPTED);
    processed(&s, "components").await;
    assert_eq!(entity(&s, "component", "ledger").await["properties"]["tier"], "gold");
    assert_eq!(entity(&s, "component", "search").await["properties"]["size"], 8);
    let delete = json!({"name": "delete", "headers": {"x-request-id": "r3"},
        "body": {"action": "delete", "entities": [{"identifier": "invoicing"}, {"identifier": "search"}]}});
    assert_eq!(send(&s, &url, &delete, &signing).await.0, StatusCode::ACCEPTED);
    processed(&s, "components").await;
    let left = s.get("/v1/blueprints/component/entities").await;
    let ids: Vec<&str> =
        left.body["entities"].as_array().into_iter().flatten().filter_map(|e| e["identifier"].as_str()).collect();
    assert_eq!(ids, ["ledger"]);
}

#[tokio::test]
async fn an_install_into_blueprints_without_what_it_writes_is_refused_whole() {
    let s = TestServer::start().await;
    // A `deployment` blueprint of the catalog's own, without the model's commit or environment.
    s.seed_blueprints().await;
    let before = s.get("/v1/blueprints").await.body["blueprints"].as_array().map(Vec::len);
    let a = s.post("/v1/webhook-templates/github/install", json!({"secret": "x"})).await;
    a.assert_error(422, "invalid_request");
    let message = a.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`deployment.commitSha`") && message.contains("relation `deployment.environment`"),
        "{message}"
    );
    assert_eq!(
        s.get("/v1/blueprints").await.body["blueprints"].as_array().map(Vec::len),
        before,
        "no blueprint created"
    );
    s.get("/v1/webhooks/github").await.assert_error(404, "not_found");
    // A Member may not install.
    let member = berth_testkit::server::app_token(&s, "dev", &["Member"], &[]).await;
    let r = s
        .raw(
            reqwest::Method::POST,
            "/v1/webhook-templates/gitlab/install",
            Some(serde_json::to_vec(&json!({"secret": "x"})).expect("json")),
            Some(&member),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
