//! `berth`: the portal's single binary.
//!
//! - `berth serve`: run the portal (embedded store by default, zero configuration).
//! - `berth migrate`: copy a catalog into another store (also live) and prove the copy.
//! - `berth backup` / `berth restore`: one-file online backups, restorable into any store.
//! - `berth report deployment|incident`: report what a pipeline deployed (or an incident) to a portal.
//! - `berth bench`: measure ingest, point reads, memory and start-up against a real server process.

mod backstage_import;
mod backup;
mod bench;
mod bench_access;
mod bench_actions;
mod bench_backstage;
mod bench_cpu;
mod bench_delivery;
mod bench_deployments;
mod bench_hostile;
mod bench_ingest;
mod bench_replicas;
mod bench_search;
mod bench_standards;
mod bench_ui;
mod config;
mod copy;
mod kafka_config;
mod migrate;
mod open_files;
mod port_api;
mod progress;
mod report;
mod sso_config;
mod transfer;

use clap::{Parser, Subcommand};

/// mimalloc: the catalog is millions of small allocations made and freed by several threads, where glibc's
/// allocator spent half the ingest time (measured with perf; see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `berth --version`: the release, and the formats of the data it reads (a data directory written in a newer
/// format is refused, saying so; see the README's "Upgrading").
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (reads event format 1, snapshot format 1)");

#[derive(Parser)]
#[command(name = "berth", version = VERSION, about = "Berth: an open-source internal developer portal")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the portal.
    Serve(Box<config::ServeArgs>),
    /// Copy a catalog (log and snapshot) into an empty store of any kind, then verify it
    Migrate(migrate::MigrateArgs),
    /// Write a consistent backup of a store (it may be serving) into one file
    Backup(backup::BackupArgs),
    /// Restore a backup file into an empty store of any kind, then verify it
    Restore(backup::RestoreArgs),
    /// Report a deployment or an incident to a running portal (from a CI pipeline)
    Report(report::ReportArgs),
    /// Measure ingest rate, read latency, memory and start-up on a fresh server; prints a report.
    Bench(bench::BenchArgs),
    /// Copy a catalog between portals through Port's public API (Port to Berth, Berth to Berth, Berth to
    /// Port): teams, blueprints, entities with relations, scorecards, actions, webhooks; resumable, then verified
    Copy(copy::CopyArgs),
    /// Write a portal's catalog (the same content `copy` moves) into one JSON file
    Export(copy::ExportArgs),
    /// Write an export file into a portal (resumable, then verified), or `import backstage PATH...`: a
    /// Backstage catalog
    Import(copy::ImportArgs),
    /// Replace the token signing key: the new key signs from now on, the old one is accepted for tokens
    /// issued before, for one token lifetime (3 hours). Running servers pick the file up within seconds.
    RotateSigningKey(RotateArgs),
}

#[derive(clap::Args)]
struct RotateArgs {
    /// The key file every replica reads [default: ./berth-data/signing-key.json]
    #[arg(long, env = "BERTH_SIGNING_KEY_FILE")]
    signing_key_file: Option<std::path::PathBuf>,
    /// The data directory whose default key file to rotate (when no --signing-key-file)
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
}

/// `berth rotate-signing-key`.
fn rotate_signing_key(args: RotateArgs) -> anyhow::Result<()> {
    use berth_server::keys;
    let path = args.signing_key_file.unwrap_or_else(|| {
        args.data_dir.unwrap_or_else(|| std::path::PathBuf::from("berth-data")).join("signing-key.json")
    });
    let current = keys::read_key_file(&path)
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow::anyhow!("{} does not exist (a server writes it on its first start)", path.display()))?
        .0;
    let new_key = berth_server::auth::random_hex(32).map_err(|e| anyhow::anyhow!(e.message))?;
    let now = berth_server::now().millis() / 1000;
    keys::write_key_file(&path, &current.rotated(new_key, now)).map_err(anyhow::Error::msg)?;
    println!(
        "Rotated the signing key in {}. Tokens signed with the previous key stay valid until they expire (at most 3 hours); copy the file to every replica.",
        path.display()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    // Every HTTPS client of the process (webhooks, `berth report`) uses rustls with the `ring` provider.
    berth_store::tls::provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Bench(args) => {
                // In process, the bench's server keeps as many connections as `berth serve` would.
                open_files::raise();
                bench::run(args).await
            }
            Command::Report(args) => report::run(args).await,
            Command::Copy(args) => copy::copy(args).await,
            Command::Export(args) => copy::export(args).await,
            Command::Import(args) => copy::import(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Backup(args) => backup::backup(args).await,
            Command::Restore(args) => backup::restore(args).await,
            Command::RotateSigningKey(args) => rotate_signing_key(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: config::ServeArgs) -> anyhow::Result<()> {
    let settings = config::Settings::resolve(args)?;
    config::init_logging(&settings.log_format, &settings.log_filter);
    open_files::raise_and_log();
    let server = berth_server::start(settings.server.clone()).await?;
    let server = server.with_ui(berth_web::router());
    let info = &server.info;
    let base = format!("http://{}", info.addr);
    println!("Berth {} listening on {base}  (API reference: {base}/docs)", env!("CARGO_PKG_VERSION"));
    println!("Data: {} ({} blueprints, {} entities)", info.store, info.blueprints, info.entities);
    if let Some(addr) = settings.server.metrics_listen {
        println!("Metrics (for Prometheus): http://{addr}/metrics");
    }
    match &info.generated_credential {
        Some((id, secret, path)) => {
            println!("First admin credential (shown once; also in {}):", path.display());
            println!("  clientId:     {id}");
            println!("  clientSecret: {secret}");
            println!(
                "Get a token: curl -s -X POST {base}/v1/auth/access_token -H 'content-type: application/json' -d '{{\"clientId\":\"{id}\",\"clientSecret\":\"{secret}\"}}'"
            );
        }
        None => {
            let hint = if settings.server.bootstrap_client_id.is_some() {
                "the BERTH_BOOTSTRAP_CLIENT_ID / BERTH_BOOTSTRAP_CLIENT_SECRET credential".to_string()
            } else {
                format!("the credential in {}", settings.server.data_dir.join("bootstrap-credentials.json").display())
            };
            println!("Get a token: POST {base}/v1/auth/access_token with {hint}");
        }
    }
    match &info.generated_user {
        Some((email, password, path)) => {
            println!("Web UI: {base}/login as {email} / {password}  (shown once; also in {})", path.display());
        }
        None => println!("Web UI: {base}/login"),
    }
    server.run(berth_server::shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_names_the_formats_this_berth_reads() {
        let formats = format!(
            "(reads event format {}, snapshot format {})",
            berth_engine::codec::FORMAT,
            berth_engine::SNAPSHOT_FORMAT
        );
        assert!(super::VERSION.ends_with(&formats), "{} vs {formats}", super::VERSION);
    }
}
