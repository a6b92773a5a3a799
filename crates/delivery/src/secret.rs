//! A subscription's signing secret and the signature of a webhook message.
//!
//! The secret is never stored: it is derived from the server's delivery key (outside the log, shared by every
//! replica like the token signing key) and the subscription's identifier and `secretVersion`, so the log, its
//! snapshots and backups hold nothing a receiver trusts, and rotating a secret is a new version. Webhooks are
//! signed as Port signs them: `x-port-timestamp: <unix seconds>`, `x-port-signature: v1,<base64 of
//! HMAC-SHA256(key = the secret, message = "<timestamp>.<raw body>")>`.
//!
//! A webhook's header values (an `Authorization` token, say) are sealed before the subscription is written
//! ([`seal`], ChaCha20-Poly1305 under a key derived from the delivery key, bound to the subscription and
//! the header's name): the log, its snapshots, backups, the event feed and the API show the sealed form
//! only; the worker opens them ([`open`]).

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

/// What a sealed value is: its key is derived for the purpose, and it is bound to what it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A webhook header of a subscription (bound to the subscription and the header's name, any case).
    Header,
    /// An organisation secret (bound to its name).
    OrgSecret,
    /// An encrypted input of a run (bound to the run and the input's name).
    RunInput,
    /// An inbound webhook's secret (bound to the webhook).
    WebhookSecret,
}

/// The AEAD key values of `purpose` are sealed with, and the data a sealed value is bound to.
fn sealing(
    delivery_key: &[u8],
    purpose: Purpose,
    id: &str,
    name: &str,
) -> Result<(ring::aead::LessSafeKey, Vec<u8>), String> {
    let (label, name): (&[u8], String) = match purpose {
        Purpose::Header => (b"berth-subscription-headers\0v1", name.to_ascii_lowercase()),
        Purpose::OrgSecret => (b"berth-organisation-secrets\0v1", name.to_string()),
        Purpose::RunInput => (b"berth-run-inputs\0v1", name.to_string()),
        Purpose::WebhookSecret => (b"berth-inbound-webhooks\0v1", name.to_string()),
    };
    let derived = mac(delivery_key, &[label]);
    // An HMAC-SHA256 digest is 32 bytes, the ChaCha20-Poly1305 key length.
    let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &derived)
        .map_err(|_| "the sealing key could not be made".to_string())?;
    let aad = [id.as_bytes(), b"\0", name.as_bytes()].concat();
    Ok((ring::aead::LessSafeKey::new(unbound), aad))
}

/// A header value of the subscription `id` sealed: base64 of a random nonce and the ciphertext.
pub fn seal(delivery_key: &[u8], id: &str, name: &str, value: &str) -> Result<String, String> {
    seal_for(delivery_key, Purpose::Header, id, name, value)
}

/// A value sealed for `purpose`, bound to `id` and `name`: base64 of a random nonce and the ciphertext.
pub fn seal_for(delivery_key: &[u8], purpose: Purpose, id: &str, name: &str, value: &str) -> Result<String, String> {
    let (key, aad) = sealing(delivery_key, purpose, id, name)?;
    let mut nonce = [0u8; ring::aead::NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
    let mut data = value.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        ring::aead::Nonce::assume_unique_for_key(nonce),
        ring::aead::Aad::from(&aad[..]),
        &mut data,
    )
    .map_err(|_| "sealing a header value failed".to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.encode([&nonce[..], &data].concat()))
}

/// A sealed header value opened; `Err` when it was not sealed by this delivery key for this subscription
/// and header.
pub fn open(delivery_key: &[u8], id: &str, name: &str, sealed: &str) -> Result<String, String> {
    open_for(delivery_key, Purpose::Header, id, name, sealed)
        .map_err(|_| format!("header `{name}` was sealed by another delivery key or for another subscription"))
}

/// A value sealed by [`seal_for`] opened; `Err` when it was not sealed by this key for this purpose, `id`
/// and `name`.
pub fn open_for(delivery_key: &[u8], purpose: Purpose, id: &str, name: &str, sealed: &str) -> Result<String, String> {
    let refused = || format!("`{name}` was sealed by another delivery key or for something else");
    let bytes = base64::engine::general_purpose::STANDARD.decode(sealed).map_err(|_| refused())?;
    if bytes.len() < ring::aead::NONCE_LEN {
        return Err(refused());
    }
    let (nonce, data) = bytes.split_at(ring::aead::NONCE_LEN);
    let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
    let (key, aad) = sealing(delivery_key, purpose, id, name)?;
    let mut data = data.to_vec();
    let plain = key.open_in_place(nonce, ring::aead::Aad::from(&aad[..]), &mut data).map_err(|_| refused())?;
    String::from_utf8(plain.to_vec()).map_err(|_| refused())
}

/// The `x-port-signature` value of `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    Signer::new(secret).map(|s| s.sign(timestamp, body).as_str().to_string()).unwrap_or_default()
}

/// Signs a subscription's messages: the HMAC keyed once with its secret, and each signature written without
/// allocating (a webhook subscription signs thousands a second).
#[derive(Clone)]
pub struct Signer(Hmac<Sha256>);

/// An `x-port-signature` value: `v1,` and the base64 of the 32-byte digest (44 characters).
pub struct Signature([u8; 47]);

impl Signature {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // `v1,` and base64: ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Signer {
    /// A signer with `secret` (HMAC takes a key of any length: this does not fail).
    pub fn new(secret: &str) -> Result<Signer, String> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
            .map(Signer)
            .map_err(|e| format!("the signing secret: {e}"))
    }

    /// The signature of `body` sent at `timestamp` (unix seconds): HMAC-SHA256 of `<timestamp>.<body>`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> Signature {
        let mut mac = self.0.clone();
        // An i64 is at most 20 characters.
        let mut digits = [0u8; 20];
        let mut rest = &mut digits[..];
        let _ = std::io::Write::write_fmt(&mut rest, format_args!("{timestamp}"));
        let written = 20 - rest.len();
        mac.update(&digits[..written]);
        mac.update(b".");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let mut out = [0u8; 47];
        out[..3].copy_from_slice(b"v1,");
        // 32 bytes are 44 base64 characters: the buffer fits them.
        let _ = base64::engine::general_purpose::STANDARD.encode_slice(digest, &mut out[3..]);
        Signature(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_header_opens_only_with_its_key_subscription_and_name() {
        let sealed = seal(b"key-1", "deploys", "Authorization", "Bearer t0ken").expect("seal");
        assert!(!sealed.contains("t0ken"));
        assert_ne!(sealed, seal(b"key-1", "deploys", "Authorization", "Bearer t0ken").expect("seal"), "a fresh nonce");
        assert_eq!(open(b"key-1", "deploys", "authorization", &sealed).as_deref(), Ok("Bearer t0ken"));
        for (key, id, name, value) in [
            (&b"key-2"[..], "deploys", "Authorization", sealed.clone()),
            (b"key-1", "other", "Authorization", sealed.clone()),
            (b"key-1", "deploys", "X-Token", sealed.clone()),
            (b"key-1", "deploys", "Authorization", "not base64!".to_string()),
            (b"key-1", "deploys", "Authorization", "AAAA".to_string()),
        ] {
            assert!(open(key, id, name, &value).is_err(), "{id} {name} {value}");
        }
    }

    #[test]
    fn a_value_sealed_for_one_purpose_does_not_open_for_another() {
        let sealed = seal_for(b"k", Purpose::OrgSecret, "", "GH", "tok").expect("seal");
        assert_eq!(open_for(b"k", Purpose::OrgSecret, "", "GH", &sealed).as_deref(), Ok("tok"));
        assert!(open_for(b"k", Purpose::RunInput, "", "GH", &sealed).is_err());
        assert!(open_for(b"k", Purpose::OrgSecret, "", "gh", &sealed).is_err(), "names are exact");
        assert!(open_for(b"k", Purpose::Header, "", "GH", &sealed).is_err());
    }

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

    #[test]
    fn a_signer_keyed_once_signs_each_message_as_a_fresh_hmac_would() {
        let signer = Signer::new("whsec_k3y").expect("signer");
        for (timestamp, body) in
            [(1_700_000_000, &b"{}"[..]), (0, b""), (-1, b"x"), (i64::MIN, b"{\"a\":[1,2]}"), (i64::MAX, &[0xff; 300])]
        {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(b"whsec_k3y").expect("key");
            m.update(format!("{timestamp}.").as_bytes());
            m.update(body);
            let expected =
                format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()));
            // The same signer again and again: each signature starts from the keyed state.
            assert_eq!(signer.sign(timestamp, body).as_str(), expected, "{timestamp}");
            assert_eq!(signer.sign(timestamp, body).as_bytes(), expected.as_bytes());
        }
    }
}
