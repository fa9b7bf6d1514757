//! ClickHouse in tests: everything of [`netmeter_stack::clickhouse`] (how to run and probe the
//! engine), re-exported so tests name one module, plus queries whose exact text output tests
//! compare.

use anyhow::Context;

pub use netmeter_stack::clickhouse::*;

/// The output of `sql` in `format` (e.g. `TabSeparated`, `JSONEachRow`), for exact comparisons
/// in tests; panics with the query on error.
pub async fn query_text(client: &::clickhouse::Client, sql: &str, format: &str) -> String {
    query_text_checked(client, sql, format)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The output of `sql` as `TabSeparated`, the form most tests compare.
pub async fn tsv(client: &::clickhouse::Client, sql: &str) -> String {
    query_text(client, sql, "TabSeparated").await
}

/// Runs a statement; panics with it on error.
pub async fn run(client: &::clickhouse::Client, sql: &str) {
    client
        .query_raw(sql)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// [`query_text`] that returns errors (with the query) instead of panicking.
pub async fn query_text_checked(
    client: &::clickhouse::Client,
    sql: &str,
    format: &str,
) -> anyhow::Result<String> {
    let mut cursor = client
        .query_raw(sql)
        .fetch_bytes(format)
        .with_context(|| format!("query {sql}"))?;
    let bytes = cursor
        .collect()
        .await
        .with_context(|| format!("query {sql}"))?;
    String::from_utf8(bytes.to_vec()).context("ClickHouse text output is UTF-8")
}
