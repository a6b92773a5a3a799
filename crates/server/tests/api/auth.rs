use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{CLIENT_ID, CLIENT_SECRET, TestServer};

#[tokio::test]
async fn token_has_port_shape_and_is_reused() {
    let s = TestServer::start().await;
    let body = json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET});
    let a = s.raw(Method::POST, "/v1/auth/access_token", Some(body.to_string().into_bytes()), None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["ok"], json!(true));
    assert_eq!(a.body["tokenType"], json!("Bearer"));
    assert_eq!(a.body["expiresIn"], json!(10800));
    let token = a.body["accessToken"].as_str().expect("token");
    assert_eq!(token, s.token, "the same token until it nears expiry");
    // Port's clients read `isMachine` from the JWT without verifying it.
    use base64::Engine;
    let claims = token.split('.').nth(1).expect("claims");
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).expect("b64"))
            .expect("json");
    assert_eq!(claims["isMachine"], json!(true));
    assert!(claims["exp"].as_i64().expect("exp") > claims["iat"].as_i64().expect("iat"));
}

#[tokio::test]
async fn wrong_credentials_and_missing_tokens_are_401() {
    let s = TestServer::start().await;
    for body in [
        json!({"clientId": CLIENT_ID, "clientSecret": "wrong"}),
        json!({"clientId": "nobody", "clientSecret": CLIENT_SECRET}),
    ] {
        s.raw(Method::POST, "/v1/auth/access_token", Some(body.to_string().into_bytes()), None)
            .await
            .assert_error(401, "unauthorized");
    }
    s.raw(Method::POST, "/v1/auth/access_token", Some(b"{\"clientId\": 1}".to_vec()), None)
        .await
        .assert_error(422, "invalid_request");
    for (method, path) in [
        (Method::GET, "/v1/blueprints"),
        (Method::POST, "/v1/blueprints"),
        (Method::GET, "/v1/blueprints/service"),
        (Method::DELETE, "/v1/blueprints/service"),
        (Method::GET, "/v1/blueprints/service/entities"),
        (Method::POST, "/v1/blueprints/service/entities/bulk"),
        (Method::GET, "/v1/blueprints/service/entities/x"),
        (Method::DELETE, "/v1/blueprints/service/all-entities"),
        (Method::GET, "/v1/blueprints/service/entities-count"),
        (Method::POST, "/v1/blueprints/service/bulk/entities/delete"),
        (Method::GET, "/v1/migrations/x"),
    ] {
        s.raw(method.clone(), path, None, None).await.assert_error(401, "unauthorized");
        s.raw(method, path, None, Some("not.a.token")).await.assert_error(401, "unauthorized");
    }
    // A tampered token is refused.
    let tampered = format!("{}x", s.token);
    s.raw(Method::GET, "/v1/blueprints", None, Some(&tampered)).await.assert_error(401, "unauthorized");
    // So is a well-formed token, for the real admin credential and its secret version, signed with another
    // key (the review's T7: the claims are right, only the key is wrong).
    let now = berth_server::now().millis() / 1000;
    let forged = crate::common::admin_token_signed_with("another-key-of-the-right-length-0123456789", now);
    s.raw(Method::GET, "/v1/blueprints", None, Some(&forged)).await.assert_error(401, "unauthorized");
    // Signed with the server's own key, the same claims pass: the key is what was refused above.
    let key = berth_server::keys::read_key_file(&s.data_dir.join("signing-key.json")).expect("reads").expect("file").0;
    let genuine = crate::common::admin_token_signed_with(&key.current, now);
    assert_eq!(s.raw(Method::GET, "/v1/blueprints", None, Some(&genuine)).await.status, reqwest::StatusCode::OK);
}

#[tokio::test]
async fn open_routes_need_no_token() {
    let s = TestServer::start().await;
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs", "/docs/redoc.standalone.js"] {
        let a = s.raw(Method::GET, path, None, None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
}

/// L5: a bootstrap Admin secret too short to resist guessing stops the start with a clear message.
#[tokio::test]
async fn a_short_bootstrap_secret_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = berth_server::ServerConfig::new(dir.path().to_path_buf());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.bootstrap_client_id = Some("admin".into());
    config.bootstrap_client_secret = Some("short".into());
    let started = berth_server::start(config).await;
    let message = started.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("at least 16 characters"), "{message}");
}
