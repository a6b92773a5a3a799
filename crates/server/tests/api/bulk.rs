use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::TestServer;

#[tokio::test]
async fn bulk_upsert_reports_each_index() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let a = s
        .post(
            "/v1/blueprints/service/entities/bulk",
            json!({"entities": [
                {"identifier": "a", "properties": {"language": "go"}},
                {"identifier": "b", "properties": {"language": "cobol"}},
                {"identifier": "c", "relations": {"team": "missing"}},
                "not an object",
                {"identifier": "d"},
                {"identifier": "x", "properties": [1, [2]], "createdAt": {"ignored": true}},
                {"identifier": 7, "title": "T"}
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::MULTI_STATUS, "{}", a.body);
    assert_eq!(a.body["ok"], json!(true));
    let ok: Vec<(u64, &str, bool)> = a.body["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().expect("index"),
                e["identifier"].as_str().expect("id"),
                e["created"].as_bool().expect("created"),
            )
        })
        .collect();
    assert_eq!(ok, vec![(0, "a", true), (4, "d", true)]);
    let errors = a.body["errors"].as_array().expect("errors");
    let by_index: Vec<(u64, u64, &str)> = errors
        .iter()
        .map(|e| {
            (e["index"].as_u64().expect("i"), e["statusCode"].as_u64().expect("s"), e["error"].as_str().expect("e"))
        })
        .collect();
    assert_eq!(
        by_index,
        vec![
            (1, 422, "schema_mismatch"),
            (2, 404, "not_found"),
            (3, 422, "invalid_request"),
            (5, 422, "invalid_request"),
            (6, 422, "invalid_request")
        ]
    );
    assert_eq!(errors[0]["identifier"], json!("b"));
    // Items read straight from the JSON text: a wrong shape is named, and the item is named by its
    // identifier when that is a string.
    assert_eq!(errors[2]["message"], json!("an entity must be an object, got string"));
    assert_eq!(errors[3]["identifier"], json!("x"));
    assert_eq!(errors[3]["message"], json!("`properties` must be an object, got array"));
    assert_eq!(errors[4]["identifier"], json!("unknown"));
    assert_eq!(errors[4]["message"], json!("`identifier` must be a string, got number"));
    assert_eq!(s.get("/v1/blueprints/service/entities-count").await.body["count"], json!(2));

    // All good: 200, and `created` false for updates.
    let a = s
        .post("/v1/blueprints/service/entities/bulk", json!({"entities": [{"identifier": "a"}, {"identifier": "e"}]}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["entities"][0]["created"], json!(false));
    assert_eq!(a.body["entities"][1]["created"], json!(true));
    assert_eq!(a.body["errors"], json!([]));
}

#[tokio::test]
async fn bulk_limits_and_shapes() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    s.post("/v1/blueprints/service/entities/bulk", json!({"entities": []})).await.assert_error(422, "invalid_request");
    let many: Vec<Value> = (0..1001).map(|i| json!({"identifier": format!("e{i}")})).collect();
    s.post("/v1/blueprints/service/entities/bulk", json!({"entities": many}))
        .await
        .assert_error(422, "invalid_request");
    let thousand: Vec<Value> =
        (0..1000).map(|i| json!({"identifier": format!("e{i}"), "properties": {"replicas": i % 50}})).collect();
    let a = s.post("/v1/blueprints/service/entities/bulk", json!({"entities": thousand})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body["errors"]);
    assert_eq!(s.get("/v1/blueprints/service/entities-count").await.body["count"], json!(1000));
    s.post("/v1/blueprints/service/entities/bulk", json!({"entities": {"a": 1}}))
        .await
        .assert_error(422, "invalid_request");
    s.post("/v1/blueprints/nope/entities/bulk", json!({"entities": [{"identifier": "a"}]}))
        .await
        .assert_error(404, "not_found");
    // upsert=false in bulk: existing ones conflict, one by one.
    let a = s
        .post(
            "/v1/blueprints/service/entities/bulk?upsert=false",
            json!({"entities": [{"identifier": "e1"}, {"identifier": "new"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::MULTI_STATUS);
    assert_eq!(a.body["errors"][0]["statusCode"], json!(409));
    // validation_only writes nothing.
    let a = s
        .post(
            "/v1/blueprints/service/entities/bulk?validation_only=true",
            json!({"entities": [{"identifier": "ghost"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    s.get("/v1/blueprints/service/entities/ghost").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn bulk_delete_is_per_identifier() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    for id in ["a", "b", "c"] {
        s.post("/v1/blueprints/service/entities", json!({"identifier": id})).await;
    }
    s.post("/v1/blueprints/deployment/entities", json!({"identifier": "d", "relations": {"service": "c"}})).await;
    let a = s.post("/v1/blueprints/service/bulk/entities/delete", json!({"entities": ["a", "ghost", "c", "b"]})).await;
    assert_eq!(a.status, StatusCode::MULTI_STATUS, "{}", a.body);
    assert_eq!(a.body["deletedEntities"], json!(["a", "b"]));
    let errors: Vec<&str> =
        a.body["errors"].as_array().expect("errors").iter().map(|e| e["identifier"].as_str().expect("id")).collect();
    assert_eq!(errors, vec!["ghost", "c"]);
    let a =
        s.post("/v1/blueprints/service/bulk/entities/delete?delete_dependents=true", json!({"entities": ["c"]})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["deletedEntities"], json!(["c"]));
    assert_eq!(s.get("/v1/blueprints/deployment/entities-count").await.body["count"], json!(0));
}

/// A bulk request's index updates are applied together at the end of the batch; a later item that finds an
/// earlier one of the same request through a search query (relation or identifier) must still see it.
#[tokio::test]
async fn bulk_items_find_earlier_items_of_the_same_request_by_search() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let by_a =
        |value: &str| json!({"combinator": "and", "rules": [{"property": "a", "operator": "=", "value": value}]});
    let a = s
        .post(
            "/v1/blueprints/service/entities/bulk",
            json!({"entities": [
                {"identifier": "api", "properties": {"a": "first"}},
                {"identifier": "web", "properties": {"a": "second"}, "relations": {"deps": by_a("first")}},
                {"identifier": "db", "relations": {"deps": by_a("second")}},
                {"identifier": by_a("first"), "properties": {"a": "first", "b": "found"}}
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for (id, deps) in [("web", json!(["api"])), ("db", json!(["web"]))] {
        let got = s.get(&format!("/v1/blueprints/service/entities/{id}")).await;
        assert_eq!(got.body["entity"]["relations"]["deps"], deps, "{}", got.body);
    }
    let api = s.get("/v1/blueprints/service/entities/api").await;
    assert_eq!(api.body["entity"]["properties"]["b"], json!("found"), "{}", api.body);
    // And the indexes hold every item once the batch is in.
    for (rule, expected) in [
        (json!({"property": "b", "operator": "=", "value": "found"}), json!(["api"])),
        (json!({"property": "a", "operator": "=", "value": "second"}), json!(["web"])),
        (json!({"relation": "deps", "operator": "=", "value": "web"}), json!(["db"])),
    ] {
        let query = json!({"query": {"combinator": "and", "rules": [rule]}});
        let found = s.post("/v1/blueprints/service/entities/search", query).await;
        let ids: Vec<&Value> =
            found.body["entities"].as_array().expect("entities").iter().map(|e| &e["identifier"]).collect();
        assert_eq!(json!(ids), expected, "{}", found.body);
    }
}
