//! Hash keys: the 128-bit space partition keys are mapped into, and how it is divided
//! among shards (AWS Kinesis: MD5 of the partition key read as a big-endian unsigned
//! 128-bit integer; N shards get N contiguous ranges, the last ending at 2^128-1).

use md5::{Digest, Md5};

/// The hash key of a partition key.
pub fn partition_hash(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    u128::from_be_bytes(digest.into())
}

/// Parses an ExplicitHashKey (decimal); `None` if it is not a number in 0..2^128.
pub fn parse_hash_key(text: &str) -> Option<u128> {
    if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u128>().ok()
}

/// `count` contiguous ranges covering the whole space, as even as possible.
pub fn uniform_ranges(count: u32) -> Vec<(u128, u128)> {
    assert!(count > 0);
    if count == 1 {
        return vec![(0, u128::MAX)];
    }
    let count = count as u128;
    // floor(2^128 / count), computed without overflowing.
    let step = u128::MAX / count + u128::from(u128::MAX % count == count - 1);
    (0..count)
        .map(|i| {
            let end = if i + 1 == count {
                u128::MAX
            } else {
                (i + 1) * step - 1
            };
            (i * step, end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_known_value() {
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(partition_hash("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn ranges_are_contiguous_and_complete() {
        for n in [1u32, 2, 3, 4, 5, 7, 10, 100, 1000] {
            let r = uniform_ranges(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].0, 0);
            assert_eq!(r.last().unwrap().1, u128::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
                assert!(w[0].0 <= w[0].1);
            }
        }
        // Matches what AWS reports for two shards.
        assert_eq!(
            uniform_ranges(2)[0].1,
            170141183460469231731687303715884105727
        );
    }

    #[test]
    fn explicit_hash_keys() {
        assert_eq!(parse_hash_key("0"), Some(0));
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211455"),
            Some(u128::MAX)
        );
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211456"),
            None
        );
        assert_eq!(parse_hash_key("-1"), None);
        assert_eq!(parse_hash_key(""), None);
    }
}
