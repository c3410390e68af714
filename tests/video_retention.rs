//! Video fragment retention on simulated time: fragments older than the stream's
//! DataRetentionInHours go away a whole segment at a time, newer ones stay readable in
//! order, and fragment numbers keep increasing.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use freshet::clock::ManualClock;
use freshet::store::catalog::RedbCatalog;
use freshet::store::{RollPolicy, Store, StoreConfig};
use freshet::video::fragments::{FragmentMeta, parse_fragment_number};
use freshet::video::{
    CreateVideoStream, SIZE_CAP_TAG, VideoConfig, VideoError, VideoRef, VideoService,
};

const HOUR: i64 = 3_600_000;

fn fragment(producer_ts_ms: i64) -> FragmentMeta {
    FragmentMeta {
        producer_ts_ms,
        cluster_timecode: producer_ts_ms as u64,
        timecode_scale: 1_000_000,
        duration_ms: 2000,
        frame_count: 50,
        ebml_header: Bytes::from_static(b"ebml"),
        info_and_tracks: Bytes::from_static(b"tracks"),
        producer_tags: Vec::new(),
    }
}

/// A video service over a store in `dir/data` and a catalog in `dir`, on `clock`.
async fn service(
    dir: &std::path::Path,
    store_config: StoreConfig,
    clock: &Arc<ManualClock>,
) -> Arc<VideoService> {
    let store = Store::open(&dir.join("data"), store_config, clock.clone()).unwrap();
    let catalog = Arc::new(RedbCatalog::open(&dir.join("catalog.redb")).unwrap());
    let config = VideoConfig {
        state_delay_ms: 0,
        ..VideoConfig::default()
    };
    VideoService::open(config, clock.clone(), catalog, store)
        .await
        .unwrap()
}

#[tokio::test]
async fn old_fragments_expire_whole_segments_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let video = service(
        dir.path(),
        StoreConfig {
            roll: RollPolicy {
                max_segment_bytes: 8 * 1024,
                max_segment_age_ms: HOUR / 4,
            },
            ..StoreConfig::default()
        },
        &clock,
    )
    .await;
    video
        .create(CreateVideoStream {
            name: "cam".into(),
            retention_hours: 1,
            tags: BTreeMap::new(),
            ..CreateVideoStream::default()
        })
        .await
        .unwrap();
    let meta = video
        .get(&VideoRef {
            name: Some("cam".into()),
            arn: None,
        })
        .unwrap();

    // Three simulated hours of fragments, one a minute (1 KiB each).
    let mut numbers = Vec::new();
    for minute in 0..180 {
        let (n, _, _) = video
            .append_fragment(
                &meta,
                fragment(minute * 60_000),
                Bytes::from(vec![minute as u8; 1024]),
            )
            .await
            .unwrap();
        numbers.push(n);
        clock.advance_ms(60_000);
    }
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    let removed = video.enforce_retention().await.unwrap();
    assert!(removed > 0);
    let (first, end) = video.fragment_bounds(&meta).await.unwrap();
    assert_eq!(end, 180);
    // Everything from the last hour is kept; most of the two hours before it is gone.
    assert!(first <= 120, "first kept offset {first}");
    assert!(first >= 90, "first kept offset {first}");
    let kept = video.read_fragments(&meta, 0, 1000).await.unwrap();
    assert_eq!(kept.len() as u64, end - first);
    assert_eq!(parse_fragment_number(&kept[0].0).unwrap().1, first);
    assert_eq!(kept.last().unwrap().2.producer_ts_ms, 179 * 60_000);
    assert_eq!(&kept.last().unwrap().3[..], &vec![179u8; 1024][..]);

    // Ten hours later everything has expired; numbering still carries on.
    clock.advance_ms(10 * HOUR);
    video.enforce_retention().await.unwrap();
    let (first, end) = video.fragment_bounds(&meta).await.unwrap();
    assert_eq!((first, end), (180, 180));
    let (n, _, _) = video
        .append_fragment(&meta, fragment(0), Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(n > *numbers.last().unwrap());
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[tokio::test]
async fn size_cap_drops_the_oldest_fragments_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    // The store's own segments are large: the cap alone must make the log roll.
    let video = service(dir.path(), StoreConfig::default(), &clock).await;
    const CAP: u64 = 2 * 1024 * 1024;
    // A cap below the minimum, or not a number, is refused.
    for bad in ["1000", "two megabytes"] {
        let err = video
            .create(CreateVideoStream {
                name: "bad".into(),
                retention_hours: 24,
                tags: BTreeMap::from([(SIZE_CAP_TAG.to_string(), bad.to_string())]),
                ..CreateVideoStream::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, VideoError::InvalidArgument(_)), "{err:?}");
    }
    video
        .create(CreateVideoStream {
            name: "capped".into(),
            retention_hours: 24,
            tags: BTreeMap::from([(SIZE_CAP_TAG.to_string(), CAP.to_string())]),
            ..CreateVideoStream::default()
        })
        .await
        .unwrap();
    let cam = VideoRef {
        name: Some("capped".into()),
        arn: None,
    };
    let meta = video.get(&cam).unwrap();

    // 8 MiB of fragments, 64 KiB each: four times the cap.
    const FRAGMENT: usize = 64 * 1024;
    for i in 0..128u64 {
        video
            .append_fragment(
                &meta,
                fragment(i as i64 * 1000),
                Bytes::from(vec![i as u8; FRAGMENT]),
            )
            .await
            .unwrap();
        clock.advance_ms(1000);
    }
    let (first, end) = video.fragment_bounds(&meta).await.unwrap();
    assert_eq!(end, 128);
    let kept = video.read_fragments(&meta, 0, 1000).await.unwrap();
    let kept_bytes = kept.len() as u64 * FRAGMENT as u64;
    // Within the cap, and no more than one segment (an eighth of the cap) below it.
    assert!(kept_bytes <= CAP, "kept {kept_bytes} bytes");
    assert!(
        kept_bytes >= CAP - CAP / 8 - 2 * FRAGMENT as u64,
        "kept only {kept_bytes} bytes"
    );
    assert!(dir_bytes(&dir.path().join("data")) <= CAP + CAP / 8);
    // The newest are the ones kept, in order and intact.
    assert_eq!(parse_fragment_number(&kept[0].0).unwrap().1, first);
    assert_eq!(kept.len() as u64, end - first);
    for (i, (_, _, m, cluster)) in kept.iter().enumerate() {
        let n = first + i as u64;
        assert_eq!(m.producer_ts_ms, n as i64 * 1000);
        assert!(cluster.iter().all(|&b| b == n as u8));
    }

    // Lowering the cap by re-tagging trims at once; removing the tag stops trimming.
    video
        .tag(
            &cam,
            BTreeMap::from([(SIZE_CAP_TAG.to_string(), (CAP / 2).to_string())]),
        )
        .await
        .unwrap();
    let (first_after, _) = video.fragment_bounds(&meta).await.unwrap();
    assert!(first_after > first);
    assert!((end - first_after) * FRAGMENT as u64 <= CAP / 2);
    video
        .untag(&cam, &[SIZE_CAP_TAG.to_string()])
        .await
        .unwrap();
    for i in 128..192u64 {
        video
            .append_fragment(
                &meta,
                fragment(i as i64 * 1000),
                Bytes::from(vec![i as u8; FRAGMENT]),
            )
            .await
            .unwrap();
    }
    let (first_uncapped, end) = video.fragment_bounds(&meta).await.unwrap();
    assert_eq!((first_uncapped, end), (first_after, 192));
}
