//! The one place where errors become gRPC status codes. Internal errors are logged with their
//! whole chain and shown to the caller only as "internal error".
use tonic::{Code, Status};

use crate::error::Error;

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { field, reason } => {
                Status::invalid_argument(format!("{field}: {reason}"))
            }
            Error::InvalidDefinition(errors) => {
                Status::invalid_argument(format!("bpmn_xml: {errors}"))
            }
            Error::NotFound { what, id } => Status::not_found(format!("{what} {id:?} not found")),
            Error::FailedPrecondition(msg) => Status::failed_precondition(msg),
            Error::PermissionDenied(msg) => Status::permission_denied(msg),
            Error::AlreadyExists(msg) => Status::already_exists(msg),
            Error::Unauthenticated(msg) => Status::unauthenticated(msg),
            Error::Aborted(msg) => Status::aborted(msg),
            Error::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_stay_in_the_log() {
        let status = Status::from(Error::Internal(anyhow::anyhow!("password=hunter2")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(Error::invalid("outcome", "unknown"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("outcome:"));
    }
}
