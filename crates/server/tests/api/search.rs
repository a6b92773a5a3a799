use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::TestServer;

async fn catalog() -> TestServer {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    s.post("/v1/blueprints/team/entities", json!({"identifier": "core", "title": "Core"})).await;
    s.post("/v1/blueprints/team/entities", json!({"identifier": "edge", "title": "Edge"})).await;
    let services = json!({"entities": [
        {"identifier": "api", "title": "API", "team": ["core"], "properties": {"language": "rust", "replicas": 3, "url": "https://api.example.com", "tags": ["public", "http"]}, "relations": {"team": "core"}},
        {"identifier": "worker", "title": "Worker", "team": ["core"], "properties": {"language": "go", "replicas": 10, "tags": ["batch"]}, "relations": {"team": "core", "deps": ["api"]}},
        {"identifier": "web", "title": "Web app", "team": ["edge"], "properties": {"language": "go", "replicas": 0}, "relations": {"team": "edge", "deps": ["api", "worker"]}},
        {"identifier": "legacy", "title": null, "properties": {}}
    ]});
    assert_eq!(s.post("/v1/blueprints/service/entities/bulk", services).await.status, StatusCode::OK);
    s
}

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| e["identifier"].as_str().expect("id").to_string())
        .collect();
    out.sort();
    out
}

async fn find(s: &TestServer, rules: Value) -> Vec<String> {
    let a =
        s.post("/v1/blueprints/service/entities/search", json!({"query": {"combinator": "and", "rules": rules}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    ids(&a.body)
}

#[tokio::test]
async fn operators_over_http() {
    let s = catalog().await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!([{"property": "language", "operator": "=", "value": "go"}]), vec!["web", "worker"]),
        (json!([{"property": "language", "operator": "!=", "value": "go"}]), vec!["api", "legacy"]),
        (json!([{"property": "replicas", "operator": ">", "value": 3}]), vec!["worker"]),
        (json!([{"property": "replicas", "operator": ">=", "value": 3}]), vec!["api", "worker"]),
        (json!([{"property": "replicas", "operator": "<", "value": 3}]), vec!["web"]),
        (json!([{"property": "replicas", "operator": "<=", "value": 3}]), vec!["api", "web"]),
        (json!([{"property": "language", "operator": "in", "value": ["rust", "java"]}]), vec!["api"]),
        (json!([{"property": "language", "operator": "notIn", "value": ["rust"]}]), vec!["legacy", "web", "worker"]),
        (json!([{"property": "url", "operator": "contains", "value": "api."}]), vec!["api"]),
        (json!([{"property": "tags", "operator": "contains", "value": "batch"}]), vec!["worker"]),
        (json!([{"property": "tags", "operator": "containsAny", "value": ["http", "batch"]}]), vec!["api", "worker"]),
        (json!([{"property": "$title", "operator": "beginsWith", "value": "W"}]), vec!["web", "worker"]),
        (json!([{"property": "$title", "operator": "endsWith", "value": "app"}]), vec!["web"]),
        (json!([{"property": "$title", "operator": "doesNotBeginsWith", "value": "W"}]), vec!["api", "legacy"]),
        (json!([{"property": "$title", "operator": "doesNotContains", "value": "o"}]), vec!["api", "legacy", "web"]),
        (
            json!([{"property": "$title", "operator": "doesNotEndsWith", "value": "app"}]),
            vec!["api", "legacy", "worker"],
        ),
        (json!([{"property": "tags", "operator": "isEmpty"}]), vec!["legacy", "web"]),
        (json!([{"property": "tags", "operator": "isNotEmpty"}]), vec!["api", "worker"]),
        (json!([{"property": "$identifier", "operator": "=", "value": "api"}]), vec!["api"]),
        (json!([{"property": "$team", "operator": "=", "value": "core"}]), vec!["api", "worker"]),
        (json!([{"property": "$team", "operator": "isEmpty"}]), vec!["legacy"]),
        (
            json!([{"property": "$blueprint", "operator": "=", "value": "service"}]),
            vec!["api", "legacy", "web", "worker"],
        ),
        (
            json!([{"property": "$createdBy", "operator": "=", "value": "test-admin"}]),
            vec!["api", "legacy", "web", "worker"],
        ),
        (
            json!([{"property": "$createdAt", "operator": ">", "value": "2000-01-01T00:00:00Z"}]),
            vec!["api", "legacy", "web", "worker"],
        ),
        (
            json!([{"property": "$updatedAt", "operator": "between", "value": {"from": "2000-01-01T00:00:00Z", "to": "2001-01-01T00:00:00Z"}}]),
            vec![],
        ),
        (
            json!([{"property": "$updatedAt", "operator": "notBetween", "value": {"from": "2000-01-01T00:00:00Z", "to": "2001-01-01T00:00:00Z"}}]),
            vec!["api", "legacy", "web", "worker"],
        ),
        (json!([{"property": "$title", "operator": "=", "value": "Web app"}]), vec!["web"]),
        (json!([{"property": "$title", "operator": "in", "value": ["API", "Worker"]}]), vec!["api", "worker"]),
        (json!([{"property": "$title", "operator": "isEmpty"}]), vec!["legacy"]),
        (json!([{"property": "$icon", "operator": "isEmpty"}]), vec!["api", "legacy", "web", "worker"]),
        (json!([{"property": "$updatedBy", "operator": "!=", "value": "test-admin"}]), vec![]),
        (json!([{"property": "$identifier", "operator": "notIn", "value": ["api", "web"]}]), vec!["legacy", "worker"]),
        (json!([{"relation": "team", "operator": "=", "value": "edge"}]), vec!["web"]),
        (json!([{"relation": "deps", "operator": "=", "value": "worker"}]), vec!["web"]),
        (json!([{"relation": "deps", "operator": "isEmpty"}]), vec!["api", "legacy"]),
        (
            json!([{"combinator": "or", "rules": [
            {"property": "language", "operator": "=", "value": "rust"},
            {"combinator": "and", "rules": [{"property": "language", "operator": "=", "value": "go"}, {"property": "replicas", "operator": "=", "value": 0}]}]}]),
            vec!["api", "web"],
        ),
    ];
    for (rules, want) in cases {
        let got = find(&s, rules.clone()).await;
        assert_eq!(got, want, "{rules}");
    }
}

#[tokio::test]
async fn search_every_blueprint() {
    let s = catalog().await;
    let a = s
        .post(
            "/v1/entities/search?include=identifier",
            json!({"combinator": "or", "rules": [
        {"property": "$title", "operator": "=", "value": "Core"},
        {"property": "$identifier", "operator": "=", "value": "api"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(ids(&a.body), vec!["api", "core"]);
    assert_eq!(a.body["matchingBlueprints"], json!(["service", "team"]));
    assert_eq!(a.body["failedBlueprints"], json!([]));
    assert_eq!(a.body["entities"][0].as_object().expect("obj").len(), 1, "include applies");
    let a = s
        .post(
            "/v1/entities/search",
            json!({"combinator": "and", "rules": [
        {"property": "$blueprint", "operator": "=", "value": "team"}]}),
        )
        .await;
    assert_eq!(ids(&a.body), vec!["core", "edge"]);
}

#[tokio::test]
async fn bad_queries_name_the_rule() {
    let s = catalog().await;
    for (query, needle) in [
        (
            json!({"combinator": "and", "rules": [{"property": "language", "operator": "like", "value": "x"}]}),
            "rules[0]: unknown operator \"like\"",
        ),
        (
            json!({"combinator": "and", "rules": [{"property": "replicas", "operator": "=", "value": 1}, {"combinator": "or", "rules": [{"property": "language", "operator": "in", "value": "go"}]}]}),
            "rules[1].rules[0]",
        ),
        (
            json!({"combinator": "and", "rules": [{"property": "$createdAt", "operator": ">", "value": "yesterday"}]}),
            "date-time",
        ),
        (json!({"combinator": "nand", "rules": []}), "combinator"),
        (json!({"combinator": "and", "rules": [{"property": "nope", "operator": "=", "value": 1}]}), "`nope`"),
        (json!({"combinator": "and", "rules": [{"relation": "nope", "operator": "=", "value": "x"}]}), "`nope`"),
    ] {
        let a = s.post("/v1/blueprints/service/entities/search", json!({"query": query})).await;
        a.assert_error(400, "bad_request");
        let msg = a.body["message"].as_str().expect("message");
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }
    s.post("/v1/entities/search", json!({"rules": []})).await.assert_error(400, "bad_request");
    s.post("/v1/blueprints/service/entities/search", json!({"limit": 0})).await.assert_error(400, "bad_request");
    s.post("/v1/blueprints/service/entities/search", json!({"limit": 1001})).await.assert_error(400, "bad_request");
    s.post("/v1/blueprints/service/entities/search", json!({"from": "zz"})).await.assert_error(400, "bad_request");
    s.post("/v1/blueprints/ghost/entities/search", json!({})).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn pagination_walks_everything_once() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let entities: Vec<Value> =
        (0..250).map(|i| json!({"identifier": format!("s{i:03}"), "properties": {"replicas": i % 7}})).collect();
    s.post("/v1/blueprints/service/entities/bulk", json!({"entities": entities})).await;
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut body = json!({"limit": 40, "query": {"combinator": "and", "rules": [{"property": "replicas", "operator": "!=", "value": 0}]}, "include": ["identifier"]});
        if let Some(f) = &from {
            body["from"] = json!(f);
        }
        let a = s.post("/v1/blueprints/service/entities/search", body).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        seen.extend(ids(&a.body));
        pages += 1;
        // A write between pages does not disturb the walk.
        s.post(
            "/v1/blueprints/service/entities?upsert=true",
            json!({"identifier": "zzz-late", "properties": {"replicas": 0}}),
        )
        .await;
        match a.body.get("next").and_then(Value::as_str) {
            Some(n) => from = Some(n.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..250).filter(|i| i % 7 != 0).map(|i| format!("s{i:03}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, expected.len().div_ceil(40));
    // An entity named like the search route is still reachable.
    assert_eq!(
        s.post("/v1/blueprints/service/entities", json!({"identifier": "search"})).await.status,
        StatusCode::CREATED
    );
    assert_eq!(s.get("/v1/blueprints/service/entities/search").await.body["entity"]["identifier"], json!("search"));
}

#[tokio::test]
async fn identifiers_and_relations_given_as_search_queries() {
    let s = catalog().await;
    // A relation value as a query: the team titled "Edge".
    let q = |rules: Value| json!({"combinator": "and", "rules": rules});
    let a = s
        .post(
            "/v1/blueprints/service/entities",
            json!({"identifier": "new", "relations": {
            "team": q(json!([{"property": "$title", "operator": "=", "value": "Edge"}])),
            "deps": q(json!([{"property": "language", "operator": "=", "value": "go"}]))}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["entity"]["relations"]["team"], json!("edge"));
    assert_eq!(a.body["entity"]["relations"]["deps"], json!(["web", "worker"]));
    // A single relation whose query matches two entities, or none.
    let a = s.post("/v1/blueprints/service/entities", json!({"identifier": "x", "relations": {"team": q(json!([{"property": "$title", "operator": "isNotEmpty"}]))}})).await;
    a.assert_error(422, "schema_mismatch");
    assert!(a.body["message"].as_str().expect("msg").contains("matches 2"));
    let a = s.post("/v1/blueprints/service/entities", json!({"identifier": "x", "relations": {"team": q(json!([{"property": "$title", "operator": "=", "value": "Nope"}]))}})).await;
    a.assert_error(404, "not_found");
    let a = s.post("/v1/blueprints/service/entities", json!({"identifier": "x", "relations": {"team": q(json!([{"property": "$title", "operator": "like", "value": "x"}]))}})).await;
    a.assert_error(422, "invalid_request");
    assert!(a.body["message"].as_str().expect("msg").contains("rules[0]"));

    // An identifier as a query updates the one entity it matches.
    let a = s
        .post(
            "/v1/blueprints/service/entities?upsert=true&merge=true",
            json!({
            "identifier": q(json!([{"property": "url", "operator": "=", "value": "https://api.example.com"}])),
            "properties": {"replicas": 7}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["entity"]["identifier"], json!("api"));
    assert_eq!(a.body["entity"]["properties"]["replicas"], json!(7));
    let a = s
        .post(
            "/v1/blueprints/service/entities?upsert=true",
            json!({"identifier": q(json!([{"property": "language", "operator": "=", "value": "go"}]))}),
        )
        .await;
    a.assert_error(422, "invalid_request");
    // In bulk, a failed search identifier is reported as "unknown".
    let a = s
        .post(
            "/v1/blueprints/service/entities/bulk",
            json!({"entities": [
            {"identifier": q(json!([{"property": "$identifier", "operator": "=", "value": "ghost"}]))}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::MULTI_STATUS, "{}", a.body);
    assert_eq!(a.body["errors"][0]["identifier"], json!("unknown"));
    assert_eq!(a.body["errors"][0]["statusCode"], json!(404));
}

#[tokio::test]
async fn sorted_search_over_http() {
    let s = catalog().await;
    let a = s
        .post(
            "/v1/blueprints/service/entities/search",
            json!({"sort": [{"property": "replicas", "order": "desc"}], "include": ["identifier"]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let order: Vec<&str> =
        a.body["entities"].as_array().expect("a").iter().map(|e| e["identifier"].as_str().expect("id")).collect();
    assert_eq!(order, vec!["worker", "api", "web", "legacy"], "desc by replicas, entities without a value last");
    let a =
        s.post("/v1/blueprints/service/entities/search", json!({"sort": [{"property": "$title"}], "limit": 2})).await;
    assert_eq!(ids(&a.body), vec!["api", "web"]);
    let next = a.body["next"].as_str().expect("next").to_string();
    let a = s
        .post(
            "/v1/blueprints/service/entities/search",
            json!({"sort": [{"property": "$title"}], "limit": 2, "from": next}),
        )
        .await;
    let order: Vec<&str> =
        a.body["entities"].as_array().expect("a").iter().map(|e| e["identifier"].as_str().expect("id")).collect();
    assert_eq!(order, vec!["worker", "legacy"]);
    s.post("/v1/blueprints/service/entities/search", json!({"sort": [{"property": "nope"}]}))
        .await
        .assert_error(400, "bad_request");
    let a = s
        .post(
            "/v1/blueprints/service/entities/search",
            json!({"sort": [{"property": "replicas", "order": "sideways"}]}),
        )
        .await;
    a.assert_error(400, "bad_request");
    assert!(a.body["message"].as_str().expect("m").contains("sort[0]"));
}

#[tokio::test]
async fn graph_rules_presets_and_property_schemas_over_http() {
    let s = catalog().await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        // worker and web depend on api.
        (
            json!([{"operator": "relatedTo", "blueprint": "service", "value": "api", "direction": "downstream"}]),
            vec!["web", "worker"],
        ),
        // web depends on api and worker (and its team, not a service).
        (
            json!([{"operator": "relatedTo", "blueprint": "service", "value": "web", "direction": "upstream"}]),
            vec!["api", "worker"],
        ),
        (
            json!([{"operator": "relatedTo", "blueprint": "team", "value": ["core"], "direction": "downstream"}]),
            vec!["api", "web", "worker"],
        ),
        (json!([{"operator": "matchAny", "value": "api", "property": {"path": ["deps"]}}]), vec!["web", "worker"]),
        (
            json!([{"operator": "matchAny", "value": ["api"], "property": {"path": [{"relation": "deps", "maxHops": 2}], "fromBlueprint": "service"}}]),
            vec!["web", "worker"],
        ),
        (json!([{"operator": "matchAny", "value": "core", "property": {"path": ["team"]}}]), vec!["api", "worker"]),
        (
            json!([{"operator": "matchAny", "value": "core", "property": {"path": ["deps", "team"]}}]),
            vec!["web", "worker"],
        ),
        (
            json!([{"property": "$createdAt", "operator": "between", "value": {"preset": "today", "timeZone": "UTC"}}]),
            vec!["api", "legacy", "web", "worker"],
        ),
        (
            json!([{"property": "$createdAt", "operator": "=", "value": {"preset": "lastWeek"}}]),
            vec!["api", "legacy", "web", "worker"],
        ),
        (
            json!([{"property": "$updatedAt", "operator": "notBetween", "value": {"preset": "lastDay", "timeZone": "Pacific/Auckland"}}]),
            vec![],
        ),
        (json!([{"property": "$createdAt", "operator": "isExpired"}]), vec!["api", "legacy", "web", "worker"]),
        (
            json!([{"propertySchema": {"type": "string", "format": "url"}, "operator": "contains", "value": "api."}]),
            vec!["api"],
        ),
        (json!([{"scorecard": "ownership", "operator": "=", "value": "Gold"}]), vec![]),
    ];
    for (rules, want) in cases {
        assert_eq!(find(&s, rules.clone()).await, want, "{rules}");
    }

    // Across blueprints, relatedTo reaches the team too.
    let a = s
        .post(
            "/v1/entities/search",
            json!({"combinator": "and", "rules": [{"operator": "relatedTo", "blueprint": "service", "value": "web", "direction": "upstream"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // web depends on api and worker (and its team edge); they belong to team core.
    assert_eq!(ids(&a.body), vec!["api", "core", "edge", "worker"]);

    for (rule, needle) in [
        (json!({"operator": "relatedTo", "blueprint": "ghost", "value": "x"}), "`ghost`, which does not exist"),
        (json!({"operator": "relatedTo", "blueprint": "service", "value": "x", "direction": "sideways"}), "upstream"),
        (json!({"operator": "matchAny", "value": "x", "property": {"path": ["nope"]}}), "has no relation `nope`"),
        (
            json!({"operator": "matchAny", "value": "x", "property": {"path": [{"relation": "team", "maxHops": 2}]}}),
            "cannot be followed more than once",
        ),
        (
            json!({"property": "$createdAt", "operator": "between", "value": {"preset": "today", "timeZone": "Moon/Base"}}),
            "IANA",
        ),
        (
            json!({"property": "$createdAt", "operator": "between", "value": {"preset": "someday"}}),
            "unknown date preset",
        ),
        (json!({"propertySchema": {"type": "string"}, "operator": ">", "value": 1}), "propertySchema"),
    ] {
        let a = s
            .post("/v1/blueprints/service/entities/search", json!({"query": {"combinator": "and", "rules": [rule]}}))
            .await;
        a.assert_error(400, "bad_request");
        let msg = a.body["message"].as_str().expect("message");
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }
}

#[tokio::test]
async fn aggregations_and_facets() {
    let s = catalog().await;
    let services =
        json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"}]});
    let s = &s;
    let agg = |body: Value| async move { s.post("/v1/entities/aggregate", body).await };
    let result = |a: &crate::common::Answer| {
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body["result"].clone()
    };
    assert_eq!(result(&agg(json!({"func": "count", "query": services})).await), json!(4));
    let go = json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"},
        {"property": "language", "operator": "=", "value": "go"}]});
    assert_eq!(result(&agg(json!({"func": "count", "query": go})).await), json!(2));
    // replicas: api 3, worker 10, web 0; legacy has none.
    assert_eq!(result(&agg(json!({"func": "sum", "property": "replicas", "query": services})).await), json!(13.0));
    assert_eq!(result(&agg(json!({"func": "min", "property": "replicas", "query": services})).await), json!(0.0));
    assert_eq!(result(&agg(json!({"func": "max", "property": "replicas", "query": services})).await), json!(10.0));
    assert_eq!(result(&agg(json!({"func": "median", "property": "replicas", "query": services})).await), json!(3.0));
    let avg = result(&agg(json!({"func": "average", "property": "replicas", "query": services})).await);
    assert!((avg.as_f64().expect("number") - 13.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        result(&agg(json!({"func": "average", "averageOf": "day", "query": services})).await),
        json!(4.0),
        "4 entities created within the last day"
    );
    let none = json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"},
        {"property": "$identifier", "operator": "=", "value": "nobody"}]});
    assert_eq!(result(&agg(json!({"func": "max", "property": "replicas", "query": none})).await), Value::Null);

    // Facets.
    let a = agg(json!({"func": "countValues", "property": "language", "query": services})).await;
    assert_eq!(result(&a), json!({"go": 2, "rust": 1}));
    assert_eq!(
        a.body["values"],
        json!([{"value": "go", "count": 2}, {"value": "rust", "count": 1}, {"value": null, "count": 1}])
    );
    let a = agg(json!({"func": "countValues", "relation": "team", "query": services})).await;
    assert_eq!(result(&a), json!({"core": 2, "edge": 1}));
    let a = agg(json!({"func": "countValues", "property": "tags", "query": services})).await;
    assert_eq!(result(&a), json!({"batch": 1, "http": 1, "public": 1}), "array items are counted one by one");
    assert_eq!(a.body["matchingBlueprints"], json!(["service"]));

    // Refusals.
    for (body, needle) in [
        (json!({"func": "mode", "query": services}), "`func`"),
        (json!({"func": "sum", "query": services}), "`property`"),
        (json!({"func": "sum", "property": "nope", "query": services}), "no property `nope`"),
        (json!({"func": "countValues", "query": services}), "exactly one"),
        (json!({"func": "countValues", "relation": "nope", "query": services}), "no relation `nope`"),
        (json!({"func": "average", "averageOf": "decade", "query": services}), "`averageOf`"),
        (
            json!({"func": "count", "query": {"combinator": "and", "rules": [{"property": "x", "operator": "~"}]}}),
            "rules[0]",
        ),
    ] {
        let a = agg(body.clone()).await;
        a.assert_error(400, "bad_request");
        assert!(a.body["message"].as_str().unwrap_or_default().contains(needle), "{body}: {}", a.body);
    }
    agg(json!({"func": "count"})).await.assert_error(422, "invalid_request");
}

#[tokio::test]
async fn attach_title_to_relation_on_every_read() {
    let s = catalog().await;
    let a = s.get("/v1/blueprints/service/entities/web?attach_title_to_relation=true").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["entity"]["relations"]["team"], json!({"identifier": "edge", "title": "Edge"}));
    assert_eq!(
        a.body["entity"]["relations"]["deps"],
        json!([{"identifier": "api", "title": "API"}, {"identifier": "worker", "title": "Worker"}])
    );
    let plain = s.get("/v1/blueprints/service/entities/web").await;
    assert_eq!(plain.body["entity"]["relations"]["team"], json!("edge"), "off by default");

    let a =
        s.get("/v1/blueprints/service/entities?attach_title_to_relation=true&include=identifier,relations.team").await;
    let worker = a.body["entities"].as_array().expect("entities").iter().find(|e| e["identifier"] == "worker").cloned();
    assert_eq!(
        worker.expect("worker"),
        json!({"identifier": "worker", "relations": {"team": {"identifier": "core", "title": "Core"}}})
    );

    let a = s
        .post(
            "/v1/blueprints/service/entities/search",
            json!({"attach_title_to_relation": true, "query": {"combinator": "and", "rules": [
                {"property": "$identifier", "operator": "=", "value": "api"}]}}),
        )
        .await;
    assert_eq!(a.body["entities"][0]["relations"]["team"]["title"], "Core");
    let a = s
        .post(
            "/v1/entities/search?attach_title_to_relation=true",
            json!({"combinator": "and", "rules": [{"property": "$identifier", "operator": "=", "value": "worker"}]}),
        )
        .await;
    assert_eq!(a.body["entities"][0]["relations"]["deps"], json!([{"identifier": "api", "title": "API"}]));
    s.get("/v1/blueprints/service/entities/web?attach_title_to_relation=maybe").await.assert_error(400, "bad_request");
}

/// H5: a repeated `$blueprint in` list is searched once; lists and rule counts past their caps are a 400
/// naming the rule, before anything runs.
#[tokio::test]
async fn query_cost_is_bounded() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    for id in ["a", "b"] {
        assert_eq!(
            s.post("/v1/blueprints/service/entities", json!({"identifier": id})).await.status,
            StatusCode::CREATED
        );
    }
    let repeated: Vec<&str> = vec!["service"; 10_000];
    let r = s
        .post(
            "/v1/entities/search",
            json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "in", "value": repeated}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["entities"].as_array().map(Vec::len), Some(2), "each entity once");
    let long: Vec<String> = (0..100_000).map(|i| format!("v{i}")).collect();
    let r = s
        .post(
            "/v1/entities/search",
            json!({"combinator": "and", "rules": [{"property": "$identifier", "operator": "notIn", "value": long}]}),
        )
        .await;
    r.assert_error(400, "bad_request");
    assert!(r.body["message"].as_str().is_some_and(|m| m.contains("rules[0]")), "{}", r.body);
    let many: Vec<Value> = (0..2_000).map(|_| json!({"property": "$identifier", "operator": "isNotEmpty"})).collect();
    s.post("/v1/entities/search", json!({"combinator": "or", "rules": many})).await.assert_error(400, "bad_request");
    let graph: Vec<Value> =
        (0..9).map(|_| json!({"operator": "relatedTo", "blueprint": "service", "value": "a"})).collect();
    s.post("/v1/entities/search", json!({"combinator": "or", "rules": graph})).await.assert_error(400, "bad_request");
}

#[tokio::test]
async fn a_blueprint_search_refuses_a_query_sent_outside_query() {
    let s = berth_testkit::server::TestServer::start().await;
    s.seed_blueprints().await;
    let a = s
        .post(
            "/v1/blueprints/service/entities/search",
            serde_json::json!({"combinator": "and", "rules": [{"property": "$identifier", "operator": "=", "value": "x"}]}),
        )
        .await;
    a.assert_error(422, "invalid_request");
    assert!(a.body["message"].as_str().expect("m").contains("combinator"), "{}", a.body);
}
