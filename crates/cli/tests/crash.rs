//! Durability: SIGKILL the `berth` process in the middle of sustained bulk writes, restart it, and find every
//! acknowledged entity, and every bulk request whole or absent (one request is one append). Repeated several times on one store, for each store:
//! SQLite, PostgreSQL and Redis.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::Berth;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bulk_writes_loses_nothing_acknowledged_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    sigkill_cycles(dir.path(), &support::sqlite_url(dir.path(), "berth.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bulk_writes_loses_nothing_acknowledged_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    sigkill_cycles(dir.path(), &support::postgres_url("crash")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bulk_writes_loses_nothing_acknowledged_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    sigkill_cycles(dir.path(), &support::redis_url("crash")).await;
}

async fn sigkill_cycles(dir: &std::path::Path, store: &str) {
    let client = support::client();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();

    // Cycles 0-2 write and are killed; cycle 3 only checks what cycle 2 acknowledged.
    for cycle in 0..4 {
        let mut server = Berth::spawn(dir, store, &["--snapshot-every", "2000"]);
        let base = server.base.clone();
        let token = server.token(&client).await;

        // Everything acknowledged before this start is still here, whole.
        let all: Value = client
            .get(format!("{base}/v1/blueprints/item/entities"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        if cycle == 0 {
            let r = client
                .post(format!("{base}/v1/blueprints"))
                .bearer_auth(&token)
                .json(&json!({"identifier": "item", "title": "Item", "schema": {"properties": {
                    "a": {"type": "string"}, "b": {"type": "string"}, "c": {"type": "string"}}}}))
                .send()
                .await
                .expect("blueprint");
            assert_eq!(r.status(), 201);
        } else {
            let present: BTreeSet<String> = all["entities"]
                .as_array()
                .expect("entities")
                .iter()
                .map(|e| e["identifier"].as_str().expect("id").to_string())
                .collect();
            // A bulk request is one append: after a crash its 50 items are all there or none is (acknowledged
            // or not). Items are named `<request tag>-<i>`.
            let mut per_request: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
            for id in &present {
                if let Some((request, _)) = id.rsplit_once('-') {
                    *per_request.entry(request).or_default() += 1;
                }
            }
            for (request, n) in &per_request {
                assert_eq!(*n, 50, "cycle {cycle}: bulk request {request} is half-applied ({n} of 50 items)");
            }
            let acked = acked.lock().expect("lock").clone();
            let missing: Vec<&String> = acked.difference(&present).collect();
            assert!(
                missing.is_empty(),
                "cycle {cycle}: {} acknowledged entities lost, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            assert!(!acked.is_empty(), "the previous cycle acknowledged writes");
            if cycle == 3 {
                return;
            }
        }

        // Four writers, bulk upserts of 50, until the process dies.
        let mut writers = Vec::new();
        for w in 0..4 {
            let (client, base, token, acked) = (client.clone(), base.clone(), token.clone(), Arc::clone(&acked));
            writers.push(tokio::spawn(async move {
                for batch in 0.. {
                    let tag = format!("c{cycle}-w{w}-b{batch}");
                    let entities: Vec<Value> = (0..50)
                        .map(|i| json!({"identifier": format!("{tag}-{i}"), "properties": {"a": tag, "b": tag, "c": tag}}))
                        .collect();
                    let sent = client
                        .post(format!("{base}/v1/blueprints/item/entities/bulk"))
                        .bearer_auth(&token)
                        .json(&json!({"entities": entities}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => {
                            let mut acked = acked.lock().expect("lock");
                            for i in 0..50 {
                                acked.insert(format!("{tag}-{i}"));
                            }
                        }
                        _ => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(700 + 300 * cycle)).await;
        server.kill();
        for w in writers {
            w.await.expect("writer");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_with_a_final_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = support::client();
    let db = dir.path().join("berth.db");
    let mut server = Berth::spawn(dir.path(), &format!("sqlite://{}", db.display()), &[]);
    let base = server.base.clone();
    let token = server.token(&client).await;
    let r = client
        .post(format!("{base}/v1/blueprints"))
        .bearer_auth(&token)
        .json(&json!({"identifier": "x", "title": "X", "schema": {"properties": {}}}))
        .send()
        .await
        .expect("blueprint");
    assert_eq!(r.status(), 201);
    server.terminate();
    // The final snapshot is at the head of the log: a restart replays nothing and has the blueprint.
    let store = berth_store::sqlite::SqliteStore::open(&db).expect("open");
    use berth_store::LogStore;
    let head = store.head().await.expect("head");
    let snap = store.load_snapshot().await.expect("load").expect("a snapshot");
    assert_eq!(snap.seq, head, "final snapshot at the head");
}
