//! Form bodies and query strings as ordered key/value pairs (repeated keys kept: column pickers, multi-selects).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};

use crate::page::UiError;

/// The largest form body accepted.
const MAX_FORM: usize = 1024 * 1024;

#[derive(Debug, Default, Clone)]
pub struct FormData(pub Vec<(String, String)>);

impl FormData {
    pub fn parse(raw: &[u8]) -> FormData {
        FormData(form_urlencoded::parse(raw).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    /// The last value of `key`, trimmed; `None` when absent or blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    /// The value of `key` as typed (untrimmed), or "".
    pub fn raw(&self, key: &str) -> &str {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("")
    }

    /// Every non-blank value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0.iter().filter(|(k, v)| k == key && !v.trim().is_empty()).map(|(_, v)| v.trim().to_string()).collect()
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| UiError::new(berth_model::ErrorCode::BadRequest, format!("cannot read the form: {e}")))?;
        if bytes.len() > MAX_FORM {
            return Err(UiError::new(berth_model::ErrorCode::PayloadTooLarge, "the form is too large"));
        }
        Ok(FormData::parse(&bytes))
    }
}

/// The query string of a request.
pub struct Query(pub FormData);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Query {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Query(FormData::parse(parts.uri.query().unwrap_or("").as_bytes())))
    }
}
