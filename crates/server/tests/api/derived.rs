//! Derived data over HTTP: mirror (every path form), calculation (every type, failures) and aggregation (every
//! function, `averageOf`, `query`, `pathFilter`) properties; current after every write; searchable, sortable
//! and aggregatable like stored properties; `exclude_calculated_properties`; refused when wrong; and never
//! telling a Member what its permissions hide.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;
use crate::permissions::{app_token, call};

/// domain ← system ← service ← deployment, with derived properties on service, system and domain.
async fn catalog() -> TestServer {
    let s = TestServer::start().await;
    assert_eq!(s.post("/v1/teams", json!({"name": "core"})).await.status, StatusCode::CREATED);
    for body in [
        json!({"identifier": "domain", "title": "Domain", "schema": {"properties": {"owner": {"type": "string"}}}}),
        json!({"identifier": "system", "title": "System", "schema": {"properties": {"tier": {"type": "number"}}},
            "relations": {"domain": {"target": "domain", "many": false, "required": false}}}),
        json!({"identifier": "service", "title": "Service", "schema": {"properties": {
                "replicas": {"type": "number"}, "lang": {"type": "string"}}},
            "relations": {"system": {"target": "system", "many": false, "required": false},
                          "deps": {"target": "service", "many": true, "required": false}}}),
        json!({"identifier": "deployment", "title": "Deployment", "schema": {"properties": {
                "status": {"type": "string"}, "duration": {"type": "number"},
                "finishedAt": {"type": "string", "format": "date-time"}}},
            "relations": {"service": {"target": "service", "many": false, "required": false}}}),
    ] {
        let a = s.post("/v1/blueprints", body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let a = s
        .patch(
            "/v1/blueprints/service",
            json!({
                "mirrorProperties": {
                    "systemTitle": {"title": "System", "path": "system.$title"},
                    "systemId": {"path": "system.$identifier"},
                    "systemTeam": {"path": "system.$team"},
                    "tier": {"path": "system.tier"},
                    "domainOwner": {"path": "system.domain.owner"},
                    "domainTitle": {"path": "system.domain.$title"},
                    "depIds": {"path": "deps.$identifier"}
                },
                "aggregationProperties": {
                    "deploys": {"target": "deployment", "calculationSpec": {"func": "count", "calculationBy": "entities"}},
                    "okDeploys": {"target": "deployment", "calculationSpec": {"func": "count", "calculationBy": "entities"},
                        "query": {"combinator": "and", "rules": [{"property": "status", "operator": "=", "value": "ok"}]}},
                    "totalTime": {"target": "deployment", "calculationSpec": {"func": "sum", "calculationBy": "property", "property": "duration"}},
                    "fastest": {"target": "deployment", "calculationSpec": {"func": "min", "calculationBy": "property", "property": "duration"}},
                    "slowest": {"target": "deployment", "calculationSpec": {"func": "max", "calculationBy": "property", "property": "duration"}},
                    "medianTime": {"target": "deployment", "calculationSpec": {"func": "median", "calculationBy": "property", "property": "duration"}},
                    "meanTime": {"target": "deployment", "calculationSpec": {"func": "average", "calculationBy": "property", "property": "duration", "averageOf": "total"}},
                    "perDay": {"target": "deployment", "calculationSpec": {"func": "average", "calculationBy": "entities",
                        "averageOf": "day", "measureTimeBy": "finishedAt"}}
                },
                "calculationProperties": {
                    "link": {"type": "string", "format": "url", "calculation": "\"https://git/\" + .identifier"},
                    "capacity": {"type": "number", "calculation": ".properties.replicas * 2"},
                    "healthy": {"type": "boolean", "calculation": ".properties.okDeploys == .properties.deploys"},
                    "labels": {"type": "array", "calculation": "[.properties.lang, .properties.domainTitle]"},
                    "summary": {"type": "object", "calculation": "{system: .properties.systemTitle, n: .properties.deploys}"},
                    "wrongType": {"type": "number", "calculation": ".identifier"}
                }
            }),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = s
        .patch(
            "/v1/blueprints/domain",
            json!({"aggregationProperties": {"domainDeploys": {"target": "deployment",
                "calculationSpec": {"func": "count", "calculationBy": "entities"},
                "pathFilter": [{"fromBlueprint": "deployment", "path": ["service", "system", "domain"]}]}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for (bp, body) in [
        ("domain", json!({"identifier": "payments", "title": "Payments", "properties": {"owner": "ana"}})),
        ("domain", json!({"identifier": "search", "title": "Search", "properties": {"owner": "bo"}})),
        (
            "system",
            json!({"identifier": "billing", "title": "Billing", "team": ["core"], "properties": {"tier": 1},
            "relations": {"domain": "payments"}}),
        ),
        (
            "system",
            json!({"identifier": "index", "title": "Index", "properties": {"tier": 2}, "relations": {"domain": "search"}}),
        ),
        (
            "service",
            json!({"identifier": "db", "properties": {"replicas": 1, "lang": "go"}, "relations": {"system": "index"}}),
        ),
        ("service", json!({"identifier": "cache", "properties": {"replicas": 2}})),
        (
            "service",
            json!({"identifier": "api", "properties": {"replicas": 3, "lang": "rust"},
            "relations": {"system": "billing", "deps": ["db", "cache"]}}),
        ),
        (
            "deployment",
            json!({"identifier": "d1", "properties": {"status": "ok", "duration": 10, "finishedAt": "2026-01-01T10:00:00Z"},
            "relations": {"service": "api"}}),
        ),
        (
            "deployment",
            json!({"identifier": "d2", "properties": {"status": "ok", "duration": 30, "finishedAt": "2026-01-02T10:00:00Z"},
            "relations": {"service": "api"}}),
        ),
        (
            "deployment",
            json!({"identifier": "d3", "properties": {"status": "failed", "duration": 50, "finishedAt": "2026-01-03T10:00:00Z"},
            "relations": {"service": "api"}}),
        ),
        (
            "deployment",
            json!({"identifier": "d4", "properties": {"status": "ok", "duration": 5}, "relations": {"service": "db"}}),
        ),
    ] {
        let a = s.post(&format!("/v1/blueprints/{bp}/entities"), body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    s
}

async fn props(s: &TestServer, bp: &str, id: &str) -> Value {
    let a = s.get(&format!("/v1/blueprints/{bp}/entities/{id}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["entity"]["properties"].clone()
}

#[tokio::test]
async fn every_kind_of_derived_property_is_computed_on_reads() {
    let s = catalog().await;
    let api = props(&s, "service", "api").await;
    // Mirrors: meta-properties, a property, two hops, a `many` relation (an array).
    assert_eq!(api["systemTitle"], json!("Billing"));
    assert_eq!(api["systemId"], json!("billing"));
    assert_eq!(api["systemTeam"], json!(["core"]));
    assert_eq!(api["tier"], json!(1));
    assert_eq!(api["domainOwner"], json!("ana"));
    assert_eq!(api["domainTitle"], json!("Payments"));
    assert_eq!(api["depIds"], json!(["db", "cache"]));
    // Aggregations: every function; the query; averages per day over the measured span (3 deploys, 2 days).
    assert_eq!(api["deploys"], json!(3));
    assert_eq!(api["okDeploys"], json!(2));
    assert_eq!(api["totalTime"], json!(90));
    assert_eq!(api["fastest"], json!(10));
    assert_eq!(api["slowest"], json!(50));
    assert_eq!(api["medianTime"], json!(30));
    assert_eq!(api["meanTime"], json!(30));
    assert_eq!(api["perDay"], json!(1.5));
    // Calculations of every type, reading stored, mirror and aggregation values.
    assert_eq!(api["link"], json!("https://git/api"));
    assert_eq!(api["capacity"], json!(6));
    assert_eq!(api["healthy"], json!(false));
    assert_eq!(api["labels"], json!(["rust", "Payments"]));
    assert_eq!(api["summary"], json!({"system": "Billing", "n": 3}));
    // A calculation whose result is not its declared type is null, and says why.
    assert_eq!(api["wrongType"], Value::Null);
    let a = s.get("/v1/blueprints/service/entities/api").await;
    assert!(
        a.body["entity"]["$derivedErrors"]["wrongType"].as_str().is_some_and(|r| r.contains("not a number")),
        "{}",
        a.body
    );
    // Where a path ends early: nulls, empty arrays, zero counts.
    let cache = props(&s, "service", "cache").await;
    assert_eq!((&cache["systemTitle"], &cache["depIds"], &cache["deploys"]), (&Value::Null, &json!([]), &json!(0)));
    assert_eq!(
        (&cache["fastest"], &cache["medianTime"], &cache["meanTime"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    // A three-hop aggregation (deployment → service → system → domain).
    assert_eq!(props(&s, "domain", "payments").await["domainDeploys"], json!(3));
    assert_eq!(props(&s, "domain", "search").await["domainDeploys"], json!(1));
    // exclude_calculated_properties leaves every derived value out, stored ones stay.
    let a = s.get("/v1/blueprints/service/entities/api?exclude_calculated_properties=true").await;
    let p = &a.body["entity"]["properties"];
    assert_eq!((p["replicas"].as_i64(), p.get("deploys"), p.get("link")), (Some(3), None, None), "{}", a.body);
    // So does the paged blueprint search (what `berth copy` and Ocean read).
    let a = s
        .post("/v1/blueprints/service/entities/search?exclude_calculated_properties=true", json!({"limit": 1000}))
        .await;
    let api_row = a.body["entities"].as_array().and_then(|l| l.iter().find(|e| e["identifier"] == "api")).cloned();
    let p = api_row.map(|e| e["properties"].clone()).unwrap_or_default();
    assert_eq!((p["replicas"].as_i64(), p.get("deploys"), p.get("link")), (Some(3), None, None), "{}", a.body);
    // Lists and searches carry them too; `include` picks among them.
    let a = s.get("/v1/blueprints/service/entities?include=properties.deploys&include=identifier").await;
    let api_row = a.body["entities"].as_array().and_then(|l| l.iter().find(|e| e["identifier"] == "api")).cloned();
    assert_eq!(api_row, Some(json!({"identifier": "api", "properties": {"deploys": 3}})), "{}", a.body);
}

#[tokio::test]
async fn derived_values_are_current_after_every_write() {
    let s = catalog().await;
    // A mirrored entity changes: every mirror of it reads the new value.
    let a = s
        .patch("/v1/blueprints/domain/entities/payments", json!({"title": "Pay", "properties": {"owner": "cy"}}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let api = props(&s, "service", "api").await;
    assert_eq!(
        (&api["domainTitle"], &api["domainOwner"], &api["labels"]),
        (&json!("Pay"), &json!("cy"), &json!(["rust", "Pay"]))
    );
    // A new source, a moved source, a deleted source, a changed value: the aggregations follow.
    let a = s
        .post(
            "/v1/blueprints/deployment/entities",
            json!({"identifier": "d5", "properties": {"status": "ok", "duration": 1},
        "relations": {"service": "api"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let api = props(&s, "service", "api").await;
    assert_eq!((&api["deploys"], &api["fastest"], &api["medianTime"]), (&json!(4), &json!(1), &json!(20)));
    assert_eq!(props(&s, "domain", "payments").await["domainDeploys"], json!(4));
    let a = s.patch("/v1/blueprints/deployment/entities/d5", json!({"relations": {"service": "db"}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(props(&s, "service", "api").await["deploys"], json!(3));
    assert_eq!(props(&s, "service", "db").await["deploys"], json!(2));
    assert_eq!(props(&s, "domain", "search").await["domainDeploys"], json!(2));
    let a = s.patch("/v1/blueprints/deployment/entities/d3", json!({"properties": {"status": "ok"}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(props(&s, "service", "api").await["healthy"], json!(true));
    assert_eq!(s.delete("/v1/blueprints/deployment/entities/d1").await.status, StatusCode::OK);
    assert_eq!(props(&s, "service", "api").await["totalTime"], json!(80));
    // The write's own answer carries the written entity's derived values, current.
    let a = s.patch("/v1/blueprints/service/entities/api", json!({"properties": {"replicas": 4}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let p = &a.body["entity"]["properties"];
    assert_eq!((&p["capacity"], &p["deploys"], &p["domainTitle"]), (&json!(8), &json!(2), &json!("Pay")), "{}", a.body);
    // An intermediate entity moves: the three-hop aggregation moves with it.
    let a = s.patch("/v1/blueprints/system/entities/billing", json!({"relations": {"domain": "search"}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(props(&s, "domain", "payments").await["domainDeploys"], json!(0));
    assert_eq!(props(&s, "domain", "search").await["domainDeploys"], json!(4));
    // After a restart (replay or snapshot), the same values.
    let before = props(&s, "service", "api").await;
    let (dir, data) = s.stop().await;
    let s = TestServer::start_in(data, false).await;
    assert_eq!(props(&s, "service", "api").await, before);
    assert_eq!(props(&s, "domain", "search").await["domainDeploys"], json!(4));
    drop(dir);
}

#[tokio::test]
async fn derived_properties_are_searched_sorted_and_counted_like_stored_ones() {
    let s = catalog().await;
    let search = |rules: Value| json!({"query": {"combinator": "and", "rules": rules}});
    let ids = |body: &Value| -> Vec<String> {
        body["entities"]
            .as_array()
            .map(|l| l.iter().filter_map(|e| e["identifier"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    for (rules, want) in [
        (json!([{"property": "deploys", "operator": ">", "value": 0}]), vec!["api", "db"]),
        (json!([{"property": "domainOwner", "operator": "=", "value": "ana"}]), vec!["api"]),
        (json!([{"property": "link", "operator": "contains", "value": "cache"}]), vec!["cache"]),
        (json!([{"property": "systemTitle", "operator": "isEmpty"}]), vec!["cache"]),
    ] {
        let a = s.post("/v1/blueprints/service/entities/search", search(rules.clone())).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(ids(&a.body), want, "{rules}");
    }
    let body =
        json!({"query": {"combinator": "and", "rules": []}, "sort": [{"property": "capacity", "order": "desc"}]});
    let a = s.post("/v1/blueprints/service/entities/search", body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(ids(&a.body), vec!["api", "cache", "db"]);
    let agg = json!({"func": "countValues", "property": "domainTitle",
        "query": {"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"}]}});
    let a = s.post("/v1/entities/aggregate", agg).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["result"]["Payments"], json!(1), "{}", a.body);
    let agg = json!({"func": "sum", "property": "deploys",
        "query": {"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"}]}});
    let a = s.post("/v1/entities/aggregate", agg).await;
    assert_eq!(a.body["result"].as_f64(), Some(4.0), "{}", a.body);
}

#[tokio::test]
async fn wrong_and_hostile_definitions_are_refused_when_written() {
    let s = catalog().await;
    for (kind, def) in [
        ("calculationProperties", json!({"x": {"type": "string", "calculation": "def f: f; f"}})),
        ("calculationProperties", json!({"x": {"type": "string", "calculation": "[range(1e18)] | length"}})),
        ("calculationProperties", json!({"x": {"type": "string", "calculation": "now"}})),
        ("calculationProperties", json!({"x": {"type": "string", "calculation": ".a = 1"}})),
        ("calculationProperties", json!({"x": {"type": "string", "calculation": "(("}})),
        ("calculationProperties", json!({"x": {"type": "string", "calculation": "nosuchfn"}})),
        ("calculationProperties", json!({"x": {"type": "colour", "calculation": "1"}})),
        ("mirrorProperties", json!({"x": {"path": "nosuch.$title"}})),
        ("mirrorProperties", json!({"x": {"path": "system.nosuch"}})),
        ("aggregationProperties", json!({"x": {"target": "nosuch", "calculationSpec": {"func": "count"}}})),
        ("aggregationProperties", json!({"x": {"target": "deployment", "calculationSpec": {"func": "mode"}}})),
        (
            "aggregationProperties",
            json!({"x": {"target": "deployment", "calculationSpec": {"func": "sum", "calculationBy": "property", "property": "status"}}}),
        ),
        (
            "aggregationProperties",
            json!({"x": {"target": "deployment", "calculationSpec": {"func": "count"},
            "query": {"combinator": "and", "rules": [{"property": "$createdAt", "operator": "between", "value": {"preset": "lastWeek"}}]}}}),
        ),
        ("aggregationProperties", json!({"x": {"target": "domain", "calculationSpec": {"func": "count"}}})),
    ] {
        let a = s.patch("/v1/blueprints/service", json!({kind: def})).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{kind} {def}: {}", a.body);
        assert_eq!(a.body["ok"], json!(false));
    }
    // A data value cannot make a calculation blow up: the guard answers null with the reason.
    let a = s
        .patch(
            "/v1/blueprints/service",
            json!({"calculationProperties": {"rep": {"type": "string",
        "calculation": ".properties.lang * .properties.replicas"}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = s.patch("/v1/blueprints/service/entities/api", json!({"properties": {"replicas": 1e15}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = s.get("/v1/blueprints/service/entities/api").await;
    assert_eq!(a.body["entity"]["properties"]["rep"], Value::Null);
    assert!(a.body["entity"]["$derivedErrors"]["rep"].as_str().is_some_and(|r| r.contains("1 MiB")), "{}", a.body);
}

#[tokio::test]
async fn a_member_sees_derived_values_only_from_what_it_may_read() {
    let s = catalog().await;
    // Members read only the deployments and domains their team owns (none), and all services.
    for bp in ["deployment", "domain"] {
        let read = json!({"entities": {"read": {"roles": [], "ownedByTeam": true}}});
        let r = s.call(Method::PATCH, &format!("/v1/blueprints/{bp}/permissions"), Some(read)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let member = app_token(&s, "member", &["Member"], &["core"]).await;
    let (st, body) = call(&s, &member, Method::GET, "/v1/blueprints/service/entities/api", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let p = &body["entity"]["properties"];
    // Aggregations count only what the member may read; mirrors through a hidden entity are null.
    assert_eq!((&p["deploys"], &p["totalTime"]), (&json!(0), &json!(0)), "{body}");
    assert_eq!((&p["domainTitle"], &p["systemTitle"]), (&Value::Null, &json!("Billing")), "{body}");
    // Searching or sorting by a value derived from hidden entities is refused, not answered from them.
    for body in [
        json!({"query": {"combinator": "and", "rules": [{"property": "deploys", "operator": ">", "value": 0}]}}),
        json!({"query": {"combinator": "and", "rules": []}, "sort": [{"property": "domainOwner", "order": "asc"}]}),
    ] {
        let (st, answer) = call(&s, &member, Method::POST, "/v1/blueprints/service/entities/search", Some(body)).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{answer}");
    }
    // One derived from what the member reads wholly is searchable.
    let body = json!({"query": {"combinator": "and", "rules": [{"property": "systemTitle", "operator": "=", "value": "Billing"}]}});
    let (st, answer) = call(&s, &member, Method::POST, "/v1/blueprints/service/entities/search", Some(body)).await;
    assert_eq!(st, StatusCode::OK, "{answer}");
    assert_eq!(answer["entities"].as_array().map(Vec::len), Some(1), "{answer}");
}
