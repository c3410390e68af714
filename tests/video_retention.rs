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
use freshet::video::{CreateVideoStream, VideoConfig, VideoRef, VideoService};

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

#[tokio::test]
async fn old_fragments_expire_whole_segments_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Store::open(
        dir.path(),
        StoreConfig {
            roll: RollPolicy {
                max_segment_bytes: 8 * 1024,
                max_segment_age_ms: HOUR / 4,
            },
            ..StoreConfig::default()
        },
        clock.clone(),
    )
    .unwrap();
    let catalog = Arc::new(RedbCatalog::open(&dir.path().join("catalog.redb")).unwrap());
    let config = VideoConfig {
        state_delay_ms: 0,
        ..VideoConfig::default()
    };
    let video = VideoService::open(config, clock.clone(), catalog, store)
        .await
        .unwrap();
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
