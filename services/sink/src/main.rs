use std::process::ExitCode;

use netmeter_sink::{Args, Command};

fn main() -> ExitCode {
    let mut args: Args = netmeter_common::parse_args();
    let command = args.command.take();
    let config = args.validate().unwrap_or_else(|e| e.exit());
    // Also for `migrate` and `ddl`: they run with the service's configuration.
    if let Some(code) = config.service.check_config_exit() {
        return code;
    }
    match command {
        None => netmeter_common::run_service("sink", config.service.clone(), |ctx| {
            netmeter_sink::run(config, ctx)
        }),
        Some(Command::Migrate {
            kafka_engine,
            engine,
        }) => {
            let engine = kafka_engine.then(|| config.kafka_engine(engine));
            netmeter_sink::migrate_command(config, engine)
        }
        Some(Command::Ddl {
            kafka_engine,
            engine,
        }) => {
            let engine = kafka_engine.then(|| config.kafka_engine(engine));
            print!("{}", netmeter_sink::ddl(&config, engine.as_ref()));
            ExitCode::SUCCESS
        }
    }
}
