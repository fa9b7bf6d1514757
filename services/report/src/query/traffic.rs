//! `traffic`: the common table expression every question starts from. One row per record and
//! endpoint side, with the columns a question needs, read from the tables the [`plan`] picks
//! for each part of the range, filtered by the report's filters.
//!
//! # Sides
//!
//! Each node records its own side of a connection: `direction` `out` is what the local endpoint
//! sent, `in` what it received. A connection between two nodes is recorded on both, so every
//! endpoint of ours has its own rows. A connection within one node is recorded once, from its
//! source's side: the destination (also ours) has no rows. With `mirror`, `traffic` adds them:
//! each `INTRA_NODE` record once more, seen from the remote endpoint (local and remote swapped,
//! `in` and `out` swapped, the initiator negated, no cost: the record's cost stays with its
//! side). Then every endpoint's sent and received bytes and connections are complete, and the
//! sums over all endpoints count each byte once as sent and once as received.

use crate::model::Filters;
use crate::options::TimeRange;

use super::plan::{Coverage, Piece, Source, plan};

/// `namespace/workload`, or `node <name>` for an endpoint that no workload owns (node processes
/// and hostNetwork pods, which use the node's address), for side `local` or `remote`.
pub fn endpoint_name(side: &str) -> String {
    format!(
        "if({side}_workload_name != '', concat({side}_namespace, '/', {side}_workload_name), \
         concat('node ', {side}_node))"
    )
}

/// The remote endpoint as people name it: a workload or node of the cluster, a cloud service
/// (`S3 (eu-west-1)`), a network of the rules file, `internet`, a cloud region, or the class.
pub const PEER_NAME: &str = "multiIf(remote_workload_name != '', concat(remote_namespace, '/', remote_workload_name),
            remote_node != '', concat('node ', remote_node),
            remote_service != '', concat(remote_service, if(remote_region != '', concat(' (', remote_region, ')'), '')),
            remote_network != '', remote_network,
            class = 'INTERNET', 'internet',
            remote_cloud != '', concat(remote_cloud, if(remote_region != '', concat(' ', remote_region), '')),
            lower(class))";

/// A column of `traffic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    /// `time`: the start of the record's interval, or of the rollup bucket (`DateTime('UTC')`).
    Time,
    /// The record's own `interval_start` and `interval_seconds` (flows only).
    IntervalStart,
    IntervalSeconds,
    Class,
    Direction,
    /// The endpoint's namespace, `(nodes)` for node processes and hostNetwork pods.
    Namespace,
    /// The endpoint's name ([`endpoint_name`]).
    Workload,
    Zone,
    /// The other endpoint's name ([`PEER_NAME`]).
    Peer,
    PeerZone,
    /// The remote workload (`namespace/workload`) and pod: a server and one of its replicas.
    Server,
    Backend,
    Node,
    InstanceType,
    /// The endpoint opened the connection.
    Initiated,
    /// (protocol, local address and port, remote address and port): one connection.
    Connection,
    Bytes,
    /// `cost`: the record's `cost_usd`.
    Cost,
    /// The remote address's country (ISO 3166-1 alpha-2), `unknown` when the attributor did
    /// not know it (private addresses, no geolocation data).
    Country,
    /// The remote address's autonomous system: its number (0: unknown) and name.
    Asn,
    AsName,
    /// `processing_cost`: the record's `processing_cost_usd`, the part of `cost` that the
    /// egress path (a NAT gateway) charges for processing.
    ProcessingCost,
}

impl Col {
    pub fn alias(self) -> &'static str {
        match self {
            Col::Time => "time",
            Col::IntervalStart => "interval_start",
            Col::IntervalSeconds => "interval_seconds",
            Col::Class => "class",
            Col::Direction => "direction",
            Col::Namespace => "namespace",
            Col::Workload => "workload",
            Col::Zone => "zone",
            Col::Peer => "peer",
            Col::PeerZone => "peer_zone",
            Col::Server => "server",
            Col::Backend => "backend",
            Col::Node => "node",
            Col::InstanceType => "instance_type",
            Col::Initiated => "initiated",
            Col::Connection => "connection",
            Col::Bytes => "bytes",
            Col::Cost => "cost",
            Col::Country => "country",
            Col::Asn => "asn",
            Col::AsName => "as_name",
            Col::ProcessingCost => "processing_cost",
        }
    }

    /// Whether `connection_minutes` holds it: all but a record's exact interval.
    pub fn in_connection_minutes(self) -> bool {
        !matches!(self, Col::IntervalStart | Col::IntervalSeconds)
    }

    /// Whether the rollups hold it.
    pub fn in_rollups(self) -> bool {
        matches!(
            self,
            Col::Time
                | Col::Class
                | Col::Direction
                | Col::Namespace
                | Col::Zone
                | Col::PeerZone
                | Col::Bytes
                | Col::Cost
        )
    }

    /// Its expression on `source`, for the recorded side or (`mirrored`) the other endpoint of
    /// an `INTRA_NODE` record.
    fn expression(self, source: Source, mirrored: bool) -> String {
        let (local, remote) = if mirrored {
            ("remote", "local")
        } else {
            ("local", "remote")
        };
        match self {
            Col::Time if source.is_rollup() => "interval_start".into(),
            Col::Time => "toDateTime(interval_start, 'UTC')".into(),
            Col::IntervalStart => "interval_start".into(),
            Col::IntervalSeconds => "interval_seconds".into(),
            Col::Class => "class".into(),
            Col::Direction if mirrored => "if(direction = 'out', 'in', 'out')".into(),
            Col::Direction => "direction".into(),
            Col::Namespace => {
                format!("if({local}_namespace != '', {local}_namespace, '(nodes)')")
            }
            Col::Workload => endpoint_name(local),
            Col::Zone => format!("{local}_zone"),
            Col::Peer if mirrored => endpoint_name("local"),
            Col::Peer => PEER_NAME.into(),
            Col::PeerZone => format!("{remote}_zone"),
            Col::Server => format!("concat({remote}_namespace, '/', {remote}_workload_name)"),
            Col::Backend => format!("{remote}_pod"),
            // Within one node both endpoints share the node.
            Col::Node => "local_node".into(),
            Col::InstanceType => "local_instance_type".into(),
            Col::Initiated if mirrored => "NOT local_initiated".into(),
            Col::Initiated => "local_initiated".into(),
            Col::Connection => {
                format!("(protocol, {local}_ip, {local}_port, {remote}_ip, {remote}_port)")
            }
            Col::Bytes => "bytes".into(),
            Col::Cost if mirrored => "toFloat64(0)".into(),
            Col::Cost => "cost_usd".into(),
            // The other endpoint of a connection within a node is ours: no place, no network.
            Col::Country if mirrored => "'unknown'".into(),
            Col::Country => "if(remote_country != '', remote_country, 'unknown')".into(),
            Col::Asn if mirrored => "toUInt32(0)".into(),
            Col::Asn => "remote_asn".into(),
            Col::AsName if mirrored => "''".into(),
            Col::AsName => "remote_as_name".into(),
            Col::ProcessingCost if mirrored => "toFloat64(0)".into(),
            Col::ProcessingCost => "processing_cost_usd".into(),
        }
    }
}

/// Which endpoint the namespace and workload filters select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointFilter {
    /// The row's own endpoint (the local side, or the remote one in a mirrored row).
    Own,
    /// Either endpoint of the record (a workload's clients and its servers).
    Either,
    /// None: node throughput is about the whole node.
    Ignored,
}

/// What a question reads.
#[derive(Clone, Debug)]
pub struct Traffic<'a> {
    pub columns: &'a [Col],
    pub range: TimeRange,
    /// The time bucket the question groups by, seconds; None if it does not group by time.
    pub resolution: Option<u64>,
    /// Add the other endpoint of `INTRA_NODE` records (module documentation).
    pub mirror: bool,
    /// More conditions on `flows` columns, for the recorded side only (a question with a scope
    /// reads `flows` and does not mirror).
    pub scope: Option<String>,
    pub endpoint_filter: EndpointFilter,
}

/// What every question shares: the database, filters and which rollups are complete.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub database: &'a str,
    pub filters: &'a Filters,
    /// Rollup coverage of the report's range and of the previous period.
    pub coverage: Coverage,
    pub coverage_previous: Coverage,
    /// The report's range, to tell which coverage applies.
    pub range: TimeRange,
}

impl Traffic<'_> {
    /// A question that reads `flows` only, over `range`, with the report's filters on its own
    /// endpoint and no mirror.
    pub fn flows(columns: &[Col], range: TimeRange) -> Traffic<'_> {
        Traffic {
            columns,
            range,
            resolution: None,
            mirror: false,
            scope: None,
            endpoint_filter: EndpointFilter::Own,
        }
    }

    /// The pieces of the range and their tables. A range with the previous period is planned
    /// a period at a time: a question that compares the periods splits time at the report's
    /// start, which no rollup bucket may straddle.
    pub fn pieces(&self, context: &Context) -> Vec<Piece> {
        let rollups_hold_it = self.columns.iter().all(|c| c.in_rollups())
            && self.scope.is_none()
            && self.endpoint_filter == EndpointFilter::Own;
        let detail_holds_it = self.columns.iter().all(|c| c.in_connection_minutes());
        // The tables that hold every column the question reads.
        let usable = |coverage: &Coverage| {
            if rollups_hold_it {
                *coverage
            } else if detail_holds_it {
                Coverage {
                    connection: coverage.connection,
                    ..Coverage::default()
                }
            } else {
                Coverage::default()
            }
        };
        let (current, before) = (
            usable(&context.coverage),
            usable(&context.coverage_previous),
        );
        let (range, previous) = (context.range, context.range.previous());
        if self.range == range {
            plan(range, &current, self.resolution)
        } else if self.range.to == range.to && self.range.from == previous.from {
            let mut pieces = plan(previous, &before, self.resolution);
            for piece in plan(range, &current, self.resolution) {
                // Both end on a bucket of their table: one piece reads the same rows.
                match pieces.last_mut() {
                    Some(last) if last.source == piece.source && last.to == piece.from => {
                        last.to = piece.to;
                    }
                    _ => pieces.push(piece),
                }
            }
            pieces
        } else {
            plan(self.range, &Coverage::default(), self.resolution)
        }
    }

    /// `traffic AS (...)`, to follow `WITH`.
    pub fn cte(&self, context: &Context) -> String {
        let class_filter = context.filters.class.as_deref();
        let mirror = self.mirror && class_filter.is_none_or(|c| c == "INTRA_NODE");
        let mut branches = Vec::new();
        for piece in self.pieces(context) {
            branches.push(self.branch(context, piece, false));
            if mirror {
                branches.push(self.branch(context, piece, true));
            }
        }
        format!("traffic AS\n(\n{}\n)", branches.join("\n    UNION ALL\n"))
    }

    fn branch(&self, context: &Context, piece: Piece, mirrored: bool) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let expression = c.expression(piece.source, mirrored);
                if expression == c.alias() {
                    expression
                } else {
                    format!("{expression} AS {}", c.alias())
                }
            })
            .collect();
        let mut conditions = vec![
            format!(
                "interval_start >= '{}'",
                crate::options::format_time(piece.from)
            ),
            format!(
                "interval_start < '{}'",
                crate::options::format_time(piece.to)
            ),
        ];
        let filters = context.filters;
        if let Some(cluster) = &filters.cluster {
            conditions.push(format!("cluster = {}", quote(cluster)));
        }
        if mirrored {
            conditions.push("class = 'INTRA_NODE'".into());
        } else if let Some(class) = &filters.class {
            conditions.push(format!("class = {}", quote(class)));
        }
        let side = if mirrored { "remote" } else { "local" };
        match self.endpoint_filter {
            EndpointFilter::Own => conditions.extend(endpoint_conditions(filters, side)),
            EndpointFilter::Either => {
                let local = endpoint_conditions(filters, "local");
                let remote = endpoint_conditions(filters, "remote");
                if !local.is_empty() {
                    conditions.push(format!(
                        "(({}) OR ({}))",
                        local.join(" AND "),
                        remote.join(" AND ")
                    ));
                }
            }
            EndpointFilter::Ignored => {}
        }
        if !mirrored && let Some(scope) = &self.scope {
            conditions.push(scope.clone());
        }
        let comment = if mirrored {
            "    -- the other endpoint of connections within a node, recorded once from the source's side\n"
        } else {
            ""
        };
        format!(
            "{comment}    SELECT {}\n    FROM {}.{} FINAL\n    WHERE {}",
            columns.join(",\n           "),
            context.database,
            piece.source.table(),
            conditions.join("\n      AND ")
        )
    }
}

/// The namespace and workload filters on `side` (`local`, `remote`).
fn endpoint_conditions(filters: &Filters, side: &str) -> Vec<String> {
    let mut conditions = Vec::new();
    if let Some(namespace) = &filters.namespace {
        conditions.push(format!("{side}_namespace = {}", quote(namespace)));
    }
    if let Some(workload) = &filters.workload {
        match workload.split_once('/') {
            Some((namespace, name)) => {
                conditions.push(format!("{side}_namespace = {}", quote(namespace)));
                conditions.push(format!("{side}_workload_name = {}", quote(name)));
            }
            None => conditions.push(format!("{side}_workload_name = {}", quote(workload))),
        }
    }
    conditions
}

/// A single-quoted SQL string literal.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::plan::RollupState;

    fn context(filters: &Filters, range: TimeRange) -> Context<'_> {
        let complete = Some(RollupState {
            earliest: Some(0),
            pending_from: None,
        });
        let coverage = Coverage {
            connection: complete,
            minute: complete,
            hour: complete,
        };
        Context {
            database: "netmeter",
            filters,
            coverage,
            coverage_previous: coverage,
            range,
        }
    }

    #[test]
    fn rollup_questions_read_the_rollup_and_mirror_intra_node_records() {
        let range = TimeRange {
            from: 36_000,
            to: 43_200,
        };
        let filters = Filters {
            namespace: Some("shop".into()),
            ..Filters::default()
        };
        let traffic = Traffic {
            mirror: true,
            ..Traffic::flows(&[Col::Class, Col::Direction, Col::Bytes], range)
        };
        assert_eq!(
            traffic.cte(&context(&filters, range)),
            "traffic AS
(
    SELECT class,
           direction,
           bytes
    FROM netmeter.flows_per_hour FINAL
    WHERE interval_start >= '1970-01-01 10:00:00'
      AND interval_start < '1970-01-01 12:00:00'
      AND local_namespace = 'shop'
    UNION ALL
    -- the other endpoint of connections within a node, recorded once from the source's side
    SELECT class,
           if(direction = 'out', 'in', 'out') AS direction,
           bytes
    FROM netmeter.flows_per_hour FINAL
    WHERE interval_start >= '1970-01-01 10:00:00'
      AND interval_start < '1970-01-01 12:00:00'
      AND class = 'INTRA_NODE'
      AND remote_namespace = 'shop'
)"
        );
    }

    #[test]
    fn workload_questions_read_the_detail_and_quote_filters() {
        let range = TimeRange {
            from: 36_000,
            to: 43_200,
        };
        let filters = Filters {
            workload: Some("sh'op/web".into()),
            class: Some("INTER_ZONE".into()),
            ..Filters::default()
        };
        let traffic = Traffic {
            mirror: true,
            ..Traffic::flows(&[Col::Workload, Col::Bytes], range)
        };
        let sql = traffic.cte(&context(&filters, range));
        assert!(
            sql.contains("FROM netmeter.connection_minutes FINAL"),
            "{sql}"
        );
        assert!(
            !sql.contains("UNION ALL"),
            "INTER_ZONE has no mirror: {sql}"
        );
        assert!(sql.contains("local_namespace = 'sh\\'op'"), "{sql}");
        assert!(sql.contains("AND class = 'INTER_ZONE'"), "{sql}");
        // A record's own interval is in flows only.
        let intervals = Traffic::flows(&[Col::IntervalStart, Col::Bytes], range);
        let sql = intervals.cte(&context(&filters, range));
        assert!(sql.contains("FROM netmeter.flows FINAL"), "{sql}");
        assert!(!sql.contains("connection_minutes"), "{sql}");
    }
}
