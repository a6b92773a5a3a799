//! Upgrades: a data directory an earlier release wrote (`fixtures/data-format-1`, made by
//! `fixtures/data-format-1/make.sh` with Berth 0.1.0: event format 1, snapshot format 1; see its README) is
//! read by this one, its catalog intact; a data directory holding an event of a newer format is refused at
//! start with a message saying so, and nothing is served; `berth --version` names the formats it reads.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::Berth;

fn fixture_copy(dir: &Path) -> std::path::PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-format-1");
    let to = dir.join("data");
    std::fs::create_dir_all(&to).expect("dir");
    std::fs::copy(from.join("berth.db"), to.join("berth.db")).expect("copy the fixture");
    to
}

async fn get(client: &reqwest::Client, server: &Berth, token: &str, path: &str) -> Value {
    let r = client.get(server.url(path)).bearer_auth(token).send().await.expect("get");
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_previous_release_is_read_whole() {
    let dir = tempfile::tempdir().expect("dir");
    let data = fixture_copy(dir.path());
    let server = Berth::spawn_in(&data, &support::sqlite_url(&data, "berth.db"), &[]);
    let client = support::client();
    let token = server.token(&client).await;
    let payments = get(&client, &server, &token, "/v1/blueprints/service/entities/payments").await;
    let e = &payments["entity"];
    assert_eq!(e["properties"]["language"], "go");
    assert_eq!(e["properties"]["replicas"], 4, "the later write too");
    assert_eq!(e["relations"]["system"], "shop");
    assert_eq!(e["team"], serde_json::json!(["platform"]));
    assert_eq!(e["scorecards"]["prod"]["level"], "Gold", "derived data recomputed on the old catalog");
    let teams = get(&client, &server, &token, "/v1/teams").await;
    assert!(teams.to_string().contains("The platform team"), "{teams}");
    let history = get(&client, &server, &token, "/v1/blueprints/service/entities/payments/history").await;
    assert!(history.to_string().contains("\"replicas\":3"), "the older version is kept: {history}");
    // And it writes on top of it.
    let r = client
        .post(server.url("/v1/blueprints/service/entities"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"identifier": "search", "properties": {"language": "rust"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_format_is_refused_at_start_saying_so() {
    let dir = tempfile::tempdir().expect("dir");
    let data = fixture_copy(dir.path());
    let url = support::sqlite_url(&data, "berth.db");
    // A newer Berth appended an event of a format this one does not read.
    let store = berth_store::open(&url).await.expect("store");
    let head = store.head().await.expect("head");
    let newer = format!(r#"{{"v":2,"seq":{},"changes":"a shape this Berth does not know"}}"#, head + 1);
    store.append(head, vec![newer.into_bytes()]).await.expect("append");
    drop(store);
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--store", &url, "--listen", &format!("127.0.0.1:{}", support::free_port())])
        .env("BERTH_SIGNING_KEY", "upgrade-signing-key-0123456789abcdef")
        .output()
        .expect("berth serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(stderr.contains("newer Berth") && stderr.contains("event format 2"), "{stderr}");

    let version = Command::new(env!("CARGO_BIN_EXE_berth")).arg("--version").output().expect("version");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains("reads event format 1, snapshot format 1"), "{version}");
}
