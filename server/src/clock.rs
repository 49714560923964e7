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
