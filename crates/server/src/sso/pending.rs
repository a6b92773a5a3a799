//! A sign-in between leaving for the provider and coming back: its `state`, `nonce`, PKCE verifier and where
//! to go afterwards, kept in the browser's cookie under the catalog's signing key (so whichever replica the
//! callback reaches can finish it, and nobody can forge or alter one).
//!
//! The cookie is `<base64url JSON>.<hex HMAC-SHA-256>`; it is HttpOnly, sent only to the callback path, and
//! lives 10 minutes. The verifier never leaves Berth and the browser: the provider sees only its SHA-256.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::{constant_time_eq, mac_hex};
use crate::error::{ApiError, ApiResult};

/// The longest cookie value accepted (a real one is ~300 bytes; `next` is bounded too).
const MAX_COOKIE: usize = 4096;
/// The longest `next` kept (a longer one sends the user home instead).
const MAX_NEXT: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub next: String,
    /// When it stops being valid, in seconds.
    pub expires: i64,
}

fn random_token() -> ApiResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness for a sign-in: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl Pending {
    pub fn new(next: &str, expires: i64) -> ApiResult<Pending> {
        let next = if next.len() > MAX_NEXT { "/".to_string() } else { next.to_string() };
        Ok(Pending { state: random_token()?, nonce: random_token()?, verifier: random_token()?, next, expires })
    }

    /// PKCE's S256 challenge of the verifier (RFC 7636 §4.2).
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }

    /// The cookie value, signed with `key`.
    pub fn seal(&self, key: &str) -> ApiResult<String> {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).map_err(ApiError::internal)?);
        let mac = mac_hex(key, &format!("sso:{body}"))?;
        Ok(format!("{body}.{mac}"))
    }

    /// The pending sign-in a cookie holds, if one of `keys` signed it, it has not expired, and `state` is
    /// the one the provider sent back.
    pub fn open(cookie: &str, keys: &[String], state: &str, now_secs: i64) -> ApiResult<Pending> {
        let expired = || {
            ApiError::new(
                berth_model::ErrorCode::BadRequest,
                "this sign-in has expired or was started in another browser; sign in again",
            )
        };
        if cookie.len() > MAX_COOKIE {
            return Err(expired());
        }
        let (body, mac) = cookie.rsplit_once('.').ok_or_else(expired)?;
        let signed = keys.iter().any(|key| {
            mac_hex(key, &format!("sso:{body}")).is_ok_and(|m| constant_time_eq(m.as_bytes(), mac.as_bytes()))
        });
        if !signed {
            return Err(expired());
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| expired())?;
        let pending: Pending = serde_json::from_slice(&bytes).map_err(|_| expired())?;
        if pending.expires < now_secs || !constant_time_eq(pending.state.as_bytes(), state.as_bytes()) {
            return Err(expired());
        }
        Ok(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sealed_sign_in_opens_only_with_its_key_state_and_time() {
        let p = Pending::new("/blueprints", 1_000).expect("test value");
        let cookie = p.seal("key-1").expect("test value");
        let keys = vec!["key-2".to_string(), "key-1".to_string()];
        assert_eq!(Pending::open(&cookie, &keys, &p.state, 999).expect("test value"), p);
        assert!(Pending::open(&cookie, &["key-2".to_string()], &p.state, 999).is_err(), "another key");
        assert!(Pending::open(&cookie, &keys, "other", 999).is_err(), "another state");
        assert!(Pending::open(&cookie, &keys, &p.state, 1_001).is_err(), "expired");
        // Altered content, with the old signature.
        let (body, mac) = cookie.rsplit_once('.').expect("test value");
        let mut altered: Pending =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("test value")).expect("test value");
        altered.next = "https://evil.example".into();
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&altered).expect("test value")));
        assert!(Pending::open(&forged, &keys, &p.state, 999).is_err(), "altered");
    }

    #[test]
    fn the_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        let p = Pending {
            state: String::new(),
            nonce: String::new(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            next: "/".into(),
            expires: 0,
        };
        assert_eq!(p.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let a = Pending::new("/", 0).expect("test value");
        let b = Pending::new("/", 0).expect("test value");
        assert_ne!(a.state, b.state);
        assert_ne!(a.verifier, b.verifier);
        assert_eq!(a.verifier.len(), 43, "32 random bytes, base64url");
    }

    proptest! {
        /// Whatever a browser sends as the cookie, opening it never panics and accepts nothing unsigned.
        #[test]
        fn any_cookie_is_refused_unless_signed(cookie in ".{0,600}", state in "[a-zA-Z0-9_-]{0,50}") {
            prop_assert!(Pending::open(&cookie, &["k".to_string()], &state, 0).is_err());
        }
    }
}
