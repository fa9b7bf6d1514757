//! Why a range has no data, in one line: nothing has reached ClickHouse yet, the range is after
//! the newest record (the pipeline stopped) or before the oldest (expired), the filters match
//! nothing in it, or there is a gap in the data.

use serde_json::Value;

use crate::error::ReportError;
use crate::model::Filters;
use crate::options::{Options, format_time};

use super::Connection;
use super::fetch::fetch;
use super::traffic::quote;

/// The [`ReportError::NoData`] for `options.range`, with the likely reason. A failing diagnosis
/// query is itself the error.
pub async fn no_data(connection: &Connection, options: &Options) -> ReportError {
    let range = options.range;
    let reason = match reason(connection, options).await {
        Ok(reason) => reason,
        Err(error) => return error,
    };
    ReportError::NoData {
        from: format_time(range.from),
        to: format_time(range.to),
        reason,
    }
}

async fn reason(connection: &Connection, options: &Options) -> Result<String, ReportError> {
    let db = &connection.database;
    let range = options.range;
    let (from, to) = (format_time(range.from), format_time(range.to));
    let bounds = fetch(
        connection,
        &format!(
            "SELECT count() AS records, toUnixTimestamp(min(interval_start)) AS oldest, \
             toUnixTimestamp(max(interval_start)) AS newest FROM {db}.flows"
        ),
        "no-data diagnosis",
    )
    .await?;
    let number = |name: &str| bounds.first(name).and_then(Value::as_u64).unwrap_or(0);
    if number("records") == 0 {
        return Ok(format!(
            "{db}.flows is empty: no record has reached ClickHouse yet; is the sink \
             (netmeter-sink) running, and are the collectors and attributors publishing?"
        ));
    }
    let (oldest, newest) = (number("oldest"), number("newest"));
    if range.from > newest {
        return Ok(format!(
            "the newest record starts at {}: the range is after it; the sink may be stopped or \
             behind, or the collectors stopped",
            format_time(newest)
        ));
    }
    if range.to <= oldest {
        return Ok(format!(
            "the oldest record starts at {}: the range is before it (older records expired \
             with the sink's --ttl-days, or were never collected)",
            format_time(oldest)
        ));
    }
    let filters = &options.filters;
    let described = describe(filters);
    if !described.is_empty() {
        let cluster = filters
            .cluster
            .as_ref()
            .map(|c| format!(" AND cluster = {}", quote(c)))
            .unwrap_or_default();
        let seen = fetch(
            connection,
            &format!(
                "SELECT count() AS records, \
                 arrayStringConcat(arraySlice(groupUniqArray(cluster), 1, 5), ', ') AS clusters, \
                 arrayStringConcat(arraySlice(arraySort(groupUniqArrayIf(local_namespace, \
                 local_namespace != ''{cluster})), 1, 8), ', ') AS namespaces \
                 FROM {db}.flows FINAL \
                 WHERE interval_start >= '{from}' AND interval_start < '{to}'"
            ),
            "no-data diagnosis",
        )
        .await?;
        let text = |name: &str| {
            seen.first(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let records = seen.first("records").and_then(Value::as_u64).unwrap_or(0);
        if records > 0 {
            return Ok(format!(
                "the filters {described} match none of the {records} records in the range \
                 (clusters: {}; namespaces: {})",
                text("clusters"),
                text("namespaces")
            ));
        }
    }
    Ok(format!(
        "there are records before and after the range ({} to {}) but none in it: collection or \
         the pipeline was down then",
        format_time(oldest),
        format_time(newest)
    ))
}

/// `--cluster prod --namespace shop`, as given.
fn describe(filters: &Filters) -> String {
    [
        ("--cluster", &filters.cluster),
        ("--namespace", &filters.namespace),
        ("--workload", &filters.workload),
        ("--class", &filters.class),
    ]
    .iter()
    .filter_map(|(flag, value)| value.as_ref().map(|v| format!("{flag} {v}")))
    .collect::<Vec<_>>()
    .join(" ")
}
