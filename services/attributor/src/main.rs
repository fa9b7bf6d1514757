use std::process::ExitCode;

use netmeter_attributor::{Args, Command};

fn main() -> ExitCode {
    let args: Args = netmeter_common::parse_args();
    if args.service.check_config {
        // `--check-config explain|replay ...` checks what that command would run with.
        let checked = match &args.command {
            Some(Command::Explain(explain)) => explain.attribution.validate(),
            Some(Command::Replay(replay)) => replay.validate(),
            None => args.validate_service(),
        };
        checked.unwrap_or_else(|e| e.exit());
        return args
            .service
            .check_config_exit()
            .unwrap_or(ExitCode::SUCCESS);
    }
    match args.command {
        Some(Command::Explain(explain)) => netmeter_attributor::explain::main(*explain),
        Some(Command::Replay(replay)) => netmeter_attributor::replay::main(*replay),
        None => {
            let settings = args.validate_service().unwrap_or_else(|e| e.exit());
            netmeter_common::run_service("attributor", args.service.clone(), |ctx| {
                netmeter_attributor::run(args, settings, ctx)
            })
        }
    }
}
