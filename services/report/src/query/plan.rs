//! Which table answers which part of a time range: the per-hour rollup, the per-minute rollup,
//! the per-connection detail (`connection_minutes`), or `flows` itself.
//!
//! # The rule
//!
//! A question whose columns the rollups hold (class, direction, zones, namespaces, bytes, cost:
//! not nodes, pods, addresses, the initiator or the instance type, so no workload names, which
//! fall back to the node for node processes) reads, for each part of the range, the coarsest
//! table that is *complete* there:
//!
//! - A rollup is complete for a bucket when no change mark of that bucket is as new as the
//!   rollup's watermark (the start of its last refresh that wrote rows): every insert into
//!   `flows` marks its buckets, and a mark at or after the watermark is one the last refresh
//!   did not see. The hour rollup is recomputed from the minute rollup, so an hour is complete
//!   only if its minutes are too. The first pending bucket cuts the rollup's part of the range;
//!   the rest, up to the range's end, is read from `flows FINAL`. Late data (a replay of last
//!   week) marks old buckets, so it moves those to `flows` until the views recompute them.
//! - A rollup answers only the buckets it still holds: before its earliest bucket (TTL, or data
//!   older than the rollups), `flows` answers.
//! - The hour rollup answers whole hours, and only for questions that group time by whole hours
//!   (per day, or not at all); the minute rollup whole minutes (every range is whole minutes).
//!
//! - A question the rollups cannot answer (pods, addresses, nodes) reads `connection_minutes`
//!   where it is complete, by the same rule, and `flows` elsewhere: `flows` keeps records for
//!   `--record-ttl-days` only, the detail for `--ttl-days`. A question about a record's exact
//!   interval (a node's throughput) reads `flows` alone.
//!
//! Every table is read with `FINAL`, so the sums are the same from any of them:
//! the plan changes the cost of a question, never its answer (tested). A refresh that was
//! reading `flows` while an insert was being committed can miss that insert although its mark
//! is older than the watermark; the next refresh, within a minute, recomputes the bucket.

use crate::options::TimeRange;

/// A table a part of the range is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Flows,
    /// The per-connection detail: every column of `flows` but a record's exact interval.
    ConnectionMinutes,
    MinuteRollup,
    HourRollup,
}

impl Source {
    pub fn table(self) -> &'static str {
        match self {
            Source::Flows => "flows",
            Source::ConnectionMinutes => "connection_minutes",
            Source::MinuteRollup => "flows_per_minute",
            Source::HourRollup => "flows_per_hour",
        }
    }

    pub fn is_rollup(self) -> bool {
        self != Source::Flows
    }
}

/// `[from, to)` read from `source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub source: Source,
    pub from: u64,
    pub to: u64,
}

/// What one rollup holds for a range, as ClickHouse said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RollupState {
    /// Its earliest bucket (None: it holds nothing).
    pub earliest: Option<u64>,
    /// The earliest bucket of the range with a change the rollup has not recomputed yet.
    pub pending_from: Option<u64>,
}

/// What both rollups hold for a range; `None` where a rollup is missing, has never been
/// refreshed, or the report was asked not to use rollups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub connection: Option<RollupState>,
    pub minute: Option<RollupState>,
    pub hour: Option<RollupState>,
}

/// Splits `range` into contiguous pieces, each read from the coarsest complete table (see the
/// module documentation). `resolution` is the time bucket the question groups by, in seconds
/// (None: it does not group by time).
pub fn plan(range: TimeRange, coverage: &Coverage, resolution: Option<u64>) -> Vec<Piece> {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 3600;
    let (a, b) = (range.from, range.to);
    let hour_fits = resolution.is_none_or(|r| r.is_multiple_of(HOUR));
    // The part each rollup answers: [lo, hi), empty when lo >= hi.
    let by_minute = |state: Option<RollupState>| {
        state.and_then(|m| {
            let lo = a.max(m.earliest?).div_ceil(MINUTE) * MINUTE;
            let hi = m.pending_from.map_or(b, |p| p.min(b)) / MINUTE * MINUTE;
            Some((lo, hi))
        })
    };
    let minute = by_minute(coverage.minute);
    let connection = by_minute(coverage.connection);
    let hour = coverage.hour.filter(|_| hour_fits).and_then(|h| {
        let lo = a.max(h.earliest?).div_ceil(HOUR) * HOUR;
        // An hour is recomputed from its minutes: a pending minute makes its hour pending.
        let minute_pending = coverage.minute.and_then(|m| m.pending_from);
        let pending = [h.pending_from, minute_pending, Some(b)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(b);
        let hi = pending.min(b) / HOUR * HOUR;
        Some((lo, hi))
    });
    let inside = |part: Option<(u64, u64)>, x: u64, y: u64| {
        part.is_some_and(|(lo, hi)| lo <= x && y <= hi && lo < hi)
    };
    let mut cuts = vec![a, b];
    for (lo, hi) in [minute, hour, connection].into_iter().flatten() {
        cuts.extend([lo, hi].into_iter().filter(|t| a < *t && *t < b));
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces: Vec<Piece> = Vec::new();
    for pair in cuts.windows(2) {
        let (x, y) = (pair[0], pair[1]);
        let source = if inside(hour, x, y) {
            Source::HourRollup
        } else if inside(minute, x, y) {
            Source::MinuteRollup
        } else if inside(connection, x, y) {
            Source::ConnectionMinutes
        } else {
            Source::Flows
        };
        match pieces.last_mut() {
            Some(last) if last.source == source && last.to == x => last.to = y,
            _ => pieces.push(Piece {
                source,
                from: x,
                to: y,
            }),
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;
    const M: u64 = 60;

    fn piece(source: Source, from: u64, to: u64) -> Piece {
        Piece { source, from, to }
    }

    fn complete(earliest: u64) -> Option<RollupState> {
        Some(RollupState {
            earliest: Some(earliest),
            pending_from: None,
        })
    }

    #[test]
    fn a_complete_aligned_range_reads_the_hour_rollup() {
        let range = TimeRange {
            from: 10 * H,
            to: 12 * H,
        };
        let coverage = Coverage {
            connection: None,
            minute: complete(0),
            hour: complete(0),
        };
        assert_eq!(
            plan(range, &coverage, None),
            vec![piece(Source::HourRollup, 10 * H, 12 * H)]
        );
        // Grouped by 5 minutes, the hour rollup cannot answer.
        assert_eq!(
            plan(range, &coverage, Some(300)),
            vec![piece(Source::MinuteRollup, 10 * H, 12 * H)]
        );
        assert_eq!(
            plan(range, &Coverage::default(), None),
            vec![piece(Source::Flows, 10 * H, 12 * H)]
        );
    }

    #[test]
    fn unaligned_edges_read_minutes_and_pending_buckets_read_flows() {
        let range = TimeRange {
            from: 10 * H + 7 * M,
            to: 13 * H + 20 * M,
        };
        let coverage = Coverage {
            connection: None,
            minute: Some(RollupState {
                earliest: Some(0),
                pending_from: Some(13 * H + 10 * M),
            }),
            hour: complete(0),
        };
        assert_eq!(
            plan(range, &coverage, None),
            vec![
                piece(Source::MinuteRollup, 10 * H + 7 * M, 11 * H),
                piece(Source::HourRollup, 11 * H, 13 * H),
                piece(Source::MinuteRollup, 13 * H, 13 * H + 10 * M),
                piece(Source::Flows, 13 * H + 10 * M, 13 * H + 20 * M),
            ]
        );
    }

    #[test]
    fn a_pending_minute_makes_its_hour_pending() {
        let range = TimeRange {
            from: 10 * H,
            to: 14 * H,
        };
        let coverage = Coverage {
            connection: None,
            minute: Some(RollupState {
                earliest: Some(0),
                pending_from: Some(12 * H + 30 * M),
            }),
            hour: complete(0),
        };
        assert_eq!(
            plan(range, &coverage, None),
            vec![
                piece(Source::HourRollup, 10 * H, 12 * H),
                piece(Source::MinuteRollup, 12 * H, 12 * H + 30 * M),
                piece(Source::Flows, 12 * H + 30 * M, 14 * H),
            ]
        );
    }

    #[test]
    fn buckets_before_a_rollups_earliest_read_flows() {
        let range = TimeRange {
            from: 10 * H,
            to: 14 * H,
        };
        let coverage = Coverage {
            connection: None,
            minute: complete(11 * H + 30 * M),
            hour: None,
        };
        assert_eq!(
            plan(range, &coverage, Some(60)),
            vec![
                piece(Source::Flows, 10 * H, 11 * H + 30 * M),
                piece(Source::MinuteRollup, 11 * H + 30 * M, 14 * H),
            ]
        );
        let empty = Coverage {
            connection: None,
            minute: Some(RollupState::default()),
            hour: Some(RollupState::default()),
        };
        assert_eq!(
            plan(range, &empty, None),
            vec![piece(Source::Flows, 10 * H, 14 * H)]
        );
    }

    #[test]
    fn the_connection_detail_answers_where_no_rollup_does_and_flows_where_it_is_pending() {
        let range = TimeRange {
            from: 10 * H,
            to: 14 * H,
        };
        // The rollups only from 12:00, the detail from 11:00 up to a pending minute at 13:30.
        let coverage = Coverage {
            connection: Some(RollupState {
                earliest: Some(11 * H),
                pending_from: Some(13 * H + 30 * M),
            }),
            minute: complete(12 * H),
            hour: None,
        };
        assert_eq!(
            plan(range, &coverage, None),
            vec![
                piece(Source::Flows, 10 * H, 11 * H),
                piece(Source::ConnectionMinutes, 11 * H, 12 * H),
                piece(Source::MinuteRollup, 12 * H, 14 * H),
            ]
        );
        // A question the rollups cannot answer sees the detail only.
        let detail = Coverage {
            connection: coverage.connection,
            ..Coverage::default()
        };
        assert_eq!(
            plan(range, &detail, None),
            vec![
                piece(Source::Flows, 10 * H, 11 * H),
                piece(Source::ConnectionMinutes, 11 * H, 13 * H + 30 * M),
                piece(Source::Flows, 13 * H + 30 * M, 14 * H),
            ]
        );
    }
}
