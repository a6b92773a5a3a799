//! Blueprint permissions and ownership: team members write what their team owns, moderators their blueprint,
//! per-property grants, read policies that narrow search results, counts and aggregates alike, ownership
//! inherited along a relation (and following it when it changes), and refused writes in the audit log.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;
pub use crate::common::app_token;

/// A credential with these roles and teams, and its token.
pub async fn call(s: &TestServer, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
    let a = s.raw(method, path, bytes, Some(token)).await;
    (a.status, a.body)
}

/// Members read only the services their team owns (the read scope the scope tests hide team B's with).
pub async fn read_own_team_only(s: &TestServer) {
    let r = s
        .call(
            Method::PATCH,
            "/v1/blueprints/service/permissions",
            Some(json!({"entities": {"read": {"roles": [], "ownedByTeam": true}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

pub async fn setup() -> TestServer {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    for t in ["A", "B"] {
        assert_eq!(s.post("/v1/teams", json!({"name": t})).await.status, StatusCode::CREATED);
    }
    for (id, team, replicas) in [("svc-a", "A", 1), ("svc-a2", "A", 5), ("svc-b", "B", 4)] {
        let a = s
            .post(
                "/v1/blueprints/service/entities",
                json!({"identifier": id, "team": [team], "properties": {"replicas": replicas}}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    s
}

#[tokio::test]
async fn members_write_what_their_team_owns_and_moderators_their_blueprint() {
    let s = setup().await;
    let a = app_token(&s, "member-a", &["Member"], &["A"]).await;
    let b = app_token(&s, "member-b", &["Member"], &["B"]).await;
    let moderator = app_token(&s, "moderator", &["service-moderator"], &[]).await;
    let patch = |id: &str| format!("/v1/blueprints/service/entities/{id}");

    // Defaults: a Member changes what its team owns, and nothing else.
    let (st, body) = call(&s, &a, Method::PATCH, &patch("svc-a"), Some(json!({"properties": {"replicas": 2}}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = call(&s, &a, Method::PATCH, &patch("svc-b"), Some(json!({"properties": {"replicas": 2}}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], json!("forbidden"));
    assert!(body["message"].as_str().expect("m").contains("replicas"), "{body}");
    let create = |team: Value| json!({"identifier": "new-svc", "team": team});
    let (st, _) = call(&s, &a, Method::POST, "/v1/blueprints/service/entities", Some(create(json!(["B"])))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a Member cannot create for another team");
    let (st, _) = call(&s, &a, Method::POST, "/v1/blueprints/service/entities", Some(create(json!([])))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "nor unowned");
    let (st, body) = call(&s, &a, Method::POST, "/v1/blueprints/service/entities", Some(create(json!(["A"])))).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let (st, _) = call(&s, &a, Method::PATCH, &patch("svc-a"), Some(json!({"team": ["B"]}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "giving an entity away needs ownership after the change too");
    let (st, _) = call(&s, &a, Method::DELETE, &patch("svc-b"), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(&s, &b, Method::DELETE, &patch("svc-b"), None).await;
    assert_eq!(st, StatusCode::OK, "B deletes its own");
    // Bulk items are judged one by one.
    let bulk = json!({"entities": [{"identifier": "svc-a", "team": ["A"], "properties": {"replicas": 9}},
                                   {"identifier": "svc-a2", "team": ["A"], "properties": {"replicas": 9}}]});
    let (st, body) = call(&s, &b, Method::POST, "/v1/blueprints/service/entities/bulk", Some(bulk)).await;
    assert_eq!(st.as_u16(), 207, "{body}");
    assert_eq!(body["errors"].as_array().expect("errors").len(), 2, "{body}");

    // A moderator changes every entity of its blueprint, and no other blueprint's.
    let (st, body) =
        call(&s, &moderator, Method::PATCH, &patch("svc-a"), Some(json!({"properties": {"replicas": 7}}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let dep = json!({"identifier": "d1", "relations": {"service": "svc-a"}});
    let (st, _) = call(&s, &moderator, Method::POST, "/v1/blueprints/deployment/entities", Some(dep.clone())).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(
        &s,
        &moderator,
        Method::POST,
        "/v1/blueprints",
        Some(json!({"identifier": "x", "title": "X", "schema": {}})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "moderators do not change blueprints");

    // Per-property grants: any Member may change `replicas`, only owners the rest.
    let a2 = s
        .call(
            Method::PATCH,
            "/v1/blueprints/service/permissions",
            Some(json!({"entities": {"updateProperties": {"replicas": {"roles": ["Member"]}}}})),
        )
        .await;
    assert_eq!(a2.status, StatusCode::OK, "{}", a2.body);
    assert_eq!(a2.body["permissions"]["entities"]["updateProperties"]["replicas"]["roles"], json!(["Member"]));
    let (st, body) = call(&s, &b, Method::PATCH, &patch("svc-a"), Some(json!({"properties": {"replicas": 3}}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, _) = call(&s, &b, Method::PATCH, &patch("svc-a"), Some(json!({"properties": {"language": "go"}}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Only Admins change permissions; bad permissions are a 422.
    let (st, _) = call(&s, &moderator, Method::PATCH, "/v1/blueprints/service/permissions", Some(json!({}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    s.call(Method::PATCH, "/v1/blueprints/service/permissions", Some(json!({"entities": {"update": {"policy": {}}}})))
        .await
        .assert_error(422, "invalid_request");

    // Denied writes are in the audit log, with who, what and why; filters combine.
    let audit = s.get("/v1/audit-log?status=FAILURE&blueprint=service&action=DELETE").await;
    let records = audit.body["audits"].as_array().expect("audits");
    assert_eq!(records.len(), 1, "{}", audit.body);
    assert_eq!(records[0]["status"], json!("FAILURE"));
    assert_eq!(records[0]["context"]["entityIdentifier"], json!("svc-b"));
    assert_eq!(records[0]["diff"]["after"]["status"], json!(403));
    assert!(records[0]["trigger"]["by"]["userId"].as_str().expect("by").starts_with("berth_"));
    let all_failures = s.get("/v1/audit-log?status=FAILURE").await;
    assert!(all_failures.body["audits"].as_array().expect("a").len() >= 8, "{}", all_failures.body);
    let validation =
        s.post("/v1/blueprints/service/entities", json!({"identifier": "bad", "properties": {"replicas": -1}})).await;
    assert_eq!(validation.status, StatusCode::UNPROCESSABLE_ENTITY);
    let audit = s.get("/v1/audit-log?status=FAILURE&identifier=bad").await;
    assert_eq!(
        audit.body["audits"][0]["diff"]["after"]["status"],
        json!(422),
        "validation failures too: {}",
        audit.body
    );
}

#[tokio::test]
async fn read_policies_hide_entities_from_search_counts_and_aggregates() {
    let s = setup().await;
    let a = app_token(&s, "member-a", &["Member"], &["A"]).await;
    let ids = |body: &Value| -> Vec<String> {
        let mut v: Vec<String> = body["entities"]
            .as_array()
            .expect("entities")
            .iter()
            .map(|e| e["identifier"].as_str().expect("id").to_string())
            .collect();
        v.sort();
        v
    };
    let count_agg = json!({"func": "count", "query": {"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"}]}});

    // Only what team A owns.
    read_own_team_only(&s).await;
    let (_, body) = call(&s, &a, Method::GET, "/v1/blueprints/service/entities", None).await;
    assert_eq!(ids(&body), ["svc-a", "svc-a2"]);
    let (_, body) = call(&s, &a, Method::POST, "/v1/blueprints/service/entities/search", Some(json!({}))).await;
    assert_eq!(ids(&body), ["svc-a", "svc-a2"]);
    let (_, body) = call(
        &s,
        &a,
        Method::POST,
        "/v1/entities/search",
        Some(json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"}]})),
    )
    .await;
    assert_eq!(ids(&body), ["svc-a", "svc-a2"]);
    let (_, body) = call(&s, &a, Method::GET, "/v1/blueprints/service/entities-count", None).await;
    assert_eq!(body["count"], json!(2));
    let (_, body) = call(&s, &a, Method::POST, "/v1/entities/aggregate", Some(count_agg.clone())).await;
    assert_eq!(body["result"], json!(2), "{body}");
    let (st, _) = call(&s, &a, Method::GET, "/v1/blueprints/service/entities/svc-b", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "hidden entities do not exist for the caller");
    // The Admin still sees all.
    assert_eq!(s.get("/v1/blueprints/service/entities-count").await.body["count"], json!(3));
    // The audit log shows a Member the history of what it may read, and nothing of the rest.
    let (_, body) = call(&s, &a, Method::GET, "/v1/audit-log?identifier=svc-a", None).await;
    assert_eq!(body["audits"].as_array().expect("audits").len(), 1, "{body}");
    let (_, body) = call(&s, &a, Method::GET, "/v1/audit-log?identifier=svc-b", None).await;
    assert_eq!(body["audits"], json!([]), "{body}");
    assert_eq!(s.get("/v1/audit-log?identifier=svc-b").await.body["audits"].as_array().expect("a").len(), 1);

    // A policy: Members read services with at least 4 replicas.
    let r = s
        .call(
            Method::PATCH,
            "/v1/blueprints/service/permissions",
            Some(json!({"entities": {"read": {"roles": ["Member"], "ownedByTeam": false,
            "policy": {"combinator": "and", "rules": [{"property": "replicas", "operator": ">=", "value": 4}]}}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (_, body) = call(
        &s,
        &a,
        Method::POST,
        "/v1/blueprints/service/entities/search",
        Some(json!({"query": {"combinator": "and", "rules": [{"property": "replicas", "operator": ">", "value": 0}]}})),
    )
    .await;
    assert_eq!(ids(&body), ["svc-a2", "svc-b"]);
    let (_, body) = call(&s, &a, Method::POST, "/v1/entities/aggregate", Some(count_agg)).await;
    assert_eq!(body["result"], json!(2), "{body}");
    let facets = json!({"func": "countValues", "property": "replicas", "query": {"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"}]}});
    let (_, body) = call(&s, &a, Method::POST, "/v1/entities/aggregate", Some(facets)).await;
    assert!(body["result"].get("1").is_none(), "facets skip hidden entities: {body}");
    // Nobody else: no read at all.
    let r = s
        .call(
            Method::PATCH,
            "/v1/blueprints/service/permissions",
            Some(json!({"entities": {"read": {"roles": [], "policy": null}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let (_, body) = call(&s, &a, Method::GET, "/v1/blueprints/service/entities-count", None).await;
    assert_eq!(body["count"], json!(0));
}

#[tokio::test]
async fn ownership_inherited_through_a_relation_follows_it() {
    let s = setup().await;
    let a = app_token(&s, "member-a", &["Member"], &["A"]).await;
    let b = app_token(&s, "member-b", &["Member"], &["B"]).await;
    // A bad path is refused; a good one is kept.
    s.patch("/v1/blueprints/deployment", json!({"ownership": {"type": "Inherited", "path": "nope"}}))
        .await
        .assert_error(422, "invalid_blueprint");
    let r = s.patch("/v1/blueprints/deployment", json!({"ownership": {"type": "Inherited", "path": "service"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .call(
            Method::PATCH,
            "/v1/blueprints/deployment/permissions",
            Some(json!({"entities": {"read": {"roles": [], "ownedByTeam": true}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Team A registers a deployment of its own service; B may not.
    let d1 = json!({"identifier": "d1", "properties": {"version": "1"}, "relations": {"service": "svc-a"}});
    let (st, _) = call(&s, &b, Method::POST, "/v1/blueprints/deployment/entities", Some(d1.clone())).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, body) = call(&s, &a, Method::POST, "/v1/blueprints/deployment/entities", Some(d1)).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let upd = Some(json!({"properties": {"version": "2"}}));
    assert_eq!(
        call(&s, &a, Method::PATCH, "/v1/blueprints/deployment/entities/d1", upd.clone()).await.0,
        StatusCode::OK
    );
    // B may not read d1 either: for B it does not exist (a 404, not a 403 that would tell it does).
    assert_eq!(
        call(&s, &b, Method::PATCH, "/v1/blueprints/deployment/entities/d1", upd.clone()).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(&s, &a, Method::GET, "/v1/blueprints/deployment/entities-count", None).await.1["count"], json!(1));
    assert_eq!(call(&s, &b, Method::GET, "/v1/blueprints/deployment/entities-count", None).await.1["count"], json!(0));

    // The relation moves to B's service: ownership moves with it, for writes and reads.
    let r = s.patch("/v1/blueprints/deployment/entities/d1", json!({"relations": {"service": "svc-b"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        call(&s, &a, Method::PATCH, "/v1/blueprints/deployment/entities/d1", upd.clone()).await.0,
        StatusCode::NOT_FOUND,
        "A no longer reads d1, so it cannot find it to change it"
    );
    assert_eq!(call(&s, &b, Method::PATCH, "/v1/blueprints/deployment/entities/d1", upd).await.0, StatusCode::OK);
    assert_eq!(call(&s, &a, Method::GET, "/v1/blueprints/deployment/entities/d1", None).await.0, StatusCode::NOT_FOUND);
    let (_, body) = call(&s, &b, Method::POST, "/v1/blueprints/deployment/entities/search", Some(json!({}))).await;
    assert_eq!(body["entities"].as_array().expect("e").len(), 1, "{body}");
    // And when the service itself changes team.
    let r = s.patch("/v1/blueprints/service/entities/svc-b", json!({"team": ["A"]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(call(&s, &a, Method::GET, "/v1/blueprints/deployment/entities/d1", None).await.0, StatusCode::OK);
}
