//! Webhook destinations: one signed POST per message, no redirects followed, every call timed out, to an
//! address checked against the allow rules (and pinned for the call, so a name cannot resolve to a checked
//! address and then to another).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::address::Allow;
use crate::{Outcome, secret};

/// The longest a webhook call may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a checked address is trusted before the host is resolved and checked again.
const RECHECK: Duration = Duration::from_secs(60);

pub struct Webhook {
    url: reqwest::Url,
    headers: Vec<(String, String)>,
    secret: String,
    subscription: String,
    allow: Allow,
    client: Option<(reqwest::Client, Instant)>,
}

impl Webhook {
    pub fn new(
        url: &str,
        headers: Vec<(String, String)>,
        secret: String,
        subscription: &str,
        allow: Allow,
    ) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("the URL does not parse: {e}"))?;
        if url.host_str().is_none() {
            return Err("the URL has no host".into());
        }
        Ok(Webhook { url, headers, secret, subscription: subscription.to_string(), allow, client: None })
    }

    /// A client whose only address for the URL's host is one that passed the check.
    async fn client(&mut self) -> Result<reqwest::Client, String> {
        if let Some((client, at)) = &self.client {
            if at.elapsed() < RECHECK {
                return Ok(client.clone());
            }
        }
        let host = self.url.host_str().unwrap_or_default().to_string();
        let port = self.url.port_or_known_default().unwrap_or(443);
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((bare.as_str(), port)))
                .await
                .map_err(|_| format!("resolving `{bare}` timed out"))?
                .map_err(|e| format!("`{bare}` does not resolve: {e}"))?
                .collect();
        self.allow.check(&host, &addrs)?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(crate::tls_config()?);
        if let Some(first) = addrs.first() {
            builder = builder.resolve(&bare, *first);
        }
        let client = builder.build().map_err(|e| format!("an HTTP client: {e}"))?;
        self.client = Some((client.clone(), Instant::now()));
        Ok(client)
    }

    /// Sends one message; a 2xx answer delivers it.
    pub async fn send(&mut self, seq: u64, body: &[u8]) -> Outcome {
        let started = Instant::now();
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return Outcome::failed(None, e, started),
        };
        let timestamp = berth_catalog::now().millis() / 1000;
        let mut req = client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("x-port-timestamp", timestamp.to_string())
            .header("x-port-signature", secret::signature(&self.secret, timestamp, body))
            .header("x-berth-seq", seq.to_string())
            .header("x-berth-subscription", &self.subscription);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.body(body.to_vec()).send().await {
            Ok(r) if r.status().is_success() => Outcome::delivered(Some(r.status().as_u16()), started),
            Ok(r) => {
                let status = r.status().as_u16();
                Outcome::failed(Some(status), format!("the receiver answered {status}"), started)
            }
            Err(e) => {
                // A connection that failed may have been to an address that changed: resolve again next time.
                self.client = None;
                let why = if e.is_timeout() { "timed out".to_string() } else { without_url(&e) };
                Outcome::failed(None, why, started)
            }
        }
    }
}

/// A request error's message without the URL (which may carry a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    last.unwrap_or_else(|| "the request failed".into())
}
