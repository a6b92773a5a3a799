//! An API server in the test's own process on a real socket (SQLite in a temporary directory), its Admin
//! token, and an HTTP helper that checks every answer carries a trace id and errors Port's envelope.

use std::path::PathBuf;

use berth_server::ServerConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const CLIENT_ID: &str = "test-admin";
pub const CLIENT_SECRET: &str = "test-secret-0123456789";

pub struct TestServer {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    pub dir: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn seq(&self) -> u64 {
        self.headers
            .get("x-berth-seq")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("x-berth-seq header")
    }

    /// Asserts an error answer in Port's envelope.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "status; body: {}", self.body);
        assert_eq!(self.body["ok"], json!(false), "envelope: {}", self.body);
        assert_eq!(self.body["error"], json!(code), "error code: {}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "message: {}", self.body);
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        let mut server = Self::start_in(data_dir, false).await;
        server.dir = Some(dir);
        server
    }

    pub async fn start_in(data_dir: PathBuf, demo: bool) -> TestServer {
        Self::start_configured(data_dir, |config| config.demo = demo).await
    }

    /// A server on a fresh directory whose configuration `configure` adjusts.
    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::start_configured(dir.path().to_path_buf(), configure).await;
        server.dir = Some(dir);
        server
    }

    /// A server with the web UI mounted (`ui`: the UI's routes, e.g. `berth_web::router()`) on a fresh
    /// directory whose configuration `configure` adjusts.
    pub async fn start_with_ui(
        configure: impl FnOnce(&mut ServerConfig),
        ui: axum::Router<berth_server::AppState>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::start_full(dir.path().to_path_buf(), configure, Some(ui)).await;
        server.dir = Some(dir);
        server
    }

    pub async fn start_configured(data_dir: PathBuf, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        Self::start_full(data_dir, configure, None).await
    }

    async fn start_full(
        data_dir: PathBuf,
        configure: impl FnOnce(&mut ServerConfig),
        ui: Option<axum::Router<berth_server::AppState>>,
    ) -> TestServer {
        let mut config = ServerConfig::new(data_dir.clone());
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.bootstrap_client_id = Some(CLIENT_ID.into());
        config.bootstrap_client_secret = Some(CLIENT_SECRET.into());
        configure(&mut config);
        let mut server = berth_server::start(config).await.expect("server starts");
        if let Some(ui) = ui {
            server = server.with_ui(ui);
        }
        let base = format!("http://{}", server.info.addr);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        berth_server::install_tls_provider();
        let client = reqwest::Client::new();
        let token = token(&client, &base, CLIENT_ID, CLIENT_SECRET).await;
        TestServer { base, token, client, dir: None, data_dir, stop: Some(stop), task: Some(task) }
    }

    /// A token for a credential, as `POST /v1/auth/access_token` answers it.
    pub async fn token_for(&self, client_id: &str, client_secret: &str) -> String {
        token(&self.client, &self.base, client_id, client_secret).await
    }

    /// Stops the server gracefully (final snapshot) and keeps the data directory.
    pub async fn stop(mut self) -> (Option<tempfile::TempDir>, PathBuf) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        (self.dir.take(), self.data_dir.clone())
    }

    pub async fn raw(&self, method: Method, path: &str, body: Option<Vec<u8>>, token: Option<&str>) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        assert!(headers.contains_key("x-trace-id"), "every response has X-Trace-Id ({path})");
        Answer { status, headers, body }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
        self.raw(method, path, bytes, Some(&self.token)).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates the small catalog most tests use: team, service (relations to team, many deps), deployment.
    pub async fn seed_blueprints(&self) {
        for body in [
            json!({"identifier": "team", "title": "Team", "schema": {"properties": {"slack": {"type": "string", "format": "url"}}}}),
            json!({"identifier": "service", "title": "Service", "schema": {"properties": {
                    "language": {"type": "string", "enum": ["go", "rust"]},
                    "replicas": {"type": "number", "minimum": 0, "maximum": 50},
                    "url": {"type": "string", "format": "url"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "public": {"type": "boolean", "default": false},
                    "a": {"type": "string"}, "b": {"type": "string"}, "c": {"type": "string"}}},
                "relations": {"team": {"target": "team", "many": false, "required": false},
                              "deps": {"target": "service", "many": true, "required": false}}}),
            json!({"identifier": "deployment", "title": "Deployment", "schema": {"properties": {"version": {"type": "string"}}},
                "relations": {"service": {"target": "service", "many": false, "required": true}}}),
        ] {
            let a = self.post("/v1/blueprints", body).await;
            assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        }
    }
}

/// A token for the test's Admin credential (its real secret version) signed with `key` at `now` (seconds):
/// what someone holding that key could mint.
pub fn admin_token_signed_with(key: &str, now: i64) -> String {
    let roles = vec!["Admin".to_string()];
    let version = berth_server::auth::hash_secret(CLIENT_SECRET)[..16].to_string();
    let subject = berth_server::auth::Subject { id: CLIENT_ID, roles: &roles, version: &version, is_machine: true };
    berth_server::auth::Tokens::default().issue(key, &subject, now).expect("sign").0
}

/// A machine credential named `name` with these roles and teams, and a token for it.
pub async fn app_token(s: &TestServer, name: &str, roles: &[&str], teams: &[&str]) -> String {
    let a = s.post("/v1/apps", json!({"name": name, "roles": roles, "teams": teams})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let app = &a.body["app"];
    s.token_for(app["clientId"].as_str().expect("id"), app["clientSecret"].as_str().expect("secret")).await
}

/// A token for a credential from the server at `base`, as `POST /v1/auth/access_token` answers it.
pub async fn token(client: &reqwest::Client, base: &str, client_id: &str, client_secret: &str) -> String {
    let answer: Value = client
        .post(format!("{base}/v1/auth/access_token"))
        .json(&json!({"clientId": client_id, "clientSecret": client_secret}))
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    answer["accessToken"].as_str().expect("accessToken").to_string()
}
