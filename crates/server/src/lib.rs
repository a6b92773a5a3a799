//! Berth's server: the HTTP API (Port v1 compatible), auth, OpenAPI and docs, and start-up. The write
//! pipeline, the feed and the clock are the catalog layer's (`berth_catalog`).
//!
//! - [`start`] opens the store, rebuilds the catalog, bootstraps the signing key and the first admin
//!   credential, seeds the demo catalog on request, binds the socket and serves until shut down.
//! - [`routes`] holds the handlers, one module per resource; [`error`] is the only place that chooses an
//!   HTTP status for an error; [`extract`] turns malformed input into those errors.

pub mod access;
pub mod auth;
pub mod demo;
pub mod error;
pub mod extract;
pub mod invitations;
pub mod keys;
pub mod metered_store;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod searching;
pub mod sign_in;
pub mod sso;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_engine::{Command, Outcome, WriteMeta};
use berth_model::{Credential, Origin, Timestamp};
use serde_json::Value;

use crate::auth::Tokens;
use crate::error::ApiError;
use berth_catalog::{Pipeline, PipelineError};

/// Everything `berth serve` can be told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A store URL; `None` means `sqlite://<data_dir>/berth.db`.
    pub store_url: Option<String>,
    /// The largest request body accepted, in bytes (Port's limit is 1 MiB).
    pub body_limit: usize,
    /// Write a snapshot every this many events (0: never, but on shutdown).
    pub snapshot_every: u64,
    pub bootstrap_client_id: Option<String>,
    pub bootstrap_client_secret: Option<String>,
    /// The first admin user (web UI sign-in); generated and printed once when not given.
    pub bootstrap_admin_email: Option<String>,
    pub bootstrap_admin_password: Option<String>,
    /// Seed the demo catalog when the catalog has no blueprints.
    pub demo: bool,
    /// How long a request with `X-Berth-Min-Seq` waits for this replica to apply that sequence before a 503.
    pub min_seq_wait: Duration,
    /// The organization's name (`GET /v1/organization`).
    pub organization: String,
    /// Requests each credential may make per `rate_limit_period` on this replica (0: no limit).
    pub rate_limit: u32,
    pub rate_limit_period: Duration,
    /// The token signing key file (`None`: `<data-dir>/signing-key.json`); `BERTH_SIGNING_KEY` wins over it.
    pub signing_key_file: Option<PathBuf>,
    /// Where REDIS_STREAM, NATS and KAFKA subscriptions deliver (unset: subscriptions of that kind are
    /// refused, naming the flag).
    pub redis_stream_url: Option<String>,
    pub nats_url: Option<String>,
    pub kafka_brokers: Option<String>,
    /// How the Kafka brokers are reached (TLS, SASL).
    pub kafka_security: berth_delivery::kafka::KafkaSecurity,
    /// The topic blueprints' `changelogDestination: {"type": "KAFKA"}` go to.
    pub kafka_changelog_topic: String,
    /// The hosts webhooks may be sent to (`berth_delivery::address`).
    pub allow_destinations: Vec<String>,
    /// While the writer is busy, delivery workers whose changes are younger than this work a twentieth of the
    /// time (`berth_delivery::yielding`; zero: never).
    pub delivery_yield_for: Duration,
    /// Where action runs go (Kafka topic, GitHub, GitLab, Azure DevOps).
    pub actions: berth_delivery::ActionsConfig,
    /// Run the delivery workers (off only in tests that exercise one replica's delivery against another's).
    pub deliver: bool,
    /// A second address answering only `/metrics`, to anyone (for Prometheus).
    pub metrics_listen: Option<SocketAddr>,
    /// A bearer token `/metrics` accepts on the API's address, besides an Admin's.
    pub metrics_token: Option<String>,
    /// OpenID Connect single sign-on, when configured.
    pub sso: Option<sso::SsoConfig>,
    /// Whether users may sign in to the UI with a password (off: single sign-on only).
    pub password_sign_in: bool,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir,
            store_url: None,
            body_limit: 1 << 20,
            snapshot_every: 50_000,
            bootstrap_client_id: None,
            bootstrap_client_secret: None,
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            demo: false,
            min_seq_wait: Duration::from_secs(5),
            organization: "Berth".into(),
            rate_limit: 0,
            rate_limit_period: Duration::from_secs(60),
            signing_key_file: None,
            redis_stream_url: None,
            nats_url: None,
            kafka_brokers: None,
            kafka_security: Default::default(),
            kafka_changelog_topic: "berth.changelog".into(),
            allow_destinations: Vec::new(),
            delivery_yield_for: berth_delivery::yielding::DEFAULT_BOUND,
            actions: berth_delivery::ActionsConfig::default(),
            deliver: true,
            metrics_listen: None,
            metrics_token: None,
            sso: None,
            password_sign_in: true,
        }
    }

    /// The token signing key file (see [`keys`]): the configured one, or `<data-dir>/signing-key.json`.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_file.clone().unwrap_or_else(|| self.data_dir.join("signing-key.json"))
    }

    pub fn store_url(&self) -> String {
        self.store_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("berth.db").display()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] berth_store::StoreError),
    #[error("pipeline: {0}")]
    Pipeline(#[from] PipelineError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Bootstrap(String),
}

/// What an `all-entities` delete did. It travels inside its `migrationId`, so any replica answers
/// `GET /v1/migrations/{id}` after any restart without storing anything.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationRecord {
    /// The sequence number the delete reached.
    pub seq: u64,
    pub blueprint: String,
    pub deleted: usize,
    pub delete_blueprint: bool,
    pub at: Timestamp,
    /// Who started it (Port's `actor`); empty in ids minted before it was recorded.
    pub actor: String,
}

impl MigrationRecord {
    pub fn id(&self) -> String {
        format!(
            "mig-{:x}-{:x}-{:x}-{}-{}-{}",
            self.seq,
            self.deleted,
            self.at.millis(),
            if self.delete_blueprint { "b" } else { "e" },
            auth::hex(self.blueprint.as_bytes()),
            auth::hex(self.actor.as_bytes())
        )
    }

    pub fn parse(id: &str) -> Option<MigrationRecord> {
        let mut parts = id.strip_prefix("mig-")?.split('-');
        let seq = u64::from_str_radix(parts.next()?, 16).ok()?;
        let deleted = usize::from_str_radix(parts.next()?, 16).ok()?;
        let at = Timestamp::from_millis(i64::from_str_radix(parts.next()?, 16).ok()?);
        let delete_blueprint = match parts.next()? {
            "b" => true,
            "e" => false,
            _ => return None,
        };
        let text = |hex: &str| -> Option<String> {
            if !hex.len().is_multiple_of(2) {
                return None;
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect::<Option<Vec<u8>>>()?;
            String::from_utf8(bytes).ok()
        };
        let blueprint = text(parts.next()?)?;
        // Ids minted before the actor was recorded end after the blueprint.
        let actor = match parts.next() {
            Some(hex) => text(hex)?,
            None => String::new(),
        };
        if parts.next().is_some() {
            return None;
        }
        Some(MigrationRecord { seq, blueprint, deleted, delete_blueprint, at, actor })
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The write pipeline and the published catalog (`view`).
    pub pipeline: Arc<Pipeline>,
    pub tokens: Arc<Tokens>,
    /// The keys tokens are signed and checked with (outside the log).
    pub keys: Arc<keys::SigningKeys>,
    pub limits: Arc<rate_limit::RateLimiter>,
    /// Password hashing slots and failed-attempt limits for sign-in routes.
    pub sign_in: Arc<sign_in::SignInGuard>,
    /// Where searches run, off the async workers.
    pub searches: Arc<searching::SearchSlots>,
    pub config: Arc<ServerConfig>,
    pub started: Instant,
    /// The delivery workers of subscriptions, and their status.
    pub delivery: Arc<berth_delivery::Delivery>,
    /// What `/metrics` shows.
    pub metrics: Arc<metrics::Metrics>,
    /// Single sign-on, when configured.
    pub sso: Option<Arc<sso::Sso>>,
}

/// The address the request came from (the TCP peer; a proxy's address behind one).
pub fn client_address(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// The wall clock, in milliseconds. The only clock the server reads for writes.
pub use berth_catalog::now;

/// Metadata of a write made by the server itself.
pub fn system_meta() -> WriteMeta {
    WriteMeta {
        actor: "berth".into(),
        origin: Origin::System,
        now: now(),
        datasource: None,
        run_id: None,
        principal: None,
    }
}

/// What start-up wants the operator to know.
#[derive(Clone, Debug)]
pub struct StartInfo {
    pub addr: SocketAddr,
    pub store: String,
    pub entities: usize,
    pub blueprints: usize,
    /// Set when a credential was generated on this start: `(client_id, secret, file it was written to)`.
    pub generated_credential: Option<(String, String, PathBuf)>,
    /// Set when the first admin user was generated on this start: `(email, password, file it was written to)`.
    pub generated_user: Option<(String, String, PathBuf)>,
}

pub struct Server {
    pub info: StartInfo,
    pub state: AppState,
    listener: tokio::net::TcpListener,
    /// `--metrics-listen`'s socket, bound at start.
    metrics_listener: Option<tokio::net::TcpListener>,
    ui: Option<axum::Router<AppState>>,
}

/// Installs the process's rustls crypto provider (`ring`), which every HTTPS client (webhooks, and any
/// `reqwest::Client` of the process) uses. Idempotent; [`start`] calls it.
pub fn install_tls_provider() {
    berth_store::tls::provider();
}

/// Opens the store and catalog, bootstraps, seeds the demo if asked, and binds the socket.
pub async fn start(config: ServerConfig) -> Result<Server, StartError> {
    install_tls_provider();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::Bootstrap(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let mut measured = metrics::Metrics::new();
    let writer = berth_catalog::writer_metrics::WriterMetrics::default();
    measured.register_writer(&writer);
    let measured = Arc::new(measured);
    let opened: Arc<dyn berth_store::LogStore> = Arc::from(berth_store::open(&config.store_url()).await?);
    let store: Arc<dyn berth_store::LogStore> =
        Arc::new(metered_store::MeteredStore::new(opened, Arc::clone(&measured)));
    let catalog = Pipeline::open_measured(Arc::clone(&store), config.snapshot_every, writer).await?;
    // The signing key lives outside the log; a catalog made before that hands its key over once.
    let keys = keys::SigningKeys::open(&config.signing_key_path(), catalog.view().signing_key())
        .map_err(StartError::Bootstrap)?;
    let generated_credential = bootstrap(&catalog, &config).await?;
    let generated_user = bootstrap_user(&catalog, &config).await?;
    if config.demo && catalog.view().blueprints().next().is_none() {
        demo::seed(&catalog).await.map_err(StartError::Bootstrap)?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let view = catalog.view();
    let info = StartInfo {
        addr,
        store: store.describe(),
        entities: view.total_entities(),
        blueprints: view.blueprints().count(),
        generated_credential,
        generated_user,
    };
    let delivery_config = berth_delivery::Config {
        key: keys.delivery_key().into_bytes(),
        holder: format!("{}-{}", hostname(), std::process::id()),
        redis_stream_url: config.redis_stream_url.clone(),
        nats_url: config.nats_url.clone(),
        kafka_brokers: config.kafka_brokers.clone(),
        kafka_security: config.kafka_security.clone(),
        kafka_changelog_topic: config.kafka_changelog_topic.clone(),
        allow: config.allow_destinations.clone(),
        webhook_roots: Vec::new(),
        actions: config.actions.clone(),
        yield_for: config.delivery_yield_for,
    };
    let delivery = if config.deliver {
        berth_delivery::Delivery::start(Arc::clone(&catalog), delivery_config)
    } else {
        berth_delivery::Delivery::idle(Arc::clone(&catalog), delivery_config)
    };
    let sso = match &config.sso {
        Some(c) => Some(Arc::new(sso::Sso::new(c.clone()).map_err(StartError::Bootstrap)?)),
        None => None,
    };
    let state = AppState {
        delivery,
        pipeline: catalog,
        tokens: Arc::new(Tokens::default()),
        keys: Arc::new(keys),
        limits: Arc::new(rate_limit::RateLimiter::new(config.rate_limit, config.rate_limit_period)),
        sign_in: Arc::new(sign_in::SignInGuard::default()),
        searches: Arc::new(searching::SearchSlots::default()),
        config: Arc::new(config),
        started: Instant::now(),
        metrics: measured,
        sso,
    };
    let metrics_listener = match state.config.metrics_listen {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?)
        }
        None => None,
    };
    Ok(Server { info, state, listener, metrics_listener, ui: None })
}

impl Server {
    /// Serves the web UI's routes (built by the `berth-web` crate) beside the API.
    pub fn with_ui(mut self, ui: axum::Router<AppState>) -> Server {
        self.ui = Some(ui);
        self
    }

    /// Serves until `shutdown` resolves, then drains connections, hands its subscriptions' delivery over to
    /// the other replicas and writes a final snapshot.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
        // `/metrics` alone, to anyone, on its own address; it stops with the API.
        let metrics = self.metrics_listener.map(|listener| {
            let router = axum::Router::new()
                .route("/metrics", axum::routing::get(routes::system::open_metrics))
                .with_state(self.state.clone());
            tokio::spawn(async move { axum::serve(listener, router).await })
        });
        // Tells the operator at once whether the single sign-on provider answers (sign-ins retry anyway).
        if let Some(sso) = self.state.sso.clone() {
            tokio::spawn(async move {
                match sso.warm_up().await {
                    Ok(()) => tracing::info!(issuer = %sso.config.issuer, "single sign-on provider reached"),
                    Err(e) => {
                        tracing::warn!(issuer = %sso.config.issuer, error = %e.message, "single sign-on provider not reached")
                    }
                }
            });
        }
        let app = tower::ServiceExt::map_request(router_with(self.state.clone(), self.ui), extract::plus_as_space);
        let addr = self.info.addr;
        let service = axum::ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app);
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        if let Some(task) = metrics {
            task.abort();
        }
        // Another replica delivers this one's subscriptions from now, not when the leases run out.
        self.state.delivery.hand_over().await;
        match self.state.pipeline.snapshot().await {
            Ok(seq) => tracing::info!(seq, "final snapshot written"),
            Err(e) => tracing::warn!(error = %e, "final snapshot failed"),
        }
        Ok(())
    }
}

/// This machine's name, for lease holders (`HOSTNAME`, else `berth`).
fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "berth".into())
}

/// Runs a command as the server itself; answers whether it changed anything.
async fn write_system(catalog: &Pipeline, command: Command) -> Result<bool, StartError> {
    let (outcome, _) = catalog.write_one(system_meta(), command).await?;
    outcome.map(|o| !matches!(o, Outcome::Unchanged)).map_err(|e| StartError::Bootstrap(e.to_string()))
}

/// The shortest bootstrap client secret accepted.
pub const MIN_BOOTSTRAP_SECRET: usize = 16;

/// Ensures an admin credential exists. A generated credential is written, readable only by its owner, to
/// `<data_dir>/bootstrap-credentials.json`, and returned so it can be printed once.
async fn bootstrap(catalog: &Pipeline, config: &ServerConfig) -> Result<Option<(String, String, PathBuf)>, StartError> {
    let admin = |client_id: &str, secret: &str| Credential {
        client_id: client_id.to_string(),
        name: "bootstrap admin".into(),
        secret_sha256: auth::hash_secret(secret),
        roles: vec!["Admin".into()],
        teams: Vec::new(),
        created_at: now(),
    };
    if let (Some(id), Some(secret)) = (&config.bootstrap_client_id, &config.bootstrap_client_secret) {
        // An Admin secret is stored as a plain SHA-256: it must be long enough not to be guessed.
        if secret.chars().count() < MIN_BOOTSTRAP_SECRET {
            return Err(StartError::Bootstrap(format!(
                "BERTH_BOOTSTRAP_CLIENT_SECRET must be at least {MIN_BOOTSTRAP_SECRET} characters (it is an Admin secret)"
            )));
        }
        let current = catalog.view().credential(id).cloned();
        let wanted = admin(id, secret);
        if current.as_ref().is_none_or(|c| c.secret_sha256 != wanted.secret_sha256 || !c.is_admin()) {
            write_system(catalog, Command::PutCredential { credential: wanted }).await?;
        }
        return Ok(None);
    }
    if catalog.view().credentials().next().is_some() {
        return Ok(None);
    }
    let client_id = format!("berth_{}", auth::random_hex(8).map_err(|e| StartError::Bootstrap(e.message))?);
    let secret = auth::random_hex(32).map_err(|e| StartError::Bootstrap(e.message))?;
    if !write_system(catalog, Command::BootstrapCredential { credential: admin(&client_id, &secret) }).await? {
        // Another replica made the first credential while this one started.
        return Ok(None);
    }
    let path = config.data_dir.join("bootstrap-credentials.json");
    let body = serde_json::json!({"clientId": client_id, "clientSecret": secret});
    write_private_json(&path, &body)
        .map_err(|e| StartError::Bootstrap(format!("cannot write {}: {e}", path.display())))?;
    Ok(Some((client_id, secret, path)))
}

/// The email of a generated first admin user.
pub const GENERATED_ADMIN_EMAIL: &str = "admin@berth.local";

/// Ensures an admin user exists for the web UI: the configured one (its password follows the configuration),
/// or a generated one written, readable only by its owner, to `<data_dir>/bootstrap-admin.json`.
async fn bootstrap_user(
    catalog: &Pipeline,
    config: &ServerConfig,
) -> Result<Option<(String, String, PathBuf)>, StartError> {
    let fail = |e: ApiError| StartError::Bootstrap(e.message);
    let admin = |email: &str, password_hash: String| {
        let now = now();
        berth_model::User {
            email: email.to_string(),
            first_name: String::new(),
            last_name: String::new(),
            status: berth_model::UserStatus::Active,
            roles: vec!["Admin".into()],
            password_hash: Some(password_hash),
            invite_sha256: None,
            session_epoch: 0,
            sso: None,
            created_at: now,
            updated_at: now,
        }
    };
    if let (Some(email), Some(password)) = (&config.bootstrap_admin_email, &config.bootstrap_admin_password) {
        let email = berth_model::user::normalize_email(email);
        auth::check_password(password).map_err(fail)?;
        let current = catalog.view().user(&email).cloned();
        let matches = current.as_ref().is_some_and(|u| {
            u.is_admin()
                && u.status == berth_model::UserStatus::Active
                && u.password_hash.as_deref().is_some_and(|h| auth::verify_password(password, h))
        });
        if !matches {
            let mut user = admin(&email, auth::hash_password(password).map_err(fail)?);
            // Sessions of the user it replaces end.
            user.session_epoch = current.as_ref().map_or(0, |u| u.session_epoch + 1);
            write_system(catalog, Command::PutUser { user }).await?;
        }
        return Ok(None);
    }
    if catalog.view().users().next().is_some() {
        return Ok(None);
    }
    let password = auth::random_hex(12).map_err(fail)?;
    let user = admin(GENERATED_ADMIN_EMAIL, auth::hash_password(&password).map_err(fail)?);
    if !write_system(catalog, Command::BootstrapUser { user }).await? {
        return Ok(None);
    }
    let path = config.data_dir.join("bootstrap-admin.json");
    let body = serde_json::json!({"email": GENERATED_ADMIN_EMAIL, "password": password});
    write_private_json(&path, &body)
        .map_err(|e| StartError::Bootstrap(format!("cannot write {}: {e}", path.display())))?;
    Ok(Some((GENERATED_ADMIN_EMAIL.to_string(), password, path)))
}

fn write_private_json(path: &std::path::Path, body: &Value) -> std::io::Result<()> {
    write_private(path, serde_json::to_string_pretty(body).unwrap_or_default().as_bytes())
}

/// Writes a file readable only by its owner (0600), also when it existed before with wider permissions.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The whole HTTP API.
pub fn router(state: AppState) -> axum::Router {
    router_with(state, None)
}

/// The whole HTTP surface: the API and, when given, the web UI's routes.
pub fn router_with(state: AppState, ui: Option<axum::Router<AppState>>) -> axum::Router {
    let limit = state.config.body_limit;
    routes::router(state.clone(), ui)
        .route_layer(axum::middleware::from_fn(mark_route))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(routes::backstage_catalog::backstage_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|payload: Box<dyn std::any::Any + Send>| {
            // Logged inside the request's span, so with its trace id; the answer says nothing of it.
            let what = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            ApiError::internal(format!("a handler panicked: {what}")).into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(state.clone(), wait_min_seq))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn_with_state(state, count_requests))
        .layer(axum::middleware::from_fn(trace_requests))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// The token a request presents: its `Authorization: Bearer` token, or the web UI's session cookie.
fn presented_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim);
    bearer.or_else(|| {
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("berth_session=").filter(|t| !t.is_empty()))
    })
}

/// `X-Berth-Min-Seq: N` holds a request until this replica has applied sequence `N` (so a client reads its own
/// write made through another replica), at most `min_seq_wait`; then it answers 503. Only an authenticated
/// request is held: anyone else goes straight on (to its 401, or to a public route), so the header cannot be
/// used to tie up connections or wake the writer.
async fn wait_min_seq(axum::extract::State(app): axum::extract::State<AppState>, req: Request, next: Next) -> Response {
    let wanted = req.headers().get("x-berth-min-seq").cloned().filter(|_| {
        presented_token(req.headers())
            .is_some_and(|t| auth::authenticate(&app.keys, &app.pipeline.view(), t, now().millis() / 1000).is_ok())
    });
    if let Some(raw) = wanted {
        let Some(seq) = raw.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) else {
            return ApiError::bad_request("X-Berth-Min-Seq must be a sequence number (a non-negative integer)")
                .into_response();
        };
        if !app.pipeline.wait_applied(seq, app.config.min_seq_wait).await {
            let mut response = ApiError::unavailable(format!(
                "this replica has not applied sequence {seq} within {} ms (it is at {}); retry later",
                app.config.min_seq_wait.as_millis(),
                app.pipeline.view().seq()
            ))
            .into_response();
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    }
    next.run(req).await
}

/// The content security policy of every answer: scripts, styles and images from Berth itself only (htmx adds
/// one inline style), no framing, no plugins, forms posted back here only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// The API reference page runs the vendored ReDoc, which starts a worker from a blob and styles inline.
const CSP_DOCS: &str = "default-src 'self'; script-src 'self' blob:; worker-src 'self' blob:; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every answer: CSP (with `frame-ancestors 'none'`), `X-Frame-Options`,
/// `X-Content-Type-Options: nosniff` and a referrer policy that keeps paths (and invitation codes) on the site.
async fn security_headers(req: Request, next: Next) -> Response {
    let docs = req.uri().path() == "/docs";
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(axum::http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(if docs { CSP_DOCS } else { CSP }));
    h.insert(axum::http::header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(axum::http::header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

static TRACE_COUNTER: AtomicU64 = AtomicU64::new(0);
static TRACE_PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn next_trace_id() -> String {
    let prefix = TRACE_PREFIX.get_or_init(|| auth::random_hex(6).unwrap_or_else(|_| "000000000000".into()));
    format!("{prefix}{:012x}", TRACE_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Gives every response an `X-Trace-Id` (the caller's, if it sent a sane one) and logs the request.
/// At most one log line a second, counting the lines it held back (for answers that come in floods).
struct LogBudget {
    /// The second (since `start`) of the last line written, and how many were held back since.
    state: std::sync::Mutex<(u64, u64)>,
    start: Instant,
}

impl LogBudget {
    fn new() -> LogBudget {
        LogBudget { state: std::sync::Mutex::new((u64::MAX, 0)), start: Instant::now() }
    }

    /// `Some(held back)` when a line may be written now.
    fn admit(&self, now: Instant) -> Option<u64> {
        let second = now.saturating_duration_since(self.start).as_secs();
        let mut state = self.state.lock().ok()?;
        if state.0 == second {
            state.1 += 1;
            return None;
        }
        let held = state.1;
        *state = (second, 0);
        Some(held)
    }
}

static UNAVAILABLE_LOG: std::sync::LazyLock<LogBudget> = std::sync::LazyLock::new(LogBudget::new);

/// The route pattern that answered a request (`/v1/blueprints/{id}`), for the metrics.
#[derive(Clone)]
struct RouteName(String);

/// Marks a routed answer with its route's pattern (requests no route matched go unmarked).
async fn mark_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|m| RouteName(m.as_str().to_string()));
    let mut response = next.run(req).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// Counts every answer in the metrics, by route pattern (`unmatched` when no route matched), method and
/// status.
async fn count_requests(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    let route = response.extensions().get::<RouteName>().map_or("unmatched", |r| r.0.as_str());
    app.metrics.request(route, &method, response.status().as_u16(), started.elapsed());
    response
}

async fn trace_requests(req: Request, next: Next) -> Response {
    let trace_id = req
        .headers()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map(str::to_string)
        .unwrap_or_else(next_trace_id);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let span = tracing::info_span!("request", trace_id = %trace_id);
    let mut response = tracing::Instrument::instrument(next.run(req), span).await;
    let status = response.status();
    let micros = started.elapsed().as_micros() as u64;
    if status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        // Overload answers come in floods: one line a second at most, saying how many it stands for.
        if let Some(suppressed) = UNAVAILABLE_LOG.admit(Instant::now()) {
            tracing::warn!(%trace_id, %method, %path, status = 503, micros, suppressed, "request refused: unavailable");
        }
    } else if status.is_server_error() {
        tracing::warn!(%trace_id, %method, %path, status = status.as_u16(), micros, "request failed");
    } else {
        tracing::debug!(%trace_id, %method, %path, status = status.as_u16(), micros, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-trace-id", v);
    }
    response
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Bounded wait used by readiness: the store answers within this long.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_503s_logs_one_line_a_second() {
        let budget = LogBudget::new();
        let t0 = budget.start + std::time::Duration::from_millis(10);
        assert_eq!(budget.admit(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(budget.admit(t0 + std::time::Duration::from_micros(i)), None, "held back within the second");
        }
        assert_eq!(budget.admit(t0 + std::time::Duration::from_secs(1)), Some(500), "the next second says how many");
        assert_eq!(budget.admit(t0 + std::time::Duration::from_secs(3)), Some(0));
    }

    #[test]
    fn migration_ids_round_trip() {
        for blueprint in ["service", "a/b+c:d", "ünï", "x-y-z"] {
            let r = MigrationRecord {
                seq: 0x1234,
                blueprint: blueprint.into(),
                deleted: 42,
                delete_blueprint: blueprint.len() % 2 == 0,
                at: Timestamp::from_millis(1_700_000_000_123),
                actor: format!("berth_{blueprint}"),
            };
            assert_eq!(MigrationRecord::parse(&r.id()), Some(r));
        }
        // An id minted before the actor was recorded still reads.
        let old = MigrationRecord::parse("mig-1-2-3-e-61").expect("old id");
        assert_eq!((old.blueprint.as_str(), old.actor.as_str()), ("a", ""));
        for bad in ["", "mig-", "mig-1-2-3-x-61", "mig-1-2-3-e-6", "mig-1-2-3-e-zz", "nope", "mig-1-2-3-e-61-62-extra"]
        {
            assert_eq!(MigrationRecord::parse(bad), None, "{bad}");
        }
    }
}
