use std::process::ExitCode;

fn main() -> ExitCode {
    let args: netmeter_sink::Args = netmeter_common::parse_args();
    let config = args.validate().unwrap_or_else(|e| e.exit());
    netmeter_common::run_service("sink", config.service.clone(), |ctx| {
        netmeter_sink::run(config, ctx)
    })
}
