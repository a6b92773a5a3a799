//! The conformance suite against the real PostgreSQL and Redis servers named by `BERTH_TEST_POSTGRES_URL` and
//! `BERTH_TEST_REDIS_URL` (defaults: the local servers). A server that does not answer fails the test: CI
//! starts both, and a skipped store test would prove nothing.

use std::sync::Arc;

use berth_store::postgres::PostgresStore;
use berth_store::redis::RedisStore;
use berth_store::{LogStore, conformance};
use berth_testkit::stores::{postgres_base, redis_base, tls_ca, unique, with_param};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_conformance() {
    let url = with_param(&postgres_base(), "schema", &unique("conf"));
    let store = PostgresStore::open(&url).await.unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    conformance::run_all(&store).await;
    let other = PostgresStore::open(&url).await.expect("reopen");
    conformance::check_reopened(&other).await;
    conformance::binary_payloads(&other).await;
    conformance::two_handles(&store, &other).await;
    conformance::blocking_appends(&other).await;
    drop(other);
    store.drop_schema().await.expect("clean up");
}

/// A consumer's leased position commits without waiting for the WAL flush, and only it: the writer's session
/// keeps synchronous commits for the appends after it, and every handle reads the position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_leased_position_leaves_appends_synchronous() {
    let url = with_param(&postgres_base(), "schema", &unique("pos"));
    let store = PostgresStore::open(&url).await.unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    let setting = || store.writer_setting_for_tests("synchronous_commit");
    assert_eq!(setting().await.expect("setting"), "on");
    let token = store.take_lease("c", "me", std::time::Duration::from_secs(30)).await.expect("lease").expect("taken");
    assert!(store.set_cursor_leased("c", "me", token, 7).await.expect("moved"));
    assert_eq!(setting().await.expect("setting"), "on", "the session's own setting after a position");
    assert!(!store.set_cursor_leased("c", "someone else", token, 9).await.expect("refused"));
    assert_eq!(setting().await.expect("setting"), "on", "the session's own setting after a refused position");
    let other = PostgresStore::open(&url).await.expect("second handle");
    assert_eq!(other.get_cursor("c").await.expect("cursor"), Some(7));
    store.drop_schema().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_appenders_leave_no_gaps() {
    let url = with_param(&postgres_base(), "schema", &unique("conc"));
    let a = Arc::new(PostgresStore::open(&url).await.unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}")));
    let b = Arc::new(PostgresStore::open(&url).await.expect("second handle"));
    conformance::concurrent_appenders(&[a.clone() as Arc<dyn LogStore>, b as Arc<dyn LogStore>], 8, 25).await;
    a.drop_schema().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passes_conformance() {
    let url = with_param(&redis_base(), "prefix", &unique("conf"));
    let store = RedisStore::open(&url).await.unwrap_or_else(|e| panic!("Redis at {url}: {e}"));
    conformance::run_all(&store).await;
    let other = RedisStore::open(&url).await.expect("reopen");
    conformance::check_reopened(&other).await;
    conformance::binary_payloads(&other).await;
    conformance::two_handles(&store, &other).await;
    drop(other);
    store.delete_all().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_appenders_leave_no_gaps() {
    let url = with_param(&redis_base(), "prefix", &unique("conc"));
    let a = Arc::new(RedisStore::open(&url).await.unwrap_or_else(|e| panic!("Redis at {url}: {e}")));
    let b = Arc::new(RedisStore::open(&url).await.expect("second handle"));
    conformance::concurrent_appenders(&[a.clone() as Arc<dyn LogStore>, b as Arc<dyn LogStore>], 8, 25).await;
    a.delete_all().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_urls_pick_the_backend() {
    let pg = berth_store::open(&with_param(&postgres_base(), "schema", &unique("url"))).await.expect("postgres");
    assert!(pg.describe().starts_with("postgres://"), "{}", pg.describe());
    let redis = berth_store::open(&with_param(&redis_base(), "prefix", &unique("url"))).await.expect("redis");
    assert!(redis.describe().starts_with("redis://"), "{}", redis.describe());
    match berth_store::open("mysql://x").await {
        Err(e) => assert!(e.to_string().contains("not supported"), "{e}"),
        Ok(_) => panic!("mysql:// is not a store"),
    }
    match berth_store::open("postgres://127.0.0.1:1/x").await {
        Err(berth_store::StoreError::Unavailable(_)) => {}
        other => panic!("an unreachable server is unavailable, got {:?}", other.map(|s| s.describe())),
    }
}

/// M5: an entry past the head (what an append script failing part-way leaves) is never read, and the next
/// append replaces it instead of failing forever on its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_orphans_past_the_head_are_neither_read_nor_in_the_way() {
    let url = with_param(&redis_base(), "prefix", &unique("orphan"));
    let store = RedisStore::open(&url).await.unwrap_or_else(|e| panic!("Redis at {url}: {e}"));
    assert_eq!(store.append(0, vec![b"one".to_vec(), b"two".to_vec()]).await.expect("append"), 2);
    store.add_orphan_for_tests(3, b"orphan").await.expect("orphan");
    store.add_orphan_for_tests(4, b"orphan too").await.expect("orphan");
    let read = store.read_from(0, 10).await.expect("read");
    assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2], "nothing past the head is read");
    assert_eq!(store.read_before(10, 10).await.expect("read back").len(), 2);
    assert_eq!(store.append(2, vec![b"three".to_vec()]).await.expect("the next append succeeds"), 3);
    let read = store.read_from(2, 10).await.expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].payload, b"three".to_vec(), "the committed event, not the orphan");
    assert_eq!(store.append(3, vec![b"four".to_vec()]).await.expect("append"), 4);
    assert_eq!(store.read_from(0, 10).await.expect("read").len(), 4);
    store.delete_all().await.expect("clean up");
}

/// H3: PostgreSQL over TLS with libpq's sslmode: `require` and `verify-full` (against the test CA) pass the
/// conformance suite, and the server sees the connection encrypted; `verify-full` against roots that do not
/// know the server's certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls() {
    let ca = tls_ca();
    for mode in ["require", &format!("verify-full&sslrootcert={ca}"), &format!("verify-ca&sslrootcert={ca}")] {
        let base = with_param(&postgres_base(), "sslmode", mode);
        let base = with_param(&base, "application_name", "berth-tls-test");
        let url = with_param(&base, "schema", &unique("tls"));
        let store = PostgresStore::open(&url).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL over TLS ({mode}): {e} (the server must serve a certificate from the test CA {ca}: \
                 scripts/test sets that up, except on a PostgreSQL named by BERTH_TEST_POSTGRES_URL)"
            )
        });
        conformance::run_all(&store).await;
        let (client, connection) =
            tokio_postgres::connect(&postgres_base(), tokio_postgres::NoTls).await.expect("plain");
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
                 WHERE ssl AND application_name = 'berth-tls-test'",
                &[],
            )
            .await
            .expect("pg_stat_ssl");
        assert!(row.get::<_, i64>(0) > 0, "{mode}: the store's connections are encrypted");
        store.drop_schema().await.expect("clean up");
    }
    // Roots that do not include the test CA: the server's certificate is refused.
    let other = other_ca();
    let url = with_param(&postgres_base(), "sslmode", &format!("verify-full&sslrootcert={}", other.display()));
    assert!(PostgresStore::open(&url).await.is_err(), "a certificate from an unknown CA must be refused");
    assert!(PostgresStore::open(&with_param(&postgres_base(), "sslmode", "verify-all")).await.is_err());
}

/// H3: Redis over TLS (`rediss://`, the test CA given as `ca=`) passes the conformance suite; without the CA
/// among its roots the client refuses the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls() {
    let ca = tls_ca();
    let base = std::env::var("BERTH_TEST_REDIS_TLS_URL").expect("BERTH_TEST_REDIS_TLS_URL (scripts/test starts one)");
    let url = with_param(&with_param(&base, "prefix", &unique("tls")), "ca", &ca);
    let store = RedisStore::open(&url).await.unwrap_or_else(|e| panic!("Redis over TLS at {url}: {e}"));
    conformance::run_all(&store).await;
    store.delete_all().await.expect("clean up");
    let untrusted = with_param(&with_param(&base, "prefix", &unique("tls")), "ca", &other_ca().display().to_string());
    assert!(RedisStore::open(&untrusted).await.is_err(), "a certificate from an unknown CA must be refused");
}

/// A CA certificate (made now with openssl) that signed nothing the test servers use.
fn other_ca() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("other-ca"));
    std::fs::create_dir_all(&dir).expect("dir");
    let pem = dir.join("ca.pem");
    let ok = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other-ca", "-keyout"])
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(&pem)
        .output()
        .expect("openssl (scripts/test installs it)")
        .status
        .success();
    assert!(ok, "openssl made no CA");
    pem
}

/// An append whose request is held up in the network (the writer connection gone silent) fails after the call
/// timeout, and its connection's server process is ended first: when the network recovers, the held request
/// finds no one to run it. Without the fence it would commit then, after the caller read the log back and
/// was told "not applied".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_append_held_in_the_network_never_commits_after_it_failed() {
    let proxy = berth_testkit::proxy::Proxy::start("127.0.0.1:5432").await;
    let direct = with_param(&postgres_base(), "schema", &unique("fence"));
    let via_proxy = direct.replacen(":5432", &format!(":{}", proxy.port), 1);
    assert_ne!(via_proxy, direct, "the test PostgreSQL URL names port 5432: {direct}");
    let store = PostgresStore::open(&via_proxy).await.unwrap_or_else(|e| panic!("PostgreSQL at {via_proxy}: {e}"));
    assert_eq!(store.append(0, vec![b"one".to_vec()]).await.expect("append"), 1);

    proxy.stall_open();
    let failed = store.append(1, vec![b"held".to_vec()]).await;
    match &failed {
        Err(berth_store::StoreError::Unavailable(m)) => assert!(m.contains("ended"), "{m}"),
        other => panic!("a fenced append is a plain failure: {other:?}"),
    }
    proxy.restore();
    // What the stall held is delivered now; give it time to run if anything could still run it.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let witness = PostgresStore::open(&direct).await.expect("direct");
    assert_eq!(witness.head().await.expect("head"), 1, "the failed append committed after its failure");
    assert_eq!(store.append(1, vec![b"two".to_vec()]).await.expect("the writer reconnects"), 2);
    let events = witness.read_from(0, 10).await.expect("read");
    assert_eq!(events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(), vec![b"one".to_vec(), b"two".to_vec()]);
    witness.drop_schema().await.expect("clean up");
}
