use std::process::ExitCode;

use netmeter_proto::Schema;
use netmeter_sink::{Args, Command, schema};

fn main() -> ExitCode {
    let mut args: Args = netmeter_common::parse_args();
    let command = args.command.take();
    let config = args.validate().unwrap_or_else(|e| e.exit());
    // Also for `migrate` and `ddl`: they run with the service's configuration.
    if let Some(code) = config.service.check_config_exit() {
        return code;
    }
    let topic = config.kafka.topic(Schema::FlowsV1.tag());
    match command {
        None => netmeter_common::run_service("sink", config.service.clone(), |ctx| {
            netmeter_sink::run(config, ctx)
        }),
        Some(Command::Ddl {
            kafka_engine,
            engine,
        }) => {
            let engine = engine.with_defaults(&config.kafka.brokers, &topic);
            print!(
                "{}",
                schema::ddl(&config.schema, kafka_engine.then_some(&engine))
            );
            ExitCode::SUCCESS
        }
        Some(Command::Migrate {
            kafka_engine,
            engine,
        }) => {
            if let Err(err) = config.service.log.init() {
                err.exit();
            }
            let engine = engine.with_defaults(&config.kafka.brokers, &topic);
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let result = runtime.block_on(async {
                let client = config.clickhouse.client();
                let report = schema::migrate(&client, &config.schema).await?;
                if kafka_engine {
                    schema::create_kafka_engine(&client, &config.schema, &engine).await?;
                }
                anyhow::Ok(report)
            });
            match result {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    tracing::error!(error = format!("{err:#}"), "migration failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
