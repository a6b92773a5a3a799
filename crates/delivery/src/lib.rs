//! Berth's delivery workers: every enabled subscription's changes sent to its destination, in log order and
//! at least once.
//!
//! - [`Delivery`]: the supervisor. It reads the subscriptions from the published catalog every second and
//!   runs one worker per enabled subscription (restarted when its definition changes, stopped when it is
//!   disabled or deleted), and keeps each one's [`Status`] (the last attempts, lag, counts) for the API.
//! - `worker`: one subscription's loop: the log feed read through a [`berth_catalog::feed::Consumer`] named
//!   `subscription:<id>` (a durable position every replica shares; one replica delivers at a time, by
//!   lease), each change filtered, shaped as Port's change event, sent with retries (exponential backoff
//!   with jitter), and the position committed after each page: a crash or a failover repeats at most the
//!   page in flight, never skips one. Under a steady stream of writes a page that would not be full waits
//!   for more changes, up to 10 ms after the previous page.
//! - `messages`: each change's message built once for every worker that sends it.
//! - [`yielding`]: writes first: under a burst of writes a worker rests after each page.
//! - [`webhook`], [`redis_stream`], [`nats`], [`kafka`]: the destinations; [`address`]: where a webhook may go; [`secret`]: a
//!   subscription's signing secret (derived, never stored) and Port's webhook signature.
//!
//! Writes never wait for delivery: workers read the log after the fact, so a slow destination only grows
//! its own lag.

pub mod actions;
pub mod address;
pub mod dead_letters;
pub mod ingest;
pub mod kafka;
mod messages;
pub mod nats;
pub mod redis_stream;
pub mod secret;
pub mod webhook;
mod worker;
pub mod yielding;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_catalog::Pipeline;
use berth_model::subscription::{Destination, HeaderValue, Subscription};
use berth_model::{DefinitionKind, Timestamp};
use serde_json::{Value, json};

/// How the server's delivery is configured (flags and environment).
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The key subscription secrets are derived from (shared by every replica, outside the log).
    pub key: Vec<u8>,
    /// This replica's name, as leases record it.
    pub holder: String,
    /// `--redis-stream-url`: where REDIS_STREAM destinations write.
    pub redis_stream_url: Option<String>,
    /// `--nats-url`: where NATS destinations publish.
    pub nats_url: Option<String>,
    /// `--kafka-brokers`: where KAFKA destinations produce.
    pub kafka_brokers: Option<String>,
    /// `--kafka-tls`, `--kafka-ca-file`, `--kafka-sasl-*`: how the brokers are reached.
    pub kafka_security: kafka::KafkaSecurity,
    /// `--kafka-changelog-topic`: where blueprints' `changelogDestination: {"type": "KAFKA"}` go.
    pub kafka_changelog_topic: String,
    /// `--allow-destination`: the hosts webhooks may go to (see [`address`]).
    pub allow: Vec<String>,
    /// Certificates `https` webhooks trust besides the process's roots (the delivery bench's receiver's).
    pub webhook_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Where action runs go besides webhooks (see [`actions`]).
    pub actions: ActionsConfig,
    /// `--delivery-yield-for`: while the writer is busy, workers whose changes are younger than this work
    /// a twentieth of the time (see [`yielding`]); zero: they never yield.
    pub yield_for: Duration,
}

/// Where action runs are sent: the Kafka topic of KAFKA actions (and webhooks with `agent: true`), and the
/// GitHub, GitLab and Azure DevOps servers (their public services by default; GitHub Enterprise or a
/// self-hosted GitLab by URL). A token not configured is read from the organisation secret of the same
/// purpose (`GITHUB_TOKEN`, `GITLAB_TRIGGER_TOKEN`).
#[derive(Clone, Debug)]
pub struct ActionsConfig {
    /// `--kafka-runs-topic`.
    pub kafka_runs_topic: String,
    /// `--github-url`: the GitHub API's base (`https://api.github.com`, or `https://<host>/api/v3`).
    pub github_url: String,
    /// `--github-token`: a token that may dispatch workflows.
    pub github_token: Option<String>,
    /// `--gitlab-url`: the GitLab server (`https://gitlab.com`).
    pub gitlab_url: String,
    /// `--gitlab-token`: a pipeline trigger token.
    pub gitlab_token: Option<String>,
    /// `--azure-devops-url`: Azure DevOps (`https://dev.azure.com`).
    pub azure_devops_url: String,
    /// How often a followed GitHub workflow run is asked for its status.
    pub github_poll: std::time::Duration,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig {
            kafka_runs_topic: "berth.runs".into(),
            github_url: "https://api.github.com".into(),
            github_token: None,
            gitlab_url: "https://gitlab.com".into(),
            gitlab_token: None,
            azure_devops_url: "https://dev.azure.com".into(),
            github_poll: std::time::Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Whether the server can deliver to a destination of this kind; `Err` names the flag to set.
    pub fn supports(&self, destination: &Destination) -> Result<(), String> {
        let missing = |flag: &str, env: &str, kind: &str| {
            Err(format!("{kind} destinations need the server started with {flag} (or {env})"))
        };
        match destination {
            Destination::Webhook { .. } => Ok(()),
            Destination::RedisStream { .. } if self.redis_stream_url.is_none() => {
                missing("--redis-stream-url", "BERTH_REDIS_STREAM_URL", "REDIS_STREAM")
            }
            Destination::RedisStream { .. } => Ok(()),
            Destination::Nats { .. } if self.nats_url.is_none() => missing("--nats-url", "BERTH_NATS_URL", "NATS"),
            Destination::Nats { .. } => Ok(()),
            Destination::Kafka { .. } if self.kafka_brokers.is_none() => {
                missing("--kafka-brokers", "BERTH_KAFKA_BROKERS", "KAFKA")
            }
            Destination::Kafka { .. } => Ok(()),
        }
    }

    /// A webhook URL whose host is an address literal the allow rules refuse is refused when the
    /// subscription is written (a name is checked when it is resolved, at each delivery).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`destination.url` does not parse: {e}"))?;
        let host = parsed.host_str().ok_or("`destination.url` has no host")?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            address::Allow::new(&self.allow).check(host, &[std::net::SocketAddr::new(ip, 0)])?;
        }
        Ok(())
    }

    /// Seals a subscription body's webhook header values before it is written (see [`secret::seal`]); a
    /// value sealed already (a body read back and sent again) is kept if it opens for this subscription.
    pub fn seal_headers(&self, id: &str, body: &mut Value) -> Result<(), String> {
        let Some(headers) = body.pointer_mut("/destination/headers").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        for (name, value) in headers.iter_mut() {
            match value {
                Value::String(plain) => *value = json!({"sealed": secret::seal(&self.key, id, name, plain)?}),
                _ => {
                    let sealed = value.get("sealed").and_then(Value::as_str).unwrap_or_default();
                    secret::open(&self.key, id, name, sealed)?;
                }
            }
        }
        Ok(())
    }

    /// A webhook's headers as they are sent: sealed values opened.
    pub fn open_headers(&self, id: &str, headers: &[(String, HeaderValue)]) -> Result<Vec<(String, String)>, String> {
        headers
            .iter()
            .map(|(name, value)| match value {
                HeaderValue::Plain(v) => Ok((name.clone(), v.clone())),
                HeaderValue::Sealed(sealed) => secret::open(&self.key, id, name, sealed).map(|v| (name.clone(), v)),
            })
            .collect()
    }

    /// An organisation secret's value sealed (see [`secret::Purpose::OrgSecret`]).
    pub fn seal_org_secret(&self, name: &str, value: &str) -> Result<String, String> {
        secret::seal_for(&self.key, secret::Purpose::OrgSecret, "", name, value)
    }

    /// An organisation secret's sealed value opened.
    pub fn open_org_secret(&self, name: &str, sealed: &str) -> Result<String, String> {
        secret::open_for(&self.key, secret::Purpose::OrgSecret, "", name, sealed)
    }

    /// An encrypted input of a run sealed.
    pub fn seal_input(&self, run: &str, name: &str, value: &str) -> Result<String, String> {
        secret::seal_for(&self.key, secret::Purpose::RunInput, run, name, value)
    }

    /// An encrypted input of a run opened.
    pub fn open_input(&self, run: &str, name: &str, sealed: &str) -> Result<String, String> {
        secret::open_for(&self.key, secret::Purpose::RunInput, run, name, sealed)
    }

    /// An inbound webhook's secret sealed (bound to the webhook), and opened.
    pub fn seal_webhook_secret(&self, webhook: &str, value: &str) -> Result<String, String> {
        secret::seal_for(&self.key, secret::Purpose::WebhookSecret, webhook, "secret", value)
    }

    pub fn open_webhook_secret(&self, webhook: &str, sealed: &str) -> Result<String, String> {
        secret::open_for(&self.key, secret::Purpose::WebhookSecret, webhook, "secret", sealed)
    }

    /// The secret an action's webhook invocations are signed with (derived like a subscription's).
    pub fn action_secret(&self, action: &str) -> String {
        secret::secret(&self.key, &format!("action#{action}"), 1)
    }

    /// The signing secret of a subscription's version.
    pub fn secret(&self, id: &str, version: u32) -> String {
        secret::secret(&self.key, id, version)
    }
}

/// Takes or renews a worker's lease: `true` while this replica holds it; otherwise waits (2 s on standby,
/// 1 s after a store error, logged) and answers `false`, for the worker to ask again.
pub(crate) async fn hold_lease(lease: &mut berth_catalog::feed::Consumer, who: &str) -> bool {
    match lease.hold().await {
        Ok(true) => true,
        Ok(false) => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "{who} cannot take its lease");
            tokio::time::sleep(Duration::from_secs(1)).await;
            false
        }
    }
}

/// The rustls configuration webhooks, action calls and sign-in use: the process's provider (`ring`) and the
/// system's roots, read from disk once per process (a webhook's subscription with `webhook_roots` reads them
/// again when its worker starts: [`Webhook::trusting`](webhook::Webhook::trusting)).
pub fn tls_config() -> Result<rustls::ClientConfig, String> {
    static CONFIG: std::sync::OnceLock<Result<rustls::ClientConfig, String>> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| tls_config_with(&[])).clone()
}

/// A TLS client configuration that trusts the process's roots and `extra` (made anew each call).
pub(crate) fn tls_config_with(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<rustls::ClientConfig, String> {
    let mut roots = berth_store::tls::roots(None).map_err(|e| e.to_string())?;
    for cert in extra {
        roots.add(cert.clone()).map_err(|e| format!("a certificate to trust: {e}"))?;
    }
    rustls::ClientConfig::builder_with_provider(berth_store::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The most attempts a status keeps.
const KEPT_ATTEMPTS: usize = 50;

/// One delivery attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: Timestamp,
    pub seq: u64,
    pub delivered: bool,
    /// The receiver's HTTP status (webhooks).
    pub status: Option<u16>,
    pub error: Option<String>,
    pub millis: u64,
}

/// What happened to one send.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub delivered: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub millis: u64,
}

impl Outcome {
    pub(crate) fn delivered(status: Option<u16>, started: Instant) -> Outcome {
        Outcome { delivered: true, status, error: None, millis: started.elapsed().as_millis() as u64 }
    }
    pub(crate) fn failed(status: Option<u16>, error: String, started: Instant) -> Outcome {
        Outcome { delivered: false, status, error: Some(error), millis: started.elapsed().as_millis() as u64 }
    }
}

/// A subscription's delivery as this replica sees it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// `delivering` (this replica holds the lease), `standby` (another replica does), `failing` (the
    /// message in flight keeps failing), `stopped` (an error stopped the worker: see `last_error`).
    pub state: &'static str,
    /// The last sequence number delivered (committed), and the log's head when last read.
    pub position: u64,
    pub head: u64,
    pub delivered: u64,
    pub skipped: u64,
    pub failures: u64,
    /// Messages this replica put in the dead letters.
    pub dead_lettered: u64,
    /// How long this replica's worker rested to leave a busy writer the machine (see [`yielding`]).
    pub yielded: Duration,
    pub last_error: Option<String>,
    /// The newest attempts, newest last.
    pub attempts: VecDeque<Attempt>,
}

impl Status {
    /// The status as the API shows it.
    pub fn json(&self) -> Value {
        let attempts: Vec<Value> = self
            .attempts
            .iter()
            .rev()
            .map(|a| {
                json!({"at": a.at, "seq": a.seq, "delivered": a.delivered, "status": a.status,
                    "error": a.error, "millis": a.millis})
            })
            .collect();
        json!({"state": self.state, "position": self.position, "head": self.head,
            "lag": self.head.saturating_sub(self.position), "delivered": self.delivered,
            "filteredOut": self.skipped, "failures": self.failures, "deadLettered": self.dead_lettered,
            "yieldedMillis": self.yielded.as_millis() as u64, "lastError": self.last_error,
            "attempts": attempts})
    }

    /// `n` messages delivered by one call, the last of them `seq`.
    fn record_delivered(&mut self, n: u64, seq: u64, millis: u64) {
        let o = Outcome { delivered: true, status: None, error: None, millis };
        self.record(seq, &o);
        self.delivered += n - 1;
    }

    fn record(&mut self, seq: u64, o: &Outcome) {
        if self.attempts.len() == KEPT_ATTEMPTS {
            self.attempts.pop_front();
        }
        self.attempts.push_back(Attempt {
            at: berth_catalog::now(),
            seq,
            delivered: o.delivered,
            status: o.status,
            error: o.error.clone(),
            millis: o.millis,
        });
        if o.delivered {
            self.delivered += 1;
            self.state = "delivering";
        } else {
            self.failures += 1;
            self.state = "failing";
            self.last_error = o.error.clone();
        }
    }
}

type Statuses = Arc<Mutex<HashMap<String, Status>>>;
/// Subscription → the definition body its worker runs, and the worker.
type Workers = Mutex<HashMap<String, (Arc<Value>, tokio::task::JoinHandle<()>)>>;

/// The supervisor (see the crate's documentation).
pub struct Delivery {
    pipeline: Arc<Pipeline>,
    config: Config,
    statuses: Statuses,
    workers: Workers,
    /// The action invoker and the automations worker (see [`actions`]).
    actions: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    messages: Arc<messages::Messages>,
    /// The writer's load, which workers yield to.
    yielding: Arc<yielding::Yielding>,
    /// Inbound webhooks with their jq compiled, for the ingest route.
    webhooks_ready: ingest::ReadyCache,
    /// Where the supervisor and the workers run: `background`'s runtime, or the caller's if it could not
    /// be made.
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

/// How often the supervisor looks at the subscriptions.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

impl Delivery {
    /// Starts delivering every enabled subscription of `pipeline`'s catalog.
    ///
    /// The work runs on a runtime of its own whose threads the operating system runs at a lower priority
    /// than the server's (`background`): when the machine is busy, writes and reads come first and
    /// delivery's lag grows, then drains.
    pub fn start(pipeline: Arc<Pipeline>, config: Config) -> Arc<Delivery> {
        let runtime = match background() {
            Ok(runtime) => Some(runtime),
            Err(e) => {
                tracing::warn!(error = %e, "no runtime of its own for delivery; it shares the server's");
                None
            }
        };
        let handle = runtime.as_ref().map_or_else(tokio::runtime::Handle::current, |r| r.handle().clone());
        let delivery = Arc::new(Delivery {
            yielding: Arc::new(yielding::Yielding::new(Arc::clone(&pipeline), config.yield_for)),
            pipeline,
            config,
            statuses: Arc::default(),
            workers: Mutex::default(),
            actions: Mutex::default(),
            messages: Arc::default(),
            webhooks_ready: ingest::ReadyCache::default(),
            handle,
            runtime,
        });
        if let Ok(mut actions) = delivery.actions.lock() {
            let (p, c) = (Arc::clone(&delivery.pipeline), delivery.config.clone());
            actions.push(delivery.handle.spawn(actions::invoker(p, c)));
            let (p, c) = (Arc::clone(&delivery.pipeline), delivery.config.clone());
            actions.push(delivery.handle.spawn(actions::automations::run(p, c)));
            let (p, c) = (Arc::clone(&delivery.pipeline), delivery.config.clone());
            actions.push(delivery.handle.spawn(ingest::run(p, c)));
        }
        let weak = Arc::downgrade(&delivery);
        delivery.handle.spawn(async move {
            loop {
                let Some(d) = weak.upgrade() else { return };
                d.reconcile();
                drop(d);
                tokio::time::sleep(RECONCILE_EVERY).await;
            }
        });
        delivery
    }

    /// A supervisor that runs no worker (its configuration still answers what the API asks).
    pub fn idle(pipeline: Arc<Pipeline>, config: Config) -> Arc<Delivery> {
        Arc::new(Delivery {
            yielding: Arc::new(yielding::Yielding::new(Arc::clone(&pipeline), config.yield_for)),
            pipeline,
            config,
            statuses: Arc::default(),
            workers: Mutex::default(),
            actions: Mutex::default(),
            messages: Arc::default(),
            webhooks_ready: ingest::ReadyCache::default(),
            handle: tokio::runtime::Handle::current(),
            runtime: None,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Inbound webhooks read and compiled, per version (the ingest route applies mappings with them).
    pub fn webhooks_ready(&self) -> &ingest::ReadyCache {
        &self.webhooks_ready
    }

    /// Each subscription this replica has a worker for: its id, state, position and the head it last read.
    pub fn positions(&self) -> Vec<(String, &'static str, u64, u64)> {
        self.statuses
            .lock()
            .map(|s| s.iter().map(|(id, st)| (id.clone(), st.state, st.position, st.head)).collect())
            .unwrap_or_default()
    }

    /// A subscription's delivery status on this replica.
    pub fn status(&self, id: &str) -> Option<Status> {
        self.statuses.lock().ok()?.get(id).cloned()
    }

    /// Starts, restarts and stops workers to match the subscriptions in the catalog.
    fn reconcile(&self) {
        let view = self.pipeline.view();
        let mut wanted: HashMap<String, Arc<Value>> = HashMap::new();
        for d in view.definitions(DefinitionKind::Subscription) {
            if Subscription::parse(&d.body).is_ok_and(|s| s.enabled) {
                // What delivery writes into the body (dead letters) does not restart its worker.
                wanted.insert(d.identifier.clone(), Arc::new(Subscription::delivery_part(&d.body)));
            }
        }
        // Port's blueprint changelog destinations: an implicit subscription to the blueprint's entities.
        for b in view.blueprints() {
            if let Some(body) =
                b.def.changelog_destination.as_ref().and_then(|d| self.config.changelog_body(&b.def.identifier, d))
            {
                wanted.insert(changelog_id(&b.def.identifier), Arc::new(body));
            }
        }
        let Ok(mut workers) = self.workers.lock() else { return };
        workers.retain(|id, (body, handle)| {
            let keep = wanted.get(id).is_some_and(|w| **w == **body) && !handle.is_finished();
            if !keep {
                handle.abort();
                if let Ok(mut s) = self.statuses.lock() {
                    if !wanted.contains_key(id) {
                        s.remove(id);
                    }
                }
            }
            keep
        });
        for (id, body) in wanted {
            if workers.contains_key(&id) {
                continue;
            }
            let Ok(subscription) = Subscription::parse(&body) else { continue };
            let shared = worker::Shared {
                pipeline: Arc::clone(&self.pipeline),
                config: self.config.clone(),
                statuses: Arc::clone(&self.statuses),
                messages: Arc::clone(&self.messages),
                yielding: Arc::clone(&self.yielding),
            };
            let handle = self.handle.spawn(worker::run(shared, id.clone(), subscription));
            workers.insert(id, (body, handle));
        }
    }

    /// Stops every worker; their leases run out and another replica continues (see [`Delivery::hand_over`]
    /// for a stop that does not wait for that).
    pub fn stop(&self) {
        self.stop_workers();
    }

    /// Stops every worker; the subscriptions they ran.
    fn stop_workers(&self) -> Vec<String> {
        if let Ok(mut actions) = self.actions.lock() {
            actions.drain(..).for_each(|h| h.abort());
        }
        let Ok(mut workers) = self.workers.lock() else { return Vec::new() };
        workers
            .drain()
            .map(|(id, (_, handle))| {
                handle.abort();
                id
            })
            .collect()
    }

    /// A graceful stop (the server shutting down): stops every worker, then gives up this replica's leases,
    /// so another replica goes on at once from the last committed positions (what this one delivered
    /// since is delivered again: at least once) rather than after the lease runs out.
    pub async fn hand_over(&self) {
        let mut leases: Vec<String> = self.stop_workers().iter().map(|id| position_name(id)).collect();
        leases.extend([
            "actions:invoker".to_string(),
            "actions:automations".to_string(),
            ingest::LEASE_NAME.to_string(),
        ]);
        for name in leases {
            if let Err(e) = self.pipeline.release(&name, &self.config.holder).await {
                tracing::warn!(lease = %name, error = %e, "giving up a delivery lease failed; it runs out");
            }
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.take() {
            // Not dropped here: this may be one of its own threads, or an async context.
            runtime.shutdown_background();
        }
    }
}

/// A multi-threaded runtime (a thread per core) whose worker threads run at the lowest priority ([`NICE`] on
/// Linux, where the nice value is per thread): they take the cores the server leaves idle, and little of
/// those it needs. Its blocking threads (store calls, which hold a store connection the writer shares)
/// keep the normal priority, so that a preempted delivery thread never holds up a write.
fn background() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("berth-delivery")
        // Only worker threads park; the first time is when their priority is lowered.
        .on_thread_park(lower_priority)
        .enable_all()
        .build()
}

/// The delivery workers' nice value: the lowest. Under a burst of writes on a full machine they leave the
/// writes more of it than at nice 10 (BENCHMARKS.md, session 29, alternated: the write drop's median
/// -35.8 % against -40.9 %); the price, where brokers share the machine at the normal priority, is the
/// webhook's latency when the machine is full. Unlike `SCHED_IDLE` (session 24), they are never starved: a
/// nice-19 thread still gets its small share of a busy core.
const NICE: i32 = 19;

/// Lowers the calling thread's scheduling priority, once (Linux only; elsewhere the nice value is per
/// process).
fn lower_priority() {
    thread_local! {
        static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if LOWERED.replace(true) {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE) {
        tracing::debug!(error = %e, "the delivery thread's priority could not be lowered");
    }
}

/// The implicit subscription of a blueprint's `changelogDestination` (`#` is in no subscription identifier,
/// so it never meets one a user made).
pub fn changelog_id(blueprint: &str) -> String {
    format!("changelog#{blueprint}")
}

impl Config {
    /// The subscription body a blueprint's `changelogDestination` stands for (`None`: none, or not one
    /// Berth delivers: `{"type": "WEBHOOK", "url"}` and `{"type": "KAFKA"}` are).
    pub fn changelog_body(&self, blueprint: &str, destination: &Value) -> Option<Value> {
        let destination = match destination.get("type").and_then(Value::as_str)? {
            "WEBHOOK" => json!({"type": "WEBHOOK", "url": destination.get("url")?.as_str()?}),
            "KAFKA" => json!({"type": "KAFKA", "topic": self.kafka_changelog_topic}),
            _ => return None,
        };
        Some(json!({"title": format!("changelog of {blueprint}"), "destination": destination,
            "filter": {"resources": ["entity"], "blueprints": [blueprint]}}))
    }
}

/// The consumer name of a subscription's position.
pub fn position_name(id: &str) -> String {
    format!("subscription:{id}")
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("getpriority")
    }

    /// The delivery runtime's worker threads run at [`NICE`] once they have parked; its blocking threads
    /// (which hold a store connection the writer shares) keep the process's priority.
    #[test]
    fn delivery_workers_run_at_the_lowest_priority_and_its_store_calls_do_not() {
        let before = nice();
        let runtime = background().expect("runtime");
        let (worker, blocking) = runtime.block_on(async {
            let worker = tokio::spawn(async {
                // Parked at least once on the way (nothing else to run).
                tokio::time::sleep(Duration::from_millis(20)).await;
                nice()
            });
            let blocking = tokio::task::spawn_blocking(nice);
            (worker.await.expect("worker"), blocking.await.expect("blocking"))
        });
        runtime.shutdown_background();
        assert_eq!(worker, NICE, "a delivery worker thread");
        assert_eq!(blocking, before, "a blocking thread keeps the process's priority");
        assert_eq!(nice(), before, "the caller's thread is untouched");
    }
}
