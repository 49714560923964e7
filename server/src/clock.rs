//! Wall-clock time as the server uses it: microseconds since the Unix epoch,
//! and the one way a time is written on the wire (RFC 3339, UTC, always six
//! fraction digits, so the text sorts in time order; the conversions live in
//! `nimbus_rules_lang::time`, shared with the rules' timestamp type).

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// `2026-11-26T04:02:47.123456Z`.
pub fn format_time(micros: i64) -> String {
    nimbus_rules_lang::time::format(micros)
}

/// Appends `format_time(micros)` to `out` without allocating.
pub fn write_time(out: &mut String, micros: i64) {
    nimbus_rules_lang::time::write(out, micros);
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
