//! `berth copy` between two live Berth servers through Port's public API: 100,000 entities with relations
//! (required, many, self) and every kind of object (teams, blueprints with mirror and calculation properties,
//! a scorecard, an action with its permissions, an inbound webhook), interrupted by SIGKILL mid-way and
//! resumed, then verified: every blueprint's count and content digest equal, and the objects there. Then
//! `berth export` of the source and `berth import` of the file into a third server, verified the same way.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Berth;

const GROUPS: usize = 100;
const COMPONENTS: usize = 99_900;

async fn post(client: &reqwest::Client, server: &Berth, token: &str, path: &str, body: Value) -> Value {
    let r = client.post(server.url(path)).bearer_auth(token).json(&body).send().await.expect("post");
    let status = r.status();
    let answer: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {path}: {status} {answer}");
    answer
}

/// A bulk write whose every item must land.
async fn bulk(client: &reqwest::Client, s: &Berth, token: &str, path: &str, entities: Vec<Value>) {
    let answer = post(client, s, token, path, json!({"entities": entities})).await;
    assert!(answer["errors"].as_array().is_none_or(Vec::is_empty), "{path}: {}", answer["errors"]);
}

/// The source catalog: two teams, `group` and `component` (a required relation to a group, a self
/// relation, a mirror and a calculation), 100,000 entities, a scorecard, an action with permissions and a
/// webhook.
async fn seed(client: &reqwest::Client, s: &Berth, token: &str) {
    for team in ["core", "edge"] {
        post(client, s, token, "/v1/teams", json!({"name": team, "description": format!("The {team} team")})).await;
    }
    post(
        client,
        s,
        token,
        "/v1/blueprints",
        json!({"identifier": "group", "title": "Group",
        "schema": {"properties": {"lead": {"type": "string"}}}}),
    )
    .await;
    post(client, s, token, "/v1/blueprints", json!({"identifier": "component", "title": "Component",
        "schema": {"properties": {"size": {"type": "number"}, "tier": {"type": "string", "enum": ["gold", "silver"]}}},
        "relations": {"group": {"target": "group", "required": true, "many": false},
                      "deps": {"target": "component", "required": false, "many": true}},
        "mirrorProperties": {"groupLead": {"path": "group.lead"}},
        "calculationProperties": {"label": {"title": "Label", "type": "string", "calculation": ".identifier + \"!\""}}})).await;
    let groups: Vec<Value> = (0..GROUPS)
        .map(|g| json!({"identifier": format!("g{g:03}"), "properties": {"lead": format!("lead-{g}")}}))
        .collect();
    bulk(client, s, token, "/v1/blueprints/group/entities/bulk?upsert=true", groups).await;
    for chunk in (0..COMPONENTS).collect::<Vec<_>>().chunks(1_000) {
        let entities: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"identifier": format!("c{i:06}"), "title": format!("Component {i}"),
                    "team": [if i % 2 == 0 { "core" } else { "edge" }],
                    "properties": {"size": i % 50, "tier": if i % 3 == 0 { "gold" } else { "silver" }},
                    "relations": {"group": format!("g{:03}", i % GROUPS)}})
            })
            .collect();
        bulk(client, s, token, "/v1/blueprints/component/entities/bulk?upsert=true", entities).await;
    }
    // Every tenth depends on the one before and on one later in the order: relations cannot be copied in
    // one pass.
    let deps: Vec<Value> = (10..COMPONENTS)
        .step_by(10)
        .map(|i| json!({"identifier": format!("c{i:06}"), "relations": {"deps": [format!("c{:06}", i - 1), format!("c{:06}", (i + 7) % COMPONENTS)]}}))
        .collect();
    for chunk in deps.chunks(1_000) {
        bulk(client, s, token, "/v1/blueprints/component/entities/bulk?upsert=true&merge=true", chunk.to_vec()).await;
    }
    post(client, s, token, "/v1/blueprints/component/scorecards", json!({"identifier": "sized", "title": "Sized",
        "rules": [{"identifier": "big", "title": "Big", "level": "Gold",
                   "query": {"combinator": "and", "conditions": [{"property": "size", "operator": ">", "value": 40}]}}]})).await;
    post(
        client,
        s,
        token,
        "/v1/actions",
        json!({"identifier": "resize", "title": "Resize",
        "trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "component",
                    "userInputs": {"properties": {"size": {"type": "number"}}, "required": ["size"]}},
        "invocationMethod": {"type": "WEBHOOK", "url": "https://ci.example.com/hook"}}),
    )
    .await;
    let r = client
        .patch(s.url("/v1/actions/resize/permissions"))
        .bearer_auth(token)
        .json(&json!({"execute": {"roles": ["Member"], "teams": ["core"]}}))
        .send()
        .await
        .expect("permissions");
    assert!(r.status().is_success());
    post(
        client,
        s,
        token,
        "/v1/webhooks",
        json!({"identifier": "intake", "title": "Intake",
        "security": {"secret": "shh", "signatureHeaderName": "x-sig", "signatureAlgorithm": "sha256"},
        "mappings": [{"blueprint": "group", "entity": {"identifier": ".body.id"}}]}),
    )
    .await;
}

fn copy_command(from: &Berth, to: &Berth, dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.args(["copy", "--from", &from.base, "--to", &to.base, "--state"])
        .arg(dir.join("copy-state.json"))
        .arg("--report")
        .arg(dir.join("report.json"))
        .env("BERTH_FROM_CLIENT_ID", support::ID)
        .env("BERTH_FROM_CLIENT_SECRET", support::SECRET)
        .env("BERTH_TO_CLIENT_ID", support::ID)
        .env("BERTH_TO_CLIENT_SECRET", support::SECRET);
    c
}

async fn get(client: &reqwest::Client, server: &Berth, token: &str, path: &str) -> Value {
    let r = client.get(server.url(path)).bearer_auth(token).send().await.expect("get");
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.expect("json")
}

/// The objects besides the entities, checked on `target`.
async fn check_objects(client: &reqwest::Client, target: &Berth, token: &str) {
    let teams = get(client, target, token, "/v1/teams").await;
    let names: Vec<&str> = teams["teams"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"core") && names.contains(&"edge"), "{names:?}");
    let bp = get(client, target, token, "/v1/blueprints/component").await;
    assert_eq!(bp["blueprint"]["relations"]["group"]["required"], true, "required again at the end");
    assert_eq!(bp["blueprint"]["mirrorProperties"]["groupLead"]["path"], "group.lead");
    let e = get(client, target, token, "/v1/blueprints/component/entities/c000020").await;
    assert_eq!(e["entity"]["relations"]["deps"], json!(["c000019", "c000027"]));
    assert_eq!(e["entity"]["properties"]["groupLead"], "lead-20", "the mirror computed on the target");
    assert_eq!(e["entity"]["properties"]["label"], "c000020!");
    let sc = get(client, target, token, "/v1/blueprints/component/scorecards/sized").await;
    assert_eq!(sc["scorecard"]["rules"][0]["identifier"], "big");
    let perms = get(client, target, token, "/v1/actions/resize/permissions").await;
    assert_eq!(perms["permissions"]["execute"]["teams"], json!(["core"]));
    let wh = get(client, target, token, "/v1/webhooks/intake").await;
    assert_eq!(wh["integration"]["mappings"][0]["blueprint"], "group");
    assert!(wh["integration"]["url"].as_str().is_some_and(|u| u.starts_with(&target.base)), "{wh}");
}

fn report_matches(dir: &std::path::Path) {
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report")).expect("report json");
    assert_eq!(report["match"], true, "{report}");
    let component =
        report["blueprints"].as_array().into_iter().flatten().find(|b| b["blueprint"] == "component").cloned();
    let component = component.expect("component in the report");
    assert_eq!(component["target"]["count"], json!(COMPONENTS));
    assert_eq!(component["source"]["digest"], component["target"]["digest"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_is_copied_interrupted_resumed_verified_and_exported() {
    let dir = tempfile::tempdir().expect("dir");
    let source = Berth::spawn(dir.path(), &support::sqlite_url(dir.path(), "source"), &[]);
    let target = Berth::spawn(dir.path(), &support::sqlite_url(dir.path(), "target"), &[]);
    let client = support::client();
    let token = source.token(&client).await;
    let target_token = target.token(&client).await;
    seed(&client, &source, &token).await;

    // Interrupted: killed once it has written some of the entities.
    let mut first =
        copy_command(&source, &target, dir.path()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("copy");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let state: Value = std::fs::read(dir.path().join("copy-state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if state["entities"].as_u64().is_some_and(|n| n >= 20_000) {
            break;
        }
        assert!(first.try_wait().expect("wait").is_none(), "the copy ended before it could be interrupted");
        assert!(Instant::now() < deadline, "the copy made no progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill().expect("kill");
    let _ = first.wait();

    // Resumed: the same command goes on from where it stopped, and verifies.
    let out = copy_command(&source, &target, dir.path()).output().expect("copy again");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    assert!(stdout.contains("verified"), "{stdout}");
    report_matches(dir.path());
    assert!(!dir.path().join("copy-state.json").exists(), "a finished copy leaves no state behind");
    check_objects(&client, &target, &target_token).await;

    // Export, then import into a third server.
    let file = dir.path().join("export.json");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["export", "--from", &source.base, "--out"])
        .arg(&file)
        .env("BERTH_CLIENT_ID", support::ID)
        .env("BERTH_CLIENT_SECRET", support::SECRET)
        .output()
        .expect("export");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let third = Berth::spawn(dir.path(), &support::sqlite_url(dir.path(), "third"), &[]);
    let third_token = third.token(&client).await;
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("import")
        .arg(&file)
        .args(["--to", &third.base, "--report"])
        .arg(dir.path().join("report.json"))
        .args(["--state"])
        .arg(dir.path().join("import-state.json"))
        .env("BERTH_CLIENT_ID", support::ID)
        .env("BERTH_CLIENT_SECRET", support::SECRET)
        .output()
        .expect("import");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    report_matches(dir.path());
    check_objects(&client, &third, &third_token).await;

    // A copy into a portal with wrong credentials fails clearly, before writing anything.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["copy", "--from", &source.base, "--to", &third.base])
        .env("BERTH_FROM_CLIENT_ID", support::ID)
        .env("BERTH_FROM_CLIENT_SECRET", support::SECRET)
        .env("BERTH_TO_CLIENT_ID", support::ID)
        .env("BERTH_TO_CLIENT_SECRET", "wrong")
        .current_dir(dir.path())
        .output()
        .expect("copy");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signing in to"), "{}", String::from_utf8_lossy(&out.stderr));
}
