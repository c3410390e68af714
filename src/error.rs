//! What kind of failure an error is, whatever the service and whatever the protocol.
//!
//! Every service's error type (streams, video, ...) says which [`ErrorKind`] each of its
//! variants is and which AWS exception it is reported as ([`Classified`]); the HTTP
//! edge turns a kind into a status in exactly one function (`api::error::status`), per
//! protocol family. Nothing here knows about HTTP.

/// The kinds of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The named resource does not exist.
    NotFound,
    /// The resource exists but is in a state that does not allow the request.
    InUse,
    /// The request is malformed or asks for something impossible.
    InvalidArgument,
    /// An account or resource limit would be exceeded.
    LimitExceeded,
    /// The caller did not prove who it is (no signature, a wrong one, an unknown key).
    Unauthenticated,
    /// The caller is known but not allowed to do this.
    NotAuthorized,
    /// The caller sends faster than allowed; retrying later will work.
    Throttled,
    /// The server cannot take the request now (shutting down, out of capacity).
    Unavailable,
    /// A failure of the server's own, never of the request.
    Internal,
    /// The request body is larger than the API accepts (transport).
    TooLarge,
    /// The request arrived too slowly (transport).
    TimedOut,
}

/// An error that knows its kind and its AWS exception name.
pub trait Classified {
    fn kind(&self) -> ErrorKind;
    /// The AWS exception name (`ResourceNotFoundException`, ...).
    fn aws_type(&self) -> &'static str;
}
