use reqwest::StatusCode;
use serde_json::json;

use crate::common::TestServer;

#[tokio::test]
async fn create_upsert_merge_replace_patch_delete() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let a = s
        .post("/v1/blueprints/service/entities", json!({"identifier": "pay", "title": "Payments", "team": "t", "properties": {"language": "go", "replicas": 3}}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let e = &a.body["entity"];
    assert_eq!(e["team"], json!(["t"]), "team string becomes an array");
    assert_eq!(e["blueprint"], json!("service"));
    assert_eq!(e["properties"]["public"], json!(false), "default applied");
    assert_eq!(e["createdBy"], json!("test-admin"));
    assert!(e["createdAt"].as_str().expect("createdAt").ends_with('Z'));
    let first_seq = a.seq();

    // upsert=false (default) on an existing id is a conflict.
    s.post("/v1/blueprints/service/entities", json!({"identifier": "pay"})).await.assert_error(409, "conflict");

    // merge keeps what is not given.
    let a = s
        .post(
            "/v1/blueprints/service/entities?upsert=true&merge=true",
            json!({"identifier": "pay", "properties": {"replicas": 5}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["entity"]["properties"]["language"], json!("go"));
    assert_eq!(a.body["entity"]["properties"]["replicas"], json!(5));
    assert_eq!(a.body["entity"]["title"], json!("Payments"));
    assert!(a.seq() > first_seq, "X-Berth-Seq grows");

    // upsert without merge replaces.
    let a = s
        .post(
            "/v1/blueprints/service/entities?upsert=true",
            json!({"identifier": "pay", "properties": {"replicas": 1}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body["entity"]["properties"].get("language").is_none());
    assert_eq!(a.body["entity"]["title"], json!(null));
    assert_eq!(a.body["entity"]["createdAt"], e["createdAt"], "createdAt survives");

    // PUT replaces; PATCH merges and can clear with null.
    let a = s
        .put(
            "/v1/blueprints/service/entities/pay",
            json!({"title": "P", "team": ["a", "b"], "properties": {"language": "rust"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["entity"]["properties"]["language"], json!("rust"));
    let a = s
        .patch(
            "/v1/blueprints/service/entities/pay",
            json!({"title": null, "properties": {"language": null, "replicas": 2}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["entity"]["title"], json!(null));
    assert_eq!(a.body["entity"]["team"], json!(["a", "b"]));
    assert!(a.body["entity"]["properties"].get("language").is_none());
    assert_eq!(a.body["entity"]["properties"]["replicas"], json!(2));
    s.patch("/v1/blueprints/service/entities/ghost", json!({})).await.assert_error(404, "not_found");
    s.put("/v1/blueprints/service/entities/ghost", json!({})).await.assert_error(404, "not_found");
    s.put("/v1/blueprints/service/entities/pay", json!({"identifier": "other"}))
        .await
        .assert_error(422, "invalid_request");

    let a = s.get("/v1/blueprints/service/entities/pay").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["entity"]["identifier"], json!("pay"));

    let a = s.delete("/v1/blueprints/service/entities/pay").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["ok"], json!(true));
    s.get("/v1/blueprints/service/entities/pay").await.assert_error(404, "not_found");
    s.delete("/v1/blueprints/service/entities/pay").await.assert_error(404, "not_found");
    s.get("/v1/blueprints/nope/entities/pay").await.assert_error(404, "not_found");
    s.post("/v1/blueprints/nope/entities", json!({"identifier": "x"})).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn schema_validation_errors_are_422_and_write_nothing() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    for (body, code, needle) in [
        (json!({"identifier": "x", "properties": {"language": "cobol"}}), "schema_mismatch", "not one of"),
        (json!({"identifier": "x", "properties": {"replicas": "three"}}), "schema_mismatch", "must be a number"),
        (json!({"identifier": "x", "properties": {"replicas": 51}}), "schema_mismatch", "maximum"),
        (json!({"identifier": "x", "properties": {"url": "not a url"}}), "schema_mismatch", "url"),
        (json!({"identifier": "x", "properties": {"tags": [1]}}), "schema_mismatch", "tags[0]"),
        (json!({"identifier": "x", "properties": {"nope": 1}}), "schema_mismatch", "`nope`"),
        (json!({"identifier": "x", "relations": {"nope": "y"}}), "schema_mismatch", "`nope`"),
        (json!({"identifier": "x", "relations": {"team": ["a", "b"]}}), "schema_mismatch", "single"),
        (json!({"identifier": "x y"}), "invalid_identifier", "not allowed"),
        (json!({"identifier": "x", "properties": []}), "invalid_request", "object"),
        (json!({"identifier": 5}), "invalid_request", "string"),
        (json!({"identifier": "x", "team": 5}), "invalid_request", "team"),
    ] {
        let a = s.post("/v1/blueprints/service/entities", body.clone()).await;
        a.assert_error(422, code);
        let msg = a.body["message"].as_str().expect("message");
        assert!(msg.contains(needle), "{body}: {msg:?} should mention {needle:?}");
    }
    s.post("/v1/blueprints/deployment/entities", json!({"identifier": "d"})).await.assert_error(422, "schema_mismatch");
    assert_eq!(s.get("/v1/blueprints/service/entities-count").await.body["count"], json!(0));
}

#[tokio::test]
async fn relations_missing_targets_and_create_missing() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let a = s.post("/v1/blueprints/service/entities", json!({"identifier": "a", "relations": {"team": "core"}})).await;
    a.assert_error(404, "not_found");
    assert!(a.body["message"].as_str().expect("msg").contains("core"));
    let a = s
        .post(
            "/v1/blueprints/service/entities?create_missing_related_entities=true",
            json!({"identifier": "a", "relations": {"team": "core", "deps": ["b", "c"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(s.get("/v1/blueprints/team/entities/core").await.status, StatusCode::OK);
    assert_eq!(s.get("/v1/blueprints/service/entities/b").await.status, StatusCode::OK);
    assert_eq!(s.get("/v1/blueprints/service/entities-count").await.body["count"], json!(3));
}

#[tokio::test]
async fn delete_dependents() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    s.post("/v1/blueprints/team/entities", json!({"identifier": "core"})).await;
    s.post("/v1/blueprints/service/entities", json!({"identifier": "svc", "relations": {"team": "core"}})).await;
    s.post("/v1/blueprints/service/entities", json!({"identifier": "user", "relations": {"deps": ["svc"]}})).await;
    s.post("/v1/blueprints/deployment/entities", json!({"identifier": "d1", "relations": {"service": "svc"}})).await;
    let a = s.delete("/v1/blueprints/service/entities/svc").await;
    a.assert_error(409, "has_dependents");
    assert!(a.body["message"].as_str().expect("msg").contains("d1"));
    let a = s.delete("/v1/blueprints/service/entities/svc?delete_dependents=true").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["deletedEntities"], json!(["svc", "d1"]));
    s.get("/v1/blueprints/deployment/entities/d1").await.assert_error(404, "not_found");
    let user = s.get("/v1/blueprints/service/entities/user").await;
    assert_eq!(user.body["entity"]["relations"]["deps"], json!([]), "optional relation value removed");
    // Deleting the team clears the (optional) relation... of nothing now; the team goes.
    assert_eq!(s.delete("/v1/blueprints/team/entities/core").await.status, StatusCode::OK);
}

#[tokio::test]
async fn validation_only_writes_nothing() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let a = s
        .post(
            "/v1/blueprints/service/entities?validation_only=true",
            json!({"identifier": "v", "properties": {"language": "go"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["entity"]["identifier"], json!("v"));
    s.get("/v1/blueprints/service/entities/v").await.assert_error(404, "not_found");
    s.post(
        "/v1/blueprints/service/entities?validation_only=true",
        json!({"identifier": "v", "properties": {"language": "x"}}),
    )
    .await
    .assert_error(422, "schema_mismatch");
}

#[tokio::test]
async fn identifiers_with_slashes_plus_and_unicode() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    for id in ["org/repo", "a+b", "ünï:côde@x", "k=v"] {
        let a = s.post("/v1/blueprints/service/entities", json!({"identifier": id})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{id}: {}", a.body);
    }
    // encodeURIComponent style.
    assert_eq!(
        s.get("/v1/blueprints/service/entities/org%2Frepo").await.body["entity"]["identifier"],
        json!("org/repo")
    );
    assert_eq!(s.get("/v1/blueprints/service/entities/a%2Bb").await.body["entity"]["identifier"], json!("a+b"));
    assert_eq!(s.get("/v1/blueprints/service/entities/%C3%BCn%C3%AF%3Ac%C3%B4de%40x").await.status, StatusCode::OK);
    // quote_plus turns a space into `+`: that names "a b", which does not exist.
    s.get("/v1/blueprints/service/entities/a+b").await.assert_error(404, "not_found");
    let a = s.delete("/v1/blueprints/service/entities/org%2Frepo").await;
    assert_eq!(a.status, StatusCode::OK);
    // An entity named like the bulk route is still reachable.
    assert_eq!(
        s.post("/v1/blueprints/service/entities", json!({"identifier": "bulk"})).await.status,
        StatusCode::CREATED
    );
    assert_eq!(s.get("/v1/blueprints/service/entities/bulk").await.body["entity"]["identifier"], json!("bulk"));
}

#[tokio::test]
async fn include_exclude_and_datasource() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let resp = s
        .client
        .post(format!("{}/v1/blueprints/service/entities", s.base))
        .bearer_auth(&s.token)
        .header("user-agent", "port-ocean/github/1.0/my-integration/exporter")
        .json(&json!({"identifier": "x", "title": "X", "properties": {"language": "go", "replicas": 1}, "relations": {"deps": []}}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let a = s.get("/v1/blueprints/service/entities/x").await;
    assert_eq!(a.body["entity"]["$datasource"], json!("port-ocean/github/1.0/my-integration/exporter"));
    let a = s.get("/v1/blueprints/service/entities/x?include=identifier&include=properties.language").await;
    assert_eq!(a.body["entity"], json!({"identifier": "x", "properties": {"language": "go"}}));
    let a = s.get("/v1/blueprints/service/entities/x?include=identifier,title").await;
    assert_eq!(a.body["entity"], json!({"identifier": "x", "title": "X"}));
    let a = s.get("/v1/blueprints/service/entities?exclude=properties,relations,createdAt,createdBy,updatedAt,updatedBy,$datasource,team").await;
    assert_eq!(a.body["entities"], json!([{"identifier": "x", "title": "X", "blueprint": "service"}]));
}

#[tokio::test]
async fn concurrent_merges_lose_no_field() {
    let s = std::sync::Arc::new(TestServer::start().await);
    s.seed_blueprints().await;
    // Each writer merges its own field into the same 4 entities, many times.
    let mut blueprint_props = serde_json::Map::new();
    for i in 0..24 {
        blueprint_props.insert(format!("f{i}"), json!({"type": "number"}));
    }
    let a = s
        .post(
            "/v1/blueprints",
            json!({"identifier": "wide", "title": "Wide", "schema": {"properties": blueprint_props}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = std::sync::Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                for e in 0..4 {
                    let a = s
                        .post(
                            "/v1/blueprints/wide/entities?upsert=true&merge=true",
                            json!({"identifier": format!("e{e}"), "properties": {format!("f{i}"): round}}),
                        )
                        .await;
                    assert!(a.status.is_success(), "{}", a.body);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    for e in 0..4 {
        let a = s.get(&format!("/v1/blueprints/wide/entities/e{e}")).await;
        let props = a.body["entity"]["properties"].as_object().expect("props");
        for i in 0..24 {
            assert_eq!(props.get(&format!("f{i}")), Some(&json!(4)), "e{e}.f{i} kept its last value: {props:?}");
        }
    }
}
