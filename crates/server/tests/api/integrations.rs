//! Ocean integrations over HTTP, beyond what the real framework exercises (`crates/cli/tests/ocean.rs`):
//! Admins only (metadata and provision-enabled for anyone signed in), 404 `not_found` for a missing one,
//! bad bodies refused with the field named, reports bounded and deleted with their integration, the config
//! change asking for a resync unless `x-skip-resync`, and the reconciliation read: by `$datasource` prefix
//! and suffix, before a time, paged, and through the caller's read scope.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;
use crate::permissions::{app_token, call, read_own_team_only, setup};

const OCEAN_UA: &str = "port-ocean/mytest/0.1.0/ocean1/exporter";

async fn create(s: &TestServer) {
    let body = json!({"installationId": "ocean1", "installationAppType": "mytest", "version": "0.1.0",
        "changelogDestination": {}, "config": {"entityDeletionThreshold": 0.9, "resources": [{"kind": "item"}]},
        "actionsProcessingEnabled": false, "incrementalSyncEnabled": false, "createPortResourcesOrigin": "Default"});
    let a = s.post("/v1/integration?integration_modes=create_resources", body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
}

/// Writes a service as Ocean would (its User-Agent becomes `$datasource`).
async fn write_as(s: &TestServer, user_agent: &str, id: &str, team: &str) {
    let r = s
        .client
        .post(format!("{}/v1/blueprints/service/entities?upsert=true", s.base))
        .bearer_auth(&s.token)
        .header("user-agent", user_agent)
        .json(&json!({"identifier": id, "team": [team]}))
        .send()
        .await
        .expect("write");
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
}

fn ids(v: &Value) -> Vec<String> {
    v["entities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["identifier"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn the_integration_object_is_what_ocean_reads_and_writes() {
    let s = setup().await;
    s.get("/v1/integration/ocean1").await.assert_error(404, "not_found");
    create(&s).await;
    s.post("/v1/integration", json!({"installationId": "ocean1"})).await.assert_error(409, "conflict");
    let got = s.get("/v1/integration/ocean1").await;
    let i = &got.body["integration"];
    assert_eq!(i["identifier"], "ocean1");
    assert_eq!(i["installationType"], "OnPrem");
    assert!(
        i["logAttributes"]["ingestUrl"].as_str().is_some_and(|u| u.ends_with("/v1/integration/ocean1/logs")),
        "{i}"
    );
    assert!(i["metricAttributes"]["ingestUrl"].as_str().is_some_and(|u| u.ends_with("/v1/integration/ocean1/metrics")));

    // A resync's start and end: the end keeps the start; the server stamps `updatedAt`.
    let a = s
        .patch(
            "/v1/integration/ocean1/resync-state",
            json!({"status": "running", "lastResyncStart": "2026-12-05T08:00:00Z"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = s
        .patch(
            "/v1/integration/ocean1/resync-state",
            json!({"status": "completed", "lastResyncEnd": "2026-12-05T08:01:00Z"}),
        )
        .await;
    let state = &a.body["integration"]["resyncState"];
    assert_eq!(state["status"], "completed");
    assert_eq!(state["lastResyncStart"], "2026-12-05T08:00:00Z");
    assert!(state["updatedAt"].is_string());
    s.patch("/v1/integration/ocean1/resync-state", json!({"status": "finished"}))
        .await
        .assert_error(422, "invalid_request");

    // A config change asks for a resync, unless told not to.
    assert_eq!(s.get("/v1/integration/ocean1/resync-request").await.body["request"], json!({}));
    let skipped = s
        .raw(
            Method::PATCH,
            "/v1/integration/ocean1/config",
            Some(serde_json::to_vec(&json!({"config": {"resources": []}})).expect("json")),
            Some(&s.token),
        )
        .await;
    assert_eq!(skipped.status, StatusCode::OK);
    let r = s
        .client
        .patch(format!("{}/v1/integration/ocean1/config", s.base))
        .bearer_auth(&s.token)
        .header("x-skip-resync", "true")
        .json(&json!({"config": {"resources": [{"kind": "item"}]}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::OK);
    let first = s.get("/v1/integration/ocean1/resync-request").await.body["request"]["updatedAt"].clone();
    assert!(first.is_string(), "the unskipped change asked for a resync");
    let a = s.post("/v1/integration/ocean1/resync-request", json!({})).await;
    assert_eq!(a.status, StatusCode::OK);
    let second = s.get("/v1/integration/ocean1/resync-request").await.body["request"]["updatedAt"].clone();
    assert!(second.as_str() >= first.as_str(), "{first} then {second}");
    s.patch("/v1/integration/ocean1/config", json!({"config": []})).await.assert_error(422, "invalid_request");
    s.patch("/v1/integration/ocean1", json!({"config": {"entityDeletionThreshold": 2}}))
        .await
        .assert_error(422, "invalid_request");
    s.patch("/v1/integration/ocean1", json!({"identifier": "other"})).await.assert_error(422, "invalid_request");
    s.patch("/v1/integration/nope", json!({"version": "1"})).await.assert_error(404, "not_found");
    // Fields Berth does not read are kept (a newer Ocean's).
    let a = s.patch("/v1/integration/ocean1", json!({"spec": {"x": 1}, "version": "0.2.0"})).await;
    assert_eq!(a.body["integration"]["spec"], json!({"x": 1}));
    assert_eq!(a.body["integration"]["version"], "0.2.0");
    assert_eq!(a.body["integration"]["config"]["resources"][0]["kind"], "item", "a patch keeps the other fields");

    let listed = s.get("/v1/integration").await;
    assert_eq!(listed.body["integrations"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn reports_are_kept_bounded_and_go_with_the_integration() {
    let s = setup().await;
    create(&s).await;
    for i in 0..(berth_model::integration::MAX_LOG_BATCHES + 3) {
        let a = s
            .post("/v1/integration/ocean1/logs", json!({"logs": [{"message": format!("batch {i}"), "level": "INFO"}]}))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let logs = s.get("/v1/integration/ocean1/logs?limit=1000").await;
    let lines = logs.body["data"]["logs"].as_array().cloned().unwrap_or_default();
    assert_eq!(lines.len(), berth_model::integration::MAX_LOG_BATCHES, "the oldest batches dropped");
    assert_eq!(lines[0]["message"], format!("batch {}", berth_model::integration::MAX_LOG_BATCHES + 2), "newest first");
    let too_many: Vec<Value> = (0..=berth_model::integration::MAX_LOG_LINES).map(|_| json!({"message": "m"})).collect();
    s.post("/v1/integration/ocean1/logs", json!({"logs": too_many})).await.assert_error(422, "invalid_request");
    s.post("/v1/integration/nope/logs", json!({"logs": []})).await.assert_error(404, "not_found");

    let metrics = json!({"syncKindMetrics": {"eventId": "e1", "kindIdentifier": "item-0", "syncState": "completed",
        "metrics": {"phase": {"load": {"object_count_type": {"loaded": {"object_count": 3.0}}}}}}});
    let a = s.put("/v1/integration/ocean1/metrics/syncMetrics/resync/e1/kind/item-0", metrics).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = s
        .post(
            "/v1/integration/ocean1/metrics/syncMetrics",
            json!({"syncKindsMetrics": [{"eventId": "e1", "kindIdentifier": "__runtime__"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        s.post("/v1/integration/ocean1/metrics/heartbeat", json!({"eventId": "e1"})).await.status,
        StatusCode::OK
    );
    let syncs = s.get("/v1/integration/ocean1/syncMetrics").await;
    let kinds = &syncs.body["data"]["syncs"][0]["kinds"];
    assert!(kinds["item-0"].is_object() && kinds["__runtime__"].is_object(), "{}", syncs.body);
    s.put("/v1/integration/ocean1/metrics/syncMetrics/resync/e1/kind/bad%20kind", json!({"syncKindMetrics": {}}))
        .await
        .assert_error(422, "invalid_request");

    let a = s.post("/v1/integration/ocean1/kinds/item/examples", json!({"examples": [{"id": 1}, {"id": 2}]})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        s.get("/v1/integration/ocean1/kinds/item/examples").await.body["examples"],
        json!([{"id": 1}, {"id": 2}])
    );

    assert_eq!(s.delete("/v1/integration/ocean1").await.status, StatusCode::OK);
    create(&s).await;
    let logs = s.get("/v1/integration/ocean1/logs").await;
    assert_eq!(logs.body["data"]["logs"], json!([]), "a new integration of the same name starts empty");
    assert_eq!(s.get("/v1/integration/ocean1/kinds/item/examples").await.body["examples"], json!([]));
}

#[tokio::test]
async fn members_read_only_what_an_integration_is() {
    let s = setup().await;
    create(&s).await;
    let member = app_token(&s, "dev", &["Member"], &["A"]).await;
    for (method, path, body) in [
        (Method::GET, "/v1/integration", None),
        (Method::GET, "/v1/integration/ocean1", None),
        (Method::POST, "/v1/integration", Some(json!({"installationId": "x"}))),
        (Method::PATCH, "/v1/integration/ocean1", Some(json!({"version": "9"}))),
        (Method::PATCH, "/v1/integration/ocean1/config", Some(json!({"config": {}}))),
        (Method::POST, "/v1/integration/ocean1/logs", Some(json!({"logs": []}))),
        (Method::GET, "/v1/integration/ocean1/logs", None),
        (Method::DELETE, "/v1/integration/ocean1", None),
    ] {
        let (status, answer) = call(&s, &member, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert!(!answer.to_string().contains("entityDeletionThreshold"), "{answer}");
    }
    let (status, answer) = call(&s, &member, Method::GET, "/v1/integration/metadata", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["integrations"][0]["identifier"], "ocean1");
    assert!(answer["integrations"][0].get("config").is_none(), "{answer}");
    let (status, answer) = call(&s, &member, Method::GET, "/v1/kafka-credentials", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(answer["message"].as_str().is_some_and(|m| m.contains("POLLING")), "{answer}");
    let (status, answer) = call(&s, &member, Method::GET, "/v1/integration/provision-enabled", None).await;
    assert_eq!((status, answer["integrations"].clone()), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn the_reconciliation_read_finds_an_integrations_entities_page_by_page_within_the_callers_scope() {
    let s = setup().await;
    for i in 0..5 {
        write_as(&s, OCEAN_UA, &format!("oc-{i}"), if i % 2 == 0 { "A" } else { "B" }).await;
    }
    write_as(&s, "port-ocean/mytest/0.1.0/other/exporter", "not-mine", "A").await;
    write_as(&s, "github-action/v1.0", "gha", "A").await;
    let body = |extra: Value| {
        let mut b = json!({"datasource_prefix": "port-ocean/mytest/", "datasource_suffix": "/ocean1/exporter"});
        if let (Some(m), Value::Object(e)) = (b.as_object_mut(), extra) {
            m.extend(e);
        }
        b
    };
    let all = s.post("/v1/blueprints/entities/datasource-entities", body(json!({"limit": 5000}))).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(ids(&all.body), ["oc-0", "oc-1", "oc-2", "oc-3", "oc-4"]);
    assert_eq!(all.body["entities"][0]["blueprint"], "service");
    assert!(all.body.get("next").is_none());

    // Paged: two at a time, each page's `next` leads to the rest, nothing twice.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut extra = json!({"limit": 2});
        if let Some(f) = &from {
            extra["from"] = Value::String(f.clone());
        }
        let page = s.post("/v1/blueprints/entities/datasource-entities", body(extra)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        seen.extend(ids(&page.body));
        match page.body["next"].as_str() {
            Some(n) => from = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["oc-0", "oc-1", "oc-2", "oc-3", "oc-4"]);

    // Before a time: what was written since is left out.
    let cut = berth_model::Timestamp::from_millis(0);
    let before = s.post("/v1/blueprints/entities/datasource-entities", body(json!({"before": cut}))).await;
    assert_eq!(ids(&before.body), Vec::<String>::new());

    // Bad input.
    for extra in [json!({"limit": 0}), json!({"limit": 10_001}), json!({"before": "yesterday"}), json!({"from": "x"})] {
        s.post("/v1/blueprints/entities/datasource-entities", body(extra)).await.assert_error(400, "bad_request");
    }
    s.post("/v1/blueprints/entities/datasource-entities", json!({"datasource_prefix": "p"}))
        .await
        .assert_error(422, "invalid_request");

    // A Member whose read permission hides team B's services gets only team A's.
    read_own_team_only(&s).await;
    let member = app_token(&s, "member-a", &["Member"], &["A"]).await;
    let (status, answer) =
        call(&s, &member, Method::POST, "/v1/blueprints/entities/datasource-entities", Some(body(json!({})))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&answer), ["oc-0", "oc-2", "oc-4"]);

    // The static route still answers an entity named `datasource-entities` of a blueprint named `entities`.
    s.get("/v1/blueprints/entities/datasource-entities").await.assert_error(404, "not_found");
}
