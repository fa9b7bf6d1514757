//! The collector binary as Kubernetes runs it: probes, metrics, SIGTERM, bad configuration.

use std::path::Path;

use netmeter_tests::Stack;
use netmeter_tests::netns::NodeTopology;
use netmeter_tests::service::{RunningService, check_config_error, check_lifecycle};
use netmeter_tests::stack::Endpoints;

const BIN: &str = env!("CARGO_BIN_EXE_netmeter-collector");

#[tokio::test(flavor = "multi_thread")]
async fn ready_against_the_stack_and_exits_cleanly_on_sigterm() {
    let stack = Stack::start().await.unwrap();
    let topology = NodeTopology::create().unwrap();
    let netns = format!("--netns={}", topology.node_ns_path().display());
    let state_dir = tempfile::tempdir().unwrap();
    let state_dir = format!("--state-dir={}", state_dir.path().display());
    check_lifecycle(
        Path::new(BIN),
        "collector",
        &stack,
        &["--node-name", "node-a", &netns, &state_dir],
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
    check_config_error(bin, &["--mark", "0xzz/0xff"], &[], "--mark").unwrap();
    check_config_error(bin, &[], &[("NETMETER_ZONE", "70000")], "NETMETER_ZONE").unwrap();
    check_config_error(bin, &["--state-max-age", "0s"], &[], "--state-max-age").unwrap();
}

#[test]
fn waits_for_conntrack_accounting_and_can_switch_it_on() {
    let topology = NodeTopology::create().unwrap();
    let node = topology.node_ns_name();
    let acct = |value: Option<&str>| {
        let mut command = std::process::Command::new("ip");
        command.args([
            "netns",
            "exec",
            node,
            "sysctl",
            "-n",
            "net.netfilter.nf_conntrack_acct",
        ]);
        if let Some(value) = value {
            command
                .args(["-w"])
                .arg(format!("net.netfilter.nf_conntrack_acct={value}"));
            command.args(["-q"]);
        }
        String::from_utf8(command.output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    acct(Some("0"));
    assert_eq!(acct(None), "0");
    let netns = format!("--netns={}", topology.node_ns_path().display());
    let args = [
        "--output=stdout",
        "--node-name=node-a",
        "--http-addr=127.0.0.1:0",
        "--log-format=pretty",
        &netns,
    ];
    // Accounting off: the collector waits, not ready, says why, and exports the fact.
    let mut waiting = RunningService::launch(
        Path::new(BIN),
        &Endpoints {
            kafka_bootstrap: "127.0.0.1:9".into(),
            clickhouse_url: String::new(),
        },
        &args[..2],
        &[(
            "NETMETER_NETNS",
            &topology.node_ns_path().display().to_string(),
        )],
        None,
    )
    .unwrap();
    const ACCOUNTING: &str = "netmeter_collector_conntrack_accounting";
    assert!(
        netmeter_tests::wait_until(std::time::Duration::from_secs(10), || waiting
            .metric(ACCOUNTING)
            == Some(0.0)),
        "{}",
        waiting.process.log_tail()
    );
    assert_eq!(waiting.get("/readyz").unwrap().0, 503);
    let log = waiting.process.log_tail();
    assert!(
        log.contains("conntrack accounting is off") && log.contains("--enable-acct"),
        "{log}"
    );
    // Switched on by someone else: it starts by itself.
    acct(Some("1"));
    waiting
        .wait_ready(std::time::Duration::from_secs(15))
        .unwrap();
    assert_eq!(waiting.metric(ACCOUNTING), Some(1.0));
    drop(waiting);
    acct(Some("0"));

    let mut with_flag = std::process::Command::new(BIN)
        .args(args)
        .arg("--enable-acct")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(netmeter_tests::wait_until(
        std::time::Duration::from_secs(10),
        || acct(None) == "1"
    ));
    assert!(
        with_flag.try_wait().unwrap().is_none(),
        "keeps running once accounting is on"
    );
    with_flag.kill().unwrap();
    with_flag.wait().unwrap();
}
