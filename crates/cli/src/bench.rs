//! `berth bench`: starts a real `berth serve` process on a fresh data directory and measures it over HTTP,
//! as a client would: bulk ingest (large batches, and Port-sized batches over many connections), point-read
//! latency and throughput, resident memory, and start-up time with the data it ingested.
//! The client runs on the same machine, so it competes with the server for the CPU: compare ratios from one
//! run rather than absolute figures across machines.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Entities ingested in each ingest phase
    #[arg(long, default_value_t = 100_000)]
    entities: usize,
    /// Entities per request in the large-batch phase
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Connections used by the large-batch phase (a loader with a few workers; the search battery uses 4 too)
    #[arg(long, default_value_t = 4)]
    batch_connections: usize,
    /// Entities per request in the Port-sized phase
    #[arg(long, default_value_t = 20)]
    small_batch: usize,
    /// Connections used by the Port-sized phase
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Concurrent clients of the read-throughput phase, one measurement each (comma-separated)
    #[arg(long, value_delimiter = ',', default_values_t = [8, 64])]
    read_connections: Vec<usize>,
    /// Sequential point reads timed for latency
    #[arg(long, default_value_t = 10_000)]
    reads: usize,
    /// Seconds of concurrent point reads for throughput
    #[arg(long, default_value_t = 5)]
    read_seconds: u64,
    /// Keep the data directory (its path is printed)
    #[arg(long)]
    keep: bool,
    /// Run the search battery instead: a catalog of `--entities` entities (teams, systems, services,
    /// environments, deployments), then query latencies
    #[arg(long)]
    search: bool,
    /// Run the replica battery instead, on this (empty) PostgreSQL or Redis store: ingest, write-to-visible
    /// latency on a second replica, migration throughput
    #[arg(long, value_name = "STORE_URL")]
    replicas: Option<String>,
    /// Run the web UI battery instead: page-load latency of the entity table over `--entities` services
    #[arg(long)]
    ui: bool,
    /// Run the permission battery instead: the same searches as an Admin and as a Member over `--entities`
    /// services
    #[arg(long)]
    permissions: bool,
    /// Run the hostile-input battery instead: `--count` generated inputs per parser (rules, entity bodies,
    /// blueprint definitions, UI forms), a tenth as many per HTTP route of a live server, then a restart
    #[arg(long)]
    hostile: bool,
    /// Run the standards battery instead, in process: `--entities` entities (a tenth services mirroring a
    /// team and a domain, aggregating deployments, judged by 3 scorecards of 10 rules) against the same
    /// catalog without derived data: start-up, a mirrored write, ordinary writes (in the engine, then
    /// acknowledged by the catalog layer on SQLite), searches by scorecard level
    #[arg(long)]
    standards: bool,
    /// Run the deployments battery instead, in process: 500 services x 5 environments with `--entities`
    /// deployments over two years (1,000,000 by default): the matrix, DORA, a report seen in the matrix
    #[arg(long)]
    deployments: bool,
    /// Run the delivery battery instead, in process: writes paced at `--rate` entities/s for
    /// `--read-seconds` with one subscription per destination (webhook, Redis Streams, NATS JetStream, Kafka
    /// through tansu when found): lag and write-to-delivered latency per destination, and the writes' own
    /// throughput with and without the subscriptions
    #[arg(long)]
    delivery: bool,
    /// Run the actions battery instead, in process: runs created at `--rate` runs/s (default 1,000 here)
    /// for `--read-seconds`, sent to a webhook (created-to-received p50 / p99), then an ENTITY_UPDATED
    /// automation under 10,000 entity updates/s (its lag, its catch-up time)
    #[arg(long)]
    actions: bool,
    /// Run the inbound webhooks battery instead: GitHub pushes to a webhook of a `berth serve` process at
    /// `--rate` requests/s (default 5,000 here) for `--read-seconds`: requests answered, and
    /// request-to-entity-visible p50 / p99
    #[arg(long)]
    ingest_webhooks: bool,
    /// Run the Backstage battery instead: `--entities` generated descriptors (default 100,000) imported with
    /// `berth import backstage` (one file each, then one file), then `by-query` and `entity-facets` timed
    #[arg(long)]
    backstage: bool,
    /// The write rate of the delivery battery, entities per second
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// The delivery battery's destinations, comma-separated (webhook, redis, nats, kafka)
    #[arg(long, default_value = "webhook,redis,nats,kafka")]
    destinations: String,
    /// Entities per write of the delivery battery (1 to 1,000)
    #[arg(long, default_value_t = 200)]
    write_size: usize,
    /// The delivery battery webhook's `concurrency` (1: in log order; more: in order per entity)
    #[arg(long, default_value_t = 32)]
    webhook_concurrency: u32,
    /// How the delivery battery's webhook receiver listens: `http` or `https` (a certificate made for the run
    /// with `openssl`)
    #[arg(long, default_value = "http")]
    webhook_receiver: String,
    /// The delivery battery's `--delivery-yield-for`, in seconds, as `berth serve` takes it (0: delivery
    /// never yields to a busy writer)
    #[arg(long, default_value_t = berth_delivery::yielding::DEFAULT_BOUND.as_secs())]
    delivery_yield_for: u64,
    /// Inputs per parser of the hostile battery
    #[arg(long, default_value_t = 1_000_000)]
    count: usize,
    /// Seed of the hostile battery's generator
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The signing key every server these start shares (replicas must agree on one).
const SHARED_SIGNING_KEY: &str = "berth-test-signing-key-0123456789abcdef";
pub(crate) const ID: &str = "bench-admin";
/// The web UI user of bench servers.
pub(crate) const UI_EMAIL: &str = "bench@example.com";
pub(crate) const UI_PASSWORD: &str = "bench-password-0123";
pub(crate) const SECRET: &str = "bench-secret-0123456789abcdef";

pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Proc {
    /// Stops the server with SIGTERM and waits for it: a graceful stop writes a snapshot at the head.
    pub(crate) fn stop_gracefully(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn spawn(data_dir: &std::path::Path) -> anyhow::Result<Proc> {
    spawn_on(data_dir, None)
}

/// A server on `store` (default: the embedded store in `data_dir`).
pub(crate) fn spawn_on(data_dir: &std::path::Path, store: Option<&str>) -> anyhow::Result<Proc> {
    let port = free_port()?;
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["serve", "--data-dir"]).arg(data_dir).args(["--listen", &format!("127.0.0.1:{port}")]);
    if let Some(store) = store {
        command.args(["--store", store]);
    }
    let child = command
        // Replicas share one signing key, as an operator would configure them.
        .env("BERTH_SIGNING_KEY", SHARED_SIGNING_KEY)
        .env("BERTH_BOOTSTRAP_CLIENT_ID", ID)
        .env("BERTH_BOOTSTRAP_CLIENT_SECRET", SECRET)
        .env("BERTH_BOOTSTRAP_ADMIN_EMAIL", UI_EMAIL)
        .env("BERTH_BOOTSTRAP_ADMIN_PASSWORD", UI_PASSWORD)
        .env("BERTH_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start berth serve")?;
    Ok(Proc { child, base: format!("http://127.0.0.1:{port}") })
}

/// Polls `/readyz` until it answers 200 with a body for which `done` holds; how long that took (at most
/// 300 s, else an error naming `what`).
pub(crate) async fn poll_readyz(
    client: &reqwest::Client,
    base: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() && r.json::<Value>().await.is_ok_and(|body| done(&body)) {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("{what}: not after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(crate) async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<Duration> {
    poll_readyz(client, base, "server ready", |_| true).await
}

/// A restart's two moments: `/readyz` answers 200 (reads served, writes accepted), and the property indexes
/// are built (`indexes: ready`: searches use them, queued writes go through).
pub(crate) struct Started {
    pub ready: Duration,
    pub indexed: Duration,
}

impl std::fmt::Display for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} s (indexes built at {:.2} s)", self.ready.as_secs_f64(), self.indexed.as_secs_f64())
    }
}

pub(crate) async fn wait_started(client: &reqwest::Client, base: &str) -> anyhow::Result<Started> {
    let ready = wait_ready(client, base).await?;
    let building = poll_readyz(client, base, "property indexes built", |b| b["indexes"] == "ready").await?;
    Ok(Started { ready, indexed: ready + building })
}

pub(crate) async fn token(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let v: Value = client
        .post(format!("{base}/v1/auth/access_token"))
        .json(&json!({"clientId": ID, "clientSecret": SECRET}))
        .send()
        .await?
        .json()
        .await?;
    v["accessToken"].as_str().map(str::to_string).context("no token")
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Service entities `prefix-0 ..`, each related to one of 100 teams.
pub(crate) fn bodies(prefix: &str, n: usize, per_request: usize) -> Vec<Vec<u8>> {
    let langs = ["Rust", "Go", "Python", "Java"];
    (0..n)
        .collect::<Vec<_>>()
        .chunks(per_request)
        .map(|chunk| {
            let entities: Vec<Value> = chunk
                .iter()
                .map(|i| {
                    json!({"identifier": format!("{prefix}-{i}"), "title": format!("Service {i}"),
                        "properties": {"language": langs[i % 4], "replicas": i % 20, "url": format!("https://svc-{i}.example.com"), "tags": ["a", "b"]},
                        "relations": {"team": format!("team-{}", i % 100)}})
                })
                .collect();
            serde_json::to_vec(&json!({"entities": entities})).unwrap_or_default()
        })
        .collect()
}

/// Sends every body to the service blueprint's bulk route over `connections` clients; returns the elapsed time.
async fn ingest(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    bodies: Vec<Vec<u8>>,
    connections: usize,
) -> anyhow::Result<Duration> {
    ingest_into(client, base, token, "service", bodies, connections).await
}

/// Sends every body to a blueprint's bulk route over `connections` concurrent clients; returns the elapsed time.
pub(crate) async fn ingest_into(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    blueprint: &str,
    bodies: Vec<Vec<u8>>,
    connections: usize,
) -> anyhow::Result<Duration> {
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (client, queue) = (client.clone(), Arc::clone(&queue));
        let url = format!("{base}/v1/blueprints/{blueprint}/entities/bulk");
        let token = token.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().ok().and_then(|mut q| q.pop()) else { return Ok::<_, anyhow::Error>(()) };
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if r.status() != 200 {
                    bail!("bulk answered {}: {}", r.status(), r.text().await.unwrap_or_default());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

/// The service and team blueprints, and 100 teams: what the ingest phases write into.
pub(crate) async fn setup_service_catalog(client: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<()> {
    for body in [
        json!({"identifier": "team", "title": "Team", "schema": {"properties": {}}}),
        json!({"identifier": "service", "title": "Service", "schema": {"properties": {
            "language": {"type": "string", "enum": ["Rust", "Go", "Python", "Java"]},
            "replicas": {"type": "number", "minimum": 0}, "url": {"type": "string", "format": "url"},
            "tags": {"type": "array", "items": {"type": "string"}}}},
            "relations": {"team": {"target": "team", "required": true, "many": false}}}),
    ] {
        let r = client.post(format!("{}/v1/blueprints", base)).bearer_auth(token).json(&body).send().await?;
        if !r.status().is_success() {
            bail!("blueprint refused: {}", r.text().await.unwrap_or_default());
        }
    }
    let teams: Vec<Value> = (0..100).map(|i| json!({"identifier": format!("team-{i}")})).collect();
    client
        .post(format!("{}/v1/blueprints/team/entities/bulk", base))
        .bearer_auth(token)
        .json(&json!({"entities": teams}))
        .send()
        .await?;
    Ok(())
}

/// Point reads of random `big-<i>` services by `connections` concurrent clients for `seconds`; answers how
/// many succeeded.
async fn read_throughput(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    entities: usize,
    connections: usize,
    seconds: u64,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, base, token) = (client.clone(), base.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut count = 0u64;
            let mut i = c * 7919;
            while Instant::now() < deadline {
                i = (i + 104_729) % entities.max(1);
                if let Ok(r) = client
                    .get(format!("{base}/v1/blueprints/service/entities/big-{i}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    if r.bytes().await.is_ok() {
                        count += 1;
                    }
                }
            }
            count
        }));
    }
    let mut reads = 0u64;
    for t in tasks {
        reads += t.await.unwrap_or(0);
    }
    reads
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.search {
        return crate::bench_search::run(args.entities, args.keep).await;
    }
    if args.ui {
        return crate::bench_ui::run(args.entities).await;
    }
    if args.standards {
        let entities = if args.entities == 100_000 { 1_000_000 } else { args.entities };
        return crate::bench_standards::run(entities).await;
    }
    if args.deployments {
        let deployments = if args.entities == 100_000 { 1_000_000 } else { args.entities };
        return crate::bench_deployments::run(deployments);
    }
    if args.delivery {
        let webhook = crate::bench_delivery::WebhookBench {
            concurrency: args.webhook_concurrency,
            receiver: args.webhook_receiver.parse()?,
            yield_for: Duration::from_secs(args.delivery_yield_for),
        };
        return crate::bench_delivery::run(args.rate, args.read_seconds, args.write_size, &args.destinations, webhook)
            .await;
    }
    if args.backstage {
        return crate::bench_backstage::run(args.entities).await;
    }
    if args.ingest_webhooks {
        let rate = if args.rate == 20_000 { 5_000 } else { args.rate };
        return crate::bench_ingest::run(rate, args.read_seconds).await;
    }
    if args.actions {
        let rate = if args.rate == 20_000 { 1_000 } else { args.rate };
        return crate::bench_actions::run(rate, args.read_seconds).await;
    }
    if args.hostile {
        return crate::bench_hostile::run(args.count, args.seed).await;
    }
    if args.permissions {
        return crate::bench_access::run(args.entities).await;
    }
    if let Some(store) = &args.replicas {
        return crate::bench_replicas::run(store, args.entities).await;
    }
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().to_path_buf();
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    println!("berth bench: {} entities per ingest phase, data in {}", args.entities, data_dir.display());
    println!(
        "machine: {} cores; client and server share them",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let server = spawn(&data_dir)?;
    let empty_start = wait_ready(&client, &server.base).await?;
    let token = token(&client, &server.base).await?;
    setup_service_catalog(&client, &server.base, &token).await?;

    let mut rows: Vec<(String, String)> = Vec::new();
    rows.push((
        "start-up, empty store (spawn → /readyz 200)".into(),
        format!("{:.0} ms", empty_start.as_secs_f64() * 1e3),
    ));

    let large = bodies("big", args.entities, args.batch);
    let t = ingest(&client, &server.base, &token, large, args.batch_connections).await?;
    rows.push((
        format!("bulk ingest, batches of {} over {} connections", args.batch, args.batch_connections),
        format!("{:.0} entities/s ({:.2} s)", args.entities as f64 / t.as_secs_f64(), t.as_secs_f64()),
    ));

    let small = bodies("small", args.entities, args.small_batch);
    let t = ingest(&client, &server.base, &token, small, args.connections).await?;
    rows.push((
        format!("bulk ingest, batches of {} over {} connections", args.small_batch, args.connections),
        format!("{:.0} entities/s ({:.2} s)", args.entities as f64 / t.as_secs_f64(), t.as_secs_f64()),
    ));

    // Point reads: sequential latency, then concurrent throughput.
    let total = 2 * args.entities;
    let mut lat = Vec::with_capacity(args.reads);
    let mut x: u64 = 12345;
    for _ in 0..args.reads {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        let i = (x >> 33) as usize % args.entities;
        let url = format!("{}/v1/blueprints/service/entities/big-{i}", server.base);
        let started = Instant::now();
        let r = client.get(&url).bearer_auth(&token).send().await?;
        let _ = r.bytes().await?;
        lat.push(started.elapsed());
    }
    lat.sort();
    rows.push((
        format!("GET one entity, sequential, {} requests", args.reads),
        format!(
            "p50 {:.0} µs, p99 {:.0} µs",
            percentile(&lat, 0.5).as_secs_f64() * 1e6,
            percentile(&lat, 0.99).as_secs_f64() * 1e6
        ),
    ));
    for &connections in &args.read_connections {
        let reads = read_throughput(&client, &server.base, &token, args.entities, connections, args.read_seconds).await;
        rows.push((
            format!("GET one entity, {connections} connections, {} s", args.read_seconds),
            format!("{:.0} requests/s", reads as f64 / args.read_seconds as f64),
        ));
    }
    rows.push((format!("server RSS with {total} entities"), format!("{:.0} MiB", rss_mib(server.child.id()))));

    // Start-up with data: after a graceful stop (snapshot at the head) and after SIGKILL (snapshot + tail).
    server.stop_gracefully();
    let restarted = spawn(&data_dir)?;
    let warm = wait_started(&client, &restarted.base).await?;
    rows.push((format!("start-up with {total} entities, after a graceful stop (snapshot at head)"), warm.to_string()));
    // Write a tail past the snapshot, then SIGKILL: the next start loads the snapshot and replays the tail.
    let tail = args.entities / 5;
    let token = self::token(&client, &restarted.base).await?;
    ingest(&client, &restarted.base, &token, bodies("tail", tail, args.batch), args.batch_connections).await?;
    drop(restarted);
    let restarted = spawn(&data_dir)?;
    let killed = wait_started(&client, &restarted.base).await?;
    rows.push((
        format!("start-up with {} entities after SIGKILL (snapshot + {tail} events of tail)", total + tail),
        killed.to_string(),
    ));
    drop(restarted);

    println!();
    println!("| measure | result |");
    println!("|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    if args.keep {
        let kept = dir.keep();
        println!("\ndata kept in {}", kept.display());
    }
    Ok(())
}
