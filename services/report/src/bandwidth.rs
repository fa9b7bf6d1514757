//! The published network bandwidth of instance types ([`BandwidthTable`]), shipped as
//! `data/instance-bandwidth.csv` and overridable with `--instance-bandwidth FILE`, and the
//! verdict on a node's measured throughput against it ([`NodeStatus`]).
//!
//! # Which figure a node is compared against, and why
//!
//! Clouds publish two kinds of figures. AWS sizes up to 4xlarge say "up to 12.5 Gbps": that is a
//! *burst*, reached on network I/O credits for a limited time (typically 5 to 60 minutes), after
//! which the instance is throttled to its *baseline* (0.781 Gbps for an m6i.large, 16 times
//! less). Larger AWS sizes, GCP and Azure publish one figure, which is both. So:
//!
//! - `bandwidth_bps` in the report, and every utilization, is the **baseline**: the throughput
//!   a node can keep up. A node whose p99 interval throughput approaches it spends its burst
//!   credits most of the time and will be throttled; that is the risk worth knowing about.
//! - The burst is the ceiling of a single interval: a peak near it is at risk as well.
//! - AWS applies the figure to inbound and outbound traffic separately; GCP and Azure cap only
//!   egress (`limits = out`), so there only the outbound throughput is compared.
//!
//! The thresholds ([`NodeStatus::judge`]): `at risk` when the p99 reaches 80 % of the baseline
//! or the peak 90 % of the burst; `watch` when the p99 reaches 50 % of the baseline or the peak
//! 80 % of it (bursting above the baseline is fine for minutes, not for hours); else `ok`.

use std::collections::BTreeMap;
use std::path::Path;

/// The table shipped with netmeter.
pub const BUILTIN_CSV: &str = include_str!("../data/instance-bandwidth.csv");

/// Which directions a published figure limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limits {
    /// Inbound and outbound, each (AWS).
    Both,
    /// Outbound only (GCP, Azure).
    Out,
}

/// One instance type's published bandwidth.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceBandwidth {
    pub instance_type: String,
    pub cloud: String,
    /// Sustained, bits per second.
    pub baseline_bps: f64,
    /// The "up to" figure, bits per second; equal to the baseline where only one is published.
    pub burst_bps: f64,
    pub limits: Limits,
    /// Where the figures are published.
    pub source: String,
    /// When they were taken from there.
    pub checked: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BandwidthError {
    #[error("{origin} line {line}: {problem}")]
    Line {
        origin: String,
        line: usize,
        problem: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Published bandwidth by instance type.
#[derive(Clone, Debug, Default)]
pub struct BandwidthTable {
    rows: BTreeMap<String, InstanceBandwidth>,
}

impl BandwidthTable {
    /// The table shipped with netmeter.
    pub fn builtin() -> BandwidthTable {
        BandwidthTable::parse(BUILTIN_CSV, "the built-in instance bandwidth table")
            .expect("the built-in table parses (tested)")
    }

    /// The built-in table with the rows of `path` replacing or adding to it.
    pub fn builtin_with_overrides(path: &Path) -> Result<BandwidthTable, BandwidthError> {
        let text = std::fs::read_to_string(path).map_err(|source| BandwidthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let overrides = BandwidthTable::parse(&text, &path.display().to_string())?;
        let mut table = BandwidthTable::builtin();
        table.rows.extend(overrides.rows);
        Ok(table)
    }

    /// Parses the CSV format of `data/instance-bandwidth.csv`: a header line
    /// `instance_type,cloud,baseline_gbps,burst_gbps,limits,source,checked`, then one row per
    /// type; `#` lines and blank lines are skipped. `burst_gbps` may be empty (= baseline),
    /// `limits` is `both` or `out`. `origin` names the text in errors.
    pub fn parse(text: &str, origin: &str) -> Result<BandwidthTable, BandwidthError> {
        const HEADER: &str = "instance_type,cloud,baseline_gbps,burst_gbps,limits,source,checked";
        let mut rows = BTreeMap::new();
        let mut header_seen = false;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let error = |problem: String| BandwidthError::Line {
                origin: origin.to_string(),
                line: index + 1,
                problem,
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !header_seen {
                if line != HEADER {
                    return Err(error(format!("expected the header `{HEADER}`")));
                }
                header_seen = true;
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [
                instance_type,
                cloud,
                baseline,
                burst,
                limits,
                source,
                checked,
            ] = fields[..]
            else {
                return Err(error(format!("expected 7 fields, found {}", fields.len())));
            };
            if instance_type.is_empty() {
                return Err(error("the instance type is empty".into()));
            }
            let gbps = |name: &str, value: &str| -> Result<f64, BandwidthError> {
                match value.parse::<f64>() {
                    Ok(v) if v.is_finite() && v > 0.0 => Ok(v * 1e9),
                    _ => Err(error(format!(
                        "{name} `{value}` is not a positive number of Gbps"
                    ))),
                }
            };
            let baseline_bps = gbps("baseline_gbps", baseline)?;
            let burst_bps = if burst.is_empty() {
                baseline_bps
            } else {
                gbps("burst_gbps", burst)?
            };
            if burst_bps < baseline_bps {
                return Err(error(format!(
                    "burst_gbps {burst} is below baseline_gbps {baseline}"
                )));
            }
            let limits = match limits {
                "both" => Limits::Both,
                "out" => Limits::Out,
                other => {
                    return Err(error(format!("limits `{other}` is not `both` or `out`")));
                }
            };
            rows.insert(
                instance_type.to_string(),
                InstanceBandwidth {
                    instance_type: instance_type.to_string(),
                    cloud: cloud.to_string(),
                    baseline_bps,
                    burst_bps,
                    limits,
                    source: source.to_string(),
                    checked: checked.to_string(),
                },
            );
        }
        if !header_seen {
            return Err(BandwidthError::Line {
                origin: origin.to_string(),
                line: 1,
                problem: format!("expected the header `{HEADER}`"),
            });
        }
        Ok(BandwidthTable { rows })
    }

    /// The row of `instance_type` as Kubernetes labels it (`m6i.large`, `n2-standard-4`,
    /// `Standard_D4s_v5`); Azure's label is matched regardless of case.
    pub fn lookup(&self, instance_type: &str) -> Option<&InstanceBandwidth> {
        self.rows.get(instance_type).or_else(|| {
            self.rows
                .values()
                .find(|r| r.instance_type.eq_ignore_ascii_case(instance_type))
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// A node's throughput against its instance's bandwidth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeStatus {
    AtRisk,
    Watch,
    Ok,
    UnknownInstanceType,
}

impl NodeStatus {
    /// p99 at or above this share of the baseline: sustained near the limit.
    pub const AT_RISK_P99: f64 = 0.8;
    /// Peak at or above this share of the burst: at the ceiling.
    pub const AT_RISK_PEAK_OF_BURST: f64 = 0.9;
    pub const WATCH_P99: f64 = 0.5;
    pub const WATCH_PEAK: f64 = 0.8;

    /// The verdict for a node whose measured peak and p99 (bits per second, the higher of the
    /// directions the figure limits) are compared with its row.
    pub fn judge(peak_bps: f64, p99_bps: f64, bandwidth: &InstanceBandwidth) -> NodeStatus {
        let baseline = bandwidth.baseline_bps;
        if p99_bps >= Self::AT_RISK_P99 * baseline
            || peak_bps >= Self::AT_RISK_PEAK_OF_BURST * bandwidth.burst_bps
        {
            NodeStatus::AtRisk
        } else if p99_bps >= Self::WATCH_P99 * baseline || peak_bps >= Self::WATCH_PEAK * baseline {
            NodeStatus::Watch
        } else {
            NodeStatus::Ok
        }
    }

    /// As the report writes it.
    pub fn label(self) -> &'static str {
        match self {
            NodeStatus::AtRisk => "at risk",
            NodeStatus::Watch => "watch",
            NodeStatus::Ok => "ok",
            NodeStatus::UnknownInstanceType => "unknown instance type",
        }
    }
}

/// The throughput a figure limits: both directions' higher one, or outbound only.
pub fn limited(limits: Limits, out_bps: f64, in_bps: f64) -> f64 {
    match limits {
        Limits::Both => out_bps.max(in_bps),
        Limits::Out => out_bps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_parses_and_holds_each_cloud() {
        let table = BandwidthTable::builtin();
        assert!(table.len() > 150, "{} rows", table.len());
        let m6i = table.lookup("m6i.large").unwrap();
        assert_eq!((m6i.baseline_bps, m6i.burst_bps), (0.781e9, 12.5e9));
        assert_eq!(m6i.limits, Limits::Both);
        assert!(m6i.source.starts_with("https://docs.aws.amazon.com/"));
        let n2 = table.lookup("n2-standard-8").unwrap();
        assert_eq!((n2.baseline_bps, n2.limits), (16e9, Limits::Out));
        let azure = table.lookup("standard_d4s_v5").unwrap();
        assert_eq!(azure.instance_type, "Standard_D4s_v5");
        assert!(table.lookup("z9.custom").is_none());
        for row in table.rows.values() {
            assert!(row.source.starts_with("https://"), "{row:?}");
            assert!(!row.checked.is_empty(), "{row:?}");
        }
    }

    #[test]
    fn overrides_replace_and_add_rows() {
        let dir = std::env::temp_dir().join(format!("netmeter-bw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bw.csv");
        std::fs::write(
            &path,
            "instance_type,cloud,baseline_gbps,burst_gbps,limits,source,checked\n\
             m6i.large,aws,1,,both,https://example.com,2026-12-01\n\
             z9.custom,onprem,25,25,both,https://example.com,2026-12-01\n",
        )
        .unwrap();
        let table = BandwidthTable::builtin_with_overrides(&path).unwrap();
        let m6i = table.lookup("m6i.large").unwrap();
        assert_eq!((m6i.baseline_bps, m6i.burst_bps), (1e9, 1e9));
        assert_eq!(table.lookup("z9.custom").unwrap().baseline_bps, 25e9);
        assert!(table.lookup("m5.large").is_some(), "the others stay");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_line() {
        let bad = "instance_type,cloud,baseline_gbps,burst_gbps,limits,source,checked\n\
                   x,aws,fast,1,both,s,c\n";
        let err = BandwidthTable::parse(bad, "f.csv").unwrap_err().to_string();
        assert_eq!(
            err,
            "f.csv line 2: baseline_gbps `fast` is not a positive number of Gbps"
        );
        let err = BandwidthTable::parse("a,b\n", "f.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("f.csv line 1: expected the header"),
            "{err}"
        );
        let err = BandwidthTable::parse(
            "instance_type,cloud,baseline_gbps,burst_gbps,limits,source,checked\nx,aws,2,1,both,s,c\n",
            "f.csv",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "f.csv line 2: burst_gbps 1 is below baseline_gbps 2");
    }

    #[test]
    fn status_compares_p99_with_the_baseline_and_peak_with_the_burst() {
        let m6i = BandwidthTable::builtin()
            .lookup("m6i.large")
            .unwrap()
            .clone();
        let gbps = |g: f64| g * 1e9;
        // Bursting to 2 Gbps for a moment is fine for minutes: watch, not at risk.
        assert_eq!(
            NodeStatus::judge(gbps(2.0), gbps(0.1), &m6i),
            NodeStatus::Watch
        );
        // Sustained at 0.7 of 0.781 Gbps: burst credits run out.
        assert_eq!(
            NodeStatus::judge(gbps(0.7), gbps(0.7), &m6i),
            NodeStatus::AtRisk
        );
        // At the 12.5 Gbps ceiling.
        assert_eq!(
            NodeStatus::judge(gbps(12.0), gbps(0.1), &m6i),
            NodeStatus::AtRisk
        );
        assert_eq!(
            NodeStatus::judge(gbps(0.3), gbps(0.2), &m6i),
            NodeStatus::Ok
        );
        assert_eq!(limited(Limits::Out, 1.0, 5.0), 1.0);
        assert_eq!(limited(Limits::Both, 1.0, 5.0), 5.0);
    }
}
