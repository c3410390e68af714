//! Authentication of requests at the HTTP edge: AWS Signature Version 4, as Kinesis,
//! Kinesis Video (control plane, PutMedia, archived media), Firehose and Kinesis
//! Analytics clients sign their requests.
//!
//! What it does: given a request head (method, raw path and query, headers), the
//! SHA-256 of the body when the caller has read it, the current time and a way to
//! look up secrets by access key id, [`sigv4::verify`] rebuilds the canonical request
//! and string to sign, derives the signing key and checks the signature (header or
//! presigned form), the clock-skew window / presigned expiry, the credential scope
//! and session tokens. It returns who signed and for which region and service, or an
//! [`AuthError`] with one variant per AWS failure (`aws_type()` is AWS's `__type`,
//! `Display` its message), for the edge to map to the wire in one place. It also
//! signs ([`sigv4::sign`], [`sigv4::presign`]) for Freshet's own clients and tests.
//!
//! What it never does: no I/O, no clock reads (time is passed in), no logging, no
//! HTTP status codes (the edge decides), no routing (the edge decides which service a
//! route expects: [`CredentialScope::require_service`]). Secrets, session tokens and
//! the signature it computes never appear in an error, a message or `Debug` output.
//!
//! Spec: AWS General Reference, "Signature Version 4 signing process" (canonical
//! request, string to sign, signing key, signature; authenticating with query
//! parameters), the non-S3 rules (path normalised and URI-encoded twice). Checked
//! against the AWS SigV4 test suite and requests signed by botocore
//! (`tests/fixtures/sigv4/`).
//!
//! [`digest`] authenticates RTSP requests with the same keys: Digest (RFC 2617 /
//! RFC 7616, MD5) and, over TLS only, Basic.

pub(crate) mod canonical;
pub mod chunked;
pub mod digest;
mod error;
pub mod keys;
pub mod sigv4;
mod timestamp;

#[cfg(test)]
mod tests;

pub use chunked::ChunkVerifier;
pub use error::AuthError;
pub use keys::{AccessKey, Keyring};
pub use sigv4::{
    AuthForm, CredentialScope, PayloadHash, RequestParts, Secret, SecretLookup, SigningParams,
    StreamingPayload, Verified, payload_hash, presign, sign, verify,
};
pub use timestamp::AmzDate;
