//! Errors of the delivery-stream service. Each variant is one Amazon Data Firehose
//! error type; the message is the text the client gets. The API layer turns them into
//! wire errors in one place (`api::error`); nothing here knows about HTTP.

use crate::error::{Classified, ErrorKind};
use crate::store::StoreError;
use crate::store::catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    LimitExceeded(String),
    /// UpdateDestination's CurrentDeliveryStreamVersionId is not the stream's version.
    #[error("{0}")]
    ConcurrentModification(String),
    /// The server cannot take the request now (storage full, shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// A failure of ours: storage or catalog errors. Never shown to clients.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, DeliveryError>;

impl Classified for DeliveryError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::ResourceNotFound(_) => ErrorKind::NotFound,
            Self::ResourceInUse(_) | Self::ConcurrentModification(_) => ErrorKind::InUse,
            Self::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Self::LimitExceeded(_) => ErrorKind::LimitExceeded,
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
            Self::ConcurrentModification(_) => "ConcurrentModificationException",
            Self::Unavailable(_) => "ServiceUnavailableException",
            Self::Internal(_) => "InternalFailure",
        }
    }
}

impl From<StoreError> for DeliveryError {
    fn from(e: StoreError) -> Self {
        if e.is_out_of_space() {
            return Self::Unavailable("The server's storage is full; retry later.".into());
        }
        Self::Internal(e.to_string())
    }
}

impl From<CatalogError> for DeliveryError {
    fn from(e: CatalogError) -> Self {
        Self::Internal(e.to_string())
    }
}
