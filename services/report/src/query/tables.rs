//! The SQL of every table of the report, as users can copy it, and its columns. Pure text from
//! the options and the plan; [`super::build`] runs it.
//!
//! Conventions of the SQL: every question starts from `traffic` ([`super::traffic`]); a top
//! list numbers its rows (`ranked`) and sums those past `--top` into one row whose first key is
//! `other`. Dollars are not rounded: a list's rows then add up to its total, and to the same
//! totals from the rollups (which store the sums of the same values); renderers round for
//! people. Ratios are rounded (3 or 4 decimals): they are not summed.

use crate::model::{Column, Kind};
use crate::options::{TimeRange, format_time};

use super::traffic::{Col, Context, EndpointFilter, Traffic, quote};

/// One table to run: what the report calls it, its SQL, and the columns the SQL returns.
#[derive(Clone, Debug)]
pub struct Spec {
    pub id: &'static str,
    pub title: &'static str,
    pub sql: String,
    pub columns: Vec<Column>,
}

fn column(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

/// What the tables depend on.
pub struct Inputs<'a> {
    pub context: Context<'a>,
    pub range: TimeRange,
    pub top: usize,
    pub bucket: u64,
}

impl Inputs<'_> {
    fn with_previous(&self) -> TimeRange {
        TimeRange {
            from: self.range.previous().from,
            to: self.range.to,
        }
    }

    fn from(&self) -> String {
        format_time(self.range.from)
    }

    fn cte(&self, traffic: Traffic) -> String {
        traffic.cte(&self.context)
    }
}

/// `ranked AS (...)`: the rows of `grouped` numbered by `order`.
fn ranked(order: &str) -> String {
    format!(
        "ranked AS\n(\n    SELECT *, row_number() OVER (ORDER BY {order}) AS rank\n    FROM grouped\n)"
    )
}

/// A key of a top list: its value in the first `top` rows; past them `other` for the first key,
/// '' for the others.
fn key(name: &str, top: usize, first: bool) -> String {
    let rest = if first { "other" } else { "" };
    format!("if(rank <= {top}, ranked.{name}, '{rest}') AS {name}")
}

/// The bytes of a row's own endpoint: sent (`out`) and received (`in`).
const SENT_RECEIVED: &str = "sumIf(bytes, direction = 'out') AS sent_bytes,
        sumIf(bytes, direction = 'in') AS received_bytes";

pub fn by_class(inputs: &Inputs) -> Spec {
    let traffic = Traffic {
        mirror: true,
        ..Traffic::flows(
            &[Col::Time, Col::Class, Col::Direction, Col::Bytes, Col::Cost],
            inputs.with_previous(),
        )
    };
    let from = inputs.from();
    Spec {
        id: "by_class",
        title: "Bytes and dollars by class",
        sql: format!(
            "WITH {traffic}
SELECT
    class,
    sumIf(bytes, time >= '{from}' AND direction = 'out') AS sent_bytes,
    sumIf(bytes, time >= '{from}' AND direction = 'in') AS received_bytes,
    sumIf(cost, time >= '{from}') AS cost_usd,
    sumIf(bytes, time < '{from}' AND direction = 'out') AS previous_sent_bytes,
    sumIf(bytes, time < '{from}' AND direction = 'in') AS previous_received_bytes,
    sumIf(cost, time < '{from}') AS previous_cost_usd
FROM traffic
GROUP BY class
ORDER BY cost_usd DESC, sent_bytes + received_bytes DESC, class",
            traffic = inputs.cte(traffic)
        ),
        columns: vec![
            column("class", Kind::Text),
            column("sent_bytes", Kind::Bytes),
            column("received_bytes", Kind::Bytes),
            column("cost_usd", Kind::Usd),
            column("previous_sent_bytes", Kind::Bytes),
            column("previous_received_bytes", Kind::Bytes),
            column("previous_cost_usd", Kind::Usd),
        ],
    }
}

pub fn cost_over_time(inputs: &Inputs) -> Spec {
    let traffic = Traffic {
        mirror: true,
        resolution: Some(inputs.bucket),
        ..Traffic::flows(
            &[Col::Time, Col::Class, Col::Bytes, Col::Cost],
            inputs.range,
        )
    };
    Spec {
        id: "cost_over_time",
        title: "Bytes and dollars over time",
        sql: format!(
            "WITH {traffic}
SELECT
    toStartOfInterval(time, INTERVAL {bucket} SECOND) AS bucket,
    class,
    sum(bytes) AS bytes,
    sum(cost) AS cost_usd
FROM traffic
GROUP BY bucket, class
ORDER BY bucket, class",
            traffic = inputs.cte(traffic),
            bucket = inputs.bucket
        ),
        columns: vec![
            column("bucket", Kind::Time),
            column("class", Kind::Text),
            column("bytes", Kind::Bytes),
            column("cost_usd", Kind::Usd),
        ],
    }
}

pub fn sankey(inputs: &Inputs) -> Spec {
    let traffic = Traffic {
        mirror: true,
        ..Traffic::flows(
            &[
                Col::Workload,
                Col::Class,
                Col::Peer,
                Col::Direction,
                Col::Bytes,
            ],
            inputs.range,
        )
    };
    let top = inputs.top;
    Spec {
        id: "sankey",
        title: "Who sends to whom",
        sql: format!(
            "WITH {traffic},
pairs AS
(
    SELECT workload AS source, class, peer AS destination, sum(bytes) AS pair_bytes
    FROM traffic
    WHERE direction = 'out'
    GROUP BY source, class, destination
),
totals AS
(
    SELECT *,
        sum(pair_bytes) OVER (PARTITION BY source) AS source_bytes,
        sum(pair_bytes) OVER (PARTITION BY destination) AS destination_bytes
    FROM pairs
),
ranked AS
(
    SELECT *,
        dense_rank() OVER (ORDER BY source_bytes DESC, source) AS source_rank,
        dense_rank() OVER (ORDER BY destination_bytes DESC, destination) AS destination_rank
    FROM totals
)
SELECT
    if(source_rank <= {top}, ranked.source, 'other') AS source,
    class,
    if(destination_rank <= {top}, ranked.destination, 'other') AS destination,
    sum(pair_bytes) AS bytes
FROM ranked
GROUP BY source, class, destination
ORDER BY bytes DESC, source, class, destination",
            traffic = inputs.cte(traffic)
        ),
        columns: vec![
            column("source", Kind::Text),
            column("class", Kind::Text),
            column("destination", Kind::Text),
            column("bytes", Kind::Bytes),
        ],
    }
}

pub fn zone_matrix(inputs: &Inputs) -> Spec {
    let traffic = Traffic {
        mirror: true,
        ..Traffic::flows(
            &[Col::Zone, Col::PeerZone, Col::Direction, Col::Bytes],
            inputs.range,
        )
    };
    Spec {
        id: "zone_matrix",
        title: "Bytes sent from zone to zone",
        sql: format!(
            "WITH {traffic}
SELECT zone AS local_zone, peer_zone AS remote_zone, sum(bytes) AS sent_bytes
FROM traffic
WHERE direction = 'out' AND zone != '' AND peer_zone != ''
GROUP BY local_zone, remote_zone
ORDER BY local_zone, remote_zone",
            traffic = inputs.cte(traffic)
        ),
        columns: vec![
            column("local_zone", Kind::Text),
            column("remote_zone", Kind::Text),
            column("sent_bytes", Kind::Bytes),
        ],
    }
}

pub fn top_pairs(inputs: &Inputs) -> Spec {
    let traffic = Traffic {
        scope: Some(
            "class IN ('INTER_ZONE', 'INTER_REGION', 'INTER_CLOUD')\n      \
             AND (remote_workload_name != '' OR remote_node != '')"
                .into(),
        ),
        ..Traffic::flows(
            &[
                Col::Workload,
                Col::Zone,
                Col::Peer,
                Col::PeerZone,
                Col::Class,
                Col::Direction,
                Col::Bytes,
                Col::Cost,
            ],
            inputs.range,
        )
    };
    let top = inputs.top;
    Spec {
        id: "top_pairs",
        title: "Workload pairs across zones and regions",
        sql: format!(
            "WITH {traffic},
grouped AS
(
    SELECT workload, zone, peer, peer_zone, class,
        {SENT_RECEIVED},
        sum(cost) AS pair_cost
    FROM traffic
    GROUP BY workload, zone, peer, peer_zone, class
),
{ranked}
SELECT
    {workload},
    {zone},
    {peer},
    {peer_zone},
    {class},
    sum(sent_bytes) AS sent_bytes,
    sum(received_bytes) AS received_bytes,
    sum(pair_cost) AS cost_usd
FROM ranked
GROUP BY workload, zone, peer, peer_zone, class
ORDER BY min(rank)",
            traffic = inputs.cte(traffic),
            ranked = ranked(
                "pair_cost DESC, sent_bytes + received_bytes DESC, workload, zone, peer, peer_zone, class"
            ),
            workload = key("workload", top, true),
            zone = key("zone", top, false),
            peer = key("peer", top, false),
            peer_zone = key("peer_zone", top, false),
            class = key("class", top, false),
        ),
        columns: vec![
            column("workload", Kind::Text),
            column("zone", Kind::Text),
            column("peer", Kind::Text),
            column("peer_zone", Kind::Text),
            column("class", Kind::Text),
            column("sent_bytes", Kind::Bytes),
            column("received_bytes", Kind::Bytes),
            column("cost_usd", Kind::Usd),
        ],
    }
}

pub fn destinations(inputs: &Inputs) -> Spec {
    let traffic = Traffic {
        scope: Some("(remote_service != '' OR class IN ('INTERNET', 'INTER_CLOUD'))".into()),
        ..Traffic::flows(
            &[
                Col::Workload,
                Col::Peer,
                Col::Class,
                Col::Direction,
                Col::Bytes,
                Col::Cost,
            ],
            inputs.range,
        )
    };
    let top = inputs.top;
    Spec {
        id: "destinations",
        title: "Cloud services and the internet, per workload",
        sql: format!(
            "WITH {traffic},
grouped AS
(
    SELECT workload, peer AS destination, class,
        {SENT_RECEIVED},
        sum(cost) AS destination_cost
    FROM traffic
    GROUP BY workload, destination, class
),
{ranked}
SELECT
    {workload},
    {destination},
    {class},
    sum(sent_bytes) AS sent_bytes,
    sum(received_bytes) AS received_bytes,
    sum(destination_cost) AS cost_usd
FROM ranked
GROUP BY workload, destination, class
ORDER BY min(rank)",
            traffic = inputs.cte(traffic),
            ranked = ranked(
                "destination_cost DESC, sent_bytes + received_bytes DESC, workload, destination, class"
            ),
            workload = key("workload", top, true),
            destination = key("destination", top, false),
            class = key("class", top, false),
        ),
        columns: vec![
            column("workload", Kind::Text),
            column("destination", Kind::Text),
            column("class", Kind::Text),
            column("sent_bytes", Kind::Bytes),
            column("received_bytes", Kind::Bytes),
            column("cost_usd", Kind::Usd),
        ],
    }
}

/// Internet egress: what our endpoints send to the internet and other clouds, with the
/// records' place and network, over the range and the previous period (for `new`).
fn internet_egress<'a>(inputs: &Inputs, columns: &'a [Col]) -> Traffic<'a> {
    Traffic {
        scope: Some("class IN ('INTERNET', 'INTER_CLOUD')".into()),
        ..Traffic::flows(columns, inputs.with_previous())
    }
}

/// Countries by the bytes sent to them; `new` when nothing was sent there in the previous
/// period. `workloads` of `other` counts each workload once, however many of its countries it
/// sent to.
pub fn egress_countries(inputs: &Inputs) -> Spec {
    let traffic = internet_egress(
        inputs,
        &[
            Col::Time,
            Col::Workload,
            Col::Country,
            Col::Direction,
            Col::Bytes,
            Col::Cost,
        ],
    );
    let from = inputs.from();
    let top = inputs.top;
    Spec {
        id: "countries",
        title: "Internet egress by country",
        sql: format!(
            "WITH {traffic},
grouped AS
(
    SELECT country,
        sumIf(bytes, time >= '{from}' AND direction = 'out') AS country_sent,
        sumIf(cost, time >= '{from}') AS country_cost,
        groupUniqArrayIf(workload, time >= '{from}' AND direction = 'out' AND bytes > 0)
            AS senders,
        sumIf(bytes, time < '{from}' AND direction = 'out') = 0 AS is_new
    FROM traffic
    GROUP BY country
    HAVING country_sent > 0
),
{ranked}
SELECT
    {country},
    sum(country_sent) AS sent_bytes,
    sum(country_cost) AS cost_usd,
    length(groupUniqArrayArray(senders)) AS workloads,
    toBool(max(is_new)) AS new
FROM ranked
GROUP BY country
ORDER BY min(rank)",
            traffic = inputs.cte(traffic),
            ranked = ranked("country_sent DESC, country"),
            country = key("country", top, true),
        ),
        columns: vec![
            column("country", Kind::Text),
            column("sent_bytes", Kind::Bytes),
            column("cost_usd", Kind::Usd),
            column("workloads", Kind::Count),
            column("new", Kind::Bool),
        ],
    }
}

/// Per workload, country and network (AS) it sent to: the bytes both ways and the dollars,
/// `new` when the workload sent nothing to that country and network in the previous period.
/// The `--top` rows are the largest senders with every new destination first in line: up to
/// N new destinations are always shown, however small; the rows are then shown by bytes sent.
pub fn egress_destinations(inputs: &Inputs) -> Spec {
    let traffic = internet_egress(
        inputs,
        &[
            Col::Time,
            Col::Workload,
            Col::Country,
            Col::Asn,
            Col::AsName,
            Col::Direction,
            Col::Bytes,
            Col::Cost,
            Col::ProcessingCost,
        ],
    );
    let from = inputs.from();
    let top = inputs.top;
    Spec {
        id: "destinations",
        title: "Internet egress per workload, country and network",
        sql: format!(
            "WITH {traffic},
grouped AS
(
    SELECT workload, country, asn,
        -- An AS keeps its name; an unknown one in some records is ''.
        max(as_name) AS network_name,
        sumIf(bytes, time >= '{from}' AND direction = 'out') AS destination_sent,
        sumIf(bytes, time >= '{from}' AND direction = 'in') AS destination_received,
        sumIf(cost, time >= '{from}') AS destination_cost,
        sumIf(processing_cost, time >= '{from}') AS destination_processing_cost,
        sumIf(bytes, time < '{from}' AND direction = 'out') = 0 AS is_new
    FROM traffic
    GROUP BY workload, country, asn
    HAVING destination_sent > 0
),
{ranked}
SELECT
    {workload},
    {country},
    if(rank <= {top}, ranked.asn, NULL) AS asn,
    if(rank <= {top}, network_name, '') AS as_name,
    sum(destination_sent) AS sent_bytes,
    sum(destination_received) AS received_bytes,
    sum(destination_cost) AS cost_usd,
    sum(destination_processing_cost) AS processing_cost_usd,
    toBool(max(is_new)) AS new
FROM ranked
GROUP BY workload, country, asn, as_name
ORDER BY workload = 'other', sent_bytes DESC, workload, country, asn",
            traffic = inputs.cte(traffic),
            ranked = ranked("is_new DESC, destination_sent DESC, workload, country, asn"),
            workload = key("workload", top, true),
            country = key("country", top, false),
        ),
        columns: vec![
            column("workload", Kind::Text),
            column("country", Kind::Text),
            column("asn", Kind::Count),
            column("as_name", Kind::Text),
            column("sent_bytes", Kind::Bytes),
            column("received_bytes", Kind::Bytes),
            column("cost_usd", Kind::Usd),
            column("processing_cost_usd", Kind::Usd),
            column("new", Kind::Bool),
        ],
    }
}

pub fn initiators(inputs: &Inputs) -> Spec {
    let traffic = Traffic {
        mirror: true,
        ..Traffic::flows(
            &[
                Col::Workload,
                Col::Initiated,
                Col::Connection,
                Col::Direction,
                Col::Bytes,
            ],
            inputs.range,
        )
    };
    let top = inputs.top;
    Spec {
        id: "workloads",
        title: "Who opens connections and who only receives",
        sql: format!(
            "WITH {traffic},
grouped AS
(
    SELECT workload,
        uniqExactIf(connection, initiated) AS opened,
        uniqExactIf(connection, NOT initiated) AS accepted,
        {SENT_RECEIVED},
        multiIf(opened > 0 AND accepted > 0, 'both',
                opened > 0, 'opens',
                sent_bytes * 100 < received_bytes, 'only receives',
                'accepts') AS role
    FROM traffic
    GROUP BY workload
),
{ranked}
SELECT
    {workload},
    {role},
    sum(opened) AS opened_connections,
    sum(accepted) AS accepted_connections,
    sum(sent_bytes) AS sent_bytes,
    sum(received_bytes) AS received_bytes
FROM ranked
GROUP BY workload, role
ORDER BY min(rank)",
            traffic = inputs.cte(traffic),
            ranked = ranked("sent_bytes + received_bytes DESC, workload"),
            workload = key("workload", top, true),
            role = key("role", top, false),
        ),
        columns: vec![
            column("workload", Kind::Text),
            column("role", Kind::Text),
            column("opened_connections", Kind::Count),
            column("accepted_connections", Kind::Count),
            column("sent_bytes", Kind::Bytes),
            column("received_bytes", Kind::Bytes),
        ],
    }
}

/// The common part of both balance tables: per client, server and backend pod, the connections
/// the client opened and their bytes (`backends`); the pods of each server seen in the range
/// (`replicas`); per client and server, the spread (`pairs`).
fn balance_ctes(inputs: &Inputs) -> String {
    let range = inputs.range;
    let time = format!(
        "interval_start >= '{}' AND interval_start < '{}'",
        format_time(range.from),
        format_time(range.to)
    );
    let cluster = inputs
        .context
        .filters
        .cluster
        .as_ref()
        .map(|c| format!(" AND cluster = {}", quote(c)))
        .unwrap_or_default();
    let db = inputs.context.database;
    // Both tables: records that are not in the detail yet, and the detail of what `flows` no
    // longer keeps (a pod seen twice counts once).
    let pods = ["flows", "connection_minutes"]
        .iter()
        .flat_map(|table| {
            ["local", "remote"].map(|side| {
                format!(
                    "        SELECT concat({side}_namespace, '/', {side}_workload_name) AS server, \
                     {side}_pod AS pod\n        FROM {db}.{table} FINAL\n        \
                     WHERE {time}{cluster} AND {side}_workload_name != '' AND {side}_pod != ''"
                )
            })
        })
        .collect::<Vec<_>>()
        .join("\n        UNION ALL\n");
    // The client's records of the connections it opened to a pod of a workload.
    let traffic = Traffic {
        scope: Some("local_initiated AND remote_workload_name != '' AND remote_pod != ''".into()),
        endpoint_filter: EndpointFilter::Either,
        ..Traffic::flows(
            &[
                Col::Workload,
                Col::Server,
                Col::Backend,
                Col::Connection,
                Col::Bytes,
            ],
            range,
        )
    };
    let traffic = inputs.cte(traffic);
    format!(
        "{traffic},
backends AS
(
    SELECT workload AS client, server, backend,
        uniqExact(connection) AS backend_connections,
        sum(bytes) AS backend_bytes
    FROM traffic
    GROUP BY client, server, backend
),
replicas AS
(
    SELECT server, uniqExact(pod) AS server_pods
    FROM
    (
{pods}
    )
    GROUP BY server
),
pairs AS
(
    SELECT client, server,
        count() AS backends,
        sum(backend_connections) AS connections,
        max(backend_connections) AS max_backend_connections,
        min(backend_connections) AS min_backend_connections,
        round(max(backend_connections) / avg(backend_connections), 3) AS imbalance_ratio,
        if(avg(backend_bytes) = 0, NULL, round(max(backend_bytes) / avg(backend_bytes), 3))
            AS bytes_imbalance_ratio
    FROM backends
    GROUP BY client, server
),
shown AS
(
    SELECT pairs.*, replicas.server_pods AS server_pods
    FROM pairs
    INNER JOIN replicas ON pairs.server = replicas.server
    WHERE replicas.server_pods > 1
    ORDER BY imbalance_ratio DESC, connections DESC, client, server
    LIMIT {top}
)",
        top = inputs.top
    )
}

pub fn imbalance(inputs: &Inputs) -> Spec {
    Spec {
        id: "imbalance",
        title: "Connections of each client across the replicas of its server",
        sql: format!(
            "WITH {ctes}
SELECT client, server, backends, connections, max_backend_connections, min_backend_connections,
    imbalance_ratio, bytes_imbalance_ratio, server_pods
FROM shown
ORDER BY imbalance_ratio DESC, connections DESC, client, server",
            ctes = balance_ctes(inputs)
        ),
        columns: vec![
            column("client", Kind::Text),
            column("server", Kind::Text),
            column("backends", Kind::Count),
            column("connections", Kind::Count),
            column("max_backend_connections", Kind::Count),
            column("min_backend_connections", Kind::Count),
            column("imbalance_ratio", Kind::Ratio),
            column("bytes_imbalance_ratio", Kind::Ratio),
            column("server_pods", Kind::Count),
        ],
    }
}

pub fn backends(inputs: &Inputs) -> Spec {
    Spec {
        id: "backends",
        title: "Connections and bytes per backend pod",
        sql: format!(
            "WITH {ctes}
SELECT client, server, backend, backend_connections AS connections, backend_bytes AS bytes
FROM backends
WHERE (client, server) IN (SELECT client, server FROM shown)
ORDER BY client, server, connections DESC, backend",
            ctes = balance_ctes(inputs)
        ),
        columns: vec![
            column("client", Kind::Text),
            column("server", Kind::Text),
            column("backend", Kind::Text),
            column("connections", Kind::Count),
            column("bytes", Kind::Bytes),
        ],
    }
}

/// The per-node, per-interval throughput both throughput tables start from. INTRA_NODE traffic
/// does not cross the node's network interface and is left out.
fn node_intervals(inputs: &Inputs, nodes: Option<&[String]>) -> String {
    let mut scope = "class != 'INTRA_NODE' AND interval_seconds > 0".to_string();
    if let Some(nodes) = nodes {
        let list: Vec<String> = nodes.iter().map(|n| quote(n)).collect();
        scope.push_str(&format!("\n      AND local_node IN ({})", list.join(", ")));
    }
    let traffic = Traffic {
        scope: Some(scope),
        endpoint_filter: EndpointFilter::Ignored,
        ..Traffic::flows(
            &[
                Col::Node,
                Col::InstanceType,
                Col::IntervalStart,
                Col::IntervalSeconds,
                Col::Direction,
                Col::Bytes,
            ],
            inputs.range,
        )
    };
    // A class filter narrows questions about traffic, not a node's interface.
    let context = Context {
        filters: &crate::model::Filters {
            cluster: inputs.context.filters.cluster.clone(),
            ..Default::default()
        },
        ..inputs.context.clone()
    };
    format!(
        "{traffic},
intervals AS
(
    SELECT node, interval_start,
        sumIf(bytes, direction = 'out') * 8 / interval_seconds AS out_bps,
        sumIf(bytes, direction = 'in') * 8 / interval_seconds AS in_bps,
        max(instance_type) AS interval_instance_type
    FROM traffic
    GROUP BY node, interval_start, interval_seconds
)",
        traffic = traffic.cte(&context)
    )
}

/// Per node, the peak and p99 of its interval throughputs; the bandwidth columns and the status
/// are added from the instance bandwidth table ([`crate::bandwidth`]).
pub fn nodes(inputs: &Inputs) -> Spec {
    Spec {
        id: "nodes",
        title: "Node throughput against the instance's bandwidth",
        sql: format!(
            "WITH {intervals}
SELECT
    node,
    max(interval_instance_type) AS instance_type,
    max(out_bps) AS peak_out_bps,
    quantileExact(0.99)(out_bps) AS p99_out_bps,
    max(in_bps) AS peak_in_bps,
    quantileExact(0.99)(in_bps) AS p99_in_bps
FROM intervals
GROUP BY node
ORDER BY greatest(peak_out_bps, peak_in_bps) DESC, node",
            intervals = node_intervals(inputs, None)
        ),
        columns: vec![
            column("node", Kind::Text),
            column("instance_type", Kind::Text),
            column("bandwidth_bps", Kind::BitsPerSecond),
            column("peak_out_bps", Kind::BitsPerSecond),
            column("p99_out_bps", Kind::BitsPerSecond),
            column("peak_in_bps", Kind::BitsPerSecond),
            column("p99_in_bps", Kind::BitsPerSecond),
            column("peak_utilization", Kind::Fraction),
            column("status", Kind::Text),
            column("burst_bandwidth_bps", Kind::BitsPerSecond),
            column("p99_utilization", Kind::Fraction),
        ],
    }
}

pub fn node_over_time(inputs: &Inputs, nodes: &[String]) -> Spec {
    Spec {
        id: "node_over_time",
        title: "Node throughput over time (the busiest interval of each bucket)",
        sql: format!(
            "WITH {intervals}
SELECT
    toStartOfInterval(toDateTime(interval_start, 'UTC'), INTERVAL {bucket} SECOND) AS bucket,
    node,
    max(out_bps) AS out_bps,
    max(in_bps) AS in_bps
FROM intervals
GROUP BY bucket, node
ORDER BY bucket, node",
            intervals = node_intervals(inputs, Some(nodes)),
            bucket = inputs.bucket
        ),
        columns: vec![
            column("bucket", Kind::Time),
            column("node", Kind::Text),
            column("out_bps", Kind::BitsPerSecond),
            column("in_bps", Kind::BitsPerSecond),
        ],
    }
}

pub fn namespaces_by_day(inputs: &Inputs) -> Spec {
    let traffic = Traffic {
        resolution: Some(86_400),
        ..Traffic::flows(&[Col::Time, Col::Namespace, Col::Cost], inputs.range)
    };
    let top = inputs.top;
    Spec {
        id: "namespaces",
        title: "Cost by namespace and day",
        sql: format!(
            "WITH {traffic},
grouped AS
(
    SELECT toStartOfDay(time) AS day, namespace, sum(cost) AS day_cost
    FROM traffic
    GROUP BY day, namespace
),
ranked AS
(
    SELECT *, dense_rank() OVER (ORDER BY namespace_cost DESC, namespace) AS rank
    FROM (SELECT *, sum(day_cost) OVER (PARTITION BY namespace) AS namespace_cost FROM grouped)
    WHERE namespace_cost != 0
)
SELECT day, {namespace}, sum(day_cost) AS cost_usd
FROM ranked
GROUP BY day, namespace
ORDER BY day, min(rank)",
            traffic = inputs.cte(traffic),
            namespace = key("namespace", top, true),
        ),
        columns: vec![
            column("day", Kind::Time),
            column("namespace", Kind::Text),
            column("cost_usd", Kind::Usd),
        ],
    }
}

pub fn workloads_by_day(inputs: &Inputs) -> Spec {
    let traffic = Traffic::flows(
        &[Col::Time, Col::Namespace, Col::Workload, Col::Cost],
        inputs.range,
    );
    let top = inputs.top;
    Spec {
        id: "workloads",
        title: "Cost by workload and day",
        sql: format!(
            "WITH {traffic},
grouped AS
(
    SELECT toStartOfDay(time) AS day, namespace, workload, sum(cost) AS day_cost
    FROM traffic
    GROUP BY day, namespace, workload
),
ranked AS
(
    SELECT *, dense_rank() OVER (ORDER BY workload_cost DESC, namespace, workload) AS rank
    FROM
    (
        SELECT *, sum(day_cost) OVER (PARTITION BY namespace, workload) AS workload_cost
        FROM grouped
    )
    WHERE workload_cost != 0
)
SELECT day, {namespace}, {workload}, sum(day_cost) AS cost_usd
FROM ranked
GROUP BY day, namespace, workload
ORDER BY day, min(rank)",
            traffic = inputs.cte(traffic),
            namespace = key("namespace", top, true),
            workload = key("workload", top, false),
        ),
        columns: vec![
            column("day", Kind::Time),
            column("namespace", Kind::Text),
            column("workload", Kind::Text),
            column("cost_usd", Kind::Usd),
        ],
    }
}

/// The change of cost against the previous period, per `keys` (namespace, or namespace and
/// workload); `id` and `title` name the table.
fn change(inputs: &Inputs, id: &'static str, title: &'static str, per_workload: bool) -> Spec {
    let columns: &[Col] = if per_workload {
        &[Col::Time, Col::Namespace, Col::Workload, Col::Cost]
    } else {
        &[Col::Time, Col::Namespace, Col::Cost]
    };
    let traffic = Traffic::flows(columns, inputs.with_previous());
    let keys = if per_workload {
        "namespace, workload"
    } else {
        "namespace"
    };
    let mut key_columns = vec![key("namespace", inputs.top, true)];
    if per_workload {
        key_columns.push(key("workload", inputs.top, false));
    }
    let from = inputs.from();
    let mut table_columns = vec![column("namespace", Kind::Text)];
    if per_workload {
        table_columns.push(column("workload", Kind::Text));
    }
    table_columns.extend([
        column("cost_usd", Kind::Usd),
        column("previous_cost_usd", Kind::Usd),
        column("change_usd", Kind::Usd),
        column("change_ratio", Kind::Ratio),
    ]);
    Spec {
        id,
        title,
        sql: format!(
            "WITH {traffic},
grouped AS
(
    SELECT {keys},
        sumIf(cost, time >= '{from}') AS current_cost,
        sumIf(cost, time < '{from}') AS previous_cost
    FROM traffic
    GROUP BY {keys}
    HAVING current_cost != 0 OR previous_cost != 0
),
{ranked}
SELECT
    {key_columns},
    sum(current_cost) AS cost_usd,
    sum(previous_cost) AS previous_cost_usd,
    sum(current_cost) - sum(previous_cost) AS change_usd,
    if(sum(previous_cost) = 0, NULL,
       round((sum(current_cost) - sum(previous_cost)) / sum(previous_cost), 4)) AS change_ratio
FROM ranked
GROUP BY {keys}
ORDER BY min(rank)",
            traffic = inputs.cte(traffic),
            ranked = ranked(&format!("abs(current_cost - previous_cost) DESC, {keys}")),
            key_columns = key_columns.join(",\n    "),
        ),
        columns: table_columns,
    }
}

pub fn workload_change(inputs: &Inputs) -> Spec {
    change(
        inputs,
        "change",
        "Cost against the previous period, per workload",
        true,
    )
}

pub fn namespace_change(inputs: &Inputs) -> Spec {
    change(
        inputs,
        "namespace_change",
        "Cost against the previous period, per namespace",
        false,
    )
}
