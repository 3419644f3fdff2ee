//! The one error type of the use-case layer. Each variant maps to exactly one gRPC status code in
//! `api::status`; internal errors keep their full chain for the log and show the caller only
//! "internal error".
use crate::engine::definition::DefinitionErrors;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is wrong; `field` names it the way the proto does.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// A BPMN definition that does not validate; every error names its element.
    #[error("invalid definition: {0}")]
    InvalidDefinition(#[from] DefinitionErrors),
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// The work could not be done now for a reason that goes away (the instance kept changing
    /// between a snapshot and its lock): the same request may be sent again.
    #[error("{0}")]
    Aborted(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            id: id.into(),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(err).context("database"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
