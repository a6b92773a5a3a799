//! Port's GitHub action as published (`tests/fixtures/port-github-action`, v1.7.8), run with Node the way
//! GitHub runs it (inputs as `INPUT_<NAME>`, outputs appended to `GITHUB_OUTPUT`), against a live
//! `berth serve`: UPSERT, GET, SEARCH, BULK_UPSERT and DELETE, each checked in its outputs and in the
//! catalog. A missing `node` fails the test (CI installs it), never skips it.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_github_action_upserts_gets_searches_bulk_upserts_and_deletes() {
    let dir = tempfile::tempdir().expect("dir");
    let store = support::sqlite_url(dir.path(), "action.db");
    let server = Berth::spawn(dir.path(), &store, &[]);
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
}
