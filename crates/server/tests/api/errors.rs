use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::TestServer;

#[tokio::test]
async fn malformed_bodies() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let path = "/v1/blueprints/service/entities";
    s.raw(Method::POST, path, Some(b"{\"identifier\": ".to_vec()), Some(&s.token))
        .await
        .assert_error(400, "invalid_json");
    s.raw(Method::POST, path, Some(b"".to_vec()), Some(&s.token)).await.assert_error(400, "invalid_json");
    s.raw(Method::POST, path, Some(vec![0xff, 0xfe, 0x00]), Some(&s.token)).await.assert_error(400, "invalid_json");
    // Deep nesting is refused by the parser, not by a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    s.raw(Method::POST, path, Some(deep.into_bytes()), Some(&s.token)).await.assert_error(400, "invalid_json");
    let deep_obj =
        format!("{{\"identifier\":\"x\",\"properties\":{{\"a\":{}1{}}}}}", "{\"k\":".repeat(200), "}".repeat(200));
    s.raw(Method::POST, path, Some(deep_obj.into_bytes()), Some(&s.token)).await.assert_error(400, "invalid_json");
    // Over the 1 MiB limit: 413 in the envelope.
    let huge = json!({"identifier": "big", "properties": {"a": "x".repeat(1_100_000)}});
    s.post(path, huge).await.assert_error(413, "payload_too_large");
    // Wrong shapes.
    s.post(path, json!([1, 2])).await.assert_error(422, "invalid_request");
    s.post("/v1/blueprints", json!("a string")).await.assert_error(422, "invalid_blueprint");
    assert_eq!(s.get("/v1/blueprints/service/entities-count").await.body["count"], json!(0));
}

#[tokio::test]
async fn bad_query_parameters_and_routes() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    s.post("/v1/blueprints/service/entities?upsert=maybe", json!({"identifier": "x"}))
        .await
        .assert_error(400, "bad_request");
    // Unknown parameters (Ocean sends some) are ignored.
    let a = s
        .post("/v1/blueprints/service/entities?ocean_info_event_type=resync&isPolling=true", json!({"identifier": "x"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    s.get("/v1/nothing-here").await.assert_error(404, "not_found");
    s.raw(Method::GET, "/nothing", None, None).await.assert_error(404, "not_found");
    s.call(Method::PATCH, "/v1/blueprints", Some(json!({}))).await.assert_error(405, "method_not_allowed");
    s.get("/v1/blueprints/service/entities/%FF").await.assert_error(400, "bad_request");
}

#[tokio::test]
async fn openapi_document_describes_the_routes() {
    let s = TestServer::start().await;
    let a = s.raw(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body["openapi"].as_str().expect("version").starts_with("3.1"));
    let paths = a.body["paths"].as_object().expect("paths");
    for p in [
        "/v1/auth/access_token",
        "/v1/blueprints",
        "/v1/blueprints/{blueprint}",
        "/v1/blueprints/{blueprint}/entities",
        "/v1/blueprints/{blueprint}/entities/{entity}",
        "/v1/blueprints/{blueprint}/entities/bulk",
        "/v1/blueprints/{blueprint}/bulk/entities/delete",
        "/v1/blueprints/{blueprint}/all-entities",
        "/v1/blueprints/{blueprint}/entities-count",
    ] {
        assert!(paths.contains_key(p), "{p} is documented");
    }
    assert!(a.body["components"]["securitySchemes"]["bearer"].is_object());
    let docs = s.raw(Method::GET, "/docs", None, None).await;
    assert!(docs.body.as_str().expect("html").contains("/docs/redoc.standalone.js"), "scripts are served locally");
}
