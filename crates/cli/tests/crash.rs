//! Durability: SIGKILL the `berth` process in the middle of sustained bulk writes, restart it, and find every
//! acknowledged entity, with no bulk item half-applied. Repeated several times on one data directory.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ID: &str = "crash-admin";
const SECRET: &str = "crash-secret-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn spawn(data_dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--snapshot-every", "2000"])
        .env("BERTH_BOOTSTRAP_CLIENT_ID", ID)
        .env("BERTH_BOOTSTRAP_CLIENT_SECRET", SECRET)
        .env("BERTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berth")
}

async fn ready(client: &reqwest::Client, base: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token: Value = client
        .post(format!("{base}/v1/auth/access_token"))
        .json(&json!({"clientId": ID, "clientSecret": SECRET}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    token["accessToken"].as_str().expect("accessToken").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bulk_writes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();

    // Cycles 0-2 write and are killed; cycle 3 only checks what cycle 2 acknowledged.
    for cycle in 0..4 {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = spawn(dir.path(), port);
        let token = ready(&client, &base).await;

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
                .map(|e| {
                    let p = &e["properties"];
                    assert!(p["a"] == p["b"] && p["b"] == p["c"] && p["a"].is_string(), "half-applied entity: {e}");
                    e["identifier"].as_str().expect("id").to_string()
                })
                .collect();
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
                child.kill().expect("kill");
                let _ = child.wait();
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
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        for w in writers {
            w.await.expect("writer");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_with_a_final_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn(dir.path(), port);
    let token = ready(&client, &base).await;
    let r = client
        .post(format!("{base}/v1/blueprints"))
        .bearer_auth(&token)
        .json(&json!({"identifier": "x", "title": "X", "schema": {"properties": {}}}))
        .send()
        .await
        .expect("blueprint");
    assert_eq!(r.status(), 201);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill -TERM");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "graceful exit: {exit:?}");
    // The final snapshot is at the head of the log: a restart replays nothing and has the blueprint.
    let store = berth_store::sqlite::SqliteStore::open(&dir.path().join("berth.db")).expect("open");
    use berth_store::LogStore;
    let head = store.head().await.expect("head");
    let snap = store.load_snapshot().await.expect("load").expect("a snapshot");
    assert_eq!(snap.seq, head, "final snapshot at the head");
}
