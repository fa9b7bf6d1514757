//! Command-line parsing with one-line errors and exit code 2 for anything the user got wrong.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};

/// Exit code for configuration errors (flags, env vars, config files), as for usage errors.
pub const CONFIG_ERROR_EXIT_CODE: i32 = 2;

/// A configuration value the user must fix; the message names the flag and its env var.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// `flag` as written on the command line (`--kafka-sasl-username`), `env` its variable.
    pub fn invalid(flag: &str, env: &str, problem: impl std::fmt::Display) -> Self {
        ConfigError(format!("{flag} (env {env}): {problem}"))
    }

    /// Prints `error: <message>` on one line and exits with [`CONFIG_ERROR_EXIT_CODE`].
    pub fn exit(&self) -> ! {
        eprintln!("error: {}", self.0);
        std::process::exit(CONFIG_ERROR_EXIT_CODE)
    }
}

/// Parses flags and env vars into `T`. `--help`/`--version` print and exit 0; any error prints
/// one line naming the flag (and its env var) and exits 2. Never panics.
pub fn parse_args<T: Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(err) => match err.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
            _ => ConfigError(one_line::<T>(&err)).exit(),
        },
    }
}

/// Clap's first error line (without `error: `), plus the env var of the flag it names.
fn one_line<T: CommandFactory>(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let mut line = first.trim_start_matches("error: ").to_string();
    if let Some(values) = rendered
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("[possible values:"))
    {
        line.push(' ');
        line.push_str(values);
    }
    if let Some(env) = env_of_invalid_arg::<T>(err) {
        line.push_str(&format!(" (env {env})"));
    }
    line
}

fn env_of_invalid_arg<T: CommandFactory>(err: &clap::Error) -> Option<String> {
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    // `arg` reads like `--interval <INTERVAL>`.
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let command = T::command();
    let mut commands = vec![&command];
    commands.extend(command.get_subcommands());
    commands
        .into_iter()
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Args {
        #[arg(long, env = "TEST_NETMETER_INTERVAL", value_parser = humantime::parse_duration)]
        interval: Option<std::time::Duration>,
    }

    #[test]
    fn invalid_value_names_flag_and_env_on_one_line() {
        let err = Args::try_parse_from(["x", "--interval", "soon"]).unwrap_err();
        let line = one_line::<Args>(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--interval"), "{line}");
        assert!(line.ends_with("(env TEST_NETMETER_INTERVAL)"), "{line}");
    }

    #[test]
    fn unknown_flag_is_one_line() {
        let err = Args::try_parse_from(["x", "--nope"]).unwrap_err();
        let line = one_line::<Args>(&err);
        assert!(line.contains("--nope") && !line.contains('\n'), "{line}");
    }
}
