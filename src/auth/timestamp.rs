//! Request timestamps as SigV4 uses them: ISO 8601 basic format (`20150830T123600Z`)
//! in `X-Amz-Date` and the string to sign, the `YYYYMMDD` day in the credential scope,
//! and the HTTP `Date` header (IMF-fixdate, RFC 9110 §5.6.7) as the fallback AWS
//! accepts when `X-Amz-Date` is absent. Whole seconds, UTC, no time zones.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A request time: whole seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AmzDate {
    secs: i64,
}

impl AmzDate {
    pub fn from_unix_secs(secs: i64) -> Self {
        Self { secs }
    }

    /// `now` truncated to the second (what a signer writes into `X-Amz-Date`).
    pub fn from_system_time(now: SystemTime) -> Self {
        let secs = match now.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_secs() as i64,
            // Before 1970: round towards the past, like the positive side.
            Err(before) => -(before.duration().as_secs_f64().ceil() as i64),
        };
        Self { secs }
    }

    pub fn unix_secs(self) -> i64 {
        self.secs
    }

    pub fn to_system_time(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
        }
    }

    pub fn plus_secs(self, secs: i64) -> Self {
        Self {
            secs: self.secs.saturating_add(secs),
        }
    }

    /// Parses ISO 8601 basic format, exactly `YYYYMMDD'T'HHMMSS'Z'` (AWS accepts no
    /// other form in `X-Amz-Date`: no fractions, no offsets).
    pub fn parse_basic(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let year = digits(&b[0..4])?;
        let month = digits(&b[4..6])?;
        let day = digits(&b[6..8])?;
        let hour = digits(&b[9..11])?;
        let minute = digits(&b[11..13])?;
        let second = digits(&b[13..15])?;
        Self::from_civil(year, month, day, hour, minute, second)
    }

    /// Parses an HTTP date in IMF-fixdate form, `Sun, 06 Nov 1994 08:49:37 GMT`. The
    /// obsolete RFC 850 and asctime forms are refused: no SigV4 client sends them.
    pub fn parse_http_date(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 29
            || &b[3..5] != b", "
            || b[7] != b' '
            || b[11] != b' '
            || b[16] != b' '
            || b[19] != b':'
            || b[22] != b':'
            || &b[25..] != b" GMT"
        {
            return None;
        }
        const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
        const MONTHS: [&[u8]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let weekday = DAYS.iter().position(|d| *d == &b[0..3])?;
        let month = MONTHS.iter().position(|m| *m == &b[8..11])? as u32 + 1;
        let day = digits(&b[5..7])?;
        let year = digits(&b[12..16])?;
        let hour = digits(&b[17..19])?;
        let minute = digits(&b[20..22])?;
        let second = digits(&b[23..25])?;
        let date = Self::from_civil(year, month, day, hour, minute, second)?;
        // 1970-01-01 was a Thursday (index 3 with Monday = 0).
        let actual_weekday = (date.secs.div_euclid(86_400) + 3).rem_euclid(7) as usize;
        (actual_weekday == weekday).then_some(date)
    }

    fn from_civil(year: u32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<Self> {
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || min > 59
            || sec > 59
        {
            return None;
        }
        let days = days_from_civil(year as i64, month, day);
        Some(Self {
            secs: days * 86_400 + (hour * 3600 + min * 60 + sec) as i64,
        })
    }

    fn civil(self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.secs.div_euclid(86_400);
        let in_day = self.secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        (
            year,
            month,
            day,
            in_day / 3600,
            in_day / 60 % 60,
            in_day % 60,
        )
    }

    /// `YYYYMMDD`: the day as the credential scope spells it.
    pub fn day(self) -> String {
        let (year, month, day, ..) = self.civil();
        format!("{year:04}{month:02}{day:02}")
    }
}

/// ISO 8601 basic format, `20150830T123600Z`.
impl fmt::Display for AmzDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day, hour, minute, second) = self.civil();
        write!(
            f,
            "{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z"
        )
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_format_round_trips() {
        let t = AmzDate::parse_basic("20150830T123600Z").unwrap();
        assert_eq!(t.unix_secs(), 1_440_938_160);
        assert_eq!(t.to_string(), "20150830T123600Z");
        assert_eq!(t.day(), "20150830");
        let leap = AmzDate::parse_basic("20240229T235959Z").unwrap();
        assert_eq!(leap.plus_secs(1).to_string(), "20240301T000000Z");
    }

    #[test]
    fn basic_format_is_strict() {
        for bad in [
            "2015-08-30T12:36:00Z",
            "20150830T123600",
            "20150830T123600z",
            "20150830 123600Z",
            "20151330T123600Z",
            "20150230T123600Z",
            "20150830T243600Z",
            "20150830T126000Z",
            "2015083OT123600Z",
            "+0150830T123600Z",
            "",
        ] {
            assert_eq!(AmzDate::parse_basic(bad), None, "{bad}");
        }
    }

    #[test]
    fn http_date() {
        let t = AmzDate::parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT").unwrap();
        assert_eq!(t.to_string(), "20150830T123600Z");
        // Wrong weekday, other forms.
        assert_eq!(
            AmzDate::parse_http_date("Mon, 30 Aug 2015 12:36:00 GMT"),
            None
        );
        assert_eq!(
            AmzDate::parse_http_date("Sunday, 30-Aug-15 12:36:00 GMT"),
            None
        );
        assert_eq!(AmzDate::parse_http_date("Sun Aug 30 12:36:00 2015"), None);
    }

    #[test]
    fn system_time_conversions() {
        let t = UNIX_EPOCH + Duration::from_millis(1_440_938_160_999);
        assert_eq!(AmzDate::from_system_time(t).to_string(), "20150830T123600Z");
        let d = AmzDate::parse_basic("19691231T235959Z").unwrap();
        assert_eq!(d.unix_secs(), -1);
        assert_eq!(AmzDate::from_system_time(d.to_system_time()), d);
    }
}
