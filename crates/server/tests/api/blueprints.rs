use reqwest::StatusCode;
use serde_json::json;

use crate::common::TestServer;

#[tokio::test]
async fn create_get_list_replace_patch_delete() {
    let s = TestServer::start().await;
    let body = json!({"identifier": "service", "title": "Service", "icon": "Microservice", "x-extra": {"kept": true},
        "schema": {"properties": {"lang": {"type": "string", "enum": ["go"], "enumColors": {"go": "blue"}, "spec": "custom", "unknownKey": [1, 2]}},
                   "required": ["lang"]}});
    let a = s.post("/v1/blueprints", body.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["ok"], json!(true));
    let bp = &a.body["blueprint"];
    assert_eq!(bp["identifier"], json!("service"));
    assert_eq!(bp["schema"]["properties"]["lang"]["unknownKey"], json!([1, 2]), "unknown keys are echoed");
    assert_eq!(bp["schema"]["properties"]["lang"]["enumColors"], json!({"go": "blue"}));
    assert_eq!(bp["x-extra"], json!({"kept": true}));
    assert_eq!(bp["createdBy"], json!("test-admin"));
    assert!(bp["createdAt"].as_str().expect("createdAt").ends_with('Z'));
    assert!(a.seq() > 0);

    s.post("/v1/blueprints", body).await.assert_error(409, "conflict");

    let a = s.get("/v1/blueprints/service").await;
    assert_eq!(a.body["blueprint"]["title"], json!("Service"));
    let a = s.get("/v1/blueprints").await;
    assert!(a.body["blueprints"].as_array().expect("array").iter().any(|b| b["identifier"] == "service"));

    // PATCH is a merge patch: add a property, keep the rest.
    let a = s.patch("/v1/blueprints/service", json!({"schema": {"properties": {"port": {"type": "number"}}}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let props = &a.body["blueprint"]["schema"]["properties"];
    assert!(props.get("lang").is_some() && props.get("port").is_some(), "{props}");
    assert_eq!(a.body["blueprint"]["schema"]["required"], json!(["lang"]));

    // PUT replaces the whole definition.
    let a = s
        .put("/v1/blueprints/service", json!({"title": "Svc", "schema": {"properties": {"port": {"type": "number"}}}}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["blueprint"]["title"], json!("Svc"));
    assert!(a.body["blueprint"]["schema"]["properties"].get("lang").is_none());
    assert_eq!(a.body["blueprint"]["createdBy"], json!("test-admin"), "creation stamp kept");
    s.put("/v1/blueprints/service", json!({"identifier": "other", "title": "x", "schema": {}}))
        .await
        .assert_error(422, "invalid_request");

    let a = s.delete("/v1/blueprints/service").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    s.get("/v1/blueprints/service").await.assert_error(404, "not_found");
    s.delete("/v1/blueprints/service").await.assert_error(404, "not_found");
    s.patch("/v1/blueprints/service", json!({})).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn invalid_definitions_are_422_with_a_reason() {
    let s = TestServer::start().await;
    for (body, needle) in [
        (json!({"identifier": "x", "title": "X", "schema": {"properties": {"a": {"type": "text"}}}}), "type `text`"),
        (json!({"identifier": "x", "title": "X", "schema": {"properties": {}, "required": ["a"]}}), "`a`"),
        (
            json!({"identifier": "x", "title": "X", "schema": {"properties": {"a": {"type": "string", "format": "colour"}}}}),
            "format `colour`",
        ),
        (
            json!({"identifier": "x", "title": "X", "schema": {"properties": {"a": {"type": "string", "pattern": "(("}}}}),
            "pattern",
        ),
        (
            json!({"identifier": "x", "title": "X", "schema": {"properties": {"a": {"type": "number", "enum": ["one"]}}}}),
            "enum",
        ),
        (json!({"identifier": "x", "title": "X", "schema": {}, "relations": {"r": {"target": "ghost"}}}), "ghost"),
        (json!({"identifier": "x", "title": "X"}), "`schema`"),
        (json!({"title": "X", "schema": {}}), "`identifier`"),
        (
            json!({"identifier": "x", "title": "X", "schema": {"properties": {"a": {"type": "number", "minimum": 3, "maximum": 1}}}}),
            "minimum",
        ),
    ] {
        let a = s.post("/v1/blueprints", body.clone()).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {}", a.body);
        assert_eq!(a.body["ok"], json!(false));
        let msg = a.body["message"].as_str().expect("message");
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }
    let a = s.post("/v1/blueprints", json!({"identifier": "bad id", "title": "X", "schema": {}})).await;
    a.assert_error(422, "invalid_identifier");
    let a = s.post("/v1/blueprints", json!({"identifier": "x".repeat(101), "title": "X", "schema": {}})).await;
    a.assert_error(422, "invalid_identifier");
    assert!(
        s.get("/v1/blueprints").await.body["blueprints"].as_array().expect("array").is_empty(),
        "nothing half-written"
    );
}

#[tokio::test]
async fn staged_creation_like_ocean() {
    // Ocean: POST bare blueprints, then PATCH relations, then PATCH the rest.
    let s = TestServer::start().await;
    for id in ["a", "b"] {
        assert_eq!(
            s.post(
                "/v1/blueprints",
                json!({"identifier": id, "title": id, "schema": {"properties": {"p": {"type": "string"}}}})
            )
            .await
            .status,
            StatusCode::CREATED
        );
    }
    let a = s
        .patch("/v1/blueprints/a", json!({"relations": {"b": {"target": "b", "required": false, "many": true}}}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = s
        .patch("/v1/blueprints/a", json!({"mirrorProperties": {"bp": {"path": "b.p"}}, "calculationProperties": {"c": {"calculation": ".identifier", "type": "string"}}}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["blueprint"]["mirrorProperties"]["bp"]["path"], json!("b.p"));
    // b cannot go while a relates to it.
    s.delete("/v1/blueprints/b").await.assert_error(409, "has_dependents");
}

#[tokio::test]
async fn blueprint_with_entities_cannot_be_deleted_but_all_entities_can() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    s.post("/v1/blueprints/team/entities", json!({"identifier": "t1"})).await;
    s.post("/v1/blueprints/team/entities", json!({"identifier": "t2"})).await;
    let a = s.delete("/v1/blueprints/team").await;
    a.assert_error(409, "has_dependents");
    assert!(a.body["message"].as_str().expect("msg").contains("2 entities"));
    assert_eq!(s.get("/v1/blueprints/team/entities-count").await.body["count"], json!(2));
    // team is a relation target of service, so the blueprint itself stays.
    let a = s.delete("/v1/blueprints/team/all-entities?delete_blueprint=true").await;
    a.assert_error(409, "has_dependents");
    assert_eq!(s.get("/v1/blueprints/team/entities-count").await.body["count"], json!(2), "nothing half-applied");
    let a = s.delete("/v1/blueprints/team/all-entities").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let mid = a.body["migrationId"].as_str().expect("migrationId");
    let m = s.get(&format!("/v1/migrations/{mid}")).await;
    assert_eq!(m.body["migration"]["status"], json!("COMPLETED"));
    assert_eq!(m.body["migration"]["successCount"], json!(2));
    // The fields Ocean's `Migration` model requires.
    assert_eq!(m.body["migration"]["actor"], json!(crate::common::CLIENT_ID), "{}", m.body);
    assert_eq!(m.body["migration"]["sourceBlueprint"], json!("team"));
    assert_eq!(m.body["migration"]["mapping"], json!({}));
    assert_eq!(s.get("/v1/blueprints/team/entities-count").await.body["count"], json!(0));
    s.get("/v1/migrations/nope").await.assert_error(404, "not_found");
    // deployment has no relation into it: delete_blueprint works.
    s.post("/v1/blueprints/service/entities", json!({"identifier": "svc"})).await;
    s.post("/v1/blueprints/deployment/entities", json!({"identifier": "d", "relations": {"service": "svc"}})).await;
    let a = s.delete("/v1/blueprints/deployment/all-entities?delete_blueprint=true").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    s.get("/v1/blueprints/deployment").await.assert_error(404, "not_found");
}
