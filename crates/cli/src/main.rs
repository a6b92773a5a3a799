//! `berth`: the portal's single binary.
//!
//! - `berth serve`: run the portal (embedded store by default, zero configuration).
//! - `berth migrate`: copy a catalog into another store (also live) and prove the copy.
//! - `berth backup` / `berth restore`: one-file online backups, restorable into any store.
//! - `berth bench`: measure ingest, point reads, memory and start-up against a real server process.

mod backup;
mod bench;
mod bench_access;
mod bench_replicas;
mod bench_search;
mod bench_ui;
mod config;
mod migrate;
mod transfer;

use clap::{Parser, Subcommand};

/// mimalloc: the catalog is millions of small allocations made and freed by several threads, where glibc's
/// allocator spent half the ingest time (measured with perf; see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "berth", version, about = "Berth: an open-source internal developer portal")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the portal.
    Serve(config::ServeArgs),
    /// Copy a catalog (log and snapshot) into an empty store of any kind, then verify it
    Migrate(migrate::MigrateArgs),
    /// Write a consistent backup of a store (it may be serving) into one file
    Backup(backup::BackupArgs),
    /// Restore a backup file into an empty store of any kind, then verify it
    Restore(backup::RestoreArgs),
    /// Measure ingest rate, read latency, memory and start-up on a fresh server; prints a report.
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
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
            Command::Serve(args) => serve(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Backup(args) => backup::backup(args).await,
            Command::Restore(args) => backup::restore(args).await,
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
    let server = berth_server::start(settings.server.clone()).await?;
    let server = server.with_ui(berth_web::router());
    let info = &server.info;
    let base = format!("http://{}", info.addr);
    println!("Berth {} listening on {base}  (API reference: {base}/docs)", env!("CARGO_PKG_VERSION"));
    println!("Data: {} ({} blueprints, {} entities)", info.store, info.blueprints, info.entities);
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
