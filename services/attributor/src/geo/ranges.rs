//! The data's rows made disjoint. The packages' files are sorted by first address but not
//! disjoint: a country file holds e.g. `2.58.196.0-2.58.197.255 DE` and inside it
//! `2.58.197.15 BE` (a geofeed entry over a registry's block), and a few rows overlap without
//! nesting. Where rows overlap the narrowest wins, as the longest prefix does in routing; of
//! two equally wide rows, the later one. Neighbours with the same label are merged.
//!
//! A family's country and network ranges are then [`combine`]d into one set, labelled with
//! (country, network) pairs, so that a lookup searches once; [`split`] takes them apart again.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// An inclusive address range (IPv4 addresses as `u128` too) and its label index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Range {
    pub first: u128,
    pub last: u128,
    pub label: u32,
}

/// `rows` in file order (any order of addresses, any overlaps) as disjoint ranges sorted by
/// first address, no two adjacent ones with the same label.
pub(super) fn flatten(rows: &[Range]) -> Vec<Range> {
    // Every range starts at a boundary and ends before one (or at the end of the space).
    let mut boundaries: Vec<u128> = rows
        .iter()
        .flat_map(|r| [Some(r.first), r.last.checked_add(1)])
        .flatten()
        .collect();
    boundaries.sort_unstable();
    boundaries.dedup();
    let mut by_first: Vec<usize> = (0..rows.len()).collect();
    by_first.sort_by_key(|&i| rows[i].first);
    let mut by_first = by_first.into_iter().peekable();
    // The rows covering the current boundary, narrowest (then latest) on top; rows that have
    // ended are dropped when they surface.
    let mut open: BinaryHeap<(Reverse<u128>, usize)> = BinaryHeap::new();
    let mut flat: Vec<Range> = Vec::new();
    for (k, &start) in boundaries.iter().enumerate() {
        while let Some(i) = by_first.next_if(|&i| rows[i].first <= start) {
            open.push((Reverse(rows[i].last - rows[i].first), i));
        }
        while open.peek().is_some_and(|&(_, i)| rows[i].last < start) {
            open.pop();
        }
        let Some(&(_, winner)) = open.peek() else {
            continue;
        };
        let row = rows[winner];
        // The segment ends before the next boundary; after the last one the only rows still
        // open run to the end of the space.
        let last = boundaries.get(k + 1).map_or(row.last, |next| next - 1);
        push_merged(
            &mut flat,
            Range {
                first: start,
                last,
                label: row.label,
            },
        );
    }
    flat
}

/// Appends `range`, extending the last range instead if it ends just before and has the
/// same label.
fn push_merged(ranges: &mut Vec<Range>, range: Range) {
    match ranges.last_mut() {
        Some(last)
            if last.label == range.label && last.last.checked_add(1) == Some(range.first) =>
        {
            last.last = range.last;
        }
        _ => ranges.push(range),
    }
}

/// One family's `countries` and `networks` (each disjoint, by first address) as one set of
/// disjoint ranges wherever either says something, labelled `pair(country, network)`.
pub(super) fn combine(
    countries: &[Range],
    networks: &[Range],
    mut pair: impl FnMut(Option<u32>, Option<u32>) -> u32,
) -> Vec<Range> {
    let mut combined = Vec::with_capacity(countries.len() + networks.len());
    let (mut countries, mut networks) = (countries.iter().peekable(), networks.iter().peekable());
    let mut at = 0u128;
    loop {
        while countries.next_if(|r| r.last < at).is_some() {}
        while networks.next_if(|r| r.last < at).is_some() {}
        let (country, network) = (countries.peek().map(|r| **r), networks.peek().map(|r| **r));
        if country.is_none() && network.is_none() {
            return combined;
        }
        // Where `at` is inside a range, until it ends; else until the next one starts.
        let inside = |r: Option<Range>| r.filter(|r| r.first <= at);
        let until = |r: Option<Range>| match r {
            Some(r) if r.first <= at => Some(r.last),
            Some(r) => Some(r.first - 1),
            None => None,
        };
        let last = match (until(country), until(network)) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).expect("one of the two is not exhausted"),
        };
        let (country, network) = (inside(country), inside(network));
        if country.is_some() || network.is_some() {
            push_merged(
                &mut combined,
                Range {
                    first: at,
                    last,
                    label: pair(country.map(|r| r.label), network.map(|r| r.label)),
                },
            );
        }
        match last.checked_add(1) {
            Some(next) => at = next,
            None => return combined,
        }
    }
}

/// One part of `combined` again: where `component(label)` is `Some`, that label.
pub(super) fn split(combined: &[Range], component: impl Fn(u32) -> Option<u32>) -> Vec<Range> {
    let mut ranges = Vec::new();
    for range in combined {
        if let Some(label) = component(range.label) {
            push_merged(&mut ranges, Range { label, ..*range });
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u128, last: u128, label: u32) -> Range {
        Range { first, last, label }
    }

    #[test]
    fn disjoint_rows_are_kept_and_equal_neighbours_merged() {
        let rows = [
            range(10, 19, 1),
            range(20, 29, 1),
            range(31, 40, 1),
            range(41, 50, 2),
        ];
        assert_eq!(
            flatten(&rows),
            [range(10, 29, 1), range(31, 40, 1), range(41, 50, 2)]
        );
    }

    #[test]
    fn a_nested_row_wins_inside_its_parent() {
        // The country file's 2.58.196.0/23 DE holding 2.58.197.15 BE.
        let rows = [range(100, 199, 1), range(150, 150, 2), range(151, 199, 1)];
        assert_eq!(
            flatten(&rows),
            [range(100, 149, 1), range(150, 150, 2), range(151, 199, 1)]
        );
    }

    #[test]
    fn where_rows_overlap_the_narrowest_wins_and_of_equals_the_later() {
        // 214.95.0.0-215.0.255.255 (AS749) and 215.0.0.0-215.1.3.255 (AS721), scaled down.
        let rows = [range(0, 99, 1), range(90, 119, 2)];
        assert_eq!(flatten(&rows), [range(0, 89, 1), range(90, 119, 2)]);
        let rows = [range(0, 9, 1), range(0, 9, 2), range(5, 14, 3)];
        assert_eq!(flatten(&rows), [range(0, 4, 2), range(5, 14, 3)]);
        // Out of order, too.
        let rows = [range(50, 59, 4), range(0, 9, 1)];
        assert_eq!(flatten(&rows), [range(0, 9, 1), range(50, 59, 4)]);
    }

    #[test]
    fn the_ends_of_the_address_space() {
        let rows = [range(0, u128::MAX, 1), range(u128::MAX, u128::MAX, 2)];
        assert_eq!(
            flatten(&rows),
            [range(0, u128::MAX - 1, 1), range(u128::MAX, u128::MAX, 2)]
        );
        assert_eq!(flatten(&[]), []);
    }

    #[test]
    fn two_parts_combine_into_pairs_and_split_back() {
        // Countries 0-99 A(0), 200-299 B(1); networks 50-149 X(0), 150-249 X(0), 300-309 Y(1).
        let countries = [range(0, 99, 0), range(200, 299, 1)];
        let networks = [range(50, 149, 0), range(150, 249, 0), range(300, 309, 1)];
        let mut pairs = Vec::new();
        let combined = combine(&countries, &networks, |c, n| {
            let key = (c, n);
            pairs.iter().position(|&p| p == key).unwrap_or_else(|| {
                pairs.push(key);
                pairs.len() - 1
            }) as u32
        });
        let labelled: Vec<_> = combined
            .iter()
            .map(|r| (r.first, r.last, pairs[r.label as usize]))
            .collect();
        assert_eq!(
            labelled,
            [
                (0, 49, (Some(0), None)),
                (50, 99, (Some(0), Some(0))),
                (100, 199, (None, Some(0))),
                (200, 249, (Some(1), Some(0))),
                (250, 299, (Some(1), None)),
                (300, 309, (None, Some(1))),
            ]
        );
        assert_eq!(split(&combined, |l| pairs[l as usize].0), countries);
        assert_eq!(
            split(&combined, |l| pairs[l as usize].1),
            [range(50, 249, 0), range(300, 309, 1)]
        );
        let whole = [range(0, u128::MAX, 7)];
        assert_eq!(combine(&whole, &[], |c, _| c.unwrap()), whole);
        assert_eq!(combine(&[], &whole, |_, n| n.unwrap()), whole);
    }
}
