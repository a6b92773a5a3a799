//! The provider over HTTP: its discovery document and JWKS (cached), the token endpoint and userinfo.
//!
//! - Every call has a timeout, follows no redirects, and reads at most [`MAX_BODY`] bytes of answer.
//! - The discovery document is kept for [`METADATA_TTL`] and its `issuer` must equal the configured one.
//! - The JWKS is kept for [`KEYS_TTL`]; a token naming a key id the cache lacks makes it fetch the JWKS again,
//!   so a rotation at the provider is picked up by the next sign-in, and a key the provider dropped stops
//!   being accepted within the TTL. (Tokens come from the token endpoint itself, never from the browser, so
//!   unknown key ids cannot be sent by an attacker to make Berth fetch; fetches are serialized, and sign-in
//!   attempts are limited per address.)
//! - A provider that does not answer, or answers nonsense, is a 503 naming what failed; secrets (the client
//!   secret, codes and tokens) are never logged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use super::SsoConfig;
use crate::error::{ApiError, ApiResult};

/// The most bytes read of any answer from the provider.
pub const MAX_BODY: usize = 512 * 1024;
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
pub const METADATA_TTL: Duration = Duration::from_secs(60 * 60);
pub const KEYS_TTL: Duration = Duration::from_secs(60 * 60);

/// What Berth uses of the discovery document (OpenID Connect Discovery 1.0 §3).
#[derive(Clone, Debug, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// Where a user signs out at the provider (OpenID Connect RP-Initiated Logout 1.0).
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
pub struct Tokens {
    pub id_token: String,
    #[serde(default)]
    pub access_token: Option<String>,
}

/// The token endpoint's refusal (RFC 6749 §5.2).
#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

struct Cached<T> {
    value: Arc<T>,
    at: Instant,
}

pub struct Provider {
    issuer: String,
    http: reqwest::Client,
    metadata: Mutex<Option<Cached<Metadata>>>,
    keys: Mutex<Option<Cached<JwkSet>>>,
    /// Serializes fetches, so a burst of sign-ins makes one call.
    fetching: tokio::sync::Mutex<()>,
}

/// An issuer or endpoint URL: HTTPS, or plain HTTP to a loopback address only.
pub fn check_url(what: &str, url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{what} {url:?} is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("{what} {url:?} has no host")),
    };
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(format!("{what} {url:?} must use https (plain http only to a loopback address)")),
    }
}

fn unavailable(what: &str, cause: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %cause, "single sign-on: {what}");
    ApiError::unavailable(format!("the sign-in provider cannot be used now ({what}); try again later"))
}

/// Reads at most [`MAX_BODY`] bytes of an answer.
async fn bounded_body(mut response: reqwest::Response, what: &str) -> ApiResult<Vec<u8>> {
    if response.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(unavailable(what, "the answer is too large"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(what, e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(unavailable(what, "the answer is too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Provider {
    pub fn new(issuer: &str) -> Result<Provider, String> {
        let tls = berth_delivery::tls_config()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| format!("cannot make an HTTP client for single sign-on: {e}"))?;
        Ok(Provider {
            issuer: issuer.trim_end_matches('/').to_string(),
            http,
            metadata: Mutex::new(None),
            keys: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str, what: &str) -> ApiResult<T> {
        check_url(what, url).map_err(|e| unavailable(what, e))?;
        let response = self.http.get(url).send().await.map_err(|e| unavailable(what, e))?;
        let status = response.status();
        let body = bounded_body(response, what).await?;
        if !status.is_success() {
            return Err(unavailable(what, format!("HTTP {status}")));
        }
        serde_json::from_slice(&body).map_err(|e| unavailable(what, e))
    }

    /// The discovery document, fetched when missing or older than [`METADATA_TTL`]. A failed refresh keeps
    /// the one in hand.
    pub async fn metadata(&self) -> ApiResult<Arc<Metadata>> {
        let fresh = |c: &Option<Cached<Metadata>>| {
            c.as_ref().filter(|c| c.at.elapsed() < METADATA_TTL).map(|c| Arc::clone(&c.value))
        };
        if let Some(m) = self.metadata.lock().ok().and_then(|c| fresh(&c)) {
            return Ok(m);
        }
        let _one = self.fetching.lock().await;
        if let Some(m) = self.metadata.lock().ok().and_then(|c| fresh(&c)) {
            return Ok(m);
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let fetched = self.get_json::<Metadata>(&url, "discovery document").await.and_then(|m| {
            if m.issuer.trim_end_matches('/') != self.issuer {
                return Err(unavailable(
                    "discovery document",
                    format!("it names the issuer {:?}, not {:?}", m.issuer, self.issuer),
                ));
            }
            for (what, url) in [
                ("authorization endpoint", &m.authorization_endpoint),
                ("token endpoint", &m.token_endpoint),
                ("JWKS", &m.jwks_uri),
            ] {
                check_url(what, url).map_err(|e| unavailable("discovery document", e))?;
            }
            Ok(m)
        });
        let Ok(mut cache) = self.metadata.lock() else { return Err(ApiError::internal("metadata lock")) };
        match fetched {
            Ok(m) => {
                let m = Arc::new(m);
                *cache = Some(Cached { value: Arc::clone(&m), at: Instant::now() });
                Ok(m)
            }
            Err(e) => cache.as_ref().map(|c| Arc::clone(&c.value)).ok_or(e),
        }
    }

    /// The provider's keys: the cached set while younger than [`KEYS_TTL`] and holding `kid` (when given),
    /// else fetched again.
    pub async fn keys(&self, metadata: &Metadata, kid: Option<&str>) -> ApiResult<Arc<JwkSet>> {
        let usable = |c: &Option<Cached<JwkSet>>, max_age: Duration| {
            c.as_ref()
                .filter(|c| c.at.elapsed() < max_age)
                .filter(|c| kid.is_none_or(|kid| c.value.find(kid).is_some()))
                .map(|c| Arc::clone(&c.value))
        };
        if let Some(k) = self.keys.lock().ok().and_then(|c| usable(&c, KEYS_TTL)) {
            return Ok(k);
        }
        let _one = self.fetching.lock().await;
        // Another sign-in may have fetched them meanwhile.
        if let Some(k) = self.keys.lock().ok().and_then(|c| usable(&c, KEYS_TTL)) {
            return Ok(k);
        }
        let set: JwkSet = self.get_json(&metadata.jwks_uri, "JWKS").await?;
        let set = Arc::new(set);
        if let Ok(mut cache) = self.keys.lock() {
            *cache = Some(Cached { value: Arc::clone(&set), at: Instant::now() });
        }
        Ok(set)
    }

    /// Exchanges an authorization code for tokens, with the PKCE verifier, authenticating as the provider
    /// prefers (`client_secret_basic` unless it only takes `client_secret_post`; a public client sends its id).
    pub async fn exchange(
        &self,
        metadata: &Metadata,
        config: &SsoConfig,
        code: &str,
        verifier: &str,
    ) -> ApiResult<Tokens> {
        let redirect_uri = config.redirect_uri();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let mut request = self.http.post(&metadata.token_endpoint).header("accept", "application/json");
        match &config.client_secret {
            Some(secret) if prefers_post(metadata) => {
                form.push(("client_id", &config.client_id));
                form.push(("client_secret", secret));
            }
            Some(secret) => {
                // RFC 6749 §2.3.1: both parts form-encoded before joining.
                let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let basic = STANDARD.encode(format!("{}:{}", enc(&config.client_id), enc(secret)));
                request = request.header("authorization", format!("Basic {basic}"));
            }
            None => form.push(("client_id", &config.client_id)),
        }
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let response = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable("token endpoint", e))?;
        let status = response.status();
        let body = bounded_body(response, "token endpoint").await?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| unavailable("token endpoint", e));
        }
        match serde_json::from_slice::<TokenError>(&body) {
            // The code was refused (used twice, expired, or the verifier does not match): the user's sign-in
            // failed, the provider is fine.
            Ok(e) if status.is_client_error() => {
                let detail = e
                    .error_description
                    .map(|d| format!(": {}", berth_model::limits::truncate(&d, 200)))
                    .unwrap_or_default();
                tracing::info!(error = %e.error, "single sign-on: the provider refused the code");
                Err(ApiError::unauthorized(format!(
                    "the sign-in provider refused the sign-in ({}{detail}); sign in again",
                    e.error
                )))
            }
            _ => Err(unavailable("token endpoint", format!("HTTP {status}"))),
        }
    }

    /// The userinfo endpoint's claims for an access token.
    pub async fn userinfo(
        &self,
        endpoint: &str,
        access_token: &str,
    ) -> ApiResult<serde_json::Map<String, serde_json::Value>> {
        check_url("userinfo endpoint", endpoint).map_err(|e| unavailable("userinfo", e))?;
        let response = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unavailable("userinfo", e))?;
        let status = response.status();
        let body = bounded_body(response, "userinfo").await?;
        if !status.is_success() {
            return Err(unavailable("userinfo", format!("HTTP {status}")));
        }
        serde_json::from_slice(&body).map_err(|e| unavailable("userinfo", e))
    }
}

fn prefers_post(metadata: &Metadata) -> bool {
    metadata
        .token_endpoint_auth_methods_supported
        .as_ref()
        .is_some_and(|m| !m.iter().any(|m| m == "client_secret_basic") && m.iter().any(|m| m == "client_secret_post"))
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn issuers_use_https_except_on_loopback() {
        for ok in
            ["https://login.example.com", "http://127.0.0.1:9000", "http://localhost:8080/realms/x", "http://[::1]:1"]
        {
            assert!(check_url("x", ok).is_ok(), "{ok}");
        }
        for bad in ["http://login.example.com", "http://10.0.0.1", "ftp://x.io", "not a url", "file:///etc/passwd"] {
            assert!(check_url("x", bad).is_err(), "{bad}");
        }
    }
}
