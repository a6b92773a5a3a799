//! Users: invite, accept, change, delete; teams as the one source of membership; the last-Admin guard; what
//! the audit log shows of users (never hashes or codes).

use reqwest::StatusCode;
use serde_json::json;

use crate::common::TestServer;

#[tokio::test]
async fn invite_accept_change_and_delete_a_user() {
    let s = TestServer::start().await;
    // The generated first admin exists.
    let a = s.get("/v1/users").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let users = a.body["users"].as_array().expect("users");
    assert_eq!(users.len(), 1, "{}", a.body);
    assert_eq!(users[0]["email"], json!(berth_server::GENERATED_ADMIN_EMAIL));
    assert!(users[0].get("passwordHash").is_none(), "no hash in {}", a.body);

    assert_eq!(s.post("/v1/teams", json!({"name": "payments"})).await.status, StatusCode::CREATED);
    assert_eq!(s.post("/v1/teams", json!({"name": "search"})).await.status, StatusCode::CREATED);

    // Invite: unknown team, bad email, bad role are 422s and write nothing.
    for (invitee, hint) in [
        (json!({"email": "ann@example.com", "teams": ["nope"]}), "no team named"),
        (json!({"email": "not-an-email"}), "not an email"),
        (json!({"email": "ann@example.com", "roles": ["Owner"]}), "unknown role"),
    ] {
        let a = s.post("/v1/users/invite", json!({"invitee": invitee})).await;
        a.assert_error(422, "invalid_request");
        assert!(a.body["message"].as_str().expect("m").contains(hint), "{}", a.body);
    }
    assert_eq!(s.get("/v1/users").await.body["users"].as_array().expect("users").len(), 1);

    let a = s
        .post(
            "/v1/users/invite",
            json!({"invitee": {"email": " Ann@Example.com ", "roles": ["Member"], "teams": ["payments"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["user"]["email"], json!("ann@example.com"));
    assert_eq!(a.body["user"]["status"], json!("invited"));
    assert_eq!(a.body["user"]["teamsIdentifiers"], json!(["payments"]));
    let code = a.body["invitation"]["code"].as_str().expect("code").to_string();
    assert!(a.body["invitation"]["url"].as_str().expect("url").starts_with("/invite?"), "{}", a.body);
    assert_eq!(s.get("/v1/teams/payments").await.body["team"]["members"], json!(["ann@example.com"]));
    s.post("/v1/users/invite", json!({"invitee": {"email": "ann@example.com"}})).await.assert_error(409, "conflict");

    // Accepting: a wrong code, a short password, then the right one; a second use fails.
    let accept = |code: String, password: &'static str| {
        let s = &s;
        async move {
            s.raw(
                reqwest::Method::POST,
                "/v1/users/accept-invite",
                Some(
                    serde_json::to_vec(&json!({"email": "ann@example.com", "code": code, "password": password}))
                        .expect("json"),
                ),
                None,
            )
            .await
        }
    };
    accept("0".repeat(48), "long enough password").await.assert_error(401, "unauthorized");
    accept(code.clone(), "short").await.assert_error(422, "invalid_request");
    let a = accept(code.clone(), "long enough password").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["user"]["status"], json!("active"));
    accept(code, "another password!").await.assert_error(401, "unauthorized");

    // Teams move with PATCH; membership lives in the teams.
    let a = s
        .patch(
            "/v1/users/ann@example.com",
            json!({"teams": ["search"], "firstName": "Ann", "roles": ["service-moderator"]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["user"]["teamsIdentifiers"], json!(["search"]));
    assert_eq!(a.body["user"]["roles"], json!([{"name": "service-moderator"}]), "Port's shape");
    assert_eq!(s.get("/v1/teams/payments").await.body["team"]["members"], json!([]));
    assert_eq!(s.get("/v1/teams/search").await.body["team"]["members"], json!(["ann@example.com"]));
    s.patch("/v1/users/ann@example.com", json!({"status": "invited"})).await.assert_error(422, "invalid_request");
    s.patch("/v1/users/nobody@example.com", json!({"firstName": "x"})).await.assert_error(404, "not_found");
    s.patch("/v1/users/ann@example.com", json!({"shoeSize": 9})).await.assert_error(422, "invalid_request");
    // What Port's clients send besides: accepted, and nothing else changes.
    let a = s
        .patch("/v1/users/ann@example.com", json!({"inactivityTimeout": 30, "email": "ann@example.com", "picture": ""}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["user"]["teams"], json!(["search"]), "teams as names, as Port lists them");

    // The audit log shows user changes with their diff, never a hash or a code.
    let a = s.get("/v1/audit-log?resources=user&status=SUCCESS").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let text = a.body.to_string();
    assert!(
        !text.contains("argon2") && !text.contains("Sha256") && !text.contains("passwordHash"),
        "secrets leaked: {text}"
    );
    // The newest record is the PATCH with Port's extra keys; the one before it changed roles and name.
    let first = &a.body["audits"][1];
    assert_eq!(first["action"], json!("UPDATE"), "{first}");
    assert_eq!(first["diff"]["before"]["roles"], json!([{"name": "Member"}]), "{first}");
    assert_eq!(first["diff"]["after"]["firstName"], json!("Ann"), "{first}");

    // Delete: the user leaves its teams too.
    let a = s.delete("/v1/users/ann@example.com").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(s.get("/v1/teams/search").await.body["team"]["members"], json!([]));
    s.get("/v1/users/ann@example.com").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted_or_deleted() {
    let s = TestServer::start().await;
    let admin = berth_server::GENERATED_ADMIN_EMAIL;
    // Another Admin exists (the test's bootstrap credential), so the user may be demoted.
    let a = s.patch(&format!("/v1/users/{admin}"), json!({"roles": ["Member"]})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // Now the credential is the last Admin: demoting it must fail.
    let a = s.put(&format!("/v1/apps/{}", crate::common::CLIENT_ID), json!({"name": "x", "roles": ["Member"]})).await;
    a.assert_error(409, "has_dependents");
    // Promote the user back, then the credential may go; then the user is the last and stays.
    assert_eq!(s.patch(&format!("/v1/users/{admin}"), json!({"roles": ["Admin"]})).await.status, StatusCode::OK);
    let a = s.patch(&format!("/v1/users/{admin}"), json!({"status": "disabled"})).await;
    assert_eq!(a.status, StatusCode::OK, "a disabled admin is fine while the credential is an Admin: {}", a.body);
    let a = s.delete(&format!("/v1/apps/{}", crate::common::CLIENT_ID)).await;
    a.assert_error(409, "has_dependents");
    // An invited Admin who has not set a password cannot act: it does not count either (security review L3).
    let a =
        s.post("/v1/users/invite", json!({"invitee": {"email": "new-admin@example.com", "roles": ["Admin"]}})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = s.delete(&format!("/v1/apps/{}", crate::common::CLIENT_ID)).await;
    a.assert_error(409, "has_dependents");
}
