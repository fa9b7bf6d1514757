//! The sink binary as Kubernetes runs it: probes, metrics, SIGTERM, bad configuration.

use std::path::Path;

use netmeter_tests::Stack;
use netmeter_tests::service::{check_config_error, check_lifecycle};

const BIN: &str = env!("CARGO_BIN_EXE_netmeter-sink");

#[tokio::test(flavor = "multi_thread")]
async fn ready_against_the_stack_and_exits_cleanly_on_sigterm() {
    let stack = Stack::start().await.unwrap();
    check_lifecycle(Path::new(BIN), "sink", &stack, &[]).unwrap();
}

#[test]
fn bad_configuration_exits_2_with_one_line() {
    let bin = Path::new(BIN);
    check_config_error(
        bin,
        &["--clickhouse-url", "clickhouse:8123"],
        &[],
        "--clickhouse-url",
    )
    .unwrap();
    check_config_error(
        bin,
        &[],
        &[("NETMETER_CLICKHOUSE_DATABASE", "net-meter")],
        "NETMETER_CLICKHOUSE_DATABASE",
    )
    .unwrap();
    check_config_error(bin, &["--http-addr", "nowhere"], &[], "--http-addr").unwrap();
}
