//! The collector binary as Kubernetes runs it: probes, metrics, SIGTERM, bad configuration.

use std::path::Path;

use netmeter_tests::Stack;
use netmeter_tests::service::{check_config_error, check_lifecycle};

const BIN: &str = env!("CARGO_BIN_EXE_netmeter-collector");

#[tokio::test(flavor = "multi_thread")]
async fn ready_against_the_stack_and_exits_cleanly_on_sigterm() {
    let stack = Stack::start().await.unwrap();
    check_lifecycle(
        Path::new(BIN),
        "collector",
        &stack,
        &["--node-name", "node-a"],
    )
    .unwrap();
}

#[test]
fn bad_configuration_exits_2_with_one_line() {
    let bin = Path::new(BIN);
    check_config_error(bin, &["--interval", "soon"], &[], "--interval").unwrap();
    check_config_error(
        bin,
        &[],
        &[("NETMETER_INTERVAL", "0s")],
        "NETMETER_INTERVAL",
    )
    .unwrap();
    check_config_error(
        bin,
        &["--netns", "/run/netns/does-not-exist"],
        &[],
        "--netns",
    )
    .unwrap();
    check_config_error(bin, &["--output", "file"], &[], "--output").unwrap();
}
