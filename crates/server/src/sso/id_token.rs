//! Checking an ID token (OpenID Connect Core §3.1.3.7) with the `jsonwebtoken` crate:
//!
//! - signed with an asymmetric algorithm ([`ALGORITHMS`]; never `none` and never HMAC, whose key would be
//!   the client secret) by the key of the provider's JWKS its `kid` names (or the only key of that type);
//! - `iss` the provider's issuer, `aud` holding the client id (and `azp`, when present, the client id),
//!   `exp` not passed and `iat` not in the future (a minute of leeway for clocks), `sub` present;
//! - `nonce` the one this sign-in sent (a token replayed from another sign-in fails here).
//!
//! The token's size is bounded before anything is decoded.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::claims::Claims;
use crate::error::{ApiError, ApiResult};

/// The algorithms accepted.
pub const ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];
/// The longest ID token accepted.
pub const MAX_TOKEN: usize = 64 * 1024;
/// Clock difference tolerated with the provider, in seconds.
pub const LEEWAY_SECS: u64 = 60;

fn refused(why: impl std::fmt::Display) -> ApiError {
    tracing::info!(reason = %why, "single sign-on: ID token refused");
    ApiError::unauthorized(format!("the sign-in provider's ID token is not valid ({why}); sign in again"))
}

/// What the token must say.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now_secs: i64,
}

/// The token's header, read without checking anything else (to find its key).
pub fn header(token: &str) -> ApiResult<Header> {
    if token.len() > MAX_TOKEN {
        return Err(refused("it is too long"));
    }
    jsonwebtoken::decode_header(token).map_err(refused)
}

/// The JWKS key for a token's header: the one its `kid` names; without a `kid`, the only key whose type
/// fits the algorithm. Keys marked for encryption (`use: enc`) never verify.
fn key_for<'a>(header: &Header, keys: &'a JwkSet) -> Option<&'a Jwk> {
    let fits = |k: &&Jwk| {
        let family = matches!(
            (&k.algorithm, header.alg),
            (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
                | (AlgorithmParameters::RSA(_), Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512)
                | (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
        );
        let for_signing = !matches!(k.common.public_key_use, Some(jsonwebtoken::jwk::PublicKeyUse::Encryption));
        family && for_signing
    };
    match &header.kid {
        Some(kid) => keys.keys.iter().filter(|k| k.common.key_id.as_deref() == Some(kid)).find(fits),
        None => {
            let mut candidates = keys.keys.iter().filter(fits);
            let only = candidates.next();
            if candidates.next().is_some() { None } else { only }
        }
    }
}

/// Checks `token` and returns its claims.
pub fn verify(token: &str, keys: &JwkSet, expect: &Expect<'_>) -> ApiResult<Claims> {
    let header = header(token)?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(refused(format!("it is signed with {:?}, which Berth does not accept", header.alg)));
    }
    let jwk = key_for(&header, keys).ok_or_else(|| refused("no key of the provider's JWKS signed it"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(refused)?;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = LEEWAY_SECS;
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(&[expect.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // `exp` is checked against our own clock below (jsonwebtoken reads the system clock).
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(refused)?;
    let claims = data.claims;
    let now = expect.now_secs;
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    match number("exp") {
        Some(exp) if exp + (LEEWAY_SECS as i64) >= now => {}
        Some(_) => return Err(refused("it has expired")),
        None => return Err(refused("it has no expiry")),
    }
    if number("iat").is_some_and(|iat| iat > now + LEEWAY_SECS as i64) {
        return Err(refused("it was issued in the future"));
    }
    let audiences = match claims.get("aud") {
        Some(Value::Array(a)) => a.len(),
        _ => 1,
    };
    match claims.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != expect.client_id => return Err(refused("it was issued to another client (azp)")),
        None if audiences > 1 => return Err(refused("it has several audiences and no azp")),
        _ => {}
    }
    let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    if !crate::auth::constant_time_eq(nonce.as_bytes(), expect.nonce.as_bytes()) {
        return Err(refused("its nonce is not this sign-in's"));
    }
    Claims::from_id_token(claims).map_err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use proptest::prelude::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    /// A P-256 key: its signing key and its JWKS entry.
    fn key(kid: &str) -> (EncodingKey, Value) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("test value");
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("test value");
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
        (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
    }

    fn keys(jwks: &[Value]) -> JwkSet {
        serde_json::from_value(json!({"keys": jwks})).expect("test value")
    }

    const NOW: i64 = 1_800_000_000;

    fn claims() -> Value {
        json!({"iss": "https://idp.example", "aud": "berth", "sub": "u1", "nonce": "n1", "exp": NOW + 300,
            "iat": NOW, "email": "a@b.io"})
    }

    fn sign(claims: &Value, key: &EncodingKey, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, key).expect("test value")
    }

    fn expect() -> Expect<'static> {
        Expect { issuer: "https://idp.example", client_id: "berth", nonce: "n1", now_secs: NOW }
    }

    #[test]
    fn a_good_token_is_read() {
        let (k, jwk) = key("k1");
        let (_, other) = key("k2");
        let set = keys(&[other, jwk]);
        let c = verify(&sign(&claims(), &k, Some("k1")), &set, &expect()).expect("test value");
        assert_eq!(c.subject, "u1");
        assert_eq!(c.all["email"], "a@b.io");
        // Without a kid, the only key of the right type.
        let (k, jwk) = key("k1");
        assert!(verify(&sign(&claims(), &k, None), &keys(std::slice::from_ref(&jwk)), &expect()).is_ok());
        let (_, second) = key("k3");
        assert!(verify(&sign(&claims(), &k, None), &keys(&[jwk, second]), &expect()).is_err(), "ambiguous");
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let (k, jwk) = key("k1");
        let set = keys(std::slice::from_ref(&jwk));
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = claims();
            f(&mut c);
            sign(&c, &k, Some("k1"))
        };
        let cases: Vec<(String, &str)> = vec![
            (with(&|c| c["nonce"] = json!("other")), "nonce"),
            (with(&|c| c["aud"] = json!("someone-else")), "InvalidAudience"),
            (with(&|c| c["iss"] = json!("https://evil.example")), "InvalidIssuer"),
            (with(&|c| c["exp"] = json!(NOW - 120)), "expired"),
            (with(&|c| c["iat"] = json!(NOW + 600)), "future"),
            (with(&|c| c["azp"] = json!("other-client")), "azp"),
            (with(&|c| c["aud"] = json!(["berth", "other"])), "several audiences"),
            (with(&|c| c.as_object_mut().expect("test value").retain(|k, _| k != "sub")), "sub"),
            (sign(&claims(), &k, Some("unknown")), "no key"),
            (sign(&claims(), &key("k1").0, Some("k1")), "InvalidSignature"),
            ("x".repeat(MAX_TOKEN + 1), "too long"),
        ];
        for (token, why) in cases {
            let e = verify(&token, &set, &expect()).expect_err("refused");
            assert!(e.message.contains(why), "{why}: {}", e.message);
            assert_eq!(e.status.as_u16(), 401);
        }
        // Several audiences are fine with our azp.
        assert!(
            verify(
                &with(&|c| {
                    c["aud"] = json!(["berth", "x"]);
                    c["azp"] = json!("berth")
                }),
                &set,
                &expect()
            )
            .is_ok()
        );
    }

    #[test]
    fn unsigned_and_symmetric_tokens_are_refused() {
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#));
        let (_, jwk) = key("k1");
        assert!(verify(&none, &keys(&[jwk]), &expect()).is_err());
        // HS256 with a key the JWKS publishes (the classic confusion): refused for its algorithm.
        let secret = b"published-secret";
        let oct = json!({"kty": "oct", "kid": "h", "k": URL_SAFE_NO_PAD.encode(secret)});
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("h".into());
        let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret)).expect("test value");
        let e = verify(&token, &keys(&[oct]), &expect()).expect_err("refused");
        assert!(e.message.contains("HS256"), "{}", e.message);
    }

    proptest! {
        /// Whatever the token endpoint sends as an ID token, checking it never panics and never passes.
        #[test]
        fn any_token_text_is_refused(token in "[A-Za-z0-9_.=-]{0,400}", parts in prop::collection::vec("[A-Za-z0-9_-]{0,80}", 0..5)) {
            let (_, jwk) = key("k1");
            let set = keys(&[jwk]);
            prop_assert!(verify(&token, &set, &expect()).is_err());
            prop_assert!(verify(&parts.join("."), &set, &expect()).is_err());
        }
    }
}
