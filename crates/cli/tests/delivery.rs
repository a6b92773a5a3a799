//! Delivery across processes: `berth serve` killed with SIGKILL while delivering, then restarted, delivers
//! everything (duplicates only of the page in flight and the last 100 ms), to a webhook and to each broker;
//! two replicas on one store deliver each message once between them, and when the one delivering dies the
//! other takes over from the durable position; two replicas fire each automation and timer once; a server
//! started with a low open-files limit raises it, so that many webhook lanes connect.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::Berth;

/// The most messages a crash may make the receiver get twice: the page in flight (200 for a webhook
/// delivering in log order) and what was delivered since the last commit (committed every 100 ms: about
/// 50 messages at this receiver's pace).
const PAGE: usize = 400;

/// A receiver that takes `delay` per message (so delivery lags the writes) and keeps the `seq` of each.
async fn receiver(delay: Duration) -> (String, Arc<Mutex<Vec<u64>>>) {
    let seqs: Arc<Mutex<Vec<u64>>> = Arc::default();
    let kept = Arc::clone(&seqs);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                tokio::time::sleep(delay).await;
                let m: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Some(seq) = m["seq"].as_u64() {
                    kept.lock().expect("lock").push(seq);
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, seqs)
}

async fn post(
    client: &reqwest::Client,
    server: &Berth,
    token: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value, u64) {
    let r = client.post(server.url(path)).bearer_auth(token).json(&body).send().await.expect("post");
    let status = r.status();
    let seq = support::seq_of(&r);
    (status, r.json().await.unwrap_or(Value::Null), seq)
}

/// Writes `n` items in bulk requests of 100; the sequence numbers they took, from `first` on.
async fn write_items(client: &reqwest::Client, server: &Berth, token: &str, from: usize, n: usize) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(100) {
        let entities: Vec<Value> =
            chunk.iter().map(|i| json!({"identifier": format!("i{i}"), "properties": {"n": i}})).collect();
        let (status, body, _) =
            post(client, server, token, "/v1/blueprints/item/entities/bulk", json!({"entities": entities})).await;
        assert!(status.is_success(), "{body}");
    }
}

async fn setup(client: &reqwest::Client, server: &Berth, token: &str, url: &str) -> u64 {
    setup_to(client, server, token, json!({"type": "WEBHOOK", "url": url})).await
}

async fn setup_to(client: &reqwest::Client, server: &Berth, token: &str, destination: Value) -> u64 {
    let (status, body, _) = post(
        client,
        server,
        token,
        "/v1/blueprints",
        json!({"identifier": "item", "title": "Item", "schema": {"properties": {"n": {"type": "number"}}}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body, seq) = post(
        client,
        server,
        token,
        "/v1/subscriptions",
        json!({"identifier": "items", "destination": destination, "filter": {"blueprints": ["item"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    seq
}

async fn head(client: &reqwest::Client, server: &Berth, token: &str) -> u64 {
    let r = client.get(server.url("/v1/subscriptions/items/status")).bearer_auth(token).send().await.expect("status");
    let body: Value = r.json().await.expect("json");
    body["status"]["head"].as_u64().expect("head")
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks a delivery log against the changes `(created, head]`: every one there; received in increasing
/// order but for rewinds (a crash's repeated page), each repeating at most one page.
fn check(seqs: &[u64], created: u64, head: u64, rewinds_allowed: usize) {
    check_within(seqs, created, head, rewinds_allowed, PAGE);
}

/// [`check`] with the most a rewind may repeat.
fn check_within(seqs: &[u64], created: u64, head: u64, rewinds_allowed: usize, page: usize) {
    let distinct: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    let expected: std::collections::BTreeSet<u64> = (created + 1..=head).collect();
    assert_eq!(distinct, expected, "every change delivered (and nothing else)");
    let mut rewinds = 0;
    for w in seqs.windows(2) {
        if w[1] <= w[0] {
            rewinds += 1;
            assert!(w[0] - w[1] < page as u64, "a rewind of at most one page: {} after {}", w[1], w[0]);
        }
    }
    assert!(rewinds <= rewinds_allowed, "{rewinds} rewinds");
    assert!(seqs.len() - distinct.len() <= page * rewinds_allowed, "{} duplicates", seqs.len() - distinct.len());
}

/// How long the subscription's worker has rested for the writer (`yieldedMillis` in its status).
async fn yielded(client: &reqwest::Client, server: &Berth, token: &str) -> u64 {
    let r = client.get(server.url("/v1/subscriptions/items/status")).bearer_auth(token).send().await.expect("status");
    let body: Value = r.json().await.expect("json");
    body["status"]["yieldedMillis"].as_u64().expect("yieldedMillis")
}

/// Writes first: while clients keep the writer busy, the delivery worker rests (its status counts the
/// time), and afterwards every change arrives, once and in order; a trickle of writes makes it rest not at
/// all; with `--delivery-yield-for 0` it never rests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_yields_to_a_burst_of_writes_then_delivers_everything_in_order() {
    for (bound, yields) in [("10", true), ("0", false)] {
        let dir = tempfile::tempdir().expect("dir");
        let store = support::sqlite_url(dir.path(), "yield.db");
        let client = support::client();
        let (url, seqs) = receiver(Duration::ZERO).await;
        let server =
            Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1", "--delivery-yield-for", bound]);
        let token = server.token(&client).await;
        let created = setup(&client, &server, &token, &url).await;
        // A trickle: a write every 100 ms leaves the writer idle nearly all the time.
        for i in 0..10 {
            write_items(&client, &server, &token, i, 1).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_for("the trickle delivered", 30, || seqs.lock().expect("lock").len() >= 10).await;
        assert_eq!(yielded(&client, &server, &token).await, 0, "no rest for a trickle (bound {bound} s)");
        // A burst: four clients writing requests of 10 as fast as they can (the writer is never idle for long;
        // small requests keep the changes to deliver afterwards few), until the worker has rested (at most 20 s), or
        // for a second where it should not rest.
        let started = Instant::now();
        let mut round = 0;
        loop {
            let clients: Vec<_> = (0..4)
                .map(|c| {
                    let (client, server_url, token) = (client.clone(), server.url(""), token.clone());
                    let from = 1_000 + (round * 4 + c) * 100_000;
                    tokio::spawn(async move {
                        let until = Instant::now() + Duration::from_millis(250);
                        let mut n = from;
                        while Instant::now() < until {
                            let entities: Vec<Value> = (n..n + 10)
                                .map(|i| json!({"identifier": format!("i{i}"), "properties": {"n": i}}))
                                .collect();
                            let r = client
                                .post(format!("{server_url}/v1/blueprints/item/entities/bulk"))
                                .bearer_auth(&token)
                                .json(&json!({"entities": entities}))
                                .send()
                                .await
                                .expect("bulk");
                            assert!(r.status().is_success(), "{}", r.status());
                            n += 10;
                        }
                    })
                })
                .collect();
            for c in clients {
                c.await.expect("client");
            }
            round += 1;
            let rested = yielded(&client, &server, &token).await;
            let done = if yields { rested > 0 } else { started.elapsed() >= Duration::from_secs(1) };
            if done || started.elapsed() >= Duration::from_secs(20) {
                break;
            }
        }
        let rested = yielded(&client, &server, &token).await;
        if yields {
            assert!(rested > 0, "the worker rested while the writer was busy");
        } else {
            assert_eq!(rested, 0, "--delivery-yield-for 0: never");
        }
        let head = head(&client, &server, &token).await;
        let burst = Instant::now();
        wait_for("everything after the burst", 120, || seqs.lock().expect("lock").len() as u64 >= head - created).await;
        eprintln!(
            "bound {bound} s: {} changes in {round} rounds of writes, delivered {:.1} s after the burst, the worker rested {rested} ms",
            head - created,
            burst.elapsed().as_secs_f64()
        );
        check(&seqs.lock().expect("lock"), created, head, 0);
    }
}

/// What an HTTPS receiver saw of one request.
#[derive(Clone, Debug)]
struct Request {
    /// The request's target (its path and query).
    target: String,
    host: String,
    signed: bool,
    seq: u64,
    version: hyper::Version,
}

type Seen = Arc<Mutex<Vec<Request>>>;

/// A receiver over HTTPS bound to `ip`, with the test CA's certificate for `localhost` and `127.0.0.1`
/// (`BERTH_TEST_TLS_CA`'s directory, made by scripts/test), offering HTTP/2 and HTTP/1.1 (ALPN) as most
/// HTTPS servers do; what it saw.
async fn tls_receiver(ip: &str) -> (u16, Seen) {
    let config = berth_testkit::tls::server_config(&[b"h2", b"http/1.1"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let kept = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, kept) = (acceptor.clone(), Arc::clone(&kept));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                // The webhook offers no protocol (ALPN), so HTTP/1.1 it is; a webhook that negotiated HTTP/2
                // would get nothing through.
                if tls.get_ref().1.alpn_protocol().is_some() {
                    return;
                }
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let kept = Arc::clone(&kept);
                    async move {
                        use http_body_util::BodyExt;
                        let target = request.uri().to_string();
                        let version = request.version();
                        let header = |name: &str| {
                            request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
                        };
                        let host = header("host");
                        let signed =
                            header("x-port-signature").starts_with("v1,") && !header("x-port-timestamp").is_empty();
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let m: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        kept.lock().expect("lock").push(Request {
                            target,
                            host,
                            signed,
                            seq: m["seq"].as_u64().unwrap_or(0),
                            version,
                        });
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                            hyper::body::Bytes,
                        >::new()))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (port, seen)
}

/// A webhook over HTTPS is delivered through TLS checked against the process's roots (`SSL_CERT_FILE`: the
/// test CA), to the URL's path and query with its `Host`, signed; one whose certificate does not name the
/// host it was reached by gets nothing, and the subscription's status says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_over_https_are_delivered_to_a_receiver_whose_certificate_checks_out() {
    let (port, seen) = tls_receiver("127.0.0.1").await;
    // The test certificate names localhost and 127.0.0.1, not 127.0.0.2.
    let (other_port, other_seen) = tls_receiver("127.0.0.2").await;
    let ca = std::env::var("BERTH_TEST_TLS_CA").expect("BERTH_TEST_TLS_CA");
    let dir = tempfile::tempdir().expect("dir");
    let store = support::sqlite_url(dir.path(), "tls.db");
    let client = support::client();
    let server = Berth::spawn_with_env(
        dir.path().join("data"),
        support::free_port(),
        &store,
        &["--allow-destination", "localhost", "--allow-destination", "127.0.0.2"],
        &[("SSL_CERT_FILE", &ca)],
    );
    let token = server.token(&client).await;
    setup(&client, &server, &token, &format!("https://localhost:{port}/hook?via=tls")).await;
    let (status, body, created) = post(
        &client,
        &server,
        &token,
        "/v1/subscriptions",
        json!({"identifier": "misnamed", "destination": {"type": "WEBHOOK", "url": format!("https://127.0.0.2:{other_port}/hook")},
            "filter": {"blueprints": ["item"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    write_items(&client, &server, &token, 0, 300).await;
    let head = head(&client, &server, &token).await;
    wait_for("everything over TLS", 60, || seen.lock().expect("lock").len() as u64 >= head - created).await;
    let seen = seen.lock().expect("lock").clone();
    let seqs: Vec<u64> = seen.iter().map(|s| s.seq).collect();
    check(&seqs, created, head, 0);
    for r in &seen {
        assert_eq!(r.target, "/hook?via=tls", "message {}: the URL's path and query", r.seq);
        assert_eq!(r.host, format!("localhost:{port}"), "message {}: the URL's host and port", r.seq);
        assert!(r.signed, "message {} is signed", r.seq);
        assert_eq!(r.version, hyper::Version::HTTP_11, "HTTP/1.1, though the receiver offers HTTP/2 too");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let why = loop {
        let r = client
            .get(server.url("/v1/subscriptions/misnamed/status"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("status");
        let body: Value = r.json().await.expect("json");
        if let Some(e) = body["status"]["lastError"].as_str() {
            break e.to_string();
        }
        assert!(Instant::now() < deadline, "no error recorded for the misnamed receiver: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(why.contains("TLS") && why.contains("certificate"), "the status says the certificate was refused: {why}");
    assert!(
        other_seen.lock().expect("lock").is_empty(),
        "nothing reaches a receiver whose certificate does not name its host"
    );
}

/// The soft and hard open-files limits of process `pid`, from `/proc`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc/PID/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a `Max open files` line");
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (fields[0].to_string(), fields[1].to_string())
}

/// A server started with a soft open-files limit of 64 (as a service manager may start it, far under its
/// hard limit) raises it to the hard limit, so three subscriptions of 32 lanes each (96 kept connections)
/// deliver everything without one failed attempt: at 64, connections past the limit fail (`EMFILE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_with_a_low_open_files_limit_raises_it_and_every_lane_connects() {
    let dir = tempfile::tempdir().expect("dir");
    let store = support::sqlite_url(dir.path(), "delivery.db");
    let client = support::client();
    let port = support::free_port();
    let server = Berth::spawn_through(
        &["prlimit", "--nofile=64:8192", "--"],
        dir.path().join("data"),
        port,
        &store,
        &["--allow-destination", "127.0.0.1"],
        &[],
    );
    let token = server.token(&client).await;
    assert_eq!(open_files_limits(server.child.id()), ("8192".to_string(), "8192".to_string()));
    let (status, body, _) = post(
        &client,
        &server,
        &token,
        "/v1/blueprints",
        json!({"identifier": "item", "title": "Item", "schema": {"properties": {"n": {"type": "number"}}}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut received = Vec::new();
    for i in 0..3 {
        // Each request held 20 ms: a page keeps all 32 lanes busy at once.
        let (url, seqs) = receiver(Duration::from_millis(20)).await;
        let subscription = json!({"identifier": format!("lanes{i}"), "concurrency": 32,
            "destination": {"type": "WEBHOOK", "url": url}, "filter": {"blueprints": ["item"]}});
        let (status, body, _) = post(&client, &server, &token, "/v1/subscriptions", subscription).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        received.push(seqs);
    }
    write_items(&client, &server, &token, 0, 3000).await;
    for seqs in &received {
        wait_for("every item at each receiver", 120, || {
            seqs.lock().expect("lock").iter().copied().collect::<std::collections::BTreeSet<u64>>().len() >= 3000
        })
        .await;
    }
    for i in 0..3 {
        let r = client
            .get(server.url(&format!("/v1/subscriptions/lanes{i}/status")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("status");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["status"]["failures"], 0, "no attempt failed: {body}");
        assert_eq!(body["status"]["lastError"], Value::Null, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_delivering_then_restart_delivers_everything() {
    let dir = tempfile::tempdir().expect("dir");
    let store = support::sqlite_url(dir.path(), "delivery.db");
    let client = support::client();
    let (url, seqs) = receiver(Duration::from_millis(2)).await;
    let mut server = Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1"]);
    let token = server.token(&client).await;
    let created = setup(&client, &server, &token, &url).await;
    write_items(&client, &server, &token, 0, 1500).await;
    let head_before = head(&client, &server, &token).await;
    // Killed mid-delivery.
    wait_for("some deliveries", 60, || seqs.lock().expect("lock").len() > 200).await;
    server.kill();
    let at_kill = seqs.lock().expect("lock").len();
    assert!(at_kill < 1500, "killed while delivering ({at_kill} delivered)");
    // Same data directory and store: the position is durable.
    let data_dir = server.data_dir.clone();
    drop(server);
    let server = Berth::spawn_in(&data_dir, &store, &["--allow-destination", "127.0.0.1"]);
    let token = server.token(&client).await;
    write_items(&client, &server, &token, 1500, 100).await;
    let head_after = head(&client, &server, &token).await;
    assert!(head_after > head_before);
    wait_for("everything after the restart", 120, || {
        let got = seqs.lock().expect("lock");
        got.iter().copied().collect::<std::collections::BTreeSet<u64>>().len() as u64 >= head_after - created
    })
    .await;
    check(&seqs.lock().expect("lock"), created, head_after, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_each_message_once_and_the_survivor_takes_over() {
    let dir = tempfile::tempdir().expect("dir");
    let store = support::postgres_url("delivery");
    let client = support::client();
    let (url, seqs) = receiver(Duration::from_millis(1)).await;
    let mut a = Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1"]);
    let mut b = Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1"]);
    let (ta, tb) = (a.token(&client).await, b.token(&client).await);
    let created = setup(&client, &a, &ta, &url).await;
    // Writes through both replicas.
    write_items(&client, &a, &ta, 0, 300).await;
    write_items(&client, &b, &tb, 300, 300).await;
    let head1 = head(&client, &a, &ta).await;
    wait_for("the first 600", 60, || seqs.lock().expect("lock").len() as u64 >= head1 - created).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    check(&seqs.lock().expect("lock"), created, head1, 0);
    // Which replica delivers: the other is on standby.
    let state = |server: &Berth, token: &str| {
        let (client, url, token) = (client.clone(), server.url("/v1/subscriptions/items/status"), token.to_string());
        async move {
            let body: Value =
                client.get(url).bearer_auth(token).send().await.expect("status").json().await.expect("json");
            body["status"]["state"].as_str().unwrap_or_default().to_string()
        }
    };
    let (sa, sb) = (state(&a, &ta).await, state(&b, &tb).await);
    assert!([sa.as_str(), sb.as_str()].contains(&"standby"), "one replica waits: {sa} / {sb}");
    // The delivering one dies; the survivor takes over when its lease runs out (15 s).
    let survivor = if sa == "standby" {
        b.kill();
        &a
    } else {
        a.kill();
        &b
    };
    let token = if sa == "standby" { &ta } else { &tb };
    write_items(&client, survivor, token, 600, 200).await;
    let head2 = head(&client, survivor, token).await;
    wait_for("the survivor's deliveries", 90, || {
        let got = seqs.lock().expect("lock");
        got.iter().copied().collect::<std::collections::BTreeSet<u64>>().len() as u64 >= head2 - created
    })
    .await;
    check(&seqs.lock().expect("lock"), created, head2, 1);
}

/// A broker destination for the process tests: the flag the server needs, the destination, and what the
/// broker holds.
enum Broker {
    Redis { url: String, stream: String },
    Nats { url: String, subject: String },
    Kafka { broker: berth_testkit::brokers::Broker },
}

/// The most a crash may make a broker receive twice: the page in flight (1,000) and what was delivered in
/// the 100 ms before.
const BROKER_PAGE: usize = 3_000;

impl Broker {
    fn all() -> Vec<Broker> {
        let tag = berth_testkit::stores::unique("kill").replace(|c: char| !c.is_ascii_alphanumeric(), "");
        vec![
            Broker::Redis { url: berth_testkit::stores::redis_base(), stream: format!("berth-{tag}") },
            Broker::Nats {
                url: std::env::var("BERTH_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
                subject: format!("berth.test.{tag}"),
            },
            Broker::Kafka { broker: berth_testkit::brokers::broker() },
        ]
    }

    fn flags(&self) -> Vec<String> {
        let (flag, value) = match self {
            Broker::Redis { url, .. } => ("--redis-stream-url", url.clone()),
            Broker::Nats { url, .. } => ("--nats-url", url.clone()),
            Broker::Kafka { broker } => ("--kafka-brokers", broker.address.clone()),
        };
        vec![flag.to_string(), value]
    }

    fn destination(&self) -> Value {
        match self {
            Broker::Redis { stream, .. } => json!({"type": "REDIS_STREAM", "stream": stream}),
            Broker::Nats { subject, .. } => json!({"type": "NATS", "subject": subject}),
            Broker::Kafka { .. } => json!({"type": "KAFKA", "topic": "berth.kill"}),
        }
    }

    /// Removes what the test left in a shared broker.
    async fn clean(&self) {
        match self {
            Broker::Redis { url, stream } => {
                let client = redis::Client::open(url.as_str()).expect("redis");
                let mut conn = client.get_multiplexed_async_connection().await.expect("Redis");
                let _: () = redis::cmd("DEL").arg(stream).query_async(&mut conn).await.expect("del");
            }
            Broker::Nats { url, subject } => berth_testkit::brokers::nats_delete(url, subject).await,
            Broker::Kafka { .. } => {}
        }
    }

    /// The sequence numbers the broker holds, in its order, once at least `n` distinct ones are there.
    async fn seqs(&self, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let seqs: Vec<u64> = match self {
                Broker::Redis { url, stream } => {
                    let client = redis::Client::open(url.as_str()).expect("redis");
                    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis");
                    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                        .arg(stream)
                        .arg("-")
                        .arg("+")
                        .query_async(&mut conn)
                        .await
                        .expect("xrange");
                    entries
                        .iter()
                        .filter_map(|(_, f)| f.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.parse().ok()))
                        .collect()
                }
                // JetStream drops a repeated message id: the stream holds each change once.
                Broker::Nats { url, subject } => berth_testkit::brokers::nats_messages(url, subject, n)
                    .await
                    .iter()
                    .filter_map(|(_, m)| m["seq"].as_u64())
                    .collect(),
                Broker::Kafka { broker } => {
                    let (_, records) = berth_testkit::brokers::kafka_records(&broker.address, "berth.kill", n).await;
                    // The topic Berth made has one partition: offsets are the delivery order.
                    let mut records: Vec<_> = records.into_iter().map(|(_, r)| r).collect();
                    records.sort_by_key(|r| r.offset);
                    records.iter().map(berth_testkit::brokers::kafka_seq).collect()
                }
            };
            if seqs.iter().collect::<std::collections::BTreeSet<_>>().len() >= n {
                return seqs;
            }
            assert!(Instant::now() < deadline, "waited 120 s for {n} changes; {} so far", seqs.len());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Each broker destination: the server killed with SIGKILL while it delivers, restarted on the same store,
/// delivers everything; what it repeats is at most the page in flight and the last 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_delivering_to_each_broker_then_restart_delivers_everything() {
    for broker in Broker::all() {
        let dir = tempfile::tempdir().expect("dir");
        let store = support::sqlite_url(dir.path(), "delivery.db");
        let client = support::client();
        let flags = broker.flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut server = Berth::spawn(dir.path(), &store, &flags);
        let token = server.token(&client).await;
        let created = setup_to(&client, &server, &token, broker.destination()).await;
        write_items(&client, &server, &token, 0, 3000).await;
        // Killed while delivering (brokers take a page at a time: a moment after the writes).
        tokio::time::sleep(Duration::from_millis(150)).await;
        server.kill();
        let data_dir = server.data_dir.clone();
        drop(server);
        let server = Berth::spawn_in(&data_dir, &store, &flags);
        let token = server.token(&client).await;
        write_items(&client, &server, &token, 3000, 100).await;
        let head_after = head(&client, &server, &token).await;
        let seqs = broker.seqs((head_after - created) as usize).await;
        check_within(&seqs, created, head_after, 1, BROKER_PAGE);
        broker.clean().await;
    }
}

/// Each broker destination with two replicas on one store: each change delivered once between them (no
/// rewind while both live), and when the delivering one dies the survivor takes over from the position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_to_each_broker_once_and_the_survivor_takes_over() {
    for broker in Broker::all() {
        let dir = tempfile::tempdir().expect("dir");
        let store = support::postgres_url("delivery");
        let client = support::client();
        let flags = broker.flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut a = Berth::spawn(dir.path(), &store, &flags);
        let mut b = Berth::spawn(dir.path(), &store, &flags);
        let (ta, tb) = (a.token(&client).await, b.token(&client).await);
        let created = setup_to(&client, &a, &ta, broker.destination()).await;
        write_items(&client, &a, &ta, 0, 300).await;
        write_items(&client, &b, &tb, 300, 300).await;
        let head1 = head(&client, &a, &ta).await;
        // Both alive: one delivers, so nothing is repeated.
        let first = broker.seqs((head1 - created) as usize).await;
        check_within(&first, created, head1, 0, BROKER_PAGE);
        // Kill whichever delivers (the other is on standby); the survivor takes over within the lease.
        let delivering = |server: &Berth, token: &str| {
            let (client, url, token) =
                (client.clone(), server.url("/v1/subscriptions/items/status"), token.to_string());
            async move {
                let body: Value =
                    client.get(url).bearer_auth(token).send().await.expect("status").json().await.expect("json");
                body["status"]["state"] == "delivering"
            }
        };
        let (survivor, token) = if delivering(&a, &ta).await {
            a.kill();
            (&b, &tb)
        } else {
            b.kill();
            (&a, &ta)
        };
        write_items(&client, survivor, token, 600, 200).await;
        let head2 = head(&client, survivor, token).await;
        let seqs = broker.seqs((head2 - created) as usize).await;
        check_within(&seqs, created, head2, 1, BROKER_PAGE);
        broker.clean().await;
    }
}

/// A replica stopped gracefully (SIGTERM, as a rolling upgrade does) gives its leases up: the other one
/// delivers at once, not when the lease would have run out (15 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopping_gracefully_hands_its_deliveries_over_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let store = support::postgres_url("delivery");
    let client = support::client();
    let (url, seqs) = receiver(Duration::ZERO).await;
    let mut a = Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1"]);
    let mut b = Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1"]);
    let (ta, tb) = (a.token(&client).await, b.token(&client).await);
    let created = setup(&client, &a, &ta, &url).await;
    write_items(&client, &a, &ta, 0, 100).await;
    let head1 = head(&client, &a, &ta).await;
    wait_for("the first changes", 60, || seqs.lock().expect("lock").len() as u64 >= head1 - created).await;
    let delivering = |server: &Berth, token: &str| {
        let (client, url, token) = (client.clone(), server.url("/v1/subscriptions/items/status"), token.to_string());
        async move {
            let body: Value =
                client.get(url).bearer_auth(token).send().await.expect("status").json().await.expect("json");
            body["status"]["state"] == "delivering"
        }
    };
    let (survivor, token) = if delivering(&a, &ta).await {
        a.terminate();
        (&b, &tb)
    } else {
        b.terminate();
        (&a, &ta)
    };
    let stopped = Instant::now();
    write_items(&client, survivor, token, 100, 100).await;
    let head2 = head(&client, survivor, token).await;
    wait_for("the survivor's deliveries", 60, || {
        let got = seqs.lock().expect("lock");
        got.iter().copied().collect::<std::collections::BTreeSet<u64>>().len() as u64 >= head2 - created
    })
    .await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(8), "taken over in {took:?}: the lease was given up, not waited out");
    check(&seqs.lock().expect("lock"), created, head2, 1);
}

/// Two replicas on one store: an automation fires exactly once per matching change and a timer once, whichever
/// replica the writes went through, and each run reaches its webhook once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_fire_each_automation_and_timer_once() {
    let dir = tempfile::tempdir().expect("dir");
    let store = support::postgres_url("automations");
    let client = support::client();
    let runs: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = Arc::clone(&runs);
    let app = axum::Router::new().route(
        "/runs",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let kept = Arc::clone(&kept);
            async move {
                if let Some(run) = body["run"].as_str() {
                    kept.lock().expect("lock").push(run.to_string());
                }
                StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/runs", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let mut a = Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1"]);
    let mut b = Berth::spawn(dir.path(), &store, &["--allow-destination", "127.0.0.1"]);
    let (ta, tb) = (a.token(&client).await, b.token(&client).await);
    let (status, body, _) = post(
        &client,
        &a,
        &ta,
        "/v1/blueprints",
        json!({"identifier": "item", "title": "Item", "schema": {"properties": {"n": {"type": "number"},
            "expires": {"type": "string", "format": "timer"}}}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let webhook = json!({"type": "WEBHOOK", "url": url, "body": {"run": "{{ .run.id }}"}});
    for (id, event, condition) in [
        (
            "even",
            json!({"type": "ENTITY_UPDATED", "blueprintIdentifier": "item"}),
            json!({"type": "JQ", "combinator": "and", "expressions": [".diff.after.properties.n % 2 == 0"]}),
        ),
        (
            "expired",
            json!({"type": "TIMER_PROPERTY_EXPIRED", "blueprintIdentifier": "item", "propertyIdentifier": "expires"}),
            json!(null),
        ),
    ] {
        let mut action =
            json!({"identifier": id, "trigger": {"type": "automation", "event": event}, "invocationMethod": webhook});
        if !condition.is_null() {
            action["trigger"]["condition"] = condition;
        }
        let (status, body, _) = post(&client, &b, &tb, "/v1/actions", action).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Both replicas follow the actions before the writes (each replica's view catches up within a moment).
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_items(&client, &a, &ta, 0, 300).await;
    // The same items updated through the other replica: the even ones match.
    for chunk in (0..300).collect::<Vec<usize>>().chunks(100) {
        let entities: Vec<Value> =
            chunk.iter().map(|i| json!({"identifier": format!("i{i}"), "properties": {"n": i + 1000}})).collect();
        let (status, body, _) =
            post(&client, &b, &tb, "/v1/blueprints/item/entities/bulk", json!({"entities": entities})).await;
        assert!(status.is_success(), "{body}");
    }
    let at =
        serde_json::to_value(berth_model::Timestamp::from_millis(berth_catalog::now().millis() + 1500)).expect("t");
    let (status, body, _) = post(
        &client,
        &a,
        &ta,
        "/v1/blueprints/item/entities",
        json!({"identifier": "timed", "properties": {"expires": at}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    wait_for("151 runs at the webhook", 60, || runs.lock().expect("lock").len() >= 151).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = runs.lock().expect("lock").clone();
    let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
    assert_eq!(got.len(), 151, "each run reached the webhook once");
    assert_eq!(distinct.len(), 151);
    for (action, n, server, token) in [("even", 150, &a, &ta), ("expired", 1, &b, &tb)] {
        let r = client
            .get(server.url(&format!("/v1/actions/runs?action={action}&limit=1000")))
            .bearer_auth(token)
            .send()
            .await
            .expect("runs");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["runs"].as_array().map(Vec::len), Some(n), "{action}");
    }
    a.kill();
    b.kill();
}
