//! Who is calling: machine credentials, users' passwords, and the access tokens both trade for.
//!
//! - A credential is a client id and a 256-bit random secret; only the secret's SHA-256 is stored.
//! - `POST /v1/auth/access_token` trades them for a JWT (HS256, 3 hours) whose claims carry the client id,
//!   its roles and `isMachine: true` (Port's clients read that claim). Asking again returns the same token
//!   until it nears expiry, as Port does.
//! - A user signs in with an email and a password (Argon2id, [`hash_password`] / [`verify_password`]) and
//!   gets the same kind of token with `isMachine: false`; the web UI keeps it in an HttpOnly cookie.
//! - Every token carries a version of its principal's secret (`sv`): a rotated secret, a new password or a
//!   disabled user voids the tokens issued before.
//! - The signing key lives in the change log, so every replica verifies every token.
//! - [`require_auth`] guards every `/v1` route but the token route; [`authenticate`] is the one check both it
//!   and the UI's session cookie go through.

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
    /// The credential's client id, or the user's email.
    pub client_id: String,
    pub roles: Vec<String>,
    /// The secret version the token was issued for.
    pub secret_version: String,
    /// A machine credential (`true`) or a user.
    pub is_machine: bool,
    /// The teams it acts for: those listing it, and for a credential also its own `teams`.
    pub teams: Vec<String>,
}

/// Whom a token is issued to.
pub struct Subject<'a> {
    pub id: &'a str,
    pub roles: &'a [String],
    /// [`Credential::secret_version`] or [`User::session_version`].
    pub version: &'a str,
    pub is_machine: bool,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "Admin")
    }

    /// The caller as the engine's permission layer sees it.
    pub fn principal(&self) -> berth_engine::access::Principal {
        berth_engine::access::Principal {
            id: self.client_id.clone(),
            roles: self.roles.clone(),
            teams: self.teams.clone(),
        }
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

/// Hex HMAC-SHA-256 of `data` under `key` (the UI derives its CSRF tokens with it).
pub fn mac_hex(key: &str, data: &str) -> Result<String, ApiError> {
    Ok(hex(&sign(key.as_bytes(), data.as_bytes())?))
}

/// Issues and checks tokens with the catalog's signing key.
#[derive(Default)]
pub struct Tokens {
    cache: Mutex<HashMap<String, (String, i64)>>,
}

impl Tokens {
    /// A token for a credential (the cached one while it lives long enough) or for a user (always new).
    pub fn issue(&self, key: &str, subject: &Subject<'_>, now: i64) -> Result<(String, i64), ApiError> {
        let Subject { id: client_id, roles, version: secret_version, is_machine } = *subject;
        // A rotated signing key gives new tokens.
        let cache_key = format!("{client_id}:{secret_version}:{}", &hash_secret(key)[..16]);
        if is_machine {
            if let Some((token, exp)) = self.cache.lock().ok().and_then(|c| c.get(&cache_key).cloned()) {
                if exp - now > REUSE_MARGIN_SECS {
                    return Ok((token, exp - now));
                }
            }
        }
        let claims = Claims {
            sub: client_id.to_string(),
            client_id: client_id.to_string(),
            is_machine,
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
        if is_machine {
            if let Ok(mut cache) = self.cache.lock() {
                cache.insert(cache_key, (token.clone(), claims.exp));
            }
        }
        Ok((token, TOKEN_LIFETIME_SECS))
    }

    /// Checks a token's signature and expiry; returns its client id and roles.
    pub fn verify(key: &str, token: &str, now: i64) -> Result<Caller, ApiError> {
        Self::verify_with(&[(key.to_string(), None)], token, now)
    }

    /// Checks a token against the keys in use ([`crate::keys::SigningKeys::verifying`]): a key that stopped
    /// signing at `rotated_at` accepts only tokens issued before then. No token lives longer than
    /// [`TOKEN_LIFETIME_SECS`], whatever its claims say.
    pub fn verify_with(keys: &[(String, Option<i64>)], token: &str, now: i64) -> Result<Caller, ApiError> {
        let bad = || ApiError::unauthorized("the access token is invalid");
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let given = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let mut signed_before = None;
        let mut matched = false;
        for (key, rotated_at) in keys {
            let expected = sign(key.as_bytes(), format!("{h}.{p}").as_bytes())?;
            if constant_time_eq(&expected, &given) {
                matched = true;
                signed_before = *rotated_at;
                break;
            }
        }
        if !matched {
            return Err(bad());
        }
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(|_| bad())?).map_err(|_| bad())?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(bad());
        }
        let claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|_| bad())?).map_err(|_| bad())?;
        if claims.exp - claims.iat > TOKEN_LIFETIME_SECS || signed_before.is_some_and(|at| claims.iat > at) {
            return Err(bad());
        }
        if claims.exp <= now {
            return Err(ApiError::unauthorized(
                "the access token has expired; ask POST /v1/auth/access_token for a new one",
            ));
        }
        Ok(Caller {
            client_id: claims.client_id,
            roles: claims.roles,
            secret_version: claims.sv,
            is_machine: claims.is_machine,
            teams: Vec::new(),
        })
    }
}

/// Checks a token and that its principal still exists with the same secret (and, for a user, is active);
/// answers the caller with its current roles.
pub fn authenticate(
    keys: &crate::keys::SigningKeys,
    view: &berth_engine::State,
    token: &str,
    now_secs: i64,
) -> Result<Caller, ApiError> {
    let caller = Tokens::verify_with(&keys.verifying(now_secs), token, now_secs)?;
    let mut teams = view.teams_of(&caller.client_id);
    let (roles, version) = if caller.is_machine {
        let credential = view
            .credential(&caller.client_id)
            .ok_or_else(|| ApiError::unauthorized("the credential of this token no longer exists"))?;
        teams.extend(credential.teams.iter().filter(|t| !teams.contains(t)).cloned().collect::<Vec<_>>());
        (credential.roles.clone(), credential.secret_version().to_string())
    } else {
        let user = view
            .user(&caller.client_id)
            .filter(|u| u.status == berth_model::UserStatus::Active)
            .ok_or_else(|| ApiError::unauthorized("the user of this token no longer exists or may not sign in"))?;
        (user.roles.clone(), user.session_version())
    };
    if caller.secret_version != version {
        return Err(ApiError::unauthorized(if caller.is_machine {
            "the credential's secret was rotated; get a new token"
        } else {
            "the password was changed or the account disabled; sign in again"
        }));
    }
    Ok(Caller { roles, teams, ..caller })
}

/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 8;
/// The longest password accepted (hashing cost grows with it).
pub const MAX_PASSWORD: usize = 1024;

/// Checks a new password's length: a 422 names the rule.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(ApiError::unprocessable(format!(
            "a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters (this one has {n})"
        )));
    }
    Ok(())
}

/// Hashes a password with Argon2id and a random salt (a PHC string). Slow by design: call it off the
/// async workers (`spawn_blocking`).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
}

/// Whether `password` matches the PHC string `phc` (false for a malformed hash).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    PasswordHash::new(phc)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
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
    let caller = authenticate(&app.keys, &app.pipeline.view(), token, crate::now().millis() / 1000)?;
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
        let roles = vec!["Admin".to_string()];
        let subject = Subject { id: "client", roles: &roles, version: "v1", is_machine: true };
        let (t, ttl) = tokens.issue("k", &subject, 1000).expect("issue");
        assert_eq!(ttl, TOKEN_LIFETIME_SECS);
        let caller = Tokens::verify("k", &t, 1001).expect("valid");
        assert_eq!(caller.client_id, "client");
        assert!(Tokens::verify("other-key", &t, 1001).is_err());
        assert!(Tokens::verify("k", &t, 1000 + TOKEN_LIFETIME_SECS).is_err(), "expired");
        let mut tampered = t.clone();
        tampered.insert(t.find('.').expect("dot") + 2, 'x');
        assert!(Tokens::verify("k", &tampered, 1001).is_err());
        assert!(Tokens::verify("k", "a.b", 1001).is_err());
        let (again, _) = tokens.issue("k", &subject, 1010).expect("issue");
        assert_eq!(again, t, "the same token is returned while it lives");
        let user = Subject { id: "a@b.io", roles: &roles, version: "v1", is_machine: false };
        let (u1, _) = tokens.issue("k", &user, 1000).expect("issue");
        let caller = Tokens::verify("k", &u1, 1001).expect("valid");
        assert!(!caller.is_machine);
        assert_eq!(caller.client_id, "a@b.io");
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let phc = hash_password("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert_ne!(hash_password("correct horse").expect("hash"), phc, "salted");
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
    }
}
