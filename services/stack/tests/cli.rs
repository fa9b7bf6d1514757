//! `netmeter-stack start|status|stop`: idempotent, on the ports given, and ends only its own
//! processes.

use std::process::{Command, Output};

use netmeter_stack::{broker, clickhouse};
use netmeter_tests::free_port;

fn stack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netmeter-stack"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn start_is_idempotent_and_stop_ends_both_components() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let (kafka, http, tcp) = (free_port(), free_port(), free_port());
    let (kafka_s, http_s, tcp_s) = (kafka.to_string(), http.to_string(), tcp.to_string());
    let start = [
        "start",
        "--dir",
        dir_arg,
        "--kafka-port",
        &kafka_s,
        "--clickhouse-http-port",
        &http_s,
        "--clickhouse-tcp-port",
        &tcp_s,
    ];

    let first = stack(&start);
    // Stop whatever started, even if an assertion below fails.
    struct StopOnDrop<'a>(&'a str);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            stack(&["stop", "--dir", self.0]);
        }
    }
    let _guard = StopOnDrop(dir_arg);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("broker     started"),
        "{}",
        text(&first)
    );
    assert!(broker::is_ready(kafka) && clickhouse::is_ready(http));

    let second = stack(&start);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("broker     already running"),
        "{}",
        text(&second)
    );
    assert!(
        text(&second).contains("clickhouse already running"),
        "{}",
        text(&second)
    );

    let status = stack(&["status", "--dir", dir_arg]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));

    let stop = stack(&["stop", "--dir", dir_arg]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(!broker::is_ready(kafka) && !clickhouse::is_ready(http));
    let status = stack(&["status", "--dir", dir_arg]);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));
    assert!(
        text(&status).contains("broker     stopped"),
        "{}",
        text(&status)
    );
}
