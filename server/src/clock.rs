//! Wall-clock time as the server uses it: microseconds since the Unix epoch,
//! and the one way a time is written on the wire (RFC 3339, UTC, always six
//! fraction digits, so the text sorts in time order; the conversions live in
//! `nimbus_rules_lang::time`, shared with the rules' timestamp type).
//!
//! Every expiry, retention window, backoff and schedule reads this clock, so
//! a test can move it forward instead of waiting: with the `test_clock`
//! setting the admin API may `advance` it (forward only, process-wide; see
//! decision 0017). Without that setting nothing calls `advance` and the
//! clock is the system's.

use std::sync::atomic::{AtomicI64, Ordering};

/// How far the clock has been moved ahead of the system's, in microseconds.
static AHEAD_MICROS: AtomicI64 = AtomicI64::new(0);

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    system_micros().saturating_add(AHEAD_MICROS.load(Ordering::Relaxed))
}

/// Whole seconds since the Unix epoch (a token's `iat` and `exp`).
pub fn now_secs() -> i64 {
    now_micros().div_euclid(1_000_000)
}

fn system_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Moves the clock forward by `by` and returns the new time. Only the
/// `test_clock` setting's admin endpoint calls it.
pub fn advance(by: std::time::Duration) -> i64 {
    let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
    AHEAD_MICROS.fetch_add(by, Ordering::Relaxed);
    now_micros()
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
    #[test]
    fn seconds_follow_microseconds() {
        let secs = super::now_secs();
        let micros = super::now_micros();
        assert!((micros / 1_000_000 - secs).abs() <= 1);
    }
}
