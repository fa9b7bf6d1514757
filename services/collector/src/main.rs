use std::process::ExitCode;

fn main() -> ExitCode {
    let args: netmeter_collector::Args = netmeter_common::parse_args();
    let config = args.validate().unwrap_or_else(|e| e.exit());
    if let Some(code) = config.service.check_config_exit() {
        return code;
    }
    netmeter_common::run_service("collector", config.service.clone(), |ctx| {
        netmeter_collector::run(config, ctx)
    })
}
