//! Every way a request can be refused: [`DomainError`] (what the domain refuses) and [`ErrorCode`], the one
//! table of error codes and the HTTP status each is answered with. The server builds every error answer from
//! a code (`berth_server::error`); the change log records a refused attempt's code, never an HTTP detail.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Every error code Berth answers, with its HTTP status: the one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A named object, a related entity, or a route does not exist.
    NotFound,
    /// Creating an object whose identifier is taken; a stale `_version`.
    Conflict,
    /// A delete that would leave other objects pointing at nothing.
    HasDependents,
    InvalidIdentifier,
    InvalidBlueprint,
    /// An entity that does not match its blueprint.
    SchemaMismatch,
    /// A well-formed request whose content is not acceptable, or a body of the wrong shape.
    InvalidRequest,
    /// A request that cannot be understood (bad parameters, a bad cursor).
    BadRequest,
    /// A body that is not JSON, or is nested too deeply.
    InvalidJson,
    Unauthorized,
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
    /// Too many requests or sign-in attempts (with `Retry-After`).
    RateLimited,
    /// The store did not answer, the server is busy or stopping.
    ServiceUnavailable,
    /// Too many sign-ins are being checked at once (with `Retry-After`).
    Busy,
    /// A search ran past its deadline.
    SearchTimeout,
    /// The store did not confirm a write that may have been applied.
    OutcomeUnknown,
    /// Anything else: a bug (the cause is logged, never shown).
    InternalError,
}

impl ErrorCode {
    /// The code as answers spell it (`{"ok": false, "error": "<code>"}`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::HasDependents => "has_dependents",
            ErrorCode::InvalidIdentifier => "invalid_identifier",
            ErrorCode::InvalidBlueprint => "invalid_blueprint",
            ErrorCode::SchemaMismatch => "schema_mismatch",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::SearchTimeout => "search_timeout",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
            ErrorCode::InternalError => "internal_error",
        }
    }

    /// The HTTP status the code is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::HasDependents => 409,
            ErrorCode::InvalidIdentifier
            | ErrorCode::InvalidBlueprint
            | ErrorCode::SchemaMismatch
            | ErrorCode::InvalidRequest => 422,
            ErrorCode::BadRequest | ErrorCode::InvalidJson => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::ServiceUnavailable | ErrorCode::Busy | ErrorCode::SearchTimeout | ErrorCode::OutcomeUnknown => {
                503
            }
            ErrorCode::InternalError => 500,
        }
    }

    /// The code a refusal recorded before codes were (only its status was kept) most likely had.
    pub fn from_status(status: u16) -> ErrorCode {
        match status {
            400 => ErrorCode::BadRequest,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            422 => ErrorCode::InvalidRequest,
            429 => ErrorCode::RateLimited,
            503 => ErrorCode::ServiceUnavailable,
            _ => ErrorCode::InternalError,
        }
    }

    /// Every code (for the table's tests and documentation).
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::HasDependents,
        ErrorCode::InvalidIdentifier,
        ErrorCode::InvalidBlueprint,
        ErrorCode::SchemaMismatch,
        ErrorCode::InvalidRequest,
        ErrorCode::BadRequest,
        ErrorCode::InvalidJson,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::ServiceUnavailable,
        ErrorCode::Busy,
        ErrorCode::SearchTimeout,
        ErrorCode::OutcomeUnknown,
        ErrorCode::InternalError,
    ];
}

#[derive(Debug, Clone, Error, PartialEq)]
pub enum DomainError {
    /// A named object does not exist.
    #[error("{kind} `{id}` was not found")]
    NotFound { kind: &'static str, id: String },
    /// A related entity named by a relation does not exist (Port answers `not_found`).
    #[error("related entity `{id}` of blueprint `{blueprint}` (relation `{relation}`) was not found")]
    RelatedNotFound { relation: String, blueprint: String, id: String },
    /// Creating an object whose identifier is taken.
    #[error("{kind} `{id}` already exists")]
    AlreadyExists { kind: &'static str, id: String },
    /// A delete that would leave other objects pointing at nothing.
    #[error("{0}")]
    HasDependents(String),
    /// An identifier that breaks the identifier rules.
    #[error("invalid {kind} identifier `{identifier}`: {reason}")]
    InvalidIdentifier { kind: &'static str, identifier: String, reason: String },
    /// A blueprint definition that is not valid.
    #[error("invalid blueprint: {0}")]
    InvalidBlueprint(String),
    /// An entity that does not match its blueprint.
    #[error("{0}")]
    SchemaMismatch(String),
    /// A well-formed request whose content is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A request that cannot be understood (bad parameters, bad shape).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A bug: something that validated could not be done (answered as a 500; the text is logged, not shown).
    #[error("internal: {0}")]
    Internal(String),
}

impl DomainError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        DomainError::NotFound { kind, id: id.into() }
    }

    /// The error's code (and through it, its HTTP status).
    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::NotFound { .. } | DomainError::RelatedNotFound { .. } => ErrorCode::NotFound,
            DomainError::AlreadyExists { .. } => ErrorCode::Conflict,
            DomainError::HasDependents(_) => ErrorCode::HasDependents,
            DomainError::InvalidIdentifier { .. } => ErrorCode::InvalidIdentifier,
            DomainError::InvalidBlueprint(_) => ErrorCode::InvalidBlueprint,
            DomainError::SchemaMismatch(_) => ErrorCode::SchemaMismatch,
            DomainError::Invalid(_) => ErrorCode::InvalidRequest,
            DomainError::BadRequest(_) => ErrorCode::BadRequest,
            DomainError::Unauthorized(_) => ErrorCode::Unauthorized,
            DomainError::Forbidden(_) => ErrorCode::Forbidden,
            DomainError::Internal(_) => ErrorCode::InternalError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_spelling_a_status_and_round_trips_through_serde() {
        let mut spellings = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(spellings.insert(code.as_str()), "{code:?} spelled twice");
            assert!((400..600).contains(&code.status()));
            let json = serde_json::to_value(code).expect("serialises");
            assert_eq!(json, serde_json::json!(code.as_str()), "serde spells it as answers do");
            assert_eq!(serde_json::from_value::<ErrorCode>(json).expect("reads back"), code);
        }
        for code in [ErrorCode::NotFound, ErrorCode::Forbidden, ErrorCode::RateLimited, ErrorCode::Unauthorized] {
            assert_eq!(ErrorCode::from_status(code.status()), code);
        }
    }
}
