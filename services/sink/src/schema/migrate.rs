//! [`migrate`]: apply the missing migrations, then bring the live schema to the current one.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::cluster::{self, Cluster, Layout};
use super::migrations::{MIGRATIONS, SCHEMA_VERSION};
use super::tables::{self, Table, escape};
use super::{
    AppliedMigration, MigrationReport, SchemaChange, SchemaError, SchemaSettings, execute,
};

/// Creates the database if missing, applies the migrations it has not seen in order, and then
/// compares the live schema with the current one: creates what is missing, adds missing columns
/// and indexes, applies changed TTLs and rollup windows. A column whose type differs from the
/// expected one is an error, before anything is changed. Running it again is a no-op
/// ([`MigrationReport::is_noop`]). Against a database migrated by a newer sink it changes nothing.
pub async fn migrate(
    client: &clickhouse::Client,
    settings: &SchemaSettings,
) -> Result<MigrationReport, SchemaError> {
    migrate_to(client, settings, SCHEMA_VERSION).await
}

/// [`migrate`] up to `target` only, without the comparison when `target` is older than
/// [`SCHEMA_VERSION`]: lets tests build a database as an older sink left it.
pub async fn migrate_to(
    client: &clickhouse::Client,
    settings: &SchemaSettings,
    target: u32,
) -> Result<MigrationReport, SchemaError> {
    migrate_in(client, settings, target, Layout::Single).await
}

/// [`migrate`] on a cluster (see [`super::cluster`]): with replication, the whole cluster
/// through `ON CLUSTER` statements; without, the node `client` talks to (run it on every node).
pub async fn migrate_cluster(
    client: &clickhouse::Client,
    settings: &SchemaSettings,
    cluster: &Cluster,
) -> Result<MigrationReport, SchemaError> {
    cluster.validate().map_err(SchemaError::Settings)?;
    migrate_in(client, settings, SCHEMA_VERSION, Layout::Cluster(cluster)).await
}

/// Runs every statement as `layout` lays the schema out.
async fn run(
    client: &clickhouse::Client,
    settings: &SchemaSettings,
    layout: Layout<'_>,
    statement: &str,
) -> Result<(), SchemaError> {
    for statement in layout.statements(statement, settings) {
        execute(client, &statement).await?;
    }
    Ok(())
}

async fn migrate_in(
    client: &clickhouse::Client,
    settings: &SchemaSettings,
    target: u32,
    layout: Layout<'_>,
) -> Result<MigrationReport, SchemaError> {
    settings.validate()?;
    let db = &settings.database;
    let mut report = MigrationReport {
        database: db.clone(),
        previous_version: 0,
        version: 0,
        applied: Vec::new(),
        changes: Vec::new(),
    };
    let live = LiveSchema::read(client, db).await?;
    check_types(&live, settings, layout)?;
    if !live.database_exists {
        run(
            client,
            settings,
            layout,
            &format!("CREATE DATABASE IF NOT EXISTS {db}"),
        )
        .await?;
        report.changes.push(SchemaChange::CreatedDatabase);
    }
    if !live.tables.contains_key("schema_migrations") {
        let create = tables::schema_migrations().create(db);
        run(client, settings, layout, &create).await?;
        report
            .changes
            .push(SchemaChange::CreatedTable("schema_migrations".into()));
    }
    let applied: BTreeSet<u32> = client
        .query_raw(&format!("SELECT version FROM {db}.schema_migrations FINAL"))
        .fetch_all::<u32>()
        .await
        .map_err(SchemaError::query("SELECT version FROM schema_migrations"))?
        .into_iter()
        .collect();
    report.previous_version = applied.last().copied().unwrap_or(0);
    report.version = report.previous_version;
    if report.previous_version > SCHEMA_VERSION {
        tracing::warn!(
            database = %db,
            version = report.previous_version,
            ours = SCHEMA_VERSION,
            "a newer sink migrated this database; leaving the schema as it is"
        );
        return Ok(report);
    }
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.version <= target && !applied.contains(&m.version))
    {
        for statement in migration.statements(settings) {
            run(client, settings, layout, &statement).await?;
        }
        execute(
            client,
            &format!(
                "INSERT INTO {db}.schema_migrations (version, description) VALUES ({}, '{}')",
                migration.version,
                escape(migration.description)
            ),
        )
        .await?;
        tracing::info!(database = %db, version = migration.version, description = migration.description, "applied schema migration");
        report.applied.push(AppliedMigration {
            version: migration.version,
            description: migration.description.into(),
        });
        report.version = report.version.max(migration.version);
    }
    if target >= SCHEMA_VERSION {
        converge(client, settings, layout, &mut report).await?;
    }
    Ok(report)
}

/// Brings the live schema to the current one, never dropping or retyping anything. Statements
/// are written for a single server and run as `layout` lays them out (on a cluster: a column
/// reaches the `_local` and the `Distributed` table, indexes and TTL only the `_local` one).
async fn converge(
    client: &clickhouse::Client,
    settings: &SchemaSettings,
    layout: Layout<'_>,
    report: &mut MigrationReport,
) -> Result<(), SchemaError> {
    let db = &settings.database;
    let live = LiveSchema::read(client, db).await?;
    check_types(&live, settings, layout)?;
    let mut changes = Vec::new();
    for table in tables::tables(settings) {
        let objects = layout.objects(&table);
        let mut existing = Vec::new();
        for object in &objects {
            if live.tables.contains_key(&object.name) {
                existing.push(object);
                continue;
            }
            let create = if object.distributed {
                layout.create_distributed(&table, db)
            } else {
                layout.statements(&table.create(db), settings).remove(0)
            };
            execute(client, &create).await?;
            changes.push(SchemaChange::CreatedTable(object.name.clone()));
        }
        let mut previous: Option<&str> = None;
        for column in &table.columns {
            let lacking: Vec<&&cluster::Object> = existing
                .iter()
                .filter(|o| {
                    live.columns
                        .get(&o.name)
                        .is_none_or(|c| !c.contains_key(&column.name))
                })
                .collect();
            if !lacking.is_empty() {
                let position = match previous {
                    Some(p) => format!("AFTER {p}"),
                    None => "FIRST".into(),
                };
                let add = format!(
                    "ALTER TABLE {db}.{} ADD COLUMN IF NOT EXISTS {} {position}",
                    table.name,
                    column.definition()
                );
                run(client, settings, layout, &add).await?;
                changes.extend(lacking.iter().map(|o| SchemaChange::AddedColumn {
                    table: o.name.clone(),
                    column: column.name.clone(),
                }));
            }
            previous = Some(&column.name);
        }
        // Indexes and TTL belong to the table that holds the data, not a Distributed one.
        let Some(data) = existing.iter().find(|o| !o.distributed) else {
            continue;
        };
        let alter = format!("ALTER TABLE {db}.{}", table.name);
        for index in &table.indexes {
            if !live
                .indexes
                .contains(&(data.name.clone(), index.name.to_string()))
            {
                let add = format!(
                    "{alter} ADD INDEX IF NOT EXISTS {} {} TYPE {} GRANULARITY {}",
                    index.name, index.expression, index.kind, index.granularity
                );
                run(client, settings, layout, &add).await?;
                let materialize = format!("{alter} MATERIALIZE INDEX {}", index.name);
                run(client, settings, layout, &materialize).await?;
                changes.push(SchemaChange::AddedIndex {
                    table: data.name.clone(),
                    index: index.name.into(),
                });
            }
        }
        if let Some(ttl) = &table.ttl
            && let Some(live_table) = live.tables.get(&data.name)
            && live_ttl(&live_table.engine_full) != Some(ttl.as_str())
        {
            run(
                client,
                settings,
                layout,
                &format!("{alter} MODIFY TTL {ttl}"),
            )
            .await?;
            changes.push(SchemaChange::ModifiedTtl {
                table: data.name.clone(),
                ttl: ttl.clone(),
            });
        }
    }
    for view in tables::views(settings) {
        match live.tables.get(view.name.as_str()) {
            None => {
                run(client, settings, layout, &view.create()).await?;
                changes.push(SchemaChange::CreatedView(view.name.clone()));
            }
            Some(live_view) if live_view.comment != view.comment => {
                let alter = format!("ALTER TABLE {db}.{}", view.name);
                let modify = format!("{alter} MODIFY QUERY\n{}", view.query);
                run(client, settings, layout, &modify).await?;
                let comment = format!("{alter} MODIFY COMMENT '{}'", escape(&view.comment));
                run(client, settings, layout, &comment).await?;
                changes.push(SchemaChange::ModifiedView(view.name.clone()));
            }
            Some(_) => {}
        }
    }
    for change in &changes {
        tracing::info!(database = %db, %change, "schema changed");
    }
    report.changes.extend(changes);
    Ok(())
}

/// A column of the current schema whose live type differs is an error, and so is a table whose
/// engine does not fit the layout (a `Distributed` table where data belongs, or the reverse);
/// nothing is changed.
fn check_types(
    live: &LiveSchema,
    settings: &SchemaSettings,
    layout: Layout<'_>,
) -> Result<(), SchemaError> {
    for table in tables::tables(settings) {
        for object in layout.objects(&table) {
            if let Some(live_table) = live.tables.get(&object.name) {
                layout.check_engine(&settings.database, &object, &live_table.engine_full)?;
            }
            let Some(columns) = live.columns.get(&object.name) else {
                continue;
            };
            for (name, actual) in columns {
                if let Some(expected) = Table::column(&table, name)
                    && expected.ty != actual
                {
                    return Err(SchemaError::ColumnType {
                        database: settings.database.clone(),
                        table: object.name.clone(),
                        column: name.clone(),
                        expected: expected.ty.into(),
                        actual: actual.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The TTL expression of a table as `system.tables.engine_full` shows it.
fn live_ttl(engine_full: &str) -> Option<&str> {
    let start = engine_full.find(" TTL ")? + " TTL ".len();
    let rest = &engine_full[start..];
    Some(
        rest.find(" SETTINGS ")
            .map_or(rest, |end| &rest[..end])
            .trim(),
    )
}

/// What the database holds now.
struct LiveSchema {
    database_exists: bool,
    tables: BTreeMap<String, LiveTable>,
    /// table -> column -> type
    columns: BTreeMap<String, BTreeMap<String, String>>,
    /// (table, index)
    indexes: BTreeSet<(String, String)>,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct LiveTable {
    name: String,
    engine_full: String,
    comment: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct LiveColumn {
    table: String,
    name: String,
    ty: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct LiveIndex {
    table: String,
    name: String,
}

impl LiveSchema {
    async fn read(client: &clickhouse::Client, db: &str) -> Result<LiveSchema, SchemaError> {
        async fn fetch<T>(
            client: &clickhouse::Client,
            db: &str,
            sql: &str,
        ) -> Result<Vec<T>, SchemaError>
        where
            T: clickhouse::RowOwned + clickhouse::RowRead,
        {
            client
                .query_raw(sql)
                .param("db", db)
                .fetch_all::<T>()
                .await
                .map_err(SchemaError::query(sql))
        }
        let databases: Vec<u64> = fetch(
            client,
            db,
            "SELECT count() FROM system.databases WHERE name = {db:String}",
        )
        .await?;
        let tables: Vec<LiveTable> = fetch(
            client,
            db,
            "SELECT name, engine_full, comment FROM system.tables WHERE database = {db:String}",
        )
        .await?;
        let columns: Vec<LiveColumn> = fetch(
            client,
            db,
            "SELECT table, name, type AS ty FROM system.columns WHERE database = {db:String}",
        )
        .await?;
        let indexes: Vec<LiveIndex> = fetch(
            client,
            db,
            "SELECT table, name FROM system.data_skipping_indices WHERE database = {db:String}",
        )
        .await?;
        let mut by_table: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for c in columns {
            by_table.entry(c.table).or_default().insert(c.name, c.ty);
        }
        Ok(LiveSchema {
            database_exists: databases.first().is_some_and(|n| *n > 0),
            tables: tables.into_iter().map(|t| (t.name.clone(), t)).collect(),
            columns: by_table,
            indexes: indexes.into_iter().map(|i| (i.table, i.name)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_read_from_engine_full() {
        assert_eq!(
            live_ttl(
                "ReplacingMergeTree ORDER BY ts TTL toDateTime(ts) + toIntervalDay(90) \
                 SETTINGS non_replicated_deduplication_window = 10000"
            ),
            Some("toDateTime(ts) + toIntervalDay(90)")
        );
        assert_eq!(
            live_ttl("MergeTree ORDER BY a TTL a + toIntervalDay(3)"),
            Some("a + toIntervalDay(3)")
        );
        assert_eq!(live_ttl("MergeTree ORDER BY a SETTINGS x = 1"), None);
    }
}
