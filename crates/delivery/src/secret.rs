//! A subscription's signing secret and the signature of a webhook message.
//!
//! The secret is never stored: it is derived from the server's delivery key (outside the log, shared by every
//! replica like the token signing key) and the subscription's identifier and `secretVersion`, so the log, its
//! snapshots and backups hold nothing a receiver trusts, and rotating a secret is a new version. Webhooks are
//! signed as Port signs them: `x-port-timestamp: <unix seconds>`, `x-port-signature: v1,<base64 of
//! HMAC-SHA256(key = the secret, message = "<timestamp>.<raw body>")>`.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else { return Vec::new() };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The signing secret of version `version` of the subscription `id`.
pub fn secret(delivery_key: &[u8], id: &str, version: u32) -> String {
    let digest = mac(delivery_key, &[b"berth-subscription\0", id.as_bytes(), b"\0", version.to_string().as_bytes()]);
    format!("whsec_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest))
}

/// The `x-port-signature` value of `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret.as_bytes(), &[timestamp.to_string().as_bytes(), b".", body]);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_differ_by_subscription_version_and_key_and_signatures_check() {
        let a = secret(b"key-1", "deploys", 1);
        assert_eq!(a, secret(b"key-1", "deploys", 1), "derived, so every replica derives the same");
        assert_ne!(a, secret(b"key-1", "deploys", 2));
        assert_ne!(a, secret(b"key-1", "deploy", 1));
        assert_ne!(a, secret(b"key-2", "deploys", 1));
        // Port's documented check, computed independently: HMAC-SHA256 over "ts.body", base64.
        let sig = signature("s3cret", 1_700_000_000, br#"{"a":1}"#);
        let expected = {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(b"s3cret").expect("key");
            m.update(br#"1700000000.{"a":1}"#);
            base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
        };
        assert_eq!(sig, format!("v1,{expected}"));
    }
}
