//! Moving a catalog between stores: a SQLite -> PostgreSQL -> Redis -> SQLite round trip with equal digests; a
//! live migration while a writer keeps writing, ending with equal digests and every acknowledged write in
//! the target; backup and restore of a serving store; refusals (non-empty target, corrupt backup).

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Berth;

fn read_report(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written")).expect("report json")
}

/// Seeds a store through a real server: the demo catalog plus extra writes, deletes and a snapshot.
async fn seed(dir: &std::path::Path, store: &str) -> usize {
    let client = support::client();
    let mut server = Berth::spawn(dir, store, &["--demo", "--snapshot-every", "100"]);
    let token = server.token(&client).await;
    let entities: Vec<Value> = (0..300)
        .map(|i| json!({"identifier": format!("extra-{i}"), "title": format!("Extra {i}"), "properties": {}}))
        .collect();
    for chunk in entities.chunks(100) {
        let r = client
            .post(server.url("/v1/blueprints/team/entities/bulk"))
            .bearer_auth(&token)
            .json(&json!({"entities": chunk}))
            .send()
            .await
            .expect("bulk");
        assert_eq!(r.status(), 200);
    }
    let r = client
        .delete(server.url("/v1/blueprints/team/entities/extra-7"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    // Every kind of definition object travels too (pages).
    let r = client.post(server.url("/v1/pages")).bearer_auth(&token).json(&page()).send().await.expect("page");
    assert_eq!(r.status(), 201);
    let r = client
        .post(server.url("/v1/blueprints/service/scorecards"))
        .bearer_auth(&token)
        .json(&scorecard())
        .send()
        .await
        .expect("scorecard");
    assert_eq!(r.status(), 201);
    // A subscription (disabled: nothing is delivered while the copy is made).
    let r = client
        .post(server.url("/v1/subscriptions"))
        .bearer_auth(&token)
        .json(&json!({"identifier": "ops", "enabled": false, "destination": {"type": "WEBHOOK", "url": "https://hooks.example.com/berth"}}))
        .send()
        .await
        .expect("subscription");
    assert_eq!(r.status(), 201);
    // An organisation secret, and a run of the demo's action that waits for approval, with a log line.
    let r = client
        .post(server.url("/v1/organization/secrets"))
        .bearer_auth(&token)
        .json(&json!({"secretName": "CI_TOKEN", "secretValue": "migrated-secret"}))
        .send()
        .await
        .expect("secret");
    assert_eq!(r.status(), 201);
    let services = support::entities(&client, &server, &token, "service").await;
    let live = services.iter().find(|e| e["properties"]["lifecycle"] != "deprecated").expect("a live service");
    let r = client
        .post(server.url("/v1/actions/set-lifecycle/runs"))
        .bearer_auth(&token)
        .json(&json!({"properties": {"lifecycle": "experimental", "reason": "migration test"}, "entity": live["identifier"]}))
        .send()
        .await
        .expect("run");
    assert_eq!(r.status(), 202);
    let run: Value = r.json().await.expect("json");
    let run = run["run"]["id"].as_str().expect("id").to_string();
    let r = client
        .post(server.url(&format!("/v1/actions/runs/{run}/logs")))
        .bearer_auth(&token)
        .json(&json!({"message": "waiting"}))
        .send()
        .await
        .expect("log");
    assert_eq!(r.status(), 201);
    std::fs::write(dir.join("run-id"), &run).expect("note the run");
    let teams = support::entities(&client, &server, &token, "team").await.len();
    server.terminate(); // a final snapshot, so the copy carries one
    teams
}

/// A page with widgets: one of each kind of definition object.
fn page() -> Value {
    json!({"identifier": "overview", "title": "Overview", "widgets": [{"type": "markdown", "markdown": "hi"}, {"id": "n", "type": "entities-number-chart"}]})
}

/// A scorecard of the demo's services.
fn scorecard() -> Value {
    json!({"identifier": "ownership", "title": "Ownership", "rules": [{"identifier": "has-team", "title": "Has a team",
        "level": "Bronze", "query": {"combinator": "and", "conditions": [{"property": "$team", "operator": "isNotEmpty"}]}}]})
}

/// The page as `server` serves it, without the times (a copy keeps them; the comparison is of content).
async fn served_page(client: &reqwest::Client, server: &Berth, token: &str) -> Value {
    let r = client.get(server.url("/v1/pages/overview")).bearer_auth(token).send().await.expect("page");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v["page"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_sqlite_postgres_redis_sqlite_keeps_every_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = support::sqlite_url(dir.path(), "first.db");
    let teams = seed(dir.path(), &first).await;
    let hops = [
        first.clone(),
        support::postgres_url("trip"),
        support::redis_url("trip"),
        support::sqlite_url(dir.path(), "last.db"),
    ];
    let mut digests = Vec::new();
    for (i, pair) in hops.windows(2).enumerate() {
        let report = dir.path().join(format!("hop-{i}.json"));
        let mut args =
            vec!["migrate", "--from", &pair[0], "--to", &pair[1], "--report", report.to_str().expect("utf8")];
        if i == 1 {
            // A live migration of a quiet source stops by itself once caught up.
            args.extend(["--live", "--until-caught-up"]);
        }
        let (ok, out, err) = support::berth(&args);
        assert!(ok, "hop {i} failed:\n{out}\n{err}");
        assert!(out.contains("Verified:"), "{out}");
        assert!(out.contains("Snapshot at event"), "the snapshot travels: {out}");
        let report = read_report(&report);
        assert_eq!(report["equal"], true);
        assert_eq!(report["logDigest"]["source"], report["logDigest"]["target"]);
        digests.push((report["logDigest"]["target"].clone(), report["target"]["blueprints"].clone()));
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "every hop carries the same log and catalog");
    let report = read_report(&dir.path().join("hop-2.json"));
    assert!(report["target"]["definitions"].as_str().is_some_and(|d| d.len() == 64), "{report}");
    assert_eq!(report["source"]["definitions"], report["target"]["definitions"], "definitions verified by digest");
    assert_eq!(digests[0].1["team"]["entities"], teams as u64);

    // The last copy serves the same catalog.
    let client = support::client();
    let server = Berth::spawn(dir.path(), &hops[3], &[]);
    let token = server.token(&client).await;
    let served = support::entities(&client, &server, &token, "team").await;
    assert_eq!(served.len(), teams);
    assert!(served.iter().all(|e| e["identifier"] != "extra-7"), "the delete travelled too");
    let page = served_page(&client, &server, &token).await;
    assert_eq!(page["widgets"].as_array().map(Vec::len), Some(2), "{page}");
    assert_eq!(page["title"], json!("Overview"));
    let r = client.get(server.url("/v1/blueprints/service/scorecards/ownership")).bearer_auth(&token).send().await;
    let card: Value = r.expect("scorecard").json().await.expect("json");
    assert_eq!(card["scorecard"]["rules"][0]["identifier"], json!("has-team"), "{card}");
    let r = client.get(server.url("/v1/subscriptions/ops")).bearer_auth(&token).send().await;
    let sub: Value = r.expect("subscription").json().await.expect("json");
    assert_eq!(sub["subscription"]["destination"]["url"], json!("https://hooks.example.com/berth"), "{sub}");
    // Actions, runs, their logs and secrets travel too.
    let run = std::fs::read_to_string(dir.path().join("run-id")).expect("run id");
    let r = client.get(server.url(&format!("/v1/actions/runs/{run}"))).bearer_auth(&token).send().await;
    let got: Value = r.expect("run").json().await.expect("json");
    assert_eq!(got["run"]["status"], json!("WAITING_FOR_APPROVAL"), "{got}");
    let r = client.get(server.url(&format!("/v1/actions/runs/{run}/logs"))).bearer_auth(&token).send().await;
    let logs: Value = r.expect("logs").json().await.expect("json");
    assert_eq!(logs["runLogs"][0]["message"], json!("waiting"), "{logs}");
    let r = client.get(server.url("/v1/organization/secrets/CI_TOKEN")).bearer_auth(&token).send().await;
    assert_eq!(r.expect("secret").status(), 200);

    // A non-empty target is refused, and nothing is written to it.
    let (ok, _, err) = support::berth(&["migrate", "--from", &hops[0], "--to", &hops[1]]);
    assert!(!ok);
    assert!(err.contains("not empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_while_writing_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = support::sqlite_url(dir.path(), "live.db");
    let target = support::postgres_url("live");
    let client = support::client();
    let server = Berth::spawn(dir.path(), &source, &["--snapshot-every", "500"]);
    let token = server.token(&client).await;
    support::create_blueprint(
        &client,
        &server,
        &token,
        json!({"identifier": "item", "title": "Item", "schema": {"properties": {"n": {"type": "number"}}}}),
    )
    .await;

    // A writer that keeps writing until told to stop; it records what was acknowledged.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, url, token, acked, stop) = (
            client.clone(),
            server.url("/v1/blueprints/item/entities/bulk"),
            token.clone(),
            acked.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut batch = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let ids: Vec<String> = (0..20).map(|i| format!("b{batch}-{i}")).collect();
                let entities: Vec<Value> =
                    ids.iter().map(|id| json!({"identifier": id, "properties": {"n": batch}})).collect();
                let r = client.post(&url).bearer_auth(&token).json(&json!({"entities": entities})).send().await;
                if matches!(&r, Ok(r) if r.status() == 200) {
                    acked.lock().expect("lock").extend(ids);
                }
                batch += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = dir.path().join("live.json");
    let mut migration = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["migrate", "--live", "--from", &source, "--to", &target, "--report"])
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn migrate");
    // The migration tails the source while the writer goes on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(migration.try_wait().expect("wait").is_none(), "a live migration keeps running");
    // Cut-over: stop writing, then signal; the migration drains to the head and verifies.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.expect("writer");
    let status = Command::new("kill").args(["-TERM", &migration.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while migration.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the migration did not finish after the signal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = migration.wait_with_output().expect("output");
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "live migration failed:\n{out}\n{err}");
    assert!(err.contains("lag"), "progress shows the lag: {err}");
    let report = read_report(&report);
    assert_eq!(report["equal"], true, "{report}");
    assert_eq!(report["sourceLag"], 0, "drained to the source's head");
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 100, "the writer wrote during the migration: {}", acked.len());
    assert_eq!(report["target"]["blueprints"]["item"]["entities"], acked.len() as u64);

    // Serving the target: every acknowledged write is there.
    let replica = Berth::spawn(dir.path(), &target, &[]);
    let token = replica.token(&client).await;
    let present = support::identifiers(&client, &replica, &token, "item").await;
    let missing: Vec<&String> = acked.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_serving_store_restores_into_any_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = support::postgres_url("backup");
    let client = support::client();
    let server = Berth::spawn(dir.path(), &source, &["--demo"]);
    let token = server.token(&client).await;
    let services = support::entities(&client, &server, &token, "service").await.len();
    assert!(services > 0);
    let r = client.post(server.url("/v1/pages")).bearer_auth(&token).json(&page()).send().await.expect("page");
    assert_eq!(r.status(), 201);
    let page = served_page(&client, &server, &token).await;

    // Online: the server is still running.
    let file = dir.path().join("catalog.berth-backup");
    let (ok, out, err) = support::berth(&["backup", file.to_str().expect("utf8"), "--store", &source]);
    assert!(ok, "backup failed:\n{out}\n{err}");
    assert!(file.exists() && !dir.path().join("catalog.berth-backup.partial").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a backup is readable by its owner only");
    }

    for target in [support::redis_url("restore"), support::sqlite_url(dir.path(), "restored.db")] {
        let report = dir.path().join("restore.json");
        let (ok, out, err) = support::berth(&[
            "restore",
            file.to_str().expect("utf8"),
            "--store",
            &target,
            "--report",
            report.to_str().expect("utf8"),
        ]);
        assert!(ok, "restore into {target} failed:\n{out}\n{err}");
        assert_eq!(read_report(&report)["equal"], true);
        let restored = Berth::spawn(dir.path(), &target, &[]);
        let token = restored.token(&client).await;
        assert_eq!(support::entities(&client, &restored, &token, "service").await.len(), services);
        assert_eq!(served_page(&client, &restored, &token).await, page, "the page is restored as it was");
        // Restoring twice into the same store is refused.
        let (ok, _, err) = support::berth(&["restore", file.to_str().expect("utf8"), "--store", &target]);
        assert!(!ok && err.contains("not empty"), "{err}");
    }

    // A truncated or foreign file is refused with a clear message, and writes nothing.
    let bytes = std::fs::read(&file).expect("read");
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).expect("write");
    let target = support::sqlite_url(dir.path(), "never.db");
    let (ok, _, err) = support::berth(&["restore", truncated.to_str().expect("utf8"), "--store", &target]);
    assert!(!ok && (err.contains("truncated") || err.contains("trailer")), "{err}");
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, b"PK\x03\x04 not a backup at all").expect("write");
    let (ok, _, err) = support::berth(&["restore", foreign.to_str().expect("utf8"), "--store", &target]);
    assert!(!ok && err.contains("not a Berth backup"), "{err}");
}

/// M6 / T3: a backup that holds a snapshot restores it exactly; one flipped letter inside an entity's
/// value in the snapshot frame (the JSON still parses) makes the restore fail before it writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_in_a_backup_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = support::sqlite_url(dir.path(), "source.db");
    let client = support::client();
    let mut server = Berth::spawn(dir.path(), &source, &["--demo", "--snapshot-every", "10"]);
    server.token(&client).await; // up and ready
    // Wait for the snapshot task to write one.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready: Value = client.get(server.url("/readyz")).send().await.expect("readyz").json().await.expect("json");
        if ready["snapshotSeq"].as_u64().is_some_and(|s| s > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot was written: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.terminate();
    let file = dir.path().join("with-snapshot.berth-backup");
    let (ok, out, err) = support::berth(&["backup", file.to_str().expect("utf8"), "--store", &source]);
    assert!(ok, "backup failed:\n{out}\n{err}");
    let bytes = std::fs::read(&file).expect("read");
    // Frame 1 is the snapshot: MAGIC (15 bytes), kind, seq, len.
    assert_eq!(bytes[15], 1, "the backup starts with a snapshot frame");
    let len = u64::from_be_bytes(bytes[24..32].try_into().expect("8 bytes")) as usize;
    let snapshot = 32..32 + len;
    // The intact backup restores.
    let target = support::sqlite_url(dir.path(), "intact.db");
    let (ok, out, err) = support::berth(&["restore", file.to_str().expect("utf8"), "--store", &target]);
    assert!(ok, "restore failed:\n{out}\n{err}");
    // One letter of a title in the snapshot changed: still valid JSON, a different catalog.
    let needle = b"\"title\":\"";
    let at = bytes[snapshot.clone()]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| snapshot.start + p + needle.len())
        .expect("a title in the snapshot");
    let mut damaged = bytes.clone();
    damaged[at] = if damaged[at] == b'Q' { b'R' } else { b'Q' };
    let bad = dir.path().join("damaged.berth-backup");
    std::fs::write(&bad, &damaged).expect("write");
    let target = support::sqlite_url(dir.path(), "never.db");
    let (ok, _, err) = support::berth(&["restore", bad.to_str().expect("utf8"), "--store", &target]);
    assert!(!ok && err.contains("snapshot"), "{err}");
    // Nothing was written: the target can still take the intact backup.
    let (ok, out, err) = support::berth(&["restore", file.to_str().expect("utf8"), "--store", &target]);
    assert!(ok, "the refused restore wrote something:\n{out}\n{err}");
}
