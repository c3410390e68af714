//! RTP depacketizers for camera ingest: RTP payloads back into access units.
//!
//! - [`h264`]: RFC 6184 (RTP Payload Format for H.264 Video), non-interleaved mode.
//! - [`h265`]: RFC 7798 (RTP Payload Format for High Efficiency Video Coding), without
//!   DONL fields.
//! - [`aac`]: RFC 3640 (RTP Payload Format for Transport of MPEG-4 Elementary Streams),
//!   `mpeg4-generic` AAC-hbr/AAC-lbr.
//!
//! Output is an [`AccessUnit`] in the form the rest of the system stores
//! (`media::samples`): video as NAL units each preceded by a 4-byte big-endian length
//! (as in MP4 and Matroska), AAC as raw access units. Video depacketizers assemble one
//! access unit per RTP timestamp; after a loss (a [`ReorderEvent::Gap`], a sequence
//! number jump, a broken fragmentation unit, a malformed packet) they drop the partial
//! access unit and everything up to the next key frame, which then carries
//! [`AccessUnit::discontinuity`]. Parameter sets seen in the SDP or in-band give the
//! codec private data (ISO/IEC 14496-15 configuration records) and the picture size.
//!
//! No I/O, no clocks. Never panics on any input.

pub mod aac;
pub mod h264;
pub mod h265;

use std::collections::VecDeque;

use super::rtp::{ReorderEvent, RtpPacket};
use super::samples::Codec;
use super::sdp::RtpCodec;

/// One access unit: a video frame or an AAC frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// The RTP timestamp (for AAC, that of this access unit within the packet).
    pub rtp_timestamp: u32,
    /// H.264: an IDR slice (NAL type 5) is present. H.265: an IRAP picture (NAL types
    /// 16..=23). AAC: always.
    pub keyframe: bool,
    /// Video: NAL units each preceded by a 4-byte big-endian length. AAC: one raw
    /// access unit.
    pub data: Vec<u8>,
    /// The first access unit after a loss or after dropped data.
    pub discontinuity: bool,
}

/// Why a packet could not be depacketized. The depacketizer has already treated it as
/// a loss (video: waits for the next key frame); the caller may log it and go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepacketizeError {
    /// The payload does not follow its payload format.
    #[error("malformed RTP payload: {0}")]
    Malformed(String),
    /// A valid construct this implementation does not handle (STAP-B, MTAP, FU-B,
    /// DONL, PACI, an AAC mode without sizeLength, ...).
    #[error("unsupported RTP payload: {0}")]
    Unsupported(String),
    /// An access unit grew past [`MAX_ACCESS_UNIT_BYTES`].
    #[error("access unit larger than {MAX_ACCESS_UNIT_BYTES} bytes")]
    TooLarge,
}

/// The largest access unit assembled (a 4K intra frame is a few MB).
pub const MAX_ACCESS_UNIT_BYTES: usize = 16 * 1024 * 1024;

/// What the H.264 and H.265 depacketizers share: an [`Assembler`] of access units that
/// only emits once the parameter sets are known.
trait VideoAssembly {
    fn assembler(&mut self) -> &mut Assembler;

    /// True once the sequence and picture parameter sets (and for H.265 the video
    /// parameter set) are known, so access units can be decoded.
    fn has_parameter_sets(&self) -> bool;

    /// Packets were lost: drop the partial access unit and wait for a key frame.
    fn gap(&mut self) {
        self.assembler().gap();
    }

    /// End of stream: emit the last access unit if complete.
    fn flush(&mut self) {
        let decodable = self.has_parameter_sets();
        self.assembler().flush(decodable);
    }

    fn pop(&mut self) -> Option<AccessUnit> {
        self.assembler().out.pop_front()
    }
}

/// A depacketizer for one of the supported codecs.
#[derive(Debug)]
pub enum Depacketizer {
    H264(h264::H264Depacketizer),
    H265(h265::H265Depacketizer),
    Aac(aac::AacDepacketizer),
}

impl Depacketizer {
    /// A depacketizer for a media description's codec (parameter sets and AAC
    /// configuration from its fmtp).
    pub fn new(codec: &RtpCodec) -> Result<Depacketizer, DepacketizeError> {
        Ok(match codec.codec {
            Codec::H264 => Depacketizer::H264(h264::H264Depacketizer::from_sdp(codec)?),
            Codec::H265 => Depacketizer::H265(h265::H265Depacketizer::from_sdp(codec)?),
            Codec::Aac => Depacketizer::Aac(aac::AacDepacketizer::from_sdp(codec)?),
        })
    }

    pub fn codec(&self) -> Codec {
        match self {
            Depacketizer::H264(_) => Codec::H264,
            Depacketizer::H265(_) => Codec::H265,
            Depacketizer::Aac(_) => Codec::Aac,
        }
    }

    /// Feeds one RTP packet (in sequence order).
    pub fn push(&mut self, packet: &RtpPacket) -> Result<(), DepacketizeError> {
        match self {
            Depacketizer::H264(d) => d.push(packet),
            Depacketizer::H265(d) => d.push(packet),
            Depacketizer::Aac(d) => d.push(packet),
        }
    }

    /// Feeds what a [`super::rtp::Reorder`] released.
    pub fn push_event(&mut self, event: &ReorderEvent) -> Result<(), DepacketizeError> {
        match event {
            ReorderEvent::Packet(packet) => self.push(packet),
            ReorderEvent::Gap { .. } => {
                self.gap();
                Ok(())
            }
        }
    }

    /// Packets were lost: drop what is being assembled.
    pub fn gap(&mut self) {
        match self {
            Depacketizer::H264(d) => d.gap(),
            Depacketizer::H265(d) => d.gap(),
            Depacketizer::Aac(d) => d.gap(),
        }
    }

    /// End of stream: emit the access unit being assembled if it is complete
    /// (video: the last frame when the sender sets no marker bit).
    pub fn flush(&mut self) {
        match self {
            Depacketizer::H264(d) => d.flush(),
            Depacketizer::H265(d) => d.flush(),
            Depacketizer::Aac(d) => d.flush(),
        }
    }

    /// The next finished access unit.
    pub fn pop(&mut self) -> Option<AccessUnit> {
        match self {
            Depacketizer::H264(d) => d.pop(),
            Depacketizer::H265(d) => d.pop(),
            Depacketizer::Aac(d) => d.pop(),
        }
    }

    /// AVCDecoderConfigurationRecord, HEVCDecoderConfigurationRecord or
    /// AudioSpecificConfig, once the parameter sets are known.
    pub fn codec_private(&self) -> Option<Vec<u8>> {
        match self {
            Depacketizer::H264(d) => d.codec_private(),
            Depacketizer::H265(d) => d.codec_private(),
            Depacketizer::Aac(d) => Some(d.codec_private()),
        }
    }

    /// Video: the picture size from the SPS.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        match self {
            Depacketizer::H264(d) => d.dimensions(),
            Depacketizer::H265(d) => d.dimensions(),
            Depacketizer::Aac(_) => None,
        }
    }

    /// AAC: the sample rate and channel count from the AudioSpecificConfig.
    pub fn audio_format(&self) -> Option<(u32, u16)> {
        match self {
            Depacketizer::Aac(d) => Some((d.sample_rate(), d.channels())),
            _ => None,
        }
    }
}

/// Picture parameter sets by id, newest per id, at most [`PpsTable::MAX`] of them: what
/// the H.264 and H.265 configuration records carry.
#[derive(Debug, Default)]
pub(crate) struct PpsTable(Vec<(u32, Vec<u8>)>);

impl PpsTable {
    const MAX: usize = 32;

    /// Stores `nal` as PPS `id`, replacing an older one with that id.
    pub(crate) fn set(&mut self, id: u32, nal: &[u8]) {
        if let Some(slot) = self.0.iter_mut().find(|(i, _)| *i == id) {
            slot.1 = nal.to_vec();
        } else if self.0.len() < Self::MAX {
            self.0.push((id, nal.to_vec()));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|(_, p)| p.as_slice())
    }
}

/// Whether a NAL unit starts a key frame and whether it is a coded slice.
#[derive(Debug, Clone, Copy)]
struct NalKind {
    vcl: bool,
    keyframe: bool,
}

/// An access unit being assembled.
#[derive(Debug)]
struct PendingAu {
    timestamp: u32,
    data: Vec<u8>,
    vcl: bool,
    keyframe: bool,
}

/// A NAL unit being reassembled from fragmentation units.
#[derive(Debug)]
struct Fragment {
    timestamp: u32,
    nal_type: u8,
    data: Vec<u8>,
}

/// The NAL units of an aggregation packet's payload (H.264 STAP-A, RFC 6184 5.7.1;
/// H.265 AP, RFC 7798 4.4.2): each preceded by a 16-bit size and at least `min_len`
/// bytes long. `None` if a size overruns the packet or a unit is too short.
fn split_aggregate(mut rest: &[u8], min_len: usize) -> Option<Vec<&[u8]>> {
    let mut nals = Vec::new();
    while !rest.is_empty() {
        let [hi, lo, tail @ ..] = rest else {
            return None;
        };
        let (nal, tail) = tail.split_at_checked(usize::from(u16::from_be_bytes([*hi, *lo])))?;
        if nal.len() < min_len {
            return None;
        }
        nals.push(nal);
        rest = tail;
    }
    Some(nals)
}

/// The codec-neutral part of the H.264 and H.265 depacketizers: access unit assembly,
/// fragmentation unit reassembly, loss handling and key frame waiting.
#[derive(Debug)]
struct Assembler {
    pending: Option<PendingAu>,
    fragment: Option<Fragment>,
    last_sequence: Option<u16>,
    /// Dropping everything until a decodable key frame.
    waiting_for_keyframe: bool,
    /// Something was lost or dropped since the last access unit emitted.
    dropped: bool,
    /// After a loss, the access unit of the first packet that follows may have lost
    /// its beginning (its parameter sets or first slices) and still look like a key
    /// frame: it is dropped whole. `Some(None)` until that packet arrives.
    tainted: Option<Option<u32>>,
    out: VecDeque<AccessUnit>,
}

impl Assembler {
    fn new() -> Assembler {
        Assembler {
            pending: None,
            fragment: None,
            last_sequence: None,
            waiting_for_keyframe: true,
            dropped: false,
            tainted: None,
            out: VecDeque::new(),
        }
    }

    /// Starts a packet: a sequence number jump is a loss; a new timestamp ends the
    /// pending access unit (a complete one is emitted if `decodable`; one without
    /// coded slices is carried into the new one, so parameter sets sent with their own
    /// timestamp stay in front of the frame).
    fn begin_packet(&mut self, packet: &RtpPacket, decodable: bool) {
        if let Some(last) = self.last_sequence
            && last.wrapping_add(1) != packet.sequence
        {
            self.loss();
        }
        self.last_sequence = Some(packet.sequence);
        match self.tainted {
            Some(None) => self.tainted = Some(Some(packet.timestamp)),
            Some(Some(ts)) if ts != packet.timestamp => self.tainted = None,
            _ => {}
        }
        if self
            .fragment
            .as_ref()
            .is_some_and(|f| f.timestamp != packet.timestamp)
        {
            // A fragmented NAL unit never ended.
            self.loss();
            return;
        }
        let Some(pending) = &mut self.pending else {
            return;
        };
        if pending.timestamp == packet.timestamp {
            return;
        }
        if pending.vcl {
            self.finish(decodable);
        } else {
            pending.timestamp = packet.timestamp;
        }
    }

    /// Ends a packet: the marker bit ends an access unit that has coded slices.
    fn end_packet(&mut self, packet: &RtpPacket, decodable: bool) {
        if packet.marker && self.fragment.is_none() && self.pending.as_ref().is_some_and(|p| p.vcl)
        {
            self.finish(decodable);
        }
    }

    /// Appends a complete NAL unit to the access unit of `timestamp`.
    fn add_nal(
        &mut self,
        timestamp: u32,
        nal: &[u8],
        kind: NalKind,
    ) -> Result<(), DepacketizeError> {
        let pending = self.pending.get_or_insert_with(|| PendingAu {
            timestamp,
            data: Vec::new(),
            vcl: false,
            keyframe: false,
        });
        if pending.data.len() + 4 + nal.len() > MAX_ACCESS_UNIT_BYTES {
            self.loss();
            return Err(DepacketizeError::TooLarge);
        }
        let Ok(len) = u32::try_from(nal.len()) else {
            self.loss();
            return Err(DepacketizeError::TooLarge);
        };
        pending.data.extend_from_slice(&len.to_be_bytes());
        pending.data.extend_from_slice(nal);
        pending.vcl |= kind.vcl;
        pending.keyframe |= kind.keyframe;
        Ok(())
    }

    /// A fragmentation unit. `header` is the reconstructed NAL unit header (used on the
    /// start fragment). Returns the NAL unit when `end` completes it.
    fn fragment(
        &mut self,
        timestamp: u32,
        start: bool,
        end: bool,
        nal_type: u8,
        header: &[u8],
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, DepacketizeError> {
        if start {
            if self.fragment.is_some() {
                self.loss();
                return Err(DepacketizeError::Malformed(
                    "fragmentation unit start before the previous one ended".into(),
                ));
            }
            let mut nal = Vec::with_capacity(header.len() + data.len());
            nal.extend_from_slice(header);
            nal.extend_from_slice(data);
            if end {
                // Start and end bits together are not allowed; take it as a whole NAL.
                return Ok(Some(nal));
            }
            self.fragment = Some(Fragment {
                timestamp,
                nal_type,
                data: nal,
            });
            return Ok(None);
        }
        let Some(fragment) = &mut self.fragment else {
            // The start was lost (already reported as a loss) or never sent.
            self.loss();
            return Err(DepacketizeError::Malformed(
                "fragmentation unit continues no started NAL unit".into(),
            ));
        };
        if fragment.nal_type != nal_type {
            self.loss();
            return Err(DepacketizeError::Malformed(
                "fragmentation unit changes the NAL unit type".into(),
            ));
        }
        let pending_len = self.pending.as_ref().map_or(0, |p| p.data.len());
        if pending_len + fragment.data.len() + data.len() + 4 > MAX_ACCESS_UNIT_BYTES {
            self.loss();
            return Err(DepacketizeError::TooLarge);
        }
        fragment.data.extend_from_slice(data);
        if end {
            Ok(self.fragment.take().map(|f| f.data))
        } else {
            Ok(None)
        }
    }

    /// Ends the pending access unit: emitted if it has coded slices and either no key
    /// frame is awaited or it is a decodable key frame; otherwise dropped.
    fn finish(&mut self, decodable: bool) {
        let Some(au) = self.pending.take() else {
            return;
        };
        if !au.vcl {
            return;
        }
        if self.tainted == Some(Some(au.timestamp)) {
            self.dropped = true;
            return;
        }
        if self.waiting_for_keyframe {
            if au.keyframe && decodable {
                self.waiting_for_keyframe = false;
            } else {
                self.dropped = true;
                return;
            }
        }
        self.out.push_back(AccessUnit {
            rtp_timestamp: au.timestamp,
            keyframe: au.keyframe,
            data: au.data,
            discontinuity: std::mem::take(&mut self.dropped),
        });
    }

    /// Data was lost: drop the partial access unit and wait for a key frame.
    fn loss(&mut self) {
        self.pending = None;
        self.fragment = None;
        self.waiting_for_keyframe = true;
        self.dropped = true;
        self.tainted = Some(None);
    }

    /// A gap reported by the reorder buffer.
    fn gap(&mut self) {
        self.loss();
        self.last_sequence = None;
    }

    /// End of stream. An access unit still open never got its marker bit: its last
    /// packets may be lost without a later packet to reveal it, so it is dropped.
    fn flush(&mut self, _decodable: bool) {
        if self.pending.as_ref().is_some_and(|p| p.vcl) || self.fragment.is_some() {
            self.dropped = true;
        }
        self.pending = None;
        self.fragment = None;
    }
}

/// Removes emulation prevention bytes (`00 00 03` → `00 00`) from a NAL unit, giving
/// its RBSP.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// MSB-first bit reader with Exp-Golomb codes (H.264 7.2 / 9.1, H.265 9.2).
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> BitReader<'a> {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(bit == 1)
    }

    /// The next `n` (at most 32) bits.
    fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 {
            return None;
        }
        let mut value = 0u64;
        for _ in 0..n {
            value = (value << 1) | u64::from(self.bit()?);
        }
        u32::try_from(value).ok()
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        if end > self.data.len() * 8 {
            return None;
        }
        self.pos = end;
        Some(())
    }

    /// ue(v), at most 32 bits of value.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        let value = (1u64 << zeros) - 1 + u64::from(rest);
        u32::try_from(value).ok()
    }

    /// se(v).
    fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let value = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(value).ok()
    }

    #[cfg(test)]
    fn bits_left(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }
}

/// The lower-case hex of bytes (test diagnostics).
#[cfg(test)]
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from lower- or upper-case hex (test constants).
#[cfg(test)]
fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // ue: "1"=0, "010"=1, "011"=2, "00100"=3, "00101"=4.
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data);
        assert_eq!(r.ue(), Some(0));
        assert_eq!(r.ue(), Some(1));
        assert_eq!(r.ue(), Some(2));
        assert_eq!(r.ue(), Some(3));
        assert_eq!(r.ue(), Some(4));
        assert_eq!(r.bits_left(), 7);
        let mut r = BitReader::new(&data);
        assert_eq!(r.se(), Some(0));
        assert_eq!(r.se(), Some(1));
        assert_eq!(r.se(), Some(-1));
        assert_eq!(r.se(), Some(2));
        assert_eq!(r.se(), Some(-2));
        // Too many leading zeros or running out: None, no panic.
        assert_eq!(BitReader::new(&[0; 8]).ue(), None);
        assert_eq!(BitReader::new(&[0, 0, 0, 0, 1]).ue(), None);
        assert_eq!(
            BitReader::new(&[0, 0, 0, 1, 0, 0, 0, 0]).ue(),
            Some((1 << 31) - 1)
        );
        assert_eq!(BitReader::new(&[0x00, 0x01]).ue(), None);
        assert_eq!(BitReader::new(&[0xFF]).bits(33), None);
        assert_eq!(BitReader::new(&[0xFF]).skip(9), None);
    }

    /// Reorder buffer and depacketizer together, across the sequence number wrap: a
    /// swapped pair is restored, a lost FU-A fragment drops its frame and the next P
    /// frame, and the next IDR resumes with `discontinuity`.
    #[test]
    fn reorder_gap_drops_until_the_next_key_frame() {
        use super::h264::tests::{PPS, SPS_320X240, rtp, sdp_codec};
        use crate::media::rtp::{Reorder, ReorderConfig};

        let (sps, pps) = (unhex(SPS_320X240), unhex(PPS));
        let mut stap_a = vec![0x78];
        for nal in [&sps, &pps] {
            stap_a.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap_a.extend_from_slice(nal);
        }
        let idr = [0x65, 0x88, 0x80, 0x10];
        let p = [0x41, 0x9A, 0x02];
        let packets = [
            rtp(65533, 0, false, &stap_a),
            rtp(65534, 0, true, &idr),
            rtp(65535, 3000, true, &p),
            rtp(0, 6000, false, &[0x7C, 0x81, 0x9A]), // FU-A start
            rtp(1, 6000, false, &[0x7C, 0x01, 0x01]), // middle: lost
            rtp(2, 6000, true, &[0x7C, 0x41, 0x02]),  // end
            rtp(3, 9000, true, &p),
            rtp(4, 12000, true, &idr),
            rtp(5, 15000, true, &p),
        ];
        let arrival = [0usize, 2, 1, 3, 5, 6, 7, 8]; // 65534 and 65535 swapped; 1 lost
        let mut reorder = Reorder::new(ReorderConfig {
            max_packets: 64,
            max_wait_ms: 20,
        });
        let mut d = Depacketizer::new(&sdp_codec(&[])).unwrap();
        let mut aus = Vec::new();
        let mut errors = 0;
        for (now, &i) in arrival.iter().enumerate() {
            let now = now as u64 * 10;
            reorder.push(packets[i].clone(), now);
            while let Some(event) = reorder.pop(now) {
                errors += usize::from(d.push_event(&event).is_err());
                aus.extend(std::iter::from_fn(|| d.pop()));
            }
        }
        while let Some(event) = reorder.pop(u64::MAX) {
            errors += usize::from(d.push_event(&event).is_err());
        }
        d.flush();
        aus.extend(std::iter::from_fn(|| d.pop()));
        let summary: Vec<_> = aus
            .iter()
            .map(|a| (a.rtp_timestamp, a.keyframe, a.discontinuity))
            .collect();
        assert_eq!(
            summary,
            [
                (0, true, false),
                (3000, false, false),
                (12000, true, true),
                (15000, false, false)
            ]
        );
        assert_eq!(errors, 1, "the FU-A end after the gap is refused");
        assert_eq!(reorder.stats().lost, 1);
        assert_eq!(d.dimensions(), Some((320, 240)));
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(
            rbsp(&[0x67, 0, 0, 3, 1, 0, 0, 3, 0, 0, 3]),
            [0x67, 0, 0, 1, 0, 0, 0, 0]
        );
        assert_eq!(hex(&rbsp(&unhex("000003000003"))), "00000000");
    }
}
