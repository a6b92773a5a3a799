//! Machine credentials (`/v1/apps`), the organization, rate limits, and the walk over every documented
//! route: 401 without a token, 403 for a Member on admin routes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{CLIENT_ID, TestServer};

async fn token_for(s: &TestServer, id: &str, secret: &str) -> reqwest::Response {
    s.client
        .post(format!("{}/v1/auth/access_token", s.base))
        .json(&json!({"clientId": id, "clientSecret": secret}))
        .send()
        .await
        .expect("token request")
}

async fn token(s: &TestServer, id: &str, secret: &str) -> String {
    let r = token_for(s, id, secret).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    v["accessToken"].as_str().expect("token").to_string()
}

/// The sequence numbers of every audit record `filters` select, page by page (following `next`), checking
/// that each page answers 200 and that the walk ends.
async fn walk_audit(s: &TestServer, filters: &str) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let path = match &cursor {
            Some(c) => format!("/v1/audit-log?{filters}&cursor={c}"),
            None => format!("/v1/audit-log?{filters}"),
        };
        let a = s.get(&path).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        seen.extend(a.body["audits"].as_array().expect("audits").iter().map(|r| r["seq"].as_u64().expect("seq")));
        match a.body["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return seen,
        }
    }
    panic!("the audit walk did not end");
}

async fn call_as(s: &TestServer, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = s.client.request(method, format!("{}{path}", s.base)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn apps_lifecycle_roles_rotation_and_revocation() {
    let s = TestServer::start().await;
    let a = s.post("/v1/apps", json!({"name": "CI pipeline", "teams": ["platform"]})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let app = a.body["app"].clone();
    let (id, secret) =
        (app["clientId"].as_str().expect("id").to_string(), app["clientSecret"].as_str().expect("secret").to_string());
    assert_eq!(app["id"], app["clientId"]);
    assert_eq!(app["roles"], json!(["Member"]), "Member by default");
    assert_eq!(app["teams"], json!(["platform"]));
    assert_eq!(app["secret"], app["clientSecret"], "the secret under Port's name too");
    assert_eq!(app["enabled"], json!(true));

    // Listed and read back without the secret.
    let list = s.get("/v1/apps").await;
    assert_eq!(list.status, StatusCode::OK);
    let apps = list.body["apps"].as_array().expect("apps");
    assert_eq!(apps.len(), 2);
    assert!(apps.iter().all(|a| a.get("clientSecret").is_none()), "no secrets in lists");
    let one = s.get(&format!("/v1/apps/{id}")).await;
    assert_eq!(one.body["app"]["name"], "CI pipeline");
    assert!(one.body["app"].get("clientSecret").is_none());

    // A Member may write entities but not blueprints or apps.
    let member = token(&s, &id, &secret).await;
    let (status, body) = call_as(
        &s,
        &member,
        Method::POST,
        "/v1/blueprints",
        Some(json!({"identifier": "x", "title": "X", "schema": {"properties": {}}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (status, _) = call_as(&s, &member, Method::GET, "/v1/apps", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Roles are read on every request: promoting the app takes effect on its current token.
    let a = s.put(&format!("/v1/apps/{id}"), json!({"name": "CI pipeline", "roles": ["Admin"]})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["app"]["teams"], json!(["platform"]), "a PUT keeps what it does not name");
    let a = s.put(&format!("/v1/apps/{id}"), json!({"name": "CI pipeline", "enabled": true})).await;
    assert_eq!(
        (a.body["app"]["roles"].clone(), a.body["app"]["teams"].clone()),
        (json!(["Admin"]), json!(["platform"]))
    );
    s.put(&format!("/v1/apps/{id}"), json!({"name": "CI pipeline", "enabled": false}))
        .await
        .assert_error(422, "invalid_request");
    let (status, _) = call_as(&s, &member, Method::GET, "/v1/apps", None).await;
    assert_eq!(status, StatusCode::OK);

    // Rotation: the old token and the old secret stop working, the new secret works.
    let a = s.post(&format!("/v1/apps/{id}/rotate-secret"), json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let new_secret = a.body["app"]["clientSecret"].as_str().expect("new secret").to_string();
    assert_ne!(new_secret, secret);
    let (status, body) = call_as(&s, &member, Method::GET, "/v1/apps", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["message"].as_str().unwrap_or_default().contains("rotated"), "{body}");
    assert_eq!(token_for(&s, &id, &secret).await.status(), StatusCode::UNAUTHORIZED);
    let fresh = token(&s, &id, &new_secret).await;

    // The bootstrap admin can go while another Admin remains; the last Admin cannot.
    let (status, _) = call_as(&s, &fresh, Method::DELETE, &format!("/v1/apps/{CLIENT_ID}"), None).await;
    assert_eq!(status, StatusCode::OK);
    // The generated admin user is an Admin too; once it is gone, this app is the last one.
    let admin_user = format!("/v1/users/{}", berth_server::GENERATED_ADMIN_EMAIL);
    let (status, body) = call_as(&s, &fresh, Method::DELETE, &admin_user, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call_as(&s, &fresh, Method::DELETE, &format!("/v1/apps/{id}"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("last Admin"));
    let (status, _) =
        call_as(&s, &fresh, Method::PUT, &format!("/v1/apps/{id}"), Some(json!({"name": "CI", "roles": ["Member"]})))
            .await;
    assert_eq!(status, StatusCode::CONFLICT, "demoting the last Admin is refused too");

    // Bad input.
    for (body, status) in [
        (json!({"name": "x", "roles": ["Overlord"]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": ""}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "x", "secret": "mine"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"roles": ["Admin"]}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (got, answer) = call_as(&s, &fresh, Method::POST, "/v1/apps", Some(body.clone())).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(answer["ok"], false);
    }
    let (status, _) = call_as(&s, &fresh, Method::GET, "/v1/apps/nobody", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call_as(&s, &fresh, Method::POST, "/v1/apps/nobody/rotate-secret", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A deleted app's token stops working at once.
    let (status, other) = call_as(&s, &fresh, Method::POST, "/v1/apps", Some(json!({"name": "temp"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (oid, osecret) = (
        other["app"]["clientId"].as_str().expect("id").to_string(),
        other["app"]["clientSecret"].as_str().expect("s").to_string(),
    );
    let otoken = token(&s, &oid, &osecret).await;
    let (status, _) = call_as(&s, &fresh, Method::DELETE, &format!("/v1/apps/{oid}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call_as(&s, &otoken, Method::GET, "/v1/blueprints", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn organization_answers_in_ports_shape() {
    let s = TestServer::start_with(|c| c.organization = "Acme Platform".into()).await;
    let a = s.get("/v1/organization").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["organization"]["name"], "Acme Platform");
    assert_eq!(a.body["organization"]["featureFlags"], json!([]));
    assert!(a.body["organization"]["id"].as_str().is_some_and(|id| id.starts_with("org_")));
}

#[tokio::test]
async fn rate_limit_headers_count_down_and_429_carries_retry_after() {
    let s = TestServer::start_with(|c| {
        c.rate_limit = 4;
        c.rate_limit_period = std::time::Duration::from_secs(60);
    })
    .await;
    // The test server's token request did not count: token requests are not rate limited.
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let a = s.get("/v1/blueprints").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers["x-ratelimit-limit"], "4");
        assert_eq!(a.headers["x-ratelimit-period"], "60");
        let reset: u64 = a.headers["x-ratelimit-reset"].to_str().expect("ascii").parse().expect("seconds");
        assert!((1..=60).contains(&reset), "reset in seconds until the window ends: {reset}");
        remaining.push(a.headers["x-ratelimit-remaining"].to_str().expect("ascii").to_string());
    }
    assert_eq!(remaining, vec!["3", "2", "1", "0"]);
    let a = s.get("/v1/blueprints").await;
    a.assert_error(429, "rate_limited");
    let retry: u64 = a.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry));
    assert_eq!(a.headers["x-ratelimit-remaining"], "0");
    // Token requests are not limited (a client must always be able to re-authenticate).
    let r = s
        .client
        .post(format!("{}/v1/auth/access_token", s.base))
        .json(&json!({"clientId": CLIENT_ID, "clientSecret": crate::common::CLIENT_SECRET}))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_documented_route_needs_a_token_and_members_cannot_administer() {
    let s = TestServer::start().await;
    let doc = s.raw(Method::GET, "/openapi.json", None, None).await.body;
    // Public on purpose: sign-in, invitations, health, and inbound webhooks' ingest URLs (their key and
    // signature authenticate them: `webhooks.rs`).
    let open = ["/v1/auth/access_token", "/v1/users/accept-invite", "/healthz", "/readyz", "/ingest/{webhookKey}"];
    let mut walked = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        if open.contains(&path.as_str()) {
            continue;
        }
        let concrete: String =
            path.split('/').map(|seg| if seg.starts_with('{') { "x" } else { seg }).collect::<Vec<_>>().join("/");
        for method in ops.as_object().expect("ops").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let a = s.raw(method.clone(), &concrete, Some(b"{}".to_vec()), None).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {concrete} without a token: {}", a.body);
            walked += 1;
        }
    }
    assert!(walked >= 25, "walked {walked} operations");

    // A Member on every admin route.
    let a = s.post("/v1/apps", json!({"name": "member"})).await;
    let member =
        token(&s, a.body["app"]["clientId"].as_str().expect("id"), a.body["app"]["clientSecret"].as_str().expect("s"))
            .await;
    s.seed_blueprints().await;
    for (method, path) in [
        (Method::POST, "/v1/blueprints"),
        (Method::PUT, "/v1/blueprints/service"),
        (Method::PATCH, "/v1/blueprints/service"),
        (Method::DELETE, "/v1/blueprints/service"),
        (Method::GET, "/v1/apps"),
        (Method::POST, "/v1/apps"),
        (Method::GET, &format!("/v1/apps/{CLIENT_ID}")),
        (Method::PUT, &format!("/v1/apps/{CLIENT_ID}")),
        (Method::DELETE, &format!("/v1/apps/{CLIENT_ID}")),
        (Method::POST, &format!("/v1/apps/{CLIENT_ID}/rotate-secret")),
        (Method::PATCH, "/v1/blueprints/service/permissions"),
        (Method::POST, "/v1/users/invite"),
        (Method::PATCH, "/v1/users/admin@berth.local"),
        (Method::DELETE, "/v1/users/admin@berth.local"),
        (Method::POST, "/v1/teams"),
    ] {
        let body = json!({"identifier": "x", "title": "X", "name": "x", "schema": {"properties": {}}});
        let (status, answer) = call_as(&s, &member, method.clone(), path, Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} as a Member: {answer}");
    }
    // Each denied change is in the audit log as a failed attempt (recorded in the background).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let a = s.get("/v1/audit-log?status=FAILURE&resources=app&resources=blueprint&resources=user&resources=team&resources=permissions").await;
        let n = a.body["audits"].as_array().map_or(0, Vec::len);
        // 13 writes were refused (the two GETs of apps are reads, not recorded).
        if n >= 13 {
            assert!(a.body["audits"].as_array().expect("a").iter().all(|r| r["diff"]["after"]["status"] == json!(403)));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "refusals recorded: {n}: {}", a.body);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn audit_log_shows_every_change_with_its_diff() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let started = s.get("/healthz").await.body["seq"].as_u64().expect("seq");
    assert_eq!(
        s.post("/v1/blueprints/team/entities", json!({"identifier": "core", "title": "Core"})).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        s.post(
            "/v1/blueprints/team/entities?upsert=true&merge=true&run_id=run-7",
            json!({"identifier": "core", "title": "Core team"})
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(s.delete("/v1/blueprints/team/entities/core").await.status, StatusCode::OK);
    let app = s.post("/v1/apps", json!({"name": "auditor"})).await;
    assert_eq!(app.status, StatusCode::CREATED);

    let a = s.get("/v1/audit-log?entity=core").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let audits = a.body["audits"].as_array().expect("audits");
    let actions: Vec<&str> = audits.iter().map(|r| r["action"].as_str().expect("action")).collect();
    assert_eq!(actions, vec!["DELETE", "UPDATE", "CREATE"], "newest first");
    assert_eq!(audits[1]["diff"]["before"]["title"], "Core");
    assert_eq!(audits[1]["diff"]["after"]["title"], "Core team");
    assert_eq!(audits[0]["diff"]["after"], Value::Null);
    assert_eq!(audits[2]["diff"]["before"], Value::Null);
    assert_eq!(audits[1]["trigger"]["by"]["userId"], CLIENT_ID);
    assert_eq!(audits[1]["trigger"]["origin"], "API");
    assert_eq!(audits[1]["context"]["blueprintIdentifier"], "team");
    assert_eq!(audits[1]["resourceType"], "entity");
    assert_eq!(audits[1]["status"], "SUCCESS");

    // Filters combine with AND.
    let a = s.get("/v1/audit-log?blueprint=team&action=UPDATE").await;
    assert_eq!(a.body["audits"].as_array().expect("audits").len(), 1);
    let a = s.get("/v1/audit-log?run_id=run-7").await;
    assert_eq!(a.body["audits"].as_array().expect("audits").len(), 1);
    let a = s.get("/v1/audit-log?run_id=run-7&action=DELETE").await;
    assert!(a.body["audits"].as_array().expect("audits").is_empty());
    let a = s.get("/v1/audit-log?resources=blueprint&origin=API").await;
    let blueprints: Vec<&str> = a.body["audits"]
        .as_array()
        .expect("audits")
        .iter()
        .map(|r| r["context"]["blueprintIdentifier"].as_str().expect("bp"))
        .collect();
    assert!(blueprints.contains(&"service") && blueprints.contains(&"team"), "{blueprints:?}");
    let a = s.get("/v1/audit-log?from=2999-01-01T00:00:00Z").await;
    assert!(a.body["audits"].as_array().expect("audits").is_empty());
    let a = s.get("/v1/audit-log?to=2000-01-01T00:00:00Z").await;
    assert!(a.body["audits"].as_array().expect("audits").is_empty());

    // Paging: one record at a time walks the whole log, newest first, without repeats.
    let seen = walk_audit(&s, "limit=1").await;
    let head = s.get("/healthz").await.body["seq"].as_u64().expect("seq");
    assert_eq!(seen, (1..=head).rev().collect::<Vec<_>>(), "every change, once, newest first");
    assert!(head > started);

    // Secrets never appear.
    let all = s.get("/v1/audit-log?limit=1000").await;
    let text = all.body.to_string();
    assert!(!text.contains("secretSha256") && !text.contains("clientSecret"), "no secret material in the audit log");
    // The signing key lives outside the log: a new catalog has no record of it at all.
    let key_record =
        all.body["audits"].as_array().expect("audits").iter().find(|r| r["resourceType"] == "signing_key").cloned();
    assert_eq!(key_record, None);

    // Members filter by what they look at.
    let member = token(
        &s,
        app.body["app"]["clientId"].as_str().expect("id"),
        app.body["app"]["clientSecret"].as_str().expect("s"),
    )
    .await;
    let (status, _) = call_as(&s, &member, Method::GET, "/v1/audit-log", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call_as(&s, &member, Method::GET, "/v1/audit-log?entity=core", None).await;
    assert_eq!(status, StatusCode::OK);

    for bad in ["limit=0", "limit=5000", "from=yesterday", "cursor=abc", "status=MAYBE"] {
        s.get(&format!("/v1/audit-log?{bad}")).await.assert_error(400, "bad_request");
    }
}

/// The audit records of one entity come from the entity's own events (the version index), refused attempts
/// included, and are exactly the records a scan of the whole log finds for it, in the same order, page by page.
#[tokio::test]
async fn audit_of_one_entity_equals_the_scan_of_the_log() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    // A refused create before the entity exists, then its life; the same identifier in another blueprint;
    // other entities' changes in between.
    let refused =
        s.post("/v1/blueprints/service/entities", json!({"identifier": "svc-x", "properties": {"replicas": -1}})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    for i in 0..3 {
        let r = s
            .post(
                "/v1/blueprints/service/entities?upsert=true",
                json!({"identifier": "svc-x", "properties": {"replicas": i}}),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
        let r = s.post("/v1/blueprints/service/entities", json!({"identifier": format!("other-{i}")})).await;
        assert!(r.status.is_success(), "{}", r.body);
    }
    let r = s.post("/v1/blueprints/team/entities", json!({"identifier": "svc-x"})).await;
    assert!(r.status.is_success(), "{}", r.body);
    let refused = s
        .post(
            "/v1/blueprints/service/entities?upsert=true",
            json!({"identifier": "svc-x", "properties": {"replicas": -5}}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.delete("/v1/blueprints/service/entities/svc-x").await.status, StatusCode::OK);

    let all = s.get("/v1/audit-log?limit=1000").await;
    let of = |blueprint: Option<&str>| -> Vec<u64> {
        all.body["audits"]
            .as_array()
            .expect("audits")
            .iter()
            .filter(|r| r["resourceType"] == "entity" && r["context"]["entityIdentifier"] == "svc-x")
            .filter(|r| blueprint.is_none_or(|b| r["context"]["blueprintIdentifier"] == b))
            .map(|r| r["seq"].as_u64().expect("seq"))
            .collect()
    };
    async fn seqs_of(s: &TestServer, path: &str) -> Vec<u64> {
        let a = s.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body["audits"].as_array().expect("audits").iter().map(|r| r["seq"].as_u64().expect("seq")).collect()
    }
    let s = &s;
    let seqs = |path: &'static str| seqs_of(s, path);
    let both = of(None);
    assert_eq!(both.len(), 7, "2 refusals, 3 writes, a delete and the team: {}", all.body);
    assert_eq!(seqs("/v1/audit-log?entity=svc-x").await, both);
    assert_eq!(seqs("/v1/audit-log?identifier=svc-x&resources=entity").await, both);
    assert_eq!(seqs("/v1/audit-log?entity=svc-x&blueprint=service").await, of(Some("service")));
    assert_eq!(seqs("/v1/audit-log?entity=svc-x&status=FAILURE").await.len(), 2);
    assert_eq!(seqs("/v1/audit-log?entity=svc-x&action=DELETE").await.len(), 1);
    // One record a page: the same records, and the last page says there is no more.
    let walked = walk_audit(s, "entity=svc-x&limit=1").await;
    assert_eq!(walked, both);
}

#[tokio::test]
async fn time_travel_history_and_properties_history() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(15));
    for (replicas, language) in [(1, "go"), (2, "go"), (3, "rust")] {
        let r = s
            .post(
                "/v1/blueprints/service/entities?upsert=true&merge=true",
                json!({"identifier": "pay", "properties": {"replicas": replicas, "language": language}}),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
        pause().await;
    }
    assert_eq!(s.delete("/v1/blueprints/service/entities/pay").await.status, StatusCode::OK);

    let h = s.get("/v1/blueprints/service/entities/pay/history").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
    let versions = h.body["versions"].as_array().expect("versions");
    let actions: Vec<&str> = versions.iter().map(|v| v["action"].as_str().expect("action")).collect();
    assert_eq!(actions, vec!["DELETE", "UPDATE", "UPDATE", "CREATE"]);
    assert_eq!(versions[1]["changed"], json!(["properties.language", "properties.replicas"]));
    assert_eq!(versions[2]["changed"], json!(["properties.replicas"]));
    assert_eq!(versions[0]["entity"], Value::Null);

    // Each version's time gives that version back; before the first and after the delete, nothing.
    for (i, want) in [(3, 1), (2, 2), (1, 3)] {
        let at = versions[i]["at"].as_str().expect("at");
        let a = s.get(&format!("/v1/blueprints/service/entities/pay?at={at}")).await;
        assert_eq!(a.status, StatusCode::OK, "at {at}: {}", a.body);
        assert_eq!(a.body["entity"]["properties"]["replicas"], json!(want), "at {at}");
    }
    s.get("/v1/blueprints/service/entities/pay?at=2000-01-01T00:00:00Z").await.assert_error(404, "not_found");
    let deleted_at = versions[0]["at"].as_str().expect("at");
    s.get(&format!("/v1/blueprints/service/entities/pay?at={deleted_at}")).await.assert_error(404, "not_found");
    s.get("/v1/blueprints/service/entities/pay?at=soon").await.assert_error(400, "bad_request");
    s.get("/v1/blueprints/service/entities/nobody/history").await.assert_error(404, "not_found");

    // Paging the history.
    let a = s.get("/v1/blueprints/service/entities/pay/history?limit=2").await;
    assert_eq!(a.body["versions"].as_array().expect("versions").len(), 2);
    let next = a.body["next"].as_str().expect("next").to_string();
    let b = s.get(&format!("/v1/blueprints/service/entities/pay/history?limit=2&cursor={next}")).await;
    let actions: Vec<&str> =
        b.body["versions"].as_array().expect("versions").iter().map(|v| v["action"].as_str().expect("a")).collect();
    assert_eq!(actions, vec!["UPDATE", "CREATE"]);

    // Properties history: one point per hour of today; the last point is after the delete (null).
    let r = s
        .post(
            "/v1/entities/properties-history",
            json!({"entityIdentifier": "pay", "blueprintIdentifier": "service", "propertyNames": ["replicas"],
                   "timeInterval": "hour", "timeRange": {"preset": "today", "timeZone": "UTC"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let data = r.body["result"]["data"].as_array().expect("data");
    assert!(!data.is_empty() && data.len() <= 24);
    assert_eq!(data.last().expect("last")["values"]["replicas"], Value::Null, "deleted by now");
    assert!(r.body["result"]["minDate"].is_string() && r.body["result"]["maxDate"].is_string());
    for (body, needle) in [
        (
            json!({"entityIdentifier": "pay", "blueprintIdentifier": "service", "timeInterval": "decade", "timeRange": {"preset": "today"}}),
            "timeInterval",
        ),
        (
            json!({"entityIdentifier": "pay", "blueprintIdentifier": "service", "timeInterval": "day", "timeRange": {"preset": "forever"}}),
            "preset",
        ),
        (
            json!({"entityIdentifier": "pay", "blueprintIdentifier": "service", "timeInterval": "day", "timeRange": {"preset": "today", "timeZone": "Atlantis"}}),
            "IANA",
        ),
        (
            json!({"entityIdentifier": "pay", "blueprintIdentifier": "service", "propertyNames": ["nope"], "timeInterval": "day", "timeRange": {"preset": "today"}}),
            "nope",
        ),
    ] {
        let a = s.post("/v1/entities/properties-history", body).await;
        a.assert_error(400, "bad_request");
        assert!(a.body["message"].as_str().unwrap_or_default().contains(needle), "{}", a.body);
    }
}

#[tokio::test]
async fn teams_are_read_by_anyone_and_changed_by_admins() {
    let s = TestServer::start().await;
    let a = s
        .post("/v1/teams", json!({"name": "Platform", "description": "Paved roads", "members": ["ana@example.com"]}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["team"]["name"], "Platform");
    assert!(a.body["team"]["createdAt"].is_string());
    s.post("/v1/teams", json!({"name": "Platform"})).await.assert_error(409, "conflict");
    for bad in [
        json!({"name": " padded"}),
        json!({"name": ""}),
        json!({"description": "no name"}),
        json!({"name": "x", "members": [""]}),
    ] {
        let a = s.post("/v1/teams", bad.clone()).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", a.body);
    }
    // PATCH keeps what it does not name; PUT replaces.
    let a = s.patch("/v1/teams/Platform", json!({"members": ["ana@example.com", "bo@example.com"]})).await;
    assert_eq!(a.body["team"]["description"], "Paved roads");
    assert_eq!(a.body["team"]["members"].as_array().expect("members").len(), 2);
    let a = s.put("/v1/teams/Platform", json!({"description": "Golden paths"})).await;
    assert_eq!(a.body["team"]["members"], json!([]));
    assert_eq!(a.body["team"]["description"], "Golden paths");
    s.put("/v1/teams/Ghost", json!({})).await.assert_error(404, "not_found");

    // Port's shape: `users` on write (emails), `users` with names and status on read, `id` and `provider`.
    let invite = s.post("/v1/users/invite", json!({"invitee": {"email": "cy@example.com", "firstName": "Cy"}})).await;
    assert_eq!(invite.status, StatusCode::CREATED, "{}", invite.body);
    let a =
        s.post("/v1/teams", json!({"name": "Data", "users": ["cy@example.com", "berth_x"], "description": "d"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["team"]["members"], json!(["cy@example.com", "berth_x"]));
    assert_eq!(
        a.body["team"]["users"],
        json!([{"email": "cy@example.com", "firstName": "Cy", "lastName": "", "picture": null, "status": "invited"}])
    );
    assert_eq!((a.body["team"]["id"].as_str(), a.body["team"]["provider"].as_str()), (Some("Data"), Some("berth")));
    // What a client read, sent back as it is, is accepted.
    let back = json!({"name": "Data", "users": ["cy@example.com"], "id": "Data", "provider": "berth"});
    let a = s.put("/v1/teams/Data", back).await;
    assert_eq!(
        (a.status, a.body["team"]["members"].clone()),
        (StatusCode::OK, json!(["cy@example.com"])),
        "{}",
        a.body
    );
    s.patch("/v1/teams/Data", json!({"users": ["a@x.io"], "members": ["b@x.io"]}))
        .await
        .assert_error(422, "invalid_request");
    let listed = s.get("/v1/teams").await;
    assert!(listed.body["teams"].as_array().expect("teams").iter().all(|t| t["users"].is_array()), "{}", listed.body);

    // A Member reads, but may not change.
    let app = s.post("/v1/apps", json!({"name": "reader"})).await;
    let member = token(
        &s,
        app.body["app"]["clientId"].as_str().expect("id"),
        app.body["app"]["clientSecret"].as_str().expect("s"),
    )
    .await;
    let (status, body) = call_as(&s, &member, Method::GET, "/v1/teams", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["teams"].as_array().expect("teams").iter().any(|t| t["name"] == "Platform"), "{body}");
    let (status, _) = call_as(&s, &member, Method::GET, "/v1/teams/Platform", None).await;
    assert_eq!(status, StatusCode::OK);
    for (method, path) in
        [(Method::POST, "/v1/teams"), (Method::PATCH, "/v1/teams/Platform"), (Method::DELETE, "/v1/teams/Platform")]
    {
        let (status, _) = call_as(&s, &member, method.clone(), path, Some(json!({"garbage": true}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }

    // Changes are audited with their diff; delete.
    let audit = s.get("/v1/audit-log?resources=team&status=SUCCESS&identifier=Platform").await;
    let actions: Vec<&str> =
        audit.body["audits"].as_array().expect("audits").iter().map(|r| r["action"].as_str().expect("a")).collect();
    assert_eq!(actions, vec!["UPDATE", "UPDATE", "CREATE"]);
    assert_eq!(s.delete("/v1/teams/Platform").await.status, StatusCode::OK);
    s.get("/v1/teams/Platform").await.assert_error(404, "not_found");

    // Teams survive a restart (log and snapshot).
    s.post("/v1/teams", json!({"name": "Edge"})).await;
    let (dir, data_dir) = s.stop().await;
    let s = TestServer::start_in(data_dir, false).await;
    assert_eq!(s.get("/v1/teams/Edge").await.status, StatusCode::OK);
    drop(dir);
}

#[tokio::test]
async fn team_given_as_a_search_query_on_writes() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    s.post("/v1/teams", json!({"name": "Platform", "description": "Paved roads"})).await;
    s.post("/v1/teams", json!({"name": "Edge"})).await;
    let q = |rules: Value| json!({"combinator": "and", "rules": rules});
    let a = s
        .post(
            "/v1/blueprints/service/entities",
            json!({"identifier": "api", "team": q(json!([{"property": "$identifier", "operator": "=", "value": "Platform"}]))}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["entity"]["team"], json!(["Platform"]));
    let a = s
        .post(
            "/v1/blueprints/service/entities?upsert=true&merge=true",
            json!({"identifier": "api", "team": {"combinator": "or", "rules": [
                {"property": "description", "operator": "contains", "value": "roads"},
                {"property": "$title", "operator": "=", "value": "Edge"}]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["entity"]["team"], json!(["Edge", "Platform"]));
    let a = s
        .post(
            "/v1/blueprints/service/entities?upsert=true",
            json!({"identifier": "api", "team": q(json!([{"property": "$identifier", "operator": "=", "value": "Nobody"}]))}),
        )
        .await;
    a.assert_error(422, "invalid_request");
    assert!(a.body["message"].as_str().unwrap_or_default().contains("matches no team"));
    let a = s
        .post(
            "/v1/blueprints/service/entities?upsert=true",
            json!({"identifier": "api", "team": {"combinator": "xor", "rules": []}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(a.body["message"].as_str().unwrap_or_default().contains("`team` search query"), "{}", a.body);
}
