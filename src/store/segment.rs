//! Segment files: the on-disk unit of a log.
//!
//! A log is a directory of segment files named `<base offset, 20 digits>.seg`. Each
//! segment starts with a fixed header and is followed by frames, one per entry:
//!
//! ```text
//! header (32 bytes): magic "FRSHSEG1" | u32 version | u32 reserved | u64 base offset
//!                    | i64 created ms | (all little-endian)
//! frame:             u32 body length | u32 CRC32C(body) | body
//! body:              u64 offset | i64 timestamp ms | payload bytes
//! ```
//!
//! Offsets inside a segment are dense and start at the base offset; timestamps never
//! decrease. A frame whose CRC or offset does not match marks the end of the valid
//! data: recovery truncates the file there (a torn write from a crash).
//!
//! When a segment is sealed an index file `<base>.idx` is written beside it (temp file,
//! fsync, rename): sparse index points plus the segment's totals, with a CRC. Start-up
//! loads index files and scans only segments that have none (at most the last one or
//! two), so start-up time does not grow with the amount of data.
//!
//! This module is pure parsing and encoding over byte slices; file I/O lives in
//! [`super::log`].

use bytes::{BufMut, Bytes, BytesMut};

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"FRSHSEG1";
/// Magic bytes at the start of every index file.
pub const INDEX_MAGIC: &[u8; 8] = b"FRSHIDX1";
/// Size of the segment header.
pub const HEADER_LEN: usize = 32;
/// Bytes of framing before the payload: length, CRC, offset, timestamp.
pub const FRAME_OVERHEAD: usize = 24;
/// Largest frame body we will ever accept while scanning (guards against a corrupt
/// length field making us allocate or skip absurd amounts).
pub const MAX_FRAME_BODY: usize = 64 * 1024 * 1024;
const FORMAT_VERSION: u32 = 1;

/// The fixed header at the start of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub base_offset: u64,
    pub created_ms: i64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        out
    }

    pub fn decode(buf: &[u8]) -> Option<Self> {
        if buf.len() < HEADER_LEN || &buf[..8] != SEGMENT_MAGIC {
            return None;
        }
        let version = u32::from_le_bytes(buf[8..12].try_into().ok()?);
        if version != FORMAT_VERSION {
            return None;
        }
        Some(Self {
            base_offset: u64::from_le_bytes(buf[16..24].try_into().ok()?),
            created_ms: i64::from_le_bytes(buf[24..32].try_into().ok()?),
        })
    }
}

/// A payload to append. It may come in two parts stored back to back (a small header
/// and a body that shares memory with the request it came from), so callers never
/// copy them together; readers see one contiguous payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub head: Bytes,
    pub body: Bytes,
}

impl Entry {
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for Entry {
    fn from(body: Bytes) -> Self {
        Self {
            head: Bytes::new(),
            body,
        }
    }
}

/// Appends one encoded frame to `out`; the payload is `head` followed by `body`.
pub fn encode_frame<B: BufMut + AsMut<[u8]>>(
    out: &mut B,
    offset: u64,
    timestamp_ms: i64,
    head: &[u8],
    body: &[u8],
) {
    encode_frame_prefix(out, offset, timestamp_ms, head, body);
    out.put_slice(body);
}

/// Appends everything of a frame except its `body` to `out`: the frame header (with
/// the checksum over the whole frame, `body` included) and `head`. Writing these bytes
/// followed by `body` gives exactly what [`encode_frame`] gives; the log writes the two
/// parts with one vectored write, so bodies are never copied in user space.
pub fn encode_frame_prefix<B: BufMut + AsMut<[u8]>>(
    out: &mut B,
    offset: u64,
    timestamp_ms: i64,
    head: &[u8],
    body: &[u8],
) {
    let body_len = 16 + head.len() + body.len();
    let start = out.as_mut().len();
    out.put_u32_le(body_len as u32);
    out.put_u32_le(0);
    out.put_u64_le(offset);
    out.put_i64_le(timestamp_ms);
    out.put_slice(head);
    let frame = &mut out.as_mut()[start..];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&frame[8..]), body);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// One entry decoded from a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: Bytes,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not enough bytes for the frame (a torn tail, or the read chunk ended).
    Incomplete { needed: usize },
    /// The bytes are there but do not form a valid frame.
    Corrupt,
}

/// Decodes the frame at the start of `buf` (a slice of a larger `Bytes` so the payload
/// is shared, not copied). Returns the frame and its total encoded length.
pub fn decode_frame(buf: &Bytes) -> Result<(Frame, usize), FrameError> {
    if buf.len() < 8 {
        return Err(FrameError::Incomplete { needed: 8 });
    }
    let body_len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    if !(16..=MAX_FRAME_BODY).contains(&body_len) {
        return Err(FrameError::Corrupt);
    }
    let total = 8 + body_len;
    if buf.len() < total {
        return Err(FrameError::Incomplete { needed: total });
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    let body = &buf[8..total];
    if crc32c::crc32c(body) != crc {
        return Err(FrameError::Corrupt);
    }
    let offset = u64::from_le_bytes(body[0..8].try_into().unwrap());
    let timestamp_ms = i64::from_le_bytes(body[8..16].try_into().unwrap());
    Ok((
        Frame {
            offset,
            timestamp_ms,
            payload: buf.slice(8 + 16..total),
        },
        total,
    ))
}

/// A sparse index point: the entry `offset` starts at byte `position` of the segment
/// file and was stamped `timestamp_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexPoint {
    pub offset: u64,
    pub position: u64,
    pub timestamp_ms: i64,
}

/// What we know about a segment without reading its frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    pub header: SegmentHeader,
    /// One past the last offset in the segment.
    pub end_offset: u64,
    /// Byte length of the valid data (header included).
    pub valid_len: u64,
    /// Timestamp of the first and last entries (the header's creation time when empty).
    pub first_timestamp_ms: i64,
    pub last_timestamp_ms: i64,
    pub points: Vec<IndexPoint>,
}

/// Distance in bytes between sparse index points.
pub const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;

impl SegmentSummary {
    pub fn empty(header: SegmentHeader) -> Self {
        Self {
            header,
            end_offset: header.base_offset,
            valid_len: HEADER_LEN as u64,
            first_timestamp_ms: header.created_ms,
            last_timestamp_ms: header.created_ms,
            points: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.end_offset == self.header.base_offset
    }

    /// Records that a frame for `offset` was written at `position`; adds an index point
    /// when the previous one is far enough behind.
    pub fn note_frame(&mut self, offset: u64, position: u64, timestamp_ms: i64, len: u64) {
        if self.is_empty() {
            self.first_timestamp_ms = timestamp_ms;
        }
        let need_point = match self.points.last() {
            None => true,
            Some(last) => position - last.position >= INDEX_INTERVAL_BYTES,
        };
        if need_point {
            self.points.push(IndexPoint {
                offset,
                position,
                timestamp_ms,
            });
        }
        self.end_offset = offset + 1;
        self.valid_len = position + len;
        self.last_timestamp_ms = timestamp_ms;
    }

    /// The index point at or before `offset` (the place to start scanning for it).
    pub fn point_for_offset(&self, offset: u64) -> IndexPoint {
        let idx = self.points.partition_point(|p| p.offset <= offset);
        if idx == 0 {
            self.start_point()
        } else {
            self.points[idx - 1]
        }
    }

    /// The last index point whose timestamp is before `timestamp_ms` (the place to
    /// start scanning for the first entry at or after that time).
    pub fn point_for_time(&self, timestamp_ms: i64) -> IndexPoint {
        let idx = self
            .points
            .partition_point(|p| p.timestamp_ms < timestamp_ms);
        if idx == 0 {
            self.start_point()
        } else {
            self.points[idx - 1]
        }
    }

    fn start_point(&self) -> IndexPoint {
        IndexPoint {
            offset: self.header.base_offset,
            position: HEADER_LEN as u64,
            timestamp_ms: self.first_timestamp_ms,
        }
    }

    /// Encodes the summary as an index file body.
    pub fn encode_index(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(64 + self.points.len() * 24);
        out.put_slice(INDEX_MAGIC);
        out.put_slice(&self.header.encode());
        out.put_u64_le(self.end_offset);
        out.put_u64_le(self.valid_len);
        out.put_i64_le(self.first_timestamp_ms);
        out.put_i64_le(self.last_timestamp_ms);
        out.put_u64_le(self.points.len() as u64);
        for p in &self.points {
            out.put_u64_le(p.offset);
            out.put_u64_le(p.position);
            out.put_i64_le(p.timestamp_ms);
        }
        let crc = crc32c::crc32c(&out);
        out.put_u32_le(crc);
        out.to_vec()
    }

    /// Decodes an index file; `None` if it is damaged in any way.
    pub fn decode_index(buf: &[u8]) -> Option<Self> {
        if buf.len() < 8 + HEADER_LEN + 40 + 4 || &buf[..8] != INDEX_MAGIC {
            return None;
        }
        let (body, crc_bytes) = buf.split_at(buf.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc_bytes.try_into().ok()?) {
            return None;
        }
        let header = SegmentHeader::decode(&body[8..8 + HEADER_LEN])?;
        let mut rest = &body[8 + HEADER_LEN..];
        let mut take_u64 = || -> Option<u64> {
            let (head, tail) = rest.split_at_checked(8)?;
            rest = tail;
            Some(u64::from_le_bytes(head.try_into().ok()?))
        };
        let end_offset = take_u64()?;
        let valid_len = take_u64()?;
        let first_timestamp_ms = take_u64()? as i64;
        let last_timestamp_ms = take_u64()? as i64;
        let count = take_u64()? as usize;
        if count > body.len() / 24 {
            return None;
        }
        let mut points = Vec::with_capacity(count);
        for _ in 0..count {
            points.push(IndexPoint {
                offset: take_u64()?,
                position: take_u64()?,
                timestamp_ms: take_u64()? as i64,
            });
        }
        Some(Self {
            header,
            end_offset,
            valid_len,
            first_timestamp_ms,
            last_timestamp_ms,
            points,
        })
    }
}

/// Scans a whole segment image, stopping at the first invalid frame. Returns the summary
/// of the valid prefix; `valid_len` tells where a torn or corrupt tail begins.
pub fn scan_segment(image: &Bytes) -> Option<SegmentSummary> {
    let header = SegmentHeader::decode(image)?;
    let mut summary = SegmentSummary::empty(header);
    let mut position = HEADER_LEN;
    let mut expected = header.base_offset;
    let mut last_ts = i64::MIN;
    while position < image.len() {
        match decode_frame(&image.slice(position..)) {
            Ok((frame, len)) => {
                if frame.offset != expected || frame.timestamp_ms < last_ts {
                    break;
                }
                summary.note_frame(
                    frame.offset,
                    position as u64,
                    frame.timestamp_ms,
                    len as u64,
                );
                expected += 1;
                last_ts = frame.timestamp_ms;
                position += len;
            }
            Err(_) => break,
        }
    }
    Some(summary)
}

/// Parses frames from a chunk read at some position, starting at `first_offset`, up to
/// `max_entries` / `max_payload_bytes` and never past `end_offset`. Payloads share the
/// chunk's memory. Stops quietly at an incomplete frame (the caller reads more).
pub fn parse_frames(
    chunk: &Bytes,
    first_offset: u64,
    end_offset: u64,
    max_entries: usize,
    max_payload_bytes: usize,
) -> Result<(Vec<Frame>, usize), FrameError> {
    let mut frames = Vec::new();
    let mut position = 0usize;
    let mut bytes = 0usize;
    let mut expected = first_offset;
    while expected < end_offset && frames.len() < max_entries {
        match decode_frame(&chunk.slice(position..)) {
            Ok((frame, len)) => {
                if frame.offset != expected {
                    return Err(FrameError::Corrupt);
                }
                if !frames.is_empty() && bytes + frame.payload.len() > max_payload_bytes {
                    break;
                }
                bytes += frame.payload.len();
                frames.push(frame);
                expected += 1;
                position += len;
            }
            Err(FrameError::Incomplete { .. }) => break,
            Err(FrameError::Corrupt) => return Err(FrameError::Corrupt),
        }
    }
    Ok((frames, position))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(n: u64) -> Bytes {
        let header = SegmentHeader {
            base_offset: 10,
            created_ms: 1000,
        };
        let mut buf = BytesMut::new();
        buf.put_slice(&header.encode());
        for i in 0..n {
            encode_frame(
                &mut buf,
                10 + i,
                1000 + i as i64,
                b"",
                format!("payload-{i}").as_bytes(),
            );
        }
        buf.freeze()
    }

    #[test]
    fn scan_reads_all_frames() {
        let img = image(100);
        let s = scan_segment(&img).unwrap();
        assert_eq!(s.end_offset, 110);
        assert_eq!(s.valid_len, img.len() as u64);
        assert_eq!(s.first_timestamp_ms, 1000);
        assert_eq!(s.last_timestamp_ms, 1099);
    }

    #[test]
    fn torn_tail_is_detected() {
        let img = image(5);
        for cut in HEADER_LEN..img.len() {
            let s = scan_segment(&img.slice(..cut)).unwrap();
            assert!(s.valid_len as usize <= cut);
            assert!(s.end_offset <= 15);
            // Every complete frame before the cut survives.
            let full = scan_segment(&img).unwrap();
            assert!(s.valid_len <= full.valid_len);
        }
    }

    #[test]
    fn flipped_bit_stops_scan() {
        let img = image(5);
        let mut bad = img.to_vec();
        let pos = HEADER_LEN + 8 + 16 + 2; // inside the first payload
        bad[pos] ^= 0x40;
        let s = scan_segment(&Bytes::from(bad)).unwrap();
        assert_eq!(s.end_offset, 10);
        assert_eq!(s.valid_len, HEADER_LEN as u64);
    }

    #[test]
    fn index_round_trip_and_damage() {
        let s = scan_segment(&image(50)).unwrap();
        let enc = s.encode_index();
        assert_eq!(SegmentSummary::decode_index(&enc), Some(s));
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 1;
            assert!(SegmentSummary::decode_index(&bad).is_none());
        }
        assert!(SegmentSummary::decode_index(&enc[..enc.len() - 1]).is_none());
    }

    #[test]
    fn parse_frames_respects_limits() {
        let img = image(20);
        let chunk = img.slice(HEADER_LEN..);
        let (frames, _) = parse_frames(&chunk, 10, 30, 5, usize::MAX).unwrap();
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[4].offset, 14);
        let (frames, _) = parse_frames(&chunk, 10, 13, 100, usize::MAX).unwrap();
        assert_eq!(frames.len(), 3);
        let (frames, _) = parse_frames(&chunk, 10, 30, 100, 20).unwrap();
        assert_eq!(frames.len(), 2); // "payload-0" + "payload-1" = 18 bytes
        assert_eq!(&frames[1].payload[..], b"payload-1");
    }
}
