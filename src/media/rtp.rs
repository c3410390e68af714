//! RTP and RTCP packets (RFC 3550, "RTP: A Transport Protocol for Real-Time
//! Applications") and a jitter/reorder buffer for camera ingest.
//!
//! - [`RtpPacket`]: parses a version 2 RTP packet (section 5.1: padding, header
//!   extension, CSRC list, marker, payload type, sequence number, timestamp, SSRC); the
//!   payload is a [`Bytes`] slice of the input (no copy). [`RtpPacket::write`] builds
//!   packets for tests and simulators.
//! - [`parse_rtcp`]: walks an RTCP compound packet (section 6.1) and returns its Sender
//!   Reports (section 6.4.1) with the NTP wallclock converted to Unix milliseconds;
//!   every other RTCP packet type is skipped.
//! - [`Reorder`]: holds out-of-order packets for a bounded window (packets and
//!   milliseconds) and releases them in 16-bit sequence number order (with wrap-around),
//!   reporting [`ReorderEvent::Gap`] when it gives up on missing packets. Sequence
//!   number jumps are handled as in RFC 3550 appendix A.1: a large jump is believed only
//!   when the next packet follows it.
//!
//! No I/O and no clocks: times are passed in. Never panics on any input.

use std::collections::{BTreeMap, VecDeque};

use bytes::{BufMut, Bytes};

/// Why bytes are not a valid RTP or RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("packet too short: {0} bytes")]
    TooShort(usize),
    #[error("unsupported RTP version {0} (2 expected)")]
    Version(u8),
    #[error("CSRC list or header extension overruns the packet")]
    HeaderOverrun,
    #[error("invalid padding length {padding} for {available} bytes after the header")]
    Padding { padding: usize, available: usize },
    #[error("RTCP packet length overruns the compound packet")]
    RtcpLength,
}

/// An RTP header extension (RFC 3550 5.3.1): the profile-defined 16 bits and the
/// extension data (a multiple of 4 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpExtension {
    pub profile: u16,
    pub data: Bytes,
}

/// One RTP data packet, padding removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrcs: Vec<u32>,
    pub extension: Option<RtpExtension>,
    /// The payload, without padding: a slice of the parsed buffer.
    pub payload: Bytes,
}

impl RtpPacket {
    /// Parses one RTP packet. The payload and extension share `data`'s memory.
    pub fn parse(data: Bytes) -> Result<RtpPacket, RtpError> {
        let &[b0, b1, s0, s1, t0, t1, t2, t3, i0, i1, i2, i3, ..] = &data[..] else {
            return Err(RtpError::TooShort(data.len()));
        };
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_count = usize::from(b0 & 0x0F);
        let mut pos = 12;
        let mut csrcs = Vec::with_capacity(csrc_count);
        for _ in 0..csrc_count {
            csrcs.push(read_u32(&data, pos).ok_or(RtpError::HeaderOverrun)?);
            pos += 4;
        }
        let extension = if has_extension {
            let word = read_u32(&data, pos).ok_or(RtpError::HeaderOverrun)?;
            let profile = (word >> 16) as u16;
            let len = (word & 0xFFFF) as usize * 4;
            let start = pos + 4;
            let end = start + len;
            if end > data.len() {
                return Err(RtpError::HeaderOverrun);
            }
            pos = end;
            Some(RtpExtension {
                profile,
                data: data.slice(start..end),
            })
        } else {
            None
        };
        let mut end = data.len();
        if has_padding {
            let available = end - pos;
            let padding = usize::from(data.last().copied().unwrap_or(0));
            if padding == 0 || padding > available {
                return Err(RtpError::Padding { padding, available });
            }
            end -= padding;
        }
        Ok(RtpPacket {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7F,
            sequence: u16::from_be_bytes([s0, s1]),
            timestamp: u32::from_be_bytes([t0, t1, t2, t3]),
            ssrc: u32::from_be_bytes([i0, i1, i2, i3]),
            csrcs,
            extension,
            payload: data.slice(pos..end),
        })
    }

    /// Parses one RTP packet from a slice (copies it once).
    pub fn parse_slice(data: &[u8]) -> Result<RtpPacket, RtpError> {
        Self::parse(Bytes::copy_from_slice(data))
    }

    /// Appends the packet in wire form (no padding). At most 15 CSRCs are written; an
    /// extension's data is zero-padded to a multiple of 4 bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        let csrcs = &self.csrcs[..self.csrcs.len().min(15)];
        let mut b0 = 0x80 | csrcs.len() as u8;
        if self.extension.is_some() {
            b0 |= 0x10;
        }
        out.put_u8(b0);
        out.put_u8((u8::from(self.marker) << 7) | (self.payload_type & 0x7F));
        out.put_u16(self.sequence);
        out.put_u32(self.timestamp);
        out.put_u32(self.ssrc);
        for csrc in csrcs {
            out.put_u32(*csrc);
        }
        if let Some(ext) = &self.extension {
            let words = ext.data.len().div_ceil(4).min(0xFFFF);
            out.put_u16(ext.profile);
            out.put_u16(words as u16);
            let len = (words * 4).min(ext.data.len());
            out.extend_from_slice(&ext.data[..len]);
            out.resize(out.len() + words * 4 - len, 0);
        }
        out.extend_from_slice(&self.payload);
    }

    /// The packet in wire form.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.payload.len());
        self.write(&mut out);
        out
    }
}

fn read_u32(data: &[u8], pos: usize) -> Option<u32> {
    let bytes = data.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// RTCP packet type of a Sender Report (RFC 3550 12.1).
pub const RTCP_SR: u8 = 200;
/// RTCP packet type of a Receiver Report.
pub const RTCP_RR: u8 = 201;

/// Whether a packet received on a port shared by RTP and RTCP (RFC 5761 4) is RTCP:
/// its second byte (the RTCP packet type) is in 192..=223.
pub fn is_rtcp(data: &[u8]) -> bool {
    matches!(data.get(1), Some(192..=223))
}

/// The sender information of an RTCP Sender Report (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    /// The 64-bit NTP wallclock (seconds since 1900 in the high 32 bits, fraction in
    /// the low 32 bits).
    pub ntp_timestamp: u64,
    /// [`Self::ntp_timestamp`] as milliseconds since the Unix epoch.
    pub unix_ms: i64,
    /// The RTP timestamp corresponding to the same instant.
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_UNIX_OFFSET_S: i64 = 2_208_988_800;

/// Converts a 64-bit NTP timestamp (era 0) to milliseconds since the Unix epoch
/// (rounded down; negative before 1970).
pub fn ntp_to_unix_ms(ntp: u64) -> i64 {
    let seconds = (ntp >> 32) as i64 - NTP_UNIX_OFFSET_S;
    let millis = ((ntp & 0xFFFF_FFFF) * 1000) >> 32;
    seconds * 1000 + millis as i64
}

/// Converts milliseconds since the Unix epoch to a 64-bit NTP timestamp (saturating
/// outside NTP era 0); [`ntp_to_unix_ms`] gives the same milliseconds back.
pub fn unix_ms_to_ntp(unix_ms: i64) -> u64 {
    let seconds = unix_ms.div_euclid(1000) + NTP_UNIX_OFFSET_S;
    if seconds < 0 {
        return 0;
    }
    if seconds > i64::from(u32::MAX) {
        return u64::MAX;
    }
    // Rounded up, so that converting back gives the same millisecond.
    let fraction = ((unix_ms.rem_euclid(1000) as u64) << 32).div_ceil(1000);
    ((seconds as u64) << 32) | fraction
}

impl SenderReport {
    /// Appends the report as an RTCP SR packet without report blocks.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.put_u8(0x80);
        out.put_u8(RTCP_SR);
        out.put_u16(6);
        out.put_u32(self.ssrc);
        out.put_u64(self.ntp_timestamp);
        out.put_u32(self.rtp_timestamp);
        out.put_u32(self.packet_count);
        out.put_u32(self.octet_count);
    }
}

/// Parses an RTCP compound packet (RFC 3550 6.1) and returns its Sender Reports; other
/// packet types (RR, SDES, BYE, APP, feedback, XR) are skipped. Errors if a packet is
/// not version 2, is shorter than its header, or overruns the buffer; a Sender Report
/// too short for its sender information is skipped.
pub fn parse_rtcp(data: &[u8]) -> Result<Vec<SenderReport>, RtpError> {
    let mut reports = Vec::new();
    let mut rest = data;
    if rest.len() < 4 {
        return Err(RtpError::TooShort(rest.len()));
    }
    while !rest.is_empty() {
        let &[b0, packet_type, l0, l1, ..] = rest else {
            return Err(RtpError::TooShort(rest.len()));
        };
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let len = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
        let (packet, tail) = rest.split_at_checked(len).ok_or(RtpError::RtcpLength)?;
        rest = tail;
        if packet_type != RTCP_SR {
            continue;
        }
        let word = |i: usize| read_u32(packet, 4 + 4 * i);
        if let (Some(ssrc), Some(hi), Some(lo), Some(rtp), Some(packets), Some(octets)) =
            (word(0), word(1), word(2), word(3), word(4), word(5))
        {
            let ntp_timestamp = (u64::from(hi) << 32) | u64::from(lo);
            reports.push(SenderReport {
                ssrc,
                ntp_timestamp,
                unix_ms: ntp_to_unix_ms(ntp_timestamp),
                rtp_timestamp: rtp,
                packet_count: packets,
                octet_count: octets,
            });
        }
    }
    Ok(reports)
}

/// Limits of a [`Reorder`] buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorderConfig {
    /// At most this many packets are held waiting for a missing one; when the buffer
    /// is full the missing packets are given up on at once.
    pub max_packets: usize,
    /// A missing packet is waited for at most this long after the first packet that
    /// arrived after it.
    pub max_wait_ms: u64,
}

impl Default for ReorderConfig {
    fn default() -> Self {
        ReorderConfig {
            max_packets: 64,
            max_wait_ms: 50,
        }
    }
}

/// What [`Reorder::pop`] releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReorderEvent {
    /// The next packet in sequence order.
    Packet(RtpPacket),
    /// `lost` (at least 1) sequence numbers were given up on, or the sender restarted
    /// its numbering (then `lost` is the distance modulo 2^16 from the expected
    /// number). The packets that follow do not continue the ones before.
    Gap { lost: u16 },
}

/// Counters of a [`Reorder`] buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// Packets pushed.
    pub received: u64,
    /// Packets released by [`Reorder::pop`].
    pub released: u64,
    /// Packets dropped because one with the same sequence number is held.
    pub duplicates: u64,
    /// Packets dropped because their sequence number was already released or given
    /// up on (late or duplicate of a released one).
    pub late: u64,
    /// Packets dropped after a sequence number jump that the next packet did not
    /// confirm, or because the buffer was far over its limit.
    pub discarded: u64,
    /// Sequence numbers given up on.
    pub lost: u64,
    /// Sequence number restarts accepted.
    pub resyncs: u64,
}

/// Sequence number distance beyond which a packet is a jump rather than a
/// reordering or a loss (RFC 3550 A.1 MAX_DROPOUT).
const MAX_DROPOUT: u16 = 3000;
/// Backward distance within which a packet is late rather than a jump (RFC 3550 A.1
/// MAX_MISORDER).
const MAX_MISORDER: u16 = 100;

/// A jitter/reorder buffer over 16-bit RTP sequence numbers. Push packets as they
/// arrive and [`Reorder::pop`] until it returns `None` after each push (and when
/// [`Reorder::next_deadline_ms`] passes); `pop(u64::MAX)` drains everything held.
#[derive(Debug)]
pub struct Reorder {
    config: ReorderConfig,
    /// The next sequence number to release and its extended (never wrapping) number.
    next: Option<(u16, u64)>,
    /// Held packets by extended sequence number, with their arrival times.
    held: BTreeMap<u64, (RtpPacket, u64)>,
    /// Events decided but not yet popped (after a resync).
    ready: VecDeque<ReorderEvent>,
    /// A packet after a large sequence number jump, waiting for confirmation.
    probation: Option<(RtpPacket, u64)>,
    released_any: bool,
    stats: ReorderStats,
}

impl Reorder {
    pub fn new(config: ReorderConfig) -> Reorder {
        Reorder {
            config: ReorderConfig {
                max_packets: config.max_packets.max(1),
                max_wait_ms: config.max_wait_ms,
            },
            next: None,
            held: BTreeMap::new(),
            ready: VecDeque::new(),
            probation: None,
            released_any: false,
            stats: ReorderStats::default(),
        }
    }

    pub fn config(&self) -> ReorderConfig {
        self.config
    }

    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// Packets held (not counting one on probation after a jump).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.ready.is_empty()
    }

    /// Forgets everything held; the next packet starts a new sequence.
    pub fn reset(&mut self) {
        self.next = None;
        self.held.clear();
        self.ready.clear();
        self.probation = None;
        self.released_any = false;
    }

    /// Accepts a packet that arrived at `now_ms`.
    pub fn push(&mut self, packet: RtpPacket, now_ms: u64) {
        self.stats.received += 1;
        let seq = packet.sequence;
        let Some((next_seq, next_ext)) = self.next else {
            self.next = Some((seq, 1 << 32));
            self.held.insert(1 << 32, (packet, now_ms));
            return;
        };
        let ahead = seq.wrapping_sub(next_seq);
        let behind = next_seq.wrapping_sub(seq);
        if ahead <= MAX_DROPOUT {
            self.drop_probation();
            let ext = next_ext + u64::from(ahead);
            if self.held.contains_key(&ext) {
                self.stats.duplicates += 1;
            } else if self.held.len() >= self.config.max_packets.saturating_mul(4) {
                self.stats.discarded += 1;
            } else {
                self.held.insert(ext, (packet, now_ms));
            }
        } else if behind <= MAX_MISORDER {
            self.drop_probation();
            let earlier_start = next_ext.checked_sub(u64::from(behind)).filter(|_| {
                !self.released_any
                    && usize::from(behind) + self.held.len() <= self.config.max_packets
            });
            if let Some(ext) = earlier_start {
                // Nothing released yet: the first packet was not the first one sent.
                self.next = Some((seq, ext));
                self.held.insert(ext, (packet, now_ms));
            } else {
                self.stats.late += 1;
            }
        } else {
            match self.probation.take() {
                Some((first, first_arrival)) if first.sequence.wrapping_add(1) == seq => {
                    self.resync(first, first_arrival, packet, now_ms);
                }
                Some(_) => {
                    self.stats.discarded += 1;
                    self.probation = Some((packet, now_ms));
                }
                None => self.probation = Some((packet, now_ms)),
            }
        }
    }

    fn drop_probation(&mut self) {
        if self.probation.take().is_some() {
            self.stats.discarded += 1;
        }
    }

    /// The sender jumped to a new sequence: release everything held (with gaps) and
    /// continue from `first`.
    fn resync(&mut self, first: RtpPacket, first_arrival: u64, second: RtpPacket, now_ms: u64) {
        self.stats.resyncs += 1;
        let mut events = Vec::new();
        while let Some(event) = self.pop(u64::MAX) {
            events.push(event);
        }
        self.ready.extend(events);
        let Some((next_seq, next_ext)) = self.next else {
            return;
        };
        let lost = first.sequence.wrapping_sub(next_seq).max(1);
        self.stats.lost += u64::from(lost);
        self.ready.push_back(ReorderEvent::Gap { lost });
        self.next = Some((first.sequence, next_ext));
        self.held.insert(next_ext, (first, first_arrival));
        self.held.insert(next_ext + 1, (second, now_ms));
    }

    /// The next event, or `None` if the next packet is missing and still worth waiting
    /// for at `now_ms` (or nothing is held).
    pub fn pop(&mut self, now_ms: u64) -> Option<ReorderEvent> {
        if let Some(event) = self.ready.pop_front() {
            return Some(event);
        }
        let (next_seq, next_ext) = self.next?;
        if let Some((packet, _)) = self.held.remove(&next_ext) {
            self.next = Some((next_seq.wrapping_add(1), next_ext + 1));
            self.released_any = true;
            self.stats.released += 1;
            return Some(ReorderEvent::Packet(packet));
        }
        let (&first_ext, _) = self.held.first_key_value()?;
        let waiting_since = self.held.values().map(|(_, t)| *t).min()?;
        let full = self.held.len() >= self.config.max_packets;
        let expired = now_ms.saturating_sub(waiting_since) >= self.config.max_wait_ms;
        if !(full || expired) {
            return None;
        }
        let lost = u16::try_from(first_ext - next_ext).unwrap_or(u16::MAX);
        self.next = Some((next_seq.wrapping_add(lost), first_ext));
        self.stats.lost += u64::from(lost);
        Some(ReorderEvent::Gap { lost })
    }

    /// When [`Reorder::pop`] will give up on the missing packet it is waiting for, if
    /// it is waiting.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if !self.ready.is_empty() {
            return Some(0);
        }
        let (_, next_ext) = self.next?;
        if self.held.contains_key(&next_ext) {
            return Some(0);
        }
        let waiting_since = self.held.values().map(|(_, t)| *t).min()?;
        Some(waiting_since.saturating_add(self.config.max_wait_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(sequence: u16) -> RtpPacket {
        RtpPacket {
            marker: false,
            payload_type: 96,
            sequence,
            timestamp: u32::from(sequence) * 10,
            ssrc: 0x1234_5678,
            csrcs: Vec::new(),
            extension: None,
            payload: Bytes::from(sequence.to_be_bytes().to_vec()),
        }
    }

    fn drain(reorder: &mut Reorder, now_ms: u64) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(event) = reorder.pop(now_ms) {
            out.push(match event {
                ReorderEvent::Packet(p) => p.sequence.to_string(),
                ReorderEvent::Gap { lost } => format!("gap{lost}"),
            });
        }
        out
    }

    #[test]
    fn parses_a_known_packet() {
        // V=2, P=0, X=0, CC=0, M=1, PT=96, seq=0x1234, ts=0xDEADBEEF, ssrc=0x01020304.
        let bytes = [
            0x80, 0xE0, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 0x65, 0x88,
        ];
        let p = RtpPacket::parse_slice(&bytes).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 96);
        assert_eq!(p.sequence, 0x1234);
        assert_eq!(p.timestamp, 0xDEAD_BEEF);
        assert_eq!(p.ssrc, 0x0102_0304);
        assert!(p.csrcs.is_empty());
        assert_eq!(p.extension, None);
        assert_eq!(&p.payload[..], &[0x65, 0x88]);
        assert_eq!(p.to_vec(), bytes);
    }

    #[test]
    fn parses_csrcs_extension_and_padding() {
        let mut bytes = vec![0xB2, 0x60, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend_from_slice(&[0, 0, 0, 10, 0, 0, 0, 11]); // two CSRCs
        bytes.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // one-word extension
        bytes.extend_from_slice(b"payload");
        bytes.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let p = RtpPacket::parse(Bytes::from(bytes)).unwrap();
        assert_eq!(p.csrcs, vec![10, 11]);
        let ext = p.extension.clone().unwrap();
        assert_eq!(ext.profile, 0xBEDE);
        assert_eq!(&ext.data[..], &[0x10, 0xAA, 0, 0]);
        assert_eq!(&p.payload[..], b"payload");
        assert!(!p.marker);
        // Written back without padding, parsed again the same.
        assert_eq!(RtpPacket::parse_slice(&p.to_vec()).unwrap(), p);
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(
            RtpPacket::parse_slice(&[0x80; 11]),
            Err(RtpError::TooShort(11))
        );
        assert_eq!(
            RtpPacket::parse_slice(&[0x40; 12]),
            Err(RtpError::Version(1))
        );
        // CC=15 but no CSRCs.
        assert_eq!(
            RtpPacket::parse_slice(&[0x8F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RtpError::HeaderOverrun)
        );
        // Extension length overrun.
        let mut ext = vec![0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        ext.extend_from_slice(&[0; 8]);
        assert_eq!(RtpPacket::parse_slice(&ext), Err(RtpError::HeaderOverrun));
        // Padding of 0 and padding longer than the payload.
        let mut pad = vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!(matches!(
            RtpPacket::parse_slice(&pad),
            Err(RtpError::Padding { .. })
        ));
        *pad.last_mut().unwrap() = 3;
        assert!(matches!(
            RtpPacket::parse_slice(&pad),
            Err(RtpError::Padding { .. })
        ));
        *pad.last_mut().unwrap() = 2;
        assert!(RtpPacket::parse_slice(&pad).unwrap().payload.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len % 64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = RtpPacket::parse_slice(&bytes);
            let _ = parse_rtcp(&bytes);
            let mut b = bytes.clone();
            if let Some(first) = b.first_mut() {
                *first = 0x80 | (*first & 0x3F);
            }
            let _ = RtpPacket::parse_slice(&b);
            let _ = parse_rtcp(&b);
        }
    }

    #[test]
    fn ntp_conversion() {
        // 2024-01-01T00:00:00Z = 1704067200 s; NTP seconds = that + 2208988800.
        let ntp = (3_913_056_000u64 << 32) | 0x8000_0000;
        assert_eq!(ntp_to_unix_ms(ntp), 1_704_067_200_500);
        assert_eq!(unix_ms_to_ntp(1_704_067_200_500), ntp);
        for ms in [0i64, 1, 999, 1_704_067_200_123, 2_085_978_495_999] {
            assert_eq!(ntp_to_unix_ms(unix_ms_to_ntp(ms)), ms);
        }
        // Outside NTP era 0 (1900..2036): saturated.
        assert_eq!(unix_ms_to_ntp(-NTP_UNIX_OFFSET_S * 1000 - 1), 0);
        assert_eq!(unix_ms_to_ntp(4_000_000_000_000), u64::MAX);
    }

    #[test]
    fn compound_rtcp_with_sender_report() {
        let sr = SenderReport {
            ssrc: 0xAABB_CCDD,
            ntp_timestamp: unix_ms_to_ntp(1_700_000_000_250),
            unix_ms: 1_700_000_000_250,
            rtp_timestamp: 90_000,
            packet_count: 7,
            octet_count: 7000,
        };
        let mut compound = Vec::new();
        // RR with no report blocks, then the SR, then an SDES CNAME.
        compound.extend_from_slice(&[0x80, 201, 0, 1, 0, 0, 0, 1]);
        sr.write(&mut compound);
        compound.extend_from_slice(&[0x81, 202, 0, 2, 0xAA, 0xBB, 0xCC, 0xDD, 1, 1, b'x', 0]);
        assert_eq!(parse_rtcp(&compound), Ok(vec![sr]));
        // An SR with a report block (length 12) is read the same.
        let mut with_block = Vec::new();
        sr.write(&mut with_block);
        with_block[0] = 0x81;
        with_block[3] = 12;
        with_block.extend_from_slice(&[0; 24]);
        assert_eq!(parse_rtcp(&with_block), Ok(vec![sr]));
        // Truncated compound packets are errors.
        assert_eq!(
            parse_rtcp(&compound[..compound.len() - 1]),
            Err(RtpError::RtcpLength)
        );
        assert_eq!(parse_rtcp(&[0x80, 200]), Err(RtpError::TooShort(2)));
        assert!(is_rtcp(&compound));
        assert!(!is_rtcp(&packet(1).to_vec()));
    }

    #[test]
    fn in_order_packets_pass_through() {
        let mut r = Reorder::new(ReorderConfig::default());
        for seq in 10..20 {
            r.push(packet(seq), 0);
            assert_eq!(drain(&mut r, 0), vec![seq.to_string()]);
        }
        assert_eq!(r.stats().released, 10);
        assert!(r.is_empty());
    }

    #[test]
    fn sequence_wraps_from_65535_to_0() {
        let mut r = Reorder::new(ReorderConfig::default());
        let mut out = Vec::new();
        for seq in [65533u16, 65534, 0, 65535, 1, 2] {
            r.push(packet(seq), 0);
            out.extend(drain(&mut r, 0));
        }
        assert_eq!(out, ["65533", "65534", "65535", "0", "1", "2"]);
        assert_eq!(r.stats().lost, 0);
    }

    #[test]
    fn reorders_within_the_window_and_drops_duplicates_and_late_packets() {
        let mut r = Reorder::new(ReorderConfig::default());
        r.push(packet(1), 0);
        assert_eq!(drain(&mut r, 0), ["1"]);
        r.push(packet(3), 1);
        r.push(packet(4), 2);
        r.push(packet(4), 2);
        assert!(drain(&mut r, 10).is_empty());
        assert_eq!(r.next_deadline_ms(), Some(51));
        r.push(packet(2), 20);
        assert_eq!(drain(&mut r, 20), ["2", "3", "4"]);
        r.push(packet(3), 21);
        r.push(packet(60000), 21); // far in the past and not confirmed: discarded later
        assert!(drain(&mut r, 21).is_empty());
        let stats = r.stats();
        assert_eq!(stats.duplicates, 1);
        assert_eq!(stats.late, 1);
        assert_eq!(stats.lost, 0);
    }

    #[test]
    fn gives_up_after_the_wait_and_reports_the_gap() {
        let mut r = Reorder::new(ReorderConfig {
            max_packets: 64,
            max_wait_ms: 50,
        });
        r.push(packet(100), 1000);
        assert_eq!(drain(&mut r, 1000), ["100"]);
        r.push(packet(103), 1010);
        r.push(packet(104), 1020);
        assert!(drain(&mut r, 1059).is_empty());
        assert_eq!(drain(&mut r, 1060), ["gap2", "103", "104"]);
        // The lost packets arriving later are dropped.
        r.push(packet(101), 1070);
        assert!(drain(&mut r, 1070).is_empty());
        assert_eq!(r.stats().lost, 2);
        assert_eq!(r.stats().late, 1);
    }

    #[test]
    fn gives_up_when_the_window_is_full() {
        let mut r = Reorder::new(ReorderConfig {
            max_packets: 4,
            max_wait_ms: 1_000_000,
        });
        r.push(packet(65534), 0);
        assert_eq!(drain(&mut r, 0), ["65534"]);
        for seq in [1u16, 2, 3] {
            r.push(packet(seq), 0);
            assert!(drain(&mut r, 0).is_empty());
        }
        r.push(packet(4), 0);
        assert_eq!(drain(&mut r, 0), ["gap2", "1", "2", "3", "4"]);
    }

    #[test]
    fn start_out_of_order_is_tolerated() {
        let mut r = Reorder::new(ReorderConfig::default());
        r.push(packet(5), 0);
        r.push(packet(4), 0);
        assert_eq!(drain(&mut r, 0), ["4", "5"]);
    }

    #[test]
    fn sequence_restart_is_confirmed_by_the_next_packet() {
        let mut r = Reorder::new(ReorderConfig::default());
        r.push(packet(1000), 0);
        r.push(packet(1001), 0);
        assert_eq!(drain(&mut r, 0), ["1000", "1001"]);
        r.push(packet(20000), 1);
        assert!(drain(&mut r, 1).is_empty());
        r.push(packet(20001), 2);
        assert_eq!(drain(&mut r, 2), ["gap18998", "20000", "20001"]);
        r.push(packet(20002), 3);
        assert_eq!(drain(&mut r, 3), ["20002"]);
        assert_eq!(r.stats().resyncs, 1);
    }

    #[test]
    fn pop_with_max_time_drains() {
        let mut r = Reorder::new(ReorderConfig::default());
        for seq in [1u16, 3, 6] {
            r.push(packet(seq), 0);
        }
        assert_eq!(drain(&mut r, u64::MAX), ["1", "gap1", "3", "gap2", "6"]);
        assert_eq!(r.next_deadline_ms(), None);
    }
}
