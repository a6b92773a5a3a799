//! Port's Ocean framework (`port-ocean` 0.56.2 from PyPI, Python 3.12+) runs a small integration of our own
//! (`tests/fixtures/ocean-integration`: one kind, read from a JSON file the test writes) against a live
//! `berth serve`, unchanged: a first resync creates the integration, its blueprint and entities; a second,
//! with an item gone and one renamed, reconciles (the gone one deleted through `$datasource`); a third, whose
//! deletions pass `entityDeletionThreshold`, deletes nothing; a polling integration resyncs when asked
//! through `resync-request` (the UI's "resync now"). What Ocean reported (resync state, metrics per kind,
//! logs, kind examples) is read back.
//!
//! `BERTH_TEST_OCEAN_PYTHON` names a Python with port-ocean installed (`scripts/test` makes one); without
//! it the test fails, never skips.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Berth;

const IDENTIFIER: &str = "berth-test";
const TYPE: &str = "berthtest";

fn python() -> String {
    std::env::var("BERTH_TEST_OCEAN_PYTHON").unwrap_or_else(|_| {
        panic!("BERTH_TEST_OCEAN_PYTHON must name a Python 3.12+ with port-ocean installed (scripts/test makes one)")
    })
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ocean-integration")
}

fn write_items(path: &Path, ids: &[(String, String)]) {
    let items: Vec<Value> =
        ids.iter().enumerate().map(|(n, (id, name))| json!({"id": id, "name": name, "size": n})).collect();
    std::fs::write(path, serde_json::to_vec(&items).expect("json")).expect("items file");
}

/// Ocean's command for `server`, with the items file and the event listener.
fn ocean(server: &Berth, items: &Path, listener: &str) -> Command {
    let mut command = Command::new(python());
    command
        .args(["-c", "from port_ocean.run import run; run(path='.')"])
        .current_dir(fixture())
        .env("ITEMS_FILE", items)
        .env("OCEAN__PORT__BASE_URL", &server.base)
        .env("OCEAN__PORT__CLIENT_ID", support::ID)
        .env("OCEAN__PORT__CLIENT_SECRET", support::SECRET)
        .env("OCEAN__EVENT_LISTENER", listener)
        .env("OCEAN__INTEGRATION__IDENTIFIER", IDENTIFIER)
        .env("OCEAN__INTEGRATION__TYPE", TYPE)
        .env("OCEAN__INITIALIZE_PORT_RESOURCES", "true")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// Runs one resync to its end (the ONCE listener); Ocean's output.
fn resync_once(server: &Berth, items: &Path) -> String {
    let out = ocean(server, items, r#"{"type": "ONCE"}"#).output().expect("run Ocean");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "Ocean failed:\n{log}");
    assert!(log.contains("Resync finished successfully"), "Ocean's resync did not finish:\n{log}");
    log
}

async fn get(client: &reqwest::Client, server: &Berth, token: &str, path: &str) -> Value {
    let r = client.get(server.url(path)).bearer_auth(token).send().await.expect("get");
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.expect("json")
}

fn ids(entities: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = entities.iter().filter_map(|e| e["identifier"].as_str()).map(str::to_string).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ocean_integration_syncs_reconciles_and_respects_its_deletion_threshold() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Berth::spawn(dir.path(), &support::sqlite_url(dir.path(), "ocean"), &[]);
    let client = support::client();
    let token = server.token(&client).await;
    let items = dir.path().join("items.json");
    let twenty: Vec<(String, String)> = (0..20).map(|n| (format!("i{n:02}"), format!("Item {n}"))).collect();

    // First resync: the integration, its blueprint (from .port/resources) and 20 entities.
    write_items(&items, &twenty);
    resync_once(&server, &items);
    let blueprint = get(&client, &server, &token, "/v1/blueprints/oceanItem").await;
    assert_eq!(blueprint["blueprint"]["title"], "Ocean item");
    let entities = support::entities(&client, &server, &token, "oceanItem").await;
    assert_eq!(entities.len(), 20);
    let datasource = entities[0]["$datasource"].as_str().unwrap_or_default().to_string();
    assert!(
        datasource.starts_with(&format!("port-ocean/{TYPE}/"))
            && datasource.ends_with(&format!("/{IDENTIFIER}/exporter")),
        "{datasource}"
    );
    let integration =
        get(&client, &server, &token, &format!("/v1/integration/{IDENTIFIER}")).await["integration"].clone();
    assert_eq!(integration["installationAppType"], TYPE);
    assert_eq!(integration["resyncState"]["status"], "completed");
    assert!(integration["resyncState"]["lastResyncStart"].is_string(), "the end kept the start: {integration}");
    assert_eq!(integration["config"]["resources"][0]["kind"], "item");
    assert_eq!(integration["config"]["entityDeletionThreshold"], 0.9);

    // What Ocean reported: the resync's metrics for the kind, its logs, the kind's raw examples.
    let metrics = get(&client, &server, &token, &format!("/v1/integration/{IDENTIFIER}/syncMetrics")).await;
    let loaded = &metrics["data"]["syncs"][0]["kinds"]["item-0"]["metrics"]["phase"]["load"]["object_count_type"]["loaded"]
        ["object_count"];
    assert_eq!(loaded.as_f64(), Some(20.0), "{metrics}");
    let logs = get(&client, &server, &token, &format!("/v1/integration/{IDENTIFIER}/logs?limit=1000")).await;
    let lines = logs["data"]["logs"].as_array().cloned().unwrap_or_default();
    assert!(lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("Resync finished"))), "{logs}");
    let examples = get(&client, &server, &token, &format!("/v1/integration/{IDENTIFIER}/kinds/item/examples")).await;
    assert!(examples["examples"].as_array().is_some_and(|e| !e.is_empty()), "{examples}");

    // Second resync: i19 is gone, i03 renamed: reconciled.
    let mut second = twenty[..19].to_vec();
    second[3].1 = "Item three".into();
    write_items(&items, &second);
    resync_once(&server, &items);
    let entities = support::entities(&client, &server, &token, "oceanItem").await;
    assert_eq!(ids(&entities), second.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>());
    let three = entities.iter().find(|e| e["identifier"] == "i03").expect("i03");
    assert_eq!(three["title"], "Item three");

    // Third resync: one item left, 18 of 19 to delete, past the 0.9 threshold: nothing is deleted.
    write_items(&items, &twenty[..1]);
    let log = resync_once(&server, &items);
    assert!(log.contains("Skipping deletion"), "Ocean should refuse the deletions:\n{log}");
    let entities = support::entities(&client, &server, &token, "oceanItem").await;
    assert_eq!(entities.len(), 19, "the deletions past the threshold were refused");

    // A polling integration resyncs when asked: an item added, then `resync-request`.
    write_items(&items, &second);
    let mut polling = ocean(&server, &items, r#"{"type": "POLLING", "interval": 1, "resync_on_start": false}"#)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Ocean polling");
    // Let it start and take its baseline before the request.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut with_new = second.clone();
    with_new.push(("i42".into(), "Item 42".into()));
    write_items(&items, &with_new);
    let r = client
        .post(server.url(&format!("/v1/integration/{IDENTIFIER}/resync-request")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let entities = support::entities(&client, &server, &token, "oceanItem").await;
        if entities.iter().any(|e| e["identifier"] == "i42") {
            break;
        }
        assert!(Instant::now() < deadline, "the polling integration did not resync when asked");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = polling.kill();
    let _ = polling.wait();
}
