//! Calendar arithmetic on UTC milliseconds: literals (`TIMESTAMP '2004-09-30 13:48:23'`),
//! FLOOR/CEIL to a unit, EXTRACT, and the Java `SimpleDateFormat` patterns of
//! CHAR_TO_TIMESTAMP and TIMESTAMP_TO_CHAR (Kinesis Data Analytics SQL reference,
//! "Date and Time Patterns"). Proleptic Gregorian calendar, no time zones (UTC), no
//! clock. Never panics: out-of-range input is an error or `None`. The parsing and
//! formatting of dates and timestamps is public: the server's record schemas use it.

use crate::ast::Unit;

pub(crate) const MS_SECOND: i64 = 1000;
pub(crate) const MS_MINUTE: i64 = 60 * MS_SECOND;
pub(crate) const MS_HOUR: i64 = 60 * MS_MINUTE;
pub(crate) const MS_DAY: i64 = 24 * MS_HOUR;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date of a day number.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Years accepted in literals and parsed text.
const YEARS: std::ops::RangeInclusive<i64> = 1..=9999;

/// Milliseconds of a civil date and time, if every field is in range.
pub(crate) fn to_millis(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> Option<i64> {
    if !YEARS.contains(&y) || !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || s > 59 || ms > 999 {
        return None;
    }
    Some(
        days_from_civil(y, mo, d) * MS_DAY
            + h as i64 * MS_HOUR
            + mi as i64 * MS_MINUTE
            + s as i64 * MS_SECOND
            + ms as i64,
    )
}

/// The fields of a timestamp: year, month, day, hour, minute, second, millisecond.
pub(crate) fn fields(ts: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = ts.div_euclid(MS_DAY);
    let rem = ts.rem_euclid(MS_DAY);
    let (y, m, d) = civil_from_days(days);
    (
        y,
        m,
        d,
        (rem / MS_HOUR) as u32,
        (rem % MS_HOUR / MS_MINUTE) as u32,
        (rem % MS_MINUTE / MS_SECOND) as u32,
        (rem % MS_SECOND) as u32,
    )
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `yyyy-MM-dd`.
pub fn parse_date(s: &str) -> Option<i32> {
    let mut it = s.trim().splitn(3, '-');
    let (y, m, d) = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
    let ms = to_millis(y as i64, m, d, 0, 0, 0, 0)?;
    i32::try_from(ms / MS_DAY).ok()
}

/// `HH:mm:ss[.fff]` as milliseconds since midnight.
pub fn parse_time(s: &str) -> Option<u32> {
    let mut it = s.trim().splitn(3, ':');
    let h = num(it.next()?)?;
    let mi = num(it.next()?)?;
    let sec = it.next().unwrap_or("0");
    let (sec, frac) = match sec.split_once('.') {
        Some((a, b)) => (a, b),
        None => (sec, ""),
    };
    let s = num(sec)?;
    let ms = if frac.is_empty() {
        0
    } else {
        let f: String = frac.chars().chain("000".chars()).take(3).collect();
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        num(&f)?
    };
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(((h * 60 + mi) * 60 + s) * 1000 + ms)
}

/// `yyyy-MM-dd[ HH:mm[:ss[.fff]]]` (also with `T`).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let days = parse_date(date)? as i64;
    let t = match time {
        Some(t) => parse_time(t)? as i64,
        None => 0,
    };
    Some(days * MS_DAY + t)
}

/// `2004-09-30 13:48:23.000`.
pub fn format_timestamp(ts: i64) -> String {
    let (y, mo, d, h, mi, s, ms) = fields(ts);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{ms:03}")
}

pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

pub(crate) fn format_time(ms: u32) -> String {
    let (h, mi, s, f) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{mi:02}:{s:02}.{f:03}")
}

/// Rounds down (or up, `ceil`) to the unit; `None` for units that do not apply.
pub(crate) fn floor_to(ts: i64, unit: Unit, ceil: bool) -> Option<i64> {
    let fixed = match unit {
        Unit::Millisecond => Some(1),
        Unit::Second => Some(MS_SECOND),
        Unit::Minute => Some(MS_MINUTE),
        Unit::Hour => Some(MS_HOUR),
        Unit::Day => Some(MS_DAY),
        _ => None,
    };
    if let Some(step) = fixed {
        let f = ts.div_euclid(step).checked_mul(step)?;
        return Some(if ceil && f != ts {
            f.checked_add(step)?
        } else {
            f
        });
    }
    let (y, m, ..) = fields(ts);
    let at = |y: i64, m: u32| days_from_civil(y, m, 1).checked_mul(MS_DAY);
    let (start, next) = match unit {
        Unit::Month => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (at(y, m)?, at(ny, nm)?)
        }
        Unit::Year => (at(y, 1)?, at(y + 1, 1)?),
        _ => return None,
    };
    Some(if ceil && start != ts { next } else { start })
}

/// EXTRACT(unit FROM ts).
pub(crate) fn extract(ts: i64, unit: Unit) -> i64 {
    let (y, mo, d, h, mi, s, ms) = fields(ts);
    match unit {
        Unit::Year => y,
        Unit::Month => mo as i64,
        Unit::Day => d as i64,
        Unit::Hour => h as i64,
        Unit::Minute => mi as i64,
        Unit::Second => s as i64,
        Unit::Millisecond => ms as i64,
        // 1 = Sunday, as in Java's Calendar.DAY_OF_WEEK; 1970-01-01 was a Thursday.
        Unit::DayOfWeek => (ts.div_euclid(MS_DAY) + 4).rem_euclid(7) + 1,
        Unit::DayOfYear => ts.div_euclid(MS_DAY) - days_from_civil(y, 1, 1) + 1,
        Unit::Epoch => ts.div_euclid(MS_SECOND),
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// One piece of a pattern: a run of one letter, or literal text.
enum Piece {
    Field(char, usize),
    Text(String),
}

fn pieces(pattern: &str) -> Result<Vec<Piece>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated quote in the format".into()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        text.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        text.push(ch);
                        i += 1;
                    }
                }
            }
            if text.is_empty() {
                text.push('\'');
            }
            out.push(Piece::Text(text));
        } else if c.is_ascii_alphabetic() {
            let mut n = 0;
            while chars.get(i) == Some(&c) {
                n += 1;
                i += 1;
            }
            if !"yMdHhmsSaEDkK".contains(c) {
                return Err(format!("unsupported format letter '{c}'"));
            }
            out.push(Piece::Field(c, n));
        } else {
            out.push(Piece::Text(c.to_string()));
            i += 1;
        }
    }
    Ok(out)
}

/// TIMESTAMP_TO_CHAR(pattern, ts).
pub(crate) fn format_pattern(pattern: &str, ts: i64) -> Result<String, String> {
    let (y, mo, d, h, mi, s, ms) = fields(ts);
    let mut out = String::new();
    for p in pieces(pattern)? {
        match p {
            Piece::Text(t) => out.push_str(&t),
            Piece::Field(c, n) => {
                let v: i64 = match c {
                    'y' if n == 2 => y.rem_euclid(100),
                    'y' => y,
                    'M' if n >= 3 => {
                        let name = MONTHS[(mo - 1) as usize % 12];
                        out.push_str(if n == 3 { &name[..3] } else { name });
                        continue;
                    }
                    'M' => mo as i64,
                    'd' => d as i64,
                    'H' => h as i64,
                    'k' => {
                        if h == 0 {
                            24
                        } else {
                            h as i64
                        }
                    }
                    'K' => (h % 12) as i64,
                    'h' => {
                        if h % 12 == 0 {
                            12
                        } else {
                            (h % 12) as i64
                        }
                    }
                    'm' => mi as i64,
                    's' => s as i64,
                    'S' => ms as i64,
                    'D' => extract(ts, Unit::DayOfYear),
                    'a' => {
                        out.push_str(if h < 12 { "AM" } else { "PM" });
                        continue;
                    }
                    'E' => {
                        const DAYS: [&str; 7] = [
                            "Sunday",
                            "Monday",
                            "Tuesday",
                            "Wednesday",
                            "Thursday",
                            "Friday",
                            "Saturday",
                        ];
                        let name = DAYS[(extract(ts, Unit::DayOfWeek) - 1) as usize % 7];
                        out.push_str(if n <= 3 { &name[..3] } else { name });
                        continue;
                    }
                    _ => 0,
                };
                let width = if c == 'S' { 3 } else { n };
                out.push_str(&format!("{v:0width$}"));
            }
        }
    }
    Ok(out)
}

/// CHAR_TO_TIMESTAMP(pattern, text).
pub(crate) fn parse_pattern(pattern: &str, text: &str) -> Result<i64, String> {
    let bad = || format!("'{text}' does not match the format '{pattern}'");
    let t: Vec<char> = text.chars().collect();
    let mut i = 0;
    let (mut y, mut mo, mut d, mut h, mut mi, mut s, mut ms) =
        (1970i64, 1u32, 1u32, 0u32, 0u32, 0u32, 0u32);
    let mut pm: Option<bool> = None;
    let ps = pieces(pattern)?;
    for (k, p) in ps.iter().enumerate() {
        match p {
            Piece::Text(lit) => {
                for c in lit.chars() {
                    if t.get(i) != Some(&c) {
                        return Err(bad());
                    }
                    i += 1;
                }
            }
            Piece::Field('a', _) => {
                let rest: String = t[i.min(t.len())..].iter().take(2).collect();
                pm = match rest.to_ascii_uppercase().as_str() {
                    "AM" => Some(false),
                    "PM" => Some(true),
                    _ => return Err(bad()),
                };
                i += 2;
            }
            Piece::Field('M', n) if *n >= 3 => {
                let rest: String = t[i.min(t.len())..].iter().collect();
                let found = MONTHS.iter().enumerate().find_map(|(idx, name)| {
                    let cand = if *n == 3 { &name[..3] } else { name };
                    rest.to_ascii_lowercase()
                        .starts_with(&cand.to_ascii_lowercase())
                        .then_some((idx, cand.len()))
                });
                let (idx, len) = found.ok_or_else(bad)?;
                mo = idx as u32 + 1;
                i += len;
            }
            Piece::Field(c, n) => {
                // A field followed directly by another field takes exactly its width.
                let adjacent = matches!(ps.get(k + 1), Some(Piece::Field(..)));
                let max = if adjacent { *n } else { 9 };
                let start = i;
                while i < t.len() && i - start < max && t[i].is_ascii_digit() {
                    i += 1;
                }
                let digits: String = t[start..i].iter().collect();
                let v = num(&digits).ok_or_else(bad)?;
                match c {
                    'y' if *n == 2 && digits.len() <= 2 => y = 2000 + v as i64,
                    'y' => y = v as i64,
                    'M' => mo = v,
                    'd' => d = v,
                    'H' | 'k' | 'K' | 'h' => h = if *c == 'k' && v == 24 { 0 } else { v },
                    'm' => mi = v,
                    's' => s = v,
                    'S' => {
                        ms = match digits.len() {
                            1 => v * 100,
                            2 => v * 10,
                            3 => v,
                            _ => num(&digits[..3]).ok_or_else(bad)?,
                        }
                    }
                    _ => return Err(format!("format letter '{c}' cannot be parsed")),
                }
            }
        }
    }
    if i != t.len() {
        return Err(bad());
    }
    if let Some(pm) = pm {
        if !(1..=12).contains(&h) {
            return Err(bad());
        }
        h = h % 12 + if pm { 12 } else { 0 };
    }
    to_millis(y, mo, d, h, mi, s, ms).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_and_literals() {
        for days in [-800_000i64, -1, 0, 1, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        let ts = parse_timestamp("2004-09-30 13:48:23").unwrap();
        assert_eq!(ts, 1_096_552_103_000);
        assert_eq!(format_timestamp(ts + 5), "2004-09-30 13:48:23.005");
        assert_eq!(parse_timestamp("2004-02-30 00:00:00"), None);
        assert_eq!(parse_time("13:48:23.5"), Some(49_703_500));
    }

    #[test]
    fn floor_ceil_extract() {
        let ts = parse_timestamp("2004-09-30 13:48:23.250").unwrap();
        assert_eq!(
            floor_to(ts, Unit::Minute, false),
            parse_timestamp("2004-09-30 13:48:00")
        );
        assert_eq!(
            floor_to(ts, Unit::Hour, true),
            parse_timestamp("2004-09-30 14:00:00")
        );
        assert_eq!(
            floor_to(ts, Unit::Month, true),
            parse_timestamp("2004-10-01 00:00:00")
        );
        assert_eq!(extract(ts, Unit::DayOfWeek), 5); // a Thursday
        for edge in [i64::MIN, i64::MIN + 1, i64::MAX] {
            for unit in [Unit::Second, Unit::Day, Unit::Month, Unit::Year] {
                let _ = floor_to(edge, unit, true);
                let _ = floor_to(edge, unit, false);
            }
            let _ = format_pattern("yyyy-MMMM-dd EEEE hh a D", edge);
            let _ = extract(edge, Unit::DayOfYear);
        }
        assert_eq!(extract(ts, Unit::DayOfYear), 274);
    }

    #[test]
    fn java_patterns() {
        let ts = parse_pattern("yyyy-MM-dd hh:mm:ss a", "2004-09-30 01:48:23 PM").unwrap();
        assert_eq!(Some(ts), parse_timestamp("2004-09-30 13:48:23"));
        assert_eq!(
            format_pattern("dd MMM yyyy HH'h'mm.SSS", ts + 7).unwrap(),
            "30 Sep 2004 13h48.007"
        );
        let compact = parse_pattern("yyyyMMddHHmmss", "20040930134823").unwrap();
        assert_eq!(compact, ts);
        assert!(parse_pattern("yyyy-MM-dd", "2004-13-01").is_err());
        assert!(parse_pattern("yyyy-MM-dd", "2004-12-01 junk").is_err());
        assert!(format_pattern("qqq", ts).is_err());
    }
}
