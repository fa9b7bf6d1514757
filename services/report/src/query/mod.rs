//! Builds a [`Report`] from ClickHouse: checks the schema, finds which parts of the range the
//! rollups answer ([`plan`]), runs one statement per table ([`tables`]) and puts the answers in
//! sections, one per question. An empty range is an error that says why it may be empty
//! ([`diagnose`]).
//!
//! Every figure is read with `FINAL` (a replayed or redelivered record counts once, with its
//! latest attribution), from `flows` or from the rollups, which are recomputed from
//! `flows FINAL` and give the same sums.

pub mod diagnose;
pub mod fetch;
pub mod plan;
pub mod tables;
pub mod traffic;

use serde_json::{Value, json};

use crate::bandwidth::{NodeStatus, limited};
use crate::error::ReportError;
use crate::model::{Report, Section, Table};
use crate::options::{Options, TimeRange, format_time};

use fetch::{ResultSet, fetch};
use plan::{Coverage, RollupState, Source};
use tables::{Inputs, Spec};
use traffic::{Context, quote};

/// Where the flows are: a ClickHouse client, and its URL, user and database as the messages
/// and the SQL name them.
#[derive(Clone)]
pub struct Connection {
    pub client: clickhouse::Client,
    pub url: String,
    pub user: String,
    /// The database the sink writes to (a plain identifier, written into the SQL).
    pub database: String,
}

impl Connection {
    /// A client of the ClickHouse HTTP interface at `url`.
    pub fn new(url: &str, user: &str, password: &str, database: &str) -> Connection {
        let client = clickhouse::Client::default()
            .with_url(url)
            .with_user(user)
            .with_password(password)
            // Bytes and counts are UInt64: JSON integers, not strings.
            .with_setting("output_format_json_quote_64bit_integers", "0");
        Connection {
            client,
            url: url.to_string(),
            user: user.to_string(),
            database: database.to_string(),
        }
    }
}

/// The columns a report needs beyond the first schema version (4: the initiator and the
/// instance type; 5: the egress path, the remote place and network, the processing charge; 6:
/// the per-connection detail, which keeps what `flows` no longer does).
const REQUIRED_COLUMNS: [(&str, &str); 8] = [
    ("flows", "local_initiated"),
    ("flows", "local_instance_type"),
    ("flows", "path"),
    ("flows", "remote_country"),
    ("flows", "remote_asn"),
    ("flows", "remote_as_name"),
    ("flows", "processing_cost_usd"),
    ("connection_minutes", "interval_start"),
];

/// Builds the report over `options.range`.
pub async fn build(connection: &Connection, options: &Options) -> Result<Report, ReportError> {
    let database = connection.database.as_str();
    let rollups = check_schema(connection).await?;
    let range = options.range;
    let (coverage, coverage_previous) = if options.rollups {
        (
            coverage(connection, &rollups, range).await?,
            coverage(connection, &rollups, range.previous()).await?,
        )
    } else {
        (Coverage::default(), Coverage::default())
    };
    let inputs = Inputs {
        context: Context {
            database,
            filters: &options.filters,
            coverage,
            coverage_previous,
            range,
        },
        range,
        top: options.top.max(1),
        bucket: range.bucket(),
    };

    let by_class = run(connection, tables::by_class(&inputs)).await?;
    if is_empty(&by_class) {
        return Err(diagnose::no_data(connection, options).await);
    }
    let overview = Section {
        id: "overview",
        title: "Overview".into(),
        question: "How many bytes did our workloads send and receive, in which class, at what \
                   cost, against the previous period of the same length?"
            .into(),
        note: "Sent and received are per endpoint of ours: a byte between two of our pods is \
               sent by one and received by the other, so it counts in both columns (on two \
               nodes); a byte to or from outside counts once. Cost is as the attributor \
               priced each record (both sides of a cross-zone byte are billed)."
            .into(),
        tables: vec![
            by_class,
            run(connection, tables::cost_over_time(&inputs)).await?,
            run(connection, tables::sankey(&inputs)).await?,
        ],
    };
    let cross_zone = Section {
        id: "cross_zone",
        title: "Cross-zone and cross-region traffic".into(),
        question: "How much traffic crosses zones and regions, what does it cost, and which \
                   workload pairs are the largest talkers?"
            .into(),
        note: "Each pair appears once from each side: the workload's own records, with what it \
               sent, received and was billed. Topology-aware routing, co-locating chatty pairs \
               or zone-local replicas remove this cost."
            .into(),
        tables: vec![
            run(connection, tables::zone_matrix(&inputs)).await?,
            run(connection, tables::top_pairs(&inputs)).await?,
        ],
    };
    let egress = Section {
        id: "egress",
        title: "Cloud services and the internet".into(),
        question: "How much goes to S3 and other cloud services, and to the internet, from \
                   which workloads, at what cost?"
            .into(),
        note: "A cloud service in the cluster's own region is usually free to reach \
               (INTRA_REGION); in another region it is billed per GiB, and the internet more. \
               Through a priced path such as a NAT gateway, cost includes its per-GiB \
               processing charge."
            .into(),
        tables: vec![run(connection, tables::destinations(&inputs)).await?],
    };
    let egress_destinations = Section {
        id: "egress_destinations",
        title: "Where internet egress goes".into(),
        question: "To which countries and networks do our workloads send traffic over the \
                   internet and to other clouds, at what cost, and which destinations are new?"
            .into(),
        note: "Internet egress: bytes sent to the internet and to other clouds (INTERNET, \
               INTER_CLOUD), by the remote address's country and network (AS) as the \
               attributor located it; unknown: no location for the address; asn 0: no network. \
               new: nothing was sent to that country (by any workload the filters select), or \
               by that workload to that country and network, in the previous period of the \
               same length; a new destination is never left out for --top while there are at \
               most that many, so the largest known ones give way to them. cost_usd is all of \
               the traffic's cost, both ways; processing_cost_usd the part a NAT gateway or \
               other priced path charged for processing."
            .into(),
        tables: vec![
            run(connection, tables::egress_countries(&inputs)).await?,
            run(connection, tables::egress_destinations(&inputs)).await?,
        ],
    };
    let initiators = Section {
        id: "initiators",
        title: "Who opens connections".into(),
        question: "Which workloads open outbound connections, and which only receive?".into(),
        note: "opens: only opened connections; accepts: only accepted them; both; only \
               receives: accepted only and sent less than 1% of what it received (a sink: logs, \
               metrics, a database being written to). Connections are distinct (protocol, \
               addresses, ports) in the range."
            .into(),
        tables: vec![run(connection, tables::initiators(&inputs)).await?],
    };
    let balance = Section {
        id: "balance",
        title: "Load balance across replicas".into(),
        question: "Are the connections of a workload's clients balanced across the replicas of \
                   the server they talk to?"
            .into(),
        note: "imbalance_ratio = the busiest backend's connections / the mean over the backends \
               the client reached (1.0 is even). Fewer backends than server_pods: the client \
               never reached some replicas (long-lived connections, HTTP/2, a client-side \
               pool), or pods were replaced during the range. Only servers with more than one \
               pod; the --namespace and --workload filters match the client or the server."
            .into(),
        tables: vec![
            run(connection, tables::imbalance(&inputs)).await?,
            run(connection, tables::backends(&inputs)).await?,
        ],
    };
    let throughput = throughput(connection, &inputs, options).await?;
    let cost_by_day = Section {
        id: "cost_by_day",
        title: "Cost by namespace and workload".into(),
        question: "What does each namespace and workload cost per day, and how did that change \
                   against the previous period of the same length?"
            .into(),
        note: "Days are UTC; the first and last day hold only the part in the range. A \
               change_ratio of 0.5 is 50% more than the previous period; empty when it cost \
               nothing then. (nodes) is traffic of node processes and hostNetwork pods."
            .into(),
        tables: vec![
            run(connection, tables::namespaces_by_day(&inputs)).await?,
            run(connection, tables::workloads_by_day(&inputs)).await?,
            run(connection, tables::workload_change(&inputs)).await?,
            run(connection, tables::namespace_change(&inputs)).await?,
        ],
    };

    Ok(Report {
        generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        from: format_time(range.from),
        to: format_time(range.to),
        previous_from: format_time(range.previous().from),
        bucket: inputs.bucket,
        filters: options.filters.clone(),
        sections: vec![
            overview,
            cross_zone,
            egress,
            egress_destinations,
            initiators,
            balance,
            throughput,
            cost_by_day,
        ],
    })
}

/// Runs a table's SQL and checks that it returned the columns the table declares.
async fn run(connection: &Connection, spec: Spec) -> Result<Table, ReportError> {
    let result = fetch(connection, &spec.sql, spec.id).await?;
    let expected: Vec<&str> = spec.columns.iter().map(|c| c.name).collect();
    if !result.names.is_empty() && result.names != expected {
        return Err(ReportError::Query {
            url: connection.url.clone(),
            what: spec.id.into(),
            message: format!(
                "returned columns {:?}, expected {expected:?} (a bug in netmeter)",
                result.names
            ),
        });
    }
    Ok(Table {
        id: spec.id,
        title: spec.title.into(),
        sql: spec.sql,
        columns: spec.columns,
        rows: result.rows,
    })
}

/// No byte in the current period.
fn is_empty(by_class: &Table) -> bool {
    by_class
        .rows
        .iter()
        .all(|row| row[1].as_u64() == Some(0) && row[2].as_u64() == Some(0))
}

/// The tables recomputed from `flows` that a database holds, and where their bookkeeping is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Recomputed {
    /// None without their change marks.
    sources: Vec<Source>,
    /// The ClickHouse cluster of a database laid out by `--clickhouse-cluster` (`flows` is a
    /// `Distributed` table): every node recomputes its own shard and keeps its own change marks
    /// and watermarks, so a table is complete for a bucket only if it is on every node.
    cluster: Option<String>,
}

/// The cluster a `Distributed` table's `engine_full` names, e.g. `Distributed('prod', 'db',
/// 'flows_local', ...)`.
fn distributed_cluster(engine_full: &str) -> Option<String> {
    let args = engine_full.strip_prefix("Distributed(")?;
    let first = args.split(',').next()?.trim();
    Some(first.trim_matches('\'').to_string())
}

/// Checks that the database holds `flows` with the columns the report reads; returns the
/// tables recomputed from it that are there too.
async fn check_schema(connection: &Connection) -> Result<Recomputed, ReportError> {
    let database = &connection.database;
    let sql = format!(
        "SELECT table, name FROM system.columns WHERE database = {} \
         AND table IN ('flows', 'connection_minutes', 'flows_per_minute', 'flows_per_hour', \
         'rollup_changes', 'rollup_watermarks')",
        quote(database)
    );
    let columns = fetch(connection, &sql, "schema").await?;
    let has = |table: &str, column: &str| {
        columns
            .rows
            .iter()
            .any(|r| r[0].as_str() == Some(table) && r[1].as_str() == Some(column))
    };
    if !has("flows", "interval_start") {
        return Err(ReportError::MissingSchema {
            database: database.clone(),
            url: connection.url.clone(),
        });
    }
    if let Some((table, column)) = REQUIRED_COLUMNS.iter().find(|(t, c)| !has(t, c)) {
        return Err(ReportError::OldSchema {
            database: database.clone(),
            table: table.to_string(),
            column: column.to_string(),
        });
    }
    let engine = fetch(
        connection,
        &format!(
            "SELECT engine_full FROM system.tables WHERE database = {} AND name = 'flows'",
            quote(database)
        ),
        "schema",
    )
    .await?;
    let cluster = engine
        .first("engine_full")
        .and_then(Value::as_str)
        .and_then(distributed_cluster);
    if !has("rollup_changes", "marked_at") || !has("rollup_watermarks", "refreshed_at") {
        return Ok(Recomputed {
            sources: Vec::new(),
            cluster,
        });
    }
    let sources = [
        Source::ConnectionMinutes,
        Source::MinuteRollup,
        Source::HourRollup,
    ]
    .into_iter()
    .filter(|s| has(s.table(), "interval_start"))
    .collect();
    Ok(Recomputed { sources, cluster })
}

/// What the tables recomputed from `flows` (`present`) hold for `range` (see [`plan`]). On a
/// cluster, the watermark is the oldest of the nodes' and a pending bucket on any node is
/// pending.
async fn coverage(
    connection: &Connection,
    present: &Recomputed,
    range: TimeRange,
) -> Result<Coverage, ReportError> {
    let db = &connection.database;
    // `SELECT f(x) FROM <this>` over `sql` run on each node, or on the one server.
    let each_node = |sql: String| match &present.cluster {
        Some(cluster) => format!("clusterAllReplicas({}, view({sql}))", quote(cluster)),
        None => format!("({sql})"),
    };
    let mut states = Vec::new();
    for source in [
        Source::ConnectionMinutes,
        Source::MinuteRollup,
        Source::HourRollup,
    ] {
        if !present.sources.contains(&source) {
            states.push(None);
            continue;
        }
        let table = source.table();
        let watermark = each_node(format!(
            "SELECT toUnixTimestamp(max(refreshed_at)) AS w FROM {db}.rollup_watermarks \
             WHERE rollup = '{table}'"
        ));
        let pending = each_node(format!(
            "SELECT minOrNull(toUnixTimestamp(interval_start)) AS p
     FROM {db}.rollup_changes
     WHERE rollup = '{table}'
       AND interval_start >= '{from}' AND interval_start < '{to}'
       AND marked_at >= (SELECT max(refreshed_at) FROM {db}.rollup_watermarks
                         WHERE rollup = '{table}')",
            from = format_time(range.from),
            to = format_time(range.to),
        ));
        let sql = format!(
            "SELECT
    (SELECT min(w) FROM {watermark}) AS watermark,
    (SELECT minOrNull(toUnixTimestamp(interval_start)) FROM {db}.{table}) AS earliest,
    (SELECT min(p) FROM {pending}) AS pending_from"
        );
        let result = fetch(connection, &sql, "rollup coverage").await?;
        let number = |name: &str| result.first(name).and_then(Value::as_u64);
        // Never refreshed: the rollup answers nothing yet.
        let state = (number("watermark").unwrap_or(0) > 0).then(|| RollupState {
            earliest: number("earliest"),
            pending_from: number("pending_from"),
        });
        states.push(state);
    }
    Ok(Coverage {
        connection: states[0],
        minute: states[1],
        hour: states[2],
    })
}

/// The throughput section: node peaks from ClickHouse, judged against the instance bandwidth
/// table, the busiest `--top` nodes kept, and their throughput over time.
async fn throughput(
    connection: &Connection,
    inputs: &Inputs<'_>,
    options: &Options,
) -> Result<Section, ReportError> {
    let spec = tables::nodes(inputs);
    let result = fetch(connection, &spec.sql, spec.id).await?;
    let mut rows = judge_nodes(&result, options);
    rows.truncate(inputs.top);
    let nodes: Vec<String> = rows
        .iter()
        .filter_map(|r| r[0].as_str().map(str::to_string))
        .collect();
    let nodes_table = Table {
        id: spec.id,
        title: spec.title.into(),
        sql: spec.sql,
        columns: spec.columns,
        rows,
    };
    let over_time = if nodes.is_empty() {
        let spec = tables::node_over_time(inputs, &["".to_string()]);
        Table {
            id: spec.id,
            title: spec.title.into(),
            sql: spec.sql,
            columns: spec.columns,
            rows: Vec::new(),
        }
    } else {
        run(connection, tables::node_over_time(inputs, &nodes)).await?
    };
    Ok(Section {
        id: "throughput",
        title: "Node throughput".into(),
        question: "Is any node at risk of its instance's bandwidth limit?".into(),
        note: format!(
            "Throughput per node and collection interval: bytes x 8 / the interval's seconds, \
             without INTRA_NODE traffic (it does not leave the node); peak and p99 over the \
             intervals with traffic. bandwidth_bps is the published baseline of the instance \
             type (sustained; AWS sizes up to 4xlarge burst above it on credits for minutes, up \
             to burst_bandwidth_bps). at risk: p99 >= {}% of the baseline or peak >= {}% of the \
             burst; watch: p99 >= {}% or peak >= {}% of the baseline. GCP and Azure limit only \
             outbound traffic. The bandwidth columns and status come from the instance \
             bandwidth table (--instance-bandwidth), not from the SQL. Filters other than \
             --cluster do not apply: a limit is about all of a node's traffic.",
            NodeStatus::AT_RISK_P99 * 100.0,
            NodeStatus::AT_RISK_PEAK_OF_BURST * 100.0,
            NodeStatus::WATCH_P99 * 100.0,
            NodeStatus::WATCH_PEAK * 100.0,
        ),
        tables: vec![nodes_table, over_time],
    })
}

/// The `nodes` rows: the SQL's peaks with the bandwidth, utilizations and status added, the
/// most loaded first (at risk, watch, ok, unknown; then by peak utilization, then peak).
fn judge_nodes(result: &ResultSet, options: &Options) -> Vec<Vec<Value>> {
    if result.rows.is_empty() {
        return Vec::new();
    }
    let column = |name: &str| result.index(name).expect("the nodes SQL returns it");
    let (node, instance_type) = (column("node"), column("instance_type"));
    let (peak_out, p99_out) = (column("peak_out_bps"), column("p99_out_bps"));
    let (peak_in, p99_in) = (column("peak_in_bps"), column("p99_in_bps"));
    let mut judged: Vec<(NodeStatus, f64, f64, Vec<Value>)> = result
        .rows
        .iter()
        .map(|row| {
            let number = |i: usize| row[i].as_f64().unwrap_or(0.0);
            let kind = row[instance_type].as_str().unwrap_or_default();
            let peak_any = number(peak_out).max(number(peak_in));
            match options.bandwidth.lookup(kind).filter(|_| !kind.is_empty()) {
                Some(bandwidth) => {
                    let peak = limited(bandwidth.limits, number(peak_out), number(peak_in));
                    let p99 = limited(bandwidth.limits, number(p99_out), number(p99_in));
                    let status = NodeStatus::judge(peak, p99, bandwidth);
                    let utilization = peak / bandwidth.baseline_bps;
                    let values = vec![
                        row[node].clone(),
                        row[instance_type].clone(),
                        json!(bandwidth.baseline_bps),
                        row[peak_out].clone(),
                        row[p99_out].clone(),
                        row[peak_in].clone(),
                        row[p99_in].clone(),
                        json!(utilization),
                        json!(status.label()),
                        json!(bandwidth.burst_bps),
                        json!(p99 / bandwidth.baseline_bps),
                    ];
                    (status, utilization, peak_any, values)
                }
                None => {
                    let status = NodeStatus::UnknownInstanceType;
                    let values = vec![
                        row[node].clone(),
                        row[instance_type].clone(),
                        Value::Null,
                        row[peak_out].clone(),
                        row[p99_out].clone(),
                        row[peak_in].clone(),
                        row[p99_in].clone(),
                        Value::Null,
                        json!(status.label()),
                        Value::Null,
                        Value::Null,
                    ];
                    (status, 0.0, peak_any, values)
                }
            }
        })
        .collect();
    judged.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.total_cmp(&a.1))
            .then(b.2.total_cmp(&a.2))
    });
    judged.into_iter().map(|(_, _, _, row)| row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distributed_flows_names_its_cluster() {
        assert_eq!(
            distributed_cluster(
                "Distributed('prod_cluster', 'metering', 'flows_local', cityHash64(protocol))"
            ),
            Some("prod_cluster".into())
        );
        assert_eq!(
            distributed_cluster("ReplacingMergeTree(generation) PARTITION BY x"),
            None
        );
    }
}
