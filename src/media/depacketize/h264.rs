//! H.264 over RTP (RFC 6184, "RTP Payload Format for H.264 Video"), single NAL unit
//! and non-interleaved modes: single NAL unit packets, STAP-A (5.7.1) and FU-A (5.8).
//! STAP-B, MTAP16/24 and FU-B (interleaved mode) are reported as unsupported and
//! treated as a loss; NAL types 0, 30 and 31 are skipped.
//!
//! Also the sequence parameter set syntax (ITU-T H.264 7.3.2.1.1) as far as the
//! picture size, and the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1).

use super::{
    Assembler, BitReader, DepacketizeError, NalKind, PpsTable, VideoAssembly, rbsp, split_aggregate,
};
use crate::media::rtp::RtpPacket;
use crate::media::sdp::RtpCodec;

/// NAL unit types (H.264 table 7-1) and RTP packet types (RFC 6184 table 1).
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_FILLER: u8 = 12;
pub const STAP_A: u8 = 24;
pub const STAP_B: u8 = 25;
pub const MTAP16: u8 = 26;
pub const MTAP24: u8 = 27;
pub const FU_A: u8 = 28;
pub const FU_B: u8 = 29;

/// Depacketizes one H.264 RTP stream. Push packets in sequence order (after a
/// [`crate::media::rtp::Reorder`]), call [`H264Depacketizer::gap`] on losses, pop
/// access units.
#[derive(Debug)]
pub struct H264Depacketizer {
    assembler: Assembler,
    sps: Option<Vec<u8>>,
    /// PPS NAL units by pps_id.
    pps: PpsTable,
}

impl Default for H264Depacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl H264Depacketizer {
    /// A depacketizer that knows no parameter sets yet.
    pub fn new() -> H264Depacketizer {
        H264Depacketizer {
            assembler: Assembler::new(),
            sps: None,
            pps: PpsTable::default(),
        }
    }

    /// A depacketizer for an SDP media description (its `sprop-parameter-sets`).
    /// `packetization-mode=2` (interleaved) is unsupported.
    pub fn from_sdp(codec: &RtpCodec) -> Result<H264Depacketizer, DepacketizeError> {
        if codec.packetization_mode.is_some_and(|m| m > 1) {
            return Err(DepacketizeError::Unsupported(
                "H.264 packetization-mode=2 (interleaved)".into(),
            ));
        }
        let mut out = Self::new();
        for nal in &codec.sprop_parameter_sets {
            out.add_parameter_set(nal);
        }
        Ok(out)
    }

    /// Remembers an SPS or PPS NAL unit (other NAL units and SPS that do not parse are
    /// ignored).
    pub fn add_parameter_set(&mut self, nal: &[u8]) {
        match nal.first().map(|h| h & 0x1F) {
            Some(NAL_SPS) if parse_sps(nal).is_some() => self.sps = Some(nal.to_vec()),
            Some(NAL_PPS) => {
                let Some(id) = BitReader::new(&rbsp(nal.get(1..).unwrap_or_default())).ue() else {
                    return;
                };
                self.pps.set(id, nal);
            }
            _ => {}
        }
    }

    /// Feeds one RTP packet. On an error the packet counts as lost.
    pub fn push(&mut self, packet: &RtpPacket) -> Result<(), DepacketizeError> {
        self.assembler
            .begin_packet(packet, self.has_parameter_sets());
        let result = self.payload(packet);
        self.assembler.end_packet(packet, self.has_parameter_sets());
        result
    }

    fn payload(&mut self, packet: &RtpPacket) -> Result<(), DepacketizeError> {
        let payload = &packet.payload[..];
        let ts = packet.timestamp;
        let Some(&header) = payload.first() else {
            self.assembler.loss();
            return Err(DepacketizeError::Malformed("empty H.264 payload".into()));
        };
        if header & 0x80 != 0 {
            self.assembler.loss();
            return Err(DepacketizeError::Malformed(
                "H.264 forbidden_zero_bit set".into(),
            ));
        }
        match header & 0x1F {
            1..=23 => self.nal(ts, payload),
            STAP_A => {
                let Some(nals) = split_aggregate(payload.get(1..).unwrap_or_default(), 1) else {
                    self.assembler.loss();
                    return Err(DepacketizeError::Malformed(
                        "STAP-A NAL unit size overruns the packet".into(),
                    ));
                };
                for nal in nals {
                    self.nal(ts, nal)?;
                }
                Ok(())
            }
            FU_A => {
                let Some(&fu_header) = payload.get(1) else {
                    self.assembler.loss();
                    return Err(DepacketizeError::Malformed("FU-A without FU header".into()));
                };
                let nal_type = fu_header & 0x1F;
                if !(1..=23).contains(&nal_type) {
                    self.assembler.loss();
                    return Err(DepacketizeError::Malformed(format!(
                        "FU-A carries NAL unit type {nal_type}"
                    )));
                }
                let reconstructed = (header & 0xE0) | nal_type;
                let data = payload.get(2..).unwrap_or_default();
                let start = fu_header & 0x80 != 0;
                let end = fu_header & 0x40 != 0;
                match self
                    .assembler
                    .fragment(ts, start, end, nal_type, &[reconstructed], data)?
                {
                    Some(nal) => self.nal(ts, &nal),
                    None => Ok(()),
                }
            }
            kind @ (STAP_B | MTAP16 | MTAP24 | FU_B) => {
                self.assembler.loss();
                let name = match kind {
                    STAP_B => "STAP-B",
                    MTAP16 => "MTAP16",
                    MTAP24 => "MTAP24",
                    _ => "FU-B",
                };
                Err(DepacketizeError::Unsupported(format!(
                    "H.264 {name} (interleaved mode)"
                )))
            }
            _ => Ok(()), // 0, 30, 31: undefined, ignored (RFC 6184 5.2)
        }
    }

    /// One complete NAL unit.
    fn nal(&mut self, ts: u32, nal: &[u8]) -> Result<(), DepacketizeError> {
        let Some(&header) = nal.first() else {
            return Ok(());
        };
        let nal_type = header & 0x1F;
        match nal_type {
            NAL_SPS | NAL_PPS => self.add_parameter_set(nal),
            NAL_FILLER => return Ok(()),
            _ => {}
        }
        let kind = NalKind {
            vcl: (1..=5).contains(&nal_type),
            keyframe: nal_type == NAL_IDR,
        };
        self.assembler.add_nal(ts, nal, kind)
    }

    /// The AVCDecoderConfigurationRecord of the current SPS and the known PPS.
    pub fn codec_private(&self) -> Option<Vec<u8>> {
        let sps = self.sps.as_deref()?;
        let pps: Vec<&[u8]> = self.pps.iter().collect();
        avc_decoder_configuration_record(sps, &pps)
    }

    /// Width and height (after cropping) from the current SPS.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        let sps = parse_sps(self.sps.as_deref()?)?;
        Some((sps.width, sps.height))
    }

    /// The current SPS NAL unit.
    pub fn sps(&self) -> Option<&[u8]> {
        self.sps.as_deref()
    }

    /// The known PPS NAL units.
    pub fn pps(&self) -> impl Iterator<Item = &[u8]> {
        self.pps.iter()
    }
}

/// What the depacketizer reads from a sequence parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Sps {
    pub profile_idc: u8,
    /// constraint_set0..5_flag and the reserved bits (the byte after profile_idc).
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub seq_parameter_set_id: u32,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u32,
    pub bit_depth_luma_minus8: u32,
    pub bit_depth_chroma_minus8: u32,
    pub frame_mbs_only: bool,
    /// Luma width and height after frame cropping.
    pub width: u32,
    pub height: u32,
}

/// Profiles whose SPS has chroma_format_idc, bit depths and scaling matrices.
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

/// Parses an SPS NAL unit (header byte included) up to the frame cropping.
pub fn parse_sps(nal: &[u8]) -> Option<H264Sps> {
    if nal.first()? & 0x1F != NAL_SPS {
        return None;
    }
    let data = rbsp(nal.get(1..)?);
    let mut r = BitReader::new(&data);
    let profile_idc = r.bits(8)? as u8;
    let constraint_flags = r.bits(8)? as u8;
    let level_idc = r.bits(8)? as u8;
    let seq_parameter_set_id = r.ue().filter(|id| *id <= 31)?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    let (mut bit_depth_luma_minus8, mut bit_depth_chroma_minus8) = (0, 0);
    if has_chroma_info(profile_idc) {
        chroma_format_idc = r.ue().filter(|c| *c <= 3)?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        bit_depth_luma_minus8 = r.ue().filter(|d| *d <= 6)?;
        bit_depth_chroma_minus8 = r.ue().filter(|d| *d <= 6)?;
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            // seq_scaling_matrix_present_flag
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue().filter(|n| *n <= 255)?;
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? {
        left = r.ue()?.into();
        right = r.ue()?.into();
        top = r.ue()?.into();
        bottom = r.ue()?.into();
    }
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_x, crop_y) = match chroma_array_type {
        0 => (1, field_factor),
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor),
    };
    let width = (width_mbs * 16).checked_sub(crop_x * (left + right))?;
    let height = (height_map_units * 16 * field_factor).checked_sub(crop_y * (top + bottom))?;
    Some(H264Sps {
        profile_idc,
        constraint_flags,
        level_idc,
        seq_parameter_set_id,
        chroma_format_idc,
        bit_depth_luma_minus8,
        bit_depth_chroma_minus8,
        frame_mbs_only,
        width: u32::try_from(width).ok().filter(|w| *w > 0)?,
        height: u32::try_from(height).ok().filter(|h| *h > 0)?,
    })
}

/// scaling_list() (H.264 7.3.2.1.1.1), values discarded.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = i64::from(r.se()?);
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1.2) with 4-byte NAL unit
/// lengths, one SPS and the given PPS (the high-profile chroma/bit depth fields
/// included for profiles 100, 110, 122 and 144). `None` if the SPS does not parse or
/// a parameter set is longer than 65535 bytes.
pub fn avc_decoder_configuration_record(sps: &[u8], pps: &[&[u8]]) -> Option<Vec<u8>> {
    let info = parse_sps(sps)?;
    let pps_count = u8::try_from(pps.len()).ok()?;
    let mut out = vec![
        1,
        info.profile_idc,
        info.constraint_flags,
        info.level_idc,
        0xFF, // lengthSizeMinusOne 3
        0xE1, // one SPS
    ];
    put_sized(&mut out, sps)?;
    out.push(pps_count);
    for p in pps {
        put_sized(&mut out, p)?;
    }
    if matches!(info.profile_idc, 100 | 110 | 122 | 144) {
        out.push(0xFC | info.chroma_format_idc as u8);
        out.push(0xF8 | info.bit_depth_luma_minus8 as u8);
        out.push(0xF8 | info.bit_depth_chroma_minus8 as u8);
        out.push(0); // numOfSequenceParameterSetExt
    }
    Some(out)
}

/// Appends a 16-bit length and the bytes.
pub(super) fn put_sized(out: &mut Vec<u8>, data: &[u8]) -> Option<()> {
    out.extend_from_slice(&u16::try_from(data.len()).ok()?.to_be_bytes());
    out.extend_from_slice(data);
    Some(())
}

impl VideoAssembly for H264Depacketizer {
    fn assembler(&mut self) -> &mut Assembler {
        &mut self.assembler
    }

    fn has_parameter_sets(&self) -> bool {
        self.sps.is_some() && !self.pps.is_empty()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{AccessUnit, unhex};
    use super::*;
    use bytes::Bytes;

    /// x264, High profile, 320x240 (no cropping).
    pub const SPS_320X240: &str = "6764000dacd94141fb011000000300100000030320f1429960";
    /// x264, High profile, 1920x1080 (1088 cropped by 8).
    pub const SPS_1920X1080: &str = "67640028acd940780227e5c044000003000400000300c83c60c658";
    /// x264, High 4:4:4 Predictive, 640x360 (chroma_format_idc 3, cropped from 368).
    const SPS_444_640X360: &str = "67f4001e919b281405ff1380880000030008000003019078b16cb0";
    /// x264, interlaced (frame_mbs_only_flag 0), 720x576.
    const SPS_INTERLACED_720X576: &str = "6764001eacd940b424d8088000000300800000190f8a14cb";
    pub const PPS: &str = "68ebe3cb22c0";

    #[test]
    fn sps_dimensions() {
        for (sps, dims) in [
            (SPS_320X240, (320, 240)),
            (SPS_1920X1080, (1920, 1080)),
            (SPS_444_640X360, (640, 360)),
            (SPS_INTERLACED_720X576, (720, 576)),
        ] {
            let parsed = parse_sps(&unhex(sps)).unwrap();
            assert_eq!((parsed.width, parsed.height), dims, "{sps}");
        }
        let sps = parse_sps(&unhex(SPS_444_640X360)).unwrap();
        assert_eq!(sps.profile_idc, 244);
        assert_eq!(sps.chroma_format_idc, 3);
        assert!(
            !parse_sps(&unhex(SPS_INTERLACED_720X576))
                .unwrap()
                .frame_mbs_only
        );
        // Truncations never panic and never parse.
        let full = unhex(SPS_1920X1080);
        for len in 0..full.len() {
            let parsed = parse_sps(&full[..len]);
            assert!(len >= 8 || parsed.is_none());
        }
    }

    /// MSB-first bit writer with Exp-Golomb codes, to build SPS by hand.
    struct BitWriter {
        out: Vec<u8>,
        bits: usize,
    }

    impl BitWriter {
        fn put(&mut self, value: u64, n: usize) {
            for i in (0..n).rev() {
                if self.bits.is_multiple_of(8) {
                    self.out.push(0);
                }
                if (value >> i) & 1 == 1 {
                    *self.out.last_mut().unwrap() |= 0x80 >> (self.bits % 8);
                }
                self.bits += 1;
            }
        }
        fn ue(&mut self, value: u64) {
            let v = value + 1;
            let len = 64 - v.leading_zeros() as usize;
            self.put(0, len - 1);
            self.put(v, len);
        }
        fn se(&mut self, value: i64) {
            self.ue(if value > 0 {
                (2 * value - 1) as u64
            } else {
                (-2 * value) as u64
            });
        }
    }

    #[test]
    fn sps_with_scaling_lists_and_poc_type_1() {
        let mut w = BitWriter {
            out: vec![0x67],
            bits: 8,
        };
        w.put(100, 8); // profile_idc High
        w.put(0, 8);
        w.put(40, 8);
        w.ue(0); // sps id
        w.ue(1); // chroma 4:2:0
        w.ue(2); // bit depth luma 10
        w.ue(2);
        w.put(0, 1);
        w.put(1, 1); // seq_scaling_matrix_present_flag
        for i in 0..8 {
            w.put(1, 1); // list present
            let size = if i < 6 { 16 } else { 64 };
            let mut last = 8i64;
            for j in 0..size {
                if i >= 6 && j == 32 {
                    // next_scale 0: the rest of the list repeats the last value.
                    w.se(-last);
                    break;
                }
                let delta = if j % 2 == 0 { 1 } else { 0 };
                w.se(delta);
                last += delta;
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1); // poc type 1
        w.put(0, 1);
        w.se(-3);
        w.se(5);
        w.ue(2);
        w.se(1);
        w.se(-1);
        w.ue(4); // max_num_ref_frames
        w.put(0, 1);
        w.ue(1280 / 16 - 1);
        w.ue(720 / 16 - 1);
        w.put(1, 1); // frame_mbs_only
        w.put(1, 1);
        w.put(1, 1); // frame_cropping_flag
        w.ue(2); // left (x2)
        w.ue(0);
        w.ue(0);
        w.ue(4); // bottom (x2)
        w.put(0, 1); // vui_parameters_present_flag
        w.put(1, 1); // rbsp_stop_one_bit
        let sps = parse_sps(&w.out).unwrap();
        assert_eq!((sps.width, sps.height), (1280 - 4, 720 - 8));
        assert_eq!(sps.bit_depth_luma_minus8, 2);
        let record = avc_decoder_configuration_record(&w.out, &[&unhex(PPS)]).unwrap();
        assert_eq!(&record[record.len() - 4..], [0xFD, 0xFA, 0xFA, 0]);
    }

    #[test]
    fn avcc_from_sps_and_pps() {
        let sps = unhex(SPS_320X240);
        let pps = unhex(PPS);
        let record = avc_decoder_configuration_record(&sps, &[&pps]).unwrap();
        let mut expected = vec![1, 0x64, 0x00, 0x0D, 0xFF, 0xE1, 0, 25];
        expected.extend_from_slice(&sps);
        expected.extend_from_slice(&[1, 0, 6]);
        expected.extend_from_slice(&pps);
        expected.extend_from_slice(&[0xFD, 0xF8, 0xF8, 0]);
        assert_eq!(record, expected);
    }

    pub fn rtp(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> RtpPacket {
        RtpPacket {
            marker,
            payload_type: 96,
            sequence: seq,
            timestamp: ts,
            ssrc: 1,
            csrcs: Vec::new(),
            extension: None,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0x78]; // NRI 3, type 24
        for nal in nals {
            put_sized(&mut out, nal).unwrap();
        }
        out
    }

    fn length_prefixed(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
        out
    }

    fn drain(d: &mut H264Depacketizer) -> Vec<AccessUnit> {
        std::iter::from_fn(|| d.pop()).collect()
    }

    /// The IDR slice used below and its FU-A fragments (start, middle, end).
    const IDR: [u8; 10] = [0x65, 0x88, 0x84, 0x00, 0x33, 0xFF, 0x01, 0x02, 0x03, 0x04];

    fn idr_fragments() -> [Vec<u8>; 3] {
        // FU indicator: F=0, NRI=3 (from 0x65), type 28 → 0x7C. FU header S/E + type 5.
        [
            [&[0x7C, 0x85][..], &IDR[1..4]].concat(),
            [&[0x7C, 0x05][..], &IDR[4..7]].concat(),
            [&[0x7C, 0x45][..], &IDR[7..]].concat(),
        ]
    }

    #[test]
    fn stap_a_and_fu_a_make_one_access_unit() {
        let sps = unhex(SPS_320X240);
        let pps = unhex(PPS);
        let [start, middle, end] = idr_fragments();
        let mut d = H264Depacketizer::new();
        d.push(&rtp(1, 3000, false, &stap_a(&[&sps, &pps])))
            .unwrap();
        d.push(&rtp(2, 3000, false, &start)).unwrap();
        d.push(&rtp(3, 3000, false, &middle)).unwrap();
        assert!(d.pop().is_none());
        d.push(&rtp(4, 3000, true, &end)).unwrap();
        let aus = drain(&mut d);
        assert_eq!(
            aus,
            [AccessUnit {
                rtp_timestamp: 3000,
                keyframe: true,
                data: length_prefixed(&[&sps, &pps, &IDR]),
                discontinuity: false,
            }]
        );
        assert_eq!(d.dimensions(), Some((320, 240)));
        assert_eq!(
            d.codec_private(),
            avc_decoder_configuration_record(&sps, &[&pps])
        );
        // A P frame as a single NAL unit; without marker it ends on the next timestamp.
        let p = [0x41, 0x9A, 0x02, 0x03];
        d.push(&rtp(5, 6000, false, &p)).unwrap();
        assert!(d.pop().is_none());
        d.push(&rtp(6, 9000, true, &p)).unwrap();
        let aus = drain(&mut d);
        assert_eq!(aus.len(), 2);
        assert_eq!(aus[0].rtp_timestamp, 6000);
        assert!(!aus[0].keyframe && !aus[0].discontinuity);
        assert_eq!(aus[0].data, length_prefixed(&[&p]));
    }

    #[test]
    fn loss_drops_until_the_next_idr() {
        let sps = unhex(SPS_320X240);
        let pps = unhex(PPS);
        let [start, middle, end] = idr_fragments();
        let p = [0x41, 0x9A, 0x02, 0x03];
        let mut d = H264Depacketizer::from_sdp(&sdp_codec(&[&sps, &pps])).unwrap();
        assert_eq!(d.dimensions(), Some((320, 240)));
        // IDR, then a P frame whose FU-A middle is lost (sequence jump 12 → 14).
        d.push(&rtp(10, 0, true, &IDR)).unwrap();
        d.push(&rtp(11, 3000, false, &start)).unwrap();
        d.push(&rtp(12, 3000, false, &middle)).unwrap();
        d.push(&rtp(14, 3000, true, &end)).unwrap_err();
        // P frames are dropped until the IDR, which is marked.
        d.push(&rtp(15, 6000, true, &p)).unwrap();
        d.gap();
        d.push(&rtp(20, 9000, true, &p)).unwrap();
        d.push(&rtp(21, 12000, false, &start)).unwrap();
        d.push(&rtp(22, 12000, false, &middle)).unwrap();
        d.push(&rtp(23, 12000, true, &end)).unwrap();
        d.push(&rtp(24, 15000, true, &p)).unwrap();
        let aus = drain(&mut d);
        let summary: Vec<_> = aus
            .iter()
            .map(|a| (a.rtp_timestamp, a.keyframe, a.discontinuity))
            .collect();
        assert_eq!(
            summary,
            [(0, true, false), (12000, true, true), (15000, false, false)]
        );
        assert_eq!(aus[1].data, length_prefixed(&[&IDR]));
    }

    #[test]
    fn a_key_frame_that_lost_its_first_packets_is_not_emitted() {
        let sps = unhex(SPS_320X240);
        let pps = unhex(PPS);
        let [start, middle, end] = idr_fragments();
        let p = [0x41, 0x9A, 0x02, 0x03];
        let mut d = H264Depacketizer::from_sdp(&sdp_codec(&[&sps, &pps])).unwrap();
        d.push(&rtp(1, 0, true, &IDR)).unwrap();
        d.push(&rtp(2, 3000, true, &p)).unwrap();
        // The next IDR's first packet (its first slice, say) is lost: what arrives of
        // it still holds IDR data, but the picture is incomplete.
        d.gap();
        d.push(&rtp(4, 6000, false, &middle)).unwrap_err();
        d.push(&rtp(5, 6000, false, &start)).unwrap();
        d.push(&rtp(6, 6000, true, &end)).unwrap();
        d.gap();
        d.push(&rtp(8, 9000, false, &IDR)).unwrap();
        d.push(&rtp(9, 9000, true, &IDR)).unwrap();
        // A whole IDR after the loss (with a new timestamp) is the next frame out.
        d.push(&rtp(10, 12000, true, &IDR)).unwrap();
        d.push(&rtp(11, 15000, true, &p)).unwrap();
        d.flush();
        let summary: Vec<_> = drain(&mut d)
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
    }

    #[test]
    fn nothing_before_parameter_sets_and_a_key_frame() {
        let p = [0x41, 0x9A];
        let mut d = H264Depacketizer::new();
        d.push(&rtp(1, 0, true, &p)).unwrap();
        d.push(&rtp(2, 3000, true, &IDR)).unwrap(); // IDR but no SPS/PPS known
        d.push(&rtp(
            3,
            6000,
            true,
            &stap_a(&[&unhex(SPS_320X240), &unhex(PPS)]),
        ))
        .unwrap(); // parameter sets alone (marker set): carried into the next AU
        d.push(&rtp(4, 6000, true, &IDR)).unwrap();
        let aus = drain(&mut d);
        assert_eq!(aus.len(), 1);
        assert!(aus[0].keyframe && aus[0].discontinuity);
        assert_eq!(
            aus[0].data,
            length_prefixed(&[&unhex(SPS_320X240), &unhex(PPS), &IDR])
        );
    }

    #[test]
    fn unsupported_and_malformed_packets_are_errors() {
        let mut d = H264Depacketizer::new();
        for payload in [
            &[][..],
            &[0x80, 1],          // forbidden bit
            &[0x19, 0, 0],       // STAP-B
            &[0x1A, 0, 0],       // MTAP16
            &[0x1D, 0x85],       // FU-B
            &[0x18, 0, 5, 0x67], // STAP-A overrun
            &[0x18, 0, 0],       // STAP-A empty NAL unit
            &[0x1C],             // FU-A without header
            &[0x1C, 0x98],       // FU-A of a STAP-A
            &[0x7C, 0x05, 1, 2], // FU-A middle without start
            &[0x7C, 0x45, 1, 2], // FU-A end without start
        ] {
            assert!(d.push(&rtp(1, 0, true, payload)).is_err(), "{payload:?}");
        }
        // Types 0, 30, 31 are skipped silently.
        d.push(&rtp(2, 0, true, &[0x1E, 1])).unwrap();
        assert!(
            H264Depacketizer::from_sdp(&RtpCodec {
                packetization_mode: Some(2),
                ..sdp_codec(&[])
            })
            .is_err()
        );
    }

    pub fn sdp_codec(sets: &[&[u8]]) -> RtpCodec {
        RtpCodec {
            codec: crate::media::samples::Codec::H264,
            payload_type: 96,
            encoding_name: "H264".into(),
            clock_rate: 90_000,
            channels: None,
            fmtp: Vec::new(),
            sprop_parameter_sets: sets.iter().map(|s| s.to_vec()).collect(),
            packetization_mode: Some(1),
            sprop_vps: Vec::new(),
            sprop_sps: Vec::new(),
            sprop_pps: Vec::new(),
            sprop_max_don_diff: None,
            config: None,
            mode: None,
            size_length: None,
            index_length: None,
            index_delta_length: None,
        }
    }
}
