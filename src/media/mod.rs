//! Pure media code for Kinesis Video Streams: Matroska in and out, remuxing for
//! playback, and cutting ingested elementary streams into fragments.
//!
//! - [`ebml`]: EBML primitives (RFC 8794): element IDs and sizes, typed values, encoder.
//! - [`mkv`]: the streaming PutMedia reader (RFC 9559 Matroska as the Kinesis Video
//!   producer writes it): stream header, fragments, frames, tags, PutMedia error ids.
//! - [`mkv_writer`]: GetMedia output documents and the error trailer.
//! - [`samples`]: a stored fragment demuxed into codec-neutral samples.
//! - [`fmp4`]: ISO BMFF (ISO/IEC 14496-12) init/media segments and faststart MP4.
//! - [`ts`]: MPEG-TS (ISO/IEC 13818-1) segments for HLS.
//! - [`hls`]: HLS master and media playlists (RFC 8216), and a reader of them.
//! - [`dash`]: DASH MPDs (ISO/IEC 23009-1) with SegmentTimeline, SegmentList or
//!   SegmentTemplate.
//! - [`fragmenter`]: access units from RTP ingest cut into Matroska fragments.
//!
//! Everything here works on byte slices and vectors: no I/O, no async, no clocks, no
//! files, no HTTP. The transport (`api`) and the video domain (`video`) call in; nothing
//! here calls out. Every parser of untrusted bytes is fuzzed (`fuzz/fuzz_targets/`).

pub mod dash;
pub mod depacketize;
pub mod ebml;
pub mod fmp4;
pub mod fragmenter;
pub mod hls;
pub mod mkv;
pub mod mkv_writer;
pub mod rtp;
pub mod rtsp;
pub mod samples;
pub mod sdp;
pub mod ts;

#[cfg(test)]
mod synthetic;
#[cfg(test)]
mod tests;
