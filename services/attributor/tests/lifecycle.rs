//! The attributor binary as Kubernetes runs it: probes, metrics, SIGTERM, bad configuration.

use std::path::Path;

use netmeter_tests::Stack;
use netmeter_tests::service::{check_config_error, check_lifecycle};

const BIN: &str = env!("CARGO_BIN_EXE_netmeter-attributor");

#[tokio::test(flavor = "multi_thread")]
async fn ready_against_the_stack_and_exits_cleanly_on_sigterm() {
    let stack = Stack::start().await.unwrap();
    // No --cloud-ranges-dir: the built-in snapshot.
    let args = ["--cluster", "test", "--kubernetes=false"];
    check_lifecycle(Path::new(BIN), "attributor", &stack, &args).unwrap();
}

#[test]
fn bad_configuration_exits_2_with_one_line() {
    let bin = Path::new(BIN);
    let sasl = [
        ("NETMETER_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
        ("NETMETER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
    ];
    check_config_error(bin, &[], &sasl, "NETMETER_KAFKA_SASL_USERNAME").unwrap();
    check_config_error(
        bin,
        &["--kafka-security-protocol", "tls"],
        &[],
        "--kafka-security-protocol",
    )
    .unwrap();
    check_config_error(bin, &["--cluster", " "], &[], "--cluster").unwrap();
    check_config_error(bin, &["--cloud", "ibm"], &[], "--cloud").unwrap();
    check_config_error(bin, &["--rules", "/nonexistent/rules.yaml"], &[], "--rules").unwrap();
    check_config_error(
        bin,
        &["--cloud-ranges-dir", "/nonexistent/ranges"],
        &[],
        "--cloud-ranges-dir",
    )
    .unwrap();
    check_config_error(
        bin,
        &[],
        &[("NETMETER_CLOUD_RANGES_REFRESH", "6h")],
        "--cloud-ranges-refresh",
    )
    .unwrap();
}
