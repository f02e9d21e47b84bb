//! Times as text. Every time the mount shows (in `.indra/` files and the status) is RFC 3339
//! in UTC with millisecond precision, e.g. `2026-11-21T12:00:00.123Z`: fixed width for any
//! year from 0 to 9999, so such strings sort as the times they name.

use chrono::{DateTime, SecondsFormat};
use indras_artifacts::Timestamp;

/// `t` as RFC 3339 in UTC with milliseconds (rounded down). A time beyond what a calendar date
/// can hold (some 262,000 years from now) shows as the nearest one that can.
pub fn rfc3339(t: Timestamp) -> String {
    let at = DateTime::from_timestamp(t.secs, t.nanos).unwrap_or(if t.secs < 0 {
        DateTime::<chrono::Utc>::MIN_UTC
    } else {
        DateTime::<chrono::Utc>::MAX_UTC
    });
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(Timestamp::from_millis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(Timestamp::from_millis(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(Timestamp::from_millis(1_795_260_061_250)), "2026-11-21T11:21:01.250Z");
        assert_eq!(rfc3339(Timestamp::from_millis(-1)), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(Timestamp { secs: 0, nanos: 999_999_999 }), "1970-01-01T00:00:00.999Z");
    }
}
