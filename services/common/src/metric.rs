//! Every metric a service serves is declared once, with its kind and its `# HELP` text, in one
//! list per service (each service's `metric_list.rs`, written with [`declare_metrics!`]; the
//! one every service has, [`BUILD_INFO`], is here). Code names a metric by its declaration
//! (`metrics::counter!(DELTAS.name)`), never by a string it assembles, so grepping for a
//! metric's name finds its declaration, and grepping for the declaration finds every use.
//!
//! [`declare`] registers a list at start: the descriptions with the recorder, and the list with
//! `/metrics`, which serves the `# HELP` and `# TYPE` lines of every declared metric from the
//! start, before its first sample (a counter of errors that never happened is still listed).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The Prometheus type of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Recorded with the buckets [`crate::http`] gives every `_seconds` histogram.
    Histogram,
}

impl Kind {
    /// The word of the `# TYPE` line.
    pub fn prometheus_type(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric: its full name, what kind it is, and its `# HELP` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

impl Metric {
    pub const fn counter(name: &'static str, help: &'static str) -> Metric {
        Metric {
            name,
            kind: Kind::Counter,
            help,
        }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Metric {
        Metric {
            name,
            kind: Kind::Gauge,
            help,
        }
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Metric {
        Metric {
            name,
            kind: Kind::Histogram,
            help,
        }
    }
}

/// Declares a service's metrics: one `pub const NAME: Metric` each, and `ALL`, the list of
/// them in declaration order (what [`declare`] takes), so no declared metric can be left out
/// of it.
///
/// ```
/// netmeter_common::declare_metrics! {
///     /// Raw conntrack deltas attributed.
///     DELTAS = counter("netmeter_attributor_deltas_total", "Raw conntrack deltas attributed.");
/// }
/// assert_eq!(ALL, &[DELTAS]);
/// ```
#[macro_export]
macro_rules! declare_metrics {
    ($($(#[$attr:meta])* $id:ident = $kind:ident($name:literal, $help:literal);)*) => {
        $(
            $(#[$attr])*
            pub const $id: $crate::metric::Metric = $crate::metric::Metric::$kind($name, $help);
        )*
        /// Every metric declared in this list.
        pub const ALL: &[$crate::metric::Metric] = &[$($id),*];
    };
}

/// The one metric every service serves; [`crate::service`] sets it at start.
pub const BUILD_INFO: Metric = Metric::gauge(
    "netmeter_build_info",
    "Always 1; the labels say which service and version runs.",
);

/// The lists registered with [`declare`] (several services may run in one test process).
static DECLARED: Mutex<Vec<&'static [Metric]>> = Mutex::new(Vec::new());

/// Registers `list` (and [`BUILD_INFO`]): its descriptions with the process's recorder, and its
/// metrics with `/metrics`, which lists each from the start. Call once at start; calling again
/// with the same list changes nothing.
pub fn declare(list: &'static [Metric]) {
    for metric in std::iter::once(&BUILD_INFO).chain(list) {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
    let mut declared = DECLARED.lock().expect("declared metrics lock");
    if !declared.iter().any(|known| std::ptr::eq(*known, list)) {
        declared.push(list);
    }
}

/// Appends, to a `/metrics` body in the Prometheus text format, the `# HELP` and `# TYPE` lines
/// of every declared metric the body has no family of yet (no sample so far): a family without
/// samples, which Prometheus and `promtool` accept.
pub(crate) fn render_unsampled(body: &mut String) {
    let declared = DECLARED.lock().expect("declared metrics lock");
    if declared.is_empty() {
        return;
    }
    let mut present: HashSet<&str> = families(body).collect();
    let mut missing = String::new();
    for metric in std::iter::once(&BUILD_INFO).chain(declared.iter().flat_map(|list| list.iter())) {
        if present.insert(metric.name) {
            let _ = write!(
                missing,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n\n",
                name = metric.name,
                help = metric.help,
                kind = metric.kind.prometheus_type()
            );
        }
    }
    body.push_str(&missing);
}

/// The names of the metric families of a `/metrics` body: those of its `# TYPE` lines.
pub fn families(body: &str) -> impl Iterator<Item = &str> {
    body.lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split_whitespace().next())
}

/// Checks a service's list against the naming convention of the README ("Health and
/// metrics"): `netmeter_` names, counters ending in `_total`, histograms in `_seconds` (the
/// only ones given buckets), every name once, a help text each. For each service's unit tests.
pub fn check_list(list: &[Metric]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for metric in std::iter::once(&BUILD_INFO).chain(list) {
        let name = metric.name;
        let problem = if !seen.insert(name) {
            Some("is declared twice")
        } else if !name.starts_with("netmeter_")
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            Some("is not netmeter_<lowercase words>")
        } else if metric.kind == Kind::Counter && !name.ends_with("_total") {
            Some("is a counter without the _total suffix")
        } else if metric.kind != Kind::Counter && name.ends_with("_total") {
            Some("ends in _total but is no counter")
        } else if metric.kind == Kind::Histogram && !name.ends_with("_seconds") {
            Some("is a histogram without the _seconds suffix (only those get buckets)")
        } else if metric.help.trim().is_empty() || metric.help.contains('\n') {
            Some("needs a one-line help text")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!("metric {name} {problem}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::declare_metrics! {
        /// A counter of the test.
        TESTED = counter("netmeter_test_things_total", "Things tested.");
        WAITING = gauge("netmeter_test_waiting", "Things waiting.");
    }

    #[test]
    fn every_declared_metric_is_listed_and_follows_the_convention() {
        assert_eq!(ALL, &[TESTED, WAITING]);
        check_list(ALL).unwrap();
        let bad = [Metric::counter("netmeter_test_things", "Things.")];
        assert_eq!(
            check_list(&bad).unwrap_err(),
            "metric netmeter_test_things is a counter without the _total suffix"
        );
        let twice = [BUILD_INFO];
        assert!(check_list(&twice).unwrap_err().contains("declared twice"));
    }

    #[test]
    fn declared_metrics_without_samples_get_their_help_and_type_lines() {
        declare(ALL);
        declare(ALL);
        let mut body = "# HELP netmeter_test_things_total Things tested.\n\
                        # TYPE netmeter_test_things_total counter\n\
                        netmeter_test_things_total 3\n\n"
            .to_string();
        render_unsampled(&mut body);
        assert_eq!(
            body.matches("# TYPE netmeter_test_things_total ").count(),
            1,
            "{body}"
        );
        assert_eq!(body.matches("# TYPE netmeter_test_waiting ").count(), 1);
        assert!(body.contains(
            "# HELP netmeter_test_waiting Things waiting.\n# TYPE netmeter_test_waiting gauge\n"
        ));
        assert!(body.contains("# TYPE netmeter_build_info gauge\n"));
        let families: Vec<&str> = families(&body).collect();
        assert_eq!(
            families,
            [
                "netmeter_test_things_total",
                "netmeter_build_info",
                "netmeter_test_waiting"
            ]
        );
    }
}
