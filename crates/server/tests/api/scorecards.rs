//! Scorecards, in Port's shapes: CRUD (with PUT of a bare array, atomic), each entity's results on reads,
//! current after every write, the level hierarchy, filters, Admin-only changes, and a blueprint's scorecards
//! going with it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;

fn ownership() -> Value {
    json!({"identifier": "ownership", "title": "Ownership", "rules": [
        {"identifier": "has-team", "title": "Has a team", "level": "Bronze",
         "query": {"combinator": "and", "conditions": [{"property": "$team", "operator": "isNotEmpty"}]}},
        {"identifier": "go", "title": "Written in Go", "level": "Silver",
         "query": {"combinator": "and", "conditions": [{"property": "language", "operator": "=", "value": "go"}]}},
        {"identifier": "replicated", "title": "Three replicas", "level": "Gold",
         "query": {"combinator": "and", "conditions": [{"property": "replicas", "operator": ">=", "value": 3}]}}]})
}

async fn level(s: &TestServer, id: &str) -> Value {
    let a = s.get(&format!("/v1/blueprints/service/entities/{id}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["entity"]["scorecards"]["ownership"]["level"].clone()
}

#[tokio::test]
async fn scorecards_judge_every_entity_on_every_read() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    for t in ["A"] {
        assert_eq!(s.post("/v1/teams", json!({"name": t})).await.status, StatusCode::CREATED);
    }
    for body in [
        json!({"identifier": "gold", "team": ["A"], "properties": {"language": "go", "replicas": 5}}),
        json!({"identifier": "bronze", "team": ["A"], "properties": {"language": "rust", "replicas": 5}}),
        json!({"identifier": "basic", "properties": {"language": "go", "replicas": 5}}),
    ] {
        assert_eq!(s.post("/v1/blueprints/service/entities", body).await.status, StatusCode::CREATED);
    }
    // Before any scorecard, entities carry none.
    let a = s.get("/v1/blueprints/service/entities/gold").await;
    assert!(a.body["entity"].get("scorecards").is_none(), "{}", a.body);

    let a = s.post("/v1/blueprints/service/scorecards", ownership()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let card = &a.body["scorecard"];
    assert_eq!((card["identifier"].as_str(), card["blueprint"].as_str()), (Some("ownership"), Some("service")));
    assert_eq!(card["levels"][0], json!({"title": "Basic", "color": "paleBlue"}), "Port's default levels");
    s.post("/v1/blueprints/service/scorecards", ownership()).await.assert_error(409, "conflict");

    // The level hierarchy: Gold needs every rule; a failed Silver rule stops at Bronze; no team stays Basic.
    assert_eq!(level(&s, "gold").await, json!("Gold"));
    assert_eq!(level(&s, "bronze").await, json!("Bronze"));
    assert_eq!(level(&s, "basic").await, json!("Basic"), "Silver and Gold rules pass, but Bronze's does not");
    let a = s.get("/v1/blueprints/service/entities/bronze").await;
    assert_eq!(
        a.body["entity"]["scorecards"]["ownership"]["rules"],
        json!([{"identifier": "has-team", "status": "SUCCESS", "level": "Bronze"},
               {"identifier": "go", "status": "FAILURE", "level": "Silver"},
               {"identifier": "replicated", "status": "SUCCESS", "level": "Gold"}])
    );
    // Current after a write, and in searches and lists.
    let a = s.patch("/v1/blueprints/service/entities/bronze", json!({"properties": {"language": "go"}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["entity"]["scorecards"]["ownership"]["level"], json!("Gold"), "the write's answer carries them");
    assert_eq!(level(&s, "bronze").await, json!("Gold"));
    let found =
        s.post("/v1/blueprints/service/entities/search", json!({"query": {"combinator": "and", "rules": []}})).await;
    let levels: Vec<Value> = found.body["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| e["scorecards"]["ownership"]["level"].clone())
        .collect();
    assert_eq!(levels, vec![json!("Basic"), json!("Gold"), json!("Gold")], "{}", found.body);
    let listed = s.get("/v1/blueprints/service/entities").await;
    assert!(
        listed.body["entities"].as_array().expect("entities").iter().all(|e| e["scorecards"]["ownership"].is_object())
    );
    // Searchable and countable by level and by rule status (Port's scorecard rules, countValues).
    let by_level = |op: &str, value: Value| json!({"query": {"combinator": "and", "rules": [{"scorecard": "ownership", "operator": op, "value": value}]}});
    let gold = s.post("/v1/blueprints/service/entities/search", by_level("=", json!("Gold"))).await;
    let ids: Vec<&str> = gold.body["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| e["identifier"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, vec!["bronze", "gold"], "{}", gold.body);
    let not_gold = s.post("/v1/blueprints/service/entities/search", by_level("notIn", json!(["Gold", "Silver"]))).await;
    assert_eq!(not_gold.body["entities"].as_array().map(Vec::len), Some(1));
    let failing = json!({"query": {"combinator": "and", "rules": [{"scorecard": "ownership", "scorecardRule": "has-team", "operator": "=", "value": "FAILURE"}]}});
    let failing = s.post("/v1/blueprints/service/entities/search", failing).await;
    assert_eq!(failing.body["entities"][0]["identifier"], json!("basic"), "{}", failing.body);
    let every =
        json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"}]});
    let facets = s
        .post("/v1/entities/aggregate", json!({"func": "countValues", "scorecard": "ownership", "query": every}))
        .await;
    assert_eq!(facets.status, StatusCode::OK, "{}", facets.body);
    assert_eq!(facets.body["result"], json!({"Basic": 1, "Gold": 2}));
    let by_rule = s
        .post(
            "/v1/entities/aggregate",
            json!({"func": "countValues", "scorecard": "ownership", "rule": "has-team", "query": every}),
        )
        .await;
    assert_eq!(by_rule.body["result"], json!({"FAILURE": 1, "SUCCESS": 2}));
    // Over time (Berth extension): every day of the range, today's distribution the current one, per team;
    // past days (before the catalog existed) empty.
    let h = s.get("/v1/blueprints/service/scorecards/ownership/history?days=3").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
    assert_eq!(h.body["levels"], json!(["Basic", "Bronze", "Silver", "Gold"]));
    let days = h.body["days"].as_array().expect("days");
    assert_eq!(days.len(), 3, "{}", h.body);
    assert_eq!(days[2]["levels"], json!({"Basic": 1, "Bronze": 0, "Gold": 2, "Silver": 0}), "{}", h.body);
    assert_eq!(days[2]["teams"]["A"]["Gold"], json!(2), "{}", h.body);
    assert_eq!(days[0]["levels"]["Gold"], json!(0), "{}", h.body);
    for bad in ["0", "91", "x", "-1"] {
        s.get(&format!("/v1/blueprints/service/scorecards/ownership/history?days={bad}"))
            .await
            .assert_error(400, "bad_request");
    }
    s.get("/v1/blueprints/service/scorecards/nosuch/history").await.assert_error(404, "not_found");
    let past = s.get("/v1/blueprints/service/entities/gold?at=2999-01-01T00:00:00Z").await;
    assert_eq!(past.status, StatusCode::OK, "{}", past.body);
    assert!(past.body["entity"].get("scorecards").is_none(), "a version read with ?at= carries no judgement of today");
    let picked = s.get("/v1/blueprints/service/entities/gold?include=identifier").await;
    assert!(picked.body["entity"].get("scorecards").is_none(), "a projection without it leaves it out");

    // Read, list, change: PATCH replaces top-level keys; a filter limits the entities judged.
    assert_eq!(
        s.get("/v1/blueprints/service/scorecards/ownership").await.body["scorecard"]["title"],
        json!("Ownership")
    );
    let a = s.patch("/v1/blueprints/service/scorecards/ownership", json!({"title": "Owned", "filter": {"combinator": "and", "conditions": [{"property": "$team", "operator": "isNotEmpty"}]}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["scorecard"]["rules"].as_array().map(Vec::len), Some(3), "rules kept");
    let basic = s.get("/v1/blueprints/service/entities/basic").await;
    assert!(basic.body["entity"].get("scorecards").is_none(), "filtered out: {}", basic.body);
    assert_eq!(s.get("/v1/scorecards").await.body["scorecards"].as_array().map(Vec::len), Some(1));

    // Bad scorecards are refused and change nothing.
    for (bad, status, code) in [
        (
            json!({"identifier": "x", "title": "X", "rules": [{"identifier": "r", "title": "R", "level": "Basic", "query": {"combinator": "and", "conditions": []}}]}),
            422,
            "invalid_request",
        ),
        (
            json!({"identifier": "x", "title": "X", "rules": [{"identifier": "r", "title": "R", "level": "Gold", "query": {"combinator": "and", "conditions": [{"property": "nope", "operator": "=", "value": 1}]}}]}),
            422,
            "invalid_request",
        ),
        (
            json!({"identifier": "x", "title": "X", "rules": [{"identifier": "r", "title": "R", "level": "Platinum", "query": {"combinator": "and", "conditions": []}}]}),
            422,
            "invalid_request",
        ),
        (json!({"title": "X"}), 422, "invalid_request"),
        (json!({"identifier": "bad id!", "title": "X"}), 422, "invalid_identifier"),
    ] {
        s.post("/v1/blueprints/service/scorecards", bad).await.assert_error(status, code);
    }
    s.post("/v1/blueprints/nope/scorecards", ownership()).await.assert_error(404, "not_found");

    // PUT of a bare array: all of it, or nothing.
    let speed = json!({"identifier": "speed", "title": "Speed", "rules": []});
    let bad = json!({"identifier": "broken", "title": "", "rules": []});
    s.put("/v1/blueprints/service/scorecards", json!([speed.clone(), bad])).await.assert_error(422, "invalid_request");
    assert_eq!(s.get("/v1/scorecards").await.body["scorecards"].as_array().map(Vec::len), Some(1), "nothing changed");
    let a = s.put("/v1/blueprints/service/scorecards", json!([speed])).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let ids: Vec<&str> =
        a.body["scorecards"].as_array().expect("cards").iter().map(|c| c["identifier"].as_str().expect("id")).collect();
    assert_eq!(ids, vec!["speed"], "the others are deleted");
    s.get("/v1/blueprints/service/scorecards/ownership").await.assert_error(404, "not_found");
    // A blueprint holds at most 100 scorecards.
    let many: Vec<Value> = (0..101).map(|i| json!({"identifier": format!("c{i}"), "title": "C"})).collect();
    s.put("/v1/blueprints/service/scorecards", Value::Array(many)).await.assert_error(422, "invalid_request");
    assert_eq!(level_of_speed(&s).await, json!("Gold"), "a level without rules is reached with the one below it");
    assert_eq!(s.delete("/v1/blueprints/service/scorecards/speed").await.status, StatusCode::OK);
    s.delete("/v1/blueprints/service/scorecards/speed").await.assert_error(404, "not_found");

    // A blueprint's scorecards go with it.
    assert_eq!(
        s.post("/v1/blueprints", json!({"identifier": "tmp", "title": "Tmp", "schema": {"properties": {}}}))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        s.post("/v1/blueprints/tmp/scorecards", json!({"identifier": "c", "title": "C"})).await.status,
        StatusCode::CREATED
    );
    assert_eq!(s.delete("/v1/blueprints/tmp").await.status, StatusCode::OK);
    assert_eq!(s.get("/v1/scorecards").await.body["scorecards"], json!([]));
}

async fn level_of_speed(s: &TestServer) -> Value {
    s.get("/v1/blueprints/service/entities/gold").await.body["entity"]["scorecards"]["speed"]["level"].clone()
}

#[tokio::test]
async fn members_read_scorecards_and_cannot_change_them() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    assert_eq!(s.post("/v1/blueprints/service/scorecards", ownership()).await.status, StatusCode::CREATED);
    let member = crate::common::app_token(&s, "member", &["Member"], &[]).await;
    let a = s.raw(Method::GET, "/v1/blueprints/service/scorecards", None, Some(&member)).await;
    assert_eq!(a.body["scorecards"].as_array().map(Vec::len), Some(1));
    for (method, path) in [
        (Method::POST, "/v1/blueprints/service/scorecards"),
        (Method::PUT, "/v1/blueprints/service/scorecards"),
        (Method::PUT, "/v1/blueprints/service/scorecards/ownership"),
        (Method::PATCH, "/v1/blueprints/service/scorecards/ownership"),
        (Method::DELETE, "/v1/blueprints/service/scorecards/ownership"),
    ] {
        s.raw(method, path, Some(b"{}".to_vec()), Some(&member)).await.assert_error(403, "forbidden");
    }
    assert_eq!(s.get("/v1/scorecards").await.body["scorecards"].as_array().map(Vec::len), Some(1));

    // A rule on another scorecard's level is allowed but judges nothing (no scorecard depends on another,
    // so no cycle can form): reading stays quick and the rule fails.
    let meta = json!({"identifier": "meta", "title": "Meta", "rules": [{"identifier": "gold", "title": "Gold",
        "level": "Bronze", "query": {"combinator": "and", "conditions": [{"scorecard": "meta", "operator": "=", "value": "Gold"}]}}]});
    assert_eq!(s.post("/v1/blueprints/service/scorecards", meta).await.status, StatusCode::CREATED);
    assert_eq!(s.post("/v1/blueprints/service/entities", json!({"identifier": "x"})).await.status, StatusCode::CREATED);
    let a = s.get("/v1/blueprints/service/entities/x").await;
    assert_eq!(a.body["entity"]["scorecards"]["meta"]["level"], json!("Basic"), "{}", a.body);
}
