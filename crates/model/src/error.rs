//! Every way the domain refuses a request. The server maps each variant to one HTTP status and code
//! (`berth_server::error`), exhaustively.

use thiserror::Error;

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
}

impl DomainError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        DomainError::NotFound { kind, id: id.into() }
    }
}
