//! What a report covers: the time range ([`TimeRange`], whole minutes, UTC), the filters, how
//! many rows a top list keeps, and the instance bandwidth table ([`Options`]). Also the time
//! syntax of `--from`/`--to`/`--since` ([`parse_time`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bandwidth::BandwidthTable;
use crate::model::Filters;

/// The classes the attributor writes; `--class` must be one of them.
pub const CLASSES: [&str; 10] = [
    "INTRA_NODE",
    "INTRA_ZONE",
    "INTER_ZONE",
    "INTRA_REGION",
    "INTER_REGION",
    "INTER_CLOUD",
    "VPC",
    "INTERNET",
    "UNKNOWN",
    "MULTICAST",
];

/// `[from, to)` in whole minutes, as Unix seconds. Whole minutes, because the per-minute rollup
/// answers exactly those and a record belongs to the minute its interval starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from: u64,
    pub to: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("the range from {from} to {to} is empty: --to must be at least a minute after --from")]
    Empty { from: String, to: String },
    #[error(
        "`{0}` is not a time: use `2026-01-31 14:00:00` (UTC), `2026-01-31`, `now`, or an age such as `2h` or `3d`"
    )]
    BadTime(String),
}

impl TimeRange {
    /// `[from, to)` in whole minutes: `from` rounded down, `to` up, so that a range ending now
    /// holds the records of the current minute (users look right after traffic they made).
    pub fn new(from: SystemTime, to: SystemTime) -> Result<TimeRange, RangeError> {
        let range = TimeRange {
            from: unix(from) / 60 * 60,
            to: unix(to).div_ceil(60) * 60,
        };
        if range.to <= range.from {
            return Err(RangeError::Empty {
                from: format_time(unix(from)),
                to: format_time(unix(to)),
            });
        }
        Ok(range)
    }

    /// The `length` up to the end of the current minute (`now` rounded up).
    pub fn last(length: Duration, now: SystemTime) -> Result<TimeRange, RangeError> {
        let to = UNIX_EPOCH + Duration::from_secs(unix(now).div_ceil(60) * 60);
        TimeRange::new(to.checked_sub(length).unwrap_or(UNIX_EPOCH), to)
    }

    pub fn seconds(&self) -> u64 {
        self.to - self.from
    }

    /// The period of the same length just before: `[previous_from, from)`.
    pub fn previous(&self) -> TimeRange {
        TimeRange {
            from: self.from.saturating_sub(self.seconds()),
            to: self.from,
        }
    }

    /// The size of the time buckets of the `*_over_time` tables: the smallest of 1, 5, 10, 15,
    /// 30 minutes, 1, 3, 6, 12 hours and 1 day that gives at most 120 buckets.
    pub fn bucket(&self) -> u64 {
        const SIZES: [u64; 10] = [
            60, 300, 600, 900, 1800, 3600, 10_800, 21_600, 43_200, 86_400,
        ];
        SIZES
            .into_iter()
            .find(|s| self.seconds().div_ceil(*s) <= 120)
            .unwrap_or(86_400)
    }
}

/// Unix seconds of `t` (0 before 1970).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// `YYYY-MM-DD hh:mm:ss`, UTC: the form ClickHouse compares with `DateTime('UTC')` columns.
pub fn format_time(unix_seconds: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix_seconds);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .trim_end_matches('Z')
        .replace('T', " ")
}

/// A time as users write it: `now`; an age before `now` (`90m`, `2h`, `3d`, `1h 30m`, also with
/// a trailing ` ago`); or an absolute UTC time (`2026-01-31 14:00:00`, `2026-01-31T14:00:00Z`,
/// `2026-01-31 14:00`, `2026-01-31`).
pub fn parse_time(text: &str, now: SystemTime) -> Result<SystemTime, RangeError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    let age = t.strip_suffix(" ago").unwrap_or(t);
    if let Ok(d) = humantime::parse_duration(age) {
        return Ok(now.checked_sub(d).unwrap_or(UNIX_EPOCH));
    }
    let absolute = match t.len() {
        10 => format!("{t} 00:00:00"),
        16 => format!("{t}:00"),
        _ => t.to_string(),
    };
    humantime::parse_rfc3339_weak(&absolute).map_err(|_| RangeError::BadTime(text.to_string()))
}

/// Everything a report depends on besides the ClickHouse connection.
#[derive(Clone, Debug)]
pub struct Options {
    pub range: TimeRange,
    /// What to narrow to. `namespace` and `workload` select the endpoint a row is about (a
    /// workload's own side of its traffic); `workload` is `name` or `namespace/name`.
    pub filters: Filters,
    /// Rows a top list keeps before summing the rest into `other`.
    pub top: usize,
    pub bandwidth: BandwidthTable,
    /// Read the rollups where they answer a question (the default); false reads `flows` only.
    pub rollups: bool,
}

impl Options {
    /// Everything over `range`: no filters, top 10, the built-in bandwidth table, rollups on.
    pub fn new(range: TimeRange) -> Options {
        Options {
            range,
            filters: Filters::default(),
            top: 10,
            bandwidth: BandwidthTable::builtin(),
            rollups: true,
        }
    }
}

/// Checks a `--class` value against [`CLASSES`] (case-insensitive) and returns it as written
/// in the data.
pub fn parse_class(value: &str) -> Result<String, String> {
    let upper = value.trim().to_ascii_uppercase();
    if CLASSES.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!(
            "`{value}` is not a class; one of {}",
            CLASSES.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn times_parse_as_ages_and_absolute_utc() {
        let now = at("2026-12-03T12:34:56Z");
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("2h", now), Ok(at("2026-12-03T10:34:56Z")));
        assert_eq!(parse_time("90m ago", now), Ok(at("2026-12-03T11:04:56Z")));
        assert_eq!(
            parse_time("2026-12-01 08:00:00", now),
            Ok(at("2026-12-01T08:00:00Z"))
        );
        assert_eq!(
            parse_time("2026-12-01T08:00:00Z", now),
            Ok(at("2026-12-01T08:00:00Z"))
        );
        assert_eq!(
            parse_time("2026-12-01 08:30", now),
            Ok(at("2026-12-01T08:30:00Z"))
        );
        assert_eq!(
            parse_time("2026-12-01", now),
            Ok(at("2026-12-01T00:00:00Z"))
        );
        assert_eq!(
            parse_time("yesterday", now),
            Err(RangeError::BadTime("yesterday".into()))
        );
    }

    #[test]
    fn ranges_are_whole_minutes_with_a_previous_period_and_a_bucket() {
        let now = at("2026-12-03T12:34:56Z");
        let range = TimeRange::last(Duration::from_secs(3600), now).unwrap();
        assert_eq!(format_time(range.from), "2026-12-03 11:35:00");
        assert_eq!(format_time(range.to), "2026-12-03 12:35:00");
        assert_eq!(format_time(range.previous().from), "2026-12-03 10:35:00");
        assert_eq!(range.bucket(), 60);
        let day = TimeRange::last(Duration::from_secs(86_400), now).unwrap();
        assert_eq!(day.bucket(), 900);
        let week = TimeRange::last(Duration::from_secs(7 * 86_400), now).unwrap();
        assert_eq!(week.bucket(), 10_800);
        let minute = TimeRange::new(now, now).unwrap();
        assert_eq!(minute.seconds(), 60, "the current minute");
        let err = TimeRange::new(now, now - Duration::from_secs(120)).unwrap_err();
        assert!(matches!(err, RangeError::Empty { .. }), "{err}");
    }

    #[test]
    fn classes_are_checked() {
        assert_eq!(parse_class("inter_zone"), Ok("INTER_ZONE".into()));
        assert!(
            parse_class("cross-zone")
                .unwrap_err()
                .contains("INTER_ZONE")
        );
    }
}
