//! Timestamps as the rules language and the wire write them: microseconds
//! since the Unix epoch, and RFC 3339 text. The canonical text is UTC with
//! exactly six fraction digits (`2026-01-02T03:04:05.123456Z`), so it sorts in
//! time order; years 1 to 9999, as Firestore's timestamps.

use std::fmt::Write as _;

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// `0001-01-01T00:00:00.000000Z`.
pub const MIN_MICROS: i64 = -62_135_596_800_000_000;
/// `9999-12-31T23:59:59.999999Z`.
pub const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The canonical text of a time.
pub fn format(micros: i64) -> String {
    let mut out = String::with_capacity(27);
    write(&mut out, micros);
    out
}

/// Appends `format(micros)` to `out` without allocating (digits placed by
/// hand: REST and GraphQL write two per document, and `write!` costs more
/// than the rest of a document's rendering).
pub fn write(out: &mut String, micros: i64) {
    let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    let micro_of_day = micros.rem_euclid(MICROS_PER_DAY);
    let second_of_day = micro_of_day / 1_000_000;
    if !(0..=9999).contains(&year) {
        return write_with_formatter(out, micros);
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let fields = [
        (0..4, year),
        (5..7, month),
        (8..10, day),
        (11..13, second_of_day / 3600),
        (14..16, second_of_day % 3600 / 60),
        (17..19, second_of_day % 60),
        (20..26, micro_of_day % 1_000_000),
    ];
    for (range, mut value) in fields {
        for digit in text[range].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    // Digits and separators only: always UTF-8.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

/// `write` through `write!`, for the years with more or fewer than four digits.
fn write_with_formatter(out: &mut String, micros: i64) {
    let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    let micro_of_day = micros.rem_euclid(MICROS_PER_DAY);
    let second_of_day = micro_of_day / 1_000_000;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
        micro_of_day % 1_000_000
    );
}

/// An RFC 3339 date-time (`T` or `t`, fraction of up to 9 digits, `Z` or an
/// offset `±HH:MM`) as microseconds (finer digits are cut off), when it is
/// valid and within years 1 to 9999.
pub fn parse(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = bytes.get(range)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|(at, c)| bytes.get(*at) != Some(c)) || !matches!(bytes.get(10), Some(b'T' | b't')) {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1 || day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut fraction = 0;
    if bytes.get(at) == Some(&b'.') {
        let start = at + 1;
        let end = start + bytes[start..].iter().take_while(|b| b.is_ascii_digit()).count();
        if end == start || end - start > 9 {
            return None;
        }
        let micros_digits = &text[start..end.min(start + 6)];
        fraction = micros_digits.parse::<i64>().ok()? * 10_i64.pow(6 - micros_digits.len() as u32);
        at = end;
    }
    let offset_minutes = match bytes.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (digits(at + 1..at + 3)?, digits(at + 4..at + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    let micros = seconds * 1_000_000 + fraction;
    (MIN_MICROS..=MAX_MICROS).contains(&micros).then_some(micros)
}

/// The wire form of a timestamp value: `{"$timestamp": "<canonical RFC 3339>"}`.
pub fn to_json(micros: i64) -> serde_json::Value {
    let mut map = serde_json::Map::with_capacity(1);
    map.insert(TIMESTAMP_KEY.to_owned(), serde_json::Value::String(format(micros)));
    serde_json::Value::Object(map)
}

/// The one key of a timestamp value on the wire.
pub const TIMESTAMP_KEY: &str = "$timestamp";

/// The time of a wire timestamp value (`{"$timestamp": "…"}`), if `json` is one.
pub fn from_json(json: &serde_json::Value) -> Option<i64> {
    let object = json.as_object().filter(|o| o.len() == 1)?;
    parse(object.get(TIMESTAMP_KEY)?.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_placed_digits_match_the_formatter() {
        let mut micros = MIN_MICROS;
        while micros < MAX_MICROS {
            let (mut placed, mut formatted) = (String::new(), String::new());
            write(&mut placed, micros);
            write_with_formatter(&mut formatted, micros);
            assert_eq!(placed, formatted, "{micros}");
            micros += 7_777_777_777_777; // about 90 days and a few odd hours
        }
    }

    #[test]
    fn formats_and_parses_rfc3339() {
        assert_eq!(format(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format(1_795_000_000_123_456), "2026-11-18T11:06:40.123456Z");
        assert_eq!(format(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(format(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(format(MIN_MICROS), "0001-01-01T00:00:00.000000Z");
        assert_eq!(format(MAX_MICROS), "9999-12-31T23:59:59.999999Z");
        for micros in [0, -1, 1_795_000_000_123_456, MIN_MICROS, MAX_MICROS] {
            assert_eq!(parse(&format(micros)), Some(micros));
        }
        assert_eq!(parse("2026-01-02T03:04:05Z"), Some(1_767_323_045_000_000));
        assert_eq!(parse("2026-01-02T04:04:05.5+01:00"), Some(1_767_323_045_500_000));
        assert_eq!(parse("2026-01-02t03:04:05.123456789z"), Some(1_767_323_045_123_456));
        for bad in [
            "",
            "2026-01-02",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-02T24:00:00Z",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05.Z",
            "2026-01-02T03:04:05.1234567890Z",
            "0000-01-01T00:00:00Z",
            "2026-01-02T03:04:05+1:00",
            "2026-01-02 03:04:05Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(from_json(&to_json(42)), Some(42));
        assert_eq!(from_json(&serde_json::json!({"$timestamp": "x"})), None);
        assert_eq!(from_json(&serde_json::json!({"$timestamp": "2026-01-02T03:04:05Z", "x": 1})), None);
    }
}
