//! The fragment store: each video stream's fragments in one log of the shared storage
//! engine, acknowledged only once durable.
//!
//! A log entry is one fragment: a binary header (this module) followed by the Cluster
//! bytes exactly as the reader re-serialised them. The header carries the fragment's
//! producer timestamp, its Cluster timecode and TimecodeScale, duration and frame
//! count, and the stream header (EBML header; Info and Tracks) in force for it, since
//! CodecPrivate may change between PutMedia connections and GetMedia re-emits it with
//! every fragment. The server timestamp is the log entry's own (arrival) timestamp.
//!
//! Header version 2 stores the duration from the first frame to the end of the last
//! (`media::mkv::Fragment::duration_ns`). Version 1 (same layout) stored first to last
//! frame timecode; such entries are read with the last frame estimated as the mean
//! frame interval, `duration + duration / (frames - 1)`, what playback assumed of them.
//!
//! Fragment numbers are decimal strings: `91` | stream id (20 digits) | log offset (20
//! digits). They increase within a stream and are unique across streams.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What is stored about a fragment besides its Cluster bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentMeta {
    pub producer_ts_ms: i64,
    /// The Cluster Timecode as sent, in TimecodeScale units.
    pub cluster_timecode: u64,
    pub timecode_scale: u64,
    /// From the first frame to the end of the last (what ListFragments reports).
    pub duration_ms: u64,
    /// Frames of all tracks.
    pub frame_count: u32,
    /// The EBML header as the producer sent it.
    pub ebml_header: Bytes,
    /// Info and Tracks as the producer sent them.
    pub info_and_tracks: Bytes,
    /// The producer's own tags (TagName, TagString) sent with this fragment.
    pub producer_tags: Vec<(String, String)>,
}

/// The header version written.
const VERSION: u8 = 2;
/// Entries written before durations included the last frame.
const VERSION_FIRST_TO_LAST: u8 = 1;

impl FragmentMeta {
    pub fn encode(&self) -> Bytes {
        let mut out =
            BytesMut::with_capacity(48 + self.ebml_header.len() + self.info_and_tracks.len());
        out.put_u8(VERSION);
        out.put_i64_le(self.producer_ts_ms);
        out.put_u64_le(self.cluster_timecode);
        out.put_u64_le(self.timecode_scale);
        out.put_u64_le(self.duration_ms);
        out.put_u32_le(self.frame_count);
        out.put_u32_le(self.ebml_header.len() as u32);
        out.put_slice(&self.ebml_header);
        out.put_u32_le(self.info_and_tracks.len() as u32);
        out.put_slice(&self.info_and_tracks);
        out.put_u32_le(self.producer_tags.len() as u32);
        for (name, value) in &self.producer_tags {
            for text in [name, value] {
                out.put_u32_le(text.len() as u32);
                out.put_slice(text.as_bytes());
            }
        }
        out.freeze()
    }

    /// Splits a stored entry into its metadata and its Cluster bytes (sharing memory).
    pub fn decode(entry: &Bytes) -> Option<(FragmentMeta, Bytes)> {
        let mut b = entry.clone();
        if b.remaining() < 41 {
            return None;
        }
        let version = b.get_u8();
        if version != VERSION && version != VERSION_FIRST_TO_LAST {
            return None;
        }
        let producer_ts_ms = b.get_i64_le();
        let cluster_timecode = b.get_u64_le();
        let timecode_scale = b.get_u64_le();
        let stored_ms = b.get_u64_le();
        let frame_count = b.get_u32_le();
        let duration_ms = match version {
            VERSION_FIRST_TO_LAST if frame_count > 1 => {
                stored_ms + stored_ms / (u64::from(frame_count) - 1)
            }
            _ => stored_ms,
        };
        let ebml_len = b.get_u32_le() as usize;
        if b.remaining() < ebml_len + 4 {
            return None;
        }
        let ebml_header = b.split_to(ebml_len);
        let tracks_len = b.get_u32_le() as usize;
        if b.remaining() < tracks_len {
            return None;
        }
        let info_and_tracks = b.split_to(tracks_len);
        if b.remaining() < 4 {
            return None;
        }
        let tag_count = b.get_u32_le() as usize;
        let mut producer_tags = Vec::with_capacity(tag_count.min(128));
        for _ in 0..tag_count {
            let mut pair = [String::new(), String::new()];
            for text in &mut pair {
                if b.remaining() < 4 {
                    return None;
                }
                let len = b.get_u32_le() as usize;
                if b.remaining() < len {
                    return None;
                }
                *text = String::from_utf8(b.split_to(len).to_vec()).ok()?;
            }
            let [name, value] = pair;
            producer_tags.push((name, value));
        }
        Some((
            FragmentMeta {
                producer_ts_ms,
                cluster_timecode,
                timecode_scale,
                duration_ms,
                frame_count,
                ebml_header,
                info_and_tracks,
                producer_tags,
            },
            b,
        ))
    }
}

/// The fragment number of log entry `offset` of stream `stream_id`.
pub fn fragment_number(stream_id: u64, offset: u64) -> String {
    format!("91{stream_id:020}{offset:020}")
}

/// (stream id, offset) of a fragment number; `None` if it is not one of ours.
pub fn parse_fragment_number(text: &str) -> Option<(u64, u64)> {
    if text.len() != 42 || !text.starts_with("91") || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((text[2..22].parse().ok()?, text[22..].parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip() {
        let meta = FragmentMeta {
            producer_ts_ms: 1_511_852_109_126,
            cluster_timecode: 1_234_567,
            timecode_scale: 1_000_000,
            duration_ms: 1960,
            frame_count: 50,
            ebml_header: Bytes::from_static(b"ebml"),
            info_and_tracks: Bytes::from_static(b"info-and-tracks"),
            producer_tags: vec![
                ("camera".into(), "north".into()),
                ("empty".into(), String::new()),
            ],
        };
        let mut entry = BytesMut::new();
        entry.put_slice(&meta.encode());
        entry.put_slice(b"cluster");
        let (back, cluster) = FragmentMeta::decode(&entry.freeze()).unwrap();
        assert_eq!(back, meta);
        assert_eq!(&cluster[..], b"cluster");
        assert!(FragmentMeta::decode(&Bytes::from_static(b"\x02rest")).is_none());
        assert!(FragmentMeta::decode(&meta.encode().slice(..20)).is_none());
        let mut unknown = meta.encode().to_vec();
        unknown[0] = 3;
        assert!(FragmentMeta::decode(&Bytes::from(unknown)).is_none());
    }

    #[test]
    fn version_1_entries_get_their_last_frame_estimated() {
        // Stored before durations included the last frame: 25 fps, 1 s fragments
        // stored as 960 ms (first to last of 25 frames) read as 1000 ms.
        let meta = FragmentMeta {
            producer_ts_ms: 5_000,
            cluster_timecode: 5_000,
            timecode_scale: 1_000_000,
            duration_ms: 960,
            frame_count: 25,
            ebml_header: Bytes::from_static(b"ebml"),
            info_and_tracks: Bytes::from_static(b"tracks"),
            producer_tags: Vec::new(),
        };
        let mut v1 = meta.encode().to_vec();
        assert_eq!(v1[0], 2);
        v1[0] = 1;
        v1.extend_from_slice(b"cluster");
        let (back, cluster) = FragmentMeta::decode(&Bytes::from(v1)).unwrap();
        assert_eq!(back.duration_ms, 1000);
        assert_eq!(
            FragmentMeta {
                duration_ms: 960,
                ..back
            },
            meta
        );
        assert_eq!(&cluster[..], b"cluster");
        // A lone frame: nothing to estimate from.
        let lone = FragmentMeta {
            duration_ms: 0,
            frame_count: 1,
            ..meta
        };
        let mut v1 = lone.encode().to_vec();
        v1[0] = 1;
        assert_eq!(
            FragmentMeta::decode(&Bytes::from(v1))
                .unwrap()
                .0
                .duration_ms,
            0
        );
    }

    #[test]
    fn fragment_numbers() {
        let a = fragment_number(77, 5);
        let b = fragment_number(77, 6);
        assert_eq!(a.len(), 42);
        assert!(a < b);
        assert_eq!(parse_fragment_number(&a), Some((77, 5)));
        assert_ne!(fragment_number(78, 5), a);
        assert_eq!(parse_fragment_number("12"), None);
    }
}
