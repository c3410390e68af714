//! The bytes of a delivered object: a batch's records concatenated, as AWS concatenates
//! them, in the destination's `CompressionFormat` (pure: no I/O, no clock reads).
//!
//! - `GZIP`: one gzip member (RFC 1952);
//! - `ZIP`: a ZIP archive (PKWARE APPNOTE 6.3) of one deflated entry named after the
//!   object, without its extension;
//! - `Snappy`: the Snappy framing format (google/snappy `framing_format.txt`: a stream
//!   identifier, then compressed chunks with masked CRC-32C), what `snzip`, python-snappy
//!   and Spark read as `.snappy` streams;
//! - `HADOOP_SNAPPY`: Hadoop's `BlockCompressorStream` layout of `SnappyCodec`: per block
//!   of at most 256 KiB of input, its length (4 bytes, big-endian), then one compressed
//!   chunk, its length (4 bytes, big-endian) and raw Snappy bytes.
//!
//! The same records always give the same bytes (no clock in the ZIP entry but the
//! batch's time), so an object written again after a crash is the same object.

use std::io::Write;

use bytes::Bytes;

use super::naming::Compression;

/// Input per block of a `HADOOP_SNAPPY` object (Hadoop's default
/// `io.compression.codec.snappy.buffersize`).
pub const HADOOP_BLOCK: usize = 256 * 1024;

/// What a ZIP entry needs to know of its object.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The entry's file name.
    pub name: &'a str,
    /// Its modification time (ms since the epoch, UTC), e.g. the batch's oldest arrival.
    pub time_ms: i64,
}

/// The object of `records` compressed as `format`.
pub fn build(records: &[Bytes], format: Compression, entry: Entry<'_>) -> std::io::Result<Bytes> {
    let total: usize = records.iter().map(Bytes::len).sum();
    let concatenated = || {
        let mut out = Vec::with_capacity(total);
        for r in records {
            out.extend_from_slice(r);
        }
        out
    };
    Ok(match format {
        Compression::Uncompressed => concatenated().into(),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(total / 4 + 64),
                flate2::Compression::fast(),
            );
            for r in records {
                enc.write_all(r)?;
            }
            enc.finish()?.into()
        }
        Compression::Zip => zip(&concatenated(), entry)?.into(),
        Compression::Snappy => {
            let mut enc = snap::write::FrameEncoder::new(Vec::with_capacity(total / 2 + 64));
            for r in records {
                enc.write_all(r)?;
            }
            enc.into_inner()
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .into()
        }
        Compression::HadoopSnappy => hadoop_snappy(&concatenated())?.into(),
    })
}

fn hadoop_snappy(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = snap::raw::Encoder::new();
    let mut out = Vec::with_capacity(data.len() / 2 + 16);
    for block in data.chunks(HADOOP_BLOCK) {
        let compressed = enc
            .compress_vec(block)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    Ok(out)
}

/// MS-DOS date and time (local time fields, here UTC) of `ms`; 1980-01-01 before 1980.
fn dos_time(ms: i64) -> (u16, u16) {
    let secs = ms.div_euclid(1000);
    let (year, month, day) = crate::clock::civil_from_days(secs.div_euclid(86_400));
    if !(1980..=2107).contains(&year) {
        return ((1 << 5) | 1, 0);
    }
    let rem = secs.rem_euclid(86_400);
    let date = (((year - 1980) as u16) << 9) | ((month as u16) << 5) | day as u16;
    let time =
        (((rem / 3600) as u16) << 11) | ((((rem / 60) % 60) as u16) << 5) | ((rem % 60) / 2) as u16;
    (date, time)
}

/// A ZIP archive of one deflated entry. Batches are at most 128 MiB, far below the
/// 4 GiB that would need ZIP64.
fn zip(data: &[u8], entry: Entry<'_>) -> std::io::Result<Vec<u8>> {
    let mut deflate = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    deflate.write_all(data)?;
    let compressed = deflate.finish()?;
    let too_big =
        |what: &str| std::io::Error::other(format!("{what} is too large for a ZIP entry"));
    let size = u32::try_from(data.len()).map_err(|_| too_big("the batch"))?;
    let csize = u32::try_from(compressed.len()).map_err(|_| too_big("the compressed batch"))?;
    let name = entry.name.as_bytes();
    let name_len = u16::try_from(name.len()).map_err(|_| too_big("the entry name"))?;
    let crc = crc32fast::hash(data);
    let (date, time) = dos_time(entry.time_ms);
    let mut out = Vec::with_capacity(compressed.len() + 2 * name.len() + 100);
    let u16le = |out: &mut Vec<u8>, v: u16| out.extend_from_slice(&v.to_le_bytes());
    let u32le = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    // The fields local and central headers share, from "version needed" to the name's
    // length.
    let shared = |out: &mut Vec<u8>| {
        u16le(out, 20); // version needed: 2.0 (deflate)
        u16le(out, 1 << 11); // flags: UTF-8 name
        u16le(out, 8); // deflate
        u16le(out, time);
        u16le(out, date);
        u32le(out, crc);
        u32le(out, csize);
        u32le(out, size);
        u16le(out, name_len);
    };
    // Local file header.
    u32le(&mut out, 0x0403_4b50);
    shared(&mut out);
    u16le(&mut out, 0); // extra field length
    out.extend_from_slice(name);
    out.extend_from_slice(&compressed);
    let central = out.len() as u32;
    // Central directory header.
    u32le(&mut out, 0x0201_4b50);
    u16le(&mut out, 20); // version made by: 2.0, MS-DOS attributes
    shared(&mut out);
    u16le(&mut out, 0); // extra
    u16le(&mut out, 0); // comment
    u16le(&mut out, 0); // disk number start
    u16le(&mut out, 0); // internal attributes
    u32le(&mut out, 0); // external attributes
    u32le(&mut out, 0); // offset of the local header
    out.extend_from_slice(name);
    let central_size = out.len() as u32 - central;
    // End of central directory.
    u32le(&mut out, 0x0605_4b50);
    u16le(&mut out, 0);
    u16le(&mut out, 0);
    u16le(&mut out, 1);
    u16le(&mut out, 1);
    u32le(&mut out, central_size);
    u32le(&mut out, central);
    u16le(&mut out, 0); // comment length
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn records() -> Vec<Bytes> {
        (0..2000)
            .map(|i| {
                Bytes::from(format!(
                    "{{\"n\":{i},\"pad\":\"{}\"}}\n",
                    "x".repeat(i % 300)
                ))
            })
            .collect()
    }

    fn plain() -> Vec<u8> {
        records().concat()
    }

    const ENTRY: Entry<'static> = Entry {
        name: "s-1-2024-02-29-23-59-58-uuid",
        time_ms: 1_709_251_198_123,
    };

    #[test]
    fn snappy_framing_reads_back() {
        let obj = build(&records(), Compression::Snappy, ENTRY).unwrap();
        assert_eq!(&obj[..10], b"\xff\x06\x00\x00sNaPpY");
        let mut out = Vec::new();
        snap::read::FrameDecoder::new(&obj[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain());
        assert!(obj.len() < out.len() / 2);
    }

    #[test]
    fn hadoop_snappy_blocks_read_back() {
        let obj = build(&records(), Compression::HadoopSnappy, ENTRY).unwrap();
        let want = plain();
        let mut at = 0;
        let mut out = Vec::new();
        let mut dec = snap::raw::Decoder::new();
        while at < obj.len() {
            let raw = u32::from_be_bytes(obj[at..at + 4].try_into().unwrap()) as usize;
            let len = u32::from_be_bytes(obj[at + 4..at + 8].try_into().unwrap()) as usize;
            let block = dec.decompress_vec(&obj[at + 8..at + 8 + len]).unwrap();
            assert_eq!(block.len(), raw);
            assert!(raw <= HADOOP_BLOCK);
            out.extend(block);
            at += 8 + len;
        }
        assert_eq!(out, want);
        assert!(want.len() > HADOOP_BLOCK, "the test covers several blocks");
    }

    #[test]
    fn zip_has_one_entry_that_inflates_to_the_batch() {
        let obj = build(&records(), Compression::Zip, ENTRY).unwrap();
        assert_eq!(&obj[..4], b"PK\x03\x04");
        // The end of central directory record: one entry.
        let eocd = obj.len() - 22;
        assert_eq!(&obj[eocd..eocd + 4], b"PK\x05\x06");
        assert_eq!(u16::from_le_bytes([obj[eocd + 10], obj[eocd + 11]]), 1);
        let name_len = u16::from_le_bytes([obj[26], obj[27]]) as usize;
        assert_eq!(&obj[30..30 + name_len], ENTRY.name.as_bytes());
        let csize = u32::from_le_bytes(obj[18..22].try_into().unwrap()) as usize;
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&obj[30 + name_len..30 + name_len + csize])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain());
        assert_eq!(
            u32::from_le_bytes(obj[14..18].try_into().unwrap()),
            crc32fast::hash(&out)
        );
        // 2024-02-29 23:59:58 as MS-DOS date and time.
        assert_eq!(
            dos_time(ENTRY.time_ms),
            ((44 << 9) | (2 << 5) | 29, (23 << 11) | (59 << 5) | 29)
        );
        assert_eq!(
            build(&records(), Compression::Zip, ENTRY).unwrap(),
            obj,
            "deterministic"
        );
    }

    #[test]
    fn empty_batches_are_valid_objects() {
        for format in [
            Compression::Uncompressed,
            Compression::Gzip,
            Compression::Zip,
            Compression::Snappy,
            Compression::HadoopSnappy,
        ] {
            assert!(build(&[], format, ENTRY).is_ok());
        }
    }
}
