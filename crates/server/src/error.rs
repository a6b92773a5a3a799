//! The one mapping from every error to an HTTP response in Port's envelope:
//! `{"ok": false, "error": "<code>", "message": "<text>"}`.
//!
//! | error | status | code |
//! |---|---|---|
//! | NotFound, RelatedNotFound, unknown route | 404 | `not_found` |
//! | AlreadyExists | 409 | `conflict` |
//! | HasDependents | 409 | `has_dependents` |
//! | InvalidIdentifier | 422 | `invalid_identifier` |
//! | InvalidBlueprint | 422 | `invalid_blueprint` |
//! | SchemaMismatch | 422 | `schema_mismatch` |
//! | Invalid, body of the wrong shape | 422 | `invalid_request` |
//! | BadRequest, bad query parameter | 400 | `bad_request` |
//! | malformed JSON, too deeply nested | 400 | `invalid_json` |
//! | Unauthorized | 401 | `unauthorized` |
//! | Forbidden | 403 | `forbidden` |
//! | wrong method | 405 | `method_not_allowed` |
//! | body over the limit | 413 | `payload_too_large` |
//! | store unreachable | 503 | `service_unavailable` |
//! | anything else | 500 | `internal_error` (no internal text in the body; it is logged) |

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_model::DomainError;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra headers of the answer (`Retry-After`, rate-limit counters); boxed, as they are rare.
    pub headers: Option<Box<axum::http::HeaderMap>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), headers: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", message)
    }

    /// A 500 whose cause is logged, never shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error; see the server log")
    }

    pub fn body(&self) -> Value {
        json!({"ok": false, "error": self.code, "message": self.message})
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let message = e.to_string();
        let (status, code) = match e {
            DomainError::NotFound { .. } | DomainError::RelatedNotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            DomainError::AlreadyExists { .. } => (StatusCode::CONFLICT, "conflict"),
            DomainError::HasDependents(_) => (StatusCode::CONFLICT, "has_dependents"),
            DomainError::InvalidIdentifier { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_identifier"),
            DomainError::InvalidBlueprint(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_blueprint"),
            DomainError::SchemaMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch"),
            DomainError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            DomainError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            DomainError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            DomainError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        };
        ApiError { status, code, message, headers: None }
    }
}

impl ApiError {
    pub fn headers_mut(&mut self) -> &mut axum::http::HeaderMap {
        self.headers.get_or_insert_with(Default::default)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
