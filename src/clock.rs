//! Wall-clock times as berth writes and reads them: RFC 3339 in UTC with nanoseconds
//! (`2024-05-01T10:00:00.123456789Z`, the log and state format), Docker's `--since` forms,
//! and "5 minutes ago". No allocation on the formatting path: the monitor stamps every log
//! line with it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of a timestamp written by [`format_rfc3339_nanos`].
pub const STAMP_LEN: usize = 30;

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) -> days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Writes `nanos` since the epoch as `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ` into `out`.
pub fn format_rfc3339_nanos(nanos: i128, out: &mut [u8; STAMP_LEN]) {
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let frac = nanos.rem_euclid(1_000_000_000) as u32;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let (h, mi, s) = (
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    );
    let mut put = |at: usize, value: u32, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y.clamp(0, 9999) as u32, 4);
    put(5, mo, 2);
    put(8, d, 2);
    put(11, h, 2);
    put(14, mi, 2);
    put(17, s, 2);
    put(20, frac, 9);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    out[19] = b'.';
    out[29] = b'Z';
}

/// `nanos` since the epoch as an RFC 3339 string with nanoseconds.
pub fn rfc3339(nanos: i128) -> String {
    let mut buf = [0u8; STAMP_LEN];
    format_rfc3339_nanos(nanos, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Parses an RFC 3339 time (`2024-05-01T10:00:00Z`, with optional fraction and a `Z` or
/// `+HH:MM` offset; a bare date means midnight UTC) into nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let y = num(0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (mo, d) = (num(5, 2)? as u32, num(8, 2)? as u32);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo, d) as i128;
    if b.len() == 10 {
        return Some(days * 86_400 * 1_000_000_000);
    }
    if !matches!(b.get(10), Some(b'T') | Some(b't') | Some(b' ')) {
        return None;
    }
    let (h, mi) = (num(11, 2)?, num(14, 2)?);
    let mut sec = 0;
    let mut i = 16;
    if b.get(16) == Some(&b':') {
        sec = num(17, 2)?;
        i = 19;
    }
    let mut frac: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let mut digits = 0;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if digits < 9 {
                frac = frac * 10 + (c - b'0') as i128;
                digits += 1;
            }
            i += 1;
        }
        while digits < 9 {
            frac *= 10;
            digits += 1;
        }
    }
    let offset: i64 = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let o = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        None => 0,
        _ => return None,
    };
    let secs = days * 86_400 + (h * 3600 + mi * 60 + sec - offset) as i128;
    Some(secs * 1_000_000_000 + frac)
}

/// Parses a Go-style duration (`90s`, `10m`, `1h30m`, `1.5h`, `250ms`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Docker's `--since`/`--until`: an RFC 3339 time, a Unix time (`1700000000[.5]`) or a
/// duration back from `now` (`10m`). Nanoseconds since the epoch.
pub fn parse_since(s: &str, now: i128) -> Option<i128> {
    if let Some(t) = parse_rfc3339(s) {
        return Some(t);
    }
    if let Some(d) = parse_duration(s) {
        return Some(now - d.as_nanos() as i128);
    }
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secs: i128 = whole.parse().ok()?;
    let mut nanos: i128 = 0;
    if !frac.is_empty() {
        if !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    Some(secs * 1_000_000_000 + nanos)
}

/// "5 seconds", "About a minute", "3 hours": Docker's human durations for `ps`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        172_800..=1_209_599 => format!("{} days", s / 86_400),
        1_209_600..=5_183_999 => format!("{} weeks", s / 604_800),
        5_184_000..=63_071_999 => format!("{} months", s / 2_592_000),
        _ => format!("{} years", s / 31_536_000),
    }
}

/// How long ago `nanos` was, as [`human_duration`].
pub fn ago(nanos: i128) -> String {
    let d = (now_nanos() - nanos).max(0) as u128;
    human_duration(Duration::from_nanos(d.min(u64::MAX as u128) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let t: i128 = 1_714_557_600_123_456_789; // 2024-05-01T10:00:00.123456789Z
        assert_eq!(rfc3339(t), "2024-05-01T10:00:00.123456789Z");
        assert_eq!(parse_rfc3339("2024-05-01T10:00:00.123456789Z"), Some(t));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn parses_offsets_dates_and_short_forms() {
        let base = parse_rfc3339("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00+02:00"), Some(base));
        assert_eq!(parse_rfc3339("2024-05-01T10:00Z"), Some(base));
        assert_eq!(
            parse_rfc3339("2024-05-01"),
            Some(base - 10 * 3600 * 1_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T10:00:00.5Z"),
            Some(base + 500_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn since_accepts_docker_forms() {
        let now = 2_000_000_000 * 1_000_000_000i128;
        assert_eq!(parse_since("10m", now), Some(now - 600 * 1_000_000_000));
        assert_eq!(
            parse_since("1700000000", now),
            Some(1_700_000_000 * 1_000_000_000)
        );
        assert_eq!(
            parse_since("1700000000.25", now),
            Some(1_700_000_000 * 1_000_000_000 + 250_000_000)
        );
        assert_eq!(parse_since("soon", now), None);
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    }

    #[test]
    fn human_durations_read_like_docker() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(7300)), "2 hours");
    }
}
