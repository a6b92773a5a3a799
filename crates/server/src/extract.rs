//! Request extractors that turn every malformed input into an [`ApiError`] in the envelope:
//! [`ApiJson`] for bodies, [`Params`] for query strings (repeated and comma-joined arrays, string booleans),
//! and [`PathParams`] for URL-encoded path segments (`+` is a space, as Python's `quote_plus` writes it).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

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
                    berth_model::ErrorCode::PayloadTooLarge,
                    "Request body is too large (limit is 1MiB by default; see --body-limit)",
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::new(
                berth_model::ErrorCode::InvalidJson,
                "the request body is empty; a JSON body is required",
            ));
        }
        // One pass from bytes to `T`; the error's category tells malformed JSON (400) from a wrong shape (422).
        let parsed = serde_json::from_slice::<T>(&bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                ApiError::unprocessable(format!("json does not match the route's schema: {e}"))
            }
            _ => ApiError::new(berth_model::ErrorCode::InvalidJson, format!("the body is not valid JSON: {e}")),
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
        Ok(Params(form_urlencoded::parse(query.as_bytes()).into_owned().collect()))
    }
}

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The `limit` of a paged read: 1 to 1000, `default` when absent.
    pub fn page_size(&self, default: usize) -> Result<usize, ApiError> {
        match self.get("limit").filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| ApiError::bad_request(format!("`limit` must be between 1 and 1000, got {v:?}"))),
        }
    }

    /// A boolean given as `true`/`false` (or `1`/`0`); absent means `default`.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some("true" | "1" | "True" | "TRUE") => Ok(true),
            Some("false" | "0" | "False" | "FALSE") => Ok(false),
            Some(other) => {
                Err(ApiError::bad_request(format!("query parameter `{key}` must be true or false, got {other:?}")))
            }
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

/// Path parameters, percent-decoded by the router. Invalid UTF-8 after decoding is a 400 in the envelope.
/// (A `+` in the path is a space: [`plus_as_space`] rewrites it before routing, as Python's `quote_plus`
/// writes spaces that way while `%2B` stays a literal `+`.)
pub struct PathParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
        Ok(PathParams(raw.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()))
    }
}

impl PathParams {
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    pub fn get(&self, name: &str) -> Result<String, ApiError> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ApiError::bad_request(format!("missing path parameter `{name}`")))
    }
}

/// Rewrites `+` in the request path to `%20`, before routing.
pub fn plus_as_space(mut req: Request) -> Request {
    if req.uri().path().contains('+') {
        let path = req.uri().path().replace('+', "%20");
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_becomes_a_space_in_paths_only() {
        let req =
            Request::builder().uri("/v1/blueprints/x/entities/a+b?q=c+d").body(axum::body::Body::empty()).expect("req");
        let req = plus_as_space(req);
        assert_eq!(req.uri().path(), "/v1/blueprints/x/entities/a%20b");
        assert_eq!(req.uri().query(), Some("q=c+d"));
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
