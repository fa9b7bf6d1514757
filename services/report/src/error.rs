//! Why a report could not be made, each as one line that says what to do.

/// A report that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "cannot reach ClickHouse at {url}: {reason} (check --clickhouse-url and that the server is up)"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "ClickHouse at {url} refused user `{user}`: wrong user or password (--clickhouse-user; \
         the password comes from NETMETER_CLICKHOUSE_PASSWORD or --clickhouse-password-file)"
    )]
    Authentication { url: String, user: String },
    #[error(
        "no netmeter schema in database `{database}` at {url}: start the sink (netmeter-sink), \
         which creates it, or pass the --database it writes to"
    )]
    MissingSchema { database: String, url: String },
    #[error(
        "{database}.{table} has no column {column}: the schema is older than this report; \
         start the netmeter-sink of this release, which migrates it"
    )]
    OldSchema {
        database: String,
        table: String,
        column: String,
    },
    #[error("no data from {from} to {to} UTC: {reason}")]
    NoData {
        from: String,
        to: String,
        reason: String,
    },
    #[error("ClickHouse at {url} failed on the {what} query: {message}")]
    Query {
        url: String,
        what: String,
        message: String,
    },
}

impl ReportError {
    /// A short, fixed label (tests, logs).
    pub fn label(&self) -> &'static str {
        match self {
            ReportError::Unreachable { .. } => "unreachable",
            ReportError::Authentication { .. } => "authentication",
            ReportError::MissingSchema { .. } => "missing_schema",
            ReportError::OldSchema { .. } => "old_schema",
            ReportError::NoData { .. } => "no_data",
            ReportError::Query { .. } => "query",
        }
    }

    /// Classifies a client error of the query `what` against the server at `url` as run by
    /// `user`.
    pub(crate) fn from_clickhouse(
        error: clickhouse::error::Error,
        url: &str,
        user: &str,
        what: &str,
    ) -> ReportError {
        use clickhouse::error::Error;
        let one_line = |text: String| text.split_whitespace().collect::<Vec<_>>().join(" ");
        match error {
            Error::Network(source) => ReportError::Unreachable {
                url: url.to_string(),
                reason: one_line(error_chain(source.as_ref())),
            },
            Error::TimedOut => ReportError::Unreachable {
                url: url.to_string(),
                reason: "timed out".into(),
            },
            Error::BadResponse(message) if is_authentication(&message) => {
                ReportError::Authentication {
                    url: url.to_string(),
                    user: user.to_string(),
                }
            }
            other => ReportError::Query {
                url: url.to_string(),
                what: what.to_string(),
                message: one_line(other.to_string()),
            },
        }
    }
}

/// ClickHouse's codes for an unknown user (192), a wrong password (193), a missing password
/// (194) and a failed authentication (516).
fn is_authentication(message: &str) -> bool {
    ["Code: 192.", "Code: 193.", "Code: 194.", "Code: 516."]
        .iter()
        .any(|code| message.contains(code))
        || message.contains("AUTHENTICATION_FAILED")
}

/// `error: its source: its source ...`, the innermost cause last (hyper's connect errors carry
/// the useful part, "Connection refused", two levels down).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_codes_are_recognized() {
        assert!(is_authentication(
            "Code: 516. DB::Exception: default: Authentication failed: password is incorrect"
        ));
        assert!(!is_authentication("Code: 60. DB::Exception: Unknown table"));
    }

    #[test]
    fn messages_are_one_line() {
        let err = ReportError::NoData {
            from: "2026-12-01 10:00:00".into(),
            to: "2026-12-01 12:00:00".into(),
            reason: "netmeter.flows is empty".into(),
        };
        assert_eq!(
            err.to_string(),
            "no data from 2026-12-01 10:00:00 to 2026-12-01 12:00:00 UTC: netmeter.flows is empty"
        );
        let err = ReportError::MissingSchema {
            database: "netmeter".into(),
            url: "http://ch:8123".into(),
        };
        assert!(!err.to_string().contains('\n'));
    }
}
