//! Runs one statement and returns its result as JSON values, with the column names ClickHouse
//! gave them; errors become [`ReportError`]s that say what to do.

use serde_json::Value;

use crate::error::ReportError;

use super::Connection;

/// A result: column names, then rows of values (64-bit integers as JSON integers, `nan` as
/// null).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultSet {
    pub names: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl ResultSet {
    /// The index of column `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The first row's value of column `name`.
    pub fn first(&self, name: &str) -> Option<&Value> {
        self.rows.first().and_then(|r| r.get(self.index(name)?))
    }
}

/// Runs `sql`; `what` names it in errors.
pub async fn fetch(
    connection: &Connection,
    sql: &str,
    what: &str,
) -> Result<ResultSet, ReportError> {
    let error = |e| ReportError::from_clickhouse(e, &connection.url, &connection.user, what);
    let bytes = connection
        .client
        .query_raw(sql)
        .fetch_bytes("JSONCompactEachRowWithNames")
        .map_err(error)?
        .collect()
        .await
        .map_err(error)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let parse = |line: &str| -> Result<Vec<Value>, ReportError> {
        serde_json::from_str(line).map_err(|e| ReportError::Query {
            url: connection.url.clone(),
            what: what.to_string(),
            message: format!("unreadable answer ({e}): {}", truncate(line, 200)),
        })
    };
    let Some(header) = lines.next() else {
        return Ok(ResultSet::default());
    };
    let names = parse(header)?
        .into_iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    let rows = lines.map(parse).collect::<Result<_, _>>()?;
    Ok(ResultSet { names, rows })
}

fn truncate(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}
