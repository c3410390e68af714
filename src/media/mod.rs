//! Pure media codecs: Matroska/EBML reading and writing for Kinesis Video Streams.
//!
//! - [`ebml`]: EBML primitives (RFC 8794): element IDs and sizes, typed values, encoder.
//! - [`mkv`]: the streaming PutMedia reader (RFC 9559 Matroska as the Kinesis Video
//!   producer writes it): stream header, fragments, frames, tags, PutMedia error ids.
//! - [`mkv_writer`]: GetMedia output documents and the error trailer.
//!
//! Everything here works on byte slices and vectors: no I/O, no async, no clocks, no
//! files, no HTTP. The transport (`api`) and the video domain (`video`) call in; nothing
//! here calls out. Every parser of untrusted bytes is fuzzed (`fuzz/fuzz_targets/`).

pub mod ebml;
pub mod fmp4;
pub mod mkv;
pub mod mkv_writer;
pub mod samples;
pub mod ts;

#[cfg(test)]
mod synthetic;
#[cfg(test)]
mod tests;
