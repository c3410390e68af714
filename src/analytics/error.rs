//! Errors of the analytics-application service. Each variant is one Kinesis Data
//! Analytics error type (the `kinesisanalytics` API model); the message is the text the
//! client gets. The API layer turns them into wire errors in one place (`api::error`).

use crate::error::{Classified, ErrorKind};
use crate::store::catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    LimitExceeded(String),
    /// The application code does not parse or plan (line and column in the message).
    #[error("{0}")]
    CodeValidation(String),
    /// CurrentApplicationVersionId is not the application's version.
    #[error("{0}")]
    ConcurrentModification(String),
    /// The input or output configuration cannot run (a source stream that is gone).
    #[error("{0}")]
    InvalidApplicationConfiguration(String),
    #[error("{0}")]
    UnableToDetectSchema(String),
    #[error("{0}")]
    TooManyTags(String),
    /// A failure of ours: catalog errors. Never shown to clients.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, AnalyticsError>;

impl Classified for AnalyticsError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::ResourceNotFound(_) => ErrorKind::NotFound,
            Self::ResourceInUse(_) | Self::ConcurrentModification(_) => ErrorKind::InUse,
            Self::InvalidArgument(_)
            | Self::CodeValidation(_)
            | Self::InvalidApplicationConfiguration(_)
            | Self::UnableToDetectSchema(_) => ErrorKind::InvalidArgument,
            Self::LimitExceeded(_) | Self::TooManyTags(_) => ErrorKind::LimitExceeded,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    fn aws_type(&self) -> &'static str {
        match self {
            Self::ResourceNotFound(_) => "ResourceNotFoundException",
            Self::ResourceInUse(_) => "ResourceInUseException",
            Self::InvalidArgument(_) => "InvalidArgumentException",
            Self::LimitExceeded(_) => "LimitExceededException",
            Self::CodeValidation(_) => "CodeValidationException",
            Self::ConcurrentModification(_) => "ConcurrentModificationException",
            Self::InvalidApplicationConfiguration(_) => "InvalidApplicationConfigurationException",
            Self::UnableToDetectSchema(_) => "UnableToDetectSchemaException",
            Self::TooManyTags(_) => "TooManyTagsException",
            Self::Internal(_) => "InternalFailure",
        }
    }
}

impl From<CatalogError> for AnalyticsError {
    fn from(e: CatalogError) -> Self {
        Self::Internal(e.to_string())
    }
}
