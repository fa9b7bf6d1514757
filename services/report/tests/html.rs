//! The HTML report as a person sees it, in headless Chromium (scripts/install-deps --tests installs it).
//!
//! The fixture's flows go into a real ClickHouse; `query` builds the report over the fixture's
//! range and `html::render` makes the page. Chromium opens the file with no network: the page
//! draws without a console message or a request, every chart gets the rows of its table, every
//! table cell and card shows the report's exact value, and those numbers equal direct SQL over
//! the same range: bytes and dollars by class in both periods, every bucket of the cost over
//! time, the sankey's total, every zone matrix cell, every top pair and egress destination and
//! their totals, internet egress per country (and the new ones) with the destinations new this
//! period highlighted, the cost per namespace and day, each node's peak. The page and a screenshot
//! are kept in `<target>/test-artifacts/html-report/`.
//!
//! The checks themselves are tested: a page with a console error, an uncaught exception and a
//! remote image is caught, and so is a report the page cannot draw.

#[path = "html/chromium.rs"]
mod chromium;
#[path = "html/dom.rs"]
mod dom;
mod fixture;
#[path = "html/page.rs"]
mod page;

use std::collections::BTreeMap;
use std::path::PathBuf;

use netmeter_report::model;
use netmeter_report::model::{Column, Filters, Kind, Report, Section, Table};
use netmeter_report::options::format_time;
use netmeter_report::{Connection, Options, build};
use netmeter_tests::Stack;
use serde_json::{Map, Value, json};

use page::assert_close;

/// The screenshot's size in CSS pixels: a laptop's width, and the height of the fixture's whole
/// page (about 7,700 px with the SQL and long tables folded).
const SCREENSHOT: (u32, u32) = (1400, 7700);

/// Where the page and its screenshot are kept: `<target>/test-artifacts/<name>`.
fn artifacts(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // <target>/debug/deps/html-<hash>
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().to_path_buf()
        });
    let dir = target.join("test-artifacts").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_direct_sql_says_about_the_fixture() {
    let stack = Stack::start().await.unwrap();
    let client = stack.clickhouse_client();
    let range = fixture::load(&client).await;
    let connection = Connection::new(&stack.clickhouse_url(), "default", "", fixture::DATABASE);
    let options = Options::new(range);
    let report = build(&connection, &options)
        .await
        .unwrap_or_else(|e| panic!("building the report: {e}"));
    let html = netmeter_report::html::render(&report);
    let dir = artifacts("html-report");
    let shown = page::check(&report, &html, &dir);

    let sql = Sql {
        client: client.with_setting("output_format_json_quote_64bit_integers", "0"),
        flows: format!("{}.flows FINAL", fixture::DATABASE),
        from: format_time(range.from),
        to: format_time(range.to),
        previous_from: format_time(range.previous().from),
    };
    by_class(&sql, &report, &shown).await;
    cost_over_time(&sql, &report, &shown).await;
    sankey(&sql, &shown).await;
    zone_matrix(&sql, &report, &shown).await;
    top_pairs(&sql, &report, &shown).await;
    destinations(&sql, &report, &shown).await;
    egress_countries(&sql, &report, &shown).await;
    new_destinations(&sql, &report, &shown).await;
    namespaces_by_day(&sql, &report, &shown).await;
    node_peaks(&sql, &report, &shown, options.top).await;

    let page = dir.join("report.html");
    let png = dir.join("report.png");
    let (width, height) = SCREENSHOT;
    chromium::screenshot(
        &page,
        &chromium::work_dir(&dir, "screenshot"),
        &png,
        width,
        height,
    );
    println!("page: {} ({} bytes)", page.display(), html.len());
    println!("screenshot: {}", png.display());
}

/// Direct SQL on `flows FINAL` over the report's range, written here from the meaning of each
/// figure, not taken from `query`.
struct Sql {
    client: clickhouse::Client,
    /// `<database>.flows FINAL`: a replayed record counts once, with its latest attribution.
    flows: String,
    from: String,
    to: String,
    previous_from: String,
}

impl Sql {
    fn current(&self) -> String {
        format!(
            "interval_start >= '{}' AND interval_start < '{}'",
            self.from, self.to
        )
    }

    fn previous(&self) -> String {
        format!(
            "interval_start >= '{}' AND interval_start < '{}'",
            self.previous_from, self.from
        )
    }

    async fn rows(&self, sql: &str) -> Vec<Map<String, Value>> {
        netmeter_tests::clickhouse::query_text(&self.client, sql, "JSONEachRow")
            .await
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// `namespace/workload`, or `node <name>` for node processes, on `side`.
fn endpoint(side: &str) -> String {
    format!(
        "if({side}_workload_name != '', concat({side}_namespace, '/', {side}_workload_name), \
         concat('node ', {side}_node))"
    )
}

/// Rows by the text of their `keys` columns.
fn keyed(rows: &[Map<String, Value>], keys: &[&str]) -> BTreeMap<Vec<String>, Map<String, Value>> {
    rows.iter()
        .map(|row| {
            let key = keys
                .iter()
                .map(|k| {
                    row[*k]
                        .as_str()
                        .unwrap_or_else(|| panic!("{k} in {row:?}"))
                        .to_string()
                })
                .collect();
            (key, row.clone())
        })
        .collect()
}

fn bytes(row: &Map<String, Value>, column: &str) -> u64 {
    row[column]
        .as_u64()
        .unwrap_or_else(|| panic!("{column} is not a byte count in {row:?}"))
}

fn number(row: &Map<String, Value>, column: &str) -> f64 {
    row[column]
        .as_f64()
        .unwrap_or_else(|| panic!("{column} is not a number in {row:?}"))
}

/// The page's rows of a top list without its `other` row.
fn named(rows: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
    rows.into_iter()
        .filter(|r| r["workload"] != "other")
        .collect()
}

/// Cards (this period) and the by-class table (previous period): a byte between two of our
/// endpoints on one node is sent by one and received by the other; every other record is one
/// endpoint's own bytes.
async fn by_class(sql: &Sql, report: &Report, shown: &page::Shown) {
    let flows = &sql.flows;
    let query = |range: String| {
        format!(
            "SELECT class,
    sumIf(bytes, direction = 'out' OR class = 'INTRA_NODE') AS sent_bytes,
    sumIf(bytes, direction = 'in' OR class = 'INTRA_NODE') AS received_bytes,
    sum(cost_usd) AS cost_usd
FROM {flows}
WHERE {range}
GROUP BY class"
        )
    };
    let current = keyed(&sql.rows(&query(sql.current())).await, &["class"]);
    let previous = keyed(&sql.rows(&query(sql.previous())).await, &["class"]);
    let page_rows = keyed(&shown.rows(report, "overview", "by_class"), &["class"]);
    let classes: Vec<&Vec<String>> = current.keys().chain(previous.keys()).collect();
    for class in &classes {
        assert!(page_rows.contains_key(*class), "no row for {class:?}");
    }
    assert_eq!(page_rows.len(), {
        let mut all = classes.clone();
        all.sort();
        all.dedup();
        all.len()
    });
    let zero = Map::from_iter([
        ("sent_bytes".to_string(), json!(0)),
        ("received_bytes".to_string(), json!(0)),
        ("cost_usd".to_string(), json!(0.0)),
    ]);
    for (key, row) in &page_rows {
        let class = &key[0];
        let now = current.get(key).unwrap_or(&zero);
        let before = previous.get(key).unwrap_or(&zero);
        let card = &shown.cards[class];
        for field in ["sent_bytes", "received_bytes"] {
            assert_eq!(
                card[field],
                bytes(now, field) as f64,
                "card {class} {field}"
            );
            assert_eq!(bytes(row, field), bytes(now, field), "{class} {field}");
            let previous_field = format!("previous_{field}");
            assert_eq!(
                bytes(row, &previous_field),
                bytes(before, field),
                "{class} {previous_field}"
            );
        }
        assert_close(
            card["cost_usd"],
            number(now, "cost_usd"),
            &format!("card {class} cost"),
        );
        assert_close(
            number(row, "previous_cost_usd"),
            number(before, "cost_usd"),
            &format!("{class} previous cost"),
        );
    }
    let total: f64 = current.values().map(|r| number(r, "cost_usd")).sum();
    assert_close(
        shown.cards["All classes"]["cost_usd"],
        total,
        "card All classes cost",
    );
}

/// Every bucket and class of the stacked chart, and its total.
async fn cost_over_time(sql: &Sql, report: &Report, shown: &page::Shown) {
    let flows = &sql.flows;
    let expected = sql
        .rows(&format!(
            "SELECT
    toString(toStartOfInterval(toDateTime(interval_start, 'UTC'), INTERVAL {bucket} SECOND)) AS bucket,
    class,
    sum(bytes) + sumIf(bytes, class = 'INTRA_NODE') AS bytes,
    sum(cost_usd) AS cost_usd
FROM {flows}
WHERE {range}
GROUP BY bucket, class",
            bucket = report.bucket,
            range = sql.current()
        ))
        .await;
    let expected = keyed(&expected, &["bucket", "class"]);
    let page_rows = keyed(
        &shown.rows(report, "overview", "cost_over_time"),
        &["bucket", "class"],
    );
    assert_eq!(
        page_rows.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "buckets and classes of cost_over_time"
    );
    for (key, row) in &page_rows {
        assert_eq!(
            bytes(row, "bytes"),
            bytes(&expected[key], "bytes"),
            "{key:?}"
        );
        assert_close(
            number(row, "cost_usd"),
            number(&expected[key], "cost_usd"),
            &format!("{key:?}"),
        );
    }
    let total: f64 = expected.values().map(|r| number(r, "cost_usd")).sum();
    assert_close(
        shown.charts["cost_over_time"].total,
        total,
        "cost_over_time chart",
    );
}

/// The sankey carries every byte sent in the range once.
async fn sankey(sql: &Sql, shown: &page::Shown) {
    let flows = &sql.flows;
    let sent = sql
        .rows(&format!(
            "SELECT sumIf(bytes, direction = 'out' OR class = 'INTRA_NODE') AS sent FROM {flows} WHERE {}",
            sql.current()
        ))
        .await;
    assert_eq!(
        shown.charts["sankey"].total,
        bytes(&sent[0], "sent") as f64,
        "sankey total"
    );
}

/// Every cell of the zone matrix: bytes sent from a zone to a zone (within a node, the
/// receiving side's record says what the other endpoint sent).
async fn zone_matrix(sql: &Sql, report: &Report, shown: &page::Shown) {
    let flows = &sql.flows;
    let expected = sql
        .rows(&format!(
            "SELECT local_zone, remote_zone, sum(bytes) AS sent_bytes
FROM
(
    SELECT if(direction = 'out', local_zone, remote_zone) AS local_zone,
           if(direction = 'out', remote_zone, local_zone) AS remote_zone,
           bytes
    FROM {flows}
    WHERE {range} AND (direction = 'out' OR class = 'INTRA_NODE')
)
WHERE local_zone != '' AND remote_zone != ''
GROUP BY local_zone, remote_zone",
            range = sql.current()
        ))
        .await;
    let expected = keyed(&expected, &["local_zone", "remote_zone"]);
    let page_rows = keyed(
        &shown.rows(report, "cross_zone", "zone_matrix"),
        &["local_zone", "remote_zone"],
    );
    assert_eq!(page_rows.len(), expected.len(), "zone pairs");
    for (key, row) in &page_rows {
        let want = expected
            .get(key)
            .unwrap_or_else(|| panic!("no traffic from {key:?}"));
        assert_eq!(
            bytes(row, "sent_bytes"),
            bytes(want, "sent_bytes"),
            "{key:?}"
        );
    }
    let total: u64 = expected.values().map(|r| bytes(r, "sent_bytes")).sum();
    assert_eq!(
        shown.charts["zone_matrix"].total, total as f64,
        "zone_matrix chart"
    );
}

/// The top pair costs the most of all pairs across zones and regions, every pair shown has its
/// own bytes and dollars, and with `other` the list holds all of them.
async fn top_pairs(sql: &Sql, report: &Report, shown: &page::Shown) {
    let flows = &sql.flows;
    let expected = sql
        .rows(&format!(
            "SELECT {workload} AS workload, local_zone AS zone,
    if(remote_workload_name != '', concat(remote_namespace, '/', remote_workload_name),
       concat('node ', remote_node)) AS peer,
    remote_zone AS peer_zone, class,
    sumIf(bytes, direction = 'out') AS sent_bytes,
    sumIf(bytes, direction = 'in') AS received_bytes,
    sum(cost_usd) AS cost_usd
FROM {flows}
WHERE {range} AND class IN ('INTER_ZONE', 'INTER_REGION', 'INTER_CLOUD')
  AND (remote_workload_name != '' OR remote_node != '')
GROUP BY workload, zone, peer, peer_zone, class",
            workload = endpoint("local"),
            range = sql.current()
        ))
        .await;
    let keys = ["workload", "zone", "peer", "peer_zone", "class"];
    let expected = keyed(&expected, &keys);
    let all = shown.rows(report, "cross_zone", "top_pairs");
    let page_rows = named(all.clone());
    assert!(!page_rows.is_empty(), "no top pair");
    for (key, row) in keyed(&page_rows, &keys) {
        let want = expected
            .get(&key)
            .unwrap_or_else(|| panic!("no such pair {key:?}"));
        assert_eq!(
            bytes(&row, "sent_bytes"),
            bytes(want, "sent_bytes"),
            "{key:?}"
        );
        assert_eq!(
            bytes(&row, "received_bytes"),
            bytes(want, "received_bytes"),
            "{key:?}"
        );
        assert_close(
            number(&row, "cost_usd"),
            number(want, "cost_usd"),
            &format!("{key:?}"),
        );
    }
    let highest = expected
        .values()
        .map(|r| number(r, "cost_usd"))
        .fold(0.0, f64::max);
    assert_close(
        number(&page_rows[0], "cost_usd"),
        highest,
        "the top pair's cost",
    );
    let sent: u64 = expected.values().map(|r| bytes(r, "sent_bytes")).sum();
    assert_eq!(
        all.iter().map(|r| bytes(r, "sent_bytes")).sum::<u64>(),
        sent,
        "all pairs"
    );
    assert_eq!(
        shown.charts["top_pairs"].total, sent as f64,
        "top_pairs chart"
    );
}

/// Cloud services and the internet per workload: each shown row, and all of them together.
async fn destinations(sql: &Sql, report: &Report, shown: &page::Shown) {
    let flows = &sql.flows;
    let expected = sql
        .rows(&format!(
            "SELECT {workload} AS workload,
    multiIf(remote_service != '', concat(remote_service, ' (', remote_region, ')'),
            class = 'INTERNET', 'internet',
            concat(remote_cloud, ' ', remote_region)) AS destination,
    class,
    sumIf(bytes, direction = 'out') AS sent_bytes,
    sumIf(bytes, direction = 'in') AS received_bytes,
    sum(cost_usd) AS cost_usd
FROM {flows}
WHERE {range} AND (remote_service != '' OR class IN ('INTERNET', 'INTER_CLOUD'))
GROUP BY workload, destination, class",
            workload = endpoint("local"),
            range = sql.current()
        ))
        .await;
    let keys = ["workload", "destination", "class"];
    let expected = keyed(&expected, &keys);
    let all = shown.rows(report, "egress", "destinations");
    for (key, row) in keyed(&named(all.clone()), &keys) {
        let want = expected
            .get(&key)
            .unwrap_or_else(|| panic!("no such destination {key:?}"));
        assert_eq!(
            bytes(&row, "sent_bytes"),
            bytes(want, "sent_bytes"),
            "{key:?}"
        );
        assert_eq!(
            bytes(&row, "received_bytes"),
            bytes(want, "received_bytes"),
            "{key:?}"
        );
        assert_close(
            number(&row, "cost_usd"),
            number(want, "cost_usd"),
            &format!("{key:?}"),
        );
    }
    let sent: u64 = expected.values().map(|r| bytes(r, "sent_bytes")).sum();
    assert_eq!(
        all.iter().map(|r| bytes(r, "sent_bytes")).sum::<u64>(),
        sent,
        "all destinations"
    );
    assert_eq!(
        shown.charts["destinations"].total, sent as f64,
        "destinations chart"
    );
}

/// Internet egress per country: each row and the chart's total, and which countries are new
/// (nothing was sent there in the previous period).
async fn egress_countries(sql: &Sql, report: &Report, shown: &page::Shown) {
    let flows = &sql.flows;
    let egress = "class IN ('INTERNET', 'INTER_CLOUD') AND direction = 'out'";
    let sent = |range: String| {
        format!(
            "SELECT if(remote_country = '', 'unknown', remote_country) AS country,
    sum(bytes) AS sent_bytes
FROM {flows}
WHERE {range} AND {egress}
GROUP BY country
HAVING sent_bytes > 0"
        )
    };
    let current = keyed(&sql.rows(&sent(sql.current())).await, &["country"]);
    let previous = keyed(&sql.rows(&sent(sql.previous())).await, &["country"]);
    let page_rows = keyed(
        &shown.rows(report, "egress_destinations", "countries"),
        &["country"],
    );
    assert_eq!(
        page_rows.keys().collect::<Vec<_>>(),
        current.keys().collect::<Vec<_>>(),
        "countries"
    );
    for (key, row) in &page_rows {
        assert_eq!(
            bytes(row, "sent_bytes"),
            bytes(&current[key], "sent_bytes"),
            "{key:?}"
        );
        assert_eq!(
            row["new"],
            json!(!previous.contains_key(key)),
            "{key:?} new"
        );
    }
    assert!(
        page_rows.values().any(|r| r["new"] == json!(true)),
        "the fixture has a new country"
    );
    let total: u64 = current.values().map(|r| bytes(r, "sent_bytes")).sum();
    assert_eq!(
        shown.charts["countries"].total, total as f64,
        "countries chart"
    );
}

/// The destinations table highlights exactly the rows of (workload, country, network) that
/// received nothing from the workload in the previous period.
async fn new_destinations(sql: &Sql, report: &Report, shown: &page::Shown) {
    let flows = &sql.flows;
    let keys = |range: String| {
        format!(
            "SELECT DISTINCT {workload} AS workload,
    if(remote_country = '', 'unknown', remote_country) AS country,
    toString(remote_asn) AS asn
FROM {flows}
WHERE {range} AND class IN ('INTERNET', 'INTER_CLOUD') AND direction = 'out' AND bytes > 0",
            workload = endpoint("local")
        )
    };
    let names = ["workload", "country", "asn"];
    let current = keyed(&sql.rows(&keys(sql.current())).await, &names);
    let previous = keyed(&sql.rows(&keys(sql.previous())).await, &names);
    let expected: Vec<&Vec<String>> = current
        .keys()
        .filter(|k| !previous.contains_key(*k))
        .collect();
    assert!(!expected.is_empty(), "the fixture has a new destination");
    let rows = shown.rows(report, "egress_destinations", "destinations");
    let classes = dom::row_classes(&shown.dom, "egress_destinations.destinations")
        .expect("the destinations table");
    assert_eq!(classes.len(), rows.len());
    let mut highlighted: Vec<Vec<String>> = rows
        .iter()
        .zip(&classes)
        .filter(|(_, class)| class.split(' ').any(|c| c == "new"))
        .map(|(row, _)| {
            assert_eq!(row["new"], json!(true), "{row:?}");
            vec![
                row["workload"].as_str().unwrap().to_string(),
                row["country"].as_str().unwrap().to_string(),
                row["asn"].to_string(),
            ]
        })
        .collect();
    highlighted.sort();
    assert_eq!(highlighted.iter().collect::<Vec<_>>(), expected);
}

/// The cost of each namespace on each day (UTC) of the range.
async fn namespaces_by_day(sql: &Sql, report: &Report, shown: &page::Shown) {
    let flows = &sql.flows;
    let expected = sql
        .rows(&format!(
            "SELECT toString(toStartOfDay(toDateTime(interval_start, 'UTC'))) AS day,
    if(local_namespace != '', local_namespace, '(nodes)') AS namespace,
    sum(cost_usd) AS cost_usd
FROM {flows}
WHERE {range}
GROUP BY day, namespace
HAVING cost_usd != 0",
            range = sql.current()
        ))
        .await;
    let keys = ["day", "namespace"];
    let expected = keyed(&expected, &keys);
    let page_rows = keyed(&shown.rows(report, "cost_by_day", "namespaces"), &keys);
    assert_eq!(
        page_rows.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "days and namespaces"
    );
    for (key, row) in &page_rows {
        assert_close(
            number(row, "cost_usd"),
            number(&expected[key], "cost_usd"),
            &format!("{key:?}"),
        );
    }
    let total: f64 = expected.values().map(|r| number(r, "cost_usd")).sum();
    assert_close(shown.charts["namespaces"].total, total, "namespaces chart");
}

/// Each node's busiest collection interval out, in bits per second, without traffic that stays
/// inside the node.
async fn node_peaks(sql: &Sql, report: &Report, shown: &page::Shown, top: usize) {
    let flows = &sql.flows;
    let expected = sql
        .rows(&format!(
            "SELECT node, max(out_bps) AS peak_out_bps
FROM
(
    SELECT local_node AS node, interval_start,
        sumIf(bytes, direction = 'out') * 8 / any(interval_seconds) AS out_bps
    FROM {flows}
    WHERE {range} AND class != 'INTRA_NODE'
    GROUP BY node, interval_start
)
GROUP BY node",
            range = sql.current()
        ))
        .await;
    let expected = keyed(&expected, &["node"]);
    let page_rows = keyed(&shown.rows(report, "throughput", "nodes"), &["node"]);
    assert_eq!(page_rows.len(), expected.len().min(top), "nodes");
    for (key, row) in &page_rows {
        let want = expected
            .get(key)
            .unwrap_or_else(|| panic!("no node {key:?}"));
        assert_close(
            number(row, "peak_out_bps"),
            number(want, "peak_out_bps"),
            &format!("{key:?}"),
        );
    }
}

#[test]
fn the_checks_catch_console_errors_exceptions_and_requests() {
    let dir = artifacts("html-checks");
    let page = dir.join("broken.html");
    std::fs::write(
        &page,
        r#"<!doctype html><html><body><img src="https://netmeter.invalid/pixel.png"><script>
console.error("deliberate console error");
setTimeout(function () { undefinedFunction(); }, 10);
document.body.dataset.rendered = "ok";
</script></body></html>"#,
    )
    .unwrap();
    let run = chromium::open(&page, &chromium::work_dir(&dir, "broken"));
    let problems = page::problems(&run);
    let expected = [
        "\"deliberate console error\"",
        "\"Uncaught ReferenceError: undefinedFunction is not defined\"",
        "request: https://netmeter.invalid/pixel.png",
    ];
    for text in expected {
        assert!(
            problems.iter().any(|p| p.contains(text)),
            "{text} not caught: {problems:?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:?}");
    let html = std::fs::read_to_string(&page).unwrap();
    let loads = page::remote_loads(&html);
    assert_eq!(loads.len(), 1, "{loads:?}");
    assert!(loads[0].starts_with(r#"src="https://netmeter.invalid/pixel.png""#));
}

#[test]
fn a_report_the_page_cannot_draw_is_reported_not_hidden() {
    let mut report = small_report();
    report.sections[0].tables[0].rows[0][0] = json!("yesterday");
    let dir = artifacts("html-error");
    let page = dir.join("report.html");
    std::fs::write(&page, netmeter_report::html::render(&report)).unwrap();
    let run = chromium::open(&page, &chromium::work_dir(&dir, "chromium"));
    let rendered = dom::body_attr(&run.dom, "data-rendered").unwrap_or_default();
    assert_eq!(rendered, "chart cost_over_time: not a time: yesterday");
    assert_eq!(run.console.len(), 1, "{:?}", run.console);
    assert!(run.console[0].contains("not a time: yesterday"));
    assert!(run.dom.contains("This chart could not be drawn"));
}

/// A report with one drawable table, for the error test.
fn small_report() -> Report {
    Report {
        generated_at: "2026-01-05T12:00:00Z".into(),
        from: "2026-01-05 10:00:00".into(),
        to: "2026-01-05 12:00:00".into(),
        previous_from: "2026-01-05 08:00:00".into(),
        bucket: 3600,
        filters: Filters::default(),
        sections: vec![Section {
            id: "overview",
            title: "Overview".into(),
            question: "What did traffic cost?".into(),
            note: String::new(),
            tables: vec![Table {
                id: "cost_over_time",
                title: "Cost by class over time".into(),
                sql: "SELECT 1".into(),
                columns: vec![
                    Column {
                        name: "bucket",
                        kind: Kind::Time,
                    },
                    Column {
                        name: "class",
                        kind: Kind::Text,
                    },
                    Column {
                        name: "bytes",
                        kind: Kind::Bytes,
                    },
                    Column {
                        name: "cost_usd",
                        kind: Kind::Usd,
                    },
                ],
                rows: vec![vec![
                    json!("2026-01-05 10:00:00"),
                    json!("INTER_ZONE"),
                    json!(1024),
                    json!(0.01),
                ]],
            }],
        }],
    }
}
