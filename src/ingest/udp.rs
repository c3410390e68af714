//! A bare RTP feed: a sender (ffmpeg `-f rtp`, GStreamer `udpsink`, an encoder) pushes
//! RTP to a UDP port, RTCP to the port above it (RFC 3550 §11). The media are described
//! by the feed's SDP (each `m=` line's port; the video's may be left to the configured
//! port) or by a codec name and payload type.
//!
//! After 5 s without packets the last fragment is stored and the feed waits again
//! (state CONNECTING); packets resume the same session.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::session::{RtpSession, media_from_codec, media_from_sdp};
use super::{FeedConfig, FeedManager, FeedSource, FeedState, StatusCell};
use crate::media::fragmenter::FragmentPolicy;
use crate::video::ingest::ensure_stream;

/// Silence after which a feed counts as stopped.
pub const IDLE_AFTER: Duration = Duration::from_secs(5);
/// Largest UDP datagram read.
const MAX_DATAGRAM: usize = 65_536;

/// Binds `port` (RTP) and `port + 1` (RTCP) on all interfaces.
pub async fn bind_pair(port: u16) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let rtp = UdpSocket::bind(("0.0.0.0", port)).await?;
    let rtcp = UdpSocket::bind(("0.0.0.0", port.wrapping_add(1))).await?;
    Ok((rtp, rtcp))
}

/// Runs a configured RTP feed until `stop`.
pub async fn run(
    manager: Arc<FeedManager>,
    config: FeedConfig,
    status: StatusCell,
    mut stop: watch::Receiver<bool>,
) {
    let FeedSource::RtpUdp {
        port,
        sdp,
        codec,
        payload_type,
    } = &config.source
    else {
        return;
    };
    let media = match (sdp, codec) {
        (Some(sdp), _) => media_from_sdp(sdp),
        (None, Some(c)) => media_from_codec(c, payload_type.unwrap_or(96)),
        (None, None) => Err("no SDP and no codec".to_string()),
    };
    let media = match media {
        Ok(m) => m,
        Err(e) => {
            status.set_state(FeedState::Failed, Some(e));
            return;
        }
    };
    // One socket pair per media: the video on the configured port, others on theirs.
    let mut sockets = Vec::new();
    for (i, m) in media.iter().enumerate() {
        let p = if i == 0 || m.port == 0 { *port } else { m.port };
        if i > 0 && p == *port {
            // Audio multiplexed on the video's port: told apart by payload type.
            continue;
        }
        match bind_pair(p).await {
            Ok(pair) => sockets.push((i, pair)),
            Err(e) => {
                status.set_state(
                    FeedState::Failed,
                    Some(format!("cannot listen on UDP port {p}: {e}")),
                );
                tracing::error!(stream = config.stream_name, port = p, error = %e, "RTP feed cannot bind");
                return;
            }
        }
    }
    let opts = manager.options();
    let video = manager.video().clone();
    let clock = manager.clock().clone();
    let policy = FragmentPolicy {
        target_ms: config.fragment_ms as i64,
        ..FragmentPolicy::default()
    };
    status.set_state(FeedState::Connecting, None);
    let mut session: Option<RtpSession> = None;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, bool, Bytes)>(1024);
    let mut readers = Vec::new();
    for (track, (rtp, rtcp)) in sockets {
        for (sock, is_rtcp) in [(rtp, false), (rtcp, true)] {
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                while let Ok((n, _)) = sock.recv_from(&mut buf).await {
                    if tx
                        .send((track, is_rtcp, Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }));
        }
    }
    drop(tx);
    let mut last_packet = clock.now_ms();
    loop {
        let deadline = session
            .as_ref()
            .and_then(|s| s.next_deadline_ms())
            .map(|d| Duration::from_millis((d - clock.now_ms()).clamp(1, 1000) as u64))
            .unwrap_or(Duration::from_millis(100));
        tokio::select! {
            _ = stop.changed() => break,
            got = rx.recv() => {
                let Some((track, is_rtcp, data)) = got else { break };
                let now = clock.now_ms();
                if session.is_none() {
                    if let Err(e) = ensure_stream(&video, &config.stream_name, opts.auto_create, opts.retention_hours).await {
                        status.set_state(FeedState::Failed, Some(e.to_string()));
                        continue;
                    }
                    match RtpSession::new(video.clone(), &config.stream_name, &media, policy) {
                        Ok(s) => session = Some(s),
                        Err(e) => {
                            status.set_state(FeedState::Failed, Some(e));
                            break;
                        }
                    }
                    status.set_state(FeedState::Receiving, None);
                }
                let s = session.as_mut().expect("created above");
                // Media multiplexed on one port are told apart by payload type.
                let track = if track == 0 && data.len() > 1 && !is_rtcp {
                    s.track_of_payload_type(data[1] & 0x7F).unwrap_or(0)
                } else {
                    track
                };
                last_packet = now;
                let result = if is_rtcp {
                    s.rtcp(track, &data);
                    Ok(())
                } else {
                    s.rtp(track, data, now).await
                };
                if let Err(e) = result {
                    status.set_state(FeedState::Failed, Some(e.to_string()));
                }
                // The status is shared with API readers: refresh it now and then.
                if s.stats().packets % 32 == 1 {
                    let stats = s.stats();
                    status.session(stats.packets, stats.lost, stats.sink);
                }
            }
            _ = tokio::time::sleep(deadline) => {
                let now = clock.now_ms();
                if let Some(s) = session.as_mut() {
                    let _ = s.tick(now).await;
                    let stats = s.stats();
                    status.session(stats.packets, stats.lost, stats.sink);
                    if now - last_packet >= IDLE_AFTER.as_millis() as i64 {
                        let _ = s.finish(now).await;
                        let stats = s.stats();
                        status.end_session(stats.packets, stats.lost, stats.sink);
                        session = None;
                        status.set_state(FeedState::Connecting, None);
                    }
                }
            }
        }
    }
    if let Some(s) = session.as_mut() {
        let _ = s.finish(clock.now_ms()).await;
        let stats = s.stats();
        status.end_session(stats.packets, stats.lost, stats.sink);
    }
    for r in readers {
        r.abort();
    }
}
