//! EBML primitives: variable-length element IDs and sizes, and the typed values
//! (unsigned and signed integers, floats, strings, dates) that Matroska is built from.
//!
//! Follows RFC 8794 (Extensible Binary Meta Language):
//!
//! ```text
//! element  = id size payload
//! id       = VINT of 1-4 bytes, marker bit kept      (0x1A45DFA3 is the EBML header)
//! size     = VINT of 1-8 bytes, marker bit removed   (all value bits 1 = unknown size)
//! VINT     = leading zero bits, a 1 marker bit, then the value bits:
//!            1xxxxxxx | 01xxxxxx xxxxxxxx | ... | 00000001 xxxxxxxx*7
//! ```
//!
//! Decoding is strict about bounds: IDs longer than 4 bytes, sizes longer than 8 bytes,
//! IDs that are all zeros, all ones or not in their shortest form, and values whose
//! length does not fit their type are errors. Decoders of headers return `Ok(None)` when
//! more bytes are needed, so streaming callers can retry with a longer prefix.
//!
//! This module never does I/O, never allocates for decoding, and never panics on any
//! input (it is fuzzed through `fuzz/fuzz_targets/mkv_reader.rs`).

use std::fmt;

/// IDs of the EBML header and of the global elements (RFC 8794, sections 11.2 and 11.3).
pub mod ids {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const VOID: u32 = 0xEC;
    pub const CRC32: u32 = 0xBF;
}

/// Longest element ID we accept (EBMLMaxIDLength of Matroska).
pub const MAX_ID_LEN: usize = 4;
/// Longest element size we accept (EBMLMaxSizeLength of Matroska).
pub const MAX_SIZE_LEN: usize = 8;
/// Longest element header: a 4-byte ID and an 8-byte size.
pub const MAX_HEADER_LEN: usize = MAX_ID_LEN + MAX_SIZE_LEN;
/// Largest size that has a known-size encoding (2^56 - 2; 2^56 - 1 means "unknown").
pub const MAX_KNOWN_SIZE: u64 = (1 << 56) - 2;
/// EBML dates count nanoseconds from 2001-01-01T00:00:00 UTC; this is that instant in
/// Unix seconds.
pub const DATE_EPOCH_UNIX_SECS: i64 = 978_307_200;

/// Why some bytes are not valid EBML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EbmlError {
    #[error("element id longer than {MAX_ID_LEN} bytes")]
    IdTooLong,
    #[error("element id {0:#x} is reserved or not in its shortest form")]
    InvalidId(u32),
    #[error("element size longer than {MAX_SIZE_LEN} bytes")]
    SizeTooLong,
    #[error("{kind} of {len} bytes does not fit")]
    BadLength { kind: ValueKind, len: usize },
    #[error("string is not valid utf-8")]
    InvalidUtf8,
    #[error("size {size} does not fit in {len} bytes")]
    SizeDoesNotFit { size: u64, len: usize },
}

/// The value types of RFC 8794 section 7, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    UnsignedInteger,
    SignedInteger,
    Float,
    Date,
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnsignedInteger => "unsigned integer",
            Self::SignedInteger => "signed integer",
            Self::Float => "float",
            Self::Date => "date",
        })
    }
}

/// The size field of an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementSize {
    Known(u64),
    /// All value bits set: the element runs until something that cannot be its child
    /// (only Segment and Cluster may use this in Matroska).
    Unknown,
}

/// A decoded element header: what comes before the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementHeader {
    /// The ID with its marker bit, as written in specifications (`0x1A45DFA3`).
    pub id: u32,
    pub size: ElementSize,
    /// Bytes taken by the ID and the size together.
    pub header_len: usize,
}

/// The total length of a VINT from its first byte, or `None` for `0x00` (which would
/// mean a VINT longer than 8 bytes).
pub fn vint_len(first: u8) -> Option<usize> {
    match first.leading_zeros() {
        8 => None,
        zeros => Some(zeros as usize + 1),
    }
}

/// Reads an element ID. `Ok(None)`: more bytes needed.
pub fn read_id(buf: &[u8]) -> Result<Option<(u32, usize)>, EbmlError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let len = vint_len(first).ok_or(EbmlError::IdTooLong)?;
    if len > MAX_ID_LEN {
        return Err(EbmlError::IdTooLong);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let id = buf[..len]
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    if !is_valid_id(id) {
        return Err(EbmlError::InvalidId(id));
    }
    Ok(Some((id, len)))
}

/// Whether `id` (marker bit included) is a valid element ID: 1-4 bytes, value bits
/// neither all zeros nor all ones, and in its shortest encoding (RFC 8794 section 5).
pub fn is_valid_id(id: u32) -> bool {
    let len = id_len(id);
    if len == 0 || len > MAX_ID_LEN {
        return false;
    }
    let first = (id >> (8 * (len - 1))) as u8;
    if vint_len(first) != Some(len) {
        return false;
    }
    let value_bits = 7 * len as u32;
    let value = u64::from(id) & ((1u64 << value_bits) - 1);
    if value == 0 || value == (1u64 << value_bits) - 1 {
        return false;
    }
    // Shortest form: the value must not fit in a shorter VINT (whose all-ones value
    // is reserved, so "fits" means strictly below it).
    len == 1 || value >= (1u64 << (7 * (len as u32 - 1))) - 1
}

/// Number of bytes of an ID (the position of its highest non-zero byte).
fn id_len(id: u32) -> usize {
    (4 - id.leading_zeros() as usize / 8).min(4)
}

/// Reads a VINT with its marker bit removed (element sizes, block track numbers).
/// Returns the value, the length, and whether all value bits were set.
/// `Ok(None)`: more bytes needed.
pub fn read_vint(buf: &[u8]) -> Result<Option<(u64, usize, bool)>, EbmlError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let len = vint_len(first).ok_or(EbmlError::SizeTooLong)?;
    if buf.len() < len {
        return Ok(None);
    }
    let mut value = u64::from(first) & (0xFF >> len);
    for &b in &buf[1..len] {
        value = (value << 8) | u64::from(b);
    }
    let all_ones = value == (1u64 << (7 * len)) - 1;
    Ok(Some((value, len, all_ones)))
}

/// Reads an element size. `Ok(None)`: more bytes needed.
pub fn read_size(buf: &[u8]) -> Result<Option<(ElementSize, usize)>, EbmlError> {
    Ok(read_vint(buf)?.map(|(value, len, all_ones)| {
        let size = if all_ones {
            ElementSize::Unknown
        } else {
            ElementSize::Known(value)
        };
        (size, len)
    }))
}

/// Reads an element header (ID and size). `Ok(None)`: more bytes needed; at most
/// [`MAX_HEADER_LEN`] bytes are ever needed to decide.
pub fn read_header(buf: &[u8]) -> Result<Option<ElementHeader>, EbmlError> {
    let Some((id, id_len)) = read_id(buf)? else {
        return Ok(None);
    };
    let Some((size, size_len)) = read_size(&buf[id_len..])? else {
        return Ok(None);
    };
    Ok(Some(ElementHeader {
        id,
        size,
        header_len: id_len + size_len,
    }))
}

/// Reads an unsigned integer payload (0-8 bytes, big-endian; empty means 0).
pub fn read_uint(data: &[u8]) -> Result<u64, EbmlError> {
    if data.len() > 8 {
        return Err(EbmlError::BadLength {
            kind: ValueKind::UnsignedInteger,
            len: data.len(),
        });
    }
    Ok(data.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Reads a signed integer payload (0-8 bytes, big-endian two's complement).
pub fn read_int(data: &[u8]) -> Result<i64, EbmlError> {
    if data.len() > 8 {
        return Err(EbmlError::BadLength {
            kind: ValueKind::SignedInteger,
            len: data.len(),
        });
    }
    if data.is_empty() {
        return Ok(0);
    }
    let unsigned = data.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let shift = 64 - 8 * data.len() as u32;
    // Shift the sign bit to the top, then arithmetic-shift back to sign-extend.
    Ok(((unsigned << shift) as i64) >> shift)
}

/// Reads a float payload (0, 4 or 8 bytes; empty means 0.0).
pub fn read_float(data: &[u8]) -> Result<f64, EbmlError> {
    match data.len() {
        0 => Ok(0.0),
        4 => Ok(f64::from(f32::from_be_bytes([
            data[0], data[1], data[2], data[3],
        ]))),
        8 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(data);
            Ok(f64::from_be_bytes(bytes))
        }
        len => Err(EbmlError::BadLength {
            kind: ValueKind::Float,
            len,
        }),
    }
}

/// Reads a String or UTF-8 payload. Both may be zero-padded: the value ends at the
/// first 0x00 byte (RFC 8794 sections 7.4 and 7.5). We accept UTF-8 for both, since
/// producers put non-ASCII text in ASCII-typed fields.
pub fn read_string(data: &[u8]) -> Result<&str, EbmlError> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    std::str::from_utf8(&data[..end]).map_err(|_| EbmlError::InvalidUtf8)
}

/// Reads a date payload: signed nanoseconds since 2001-01-01T00:00:00 UTC (0 or 8
/// bytes).
pub fn read_date(data: &[u8]) -> Result<i64, EbmlError> {
    match data.len() {
        0 | 8 => read_int(data),
        len => Err(EbmlError::BadLength {
            kind: ValueKind::Date,
            len,
        }),
    }
}

/// Converts an EBML date to Unix nanoseconds (saturating).
pub fn date_to_unix_nanos(date: i64) -> i64 {
    date.saturating_add(DATE_EPOCH_UNIX_SECS * 1_000_000_000)
}

// ---------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------

/// Appends an element ID (marker bit included, so its bytes are written as they are).
pub fn write_id(out: &mut Vec<u8>, id: u32) {
    debug_assert!(is_valid_id(id), "invalid element id {id:#x}");
    let len = id_len(id);
    out.extend_from_slice(&id.to_be_bytes()[4 - len..]);
}

/// Length of the shortest size encoding of `size` (sizes whose value bits would all be
/// 1 need one more byte, since all ones means "unknown").
pub fn size_len(size: u64) -> usize {
    (1..=MAX_SIZE_LEN)
        .find(|&len| size < (1u64 << (7 * len)) - 1)
        .unwrap_or(MAX_SIZE_LEN + 1)
}

/// Appends `size` in its shortest encoding.
pub fn write_size(out: &mut Vec<u8>, size: u64) -> Result<(), EbmlError> {
    write_size_fixed(out, size, size_len(size))
}

/// Appends `size` in exactly `len` bytes (1-8): the fixed widths producers use so a
/// size can be patched in place (`len` 8: `01 xx xx xx xx xx xx xx`).
pub fn write_size_fixed(out: &mut Vec<u8>, size: u64, len: usize) -> Result<(), EbmlError> {
    if !(1..=MAX_SIZE_LEN).contains(&len) || size >= (1u64 << (7 * len)) - 1 {
        return Err(EbmlError::SizeDoesNotFit { size, len });
    }
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
    Ok(())
}

/// Appends the unknown size in `len` bytes (1-8): `FF`, `7F FF`, ... `01 FF*7`.
pub fn write_unknown_size(out: &mut Vec<u8>, len: usize) -> Result<(), EbmlError> {
    if !(1..=MAX_SIZE_LEN).contains(&len) {
        return Err(EbmlError::SizeDoesNotFit {
            size: u64::MAX,
            len,
        });
    }
    let all_ones = (1u64 << (7 * len)) - 1;
    let marked = all_ones | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
    Ok(())
}

/// Appends a whole element: ID, shortest size, payload.
pub fn write_element(out: &mut Vec<u8>, id: u32, payload: &[u8]) {
    write_id(out, id);
    write_size(out, payload.len() as u64).expect("a slice length always fits 8 bytes");
    out.extend_from_slice(payload);
}

/// Appends a whole element whose size is written in exactly `size_len` bytes.
pub fn write_element_fixed(
    out: &mut Vec<u8>,
    id: u32,
    payload: &[u8],
    size_len: usize,
) -> Result<(), EbmlError> {
    write_id(out, id);
    write_size_fixed(out, payload.len() as u64, size_len)?;
    out.extend_from_slice(payload);
    Ok(())
}

/// The shortest big-endian bytes of an unsigned integer (at least one byte).
pub fn uint_bytes(value: u64) -> ([u8; 8], usize) {
    let len = (8 - value.leading_zeros() as usize / 8).max(1);
    (value.to_be_bytes(), len)
}

/// Appends an unsigned integer element in its shortest form.
pub fn write_uint_element(out: &mut Vec<u8>, id: u32, value: u64) {
    let (bytes, len) = uint_bytes(value);
    write_element(out, id, &bytes[8 - len..]);
}

/// Appends a signed integer element in its shortest form.
pub fn write_int_element(out: &mut Vec<u8>, id: u32, value: i64) {
    let bytes = value.to_be_bytes();
    // Drop leading bytes that only repeat the sign.
    let mut start = 0;
    while start < 7 {
        let redundant = (bytes[start] == 0x00 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xFF && bytes[start + 1] & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    write_element(out, id, &bytes[start..]);
}

/// Appends an 8-byte float element.
pub fn write_float_element(out: &mut Vec<u8>, id: u32, value: f64) {
    write_element(out, id, &value.to_be_bytes());
}

/// Appends a string element (no zero padding).
pub fn write_string_element(out: &mut Vec<u8>, id: u32, value: &str) {
    write_element(out, id, value.as_bytes());
}

/// Appends a date element (8 bytes, nanoseconds since 2001-01-01T00:00:00 UTC).
pub fn write_date_element(out: &mut Vec<u8>, id: u32, date: i64) {
    write_element(out, id, &date.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_of_one_to_four_bytes() {
        assert_eq!(read_id(&[0xEC]).unwrap(), Some((0xEC, 1)));
        assert_eq!(read_id(&[0x42, 0x86]).unwrap(), Some((0x4286, 2)));
        assert_eq!(read_id(&[0x2A, 0xD7, 0xB1]).unwrap(), Some((0x2A_D7B1, 3)));
        assert_eq!(
            read_id(&[0x1A, 0x45, 0xDF, 0xA3, 0x99]).unwrap(),
            Some((ids::EBML, 4))
        );
        for id in [0xECu32, 0x4286, 0x2A_D7B1, ids::EBML] {
            let mut out = Vec::new();
            write_id(&mut out, id);
            assert_eq!(read_id(&out).unwrap(), Some((id, out.len())));
        }
    }

    #[test]
    fn ids_need_all_their_bytes() {
        let full = [0x1A, 0x45, 0xDF, 0xA3];
        for cut in 0..full.len() {
            assert_eq!(read_id(&full[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn ids_longer_than_four_bytes_are_rejected() {
        for first in [0x08u8, 0x04, 0x02, 0x01, 0x00] {
            assert_eq!(
                read_id(&[first, 1, 2, 3, 4, 5, 6, 7, 8]),
                Err(EbmlError::IdTooLong)
            );
        }
    }

    #[test]
    fn reserved_and_overlong_ids_are_rejected() {
        // All value bits zero or one.
        assert_eq!(read_id(&[0x80]), Err(EbmlError::InvalidId(0x80)));
        assert_eq!(read_id(&[0xFF]), Err(EbmlError::InvalidId(0xFF)));
        assert_eq!(read_id(&[0x7F, 0xFF]), Err(EbmlError::InvalidId(0x7FFF)));
        assert_eq!(read_id(&[0x40, 0x00]), Err(EbmlError::InvalidId(0x4000)));
        // 0x403F would fit in one byte as 0xBF: not the shortest form.
        assert_eq!(read_id(&[0x40, 0x3F]), Err(EbmlError::InvalidId(0x403F)));
        // 0x407F holds 0x7F, whose one-byte form 0xFF is reserved: valid.
        assert_eq!(read_id(&[0x40, 0x7F]).unwrap(), Some((0x407F, 2)));
    }

    #[test]
    fn sizes_of_every_length() {
        for len in 1..=8usize {
            let max = (1u64 << (7 * len)) - 2;
            for size in [0, 1, max / 2, max] {
                let mut out = Vec::new();
                write_size_fixed(&mut out, size, len).unwrap();
                assert_eq!(out.len(), len);
                assert_eq!(
                    read_size(&out).unwrap(),
                    Some((ElementSize::Known(size), len))
                );
            }
        }
    }

    #[test]
    fn unknown_size_in_every_length() {
        for len in 1..=8usize {
            let mut out = Vec::new();
            write_unknown_size(&mut out, len).unwrap();
            assert_eq!(out.len(), len);
            assert_eq!(out[0], 0xFF >> (len - 1));
            assert!(out[1..].iter().all(|&b| b == 0xFF));
            assert_eq!(read_size(&out).unwrap(), Some((ElementSize::Unknown, len)));
        }
        assert!(write_unknown_size(&mut Vec::new(), 0).is_err());
        assert!(write_unknown_size(&mut Vec::new(), 9).is_err());
    }

    #[test]
    fn sizes_longer_than_eight_bytes_are_rejected() {
        assert_eq!(read_size(&[0x00, 0xFF]), Err(EbmlError::SizeTooLong));
        assert_eq!(read_header(&[0xEC, 0x00]), Err(EbmlError::SizeTooLong));
    }

    #[test]
    fn shortest_size_encoding_avoids_all_ones() {
        assert_eq!(size_len(0), 1);
        assert_eq!(size_len(126), 1);
        assert_eq!(size_len(127), 2);
        assert_eq!(size_len(MAX_KNOWN_SIZE), 8);
        let mut out = Vec::new();
        write_size(&mut out, 127).unwrap();
        assert_eq!(out, [0x40, 0x7F]);
        assert!(write_size(&mut Vec::new(), MAX_KNOWN_SIZE + 1).is_err());
        assert!(write_size_fixed(&mut Vec::new(), 127, 1).is_err());
        assert!(write_size_fixed(&mut Vec::new(), 5, 9).is_err());
        let mut fixed = Vec::new();
        write_size_fixed(&mut fixed, 0x23, 8).unwrap();
        assert_eq!(fixed, [0x01, 0, 0, 0, 0, 0, 0, 0x23]);
    }

    #[test]
    fn headers_need_id_and_size() {
        let bytes = [0x1A, 0x45, 0xDF, 0xA3, 0x01, 0, 0, 0, 0, 0, 0, 0x23];
        for cut in 0..bytes.len() {
            assert_eq!(read_header(&bytes[..cut]).unwrap(), None);
        }
        assert_eq!(
            read_header(&bytes).unwrap(),
            Some(ElementHeader {
                id: ids::EBML,
                size: ElementSize::Known(0x23),
                header_len: 12
            })
        );
    }

    #[test]
    fn integers() {
        assert_eq!(read_uint(&[]).unwrap(), 0);
        assert_eq!(read_uint(&[0x0F, 0x42, 0x40]).unwrap(), 1_000_000);
        assert_eq!(read_uint(&[0xFF; 8]).unwrap(), u64::MAX);
        assert!(read_uint(&[0; 9]).is_err());
        assert_eq!(read_int(&[]).unwrap(), 0);
        assert_eq!(read_int(&[0xFF]).unwrap(), -1);
        assert_eq!(read_int(&[0xFF, 0x38]).unwrap(), -200);
        assert_eq!(read_int(&[0x7F]).unwrap(), 127);
        assert_eq!(read_int(&[0x80, 0, 0, 0, 0, 0, 0, 0]).unwrap(), i64::MIN);
        assert!(read_int(&[0; 9]).is_err());
        for v in [0i64, 1, -1, 127, 128, -128, -129, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_int_element(&mut out, 0xFB, v);
            assert_eq!(read_int(&out[2..]).unwrap(), v, "{v}");
        }
        let mut out = Vec::new();
        write_uint_element(&mut out, 0xD7, 1);
        assert_eq!(out, [0xD7, 0x81, 0x01]);
    }

    #[test]
    fn floats() {
        assert_eq!(read_float(&[]).unwrap(), 0.0);
        assert_eq!(read_float(&48000f32.to_be_bytes()).unwrap(), 48000.0);
        assert_eq!(read_float(&10000.5f64.to_be_bytes()).unwrap(), 10000.5);
        assert!(read_float(&[0; 2]).is_err());
        assert!(read_float(&[0; 10]).is_err());
    }

    #[test]
    fn strings_stop_at_zero_padding() {
        assert_eq!(read_string(b"matroska\0").unwrap(), "matroska");
        assert_eq!(read_string(b"00:00:10.000\0\0").unwrap(), "00:00:10.000");
        assert_eq!(read_string(b"").unwrap(), "");
        assert_eq!(read_string(&[0xC3, 0x28]), Err(EbmlError::InvalidUtf8));
    }

    #[test]
    fn dates() {
        assert_eq!(read_date(&[]).unwrap(), 0);
        assert_eq!(date_to_unix_nanos(0), 978_307_200_000_000_000);
        let mut out = Vec::new();
        write_date_element(&mut out, 0x4461, -5);
        assert_eq!(read_date(&out[3..]).unwrap(), -5);
        assert!(read_date(&[0; 4]).is_err());
    }

    proptest! {
        #[test]
        fn size_round_trip(size in 0..=MAX_KNOWN_SIZE) {
            let mut out = Vec::new();
            write_size(&mut out, size).unwrap();
            prop_assert_eq!(out.len(), size_len(size));
            prop_assert_eq!(read_size(&out).unwrap(), Some((ElementSize::Known(size), out.len())));
        }

        #[test]
        fn header_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(Some(header)) = read_header(&bytes) {
                prop_assert!(header.header_len <= MAX_HEADER_LEN);
                prop_assert!(header.header_len <= bytes.len());
                prop_assert!(is_valid_id(header.id));
            }
            let _ = read_uint(&bytes);
            let _ = read_int(&bytes);
            let _ = read_float(&bytes);
            let _ = read_string(&bytes);
            let _ = read_date(&bytes);
        }

        #[test]
        fn valid_ids_round_trip(id in 0x81u32..=0x1FFF_FFFE) {
            if is_valid_id(id) {
                let mut out = Vec::new();
                write_id(&mut out, id);
                prop_assert_eq!(read_id(&out).unwrap(), Some((id, out.len())));
            } else {
                let bytes = &id.to_be_bytes()[4 - id_len(id)..];
                prop_assert!(!matches!(read_id(bytes), Ok(Some((got, _))) if got == id));
            }
        }
    }
}
