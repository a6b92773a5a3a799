//! What is deployed where, over HTTP: the first report creates the ready model; reports of one deployment
//! merge (a finished status is not taken back); bad reports are refused with the field named and write
//! nothing; an existing blueprint is mapped onto, never changed; the matrix picks the latest successful
//! deployment per environment whatever order reports arrive in, flags drift and staleness, filters by team
//! and system, and shows a Member only what it may read.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;
use crate::permissions::call;

async fn count(s: &TestServer, bp: &str) -> u64 {
    let a = s.get(&format!("/v1/blueprints/{bp}/entities-count")).await;
    a.body["count"].as_u64().unwrap_or(0)
}

fn days_ago(days: i64) -> String {
    let ms = berth_server::now().millis() - days * 86_400_000;
    berth_model::Timestamp::from_millis(ms).to_rfc3339()
}

#[tokio::test]
async fn a_first_report_creates_the_model_and_reports_of_one_deployment_merge() {
    let s = TestServer::start().await;
    let first = json!({"service": "payments", "environment": "production", "version": "1.4.0", "status": "in_progress",
        "commit": "abc123", "url": "https://ci.example/runs/1", "startedAt": "2026-12-01T10:00:00Z", "actor": "ada"});
    let a = s.post("/v1/deployments", first.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let mut created: Vec<&str> =
        a.body["modelCreated"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
    created.sort_unstable();
    assert_eq!(created, ["deployment", "environment", "incident", "service"]);
    let id = a.body["entity"]["identifier"].as_str().expect("id").to_string();
    assert!(id.starts_with("payments-production-1.4.0-"), "{id}");
    assert_eq!(a.body["url"], format!("/entities/deployment/{id}"));
    // The service and the environment exist now.
    assert_eq!(s.get("/v1/blueprints/service/entities/payments").await.status, StatusCode::OK);
    assert_eq!(s.get("/v1/blueprints/environment/entities/production").await.status, StatusCode::OK);

    // The same run, finished: one deployment, merged (the commit reported first is kept).
    let done = json!({"service": "payments", "environment": "production", "version": "1.4.0", "status": "succeeded",
        "url": "https://ci.example/runs/1", "finishedAt": "2026-12-01T10:05:00Z"});
    let a = s.post("/v1/deployments", done).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["entity"]["identifier"], id.as_str());
    assert!(a.body["modelCreated"].as_array().expect("list").is_empty());
    let p = &a.body["entity"]["properties"];
    assert_eq!((p["status"].as_str(), p["commitSha"].as_str()), (Some("success"), Some("abc123")));
    assert_eq!(p["finishedAt"], "2026-12-01T10:05:00.000Z");
    // A late `in_progress` report does not take the finished status back.
    let a = s.post("/v1/deployments", first).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["entity"]["properties"]["status"], "success");
    assert_eq!(count(&s, "deployment").await, 1);

    // Bad reports: the field named, nothing written.
    for (body, status, needle) in [
        (json!({"service": "payments", "environment": "production", "version": "2", "status": "meh"}), 422, "`status`"),
        (
            json!({"service": "payments", "environment": "production", "version": "2", "finishedAt": "noon"}),
            422,
            "`finishedAt`",
        ),
        (json!({"service": "payments", "environment": "production"}), 422, "`version`"),
        (json!({"service": "pay ments", "environment": "production", "version": "2"}), 422, "`service`"),
        (json!({"service": "payments", "environment": "production", "version": "2", "colour": "red"}), 400, "`colour`"),
        (json!(["payments"]), 400, "object"),
        (
            json!({"identifier": "i", "service": "payments", "environment": "p", "severity": "apocalyptic"}),
            422,
            "`severity`",
        ),
    ] {
        let route = if body.get("severity").is_some() { "/v1/incidents" } else { "/v1/deployments" };
        let a = s.post(route, body.clone()).await;
        assert_eq!(a.status.as_u16(), status, "{body}: {}", a.body);
        assert_eq!(a.body["ok"], false);
        assert!(a.body["message"].as_str().is_some_and(|m| m.contains(needle)), "{body}: {}", a.body);
    }
    assert_eq!(count(&s, "deployment").await, 1);
    assert_eq!(count(&s, "incident").await, 0);
    // The routes are in the OpenAPI document.
    let doc = s.get("/openapi.json").await.body;
    for path in ["/v1/deployments", "/v1/incidents", "/v1/deployments/matrix"] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
}

#[tokio::test]
async fn an_existing_blueprint_is_mapped_onto_and_never_changed() {
    let s = TestServer::start().await;
    for body in [
        json!({"identifier": "service", "title": "Service", "schema": {"properties": {"lang": {"type": "string"}}}}),
        json!({"identifier": "environment", "title": "Env", "schema": {"properties": {}}}),
        json!({"identifier": "deployment", "title": "Release", "schema": {"properties": {
                "version": {"type": "string"}, "status": {"type": "string"}}},
            "relations": {"svc": {"target": "service", "required": false, "many": false},
                          "env": {"target": "environment", "required": false, "many": false}}}),
    ] {
        assert_eq!(s.post("/v1/blueprints", body).await.status, StatusCode::CREATED);
    }
    let before = s.get("/v1/blueprints/deployment").await.body["blueprint"].clone();
    let a = s
        .post(
            "/v1/deployments",
            json!({"service": "api", "environment": "staging", "version": "7", "commit": "c0ffee"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["modelCreated"], json!(["incident"]));
    let ignored: Vec<&str> = a.body["ignored"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
    assert_eq!(ignored, ["commitSha"]);
    assert_eq!(a.body["entity"]["relations"], json!({"svc": "api", "env": "staging"}));
    let after = s.get("/v1/blueprints/deployment").await.body["blueprint"].clone();
    assert_eq!(before["schema"], after["schema"], "the blueprint is not changed");
    assert_eq!(before["relations"], after["relations"]);
    // A report its rules refuse (a version that breaks its pattern) leaves nothing behind: not even the
    // missing `incident` blueprint.
    let strict = s
        .patch(
            "/v1/blueprints/deployment",
            json!({"schema": {"properties": {
            "version": {"type": "string", "pattern": "^v[0-9]+$"}, "status": {"type": "string"}}}}),
        )
        .await;
    assert_eq!(strict.status, StatusCode::OK, "{}", strict.body);
    assert_eq!(s.delete("/v1/blueprints/incident").await.status, StatusCode::OK);
    let a = s.post("/v1/deployments", json!({"service": "api", "environment": "staging", "version": "8"})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert_eq!(s.get("/v1/blueprints/incident").await.status, StatusCode::NOT_FOUND, "nothing created");

    // A blueprint without a relation to `environment` refuses the report, and says what to add.
    let s = TestServer::start().await;
    for body in [
        json!({"identifier": "service", "title": "Service", "schema": {"properties": {}}}),
        json!({"identifier": "deployment", "title": "Release", "schema": {"properties": {"version": {"type": "string"}}},
            "relations": {"service": {"target": "service", "required": false, "many": false}}}),
    ] {
        assert_eq!(s.post("/v1/blueprints", body).await.status, StatusCode::CREATED);
    }
    let a = s.post("/v1/deployments", json!({"service": "api", "environment": "staging", "version": "7"})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert_eq!(s.get("/v1/blueprints/environment").await.status, StatusCode::NOT_FOUND, "nothing created");
    assert!(a.body["message"].as_str().is_some_and(|m| m.contains("relation to `environment`")), "{}", a.body);
    assert_eq!(count(&s, "deployment").await, 0);
}

#[tokio::test]
async fn the_matrix_shows_what_runs_where_whatever_order_reports_arrive_in() {
    let s = TestServer::start().await;
    assert_eq!(s.post("/v1/teams", json!({"name": "core"})).await.status, StatusCode::CREATED);
    let report = |service: &str, env: &str, version: &str, status: &str, finished: String| {
        json!({"service": service, "environment": env, "version": version, "status": status,
            "finishedAt": finished, "actor": format!("{service}-bot")})
    };
    // payments: production v1 (5 days ago), then v2 failed, then v3 rolled back: v1 runs; staging v3, and v0
    // reported late with an older time: v3 runs. orders: staging only, 60 days ago (stale at 30).
    for body in [
        report("payments", "production", "v1", "success", days_ago(5)),
        report("payments", "staging", "v3", "success", days_ago(1)),
        report("payments", "production", "v2", "failure", days_ago(4)),
        report("payments", "production", "v3", "rolled_back", days_ago(1)),
        report("payments", "staging", "v0", "success", days_ago(9)),
        report("orders", "staging", "v5", "success", days_ago(60)),
    ] {
        let a = s.post("/v1/deployments", body).await;
        assert!(a.status.is_success(), "{}", a.body);
    }
    // orders belongs to team core and system `shop`.
    let a = s.patch("/v1/blueprints/service/entities/orders", json!({"team": ["core"]})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    let m = s.get("/v1/deployments/matrix").await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.body);
    assert_eq!(m.body["environments"], json!(["production", "staging"]));
    let row = |m: &Value, svc: &str| -> Value {
        m["services"].as_array().expect("rows").iter().find(|r| r["service"] == svc).cloned().unwrap_or(Value::Null)
    };
    let payments = row(&m.body, "payments");
    assert_eq!(payments["environments"]["production"]["version"], "v1");
    assert_eq!(payments["environments"]["staging"]["version"], "v3");
    assert_eq!(payments["environments"]["production"]["by"], "payments-bot");
    assert_eq!(payments["drift"], true);
    assert_eq!(payments["environments"]["production"]["stale"], false);
    let orders = row(&m.body, "orders");
    assert_eq!(orders["environments"]["staging"]["version"], "v5");
    assert_eq!(orders["environments"]["staging"]["stale"], true);
    assert_eq!(orders["drift"], false);
    assert!(orders["environments"].get("production").is_none());
    // A report that fixes production: v4 succeeds, now.
    let a = s.post("/v1/deployments", report("payments", "production", "v4", "success", days_ago(0))).await;
    assert!(a.status.is_success(), "{}", a.body);
    let m = s.get("/v1/deployments/matrix?stale_days=90").await.body;
    assert_eq!(row(&m, "payments")["environments"]["production"]["version"], "v4");
    assert_eq!(row(&m, "orders")["environments"]["staging"]["stale"], false);
    // Many services (the index answers each cell alike, however many there are).
    for i in 0..40 {
        let a =
            s.post("/v1/deployments", report(&format!("svc-{i:02}"), "staging", "v1", "success", days_ago(1))).await;
        assert!(a.status.is_success(), "{}", a.body);
    }
    let wide = s.get("/v1/deployments/matrix?stale_days=90").await.body;
    assert_eq!(wide["services"].as_array().expect("rows").len(), 42);
    assert_eq!(row(&wide, "payments"), row(&m, "payments"));
    assert_eq!(row(&wide, "orders"), row(&m, "orders"));
    assert_eq!(row(&wide, "svc-07")["environments"]["staging"]["version"], "v1");
    // Filters.
    let m = s.get("/v1/deployments/matrix?team=core").await.body;
    let names: Vec<&str> =
        m["services"].as_array().expect("rows").iter().filter_map(|r| r["service"].as_str()).collect();
    assert_eq!(names, ["orders"]);
    let bad = s.get("/v1/deployments/matrix?stale_days=soon").await;
    bad.assert_error(400, "bad_request");

    // A Member who may not read deployments sees services without their versions.
    let a = s
        .patch(
            "/v1/blueprints/deployment/permissions",
            json!({"entities": {"read": {"roles": ["Admin"], "users": [], "teams": [], "ownedByTeam": false}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let member = crate::common::app_token(&s, "viewer", &["Member"], &["core"]).await;
    let (status, body) = call(&s, &member, Method::GET, "/v1/deployments/matrix", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for r in body["services"].as_array().expect("rows") {
        assert_eq!(r["environments"], json!({}), "{r}");
    }

    // The running deployment deleted: the one before runs again (v2 failed, v3 was rolled back: v1).
    let gone = s.delete("/v1/blueprints/deployment/entities/payments-production-v4").await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.body);
    let m = s.get("/v1/deployments/matrix").await.body;
    assert_eq!(row(&m, "payments")["environments"]["production"]["version"], "v1");
    // A Member who may read only its team's deployments sees, in each cell, the latest one it may read.
    let a = s
        .patch(
            "/v1/blueprints/deployment/permissions",
            json!({"entities": {"read": {"roles": ["Admin"], "users": [], "teams": [], "ownedByTeam": true}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = s.post("/v1/deployments", report("payments", "production", "v6", "success", days_ago(0))).await;
    assert!(a.status.is_success(), "{}", a.body);
    let a = s.patch("/v1/blueprints/deployment/entities/payments-production-v1", json!({"team": ["core"]})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let (status, body) = call(&s, &member, Method::GET, "/v1/deployments/matrix", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(row(&body, "payments")["environments"]["production"]["version"], "v1", "v6 is hidden from it");
    assert!(row(&body, "payments")["environments"].get("staging").is_none(), "{body}");
    let m = s.get("/v1/deployments/matrix").await.body;
    assert_eq!(row(&m, "payments")["environments"]["production"]["version"], "v6", "the Admin sees v6");
}

/// A time `hours` before `at` (RFC 3339).
fn hours_before(at: &str, hours: i64) -> String {
    let t = berth_model::Timestamp::parse(at).expect("time");
    berth_model::Timestamp::from_millis(t.millis() - hours * 3_600_000).to_rfc3339()
}

#[tokio::test]
async fn dora_figures_match_a_history_computed_by_hand() {
    let s = TestServer::start().await;
    assert_eq!(s.post("/v1/teams", json!({"name": "core"})).await.status, StatusCode::CREATED);
    let deploy = |svc: &str, env: &str, version: &str, status: &str, finished: &str, lead_hours: i64| {
        json!({"service": svc, "environment": env, "version": version, "status": status, "finishedAt": finished,
            "commitTime": hours_before(finished, lead_hours)})
    };
    let (d0, d1, d2, d3, d4, d5) = (days_ago(12), days_ago(10), days_ago(8), days_ago(6), days_ago(5), days_ago(3));
    let orders_at = days_ago(2);
    for body in [
        deploy("payments", "production", "v1", "success", &d1, 2),
        deploy("payments", "production", "v2", "success", &d2, 26),
        deploy("payments", "production", "v3", "failure", &d3, 1),
        deploy("payments", "production", "v4", "rolled_back", &d4, 1),
        // Reported in progress, then again finished: one deployment.
        json!({"service": "payments", "environment": "production", "version": "v5", "status": "in_progress",
            "commitTime": hours_before(&d5, 10)}),
        deploy("payments", "production", "v5", "success", &d5, 10),
        // Reported last, deployed first.
        deploy("payments", "production", "v0", "success", &d0, 4),
        deploy("payments", "staging", "v9", "success", &d5, 1),
        deploy("orders", "production", "v1", "success", &orders_at, 1),
    ] {
        let a = s.post("/v1/deployments", body.clone()).await;
        assert!(a.status.is_success(), "{body}: {}", a.body);
    }
    // An incident two hours after v2: v2 is a failed change; restored in three hours.
    let opened = hours_before(&d2, -2);
    let a = s
        .post(
            "/v1/incidents",
            json!({"identifier": "inc-1", "service": "payments", "environment": "production",
            "severity": "high", "openedAt": opened, "resolvedAt": hours_before(&opened, -3)}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = s.patch("/v1/blueprints/service/entities/orders", json!({"team": ["core"]})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    let close = |v: &Value, want: f64| (v.as_f64().expect("number") - want).abs() < 1e-9;
    // The organisation: successes v1 v2 v5 v0 + orders; lead times 2 26 10 4 1 → median 4; failed v2
    // (incident), v3, v4 of 7 finished; restore 3 h.
    let d = s.get("/v1/deployments/dora?days=30").await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    let b = &d.body;
    assert_eq!(b["deploymentFrequency"]["deployments"], 5);
    assert!(close(&b["deploymentFrequency"]["perDay"], 5.0 / 30.0), "{b}");
    assert!(close(&b["leadTimeHours"], 4.0), "{b}");
    assert!(close(&b["changeFailureRate"]["rate"], 3.0 / 7.0), "{b}");
    assert_eq!(b["changeFailureRate"]["failedChanges"], 3);
    assert!(close(&b["timeToRestoreHours"]["median"], 3.0), "{b}");
    assert_eq!(b["timeToRestoreHours"]["incidents"], 1);
    assert_eq!(
        b["bands"],
        json!({"deploymentFrequency": "high", "leadTime": "elite", "changeFailureRate": "low", "timeToRestore": "high"})
    );
    let weekly: u64 =
        b["weeks"].as_array().expect("weeks").iter().map(|w| w["deployments"].as_u64().unwrap_or(0)).sum();
    assert_eq!(weekly, 5, "the weeks add up");
    // One service: lead times 2 26 10 4 → median 7; 3 failed of 6.
    let b = s.get("/v1/deployments/dora?days=30&service=payments").await.body;
    assert_eq!(b["deploymentFrequency"]["deployments"], 4);
    assert!(close(&b["leadTimeHours"], 7.0), "{b}");
    assert!(close(&b["changeFailureRate"]["rate"], 0.5), "{b}");
    // A team: orders only.
    let b = s.get("/v1/deployments/dora?days=30&team=core").await.body;
    assert_eq!(b["deploymentFrequency"]["deployments"], 1);
    assert_eq!(b["bands"]["changeFailureRate"], "elite");
    // A shorter period leaves the older deployments out (v0, v1, v2 and the incident: 9 days).
    let b = s.get("/v1/deployments/dora?days=7&service=payments").await.body;
    assert_eq!(b["deploymentFrequency"]["deployments"], 1);
    assert_eq!(b["timeToRestoreHours"]["incidents"], 0);
    for bad in ["days=0", "days=many", "failure_window_hours=100000"] {
        s.get(&format!("/v1/deployments/dora?{bad}")).await.assert_error(400, "bad_request");
    }

    // A Member who may not read deployments or incidents counts none of them (as if there were none).
    for bp in ["deployment", "incident"] {
        let hide = json!({"entities": {"read": {"roles": ["Admin"], "users": [], "teams": [], "ownedByTeam": false}}});
        let a = s.patch(&format!("/v1/blueprints/{bp}/permissions"), hide).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let member = crate::common::app_token(&s, "viewer", &["Member"], &["core"]).await;
    let (status, b) = call(&s, &member, Method::GET, "/v1/deployments/dora?days=30", None).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["deploymentFrequency"]["deployments"], 0);
    assert_eq!(b["timeToRestoreHours"]["incidents"], 0);
    assert_eq!(b["changeFailureRate"]["rate"], Value::Null);
    let (_, t) = call(&s, &member, Method::GET, "/v1/deployments/timeline?service=payments", None).await;
    assert_eq!(t["deployments"], json!([]));
    // The timeline: newest first, every status.
    let t = s.get("/v1/deployments/timeline?service=payments&environment=production").await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    let versions: Vec<&str> =
        t.body["deployments"].as_array().expect("list").iter().filter_map(|d| d["version"].as_str()).collect();
    assert_eq!(versions, ["v5", "v4", "v3", "v2", "v1", "v0"]);
    s.get("/v1/deployments/timeline").await.assert_error(400, "bad_request");
}

#[tokio::test]
async fn the_matrix_at_a_past_time_is_read_from_the_log() {
    let s = TestServer::start().await;
    let report = |version: &str| json!({"service": "orders", "environment": "staging", "version": version});
    assert!(s.post("/v1/deployments", report("v1")).await.status.is_success());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = berth_server::now().to_rfc3339();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(s.post("/v1/deployments", report("v2")).await.status.is_success());
    let version = |m: &Value| m["services"][0]["environments"]["staging"]["version"].clone();
    let now = s.get("/v1/deployments/matrix").await.body;
    assert_eq!(version(&now), "v2");
    let then = s.get(&format!("/v1/deployments/matrix?at={between}")).await;
    assert_eq!(then.status, StatusCode::OK, "{}", then.body);
    assert_eq!(version(&then.body), "v1");
    assert_eq!(then.body["at"], between.as_str());
    let before = s.get("/v1/deployments/matrix?at=2000-01-01T00:00:00Z").await.body;
    assert_eq!(before["services"], json!([]), "nothing was deployed then");
    s.get("/v1/deployments/matrix?at=yesterday").await.assert_error(400, "bad_request");
}

#[tokio::test]
async fn incidents_of_an_existing_blueprint_with_many_services_and_no_environment_count() {
    let s = TestServer::start().await;
    assert_eq!(
        s.post("/v1/blueprints", json!({"identifier": "service", "title": "Service", "schema": {"properties": {}}}))
            .await
            .status,
        StatusCode::CREATED
    );
    let incident = json!({"identifier": "incident", "title": "Incident", "schema": {"properties": {
            "openedAt": {"type": "string", "format": "date-time"}, "resolvedAt": {"type": "string", "format": "date-time"}}},
        "relations": {"services": {"target": "service", "required": false, "many": true}}});
    assert_eq!(s.post("/v1/blueprints", incident).await.status, StatusCode::CREATED);
    let finished = days_ago(2);
    let a = s
        .post(
            "/v1/deployments",
            json!({"service": "api", "environment": "production", "version": "1", "finishedAt": finished}),
        )
        .await;
    assert!(a.status.is_success(), "{}", a.body);
    assert_eq!(a.body["modelCreated"], json!(["environment", "deployment"]), "the existing incident blueprint stays");
    assert!(s.post("/v1/blueprints/service/entities", json!({"identifier": "web"})).await.status.is_success());
    let opened = hours_before(&finished, -1);
    let a = s
        .post(
            "/v1/blueprints/incident/entities",
            json!({"identifier": "inc-9", "properties": {"openedAt": opened,
            "resolvedAt": hours_before(&opened, -2)}, "relations": {"services": ["api", "web"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let b = s.get("/v1/deployments/dora?days=30").await.body;
    assert_eq!(b["changeFailureRate"]["failedChanges"], 1, "{b}");
    assert_eq!(b["timeToRestoreHours"]["incidents"], 1, "one incident, however many services: {b}");
    assert_eq!(b["timeToRestoreHours"]["median"], 2.0);
}
