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
    s.post("/v1/blueprints/team/entities", json!({"identifier": "t1"})).await;
    let migration =
        s.delete("/v1/blueprints/team/all-entities").await.body["migrationId"].as_str().expect("id").to_string();
    let before = s.get("/v1/blueprints/service/entities").await.body;
    let token = s.token.clone();
    let (dir, data_dir) = s.stop().await;

    let s = TestServer::start_in(data_dir.clone(), false).await;
    // The graceful stop wrote a snapshot at the head: nothing would be replayed after a crash now.
    let ready = s.get("/readyz").await.body;
    assert!(
        ready["snapshotSeq"].as_u64().is_some_and(|seq| seq > 300) && ready["snapshotSeq"] == ready["applied"],
        "{ready}"
    );
    let old = s.raw(reqwest::Method::GET, "/v1/blueprints", None, Some(&token)).await;
    assert_eq!(old.status, StatusCode::OK, "the signing key is in the log, so tokens outlive a restart");
    let m = s.get(&format!("/v1/migrations/{migration}")).await;
    assert_eq!(m.body["migration"]["status"], json!("COMPLETED"), "migration status survives a restart: {}", m.body);
    assert_eq!(m.body["migration"]["successCount"], json!(1));
    assert_eq!(m.body["migration"]["sourceBlueprint"], json!("team"));
    assert_eq!(s.get("/v1/blueprints/service/entities").await.body, before);
    // Loaded from the snapshot without property indexes: searches scan until they are built, then use them;
    // either way the answer is the same.
    let replicas_7 =
        json!({"query": {"combinator": "and", "rules": [{"property": "replicas", "operator": "=", "value": 7}]}});
    let found = s.post("/v1/blueprints/service/entities/search", replicas_7.clone()).await;
    let ids = |body: &Value| {
        body["entities"].as_array().map(|a| a.iter().map(|e| e["identifier"].clone()).collect::<Vec<_>>())
    };
    let expected = Some(vec![json!("s107"), json!("s157"), json!("s207"), json!("s257"), json!("s57")]);
    assert_eq!(ids(&found.body), expected, "{}", found.body);
    let mut waited = 0;
    while s.get("/readyz").await.body["indexes"] != json!("ready") {
        assert!(waited < 500, "the property indexes were never built");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(ids(&s.post("/v1/blueprints/service/entities/search", replicas_7).await.body), expected);
    s.post("/v1/blueprints/service/entities", json!({"identifier": "after-restart"})).await;
    let (_dir2, data_dir) = s.stop().await;

    // Remove the snapshot: a full replay gives the same catalog (and readiness shows none was loaded).
    tamper_snapshot(&data_dir, None).await;
    let s = TestServer::start_in(data_dir, false).await;
    let ready = s.get("/readyz").await.body;
    assert_eq!(ready["snapshotSeq"], json!(0), "started without a snapshot: {ready}");
    assert_eq!(s.get("/v1/blueprints/service/entities-count").await.body["count"], json!(300));
    assert_eq!(s.get("/v1/blueprints/service/entities/after-restart").await.status, StatusCode::OK);
    let (_dir3, data_dir) = s.stop().await;

    // A snapshot that does not load: the server still starts, from the log alone.
    tamper_snapshot(&data_dir, Some(b"{\"not\": \"a snapshot\"".to_vec())).await;
    let s = TestServer::start_in(data_dir, false).await;
    assert_eq!(s.get("/readyz").await.body["snapshotSeq"], json!(0));
    assert_eq!(s.get("/v1/blueprints/service/entities-count").await.body["count"], json!(300));
    assert_eq!(s.get("/v1/blueprints/service/entities/after-restart").await.status, StatusCode::OK);
    drop(dir);
}

/// Removes the stored snapshot, or replaces its bytes, as damage or an operator would.
async fn tamper_snapshot(data_dir: &std::path::Path, data: Option<Vec<u8>>) {
    let store = berth_store::sqlite::SqliteStore::open(&data_dir.join("berth.db")).expect("open");
    store.tamper_snapshot_for_tests(data.clone()).await.expect("tamper");
    use berth_store::LogStore;
    let left = store.load_snapshot().await.expect("load");
    match data {
        None => assert!(left.is_none(), "the snapshot is gone"),
        Some(bytes) => assert_eq!(left.map(|s| s.data), Some(bytes), "the snapshot is damaged"),
    }
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

#[tokio::test]
async fn first_start_generates_a_private_credential_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = berth_server::ServerConfig::new(dir.path().to_path_buf());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    let server = berth_server::start(config.clone()).await.expect("start");
    let (id, secret, path) = server.info.generated_credential.clone().expect("a credential is generated");
    assert!(id.starts_with("berth_") && secret.len() == 64);
    let file: Value = serde_json::from_slice(&std::fs::read(&path).expect("file")).expect("json");
    assert_eq!(file["clientId"], json!(id));
    assert_eq!(file["clientSecret"], json!(secret));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "readable only by its owner");
    }
    // The secret is not stored in clear in the log.
    let db = std::fs::read(dir.path().join("berth.db")).expect("db");
    let wal = std::fs::read(dir.path().join("berth.db-wal")).unwrap_or_default();
    let needle = secret.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle) && !wal.windows(needle.len()).any(|w| w == needle),
        "secret hashed"
    );
    // It works, and a second start does not generate another.
    let base = format!("http://{}", server.info.addr);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/auth/access_token"))
        .json(&json!({"clientId": id, "clientSecret": secret}))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::OK);
    let _ = stop.send(());
    task.await.expect("task").expect("run");
    let again = berth_server::start(config).await.expect("restart");
    assert!(again.info.generated_credential.is_none(), "generated only on first start");
}

/// H3: the token signing key lives in a 0600 key file, never in the log or a snapshot; a rotation keeps
/// tokens issued before it valid (for one token lifetime) and refuses anything the old key signs after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_key_is_outside_the_log_and_rotates() {
    use berth_server::keys;
    let s = TestServer::start().await;
    let key_path = s.data_dir.join("signing-key.json");
    let keys = keys::read_key_file(&key_path).expect("reads").expect("written on first start").0;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let db = std::fs::metadata(s.data_dir.join("berth.db")).expect("db").permissions().mode() & 0o777;
        assert_eq!(db, 0o600, "the catalog file is the owner's only");
    }
    let old_token = s.token.clone();
    assert_eq!(s.get("/v1/blueprints").await.status, StatusCode::OK);

    // Rotate: the file changes under the running server.
    let now = berth_server::now().millis() / 1000;
    keys::write_key_file(&key_path, &keys.rotated("a-brand-new-signing-key-0123456789abcdef".into(), now))
        .expect("rotate");
    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
    assert_eq!(s.get("/v1/blueprints").await.status, StatusCode::OK, "a token from before the rotation still works");
    let fresh = s.token_for(crate::common::CLIENT_ID, crate::common::CLIENT_SECRET).await;
    assert_ne!(fresh, old_token, "new tokens are signed with the new key");
    let r = s.raw(reqwest::Method::GET, "/v1/blueprints", None, Some(&fresh)).await;
    assert_eq!(r.status, StatusCode::OK);
    // A token the old key signs now (a leaked key after the rotation) is refused.
    let forged = crate::common::admin_token_signed_with(&keys.current, now + 1);
    let r = s.raw(reqwest::Method::GET, "/v1/blueprints", None, Some(&forged)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Neither the log nor a snapshot holds a key.
    let (dir, data_dir) = s.stop().await;
    let store = berth_store::open(&format!("sqlite://{}", data_dir.join("berth.db").display())).await.expect("store");
    let events = store.read_from(0, 100_000).await.expect("events");
    assert!(!events.is_empty());
    for e in &events {
        let text = String::from_utf8_lossy(&e.payload);
        assert!(!text.contains(&keys.current) && !text.contains("signingKey"), "event {}: {text}", e.seq);
    }
    let snapshot = store.load_snapshot().await.expect("snapshot").expect("a final snapshot");
    assert!(!String::from_utf8_lossy(&snapshot.data).contains(&keys.current));
    drop(dir);
}
