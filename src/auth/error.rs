//! Why a request failed authentication. One variant per AWS failure; `Display` is the
//! message AWS returns and [`AuthError::aws_type`] the `__type` it returns, so the edge
//! maps them to wire errors in one place. Nothing here knows about HTTP status codes.
//!
//! No variant carries a secret, a session token or the signature we computed: the
//! messages can be returned to the client and logged as they are.

use super::timestamp::AmzDate;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither an `Authorization` header nor presigned query parameters.
    #[error("Missing Authentication Token")]
    MissingAuthenticationToken,

    /// The signature information is malformed or incomplete: an `Authorization` header
    /// without Credential/SignedHeaders/Signature, a credential that is not
    /// `keyid/date/region/service/aws4_request`, no usable date, missing presigned
    /// parameters. The message is AWS's wording for the case.
    #[error("{message}")]
    IncompleteSignature { message: String },

    /// The credential scope does not fit the request: its date is not the request's
    /// day, or (from [`CredentialScope::require_service`](super::CredentialScope::require_service)
    /// / `require_region`) it names another service or region. AWS reports these as
    /// `InvalidSignatureException` with these messages.
    #[error("{message}")]
    InvalidCredentialScope { message: String },

    /// The signature does not match. The canonical request and string to sign we
    /// computed (session token values redacted) are kept for debug logging; they are
    /// what AWS itself returns to help clients, and reveal no key material.
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service \
         documentation for details."
    )]
    InvalidSignature {
        canonical_request: String,
        string_to_sign: String,
    },

    /// Unknown access key id, or a session token that does not belong to it.
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient,

    /// Header-signed request older than the clock-skew window.
    #[error("Signature expired: {signed_at} is now earlier than {} ({now} - 15 min.)", .now.plus_secs(-super::sigv4::MAX_CLOCK_SKEW_SECS))]
    SignatureExpired { signed_at: AmzDate, now: AmzDate },

    /// Request dated further in the future than the clock-skew window.
    #[error("Signature not yet current: {signed_at} is still later than {} ({now} + 15 min.)", .now.plus_secs(super::sigv4::MAX_CLOCK_SKEW_SECS))]
    SignatureNotYetCurrent { signed_at: AmzDate, now: AmzDate },

    /// Presigned URL used after `X-Amz-Date + X-Amz-Expires`. AWS (S3) answers
    /// `AccessDenied` / "Request has expired" and adds the expiry and its own time,
    /// which the edge can render from the fields.
    #[error("Request has expired")]
    PresignedUrlExpired {
        signed_at: AmzDate,
        expires_in_secs: u32,
        now: AmzDate,
    },

    /// A chunk of a signed streaming payload (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`)
    /// does not carry the signature its bytes and the chain call for (`chunk` counts
    /// from 0).
    #[error(
        "The chunk signature we calculated does not match the signature you provided (chunk {chunk})."
    )]
    ChunkSignatureMismatch { chunk: u64 },

    /// The signed `X-Amz-Content-SHA256` is not the hash of the body received.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
}

impl AuthError {
    /// The AWS error type name (`__type` for the JSON protocols).
    pub fn aws_type(&self) -> &'static str {
        match self {
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::IncompleteSignature { .. } => "IncompleteSignatureException",
            Self::InvalidCredentialScope { .. }
            | Self::InvalidSignature { .. }
            | Self::SignatureExpired { .. }
            | Self::SignatureNotYetCurrent { .. }
            | Self::ContentSha256Mismatch
            | Self::ChunkSignatureMismatch { .. } => "InvalidSignatureException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::PresignedUrlExpired { .. } => "AccessDeniedException",
        }
    }

    pub(crate) fn incomplete(message: impl Into<String>) -> Self {
        Self::IncompleteSignature {
            message: message.into(),
        }
    }

    pub(crate) fn scope(message: impl Into<String>) -> Self {
        Self::InvalidCredentialScope {
            message: message.into(),
        }
    }
}
