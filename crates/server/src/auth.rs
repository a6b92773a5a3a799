//! Machine credentials and access tokens.
//!
//! - A credential is a client id and a 256-bit random secret; only the secret's SHA-256 is stored.
//! - `POST /v1/auth/access_token` trades them for a JWT (HS256, 3 hours) whose claims carry the client id,
//!   its roles and `isMachine: true` (Port's clients read that claim). Asking again returns the same token
//!   until it nears expiry, as Port does.
//! - The signing key lives in the change log, so every replica verifies every token.
//! - [`require_auth`] guards every `/v1` route but the token route.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

pub const TOKEN_LIFETIME_SECS: i64 = 3 * 60 * 60;
/// A cached token is handed out again only while it has at least this long to live.
const REUSE_MARGIN_SECS: i64 = 10 * 60;

/// Who is calling: put into request extensions by [`require_auth`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub client_id: String,
    pub roles: Vec<String>,
    /// The secret version the token was issued for.
    pub secret_version: String,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "Admin")
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claims {
    sub: String,
    client_id: String,
    is_machine: bool,
    roles: Vec<String>,
    /// The credential's secret version when the token was issued; a rotated secret voids the token.
    #[serde(default)]
    sv: String,
    iat: i64,
    exp: i64,
    iss: String,
}

/// Hex SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the OS, hex-encoded.
pub fn random_hex(n: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(ApiError::internal)?;
    Ok(hex(&buf))
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sign(key: &[u8], data: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(ApiError::internal)?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Issues and checks tokens with the catalog's signing key.
#[derive(Default)]
pub struct Tokens {
    cache: Mutex<HashMap<String, (String, i64)>>,
}

impl Tokens {
    /// A token for a credential: the cached one while it lives long enough, else a new one.
    pub fn issue(
        &self,
        key: &str,
        client_id: &str,
        roles: &[String],
        secret_version: &str,
        now: i64,
    ) -> Result<(String, i64), ApiError> {
        let cache_key = format!("{client_id}:{secret_version}");
        if let Ok(cache) = self.cache.lock() {
            if let Some((token, exp)) = cache.get(&cache_key) {
                if *exp - now > REUSE_MARGIN_SECS {
                    return Ok((token.clone(), exp - now));
                }
            }
        }
        let claims = Claims {
            sub: client_id.to_string(),
            client_id: client_id.to_string(),
            is_machine: true,
            roles: roles.to_vec(),
            sv: secret_version.to_string(),
            iat: now,
            exp: now + TOKEN_LIFETIME_SECS,
            iss: "berth".into(),
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).map_err(ApiError::internal)?);
        let signing_input = format!("{header}.{payload}");
        let sig = URL_SAFE_NO_PAD.encode(sign(key.as_bytes(), signing_input.as_bytes())?);
        let token = format!("{signing_input}.{sig}");
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(cache_key, (token.clone(), claims.exp));
        }
        Ok((token, TOKEN_LIFETIME_SECS))
    }

    /// Checks a token's signature and expiry; returns its client id and roles.
    pub fn verify(key: &str, token: &str, now: i64) -> Result<Caller, ApiError> {
        let bad = || ApiError::unauthorized("the access token is invalid");
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let expected = sign(key.as_bytes(), format!("{h}.{p}").as_bytes())?;
        let given = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        if !constant_time_eq(&expected, &given) {
            return Err(bad());
        }
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(|_| bad())?).map_err(|_| bad())?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(bad());
        }
        let claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|_| bad())?).map_err(|_| bad())?;
        if claims.exp <= now {
            return Err(ApiError::unauthorized(
                "the access token has expired; ask POST /v1/auth/access_token for a new one",
            ));
        }
        Ok(Caller { client_id: claims.client_id, roles: claims.roles, secret_version: claims.sv })
    }
}

/// Middleware: a valid `Authorization: Bearer <token>` whose credential still exists, or a 401.
pub async fn require_auth(State(app): State<AppState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        ApiError::unauthorized(
            "an Authorization: Bearer <token> header is required; get a token from POST /v1/auth/access_token",
        )
    })?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?
        .trim();
    let view = app.catalog.view();
    let key = view.signing_key().ok_or_else(|| ApiError::unavailable("the server has no signing key yet"))?;
    let caller = Tokens::verify(key, token, crate::now().millis() / 1000)?;
    let Some(credential) = view.credential(&caller.client_id) else {
        return Err(ApiError::unauthorized("the credential of this token no longer exists"));
    };
    if caller.secret_version != credential.secret_version() {
        return Err(ApiError::unauthorized("the credential's secret was rotated; get a new token"));
    }
    let caller =
        Caller { client_id: caller.client_id, roles: credential.roles.clone(), secret_version: caller.secret_version };
    let allowance = app.limits.check(&caller.client_id, std::time::Instant::now())?;
    req.extensions_mut().insert(caller);
    let mut response = next.run(req).await;
    if let Some(allowance) = allowance {
        allowance.write(response.headers_mut());
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let tokens = Tokens::default();
        let (t, ttl) = tokens.issue("k", "client", &["Admin".into()], "v1", 1000).expect("issue");
        assert_eq!(ttl, TOKEN_LIFETIME_SECS);
        let caller = Tokens::verify("k", &t, 1001).expect("valid");
        assert_eq!(caller.client_id, "client");
        assert!(Tokens::verify("other-key", &t, 1001).is_err());
        assert!(Tokens::verify("k", &t, 1000 + TOKEN_LIFETIME_SECS).is_err(), "expired");
        let mut tampered = t.clone();
        tampered.insert(t.find('.').expect("dot") + 2, 'x');
        assert!(Tokens::verify("k", &tampered, 1001).is_err());
        assert!(Tokens::verify("k", "a.b", 1001).is_err());
        let (again, _) = tokens.issue("k", "client", &["Admin".into()], "v1", 1010).expect("issue");
        assert_eq!(again, t, "the same token is returned while it lives");
    }
}
