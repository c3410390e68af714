//! AAC over RTP in the `mpeg4-generic` payload format (RFC 3640, "RTP Payload Format
//! for Transport of MPEG-4 Elementary Streams"), modes AAC-hbr and AAC-lbr (3.3.5,
//! 3.3.6) and any other mode with a `sizeLength`: the AU Header Section (3.2.1) with
//! AU-size, AU-Index/AU-Index-delta and the optional CTS/DTS deltas, RAP flag and
//! stream state; several access units per packet; an access unit fragmented over
//! several packets (3.2.3: the AU-size of the whole unit, the marker bit on the last
//! fragment). Auxiliary data sections are not supported (`auxiliaryDataSizeLength`).
//!
//! The configuration (`config=`) is the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1)
//! and is the codec private data as is.

use std::collections::VecDeque;

use super::{AccessUnit, BitReader, DepacketizeError, MAX_ACCESS_UNIT_BYTES};
use crate::media::rtp::RtpPacket;
use crate::media::samples::AudioSpecificConfig;
use crate::media::sdp::RtpCodec;

/// The `mpeg4-generic` parameters the depacketizer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacParams {
    /// The AudioSpecificConfig (`config`).
    pub config: Vec<u8>,
    /// The RTP clock rate.
    pub clock_rate: u32,
    pub size_length: u32,
    pub index_length: u32,
    pub index_delta_length: u32,
    pub cts_delta_length: u32,
    pub dts_delta_length: u32,
    pub random_access_indication: bool,
    pub stream_state_indication: u32,
    /// RTP clock ticks per access unit (`constantDuration`, else 1024 samples of the
    /// AudioSpecificConfig's rate expressed in the RTP clock).
    pub frame_duration: u32,
}

impl AacParams {
    /// AAC-hbr (sizeLength 13, indexLength 3, indexDeltaLength 3).
    pub fn hbr(config: &[u8], clock_rate: u32) -> Result<AacParams, DepacketizeError> {
        let asc = parse_config(config)?;
        Ok(AacParams {
            config: config.to_vec(),
            clock_rate,
            size_length: 13,
            index_length: 3,
            index_delta_length: 3,
            cts_delta_length: 0,
            dts_delta_length: 0,
            random_access_indication: false,
            stream_state_indication: 0,
            frame_duration: default_frame_duration(&asc, clock_rate),
        })
    }
}

fn parse_config(config: &[u8]) -> Result<AudioSpecificConfig, DepacketizeError> {
    AudioSpecificConfig::parse(config)
        .map_err(|e| DepacketizeError::Unsupported(format!("AAC config: {e}")))
}

/// 1024 samples at the AudioSpecificConfig's (core) rate, in RTP clock ticks (2048 for
/// implicitly signalled HE-AAC whose RTP clock runs at the output rate).
fn default_frame_duration(asc: &AudioSpecificConfig, clock_rate: u32) -> u32 {
    let ticks = 1024 * u64::from(clock_rate) / u64::from(asc.sample_rate.max(1));
    u32::try_from(ticks).unwrap_or(1024).max(1)
}

/// An access unit arriving in fragments.
#[derive(Debug)]
struct Partial {
    timestamp: u32,
    size: usize,
    data: Vec<u8>,
}

/// Depacketizes one `mpeg4-generic` AAC stream.
#[derive(Debug)]
pub struct AacDepacketizer {
    params: AacParams,
    asc: AudioSpecificConfig,
    partial: Option<Partial>,
    last_sequence: Option<u16>,
    dropped: bool,
    out: VecDeque<AccessUnit>,
}

impl AacDepacketizer {
    pub fn new(params: AacParams) -> Result<AacDepacketizer, DepacketizeError> {
        let asc = parse_config(&params.config)?;
        if params.size_length == 0 || params.size_length > 32 {
            return Err(DepacketizeError::Unsupported(format!(
                "AAC sizeLength {}",
                params.size_length
            )));
        }
        for (name, bits) in [
            ("indexLength", params.index_length),
            ("indexDeltaLength", params.index_delta_length),
            ("CTSDeltaLength", params.cts_delta_length),
            ("DTSDeltaLength", params.dts_delta_length),
            ("streamStateIndication", params.stream_state_indication),
        ] {
            if bits > 32 {
                return Err(DepacketizeError::Unsupported(format!("AAC {name} {bits}")));
            }
        }
        Ok(AacDepacketizer {
            params,
            asc,
            partial: None,
            last_sequence: None,
            dropped: false,
            out: VecDeque::new(),
        })
    }

    /// A depacketizer for an SDP media description: needs `config` and `sizeLength`;
    /// `mode` must be absent, `AAC-hbr`, `AAC-lbr` or another mode with a sizeLength;
    /// `auxiliaryDataSizeLength` must be absent or 0.
    pub fn from_sdp(codec: &RtpCodec) -> Result<AacDepacketizer, DepacketizeError> {
        let unsupported = |what: &str| DepacketizeError::Unsupported(what.to_string());
        let config = codec
            .config
            .as_deref()
            .ok_or_else(|| unsupported("mpeg4-generic without config"))?;
        let size_length = codec
            .size_length
            .ok_or_else(|| unsupported("mpeg4-generic without sizeLength"))?;
        let number = |key: &str| -> Result<u32, DepacketizeError> {
            match codec
                .fmtp_param(key)
                .map(str::trim)
                .filter(|v| !v.is_empty())
            {
                None => Ok(0),
                Some(v) => v
                    .parse()
                    .map_err(|_| DepacketizeError::Unsupported(format!("{key}={v}"))),
            }
        };
        if number("auxiliarydatasizelength")? != 0 {
            return Err(unsupported("mpeg4-generic auxiliary data"));
        }
        let asc = parse_config(config)?;
        let constant_duration = number("constantduration")?;
        Self::new(AacParams {
            config: config.to_vec(),
            clock_rate: codec.clock_rate,
            size_length,
            index_length: codec.index_length.unwrap_or(0),
            index_delta_length: codec.index_delta_length.unwrap_or(0),
            cts_delta_length: number("ctsdeltalength")?,
            dts_delta_length: number("dtsdeltalength")?,
            random_access_indication: number("randomaccessindication")? != 0,
            stream_state_indication: number("streamstateindication")?,
            frame_duration: if constant_duration > 0 {
                constant_duration
            } else {
                default_frame_duration(&asc, codec.clock_rate)
            },
        })
    }

    /// The AudioSpecificConfig.
    pub fn codec_private(&self) -> Vec<u8> {
        self.params.config.clone()
    }

    /// The (core) sample rate of the AudioSpecificConfig.
    pub fn sample_rate(&self) -> u32 {
        self.asc.sample_rate
    }

    /// The channel count of the AudioSpecificConfig's channel configuration (0 when
    /// defined in the bitstream; configuration 7 is 8 channels).
    pub fn channels(&self) -> u16 {
        match self.asc.channel_configuration {
            7 => 8,
            c => u16::from(c),
        }
    }

    pub fn params(&self) -> &AacParams {
        &self.params
    }

    /// Packets were lost: drop a partial access unit; the next one is marked.
    pub fn gap(&mut self) {
        self.loss();
        self.last_sequence = None;
    }

    fn loss(&mut self) {
        self.partial = None;
        self.dropped = true;
    }

    /// End of stream: an unfinished fragmented access unit is dropped.
    pub fn flush(&mut self) {
        if self.partial.is_some() {
            self.loss();
        }
    }

    pub fn pop(&mut self) -> Option<AccessUnit> {
        self.out.pop_front()
    }

    fn emit(&mut self, rtp_timestamp: u32, data: Vec<u8>) {
        self.out.push_back(AccessUnit {
            rtp_timestamp,
            keyframe: true,
            data,
            discontinuity: std::mem::take(&mut self.dropped),
        });
    }

    /// Feeds one RTP packet. On an error the packet counts as lost.
    pub fn push(&mut self, packet: &RtpPacket) -> Result<(), DepacketizeError> {
        if let Some(last) = self.last_sequence
            && last.wrapping_add(1) != packet.sequence
        {
            self.loss();
        }
        self.last_sequence = Some(packet.sequence);
        let result = self.payload(packet);
        if result.is_err() {
            self.loss();
        }
        result
    }

    fn payload(&mut self, packet: &RtpPacket) -> Result<(), DepacketizeError> {
        let malformed = |what: &str| DepacketizeError::Malformed(format!("AAC: {what}"));
        let payload = &packet.payload[..];
        let [hi, lo, rest @ ..] = payload else {
            return Err(malformed("no AU-headers-length"));
        };
        let header_bits = usize::from(u16::from_be_bytes([*hi, *lo]));
        let (section, data) = rest
            .split_at_checked(header_bits.div_ceil(8))
            .ok_or_else(|| malformed("AU header section overruns the packet"))?;
        let headers = self.au_headers(section, header_bits)?;
        let Some(&(first_size, first_index)) = headers.first() else {
            return Err(malformed("no AU header"));
        };

        // A packet that does not continue a fragmented access unit means its last
        // fragments were lost.
        if let Some(partial) = &self.partial
            && (headers.len() != 1
                || partial.timestamp != packet.timestamp
                || partial.size != first_size)
        {
            self.loss();
        }
        // A fragment of one access unit (3.2.3): one AU header with the whole size.
        if headers.len() == 1 && (first_size > data.len() || self.partial.is_some()) {
            if first_size > MAX_ACCESS_UNIT_BYTES {
                return Err(DepacketizeError::TooLarge);
            }
            let partial = self.partial.get_or_insert_with(|| Partial {
                timestamp: packet.timestamp,
                size: first_size,
                data: Vec::with_capacity(first_size),
            });
            if partial.data.len() + data.len() > partial.size {
                return Err(malformed("fragments exceed the AU-size"));
            }
            partial.data.extend_from_slice(data);
            if !packet.marker {
                return Ok(());
            }
            let Some(done) = self.partial.take() else {
                return Ok(());
            };
            if done.data.len() != done.size {
                return Err(malformed("last fragment before the AU-size is reached"));
            }
            self.emit(done.timestamp, done.data);
            return Ok(());
        }

        let mut rest = data;
        let mut units = Vec::with_capacity(headers.len());
        for &(size, index) in &headers {
            let (unit, tail) = rest
                .split_at_checked(size)
                .ok_or_else(|| malformed("access units overrun the packet"))?;
            let offset = index.wrapping_sub(first_index);
            let timestamp = packet
                .timestamp
                .wrapping_add(offset.wrapping_mul(self.params.frame_duration));
            units.push((timestamp, unit));
            rest = tail;
        }
        for (timestamp, unit) in units {
            if !unit.is_empty() {
                self.emit(timestamp, unit.to_vec());
            }
        }
        Ok(())
    }

    /// The AU headers: (AU-size, AU-Index) with AU-Index accumulated from the deltas.
    fn au_headers(
        &self,
        section: &[u8],
        header_bits: usize,
    ) -> Result<Vec<(usize, u32)>, DepacketizeError> {
        let p = &self.params;
        let mut r = BitReader::new(section);
        let mut headers: Vec<(usize, u32)> = Vec::new();
        let mut index = 0u32;
        while r.pos < header_bits {
            let truncated = || DepacketizeError::Malformed("AAC: AU header truncated".into());
            let size = r.bits(p.size_length).ok_or_else(truncated)? as usize;
            if headers.is_empty() {
                index = r.bits(p.index_length).ok_or_else(truncated)?;
            } else {
                let delta = r.bits(p.index_delta_length).ok_or_else(truncated)?;
                index = index.wrapping_add(1).wrapping_add(delta);
            }
            if p.cts_delta_length > 0 && r.bit().ok_or_else(truncated)? {
                r.bits(p.cts_delta_length).ok_or_else(truncated)?;
            }
            if p.dts_delta_length > 0 && r.bit().ok_or_else(truncated)? {
                r.bits(p.dts_delta_length).ok_or_else(truncated)?;
            }
            if p.random_access_indication {
                r.bit().ok_or_else(truncated)?;
            }
            r.bits(p.stream_state_indication).ok_or_else(truncated)?;
            if r.pos > header_bits {
                return Err(truncated());
            }
            headers.push((size, index));
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::super::h264::tests::rtp;
    use super::*;

    /// AAC LC, 48 kHz, stereo.
    const ASC: [u8; 2] = [0x11, 0x90];

    fn hbr() -> AacDepacketizer {
        AacDepacketizer::new(AacParams::hbr(&ASC, 48_000).unwrap()).unwrap()
    }

    /// An AAC-hbr payload: 16-bit AU-headers-length, 16-bit headers (13-bit size,
    /// 3-bit index/delta 0), then the units.
    fn hbr_payload(sizes: &[usize], data: &[u8]) -> Vec<u8> {
        let mut out = ((sizes.len() * 16) as u16).to_be_bytes().to_vec();
        for size in sizes {
            out.extend_from_slice(&((*size as u16) << 3).to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn drain(d: &mut AacDepacketizer) -> Vec<AccessUnit> {
        std::iter::from_fn(|| d.pop()).collect()
    }

    #[test]
    fn two_access_units_in_one_packet() {
        let mut d = hbr();
        assert_eq!((d.sample_rate(), d.channels()), (48_000, 2));
        assert_eq!(d.codec_private(), ASC);
        // Known bytes: headers-length 0x0020 (2 headers), sizes 3 and 2.
        let payload = [
            0x00, 0x20, 0x00, 0x18, 0x00, 0x10, 0xA1, 0xA2, 0xA3, 0xB1, 0xB2,
        ];
        assert_eq!(payload.to_vec(), hbr_payload(&[3, 2], &payload[6..]));
        d.push(&rtp(7, 48_000, true, &payload)).unwrap();
        let aus = drain(&mut d);
        assert_eq!(
            aus,
            [
                AccessUnit {
                    rtp_timestamp: 48_000,
                    keyframe: true,
                    data: vec![0xA1, 0xA2, 0xA3],
                    discontinuity: false
                },
                AccessUnit {
                    rtp_timestamp: 49_024,
                    keyframe: true,
                    data: vec![0xB1, 0xB2],
                    discontinuity: false
                },
            ]
        );
    }

    #[test]
    fn fragmented_access_unit() {
        let mut d = hbr();
        let unit: Vec<u8> = (0..10).collect();
        d.push(&rtp(1, 0, false, &hbr_payload(&[10], &unit[..4])))
            .unwrap();
        d.push(&rtp(2, 0, false, &hbr_payload(&[10], &unit[4..8])))
            .unwrap();
        assert!(d.pop().is_none());
        d.push(&rtp(3, 0, true, &hbr_payload(&[10], &unit[8..])))
            .unwrap();
        assert_eq!(drain(&mut d)[0].data, unit);
        // A lost middle fragment: the unit is dropped, the next one is marked.
        d.push(&rtp(4, 1024, false, &hbr_payload(&[10], &unit[..4])))
            .unwrap();
        d.push(&rtp(6, 1024, true, &hbr_payload(&[10], &unit[8..])))
            .unwrap_err();
        d.push(&rtp(7, 2048, true, &hbr_payload(&[2], &[1, 2])))
            .unwrap();
        let aus = drain(&mut d);
        assert_eq!(aus.len(), 1);
        assert_eq!(aus[0].rtp_timestamp, 2048);
        assert!(aus[0].discontinuity);
        // Marker before the whole size arrived.
        d.push(&rtp(8, 3072, false, &hbr_payload(&[10], &unit[..4])))
            .unwrap();
        d.push(&rtp(9, 3072, true, &hbr_payload(&[10], &unit[4..8])))
            .unwrap_err();
        assert!(d.pop().is_none());
    }

    #[test]
    fn sdp_parameters() {
        let mut codec = super::super::h264::tests::sdp_codec(&[]);
        codec.codec = crate::media::samples::Codec::Aac;
        codec.clock_rate = 44_100;
        codec.config = Some(vec![0x12, 0x10]);
        assert!(AacDepacketizer::from_sdp(&codec).is_err()); // no sizeLength
        codec.size_length = Some(13);
        codec.index_length = Some(3);
        codec.index_delta_length = Some(3);
        let d = AacDepacketizer::from_sdp(&codec).unwrap();
        assert_eq!((d.sample_rate(), d.channels()), (44_100, 2));
        assert_eq!(d.params().frame_duration, 1024);
        // HE-AAC signalled implicitly: 24 kHz core, 48 kHz RTP clock.
        codec.config = Some(vec![0x13, 0x10]);
        codec.clock_rate = 48_000;
        assert_eq!(
            AacDepacketizer::from_sdp(&codec)
                .unwrap()
                .params()
                .frame_duration,
            2048
        );
        codec.config = Some(vec![0x00]);
        assert!(AacDepacketizer::from_sdp(&codec).is_err());
        codec.config = None;
        assert!(AacDepacketizer::from_sdp(&codec).is_err());
    }

    #[test]
    fn malformed_packets() {
        let mut d = hbr();
        for payload in [
            &[][..],
            &[0x00],
            &[0x00, 0x00],                                     // no header
            &[0x00, 0x20, 0x00],                               // header section overrun
            &[0x00, 0x0C, 0x00, 0x10],                         // 12 bits: header truncated
            &[0x00, 0x20, 0x00, 0x18, 0x00, 0x10, 1, 2, 3, 4], // units overrun
        ] {
            assert!(d.push(&rtp(1, 0, true, payload)).is_err(), "{payload:?}");
        }
    }
}
