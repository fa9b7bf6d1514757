//! A report that cannot be made says why in one line: the server cannot be reached (its URL),
//! the credentials are refused, the schema is missing (start the sink) or older than the
//! report, or the range holds no data (and the likely reason: nothing collected yet, the range
//! after the newest record or before the oldest, filters that match nothing, a gap).

mod fixture;

use std::time::{Duration, SystemTime};

use netmeter_report::model::Filters;
use netmeter_report::options::format_time;
use netmeter_report::{Connection, Options, ReportError, TimeRange, build};
use netmeter_sink::schema::{SchemaSettings, migrate, migrate_to};
use netmeter_tests::Stack;

async fn error(connection: &Connection, options: &Options) -> ReportError {
    let error = build(connection, options)
        .await
        .expect_err("the report fails");
    let line = error.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    error
}

fn last_hour() -> TimeRange {
    TimeRange::last(Duration::from_secs(3600), SystemTime::now()).unwrap()
}

#[tokio::test]
async fn an_unreachable_server_names_its_url() {
    let url = format!("http://127.0.0.1:{}", netmeter_tests::free_port());
    let connection = Connection::new(&url, "default", "", "netmeter");
    let err = error(&connection, &Options::new(last_hour())).await;
    assert_eq!(err.label(), "unreachable", "{err}");
    let line = err.to_string();
    assert!(
        line.starts_with(&format!("cannot reach ClickHouse at {url}: ")),
        "{line}"
    );
    assert!(line.contains("Connection refused"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_missing_and_old_schemas_say_what_to_do() {
    let stack = Stack::start().await.unwrap();
    let url = stack.clickhouse_url();
    let client = stack.clickhouse_client();
    let options = Options::new(last_hour());

    let err = error(
        &Connection::new(&url, "nobody", "secret", "netmeter"),
        &options,
    )
    .await;
    assert_eq!(
        err.to_string(),
        format!(
            "ClickHouse at {url} refused user `nobody`: wrong user or password \
             (--clickhouse-user; the password comes from NETMETER_CLICKHOUSE_PASSWORD or \
             --clickhouse-password-file)"
        )
    );

    let err = error(&Connection::new(&url, "default", "", "nothing"), &options).await;
    assert_eq!(
        err.to_string(),
        format!(
            "no netmeter schema in database `nothing` at {url}: start the sink \
             (netmeter-sink), which creates it, or pass the --database it writes to"
        )
    );

    // Each older schema is refused naming the first thing it lacks: version 3 the initiator,
    // version 4 the egress path, place and network of the remote address, version 5 the
    // per-connection detail.
    for (database, version, lacks) in [
        ("old", 3, "flows has no column local_initiated"),
        ("v4", 4, "flows has no column path"),
        ("v5", 5, "connection_minutes has no column interval_start"),
    ] {
        migrate_to(&client, &SchemaSettings::new(database), version)
            .await
            .unwrap();
        let err = error(&Connection::new(&url, "default", "", database), &options).await;
        assert_eq!(err.label(), "old_schema", "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "{database}.{lacks}: the schema is older than this report; start the \
                 netmeter-sink of this release, which migrates it"
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_range_says_why_it_may_be_empty() {
    let stack = Stack::start().await.unwrap();
    let url = stack.clickhouse_url();
    let client = stack.clickhouse_client();

    // Nothing has arrived yet.
    migrate(&client, &SchemaSettings::new("fresh"))
        .await
        .unwrap();
    let fresh = Connection::new(&url, "default", "", "fresh");
    let range = last_hour();
    let err = error(&fresh, &Options::new(range)).await;
    assert_eq!(
        err.to_string(),
        format!(
            "no data from {} to {} UTC: fresh.flows is empty: no record has reached ClickHouse \
             yet; is the sink (netmeter-sink) running, and are the collectors and attributors \
             publishing?",
            format_time(range.from),
            format_time(range.to)
        )
    );

    let data = fixture::load(&client).await;
    let connection = Connection::new(&url, "default", "", fixture::DATABASE);
    let newest = format_time(data.to - 300);
    let oldest = format_time(data.previous().from);

    // After the newest record: the pipeline stopped.
    let err = error(&connection, &Options::new(last_hour())).await;
    assert_eq!(err.label(), "no_data");
    assert!(
        err.to_string().ends_with(&format!(
            "the newest record starts at {newest}: the range is after it; the sink may be \
             stopped or behind, or the collectors stopped"
        )),
        "{err}"
    );

    // Before the oldest: expired.
    let before = TimeRange {
        from: data.from - 10 * 86_400,
        to: data.from - 9 * 86_400,
    };
    let err = error(&connection, &Options::new(before)).await;
    assert!(
        err.to_string().ends_with(&format!(
            "the oldest record starts at {oldest}: the range is before it (older records \
             expired with the sink's --ttl-days, or were never collected)"
        )),
        "{err}"
    );

    // Filters that match nothing in a range with data.
    let options = Options {
        filters: Filters {
            namespace: Some("payments".into()),
            ..Filters::default()
        },
        ..Options::new(data)
    };
    let err = error(&connection, &options).await;
    let records = netmeter_tests::clickhouse::query_text(
        &client,
        &format!(
            "SELECT count() FROM netmeter.flows FINAL
             WHERE interval_start >= '{}' AND interval_start < '{}'",
            format_time(data.from),
            format_time(data.to)
        ),
        "TabSeparated",
    )
    .await;
    assert!(
        err.to_string().contains(&format!(
            "the filters --namespace payments match none of the {} records in the range \
             (clusters: ",
            records.trim()
        )) && err.to_string().ends_with("; namespaces: obs, shop)"),
        "{err}"
    );

    // A gap: records every 5 minutes, none from minute 1 to 4.
    let gap = TimeRange {
        from: data.from + 60,
        to: data.from + 240,
    };
    let err = error(&connection, &Options::new(gap)).await;
    assert!(
        err.to_string().ends_with(&format!(
            "there are records before and after the range ({oldest} to {newest}) but none in \
             it: collection or the pipeline was down then"
        )),
        "{err}"
    );
}
