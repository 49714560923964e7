//! Wall-clock time as the server uses it: microseconds since the Unix epoch,
//! and the one way a time is written on the wire (RFC 3339, UTC, always six
//! fraction digits, so the text sorts in time order).

use std::fmt::Write as _;

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// `2026-11-26T04:02:47.123456Z`.
pub fn format_time(micros: i64) -> String {
    let mut out = String::with_capacity(27);
    write_time(&mut out, micros);
    out
}

/// Appends `format_time(micros)` to `out` without allocating.
pub fn write_time(out: &mut String, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let second_of_day = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    );
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
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
    fn formats_like_rfc3339_with_microseconds() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_time(1_795_000_000_123_456), "2026-11-18T11:06:40.123456Z");
        assert_eq!(format_time(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999999Z");
    }
}
