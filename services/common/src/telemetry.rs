//! Logging set-up: JSON lines for log collectors, or pretty text for people.

use tracing_subscriber::EnvFilter;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    #[arg(
        long = "log-format",
        env = "NETMETER_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub format: LogFormat,
    /// Filter in `tracing` syntax, e.g. `info` or `info,netmeter_collector=debug`.
    #[arg(long = "log-level", env = "NETMETER_LOG", default_value = "info")]
    pub level: String,
}

impl LogArgs {
    /// Installs the global subscriber; logs go to stderr so stdout stays free for data.
    pub fn init(&self) -> Result<(), crate::ConfigError> {
        let filter = EnvFilter::try_new(&self.level)
            .map_err(|e| crate::ConfigError::invalid("--log-level", "NETMETER_LOG", e))?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        // A second init (tests running several services in one process) keeps the first one.
        let _ = match self.format {
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
            LogFormat::Pretty => builder.try_init(),
        };
        Ok(())
    }
}
