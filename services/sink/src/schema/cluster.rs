//! ClickHouse cluster mode (`--clickhouse-cluster NAME`): the same schema, laid out over the
//! shards of a cluster, with the same public names, so the sink, the report and users' SQL do
//! not change.
//!
//! # Layout
//!
//! - Every data table of [`super::tables::tables`] (`flows`, the rollups, whatever is added
//!   there) is created as `<name>_local` on every node, and a `Distributed` table takes the
//!   public name: `Distributed(NAME, db, <name>_local, <sharding key>)`. Inserts and queries go
//!   to the public name; `FINAL` on it is applied per shard, and sums add up across shards.
//! - The sharding key is the connection, in either orientation: [`CONNECTION_KEY`]. Every
//!   record of a connection, every redelivery of a record and every replay of it lands on the
//!   shard that already holds it, so `ReplacingMergeTree` deduplication and the rollups'
//!   recomputation (from `... FINAL`) stay correct shard by shard. Either orientation, because a
//!   replay with more of the IP history can swap which side is local (the attributor decides
//!   it by which endpoint is on the observing node), and the record keeps its id. A table without
//!   the connection columns (the rollups) gets no sharding key: only its views write it, each into
//!   its own node's `_local` table, and an insert through the `Distributed` table is refused.
//! - The views (change marks, watermarks, refreshable recomputations) exist on every node and
//!   read and write the `_local` tables: each node rolls up its own shard.
//! - Bookkeeping stays on the node ([`Placement`]): `rollup_changes` and `rollup_watermarks` are
//!   the state of that node's views; `schema_migrations` records what was applied where the DDL
//!   ran (with replication: one table replicated to every node, as the DDL is cluster-wide).
//! - The Kafka-engine path: `flows_kafka` and its views exist on every node (one consumer group),
//!   and `flows_kafka_mv` writes into the `Distributed` `flows`, so which node consumes a
//!   partition never decides where a connection's rows go.
//!
//! # Two ways to run the DDL ([`Replication`])
//!
//! - `keeper` (production): data tables are `Replicated*MergeTree` with the path
//!   `/clickhouse/tables/{shard}/{database}/{table}` and replica `{replica}` (the servers'
//!   macros), and every statement is `... ON CLUSTER NAME`, run once against any node.
//! - `none`: plain engines, and the statements run on each node (`--clickhouse-cluster-nodes`,
//!   the HTTP URL of every node), as on a single server.
//!
//! The migrations and the live-schema comparison are the single server's ([`super::migrate`]);
//! [`Layout::statements`] turns each of their statements into what the cluster runs: table names
//! to `_local`, `ON CLUSTER`, replicated engines, a `Distributed` twin for every created data
//! table, and column changes to both the `_local` and the `Distributed` table.

use std::fmt;

use super::tables::{self, Table};
use super::{SchemaError, SchemaSettings};

/// Shards by the connection (addresses, ports, protocol), whichever side is local.
pub const CONNECTION_KEY: &str = "cityHash64(\
    least((local_ip, local_port), (remote_ip, remote_port)), \
    greatest((local_ip, local_port), (remote_ip, remote_port)), \
    protocol)";

/// The columns [`CONNECTION_KEY`] reads; a table with all of them is sharded by it.
const CONNECTION_COLUMNS: [&str; 5] = [
    "local_ip",
    "local_port",
    "remote_ip",
    "remote_port",
    "protocol",
];

/// What the `_local` suffix is appended to.
pub const LOCAL_SUFFIX: &str = "_local";

/// How the cluster keeps copies of a shard.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Replication {
    /// Replicated*MergeTree engines and `ON CLUSTER` DDL (needs ClickHouse Keeper or ZooKeeper).
    #[default]
    Keeper,
    /// One replica per shard, plain engines, the DDL run on every node.
    None,
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Replication::Keeper => "keeper",
            Replication::None => "none",
        })
    }
}

/// A cluster of the servers' `<remote_servers>` and how it replicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub replication: Replication,
}

impl Cluster {
    pub fn new(name: impl Into<String>, replication: Replication) -> Cluster {
        Cluster {
            name: name.into(),
            replication,
        }
    }

    /// Refuses a name that cannot be written into `ON CLUSTER '...'` and `Distributed('...')`:
    /// letters, digits, `_`, `-`, `.`, and `{}` for a macro such as `{cluster}`.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.{}".contains(c))
        {
            return Err(format!(
                "cluster `{name}` must be letters, digits, _, -, . (or a macro like {{cluster}})"
            ));
        }
        Ok(())
    }
}

/// Where a table of the schema lives on a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// `<name>_local` on every node plus a `Distributed` `<name>`: the data tables.
    Sharded,
    /// A table of each node's own: the rollup views' bookkeeping, which only that node reads.
    PerNode,
    /// What the DDL did: per node without replication, one table replicated to every node with.
    Everywhere,
}

/// Where `table` lives on a cluster. Data tables are sharded unless named here.
pub fn placement(table: &str) -> Placement {
    match table {
        "schema_migrations" => Placement::Everywhere,
        "rollup_changes" | "rollup_watermarks" => Placement::PerNode,
        _ => Placement::Sharded,
    }
}

/// The sharding key of a sharded table: the connection if it has the connection's columns.
pub(crate) fn sharding_key(table: &Table) -> Option<&'static str> {
    CONNECTION_COLUMNS
        .iter()
        .all(|c| table.column(c).is_some())
        .then_some(CONNECTION_KEY)
}

/// One object a table of the schema is on the server: its name and whether it is the
/// `Distributed` twin (columns only: no indexes, no TTL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Object {
    pub name: String,
    pub distributed: bool,
}

/// How the schema is laid out: one server, or a cluster.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum Layout<'a> {
    #[default]
    Single,
    Cluster(&'a Cluster),
}

impl Layout<'_> {
    fn cluster(&self) -> Option<&Cluster> {
        match self {
            Layout::Single => None,
            Layout::Cluster(cluster) => Some(cluster),
        }
    }

    /// ` ON CLUSTER 'NAME'` with replication, else "".
    fn on_cluster(&self) -> String {
        match self.cluster() {
            Some(c) if c.replication == Replication::Keeper => format!(" ON CLUSTER '{}'", c.name),
            _ => String::new(),
        }
    }

    fn sharded(&self, table: &str) -> bool {
        self.cluster().is_some() && placement(table) == Placement::Sharded
    }

    /// The objects `table` is on the server, data table first.
    pub fn objects(&self, table: &Table) -> Vec<Object> {
        if self.sharded(table.name) {
            vec![
                Object {
                    name: format!("{}{LOCAL_SUFFIX}", table.name),
                    distributed: false,
                },
                Object {
                    name: table.name.to_string(),
                    distributed: true,
                },
            ]
        } else {
            vec![Object {
                name: table.name.to_string(),
                distributed: false,
            }]
        }
    }

    /// The `Distributed` table over `<table>_local` that takes the public name.
    pub fn create_distributed(&self, table: &Table, db: &str) -> String {
        let cluster = self.cluster().map_or("", |c| c.name.as_str());
        let key = sharding_key(table).map_or(String::new(), |k| format!(", {k}"));
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name}{on} AS {db}.{name}{LOCAL_SUFFIX}\n\
             ENGINE = Distributed('{cluster}', '{db}', '{name}{LOCAL_SUFFIX}'{key})",
            name = table.name,
            on = self.on_cluster(),
        )
    }

    /// What the layout runs for one statement of the single-server schema (a migration's, or one
    /// the live-schema comparison renders). On a single server: the statement itself.
    pub fn statements(&self, sql: &str, settings: &SchemaSettings) -> Vec<String> {
        let Some(cluster) = self.cluster() else {
            return vec![sql.to_string()];
        };
        let db = &settings.database;
        let schema = tables::tables(settings);
        let sharded: Vec<&str> = schema
            .iter()
            .map(|t| t.name)
            .filter(|t| self.sharded(t))
            .collect();
        let sql = rename_tables(sql, db, &sharded);
        let on = self.on_cluster();
        if let Some(rest) = sql.strip_prefix("CREATE DATABASE IF NOT EXISTS ") {
            let (name, tail) = split_identifier(rest);
            return vec![format!("CREATE DATABASE IF NOT EXISTS {name}{on}{tail}")];
        }
        let Some((head, name, tail)) = object_statement(&sql, db) else {
            return vec![sql]; // INSERT, SYSTEM ...: on the node it runs on
        };
        let base = name
            .strip_suffix(LOCAL_SUFFIX)
            .filter(|b| sharded.contains(b));
        let mut out = vec![format!("{head}{db}.{name}{on}{tail}")];
        if head == "CREATE TABLE IF NOT EXISTS " {
            if cluster.replication == Replication::Keeper {
                out[0] = replicated(&out[0], placement(base.unwrap_or(name)));
            }
            if let Some(table) = base.and_then(|b| schema.iter().find(|t| t.name == b)) {
                out.push(self.create_distributed(table, db));
            }
        } else if head == "ALTER TABLE "
            && let Some(base) = base
            && changes_columns(tail)
        {
            out.push(format!("{head}{db}.{base}{on}{tail}"));
        }
        out
    }

    /// A statement of the Kafka-engine path: `ON CLUSTER` with replication, names unchanged
    /// (its view writes into the public, `Distributed` `flows`).
    pub fn kafka_statement(&self, sql: &str, db: &str) -> String {
        match object_statement(sql, db) {
            Some((head, name, tail)) if self.cluster().is_some() => {
                format!("{head}{db}.{name}{}{tail}", self.on_cluster())
            }
            _ => sql.to_string(),
        }
    }

    /// The engine a live table must (not) have, checked before anything changes: a database
    /// created on a single server cannot be switched to cluster mode in place, or back.
    pub fn check_engine(
        &self,
        db: &str,
        object: &Object,
        engine_full: &str,
    ) -> Result<(), SchemaError> {
        let is_distributed = engine_full.starts_with("Distributed");
        if is_distributed == object.distributed {
            return Ok(());
        }
        let name = &object.name;
        let why = match (self.cluster(), is_distributed) {
            (None, _) => format!(
                "{db}.{name} is a Distributed table: the database was created in cluster mode; \
                 start the sink with --clickhouse-cluster"
            ),
            (Some(c), false) => format!(
                "{db}.{name} is not a Distributed table (engine {}): the database was created \
                 without --clickhouse-cluster {}; netmeter does not move data between layouts: \
                 use another database, or copy the rows over (INSERT INTO ... SELECT)",
                engine_full.split(' ').next().unwrap_or_default(),
                c.name
            ),
            (Some(_), true) => format!(
                "{db}.{name} is a Distributed table but netmeter keeps its data in it; drop or \
                 rename it"
            ),
        };
        Err(SchemaError::Settings(why))
    }
}

/// Whether the ALTER commands after the table name change columns (which the `Distributed`
/// table must follow) rather than indexes, TTL, settings or the data.
fn changes_columns(commands: &str) -> bool {
    let commands = commands.trim_start();
    [
        "ADD COLUMN",
        "DROP COLUMN",
        "MODIFY COLUMN",
        "RENAME COLUMN",
        "COMMENT COLUMN",
    ]
    .iter()
    .any(|c| commands.starts_with(c))
}

/// The statements that name an object right after their head: (head, object name, rest).
fn object_statement<'s>(sql: &'s str, db: &str) -> Option<(&'static str, &'s str, &'s str)> {
    for head in [
        "CREATE TABLE IF NOT EXISTS ",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS ",
        "CREATE VIEW IF NOT EXISTS ",
        "ALTER TABLE ",
    ] {
        if let Some(object) = sql
            .strip_prefix(head)
            .and_then(|rest| rest.strip_prefix(db))
            .and_then(|rest| rest.strip_prefix('.'))
        {
            let (name, tail) = split_identifier(object);
            return Some((head, name, tail));
        }
    }
    None
}

fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A leading identifier and what follows it.
fn split_identifier(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !is_identifier_char(c))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Appends [`LOCAL_SUFFIX`] to every `db.<table>` whose table is in `sharded`, leaving string
/// literals alone (`'flows_per_minute'` names a rollup in `rollup_changes`, not a table).
pub(crate) fn rename_tables(sql: &str, db: &str, sharded: &[&str]) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    let mut in_string = false;
    let mut previous: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            if c == '\\' {
                if let Some(escaped) = rest.chars().next() {
                    out.push(escaped);
                    rest = &rest[escaped.len_utf8()..];
                }
            } else if c == '\'' {
                in_string = false;
            }
            previous = Some(c);
            continue;
        }
        if c == '\'' {
            in_string = true;
        } else if !previous.is_some_and(is_identifier_char)
            && let Some(after) = rest.strip_prefix(db).and_then(|r| r.strip_prefix('.'))
        {
            let (name, _) = split_identifier(after);
            out.push_str(db);
            out.push('.');
            out.push_str(name);
            if sharded.contains(&name) {
                out.push_str(LOCAL_SUFFIX);
            }
            rest = &after[name.len()..];
            previous = name.chars().last().or(Some('.'));
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
        previous = Some(c);
    }
    out
}

/// `ENGINE = XMergeTree(args)` of a `CREATE TABLE` as its `Replicated` form for `placement`;
/// per-node tables and engines that are not MergeTree stay as they are.
fn replicated(sql: &str, placement: Placement) -> String {
    let (path, replica) = match placement {
        Placement::Sharded => ("/clickhouse/tables/{shard}/{database}/{table}", "{replica}"),
        Placement::Everywhere => (
            "/clickhouse/tables/all/{database}/{table}",
            "{shard}-{replica}",
        ),
        Placement::PerNode => return sql.to_string(),
    };
    let Some(at) = sql.find("ENGINE = ") else {
        return sql.to_string();
    };
    let start = at + "ENGINE = ".len();
    let (engine, after) = split_identifier(&sql[start..]);
    if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
        return sql.to_string();
    }
    let (args, rest) = match after.strip_prefix('(') {
        Some(inner) => {
            let mut depth = 1;
            let close = inner
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(inner.len(), |(i, _)| i);
            let args = inner[..close].trim();
            let rest = inner.get(close + 1..).unwrap_or_default();
            (
                (!args.is_empty()).then(|| format!(", {args}")),
                rest.to_string(),
            )
        }
        None => (None, after.to_string()),
    };
    format!(
        "{}Replicated{engine}('{path}', '{replica}'{}){rest}",
        &sql[..start],
        args.unwrap_or_default()
    )
}

/// Every statement of the current schema on `cluster`, in order, as `ddl --clickhouse-cluster`
/// prints them. With replication: run them once, against any node; without: on every node.
pub fn ddl_statements(
    settings: &SchemaSettings,
    kafka_engine: Option<&super::KafkaEngineSettings>,
    cluster: &Cluster,
) -> Vec<String> {
    let layout = Layout::Cluster(cluster);
    let mut statements: Vec<String> = super::ddl_statements(settings, None)
        .iter()
        .flat_map(|s| layout.statements(s, settings))
        .collect();
    if let Some(kafka) = kafka_engine {
        statements.extend(
            super::kafka_engine::statements(settings, kafka)
                .iter()
                .map(|s| layout.kafka_statement(s, &settings.database)),
        );
    }
    statements
}

/// [`ddl_statements`] as SQL text with a header that says where to run it.
pub fn ddl(
    settings: &SchemaSettings,
    kafka_engine: Option<&super::KafkaEngineSettings>,
    cluster: &Cluster,
) -> String {
    let run = match cluster.replication {
        Replication::Keeper => "run once, against any node".to_string(),
        Replication::None => "run on every node of the cluster".to_string(),
    };
    let mut text = format!(
        "-- netmeter schema version {}, database {}, cluster {} (replication {}): {run}\n\n",
        super::SCHEMA_VERSION,
        settings.database,
        cluster.name,
        cluster.replication,
    );
    for statement in ddl_statements(settings, kafka_engine, cluster) {
        text.push_str(&statement);
        text.push_str(";\n\n");
    }
    text
}

/// Checks that `client`'s node knows `cluster` and, without replication, that it has
/// `expected_hosts` hosts (one per `--clickhouse-cluster-nodes` URL), so every node is migrated.
pub async fn check_cluster(
    client: &clickhouse::Client,
    cluster: &Cluster,
    expected_hosts: Option<usize>,
) -> Result<(), SchemaError> {
    let hosts: u64 = client
        .query_raw("SELECT count() FROM system.clusters WHERE cluster = {cluster:String}")
        .param("cluster", &cluster.name)
        .fetch_one()
        .await
        .map_err(SchemaError::query("SELECT count() FROM system.clusters"))?;
    if hosts == 0 {
        return Err(SchemaError::Settings(format!(
            "ClickHouse has no cluster `{}` in its <remote_servers> (see system.clusters)",
            cluster.name
        )));
    }
    if let Some(expected) = expected_hosts
        && hosts != expected as u64
    {
        return Err(SchemaError::Settings(format!(
            "cluster `{}` has {hosts} hosts but --clickhouse-cluster-nodes names {expected}: \
             without replication every node must be migrated, so name each one's HTTP URL",
            cluster.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SchemaSettings {
        SchemaSettings::new("metering")
    }

    fn keeper() -> Cluster {
        Cluster::new("prod", Replication::Keeper)
    }

    fn none() -> Cluster {
        Cluster::new("prod", Replication::None)
    }

    #[test]
    fn table_names_get_the_local_suffix_but_literals_and_longer_names_do_not() {
        let sql = "SELECT 'metering.flows', x FROM metering.flows FINAL JOIN metering.flows_per_minute \
                   USING (a) WHERE y = 'it\\'s metering.flows' AND othermetering.flows = 1";
        assert_eq!(
            rename_tables(sql, "metering", &["flows"]),
            "SELECT 'metering.flows', x FROM metering.flows_local FINAL JOIN \
             metering.flows_per_minute USING (a) WHERE y = 'it\\'s metering.flows' AND \
             othermetering.flows = 1"
        );
    }

    #[test]
    fn engines_become_replicated_with_the_shard_path_and_their_arguments() {
        assert_eq!(
            replicated(
                "CREATE TABLE t (a UInt8)\nENGINE = ReplacingMergeTree(refreshed_at, is_deleted)\nORDER BY a",
                Placement::Sharded
            ),
            "CREATE TABLE t (a UInt8)\nENGINE = ReplicatedReplacingMergeTree(\
             '/clickhouse/tables/{shard}/{database}/{table}', '{replica}', refreshed_at, is_deleted)\nORDER BY a"
        );
        assert_eq!(
            replicated(
                "CREATE TABLE t (a UInt8)\nENGINE = ReplacingMergeTree\nORDER BY a",
                Placement::Everywhere
            ),
            "CREATE TABLE t (a UInt8)\nENGINE = ReplicatedReplacingMergeTree(\
             '/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}')\nORDER BY a"
        );
        let per_node = "CREATE TABLE t (a UInt8)\nENGINE = MergeTree\nORDER BY a";
        assert_eq!(replicated(per_node, Placement::PerNode), per_node);
        let kafka = "CREATE TABLE t (a UInt8)\nENGINE = Kafka\nSETTINGS x = 1";
        assert_eq!(replicated(kafka, Placement::Sharded), kafka);
    }

    #[test]
    fn every_data_table_gets_a_local_table_and_a_distributed_twin_on_every_node() {
        let settings = settings();
        let statements = ddl_statements(&settings, None, &keeper());
        let schema = tables::tables(&settings);
        assert!(schema.iter().any(|t| t.name == "flows"));
        for table in &schema {
            let name: &str = table.name;
            let local =
                format!("CREATE TABLE IF NOT EXISTS metering.{name}_local ON CLUSTER 'prod'\n(");
            let twin = format!(
                "CREATE TABLE IF NOT EXISTS metering.{name} ON CLUSTER 'prod' AS metering.{name}_local\n\
                 ENGINE = Distributed('prod', 'metering', '{name}_local'"
            );
            let own = format!("CREATE TABLE IF NOT EXISTS metering.{name} ON CLUSTER 'prod'\n(");
            match placement(name) {
                Placement::Sharded => {
                    let at = statements.iter().position(|s| s.starts_with(&local));
                    let at = at.unwrap_or_else(|| panic!("no {name}_local:\n{statements:#?}"));
                    assert!(statements[at].contains("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"), "{}", statements[at]);
                    assert!(
                        statements[at + 1].starts_with(&twin),
                        "{}",
                        statements[at + 1]
                    );
                    assert!(!statements.iter().any(|s| s.starts_with(&own)), "{name}");
                }
                Placement::PerNode | Placement::Everywhere => {
                    let create = statements.iter().find(|s| s.starts_with(&own));
                    let create = create.unwrap_or_else(|| panic!("no {name}"));
                    assert_eq!(
                        create.contains("Replicated"),
                        placement(name) == Placement::Everywhere,
                        "{create}"
                    );
                }
            }
        }
        // flows is sharded by the connection, the rollups (no connection columns) by nothing.
        let flows_twin = statements
            .iter()
            .find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS metering.flows ON CLUSTER"))
            .unwrap();
        assert!(
            flows_twin.ends_with(&format!("'flows_local', {CONNECTION_KEY})")),
            "{flows_twin}"
        );
        let minute_twin = statements
            .iter()
            .find(|s| {
                s.starts_with("CREATE TABLE IF NOT EXISTS metering.flows_per_minute ON CLUSTER")
            })
            .unwrap();
        assert!(
            minute_twin.ends_with("'flows_per_minute_local')"),
            "{minute_twin}"
        );
    }

    #[test]
    fn views_read_and_write_the_local_tables() {
        let settings = settings();
        let statements = ddl_statements(&settings, None, &none());
        let views: Vec<&String> = statements
            .iter()
            .filter(|s| s.starts_with("CREATE MATERIALIZED VIEW"))
            .collect();
        assert_eq!(views.len(), tables::views(&settings).len());
        for view in views {
            for table in tables::tables(&settings) {
                if placement(table.name) == Placement::Sharded {
                    let public = format!("metering.{} ", table.name);
                    let public_end = format!("metering.{}\n", table.name);
                    assert!(
                        !view.contains(&public) && !view.contains(&public_end),
                        "{view}"
                    );
                }
            }
        }
        assert!(
            statements.iter().all(|s| !s.contains("ON CLUSTER")),
            "without replication every statement runs on each node"
        );
        assert!(statements.iter().all(|s| !s.contains("Replicated")));
    }

    #[test]
    fn column_changes_reach_the_distributed_table_and_the_rest_only_the_local_one() {
        let settings = settings();
        let cluster = keeper();
        let layout_keeper = Layout::Cluster(&cluster);
        assert_eq!(
            layout_keeper.statements(
                "ALTER TABLE metering.flows ADD COLUMN IF NOT EXISTS path LowCardinality(String) AFTER class",
                &settings
            ),
            [
                "ALTER TABLE metering.flows_local ON CLUSTER 'prod' ADD COLUMN IF NOT EXISTS path LowCardinality(String) AFTER class",
                "ALTER TABLE metering.flows ON CLUSTER 'prod' ADD COLUMN IF NOT EXISTS path LowCardinality(String) AFTER class",
            ]
        );
        assert_eq!(
            layout_keeper.statements(
                "ALTER TABLE metering.flows MATERIALIZE INDEX class_idx",
                &settings
            ),
            ["ALTER TABLE metering.flows_local ON CLUSTER 'prod' MATERIALIZE INDEX class_idx"]
        );
        assert_eq!(
            layout_keeper.statements(
                "ALTER TABLE metering.flows_per_minute_refresh MODIFY QUERY\nSELECT 1 FROM metering.flows FINAL",
                &settings
            ),
            ["ALTER TABLE metering.flows_per_minute_refresh ON CLUSTER 'prod' MODIFY QUERY\nSELECT 1 FROM metering.flows_local FINAL"]
        );
        assert_eq!(
            layout_keeper.statements("CREATE DATABASE IF NOT EXISTS metering", &settings),
            ["CREATE DATABASE IF NOT EXISTS metering ON CLUSTER 'prod'"]
        );
        assert_eq!(
            layout_keeper.statements(
                "INSERT INTO metering.rollup_changes SELECT 1 FROM metering.flows",
                &settings
            ),
            ["INSERT INTO metering.rollup_changes SELECT 1 FROM metering.flows_local"]
        );
        let single = "ALTER TABLE metering.flows MATERIALIZE INDEX class_idx";
        assert_eq!(Layout::Single.statements(single, &settings), [single]);
    }

    #[test]
    fn the_kafka_view_writes_into_the_distributed_flows_on_every_node() {
        let settings = settings();
        let kafka = super::super::KafkaEngineSettings::new("kafka:9092", "netmeter.flows.v1");
        let statements = ddl_statements(&settings, Some(&kafka), &keeper());
        let view = statements
            .iter()
            .find(|s| {
                s.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS metering.flows_kafka_mv")
            })
            .unwrap();
        assert!(
            view.starts_with(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS metering.flows_kafka_mv ON CLUSTER 'prod' TO metering.flows AS\n"
            ),
            "{view}"
        );
        assert!(statements.iter().any(|s| {
            s.starts_with("CREATE TABLE IF NOT EXISTS metering.flows_kafka ON CLUSTER 'prod'\n(")
        }));
    }

    #[test]
    fn cluster_names_are_checked() {
        assert!(
            Cluster::new("prod-eu.1", Replication::Keeper)
                .validate()
                .is_ok()
        );
        assert!(
            Cluster::new("{cluster}", Replication::Keeper)
                .validate()
                .is_ok()
        );
        assert!(Cluster::new("", Replication::Keeper).validate().is_err());
        assert!(Cluster::new("a'b", Replication::None).validate().is_err());
    }
}
