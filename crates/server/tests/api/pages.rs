//! Pages (`/v1/pages`), the first kind of definition object: Port's routes and shapes, checked bodies,
//! widgets changed one at a time, Admin-only changes, the audit log, and a restart.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;

fn widget_ids(page: &Value) -> Vec<String> {
    page["widgets"].as_array().expect("widgets").iter().map(|w| w["id"].as_str().expect("id").to_string()).collect()
}

#[tokio::test]
async fn pages_are_created_read_changed_and_deleted_as_port_serves_them() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let body = json!({"identifier": "overview", "title": "Overview", "icon": "Home",
        "widgets": [{"type": "markdown", "markdown": "# Hi"}, {"id": "w-count", "type": "entities-number-chart", "blueprint": "service"}, {"type": "table-entities-explorer"}]});
    let a = s.post("/v1/pages", body.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let page = &a.body["page"];
    assert_eq!((page["identifier"].as_str(), page["type"].as_str()), (Some("overview"), Some("dashboard")), "{page}");
    assert_eq!(widget_ids(page), vec!["widget-1", "w-count", "widget-2"], "widgets without an id get one");
    assert_eq!(page["createdBy"], json!(crate::common::CLIENT_ID));
    s.post("/v1/pages", body).await.assert_error(409, "conflict");

    // Read: one, and the list.
    let one = s.get("/v1/pages/overview").await;
    assert_eq!(one.body["page"]["widgets"][1]["blueprint"], json!("service"));
    s.get("/v1/pages/nope").await.assert_error(404, "not_found");
    let b = s.post("/v1/pages", json!({"identifier": "services", "title": "Services", "type": "blueprint-entities", "blueprint": "service"})).await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    let list = s.get("/v1/pages").await;
    let ids: Vec<&str> =
        list.body["pages"].as_array().expect("pages").iter().map(|p| p["identifier"].as_str().expect("id")).collect();
    assert_eq!(ids, vec!["overview", "services"]);

    // A widget changed and removed one at a time; the rest of the page stays.
    let a = s.patch("/v1/pages/overview/widgets/w-count", json!({"title": "Services", "id": "renamed"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body["page"]["widgets"][1],
        json!({"id": "w-count", "type": "entities-number-chart", "blueprint": "service", "title": "Services"})
    );
    let a = s.delete("/v1/pages/overview/widgets/widget-1").await;
    assert_eq!(widget_ids(&a.body["page"]), vec!["w-count", "widget-2"]);
    assert_eq!(a.body["page"]["icon"], json!("Home"));
    s.delete("/v1/pages/overview/widgets/widget-1").await.assert_error(404, "not_found");
    s.patch("/v1/pages/ghost/widgets/x", json!({})).await.assert_error(404, "not_found");
    s.patch("/v1/pages/overview/widgets/w-count", json!({"type": 7})).await.assert_error(422, "invalid_request");

    // PUT replaces (or creates); the body's identifier must agree with the path.
    let a = s.put("/v1/pages/overview", json!({"title": "Home page", "type": "home"})).await;
    assert_eq!((a.status, a.body["page"]["widgets"].clone()), (StatusCode::OK, json!([])), "{}", a.body);
    assert_eq!(a.body["page"]["createdBy"], json!(crate::common::CLIENT_ID));
    let a = s.put("/v1/pages/new-one", json!({"title": "New", "identifier": "new-one"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    s.put("/v1/pages/new-one", json!({"title": "New", "identifier": "other"}))
        .await
        .assert_error(422, "invalid_request");

    // Bad bodies are refused, and nothing is written.
    let mut too_many = Vec::new();
    for i in 0..101 {
        too_many.push(json!({"type": "markdown", "id": format!("w{i}")}));
    }
    for (bad, status, code) in [
        (json!({"identifier": "x"}), 422, "invalid_request"),
        (json!({"identifier": "x", "title": "X", "type": "carousel"}), 422, "invalid_request"),
        (json!({"identifier": "x", "title": "X", "widgets": {}}), 422, "invalid_request"),
        (
            json!({"identifier": "x", "title": "X", "widgets": [{"id": "a", "type": "t"}, {"id": "a", "type": "t"}]}),
            422,
            "invalid_request",
        ),
        (json!({"identifier": "x", "title": "X", "widgets": [{"id": "a"}]}), 422, "invalid_request"),
        (json!({"identifier": "x", "title": "X", "widgets": too_many}), 422, "invalid_request"),
        (json!({"identifier": "x", "title": "X", "type": "entity"}), 422, "invalid_request"),
        (json!({"identifier": "x", "title": "X", "type": "entity", "blueprint": "nope"}), 404, "not_found"),
        (json!({"identifier": "bad id!", "title": "X"}), 422, "invalid_identifier"),
        (json!({"title": "X"}), 422, "invalid_request"),
        (json!({"identifier": "x", "title": "X", "locked": "yes"}), 422, "invalid_request"),
    ] {
        s.post("/v1/pages", bad.clone()).await.assert_error(status, code);
    }
    s.get("/v1/pages/x").await.assert_error(404, "not_found");
    assert_eq!(s.get("/v1/pages").await.body["pages"].as_array().expect("pages").len(), 3);

    // Deleting a blueprint a page names is the page's business: the page stays, as in Port.
    assert_eq!(s.delete("/v1/pages/services").await.status, StatusCode::OK);
    s.delete("/v1/pages/services").await.assert_error(404, "not_found");

    // The audit log shows page changes with their diff.
    let audit = s.get("/v1/audit-log?identifier=overview&resources=page&status=SUCCESS").await;
    let actions: Vec<&str> =
        audit.body["audits"].as_array().expect("audits").iter().map(|r| r["action"].as_str().expect("a")).collect();
    assert_eq!(actions, vec!["UPDATE", "UPDATE", "UPDATE", "CREATE"], "{}", audit.body);
    assert_eq!(audit.body["audits"][0]["diff"]["before"]["title"], json!("Overview"));
    assert_eq!(audit.body["audits"][0]["diff"]["after"]["title"], json!("Home page"));

    // A restart (log and snapshot) keeps them.
    let (dir, data) = s.stop().await;
    let s = TestServer::start_in(data, false).await;
    assert_eq!(s.get("/v1/pages/overview").await.body["page"]["title"], json!("Home page"));
    assert_eq!(s.get("/v1/pages/new-one").await.status, StatusCode::OK);
    drop(dir);
}

#[tokio::test]
async fn members_read_pages_and_cannot_change_them() {
    let s = TestServer::start().await;
    assert_eq!(s.post("/v1/pages", json!({"identifier": "home", "title": "Home"})).await.status, StatusCode::CREATED);
    let app = s.post("/v1/apps", json!({"name": "member"})).await;
    let member = s
        .token_for(
            app.body["app"]["clientId"].as_str().expect("id"),
            app.body["app"]["secret"].as_str().expect("secret"),
        )
        .await;
    let read = s.raw(Method::GET, "/v1/pages/home", None, Some(&member)).await;
    assert_eq!(read.status, StatusCode::OK);
    let list = s.raw(Method::GET, "/v1/pages", None, Some(&member)).await;
    assert_eq!(list.body["pages"].as_array().expect("pages").len(), 1);
    for (method, path) in [
        (Method::POST, "/v1/pages"),
        (Method::PUT, "/v1/pages/home"),
        (Method::DELETE, "/v1/pages/home"),
        (Method::PATCH, "/v1/pages/home/widgets/w"),
        (Method::DELETE, "/v1/pages/home/widgets/w"),
    ] {
        let a =
            s.raw(method.clone(), path, Some(br#"{"identifier": "x", "title": "X"}"#.to_vec()), Some(&member)).await;
        a.assert_error(403, "forbidden");
    }
    assert_eq!(s.get("/v1/pages").await.body["pages"].as_array().expect("pages").len(), 1, "nothing changed");
    // The refused attempts are audited as page changes.
    // (recorded in the background: the answer does not wait for the record)
    let mut recorded = 0;
    for _ in 0..100 {
        let audit = s.get("/v1/audit-log?status=FAILURE&resources=page").await;
        recorded = audit.body["audits"].as_array().expect("audits").len();
        if recorded == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(recorded, 5);
}

/// Page permissions (Port's `GET/PATCH /v1/pages/{id}/permissions`): a page read only by Admins and a team is
/// missing, for everyone else, exactly like a page that does not exist.
#[tokio::test]
async fn page_permissions_hide_a_page_like_a_missing_one() {
    let s = TestServer::start().await;
    assert_eq!(s.post("/v1/teams", json!({"name": "sre"})).await.status, StatusCode::CREATED);
    assert_eq!(s.post("/v1/pages", json!({"identifier": "ops", "title": "Ops"})).await.status, StatusCode::CREATED);
    let outsider = crate::common::app_token(&s, "outsider", &["Member"], &[]).await;
    let insider = crate::common::app_token(&s, "insider", &["Member"], &["sre"]).await;
    // The default: everyone signed in reads it.
    let p = s.get("/v1/pages/ops/permissions").await;
    assert_eq!(p.body["permissions"], json!({"read": {"users": [], "roles": [], "teams": []}}));
    assert_eq!(s.raw(Method::GET, "/v1/pages/ops", None, Some(&outsider)).await.status, StatusCode::OK);

    let a = s.patch("/v1/pages/ops/permissions", json!({"read": {"users": [], "roles": [], "teams": ["sre"]}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["permissions"]["read"]["teams"], json!(["sre"]));
    let hidden = s.raw(Method::GET, "/v1/pages/ops", None, Some(&outsider)).await;
    let missing = s.raw(Method::GET, "/v1/pages/nope", None, Some(&outsider)).await;
    assert_eq!((hidden.status, missing.status), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(
        hidden.body["message"].as_str().map(|m| m.replace("ops", "nope")),
        missing.body["message"].as_str().map(str::to_string)
    );
    let listed = s.raw(Method::GET, "/v1/pages", None, Some(&outsider)).await;
    assert_eq!(listed.body["pages"], json!([]));
    s.raw(Method::GET, "/v1/pages/ops/permissions", None, Some(&outsider)).await.assert_error(404, "not_found");
    assert_eq!(s.raw(Method::GET, "/v1/pages/ops", None, Some(&insider)).await.status, StatusCode::OK);
    // Its audit records too: none for the outsider (as for a page that never existed), all for the insider.
    let audit = |token: String, id: &'static str| {
        let s = &s;
        async move {
            s.raw(Method::GET, &format!("/v1/audit-log?identifier={id}"), None, Some(&token)).await.body["audits"]
                .clone()
        }
    };
    assert_eq!(audit(outsider.clone(), "ops").await, json!([]));
    assert_eq!(audit(outsider.clone(), "nope").await, json!([]));
    assert_eq!(audit(insider.clone(), "ops").await.as_array().map(Vec::len), Some(2), "created, then restricted");
    let admin_view = s.get("/v1/pages/ops").await;
    assert!(admin_view.body["page"].get("permissions").is_none(), "a page's view leaves its permissions out");

    // Only Admins change them; `update` may not grant anyone; bad shapes are 422s.
    let body = br#"{"read": {"teams": []}}"#.to_vec();
    s.raw(Method::PATCH, "/v1/pages/ops/permissions", Some(body), Some(&insider)).await.assert_error(403, "forbidden");
    for bad in [
        json!({"update": {"users": ["x@y.z"]}}),
        json!({"read": {"groups": ["a"]}}),
        json!({"read": {"users": "everyone"}}),
        json!({"write": {}}),
    ] {
        s.patch("/v1/pages/ops/permissions", bad).await.assert_error(422, "invalid_request");
    }
    assert_eq!(s.patch("/v1/pages/ops/permissions", json!({"update": {"users": []}})).await.status, StatusCode::OK);
    s.patch("/v1/pages/nope/permissions", json!({"read": {}})).await.assert_error(404, "not_found");
}
