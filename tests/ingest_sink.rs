//! The camera-ingest sink on a real fragment store: access units in (here taken from
//! a sample clip, as an RTP depacketizer would hand them over), key-frame-aligned 2 s
//! fragments out, stored like PutMedia fragments and demuxable for playback; a loss
//! upstream ends a fragment early and the next one waits for a key frame.

mod common;

use std::sync::Arc;

use freshet::clock::ManualClock;
use freshet::media::fragmenter::{FragmentPolicy, TrackSpec};
use freshet::media::samples::{Codec, demux_fragment};
use freshet::store::catalog::RedbCatalog;
use freshet::store::{Store, StoreConfig};
use freshet::video::ingest::{IngestSink, ensure_stream};
use freshet::video::{VideoConfig, VideoRef, VideoService};

const SAMPLE: &[u8] = include_bytes!("../media-samples/h264-1s-gop.kvs.mkv");
const T0: i64 = 1_700_000_000_000;

#[tokio::test]
async fn access_units_become_stored_key_frame_aligned_fragments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(
        &dir.path().join("data"),
        StoreConfig::default(),
        clock.clone(),
    )
    .unwrap();
    let catalog = Arc::new(RedbCatalog::open(&dir.path().join("catalog.redb")).unwrap());
    let video = VideoService::open(
        VideoConfig {
            state_delay_ms: 0,
            ..VideoConfig::default()
        },
        clock.clone(),
        catalog,
        store,
    )
    .await
    .unwrap();
    assert!(ensure_stream(&video, "cam", false, 24).await.is_err());
    ensure_stream(&video, "cam", true, 24).await.unwrap();
    let (private, frames) = common::sample_video_frames(SAMPLE, T0);
    assert_eq!(frames.len(), 150);
    let track = TrackSpec {
        codec: Codec::H264,
        codec_private: private,
        width: 320,
        height: 240,
        sample_rate: 0,
        channels: 0,
    };
    let mut sink = IngestSink::new(video.clone(), "cam", vec![track], FragmentPolicy::default());
    // Frames 0..=99 arrive; 100..=109 are lost (a loss upstream after frame 99);
    // 110..=149 arrive (the next key frame is frame 125).
    for (i, (t, key, data)) in frames.iter().enumerate() {
        if i == 100 {
            sink.discontinuity().await.unwrap();
        }
        if (100..110).contains(&i) {
            continue;
        }
        sink.frame(0, *t, *key, data.clone()).await.unwrap();
    }
    sink.finish().await.unwrap();
    let stats = sink.stats();
    assert_eq!((stats.fragments_stored, stats.discontinuities), (3, 1));
    // Frames 110..=124 came after the loss and before a key frame: dropped.
    assert_eq!(stats.dropped_frames, 15);

    let meta = video
        .get(&VideoRef {
            name: Some("cam".into()),
            arn: None,
        })
        .unwrap();
    let stored = video.read_fragments(&meta, 0, 100).await.unwrap();
    let starts: Vec<i64> = stored.iter().map(|f| f.2.producer_ts_ms).collect();
    assert_eq!(starts, [T0, T0 + 2000, T0 + 5000]);
    // Each lasts to the end of its last frame: the first up to the key frame that
    // started the next one; the one cut by the loss and the last one (50 and 25
    // frames 40 ms apart) one frame spacing past their last frame.
    let durations: Vec<u64> = stored.iter().map(|f| f.2.duration_ms).collect();
    assert_eq!(durations, [2000, 2000, 1000]);
    let mut total = 0;
    for (_, _, m, cluster) in &stored {
        let d = demux_fragment(
            &m.info_and_tracks,
            cluster,
            m.producer_ts_ms,
            m.cluster_timecode,
            m.timecode_scale,
            Some(m.duration_ms),
        )
        .unwrap();
        assert!(d.samples[0].keyframe);
        assert_eq!(d.samples.len() as u32, m.frame_count);
        // The samples end where the stored duration says.
        let last = d.samples.last().unwrap();
        let end_ns = last.dts_ns + last.duration_ns as i64;
        assert_eq!(
            end_ns,
            (m.producer_ts_ms + m.duration_ms as i64) * 1_000_000
        );
        total += d.samples.len();
    }
    assert_eq!(total, 100 + 25);
}
