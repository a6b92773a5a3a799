//! `berth serve` configuration: flags, then environment variables, then an optional TOML file, then defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use berth_server::ServerConfig;
use serde::Deserialize;

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7070]
    #[arg(long, env = "BERTH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the embedded store keeps its data [default: ./berth-data]
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store URL [default: sqlite://<data-dir>/berth.db]
    #[arg(long, env = "BERTH_STORE")]
    pub store: Option<String>,
    /// A TOML file with any of: listen, metrics_listen, data_dir, store, body_limit, snapshot_every, min_seq_wait_ms,
    /// rate_limit, rate_limit_period, org_name, signing_key_file, demo, log_format, log, redis_stream_url,
    /// nats_url, kafka_brokers, kafka_changelog_topic, kafka_tls, kafka_ca_file, kafka_sasl_mechanism,
    /// kafka_sasl_username, allow_destinations, delivery_yield_for, kafka_runs_topic, github_url,
    /// gitlab_url, azure_devops_url, public_url, password_sign_in, and an [sso] table (issuer, client_id, scopes,
    /// label, email_claim, groups_claim, group_roles, group_teams, default_role, allowed_domains, allowed_groups,
    /// sign_out_at_provider)
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Seed the demo catalog if the catalog is empty
    #[arg(long, env = "BERTH_DEMO")]
    pub demo: bool,
    /// Largest request body in bytes [default: 1048576]
    #[arg(long, env = "BERTH_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Write a snapshot every N events [default: 50000]
    #[arg(long, env = "BERTH_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// How long a request with X-Berth-Min-Seq waits for this replica to catch up, in ms [default: 5000]
    #[arg(long, env = "BERTH_MIN_SEQ_WAIT_MS")]
    pub min_seq_wait_ms: Option<u64>,
    /// Requests each credential may make per --rate-limit-period on this server; 0 means no limit [default: 0]
    #[arg(long, env = "BERTH_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// The rate-limit window in seconds [default: 60]
    #[arg(long, env = "BERTH_RATE_LIMIT_PERIOD")]
    pub rate_limit_period: Option<u64>,
    /// The organization's name, as GET /v1/organization answers it [default: Berth]
    #[arg(long, env = "BERTH_ORG_NAME")]
    pub org_name: Option<String>,
    /// The token signing key file, readable only by its owner; every replica must use the same key
    /// (BERTH_SIGNING_KEY, the key itself, wins over any file) [default: <data-dir>/signing-key.json]
    #[arg(long, env = "BERTH_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// Where REDIS_STREAM subscriptions write (redis:// or rediss://)
    #[arg(long, env = "BERTH_REDIS_STREAM_URL")]
    pub redis_stream_url: Option<String>,
    /// Where NATS subscriptions publish (nats://host:port)
    #[arg(long, env = "BERTH_NATS_URL")]
    pub nats_url: Option<String>,
    /// Where KAFKA subscriptions produce: a comma-separated host:port list
    #[arg(long, env = "BERTH_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// The topic blueprints' changelogDestination {"type": "KAFKA"} produce to [default: berth.changelog]
    #[arg(long, env = "BERTH_KAFKA_CHANGELOG_TOPIC")]
    pub kafka_changelog_topic: Option<String>,
    /// The topic KAFKA actions (and webhooks with agent: true) send their runs to [default: berth.runs]
    #[arg(long, env = "BERTH_KAFKA_RUNS_TOPIC")]
    pub kafka_runs_topic: Option<String>,
    /// The GitHub API GITHUB actions dispatch workflows through (GitHub Enterprise: https://<host>/api/v3)
    /// [default: https://api.github.com]
    #[arg(long, env = "BERTH_GITHUB_URL")]
    pub github_url: Option<String>,
    /// A GitHub token that may dispatch workflows (else the organisation secret GITHUB_TOKEN)
    #[arg(long, env = "BERTH_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// The GitLab server GITLAB actions trigger pipelines on [default: https://gitlab.com]
    #[arg(long, env = "BERTH_GITLAB_URL")]
    pub gitlab_url: Option<String>,
    /// A GitLab pipeline trigger token (else the organisation secret GITLAB_TRIGGER_TOKEN)
    #[arg(long, env = "BERTH_GITLAB_TOKEN", hide_env_values = true)]
    pub gitlab_token: Option<String>,
    /// Azure DevOps, where AZURE_DEVOPS actions call their incoming webhooks [default: https://dev.azure.com]
    #[arg(long, env = "BERTH_AZURE_DEVOPS_URL")]
    pub azure_devops_url: Option<String>,
    /// A host webhooks may be sent to (a name, *.domain or an IP address; repeat the flag, or separate with
    /// commas). With none, any host resolving to public addresses only; private and loopback addresses
    /// are refused unless listed
    #[arg(long = "allow-destination", env = "BERTH_ALLOW_DESTINATIONS", value_delimiter = ',')]
    pub allow_destination: Vec<String>,
    /// While the writer is busy (a burst of writes), delivery works a twentieth of the time for changes
    /// younger than this many seconds, leaving the writes the machine; 0: delivery never yields [default: 10]
    #[arg(long, env = "BERTH_DELIVERY_YIELD_FOR")]
    pub delivery_yield_for: Option<u64>,
    /// A second address serving only /metrics, to anyone (give it to Prometheus alone)
    #[arg(long, env = "BERTH_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// A bearer token /metrics accepts on the API's address besides an Admin's (at least 16 characters)
    #[arg(long, env = "BERTH_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "BERTH_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or berth_server=debug [default: info]
    #[arg(long = "log", env = "BERTH_LOG")]
    pub log_filter: Option<String>,
    #[command(flatten)]
    pub sso: crate::sso_config::SsoArgs,
    #[command(flatten)]
    pub kafka: crate::kafka_config::KafkaArgs,
}

/// The optional configuration file.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    body_limit: Option<usize>,
    snapshot_every: Option<u64>,
    min_seq_wait_ms: Option<u64>,
    rate_limit: Option<u32>,
    rate_limit_period: Option<u64>,
    org_name: Option<String>,
    signing_key_file: Option<PathBuf>,
    redis_stream_url: Option<String>,
    nats_url: Option<String>,
    kafka_brokers: Option<String>,
    kafka_changelog_topic: Option<String>,
    kafka_tls: Option<bool>,
    kafka_ca_file: Option<String>,
    kafka_sasl_mechanism: Option<String>,
    kafka_sasl_username: Option<String>,
    allow_destinations: Option<Vec<String>>,
    delivery_yield_for: Option<u64>,
    kafka_runs_topic: Option<String>,
    github_url: Option<String>,
    gitlab_url: Option<String>,
    azure_devops_url: Option<String>,
    demo: Option<bool>,
    log_format: Option<String>,
    log: Option<String>,
    public_url: Option<String>,
    password_sign_in: Option<bool>,
    sso: Option<crate::sso_config::SsoFile>,
}

pub struct Settings {
    pub server: ServerConfig,
    pub log_format: String,
    pub log_filter: String,
}

impl Settings {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid configuration file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("berth-data"));
        let mut server = ServerConfig::new(data_dir);
        if let Some(listen) = args.listen.or(file.listen) {
            server.listen = listen;
        }
        server.store_url = args.store.or(file.store);
        if let Some(limit) = args.body_limit.or(file.body_limit) {
            server.body_limit = limit;
        }
        if let Some(every) = args.snapshot_every.or(file.snapshot_every) {
            server.snapshot_every = every;
        }
        if let Some(ms) = args.min_seq_wait_ms.or(file.min_seq_wait_ms) {
            server.min_seq_wait = std::time::Duration::from_millis(ms);
        }
        if let Some(limit) = args.rate_limit.or(file.rate_limit) {
            server.rate_limit = limit;
        }
        if let Some(secs) = args.rate_limit_period.or(file.rate_limit_period) {
            if secs == 0 {
                anyhow::bail!("the rate-limit period must be at least 1 second");
            }
            server.rate_limit_period = std::time::Duration::from_secs(secs);
        }
        if let Some(name) = args.org_name.or(file.org_name) {
            server.organization = name;
        }
        server.signing_key_file = args.signing_key_file.or(file.signing_key_file);
        server.redis_stream_url = args.redis_stream_url.or(file.redis_stream_url).filter(|s| !s.is_empty());
        server.nats_url = args.nats_url.or(file.nats_url).filter(|s| !s.is_empty());
        server.kafka_brokers = args.kafka_brokers.or(file.kafka_brokers).filter(|s| !s.is_empty());
        if let Some(topic) = args.kafka_changelog_topic.or(file.kafka_changelog_topic).filter(|s| !s.is_empty()) {
            server.kafka_changelog_topic = topic;
        }
        let kafka_file = crate::kafka_config::KafkaFile {
            tls: file.kafka_tls,
            ca_file: file.kafka_ca_file,
            sasl_mechanism: file.kafka_sasl_mechanism,
            sasl_username: file.kafka_sasl_username,
        };
        server.kafka_security = crate::kafka_config::resolve(args.kafka, kafka_file)?;
        let actions = &mut server.actions;
        let nonempty = |s: &String| !s.trim().is_empty();
        if let Some(topic) = args.kafka_runs_topic.or(file.kafka_runs_topic).filter(nonempty) {
            actions.kafka_runs_topic = topic;
        }
        if let Some(url) = args.github_url.or(file.github_url).filter(nonempty) {
            actions.github_url = url.trim_end_matches('/').to_string();
        }
        if let Some(url) = args.gitlab_url.or(file.gitlab_url).filter(nonempty) {
            actions.gitlab_url = url.trim_end_matches('/').to_string();
        }
        if let Some(url) = args.azure_devops_url.or(file.azure_devops_url).filter(nonempty) {
            actions.azure_devops_url = url.trim_end_matches('/').to_string();
        }
        // Tokens only from flags or the environment: a configuration file is not a place for secrets.
        actions.github_token = args.github_token.filter(nonempty);
        actions.gitlab_token = args.gitlab_token.filter(nonempty);
        server.allow_destinations = if args.allow_destination.is_empty() {
            file.allow_destinations.unwrap_or_default()
        } else {
            args.allow_destination
        };
        server.allow_destinations.retain(|d| !d.trim().is_empty());
        if let Some(secs) = args.delivery_yield_for.or(file.delivery_yield_for) {
            server.delivery_yield_for = std::time::Duration::from_secs(secs);
        }
        server.demo = args.demo || file.demo.unwrap_or(false);
        server.metrics_listen = args.metrics_listen.or(file.metrics_listen);
        // Like the other tokens: from the flag or the environment only.
        server.metrics_token = args.metrics_token.filter(|t| !t.is_empty());
        if server.metrics_token.as_ref().is_some_and(|t| t.chars().count() < 16) {
            anyhow::bail!("--metrics-token must be at least 16 characters");
        }
        server.bootstrap_admin_email = std::env::var("BERTH_BOOTSTRAP_ADMIN_EMAIL").ok().filter(|s| !s.is_empty());
        server.bootstrap_admin_password =
            std::env::var("BERTH_BOOTSTRAP_ADMIN_PASSWORD").ok().filter(|s| !s.is_empty());
        if server.bootstrap_admin_email.is_some() != server.bootstrap_admin_password.is_some() {
            anyhow::bail!("set both BERTH_BOOTSTRAP_ADMIN_EMAIL and BERTH_BOOTSTRAP_ADMIN_PASSWORD, or neither");
        }
        server.bootstrap_client_id = std::env::var("BERTH_BOOTSTRAP_CLIENT_ID").ok().filter(|s| !s.is_empty());
        server.bootstrap_client_secret = std::env::var("BERTH_BOOTSTRAP_CLIENT_SECRET").ok().filter(|s| !s.is_empty());
        if server.bootstrap_client_id.is_some() != server.bootstrap_client_secret.is_some() {
            anyhow::bail!("set both BERTH_BOOTSTRAP_CLIENT_ID and BERTH_BOOTSTRAP_CLIENT_SECRET, or neither");
        }
        (server.sso, server.password_sign_in) =
            crate::sso_config::resolve(args.sso, file.sso.unwrap_or_default(), file.public_url, file.password_sign_in)?;
        let log_format = args.log_format.or(file.log_format).unwrap_or_else(|| "text".into());
        if !matches!(log_format.as_str(), "text" | "json") {
            anyhow::bail!("log format must be text or json, got {log_format:?}");
        }
        Ok(Settings { server, log_format, log_filter: args.log_filter.or(file.log).unwrap_or_else(|| "info".into()) })
    }
}

pub fn init_logging(format: &str, filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9999\"\ndata_dir = \"/tmp/from-file\"\nbody_limit = 42\ndemo = true\nlog_format = \"json\"\n")
            .expect("write");
        let args = ServeArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:1234".parse().expect("addr")),
            ..Default::default()
        };
        let s = Settings::resolve(args).expect("resolves");
        assert_eq!(s.server.listen.port(), 1234, "flag wins");
        assert_eq!(s.server.data_dir, PathBuf::from("/tmp/from-file"), "file beats default");
        assert_eq!(s.server.body_limit, 42);
        assert!(s.server.demo);
        assert_eq!(s.log_format, "json");
        let s = Settings::resolve(ServeArgs::default()).expect("defaults");
        assert_eq!(s.server.listen.port(), 7070);
        assert_eq!(s.server.data_dir, PathBuf::from("berth-data"));
        assert_eq!(s.server.body_limit, 1 << 20);
    }

    #[test]
    fn delivery_yields_for_ten_seconds_unless_told_otherwise() {
        let s = Settings::resolve(ServeArgs::default()).expect("defaults");
        assert_eq!(s.server.delivery_yield_for, std::time::Duration::from_secs(10));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, "delivery_yield_for = 3\n").expect("write");
        let s = Settings::resolve(ServeArgs { config: Some(path.clone()), ..Default::default() }).expect("file");
        assert_eq!(s.server.delivery_yield_for, std::time::Duration::from_secs(3));
        let args = ServeArgs { config: Some(path), delivery_yield_for: Some(0), ..Default::default() };
        let s = Settings::resolve(args).expect("flag");
        assert_eq!(s.server.delivery_yield_for, std::time::Duration::ZERO, "the flag wins: never yield");
    }

    /// The guide's single sign-on configuration file, as written, is one `berth serve` takes.
    #[test]
    fn the_guides_sso_file_is_valid() {
        let page = include_str!("../../../docs/src/single-sign-on.md");
        let toml = page.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a toml block");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, toml).expect("write");
        let s = Settings::resolve(ServeArgs { config: Some(path), ..Default::default() }).expect("resolves");
        let sso = s.server.sso.expect("single sign-on");
        assert!(!s.server.password_sign_in);
        assert_eq!(sso.mapping.email_claim, "preferred_username");
        assert_eq!(sso.mapping.group_roles.len(), 1);
        assert_eq!(sso.redirect_uri(), "https://portal.example.com/login/sso/callback");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, "listn = \"x\"\n").expect("write");
        let e = Settings::resolve(ServeArgs { config: Some(path), ..Default::default() }).err().expect("fails");
        assert!(format!("{e:#}").contains("listn"), "{e:#}");
        let e = Settings::resolve(ServeArgs { config: Some(dir.path().join("missing.toml")), ..Default::default() })
            .err()
            .expect("fails");
        assert!(format!("{e:#}").contains("cannot read"));
        let e =
            Settings::resolve(ServeArgs { log_format: Some("xml".into()), ..Default::default() }).err().expect("fails");
        assert!(format!("{e:#}").contains("log format"));
    }
}
