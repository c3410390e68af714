//! Errors of the lease store. Each variant is one DynamoDB error type (DynamoDB API
//! reference, "Common Errors" and each operation's Errors); the message is the text
//! the client gets. The API layer turns them into wire errors in one place
//! (`api::error`).

use crate::error::{Classified, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    Validation(String),
    /// A condition did not hold ("The conditional request failed").
    #[error("The conditional request failed")]
    ConditionalCheckFailed,
    /// A transaction was cancelled; one reason per item, in request order
    /// (`None` for the items that were fine).
    #[error("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", .0.iter().map(|r| r.as_deref().unwrap_or("None")).collect::<Vec<_>>().join(", "))]
    TransactionCanceled(Vec<Option<String>>),
    #[error("{0}")]
    LimitExceeded(String),
    /// A failure of ours: catalog errors. Never shown to clients.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, LeaseError>;

impl From<crate::store::catalog::CatalogError> for LeaseError {
    fn from(e: crate::store::catalog::CatalogError) -> Self {
        LeaseError::Internal(e.to_string())
    }
}

impl Classified for LeaseError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::ResourceNotFound(_) => ErrorKind::NotFound,
            Self::ResourceInUse(_)
            | Self::ConditionalCheckFailed
            | Self::TransactionCanceled(_) => ErrorKind::InUse,
            Self::Validation(_) => ErrorKind::InvalidArgument,
            Self::LimitExceeded(_) => ErrorKind::LimitExceeded,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    fn aws_type(&self) -> &'static str {
        match self {
            Self::ResourceNotFound(_) => "ResourceNotFoundException",
            Self::ResourceInUse(_) => "ResourceInUseException",
            Self::Validation(_) => "ValidationException",
            Self::ConditionalCheckFailed => "ConditionalCheckFailedException",
            Self::TransactionCanceled(_) => "TransactionCanceledException",
            Self::LimitExceeded(_) => "LimitExceededException",
            Self::Internal(_) => "InternalServerError",
        }
    }
}
