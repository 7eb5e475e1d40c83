//! The one clock and its two text formats, both RFC 3339 in UTC with a `Z`: whole seconds
//! (`now_secs`, `secs`) for the activity log, phase and sync times, and milliseconds
//! (`now_millis`, `format_millis`, `parse`) for error events, alert windows and resumes,
//! whose times are compared. Nothing else formats the current time.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the epoch.
pub type Millis = i64;

pub fn millis(at: DateTime<Utc>) -> Millis {
    at.timestamp_millis()
}

/// Now, in whole seconds: `2026-11-22T10:00:00Z`.
pub fn now_secs() -> String {
    secs(Utc::now())
}

/// `at` in whole seconds.
pub fn secs(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Now, in milliseconds: `2026-11-22T10:00:00.123Z`.
pub fn now_millis() -> String {
    format_millis(millis(Utc::now()))
}

/// `at` in milliseconds.
pub fn format_millis(at: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(at)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An RFC 3339 time (any offset, any precision) in milliseconds; `None` when it is not one.
pub fn parse(text: &str) -> Option<Millis> {
    parse_utc(text).map(millis)
}

/// An RFC 3339 time (any offset, any precision) in UTC.
pub fn parse_utc(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_are_utc_with_a_z_and_round_trip() {
        let at = parse("2026-11-22T11:00:00.123+01:00").unwrap();
        assert_eq!(format_millis(at), "2026-11-22T10:00:00.123Z");
        assert_eq!(
            secs(DateTime::from_timestamp_millis(at).unwrap()),
            "2026-11-22T10:00:00Z"
        );
        assert_eq!(parse(&format_millis(at)), Some(at));
        assert_eq!(parse("yesterday"), None);
    }
}
