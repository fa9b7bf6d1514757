//! `netmeter report` as a user runs it: a process against the fixture's ClickHouse, its JSON
//! equal to the library's report, CSV and terminal output, the HTML page written where asked,
//! and one-line errors with exit code 2 for flags and 1 for a report that cannot be made.

mod fixture;

use std::process::{Command, Output};

use netmeter_report::options::format_time;
use netmeter_report::{Connection, Options, build};
use netmeter_tests::Stack;
use serde_json::Value;

fn netmeter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netmeter"))
        .args(args)
        .env_remove("NETMETER_CLICKHOUSE_URL")
        .env_remove("NETMETER_CLICKHOUSE_PASSWORD")
        .env("COLUMNS", "120")
        .output()
        .expect("netmeter runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netmeter_report_prints_the_report_as_json_csv_and_tables() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let range = fixture::load(&client).await;
    let url = stack.clickhouse_url();
    let (from, to) = (format_time(range.from), format_time(range.to));
    let common = [
        "report",
        "--clickhouse-url",
        &url,
        "--from",
        &from,
        "--to",
        &to,
        "--no-rollups",
    ];

    let output = netmeter(&[&common[..], &["--format", "json"]].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let connection = Connection::new(&url, "default", "", fixture::DATABASE);
    let expected = build(
        &connection,
        &Options {
            rollups: false,
            ..Options::new(range)
        },
    )
    .await
    .unwrap();
    let mut expected = serde_json::to_value(&expected).unwrap();
    expected["generated_at"] = printed["generated_at"].clone();
    assert_eq!(printed, expected);

    let output = netmeter(&[&common[..], &["--format", "csv", "--top", "1"]].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    let csv = String::from_utf8(output.stdout).unwrap();
    assert!(
        csv.starts_with("section,table,class,sent_bytes,received_bytes,cost_usd,"),
        "{csv}"
    );
    assert!(csv.contains("\ncross_zone,top_pairs,other,"), "{csv}");

    let page = stack.dir().join("report.html");
    let page_arg = page.to_str().unwrap();
    let output = netmeter(&[&common[..], &["--no-sql", "--html", page_arg]].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(
        text.starts_with(&format!("netmeter report: {from} to ")),
        "{text}"
    );
    assert!(text.contains("1. Overview"), "{text}");
    assert!(text.contains("at risk"), "{text}");
    assert!(!text.contains("SELECT"), "--no-sql: {text}");
    for line in text.lines() {
        assert!(
            line.chars().count() <= 120,
            "wider than COLUMNS=120: {line}"
        );
    }
    assert!(
        text.contains("(too narrow for: burst bandwidth bps, p99 utilization; "),
        "{text}"
    );
    assert_eq!(
        stderr(&output),
        format!("wrote the HTML report to {page_arg}\n")
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<html"), "{html}");
    assert!(html.contains("\"by_class\""), "the page embeds the report");

    // A password file is read; a user ClickHouse does not know is refused.
    let secret = stack.dir().join("password");
    std::fs::write(&secret, "secret\n").unwrap();
    let output = netmeter(
        &[
            &common[..],
            &[
                "--clickhouse-user",
                "nobody",
                "--clickhouse-password-file",
                secret.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with(&format!("error: ClickHouse at {url} refused user `nobody`")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn errors_are_one_line_with_distinct_exit_codes() {
    let url = format!("http://127.0.0.1:{}", netmeter_tests::free_port());
    let output = netmeter(&["report", "--clickhouse-url", &url, "--since", "1h"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with(&format!("error: cannot reach ClickHouse at {url}: ")),
        "{message}"
    );

    for (args, expected) in [
        (
            &["report", "--from", "soon"][..],
            "error: --from: `soon` is not a time",
        ),
        (
            &["report", "--class", "cross-zone"][..],
            "error: invalid value 'cross-zone' for '--class <CLASS>'",
        ),
        (
            &["report", "--clickhouse-url", "clickhouse:8123"][..],
            "error: --clickhouse-url (env NETMETER_CLICKHOUSE_URL): `clickhouse:8123` is not",
        ),
        (
            &["report", "--instance-bandwidth", "/nonexistent.csv"][..],
            "error: --instance-bandwidth: cannot read /nonexistent.csv",
        ),
        (
            &["report", "--top", "0"][..],
            "error: invalid value '0' for '--top <TOP>'",
        ),
    ] {
        let output = netmeter(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let message = stderr(&output);
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(message.starts_with(expected), "{args:?}: {message}");
    }
}
