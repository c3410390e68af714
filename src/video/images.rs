//! Still images from stored video (GetImages): H.264/H.265 access units decoded and
//! scaled with GStreamer, then encoded as JPEG (`jpeg-encoder`) or PNG (`png`).
//!
//! One GStreamer pipeline per fragment: `appsrc` (the fragment's samples with their
//! avcC/hvcC as `codec_data`) → `avdec_h264`/`avdec_h265` (gst-libav) → `videoconvert`
//! → `videoscale` → RGB at the requested size → `appsink`. Each fragment starts with a
//! key frame, so it decodes on its own. For every requested time the frame shown at
//! that time is kept: the last one whose presentation time is not after it.
//!
//! Decoding is blocking and CPU-heavy: callers run it on the blocking pool, a few at a
//! time ([`DECODE_CONCURRENCY`]).

use std::sync::OnceLock;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::media::samples::{Codec, MediaTrack, Sample};

/// Fragments decoded at once across all requests.
pub const DECODE_CONCURRENCY: usize = 2;

/// The decoding slots shared by all requests.
pub static DECODE_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(DECODE_CONCURRENCY);

/// A decoded picture, 8-bit RGB, rows packed without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// The pixel at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }
}

/// Output size: `None` keeps the stream's own size; with only a height, the width
/// follows the picture's aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size {
    pub width: Option<u32>,
    pub height: Option<u32>,
}

fn init() -> Result<(), String> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| format!("GStreamer failed to start: {e}")))
        .clone()
}

/// Whether this machine can decode `codec` (the gst-libav decoder is installed).
pub fn can_decode(codec: Codec) -> bool {
    init().is_ok() && gst::ElementFactory::find(decoder(codec)).is_some()
}

fn decoder(codec: Codec) -> &'static str {
    match codec {
        Codec::H265 => "avdec_h265",
        _ => "avdec_h264",
    }
}

/// Decodes one fragment's video and returns, for each of `wanted` (presentation times
/// in ns, on the samples' clock), the frame shown then; `None` where no frame was shown
/// yet (a time before the first frame).
pub fn frames_at(
    track: &MediaTrack,
    samples: &[Sample],
    wanted: &[i64],
    size: Size,
) -> Result<Vec<Option<RgbImage>>, String> {
    init()?;
    if !track.codec.is_video() {
        return Err("not a video track".into());
    }
    let base = samples
        .iter()
        .map(|s| s.dts_ns.min(s.pts_ns))
        .min()
        .unwrap_or(0);
    let caps_name = match track.codec {
        Codec::H265 => ("video/x-h265", "hvc1"),
        _ => ("video/x-h264", "avc"),
    };
    let src_caps = gst::Caps::builder(caps_name.0)
        .field("stream-format", caps_name.1)
        .field("alignment", "au")
        .field(
            "codec_data",
            gst::Buffer::from_slice(track.codec_private.clone()),
        )
        .build();
    let mut out_caps = gst::Caps::builder("video/x-raw").field("format", "RGB");
    let (w, h) = match (size.width, size.height) {
        (Some(w), Some(h)) => (Some(w), Some(h)),
        (None, Some(h)) if track.height > 0 => (
            Some(
                ((track.width as u64 * h as u64 + track.height as u64 / 2) / track.height as u64)
                    .max(1) as u32,
            ),
            Some(h),
        ),
        _ => (None, None),
    };
    if let (Some(w), Some(h)) = (w, h) {
        out_caps = out_caps
            .field("width", w as i32)
            .field("height", h as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    }
    let pipeline = gst::Pipeline::new();
    let make = |name: &str| {
        gst::ElementFactory::make(name)
            .build()
            .map_err(|e| format!("GStreamer element {name} is missing: {e}"))
    };
    let appsrc = gst_app::AppSrc::builder()
        .caps(&src_caps)
        .format(gst::Format::Time)
        .build();
    let dec = make(decoder(track.codec))?;
    let convert = make("videoconvert")?;
    let scale = make("videoscale")?;
    let appsink = gst_app::AppSink::builder()
        .caps(&out_caps.build())
        .sync(false)
        .build();
    pipeline
        .add_many([
            appsrc.upcast_ref(),
            &dec,
            &convert,
            &scale,
            appsink.upcast_ref(),
        ])
        .map_err(|e| e.to_string())?;
    gst::Element::link_many([
        appsrc.upcast_ref(),
        &dec,
        &convert,
        &scale,
        appsink.upcast_ref(),
    ])
    .map_err(|e| e.to_string())?;
    let result = run(&pipeline, &appsrc, &appsink, samples, base, wanted);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run(
    pipeline: &gst::Pipeline,
    appsrc: &gst_app::AppSrc,
    appsink: &gst_app::AppSink,
    samples: &[Sample],
    base: i64,
    wanted: &[i64],
) -> Result<Vec<Option<RgbImage>>, String> {
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("the decoder did not start: {e}"))?;
    for s in samples {
        let mut buf = gst::Buffer::from_slice(s.data.clone());
        {
            let b = buf.get_mut().expect("a new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds(
                (s.pts_ns - base).max(0) as u64
            ));
            b.set_dts(gst::ClockTime::from_nseconds(
                (s.dts_ns - base).max(0) as u64
            ));
            b.set_duration(gst::ClockTime::from_nseconds(s.duration_ns));
            if !s.keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        appsrc
            .push_buffer(buf)
            .map_err(|e| format!("the decoder refused data: {e:?}"))?;
    }
    appsrc
        .end_of_stream()
        .map_err(|e| format!("the decoder refused the end of stream: {e:?}"))?;

    let mut best: Vec<Option<(u64, RgbImage)>> = vec![None; wanted.len()];
    let bus = pipeline.bus().ok_or("pipeline without a bus")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
            && let gst::MessageView::Error(e) = msg.view()
        {
            return Err(format!("decoding failed: {}", e.error()));
        }
        let Some(sample) = appsink.try_pull_sample(gst::ClockTime::from_mseconds(200)) else {
            if appsink.is_eos() {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err("decoding took too long".into());
            }
            continue;
        };
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            continue;
        };
        let Some(pts) = buffer.pts() else { continue };
        let s = caps.structure(0).ok_or("decoded frame without caps")?;
        let width = s.get::<i32>("width").map_err(|e| e.to_string())? as u32;
        let height = s.get::<i32>("height").map_err(|e| e.to_string())? as u32;
        let abs = base + pts.nseconds() as i64;
        let needed: Vec<usize> = wanted
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                abs <= **t && best[*i].as_ref().is_none_or(|(p, _)| *p <= pts.nseconds())
            })
            .map(|(i, _)| i)
            .collect();
        if needed.is_empty() {
            continue;
        }
        let map = buffer.map_readable().map_err(|e| e.to_string())?;
        let image = pack_rgb(map.as_slice(), width, height)?;
        for i in needed {
            best[i] = Some((pts.nseconds(), image.clone()));
        }
    }
    Ok(best.into_iter().map(|b| b.map(|(_, img)| img)).collect())
}

/// Copies RGB rows out of a GStreamer buffer (rows padded to 4 bytes).
fn pack_rgb(data: &[u8], width: u32, height: u32) -> Result<RgbImage, String> {
    let row = width as usize * 3;
    let stride = row.div_ceil(4) * 4;
    if data.len() < stride * (height as usize - 1) + row {
        return Err(format!(
            "decoded frame of {} bytes is too small for {width}x{height}",
            data.len()
        ));
    }
    let mut pixels = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        pixels.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

/// JPEG at `quality` (1–100).
pub fn encode_jpeg(image: &RgbImage, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    encoder
        .encode(
            &image.pixels,
            u16::try_from(image.width).map_err(|_| "image too wide")?,
            u16::try_from(image.height).map_err(|_| "image too tall")?,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// PNG, 8-bit RGB.
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width, image.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(&image.pixels)
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// How long a request waits for a decoding slot before answering with
/// `ClientLimitExceededException`.
pub const DECODE_WAIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unpadded_and_encoders_round_trip() {
        // 3x2 RGB: rows of 9 bytes padded to 12.
        let mut data = vec![0u8; 24];
        data[..9].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        data[12..21].copy_from_slice(&[10, 11, 12, 13, 14, 15, 16, 17, 18]);
        let img = pack_rgb(&data, 3, 2).unwrap();
        assert_eq!(img.pixels, (1..=18).collect::<Vec<u8>>());
        assert_eq!(img.pixel(2, 1), [16, 17, 18]);
        assert!(pack_rgb(&data[..20], 3, 2).is_err());
        let png = encode_png(&img).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let jpeg = encode_jpeg(&img, 80).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    }
}
