//! The answers the demo ends with, each a query on `flows` that users can copy: bytes and
//! dollars by class, the top workload pairs across zones, egress to cloud services and the
//! internet per workload, and the workloads that only receive. Rendered as terminal tables with
//! the SQL that produced them.

use std::fmt::Write as _;

use crate::clickhouse::query_text_checked;

/// One question, answered by one query.
#[derive(Clone, Debug)]
pub struct Question {
    pub title: &'static str,
    /// What to read in the answer.
    pub note: &'static str,
    pub sql: String,
}

/// The endpoint's name as people say it: `namespace/workload`, or `node <name>` for node
/// processes and hostNetwork pods.
fn endpoint(side: &str) -> String {
    format!(
        "if({side}_workload_name != '', concat({side}_namespace, '/', {side}_workload_name), \
         concat('node ', {side}_node))"
    )
}

/// The demo's questions over cluster `cluster` in database `db`, for records from `since` (a
/// `YYYY-MM-DD hh:mm:ss` UTC time) on.
pub fn questions(db: &str, cluster: &str, since: &str) -> Vec<Question> {
    let scope = format!("cluster = '{cluster}' AND interval_start >= '{since}'");
    let local = endpoint("local");
    let remote = endpoint("remote");
    vec![
        Question {
            title: "Bytes and dollars by class",
            note: "Each node records its own side of a connection, so traffic between two nodes \
                   is counted (and billed) on both: sent by one, received by the other.",
            sql: format!(
                "SELECT class,
       sumIf(bytes, direction = 'out') AS sent_bytes,
       sumIf(bytes, direction = 'in') AS received_bytes,
       round(sum(cost_usd), 6) AS cost_usd
FROM {db}.flows FINAL
WHERE {scope}
GROUP BY class
ORDER BY cost_usd DESC, sent_bytes + received_bytes DESC"
            ),
        },
        Question {
            title: "Top workload pairs across zones",
            note: "INTER_ZONE is billed per GiB in both directions; these pairs are where \
                   topology-aware routing or co-location pays.",
            sql: format!(
                "SELECT {local} AS workload, local_zone AS zone,
       {remote} AS peer, remote_zone AS peer_zone,
       sumIf(bytes, direction = 'out') AS sent_bytes,
       sumIf(bytes, direction = 'in') AS received_bytes,
       round(sum(cost_usd), 6) AS cost_usd
FROM {db}.flows FINAL
WHERE {scope} AND class = 'INTER_ZONE'
GROUP BY ALL
ORDER BY cost_usd DESC
LIMIT 10"
            ),
        },
        Question {
            title: "Egress to cloud services and the internet, per workload",
            note: "S3 in the cluster's own region is free to reach (INTRA_REGION); the internet \
                   is billed per GiB sent.",
            sql: format!(
                "SELECT {local} AS workload,
       if(remote_service != '', concat(remote_service, ' (', remote_region, ')'), toString(remote_ip)) AS destination,
       class,
       sumIf(bytes, direction = 'out') AS sent_bytes,
       sumIf(bytes, direction = 'in') AS received_bytes,
       round(sum(cost_usd), 6) AS cost_usd
FROM {db}.flows FINAL
WHERE {scope} AND (remote_service != '' OR class IN ('INTERNET', 'INTER_CLOUD'))
GROUP BY ALL
ORDER BY cost_usd DESC, sent_bytes DESC"
            ),
        },
        Question {
            title: "Workloads that only receive",
            note: "Sent less than 1% of what they received: sinks such as databases, log \
                   collectors and caches.",
            sql: format!(
                "SELECT {local} AS workload,
       sumIf(bytes, direction = 'in') AS received_bytes,
       sumIf(bytes, direction = 'out') AS sent_bytes
FROM {db}.flows FINAL
WHERE {scope} AND class != 'MULTICAST'
GROUP BY workload
HAVING received_bytes > 0 AND sent_bytes * 100 < received_bytes
ORDER BY received_bytes DESC"
            ),
        },
    ]
}

/// A table with named columns, as ClickHouse returned it.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The values of column `name`.
    pub fn column(&self, name: &str) -> Vec<&str> {
        let Some(at) = self.columns.iter().position(|(n, _)| n == name) else {
            return Vec::new();
        };
        self.rows.iter().map(|r| r[at].as_str()).collect()
    }
}

/// Runs `sql` and returns its table.
pub async fn query(client: &clickhouse::Client, sql: &str) -> anyhow::Result<Table> {
    let text = query_text_checked(client, sql, "TabSeparatedWithNamesAndTypes").await?;
    let mut lines = text.lines();
    let names = lines.next().unwrap_or_default().split('\t');
    let types = lines.next().unwrap_or_default().split('\t');
    let columns = names
        .zip(types)
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let rows = lines
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    Ok(Table { columns, rows })
}

/// `1.50 MiB`-style sizes, exact below 1 KiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// The table for a terminal: sizes and dollars for people, numbers right-aligned, columns as
/// wide as their widest value.
pub fn render(table: &Table) -> String {
    let cell = |name: &str, value: &str| -> String {
        if name.ends_with("bytes") {
            value
                .parse()
                .map(human_bytes)
                .unwrap_or_else(|_| value.into())
        } else if name.ends_with("usd") {
            value
                .parse::<f64>()
                .map(|v| format!("${v:.6}"))
                .unwrap_or_else(|_| value.into())
        } else {
            value.to_string()
        }
    };
    let numeric: Vec<bool> = table
        .columns
        .iter()
        .map(|(_, ty)| ty.contains("Int") || ty.contains("Float") || ty.contains("Decimal"))
        .collect();
    let header: Vec<String> = table
        .columns
        .iter()
        .map(|(n, _)| n.trim_end_matches("_bytes").replace('_', " "))
        .collect();
    let cells: Vec<Vec<String>> = table
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(&table.columns)
                .map(|(v, (n, _))| cell(n, v))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: &[String]| -> String {
        let mut out = String::from(" ");
        for (i, v) in values.iter().enumerate() {
            let pad = widths[i] - v.chars().count();
            if numeric[i] {
                let _ = write!(out, " {}{v} ", " ".repeat(pad));
            } else {
                let _ = write!(out, " {v}{} ", " ".repeat(pad));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&rule));
    for row in &cells {
        out.push_str(&line(row));
    }
    if cells.is_empty() {
        out.push_str("  (no rows)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(3 << 20), "3.00 MiB");
    }

    #[test]
    fn tables_align_numbers_right_and_humanize_bytes_and_dollars() {
        let table = Table {
            columns: vec![
                ("class".into(), "LowCardinality(String)".into()),
                ("sent_bytes".into(), "UInt64".into()),
                ("cost_usd".into(), "Float64".into()),
            ],
            rows: vec![
                vec!["INTER_ZONE".into(), "3145728".into(), "0.0003".into()],
                vec!["INTRA_NODE".into(), "10".into(), "0".into()],
            ],
        };
        assert_eq!(
            render(&table),
            "  class           sent   cost usd\n  ----------  --------  ---------\n  \
             INTER_ZONE  3.00 MiB  $0.000300\n  INTRA_NODE      10 B  $0.000000\n"
        );
    }
}
