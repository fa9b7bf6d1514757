//! What a report is, independent of how it is shown: sections (one per question), each with
//! tables that carry the SQL that produced them. The terminal, JSON, CSV and HTML forms all
//! render this one value; the HTML page embeds it as JSON and draws its charts from the tables
//! named below, so the table ids and column names are a contract between `query` and `html`.
//!
//! Sections and their tables (`section id` / `table id`: columns). Workloads are named
//! `namespace/workload`, or `node <name>` for node processes and hostNetwork pods.
//! - `overview` — bytes and dollars by class, against the previous period of the same length
//!   - `by_class`: class, sent_bytes, received_bytes, cost_usd, previous_sent_bytes,
//!     previous_received_bytes, previous_cost_usd — per endpoint of ours: a byte between two of
//!     our endpoints is sent by one and received by the other (both columns), also within a
//!     node, where only the source records it
//!   - `cost_over_time`: bucket (time text `YYYY-MM-DD hh:mm:ss`, UTC), class, bytes
//!     (sent + received, as in `by_class`), cost_usd — one row per bucket and class with data;
//!     the bucket size is in [`Report::bucket`]
//!   - `sankey`: source (workload), class, destination (workload, node, service such as
//!     `S3 (eu-west-1)`, `internet`, ...), bytes — sent bytes; the top N sources and the top N
//!     destinations, the others as `other` (a name can be both a source and a destination)
//! - `cross_zone` — question 1
//!   - `zone_matrix`: local_zone, remote_zone, sent_bytes (every pair of zones with traffic)
//!   - `top_pairs`: workload, zone, peer, peer_zone, class, sent_bytes, received_bytes, cost_usd
//!     (classes INTER_ZONE, INTER_REGION, INTER_CLOUD between workloads, each pair once from
//!     each side; top N by cost, then `other`)
//! - `egress` — question 2
//!   - `destinations`: workload, destination, class, sent_bytes, received_bytes, cost_usd
//!     (cloud services and the internet; top N by cost, then `other`)
//! - `egress_destinations` — where internet egress goes: bytes sent to the internet and to
//!   other clouds (classes INTERNET and INTER_CLOUD), by the remote address's country and
//!   network, from `flows` only (the rollups hold no place). `new` compares with the previous
//!   period of the same length, under the same filters.
//!   - `countries`: country (ISO 3166-1 alpha-2, `unknown` when not located), sent_bytes,
//!     cost_usd (every record with that country, both directions), workloads (distinct
//!     workloads that sent there), new (nothing sent to that country in the previous period) —
//!     every country sent to, by sent_bytes; top N, then `other` (its workloads counted once,
//!     its new true if it sums a new country)
//!   - `destinations`: workload, country, asn (0: unknown network), as_name ('' unknown),
//!     sent_bytes, received_bytes, cost_usd, processing_cost_usd (the part of cost_usd that
//!     the egress path, such as a NAT gateway, charged for processing), new (the workload sent
//!     nothing to that country and asn in the previous period) — the (workload, country, asn)
//!     the workload sent to; N rows chosen new first, then by sent_bytes, so that up to N new
//!     destinations are always shown; shown by sent_bytes, then `other` (asn null; new when
//!     it sums a new destination: more than N were new)
//! - `initiators` — question 3
//!   - `workloads`: workload, role (`opens`: opened connections and accepted none; `accepts`:
//!     the reverse; `both`; `only receives`: accepted only and sent less than 1% of what it
//!     received), opened_connections, accepted_connections, sent_bytes, received_bytes (top N by
//!     bytes, then `other` with role '')
//! - `balance` — question 4
//!   - `imbalance`: client, server, backends, connections, max_backend_connections,
//!     min_backend_connections, imbalance_ratio (max / mean connections over the backends the
//!     client reached), bytes_imbalance_ratio, server_pods (pods of the server seen in the
//!     range) — servers with more than one pod, the N most imbalanced pairs
//!   - `backends`: client, server, backend, connections, bytes (the pairs of `imbalance`)
//! - `throughput` — question 5
//!   - `nodes`: node, instance_type, bandwidth_bps (the published baseline; null when
//!     unknown), peak_out_bps, p99_out_bps, peak_in_bps, p99_in_bps, peak_utilization (peak /
//!     baseline: above 1 while bursting; null when unknown), status (`ok`, `watch`, `at risk`,
//!     `unknown instance type`), burst_bandwidth_bps, p99_utilization — the N most loaded
//!     nodes, at risk first (see `bandwidth` for the rule)
//!   - `node_over_time`: bucket, node, out_bps, in_bps — the busiest collection interval of the
//!     bucket, for the nodes of `nodes`
//! - `cost_by_day` — question 6
//!   - `namespaces`: day (time text at 00:00:00), namespace, cost_usd (`(nodes)`: node
//!     processes and hostNetwork pods; top N namespaces, then `other`)
//!   - `workloads`: day, namespace, workload, cost_usd (top N workloads, then `other`)
//!   - `change`: namespace, workload, cost_usd, previous_cost_usd, change_usd, change_ratio
//!     (null when the previous period cost nothing; the N largest changes, then `other`)
//!   - `namespace_change`: namespace, cost_usd, previous_cost_usd, change_usd, change_ratio
//!
//! Value conventions: `*_bps` columns are bits per second (a node's bytes in a collection
//! interval x 8 / the interval's seconds); bytes and connection counts are JSON integers,
//! dollars (not rounded: rows add up to totals) and rates numbers, text is text, flags are
//! JSON booleans, unknown is `null`; `asn` is a count shown without thousands separators. A row
//! whose first text column is `other` sums the rows the `--top` limit left out; its other text
//! columns are empty.

use serde::Serialize;

/// A finished report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When it was made (RFC 3339, UTC).
    pub generated_at: String,
    /// The range `[from, to)`, as `YYYY-MM-DD hh:mm:ss` UTC.
    pub from: String,
    pub to: String,
    /// The previous period of the same length: `[previous_from, from)`.
    pub previous_from: String,
    /// The size of the time buckets of `*_over_time` tables, in seconds.
    pub bucket: u64,
    pub filters: Filters,
    pub sections: Vec<Section>,
}

/// What the report was narrowed to; `None` is everything.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Filters {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub workload: Option<String>,
    pub class: Option<String>,
}

/// One question and its answer.
#[derive(Clone, Debug, Serialize)]
pub struct Section {
    pub id: &'static str,
    pub title: String,
    /// The question as users ask it.
    pub question: String,
    /// How to read the answer (caveats, what to do about it).
    pub note: String,
    pub tables: Vec<Table>,
}

/// One result set.
#[derive(Clone, Debug, Serialize)]
pub struct Table {
    pub id: &'static str,
    pub title: String,
    /// The SQL that produced it, as users can run it.
    pub sql: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// A column and how to show its values.
#[derive(Clone, Debug, Serialize)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Text,
    /// A time, `YYYY-MM-DD hh:mm:ss` UTC.
    Time,
    Bytes,
    /// Bits per second (the unit of instance bandwidth): every `*_bps` column.
    BitsPerSecond,
    Usd,
    Count,
    /// A plain ratio such as 1.8 (max / mean).
    Ratio,
    /// A fraction 0..1 shown as a percentage.
    Fraction,
    /// A JSON boolean (`new`), shown `yes` or `no`.
    Bool,
}

impl Report {
    /// Table `id` of section `section` (table ids repeat across sections).
    pub fn table(&self, section: &str, id: &str) -> Option<&Table> {
        self.sections
            .iter()
            .find(|s| s.id == section)?
            .tables
            .iter()
            .find(|t| t.id == id)
    }
}

impl Table {
    /// Where column `name` is in each row.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}
