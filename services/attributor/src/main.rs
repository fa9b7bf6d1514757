use std::process::ExitCode;

fn main() -> ExitCode {
    let args: netmeter_attributor::Args = netmeter_common::parse_args();
    let config = args.validate().unwrap_or_else(|e| e.exit());
    netmeter_common::run_service("attributor", config.service.clone(), |ctx| {
        netmeter_attributor::run(config, ctx)
    })
}
