//! ISO Base Media File Format (ISO/IEC 14496-12) output for playback: the fragmented
//! MP4 (movie fragments, section 8.8) that HLS (fMP4, RFC 8216 section 3.3) and DASH
//! serve, and the plain "faststart" MP4 that GetClip returns. Sample entries follow ISO/IEC 14496-15 (`avc1` + `avcC`, `hvc1` +
//! `hvcC`) and ISO/IEC 14496-14 (`mp4a` + `esds`); codec strings follow RFC 6381 and
//! ISO/IEC 14496-15 Annex E.
//!
//! - [`init_segment`]: `ftyp` + `moov` (empty sample tables, `mvex`/`trex`).
//! - [`media_segment`]: `styp` + one `moof` (a `traf` per track: `tfhd` with
//!   default-base-is-moof, `tfdt` v1, `trun` v1) + one `mdat`.
//! - [`progressive_mp4`]: `ftyp` + `moov` (full sample tables) + `mdat`, the `moov`
//!   first.
//! - [`codec_string`]: `CODECS=` / `codecs=` values.
//!
//! Input is what [`super::samples::demux_fragment`] produces: [`MediaTrack`]s and
//! [`Sample`]s with nanosecond times. Times are converted to each track's timescale
//! ([`MediaTrack::timescale`]) as absolute values, rounded to the nearest unit, and
//! durations are differences of converted times, so rounding never accumulates.
//! Track IDs are the track index + 1. Samples whose `track` is not an index of
//! `tracks` are ignored.
//!
//! Our own box writer (the `mp4` crate 0.14 writes a 1-byte `hvcC` and loses the
//! AudioSpecificConfig). Pure: builds `Vec<u8>`s, never does I/O, never panics.

use super::samples::{AudioSpecificConfig, Codec, MediaTrack, Sample};

/// `sample_flags` of a sync sample: sample_depends_on = 2 (depends on no other).
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// `sample_flags` of another sample: sample_depends_on = 1, sample_is_non_sync_sample.
pub const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// `mvhd` timescale (and so the unit of `tkhd` durations and edit lists).
const MOVIE_TIMESCALE: u32 = 1000;

/// `tfhd` flag: offsets are relative to the start of the `moof`.
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags: data offset, and per sample duration, size, flags, composition offset.
const TRUN_FLAGS: u32 = 0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800;

const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];
/// ISO 639-2/T "und", packed as three 5-bit letters.
const LANGUAGE_UND: u16 = 0x55C4;

// ---------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------

/// The initialisation segment: `ftyp` and a `moov` describing `tracks` (no samples)
/// with an `mvex` announcing movie fragments.
pub fn init_segment(tracks: &[MediaTrack]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    // iso6: tfdt/trun version 1. Not `cmfc`: CMAF wants one track per file, and
    // audio and video share these segments.
    write_ftyp(
        &mut out,
        b"ftyp",
        b"iso6",
        0,
        &[b"iso6", b"iso5", b"dash", b"mp41"],
    );
    let moov = open(&mut out, b"moov");
    write_mvhd(&mut out, 0, tracks.len());
    for (index, track) in tracks.iter().enumerate() {
        write_trak(&mut out, index, track, None);
    }
    let mvex = open(&mut out, b"mvex");
    for index in 0..tracks.len() {
        let trex = open_full(&mut out, b"trex", 0, 0);
        put_u32(&mut out, track_id(index));
        put_u32(&mut out, 1); // default_sample_description_index
        put_u32(&mut out, 0); // default_sample_duration
        put_u32(&mut out, 0); // default_sample_size
        put_u32(&mut out, 0); // default_sample_flags
        close(&mut out, trex);
    }
    close(&mut out, mvex);
    close(&mut out, moov);
    out
}

/// One media segment: `styp`, a `moof` with one `traf` per track that has samples,
/// and the `mdat` holding each track's samples in turn. `samples` lists each track's
/// samples in decode order (tracks may be interleaved). A track's `tfdt` is its first
/// DTS in its timescale (producer time since the Unix epoch, so consecutive segments
/// continue each other's timeline; negative times are clamped to 0).
pub fn media_segment(sequence_number: u32, tracks: &[MediaTrack], samples: &[Sample]) -> Vec<u8> {
    let by_track = group_by_track(tracks, samples);
    let payload: usize = by_track.iter().flatten().map(|s| s.data.len()).sum();
    let mut out = Vec::with_capacity(payload + 256 + samples.len() * 16);
    // A DASH media segment (no `msix`: there is no `sidx`).
    write_ftyp(&mut out, b"styp", b"msdh", 0, &[b"msdh"]);

    let moof_start = out.len();
    let moof = open(&mut out, b"moof");
    let mfhd = open_full(&mut out, b"mfhd", 0, 0);
    put_u32(&mut out, sequence_number);
    close(&mut out, mfhd);
    // (position of the trun data_offset field, offset of the track's data in mdat)
    let mut data_offsets = Vec::new();
    let mut data_before = 0usize;
    for (index, (track, track_samples)) in tracks.iter().zip(&by_track).enumerate() {
        let Some(first) = track_samples.first() else {
            continue;
        };
        let timescale = track.timescale();
        let traf = open(&mut out, b"traf");
        let tfhd = open_full(&mut out, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF);
        put_u32(&mut out, track_id(index));
        close(&mut out, tfhd);
        let tfdt = open_full(&mut out, b"tfdt", 1, 0);
        let base = ticks(i128::from(first.dts_ns), timescale).max(0);
        put_u64(&mut out, clamp_u64(base));
        close(&mut out, tfdt);
        let trun = open_full(&mut out, b"trun", 1, TRUN_FLAGS);
        put_u32(&mut out, clamp_u32(track_samples.len()));
        data_offsets.push((out.len(), data_before));
        put_u32(&mut out, 0); // data_offset, patched below
        for entry in sample_entries(track, track_samples, 0) {
            put_u32(&mut out, entry.duration);
            put_u32(&mut out, entry.size);
            put_u32(&mut out, entry.flags);
            put_i32(&mut out, clamp_i32(entry.composition_offset));
        }
        close(&mut out, trun);
        close(&mut out, traf);
        data_before += track_samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    close(&mut out, moof);
    let moof_len = out.len() - moof_start;

    let mdat_header_len = write_mdat_header(&mut out, payload as u64);
    for (at, before) in data_offsets {
        let offset = moof_len
            .saturating_add(mdat_header_len)
            .saturating_add(before);
        patch(&mut out, at, &clamp_i32(offset as i128).to_be_bytes());
    }
    for sample in by_track.iter().flatten() {
        out.extend_from_slice(&sample.data);
    }
    out
}

/// A complete, non-fragmented MP4 (for GetClip) with the `moov` before the `mdat`
/// (faststart). The timeline starts at 0 at the earliest DTS of any track; a track that
/// starts later gets an edit list with an empty edit, so tracks stay in sync. Samples
/// are stored in the given order, each run of one track's samples a chunk.
pub fn progressive_mp4(tracks: &[MediaTrack], samples: &[Sample]) -> Vec<u8> {
    let by_track = group_by_track(tracks, samples);
    let origin = by_track
        .iter()
        .filter_map(|t| t.first())
        .map(|s| s.dts_ns)
        .min()
        .unwrap_or(0);

    // Chunks: runs of consecutive samples of one track, in the order given.
    let mut chunks: Vec<Vec<(u64, u32)>> = vec![Vec::new(); tracks.len()];
    let mut payload = 0u64;
    let mut current: Option<usize> = None;
    for sample in samples.iter().filter(|s| s.track < tracks.len()) {
        let Some(track_chunks) = chunks.get_mut(sample.track) else {
            continue;
        };
        match track_chunks.last_mut() {
            Some((_, count)) if current == Some(sample.track) => *count += 1,
            _ => track_chunks.push((payload, 1)),
        }
        current = Some(sample.track);
        payload += sample.data.len() as u64;
    }

    let tables: Vec<TrackTables> = tracks
        .iter()
        .zip(&by_track)
        .zip(chunks)
        .map(|((track, track_samples), chunks)| {
            TrackTables::new(track, track_samples, origin, chunks)
        })
        .collect();

    let mut ftyp = Vec::new();
    let mut brands: Vec<&[u8; 4]> = vec![b"isom", b"iso2"];
    if tracks.iter().any(|t| t.codec == Codec::H264) {
        brands.push(b"avc1");
    }
    brands.push(b"mp41");
    write_ftyp(&mut ftyp, b"ftyp", b"isom", 0x200, &brands);

    let mdat_header_len: u64 = if payload + 8 > u64::from(u32::MAX) {
        16
    } else {
        8
    };
    // The moov's size does not depend on the offset values: measure it, then decide
    // between 32- and 64-bit chunk offsets and write it for real.
    let measured = write_progressive_moov(tracks, &tables, 0, false).len() as u64;
    let end = ftyp.len() as u64 + measured + mdat_header_len + payload;
    let co64 = end > u64::from(u32::MAX);
    let moov_len = write_progressive_moov(tracks, &tables, 0, co64).len() as u64;
    let base = ftyp.len() as u64 + moov_len + mdat_header_len;
    let moov = write_progressive_moov(tracks, &tables, base, co64);

    let mut out = Vec::with_capacity(ftyp.len() + moov.len() + payload as usize + 16);
    out.extend_from_slice(&ftyp);
    out.extend_from_slice(&moov);
    write_mdat_header(&mut out, payload);
    for sample in samples.iter().filter(|s| s.track < tracks.len()) {
        out.extend_from_slice(&sample.data);
    }
    out
}

/// The RFC 6381 codec string of a track, for HLS `CODECS=` and DASH `codecs=`:
/// `avc1.PPCCLL` (profile, constraint flags, level from the avcC),
/// `hvc1.[A-C]<profile>.<compatibility flags, bit-reversed, hex>.<L|H><level>
/// [.<constraint byte>]*` (ISO/IEC 14496-15 E.3, trailing zero bytes left out),
/// `mp4a.40.<audioObjectType>`. A configuration record too short to read gives the
/// bare sample entry name (`avc1`, `hvc1`) or `mp4a.40.2`.
pub fn codec_string(track: &MediaTrack) -> String {
    let record = &track.codec_private[..];
    match track.codec {
        Codec::H264 => match record.get(1..4) {
            Some(&[profile, constraints, level]) => {
                format!("avc1.{profile:02X}{constraints:02X}{level:02X}")
            }
            _ => "avc1".to_string(),
        },
        Codec::H265 => {
            let (Some(&byte1), Some(compat), Some(constraints), Some(&level)) = (
                record.get(1),
                record.get(2..6),
                record.get(6..12),
                record.get(12),
            ) else {
                return "hvc1".to_string();
            };
            let space = ["", "A", "B", "C"][usize::from(byte1 >> 6)];
            let tier = if byte1 & 0x20 != 0 { 'H' } else { 'L' };
            let profile = byte1 & 0x1F;
            let compat =
                u32::from_be_bytes([compat[0], compat[1], compat[2], compat[3]]).reverse_bits();
            let mut out = format!("hvc1.{space}{profile}.{compat:X}.{tier}{level}");
            let used = constraints
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |last| last + 1);
            for byte in &constraints[..used] {
                out.push_str(&format!(".{byte:X}"));
            }
            out
        }
        Codec::Aac => match AudioSpecificConfig::parse(record) {
            Ok(config) => format!("mp4a.40.{}", config.audio_object_type),
            Err(_) => "mp4a.40.2".to_string(),
        },
    }
}

// ---------------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------------

/// Nanoseconds to units of `timescale`, rounded to the nearest unit (halves up).
fn ticks(ns: i128, timescale: u32) -> i128 {
    let scaled = ns * i128::from(timescale);
    (2 * scaled + 1_000_000_000).div_euclid(2_000_000_000)
}

/// One sample as the tables describe it, times in the track's timescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SampleEntry {
    /// DTS relative to the origin the entries were made for.
    dts: i128,
    duration: u32,
    size: u32,
    flags: u32,
    composition_offset: i128,
    sync: bool,
}

/// The entries of one track's samples (in decode order), times measured from
/// `origin_ns`. A sample lasts until the next one's DTS; the last one for its own
/// `duration_ns`.
fn sample_entries(track: &MediaTrack, samples: &[&Sample], origin_ns: i64) -> Vec<SampleEntry> {
    let timescale = track.timescale();
    let at = |ns: i64| ticks(i128::from(ns) - i128::from(origin_ns), timescale);
    samples
        .iter()
        .enumerate()
        .map(|(i, sample)| {
            let dts = at(sample.dts_ns);
            let next = match samples.get(i + 1) {
                Some(next) => at(next.dts_ns),
                None => at(sample
                    .dts_ns
                    .saturating_add_unsigned(sample.duration_ns.min(i64::MAX as u64))),
            };
            let sync = sample.keyframe || !track.codec.is_video();
            SampleEntry {
                dts,
                duration: clamp_u32_i(next - dts),
                size: clamp_u32(sample.data.len()),
                flags: if sync {
                    SYNC_SAMPLE_FLAGS
                } else {
                    NON_SYNC_SAMPLE_FLAGS
                },
                composition_offset: at(sample.pts_ns) - dts,
                sync,
            }
        })
        .collect()
}

/// The samples of each track, in the order given; out-of-range track indexes dropped.
fn group_by_track<'a>(tracks: &[MediaTrack], samples: &'a [Sample]) -> Vec<Vec<&'a Sample>> {
    let mut by_track = vec![Vec::new(); tracks.len()];
    for sample in samples {
        if let Some(list) = by_track.get_mut(sample.track) {
            list.push(sample);
        }
    }
    by_track
}

/// Everything a progressive track's `stbl` and headers need.
struct TrackTables {
    entries: Vec<SampleEntry>,
    /// (offset in the mdat payload, sample count) per chunk.
    chunks: Vec<(u64, u32)>,
    /// Media duration in the track's timescale.
    media_duration: u64,
    /// Where the track starts on the movie timeline (movie timescale); > 0 needs an
    /// empty edit.
    start_in_movie: u64,
    /// Duration in the movie timescale, the empty edit included.
    movie_duration: u64,
}

impl TrackTables {
    fn new(
        track: &MediaTrack,
        samples: &[&Sample],
        origin_ns: i64,
        chunks: Vec<(u64, u32)>,
    ) -> Self {
        let entries = sample_entries(track, samples, origin_ns);
        let media_duration: u64 = entries.iter().map(|e| u64::from(e.duration)).sum();
        let (start_in_movie, movie_duration) = match (samples.first(), entries.first()) {
            (Some(first), Some(entry)) => {
                let start_ns = i128::from(first.dts_ns) - i128::from(origin_ns);
                let start = clamp_u64(ticks(start_ns, MOVIE_TIMESCALE).max(0));
                let timescale = u128::from(track.timescale().max(1));
                let end_ticks = entry.dts.max(0) as u128 + u128::from(media_duration);
                // Round the end to the movie timescale.
                let end =
                    (end_ticks * u128::from(MOVIE_TIMESCALE) * 2 + timescale) / (2 * timescale);
                let end = u64::try_from(end).unwrap_or(u64::MAX).max(start);
                (start, end)
            }
            _ => (0, 0),
        };
        TrackTables {
            entries,
            chunks,
            media_duration,
            start_in_movie,
            movie_duration,
        }
    }
}

// ---------------------------------------------------------------------------------
// Boxes
// ---------------------------------------------------------------------------------

fn track_id(index: usize) -> u32 {
    clamp_u32(index.saturating_add(1))
}

fn write_ftyp(out: &mut Vec<u8>, kind: &[u8; 4], major: &[u8; 4], minor: u32, brands: &[&[u8; 4]]) {
    let ftyp = open(out, kind);
    out.extend_from_slice(major);
    put_u32(out, minor);
    for brand in brands {
        out.extend_from_slice(*brand);
    }
    close(out, ftyp);
}

fn write_mvhd(out: &mut Vec<u8>, duration: u64, track_count: usize) {
    let v1 = duration > u64::from(u32::MAX);
    let mvhd = open_full(out, b"mvhd", u8::from(v1), 0);
    put_times(out, v1);
    put_u32(out, MOVIE_TIMESCALE);
    put_duration(out, duration, v1);
    put_u32(out, 0x0001_0000); // rate 1.0
    put_u16(out, 0x0100); // volume 1.0
    out.extend_from_slice(&[0; 10]); // reserved
    for value in UNITY_MATRIX {
        put_u32(out, value);
    }
    out.extend_from_slice(&[0; 24]); // pre_defined
    put_u32(out, track_id(track_count)); // next_track_ID
    close(out, mvhd);
}

/// A `trak`; `tables` is `None` for a fragmented file (empty tables, zero durations).
fn write_trak(out: &mut Vec<u8>, index: usize, track: &MediaTrack, tables: Option<&Tables<'_>>) {
    let video = track.codec.is_video();
    let trak = open(out, b"trak");

    let movie_duration = tables.map_or(0, |t| t.track.movie_duration);
    let v1 = movie_duration > u64::from(u32::MAX);
    let tkhd = open_full(out, b"tkhd", u8::from(v1), 0x000003); // enabled, in movie
    put_times(out, v1);
    put_u32(out, track_id(index));
    put_u32(out, 0); // reserved
    put_duration(out, movie_duration, v1);
    out.extend_from_slice(&[0; 8]); // reserved
    put_u16(out, 0); // layer
    put_u16(out, if video { 0 } else { 1 }); // alternate_group
    put_u16(out, if video { 0 } else { 0x0100 }); // volume
    put_u16(out, 0); // reserved
    for value in UNITY_MATRIX {
        put_u32(out, value);
    }
    put_u32(out, clamp_u16(track.width) << 16); // 16.16 fixed point
    put_u32(out, clamp_u16(track.height) << 16);
    close(out, tkhd);

    if let Some(tables) = tables
        && tables.track.start_in_movie > 0
    {
        let edts = open(out, b"edts");
        let start = tables.track.start_in_movie;
        let rest = tables.track.movie_duration.saturating_sub(start);
        let v1 = start.max(rest) > u64::from(u32::MAX);
        let elst = open_full(out, b"elst", u8::from(v1), 0);
        put_u32(out, 2);
        // An empty edit (media_time -1), then the whole media from its start.
        for (duration, media_time) in [(start, -1i64), (rest, 0)] {
            if v1 {
                put_u64(out, duration);
                put_u64(out, media_time as u64);
            } else {
                put_u32(out, clamp_u32_u(duration));
                put_u32(out, media_time as i32 as u32);
            }
            put_u16(out, 1); // media_rate_integer
            put_u16(out, 0); // media_rate_fraction
        }
        close(out, elst);
        close(out, edts);
    }

    let mdia = open(out, b"mdia");
    let media_duration = tables.map_or(0, |t| t.track.media_duration);
    let v1 = media_duration > u64::from(u32::MAX);
    let mdhd = open_full(out, b"mdhd", u8::from(v1), 0);
    put_times(out, v1);
    put_u32(out, track.timescale());
    put_duration(out, media_duration, v1);
    put_u16(out, LANGUAGE_UND);
    put_u16(out, 0); // pre_defined
    close(out, mdhd);

    let hdlr = open_full(out, b"hdlr", 0, 0);
    put_u32(out, 0); // pre_defined
    out.extend_from_slice(if video { b"vide" } else { b"soun" });
    out.extend_from_slice(&[0; 12]); // reserved
    out.extend_from_slice(if video {
        b"VideoHandler\0"
    } else {
        b"SoundHandler\0"
    });
    close(out, hdlr);

    let minf = open(out, b"minf");
    if video {
        let vmhd = open_full(out, b"vmhd", 0, 1);
        out.extend_from_slice(&[0; 8]); // graphicsmode, opcolor
        close(out, vmhd);
    } else {
        let smhd = open_full(out, b"smhd", 0, 0);
        out.extend_from_slice(&[0; 4]); // balance, reserved
        close(out, smhd);
    }
    let dinf = open(out, b"dinf");
    let dref = open_full(out, b"dref", 0, 0);
    put_u32(out, 1);
    let url = open_full(out, b"url ", 0, 1); // media in this file
    close(out, url);
    close(out, dref);
    close(out, dinf);

    let stbl = open(out, b"stbl");
    let stsd = open_full(out, b"stsd", 0, 0);
    put_u32(out, 1);
    write_sample_entry(out, index, track);
    close(out, stsd);
    match tables {
        None => {
            for kind in [b"stts", b"stsc", b"stco"] {
                let b = open_full(out, kind, 0, 0);
                put_u32(out, 0);
                close(out, b);
            }
            let stsz = open_full(out, b"stsz", 0, 0);
            put_u32(out, 0); // sample_size
            put_u32(out, 0); // sample_count
            close(out, stsz);
        }
        Some(tables) => write_sample_tables(out, video, tables),
    }
    close(out, stbl);
    close(out, minf);
    close(out, mdia);
    close(out, trak);
}

/// A track's tables with the chunk offset base and width of the file being written.
struct Tables<'a> {
    track: &'a TrackTables,
    base: u64,
    co64: bool,
}

fn write_sample_tables(out: &mut Vec<u8>, video: bool, tables: &Tables<'_>) {
    let entries = &tables.track.entries;

    let stts_runs = run_lengths(entries.iter().map(|e| i128::from(e.duration)));
    let stts = open_full(out, b"stts", 0, 0);
    put_u32(out, clamp_u32(stts_runs.len()));
    for (count, duration) in stts_runs {
        put_u32(out, count);
        put_u32(out, clamp_u32_i(duration));
    }
    close(out, stts);

    if entries.iter().any(|e| e.composition_offset != 0) {
        let negative = entries.iter().any(|e| e.composition_offset < 0);
        let runs = run_lengths(entries.iter().map(|e| e.composition_offset));
        let ctts = open_full(out, b"ctts", u8::from(negative), 0);
        put_u32(out, clamp_u32(runs.len()));
        for (count, offset) in runs {
            put_u32(out, count);
            if negative {
                put_i32(out, clamp_i32(offset));
            } else {
                put_u32(out, clamp_u32_i(offset));
            }
        }
        close(out, ctts);
    }

    if video && entries.iter().any(|e| !e.sync) {
        let sync: Vec<u32> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.sync)
            .map(|(i, _)| clamp_u32(i + 1))
            .collect();
        let stss = open_full(out, b"stss", 0, 0);
        put_u32(out, clamp_u32(sync.len()));
        for number in sync {
            put_u32(out, number);
        }
        close(out, stss);
    }

    let stsc = open_full(out, b"stsc", 0, 0);
    let mut stsc_entries: Vec<(u32, u32)> = Vec::new();
    for (i, &(_, count)) in tables.track.chunks.iter().enumerate() {
        if stsc_entries.last().is_none_or(|&(_, last)| last != count) {
            stsc_entries.push((clamp_u32(i + 1), count));
        }
    }
    put_u32(out, clamp_u32(stsc_entries.len()));
    for (first_chunk, count) in stsc_entries {
        put_u32(out, first_chunk);
        put_u32(out, count);
        put_u32(out, 1); // sample_description_index
    }
    close(out, stsc);

    let stsz = open_full(out, b"stsz", 0, 0);
    put_u32(out, 0); // sizes differ: one per sample
    put_u32(out, clamp_u32(entries.len()));
    for entry in entries {
        put_u32(out, entry.size);
    }
    close(out, stsz);

    let chunk_offsets = open_full(out, if tables.co64 { b"co64" } else { b"stco" }, 0, 0);
    put_u32(out, clamp_u32(tables.track.chunks.len()));
    for &(offset, _) in &tables.track.chunks {
        let offset = tables.base.saturating_add(offset);
        if tables.co64 {
            put_u64(out, offset);
        } else {
            put_u32(out, clamp_u32_u(offset));
        }
    }
    close(out, chunk_offsets);
}

fn write_progressive_moov(
    tracks: &[MediaTrack],
    tables: &[TrackTables],
    base: u64,
    co64: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let moov = open(&mut out, b"moov");
    let duration = tables.iter().map(|t| t.movie_duration).max().unwrap_or(0);
    write_mvhd(&mut out, duration, tracks.len());
    for (index, (track, track_tables)) in tracks.iter().zip(tables).enumerate() {
        let tables = Tables {
            track: track_tables,
            base,
            co64,
        };
        write_trak(&mut out, index, track, Some(&tables));
    }
    close(&mut out, moov);
    out
}

/// `avc1` + `avcC`, `hvc1` + `hvcC` (ISO/IEC 14496-15) or `mp4a` + `esds`
/// (ISO/IEC 14496-14).
fn write_sample_entry(out: &mut Vec<u8>, index: usize, track: &MediaTrack) {
    let (kind, config): (&[u8; 4], &[u8; 4]) = match track.codec {
        Codec::H264 => (b"avc1", b"avcC"),
        Codec::H265 => (b"hvc1", b"hvcC"),
        Codec::Aac => {
            write_mp4a(out, index, track);
            return;
        }
    };
    let entry = open(out, kind);
    out.extend_from_slice(&[0; 6]); // reserved
    put_u16(out, 1); // data_reference_index
    out.extend_from_slice(&[0; 16]); // pre_defined, reserved, pre_defined[3]
    put_u16(out, clamp_u16(track.width) as u16);
    put_u16(out, clamp_u16(track.height) as u16);
    put_u32(out, 0x0048_0000); // 72 dpi
    put_u32(out, 0x0048_0000);
    put_u32(out, 0); // reserved
    put_u16(out, 1); // frame_count
    out.extend_from_slice(&[0; 32]); // compressorname
    put_u16(out, 0x0018); // depth
    put_u16(out, 0xFFFF); // pre_defined = -1
    let record = open(out, config);
    out.extend_from_slice(&track.codec_private);
    close(out, record);
    close(out, entry);
}

fn write_mp4a(out: &mut Vec<u8>, index: usize, track: &MediaTrack) {
    let mp4a = open(out, b"mp4a");
    out.extend_from_slice(&[0; 6]); // reserved
    put_u16(out, 1); // data_reference_index
    out.extend_from_slice(&[0; 8]); // reserved
    put_u16(
        out,
        if track.channels == 0 {
            2
        } else {
            track.channels
        },
    );
    put_u16(out, 16); // samplesize
    put_u32(out, 0); // pre_defined, reserved
    // 16.16 fixed point; rates above 65535 Hz do not fit (the decoder reads the ASC).
    let rate = u16::try_from(track.sample_rate).unwrap_or(0);
    put_u32(out, u32::from(rate) << 16);

    // MPEG-4 Systems (ISO/IEC 14496-1) descriptors. The AudioSpecificConfig is cut at
    // the largest length a descriptor can carry (it is a few bytes in practice).
    let config = &track.codec_private[..track.codec_private.len().min(MAX_DESCRIPTOR_LEN - 64)];
    let mut decoder_specific = Vec::new();
    put_descriptor(&mut decoder_specific, 0x05, config);
    let mut decoder_config = vec![
        0x40, // objectTypeIndication: MPEG-4 Audio
        0x15, // streamType 5 (audio) << 2 | upStream 0 | reserved 1
        0, 0, 0, // bufferSizeDB
    ];
    put_u32(&mut decoder_config, 0); // maxBitrate (unknown)
    put_u32(&mut decoder_config, 0); // avgBitrate (unknown)
    decoder_config.extend_from_slice(&decoder_specific);
    let mut es = Vec::new();
    put_u16(&mut es, u16::try_from(index + 1).unwrap_or(0)); // ES_ID
    es.push(0); // no dependsOn, URL, OCR stream
    put_descriptor(&mut es, 0x04, &decoder_config);
    put_descriptor(&mut es, 0x06, &[0x02]); // SLConfigDescriptor: predefined MP4
    let esds = open_full(out, b"esds", 0, 0);
    put_descriptor(out, 0x03, &es);
    close(out, esds);
    close(out, mp4a);
}

/// Largest payload a descriptor's 4-byte expandable length can state.
const MAX_DESCRIPTOR_LEN: usize = (1 << 28) - 1;

/// A descriptor: tag, expandable length (7 bits per byte, ISO/IEC 14496-1 8.3.3),
/// payload.
fn put_descriptor(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    let len = payload.len().min(MAX_DESCRIPTOR_LEN);
    out.push(tag);
    let groups = match len {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        _ => 4,
    };
    for i in (0..groups).rev() {
        let byte = ((len >> (7 * i)) & 0x7F) as u8;
        out.push(if i > 0 { byte | 0x80 } else { byte });
    }
    out.extend_from_slice(&payload[..len]);
}

/// Writes an `mdat` header for `payload` bytes (64-bit size if needed); returns its
/// length.
fn write_mdat_header(out: &mut Vec<u8>, payload: u64) -> usize {
    match u32::try_from(payload + 8) {
        Ok(size) => {
            put_u32(out, size);
            out.extend_from_slice(b"mdat");
            8
        }
        Err(_) => {
            put_u32(out, 1);
            out.extend_from_slice(b"mdat");
            put_u64(out, payload + 16);
            16
        }
    }
}

/// (count, value) runs of equal consecutive values.
fn run_lengths(values: impl Iterator<Item = i128>) -> Vec<(u32, i128)> {
    let mut runs: Vec<(u32, i128)> = Vec::new();
    for value in values {
        match runs.last_mut() {
            Some((count, last)) if *last == value && *count < u32::MAX => *count += 1,
            _ => runs.push((1, value)),
        }
    }
    runs
}

// ---------------------------------------------------------------------------------
// Byte helpers
// ---------------------------------------------------------------------------------

/// Starts a box; returns where it starts (for [`close`]).
fn open(out: &mut Vec<u8>, kind: &[u8; 4]) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    start
}

/// Starts a full box (version and flags).
fn open_full(out: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32) -> usize {
    let start = open(out, kind);
    out.push(version);
    out.extend_from_slice(&flags.to_be_bytes()[1..]);
    start
}

/// Ends the box started at `start`: writes its size (a 64-bit largesize if needed).
fn close(out: &mut Vec<u8>, start: usize) {
    let size = out.len().saturating_sub(start);
    match u32::try_from(size) {
        Ok(size) => patch(out, start, &size.to_be_bytes()),
        Err(_) => {
            patch(out, start, &1u32.to_be_bytes());
            let large = (size as u64).saturating_add(8).to_be_bytes();
            let at = (start + 8).min(out.len());
            out.splice(at..at, large);
        }
    }
}

fn patch(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slot) = out.get_mut(at..at.saturating_add(bytes.len())) {
        slot.copy_from_slice(bytes);
    }
}

/// creation_time and modification_time: unknown (0).
fn put_times(out: &mut Vec<u8>, v1: bool) {
    out.extend_from_slice(if v1 { &[0; 16] } else { &[0; 8] });
}

fn put_duration(out: &mut Vec<u8>, duration: u64, v1: bool) {
    if v1 {
        put_u64(out, duration);
    } else {
        put_u32(out, clamp_u32_u(duration));
    }
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_i32(out: &mut Vec<u8>, value: i32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn clamp_u16(value: u32) -> u32 {
    value.min(u32::from(u16::MAX))
}

fn clamp_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn clamp_u32_u(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn clamp_u32_i(value: i128) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

fn clamp_i32(value: i128) -> i32 {
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

fn clamp_u64(value: i128) -> u64 {
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const MS: i64 = 1_000_000;
    const T0: i64 = 1_700_000_000_000 * MS;
    const AVCC: [u8; 16] = [
        1, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0, 3, 0x67, 0x64, 0x00, 1, 0, 2, 0x68, 0xEE,
    ];
    /// HEVC Main, Main tier, level 3.1 (93), progressive + frame-only constraint flags.
    const HVCC: [u8; 23] = [
        1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0,
        0x0F, 0,
    ];

    fn video(codec: Codec, private: &[u8]) -> MediaTrack {
        MediaTrack {
            number: 1,
            codec,
            codec_private: Bytes::copy_from_slice(private),
            width: 640,
            height: 360,
            sample_rate: 0,
            channels: 0,
        }
    }

    fn aac(private: &[u8]) -> MediaTrack {
        MediaTrack {
            number: 2,
            codec: Codec::Aac,
            codec_private: Bytes::copy_from_slice(private),
            width: 0,
            height: 0,
            sample_rate: 48_000,
            channels: 2,
        }
    }

    fn sample(
        track: usize,
        dts_ms: i64,
        pts_ms: i64,
        duration_ms: u64,
        key: bool,
        fill: u8,
    ) -> Sample {
        Sample {
            track,
            dts_ns: T0 + dts_ms * MS,
            pts_ns: T0 + pts_ms * MS,
            duration_ns: duration_ms * MS as u64,
            keyframe: key,
            data: Bytes::from(vec![fill; 10 + fill as usize]),
        }
    }

    /// Video I P B B (decode order; presentation 40, 160, 80, 120 ms) and AAC
    /// frames from 0 ms, interleaved by DTS.
    fn b_frame_samples() -> Vec<Sample> {
        let mut samples = vec![
            sample(0, 0, 40, 40, true, 1),
            sample(0, 40, 160, 40, false, 2),
            sample(0, 80, 80, 40, false, 3),
            sample(0, 120, 120, 40, false, 4),
        ];
        for n in 0..8 {
            let t = n * 64 / 3; // 21.33 ms steps on the ms grid
            samples.push(sample(1, 20 + t, 20 + t, 21, true, 20 + n as u8));
        }
        samples.sort_by_key(|s| s.dts_ns);
        samples
    }

    /// A parsed box: type, offset in the file, total size, payload range.
    #[derive(Debug, Clone)]
    struct Box4 {
        kind: String,
        start: usize,
        payload: std::ops::Range<usize>,
    }

    /// The boxes in `data[range]`, checking that they fill it exactly.
    fn boxes(data: &[u8], range: std::ops::Range<usize>) -> Vec<Box4> {
        let mut out = Vec::new();
        let mut at = range.start;
        while at < range.end {
            assert!(at + 8 <= range.end, "box header truncated at {at}");
            let mut size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let mut header = 8;
            if size == 1 {
                size = u64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap()) as usize;
                header = 16;
            }
            assert!(
                size >= header && at + size <= range.end,
                "box at {at} overruns"
            );
            out.push(Box4 {
                kind: String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned(),
                start: at,
                payload: at + header..at + size,
            });
            at += size;
        }
        assert_eq!(at, range.end);
        out
    }

    /// Where a box's children start (after its own fields), for the boxes that have
    /// children.
    fn children_offset(kind: &str) -> Option<usize> {
        match kind {
            "moov" | "trak" | "mdia" | "minf" | "stbl" | "mvex" | "moof" | "traf" | "dinf"
            | "edts" => Some(0),
            "stsd" | "dref" => Some(8),
            "avc1" | "hvc1" => Some(78),
            "mp4a" => Some(28),
            _ => None,
        }
    }

    /// Every box in the file, depth first, checking that children fill their parent.
    fn walk(data: &[u8]) -> Vec<Box4> {
        let mut all = Vec::new();
        let mut stack = boxes(data, 0..data.len());
        stack.reverse();
        while let Some(b) = stack.pop() {
            if let Some(skip) = children_offset(&b.kind) {
                let mut children = boxes(data, b.payload.start + skip..b.payload.end);
                children.reverse();
                stack.extend(children);
            }
            all.push(b);
        }
        all
    }

    fn find<'a>(all: &'a [Box4], kind: &str) -> Vec<&'a Box4> {
        all.iter().filter(|b| b.kind == kind).collect()
    }

    fn u32_at(data: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(data[at..at + 4].try_into().unwrap())
    }

    fn u64_at(data: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(data[at..at + 8].try_into().unwrap())
    }

    /// (count, value) pairs of an stts/ctts/stsc-like table of `width` u32s per entry.
    fn table(data: &[u8], b: &Box4, width: usize) -> Vec<Vec<u32>> {
        let count = u32_at(data, b.payload.start + 4) as usize;
        let mut at = b.payload.start + 8;
        let mut out = Vec::new();
        for _ in 0..count {
            out.push((0..width).map(|i| u32_at(data, at + 4 * i)).collect());
            at += 4 * width;
        }
        assert_eq!(at, b.payload.end);
        out
    }

    #[test]
    fn box_sizes_are_consistent() {
        let tracks = [video(Codec::H264, &AVCC), aac(&[0x11, 0x90])];
        let samples = b_frame_samples();
        for file in [
            init_segment(&tracks),
            init_segment(&[video(Codec::H265, &HVCC)]),
            media_segment(7, &tracks, &samples),
            progressive_mp4(&tracks, &samples),
            init_segment(&[]),
            media_segment(1, &[], &[]),
            progressive_mp4(&[], &[]),
        ] {
            let all = walk(&file);
            assert!(!all.is_empty());
        }
        let init = init_segment(&tracks);
        let all = walk(&init);
        let kinds: Vec<&str> = all.iter().map(|b| b.kind.as_str()).collect();
        assert_eq!(kinds[..4], ["ftyp", "moov", "mvhd", "trak"]);
        assert_eq!(find(&all, "trak").len(), 2);
        assert_eq!(find(&all, "trex").len(), 2);
        assert_eq!(find(&all, "avcC")[0].payload.len(), AVCC.len());
        assert_eq!(&init[find(&all, "avcC")[0].payload.clone()], &AVCC);
        let mdhd = find(&all, "mdhd");
        assert_eq!(u32_at(&init, mdhd[0].payload.start + 12), 90_000);
        assert_eq!(u32_at(&init, mdhd[1].payload.start + 12), 48_000);
        // The esds carries the AudioSpecificConfig in a DecoderSpecificInfo.
        let esds = &init[find(&all, "esds")[0].payload.clone()];
        assert!(esds.windows(4).any(|w| w == [0x05, 0x02, 0x11, 0x90]));
        let hvc = init_segment(&[video(Codec::H265, &HVCC)]);
        let all = walk(&hvc);
        assert_eq!(&hvc[find(&all, "hvcC")[0].payload.clone()], &HVCC);
        assert_eq!(find(&all, "hvc1").len(), 1);
    }

    #[test]
    fn media_segment_describes_its_samples() {
        let tracks = [video(Codec::H264, &AVCC), aac(&[0x11, 0x90])];
        let samples = b_frame_samples();
        let file = media_segment(7, &tracks, &samples);
        let all = walk(&file);
        let moof = find(&all, "moof")[0];
        let mdat = find(&all, "mdat")[0];
        assert_eq!(u32_at(&file, find(&all, "mfhd")[0].payload.start + 4), 7);
        let tfhd = find(&all, "tfhd");
        let tfdt = find(&all, "tfdt");
        let trun = find(&all, "trun");
        assert_eq!(trun.len(), 2);
        for (track, timescale) in [(0usize, 90_000i128), (1, 48_000)] {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.track == track).collect();
            assert_eq!(
                u32_at(&file, tfhd[track].payload.start),
                TFHD_DEFAULT_BASE_IS_MOOF
            );
            assert_eq!(
                u32_at(&file, tfhd[track].payload.start + 4),
                track as u32 + 1
            );
            assert_eq!(file[tfdt[track].payload.start], 1);
            let base = u64_at(&file, tfdt[track].payload.start + 4);
            assert_eq!(
                i128::from(base),
                ticks(i128::from(mine[0].dts_ns), timescale as u32)
            );
            let t = trun[track].payload.start;
            assert_eq!(u32_at(&file, t), 0x0100_0000 | TRUN_FLAGS);
            assert_eq!(u32_at(&file, t + 4) as usize, mine.len());
            let mut data_at = moof.start + u32_at(&file, t + 8) as usize;
            let mut at = t + 12;
            for s in &mine {
                let (duration, size, flags, cts) = (
                    u32_at(&file, at),
                    u32_at(&file, at + 4) as usize,
                    u32_at(&file, at + 8),
                    u32_at(&file, at + 12) as i32,
                );
                assert_eq!(size, s.data.len());
                assert_eq!(&file[data_at..data_at + size], &s.data[..]);
                assert!(mdat.payload.contains(&data_at));
                let expected_flags = if s.keyframe {
                    SYNC_SAMPLE_FLAGS
                } else {
                    NON_SYNC_SAMPLE_FLAGS
                };
                assert_eq!(flags, expected_flags);
                let cts_expected = (s.pts_ns - s.dts_ns) as i128 * timescale / 1_000_000_000;
                assert_eq!(i128::from(cts), cts_expected);
                if track == 0 {
                    assert_eq!(duration, 3600);
                } else {
                    // Differences of rounded absolute times: 1008 or 1056 on a 1 ms grid.
                    assert!([1008, 1056].contains(&duration), "{duration}");
                }
                data_at += size;
                at += 16;
            }
        }
        // Video first, then audio, in mdat.
        let total: usize = samples.iter().map(|s| s.data.len()).sum();
        assert_eq!(mdat.payload.len(), total);
        // Only tracks with samples get a traf; stray track indexes are ignored.
        let mut stray = samples.clone();
        stray.retain(|s| s.track == 1);
        stray.push(sample(5, 0, 0, 1, true, 9));
        let file = media_segment(1, &tracks, &stray);
        let all = walk(&file);
        assert_eq!(find(&all, "traf").len(), 1);
        assert_eq!(u32_at(&file, find(&all, "tfhd")[0].payload.start + 4), 2);
    }

    #[test]
    fn timescale_conversion_rounds_without_drift() {
        assert_eq!(ticks(1_000_000_000, 90_000), 90_000);
        assert_eq!(ticks(11_111, 90_000), 1); // 0.99999
        assert_eq!(ticks(5_555, 90_000), 0); // 0.499995
        assert_eq!(ticks(500_000, 1000), 1); // halves go up
        assert_eq!(ticks(-500_000, 1000), 0);
        assert_eq!(ticks(-500_001, 1000), -1);
        assert_eq!(
            ticks(i128::from(i64::MAX), 1_000_000_000),
            i128::from(i64::MAX)
        );
        // 29.97 fps for 10 minutes: every frame 3003 ticks, the total exact.
        let track = video(Codec::H264, &AVCC);
        let frames: Vec<Sample> = (0..18_000i64)
            .map(|n| Sample {
                track: 0,
                dts_ns: T0 + n * 1_001_000_000 / 30,
                pts_ns: T0 + n * 1_001_000_000 / 30,
                duration_ns: 33_366_667,
                keyframe: n % 30 == 0,
                data: Bytes::new(),
            })
            .collect();
        let refs: Vec<&Sample> = frames.iter().collect();
        let entries = sample_entries(&track, &refs, T0);
        assert!(entries.iter().all(|e| e.duration == 3003));
        let total: u64 = entries.iter().map(|e| u64::from(e.duration)).sum();
        assert_eq!(total, 18_000 * 3003);
        // AAC at 44.1 kHz with ns times truncated: 1024 per frame, never 1023/1025
        // accumulated.
        let mut audio = aac(&[0x12, 0x10]);
        audio.sample_rate = 44_100;
        let frames: Vec<Sample> = (0..10_000i64)
            .map(|n| Sample {
                track: 0,
                dts_ns: n * 1024 * 1_000_000_000 / 44_100,
                pts_ns: n * 1024 * 1_000_000_000 / 44_100,
                duration_ns: 23_219_954,
                keyframe: true,
                data: Bytes::new(),
            })
            .collect();
        let refs: Vec<&Sample> = frames.iter().collect();
        let entries = sample_entries(&audio, &refs, 0);
        assert!(entries.iter().all(|e| e.duration == 1024));
        assert_eq!(entries.last().unwrap().dts, 9_999 * 1024);
    }

    #[test]
    fn progressive_mp4_tables() {
        let tracks = [video(Codec::H264, &AVCC), aac(&[0x11, 0x90])];
        let samples = b_frame_samples();
        let file = progressive_mp4(&tracks, &samples);
        let all = walk(&file);
        let top = boxes(&file, 0..file.len());
        assert_eq!(
            top.iter().map(|b| b.kind.as_str()).collect::<Vec<_>>(),
            ["ftyp", "moov", "mdat"]
        );
        assert!(find(&all, "mvex").is_empty());

        // Video: 4 samples of 40 ms (3600), composition offsets 40, 120, 0, 0 ms,
        // one sync sample, starts at 0.
        let stts = find(&all, "stts");
        assert_eq!(table(&file, stts[0], 2), [vec![4, 3600]]);
        let ctts = find(&all, "ctts");
        assert_eq!(ctts.len(), 1);
        assert_eq!(
            table(&file, ctts[0], 2),
            [vec![1, 3600], vec![1, 10_800], vec![2, 0]]
        );
        let stss = find(&all, "stss");
        assert_eq!(table(&file, stss[0], 1), [vec![1]]);
        // Audio: starts 20 ms after the video, so an empty edit of 20 ms comes first.
        let elst = find(&all, "elst");
        assert_eq!(elst.len(), 1);
        let e = elst[0].payload.start;
        assert_eq!(u32_at(&file, e + 4), 2);
        assert_eq!(u32_at(&file, e + 8), 20);
        assert_eq!(u32_at(&file, e + 12), u32::MAX); // media_time -1
        // Audio media: 7 steps on the 1 ms grid plus a last one of 21 ms.
        let audio_stts = table(&file, stts[1], 2);
        let audio_total: u32 = audio_stts.iter().map(|r| r[0] * r[1]).sum();
        assert_eq!(audio_total, ((149 + 21) * 48) as u32); // 20 ms .. 190 ms
        let edit_duration = u32_at(&file, e + 20);
        assert_eq!(edit_duration, 170);
        // Durations: mdhd in media units, tkhd and mvhd in ms.
        let mdhd = find(&all, "mdhd");
        assert_eq!(u32_at(&file, mdhd[0].payload.start + 16), 4 * 3600);
        assert_eq!(u32_at(&file, mdhd[1].payload.start + 16), audio_total);
        let tkhd = find(&all, "tkhd");
        assert_eq!(u32_at(&file, tkhd[0].payload.start + 20), 160);
        assert_eq!(u32_at(&file, tkhd[1].payload.start + 20), 190);
        assert_eq!(u32_at(&file, find(&all, "mvhd")[0].payload.start + 16), 190);

        // Chunk offsets and stsc find every sample's bytes, in order.
        let stsz = find(&all, "stsz");
        let stsc = find(&all, "stsc");
        let stco = find(&all, "stco");
        for track in 0..2 {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.track == track).collect();
            let sizes: Vec<usize> = (0..mine.len())
                .map(|i| u32_at(&file, stsz[track].payload.start + 12 + 4 * i) as usize)
                .collect();
            let runs = table(&file, stsc[track], 3);
            let offsets: Vec<usize> = table(&file, stco[track], 1)
                .iter()
                .map(|o| o[0] as usize)
                .collect();
            let mut n = 0;
            for (chunk, &offset) in offsets.iter().enumerate() {
                let per_chunk = runs
                    .iter()
                    .rev()
                    .find(|r| r[0] as usize <= chunk + 1)
                    .unwrap()[1];
                let mut at = offset;
                for _ in 0..per_chunk {
                    assert_eq!(&file[at..at + sizes[n]], &mine[n].data[..]);
                    at += sizes[n];
                    n += 1;
                }
            }
            assert_eq!(n, mine.len());
        }
    }

    #[test]
    fn codec_strings() {
        assert_eq!(codec_string(&video(Codec::H264, &AVCC)), "avc1.64001F");
        assert_eq!(
            codec_string(&video(Codec::H264, &[1, 0x42, 0xC0, 0x1E])),
            "avc1.42C01E"
        );
        assert_eq!(codec_string(&video(Codec::H264, &[1, 0x42])), "avc1");
        assert_eq!(codec_string(&video(Codec::H265, &HVCC)), "hvc1.1.6.L93.90");
        // Main 10, High tier, level 5.1, several constraint bytes (trailing zeros cut).
        let mut main10 = HVCC;
        main10[1] = 0x22;
        main10[2..6].copy_from_slice(&[0x20, 0, 0, 0]);
        main10[6..12].copy_from_slice(&[0xB0, 0, 0x08, 0, 0, 0]);
        main10[12] = 153;
        assert_eq!(
            codec_string(&video(Codec::H265, &main10)),
            "hvc1.2.4.H153.B0.0.8"
        );
        // Profile space 1 (A), no constraint flags at all.
        let mut spaced = HVCC;
        spaced[1] = 0x41;
        spaced[6] = 0;
        assert_eq!(codec_string(&video(Codec::H265, &spaced)), "hvc1.A1.6.L93");
        assert_eq!(codec_string(&video(Codec::H265, &HVCC[..12])), "hvc1");
        assert_eq!(codec_string(&aac(&[0x11, 0x90])), "mp4a.40.2");
        assert_eq!(codec_string(&aac(&[0x2B, 0x92, 0x08, 0x00])), "mp4a.40.5");
        assert_eq!(codec_string(&aac(&[0xEA, 0x10])), "mp4a.40.29");
        assert_eq!(codec_string(&aac(&[])), "mp4a.40.2");
    }

    #[test]
    fn odd_input_never_panics() {
        let mut wide = video(Codec::H264, &[]);
        wide.width = u32::MAX;
        wide.height = 70_000;
        let mut hi_rate = aac(&[]);
        hi_rate.sample_rate = 96_000;
        hi_rate.channels = 0;
        let tracks = [wide, hi_rate, video(Codec::H265, &[1])];
        let extreme = |track, dts, pts, duration| Sample {
            track,
            dts_ns: dts,
            pts_ns: pts,
            duration_ns: duration,
            keyframe: false,
            data: Bytes::from_static(b"x"),
        };
        let samples = vec![
            extreme(0, i64::MAX, i64::MIN, u64::MAX),
            extreme(0, i64::MIN, i64::MAX, 0),
            extreme(1, -5, -5, 1),
            extreme(1, -10, 0, u64::MAX), // decreasing DTS
            extreme(2, 0, 0, 0),
            extreme(usize::MAX, 0, 0, 0),
        ];
        for file in [
            init_segment(&tracks),
            media_segment(u32::MAX, &tracks, &samples),
            progressive_mp4(&tracks, &samples),
        ] {
            walk(&file);
        }
        // 96 kHz does not fit the 16.16 rate field: 0 there, the ASC decides.
        let init = init_segment(&tracks);
        let all = walk(&init);
        let mp4a = find(&all, "mp4a")[0];
        assert_eq!(u32_at(&init, mp4a.payload.start + 24), 0);
        assert_eq!(u32_at(&init, mp4a.payload.start + 16) >> 16, 2); // channels default
    }

    #[test]
    fn descriptor_lengths() {
        for (len, header) in [
            (0usize, 2usize),
            (0x7F, 2),
            (0x80, 3),
            (0x3FFF, 3),
            (0x4000, 4),
        ] {
            let mut out = Vec::new();
            put_descriptor(&mut out, 5, &vec![0; len]);
            assert_eq!(out.len(), len + header, "{len}");
            // Decode the expandable length back.
            let mut value = 0usize;
            for &b in &out[1..header] {
                value = (value << 7) | usize::from(b & 0x7F);
            }
            assert_eq!(value, len);
        }
    }
}
