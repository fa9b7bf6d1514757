use std::process::ExitCode;

use netmeter_attributor::{Args, Command, explain, replay};
use netmeter_common::{ConfigError, ServiceArgs};

fn main() -> ExitCode {
    let mut args: Args = netmeter_common::parse_args();
    // `explain` and `replay` are one-shot commands with arguments of their own.
    match args.command.take() {
        Some(Command::Explain(explain)) => {
            if args.service.check_config {
                return checked(&args.service, explain.attribution.validate());
            }
            explain::main(*explain)
        }
        Some(Command::Replay(replay)) => {
            if args.service.check_config {
                return checked(&args.service, replay.validate());
            }
            replay::main(*replay)
        }
        None => {
            let config = args.validate().unwrap_or_else(|e| e.exit());
            if let Some(code) = config.service.check_config_exit() {
                return code;
            }
            netmeter_common::run_service("attributor", config.service.clone(), |ctx| {
                netmeter_attributor::run(config, ctx)
            })
        }
    }
}

/// `--check-config explain|replay ...`: checks what that command would run with.
fn checked<T>(service: &ServiceArgs, validated: Result<T, ConfigError>) -> ExitCode {
    validated.unwrap_or_else(|e| e.exit());
    service.check_config_exit().unwrap_or(ExitCode::SUCCESS)
}
