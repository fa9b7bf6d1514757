//! Metrics for people, next to the pipeline's own `netmeter_attributor_*`: what each workload
//! sends and receives across which boundary, what it costs, and the zone-to-zone matrix, as
//! Prometheus counters for dashboards and alerts.
//!
//! - `netmeter_workload_bytes_total{namespace, workload_kind, workload, class, direction}` and
//!   `netmeter_workload_cost_dollars_total{...}` (same labels): the bytes and the dollars of the
//!   flow records, by the workload of the LOCAL endpoint; never pod, node or address labels. A
//!   local endpoint without a workload: a node's own address (node processes, hostNetwork pods)
//!   is `namespace="", workload_kind="Node", workload="__node__"` (one series for all nodes);
//!   anything else (a static host without `workload_name`, an address the inventory does not
//!   know) keeps its namespace, with `workload_kind="", workload="__none__"`.
//! - `netmeter_zone_pair_bytes_total{zone, remote_zone, direction}`: bytes by the local and the
//!   remote zone as recorded; a side without a zone (the internet, cloud services, whose zones
//!   are not published, a node without a zone label) is `"none"`. Zones come from node labels,
//!   EndpointSlices and the rules file: few, so not capped.
//! - `netmeter_internet_egress_bytes_total{country}`: bytes sent to the internet and to other
//!   clouds (classes `INTERNET`, `INTER_CLOUD`) by the destination's country, `unknown` where
//!   the country data has none; at most ~250 series, never capped. For alerts on egress to
//!   countries outside an allow-list.
//! - **Cap**: at most `--metrics-max-workloads` distinct (namespace, workload_kind, workload)
//!   get their own series per replica, first come first served. The records of any other
//!   workload are counted under `__other__` (all three labels), and in
//!   `netmeter_attributor_metrics_overflow_records_total`; the first overflow is logged once.
//!   `netmeter_attributor_metrics_workloads` is the number of workloads with series. Series
//!   stay until the process ends: a counter must not vanish while its process runs.
//! - **At least once**, like the pipeline: a raw message attributed again after a crash or a
//!   rebalance is counted again, by the replica that re-reads it. Every replica exports its own
//!   series; sum them. ClickHouse (one row per record id) is the exact ledger.
//!
//! On the hot path a [`Tally`] sums one batch's records per series; [`UsageMetrics::add`] then
//! takes one lock per batch. The dollars are fractional, which the `metrics` recorder's integer
//! counters cannot hold, so this module keeps the three families itself and renders them into
//! `/metrics` ([`netmeter_common::http::render_also`]).

mod series;
mod tally;

pub use series::{Added, Series};
pub use tally::Tally;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use netmeter_proto::EndpointView;

use crate::metric_list::{OVERFLOW_RECORDS, TRACKED_WORKLOADS};

/// `--metrics-max-workloads`: at ~4 (class, direction) pairs per workload and two families,
/// ~4,000 series per replica.
pub const DEFAULT_MAX_WORKLOADS: usize = 500;

/// `workload_kind` and `workload` of a node's own address.
pub const NODE_KIND: &str = "Node";
pub const NODE: &str = "__node__";
/// `workload` of any other local endpoint without a workload.
pub const NO_WORKLOAD: &str = "__none__";
/// `namespace`, `workload_kind` and `workload` of the workloads beyond the cap.
pub const OTHER: &str = "__other__";
/// `zone` or `remote_zone` of a side without a zone.
pub const NO_ZONE: &str = "none";
/// `country` of an address the country data does not place.
pub const UNKNOWN_COUNTRY: &str = "unknown";

/// Whose bytes a record's are: the labels `namespace`, `workload_kind`, `workload`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadLabels {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl WorkloadLabels {
    /// The labels of a local endpoint (see the module doc for endpoints without a workload).
    pub fn of(local: &EndpointView) -> WorkloadLabels {
        let (namespace, kind, name) = workload_of(local);
        WorkloadLabels {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    /// Where the workloads beyond the cap are counted.
    pub fn other() -> WorkloadLabels {
        WorkloadLabels {
            namespace: OTHER.into(),
            kind: OTHER.into(),
            name: OTHER.into(),
        }
    }
}

/// (namespace, workload_kind, workload) of a local endpoint, borrowed.
pub fn workload_of<'a>(local: &EndpointView<'a>) -> (&'a str, &'a str, &'a str) {
    if !local.workload_name.is_empty() {
        (local.namespace, local.workload_kind, local.workload_name)
    } else if local.host_network {
        ("", NODE_KIND, NODE)
    } else {
        (local.namespace, "", NO_WORKLOAD)
    }
}

/// The `zone` / `remote_zone` label of a recorded zone.
pub fn zone_label(zone: &str) -> &str {
    if zone.is_empty() { NO_ZONE } else { zone }
}

/// The labels `zone`, `remote_zone`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZonePair {
    pub zone: String,
    pub remote_zone: String,
}

/// The process's usage series, rendered into its `/metrics`.
pub struct UsageMetrics {
    series: Mutex<Series>,
    overflow_logged: AtomicBool,
}

impl UsageMetrics {
    /// The one instance of this process (like the `metrics` recorder), which `/metrics`
    /// renders; replicas are processes.
    pub fn global() -> &'static UsageMetrics {
        static GLOBAL: OnceLock<UsageMetrics> = OnceLock::new();
        let mut created = false;
        let usage = GLOBAL.get_or_init(|| {
            created = true;
            UsageMetrics {
                series: Mutex::new(Series::new(DEFAULT_MAX_WORKLOADS)),
                overflow_logged: AtomicBool::new(false),
            }
        });
        if created {
            netmeter_common::http::render_also(|out| UsageMetrics::global().render(out));
        }
        usage
    }

    /// `--metrics-max-workloads`; workloads that have series keep them.
    pub fn set_max_workloads(&self, max: usize) {
        self.series
            .lock()
            .expect("usage lock")
            .set_max_workloads(max);
    }

    /// Counts one batch's records.
    pub fn add(&self, tally: &Tally) {
        if tally.is_empty() {
            return;
        }
        let (added, workloads, max_workloads) = {
            let mut series = self.series.lock().expect("usage lock");
            let added = series.add(tally);
            (added, series.workloads(), series.max_workloads())
        };
        if added.new_workloads > 0 {
            metrics::gauge!(TRACKED_WORKLOADS.name).set(workloads as f64);
        }
        if let Some(first) = &added.first_overflow {
            WorkloadsOverflowed {
                records: added.overflow_records,
                max_workloads,
                first,
                logged: &self.overflow_logged,
            }
            .emit();
        }
    }

    /// Appends the three families in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        self.series.lock().expect("usage lock").render(out);
    }
}

/// Records of workloads beyond `--metrics-max-workloads` were counted under `__other__`.
struct WorkloadsOverflowed<'a> {
    records: u64,
    max_workloads: usize,
    first: &'a WorkloadLabels,
    logged: &'a AtomicBool,
}

impl WorkloadsOverflowed<'_> {
    fn emit(&self) {
        metrics::counter!(OVERFLOW_RECORDS.name).increment(self.records);
        if !self.logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_workloads = self.max_workloads,
                namespace = %self.first.namespace,
                workload_kind = %self.first.kind,
                workload = %self.first.name,
                "more workloads than --metrics-max-workloads: the records of the others are counted under workload=\"__other__\" in the workload metrics (and in {}); raise the flag if Prometheus can take the series (ClickHouse has every workload either way)",
                OVERFLOW_RECORDS.name
            );
        }
    }
}

#[cfg(test)]
mod tests;
