//! Real RTP from ffmpeg through the pure ingest code (`media::{rtp, sdp, depacketize}`):
//! ffmpeg encodes a test pattern (libx264 / libx265) or a sine tone (aac) and sends it
//! with its RTP muxer (`-f rtp -sdp_file`) as fast as it can to UDP sockets bound
//! here; the SDP file is parsed with `sdp.rs`, the packets depacketized, and the
//! result checked (frame count, key frames every 25 frames, codec private data,
//! picture size) and decoded by ffprobe from an Annex B / ADTS file written from the
//! access units and the configuration record. A second pass drops and reorders
//! packets through `Reorder`: nothing broken comes out, the frames after the loss
//! resume at the next key frame, marked as a discontinuity.
//!
//! Needs `ffmpeg` and `ffprobe` (with libx264, libx265 and the native AAC encoder) on
//! the PATH.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use freshet::media::depacketize::{AccessUnit, Depacketizer};
use freshet::media::rtp::{
    Reorder, ReorderConfig, ReorderEvent, RtpPacket, SenderReport, parse_rtcp,
};
use freshet::media::samples::Codec;
use freshet::media::sdp::{MediaDescription, SessionDescription};

/// What ffmpeg sent: the SDP it wrote, its RTP packets and RTCP packets.
struct Capture {
    media: MediaDescription,
    rtp: Vec<RtpPacket>,
    rtcp: Vec<Vec<u8>>,
    _dir: tempfile::TempDir,
}

/// Binds an RTP socket on an even loopback port and the RTCP socket on the next one
/// (ffmpeg sends RTCP to port + 1).
fn bind_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = rtp.local_addr().unwrap().port();
        if !port.is_multiple_of(2) || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            return (rtp, rtcp);
        }
    }
    panic!("no free UDP port pair");
}

/// A large receive buffer, so that nothing is dropped while ffmpeg bursts.
fn grow_receive_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 8 * 1024 * 1024;
    // SAFETY: setsockopt on a valid socket with a pointer to a c_int of the given size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn receive(socket: UdpSocket, done: Arc<AtomicBool>) -> JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        grow_receive_buffer(&socket);
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut packets = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => packets.push(buf[..n].to_vec()),
                Err(_) if done.load(Ordering::SeqCst) => break,
                Err(_) => {}
            }
        }
        packets
    })
}

/// Runs one ffmpeg RTP sender and returns what it sent.
fn capture(input: &[&str], output: &[&str]) -> Capture {
    let dir = tempfile::tempdir().unwrap();
    let sdp_path = dir.path().join("out.sdp");
    let (rtp, rtcp) = bind_pair();
    let port = rtp.local_addr().unwrap().port();
    let done = Arc::new(AtomicBool::new(false));
    let rtp_thread = receive(rtp, done.clone());
    let rtcp_thread = receive(rtcp, done.clone());
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(input)
        .args(output)
        .args(["-f", "rtp", "-sdp_file"])
        .arg(&sdp_path)
        .arg(format!("rtp://127.0.0.1:{port}"))
        .status()
        .expect("ffmpeg must be installed to run this test");
    done.store(true, Ordering::SeqCst);
    assert!(status.success(), "ffmpeg failed: {status}");
    let rtp_packets = rtp_thread.join().unwrap();
    let rtcp = rtcp_thread.join().unwrap();
    let sdp_text = std::fs::read(&sdp_path).unwrap();
    let sdp = SessionDescription::parse(&sdp_text).expect("ffmpeg's SDP parses");
    let [media] = &sdp.media[..] else {
        panic!("one media expected: {sdp:?}");
    };
    let rtp: Vec<RtpPacket> = rtp_packets
        .into_iter()
        .map(|p| RtpPacket::parse(Bytes::from(p)).expect("ffmpeg's RTP parses"))
        .collect();
    assert!(!rtp.is_empty(), "no RTP received");
    for pair in rtp.windows(2) {
        assert_eq!(
            pair[1].sequence,
            pair[0].sequence.wrapping_add(1),
            "UDP lost or reordered packets on loopback"
        );
    }
    Capture {
        media: media.clone(),
        rtp,
        rtcp,
        _dir: dir,
    }
}

/// Every packet in order through a fresh depacketizer.
fn depacketize_all(
    media: &MediaDescription,
    packets: &[RtpPacket],
) -> (Depacketizer, Vec<AccessUnit>) {
    let codec = media.codec.as_ref().expect("a supported codec");
    let mut d = Depacketizer::new(codec).unwrap();
    let mut out = Vec::new();
    for packet in packets {
        assert_eq!(packet.payload_type, codec.payload_type);
        d.push(packet).unwrap();
        out.extend(std::iter::from_fn(|| d.pop()));
    }
    d.flush();
    out.extend(std::iter::from_fn(|| d.pop()));
    (d, out)
}

/// Packets through a `Reorder` (one packet per simulated millisecond) and a fresh
/// depacketizer; depacketizer errors (the broken fragments) are counted.
fn depacketize_reordered(
    media: &MediaDescription,
    packets: &[RtpPacket],
) -> (Vec<AccessUnit>, usize, u64) {
    let mut d = Depacketizer::new(media.codec.as_ref().unwrap()).unwrap();
    let mut reorder = Reorder::new(ReorderConfig::default());
    let mut out = Vec::new();
    let mut errors = 0;
    let mut feed = |event: ReorderEvent, d: &mut Depacketizer, out: &mut Vec<AccessUnit>| {
        if d.push_event(&event).is_err() {
            errors += 1;
        }
        out.extend(std::iter::from_fn(|| d.pop()));
    };
    for (i, packet) in packets.iter().enumerate() {
        let now = i as u64;
        reorder.push(packet.clone(), now);
        while let Some(event) = reorder.pop(now) {
            feed(event, &mut d, &mut out);
        }
    }
    while let Some(event) = reorder.pop(u64::MAX) {
        feed(event, &mut d, &mut out);
    }
    d.flush();
    out.extend(std::iter::from_fn(|| d.pop()));
    (out, errors, reorder.stats().lost)
}

/// The NAL units of a length-prefixed access unit.
fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    out
}

/// Parameter sets of an avcC (SPS then PPS).
fn avcc_parameter_sets(record: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(record[0], 1, "avcC version");
    assert_eq!(record[4], 0xFF, "4-byte NAL unit lengths");
    let mut out = Vec::new();
    let mut pos = 5;
    for count_mask in [0x1F, 0xFF] {
        let count = record[pos] & count_mask;
        pos += 1;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([record[pos], record[pos + 1]]));
            out.push(record[pos + 2..pos + 2 + len].to_vec());
            pos += 2 + len;
        }
    }
    out
}

/// Parameter sets of an hvcC (its arrays in order).
fn hvcc_parameter_sets(record: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(record[0], 1, "hvcC version");
    assert_eq!(record[21] & 3, 3, "4-byte NAL unit lengths");
    let mut out = Vec::new();
    let mut pos = 23;
    for _ in 0..record[22] {
        let count = u16::from_be_bytes([record[pos + 1], record[pos + 2]]);
        pos += 3;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([record[pos], record[pos + 1]]));
            out.push(record[pos + 2..pos + 2 + len].to_vec());
            pos += 2 + len;
        }
    }
    assert_eq!(pos, record.len(), "hvcC has trailing bytes");
    out
}

/// Writes an Annex B elementary stream: the parameter sets, then every NAL unit of
/// every access unit, each after a start code.
fn write_annex_b(path: &Path, parameter_sets: &[Vec<u8>], aus: &[AccessUnit]) {
    let mut out = Vec::new();
    for nal in parameter_sets {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    for au in aus {
        for nal in nal_units(&au.data) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
    }
    std::fs::write(path, out).unwrap();
}

/// `ffprobe -count_frames` on a file: (frames read, stream fields).
fn ffprobe(path: &Path, format: &str, entries: &str) -> Vec<(String, String)> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-f", format])
        .args(["-show_entries", &format!("stream={entries}")])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .expect("ffprobe must be installed to run this test");
    assert!(
        output.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "ffprobe reported decoding errors: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("ffprobe gave no {name}: {fields:?}"))
}

/// The sender reports ffmpeg sent, which must be about the RTP stream.
fn check_sender_reports(capture: &Capture) {
    let reports: Vec<SenderReport> = capture
        .rtcp
        .iter()
        .flat_map(|p| parse_rtcp(p).expect("ffmpeg's RTCP parses"))
        .collect();
    assert!(!reports.is_empty(), "no RTCP sender report received");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for sr in reports {
        assert_eq!(sr.ssrc, capture.rtp[0].ssrc);
        assert!((sr.unix_ms - now_ms).abs() < 600_000, "SR wallclock {sr:?}");
    }
}

/// Index of the frame (by RTP timestamp order) each packet belongs to.
fn frame_of_packets(packets: &[RtpPacket]) -> Vec<usize> {
    let mut frame = 0;
    let mut out = Vec::with_capacity(packets.len());
    for (i, p) in packets.iter().enumerate() {
        if i > 0 && p.timestamp != packets[i - 1].timestamp {
            frame += 1;
        }
        out.push(frame);
    }
    out
}

/// The video checks shared by H.264 and H.265.
fn check_video(codec: Codec, capture: &Capture) {
    let media = &capture.media;
    assert_eq!(media.codec.as_ref().unwrap().codec, codec);
    assert_eq!(media.codec.as_ref().unwrap().clock_rate, 90_000);
    check_sender_reports(capture);

    // Clean pass.
    let (d, aus) = depacketize_all(media, &capture.rtp);
    assert_eq!(aus.len(), 50, "access units");
    for (i, au) in aus.iter().enumerate() {
        assert_eq!(au.keyframe, i % 25 == 0, "key frame flag of frame {i}");
        assert!(!au.discontinuity, "frame {i} marked as a discontinuity");
        assert!(!au.data.is_empty());
        if i > 0 {
            assert_eq!(
                au.rtp_timestamp.wrapping_sub(aus[i - 1].rtp_timestamp),
                3600,
                "25 fps in a 90 kHz clock"
            );
        }
        // Length prefixes fill the access unit exactly.
        assert!(!nal_units(&au.data).is_empty());
    }
    assert_eq!(d.dimensions(), Some((320, 240)));
    let record = d.codec_private().expect("codec private data");
    let (parameter_sets, extension) = match codec {
        Codec::H264 => (avcc_parameter_sets(&record), "h264"),
        _ => (hvcc_parameter_sets(&record), "hevc"),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("clean.{extension}"));
    write_annex_b(&path, &parameter_sets, &aus);
    let fields = ffprobe(&path, extension, "nb_read_frames,width,height");
    assert_eq!(field(&fields, "nb_read_frames"), "50");
    assert_eq!(field(&fields, "width"), "320");
    assert_eq!(field(&fields, "height"), "240");

    // Lossy pass: a packet of frame 10 lost (the middle one when fragmented), two
    // pairs of packets swapped (frames 3 and 30, or their neighbours), one duplicated.
    let frames = frame_of_packets(&capture.rtp);
    let packets_of = |frame: usize| -> Vec<usize> {
        (0..frames.len()).filter(|&i| frames[i] == frame).collect()
    };
    let lost_frame = packets_of(10);
    let lost = lost_frame[lost_frame.len() / 2];
    let mut damaged: Vec<RtpPacket> = capture.rtp.clone();
    for frame in [3, 30] {
        let i = packets_of(frame)[0];
        damaged.swap(i, i + 1);
    }
    let duplicate = damaged[packets_of(40)[0]].clone();
    damaged.insert(packets_of(41)[0], duplicate);
    damaged.retain(|p| p.sequence != capture.rtp[lost].sequence);
    let (lossy, errors, lost_count) = depacketize_reordered(media, &damaged);
    // The lost packet was the middle fragment of frame 10: its end fragment is refused.
    assert!(lost_frame.len() >= 3, "frame 10 is not fragmented");
    assert_eq!(errors, 1, "depacketizer errors");
    assert_eq!(lost_count, 1, "the reorder buffer reports one lost packet");
    let expected: Vec<usize> = (0..10).chain(25..50).collect();
    let got: Vec<usize> = lossy
        .iter()
        .map(|au| {
            aus.iter()
                .position(|clean| clean.rtp_timestamp == au.rtp_timestamp)
                .expect("an access unit of the clean pass")
        })
        .collect();
    assert_eq!(got, expected, "frames kept after the loss");
    for (au, &index) in lossy.iter().zip(&got) {
        let clean = &aus[index];
        // Same bytes as the clean pass: no broken fragment inside.
        assert_eq!(au.data, clean.data, "frame {index} differs");
        assert_eq!(au.keyframe, clean.keyframe);
        assert_eq!(
            au.discontinuity,
            index == 25,
            "discontinuity of frame {index}"
        );
    }
    let path = dir.path().join(format!("lossy.{extension}"));
    write_annex_b(&path, &parameter_sets, &lossy);
    let fields = ffprobe(&path, extension, "nb_read_frames");
    assert_eq!(field(&fields, "nb_read_frames"), "35");
}

fn h264_capture(extra: &[&str]) -> Capture {
    let mut output = vec![
        "-c:v",
        "libx264",
        "-g",
        "25",
        "-bf",
        "0",
        "-sc_threshold",
        "0",
        "-pkt_size",
        "600",
    ];
    output.extend_from_slice(extra);
    capture(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "2",
        ],
        &output,
    )
}

/// Parameter sets in-band (ffmpeg's RTP muxer does not ask x264 for global headers):
/// the configuration record comes from the SPS/PPS packets.
#[test]
fn h264_from_ffmpeg() {
    let capture = h264_capture(&[]);
    let codec = capture.media.codec.as_ref().unwrap();
    assert_eq!(codec.packetization_mode, Some(1));
    assert!(codec.sprop_parameter_sets.is_empty());
    // Both FU-A and single NAL unit packets occur.
    let types: Vec<u8> = capture.rtp.iter().map(|p| p.payload[0] & 0x1F).collect();
    assert!(types.contains(&28), "no FU-A packets");
    // ffmpeg aggregates SPS, PPS and SEI into a STAP-A.
    assert!(types.contains(&24), "no STAP-A packets: {types:?}");
    check_video(Codec::H264, &capture);
}

/// Parameter sets only in the SDP (`sprop-parameter-sets`).
#[test]
fn h264_with_global_header_from_ffmpeg() {
    let capture = h264_capture(&["-flags", "+global_header"]);
    let codec = capture.media.codec.as_ref().unwrap();
    assert_eq!(codec.sprop_parameter_sets.len(), 2);
    let types: Vec<u8> = capture.rtp.iter().map(|p| p.payload[0] & 0x1F).collect();
    assert!(
        !types.contains(&7) && !types.contains(&24),
        "SPS in-band despite the global header: {types:?}"
    );
    check_video(Codec::H264, &capture);
}

#[test]
fn h265_from_ffmpeg() {
    let capture = capture(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "2",
        ],
        &[
            "-c:v",
            "libx265",
            "-g",
            "25",
            "-bf",
            "0",
            "-x265-params",
            "log-level=error:keyint=25:min-keyint=25:bframes=0:scenecut=0",
            "-pkt_size",
            "600",
        ],
    );
    let types: Vec<u8> = capture
        .rtp
        .iter()
        .map(|p| (p.payload[0] >> 1) & 0x3F)
        .collect();
    assert!(types.contains(&49), "no FU packets");
    check_video(Codec::H265, &capture);
}

/// An ADTS header (ISO/IEC 13818-7 6.2) for a raw AAC frame of an AudioSpecificConfig.
fn adts_header(config: &[u8], frame_len: usize) -> [u8; 7] {
    let object_type = config[0] >> 3;
    let frequency_index = ((config[0] & 7) << 1) | (config[1] >> 7);
    let channels = (config[1] >> 3) & 0x0F;
    let len = frame_len + 7;
    [
        0xFF,
        0xF1,
        ((object_type - 1) << 6) | (frequency_index << 2) | (channels >> 2),
        ((channels & 3) << 6) | ((len >> 11) as u8 & 3),
        (len >> 3) as u8,
        (((len & 7) as u8) << 5) | 0x1F,
        0xFC,
    ]
}

#[test]
fn aac_from_ffmpeg() {
    let capture = capture(
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "2",
        ],
        &["-c:a", "aac", "-b:a", "64k"],
    );
    let codec = capture.media.codec.as_ref().unwrap();
    assert_eq!(codec.codec, Codec::Aac);
    assert_eq!(codec.clock_rate, 44_100);
    assert_eq!(codec.mode.as_deref(), Some("AAC-hbr"));
    check_sender_reports(&capture);

    let (d, aus) = depacketize_all(&capture.media, &capture.rtp);
    assert_eq!(d.audio_format(), Some((44_100, 1)));
    // ffmpeg puts several access units in a packet.
    assert!(
        aus.len() > capture.rtp.len(),
        "{} AUs in {} packets",
        aus.len(),
        capture.rtp.len()
    );
    // 2 s of 44.1 kHz is 86-88 AAC frames; ffmpeg's RTP muxer does not flush the
    // frames it is still aggregating at the end (83 with ffmpeg 5.1).
    assert!((80..=90).contains(&aus.len()), "{} AUs for 2 s", aus.len());
    for pair in aus.windows(2) {
        assert_eq!(
            pair[1].rtp_timestamp.wrapping_sub(pair[0].rtp_timestamp),
            1024
        );
    }
    assert!(aus.iter().all(|au| au.keyframe && !au.discontinuity));

    let config = d.codec_private().unwrap();
    assert_eq!(Some(config.clone()), codec.config);
    let mut adts = Vec::new();
    for au in &aus {
        adts.extend_from_slice(&adts_header(&config, au.data.len()));
        adts.extend_from_slice(&au.data);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.aac");
    std::fs::write(&path, adts).unwrap();
    let fields = ffprobe(&path, "aac", "nb_read_frames,sample_rate,channels");
    assert_eq!(field(&fields, "nb_read_frames"), aus.len().to_string());
    assert_eq!(field(&fields, "sample_rate"), "44100");
    assert_eq!(field(&fields, "channels"), "1");

    // A lost packet: its access units are missing, the next one is marked.
    let lost = capture.rtp.len() / 2;
    let damaged: Vec<RtpPacket> = capture
        .rtp
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lost)
        .map(|(_, p)| p.clone())
        .collect();
    let (lossy, errors, lost_count) = depacketize_reordered(&capture.media, &damaged);
    assert_eq!((errors, lost_count), (0, 1));
    let (_, only_lost) = depacketize_all(&capture.media, &capture.rtp[lost..=lost]);
    assert_eq!(lossy.len(), aus.len() - only_lost.len());
    let marked: Vec<u32> = lossy
        .iter()
        .filter(|au| au.discontinuity)
        .map(|au| au.rtp_timestamp)
        .collect();
    assert_eq!(marked, [capture.rtp[lost + 1].timestamp]);
}
