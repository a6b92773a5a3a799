//! Port's GitHub action as published (`tests/fixtures/port-github-action`, v1.7.8), run with Node the way
//! GitHub runs it (inputs as `INPUT_<NAME>`, outputs appended to `GITHUB_OUTPUT`), against a live
//! `berth serve`: UPSERT, GET, SEARCH, BULK_UPSERT, DELETE, CREATE_RUN and PATCH_RUN, each checked in its
//! outputs and in the catalog. A missing `node` fails the test (CI installs it), never skips it.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use support::Berth;

/// Runs the action with `inputs` against `server`; its outputs, or the `::error::` it printed.
fn run_action(server: &Berth, inputs: &[(&str, &str)]) -> Result<HashMap<String, String>, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/port-github-action/dist/index.js");
    let dir = tempfile::tempdir().expect("dir");
    let output = dir.path().join("github_output");
    std::fs::write(&output, "").expect("output file");
    let mut command = std::process::Command::new("node");
    command
        .arg(&script)
        .env("GITHUB_OUTPUT", &output)
        .env("INPUT_BASEURL", &server.base)
        .env("INPUT_CLIENTID", support::ID)
        .env("INPUT_CLIENTSECRET", support::SECRET);
    for (name, value) in inputs {
        command.env(format!("INPUT_{}", name.to_uppercase()), value);
    }
    let ran = command.output().expect("node (Node.js 20) on PATH: the GitHub action runs on it");
    let stdout = String::from_utf8_lossy(&ran.stdout).to_string();
    if !ran.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&ran.stderr)));
    }
    // `name<<delimiter`, the value's lines, `delimiter`.
    let text = std::fs::read_to_string(&output).expect("outputs");
    let mut outputs = HashMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<") {
            let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
            outputs.insert(name.to_string(), value.join("\n"));
        }
    }
    Ok(outputs)
}

fn json_of(outputs: &HashMap<String, String>, name: &str) -> Value {
    serde_json::from_str(outputs.get(name).unwrap_or_else(|| panic!("output `{name}` in {outputs:?}"))).expect("json")
}

/// A GitHub API that knows one repository and takes its workflow dispatches (their paths and bodies
/// recorded).
async fn fake_github() -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let got: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>> = Default::default();
    let g = std::sync::Arc::clone(&got);
    let app = axum::Router::new()
        .route("/repos/acme/payments", axum::routing::get(|| async { axum::Json(json!({"default_branch": "main"})) }))
        .route(
            "/repos/acme/payments/actions/workflows/{workflow}/dispatches",
            axum::routing::post(move |uri: axum::http::Uri, axum::Json(body): axum::Json<Value>| {
                let g = std::sync::Arc::clone(&g);
                async move {
                    g.lock().expect("lock").push((uri.path().to_string(), body));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (base, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_github_action_upserts_gets_searches_bulk_upserts_and_deletes() {
    let dir = tempfile::tempdir().expect("dir");
    let store = support::sqlite_url(dir.path(), "action.db");
    let (github, dispatched) = fake_github().await;
    let server = Berth::spawn(dir.path(), &store, &["--github-url", &github, "--github-token", "ghs-test"]);
    let client = support::client();
    let token = server.token(&client).await;
    let bp = client
        .post(server.url("/v1/blueprints"))
        .bearer_auth(&token)
        .json(&json!({"identifier": "service", "title": "Service", "schema": {"properties": {
            "language": {"type": "string"}, "tier": {"type": "number"}}},
            "relations": {"dependsOn": {"target": "service", "many": true, "required": false}}}))
        .send()
        .await
        .expect("blueprint");
    assert!(bp.status().is_success(), "{:?}", bp.text().await);

    // UPSERT, with a relation, then GET.
    let up = run_action(
        &server,
        &[
            ("operation", "UPSERT"),
            ("blueprint", "service"),
            ("identifier", "payments"),
            ("title", "Payments"),
            ("properties", "{\"language\": \"Go\",\n \"tier\": 1}"),
        ],
    )
    .expect("UPSERT");
    assert_eq!(up.get("identifier").map(String::as_str), Some("payments"), "{up:?}");
    let got = run_action(&server, &[("operation", "GET"), ("blueprint", "service"), ("identifier", "payments")])
        .expect("GET");
    let entity = json_of(&got, "entity");
    assert_eq!(entity["title"], "Payments");
    assert_eq!(entity["properties"]["language"], "Go");
    assert_eq!(entity["properties"]["tier"], 1);

    // BULK_UPSERT: each entity written, in order; then SEARCH finds them by the rules language.
    let bulk = run_action(
        &server,
        &[
            ("operation", "BULK_UPSERT"),
            ("blueprint", "service"),
            (
                "entities",
                r#"[{"identifier": "ledger", "blueprint": "service", "properties": {"language": "Rust", "tier": 2},
                     "relations": {"dependsOn": ["payments"]}},
                    {"identifier": "search", "blueprint": "service", "properties": {"language": "Rust", "tier": 3}}]"#,
            ),
        ],
    )
    .expect("BULK_UPSERT");
    assert_eq!(json_of(&bulk, "identifiers"), json!(["ledger", "search"]));
    let found = run_action(
        &server,
        &[
            ("operation", "SEARCH"),
            (
                "query",
                r#"{"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"},
                    {"property": "language", "operator": "=", "value": "Rust"}]}"#,
            ),
        ],
    )
    .expect("SEARCH");
    let mut ids: Vec<String> = json_of(&found, "entities")
        .as_array()
        .expect("entities")
        .iter()
        .filter_map(|e| e["identifier"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    assert_eq!(ids, ["ledger", "search"]);
    let ledger: Value = client
        .get(server.url("/v1/blueprints/service/entities/ledger"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    assert_eq!(ledger["entity"]["relations"]["dependsOn"], json!(["payments"]));

    // DELETE, then GET fails the step as the action reports errors.
    run_action(&server, &[("operation", "DELETE"), ("blueprint", "service"), ("identifier", "search")])
        .expect("DELETE");
    let gone = run_action(&server, &[("operation", "GET"), ("blueprint", "service"), ("identifier", "search")]);
    assert!(gone.is_err_and(|e| e.contains("::error::")), "a missing entity fails the step");
    // A bad entity is refused with Berth's message in the step's error.
    let bad = run_action(
        &server,
        &[
            ("operation", "UPSERT"),
            ("blueprint", "service"),
            ("identifier", "bad"),
            ("properties", r#"{"tier": "high"}"#),
        ],
    );
    assert!(bad.is_err_and(|e| e.contains("::error::")), "a schema violation fails the step");

    // CREATE_RUN of a DAY-2 action on an entity, an UPSERT tied to the run, PATCH_RUN with a log line, a
    // link and a status: the run ends, frozen.
    let action = client
        .post(server.url("/v1/actions"))
        .bearer_auth(&token)
        .json(&json!({"identifier": "deploy", "title": "Deploy",
            "trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "service",
                "userInputs": {"properties": {"version": {"type": "string"}}, "required": ["version"]}},
            "invocationMethod": {"type": "GITHUB", "org": "acme", "repo": "payments", "workflow": "deploy.yml"}}))
        .send()
        .await
        .expect("action");
    assert!(action.status().is_success(), "{:?}", action.text().await);
    let created = run_action(
        &server,
        &[
            ("operation", "CREATE_RUN"),
            ("action", "deploy"),
            ("identifier", "payments"),
            ("properties", r#"{"version": "1.4.2"}"#),
        ],
    )
    .expect("CREATE_RUN");
    let run_id = created.get("runId").cloned().unwrap_or_default();
    assert!(run_id.starts_with("r_"), "{created:?}");
    // Berth dispatched the workflow (GITHUB invocation); the workflow reports back with the action.
    let start = std::time::Instant::now();
    while dispatched.lock().expect("lock").is_empty() {
        assert!(start.elapsed() < std::time::Duration::from_secs(15), "the workflow was not dispatched");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (path, body) = dispatched.lock().expect("lock")[0].clone();
    assert_eq!(path, "/repos/acme/payments/actions/workflows/deploy.yml/dispatches");
    assert_eq!(body["ref"], "main");
    assert!(body["inputs"]["port_context"].as_str().is_some_and(|c| c.contains(&run_id)), "{body}");
    let refused = run_action(&server, &[("operation", "CREATE_RUN"), ("action", "deploy"), ("identifier", "payments")]);
    assert!(refused.is_err_and(|e| e.contains("version")), "a missing required input is named");
    run_action(
        &server,
        &[
            ("operation", "UPSERT"),
            ("blueprint", "service"),
            ("identifier", "payments-canary"),
            ("runId", &run_id),
            ("properties", r#"{"language": "Go"}"#),
        ],
    )
    .expect("UPSERT tied to the run");
    let patched = run_action(
        &server,
        &[
            ("operation", "PATCH_RUN"),
            ("runId", &run_id),
            ("logMessage", "deployed 1.4.2"),
            ("status", "SUCCESS"),
            ("link", r#"["https://ci.example.com/run/7"]"#),
            ("summary", "Deployed to production"),
            ("externalRunId", "gha-7"),
        ],
    )
    .expect("PATCH_RUN");
    assert_eq!(patched.get("runId"), Some(&run_id), "{patched:?}");
    let run: Value = client
        .get(server.url(&format!("/v1/actions/runs/{run_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("run")
        .json()
        .await
        .expect("json");
    let run = &run["run"];
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(run["entity"]["identifier"], "payments");
    assert_eq!(run["properties"]["version"], "1.4.2");
    assert_eq!(run["link"], json!(["https://ci.example.com/run/7"]));
    assert_eq!(run["externalRunId"], "gha-7");
    assert_eq!(run["summary"], "Deployed to production");
    let logs: Value = client
        .get(server.url(&format!("/v1/actions/runs/{run_id}/logs")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("logs")
        .json()
        .await
        .expect("json");
    assert!(logs.to_string().contains("deployed 1.4.2"), "{logs}");
    let audit: Value = client
        .get(server.url(&format!("/v1/audit-log?run_id={run_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    assert!(audit.to_string().contains("payments-canary"), "the upsert is tied to the run: {audit}");
    // The run has ended: a second PATCH_RUN fails the step.
    let again = run_action(&server, &[("operation", "PATCH_RUN"), ("runId", &run_id), ("status", "FAILURE")]);
    assert!(again.is_err_and(|e| e.contains("::error::")), "an ended run is frozen");
}
