//! H.265 over RTP (RFC 7798, "RTP Payload Format for High Efficiency Video Coding
//! (HEVC)"): single NAL unit packets (4.4.1), aggregation packets (AP, type 48, 4.4.2)
//! and fragmentation units (FU, type 49, 4.4.3), without DONL/DOND fields (the SDP's
//! `sprop-max-don-diff` must be absent or 0). PACI packets (type 50) are reported as
//! unsupported and treated as a loss; types 51..=63 are skipped.
//!
//! Also the sequence parameter set syntax (ITU-T H.265 7.3.2.2, profile_tier_level
//! 7.3.3) as far as the bit depths and the conformance window, and the
//! HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1).

use super::h264::put_sized;
use super::{
    Assembler, BitReader, DepacketizeError, NalKind, PpsTable, VideoAssembly, rbsp, split_aggregate,
};
use crate::media::rtp::RtpPacket;
use crate::media::sdp::RtpCodec;

/// NAL unit types (H.265 table 7-1) and RTP packet types (RFC 7798 4.4).
pub const NAL_VPS: u8 = 32;
pub const NAL_SPS: u8 = 33;
pub const NAL_PPS: u8 = 34;
pub const NAL_FILLER: u8 = 38;
pub const AP: u8 = 48;
pub const FU: u8 = 49;
pub const PACI: u8 = 50;

/// The NAL unit type of a NAL unit header's first byte.
pub fn nal_type(first_byte: u8) -> u8 {
    (first_byte >> 1) & 0x3F
}

/// Depacketizes one H.265 RTP stream (see [`super::h264::H264Depacketizer`]).
#[derive(Debug)]
pub struct H265Depacketizer {
    assembler: Assembler,
    vps: Option<Vec<u8>>,
    sps: Option<Vec<u8>>,
    /// PPS NAL units by pps_pic_parameter_set_id.
    pps: PpsTable,
}

impl Default for H265Depacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl H265Depacketizer {
    pub fn new() -> H265Depacketizer {
        H265Depacketizer {
            assembler: Assembler::new(),
            vps: None,
            sps: None,
            pps: PpsTable::default(),
        }
    }

    /// A depacketizer for an SDP media description (its `sprop-vps`, `sprop-sps`,
    /// `sprop-pps`). DONL fields (`sprop-max-don-diff` > 0 or
    /// `sprop-depack-buf-nalus` > 0) are unsupported.
    pub fn from_sdp(codec: &RtpCodec) -> Result<H265Depacketizer, DepacketizeError> {
        let depack_buf = codec
            .fmtp_param("sprop-depack-buf-nalus")
            .and_then(|v| v.trim().parse::<u32>().ok());
        if codec.sprop_max_don_diff.is_some_and(|d| d > 0) || depack_buf.is_some_and(|d| d > 0) {
            return Err(DepacketizeError::Unsupported(
                "H.265 with DONL fields (sprop-max-don-diff > 0)".into(),
            ));
        }
        let mut out = Self::new();
        for nal in codec
            .sprop_vps
            .iter()
            .chain(&codec.sprop_sps)
            .chain(&codec.sprop_pps)
        {
            out.add_parameter_set(nal);
        }
        Ok(out)
    }

    /// Remembers a VPS, SPS or PPS NAL unit (others, and SPS that do not parse, are
    /// ignored).
    pub fn add_parameter_set(&mut self, nal: &[u8]) {
        if nal.len() < 3 {
            return;
        }
        match nal_type(nal[0]) {
            NAL_VPS => self.vps = Some(nal.to_vec()),
            NAL_SPS if parse_sps(nal).is_some() => self.sps = Some(nal.to_vec()),
            NAL_PPS => {
                let Some(id) = BitReader::new(&rbsp(&nal[2..])).ue() else {
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
        let &[h0, h1, ..] = payload else {
            self.assembler.loss();
            return Err(DepacketizeError::Malformed(
                "H.265 payload shorter than its header".into(),
            ));
        };
        if h0 & 0x80 != 0 {
            self.assembler.loss();
            return Err(DepacketizeError::Malformed(
                "H.265 forbidden_zero_bit set".into(),
            ));
        }
        match nal_type(h0) {
            0..=47 => self.nal(ts, payload),
            AP => {
                let Some(nals) = split_aggregate(&payload[2..], 2) else {
                    self.assembler.loss();
                    return Err(DepacketizeError::Malformed(
                        "AP NAL unit size overruns the packet".into(),
                    ));
                };
                for nal in nals {
                    self.nal(ts, nal)?;
                }
                Ok(())
            }
            FU => {
                let Some(&fu_header) = payload.get(2) else {
                    self.assembler.loss();
                    return Err(DepacketizeError::Malformed("FU without FU header".into()));
                };
                let fu_type = fu_header & 0x3F;
                if fu_type >= AP {
                    self.assembler.loss();
                    return Err(DepacketizeError::Malformed(format!(
                        "FU carries NAL unit type {fu_type}"
                    )));
                }
                let header = [(h0 & 0x81) | (fu_type << 1), h1];
                let start = fu_header & 0x80 != 0;
                let end = fu_header & 0x40 != 0;
                match self
                    .assembler
                    .fragment(ts, start, end, fu_type, &header, &payload[3..])?
                {
                    Some(nal) => self.nal(ts, &nal),
                    None => Ok(()),
                }
            }
            PACI => {
                self.assembler.loss();
                Err(DepacketizeError::Unsupported("H.265 PACI packet".into()))
            }
            _ => Ok(()), // 51..=63: unspecified, ignored
        }
    }

    fn nal(&mut self, ts: u32, nal: &[u8]) -> Result<(), DepacketizeError> {
        let Some(&h0) = nal.first() else {
            return Ok(());
        };
        let t = nal_type(h0);
        match t {
            NAL_VPS | NAL_SPS | NAL_PPS => self.add_parameter_set(nal),
            NAL_FILLER => return Ok(()),
            _ => {}
        }
        let kind = NalKind {
            vcl: t <= 31,
            keyframe: (16..=23).contains(&t),
        };
        self.assembler.add_nal(ts, nal, kind)
    }

    /// The HEVCDecoderConfigurationRecord of the current VPS, SPS and the known PPS.
    pub fn codec_private(&self) -> Option<Vec<u8>> {
        let pps: Vec<&[u8]> = self.pps.iter().collect();
        hevc_decoder_configuration_record(self.vps.as_deref()?, self.sps.as_deref()?, &pps)
    }

    /// Width and height (after the conformance window) from the current SPS.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        let sps = parse_sps(self.sps.as_deref()?)?;
        Some((sps.width, sps.height))
    }

    pub fn vps(&self) -> Option<&[u8]> {
        self.vps.as_deref()
    }

    pub fn sps(&self) -> Option<&[u8]> {
        self.sps.as_deref()
    }

    pub fn pps(&self) -> impl Iterator<Item = &[u8]> {
        self.pps.iter()
    }
}

/// What the depacketizer reads from an H.265 sequence parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H265Sps {
    pub max_sub_layers_minus1: u8,
    pub temporal_id_nesting: bool,
    pub general_profile_space: u8,
    pub general_tier_flag: bool,
    pub general_profile_idc: u8,
    pub general_profile_compatibility_flags: u32,
    /// The 48 bits from general_progressive_source_flag on.
    pub general_constraint_indicator_flags: u64,
    pub general_level_idc: u8,
    pub seq_parameter_set_id: u32,
    pub chroma_format_idc: u32,
    pub bit_depth_luma_minus8: u32,
    pub bit_depth_chroma_minus8: u32,
    /// Luma width and height after the conformance window.
    pub width: u32,
    pub height: u32,
}

/// Parses an SPS NAL unit (2-byte header included, nuh_layer_id 0 syntax) up to the
/// bit depths.
pub fn parse_sps(nal: &[u8]) -> Option<H265Sps> {
    if nal_type(*nal.first()?) != NAL_SPS {
        return None;
    }
    let data = rbsp(nal.get(2..)?);
    let mut r = BitReader::new(&data);
    r.bits(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)? as u8;
    if max_sub_layers_minus1 > 6 {
        return None;
    }
    let temporal_id_nesting = r.bit()?;
    // profile_tier_level(1, max_sub_layers_minus1)
    let general_profile_space = r.bits(2)? as u8;
    let general_tier_flag = r.bit()?;
    let general_profile_idc = r.bits(5)? as u8;
    let general_profile_compatibility_flags = r.bits(32)?;
    let general_constraint_indicator_flags =
        (u64::from(r.bits(16)?) << 32) | u64::from(r.bits(32)?);
    let general_level_idc = r.bits(8)? as u8;
    let mut sub_layers = [(false, false); 7];
    for layer in sub_layers
        .iter_mut()
        .take(usize::from(max_sub_layers_minus1))
    {
        *layer = (r.bit()?, r.bit()?);
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.bits(2)?; // reserved_zero_2bits
        }
    }
    for &(profile_present, level_present) in
        sub_layers.iter().take(usize::from(max_sub_layers_minus1))
    {
        if profile_present {
            r.skip(88)?;
        }
        if level_present {
            r.skip(8)?;
        }
    }
    let seq_parameter_set_id = r.ue().filter(|id| *id <= 15)?;
    let chroma_format_idc = r.ue().filter(|c| *c <= 3)?;
    let separate_colour_plane = chroma_format_idc == 3 && r.bit()?;
    let pic_width = u64::from(r.ue()?);
    let pic_height = u64::from(r.ue()?);
    let (mut left, mut right, mut top, mut bottom) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? {
        left = r.ue()?.into();
        right = r.ue()?.into();
        top = r.ue()?.into();
        bottom = r.ue()?.into();
    }
    let bit_depth_luma_minus8 = r.ue().filter(|d| *d <= 8)?;
    let bit_depth_chroma_minus8 = r.ue().filter(|d| *d <= 8)?;
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (sub_width, sub_height) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let width = pic_width.checked_sub(sub_width * (left + right))?;
    let height = pic_height.checked_sub(sub_height * (top + bottom))?;
    Some(H265Sps {
        max_sub_layers_minus1,
        temporal_id_nesting,
        general_profile_space,
        general_tier_flag,
        general_profile_idc,
        general_profile_compatibility_flags,
        general_constraint_indicator_flags,
        general_level_idc,
        seq_parameter_set_id,
        chroma_format_idc,
        bit_depth_luma_minus8,
        bit_depth_chroma_minus8,
        width: u32::try_from(width).ok().filter(|w| *w > 0)?,
        height: u32::try_from(height).ok().filter(|h| *h > 0)?,
    })
}

/// An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1.2) with 4-byte NAL unit
/// lengths and three complete arrays (VPS, SPS, PPS); the general_* fields come from
/// the SPS's profile_tier_level. `None` if the SPS does not parse or a parameter set
/// is longer than 65535 bytes.
pub fn hevc_decoder_configuration_record(vps: &[u8], sps: &[u8], pps: &[&[u8]]) -> Option<Vec<u8>> {
    let info = parse_sps(sps)?;
    let pps_count = u16::try_from(pps.len()).ok()?;
    let mut out = Vec::with_capacity(23 + 15 + vps.len() + sps.len());
    out.push(1);
    out.push(
        (info.general_profile_space << 6)
            | (u8::from(info.general_tier_flag) << 5)
            | info.general_profile_idc,
    );
    out.extend_from_slice(&info.general_profile_compatibility_flags.to_be_bytes());
    out.extend_from_slice(&info.general_constraint_indicator_flags.to_be_bytes()[2..]);
    out.push(info.general_level_idc);
    out.extend_from_slice(&[0xF0, 0x00]); // min_spatial_segmentation_idc 0
    out.push(0xFC); // parallelismType 0 (unknown)
    out.push(0xFC | info.chroma_format_idc as u8);
    out.push(0xF8 | info.bit_depth_luma_minus8 as u8);
    out.push(0xF8 | info.bit_depth_chroma_minus8 as u8);
    out.extend_from_slice(&[0, 0]); // avgFrameRate unknown
    out.push(
        ((info.max_sub_layers_minus1 + 1) << 3) | (u8::from(info.temporal_id_nesting) << 2) | 3,
    );
    out.push(3); // numOfArrays
    for (nal_type, nals) in [(NAL_VPS, &[vps][..]), (NAL_SPS, &[sps][..]), (NAL_PPS, pps)] {
        out.push(0x80 | nal_type); // array_completeness 1
        let count = if nal_type == NAL_PPS { pps_count } else { 1 };
        out.extend_from_slice(&count.to_be_bytes());
        for nal in nals {
            put_sized(&mut out, nal)?;
        }
    }
    Some(out)
}

impl VideoAssembly for H265Depacketizer {
    fn assembler(&mut self) -> &mut Assembler {
        &mut self.assembler
    }

    fn has_parameter_sets(&self) -> bool {
        self.vps.is_some() && self.sps.is_some() && !self.pps.is_empty()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::h264::tests::rtp;
    use super::super::{AccessUnit, unhex};
    use super::*;

    /// x265, Main profile, 1920x1080 (no conformance window: 1080 is a multiple of 8).
    pub const VPS_1080: &str = "40010c01ffff016000000300900000030000030078959809";
    pub const SPS_1080: &str =
        "420101016000000300900000030000030078a003c08010e596566924caf0168080000003008000000c84";
    /// x265, Main profile, 426x240 (coded 432x240, conformance window of 6 columns).
    const SPS_426X240: &str =
        "42010101600000030090000003000003003ca00d880f1c9e5959a4932bc05a020000030002000003003210";
    pub const PPS: &str = "4401c172b46240";

    #[test]
    fn sps_dimensions_and_profile() {
        let sps = parse_sps(&unhex(SPS_1080)).unwrap();
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.general_profile_idc, 1);
        assert_eq!(sps.general_profile_compatibility_flags, 0x6000_0000);
        assert_eq!(sps.general_constraint_indicator_flags, 0x9000_0000_0000);
        assert_eq!(sps.general_level_idc, 120);
        assert_eq!(sps.chroma_format_idc, 1);
        let sps = parse_sps(&unhex(SPS_426X240)).unwrap();
        assert_eq!((sps.width, sps.height), (426, 240));
        let full = unhex(SPS_1080);
        for len in 0..20 {
            assert_eq!(parse_sps(&full[..len]), None);
        }
    }

    #[test]
    fn hvcc_record() {
        let (vps, sps, pps) = (unhex(VPS_1080), unhex(SPS_1080), unhex(PPS));
        let record = hevc_decoder_configuration_record(&vps, &sps, &[&pps]).unwrap();
        assert_eq!(
            &record[..23],
            [
                1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 120, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8,
                0, 0, 0x0F, 3
            ]
        );
        let mut arrays = vec![0xA0, 0, 1, 0, vps.len() as u8];
        arrays.extend_from_slice(&vps);
        arrays.extend_from_slice(&[0xA1, 0, 1, 0, sps.len() as u8]);
        arrays.extend_from_slice(&sps);
        arrays.extend_from_slice(&[0xA2, 0, 1, 0, pps.len() as u8]);
        arrays.extend_from_slice(&pps);
        assert_eq!(&record[23..], arrays);
    }

    /// An IDR_W_RADL slice (type 19) and a TRAIL_R slice (type 1).
    const IDR: [u8; 9] = [0x26, 0x01, 0xAF, 0x09, 0x40, 0xF0, 0x0F, 0x11, 0x22];
    const TRAIL: [u8; 4] = [0x02, 0x01, 0xD0, 0x11];

    fn ap(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0x60, 0x01]; // type 48, TID 1
        for nal in nals {
            put_sized(&mut out, nal).unwrap();
        }
        out
    }

    #[test]
    fn aggregation_and_fragmentation() {
        let (vps, sps, pps) = (unhex(VPS_1080), unhex(SPS_1080), unhex(PPS));
        let mut d = H265Depacketizer::new();
        d.push(&rtp(100, 90_000, false, &ap(&[&vps, &sps, &pps])))
            .unwrap();
        // FU header: payload header type 49 (0x62 0x01), FU header S/E + type 19.
        d.push(&rtp(
            101,
            90_000,
            false,
            &[&[0x62, 0x01, 0x93][..], &IDR[2..5]].concat(),
        ))
        .unwrap();
        d.push(&rtp(
            102,
            90_000,
            false,
            &[&[0x62, 0x01, 0x13][..], &IDR[5..7]].concat(),
        ))
        .unwrap();
        d.push(&rtp(
            103,
            90_000,
            true,
            &[&[0x62, 0x01, 0x53][..], &IDR[7..]].concat(),
        ))
        .unwrap();
        d.push(&rtp(104, 93_600, true, &TRAIL)).unwrap();
        let aus: Vec<AccessUnit> = std::iter::from_fn(|| d.pop()).collect();
        let mut expected = Vec::new();
        for nal in [&vps[..], &sps, &pps, &IDR] {
            expected.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            expected.extend_from_slice(nal);
        }
        assert_eq!(aus.len(), 2);
        assert_eq!(aus[0].data, expected);
        assert!(aus[0].keyframe && !aus[0].discontinuity);
        assert_eq!(aus[1].rtp_timestamp, 93_600);
        assert!(!aus[1].keyframe);
        assert_eq!(d.dimensions(), Some((1920, 1080)));
        assert_eq!(
            d.codec_private(),
            hevc_decoder_configuration_record(&vps, &sps, &[&pps])
        );
        // A lost FU end: the next TRAIL frame is dropped, the next IDR marked.
        d.push(&rtp(
            105,
            97_200,
            false,
            &[&[0x62, 0x01, 0x81][..], &TRAIL[2..]].concat(),
        ))
        .unwrap();
        d.push(&rtp(107, 100_800, true, &TRAIL)).unwrap();
        d.push(&rtp(108, 104_400, true, &IDR)).unwrap();
        let aus: Vec<AccessUnit> = std::iter::from_fn(|| d.pop()).collect();
        assert_eq!(aus.len(), 1);
        assert_eq!(aus[0].rtp_timestamp, 104_400);
        assert!(aus[0].keyframe && aus[0].discontinuity);
    }

    #[test]
    fn donl_and_bad_packets_are_rejected() {
        let mut codec = super::super::h264::tests::sdp_codec(&[]);
        codec.codec = crate::media::samples::Codec::H265;
        codec.sprop_max_don_diff = Some(2);
        assert!(H265Depacketizer::from_sdp(&codec).is_err());
        codec.sprop_max_don_diff = Some(0);
        codec.sprop_vps = vec![unhex(VPS_1080)];
        codec.sprop_sps = vec![unhex(SPS_1080)];
        codec.sprop_pps = vec![unhex(PPS)];
        let mut d = H265Depacketizer::from_sdp(&codec).unwrap();
        assert!(d.codec_private().is_some());
        for payload in [
            &[0x26][..],
            &[0xA6, 0x01, 0],             // forbidden bit
            &[0x64, 0x01, 0, 0],          // PACI
            &[0x60, 0x01, 0, 1, 0x26],    // AP NAL unit of 1 byte
            &[0x60, 0x01, 0, 9, 0x26, 1], // AP overrun
            &[0x62, 0x01],                // FU without FU header
            &[0x62, 0x01, 0xB1, 0],       // FU of an FU
            &[0x62, 0x01, 0x53, 0],       // FU end without start
        ] {
            assert!(d.push(&rtp(1, 0, true, payload)).is_err(), "{payload:?}");
        }
        d.push(&rtp(2, 0, true, &[0x7E, 0x01, 0])).unwrap(); // type 63: ignored
    }
}
