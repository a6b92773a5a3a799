//! Actions and automations (Port's action object): written by Admins, checked against the catalog (the
//! blueprint, the condition's properties, a timer property, every jq expression), read by everyone signed
//! in without their `invocationMethod`, listed with Port's filters, and through the deprecated
//! blueprint-scoped routes.

use axum::http::StatusCode;
use berth_testkit::server::{TestServer, app_token};
use reqwest::Method;
use serde_json::{Value, json};

use crate::permissions::call;

fn webhook() -> Value {
    json!({"type": "WEBHOOK", "url": "https://ci.example.com/hook", "headers": {"X-Team": "platform"},
        "body": {"name": "{{ .inputs.name }}", "run": "{{ .run.id }}"}})
}

async fn catalog() -> TestServer {
    let s = TestServer::start().await;
    let bp = s
        .post(
            "/v1/blueprints",
            json!({"identifier": "service", "title": "Service", "schema": {"properties": {
                "lifecycle": {"type": "string"}, "expires": {"type": "string", "format": "timer"}}}}),
        )
        .await;
    assert_eq!(bp.status, StatusCode::CREATED, "{}", bp.body);
    s
}

#[tokio::test]
async fn actions_are_written_by_admins_checked_against_the_catalog_and_read_without_their_invocation() {
    let s = catalog().await;
    let scaffold = json!({
        "identifier": "scaffold", "title": "Scaffold",
        "trigger": {"type": "self-service", "operation": "CREATE", "blueprintIdentifier": "service",
            "userInputs": {"properties": {
                "name": {"type": "string", "pattern": "^[a-z-]+$"},
                "lang": {"type": "string", "enum": ["go", "rust"]},
                "env": {"type": "string", "visible": {"jqQuery": ".form.lang == \"go\""}, "dependsOn": ["lang"]}},
                "required": ["name"], "order": ["name", "lang"]}},
        "invocationMethod": webhook(), "requiredApproval": {"type": "ANY"}});
    let a = s.post("/v1/actions", scaffold.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["action"]["identifier"], "scaffold");
    assert_eq!(a.body["action"]["invocationMethod"]["type"], "WEBHOOK");
    assert_eq!(s.post("/v1/actions", scaffold.clone()).await.status, StatusCode::CONFLICT);

    // A Member reads it without where it goes, and cannot change it.
    let member = app_token(&s, "dev", &["Member"], &[]).await;
    let (status, body) = call(&s, &member, Method::GET, "/v1/actions/scaffold", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["action"]["title"], "Scaffold");
    assert!(body["action"].get("invocationMethod").is_none(), "{body}");
    let (status, _) = call(&s, &member, Method::GET, "/v1/actions", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut other = scaffold.clone();
    other["identifier"] = json!("by-member");
    let (status, _) = call(&s, &member, Method::POST, "/v1/actions", Some(other)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&s, &member, Method::DELETE, "/v1/actions/scaffold", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Checked against the catalog: each refusal says where.
    let day2 = |condition: Value, body: Value| {
        json!({"identifier": "restart", "trigger": {"type": "self-service", "operation": "DAY-2",
            "blueprintIdentifier": "service", "condition": condition},
            "invocationMethod": {"type": "WEBHOOK", "url": "https://ci.example.com/hook", "body": body}})
    };
    let production = json!({"type": "SEARCH", "combinator": "and",
        "rules": [{"property": "lifecycle", "operator": "=", "value": "production"}]});
    for (body, says) in [
        (
            day2(
                json!({"combinator": "and", "rules": [{"property": "tier", "operator": "=", "value": "1"}]}),
                json!({}),
            ),
            "trigger.condition",
        ),
        (day2(production.clone(), json!({"id": "{{ .entity.identifier | }}"})), "invocationMethod.body.id"),
        (
            json!({"identifier": "x", "trigger": {"type": "self-service", "operation": "CREATE", "blueprintIdentifier": "nope"},
            "invocationMethod": webhook()}),
            "`nope`",
        ),
        (
            json!({"identifier": "x", "trigger": {"type": "automation",
            "event": {"type": "TIMER_PROPERTY_EXPIRED", "blueprintIdentifier": "service", "propertyIdentifier": "lifecycle"}},
            "invocationMethod": {"type": "KAFKA"}}),
            "no timer property",
        ),
        (
            json!({"identifier": "x", "trigger": {"type": "automation",
            "event": {"type": "ENTITY_UPDATED", "blueprintIdentifier": "service"},
            "condition": {"type": "JQ", "expressions": [".diff.after.properties.lifecycle =="]}},
            "invocationMethod": {"type": "KAFKA"}}),
            "trigger.condition.expressions[0]",
        ),
        (
            json!({"identifier": "x", "trigger": {"type": "self-service", "operation": "CREATE", "blueprintIdentifier": "service"},
            "invocationMethod": {"type": "GITHUB", "org": "acme"}}),
            "repo",
        ),
    ] {
        let a = s.post("/v1/actions", body.clone()).await;
        assert_eq!(a.status.as_u16(), 422, "{body}: {}", a.body);
        assert!(a.body["message"].as_str().unwrap_or_default().contains(says), "{says}: {}", a.body);
    }
    assert_eq!(
        s.post("/v1/actions", day2(production, json!({"id": "{{ .entity.identifier }}"}))).await.status,
        StatusCode::CREATED
    );
    for automation in [
        json!({"identifier": "on-expiry", "trigger": {"type": "automation",
            "event": {"type": "TIMER_PROPERTY_EXPIRED", "blueprintIdentifier": "service", "propertyIdentifier": "expires"}},
            "invocationMethod": {"type": "KAFKA", "payload": {"entity": "{{ .event.context.entityIdentifier }}"}}}),
        json!({"identifier": "on-run", "publish": false, "trigger": {"type": "automation",
            "event": {"type": "ANY_RUN_CHANGE", "actionIdentifier": "scaffold"}},
            "invocationMethod": {"type": "UPSERT_ENTITY", "blueprintIdentifier": "service",
                "mapping": {"identifier": "{{ .event.diff.after.properties.name }}"}}}),
    ] {
        let a = s.post("/v1/actions", automation.clone()).await;
        assert_eq!(a.status, StatusCode::CREATED, "{automation}: {}", a.body);
    }

    // Port's list filters.
    let ids = |answer: &Value| -> Vec<String> {
        let mut ids: Vec<String> = answer["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .filter_map(|a| a["identifier"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids
    };
    for (query, expected) in [
        ("", vec!["on-expiry", "on-run", "restart", "scaffold"]),
        ("?trigger_type=automation", vec!["on-expiry", "on-run"]),
        ("?trigger_type=self-service&operation=DAY-2", vec!["restart"]),
        ("?blueprint_identifier=service", vec!["on-expiry", "restart", "scaffold"]),
        ("?trigger_event=ANY_RUN_CHANGE&trigger_event_action_identifier=scaffold", vec!["on-run"]),
        ("?action_identifier[]=scaffold&action_identifier[]=restart", vec!["restart", "scaffold"]),
        ("?action_identifier=scaffold,on-run", vec!["on-run", "scaffold"]),
        ("?published=false", vec!["on-run"]),
    ] {
        let a = s.get(&format!("/v1/actions{query}")).await;
        assert_eq!(a.status, StatusCode::OK, "{query}: {}", a.body);
        assert_eq!(ids(&a.body), expected, "{query}");
    }
    assert_eq!(s.get("/v1/actions?trigger_type=manual").await.status, StatusCode::BAD_REQUEST);

    // Replaced, then deleted.
    let mut renamed = scaffold.clone();
    renamed["title"] = json!("Scaffold a service");
    let a = s.put("/v1/actions/scaffold", renamed).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["action"]["title"], "Scaffold a service");
    assert_eq!(s.delete("/v1/actions/restart").await.status, StatusCode::OK);
    assert_eq!(s.get("/v1/actions/restart").await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.put("/v1/actions/restart", scaffold).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_deprecated_blueprint_scoped_routes_read_and_write_that_blueprints_actions() {
    let s = catalog().await;
    let other =
        s.post("/v1/blueprints", json!({"identifier": "team-x", "title": "T", "schema": {"properties": {}}})).await;
    assert_eq!(other.status, StatusCode::CREATED);
    // The trigger's blueprint is the route's when the body does not name one.
    let a = s
        .post(
            "/v1/blueprints/service/actions",
            json!({"identifier": "deploy", "trigger": {"type": "self-service", "operation": "DAY-2"},
                "invocationMethod": {"type": "GITHUB", "org": "acme", "repo": "svc", "workflow": "deploy.yml",
                    "workflowInputs": {"ref": "{{ .inputs.ref }}"}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["action"]["trigger"]["blueprintIdentifier"], "service");
    let a = s
        .post(
            "/v1/blueprints/service/actions",
            json!({"identifier": "wrong", "trigger": {"type": "self-service", "operation": "DAY-2",
                "blueprintIdentifier": "team-x"}, "invocationMethod": webhook()}),
        )
        .await;
    assert_eq!(a.status.as_u16(), 422, "{}", a.body);
    let listed = s.get("/v1/blueprints/service/actions").await;
    assert_eq!(listed.body["actions"].as_array().map(Vec::len), Some(1), "{}", listed.body);
    assert_eq!(s.get("/v1/blueprints/team-x/actions").await.body["actions"], json!([]));
    assert_eq!(s.get("/v1/blueprints/service/actions/deploy").await.status, StatusCode::OK);
    assert_eq!(s.get("/v1/blueprints/team-x/actions/deploy").await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.delete("/v1/blueprints/team-x/actions/deploy").await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.delete("/v1/blueprints/service/actions/deploy").await.status, StatusCode::OK);
    assert_eq!(s.get("/v1/actions/deploy").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_automation_on_its_own_runs_is_refused() {
    let s = catalog().await;
    let a = s
        .post(
            "/v1/actions",
            json!({"identifier": "loop", "trigger": {"type": "automation",
                "event": {"type": "RUN_UPDATED", "actionIdentifier": "loop"}},
                "invocationMethod": {"type": "KAFKA"}}),
        )
        .await;
    a.assert_error(422, "invalid_request");
    assert!(a.body["message"].as_str().expect("m").contains("its own action"), "{}", a.body);
}
