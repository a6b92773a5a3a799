//! A client of Port's public v1 API (Berth serves the same API): a token from an app's client id and
//! secret, renewed when it expires, and JSON calls that retry a transient failure (a connection error, 429,
//! 502, 503, 504) with back-off. `berth copy`, `export` and `import` speak to both ends through it.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// One side of a copy: a portal's API and an app's credentials.
pub struct PortApi {
    pub base: String,
    http: reqwest::Client,
    client_id: String,
    secret: String,
    token: tokio::sync::Mutex<Option<String>>,
    retries: u32,
}

/// An answer: its status and JSON body (`Value::Null` when not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The body of a success, or an error with the server's reason.
    pub fn ok(self, what: &str) -> anyhow::Result<Value> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            bail!("{what}: {} {}", self.status, self.body["message"].as_str().unwrap_or(&self.body.to_string()))
        }
    }
}

impl PortApi {
    pub fn new(base: &str, client_id: &str, secret: &str) -> anyhow::Result<PortApi> {
        if client_id.is_empty() || secret.is_empty() {
            bail!("no credentials for {base}: give an app's client id and secret");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("berth-copy/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(PortApi {
            base: base.trim_end_matches('/').to_string(),
            http,
            client_id: client_id.to_string(),
            secret: secret.to_string(),
            token: tokio::sync::Mutex::new(None),
            retries: 6,
        })
    }

    async fn token(&self, renew: bool) -> anyhow::Result<String> {
        let mut token = self.token.lock().await;
        if let (Some(t), false) = (token.as_ref(), renew) {
            return Ok(t.clone());
        }
        let body = json!({"clientId": self.client_id, "clientSecret": self.secret});
        let answer = self.send(Method::POST, "/v1/auth/access_token", Some(&body), None).await?;
        let value = answer.ok(&format!("signing in to {}", self.base))?;
        let t = value["accessToken"].as_str().context("the portal answered no access token")?.to_string();
        *token = Some(t.clone());
        Ok(t)
    }

    /// Whether the portal is a Berth (it answers `/healthz` with its log's position); Berth takes larger
    /// bulk writes than Port's 20 entities.
    pub async fn is_berth(&self) -> bool {
        match self.http.get(format!("{}/healthz", self.base)).send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.is_ok_and(|v| v.get("seq").is_some()),
            _ => false,
        }
    }

    /// A call with the token (renewed once on a 401).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Answer> {
        let token = self.token(false).await?;
        let answer = self.send(method.clone(), path, body, Some(&token)).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            let token = self.token(true).await?;
            return self.send(method, path, body, Some(&token)).await;
        }
        Ok(answer)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await?.ok(&format!("GET {}{path}", self.base))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut wait = Duration::from_millis(250);
        let mut attempt = 0;
        loop {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            if let Some(b) = body {
                request = request.json(b);
            }
            let failure = match request.send().await {
                Ok(r) if !matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                    return Ok(Answer { status, body });
                }
                Ok(r) => format!("{}", r.status()),
                Err(e) => format!("{e}"),
            };
            if attempt >= self.retries {
                bail!("{method} {url} failed after {} attempts: {failure}", attempt + 1);
            }
            attempt += 1;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(8));
        }
    }
}

/// A path segment: everything but letters, digits and `-_.~` percent-encoded (identifiers may hold `/`).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
