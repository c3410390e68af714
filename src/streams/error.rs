//! Errors of the data-streams service. Each variant is one AWS error type; the message
//! is the text AWS returns. The API layer turns them into wire errors in one place
//! (`api::error`); nothing here knows about HTTP.

use crate::error::{Classified, ErrorKind};
use crate::store::StoreError;
use crate::store::catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    ExpiredIterator(String),
    #[error("{0}")]
    ExpiredNextToken(String),
    #[error("{0}")]
    ProvisionedThroughputExceeded(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    AccessDenied(String),
    /// The server cannot take the request now (its storage is full); retrying later
    /// works.
    #[error("{0}")]
    Unavailable(String),
    /// A failure of ours, not the caller's: storage or catalog errors.
    #[error("{0}")]
    Internal(String),
}

impl StreamError {
    /// The AWS error type name (`__type`).
    pub fn aws_type(&self) -> &'static str {
        Classified::aws_type(self)
    }

    /// True for failures of the server rather than of the request.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Internal(_))
    }
}

impl Classified for StreamError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::ResourceNotFound(_) => ErrorKind::NotFound,
            Self::ResourceInUse(_) => ErrorKind::InUse,
            Self::InvalidArgument(_)
            | Self::ExpiredIterator(_)
            | Self::ExpiredNextToken(_)
            | Self::Validation(_) => ErrorKind::InvalidArgument,
            Self::LimitExceeded(_) => ErrorKind::LimitExceeded,
            Self::ProvisionedThroughputExceeded(_) => ErrorKind::Throttled,
            Self::AccessDenied(_) => ErrorKind::NotAuthorized,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    fn aws_type(&self) -> &'static str {
        match self {
            Self::ResourceNotFound(_) => "ResourceNotFoundException",
            Self::ResourceInUse(_) => "ResourceInUseException",
            Self::InvalidArgument(_) => "InvalidArgumentException",
            Self::LimitExceeded(_) => "LimitExceededException",
            Self::ExpiredIterator(_) => "ExpiredIteratorException",
            Self::ExpiredNextToken(_) => "ExpiredNextTokenException",
            Self::ProvisionedThroughputExceeded(_) => "ProvisionedThroughputExceededException",
            Self::Validation(_) => "ValidationException",
            Self::AccessDenied(_) => "AccessDeniedException",
            Self::Unavailable(_) => "ServiceUnavailable",
            Self::Internal(_) => "InternalFailure",
        }
    }
}

/// What a write refused for a full disk answers.
pub const STORAGE_FULL: &str =
    "The server's storage is full: nothing was stored. Retry once space has been freed.";

impl From<StoreError> for StreamError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        if e.is_out_of_space() {
            return Self::Unavailable(STORAGE_FULL.into());
        }
        Self::Internal(e.to_string())
    }
}

impl From<CatalogError> for StreamError {
    fn from(e: CatalogError) -> Self {
        tracing::error!(error = %e, "catalog failure");
        Self::Internal(e.to_string())
    }
}

pub type Result<T, E = StreamError> = std::result::Result<T, E>;

impl From<super::shared::SharedError> for StreamError {
    fn from(e: super::shared::SharedError) -> Self {
        // Both are retryable: the shard is moving, or a shared engine is away.
        Self::Unavailable(e.to_string())
    }
}
