//! The `netmeter` command line: `netmeter report ...` parsed and checked into a [`Config`]
//! ([`Args::validate`]), then [`run`]: build the report, print it in the chosen format, and
//! write the HTML page if asked. Errors are one line on stderr; exit code 2 for anything the
//! flags got wrong, 1 when the report cannot be made.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand, ValueEnum};

use crate::bandwidth::BandwidthTable;
use crate::model::Filters;
use crate::options::{Options, TimeRange, parse_class, parse_time};
use crate::query::Connection;
use crate::render::{self, TerminalStyle};

/// Exit code for flags and files the user must fix.
pub const CONFIG_ERROR_EXIT_CODE: u8 = 2;

/// netmeter: Kubernetes network traffic and its cost, per workload.
#[derive(Parser, Debug)]
#[command(name = "netmeter", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Answer the traffic and cost questions for a time range, from ClickHouse.
    Report(Args),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Tables sized to the terminal, each followed by its SQL.
    Table,
    /// The report as JSON.
    Json,
    /// One CSV block per table, rows prefixed with section and table.
    Csv,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Start of the range: `2026-01-31 14:00:00` (UTC), `2026-01-31`, or an age like `3h`
    /// (rounded down to the minute).
    #[arg(long, conflicts_with = "since", help_heading = "Range")]
    pub from: Option<String>,
    /// End of the range (default now), same forms as --from; rounded up to the minute, so the
    /// minute it falls in is in the range.
    #[arg(long, requires = "from", help_heading = "Range")]
    pub to: Option<String>,
    /// The last DURATION up to the end of the current minute (e.g. 1h, 7d); the default is 24h.
    #[arg(long, value_parser = humantime::parse_duration, help_heading = "Range")]
    pub since: Option<Duration>,

    /// HTTP(S) URL of ClickHouse.
    #[arg(
        long = "clickhouse-url",
        env = "NETMETER_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123",
        help_heading = "ClickHouse"
    )]
    pub url: String,
    #[arg(
        long = "clickhouse-user",
        env = "NETMETER_CLICKHOUSE_USER",
        default_value = "default",
        help_heading = "ClickHouse"
    )]
    pub user: String,
    /// A file holding the password (else NETMETER_CLICKHOUSE_PASSWORD, else none).
    #[arg(
        long = "clickhouse-password-file",
        env = "NETMETER_CLICKHOUSE_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "ClickHouse"
    )]
    pub password_file: Option<PathBuf>,
    /// The database the sink writes to.
    #[arg(
        long,
        alias = "clickhouse-database",
        env = "NETMETER_CLICKHOUSE_DATABASE",
        default_value = "netmeter",
        help_heading = "ClickHouse"
    )]
    pub database: String,

    /// Only this cluster.
    #[arg(long, help_heading = "Filters")]
    pub cluster: Option<String>,
    /// Only the traffic of workloads in this namespace.
    #[arg(long, help_heading = "Filters")]
    pub namespace: Option<String>,
    /// Only the traffic of this workload: NAME or NAMESPACE/NAME.
    #[arg(long, help_heading = "Filters")]
    pub workload: Option<String>,
    /// Only this class (INTER_ZONE, INTERNET, ...).
    #[arg(long, value_parser = parse_class, help_heading = "Filters")]
    pub class: Option<String>,

    /// Rows a top list shows before summing the rest as `other`.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Output")]
    pub top: u32,
    #[arg(long, value_enum, default_value_t = Format::Table, help_heading = "Output")]
    pub format: Format,
    /// Also write the report as an HTML page to FILE.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub html: Option<PathBuf>,
    /// Leave the SQL out of the terminal tables.
    #[arg(long, help_heading = "Output")]
    pub no_sql: bool,
    /// A CSV of instance bandwidths that replaces or adds to the built-in table (same format
    /// as services/report/data/instance-bandwidth.csv).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub instance_bandwidth: Option<PathBuf>,
    /// Read `flows` only, never the rollups (the answers are the same; slower).
    #[arg(long, help_heading = "Output")]
    pub no_rollups: bool,
}

/// A checked `netmeter report`.
pub struct Config {
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: String,
    pub options: Options,
    pub format: Format,
    pub html: Option<PathBuf>,
    pub sql: bool,
}

impl Args {
    /// Checks the flags and reads the files they name; `now` is the end of relative ranges.
    pub fn validate(self, now: SystemTime) -> Result<Config, String> {
        let range = match (&self.from, self.since) {
            (Some(from), _) => {
                let from = parse_time(from, now).map_err(|e| format!("--from: {e}"))?;
                let to = match &self.to {
                    Some(to) => parse_time(to, now).map_err(|e| format!("--to: {e}"))?,
                    None => now,
                };
                TimeRange::new(from, to).map_err(|e| e.to_string())?
            }
            (None, since) => TimeRange::last(since.unwrap_or(Duration::from_secs(86_400)), now)
                .map_err(|e| format!("--since: {e}"))?,
        };
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "--clickhouse-url (env NETMETER_CLICKHOUSE_URL): `{}` is not an http:// or https:// URL",
                self.url
            ));
        }
        let plain = self
            .database
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && self
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(format!(
                "--database (env NETMETER_CLICKHOUSE_DATABASE): `{}` must be letters, digits and _",
                self.database
            ));
        }
        let password = match &self.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("--clickhouse-password-file {}: {e}", path.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            None => std::env::var("NETMETER_CLICKHOUSE_PASSWORD").unwrap_or_default(),
        };
        let bandwidth = match &self.instance_bandwidth {
            Some(path) => BandwidthTable::builtin_with_overrides(path)
                .map_err(|e| format!("--instance-bandwidth: {e}"))?,
            None => BandwidthTable::builtin(),
        };
        let empty_to_none = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        Ok(Config {
            url: self.url,
            user: self.user,
            password,
            database: self.database,
            options: Options {
                range,
                filters: Filters {
                    cluster: empty_to_none(self.cluster),
                    namespace: empty_to_none(self.namespace),
                    workload: empty_to_none(self.workload),
                    class: self.class,
                },
                top: self.top as usize,
                bandwidth,
                rollups: !self.no_rollups,
            },
            format: self.format,
            html: self.html,
            sql: !self.no_sql,
        })
    }
}

/// `netmeter`, from the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                err.exit();
            }
            let rendered = err.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("error: {}", line.trim_start_matches("error: "));
            return ExitCode::from(CONFIG_ERROR_EXIT_CODE);
        }
    };
    let Command::Report(args) = cli.command;
    let config = match args.validate(SystemTime::now()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(CONFIG_ERROR_EXIT_CODE);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the report of `config` and prints it; the error is one line.
pub async fn run(config: &Config) -> Result<(), String> {
    let connection = Connection::new(
        &config.url,
        &config.user,
        &config.password,
        &config.database,
    );
    let report = crate::query::build(&connection, &config.options)
        .await
        .map_err(|e| e.to_string())?;
    let text = match config.format {
        Format::Table => render::terminal(
            &report,
            &TerminalStyle {
                sql: config.sql,
                ..TerminalStyle::default()
            },
        ),
        Format::Json => render::json(&report),
        Format::Csv => render::csv(&report),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    if let Some(path) = &config.html {
        std::fs::write(path, crate::html::render(&report))
            .map_err(|e| format!("--html {}: {e}", path.display()))?;
        eprintln!("wrote the HTML report to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut full = vec!["netmeter", "report"];
        full.extend(args);
        let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
        let Command::Report(args) = cli.command;
        args.validate(humantime::parse_rfc3339("2026-12-03T12:34:56Z").unwrap())
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ranges_and_filters_parse() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.options.range.seconds(), 86_400);
        let config = parse(&["--since", "1h", "--class", "internet", "--top", "3"]).unwrap();
        assert_eq!(config.options.range.seconds(), 3600);
        assert_eq!(config.options.filters.class.as_deref(), Some("INTERNET"));
        assert_eq!(config.options.top, 3);
        // `--to` is rounded up: the minute it falls in is part of the range.
        let config = parse(&["--from", "2026-12-01 10:00", "--to", "2026-12-01 12:00:30"]).unwrap();
        assert_eq!(
            crate::options::format_time(config.options.range.to),
            "2026-12-01 12:01:00"
        );
        assert!(parse(&["--from", "3h", "--since", "1h"]).is_err());
        let err = parse(&["--from", "soon"]).err().unwrap();
        assert!(err.starts_with("--from: `soon` is not a time"), "{err}");
        let err = parse(&["--database", "net-meter"]).err().unwrap();
        assert!(err.contains("--database"), "{err}");
        let err = parse(&["--class", "cross-zone"]).err().unwrap();
        assert!(err.contains("INTER_ZONE"), "{err}");
    }
}
