//! HLS MPEG-TS playback checked by ffmpeg: the sample clips (`media-samples/*.kvs.mkv`,
//! the Kinesis Video producer layout) are read with the Matroska reader, turned into
//! `MediaTrack`s and `Sample`s, and written by `freshet::media::ts::ts_segment` as one
//! segment per Cluster (= Kinesis Video fragment). The same clips also go through
//! `freshet::media::samples::demux_fragment`, as playback reads stored fragments.
//!
//! For every clip: the segments concatenated (counters carried from segment to
//! segment) probe as 150 video frames of the right codec (and every AAC frame for
//! `h264-aac`) with 90 kHz timestamps exactly one frame apart, and decode with
//! `ffmpeg -xerror` without a single message; an HLS playlist (RFC 8216) over
//! segments built independently (fresh counters each, as a stateless server builds
//! them) probes and decodes the same way. Neither shows ffmpeg a continuity counter
//! jump (fresh counters carry the discontinuity_indicator). The absolute epoch
//! timestamps are chosen so that the 33-bit 90 kHz clock wraps in the middle of the
//! clip.
//!
//! ffmpeg/ffprobe are installed by `scripts/test.sh` and in CI.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use freshet::media::mkv::{Limits, MkvEvent, MkvReader};
use freshet::media::samples::{Codec, MediaTrack, Sample, demux_fragment};
use freshet::media::ts::{TsContinuity, ts_segment};
use serde_json::Value;

/// A clip as the muxer sees it: its tracks and one sample list per Cluster.
struct Clip {
    tracks: Vec<MediaTrack>,
    fragments: Vec<Vec<Sample>>,
}

/// An epoch time (ns) that puts the 33-bit 90 kHz clock `before_wrap_ns` before its
/// wrap: a clip starting there crosses 2^33 ticks.
fn epoch_before_wrap(before_wrap_ns: i64) -> i64 {
    let base: i64 = 1_760_000_000_000_000_000;
    let ticks = (i128::from(base) * 9 / 100_000) % (1 << 33);
    let to_wrap_ns = (((1i128 << 33) - ticks) * 100_000 / 9) as i64;
    base + to_wrap_ns - before_wrap_ns
}

/// Reads a sample clip: MediaTracks from the header, Samples from the frames of each
/// Cluster (data cut from the Cluster's raw bytes, PTS = DTS: the clips have no
/// B-frames, durations from the next frame of the track).
fn read_clip(name: &str, epoch_ns: i64) -> Clip {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("media-samples")
        .join(name);
    let body = std::fs::read(&path).unwrap();
    let events = MkvReader::new(Limits::default())
        .read_to_end(&body)
        .unwrap();

    let mut tracks = Vec::new();
    let mut track_numbers = Vec::new();
    let mut scale = 0u64;
    let mut default_durations = Vec::new();
    let mut frames = Vec::new();
    // (fragment index, track index, dts, keyframe, data)
    let mut all: Vec<(usize, usize, i64, bool, Bytes)> = Vec::new();
    let mut fragment_count = 0;
    for event in events {
        match event {
            MkvEvent::Header(header) => {
                scale = header.timecode_scale;
                for t in &header.tracks {
                    let codec = Codec::from_matroska(&t.codec_id)
                        .unwrap_or_else(|| panic!("{name}: codec {}", t.codec_id));
                    let video = t.video.unwrap_or(freshet::media::mkv::VideoSettings {
                        pixel_width: 0,
                        pixel_height: 0,
                    });
                    let (sample_rate, channels) = t
                        .audio
                        .map(|a| (a.sampling_frequency as u32, a.channels as u16))
                        .unwrap_or((0, 0));
                    tracks.push(MediaTrack {
                        number: t.number,
                        codec,
                        codec_private: Bytes::from(t.codec_private.clone()),
                        width: video.pixel_width as u32,
                        height: video.pixel_height as u32,
                        sample_rate,
                        channels,
                    });
                    track_numbers.push(t.number);
                    default_durations.push(t.default_duration_ns);
                }
            }
            MkvEvent::Frame(frame) => frames.push(frame),
            MkvEvent::FragmentEnd(fragment) => {
                for f in frames.drain(..) {
                    assert!(!f.laced);
                    let track = track_numbers.iter().position(|&n| n == f.track).unwrap();
                    let data = fragment
                        .raw_cluster_bytes
                        .get(f.data_offset..f.data_offset + f.data_len)
                        .unwrap();
                    let dts = epoch_ns + (f.timecode * scale) as i64;
                    all.push((
                        fragment_count,
                        track,
                        dts,
                        f.keyframe,
                        Bytes::copy_from_slice(data),
                    ));
                }
                fragment_count += 1;
            }
            _ => {}
        }
    }
    assert!(fragment_count > 0 && !tracks.is_empty(), "{name}");

    let mut fragments: Vec<Vec<Sample>> = vec![Vec::new(); fragment_count];
    for (i, (fragment, track, dts, keyframe, data)) in all.iter().enumerate() {
        // Duration: to the next frame of the track, else the previous step (or the
        // track's default duration).
        let next = all[i + 1..].iter().find(|s| s.1 == *track).map(|s| s.2);
        let prev = all[..i].iter().rev().find(|s| s.1 == *track).map(|s| s.2);
        let duration = match (next, prev) {
            (Some(next), _) => (next - dts) as u64,
            (None, Some(prev)) => (dts - prev) as u64,
            (None, None) => default_durations[*track].unwrap_or(0),
        };
        fragments[*fragment].push(Sample {
            track: *track,
            dts_ns: *dts,
            pts_ns: *dts,
            duration_ns: duration,
            keyframe: *keyframe,
            data: data.clone(),
        });
    }
    for samples in &mut fragments {
        // Tracks interleaved by DTS (stable: decode order within a track is kept).
        samples.sort_by_key(|s| s.dts_ns);
    }
    Clip { tracks, fragments }
}

/// Reads a sample clip through `freshet::media::samples::demux_fragment`, as playback
/// reads stored fragments: each Cluster with the Info and Tracks in force, the
/// fragment's producer timestamp `epoch_ms` + its Cluster Timecode.
fn demux_clip(name: &str, epoch_ms: i64) -> Clip {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("media-samples")
        .join(name);
    let body = std::fs::read(&path).unwrap();
    let events = MkvReader::new(Limits::default())
        .read_to_end(&body)
        .unwrap();
    let mut header = None;
    let mut tracks = None;
    let mut fragments = Vec::new();
    for event in events {
        match event {
            MkvEvent::Header(h) => header = Some(h),
            MkvEvent::FragmentEnd(fragment) => {
                let h = header.as_ref().unwrap();
                let producer_ms =
                    epoch_ms + (fragment.cluster_timecode * h.timecode_scale / 1_000_000) as i64;
                let demuxed = demux_fragment(
                    &h.info_and_tracks_bytes,
                    &Bytes::from(fragment.raw_cluster_bytes),
                    producer_ms,
                    fragment.cluster_timecode,
                    h.timecode_scale,
                    None,
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
                tracks.get_or_insert(demuxed.tracks);
                fragments.push(demuxed.samples);
            }
            _ => {}
        }
    }
    Clip {
        tracks: tracks.unwrap(),
        fragments,
    }
}

fn run(program: &str, args: &[&str], file: &Path) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .arg(file)
        .args(if program == "ffmpeg" {
            &["-f", "null", "-"][..]
        } else {
            &[][..]
        })
        .output()
        .unwrap_or_else(|e| panic!("{program} is installed by scripts/test.sh: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ffprobe -count_frames`: (codec_name, nb_read_frames) per stream.
fn probe_streams(file: &Path) -> Vec<(String, u64)> {
    let (ok, stdout, stderr) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "json",
        ],
        file,
    );
    assert!(
        ok && stderr.is_empty(),
        "ffprobe {}: {stderr}",
        file.display()
    );
    let json: Value = serde_json::from_str(&stdout).unwrap();
    json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_name"].as_str().unwrap().to_owned(),
                s["nb_read_frames"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// `ffmpeg -xerror` decodes the whole file and says nothing.
fn assert_decodes(file: &Path) {
    let (ok, _, stderr) = run("ffmpeg", &["-v", "error", "-xerror", "-i"], file);
    assert!(ok, "ffmpeg {} failed: {stderr}", file.display());
    assert!(stderr.is_empty(), "ffmpeg {}: {stderr}", file.display());
}

/// ffmpeg's demuxer sees no continuity counter jump (it logs them at debug level):
/// counters carried along continue, fresh ones are flagged as discontinuous.
fn assert_counters_continuous(file: &Path) {
    let (ok, _, stderr) = run("ffmpeg", &["-v", "debug", "-i"], file);
    assert!(ok, "ffmpeg {}", file.display());
    assert!(
        !stderr.contains("Continuity check failed"),
        "{}: {}",
        file.display(),
        stderr
            .lines()
            .filter(|l| l.contains("Continuity"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The video packets' DTS as ffprobe reads them (unwrapped across 2^33).
fn video_dts(file: &Path) -> Vec<i64> {
    let (ok, stdout, stderr) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=dts",
            "-of",
            "csv=p=0",
        ],
        file,
    );
    assert!(ok, "{stderr}");
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_end_matches(',').parse().unwrap())
        .collect()
}

/// Muxes `clip` and checks it with ffprobe/ffmpeg, joined and as an HLS playlist.
fn check_clip(name: &str, clip: &Clip, video_codec: &str, audio_frames: Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let audio_samples = clip
        .fragments
        .iter()
        .flatten()
        .filter(|s| clip.tracks[s.track].codec == Codec::Aac)
        .count() as u64;
    if let Some(expected) = audio_frames {
        assert_eq!(audio_samples, expected, "{name}: AAC frames in the clip");
    }
    let mut expected = vec![(video_codec.to_owned(), 150)];
    if let Some(frames) = audio_frames {
        expected.push(("aac".to_owned(), frames));
    }

    // One stream: the segments back to back, counters carried along.
    let mut continuity = TsContinuity::new();
    let mut joined = Vec::new();
    for samples in &clip.fragments {
        let segment = ts_segment(&clip.tracks, samples, &mut continuity).unwrap();
        assert_eq!(segment.len() % 188, 0);
        assert!(segment.chunks(188).all(|p| p[0] == 0x47));
        joined.extend_from_slice(&segment);
    }
    let joined_path = dir.path().join("joined.ts");
    std::fs::write(&joined_path, &joined).unwrap();
    assert_eq!(probe_streams(&joined_path), expected, "{name}: joined");
    assert_decodes(&joined_path);
    assert_counters_continuous(&joined_path);
    let dts = video_dts(&joined_path);
    assert_eq!(dts.len(), 150, "{name}");
    assert!(
        dts.windows(2).all(|w| w[1] - w[0] == 3_600),
        "{name}: 40 ms steps across the 2^33 wrap: {dts:?}"
    );
    // The first DTS is the epoch time modulo 2^33 (ffmpeg unwraps it to a negative
    // number, as the stream wraps soon after), and the clip crosses the wrap.
    let first_ns = clip
        .fragments
        .iter()
        .flatten()
        .find(|s| clip.tracks[s.track].codec.is_video())
        .unwrap()
        .dts_ns;
    let first = ((i128::from(first_ns) * 9 / 100_000) % (1 << 33)) as i64;
    assert_eq!(
        dts[0].rem_euclid(1 << 33),
        first,
        "{name}: epoch time mod 2^33"
    );
    assert!(
        first + 149 * 3_600 > 1 << 33,
        "{name}: the clip crosses the wrap"
    );

    // An HLS playlist over independently built segments.
    let mut playlist = String::new();
    let mut durations = Vec::new();
    for (i, samples) in clip.fragments.iter().enumerate() {
        let segment = ts_segment(&clip.tracks, samples, &mut TsContinuity::new()).unwrap();
        std::fs::write(dir.path().join(format!("segment{i}.ts")), &segment).unwrap();
        let start = samples.iter().map(|s| s.dts_ns).min().unwrap();
        let end = samples
            .iter()
            .map(|s| s.dts_ns + s.duration_ns as i64)
            .max()
            .unwrap();
        durations.push((end - start) as f64 / 1e9);
    }
    let target = durations.iter().fold(0f64, |a, &d| a.max(d)).ceil() as u64;
    writeln!(
        playlist,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD"
    )
    .unwrap();
    for (i, d) in durations.iter().enumerate() {
        writeln!(playlist, "#EXTINF:{d:.3},\nsegment{i}.ts").unwrap();
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    let playlist_path = dir.path().join("playlist.m3u8");
    std::fs::write(&playlist_path, &playlist).unwrap();
    assert_eq!(probe_streams(&playlist_path), expected, "{name}: playlist");
    assert_decodes(&playlist_path);
    assert_counters_continuous(&playlist_path);
}

/// Where the clips start: the 90 kHz clock wraps 2.5 s into them.
fn clip_epoch_ns() -> i64 {
    epoch_before_wrap(2_500_000_000)
}

#[test]
fn h264_1s_gop_plays_as_mpeg_ts() {
    let name = "h264-1s-gop.kvs.mkv";
    check_clip(name, &read_clip(name, clip_epoch_ns()), "h264", None);
}

#[test]
fn h264_aac_plays_as_mpeg_ts() {
    let name = "h264-aac.kvs.mkv";
    check_clip(name, &read_clip(name, clip_epoch_ns()), "h264", Some(281));
}

#[test]
fn h265_2s_gop_plays_as_mpeg_ts() {
    let name = "h265-2s-gop.kvs.mkv";
    check_clip(name, &read_clip(name, clip_epoch_ns()), "hevc", None);
}

/// The same through `demux_fragment`, the samples playback really muxes.
#[test]
fn demuxed_fragments_play_as_mpeg_ts() {
    let epoch_ms = clip_epoch_ns() / 1_000_000;
    for (name, codec, audio) in [
        ("h264-1s-gop.kvs.mkv", "h264", None),
        ("h264-aac.kvs.mkv", "h264", Some(281)),
        ("h265-2s-gop.kvs.mkv", "hevc", None),
    ] {
        check_clip(name, &demux_clip(name, epoch_ms), codec, audio);
    }
}
