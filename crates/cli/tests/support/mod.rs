//! Helpers shared by the process-level tests: `berth` servers as child processes, their tokens, and the test
//! stores (a fresh PostgreSQL schema or Redis prefix per use, at `BERTH_TEST_POSTGRES_URL` /
//! `BERTH_TEST_REDIS_URL`, defaulting to the local servers; a server that does not answer fails the test).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use berth_testkit::stores::{postgres_url, redis_url, sqlite_url, unique};
use serde_json::Value;

pub mod chromium;

/// The signing key every server these start shares (replicas must agree on one).
const SHARED_SIGNING_KEY: &str = "berth-test-signing-key-0123456789abcdef";
/// Replicas share one delivery key too (subscription secrets are derived from it).
pub const SHARED_DELIVERY_KEY: &str = "berth-test-delivery-key-0123456789abcdef";
pub const ID: &str = "proc-admin";
pub const SECRET: &str = "proc-secret-0123456789";
/// The web UI's admin user of every test server.
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-42";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A child process killed (and reaped) when this is dropped: brokers, providers, drivers a test starts.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `berth serve` child process.
pub struct Berth {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
}

impl Berth {
    /// Starts a server on `store` (its data dir under `dir`), with the test credential, plus `extra` flags.
    pub fn spawn(dir: &Path, store: &str, extra: &[&str]) -> Berth {
        let port = free_port();
        Berth::spawn_at(dir.join(format!("data-{port}")), port, store, extra)
    }

    /// Starts a server on an existing data directory (a restart).
    #[allow(dead_code)]
    pub fn spawn_in(data_dir: &Path, store: &str, extra: &[&str]) -> Berth {
        Berth::spawn_at(data_dir.to_path_buf(), free_port(), store, extra)
    }

    /// Starts a server on `port` (one chosen before, when another process must know the address first).
    pub fn spawn_at(data_dir: PathBuf, port: u16, store: &str, extra: &[&str]) -> Berth {
        Berth::spawn_with_env(data_dir, port, store, extra, &[])
    }

    /// [`Berth::spawn_at`] with more environment variables.
    pub fn spawn_with_env(data_dir: PathBuf, port: u16, store: &str, extra: &[&str], env: &[(&str, &str)]) -> Berth {
        Berth::spawn_through(&[], data_dir, port, store, extra, env)
    }

    /// [`Berth::spawn_with_env`] through a program that runs it (`wrapper`, its arguments before berth's; a
    /// wrapper that `exec`s it, such as `prlimit`, leaves the server the child's process id).
    pub fn spawn_through(
        wrapper: &[&str],
        data_dir: PathBuf,
        port: u16,
        store: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Berth {
        // BERTH_TEST_LOG_DIR=DIR keeps each server's log (at info level) for a failing test.
        let (stderr, level) = match std::env::var("BERTH_TEST_LOG_DIR") {
            Ok(logs) => match std::fs::File::create(Path::new(&logs).join(format!("berth-{port}.log"))) {
                Ok(f) => (Stdio::from(f), "berth_server=debug,berth_store=debug,info"),
                Err(_) => (Stdio::null(), "warn"),
            },
            Err(_) => (Stdio::null(), "warn"),
        };
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_berth"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_berth")),
        };
        let child = command
            .args(["serve", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--store", store])
            .args(extra)
            // Replicas share one signing key, as an operator would configure them.
            .env("BERTH_SIGNING_KEY", SHARED_SIGNING_KEY)
            .env("BERTH_DELIVERY_KEY", SHARED_DELIVERY_KEY)
            .env("BERTH_BOOTSTRAP_CLIENT_ID", ID)
            .env("BERTH_BOOTSTRAP_CLIENT_SECRET", SECRET)
            .env("BERTH_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("BERTH_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("BERTH_LOG", level)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn berth");
        Berth { child, base: format!("http://127.0.0.1:{port}"), data_dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until the server is ready and returns a token.
    pub async fn token(&self, client: &reqwest::Client) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{} did not become ready", self.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        berth_testkit::server::token(client, &self.base, ID, SECRET).await
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                assert!(s.success(), "graceful exit: {s:?}");
                return;
            }
            assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `berth` with `args` to completion; returns (success, stdout, stderr).
pub fn berth(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().expect("run berth");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every entity of a blueprint, over HTTP.
pub async fn entities(client: &reqwest::Client, server: &Berth, token: &str, blueprint: &str) -> Vec<Value> {
    let r = client
        .get(server.url(&format!("/v1/blueprints/{blueprint}/entities")))
        .bearer_auth(token)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 200, "list {blueprint} on {}", server.base);
    let body: Value = r.json().await.expect("json");
    body["entities"].as_array().cloned().unwrap_or_default()
}

/// The identifiers of a blueprint's entities, as `GET .../entities` lists them.
pub async fn identifiers(
    client: &reqwest::Client,
    server: &Berth,
    token: &str,
    blueprint: &str,
) -> std::collections::BTreeSet<String> {
    entities(client, server, token, blueprint)
        .await
        .iter()
        .map(|e| e["identifier"].as_str().expect("id").to_string())
        .collect()
}

pub async fn create_blueprint(client: &reqwest::Client, server: &Berth, token: &str, body: Value) -> u64 {
    let r = client.post(server.url("/v1/blueprints")).bearer_auth(token).json(&body).send().await.expect("blueprint");
    assert_eq!(r.status(), 201, "create blueprint");
    seq_of(&r)
}

/// The `X-Berth-Seq` of a write response.
pub fn seq_of(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("x-berth-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-Berth-Seq on a write")
}

// The outage tests' proxy.
#[allow(unused_imports)]
pub use berth_testkit::proxy::Proxy;

/// An HTTP client for a test (rustls with the `ring` provider installed first, as the binary does).
#[allow(dead_code)]
pub fn client() -> reqwest::Client {
    berth_store::tls::provider();
    reqwest::Client::new()
}
