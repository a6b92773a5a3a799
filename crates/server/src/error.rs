//! Every error answer, in Port's envelope: `{"ok": false, "error": "<code>", "message": "<text>"}`. The code
//! and its HTTP status come from the one table, [`berth_model::ErrorCode`] (404 `not_found`, 409 `conflict` /
//! `has_dependents`, 422 `invalid_identifier` / `invalid_blueprint` / `schema_mismatch` / `invalid_request`,
//! 400 `bad_request` / `invalid_json`, 401, 403, 405, 413, 429 `rate_limited`, 503 `service_unavailable` /
//! `search_timeout` / `outcome_unknown`, 500 `internal_error`); nothing here or elsewhere picks a status on
//! its own. A 500 never carries internal text: the cause is logged with the request's trace id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_model::{DomainError, ErrorCode};
use serde_json::{Value, json};

/// The HTTP status of an error code, from the one table ([`ErrorCode::status`]); the UI's HTML error pages
/// take theirs from here too.
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[derive(Debug, Clone)]
pub struct ApiError {
    /// The code's status ([`ErrorCode::status`]), kept for the response.
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Extra headers of the answer (`Retry-After`, rate-limit counters); boxed, as they are rare.
    pub headers: Option<Box<axum::http::HeaderMap>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status: status_of(code), code, message: message.into(), headers: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServiceUnavailable, message)
    }

    /// A 500 whose cause is logged (the request's span carries its trace id), never shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorCode::InternalError, "internal error; see the server log")
    }

    pub fn body(&self) -> Value {
        json!({"ok": false, "error": self.code.as_str(), "message": self.message})
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e.code() {
            ErrorCode::InternalError => ApiError::internal(e),
            code => ApiError::new(code, e.to_string()),
        }
    }
}

impl From<berth_catalog::replay::ReplayError> for ApiError {
    fn from(e: berth_catalog::replay::ReplayError) -> Self {
        use berth_catalog::replay::ReplayError;
        match e {
            ReplayError::Read(e) => ApiError::from(e),
            e @ (ReplayError::TooLong | ReplayError::Busy) => ApiError::unavailable(e.to_string()),
            ReplayError::Replay(e) => ApiError::internal(e),
        }
    }
}

impl From<berth_catalog::ReadError> for ApiError {
    fn from(e: berth_catalog::ReadError) -> Self {
        match e {
            berth_catalog::ReadError::Store(e) => ApiError::unavailable(format!("store: {e}")),
            damaged @ berth_catalog::ReadError::Damaged { .. } => ApiError::internal(damaged),
        }
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
