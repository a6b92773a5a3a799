//! Webhook destinations: one signed POST per message, no redirects followed, every call timed out, to an
//! address checked against the allow rules (and pinned for the call, so a name cannot resolve to a checked
//! address and then to another). One request at a time, in log order; or, with the subscription's
//! `concurrency` above 1, that many lanes side by side, one entity's changes in order on one lane (Port's
//! webhooks carry one event per request: a receiver's round trip caps one lane at a few thousand changes a
//! second).

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
    /// Requests in flight at once.
    lanes: usize,
}

/// A client whose only address for `url`'s host is one that passed the allow rules (so a name cannot resolve
/// to a checked address and then to another): no redirects, every call timed out.
pub(crate) async fn pinned_client(url: &reqwest::Url, allow: &Allow) -> Result<reqwest::Client, String> {
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((bare.as_str(), port)))
            .await
            .map_err(|_| format!("resolving `{bare}` timed out"))?
            .map_err(|e| format!("`{bare}` does not resolve: {e}"))?
            .collect();
    allow.check(&host, &addrs)?;
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CALL_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(crate::tls_config()?);
    if let Some(first) = addrs.first() {
        builder = builder.resolve(&bare, *first);
    }
    builder.build().map_err(|e| format!("an HTTP client: {e}"))
}

impl Webhook {
    pub fn new(
        url: &str,
        headers: Vec<(String, String)>,
        secret: String,
        subscription: &str,
        allow: Allow,
        lanes: u32,
    ) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("the URL does not parse: {e}"))?;
        if url.host_str().is_none() {
            return Err("the URL has no host".into());
        }
        Ok(Webhook {
            url,
            headers,
            secret,
            subscription: subscription.to_string(),
            allow,
            client: None,
            lanes: lanes.max(1) as usize,
        })
    }

    /// A client whose only address for the URL's host is one that passed the check.
    async fn client(&mut self) -> Result<reqwest::Client, String> {
        if let Some((client, at)) = &self.client {
            if at.elapsed() < RECHECK {
                return Ok(client.clone());
            }
        }
        let client = pinned_client(&self.url, &self.allow).await?;
        self.client = Some((client.clone(), Instant::now()));
        Ok(client)
    }

    /// Sends a page: one message after another, in order; with more than one lane, messages of one key (one
    /// entity) one after another in the lane the key hashes to, the lanes side by side. Which messages were delivered (a lane stops at its first
    /// failure, so an entity's changes never arrive out of order), and the outcome of the first failure in
    /// page order (or of the last call).
    pub(crate) async fn send_all(&mut self, messages: &[&crate::worker::Message]) -> (Vec<bool>, Outcome) {
        let started = Instant::now();
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return (vec![false; messages.len()], Outcome::failed(None, e, started)),
        };
        let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); self.lanes];
        for (i, m) in messages.iter().enumerate() {
            lanes[crate::kafka::partition_of(m.key.as_bytes(), self.lanes)].push(i);
        }
        let this = &*self;
        let runs = lanes.iter().filter(|l| !l.is_empty()).map(|lane| {
            let client = &client;
            async move {
                let mut outcomes = Vec::with_capacity(lane.len());
                for &i in lane {
                    let outcome = this.post(client, messages[i].seq, &messages[i].body).await;
                    let failed = !outcome.delivered;
                    outcomes.push((i, outcome));
                    if failed {
                        break;
                    }
                }
                outcomes
            }
        });
        let mut delivered = vec![false; messages.len()];
        let mut first_failure: Option<(usize, Outcome)> = None;
        let mut last = None;
        for (i, outcome) in futures_util::future::join_all(runs).await.into_iter().flatten() {
            if outcome.delivered {
                delivered[i] = true;
                last = Some(outcome);
            } else if first_failure.as_ref().is_none_or(|(f, _)| i < *f) {
                first_failure = Some((i, outcome));
            }
        }
        match first_failure {
            Some((_, outcome)) => {
                if outcome.status.is_none() {
                    // A connection that failed may have been to an address that changed: resolve again.
                    self.client = None;
                }
                (delivered, outcome)
            }
            None => (delivered, last.unwrap_or_else(|| Outcome::delivered(None, started))),
        }
    }

    /// Sends one message; a 2xx answer delivers it.
    async fn post(&self, client: &reqwest::Client, seq: u64, body: &[u8]) -> Outcome {
        let started = Instant::now();
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
                let why = if e.is_timeout() { "timed out".to_string() } else { without_url(&e) };
                Outcome::failed(None, why, started)
            }
        }
    }
}

/// A request error's message without the URL (which may carry a token in its query).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    last.unwrap_or_else(|| "the request failed".into())
}
