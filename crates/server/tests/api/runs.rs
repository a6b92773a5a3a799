//! Action runs over the API: inputs checked (each bad one named), permissions to execute, runs on entities
//! (condition, visibility), PATCH and logs until the run ends and then frozen, entities tied to a running run
//! only, approvals ANY and ALL, who reads a run, organisation secrets never shown, encrypted inputs never in
//! the clear in any answer or event.

use axum::http::StatusCode;
use berth_testkit::server::{TestServer, app_token};
use reqwest::Method;
use serde_json::json;

use crate::permissions::call;

async fn catalog() -> TestServer {
    // Runs are not sent here (their backends do not exist): `invocations` tests sending them.
    let s = TestServer::start_with(|c| c.deliver = false).await;
    for body in [json!({"identifier": "service", "title": "Service", "schema": {"properties": {
            "lifecycle": {"type": "string", "enum": ["prod", "dev"]}}}})]
    {
        let a = s.post("/v1/blueprints", body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    assert_eq!(s.post("/v1/teams", json!({"name": "core"})).await.status, StatusCode::CREATED);
    for (id, life, team) in [("pay", "prod", "core"), ("scratch", "dev", "core"), ("other", "prod", "none")] {
        let team = if team == "none" { json!([]) } else { json!([team]) };
        let a = s
            .post(
                "/v1/blueprints/service/entities",
                json!({"identifier": id, "properties": {"lifecycle": life}, "team": team}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let actions = [
        json!({"identifier": "scaffold", "title": "Scaffold",
            "trigger": {"type": "self-service", "operation": "CREATE", "blueprintIdentifier": "service",
                "userInputs": {"properties": {
                    "name": {"type": "string", "pattern": "^[a-z-]+$"},
                    "lang": {"type": "string", "enum": ["go", "rust"], "default": "rust"},
                    "replicas": {"type": "number", "minimum": 1, "maximum": 5},
                    "goVersion": {"type": "string", "visible": {"jqQuery": ".form.lang == \"go\""}},
                    "owner": {"type": "string", "format": "team"},
                    "token": {"type": "string", "encryption": "aes256-gcm", "minLength": 4}},
                    "required": ["name"]}},
            "invocationMethod": {"type": "WEBHOOK", "url": "https://ci.example.com/hook"}}),
        json!({"identifier": "restart", "title": "Restart",
            "trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "service",
                "condition": {"type": "SEARCH", "combinator": "and",
                    "rules": [{"property": "lifecycle", "operator": "=", "value": "prod"}]},
                "userInputs": {"properties": {"why": {"type": "string"}}}},
            "invocationMethod": {"type": "WEBHOOK", "url": "https://ci.example.com/hook"},
            "requiredApproval": {"type": "ANY"}}),
        json!({"identifier": "teardown", "title": "Teardown",
            "trigger": {"type": "self-service", "operation": "DELETE", "blueprintIdentifier": "service"},
            "invocationMethod": {"type": "WEBHOOK", "url": "https://ci.example.com/hook"},
            "requiredApproval": {"type": "ALL"}, "allowAnyoneToViewRuns": false}),
        json!({"identifier": "on-create",
            "trigger": {"type": "automation", "event": {"type": "ENTITY_CREATED", "blueprintIdentifier": "service"}},
            "invocationMethod": {"type": "WEBHOOK", "url": "https://ci.example.com/hook"}}),
    ];
    for a in actions {
        let r = s.post("/v1/actions", a).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    s
}

#[tokio::test]
async fn a_run_checks_its_inputs_starts_in_progress_and_ends_once() {
    let s = catalog().await;
    // Every bad input is named in one 422.
    let a = s
        .post(
            "/v1/actions/scaffold/runs",
            json!({"properties": {"name": "Bad Name", "lang": "java", "replicas": 9, "owner": "ghosts", "extra": 1}}),
        )
        .await;
    a.assert_error(422, "invalid_request");
    let m = a.body["message"].as_str().expect("message");
    for named in ["`name`", "`lang`", "`replicas`", "`owner`", "`extra`"] {
        assert!(m.contains(named), "{named} in {m}");
    }
    s.post("/v1/actions/scaffold/runs", json!({"properties": {}})).await.assert_error(422, "invalid_request");
    s.post("/v1/actions/nope/runs", json!({"properties": {}})).await.assert_error(404, "not_found");
    s.post("/v1/actions/on-create/runs", json!({"properties": {}})).await.assert_error(422, "invalid_request");
    s.post("/v1/actions/scaffold/runs", json!({"properties": {"name": "x"}, "entity": "pay"}))
        .await
        .assert_error(422, "invalid_request");
    s.post("/v1/actions/scaffold/runs", json!({"inputs": {}})).await.assert_error(422, "invalid_request");

    // A good run: defaults filled, a hidden input dropped, the secret input sealed.
    let a = s
        .post(
            "/v1/actions/scaffold/runs",
            json!({"properties": {"name": "pay-api", "goVersion": "1.22", "owner": "core", "token": "tok-SECRET-1"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let run = a.body["run"].clone();
    let id = run["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("r_") && id.len() == 18, "{id}");
    assert_eq!(run["status"], "IN_PROGRESS");
    assert_eq!(run["properties"]["lang"], "rust", "the default");
    assert!(run["properties"].get("goVersion").is_none(), "hidden unless lang is go: {run}");
    assert_eq!(run["action"]["identifier"], "scaffold");
    assert_eq!(run["source"], "API");
    assert_eq!(run["pendingExecution"], true);
    assert!(run["properties"]["token"]["sealed"].is_string(), "{run}");
    let short = s.post("/v1/actions/scaffold/runs", json!({"properties": {"name": "a", "token": "x"}})).await;
    short.assert_error(422, "invalid_request");
    assert!(short.body["message"].as_str().expect("m").contains("token"), "{}", short.body);

    // Updates overwrite; a log with terminationStatus ends it, once; then it is frozen.
    let a = s
        .patch(
            &format!("/v1/actions/runs/{id}"),
            json!({"statusLabel": "Building", "link": ["https://ci/1", "https://ci/2"], "externalRunId": "gha-9"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["run"]["link"], json!(["https://ci/1", "https://ci/2"]));
    assert_eq!(a.body["run"]["status"], "IN_PROGRESS", "a label alone keeps it running");
    let a = s.post(&format!("/v1/actions/runs/{id}/logs"), json!({"message": "step 1"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["runLog"]["message"], "step 1");
    assert_eq!(a.body["runLog"]["runId"], id.as_str());
    // Entities tie to the run while it runs.
    let a = s
        .post(&format!("/v1/blueprints/service/entities?upsert=true&run_id={id}"), json!({"identifier": "pay-api"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = s
        .post(
            &format!("/v1/actions/runs/{id}/logs"),
            json!({"message": "done", "terminationStatus": "SUCCESS", "statusLabel": "Deployed"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = s.get(&format!("/v1/actions/runs/{id}")).await;
    assert_eq!(a.body["run"]["status"], "SUCCESS");
    assert_eq!(a.body["run"]["statusLabel"], "Deployed");
    assert!(a.body["run"]["endedAt"].is_string());
    s.post(&format!("/v1/actions/runs/{id}/logs"), json!({"message": "again", "terminationStatus": "FAILURE"}))
        .await
        .assert_error(422, "invalid_request");
    s.patch(&format!("/v1/actions/runs/{id}"), json!({"status": "FAILURE"})).await.assert_error(422, "invalid_request");
    s.post(&format!("/v1/blueprints/service/entities?upsert=true&run_id={id}"), json!({"identifier": "late"}))
        .await
        .assert_error(422, "invalid_request");
    let logs = s.get(&format!("/v1/actions/runs/{id}/logs")).await;
    assert_eq!(logs.status, StatusCode::OK);
    let messages: Vec<&str> =
        logs.body["runLogs"].as_array().expect("logs").iter().filter_map(|l| l["message"].as_str()).collect();
    assert_eq!(messages, ["step 1", "done"]);
    assert_eq!(
        s.get(&format!("/v1/actions/runs/{id}/logs?limit=1&offset=1")).await.body["runLogs"][0]["message"],
        "done"
    );
    s.get(&format!("/v1/actions/runs/{id}/logs?limit=51")).await.assert_error(400, "bad_request");

    // Listed with filters; the clear token is nowhere: not in answers, nor in the event feed.
    let list = s.get("/v1/actions/runs?action=scaffold&active=false").await;
    assert_eq!(list.body["runs"].as_array().map(Vec::len), Some(1), "{}", list.body);
    assert_eq!(s.get("/v1/actions/runs?external_run_id=gha-9").await.body["runs"][0]["id"], id.as_str());
    assert_eq!(s.get("/v1/actions/runs?active=true").await.body["runs"], json!([]));
    s.get("/v1/actions/runs?source=CLI").await.assert_error(400, "bad_request");
    let feed = s.get("/v1/events?limit=1000").await;
    assert_eq!(feed.status, StatusCode::OK, "{}", feed.body);
    assert!(feed.body.to_string().contains(&id), "runs are events");
    for text in [feed.body.to_string(), list.body.to_string(), s.get("/v1/audit-log").await.body.to_string()] {
        assert!(!text.contains("tok-SECRET-1"), "the encrypted input leaked");
    }
}

#[tokio::test]
async fn who_may_run_an_action_and_read_its_runs() {
    let s = catalog().await;
    let dev = app_token(&s, "dev", &["Member"], &["core"]).await;
    let outsider = app_token(&s, "outsider", &["Member"], &[]).await;
    let body = json!({"properties": {"name": "svc"}});
    // Admins only by default.
    let (status, _) = call(&s, &dev, Method::POST, "/v1/actions/scaffold/runs", Some(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, perms) = call(&s, &dev, Method::GET, "/v1/actions/scaffold/permissions", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(perms["permissions"]["execute"]["roles"], json!(["Admin"]));
    let (status, _) = call(
        &s,
        &dev,
        Method::PATCH,
        "/v1/actions/scaffold/permissions",
        Some(json!({"execute": {"roles": ["Member"]}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "Admins change permissions");
    for (action, patch) in
        [("scaffold", json!({"execute": {"teams": ["core"]}})), ("restart", json!({"execute": {"ownedByTeam": true}}))]
    {
        let a = s.patch(&format!("/v1/actions/{action}/permissions"), patch).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    s.patch("/v1/actions/scaffold/permissions", json!({"execute": {"who": 1}}))
        .await
        .assert_error(422, "invalid_request");
    s.patch("/v1/actions/nope/permissions", json!({})).await.assert_error(404, "not_found");

    let (status, made) = call(&s, &dev, Method::POST, "/v1/actions/scaffold/runs", Some(body.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{made}");
    let id = made["run"]["id"].as_str().expect("id").to_string();
    let (status, _) = call(&s, &outsider, Method::POST, "/v1/actions/scaffold/runs", Some(body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not in the team");
    // DAY-2 by owners: only on entities of their team, where the condition holds.
    let day2 = |entity: &str| json!({"properties": {"why": "stuck"}, "entity": entity});
    let (status, b) = call(&s, &dev, Method::POST, "/v1/actions/restart/runs", Some(day2("pay"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["run"]["status"], "WAITING_FOR_APPROVAL");
    assert_eq!(b["run"]["entity"]["identifier"], "pay");
    let (status, _) = call(&s, &dev, Method::POST, "/v1/actions/restart/runs", Some(day2("other"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not its team's");
    let (status, b) = call(&s, &dev, Method::POST, "/v1/actions/restart/runs", Some(day2("scratch"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the condition does not hold: {b}");
    let (status, _) = call(&s, &dev, Method::POST, "/v1/actions/restart/runs", Some(day2("ghost"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&s, &dev, Method::POST, "/v1/actions/restart/runs", Some(json!({"properties": {}}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "DAY-2 needs an entity");

    // The creator updates its run; another Member reads it (anyone may view runs) but may not change it.
    let (status, _) =
        call(&s, &dev, Method::PATCH, &format!("/v1/actions/runs/{id}"), Some(json!({"summary": "ok"}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&s, &outsider, Method::GET, &format!("/v1/actions/runs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        call(&s, &outsider, Method::PATCH, &format!("/v1/actions/runs/{id}"), Some(json!({"summary": "x"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Teardown's runs are for their creator and Admins only: the same 404 as a missing run.
    let a = s.post("/v1/actions/teardown/runs", json!({"properties": {}, "entity": "scratch"})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let hidden = a.body["run"]["id"].as_str().expect("id").to_string();
    let (status, _) = call(&s, &dev, Method::GET, &format!("/v1/actions/runs/{hidden}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&s, &dev, Method::GET, "/v1/actions/runs/r_AAAAAAAAAAAAAAAA", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = call(&s, &dev, Method::GET, "/v1/actions/runs", None).await;
    assert!(!listed.to_string().contains(&hidden), "{listed}");
    // A policy decides alone: its queries run over the catalog with the run's data, its conditions judge them.
    let policy = json!({"execute": {"policy": {
        "queries": {"target": {"combinator": "and", "rules": [
            {"property": "$blueprint", "operator": "=", "value": "service"},
            {"property": "$identifier", "operator": "=", "value": "{{ .entity.identifier }}"},
            {"property": "lifecycle", "operator": "=", "value": "prod"}]}},
        "conditions": [".queries.target | length == 1", ".inputs.why != \"because\""]}}});
    let a = s.patch("/v1/actions/restart/permissions", policy).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let (status, b) = call(&s, &outsider, Method::POST, "/v1/actions/restart/runs", Some(day2("other"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the policy lets anyone run it on a prod service: {b}");
    let (status, _) = call(
        &s,
        &outsider,
        Method::POST,
        "/v1/actions/restart/runs",
        Some(json!({"properties": {"why": "because"}, "entity": "other"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a condition does not hold");
    s.patch(
        "/v1/actions/restart/permissions",
        json!({"execute": {"policy": {"queries": {"q": {}}, "conditions": ["(("]}}}),
    )
    .await
    .assert_error(422, "invalid_request");

    // run_as: Admins only, for users that exist.
    s.post("/v1/actions/scaffold/runs?run_as=nobody@x.io", json!({"properties": {"name": "a"}}))
        .await
        .assert_error(422, "invalid_request");
    let (status, _) = call(
        &s,
        &dev,
        Method::POST,
        "/v1/actions/scaffold/runs?run_as=a@x.io",
        Some(json!({"properties": {"name": "a"}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn approvals_any_and_all() {
    let s = catalog().await;
    let a1 = s.post("/v1/apps", json!({"name": "approver-1", "roles": ["Member"]})).await;
    let a2 = s.post("/v1/apps", json!({"name": "approver-2", "roles": ["Member"]})).await;
    let id1 = a1.body["app"]["clientId"].as_str().expect("id").to_string();
    let id2 = a2.body["app"]["clientId"].as_str().expect("id").to_string();
    let t1 = s.token_for(&id1, a1.body["app"]["clientSecret"].as_str().expect("s")).await;
    let t2 = s.token_for(&id2, a2.body["app"]["clientSecret"].as_str().expect("s")).await;
    let stranger = app_token(&s, "stranger", &["Member"], &[]).await;
    for action in ["restart", "teardown"] {
        let a = s
            .patch(&format!("/v1/actions/{action}/permissions"), json!({"approve": {"users": [id1, id2], "roles": []}}))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let approval = |status: &str| json!({"status": status});
    // ANY: one approval starts it.
    let run = s.post("/v1/actions/restart/runs", json!({"properties": {}, "entity": "pay"})).await;
    let any = run.body["run"]["id"].as_str().expect("id").to_string();
    s.patch(&format!("/v1/actions/runs/{any}"), json!({"status": "SUCCESS"}))
        .await
        .assert_error(422, "invalid_request");
    let (status, _) =
        call(&s, &stranger, Method::PATCH, &format!("/v1/actions/runs/{any}/approval"), Some(approval("APPROVE")))
            .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not an approver");
    let (status, b) =
        call(&s, &t1, Method::PATCH, &format!("/v1/actions/runs/{any}/approval"), Some(approval("APPROVE"))).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(b["run"]["status"], "IN_PROGRESS");
    assert_eq!(b["run"]["approval"]["state"], "APPROVED");
    assert_eq!(b["run"]["pendingExecution"], true);
    let (status, _) =
        call(&s, &t2, Method::PATCH, &format!("/v1/actions/runs/{any}/approval"), Some(approval("APPROVE"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no longer waits");

    // ALL: the first approval keeps it waiting, a second vote by the same approver is a conflict, the
    // last approval starts it.
    let run = s.post("/v1/actions/teardown/runs", json!({"properties": {}, "entity": "scratch"})).await;
    let all = run.body["run"]["id"].as_str().expect("id").to_string();
    let path = format!("/v1/actions/runs/{all}/approval");
    let (status, b) = call(&s, &t1, Method::PATCH, &path, Some(approval("APPROVE"))).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(b["run"]["status"], "WAITING_FOR_APPROVAL");
    let (status, _) = call(&s, &t1, Method::PATCH, &path, Some(approval("APPROVE"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let approvers = s.get(&format!("/v1/actions/runs/{all}/approvers")).await;
    let states: Vec<&str> =
        approvers.body["approvers"].as_array().expect("list").iter().filter_map(|a| a["status"].as_str()).collect();
    assert_eq!(states, ["APPROVED", "PENDING"], "{}", approvers.body);
    let (status, b) = call(&s, &t2, Method::PATCH, &path, Some(approval("APPROVE"))).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(b["run"]["status"], "IN_PROGRESS");

    // A decline ends a run.
    let run = s.post("/v1/actions/teardown/runs", json!({"properties": {}, "entity": "scratch"})).await;
    let declined = run.body["run"]["id"].as_str().expect("id").to_string();
    let (status, b) = call(
        &s,
        &t2,
        Method::PATCH,
        &format!("/v1/actions/runs/{declined}/approval"),
        Some(json!({"status": "DECLINE", "description": "not today"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(b["run"]["status"], "FAILURE");
    assert_eq!(b["run"]["approval"]["state"], "DECLINED");
    s.patch(&format!("/v1/actions/runs/{declined}/approval"), json!({"status": "MAYBE"}))
        .await
        .assert_error(422, "invalid_request");
}

#[tokio::test]
async fn organisation_secrets_are_admin_only_and_never_shown() {
    let s = catalog().await;
    let a = s
        .post(
            "/v1/organization/secrets",
            json!({"secretName": "GH_TOKEN", "secretValue": "ghp-SECRET-9", "description": "ci"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["secret"]["secretName"], "GH_TOKEN");
    s.post("/v1/organization/secrets", json!({"secretName": "GH_TOKEN", "secretValue": "x"}))
        .await
        .assert_error(409, "conflict");
    s.post("/v1/organization/secrets", json!({"secretName": "bad name", "secretValue": "x"}))
        .await
        .assert_error(422, "invalid_request");
    let a = s.patch("/v1/organization/secrets/GH_TOKEN", json!({"secretValue": "ghp-SECRET-10"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["secret"]["description"], "ci", "kept");
    let member = app_token(&s, "dev", &["Member"], &[]).await;
    let (status, _) = call(&s, &member, Method::GET, "/v1/organization/secrets", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut seen = String::new();
    for path in
        ["/v1/organization/secrets", "/v1/organization/secrets/GH_TOKEN", "/v1/events?limit=1000", "/v1/audit-log"]
    {
        let a = s.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        seen.push_str(&a.body.to_string());
    }
    assert!(!seen.contains("ghp-SECRET") && !seen.contains("sealed"), "{seen}");
    assert_eq!(s.delete("/v1/organization/secrets/GH_TOKEN").await.status, StatusCode::OK);
    s.get("/v1/organization/secrets/GH_TOKEN").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn a_run_keeps_a_bounded_log() {
    let s = catalog().await;
    let a = s.post("/v1/actions/scaffold/runs", json!({"properties": {"name": "pay"}})).await;
    let id = a.body["run"]["id"].as_str().expect("id").to_string();
    let line = "x".repeat(berth_model::run::MAX_LONG_TEXT);
    let fits = (berth_model::run::MAX_LOG_BYTES / line.len() as u64) as usize;
    for _ in 0..fits {
        let a = s.post(&format!("/v1/actions/runs/{id}/logs"), json!({"message": line})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let full = s.post(&format!("/v1/actions/runs/{id}/logs"), json!({"message": "one more"})).await;
    full.assert_error(422, "invalid_request");
    assert!(full.body["message"].as_str().expect("m").contains("at most"), "{}", full.body);
    s.post(&format!("/v1/actions/runs/{id}/logs"), json!({"message": "y".repeat(berth_model::run::MAX_LONG_TEXT + 1)}))
        .await
        .assert_error(422, "invalid_request");
    // The run still ends (a status needs no log).
    let a = s.patch(&format!("/v1/actions/runs/{id}"), json!({"status": "SUCCESS"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}
