//! The usage series of one replica: counters since the process started, the cap on workloads,
//! and their Prometheus text.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use netmeter_common::metric::Metric;
use rustc_hash::FxHashMap;

use super::tally::ByClass;
use super::{Tally, WorkloadLabels, ZonePair};
use crate::classify::{Class, Direction};
use crate::metric_list::{
    INTERNET_EGRESS_BYTES, WORKLOAD_BYTES, WORKLOAD_DOLLARS, ZONE_PAIR_BYTES,
};

const DIRECTIONS: [Direction; 2] = [Direction::Out, Direction::In];

/// One workload's counters.
struct Row {
    workload: WorkloadLabels,
    bytes: ByClass<u64>,
    dollars: ByClass<f64>,
    /// Bit `class * 2 + direction`: the series exists.
    seen: u32,
}

impl Row {
    fn new(workload: WorkloadLabels) -> Row {
        Row {
            workload,
            bytes: Default::default(),
            dollars: Default::default(),
            seen: 0,
        }
    }
}

/// The counters of [`super::UsageMetrics`], without the lock and the side effects.
pub struct Series {
    max_workloads: usize,
    rows: Vec<Row>,
    /// Row of each workload with series (not `__other__`).
    by_workload: FxHashMap<WorkloadLabels, usize>,
    /// Row of `__other__`, once a workload did not fit.
    other: Option<usize>,
    /// Bytes by direction; `None`: no record yet.
    zone_pairs: BTreeMap<ZonePair, [Option<u64>; 2]>,
    /// Internet and other-cloud egress bytes by country label.
    countries: BTreeMap<String, u64>,
}

/// What one batch did.
#[derive(Debug, Default, PartialEq)]
pub struct Added {
    /// Workloads that got their series now.
    pub new_workloads: usize,
    /// Records counted under `__other__`, because their workload did not fit under the cap...
    pub overflow_records: u64,
    /// ... the first of those workloads.
    pub first_overflow: Option<WorkloadLabels>,
}

impl Series {
    pub fn new(max_workloads: usize) -> Series {
        Series {
            max_workloads,
            rows: Vec::new(),
            by_workload: FxHashMap::default(),
            other: None,
            zone_pairs: BTreeMap::new(),
            countries: BTreeMap::new(),
        }
    }

    /// Changes the cap; workloads that have series keep them.
    pub fn set_max_workloads(&mut self, max: usize) {
        self.max_workloads = max;
    }

    pub fn max_workloads(&self) -> usize {
        self.max_workloads
    }

    /// Workloads with their own series (`__other__` not counted).
    pub fn workloads(&self) -> usize {
        self.by_workload.len()
    }

    /// Adds one batch's sums.
    pub fn add(&mut self, tally: &Tally) -> Added {
        let mut added = Added::default();
        for sums in tally.workloads() {
            let row = match self.by_workload.get(&sums.labels) {
                Some(&row) => row,
                None if self.by_workload.len() < self.max_workloads => {
                    let row = self.rows.len();
                    self.rows.push(Row::new(sums.labels.clone()));
                    self.by_workload.insert(sums.labels.clone(), row);
                    added.new_workloads += 1;
                    row
                }
                None => {
                    added.overflow_records += sums.records;
                    if added.first_overflow.is_none() {
                        added.first_overflow = Some(sums.labels.clone());
                    }
                    *self.other.get_or_insert_with(|| {
                        self.rows.push(Row::new(WorkloadLabels::other()));
                        self.rows.len() - 1
                    })
                }
            };
            let row = &mut self.rows[row];
            for c in 0..Class::ALL.len() {
                for d in 0..DIRECTIONS.len() {
                    if sums.seen & (1 << (c * 2 + d)) != 0 {
                        row.bytes[c][d] += sums.bytes[c][d];
                        row.dollars[c][d] += sums.dollars[c][d];
                    }
                }
            }
            row.seen |= sums.seen;
        }
        for pair in tally.pairs() {
            let key = ZonePair {
                zone: tally.zone_name(pair.zone).to_string(),
                remote_zone: tally.zone_name(pair.remote_zone).to_string(),
            };
            let totals = self.zone_pairs.entry(key).or_default();
            for (total, bytes) in totals.iter_mut().zip(pair.bytes) {
                if let Some(bytes) = bytes {
                    *total.get_or_insert(0) += bytes;
                }
            }
        }
        for (country, bytes) in tally.countries() {
            *self
                .countries
                .entry(country_label(country).to_string())
                .or_default() += bytes;
        }
        added
    }

    /// Appends the families with at least one series, in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        if !self.rows.is_empty() {
            header(out, WORKLOAD_BYTES);
            self.render_workloads(out, WORKLOAD_BYTES.name, |row, c, d| {
                row.bytes[c][d].to_string()
            });
            header(out, WORKLOAD_DOLLARS);
            self.render_workloads(out, WORKLOAD_DOLLARS.name, |row, c, d| {
                row.dollars[c][d].to_string()
            });
        }
        if !self.zone_pairs.is_empty() {
            header(out, ZONE_PAIR_BYTES);
            for (pair, bytes) in &self.zone_pairs {
                for (direction, bytes) in DIRECTIONS.iter().zip(bytes) {
                    if let Some(bytes) = bytes {
                        let _ = writeln!(
                            out,
                            "{}{{zone=\"{}\",remote_zone=\"{}\",direction=\"{}\"}} {bytes}",
                            ZONE_PAIR_BYTES.name,
                            escape(&pair.zone),
                            escape(&pair.remote_zone),
                            direction.name()
                        );
                    }
                }
            }
            out.push('\n');
        }
        if !self.countries.is_empty() {
            header(out, INTERNET_EGRESS_BYTES);
            for (country, bytes) in &self.countries {
                let _ = writeln!(
                    out,
                    "{}{{country=\"{}\"}} {bytes}",
                    INTERNET_EGRESS_BYTES.name,
                    escape(country)
                );
            }
            out.push('\n');
        }
    }

    fn render_workloads(
        &self,
        out: &mut String,
        name: &str,
        value: impl Fn(&Row, usize, usize) -> String,
    ) {
        for row in &self.rows {
            let w = &row.workload;
            let (namespace, kind, workload) =
                (escape(&w.namespace), escape(&w.kind), escape(&w.name));
            for (c, class) in Class::ALL.iter().enumerate() {
                for (d, direction) in DIRECTIONS.iter().enumerate() {
                    if row.seen & (1 << (c * 2 + d)) != 0 {
                        let _ = writeln!(
                            out,
                            "{name}{{namespace=\"{namespace}\",workload_kind=\"{kind}\",workload=\"{workload}\",class=\"{}\",direction=\"{}\"}} {}",
                            class.name(),
                            direction.name(),
                            value(row, c, d)
                        );
                    }
                }
            }
        }
        out.push('\n');
    }
}

/// The `country` label: the ISO code, or `unknown`.
fn country_label(country: &str) -> &str {
    if country.is_empty() {
        super::UNKNOWN_COUNTRY
    } else {
        country
    }
}

fn header(out: &mut String, metric: Metric) {
    let (name, help) = (metric.name, metric.help);
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
}

/// A label value in the text format: backslash, double quote and line feed escaped.
fn escape(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}
