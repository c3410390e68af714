//! The camera-ingest sink on a real fragment store: access units in (here taken from
//! a sample clip, as an RTP depacketizer would hand them over), key-frame-aligned 2 s
//! fragments out, stored like PutMedia fragments and demuxable for playback; a loss
//! upstream ends a fragment early and the next one waits for a key frame.

mod common;

use std::sync::Arc;

use freshet::clock::ManualClock;
use freshet::media::fragmenter::FragmentPolicy;
use freshet::media::samples::demux_fragment;
use freshet::store::catalog::RedbCatalog;
use freshet::store::{Store, StoreConfig};
use freshet::video::ingest::{IngestSink, ensure_stream};
use freshet::video::{VideoConfig, VideoRef, VideoService};

const SAMPLE: &[u8] = include_bytes!("../media-samples/h264-1s-gop.kvs.mkv");
const T0: i64 = 1_700_000_000_000;

#[tokio::test]
async fn access_units_become_stored_key_frame_aligned_fragments() {
    let clock = Arc::new(ManualClock::new(T0));
    let (_dir, video) = service_on(clock).await;
    assert!(ensure_stream(&video, "other", false, 24).await.is_err());
    let (mut sink, frames) = sample_sink(&video);
    assert_eq!(frames.len(), 150);
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

    let (_, stored) = stored_fragments(&video).await;
    let starts: Vec<i64> = stored.iter().map(|f| f.2.producer_ts_ms).collect();
    assert_eq!(starts, [T0, T0 + 2000, T0 + 5000]);
    // Each lasts to the end of its last frame: the first up to the key frame that
    // started the next one; the one cut by the loss and the last one (50 and 25
    // frames 40 ms apart) one frame spacing past their last frame.
    let durations: Vec<u64> = stored.iter().map(|f| f.2.duration_ms).collect();
    assert_eq!(durations, [2000, 2000, 1000]);
    let mut total = 0;
    for (_, _, m, cluster) in &stored {
        let d = demux_checked(m, cluster);
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

/// A sink for stream `cam` of the sample's H.264 track, and the sample's frames
/// (producer time, key frame, data) from `T0`.
fn sample_sink(video: &Arc<VideoService>) -> (IngestSink, Vec<(i64, bool, bytes::Bytes)>) {
    let (private, frames) = common::sample_video_frames(SAMPLE, T0);
    let track = common::sample_h264_track(private);
    let sink = IngestSink::new(video.clone(), "cam", vec![track], FragmentPolicy::default());
    (sink, frames)
}

type StoredFragment = (
    String,
    i64,
    freshet::video::fragments::FragmentMeta,
    bytes::Bytes,
);

/// Stream `cam` and its stored fragments in arrival order.
async fn stored_fragments(
    video: &Arc<VideoService>,
) -> (freshet::video::VideoStreamMeta, Vec<StoredFragment>) {
    let meta = video
        .get(&VideoRef {
            name: Some("cam".into()),
            arn: None,
        })
        .unwrap();
    let stored = video.read_fragments(&meta, 0, 100).await.unwrap();
    (meta, stored)
}

/// A stored fragment demuxed: it starts with a key frame and holds its frame count.
fn demux_checked(
    m: &freshet::video::fragments::FragmentMeta,
    cluster: &bytes::Bytes,
) -> freshet::media::samples::FragmentSamples {
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
    d
}

/// A store and video service on `clock`, with one stream `cam` created.
async fn service_on(clock: Arc<ManualClock>) -> (tempfile::TempDir, Arc<VideoService>) {
    let dir = tempfile::tempdir().unwrap();
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
        clock,
        catalog,
        store,
    )
    .await
    .unwrap();
    ensure_stream(&video, "cam", true, 24).await.unwrap();
    (dir, video)
}

/// The producer clock steps back 10 s in the middle of a GOP, then forward an hour in
/// the middle of another, while frames arrive in real time. No frame is dropped, every
/// fragment is kept (also the one that starts before its predecessor), the steps are
/// counted, and each fragment's server timestamp is when its key frame arrived, not
/// when it was stored.
#[tokio::test]
async fn producer_clock_steps_keep_every_frame_and_fragments_carry_their_arrival_time() {
    let clock = Arc::new(ManualClock::new(T0));
    let (_dir, video) = service_on(clock.clone()).await;
    let (mut sink, frames) = sample_sink(&video);
    let keys: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].1).collect();
    assert_eq!(keys, [0, 25, 50, 75, 100, 125], "the sample's GOPs changed");
    let step = |i: usize| match i {
        0..60 => 0,
        60..110 => -10_000,
        _ => 3_600_000,
    };
    for (i, (t, key, data)) in frames.iter().enumerate() {
        // Frames arrive 40 ms apart, as the producer sends them.
        clock.set_ms(T0 + 40 * i as i64);
        sink.frame(0, t + step(i), *key, data.clone())
            .await
            .unwrap();
    }
    clock.advance_ms(40);
    sink.finish().await.unwrap();
    let stats = sink.stats();
    assert_eq!(stats.clock_steps, 2);
    assert_eq!(stats.dropped_frames, 0);
    assert_eq!(stats.frames, 150);

    let (meta, stored) = stored_fragments(&video).await;
    // Cut at frame 50 (2 s), at the key frames after each step (75, 125), and the end.
    let starts: Vec<i64> = stored.iter().map(|f| f.2.producer_ts_ms).collect();
    assert_eq!(
        starts,
        [T0, T0 + 2000, T0 + 3000 - 10_000, T0 + 5000 + 3_600_000]
    );
    let arrivals: Vec<i64> = stored.iter().map(|f| f.1).collect();
    assert_eq!(arrivals, [T0, T0 + 2000, T0 + 3000, T0 + 5000]);
    let mut samples = 0;
    for (_, _, m, cluster) in &stored {
        let d = demux_checked(m, cluster);
        // Within a fragment, frames keep increasing and their spacing: none is
        // squeezed onto the previous one.
        for w in d.samples.windows(2) {
            let gap_ms = (w[1].dts_ns - w[0].dts_ns) / 1_000_000;
            assert!((1..=40).contains(&gap_ms), "frames {gap_ms} ms apart");
        }
        samples += d.samples.len();
    }
    assert_eq!(samples, 150);

    // Listed by producer time: the fragment from the stepped-back clock comes first;
    // by server time, in arrival order.
    let list = |base| {
        let video = video.clone();
        let meta = meta.clone();
        async move {
            video
                .list_fragments(
                    &meta,
                    &freshet::video::FragmentListing {
                        base: Some(base),
                        range: None,
                        next_token: None,
                        max: 100,
                    },
                )
                .await
                .unwrap()
                .fragments
                .iter()
                .map(|f| f.entry.producer_ms)
                .collect::<Vec<_>>()
        }
    };
    use freshet::video::index::TimeBase;
    assert_eq!(
        list(TimeBase::Producer).await,
        [starts[2], starts[0], starts[1], starts[3]]
    );
    assert_eq!(list(TimeBase::Server).await, starts);
}
