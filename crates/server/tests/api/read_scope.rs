//! Every read path narrowed to what the caller may read (the security review's C1, H1, H2, M1, M2): a Member
//! whose read permission hides `svc-b` gets, on every path, the same answer whether or not `svc-b` exists.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;
use crate::permissions::{app_token, call, read_own_team_only, setup};

/// A server where Members read only the services their team owns, and member A's token (team A).
async fn hidden_b() -> (TestServer, String) {
    let s = setup().await;
    read_own_team_only(&s).await;
    let a = app_token(&s, "member-a", &["Member"], &["A"]).await;
    (s, a)
}

fn ids(body: &Value) -> Vec<String> {
    let mut v: Vec<String> = body["entities"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter_map(|e| e["identifier"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// C1: a rule object that is also a group, or a rule and a property-schema rule, is refused; honest
/// queries across blueprints, repeated blueprints included, return only what the caller may read.
#[tokio::test]
async fn crafted_cross_blueprint_queries_read_nothing_hidden() {
    let (s, a) = hidden_b().await;
    let crafted = [
        json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "no-such-bp",
            "combinator": "and", "rules": []}]}),
        json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "no-such-bp",
            "propertySchema": {"type": "string"}}]}),
        json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "no-such-bp",
            "conditions": []}]}),
    ];
    for body in &crafted {
        let (st, answer) = call(&s, &a, Method::POST, "/v1/entities/search", Some(body.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{answer}");
        assert!(!answer.to_string().contains("svc-b"), "{answer}");
        for func in ["count", "countValues"] {
            let agg = json!({"func": func, "property": "replicas", "query": body});
            let (st, answer) = call(&s, &a, Method::POST, "/v1/entities/aggregate", Some(agg)).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{answer}");
        }
    }
    // Honest queries: everything, one missing blueprint, a repeated list.
    let everything = json!({"combinator": "and", "rules": []});
    let (st, body) = call(&s, &a, Method::POST, "/v1/entities/search", Some(everything.clone())).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), ["svc-a", "svc-a2"]);
    let missing =
        json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "no-such-bp"}]});
    let (st, body) = call(&s, &a, Method::POST, "/v1/entities/search", Some(missing)).await;
    assert_eq!((st, ids(&body)), (StatusCode::OK, Vec::<String>::new()), "{body}");
    let repeated = json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "in",
        "value": ["service", "service", "no-such-bp", "service"]}]});
    let (st, body) = call(&s, &a, Method::POST, "/v1/entities/search", Some(repeated)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), ["svc-a", "svc-a2"], "each blueprint once, narrowed");
    let or_query = json!({"combinator": "or", "rules": [{"property": "$identifier", "operator": "=", "value": "svc-b"},
        {"property": "$identifier", "operator": "=", "value": "svc-a"}]});
    let (_, body) = call(&s, &a, Method::POST, "/v1/entities/search", Some(or_query)).await;
    assert_eq!(ids(&body), ["svc-a"]);
    // Aggregates count what the caller reads: replicas 1 + 5, never svc-b's 4.
    let sum = json!({"func": "sum", "property": "replicas", "query": everything});
    let (_, body) = call(&s, &a, Method::POST, "/v1/entities/aggregate", Some(sum)).await;
    assert_eq!(body["result"], json!(6.0), "{body}");
    let values = json!({"func": "countValues", "property": "replicas", "query": {"combinator": "and", "rules": [
        {"property": "$blueprint", "operator": "=", "value": "service"}]}});
    let (_, body) = call(&s, &a, Method::POST, "/v1/entities/aggregate", Some(values)).await;
    assert!(body["result"].get("4").is_none(), "svc-b's value is not counted: {body}");
}

/// H1: history, properties-history and `?at=` of a hidden entity answer as for one that never existed.
#[tokio::test]
async fn history_of_a_hidden_entity_is_a_404_like_a_missing_one() {
    let (s, a) = hidden_b().await;
    for id in ["svc-b", "never-was"] {
        let (st, body) =
            call(&s, &a, Method::GET, &format!("/v1/blueprints/service/entities/{id}/history"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{id}: {body}");
        assert_eq!(body["error"], json!("not_found"));
        let req = json!({"entityIdentifier": id, "blueprintIdentifier": "service", "timeInterval": "day",
            "timeRange": {"preset": "lastWeek"}});
        let (st, body) = call(&s, &a, Method::POST, "/v1/entities/properties-history", Some(req)).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{id}: {body}");
        let at = "2999-01-01T00:00:00Z";
        let (st, body) =
            call(&s, &a, Method::GET, &format!("/v1/blueprints/service/entities/{id}?at={at}"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{id}: {body}");
    }
    let (st, body) = call(&s, &a, Method::GET, "/v1/blueprints/service/entities/svc-a/history", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(s.get("/v1/blueprints/service/entities/svc-b/history").await.status, StatusCode::OK, "Admin");
}

/// M2: `attach_title_to_relation` gives no title for a related entity the caller may not read.
#[tokio::test]
async fn related_titles_of_hidden_entities_are_null() {
    let (s, a) = hidden_b().await;
    assert_eq!(
        s.patch("/v1/blueprints/service/entities/svc-b", json!({"title": "Secret B"})).await.status,
        StatusCode::OK
    );
    let r = s
        .post("/v1/blueprints/deployment/entities", json!({"identifier": "dep-1", "relations": {"service": "svc-b"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let path = "/v1/blueprints/deployment/entities/dep-1?attach_title_to_relation=true";
    let (st, body) = call(&s, &a, Method::GET, path, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["entity"]["relations"]["service"], json!({"identifier": "svc-b", "title": null}));
    assert_eq!(s.get(path).await.body["entity"]["relations"]["service"]["title"], json!("Secret B"));
    let search =
        json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "deployment"}]});
    let (_, body) = call(&s, &a, Method::POST, "/v1/entities/search?attach_title_to_relation=true", Some(search)).await;
    assert!(!body.to_string().contains("Secret B"), "{body}");
}

/// M1: a record the Member sees because an entity became readable does not show it as it was while hidden,
/// in the audit log or in its history.
#[tokio::test]
async fn earlier_hidden_versions_are_not_shown() {
    let s = setup().await;
    let r = s
        .call(
            Method::PATCH,
            "/v1/blueprints/service/permissions",
            Some(json!({"entities": {"read": {"roles": ["Member"], "ownedByTeam": false,
            "policy": {"combinator": "and", "rules": [{"property": "replicas", "operator": ">=", "value": 4}]}}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let a = app_token(&s, "member-a", &["Member"], &["A"]).await;
    // svc-a (1 replica, hidden) gets the secret URL, then becomes readable.
    let url = "https://hidden.example/secret";
    assert_eq!(
        s.patch("/v1/blueprints/service/entities/svc-a", json!({"properties": {"url": url}})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.patch("/v1/blueprints/service/entities/svc-a", json!({"properties": {"replicas": 7, "url": null}}))
            .await
            .status,
        StatusCode::OK
    );
    let (st, body) = call(&s, &a, Method::GET, "/v1/audit-log?identifier=svc-a", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let audits = body["audits"].as_array().expect("audits");
    assert_eq!(audits.len(), 1, "only the version it may read: {body}");
    assert_eq!(audits[0]["diff"]["before"], Value::Null, "{body}");
    assert!(!body.to_string().contains("hidden.example"), "{body}");
    let (st, body) = call(&s, &a, Method::GET, "/v1/blueprints/service/entities/svc-a/history", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["versions"].as_array().expect("versions").len(), 1, "{body}");
    assert!(!body.to_string().contains("hidden.example"), "{body}");
}

/// H2: search queries inside writes see only what the writer may read: matching a hidden entity answers as
/// matching nothing, and never names it.
#[tokio::test]
async fn search_queries_in_writes_do_not_see_hidden_entities() {
    let (s, a) = hidden_b().await;
    let by_id =
        |id: &str| json!({"combinator": "and", "rules": [{"property": "$identifier", "operator": "=", "value": id}]});
    let path = "/v1/blueprints/service/entities?upsert=true&validation_only=true";
    let mut answers = Vec::new();
    for id in ["svc-b", "never-was"] {
        let (st, body) = call(&s, &a, Method::POST, path, Some(json!({"identifier": by_id(id), "team": ["A"]}))).await;
        assert!(!body.to_string().contains("svc-b"), "{body}");
        answers.push((st, body["error"].clone()));
    }
    assert_eq!(answers[0], answers[1], "the same answer whether or not a hidden match exists");
    // A relation given as a query, from a blueprint the Member may write.
    let mut answers = Vec::new();
    for id in ["svc-b", "never-was"] {
        let body = json!({"identifier": format!("dep-{id}"), "team": ["A"], "relations": {"service": by_id(id)}});
        let (st, body) =
            call(&s, &a, Method::POST, "/v1/blueprints/deployment/entities?validation_only=true", Some(body)).await;
        assert!(!body.to_string().contains("\"svc-b\""), "{body}");
        answers.push((st, body["error"].clone()));
    }
    assert_eq!(answers[0], answers[1]);
    // What it may read resolves as before.
    let body = json!({"identifier": "dep-a", "team": ["A"], "relations": {"service": by_id("svc-a")}});
    let (st, body) = call(&s, &a, Method::POST, "/v1/blueprints/deployment/entities", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(body["entity"]["relations"]["service"], json!("svc-a"));
}

/// L4: deleting, replacing or patching an entity the caller may not read answers exactly as for one that
/// does not exist (not a 403 that says it is there).
#[tokio::test]
async fn writes_to_hidden_entities_answer_as_missing_ones() {
    let (s, a) = hidden_b().await;
    for (method, body) in [
        (Method::DELETE, None),
        (Method::PATCH, Some(json!({"title": "x"}))),
        (Method::PUT, Some(json!({"title": "x"}))),
    ] {
        let mut answers = Vec::new();
        for id in ["svc-b", "never-was"] {
            let (st, answer) =
                call(&s, &a, method.clone(), &format!("/v1/blueprints/service/entities/{id}"), body.clone()).await;
            answers.push((st, answer["error"].clone()));
        }
        assert_eq!(answers[0], answers[1], "{method}");
        assert_eq!(answers[0].0, StatusCode::NOT_FOUND, "{method}");
    }
    assert_eq!(s.get("/v1/blueprints/service/entities/svc-b").await.status, StatusCode::OK, "untouched");
}

/// Contextual values (Port's `{"context": "user" | "userTeams"}`): a search reads them as the caller's, and
/// a read policy written with them narrows each reader to its own share.
#[tokio::test]
async fn contextual_values_read_as_the_caller() {
    let s = setup().await;
    let a = app_token(&s, "member-a", &["Member"], &["A"]).await;
    let b = app_token(&s, "member-b", &["Member"], &["B"]).await;
    let mine = json!({"combinator": "and", "rules": [
        {"property": "$team", "operator": "containsAny", "value": {"context": "userTeams", "property": "$identifier"}}]});
    let search = "/v1/blueprints/service/entities/search";
    let (st, body) = call(&s, &a, Method::POST, search, Some(json!({"query": mine}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), vec!["svc-a", "svc-a2"]);
    let (_, body) = call(&s, &b, Method::POST, search, Some(json!({"query": mine}))).await;
    assert_eq!(ids(&body), vec!["svc-b"]);
    // The Admin belongs to no team: nothing is its own.
    let admin = s.post(search, json!({"query": mine})).await;
    assert_eq!(ids(&admin.body), Vec::<String>::new());
    // A rule about the caller itself is decided for the caller.
    let only_a = json!({"combinator": "and", "rules": [
        {"property": {"context": "userTeams", "property": "name"}, "operator": "in", "value": ["A"]}]});
    let (_, body) = call(&s, &a, Method::POST, search, Some(json!({"query": only_a}))).await;
    assert_eq!(ids(&body).len(), 3);
    let (_, body) = call(&s, &b, Method::POST, search, Some(json!({"query": only_a}))).await;
    assert_eq!(ids(&body), Vec::<String>::new());

    // A read policy with a contextual value: Members read only what their team owns, by the policy.
    let r = s
        .call(
            Method::PATCH,
            "/v1/blueprints/service/permissions",
            Some(json!({"entities": {"read": {"roles": ["Member"], "policy": mine}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let all = json!({"combinator": "and", "rules": []});
    let (_, body) = call(&s, &b, Method::POST, search, Some(json!({"query": all}))).await;
    assert_eq!(ids(&body), vec!["svc-b"]);
    let (st, _) = call(&s, &b, Method::GET, "/v1/blueprints/service/entities/svc-a", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "hidden by the policy, like a missing entity");
    let (_, body) = call(&s, &a, Method::GET, "/v1/blueprints/service/entities-count", None).await;
    assert_eq!(body["count"], json!(2));

    // Bad contextual values are 400s naming the rule; a policy with one is refused as written.
    let bad = json!({"combinator": "and", "rules": [{"property": "$team", "operator": "=", "value": {"context": "org", "property": "x"}}]});
    s.post(search, json!({"query": bad.clone()})).await.assert_error(400, "bad_request");
    let r = s
        .call(Method::PATCH, "/v1/blueprints/service/permissions", Some(json!({"entities": {"read": {"policy": bad}}})))
        .await;
    r.assert_error(422, "invalid_request");
}
