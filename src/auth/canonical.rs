//! The SigV4 canonical request, built exactly as AWS specifies it ("Create a canonical
//! request for Signature Version 4"):
//!
//! ```text
//! METHOD \n
//! canonical URI \n          normalised path, each byte outside RFC 3986 "unreserved"
//!                           and '/' percent-encoded again (non-S3 services: the path
//!                           as sent on the wire is encoded a second time)
//! canonical query \n        every parameter decoded, re-encoded, sorted by key then value
//! canonical headers \n      "name:value\n" per signed header, lowercase names, values
//!                           trimmed, inner whitespace runs collapsed, repeats joined by ','
//! signed headers \n         the SignedHeaders list as the client sent it
//! payload hash              hex SHA-256 of the body, or UNSIGNED-PAYLOAD / STREAMING-*
//! ```
//!
//! Only the non-S3 rules are implemented (S3 neither normalises nor re-encodes the
//! path); Freshet serves the Kinesis family. Everything here is pure byte work.

use http::HeaderMap;

/// RFC 3986 unreserved characters: never percent-encoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// AWS's `UriEncode`: every byte but the unreserved ones (and '/' when `keep_slash`)
/// as `%XX` with uppercase hex.
pub(crate) fn uri_encode(bytes: &[u8], keep_slash: bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

/// Percent-decodes `text`. A '%' not followed by two hex digits stays a literal '%';
/// '+' stays '+' (SigV4 query strings are not form encoding).
pub(crate) fn percent_decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex_value(b[i + 1]), hex_value(b[i + 2]))
        {
            out.push((hi << 4) | lo);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Removes `.` and `..` segments and empty segments (runs of '/'), keeping a leading
/// and a trailing '/', as AWS's SDKs and the test suite's `normalize` cases do:
/// `//example//` -> `/example/`, `/example/..` -> `/`, `` -> `/`.
pub(crate) fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    out.push('/');
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical URI of a non-S3 request: the path as received, normalised, then
/// URI-encoded once more (so `%3D` on the wire becomes `%253D`).
pub(crate) fn canonical_uri(raw_path: &str) -> String {
    let normalized = normalize_path(raw_path);
    let mut out = String::with_capacity(normalized.len());
    uri_encode(normalized.as_bytes(), true, &mut out);
    out
}

/// One query parameter, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryParam {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl QueryParam {
    pub fn key_is(&self, name: &str) -> bool {
        self.key.eq_ignore_ascii_case(name.as_bytes())
    }

    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// Splits a raw query string (no leading '?') into decoded parameters; empty pieces
/// (`a=1&&b=2`) are skipped and a key without '=' has an empty value.
pub(crate) fn parse_query(query: &str) -> Vec<QueryParam> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            QueryParam {
                key: percent_decode(key),
                value: percent_decode(value),
            }
        })
        .collect()
}

/// The canonical query string: each parameter encoded, sorted by encoded key and then
/// encoded value (byte order), joined as `k=v&k=v`.
pub(crate) fn canonical_query<'a>(params: impl Iterator<Item = &'a QueryParam>) -> String {
    let mut encoded: Vec<(String, String)> = params
        .map(|p| {
            let mut key = String::with_capacity(p.key.len());
            uri_encode(&p.key, false, &mut key);
            let mut value = String::with_capacity(p.value.len());
            uri_encode(&p.value, false, &mut value);
            (key, value)
        })
        .collect();
    encoded.sort_unstable();
    let mut out = String::new();
    for (i, (key, value)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Appends one header value in canonical form: leading and trailing whitespace
/// removed, each inner run of whitespace (spaces, tabs, folded line breaks) one space.
pub(crate) fn push_trimmed_value(value: &[u8], out: &mut Vec<u8>) {
    let mut pending_space = false;
    let mut wrote = false;
    for &b in value {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            pending_space = wrote;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
            wrote = true;
        }
    }
}

/// The canonical headers block: one `name:value\n` line per signed header, in the
/// order of the SignedHeaders list. A header sent several times has its values
/// joined by ',' in the order received. `host` falls back to the request target's
/// authority (HTTP/2 `:authority`, absolute-form targets) when no Host header came.
pub(crate) fn canonical_headers(
    signed_headers: &[&str],
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for &name in signed_headers {
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        out.push(b':');
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none()
            && name.eq_ignore_ascii_case("host")
            && let Some(authority) = authority
        {
            push_trimmed_value(authority.as_bytes(), &mut out);
        }
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_trimmed_value(value.as_bytes(), &mut out);
        }
        out.push(b'\n');
    }
    out
}

/// The canonical request, from its already canonical parts.
pub(crate) fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &[u8],
    signed_headers: &str,
    payload_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        method.len() + canonical_uri.len() + canonical_query.len() + canonical_headers.len() + 160,
    );
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_headers);
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_normalisation_matches_the_suite() {
        for (raw, expected) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/./", "/"),
            ("/./example", "/example"),
            ("//example//", "/example/"),
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("/a/b/../c/", "/a/c/"),
            ("/../../x", "/x"),
            ("/createStream", "/createStream"),
        ] {
            assert_eq!(normalize_path(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn canonical_uri_encodes_the_wire_path_again() {
        assert_eq!(canonical_uri("/example space/"), "/example%20space/");
        assert_eq!(canonical_uri("/ሴ"), "/%E1%88%B4");
        assert_eq!(
            canonical_uri("/test/@connections/JBDvjfGEIAMCERw%3D"),
            "/test/%40connections/JBDvjfGEIAMCERw%253D"
        );
        let unreserved = "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        assert_eq!(canonical_uri(unreserved), unreserved);
    }

    #[test]
    fn decoding_keeps_malformed_escapes_and_plus() {
        assert_eq!(percent_decode("a%2fb%2Fc"), b"a/b/c");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
        assert_eq!(percent_decode("a+b"), b"a+b");
        assert_eq!(percent_decode("%E1%88%B4"), "ሴ".as_bytes());
    }

    #[test]
    fn query_is_decoded_reencoded_and_sorted() {
        let q = |raw: &str| canonical_query(parse_query(raw).iter());
        assert_eq!(q(""), "");
        assert_eq!(
            q("Param2=value2&Param1=value1"),
            "Param1=value1&Param2=value2"
        );
        assert_eq!(
            q("Param-3=Value3&Param=Value2&%E1%88%B4=Value1"),
            "%E1%88%B4=Value1&Param=Value2&Param-3=Value3"
        );
        assert_eq!(q("ሴ=bar"), "%E1%88%B4=bar");
        assert_eq!(q("b=2&a&c=&&a=1"), "a=&a=1&b=2&c=");
        assert_eq!(q("k=a%2fb&k=a b"), "k=a%20b&k=a%2Fb");
        assert_eq!(q("x=1+2"), "x=1%2B2");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        let trim = |v: &[u8]| {
            let mut out = Vec::new();
            push_trimmed_value(v, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(trim(b" value1"), "value1");
        assert_eq!(trim(b"\"a   b   c\""), "\"a b c\"");
        // The suite's get-header-value-multiline (obs-fold, which hyper refuses on the
        // wire, so only checked here).
        assert_eq!(
            trim(b"value1\n  value2\n     value3"),
            "value1 value2 value3"
        );
        assert_eq!(trim(b"\t a \t b \t"), "a b");
        assert_eq!(trim(b"   "), "");
    }

    #[test]
    fn repeated_headers_join_in_order() {
        let mut headers = HeaderMap::new();
        for v in ["value4", "value1", " value3 ", "value2"] {
            headers.append("my-header1", v.parse().unwrap());
        }
        let block = canonical_headers(&["host", "my-header1"], &headers, Some("example.com"));
        assert_eq!(
            String::from_utf8(block).unwrap(),
            "host:example.com\nmy-header1:value4,value1,value3,value2\n"
        );
        // SignedHeaders names are looked up whatever their case, written lowercase.
        let block = canonical_headers(&["My-Header1"], &headers, None);
        assert_eq!(block, b"my-header1:value4,value1,value3,value2\n");
    }
}
