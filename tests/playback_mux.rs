//! Playback muxing end to end on the real sample clips (`media-samples/*.kvs.mkv`):
//! every Cluster is demuxed the way a stored fragment is (`media::samples`), then
//! written as fragmented MP4 (HLS/DASH) and as a progressive MP4 (GetClip) by
//! `media::fmp4`, and the output is checked with ffprobe/ffmpeg and, as an independent
//! parser, the `mp4` crate.

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use freshet::media::fmp4;
use freshet::media::mkv::{Limits, MkvEvent, MkvReader};
use freshet::media::samples::{Codec, FragmentSamples, MediaTrack, Sample, demux_fragment};

/// Producer time of the first fragment: the clips' timecodes start at 0.
const EPOCH_MS: i64 = 1_700_000_000_000;

struct Clip {
    file: &'static str,
    video_codec: &'static str,
    codec_string: &'static str,
    audio_frames: Option<u32>,
}

const CLIPS: [Clip; 3] = [
    Clip {
        file: "h264-1s-gop.kvs.mkv",
        video_codec: "h264",
        codec_string: "avc1.42C01E",
        audio_frames: None,
    },
    Clip {
        file: "h264-aac.kvs.mkv",
        video_codec: "h264",
        codec_string: "avc1.4D401E",
        audio_frames: Some(281),
    },
    Clip {
        file: "h265-2s-gop.kvs.mkv",
        video_codec: "hevc",
        codec_string: "hvc1.1.6.L60.90",
        audio_frames: None,
    },
];

/// Reads a clip and demuxes each of its Clusters as a stored fragment.
fn fragments(file: &str) -> Vec<FragmentSamples> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("media-samples")
        .join(file);
    let body = std::fs::read(&path).unwrap();
    let events = MkvReader::new(Limits::default())
        .read_to_end(&body)
        .unwrap();
    let mut header = None;
    let mut out = Vec::new();
    for event in events {
        match event {
            MkvEvent::Header(h) => header = Some(h),
            MkvEvent::FragmentEnd(fragment) => {
                let header = header.as_ref().unwrap();
                // As PutMedia stores it: producer time of the Cluster Timecode.
                let cluster_ms = (u128::from(fragment.cluster_timecode)
                    * u128::from(header.timecode_scale)
                    / 1_000_000) as i64;
                let cluster = Bytes::from(fragment.raw_cluster_bytes);
                let demuxed = demux_fragment(
                    &header.info_and_tracks_bytes,
                    &cluster,
                    EPOCH_MS + cluster_ms,
                    fragment.cluster_timecode,
                    header.timecode_scale,
                    None,
                )
                .unwrap_or_else(|e| panic!("{file}: {e}"));
                // Zero copy: every sample lies inside the stored Cluster.
                let range = cluster.as_ptr_range();
                for sample in &demuxed.samples {
                    assert!(range.contains(&sample.data.as_ptr()));
                }
                out.push(demuxed);
            }
            _ => {}
        }
    }
    out
}

fn all_samples(fragments: &[FragmentSamples]) -> (Vec<MediaTrack>, Vec<Sample>) {
    let tracks = fragments[0].tracks.clone();
    for f in fragments {
        assert_eq!(f.tracks, tracks);
    }
    let samples = fragments.iter().flat_map(|f| f.samples.clone()).collect();
    (tracks, samples)
}

fn run(cmd: &mut Command) -> String {
    let output = cmd
        .output()
        .expect("ffmpeg/ffprobe are installed by scripts/test.sh");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// ffprobe's streams with decoded frame counts.
fn probe_streams(path: &Path) -> Vec<serde_json::Value> {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg("stream=codec_type,codec_name,nb_read_frames,width,height,sample_rate,channels")
        .args(["-of", "json"])
        .arg(path));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json["streams"].as_array().unwrap().clone()
}

/// Checks the streams ffprobe sees and that ffmpeg decodes everything without error.
fn check_decodes(path: &Path, clip: &Clip) {
    let streams = probe_streams(path);
    let video: Vec<_> = streams
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .collect();
    assert_eq!(video.len(), 1, "{}: {streams:?}", clip.file);
    assert_eq!(video[0]["codec_name"], clip.video_codec);
    assert_eq!(video[0]["nb_read_frames"], "150", "{}", clip.file);
    assert_eq!(video[0]["width"], 320);
    assert_eq!(video[0]["height"], 240);
    let audio: Vec<_> = streams
        .iter()
        .filter(|s| s["codec_type"] == "audio")
        .collect();
    match clip.audio_frames {
        None => assert!(audio.is_empty()),
        Some(frames) => {
            assert_eq!(audio.len(), 1, "{}: {streams:?}", clip.file);
            assert_eq!(audio[0]["codec_name"], "aac");
            assert_eq!(audio[0]["sample_rate"], "48000");
            assert_eq!(audio[0]["channels"], 2);
            // ffmpeg's AAC decoder may hold back the encoder priming frame.
            let decoded: u32 = audio[0]["nb_read_frames"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (frames - 1..=frames).contains(&decoded),
                "{}: {decoded} AAC frames",
                clip.file
            );
        }
    }
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"]));
}

/// (pts_time, flags) of every video packet.
fn video_packets(path: &Path) -> Vec<(f64, String)> {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("packet=pts_time,flags")
        .args(["-of", "json"])
        .arg(path));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pts_time"].as_str().unwrap().parse().unwrap(),
                p["flags"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Top-level boxes: (type, offset, size).
fn top_level_boxes(file: &[u8]) -> Vec<(String, usize, usize)> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at + 8 <= file.len() {
        let mut size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&file[at + 4..at + 8]).into_owned();
        if size == 1 {
            size = u64::from_be_bytes(file[at + 8..at + 16].try_into().unwrap()) as usize;
        }
        assert!(size >= 8 && at + size <= file.len(), "box {kind} at {at}");
        boxes.push((kind, at, size));
        at += size;
    }
    assert_eq!(at, file.len());
    boxes
}

fn mp4_reader(file: &[u8]) -> mp4::Mp4Reader<Cursor<&[u8]>> {
    mp4::Mp4Reader::read_header(Cursor::new(file), file.len() as u64).unwrap()
}

#[test]
fn fragmented_mp4_plays_with_timestamps_preserved() {
    let dir = tempfile::tempdir().unwrap();
    for clip in &CLIPS {
        let fragments = fragments(clip.file);
        let tracks = &fragments[0].tracks;
        assert_eq!(fmp4::codec_string(&tracks[0]), clip.codec_string);
        if clip.audio_frames.is_some() {
            assert_eq!(fmp4::codec_string(&tracks[1]), "mp4a.40.2");
        }
        let mut file = fmp4::init_segment(tracks);
        let init_len = file.len();
        for (i, fragment) in fragments.iter().enumerate() {
            file.extend(fmp4::media_segment(
                i as u32 + 1,
                &fragment.tracks,
                &fragment.samples,
            ));
        }
        let kinds: Vec<String> = top_level_boxes(&file).into_iter().map(|b| b.0).collect();
        let mut expected = vec!["ftyp".to_string(), "moov".to_string()];
        for _ in &fragments {
            expected.extend(["styp", "moof", "mdat"].map(String::from));
        }
        assert_eq!(kinds, expected, "{}", clip.file);

        let path = dir.path().join(format!("{}.fmp4.mp4", clip.file));
        std::fs::write(&path, &file).unwrap();
        check_decodes(&path, clip);

        // Timestamps are the producer's: absolute, and 5.96 s from first to last frame.
        let packets = video_packets(&path);
        assert_eq!(packets.len(), 150);
        let first = packets[0].0;
        assert!(
            (first - EPOCH_MS as f64 / 1000.0).abs() < 0.001,
            "{}: first pts {first}",
            clip.file
        );
        let span = packets[149].0 - first;
        assert!((span - 5.96).abs() < 0.001, "{}: span {span}", clip.file);
        for (n, (pts, _)) in packets.iter().enumerate() {
            assert!((pts - first - n as f64 * 0.04).abs() < 0.0001);
        }
        let keys = packets.iter().filter(|p| p.1.starts_with('K')).count();
        assert_eq!(
            keys,
            fragments.len(),
            "{}: one key frame per fragment",
            clip.file
        );

        // An independent parser: the mp4 crate.
        let reader = mp4_reader(&file);
        assert!(reader.is_fragmented());
        assert_eq!(reader.moofs.len(), fragments.len());
        assert_eq!(reader.tracks().len(), tracks.len());
        let video = &reader.tracks()[&1];
        assert_eq!(video.timescale(), 90_000);
        assert_eq!(video.sample_count(), 150);
        if let Some(frames) = clip.audio_frames {
            let audio = &reader.tracks()[&2];
            assert_eq!(audio.timescale(), 48_000);
            assert_eq!(audio.sample_count(), frames);
        }
        // The init segment alone is a valid (empty) movie.
        let init = mp4_reader(&file[..init_len]);
        assert_eq!(init.tracks().len(), tracks.len());
        assert_eq!(init.sample_count(1).unwrap(), 0);
    }
}

#[test]
fn progressive_mp4_is_faststart_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    for clip in &CLIPS {
        let (tracks, samples) = all_samples(&fragments(clip.file));
        let file = fmp4::progressive_mp4(&tracks, &samples);

        let boxes = top_level_boxes(&file);
        let kinds: Vec<&str> = boxes.iter().map(|b| b.0.as_str()).collect();
        assert_eq!(kinds, ["ftyp", "moov", "mdat"], "{}", clip.file);

        let path = dir.path().join(format!("{}.mp4", clip.file));
        std::fs::write(&path, &file).unwrap();
        check_decodes(&path, clip);
        let out = run(Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=duration,start_time"])
            .args(["-of", "json"])
            .arg(&path));
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let duration: f64 = json["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((duration - 6.0).abs() < 0.01, "{}: {duration}", clip.file);
        let packets = video_packets(&path);
        assert_eq!(packets.len(), 150);
        assert_eq!(packets[0].0, 0.0, "{}: the clip starts at 0", clip.file);
        assert!((packets[149].0 - 5.96).abs() < 0.001);

        // An independent parser reads back every sample: bytes, times, sync flags.
        let mut reader = mp4_reader(&file);
        assert!(!reader.is_fragmented());
        assert_eq!(reader.tracks().len(), tracks.len());
        for (index, track) in tracks.iter().enumerate() {
            let id = index as u32 + 1;
            let expected: Vec<&Sample> = samples.iter().filter(|s| s.track == index).collect();
            let timescale = track.timescale();
            assert_eq!(reader.tracks()[&id].timescale(), timescale);
            assert_eq!(reader.sample_count(id).unwrap() as usize, expected.len());
            let origin = samples.iter().map(|s| s.dts_ns).min().unwrap();
            for (n, sample) in expected.iter().enumerate() {
                let read = reader.read_sample(id, n as u32 + 1).unwrap().unwrap();
                assert_eq!(
                    read.bytes, sample.data,
                    "{} track {id} sample {n}",
                    clip.file
                );
                assert_eq!(read.is_sync, sample.keyframe || track.codec == Codec::Aac);
                // Media time of the sample vs its DTS on the clip's timeline (the
                // track's start offset is in the edit list, not in the media times).
                let start = (expected[0].dts_ns - origin) as f64 / 1e9;
                let dts = (sample.dts_ns - origin) as f64 / 1e9;
                let media = read.start_time as f64 / f64::from(timescale);
                assert!(
                    (media + start - dts).abs() <= 1.0 / f64::from(timescale),
                    "{} track {id} sample {n}: {media} + {start} vs {dts}",
                    clip.file
                );
            }
        }
    }
}

#[test]
fn demuxed_fragments_match_the_clips() {
    for clip in &CLIPS {
        let fragments = fragments(clip.file);
        let (tracks, samples) = all_samples(&fragments);
        assert_eq!(tracks.len(), 1 + usize::from(clip.audio_frames.is_some()));
        assert!(tracks[0].codec.is_video());
        assert_eq!((tracks[0].width, tracks[0].height), (320, 240));
        let video: Vec<&Sample> = samples.iter().filter(|s| s.track == 0).collect();
        assert_eq!(video.len(), 150);
        for (n, sample) in video.iter().enumerate() {
            // No B-frames: DTS = PTS = producer time + n * 40 ms.
            assert_eq!(sample.pts_ns, EPOCH_MS * 1_000_000 + n as i64 * 40_000_000);
            assert_eq!(sample.dts_ns, sample.pts_ns);
            assert_eq!(sample.duration_ns, 40_000_000);
            // 4-byte NAL unit lengths that add up to the sample.
            let mut rest = &sample.data[..];
            while !rest.is_empty() {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                rest = &rest[4 + len..];
            }
        }
        for f in &fragments {
            let first_video = f.samples.iter().find(|s| s.track == 0).unwrap();
            assert!(first_video.keyframe);
            for pair in f.samples.windows(2) {
                assert!(pair[0].dts_ns <= pair[1].dts_ns);
            }
        }
        if let Some(frames) = clip.audio_frames {
            let audio = &tracks[1];
            assert_eq!(audio.codec, Codec::Aac);
            assert_eq!((audio.sample_rate, audio.channels), (48_000, 2));
            let audio: Vec<&Sample> = samples.iter().filter(|s| s.track == 1).collect();
            assert_eq!(audio.len() as u32, frames);
            // 1024 samples at 48 kHz: 21.333 ms, on a 1 ms timecode grid.
            for pair in audio.windows(2) {
                let step = pair[1].pts_ns - pair[0].pts_ns;
                assert!((21_000_000..=22_000_000).contains(&step), "{step}");
            }
        }
    }
}
