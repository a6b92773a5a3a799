//! Request extractors that turn every malformed input into an [`ApiError`] in the envelope:
//! [`ApiJson`] for bodies, [`Params`] for query strings (repeated and comma-joined arrays, string booleans),
//! and [`raw_path`] for URL-encoded path segments (`+` is a space, as Python's `quote_plus` writes it).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON body. Malformed JSON (or nesting deeper than 128 levels) is a 400, a body of the wrong shape a 422,
/// a body over the limit a 413. The `Content-Type` is not required (so `curl -d` works).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "Request body is too large (limit is 1MiB by default; see --body-limit)",
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the request body is empty; a JSON body is required",
            ));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        let parsed = serde_json::from_value(value).map_err(|e| {
            ApiError::unprocessable(format!("json does not match the route's schema: {e}"))
        })?;
        Ok(ApiJson(parsed))
    }
}

/// Query parameters, parsed leniently: unknown keys are ignored, arrays may be repeated or comma-joined.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(Params(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean given as `true`/`false` (or `1`/`0`); absent means `default`.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some("true" | "1" | "True" | "TRUE") => Ok(true),
            Some("false" | "0" | "False" | "FALSE") => Ok(false),
            Some(other) => Err(ApiError::bad_request(format!(
                "query parameter `{key}` must be true or false, got {other:?}"
            ))),
        }
    }

    /// All values of an array parameter: `k=a&k=b`, `k=a,b` and `k[]=a` all work.
    pub fn list(&self, key: &str) -> Vec<String> {
        let bracketed = format!("{key}[]");
        self.0
            .iter()
            .filter(|(k, _)| k == key || *k == bracketed)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Decodes a raw (still percent-encoded) path segment: `+` is a space, `%XX` a byte.
pub fn decode_segment(raw: &str) -> Result<String, ApiError> {
    let plus = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "path segment {raw:?} is not valid UTF-8 once decoded"
            ))
        })
}

/// The decoded value of a named path parameter.
pub fn raw_path(params: &axum::extract::RawPathParams, name: &str) -> Result<String, ApiError> {
    let raw = params
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::bad_request(format!("missing path parameter `{name}`")))?;
    decode_segment(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_segments() {
        assert_eq!(decode_segment("a%2Fb").expect("ok"), "a/b");
        assert_eq!(decode_segment("a+b").expect("ok"), "a b");
        assert_eq!(decode_segment("a%2Bb").expect("ok"), "a+b");
        assert!(decode_segment("%FF").is_err());
    }

    #[test]
    fn lists_and_flags() {
        let p = Params(vec![
            ("include".into(), "a,b".into()),
            ("include".into(), "c".into()),
            ("upsert".into(), "true".into()),
            ("merge".into(), "maybe".into()),
        ]);
        assert_eq!(p.list("include"), vec!["a", "b", "c"]);
        assert!(p.flag("upsert", false).expect("ok"));
        assert!(!p.flag("absent", false).expect("ok"));
        assert!(p.flag("merge", false).is_err());
    }
}
