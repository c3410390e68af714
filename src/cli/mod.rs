//! The command-line client for people: manage streams and delivery streams, put
//! records, tail a stream, run SQL over a stream.
//! It talks to a running server over the Kinesis JSON API, exactly as any other
//! client would (so it also works against Kinesis itself).

pub mod client;
pub mod cluster;
pub mod commands;
pub mod delivery;
pub mod delivery_tail;
pub mod group;
pub mod sign;
pub mod sql;
pub mod status;
pub mod video;

pub use commands::{PutArgs, StreamCommand, TailArgs};
