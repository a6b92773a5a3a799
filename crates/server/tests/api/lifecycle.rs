use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_with_and_without_a_snapshot() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let entities: Vec<Value> =
        (0..300).map(|i| json!({"identifier": format!("s{i}"), "properties": {"replicas": i % 50}})).collect();
    assert_eq!(
        s.post("/v1/blueprints/service/entities/bulk", json!({"entities": entities})).await.status,
        StatusCode::OK
    );
    s.delete("/v1/blueprints/service/entities/s7").await;
    let before = s.get("/v1/blueprints/service/entities").await.body;
    let token = s.token.clone();
    let (dir, data_dir) = s.stop().await;

    let s = TestServer::start_in(data_dir.clone(), false).await;
    assert_eq!(s.token, token, "the signing key is in the log, so tokens outlive a restart");
    assert_eq!(s.get("/v1/blueprints/service/entities").await.body, before);
    s.post("/v1/blueprints/service/entities", json!({"identifier": "after-restart"})).await;
    let (_dir2, data_dir) = s.stop().await;

    // Remove the snapshot: a full replay gives the same catalog.
    let conn = reset_snapshot_to_empty(&data_dir);
    assert!(conn, "snapshot rows removed");
    let s = TestServer::start_in(data_dir, false).await;
    assert_eq!(s.get("/v1/blueprints/service/entities-count").await.body["count"], json!(300));
    assert_eq!(s.get("/v1/blueprints/service/entities/after-restart").await.status, StatusCode::OK);
    drop(dir);
}

/// Replaces the stored snapshot with the empty state at sequence 0, so the next start replays the whole log.
fn reset_snapshot_to_empty(data_dir: &std::path::Path) -> bool {
    let rt = tokio::runtime::Handle::current();
    let path = data_dir.join("berth.db");
    tokio::task::block_in_place(|| {
        rt.block_on(async {
            let store = berth_store::sqlite::SqliteStore::open(&path).expect("open");
            use berth_store::LogStore;
            let empty = berth_engine::State::default().to_snapshot().expect("snapshot");
            store.save_snapshot(berth_store::Snapshot { seq: 0, data: empty }).await.is_ok()
        })
    })
}

#[tokio::test]
async fn demo_catalog_is_rich() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_in(dir.path().to_path_buf(), true).await;
    let blueprints = s.get("/v1/blueprints").await.body["blueprints"].as_array().expect("array").len();
    assert!(blueprints >= 8, "{blueprints} blueprints");
    let mut total = 0;
    for bp in ["team", "user", "domain", "system", "service", "environment", "deployment", "incident"] {
        let n = s.get(&format!("/v1/blueprints/{bp}/entities-count")).await.body["count"].as_u64().expect("count");
        assert!(n > 0, "{bp} has entities");
        total += n;
    }
    assert!(total >= 300, "a few hundred entities: {total}");
    let svc = s.get("/v1/blueprints/service").await.body;
    let formats: Vec<&str> = svc["blueprint"]["schema"]["properties"]
        .as_object()
        .expect("props")
        .values()
        .filter_map(|p| p["format"].as_str())
        .collect();
    for f in ["url", "markdown", "user", "team", "date-time", "ipv4", "ipv6", "yaml", "timer"] {
        assert!(formats.contains(&f), "service shows format {f}");
    }
}
